//! The planned swap of `bench failover` (ours only; keepalived has no planned swap with a
//! table handover to compare): on one kernel-path cluster, `hactl passive <active>` on the
//! passive member, N times, alternating direction. Per swap, from the two daemons' own
//! records of when their data paths changed role (`hactl forwarding`: `since_ms`, to the
//! ms), the window with no member forwarding (the new active's start minus the old one's
//! stop; negative would be two forwarding at once), and the operator's command → the new
//! active's start. The load's longest pause over all swaps is what its connections saw.
//! On the wire (`ha-traffic transit` on the client's and the server's LAN, see
//! `ha_testkit::transit`): per swap, the longest any data segment took from one LAN to the
//! other (a dropped one until its retransmission arrived), over the swap: the segments that
//! arrived from 50 ms before the command to 1 s after the new active started, and those
//! still on their way then with their age so far. Beside it the same figure over a window
//! as long just before, without a swap (the control): what the swap did to packets, apart
//! from what the load's own processes did (a sender not scheduled sends late, which its
//! pause counts) and from the machine's own hiccups (a 2-core machine running QEMU
//! members held a segment 9.5 ms in a control window of 3.6 s).

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

/// The wire's window of one swap: opened just before the command, reported once it settled.
struct OnWire<'a> {
    wire: &'a mut Wire,
    /// (longest transit µs, segments, lost)
    report: Option<(u64, u64, u64)>,
}

impl SwapWatch for OnWire<'_> {
    fn before_command(&mut self) -> Result {
        self.wire.mark()
    }

    fn settled(&mut self) -> Result {
        self.report = Some(self.wire.report()?);
        Ok(())
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

/// Hooks of [`planned_swap`] for a second observer of the swap (the wire's transit).
pub(in crate::dataplane_tasks::daemon_e2e) trait SwapWatch {
    /// [`BEFORE_COMMAND_MS`] before the operator's command.
    fn before_command(&mut self) -> Result {
        Ok(())
    }
    /// [`SETTLED_MS`] after the new active's data path started.
    fn settled(&mut self) -> Result {
        Ok(())
    }
}

/// No second observer.
impl SwapWatch for () {}

/// The wire's window opens this long before the command, ms.
pub(in crate::dataplane_tasks::daemon_e2e) const BEFORE_COMMAND_MS: u64 = 50;
/// ... and closes this long after the new active started, ms: past TCP's first two
/// retransmissions of a segment dropped in the handover (200 and 400 ms); a segment still
/// on its way then counts with its age ([`ha_testkit::transit::Transit::window_at`]).
pub(in crate::dataplane_tasks::daemon_e2e) const SETTLED_MS: u64 = 1_000;

/// `hactl passive <active>` on the passive member (the operator's planned swap), then
/// `hactl reset` of the forcing once the load had 3 s; what the load and the daemons' role
/// records saw. `watch` hears of the moments just before the command and once the swap
/// settled.
pub(in crate::dataplane_tasks::daemon_e2e) fn planned_swap(
    b: &dyn Fn(&str) -> String,
    socks: &[std::path::PathBuf],
    serials: &[&str; 2],
    active: usize,
    load: &mut super::super::env::Load,
    watch: &mut dyn SwapWatch,
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
    std::thread::sleep(Duration::from_millis(500 - BEFORE_COMMAND_MS));
    watch.before_command()?;
    std::thread::sleep(Duration::from_millis(BEFORE_COMMAND_MS));
    let t_cmd = unix_ms();
    hactl("passive")?;
    wait_roles(socks, Some(passive), Duration::from_secs(15))?;
    let new = role_record(&socks[passive], true)?;
    let old = role_record(&socks[active], false)?;
    let settled = new.since_ms + SETTLED_MS;
    std::thread::sleep(Duration::from_millis(settled.saturating_sub(unix_ms())));
    watch.settled()?;
    // Two of the load's send intervals and TCP's first retransmissions.
    std::thread::sleep(Duration::from_millis(
        (new.since_ms + 3_000).saturating_sub(unix_ms()),
    ));
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
            // 3 s after) for the load, and as long as the swap's on the wire (from 50 ms
            // before the command to 1 s after the new active started) at its end, without a
            // command, just before the swap.
            let wire_window = BEFORE_COMMAND_MS + SETTLED_MS + 100;
            load.cmd("mark")?;
            std::thread::sleep(Duration::from_millis(3_600 - wire_window));
            wire.mark()?;
            std::thread::sleep(Duration::from_millis(wire_window));
            let (_, _, control, _) = load.report()?;
            let (control_us, _, lost) = wire.report()?;
            out.control_gaps.push(control);
            out.control_transit_us.push(control_us);
            out.transit_lost += lost;
            let mut on_wire = OnWire {
                wire: &mut wire,
                report: None,
            };
            let one = planned_swap(b, &s.socks, &s.serials, active, &mut load, &mut on_wire)?;
            let (swap_us, segments, lost) =
                on_wire.report.ok_or("planned swap: no transit report")?;
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
