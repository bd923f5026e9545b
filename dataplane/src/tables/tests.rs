//! Unit tests of the tables.

use super::*;
use std::net::Ipv4Addr;

fn key(i: u32) -> ConnKey {
    ConnKey::of(
        1,
        proto::TCP,
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)),
        (i % 50_000) as u16 + 1024,
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        443,
    )
    .0
}

#[test]
fn key_is_direction_free() {
    let x = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let y = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
    let (k1, a1) = ConnKey::of(0, proto::TCP, x, 1000, y, 80);
    let (k2, a2) = ConnKey::of(0, proto::TCP, y, 80, x, 1000);
    assert_eq!(k1, k2);
    assert_ne!(a1, a2);
}

#[test]
fn memory_per_entry() {
    let mut t = Tables::new();
    let n = 200_000;
    for i in 0..n {
        let e = ConnEntry::new(ConnState::Tcp(TcpState::Established), true, 1, 0, 0);
        t.insert_conn(key(i), e);
    }
    assert_eq!(t.conn_count(), n as usize);
    let per = t.conn_bytes_per_entry();
    println!(
        "memory per connection entry: key {} B + entry {} B = {} B slot; {:.1} B per entry in the map at {} entries",
        std::mem::size_of::<ConnKey>(),
        std::mem::size_of::<ConnEntry>(),
        std::mem::size_of::<(ConnKey, ConnEntry)>(),
        per,
        n
    );
    assert!(per >= std::mem::size_of::<(ConnKey, ConnEntry)>() as f64);
    assert!(per < 400.0, "{per} bytes per entry");
}

#[test]
fn activation_touches_no_entry() {
    let mut t = Tables::new();
    let gen = t.install_gen();
    for i in 0..100_000 {
        let mut e = ConnEntry::new(ConnState::Tcp(TcpState::Established), true, 1, 0, 5);
        e.gen = gen;
        t.insert_conn(key(i), e);
    }
    let probe = key(77);
    let e = *t.conn_peek(&probe).expect("installed");
    assert!(!t.is_live(e.gen), "larval before activation");
    let touches = t.entry_touches();
    t.activate(1_000);
    assert_eq!(t.entry_touches(), touches, "activation visited entries");
    let e = *t.conn_peek(&probe).expect("installed");
    assert!(t.is_live(e.gen), "live after activation");
    // Idle timer restarts at activation: not expired just after, expired after the timeout.
    assert!(!t.conn_expired(&e, 1_000 + 10));
    assert!(t.conn_expired(&e, 1_000 + timeouts::TCP_ESTABLISHED + 1));
    // Records received while active are live; after a demotion they are larval again.
    assert!(t.is_live(t.install_gen()));
    t.deactivate();
    assert!(!t.is_live(t.install_gen()));
}

#[test]
fn bulk_end_drops_unrefreshed_connections_of_any_origin() {
    let mut t = Tables::new();
    let st = ConnState::Udp { replied: true };
    t.insert_conn(key(1), ConnEntry::new(st, true, 1, 0, 0)); // leftover, local origin
    let mut old = ConnEntry::new(st, true, 1, 0, 0);
    old.gen = t.install_gen();
    t.insert_conn(key(2), old); // synced before the bulk
    let gen = t.next_rx_gen();
    let mut fresh = ConnEntry::new(st, true, 1, 0, 0);
    fresh.gen = gen;
    t.insert_conn(key(3), fresh); // refreshed by the bulk
    t.users.insert(
        IpAddr::V4(Ipv4Addr::LOCALHOST),
        UserEntry {
            name: "local".into(),
            groups: Vec::new(),
            expires: 10,
            gen: LOCAL_GEN,
        },
    );
    assert_eq!(t.drop_stale_synced(gen), 2);
    assert!(t.conn_peek(&key(3)).is_some());
    assert_eq!(t.users.len(), 1);
}

#[test]
fn larval_entries_never_expire_locally() {
    let mut t = Tables::new();
    let mut e = ConnEntry::new(ConnState::Udp { replied: false }, true, 1, 0, 0);
    e.gen = t.install_gen();
    t.insert_conn(key(1), e);
    assert!(t.expire_conns(10 * timeouts::UDP_REPLIED).is_empty());
    t.activate(10 * timeouts::UDP_REPLIED);
    assert!(t.expire_conns(10 * timeouts::UDP_REPLIED + 1).is_empty());
    assert_eq!(t.expire_conns(11 * timeouts::UDP_REPLIED).len(), 1);
}

#[test]
fn ike_counters_advance_by_margin_on_takeover() {
    let mut t = Tables::new();
    let k = IkeKey { spi_i: 1, spi_r: 2 };
    t.insert_ike(
        k,
        IkeSa {
            peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
            msg_id_out: 7,
            msg_id_in: 3,
            esp_seq_out: 1000,
            esp_seq_in: 900,
            gen: t.install_gen(),
        },
    );
    assert_eq!(t.ike_next_esp_seq(&k), None, "larval SA is not used");
    t.activate(0);
    let sa = t.ike_sa(&k).expect("sa");
    assert_eq!(sa.esp_seq_out, 1000 + IKE_TAKEOVER_MARGIN_ESP);
    assert_eq!(sa.msg_id_out, 7 + IKE_TAKEOVER_MARGIN_MSGID);
    assert_eq!(t.ike_next_esp_seq(&k), Some(1000 + IKE_TAKEOVER_MARGIN_ESP));
    // Now local: the margin is not added twice.
    assert_eq!(t.ike_next_esp_seq(&k), Some(1001 + IKE_TAKEOVER_MARGIN_ESP));
}
