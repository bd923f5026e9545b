//! Seal + open (authenticate, channel, sender, binding, replay, decode, record) of one
//! heartbeat frame through two [`Endpoint`]s, in both sealing modes: the path every member
//! frame takes. Run through `cargo xtask bench proto`, which prints the summary line.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ha_proto::endpoint::{Endpoint, Senders};
use ha_proto::frame::MAX_FRAME_LEN;
use ha_proto::keys::{KeySet, Keyring, Psk};
use ha_proto::msg::member::{DomainRole, Heard, Heartbeat, MemberMsg};
use ha_proto::msg::{Channel, FirmwareVersion, Forced, LinkState, Role, Serial};
use std::hint::black_box;

fn heartbeat(peer: Serial) -> MemberMsg {
    let mut roles = heapless::Vec::new();
    let _ = roles.push(DomainRole {
        domain: 0,
        role: Role::Active,
        for_ms: 12_000,
    });
    let mut links = heapless::Vec::new();
    let _ = links.push(LinkState::Up);
    let _ = links.push(LinkState::Up);
    let mut heard = heapless::Vec::new();
    let _ = heard.push(Heard {
        member: peer,
        epoch: 2,
    });
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
        heard,
    })
}

fn bench(c: &mut Criterion) {
    let keys = KeySet::derive(&Psk([7; 32]), 42, 1);
    let a = Serial::new("SN210A0000001").unwrap_or_default();
    let b = Serial::new("SN210A0000002").unwrap_or_default();
    let members = [a, b];
    let msg = heartbeat(b);
    let mut group = c.benchmark_group("heartbeat_seal_open");
    group.throughput(Throughput::Elements(1));
    for (name, aead) in [("hmac", false), ("aead", true)] {
        let ring = Keyring::new(keys.clone());
        let mut tx: Endpoint<8> = Endpoint::new(
            ring.clone(),
            42,
            a,
            1,
            Channel::Member,
            Channel::Member,
            aead,
        );
        let mut rx: Endpoint<8> =
            Endpoint::new(ring, 42, b, 2, Channel::Member, Channel::Member, aead);
        group.bench_function(name, |bch| {
            bch.iter(|| {
                let mut buf = [0u8; MAX_FRAME_LEN];
                let n = tx.seal(black_box(&msg), None, false, &mut buf).unwrap_or(0);
                if let Ok((acc, m)) = rx.open::<MemberMsg>(&mut buf[..n], Senders::AnyOf(&members))
                {
                    black_box((acc, m));
                }
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
