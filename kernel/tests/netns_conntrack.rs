//! ctnetlink against the real kernel, in two network namespaces the test creates and removes
//! ("active" and "standby"): an entry created in the active's table arrives there as a new
//! event, is installed into the standby's table from the event alone, and the standby's dump
//! shows it with every field the entry carries; its removal arrives as a destroy event; a
//! request the kernel refuses is an error, not a panic. Needs root: skipped with a message
//! outside CI, a failure in CI (`CI=true`).

use std::process::Command;
use std::time::{Duration, Instant};

use ha_kernel::conntrack::codec::CodecError;
use ha_kernel::conntrack::socket::{CtError, Ctnetlink};
use ha_kernel::conntrack::{
    CtEntry, CtEventKind, CtTuple, TcpInfo, IPS_ASSURED, IPS_SEEN_REPLY, STATUS_SETTABLE,
    TCP_ESTABLISHED,
};

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn can_run() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but not root: the ctnetlink namespace test cannot run"
    );
    eprintln!("not root: ctnetlink namespace test not run");
    false
}

/// A ctnetlink socket opened inside namespace `ns` (a socket stays in the namespace it was
/// created in, so only the opening thread enters it).
fn open_in(ns: &str) -> Ctnetlink {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let f = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        Ctnetlink::open().expect("ctnetlink socket")
    })
    .join()
    .expect("opening thread")
}

fn entry() -> CtEntry {
    let orig = CtTuple {
        src: "10.1.0.10".parse().unwrap(),
        dst: "10.2.0.20".parse().unwrap(),
        proto: 6,
        src_port: 40001,
        dst_port: 80,
    };
    CtEntry {
        orig,
        reply: orig.inverse(),
        status: IPS_SEEN_REPLY | IPS_ASSURED,
        timeout_s: 300,
        mark: 7,
        zone: 3,
        tcp: Some(TcpInfo {
            state: TCP_ESTABLISHED,
            wscale_orig: 7,
            wscale_reply: 9,
            // IP_CT_TCP_FLAG_WINDOW_SCALE (0x01) on both sides, or the kernel keeps no scale;
            // 0x02 SACK_PERM, 0x20 MAXACK_SET.
            flags_orig: 0x23,
            flags_reply: 0x21,
        }),
    }
}

/// Waits (at most 3 s) for an event of `kind` about `orig` on `events`.
fn wait_event(events: &mut Ctnetlink, kind: CtEventKind, orig: &CtTuple) -> CtEntry {
    let end = Instant::now() + Duration::from_secs(3);
    let mut got = Vec::new();
    while Instant::now() < end {
        events
            .recv_events(Duration::from_millis(200), &mut got)
            .expect("events");
        if let Some(ev) = got.iter().find(|e| e.kind == kind && e.entry.orig == *orig) {
            return ev.entry;
        }
    }
    panic!("no {kind:?} event for {orig:?}; got {got:?}");
}

#[test]
fn an_entry_travels_from_one_table_to_another_by_its_event() {
    if !can_run() {
        return;
    }
    let p = format!("hakt{}", std::process::id() % 100_000);
    let (na, nb) = (format!("{p}-a"), format!("{p}-b"));
    let _ns = Namespaces(vec![na.clone(), nb.clone()]);
    for n in [&na, &nb] {
        let st = Command::new("ip").args(["netns", "add", n]).status();
        assert!(st.is_ok_and(|s| s.success()), "ip netns add {n}");
    }
    let mut events = open_in(&na);
    events.subscribe(1 << 20, false).expect("subscribe");
    let mut active = open_in(&na);
    let mut standby = open_in(&nb);

    let e = entry();
    active.install(&e).expect("create in the active's table");
    let seen = wait_event(&mut events, CtEventKind::New, &e.orig);

    // The standby's entry is built from the event alone.
    standby
        .install(&seen)
        .expect("install into the standby's table");
    let (table, bad) = standby.dump().expect("dump the standby's table");
    assert_eq!(bad, 0);
    let got = table
        .iter()
        .find(|x| x.orig == e.orig)
        .unwrap_or_else(|| panic!("not in the standby's table: {table:?}"));
    assert_eq!(got.reply, e.reply);
    assert_eq!(got.mark, e.mark);
    assert_eq!(got.zone, e.zone);
    assert_eq!(got.status & STATUS_SETTABLE, e.status);
    assert!(
        (e.timeout_s - 10..=e.timeout_s).contains(&got.timeout_s),
        "timeout {}",
        got.timeout_s
    );
    assert_eq!(got.tcp, e.tcp, "TCP tracking state");

    // Installing again refreshes, it does not fail.
    let mut refreshed = seen;
    refreshed.mark = 8;
    standby.install(&refreshed).expect("refresh");
    let (table, _) = standby.dump().expect("dump");
    assert_eq!(table.iter().filter(|x| x.orig == e.orig).count(), 1);
    assert_eq!(
        table.iter().find(|x| x.orig == e.orig).map(|x| x.mark),
        Some(8)
    );

    // Removal in the active's table is an event too.
    active.remove(&e.orig, e.zone).expect("remove");
    wait_event(&mut events, CtEventKind::Destroy, &e.orig);

    // A request the kernel refuses: an error with its errno, nothing changed, no panic.
    match active.remove(&e.orig, e.zone) {
        Err(CtError::Codec(CodecError::Kernel(code))) => assert_eq!(code, -2, "ENOENT"),
        other => panic!("removing a missing entry: {other:?}"),
    }
    let (left, _) = active.dump().expect("dump");
    assert!(left.iter().all(|x| x.orig != e.orig));
}
