//! The main-CPU daemon's management API: what `hactl` asks and what the daemon answers.
//!
//! Transport: a unix stream socket (default [`DEFAULT_SOCKET`], mode 0600, root only). The
//! client writes one [`Request`] as one line of JSON; the daemon answers with one or more
//! [`Reply`] lines. Streaming replies ([`Reply::Event`], [`Reply::Progress`]) are followed by
//! exactly one final reply ([`Reply::is_final`]); `events --follow` streams until the client
//! closes the socket. Then the client may send another request on the same connection.
//!
//! ```text
//! → {"cmd":"info","verbose":false}
//! ← {"type":"info","cluster_id":7,"me":"SN-A",...}
//! → {"cmd":"config_sync"}
//! ← {"type":"progress","phase":"transfer","done_files":10,...}
//! ← {"type":"sync_done","peer":"SN-B","revision":4,...}
//! ```
//!
//! Keys never travel on this socket: `psk_rotate` and `cluster_join` name a key *file*
//! (mode 0600) that the daemon reads itself.
//!
//! Times are Unix seconds (UTC). Field names are stable; fields are only ever added, and
//! added fields carry `#[serde(default)]` so that older peers still parse.
#![warn(missing_docs)]

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub mod client;
pub mod server;

/// Version of this API; [`Reply::Info`] reports the daemon's.
pub const API_VERSION: u32 = 1;
/// Default path of the daemon's management socket.
pub const DEFAULT_SOCKET: &str = "/run/ha/mgmt.sock";
/// Default path of the configuration-sync service's socket (same API; it answers the
/// `config_*` requests, the daemon the others).
pub const DEFAULT_CONFIG_SOCKET: &str = "/run/ha/confsync.sock";
/// Longest request or reply line accepted, bytes. A synctest report of 10,000 unsynchronized
/// paths of ~100 bytes each is about 1 MB; 16 MiB leaves room and still bounds memory.
pub const MAX_LINE_LEN: usize = 16 << 20;

/// One request, tagged by `cmd`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// The per-member status table (SPEC E1); `verbose` adds protocol counters.
    Info {
        /// Add protocol counters.
        #[serde(default)]
        verbose: bool,
    },
    /// This member's mode.
    Mode,
    /// The role this member's data path applies (answered by the daemon alone, also while
    /// its controller is silent).
    Forwarding,
    /// Force this member active (ignoring quality).
    Active,
    /// Force this member passive.
    Passive,
    /// Remove any forcing.
    Reset,
    /// Force another member of the cluster (by serial) active or passive, or remove its
    /// forcing (`forced: none`): relayed by this member's controller over the HA links,
    /// confirmed by that member's heartbeats.
    Force {
        /// The member's serial.
        member: String,
        /// The forcing it gets.
        forced: Forced,
    },
    /// Reload the HA settings from the configuration.
    Reload,
    /// Freeze this member's HA decisions for `seconds` (its controller bounds the time); they
    /// resume by themselves.
    Pause {
        /// How long, seconds.
        seconds: u16,
    },
    /// Resume HA decisions before the pause ends.
    Resume,
    /// The event log; with `follow`, keep streaming new events.
    Events {
        /// Keep the stream open and send new events as they happen.
        #[serde(default)]
        follow: bool,
        /// At most this many past events (newest last); all when absent.
        #[serde(default)]
        last: Option<u32>,
    },
    /// Turn the draft configuration into a new revision (active member only).
    ConfigPublish {
        /// Operator's comment stored with the revision.
        #[serde(default)]
        comment: Option<String>,
    },
    /// Push the latest published revision to one peer, or to every peer.
    ConfigSync {
        /// Serial of the peer; every peer when absent.
        #[serde(default)]
        peer: Option<String>,
    },
    /// Compare one configuration file with a peer's copy.
    ConfigDiff {
        /// Path relative to the configuration root.
        path: String,
        /// Serial of the peer; the first peer when absent.
        #[serde(default)]
        peer: Option<String>,
    },
    /// List files that differ between this member and its peers, and local unsynced edits.
    ConfigSynctest,
    /// Start a PSK rotation with the key in `psk_file` (read by the daemon) under `key_id`.
    PskRotate {
        /// Key file, 64 hex digits, mode 0600.
        psk_file: String,
        /// Key id of the new key; must differ from the current one.
        key_id: u8,
    },
    /// Where a running PSK rotation stands.
    PskRotateStatus,
    /// Create a cluster on this member (it becomes the primary).
    ClusterCreate {
        /// Cluster id.
        cluster_id: u32,
        /// Key file of the cluster PSK.
        psk_file: String,
    },
    /// Join the cluster whose member listens at `peer` (`IP:PORT` of its HA link).
    ClusterJoin {
        /// Address of a member of the cluster.
        peer: String,
        /// Key file of the cluster PSK.
        psk_file: String,
        /// This member's main HA link and data-plane addresses: the active member then adds
        /// it to its own HA member list (its controller's and its block's); none: only the
        /// configuration-sync membership changes.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ha: Option<HaMember>,
    },
    /// Remove a failed member from the cluster (before joining its replacement).
    ClusterRemove {
        /// Serial of the member to remove.
        serial: String,
    },
    /// Rolling update: passive first, then swap, then the other member.
    Update {
        /// Firmware image path.
        image: String,
    },
    /// Add a member to this member's HA member list — its controller's and its
    /// configuration block's (a replacement joining, SPEC A6).
    MemberAdd {
        /// Serial of the new member.
        serial: String,
        /// Its main HA link, `IP:PORT`.
        main_link: String,
        /// Its data-plane addresses (the liveness probe's targets, the state-sync peer),
        /// as its own daemon reports them in [`ClusterInfo::addresses`].
        #[serde(default)]
        addresses: MemberAddresses,
    },
    /// Remove a member from this member's HA member list — its controller's and its
    /// configuration block's (a failed member, SPEC A6).
    MemberRemove {
        /// Serial of the member to remove.
        serial: String,
    },
    /// Replace this member's daemon by the program at `binary` (an absolute path), run with
    /// the same arguments in the same process (the rolling update of the main CPU's side):
    /// refused while the member forwards, and unless `binary --check` accepts the daemon's
    /// configuration. Answered before the daemon is replaced.
    Restart {
        /// The new daemon program.
        binary: String,
    },
}

/// One reply line, tagged by `type`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Reply {
    /// Answer to [`Request::Info`].
    Info(ClusterInfo),
    /// Answer to [`Request::Mode`] and to the forcing commands.
    Mode(ModeReport),
    /// Answer to [`Request::Forwarding`].
    Forwarding(ForwardingReport),
    /// A command was carried out.
    Done {
        /// What happened, for the operator.
        message: String,
    },
    /// One event (streamed; not final).
    Event(Event),
    /// End of an event stream that was not followed.
    EndOfEvents,
    /// Sync or update progress (streamed; not final).
    Progress(Progress),
    /// Answer to [`Request::ConfigPublish`].
    Published {
        /// The new revision.
        revision: u64,
        /// Files in it.
        files: u64,
    },
    /// Answer to [`Request::ConfigSync`].
    SyncDone(SyncReport),
    /// Answer to [`Request::ConfigDiff`].
    Diff(DiffReport),
    /// Answer to [`Request::ConfigSynctest`].
    Synctest(SynctestReport),
    /// Answer to the PSK rotation requests.
    Rotate(RotateReport),
    /// The HA settings were reloaded (`hactl reload`): what changed.
    Reloaded(ReloadReport),
    /// The request failed.
    Error(ApiError),
}

impl Reply {
    /// False for streamed replies that more lines follow.
    pub fn is_final(&self) -> bool {
        !matches!(self, Reply::Event(_) | Reply::Progress(_))
    }
}

/// What a reload changed (`Request::Reload`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReloadReport {
    /// The configuration revision the controller runs now (the block's digest of the
    /// settings every member must share; equal revisions mean equal settings).
    pub revision: u64,
    /// The revision it ran before.
    pub previous_revision: u64,
    /// Each change applied, one line each, e.g. `weights: psu 100 → 300` (the block) or
    /// `monitor eth1: weight 100 → 50` (the daemon's configuration); empty when both held
    /// the settings already running.
    pub changes: Vec<String>,
    /// Settings of the daemon's configuration that changed but apply only when the daemon
    /// restarts (e.g. `forward`, `sync`).
    #[serde(default)]
    pub pending_restart: Vec<String>,
}

/// Why a request failed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    /// Machine-readable class.
    pub code: ErrorCode,
    /// One line for the operator (never holds key material).
    pub message: String,
}

/// Class of an [`ApiError`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The request did not parse or has a bad value.
    BadRequest,
    /// Refused in this state (a standby member is read-only, a rotation is already running).
    Refused,
    /// The cluster is full (SPEC A6).
    ClusterFull,
    /// No such peer, file or revision.
    NotFound,
    /// A peer could not be reached.
    Unreachable,
    /// This daemon does not implement the request.
    Unsupported,
    /// Anything else.
    Internal,
}

/// HA mode of a member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Listening for peers after boot.
    Starting,
    /// Carries traffic.
    Active,
    /// Standby.
    Passive,
    /// Out of the election.
    Disabled,
    /// Not heard from (peers only).
    Unknown,
}

/// Administrative forcing: the wire contract's type (`ha_proto::msg::Forced`).
pub use ha_proto::msg::Forced;

/// State of one HA link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LinkStatus {
    /// Not configured.
    NotConfigured,
    /// Heartbeats flow.
    Up,
    /// Heartbeats lost.
    Down,
}

/// One HA link of a member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkInfo {
    /// `main` or `backup`.
    pub name: String,
    /// State.
    pub state: LinkStatus,
    /// Since when (Unix seconds).
    pub since: u64,
}

/// Configuration-sync state of a member as seen from this one (SPEC D4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SyncState {
    /// Runs the latest published revision.
    Synchronized,
    /// The last sync failed.
    SyncProblem,
    /// Not reachable for configuration sync.
    NoCommunication,
    /// Two members both claim to be the configuration source.
    Collision,
    /// Has local edits that are not published/synchronized.
    LocalChanges,
    /// This member itself (the source).
    Source,
}

/// Configuration-sync status of one member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConfigSyncInfo {
    /// State.
    pub state: SyncState,
    /// Last successful sync (Unix seconds).
    #[serde(default)]
    pub last_sync: Option<u64>,
    /// Details of a problem.
    #[serde(default)]
    pub detail: Option<String>,
}

/// A member's role in one HA domain (a row of [`MemberInfo::domains`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainInfo {
    /// Domain id.
    pub domain: u8,
    /// The member's mode in it.
    pub mode: Mode,
    /// Its "active if equal" priority in it (50 for the domain's preferred member, else 0).
    pub priority: u8,
}

/// One row of the status table (SPEC E1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// Serial.
    pub serial: String,
    /// Model name.
    pub model: String,
    /// Firmware version, `major.minor.patch`.
    pub firmware: String,
    /// Forcing.
    pub forced: Forced,
    /// Mode.
    pub mode: Mode,
    /// In this mode since (Unix seconds).
    pub mode_since: u64,
    /// Quality factor 0..=100.
    pub quality: u8,
    /// Priority ("active if equal" = 50, else 0) in its first domain.
    pub priority: u8,
    /// Its role and priority in every domain, as its controller reports them (several with
    /// load sharing; empty from an older daemon).
    #[serde(default)]
    pub domains: Vec<DomainInfo>,
    /// Configuration sync.
    pub config_sync: ConfigSyncInfo,
    /// When the member's management controller booted (Unix seconds, from its uptime;
    /// ±1 s); 0 when unknown (the daemons report it for their own member only).
    pub boot_time: u64,
    /// HA links.
    pub links: Vec<LinkInfo>,
    /// Configuration revision it runs.
    pub config_revision: u64,
    /// Protocol counters (verbose only): heartbeats sent/received, auth failures, replays...
    #[serde(default)]
    pub counters: Option<BTreeMap<String, u64>>,
}

/// Overall health in the banner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BannerLevel {
    /// Everything synchronized and redundant.
    Ok,
    /// Degraded (a link down, a peer unsynchronized).
    Warning,
    /// No redundancy or a conflict (split brain, collision).
    Critical,
}

/// Answer to [`Request::Info`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterInfo {
    /// API version of the daemon.
    pub api_version: u32,
    /// Cluster id.
    pub cluster_id: u32,
    /// Serial of the member answering.
    pub me: String,
    /// Banner level.
    pub banner: BannerLevel,
    /// Banner text.
    pub banner_text: String,
    /// One row per member, this one included.
    pub members: Vec<MemberInfo>,
    /// This member's own data-plane addresses (what a peer's daemon must know of it).
    #[serde(default)]
    pub addresses: MemberAddresses,
    /// The data-plane addresses this member's daemon knows of each peer: whom its liveness
    /// probe asks and where state sync goes.
    #[serde(default)]
    pub peers: Vec<PeerAddresses>,
    /// Fail-soft: the members heard run different firmware versions (a rolling update is
    /// under way, or one member was left behind); the cluster keeps working so the older
    /// one can be upgraded.
    #[serde(default)]
    pub fail_soft: bool,
}

/// A member's data-plane addresses, as its peers' daemons use them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberAddresses {
    /// Its member addresses on the data interfaces: the liveness probe's targets.
    #[serde(default)]
    pub probe: Vec<std::net::Ipv4Addr>,
    /// Its HA-interface address for state sync.
    #[serde(default)]
    pub sync: Option<std::net::Ipv4Addr>,
}

/// A joining member as the HA member lists need it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaMember {
    /// Its main HA link, `IP:PORT`.
    pub main_link: String,
    /// Its data-plane addresses, as its own daemon reports them.
    #[serde(default)]
    pub addresses: MemberAddresses,
}

/// A peer as this member's daemon knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerAddresses {
    /// The peer's serial.
    pub serial: String,
    /// Its addresses.
    #[serde(flatten)]
    pub addresses: MemberAddresses,
}

/// Answer to [`Request::Mode`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModeReport {
    /// Serial.
    pub serial: String,
    /// Mode.
    pub mode: Mode,
    /// Forcing.
    pub forced: Forced,
    /// Since (Unix seconds).
    pub since: u64,
    /// HA decisions frozen (a pause runs).
    #[serde(default)]
    pub paused: bool,
}

/// Answer to [`Request::Forwarding`]: the role the daemon's data path applies, which is what
/// the networks see (the controller decides it; the host link and the daemon carry it out).
/// All times are Unix milliseconds of the daemon's clock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ForwardingReport {
    /// Serial.
    pub serial: String,
    /// True while the data path forwards and owns the cluster addresses.
    pub active: bool,
    /// The HA domains it forwards for, lowest first: the main domain alone, or with load
    /// sharing every domain this member is active for (empty while passive, and from an
    /// older daemon).
    #[serde(default)]
    pub domains: Vec<u8>,
    /// When the data path last changed role (the daemon's start if it never did).
    pub since_ms: u64,
    /// Role changes since the daemon started: a jump of more than one between two reports
    /// means changes were missed in between.
    pub changes: u64,
    /// When this daemon process started (a different value: it was restarted).
    pub started_ms: u64,
    /// When this report was made.
    pub now_ms: u64,
    /// False while the controller is silent (the daemon then stays passive).
    pub controller_alive: bool,
    /// Connections in this member's synced table (the state-sync engine's: the userspace
    /// path's connections or the kernel path's conntrack entries, refreshed every 100 ms);
    /// none before the sync thread first reported, or from an older daemon.
    #[serde(default)]
    pub table_connections: Option<u64>,
    /// Whether this member holds its peers' table, as its daemon last told its controller
    /// (`held` or `not held`, then why in parentheses): a member that does not has quality
    /// 0 while passive and takes no domain from a live active. None before the daemon first
    /// told it, with a controller that predates it, or from an older daemon.
    #[serde(default)]
    pub peer_table: Option<String>,
}

/// Kind of an HA event (SPEC E3).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// Roles changed.
    Swap,
    /// A peer stopped answering.
    PeerLost,
    /// A peer answers again.
    PeerFound,
    /// An HA link went down.
    LinkDown,
    /// An HA link came up.
    LinkUp,
    /// A quality factor changed.
    QualityChanged,
    /// Bulk state sync sent.
    BulkSyncSent,
    /// Bulk state sync received.
    BulkSyncReceived,
    /// Configuration sync succeeded.
    SyncSuccess,
    /// Configuration sync failed.
    SyncFailure,
    /// HA decisions paused.
    Pause,
    /// HA decisions resumed.
    Resume,
    /// Firmware versions differ (fail-soft).
    VersionConflict,
    /// Licences differ.
    LicenseConflict,
    /// Two actives detected.
    Collision,
    /// Forcing changed.
    Forced,
    /// PSK rotation step.
    KeyRotation,
    /// The HA member list changed, or a new one was refused (SPEC A6).
    Members,
    /// A received frame was refused; the detail starts with the reason's stable name
    /// (`ha_proto::endpoint::Reject::name`).
    FrameRefused,
    /// A session was cut by one of its deadlines, or refused for lack of room; the detail
    /// names which.
    SessionCut,
    /// State-sync records of the peer refused: a table at its cap, or an item larger than a
    /// table stores.
    StateSyncRefused,
    /// Events of the controller that never reached the daemon (a gap in their sequence
    /// numbers: its ring overflowed, or the host link was down).
    EventsLost,
    /// HA settings reloaded in place (the detail lists what changed), or new ones refused
    /// (the detail says why).
    Reload,
    /// This member's main CPU went silent on the host link (the member leaves the election),
    /// or is heard again.
    MainCpu,
    /// An event of the controller this daemon has no kind for (a newer firmware's); the
    /// detail is the controller's text, prefixed with its name.
    Other,
}

/// One event of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    /// When (Unix milliseconds).
    pub time_ms: u64,
    /// Kind.
    pub kind: EventKind,
    /// Member concerned.
    #[serde(default)]
    pub member: Option<String>,
    /// Details.
    pub detail: String,
    /// The controller's sequence number of the event (events of the controller only; a
    /// client shows a jump as events it did not receive). Absent in older daemons' answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub seq: Option<u32>,
}

/// Progress of a sync or update.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Peer concerned.
    pub peer: String,
    /// `manifest`, `transfer`, `commit`, or an update phase.
    pub phase: String,
    /// Files done.
    pub done_files: u64,
    /// Files to do.
    pub total_files: u64,
    /// Bytes done.
    pub done_bytes: u64,
    /// Bytes to do.
    pub total_bytes: u64,
}

/// Result of a sync with one peer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SyncReport {
    /// Peer.
    pub peer: String,
    /// Revision the peer now runs.
    pub revision: u64,
    /// Files in the revision.
    pub files_total: u64,
    /// Files whose content was sent (changed since the peer's revision).
    pub files_sent: u64,
    /// Bytes of content sent.
    pub bytes_sent: u64,
    /// Wall time, ms.
    pub elapsed_ms: u64,
}

/// How one file compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileStatus {
    /// Same content.
    Same,
    /// Different content.
    Differs,
    /// Only on this member.
    OnlyLocal,
    /// Only on the peer.
    OnlyPeer,
}

/// Answer to [`Request::ConfigDiff`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiffReport {
    /// Path compared.
    pub path: String,
    /// Peer compared with.
    pub peer: String,
    /// Result.
    pub status: FileStatus,
    /// SHA-256 of the local copy, hex.
    #[serde(default)]
    pub local_sha256: Option<String>,
    /// SHA-256 of the peer's copy, hex.
    #[serde(default)]
    pub peer_sha256: Option<String>,
    /// Unified diff of text files.
    #[serde(default)]
    pub diff: Option<String>,
}

/// One peer in a [`SynctestReport`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerSyncStatus {
    /// Peer serial.
    pub peer: String,
    /// Its state.
    pub state: SyncState,
    /// Its revision.
    pub revision: u64,
    /// Paths whose content differs from this member's published revision.
    pub unsynchronized: Vec<String>,
    /// When the last sync to this peer succeeded (Unix seconds).
    #[serde(default)]
    pub last_sync: Option<u64>,
    /// Why the peer is in a problem state, for the operator.
    #[serde(default)]
    pub detail: Option<String>,
}

/// Answer to [`Request::ConfigSynctest`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SynctestReport {
    /// This member's latest published revision.
    pub revision: u64,
    /// Paths edited in the draft but not published.
    pub local_changes: Vec<String>,
    /// Per peer.
    pub peers: Vec<PeerSyncStatus>,
}

/// Answer to the PSK rotation requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RotateReport {
    /// `idle`, `distributing`, `confirming`, `retiring`, `done` or `aborted`.
    pub phase: String,
    /// Key id sealing new frames.
    pub sealing_key_id: u8,
    /// Key id still accepted, while the rollover runs.
    #[serde(default)]
    pub previous_key_id: Option<u8>,
    /// Members that confirmed the new key.
    pub confirmed: Vec<String>,
    /// Members yet to confirm.
    pub pending: Vec<String>,
}

/// Why a line could not be decoded.
#[derive(Debug)]
pub enum LineError {
    /// Longer than [`MAX_LINE_LEN`].
    TooLong(usize),
    /// Not valid JSON for the expected type.
    Json(serde_json::Error),
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LineError::TooLong(n) => write!(f, "line of {n} bytes exceeds {MAX_LINE_LEN}"),
            LineError::Json(e) => write!(f, "bad JSON line: {e}"),
        }
    }
}

impl std::error::Error for LineError {}

/// One JSON line (with its `\n`) of a request or reply.
pub fn encode_line<T: Serialize>(v: &T) -> String {
    // Our types are plain data with string keys: serialization cannot fail.
    let mut s = serde_json::to_string(v).unwrap_or_else(|e| {
        serde_json::to_string(&Reply::Error(ApiError {
            code: ErrorCode::Internal,
            message: format!("cannot encode reply: {e}"),
        }))
        .unwrap_or_default()
    });
    s.push('\n');
    s
}

/// Decodes one line (with or without its `\n`).
pub fn decode_line<T: serde::de::DeserializeOwned>(line: &str) -> Result<T, LineError> {
    if line.len() > MAX_LINE_LEN {
        return Err(LineError::TooLong(line.len()));
    }
    serde_json::from_str(line.trim_end()).map_err(LineError::Json)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_form_is_stable() {
        let r = Request::Info { verbose: true };
        assert_eq!(encode_line(&r), "{\"cmd\":\"info\",\"verbose\":true}\n");
        let r: Request = decode_line("{\"cmd\":\"info\"}").unwrap();
        assert_eq!(r, Request::Info { verbose: false });
        let r: Request = decode_line("{\"cmd\":\"config_sync\",\"peer\":\"SN-B\"}").unwrap();
        assert_eq!(
            r,
            Request::ConfigSync {
                peer: Some("SN-B".into())
            }
        );
        assert_eq!(encode_line(&Request::Active), "{\"cmd\":\"active\"}\n");
    }

    #[test]
    fn replies_round_trip_and_finality() {
        let replies = vec![
            Reply::Done {
                message: "ok".into(),
            },
            Reply::Progress(Progress {
                peer: "SN-B".into(),
                phase: "transfer".into(),
                done_files: 1,
                total_files: 2,
                done_bytes: 3,
                total_bytes: 4,
            }),
            Reply::Event(Event {
                time_ms: 1,
                kind: EventKind::Swap,
                member: Some("SN-A".into()),
                detail: "quality".into(),
                seq: None,
            }),
            Reply::Error(ApiError {
                code: ErrorCode::ClusterFull,
                message: "full".into(),
            }),
        ];
        for r in replies {
            let line = encode_line(&r);
            assert!(line.ends_with('\n') && !line[..line.len() - 1].contains('\n'));
            let back: Reply = decode_line(&line).unwrap();
            assert_eq!(back, r);
        }
        assert!(Reply::EndOfEvents.is_final());
        assert!(!Reply::Progress(Progress {
            peer: String::new(),
            phase: String::new(),
            done_files: 0,
            total_files: 0,
            done_bytes: 0,
            total_bytes: 0
        })
        .is_final());
    }

    #[test]
    fn bad_lines_are_errors() {
        assert!(decode_line::<Request>("{\"cmd\":\"nope\"}").is_err());
        assert!(decode_line::<Request>("not json").is_err());
        let long = "x".repeat(MAX_LINE_LEN + 1);
        assert!(matches!(
            decode_line::<Request>(&long),
            Err(LineError::TooLong(_))
        ));
    }
}
