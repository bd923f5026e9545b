//! The simulation loop: events in time order, the members' agents, their links, their main
//! CPUs and sensor sources; [`crate::invariants`] says what must hold.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use ha_agent::config::Config;
use ha_agent::event::EventKind;
use ha_agent::{Agent, LinkId, Output, SensorKind, SensorReading};
use ha_hal::bridge::REPORT_PERIOD_MS;
use ha_proto::frame::MAX_FRAME_LEN;
use ha_proto::keys::Psk;
use ha_proto::msg::host::{HostMsg, IfaceState};
use ha_proto::msg::member::AdminCommand;
use ha_proto::msg::{Forced, Role, Serial};
use oorandom::Rand64;

use crate::cpu::{MainCpu, Uart};
use crate::invariants::Checker;
use crate::scenario::{Action, Kind, Options, Scenario, MAX_SIM_DOMAINS, MAX_SIM_MEMBERS};

/// The agent type the simulator runs.
pub type SimAgent = Agent<MAX_SIM_MEMBERS, MAX_SIM_DOMAINS>;

/// Trace lines kept for a failure report.
pub(crate) const TRACE_KEEP: usize = 400;

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Ev {
    Wake {
        m: usize,
        gen: u64,
    },
    Frame {
        to: usize,
        link: u8,
        bytes: Vec<u8>,
    },
    Probe {
        m: usize,
        peer: usize,
    },
    /// A host-link frame from member `m`'s controller reaches its main CPU.
    ToCpu {
        m: usize,
        bytes: Vec<u8>,
    },
    /// A host-link frame from member `m`'s main CPU reaches its controller.
    ToController {
        m: usize,
        bytes: Vec<u8>,
    },
    /// Member `m`'s sensor source sends its periodic report.
    Sensors(usize),
    Boot(usize),
    Act(usize),
}

/// The simulated cluster's id.
const CLUSTER_ID: u32 = 0xC1;

/// Odd seeds encrypt every frame (member and host link).
fn encrypt(sc: &Scenario) -> bool {
    sc.seed % 2 == 1
}

/// The simulated cluster's key (random bytes: weak keys are refused by the agent).
const CLUSTER_KEY: [u8; 32] = [
    79, 204, 198, 15, 169, 100, 136, 208, 217, 2, 63, 218, 246, 12, 2, 121, 254, 18, 215, 194, 192,
    99, 229, 9, 42, 57, 169, 187, 79, 249, 188, 221,
];

/// One simulated member.
pub struct Member {
    /// Its controller's agent, while running.
    pub agent: Option<SimAgent>,
    epoch: u32,
    /// When it last booted (global clock).
    pub boot_g: u64,
    gen: u64,
    ifaces: [bool; 3],
    hw: Vec<SensorReading>,
    /// Its forcing, as its events told.
    pub forced: Forced,
    paused_until: u64,
    /// Its main CPU.
    pub cpu: MainCpu,
    /// Its host link, controller → main CPU and back.
    down: Uart,
    up: Uart,
    /// When its host link last lost a frame (global clock).
    pub host_lost_at: u64,
    /// Its sensor source is silenced.
    sensors_off: bool,
    /// What its main CPU last showed (for the trace).
    cpu_shown: String,
    /// The last sensor report its running agent received, or its boot (global clock).
    pub last_report: u64,
}

/// The simulated cluster.
pub struct World<'a> {
    /// The scenario.
    pub sc: &'a Scenario,
    opts: Options,
    rng: Rand64,
    /// Global clock, ms.
    pub now: u64,
    seq: u64,
    queue: BinaryHeap<Reverse<(u64, u64, Ev)>>,
    /// The members.
    pub members: Vec<Member>,
    serials: Vec<Serial>,
    cut: Vec<bool>,
    spike: Vec<bool>,
    data_ok: Vec<bool>,
    pub(crate) trace: VecDeque<String>,
    pub(crate) violation: Option<String>,
    /// Invariants 2–4 are not checked before this time (out-of-tolerance faults, pauses).
    pub excused_until: u64,
    /// Like `excused_until`, for network faults outside the profile's tolerance.
    pub net_excused_until: u64,
    intolerant: bool,
    /// Swaps (active ↔ passive): time, member, domain id.
    pub role_changes: Vec<(u64, usize, u8)>,
    /// When the cluster has settled after boot.
    pub settled_at: u64,
    crash_at: Option<u64>,
    pub(crate) failover_ms: Option<u64>,
    /// Invariant 2's bound, ms.
    pub bound_dual: u64,
    /// Invariant 3's bound, ms.
    pub bound_missing: u64,
}

impl<'a> World<'a> {
    /// The world of scenario `sc`, nothing booted yet.
    pub(crate) fn new(sc: &'a Scenario, opts: Options) -> Self {
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
        let serials: Vec<Serial> = (0..n)
            .map(|i| Serial::new(&format!("SIM{i:02}")).unwrap_or_default())
            .collect();
        let members = serials
            .iter()
            .map(|&serial| Member {
                agent: None,
                epoch: 0,
                boot_g: 0,
                gen: 0,
                ifaces: [true; 3],
                hw: Vec::new(),
                forced: Forced::None,
                paused_until: 0,
                cpu: MainCpu::new(&Psk(CLUSTER_KEY), CLUSTER_ID, serial, 1, encrypt(sc)),
                down: Uart::default(),
                up: Uart::default(),
                host_lost_at: 0,
                sensors_off: false,
                last_report: 0,
                cpu_shown: String::new(),
            })
            .collect();
        let mut w = World {
            sc,
            opts,
            rng: Rand64::new(sc.seed as u128 + 1),
            now: 0,
            seq: 0,
            queue: BinaryHeap::new(),
            members,
            serials,
            cut: vec![false; n * n * sc.links as usize],
            spike: vec![false; n],
            data_ok: vec![true; n * n],
            trace: VecDeque::new(),
            violation: None,
            excused_until: 0,
            net_excused_until: 0,
            intolerant: false,
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

    /// Runs the scenario to its end, checking the invariants.
    pub(crate) fn run(&mut self) {
        let sc = self.sc;
        for m in 0..sc.members {
            let t = sc.boot_at[m];
            self.push(t, Ev::Boot(m));
        }
        for (i, (t, _)) in sc.actions.iter().enumerate() {
            self.push(*t, Ev::Act(i));
        }
        if sc.sensor_timeout_ms != 0 {
            // Each member's sensor source reports periodically from its power-on, whether
            // or not its controller runs.
            for m in 0..sc.members {
                let t = sc.boot_at[m] + self.rng.rand_range(0..REPORT_PERIOD_MS);
                self.push(t, Ev::Sensors(m));
            }
        }
        let mut checker = Checker::new(sc.members, sc.domains(), sc.uart_delay.1);
        self.settled_at = sc.boot_at.iter().max().copied().unwrap_or(0)
            + sc.timers.startup_window_ms as u64
            + self.bound_missing;
        while let Some(Reverse((t, _, ev))) = self.queue.pop() {
            if t > sc.end_at || self.violation.is_some() {
                break;
            }
            self.now = t;
            self.handle(ev);
            let safety = if self.now < sc.heal_at {
                checker.check(self)
            } else {
                Ok(())
            };
            let checked = safety
                .and_then(|()| checker.check_host(self))
                .and_then(|()| Checker::check_sensors(self));
            if let Err(v) = checked {
                self.violate(v);
            }
        }
        self.now = sc.end_at;
        if self.violation.is_none() && sc.kind != Kind::Failover {
            if let Err(v) = Checker::check_final(self) {
                self.violate(v);
            }
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
            Ev::ToCpu { m, mut bytes } => {
                let answer = self.members[m].cpu.receive(&mut bytes);
                self.log_cpu_roles(m);
                if let Some(a) = answer {
                    let (loss, delay) = (self.sc.host_loss, self.sc.uart_delay);
                    match self.members[m]
                        .up
                        .send(&mut self.rng, self.now, loss, delay)
                    {
                        Some(t) => self.push(t, Ev::ToController { m, bytes: a }),
                        None => self.members[m].host_lost_at = self.now,
                    }
                }
            }
            Ev::ToController { m, mut bytes } => {
                let now = self.local(m);
                if let Some(a) = self.members[m].agent.as_mut() {
                    a.handle_host_frame(now, &mut bytes);
                    self.drain(m);
                }
            }
            Ev::Sensors(m) => {
                if !self.members[m].sensors_off {
                    self.report_sensors(m);
                }
                self.push(self.now + REPORT_PERIOD_MS, Ev::Sensors(m));
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
        let mut c = Config::new(CLUSTER_ID, Psk(CLUSTER_KEY), self.serials[m], members);
        c.links = sc.links;
        c.timers = sc.timers;
        c.firmware = sc.firmware[m];
        c.encrypt = encrypt(sc);
        c.sensor_timeout_ms = sc.sensor_timeout_ms;
        c.domains.clear();
        for (d, &id) in sc.domain_ids.iter().enumerate() {
            let _ = c.domains.push(ha_agent::DomainEntry {
                id,
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
        mb.last_report = self.now;
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
        if let Some(a) = self.members[m].agent.as_mut() {
            a.handle_host(0, msg);
        }
        if self.sc.sensor_timeout_ms == 0 {
            // No periodic source: the readings are given once at boot.
            self.report_sensors(m);
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
                let first = self.sc.domain_ids[0];
                let act = (0..n).find(|&m| self.role(m, first) == Some(Role::Active));
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
                // The source reports a change at once, unless it is silent.
                if !self.members[m].sensors_off {
                    self.report_sensors(m);
                }
            }
            Action::SensorSilence { m, on } => {
                self.members[m].sensors_off = on;
                self.log(format!(
                    "m{m} sensor source {}",
                    if on { "SILENT" } else { "reporting again" }
                ));
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

    /// Member `m`'s role in domain `id`, while it runs.
    pub fn role(&self, m: usize, id: u8) -> Option<Role> {
        self.members[m].agent.as_ref().and_then(|a| a.role(id))
    }

    /// The running members.
    pub fn running(&self) -> Vec<usize> {
        (0..self.sc.members)
            .filter(|&m| self.members[m].agent.is_some())
            .collect()
    }

    /// Member `m`'s sensor source reports every reading to its controller, if it runs.
    fn report_sensors(&mut self, m: usize) {
        let now = self.local(m);
        let mb = &mut self.members[m];
        if let Some(a) = mb.agent.as_mut() {
            a.handle_sensor_report(now, &mb.hw);
            mb.last_report = self.now;
            self.drain(m);
        }
    }

    /// A host-link message of member `m`'s controller, sealed by it, on its way to its main
    /// CPU (or lost).
    fn send_to_cpu(&mut self, m: usize, msg: &HostMsg) {
        let mut buf = vec![0u8; MAX_FRAME_LEN];
        let Some(a) = self.members[m].agent.as_mut() else {
            return;
        };
        let Ok(n) = a.seal_host(msg, &mut buf) else {
            self.violate(format!("m{m} cannot seal a host message: {msg:?}"));
            return;
        };
        buf.truncate(n);
        let (loss, delay) = (self.sc.host_loss, self.sc.uart_delay);
        match self.members[m]
            .down
            .send(&mut self.rng, self.now, loss, delay)
        {
            Some(t) => self.push(t, Ev::ToCpu { m, bytes: buf }),
            None => {
                self.members[m].host_lost_at = self.now;
                if matches!(msg, HostMsg::Roles(_)) {
                    self.log(format!("m{m} host link loses a roles report"));
                }
            }
        }
    }

    /// Logs the roles member `m`'s main CPU applies when they change.
    fn log_cpu_roles(&mut self, m: usize) {
        let shown: Vec<(u8, Option<Role>)> = self
            .sc
            .domain_ids
            .iter()
            .map(|&id| (id, self.members[m].cpu.role(id)))
            .collect();
        let key = format!("{shown:?}");
        let told = shown.iter().any(|(_, r)| r.is_some());
        if self.members[m].cpu_shown != key && (told || !self.members[m].cpu_shown.is_empty()) {
            self.log(format!("m{m} main CPU applies {key}"));
            self.members[m].cpu_shown = key;
        }
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
                Output::Host(HostMsg::ProbeRequest { peer, .. }) => {
                    if let Some(p) = self.serials.iter().position(|s| *s == peer) {
                        let (lo, hi) = self.sc.host_delay;
                        let t = self.now + lo + self.rng.rand_range(0..hi - lo + 1);
                        self.log(format!("m{m} probes m{p}"));
                        self.push(t, Ev::Probe { m, peer: p });
                    }
                }
                Output::Host(HostMsg::Roles(roles)) => {
                    let first = self.sc.domain_ids[0];
                    let active = roles
                        .iter()
                        .any(|r| r.domain == first && r.role == Role::Active);
                    if active {
                        if let (Some(c), None) = (self.crash_at, self.failover_ms) {
                            self.failover_ms = Some(self.now - c);
                        }
                    }
                    self.send_to_cpu(m, &HostMsg::Roles(roles));
                }
                // The keepalive that teaches the main CPU this boot goes on the host link
                // too; the other reports do not matter to the invariants.
                Output::Host(msg @ HostMsg::Ping { .. }) => self.send_to_cpu(m, &msg),
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
}
