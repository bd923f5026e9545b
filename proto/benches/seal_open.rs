//! Seal + open + replay check + decode of one heartbeat frame, in both sealing modes.
//! Run through `cargo xtask bench proto`, which prints the summary line.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ha_proto::frame::{open, seal_msg, Header, MAX_FRAME_LEN, PROTOCOL_VERSION};
use ha_proto::keys::{KeySet, Keyring, Psk};
use ha_proto::msg::member::{DomainRole, Heartbeat, MemberMsg};
use ha_proto::msg::{Channel, FirmwareVersion, Forced, LinkState, Role, Serial};
use ha_proto::replay::ReplayTable;
use std::hint::black_box;

fn heartbeat() -> MemberMsg {
    let mut roles = heapless::Vec::new();
    let _ = roles.push(DomainRole {
        domain: 0,
        role: Role::Active,
        for_ms: 12_000,
    });
    let mut links = heapless::Vec::new();
    let _ = links.push(LinkState::Up);
    let _ = links.push(LinkState::Up);
    MemberMsg::Heartbeat(Heartbeat {
        quality: 100,
        priority: 0,
        forced: Forced::None,
        firmware: FirmwareVersion {
            major: 1,
            minor: 0,
            patch: 0,
        },
        config_revision: 42,
        paused: false,
        roles,
        links,
        uptime_ms: 3_600_000,
    })
}

fn bench(c: &mut Criterion) {
    let keys = KeySet::derive(&Psk([7; 32]), 42, 1);
    let ring = Keyring::new(keys.clone());
    let msg = heartbeat();
    let sender = Serial::new("SN210A0000001").unwrap_or_default();
    let mut group = c.benchmark_group("heartbeat_seal_open");
    group.throughput(Throughput::Elements(1));
    for (name, aead) in [("hmac", false), ("aead", true)] {
        let mut seq = 0u64;
        let mut replay: ReplayTable<8> = ReplayTable::new();
        group.bench_function(name, |b| {
            b.iter(|| {
                seq += 1;
                let h = Header {
                    version: PROTOCOL_VERSION,
                    channel: Channel::Member,
                    aead,
                    key_id: 1,
                    cluster_id: 42,
                    sender,
                    epoch: 1,
                    seq,
                };
                let mut buf = [0u8; MAX_FRAME_LEN];
                let n = seal_msg(&keys, &h, black_box(&msg), &mut buf).unwrap_or(0);
                let opened =
                    open(&ring, 42, &mut buf[..n]).map(|o| (o.header, o.decode::<MemberMsg>()));
                if let Ok((hdr, Ok(m))) = opened {
                    let _ = replay.check_header(&hdr);
                    black_box(m);
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
