//! The sync engine between two members over an in-memory channel with seeded loss.

mod common;

use common::*;
#[test]
fn no_lost_update_under_20_percent_loss() {
    let mut net = pair(0.2, 0xdead_beef);
    net.run(50);
    assert!(net.a.e.peer_up() && net.b.e.peer_up());
    let n = 20_000u32;
    // Create, move state (SYN/ACK, ACK), delete some: interleaved with ticks.
    for i in 0..n {
        let now = net.now;
        open(&mut net.a, i, now);
        if i % 200 == 0 {
            net.tick();
        }
    }
    for i in (0..n).step_by(3) {
        let now = net.now;
        packet(&mut net.a, i, false, tcp::SYN | tcp::ACK, now);
        packet(&mut net.a, i, true, tcp::ACK, now);
        if i % 300 == 0 {
            net.tick();
        }
    }
    for i in (0..n).step_by(7) {
        net.a.t.remove_conn(&key(i));
        net.a.e.changed(ItemKey::Conn(key(i)));
    }
    net.settle(60_000);
    assert_same_conns(&net.a.t, &net.b.t, n);
    let est = (0..n)
        .filter(|i| {
            net.b.t.conn_peek(&key(*i)).map(|e| e.state)
                == Some(ConnState::Tcp(TcpState::Established))
        })
        .count();
    assert!(est > n as usize / 4, "{est}");
    assert!(net.a.e.stats().retransmits > 0, "loss made retransmissions");
    assert!(net.b.e.stats().duplicates > 0 || net.a.e.stats().retransmits > 0);
    // Everything on the passive is larval.
    for i in 0..n {
        if let Some(e) = net.b.t.conn_peek(&key(i)) {
            assert!(!net.b.t.is_live(e.gen));
        }
    }
}

#[test]
fn takeover_after_bulk_keeps_connections_and_advances_ike_counters() {
    let mut net = pair(0.0, 1);
    for i in 0..1000 {
        open(&mut net.a, i, 0);
        packet(&mut net.a, i, false, tcp::SYN | tcp::ACK, 0);
        packet(&mut net.a, i, true, tcp::ACK, 0);
    }
    let ik = IkeKey {
        spi_i: 11,
        spi_r: 22,
    };
    net.a.t.insert_ike(
        ik,
        IkeSa {
            peer: server(),
            msg_id_out: 5,
            msg_id_in: 4,
            esp_seq_out: 10_000,
            esp_seq_in: 9_000,
            gen: 0,
        },
    );
    // B joins late: everything arrives by bulk.
    net.settle(5_000);
    assert!(net
        .a
        .events
        .iter()
        .any(|e| matches!(e, SyncEvent::BulkSent { records: 1001, .. })));
    assert!(net
        .b
        .events
        .iter()
        .any(|e| matches!(e, SyncEvent::BulkReceived { records: 1001, .. })));
    assert_same_conns(&net.a.t, &net.b.t, 1000);
    // The passive does not forward; after the takeover a mid-stream ACK passes.
    let mut dp_b = net.b;
    assert_eq!(
        dp_b.t.conn_peek(&key(5)).map(|e| dp_b.t.is_live(e.gen)),
        Some(false)
    );
    let touches = dp_b.t.entry_touches();
    dp_b.t.activate(net.now);
    assert_eq!(dp_b.t.entry_touches(), touches);
    assert_eq!(packet(&mut dp_b, 5, true, tcp::ACK, net.now), Verdict::Pass);
    assert_eq!(
        packet(&mut dp_b, 5, false, tcp::ACK, net.now),
        Verdict::Pass
    );
    let sa = dp_b.t.ike_sa(&ik).expect("ike sa synced");
    assert!(sa.esp_seq_out >= 10_000 + ha_dataplane::tables::IKE_TAKEOVER_MARGIN_ESP);
}

#[test]
fn rejoining_peer_gets_bulk_with_progress_and_stale_entries_removed() {
    let mut net = pair(0.05, 7);
    net.run(20);
    let n = 250_000;
    net.a.t.reserve_conns(n as usize);
    for i in 0..n {
        open(&mut net.a, i, 0);
    }
    net.settle(30_000);
    assert_same_conns(&net.a.t, &net.b.t, n);
    // B restarts with a stale entry A never had.
    let mut b = Node::new(2, 201);
    b.t.insert_conn(
        key(n + 5),
        ha_dataplane::tables::ConnEntry::new(ConnState::Udp { replied: false }, true, 0, 0, 0),
    );
    // Installed as received earlier (larval), then the peer deletes it while B is away.
    if let Some(e) = b.t.conn_mut(&key(n + 5)) {
        e.gen = 1;
    }
    net.b = b;
    net.settle(30_000);
    assert_same_conns(&net.a.t, &net.b.t, n);
    assert!(
        net.b.t.conn_peek(&key(n + 5)).is_none(),
        "stale entry removed"
    );
    let progress = net
        .b
        .events
        .iter()
        .filter(|e| {
            matches!(
                e,
                SyncEvent::BulkProgress {
                    outgoing: false,
                    ..
                }
            )
        })
        .count();
    assert!(progress >= 2, "{:?}", net.b.events);
    assert!(net.b.events.iter().any(|e| matches!(
        e,
        SyncEvent::BulkReceived {
            stale_removed: 1,
            ..
        }
    )));
}

#[test]
fn planned_swap_resync_completes_and_stall_is_retried_and_reported() {
    let mut net = pair(0.0, 3);
    for i in 0..5000 {
        open(&mut net.a, i, 0);
    }
    net.settle(5_000);
    let id = net.b.e.request_resync(net.now).expect("peer up");
    assert_eq!(net.b.e.resync_status(id), ResyncStatus::Pending);
    net.settle(5_000);
    assert_eq!(net.b.e.resync_status(id), ResyncStatus::Done);
    // Now a resync whose bulk cannot arrive for 2 s (A→B cut, below the peer timeout):
    // reported as stalled and retried, then completed once the path is back.
    let id = net.b.e.request_resync(net.now).expect("peer up");
    net.cut_ab = true;
    net.run(2_000);
    assert_eq!(net.b.e.resync_status(id), ResyncStatus::Pending);
    assert!(net
        .b
        .events
        .iter()
        .any(|e| matches!(e, SyncEvent::BulkStalled { attempt: 1, .. })));
    net.cut_ab = false;
    net.settle(5_000);
    net.run(500);
    assert_eq!(net.b.e.resync_status(id), ResyncStatus::Done);
    assert_same_conns(&net.a.t, &net.b.t, 5000);
}

#[test]
fn min_age_filter_skips_short_lived_connections() {
    let mut c = cfg(1, 100);
    c.min_age_ms = 500;
    let mut net = Net::new(Node::with(c), Node::new(2, 200), 0.0, 5);
    net.a.t.activate(0);
    net.run(20);
    let t0 = net.now;
    for i in 0..100 {
        open(&mut net.a, i, t0);
    }
    net.run(100);
    // Half of them end before they are 500 ms old.
    for i in 0..50 {
        net.a.t.remove_conn(&key(i));
        net.a.e.changed(ItemKey::Conn(key(i)));
    }
    net.run(100);
    assert_eq!(
        net.b.t.conn_count(),
        0,
        "nothing younger than the minimum age"
    );
    net.run(400);
    net.settle(1_000);
    assert_eq!(net.b.t.conn_count(), 50);
    assert_same_conns(&net.a.t, &net.b.t, 100);
    let applied = net.b.e.stats().records_applied;
    // 50 connections plus the bulk markers of the initial synchronization.
    assert!(
        applied <= 50 + 4,
        "short-lived ones never sent: {applied} records"
    );
}

#[test]
fn tampered_and_foreign_frames_are_rejected() {
    let mut net = pair(0.0, 9);
    open(&mut net.a, 1, 0);
    net.run(5);
    let now = net.now;
    let frames = net.a.e.poll_transmit(&net.a.t, now);
    let mut bad = frames.first().cloned().unwrap_or_else(|| vec![0; 60]);
    let last = bad.len() - 1;
    bad[last] ^= 1;
    let before = net.b.e.stats().rejected();
    net.b.e.on_datagram(&mut net.b.t, &bad, now);
    net.b.e.on_datagram(&mut net.b.t, &[1, 2, 3], now);
    // A frame from a member of another cluster (other key).
    let mut other = SyncEngine::new(SyncConfig::new(
        7,
        Serial([3; 16]),
        1,
        KeySet::derive(&Psk([1; 32]), 7, 1),
    ));
    let t = Tables::new();
    for f in other.poll_transmit(&t, 0) {
        net.b.e.on_datagram(&mut net.b.t, &f, now);
    }
    assert!(net.b.e.stats().rejected() >= before + 3);
}

#[test]
fn local_proxied_and_no_sync_connections_never_reach_the_peer() {
    use ha_dataplane::tables::{conn_flags, ConnEntry};
    let mut net = pair(0.0, 11);
    net.run(20);
    for (i, flag) in [
        (1, conn_flags::LOCAL),
        (2, conn_flags::PROXIED),
        (3, conn_flags::NO_SYNC),
        (4, 0),
    ] {
        let now = net.now;
        let e = ConnEntry::new(ConnState::Udp { replied: false }, true, 9, flag, now);
        net.a.t.insert_conn(key(i), e);
        net.a.e.changed(ItemKey::Conn(key(i)));
    }
    net.settle(1_000);
    assert_eq!(net.b.t.conn_count(), 1);
    assert!(net.b.t.conn_peek(&key(4)).is_some());
    // Nor by bulk.
    let id = net.b.e.request_resync(net.now).expect("peer up");
    net.settle(1_000);
    assert_eq!(net.b.e.resync_status(id), ResyncStatus::Done);
    assert_eq!(net.b.t.conn_count(), 1);
}

#[test]
fn garbage_and_authenticated_nonsense_never_panic() {
    use ha_proto::frame::{self, Header, PROTOCOL_VERSION};
    use ha_proto::msg::Channel;
    let mut rng = fastrand::Rng::with_seed(42);
    let mut b = Node::new(2, 200);
    let keys = KeySet::derive(&Psk([9; 32]), CLUSTER, 1);
    for seq in 0..5_000u64 {
        let len = rng.usize(0..1_600);
        let body: Vec<u8> = (0..len).map(|_| rng.u8(..)).collect();
        // Raw garbage.
        b.e.on_datagram(&mut b.t, &body, seq);
        // Garbage bodies sealed with the right key (a buggy or hostile peer), some of them
        // starting with a valid data or ack head.
        let mut msg = match seq % 3 {
            0 => {
                // A data message whose records are garbage.
                let records = body[..len.min(frame::MAX_BODY_LEN - 32)].to_vec();
                postcard::to_allocvec(&SyncMsg::Data {
                    stream: 1,
                    rseq: rng.u64(..4),
                    records: Records(records),
                })
                .expect("encode")
            }
            1 => postcard::to_allocvec(&SyncMsg::Ack {
                stream: rng.u32(..3),
                next: rng.u64(..),
                sack: rng.u64(..),
            })
            .expect("encode"),
            _ => Vec::new(),
        };
        if seq % 3 != 0 {
            msg.extend_from_slice(&body[..len.min(frame::MAX_BODY_LEN - msg.len())]);
        }
        let hdr = Header {
            version: PROTOCOL_VERSION,
            channel: Channel::StateSync,
            aead: false,
            key_id: keys.key_id(),
            cluster_id: CLUSTER,
            sender: Serial([1; 16]),
            epoch: 7,
            // Bound to B's boot, so that the bodies reach the decoders and the engine.
            peer_epoch: 200,
            seq,
        };
        let mut out = vec![0u8; frame::MAX_FRAME_LEN];
        let n = frame::seal(&keys, &hdr, &msg, &mut out).expect("seal");
        b.e.on_datagram(&mut b.t, &out[..n], seq);
        let _ = b.e.poll_transmit(&b.t, seq);
    }
    assert!(b.e.stats().rejected() > 5_000);
    assert!(
        b.e.stats().malformed > 0,
        "garbage records reached the record decoder"
    );
}

#[test]
fn a_passive_peers_empty_bulk_removes_nothing() {
    // A was active and synced its connections; then both are passive for a moment (a swap
    // in progress) and B asks for a resync: A's answer is empty and must not wipe B's copy.
    let mut net = pair(0.0, 13);
    for i in 0..100 {
        open(&mut net.a, i, 0);
    }
    net.settle(2_000);
    assert_eq!(net.b.t.conn_count(), 100);
    net.a.t.deactivate();
    let id = net.b.e.request_resync(net.now).expect("peer up");
    net.settle(2_000);
    assert_eq!(net.b.e.resync_status(id), ResyncStatus::Done);
    assert_eq!(
        net.b.t.conn_count(),
        100,
        "nothing removed by a passive's bulk"
    );
}

#[test]
fn one_sided_peer_loss_loses_no_update() {
    // B→A is cut for longer than the peer timeout: A declares B lost and drops what it had
    // queued, while B, still hearing A, notices nothing. When the path returns A must send
    // its whole table, or B would miss those changes for good.
    let mut net = pair(0.0, 17);
    for i in 0..1_000 {
        open(&mut net.a, i, 0);
    }
    net.settle(2_000);
    net.cut_ba = true;
    // Changes before A gives up on B (queued, sent, never acknowledged) and after.
    for i in 1_000..1_500 {
        let now = net.now;
        open(&mut net.a, i, now);
    }
    net.run(3_500);
    assert!(net
        .a
        .events
        .iter()
        .any(|e| matches!(e, SyncEvent::PeerLost)));
    for i in 1_500..2_000 {
        let now = net.now;
        open(&mut net.a, i, now);
    }
    for i in (0..1_000).step_by(5) {
        net.a.t.remove_conn(&key(i));
        net.a.e.changed(ItemKey::Conn(key(i)));
    }
    net.run(100);
    assert!(!net
        .b
        .events
        .iter()
        .any(|e| matches!(e, SyncEvent::PeerLost)));
    net.cut_ba = false;
    net.run(500); // a hello period or two: A meets B again
    assert_eq!(
        net.a
            .events
            .iter()
            .filter(|e| matches!(e, SyncEvent::PeerUp { .. }))
            .count(),
        2
    );
    net.settle(5_000);
    assert_same_conns(&net.a.t, &net.b.t, 2_000);
}

/// Found by `cargo xtask chaos`: the active's daemon restarted (empty table) while the peer
/// was still passive, so the peer answered its resync with a passive's empty bulk; then the
/// peer took over and nothing sent the restarted member the table: at the next takeover every
/// connection was gone. A member that becomes active sends its peer an authoritative bulk.
#[test]
fn a_member_that_takes_over_sends_its_table_to_a_peer_that_restarted_meanwhile() {
    let mut net = pair(0.0, 19);
    for i in 0..100 {
        open(&mut net.a, i, 0);
    }
    net.settle(2_000);
    assert_eq!(net.b.t.conn_count(), 100);
    // A's process restarts: a new boot with an empty, passive table; B is still passive.
    net.a = Node::new(1, 101);
    net.settle(2_000);
    assert_eq!(net.a.t.conn_count(), 0, "a passive's bulk is empty");
    assert_eq!(net.b.t.conn_count(), 100, "and removes nothing");
    // B takes over.
    let now = net.now;
    net.b.t.activate(now);
    net.settle(2_000);
    assert_same_conns(&net.b.t, &net.a.t, 100);
}

/// A replacement member (new serial, SPEC A6): refused by the survivor's engine while the
/// membership names the failed member only, then, once told the new member list, it gets the
/// survivor's whole table (the e2e's replacement held 0 of 199 connections before this).
#[test]
fn a_replacement_gets_the_table_once_the_membership_names_it() {
    let mut a_cfg = cfg(1, 100);
    a_cfg.peers = vec![Serial([2; 16])];
    let mut net = Net::new(Node::with(a_cfg), Node::new(2, 200), 0.0, 5);
    net.a.t.activate(0);
    net.run(20);
    for i in 0..50 {
        let now = net.now;
        open(&mut net.a, i, now);
    }
    net.settle(5_000);
    assert_same_conns(&net.a.t, &net.b.t, 50);

    // B dies; C (serial 3) takes its place on the wire.
    net.b = Node::new(3, 300);
    net.run(5_000);
    assert_eq!(net.b.t.conn_count(), 0, "a non-member got the table");
    let refused = net
        .a
        .e
        .stats()
        .rejects
        .get(ha_proto::endpoint::Reject::WrongSender);
    assert!(refused > 0, "C's frames were not even seen");

    // The membership changes: B removed, C added.
    net.a.e.set_peers(vec![Serial([3; 16])]);
    net.settle(10_000);
    assert_same_conns(&net.a.t, &net.b.t, 50);

    // Removing a member ends its session: nothing more reaches it.
    net.a.e.set_peers(vec![Serial([4; 16])]);
    net.run(100);
    assert!(!net.a.e.peer_up() || net.a.e.peer().map(|p| p.0) != Some(Serial([3; 16])));
}

/// What a member is (`SyncMsg::About`: its controller's model) reaches the peer once a
/// session exists and follows a change; one lost on the way arrives with the next repeat
/// ([`ABOUT_EVERY_MS`]); a model that may not travel is not sent.
#[test]
fn each_member_learns_what_its_peer_is_even_when_a_word_is_lost() {
    use ha_dataplane::sync::ABOUT_EVERY_MS;
    let mut net = pair(0.0, 23);
    net.a.e.set_about("mps2-an385");
    net.b.e.set_about("nucleo-h743zi");
    net.b.e.set_about(""); // refused: B goes on saying what it said
    net.b.e.set_about("x\u{7}bell");
    net.run(1_000);
    assert_eq!(net.b.e.peer_about(), Some((Serial([1; 16]), "mps2-an385")));
    assert_eq!(
        net.a.e.peer_about(),
        Some((Serial([2; 16]), "nucleo-h743zi"))
    );
    // A change sent into a cut path is lost; the repeat brings it.
    net.cut_ab = true;
    net.a.e.set_about("mps2-an386");
    net.run(50);
    net.cut_ab = false;
    net.run(500);
    assert_eq!(net.b.e.peer_about(), Some((Serial([1; 16]), "mps2-an385")));
    net.run(ABOUT_EVERY_MS);
    assert_eq!(net.b.e.peer_about(), Some((Serial([1; 16]), "mps2-an386")));
    assert_eq!(net.b.e.stats().malformed, 0);
}

/// What the daemon tells its controller (`HostMsg::TableHeld`) comes from here: a member
/// that (re)joins holds its peer's table only once the whole bulk arrived; a lost session
/// makes what it holds stale until the next bulk.
#[test]
fn a_member_holds_its_peers_table_only_once_the_bulk_arrived() {
    let mut net = pair(0.0, 11);
    assert_eq!(net.b.e.peer_table(), PeerTable::NoPeerYet);
    let n = 20_000;
    for i in 0..n {
        open(&mut net.a, i, 0);
    }
    net.settle(30_000);
    assert_eq!(net.b.e.peer_table(), PeerTable::Held);
    // B restarts: it holds nothing until A's bulk has arrived whole.
    net.b = Node::new(2, 201);
    assert_eq!(net.b.e.peer_table(), PeerTable::NoPeerYet);
    let (mut receiving, mut held_at) = (0, None);
    for _ in 0..30_000 {
        net.tick();
        match net.b.e.peer_table() {
            PeerTable::Receiving => receiving += 1,
            PeerTable::Held => {
                held_at = Some(net.b.t.conn_count());
                break;
            }
            other => assert_eq!(other, PeerTable::NoPeerYet),
        }
    }
    assert!(receiving > 1, "the bulk takes more than one tick");
    assert_eq!(
        held_at,
        Some(n as usize),
        "held means the whole table is there"
    );
    assert_same_conns(&net.a.t, &net.b.t, n);
    // The link breaks: once the session is lost the table may be stale.
    net.cut_ab = true;
    net.cut_ba = true;
    net.run(4_000);
    assert_eq!(net.b.e.peer_table(), PeerTable::Lost);
    // Back: a new session, a new bulk, held again.
    net.cut_ab = false;
    net.cut_ba = false;
    // The next hellos start the session.
    net.run(600);
    net.settle(30_000);
    assert_eq!(net.b.e.peer_table(), PeerTable::Held);
}
