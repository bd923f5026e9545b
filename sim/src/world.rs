//! The simulation loop and its invariants.
//!
//! Invariants, checked after every event of the safety phase:
//! 1. **Nothing panics** (a panic in the agent is a violation).
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
//! And once at the end of the liveness phase (faults healed):
//! 7. **Convergence**: exactly one active per domain, with the best merit (forcing, quality,
//!    priority) among running members.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write as _;

use ha_agent::config::Config;
use ha_agent::election::{self, Candidate, MeritOrder};
use ha_agent::event::EventKind;
use ha_agent::{Agent, LinkId, Output};
use ha_agent::{SensorKind, SensorReading};
use ha_proto::keys::Psk;
use ha_proto::msg::host::{HostMsg, IfaceState};
use ha_proto::msg::member::AdminCommand;
use ha_proto::msg::{Forced, Role, Serial};
use oorandom::Rand64;

use crate::scenario::{Action, Kind, Scenario, MAX_SIM_DOMAINS, MAX_SIM_MEMBERS};

/// The agent type the simulator runs.
pub type SimAgent = Agent<MAX_SIM_MEMBERS, MAX_SIM_DOMAINS>;

/// Trace lines kept for a failure report.
const TRACE_KEEP: usize = 400;

/// Run options.
#[derive(Clone, Copy, Default)]
pub struct Options {
    /// Fix the member count.
    pub members: Option<usize>,
    /// Force a scenario kind.
    pub kind: Option<Kind>,
    /// Replace the election's merit order (mutation test).
    pub merit_order: Option<MeritOrder>,
}

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

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Wake { m: usize, gen: u64 },
    Frame { to: usize, link: u8, bytes: Vec<u8> },
    Probe { m: usize, peer: usize },
    Boot(usize),
    Act(usize),
}

/// The simulated cluster's key (random bytes: weak keys are refused by the agent).
const CLUSTER_KEY: [u8; 32] = [
    79, 204, 198, 15, 169, 100, 136, 208, 217, 2, 63, 218, 246, 12, 2, 121, 254, 18, 215, 194, 192,
    99, 229, 9, 42, 57, 169, 187, 79, 249, 188, 221,
];

struct Member {
    agent: Option<SimAgent>,
    epoch: u32,
    boot_g: u64,
    gen: u64,
    ifaces: [bool; 3],
    hw: Vec<SensorReading>,
    forced: Forced,
    paused_until: u64,
}

struct World<'a> {
    sc: &'a Scenario,
    opts: Options,
    rng: Rand64,
    now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    members: Vec<Member>,
    serials: Vec<Serial>,
    cut: Vec<bool>,
    spike: Vec<bool>,
    data_ok: Vec<bool>,
    trace: VecDeque<String>,
    violation: Option<String>,
    /// Invariants 2–4 are not checked before this time (out-of-tolerance faults, pauses).
    excused_until: u64,
    /// Like `excused_until`, for network faults outside the profile's tolerance.
    net_excused_until: u64,
    intolerant: bool,
    /// The running members forced active, and since when this set holds.
    forced_set: (Vec<usize>, u64),
    dual_since: Vec<Option<u64>>,
    missing_since: Vec<Option<u64>>,
    role_changes: Vec<(u64, usize, u8)>,
    settled_at: u64,
    crash_at: Option<u64>,
    failover_ms: Option<u64>,
    bound_dual: u64,
    bound_missing: u64,
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

impl<'a> World<'a> {
    fn new(sc: &'a Scenario, opts: Options) -> Self {
        let n = sc.members;
        let t = &sc.timers;
        let dead = t.profile.dead_ms() as u64;
        let iv = t.profile.interval_ms() as u64;
        let md = sc.max_delay();
        let bound_dual = dead + t.probe_timeout_ms as u64 + 2 * md + 2 * iv + 50;
        let bound_missing = dead
            + t.probe_timeout_ms as u64
            + t.reprobe_ms as u64
            + sc.host_delay.1
            + 2 * md
            + 3 * iv
            + 50;
        let serials = (0..n)
            .map(|i| Serial::new(&format!("SIM{i:02}")).unwrap_or_default())
            .collect();
        let mut w = World {
            sc,
            opts,
            rng: Rand64::new(sc.seed as u128 + 1),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            members: (0..n)
                .map(|_| Member {
                    agent: None,
                    epoch: 0,
                    boot_g: 0,
                    gen: 0,
                    ifaces: [true; 3],
                    hw: Vec::new(),
                    forced: Forced::None,
                    paused_until: 0,
                })
                .collect(),
            serials,
            cut: vec![false; n * n * sc.links as usize],
            spike: vec![false; n],
            data_ok: vec![true; n * n],
            trace: VecDeque::new(),
            violation: None,
            excused_until: 0,
            net_excused_until: 0,
            intolerant: false,
            forced_set: (Vec::new(), 0),
            dual_since: vec![None; sc.domains],
            missing_since: vec![None; sc.domains],
            role_changes: Vec::new(),
            settled_at: 0,
            crash_at: None,
            failover_ms: None,
            bound_dual,
            bound_missing,
        };
        for m in 0..n {
            w.members[m].hw = [SensorKind::Psu, SensorKind::Fan]
                .iter()
                .flat_map(|&kind| {
                    (0..2).map(move |index| SensorReading {
                        kind,
                        index,
                        ok: true,
                    })
                })
                .collect();
        }
        w
    }

    fn push(&mut self, t: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((t, self.seq, ev)));
    }

    fn log(&mut self, line: String) {
        if self.trace.len() == TRACE_KEEP {
            self.trace.pop_front();
        }
        self.trace.push_back(format!("t={:>6} {line}", self.now));
    }

    fn violate(&mut self, what: String) {
        if self.violation.is_none() {
            self.log(format!("VIOLATION: {what}"));
            self.violation = Some(format!("t={} {what}", self.now));
        }
    }

    fn local(&self, m: usize) -> u64 {
        let mb = &self.members[m];
        let dt = self.now.saturating_sub(mb.boot_g) as i128;
        (dt * (1_000_000 + self.sc.drift_ppm[m] as i128) / 1_000_000) as u64
    }

    fn global(&self, m: usize, local: u64) -> u64 {
        let k = 1_000_000 + self.sc.drift_ppm[m] as i128;
        let l = local as i128 * 1_000_000;
        self.members[m].boot_g + ((l + k - 1) / k) as u64
    }

    fn run(&mut self) {
        let sc = self.sc;
        for m in 0..sc.members {
            let t = sc.boot_at[m];
            self.push(t, Ev::Boot(m));
        }
        for (i, (t, _)) in sc.actions.iter().enumerate() {
            self.push(*t, Ev::Act(i));
        }
        self.settled_at = sc.boot_at.iter().max().copied().unwrap_or(0)
            + sc.timers.startup_window_ms as u64
            + self.bound_missing;
        while let Some(Reverse((t, _, ev))) = self.queue.pop() {
            if t > sc.end_at || self.violation.is_some() {
                break;
            }
            self.now = t;
            self.handle(ev);
            if self.now < sc.heal_at {
                self.check();
            }
        }
        self.now = sc.end_at;
        if self.violation.is_none() && sc.kind != Kind::Failover {
            self.check_final();
        }
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Wake { m, gen } => {
                if self.members[m].gen == gen {
                    let now = self.local(m);
                    if let Some(a) = self.members[m].agent.as_mut() {
                        a.handle_timeout(now);
                    }
                    self.drain(m);
                }
            }
            Ev::Frame {
                to,
                link,
                mut bytes,
            } => {
                let now = self.local(to);
                if let Some(a) = self.members[to].agent.as_mut() {
                    a.handle_member_frame(now, LinkId(link), &mut bytes);
                    self.drain(to);
                }
            }
            Ev::Probe { m, peer } => {
                let alive =
                    self.members[peer].agent.is_some() && self.data_ok[m * self.sc.members + peer];
                let now = self.local(m);
                let peer_serial = self.serials[peer];
                if let Some(a) = self.members[m].agent.as_mut() {
                    a.handle_host(
                        now,
                        HostMsg::ProbeResult {
                            peer: peer_serial,
                            alive,
                        },
                    );
                    self.drain(m);
                }
            }
            Ev::Boot(m) => self.boot(m),
            Ev::Act(i) => {
                let (_, a) = self.sc.actions[i];
                self.act(a);
            }
        }
    }

    fn config(&self, m: usize) -> Config<MAX_SIM_MEMBERS, MAX_SIM_DOMAINS> {
        let sc = self.sc;
        let mut members = heapless::Vec::new();
        for s in &self.serials {
            let _ = members.push(*s);
        }
        let mut c = Config::new(0xC1u32, Psk(CLUSTER_KEY), self.serials[m], members);
        c.links = sc.links;
        c.timers = sc.timers;
        c.firmware = sc.firmware[m];
        c.encrypt = sc.seed % 2 == 1;
        c.domains.clear();
        for d in 0..sc.domains {
            let _ = c.domains.push(ha_agent::DomainEntry {
                id: d as u8,
                preferred: sc.preferred[d].map(|p| self.serials[p]),
            });
        }
        c
    }

    fn ifaces_msg(&self, m: usize) -> HostMsg {
        let names = ["out", "in", "dmz2"];
        let mut list = heapless::Vec::new();
        for (i, name) in names.iter().enumerate() {
            let mut n = heapless::String::new();
            let _ = n.push_str(name);
            let _ = list.push(IfaceState {
                name: n,
                up: self.members[m].ifaces[i],
                weight: self.sc.iface_weights[i],
                aggregate: None,
            });
        }
        HostMsg::Interfaces(list)
    }

    fn boot(&mut self, m: usize) {
        if self.members[m].agent.is_some() {
            return;
        }
        let cfg = self.config(m);
        let mb = &mut self.members[m];
        mb.epoch += 1;
        mb.boot_g = self.now;
        mb.forced = Forced::None;
        mb.paused_until = 0;
        let epoch = mb.epoch;
        match SimAgent::new(cfg, 0, epoch) {
            Ok(mut a) => {
                if let Some(o) = self.opts.merit_order {
                    a.set_merit_order(o);
                }
                self.members[m].agent = Some(a);
            }
            Err(e) => {
                self.violate(format!("m{m} refused its configuration: {e}"));
                return;
            }
        }
        self.log(format!("m{m} boots (epoch {epoch})"));
        let msg = self.ifaces_msg(m);
        let hw = self.members[m].hw.clone();
        if let Some(a) = self.members[m].agent.as_mut() {
            a.handle_host(0, msg);
            for r in hw {
                a.handle_sensor_report(0, &[r]);
            }
        }
        self.drain(m);
    }

    fn crash(&mut self, m: usize) {
        if self.members[m].agent.take().is_some() {
            self.members[m].gen += 1;
            self.members[m].forced = Forced::None;
            self.members[m].paused_until = 0;
            self.log(format!("m{m} CRASHES"));
            if self.sc.kind == Kind::Failover && self.crash_at.is_none() {
                self.crash_at = Some(self.now);
            }
        }
    }

    fn recompute_tolerance(&mut self) {
        let n = self.sc.members;
        let links = self.sc.links as usize;
        let mut bad = false;
        for a in 0..n {
            for b in 0..n {
                if a == b {
                    continue;
                }
                let ok = (0..links).any(|l| {
                    !self.cut[(a * n + b) * links + l]
                        && !self.cut[(b * n + a) * links + l]
                        && !self.spike[a]
                        && !self.spike[b]
                });
                bad |= !ok;
            }
        }
        if bad {
            self.net_excused_until = u64::MAX;
        } else if self.intolerant {
            self.net_excused_until =
                self.now + self.bound_missing + self.sc.timers.startup_window_ms as u64;
        }
        self.intolerant = bad;
    }

    fn act(&mut self, a: Action) {
        let n = self.sc.members;
        let links = self.sc.links as usize;
        match a {
            Action::Crash(m) => self.crash(m),
            Action::CrashActive => {
                let act = (0..n).find(|&m| self.role(m, 0) == Some(Role::Active));
                if let Some(m) = act {
                    self.crash(m);
                }
            }
            Action::Restart(m) => self.boot(m),
            Action::Cut {
                from,
                to,
                link,
                cut,
            } => {
                if (link as usize) < links {
                    self.cut[(from * n + to) * links + link as usize] = cut;
                    self.log(format!(
                        "link {link} m{from}->m{to} {}",
                        if cut { "CUT" } else { "restored" }
                    ));
                    self.recompute_tolerance();
                }
            }
            Action::Isolate { m, data, on } => {
                for p in 0..n {
                    if p == m {
                        continue;
                    }
                    for l in 0..links {
                        self.cut[(m * n + p) * links + l] = on;
                        self.cut[(p * n + m) * links + l] = on;
                    }
                    if data {
                        self.data_ok[m * n + p] = !on;
                        self.data_ok[p * n + m] = !on;
                    }
                }
                self.log(format!(
                    "m{m} {} (data path too: {data})",
                    if on { "ISOLATED" } else { "rejoins" }
                ));
                self.recompute_tolerance();
            }
            Action::LossSpike { m, on } => {
                self.spike[m] = on;
                self.log(format!("m{m} loss spike {}", if on { "on" } else { "off" }));
                self.recompute_tolerance();
            }
            Action::Iface { m, iface, up } => {
                self.members[m].ifaces[iface] = up;
                self.log(format!(
                    "m{m} iface {iface} {}",
                    if up { "up" } else { "DOWN" }
                ));
                let msg = self.ifaces_msg(m);
                let now = self.local(m);
                if let Some(a) = self.members[m].agent.as_mut() {
                    a.handle_host(now, msg);
                    self.drain(m);
                }
            }
            Action::Hw { m, reading } => {
                if let Some(r) = self.members[m]
                    .hw
                    .iter_mut()
                    .find(|r| r.kind == reading.kind && r.index == reading.index)
                {
                    r.ok = reading.ok;
                } else {
                    self.members[m].hw.push(reading);
                }
                self.log(format!("m{m} hardware {reading:?}"));
                let now = self.local(m);
                if let Some(a) = self.members[m].agent.as_mut() {
                    a.handle_sensor_report(now, &[reading]);
                    self.drain(m);
                }
            }
            Action::Admin { m, via, cmd } => self.admin(m, via, cmd),
            Action::Heal => {
                self.cut.iter_mut().for_each(|c| *c = false);
                self.spike.iter_mut().for_each(|c| *c = false);
                self.data_ok.iter_mut().for_each(|c| *c = true);
                self.log("HEAL: network restored, crashed members restart, pauses resume".into());
                self.recompute_tolerance();
                for m in 0..n {
                    self.boot(m);
                    if self.members[m].paused_until > self.now {
                        self.admin(m, m, AdminCommand::Resume);
                    }
                }
            }
        }
    }

    fn admin(&mut self, m: usize, via: usize, cmd: AdminCommand) {
        if self.members[via].agent.is_none() {
            return;
        }
        let target = (via != m).then_some(self.serials[m]);
        self.log(format!("admin {cmd:?} for m{m} via m{via}"));
        let now = self.local(via);
        if let Some(a) = self.members[via].agent.as_mut() {
            a.handle_host(
                now,
                HostMsg::Admin {
                    target,
                    command: cmd,
                },
            );
        }
        self.drain(via);
    }

    fn role(&self, m: usize, d: u8) -> Option<Role> {
        self.members[m].agent.as_ref().and_then(|a| a.role(d))
    }

    fn drain(&mut self, m: usize) {
        let mut outs = Vec::new();
        let wake;
        {
            let Some(a) = self.members[m].agent.as_mut() else {
                return;
            };
            while let Some(o) = a.poll_output() {
                outs.push(o);
            }
            wake = a.poll_at();
        }
        for o in outs {
            match o {
                Output::Send { link, bytes } => self.send(m, link, &bytes),
                Output::Host(HostMsg::ProbeRequest { peer }) => {
                    if let Some(p) = self.serials.iter().position(|s| *s == peer) {
                        let (lo, hi) = self.sc.host_delay;
                        let t = self.now + lo + self.rng.rand_range(0..hi - lo + 1);
                        self.log(format!("m{m} probes m{p}"));
                        self.push(t, Ev::Probe { m, peer: p });
                    }
                }
                Output::Host(HostMsg::Roles(roles)) => {
                    let active = roles
                        .iter()
                        .any(|r| r.domain == 0 && r.role == Role::Active);
                    if active {
                        if let (Some(c), None) = (self.crash_at, self.failover_ms) {
                            self.failover_ms = Some(self.now - c);
                        }
                    }
                }
                Output::Host(_) | Output::Led(_) => {}
                Output::Event(e) => self.on_event(m, e.kind),
            }
        }
        self.members[m].gen += 1;
        let gen = self.members[m].gen;
        let t = self.global(m, wake).max(self.now + 1);
        self.push(t, Ev::Wake { m, gen });
    }

    fn on_event(&mut self, m: usize, kind: EventKind) {
        match kind {
            EventKind::RoleChanged {
                domain,
                from,
                to,
                reason,
            } => {
                if matches!(
                    (from, to),
                    (Role::Active, Role::Passive) | (Role::Passive, Role::Active)
                ) {
                    self.role_changes.push((self.now, m, domain));
                }
                self.log(format!("m{m} d{domain} {from:?} -> {to:?} ({reason:?})"));
            }
            EventKind::ForcingChanged { forced } => {
                self.members[m].forced = forced;
                self.log(format!("m{m} forcing {forced:?}"));
            }
            EventKind::Paused { until_ms } => {
                let end = self.global(m, until_ms);
                self.members[m].paused_until = end;
                self.excused_until = self.excused_until.max(end + self.bound_missing);
                self.log(format!("m{m} paused until t={end}"));
            }
            EventKind::Resumed => {
                self.members[m].paused_until = 0;
                self.excused_until = self.excused_until.max(self.now + self.bound_missing);
                self.log(format!("m{m} resumed"));
            }
            other => self.log(format!("m{m} {other:?}")),
        }
    }

    fn send(&mut self, from: usize, link: LinkId, bytes: &[u8]) {
        let n = self.sc.members;
        let links = self.sc.links as usize;
        let l = link.0 as usize;
        if l >= links {
            return;
        }
        for to in 0..n {
            if to == from || self.cut[(from * n + to) * links + l] {
                continue;
            }
            let mut p = *self.sc.link(from, to, link.0);
            if self.spike[from] || self.spike[to] {
                p.loss = 0.7;
            }
            let (times, corrupt) = p.deliveries(&mut self.rng, self.now);
            for t in times.into_iter().flatten() {
                let mut b = bytes.to_vec();
                if corrupt && !b.is_empty() {
                    let i = self.rng.rand_range(0..b.len() as u64) as usize;
                    b[i] ^= 0x20;
                }
                self.push(
                    t,
                    Ev::Frame {
                        to,
                        link: link.0,
                        bytes: b,
                    },
                );
            }
        }
    }

    /// Invariants 2–6, after every event.
    fn check(&mut self) {
        let n = self.sc.members;
        let now = self.now;
        let excused = now < self.excused_until.max(self.net_excused_until);
        // 4a: forced passive is never active.
        for m in 0..n {
            if self.members[m].forced == Forced::Passive
                && (0..self.sc.domains).any(|d| self.role(m, d as u8) == Some(Role::Active))
            {
                self.violate(format!("m{m} is forced passive but active"));
                return;
            }
        }
        let running: Vec<usize> = (0..n)
            .filter(|&m| self.members[m].agent.is_some())
            .collect();
        let booting = running.iter().any(|&m| {
            now < self.members[m].boot_g
                + self.sc.timers.startup_window_ms as u64
                + self.bound_missing
        });
        for d in 0..self.sc.domains {
            let actives: Vec<usize> = running
                .iter()
                .copied()
                .filter(|&m| self.role(m, d as u8) == Some(Role::Active))
                .collect();
            // 2: one active per domain.
            if actives.len() >= 2 && !excused {
                let since = *self.dual_since[d].get_or_insert(now);
                if now - since > self.bound_dual {
                    self.violate(format!(
                        "two actives in domain {d} ({actives:?}) for {} ms (bound {} ms)",
                        now - since,
                        self.bound_dual
                    ));
                    return;
                }
            } else {
                self.dual_since[d] = None;
            }
            // 3: a domain without active is filled.
            let eligible = running
                .iter()
                .any(|&m| self.members[m].forced != Forced::Passive);
            if actives.is_empty() && eligible && !excused {
                let since = *self.missing_since[d].get_or_insert(now);
                let bound = self.bound_missing
                    + if booting {
                        self.sc.timers.startup_window_ms as u64
                    } else {
                        0
                    };
                if now - since > bound {
                    self.violate(format!(
                        "no active in domain {d} for {} ms (bound {bound} ms)",
                        now - since
                    ));
                    return;
                }
            } else {
                self.missing_since[d] = None;
            }
        }
        // 4b: the only forced-active member is active everywhere, alone.
        let fa: Vec<usize> = running
            .iter()
            .copied()
            .filter(|&m| self.members[m].forced == Forced::Active)
            .collect();
        if fa != self.forced_set.0 {
            self.forced_set = (fa.clone(), now);
        }
        if fa.len() == 1 && !excused {
            let m = fa[0];
            let since = self
                .forced_set
                .1
                .max(self.excused_until.max(self.net_excused_until));
            if now > since + self.bound_missing {
                for d in 0..self.sc.domains as u8 {
                    let others = running
                        .iter()
                        .any(|&o| o != m && self.role(o, d) == Some(Role::Active));
                    if self.role(m, d) != Some(Role::Active) || others {
                        self.violate(format!(
                            "m{m} is forced active but not the only active of domain {d}"
                        ));
                        return;
                    }
                }
            }
        }
        // 5: single-link seeds: no swap once settled.
        if self.sc.kind == Kind::SingleLink {
            if let Some(&(t, m, d)) = self.role_changes.last() {
                if t > self.settled_at {
                    self.violate(format!(
                        "m{m} changed role in domain {d} although only one link was cut"
                    ));
                    return;
                }
            }
        }
        // 6: flapping causes a bounded number of swaps.
        if let Some((start, end)) = self.sc.flap {
            let hd = self.sc.timers.hold_down_ms as u64;
            let window_end = end + self.bound_dual;
            let swaps = self
                .role_changes
                .iter()
                .filter(|(t, _, _)| *t >= start && *t <= window_end)
                .count() as u64;
            let allowed = 2 * self.sc.domains as u64 * ((end - start) / hd.max(1) + 2);
            if swaps > allowed {
                self.violate(format!(
                    "{swaps} role changes while an interface flapped (allowed {allowed})"
                ));
            }
        }
    }

    /// Invariant 7, at the end of the liveness phase.
    fn check_final(&mut self) {
        let n = self.sc.members;
        let running: Vec<usize> = (0..n)
            .filter(|&m| self.members[m].agent.is_some())
            .collect();
        let cands: Vec<(usize, Candidate)> = running
            .iter()
            .filter_map(|&m| {
                let a = self.members[m].agent.as_ref()?;
                let s = &a.status().me;
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
        for d in 0..self.sc.domains {
            let actives: Vec<usize> = running
                .iter()
                .copied()
                .filter(|&m| self.role(m, d as u8) == Some(Role::Active))
                .collect();
            let eligible = cands.iter().any(|(_, c)| c.forced != Forced::Passive);
            if !eligible {
                continue;
            }
            if actives.len() != 1 {
                self.violate(format!(
                    "after healing, domain {d} has actives {actives:?} (exactly one expected)"
                ));
                return;
            }
            let prio = |m: usize| {
                if self.sc.preferred[d] == Some(m) {
                    50
                } else {
                    0
                }
            };
            let with_prio = |&(m, c): &(usize, Candidate)| Candidate {
                priority: prio(m),
                ..c
            };
            let act = cands.iter().find(|(m, _)| *m == actives[0]).map(with_prio);
            let top = cands.iter().map(with_prio).max_by_key(election::merit);
            if let (Some(a), Some(t)) = (act, top) {
                if election::merit(&a) < election::merit(&t) {
                    self.violate(format!(
                        "after healing, domain {d} active m{} has merit {:?} but m{} has {:?}",
                        actives[0],
                        election::merit(&a),
                        t.index,
                        election::merit(&t)
                    ));
                    return;
                }
            }
        }
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
