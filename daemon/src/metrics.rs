//! The Prometheus endpoint (`metrics_listen` in the configuration): `GET /metrics` answered
//! in the text exposition format (version 0.0.4) from the daemon's shared state: the data
//! path's role and its changes (failovers), the controller's last status report (every
//! member's quality, roles, HA links), the host link, the state sync's counters and table
//! sizes, the kernel path's counters.
//!
//! The HTTP part is the few lines a scrape needs (one request per connection, bounded read,
//! 2 s timeouts), written here rather than pulling in an HTTP server for one GET.

use std::fmt::Write as _;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ha_proto::msg::{LinkState, Role};

use crate::runtime::{unix_ms, Shared};

/// Longest request read (a scrape's GET is a few hundred bytes).
const MAX_REQUEST: usize = 8 * 1024;

/// Writes `# HELP`/`# TYPE` of a metric family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// Escapes a label value (backslash, quote, newline).
fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn role_name(r: Role) -> &'static str {
    match r {
        Role::Starting => "starting",
        Role::Active => "active",
        Role::Passive => "passive",
        Role::Disabled => "disabled",
    }
}

/// The metrics of `sh` at `now_ms` (Unix ms), in the text exposition format.
pub fn render(sh: &Shared, now_ms: u64) -> String {
    let mut o = String::new();
    let me = label(sh.serial.as_str());
    family(
        &mut o,
        "ha_info",
        "gauge",
        "This member: serial and cluster id.",
    );
    let _ = writeln!(
        o,
        "ha_info{{serial=\"{me}\",cluster_id=\"{}\"}} 1",
        sh.cluster_id
    );
    family(
        &mut o,
        "ha_forwarding_active",
        "gauge",
        "1 while this member's data path forwards and holds the cluster addresses.",
    );
    let f = &sh.forwarding;
    let _ = writeln!(o, "ha_forwarding_active {}", u8::from(f.active));
    family(
        &mut o,
        "ha_forwarding_domain_active",
        "gauge",
        "1 for each HA domain this member's data path forwards for (load sharing: several).",
    );
    for d in &f.domains {
        let _ = writeln!(o, "ha_forwarding_domain_active{{domain=\"{d}\"}} 1");
    }
    family(
        &mut o,
        "ha_forwarding_role_changes_total",
        "counter",
        "Role changes of the data path since the daemon started (failovers and swaps).",
    );
    let _ = writeln!(o, "ha_forwarding_role_changes_total {}", f.changes);
    family(
        &mut o,
        "ha_forwarding_role_seconds",
        "gauge",
        "Seconds since the data path's role last changed.",
    );
    let _ = writeln!(
        o,
        "ha_forwarding_role_seconds {}",
        now_ms.saturating_sub(f.since_ms) / 1000
    );
    family(
        &mut o,
        "ha_controller_alive",
        "gauge",
        "1 while the HA controller is heard on the host link.",
    );
    let _ = writeln!(o, "ha_controller_alive {}", u8::from(f.controller_alive));
    if let Some(c) = &sh.counters {
        for (name, help, v) in [
            (
                "ha_controller_takeovers_total",
                "Role changes of this member to active in any domain, counted by its controller \
                 since it booted (the election at boot included).",
                c.to_active,
            ),
            (
                "ha_controller_releases_total",
                "Role changes of this member away from active, counted by its controller.",
                c.from_active,
            ),
            (
                "ha_controller_peers_lost_total",
                "Peers the controller declared lost (a failed liveness probe or none answered).",
                c.peers_lost,
            ),
            (
                "ha_controller_probes_reasked_total",
                "Liveness probes the controller asked again because the answer was late.",
                c.probes_reasked,
            ),
            (
                "ha_controller_events_unsent_total",
                "Controller events overwritten in its ring before they were sent.",
                c.events_unsent,
            ),
        ] {
            family(&mut o, name, "counter", help);
            let _ = writeln!(o, "{name} {v}");
        }
    }
    family(
        &mut o,
        "ha_host_link_up",
        "gauge",
        "1 while the host link to the controller is connected.",
    );
    let _ = writeln!(o, "ha_host_link_up {}", u8::from(sh.host_connected));
    if let Some(r) = sh.host_rtt {
        family(
            &mut o,
            "ha_host_link_rtt_seconds",
            "gauge",
            "The host link's last keepalive round trip through the controller.",
        );
        let _ = writeln!(o, "ha_host_link_rtt_seconds {}", r.last_us as f64 / 1e6);
        family(
            &mut o,
            "ha_host_link_rtt_max_seconds",
            "gauge",
            "The host link's longest keepalive round trip since the daemon started.",
        );
        let _ = writeln!(o, "ha_host_link_rtt_max_seconds {}", r.max_us as f64 / 1e6);
    }
    family(
        &mut o,
        "ha_host_frames_accepted_total",
        "counter",
        "Host-link frames accepted.",
    );
    let _ = writeln!(o, "ha_host_frames_accepted_total {}", sh.host_accepted);
    family(
        &mut o,
        "ha_host_messages_superseded_total",
        "counter",
        "Messages to the controller dropped before they were written: a newer one said as much.",
    );
    let _ = writeln!(
        o,
        "ha_host_messages_superseded_total {}",
        sh.host_superseded
    );
    family(
        &mut o,
        "ha_host_status_resends_total",
        "counter",
        "Status requests asked again because the controller's answer was lost or late.",
    );
    let _ = writeln!(o, "ha_host_status_resends_total {}", sh.status_resends);
    family(
        &mut o,
        "ha_host_frames_rejected_total",
        "counter",
        "Host-link frames rejected, by reason.",
    );
    for (k, v) in &sh.host_rejects {
        let _ = writeln!(
            o,
            "ha_host_frames_rejected_total{{reason=\"{}\"}} {v}",
            label(k)
        );
    }
    if let Some((r, arrived)) = &sh.status {
        family(
            &mut o,
            "ha_status_age_seconds",
            "gauge",
            "Seconds since the controller's last status report.",
        );
        let _ = writeln!(
            o,
            "ha_status_age_seconds {}",
            now_ms.saturating_sub(*arrived) / 1000
        );
        family(
            &mut o,
            "ha_member_alive",
            "gauge",
            "1 when the member is heard.",
        );
        for m in &r.members {
            let _ = writeln!(
                o,
                "ha_member_alive{{serial=\"{}\"}} {}",
                label(m.serial.as_str()),
                u8::from(m.alive)
            );
        }
        family(
            &mut o,
            "ha_member_quality",
            "gauge",
            "The member's quality factor, 0-100.",
        );
        for m in &r.members {
            let _ = writeln!(
                o,
                "ha_member_quality{{serial=\"{}\"}} {}",
                label(m.serial.as_str()),
                m.quality
            );
        }
        family(
            &mut o,
            "ha_fail_soft",
            "gauge",
            "1 while the members heard run different firmware versions (fail-soft).",
        );
        let mut fw: Vec<_> = r
            .members
            .iter()
            .filter(|m| m.alive)
            .map(|m| m.firmware)
            .collect();
        fw.sort_unstable_by_key(|f| (f.major, f.minor, f.patch));
        fw.dedup();
        let _ = writeln!(o, "ha_fail_soft {}", u8::from(fw.len() > 1));
        family(
            &mut o,
            "ha_member_paused",
            "gauge",
            "1 while the member's HA decisions are paused.",
        );
        for m in &r.members {
            let _ = writeln!(
                o,
                "ha_member_paused{{serial=\"{}\"}} {}",
                label(m.serial.as_str()),
                u8::from(m.paused)
            );
        }
        family(
            &mut o,
            "ha_member_role",
            "gauge",
            "1 for the member's role in each HA domain.",
        );
        for m in &r.members {
            for d in &m.domains {
                let _ = writeln!(
                    o,
                    "ha_member_role{{serial=\"{}\",domain=\"{}\",role=\"{}\"}} 1",
                    label(m.serial.as_str()),
                    d.domain,
                    role_name(d.role)
                );
            }
        }
        family(
            &mut o,
            "ha_link_up",
            "gauge",
            "HA link state towards the member (local member: towards any peer): 1 up, 0 down.",
        );
        for m in &r.members {
            for (i, l) in m.links.iter().enumerate() {
                if *l == LinkState::Absent {
                    continue;
                }
                let _ = writeln!(
                    o,
                    "ha_link_up{{serial=\"{}\",link=\"{}\"}} {}",
                    label(m.serial.as_str()),
                    if i == 0 { "main" } else { "backup" },
                    u8::from(*l == LinkState::Up)
                );
            }
        }
        family(
            &mut o,
            "ha_controller_frames_total",
            "counter",
            "HA-link frames of the local controller: sent, received (accepted), rejected.",
        );
        for (dir, n) in [
            ("sent", r.frames_sent),
            ("received", r.frames_received),
            ("rejected", r.frames_rejected),
        ] {
            let _ = writeln!(o, "ha_controller_frames_total{{direction=\"{dir}\"}} {n}");
        }
    }
    // The sync thread's counters: table sizes are gauges, the rest counters.
    family(
        &mut o,
        "ha_sync_table_items",
        "gauge",
        "Items in each synchronized table.",
    );
    for (k, v) in &sh.sync_counters {
        if let Some(t) = k.strip_prefix("table_") {
            let _ = writeln!(o, "ha_sync_table_items{{table=\"{}\"}} {v}", label(t));
        }
    }
    family(
        &mut o,
        "ha_sync_events_total",
        "counter",
        "State-sync and kernel-path counters by name (records applied, refused per reason, \
         kernel events, installs, expectations, refreshes).",
    );
    for (k, v) in &sh.sync_counters {
        if !k.starts_with("table_") {
            let _ = writeln!(o, "ha_sync_events_total{{counter=\"{}\"}} {v}", label(k));
        }
    }
    o
}

/// Answers one connection: `GET /metrics` → 200 with [`render`], anything else → 404 / 405.
fn answer(mut s: TcpStream, shared: &Mutex<Shared>) -> io::Result<()> {
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    s.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut req = Vec::with_capacity(512);
    let mut buf = [0u8; 1024];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") && req.len() < MAX_REQUEST {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        req.extend_from_slice(&buf[..n]);
    }
    let line = String::from_utf8_lossy(req.split(|b| *b == b'\r').next().unwrap_or(&[]));
    let mut parts = line.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (status, body, ctype) = match (method, path.split('?').next().unwrap_or("")) {
        ("GET", "/metrics") => {
            let sh = shared.lock().unwrap_or_else(|p| p.into_inner());
            (
                "200 OK",
                render(&sh, unix_ms()),
                "text/plain; version=0.0.4; charset=utf-8",
            )
        }
        ("GET", _) => (
            "404 Not Found",
            "only /metrics is served\n".to_string(),
            "text/plain",
        ),
        _ => (
            "405 Method Not Allowed",
            "only GET\n".to_string(),
            "text/plain",
        ),
    };
    write!(
        s,
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    s.flush()
}

/// Serves the endpoint on `addr` until `stop` (checked every 100 ms); one connection at a
/// time (a scrape is one short request). Returns the bound address (port 0: the one
/// chosen) and the thread.
pub fn spawn(
    addr: SocketAddr,
    shared: Arc<Mutex<Shared>>,
    stop: Arc<AtomicBool>,
) -> io::Result<(SocketAddr, JoinHandle<()>)> {
    let l = TcpListener::bind(addr)?;
    l.set_nonblocking(true)?;
    let bound = l.local_addr()?;
    Ok((
        bound,
        crate::spawn_named("ha-metrics", move || {
            while !stop.load(Ordering::Relaxed) {
                if !ha_mgmt_api::server::wait_for_client(&l, Duration::from_millis(100)) {
                    continue;
                }
                match l.accept() {
                    Ok((s, _)) => {
                        let _ = s.set_nonblocking(false);
                        if let Err(e) = answer(s, &shared) {
                            eprintln!("ha-daemon: metrics: {e}");
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        eprintln!("ha-daemon: metrics: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        }),
    ))
}
