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

/// The split a daemon uses (packet path and engine locked apart, crypto outside the packet
/// path's lock) syncs the same as the one-thread facade: connections opened on A's packet
/// path reach B through open/handle and poll_messages/seal_all.
#[test]
fn the_split_halves_sync_like_the_facade() {
    let (mut pa, mut ea) = member(1).into_parts();
    let (mut pb, mut eb) = member(2).into_parts();
    pa.set_role(true, 0);
    let step = |p: &mut ha_dataplane::PacketPath,
                e: &mut ha_dataplane::SyncEngine,
                q: &mut Vec<Vec<u8>>,
                now: Millis| {
        for d in q.drain(..) {
            if let Some(o) = e.open(&d) {
                p.handle(e, o, now);
            }
        }
        let msgs = p.poll_messages(e, now);
        e.seal_all(msgs)
    };
    let (mut to_a, mut to_b) = (Vec::new(), Vec::new());
    for now in 0..200 {
        if now == 100 {
            for i in 1..=5 {
                assert!(pa.check(&pkt(i, true, tcp::SYN), true, now).forwards());
            }
            assert!(pa.has_changes(), "changes wait for the engine");
        }
        to_b.extend(step(&mut pa, &mut ea, &mut to_a, now));
        to_a.extend(step(&mut pb, &mut eb, &mut to_b, now));
    }
    assert!(!pa.has_changes());
    assert_eq!(pb.tables().conn_count(), 5);
    assert_eq!(ea.backlog(), (0, 0), "every change acknowledged");
    assert_eq!(eb.stats().rejected(), 0);
}

/// More changes than the engine queues, made between two hand-overs, are not lost: they are
/// dropped from the packet path's outbox and the peer gets the whole table instead.
#[test]
fn an_outbox_overflow_becomes_a_bulk() {
    let keys = KeySet::derive(&Psk([3; 32]), 77, 1);
    let mut cfg = SyncConfig::new(77, Serial([1; 16]), 1, keys);
    cfg.max_pending = 4;
    let (mut pa, mut ea) = Dataplane::new(cfg, Policy::allow_all()).into_parts();
    let (mut pb, mut eb) = member(2).into_parts();
    pa.set_role(true, 0);
    let mut sent_to_b: Vec<Vec<u8>> = Vec::new();
    let mut sent_to_a: Vec<Vec<u8>> = Vec::new();
    let mut events = Vec::new();
    for now in 0..400 {
        if now == 100 {
            for i in 1..=20 {
                assert!(pa.check(&pkt(i, true, tcp::SYN), true, now).forwards());
            }
        }
        for d in sent_to_a.drain(..) {
            if let Some(o) = ea.open(&d) {
                pa.handle(&mut ea, o, now);
            }
        }
        let m = pa.poll_messages(&mut ea, now);
        sent_to_b.extend(ea.seal_all(m));
        events.extend(ea.poll_events());
        for d in sent_to_b.drain(..) {
            if let Some(o) = eb.open(&d) {
                pb.handle(&mut eb, o, now);
            }
        }
        let m = pb.poll_messages(&mut eb, now);
        sent_to_a.extend(eb.seal_all(m));
    }
    assert!(
        events.contains(&ha_dataplane::SyncEvent::Overflow),
        "{events:?}"
    );
    assert_eq!(pb.tables().conn_count(), 20, "the bulk carried them all");
}

/// A data frame polled, then acknowledged before it was sealed (another caller between the
/// two halves), is not sent: nothing stale goes out, nothing panics.
#[test]
fn a_frame_acknowledged_between_poll_and_seal_is_not_sent() {
    let mut a = member(1);
    let mut b = member(2);
    a.set_role(true, 0);
    run(&mut a, &mut b, 0, 50, false);
    let (mut pa, mut ea) = a.into_parts();
    let (mut pb, mut eb) = b.into_parts();
    assert!(pa.check(&pkt(1, true, tcp::SYN), true, 60).forwards());
    let first = pa.poll_messages(&mut ea, 60);
    let sealed = ea.seal_all(first);
    assert!(!sealed.is_empty());
    // Polled again after a retransmission timeout: the same frame is due once more ...
    let retransmits = ea.stats().retransmits;
    let again = pa.poll_messages(&mut ea, 2_000);
    assert_eq!(
        ea.stats().retransmits,
        retransmits + 1,
        "the frame was due again"
    );
    // ... but B's acknowledgement of the first copy arrives before it is sealed.
    for d in &sealed {
        if let Some(o) = eb.open(d) {
            pb.handle(&mut eb, o, 60);
        }
    }
    let acks = pb.poll_messages(&mut eb, 61);
    for d in eb.seal_all(acks) {
        if let Some(o) = ea.open(&d) {
            pa.handle(&mut ea, o, 61);
        }
    }
    assert_eq!(ea.backlog().1, 0, "acknowledged");
    let resent = ea.seal_all(again);
    for d in &resent {
        if let Some(o) = eb.open(d) {
            pb.handle(&mut eb, o, 2_000);
        }
    }
    assert_eq!(
        eb.stats().duplicates,
        0,
        "the acknowledged frame was not sent again"
    );
    assert_eq!(pb.tables().conn_count(), 1);
}
