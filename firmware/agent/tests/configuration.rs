//! The configuration: validation, reload in place, member lists.

mod common;

use common::*;

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

/// The settings `config(_, 2)` runs, as a block would carry them, under `revision`.
fn settings(revision: u64) -> ha_proto::config_block::HaSettings {
    let c = config(0, 2);
    ha_proto::config_block::HaSettings {
        revision,
        encrypt: c.encrypt,
        backup_link: c.links == 2,
        timers: c.timers.profile,
        domains: heapless::Vec::from_slice(&c.domains).unwrap(),
        aggregate: c.quality.aggregate,
        tpm_included: c.quality.tpm_included,
        weights: c.quality.weights,
    }
}

#[test]
fn settings_from_the_main_cpu_apply_in_place_and_a_new_domain_list_is_refused() {
    use ha_proto::msg::host::HostMsg;
    use ha_proto::sensor::{SensorKind, SensorReading};
    let mut c = Cluster::pair();
    c.run_until(300);
    let passive = 1 - (0..2).find(|&i| c.role(i) == Role::Active).unwrap();
    // A failed PSU beside a working fan: the hardware part is their weights' share.
    let readings = [
        SensorReading {
            kind: SensorKind::Psu,
            index: 0,
            ok: false,
        },
        SensorReading {
            kind: SensorKind::Fan,
            index: 0,
            ok: true,
        },
    ];
    c.with(passive, |a, now| a.handle_sensor_report(now, &readings));
    c.run_until(400);
    assert_eq!(c.a(passive).status().me.quality, 50, "equal weights");

    // The PSU weighs three times the fan now: the quality follows, nobody swaps.
    let mut heavier = settings(0xABCD);
    heavier.weights.psu = 300;
    c.with(passive, |a, now| {
        a.handle_host(now, HostMsg::Settings(heavier))
    });
    c.run_until(600);
    let me = c.a(passive).status().me;
    assert_eq!(me.quality, 25);
    assert_eq!(me.config_revision, 0xABCD);
    assert_eq!(c.role(passive), Role::Passive, "a reload is not a swap");
    assert_eq!(c.role(1 - passive), Role::Active);
    let applied = c.events_of(passive);
    assert!(
        applied.contains(&EventKind::SettingsReloaded {
            revision: 0xABCD,
            changed: ha_agent::config::SettingsChanges(ha_agent::config::SettingsChanges::QUALITY),
        }),
        "{applied:?}"
    );
    // The peer sees the new revision, and that the two members differ.
    let peer = c.a(1 - passive).status();
    assert_eq!(peer.peers[0].config_revision, 0xABCD);
    assert!(!peer.me.config_synced);

    // A second domain needs a restart: refused, and nothing changes.
    let mut wider = settings(0xBEEF);
    wider
        .domains
        .push(ha_proto::config_block::DomainEntry {
            id: 1,
            preferred: None,
        })
        .unwrap();
    c.with(passive, |a, now| {
        a.handle_host(now, HostMsg::Settings(wider))
    });
    c.run_until(700);
    let me = c.a(passive).status().me;
    assert_eq!((me.quality, me.config_revision), (25, 0xABCD));
    assert!(c.events_of(passive).contains(&EventKind::SettingsRefused {
        reason: ConfigError::ReloadNeedsRestart
    }));
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

/// Each profile's probe timing: the probe starts early enough that its answer (probe time
/// plus a host-link round trip) is there when the dead time ends, never before a heartbeat
/// and a half of silence, and the agent waits for the answer longer than the probe lasts.
#[test]
fn every_profile_probes_before_its_dead_time_ends() {
    let custom = |interval_ms, miss_limit| TimerProfile::Custom {
        interval_ms,
        miss_limit,
    };
    for (profile, probe, suspect) in [
        (TimerProfile::Fast, 10, 15),
        (TimerProfile::Default, 150, 1700),
        (custom(50, 4), 66, 75),
        // The fastest: 15 ms dead time, a 5 ms probe from 7 ms of silence.
        (custom(5, 3), 5, 7),
    ] {
        let t = Timers::for_profile(profile);
        assert_eq!((t.probe_ms, t.suspect_ms), (probe, suspect), "{profile:?}");
    }
    for interval in [5u32, 7, 10, 20, 50, 100, 250, 1000] {
        for miss in [3u8, 4, 10, 20] {
            let p = custom(interval, miss);
            let t = Timers::for_profile(p);
            assert!(t.suspect_ms <= p.dead_ms(), "{p:?}");
            assert!(t.suspect_ms >= interval + interval / 2, "{p:?}");
            assert!(t.probe_timeout_ms > t.probe_ms, "{p:?}");
            let mut c = config(0, 2);
            c.timers = t;
            assert!(c.validate().is_ok(), "{p:?}");
        }
    }
}

/// The firmware builds its agent in a static slot (`Agent::init_in`): the same agent as
/// `Agent::new` (same first outputs, same status), and the same refusals.
#[test]
fn an_agent_built_in_place_is_the_agent_new_builds() {
    let mut by_value = Agent::new(config(0, 2), 1_000, 7).expect("new");
    let mut slot = core::mem::MaybeUninit::uninit();
    let in_place = Agent::init_in(&mut slot, config(0, 2), 1_000, 7).expect("init_in");
    let drain = |a: &mut Agent<4, 2>| {
        let mut v = Vec::new();
        while let Some(o) = a.poll_output() {
            v.push(format!("{o:?}"));
        }
        v
    };
    assert_eq!(drain(&mut by_value), drain(in_place));
    assert_eq!(by_value.poll_at(), in_place.poll_at());
    assert_eq!(by_value.role(0), in_place.role(0));
    let mut bad = config(0, 2);
    bad.me = serial(3);
    let mut slot = core::mem::MaybeUninit::uninit();
    assert_eq!(
        Agent::init_in(&mut slot, bad, 1_000, 7).err(),
        Some(ConfigError::SelfNotMember)
    );
    let mut slot = core::mem::MaybeUninit::uninit();
    assert_eq!(
        Agent::init_in(&mut slot, config(0, 2), 1_000, 0).err(),
        Some(ConfigError::NoBootEpoch)
    );
}
