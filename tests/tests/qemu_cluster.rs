//! Two-member QEMU clusters (fast timers, main + backup link) through the harness: election,
//! crash takeover, link cuts, split brain and its resolution, hardware failures, operator
//! forcing, and the LED patterns. Run one at a time (`--test-threads=1`; the harness also
//! holds a process-wide lock): each boots its own cluster.

use std::time::{Duration, Instant};

use ha_e2e::firmware_elf;
use ha_hal::bridge::SensorKind;
use ha_proto::msg::host::{HostMsg, IfaceState};
use ha_proto::msg::member::AdminCommand;
use ha_proto::msg::{LinkState, Role};
use ha_testkit::{Cluster, ClusterConfig, LedObserved, Link};
use ha_testwire::Impair;

fn boot() -> Option<Cluster> {
    boot_with("fast")
}

fn boot_with(timers: &str) -> Option<Cluster> {
    let elf = firmware_elf(std::path::Path::new(env!("CARGO_TARGET_TMPDIR")))?;
    let mut cfg = ClusterConfig::new(elf);
    cfg.timers = timers.into();
    let mut c = Cluster::start(&cfg).expect("cluster starts");
    c.wait_one_active(Duration::from_secs(30))
        .expect("one member elected active");
    // The passive has decided too.
    assert!(
        c.wait_for(Duration::from_secs(10), |c| {
            c.members()
                .iter()
                .filter(|m| m.role() == Some(Role::Passive))
                .count()
                == 1
        }),
        "no passive member:\n{}",
        c.status_table()
    );
    // Every HA link is up on both (a member decides as soon as it heard its peer on one
    // link; the main link's Ethernet may come up a little later): the tests start from a
    // whole cluster.
    assert!(
        c.wait_for(Duration::from_secs(10), |c| {
            c.members().iter().all(|m| {
                m.host().status.as_ref().is_some_and(|(_, s)| {
                    s.members
                        .iter()
                        .find(|x| x.local)
                        .is_some_and(|x| x.links.iter().all(|l| *l == LinkState::Up))
                })
            })
        }),
        "not every HA link up:\n{}",
        c.status_table()
    );
    Some(c)
}

fn has_event(c: &Cluster, i: usize, since: Instant, name: &str) -> bool {
    c.member(i)
        .events_since(since)
        .iter()
        .any(|e| e.split(' ').next() == Some(name))
}

/// Waits (3 s at most) for event `name` of member `i` since `since`: the role travels ahead
/// of queued events on the host link, so an event may arrive just after the role it explains.
fn wait_event(c: &mut Cluster, i: usize, since: Instant, name: &str) -> bool {
    c.wait_for(Duration::from_secs(3), |c| has_event(c, i, since, name))
}

fn cut() -> Impair {
    Impair {
        cut: true,
        ..Impair::default()
    }
}

#[test]
fn two_members_elect_one_active_and_the_passive_takes_over_a_killed_active() {
    let Some(mut c) = boot() else { return };
    let active = c.actives()[0];
    let passive = 1 - active;
    let killed = c.kill(active);
    assert!(
        c.wait_for(Duration::from_secs(5), |c| c
            .member(passive)
            .decision_since(killed, Role::Active)
            .is_some()),
        "no takeover:\n{}",
        c.status_table()
    );
    assert!(wait_event(&mut c, passive, killed, "peer_lost"));
    assert_eq!(c.actives(), vec![passive]);
}

#[test]
fn led_steady_on_the_active_and_blinking_on_the_passive() {
    let Some(mut c) = boot() else { return };
    let active = c.actives()[0];
    let passive = 1 - active;
    // A passive blink period is 3 s: watch up to 10 s for a complete on and off phase.
    let ok = c.wait_for(Duration::from_secs(10), |c| {
        matches!(
            c.member(passive).led_observed(Duration::from_secs(4)),
            LedObserved::Blink { on_ms, off_ms }
                if (700..=1300).contains(&on_ms) && (1600..=2400).contains(&off_ms)
        ) && c.member(active).led_observed(Duration::from_secs(4)) == LedObserved::Steady
    });
    assert!(
        ok,
        "LEDs: active {}, passive {}",
        c.member(active).led_observed(Duration::from_secs(4)),
        c.member(passive).led_observed(Duration::from_secs(4))
    );
}

#[test]
fn main_link_cut_is_an_event_not_a_swap_both_cut_is_split_brain_restore_resolves() {
    // Default timers: with the fast profile (30 ms dead time, 10 ms probe timeout) the serial
    // backup link alone flaps under QEMU (see docs/qemu.md, findings).
    let Some(mut c) = boot_with("default") else {
        return;
    };
    let active = c.actives()[0];
    let passive = 1 - active;

    // Main link only: the backup link keeps the pair together.
    let t = Instant::now();
    c.impair(Some(Link::Main), cut()).expect("cut main");
    assert!(
        c.wait_for(Duration::from_secs(5), |c| has_event(
            c,
            passive,
            t,
            "link_down"
        )),
        "no link_down event on the passive: {:?}\n{}\nall its events: {:?}",
        c.member(passive).events_since(t),
        c.status_table(),
        c.member(passive).events_since(c.started())
    );
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.actives(), vec![active], "swap on a main-link cut");
    assert!(
        c.member(passive).decision_since(t, Role::Active).is_none(),
        "the passive went active on a main-link cut: {:?}\nactive's events: {:?}",
        c.member(passive).events_since(t),
        c.member(active).events_since(t)
    );

    // Both HA links and the data path: each side is alone, both become active.
    let t = Instant::now();
    c.impair(None, cut()).expect("cut both");
    c.cut_data(true);
    assert!(
        c.wait_for(Duration::from_secs(15), |c| c.actives().len() == 2),
        "not both active with every link cut:\n{}",
        c.status_table()
    );
    // The role travels ahead of queued events on the host link: the event may follow it.
    assert!(
        c.wait_for(Duration::from_secs(3), |c| has_event(
            c,
            passive,
            t,
            "peer_lost"
        )),
        "no peer_lost event on the passive: {:?}",
        c.member(passive).events_since(t)
    );
    // Stay split longer than a link's dead time (2 s): a collision, not a handover.
    std::thread::sleep(Duration::from_secs(3));
    assert_eq!(c.actives().len(), 2, "split brain did not last");
    eprintln!("split brain: both members active:\n{}", c.status_table());

    // Restore: the collision resolves to one active, and it is reported.
    let t = Instant::now();
    c.cut_data(false);
    c.impair(None, Impair::default()).expect("restore");
    assert!(
        c.wait_for(Duration::from_secs(20), |c| c.actives().len() == 1
            && (has_event(c, 0, t, "collision")
                || has_event(c, 1, t, "collision"))),
        "no single active with a collision event after restore:\n{}\n{:?}\n{:?}",
        c.status_table(),
        c.member(0).events_since(t),
        c.member(1).events_since(t)
    );
}

#[test]
fn fan_then_psu_failure_on_the_active_swaps() {
    let Some(mut c) = boot() else { return };
    for (kind, index) in [(SensorKind::Fan, 0), (SensorKind::Psu, 1)] {
        let active = c.actives()[0];
        let other = 1 - active;
        let t = Instant::now();
        c.member(active)
            .set_sensor(kind, index, false)
            .expect("fail component");
        assert!(
            c.wait_for(Duration::from_secs(15), |c| c.actives() == vec![other]),
            "{kind:?} {index} failure on the active did not swap:\n{}",
            c.status_table()
        );
        assert!(wait_event(&mut c, active, t, "quality_changed"));
        // Repair it, so that the next failure is on the new active only.
        c.member(active)
            .set_sensor(kind, index, true)
            .expect("restore component");
        std::thread::sleep(Duration::from_secs(1));
    }
}

#[test]
fn admin_force_passive_force_active_and_reset() {
    let Some(mut c) = boot() else { return };
    let first = c.actives()[0];
    let second = 1 - first;
    c.member(first)
        .admin(AdminCommand::ForcePassive)
        .expect("force passive");
    assert!(
        c.wait_for(Duration::from_secs(5), |c| c.actives() == vec![second]),
        "force passive did not move the active role:\n{}",
        c.status_table()
    );
    c.member(first)
        .admin(AdminCommand::ForceActive)
        .expect("force active");
    assert!(
        c.wait_for(Duration::from_secs(5), |c| c.actives() == vec![first]),
        "force active did not take the role back:\n{}",
        c.status_table()
    );
    let t = Instant::now();
    c.member(first)
        .admin(AdminCommand::ResetForcing)
        .expect("reset");
    assert!(
        c.wait_for(Duration::from_secs(5), |c| has_event(
            c,
            first,
            t,
            "forcing_changed"
        )),
        "no forcing_changed event after reset: {:?}",
        c.member(first).events_since(t)
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(c.actives().len(), 1, "reset left {:?} active", c.actives());
}

/// The main CPU's interface list: `out` and `in`, `out` up or down.
fn interfaces(out_up: bool) -> HostMsg {
    let iface = |name: &str, up| IfaceState {
        name: heapless::String::try_from(name).expect("short name"),
        up,
        weight: 100,
        aggregate: None,
    };
    let mut list = heapless::Vec::new();
    list.push(iface("out", out_up)).expect("capacity");
    list.push(iface("in", true)).expect("capacity");
    HostMsg::Interfaces(list)
}

#[test]
fn interface_down_on_the_active_swaps() {
    let Some(mut c) = boot() else { return };
    for i in 0..2 {
        c.member(i).send(interfaces(true)).expect("interfaces");
    }
    std::thread::sleep(Duration::from_secs(1));
    let active = c.actives()[0];
    let other = 1 - active;
    let t = Instant::now();
    c.member(active)
        .send(interfaces(false))
        .expect("interface down");
    assert!(
        c.wait_for(Duration::from_secs(15), |c| c.actives() == vec![other]),
        "interface down on the active did not swap:\n{}",
        c.status_table()
    );
    assert!(wait_event(&mut c, active, t, "quality_changed"));
}
