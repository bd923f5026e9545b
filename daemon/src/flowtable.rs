//! The daemon's own small connection table and state sync (`table = "builtin"`), written
//! while the dataplane crate was not yet available and kept as a dependency-free fallback; the
//! default is the dataplane crate ([`crate::dp`]). Deliberately small: a flow per connection
//! (both directions) without protocol state, idle timeouts, and a sync of creations and
//! deletions in sealed frames (channel `StateSync`): acknowledged and retransmitted, a full
//! resend whenever the peer (re)starts and every [`REFRESH_PERIOD`] from the active, activation
//! in constant time (see `docs/daemon.md`).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ha_proto::config_block::ConfigBlock;
use ha_proto::frame::{self, MAX_BODY_LEN, MAX_FRAME_LEN};
use ha_proto::keys::{KeySet, Keyring};
use ha_proto::msg::{Channel, Serial};
use ha_proto::replay::ReplayTable;
use ha_proto::seq::Sequencer;

use crate::app::SyncPlane;
use crate::fastpath::{tcp_flags, Filter, PacketInfo, Side};
use crate::runtime::Activate;

/// Idle timeout of a TCP connection.
pub const TCP_IDLE: Duration = Duration::from_secs(3600);
/// Idle timeout of a TCP connection after FIN or RST.
pub const TCP_CLOSING: Duration = Duration::from_secs(10);
/// Idle timeout of UDP, ICMP and other flows.
pub const OTHER_IDLE: Duration = Duration::from_secs(60);
/// Most flows; a new one beyond this is refused (counted).
pub const MAX_FLOWS: usize = 1 << 20;
/// Bytes of one sync record: op, protocol, two addresses and two ports.
pub const RECORD_LEN: usize = 14;
/// Records per frame: as many as fit one frame body.
pub const RECORDS_PER_FRAME: usize = MAX_BODY_LEN / RECORD_LEN;
/// Period of the hello that tells the peer we (re)started and asks for its table.
pub const HELLO_PERIOD: Duration = Duration::from_secs(1);
/// The active resends its whole table this often: an update lost on the way is repaired
/// within this period, and the passive's copies of long-lived connections (which see no
/// packets there) do not idle out.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(10);
/// Senders tracked by the replay table: the peer daemon(s) of a cluster.
const REPLAY_SLOTS: usize = ha_proto::msg::MAX_MEMBERS;

/// A frame not acknowledged within this time is sent again.
pub const RETRANSMIT_AFTER: Duration = Duration::from_millis(30);
/// Sends of one frame before it is given up (the next refresh repairs what it carried).
pub const MAX_SENDS: u8 = 8;
/// Frames awaiting acknowledgement; beyond this the oldest is given up.
pub const MAX_UNACKED: usize = 4096;

const OP_HELLO: u8 = 0;
const OP_ACK: u8 = 3;
/// Ends a bulk; the record's address fields carry the number of connections sent.
const OP_BULK_END: u8 = 4;
const OP_ADD: u8 = 1;
const OP_DEL: u8 = 2;

/// A connection, direction-free: the endpoints in a fixed order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    /// IP protocol.
    pub proto: u8,
    /// Lower endpoint.
    pub lo: (Ipv4Addr, u16),
    /// Higher endpoint.
    pub hi: (Ipv4Addr, u16),
}

impl FlowKey {
    /// The key of a packet (either direction gives the same key).
    pub fn of(p: &PacketInfo) -> Self {
        let a = (p.src, p.sport);
        let b = (p.dst, p.dport);
        let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
        Self {
            proto: p.proto,
            lo,
            hi,
        }
    }

    fn encode(&self, op: u8, out: &mut Vec<u8>) {
        out.push(op);
        out.push(self.proto);
        out.extend_from_slice(&self.lo.0.octets());
        out.extend_from_slice(&self.lo.1.to_be_bytes());
        out.extend_from_slice(&self.hi.0.octets());
        out.extend_from_slice(&self.hi.1.to_be_bytes());
    }

    fn decode(r: &[u8]) -> Option<(u8, Self)> {
        let r: &[u8; RECORD_LEN] = r.try_into().ok()?;
        let ip = |i: usize| Ipv4Addr::new(r[i], r[i + 1], r[i + 2], r[i + 3]);
        let port = |i: usize| u16::from_be_bytes([r[i], r[i + 1]]);
        Some((
            r[0],
            Self {
                proto: r[1],
                lo: (ip(2), port(6)),
                hi: (ip(8), port(12)),
            },
        ))
    }
}

#[derive(Clone, Copy, Debug)]
struct Flow {
    last: Instant,
    closing: bool,
}

/// Counters of the table and its sync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Flows created locally.
    pub created: u64,
    /// Flows installed from the peer.
    pub synced_in: u64,
    /// New flows refused (table full).
    pub refused_full: u64,
    /// Sync frames rejected (authentication, replay, format).
    pub sync_rejected: u64,
    /// Sync frames sent (retransmissions included).
    pub sync_sent: u64,
    /// Frames sent again for want of an acknowledgement.
    pub retransmitted: u64,
    /// Frames given up after [`MAX_SENDS`] sends or for room (a refresh repairs them).
    pub given_up: u64,
}

/// The connection table with its sync state.
pub struct FlowTable {
    flows: HashMap<FlowKey, Flow>,
    outq: Vec<(u8, FlowKey)>,
    keyring: Keyring,
    cluster_id: u32,
    me: Serial,
    seq: Sequencer,
    replay: ReplayTable<REPLAY_SLOTS>,
    peer_epoch: Option<u32>,
    last_hello: Option<Instant>,
    last_expire: Option<Instant>,
    last_refresh: Option<Instant>,
    active: bool,
    activated_at: Option<Instant>,
    /// Sent frames not yet acknowledged: sequence → (frame, last sent, sends).
    unacked: std::collections::BTreeMap<u64, (Vec<u8>, Instant, u8)>,
    /// Sequences to acknowledge to the peer.
    to_ack: Vec<u64>,
    /// Sync events for the event log.
    events: Vec<crate::app::SyncEvent>,
    stats: FlowStats,
}

impl std::fmt::Debug for FlowTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlowTable")
            .field("flows", &self.flows.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl FlowTable {
    /// An empty table syncing under the block's state-sync key, boot epoch `epoch`.
    pub fn new(block: &ConfigBlock, epoch: u32) -> Self {
        Self {
            flows: HashMap::new(),
            outq: Vec::new(),
            keyring: Keyring::new(KeySet::derive(&block.psk, block.cluster_id, block.key_id)),
            cluster_id: block.cluster_id,
            me: block.serial,
            seq: Sequencer::new(block.cluster_id, block.serial, epoch),
            replay: ReplayTable::new(),
            peer_epoch: None,
            last_hello: None,
            last_expire: None,
            last_refresh: None,
            active: false,
            activated_at: None,
            unacked: std::collections::BTreeMap::new(),
            to_ack: Vec::new(),
            events: Vec::new(),
            stats: FlowStats::default(),
        }
    }

    /// Number of flows.
    pub fn len(&self) -> usize {
        self.flows.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }

    /// Counters.
    pub fn stats(&self) -> &FlowStats {
        &self.stats
    }

    fn expire(&mut self, now: Instant) {
        let mut gone = Vec::new();
        let activated_at = self.activated_at;
        self.flows.retain(|k, f| {
            let idle = if k.proto == 6 && !f.closing {
                TCP_IDLE
            } else if k.proto == 6 {
                TCP_CLOSING
            } else {
                OTHER_IDLE
            };
            let last = activated_at.map_or(f.last, |a| f.last.max(a));
            let keep = now.duration_since(last) < idle;
            if !keep {
                gone.push(*k);
            }
            keep
        });
        self.outq.extend(gone.into_iter().map(|k| (OP_DEL, k)));
    }

    /// Seals records into frames; frames that carry table changes wait for an
    /// acknowledgement (`reliable`), hellos and acknowledgements do not.
    fn frames(&mut self, records: &[(u8, FlowKey)], reliable: bool, now: Instant) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for chunk in records.chunks(RECORDS_PER_FRAME.max(1)) {
            let mut body = Vec::with_capacity(chunk.len() * RECORD_LEN);
            for (op, k) in chunk {
                k.encode(*op, &mut body);
            }
            let hdr = self
                .seq
                .header(Channel::StateSync, self.keyring.sealing().key_id());
            let mut buf = vec![0u8; MAX_FRAME_LEN];
            if let Ok(n) = frame::seal(self.keyring.sealing(), &hdr, &body, &mut buf) {
                buf.truncate(n);
                if reliable {
                    if self.unacked.len() >= MAX_UNACKED {
                        self.unacked.pop_first();
                        self.stats.given_up += 1;
                    }
                    self.unacked.insert(hdr.seq, (buf.clone(), now, 1));
                }
                out.push(buf);
                self.stats.sync_sent += 1;
            }
        }
        out
    }

    /// An end-of-bulk record carries the bulk's size in its address fields.
    fn count_record(n: usize) -> FlowKey {
        let b = (n as u64).to_be_bytes();
        FlowKey {
            proto: 0,
            lo: (Ipv4Addr::new(b[0], b[1], b[2], b[3]), 0),
            hi: (Ipv4Addr::new(b[4], b[5], b[6], b[7]), 0),
        }
    }

    fn count_of(k: &FlowKey) -> usize {
        usize::try_from(Self::acked_seq(k)).unwrap_or(usize::MAX)
    }

    /// An acknowledgement record carries the acknowledged sequence in its address fields.
    fn ack_record(seq: u64) -> (u8, FlowKey) {
        let b = seq.to_be_bytes();
        (
            OP_ACK,
            FlowKey {
                proto: 0,
                lo: (Ipv4Addr::new(b[0], b[1], b[2], b[3]), 0),
                hi: (Ipv4Addr::new(b[4], b[5], b[6], b[7]), 0),
            },
        )
    }

    fn acked_seq(k: &FlowKey) -> u64 {
        let (a, b) = (k.lo.0.octets(), k.hi.0.octets());
        u64::from_be_bytes([a[0], a[1], a[2], a[3], b[0], b[1], b[2], b[3]])
    }
}

impl Filter for FlowTable {
    fn check(&mut self, p: &PacketInfo, _from: Side, allow_new: bool, now: Instant) -> bool {
        let key = FlowKey::of(p);
        if let Some(f) = self.flows.get_mut(&key) {
            f.last = now;
            if p.proto == 6 && p.tcp_flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
                f.closing = true;
            }
            return true;
        }
        let opens = match p.proto {
            // A TCP connection opens with a SYN without ACK; anything else of an unknown
            // connection is dropped.
            6 => p.tcp_flags & (tcp_flags::SYN | tcp_flags::ACK) == tcp_flags::SYN,
            _ => true,
        };
        if !(allow_new && opens) {
            return false;
        }
        if self.flows.len() >= MAX_FLOWS {
            self.stats.refused_full += 1;
            return false;
        }
        self.flows.insert(
            key,
            Flow {
                last: now,
                closing: false,
            },
        );
        self.outq.push((OP_ADD, key));
        self.stats.created += 1;
        true
    }
}

impl Activate for FlowTable {
    fn set_role(&mut self, active: bool, now: Instant) {
        self.active = active;
        if active {
            // Constant time, whatever the table size: flows learnt from the peer start their
            // idle clock at the takeover through this one instant, not by touching each entry.
            self.activated_at = Some(now);
        }
    }
}

impl SyncPlane for FlowTable {
    fn on_datagram(&mut self, bytes: &[u8], now: Instant) {
        let mut buf = bytes.to_vec();
        let opened = match frame::open(&self.keyring, self.cluster_id, &mut buf) {
            Ok(o) => o,
            Err(_) => {
                self.stats.sync_rejected += 1;
                return;
            }
        };
        let h = opened.header;
        if h.channel != Channel::StateSync
            || h.sender == self.me
            || opened.body.len() % RECORD_LEN != 0
        {
            self.stats.sync_rejected += 1;
            return;
        }
        let body = opened.body.to_vec();
        let carries_changes = body.chunks(RECORD_LEN).any(|r| {
            matches!(
                r.first(),
                Some(&OP_ADD) | Some(&OP_DEL) | Some(&OP_BULK_END)
            )
        });
        if self.replay.check_header(&h).is_err() {
            // Authentic but already seen: our acknowledgement was lost; acknowledge again.
            if carries_changes {
                self.to_ack.push(h.seq);
            }
            self.stats.sync_rejected += 1;
            return;
        }
        if carries_changes {
            self.to_ack.push(h.seq);
        }
        if self.peer_epoch != Some(h.epoch) {
            // The peer (re)started: it gets the whole table, closed by an end-of-bulk record
            // with the count.
            self.peer_epoch = Some(h.epoch);
            let all: Vec<_> = self.flows.keys().map(|k| (OP_ADD, *k)).collect();
            let n = all.len();
            self.outq.extend(all);
            self.outq.push((OP_BULK_END, Self::count_record(n)));
            self.events
                .push(crate::app::SyncEvent::BulkSent { records: n });
        }
        for r in body.chunks(RECORD_LEN) {
            match FlowKey::decode(r) {
                Some((OP_ADD, k)) => {
                    if let Some(f) = self.flows.get_mut(&k) {
                        // A refresh: the connection is alive on the peer.
                        f.last = f.last.max(now);
                    } else if self.flows.len() < MAX_FLOWS {
                        self.flows.insert(
                            k,
                            Flow {
                                last: now,
                                closing: false,
                            },
                        );
                        self.stats.synced_in += 1;
                    }
                }
                Some((OP_DEL, k)) => {
                    self.flows.remove(&k);
                }
                Some((OP_HELLO, _)) => {}
                Some((OP_BULK_END, k)) => {
                    self.events.push(crate::app::SyncEvent::BulkReceived {
                        records: Self::count_of(&k),
                    });
                }
                Some((OP_ACK, k)) => {
                    self.unacked.remove(&Self::acked_seq(&k));
                }
                _ => self.stats.sync_rejected += 1,
            }
        }
    }

    fn poll_events(&mut self) -> Vec<crate::app::SyncEvent> {
        std::mem::take(&mut self.events)
    }

    fn poll_transmit(&mut self, now: Instant) -> Vec<Vec<u8>> {
        if self
            .last_expire
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_expire = Some(now);
            self.expire(now);
        }
        if self.active
            && self
                .last_refresh
                .is_none_or(|t| now.duration_since(t) >= REFRESH_PERIOD)
        {
            self.last_refresh = Some(now);
            let all: Vec<_> = self.flows.keys().map(|k| (OP_ADD, *k)).collect();
            self.outq.extend(all);
        }
        let records = std::mem::take(&mut self.outq);
        let mut hello = Vec::new();
        if self
            .last_hello
            .is_none_or(|t| now.duration_since(t) >= HELLO_PERIOD)
        {
            self.last_hello = Some(now);
            hello = self.frames(
                &[(
                    OP_HELLO,
                    FlowKey {
                        proto: 0,
                        lo: (Ipv4Addr::UNSPECIFIED, 0),
                        hi: (Ipv4Addr::UNSPECIFIED, 0),
                    },
                )],
                false,
                now,
            );
        }
        let mut out = hello;
        if !records.is_empty() {
            out.extend(self.frames(&records, true, now));
        }
        let acks: Vec<_> = std::mem::take(&mut self.to_ack)
            .into_iter()
            .map(Self::ack_record)
            .collect();
        if !acks.is_empty() {
            out.extend(self.frames(&acks, false, now));
        }
        let mut give_up = Vec::new();
        for (seq, (bytes, sent, sends)) in self.unacked.iter_mut() {
            if now.duration_since(*sent) >= RETRANSMIT_AFTER {
                if *sends >= MAX_SENDS {
                    give_up.push(*seq);
                    continue;
                }
                *sent = now;
                *sends += 1;
                out.push(bytes.clone());
                self.stats.retransmitted += 1;
                self.stats.sync_sent += 1;
            }
        }
        for seq in give_up {
            self.unacked.remove(&seq);
            self.stats.given_up += 1;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_proto::keys::Psk;

    fn block(serial: &str) -> ConfigBlock {
        let mut b = crate::hostlink::tests::sample_cfg();
        b.serial = Serial::new(serial).expect("serial");
        b
    }

    fn pkt(src: &str, sp: u16, dst: &str, dp: u16, flags: u8) -> PacketInfo {
        PacketInfo {
            proto: 6,
            src: src.parse().expect("ip"),
            dst: dst.parse().expect("ip"),
            sport: sp,
            dport: dp,
            tcp_flags: flags,
            len: 60,
        }
    }

    #[test]
    fn stateful_rules() {
        let mut t = FlowTable::new(&block("SN-A"), 1);
        let now = Instant::now();
        let syn = pkt("10.1.0.1", 1000, "10.2.0.1", 80, tcp_flags::SYN);
        let synack = pkt(
            "10.2.0.1",
            80,
            "10.1.0.1",
            1000,
            tcp_flags::SYN | tcp_flags::ACK,
        );
        let mid = pkt("10.1.0.1", 1001, "10.2.0.1", 80, tcp_flags::ACK);
        assert!(!t.check(&syn, Side::Outside, false, now), "new not allowed");
        assert!(
            !t.check(&mid, Side::Inside, true, now),
            "mid-stream unknown"
        );
        assert!(t.check(&syn, Side::Inside, true, now));
        assert!(
            t.check(&synack, Side::Outside, false, now),
            "the answer is known"
        );
        assert_eq!(t.len(), 1);
        let udp = PacketInfo {
            proto: 17,
            ..pkt("10.1.0.1", 5, "10.2.0.1", 53, 0)
        };
        assert!(t.check(&udp, Side::Inside, true, now));
        assert_eq!(t.len(), 2);
        t.expire(now + OTHER_IDLE + Duration::from_secs(1));
        assert_eq!(t.len(), 1, "UDP expired, TCP kept");
    }

    #[test]
    fn sync_replicates_and_a_restarted_peer_gets_everything() {
        let now = Instant::now();
        let mut a = FlowTable::new(&block("SN-A"), 10);
        let mut b = FlowTable::new(&block("SN-B"), 20);
        for i in 0..300u16 {
            assert!(a.check(
                &pkt("10.1.0.1", 1000 + i, "10.2.0.1", 80, tcp_flags::SYN),
                Side::Inside,
                true,
                now
            ));
        }
        for d in a.poll_transmit(now) {
            b.on_datagram(&d, now);
        }
        assert_eq!(b.len(), 300);
        assert_eq!(b.stats().synced_in, 300);
        // B now knows the mid-stream packets of A's connections.
        let mid = pkt("10.2.0.1", 80, "10.1.0.1", 1100, tcp_flags::ACK);
        assert!(b.check(&mid, Side::Outside, false, now));

        // Replays and forgeries are refused.
        let frames = a.frames(&[(OP_ADD, FlowKey::of(&mid))], true, now);
        b.on_datagram(&frames[0], now);
        b.on_datagram(&frames[0], now);
        let mut forger = FlowTable::new(&block("SN-A"), 10);
        forger.keyring = Keyring::new(KeySet::derive(&Psk([9; 32]), 0xC0FFEE, 1));
        let f = forger.frames(&[(OP_ADD, FlowKey::of(&mid))], true, now);
        b.on_datagram(&f[0], now);
        assert_eq!(b.stats().sync_rejected, 2);

        // B restarts (new epoch): its first hello makes A send the whole table.
        let mut b2 = FlowTable::new(&block("SN-B"), 21);
        for d in b2.poll_transmit(now) {
            a.on_datagram(&d, now);
        }
        for d in a.poll_transmit(now + HELLO_PERIOD) {
            b2.on_datagram(&d, now);
        }
        assert_eq!(b2.len(), 300);
        assert_eq!(
            a.poll_events(),
            vec![crate::app::SyncEvent::BulkSent { records: 300 }],
            "to the restarted B"
        );
        assert!(b2
            .poll_events()
            .contains(&crate::app::SyncEvent::BulkReceived { records: 300 }));
    }

    /// Frames carrying changes, in the order sent (hellos and acknowledgements left out).
    fn changes(frames: &[Vec<u8>]) -> Vec<Vec<u8>> {
        frames
            .iter()
            .filter(|f| {
                let body = &f[ha_proto::frame::HEADER_LEN..f.len() - ha_proto::frame::TAG_LEN];
                body.chunks(RECORD_LEN)
                    .any(|r| r[0] == OP_ADD || r[0] == OP_DEL)
            })
            .cloned()
            .collect()
    }

    #[test]
    fn a_lost_frame_is_retransmitted_until_acknowledged() {
        let t0 = Instant::now();
        let mut a = FlowTable::new(&block("SN-A"), 10);
        let mut b = FlowTable::new(&block("SN-B"), 20);
        // The two ends have met (hellos exchanged), so no bulk resend interferes.
        for d in a.poll_transmit(t0) {
            b.on_datagram(&d, t0);
        }
        for d in b.poll_transmit(t0) {
            a.on_datagram(&d, t0);
        }
        for i in 0..300u16 {
            a.check(
                &pkt("10.1.0.1", 1000 + i, "10.2.0.1", 80, tcp_flags::SYN),
                Side::Inside,
                true,
                t0,
            );
        }
        let sent = changes(&a.poll_transmit(t0));
        assert_eq!(sent.len(), 3);
        // The second frame is lost.
        for (i, f) in sent.iter().enumerate() {
            if i != 1 {
                b.on_datagram(f, t0);
            }
        }
        assert_eq!(b.len(), 300 - RECORDS_PER_FRAME);
        for d in b.poll_transmit(t0) {
            a.on_datagram(&d, t0);
        }
        // Only the lost frame is sent again.
        let again = changes(&a.poll_transmit(t0 + RETRANSMIT_AFTER));
        assert!(
            again.len() == 1 && again[0] == sent[1],
            "only the lost frame again"
        );
        assert_eq!(a.stats().retransmitted, 1);
        for d in &again {
            b.on_datagram(d, t0);
        }
        assert_eq!(b.len(), 300);
        // Its acknowledgement is lost too: the duplicate is acknowledged again, not applied.
        let _lost_ack = b.poll_transmit(t0);
        let again = changes(&a.poll_transmit(t0 + RETRANSMIT_AFTER * 2));
        assert_eq!(again.len(), 1);
        b.on_datagram(&again[0], t0);
        for d in b.poll_transmit(t0) {
            a.on_datagram(&d, t0);
        }
        assert!(changes(&a.poll_transmit(t0 + RETRANSMIT_AFTER * 3)).is_empty());
        assert_eq!(b.stats().synced_in, 300);
    }

    #[test]
    fn an_unreachable_peer_costs_bounded_sends_then_the_refresh_repairs() {
        let t0 = Instant::now();
        let mut a = FlowTable::new(&block("SN-A"), 10);
        a.set_role(true, t0);
        a.check(
            &pkt("10.1.0.1", 1, "10.2.0.1", 80, tcp_flags::SYN),
            Side::Inside,
            true,
            t0,
        );
        let mut sends = changes(&a.poll_transmit(t0)).len();
        for i in 1..40u32 {
            sends += changes(&a.poll_transmit(t0 + RETRANSMIT_AFTER * i)).len();
        }
        // The first poll also sent the refresh of the (one-flow) table.
        assert!(sends <= 2 * MAX_SENDS as usize, "{sends}");
        assert!(a.stats().given_up >= 1);
        let mut c = FlowTable::new(&block("SN-C"), 30);
        for d in a.poll_transmit(t0 + REFRESH_PERIOD) {
            c.on_datagram(&d, t0);
        }
        assert_eq!(c.len(), 1, "the refresh carries it");
    }

    #[test]
    fn takeover_is_constant_time_and_restarts_idle_clocks() {
        let t0 = Instant::now();
        let mut a = FlowTable::new(&block("SN-A"), 10);
        let mut b = FlowTable::new(&block("SN-B"), 20);
        let udp = PacketInfo {
            proto: 17,
            ..pkt("10.1.0.1", 5, "10.2.0.1", 53, 0)
        };
        a.check(&udp, Side::Inside, true, t0);
        for d in a.poll_transmit(t0) {
            b.on_datagram(&d, t0);
        }
        assert_eq!(b.len(), 1);
        // B takes over just before the flow would idle out: the takeover restarts its clock.
        let takeover = t0 + OTHER_IDLE - Duration::from_secs(1);
        b.set_role(true, takeover);
        b.expire(t0 + OTHER_IDLE + Duration::from_secs(1));
        assert_eq!(b.len(), 1);
        b.expire(takeover + OTHER_IDLE + Duration::from_secs(1));
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn no_lost_update_under_20_percent_loss_both_ways() {
        let t0 = Instant::now();
        let mut a = FlowTable::new(&block("SN-A"), 10);
        let mut b = FlowTable::new(&block("SN-B"), 20);
        // Deterministic loss: a linear congruential generator, 1 datagram in 5 dropped.
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut lose = move || {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (x >> 33) % 5 == 0
        };
        let mut added = 0u16;
        for round in 0..400u32 {
            let now = t0 + Duration::from_millis(10) * round;
            // 25 new connections per round for the first 200 rounds: 5000 in all.
            if round < 200 {
                for _ in 0..25 {
                    a.check(
                        &pkt("10.1.0.1", added, "10.2.0.1", 443, tcp_flags::SYN),
                        Side::Inside,
                        true,
                        now,
                    );
                    added += 1;
                }
            }
            for d in a.poll_transmit(now) {
                if !lose() {
                    b.on_datagram(&d, now);
                }
            }
            for d in b.poll_transmit(now) {
                if !lose() {
                    a.on_datagram(&d, now);
                }
            }
        }
        assert_eq!(a.len(), 5000);
        assert_eq!(b.len(), 5000, "{:?}", a.stats());
        assert!(a.stats().retransmitted > 0);
        assert_eq!(a.stats().given_up, 0, "{:?}", a.stats());
    }
}
