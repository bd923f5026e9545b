//! The invariants the simulator checks, and the bookkeeping only they need.
//!
//! Checked after every event of the safety phase:
//! 1. **Nothing panics** (a panic in the agent is a violation; see [`crate::run::run`]).
//! 2. **One active per domain**: two running members active in the same domain for longer
//!    than the detection bound is a violation, unless a fault outside what the profile
//!    tolerates (partition, loss spike, one-way cut of every link) or a pause happened within
//!    the bound.
//! 3. **A dead active is replaced**: a domain without an active for longer than the bound
//!    (plus the startup window while a member boots) is a violation, unless every running
//!    member is forced passive, or the same excuses apply.
//! 4. **Forcing is obeyed**: a member forced passive is never active; the only member forced
//!    active is, after the bound, active in every domain and nobody else is.
//! 5. **A single lost link never causes a swap** ([`Kind::SingleLink`] seeds: no role
//!    changes after the cluster settled).
//! 6. **Flapping is bounded** ([`Kind::Flap`] seeds: swaps ≤ 2 per domain per hold-down).
//!
//! Checked after every event of both phases:
//! 8. **The main CPU follows its controller**: a running member's main CPU applies, in every
//!    domain (by id), the role its controller holds, within 3 × `ROLES_REFRESH_MS` (+ the
//!    host link's delay) of the last frame the lossy host link lost. A controller that sent
//!    a role once, on change, fails this as soon as that one frame is lost.
//! 9. **A silent sensor source counts as failed**: a running member whose sensor source sent
//!    nothing for its sensor timeout shows the source silent and a hardware part of 0; one
//!    heard within the timeout does not.
//!
//! And once at the end of the liveness phase (faults healed):
//! 7. **Convergence**: exactly one active per domain, with the best merit (forcing, quality,
//!    priority) among running members.

use ha_agent::agent::ROLES_REFRESH_MS;
use ha_agent::election::{self, Candidate};
use ha_proto::msg::{Forced, Role};

use crate::scenario::Kind;
use crate::world::World;

/// Slack of the sensor check, ms: clock drift over a timeout and wake-up rounding.
const SENSOR_SLACK_MS: u64 = 5;

/// The invariants' own bookkeeping.
pub struct Checker {
    /// The running members forced active, and since when this set holds.
    forced_set: (Vec<usize>, u64),
    /// Per domain (position): since when two members are active in it.
    dual_since: Vec<Option<u64>>,
    /// Per domain (position): since when no member is active in it.
    missing_since: Vec<Option<u64>>,
    /// Per member and domain (position): since when its main CPU shows another role.
    host_since: Vec<Vec<Option<u64>>>,
    /// Invariant 8's bound, ms.
    bound_host: u64,
}

impl Checker {
    /// Bookkeeping for `members` members and `domains` domains; host links delay at most
    /// `uart_max_ms` one way.
    pub fn new(members: usize, domains: usize, uart_max_ms: u64) -> Self {
        Checker {
            forced_set: (Vec::new(), 0),
            dual_since: vec![None; domains],
            missing_since: vec![None; domains],
            host_since: vec![vec![None; domains]; members],
            bound_host: 3 * ROLES_REFRESH_MS + 2 * uart_max_ms + 50,
        }
    }

    /// Invariants 2–6, after every event of the safety phase.
    pub fn check(&mut self, w: &World) -> Result<(), String> {
        let sc = w.sc;
        let n = sc.members;
        let now = w.now;
        let excused = now < w.excused_until.max(w.net_excused_until);
        // 4a: forced passive is never active.
        for m in 0..n {
            if w.members[m].forced == Forced::Passive
                && sc
                    .domain_ids
                    .iter()
                    .any(|&id| w.role(m, id) == Some(Role::Active))
            {
                return Err(format!("m{m} is forced passive but active"));
            }
        }
        let running = w.running();
        let startup = sc.timers.startup_window_ms as u64;
        let booting = running
            .iter()
            .any(|&m| now < w.members[m].boot_g + startup + w.bound_missing);
        for (d, &id) in sc.domain_ids.iter().enumerate() {
            let actives: Vec<usize> = running
                .iter()
                .copied()
                .filter(|&m| w.role(m, id) == Some(Role::Active))
                .collect();
            // 2: one active per domain.
            if actives.len() >= 2 && !excused {
                let since = *self.dual_since[d].get_or_insert(now);
                if now - since > w.bound_dual {
                    return Err(format!(
                        "two actives in domain {id} ({actives:?}) for {} ms (bound {} ms)",
                        now - since,
                        w.bound_dual
                    ));
                }
            } else {
                self.dual_since[d] = None;
            }
            // 3: a domain without active is filled.
            let eligible = running
                .iter()
                .any(|&m| w.members[m].forced != Forced::Passive);
            if actives.is_empty() && eligible && !excused {
                let since = *self.missing_since[d].get_or_insert(now);
                let bound = w.bound_missing + if booting { startup } else { 0 };
                if now - since > bound {
                    return Err(format!(
                        "no active in domain {id} for {} ms (bound {bound} ms)",
                        now - since
                    ));
                }
            } else {
                self.missing_since[d] = None;
            }
        }
        // 4b: the only forced-active member is active everywhere, alone.
        let fa: Vec<usize> = running
            .iter()
            .copied()
            .filter(|&m| w.members[m].forced == Forced::Active)
            .collect();
        if fa != self.forced_set.0 {
            self.forced_set = (fa.clone(), now);
        }
        if fa.len() == 1 && !excused {
            let m = fa[0];
            let since = self
                .forced_set
                .1
                .max(w.excused_until.max(w.net_excused_until));
            if now > since + w.bound_missing {
                for &id in &sc.domain_ids {
                    let others = running
                        .iter()
                        .any(|&o| o != m && w.role(o, id) == Some(Role::Active));
                    if w.role(m, id) != Some(Role::Active) || others {
                        return Err(format!(
                            "m{m} is forced active but not the only active of domain {id}"
                        ));
                    }
                }
            }
        }
        // 5: single-link seeds: no swap once settled.
        if sc.kind == Kind::SingleLink {
            if let Some(&(t, m, d)) = w.role_changes.last() {
                if t > w.settled_at {
                    return Err(format!(
                        "m{m} changed role in domain {d} although only one link was cut"
                    ));
                }
            }
        }
        // 6: flapping causes a bounded number of swaps.
        if let Some((start, end)) = sc.flap {
            let hd = sc.timers.hold_down_ms as u64;
            let window_end = end + w.bound_dual;
            let swaps = w
                .role_changes
                .iter()
                .filter(|(t, _, _)| *t >= start && *t <= window_end)
                .count() as u64;
            let allowed = 2 * sc.domains() as u64 * ((end - start) / hd.max(1) + 2);
            if swaps > allowed {
                return Err(format!(
                    "{swaps} role changes while an interface flapped (allowed {allowed})"
                ));
            }
        }
        Ok(())
    }

    /// Invariant 8, after every event.
    pub fn check_host(&mut self, w: &World) -> Result<(), String> {
        let now = w.now;
        for (m, since) in self.host_since.iter_mut().enumerate() {
            let mb = &w.members[m];
            let Some(agent) = mb.agent.as_ref() else {
                since.iter_mut().for_each(|s| *s = None);
                continue;
            };
            for (d, &id) in w.sc.domain_ids.iter().enumerate() {
                let role = agent.role(id);
                let shown = mb.cpu.role(id);
                if shown == role {
                    since[d] = None;
                    continue;
                }
                let from = (*since[d].get_or_insert(now)).max(mb.host_lost_at);
                if now - from > self.bound_host {
                    return Err(format!(
                        "m{m}'s main CPU shows {shown:?} in domain {id} but its controller is \
                         {role:?}, for {} ms since the host link last lost a frame (bound {} ms)",
                        now - from,
                        self.bound_host
                    ));
                }
            }
        }
        Ok(())
    }

    /// Invariant 9, after every event.
    pub fn check_sensors(w: &World) -> Result<(), String> {
        let timeout = w.sc.sensor_timeout_ms as u64;
        if timeout == 0 {
            return Ok(());
        }
        for m in w.running() {
            let mb = &w.members[m];
            let Some(agent) = mb.agent.as_ref() else {
                continue;
            };
            let st = agent.status();
            let deadline = mb.last_report + timeout;
            if w.now > deadline + SENSOR_SLACK_MS
                && (!st.sensors_silent || st.me.hardware_quality != 0)
            {
                return Err(format!(
                    "m{m}'s sensor source silent since t={} but the agent shows silent={} \
                     hardware={}",
                    mb.last_report, st.sensors_silent, st.me.hardware_quality
                ));
            }
            if w.now + SENSOR_SLACK_MS < deadline && st.sensors_silent {
                return Err(format!(
                    "m{m}'s sensor source reported at t={} but the agent shows it silent",
                    mb.last_report
                ));
            }
        }
        Ok(())
    }

    /// Invariant 7, at the end of the liveness phase.
    pub fn check_final(w: &World) -> Result<(), String> {
        let sc = w.sc;
        let running = w.running();
        let cands: Vec<(usize, Candidate)> = running
            .iter()
            .filter_map(|&m| {
                let a = w.members[m].agent.as_ref()?;
                let s = a.status().me;
                Some((
                    m,
                    Candidate {
                        index: m as u8,
                        forced: s.forced,
                        quality: s.quality,
                        priority: 0,
                    },
                ))
            })
            .collect();
        for (d, &id) in sc.domain_ids.iter().enumerate() {
            let actives: Vec<usize> = running
                .iter()
                .copied()
                .filter(|&m| w.role(m, id) == Some(Role::Active))
                .collect();
            let eligible = cands.iter().any(|(_, c)| c.forced != Forced::Passive);
            if !eligible {
                continue;
            }
            if actives.len() != 1 {
                return Err(format!(
                    "after healing, domain {id} has actives {actives:?} (exactly one expected)"
                ));
            }
            let prio = |m: usize| if sc.preferred[d] == Some(m) { 50 } else { 0 };
            let with_prio = |&(m, c): &(usize, Candidate)| Candidate {
                priority: prio(m),
                ..c
            };
            let act = cands.iter().find(|(m, _)| *m == actives[0]).map(with_prio);
            let top = cands.iter().map(with_prio).max_by_key(election::merit);
            if let (Some(a), Some(t)) = (act, top) {
                if election::merit(&a) < election::merit(&t) {
                    return Err(format!(
                        "after healing, domain {id} active m{} has merit {:?} but m{} has {:?}",
                        actives[0],
                        election::merit(&a),
                        t.index,
                        election::merit(&t)
                    ));
                }
            }
        }
        Ok(())
    }
}
