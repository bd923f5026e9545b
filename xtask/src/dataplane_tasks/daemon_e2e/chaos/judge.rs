//! The chaos run's verdict, from what the daemons said about their data paths.
//!
//! The monitor asks each daemon for its forwarding role every poll; each answer carries the
//! time (ms, the host's clock, which every member shares here) at which that role began and
//! a count of role changes. From these the judge rebuilds each member's active spells to the
//! millisecond instead of to the poll: two answers taken a few ms apart while the roles move
//! (the first member asked just before it steps down, the second just after it takes over)
//! no longer read as two actives, and a real overlap is measured by its true length.
//!
//! Where an answer cannot settle a spell's end, the judge takes the latest end the answers
//! allow (a spell is never shortened by a guess): changes missed between two answers of the
//! same process end the spell where the next known role began; a daemon that stopped
//! answering and came back as a new process ended it no later than the first unanswered
//! poll (a killed daemon forwards nothing).

use ha_mgmt_api::ForwardingReport;

/// One poll of one member: when it was asked (Unix ms) and its answer, if any.
#[derive(Clone, Debug)]
pub(super) struct Sample {
    pub asked_ms: u64,
    pub report: Option<ForwardingReport>,
}

/// A fault as judged: when it began and when its last action (the heal) happened, Unix ms.
#[derive(Clone, Debug)]
pub(super) struct FaultSpan {
    pub started_ms: u64,
    pub healed_ms: u64,
    /// Two actives may follow the heal for the collision window (a healed partition).
    pub collision: bool,
}

/// The verdict.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Verdict {
    /// The longest time without an active member, and when it began (Unix ms).
    pub no_active_max_ms: u64,
    pub no_active_longest_at: Option<u64>,
    /// Time with two actives outside collision windows.
    pub dual_outside_ms: u64,
    /// Each stretch of two actives outside collision windows: start (Unix ms) and length.
    pub dual_stretches: Vec<(u64, u64)>,
    /// Faults (by index) after whose heal no moment with exactly one active came within the
    /// bound, with the time it took (None: never).
    pub stuck: Vec<(usize, Option<u64>)>,
}

/// A member's active spells, `[start, end)` in Unix ms, from its samples in poll order.
pub(super) fn spells(samples: &[Sample]) -> Vec<(u64, u64)> {
    struct Open {
        start: u64,
        started: u64,
        changes: u64,
        seen: u64,
    }
    let mut out = Vec::new();
    let mut open: Option<Open> = None;
    // The first poll without an answer since the last answer.
    let mut first_fail: Option<u64> = None;
    for s in samples {
        let Some(f) = &s.report else {
            first_fail.get_or_insert(s.asked_ms);
            continue;
        };
        let failed = first_fail.take();
        if let Some(o) = open.take() {
            let same_process = o.started == f.started_ms;
            if same_process && f.active && f.changes == o.changes {
                // Still the same spell.
                open = Some(Open {
                    seen: f.now_ms.max(o.seen),
                    ..o
                });
                continue;
            }
            let end = if !same_process {
                // The old process ended before the new one started, and no later than the
                // first poll it did not answer.
                failed.unwrap_or(f.started_ms).min(f.started_ms)
            } else {
                // The role this answer reports began at since_ms; the spell ended then (one
                // change) or earlier (missed changes: the latest end they allow).
                f.since_ms
            };
            out.push((o.start, end.max(o.seen)));
        }
        if f.active {
            open = Some(Open {
                start: f.since_ms,
                started: f.started_ms,
                changes: f.changes,
                seen: f.now_ms,
            });
        }
    }
    if let Some(o) = open {
        // Still active when the monitor stopped, or gone without a successor: up to the last
        // answer, or to the first poll that went unanswered after it.
        let end = first_fail.unwrap_or(o.seen).max(o.seen);
        out.push((o.start, end));
    }
    out
}

/// Judges two members' spells over `[from, to)` against the faults: `bound_ms` is the longest
/// time after a heal before exactly one member must be active, `collision_ms` the window
/// after a healed partition in which two actives are a collision, not a fault.
pub(super) fn judge(
    members: [&[(u64, u64)]; 2],
    from: u64,
    to: u64,
    faults: &[FaultSpan],
    bound_ms: u64,
    collision_ms: u64,
) -> Verdict {
    let segs = segments(members, from, to);
    let mut v = Verdict::default();
    // No active: merge consecutive empty segments.
    let mut empty_since: Option<u64> = None;
    for &(a, b, n) in &segs {
        if n == 0 {
            let s = *empty_since.get_or_insert(a);
            if b - s > v.no_active_max_ms {
                v.no_active_max_ms = b - s;
                v.no_active_longest_at = Some(s);
            }
        } else {
            empty_since = None;
        }
    }
    // Two actives, minus the collision windows.
    let windows: Vec<(u64, u64)> = faults
        .iter()
        .filter(|f| f.collision)
        .map(|f| (f.healed_ms, f.healed_ms + collision_ms))
        .collect();
    for &(a, b, n) in &segs {
        if n < 2 {
            continue;
        }
        for (x, y) in subtract((a, b), &windows) {
            v.dual_outside_ms += y - x;
            match v.dual_stretches.last_mut() {
                Some((s, d)) if *s + *d == x => *d += y - x,
                _ => v.dual_stretches.push((x, y - x)),
            }
        }
    }
    for (i, f) in faults.iter().enumerate() {
        let (lo, hi) = (f.healed_ms, f.healed_ms + bound_ms);
        let one = |&&(a, b, n): &&(u64, u64, usize)| n == 1 && a.max(lo) < b.min(hi);
        if !segs.iter().any(|s| one(&s)) {
            let recovered = segs
                .iter()
                .find(|&&(_, b, n)| n == 1 && b > lo)
                .map(|&(a, _, _)| a.saturating_sub(lo));
            v.stuck.push((i, recovered));
        }
    }
    v
}

/// `[from, to)` cut at every spell boundary: (start, end, members active).
fn segments(members: [&[(u64, u64)]; 2], from: u64, to: u64) -> Vec<(u64, u64, usize)> {
    let mut cuts: Vec<u64> = vec![from, to];
    for m in members {
        for &(a, b) in m {
            cuts.extend([a.clamp(from, to), b.clamp(from, to)]);
        }
    }
    cuts.sort_unstable();
    cuts.dedup();
    cuts.windows(2)
        .map(|w| {
            let (a, b) = (w[0], w[1]);
            let n = members
                .iter()
                .filter(|m| m.iter().any(|&(x, y)| x <= a && b <= y))
                .count();
            (a, b, n)
        })
        .collect()
}

/// `[a, b)` without the parts inside `windows`.
fn subtract((a, b): (u64, u64), windows: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut parts = vec![(a, b)];
    for &(x, y) in windows {
        parts = parts
            .into_iter()
            .flat_map(|(p, q)| {
                let mut keep = Vec::new();
                if p < x.min(q) {
                    keep.push((p, x.min(q)));
                }
                if y.max(p) < q {
                    keep.push((y.max(p), q));
                }
                keep
            })
            .collect();
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rep(
        active: bool,
        since: u64,
        changes: u64,
        started: u64,
        now: u64,
    ) -> Option<ForwardingReport> {
        Some(ForwardingReport {
            serial: "SN".into(),
            active,
            domains: if active { vec![0] } else { Vec::new() },
            since_ms: since,
            changes,
            started_ms: started,
            now_ms: now,
            controller_alive: true,
            table_connections: None,
            peer_table: None,
        })
    }

    fn s(asked: u64, r: Option<ForwardingReport>) -> Sample {
        Sample {
            asked_ms: asked,
            report: r,
        }
    }

    #[test]
    fn a_handover_between_two_polls_is_not_two_actives() {
        // A asked at 1000 (active), steps down at 1010; B takes over at 1012, asked at 1020.
        let a = spells(&[
            s(950, rep(true, 100, 1, 0, 951)),
            s(1000, rep(true, 100, 1, 0, 1001)),
            s(1050, rep(false, 1010, 2, 0, 1051)),
        ]);
        let b = spells(&[
            s(970, rep(false, 0, 0, 0, 971)),
            s(1020, rep(true, 1012, 1, 0, 1021)),
            s(1070, rep(true, 1012, 1, 0, 1071)),
        ]);
        assert_eq!(a, vec![(100, 1010)]);
        assert_eq!(b, vec![(1012, 1071)]);
        let v = judge([&a, &b], 950, 1071, &[], 4000, 3000);
        assert_eq!(v.dual_outside_ms, 0);
        assert_eq!(v.no_active_max_ms, 2);
        assert_eq!(v.no_active_longest_at, Some(1010));
    }

    #[test]
    fn a_real_overlap_counts_its_true_length() {
        let a = spells(&[
            s(1000, rep(true, 100, 1, 0, 1001)),
            s(1050, rep(false, 1040, 2, 0, 1051)),
        ]);
        let b = spells(&[
            s(1020, rep(true, 1013, 1, 0, 1021)),
            s(1070, rep(true, 1013, 1, 0, 1071)),
        ]);
        let v = judge([&a, &b], 1000, 1071, &[], 4000, 3000);
        assert_eq!(v.dual_outside_ms, 27);
        assert_eq!(v.dual_stretches, vec![(1013, 27)]);
        // Inside a collision window it is not counted.
        let healed = FaultSpan {
            started_ms: 0,
            healed_ms: 1000,
            collision: true,
        };
        let v = judge([&a, &b], 1000, 1071, &[healed], 4000, 3000);
        assert_eq!(v.dual_outside_ms, 0);
    }

    #[test]
    fn missed_changes_keep_the_latest_end_they_allow() {
        // Between two answers the member went passive and active again (changes 1 -> 3): the
        // first spell is taken to last until the second began.
        let a = spells(&[
            s(1000, rep(true, 100, 1, 0, 1001)),
            s(1050, rep(true, 1030, 3, 0, 1051)),
        ]);
        assert_eq!(a, vec![(100, 1030), (1030, 1051)]);
    }

    #[test]
    fn a_killed_daemon_ends_its_spell_at_the_first_unanswered_poll() {
        let a = spells(&[
            s(1000, rep(true, 100, 1, 0, 1001)),
            s(1050, None),
            s(1100, None),
            s(5000, rep(false, 4900, 0, 4900, 5001)),
        ]);
        assert_eq!(a, vec![(100, 1050)]);
        // An unanswered poll of a process that then answers again is a missed sample only.
        let b = spells(&[
            s(1000, rep(true, 100, 1, 0, 1001)),
            s(1050, None),
            s(1100, rep(true, 100, 1, 0, 1101)),
        ]);
        assert_eq!(b, vec![(100, 1101)]);
    }

    #[test]
    fn stuck_when_no_single_active_follows_a_heal_within_the_bound() {
        let a = [(0, 1000), (9000, 10_000)];
        let b: [(u64, u64); 0] = [];
        let f = FaultSpan {
            started_ms: 900,
            healed_ms: 1000,
            collision: false,
        };
        let v = judge([&a, &b], 0, 10_000, std::slice::from_ref(&f), 4000, 3000);
        assert_eq!(v.stuck, vec![(0, Some(8000))]);
        assert_eq!(v.no_active_max_ms, 8000);
        let v = judge([&a, &b], 0, 10_000, &[f], 9000, 3000);
        assert!(v.stuck.is_empty());
    }
}
