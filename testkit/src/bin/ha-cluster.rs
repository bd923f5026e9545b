//! `ha-cluster`: boots QEMU clusters for `cargo xtask qemu | demo | bench failover | soak`.
//!
//! ```text
//! ha-cluster boot  --elf E [--members K] [--seconds N] [--timers P] [--no-backup]
//! ha-cluster demo  --elf E
//! ha-cluster bench --elf E [--runs N]
//! ha-cluster soak  --elf E [--minutes M] [--profile default|fast] [--hogs H]
//! ha-cluster boots --elf E [--runs N] [--hogs H]
//! ```

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ha_proto::msg::Role;
use ha_testkit::{summary, Cluster, ClusterConfig, Link};
use ha_testwire::Impair;

struct Opts {
    elf: Option<PathBuf>,
    members: usize,
    seconds: u64,
    timers: Option<String>,
    backup: bool,
    runs: usize,
    minutes: f64,
    profile: String,
    /// Busy loops beside the cluster (`boots`: 2 unless given; `soak`: none unless given).
    hogs: Option<usize>,
}

fn parse(args: &[String]) -> Result<Opts, String> {
    let mut o = Opts {
        elf: None,
        members: 2,
        seconds: 10,
        timers: None,
        backup: true,
        runs: 5,
        minutes: 5.0,
        profile: "default".into(),
        hogs: None,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || it.next().cloned().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--elf" => o.elf = Some(PathBuf::from(val()?)),
            "--members" => o.members = val()?.parse().map_err(|e| format!("--members: {e}"))?,
            "--seconds" => o.seconds = val()?.parse().map_err(|e| format!("--seconds: {e}"))?,
            "--timers" => o.timers = Some(val()?),
            "--no-backup" => o.backup = false,
            "--runs" => o.runs = val()?.parse().map_err(|e| format!("--runs: {e}"))?,
            "--minutes" => o.minutes = val()?.parse().map_err(|e| format!("--minutes: {e}"))?,
            "--profile" => o.profile = val()?,
            "--hogs" => o.hogs = Some(val()?.parse().map_err(|e| format!("--hogs: {e}"))?),
            other => return Err(format!("unknown option {other}")),
        }
    }
    Ok(o)
}

fn config(o: &Opts, timers: &str) -> Result<ClusterConfig, String> {
    let elf = o.elf.clone().ok_or("--elf <ha-firmware ELF> is required")?;
    let mut c = ClusterConfig::new(elf);
    c.members = o.members;
    c.timers = o.timers.clone().unwrap_or_else(|| timers.to_string());
    c.backup_link = o.backup;
    Ok(c)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Boots K members and prints the status table every second for `--seconds`.
fn boot(o: &Opts) -> Result<(), String> {
    let cfg = config(o, "default")?;
    println!(
        "booting {} members ({} timers, backup link {})",
        cfg.members, cfg.timers, cfg.backup_link
    );
    let mut c = Cluster::start(&cfg)?;
    let ctl = c.serve_wire_control()?;
    println!("test wire control socket: {}", ctl.display());
    let end = Instant::now() + Duration::from_secs(o.seconds);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_secs(1));
        println!(
            "t={:.1}s\n{}",
            c.started().elapsed().as_secs_f64(),
            c.status_table()
        );
    }
    for i in 0..cfg.members {
        let m = c.member(i);
        let mut r: Vec<f64> = m.host().rtts.iter().map(|d| ms(*d)).collect();
        r.sort_by(f64::total_cmp);
        if let (Some(lo), Some(hi)) = (r.first(), r.last()) {
            println!(
                "host link {}: round trips={} min={lo:.2} median={:.2} p95={:.2} max={hi:.2} ms",
                m.serial(),
                r.len(),
                r[r.len() / 2],
                r[(r.len() * 95 / 100).min(r.len() - 1)],
            );
        }
    }
    let actives = c.actives();
    println!(
        "qemu: {} members, active: {:?}",
        cfg.members,
        actives
            .iter()
            .map(|&i| c.member(i).serial().to_string())
            .collect::<Vec<_>>()
    );
    if actives.len() != 1 {
        return Err(format!("{} active members, expected 1", actives.len()));
    }
    Ok(())
}

/// Two members, live table, kill -9 the active, show the takeover and its time.
fn demo(o: &Opts) -> Result<(), String> {
    let cfg = config(o, "fast")?;
    println!(
        "demo: booting 2 members under QEMU mps2-an385 ({} timers, main + backup link)",
        cfg.timers
    );
    let mut c = Cluster::start(&cfg)?;
    let active = c.wait_one_active(Duration::from_secs(20))?;
    for _ in 0..8 {
        println!(
            "t={:.1}s\n{}",
            c.started().elapsed().as_secs_f64(),
            c.status_table()
        );
        std::thread::sleep(Duration::from_millis(750));
    }
    let survivor = 1 - active;
    println!(
        "demo: kill -9 {} (QEMU pid {}), the active member",
        c.member(active).serial(),
        c.member(active).pid()
    );
    let killed = c.kill(active);
    let took = c.wait_for(Duration::from_secs(15), |c| {
        c.member(survivor)
            .decision_since(killed, Role::Active)
            .is_some()
    });
    let at = c.member(survivor).decision_since(killed, Role::Active);
    for _ in 0..4 {
        println!(
            "t={:.1}s\n{}",
            c.started().elapsed().as_secs_f64(),
            c.status_table()
        );
        std::thread::sleep(Duration::from_millis(750));
    }
    for e in c.member(survivor).events_since(killed) {
        println!("demo: {} event: {e}", c.member(survivor).serial());
    }
    match (took, at) {
        (true, Some(at)) => {
            println!(
                "demo: {} took over; failover time {:.1} ms (SIGKILL of the active's QEMU -> \
                 RoleDecision Active on the survivor's host link)",
                c.member(survivor).serial(),
                ms(at.duration_since(killed))
            );
            drop(c);
            println!("demo: every QEMU killed, files removed");
            Ok(())
        }
        _ => Err(format!(
            "demo: {} did not take over within 15 s",
            c.member(survivor).serial()
        )),
    }
}

/// Fast profile; SIGKILL of the active's QEMU → RoleDecision Active on the survivor's link.
fn bench(o: &Opts) -> Result<(), String> {
    if o.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    let cfg = config(o, "fast")?;
    let mut times = Vec::new();
    for run in 1..=o.runs {
        let mut c = Cluster::start(&cfg)?;
        let active = c.wait_one_active(Duration::from_secs(20))?;
        let passive = 1 - active;
        // The passive must have decided Passive and had its links up for a while.
        if !c.wait_for(Duration::from_secs(10), |c| {
            c.member(passive).role() == Some(Role::Passive)
        }) {
            return Err(format!(
                "run {run}: no passive member\n{}",
                c.status_table()
            ));
        }
        std::thread::sleep(Duration::from_secs(1));
        let killed = c.kill(active);
        if !c.wait_for(Duration::from_secs(10), |c| {
            c.member(passive)
                .decision_since(killed, Role::Active)
                .is_some()
        }) {
            return Err(format!(
                "run {run}: no takeover within 10 s\n{}",
                c.status_table()
            ));
        }
        let at = c
            .member(passive)
            .decision_since(killed, Role::Active)
            .ok_or("takeover vanished")?;
        let t = ms(at.duration_since(killed));
        println!("run {run}: failover {t:.1} ms");
        times.push(t);
    }
    let (min, median, max) = summary(&mut times).ok_or("no runs")?;
    println!(
        "failover: runs={} min={min:.1} median={median:.1} max={max:.1}",
        times.len()
    );
    Ok(())
}

/// Impaired main link for M minutes; counts every role change to active after the election
/// by the controllers' own counters (`HostMsg::Counters`, asked before and after), and
/// cross-checks them with what a main CPU sees, each of which can miss one: the roles
/// reports (a stalled controller drops them), the numbered events (holes are asked for
/// again; what the ring overwrote first is counted as lost) and the decoded firmware log
/// (frames are cut when the log line stalls).
fn soak(o: &Opts) -> Result<(), String> {
    let (timers, impair) = match o.profile.as_str() {
        "default" => (
            "default",
            Impair {
                loss_pct: 20.0,
                delay_ms: 100,
                ..Impair::default()
            },
        ),
        "fast" => (
            "fast",
            Impair {
                loss_pct: 2.0,
                ..Impair::default()
            },
        ),
        p => return Err(format!("--profile {p}: default or fast")),
    };
    let cfg = config(o, timers)?;
    let hogs = o.hogs.unwrap_or(0);
    let _hogs = ha_qemu::BusyLoops::start(hogs)?;
    let mut c = Cluster::start(&cfg)?;
    c.wait_one_active(Duration::from_secs(30))?;
    std::thread::sleep(Duration::from_secs(2));
    // What each source already holds: the election's own changes to active.
    let mut before = Vec::new();
    let asked = Instant::now();
    for m in c.members() {
        let log = m.log(c.elf())?;
        let counters = m.counters_after(asked, Duration::from_secs(10))?;
        before.push((
            m.host().ledger.known_end(),
            to_active_lines(&log).len(),
            counters,
        ));
    }
    c.impair(Some(Link::Main), impair)?;
    let since = Instant::now();
    println!(
        "soak: {} timers, main link {:.0}% loss + {} ms one-way delay, {} minutes, {hogs} busy loops beside",
        cfg.timers, impair.loss_pct, impair.delay_ms, o.minutes
    );
    let end = since + Duration::from_secs_f64(o.minutes * 60.0);
    let decisions = |m: &ha_testkit::Member| -> usize {
        m.host()
            .decisions
            .iter()
            .filter(|d| d.0 >= since && d.1 == 0 && d.2 == Role::Active)
            .count()
    };
    let from_events = |c: &Cluster| -> usize {
        c.members()
            .iter()
            .zip(&before)
            .map(|(m, b)| m.host().ledger.to_active_since(b.0).len())
            .sum()
    };
    let mut next = Instant::now();
    while Instant::now() < end {
        if Instant::now() >= next {
            next += Duration::from_secs(30);
            println!(
                "t={:.0}s swaps so far (events): {}\n{}",
                since.elapsed().as_secs_f64(),
                from_events(&c),
                c.status_table()
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    // Let the last replays of missing events arrive.
    let settle = Instant::now() + Duration::from_secs(3);
    while Instant::now() < settle && c.members().iter().any(|m| m.host().ledger.missing() > 0) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let stats = c.wire().stats();
    let (fwd, lost): (u64, u64) = stats
        .iter()
        .filter(|d| d.link == Link::Main)
        .fold((0, 0), |(f, l), d| {
            (f + d.stats.forwarded, l + d.stats.dropped_loss)
        });
    println!("soak: main link forwarded={fwd} dropped_by_loss={lost}");
    for d in stats.iter().filter(|d| d.link == Link::Backup) {
        println!(
            "soak: backup link {}->{} forwarded={} dropped_queue={}",
            d.from, d.to, d.stats.forwarded, d.stats.dropped_queue
        );
    }
    let (mut swaps, mut events_lost, mut disagree) = (0, 0, Vec::new());
    let ended = Instant::now();
    for (m, b) in c.members().iter().zip(&before) {
        let n = m.counters_after(ended, Duration::from_secs(10))?;
        let counted = n.to_active.wrapping_sub(b.2.to_active) as usize;
        println!(
            "soak: {}: controller counted: to active +{counted}, peers lost +{}, probes asked \
             again +{}, events lost before sent +{}",
            m.serial(),
            n.peers_lost.wrapping_sub(b.2.peers_lost),
            n.probes_reasked.wrapping_sub(b.2.probes_reasked),
            n.events_unsent.wrapping_sub(b.2.events_unsent)
        );
        let log = m.log(c.elf())?;
        print_link_story(m.serial(), &log);
        let ledger = m.host().ledger.clone();
        let by_event = ledger.to_active_since(b.0);
        for (seq, at_ms, detail) in &by_event {
            println!(
                "soak: {}: takeover event #{seq} at {}.{:03} s: {detail}",
                m.serial(),
                at_ms / 1000,
                at_ms % 1000
            );
        }
        let by_log = to_active_lines(&log).len().saturating_sub(b.1);
        let (accepted, refused) = m.host().link_frames.clone();
        println!(
            "soak: {}: host link frames accepted={accepted} refused={refused:?}",
            m.serial()
        );
        let by_role = decisions(m);
        let missing = ledger.missing() - ledger.lost();
        println!(
            "soak: {}: changes to active: roles reports={by_role} events={} firmware log={by_log} \
             (events lost={} still missing={missing}, log frames not decoded={}{})",
            m.serial(),
            by_event.len(),
            ledger.lost(),
            m.log_frames().saturating_sub(log.lines().count()),
            if m.log_truncated() {
                ", log truncated"
            } else {
                ""
            }
        );
        if by_role.max(by_event.len()).max(by_log) > counted {
            disagree.push(m.serial().to_string());
        }
        swaps += counted;
        events_lost += ledger.lost() + missing;
    }
    if !disagree.is_empty() {
        return Err(format!(
            "soak: {} reported more changes to active than its controller counted",
            disagree.join(", ")
        ));
    }
    println!(
        "soak: profile={} minutes={} hogs={hogs} swaps={swaps} events_lost={events_lost}",
        o.profile, o.minutes
    );
    Ok(())
}

/// The decoded firmware log's role changes to active.
fn to_active_lines(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| l.contains("role_changed") && l.contains("-> active"))
        .collect()
}

/// What a soak's reader needs to explain a swap: from one member's decoded firmware log, the
/// link and role events with their uptime, and how many serial frames arrived damaged and how
/// often a serial line stalled.
fn print_link_story(serial: &str, log: &str) {
    let count = |needle: &str| log.lines().filter(|l| l.contains(needle)).count();
    println!(
        "soak: {serial}: damaged backup frames={} backup stalls={} host-link damaged={}",
        count("backup link: damaged frame"),
        count("backup link: stalled"),
        count("host link: damaged frame")
    );
    for l in log.lines().filter(|l| {
        [
            "link_down",
            "link_up",
            "role_changed",
            "stalled",
            "probe",
            "peer_lost",
        ]
        .iter()
        .any(|k| l.contains(k))
    }) {
        println!("soak: {serial}: {l}");
    }
}

/// Boots the two-member cluster `--runs` times with `--hogs` busy loops beside it; a boot
/// passes when, as each member's main CPU sees it (the roles its controller reported on the
/// host link), exactly one member is active and the other passive within 30 s. Guards the
/// no-active-after-boot defect: the figure is how many boots ended without an active member.
fn boots(o: &Opts) -> Result<(), String> {
    let cfg = config(o, "fast")?;
    let hogs = o.hogs.unwrap_or(2);
    let _hogs = ha_qemu::BusyLoops::start(hogs)?;
    // Two clocks: from the QEMU processes' start (boot, host links, election) and from the
    // moment both controllers report on their host links (the election alone).
    let mut times = Vec::new();
    let mut elect = Vec::new();
    let mut failed = Vec::new();
    for run in 1..=o.runs {
        let spawned = std::time::Instant::now();
        let mut c = Cluster::start(&cfg)?;
        let t0 = c.started();
        let ok = c.wait_for(Duration::from_secs(30), |c| {
            let roles: Vec<_> = c.members().iter().map(|m| m.role()).collect();
            roles.iter().filter(|r| **r == Some(Role::Active)).count() == 1
                && roles.iter().filter(|r| **r == Some(Role::Passive)).count() == 1
        });
        if ok {
            times.push(ms(spawned.elapsed()));
            elect.push(ms(t0.elapsed()));
        } else {
            println!(
                "run {run}: no single active member after 30 s:\n{}",
                c.status_table()
            );
            failed.push(run);
        }
        drop(c);
        if run % 10 == 0 {
            println!(
                "boots: {run}/{} done, {} without an active member",
                o.runs,
                failed.len()
            );
        }
    }
    let (_, median, max) = summary(&mut times).unwrap_or((0.0, 0.0, 0.0));
    let (_, e_median, e_max) = summary(&mut elect).unwrap_or((0.0, 0.0, 0.0));
    println!(
        "boots: runs={} hogs={} no_active={} median_ms={median:.0} max_ms={max:.0} \
         elect_median_ms={e_median:.0} elect_max_ms={e_max:.0}",
        o.runs,
        hogs,
        failed.len()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("boots without an active member: runs {failed:?}"))
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some(cmd) => parse(&args[1..]).and_then(|o| match cmd {
            "boot" => boot(&o),
            "demo" => demo(&o),
            "bench" => bench(&o),
            "soak" => soak(&o),
            "boots" => boots(&o),
            other => Err(format!(
                "unknown command {other}: boot, demo, bench, soak, boots"
            )),
        }),
        None => Err("usage: ha-cluster boot|demo|bench|soak|boots --elf <ELF> [options]".into()),
    };
    if let Err(e) = result {
        eprintln!("ha-cluster: {e}");
        std::process::exit(1);
    }
}
