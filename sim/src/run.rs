//! Running a seed, and what comes out: the outcome and a failure's report.

use std::fmt::Write as _;

pub use crate::scenario::Options;
use crate::scenario::{Kind, Scenario};
use crate::world::World;

/// Result of one seed.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Members of the scenario.
    pub members: usize,
    /// Scenario kind.
    pub kind: Kind,
    /// First violation found, if any.
    pub violation: Option<String>,
    /// The last trace lines.
    pub trace: Vec<String>,
    /// For [`Kind::Failover`]: ms from the active's crash to the new active's decision.
    pub failover_ms: Option<u64>,
}

/// Runs one seed.
pub fn run(seed: u64, opts: &Options) -> Outcome {
    let sc = Scenario::generate(seed, opts.members, opts.kind);
    let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let mut w = World::new(&sc, *opts);
        w.run();
        (
            w.violation,
            w.trace.into_iter().collect::<Vec<_>>(),
            w.failover_ms,
        )
    }));
    let (violation, trace, failover_ms) = match res {
        Ok(r) => r,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            (Some(format!("panic: {msg}")), Vec::new(), None)
        }
    };
    Outcome {
        seed,
        members: sc.members,
        kind: sc.kind,
        violation,
        trace,
        failover_ms,
    }
}

/// A failing seed's report: the violation, the replay command and the trace.
pub fn report(o: &Outcome, members_fixed: Option<usize>) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "seed {} ({:?}, {} members): VIOLATION {}",
        o.seed,
        o.kind,
        o.members,
        o.violation.as_deref().unwrap_or("")
    );
    let members = members_fixed
        .map(|k| format!(" --members {k}"))
        .unwrap_or_default();
    let _ = writeln!(s, "  replay: cargo xtask sim --seed {}{members}", o.seed);
    let keep = std::env::var("HA_SIM_TRACE_LINES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(80);
    let _ = writeln!(s, "  trace (last {} lines):", o.trace.len().min(keep));
    for l in o.trace.iter().rev().take(keep).rev() {
        let _ = writeln!(s, "    {l}");
    }
    s
}
