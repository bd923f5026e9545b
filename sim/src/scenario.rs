//! A seed becomes a scenario: the cluster, its links and a schedule of faults.

use ha_agent::config::Timers;
use ha_agent::TimerProfile;
use ha_agent::{SensorKind, SensorReading};
use ha_proto::msg::member::AdminCommand;
use ha_proto::msg::FirmwareVersion;
use oorandom::Rand64;

use crate::net::LinkParams;

/// Most members a scenario has (`--members` may ask for up to this).
pub const MAX_SIM_MEMBERS: usize = 8;
/// Most domains a scenario has. Their ids are drawn apart in `0..MAX_DOMAINS` (e.g.
/// {14, 1, 3}, in that order), so that indexing domains by position instead of by id shows.
pub const MAX_SIM_DOMAINS: usize = 4;
/// Most loss of a host link (controller ↔ main CPU UART) a seed draws.
pub const MAX_HOST_LOSS: f64 = 0.20;

/// What a seed exercises.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Every kind of fault.
    Mixed,
    /// Only single-link cuts: no role may change after the cluster settled.
    SingleLink,
    /// An interface flapping fast: the number of swaps must stay bounded.
    Flap,
    /// Fast profile, no loss, the active crashes once: measures the takeover time.
    Failover,
}

/// A scheduled action.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Action {
    /// Crash a member.
    Crash(usize),
    /// Crash whichever member is active in domain 0 (if any).
    CrashActive,
    /// Restart a crashed member (no-op if running).
    Restart(usize),
    /// Cut (`true`) or restore one direction of one link.
    Cut {
        /// Sender.
        from: usize,
        /// Receiver.
        to: usize,
        /// Link index.
        link: u8,
        /// Cut or restore.
        cut: bool,
    },
    /// Isolate a member from every peer on every HA link (and the data path if `data`),
    /// or end the isolation.
    Isolate {
        /// The member.
        m: usize,
        /// Also cut the data path (then probes fail: split brain is expected).
        data: bool,
        /// Start or end.
        on: bool,
    },
    /// Raise (or restore) the loss of every link of a member to 70%: out of tolerance.
    LossSpike {
        /// The member.
        m: usize,
        /// Start or end.
        on: bool,
    },
    /// Set interface `iface` of member `m` up or down.
    Iface {
        /// Member.
        m: usize,
        /// Interface index (0 out, 1 in, 2 dmz2).
        iface: usize,
        /// Up?
        up: bool,
    },
    /// Silence (`on`) or wake up member `m`'s sensor source: a silent source sends nothing.
    SensorSilence {
        /// Member.
        m: usize,
        /// Silent from now (`true`) or reporting again.
        on: bool,
    },
    /// A hardware reading on member `m` (reported at once unless its source is silent).
    Hw {
        /// Member.
        m: usize,
        /// The reading.
        reading: SensorReading,
    },
    /// An operator command for member `m`, given on member `via`'s main CPU (relayed over
    /// the HA links when `via != m`).
    Admin {
        /// Target.
        m: usize,
        /// Where the operator typed it.
        via: usize,
        /// Command.
        cmd: AdminCommand,
    },
    /// Start of the liveness phase: heal every network fault, restart crashed members,
    /// resume pauses. Interface, hardware and forcing states stay.
    Heal,
}

/// One seed's world.
#[derive(Clone, Debug)]
pub struct Scenario {
    /// The seed.
    pub seed: u64,
    /// What it exercises.
    pub kind: Kind,
    /// Members.
    pub members: usize,
    /// Domain ids, distinct, below `MAX_DOMAINS`, in configuration order.
    pub domain_ids: Vec<u8>,
    /// HA links (1 or 2).
    pub links: u8,
    /// Timers.
    pub timers: Timers,
    /// Preferred member per domain (same order as `domain_ids`).
    pub preferred: Vec<Option<usize>>,
    /// Link parameters, `[from][to][link]` flattened: `(from * members + to) * links + link`.
    pub net: Vec<LinkParams>,
    /// Clock drift per member, parts per million.
    pub drift_ppm: Vec<i64>,
    /// Boot time per member, ms.
    pub boot_at: Vec<u64>,
    /// Firmware version per member (a different one means fail-soft).
    pub firmware: Vec<FirmwareVersion>,
    /// Main-CPU probe answer delay range, ms.
    pub host_delay: (u64, u64),
    /// Loss of each host link, each direction (0..=[`MAX_HOST_LOSS`]): frames between a
    /// controller and its main CPU (roles, keepalives) are lost with this probability,
    /// delivered in order otherwise (a UART is FIFO).
    pub host_loss: f64,
    /// One-way delay range of a host link, ms.
    pub uart_delay: (u64, u64),
    /// Sensor timeout of every member, ms (0: no sensor source; readings are then given at
    /// boot and on change, never periodically).
    pub sensor_timeout_ms: u32,
    /// Interface weights (out, in, dmz2).
    pub iface_weights: [u16; 3],
    /// Scheduled actions, by time.
    pub actions: Vec<(u64, Action)>,
    /// When the liveness phase starts.
    pub heal_at: u64,
    /// When the run ends (final convergence is checked then).
    pub end_at: u64,
    /// For [`Kind::Flap`]: the flapping period `(start, end)`.
    pub flap: Option<(u64, u64)>,
}

impl Scenario {
    /// Link parameters of `from → to` on `link`.
    pub fn link(&self, from: usize, to: usize, link: u8) -> &LinkParams {
        &self.net[(from * self.members + to) * self.links as usize + link as usize]
    }

    /// Number of domains.
    pub fn domains(&self) -> usize {
        self.domain_ids.len()
    }

    /// Largest one-way delay of any link, ms.
    pub fn max_delay(&self) -> u64 {
        self.net.iter().map(|l| l.max_delay()).max().unwrap_or(0)
    }

    /// Builds the scenario of a seed. `members` fixes the member count; `kind` forces a kind.
    pub fn generate(seed: u64, members: Option<usize>, kind: Option<Kind>) -> Scenario {
        let mut rng = Rand64::new(seed as u128 ^ 0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c834);
        let kind = kind.unwrap_or_else(|| match rng.rand_range(0..100) {
            0..=69 => Kind::Mixed,
            70..=84 => Kind::SingleLink,
            _ => Kind::Flap,
        });
        let failover = kind == Kind::Failover;
        let n = members
            .unwrap_or_else(|| [2, 2, 2, 3, 3, 4][rng.rand_range(0..6) as usize])
            .clamp(1, MAX_SIM_MEMBERS);
        let fast = failover || rng.rand_range(0..100) < 40;
        let profile = if fast {
            TimerProfile::Fast
        } else {
            TimerProfile::Default
        };
        let timers = Timers::for_profile(profile);
        let domains = if failover {
            1
        } else {
            1 + rng.rand_range(0..MAX_SIM_DOMAINS as u64) as usize
        };
        let mut domain_ids: Vec<u8> = Vec::with_capacity(domains);
        while domain_ids.len() < domains {
            let id = rng.rand_range(0..ha_proto::msg::MAX_DOMAINS as u64) as u8;
            if !domain_ids.contains(&id) {
                domain_ids.push(id);
            }
        }
        let links: u8 = if failover || kind == Kind::SingleLink || rng.rand_range(0..100) < 80 {
            2
        } else {
            1
        };
        let preferred = (0..domains)
            .map(|_| {
                (!failover && rng.rand_range(0..3) == 0)
                    .then(|| rng.rand_range(0..n as u64) as usize)
            })
            .collect();
        // Link parameters within what the profile is documented to tolerate.
        let mut net = Vec::with_capacity(n * n * links as usize);
        for _ in 0..n * n * links as usize {
            let p = if failover {
                LinkParams {
                    delay_ms: 1,
                    jitter_ms: 1,
                    loss: 0.0,
                    dup: 0.0,
                    reorder: 0.0,
                    reorder_ms: 0,
                    corrupt: 0.0,
                }
            } else if fast {
                LinkParams {
                    delay_ms: rng.rand_range(0..3),
                    jitter_ms: rng.rand_range(0..2),
                    loss: rng.rand_float() * 0.02,
                    dup: rng.rand_float() * 0.02,
                    reorder: rng.rand_float() * 0.05,
                    reorder_ms: rng.rand_range(0..3),
                    corrupt: rng.rand_float() * 0.002,
                }
            } else {
                let delay = rng.rand_range(0..70);
                let jitter = rng.rand_range(0..20);
                LinkParams {
                    delay_ms: delay,
                    jitter_ms: jitter,
                    loss: rng.rand_float() * 0.20,
                    dup: rng.rand_float() * 0.05,
                    reorder: rng.rand_float() * 0.10,
                    reorder_ms: rng.rand_range(0..(100 - delay - jitter).min(10) + 1),
                    corrupt: rng.rand_float() * 0.002,
                }
            };
            net.push(p);
        }
        let drift_ppm = (0..n)
            .map(|_| rng.rand_range(0..201) as i64 - 100)
            .collect();
        let boot_spread = if fast { 50 } else { 2000 };
        let boot_at = (0..n)
            .map(|_| {
                if failover {
                    0
                } else {
                    rng.rand_range(0..boot_spread)
                }
            })
            .collect();
        let v1 = FirmwareVersion {
            major: 1,
            minor: 0,
            patch: 0,
        };
        let mut firmware = vec![v1; n];
        if !failover && rng.rand_range(0..10) == 0 {
            firmware[0] = FirmwareVersion {
                major: 1,
                minor: 1,
                patch: 0,
            };
        }
        let host_delay = if fast { (1, 4) } else { (5, 100) };
        let host_loss = if failover {
            0.0
        } else {
            rng.rand_float() * MAX_HOST_LOSS
        };
        let uart_delay = (1, 3);
        let sensor_timeout_ms = if failover || rng.rand_range(0..5) == 0 {
            0
        } else if fast {
            1_000 + 100 * rng.rand_range(0..11) as u32
        } else {
            2_000 + 500 * rng.rand_range(0..7) as u32
        };
        let iface_weights = [100, 100, 75];

        // Timeline: settle, safety phase with faults, heal, liveness phase.
        let settle =
            timers.startup_window_ms as u64 + boot_spread + 2 * timers.profile.dead_ms() as u64;
        let safety = if fast { 4_000 } else { 40_000 };
        let heal_at = settle + safety;
        let bound = timers.profile.dead_ms() as u64
            + timers.probe_timeout_ms as u64
            + timers.reprobe_ms as u64
            + timers.hold_down_ms as u64;
        // A member restarted at the heal with a silent sensor source loses its hardware part
        // one sensor timeout later: the run lasts until that settled too.
        let end_at =
            heal_at + timers.startup_window_ms as u64 + 2 * bound + 500 + sensor_timeout_ms as u64;
        let mut actions = Vec::new();
        let mut flap = None;
        let t_in = |rng: &mut Rand64| settle + rng.rand_range(0..safety * 3 / 4);
        let dur = |rng: &mut Rand64| 100 + rng.rand_range(0..safety / 4);
        match kind {
            Kind::Failover => {
                let t = settle + rng.rand_range(0..500);
                actions.push((t, Action::CrashActive));
                let end = t + 600;
                return Scenario {
                    seed,
                    kind,
                    members: n,
                    domain_ids,
                    links,
                    timers,
                    preferred,
                    net,
                    drift_ppm,
                    boot_at,
                    firmware,
                    host_delay,
                    host_loss,
                    uart_delay,
                    sensor_timeout_ms,
                    iface_weights,
                    actions,
                    heal_at: end,
                    end_at: end,
                    flap,
                };
            }
            Kind::SingleLink => {
                for _ in 0..1 + rng.rand_range(0..4) {
                    let t = t_in(&mut rng);
                    let d = dur(&mut rng);
                    let from = rng.rand_range(0..n as u64) as usize;
                    let to = (from + 1 + rng.rand_range(0..(n as u64 - 1).max(1)) as usize) % n;
                    let link = rng.rand_range(0..links as u64) as u8;
                    let both = rng.rand_range(0..2) == 0;
                    // One link at a time: the cuts are serialized by construction below.
                    actions.push((
                        t,
                        Action::Cut {
                            from,
                            to,
                            link,
                            cut: true,
                        },
                    ));
                    if both {
                        actions.push((
                            t,
                            Action::Cut {
                                from: to,
                                to: from,
                                link,
                                cut: true,
                            },
                        ));
                    }
                    actions.push((
                        t + d,
                        Action::Cut {
                            from,
                            to,
                            link,
                            cut: false,
                        },
                    ));
                    actions.push((
                        t + d,
                        Action::Cut {
                            from: to,
                            to: from,
                            link,
                            cut: false,
                        },
                    ));
                    // Serialize: only keep cuts that do not overlap an earlier one.
                }
                serialize_cuts(&mut actions);
            }
            Kind::Flap => {
                let m = rng.rand_range(0..n as u64) as usize;
                let start = t_in(&mut rng);
                let end = start + safety / 4;
                let period = 10 + rng.rand_range(0..timers.hold_down_ms as u64 / 2);
                let mut t = start;
                let mut up = false;
                while t < end {
                    actions.push((t, Action::Iface { m, iface: 1, up }));
                    up = !up;
                    t += period;
                }
                actions.push((
                    end,
                    Action::Iface {
                        m,
                        iface: 1,
                        up: true,
                    },
                ));
                flap = Some((start, end));
            }
            Kind::Mixed => {
                for _ in 0..rng.rand_range(0..7) {
                    let t = t_in(&mut rng);
                    let d = dur(&mut rng);
                    let m = rng.rand_range(0..n as u64) as usize;
                    match rng.rand_range(0..13) {
                        0 => {
                            actions.push((t, Action::CrashActive));
                            for r in 0..n {
                                actions.push((t + d, Action::Restart(r)));
                            }
                        }
                        1 => {
                            actions.push((t, Action::Crash(m)));
                            if rng.rand_range(0..2) == 0 {
                                actions.push((t + d, Action::Restart(m)));
                            }
                        }
                        2 => {
                            let to = (m + 1) % n;
                            let link = rng.rand_range(0..links as u64) as u8;
                            actions.push((
                                t,
                                Action::Cut {
                                    from: m,
                                    to,
                                    link,
                                    cut: true,
                                },
                            ));
                            actions.push((
                                t + d,
                                Action::Cut {
                                    from: m,
                                    to,
                                    link,
                                    cut: false,
                                },
                            ));
                        }
                        3 => {
                            let data = rng.rand_range(0..2) == 0;
                            actions.push((t, Action::Isolate { m, data, on: true }));
                            actions.push((t + d, Action::Isolate { m, data, on: false }));
                        }
                        4 => {
                            actions.push((t, Action::LossSpike { m, on: true }));
                            actions.push((t + d, Action::LossSpike { m, on: false }));
                        }
                        5 | 6 => {
                            let iface = rng.rand_range(0..3) as usize;
                            actions.push((
                                t,
                                Action::Iface {
                                    m,
                                    iface,
                                    up: false,
                                },
                            ));
                            if rng.rand_range(0..2) == 0 {
                                actions.push((t + d, Action::Iface { m, iface, up: true }));
                            }
                        }
                        7 => {
                            let kind = [SensorKind::Psu, SensorKind::Fan, SensorKind::Disk]
                                [rng.rand_range(0..3) as usize];
                            let reading = SensorReading {
                                kind,
                                index: rng.rand_range(0..2) as u8,
                                ok: false,
                            };
                            actions.push((t, Action::Hw { m, reading }));
                        }
                        8 | 9 => {
                            let cmd = [
                                AdminCommand::ForceActive,
                                AdminCommand::ForcePassive,
                                AdminCommand::ResetForcing,
                            ][rng.rand_range(0..3) as usize];
                            let via = rng.rand_range(0..n as u64) as usize;
                            actions.push((t, Action::Admin { m, via, cmd }));
                            if rng.rand_range(0..2) == 0 {
                                actions.push((
                                    t + d,
                                    Action::Admin {
                                        m,
                                        via: m,
                                        cmd: AdminCommand::ResetForcing,
                                    },
                                ));
                            }
                        }
                        10 => {
                            let seconds = if fast {
                                1
                            } else {
                                1 + rng.rand_range(0..8) as u16
                            };
                            actions.push((
                                t,
                                Action::Admin {
                                    m,
                                    via: m,
                                    cmd: AdminCommand::Pause { seconds },
                                },
                            ));
                        }
                        12 => {
                            if sensor_timeout_ms != 0 {
                                actions.push((t, Action::SensorSilence { m, on: true }));
                                if rng.rand_range(0..3) != 0 {
                                    actions.push((t + d, Action::SensorSilence { m, on: false }));
                                }
                            }
                        }
                        _ => {
                            let from = m;
                            let to = (m + 1) % n;
                            for link in 0..links {
                                actions.push((
                                    t,
                                    Action::Cut {
                                        from,
                                        to,
                                        link,
                                        cut: true,
                                    },
                                ));
                                actions.push((
                                    t + d,
                                    Action::Cut {
                                        from,
                                        to,
                                        link,
                                        cut: false,
                                    },
                                ));
                            }
                        }
                    }
                }
            }
        }
        actions.push((heal_at, Action::Heal));
        actions.sort_by_key(|(t, _)| *t);
        Scenario {
            seed,
            kind,
            members: n,
            domain_ids,
            links,
            timers,
            preferred,
            net,
            drift_ppm,
            boot_at,
            firmware,
            host_delay,
            host_loss,
            uart_delay,
            sensor_timeout_ms,
            iface_weights,
            actions,
            heal_at,
            end_at,
            flap,
        }
    }
}

/// Keeps single-link cut episodes that do not overlap an earlier kept one, so at most one
/// link is ever cut.
/// A group of timed actions with its first and last time.
type Episode = (u64, u64, Vec<(u64, Action)>);

fn serialize_cuts(actions: &mut Vec<(u64, Action)>) {
    // Episodes were pushed as groups starting with a cut; rebuild them by start time.
    let mut episodes: Vec<Episode> = Vec::new();
    let mut cur: Vec<(u64, Action)> = Vec::new();
    for a in actions.drain(..) {
        let starts = matches!(a.1, Action::Cut { cut: true, .. })
            && cur
                .iter()
                .any(|(_, x)| matches!(x, Action::Cut { cut: false, .. }));
        if starts {
            episodes.push(episode(std::mem::take(&mut cur)));
        }
        cur.push(a);
    }
    if !cur.is_empty() {
        episodes.push(episode(cur));
    }
    episodes.sort_by_key(|e| e.0);
    let mut busy_until = 0;
    for (start, end, acts) in episodes {
        if start > busy_until {
            busy_until = end;
            actions.extend(acts);
        }
    }
}

fn episode(acts: Vec<(u64, Action)>) -> Episode {
    let start = acts.iter().map(|a| a.0).min().unwrap_or(0);
    let end = acts.iter().map(|a| a.0).max().unwrap_or(0);
    (start, end, acts)
}

/// Run options.
#[derive(Clone, Copy, Default)]
pub struct Options {
    /// Fix the member count.
    pub members: Option<usize>,
    /// Force a scenario kind.
    pub kind: Option<Kind>,
    /// Replace the election's merit order (mutation test).
    pub merit_order: Option<ha_agent::election::MeritOrder>,
}
