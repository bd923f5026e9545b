//! The simulator catches a broken election, replays a seed exactly, and passes on the real one.

use std::cmp::Ordering;

use ha_agent::election::{merit, Candidate};
use ha_sim::{run, Kind, Options};

/// A copy of the election's merit order with one comparison planted the wrong way round:
/// the *lower* quality wins.
fn wrong_merit(a: &Candidate, b: &Candidate) -> Ordering {
    let (fa, qa, pa) = merit(a);
    let (fb, qb, pb) = merit(b);
    (fa, qb, pa).cmp(&(fb, qa, pb))
}

#[test]
fn planted_wrong_comparison_is_reported() {
    let opts = Options {
        merit_order: Some(wrong_merit),
        ..Options::default()
    };
    let failing: Vec<_> = (0..300u64)
        .map(|s| run(s, &opts))
        .filter(|o| o.violation.is_some())
        .collect();
    assert!(
        !failing.is_empty(),
        "300 seeds with a broken election and no violation reported"
    );
    // The real rule passes those very seeds.
    for o in failing.iter().take(5) {
        let ok = run(o.seed, &Options::default());
        assert_eq!(
            ok.violation, None,
            "seed {} fails with the real rule",
            o.seed
        );
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
    for seed in 0..60u64 {
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
    let mut t: Vec<u64> = (0..41u64)
        .filter_map(|s| run(s, &opts).failover_ms)
        .collect();
    assert_eq!(t.len(), 41, "every failover run must measure a takeover");
    t.sort_unstable();
    assert!(t[20] <= 40, "median takeover {} ms", t[20]);
}
