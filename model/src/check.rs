//! Running the checker on one configuration and reporting what it found.

use std::time::{Duration, Instant};

use stateright::{Checker, Expectation, HasDiscoveries, Model, Path};

use crate::config::ModelConfig;
use crate::model::{Action, HaModel};
use crate::properties::roles_line;
use crate::state::{describe_frame, State};

/// A property that failed: an `always` property with a counterexample, or a `sometimes`
/// property with no example (the model is vacuous there).
#[derive(Clone, Debug)]
pub struct Violation {
    /// The property's name.
    pub property: &'static str,
    /// The behaviour leading to the counterexample, one step a line (empty for a
    /// `sometimes` property never satisfied).
    pub trace: Vec<String>,
}

/// What one run found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The configuration's name.
    pub name: String,
    /// Distinct states explored (after deduplication).
    pub states: usize,
    /// States generated, repeats included.
    pub generated: usize,
    /// Longest behaviour explored, in steps.
    pub max_depth: usize,
    /// Properties checked.
    pub properties: usize,
    /// Properties that failed.
    pub violations: Vec<Violation>,
    /// Wall-clock time of the run.
    pub elapsed: Duration,
}

impl Outcome {
    /// The per-configuration summary line.
    pub fn line(&self) -> String {
        format!(
            "model {}: states={} generated={} depth={} properties={} violations={} time={:.1}s",
            self.name,
            self.states,
            self.generated,
            self.max_depth,
            self.properties,
            self.violations.len(),
            self.elapsed.as_secs_f64()
        )
    }
}

/// Explores every behaviour of `cfg` (depth-first; `stop_early`: stop at the first failed
/// property) and reports the failed properties with a trace each.
pub fn check(cfg: &ModelConfig, stop_early: bool) -> Outcome {
    let start = Instant::now();
    let model = HaModel::new(cfg.clone());
    let props = model.properties();
    let mut builder = model.checker().threads(cfg.threads.max(1));
    if stop_early {
        builder = builder.finish_when(HasDiscoveries::AnyFailures);
    }
    let checker = builder.spawn_dfs().join();
    let found = checker.discoveries();
    let model = checker.model();
    let mut violations = Vec::new();
    for p in &props {
        match (&p.expectation, found.get(p.name)) {
            (Expectation::Sometimes, Some(_)) | (Expectation::Always, None) => {}
            (Expectation::Sometimes, None) if stop_early => {}
            (Expectation::Sometimes, None) => violations.push(Violation {
                property: p.name,
                trace: Vec::new(),
            }),
            (_, Some(path)) => violations.push(Violation {
                property: p.name,
                trace: trace(model, path.clone()),
            }),
            (Expectation::Eventually, None) => {}
        }
    }
    Outcome {
        name: cfg.name.clone(),
        states: checker.unique_state_count(),
        generated: checker.state_count(),
        max_depth: checker.max_depth(),
        properties: props.len(),
        violations,
        elapsed: start.elapsed(),
    }
}

/// A behaviour as text: one line per step (time, what the environment did, every member's
/// roles after it), then the last state in full.
pub fn trace(model: &HaModel, path: Path<State, Action>) -> Vec<String> {
    let steps = path.into_vec();
    let mut out = Vec::new();
    if let Some((first, _)) = steps.first() {
        out.push(format!(
            "t={:>4} boot                         {}",
            first.now,
            roles_line(model, first)
        ));
    }
    for w in steps.windows(2) {
        let (before, action) = (&w[0].0, &w[0].1);
        let after = &w[1].0;
        let Some(action) = action else { continue };
        out.push(format!(
            "t={:>4} {:<28} {}",
            after.now,
            describe(before, action),
            roles_line(model, after)
        ));
    }
    if let Some((last, _)) = steps.last() {
        for l in format!("{last:?}").lines() {
            out.push(format!("       | {l}"));
        }
    }
    out
}

fn describe(s: &State, a: &Action) -> String {
    match a {
        Action::Tick => "tick".into(),
        Action::Deliver(i) => format!("deliver {}", describe_frame(&s.inflight[*i])),
        Action::Lose(i) => format!("LOSE {}", describe_frame(&s.inflight[*i])),
        Action::Duplicate(i) => format!("duplicate {}", describe_frame(&s.inflight[*i])),
        Action::Delay(i) => format!("hold late {}", describe_frame(&s.inflight[*i])),
        Action::ProbeAnswer(i) => {
            let p = &s.probes[*i];
            let alive = s.agent(p.peer as usize).is_some();
            format!(
                "m{}'s probe of m{} answered {}",
                p.asker,
                p.peer,
                if alive { "alive" } else { "dead" }
            )
        }
        Action::ProbeAnswerAsAsked(i) => {
            let p = &s.probes[*i];
            format!(
                "m{}'s probe of m{} answered alive, as when it was asked (it crashed since)",
                p.asker, p.peer
            )
        }
        Action::ProbeLost(i) => {
            let p = &s.probes[*i];
            format!("m{}'s probe of m{} LOST", p.asker, p.peer)
        }
        Action::Crash(m) => format!("m{m} CRASHES"),
        Action::Restart(m) => format!("m{m} restarts"),
    }
}
