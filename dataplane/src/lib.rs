//! Main-CPU dataplane: connection table, sans-IO state-sync engine, activation on swap.
//!
//! - [`tables`]: connections (TCP with state, UDP, ICMP, GRE/ESP, SCTP; 5-tuple + zone),
//!   hosts, users, helper expectations, gateways, certificate serials, IKEv2 SAs;
//!   larval entries and constant-time activation; the caps of what a peer installs.
//! - [`sync`]: the sans-IO sync engine (frames through the proto endpoint, acknowledgements,
//!   retransmission, bulk synchronization, resync before a planned swap, key rollover).
//! - [`filter`]: the stateful filter decision.
//! - [`path`]: the packet path's half (tables, policy, role, changes waiting for the engine).
//! - [`Dataplane`]: the three together, driven from one thread; a daemon with several
//!   threads splits it into its [`PacketPath`] and [`SyncEngine`] and locks them apart.
//!
//! Nothing here reads a clock: every call takes the time as [`Millis`] of the caller's
//! monotonic clock (the daemon counts them from its start).
//!
//! # For the daemon (`ha-daemon`)
//! The daemon forwards on one thread per interface and syncs on another, so it splits the
//! dataplane ([`Dataplane::into_parts`]): the [`PacketPath`] sits in the fast path's lock,
//! the [`SyncEngine`] in the sync thread's. Per received datagram the sync thread opens it
//! ([`SyncEngine::open`], crypto) holding only its own lock, applies it
//! ([`PacketPath::handle`]) with both, and per poll makes the messages
//! ([`PacketPath::poll_messages`]) with both and seals them ([`SyncEngine::seal_all`]) with
//! its own only. Its adapter (`daemon/src/dp.rs`) maps the daemon's traits onto these calls
//! and counts milliseconds from an `Instant` of its start.
//!
//! A planned swap: on the member about to become active, [`Dataplane::request_resync`], then
//! wait (bounded, e.g. 2 s) until [`Dataplane::resync_status`] is `Done` before accepting the
//! role.
#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod filter;
pub mod path;
pub mod sync;
pub mod tables;

use ha_proto::config_block::ConfigBlock;
use ha_proto::keys::{KeySet, KeyringError};

pub use filter::{Packet, Policy, Verdict};
pub use path::PacketPath;
pub use sync::{ResyncStatus, SyncConfig, SyncEngine, SyncEvent};
pub use tables::{ItemKey, Millis, Tables};

/// How often idle connections and expectations are swept.
pub const EXPIRE_EVERY_MS: Millis = 1_000;

/// See [`Dataplane::swap_readiness`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapReadiness {
    /// The resync is complete: swap.
    Ready,
    /// Still receiving.
    Waiting,
    /// Not complete within the bound.
    TimedOut,
    /// No peer is heard (nothing to wait for).
    NoPeer,
}

/// Connection table, filter and sync engine of one member, driven from one thread (the
/// tests, the bench, the fuzz targets). A daemon that forwards on several threads splits it
/// ([`Dataplane::into_parts`]) and locks the two halves apart.
#[derive(Debug)]
pub struct Dataplane {
    path: PacketPath,
    engine: SyncEngine,
    cluster_id: u32,
}

impl Dataplane {
    /// A dataplane with `policy`, syncing per `cfg` (its tables capped by `cfg.limits`).
    pub fn new(cfg: SyncConfig, policy: Policy) -> Self {
        Self {
            path: PacketPath::new(policy, cfg.limits, cfg.max_pending),
            cluster_id: cfg.cluster_id,
            engine: SyncEngine::new(cfg),
        }
    }

    /// A dataplane for a member provisioned with `block` ([`SyncConfig::from_block`]: its
    /// serial, cluster id, peers, key and `encrypt`), boot epoch `epoch`, admitting every new
    /// connection (the caller's `allow_new` still applies).
    pub fn from_block(block: &ConfigBlock, epoch: u32) -> Self {
        Self::new(SyncConfig::from_block(block, epoch), Policy::allow_all())
    }

    /// The two halves: the packet path (tables, policy, role) and the sync engine (with the
    /// endpoint), to lock apart; see [`path`].
    pub fn into_parts(self) -> (PacketPath, SyncEngine) {
        (self.path, self.engine)
    }

    /// The filter decision for a packet to forward (see [`filter::decide`]) at `now`.
    pub fn check(&mut self, p: &Packet, allow_new: bool, now: Millis) -> Verdict {
        let v = self.path.check(p, allow_new, now);
        self.path.hand_changes(&mut self.engine);
        v
    }

    /// Becomes active (larval entries become live in constant time) or passive.
    pub fn set_role(&mut self, active: bool, now: Millis) {
        self.path.set_role(active, now);
    }

    /// Whether this member forwards.
    pub fn is_active(&self) -> bool {
        self.path.is_active()
    }

    /// A state-sync datagram from the peer.
    pub fn on_datagram(&mut self, bytes: &[u8], now: Millis) {
        if let Some(o) = self.engine.open(bytes) {
            self.path.handle(&mut self.engine, o, now);
        }
    }

    /// Datagrams to send to the peer now; also sweeps idle entries.
    pub fn poll_transmit(&mut self, now: Millis) -> Vec<Vec<u8>> {
        let msgs = self.path.poll_messages(&mut self.engine, now);
        self.engine.seal_all(msgs)
    }

    /// Sync events since the last call.
    pub fn poll_events(&mut self) -> Vec<SyncEvent> {
        self.engine.poll_events()
    }

    /// Asks the peer for a full resync (before a planned swap); see [`SyncEngine::request_resync`].
    pub fn request_resync(&mut self, now: Millis) -> Option<u32> {
        self.engine.request_resync(now)
    }

    /// State of a resync request.
    pub fn resync_status(&self, id: u32) -> ResyncStatus {
        self.engine.resync_status(id)
    }

    /// Whether a planned swap may proceed, given resync request `id` made at `asked_at`:
    /// [`SwapReadiness::Waiting`] until the bulk is complete, [`SwapReadiness::TimedOut`]
    /// once `bound_ms` has passed (the caller then swaps anyway or aborts, and reports it;
    /// the engine keeps retrying and reports [`SyncEvent::BulkStalled`]).
    pub fn swap_readiness(
        &self,
        id: u32,
        asked_at: Millis,
        now: Millis,
        bound_ms: Millis,
    ) -> SwapReadiness {
        match self.engine.resync_status(id) {
            ResyncStatus::Done => SwapReadiness::Ready,
            ResyncStatus::NoPeer => SwapReadiness::NoPeer,
            ResyncStatus::Pending if now.saturating_sub(asked_at) >= bound_ms => {
                SwapReadiness::TimedOut
            }
            ResyncStatus::Pending => SwapReadiness::Waiting,
        }
    }

    /// Rollover phase 1 on the state-sync keys: the set derived from `psk` under `key_id`
    /// is accepted too (see [`SyncEngine::accept_key`]).
    pub fn accept_key(
        &mut self,
        psk: &ha_proto::keys::Psk,
        key_id: u8,
    ) -> Result<(), KeyringError> {
        self.engine
            .accept_key(KeySet::derive(psk, self.cluster_id, key_id))
    }

    /// Rollover phase 2: seal with `key_id` (see [`SyncEngine::seal_with_key`]).
    pub fn seal_with_key(&mut self, key_id: u8) -> Result<(), KeyringError> {
        self.engine.seal_with_key(key_id)
    }

    /// Rollover phase 3: only the sealing key opens frames (see
    /// [`SyncEngine::retire_previous_key`]).
    pub fn retire_previous_key(&mut self) {
        self.engine.retire_previous_key();
    }

    /// The tables.
    pub fn tables(&self) -> &Tables {
        self.path.tables()
    }

    /// The tables, for the control plane (users, expectations, gateways, certificates, IKE
    /// SAs); report each change with [`Dataplane::changed`].
    pub fn tables_mut(&mut self) -> &mut Tables {
        self.path.tables_mut()
    }

    /// An item was changed through [`Dataplane::tables_mut`]: sync it.
    pub fn changed(&mut self, key: ItemKey) {
        self.path.changed(key);
        self.path.hand_changes(&mut self.engine);
    }

    /// The cluster's other members changed ([`SyncEngine::set_peers`]).
    pub fn set_peers(&mut self, peers: Vec<ha_proto::msg::Serial>) {
        self.engine.set_peers(peers);
    }

    /// The sync engine (counters, backlog).
    pub fn engine(&self) -> &SyncEngine {
        &self.engine
    }
}
