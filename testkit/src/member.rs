//! One booted member as the harness owns it: its QEMU process (ended by its own pid), its
//! board simulator, its captured UART0 log, its status LED reads, and its host link played
//! by the harness as the member's main CPU ([`HostView`] records what arrived).

use std::collections::VecDeque;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ha_boardsim::BoardSim;
use ha_hal::bridge::SensorKind;
use ha_hostlink::HostLink;
use ha_proto::config_block::ConfigBlock;
use ha_proto::msg::host::{CountersReport, EventReport, HostMsg, StatusReport};
use ha_proto::msg::member::AdminCommand;
use ha_proto::msg::{Role, Serial};
use ha_qemu::{MemberCmd, Uart0};

use crate::common::{
    decode_defmt, lock, push_bounded, Result, MAX_LOG, MAX_RECORDS, SOCKET_TIMEOUT, STATUS_PERIOD,
};
use crate::events::EventLedger;
use crate::led::{connect_qmp, led_loop, LedObserved};

/// The details and counters are asked for every this many status requests (2 s).
const DETAILS_ROUNDS: u32 = 4;

/// How often a hole in the controller's event numbers is asked for again.
const REPLAY_PERIOD: Duration = Duration::from_millis(200);

/// What the harness, as a member's main CPU, has received from its controller.
#[derive(Debug, Default)]
pub struct HostView {
    /// Every role change the controller's `Roles` reports showed (domain id, new role), with
    /// its arrival; the periodic re-assertions of an unchanged role are not repeated here.
    pub decisions: VecDeque<(Instant, u8, Role)>,
    /// Every `Event` with its arrival (the newest `MAX_RECORDS`).
    pub events: VecDeque<(Instant, EventReport)>,
    /// The event numbers received since the host link connected, complete or not: what a
    /// count taken from the events can rely on (a replay fills the holes a stalled line
    /// left).
    pub ledger: EventLedger,
    /// Frames the host link accepted, and those it refused by reason (as of the last status
    /// period).
    pub link_frames: (u64, std::collections::BTreeMap<&'static str, u64>),
    /// The latest `Counters` (what the controller counted since boot) and its arrival.
    pub counters: Option<(Instant, CountersReport)>,
    /// The latest `Status` and its arrival.
    pub status: Option<(Instant, StatusReport)>,
    /// The host link is connected.
    pub connected: bool,
    /// Probe requests answered (peer, answer).
    pub probes: VecDeque<(Instant, Serial, bool)>,
    /// Host-link round trips (keepalive ping sent → its pong received), newest last.
    pub rtts: VecDeque<Duration>,
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
pub(crate) type ProbeFn = Arc<dyn Fn(usize, Serial) -> bool + Send + Sync>;

/// The data network model shared by the members' probe answers.
pub(crate) struct DataNet {
    pub(crate) alive: Vec<AtomicBool>,
    /// `cut[i][j]`: member i cannot reach member j over the data interfaces.
    pub(crate) cut: Mutex<Vec<Vec<bool>>>,
    pub(crate) serials: Vec<String>,
}

impl DataNet {
    pub(crate) fn probe(&self, from: usize, peer: Serial) -> bool {
        let Some(j) = self.serials.iter().position(|s| s == peer.as_str()) else {
            return false;
        };
        self.alive[j].load(Ordering::Relaxed) && !lock(&self.cut)[from][j]
    }
}

/// One booted member.
pub struct Member {
    pub(crate) index: usize,
    pub(crate) serial: String,
    pub(crate) dir: PathBuf,
    pub(crate) cfg: ConfigBlock,
    pub(crate) qemu: Option<Child>,
    pub(crate) pid: u32,
    pub(crate) killed_at: Option<Instant>,
    pub(crate) sim: Option<BoardSim>,
    pub(crate) stop: Arc<AtomicBool>,
    pub(crate) threads: Vec<JoinHandle<()>>,
    pub(crate) log: Arc<Mutex<Vec<u8>>>,
    pub(crate) leds: Arc<Mutex<VecDeque<(Instant, bool)>>>,
    pub(crate) view: Arc<Mutex<HostView>>,
    pub(crate) to_host: Sender<HostMsg>,
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

    /// The controller's counters as of a report that arrived after `after`, waiting up to
    /// `timeout` for one (the host loop asks every `DETAILS_ROUNDS` × [`STATUS_PERIOD`]).
    pub fn counters_after(&self, after: Instant, timeout: Duration) -> Result<CountersReport> {
        let end = Instant::now() + timeout;
        loop {
            if let Some((at, c)) = self.host().counters {
                if at > after {
                    return Ok(c);
                }
            }
            if Instant::now() >= end {
                return Err(format!(
                    "{}: no counters from the controller within {timeout:?}",
                    self.serial
                ));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
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

    /// True when the captured log reached its bound (`MAX_LOG`) and later frames were
    /// not kept.
    pub fn log_truncated(&self) -> bool {
        lock(&self.log).len() + 4096 > MAX_LOG
    }

    /// How many defmt frames the captured log holds (each ends with a zero byte), decoded or
    /// not: more frames than decoded lines means some were cut when the log line stalled.
    pub fn log_frames(&self) -> usize {
        lock(&self.log)
            .split(|b| *b == 0)
            .filter(|f| !f.is_empty())
            .count()
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

    pub(crate) fn kill(&mut self) {
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

pub(crate) struct Ports {
    pub(crate) wire_main: u16,
    pub(crate) member_main: u16,
    /// (wire port, member port) of the backup link.
    pub(crate) backup: Option<(u16, u16)>,
}

impl Member {
    pub(crate) fn boot(
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
pub(crate) fn capture(mut out: impl Read, log: &Mutex<Vec<u8>>) {
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
pub(crate) fn host_loop(
    index: usize,
    mut link: HostLink,
    outbox: Receiver<HostMsg>,
    view: &Mutex<HostView>,
    probe: &ProbeFn,
    stop: &AtomicBool,
) {
    {
        let mut v = lock(view);
        v.connected = true;
        // A new connection is a new controller boot: its events are numbered from 0 again.
        v.ledger = EventLedger::default();
        v.counters = None;
    }
    let mut next_replay: Option<Instant> = None;
    let mut next_status = Instant::now();
    let mut status_rounds = 0u32;
    let mut next_keepalive = Instant::now();
    let mut nonce = 0u32;
    let mut ping_sent: Option<(u32, Instant)> = None;
    while !stop.load(Ordering::Relaxed) {
        // The main CPU's keepalive, as the daemon sends it: a controller whose main CPU
        // falls silent takes its member out of the election.
        if Instant::now() >= next_keepalive {
            next_keepalive = Instant::now() + Duration::from_millis(100);
            nonce = nonce.wrapping_add(1);
            if link.send(&HostMsg::Ping { nonce }).is_ok() {
                ping_sent = Some((nonce, Instant::now()));
            }
        }
        while let Ok(msg) = outbox.try_recv() {
            if link.send(&msg).is_err() {
                break;
            }
        }
        if Instant::now() >= next_status {
            next_status = Instant::now() + STATUS_PERIOD;
            let _ = link.send(&HostMsg::StatusRequest);
            // Every DETAILS_ROUNDS-th round: the details (their next event number shows
            // events lost at the tail of the stream) and the counters, kept off a line that
            // a fast profile's events may saturate.
            if status_rounds % DETAILS_ROUNDS == 0 {
                let _ = link.send(&HostMsg::DetailsRequest);
                let _ = link.send(&HostMsg::CountersRequest);
            }
            status_rounds = status_rounds.wrapping_add(1);
            lock(view).link_frames = (link.codec().accepted(), link.codec().rejects().clone());
        }
        let missing = lock(view).ledger.first_missing(Instant::now());
        if let Some(seq) = missing {
            if next_replay.is_none_or(|t| Instant::now() >= t) {
                next_replay = Some(Instant::now() + REPLAY_PERIOD);
                let _ = link.send(&HostMsg::EventsSince { seq });
            }
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
                        let mut v = lock(view);
                        v.ledger.record(&ev);
                        push_bounded(&mut v.events, (now, ev), MAX_RECORDS)
                    }
                    HostMsg::Details(d) => {
                        let mut v = lock(view);
                        if d.next_event < v.ledger.known_end() {
                            // Numbers went back: the controller rebooted under this link.
                            v.ledger = EventLedger::default();
                        }
                        v.ledger.known_up_to(d.next_event, now)
                    }
                    HostMsg::Status(st) => lock(view).status = Some((now, st)),
                    HostMsg::Counters(c) => lock(view).counters = Some((now, c)),
                    HostMsg::ProbeRequest { peer, .. } => {
                        let alive = probe(index, peer);
                        let _ = link.send(&HostMsg::ProbeResult { peer, alive });
                        push_bounded(&mut lock(view).probes, (now, peer, alive), MAX_RECORDS);
                    }
                    HostMsg::Ping { nonce } => {
                        let _ = link.send(&HostMsg::Pong { nonce });
                    }
                    HostMsg::Pong { nonce } => {
                        if let Some((n, at)) = ping_sent {
                            if n == nonce {
                                ping_sent = None;
                                push_bounded(&mut lock(view).rtts, now - at, MAX_RECORDS);
                            }
                        }
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
