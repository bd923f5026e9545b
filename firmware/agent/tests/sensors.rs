//! The sensor source (defect 9): a source that stops reporting, or never reports, counts as
//! failed after the configured sensor timeout (hardware part 0, an event), and counts again
//! from its next report (another event). 0 means the member has no sensor source.

mod common;

use common::*;
use ha_agent::config::{DEFAULT_SENSOR_TIMEOUT_MS, MIN_SENSOR_TIMEOUT_MS};

const TIMEOUT: u32 = 2_000;

fn with_source(me: usize, n: usize) -> Config<4, 2> {
    let mut c = config(me, n);
    c.sensor_timeout_ms = TIMEOUT;
    c
}

fn psus(ok: [bool; 2]) -> [SensorReading; 2] {
    [0, 1].map(|i| SensorReading {
        kind: SensorKind::Psu,
        index: i as u8,
        ok: ok[i],
    })
}

fn sensor_events(a: &A) -> Vec<EventKind> {
    a.events()
        .iter()
        .map(|e| e.kind)
        .filter(|k| matches!(k, EventKind::SensorsSilent { .. } | EventKind::SensorsBack))
        .collect()
}

#[test]
fn a_source_that_never_reports_counts_as_failed_after_the_timeout() {
    let mut a = A::new(with_source(0, 1), 0, 1).unwrap();
    assert!(a.poll_at() <= TIMEOUT as u64, "the agent wakes for it");
    a.handle_timeout(TIMEOUT as u64 - 1);
    assert_eq!(a.status().me.hardware_quality, 100);
    assert!(!a.status().sensors_silent);
    a.handle_timeout(TIMEOUT as u64);
    assert!(a.status().sensors_silent);
    assert_eq!(a.status().me.hardware_quality, 0);
    assert_eq!(a.status().me.quality, 0);
    assert_eq!(
        sensor_events(&a),
        vec![EventKind::SensorsSilent { last_ms: 0 }]
    );
    // Declared once; no wake-up for it while it stays silent.
    a.handle_timeout(3 * TIMEOUT as u64);
    assert_eq!(sensor_events(&a).len(), 1);
}

#[test]
fn a_source_that_stops_reporting_counts_as_failed_and_again_when_it_reports() {
    let mut a = A::new(with_source(0, 1), 0, 1).unwrap();
    a.handle_sensor_report(100, &psus([true, false]));
    assert_eq!(a.status().me.hardware_quality, 50);
    // Reports keep it fresh, each one restarting the wait.
    a.handle_sensor_report(1_500, &psus([true, false]));
    a.handle_timeout(1_500 + TIMEOUT as u64 - 1);
    assert_eq!(a.status().me.hardware_quality, 50);
    // Then silence: failed, whatever the last readings said.
    let t = 1_500 + TIMEOUT as u64;
    a.handle_timeout(t);
    assert_eq!(a.status().me.hardware_quality, 0);
    assert!(a
        .events()
        .iter()
        .any(|e| e.at_ms == t && e.kind == EventKind::SensorsSilent { last_ms: 1_500 }));
    // Back: its readings count again, and the wait starts over.
    a.handle_sensor_report(t + 10, &psus([true, true]));
    assert!(!a.status().sensors_silent);
    assert_eq!(a.status().me.hardware_quality, 100);
    assert_eq!(
        sensor_events(&a),
        vec![
            EventKind::SensorsSilent { last_ms: 1_500 },
            EventKind::SensorsBack
        ]
    );
    a.handle_timeout(t + 10 + TIMEOUT as u64);
    assert_eq!(a.status().me.hardware_quality, 0, "silent again");
}

#[test]
fn a_member_without_a_sensor_source_keeps_its_hardware_part() {
    // Config::new: no sensor source (0), as before the timeout existed.
    let mut a = A::new(config(0, 1), 0, 1).unwrap();
    assert_eq!(a.config().sensor_timeout_ms, 0);
    a.handle_timeout(10 * DEFAULT_SENSOR_TIMEOUT_MS as u64);
    assert_eq!(a.status().me.hardware_quality, 100);
    assert!(sensor_events(&a).is_empty());
    // A reload that removes the source ends a silence.
    let mut a = A::new(with_source(0, 1), 0, 1).unwrap();
    a.handle_timeout(TIMEOUT as u64);
    assert_eq!(a.status().me.hardware_quality, 0);
    a.reload(TIMEOUT as u64 + 1, config(0, 1)).unwrap();
    assert!(!a.status().sensors_silent);
    assert_eq!(a.status().me.hardware_quality, 100);
}

#[test]
fn a_too_short_sensor_timeout_is_refused() {
    let mut c = config(0, 2);
    c.sensor_timeout_ms = MIN_SENSOR_TIMEOUT_MS - 1;
    assert_eq!(
        c.validate(),
        Err(ConfigError::SensorTimeoutTooShort(
            MIN_SENSOR_TIMEOUT_MS - 1
        ))
    );
    c.sensor_timeout_ms = MIN_SENSOR_TIMEOUT_MS;
    assert_eq!(c.validate(), Ok(()));
}

#[test]
fn the_active_whose_source_goes_silent_hands_over_to_a_healthy_passive() {
    let mut c = Cluster::new(vec![with_source(0, 2), with_source(1, 2)]);
    // Both sources report every 500 ms for a while; m0 is active.
    let mut t = 0;
    while t < 3_000 {
        for m in 0..2 {
            c.with(m, |a, now| a.handle_sensor_report(now, &psus([true, true])));
        }
        t += 500;
        c.run_until(t);
    }
    assert_eq!((c.role(0), c.role(1)), (Role::Active, Role::Passive));
    // m0's source stops; m1's keeps reporting.
    let stop = t;
    let hold = c.a(1).config().timers.hold_down_ms as u64;
    while t < stop + TIMEOUT as u64 + hold + 1_000 {
        c.with(1, |a, now| a.handle_sensor_report(now, &psus([true, true])));
        t += 500;
        c.run_until(t);
    }
    assert_eq!(c.a(0).status().me.quality, 0);
    assert_eq!(c.a(1).status().peers[0].quality, 0, "announced to the peer");
    assert_eq!((c.role(0), c.role(1)), (Role::Passive, Role::Active));
    assert!(c.events_of(0).contains(&EventKind::SensorsSilent {
        last_ms: stop - 500
    }));
    assert!(c.events_of(1).contains(&EventKind::RoleChanged {
        domain: 0,
        from: Role::Passive,
        to: Role::Active,
        reason: Reason::Better
    }));
    // The event reaches the main CPU by name.
    let e = c
        .a(0)
        .events()
        .iter()
        .find(|e| matches!(e.kind, EventKind::SensorsSilent { .. }))
        .unwrap();
    assert_eq!(e.report().name.as_str(), "sensors_silent");
}
