//! `cargo xtask chaos --minutes M [--seed S] [--connections N]`: the two-member cluster of the
//! e2e (QEMU controllers, daemons in namespaces, N TCP connections through the active) kept
//! under random faults: SIGKILL of a controller, a daemon or both and their restart, HA-link
//! cuts and impairments, an interface down, PSK rotations, planned swaps.
//!
//! A monitor polls both daemons' mode every [`POLL`]. After every fault the cluster must again
//! have exactly one active member within [`BOUND`] of the fault's last action (otherwise the
//! fault counts as `stuck`), two actives are tolerated only in the collision window after an
//! HA partition heals, and every connection must survive (`conns_lost` counts connections
//! that failed or stopped flowing). The seed chooses the whole schedule; a failure prints the
//! command that replays it. Last line:
//! `chaos: faults=<n> no_active_max_ms=<ms> dual_active_ms=<ms> conns_lost=<k> stuck=<k>`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::env::{forwarding, last_events, mode, wire_control, Env, LinkPorts};
use super::setup::Setup;
use crate::util::{run, Result};

mod judge;

use judge::{judge, spells, FaultSpan, Sample};

/// How often the monitor asks both daemons for their mode.
const POLL: Duration = Duration::from_millis(50);
/// Longest time without an active member after a fault's last action before it counts as
/// stuck: a crash takeover (dead time, probe, host link, daemon) takes about 1 s with the
/// e2e's timers; the rest is margin for a loaded 2-core machine.
const BOUND: Duration = Duration::from_secs(4);
/// After an HA partition heals, two actives are a collision until the loser steps down.
const COLLISION_WINDOW: Duration = Duration::from_secs(3);
/// Pause between two faults, so each one's effect is judged on its own.
const SETTLE: Duration = Duration::from_secs(3);

/// One kind of fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Fault {
    /// SIGKILL the controller, restart it after a while.
    KillController,
    /// SIGKILL the daemon, restart it after a while.
    KillDaemon,
    /// SIGKILL both (the box dies), restart both after a while.
    KillMember,
    /// Cut one HA link (main or backup) both ways, restore it.
    CutLink,
    /// Cut both HA links (a partition), restore them.
    Partition,
    /// Loss and delay on the main HA link, then restore.
    Impair,
    /// A monitored data interface down on a member, then up.
    InterfaceDown,
    /// `hactl psk rotate` to a new key over both members.
    RotateKey,
    /// `hactl passive` on the active, then `hactl reset`.
    PlannedSwap,
}

impl Fault {
    /// The fault named `name` (as printed: `KillController`, …).
    pub(super) fn parse(name: &str) -> Option<Fault> {
        FAULTS.iter().copied().find(|f| format!("{f:?}") == name)
    }
}

pub(super) const FAULTS: [Fault; 9] = [
    Fault::KillController,
    Fault::KillDaemon,
    Fault::KillMember,
    Fault::CutLink,
    Fault::Partition,
    Fault::Impair,
    Fault::InterfaceDown,
    Fault::RotateKey,
    Fault::PlannedSwap,
];

/// Options of a chaos run.
pub(super) struct ChaosOpts {
    pub minutes: f64,
    pub seed: u64,
    /// The faults drawn from (all when empty): `--only KillController,PlannedSwap`.
    pub only: Vec<Fault>,
}

/// Both daemons' answers over time, one list per member.
#[derive(Default)]
struct Timeline {
    samples: [Vec<Sample>; 2],
}

/// Unix milliseconds now (the daemons' clock: every member runs on this host).
fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn monitor(socks: Vec<PathBuf>, stop: Arc<AtomicBool>, tl: Arc<Mutex<Timeline>>) {
    while !stop.load(Ordering::Relaxed) {
        let t = Instant::now();
        for (i, sock) in socks.iter().enumerate().take(2) {
            let asked_ms = unix_ms();
            let report = forwarding(sock, POLL * 4);
            tl.lock().unwrap_or_else(|p| p.into_inner()).samples[i]
                .push(Sample { asked_ms, report });
        }
        std::thread::sleep(POLL.saturating_sub(t.elapsed()));
    }
}

/// What one fault left to judge: when its last action happened, and whether a collision
/// window follows it.
struct Applied {
    fault: Fault,
    member: usize,
    span: FaultSpan,
}

/// The chaos run on a set-up cluster.
#[allow(clippy::too_many_arguments)]
pub(super) fn run_chaos(
    env: &mut Env,
    o: &ChaosOpts,
    elf: &Path,
    b: &dyn Fn(&str) -> String,
    dir: &Path,
    s: Setup,
) -> Result {
    let Setup {
        serials,
        members,
        socks,
        net,
        mut load,
        ..
    } = s;
    let net = net.ok_or("chaos: needs QEMU controllers (the test wire)")?;
    let mut rng = oorandom::Rand64::new(u128::from(o.seed));
    let stop = Arc::new(AtomicBool::new(false));
    let tl = Arc::new(Mutex::new(Timeline::default()));
    let mon = {
        let (socks, stop, tl) = (socks.clone(), stop.clone(), tl.clone());
        std::thread::spawn(move || monitor(socks, stop, tl))
    };
    let start = Instant::now();
    let run_start_ms = unix_ms();
    let end = start + Duration::from_secs_f64(o.minutes * 60.0);
    let mut applied = Vec::new();
    let mut key_id: u8 = 1;
    // Connections that stalled after a fault (no data for the whole settle time): reported
    // as they happen; lost = failed (reset, closed, corrupted) or still not flowing at the end.
    let mut first_loss: Option<String> = None;
    // Faults after which traffic did not flow again within the settle time: the cluster was
    // stuck for the client although a member may have reported active.
    let mut stalled_after: Vec<(Fault, usize, u64)> = Vec::new();
    let replay = format!(
        "cargo xtask chaos --minutes {} --seed {}",
        o.minutes, o.seed
    );
    println!("chaos: seed {} ({replay})", o.seed);
    while Instant::now() < end {
        let pool: &[Fault] = if o.only.is_empty() { &FAULTS } else { &o.only };
        let fault = pool[rng.rand_range(0..pool.len() as u64) as usize];
        let active = current_active(&socks);
        // Most faults hit the active (the case that matters); some the passive.
        let member = match active {
            Some(a) if rng.rand_range(0..4) != 0 => a,
            Some(a) => 1 - a,
            None => rng.rand_range(0..2) as usize,
        };
        let hold = Duration::from_millis(300 + rng.rand_range(0..2_700));
        load.cmd("mark")?;
        let started_ms = unix_ms();
        println!(
            "chaos: t={:.1}s {fault:?} on {} for {} ms",
            start.elapsed().as_secs_f64(),
            serials[member],
            hold.as_millis()
        );
        let collision = apply(
            env,
            b,
            dir,
            elf,
            &net,
            &socks,
            members,
            member,
            fault,
            hold,
            &mut key_id,
        )?;
        applied.push(Applied {
            fault,
            member,
            span: FaultSpan {
                started_ms,
                healed_ms: unix_ms(),
                collision,
            },
        });
        std::thread::sleep(SETTLE);
        let (survived, n, gap, failed) = load.report()?;
        if survived < n {
            let stalled = n - survived;
            first_loss.get_or_insert_with(|| {
                format!(
                    "{fault:?} on {}: {stalled}/{n} connections without data for {} s after it ({failed} failed since the start), longest pause {gap} ms\n{}",
                    serials[member],
                    SETTLE.as_secs(),
                    last_events(&socks[1 - member], 12)
                )
            });
            println!(
                "chaos: {stalled}/{n} connections stalled or failed after {fault:?}; modes: {:?} {:?}\n--- {} events\n{}\n--- {} events\n{}",
                mode(&socks[0]),
                mode(&socks[1]),
                serials[0],
                last_events(&socks[0], 10),
                serials[1],
                last_events(&socks[1], 10)
            );
            stalled_after.push((fault, member, stalled));
        }
    }
    stop.store(true, Ordering::Relaxed);
    let _ = mon.join();
    // The final check, after a fault-free settle: a connection that failed, or that still
    // does not flow, is lost.
    load.cmd("mark")?;
    std::thread::sleep(SETTLE);
    let (survived, n, _, failed) = load.report()?;
    let conns_lost = failed.max(n - survived);
    load.cmd("stop")?;
    let tl = tl.lock().unwrap_or_else(|p| p.into_inner());
    let spans: Vec<FaultSpan> = applied.iter().map(|f| f.span.clone()).collect();
    let [a, b] = [spells(&tl.samples[0]), spells(&tl.samples[1])];
    let (from, to) = (
        tl.samples[0].first().map_or(0, |s| s.asked_ms),
        tl.samples[0].last().map_or(0, |s| s.asked_ms),
    );
    let verdict = judge(
        [&a, &b],
        from,
        to,
        &spans,
        BOUND.as_millis() as u64,
        COLLISION_WINDOW.as_millis() as u64,
    );
    // Where each departure from "exactly one active" happened: the fault it follows.
    let at = |t: u64| {
        let f = applied.iter().rev().find(|f| f.span.started_ms <= t);
        let when = t.saturating_sub(run_start_ms) as f64 / 1000.0;
        match f {
            Some(f) => format!(
                "t={when:.3}s, {:.3}s after {:?} on {} began (healed {:.3}s before)",
                t.saturating_sub(f.span.started_ms) as f64 / 1000.0,
                f.fault,
                serials[f.member],
                t as f64 / 1000.0 - f.span.healed_ms as f64 / 1000.0
            ),
            None => format!("t={when:.3}s, before any fault"),
        }
    };
    for (t, d) in &verdict.dual_stretches {
        println!("chaos: two actives for {d} ms at {}", at(*t));
    }
    if let Some(t) = verdict.no_active_longest_at {
        println!(
            "chaos: the longest time without an active ({} ms) began at {}",
            verdict.no_active_max_ms,
            at(t)
        );
    }
    println!(
        "chaos: faults={} no_active_max_ms={} dual_active_ms={} conns_lost={} stuck={}",
        applied.len(),
        verdict.no_active_max_ms,
        verdict.dual_outside_ms,
        conns_lost,
        verdict.stuck.len() + stalled_after.len()
    );
    let mut problems = Vec::new();
    if let Some(f) = first_loss {
        problems.push(format!("first lost connections: {f}"));
    }
    for (i, recovered) in &verdict.stuck {
        let f = &applied[*i];
        problems.push(format!(
            "stuck: no single active member within {} ms after {:?} on {} (one came after {})",
            BOUND.as_millis(),
            f.fault,
            serials[f.member],
            recovered.map_or("never".into(), |ms| format!("{ms} ms"))
        ));
    }
    for (fault, member, k) in &stalled_after {
        problems.push(format!(
            "stuck: {k} connections carried no data for {} s after {fault:?} on {}",
            SETTLE.as_secs(),
            serials[*member]
        ));
    }
    if verdict.dual_outside_ms > 0 {
        problems.push(format!(
            "two active members for {} ms outside collision windows",
            verdict.dual_outside_ms
        ));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "chaos: {}\nreproduce with: {replay}",
            problems.join("\n")
        ))
    }
}

fn current_active(socks: &[PathBuf]) -> Option<usize> {
    (0..socks.len())
        .find(|&i| forwarding(&socks[i], Duration::from_secs(2)).is_some_and(|f| f.active))
}

/// Applies one fault (its effect held for `hold`, then healed); returns whether two actives
/// may briefly follow (a healed partition).
#[allow(clippy::too_many_arguments)]
fn apply(
    env: &mut Env,
    b: &dyn Fn(&str) -> String,
    dir: &Path,
    elf: &Path,
    net: &LinkPorts,
    socks: &[PathBuf],
    members: [&'static str; 2],
    i: usize,
    fault: Fault,
    hold: Duration,
    key_id: &mut u8,
) -> Result<bool> {
    let m = members[i];
    let wire = |cmd: &str| wire_control(&dir.join("wire.sock"), cmd);
    match fault {
        Fault::KillController => {
            env.kill(&format!("controller-{m}"));
            std::thread::sleep(hold);
            env.restart_controller(elf, m, net, i)?;
        }
        Fault::KillDaemon => {
            env.kill(&format!("daemon-{m}"));
            std::thread::sleep(hold);
            env.restart_daemon(b, m)?;
        }
        Fault::KillMember => {
            env.kill(&format!("daemon-{m}"));
            env.kill(&format!("controller-{m}"));
            std::thread::sleep(hold);
            env.restart_controller(elf, m, net, i)?;
            env.restart_daemon(b, m)?;
        }
        Fault::CutLink => {
            let link = if hold.as_millis() % 2 == 0 {
                "main"
            } else {
                "backup"
            };
            wire(&format!(r#"{{"cmd":"cut","link":"{link}"}}"#))?;
            std::thread::sleep(hold);
            wire(r#"{"cmd":"restore"}"#)?;
        }
        Fault::Partition => {
            wire(r#"{"cmd":"cut"}"#)?;
            std::thread::sleep(hold);
            wire(r#"{"cmd":"restore"}"#)?;
            return Ok(true);
        }
        Fault::Impair => {
            wire(
                r#"{"cmd":"set","link":"main","impair":{"loss_pct":10,"delay_ms":20,"jitter_ms":10}}"#,
            )?;
            std::thread::sleep(hold);
            wire(r#"{"cmd":"restore"}"#)?;
        }
        Fault::InterfaceDown => {
            let ns = env.ns(m);
            env.ip(&["-n", &ns, "link", "set", "out", "down"])?;
            std::thread::sleep(hold);
            env.ip(&["-n", &ns, "link", "set", "out", "up"])?;
        }
        Fault::RotateKey => {
            *key_id = if *key_id >= 250 { 1 } else { *key_id + 1 };
            let psk = dir.join(format!("chaos-psk-{key_id}"));
            run(Command::new(b("hactl"))
                .args(["psk", "generate", "-o"])
                .arg(&psk))?;
            let mut rotate = Command::new(b("hactl"));
            rotate
                .arg("--socket")
                .arg(&socks[0])
                .args(["psk", "rotate", "--psk-file"])
                .arg(&psk)
                .args(["--key-id", &key_id.to_string()]);
            for sock in socks {
                rotate.arg("--member-socket").arg(sock);
            }
            run(&mut rotate)?;
        }
        Fault::PlannedSwap => {
            run(Command::new(b("hactl"))
                .arg("--socket")
                .arg(&socks[i])
                .arg("passive"))?;
            std::thread::sleep(hold);
            run(Command::new(b("hactl"))
                .arg("--socket")
                .arg(&socks[i])
                .arg("reset"))?;
        }
    }
    Ok(false)
}
