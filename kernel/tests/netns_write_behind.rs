//! The standby's write-behind against a real kernel table (a namespace of its own): a burst
//! is held, written when the stream goes quiet; entries created and ended while held never
//! reach the kernel; ends of written entries and of entries the kernel had before are
//! written; a key ended and started again ends up as its new version.
//! Needs root: skipped with a message outside CI, a failure in CI.

use std::collections::BTreeMap;

use ha_kernel::conntrack::socket::Ctnetlink;
use ha_kernel::conntrack::{CtEntry, CtTuple};
use ha_kernel::write_behind::{Due, Policy, Write, WriteBehind};

mod common;
use common::{can_run, in_ns, namespaces};

/// UDP entry `i`, with `mark`.
fn entry(i: u32, mark: u32) -> CtEntry {
    let src = format!("10.1.{}.{}", i / 250, i % 250 + 1).parse().unwrap();
    common::udp_entry(src, 20_000 + (i % 40_000) as u16, mark)
}

fn key(e: &CtEntry) -> (CtTuple, u16) {
    (e.orig, e.zone)
}

/// Writes `w` as the daemon's installer does: removals, then installs.
fn write(k: &mut Ctnetlink, w: &Write) {
    assert!(k.remove_batch(&w.remove).expect("remove").is_empty());
    assert!(k.install_batch(&w.install).expect("install").is_empty());
}

/// The kernel's table: original tuple → mark.
fn table(k: &mut Ctnetlink) -> BTreeMap<String, u32> {
    let (all, _) = k.dump().expect("dump");
    all.iter()
        .map(|e| (format!("{:?}", e.orig), e.mark))
        .collect()
}

#[test]
fn a_held_burst_reaches_the_kernel_once_quiet_without_what_ended_while_held() {
    if !can_run("write-behind namespace", None) {
        return;
    }
    let (_ns, names) = namespaces("hawb", &["s"]);
    let ns = names[0].clone();
    let mut k = in_ns(&ns, || Ctnetlink::open().expect("ctnetlink"));

    // The kernel already holds an entry of the peer's (synced before this writer started).
    let old = entry(9_000, 1);
    assert!(k.install_batch(&[old]).expect("install").is_empty());
    let mut wb = WriteBehind::new(Policy::default());
    let (dump, _) = k.dump().expect("dump");
    wb.seed(dump.iter().map(key));

    // A burst of 2,000 new entries within 10 ms: held, nothing written.
    let burst: Vec<CtEntry> = (0..2_000).map(|i| entry(i, 7)).collect();
    wb.add(&burst[..1_000], &[], 0);
    wb.add(&burst[1_000..], &[], 10);
    assert_eq!(wb.due(15), None);
    assert_eq!(table(&mut k).len(), 1, "nothing written while busy");
    // 500 of them end while held, and so does the old entry.
    let ended: Vec<_> = burst[..500].iter().map(key).chain([key(&old)]).collect();
    wb.add(&[], &ended, 12);
    assert_eq!(wb.due(25), None);
    let quiet = 12 + Policy::default().quiet_ms;
    assert_eq!(wb.due(quiet - 1), None);
    // Quiet: written a chunk at a time.
    assert_eq!(wb.due(quiet), Some(Due::Quiet));
    let mut writes = 0;
    while wb.due(quiet).is_some() {
        let w = wb.take_chunk();
        write(&mut k, &w);
        writes += 1;
    }
    assert!(writes >= 1);
    let t = table(&mut k);
    assert_eq!(t.len(), 1_500, "the burst less what ended while held");
    assert!(
        !t.contains_key(&format!("{:?}", old.orig)),
        "the old entry ended"
    );
    assert!(!t.contains_key(&format!("{:?}", burst[0].orig)));
    assert_eq!(wb.coalesced(), 500 * 2);

    // A written entry ends and its tuple starts again (a new connection, another mark):
    // the kernel ends up with the new one.
    let again = entry(1_999, 8);
    wb.add(&[], &[key(&again)], 1_000);
    wb.add(&[again], &[], 1_000);
    write(&mut k, &wb.take_all());
    assert_eq!(table(&mut k).get(&format!("{:?}", again.orig)), Some(&8));

    // An update of a written entry that ends while held: only the end is written.
    let upd = entry(1_500, 9);
    wb.add(&[upd], &[], 2_000);
    wb.add(&[], &[key(&upd)], 2_000);
    let w = wb.take_all();
    assert_eq!((w.install.len(), w.remove.len()), (0, 1));
    write(&mut k, &w);
    assert_eq!(table(&mut k).len(), 1_499);
}
