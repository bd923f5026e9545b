//! The sans-IO state-sync engine: no sockets, no clock. The caller hands it received
//! datagrams ([`SyncEngine::on_datagram`]) and the time in milliseconds of its own monotonic
//! clock ([`Millis`]), tells it which items changed ([`SyncEngine::changed`]), and sends the
//! datagrams [`SyncEngine::poll_transmit`] returns to the peer (over UDP in the daemon and the
//! bench, over an in-memory channel in the tests).
//!
//! One job per module:
//! - [`wire`]: the message set of a frame body ([`SyncMsg`], [`Record`]), its admission rule;
//! - [`retransmit`]: the reliable stream (in flight, acknowledgements, timeouts, reordering);
//! - [`bulk`]: bulk synchronization and resync requests;
//! - [`records`]: table items ⇄ records;
//! - [`engine`]: the engine tying them to the tables, the endpoint and the peer session.
//!
//! # Frames
//! Every datagram is one frame opened and sealed by `ha_proto::endpoint::Endpoint`, the one
//! acceptance path of the system: authentication with the cluster's state-sync key (the
//! keyring follows PSK rollovers, [`SyncEngine::accept_key`]), channel, sender, binding to this
//! member's boot, replay window, decoding, then [`SyncMsg`]'s admission rule: every message but
//! `Hello` changes state and must be bound to the receiver's current boot (its header's
//! `peer_epoch` names it). Every refusal is counted per reason ([`SyncStats::rejects`]). With
//! `aead` (the configuration block's `encrypt`) the bodies are encrypted.
//!
//! # Two halves, for a daemon's threads
//! [`SyncEngine::on_datagram`] is [`SyncEngine::open`] (crypto, no table) then
//! [`SyncEngine::handle`] (the tables, no crypto); [`SyncEngine::poll_transmit`] is
//! [`SyncEngine::poll_messages`] (the tables) then [`SyncEngine::seal_all`] (crypto). A daemon
//! whose packet path locks the tables runs the crypto halves outside that lock.
//!
//! # Session
//! A member learns its peer's boot from any frame, but it only *talks state* with a peer that
//! proved it heard this boot: the session starts with the first frame bound to this member's
//! current boot. An unbound `Hello` only tells "this is my boot" (answered at once by a bound
//! `Hello`); data, acknowledgements and resync requests are sent only while the peer's newest
//! boot heard is the session's, and are therefore always bound. So a frame recorded before
//! either member restarted changes nothing after the restart: bound to another boot of the
//! receiver it is refused (`stale_binding`); from an older boot of the sender it is refused by
//! the replay window (`stale_epoch`).
//!
//! # Bounds
//! The peer's items go into the tables through their API ([`Tables::install_synced`]), which
//! refuses what would exceed a table's cap ([`crate::tables::Limits`]); refusals are counted
//! ([`SyncStats::refused`]) and reported ([`SyncEvent::RecordsRefused`], at most once per
//! table every [`REFUSAL_EVENT_EVERY_MS`]).
//!
//! [`Tables::install_synced`]: crate::tables::Tables::install_synced

pub mod bulk;
pub mod engine;
pub mod records;
pub mod retransmit;
pub mod wire;

use ha_proto::config_block::ConfigBlock;
use ha_proto::endpoint::RejectCounters;
use ha_proto::keys::{KeySet, Keyring};
use ha_proto::msg::Serial;

use crate::tables::{Limits, Millis, Refused, TableKind};

pub use crate::tables::ItemKey;
pub use bulk::PROGRESS_EVERY;
pub use engine::{Opened, Outgoing, SyncEngine};
pub use retransmit::{MAX_RETRANSMITS_PER_POLL, MAX_RTO_MS, RX_WINDOW};
pub use wire::{model_ok, BulkBegin, Record, Records, SyncMsg, WireError, MAX_MODEL_LEN};

/// Whether a member holds its peer's state ([`SyncEngine::peer_table`]), which it must
/// before it takes traffic from a live peer (the daemon tells its controller,
/// `HostMsg::TableHeld`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerTable {
    /// No peer was heard since this engine started (a lone member, or the peer not heard
    /// yet).
    NoPeerYet,
    /// The session's peer is sending its whole table (a bulk asked at the session's start
    /// or asked again), or has not begun.
    Receiving,
    /// The session's peer's whole table arrived and the stream keeps it up to date.
    Held,
    /// The session was lost: what is held may be stale.
    Lost,
}

/// How often a member tells its peer again what it is ([`SyncMsg::About`]; also at the
/// start of each session and when it changes): a lost datagram is made good within this.
pub const ABOUT_EVERY_MS: Millis = 30_000;

/// Refused records of one table are reported at most this often (the counters count every
/// one): a peer flooding a full table must not flood the event log too.
pub const REFUSAL_EVENT_EVERY_MS: Millis = 10_000;

/// Identity, keys and tuning of the engine.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Cluster id (frame header).
    pub cluster_id: u32,
    /// This member's serial (frame header sender).
    pub me: Serial,
    /// This boot's epoch: the persistent boot counter (grows on every start, never 0).
    pub epoch: u32,
    /// The state-sync keys: the sealing set, and one more accepted during a PSK rollover.
    pub keyring: Keyring,
    /// Seal with the AEAD (encrypted bodies) instead of HMAC.
    pub aead: bool,
    /// Serials a peer may have (the other members); empty: anyone holding the key but this
    /// member.
    pub peers: Vec<Serial>,
    /// Caps of the tables the peer feeds ([`crate::Dataplane`] builds its tables with them).
    pub limits: Limits,
    /// A connection younger than this is not synced (short-lived flows cost sync bandwidth
    /// and need no failover); 0 syncs at once.
    pub min_age_ms: Millis,
    /// Smallest retransmission timeout of a data frame (the timeout follows the measured
    /// round-trip time, RFC 6298, and doubles with each resend of a frame).
    pub retransmit_ms: Millis,
    /// Data frames in flight (unacknowledged) at most.
    pub window: usize,
    /// Changes waiting to be framed at most; beyond, the queue is dropped and a bulk
    /// synchronization replaces it ([`SyncEvent::Overflow`]).
    pub max_pending: usize,
    /// Hello period (liveness, repeated resync requests).
    pub hello_ms: Millis,
    /// The peer is lost after this long without a frame from it.
    pub peer_timeout_ms: Millis,
    /// A requested bulk synchronization without progress for this long is requested again.
    pub bulk_stall_ms: Millis,
}

impl SyncConfig {
    /// Defaults for a LAN HA link, sealing with `keys`.
    pub fn new(cluster_id: u32, me: Serial, epoch: u32, keys: KeySet) -> Self {
        Self {
            cluster_id,
            me,
            epoch,
            keyring: Keyring::new(keys),
            aead: false,
            peers: Vec::new(),
            limits: Limits::default(),
            min_age_ms: 0,
            retransmit_ms: 20,
            window: 1024,
            max_pending: 1 << 21,
            hello_ms: 250,
            peer_timeout_ms: 3_000,
            bulk_stall_ms: 1_000,
        }
    }

    /// The configuration of a member provisioned with `block` in boot `epoch`: its serial,
    /// cluster id, the other members as the only peers, the block's key, and the AEAD when
    /// the block says `encrypt`.
    pub fn from_block(block: &ConfigBlock, epoch: u32) -> Self {
        let keys = KeySet::derive(&block.psk, block.cluster_id, block.key_id);
        let mut cfg = Self::new(block.cluster_id, block.serial, epoch, keys);
        cfg.aead = block.encrypt;
        cfg.peers = block.peers().map(|m| m.serial).collect();
        cfg
    }

    /// The same configuration with `keyring` (a restart after a PSK rollover: the keys of
    /// the main CPU's keyring file rather than the block's).
    pub fn with_keyring(mut self, keyring: Keyring) -> Self {
        self.keyring = keyring;
        self
    }
}

/// What happened, for the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncEvent {
    /// A session with a peer (boot epoch) started: first frame bound to this boot, from a new
    /// peer, a new boot of it, or the same one after a loss.
    PeerUp {
        /// Its boot epoch.
        epoch: u32,
    },
    /// No frame from the peer for `peer_timeout_ms`: pending changes dropped (a bulk will
    /// repair when it returns).
    PeerLost,
    /// Bulk progress (sent by us or received from the peer).
    BulkProgress {
        /// True when we send it.
        outgoing: bool,
        /// Request id.
        id: u32,
        /// Items so far.
        done: u64,
        /// Items in the bulk.
        total: u64,
    },
    /// We sent a whole table.
    BulkSent {
        /// Request id.
        id: u32,
        /// Items sent.
        records: u64,
    },
    /// The peer's whole table arrived.
    BulkReceived {
        /// Request id.
        id: u32,
        /// Items received.
        records: u64,
        /// Stale items removed (deleted by the peer while we did not listen).
        stale_removed: usize,
    },
    /// A requested bulk made no progress in time; requested again under `new_id`.
    BulkStalled {
        /// Retry number (1 = first retry).
        attempt: u32,
        /// The new request id.
        new_id: u32,
    },
    /// Too many changes queued: the queue was replaced by a bulk synchronization.
    Overflow,
    /// Records of the peer refused by a table: at its cap, or larger than it stores.
    RecordsRefused {
        /// Why (and which table).
        reason: Refused,
        /// Records of that table refused since the previous such event.
        count: u64,
    },
}

/// Counters of the engine.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SyncStats {
    /// Data frames sent (first transmissions).
    pub data_sent: u64,
    /// Retransmissions.
    pub retransmits: u64,
    /// Records framed.
    pub records_sent: u64,
    /// Records applied from the peer (installed, removed, or refused by a table).
    pub records_applied: u64,
    /// Frames refused by the endpoint, per reason.
    pub rejects: RejectCounters,
    /// Records that did not decode in an accepted frame (the rest of the frame is dropped).
    pub malformed: u64,
    /// Duplicate data frames received.
    pub duplicates: u64,
    /// Records too large for a frame (dropped, counted).
    pub oversize: u64,
    /// Records refused by each table ([`TableKind::index`]): at its cap, or invalid.
    pub refused: [u64; TableKind::COUNT],
}

impl SyncStats {
    /// Frames refused plus records that did not decode.
    pub fn rejected(&self) -> u64 {
        u64::from(self.rejects.total()) + self.malformed
    }

    /// Records refused by one table.
    pub fn refused_by(&self, table: TableKind) -> u64 {
        self.refused[table.index()]
    }
}

/// Result of [`SyncEngine::resync_status`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncStatus {
    /// Requested, not complete (possibly retried under a later id).
    Pending,
    /// The bulk synchronization answering it (or a later retry) is complete.
    Done,
    /// No peer to ask.
    NoPeer,
}
