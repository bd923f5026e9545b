//! The stateright [`Model`]: initial state, the environment's actions and how each one moves
//! the real agents.

use ha_agent::event::EventKind;
use ha_agent::{LinkId, Output};
use ha_proto::frame::{open, peek_header};
use ha_proto::keys::Keyring;
use ha_proto::msg::host::{HostMsg, CAP_NUMBERED_PROBES};
use ha_proto::msg::member::MemberMsg;
use ha_proto::msg::Role;
use ha_proto::msg::Serial;
use stateright::{Model, Property};

use crate::config::{ModelAgent, ModelConfig, CLUSTER_ID};
use crate::state::{describe_frame, Frame, Member, Norm, Probe, State, Used};

/// What the environment does next. Indices refer to [`State::inflight`],
/// [`State::probes`] or member positions.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Action {
    /// Advance time to the earliest wake-up of a running agent and tick every agent due.
    Tick,
    /// Deliver an in-flight frame (any one when links reorder, else the oldest of its
    /// channel).
    Deliver(usize),
    /// Lose an in-flight frame.
    Lose(usize),
    /// Duplicate an in-flight frame (the copy may be delivered later).
    Duplicate(usize),
    /// Hold an in-flight frame past the next wake-up (it must still arrive within
    /// `max_delay_ms` of its sending). Frames not held arrive before the next wake-up.
    Delay(usize),
    /// The main CPU answers a probe truthfully: alive if the peer runs.
    ProbeAnswer(usize),
    /// The main CPU answers a probe with what was true when it was asked: the peer ran then
    /// and has crashed since (an "alive" gathered before a crash, delivered after it).
    ProbeAnswerAsAsked(usize),
    /// A probe answer is lost.
    ProbeLost(usize),
    /// A member crashes.
    Crash(usize),
    /// A crashed member boots again, with a higher epoch.
    Restart(usize),
}

/// The model: a cluster of real agents under a bounded, adversarial environment.
pub struct HaModel {
    /// The configuration explored.
    pub cfg: ModelConfig,
    keyring: Keyring,
}

impl HaModel {
    /// A model of `cfg`.
    pub fn new(cfg: ModelConfig) -> Self {
        let keyring = cfg.keyring();
        HaModel { cfg, keyring }
    }

    /// Position of domain `id` in the configuration.
    pub fn domain_index(&self, id: u8) -> Option<usize> {
        self.cfg.domains.iter().position(|d| *d == id)
    }

    /// The time a [`Action::Tick`] would move to, if time may advance: not while a frame
    /// not held late is in flight, nor past a late frame's delivery deadline, a probe's
    /// answer deadline, or the horizon.
    pub fn tick_time(&self, st: &State) -> Option<u64> {
        let wake = (0..st.n())
            .filter_map(|m| st.agent(m).map(|a| a.poll_at()))
            .min()?;
        let t = wake.max(st.now);
        let late_frame = st
            .inflight
            .iter()
            .any(|f| !f.late || f.sent_at + self.cfg.max_delay_ms < t);
        let probe_window = self.cfg.timers.probe_timeout_ms as u64;
        let late_probe = st.probes.iter().any(|p| p.asked_at + probe_window < t);
        let past_horizon = self.cfg.horizon_ms.is_some_and(|h| t > h);
        (!late_frame && !late_probe && !past_horizon).then_some(t)
    }

    fn deliverable(&self, st: &State, i: usize) -> bool {
        if self.cfg.reorder {
            return true;
        }
        let f = &st.inflight[i];
        !st.inflight[..i]
            .iter()
            .any(|g| (g.from, g.to, g.link) == (f.from, f.to, f.link))
    }

    fn boot(&self, st: &mut State, m: usize) {
        let epoch = st.members[m].epoch + 1;
        match ModelAgent::new(self.cfg.agent_config(m), st.now, epoch) {
            Ok(mut a) => {
                if let Some(order) = self.cfg.planted {
                    a.set_merit_order(order);
                }
                if self.cfg.numbered_probes {
                    // Its main CPU says at once that it answers numbered probes.
                    a.handle_host(st.now, HostMsg::Capabilities(CAP_NUMBERED_PROBES));
                }
                let mb = &mut st.members[m];
                mb.agent = Some(a);
                mb.epoch = epoch;
                self.drain(st, m);
            }
            Err(e) => st.breach(format!("m{m} refused its configuration: {e}")),
        }
    }

    /// Drains member `m`'s outputs: frames go in flight, probe requests to the main CPU,
    /// role changes are counted.
    fn drain(&self, st: &mut State, m: usize) {
        let mut outs = Vec::new();
        let Some(a) = st.members[m].agent.as_mut() else {
            return;
        };
        while let Some(o) = a.poll_output() {
            outs.push(o);
        }
        let s = a.status();
        let (dropped, seal_errors) = (s.output_dropped, s.counters.seal_errors);
        if dropped > 0 || seal_errors > 0 {
            st.breach(format!(
                "m{m} dropped {dropped} outputs, {seal_errors} seal errors"
            ));
        }
        for o in outs {
            match o {
                Output::Send { link, bytes } => self.send(st, m, link.0, &bytes),
                Output::Host(HostMsg::ProbeRequest { peer, .. }) => self.asked(st, m, peer, None),
                Output::Host(HostMsg::ProbeAsk { peer, request, .. }) => {
                    self.asked(st, m, peer, Some(request))
                }
                Output::Event(e) => {
                    if let EventKind::RoleChanged { domain, .. } = e.kind {
                        if let Some(d) = self.domain_index(domain) {
                            let k = m * self.cfg.domains.len() + d;
                            st.flips[k] = (st.flips[k] + 1).min(self.cfg.max_flips + 1);
                        }
                    }
                }
                Output::Host(_) | Output::Led(_) => {}
            }
        }
    }

    /// Puts a sealed frame of `from` in flight to every running peer (a crashed one
    /// receives nothing).
    fn send(&self, st: &mut State, from: usize, link: u8, bytes: &[u8]) {
        let Ok(h) = peek_header(bytes) else {
            return st.breach(format!("m{from} sent a frame without a valid header"));
        };
        let mut copy = bytes.to_vec();
        let msg = match open(&self.keyring, CLUSTER_ID, &mut copy) {
            Ok(opened) => opened.decode::<MemberMsg>(),
            Err(e) => Err(e),
        };
        let Ok(msg) = msg else {
            return st.breach(format!("m{from} sent a frame the model cannot open"));
        };
        for to in 0..st.n() {
            if to == from || st.members[to].agent.is_none() {
                continue;
            }
            if st.inflight.len() >= self.cfg.max_inflight {
                return st.breach(format!(
                    "more than {} frames in flight (raise max_inflight)",
                    self.cfg.max_inflight
                ));
            }
            let mut f = Frame {
                from: from as u8,
                to: to as u8,
                link,
                sent_at: st.now,
                late: false,
                accept: false,
                epoch: h.epoch,
                seq: h.seq,
                msg: msg.clone(),
                bytes: bytes.to_vec(),
            };
            f.accept = self.trial(st, &f);
            st.inflight.push(f);
        }
    }

    /// Whether the receiver of `f` would accept it now: delivered to a copy of the receiver
    /// (the agent's own acceptance path: authentication, replay window, binding to its
    /// boot), so the model holds no copy of those rules.
    fn trial(&self, st: &State, f: &Frame) -> bool {
        let Some(a) = st.agent(f.to as usize) else {
            return false;
        };
        let mut copy = a.clone();
        let before = copy.status().counters.received;
        copy.handle_member_frame(st.now, LinkId(f.link), &mut f.bytes.clone());
        copy.status().counters.received != before
    }

    /// Refreshes [`Frame::accept`] of the frames to `to` (after its agent changed).
    fn refresh_accept(&self, st: &mut State, to: usize) {
        for i in 0..st.inflight.len() {
            if st.inflight[i].to as usize == to {
                let a = self.trial(st, &st.inflight[i]);
                st.inflight[i].accept = a;
            }
        }
    }

    /// Records a fault between `a` and the members in `others`.
    fn fault(&self, st: &mut State, a: usize, others: &[usize]) {
        let n = st.n();
        st.last_fault_at = st.now;
        for &b in others {
            st.pair_fault_at[a * n + b] = st.now;
            st.pair_fault_at[b * n + a] = st.now;
        }
        st.flips.iter_mut().for_each(|f| *f = 0);
    }

    /// History the properties read, updated after every action.
    fn settle(&self, st: &mut State) {
        for (d, id) in self.cfg.domains.iter().enumerate() {
            let actives = st.actives(*id);
            if actives.len() >= 2 {
                st.dual_since[d].get_or_insert(st.now);
            } else {
                st.dual_since[d] = None;
            }
            if let Some(c) = st.crashed_active[d] {
                if actives.iter().any(|&m| m != c as usize) {
                    st.failover_seen = true;
                    st.crashed_active[d] = None;
                }
            }
        }
    }

    fn tick(&self, st: &mut State, t: u64) {
        st.now = t;
        for m in 0..st.n() {
            let due = st.agent(m).is_some_and(|a| a.poll_at() <= t);
            if due {
                if let Some(a) = st.members[m].agent.as_mut() {
                    a.handle_timeout(t);
                }
                self.drain(st, m);
                if let Some(w) = st.agent(m).map(|a| a.poll_at()) {
                    if w <= t {
                        st.breach(format!("m{m} asks to wake at {w} ms right after a tick"));
                    }
                }
                self.refresh_accept(st, m);
            }
        }
    }

    fn deliver(&self, st: &mut State, i: usize) {
        let mut f = st.inflight.remove(i);
        let to = f.to as usize;
        let now = st.now;
        let Some(a) = st.members[to].agent.as_mut() else {
            return;
        };
        let expected = f.accept;
        let before = a.status().counters.received;
        a.handle_member_frame(now, LinkId(f.link), &mut f.bytes);
        let accepted = a.status().counters.received != before;
        if accepted != expected {
            st.breach(format!(
                "m{to} {} a frame the model expected it to {} ({})",
                if accepted { "accepted" } else { "rejected" },
                if expected { "accept" } else { "reject" },
                describe_frame(&f)
            ));
        }
        self.drain(st, to);
        self.refresh_accept(st, to);
    }

    /// Member `m` asked its main CPU to probe `peer`.
    fn asked(&self, st: &mut State, m: usize, peer: Serial, request: Option<u16>) {
        match self.cfg.index_of(&peer) {
            Some(p) => {
                let alive_when_asked = st.members[p].agent.is_some();
                st.probes.push(Probe {
                    asker: m as u8,
                    peer: p as u8,
                    asked_at: st.now,
                    request,
                    alive_when_asked,
                })
            }
            None => st.breach(format!("m{m} probes an unknown serial")),
        }
    }

    /// The main CPU answers probe `i`: what is true now, or (`as_asked`) what was true
    /// when it was asked.
    fn probe_answer(&self, st: &mut State, i: usize, as_asked: bool) {
        let p = st.probes.remove(i);
        let (asker, peer) = (p.asker as usize, p.peer as usize);
        let alive = if as_asked {
            p.alive_when_asked
        } else {
            st.members[peer].agent.is_some()
        };
        let now = st.now;
        let serial = self.cfg.serial(peer);
        if let Some(a) = st.members[asker].agent.as_mut() {
            a.handle_host(
                now,
                match p.request {
                    // Both numbered forms reach the agents in every behaviour, as from a
                    // main CPU that takes up the short one (compact frames agreed) between
                    // two answers: the one without the peer names it by the number.
                    Some(request) if as_asked => HostMsg::ProbeVerdict { request, alive },
                    Some(request) => HostMsg::ProbeAnswer {
                        peer: serial,
                        request,
                        alive,
                    },
                    None => HostMsg::ProbeResult {
                        peer: serial,
                        alive,
                    },
                },
            );
            self.drain(st, asker);
            self.refresh_accept(st, asker);
        }
    }

    fn crash(&self, st: &mut State, m: usize) {
        for (d, id) in self.cfg.domains.iter().enumerate() {
            if st.role(m, *id) == Some(Role::Active) {
                st.crashed_active[d] = Some(m as u8);
            }
        }
        st.members[m].agent = None;
        st.probes.retain(|p| p.asker as usize != m);
        st.inflight.retain(|f| f.to as usize != m);
        st.used.crashes += 1;
        let others: Vec<usize> = (0..st.n()).filter(|&o| o != m).collect();
        self.fault(st, m, &others);
    }
}

impl Model for HaModel {
    type State = State;
    type Action = Action;

    fn init_states(&self) -> Vec<State> {
        let n = self.cfg.members;
        let nd = self.cfg.domains.len();
        let mut st = State {
            now: 0,
            members: (0..n)
                .map(|_| Member {
                    agent: None,
                    epoch: 0,
                })
                .collect(),
            inflight: Vec::new(),
            probes: Vec::new(),
            used: Used::default(),
            last_fault_at: 0,
            pair_fault_at: vec![0; n * n],
            dual_since: vec![None; nd],
            flips: vec![0; n * nd],
            crashed_active: vec![None; nd],
            failover_seen: false,
            breach: None,
            norm: Norm::of(&self.cfg),
        };
        for m in 0..n {
            self.boot(&mut st, m);
        }
        // Booting is not a role change the flapping bound should count.
        st.flips.iter_mut().for_each(|f| *f = 0);
        self.settle(&mut st);
        vec![st]
    }

    fn actions(&self, st: &State, actions: &mut Vec<Action>) {
        if st.breach.is_some() {
            return;
        }
        let f = &self.cfg.faults;
        let u = &st.used;
        let spare = u.losses + u.dups + u.crashes + u.probe_losses < f.total;
        if self.tick_time(st).is_some() {
            actions.push(Action::Tick);
        }
        for i in 0..st.inflight.len() {
            if self.deliverable(st, i) {
                actions.push(Action::Deliver(i));
            }
            if spare && u.losses < f.losses {
                actions.push(Action::Lose(i));
            }
            if spare && u.dups < f.dups {
                actions.push(Action::Duplicate(i));
            }
            if u.late < f.late && !st.inflight[i].late {
                actions.push(Action::Delay(i));
            }
        }
        for i in 0..st.probes.len() {
            actions.push(Action::ProbeAnswer(i));
            let p = &st.probes[i];
            if p.alive_when_asked && st.agent(p.peer as usize).is_none() {
                actions.push(Action::ProbeAnswerAsAsked(i));
            }
            if spare && u.probe_losses < f.probe_losses {
                actions.push(Action::ProbeLost(i));
            }
        }
        let running = (0..st.n()).filter(|&m| st.agent(m).is_some()).count();
        for m in 0..st.n() {
            match st.agent(m) {
                Some(_) if spare && u.crashes < f.crashes && running > 1 => {
                    actions.push(Action::Crash(m))
                }
                None => actions.push(Action::Restart(m)),
                Some(_) => {}
            }
        }
    }

    fn next_state(&self, last: &State, action: Action) -> Option<State> {
        let mut st = last.clone();
        match action {
            Action::Tick => {
                let t = self.tick_time(&st)?;
                self.tick(&mut st, t);
            }
            Action::Deliver(i) => self.deliver(&mut st, i),
            Action::Lose(i) => {
                let f = st.inflight.remove(i);
                st.used.losses += 1;
                self.fault(&mut st, f.from as usize, &[f.to as usize]);
            }
            Action::Duplicate(i) => {
                let mut f = st.inflight[i].clone();
                f.late = false;
                st.inflight.push(f);
                st.used.dups += 1;
            }
            Action::Delay(i) => {
                st.inflight[i].late = true;
                st.used.late += 1;
            }
            Action::ProbeAnswer(i) => self.probe_answer(&mut st, i, false),
            Action::ProbeAnswerAsAsked(i) => self.probe_answer(&mut st, i, true),
            Action::ProbeLost(i) => {
                let p = st.probes.remove(i);
                st.used.probe_losses += 1;
                self.fault(&mut st, p.asker as usize, &[p.peer as usize]);
            }
            Action::Crash(m) => self.crash(&mut st, m),
            Action::Restart(m) => {
                st.used.restarts += 1;
                self.boot(&mut st, m);
                let others: Vec<usize> = (0..st.n()).filter(|&o| o != m).collect();
                self.fault(&mut st, m, &others);
            }
        }
        self.settle(&mut st);
        Some(st)
    }

    fn format_action(&self, action: &Action) -> String {
        format!("{action:?}")
    }

    fn properties(&self) -> Vec<Property<Self>> {
        crate::properties::all()
    }

    fn within_boundary(&self, st: &State) -> bool {
        self.cfg.horizon_ms.is_none_or(|h| st.now <= h)
    }
}
