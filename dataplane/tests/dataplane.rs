//! The [`Dataplane`] facade as the daemon drives it: two members, a planned swap with a
//! resync, then traffic of the old active's connections on the new active.

use std::net::{IpAddr, Ipv4Addr};

use ha_dataplane::filter::{tcp, DropReason, Packet, Policy, Verdict};
use ha_dataplane::sync::SyncConfig;
use ha_dataplane::{Dataplane, Millis, SwapReadiness};
use ha_proto::keys::{KeySet, Psk};
use ha_proto::msg::Serial;

fn member(me: u8) -> Dataplane {
    let keys = KeySet::derive(&Psk([3; 32]), 77, 1);
    Dataplane::new(
        SyncConfig::new(77, Serial([me; 16]), u32::from(me), keys),
        Policy::allow_all(),
    )
}

fn pkt(i: u8, from_client: bool, flags: u8) -> Packet {
    let c = IpAddr::V4(Ipv4Addr::new(10, 1, 0, i));
    let s = IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1));
    let (src, dst, sport, dport) = if from_client {
        (c, s, 40_000, 80)
    } else {
        (s, c, 80, 40_000)
    };
    Packet {
        zone: 0,
        ingress: u16::from(!from_client),
        proto: 6,
        src,
        dst,
        sport,
        dport,
        flags,
        len: 60,
        local: false,
    }
}

/// Exchanges datagrams for `ms` milliseconds (1 ms steps), `cut` drops A→B.
fn run(a: &mut Dataplane, b: &mut Dataplane, from: Millis, ms: u64, cut: bool) {
    for now in from..from + ms {
        for d in a.poll_transmit(now) {
            if !cut {
                b.on_datagram(&d, now);
            }
        }
        for d in b.poll_transmit(now) {
            a.on_datagram(&d, now);
        }
    }
}

#[test]
fn planned_swap_waits_for_resync_then_connections_pass_on_the_new_active() {
    let t0: Millis = 0;
    let (mut a, mut b) = (member(1), member(2));
    a.set_role(true, t0);
    for i in 1..=50 {
        assert!(a.check(&pkt(i, true, tcp::SYN), true, t0).forwards());
        assert_eq!(
            a.check(&pkt(i, false, tcp::SYN | tcp::ACK), true, t0),
            Verdict::Pass
        );
        assert_eq!(a.check(&pkt(i, true, tcp::ACK), true, t0), Verdict::Pass);
    }
    run(&mut a, &mut b, 0, 200, false);
    // The passive does not forward, even known connections.
    let now = t0 + 200;
    assert_eq!(
        b.check(&pkt(1, true, tcp::ACK), true, now),
        Verdict::Drop(DropReason::NotActive)
    );
    // Planned swap: B asks for a resync and waits (bounded).
    let id = b.request_resync(now).expect("peer heard");
    let bound = 2_000;
    assert_eq!(
        b.swap_readiness(id, now, now, bound),
        SwapReadiness::Waiting
    );
    run(&mut a, &mut b, 200, 100, false);
    let later = t0 + 300;
    assert_eq!(
        b.swap_readiness(id, now, later, bound),
        SwapReadiness::Ready
    );
    a.set_role(false, later);
    b.set_role(true, later);
    for i in 1..=50 {
        assert_eq!(
            b.check(&pkt(i, true, tcp::ACK), false, later),
            Verdict::Pass
        );
        assert_eq!(
            b.check(&pkt(i, false, tcp::ACK), false, later),
            Verdict::Pass
        );
    }
    // Unknown mid-stream traffic is still dropped.
    assert_eq!(
        b.check(&pkt(99, true, tcp::ACK), true, later),
        Verdict::Drop(DropReason::NotSyn)
    );
}

#[test]
fn swap_wait_is_bounded_when_the_bulk_cannot_arrive() {
    let t0: Millis = 0;
    let (mut a, mut b) = (member(1), member(2));
    a.set_role(true, t0);
    run(&mut a, &mut b, 0, 100, false);
    let asked = t0 + 100;
    let id = b.request_resync(asked).expect("peer heard");
    run(&mut a, &mut b, 100, 1_500, true);
    let now = t0 + 1_600;
    assert_eq!(
        b.swap_readiness(id, asked, now, 1_000),
        SwapReadiness::TimedOut
    );
    let events = b.poll_events();
    assert!(
        events
            .iter()
            .any(|e| matches!(e, ha_dataplane::SyncEvent::BulkStalled { .. })),
        "{events:?}"
    );
}

#[test]
fn demoted_member_neither_expires_nor_deletes_the_new_actives_connections() {
    let t0: Millis = 0;
    let (mut a, mut b) = (member(1), member(2));
    a.set_role(true, t0);
    for i in 1..=10 {
        a.check(&pkt(i, true, tcp::SYN), true, t0);
        a.check(&pkt(i, false, tcp::SYN | tcp::ACK), true, t0);
        a.check(&pkt(i, true, tcp::ACK), true, t0);
    }
    run(&mut a, &mut b, 0, 200, false);
    let swap = t0 + 200;
    a.set_role(false, swap);
    b.set_role(true, swap);
    // Two hours on: B forwards the connections' packets (no state change, so nothing is
    // synced); A, passive, must not expire its old copies and send deletes.
    // Steps of 100 ms keep the peers in touch (hellos every 250 ms, peer lost after 3 s), so
    // no bulk synchronization refreshes A's copies meanwhile.
    let hour = 3_600_000;
    let mut now_ms = 200;
    while now_ms < 2 * hour {
        now_ms += 100;
        let now = t0 + now_ms;
        if now_ms % 60_000 == 0 {
            for i in 1..=10 {
                assert_eq!(b.check(&pkt(i, true, tcp::ACK), false, now), Verdict::Pass);
            }
        }
        for d in a.poll_transmit(now) {
            b.on_datagram(&d, now);
        }
        for d in b.poll_transmit(now) {
            a.on_datagram(&d, now);
        }
    }
    assert!(
        !a.poll_events()
            .iter()
            .any(|e| matches!(e, ha_dataplane::SyncEvent::PeerLost)),
        "peers stayed in touch"
    );
    assert_eq!(b.tables().conn_count(), 10);
    assert_eq!(a.tables().conn_count(), 10);
    // A takes over again: its copies' idle timers restart at the takeover.
    let back = t0 + now_ms + 10;
    b.set_role(false, back);
    a.set_role(true, back);
    for i in 1..=10 {
        assert_eq!(a.check(&pkt(i, true, tcp::ACK), false, back), Verdict::Pass);
    }
}
