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
use crate::sync::{self, Probe, PushReport, Received, SyncFailure};
use crate::wire::{Security, Wire, WireError};
use ha_proto::msg::{Serial, MAX_MEMBERS};

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
    /// This member's own receiver address, as peers reach it (for cluster create/join).
    pub listen_addr: Option<String>,
}

/// Path, in the configuration store, of the cluster's membership document: it is published
/// and synced like any configuration, so every member and every newcomer has it.
pub const CLUSTER_FILE: &str = "ha/cluster.json";

/// The cluster's membership document ([`CLUSTER_FILE`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterDoc {
    /// Cluster id.
    pub cluster_id: u32,
    /// Every member: serial and sync receiver address.
    pub members: Vec<(String, String)>,
}

/// How a receiving session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Session {
    /// A revision was installed.
    Committed(u64),
    /// A newcomer joined (its serial).
    Joined(String),
    /// A join was refused (why).
    JoinRefused(String),
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
    peer_list: Mutex<Vec<PeerAddr>>,
    /// The keys of the sync channel; changed by a PSK rollover (`psk_rotate`).
    keyring: Mutex<ha_proto::keys::Keyring>,
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
            peer_list: Mutex::new(cfg.peers.clone()),
            keyring: Mutex::new(cfg.security.keyring.clone()),
            cfg,
            store,
            peers: Mutex::new(peers),
            busy: Mutex::new(()),
        }
    }

    /// The identity and the current keys of the sync sessions.
    pub fn security(&self) -> Security {
        let mut s = self.cfg.security.clone();
        s.keyring = self
            .keyring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        s
    }

    fn rotate_report(&self, phase: &str) -> Reply {
        let k = self.keyring.lock().unwrap_or_else(|p| p.into_inner());
        Reply::Rotate(ha_mgmt_api::RotateReport {
            phase: phase.into(),
            sealing_key_id: k.sealing().key_id(),
            previous_key_id: k.previous_key_id(),
            confirmed: vec![self.me()],
            pending: Vec::new(),
        })
    }

    /// The current peers (changed by cluster join and remove).
    pub fn peer_list(&self) -> Vec<PeerAddr> {
        self.peer_list
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_peers(&self, peers: Vec<PeerAddr>) {
        let mut recs = self.records();
        for p in &peers {
            recs.entry(p.serial.clone()).or_default();
        }
        recs.retain(|s, _| peers.iter().any(|p| &p.serial == s));
        drop(recs);
        *self.peer_list.lock().unwrap_or_else(|p| p.into_inner()) = peers;
    }

    fn me(&self) -> String {
        self.cfg.security.me.as_str().to_string()
    }

    /// The cluster document of the current revision, if a cluster was created.
    pub fn cluster_doc(&self) -> Result<Option<ClusterDoc>, String> {
        match self.store.read(CLUSTER_FILE) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{CLUSTER_FILE}: {e}")),
            Err(StoreError::Io { err, .. }) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Publishes `doc` as the new cluster document (only that file; drafts stay drafts).
    fn publish_doc(&self, doc: &ClusterDoc, comment: String) -> Result<u64, StoreError> {
        let store = self.store_as(Role::Active);
        let text =
            serde_json::to_vec_pretty(doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        store.write(CLUSTER_FILE, &text)?;
        store
            .publish_only(&[CLUSTER_FILE.to_string()], Some(comment))
            .map(|r| r.revision)
    }

    /// Checks that the key file holds this member's cluster key (without ever showing it).
    fn key_matches(&self, psk_file: &str) -> Result<(), Box<Reply>> {
        let psk = crate::wire::read_key_file(std::path::Path::new(psk_file))
            .map_err(|e| Box::new(error(ErrorCode::BadRequest, e)))?;
        let sec = self.security();
        let sealing = sec.keyring.sealing();
        let derived = ha_proto::keys::KeySet::derive(&psk, sec.cluster_id, sealing.key_id());
        let ch = ha_proto::msg::Channel::Management;
        if derived.key(ch) == sealing.key(ch) {
            Ok(())
        } else {
            Err(Box::new(error(
                ErrorCode::Refused,
                "the key file does not hold this member's cluster key",
            )))
        }
    }

    /// Answers a join request (on the receiving thread, store busy).
    fn answer_join(&self, serial: &str, addr: &str) -> crate::protocol::SyncMsg {
        use crate::protocol::SyncMsg;
        let refuse = |reason: String| SyncMsg::Failed { reason };
        if self.role() != Role::Active {
            return refuse("join through the active member: this one is not active".into());
        }
        if Serial::new(serial).is_none() || addr.parse::<SocketAddr>().is_err() {
            return refuse(format!("bad join request ({serial:?}, {addr:?})"));
        }
        let mut doc = match self.cluster_doc() {
            Ok(Some(d)) => d,
            Ok(None) => return refuse("no cluster was created on this member".into()),
            Err(e) => return refuse(e),
        };
        if let Some(m) = doc.members.iter_mut().find(|(s, _)| s == serial) {
            m.1 = addr.to_string();
        } else if doc.members.len() >= MAX_MEMBERS {
            return refuse(format!(
                "cluster full: {} of {MAX_MEMBERS} members; remove one first \
                 (hactl cluster remove --serial S)",
                doc.members.len()
            ));
        } else {
            doc.members.push((serial.to_string(), addr.to_string()));
        }
        if let Err(e) = self.publish_doc(&doc, format!("{serial} joins")) {
            if !matches!(e, StoreError::NothingToPublish) {
                return refuse(format!("cannot record the newcomer: {e}"));
            }
        }
        let me = self.me();
        self.set_peers(
            doc.members
                .iter()
                .filter(|(s, _)| *s != me)
                .map(|(s, a)| PeerAddr {
                    serial: s.clone(),
                    addr: a.clone(),
                })
                .collect(),
        );
        SyncMsg::Joined {
            cluster_id: doc.cluster_id,
            members: doc.members,
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
                    return Wire::new(r, s, self.security()).map_err(io);
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
            None => Ok(self.peer_list()),
            Some(s) => self
                .peer_list()
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
        match self.sync_peers(self.peer_list(), &mut sink) {
            Ok(Reply::SyncDone(_)) => Ok(published),
            Ok(Reply::Error(e)) => Err(e.message),
            Ok(_) => Ok(published),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Serves one incoming session: a revision from the active member (the standby side), or
    /// a newcomer's join request (the active side; the newcomer then gets the configuration).
    pub fn receive_from(&self, stream: TcpStream) -> Result<Session, String> {
        let _ = stream.set_read_timeout(Some(IO_TIMEOUT));
        let _ = stream.set_write_timeout(Some(IO_TIMEOUT));
        let r = stream.try_clone().map_err(|e| e.to_string())?;
        let mut wire = Wire::new(r, stream, self.security()).map_err(|e| e.to_string())?;
        let res = {
            let store = self.store_as(Role::Standby);
            let mut on_join = |serial: &str, addr: &str| self.answer_join(serial, addr);
            sync::receive_or_join(&store, &mut wire, |_| {}, &mut on_join, Some(&self.busy))
        };
        let from = wire.peer().map(|s| s.as_str().to_string());
        match res {
            Ok(Received::Revision(rev)) => {
                if let Some(f) = &from {
                    if let Some(rec) = self.records().get_mut(f) {
                        rec.last_sync = Some(now_s());
                        rec.problem = None;
                        rec.revision = Some(rev.revision);
                    }
                }
                Ok(Session::Committed(rev.revision))
            }
            Ok(Received::Join {
                serial,
                addr,
                accepted: true,
            }) => {
                // The newcomer receives the cluster's configuration right away.
                let peer = PeerAddr {
                    serial: serial.clone(),
                    addr,
                };
                let _busy = self.lock_busy();
                let mut sink = |_: &Reply| Ok(());
                let _ = self.sync_peers(vec![peer], &mut sink);
                Ok(Session::Joined(serial))
            }
            Ok(Received::Join { serial, .. }) => Ok(Session::JoinRefused(serial)),
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
                    let _ = self.sync_peers(self.peer_list(), &mut sink);
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
        for p in &self.peer_list() {
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
                    // Nothing to compare with: the last session's outcome says the most.
                    let (state, why) = rec.problem.clone().unwrap_or((
                        SyncState::SyncProblem,
                        "nothing published on this member".into(),
                    ));
                    st.state = state;
                    st.detail = Some(why);
                }
                Some(Err(e)) => {
                    st.state = match classify(&e) {
                        // A standby's revision offered to the active one is refused as older:
                        // that member is behind, not in collision.
                        SyncState::Collision if role == Role::Standby => SyncState::SyncProblem,
                        other => other,
                    };
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

    fn cluster_create(&self, cluster_id: u32, psk_file: String) -> Reply {
        if let Err(r) = self.key_matches(&psk_file) {
            return *r;
        }
        if cluster_id != self.cfg.security.cluster_id {
            return error(
                ErrorCode::Refused,
                format!(
                    "this member was provisioned for cluster {}, not {cluster_id}",
                    self.cfg.security.cluster_id
                ),
            );
        }
        if self.role() != Role::Active {
            return error(
                ErrorCode::Refused,
                "create the cluster on the active member",
            );
        }
        let Some(addr) = self.cfg.listen_addr.clone() else {
            return error(ErrorCode::Refused, "this service has no receiver address");
        };
        match self.cluster_doc() {
            Ok(Some(d)) => {
                return error(
                    ErrorCode::Refused,
                    format!(
                        "a cluster already exists here (id {}, {} members)",
                        d.cluster_id,
                        d.members.len()
                    ),
                )
            }
            Ok(None) => {}
            Err(e) => return error(ErrorCode::Internal, e),
        }
        let doc = ClusterDoc {
            cluster_id,
            members: vec![(self.me(), addr)],
        };
        let _busy = self.lock_busy();
        match self.publish_doc(&doc, "cluster created".into()) {
            Ok(rev) => Reply::Done {
                message: format!(
                    "cluster {cluster_id} created with {} (revision {rev})",
                    self.me()
                ),
            },
            Err(e) => store_reply(e),
        }
    }

    fn cluster_join(&self, peer: String, psk_file: String) -> Reply {
        if let Err(r) = self.key_matches(&psk_file) {
            return *r;
        }
        let Some(addr) = self.cfg.listen_addr.clone() else {
            return error(ErrorCode::Refused, "this service has no receiver address");
        };
        let target = PeerAddr {
            serial: String::new(),
            addr: peer.clone(),
        };
        let me = self.me();
        let res = self
            .connect(&target)
            .and_then(|mut w| sync::join(&mut w, &me, &addr));
        match res {
            Ok((cluster_id, members)) => {
                let n = members.len();
                self.set_peers(
                    members
                        .into_iter()
                        .filter(|(s, _)| *s != me)
                        .map(|(serial, addr)| PeerAddr { serial, addr })
                        .collect(),
                );
                Reply::Done {
                    message: format!(
                        "{me} joined cluster {cluster_id} ({n} members); its configuration \
                         follows from the active member"
                    ),
                }
            }
            Err(SyncFailure::Protocol(SyncError::Remote(reason))) => {
                let code = if reason.starts_with("cluster full") {
                    ErrorCode::ClusterFull
                } else {
                    ErrorCode::Refused
                };
                error(code, format!("{peer} refused the join: {reason}"))
            }
            Err(e) => {
                let st = classify(&e);
                error(code_of(st), format!("join through {peer}: {e}"))
            }
        }
    }

    fn cluster_remove(&self, serial: String) -> Reply {
        if self.role() != Role::Active {
            return error(ErrorCode::Refused, "remove members on the active member");
        }
        if serial == self.me() {
            return error(ErrorCode::Refused, "a member cannot remove itself");
        }
        let mut doc = match self.cluster_doc() {
            Ok(Some(d)) => d,
            Ok(None) => return error(ErrorCode::NotFound, "no cluster was created here"),
            Err(e) => return error(ErrorCode::Internal, e),
        };
        let before = doc.members.len();
        doc.members.retain(|(s, _)| *s != serial);
        if doc.members.len() == before {
            return error(ErrorCode::NotFound, format!("{serial} is not a member"));
        }
        let _busy = self.lock_busy();
        let rev = match self.publish_doc(&doc, format!("{serial} removed")) {
            Ok(r) => r,
            Err(e) => return store_reply(e),
        };
        let me = self.me();
        self.set_peers(
            doc.members
                .iter()
                .filter(|(s, _)| *s != me)
                .map(|(s, a)| PeerAddr {
                    serial: s.clone(),
                    addr: a.clone(),
                })
                .collect(),
        );
        let mut sink = |_: &Reply| Ok(());
        let _ = self.sync_peers(self.peer_list(), &mut sink);
        Reply::Done {
            message: format!(
                "{serial} removed (revision {rev}); {} members remain, a replacement may join",
                doc.members.len()
            ),
        }
    }

    /// One step of this member's rollover of the sync channel's keys, chosen by where its
    /// keyring stands (accept the new key, then seal with it, then retire the old one), as
    /// `ha-daemon` does for the HA link; `hactl psk rotate --config-member-socket` runs each
    /// step on every member before the next.
    fn psk_rotate(&self, psk_file: String, key_id: u8) -> Reply {
        let psk = match crate::wire::read_key_file(std::path::Path::new(&psk_file)) {
            Ok(p) => p,
            Err(e) => return error(ErrorCode::BadRequest, e),
        };
        let cluster_id = self.cfg.security.cluster_id;
        let mut k = self.keyring.lock().unwrap_or_else(|p| p.into_inner());
        let phase = if k.get(key_id).is_none() {
            match k.accept(ha_proto::keys::KeySet::derive(&psk, cluster_id, key_id)) {
                Ok(()) => "confirming",
                Err(e) => return error(ErrorCode::Refused, e.to_string()),
            }
        } else if k.sealing().key_id() != key_id {
            match k.seal_with(key_id) {
                Ok(()) => "retiring",
                Err(e) => return error(ErrorCode::Refused, e.to_string()),
            }
        } else if k.in_rollover() {
            k.retire_previous();
            "done"
        } else {
            "idle"
        };
        drop(k);
        self.rotate_report(phase)
    }

    fn psk_rotate_status(&self) -> Reply {
        let rolling = self
            .keyring
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .in_rollover();
        self.rotate_report(if rolling { "confirming" } else { "idle" })
    }
}
