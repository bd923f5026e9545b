//! `cargo xtask bench failover [--runs N] [--connections C] [--interval-ms MS] [--timers
//! PROFILE] [--swaps S]`: the takeover as the client LAN sees it, ours beside keepalived, in
//! one run, and our planned swap.
//!
//! Each run is one crash on a fresh cluster of the kernel-ha bench's topology (client, server
//! and two member namespaces forwarding in their kernels; C echo connections sending every
//! MS ms), without churn: ours (QEMU controllers + daemons, [`super::ours`]) and keepalived +
//! conntrackd (VRRPv3 with 10 ms adverts, [`super::peer`]) alternate, run by run. The crash
//! is a dead box: every HA process of the active SIGKILLed by pid, its data interfaces down.
//! A packet watcher in the survivor's namespace times, from the kill, its first gratuitous
//! ARP out of a data interface (the moment the client LAN learns where the address went) and
//! its first forwarded TCP packet (the moment traffic flows again; it also waits for the
//! load's next send, at most MS ms, and for TCP's retransmission).
//!
//! Then S planned swaps (`--swaps S`, 10 by default) on one more cluster of ours
//! ([`super::swap`]): the window with no member forwarding, from the daemons' own role
//! records (signed: negative when both forwarded), and the load's longest pause over them,
//! which is what the connections saw (at the load's send interval's resolution), beside
//! the longest pause of a window as long without a swap just before each (the control: what
//! the interval and the machine give anyway; `swap_pause_control` is the largest). On the
//! wire, apart from the load's own processes: the longest time a data segment took between
//! the client's and the server's LAN over each swap's window (a dropped one until its
//! retransmission arrived), beside the same over each control window
//! (`ha_testkit::transit`).
//!
//! Last line: `failover: runs=<N> median=<ms> p95=<ms> keepalived_median=<ms>
//! keepalived_p95=<ms> ratio=<ours/keepalived> forwarded_median=<ms>
//! keepalived_forwarded_median=<ms> swap_window_median=<ms> swap_window_min=<ms>
//! swap_window_max=<ms> swap_pause_max=<ms> swap_pause_control=<ms>
//! swap_transit_median=<ms> swap_transit_max=<ms> swap_transit_control=<ms>`, the first
//! four on kill → first gratuitous ARP. The
//! firmware-only figure of earlier sessions (kill of a QEMU → the survivor's role decision
//! on its host link, no daemon, probes answered at once by the harness) is
//! `cargo xtask bench failover --harness`: it measures less than a user sees.

use std::time::Instant;

use super::{ours, peer, swap, BenchOpts, Outcome};
use crate::util::{cargo, run as run_cmd, Result};

/// Options of the failover bench.
struct Opts {
    runs: usize,
    connections: usize,
    interval_ms: u64,
    timers: String,
    /// Planned swaps after the crashes (0: none).
    swaps: usize,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        runs: 20,
        connections: 20,
        // Every connection sends every 10 ms: the first forwarded packet waits at most that
        // long for the load.
        interval_ms: 10,
        timers: "fast".into(),
        swaps: 10,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| format!("bench failover: {a} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("bench failover: {a} {v}: {e}");
        match a.as_str() {
            "--runs" => o.runs = v.parse().map_err(|e| bad(&e))?,
            "--connections" => o.connections = v.parse().map_err(|e| bad(&e))?,
            "--interval-ms" => o.interval_ms = v.parse().map_err(|e| bad(&e))?,
            "--timers" => o.timers = v.clone(),
            "--swaps" => o.swaps = v.parse().map_err(|e| bad(&e))?,
            other => {
                return Err(format!(
                    "bench failover: unknown option {other}; usage: bench failover [--runs N] \
                     [--connections C] [--interval-ms MS] [--timers PROFILE] [--swaps S] (or --harness \
                     [--runs N] for the firmware-only figure)"
                ))
            }
        }
    }
    if o.runs == 0 || o.connections == 0 || o.interval_ms == 0 {
        return Err(
            "bench failover: --runs, --connections and --interval-ms must be positive".into(),
        );
    }
    Ok(o)
}

/// The value at quantile `q` (0–1, nearest rank) of `v`, none when empty.
fn quantile<T: Ord + Copy>(v: &[T], q: f64) -> Option<T> {
    let mut s = v.to_vec();
    s.sort_unstable();
    let i = ((q * s.len() as f64).ceil() as usize).clamp(1, s.len().max(1)) - 1;
    s.get(i).copied()
}

fn show<T: std::fmt::Display>(v: Option<T>) -> String {
    v.map_or_else(|| "none".into(), |v| v.to_string())
}

/// The figures of one system over the runs: kill → first gratuitous ARP and kill → first
/// forwarded packet, and how many runs lost connections or saw neither.
#[derive(Default)]
struct Figures {
    garp: Vec<u64>,
    forwarded: Vec<u64>,
    /// Runs whose crash lost connections.
    lossy: usize,
    /// The survivors' takeovers before the kill (a live active replaced), over every run.
    false_takeovers: u64,
}

impl Figures {
    fn add(&mut self, r: &Outcome) {
        self.garp.extend(r.first_garp_ms);
        self.forwarded.extend(r.first_forwarded_ms);
        self.lossy += usize::from(r.survived < r.connections);
        self.false_takeovers += r.takeovers_before_kill.unwrap_or(0);
    }

    fn line(&self, name: &str) -> String {
        format!(
            "failover({name}): kill → first gratuitous ARP: median={} p95={} min={} max={} \
             (seen in {} runs); kill → first forwarded: median={} p95={}; runs that lost \
             connections: {}; takeovers of a live active (setup included): {}",
            show(quantile(&self.garp, 0.5)),
            show(quantile(&self.garp, 0.95)),
            show(self.garp.iter().min().copied()),
            show(self.garp.iter().max().copied()),
            self.garp.len(),
            show(quantile(&self.forwarded, 0.5)),
            show(quantile(&self.forwarded, 0.95)),
            self.lossy,
            self.false_takeovers
        )
    }
}

/// Runs the bench (root: network namespaces).
pub(in crate::dataplane_tasks) fn run(args: &[String]) -> Result {
    let o = parse(args)?;
    if !crate::util::is_root() {
        return Err("bench failover: needs root (network namespaces)".into());
    }
    peer::install()?;
    super::super::build_tools()?;
    let elf = super::build_firmware()?;
    run_cmd(cargo().args(["build", "--release", "-q", "-p", "xtask"]))?;
    let bins = super::bin_dir();
    let xtask = bins.join("xtask");
    let b = |n: &str| bins.join(n).display().to_string();
    let bo = BenchOpts {
        connections: o.connections,
        interval_ms: o.interval_ms,
        churn_rounds: 0,
        timers: o.timers.clone(),
        only: None,
        table_at_crash: false,
        backup_link: false,
        standby_install: None,
        crash_in_burst: None,
        host_controllers: false,
    };
    let (mut ours_f, mut theirs_f) = (Figures::default(), Figures::default());
    let t = Instant::now();
    for i in 0..o.runs {
        let id = (std::process::id() + i as u32) % 100_000;
        // Alternated, so that a drift of the machine over the bench meets both alike.
        let order: [&str; 2] = if i % 2 == 0 {
            ["ours", "keepalived"]
        } else {
            ["keepalived", "ours"]
        };
        for who in order {
            let r = if who == "ours" {
                ours::run(&bo, &elf, &b, &xtask, id)?
            } else {
                peer::run(&bo, &b, &xtask, id)?
            };
            let steps: Vec<String> = r
                .milestones
                .iter()
                .map(|(k, v)| format!("{k}={}", show(*v)))
                .collect();
            println!(
                "failover[{who}] run {}/{}: kill → first gratuitous ARP {} ms, → first \
                 forwarded {} ms, survived {}/{}, takeovers before the kill {} ({})",
                i + 1,
                o.runs,
                show(r.first_garp_ms),
                show(r.first_forwarded_ms),
                r.survived,
                r.connections,
                show(r.takeovers_before_kill),
                steps.join(" ")
            );
            if who == "ours" {
                ours_f.add(&r);
            } else {
                theirs_f.add(&r);
            }
        }
    }
    println!(
        "failover: {} runs each in {} s",
        o.runs,
        t.elapsed().as_secs()
    );
    let swaps = if o.swaps > 0 {
        let id = (std::process::id() + o.runs as u32) % 100_000;
        let sw = swap::run(o.swaps, &bo, &elf, &b, id)?;
        // Signed: below 0 both members forwarded for that long (not a gap of 0).
        let w = &sw.windows;
        println!(
            "failover(planned swap): {} swaps: no member forwarding (negative: both \
             forwarding): median={} min={} max={} (negative in {}); command → new active: \
             median={}; the load's longest pause: max {} ms, median {} (no swap: max {}, median \
             {}), {}/{} connections kept; on the wire, the longest transit of a data segment \
             between the LANs from 50 ms before the command to 1 s after the new active \
             started: median {} ms, max {} (as long a window with no swap: median {}, max {}), \
             {} lost",
            w.len(),
            show(quantile(w, 0.5)),
            show(w.iter().min()),
            show(w.iter().max()),
            w.iter().filter(|&&w| w < 0).count(),
            show(quantile(&sw.command_to_active, 0.5)),
            sw.gap_ms,
            show(quantile(&sw.gaps, 0.5)),
            show(sw.control_gaps.iter().max()),
            show(quantile(&sw.control_gaps, 0.5)),
            sw.survived,
            sw.connections,
            show_us(quantile(&sw.transit_us, 0.5)),
            show_us(sw.transit_us.iter().max().copied()),
            show_us(quantile(&sw.control_transit_us, 0.5)),
            show_us(sw.control_transit_us.iter().max().copied()),
            sw.transit_lost,
        );
        Some((
            quantile(w, 0.5),
            w.iter().min().copied(),
            w.iter().max().copied(),
            sw.gap_ms,
            sw.control_gaps.iter().max().copied().unwrap_or(0),
            quantile(&sw.transit_us, 0.5),
            sw.transit_us.iter().max().copied(),
            sw.control_transit_us.iter().max().copied(),
        ))
    } else {
        None
    };
    println!("{}", ours_f.line("ours"));
    println!("{}", theirs_f.line("keepalived"));
    if let Some(n) = super::super::env::controller_nice()? {
        println!(
            "failover: our QEMU controllers ran at niceness {n} (HA_CONTROLLER_NICE), not the \
             default: a stand-in for their own chip, not the default figure"
        );
    }
    let (m, k) = (quantile(&ours_f.garp, 0.5), quantile(&theirs_f.garp, 0.5));
    let ratio = match (m, k) {
        (Some(m), Some(k)) if k > 0 => format!("{:.2}", m as f64 / k as f64),
        _ => "none".into(),
    };
    println!(
        "failover: runs={} median={} p95={} keepalived_median={} keepalived_p95={} ratio={ratio} \
         forwarded_median={} keepalived_forwarded_median={} swap_window_median={} \
         swap_window_min={} swap_window_max={} swap_pause_max={} swap_pause_control={} \
         swap_transit_median={} swap_transit_max={} swap_transit_control={}",
        o.runs,
        show(m),
        show(quantile(&ours_f.garp, 0.95)),
        show(k),
        show(quantile(&theirs_f.garp, 0.95)),
        show(quantile(&ours_f.forwarded, 0.5)),
        show(quantile(&theirs_f.forwarded, 0.5)),
        show(swaps.and_then(|s| s.0)),
        show(swaps.and_then(|s| s.1)),
        show(swaps.and_then(|s| s.2)),
        show(swaps.map(|s| s.3)),
        show(swaps.map(|s| s.4)),
        show_us(swaps.and_then(|s| s.5)),
        show_us(swaps.and_then(|s| s.6)),
        show_us(swaps.and_then(|s| s.7)),
    );
    Ok(())
}

/// µs as ms with a tenth, or `none`.
fn show_us(us: Option<u64>) -> String {
    us.map_or("none".into(), |us| format!("{:.1}", us as f64 / 1000.0))
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn quantiles_are_nearest_rank() {
        let v = [30, 10, 20, 40];
        assert_eq!(quantile(&v, 0.5), Some(20));
        assert_eq!(quantile(&v, 0.95), Some(40));
        assert_eq!(quantile(&[7], 0.95), Some(7));
        assert_eq!(quantile::<u64>(&[], 0.5), None);
    }
}
