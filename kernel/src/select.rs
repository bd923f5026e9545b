//! Which kernel connections the active syncs (SPEC C3), without I/O.
//!
//! - Connections to or from this member itself (its own addresses: member, cluster and HA
//!   addresses) are never synced: the state sync's own datagrams, probes, management
//!   sessions belong to this box, not to the traffic the cluster protects.
//! - Rules, first match wins, decide the rest: a rule matches on protocol, source and
//!   destination prefixes and a destination port range, and says sync or skip. A connection no
//!   rule matches is synced.
//! - A minimum age: a connection is synced only once it has existed that long (short-lived
//!   connections, most of a DNS server's, then cost the sync nothing). Its age counts from
//!   when this member first saw it.

use std::net::IpAddr;

pub use ipnet::IpNet;

use crate::conntrack::CtEntry;

/// What a rule does with the connections it matches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Sync them.
    Sync,
    /// Keep them out of the sync.
    Skip,
}

/// One rule; a field left `None` matches everything.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rule {
    /// What to do with a match.
    pub action: Action,
    /// IP protocol number.
    pub proto: Option<u8>,
    /// The originator's address.
    pub src: Option<IpNet>,
    /// The original destination.
    pub dst: Option<IpNet>,
    /// The original destination port, inclusive range.
    pub dst_port: Option<(u16, u16)>,
}

impl Rule {
    fn matches(&self, e: &CtEntry) -> bool {
        self.proto.is_none_or(|p| p == e.orig.proto)
            && self.src.is_none_or(|n| n.contains(&e.orig.src))
            && self.dst.is_none_or(|n| n.contains(&e.orig.dst))
            && self
                .dst_port
                .is_none_or(|(lo, hi)| (lo..=hi).contains(&e.orig.dst_port))
    }
}

/// What the active does with an entry now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Sync it.
    Sync,
    /// Never sync it (this member's own, or a rule says skip).
    Skip,
    /// Sync it once it is older (the minimum age).
    Young,
}

/// The selection: this member's own addresses, the rules, the minimum age.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selection {
    /// This member's own addresses.
    pub own: Vec<IpAddr>,
    /// The rules, first match wins.
    pub rules: Vec<Rule>,
    /// Minimum age of a synced connection, ms (0: at once).
    pub min_age_ms: u64,
}

impl Selection {
    /// What to do with `e`, first seen `age_ms` ago.
    pub fn verdict(&self, e: &CtEntry, age_ms: u64) -> Verdict {
        // From this member, or to it and answered by it (not translated on to another host:
        // a DNAT to an inside server through a cluster address is the cluster's traffic; so
        // is an SNAT to a cluster address, whose reply goes to it).
        let own = |a: &IpAddr| self.own.contains(a);
        if own(&e.orig.src) || (own(&e.orig.dst) && e.reply.src == e.orig.dst) {
            return Verdict::Skip;
        }
        if let Some(r) = self.rules.iter().find(|r| r.matches(e)) {
            if r.action == Action::Skip {
                return Verdict::Skip;
            }
        }
        if age_ms < self.min_age_ms {
            Verdict::Young
        } else {
            Verdict::Sync
        }
    }
}

/// Parses a port or an inclusive range: `53`, `1000-2000`.
pub fn parse_ports(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("{s:?}: a port (53) or a range (1000-2000) of 0-65535");
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (a.trim(), b.trim()),
        None => (s.trim(), s.trim()),
    };
    let lo: u16 = lo.parse().map_err(|_| bad())?;
    let hi: u16 = hi.parse().map_err(|_| bad())?;
    if lo > hi {
        return Err(format!("{s:?}: the range's start is above its end"));
    }
    Ok((lo, hi))
}

/// Parses a protocol by name (`tcp`, `udp`, `icmp`, `icmpv6`, `sctp`, `gre`, `esp`) or
/// number.
pub fn parse_proto(s: &str) -> Result<u8, String> {
    match s.trim().to_ascii_lowercase().as_str() {
        "tcp" => Ok(6),
        "udp" => Ok(17),
        "icmp" => Ok(1),
        "icmpv6" => Ok(58),
        "sctp" => Ok(132),
        "gre" => Ok(47),
        "esp" => Ok(50),
        n => n
            .parse()
            .map_err(|_| format!("{s:?}: tcp, udp, icmp, icmpv6, sctp, gre, esp or 0-255")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::tests::udp_entry;

    fn rule(action: Action) -> Rule {
        Rule {
            action,
            proto: None,
            src: None,
            dst: None,
            dst_port: None,
        }
    }

    #[test]
    fn own_addresses_rules_in_order_and_age_decide() {
        // udp 10.1.0.1:port -> 10.2.0.1:53
        let e = udp_entry(1000, 0);
        let mut s = Selection::default();
        assert_eq!(s.verdict(&e, 0), Verdict::Sync, "no rule: synced");
        s.own = vec!["10.2.0.1".parse().unwrap()];
        assert_eq!(s.verdict(&e, 0), Verdict::Skip, "to this member itself");
        let mut dnat = e;
        dnat.reply.src = "10.1.0.80".parse().unwrap();
        assert_eq!(
            s.verdict(&dnat, 0),
            Verdict::Sync,
            "through it to an inside host"
        );
        s.own = vec!["10.2.0.254".parse().unwrap()];
        let mut snat = e;
        snat.reply.dst = "10.2.0.254".parse().unwrap();
        assert_eq!(
            s.verdict(&snat, 0),
            Verdict::Sync,
            "translated to a cluster address"
        );
        s.own = vec!["10.1.0.1".parse().unwrap()];
        assert_eq!(s.verdict(&e, 0), Verdict::Skip, "from this member itself");
        s.own.clear();
        // First match wins: a sync rule for 10.1.0.0/24 before a skip of all DNS.
        s.rules = vec![
            Rule {
                src: Some("10.1.0.0/24".parse().unwrap()),
                dst_port: Some((80, 80)),
                ..rule(Action::Sync)
            },
            Rule {
                proto: Some(17),
                dst_port: Some((53, 53)),
                ..rule(Action::Skip)
            },
            rule(Action::Sync),
        ];
        assert_eq!(s.verdict(&e, 0), Verdict::Skip, "DNS skipped");
        let mut web = e;
        web.orig.dst_port = 80;
        assert_eq!(s.verdict(&web, 0), Verdict::Sync);
        let mut tcp_dns = e;
        tcp_dns.orig.proto = 6;
        assert_eq!(
            s.verdict(&tcp_dns, 0),
            Verdict::Sync,
            "the skip rule is UDP only"
        );
        s.min_age_ms = 5_000;
        assert_eq!(s.verdict(&web, 4_999), Verdict::Young);
        assert_eq!(s.verdict(&web, 5_000), Verdict::Sync);
        assert_eq!(
            s.verdict(&e, 10_000),
            Verdict::Skip,
            "age does not undo a skip"
        );
    }

    #[test]
    fn ports_and_protocols_parse_or_say_what_is_wrong() {
        assert_eq!(parse_ports("53"), Ok((53, 53)));
        assert_eq!(parse_ports("1000-2000"), Ok((1000, 2000)));
        assert!(parse_ports("2000-1000").unwrap_err().contains("above"));
        assert!(parse_ports("70000").is_err());
        assert!(parse_ports("http").is_err());
        assert_eq!(parse_proto("TCP"), Ok(6));
        assert_eq!(parse_proto("132"), Ok(132));
        assert!(parse_proto("tcpp").is_err());
    }
}
