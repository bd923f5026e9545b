//! The election (SPEC B2–B5): startup, quality, priority, forcing, collisions, pauses,
//! fail-soft and domains, driven through the agent's public API by the lock-step harness.

mod common;

use common::*;

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

/// A handover is break-before-make: the active steps down first (its own hold-down, or at once
/// for a forcing), and the better member takes over when it hears that. Before, the better
/// member went active first and the old one stepped down a heartbeat (and two host links)
/// later: two actives for that time (`cargo xtask chaos` saw 318 ms of it).
#[test]
fn a_handover_steps_the_active_down_before_the_better_member_takes_over() {
    // m0 went passive before m1 went active (break-before-make), as the events show.
    let stepped_down_first = |c: &Cluster| {
        let role_change = |m: usize, to: Role| {
            c.events.iter().position(|(i, e)| {
                *i == m && matches!(e, EventKind::RoleChanged { to: t, .. } if *t == to)
            })
        };
        let down = role_change(0, Role::Passive).expect("m0 stepped down");
        let up = role_change(1, Role::Active).expect("m1 took over");
        assert!(
            down < up,
            "m1 went active before m0 stepped down: {:?}",
            c.events
        );
    };
    // By merit: m0 (active) loses quality; m1 is better for the hold-down.
    let mut c = Cluster::pair();
    c.run_until(500);
    assert_eq!(c.role(0), Role::Active);
    c.events.clear();
    c.with(0, |a, now| {
        a.handle_host(now, ifaces(&[("out", true, 100), ("in", false, 100)]))
    });
    let hold = c.a(0).config().timers.hold_down_ms as u64;
    c.run_until(500 + hold + 100);
    assert_eq!((c.role(0), c.role(1)), (Role::Passive, Role::Active));
    stepped_down_first(&c);
    assert!(c.events.contains(&(
        1,
        EventKind::RoleChanged {
            domain: 0,
            from: Role::Passive,
            to: Role::Active,
            reason: Reason::Better
        }
    )));

    // By forcing: the passive forced active.
    let mut c = Cluster::pair();
    c.run_until(500);
    c.events.clear();
    c.with(1, |a, now| {
        a.handle_host(
            now,
            HostMsg::Admin {
                target: None,
                command: ha_proto::msg::member::AdminCommand::ForceActive,
            },
        )
    });
    c.run_until(1000);
    assert_eq!((c.role(0), c.role(1)), (Role::Passive, Role::Active));
    stepped_down_first(&c);
}

/// The mode "since" a member reports for a peer is when the peer took its role (its
/// heartbeats say how long it has held it), not when this member last changed its view of
/// the peer's liveness.
#[test]
fn a_peers_mode_since_is_when_it_took_its_role() {
    use ha_proto::msg::host::HostMsg;
    use ha_proto::msg::member::AdminCommand;
    let mut c = Cluster::pair();
    c.run_until(2_000);
    let first = (0..2).find(|&i| c.role(i) == Role::Active).unwrap();
    // A planned swap at 3 s: the other member's role begins then.
    c.run_until(3_000);
    c.with(first, |a, now| {
        a.handle_host(
            now,
            HostMsg::Admin {
                target: None,
                command: AdminCommand::ForcePassive,
            },
        )
    });
    c.run_until(6_000);
    let taker = 1 - first;
    assert_eq!(c.role(taker), Role::Active);
    for i in 0..2 {
        c.with(i, |a, now| a.handle_host(now, HostMsg::StatusRequest));
    }
    let report = |i: usize| {
        c.host
            .iter()
            .rev()
            .find_map(|(j, m)| match m {
                HostMsg::Status(r) if *j == i => Some(r.clone()),
                _ => None,
            })
            .unwrap()
    };
    let own = report(taker)
        .members
        .iter()
        .find(|m| m.local)
        .unwrap()
        .mode_since_ms;
    let seen = report(first)
        .members
        .iter()
        .find(|m| !m.local)
        .unwrap()
        .mode_since_ms;
    assert!(
        (3_000..3_200).contains(&own),
        "the taker's own mode since {own}"
    );
    assert!(
        own.abs_diff(seen) <= 20,
        "its peer sees it active since {seen} ms, it says {own} ms"
    );
}

/// A pair where member 1 is domain 0's preferred member. It dies (member 0 takes over) and
/// comes back: a fresh boot of its configuration changed by `edit`, given `first` before
/// its peer hears it, which must leave it at quality 0. Returns the cluster once it is
/// heard again.
fn preferred_member_comes_back_at_quality_0(
    edit: impl FnOnce(&mut Config<4, 2>),
    first: impl FnOnce(&mut A, u64),
) -> Cluster {
    let cfg = |me| {
        let mut c = config(me, 2);
        c.domains[0].preferred = Some(serial(1));
        c
    };
    let mut c = Cluster::new(vec![cfg(0), cfg(1)]);
    c.run_until(300);
    assert_eq!(c.role(1), Role::Active, "preferred");
    c.alive[1] = false;
    c.agents[1] = None;
    c.run_until(600);
    assert_eq!(c.role(0), Role::Active);
    let mut returning = cfg(1);
    edit(&mut returning);
    let mut back = A::new(returning, c.now, 2).unwrap();
    first(&mut back, c.now);
    assert_eq!(back.status().me.quality, 0);
    c.agents[1] = Some(back);
    c.alive[1] = true;
    c.pump();
    c
}

/// [`preferred_member_comes_back_at_quality_0`] with a main CPU that reports whether it
/// holds its peers' state ([`CAP_TABLE_HELD`]) from the start, not holding it yet.
fn pair_with_a_preferred_member_waiting_for_its_table() -> Cluster {
    let mut c = preferred_member_comes_back_at_quality_0(
        |_| {},
        |a, now| a.handle_host(now, HostMsg::Capabilities(CAP_TABLE_HELD)),
    );
    c.run_until(700);
    assert_eq!(c.role(0), Role::Active);
    assert_eq!(c.role(1), Role::Passive);
    c
}

/// A preferred member whose main CPU lacks its peers' connection table (it just came back)
/// does not take the domain from the live active, however long it waits: its quality is 0.
/// Once its main CPU holds the table it takes it after the hold-down, as preferred.
#[test]
fn a_member_without_its_peers_table_does_not_take_a_domain_from_a_live_active() {
    let mut c = pair_with_a_preferred_member_waiting_for_its_table();
    assert_eq!(c.a(0).status().peers[0].quality, 0, "its peers see it too");
    let hold = c.a(0).config().timers.hold_down_ms as u64;
    c.run_until(700 + 4 * hold);
    assert_eq!(c.role(0), Role::Active, "no preemption without the table");
    assert_eq!(c.role(1), Role::Passive);
    c.with(1, |a, now| a.handle_host(now, HostMsg::TableHeld(false)));
    c.run_until(700 + 5 * hold);
    assert_eq!(c.role(0), Role::Active);
    // The table arrived.
    let t = c.now;
    c.with(1, |a, now| a.handle_host(now, HostMsg::TableHeld(true)));
    assert_eq!(c.a(1).status().me.quality, 100);
    assert!(c
        .events_of(1)
        .contains(&EventKind::QualityChanged { from: 0, to: 100 }));
    c.run_until(t + hold + 20);
    assert_eq!(c.role(1), Role::Active, "preferred, with its table");
    assert_eq!(c.role(0), Role::Passive);
}

/// Without the table a member still takes over from an active that is lost: quality only
/// ranks the members left, and a partial table is better than none. Once active its quality
/// is whole again (its table is now the authoritative one).
#[test]
fn a_member_without_its_peers_table_still_takes_over_from_a_lost_active() {
    let mut c = pair_with_a_preferred_member_waiting_for_its_table();
    c.alive[0] = false;
    c.agents[0] = None;
    let dead = c.a(1).config().timers.profile.dead_ms() as u64;
    c.run_until(700 + dead + 20);
    assert_eq!(c.role(1), Role::Active);
    assert_eq!(c.a(1).status().me.quality, 100);
}

/// An active member is never lowered by the report (its table is the one the peers copy):
/// a main CPU that says it lacks the table while active changes nothing.
#[test]
fn an_active_member_keeps_its_quality_without_a_table_report() {
    let mut c = Cluster::pair();
    c.run_until(300);
    assert_eq!(c.role(0), Role::Active);
    c.with(0, |a, now| {
        a.handle_host(now, HostMsg::Capabilities(CAP_TABLE_HELD));
        a.handle_host(now, HostMsg::TableHeld(false));
    });
    assert_eq!(c.a(0).status().me.quality, 100);
    let hold = c.a(0).config().timers.hold_down_ms as u64;
    c.run_until(300 + 3 * hold);
    assert_eq!(c.role(0), Role::Active);
}

/// A member whose main CPU is watched but has not been heard yet forwards nothing: a
/// preferred member coming back before its daemon runs takes no domain from the live
/// active (it would have taken over into a black hole until its daemon started). Once its
/// main CPU speaks (an earlier release that never reports the table: counted as holding
/// it), it takes its domain back after the hold-down.
#[test]
fn a_member_whose_main_cpu_was_never_heard_does_not_take_a_domain_from_a_live_active() {
    let mut c =
        preferred_member_comes_back_at_quality_0(|c| c.main_cpu_timeout_ms = 1_000, |_, _| {});
    let hold = c.a(0).config().timers.hold_down_ms as u64;
    c.run_until(600 + 4 * hold);
    assert_eq!(
        c.role(0),
        Role::Active,
        "no takeover before the main CPU runs"
    );
    assert_eq!(c.role(1), Role::Passive);
    let t = c.now;
    c.with(1, |a, now| {
        a.handle_host(now, ifaces(&[("out", true, 100)]))
    });
    assert_eq!(c.a(1).status().me.quality, 100);
    c.run_until(t + hold + 20);
    assert_eq!(c.role(1), Role::Active, "preferred, with its main CPU");
}
