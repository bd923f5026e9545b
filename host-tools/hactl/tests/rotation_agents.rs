//! PSK rotation under heartbeat load, with two real HA agents (`ha-agent`) in virtual time:
//! the same rollover driver `hactl psk rotate` runs ([`hactl::rotation::rotate`]) steps each
//! member's controller through InstallKey → UseKey → RetireKey exactly as `ha-daemon`
//! forwards them, while both agents exchange heartbeats every 10 ms (fast timer profile) over
//! a wire with 3 ms of delay, so frames sealed before a step are still in flight after it.
//!
//! Must show: zero rejected frames, zero swaps, zero lost peers. The control case runs the
//! naive order (one member finishes before the other starts) and must see rejections: the
//! test can fail.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use ha_agent::ha_proto::keys::Psk;
use ha_agent::ha_proto::msg::host::{HostMsg, WirePsk};
use ha_agent::ha_proto::msg::{Role, Serial};
use ha_agent::{Agent, Config, EventKind, LinkId, Output, TimerProfile, Timers};
use ha_mgmt_api::RotateReport;
use hactl::rotation::{rotate, RotatingMember, Step};

const CLUSTER: u32 = 0xC0FFEE;
/// One-way delay of the simulated HA link, ms.
const WIRE_DELAY_MS: u64 = 3;
/// Virtual time a member's step takes to be confirmed and the next one to start, ms (the
/// daemon's round trip to its controller plus hactl's to the daemon; short on purpose).
const STEP_GAP_MS: u64 = 50;

struct World {
    now: u64,
    agents: Vec<Agent>,
    /// Frames in flight: (arrival time, destination, bytes).
    wire: VecDeque<(u64, usize, Vec<u8>)>,
    /// Each member's last KeyState (sealing, accepted).
    keys: Vec<(u8, Vec<u8>)>,
    swaps: u32,
    peers_lost: u32,
    delivered: u64,
}

/// The cluster key before the rotation (random bytes: weak keys are refused).
const OLD_KEY: [u8; 32] = [
    79, 204, 198, 15, 169, 100, 136, 208, 217, 2, 63, 218, 246, 12, 2, 121, 254, 18, 215, 194, 192,
    99, 229, 9, 42, 57, 169, 187, 79, 249, 188, 221,
];
/// The key rotated to.
const NEW_KEY: [u8; 32] = [
    148, 211, 98, 190, 85, 185, 119, 216, 168, 244, 196, 124, 61, 26, 207, 254, 228, 120, 234, 147,
    40, 232, 200, 231, 16, 119, 200, 247, 47, 102, 116, 61,
];

impl World {
    fn new() -> World {
        let serials = [Serial::new("SN-A").unwrap(), Serial::new("SN-B").unwrap()];
        let mut members = heapless::Vec::new();
        for s in serials {
            members.push(s).unwrap();
        }
        let agents = serials
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let mut c: Config = Config::new(CLUSTER, Psk(OLD_KEY), *s, members.clone());
                c.key_id = 1;
                c.timers = Timers::for_profile(TimerProfile::Fast);
                Agent::new(c, 0, 100 + i as u32).unwrap()
            })
            .collect();
        World {
            now: 0,
            agents,
            wire: VecDeque::new(),
            keys: vec![(1, vec![1]); 2],
            swaps: 0,
            peers_lost: 0,
            delivered: 0,
        }
    }

    fn drain(&mut self) {
        for m in 0..self.agents.len() {
            while let Some(o) = self.agents[m].poll_output() {
                match o {
                    Output::Send { bytes, .. } => {
                        for to in (0..self.agents.len()).filter(|t| *t != m) {
                            self.wire
                                .push_back((self.now + WIRE_DELAY_MS, to, bytes.to_vec()));
                        }
                    }
                    Output::Host(HostMsg::KeyState {
                        sealing_key_id,
                        accepted,
                    }) => self.keys[m] = (sealing_key_id, accepted.to_vec()),
                    Output::Event(e) => match e.kind {
                        EventKind::RoleChanged { .. } => self.swaps += 1,
                        EventKind::PeerLost { .. } => self.peers_lost += 1,
                        _ => {}
                    },
                    Output::Host(_) | Output::Led(_) => {}
                }
            }
        }
    }

    /// Runs virtual time forward by `ms`, 1 ms at a time.
    fn run(&mut self, ms: u64) {
        let end = self.now + ms;
        while self.now < end {
            self.now += 1;
            let now = self.now;
            while self.wire.front().is_some_and(|(t, _, _)| *t <= now) {
                if let Some((_, to, mut bytes)) = self.wire.pop_front() {
                    self.agents[to].handle_member_frame(now, LinkId(0), &mut bytes);
                    self.delivered += 1;
                }
            }
            for a in &mut self.agents {
                if a.poll_at() <= now {
                    a.handle_timeout(now);
                }
            }
            self.drain();
        }
    }

    fn rejected(&self) -> u32 {
        self.agents
            .iter()
            .map(|a| a.status_report().frames_rejected)
            .sum()
    }

    fn roles(&self) -> Vec<Option<Role>> {
        self.agents.iter().map(|a| a.role(0)).collect()
    }

    fn report(&self, m: usize) -> RotateReport {
        let (sealing, accepted) = &self.keys[m];
        RotateReport {
            phase: String::new(),
            sealing_key_id: *sealing,
            previous_key_id: accepted.iter().copied().find(|k| k != sealing),
            confirmed: Vec::new(),
            pending: Vec::new(),
        }
    }
}

/// One member's controller, reached the way ha-daemon reaches it: the next rollover message
/// chosen from its key state, then its KeyState answer.
struct Member {
    world: Rc<RefCell<World>>,
    index: usize,
    psk: [u8; 32],
}

impl RotatingMember for Member {
    fn status(&mut self) -> Result<RotateReport, String> {
        Ok(self.world.borrow().report(self.index))
    }

    fn step(&mut self, key_id: u8) -> Result<RotateReport, String> {
        let mut w = self.world.borrow_mut();
        let (sealing, accepted) = w.keys[self.index].clone();
        let msg = if !accepted.contains(&key_id) {
            HostMsg::InstallKey {
                key_id,
                psk: WirePsk(self.psk),
            }
        } else if sealing != key_id {
            HostMsg::UseKey { key_id }
        } else {
            HostMsg::RetireKey { key_id }
        };
        let now = w.now;
        w.agents[self.index].handle_host(now, msg);
        w.drain();
        w.run(STEP_GAP_MS);
        Ok(w.report(self.index))
    }
}

fn settled_world() -> Rc<RefCell<World>> {
    let mut w = World::new();
    w.run(2_000);
    let roles = w.roles();
    assert!(
        roles.contains(&Some(Role::Active)) && roles.contains(&Some(Role::Passive)),
        "{roles:?}"
    );
    assert_eq!(w.rejected(), 0);
    w.swaps = 0;
    w.peers_lost = 0;
    Rc::new(RefCell::new(w))
}

#[test]
fn rotation_under_heartbeat_load_loses_nothing() {
    let world = settled_world();
    let roles_before = world.borrow().roles();
    let delivered_before = world.borrow().delivered;
    let mut members: Vec<Member> = (0..2)
        .map(|index| Member {
            world: world.clone(),
            index,
            psk: NEW_KEY,
        })
        .collect();
    let mut order = Vec::new();
    let steps = rotate(&mut members, 2, |m, s| order.push((m, s))).expect("rollover");
    assert_eq!(steps, vec![Step::Done, Step::Done]);
    // Both accept before either seals; both seal before either retires.
    assert_eq!(
        order,
        vec![
            (0, Step::Accepted),
            (1, Step::Accepted),
            (0, Step::Sealing),
            (1, Step::Sealing),
            (0, Step::Done),
            (1, Step::Done)
        ]
    );
    let mut w = world.borrow_mut();
    w.run(1_000);
    let heartbeats = w.delivered - delivered_before;
    println!(
        "rotation: {heartbeats} frames delivered over {} ms, {} rejected, {} swaps, {} peers lost",
        6 * STEP_GAP_MS + 1_000,
        w.rejected(),
        w.swaps,
        w.peers_lost
    );
    // 10 ms heartbeats, both ways, for 1.3 s: a few hundred frames.
    assert!(heartbeats > 200, "{heartbeats}");
    assert_eq!(w.rejected(), 0, "frames rejected during the rollover");
    assert_eq!(w.swaps, 0, "a swap during the rollover");
    assert_eq!(w.peers_lost, 0, "a peer lost during the rollover");
    assert_eq!(w.roles(), roles_before);
    assert_eq!(w.keys, vec![(2, vec![2]), (2, vec![2])]);
}

#[test]
fn control_the_naive_order_rejects_frames() {
    let world = settled_world();
    // Member 0 goes all the way (install, use, retire) before member 1 starts: member 0 then
    // rejects member 1's frames, still sealed with the old key.
    for index in 0..2 {
        let mut m = Member {
            world: world.clone(),
            index,
            psk: NEW_KEY,
        };
        for _ in 0..3 {
            m.step(2).unwrap();
        }
    }
    let w = world.borrow();
    assert!(w.rejected() > 0, "the naive order must lose frames");
}
