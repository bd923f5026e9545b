//! The state-sync channel against an attacker on the path: replays across restarts
//! (defect 2), a key retired by a PSK rotation (defect 4), bodies in clear despite `encrypt`
//! (defect 5). Caps are in `sync_caps.rs`.

mod common;

use common::*;
use ha_dataplane::sync::Record;
use ha_proto::endpoint::Reject;
use ha_proto::frame::{self, Header, HEADER_LEN, PROTOCOL_VERSION, TAG_LEN};
use ha_proto::msg::Channel;

/// What an observer learns from A's frames in clear (HMAC mode): the newest header sequence
/// number, and the stream and next reliable sequence number of A's data.
fn observe(frames: &[Vec<u8>]) -> (u64, u32, u64) {
    let (mut seq, mut stream, mut rseq) = (0, 0, 0);
    for d in frames {
        let Ok(h) = frame::peek_header(d) else {
            continue;
        };
        seq = seq.max(h.seq);
        if let Ok(SyncMsg::Data {
            stream: s, rseq: r, ..
        }) = SyncMsg::parse(&d[HEADER_LEN..d.len() - TAG_LEN])
        {
            if s != stream {
                (stream, rseq) = (s, 0);
            }
            rseq = rseq.max(r + 1);
        }
    }
    (seq, stream, rseq)
}

/// A frame as A would seal it (sender 1, boot `epoch`, bound to `peer_epoch`), with `keys`.
fn forge(keys: &KeySet, epoch: u32, peer_epoch: u32, seq: u64, msg: &SyncMsg) -> Vec<u8> {
    let hdr = Header {
        version: PROTOCOL_VERSION,
        channel: Channel::StateSync,
        aead: false,
        key_id: keys.key_id(),
        cluster_id: CLUSTER,
        sender: Serial([1; 16]),
        epoch,
        peer_epoch,
        seq,
    };
    let mut out = vec![0u8; frame::MAX_FRAME_LEN];
    let n = frame::seal_msg(keys, &hdr, msg, &mut out).expect("seal");
    out.truncate(n);
    out
}

/// A data message deleting connections `range`.
fn deletes(stream: u32, rseq: u64, range: std::ops::Range<u32>) -> SyncMsg {
    let mut records = Records::default();
    for i in range {
        records.push(&Record::DelConn(key(i))).expect("encode");
    }
    SyncMsg::Data {
        stream,
        rseq,
        records,
    }
}

/// A (active, boot 100) and B (passive, boot 200) in sync on connections 0..100, then A
/// closes 0..60; the attacker recorded every frame A sent.
fn recorded_history() -> (Net, Vec<Vec<u8>>) {
    let mut net = pair(0.0, 21);
    net.tap_ab = Some(Vec::new());
    net.run(20);
    for i in 0..100 {
        let now = net.now;
        open(&mut net.a, i, now);
    }
    net.settle(2_000);
    for i in 0..60 {
        net.a.t.remove_conn(&key(i));
        net.a.e.changed(ItemKey::Conn(key(i)));
    }
    net.settle(2_000);
    assert_eq!(net.b.t.conn_count(), 40);
    let tape = net.tap_ab.take().expect("tap");
    (net, tape)
}

#[test]
fn frames_recorded_before_the_passives_restart_change_nothing_after_it() {
    let (mut net, tape) = recorded_history();
    // B's daemon restarts (boot 201, empty tables). The attacker holds A's live frames back
    // and replays everything it recorded: creations of 0..100, deletions of 0..60.
    net.b = Node::new(2, 201);
    net.q_ab.clear();
    let now = net.now;
    for d in &tape {
        net.b.e.on_datagram(&mut net.b.t, d, now);
    }
    assert_eq!(net.b.t.conn_count(), 0, "replayed frames installed nothing");
    assert!(!net.b.e.peer_up(), "no session from recorded frames");
    let rejects = &net.b.e.stats().rejects;
    assert!(rejects.get(Reject::StaleBinding) > 0, "{rejects:?}");
    assert_eq!(net.b.e.stats().records_applied, 0);
    // B meets A for real and gets its table; a replay then still changes nothing (the closed
    // connections 0..60 stay closed).
    net.settle(3_000);
    assert_eq!(net.b.t.conn_count(), 40);
    let applied = net.b.e.stats().records_applied;
    let now = net.now;
    for d in &tape {
        net.b.e.on_datagram(&mut net.b.t, d, now);
    }
    assert_eq!(net.b.t.conn_count(), 40);
    assert!((0..60).all(|i| net.b.t.conn_peek(&key(i)).is_none()));
    assert_eq!(net.b.e.stats().records_applied, applied);
    net.settle(1_000);
    assert_same_conns(&net.a.t, &net.b.t, 100);
}

#[test]
fn frames_recorded_before_the_actives_restart_change_nothing_after_it() {
    let (mut net, tape) = recorded_history();
    // A's daemon restarts (boot 101) and its traffic opens 0..100 again. A replay before B
    // hears the new boot is refused by the replay window; after, by the sender's boot.
    net.a = Node::new(1, 101);
    net.a.t.activate(net.now);
    net.q_ab.clear();
    let now = net.now;
    for d in &tape {
        net.b.e.on_datagram(&mut net.b.t, d, now);
    }
    assert_eq!(net.b.t.conn_count(), 40, "replayed before the new boot");
    assert!(net.b.e.stats().rejects.get(Reject::Replay) > 0);
    for i in 0..100 {
        let now = net.now;
        open(&mut net.a, i, now);
    }
    net.settle(3_000);
    assert_eq!(net.b.e.peer().map(|p| p.1), Some(101));
    assert_eq!(net.b.t.conn_count(), 100);
    let now = net.now;
    for d in &tape {
        net.b.e.on_datagram(&mut net.b.t, d, now);
    }
    assert_eq!(
        net.b.t.conn_count(),
        100,
        "the old boot's deletions changed nothing"
    );
    assert!(net.b.e.stats().rejects.get(Reject::StaleEpoch) > 0);
    net.settle(1_000);
    assert_same_conns(&net.a.t, &net.b.t, 100);
}

#[test]
fn an_unbound_state_frame_is_refused_and_an_unbound_hello_changes_nothing() {
    let (mut net, tape) = recorded_history();
    let keys = KeySet::derive(&Psk([9; 32]), CLUSTER, 1);
    let (seq, stream, rseq) = observe(&tape);
    // Valid key, next stream position, but unbound (peer epoch 0): refused.
    let unbound = forge(&keys, 100, 0, seq + 1, &deletes(stream, rseq, 60..100));
    let now = net.now;
    net.b.e.on_datagram(&mut net.b.t, &unbound, now);
    assert_eq!(net.b.e.stats().rejects.get(Reject::Unbound), 1);
    assert_eq!(net.b.t.conn_count(), 40);
    // The same deletions bound to B's boot would go through (here of 60..70): only the
    // binding stopped them.
    let bound = forge(&keys, 100, 200, seq + 2, &deletes(stream, rseq, 60..70));
    net.b.e.on_datagram(&mut net.b.t, &bound, now);
    assert_eq!(net.b.t.conn_count(), 30);
    // An unbound Hello announcing a new boot of A: the session and the tables stay.
    net.b.e.poll_events();
    let hello = forge(&keys, 102, 0, 0, &SyncMsg::Hello);
    net.b.e.on_datagram(&mut net.b.t, &hello, now);
    assert_eq!(net.b.e.peer().map(|p| p.1), Some(100));
    assert!(net.b.e.poll_events().is_empty(), "no new session");
    assert_eq!(net.b.t.conn_count(), 30);
}

/// Runs one rollover phase on both members, then lets them exchange (as `hactl psk rotate`
/// does: every member confirms a phase before the next starts anywhere).
fn both(net: &mut Net, phase: impl Fn(&mut SyncEngine)) {
    phase(&mut net.a.e);
    phase(&mut net.b.e);
    net.run(300);
}

#[test]
fn after_a_psk_rotation_a_frame_sealed_with_the_old_key_is_refused() {
    let mut net = pair(0.0, 23);
    net.tap_ab = Some(Vec::new());
    net.run(20);
    for i in 0..100 {
        let now = net.now;
        open(&mut net.a, i, now);
    }
    net.settle(2_000);
    let old = KeySet::derive(&Psk([9; 32]), CLUSTER, 1);
    let new = KeySet::derive(&Psk([0x3c; 32]), CLUSTER, 2);
    both(&mut net, |e| e.accept_key(new.clone()).expect("accept"));
    assert_eq!(net.a.e.key_ids(), (1, Some(2)));
    both(&mut net, |e| e.seal_with_key(2).expect("seal with"));
    both(&mut net, |e| e.retire_previous_key());
    assert_eq!(net.b.e.key_ids(), (2, None));
    // Records still flow under the new key.
    let now = net.now;
    open(&mut net.a, 100, now);
    net.settle(2_000);
    assert_eq!(net.b.t.conn_count(), 101);
    // The measured bug: one datagram forged with the old PSK (position and boots read off the
    // wire) deleted 60 of 100 connections on the passive. Now: unknown key.
    let tape = net.tap_ab.take().expect("tap");
    let (seq, stream, rseq) = observe(&tape);
    let forged = forge(&old, 100, 200, seq + 1, &deletes(stream, rseq, 0..60));
    let now = net.now;
    net.b.e.on_datagram(&mut net.b.t, &forged, now);
    assert_eq!(net.b.e.stats().rejects.get(Reject::UnknownKey), 1);
    assert_eq!(net.b.t.conn_count(), 101, "nothing deleted");
    // Control: the same datagram under the current key is accepted (and deletes), so only
    // the retired key stopped it.
    let control = forge(&new, 100, 200, seq + 1, &deletes(stream, rseq, 0..60));
    net.b.e.on_datagram(&mut net.b.t, &control, now);
    assert_eq!(net.b.t.conn_count(), 41);
}

#[test]
fn a_rollover_loses_no_record_and_old_frames_open_only_until_retired() {
    let mut net = pair(0.0, 29);
    net.run(20);
    let new = KeySet::derive(&Psk([0x3c; 32]), CLUSTER, 2);
    // Phase 1 on both, phase 2 on A only: A seals with 2, B still seals with 1; both accept
    // both, and records keep flowing both ways.
    both(&mut net, |e| e.accept_key(new.clone()).expect("accept"));
    net.a.e.seal_with_key(2).expect("seal with");
    for i in 0..50 {
        let now = net.now;
        open(&mut net.a, i, now);
    }
    net.settle(2_000);
    assert_eq!(net.b.t.conn_count(), 50);
    assert_eq!(net.b.e.stats().rejected(), 0);
    // Retiring on B before A switched would cut A off: the phases are ordered cluster-wide.
    net.b.e.seal_with_key(2).expect("seal with");
    both(&mut net, |e| e.retire_previous_key());
    for i in 50..100 {
        let now = net.now;
        open(&mut net.a, i, now);
    }
    net.settle(2_000);
    assert_same_conns(&net.a.t, &net.b.t, 100);
    assert_eq!(net.b.e.stats().rejected(), 0);
}

mod encrypt {
    use super::*;
    use ha_dataplane::{Dataplane, Packet};
    use ha_proto::config_block::{
        AggregateRule, ConfigBlock, DomainEntry, HwWeights, LinkAddr, MemberEntry, TimerProfile,
        DEFAULT_HA_PORT, DEFAULT_STATE_SYNC_PORT,
    };

    fn block(me: &str, encrypt: bool) -> ConfigBlock {
        let s = |x: &str| Serial::new(x).expect("serial");
        let mut members = heapless::Vec::new();
        for (x, ip) in [("SN-A", [10, 0, 0, 1]), ("SN-B", [10, 0, 0, 2])] {
            let main_link = LinkAddr {
                ip,
                port: DEFAULT_HA_PORT,
            };
            members
                .push(MemberEntry {
                    serial: s(x),
                    main_link,
                })
                .expect("room");
        }
        let mut domains = heapless::Vec::new();
        domains
            .push(DomainEntry {
                id: 0,
                preferred: None,
            })
            .expect("room");
        ConfigBlock {
            serial: s(me),
            cluster_id: 0xC0FFEE,
            key_id: 1,
            encrypt,
            members,
            backup_link: true,
            state_sync_port: DEFAULT_STATE_SYNC_PORT,
            timers: TimerProfile::Default,
            domains,
            aggregate: AggregateRule::AllDown,
            tpm_included: false,
            weights: HwWeights::default(),
            psk: Psk([0x5A; 32]),
        }
    }

    const CLIENT: [u8; 4] = [198, 51, 100, 77];
    const SPORT: u16 = 40_001;
    const DPORT: u16 = 8_443;

    /// Two members of `block`s; A forwards one connection from CLIENT; returns every
    /// datagram A sent and whether B got the connection.
    fn capture(encrypt: bool) -> (Vec<Vec<u8>>, bool) {
        let mut a = Dataplane::from_block(&block("SN-A", encrypt), 1);
        let mut b = Dataplane::from_block(&block("SN-B", encrypt), 2);
        a.set_role(true, 0);
        let p = Packet {
            zone: 0,
            ingress: 0,
            proto: 6,
            src: IpAddr::V4(Ipv4Addr::from(CLIENT)),
            dst: IpAddr::V4(Ipv4Addr::new(203, 0, 113, 9)),
            sport: SPORT,
            dport: DPORT,
            flags: tcp::SYN,
            len: 60,
            local: false,
        };
        let mut sent = Vec::new();
        for now in 0..300 {
            if now == 100 {
                assert!(a.check(&p, true, now).forwards());
            }
            for d in a.poll_transmit(now) {
                b.on_datagram(&d, now);
                sent.push(d);
            }
            for d in b.poll_transmit(now) {
                a.on_datagram(&d, now);
            }
        }
        let (k, _) = ConnKey::of(0, 6, p.src, SPORT, p.dst, DPORT);
        (sent, b.tables().conn_peek(&k).is_some())
    }

    fn contains(d: &[u8], pat: &[u8]) -> bool {
        d.windows(pat.len()).any(|w| w == pat)
    }

    /// The client's address, and its port as postcard writes it and as a header would.
    fn leaks(sent: &[Vec<u8>]) -> usize {
        let varint = postcard::to_allocvec(&SPORT).expect("encode");
        sent.iter()
            .filter(|d| {
                contains(d, &CLIENT) || contains(d, &varint) || contains(d, &SPORT.to_be_bytes())
            })
            .count()
    }

    #[test]
    fn with_encrypt_a_sync_datagram_hides_the_connection() {
        let (sent, synced) = capture(true);
        assert!(synced, "the connection reached the peer");
        assert!(
            sent.iter().all(|d| d[4] & frame::FLAG_AEAD != 0),
            "every frame AEAD"
        );
        assert_eq!(leaks(&sent), 0, "client address or port in clear");
        // Control: without encrypt the same capture shows them.
        let (sent, synced) = capture(false);
        assert!(synced);
        assert!(leaks(&sent) > 0);
    }
}
