//! The userspace fast path: an IPv4 router between two interfaces ("inside" and "outside")
//! with stateful filtering, owned by the active member.
//!
//! [`FastPath`] is sans-IO: the shell ([`crate::packetio`]) hands it each received Ethernet
//! frame with the side it came from and sends the frames it returns. It
//! - answers ARP for the cluster address of each side, only while active, and for this
//!   member's own address of each side always (probes reach the passive too);
//! - answers ICMP echo to those addresses (the cluster address only while active);
//! - forwards IPv4 between the two sides' subnets while active: TTL decremented, Ethernet
//!   addresses rewritten, the next hop resolved by ARP (frames wait in a bounded queue
//!   meanwhile); every forwarded packet first passes the [`Filter`] (the connection table);
//! - sends gratuitous ARP for the cluster addresses on takeover ([`FastPath::set_active`])
//!   and whenever the shell asks ([`FastPath::garp`]);
//! - probes a peer member with ICMP echo on the data interfaces ([`FastPath::probe`]).
//!
//! Parsing and building use `smoltcp::wire`; a malformed frame is counted and dropped.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ha_kernel::address::arp_frame;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv4Packet, Icmpv4Repr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpPacket,
    UdpPacket,
};

/// An Ethernet address.
pub type Mac = [u8; 6];

/// Frames waiting for ARP resolution of their next hop. A burst of new connections to one
/// unresolved host is at most a few hundred SYNs; beyond this the oldest are dropped (TCP
/// retransmits them).
pub const PENDING_MAX: usize = 4096;
/// How long a frame waits for its next hop's ARP reply before being dropped.
pub const PENDING_TTL: Duration = Duration::from_secs(1);
/// Minimum time between two ARP requests for the same address.
pub const ARP_RETRY: Duration = Duration::from_millis(200);
/// ICMP identifier of this daemon's probes.
pub const PROBE_IDENT: u16 = 0x4841; // "HA"
/// Answered probes remembered until taken; a probe is a few packets per takeover.
pub const PROBE_ANSWERS_MAX: usize = 1024;

/// One of the two forwarding sides.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Side {
    /// The protected side (clients).
    Inside,
    /// The other side (servers, uplink).
    Outside,
}

impl Side {
    /// The opposite side.
    pub fn other(self) -> Side {
        match self {
            Side::Inside => Side::Outside,
            Side::Outside => Side::Inside,
        }
    }

    fn idx(self) -> usize {
        match self {
            Side::Inside => 0,
            Side::Outside => 1,
        }
    }
}

/// Addresses of one side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideConfig {
    /// This member's interface address on the side.
    pub mac: Mac,
    /// The cluster's address on the side (the hosts' gateway), owned by the active member.
    pub cluster_ip: Ipv4Addr,
    /// Prefix length of the side's subnet.
    pub prefix_len: u8,
    /// This member's own address on the side (answered in every role; used for probes).
    pub member_ip: Ipv4Addr,
    /// New connections may be opened from this side.
    pub allow_new: bool,
}

impl SideConfig {
    fn contains(&self, ip: Ipv4Addr) -> bool {
        let bits = u32::from(self.prefix_len.min(32));
        let mask = if bits == 0 {
            0
        } else {
            u32::MAX << (32 - bits)
        };
        (u32::from(ip) & mask) == (u32::from(self.cluster_ip) & mask)
    }
}

/// What the filter sees of a packet to forward: the dataplane's [`Packet`] (one definition
/// of a packet's 5-tuple and flags), its TCP flag bits in [`tcp_flags`].
pub use ha_dataplane::filter::{tcp as tcp_flags, Packet};

/// The stateful filter consulted for every packet to forward.
pub trait Filter {
    /// True to forward. `allow_new` says whether a new connection may be opened from `from`.
    fn check(&mut self, pkt: &Packet, from: Side, allow_new: bool, now: Instant) -> bool;
}

/// A frame to send on a side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Out {
    /// Where.
    pub side: Side,
    /// The Ethernet frame.
    pub frame: Vec<u8>,
}

/// Counters of the fast path.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Stats {
    /// Packets forwarded.
    pub forwarded: u64,
    /// Dropped by the filter (unknown connection, new connection not allowed).
    pub dropped_filter: u64,
    /// Addressed to the cluster while passive.
    pub dropped_passive: u64,
    /// Destination in neither side's subnet.
    pub dropped_no_route: u64,
    /// TTL expired.
    pub dropped_ttl: u64,
    /// Next hop not resolved in time, or the wait queue was full.
    pub dropped_unresolved: u64,
    /// Frames that did not parse.
    pub malformed: u64,
    /// ARP replies sent.
    pub arp_replies: u64,
    /// ARP requests sent.
    pub arp_requests: u64,
    /// Gratuitous ARPs sent.
    pub garp_sent: u64,
    /// ICMP echo replies sent.
    pub echo_replies: u64,
}

/// The fast path's state.
#[derive(Debug)]
pub struct FastPath {
    sides: [SideConfig; 2],
    active: bool,
    /// This member's HA stack is up (its controller is heard): only then do its member
    /// addresses answer probes. A member whose controller died keeps its box (and this
    /// daemon) alive but cannot carry traffic; answering would tell the peer "alive, do not
    /// take over" and leave the cluster without an active member.
    ha_alive: bool,
    neigh: HashMap<Ipv4Addr, (Side, Mac)>,
    pending: VecDeque<(Side, Ipv4Addr, Vec<u8>, Instant)>,
    asked: HashMap<Ipv4Addr, Instant>,
    probe_seq: u16,
    answered: HashSet<(Ipv4Addr, u16)>,
    stats: Stats,
}

const BROADCAST: Mac = [0xff; 6];

/// True for an ICMP echo request (a probe or a ping).
fn is_echo_request(ip: &Ipv4Packet<&[u8]>) -> bool {
    ip.next_header() == IpProtocol::Icmp && ip.payload().first() == Some(&8)
}

impl FastPath {
    /// A passive fast path with these two sides.
    pub fn new(inside: SideConfig, outside: SideConfig) -> Self {
        Self {
            sides: [inside, outside],
            active: false,
            ha_alive: false,
            neigh: HashMap::new(),
            pending: VecDeque::new(),
            asked: HashMap::new(),
            probe_seq: 0,
            answered: HashSet::new(),
            stats: Stats::default(),
        }
    }

    /// The configuration of a side.
    pub fn side(&self, s: Side) -> &SideConfig {
        &self.sides[s.idx()]
    }

    /// True while this member forwards.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Known neighbours (address → side, MAC).
    pub fn neighbours(&self) -> &HashMap<Ipv4Addr, (Side, Mac)> {
        &self.neigh
    }

    /// Whether this member's controller is heard: only then do its member addresses answer
    /// a peer's liveness probe (see the field's documentation).
    pub fn set_ha_alive(&mut self, alive: bool) {
        self.ha_alive = alive;
    }

    /// True while probes of this member's addresses are answered.
    pub fn ha_alive(&self) -> bool {
        self.ha_alive
    }

    /// Takes or gives up the active role. Taking it returns the gratuitous ARPs to send.
    pub fn set_active(&mut self, active: bool) -> Vec<Out> {
        let was = self.active;
        self.active = active;
        if active && !was {
            self.garp()
        } else {
            if !active {
                self.pending.clear();
            }
            Vec::new()
        }
    }

    /// Gratuitous ARP requests (sender = target = cluster address) on both sides; empty
    /// while passive.
    pub fn garp(&mut self) -> Vec<Out> {
        if !self.active {
            return Vec::new();
        }
        let mut out = Vec::new();
        for s in [Side::Inside, Side::Outside] {
            let c = self.side(s).clone();
            out.push(Out {
                side: s,
                frame: arp_frame(
                    ArpOperation::Request,
                    c.mac,
                    BROADCAST,
                    c.cluster_ip,
                    [0; 6],
                    c.cluster_ip,
                ),
            });
            self.stats.garp_sent += 1;
        }
        out
    }

    /// Starts a probe of `peer` (a member address on one side's subnet): an ICMP echo
    /// request from this member's own address. Returns the frames to send and the probe's
    /// sequence number for [`probe_answered`](Self::probe_answered); `None` when the address
    /// is on neither side.
    pub fn probe(&mut self, peer: Ipv4Addr, now: Instant) -> Option<(Vec<Out>, u16)> {
        let side = self.side_of(peer)?;
        self.probe_seq = self.probe_seq.wrapping_add(1);
        let seq = self.probe_seq;
        let c = self.side(side).clone();
        let payload = *b"ha-probe";
        let icmp = Icmpv4Repr::EchoRequest {
            ident: PROBE_IDENT,
            seq_no: seq,
            data: &payload,
        };
        let ip = ip_packet(
            c.member_ip,
            peer,
            IpProtocol::Icmp,
            icmp.buffer_len(),
            |b| icmp.emit(&mut Icmpv4Packet::new_unchecked(b), &caps()),
        );
        let mut out = Vec::new();
        self.send_ip(side, peer, ip, now, &mut out);
        Some((out, seq))
    }

    /// True (once) when the echo reply of probe `seq` from `peer` arrived.
    pub fn probe_answered(&mut self, peer: Ipv4Addr, seq: u16) -> bool {
        self.answered.remove(&(peer, seq))
    }

    fn side_of(&self, ip: Ipv4Addr) -> Option<Side> {
        [Side::Inside, Side::Outside]
            .into_iter()
            .find(|s| self.side(*s).contains(ip))
    }

    /// Drops the waiting frames older than [`PENDING_TTL`]; call now and then.
    pub fn expire(&mut self, now: Instant) {
        while let Some((_, _, _, t)) = self.pending.front() {
            if now.duration_since(*t) < PENDING_TTL {
                break;
            }
            self.pending.pop_front();
            self.stats.dropped_unresolved += 1;
        }
        self.asked
            .retain(|_, t| now.duration_since(*t) < PENDING_TTL);
    }

    /// Handles one received frame; returns the frames to send.
    pub fn handle(
        &mut self,
        from: Side,
        frame: &[u8],
        now: Instant,
        filter: &mut impl Filter,
    ) -> Vec<Out> {
        let mut out = Vec::new();
        let Ok(eth) = EthernetFrame::new_checked(frame) else {
            self.stats.malformed += 1;
            return out;
        };
        let me = self.side(from).mac;
        let src: Mac = eth.src_addr().0;
        let dst: Mac = eth.dst_addr().0;
        if src == me {
            // Our own transmission, seen again by the packet socket.
            return out;
        }
        match eth.ethertype() {
            EthernetProtocol::Arp => self.on_arp(from, eth.payload(), now, &mut out),
            EthernetProtocol::Ipv4 if dst == me => {
                self.on_ipv4(from, src, eth.payload(), now, filter, &mut out)
            }
            _ => {}
        }
        out
    }

    fn on_arp(&mut self, from: Side, payload: &[u8], now: Instant, out: &mut Vec<Out>) {
        let Ok(repr) = ArpPacket::new_checked(payload).and_then(|p| ArpRepr::parse(&p)) else {
            self.stats.malformed += 1;
            return;
        };
        let ArpRepr::EthernetIpv4 {
            operation,
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = repr
        else {
            return;
        };
        let c = self.side(from).clone();
        let sha = source_hardware_addr.0;
        if !source_protocol_addr.is_unspecified()
            && c.contains(source_protocol_addr)
            && source_protocol_addr != c.cluster_ip
            && source_protocol_addr != c.member_ip
        {
            self.learn(from, source_protocol_addr, sha, now, out);
        }
        if operation == ArpOperation::Request {
            let ours = target_protocol_addr == c.member_ip
                || (self.active && target_protocol_addr == c.cluster_ip);
            if ours && source_protocol_addr != target_protocol_addr {
                out.push(Out {
                    side: from,
                    frame: arp_frame(
                        ArpOperation::Reply,
                        c.mac,
                        sha,
                        target_protocol_addr,
                        sha,
                        source_protocol_addr,
                    ),
                });
                self.stats.arp_replies += 1;
            }
        }
    }

    fn learn(&mut self, side: Side, ip: Ipv4Addr, mac: Mac, now: Instant, out: &mut Vec<Out>) {
        self.neigh.insert(ip, (side, mac));
        self.asked.remove(&ip);
        if self.pending.iter().any(|(_, a, _, _)| *a == ip) {
            let mut keep = VecDeque::with_capacity(self.pending.len());
            for (s, a, frame, t) in self.pending.drain(..) {
                if a == ip && now.duration_since(t) < PENDING_TTL {
                    out.push(Out {
                        side: s,
                        frame: eth_frame(self.sides[s.idx()].mac, mac, &frame),
                    });
                } else {
                    keep.push_back((s, a, frame, t));
                }
            }
            self.pending = keep;
        }
    }

    fn on_ipv4(
        &mut self,
        from: Side,
        src_mac: Mac,
        payload: &[u8],
        now: Instant,
        filter: &mut impl Filter,
        out: &mut Vec<Out>,
    ) {
        let Ok(ip) = Ipv4Packet::new_checked(payload) else {
            self.stats.malformed += 1;
            return;
        };
        if !ip.verify_checksum() {
            self.stats.malformed += 1;
            return;
        }
        let c = self.side(from).clone();
        let (src, dst) = (ip.src_addr(), ip.dst_addr());
        if c.contains(src) && src != c.cluster_ip && src != c.member_ip {
            self.neigh.insert(src, (from, src_mac));
        }
        if dst == c.member_ip || dst == c.cluster_ip {
            if dst == c.cluster_ip && !self.active {
                self.stats.dropped_passive += 1;
                return;
            }
            if dst == c.member_ip && !self.ha_alive && is_echo_request(&ip) {
                // Without a controller this member cannot take the active role: a probe
                // must not find it "alive".
                self.stats.dropped_passive += 1;
                return;
            }
            self.local_icmp(from, &ip, now, out);
            return;
        }
        if !self.active {
            self.stats.dropped_passive += 1;
            return;
        }
        let Some(to) = self.side_of(dst).filter(|s| *s != from) else {
            self.stats.dropped_no_route += 1;
            return;
        };
        if ip.hop_limit() <= 1 {
            self.stats.dropped_ttl += 1;
            return;
        }
        let Some(info) = packet_info(&ip) else {
            self.stats.malformed += 1;
            return;
        };
        if !filter.check(&info, from, c.allow_new, now) {
            self.stats.dropped_filter += 1;
            return;
        }
        let total = usize::from(ip.total_len()).min(payload.len());
        let mut fwd = payload[..total].to_vec();
        let mut p = Ipv4Packet::new_unchecked(&mut fwd[..]);
        p.set_hop_limit(p.hop_limit() - 1);
        p.fill_checksum();
        fill_l4_checksum(&mut p);
        self.stats.forwarded += 1;
        self.send_ip(to, dst, fwd, now, out);
    }

    fn local_icmp(&mut self, from: Side, ip: &Ipv4Packet<&[u8]>, now: Instant, out: &mut Vec<Out>) {
        if ip.next_header() != IpProtocol::Icmp {
            return;
        }
        let Ok(icmp) = Icmpv4Packet::new_checked(ip.payload()) else {
            self.stats.malformed += 1;
            return;
        };
        let Ok(repr) = Icmpv4Repr::parse(&icmp, &caps()) else {
            self.stats.malformed += 1;
            return;
        };
        match repr {
            Icmpv4Repr::EchoRequest {
                ident,
                seq_no,
                data,
            } => {
                let reply = Icmpv4Repr::EchoReply {
                    ident,
                    seq_no,
                    data,
                };
                let pkt = ip_packet(
                    ip.dst_addr(),
                    ip.src_addr(),
                    IpProtocol::Icmp,
                    reply.buffer_len(),
                    |b| reply.emit(&mut Icmpv4Packet::new_unchecked(b), &caps()),
                );
                self.stats.echo_replies += 1;
                self.send_ip(from, ip.src_addr(), pkt, now, out);
            }
            Icmpv4Repr::EchoReply { ident, seq_no, .. } if ident == PROBE_IDENT => {
                if self.answered.len() >= PROBE_ANSWERS_MAX {
                    self.answered.clear();
                }
                self.answered.insert((ip.src_addr(), seq_no));
            }
            _ => {}
        }
    }

    /// Sends an IP packet to `next_hop` on `side`, resolving its MAC first if needed.
    fn send_ip(
        &mut self,
        side: Side,
        next_hop: Ipv4Addr,
        ip: Vec<u8>,
        now: Instant,
        out: &mut Vec<Out>,
    ) {
        let c = self.side(side).clone();
        if let Some((s, mac)) = self.neigh.get(&next_hop) {
            if *s == side {
                out.push(Out {
                    side,
                    frame: eth_frame(c.mac, *mac, &ip),
                });
                return;
            }
        }
        if self.pending.len() >= PENDING_MAX {
            self.pending.pop_front();
            self.stats.dropped_unresolved += 1;
        }
        self.pending.push_back((side, next_hop, ip, now));
        let due = self
            .asked
            .get(&next_hop)
            .is_none_or(|t| now.duration_since(*t) >= ARP_RETRY);
        if due {
            self.asked.insert(next_hop, now);
            // Ask from the member's own address: valid in either role.
            out.push(Out {
                side,
                frame: arp_frame(
                    ArpOperation::Request,
                    c.mac,
                    BROADCAST,
                    c.member_ip,
                    [0; 6],
                    next_hop,
                ),
            });
            self.stats.arp_requests += 1;
        }
    }
}

/// Recomputes the TCP or UDP checksum of a whole (unfragmented) packet. Packets read from a
/// veth or a NIC with checksum offload carry a partial checksum that only the sending
/// kernel would have completed; forwarding them as they are would get them dropped.
fn fill_l4_checksum(p: &mut Ipv4Packet<&mut [u8]>) {
    if p.more_frags() || p.frag_offset() != 0 {
        return;
    }
    let (src, dst) = (IpAddress::Ipv4(p.src_addr()), IpAddress::Ipv4(p.dst_addr()));
    match p.next_header() {
        IpProtocol::Tcp => {
            if let Ok(mut t) = TcpPacket::new_checked(p.payload_mut()) {
                t.fill_checksum(&src, &dst);
            }
        }
        IpProtocol::Udp => {
            if let Ok(mut u) = UdpPacket::new_checked(p.payload_mut()) {
                u.fill_checksum(&src, &dst);
            }
        }
        _ => {}
    }
}

fn caps() -> ChecksumCapabilities {
    ChecksumCapabilities::default()
}

/// The 5-tuple and TCP flags of an IPv4 packet; `None` when the transport header is cut.
pub fn packet_info(ip: &Ipv4Packet<&[u8]>) -> Option<Packet> {
    let proto = ip.next_header();
    let mut info = Packet {
        zone: 0,
        // Set by the filter from the side the packet arrived on.
        ingress: 0,
        proto: u8::from(proto),
        src: ip.src_addr().into(),
        dst: ip.dst_addr().into(),
        sport: 0,
        dport: 0,
        flags: 0,
        len: u32::from(ip.total_len()),
        // The fast path only asks about packets it forwards between its two sides.
        local: false,
    };
    let payload = ip.payload();
    match proto {
        IpProtocol::Tcp => {
            let t = TcpPacket::new_checked(payload).ok()?;
            info.sport = t.src_port();
            info.dport = t.dst_port();
            let b = payload.get(13).copied()?;
            info.flags = b;
        }
        IpProtocol::Udp => {
            let u = UdpPacket::new_checked(payload).ok()?;
            info.sport = u.src_port();
            info.dport = u.dst_port();
        }
        // Echo identifier as both "ports", so that a ping and its replies are one flow; the
        // ICMP type in the flags byte.
        IpProtocol::Icmp if payload.len() >= 8 && (payload[0] == 8 || payload[0] == 0) => {
            info.sport = u16::from_be_bytes([payload[4], payload[5]]);
            info.dport = info.sport;
            info.flags = payload[0];
        }
        _ => {}
    }
    Some(info)
}

fn eth_frame(src: Mac, dst: Mac, ip: &[u8]) -> Vec<u8> {
    let repr = EthernetRepr {
        src_addr: EthernetAddress(src),
        dst_addr: EthernetAddress(dst),
        ethertype: EthernetProtocol::Ipv4,
    };
    let mut buf = vec![0u8; repr.buffer_len() + ip.len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    repr.emit(&mut f);
    f.payload_mut().copy_from_slice(ip);
    buf
}

fn ip_packet(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    payload_len: usize,
    fill: impl FnOnce(&mut [u8]),
) -> Vec<u8> {
    let repr = Ipv4Repr {
        src_addr: src,
        dst_addr: dst,
        next_header: proto,
        payload_len,
        hop_limit: 64,
    };
    let mut buf = vec![0u8; repr.buffer_len() + payload_len];
    let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
    repr.emit(&mut p, &caps());
    fill(p.payload_mut());
    buf
}

#[cfg(test)]
mod tests;
