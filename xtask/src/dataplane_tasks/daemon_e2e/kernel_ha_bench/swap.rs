//! The planned swap of `bench failover` (ours only; keepalived has no planned swap with a
//! table handover to compare): on one kernel-path cluster, `hactl passive <active>` on the
//! passive member, N times, alternating direction. Per swap, from the two daemons' own
//! records of when their data paths changed role (`hactl forwarding`: `since_ms`, to the
//! ms), the window with no member forwarding (the new active's start minus the old one's
//! stop; negative would be two forwarding at once), and the operator's command → the new
//! active's start. The load's longest pause over all swaps is what its connections saw.

use std::process::Command;
use std::time::{Duration, Instant};

use super::super::env::{forwarding, wait_roles};
use super::super::kernel::{unix_ms, wait_installed};
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
/// records saw.
pub(in crate::dataplane_tasks::daemon_e2e) fn planned_swap(
    b: &dyn Fn(&str) -> String,
    socks: &[std::path::PathBuf],
    serials: &[&str; 2],
    active: usize,
    load: &mut super::super::env::Load,
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
        };
        for k in 0..n {
            let passive = 1 - active;
            // The control: a window as long as a swap's (0.5 s before, ~0.1 s of handover,
            // 3 s after), without a command, just before the swap.
            load.cmd("mark")?;
            std::thread::sleep(Duration::from_millis(3_600));
            let (_, _, control, _) = load.report()?;
            out.control_gaps.push(control);
            let one = planned_swap(b, &s.socks, &s.serials, active, &mut load)?;
            println!(
                "failover[planned swap] {}/{n}: {} → {}: no member forwarding for {} ms; \
                 command → new active {} ms; longest pause {} ms (no swap just before: {} ms), \
                 {}/{} kept",
                k + 1,
                s.serials[active],
                s.serials[passive],
                one.window_ms,
                one.command_to_active_ms,
                one.gap_ms,
                control,
                one.kept,
                one.connections
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
