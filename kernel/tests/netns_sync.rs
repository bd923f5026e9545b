//! The kernel data path end to end without the daemon: entries created in one namespace's
//! conntrack table (the active member's kernel) reach another namespace's table (the
//! standby's kernel) through the real pieces: ctnetlink events, the active's kernel path
//! (mirror → tables → keys for the sync), two state-sync engines exchanging sealed datagrams,
//! and the standby's kernel path (the records' changes → a batched install and removals). Afterwards the two kernel tables hold the same entries; removals follow.
//! Needs root: skipped with a message outside CI, a failure in CI.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use ha_dataplane::sync::{SyncConfig, SyncEngine};
use ha_dataplane::tables::{Millis, Tables};
use ha_kernel::conntrack::socket::Ctnetlink;
use ha_kernel::conntrack::{
    CtEntry, CtTuple, TcpInfo, IPS_ASSURED, IPS_SEEN_REPLY, STATUS_SETTABLE,
};
use ha_kernel::path::KernelPath;
use ha_proto::keys::{KeySet, Psk};
use ha_proto::msg::Serial;

mod common;
use common::{can_run, in_ns, namespaces};

const CLUSTER: u32 = 0x0042_0001;

fn engine(me: u8) -> SyncEngine {
    let keys = KeySet::derive(&Psk([0x5a; 32]), CLUSTER, 1);
    SyncEngine::new(SyncConfig::new(CLUSTER, Serial([me; 16]), 100, keys))
}

/// Entry `i`: TCP established (even `i`) or UDP (odd `i`), client 10.1.x.y.
fn entry(i: u16) -> CtEntry {
    let tcp = i % 2 == 0;
    let orig = CtTuple {
        src: format!("10.1.{}.{}", i / 250, i % 250 + 1).parse().unwrap(),
        dst: "10.2.0.20".parse().unwrap(),
        proto: if tcp { 6 } else { 17 },
        src_port: 30_000 + i,
        dst_port: if tcp { 443 } else { 53 },
    };
    CtEntry {
        orig,
        reply: orig.inverse(),
        status: IPS_SEEN_REPLY | IPS_ASSURED,
        timeout_s: 1200,
        mark: u32::from(i % 7),
        zone: 0,
        tcp: tcp.then_some(TcpInfo {
            state: 3,
            wscale_orig: 7,
            wscale_reply: 7,
            flags_orig: 0x23,
            flags_reply: 0x23,
        }),
        helper: None,
        seq_adj: None,
    }
}

/// What must be equal between the two kernels (the timeout runs on its own).
fn shape(e: &CtEntry) -> (CtTuple, CtTuple, u32, u32, u16, Option<TcpInfo>) {
    (
        e.orig,
        e.reply,
        e.status & STATUS_SETTABLE,
        e.mark,
        e.zone,
        e.tcp,
    )
}

struct Member {
    t: Tables,
    e: SyncEngine,
}

/// One millisecond of two engines exchanging datagrams in memory.
fn tick(a: &mut Member, b: &mut Member, now: Millis) {
    for d in a.e.poll_transmit(&a.t, now) {
        b.e.on_datagram(&mut b.t, &d, now);
    }
    for d in b.e.poll_transmit(&b.t, now) {
        a.e.on_datagram(&mut a.t, &d, now);
    }
}

#[test]
fn kernel_entries_reach_the_standbys_kernel_through_the_sync_engine() {
    if !can_run("kernel sync namespace", None) {
        return;
    }
    let (_ns, names) = namespaces("haks", &["a", "b"]);
    let (na, nb) = (names[0].clone(), names[1].clone());
    let mut events = in_ns(&na, || Ctnetlink::open().expect("ctnetlink"));
    events.subscribe(8 << 20, false).expect("subscribe");
    let mut kernel_a = in_ns(&na, || Ctnetlink::open().expect("ctnetlink"));
    let mut kernel_b = in_ns(&nb, || Ctnetlink::open().expect("ctnetlink"));

    let mut a = Member {
        t: Tables::new(),
        e: engine(1),
    };
    let mut b = Member {
        t: Tables::new(),
        e: engine(2),
    };
    a.t.activate(0);
    let mut now: Millis = 0;
    for _ in 0..20 {
        now += 1;
        tick(&mut a, &mut b, now);
    }

    // The active's kernel gets 200 connections; their events feed the sync.
    const N: u16 = 200;
    let created: Vec<CtEntry> = (0..N).map(entry).collect();
    assert!(kernel_a.install_batch(&created).expect("create").is_empty());
    let mut path_a = KernelPath::new(Vec::new());
    let mut path_b = KernelPath::new(Vec::new());
    b.t.keep_kernel_changes();
    let pump = |events: &mut Ctnetlink, path: &mut KernelPath, a: &mut Member, want: usize| {
        let mut seen = 0;
        let end = Instant::now() + Duration::from_secs(5);
        while seen < want && Instant::now() < end {
            let mut got = ha_kernel::conntrack::Events::default();
            events
                .recv_events(Duration::from_millis(100), &mut got)
                .expect("events");
            seen += got.len();
            for k in path.on_events(&got, &mut a.t, 0) {
                a.e.changed(k);
            }
        }
        seen
    };
    // The standby's kernel path: what the records changed goes into its kernel.
    let apply_b = |path: &mut KernelPath, b: &mut Member, kernel: &mut Ctnetlink, now| {
        let w = path.kernel_work(&mut b.t, now);
        assert!(kernel
            .install_batch(&w.install)
            .expect("install")
            .is_empty());
        for (orig, zone) in &w.remove {
            kernel.remove(orig, *zone).expect("remove");
        }
    };
    assert_eq!(
        pump(&mut events, &mut path_a, &mut a, N as usize),
        N as usize
    );
    for _ in 0..2_000 {
        now += 1;
        tick(&mut a, &mut b, now);
        if b.t.kernel_conns().len() == N as usize && a.e.backlog() == (0, 0) {
            break;
        }
    }
    assert_eq!(b.t.kernel_conns().len(), N as usize, "items at the standby");

    // The standby installs what it received into its kernel.
    apply_b(&mut path_b, &mut b, &mut kernel_b, now);
    let (dump_a, _) = kernel_a.dump().expect("dump a");
    let (dump_b, _) = kernel_b.dump().expect("dump b");
    let sa: BTreeSet<_> = dump_a.iter().map(|e| format!("{:?}", shape(e))).collect();
    let sb: BTreeSet<_> = dump_b.iter().map(|e| format!("{:?}", shape(e))).collect();
    assert_eq!(sa.len(), N as usize);
    assert_eq!(sa, sb, "the standby's kernel differs from the active's");

    // Removals travel too.
    for e in &created[..10] {
        kernel_a.remove(&e.orig, 0).expect("remove");
    }
    assert_eq!(pump(&mut events, &mut path_a, &mut a, 10), 10);
    for _ in 0..2_000 {
        now += 1;
        tick(&mut a, &mut b, now);
        if b.t.kernel_conns().len() == N as usize - 10 && a.e.backlog() == (0, 0) {
            break;
        }
    }
    assert_eq!(b.t.kernel_conns().len(), N as usize - 10);
    apply_b(&mut path_b, &mut b, &mut kernel_b, now);
    let (dump_a, _) = kernel_a.dump().expect("dump a");
    let (dump_b, _) = kernel_b.dump().expect("dump b");
    let sa: BTreeSet<_> = dump_a.iter().map(|e| format!("{:?}", shape(e))).collect();
    let sb: BTreeSet<_> = dump_b.iter().map(|e| format!("{:?}", shape(e))).collect();
    assert_eq!(sb.len(), N as usize - 10);
    assert_eq!(sa, sb, "after the removals the two kernels differ");
}
