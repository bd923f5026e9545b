//! Tests of the state-sync keys: the phases on the keyring file, the file across a restart,
//! and two members' sync engines through a rotation and a restart.

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use super::*;
use crate::dp::Member;
use crate::fastpath::{tcp_flags, Packet, Side};
use crate::syncplane::SyncPlane;
use ha_dataplane::{Dataplane, Policy, SyncConfig};
use ha_proto::endpoint::Reject;

const NEW: [u8; 32] = [0x3c; 32];

fn block(serial: &str) -> ConfigBlock {
    let mut b = ha_hostlink::test_support::sample_cfg();
    b.serial = ha_proto::msg::Serial::new(serial).expect("serial");
    b
}

fn ids(steps: &[KeyStep]) -> Vec<String> {
    steps
        .iter()
        .map(|s| match s {
            KeyStep::Accept { key_id, .. } => format!("Accept({key_id})"),
            other => format!("{other:?}"),
        })
        .collect()
}

#[test]
fn each_phase_moves_the_file_one_step_and_a_late_phase_catches_up() {
    let dir = tempfile::tempdir().expect("dir");
    let b = block("SN-A");
    let mut keys = SyncKeys::load(dir.path(), &b).expect("load");
    assert!(!keys.from_file());
    assert_eq!(keys.key_ids(), (1, None));
    let steps = keys.follow(KeyPhase::Install, 2, &NEW).expect("install");
    assert_eq!(ids(&steps), ["Accept(2)"]);
    assert_eq!(keys.key_ids(), (1, Some(2)));
    let steps = keys.follow(KeyPhase::Use, 2, &NEW).expect("use");
    assert_eq!(ids(&steps), ["SealWith(2)"]);
    assert_eq!(keys.key_ids(), (2, Some(1)));
    let steps = keys.follow(KeyPhase::Retire, 2, &NEW).expect("retire");
    assert_eq!(ids(&steps), ["Retire"]);
    assert_eq!(keys.key_ids(), (2, None));
    // Repeated: nothing to do.
    assert!(keys
        .follow(KeyPhase::Retire, 2, &NEW)
        .expect("again")
        .is_empty());
    // The file: 0600, the new key only; a restart reads it back.
    let path = dir.path().join(KEYRING_FILE);
    let mode = std::fs::metadata(&path).expect("file").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let file = KeyringFile::load(&path).expect("read").expect("present");
    assert_eq!(
        (file.sealing.0, file.sealing.1, file.accept.is_none()),
        (2, NEW, true)
    );
    let again = SyncKeys::load(dir.path(), &b).expect("reload");
    assert!(again.from_file() && !again.holds(&b));
    assert_eq!(again.key_ids(), (2, None));

    // A member whose reply was lost gets the next phase first: it catches up.
    let dir = tempfile::tempdir().expect("dir");
    let mut keys = SyncKeys::load(dir.path(), &b).expect("load");
    let steps = keys.follow(KeyPhase::Retire, 2, &NEW).expect("retire");
    assert_eq!(ids(&steps), ["Accept(2)", "SealWith(2)", "Retire"]);
    assert_eq!(keys.key_ids(), (2, None));
}

#[test]
fn a_keyring_file_others_can_read_stops_the_start() {
    let dir = tempfile::tempdir().expect("dir");
    let b = block("SN-A");
    let mut keys = SyncKeys::load(dir.path(), &b).expect("load");
    keys.follow(KeyPhase::Install, 2, &NEW).expect("install");
    let path = dir.path().join(KEYRING_FILE);
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let e = SyncKeys::load(dir.path(), &b).expect_err("refused");
    assert!(e.contains("group or others"), "{e}");
    assert!(!e.contains(&"3c".repeat(8)), "no key in the message");
}

fn pkt(i: u8, flags: u8) -> Packet {
    Packet {
        zone: 0,
        ingress: 0,
        proto: 6,
        src: std::net::Ipv4Addr::new(10, 1, 0, i).into(),
        dst: std::net::Ipv4Addr::new(10, 2, 0, 1).into(),
        sport: 4000,
        dport: 80,
        flags,
        len: 60,
        local: false,
    }
}

/// The daemon's dataplane for `block` in boot `epoch`, with the keys of `state_dir` (as
/// `main.rs` builds it).
fn member(block: &ConfigBlock, state_dir: &Path, epoch: u32, t0: Instant) -> Member {
    let keys = SyncKeys::load(state_dir, block).expect("keys");
    let cfg = SyncConfig::from_block(block, epoch).with_keyring(keys.keyring());
    Member::new(Dataplane::new(cfg, Policy::allow_all()), t0)
}

/// Exchanges the members' datagrams for `rounds` rounds of 10 ms from round `from`.
fn pump(t0: Instant, a: &mut Member, b: &mut Member, from: u64, rounds: u64) {
    for round in from..from + rounds {
        let now = t0 + Duration::from_millis(10 * round);
        for d in a.poll_transmit(now) {
            b.on_datagram(&d, now);
        }
        for d in b.poll_transmit(now) {
            a.on_datagram(&d, now);
        }
    }
}

/// What the management server's hook does for one phase on one member: the file, then the
/// engine, with the same steps.
fn phase(keys: &mut SyncKeys, dp: &mut Member, p: KeyPhase) {
    for step in keys.follow(p, 2, &NEW).expect("follow") {
        SyncPlane::<crate::dp::DpPath>::key_step(&mut dp.sync, &step).expect("engine");
    }
}

/// A connection of client `i` opened on `a` at round `r`, then `rounds` of exchange: B must
/// hold `want` connections.
fn open_and_sync(t0: Instant, a: &mut Member, b: &mut Member, i: u8, r: u64, want: usize) {
    let now = t0 + Duration::from_millis(10 * r);
    assert!(a.check(&pkt(i, tcp_flags::SYN), Side::Inside, true, now));
    pump(t0, a, b, r, 30);
    assert_eq!(b.tables().conn_count(), want, "records flow");
}

#[test]
fn a_member_restarted_after_a_rotation_syncs_with_its_peer_under_the_new_key() {
    let t0 = Instant::now();
    let (dir_a, dir_b) = (
        tempfile::tempdir().expect("a"),
        tempfile::tempdir().expect("b"),
    );
    let (block_a, block_b) = (block("SN-A"), block("SN-B"));
    let mut a = member(&block_a, dir_a.path(), 10, t0);
    let mut b = member(&block_b, dir_b.path(), 20, t0);
    a.set_role(true, t0);
    pump(t0, &mut a, &mut b, 0, 20);
    let mut ka = SyncKeys::load(dir_a.path(), &block_a).expect("a");
    let mut kb = SyncKeys::load(dir_b.path(), &block_b).expect("b");
    // `hactl psk rotate`: each phase on every member before the next. B restarts between
    // phases 2 and 3 (A seals with 2 and accepts 1): from its keyring file it does the same.
    for (i, p) in [KeyPhase::Install, KeyPhase::Use].into_iter().enumerate() {
        phase(&mut ka, &mut a, p);
        phase(&mut kb, &mut b, p);
        pump(t0, &mut a, &mut b, 20 + 10 * i as u64, 10);
    }
    let mut b = member(&block_b, dir_b.path(), 21, t0);
    assert_eq!(b.engine().key_ids(), (2, Some(1)));
    assert_eq!(b.engine().key_ids(), a.engine().key_ids());
    pump(t0, &mut a, &mut b, 40, 30);
    assert!(b.engine().peer_up());
    open_and_sync(t0, &mut a, &mut b, 1, 70, 1);
    let mut kb = SyncKeys::load(dir_b.path(), &block_b).expect("b");
    phase(&mut ka, &mut a, KeyPhase::Retire);
    phase(&mut kb, &mut b, KeyPhase::Retire);
    assert_eq!(b.engine().key_ids(), (2, None));
    open_and_sync(t0, &mut a, &mut b, 2, 100, 2);

    // After the rotation (the block still says key 1: its write is the controller's side),
    // B restarts again: the keys of its file, the same as A's; the bulk and new records
    // arrive, nothing is refused.
    let mut b = member(&block_b, dir_b.path(), 22, t0);
    assert_eq!(b.engine().key_ids(), a.engine().key_ids());
    pump(t0, &mut a, &mut b, 130, 30);
    assert_eq!(b.tables().conn_count(), 2, "bulk after the restart");
    open_and_sync(t0, &mut a, &mut b, 3, 160, 3);
    assert_eq!(b.engine().stats().rejected(), 0);

    // Without the file (keys from the block, as before the fix) the restarted member hears
    // nothing: every frame of A is under a key it does not hold.
    std::fs::remove_file(dir_b.path().join(KEYRING_FILE)).expect("rm");
    let mut b = member(&block_b, dir_b.path(), 23, t0);
    pump(t0, &mut a, &mut b, 190, 30);
    assert!(!b.engine().peer_up());
    assert!(b.engine().stats().rejects.get(Reject::UnknownKey) > 0);
}
