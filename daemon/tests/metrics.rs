//! The Prometheus endpoint over a real TCP connection on loopback: a scrape of `/metrics`
//! parsed with a Prometheus text-format parser (`prometheus-parse`) shows the data path's
//! role and failovers, every member's quality and role, the HA links, the sync tables and
//! counters, from the daemon's shared state; other paths and methods are refused.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ha_daemon::metrics;
use ha_daemon::runtime::{unix_ms, ForwardingRole, Shared};
use ha_proto::msg::host::{DomainSummary, LedReport, MemberSummary, StatusReport};
use ha_proto::msg::{FirmwareVersion, Forced, LinkState, Role, Serial};
use prometheus_parse::{Scrape, Value};

fn member(serial: &str, local: bool, quality: u8, role: Role) -> MemberSummary {
    let mut domains = heapless::Vec::new();
    domains
        .push(DomainSummary {
            domain: 0,
            role,
            priority: 1,
        })
        .unwrap();
    let mut links = heapless::Vec::new();
    links.push(LinkState::Up).unwrap();
    links.push(LinkState::Down).unwrap();
    MemberSummary {
        serial: Serial::new(serial).unwrap(),
        local,
        alive: true,
        quality,
        forced: Forced::None,
        firmware: FirmwareVersion {
            major: 0,
            minor: 1,
            patch: 0,
        },
        config_revision: 3,
        paused: false,
        domains,
        links,
        mode_since_ms: 0,
    }
}

fn get(addr: std::net::SocketAddr, request: &str) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.write_all(request.as_bytes()).expect("send");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    out
}

#[test]
fn a_scrape_parses_and_shows_roles_quality_links_and_sync_counters() {
    let mut members = heapless::Vec::new();
    members
        .push(member("SN-A", true, 100, Role::Active))
        .unwrap();
    members
        .push(member("SN-B", false, 60, Role::Passive))
        .unwrap();
    let now = unix_ms();
    let mut sh = Shared {
        serial: Serial::new("SN-A").unwrap(),
        cluster_id: 4242,
        status: Some((
            StatusReport {
                uptime_ms: 5_000,
                members,
                led: LedReport::Steady,
                frames_sent: 10,
                frames_received: 9,
                frames_rejected: 1,
            },
            now,
        )),
        forwarding: ForwardingRole {
            active: true,
            domains: vec![0, 1],
            since_ms: now - 3_000,
            changes: 2,
            started_ms: now - 60_000,
            controller_alive: true,
        },
        host_connected: true,
        host_accepted: 77,
        host_rtt: Some(ha_daemon::host_rtt::HostRtt {
            last_us: 2_500,
            max_us: 9_000,
        }),
        counters: Some(ha_proto::msg::host::CountersReport {
            to_active: 3,
            peers_lost: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    sh.host_rejects.insert("bad_crc".into(), 1);
    sh.sync_counters
        .insert("table_kernel_connections".into(), 1000);
    sh.sync_counters.insert("kernel_installed".into(), 1234);
    let stop = Arc::new(AtomicBool::new(false));
    let (addr, thread) = metrics::spawn(
        "127.0.0.1:0".parse().unwrap(),
        Arc::new(Mutex::new(sh)),
        stop.clone(),
    )
    .expect("metrics endpoint");

    let reply = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    let (head, body) = reply.split_once("\r\n\r\n").expect("HTTP reply");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.contains("text/plain; version=0.0.4"), "{head}");
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("parses");
    let one = |name: &str, labels: &[(&str, &str)]| -> f64 {
        let s = scrape
            .samples
            .iter()
            .find(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .unwrap_or_else(|| panic!("no {name} {labels:?} in\n{body}"));
        match s.value {
            Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    };
    assert_eq!(one("ha_forwarding_active", &[]), 1.0);
    assert_eq!(one("ha_forwarding_domain_active", &[("domain", "1")]), 1.0);
    assert_eq!(one("ha_forwarding_role_changes_total", &[]), 2.0);
    assert!((2.0..=4.0).contains(&one("ha_forwarding_role_seconds", &[])));
    assert_eq!(one("ha_member_quality", &[("serial", "SN-B")]), 60.0);
    assert_eq!(
        one("ha_member_role", &[("serial", "SN-A"), ("role", "active")]),
        1.0
    );
    assert_eq!(
        one("ha_link_up", &[("serial", "SN-B"), ("link", "backup")]),
        0.0
    );
    assert_eq!(
        one("ha_link_up", &[("serial", "SN-B"), ("link", "main")]),
        1.0
    );
    assert_eq!(
        one("ha_sync_table_items", &[("table", "kernel_connections")]),
        1000.0
    );
    assert_eq!(
        one("ha_sync_events_total", &[("counter", "kernel_installed")]),
        1234.0
    );
    assert_eq!(
        one("ha_host_frames_rejected_total", &[("reason", "bad_crc")]),
        1.0
    );
    assert_eq!(
        one("ha_controller_frames_total", &[("direction", "rejected")]),
        1.0
    );
    assert_eq!(one("ha_controller_takeovers_total", &[]), 3.0);
    assert_eq!(one("ha_host_link_rtt_seconds", &[]), 0.0025);
    assert_eq!(one("ha_host_link_rtt_max_seconds", &[]), 0.009);
    assert_eq!(one("ha_controller_peers_lost_total", &[]), 2.0);
    assert!(scrape.docs.contains_key("ha_member_quality"), "HELP text");

    assert!(get(addr, "GET /other HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404"));
    assert!(get(addr, "POST /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 405"));
    // Garbage: an answer, no panic, the endpoint still serves.
    assert!(get(addr, "\u{1}\u{2}\r\n\r\n").starts_with("HTTP/1.1 405"));
    assert!(get(addr, "GET /metrics HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 200"));
    stop.store(true, Ordering::Relaxed);
    thread.join().expect("endpoint thread");
}
