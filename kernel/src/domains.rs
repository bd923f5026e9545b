//! Load sharing (SPEC A3) on the kernel path, without I/O: which HA domain a connection
//! belongs to, and sets of domains.
//!
//! A member forwards for the domains it is active for and is standby for the rest. A
//! connection belongs to the domain whose networks (its inside cluster address's prefix, as
//! the daemon's configuration gives them) hold the connection's original source or
//! destination (the reply direction when the original matches none: a DNAT'ed service); a
//! connection no domain's networks hold belongs to the member's main domain (the one
//! `[forward] domain` names). With a single domain every connection is the main domain's,
//! which is the plain active/standby pair.
//!
//! The active member of a domain syncs that domain's connections to the others and each
//! member installs the connections of the domains it is standby for: the sync runs both ways
//! at once, and a member never sends back what its peer sent it (the installed entries come
//! back to it as kernel events of a domain it is not active for).

use std::net::IpAddr;

use ipnet::IpNet;

use crate::conntrack::{CtEntry, CtExpect, CtTuple};

/// Domain numbers a [`DomainSet`] holds: 0 to 15 (the configuration block's range).
pub const MAX_DOMAIN: u8 = 15;

/// A set of HA domains (0..=[`MAX_DOMAIN`]).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DomainSet(u16);

impl DomainSet {
    /// No domain.
    pub const EMPTY: DomainSet = DomainSet(0);

    /// The set of domain `d` alone (empty when `d` is past [`MAX_DOMAIN`]).
    pub fn one(d: u8) -> DomainSet {
        DomainSet(1u16.checked_shl(u32::from(d)).unwrap_or(0))
    }

    /// Whether `d` is in the set.
    pub fn contains(self, d: u8) -> bool {
        !(self & DomainSet::one(d)).is_empty()
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The domains of this set that are not in `other`.
    pub fn minus(self, other: DomainSet) -> DomainSet {
        DomainSet(self.0 & !other.0)
    }

    /// The domains, lowest first.
    pub fn iter(self) -> impl Iterator<Item = u8> {
        (0..=MAX_DOMAIN).filter(move |d| self.contains(*d))
    }
}

impl std::ops::BitOr for DomainSet {
    type Output = DomainSet;
    fn bitor(self, o: DomainSet) -> DomainSet {
        DomainSet(self.0 | o.0)
    }
}

impl std::ops::BitAnd for DomainSet {
    type Output = DomainSet;
    fn bitand(self, o: DomainSet) -> DomainSet {
        DomainSet(self.0 & o.0)
    }
}

impl std::fmt::Debug for DomainSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl FromIterator<u8> for DomainSet {
    fn from_iter<I: IntoIterator<Item = u8>>(it: I) -> DomainSet {
        it.into_iter()
            .fold(DomainSet::EMPTY, |s, d| s | DomainSet::one(d))
    }
}

/// Which domain a connection belongs to (see the module documentation).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Domains {
    main: u8,
    nets: Vec<(u8, IpNet)>,
}

impl Domains {
    /// One domain: every connection is `main`'s.
    pub fn single(main: u8) -> Domains {
        Domains {
            main,
            nets: Vec::new(),
        }
    }

    /// The main domain `main` and the networks of the others (`(domain, network)`, several
    /// per domain allowed). A network of the main domain itself is ignored: what no other
    /// domain holds is the main domain's anyway.
    pub fn new(main: u8, nets: Vec<(u8, IpNet)>) -> Domains {
        let nets = nets.into_iter().filter(|(d, _)| *d != main).collect();
        Domains { main, nets }
    }

    /// The main domain.
    pub fn main(&self) -> u8 {
        self.main
    }

    /// Every domain this member knows: the main one and those with networks.
    pub fn all(&self) -> DomainSet {
        DomainSet::one(self.main) | self.nets.iter().map(|(d, _)| *d).collect()
    }

    /// The networks of the domains other than the main one, with their domain.
    pub fn nets(&self) -> &[(u8, IpNet)] {
        &self.nets
    }

    /// The domain whose networks hold `a`, if any.
    fn holding(&self, a: &IpAddr) -> Option<u8> {
        self.nets
            .iter()
            .find(|(_, n)| n.contains(a))
            .map(|(d, _)| *d)
    }

    /// The domain of a connection with original direction `orig` and reply `reply`.
    pub fn of_tuples(&self, orig: &CtTuple, reply: &CtTuple) -> u8 {
        if self.nets.is_empty() {
            return self.main;
        }
        [&orig.src, &orig.dst, &reply.src, &reply.dst]
            .into_iter()
            .find_map(|a| self.holding(a))
            .unwrap_or(self.main)
    }

    /// The domain of entry `e`.
    pub fn of_entry(&self, e: &CtEntry) -> u8 {
        self.of_tuples(&e.orig, &e.reply)
    }

    /// The domain of an expectation: its master's.
    pub fn of_expect(&self, x: &CtExpect) -> u8 {
        self.of_tuples(&x.master, &x.master.inverse())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tuple(src: &str, dst: &str) -> CtTuple {
        CtTuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            proto: 6,
            src_port: 40000,
            dst_port: 80,
        }
    }

    #[test]
    fn a_connection_belongs_to_the_domain_holding_its_addresses_else_to_the_main_one() {
        let d = Domains::new(
            0,
            vec![
                (1, "10.3.0.0/24".parse().unwrap()),
                (2, "10.4.0.0/24".parse().unwrap()),
                // The main domain's own network changes nothing.
                (0, "10.1.0.0/24".parse().unwrap()),
            ],
        );
        let t = tuple("10.3.0.1", "10.2.0.1");
        assert_eq!(d.of_tuples(&t, &t.inverse()), 1);
        let t = tuple("10.2.0.1", "10.4.0.9");
        assert_eq!(d.of_tuples(&t, &t.inverse()), 2);
        let t = tuple("10.1.0.1", "10.2.0.1");
        assert_eq!(d.of_tuples(&t, &t.inverse()), 0);
        // DNAT: the original is the public address, the reply comes from the inside host.
        let orig = tuple("192.0.2.7", "198.51.100.1");
        let reply = tuple("10.4.0.5", "192.0.2.7");
        assert_eq!(d.of_tuples(&orig, &reply), 2);
        assert_eq!(d.all(), [0, 1, 2].into_iter().collect());
        let single = Domains::single(3);
        assert_eq!(single.of_tuples(&t, &t.inverse()), 3);
        assert_eq!(single.all(), DomainSet::one(3));
    }

    #[test]
    fn a_domain_set_holds_domains_0_to_15_and_nothing_past_them() {
        let s: DomainSet = [0, 3, 15].into_iter().collect();
        assert!(s.contains(0) && s.contains(3) && s.contains(15) && !s.contains(1));
        assert_eq!(s.iter().collect::<Vec<_>>(), vec![0, 3, 15]);
        assert_eq!(
            s.minus(DomainSet::one(3)).iter().collect::<Vec<_>>(),
            [0, 15]
        );
        assert!(DomainSet::one(16).is_empty() && DomainSet::one(255).is_empty());
        assert!(!s.contains(200));
        assert_eq!(format!("{s:?}"), "{0, 3, 15}");
    }
}
