//! The planned swap of `bench failover` (ours only; keepalived has no planned swap with a
//! table handover to compare): on one kernel-path cluster, `hactl passive <active>` on the
//! passive member, N times, alternating direction. Per swap, from the two daemons' own
//! records of when their data paths changed role (`hactl forwarding`: `since_ms`, to the
//! ms), the window with no member forwarding (the new active's start minus the old one's
//! stop; negative would be two forwarding at once), and the operator's command → the new
//! active's start. The load's longest pause over all swaps is what its connections saw.
//! On the wire (`ha-traffic transit` on the client's and the server's LAN, see
//! `ha_testkit::transit`): per swap, the longest any data segment took from one LAN to the
//! other (a dropped one until its retransmission arrived), beside the same figure over the
//! control window before it: what the swap did to packets, apart from what the load's own
//! processes did (a sender not scheduled sends late, which its pause counts).

use std::io::Write;
use std::process::{ChildStdin, Command};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::super::env::{forwarding, wait_roles, Env};
use super::super::kernel::{first_line, unix_ms, wait_installed};
use super::super::setup;
use crate::util::{run as run_cmd, Result};

/// What the planned swaps measured.
pub(super) struct Swaps {
    /// Per swap: ms with no member forwarding (new start − old stop).
    pub windows: Vec<i64>,
    /// Per swap: the command → the new active's data path started, ms.
    pub command_to_active: Vec<u64>,
    /// The load's longest pause over the swaps (each from just before its command to 3 s
    /// after), ms.
    pub gap_ms: u64,
    /// Per swap, the load's longest pause over a window as long as a swap's with no command
    /// just before it: what the send interval and the machine give without any swap (the
    /// control).
    pub control_gaps: Vec<u64>,
    /// Per swap, the load's longest pause over the swap.
    pub gaps: Vec<u64>,
    /// The load's connections kept at the last swap's report.
    pub survived: u64,
    /// The load's connections.
    pub connections: u64,
    /// Per swap, the longest transit of a data segment between the LANs, µs.
    pub transit_us: Vec<u64>,
    /// Per swap, the same over the control window before it, µs.
    pub control_transit_us: Vec<u64>,
    /// Segments given up (never arrived) over all windows.
    pub transit_lost: u64,
}

/// The transit watcher on the client's and the server's LAN (`ha-traffic transit`).
struct Wire {
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Wire {
    fn start(env: &mut Env, b: &dyn Fn(&str) -> String) -> Result<Wire> {
        let argv = [
            b("ha-traffic"),
            "transit".into(),
            "--at".into(),
            format!("{}:br0", env.ns("c")),
            "--at".into(),
            format!("{}:br0", env.ns("s")),
        ];
        env.spawn("transit", None, &argv, true)?;
        let stdin = env
            .child("transit")
            .and_then(|c| c.stdin.take())
            .ok_or("planned swap: transit watcher stdin")?;
        let lines = first_line(env, "transit")?;
        match lines.recv_timeout(Duration::from_secs(10)) {
            Ok(l) if l == "listening" => Ok(Wire { stdin, lines }),
            other => Err(format!(
                "planned swap: the transit watcher did not start: {other:?}"
            )),
        }
    }

    fn mark(&mut self) -> Result {
        writeln!(self.stdin, "mark").map_err(|e| format!("transit watcher: {e}"))
    }

    /// The window since the last mark: (longest transit µs, segments, lost).
    fn report(&mut self) -> Result<(u64, u64, u64)> {
        writeln!(self.stdin, "report").map_err(|e| format!("transit watcher: {e}"))?;
        let l = self
            .lines
            .recv_timeout(Duration::from_secs(10))
            .map_err(|e| format!("transit watcher: no report: {e}"))?;
        let v: serde_json::Value =
            serde_json::from_str(&l).map_err(|e| format!("transit watcher: {l:?}: {e}"))?;
        let g = |k: &str| v[k].as_u64().unwrap_or(0);
        Ok((g("max_us"), g("packets"), g("lost")))
    }
}

/// µs as ms with a tenth.
fn ms1(us: u64) -> String {
    format!("{:.1}", us as f64 / 1000.0)
}

/// The data path's role record of the daemon behind `sock`, polled until it is `active`
/// (at most 5 s).
fn role_record(sock: &std::path::Path, active: bool) -> Result<ha_mgmt_api::ForwardingReport> {
    let end = Instant::now() + Duration::from_secs(5);
    loop {
        match forwarding(sock, Duration::from_secs(1)) {
            Some(f) if f.active == active => return Ok(f),
            _ if Instant::now() > end => {
                return Err(format!(
                    "planned swap: {} did not report its data path {} within 5 s",
                    sock.display(),
                    if active { "active" } else { "passive" }
                ))
            }
            _ => std::thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// One planned swap, as the load saw it.
pub(in crate::dataplane_tasks::daemon_e2e) struct Swap {
    /// ms with no member forwarding (new start − old stop; negative: both forwarded).
    pub window_ms: i64,
    /// The command → the new active's data path started, ms.
    pub command_to_active_ms: u64,
    /// The load's longest pause from just before the command to 3 s after the swap, ms.
    pub gap_ms: u64,
    /// The load's connections kept, and all of them.
    pub kept: u64,
    /// The load's connections.
    pub connections: u64,
}

/// `hactl passive <active>` on the passive member (the operator's planned swap), then
/// `hactl reset` of the forcing once the load had 3 s; what the load and the daemons' role
/// records saw. `at_report` runs right after the load's report (another window closed at
/// the same moment).
pub(in crate::dataplane_tasks::daemon_e2e) fn planned_swap(
    b: &dyn Fn(&str) -> String,
    socks: &[std::path::PathBuf],
    serials: &[&str; 2],
    active: usize,
    load: &mut super::super::env::Load,
    at_report: &mut dyn FnMut() -> Result,
) -> Result<Swap> {
    let passive = 1 - active;
    // The operator's command, on the passive member, naming the active one.
    let hactl = |cmd: &str| {
        run_cmd(
            Command::new(b("hactl"))
                .arg("--socket")
                .arg(&socks[passive])
                .args([cmd, serials[active]]),
        )
    };
    load.cmd("mark")?;
    std::thread::sleep(Duration::from_millis(500));
    let t_cmd = unix_ms();
    hactl("passive")?;
    wait_roles(socks, Some(passive), Duration::from_secs(15))?;
    let new = role_record(&socks[passive], true)?;
    let old = role_record(&socks[active], false)?;
    // Two of the load's send intervals and TCP's first retransmissions.
    std::thread::sleep(Duration::from_secs(3));
    let (kept, connections, gap_ms, _failed) = load.report()?;
    at_report()?;
    // The forcing is cleared so that a next swap can go back.
    hactl("reset")?;
    std::thread::sleep(Duration::from_secs(2));
    Ok(Swap {
        window_ms: new.since_ms as i64 - old.since_ms as i64,
        command_to_active_ms: new.since_ms.saturating_sub(t_cmd),
        gap_ms,
        kept,
        connections,
    })
}

/// Runs `n` planned swaps on a fresh cluster of ours (`o`'s load and timers).
pub(super) fn run(
    n: usize,
    o: &super::BenchOpts,
    elf: &std::path::Path,
    b: &dyn Fn(&str) -> String,
    id: u32,
) -> Result<Swaps> {
    let (opts, mut env, dir) = super::ours::cluster(o, id, "swap")?;
    let r = (|| -> Result<Swaps> {
        let s = setup::start(&mut env, &opts, Some(elf), b, &dir, id)?;
        let mut wire = Wire::start(&mut env, b)?;
        let mut load = s.load;
        let mut active = s.active;
        wait_installed(
            &s.socks[1 - active],
            o.connections as u64,
            Duration::from_secs(10),
        );
        let mut out = Swaps {
            windows: Vec::new(),
            command_to_active: Vec::new(),
            gap_ms: 0,
            control_gaps: Vec::new(),
            gaps: Vec::new(),
            survived: 0,
            connections: 0,
            transit_us: Vec::new(),
            control_transit_us: Vec::new(),
            transit_lost: 0,
        };
        for k in 0..n {
            let passive = 1 - active;
            // The control: a window as long as a swap's (0.5 s before, ~0.1 s of handover,
            // 3 s after), without a command, just before the swap.
            load.cmd("mark")?;
            wire.mark()?;
            std::thread::sleep(Duration::from_millis(3_600));
            let (_, _, control, _) = load.report()?;
            let (control_us, _, lost) = wire.report()?;
            out.control_gaps.push(control);
            out.control_transit_us.push(control_us);
            out.transit_lost += lost;
            // The swap's window on the wire: from the same moment as the load's.
            wire.mark()?;
            let mut on_wire = None;
            let one = planned_swap(b, &s.socks, &s.serials, active, &mut load, &mut || {
                on_wire = Some(wire.report()?);
                Ok(())
            })?;
            let (swap_us, segments, lost) = on_wire.ok_or("planned swap: no transit report")?;
            out.transit_us.push(swap_us);
            out.transit_lost += lost;
            println!(
                "failover[planned swap] {}/{n}: {} → {}: no member forwarding for {} ms; \
                 command → new active {} ms; longest pause {} ms (no swap just before: {} ms), \
                 {}/{} kept; on the wire: longest transit {} ms over {segments} segments (no \
                 swap just before: {} ms), {lost} lost",
                k + 1,
                s.serials[active],
                s.serials[passive],
                one.window_ms,
                one.command_to_active_ms,
                one.gap_ms,
                control,
                one.kept,
                one.connections,
                ms1(swap_us),
                ms1(control_us),
            );
            out.windows.push(one.window_ms);
            out.command_to_active.push(one.command_to_active_ms);
            out.gap_ms = out.gap_ms.max(one.gap_ms);
            out.gaps.push(one.gap_ms);
            out.survived = one.kept;
            out.connections = one.connections;
            active = wait_roles(&s.socks, None, Duration::from_secs(15))?;
            if active != passive {
                println!(
                    "failover[planned swap] {}/{n}: the reset gave the role back to {}",
                    k + 1,
                    s.serials[active]
                );
            }
        }
        Ok(out)
    })();
    r.map_err(|e| format!("{e}\n{}", env.post_mortem(Some(elf))))
}
