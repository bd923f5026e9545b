//! The model's state and its fingerprint (what makes two states "the same" for the checker).
//!
//! A [`State`] holds the real agents (cloned from state to state), the frames in flight, the
//! probes the main CPUs have not answered yet, the faults used so far and the little history
//! the properties need. Its [`Hash`] and [`PartialEq`] do not look at everything it holds:
//! they look at a canonical digest of the part that decides the future, with every time
//! value taken relative to now and clamped (see the crate documentation for why this is
//! sound).

use std::collections::hash_map::DefaultHasher;
use std::fmt;
use std::hash::{Hash, Hasher};

use ha_agent::status::PeerState;
use ha_agent::LedPattern;
use ha_proto::msg::member::MemberMsg;
use ha_proto::msg::{LinkState, Role};

use crate::config::{ModelAgent, ModelConfig};

/// One member: its running agent (`None` while crashed) and what the model knows about it.
#[derive(Clone)]
pub struct Member {
    /// The real agent, `None` while crashed.
    pub agent: Option<ModelAgent>,
    /// Boot epoch of the running agent (the next boot uses a higher one).
    pub epoch: u32,
}

/// A frame on the wire.
#[derive(Clone, Debug)]
pub struct Frame {
    /// Sender position.
    pub from: u8,
    /// Receiver position.
    pub to: u8,
    /// HA link.
    pub link: u8,
    /// When it was sent (model clock, ms).
    pub sent_at: u64,
    /// Held past the next wake-up (see [`crate::model::Action::Delay`]).
    pub late: bool,
    /// Whether the receiver would accept it now (replay window, binding to its boot): found
    /// by delivering it to a copy of the receiver, kept up to date by the model.
    pub accept: bool,
    /// Sender's boot epoch (from the header).
    pub epoch: u32,
    /// Sequence number (from the header).
    pub seq: u64,
    /// The decoded message (for the fingerprint and traces).
    pub msg: MemberMsg,
    /// The sealed bytes, as the agent produced them.
    pub bytes: Vec<u8>,
}

/// A probe request the main CPU has not answered yet.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Probe {
    /// The member that asked.
    pub asker: u8,
    /// The member it asked about.
    pub peer: u8,
    /// When (model clock, ms).
    pub asked_at: u64,
    /// The request's number, when the asker numbers its probes.
    pub request: Option<u16>,
    /// Whether the peer ran when the probe was asked: a main CPU may gather its answer
    /// then and deliver it after the peer crashed ([`crate::model::Action::ProbeAnswerAsAsked`]).
    pub alive_when_asked: bool,
}

/// Faults injected so far along this behaviour.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Used {
    /// Frames lost.
    pub losses: u8,
    /// Frames duplicated.
    pub dups: u8,
    /// Crashes.
    pub crashes: u8,
    /// Restarts.
    pub restarts: u8,
    /// Probe answers lost.
    pub probe_losses: u8,
    /// Frames held past a wake-up.
    pub late: u8,
}

/// Clamps that make the fingerprint finite (copied from the configuration).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Norm {
    /// Agent ages and deadlines beyond this many ms behave alike.
    pub clamp: u64,
    /// Time since the last fault beyond this is all the same to the properties.
    pub fault_clamp: u64,
    /// Time since a pair's last fault beyond this is all the same to the properties.
    pub pair_clamp: u64,
    /// Duration of two actives beyond this is all the same to the properties.
    pub dual_clamp: u64,
    /// A link's dead time: the only duration role ages are compared with.
    pub dead: u64,
    /// Absolute mode: `now` itself is part of the fingerprint.
    pub absolute: bool,
    /// FIFO links: the order of frames within a channel is part of the fingerprint.
    pub fifo: bool,
}

impl Norm {
    /// The clamps of a configuration.
    pub fn of(cfg: &ModelConfig) -> Self {
        Norm {
            clamp: cfg.time_clamp_ms(),
            dead: cfg.dead_ms(),
            fault_clamp: cfg.recovery_ms() + 1,
            pair_clamp: cfg.connected_ms() + 1,
            dual_clamp: cfg.max_delay_ms + 1,
            absolute: cfg.horizon_ms.is_some(),
            fifo: !cfg.reorder,
        }
    }
}

/// A state of the model.
#[derive(Clone)]
pub struct State {
    /// Model clock, ms (every agent's clock: no drift).
    pub now: u64,
    /// Members by position.
    pub members: Vec<Member>,
    /// Frames in flight.
    pub inflight: Vec<Frame>,
    /// Unanswered probe requests.
    pub probes: Vec<Probe>,
    /// Faults used.
    pub used: Used,
    /// When the last fault (loss, lost probe answer, crash, restart) happened.
    pub last_fault_at: u64,
    /// Per ordered pair `a * n + b`: the last fault between `a` and `b` (a frame between
    /// them lost, a probe answer between them lost, either crashed or restarted).
    pub pair_fault_at: Vec<u64>,
    /// Per domain (by position): since when two members or more are active in it.
    pub dual_since: Vec<Option<u64>>,
    /// Per member and domain (`m * domains + d`): role changes since the last fault
    /// (saturating just above the bound).
    pub flips: Vec<u8>,
    /// Per domain: the member that was active in it when it crashed, until another member
    /// becomes active there (then `failover_seen`).
    pub crashed_active: Vec<Option<u8>>,
    /// A crashed active's domain was taken over by another member (reachability check).
    pub failover_seen: bool,
    /// First breach of the agent's contract or of the model's bounds, if any.
    pub breach: Option<String>,
    /// Fingerprint clamps.
    pub norm: Norm,
}

impl State {
    /// Number of members.
    pub fn n(&self) -> usize {
        self.members.len()
    }

    /// The running agent of member `m`.
    pub fn agent(&self, m: usize) -> Option<&ModelAgent> {
        self.members[m].agent.as_ref()
    }

    /// Role of member `m` in domain `id`, `None` while crashed.
    pub fn role(&self, m: usize, id: u8) -> Option<Role> {
        self.agent(m).and_then(|a| a.role(id))
    }

    /// The running members active in domain `id`.
    pub fn actives(&self, id: u8) -> Vec<usize> {
        (0..self.n())
            .filter(|&m| self.role(m, id) == Some(Role::Active))
            .collect()
    }

    /// Records the first breach.
    pub fn breach(&mut self, what: String) {
        if self.breach.is_none() {
            self.breach = Some(format!("t={} {what}", self.now));
        }
    }

    fn rel(&self, t: u64) -> i64 {
        let c = self.norm.clamp as i64;
        (t as i64 - self.now as i64).clamp(-c, c)
    }

    fn age(&self, t: u64, clamp: u64) -> u64 {
        self.now.saturating_sub(t).min(clamp)
    }

    fn hash_frame<H: Hasher>(&self, f: &Frame, h: &mut H) {
        (f.from, f.to, f.link, f.epoch, f.late).hash(h);
        f.accept.hash(h);
        self.age(f.sent_at, self.norm.clamp).hash(h);
        match &f.msg {
            MemberMsg::Heartbeat(hb) => {
                0u8.hash(h);
                (hb.quality, hb.priority, hb.forced, hb.firmware).hash(h);
                (hb.config_revision, hb.paused, hb.uptime_ms == 0).hash(h);
                for r in &hb.roles {
                    (r.domain, r.role, (r.for_ms as u64).min(self.norm.dead)).hash(h);
                }
                hb.links.as_slice().hash(h);
                for x in &hb.heard {
                    (x.member, x.epoch).hash(h);
                }
            }
            MemberMsg::ResyncRequest {
                domain,
                to,
                to_epoch,
            } => (1u8, *domain, *to, *to_epoch).hash(h),
            // The model's agents send nothing else; keep any other message distinct.
            other => (2u8, format!("{other:?}")).hash(h),
        }
    }

    /// An agent's decision-relevant state. Fields only reported (never compared by a
    /// decision) are left out: when a peer or link changed state, peers' role start times,
    /// the boot time, uptimes except "zero", counters and events. Of the rest, own role ages
    /// and peers' announced role durations are only compared with the dead time (collision),
    /// so they are clamped there; a link's last reception only matters while it is up.
    fn hash_agent<H: Hasher>(&self, a: &ModelAgent, h: &mut H) {
        let dead = self.norm.dead;
        let s = a.status();
        let me = s.me;
        for r in s.roles {
            (r.domain, r.role, self.age(r.since_ms, dead)).hash(h);
        }
        (
            me.forced,
            me.quality,
            me.interface_quality,
            me.hardware_quality,
        )
            .hash(h);
        (me.config_revision, me.config_synced, me.epoch).hash(h);
        (me.frozen, me.fail_soft, me.conflict).hash(h);
        (s.sensors_silent, s.main_cpu_lost).hash(h);
        me.paused_until_ms.map(|t| self.rel(t)).hash(h);
        for p in s.peers {
            (p.index, p.epoch, p.forced, p.firmware, p.quality).hash(h);
            (p.config_revision, p.paused, p.uptime_ms == 0, p.fail_soft).hash(h);
            // A lost peer heard again in the same boot: its return is counted from then while
            // `age <= 4 intervals` (within the clamp): one more ms keeps an age equal to the
            // window apart from those beyond it.
            p.returning_since_ms
                .map(|t| self.age(t, self.norm.clamp + 1))
                .hash(h);
            match p.state {
                PeerState::Unknown => 0i64.hash(h),
                PeerState::Alive => 1i64.hash(h),
                PeerState::Suspect {
                    deadline_ms,
                    give_up_ms,
                } => (2i64, self.rel(deadline_ms), self.rel(give_up_ms)).hash(h),
                PeerState::Unreachable { next_probe_ms } => (3i64, self.rel(next_probe_ms)).hash(h),
                PeerState::Lost => 4i64.hash(h),
            }
            for r in &p.roles {
                (r.domain, r.role).hash(h);
            }
            for f in &p.role_for_ms {
                (*f as u64).min(dead).hash(h);
            }
            for l in &p.links {
                l.state.hash(h);
                if l.state == LinkState::Up {
                    l.last_rx_ms.map(|t| self.age(t, self.norm.clamp)).hash(h);
                }
            }
        }
        for t in a.private_timers() {
            t.map(|t| self.rel(t)).hash(h);
        }
        match a.led() {
            LedPattern::Off => (0u16, 0u16).hash(h),
            LedPattern::Steady => (1u16, 0u16).hash(h),
            LedPattern::Blink { on_ms, off_ms } => (on_ms, off_ms).hash(h),
        }
    }

    /// The canonical digest: equal digests mean states the checker treats as one.
    pub fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.hash_canonical(&mut h);
        h.finish()
    }

    fn hash_canonical<H: Hasher>(&self, h: &mut H) {
        if self.norm.absolute {
            self.now.hash(h);
        }
        for m in &self.members {
            m.epoch.hash(h);
            match &m.agent {
                None => false.hash(h),
                Some(a) => {
                    true.hash(h);
                    self.hash_agent(a, h);
                }
            }
        }
        // In-flight frames and probes form multisets: hash each, sort, then hash the list.
        // On FIFO links, frames of one channel keep their order (a stable sort by channel).
        let mut frames: Vec<(u8, u8, u8, u64)> = self
            .inflight
            .iter()
            .map(|f| {
                let mut fh = DefaultHasher::new();
                self.hash_frame(f, &mut fh);
                (f.from, f.to, f.link, fh.finish())
            })
            .collect();
        if self.norm.fifo {
            frames.sort_by_key(|&(a, b, l, _)| (a, b, l));
        } else {
            frames.sort_unstable();
        }
        frames.hash(h);
        let mut probes: Vec<(u8, u8, u64)> = self
            .probes
            .iter()
            .map(|p| (p.asker, p.peer, self.age(p.asked_at, self.norm.clamp)))
            .collect();
        probes.sort_unstable();
        probes.hash(h);
        self.used.hash(h);
        self.age(self.last_fault_at, self.norm.fault_clamp).hash(h);
        for t in &self.pair_fault_at {
            self.age(*t, self.norm.pair_clamp).hash(h);
        }
        for d in &self.dual_since {
            d.map(|t| self.age(t, self.norm.dual_clamp)).hash(h);
        }
        self.flips.hash(h);
        // `crashed_active` and `failover_seen` only feed the reachability witness: leaving
        // them out can only hide that example (a reported failure), never a counterexample.
        self.breach.is_some().hash(h);
    }
}

impl Hash for State {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.hash_canonical(h);
    }
}

impl PartialEq for State {
    fn eq(&self, other: &Self) -> bool {
        self.digest() == other.digest()
    }
}

impl fmt::Debug for State {
    /// One line per member (roles per domain), then the frames in flight and the probes.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "t={} used={:?}", self.now, self.used)?;
        for (i, m) in self.members.iter().enumerate() {
            match &m.agent {
                None => writeln!(f, "  m{i}: crashed (epoch {})", m.epoch)?,
                Some(a) => {
                    let roles: Vec<String> = a
                        .status()
                        .roles
                        .iter()
                        .map(|r| format!("d{}={:?}", r.domain, r.role))
                        .collect();
                    let peers: Vec<String> = a
                        .status()
                        .peers
                        .iter()
                        .map(|p| format!("m{}:{}", p.index, peer_state(&p.state)))
                        .collect();
                    writeln!(
                        f,
                        "  m{i}: {} peers [{}] poll_at={}",
                        roles.join(" "),
                        peers.join(" "),
                        a.poll_at()
                    )?;
                }
            }
        }
        for fr in &self.inflight {
            writeln!(f, "  frame {}", describe_frame(fr))?;
        }
        for p in &self.probes {
            writeln!(
                f,
                "  probe m{} asks about m{} (t={})",
                p.asker, p.peer, p.asked_at
            )?;
        }
        if let Some(b) = &self.breach {
            writeln!(f, "  BREACH {b}")?;
        }
        Ok(())
    }
}

/// A short name of a peer state.
pub fn peer_state(s: &PeerState) -> &'static str {
    match s {
        PeerState::Unknown => "unknown",
        PeerState::Alive => "alive",
        PeerState::Suspect { .. } => "suspect",
        PeerState::Unreachable { .. } => "unreachable",
        PeerState::Lost => "lost",
    }
}

/// One line describing a frame: channel, send time, and its roles if it is a heartbeat.
pub fn describe_frame(f: &Frame) -> String {
    let what = match &f.msg {
        MemberMsg::Heartbeat(hb) => {
            let roles: Vec<String> = hb
                .roles
                .iter()
                .map(|r| format!("d{}={:?}", r.domain, r.role))
                .collect();
            format!("heartbeat [{}]", roles.join(" "))
        }
        other => format!("{other:?}"),
    };
    format!(
        "m{}->m{} link {} sent t={}{} epoch {} seq {}: {what}",
        f.from,
        f.to,
        f.link,
        f.sent_at,
        if f.late { " (late)" } else { "" },
        f.epoch,
        f.seq
    )
}
