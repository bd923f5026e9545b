//! The configuration-sync service of a member: answers the `config_*` requests of the
//! management API ([`ha_mgmt_api::server::Backend`]), receives revisions from the active
//! member, runs the periodic jobs, and keeps each peer's sync status and an event log
//! (SPEC D1–D4).
//!
//! The member's role comes from `ha-daemon` (its `mode` answer) or is fixed; a member that is
//! not active is read-only: it refuses publish and sync, and only receives.
//!
//! - [`sessions`](Service::serve): incoming sessions, each on its own thread, bounded in
//!   number ([`MAX_SESSIONS`]) and in time ([`crate::deadline`]);
//! - outgoing sessions (push, probe) and the per-peer status;
//! - the cluster's membership document (create, join, remove);
//! - the management API's requests, the event log among them.
//!
//! One lock serializes what changes the store (a publish, the commit of a received revision,
//! the answer to a join); it is never held while a session waits for its peer.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::{Mutex, MutexGuard};

use ha_mgmt_api::client::Client;
use ha_mgmt_api::server::error;
use ha_mgmt_api::{ErrorCode, EventKind, Mode, Reply, Request, SyncState};
use ha_proto::endpoint::RejectCounters;

use crate::deadline::Limits;
use crate::events::EventLog;
use crate::keys::Keys;
use crate::protocol::SyncError;
use crate::store::{Role, Store, StoreError};
use crate::sync::SyncFailure;
use crate::wire::{Security, WireError};

mod api;
mod cluster;
mod peers;
mod sessions;

pub use cluster::{ClusterDoc, CLUSTER_FILE};
pub use peers::CONNECT_TIMEOUT;
pub use sessions::{SessionLimits, MAX_SESSIONS};

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
    /// Identity, initial keys, sealing mode and session counter of the sync sessions.
    pub security: Security,
    /// The daemon's keyring file ([`ha_persist::KeyringFile`]): once it exists, the keys
    /// follow it, re-read at every session ([`crate::keys::Keys`]).
    pub keyring_file: Option<PathBuf>,
    /// Where the role comes from.
    pub role: RoleSource,
    /// Push to every peer right after a publish (SPEC D1 "or publishes").
    pub sync_on_publish: bool,
    /// This member's own receiver address, as peers reach it (for cluster create/join).
    pub listen_addr: Option<String>,
    /// Install received files with setuid, setgid or sticky bits (refused by default).
    pub allow_special_modes: bool,
    /// How many sessions at once, and their deadlines.
    pub sessions: SessionLimits,
    /// This member's configuration block (the file its controller boots from): a machine
    /// that holds the cluster key and enrols through this member is sent its cluster-wide
    /// settings (`hactl cluster enroll`); none: enrolment is refused.
    pub block: Option<PathBuf>,
}

impl ServiceConfig {
    /// Settings with no peer, no keyring file, no receiver address, the default limits, and
    /// special mode bits refused.
    pub fn new(security: Security, role: RoleSource) -> Self {
        ServiceConfig {
            peers: Vec::new(),
            security,
            keyring_file: None,
            role,
            sync_on_publish: false,
            listen_addr: None,
            allow_special_modes: false,
            sessions: SessionLimits::default(),
            block: None,
        }
    }
}

/// How a receiving session ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Session {
    /// A revision was installed.
    Committed(u64),
    /// A peer compared its revision with this member's (nothing changed).
    Probed,
    /// A newcomer joined (its serial).
    Joined(String),
    /// A join was refused (why).
    JoinRefused(String),
    /// A key holder was sent the cluster's HA settings (the serial its frames carried).
    Enrolled(String),
    /// An enrolment was refused (why).
    EnrolRefused(String),
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
    keys: Keys,
    peers: Mutex<BTreeMap<String, PeerRecord>>,
    peer_list: Mutex<Vec<PeerAddr>>,
    /// Serializes the changes of the store (publish, commit, join); never held across a wait
    /// for a peer.
    store_lock: Mutex<()>,
    events: EventLog,
    refused: Mutex<RejectCounters>,
    /// Incoming sessions being served.
    active: AtomicUsize,
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
        SyncFailure::Wire(WireError::Io(_) | WireError::Deadline(_)) => SyncState::NoCommunication,
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
        Self::with_events(store, cfg, EventLog::new())
    }

    /// A service that logs into `events` (e.g. one that also prints every event).
    pub fn with_events(store: Store, cfg: ServiceConfig, events: EventLog) -> Service {
        let peers = cfg
            .peers
            .iter()
            .map(|p| (p.serial.clone(), PeerRecord::default()))
            .collect();
        Service {
            peer_list: Mutex::new(cfg.peers.clone()),
            keys: Keys::new(
                cfg.security.cluster_id,
                cfg.security.keyring.clone(),
                cfg.keyring_file.clone(),
            ),
            cfg,
            store,
            peers: Mutex::new(peers),
            store_lock: Mutex::new(()),
            events,
            refused: Mutex::new(RejectCounters::default()),
            active: AtomicUsize::new(0),
        }
    }

    /// The identity and the keys of a new session (the keyring file re-read, when one is
    /// followed).
    pub fn security(&self) -> Result<Security, String> {
        let mut s = self.cfg.security.clone();
        s.keyring = self.keys.current()?;
        Ok(s)
    }

    /// The event log (also served as the `events` request).
    pub fn event_log(&self) -> &EventLog {
        &self.events
    }

    /// Frames refused so far, by reason (both roles).
    pub fn refused(&self) -> RejectCounters {
        *self.refused.lock().unwrap_or_else(|p| p.into_inner())
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

    fn lock_store(&self) -> MutexGuard<'_, ()> {
        self.store_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn records(&self) -> MutexGuard<'_, BTreeMap<String, PeerRecord>> {
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

    fn limits(&self) -> (Limits, Limits) {
        (self.cfg.sessions.receiver, self.cfg.sessions.connector)
    }

    /// Logs a failed session with `who` (a serial or an address); `what` says which
    /// (`receive`, `sync`, `probe`, `join`). Refused frames and deadlines have their own
    /// event kinds, with the reason's stable name first; other failures are logged unless
    /// `quiet` (a probe that found a peer unreachable is a status, not an event).
    fn log_failure(&self, who: &str, what: &str, e: &SyncFailure, quiet: bool) {
        let member = Some(who);
        match e {
            SyncFailure::Wire(WireError::Refused(r)) => {
                self.refused
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .count(*r);
                self.events.push(
                    EventKind::FrameRefused,
                    member,
                    format!("{r}: a frame of the {what} session with {who} was refused"),
                );
            }
            SyncFailure::Wire(WireError::Deadline(c)) => self.events.push(
                EventKind::SessionCut,
                member,
                format!("{}: the {what} session with {who} was cut", c.name()),
            ),
            _ if quiet => {}
            other => self.events.push(
                EventKind::SyncFailure,
                member,
                format!("{what} with {who} failed: {other}"),
            ),
        }
    }
}
