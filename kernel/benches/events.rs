//! The active member's cost per conntrack event, the part that is ours: reading the event
//! from the kernel's bytes (the allocation-free reader against the `netlink-packet-netfilter`
//! one it replaces on the hot path) and applying it to the kernel path's tables beside a
//! table of 100,000 connections. `cargo bench -p ha-kernel --bench events`.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ha_dataplane::tables::Tables;
use ha_kernel::conntrack::codec;
use ha_kernel::conntrack::{CtEntry, CtEvent, CtEventKind, CtTuple, Events, TcpInfo};
use ha_kernel::path::KernelPath;

/// An established TCP entry numbered `i`.
fn entry(i: u32) -> CtEntry {
    let orig = CtTuple {
        src: IpAddr::V4(Ipv4Addr::from(0x0a3c_0000 + i)),
        dst: IpAddr::V4(Ipv4Addr::new(10, 2, 0, 20)),
        proto: 6,
        src_port: 40_000 + (i % 20_000) as u16,
        dst_port: 80,
    };
    CtEntry {
        orig,
        reply: orig.inverse(),
        status: 0xe,
        timeout_s: 432_000,
        mark: 0,
        zone: 0,
        tcp: Some(TcpInfo {
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

/// `entry(i)` as the kernel announces a new entry (flags create | excl).
fn event_bytes(i: u32) -> Vec<u8> {
    let mut msg = codec::refresh_request(&entry(i), i);
    msg[6..8].copy_from_slice(&0x600u16.to_ne_bytes());
    msg
}

fn events(kind: CtEventKind, range: std::ops::Range<u32>) -> Events {
    let mut ev = Events::default();
    ev.entries.extend(range.map(|i| CtEvent {
        kind,
        entry: entry(i),
    }));
    ev
}

fn decode(c: &mut Criterion) {
    let msg = event_bytes(7);
    let mut g = c.benchmark_group("event_decode");
    g.throughput(Throughput::Elements(1));
    g.bench_function("allocation_free", |b| {
        b.iter(|| codec::decode(black_box(&msg)))
    });
    g.bench_function("netlink_packet_netfilter", |b| {
        b.iter(|| codec::decode_with_crate(black_box(&msg)))
    });
    g.finish();
}

fn apply(c: &mut Criterion) {
    const TABLE: u32 = 100_000;
    const BATCH: u32 = 1_000;
    let mut kp = KernelPath::new(Vec::new());
    let mut tables = Tables::new();
    kp.on_events(&events(CtEventKind::New, 0..TABLE), &mut tables, 0);
    let new = events(CtEventKind::New, TABLE..TABLE + BATCH);
    let gone = events(CtEventKind::Destroy, TABLE..TABLE + BATCH);
    let mut g = c.benchmark_group("event_apply");
    // A batch of new connections and their ends: 2,000 events.
    g.throughput(Throughput::Elements(2 * u64::from(BATCH)));
    g.bench_function("new_then_destroy_beside_100k", |b| {
        b.iter(|| {
            black_box(kp.on_events(&new, &mut tables, 1));
            black_box(kp.on_events(&gone, &mut tables, 2));
        })
    });
    g.finish();
}

criterion_group!(benches, decode, apply);
criterion_main!(benches);
