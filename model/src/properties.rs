//! The properties checked in every reachable state.
//!
//! Liveness is checked in its bounded form (an `always` with a deadline) rather than with
//! [`Property::eventually`]: stateright's `eventually` only holds on acyclic paths, and the
//! relative-time state space is cyclic by design (a quiet cluster returns to the same
//! state every heartbeat interval). "Within R of the last fault" is also the stronger
//! statement: it bounds how long convergence takes.

use ha_agent::election::{merit, Candidate};
use ha_proto::msg::Role;
use stateright::Property;

use crate::model::HaModel;
use crate::state::State;

/// (1) Safety: two members that have exchanged frames without a fault for a dead time plus
/// a frame delay are never both active in a domain for longer than a frame delay.
pub const SAFETY: &str = "safety: no two actives between connected members";
/// (2) Liveness: a dead time plus the recovery bound after the last fault, every domain has
/// exactly one active among the running members.
pub const LIVENESS: &str = "liveness: one active per domain after recovery";
/// (2b) The active a recovery bound after the last fault has the best merit (forcing,
/// quality, priority) among the running members: the election chose correctly.
pub const BEST: &str = "election: the active has the best merit after recovery";
/// (3) No flapping: after the last fault, each member changes role at most
/// `max_flips` times per domain.
pub const FLAPPING: &str = "no flapping: bounded role changes after the last fault";
/// The agent's contract and the model's bounds hold (no wake-up in the past after a tick,
/// no dropped output, acceptance of each frame as its trial delivery predicted, in-flight
/// frames within bounds).
pub const CONTRACT: &str = "contract: agent and model bounds";
/// Reachability (an example must exist, or the model is vacuous): a crashed active's
/// domain is taken over by another member.
pub const FAILOVER: &str = "reachable: failover after a crash";

/// Every property, in report order.
pub fn all() -> Vec<Property<HaModel>> {
    vec![
        Property::always(SAFETY, safety),
        Property::always(LIVENESS, liveness),
        Property::always(BEST, best_merit),
        Property::always(FLAPPING, no_flapping),
        Property::always(CONTRACT, |_, s: &State| s.breach.is_none()),
        Property::sometimes(FAILOVER, |_, s: &State| s.failover_seen),
    ]
}

/// See [`SAFETY`]. Two actives are allowed right after a fault between them (a partition
/// heals, a peer declared lost comes back) and, between connected members, for one frame
/// delay: make before break, the old active steps down when the new one's first heartbeat
/// arrives.
pub fn safety(m: &HaModel, s: &State) -> bool {
    let n = s.n();
    for (d, id) in m.cfg.domains.iter().enumerate() {
        let Some(since) = s.dual_since[d] else {
            continue;
        };
        if s.now - since <= m.cfg.max_delay_ms {
            continue;
        }
        let actives = s.actives(*id);
        for (i, &a) in actives.iter().enumerate() {
            for &b in &actives[i + 1..] {
                if s.now - s.pair_fault_at[a * n + b] >= m.cfg.connected_ms() {
                    return false;
                }
            }
        }
    }
    true
}

fn recovered(m: &HaModel, s: &State) -> bool {
    s.now - s.last_fault_at >= m.cfg.recovery_ms()
}

/// See [`LIVENESS`].
pub fn liveness(m: &HaModel, s: &State) -> bool {
    !recovered(m, s) || m.cfg.domains.iter().all(|id| s.actives(*id).len() == 1)
}

/// The merit of member `i` in the domain at position `d`, as the election rule defines it.
fn merit_of(s: &State, i: usize, d: usize) -> Option<(u8, u8, u8)> {
    let a = s.agent(i)?;
    let me = &a.status().me;
    Some(merit(&Candidate {
        index: i as u8,
        forced: me.forced,
        quality: me.quality,
        priority: a.config().priority(d, &me.serial),
    }))
}

/// See [`BEST`]. Uses the real rule ([`merit`]), not the order planted in the agents.
pub fn best_merit(m: &HaModel, s: &State) -> bool {
    if !recovered(m, s) {
        return true;
    }
    for (d, id) in m.cfg.domains.iter().enumerate() {
        let top = (0..s.n()).filter_map(|i| merit_of(s, i, d)).max();
        for a in s.actives(*id) {
            if merit_of(s, a, d) < top {
                return false;
            }
        }
    }
    true
}

/// See [`FLAPPING`].
pub fn no_flapping(m: &HaModel, s: &State) -> bool {
    s.flips.iter().all(|&f| f <= m.cfg.max_flips)
}

/// The roles of every member in one line, e.g. `m0[d1=Active] m1[crashed]`.
pub fn roles_line(m: &HaModel, s: &State) -> String {
    (0..s.n())
        .map(|i| match s.agent(i) {
            None => format!("m{i}[crashed]"),
            Some(_) => {
                let r: Vec<String> = m
                    .cfg
                    .domains
                    .iter()
                    .map(|id| {
                        let role = match s.role(i, *id) {
                            Some(Role::Active) => "A",
                            Some(Role::Passive) => "P",
                            Some(Role::Starting) => "S",
                            Some(Role::Disabled) => "D",
                            None => "?",
                        };
                        format!("d{id}={role}")
                    })
                    .collect();
                format!("m{i}[{}]", r.join(" "))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
