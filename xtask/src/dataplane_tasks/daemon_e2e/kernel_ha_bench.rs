//! `cargo xtask bench kernel-ha --connections N [--interval-ms MS] [--churn-rounds R]
//! [--timers PROFILE] [--only ours|conntrackd]`: our
//! kernel data path beside keepalived + conntrackd, in one run, on the same topology (the
//! kernel e2e's: client, server, two member namespaces forwarding in their kernels with the
//! site's stateful nftables ruleset and strict TCP tracking), the same load (N echo
//! connections of `ha-traffic`) and the same crash (the active's HA processes SIGKILLed by
//! pid, its data interfaces down). One cluster at a time:
//! 1. **ours** ([`ours`]): QEMU controllers + daemons with `datapath = "kernel"`;
//! 2. **keepalived + conntrackd** ([`peer`]): VRRPv3 with 10 ms adverts, unicast over the HA
//!    link, the two cluster addresses as virtual addresses; conntrackd in FTFW mode over UDP
//!    on the HA link, driven by keepalived's notify script doing conntrack-tools' documented
//!    primary/backup steps (commit of the external cache on takeover).
//!
//! For each: connections surviving the crash, the longest data gap, kill → the first packet
//! the survivor forwards (`ha-traffic first-forwarded` on its data interfaces), and the sync
//! throughput ([`churn`]): R rounds of 100,000 entries created in the active's kernel and
//! removed again (both batched), timed until the standby holds them, then until it holds
//! them no more (ours: its kernel table; conntrackd: its external cache). `sync_per_s` is
//! the whole churn: new and destroy events the standby's table reflected, per second of
//! both phases; `create_sync_per_s` the creations alone; ours also counted as its daemon's
//! synced table, the like-for-like of conntrackd's cache (`ours_table_sync_per_s`,
//! creations). With our standby's write-behind (the daemon's default, `--standby-install`)
//! ours is timed by its synced table, where the standby holds the entries while the stream is
//! busy, and its kernel table is the second count (`ours_kernel_sync_per_s`). Last line
//! `kernel-ha: ours_survived=<x>/<n> conntrackd_survived=<y>/<n> ours_gap_ms=<ms>
//! conntrackd_gap_ms=<ms> ours_sync_per_s=<n> conntrackd_sync_per_s=<n>
//! ours_create_sync_per_s=<n> conntrackd_create_sync_per_s=<n> ours_table_sync_per_s=<n>
//! ours_kernel_sync_per_s=<n> ours_standby_install=<mode>`.
//! Every namespace and process is the run's own, removed or ended by pid, also on failure.
//! `--timers` sets our controllers' profile (`fast` by default), `--only`
//! runs one system without the last line; `--churn-worker create|remove` is the churn's own
//! process ([`churn::worker`]). Configuration, figures and what is unfair:
//! `docs/kernel-ha-bench.md`.

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use super::env::{bin_dir, build_firmware, Env, Load};
use super::kernel::{first_seen, start_sniffer, Seen};
use crate::util::{cargo, run as run_cmd, Result};

mod churn;
pub(in crate::dataplane_tasks) mod failover;
mod ours;
mod peer;
pub(super) mod swap;

/// CPU seconds per group of processes, and the wall time they were measured over.
type CpuUse = (Vec<(&'static str, f64)>, f64);

/// Options of the bench.
struct BenchOpts {
    connections: usize,
    interval_ms: u64,
    /// Rounds of 100,000 entries of churn for the sync throughput.
    churn_rounds: u32,
    /// Our controllers' timer profile (`hactl provision --timers`).
    timers: String,
    /// `--only ours|conntrackd`: one system, no comparison line.
    only: Option<String>,
    /// `--table-at-crash on|off`: 100,000 entries kept in the tables for the crash (on by
    /// default: a firewall that fails over has a table, and a standby that defers its
    /// kernel work to the takeover pays for it then).
    table_at_crash: bool,
    /// Our members also get the serial backup HA link (`--backup-link on`); off by default:
    /// keepalived runs over one link, the HA veth, and so do we then.
    backup_link: bool,
    /// `--crash-in-burst MS`: the crash comes this long after a burst of 100,000 creations
    /// began on the active (none: after the churn, with the streams quiet).
    crash_in_burst: Option<u64>,
    /// Our standbys' `[sync] standby_install` (`--standby-install`); none: the daemon's
    /// default (the write-behind).
    standby_install: Option<String>,
    /// `--controller qemu|host`: our management controllers as the firmware in QEMU (the
    /// default), or as the same agent code in a host process (`ha-agent-host`): on an
    /// appliance the controller is a chip of its own, while QEMU's emulation of it takes
    /// its CPU from the two cores the churn runs on.
    host_controllers: bool,
}

impl BenchOpts {
    /// Our standby holds the peer's entries in its synced table and writes them into its
    /// kernel when the stream goes quiet (the daemon's default), as conntrackd's standby
    /// holds them in its external cache.
    fn write_behind(&self) -> bool {
        self.standby_install.as_deref() != Some("as_received")
    }
}

/// What one system did.
struct Outcome {
    survived: u64,
    connections: u64,
    gap_ms: u64,
    /// Kill → first packet forwarded by the survivor, ms (none: it forwarded nothing).
    first_forwarded_ms: Option<u64>,
    /// Kill → the survivor's first gratuitous ARP on a data interface, ms (none: not seen
    /// before its first forwarded packet).
    first_garp_ms: Option<u64>,
    /// Times the standby took the active role while the active lived (between the load's
    /// start and the crash: the churn's CPU load is where a tight detector misfires), none
    /// when it could not be read.
    false_takeovers: Option<u64>,
    /// Times the survivor took the active role before the kill over the whole run, setup
    /// included (none: not readable).
    takeovers_before_kill: Option<u64>,
    /// The system's own takeover milestones after the kill (name, ms).
    milestones: Vec<(&'static str, Option<u64>)>,
    /// The churn's figures, or why there are none.
    churn: std::result::Result<churn::Churn, String>,
    /// CPU seconds its processes used during the churn (group, seconds), and the churn's
    /// wall time.
    churn_cpu: CpuUse,
    /// What "present on the standby" means for this system.
    counted: &'static str,
    /// What the second count of the churn ([`churn::Churn::also_synced`]) counts, if any.
    also_counted: Option<&'static str>,
}

fn parse(args: &[String]) -> Result<BenchOpts> {
    let mut o = BenchOpts {
        connections: 1000,
        interval_ms: 100,
        churn_rounds: 10,
        // The documented profile nearest keepalived's 10 ms adverts (10 ms heartbeats, 30 ms
        // dead time). Until session 12 the load's own poll over every socket took about a
        // core, and with it the fast profile's QEMU controllers starved the churn; with the
        // load on epoll they take about 0.2 of a core (docs/kernel-ha-bench.md).
        timers: "fast".into(),
        only: None,
        backup_link: false,
        table_at_crash: true,
        standby_install: None,
        crash_in_burst: None,
        host_controllers: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it
            .next()
            .ok_or_else(|| format!("bench kernel-ha: {a} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("bench kernel-ha: {a} {v}: {e}");
        match a.as_str() {
            "--connections" => o.connections = v.parse().map_err(|e| bad(&e))?,
            "--interval-ms" => o.interval_ms = v.parse().map_err(|e| bad(&e))?,
            "--churn-rounds" => o.churn_rounds = v.parse().map_err(|e| bad(&e))?,
            "--timers" => o.timers = v.clone(),
            "--backup-link" => {
                o.backup_link = super::parse_on_off("bench kernel-ha: --backup-link", v)?
            }
            "--table-at-crash" => {
                o.table_at_crash = super::parse_on_off("bench kernel-ha: --table-at-crash", v)?
            }
            "--only" if v == "ours" || v == "conntrackd" => o.only = Some(v.clone()),
            "--controller" if v == "qemu" || v == "host" => o.host_controllers = v == "host",
            "--crash-in-burst" => o.crash_in_burst = Some(v.parse().map_err(|e| bad(&e))?),
            "--standby-install" => {
                o.standby_install = Some(super::parse_standby_install(
                    "bench kernel-ha: --standby-install",
                    v,
                )?)
            }
            other => {
                return Err(format!(
                    "bench kernel-ha: unknown option {other}; usage: bench kernel-ha \
                     --connections N [--interval-ms MS] [--churn-rounds R] [--timers PROFILE] [--backup-link on|off] \
                     [--table-at-crash on|off] [--standby-install write_behind|as_received] \
                     [--crash-in-burst MS] [--controller qemu|host] \
                     [--only ours|conntrackd]"
                ))
            }
        }
    }
    if o.connections == 0 || o.churn_rounds == 0 {
        return Err("bench kernel-ha: --connections and --churn-rounds must be positive".into());
    }
    Ok(o)
}

/// Runs the bench (root: network namespaces).
pub(in crate::dataplane_tasks) fn run(args: &[String]) -> Result {
    if let [flag, what] = args {
        if flag == "--churn-worker" {
            return churn::worker(what);
        }
    }
    let o = parse(args)?;
    if !crate::util::is_root() {
        return Err("bench kernel-ha: needs root (network namespaces)".into());
    }
    peer::install()?;
    super::build_tools()?;
    let elf = build_firmware()?;
    // The churn's worker runs from the release build (see `churn::worker`).
    run_cmd(cargo().args(["build", "--release", "-q", "-p", "xtask"]))?;
    let bins = bin_dir();
    let xtask = bins.join("xtask");
    let b = |n: &str| bins.join(n).display().to_string();
    let id = std::process::id() % 100_000;
    let mut done = Vec::new();
    if o.only.as_deref() != Some("conntrackd") {
        let t = Instant::now();
        let r = ours::run(&o, &elf, &b, &xtask, id)?;
        println!("kernel-ha: ours measured in {} s", t.elapsed().as_secs());
        // Printed now: a failure of the other system's run must not lose these figures.
        print_outcome("ours", &r, o.churn_rounds);
        // An experiment must never pass for the default figure.
        if let Some(n) = super::env::controller_nice()? {
            println!(
                "kernel-ha(ours): our QEMU controllers ran at niceness {n} (HA_CONTROLLER_NICE): \
                 a stand-in for their own chip, not the default figure"
            );
        }
        done.push(("ours", r));
    }
    if o.only.as_deref() != Some("ours") {
        let t = Instant::now();
        let r = peer::run(&o, &b, &xtask, id)?;
        println!(
            "kernel-ha: keepalived + conntrackd measured in {} s",
            t.elapsed().as_secs()
        );
        print_outcome("keepalived+conntrackd", &r, o.churn_rounds);
        done.push(("keepalived+conntrackd", r));
    }
    let [(_, ours), (_, theirs)] = &done[..] else {
        return Ok(());
    };
    let rate = |r: &Outcome, f: fn(&churn::Churn) -> u64| {
        r.churn
            .as_ref()
            .map_or_else(|_| "none".to_string(), |c| f(c).to_string())
    };
    // Ours counted both ways: its synced table (the like-for-like of conntrackd's cache)
    // and its kernel table; the write-behind times the first, installing as received the
    // second (the other is the churn's second count, creations only).
    let second = ours
        .churn
        .as_ref()
        .ok()
        .and_then(churn::Churn::also_per_s)
        .map_or_else(|| "none".to_string(), |r| r.to_string());
    let first = rate(ours, churn::Churn::per_s);
    let (table_rate, kernel_rate) = if o.write_behind() {
        (first, second)
    } else {
        (second, first)
    };
    println!(
        "kernel-ha: ours_survived={}/{} conntrackd_survived={}/{} ours_gap_ms={} \
         conntrackd_gap_ms={} ours_sync_per_s={} conntrackd_sync_per_s={} \
         ours_create_sync_per_s={} conntrackd_create_sync_per_s={} \
         ours_table_sync_per_s={table_rate} ours_kernel_sync_per_s={kernel_rate} \
         ours_standby_install={}",
        ours.survived,
        ours.connections,
        theirs.survived,
        theirs.connections,
        ours.gap_ms,
        theirs.gap_ms,
        rate(ours, churn::Churn::churn_per_s),
        rate(theirs, churn::Churn::churn_per_s),
        rate(ours, churn::Churn::per_s),
        rate(theirs, churn::Churn::per_s),
        if o.write_behind() {
            "write_behind"
        } else {
            "as_received"
        },
    );
    Ok(())
}

fn ms(v: Option<u64>) -> String {
    v.map_or_else(|| "none".to_string(), |v| v.to_string())
}

fn print_outcome(name: &str, r: &Outcome, rounds: u32) {
    let milestones: Vec<String> = r
        .milestones
        .iter()
        .map(|(k, v)| format!("{k}={}", ms(*v)))
        .collect();
    println!(
        "kernel-ha({name}): survived={}/{} gap_ms={} kill_to_first_garp_ms={} \
         kill_to_first_forwarded_ms={} {} false_takeovers_before_the_crash={}",
        r.survived,
        r.connections,
        r.gap_ms,
        ms(r.first_garp_ms),
        ms(r.first_forwarded_ms),
        milestones.join(" "),
        ms(r.false_takeovers)
    );
    match &r.churn {
        Ok(c) => {
            println!(
                "kernel-ha({name}): sync, whole churn (new and destroy events reflected on the \
                 standby): 100k churn {} events/s; {} rounds ({} entries) {} events/s",
                c.first_churn_per_s(),
                c.synced.len(),
                u64::from(c.per_round) * c.synced.len() as u64,
                c.churn_per_s(),
            );
            println!(
                "kernel-ha({name}): sync, creations: 100k churn {} entries/s; all rounds {} \
                 entries/s; removals: all rounds {} entries/s; created on the active at {} \
                 entries/s; counted on the standby as {}",
                c.first_per_s(),
                c.per_s(),
                c.removed_per_s(),
                c.injected_per_s(),
                r.counted
            );
            if let Some(why) = &c.stopped {
                println!(
                    "kernel-ha({name}): sync: the churn stopped early ({rounds} rounds asked), \
                     figures over what was measured: {why}"
                );
            }
        }
        Err(why) => {
            println!("kernel-ha({name}): sync: not measured ({rounds} rounds asked): {why}")
        }
    }
    if let (Ok(c), Some(what)) = (&r.churn, r.also_counted) {
        println!(
            "kernel-ha({name}): sync counted on the standby as {what}: {} entries/s over {} of \
             {} rounds",
            c.also_per_s()
                .map_or_else(|| "none".to_string(), |r| r.to_string()),
            c.also_synced.iter().flatten().count(),
            c.also_synced.len()
        );
    }
    let (groups, wall) = &r.churn_cpu;
    let cpu: Vec<String> = groups
        .iter()
        .map(|(g, s)| format!("{g} {s:.1} s"))
        .collect();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "kernel-ha({name}): CPU used during the churn ({wall:.1} s wall, {cores} cores): {}",
        cpu.join(", ")
    );
}

/// After the crash (at `killed_ms`, with the load's mark set): waits two send intervals
/// (at least 8 s, as the e2e), then returns the load's report and what the survivor's
/// packet watcher saw after the kill (first gratuitous ARP, first forwarded packet).
fn after_crash(
    env: &mut Env,
    load: &mut Load,
    sniffer: &Receiver<String>,
    tag: &str,
    interval_ms: u64,
    killed_at: Instant,
    killed_ms: u64,
) -> Result<(serde_json::Value, Seen)> {
    let wait = Duration::from_millis(8_000.max(2 * interval_ms + 2_000));
    std::thread::sleep(wait.saturating_sub(killed_at.elapsed()));
    let first = first_seen(sniffer, killed_ms);
    env.kill(&format!("sniffer-{tag}"));
    let v = load.report_json()?;
    if let Some(e) = v["first_error"].as_str() {
        eprintln!("kernel-ha[{tag}]: first failed connection: {e}");
    }
    println!(
        "kernel-ha[{tag}]: median of the connections' longest pause: {} ms",
        v["gap_p50_ms"].as_u64().unwrap_or(0)
    );
    load.cmd("stop")?;
    Ok((v, first))
}

/// The number of entries in the conntrack table of the namespace process `pid` runs in,
/// read from its `/proc/<pid>/net/stat/nf_conntrack` (the first column, `entries`, is the
/// namespace's count on every CPU's line): no process started, so the churn's polls every
/// 10 ms take nothing from the system they measure (an `ip netns exec … cat` each time
/// took about a sixth of a core).
fn table_count(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/net/stat/nf_conntrack");
    let text = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    text.lines()
        .nth(1)
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| u64::from_str_radix(v, 16).ok())
        .ok_or_else(|| format!("{path}: no entries column: {text:?}"))
}

/// The e2e's run directory for this bench's system `tag`, fresh.
fn fresh_dir(id: u32, tag: &str) -> Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("ha-kernel-ha-{id}-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("kernel-ha: {e}"))?;
    Ok(dir)
}

/// CPU time (user + system) process `pid` has used, in seconds (0 when it is gone).
fn cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is the 3rd field, utime
    // and stime the 14th and 15th.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or(Vec::new(), |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on Linux whatever the kernel's HZ.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Samples the CPU time of named groups of processes around `f`: per group the seconds
/// used while it ran, and its wall time.
fn cpu_during<T>(groups: &[(&'static str, Vec<u32>)], f: impl FnOnce() -> T) -> (T, CpuUse) {
    let sum = |pids: &[u32]| pids.iter().map(|p| cpu_s(*p)).sum::<f64>();
    let before: Vec<f64> = groups.iter().map(|(_, p)| sum(p)).collect();
    let t = Instant::now();
    let r = f();
    let wall = t.elapsed().as_secs_f64();
    let used = groups
        .iter()
        .zip(before)
        .map(|((g, p), b)| (*g, sum(p) - b))
        .collect();
    (r, (used, wall))
}
