//! `cargo xtask e2e tcp-survival --connections N`: TCP connections through a two-member
//! cluster in network namespaces survive a planned swap (`hactl passive`), a rolling update
//! of the controllers (`hactl update`), a PSK rotation under load (`hactl psk rotate` over both daemons) and a crash of the active member (its
//! controller and daemon killed); the last line is
//! `tcp-survival: survived=<X>/<N> gap_ms=<ms>`.
//!
//! ```text
//!   ns C (client)            ns A (member A: ha-daemon)          ns S (server)
//!   br 10.1.0.1/24 ── ca ── in  [fast path]  out ── sa ── br 10.2.0.1/24
//!                   └ cb ── in  [fast path]  out ── sb ┘
//!                           ns B (member B: ha-daemon)
//!   A.ha 10.9.0.1/24 ── B.ha 10.9.0.2/24 (state sync, UDP 44242)
//!   cluster addresses 10.1.0.254 / 10.2.0.254 (gateways of C and S), owned by the active
//! ```
//! Each member's management controller runs beside it: the QEMU firmware (default,
//! `--controller qemu`, booted per the QEMU member contract), or (`--controller host`) the same
//! `ha-agent` in a host process (`ha-agent-host`); the output says which. Everything the test creates carries a unique
//! prefix and is removed at the end, also on failure; every process is ended by its pid.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::{cargo, run, Result};

mod chaos;
mod commands;
mod env;
mod kernel;
/// `bench kernel-ha`: this cluster beside keepalived + conntrackd.
pub(super) mod kernel_ha_bench;
mod load_sharing;
mod reload;
mod replace;
mod setup;
mod soak;
mod survival;
mod update;

use env::{bin_dir, build_firmware, Env};

/// Options of the scenario.
#[derive(Clone)]
struct Opts {
    connections: usize,
    interval_ms: u64,
    controller: String,
    timers: String,
    table: String,
    /// Who forwards on the members: `userspace` (the daemon's router, the full scenario) or
    /// `kernel` (the kernel with conntrack and nftables, [`kernel`]'s scenario).
    datapath: String,
    /// The members sync their connection state (off only in the kernel path's control run).
    sync: bool,
    /// The kernel path's members translate the inside's addresses to the outside cluster
    /// address (SNAT).
    nat: bool,
    /// The load is FTP sessions whose data connections open after the crash (kernel path),
    /// not the echo connections.
    ftp: bool,
    /// Load sharing (kernel path): SN-A preferred for domain 0, SN-B for domain 1, each
    /// with its own cluster addresses and half of the load.
    shared: bool,
    /// The kernel path's cases to run (`plain`, `snat`, `ftp`, `nat-ftp`, `load-sharing`,
    /// `control`; all by default).
    cases: Vec<String>,
    /// QEMU members get the serial backup HA link beside the main one (`--backup-link
    /// off`: the main link only, as keepalived's one VRRP link in the kernel-ha bench).
    backup_link: bool,
    /// The kernel path's `[sync] standby_install` (`write_behind` or `as_received`); none:
    /// the daemon's default.
    standby_install: Option<String>,
}

/// `--standby-install write_behind|as_received`.
fn parse_standby_install(option: &str, v: &str) -> Result<String> {
    match v {
        "write_behind" | "as_received" => Ok(v.to_string()),
        other => Err(format!("{option} {other}: write_behind or as_received")),
    }
}

/// `--backup-link on|off`.
fn parse_on_off(option: &str, v: &str) -> Result<bool> {
    match v {
        "on" => Ok(true),
        "off" => Ok(false),
        other => Err(format!("{option} {other}: on or off")),
    }
}

/// The kernel path's cases, in the order they run.
const KERNEL_CASES: [&str; 6] = ["plain", "snat", "ftp", "nat-ftp", "load-sharing", "control"];

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        connections: 100,
        interval_ms: 100,
        controller: "qemu".into(),
        timers: "custom:50:4".into(),
        table: "dataplane".into(),
        datapath: "userspace".into(),
        sync: true,
        nat: false,
        ftp: false,
        shared: false,
        cases: KERNEL_CASES.iter().map(|c| c.to_string()).collect(),
        backup_link: true,
        standby_install: None,
    };
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("tcp-survival") => {}
        other => {
            return Err(format!(
                "e2e: unknown scenario {other:?}; usage: e2e tcp-survival --connections N \
                 [--interval-ms MS] [--controller qemu|host] [--timers PROFILE] [--backup-link on|off] \
                 [--table dataplane|builtin] [--datapath userspace|kernel] \
                 [--standby-install write_behind|as_received] \
                 [--cases plain,snat,ftp,nat-ftp,load-sharing,control]"
            ))
        }
    }
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("e2e: {a} needs a value"))
        };
        match a.as_str() {
            "--connections" => {
                o.connections = val()?
                    .parse()
                    .map_err(|e| format!("e2e: --connections: {e}"))?
            }
            "--interval-ms" => {
                o.interval_ms = val()?
                    .parse()
                    .map_err(|e| format!("e2e: --interval-ms: {e}"))?
            }
            "--controller" => o.controller = val()?,
            "--timers" => o.timers = val()?,
            "--backup-link" => o.backup_link = parse_on_off("e2e: --backup-link", &val()?)?,
            "--table" => o.table = val()?,
            "--datapath" => o.datapath = val()?,
            "--standby-install" => {
                o.standby_install = Some(parse_standby_install("e2e: --standby-install", &val()?)?)
            }
            "--cases" => {
                o.cases = val()?.split(',').map(|c| c.trim().to_string()).collect();
                if let Some(bad) = o.cases.iter().find(|c| !KERNEL_CASES.contains(&c.as_str())) {
                    return Err(format!(
                        "e2e: --cases: unknown case {bad:?} (plain, snat, ftp, nat-ftp, \
                         load-sharing, control)"
                    ));
                }
            }
            other => return Err(format!("e2e: unknown option {other}")),
        }
    }
    if o.connections == 0 {
        return Err("e2e: --connections must be at least 1".into());
    }
    if o.table != "dataplane" && o.table != "builtin" {
        return Err(format!("e2e: --table {}: dataplane or builtin", o.table));
    }
    if o.datapath != "userspace" && o.datapath != "kernel" {
        return Err(format!(
            "e2e: --datapath {}: userspace or kernel",
            o.datapath
        ));
    }
    if o.controller != "qemu" && o.controller != "host" {
        return Err(format!("e2e: --controller {}: qemu or host", o.controller));
    }
    Ok(o)
}

/// The daemon's part of `cargo xtask test`: the scenario with 1000 connections and QEMU
/// controllers, then the kernel data path's with 200. Needs root; under CI a missing prerequisite fails the run, elsewhere it is
/// reported and skipped.
pub fn ci() -> Result {
    if !crate::util::is_root() {
        let msg = "e2e tcp-survival: needs root for network namespaces";
        if crate::util::in_ci() {
            return Err(msg.into());
        }
        eprintln!("{msg}: skipped (not in CI)");
        return Ok(());
    }
    let args: Vec<String> = [
        "tcp-survival",
        "--connections",
        "1000",
        "--controller",
        "qemu",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    tcp_survival(&args)?;
    // The kernel data path: strict tracking, a dead box, and the control without sync.
    let args: Vec<String> = [
        "tcp-survival",
        "--datapath",
        "kernel",
        "--connections",
        "200",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    tcp_survival(&args)
}

/// Builds the daemon, hactl, the configuration service and the test tools (release).
fn build_tools() -> Result {
    run(cargo().args([
        "build",
        "--release",
        "-p",
        "ha-daemon",
        "-p",
        "ha-hactl",
        "-p",
        "ha-confsync",
        "-p",
        "ha-testwire",
        "-p",
        "ha-testkit",
        "-p",
        "ha-boardsim",
    ]))
}

/// Runs the scenario.
pub fn tcp_survival(args: &[String]) -> Result {
    if args.first().map(String::as_str) == Some("soak") {
        return soak::soak(&args[1..]);
    }
    let o = parse(args)?;
    if !crate::util::is_root() {
        return Err("e2e: needs root (network namespaces)".into());
    }
    build_tools()?;
    let firmware = if o.controller == "qemu" {
        Some(build_firmware()?)
    } else {
        None
    };
    let bins = bin_dir();
    let b = |n: &str| bins.join(n).display().to_string();
    if o.datapath == "kernel" {
        return kernel::run_kernel(&o, firmware.as_deref(), &b);
    }

    let id = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(format!("ha-e2e-{id}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("e2e: {e}"))?;
    let mut env = Env {
        prefix: format!("hae{id}"),
        dir: dir.clone(),
        namespaces: Vec::new(),
        procs: Vec::new(),
    };

    // QEMU controllers boot on the previous release; the rolling update moves them to this
    // tree's image (a mixed-version cluster in between).
    let boot = match &firmware {
        Some(_) => Some(env::release_image()?),
        None => None,
    };
    let r = setup::start(&mut env, &o, boot.as_deref(), &b, &dir, id)
        .and_then(|s| survival::run_phases(&mut env, &o, firmware.as_deref(), &b, &dir, s));
    r.map_err(|e| format!("{e}\n{}", env.post_mortem(firmware.as_deref())))
}

/// The command line of a member's configuration-sync service: its store under `root`, its
/// sync receiver on `listen`, the sync-channel key, one `--peer SERIAL=ADDR`, the role from
/// its daemon at `daemon_sock`, hactl's socket at `mgmt_sock`, the daemon's keyring file.
#[allow(clippy::too_many_arguments)]
fn confsync_argv(
    b: &dyn Fn(&str) -> String,
    root: &Path,
    listen: &str,
    psk: &Path,
    key_id: u8,
    serial: &str,
    peer: &str,
    daemon_sock: &Path,
    mgmt_sock: &Path,
    keyring: &Path,
    block: &Path,
) -> Vec<String> {
    vec![
        b("confsync"),
        "service".into(),
        "--root".into(),
        root.display().to_string(),
        "--listen".into(),
        listen.into(),
        "--psk-file".into(),
        psk.display().to_string(),
        "--key-id".into(),
        key_id.to_string(),
        // The daemon's keyring file: the service follows every PSK rollover with it.
        "--keyring".into(),
        keyring.display().to_string(),
        "--cluster-id".into(),
        "4242".into(),
        "--serial".into(),
        serial.into(),
        "--peer".into(),
        peer.into(),
        "--daemon-socket".into(),
        daemon_sock.display().to_string(),
        "--mgmt-socket".into(),
        mgmt_sock.display().to_string(),
        // The member's configuration block: a replacement enrols with the key alone.
        "--block".into(),
        block.display().to_string(),
    ]
}

/// Starts a configuration-sync service per member (loopback, role taken from the member's
/// daemon), then checks every configuration command of hactl on the running cluster:
/// publish on the active, refused on the standby (exit 3), sync with progress, synctest
/// (exit 0), diff, and the sync column of `hactl info --json`.
#[allow(clippy::too_many_arguments)]
fn config_sync_phase(
    env: &mut Env,
    b: &dyn Fn(&str) -> String,
    dir: &Path,
    psk: &Path,
    base: u16,
    serials: &[&str; 2],
    socks: &[PathBuf],
    active: usize,
) -> Result {
    let listen = |i: usize| format!("127.0.0.1:{}", base + 8 + i as u16);
    let csock = |i: usize| dir.join(format!("confsync-{i}.sock"));
    // Starts (or, after a kill, starts again) both services and waits for their sockets.
    let start = |env: &mut Env| -> Result {
        for i in 0..2 {
            let _ = std::fs::remove_file(csock(i));
            let argv = confsync_argv(
                b,
                &dir.join(format!("confsync-{i}")),
                &listen(i),
                psk,
                2,
                serials[i],
                &format!("{}={}", serials[1 - i], listen(1 - i)),
                &socks[i],
                &csock(i),
                &dir.join(format!("state-{}/keyring", ["a", "b"][i])),
                &dir.join(format!("{i}.cfg")),
            );
            env.spawn(&format!("confsync-{i}"), None, &argv, false)?;
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        while !(csock(0).exists() && csock(1).exists()) {
            if Instant::now() >= deadline {
                return Err(format!(
                    "e2e: confsync services did not start\n{}\n{}",
                    env.log_tail("confsync-0"),
                    env.log_tail("confsync-1")
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    };
    start(env)?;
    let hactl = |i: usize, args: &[&str]| {
        let mut c = Command::new(b("hactl"));
        c.arg("--socket")
            .arg(&socks[i])
            .arg("--config-socket")
            .arg(csock(i))
            .args(args);
        c.output().map_err(|e| format!("e2e: hactl {args:?}: {e}"))
    };
    let expect = |i: usize, args: &[&str], code: i32| -> Result<String> {
        let o = hactl(i, args)?;
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        if o.status.code() != Some(code) {
            return Err(format!(
                "e2e: hactl {args:?} on {} exited {:?}, expected {code}\n{out}{}",
                serials[i],
                o.status.code(),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
        Ok(out)
    };
    // The operator's edits in the active member's draft.
    let draft = dir.join(format!("confsync-{active}")).join("draft");
    for (path, body) in [
        (
            "filter/rules.conf",
            "pass in on in proto tcp to port 5001\n",
        ),
        ("dhcp/leases", "10.1.0.1 02:00:00:00:00:01\n"),
    ] {
        let f = draft.join(path);
        if let Some(d) = f.parent() {
            std::fs::create_dir_all(d).map_err(|e| format!("e2e: {e}"))?;
        }
        std::fs::write(&f, body).map_err(|e| format!("e2e: {e}"))?;
    }
    let standby = 1 - active;
    let out = expect(active, &["config", "publish", "--comment", "e2e"], 0)?;
    println!("config: {}", out.trim_end());
    // A standby is read-only.
    expect(standby, &["config", "publish"], 3)?;
    let out = expect(active, &["sync"], 0)?;
    println!("config: {}", out.trim_end().replace('\n', "\nconfig: "));
    expect(active, &["synctest"], 0)?;
    let out = expect(active, &["diff", "filter/rules.conf", "--json"], 0)?;
    let diff: serde_json::Value =
        serde_json::from_str(out.trim()).map_err(|e| format!("e2e: diff --json: {e}: {out}"))?;
    if diff["status"] != "same" {
        return Err(format!("e2e: after the sync the file differs: {out}"));
    }
    let out = expect(active, &["info", "--json"], 0)?;
    let info: serde_json::Value =
        serde_json::from_str(out.trim()).map_err(|e| format!("e2e: info --json: {e}: {out}"))?;
    let peer = info["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["serial"] == serials[standby]))
        .ok_or_else(|| format!("e2e: info --json has no {}: {out}", serials[standby]))?;
    if peer["config_sync"]["state"] != "synchronized" {
        return Err(format!(
            "e2e: {} not shown synchronized: {peer}",
            serials[standby]
        ));
    }
    println!(
        "config: published, synced, synctest clean, diff same, {} synchronized in hactl info",
        serials[standby]
    );

    // Both services restarted after the PSK rotation (their keys come from the rotated
    // keyring file): a new revision still reaches the standby.
    for i in 0..2 {
        env.kill(&format!("confsync-{i}"));
    }
    start(env)?;
    std::fs::write(
        draft.join("filter/rules.conf"),
        "pass in on in proto tcp to port 5001\npass in on in proto tcp to port 5002\n",
    )
    .map_err(|e| format!("e2e: {e}"))?;
    expect(
        active,
        &["config", "publish", "--comment", "after restart"],
        0,
    )?;
    expect(active, &["sync"], 0)?;
    expect(active, &["synctest"], 0)?;
    println!("config: both services restarted after the rotation: publish, sync, synctest clean");
    Ok(())
}

/// The chaos part of `cargo xtask test`: two minutes under seed 1. Needs root, like the e2e.
pub fn chaos_ci() -> Result {
    if !crate::util::is_root() {
        let msg = "chaos: needs root for network namespaces";
        if crate::util::in_ci() {
            return Err(msg.into());
        }
        eprintln!("{msg}: skipped (not in CI)");
        return Ok(());
    }
    chaos(&["--minutes".into(), "2".into(), "--seed".into(), "1".into()])
}

/// `cargo xtask chaos --minutes M [--seed S] [--connections N]`: see [`chaos`].
pub fn chaos(args: &[String]) -> Result {
    let mut o = Opts {
        connections: 200,
        interval_ms: 100,
        controller: "qemu".into(),
        timers: "custom:50:4".into(),
        table: "dataplane".into(),
        datapath: "userspace".into(),
        sync: true,
        nat: false,
        ftp: false,
        shared: false,
        cases: Vec::new(),
        backup_link: true,
        standby_install: None,
    };
    let mut c = chaos::ChaosOpts {
        minutes: 3.0,
        seed: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(1),
        only: Vec::new(),
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let val = it
            .next()
            .ok_or_else(|| format!("chaos: {a} needs a value"))?;
        let bad = |e: &dyn std::fmt::Display| format!("chaos: {a} {val}: {e}");
        match a.as_str() {
            "--minutes" => c.minutes = val.parse().map_err(|e| bad(&e))?,
            "--seed" => c.seed = val.parse().map_err(|e| bad(&e))?,
            "--connections" => o.connections = val.parse().map_err(|e| bad(&e))?,
            "--only" => {
                for name in val.split(',') {
                    let f = chaos::Fault::parse(name).ok_or_else(|| {
                        bad(&format!(
                            "no fault {name:?}; one of {:?}",
                            chaos::FAULTS
                        ))
                    })?;
                    c.only.push(f);
                }
            }
            other => {
                return Err(format!(
                    "chaos: unknown option {other}; usage: chaos --minutes M [--seed S] [--connections N] [--only FAULT,…]"
                ))
            }
        }
    }
    if c.minutes.is_nan() || c.minutes <= 0.0 || o.connections == 0 {
        return Err("chaos: --minutes and --connections must be positive".into());
    }
    if !crate::util::is_root() {
        return Err("chaos: needs root (network namespaces)".into());
    }
    build_tools()?;
    let elf = build_firmware()?;
    let bins = bin_dir();
    let b = |n: &str| bins.join(n).display().to_string();
    let id = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(format!("ha-chaos-{id}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("chaos: {e}"))?;
    let mut env = Env {
        prefix: format!("hac{id}"),
        dir: dir.clone(),
        namespaces: Vec::new(),
        procs: Vec::new(),
    };
    let r = setup::start(&mut env, &o, Some(&elf), &b, &dir, id)
        .and_then(|s| chaos::run_chaos(&mut env, &c, &elf, &b, &dir, s));
    r.map_err(|e| format!("{e}\n{}", env.post_mortem(Some(&elf))))
}
