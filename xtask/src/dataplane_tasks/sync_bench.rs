//! `cargo xtask bench sync [--connections N] [--conntrackd-connections M] [--no-conntrackd]`:
//! 1. conntrackd (Debian `conntrackd` + `conntrack`), FTFW mode over UDP between two network
//!    namespaces this command creates and removes: M entries created with `conntrack -R`,
//!    time until the peer's external cache holds them all (creations only: conntrack-tools
//!    1.4.7 stops a `-R` file of `-U` lines with "Protocol error" after a few dozen, and a
//!    filtered mass `-U` answers "Operation not supported"); then a resync request (`conntrackd -n`) after flushing the peer's cache, time until
//!    it holds M again. Printed as `conntrackd: ...` lines, or why it cannot run.
//! 2. Our engine: `cargo run --release -p ha-dataplane --example sync_bench`, whose last line
//!    is the bench's last line: `sync: updates_per_s=<n> bulk_1m_ms=<ms> p99_lag_ms=<ms>`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::{cargo, have, run, Result};

/// Default conntrackd load: below the kernel's default `nf_conntrack_max` (262,144), which
/// a network namespace cannot raise.
const CT_DEFAULT: u32 = 200_000;

pub fn run_bench(args: &[String]) -> Result {
    let mut n = "1000000".to_string();
    let mut ct_n = CT_DEFAULT;
    let mut with_ct = true;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--connections" => n = it.next().ok_or("--connections needs a value")?.clone(),
            "--conntrackd-connections" => {
                ct_n = it
                    .next()
                    .and_then(|s| s.parse().ok())
                    .ok_or("--conntrackd-connections needs a number")?
            }
            "--no-conntrackd" => with_ct = false,
            other => return Err(format!("bench sync: unknown argument {other:?}")),
        }
    }
    if with_ct {
        match conntrackd(ct_n) {
            Ok(lines) => lines.iter().for_each(|l| println!("{l}")),
            Err(why) => println!("conntrackd: not measured: {why}"),
        }
    }
    run(cargo().args([
        "run",
        "--release",
        "-q",
        "-p",
        "ha-dataplane",
        "--example",
        "sync_bench",
        "--",
        "--connections",
        &n,
    ]))
}

/// Namespaces, veth pair, daemons; removed on drop (processes by pid, links with the
/// namespaces).
struct CtLab {
    prefix: String,
    dir: PathBuf,
    daemons: Vec<Child>,
}

impl Drop for CtLab {
    fn drop(&mut self) {
        for c in &mut self.daemons {
            let _ = c.kill();
            let _ = c.wait();
        }
        for s in ["a", "b"] {
            let _ = Command::new("ip")
                .args(["netns", "del", &format!("{}{s}", self.prefix)])
                .status();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .output()
        .map_err(|e| format!("{cmd:?}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn ns(lab: &CtLab, side: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", &format!("{}{side}", lab.prefix)])
        .args(args);
    c
}

fn config(dir: &Path, side: &str, me: &str, peer: &str, dev: &str) -> String {
    let d = dir.display();
    format!(
        "Sync {{\n  Mode FTFW {{\n    DisableExternalCache Off\n  }}\n  UDP {{\n    IPv4_address {me}\n    \
         IPv4_Destination_Address {peer}\n    Port 3780\n    Interface {dev}\n    \
         SndSocketBuffer 24985600\n    RcvSocketBuffer 24985600\n    Checksum on\n  }}\n}}\n\
         General {{\n  HashSize 262144\n  HashLimit 4194304\n  LogFile {d}/{side}.log\n  Syslog off\n  \
         LockFile {d}/{side}.lock\n  UNIX {{\n    Path {d}/{side}.sock\n  }}\n  \
         NetlinkBufferSize 2097152\n  NetlinkBufferSizeMaxGrowth 134217728\n  \
         Filter From Userspace {{\n    Protocol Accept {{\n      TCP\n    }}\n    \
         Address Ignore {{\n      IPv4_address 127.0.0.1\n      IPv4_address 10.77.0.1\n      \
         IPv4_address 10.77.0.2\n    }}\n  }}\n}}\n"
    )
}

/// `(created, updated, active)` of the external cache of side `b`.
fn external(lab: &CtLab) -> Result<(u64, u64, u64)> {
    let conf = lab.dir.join("b.conf");
    let out = sh(&mut ns(
        lab,
        "b",
        &["conntrackd", "-C", &conf.to_string_lossy(), "-s"],
    ))?;
    let section = out
        .split("cache external:")
        .nth(1)
        .ok_or("conntrackd -s: no external cache section")?;
    let num = |label: &str| -> u64 {
        section
            .lines()
            .find(|l| l.trim_start().starts_with(label))
            .and_then(|l| l.split(':').nth(1))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    Ok((
        num("connections created"),
        num("connections updated"),
        num("current active connections"),
    ))
}

fn wait_for(
    lab: &CtLab,
    limit: Duration,
    done: impl Fn((u64, u64, u64)) -> bool,
) -> Result<Duration> {
    let t0 = Instant::now();
    loop {
        let s = external(lab)?;
        if done(s) {
            return Ok(t0.elapsed());
        }
        if t0.elapsed() > limit {
            return Err(format!(
                "peer's external cache at {s:?} (created, updated, active) after {limit:?}"
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn conntrackd(n: u32) -> Result<Vec<String>> {
    if !have("conntrackd") || !have("conntrack") {
        return Err("conntrackd/conntrack not installed (cargo xtask setup installs them)".into());
    }
    if !Path::new("/proc/net/nf_conntrack").exists()
        && !Path::new("/proc/sys/net/netfilter/nf_conntrack_max").exists()
    {
        return Err("the kernel has no nf_conntrack (module not loaded, not built in)".into());
    }
    let prefix = format!("dpct{}", std::process::id() % 100_000);
    let dir = std::env::temp_dir().join(&prefix);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let mut lab = CtLab {
        prefix: prefix.clone(),
        dir: dir.clone(),
        daemons: Vec::new(),
    };
    let (va, vb) = (format!("{prefix}a"), format!("{prefix}b"));
    for s in ["a", "b"] {
        sh(Command::new("ip").args(["netns", "add", &format!("{prefix}{s}")]))
            .map_err(|e| format!("cannot create network namespaces (root needed): {e}"))?;
    }
    sh(Command::new("ip").args(["link", "add", &va, "type", "veth", "peer", "name", &vb]))?;
    for (s, v, a) in [("a", &va, "10.77.0.1/24"), ("b", &vb, "10.77.0.2/24")] {
        let nsn = format!("{prefix}{s}");
        sh(Command::new("ip").args(["link", "set", v, "netns", &nsn]))?;
        sh(Command::new("ip").args(["-n", &nsn, "addr", "add", a, "dev", v]))?;
        sh(Command::new("ip").args(["-n", &nsn, "link", "set", v, "up"]))?;
        sh(Command::new("ip").args(["-n", &nsn, "link", "set", "lo", "up"]))?;
    }
    for (s, me, peer, dev) in [
        ("a", "10.77.0.1", "10.77.0.2", &va),
        ("b", "10.77.0.2", "10.77.0.1", &vb),
    ] {
        let conf = dir.join(format!("{s}.conf"));
        std::fs::write(&conf, config(&dir, s, me, peer, dev)).map_err(|e| e.to_string())?;
        let log = std::fs::File::create(dir.join(format!("{s}.out"))).map_err(|e| e.to_string())?;
        let child = ns(&lab, s, &["conntrackd", "-C", &conf.to_string_lossy()])
            .stdout(log.try_clone().map_err(|e| e.to_string())?)
            .stderr(log)
            .spawn()
            .map_err(|e| format!("conntrackd: {e}"))?;
        lab.daemons.push(child);
    }
    let t0 = Instant::now();
    while !(dir.join("a.sock").exists() && dir.join("b.sock").exists()) {
        if t0.elapsed() > Duration::from_secs(5) {
            let out = std::fs::read_to_string(dir.join("a.out")).unwrap_or_default();
            return Err(format!("conntrackd did not start: {}", out.trim()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    // Creations (see the module documentation for why not updates).
    let mut create = String::new();
    for i in 0..n {
        create.push_str(&format!(
            "-I -p tcp -s 10.1.{}.{} -d 10.2.{}.1 --sport 40000 --dport 443 --state ESTABLISHED -t 3600 -u ASSURED\n",
            (i >> 8) & 255,
            i & 255,
            i >> 16
        ));
    }
    let cf = dir.join("create.txt");
    std::fs::write(&cf, create).map_err(|e| e.to_string())?;
    let t0 = Instant::now();
    sh(&mut ns(
        &lab,
        "a",
        &["conntrack", "-R", &cf.to_string_lossy()],
    ))?;
    let injected = t0.elapsed();
    let n64 = u64::from(n);
    let limit = Duration::from_secs(120);
    wait_for(&lab, limit, |(c, _, _)| c >= n64)?;
    let all = t0.elapsed();
    let ups = (f64::from(n) / all.as_secs_f64()) as u64;
    let mut lines = vec![format!(
        "conntrackd: {n} creations injected with conntrack -R in {} ms; all in the peer's external cache after {} ms: updates_per_s={ups} (injection alone: {} creations/s)",
        injected.as_millis(),
        all.as_millis(),
        (f64::from(n) / injected.as_secs_f64()) as u64
    )];
    // Bulk: flush the peer's external cache, ask for a resync.
    let bconf = dir.join("b.conf");
    sh(&mut ns(
        &lab,
        "b",
        &[
            "conntrackd",
            "-C",
            &bconf.to_string_lossy(),
            "-f",
            "external",
        ],
    ))?;
    wait_for(&lab, limit, |(_, _, a)| a == 0)?;
    let t0 = Instant::now();
    sh(&mut ns(
        &lab,
        "b",
        &["conntrackd", "-C", &bconf.to_string_lossy(), "-n"],
    ))?;
    let bulk = wait_for(&lab, limit, |(_, _, a)| a >= n64)?;
    lines.push(format!(
        "conntrackd: resync (conntrackd -n) of {n} entries in {} ms (bulk_1m_ms would be about {} ms at this rate); p99 lag not measured for conntrackd (no per-entry apply time)",
        t0.elapsed().max(bulk).as_millis(),
        t0.elapsed().as_millis() as u64 * 1_000_000 / n64.max(1)
    ));
    Ok(lines)
}
