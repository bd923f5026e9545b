//! Test wire: relays the HA links of QEMU members over loopback UDP, with per-direction
//! impairments.
//!
//! One hub per link:
//! - **main**: raw Ethernet frames, one per datagram (QEMU `-nic socket,udp=...,localaddr=...`);
//! - **backup**: UART bytes (QEMU `-serial udp:...` sends one datagram per byte). The wire
//!   gathers a sender's bytes into one datagram per frame (up to a frame delimiter, a pause of
//!   [`GATHER_PAUSE`] or [`GATHER_MAX`] bytes) before the impairments and delivery. Delivered
//!   one byte per datagram, a receiving QEMU that is not scheduled for a few tens of
//!   milliseconds overflows its socket's receive buffer (each one-byte datagram costs the kernel
//!   close to a kilobyte) and loses bytes, which a UART with a FIFO on a real board would not:
//!   the soak saw hundreds of thousands of such drops. QEMU's UDP chardev keeps the rest of a
//!   datagram until its UART takes it, so nothing is lost on the way in. Loss and cut act per
//!   gathered chunk (a lost chunk is a damaged frame, as on a noisy line).
//!
//! For each member `i` and each link the wire binds one UDP socket (the member's "wire port"):
//! the member's QEMU sends to it and receives from it (QEMU's UDP chardev connects its socket,
//! so member `i` must only ever receive from its own wire port). A datagram from member `i` is
//! repeated to every other member `j` (a hub: ARP broadcasts work), subject to the impairment
//! of direction `i → j` on that link: cut, loss percentage, delay and jitter. Order is kept per
//! direction (a UART byte stream must not be reordered), so jitter only stretches gaps.
//!
//! The wire runs in the caller's process ([`Wire::start`]); the `ha-testwire` binary runs it
//! standalone. Both can serve a control socket ([`Wire::serve_control`], JSON lines, see
//! [`Request`]) that [`Client`] speaks.

#![warn(missing_docs)]

use std::collections::BinaryHeap;
use std::io::{self, BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// How often blocked threads look at the stop flag.
const POLL: Duration = Duration::from_millis(50);
/// Largest datagram relayed: an Ethernet frame (1514) with room to spare.
const MAX_DATAGRAM: usize = 2048;
/// Backup link: a gathered chunk is sent on after this long without a new byte.
pub const GATHER_PAUSE: Duration = Duration::from_micros(500);
/// Backup link: largest gathered chunk, bytes (QEMU's UDP chardev reads up to 4 KiB at once).
pub const GATHER_MAX: usize = 1024;
/// The UART frame delimiter (COBS): a chunk is sent on at a delimiter that closes a frame.
const DELIMITER: u8 = 0;
/// Receive buffer asked for each wire socket, bytes (without root the kernel caps it at
/// `rmem_max`): room for the bursts of one-byte datagrams of the backup link while a relay
/// thread waits for a core.
const WIRE_RCVBUF: usize = 4 << 20;
/// Longest control line accepted, bytes (a request is well under 200).
const MAX_LINE: usize = 4096;
/// Most datagrams waiting for their delay per hub; beyond that new ones are dropped (counted
/// as `dropped_queue`), which keeps a 1 s delay on a flooded link bounded in memory.
const MAX_QUEUED: usize = 65_536;

/// Which HA link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// The Ethernet (LAN9118) link.
    Main,
    /// The serial (UART2) link.
    Backup,
}

impl LinkKind {
    /// Both links.
    pub const ALL: [LinkKind; 2] = [LinkKind::Main, LinkKind::Backup];

    fn index(self) -> usize {
        match self {
            LinkKind::Main => 0,
            LinkKind::Backup => 1,
        }
    }
}

/// The impairment of one direction of one link. The default is a perfect wire.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Impair {
    /// Nothing passes.
    pub cut: bool,
    /// Percentage of datagrams dropped at random (0..=100).
    pub loss_pct: f64,
    /// One-way delay, milliseconds.
    pub delay_ms: u64,
    /// Extra delay drawn uniformly from 0..=jitter_ms per datagram (order is kept).
    pub jitter_ms: u64,
}

/// Counters of one direction of one link.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DirStats {
    /// Datagrams delivered.
    pub forwarded: u64,
    /// Dropped because the direction is cut.
    pub dropped_cut: u64,
    /// Dropped by the loss percentage.
    pub dropped_loss: u64,
    /// Dropped because too many were waiting for their delay.
    pub dropped_queue: u64,
}

/// Counters of one direction, as reported by [`Wire::stats`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DirReport {
    /// Link.
    pub link: LinkKind,
    /// Sending member (index).
    pub from: usize,
    /// Receiving member (index).
    pub to: usize,
    /// Current impairment.
    pub impair: Impair,
    /// Counters.
    pub stats: DirStats,
}

/// Errors of the wire and its control interface.
#[derive(Debug)]
pub enum WireError {
    /// A socket operation failed.
    Io(io::Error),
    /// A member index out of range.
    NoSuchMember(usize),
    /// An impairment out of range.
    BadImpair(String),
    /// The control peer sent something that is not a request / response.
    Protocol(String),
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "test wire: {e}"),
            WireError::NoSuchMember(i) => write!(f, "test wire: no member {i}"),
            WireError::BadImpair(s) => write!(f, "test wire: bad impairment: {s}"),
            WireError::Protocol(s) => write!(f, "test wire control: {s}"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// Where each member's QEMU listens, per link (`localaddr=` of `-nic socket`, the local side
/// of `-serial udp:`). `None` for a link the member does not have.
#[derive(Clone, Debug, Default)]
pub struct WireConfig {
    /// Member main-link addresses.
    pub main: Vec<SocketAddr>,
    /// Member backup-link addresses.
    pub backup: Vec<SocketAddr>,
}

/// A datagram waiting for its due time.
struct Pending {
    due: Instant,
    seq: u64,
    to: usize,
    bytes: Vec<u8>,
}

impl PartialEq for Pending {
    fn eq(&self, o: &Self) -> bool {
        (self.due, self.seq) == (o.due, o.seq)
    }
}
impl Eq for Pending {}
impl PartialOrd for Pending {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Pending {
    // Reversed: BinaryHeap is a max-heap, the earliest due must come out first.
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (o.due, o.seq).cmp(&(self.due, self.seq))
    }
}

/// Per-direction state of one hub.
struct HubState {
    impair: Vec<Vec<Impair>>,
    stats: Vec<Vec<DirStats>>,
    /// Due time of the last datagram queued per direction (keeps order under jitter).
    last_due: Vec<Vec<Instant>>,
    queued: usize,
    seq: u64,
    rng: fastrand::Rng,
}

struct Hub {
    wire_ports: Vec<u16>,
    state: Arc<Mutex<HubState>>,
}

fn lock(m: &Mutex<HubState>) -> MutexGuard<'_, HubState> {
    // A relay thread that panicked leaves consistent counters behind; keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running test wire. Dropping it stops every thread it started.
pub struct Wire {
    members: usize,
    hubs: Vec<Hub>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
    control: Option<PathBuf>,
}

impl std::fmt::Debug for Wire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wire")
            .field("members", &self.members)
            .field("main_ports", &self.hubs[0].wire_ports)
            .field("backup_ports", &self.hubs[1].wire_ports)
            .finish()
    }
}

impl Wire {
    /// Binds a wire port per member and link on 127.0.0.1 and starts relaying. `cfg.main`
    /// and `cfg.backup` must list the same number of members (or `backup` may be empty: no
    /// backup link).
    pub fn start(cfg: &WireConfig) -> Result<Wire, WireError> {
        let members = cfg.main.len();
        if !cfg.backup.is_empty() && cfg.backup.len() != members {
            return Err(WireError::BadImpair(
                "main and backup must list the same members".into(),
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let mut wire = Wire {
            members,
            hubs: Vec::new(),
            stop: stop.clone(),
            threads: Vec::new(),
            control: None,
        };
        for (kind, addrs) in [(LinkKind::Main, &cfg.main), (LinkKind::Backup, &cfg.backup)] {
            let hub = wire.start_hub(kind, addrs)?;
            wire.hubs.push(hub);
        }
        Ok(wire)
    }

    fn start_hub(&mut self, kind: LinkKind, addrs: &[SocketAddr]) -> Result<Hub, WireError> {
        let n = addrs.len();
        let now = Instant::now();
        let state = Arc::new(Mutex::new(HubState {
            impair: vec![vec![Impair::default(); n]; n],
            stats: vec![vec![DirStats::default(); n]; n],
            last_due: vec![vec![now; n]; n],
            queued: 0,
            seq: 0,
            rng: fastrand::Rng::new(),
        }));
        let mut sockets = Vec::new();
        for _ in 0..n {
            let s = UdpSocket::bind("127.0.0.1:0")?;
            s.set_read_timeout(Some(POLL))?;
            // Past `rmem_max` when allowed (root), else as much as it allows; best effort: a
            // smaller buffer only makes drops under load more likely.
            use nix::sys::socket::{setsockopt, sockopt};
            if setsockopt(&s, sockopt::RcvBufForce, &WIRE_RCVBUF).is_err() {
                let _ = setsockopt(&s, sockopt::RcvBuf, &WIRE_RCVBUF);
            }
            sockets.push(s);
        }
        let wire_ports = sockets
            .iter()
            .map(|s| s.local_addr().map(|a| a.port()))
            .collect::<io::Result<Vec<_>>>()?;
        if n == 0 {
            return Ok(Hub { wire_ports, state });
        }
        let (tx, rx) = mpsc::channel::<Pending>();
        let out = sockets
            .iter()
            .map(UdpSocket::try_clone)
            .collect::<io::Result<Vec<_>>>()?;
        for (from, sock) in sockets.into_iter().enumerate() {
            let (state, tx, stop) = (state.clone(), tx.clone(), self.stop.clone());
            self.threads.push(std::thread::spawn(move || {
                receive(kind, from, sock, &state, &tx, &stop)
            }));
        }
        let (st, stop, addrs) = (state.clone(), self.stop.clone(), addrs.to_vec());
        self.threads.push(std::thread::spawn(move || {
            deliver(rx, &out, &addrs, &st, &stop)
        }));
        Ok(Hub { wire_ports, state })
    }

    /// Number of members.
    pub fn members(&self) -> usize {
        self.members
    }

    /// The wire port of member `i` on `link` (where its QEMU sends), if the link exists.
    pub fn wire_port(&self, link: LinkKind, i: usize) -> Option<u16> {
        self.hubs[link.index()].wire_ports.get(i).copied()
    }

    /// Sets the impairment of every selected direction: `link` `None` = both links, `from` /
    /// `to` `None` = every member.
    pub fn set(
        &self,
        link: Option<LinkKind>,
        from: Option<usize>,
        to: Option<usize>,
        impair: Impair,
    ) -> Result<(), WireError> {
        if !(0.0..=100.0).contains(&impair.loss_pct) {
            return Err(WireError::BadImpair(format!(
                "loss_pct {} not in 0..=100",
                impair.loss_pct
            )));
        }
        for i in [from, to].into_iter().flatten() {
            if i >= self.members {
                return Err(WireError::NoSuchMember(i));
            }
        }
        for l in LinkKind::ALL {
            if link.is_some_and(|k| k != l) {
                continue;
            }
            let mut st = lock(&self.hubs[l.index()].state);
            let n = st.impair.len();
            for f in 0..n {
                for t in 0..n {
                    if f != t && from.is_none_or(|x| x == f) && to.is_none_or(|x| x == t) {
                        st.impair[f][t] = impair;
                    }
                }
            }
        }
        Ok(())
    }

    /// Every direction's impairment and counters.
    pub fn stats(&self) -> Vec<DirReport> {
        let mut out = Vec::new();
        for l in LinkKind::ALL {
            let st = lock(&self.hubs[l.index()].state);
            let n = st.impair.len();
            for f in 0..n {
                for t in (0..n).filter(|&t| t != f) {
                    out.push(DirReport {
                        link: l,
                        from: f,
                        to: t,
                        impair: st.impair[f][t],
                        stats: st.stats[f][t],
                    });
                }
            }
        }
        out
    }

    /// Serves the control interface on a unix socket at `path` (JSON lines, see
    /// [`Request`]) until the wire is dropped. The socket file is removed on drop.
    pub fn serve_control(self: &Arc<Self>, path: &Path) -> Result<JoinHandle<()>, WireError> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        listener.set_nonblocking(true)?;
        let wire = Arc::downgrade(self);
        let stop = self.stop.clone();
        Ok(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let (w, stop) = (wire.clone(), stop.clone());
                        std::thread::spawn(move || serve_conn(&w, conn, &stop));
                    }
                    Err(_) => std::thread::sleep(POLL),
                }
            }
        }))
    }

    /// Remembers the control socket's path so that drop removes it.
    pub fn set_control_path(&mut self, path: PathBuf) {
        self.control = Some(path);
    }

    /// Answers one control request.
    pub fn handle(&self, req: &Request) -> Response {
        let result = match req {
            Request::Set {
                link,
                from,
                to,
                impair,
            } => self.set(*link, *from, *to, *impair),
            Request::Cut { link, from, to } => self.set(
                *link,
                *from,
                *to,
                Impair {
                    cut: true,
                    ..Impair::default()
                },
            ),
            Request::Restore { link, from, to } => self.set(*link, *from, *to, Impair::default()),
            Request::Stats => Ok(()),
            Request::Ports => Ok(()),
        };
        match result {
            Err(e) => Response {
                ok: false,
                error: Some(e.to_string()),
                ..Response::default()
            },
            Ok(()) => match req {
                Request::Stats => Response {
                    ok: true,
                    stats: self.stats(),
                    ..Response::default()
                },
                Request::Ports => Response {
                    ok: true,
                    main_ports: self.hubs[0].wire_ports.clone(),
                    backup_ports: self.hubs[1].wire_ports.clone(),
                    ..Response::default()
                },
                _ => Response {
                    ok: true,
                    ..Response::default()
                },
            },
        }
    }
}

impl Drop for Wire {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if let Some(p) = self.control.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Reads the next datagram of a main link, or the next gathered chunk of a backup link (see
/// the module documentation), into `buf`; `None` when nothing arrived within [`POLL`].
fn next_chunk(kind: LinkKind, sock: &UdpSocket, buf: &mut [u8; MAX_DATAGRAM]) -> Option<usize> {
    // The socket waits up to POLL (set at bind); only a backup chunk's gathering shortens it,
    // and puts it back before returning.
    let mut len = sock.recv_from(buf).ok()?.0;
    if kind == LinkKind::Main {
        return Some(len);
    }
    let _ = sock.set_read_timeout(Some(GATHER_PAUSE));
    let closes_frame = |chunk: &[u8]| chunk.len() > 1 && chunk.last() == Some(&DELIMITER);
    while len < GATHER_MAX && !closes_frame(&buf[..len]) {
        match sock.recv_from(&mut buf[len..]) {
            Ok((n, _)) => len += n,
            Err(_) => break,
        }
    }
    let _ = sock.set_read_timeout(Some(POLL));
    Some(len)
}

/// Receives member `from`'s datagrams (gathered into chunks on a backup link) and queues a
/// copy for every other member.
fn receive(
    kind: LinkKind,
    from: usize,
    sock: UdpSocket,
    state: &Mutex<HubState>,
    tx: &Sender<Pending>,
    stop: &AtomicBool,
) {
    let mut buf = [0u8; MAX_DATAGRAM];
    while !stop.load(Ordering::Relaxed) {
        let Some(len) = next_chunk(kind, &sock, &mut buf) else {
            continue;
        };
        let now = Instant::now();
        let mut st = lock(state);
        let n = st.impair.len();
        for to in (0..n).filter(|&t| t != from) {
            let imp = st.impair[from][to];
            if imp.cut {
                st.stats[from][to].dropped_cut += 1;
                continue;
            }
            if imp.loss_pct > 0.0 && st.rng.f64() * 100.0 < imp.loss_pct {
                st.stats[from][to].dropped_loss += 1;
                continue;
            }
            if st.queued >= MAX_QUEUED {
                st.stats[from][to].dropped_queue += 1;
                continue;
            }
            let jitter = if imp.jitter_ms > 0 {
                st.rng.u64(0..=imp.jitter_ms)
            } else {
                0
            };
            let due =
                (now + Duration::from_millis(imp.delay_ms + jitter)).max(st.last_due[from][to]);
            st.last_due[from][to] = due;
            st.queued += 1;
            st.seq += 1;
            let p = Pending {
                due,
                seq: st.seq,
                to,
                bytes: buf[..len].to_vec(),
            };
            st.stats[from][to].forwarded += 1;
            if tx.send(p).is_err() {
                return;
            }
        }
    }
}

/// Sends queued datagrams when they are due, from the receiver's wire port.
fn deliver(
    rx: Receiver<Pending>,
    out: &[UdpSocket],
    addrs: &[SocketAddr],
    state: &Mutex<HubState>,
    stop: &AtomicBool,
) {
    let mut heap = BinaryHeap::<Pending>::new();
    while !stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        while heap.peek().is_some_and(|p| p.due <= now) {
            if let Some(p) = heap.pop() {
                // A member whose QEMU is gone: the datagram is simply lost, as on a wire.
                let _ = out[p.to].send_to(&p.bytes, addrs[p.to]);
                lock(state).queued -= 1;
            }
        }
        let wait = heap
            .peek()
            .map(|p| p.due.saturating_duration_since(now).min(POLL))
            .unwrap_or(POLL);
        match rx.recv_timeout(wait) {
            Ok(p) => heap.push(p),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

fn serve_conn(wire: &Weak<Wire>, conn: UnixStream, stop: &AtomicBool) {
    let _ = conn.set_read_timeout(Some(POLL));
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    let mut line = String::new();
    while !stop.load(Ordering::Relaxed) {
        match reader.read_line(&mut line) {
            Ok(0) => return,
            Ok(_) if line.ends_with('\n') => {
                let resp = match serde_json::from_str::<Request>(line.trim()) {
                    Ok(req) => match wire.upgrade() {
                        Some(w) => w.handle(&req),
                        None => return,
                    },
                    Err(e) => Response {
                        ok: false,
                        error: Some(format!("bad request: {e}")),
                        ..Response::default()
                    },
                };
                line.clear();
                let Ok(mut text) = serde_json::to_string(&resp) else {
                    return;
                };
                text.push('\n');
                if out.write_all(text.as_bytes()).is_err() {
                    return;
                }
            }
            Ok(_) | Err(_) if line.len() > MAX_LINE => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// A control request: one JSON object per line, e.g.
/// `{"cmd":"cut","link":"main","from":0,"to":1}`,
/// `{"cmd":"set","link":"main","impair":{"loss_pct":20,"delay_ms":100}}`,
/// `{"cmd":"restore"}`, `{"cmd":"stats"}`. A missing `link`/`from`/`to` selects all.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "lowercase")]
pub enum Request {
    /// Set the impairment of the selected directions.
    Set {
        /// Link, or both.
        #[serde(default)]
        link: Option<LinkKind>,
        /// Sender, or all.
        #[serde(default)]
        from: Option<usize>,
        /// Receiver, or all.
        #[serde(default)]
        to: Option<usize>,
        /// The impairment.
        #[serde(default)]
        impair: Impair,
    },
    /// Cut the selected directions.
    Cut {
        /// Link, or both.
        #[serde(default)]
        link: Option<LinkKind>,
        /// Sender, or all.
        #[serde(default)]
        from: Option<usize>,
        /// Receiver, or all.
        #[serde(default)]
        to: Option<usize>,
    },
    /// Make the selected directions perfect again.
    Restore {
        /// Link, or both.
        #[serde(default)]
        link: Option<LinkKind>,
        /// Sender, or all.
        #[serde(default)]
        from: Option<usize>,
        /// Receiver, or all.
        #[serde(default)]
        to: Option<usize>,
    },
    /// Counters of every direction.
    Stats,
    /// The wire ports of every member.
    Ports,
}

/// The answer to a [`Request`].
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// True when the request was applied.
    pub ok: bool,
    /// Why not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// For `stats`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stats: Vec<DirReport>,
    /// For `ports`: main-link wire ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub main_ports: Vec<u16>,
    /// For `ports`: backup-link wire ports.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub backup_ports: Vec<u16>,
}

/// A client of the control socket.
#[derive(Debug)]
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

impl Client {
    /// Connects to the control socket at `path`; every answer is awaited at most 5 s.
    pub fn connect(path: &Path) -> Result<Client, WireError> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        Ok(Client {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
        })
    }

    /// Sends one request and returns the answer; a refused request is an error.
    pub fn request(&mut self, req: &Request) -> Result<Response, WireError> {
        let mut text =
            serde_json::to_string(req).map_err(|e| WireError::Protocol(e.to_string()))?;
        text.push('\n');
        self.writer.write_all(text.as_bytes())?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        let resp: Response =
            serde_json::from_str(line.trim()).map_err(|e| WireError::Protocol(e.to_string()))?;
        if resp.ok {
            Ok(resp)
        } else {
            Err(WireError::Protocol(
                resp.error.unwrap_or_else(|| "refused".into()),
            ))
        }
    }

    /// Cuts the selected directions.
    pub fn cut(
        &mut self,
        link: Option<LinkKind>,
        from: Option<usize>,
        to: Option<usize>,
    ) -> Result<(), WireError> {
        self.request(&Request::Cut { link, from, to }).map(drop)
    }

    /// Restores the selected directions.
    pub fn restore(
        &mut self,
        link: Option<LinkKind>,
        from: Option<usize>,
        to: Option<usize>,
    ) -> Result<(), WireError> {
        self.request(&Request::Restore { link, from, to }).map(drop)
    }

    /// Sets an impairment on the selected directions.
    pub fn set(
        &mut self,
        link: Option<LinkKind>,
        from: Option<usize>,
        to: Option<usize>,
        impair: Impair,
    ) -> Result<(), WireError> {
        self.request(&Request::Set {
            link,
            from,
            to,
            impair,
        })
        .map(drop)
    }

    /// Every direction's impairment and counters.
    pub fn stats(&mut self) -> Result<Vec<DirReport>, WireError> {
        self.request(&Request::Stats).map(|r| r.stats)
    }
}
