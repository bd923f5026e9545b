//! The stateful filter decision: a packet of a known connection passes (and moves its state
//! machine), a new connection is admitted by the policy (or a helper expectation), anything
//! else is dropped. Only the active member forwards.

use std::net::IpAddr;

use crate::tables::ItemKey;
use crate::tables::{
    conn_flags, proto, ConnEntry, ConnKey, ConnState, ExpectKey, Millis, SctpState, Tables,
    TcpState, LOCAL_GEN,
};

/// The fields of a parsed packet the filter needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    /// Domain the connection belongs to (virtual system / routing domain): the same for
    /// both directions of a connection, part of the key.
    pub zone: u16,
    /// Interface group the packet arrived on (policy rules match on it).
    pub ingress: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// Source port (TCP/UDP/SCTP), ICMP echo identifier, else 0.
    pub sport: u16,
    /// Destination port (TCP/UDP/SCTP), else 0 (ICMP: the identifier again).
    pub dport: u16,
    /// TCP flags byte; SCTP: type of the first chunk; ICMP: the type; else 0.
    pub flags: u8,
    /// IP total length.
    pub len: u32,
    /// Addressed to or sent by the appliance itself.
    pub local: bool,
}

/// TCP flag bits of [`Packet::flags`].
pub mod tcp {
    /// FIN.
    pub const FIN: u8 = 0x01;
    /// SYN.
    pub const SYN: u8 = 0x02;
    /// RST.
    pub const RST: u8 = 0x04;
    /// ACK.
    pub const ACK: u8 = 0x10;
}

/// SCTP chunk types of [`Packet::flags`].
pub mod sctp {
    /// INIT.
    pub const INIT: u8 = 1;
    /// INIT ACK.
    pub const INIT_ACK: u8 = 2;
    /// ABORT.
    pub const ABORT: u8 = 6;
    /// SHUTDOWN.
    pub const SHUTDOWN: u8 = 7;
    /// COOKIE ECHO.
    pub const COOKIE_ECHO: u8 = 10;
    /// COOKIE ACK.
    pub const COOKIE_ACK: u8 = 11;
    /// SHUTDOWN COMPLETE.
    pub const SHUTDOWN_COMPLETE: u8 = 14;
}

/// What a rule does with a new connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Admit it.
    Allow,
    /// Drop it.
    Deny,
}

/// A policy rule for new connections; `None` fields match anything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// Id (recorded in the connection).
    pub id: u32,
    /// Ingress interface group.
    pub ingress: Option<u16>,
    /// IP protocol.
    pub proto: Option<u8>,
    /// Destination network (address, prefix length).
    pub dst: Option<(IpAddr, u8)>,
    /// Destination port range.
    pub dport: Option<(u16, u16)>,
    /// Action.
    pub action: Action,
    /// Connections it admits are not synchronized.
    pub no_sync: bool,
    /// Connections it admits are terminated by a local proxy (never synchronized).
    pub proxied: bool,
}

impl Rule {
    /// A rule that matches everything.
    pub fn any(id: u32, action: Action) -> Self {
        Self {
            id,
            ingress: None,
            proto: None,
            dst: None,
            dport: None,
            action,
            no_sync: false,
            proxied: false,
        }
    }

    fn matches(&self, p: &Packet) -> bool {
        self.ingress.is_none_or(|z| z == p.ingress)
            && self.proto.is_none_or(|x| x == p.proto)
            && self
                .dport
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&p.dport))
            && self.dst.is_none_or(|(net, len)| in_prefix(p.dst, net, len))
    }
}

fn in_prefix(a: IpAddr, net: IpAddr, len: u8) -> bool {
    match (a, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let len = u32::from(len.min(32));
            let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let len = u32::from(len.min(128));
            let mask = if len == 0 {
                0
            } else {
                u128::MAX << (128 - len)
            };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// The policy for new connections: first matching rule wins, else `default`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Policy {
    /// Rules in order.
    pub rules: Vec<Rule>,
    /// Action when no rule matches.
    pub default: Action,
}

impl Policy {
    /// Admits every new connection (rule id 0).
    pub fn allow_all() -> Self {
        Self {
            rules: Vec::new(),
            default: Action::Allow,
        }
    }

    fn decide(&self, p: &Packet) -> Option<&Rule> {
        self.rules.iter().find(|r| r.matches(p))
    }
}

/// Why a packet was dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// This member is not active.
    NotActive,
    /// A new connection the policy (or the caller) does not allow.
    Policy,
    /// A TCP packet of no known connection that is not a connection-opening SYN.
    NotSyn,
}

/// The filter's decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Part of a known connection.
    Pass,
    /// A new connection, admitted by rule `rule`.
    New {
        /// The rule.
        rule: u32,
    },
    /// A new connection a helper expected (FTP data, SIP media).
    Related,
    /// Dropped.
    Drop(DropReason),
}

impl Verdict {
    /// Whether the packet is forwarded.
    pub fn forwards(self) -> bool {
        !matches!(self, Verdict::Drop(_))
    }
}

/// Decides on `p` and updates the tables. Returns the verdict and the items that changed in a
/// way the peer must learn (a new connection, a state change, a used expectation).
pub fn decide(
    t: &mut Tables,
    policy: &Policy,
    p: &Packet,
    active: bool,
    allow_new: bool,
    now: Millis,
    changed: &mut Vec<ItemKey>,
) -> Verdict {
    if !active {
        return Verdict::Drop(DropReason::NotActive);
    }
    let (key, src_is_a) = ConnKey::of(p.zone, p.proto, p.src, p.sport, p.dst, p.dport);
    let live = t
        .conn_peek(&key)
        .map(|e| t.is_live(e.gen) && !t.conn_expired(e, now));
    if live == Some(true) {
        if let Some(e) = t.conn_mut(&key) {
            let dir = usize::from(src_is_a != (e.flags & conn_flags::ORIG_IS_A != 0));
            e.packets[dir] = e.packets[dir].wrapping_add(1);
            e.bytes[dir] = e.bytes[dir].wrapping_add(u64::from(p.len));
            e.last_seen = now;
            e.gen = LOCAL_GEN;
            let before = e.state;
            step(e, dir, p.flags);
            if e.state != before {
                changed.push(ItemKey::Conn(key));
            }
        }
        return Verdict::Pass;
    }
    // A new connection.
    if p.proto == proto::TCP && p.flags & (tcp::SYN | tcp::ACK | tcp::RST) != tcp::SYN {
        return Verdict::Drop(DropReason::NotSyn);
    }
    let exp_key = ExpectKey {
        zone: p.zone,
        proto: p.proto,
        src: p.src,
        dst: p.dst,
        dport: p.dport,
    };
    let expected = t
        .expects()
        .get(&exp_key)
        .is_some_and(|x| t.is_live(x.gen) && x.expires >= now);
    let (verdict, rule, extra) = if expected {
        t.remove_expect(&exp_key);
        changed.push(ItemKey::Expect(exp_key));
        (Verdict::Related, 0, conn_flags::RELATED)
    } else {
        if !allow_new {
            return Verdict::Drop(DropReason::Policy);
        }
        let (action, id, mut extra) = match policy.decide(p) {
            Some(r) => (
                r.action,
                r.id,
                if r.no_sync { conn_flags::NO_SYNC } else { 0 }
                    | if r.proxied { conn_flags::PROXIED } else { 0 },
            ),
            None => (policy.default, 0, 0),
        };
        if action == Action::Deny {
            return Verdict::Drop(DropReason::Policy);
        }
        if p.local {
            extra |= conn_flags::LOCAL;
        }
        (Verdict::New { rule: id }, id, extra)
    };
    let state = initial_state(p.proto);
    let mut e = ConnEntry::new(state, src_is_a, rule, extra, now);
    e.packets[0] = 1;
    e.bytes[0] = u64::from(p.len);
    let syncable = e.syncable();
    t.insert_conn(key, e);
    if syncable {
        changed.push(ItemKey::Conn(key));
    }
    verdict
}

fn initial_state(p: u8) -> ConnState {
    match p {
        proto::TCP => ConnState::Tcp(TcpState::SynSent),
        proto::UDP => ConnState::Udp { replied: false },
        proto::ICMP | proto::ICMPV6 => ConnState::Icmp,
        proto::GRE => ConnState::Gre,
        proto::ESP => ConnState::Esp,
        proto::SCTP => ConnState::Sctp(SctpState::CookieWait),
        _ => ConnState::Other,
    }
}

/// FIN seen from the originator / the responder (bits of [`ConnEntry::flags`]).
const FIN_ORIG: u8 = 0x20;
const FIN_REPLY: u8 = 0x40;

/// Moves a connection's state machine for a packet in direction `dir` (0 = from the
/// originator).
fn step(e: &mut ConnEntry, dir: usize, flags: u8) {
    e.state = match e.state {
        ConnState::Tcp(s) => ConnState::Tcp(if flags & tcp::RST != 0 {
            TcpState::Close
        } else if flags & tcp::SYN != 0 && flags & tcp::ACK == 0 && dir == 0 {
            if matches!(s, TcpState::Close | TcpState::TimeWait) {
                e.flags &= !(FIN_ORIG | FIN_REPLY);
                TcpState::SynSent
            } else {
                s
            }
        } else if flags & tcp::FIN != 0 {
            e.flags |= if dir == 0 { FIN_ORIG } else { FIN_REPLY };
            if e.flags & (FIN_ORIG | FIN_REPLY) == FIN_ORIG | FIN_REPLY {
                TcpState::TimeWait
            } else {
                TcpState::FinWait
            }
        } else {
            match s {
                TcpState::SynSent
                    if dir == 1 && flags & (tcp::SYN | tcp::ACK) == tcp::SYN | tcp::ACK =>
                {
                    TcpState::SynRecv
                }
                TcpState::SynRecv if dir == 0 && flags & tcp::ACK != 0 => TcpState::Established,
                other => other,
            }
        }),
        ConnState::Udp { replied } => ConnState::Udp {
            replied: replied || dir == 1,
        },
        ConnState::Sctp(s) => ConnState::Sctp(match flags {
            sctp::ABORT | sctp::SHUTDOWN_COMPLETE => SctpState::Closed,
            sctp::SHUTDOWN => SctpState::ShutdownSent,
            sctp::COOKIE_ECHO => SctpState::CookieEchoed,
            sctp::COOKIE_ACK => SctpState::Established,
            sctp::INIT if s == SctpState::Closed => SctpState::CookieWait,
            _ => s,
        }),
        other => other,
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn pkt(src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16, flags: u8) -> Packet {
        Packet {
            zone: 0,
            ingress: 0,
            proto: proto::TCP,
            src: IpAddr::V4(Ipv4Addr::from(src)),
            dst: IpAddr::V4(Ipv4Addr::from(dst)),
            sport,
            dport,
            flags,
            len: 60,
            local: false,
        }
    }

    #[test]
    fn tcp_handshake_and_teardown() {
        let mut t = Tables::new();
        let pol = Policy::allow_all();
        let mut ch = Vec::new();
        let c = [10, 0, 0, 1];
        let s = [192, 0, 2, 1];
        let go = |t: &mut Tables, ch: &mut Vec<ItemKey>, p: Packet| {
            decide(t, &pol, &p, true, true, 1, ch)
        };
        assert_eq!(
            go(&mut t, &mut ch, pkt(c, 1000, s, 80, tcp::ACK)),
            Verdict::Drop(DropReason::NotSyn)
        );
        assert_eq!(
            go(&mut t, &mut ch, pkt(c, 1000, s, 80, tcp::SYN)),
            Verdict::New { rule: 0 }
        );
        assert_eq!(
            go(&mut t, &mut ch, pkt(s, 80, c, 1000, tcp::SYN | tcp::ACK)),
            Verdict::Pass
        );
        assert_eq!(
            go(&mut t, &mut ch, pkt(c, 1000, s, 80, tcp::ACK)),
            Verdict::Pass
        );
        let (k, _) = ConnKey::of(
            0,
            proto::TCP,
            IpAddr::V4(c.into()),
            1000,
            IpAddr::V4(s.into()),
            80,
        );
        assert_eq!(
            t.conn_peek(&k).map(|e| e.state),
            Some(ConnState::Tcp(TcpState::Established))
        );
        go(&mut t, &mut ch, pkt(c, 1000, s, 80, tcp::FIN | tcp::ACK));
        assert_eq!(
            t.conn_peek(&k).map(|e| e.state),
            Some(ConnState::Tcp(TcpState::FinWait))
        );
        go(&mut t, &mut ch, pkt(s, 80, c, 1000, tcp::FIN | tcp::ACK));
        assert_eq!(
            t.conn_peek(&k).map(|e| e.state),
            Some(ConnState::Tcp(TcpState::TimeWait))
        );
        // create + 4 state changes
        assert_eq!(ch.len(), 5);
        assert_eq!(t.conn_peek(&k).map(|e| e.packets), Some([3, 2]));
    }

    #[test]
    fn passive_drops_and_policy_denies() {
        let mut t = Tables::new();
        let mut pol = Policy::allow_all();
        let mut r = Rule::any(7, Action::Deny);
        r.dport = Some((22, 22));
        pol.rules.push(r);
        let mut ch = Vec::new();
        let p = pkt([10, 0, 0, 1], 1000, [192, 0, 2, 1], 80, tcp::SYN);
        assert_eq!(
            decide(&mut t, &pol, &p, false, true, 0, &mut ch),
            Verdict::Drop(DropReason::NotActive)
        );
        assert_eq!(
            decide(&mut t, &pol, &p, true, false, 0, &mut ch),
            Verdict::Drop(DropReason::Policy)
        );
        let p22 = pkt([10, 0, 0, 1], 1000, [192, 0, 2, 1], 22, tcp::SYN);
        assert_eq!(
            decide(&mut t, &pol, &p22, true, true, 0, &mut ch),
            Verdict::Drop(DropReason::Policy)
        );
        assert!(ch.is_empty());
    }

    #[test]
    fn no_sync_local_and_proxied_are_not_reported() {
        let mut t = Tables::new();
        let mut pol = Policy::allow_all();
        let mut r = Rule::any(3, Action::Allow);
        r.dport = Some((25, 25));
        r.no_sync = true;
        pol.rules.push(r);
        let mut r = Rule::any(4, Action::Allow);
        r.dport = Some((8080, 8080));
        r.proxied = true;
        pol.rules.push(r);
        let mut ch = Vec::new();
        for port in [25, 8080] {
            let p = pkt([10, 0, 0, 1], 1000, [192, 0, 2, 1], port, tcp::SYN);
            assert!(decide(&mut t, &pol, &p, true, true, 0, &mut ch).forwards());
        }
        let mut p = pkt([10, 0, 0, 1], 1000, [192, 0, 2, 1], 443, tcp::SYN);
        p.local = true;
        assert!(decide(&mut t, &pol, &p, true, true, 0, &mut ch).forwards());
        assert!(ch.is_empty(), "{ch:?}");
        assert_eq!(t.conn_count(), 3);
    }

    #[test]
    fn expectation_admits_related_connection() {
        let mut t = Tables::new();
        let pol = Policy {
            rules: Vec::new(),
            default: Action::Deny,
        };
        let c = [10, 0, 0, 1];
        let s = [192, 0, 2, 1];
        let (master, _) = ConnKey::of(
            0,
            proto::TCP,
            IpAddr::V4(c.into()),
            1000,
            IpAddr::V4(s.into()),
            21,
        );
        let ek = ExpectKey {
            zone: 0,
            proto: proto::TCP,
            src: IpAddr::V4(s.into()),
            dst: IpAddr::V4(c.into()),
            dport: 5001,
        };
        t.insert_expect(
            ek,
            crate::tables::Expectation {
                helper: crate::tables::Helper::Ftp,
                master,
                expires: 100,
                gen: LOCAL_GEN,
            },
        );
        let mut ch = Vec::new();
        let p = pkt(s, 20, c, 5001, tcp::SYN);
        assert_eq!(
            decide(&mut t, &pol, &p, true, true, 5, &mut ch),
            Verdict::Related
        );
        assert!(t.expects().is_empty(), "expectation used once");
        assert_eq!(ch.len(), 2);
        let p = pkt(s, 20, c, 5002, tcp::SYN);
        assert_eq!(
            decide(&mut t, &pol, &p, true, true, 5, &mut ch),
            Verdict::Drop(DropReason::Policy)
        );
    }
}
