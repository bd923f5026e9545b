//! The simulator catches a broken election, replays a seed exactly, and passes on the real one.

use std::cmp::Ordering;

use ha_agent::election::{merit, Candidate, MeritOrder};
use ha_sim::{run, Kind, Options};

/// Copies of the election's merit order, each with one comparison planted wrong.
mod mutants {
    use super::*;

    /// The lower quality wins.
    pub fn quality_reversed(a: &Candidate, b: &Candidate) -> Ordering {
        let ((fa, qa, pa), (fb, qb, pb)) = (merit(a), merit(b));
        (fa, qb, pa).cmp(&(fb, qa, pb))
    }

    /// The lower priority wins ties.
    pub fn priority_reversed(a: &Candidate, b: &Candidate) -> Ordering {
        let ((fa, qa, pa), (fb, qb, pb)) = (merit(a), merit(b));
        (fa, qa, pb).cmp(&(fb, qb, pa))
    }

    /// Forcing is ignored.
    pub fn forcing_ignored(a: &Candidate, b: &Candidate) -> Ordering {
        let ((_, qa, pa), (_, qb, pb)) = (merit(a), merit(b));
        (qa, pa).cmp(&(qb, pb))
    }
}

/// The first seed below `seeds` on which the simulator reports a violation.
fn first_failing(order: MeritOrder, seeds: u64) -> Option<u64> {
    let opts = Options {
        merit_order: Some(order),
        ..Options::default()
    };
    (0..seeds).find(|&s| run(s, &opts).violation.is_some())
}

#[test]
fn planted_wrong_comparison_is_reported() {
    for (name, order, seeds) in [
        (
            "quality reversed",
            mutants::quality_reversed as MeritOrder,
            60,
        ),
        ("priority reversed", mutants::priority_reversed, 60),
        ("forcing ignored", mutants::forcing_ignored, 200),
    ] {
        let Some(seed) = first_failing(order, seeds) else {
            panic!("{name}: {seeds} seeds with a broken election and no violation reported");
        };
        // The real rule passes that very seed.
        let ok = run(seed, &Options::default());
        assert_eq!(ok.violation, None, "seed {seed} fails with the real rule");
    }
}

#[test]
fn a_seed_replays_exactly() {
    for seed in [1u64, 7, 42] {
        let a = run(seed, &Options::default());
        let b = run(seed, &Options::default());
        assert_eq!(a.trace, b.trace);
        assert!(!a.trace.is_empty());
    }
}

#[test]
fn real_election_passes_seeds() {
    for seed in 0..16u64 {
        let o = run(seed, &Options::default());
        assert_eq!(o.violation, None, "seed {seed}: {:?}", o.trace.last());
    }
}

#[test]
fn fast_failover_takes_over_within_40_ms_median() {
    let opts = Options {
        members: Some(2),
        kind: Some(Kind::Failover),
        merit_order: None,
    };
    let mut t: Vec<u64> = (0..21u64)
        .filter_map(|s| run(s, &opts).failover_ms)
        .collect();
    assert_eq!(t.len(), 21, "every failover run must measure a takeover");
    t.sort_unstable();
    assert!(t[10] <= 40, "median takeover {} ms", t[10]);
}
