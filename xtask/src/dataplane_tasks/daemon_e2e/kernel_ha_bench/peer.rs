//! The peer of the bench: keepalived + conntrackd on member namespaces identical to the
//! kernel e2e's (same links, addresses, site ruleset, strict TCP tracking), the same load and
//! the same crash.
//!
//! - keepalived (VRRPv3, `advert_int 0.01`): one instance per member on the HA link, unicast
//!   to the peer, both members `state BACKUP` with `nopreempt` (a member that comes back
//!   does not take the role back, as our daemon), member a at the higher priority so that it
//!   is the first master; the cluster addresses are its virtual addresses on `in` and `out`.
//!   Only its VRRP process runs (`-P`), in the foreground (`-n`), with its own pid files.
//! - conntrackd: FTFW over UDP on the HA link, external cache on, the documented filter
//!   (TCP; the members' own, the HA link's and the cluster addresses ignored), TCP window
//!   tracking off (the default of `TCPWindowTracking`: committed entries are created without
//!   window data and the kernel tracks them liberally, which is why a strict kernel,
//!   `nf_conntrack_tcp_be_liberal = 0`, still accepts their next segments).
//! - keepalived's notify script: conntrack-tools' documented primary/backup steps
//!   (`doc/sync/primary-backup.sh`), written anew here: on master, commit the external
//!   cache into the kernel (`-c`), flush the caches (`-f`), reload the internal cache from
//!   the kernel (`-R`), send it all to the peer (`-B`); on backup, shorten the kernel's
//!   timers (`-t`) and ask the master for a full resync (`-n`); on fault, `-t`. It logs
//!   each step with the Unix time in ms, which gives kill → master and kill → commit done.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::super::env::{Env, Load, LoadPart};
use super::super::kernel::{prepare_member, unix_ms};
use super::{after_crash, churn, cpu_during, fresh_dir, start_sniffer, BenchOpts, Outcome};
use crate::util::{have, run as run_cmd, Result};

/// Installs keepalived, conntrack and conntrackd (Debian) when one is missing; idempotent.
pub(super) fn install() -> Result {
    if have("keepalived") && have("conntrackd") && have("conntrack") {
        return Ok(());
    }
    run_cmd(
        Command::new("apt-get")
            .args(["install", "-y", "keepalived", "conntrack", "conntrackd"])
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

/// The addresses conntrackd must not sync: loopback, the members' own, the HA link's and
/// the cluster addresses (the documented example's list for this topology).
const IGNORED: [&str; 9] = [
    "127.0.0.1",
    "10.9.0.1",
    "10.9.0.2",
    "10.1.0.11",
    "10.1.0.12",
    "10.2.0.11",
    "10.2.0.12",
    "10.1.0.254",
    "10.2.0.254",
];

/// conntrackd's configuration of member `i`, everything under `dir`.
fn conntrackd_conf(dir: &Path, i: usize) -> String {
    let d = dir.display();
    let ignored: String = IGNORED
        .iter()
        .map(|a| format!("      IPv4_address {a}\n"))
        .collect();
    format!(
        "Sync {{\n  Mode FTFW {{\n    DisableExternalCache Off\n  }}\n  UDP {{\n    \
         IPv4_address 10.9.0.{me}\n    IPv4_Destination_Address 10.9.0.{peer}\n    Port 3780\n    \
         Interface ha\n    SndSocketBuffer 24985600\n    RcvSocketBuffer 24985600\n    \
         Checksum on\n  }}\n  Options {{\n    TCPWindowTracking no\n  }}\n}}\n\
         General {{\n  HashSize 262144\n  HashLimit 4194304\n  LogFile {d}/conntrackd.log\n  \
         Syslog off\n  LockFile {d}/conntrackd.lock\n  UNIX {{\n    Path {d}/conntrackd.sock\n  \
         }}\n  NetlinkBufferSize 2097152\n  NetlinkBufferSizeMaxGrowth 134217728\n  \
         Filter From Userspace {{\n    Protocol Accept {{\n      TCP\n    }}\n    \
         Address Ignore {{\n{ignored}    }}\n  }}\n}}\n",
        me = 1 + i,
        peer = 2 - i,
    )
}

/// keepalived's notify script of a member (see the module documentation).
fn notify_script(dir: &Path) -> String {
    let d = dir.display();
    format!(
        r#"#!/bin/sh
# keepalived runs this on every state change of this member, with primary, backup or fault.
# conntrack-tools' primary/backup procedure; each step is logged with the Unix time in ms.
conf="{d}/conntrackd.conf"
log="{d}/notify.log"
step() {{
    /usr/sbin/conntrackd -C "$conf" "$@" >> "$log" 2>&1 || echo "$(date +%s%3N) conntrackd $* failed" >> "$log"
    echo "$(date +%s%3N) done $*" >> "$log"
}}
echo "$(date +%s%3N) $1" >> "$log"
case "$1" in
primary)
    step -c   # the peer's entries, kept in the external cache, into this kernel's table
    step -f   # both caches emptied
    step -R   # the internal cache read back from this kernel's table
    step -B   # all of it sent to the peer
    ;;
backup)
    # The documented script starts conntrackd when it does not answer; the bench starts it.
    step -s > /dev/null
    step -t   # the kernel's timers shortened (entries left from a time as master)
    step -n   # a full resync asked of the master
    ;;
fault)
    step -t
    ;;
esac
exit 0
"#
    )
}

/// keepalived's configuration of member `i`.
fn keepalived_conf(i: usize, script: &Path) -> String {
    let s = script.display();
    format!(
        r#"global_defs {{
    router_id bench_{i}
    vrrp_version 3
    script_user root
}}
vrrp_instance cluster {{
    state BACKUP
    nopreempt
    interface ha
    virtual_router_id 42
    priority {prio}
    advert_int 0.01
    unicast_src_ip 10.9.0.{me}
    unicast_peer {{
        10.9.0.{peer}
    }}
    virtual_ipaddress {{
        10.1.0.254/24 dev in
        10.2.0.254/24 dev out
    }}
    notify_master "{s} primary"
    notify_backup "{s} backup"
    notify_fault "{s} fault"
}}
"#,
        prio = 150 - 50 * i,
        me = 1 + i,
        peer = 2 - i,
    )
}

/// The kernel e2e's namespaces and links (as `setup::start` makes them), each member made a
/// kernel router with the site's ruleset.
fn topology(env: &mut Env) -> Result {
    for n in ["c", "s", "a", "b"] {
        env.add_ns(n)?;
    }
    let (c, s) = (env.ns("c"), env.ns("s"));
    for (ns, addr) in [(&c, "10.1.0.1/24"), (&s, "10.2.0.1/24")] {
        env.ip(&["-n", ns, "link", "add", "br0", "type", "bridge"])?;
        env.ip(&["-n", ns, "addr", "add", addr, "dev", "br0"])?;
        env.ip(&["-n", ns, "link", "set", "br0", "up"])?;
    }
    for m in ["a", "b"] {
        let mns = env.ns(m);
        for (dev, other, peer) in [("in", &c, format!("c{m}")), ("out", &s, format!("s{m}"))] {
            env.ip(&[
                "-n", &mns, "link", "add", dev, "type", "veth", "peer", "name", &peer, "netns",
                other,
            ])?;
            env.ip(&["-n", other, "link", "set", &peer, "master", "br0", "up"])?;
            env.ip(&["-n", &mns, "link", "set", dev, "up"])?;
        }
    }
    let (na, nb) = (env.ns("a"), env.ns("b"));
    env.ip(&[
        "-n", &na, "link", "add", "ha", "type", "veth", "peer", "name", "ha", "netns", &nb,
    ])?;
    env.ip(&["-n", &na, "addr", "add", "10.9.0.1/24", "dev", "ha"])?;
    env.ip(&["-n", &nb, "addr", "add", "10.9.0.2/24", "dev", "ha"])?;
    env.ip(&["-n", &na, "link", "set", "ha", "up"])?;
    env.ip(&["-n", &nb, "link", "set", "ha", "up"])?;
    env.ip(&["-n", &c, "route", "add", "10.2.0.0/24", "via", "10.1.0.254"])?;
    env.ip(&["-n", &s, "route", "add", "10.1.0.0/24", "via", "10.2.0.254"])?;
    for (i, m) in ["a", "b"].iter().enumerate() {
        prepare_member(env, m, i, false)?;
    }
    Ok(())
}

/// The load as `setup::start` starts it for the echo case: one server and one client per
/// share of at most 18,000 connections (the open-file limit), until every client is ready.
fn start_load(env: &mut Env, b: &dyn Fn(&str) -> String, o: &BenchOpts) -> Result<Load> {
    run_cmd(Command::new("ip").args([
        "netns",
        "exec",
        &env.ns("c"),
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_local_port_range=1024 65000",
    ]))?;
    const PER_PROCESS: usize = 18_000;
    let shares = o.connections.div_ceil(PER_PROCESS).max(1);
    let mut parts = Vec::new();
    for j in 0..shares {
        let n = o.connections / shares + usize::from(j < o.connections % shares);
        let addr = format!("10.2.0.1:{}", 5001 + j);
        let suffix = if j == 0 {
            String::new()
        } else {
            format!("-{j}")
        };
        let server = vec![
            b("ha-traffic"),
            "server".into(),
            "--listen".into(),
            addr.clone(),
        ];
        env.spawn(&format!("server{suffix}"), Some("s"), &server, false)?;
        std::thread::sleep(Duration::from_millis(300));
        let client = vec![
            b("ha-traffic"),
            "client".into(),
            "--connect".into(),
            addr,
            "--connections".into(),
            n.to_string(),
            "--interval-ms".into(),
            o.interval_ms.to_string(),
        ];
        let name = format!("client{suffix}");
        env.spawn(&name, Some("c"), &client, true)?;
        let ch = env.child(&name).ok_or("kernel-ha: client vanished")?;
        let stdin = ch.stdin.take().ok_or("kernel-ha: client stdin")?;
        let stdout = ch.stdout.take().ok_or("kernel-ha: client stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        parts.push(LoadPart { stdin, lines: rx });
    }
    let load = Load { parts };
    let ready = load
        .lines(Duration::from_secs(60 + o.connections as u64 / 500))
        .map_err(|e| {
            format!(
                "{e} (connections not established)\n{}",
                env.log_tail("client")
            )
        })?;
    if let Some(r) = ready.iter().find(|r| r.as_str() != "ready") {
        return Err(format!("kernel-ha: load client said {r:?}"));
    }
    println!(
        "kernel-ha[conntrackd]: {} connections established, data flowing",
        o.connections
    );
    Ok(load)
}

/// conntrackd's request code for its statistics (`conntrackd -s`; `STATS` in its
/// `conntrackd.h`), sent as a native-endian `int` on its UNIX socket.
const CONNTRACKD_STATS: i32 = 21;

/// Active connections in member `dir`'s conntrackd external cache: its statistics, asked on
/// its UNIX socket directly (what `conntrackd -s` sends), so that the churn's polls every
/// 10 ms do not start two processes each (`ip netns exec`, `conntrackd -s`) on the machine
/// whose throughput they measure; ours are counted as cheaply ([`super::table_count`]).
fn external_count(dir: &Path) -> Result<u64> {
    use std::io::{Read, Write};
    let sock = dir.join("conntrackd.sock");
    let ask = || -> std::io::Result<String> {
        let mut s = std::os::unix::net::UnixStream::connect(&sock)?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        s.write_all(&CONNTRACKD_STATS.to_ne_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    // A busy conntrackd leaves its socket's backlog full and `connect` fails with `EAGAIN`
    // (seen in the churn's second round): asked again for up to 10 s, so that a slow answer is
    // measured as slow, not as no figure.
    let t0 = std::time::Instant::now();
    let out = loop {
        match ask() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock && t0.elapsed().as_secs() < 10 => {
                std::thread::sleep(Duration::from_millis(20))
            }
            r => break r,
        }
    }
    .map_err(|e| format!("conntrackd statistics on {}: {e}", sock.display()))?;
    out.split("cache external:")
        .nth(1)
        .and_then(|s| {
            s.lines()
                .find(|l| l.trim_start().starts_with("current active connections"))
        })
        .and_then(|l| l.split(':').nth(1))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| {
            format!(
                "conntrackd statistics on {}: no external cache count:\n{out}",
                sock.display()
            )
        })
}

/// How many lines of member `dir`'s notify log are `what` (after the time stamp) before
/// `before_ms`.
fn notified_before(dir: &Path, what: &str, before_ms: u64) -> u64 {
    let text = std::fs::read_to_string(dir.join("notify.log")).unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split_once(' '))
        .filter(|(t, rest)| t.parse::<u64>().is_ok_and(|t| t < before_ms) && rest.trim() == what)
        .count() as u64
}

/// The Unix ms of the first line of member `dir`'s notify log that starts with `what` after
/// the time stamp.
fn notified(dir: &Path, what: &str, after_ms: u64) -> Option<u64> {
    let text = std::fs::read_to_string(dir.join("notify.log")).ok()?;
    text.lines().find_map(|l| {
        let (t, rest) = l.split_once(' ')?;
        let t: u64 = t.parse().ok()?;
        (t >= after_ms && rest.trim() == what).then_some(t)
    })
}

/// The member that holds the inside cluster address, if exactly one does.
fn master(env: &Env) -> Option<usize> {
    let holds = |m: &str| {
        crate::util::output(Command::new("ip").args([
            "-n",
            &env.ns(m),
            "-4",
            "-o",
            "addr",
            "show",
            "dev",
            "in",
        ]))
        .map(|o| o.contains("10.1.0.254/"))
        .unwrap_or(false)
    };
    match (holds("a"), holds("b")) {
        (true, false) => Some(0),
        (false, true) => Some(1),
        _ => None,
    }
}

/// Sets up, churns, crashes; the outcome.
pub(super) fn run(
    o: &BenchOpts,
    b: &dyn Fn(&str) -> String,
    xtask: &Path,
    id: u32,
) -> Result<Outcome> {
    let dir = fresh_dir(id, "conntrackd")?;
    let mut env = Env {
        prefix: format!("hkb{id}k"),
        dir: dir.clone(),
        namespaces: Vec::new(),
        procs: Vec::new(),
    };
    let r = run_in(&mut env, o, b, xtask, &dir);
    r.map_err(|e| {
        let mut tails = String::new();
        for m in ["a", "b"] {
            for f in ["conntrackd.log", "notify.log"] {
                let t = std::fs::read_to_string(dir.join(m).join(f)).unwrap_or_default();
                let lines: Vec<&str> = t.lines().collect();
                tails.push_str(&format!(
                    "\n--- {m}/{f}\n{}",
                    lines[lines.len().saturating_sub(15)..].join("\n")
                ));
            }
            for p in ["keepalived", "conntrackd"] {
                tails.push_str(&format!(
                    "\n--- {p}-{m}\n{}",
                    env.log_tail(&format!("{p}-{m}"))
                ));
            }
        }
        format!("{e}{tails}")
    })
}

fn run_in(
    env: &mut Env,
    o: &BenchOpts,
    b: &dyn Fn(&str) -> String,
    xtask: &Path,
    dir: &Path,
) -> Result<Outcome> {
    topology(env)?;
    let dirs: Vec<PathBuf> = ["a", "b"].iter().map(|m| dir.join(m)).collect();
    for (i, m) in ["a", "b"].iter().enumerate() {
        let d = &dirs[i];
        std::fs::create_dir_all(d).map_err(|e| format!("kernel-ha: {e}"))?;
        let conf = d.join("conntrackd.conf");
        std::fs::write(&conf, conntrackd_conf(d, i)).map_err(|e| format!("kernel-ha: {e}"))?;
        let script = d.join("primary-backup.sh");
        std::fs::write(&script, notify_script(d)).map_err(|e| format!("kernel-ha: {e}"))?;
        run_cmd(Command::new("chmod").arg("0700").arg(&script))?;
        std::fs::write(d.join("keepalived.conf"), keepalived_conf(i, &script))
            .map_err(|e| format!("kernel-ha: {e}"))?;
        env.spawn(
            &format!("conntrackd-{m}"),
            Some(m),
            &["conntrackd".into(), "-C".into(), conf.display().to_string()],
            false,
        )?;
    }
    let t = Instant::now();
    while !dirs.iter().all(|d| d.join("conntrackd.sock").exists()) {
        if t.elapsed() > Duration::from_secs(10) {
            return Err("kernel-ha: conntrackd did not start".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    // Member a first, and b once a holds the addresses: both start as backups with
    // `nopreempt`, so a b whose master-down timer ran out first (a started late on a busy
    // machine) would stay master for good (session 25: one run in about ten).
    let t = Instant::now();
    // Waits (from `t`, at most 30 s) until member a holds the addresses and `also` holds.
    let a_master = |env: &Env, also: &dyn Fn() -> bool| -> Result {
        while master(env) != Some(0) || !also() {
            if t.elapsed() > Duration::from_secs(30) {
                return Err(format!(
                    "kernel-ha: keepalived did not make member a master (holder: {:?})",
                    master(env)
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    };
    for (i, m) in ["a", "b"].iter().enumerate() {
        if i == 1 {
            a_master(env, &|| true)?;
        }
        let d = &dirs[i];
        let arg = |f: &str| d.join(f).display().to_string();
        env.spawn(
            &format!("keepalived-{m}"),
            Some(m),
            &[
                "keepalived".into(),
                "-n".into(),
                "-l".into(),
                "-D".into(),
                "-P".into(),
                "-f".into(),
                arg("keepalived.conf"),
                "-p".into(),
                arg("keepalived.pid"),
                "-r".into(),
                arg("vrrp.pid"),
            ],
            false,
        )?;
    }
    // Member a (higher priority) stays master; its notify script has run its steps.
    a_master(env, &|| notified(&dirs[0], "done -B", 0).is_some())?;
    println!(
        "kernel-ha[conntrackd]: keepalived made member a master in {} ms",
        t.elapsed().as_millis()
    );
    let mut load = start_load(env, b, o)?;
    // The standby's external cache catches up with the load's connections.
    let t = Instant::now();
    let within = Duration::from_secs(10 + o.connections as u64 / 2_000);
    let mut have = 0;
    while t.elapsed() < within {
        have = external_count(&dirs[1])?;
        if have >= o.connections as u64 {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "kernel-ha[conntrackd]: the standby's external cache holds {have} entries ({} connections) after {} ms",
        o.connections,
        t.elapsed().as_millis()
    );
    let vrrp_pids: Vec<u32> = dirs
        .iter()
        .filter_map(|d| std::fs::read_to_string(d.join("vrrp.pid")).ok())
        .filter_map(|s| s.trim().parse().ok())
        .collect();
    let mut pids = |names: &[&str]| -> Vec<u32> {
        names
            .iter()
            .filter_map(|n| env.child(n).map(|c| c.id()))
            .collect()
    };
    let mut keepalived = pids(&["keepalived-a", "keepalived-b"]);
    keepalived.extend(vrrp_pids);
    let groups = [
        ("conntrackd", pids(&["conntrackd-a", "conntrackd-b"])),
        ("keepalived", keepalived),
    ];
    let (churn, churn_cpu) = cpu_during(&groups, || {
        churn::run(
            xtask,
            "conntrackd",
            &env.ns("a"),
            o.churn_rounds,
            &|| external_count(&dirs[1]),
            // Its external cache holds TCP entries only (the documented filter), the load's
            // and the churn's: counted as they are.
            None,
            None,
            Duration::from_secs(120),
        )
    });
    if let Err(e) = &churn {
        println!("kernel-ha[conntrackd]: churn failed: {e}");
    }
    if o.table_at_crash {
        // A standby that never holds them all is a result, not a reason to stop: the
        // crash goes on with what it holds, and the survivors say what that cost.
        if let Err(e) = churn::keep_for_crash(
            xtask,
            "conntrackd",
            &env.ns("a"),
            &|| external_count(&dirs[1]),
            None,
            Duration::from_secs(120),
        ) {
            println!("kernel-ha[conntrackd]: the crash goes on without the whole table: {e}");
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let sniffer = start_sniffer(env, b, "b", "conntrackd")?;
    let burst = churn::burst_before_crash(xtask, "conntrackd", &env.ns("a"), o.crash_in_burst)?;
    let vrrp_pid = std::fs::read_to_string(dirs[0].join("vrrp.pid"))
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .ok_or("kernel-ha: no VRRP process pid of member a")?;
    let parent_pid = env
        .child("keepalived-a")
        .map(|c| c.id() as i32)
        .ok_or("kernel-ha: keepalived-a is not running")?;
    println!(
        "kernel-ha[conntrackd]: member a dies: keepalived (pids {parent_pid}, VRRP {vrrp_pid}) \
         and conntrackd killed, data interfaces down"
    );
    use nix::sys::signal::{kill, Signal};
    use nix::unistd::Pid;
    let na = env.ns("a");
    let cutter = env.link_cutter(&na)?;
    let killed_at = Instant::now();
    let killed_ms = unix_ms();
    // Stopped first so that it neither restarts its VRRP child nor sees it die.
    let _ = kill(Pid::from_raw(parent_pid), Signal::SIGSTOP);
    kill(Pid::from_raw(vrrp_pid), Signal::SIGKILL)
        .map_err(|e| format!("kernel-ha: kill VRRP {vrrp_pid}: {e}"))?;
    let dead = env.kill_now(&["keepalived-a", "conntrackd-a"]);
    cutter.cut(&["in", "out"])?;
    println!(
        "kernel-ha[conntrackd]: signals sent and interfaces down {} µs after the kill",
        killed_at.elapsed().as_micros()
    );
    Env::reap(dead);
    load.cmd("mark")?;
    let (v, first) = after_crash(
        env,
        &mut load,
        &sniffer,
        "conntrackd",
        o.interval_ms,
        killed_at,
        killed_ms,
    )?;
    churn::burst_after_crash(burst, "conntrackd");
    let since = |what: &str| notified(&dirs[1], what, killed_ms).map(|t| t - killed_ms);
    let g = |k: &str| v[k].as_u64().unwrap_or(0);
    println!(
        "kernel-ha[conntrackd]: survivor's notify log:\n{}",
        std::fs::read_to_string(dirs[1].join("notify.log")).unwrap_or_default()
    );
    Ok(Outcome {
        survived: g("survived"),
        connections: g("connections"),
        gap_ms: g("gap_ms"),
        first_forwarded_ms: first.forwarded,
        first_garp_ms: first.garp,
        // keepalived made the standby master while member a lived.
        false_takeovers: Some(notified_before(&dirs[1], "primary", killed_ms)),
        takeovers_before_kill: Some(notified_before(&dirs[1], "primary", killed_ms)),
        milestones: vec![
            ("kill_to_master_ms", since("primary")),
            ("kill_to_commit_done_ms", since("done -c")),
        ],
        churn,
        churn_cpu,
        counted:
            "active entries in conntrackd's external cache (conntrackd -s), not yet in its kernel",
        also_counted: None,
    })
}
