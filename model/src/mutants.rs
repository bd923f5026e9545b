//! Deliberately wrong merit orders, planted with `Agent::set_merit_order` to show that the
//! checker notices a broken election.

use std::cmp::Ordering;

use ha_agent::election::{merit, Candidate, MeritOrder};

/// The lower priority wins: a consistent but wrong order (every member agrees on it, so
/// there is still one active, just the wrong one).
pub fn priority_reversed(a: &Candidate, b: &Candidate) -> Ordering {
    let ((fa, qa, pa), (fb, qb, pb)) = (merit(a), merit(b));
    (fa, qa, pb).cmp(&(fb, qb, pa))
}

/// Every candidate ranks above every other: an inconsistent order (not antisymmetric).
pub fn everyone_better(_: &Candidate, _: &Candidate) -> Ordering {
    Ordering::Greater
}

/// The mutants by name, for the command line.
pub const ALL: &[(&str, MeritOrder)] = &[
    ("priority-reversed", priority_reversed),
    ("everyone-better", everyone_better),
];

/// A mutant by name.
pub fn by_name(name: &str) -> Option<MeritOrder> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, o)| *o)
}
