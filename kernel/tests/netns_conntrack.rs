//! ctnetlink against the real kernel, in two network namespaces the test creates and removes
//! ("active" and "standby"): an entry created in the active's table arrives there as a new
//! event, is installed into the standby's table from the event alone, and the standby's dump
//! shows it with every field the entry carries; its removal arrives as a destroy event; a
//! request the kernel refuses is an error, not a panic. Needs root: skipped with a message
//! outside CI, a failure in CI (`CI=true`).

use std::time::{Duration, Instant};

use std::collections::HashMap;

use ha_kernel::conntrack::codec::CodecError;

mod common;
use common::{can_run, in_ns, namespaces};
use ha_kernel::conntrack::mirror::{Change, CtKey, Mirror};
use ha_kernel::conntrack::socket::{CtError, Ctnetlink};
use ha_kernel::conntrack::{
    CtEntry, CtEventKind, CtTuple, Events, TcpInfo, IPS_ASSURED, IPS_SEEN_REPLY, STATUS_SETTABLE,
    TCP_ESTABLISHED,
};

/// A ctnetlink socket opened inside namespace `ns` (it stays there).
fn open_in(ns: &str) -> Ctnetlink {
    in_ns(ns, || Ctnetlink::open().expect("ctnetlink socket"))
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
        helper: None,
        seq_adj: None,
    }
}

/// Waits (at most 3 s) for an event of `kind` about `orig` on `events`.
fn wait_event(events: &mut Ctnetlink, kind: CtEventKind, orig: &CtTuple) -> CtEntry {
    let end = Instant::now() + Duration::from_secs(3);
    let mut got = Events::default();
    while Instant::now() < end {
        events
            .recv_events(Duration::from_millis(200), &mut got)
            .expect("events");
        if let Some(ev) = got
            .entries
            .iter()
            .find(|e| e.kind == kind && e.entry.orig == *orig)
        {
            return ev.entry;
        }
    }
    panic!("no {kind:?} event for {orig:?}; got {got:?}");
}

#[test]
fn an_entry_travels_from_one_table_to_another_by_its_event() {
    if !can_run("ctnetlink namespace", None) {
        return;
    }
    let (_ns, names) = namespaces("hakt", &["a", "b"]);
    let (na, nb) = (&names[0], &names[1]);
    let mut events = open_in(na);
    events.subscribe(1 << 20, false).expect("subscribe");
    let mut active = open_in(na);
    let mut standby = open_in(nb);

    let e = entry();
    active.install(&e).expect("create in the active's table");
    let seen = wait_event(&mut events, CtEventKind::New, &e.orig);
    // The kernel's own bytes go through the allocation-free reader.
    assert!(events.fast_reads() >= 1, "{}", events.fast_reads());

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

fn udp(port: u16, mark: u32) -> CtEntry {
    common::udp_entry("10.1.0.10".parse().unwrap(), port, mark)
}

/// The peer's table as the changes leave it.
fn apply(peer: &mut HashMap<CtKey, CtEntry>, changes: impl IntoIterator<Item = Change<CtEntry>>) {
    for c in changes {
        match c {
            Change::Upsert(e) => {
                peer.insert((e.orig, e.zone), e);
            }
            Change::Remove(k) => {
                peer.remove(&k);
            }
        }
    }
}

/// A subscriber with a tiny receive buffer that does not read while 2,000 entries are created,
/// 5 removed and 1 re-marked: the kernel drops events and says so (ENOBUFS). The events that
/// did arrive, then a dump reconciled against what the peer was told, leave the peer's table
/// equal to the kernel's: nothing lost, nothing stale.
#[test]
fn an_event_overrun_loses_nothing_after_the_reconcile() {
    if !can_run("ctnetlink namespace", None) {
        return;
    }
    let (_ns, names) = namespaces("hako", &["a"]);
    let na = &names[0];
    let mut events = open_in(na);
    events.subscribe(4096, false).expect("subscribe");
    let mut table = open_in(na);
    let (mut mirror, mut peer) = (Mirror::new(), HashMap::new());

    // Each event takes a few KiB of the buffer: read them one by one before the burst.
    let mut got = Events::default();
    for port in 1..=10 {
        table.install(&udp(port, 0)).expect("create");
        let end = Instant::now() + Duration::from_secs(3);
        while got.entries.len() < port as usize && Instant::now() < end {
            events
                .recv_events(Duration::from_millis(100), &mut got)
                .expect("events before the burst");
        }
    }
    assert_eq!(got.entries.len(), 10, "{got:?}");
    apply(
        &mut peer,
        got.entries
            .iter()
            .filter_map(|ev| mirror.on_event(ev.kind, &ev.entry)),
    );

    // The burst, with nobody reading.
    for port in 1000..3000 {
        table.install(&udp(port, 0)).expect("create");
    }
    for port in 1..=5 {
        table.remove(&udp(port, 0).orig, 0).expect("remove");
    }
    table.install(&udp(6, 42)).expect("re-mark");

    let mut overrun = false;
    for _ in 0..10_000 {
        let mut batch = Events::default();
        match events.recv_events(Duration::from_millis(100), &mut batch) {
            Ok(_) if batch.is_empty() => break,
            Ok(_) => apply(
                &mut peer,
                batch
                    .entries
                    .iter()
                    .filter_map(|ev| mirror.on_event(ev.kind, &ev.entry)),
            ),
            Err(CtError::Overrun) => overrun = true,
            Err(e) => panic!("events: {e}"),
        }
    }
    assert!(
        overrun,
        "the tiny buffer did not overrun: the test proves nothing"
    );
    let before: usize = peer.len();
    let (dump, bad) = table.dump().expect("dump");
    assert_eq!(bad, 0);
    let changes = mirror.reconcile(&dump);
    apply(&mut peer, changes);
    let kernel: HashMap<CtKey, u32> = dump.iter().map(|e| ((e.orig, e.zone), e.mark)).collect();
    let told: HashMap<CtKey, u32> = peer.iter().map(|(k, e)| (*k, e.mark)).collect();
    assert_eq!(kernel.len(), 2005);
    assert_eq!(
        told, kernel,
        "the peer differs from the kernel after the reconcile"
    );
    eprintln!(
        "overrun: the peer held {before} entries from the events that arrived; after the \
         reconcile {} (the kernel's {})",
        told.len(),
        kernel.len()
    );
}

/// A batch of 3,000 entries (many requests per send) with one the kernel refuses (a TCP state
/// beyond the kernel's last): that one is reported by its index and errno, the 2,999 others
/// are in the table.
#[test]
fn a_batch_installs_all_but_the_refused_entry_and_names_it() {
    if !can_run("ctnetlink namespace", None) {
        return;
    }
    let (_ns, names) = namespaces("hakb", &["a"]);
    let na = &names[0];
    let mut table = open_in(na);
    let mut batch: Vec<CtEntry> = (0..3000).map(|i| udp(10_000 + i, 0)).collect();
    let mut bad = entry();
    bad.tcp = bad.tcp.map(|t| TcpInfo { state: 200, ..t });
    batch[1234] = bad;
    let refused = table.install_batch(&batch).expect("batch");
    // ERANGE: the kernel's attribute policy bounds the TCP state.
    assert_eq!(refused, vec![(1234, -34)], "entry 1234 only, ERANGE");
    let (dump, _) = table.dump().expect("dump");
    assert_eq!(dump.len(), 2999);
    assert!(dump.iter().all(|e| e.orig != bad.orig));
    // The refused entry last in its send (the one request that asks for an
    // acknowledgement): reported, and the batch ends.
    let refused = table
        .install_batch(&[udp(20_000, 0), bad])
        .expect("batch with the refused entry last");
    assert_eq!(refused, vec![(1, -34)]);
    let (dump, _) = table.dump().expect("dump");
    assert_eq!(dump.len(), 3000);
}

/// A batch removal of 3,000 entries plus two that are not in the table: every present
/// one is gone, the absent ones count as removed (already gone is as good), nothing refused.
#[test]
fn a_batch_removal_removes_every_entry_and_takes_absent_ones_as_gone() {
    if !can_run("ctnetlink namespace", None) {
        return;
    }
    let (_ns, names) = namespaces("hakr", &["a"]);
    let mut table = open_in(&names[0]);
    let batch: Vec<CtEntry> = (0..3000).map(|i| udp(10_000 + i, 0)).collect();
    assert_eq!(table.install_batch(&batch).expect("batch"), vec![]);
    let mut keys: Vec<(CtTuple, u16)> = batch.iter().map(|e| (e.orig, e.zone)).collect();
    keys.insert(10, (udp(30_000, 0).orig, 0));
    keys.push((udp(30_001, 0).orig, 0));
    assert_eq!(table.remove_batch(&keys).expect("removal"), vec![]);
    let (dump, _) = table.dump().expect("dump");
    assert!(dump.is_empty(), "{} entries left", dump.len());
}

/// A source-translated entry (the site's SNAT to a cluster address), as the active's event
/// reports it, installs on a standby with its translation (and a destination-translated one,
/// a port forward, too): the standby's dump shows the same
/// reply direction and the kernel's SNAT status; a second install (a later update from the
/// peer) refreshes it without the translation the kernel refuses to change.
#[test]
fn a_translated_entry_installs_with_its_translation_and_refreshes() {
    if !can_run("ctnetlink namespace", Some("nft")) {
        return;
    }
    let (_ns, names) = namespaces("hakn", &["b"]);
    let nb = &names[0];
    // A NAT chain in the namespace: the site's ruleset loads nf_nat.
    for cmd in [
        "add table ip site_nat",
        "add chain ip site_nat post { type nat hook postrouting priority 100 ; }",
    ] {
        let out = std::process::Command::new("ip")
            .args(["netns", "exec", nb, "nft", cmd])
            .output()
            .expect("nft");
        assert!(
            out.status.success(),
            "{cmd}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut e = entry();
    e.zone = 0;
    e.reply.dst = "10.2.0.254".parse().unwrap();
    e.reply.dst_port = 40001;
    e.status |= ha_kernel::conntrack::codec::IPS_SRC_NAT;
    let mut standby = open_in(nb);
    standby.install(&e).expect("a translated entry installs");
    let find = |ct: &mut Ctnetlink| {
        let (all, bad) = ct.dump().expect("dump");
        assert_eq!(bad, 0);
        all.into_iter()
            .find(|x| x.orig == e.orig)
            .expect("the entry is in the table")
    };
    let got = find(&mut standby);
    assert_eq!(got.reply, e.reply, "the kernel set up the same translation");
    assert_ne!(
        got.status & ha_kernel::conntrack::codec::IPS_SRC_NAT,
        0,
        "status {:#x}",
        got.status
    );
    // Refreshed: once alone, once in a batch (the kernel refuses the translation on an entry
    // that exists; the socket sends the refresh without it).
    let mut later = e;
    later.timeout_s = 900;
    standby
        .install(&later)
        .expect("refresh of a translated entry");
    assert_eq!(
        standby.install_batch(&[later, later]).expect("batch"),
        vec![],
        "a batch refresh of translated entries is not refused"
    );
    let got = find(&mut standby);
    assert!(got.timeout_s > 300, "refreshed: {}", got.timeout_s);
    assert_eq!(got.reply, e.reply);

    // A destination-translated entry (a port forward from the outside cluster address to an
    // inside server) installs with its translation too.
    let mut d = entry();
    d.zone = 0;
    d.orig.src = "198.51.100.7".parse().unwrap();
    d.orig.dst = "10.2.0.254".parse().unwrap();
    d.orig.dst_port = 8080;
    d.reply = d.orig.inverse();
    d.reply.src = "10.1.0.80".parse().unwrap();
    d.reply.src_port = 80;
    d.status |= ha_kernel::conntrack::codec::IPS_DST_NAT;
    standby
        .install(&d)
        .expect("a destination-translated entry installs");
    let (all, _) = standby.dump().expect("dump");
    let got = all
        .into_iter()
        .find(|x| x.orig == d.orig)
        .expect("the DNAT entry is in the table");
    assert_eq!(
        got.reply, d.reply,
        "the kernel set up the same port forward"
    );
    assert_ne!(
        got.status & ha_kernel::conntrack::codec::IPS_DST_NAT,
        0,
        "status {:#x}",
        got.status
    );
}

/// A standby installs entries while nobody in its kernel listens to events (only an active
/// subscribes). With the namespace set so that every entry reports events, an entry
/// installed then still reports its removal once a listener exists (after a takeover): the
/// new active can tell its peer. The setting is per namespace and reads back.
#[test]
fn an_entry_installed_before_anyone_listened_still_reports_its_removal() {
    use ha_kernel::conntrack::events_setting::{every_entry_reports_events, read};
    if !can_run("ctnetlink namespace", None) {
        return;
    }
    let (_ns, names) = namespaces("hakv", &["s", "other"]);
    let (ns, other) = (names[0].clone(), names[1].clone());
    let default = in_ns(&other, || read().expect("read the setting"));
    let was = in_ns(&ns, || {
        every_entry_reports_events().expect("set the setting")
    });
    assert_eq!(was, default, "a fresh namespace had the default");
    assert_eq!(in_ns(&ns, || read().unwrap()), 1);
    assert_eq!(in_ns(&other, || read().unwrap()), default, "per namespace");
    // Twice is the same as once.
    assert_eq!(in_ns(&ns, || every_entry_reports_events().unwrap()), 1);

    let mut standby = open_in(&ns);
    let e = entry();
    standby.install(&e).expect("install with no listener here");
    // The takeover: this member now listens, and the connection closes.
    let mut events = open_in(&ns);
    events.subscribe(1 << 20, false).expect("subscribe");
    standby.remove(&e.orig, e.zone).expect("remove");
    let gone = wait_event(&mut events, CtEventKind::Destroy, &e.orig);
    assert_eq!(gone.orig, e.orig);
}
