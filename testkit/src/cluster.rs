//! Boots a cluster of management-controller members under QEMU `mps2-an385` (the QEMU member
//! contract, `docs/qemu.md`) and owns every process and thread it starts.
//!
//! A [`Cluster`] is: a configuration block per member (built with `hactl`'s provisioning
//! code), one `qemu-system-arm` per member, the test wire ([`ha_testwire::Wire`]) relaying the
//! main and backup HA links, a board simulator per member ([`ha_boardsim::BoardSim`]) on its
//! sensor UART, the UART0 log captured (decoded with `defmt-print` on demand), the status
//! LED read over QMP (`xp /1wx 0x40028000`) every [`LED_POLL`], and the member's host link
//! ([`ha_hostlink::HostLink`]) played by the harness as the member's main CPU.
//!
//! The harness as main CPU: it records every `RoleDecision`, `Status` and `Event` with the
//! instant it arrived, asks for a `Status` every [`STATUS_PERIOD`], sends `Admin` commands, and
//! answers the controller's `ProbeRequest` (a liveness probe of a peer over the data
//! interfaces) from the cluster's data network model: the peer answers when its QEMU runs and
//! the data path between the two is not cut ([`Cluster::cut_data`]).
//!
//! Every QEMU is killed by its own pid when its [`Member`] is dropped (also on a failed
//! start); loops are bounded by timeouts. One cluster at a time per process
//! ([`Cluster::start`] holds a process-wide lock).

#![warn(missing_docs)]

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ha_boardsim::BoardSim;
use ha_hal::bridge::SensorKind;
use ha_hostlink::HostLink;
use ha_proto::config_block::ConfigBlock;
use ha_proto::msg::host::{EventReport, HostMsg, StatusReport};
use ha_proto::msg::member::AdminCommand;
use ha_proto::msg::{Role, Serial};
use ha_qemu::{MemberCmd, Uart0};
use ha_testwire::{Impair, LinkKind, Wire, WireConfig};

pub use ha_hal::bridge::SensorKind as Sensor;
pub use ha_testwire::LinkKind as Link;

/// Period of the LED register reads over QMP.
pub const LED_POLL: Duration = Duration::from_millis(50);
/// Period of the harness's `StatusRequest`s.
pub const STATUS_PERIOD: Duration = Duration::from_millis(500);
/// How long QEMU may take to create its sockets.
const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest UART0 log kept per member, bytes (defmt frames are a few bytes each; a 5-minute
/// soak logs well under this).
const MAX_LOG: usize = 8 << 20;
/// LED transitions kept per member (a blinking LED makes two per 3 s).
const MAX_LED_CHANGES: usize = 1024;
/// Events and decisions kept per member.
const MAX_RECORDS: usize = 4096;
/// Main-link UDP port in every member's block.
const HA_PORT: u16 = ha_proto::config_block::DEFAULT_HA_PORT;

/// Errors of the harness.
pub type Error = String;
/// Result of the harness.
pub type Result<T = ()> = std::result::Result<T, Error>;

static ONE_CLUSTER: Mutex<()> = Mutex::new(());
static CLUSTER_SEQ: AtomicU32 = AtomicU32::new(0);

/// What to boot.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The firmware ELF (`ha-firmware`, release build).
    pub elf: PathBuf,
    /// Number of members (2..=8).
    pub members: usize,
    /// Timer profile: `default`, `fast` or `custom:INTERVAL_MS:MISS_LIMIT`.
    pub timers: String,
    /// Wire the backup (serial) HA link too.
    pub backup_link: bool,
    /// Cluster id.
    pub cluster_id: u32,
}

impl ClusterConfig {
    /// Two members, fast timers, both links.
    pub fn new(elf: PathBuf) -> Self {
        ClusterConfig {
            elf,
            members: 2,
            timers: "fast".into(),
            backup_link: true,
            cluster_id: 42,
        }
    }
}

/// Serial of member `i`.
pub fn serial_of(i: usize) -> String {
    format!("QM-{}", (b'A' + i as u8) as char)
}

fn free_udp_port() -> Result<SocketAddr> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(|e| format!("no free UDP port: {e}"))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn push_bounded<T>(q: &mut VecDeque<T>, v: T, max: usize) {
    if q.len() == max {
        q.pop_front();
    }
    q.push_back(v);
}

/// What the harness, as a member's main CPU, has received from its controller.
#[derive(Debug, Default)]
pub struct HostView {
    /// Every role change the controller's `Roles` reports showed (domain id, new role), with
    /// its arrival; the periodic re-assertions of an unchanged role are not repeated here.
    pub decisions: VecDeque<(Instant, u8, Role)>,
    /// Every `Event` with its arrival.
    pub events: VecDeque<(Instant, EventReport)>,
    /// The latest `Status` and its arrival.
    pub status: Option<(Instant, StatusReport)>,
    /// The host link is connected.
    pub connected: bool,
    /// Probe requests answered (peer, answer).
    pub probes: VecDeque<(Instant, Serial, bool)>,
}

impl HostView {
    /// The role of domain `domain` from the last roles report.
    pub fn role_in(&self, domain: u8) -> Option<Role> {
        self.decisions
            .iter()
            .rev()
            .find(|d| d.1 == domain)
            .map(|d| d.2)
    }

    /// The role of domain 0 from the last roles report.
    pub fn role(&self) -> Option<Role> {
        self.role_in(0)
    }
}

/// Answers "is peer alive over the data interfaces?" for member `from`.
type ProbeFn = Arc<dyn Fn(usize, Serial) -> bool + Send + Sync>;

/// The data network model shared by the members' probe answers.
struct DataNet {
    alive: Vec<AtomicBool>,
    /// `cut[i][j]`: member i cannot reach member j over the data interfaces.
    cut: Mutex<Vec<Vec<bool>>>,
    serials: Vec<String>,
}

impl DataNet {
    fn probe(&self, from: usize, peer: Serial) -> bool {
        let Some(j) = self.serials.iter().position(|s| s == peer.as_str()) else {
            return false;
        };
        self.alive[j].load(Ordering::Relaxed) && !lock(&self.cut)[from][j]
    }
}

/// One booted member.
pub struct Member {
    index: usize,
    serial: String,
    dir: PathBuf,
    cfg: ConfigBlock,
    qemu: Option<Child>,
    pid: u32,
    killed_at: Option<Instant>,
    sim: Option<BoardSim>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    log: Arc<Mutex<Vec<u8>>>,
    leds: Arc<Mutex<VecDeque<(Instant, bool)>>>,
    view: Arc<Mutex<HostView>>,
    to_host: Sender<HostMsg>,
}

impl std::fmt::Debug for Member {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Member")
            .field("serial", &self.serial)
            .field("pid", &self.pid)
            .finish()
    }
}

impl Member {
    /// The member's serial.
    pub fn serial(&self) -> &str {
        &self.serial
    }

    /// Its index in the cluster.
    pub fn index(&self) -> usize {
        self.index
    }

    /// The QEMU process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Its configuration block.
    pub fn config(&self) -> &ConfigBlock {
        &self.cfg
    }

    /// True while its QEMU runs.
    pub fn running(&mut self) -> bool {
        match self.qemu.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// When [`Cluster::kill`] killed it.
    pub fn killed_at(&self) -> Option<Instant> {
        self.killed_at
    }

    /// What its host link received so far.
    pub fn host(&self) -> MutexGuard<'_, HostView> {
        lock(&self.view)
    }

    /// Domain 0's role from the last roles report.
    pub fn role(&self) -> Option<Role> {
        self.host().role()
    }

    /// Sends a message on its host link (as its main CPU).
    pub fn send(&self, msg: HostMsg) -> Result {
        self.to_host
            .send(msg)
            .map_err(|_| format!("{}: host link closed", self.serial))
    }

    /// Sends an operator command about this member (`target: None`).
    pub fn admin(&self, command: AdminCommand) -> Result {
        self.send(HostMsg::Admin {
            target: None,
            command,
        })
    }

    /// Fails or restores a component of its simulated board.
    pub fn set_sensor(&self, kind: SensorKind, index: u8, ok: bool) -> Result {
        match &self.sim {
            Some(s) => s.set(kind, index, ok).map_err(|e| e.to_string()),
            None => Err(format!("{}: no board simulator", self.serial)),
        }
    }

    /// The LED register's bit 0 as last read, if read at all.
    pub fn led_on(&self) -> Option<bool> {
        lock(&self.leds).back().map(|l| l.1)
    }

    /// The LED pattern observed over the last `window`: see [`LedObserved`].
    pub fn led_observed(&self, window: Duration) -> LedObserved {
        let leds = lock(&self.leds);
        LedObserved::from_changes(&leds, window, Instant::now())
    }

    /// The raw UART0 bytes (defmt frames) captured so far.
    pub fn raw_log(&self) -> Vec<u8> {
        lock(&self.log).clone()
    }

    /// The UART0 log decoded with `defmt-print -e <elf>`.
    pub fn log(&self, elf: &Path) -> Result<String> {
        decode_defmt(elf, &self.raw_log())
    }

    /// The first instant at or after `since` when a roles report changed domain 0 to `role`.
    pub fn decision_since(&self, since: Instant, role: Role) -> Option<Instant> {
        self.host()
            .decisions
            .iter()
            .find(|d| d.0 >= since && d.1 == 0 && d.2 == role)
            .map(|d| d.0)
    }

    /// The names of the events received since `since`.
    pub fn events_since(&self, since: Instant) -> Vec<String> {
        self.host()
            .events
            .iter()
            .filter(|e| e.0 >= since)
            .map(|e| format!("{} {}", e.1.name, e.1.detail))
            .collect()
    }

    fn kill(&mut self) {
        if let Some(c) = self.qemu.as_mut() {
            // SIGKILL to this child's own pid.
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
        self.stop.store(true, Ordering::Relaxed);
        self.sim = None;
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The LED as observed over a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedObserved {
    /// No reading yet.
    Unknown,
    /// Off for the whole window.
    Off,
    /// On for the whole window.
    Steady,
    /// Blinking: the last complete on and off phases, milliseconds.
    Blink {
        /// Last complete on phase.
        on_ms: u64,
        /// Last complete off phase.
        off_ms: u64,
    },
    /// Changed, but not yet a full on and off phase in the window.
    Changing,
}

impl LedObserved {
    fn from_changes(changes: &VecDeque<(Instant, bool)>, window: Duration, now: Instant) -> Self {
        let Some(&(_, last)) = changes.back() else {
            return LedObserved::Unknown;
        };
        let start = now.checked_sub(window).unwrap_or(now);
        let inside: Vec<&(Instant, bool)> = changes.iter().filter(|c| c.0 >= start).collect();
        if inside.is_empty() {
            return if last {
                LedObserved::Steady
            } else {
                LedObserved::Off
            };
        }
        // Complete phases: between consecutive changes inside the window.
        let (mut on_ms, mut off_ms) = (None, None);
        for w in inside.windows(2) {
            let ms = w[1].0.duration_since(w[0].0).as_millis() as u64;
            if w[0].1 {
                on_ms = Some(ms);
            } else {
                off_ms = Some(ms);
            }
        }
        match (on_ms, off_ms) {
            (Some(on_ms), Some(off_ms)) => LedObserved::Blink { on_ms, off_ms },
            _ => LedObserved::Changing,
        }
    }
}

impl std::fmt::Display for LedObserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedObserved::Unknown => f.write_str("?"),
            LedObserved::Off => f.write_str("off"),
            LedObserved::Steady => f.write_str("steady"),
            LedObserved::Blink { on_ms, off_ms } => write!(f, "blink {on_ms}/{off_ms} ms"),
            LedObserved::Changing => f.write_str("changing"),
        }
    }
}

/// A running cluster. Dropping it kills every QEMU and stops every thread.
pub struct Cluster {
    members: Vec<Member>,
    wire: Arc<Wire>,
    data: Arc<DataNet>,
    dir: PathBuf,
    elf: PathBuf,
    started: Instant,
    _one: MutexGuard<'static, ()>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("members", &self.members)
            .field("dir", &self.dir)
            .finish()
    }
}

impl Cluster {
    /// Provisions and boots the cluster. Fails (with everything started so far stopped) when
    /// a QEMU does not start or does not create its sockets within 10 s, or a member's
    /// controller sends no status on its host link within 10 s.
    pub fn start(cfg: &ClusterConfig) -> Result<Cluster> {
        if !(2..=8).contains(&cfg.members) {
            return Err(format!("{} members: 2 to 8 supported", cfg.members));
        }
        if !cfg.elf.is_file() {
            return Err(format!("no firmware ELF at {}", cfg.elf.display()));
        }
        let one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
        // A fresh directory per cluster: its members' boot counters start anew, as new
        // boards' do.
        let dir = std::env::temp_dir().join(format!(
            "ha-qemu-{}-{}",
            std::process::id(),
            CLUSTER_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let serials: Vec<String> = (0..cfg.members).map(serial_of).collect();
        let blocks = provision(cfg, &serials)?;
        let main: Vec<SocketAddr> = (0..cfg.members)
            .map(|_| free_udp_port())
            .collect::<Result<_>>()?;
        let backup: Vec<SocketAddr> = (0..cfg.members)
            .map(|_| free_udp_port())
            .collect::<Result<_>>()?;
        let wire = Wire::start(&WireConfig {
            main: main.clone(),
            backup: backup.clone(),
        })
        .map_err(|e| e.to_string())?;
        let data = Arc::new(DataNet {
            alive: (0..cfg.members).map(|_| AtomicBool::new(false)).collect(),
            cut: Mutex::new(vec![vec![false; cfg.members]; cfg.members]),
            serials: serials.clone(),
        });
        let mut cluster = Cluster {
            members: Vec::new(),
            wire: Arc::new(wire),
            data: data.clone(),
            dir: dir.clone(),
            elf: cfg.elf.clone(),
            started: Instant::now(),
            _one: one,
        };
        for (i, block) in blocks.into_iter().enumerate() {
            let mdir = dir.join(&serials[i]);
            std::fs::create_dir_all(&mdir).map_err(|e| format!("{}: {e}", mdir.display()))?;
            let wire_main = cluster
                .wire
                .wire_port(LinkKind::Main, i)
                .ok_or("no wire port")?;
            let wire_backup = cluster
                .wire
                .wire_port(LinkKind::Backup, i)
                .ok_or("no wire port")?;
            let ports = Ports {
                wire_main,
                member_main: main[i].port(),
                backup: cfg.backup_link.then_some((wire_backup, backup[i].port())),
            };
            let d = data.clone();
            let probe: ProbeFn = Arc::new(move |from, peer| d.probe(from, peer));
            let m = Member::boot(i, &serials[i], &cfg.elf, &mdir, block, &ports, probe).map_err(
                |e| {
                    if e.starts_with(&serials[i]) {
                        e
                    } else {
                        format!("{}: {e}", serials[i])
                    }
                },
            )?;
            data.alive[i].store(true, Ordering::Relaxed);
            cluster.members.push(m);
        }
        // Every controller answers the harness's status requests once it runs: a member that
        // stays silent does not boot (wrong ELF, refused block), and the start fails.
        let end = Instant::now() + SOCKET_TIMEOUT;
        for m in &cluster.members {
            while m.host().status.is_none() {
                if Instant::now() >= end {
                    return Err(format!(
                        "{}: no status on its host link within {SOCKET_TIMEOUT:?} (does the \
                         firmware boot?)",
                        m.serial
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        cluster.started = Instant::now();
        Ok(cluster)
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> &Member {
        &self.members[i]
    }

    /// Member `i`, mutable.
    pub fn member_mut(&mut self, i: usize) -> &mut Member {
        &mut self.members[i]
    }

    /// The firmware ELF.
    pub fn elf(&self) -> &Path {
        &self.elf
    }

    /// When the last member was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The test wire (cut, loss, delay, counters).
    pub fn wire(&self) -> &Arc<Wire> {
        &self.wire
    }

    /// Serves the wire's control socket at `<dir>/wire.sock` and returns its path.
    pub fn serve_wire_control(&self) -> Result<PathBuf> {
        let path = self.dir.join("wire.sock");
        self.wire.serve_control(&path).map_err(|e| e.to_string())?;
        Ok(path)
    }

    /// Sets `impair` on both directions of `link` between every pair (`None`: both links).
    pub fn impair(&self, link: Option<LinkKind>, impair: Impair) -> Result {
        self.wire
            .set(link, None, None, impair)
            .map_err(|e| e.to_string())
    }

    /// Cuts (`true`) or restores the data path between every pair: the harness's probe
    /// answers follow it.
    pub fn cut_data(&self, cut: bool) {
        let mut c = lock(&self.data.cut);
        for row in c.iter_mut() {
            for v in row.iter_mut() {
                *v = cut;
            }
        }
    }

    /// Kills member `i`'s QEMU with SIGKILL and returns the instant just before the signal.
    pub fn kill(&mut self, i: usize) -> Instant {
        self.data.alive[i].store(false, Ordering::Relaxed);
        let at = Instant::now();
        self.members[i].kill();
        self.members[i].killed_at = Some(at);
        at
    }

    /// Indices of the members whose last domain-0 decision is `Active`, among the running.
    pub fn actives(&mut self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].running() && self.members[i].role() == Some(Role::Active))
            .collect()
    }

    /// Waits up to `timeout` until `pred` holds, checking every 20 ms.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&mut Cluster) -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for exactly one active among the running members.
    pub fn wait_one_active(&mut self, timeout: Duration) -> Result<usize> {
        if self.wait_for(timeout, |c| c.actives().len() == 1) {
            Ok(self.actives()[0])
        } else {
            Err(format!(
                "no single active member within {timeout:?}:\n{}",
                self.status_table()
            ))
        }
    }

    /// One line per member: serial, QEMU, role, quality, links as seen from it, forcing, LED.
    pub fn status_table(&mut self) -> String {
        let mut out = format!(
            "{:<6} {:<5} {:<9} {:>7} {:<26} {:<7} {}\n",
            "member", "qemu", "mode", "quality", "links (main/backup)", "forced", "led"
        );
        for i in 0..self.members.len() {
            let running = self.members[i].running();
            let m = &self.members[i];
            let role = m
                .role()
                .map(|r| format!("{r:?}"))
                .unwrap_or_else(|| "-".into());
            let (mut quality, mut links, mut forced) =
                ("-".to_string(), "-".to_string(), "-".to_string());
            if let Some((_, st)) = &m.host().status {
                if let Some(me) = st.members.iter().find(|s| s.local) {
                    quality = me.quality.to_string();
                    forced = format!("{:?}", me.forced);
                }
                let peers: Vec<String> = st
                    .members
                    .iter()
                    .filter(|s| !s.local)
                    .map(|s| {
                        let l: Vec<String> = s.links.iter().map(|l| format!("{l:?}")).collect();
                        format!("{}:{}", s.serial, l.join("/"))
                    })
                    .collect();
                links = peers.join(" ");
            }
            let led = m.led_observed(Duration::from_secs(4)).to_string();
            if !running {
                // What a dead member last said is stale: show nothing.
                (quality, links, forced) = ("-".into(), "-".into(), "-".into());
            }
            out.push_str(&format!(
                "{:<6} {:<5} {:<9} {:>7} {:<26} {:<7} {}\n",
                m.serial,
                if running { "up" } else { "dead" },
                if running { role } else { "-".into() },
                quality,
                links,
                forced,
                if running { led } else { "-".into() },
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Members first (QEMU killed by pid, threads joined), then the wire, then the files.
        self.members.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration blocks of every member (hactl's provisioning code, one PSK).
fn provision(cfg: &ClusterConfig, serials: &[String]) -> Result<Vec<ConfigBlock>> {
    let psk = hactl::pskfile::generate().map_err(|e| e.to_string())?;
    let members: Vec<String> = serials
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{s}=10.0.0.{}:{HA_PORT}", i + 1))
        .collect();
    serials
        .iter()
        .map(|s| {
            let plan = hactl::provision::Plan {
                serial: s.clone(),
                cluster_id: cfg.cluster_id,
                members: members.clone(),
                backup_link: cfg.backup_link,
                timers: cfg.timers.clone(),
                ..hactl::provision::Plan::default()
            };
            plan.block(psk.clone()).map_err(|e| e.to_string())
        })
        .collect()
}

struct Ports {
    wire_main: u16,
    member_main: u16,
    /// (wire port, member port) of the backup link.
    backup: Option<(u16, u16)>,
}

impl Member {
    fn boot(
        index: usize,
        serial: &str,
        elf: &Path,
        dir: &Path,
        cfg: ConfigBlock,
        ports: &Ports,
        probe: ProbeFn,
    ) -> Result<Member> {
        let block_file = dir.join("member.cfg");
        let image = hactl::provision::image(&cfg).map_err(|e| e.to_string())?;
        std::fs::write(&block_file, image).map_err(|e| format!("{}: {e}", block_file.display()))?;
        // The controller's persistent boot counter: what a real board keeps in flash, kept
        // beside the block image that stands for the flash.
        let epoch = ha_qemu::next_boot(&block_file).map_err(|e| format!("{serial}: {e}"))?;
        let args = MemberCmd {
            elf: elf.to_path_buf(),
            block: block_file.clone(),
            epoch,
            uart0: Uart0::Stdio,
            host_sock: dir.join("host.sock"),
            backup: ports.backup,
            sensors_sock: dir.join("sensors.sock"),
            nic: (ports.wire_main, ports.member_main),
            qmp_sock: Some(dir.join("qmp.sock")),
            debug_log: None,
        }
        .args();
        // Started paused (-S): the harness connects the host link, the board simulator and
        // QMP first and then lets it run, so that no message of the first boot is lost.
        let child = Command::new("qemu-system-arm")
            .arg("-S")
            .args(&args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start qemu-system-arm (run `cargo xtask setup`): {e}"))?;
        let (to_host, from_harness) = mpsc::channel();
        let mut m = Member {
            index,
            serial: serial.to_string(),
            dir: dir.to_path_buf(),
            pid: child.id(),
            qemu: Some(child),
            killed_at: None,
            sim: None,
            stop: Arc::new(AtomicBool::new(false)),
            threads: Vec::new(),
            log: Arc::new(Mutex::new(Vec::new())),
            leds: Arc::new(Mutex::new(VecDeque::new())),
            view: Arc::new(Mutex::new(HostView::default())),
            to_host,
            cfg,
        };
        // From here on, a failure drops `m`, which kills QEMU by its pid.
        let stdout = m
            .qemu
            .as_mut()
            .and_then(|c| c.stdout.take())
            .ok_or("qemu-system-arm: no stdout")?;
        let log = m.log.clone();
        m.threads
            .push(std::thread::spawn(move || capture(stdout, &log)));
        let wait_socket = |name: &str, m: &mut Member| -> Result {
            let p = dir.join(name);
            let end = Instant::now() + SOCKET_TIMEOUT;
            while !p.exists() {
                if !m.running() || Instant::now() >= end {
                    let mut err = String::new();
                    if let Some(mut e) = m.qemu.as_mut().and_then(|c| c.stderr.take()) {
                        m.kill();
                        let _ = e.read_to_string(&mut err);
                    }
                    return Err(format!("{serial}: QEMU did not create {name}: {err}"));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        };
        for s in ["host.sock", "sensors.sock", "qmp.sock"] {
            wait_socket(s, &mut m)?;
        }
        m.sim = Some(
            BoardSim::start(&dir.join("sensors.sock"), ha_boardsim::default_readings())
                .map_err(|e| e.to_string())?,
        );
        let cpu_epoch = ha_persist::BootCounter::new(dir.join("main-cpu.boot"))
            .next()
            .map_err(|e| format!("{serial}: main-CPU boot counter: {e}"))?;
        let host =
            HostLink::connect_retry(&dir.join("host.sock"), &m.cfg, cpu_epoch, SOCKET_TIMEOUT)
                .map_err(|e| format!("{serial}: host link: {e}"))?;
        let (view, stop) = (m.view.clone(), m.stop.clone());
        m.threads.push(std::thread::spawn(move || {
            host_loop(index, host, from_harness, &view, &probe, &stop)
        }));
        let mut qmp = connect_qmp(&dir.join("qmp.sock"))?;
        qmp.execute(r#"{"execute":"cont"}"#)?;
        let (leds, stop) = (m.leds.clone(), m.stop.clone());
        m.threads
            .push(std::thread::spawn(move || led_loop(qmp, &leds, &stop)));
        Ok(m)
    }
}

/// Collects QEMU's stdout (UART0: raw defmt frames) until QEMU exits.
fn capture(mut out: impl Read, log: &Mutex<Vec<u8>>) {
    let mut buf = [0u8; 4096];
    loop {
        match out.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut l = lock(log);
                if l.len() + n <= MAX_LOG {
                    l.extend_from_slice(&buf[..n]);
                }
            }
        }
    }
}

/// The main CPU's side of one host link: records what arrives, forwards the harness's
/// messages, asks for status, answers probes. Ends when the link closes or on stop.
fn host_loop(
    index: usize,
    mut link: HostLink,
    outbox: Receiver<HostMsg>,
    view: &Mutex<HostView>,
    probe: &ProbeFn,
    stop: &AtomicBool,
) {
    lock(view).connected = true;
    let mut next_status = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        while let Ok(msg) = outbox.try_recv() {
            if link.send(&msg).is_err() {
                break;
            }
        }
        if Instant::now() >= next_status {
            next_status = Instant::now() + STATUS_PERIOD;
            let _ = link.send(&HostMsg::StatusRequest);
        }
        match link.recv_timeout(Duration::from_millis(10)) {
            Ok(Some(msg)) => {
                let now = Instant::now();
                match msg {
                    HostMsg::Roles(roles) => {
                        let mut v = lock(view);
                        for r in roles {
                            if v.role_in(r.domain) != Some(r.role) {
                                push_bounded(
                                    &mut v.decisions,
                                    (now, r.domain, r.role),
                                    MAX_RECORDS,
                                );
                            }
                        }
                    }
                    HostMsg::Event(ev) => {
                        push_bounded(&mut lock(view).events, (now, ev), MAX_RECORDS)
                    }
                    HostMsg::Status(st) => lock(view).status = Some((now, st)),
                    HostMsg::ProbeRequest { peer } => {
                        let alive = probe(index, peer);
                        let _ = link.send(&HostMsg::ProbeResult { peer, alive });
                        push_bounded(&mut lock(view).probes, (now, peer, alive), MAX_RECORDS);
                    }
                    HostMsg::Ping { nonce } => {
                        let _ = link.send(&HostMsg::Pong { nonce });
                    }
                    _ => {}
                }
            }
            Ok(None) => {}
            Err(_) => break,
        }
    }
    lock(view).connected = false;
}

/// A QMP session in command mode.
struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// Connects to QEMU's QMP socket. The socket file appears at `bind`, a moment before QEMU
/// listens on it, so a refused connection is retried (every 20 ms, up to [`SOCKET_TIMEOUT`]).
fn connect_qmp(path: &Path) -> Result<Qmp> {
    let end = Instant::now() + SOCKET_TIMEOUT;
    let s = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) && Instant::now() < end =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let writer = s.try_clone().map_err(|e| e.to_string())?;
    let mut q = Qmp {
        reader: BufReader::new(s),
        writer,
    };
    let mut greeting = String::new();
    q.reader
        .read_line(&mut greeting)
        .map_err(|e| format!("QMP greeting: {e}"))?;
    q.execute(r#"{"execute":"qmp_capabilities"}"#)?;
    Ok(q)
}

impl Qmp {
    /// Sends one command and returns its `return` value (events in between are skipped).
    fn execute(&mut self, cmd: &str) -> Result<serde_json::Value> {
        self.writer
            .write_all(cmd.as_bytes())
            .and_then(|()| self.writer.write_all(b"\n"))
            .map_err(|e| format!("QMP: {e}"))?;
        // At most a few asynchronous events precede the answer.
        for _ in 0..16 {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err("QMP: closed".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("QMP: {e}")),
            }
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| format!("QMP: {e}"))?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!("QMP error: {e}"));
            }
        }
        Err("QMP: no answer".into())
    }

    /// Reads the FPGAIO LED register (bit 0 = status LED).
    fn led_register(&mut self) -> Result<u32> {
        let r = self.execute(
            r#"{"execute":"human-monitor-command","arguments":{"command-line":"xp /1wx 0x40028000"}}"#,
        )?;
        parse_xp(r.as_str().unwrap_or_default())
    }
}

/// Parses the monitor's `xp /1wx` answer, e.g. `0000000040028000: 0x00000001`.
pub fn parse_xp(text: &str) -> Result<u32> {
    let word = text
        .split_once(':')
        .map(|(_, v)| v.trim())
        .and_then(|v| v.strip_prefix("0x"))
        .ok_or_else(|| format!("unexpected xp answer {text:?}"))?;
    u32::from_str_radix(word, 16).map_err(|e| format!("unexpected xp answer {text:?}: {e}"))
}

fn led_loop(mut qmp: Qmp, leds: &Mutex<VecDeque<(Instant, bool)>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(v) = qmp.led_register() else {
            return; // QEMU gone.
        };
        let on = v & 1 == 1;
        let now = Instant::now();
        let mut l = lock(leds);
        if l.back().map(|x| x.1) != Some(on) {
            push_bounded(&mut l, (now, on), MAX_LED_CHANGES);
        }
        drop(l);
        std::thread::sleep(LED_POLL);
    }
}

/// Decodes raw defmt frames with `defmt-print -e <elf>`.
pub fn decode_defmt(elf: &Path, raw: &[u8]) -> Result<String> {
    let mut child = Command::new("defmt-print")
        .arg("-e")
        .arg(elf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start defmt-print (run `cargo xtask setup`): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(raw)
            .map_err(|e| format!("defmt-print: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("defmt-print: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Median, min and max of failover times in milliseconds, as the bench prints them.
pub fn summary(ms: &mut [f64]) -> Option<(f64, f64, f64)> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    Some((ms[0], median, ms[n - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xp_answer_parses() {
        assert_eq!(parse_xp("0000000040028000: 0x00000001\r\n"), Ok(1));
        assert_eq!(parse_xp("0000000040028000: 0x00000002"), Ok(2));
        assert!(parse_xp("Cannot access memory").is_err());
    }

    #[test]
    fn led_patterns_from_changes() {
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        let mut q = VecDeque::new();
        assert_eq!(
            LedObserved::from_changes(&q, Duration::from_secs(4), at(0)),
            LedObserved::Unknown
        );
        q.push_back((at(0), true));
        assert_eq!(
            LedObserved::from_changes(&q, Duration::from_secs(4), at(5000)),
            LedObserved::Steady
        );
        q.push_back((at(5000), false));
        q.push_back((at(7000), true));
        q.push_back((at(8000), false));
        assert_eq!(
            LedObserved::from_changes(&q, Duration::from_secs(4), at(8500)),
            LedObserved::Blink {
                on_ms: 1000,
                off_ms: 2000
            }
        );
    }

    #[test]
    fn summary_of_runs() {
        assert_eq!(summary(&mut []), None);
        assert_eq!(summary(&mut [30.0, 10.0, 20.0]), Some((10.0, 20.0, 30.0)));
        assert_eq!(
            summary(&mut [40.0, 10.0, 20.0, 30.0]),
            Some((10.0, 25.0, 40.0))
        );
    }
}
