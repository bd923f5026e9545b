//! The e2e's environment: processes and namespaces (removed on drop, processes ended by
//! their pid), management API helpers, the load client, the test wire and the QEMU command
//! line of a member.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use crate::util::{root, run, Result};

/// An `ip -batch` waiting to set a namespace's interfaces down ([`Env::link_cutter`]); ended
/// by its pid if it is dropped unused.
pub(super) struct LinkCutter {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl LinkCutter {
    /// Sets `devs` down now, and waits for `ip` to finish.
    pub(super) fn cut(mut self, devs: &[&str]) -> Result {
        let mut stdin = self.stdin.take().ok_or("ip -batch: already used")?;
        let cmds: String = devs
            .iter()
            .map(|d| format!("link set {d} down\n"))
            .collect();
        stdin
            .write_all(cmds.as_bytes())
            .and_then(|_| stdin.flush())
            .map_err(|e| format!("ip -batch: {e}"))?;
        drop(stdin);
        let status = self.child.wait().map_err(|e| format!("ip -batch: {e}"))?;
        if !status.success() {
            return Err(format!("ip -batch: {status} setting {devs:?} down"));
        }
        Ok(())
    }
}

impl Drop for LinkCutter {
    fn drop(&mut self) {
        if self.stdin.is_some() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Processes and namespaces of one run, removed on drop (also when the run fails).
pub(super) struct Env {
    pub(super) prefix: String,
    pub(super) dir: PathBuf,
    pub(super) namespaces: Vec<String>,
    pub(super) procs: Vec<(String, Child)>,
}

impl Env {
    pub(super) fn ns(&self, n: &str) -> String {
        format!("{}-{n}", self.prefix)
    }

    pub(super) fn ip(&self, args: &[&str]) -> Result {
        run(Command::new("ip").args(args))
    }

    /// Readies the data interfaces of namespace `ns` to go down the moment its member is
    /// killed ([`LinkCutter::cut`]): a box that dies loses its processes and its interfaces
    /// at once. One `ip -batch` runs beforehand, waiting for its commands; starting an `ip`
    /// per interface after the kill left the dead member's kernel up for tens of ms, long
    /// enough to answer the survivor's liveness probe.
    pub(super) fn link_cutter(&self, ns: &str) -> Result<LinkCutter> {
        let mut child = Command::new("ip")
            .args(["-n", ns, "-batch", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| format!("ip -batch: {e}"))?;
        let stdin = child.stdin.take().ok_or("ip -batch: no stdin")?;
        // Time to start and block on its input.
        std::thread::sleep(Duration::from_millis(200));
        Ok(LinkCutter {
            child,
            stdin: Some(stdin),
        })
    }

    pub(super) fn add_ns(&mut self, n: &str) -> Result {
        let name = self.ns(n);
        self.ip(&["netns", "add", &name])?;
        self.namespaces.push(name.clone());
        self.ip(&["-n", &name, "link", "set", "lo", "up"])
    }

    /// Starts `argv` in namespace `ns` (or the root namespace), output to `<dir>/<name>.log`.
    pub(super) fn spawn(
        &mut self,
        name: &str,
        ns: Option<&str>,
        argv: &[String],
        stdin: bool,
    ) -> Result<()> {
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

    pub(super) fn child(&mut self, name: &str) -> Option<&mut Child> {
        self.procs
            .iter_mut()
            .find(|(n, _)| n == name)
            .map(|(_, c)| c)
    }

    /// A dead box: SIGKILLs each of `names` (by pid) at once, in that order, without waiting
    /// for any to end (reaping one first would let the next live on for its exit time); the
    /// caller reaps them with [`Env::reap`] once the box is cut off.
    pub(super) fn kill_now(&mut self, names: &[&str]) -> Vec<Child> {
        let mut dead = Vec::new();
        for name in names {
            if let Some(i) = self.procs.iter().position(|(n, _)| n == name) {
                let (_, mut c) = self.procs.remove(i);
                let _ = c.kill();
                dead.push(c);
            }
        }
        dead
    }

    /// Waits for the processes [`Env::kill_now`] killed.
    pub(super) fn reap(dead: Vec<Child>) {
        for mut c in dead {
            let _ = c.wait();
        }
    }

    /// Kills a process by its pid (SIGKILL) and reaps it.
    pub(super) fn kill(&mut self, name: &str) {
        if let Some(i) = self.procs.iter().position(|(n, _)| n == name) {
            let (_, mut c) = self.procs.remove(i);
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// What a failed run leaves to read: every process that ended on its own (with its exit
    /// status) and each QEMU member's decoded firmware log.
    pub(super) fn post_mortem(&mut self, firmware: Option<&Path>) -> String {
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
            let daemon = std::fs::read_to_string(self.dir.join(format!("daemon-{m}.log")))
                .unwrap_or_default();
            let lines: Vec<&str> = daemon.lines().collect();
            out.push_str(&format!(
                "\n--- daemon-{m} log (last lines)\n{}",
                lines[lines.len().saturating_sub(30)..].join("\n")
            ));
        }
        out
    }

    /// Starts the daemon of member `m` again with its configuration (`<dir>/<m>.toml`), after
    /// [`Env::kill`] ended it.
    pub(super) fn restart_daemon(&mut self, b: &dyn Fn(&str) -> String, m: &str) -> Result {
        self.kill(&format!("daemon-{m}"));
        let cfg = self.dir.join(format!("{m}.toml"));
        self.spawn(
            &format!("daemon-{m}"),
            Some(m),
            &[b("ha-daemon"), "--config".into(), cfg.display().to_string()],
            false,
        )
    }

    /// Restarts the QEMU controller of member `m` (wire slot `i`, block `<dir>/<i>.cfg`) with
    /// `elf`: ended by its pid, then booted again under the next value of its boot counter.
    pub(super) fn restart_controller(
        &mut self,
        elf: &Path,
        m: &str,
        net: &LinkPorts,
        i: usize,
    ) -> Result {
        self.kill(&format!("controller-{m}"));
        let block = self.dir.join(format!("{i}.cfg"));
        let argv = qemu_member(elf, &block, &self.dir, m, net, i)?;
        self.spawn(&format!("controller-{m}"), None, &argv, false)
    }

    pub(super) fn log_tail(&self, name: &str) -> String {
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
pub(super) fn mgmt(sock: &Path, request: &str) -> Result<serde_json::Value> {
    mgmt_within(sock, request, Duration::from_secs(10))
}

/// [`mgmt`], giving up on a reply after `timeout`.
pub(super) fn mgmt_within(
    sock: &Path,
    request: &str,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let mut s = UnixStream::connect(sock).map_err(|e| format!("{}: {e}", sock.display()))?;
    s.set_read_timeout(Some(timeout))
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
pub(super) fn last_events(sock: &Path, n: u32) -> String {
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
            let end = line.contains("\"end_of_events\"");
            out.push_str(&line);
            out.push('\n');
            // The server keeps the connection open for the next request.
            if end {
                break;
            }
        }
        Ok(out)
    };
    run().unwrap_or_else(|e| format!("{}: {e}", sock.display()))
}

pub(super) fn mode(sock: &Path) -> Option<String> {
    mgmt(sock, r#"{"cmd":"mode"}"#)
        .ok()
        .and_then(|v| v["mode"].as_str().map(str::to_string))
}

/// The daemon's forwarding role (`hactl forwarding`), if it answers within `timeout`.
pub(super) fn forwarding(sock: &Path, timeout: Duration) -> Option<ha_mgmt_api::ForwardingReport> {
    let v = mgmt_within(sock, r#"{"cmd":"forwarding"}"#, timeout).ok()?;
    match serde_json::from_value(v).ok()? {
        ha_mgmt_api::Reply::Forwarding(f) => Some(f),
        _ => None,
    }
}

/// Load sharing: waits until member `i`'s data path forwards for exactly the domains
/// `want[i]`, for every member.
pub(super) fn wait_domains(socks: &[PathBuf], want: &[&[u8]], timeout: Duration) -> Result {
    let deadline = Instant::now() + timeout;
    let mut last = Vec::new();
    while Instant::now() < deadline {
        last = socks
            .iter()
            .map(|s| forwarding(s, Duration::from_secs(1)).map(|f| f.domains))
            .collect::<Vec<_>>();
        if last
            .iter()
            .zip(want)
            .all(|(got, w)| got.as_deref() == Some(*w))
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "e2e: the members' domains did not settle in {timeout:?} on {want:?}: {last:?}"
    ))
}

/// Waits until `who` is active and every other member passive; returns the active's index.
pub(super) fn wait_roles(
    socks: &[PathBuf],
    who: Option<usize>,
    timeout: Duration,
) -> Result<usize> {
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

/// One load client process: its stdin and the lines of its stdout.
pub(super) struct LoadPart {
    pub(super) stdin: ChildStdin,
    pub(super) lines: Receiver<String>,
}

/// The load: one client process, or several when one process cannot hold every connection
/// (its open-file limit); commands go to each, reports are summed.
pub(super) struct Load {
    pub(super) parts: Vec<LoadPart>,
}

impl Load {
    /// Sends command `c` to every client process.
    pub(super) fn cmd(&mut self, c: &str) -> Result {
        for p in &mut self.parts {
            writeln!(p.stdin, "{c}").map_err(|e| format!("e2e: load client: {e}"))?;
        }
        Ok(())
    }

    /// The next line of every client process (each within `timeout`).
    pub(super) fn lines(&self, timeout: Duration) -> Result<Vec<String>> {
        self.parts
            .iter()
            .map(|p| {
                p.lines
                    .recv_timeout(timeout)
                    .map_err(|_| "e2e: the load client did not answer".to_string())
            })
            .collect()
    }

    /// Asks for a report and returns it as JSON: the processes' reports summed (connections,
    /// survived, failed, messages), the longest gap of all, the median gap as the median of
    /// the processes' medians, the first error found (the FTP load's takes up to its transfer
    /// timeout).
    /// Each client process's report, in the order the processes were started.
    pub(super) fn report_each(&mut self) -> Result<Vec<serde_json::Value>> {
        self.cmd("report")?;
        self.lines(Duration::from_secs(30))?
            .iter()
            .map(|l| serde_json::from_str(l).map_err(|e| format!("e2e: load report {l:?}: {e}")))
            .collect()
    }

    /// The processes' reports summed (connections, survivors) or their worst (gaps).
    pub(super) fn report_json(&mut self) -> Result<serde_json::Value> {
        let reports = self.report_each()?;
        Ok(Self::merged(reports))
    }

    /// Reports of several client processes as one.
    pub(super) fn merged(reports: Vec<serde_json::Value>) -> serde_json::Value {
        if reports.len() <= 1 {
            return reports.into_iter().next().unwrap_or_default();
        }
        let g = |v: &serde_json::Value, k: &str| v[k].as_u64().unwrap_or(0);
        let sum = |k: &str| reports.iter().map(|v| g(v, k)).sum::<u64>();
        let mut p50: Vec<u64> = reports.iter().map(|v| g(v, "gap_p50_ms")).collect();
        p50.sort_unstable();
        serde_json::json!({
            "connections": sum("connections"),
            "survived": sum("survived"),
            "failed": sum("failed"),
            "messages": sum("messages"),
            "gap_ms": reports.iter().map(|v| g(v, "gap_ms")).max().unwrap_or(0),
            "gap_p50_ms": p50[p50.len() / 2],
            "first_error": reports.iter().find_map(|v| v["first_error"].as_str()),
            "unexpected_admitted": reports.iter().any(|v| v["unexpected_admitted"].as_bool() == Some(true)),
        })
    }

    pub(super) fn report(&mut self) -> Result<(u64, u64, u64, u64)> {
        let v = self.report_json()?;
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
pub(super) fn diagnostics(socks: &[PathBuf]) -> String {
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
pub(super) fn cpu_state(qmp: &Path) -> String {
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
pub(super) fn controller_log(elf: Option<&Path>, dir: &Path, m: &str, n: usize) -> String {
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

/// Builds the firmware (its own workspace, thumbv7m-none-eabi) and returns the ELF; the image
/// named by `HA_FIRMWARE_ELF`, when set, instead.
pub(super) fn build_firmware() -> Result<PathBuf> {
    // A given image (the QEMU e2e suite's variable): used as it is, not built.
    if let Some(elf) = std::env::var_os("HA_FIRMWARE_ELF").map(PathBuf::from) {
        if !elf.exists() {
            return Err(format!(
                "e2e: HA_FIRMWARE_ELF={}: no such file",
                elf.display()
            ));
        }
        println!(
            "e2e: firmware image from HA_FIRMWARE_ELF: {}",
            elf.display()
        );
        return Ok(elf);
    }
    let app = root().join("firmware/app");
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(|t| PathBuf::from(t).join("firmware-e2e"))
        .unwrap_or_else(|| app.join("target"));
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(&app)
            .env("CARGO_TARGET_DIR", &target)
            .args(crate::firmware_tasks::path_remaps())
            .args(["build", "--release"]),
    )?;
    let elf = target.join("thumbv7m-none-eabi/release/ha-firmware");
    if !elf.exists() {
        return Err(format!("e2e: no firmware ELF at {}", elf.display()));
    }
    Ok(elf)
}

/// The version of the previous release, whose image is
/// `dist/firmware/ha-firmware-<version>.elf`: the cluster of the QEMU e2e boots on it, and
/// the rolling update moves it to the image built from this tree.
pub(super) const RELEASE_VERSION: &str = "0.1.0";

/// The previous release's image, checked to be there.
pub(super) fn release_image() -> Result<PathBuf> {
    let p = root().join(format!("dist/firmware/ha-firmware-{RELEASE_VERSION}.elf"));
    if !p.exists() {
        return Err(format!(
            "e2e: the previous release's image {} is missing",
            p.display()
        ));
    }
    Ok(p)
}

/// The firmware version of this tree (`firmware/app/Cargo.toml`), which its image reports.
pub(super) fn tree_firmware_version() -> Result<String> {
    let toml = std::fs::read_to_string(root().join("firmware/app/Cargo.toml"))
        .map_err(|e| format!("e2e: firmware/app/Cargo.toml: {e}"))?;
    toml.lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .map(str::to_string)
        .ok_or_else(|| "e2e: no version in firmware/app/Cargo.toml".into())
}

/// Where the QEMU members' HA links meet: each member's own UDP ports (from the run's port
/// base) and its ports on the test wire (`ha-testwire`, which relays between the members).
pub(super) struct LinkPorts {
    pub(super) base: u16,
    pub(super) wire_main: [u16; 2],
    pub(super) wire_backup: [u16; 2],
}

impl LinkPorts {
    /// Member `i`'s own UDP ports: (backup link, main link).
    pub(super) fn own(&self, i: usize) -> (u16, u16) {
        (self.base + 3 + i as u16, self.base + 5 + i as u16)
    }
}

/// Starts the test wire between the two QEMU members' HA links and reads its ports. Through
/// the wire, a member whose peer QEMU died or restarted keeps both links: QEMU's UDP serial
/// backend is a connected socket, and a direct link to a dead peer's port can stop reading
/// for good after the ICMP error (seen as `backup:DOWN` on both members after a restart).
pub(super) fn start_wire(
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

/// The QEMU command line of member `i` (`ha_qemu::MemberCmd`, the one place it is written):
/// its configuration block and persistent boot counter (beside the block), UART0 log to a
/// file, UART1 host link on `<dir>/<m>-host.sock`, UART2 backup link and the LAN9118 as UDP to
/// the test wire, QMP and QEMU's guest-error log for the post-mortem.
pub(super) fn qemu_member(
    elf: &Path,
    block: &Path,
    dir: &Path,
    m: &str,
    ports: &LinkPorts,
    i: usize,
) -> Result<Vec<String>> {
    let (backup, main) = ports.own(i);
    let cmd = ha_qemu::MemberCmd {
        elf: elf.to_path_buf(),
        block: block.to_path_buf(),
        epoch: ha_qemu::next_boot(block)?,
        uart0: ha_qemu::Uart0::File(dir.join(format!("{m}-uart0.defmt"))),
        host_sock: dir.join(format!("{m}-host.sock")),
        backup: Some((ports.wire_backup[i], backup)),
        sensors_sock: dir.join(format!("{m}-sensors.sock")),
        nic: (ports.wire_main[i], main),
        qmp_sock: Some(dir.join(format!("{m}-qmp.sock"))),
        debug_log: Some(dir.join(format!("{m}-qemu.log"))),
    };
    let mut argv = Vec::new();
    // An experiment knob, off by default: on an appliance each controller is a chip of its
    // own; under QEMU on a 2-core machine it competes for the CPU with the load and the
    // daemons, and its UART moves one byte per thread hand-off. `nice` execs QEMU, so the
    // pid the harness kills is QEMU's.
    if let Some(n) = controller_nice()? {
        argv.extend(["nice".to_string(), "-n".to_string(), n.to_string()]);
    }
    argv.push("qemu-system-arm".to_string());
    argv.extend(cmd.args());
    Ok(argv)
}

/// `HA_CONTROLLER_NICE`: the scheduling niceness the QEMU controllers run at (-20..=19),
/// none when unset.
pub(super) fn controller_nice() -> Result<Option<i32>> {
    match std::env::var("HA_CONTROLLER_NICE") {
        Err(_) => Ok(None),
        Ok(v) => match v.trim().parse::<i32>() {
            Ok(n) if (-20..=19).contains(&n) => Ok(Some(n)),
            _ => Err(format!(
                "HA_CONTROLLER_NICE={v:?}: a niceness from -20 to 19 is needed"
            )),
        },
    }
}

pub(super) fn bin_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target"))
        .join("release")
}

/// Sends one command to the test wire's control socket (`cut`, `restore`, `set`).
pub(super) fn wire_control(sock: &Path, cmd: &str) -> Result {
    use std::io::{BufRead, BufReader, Write};
    let mut s = std::os::unix::net::UnixStream::connect(sock)
        .map_err(|e| format!("e2e: test wire {}: {e}", sock.display()))?;
    s.write_all(format!("{cmd}\n").as_bytes())
        .map_err(|e| format!("e2e: test wire: {e}"))?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| format!("e2e: test wire: {e}"))?;
    if line.contains("\"ok\":true") {
        Ok(())
    } else {
        Err(format!("e2e: test wire refused {cmd}: {line}"))
    }
}

/// This member's own table size (`sync_table_connections` of `info --verbose`).
pub(super) fn table_size(sock: &Path) -> Option<u64> {
    let v = mgmt(sock, r#"{"cmd":"info","verbose":true}"#).ok()?;
    let me = v["me"].as_str()?.to_string();
    v["members"]
        .as_array()?
        .iter()
        .find(|m| m["serial"].as_str() == Some(&me))?["counters"]["sync_table_connections"]
        .as_u64()
}

/// Waits until member `sock`'s table holds as many connections as `other`'s (not 0).
pub(super) fn wait_same_table(sock: &Path, other: &Path, bound: Duration) -> Result {
    let deadline = Instant::now() + bound;
    loop {
        let (have, want) = (table_size(sock), table_size(other));
        if have.is_some() && have == want && want > Some(0) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "e2e: {} holds {have:?} connections, {} {want:?}",
                sock.display(),
                other.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
