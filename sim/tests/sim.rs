//! The simulator catches a broken election, replays a seed exactly, numbers domains sparsely,
//! exercises silent sensor sources and lossy host links, and passes on the real agent.

use std::cmp::Ordering;

use ha_agent::election::{merit, Candidate, MeritOrder};
use ha_sim::scenario::{Action, MAX_HOST_LOSS, MAX_SIM_DOMAINS};
use ha_sim::{run, Kind, Options, Scenario};

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

#[test]
fn domains_are_numbered_sparsely_up_to_four() {
    let mut most = 0;
    let mut gaps = false;
    for seed in 0..300u64 {
        let sc = Scenario::generate(seed, None, None);
        let ids = &sc.domain_ids;
        assert!(
            !ids.is_empty() && ids.len() <= MAX_SIM_DOMAINS,
            "seed {seed}: {ids:?}"
        );
        for (i, id) in ids.iter().enumerate() {
            assert!(
                (*id as usize) < ha_proto::msg::MAX_DOMAINS,
                "seed {seed}: {ids:?}"
            );
            assert!(!ids[..i].contains(id), "seed {seed}: {ids:?}");
        }
        most = most.max(ids.len());
        gaps |= ids.iter().enumerate().any(|(i, &id)| id as usize != i);
        assert!((0.0..=MAX_HOST_LOSS).contains(&sc.host_loss));
    }
    assert_eq!(most, MAX_SIM_DOMAINS);
    assert!(gaps, "no seed numbers its domains other than 0..n");
}

#[test]
fn a_silent_sensor_source_and_a_lossy_host_link_pass_on_the_real_agent() {
    // A seed whose sensor source goes silent for good and whose host link loses a tenth of
    // its frames or more.
    let seed = (0..5_000u64)
        .find(|&s| {
            let sc = Scenario::generate(s, None, None);
            sc.host_loss >= 0.1
                && sc
                    .actions
                    .iter()
                    .filter(|(_, a)| matches!(a, Action::SensorSilence { .. }))
                    .count()
                    == 1
        })
        .expect("such a seed");
    let o = run(seed, &Options::default());
    assert_eq!(o.violation, None, "seed {seed}");
    assert!(
        o.trace.iter().any(|l| l.contains("SensorsSilent")),
        "seed {seed}: the agent never declared the source silent"
    );
    assert!(o.trace.iter().any(|l| l.contains("main CPU applies")));
}
