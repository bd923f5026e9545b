//! Enrolment over real sockets: a machine holding only the cluster key learns the cluster's
//! HA settings from one member's configuration-sync service (`hactl cluster enroll`).

use std::net::TcpListener;

use ha_confsync::enrol::enroll_at;
use ha_confsync::store::Role;
use ha_mgmt_api::EventKind;
use ha_proto::config_block::{
    AggregateRule, ConfigBlock, DomainEntry, HwWeights, LinkAddr, MemberEntry, TimerProfile,
    DEFAULT_STATE_SYNC_PORT,
};
use ha_proto::keys::Psk;
use ha_proto::msg::Serial;

mod common;
use common::{member_with, strong_key, Member, CLUSTER, KEY};

fn serial(s: &str) -> Serial {
    Serial::new(s).unwrap()
}

/// SN-A's block: SN-A and SN-B, the fast timers, domain 0 preferring SN-A.
fn block_of_a() -> ConfigBlock {
    let mut members = heapless::Vec::new();
    for (s, ip) in [("SN-A", 1), ("SN-B", 2)] {
        members
            .push(MemberEntry {
                serial: serial(s),
                main_link: LinkAddr {
                    ip: [10, 0, 0, ip],
                    port: 44240,
                },
            })
            .unwrap();
    }
    let mut domains = heapless::Vec::new();
    domains
        .push(DomainEntry {
            id: 0,
            preferred: Some(serial("SN-A")),
        })
        .unwrap();
    ConfigBlock {
        serial: serial("SN-A"),
        cluster_id: CLUSTER,
        key_id: 1,
        encrypt: false,
        members,
        backup_link: true,
        state_sync_port: DEFAULT_STATE_SYNC_PORT,
        timers: TimerProfile::Fast,
        domains,
        aggregate: AggregateRule::AllDown,
        tpm_included: false,
        weights: HwWeights::default(),
        psk: Psk(strong_key(KEY)),
    }
}

/// SN-A with its block at `<dir>/a.cfg` given to its service (`--block`), or none.
fn member_a(with_block: bool, encrypt: bool) -> (Member, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("a.cfg");
    ha_persist::write_block(&path, &block_of_a()).unwrap();
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let m = member_with("SN-A", Role::Active, l, vec![], |c| {
        c.block = with_block.then(|| path.clone());
        c.security.encrypt = encrypt;
    });
    (m, dir)
}

#[test]
fn a_key_holder_learns_the_clusters_settings_and_nothing_else_is_needed() {
    for encrypt in [false, true] {
        let (a, _dir) = member_a(true, encrypt);
        let e = enroll_at(&a.addr, &Psk(strong_key(KEY)), serial("SN-C")).unwrap();
        // The cluster id and the key id came from the member's frames, checked with the key.
        assert_eq!((e.cluster_id, e.key_id, e.encrypt), (CLUSTER, 1, encrypt));
        assert_eq!(e.member, serial("SN-A"));
        assert_eq!(e.profile, block_of_a().profile());
        // SN-C's block: the same cluster-wide settings with SN-C added, which the firmware
        // accepts.
        let link = LinkAddr {
            ip: [10, 0, 0, 3],
            port: 44240,
        };
        let c = e
            .profile
            .block_for(serial("SN-C"), link, Psk(strong_key(KEY)), e.key_id)
            .unwrap();
        assert!(c.validate().is_ok());
        assert_eq!(c.members.len(), 3);
        assert_eq!(c.timers, TimerProfile::Fast);
        assert!(a
            .events_of(EventKind::Members)
            .iter()
            .any(|ev| ev.detail.contains("HA settings sent to SN-C")));
    }
}

#[test]
fn a_wrong_key_learns_nothing_and_a_member_without_a_block_refuses() {
    let (a, _dir) = member_a(true, false);
    let wrong = strong_key(KEY + 1);
    let err = enroll_at(&a.addr, &Psk(wrong), serial("SN-C")).unwrap_err();
    assert!(err.contains("does not hold this key"), "{err}");
    assert!(!err.contains(&ha_confsync::hex(&wrong)), "{err}");
    assert!(!err.contains(&ha_confsync::hex(&strong_key(KEY))), "{err}");
    // Nothing was answered to the wrong key: no event of a sent profile.
    assert!(!a
        .events_of(EventKind::Members)
        .iter()
        .any(|ev| ev.detail.contains("HA settings sent")));

    let (b, _dir) = member_a(false, false);
    let err = enroll_at(&b.addr, &Psk(strong_key(KEY)), serial("SN-C")).unwrap_err();
    assert!(err.contains("shares no HA settings"), "{err}");

    // A block file that cannot be read is said as such, not sent half.
    let (c, dir) = member_a(true, false);
    std::fs::write(dir.path().join("a.cfg"), b"not a block").unwrap();
    let err = enroll_at(&c.addr, &Psk(strong_key(KEY)), serial("SN-C")).unwrap_err();
    assert!(err.contains("cannot read its configuration block"), "{err}");

    // Not a sync service at all.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        let (mut s, _) = l.accept().unwrap();
        use std::io::Write;
        let _ = s.write_all(b"\x00\x05hello");
    });
    let err = enroll_at(&addr, &Psk(strong_key(KEY)), serial("SN-C")).unwrap_err();
    assert!(err.contains("not a configuration-sync service"), "{err}");
    t.join().unwrap();
}
