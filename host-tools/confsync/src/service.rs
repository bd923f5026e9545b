//! The configuration-sync service of a member: answers the `config_*` requests of the
//! management API ([`ha_mgmt_api::server::Backend`]), receives revisions from the active
//! member, runs the periodic jobs, and keeps each peer's sync status (SPEC D1–D4).
//!
//! The member's role comes from `ha-daemon` (its `mode` answer) or is fixed; a member that is
//! not active is read-only: it refuses publish and sync, and only receives.

use std::collections::BTreeMap;
use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ha_mgmt_api::client::Client;
use ha_mgmt_api::server::{error, Backend, Sink};
use ha_mgmt_api::{
    DiffReport, ErrorCode, FileStatus, Mode, PeerSyncStatus, Progress, Reply, Request, SyncReport,
    SyncState, SynctestReport,
};

use crate::jobs::Job;
use crate::protocol::SyncError;
use crate::store::{Role, Store, StoreError};
use crate::sync::{self, Probe, PushReport, SyncFailure};
use crate::wire::{Security, Wire, WireError};

/// How long connecting to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long one read or write on a peer session may block (a stalled peer fails the session
/// rather than hanging the operator's command).
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest file `diff` renders line by line; bigger or binary files get hashes only.
pub const MAX_DIFF_BYTES: usize = 1 << 20;

/// A peer's sync endpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerAddr {
    /// The peer's serial.
    pub serial: String,
    /// Its receiver's TCP address (`IP:PORT`).
    pub addr: String,
}

/// Where the member's role comes from.
#[derive(Clone, Debug)]
pub enum RoleSource {
    /// Fixed (tests, a lone store).
    Fixed(Role),
    /// Asked from `ha-daemon`'s management socket per request: active → [`Role::Active`],
    /// anything else (or no answer) → [`Role::Standby`], so a member that cannot tell is
    /// read-only.
    Daemon(PathBuf),
}

/// The service's settings.
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// Peers to push to and compare with.
    pub peers: Vec<PeerAddr>,
    /// Keys and identity for the sync sessions.
    pub security: Security,
    /// Where the role comes from.
    pub role: RoleSource,
    /// Push to every peer right after a publish (SPEC D1 "or publishes").
    pub sync_on_publish: bool,
}

/// What the service knows about one peer.
#[derive(Clone, Debug, Default)]
struct PeerRecord {
    last_sync: Option<u64>,
    problem: Option<(SyncState, String)>,
    revision: Option<u64>,
}

/// The service.
pub struct Service {
    cfg: ServiceConfig,
    store: Store,
    peers: Mutex<BTreeMap<String, PeerRecord>>,
    /// One publish, push or receive at a time on this store.
    busy: Mutex<()>,
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Classifies a failed session for the per-peer status.
fn classify(e: &SyncFailure) -> SyncState {
    match e {
        SyncFailure::Wire(WireError::Io(_)) => SyncState::NoCommunication,
        SyncFailure::Store(StoreError::Collision { .. }) => SyncState::Collision,
        SyncFailure::Protocol(SyncError::Remote(r)) if r.contains("collision") => {
            SyncState::Collision
        }
        _ => SyncState::SyncProblem,
    }
}

fn code_of(state: SyncState) -> ErrorCode {
    match state {
        SyncState::NoCommunication => ErrorCode::Unreachable,
        SyncState::Collision => ErrorCode::Refused,
        _ => ErrorCode::Internal,
    }
}

fn store_reply(e: StoreError) -> Reply {
    match e {
        StoreError::ReadOnly => error(
            ErrorCode::Refused,
            "this member is not active: its configuration is read-only",
        ),
        StoreError::NothingToPublish => error(ErrorCode::Refused, e.to_string()),
        StoreError::BadPath(_) => error(ErrorCode::BadRequest, e.to_string()),
        StoreError::Collision { .. } => error(ErrorCode::Refused, e.to_string()),
        other => error(ErrorCode::Internal, other.to_string()),
    }
}

impl Service {
    /// A service on `store` (opened once by the caller, which cleans what a crash left).
    pub fn new(store: Store, cfg: ServiceConfig) -> Service {
        let peers = cfg
            .peers
            .iter()
            .map(|p| (p.serial.clone(), PeerRecord::default()))
            .collect();
        Service {
            cfg,
            store,
            peers: Mutex::new(peers),
            busy: Mutex::new(()),
        }
    }

    fn lock_busy(&self) -> std::sync::MutexGuard<'_, ()> {
        self.busy.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn records(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, PeerRecord>> {
        self.peers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This member's role now.
    pub fn role(&self) -> Role {
        match &self.cfg.role {
            RoleSource::Fixed(r) => *r,
            RoleSource::Daemon(path) => {
                let mode = Client::connect(path, CONNECT_TIMEOUT)
                    .and_then(|mut c| c.call(&Request::Mode, |_| {}));
                match mode {
                    Ok(Reply::Mode(m)) if m.mode == Mode::Active => Role::Active,
                    _ => Role::Standby,
                }
            }
        }
    }

    fn store_as(&self, role: Role) -> Store {
        self.store.with_role(role)
    }

    fn connect(&self, peer: &PeerAddr) -> Result<Wire<TcpStream, TcpStream>, SyncFailure> {
        let addrs: Vec<SocketAddr> = peer
            .addr
            .to_socket_addrs()
            .map_err(|e| SyncFailure::Wire(WireError::Io(e)))?
            .collect();
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    let io = |e| SyncFailure::Wire(WireError::Io(e));
                    s.set_read_timeout(Some(IO_TIMEOUT)).map_err(io)?;
                    s.set_write_timeout(Some(IO_TIMEOUT)).map_err(io)?;
                    let _ = s.set_nodelay(true);
                    let r = s.try_clone().map_err(io)?;
                    return Wire::new(r, s, self.cfg.security.clone()).map_err(io);
                }
                Err(e) => last = e,
            }
        }
        Err(SyncFailure::Wire(WireError::Io(last)))
    }

    fn record_problem(&self, serial: &str, e: &SyncFailure) -> SyncState {
        let state = classify(e);
        if let Some(r) = self.records().get_mut(serial) {
            r.problem = Some((state, e.to_string()));
        }
        state
    }

    /// Pushes the current revision to `peer`, streaming progress.
    fn push_to(
        &self,
        peer: &PeerAddr,
        out: &mut Sink,
    ) -> Result<Result<PushReport, SyncFailure>, io::Error> {
        let mut wire = match self.connect(peer) {
            Ok(w) => w,
            Err(e) => return Ok(Err(e)),
        };
        let mut out_err = None;
        let r = sync::push(&self.store, &mut wire, |p| {
            if out_err.is_none() {
                let reply = Reply::Progress(Progress {
                    peer: peer.serial.clone(),
                    phase: p.phase.to_string(),
                    done_files: p.done_files,
                    total_files: p.total_files,
                    done_bytes: p.done_bytes,
                    total_bytes: p.total_bytes,
                });
                // Progress every 100 files keeps the operator's stream readable.
                if p.phase != "transfer" || p.done_files % 100 == 0 || p.done_files == p.total_files
                {
                    if let Err(e) = out(&reply) {
                        out_err = Some(e);
                    }
                }
            }
        });
        if let Some(e) = out_err {
            return Err(e);
        }
        match &r {
            Ok(rep) => {
                if let Some(rec) = self.records().get_mut(&peer.serial) {
                    rec.last_sync = Some(now_s());
                    rec.problem = None;
                    rec.revision = Some(rep.revision);
                }
            }
            Err(e) => {
                self.record_problem(&peer.serial, e);
            }
        }
        Ok(r)
    }

    /// Probes `peer` (what it runs, what it lacks).
    fn probe(&self, peer: &PeerAddr) -> Result<Probe, SyncFailure> {
        let r = self
            .connect(peer)
            .and_then(|mut w| sync::probe(&self.store, &mut w));
        match &r {
            Ok(p) => {
                if let Some(rec) = self.records().get_mut(&peer.serial) {
                    rec.revision = p.peer_revision;
                }
            }
            Err(e) => {
                self.record_problem(&peer.serial, e);
            }
        }
        r
    }

    fn selected(&self, peer: Option<String>) -> Result<Vec<PeerAddr>, Box<Reply>> {
        match peer {
            None => Ok(self.cfg.peers.clone()),
            Some(s) => self
                .cfg
                .peers
                .iter()
                .find(|p| p.serial == s)
                .cloned()
                .map(|p| vec![p])
                .ok_or_else(|| Box::new(error(ErrorCode::NotFound, format!("no peer {s}")))),
        }
    }

    /// Pushes to `peers`; the final reply sums the sessions, or names the first failure.
    fn sync_peers(&self, peers: Vec<PeerAddr>, out: &mut Sink) -> io::Result<Reply> {
        if peers.is_empty() {
            return Ok(error(ErrorCode::NotFound, "this member has no peer"));
        }
        let started = Instant::now();
        let mut total = SyncReport {
            peer: String::new(),
            revision: 0,
            files_total: 0,
            files_sent: 0,
            bytes_sent: 0,
            elapsed_ms: 0,
        };
        let mut failures = Vec::new();
        let mut names = Vec::new();
        for p in &peers {
            match self.push_to(p, out)? {
                Ok(r) => {
                    names.push(p.serial.clone());
                    total.revision = r.revision;
                    total.files_total = r.files_total;
                    total.files_sent += r.files_sent;
                    total.bytes_sent += r.bytes_sent;
                }
                Err(e) => failures.push((p.serial.clone(), classify(&e), e.to_string())),
            }
        }
        if let Some((serial, state, msg)) = failures.first() {
            let mut text = format!("sync to {serial} failed: {msg}");
            if failures.len() > 1 {
                text.push_str(&format!(" (and {} more peer(s))", failures.len() - 1));
            }
            return Ok(error(code_of(*state), text));
        }
        total.peer = names.join(",");
        total.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(Reply::SyncDone(total))
    }

    /// Runs one periodic job (SPEC D2): publishes the job's paths if they changed in the
    /// draft, then pushes to every peer. Nothing happens on a member that is not active.
    pub fn run_job(&self, job: &Job) -> Result<Option<u64>, String> {
        if self.role() != Role::Active {
            return Ok(None);
        }
        let _busy = self.lock_busy();
        let published = match self
            .store_as(Role::Active)
            .publish_only(&job.paths, Some(format!("periodic job {}", job.name)))
        {
            Ok(r) => Some(r.revision),
            Err(StoreError::NothingToPublish) => None,
            Err(e) => return Err(e.to_string()),
        };
        let mut sink = |_: &Reply| Ok(());
        match self.sync_peers(self.cfg.peers.clone(), &mut sink) {
            Ok(Reply::SyncDone(_)) => Ok(published),
            Ok(Reply::Error(e)) => Err(e.message),
            Ok(_) => Ok(published),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Receives one session from a connected sender (the standby side); records the sender's
    /// sync time.
    pub fn receive_from(&self, stream: TcpStream) -> Result<u64, String> {
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let r = stream.try_clone().map_err(|e| e.to_string())?;
        let mut wire =
            Wire::new(r, stream, self.cfg.security.clone()).map_err(|e| e.to_string())?;
        let _busy = self.lock_busy();
        let store = self.store_as(Role::Standby);
        let res = sync::receive(&store, &mut wire, |_| {});
        let from = wire.peer().map(|s| s.as_str().to_string());
        match res {
            Ok(rev) => {
                if let Some(f) = &from {
                    if let Some(rec) = self.records().get_mut(f) {
                        rec.last_sync = Some(now_s());
                        rec.problem = None;
                        rec.revision = Some(rev.revision);
                    }
                }
                Ok(rev.revision)
            }
            Err(e) => Err(e.to_string()),
        }
    }
}

fn line_diff(old: &[u8], new: &[u8], path: &str) -> Option<String> {
    if old.len() > MAX_DIFF_BYTES || new.len() > MAX_DIFF_BYTES {
        return None;
    }
    let (Ok(old), Ok(new)) = (std::str::from_utf8(old), std::str::from_utf8(new)) else {
        return None;
    };
    let d = similar::TextDiff::from_lines(old, new);
    Some(
        d.unified_diff()
            .context_radius(3)
            .header(&format!("peer/{path}"), &format!("local/{path}"))
            .to_string(),
    )
}

impl Backend for Service {
    fn config_publish(&self, comment: Option<String>) -> Reply {
        let role = self.role();
        let published = {
            let _busy = self.lock_busy();
            self.store_as(role).publish(comment)
        };
        match published {
            Ok(r) => {
                if self.cfg.sync_on_publish {
                    // Failures are kept in the per-peer status that info and synctest show.
                    let mut sink = |_: &Reply| Ok(());
                    let _ = self.sync_peers(self.cfg.peers.clone(), &mut sink);
                }
                Reply::Published {
                    revision: r.revision,
                    files: r.manifest.files.len() as u64,
                }
            }
            Err(e) => store_reply(e),
        }
    }

    fn config_sync(&self, peer: Option<String>, out: &mut Sink) -> io::Result<Reply> {
        if self.role() != Role::Active {
            return Ok(error(
                ErrorCode::Refused,
                "only the active member's published revision syncs; this member is not active",
            ));
        }
        let peers = match self.selected(peer) {
            Ok(p) => p,
            Err(r) => return Ok(*r),
        };
        let _busy = self.lock_busy();
        self.sync_peers(peers, out)
    }

    fn config_synctest(&self) -> Reply {
        let cur = match self.store.current() {
            Ok(c) => c,
            Err(e) => return store_reply(e),
        };
        let local_changes = match self.store.local_changes() {
            Ok(l) => l,
            Err(e) => return store_reply(e),
        };
        let role = self.role();
        let mut peers = Vec::new();
        for p in &self.cfg.peers {
            let probe = if cur.is_some() {
                Some(self.probe(p))
            } else {
                None
            };
            let rec = self.records().get(&p.serial).cloned().unwrap_or_default();
            let mut st = PeerSyncStatus {
                peer: p.serial.clone(),
                state: SyncState::Synchronized,
                revision: rec.revision.unwrap_or(0),
                unsynchronized: Vec::new(),
                last_sync: rec.last_sync,
                detail: None,
            };
            match probe {
                None => {
                    st.state = SyncState::SyncProblem;
                    st.detail = Some("nothing published on this member".into());
                }
                Some(Err(e)) => {
                    st.state = classify(&e);
                    st.detail = Some(e.to_string());
                }
                Some(Ok(pr)) => {
                    st.revision = pr.peer_revision.unwrap_or(0);
                    st.unsynchronized = pr.unsynchronized;
                    let ahead = pr.peer_revision.is_some_and(|r| r > pr.revision);
                    if ahead && role == Role::Active {
                        st.state = SyncState::Collision;
                        st.detail = Some(format!(
                            "the peer runs revision {} but this active member published {}",
                            pr.peer_revision.unwrap_or(0),
                            pr.revision
                        ));
                    } else if pr.peer_revision != Some(pr.revision) || !st.unsynchronized.is_empty()
                    {
                        st.state = SyncState::SyncProblem;
                        st.detail = Some(format!(
                            "revision {} here, {} on the peer",
                            pr.revision,
                            pr.peer_revision
                                .map(|r| r.to_string())
                                .unwrap_or_else(|| "none".into())
                        ));
                    }
                }
            }
            peers.push(st);
        }
        Reply::Synctest(SynctestReport {
            revision: cur.map(|c| c.revision).unwrap_or(0),
            local_changes,
            peers,
        })
    }

    fn config_diff(&self, path: String, peer: Option<String>) -> Reply {
        if crate::manifest::check_path(&path).is_err() {
            return error(ErrorCode::BadRequest, format!("unsafe path {path:?}"));
        }
        let peer = match self.selected(peer) {
            Ok(p) => match p.into_iter().next() {
                Some(p) => p,
                None => return error(ErrorCode::NotFound, "this member has no peer"),
            },
            Err(r) => return *r,
        };
        let cur = match self.store.current() {
            Ok(Some(c)) => c,
            Ok(None) => return error(ErrorCode::NotFound, "nothing published on this member"),
            Err(e) => return store_reply(e),
        };
        let Some(entry) = cur.manifest.files.get(&path).cloned() else {
            return error(
                ErrorCode::NotFound,
                format!("{path} is not in revision {}", cur.revision),
            );
        };
        let probe = match self.probe(&peer) {
            Ok(p) => p,
            Err(e) => {
                let st = classify(&e);
                return error(code_of(st), format!("{}: {e}", peer.serial));
            }
        };
        let local_hex = crate::hex(&entry.sha256);
        let mut rep = DiffReport {
            path: path.clone(),
            peer: peer.serial.clone(),
            status: FileStatus::Same,
            local_sha256: Some(local_hex.clone()),
            peer_sha256: None,
            diff: None,
        };
        if !probe.unsynchronized.contains(&path) {
            rep.peer_sha256 = Some(local_hex);
            return Reply::Diff(rep);
        }
        rep.status = FileStatus::Differs;
        // Revisions flow from the active member, so the peer's revision is normally one this
        // member published and still keeps: its copy of the file is the peer's.
        let old = probe
            .peer_revision
            .and_then(|n| self.store.revision(n).ok().map(|r| (n, r)));
        if let Some((n, old_rev)) = old {
            match old_rev.manifest.files.get(&path) {
                None => rep.status = FileStatus::OnlyLocal,
                Some(e) => {
                    rep.peer_sha256 = Some(crate::hex(&e.sha256));
                    let a = std::fs::read(self.store.tree(n).join(&path));
                    let b = std::fs::read(self.store.tree(cur.revision).join(&path));
                    if let (Ok(a), Ok(b)) = (a, b) {
                        rep.diff = line_diff(&a, &b, &path);
                    }
                }
            }
        }
        Reply::Diff(rep)
    }
}
