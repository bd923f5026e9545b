//! What one model-checking run explores: the cluster, the timers and the fault bounds.

use ha_agent::config::{Config, Timers};
use ha_agent::election::MeritOrder;
use ha_agent::{Agent, DomainEntry, LinkId, TimerProfile};
use ha_proto::keys::{KeySet, Keyring, Psk};
use ha_proto::msg::Serial;

/// Member capacity of the agents the model runs (configurations use 2 or 3).
pub const MAX_MODEL_MEMBERS: usize = 3;
/// Domain capacity of the agents the model runs (configurations use 1 or 2).
pub const MAX_MODEL_DOMAINS: usize = 2;

/// The agent type the model runs: the real [`Agent`], sized for the model's clusters.
pub type ModelAgent = Agent<MAX_MODEL_MEMBERS, MAX_MODEL_DOMAINS>;

/// Cluster id of the model's members.
pub const CLUSTER_ID: u32 = 0x0D0C;

/// Upper bounds on the faults the environment may inject along one behaviour.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Faults {
    /// Frames lost.
    pub losses: u8,
    /// Frames duplicated (not a fault for the properties: the replay window must absorb it).
    pub dups: u8,
    /// Member crashes (each crashed member may restart once, with a higher epoch).
    pub crashes: u8,
    /// Probe answers lost (the asking member then declares the peer lost).
    pub probe_losses: u8,
    /// Frames held past the next wake-up of any agent (up to `max_delay_ms` after they were
    /// sent). Not a fault: the timer profile tolerates it. Every other frame arrives before
    /// the next wake-up, in any order.
    pub late: u8,
    /// All of the above but `late` together (restarts not counted): bounds how many perturbations
    /// one behaviour combines, which is what the state count grows with.
    pub total: u8,
}

/// One configuration of the model.
#[derive(Clone)]
pub struct ModelConfig {
    /// Short name printed in reports, e.g. `2x1`.
    pub name: String,
    /// Number of members (2 or 3).
    pub members: usize,
    /// Domain ids, deliberately not `0..n` (e.g. `[1, 3]`): code that indexes domains by id
    /// instead of position breaks on them.
    pub domains: Vec<u8>,
    /// Preferred ("active if equal") member per domain, by member position.
    pub preferred: Vec<Option<usize>>,
    /// HA links (1: main only; 2: main and backup).
    pub links: u8,
    /// The agents' timers.
    pub timers: Timers,
    /// Longest time a late frame stays in flight, ms: time does not advance past it.
    pub max_delay_ms: u64,
    /// Any in-flight frame may be delivered next (`true`), or only the oldest of its
    /// (sender, receiver, link) channel (`false`: FIFO links).
    pub reorder: bool,
    /// Fault bounds.
    pub faults: Faults,
    /// Frames in flight at most; exceeding it is reported by the "model bounds" property.
    pub max_inflight: usize,
    /// `Some(h)`: time is part of the state and time stops at `h` ms (bounded, absolute
    /// mode). `None`: states are compared relative to now and the search ends when no new
    /// state appears (unbounded, relative mode). See the crate documentation.
    pub horizon_ms: Option<u64>,
    /// Role changes allowed per member and domain after the last fault.
    pub max_flips: u8,
    /// Replaces [`ModelConfig::recovery_ms`] (to measure the real worst case).
    pub recovery_override_ms: Option<u64>,
    /// Replaces [`ModelConfig::connected_ms`] (to measure the real worst case).
    pub connected_override_ms: Option<u64>,
    /// A merit order planted in every agent (mutation testing); `None`: the real one.
    pub planted: Option<MeritOrder>,
    /// Checker threads.
    pub threads: usize,
    /// The members' main CPUs answer numbered probes (they say so at boot, and the agents
    /// then number their requests); `false`: the unnumbered requests of a main CPU of an
    /// older release.
    pub numbered_probes: bool,
}

impl ModelConfig {
    /// A cluster of `members` members and the given domain ids with the model's default
    /// timers and bounds: interval 10 ms, 3 misses (dead time 30 ms), startup window 40 ms,
    /// hold-down 30 ms, probe timeout 10 ms, reprobe 20 ms; frames reordered; one loss, one
    /// duplication, one crash (and restart), one lost probe answer. Two members: two frames
    /// held past a wake-up (up to 10 ms) and two of the faults in one behaviour; three
    /// members: no frame held late and one fault per behaviour (each more multiplies the
    /// three-member state count by 20 to 40: see the crate documentation for figures).
    /// The first domain prefers member 0 (against the spread tie-break, which favours member
    /// 1 in domain 1), the second the last member (against the spread tie-break with three
    /// members: domain 3 favours member 0), any further one none.
    pub fn new(members: usize, domains: &[u8]) -> Self {
        let profile = TimerProfile::Custom {
            interval_ms: 10,
            miss_limit: 3,
        };
        let timers = Timers {
            profile,
            startup_window_ms: 40,
            hold_down_ms: 30,
            probe_timeout_ms: 10,
            reprobe_ms: 20,
            probe_ms: 5,
            suspect_ms: 20,
        };
        let preferred = (0..domains.len())
            .map(|i| match i {
                0 => Some(0),
                1 => Some(members - 1),
                _ => None,
            })
            .collect();
        ModelConfig {
            name: format!("{members}x{}", domains.len()),
            members,
            domains: domains.to_vec(),
            preferred,
            links: 1,
            timers,
            max_delay_ms: 10,
            reorder: true,
            faults: Faults {
                losses: 1,
                dups: 1,
                crashes: 1,
                probe_losses: 1,
                late: if members <= 2 { 2 } else { 0 },
                total: if members <= 2 { 2 } else { 1 },
            },
            max_inflight: members * (members - 1) * 3 + 2,
            horizon_ms: None,
            max_flips: 3,
            recovery_override_ms: None,
            connected_override_ms: None,
            planted: None,
            threads: 1,
            numbered_probes: true,
        }
    }

    /// The serial of the member at `i`.
    pub fn serial(&self, i: usize) -> Serial {
        Serial::new(&format!("MC{i:02}")).unwrap_or_default()
    }

    /// Position of a serial in the member list.
    pub fn index_of(&self, s: &Serial) -> Option<usize> {
        (0..self.members).find(|&i| self.serial(i) == *s)
    }

    /// The pre-shared key of the model's cluster (random bytes: the agent refuses weak keys).
    pub fn psk(&self) -> Psk {
        Psk([
            0x3c, 0x91, 0x07, 0xe2, 0x5d, 0xa8, 0x4f, 0x16, 0xbb, 0x70, 0x2e, 0xc9, 0x83, 0x1a,
            0xf4, 0x65, 0x0d, 0x9e, 0x57, 0xb2, 0x28, 0xe7, 0x6a, 0x13, 0xcd, 0x44, 0x99, 0x7f,
            0x01, 0xd6, 0x38, 0xae,
        ])
    }

    /// The keys every member seals with (the model opens frames with them to read headers
    /// and contents for its fingerprint).
    pub fn keyring(&self) -> Keyring {
        Keyring::new(KeySet::derive(&self.psk(), CLUSTER_ID, 0))
    }

    /// The agent configuration of member `i`.
    pub fn agent_config(&self, i: usize) -> Config<MAX_MODEL_MEMBERS, MAX_MODEL_DOMAINS> {
        let mut members = heapless::Vec::new();
        for m in 0..self.members {
            let _ = members.push(self.serial(m));
        }
        let mut c = Config::new(CLUSTER_ID, self.psk(), self.serial(i), members);
        c.links = self.links;
        c.timers = self.timers;
        // No sensor source and no main CPU watched: their timeouts (1 s and more) are far
        // beyond the clamp, and the model sends no sensor reports and no keepalives (see
        // the crate documentation).
        c.sensor_timeout_ms = 0;
        c.main_cpu_timeout_ms = 0;
        c.domains.clear();
        for (d, id) in self.domains.iter().enumerate() {
            let _ = c.domains.push(DomainEntry {
                id: *id,
                preferred: self
                    .preferred
                    .get(d)
                    .copied()
                    .flatten()
                    .map(|p| self.serial(p)),
            });
        }
        c
    }

    /// A link's dead time, ms.
    pub fn dead_ms(&self) -> u64 {
        self.timers.profile.dead_ms() as u64
    }

    /// How long two members must have exchanged frames without a fault before two actives
    /// between them are a safety violation: a dead time plus a frame delay.
    pub fn connected_ms(&self) -> u64 {
        self.connected_override_ms
            .unwrap_or(self.dead_ms() + self.max_delay_ms)
    }

    /// Time after the last fault by which every domain must have exactly one active, the
    /// one of best merit: the startup window, a dead time, the probe timeout and a reprobe
    /// period (a silent peer declared lost), the hold-down (a better member takes over), and
    /// two heartbeat intervals and two frame delays of propagation.
    pub fn recovery_ms(&self) -> u64 {
        if let Some(r) = self.recovery_override_ms {
            return r;
        }
        let t = &self.timers;
        let iv = t.profile.interval_ms() as u64;
        t.startup_window_ms as u64
            + self.dead_ms()
            + t.probe_timeout_ms as u64
            + t.reprobe_ms as u64
            + t.hold_down_ms as u64
            + 2 * iv
            + 2 * self.max_delay_ms
    }

    /// Ages and deadlines of the agents beyond this many ms from now behave alike: every
    /// comparison the agent makes is of a time difference against one of its timers or
    /// windows, none longer than this. All but one are `age >= timer` or `deadline <= now`,
    /// for which every age from the timer on behaves alike; the one `age <= window` (a lost
    /// peer's return) is hashed with one more ms (see [`crate::State::digest`]).
    pub fn time_clamp_ms(&self) -> u64 {
        let t = &self.timers;
        let iv = t.profile.interval_ms();
        let longest = [
            iv,
            t.profile.dead_ms(),
            t.startup_window_ms,
            t.hold_down_ms,
            t.probe_timeout_ms,
            t.reprobe_ms,
            t.suspect_ms,
            // A peer declared lost and heard again in the same boot: frames within four
            // of the link's intervals of the first one count towards its return
            // (`Peers::heard`).
            4 * t.link_interval_ms(LinkId::BACKUP),
            // The backup link's own dead time, and the longer wait before a probe while
            // the main link is down (`peers::suspect_after`).
            t.link_dead_ms(LinkId::BACKUP),
            t.suspect_ms + t.link_interval_ms(LinkId::BACKUP) - iv,
        ]
        .into_iter()
        .max()
        .unwrap_or(0) as u64;
        longest.max(self.max_delay_ms)
    }

    /// The CI configurations: 2 members × 1 domain, 2 × 2, 3 × 1, 3 × 2.
    pub fn ci() -> Vec<ModelConfig> {
        vec![
            ModelConfig::new(2, &[1]),
            ModelConfig::new(2, &[1, 3]),
            ModelConfig::new(3, &[1]),
            ModelConfig::new(3, &[1, 3]),
        ]
    }
}
