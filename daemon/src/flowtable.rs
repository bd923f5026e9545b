//! The daemon's own connection table and state sync, used while the dataplane crate's table
//! and engine are not available in this tree. Deliberately small: a flow per connection
//! (both directions), idle timeouts, and a sync of creations and deletions in sealed frames
//! (channel `StateSync`), with a full resend whenever the peer (re)starts and every
//! [`REFRESH_PERIOD`] from the active. A lost update is repaired by the next refresh, not
//! retransmitted; the dataplane crate's engine acknowledges and retransmits (see
//! `docs/daemon.md`).

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

const OP_HELLO: u8 = 0;
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
    /// Sync frames sent.
    pub sync_sent: u64,
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
        self.flows.retain(|k, f| {
            let idle = if k.proto == 6 && !f.closing {
                TCP_IDLE
            } else if k.proto == 6 {
                TCP_CLOSING
            } else {
                OTHER_IDLE
            };
            let keep = now.duration_since(f.last) < idle;
            if !keep {
                gone.push(*k);
            }
            keep
        });
        self.outq.extend(gone.into_iter().map(|k| (OP_DEL, k)));
    }

    fn frames(&mut self, records: &[(u8, FlowKey)]) -> Vec<Vec<u8>> {
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
                out.push(buf);
                self.stats.sync_sent += 1;
            }
        }
        out
    }
}

impl Filter for FlowTable {
    fn check(&mut self, p: &PacketInfo, _from: Side, allow_new: bool, now: Instant) -> bool {
        let key = FlowKey::of(p);
        if let Some(f) = self.flows.get_mut(&key) {
            f.last = now;
            if p.tcp_flags & (tcp_flags::FIN | tcp_flags::RST) != 0 {
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
            // Flows learnt from the peer start their idle clock at the takeover.
            for f in self.flows.values_mut() {
                f.last = f.last.max(now);
            }
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
            || self.replay.check_header(&h).is_err()
        {
            self.stats.sync_rejected += 1;
            return;
        }
        let body = opened.body.to_vec();
        if self.peer_epoch != Some(h.epoch) {
            // The peer (re)started: it gets the whole table.
            self.peer_epoch = Some(h.epoch);
            let all: Vec<_> = self.flows.keys().map(|k| (OP_ADD, *k)).collect();
            self.outq.extend(all);
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
                _ => self.stats.sync_rejected += 1,
            }
        }
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
        let mut records = std::mem::take(&mut self.outq);
        if self
            .last_hello
            .is_none_or(|t| now.duration_since(t) >= HELLO_PERIOD)
        {
            self.last_hello = Some(now);
            records.push((
                OP_HELLO,
                FlowKey {
                    proto: 0,
                    lo: (Ipv4Addr::UNSPECIFIED, 0),
                    hi: (Ipv4Addr::UNSPECIFIED, 0),
                },
            ));
        }
        if records.is_empty() {
            return Vec::new();
        }
        self.frames(&records)
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
        let frames = a.frames(&[(OP_ADD, FlowKey::of(&mid))]);
        b.on_datagram(&frames[0], now);
        b.on_datagram(&frames[0], now);
        let mut forger = FlowTable::new(&block("SN-A"), 10);
        forger.keyring = Keyring::new(KeySet::derive(&Psk([9; 32]), 0xC0FFEE, 1));
        let f = forger.frames(&[(OP_ADD, FlowKey::of(&mid))]);
        b.on_datagram(&f[0], now);
        assert_eq!(b.stats().sync_rejected, 2);

        // A lost update is repaired by the active's next refresh.
        let mut c = FlowTable::new(&block("SN-C"), 30);
        a.set_role(true, now);
        let first = a.poll_transmit(now + HELLO_PERIOD);
        assert!(first.len() >= 3, "refresh of 300 flows");
        for d in &first[1..] {
            c.on_datagram(d, now);
        }
        assert!(c.len() < 300, "the first frame was lost");
        for d in a.poll_transmit(now + HELLO_PERIOD + REFRESH_PERIOD) {
            c.on_datagram(&d, now);
        }
        assert_eq!(c.len(), 300);

        // B restarts (new epoch): its first hello makes A send the whole table.
        let mut b2 = FlowTable::new(&block("SN-B"), 21);
        for d in b2.poll_transmit(now) {
            a.on_datagram(&d, now);
        }
        for d in a.poll_transmit(now + HELLO_PERIOD) {
            b2.on_datagram(&d, now);
        }
        assert_eq!(b2.len(), 300);
    }
}
