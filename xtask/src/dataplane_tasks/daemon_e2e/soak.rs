//! `cargo xtask e2e soak --minutes M [--timers PROFILE] [--hogs H] [--loss PCT]
//! [--connections N]`: the false-failover soak with the real main-CPU side.
//!
//! `cargo xtask qemu soak` runs the controllers with a harness that answers every liveness
//! probe at once; here the kernel e2e's cluster runs instead (QEMU controllers, the daemons
//! with `datapath = "kernel"` probing each other over the data interfaces, the standby
//! watching its peer, the load's N connections through the active), with PCT % loss on the
//! main HA link and H busy loops beside it, for M minutes. Nothing is killed: every
//! takeover is false. Counted by the controllers themselves (`ha_controller_takeovers_total`
//! on each daemon's metrics endpoint, the counters of `HostMsg::Counters`), cross-checked
//! with the daemons' data-path role changes (`hactl forwarding`); the connections must all
//! survive. Last line:
//! `e2e-soak: timers=<p> minutes=<m> hogs=<h> loss_pct=<x> takeovers=<n> role_changes=<k>
//! survived=<x>/<n>`.

use std::time::{Duration, Instant};

use super::env::{bin_dir, build_firmware, forwarding, wire_control, Env};
use super::kernel::{sample, scrape_metrics};
use super::{build_tools, setup, Opts};
use crate::util::Result;

/// The soak's options.
struct SoakOpts {
    minutes: f64,
    hogs: usize,
    loss_pct: f64,
}

/// A controller's takeovers so far, from its daemon's metrics endpoint in namespace `ns`
/// (`ha_controller_takeovers_total`); `None` when it cannot be read or is not there yet.
fn takeovers(ns: &str) -> Option<u64> {
    let scrape = scrape_metrics(ns).ok()?;
    sample(&scrape, "ha_controller_takeovers_total", None).map(|v| v as u64)
}

/// Runs the soak (see the module's documentation).
pub(super) fn soak(args: &[String]) -> Result {
    let mut o = Opts {
        connections: 20,
        interval_ms: 100,
        controller: "qemu".into(),
        timers: "fast".into(),
        table: "dataplane".into(),
        datapath: "kernel".into(),
        sync: true,
        nat: false,
        ftp: false,
        shared: false,
        cases: Vec::new(),
        backup_link: false,
        standby_install: None,
    };
    let mut s = SoakOpts {
        minutes: 10.0,
        hogs: 2,
        loss_pct: 2.0,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let val = it
            .next()
            .ok_or_else(|| format!("e2e soak: {a} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("e2e soak: {a} {val}: {e}");
        match a.as_str() {
            "--minutes" => s.minutes = val.parse().map_err(|e| bad(&e))?,
            "--hogs" => s.hogs = val.parse().map_err(|e| bad(&e))?,
            "--loss" => s.loss_pct = val.parse().map_err(|e| bad(&e))?,
            "--timers" => o.timers = val.clone(),
            "--connections" => o.connections = val.parse().map_err(|e| bad(&e))?,
            other => {
                return Err(format!(
                    "e2e soak: unknown option {other}; usage: e2e soak --minutes M \
                     [--timers PROFILE] [--hogs H] [--loss PCT] [--connections N]"
                ))
            }
        }
    }
    if s.minutes.is_nan()
        || s.minutes <= 0.0
        || o.connections == 0
        || !(0.0..=100.0).contains(&s.loss_pct)
    {
        return Err("e2e soak: --minutes and --connections must be positive, --loss 0..100".into());
    }
    if !crate::util::is_root() {
        return Err("e2e soak: needs root (network namespaces)".into());
    }
    build_tools()?;
    let elf = build_firmware()?;
    let bins = bin_dir();
    let b = |n: &str| bins.join(n).display().to_string();
    let id = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(format!("ha-e2e-soak-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("e2e soak: {e}"))?;
    let mut env = Env {
        prefix: format!("hes{id}"),
        dir: dir.clone(),
        namespaces: Vec::new(),
        procs: Vec::new(),
    };
    // Ok(Some(why)): the soak ran and found false takeovers (its journals tell why; the
    // post-mortem is for a cluster that failed to run).
    let r = (|| -> Result<Option<String>> {
        let st = setup::start(&mut env, &o, Some(&elf), &b, &dir, id)?;
        let mut load = st.load;
        let ns: Vec<String> = st.members.iter().map(|m| env.ns(m)).collect();
        let count = |what: &str| -> Result<(u64, u64)> {
            let t: Vec<u64> = ns
                .iter()
                .map(|n| {
                    takeovers(n).ok_or_else(|| format!("e2e soak: {what}: no metrics from {n}"))
                })
                .collect::<Result<_>>()?;
            let c: Vec<u64> = st
                .socks
                .iter()
                .map(|s| {
                    forwarding(s, Duration::from_secs(2))
                        .map(|f| f.changes)
                        .ok_or_else(|| format!("e2e soak: {what}: no forwarding record"))
                })
                .collect::<Result<_>>()?;
            Ok((t.iter().sum(), c.iter().sum()))
        };
        // Settled first: the boot's own takeover is not the soak's. The controllers' counters
        // reach the daemons with their details (every 10 s): the baseline is taken once the
        // boot's takeover shows there.
        let settle = Instant::now() + Duration::from_secs(30);
        let (t0, c0) = loop {
            match count("before") {
                Ok((t, c)) if t >= 1 => break (t, c),
                _ if Instant::now() > settle => {
                    return Err("e2e soak: the boot's takeover never showed in the counters".into())
                }
                _ => std::thread::sleep(Duration::from_secs(1)),
            }
        };
        let wire = dir.join("wire.sock");
        if s.loss_pct > 0.0 {
            wire_control(
                &wire,
                &format!(
                    r#"{{"cmd":"set","link":"main","impair":{{"loss_pct":{}}}}}"#,
                    s.loss_pct
                ),
            )?;
        }
        load.cmd("mark")?;
        println!(
            "e2e-soak: {} timers, {} % loss on the main HA link, {} busy loops, {} connections, \
             {} minutes",
            o.timers, s.loss_pct, s.hogs, o.connections, s.minutes
        );
        let hogs = ha_qemu::BusyLoops::start(s.hogs)?;
        let end = Instant::now() + Duration::from_secs_f64(s.minutes * 60.0);
        while Instant::now() < end {
            std::thread::sleep(Duration::from_secs(60).min(end - Instant::now()));
            if let Ok((t, c)) = count("progress") {
                println!(
                    "e2e-soak: {:.1} min: takeovers {} role changes {}",
                    s.minutes - (end - Instant::now()).as_secs_f64() / 60.0,
                    t - t0,
                    c - c0
                );
            }
        }
        drop(hogs);
        wire_control(&wire, r#"{"cmd":"restore"}"#)?;
        std::thread::sleep(Duration::from_secs(2));
        let (t1, c1) = count("after")?;
        let (kept, conns, gap, _) = load.report()?;
        println!(
            "e2e-soak: the load's longest pause {gap} ms; journals in {}",
            dir.display()
        );
        println!(
            "e2e-soak: timers={} minutes={} hogs={} loss_pct={} takeovers={} role_changes={} \
             survived={kept}/{conns}",
            o.timers,
            s.minutes,
            s.hogs,
            s.loss_pct,
            t1 - t0,
            c1 - c0
        );
        Ok((t1 != t0 || c1 != c0 || kept != conns).then(|| {
            format!(
                "e2e soak: {} false takeovers, {} data-path role changes, {kept}/{conns} \
                 connections kept (journals in {})",
                t1 - t0,
                c1 - c0,
                dir.display()
            )
        }))
    })();
    match r {
        Ok(None) => Ok(()),
        Ok(Some(why)) => Err(why),
        Err(e) => Err(format!("{e}\n{}", env.post_mortem(Some(&elf)))),
    }
}
