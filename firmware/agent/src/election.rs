//! The ranking rule of the election (SPEC B2–B4), as pure functions.
//!
//! Members are compared on their **merit**, in this order:
//! 1. forcing: forced active > not forced > forced passive;
//! 2. quality factor, higher wins;
//! 3. priority ("active if equal"), higher wins.
//!
//! Between members of equal merit the running active stays (the agent applies this rule: a
//! passive takes over from a running active only if its merit is strictly higher). When no
//! member of the best merit is active, or two actives collide, the **spread tie-break**
//! decides: in domain `d` of an `n`-member cluster, the member at position `i` of the member
//! list has key `(i + n - d mod n) mod n`, lowest wins. Domain 0 prefers member 0, domain 1
//! member 1, and so on, which spreads the actives of domains over members (SPEC A3).

use core::cmp::Ordering;

use ha_proto::msg::Forced;

/// What the election knows about one candidate in one domain.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// Position in the configured member list.
    pub index: u8,
    /// Forcing in effect.
    pub forced: Forced,
    /// Quality factor.
    pub quality: u8,
    /// Priority in this domain.
    pub priority: u8,
}

/// The comparable merit of a candidate: (forcing rank, quality, priority).
pub fn merit(c: &Candidate) -> (u8, u8, u8) {
    let f = match c.forced {
        Forced::Active => 2,
        Forced::None => 1,
        Forced::Passive => 0,
    };
    (f, c.quality, c.priority)
}

/// An order on merit. The agent uses [`compare_merit`]; the simulator's mutation test swaps
/// in a deliberately wrong copy to prove that its invariants catch a broken election.
pub type MeritOrder = fn(&Candidate, &Candidate) -> Ordering;

/// The merit order: forcing, then quality, then priority.
pub fn compare_merit(a: &Candidate, b: &Candidate) -> Ordering {
    merit(a).cmp(&merit(b))
}

/// Spread tie-break key of a member position in a domain; lower wins.
pub fn spread_key(index: u8, members: u8, domain: u8) -> u8 {
    let n = members.max(1) as u16;
    ((index as u16 + n - (domain as u16 % n)) % n) as u8
}

/// True when `a` ranks above `b` in `domain`: higher merit, or equal merit and a lower
/// spread key. A strict total order over distinct member positions.
pub fn outranks(a: &Candidate, b: &Candidate, members: u8, domain: u8) -> bool {
    outranks_by(compare_merit, a, b, members, domain)
}

/// [`outranks`] under another merit order.
pub fn outranks_by(
    order: MeritOrder,
    a: &Candidate,
    b: &Candidate,
    members: u8,
    domain: u8,
) -> bool {
    match order(a, b) {
        Ordering::Greater => true,
        Ordering::Less => false,
        Ordering::Equal => {
            spread_key(a.index, members, domain) < spread_key(b.index, members, domain)
        }
    }
}

/// The best of `candidates` in `domain` under [`outranks`]; `None` if empty.
pub fn best(candidates: &[Candidate], members: u8, domain: u8) -> Option<Candidate> {
    let mut it = candidates.iter();
    let mut top = *it.next()?;
    for c in it {
        if outranks(c, &top, members, domain) {
            top = *c;
        }
    }
    Some(top)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(index: u8, forced: Forced, quality: u8, priority: u8) -> Candidate {
        Candidate {
            index,
            forced,
            quality,
            priority,
        }
    }

    #[test]
    fn quality_then_priority_then_spread() {
        let a = c(0, Forced::None, 90, 50);
        let b = c(1, Forced::None, 100, 0);
        assert!(outranks(&b, &a, 2, 0));
        // Equal quality: the "active if equal" member wins.
        let a = c(0, Forced::None, 100, 0);
        let b = c(1, Forced::None, 100, 50);
        assert!(outranks(&b, &a, 2, 0));
        assert!(!outranks(&a, &b, 2, 0));
        // Equal everything: the spread key decides, differently per domain.
        let a = c(0, Forced::None, 100, 0);
        let b = c(1, Forced::None, 100, 0);
        assert!(outranks(&a, &b, 2, 0));
        assert!(outranks(&b, &a, 2, 1));
    }

    #[test]
    fn forcing_beats_quality() {
        let a = c(0, Forced::Active, 10, 0);
        let b = c(1, Forced::None, 100, 50);
        assert!(outranks(&a, &b, 2, 0));
        let p = c(0, Forced::Passive, 100, 50);
        let q = c(1, Forced::None, 0, 0);
        assert!(outranks(&q, &p, 2, 0));
    }

    #[test]
    fn spread_puts_domains_on_different_members() {
        let cands: [Candidate; 3] = [0, 1, 2].map(|i| c(i, Forced::None, 100, 0));
        let winners: [u8; 3] = [0, 1, 2].map(|d| best(&cands, 3, d).unwrap().index);
        assert_eq!(winners, [0, 1, 2]);
        assert_eq!(best(&cands, 3, 3).unwrap().index, 0);
        assert_eq!(best(&[], 3, 0), None);
    }

    #[test]
    fn outranks_is_a_strict_order() {
        let all: [Candidate; 6] = [
            c(0, Forced::None, 100, 0),
            c(1, Forced::None, 100, 0),
            c(2, Forced::Active, 0, 0),
            c(3, Forced::Passive, 100, 50),
            c(4, Forced::None, 100, 50),
            c(5, Forced::None, 99, 50),
        ];
        for d in 0..4 {
            for a in &all {
                assert!(!outranks(a, a, 6, d));
                for b in &all {
                    if a.index != b.index {
                        assert!(outranks(a, b, 6, d) ^ outranks(b, a, 6, d));
                    }
                }
            }
        }
    }
}
