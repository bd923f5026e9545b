//! The host link: roles re-asserted, status reports, events, and the controller's end of
//! the link inside the agent.

mod common;

use common::*;

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
    // The key state comes with it (a restarted daemon learns where a rotation stands).
    assert!(c.host.iter().any(|(m, h)| *m == 1
        && matches!(
            h,
            HostMsg::KeyState {
                sealing_key_id: 0,
                ..
            }
        )));
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
    assert!(
        r.detail.contains("lost (the liveness probe found it dead)"),
        "{}",
        r.detail
    );
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

/// Every host-link frame the agent has to send, sealed by it: its first byte (the form) and
/// what the main CPU's end `cpu` made of it.
fn sent_frames(
    a: &mut A,
    cpu: &mut ha_proto::hostlink::HostEndpoint,
) -> Vec<(u8, Result<HostMsg, Reject>)> {
    let mut got = Vec::new();
    while let Some(o) = a.poll_output() {
        if let Output::Host(m) = o {
            let mut f = vec![0u8; 1472];
            let n = a.seal_host(&m, &mut f).unwrap();
            f.truncate(n);
            got.push((f[0], cpu.open(&mut f)));
        }
    }
    got
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
    let drain = |a: &mut A, cpu: &mut HostEndpoint| -> Vec<HostMsg> {
        sent_frames(a, cpu)
            .into_iter()
            .filter_map(|(_, m)| m.ok())
            .collect()
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

/// A main CPU that lists the compact frames among its capabilities gets the controller's
/// frames in the compact form (25 bytes shorter, the slow direction under QEMU included)
/// from then on; one of an older release, or a restarted one that has not listed it yet,
/// gets full frames.
#[test]
fn the_agent_answers_in_compact_frames_once_the_main_cpu_takes_them() {
    use ha_proto::frame::COMPACT_MAGIC;
    use ha_proto::hostlink::{End, HostEndpoint};
    use ha_proto::msg::host::{CAP_COMPACT_FRAMES, CAP_NUMBERED_PROBES};
    let mut a = A::new(config(0, 1), 0, 7).unwrap();
    let mut buf = [0u8; 1472];
    // Every host frame the agent sends: its first byte and whether the main CPU opened it.
    let drain = |a: &mut A, cpu: &mut HostEndpoint| -> Vec<(u8, bool)> {
        sent_frames(a, cpu)
            .into_iter()
            .map(|(b, m)| (b, m.is_ok()))
            .collect()
    };
    let mut cpu = HostEndpoint::new(End::MainCpu, &Psk(KEY), 42, 0, serial(0), 3, false);
    a.handle_timeout(300);
    drain(&mut a, &mut cpu);
    let n = cpu.seal(&HostMsg::StatusRequest, &mut buf).unwrap();
    a.handle_host_frame(301, &mut buf[..n]);
    let got = drain(&mut a, &mut cpu);
    assert!(
        !got.is_empty() && got.iter().all(|&(b, ok)| b == b'H' && ok),
        "{got:?}"
    );
    // Numbered probes alone: still full frames.
    let n = cpu
        .seal(&HostMsg::Capabilities(CAP_NUMBERED_PROBES), &mut buf)
        .unwrap();
    a.handle_host_frame(302, &mut buf[..n]);
    let n = cpu.seal(&HostMsg::StatusRequest, &mut buf).unwrap();
    a.handle_host_frame(303, &mut buf[..n]);
    let got = drain(&mut a, &mut cpu);
    assert!(
        !got.is_empty() && got.iter().all(|&(b, ok)| b == b'H' && ok),
        "{got:?}"
    );
    // Compact frames listed: the answers go compact and open, and the main CPU follows.
    let n = cpu
        .seal(
            &HostMsg::Capabilities(CAP_NUMBERED_PROBES | CAP_COMPACT_FRAMES),
            &mut buf,
        )
        .unwrap();
    a.handle_host_frame(304, &mut buf[..n]);
    let n = cpu.seal(&HostMsg::StatusRequest, &mut buf).unwrap();
    a.handle_host_frame(305, &mut buf[..n]);
    let got = drain(&mut a, &mut cpu);
    assert!(
        !got.is_empty() && got.iter().all(|&(b, ok)| b == COMPACT_MAGIC && ok),
        "{got:?}"
    );
    assert!(cpu.sends_compact());
    let n = cpu.seal(&HostMsg::StatusRequest, &mut buf).unwrap();
    assert_eq!(buf[0], COMPACT_MAGIC);
    a.handle_host_frame(306, &mut buf[..n]);
    assert!(!drain(&mut a, &mut cpu).is_empty());
    assert_eq!(a.status().counters.host_rejected.total(), 0);
    // The main CPU restarts (an older release, say): full frames until it lists them.
    let mut cpu = HostEndpoint::new(End::MainCpu, &Psk(KEY), 42, 0, serial(0), 4, false);
    let n = cpu.seal(&HostMsg::StatusRequest, &mut buf).unwrap();
    a.handle_host_frame(307, &mut buf[..n]);
    let got = drain(&mut a, &mut cpu);
    assert!(
        !got.is_empty() && got.iter().all(|&(b, ok)| b == b'H' && ok),
        "{got:?}"
    );
}

/// The active's main CPU dies (its daemon killed, the controller alive): nothing forwards
/// there, so the member leaves the election and the peer takes over at once; when the main
/// CPU is heard again it rejoins as passive, without a swap back.
#[test]
fn a_silent_main_cpu_takes_its_member_out_of_the_election() {
    let mut cfgs = vec![config(0, 2), config(1, 2)];
    for c in cfgs.iter_mut() {
        c.main_cpu_timeout_ms = 1_000;
    }
    let mut c = Cluster::new(cfgs);
    // Both main CPUs send their keepalive every 100 ms.
    let mut t = 0;
    let keepalive = |c: &mut Cluster, who: &[usize], until: u64, t: &mut u64| {
        while *t < until {
            *t += 100;
            c.run_until(*t);
            for &m in who {
                c.with(m, |a, now| a.handle_host(now, HostMsg::Ping { nonce: 1 }));
            }
        }
    };
    keepalive(&mut c, &[0, 1], 1_000, &mut t);
    assert_eq!((c.role(0), c.role(1)), (Role::Active, Role::Passive));
    // Member 0's main CPU stops.
    let stopped = t;
    keepalive(&mut c, &[1], stopped + 900, &mut t);
    assert_eq!(c.role(0), Role::Active, "not before the timeout");
    keepalive(&mut c, &[1], stopped + 1_200, &mut t);
    assert_eq!(c.role(0), Role::Disabled);
    assert_eq!(c.role(1), Role::Active, "the peer took over");
    assert!(c
        .events_of(0)
        .iter()
        .any(|e| matches!(e, EventKind::MainCpuLost { .. })));
    // It is back: passive, the peer stays active.
    keepalive(&mut c, &[0, 1], t + 2_000, &mut t);
    assert!(c.events_of(0).contains(&EventKind::MainCpuBack));
    assert_eq!((c.role(0), c.role(1)), (Role::Passive, Role::Active));
}

/// Chaos found it: the active's daemon was killed and restarted within the main-CPU timeout;
/// the controller stayed active and its restarted main CPU forwarded with an empty
/// connection table while the passive held the synchronized copy: every connection stalled.
/// A main CPU that restarts (a new boot on the host link) takes its member out of the
/// election for the startup window: the peer, which has the connections, takes over; then
/// the member rejoins as passive.
#[test]
fn a_restarted_main_cpu_hands_the_active_role_to_the_peer() {
    use ha_proto::hostlink::{End, HostEndpoint};
    let mut cfgs = vec![config(0, 2), config(1, 2)];
    for c in cfgs.iter_mut() {
        c.main_cpu_timeout_ms = 1_000;
    }
    let mut c = Cluster::new(cfgs);
    let cpu = |epoch| HostEndpoint::new(End::MainCpu, &Psk(KEY), 42, 0, serial(0), epoch, false);
    // Member 0's main CPU talks over the host link (frames, so boots are seen); member 1's
    // sends its keepalive as a typed message.
    let talk = |c: &mut Cluster, ep: &mut HostEndpoint, msg: HostMsg| {
        let mut buf = [0u8; 1472];
        let n = ep.seal(&msg, &mut buf).unwrap();
        c.with(0, |a, now| a.handle_host_frame(now, &mut buf[..n]));
    };
    let mut first = cpu(3);
    let mut t = 0;
    while t < 1_000 {
        t += 100;
        c.run_until(t);
        talk(&mut c, &mut first, HostMsg::StatusRequest);
        c.with(1, |a, now| a.handle_host(now, HostMsg::Ping { nonce: 1 }));
    }
    assert_eq!((c.role(0), c.role(1)), (Role::Active, Role::Passive));
    // The main CPU restarts within the timeout: a new boot speaks.
    let mut second = cpu(4);
    talk(&mut c, &mut second, HostMsg::StatusRequest);
    c.run_until(t + 50);
    assert_eq!(c.role(0), Role::Disabled, "still in the election");
    assert_eq!(c.role(1), Role::Active, "the peer did not take over");
    // It keeps talking; after the startup window it is back, passive.
    while t < 4_000 {
        t += 100;
        c.run_until(t);
        talk(&mut c, &mut second, HostMsg::StatusRequest);
        c.with(1, |a, now| a.handle_host(now, HostMsg::Ping { nonce: 1 }));
    }
    assert_eq!((c.role(0), c.role(1)), (Role::Passive, Role::Active));
}

/// Every output of `a` now: the events' numbers, and how many other outputs.
fn drain_events(a: &mut A) -> (Vec<u32>, usize) {
    let (mut events, mut others) = (Vec::new(), 0);
    while let Some(o) = a.poll_output() {
        match o {
            Output::Event(e) => events.push(e.seq),
            _ => others += 1,
        }
    }
    (events, others)
}

/// Ten forcing changes in a row: their events leave the ring a few per turn, in order, and
/// the agent wakes itself for the rest; a main CPU that connects later asks for the ring
/// again and gets it from the number it asked, or from the oldest event kept.
#[test]
fn events_leave_the_ring_a_few_per_turn_and_again_when_the_main_cpu_asks() {
    use ha_agent::EventKind;
    let mut a = A::new(config(0, 1), 0, 1).unwrap();
    let mut t = 0;
    let mut sent = drain_events(&mut a).0;
    let first_new = a.events().iter().last().map_or(0, |e| e.seq + 1);
    for i in 0..10 {
        let command = if i % 2 == 0 {
            AdminCommand::ForcePassive
        } else {
            AdminCommand::ResetForcing
        };
        a.handle_host(
            t,
            HostMsg::Admin {
                target: None,
                command,
            },
        );
    }
    let forcings = |a: &A| {
        a.events()
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ForcingChanged { .. }))
            .count()
    };
    assert_eq!(forcings(&a), 10);
    let (turn, _) = drain_events(&mut a);
    assert_eq!(turn.len(), 4, "one turn's events: {turn:?}");
    assert!(a.poll_at() <= t + 10, "the agent wakes for the rest");
    sent.extend(turn);
    while sent.last().copied() != a.events().iter().last().map(|e| e.seq) {
        t = a.poll_at().max(t + 1);
        assert!(t < 1_000, "the ring never drained: {sent:?}");
        a.handle_timeout(t);
        sent.extend(drain_events(&mut a).0);
    }
    let in_order: Vec<u32> = (sent[0]..sent[0] + sent.len() as u32).collect();
    assert_eq!(sent, in_order, "every event once, in order");
    assert!(sent.contains(&first_new));

    // The events the agent hands out after the main CPU asks from `seq`, over 20 turns.
    let mut asked = |a: &mut A, seq: u32| {
        a.handle_host(t, HostMsg::EventsSince { seq });
        let mut got = Vec::new();
        for _ in 0..20 {
            got.extend(drain_events(a).0);
            t += 10;
            a.handle_timeout(t);
        }
        got.extend(drain_events(a).0);
        got
    };
    // A main CPU that knew event 3 on asks again: 3, 4, 5… come again.
    let last = *sent.last().unwrap();
    assert_eq!(asked(&mut a, 3), (3..=last).collect::<Vec<_>>());
    // A number from another boot (ahead of this one's): the whole ring, from the oldest.
    let oldest = a.events().iter().next().unwrap().seq;
    assert_eq!(
        asked(&mut a, 1_000_000),
        (oldest..=last).collect::<Vec<_>>()
    );
}

/// The details a controller reports: its model and every heard member's uptime, a peer's
/// from the uptime its last heartbeat carried plus the time since.
#[test]
fn details_give_the_model_and_each_members_uptime() {
    let mut cfg = config(0, 2);
    let _ = cfg.model.push_str("board-x");
    let mut c = Cluster::new(vec![cfg, config(1, 2)]);
    c.run_until(5_000);
    let d = c.a(0).details_report();
    assert_eq!(d.model.as_str(), "board-x");
    let up: Vec<(Serial, u64)> = d.uptimes.iter().map(|u| (u.serial, u.uptime_ms)).collect();
    assert_eq!(up[0], (serial(0), 5_000), "this member first");
    assert_eq!(up.len(), 2);
    assert_eq!(up[1].0, serial(1));
    assert!(
        up[1].1.abs_diff(5_000) <= 20,
        "the peer's uptime as heard: {}",
        up[1].1
    );
    // Asked over the host link, answered there.
    c.with(0, |a, now| a.handle_host(now, HostMsg::DetailsRequest));
    assert!(
        c.host
            .iter()
            .any(|(i, m)| *i == 0
                && matches!(m, HostMsg::Details(r) if r.model.as_str() == "board-x"))
    );
}

/// The counters answer what the role reports and events cannot guarantee to a main CPU on a
/// lossy line: how often this member took over and lost a peer.
#[test]
fn counters_count_takeovers_and_are_asked_over_the_host_link() {
    let mut c = Cluster::pair();
    c.run_until(300);
    let active = (0..2).find(|&i| c.role(i) == Role::Active).unwrap();
    let other = 1 - active;
    let before = c.a(other).counters();
    assert_eq!(before.to_active, 0);
    assert_eq!(c.a(active).counters().to_active, 1, "the election at boot");
    c.agents[active] = None;
    c.run_until(1_000);
    assert_eq!(c.role(other), Role::Active);
    let after = c.a(other).counters();
    assert_eq!((after.to_active, after.peers_lost), (1, 1));
    c.with(other, |a, now| a.handle_host(now, HostMsg::CountersRequest));
    assert!(c
        .host
        .iter()
        .any(|(i, m)| *i == other && matches!(m, HostMsg::Counters(r) if r.to_active == 1)));
}
