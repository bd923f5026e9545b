//! The lock-step harness of the agent's behaviour tests: members exchange real sealed
//! frames, instantly, on links that can be cut; a simulated main CPU answers probes.
// Each test file uses its own part of the harness and of these re-exports.
#![allow(dead_code, unused_imports)]

pub use ha_agent::config::{Config, ConfigError, Timers};
pub use ha_agent::event::{EventKind, Reason};
pub use ha_agent::status::PeerState;
pub use ha_agent::Reject;
pub use ha_agent::{Agent, LedPattern, LinkId, Output};
pub use ha_agent::{DomainEntry, SensorKind, SensorReading, TimerProfile};
pub use ha_proto::keys::Psk;
pub use ha_proto::msg::host::{HostMsg, IfaceState, CAP_TABLE_HELD};
pub use ha_proto::msg::member::AdminCommand;
pub use ha_proto::msg::{FirmwareVersion, Forced, Role, Serial};

pub type A = Agent<4, 2>;

pub fn serial(i: usize) -> Serial {
    Serial::new(&format!("SN{i:03}")).unwrap()
}

/// The cluster key of these tests (random bytes: weak keys are refused).
pub const KEY: [u8; 32] = [
    79, 204, 198, 15, 169, 100, 136, 208, 217, 2, 63, 218, 246, 12, 2, 121, 254, 18, 215, 194, 192,
    99, 229, 9, 42, 57, 169, 187, 79, 249, 188, 221,
];
/// Another strong key (a stranger's, or the next key of a rollover).
pub const OTHER_KEY: [u8; 32] = [
    148, 211, 98, 190, 85, 185, 119, 216, 168, 244, 196, 124, 61, 26, 207, 254, 228, 120, 234, 147,
    40, 232, 200, 231, 16, 119, 200, 247, 47, 102, 116, 61,
];

pub fn config(me: usize, n: usize) -> Config<4, 2> {
    let members = (0..n).map(serial).collect();
    let mut c = Config::new(42, Psk(KEY), serial(me), members);
    c.links = 2;
    c.timers = Timers::for_profile(TimerProfile::Fast);
    c
}

/// Members in lock step: every output frame is delivered at once on links not cut.
pub struct Cluster {
    pub now: u64,
    pub agents: Vec<Option<A>>,
    /// `cut[from][link]`: frames sent by `from` on `link` are dropped.
    pub cut: Vec<[bool; 2]>,
    /// Probe answers given by the simulated main CPU: `alive[peer]`.
    pub alive: Vec<bool>,
    /// Answer probes at all (false: the main CPU is silent).
    pub answer_probes: bool,
    pub events: Vec<(usize, EventKind)>,
    pub host: Vec<(usize, HostMsg)>,
    pub leds: Vec<(usize, LedPattern)>,
    pub frames: Vec<(usize, LinkId, Vec<u8>)>,
}

impl Cluster {
    pub fn new(configs: Vec<Config<4, 2>>) -> Self {
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

    pub fn pair() -> Self {
        Self::new(vec![config(0, 2), config(1, 2)])
    }

    pub fn a(&self, i: usize) -> &A {
        self.agents[i].as_ref().unwrap()
    }

    pub fn role(&self, i: usize) -> Role {
        self.a(i).role(0).unwrap()
    }

    pub fn with(&mut self, i: usize, f: impl FnOnce(&mut A, u64)) {
        let now = self.now;
        if let Some(a) = self.agents[i].as_mut() {
            f(a, now);
        }
        self.pump();
    }

    /// Delivers outputs until quiet.
    pub fn pump(&mut self) {
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
                        Output::Host(HostMsg::ProbeRequest { peer, within_ms })
                            if self.answer_probes =>
                        {
                            let p = (0..self.agents.len()).find(|&k| serial(k) == peer).unwrap();
                            let alive = self.alive[p] && self.agents[p].is_some();
                            let now = self.now;
                            self.host
                                .push((i, HostMsg::ProbeRequest { peer, within_ms }));
                            if let Some(a) = self.agents[i].as_mut() {
                                a.handle_host(now, HostMsg::ProbeResult { peer, alive });
                            }
                        }
                        Output::Host(HostMsg::ProbeAsk {
                            peer,
                            within_ms,
                            request,
                        }) if self.answer_probes => {
                            let p = (0..self.agents.len()).find(|&k| serial(k) == peer).unwrap();
                            let alive = self.alive[p] && self.agents[p].is_some();
                            let now = self.now;
                            self.host.push((
                                i,
                                HostMsg::ProbeAsk {
                                    peer,
                                    within_ms,
                                    request,
                                },
                            ));
                            if let Some(a) = self.agents[i].as_mut() {
                                a.handle_host(
                                    now,
                                    HostMsg::ProbeAnswer {
                                        peer,
                                        request,
                                        alive,
                                    },
                                );
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
    pub fn run_until(&mut self, until: u64) {
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

    /// The probe requests member `i` sent to its main CPU, in order.
    pub fn probe_requests(&self, i: usize) -> Vec<&HostMsg> {
        self.host
            .iter()
            .filter(|(m, h)| {
                *m == i && matches!(h, HostMsg::ProbeRequest { .. } | HostMsg::ProbeAsk { .. })
            })
            .map(|(_, h)| h)
            .collect()
    }

    /// When member `i` last heard peer `p` (its index in the peer table), on any link.
    pub fn last_heard(&self, i: usize, p: usize) -> u64 {
        self.a(i).status().peers[p]
            .links
            .iter()
            .filter_map(|l| l.last_rx_ms)
            .max()
            .expect("heard")
    }

    /// The number of the last numbered probe request member `i` sent.
    pub fn last_request(&self, i: usize) -> u16 {
        self.probe_requests(i)
            .iter()
            .rev()
            .find_map(|h| match h {
                HostMsg::ProbeAsk { request, .. } => Some(*request),
                _ => None,
            })
            .expect("a numbered probe request")
    }

    /// Member `i`'s main CPU answers request `request` of its probes of member `peer` now.
    pub fn answer_request(&mut self, i: usize, peer: usize, request: u16, alive: bool) {
        self.with(i, |a, now| {
            a.handle_host(
                now,
                HostMsg::ProbeAnswer {
                    peer: serial(peer),
                    request,
                    alive,
                },
            )
        });
    }

    /// Member `i`'s main CPU answers its request number `request` now, in the short form
    /// that leaves the peer out (the number names it).
    pub fn answer_verdict(&mut self, i: usize, request: u16, alive: bool) {
        self.with(i, |a, now| {
            a.handle_host(now, HostMsg::ProbeVerdict { request, alive })
        });
    }

    /// Member `i`'s main CPU answers its probe of member `peer` now.
    pub fn answer_probe(&mut self, i: usize, peer: usize, alive: bool) {
        self.with(i, |a, now| {
            a.handle_host(
                now,
                HostMsg::ProbeResult {
                    peer: serial(peer),
                    alive,
                },
            )
        });
    }

    pub fn events_of(&self, i: usize) -> Vec<EventKind> {
        self.events
            .iter()
            .filter(|(m, _)| *m == i)
            .map(|(_, e)| *e)
            .collect()
    }
}

pub fn iface(name: &str, up: bool, weight: u16) -> IfaceState {
    let mut n = heapless::String::new();
    n.push_str(name).unwrap();
    IfaceState {
        name: n,
        up,
        weight,
        aggregate: None,
    }
}

pub fn ifaces(list: &[(&str, bool, u16)]) -> HostMsg {
    HostMsg::Interfaces(list.iter().map(|(n, u, w)| iface(n, *u, *w)).collect())
}

pub fn members_msg(list: &[usize]) -> HostMsg {
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
