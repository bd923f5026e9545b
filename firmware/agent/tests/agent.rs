//! Behaviour of the agent, driven through its public API by a small lock-step harness:
//! members exchange real sealed frames, instantly, on links that can be cut.

use ha_agent::config::{Config, ConfigError, Timers};
use ha_agent::event::{EventKind, Reason};
use ha_agent::status::PeerState;
use ha_agent::Reject;
use ha_agent::{Agent, LedPattern, LinkId, Output};
use ha_agent::{DomainEntry, SensorKind, SensorReading, TimerProfile};
use ha_proto::keys::Psk;
use ha_proto::msg::host::{HostMsg, IfaceState};
use ha_proto::msg::member::AdminCommand;
use ha_proto::msg::{FirmwareVersion, Forced, Role, Serial};

type A = Agent<4, 2>;

fn serial(i: usize) -> Serial {
    Serial::new(&format!("SN{i:03}")).unwrap()
}

/// The cluster key of these tests (random bytes: weak keys are refused).
const KEY: [u8; 32] = [
    79, 204, 198, 15, 169, 100, 136, 208, 217, 2, 63, 218, 246, 12, 2, 121, 254, 18, 215, 194, 192,
    99, 229, 9, 42, 57, 169, 187, 79, 249, 188, 221,
];
/// Another strong key (a stranger's, or the next key of a rollover).
const OTHER_KEY: [u8; 32] = [
    148, 211, 98, 190, 85, 185, 119, 216, 168, 244, 196, 124, 61, 26, 207, 254, 228, 120, 234, 147,
    40, 232, 200, 231, 16, 119, 200, 247, 47, 102, 116, 61,
];

fn config(me: usize, n: usize) -> Config<4, 2> {
    let members = (0..n).map(serial).collect();
    let mut c = Config::new(42, Psk(KEY), serial(me), members);
    c.links = 2;
    c.timers = Timers::for_profile(TimerProfile::Fast);
    c
}

/// Members in lock step: every output frame is delivered at once on links not cut.
struct Cluster {
    now: u64,
    agents: Vec<Option<A>>,
    /// `cut[from][link]`: frames sent by `from` on `link` are dropped.
    cut: Vec<[bool; 2]>,
    /// Probe answers given by the simulated main CPU: `alive[peer]`.
    alive: Vec<bool>,
    /// Answer probes at all (false: the main CPU is silent).
    answer_probes: bool,
    events: Vec<(usize, EventKind)>,
    host: Vec<(usize, HostMsg)>,
    leds: Vec<(usize, LedPattern)>,
    frames: Vec<(usize, LinkId, Vec<u8>)>,
}

impl Cluster {
    fn new(configs: Vec<Config<4, 2>>) -> Self {
        let n = configs.len();
        let agents = configs
            .into_iter()
            .map(|c| Some(A::new(c, 0, 1).unwrap()))
            .collect();
        let mut c = Cluster {
            now: 0,
            agents,
            cut: vec![[false; 2]; n],
            alive: vec![true; n],
            answer_probes: true,
            events: Vec::new(),
            host: Vec::new(),
            leds: Vec::new(),
            frames: Vec::new(),
        };
        c.pump();
        c
    }

    fn pair() -> Self {
        Self::new(vec![config(0, 2), config(1, 2)])
    }

    fn a(&self, i: usize) -> &A {
        self.agents[i].as_ref().unwrap()
    }

    fn role(&self, i: usize) -> Role {
        self.a(i).role(0).unwrap()
    }

    fn with(&mut self, i: usize, f: impl FnOnce(&mut A, u64)) {
        let now = self.now;
        if let Some(a) = self.agents[i].as_mut() {
            f(a, now);
        }
        self.pump();
    }

    /// Delivers outputs until quiet.
    fn pump(&mut self) {
        for _ in 0..1000 {
            let mut any = false;
            for i in 0..self.agents.len() {
                let mut outs = Vec::new();
                if let Some(a) = self.agents[i].as_mut() {
                    while let Some(o) = a.poll_output() {
                        outs.push(o);
                    }
                }
                for o in outs {
                    any = true;
                    match o {
                        Output::Send { link, bytes } => {
                            self.frames.push((i, link, bytes.to_vec()));
                            if self.cut[i][link.0 as usize] {
                                continue;
                            }
                            for j in 0..self.agents.len() {
                                if j != i {
                                    let mut b = bytes.to_vec();
                                    let now = self.now;
                                    if let Some(a) = self.agents[j].as_mut() {
                                        a.handle_member_frame(now, link, &mut b);
                                    }
                                }
                            }
                        }
                        Output::Host(HostMsg::ProbeRequest { peer }) if self.answer_probes => {
                            let p = (0..self.agents.len()).find(|&k| serial(k) == peer).unwrap();
                            let alive = self.alive[p] && self.agents[p].is_some();
                            let now = self.now;
                            self.host.push((i, HostMsg::ProbeRequest { peer }));
                            if let Some(a) = self.agents[i].as_mut() {
                                a.handle_host(now, HostMsg::ProbeResult { peer, alive });
                            }
                        }
                        Output::Host(m) => self.host.push((i, m)),
                        Output::Led(l) => self.leds.push((i, l)),
                        Output::Event(e) => self.events.push((i, e.kind)),
                    }
                }
            }
            if !any {
                return;
            }
        }
        panic!("outputs never settle");
    }

    /// Advances time to `until`, ticking every agent at each of its wake-ups.
    fn run_until(&mut self, until: u64) {
        loop {
            let next = self
                .agents
                .iter()
                .flatten()
                .map(|a| a.poll_at())
                .min()
                .unwrap_or(until)
                .max(self.now + 1);
            if next > until {
                self.now = until;
                break;
            }
            self.now = next;
            for i in 0..self.agents.len() {
                let now = self.now;
                if let Some(a) = self.agents[i].as_mut() {
                    if a.poll_at() <= now {
                        a.handle_timeout(now);
                    }
                }
            }
            self.pump();
        }
    }

    fn events_of(&self, i: usize) -> Vec<EventKind> {
        self.events
            .iter()
            .filter(|(m, _)| *m == i)
            .map(|(_, e)| *e)
            .collect()
    }
}

fn iface(name: &str, up: bool, weight: u16) -> IfaceState {
    let mut n = heapless::String::new();
    n.push_str(name).unwrap();
    IfaceState {
        name: n,
        up,
        weight,
        aggregate: None,
    }
}

fn ifaces(list: &[(&str, bool, u16)]) -> HostMsg {
    HostMsg::Interfaces(list.iter().map(|(n, u, w)| iface(n, *u, *w)).collect())
}

#[test]
fn pair_elects_one_active_by_spread_and_leds_follow() {
    let mut c = Cluster::pair();
    c.run_until(1000);
    assert_eq!(c.role(0), Role::Active);
    assert_eq!(c.role(1), Role::Passive);
    assert_eq!(c.a(0).led(), LedPattern::Steady);
    assert_eq!(c.a(1).led(), LedPattern::PASSIVE);
    // The main CPU was told, by domain id: starting, then active (re-asserted since).
    let mut decisions: Vec<_> = c
        .host
        .iter()
        .filter_map(|(m, h)| match h {
            HostMsg::Roles(r) if *m == 0 => Some(r.iter().map(|d| (d.domain, d.role)).collect()),
            _ => None,
        })
        .collect::<Vec<Vec<_>>>();
    decisions.dedup();
    assert_eq!(
        decisions,
        vec![vec![(0, Role::Starting)], vec![(0, Role::Active)]]
    );
    assert_eq!(c.a(0).status().peers[0].state, PeerState::Alive);
}

#[test]
fn alone_after_startup_window_becomes_active() {
    let mut a = A::new(config(1, 2), 0, 1).unwrap();
    let window = a.config().timers.startup_window_ms as u64;
    a.handle_timeout(window - 1);
    assert_eq!(a.role(0), Some(Role::Starting));
    a.handle_timeout(window);
    assert_eq!(a.role(0), Some(Role::Active));
}

#[test]
fn seeds_quality_example_and_better_quality_takes_over_after_hold_down() {
    let mut c = Cluster::pair();
    c.run_until(500);
    c.with(0, |a, now| {
        a.handle_host(
            now,
            ifaces(&[("out", true, 100), ("in", false, 100), ("dmz2", true, 75)]),
        )
    });
    assert_eq!(c.a(0).status().me.quality, 63);
    assert_eq!(c.a(1).status().peers[0].quality, 63);
    let hold = c.a(1).config().timers.hold_down_ms as u64;
    c.run_until(500 + hold - 20);
    assert_eq!(c.role(0), Role::Active, "no takeover before the hold-down");
    c.run_until(500 + hold + 20);
    assert_eq!(c.role(1), Role::Active);
    assert_eq!(c.role(0), Role::Passive);
    assert!(c.events_of(1).contains(&EventKind::RoleChanged {
        domain: 0,
        from: Role::Passive,
        to: Role::Active,
        reason: Reason::Better
    }));
    // Quality back to 100: equal quality, the running active stays.
    c.with(0, |a, now| {
        a.handle_host(now, ifaces(&[("out", true, 100)]))
    });
    c.run_until(500 + 3 * hold);
    assert_eq!(c.role(1), Role::Active);
}

#[test]
fn priority_breaks_quality_ties() {
    let mut cfgs = vec![config(0, 2), config(1, 2)];
    for c in cfgs.iter_mut() {
        c.domains[0].preferred = Some(serial(1));
    }
    let mut c = Cluster::new(cfgs);
    c.run_until(300);
    assert_eq!(
        c.role(1),
        Role::Active,
        "the preferred member wins on equal quality"
    );
    assert_eq!(c.a(1).config().priority_in(0, &serial(1)), 50);
    // Higher quality still beats priority.
    c.with(1, |a, now| {
        a.handle_sensor_report(
            now,
            &[SensorReading {
                kind: SensorKind::Psu,
                index: 0,
                ok: false,
            }],
        )
    });
    c.with(1, |a, now| {
        a.handle_sensor_report(
            now,
            &[SensorReading {
                kind: SensorKind::Psu,
                index: 1,
                ok: true,
            }],
        )
    });
    assert_eq!(c.a(1).status().me.quality, 50);
    c.run_until(2000);
    assert_eq!(c.role(0), Role::Active);
}

#[test]
fn forcing_is_obeyed_and_reset() {
    let mut c = Cluster::pair();
    c.run_until(300);
    assert_eq!(c.role(0), Role::Active);
    // Force the passive active, through the other member's main CPU (relayed over the links).
    c.with(0, |a, now| {
        a.handle_host(
            now,
            HostMsg::Admin {
                target: Some(serial(1)),
                command: AdminCommand::ForceActive,
            },
        )
    });
    assert_eq!(c.a(1).status().me.forced, Forced::Active);
    assert_eq!(
        c.role(1),
        Role::Active,
        "forcing acts at once, without hold-down"
    );
    assert_eq!(c.role(0), Role::Passive);
    // Even with a worse quality.
    c.with(1, |a, now| {
        a.handle_host(now, ifaces(&[("out", false, 100), ("in", true, 100)]))
    });
    c.run_until(3000);
    assert_eq!(c.role(1), Role::Active);
    // Reset: the better member takes over after the hold-down.
    c.with(1, |a, now| {
        a.handle_host(
            now,
            HostMsg::Admin {
                target: None,
                command: AdminCommand::ResetForcing,
            },
        )
    });
    c.run_until(5000);
    assert_eq!(c.role(0), Role::Active);
    // Forced passive steps down at once, even if alone.
    c.with(0, |a, now| {
        a.handle_host(
            now,
            HostMsg::Admin {
                target: None,
                command: AdminCommand::ForcePassive,
            },
        )
    });
    assert_eq!(c.role(0), Role::Passive);
    assert_eq!(c.role(1), Role::Active);
}

#[test]
fn single_link_loss_is_an_event_not_a_swap() {
    let mut c = Cluster::pair();
    c.run_until(300);
    c.cut[0][0] = true;
    c.run_until(2000);
    assert_eq!(c.role(0), Role::Active);
    assert_eq!(c.role(1), Role::Passive);
    assert!(c.events_of(1).contains(&EventKind::LinkDown {
        peer: serial(0),
        link: LinkId::MAIN
    }));
    assert_eq!(c.a(1).status().peers[0].state, PeerState::Alive);
    assert!(!c
        .host
        .iter()
        .any(|(_, h)| matches!(h, HostMsg::ProbeRequest { .. })));
}

#[test]
fn all_links_down_probes_first_and_alive_peer_is_not_replaced() {
    let mut c = Cluster::pair();
    c.run_until(300);
    c.cut[0] = [true, true];
    c.run_until(2000);
    assert!(c
        .host
        .iter()
        .any(|(m, h)| *m == 1 && matches!(h, HostMsg::ProbeRequest { .. })));
    assert_eq!(
        c.role(1),
        Role::Passive,
        "the probe said the active is alive"
    );
    assert!(matches!(
        c.a(1).status().peers[0].state,
        PeerState::Unreachable { .. } | PeerState::Suspect { .. }
    ));
    assert!(c
        .events_of(1)
        .contains(&EventKind::PeerUnreachable { peer: serial(0) }));
}

#[test]
fn dead_active_is_replaced_after_confirmation() {
    let mut c = Cluster::pair();
    c.run_until(300);
    c.agents[0] = None;
    let dead = TimerProfile::Fast.dead_ms() as u64;
    c.run_until(300 + dead + 15);
    assert_eq!(c.role(1), Role::Active);
    assert!(c.events_of(1).contains(&EventKind::PeerLost {
        peer: serial(0),
        confirmed: true
    }));
}

#[test]
fn silent_main_cpu_bounds_the_probe_wait() {
    let mut c = Cluster::pair();
    c.answer_probes = false;
    c.run_until(300);
    c.agents[0] = None;
    let t = c.a(1).config().timers;
    c.run_until(300 + (t.profile.dead_ms() + t.probe_timeout_ms) as u64 + 15);
    assert_eq!(c.role(1), Role::Active);
    assert!(c.events_of(1).contains(&EventKind::PeerLost {
        peer: serial(0),
        confirmed: false
    }));
}

#[test]
fn collision_after_partition_is_resolved_and_loser_asks_resync() {
    let mut c = Cluster::pair();
    c.run_until(300);
    // Partition, and the data path too: both go active.
    c.cut = vec![[true, true]; 2];
    c.alive = vec![false; 2];
    c.run_until(1000);
    assert_eq!((c.role(0), c.role(1)), (Role::Active, Role::Active));
    c.cut = vec![[false, false]; 2];
    c.alive = vec![true; 2];
    c.run_until(1100);
    assert_eq!((c.role(0), c.role(1)), (Role::Active, Role::Passive));
    assert!(c.events_of(1).contains(&EventKind::Collision {
        domain: 0,
        peer: serial(0),
        won: false
    }));
    assert!(c.events_of(0).contains(&EventKind::Collision {
        domain: 0,
        peer: serial(1),
        won: true
    }));
    assert!(c.events_of(0).contains(&EventKind::ResyncRequested {
        domain: 0,
        by: serial(1)
    }));
}

#[test]
fn pause_freezes_decisions_and_resumes_by_itself() {
    let mut c = Cluster::pair();
    c.run_until(300);
    c.with(1, |a, now| {
        a.handle_host(
            now,
            HostMsg::Admin {
                target: None,
                command: AdminCommand::Pause { seconds: 2 },
            },
        )
    });
    assert!(
        c.a(0).status().me.frozen,
        "a peer's pause freezes this member too"
    );
    c.with(0, |a, now| {
        a.handle_host(now, ifaces(&[("out", false, 100)]))
    });
    c.run_until(2200);
    assert_eq!(c.role(0), Role::Active, "no swap while paused");
    let hold = c.a(1).config().timers.hold_down_ms as u64;
    c.run_until(2300 + hold + 50);
    assert_eq!(c.role(1), Role::Active, "decisions resume after the pause");
    assert!(c.events_of(1).contains(&EventKind::Resumed));
}

#[test]
fn pause_is_bounded() {
    let mut a = A::new(config(0, 1), 0, 1).unwrap();
    a.handle_host(
        10,
        HostMsg::Admin {
            target: None,
            command: AdminCommand::Pause { seconds: u16::MAX },
        },
    );
    assert_eq!(
        a.status().me.paused_until_ms,
        Some(10 + ha_agent::config::MAX_PAUSE_MS)
    );
}

#[test]
fn fail_soft_tolerates_and_reports_other_versions() {
    let mut cfgs = vec![config(0, 2), config(1, 2)];
    cfgs[1].firmware = FirmwareVersion {
        major: 1,
        minor: 2,
        patch: 0,
    };
    let mut c = Cluster::new(cfgs);
    c.run_until(300);
    assert_eq!(c.role(0), Role::Active);
    assert_eq!(c.role(1), Role::Passive);
    assert!(c.a(0).status().me.fail_soft);
    assert!(c.a(0).status().peers[0].fail_soft);
    assert!(c
        .events_of(0)
        .iter()
        .any(|e| matches!(e, EventKind::VersionMismatch { .. })));
}

#[test]
fn domains_spread_actives_over_members() {
    let mut cfgs = vec![config(0, 2), config(1, 2)];
    for c in cfgs.iter_mut() {
        c.domains
            .push(DomainEntry {
                id: 1,
                preferred: None,
            })
            .unwrap();
    }
    let mut c = Cluster::new(cfgs);
    c.run_until(300);
    assert_eq!(c.a(0).role(0), Some(Role::Active));
    assert_eq!(c.a(1).role(1), Some(Role::Active));
    assert_eq!(c.a(0).role(1), Some(Role::Passive));
    assert_eq!(c.a(1).role(0), Some(Role::Passive));
}

#[test]
fn bad_frames_are_rejected_and_counted_per_reason() {
    let mut c = Cluster::pair();
    c.run_until(50);
    let (from, link, frame) = c.frames.iter().find(|f| f.0 == 0).cloned().unwrap();
    assert_eq!(from, 0);
    let b = c.agents[1].as_mut().unwrap();
    // Replay of an accepted frame.
    b.handle_member_frame(60, link, &mut frame.clone());
    // Corrupted.
    let mut bad = frame.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    b.handle_member_frame(60, link, &mut bad);
    // Garbage and a frame on a link that does not exist.
    b.handle_member_frame(60, link, &mut [1, 2, 3]);
    b.handle_member_frame(60, LinkId(7), &mut frame.clone());
    // Its own frame coming back.
    let own = c.frames.iter().find(|f| f.0 == 1).cloned().unwrap();
    let b = c.agents[1].as_mut().unwrap();
    b.handle_member_frame(60, own.1, &mut own.2.clone());
    let k = &b.status().counters;
    assert_eq!(k.rejected(Reject::Replay), 1);
    assert_eq!(k.rejected(Reject::BadTag), 1);
    assert_eq!(k.rejected(Reject::Truncated), 1);
    assert_eq!(k.rejected(Reject::UnknownLink), 1);
    assert_eq!(k.rejected(Reject::OwnFrame), 1);
    assert_eq!(k.rejected_total(), 5);
    assert!(k.received > 0);
}

#[test]
fn frames_from_another_cluster_or_key_are_rejected() {
    let mut stranger = A::new(
        {
            let mut c = config(0, 2);
            c.psk = Psk(OTHER_KEY);
            c
        },
        0,
        1,
    )
    .unwrap();
    let mut b = A::new(config(1, 2), 0, 1).unwrap();
    while let Some(o) = stranger.poll_output() {
        if let Output::Send { link, bytes } = o {
            b.handle_member_frame(1, link, &mut bytes.to_vec());
        }
    }
    assert!(b.status().counters.rejected(Reject::BadTag) >= 1);
    assert_eq!(b.status().peers[0].state, PeerState::Unknown);
}

#[test]
fn encrypted_mode_interoperates() {
    let mut cfgs = vec![config(0, 2), config(1, 2)];
    for c in cfgs.iter_mut() {
        c.encrypt = true;
    }
    let mut c = Cluster::new(cfgs);
    c.run_until(300);
    assert_eq!((c.role(0), c.role(1)), (Role::Active, Role::Passive));
    let (_, _, f) = &c.frames[0];
    assert_eq!(f[4] & 1, 1, "AEAD flag set");
}

#[test]
fn config_errors_are_clear() {
    let mut c = config(0, 2);
    c.members.push(serial(0)).unwrap();
    assert_eq!(c.validate(), Err(ConfigError::DuplicateMember(serial(0))));
    let mut c = config(0, 2);
    c.me = serial(3);
    assert_eq!(c.validate(), Err(ConfigError::SelfNotMember));
    let mut c = config(0, 2);
    c.links = 3;
    assert_eq!(c.validate(), Err(ConfigError::BadLinkCount(3)));
    let mut c = config(0, 2);
    c.timers.profile = TimerProfile::Custom {
        interval_ms: 1,
        miss_limit: 3,
    };
    assert_eq!(c.validate(), Err(ConfigError::BadInterval(1)));
    let mut c = config(0, 2);
    c.timers.profile = TimerProfile::Custom {
        interval_ms: 50,
        miss_limit: 1,
    };
    assert_eq!(c.validate(), Err(ConfigError::MissLimitTooLow(1)));
    let mut c = config(0, 2);
    c.timers.startup_window_ms = 5;
    assert_eq!(c.validate(), Err(ConfigError::StartupWindowTooShort));
    let mut c = config(0, 2);
    c.domains
        .push(DomainEntry {
            id: 0,
            preferred: None,
        })
        .unwrap();
    assert_eq!(c.validate(), Err(ConfigError::DuplicateDomain(0)));
    let mut c = config(0, 2);
    c.domains[0].preferred = Some(serial(5));
    assert_eq!(c.validate(), Err(ConfigError::PreferredNotMember(0)));
    let mut c = config(0, 2);
    c.domains.clear();
    assert_eq!(c.validate(), Err(ConfigError::NoDomains));
    assert!(A::new(c, 0, 1).is_err());
    let mut c = config(0, 2);
    c.quality.weights.fan = 10_000;
    assert_eq!(c.validate(), Err(ConfigError::WeightTooLarge(10_000)));
    assert_eq!(config(0, 2).validate(), Ok(()));
}

#[test]
fn reload_changes_settings_in_place() {
    let mut c = Cluster::pair();
    c.run_until(300);
    let mut cfg = config(0, 2);
    cfg.config_revision = 7;
    c.with(0, |a, now| a.reload(now, cfg).unwrap());
    assert_eq!(c.a(0).status().me.config_revision, 7);
    assert_eq!(c.role(0), Role::Active, "a reload is not a swap");
    assert!(!c.a(0).status().me.config_synced);
    assert_eq!(c.a(1).status().peers[0].config_revision, 7);
    let mut other = config(0, 2);
    other.cluster_id = 1;
    assert_eq!(
        c.agents[0].as_mut().unwrap().reload(400, other),
        Err(ConfigError::ReloadNeedsRestart)
    );
}

#[test]
fn peer_restart_is_noticed() {
    let mut c = Cluster::pair();
    c.run_until(300);
    c.agents[1] = Some(A::new(config(1, 2), 300, 2).unwrap());
    c.pump();
    c.run_until(400);
    assert!(c
        .events_of(0)
        .contains(&EventKind::PeerRestarted { peer: serial(1) }));
    assert_eq!((c.role(0), c.role(1)), (Role::Active, Role::Passive));
}

#[test]
fn event_ring_counts_overflow() {
    let mut c = Cluster::pair();
    c.run_until(300);
    for i in 0..40 {
        c.with(0, |a, now| {
            a.handle_host(now, ifaces(&[("out", i % 2 == 0, 100), ("in", true, 100)]))
        });
    }
    let ev = c.a(0).events();
    assert_eq!(ev.len(), ha_agent::event::EVENT_CAP);
    assert!(ev.overflow() > 0);
}

#[test]
fn status_request_reports_every_member_and_role_changes_push_one() {
    use ha_proto::msg::host::LedReport;
    let mut c = Cluster::pair();
    c.run_until(1000);
    // The role decisions of the election were followed by a status report.
    assert!(c
        .host
        .iter()
        .any(|(m, h)| *m == 0 && matches!(h, HostMsg::Status(_))));
    c.host.clear();
    c.with(1, |a, now| a.handle_host(now, HostMsg::StatusRequest));
    let reports: Vec<_> = c
        .host
        .iter()
        .filter_map(|(m, h)| match h {
            HostMsg::Status(r) if *m == 1 => Some(r.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!(r.members.len(), 2);
    assert!(r.members[0].local && r.members[0].serial == serial(1));
    assert_eq!(r.members[0].domains[0].role, Role::Passive);
    assert!(!r.members[1].local && r.members[1].alive);
    assert_eq!(r.members[1].domains[0].role, Role::Active);
    assert_eq!(
        r.led,
        LedReport::Blink {
            on_ms: 1000,
            off_ms: 2000
        }
    );
    assert!(r.frames_received > 0 && r.frames_sent > 0);
}

#[test]
fn psk_rollover_from_the_host_link_keeps_the_cluster_together() {
    use ha_proto::msg::host::WirePsk;
    let mut c = Cluster::pair();
    c.run_until(1000);
    let key_state = |c: &Cluster, m: usize| {
        c.host
            .iter()
            .rev()
            .find_map(|(i, h)| match h {
                HostMsg::KeyState {
                    sealing_key_id,
                    accepted,
                } if *i == m => Some((*sealing_key_id, accepted.to_vec())),
                _ => None,
            })
            .unwrap()
    };
    c.events.clear();
    let install = HostMsg::InstallKey {
        key_id: 2,
        psk: WirePsk(OTHER_KEY),
    };
    // Phase 1, one member after the other with time passing in between: nothing changes on
    // the wire yet.
    for m in 0..2 {
        c.with(m, |a, now| a.handle_host(now, install.clone()));
        assert_eq!(key_state(&c, m), (0, vec![0, 2]));
        c.run_until(c.now + 500);
    }
    // Using a key never installed is refused.
    c.with(0, |a, now| {
        a.handle_host(now, HostMsg::UseKey { key_id: 5 })
    });
    assert_eq!(key_state(&c, 0), (0, vec![0, 2]));
    // Phase 2, again spread in time: the peer already accepts the new key.
    for m in 0..2 {
        c.with(m, |a, now| {
            a.handle_host(now, HostMsg::UseKey { key_id: 2 })
        });
        assert_eq!(key_state(&c, m), (2, vec![2, 0]));
        c.run_until(c.now + 500);
    }
    // Retiring the key that is not sealing is refused (state unchanged).
    c.with(1, |a, now| {
        a.handle_host(now, HostMsg::RetireKey { key_id: 0 })
    });
    assert_eq!(key_state(&c, 1), (2, vec![2, 0]));
    // Phase 3.
    for m in 0..2 {
        c.with(m, |a, now| {
            a.handle_host(now, HostMsg::RetireKey { key_id: 2 })
        });
        assert_eq!(key_state(&c, m), (2, vec![2]));
    }
    for m in 0..2 {
        assert_eq!(
            c.a(m).status().counters.rejected_total(),
            0,
            "member {m} rejected frames during the rollover"
        );
    }
    let before = c.a(1).status().counters.received;
    c.run_until(6000);
    assert!(c.a(1).status().counters.received > before);
    assert_eq!(c.role(0), Role::Active);
    assert_eq!(c.role(1), Role::Passive);
    for m in 0..2 {
        assert!(
            !c.events_of(m).iter().any(|e| matches!(
                e,
                EventKind::RoleChanged { .. } | EventKind::LinkDown { .. }
            )),
            "member {m}: a swap or a lost link during the rollover"
        );
    }
}

#[test]
fn events_render_for_the_host_link() {
    let e = ha_agent::event::Event {
        seq: 9,
        at_ms: 1234,
        kind: EventKind::PeerLost {
            peer: serial(3),
            confirmed: true,
        },
    };
    let r = e.report();
    assert_eq!((r.seq, r.at_ms, r.name.as_str()), (9, 1234, "peer_lost"));
    assert_eq!(r.peer, Some(serial(3)));
    assert!(r.detail.contains("confirmed: true"), "{}", r.detail);
}

fn members_msg(list: &[usize]) -> HostMsg {
    HostMsg::Members(
        list.iter()
            .map(|&i| ha_proto::config_block::MemberEntry {
                serial: serial(i),
                main_link: ha_proto::config_block::LinkAddr {
                    ip: [10, 0, 0, i as u8 + 1],
                    port: 44240,
                },
            })
            .collect(),
    )
}

#[test]
fn a_failed_member_is_removed_and_its_replacement_joins() {
    // SN000 and SN001 form the cluster; SN002 is the replacement (provisioned with SN000).
    let mut c = Cluster::new(vec![config(0, 2), config(1, 2)]);
    c.agents.push(None);
    c.cut.push([false; 2]);
    c.alive.push(true);
    c.run_until(2_000);
    // SN001 fails for good.
    c.agents[1] = None;
    c.alive[1] = false;
    c.run_until(4_000);
    assert_eq!(c.role(0), Role::Active);
    assert!(c.a(0).status().peer(&serial(1)).is_some(), "still listed");

    // Removed: forgotten at once; the list in use has this member only.
    c.with(0, |a, now| a.handle_host(now, members_msg(&[0])));
    assert!(c.a(0).status().peer(&serial(1)).is_none());
    assert!(c
        .events_of(0)
        .contains(&EventKind::MembersChanged { members: 1 }));
    assert!(c
        .host
        .iter()
        .any(|(i, m)| *i == 0 && matches!(m, HostMsg::Status(r) if r.members.len() == 1)));

    // The replacement boots with a block listing SN000 and itself; until SN000 lists it,
    // SN000 does not take it as a member.
    let mut cfg2 = config(2, 3);
    cfg2.members = [serial(0), serial(2)].into_iter().collect();
    c.agents[2] = Some(A::new(cfg2, c.now, 1).unwrap());
    c.run_until(5_000);
    assert!(c.a(0).status().peer(&serial(2)).is_none());
    assert_eq!(c.role(0), Role::Active);

    // Joined: heard, and the cluster has one active again with the newcomer passive.
    c.with(0, |a, now| a.handle_host(now, members_msg(&[0, 2])));
    c.run_until(7_000);
    let p = c
        .a(0)
        .status()
        .peer(&serial(2))
        .expect("the newcomer is a peer");
    assert_eq!(p.state, PeerState::Alive);
    assert_eq!(c.role(0), Role::Active);
    assert_eq!(c.role(2), Role::Passive);

    // A list without this member is refused and changes nothing.
    c.with(0, |a, now| a.handle_host(now, members_msg(&[1, 2])));
    assert!(c.events_of(0).contains(&EventKind::MembersRefused));
    assert!(c.a(0).status().peer(&serial(2)).is_some());
    assert_eq!(c.a(0).config().members.len(), 2);
}

/// Defect: a member frame recorded at any time and replayed after its receiver rebooted was
/// accepted (the replay window starts empty). Commands and heartbeats name the receiver's
/// boot: a forcing recorded before the reboot changes nothing after it, and a heartbeat of
/// the dead peer recorded before the reboot does not keep it alive.
#[test]
fn frames_recorded_before_a_reboot_change_nothing_after_it() {
    let mut c = Cluster::pair();
    c.run_until(500);
    assert_eq!((c.role(0), c.role(1)), (Role::Active, Role::Passive));
    // SN000's operator forces SN001 passive; the attacker records the relayed frames.
    let first = c.frames.len();
    c.with(0, |a, now| {
        a.handle_host(
            now,
            HostMsg::Admin {
                target: Some(serial(1)),
                command: AdminCommand::ForceActive,
            },
        )
    });
    let recorded: Vec<_> = c.frames[first..]
        .iter()
        .filter(|f| f.0 == 0)
        .cloned()
        .collect();
    assert_eq!(c.a(1).status().me.forced, Forced::Active);
    c.run_until(1_000);
    let heartbeats_of_0: Vec<_> = c.frames.iter().filter(|f| f.0 == 0).cloned().collect();
    // SN001 reboots (boot counter 2) and SN000 dies for good.
    c.agents[0] = None;
    c.alive[0] = false;
    c.agents[1] = Some(A::new(config(1, 2), c.now, 2).unwrap());
    for (_, link, bytes) in recorded.iter().chain(heartbeats_of_0.iter().rev().take(20)) {
        let now = c.now;
        c.agents[1]
            .as_mut()
            .unwrap()
            .handle_member_frame(now, *link, &mut bytes.clone());
    }
    let k = &c.a(1).status().counters;
    assert!(k.rejected(Reject::StaleBinding) >= 1, "{:?}", k.rejected);
    assert_eq!(c.a(1).status().me.forced, Forced::None);
    assert_eq!(c.a(1).status().peers[0].state, PeerState::Unknown);
    // Alone, it takes over after the startup window.
    c.run_until(c.now + 1_000);
    assert_eq!(c.role(1), Role::Active);
}

/// Defect: the role reached the main CPU once per change; a lost frame left the main CPU
/// without an active member. The roles are re-asserted every ROLES_REFRESH_MS.
#[test]
fn roles_are_reasserted_to_the_main_cpu_periodically() {
    let mut c = Cluster::pair();
    c.run_until(500);
    let before = c.host.len();
    c.run_until(1_500);
    let refreshes = c.host[before..]
        .iter()
        .filter(|(m, h)| *m == 0 && matches!(h, HostMsg::Roles(r) if r[0].role == Role::Active))
        .count() as u64;
    assert!(
        refreshes >= 1_000 / ha_agent::agent::ROLES_REFRESH_MS - 1,
        "{refreshes} refreshes in 1 s"
    );
}

/// Defect (architecture issue, bug 5): domain ids need not be 0..n; the roles report names
/// each domain by id and priorities follow the domain, not position 0.
#[test]
fn sparse_domain_ids_are_reported_by_id() {
    let mut cfgs = vec![config(0, 2), config(1, 2)];
    for c in cfgs.iter_mut() {
        c.domains.clear();
        c.domains
            .push(DomainEntry {
                id: 1,
                preferred: Some(serial(1)),
            })
            .unwrap();
        c.domains
            .push(DomainEntry {
                id: 3,
                preferred: Some(serial(0)),
            })
            .unwrap();
    }
    let mut c = Cluster::new(cfgs);
    c.run_until(500);
    assert_eq!(c.a(1).role(1), Some(Role::Active));
    assert_eq!(c.a(0).role(3), Some(Role::Active));
    let last_roles = |m: usize| {
        c.host
            .iter()
            .rev()
            .find_map(|(i, h)| match h {
                HostMsg::Roles(r) if *i == m => {
                    Some(r.iter().map(|d| (d.domain, d.role)).collect::<Vec<_>>())
                }
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(last_roles(0), vec![(1, Role::Passive), (3, Role::Active)]);
    assert_eq!(last_roles(1), vec![(1, Role::Active), (3, Role::Passive)]);
    let report = c.a(0).status_report();
    let peer = &report.members[1];
    let prio: Vec<_> = peer
        .domains
        .iter()
        .map(|d| (d.domain, d.priority))
        .collect();
    assert_eq!(prio, vec![(1, 50), (3, 0)]);
}

/// The controller's end of the host link lives in the agent: frames from the main CPU are
/// opened there, state changes need the main CPU to have heard this boot, and a main CPU
/// that restarts gets the roles at once.
#[test]
fn host_frames_are_opened_by_the_agent_and_bound_to_its_boot() {
    use ha_proto::hostlink::{End, HostEndpoint};
    let mut a = A::new(config(0, 1), 0, 7).unwrap();
    let mut cpu = HostEndpoint::new(End::MainCpu, &Psk(KEY), 42, 0, serial(0), 3, false);
    let mut buf = [0u8; 1472];
    let drain = |a: &mut A, cpu: &mut HostEndpoint| {
        let mut got = Vec::new();
        while let Some(o) = a.poll_output() {
            if let Output::Host(m) = o {
                let mut f = vec![0u8; 1472];
                let n = a.seal_host(&m, &mut f).unwrap();
                f.truncate(n);
                if let Ok(msg) = cpu.open(&mut f) {
                    got.push(msg);
                }
            }
        }
        got
    };
    a.handle_timeout(300);
    // Before the main CPU heard this boot: a forcing is refused as unbound.
    let n = cpu
        .seal(
            &HostMsg::Admin {
                target: None,
                command: AdminCommand::ForcePassive,
            },
            &mut buf,
        )
        .unwrap();
    a.handle_host_frame(300, &mut buf[..n]);
    assert_eq!(a.status().counters.host_rejected.get(Reject::Unbound), 1);
    assert_eq!(a.status().me.forced, Forced::None);
    // The keepalive the agent sends while unheard teaches the main CPU this boot.
    let got = drain(&mut a, &mut cpu);
    assert!(
        got.iter().any(|m| matches!(m, HostMsg::Ping { .. })),
        "{got:?}"
    );
    let n = cpu.seal(&HostMsg::StatusRequest, &mut buf).unwrap();
    a.handle_host_frame(301, &mut buf[..n]);
    let got = drain(&mut a, &mut cpu);
    assert!(
        got.iter().any(|m| matches!(m, HostMsg::Roles(_))),
        "{got:?}"
    );
    let n = cpu
        .seal(
            &HostMsg::Admin {
                target: None,
                command: AdminCommand::ForcePassive,
            },
            &mut buf,
        )
        .unwrap();
    a.handle_host_frame(302, &mut buf[..n]);
    assert_eq!(a.status().me.forced, Forced::Passive);
}
