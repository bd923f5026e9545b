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

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use crate::util::{cargo, root, run, Result};

mod commands;
mod replace;
mod update;

/// Options of the scenario.
struct Opts {
    connections: usize,
    interval_ms: u64,
    controller: String,
    timers: String,
    table: String,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        connections: 100,
        interval_ms: 100,
        controller: "qemu".into(),
        timers: "custom:50:4".into(),
        table: "dataplane".into(),
    };
    let mut it = args.iter();
    match it.next().map(String::as_str) {
        Some("tcp-survival") => {}
        other => {
            return Err(format!(
                "e2e: unknown scenario {other:?}; usage: e2e tcp-survival --connections N \
                 [--interval-ms MS] [--controller qemu|host] [--timers PROFILE] \
                 [--table dataplane|builtin]"
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
            "--table" => o.table = val()?,
            other => return Err(format!("e2e: unknown option {other}")),
        }
    }
    if o.connections == 0 {
        return Err("e2e: --connections must be at least 1".into());
    }
    if o.table != "dataplane" && o.table != "builtin" {
        return Err(format!("e2e: --table {}: dataplane or builtin", o.table));
    }
    if o.controller != "qemu" && o.controller != "host" {
        return Err(format!("e2e: --controller {}: qemu or host", o.controller));
    }
    Ok(o)
}

/// Processes and namespaces of one run, removed on drop (also when the run fails).
struct Env {
    prefix: String,
    dir: PathBuf,
    namespaces: Vec<String>,
    procs: Vec<(String, Child)>,
}

impl Env {
    fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    fn ip(&self, args: &[&str]) -> Result {
        run(Command::new("ip").args(args))
    }

    fn add_ns(&mut self, n: &str) -> Result {
        let name = self.ns(n);
        self.ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        self.ip(&["-n", &name, "link", "set", "lo", "up"])
    }

    /// Starts `argv` in namespace `ns` (or the root namespace), output to `<dir>/<name>.log`.
    fn spawn(&mut self, name: &str, ns: Option<&str>, argv: &[String], stdin: bool) -> Result<()> {
        let log = std::fs::File::create(self.dir.join(format!("{name}.log")))
            .map_err(|e| format!("e2e: log file: {e}"))?;
        let err = log.try_clone().map_err(|e| format!("e2e: log file: {e}"))?;
        let mut cmd = match ns {
            // `ip netns exec` execs the program: the child's pid is the program's.
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &self.ns(ns)]).args(argv);
                c
            }
            None => {
                let mut c = Command::new(&argv[0]);
                c.args(&argv[1..]);
                c
            }
        };
        cmd.stderr(err);
        if stdin {
            cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
        } else {
            cmd.stdin(Stdio::null()).stdout(log);
        }
        let child = cmd
            .spawn()
            .map_err(|e| format!("e2e: cannot start {name}: {e}"))?;
        self.procs.push((name.to_string(), child));
        Ok(())
    }

    fn child(&mut self, name: &str) -> Option<&mut Child> {
        self.procs
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
    }

    /// Kills a process by its pid (SIGKILL) and reaps it.
    fn kill(&mut self, name: &str) {
        if let Some(i) = self.procs.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.procs.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What a failed run leaves to read: every process that ended on its own (with its exit
    /// status) and each QEMU member's decoded firmware log.
    fn post_mortem(&mut self, firmware: Option<&Path>) -> String {
        let mut out = String::from("--- post-mortem");
        for (name, c) in &mut self.procs {
            match c.try_wait() {
                Ok(Some(status)) => out.push_str(&format!("\n{name}: ended by itself, {status}")),
                Ok(None) => out.push_str(&format!("\n{name}: running (pid {})", c.id())),
                Err(e) => out.push_str(&format!("\n{name}: {e}")),
            }
        }
        for m in ["a", "b"] {
            let qemu_log =
                std::fs::read_to_string(self.dir.join(format!("{m}-qemu.log"))).unwrap_or_default();
            out.push_str(&format!(
                "\n--- controller-{m} stderr\n{}\n--- controller-{m} QEMU guest errors\n{}\n--- controller-{m} CPU\n{}\n--- controller-{m} firmware log\n{}",
                self.log_tail(&format!("controller-{m}")),
                qemu_log.lines().rev().take(10).collect::<Vec<_>>().join("\n"),
                cpu_state(&self.dir.join(format!("{m}-qmp.sock"))),
                controller_log(firmware, &self.dir, m, 25)
            ));
        }
        out
    }

    /// Restarts the QEMU controller of member `m` (wire slot `i`, block `<dir>/<i>.cfg`) with
    /// `elf`: ended by its pid, then booted again a second later, under a new boot epoch.
    fn restart_controller(&mut self, elf: &Path, m: &str, net: &LinkPorts, i: usize) -> Result {
        self.kill(&format!("controller-{m}"));
        std::thread::sleep(Duration::from_millis(1100));
        let block = self.dir.join(format!("{i}.cfg"));
        let argv = qemu_member(elf, &block, &self.dir, m, net, i);
        self.spawn(&format!("controller-{m}"), None, &argv, false)
    }

    fn log_tail(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        for (_, c) in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Deleting a namespace deletes the veth ends in it, and with them their peers.
        for n in self.namespaces.iter().rev() {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
        if std::env::var_os("HA_E2E_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// One management API request; returns the final reply line as JSON.
fn mgmt(sock: &Path, request: &str) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))
        .map_err(|e| e.to_string())?;
    s.write_all(format!("{request}\n").as_bytes())
        .map_err(|e| e.to_string())?;
    let mut r = BufReader::new(s);
    loop {
        let mut line = String::new();
        if r.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err(format!("{}: closed without a reply", sock.display()));
        }
        let v: serde_json::Value = serde_json::from_str(&line).map_err(|e| e.to_string())?;
        if !matches!(v["type"].as_str(), Some("event") | Some("progress")) {
            return Ok(v);
        }
    }
}

/// The last `n` events of a member's log, one JSON object per line (diagnostics).
fn last_events(sock: &Path, n: u32) -> String {
    let run = || -> std::result::Result<String, String> {
        let mut s = UnixStream::connect(sock).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(|e| e.to_string())?;
        s.write_all(format!("{{\"cmd\":\"events\",\"last\":{n}}}\n").as_bytes())
            .map_err(|e| e.to_string())?;
        let mut out = String::new();
        // At most n events and the end marker.
        for line in BufReader::new(s).lines().take(n as usize + 1) {
            let line = line.map_err(|e| e.to_string())?;
            out.push_str(&line);
            out.push('\n');
        }
        Ok(out)
    };
    run().unwrap_or_else(|e| format!("{}: {e}", sock.display()))
}

fn mode(sock: &Path) -> Option<String> {
    mgmt(sock, r#"{"cmd":"mode"}"#)
        .ok()
        .and_then(|v| v["mode"].as_str().map(str::to_string))
}

/// Waits until `who` is active and every other member passive; returns the active's index.
fn wait_roles(socks: &[PathBuf], who: Option<usize>, timeout: Duration) -> Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = socks.iter().map(|s| mode(s)).collect::<Vec<_>>();
        let actives: Vec<usize> = (0..socks.len())
            .filter(|i| last[*i].as_deref() == Some("active"))
            .collect();
        let others_ok = (0..socks.len())
            .filter(|i| !actives.contains(i))
            .all(|i| matches!(last[i].as_deref(), Some("passive") | None));
        if actives.len() == 1 && others_ok && who.is_none_or(|w| actives[0] == w) {
            return Ok(actives[0]);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "e2e: roles did not settle in {timeout:?}: {last:?}"
    ))
}

/// The load client: its stdin and the lines of its stdout.
struct Load {
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl Load {
    fn cmd(&mut self, c: &str) -> Result {
        writeln!(self.stdin, "{c}").map_err(|e| format!("e2e: load client: {e}"))
    }

    fn line(&self, timeout: Duration) -> Result<String> {
        self.lines
            .recv_timeout(timeout)
            .map_err(|_| "e2e: the load client did not answer".to_string())
    }

    fn report(&mut self) -> Result<(u64, u64, u64, u64)> {
        self.cmd("report")?;
        let l = self.line(Duration::from_secs(10))?;
        let v: serde_json::Value =
            serde_json::from_str(&l).map_err(|e| format!("e2e: load report {l:?}: {e}"))?;
        let g = |k: &str| v[k].as_u64().unwrap_or(0);
        if let Some(e) = v["first_error"].as_str() {
            eprintln!("e2e: first failed connection: {e}");
        }
        println!(
            "e2e: median of the connections' longest pause: {} ms",
            g("gap_p50_ms")
        );
        Ok((g("survived"), g("connections"), g("gap_ms"), g("failed")))
    }
}

/// The members' verbose status (counters of the host link and the fast path), for failures.
fn diagnostics(socks: &[PathBuf]) -> String {
    socks
        .iter()
        .map(|s| match mgmt(s, r#"{"cmd":"info","verbose":true}"#) {
            Ok(v) => format!("{}: {v}", s.display()),
            Err(e) => format!("{}: {e}", s.display()),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// A running QEMU member's CPU registers (QMP `info registers`), twice 200 ms apart: a
/// guest stuck in a loop shows the same place; an exception number in xPSR shows a fault.
fn cpu_state(qmp: &Path) -> String {
    let run = || -> std::result::Result<String, String> {
        let s = UnixStream::connect(qmp).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(Duration::from_secs(3)))
            .map_err(|e| e.to_string())?;
        let mut w = s.try_clone().map_err(|e| e.to_string())?;
        let mut r = BufReader::new(s);
        let mut line = String::new();
        r.read_line(&mut line).map_err(|e| e.to_string())?; // greeting
        let mut ask = |cmd: &str| -> std::result::Result<String, String> {
            writeln!(w, "{cmd}").map_err(|e| e.to_string())?;
            loop {
                let mut l = String::new();
                if r.read_line(&mut l).map_err(|e| e.to_string())? == 0 {
                    return Err("QMP closed".into());
                }
                let v: serde_json::Value = serde_json::from_str(&l).map_err(|e| e.to_string())?;
                if v.get("return").is_some() || v.get("error").is_some() {
                    return Ok(v["return"]
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string()));
                }
            }
        };
        ask(r#"{"execute":"qmp_capabilities"}"#)?;
        let regs =
            r#"{"execute":"human-monitor-command","arguments":{"command-line":"info registers"}}"#;
        let first = ask(regs)?;
        std::thread::sleep(Duration::from_millis(200));
        let second = ask(regs)?;
        Ok(format!("{first}\n(200 ms later)\n{second}"))
    };
    run().unwrap_or_else(|e| format!("{}: {e}", qmp.display()))
}

/// The last `n` lines of a QEMU member's UART0 log decoded with `defmt-print` (diagnostics;
/// host-process controllers log to their own log file instead).
fn controller_log(elf: Option<&Path>, dir: &Path, m: &str, n: usize) -> String {
    let Some(elf) = elf else {
        return "(host-process controller: see its log file)".into();
    };
    let raw = match std::fs::read(dir.join(format!("{m}-uart0.defmt"))) {
        Ok(r) => r,
        Err(e) => return format!("no UART0 log: {e}"),
    };
    let decoded = (|| -> std::io::Result<String> {
        let mut child = Command::new("defmt-print")
            .arg("-e")
            .arg(elf)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&raw)?;
        }
        let out = child.wait_with_output()?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    })();
    match decoded {
        Ok(text) => {
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(n)..].join("\n")
        }
        Err(e) => format!("defmt-print: {e} ({} raw bytes)", raw.len()),
    }
}

/// Builds the firmware (its own workspace, thumbv7m-none-eabi) and returns the ELF.
fn build_firmware() -> Result<PathBuf> {
    let app = root().join("firmware/app");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| PathBuf::from(t).join("firmware-e2e"))
        .unwrap_or_else(|| app.join("target"));
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&app)
            .env("CARGO_TARGET_DIR", &target)
            .args(["build", "--release"]),
    )?;
    let elf = target.join("thumbv7m-none-eabi/release/ha-firmware");
    if !elf.exists() {
        return Err(format!("e2e: no firmware ELF at {}", elf.display()));
    }
    Ok(elf)
}

/// Where the QEMU members' HA links meet: each member's own UDP ports (from the run's port
/// base) and its ports on the test wire (`ha-testwire`, which relays between the members).
struct LinkPorts {
    base: u16,
    wire_main: [u16; 2],
    wire_backup: [u16; 2],
}

impl LinkPorts {
    /// Member `i`'s own UDP ports: (backup link, main link).
    fn own(&self, i: usize) -> (u16, u16) {
        (self.base + 3 + i as u16, self.base + 5 + i as u16)
    }
}

/// Starts the test wire between the two QEMU members' HA links and reads its ports. Through
/// the wire, a member whose peer QEMU died or restarted keeps both links: QEMU's UDP serial
/// backend is a connected socket, and a direct link to a dead peer's port can stop reading
/// for good after the ICMP error (seen as `backup:DOWN` on both members after a restart).
fn start_wire(
    env: &mut Env,
    b: &dyn Fn(&str) -> String,
    dir: &Path,
    base: u16,
) -> Result<LinkPorts> {
    let mut ports = LinkPorts {
        base,
        wire_main: [0; 2],
        wire_backup: [0; 2],
    };
    let list = |f: &dyn Fn(usize) -> u16| format!("127.0.0.1:{},127.0.0.1:{}", f(0), f(1));
    let argv = vec![
        b("ha-testwire"),
        "--main".into(),
        list(&|i| ports.own(i).1),
        "--backup".into(),
        list(&|i| ports.own(i).0),
        "--control".into(),
        dir.join("wire.sock").display().to_string(),
    ];
    // Its stdin stays open (piped) as long as the test runs; it ends with it or by its pid.
    env.spawn("wire", None, &argv, true)?;
    let out = env
        .child("wire")
        .and_then(|c| c.stdout.take())
        .ok_or("e2e: test wire stdout")?;
    let mut line = String::new();
    BufReader::new(out)
        .read_line(&mut line)
        .map_err(|e| format!("e2e: test wire: {e}"))?;
    let v: serde_json::Value =
        serde_json::from_str(&line).map_err(|e| format!("e2e: test wire said {line:?}: {e}"))?;
    for (key, dst) in [
        ("main_ports", &mut ports.wire_main),
        ("backup_ports", &mut ports.wire_backup),
    ] {
        for (i, d) in dst.iter_mut().enumerate() {
            *d = v[key][i]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .ok_or_else(|| format!("e2e: test wire ports: {line}"))?;
        }
    }
    Ok(ports)
}

/// The QEMU command line of member `i` (the QEMU member contract, docs/firmware.md): its
/// configuration block and boot epoch in flash/RAM, UART0 log to a file, UART1 host link on
/// `<dir>/<m>-host.sock`, UART2 backup link and the LAN9118 as UDP to the test wire.
fn qemu_member(
    elf: &Path,
    block: &Path,
    dir: &Path,
    m: &str,
    ports: &LinkPorts,
    i: usize,
) -> Vec<String> {
    let (backup, main) = ports.own(i);
    let epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() % 1_000_000_000)
        .unwrap_or(1)
        .max(1);
    [
        "qemu-system-arm".to_string(),
        "-M".into(),
        "mps2-an385".into(),
        "-display".into(),
        "none".into(),
        "-monitor".into(),
        "none".into(),
        "-nodefaults".into(),
        "-kernel".into(),
        elf.display().to_string(),
        "-device".into(),
        format!("loader,file={},addr=0x3F000,force-raw=on", block.display()),
        "-device".into(),
        format!("loader,addr=0x3EFFC,data={epoch},data-len=4"),
        "-serial".into(),
        format!("file:{}/{m}-uart0.defmt", dir.display()),
        "-chardev".into(),
        format!(
            "socket,id=host,path={}/{m}-host.sock,server=on,wait=off",
            dir.display()
        ),
        "-serial".into(),
        "chardev:host".into(),
        "-serial".into(),
        format!("udp:127.0.0.1:{}@127.0.0.1:{backup}", ports.wire_backup[i]),
        "-chardev".into(),
        format!(
            "socket,id=sens,path={}/{m}-sensors.sock,server=on,wait=off",
            dir.display()
        ),
        "-serial".into(),
        "chardev:sens".into(),
        "-nic".into(),
        format!(
            "socket,udp=127.0.0.1:{},localaddr=127.0.0.1:{main}",
            ports.wire_main[i]
        ),
        // For the post-mortem: the CPU's registers on demand, and guest errors logged.
        "-qmp".into(),
        format!("unix:{}/{m}-qmp.sock,server=on,wait=off", dir.display()),
        "-d".into(),
        "guest_errors,unimp".into(),
        "-D".into(),
        format!("{}/{m}-qemu.log", dir.display()),
    ]
    .to_vec()
}

fn bin_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("release")
}

/// The daemon's part of `cargo xtask test`: the scenario with 1000 connections and QEMU
/// controllers. Needs root; under CI a missing prerequisite fails the run, elsewhere it is
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
    tcp_survival(&args)
}

/// Runs the scenario.
pub fn tcp_survival(args: &[String]) -> Result {
    let o = parse(args)?;
    if !crate::util::is_root() {
        return Err("e2e: needs root (network namespaces)".into());
    }
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
    ]))?;
    let firmware = if o.controller == "qemu" {
        Some(build_firmware()?)
    } else {
        None
    };
    let bins = bin_dir();
    let b = |n: &str| bins.join(n).display().to_string();

    let id = std::process::id() % 100_000;
    let dir = std::env::temp_dir().join(format!("ha-e2e-{id}"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("e2e: {e}"))?;
    let mut env = Env {
        prefix: format!("hae{id}"),
        dir: dir.clone(),
        namespaces: Vec::new(),
        procs: Vec::new(),
    };

    let r = scenario(&mut env, &o, firmware.as_deref(), &b, &dir, id);
    r.map_err(|e| format!("{e}\n{}", env.post_mortem(firmware.as_deref())))
}

/// The scenario on a prepared environment: keys, namespaces, members, then the planned swap,
/// the PSK rotation, the configuration sync and the crash.
fn scenario(
    env: &mut Env,
    o: &Opts,
    firmware: Option<&Path>,
    b: &dyn Fn(&str) -> String,
    dir: &Path,
    id: u32,
) -> Result {
    // Keys and configuration blocks, with the project's own tool.
    let psk = dir.join("psk");
    run(Command::new(b("hactl"))
        .args(["psk", "generate", "-o"])
        .arg(&psk))?;
    let base = 40_000 + (id % 2_000) as u16 * 10;
    let serials = ["SN-A", "SN-B"];
    let ports = [base + 1, base + 2];
    for (i, s) in serials.iter().enumerate() {
        let mut c = Command::new(b("hactl"));
        c.args(["provision", "--psk-file"]).arg(&psk).args([
            "--serial",
            s,
            "--cluster-id",
            "4242",
            "--timers",
            &o.timers,
        ]);
        for (j, t) in serials.iter().enumerate() {
            // QEMU members have their own address on the emulated LAN9118; host-process
            // agents share the loopback.
            let addr = match firmware {
                Some(_) => format!("10.0.0.{}:44240", j + 1),
                None => format!("127.0.0.1:{}", ports[j]),
            };
            c.args(["--member", &format!("{t}={addr}")]);
        }
        if firmware.is_some() {
            c.arg("--backup-link");
        }
        c.arg("-o").arg(dir.join(format!("{i}.cfg")));
        run(&mut c)?;
    }

    // Namespaces and links.
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

    // The test wire between the QEMU members' HA links.
    let net = match firmware {
        Some(_) => Some(start_wire(env, b, dir, base)?),
        None => None,
    };

    // Controllers and daemons.
    let mut socks = Vec::new();
    let members = ["a", "b"];
    for (i, m) in members.iter().enumerate() {
        let host_sock = dir.join(format!("{m}-host.sock"));
        let mgmt_sock = dir.join(format!("{m}-mgmt.sock"));
        let block = dir.join(format!("{i}.cfg"));
        let controller_argv: Vec<String> = match (&firmware, &net) {
            (Some(elf), Some(net)) => qemu_member(elf, &block, dir, m, net, i),
            _ => vec![
                b("ha-agent-host"),
                "--block".into(),
                block.display().to_string(),
                "--host-sock".into(),
                host_sock.display().to_string(),
                "--bind".into(),
                format!("127.0.0.1:{}", ports[i]),
                "--peer".into(),
                format!("127.0.0.1:{}", ports[1 - i]),
            ],
        };
        env.spawn(&format!("controller-{m}"), None, &controller_argv, false)?;
        let other = 1 - i;
        let toml = format!(
            r#"config_block = "{block}"
host_link = "{host}"
mgmt_socket = "{mgmt}"
state_dir = "{state}"
interfaces_period_ms = 1000
table = "{table}"

[[monitor]]
name = "in"
weight = 100

[[monitor]]
name = "out"
weight = 100

[forward.inside]
ifname = "in"
cluster_ip = "10.1.0.254/24"
member_ip = "10.1.0.{me}"
allow_new = true

[forward.outside]
ifname = "out"
cluster_ip = "10.2.0.254/24"
member_ip = "10.2.0.{me}"

[sync]
bind = "10.9.0.{hame}"

[[peer]]
serial = "{peer}"
probe = ["10.1.0.{them}", "10.2.0.{them}"]
sync = "10.9.0.{hathem}"
"#,
            block = dir.join(format!("{i}.cfg")).display(),
            host = host_sock.display(),
            mgmt = mgmt_sock.display(),
            // Each member its own boot counter and state-sync keyring, fresh every run (the
            // default /var/lib/ha would be shared by both members and outlive the run).
            state = dir.join(format!("state-{m}")).display(),
            me = 11 + i,
            them = 11 + other,
            hame = 1 + i,
            hathem = 1 + other,
            peer = serials[other],
            table = o.table,
        );
        let cfg = dir.join(format!("{m}.toml"));
        std::fs::write(&cfg, toml).map_err(|e| format!("e2e: {e}"))?;
        env.spawn(
            &format!("daemon-{m}"),
            Some(m),
            &[b("ha-daemon"), "--config".into(), cfg.display().to_string()],
            false,
        )?;
        socks.push(mgmt_sock);
    }
    match &firmware {
        Some(elf) => println!(
            "e2e: controllers: QEMU mps2-an385 members running {}",
            elf.display()
        ),
        None => println!(
            "e2e: controllers: ha-agent-host (the ha-agent state machine in a host process), \
             not the QEMU firmware"
        ),
    }
    let active = wait_roles(&socks, None, Duration::from_secs(30)).map_err(|e| {
        format!(
            "{e}\n--- daemon-a\n{}\n--- daemon-b\n{}",
            env.log_tail("daemon-a"),
            env.log_tail("daemon-b")
        )
    })?;
    println!("e2e: member {} is active", serials[active]);
    let table = crate::util::output(
        Command::new(b("hactl"))
            .arg("--socket")
            .arg(&socks[active])
            .arg("info"),
    )?;
    println!(
        "e2e: hactl info on {}:\n{}",
        serials[active],
        table.trim_end()
    );

    // Load.
    env.spawn(
        "server",
        Some("s"),
        &[
            b("ha-traffic"),
            "server".into(),
            "--listen".into(),
            "10.2.0.1:5001".into(),
        ],
        false,
    )?;
    std::thread::sleep(Duration::from_millis(300));
    env.spawn(
        "client",
        Some("c"),
        &[
            b("ha-traffic"),
            "client".into(),
            "--connect".into(),
            "10.2.0.1:5001".into(),
            "--connections".into(),
            o.connections.to_string(),
            "--interval-ms".into(),
            o.interval_ms.to_string(),
        ],
        true,
    )?;
    let mut load = {
        let ch = env.child("client").ok_or("e2e: client vanished")?;
        let stdin = ch.stdin.take().ok_or("e2e: client stdin")?;
        let stdout = ch.stdout.take().ok_or("e2e: client stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Load { stdin, lines: rx }
    };
    let ready = load.line(Duration::from_secs(60)).map_err(|e| {
        format!(
            "{e} (connections not established)\n{}\n{}",
            env.log_tail("client"),
            diagnostics(&socks)
        )
    })?;
    if ready != "ready" {
        return Err(format!("e2e: load client said {ready:?}"));
    }
    println!(
        "e2e: {} connections established, data flowing",
        o.connections
    );

    // Planned swap: force the active passive; no connection may be lost.
    load.cmd("mark")?;
    std::thread::sleep(Duration::from_secs(1));
    // The operator's way: hactl over the management API.
    run(Command::new(b("hactl"))
        .arg("--socket")
        .arg(&socks[active])
        .arg("passive"))?;
    let new_active = wait_roles(&socks, Some(1 - active), Duration::from_secs(15))?;
    std::thread::sleep(Duration::from_secs(4));
    let (sv, n, gap, failed) = load.report()?;
    println!("planned-swap: survived={sv}/{n} gap_ms={gap}");
    run(Command::new(b("hactl"))
        .arg("--socket")
        .arg(&socks[active])
        .arg("reset"))?;
    // The member that was forced passive may take over again after the reset (the election
    // decides); wait for the roles to settle.
    std::thread::sleep(Duration::from_secs(2));
    let active = wait_roles(&socks, None, Duration::from_secs(15))?;
    if active != new_active {
        std::thread::sleep(Duration::from_secs(3));
    }
    let swap_ok = sv == n && failed == 0;
    let events = crate::util::output(
        Command::new(b("hactl"))
            .arg("--socket")
            .arg(&socks[active])
            .args(["events", "--last", "8"]),
    )?;
    println!(
        "e2e: hactl events --last 8 on {}:\n{}",
        serials[active],
        events.trim_end()
    );

    // Rolling update of the controllers' firmware (`hactl update` over both daemons, the
    // install hook restarting each QEMU controller with the image) under load: no lost
    // connection.
    let active = match (firmware, &net) {
        (Some(elf), Some(net)) => {
            update::update_phase(env, b, elf, dir, net, &serials, &members, &socks, &mut load)?
        }
        _ => {
            println!("e2e: rolling update skipped (host-process controllers have no image)");
            active
        }
    };

    // PSK rotation under load, phase by phase on every member (accept, use, retire): no swap,
    // no lost connection.
    let new_psk = dir.join("psk2");
    run(Command::new(b("hactl"))
        .args(["psk", "generate", "-o"])
        .arg(&new_psk))?;
    load.cmd("mark")?;
    let mut rotate = Command::new(b("hactl"));
    rotate
        .arg("--socket")
        .arg(&socks[0])
        .args(["psk", "rotate", "--psk-file"])
        .arg(&new_psk)
        .args(["--key-id", "2"]);
    for sock in &socks {
        rotate.arg("--member-socket").arg(sock);
    }
    run(&mut rotate)?;
    std::thread::sleep(Duration::from_secs(2));
    let still = wait_roles(&socks, Some(active), Duration::from_secs(2))
        .map_err(|e| format!("e2e: a swap happened during the PSK rotation: {e}"))?;
    let (sv3, n3, gap3, _) = load.report()?;
    println!(
        "psk-rotation: survived={sv3}/{n3} gap_ms={gap3} active={}",
        serials[still]
    );
    if sv3 != n3 {
        return Err(format!(
            "e2e: the PSK rotation lost {} connections",
            n3 - sv3
        ));
    }

    // The rolled-over key is in each member's configuration block (the controller's flash
    // image): restart the passive member's controller, which must boot with the new key and
    // rejoin as passive, with no swap.
    if let (Some(elf), Some(net)) = (firmware, &net) {
        let p = 1 - still;
        let m = members[p];
        println!(
            "e2e: restarting the controller of {} after the rotation",
            serials[p]
        );
        env.restart_controller(elf, m, net, p)?;
        let deadline = Instant::now() + Duration::from_secs(15);
        while mode(&socks[p]).as_deref() != Some("passive") {
            if Instant::now() > deadline {
                return Err(format!(
                    "e2e: {} did not rejoin with the rotated key after a restart",
                    serials[p]
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        wait_roles(&socks, Some(still), Duration::from_secs(5))
            .map_err(|e| format!("e2e: the restart after the rotation caused a swap: {e}"))?;
        println!(
            "psk-persisted: {} restarted and rejoined as passive with key id 2",
            serials[p]
        );
    }

    // Configuration sync on the running cluster: one `confsync service` per member (role
    // from its daemon), operated with hactl.
    config_sync_phase(env, b, dir, &new_psk, base, &serials, &socks, still)?;

    // The operator's other commands on the running cluster, and a planned swap the other
    // way (`hactl active` on the passive, which first resynchronizes the table).
    let active = commands::commands_phase(b, &serials, &socks, still, &mut load)?;

    // The members form a cluster (membership document) before the crash; after it the dead
    // member is removed and a replacement joins (QEMU controllers only).
    let replacement = match (firmware, &net) {
        (Some(elf), Some(net)) => Some(replace::Cluster {
            b,
            dir,
            net,
            elf,
            serials,
            members,
            socks: &socks,
            psk: &new_psk,
            key_id: 2,
            timers: &o.timers,
        }),
        _ => None,
    };
    if let Some(cl) = &replacement {
        replace::form(cl, active)?;
    }

    // Crash of the active: its controller and daemon are killed.
    load.cmd("mark")?;
    std::thread::sleep(Duration::from_secs(1));
    let m = members[active];
    println!(
        "e2e: killing member {} (controller and daemon)",
        serials[active]
    );
    env.kill(&format!("daemon-{m}"));
    env.kill(&format!("controller-{m}"));
    let survivor = 1 - active;
    let killed_at = Instant::now();
    let deadline = killed_at + Duration::from_secs(20);
    while mode(&socks[survivor]).as_deref() != Some("active") {
        if Instant::now() > deadline {
            return Err(format!(
                "e2e: the survivor never became active\n--- daemon log\n{}\n--- status\n{}\n--- its last events\n{}\n--- its controller's log\n{}",
                env.log_tail(&format!("daemon-{}", members[survivor])),
                diagnostics(&socks[survivor..=survivor]),
                last_events(&socks[survivor], 20),
                controller_log(firmware, dir, members[survivor], 40)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "e2e: {} reports active {} ms after the kill",
        serials[survivor],
        killed_at.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_secs(8));
    let (sv2, n2, gap2, _) = load.report()?;
    load.cmd("stop")?;
    if let Some(cl) = &replacement {
        replace::replace(env, cl, active)?;
    }
    println!("tcp-survival: survived={sv2}/{n2} gap_ms={gap2}");
    if !swap_ok {
        return Err(format!("e2e: the planned swap lost {} connections", n - sv));
    }
    if sv2 != n2 {
        return Err(format!(
            "e2e: {} connections did not survive the crash",
            n2 - sv2
        ));
    }
    Ok(())
}

/// The command line of a member's configuration-sync service: its store under `root`, its
/// sync receiver on `listen`, the sync-channel key, one `--peer SERIAL=ADDR`, the role from
/// its daemon at `daemon_sock`, hactl's socket at `mgmt_sock`.
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
    for i in 0..2 {
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
    Ok(())
}
