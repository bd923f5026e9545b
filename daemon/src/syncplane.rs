//! The connection-state sync as the rest of the daemon sees it: the trait the data path's
//! sync engine implements ([`SyncPlane`]), its events for the event log, and the hooks the
//! management server calls before a planned swap and through a PSK rollover. Kept apart from
//! `app` (which wires them) so that the management server and the data-path adapter depend
//! on this module only, not on each other through `app`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::runtime::unix_ms;
use crate::synckeys::{KeyPhase, KeyStep};

/// The connection-state sync as the daemon drives it (implemented over the dataplane crate's
/// engine by the daemon's dataplane adapter), for a packet path of type `P` (the filter in
/// the fast path's [`crate::packetio::Core`]).
///
/// The sync half is locked apart from the packet path: the crypto calls ([`SyncPlane::open`],
/// [`SyncPlane::seal_all`]) take no packet-path argument, so the sync thread runs them without
/// the lock the receive threads take per packet; the table calls ([`SyncPlane::handle`],
/// [`SyncPlane::poll_messages`]) get the packet path, locked for just that call. Lock order:
/// this half first, then the packet path's.
pub trait SyncPlane<P>: Send + 'static {
    /// A datagram the endpoint accepted.
    type Opened: Send;
    /// A message to send, not sealed yet.
    type Outgoing: Send;
    /// Opens a datagram from the peer's daemon (crypto, sender and replay checks); `None`
    /// when refused (counted).
    fn open(&mut self, bytes: &[u8]) -> Option<Self::Opened>;
    /// Acts on an opened datagram: records applied to the packet path's tables.
    fn handle(&mut self, path: &mut P, opened: Self::Opened, now: Instant);
    /// Messages to send to the peer now (changes, acknowledgements, retransmissions, bulk),
    /// made from the packet path's tables and the changes it made.
    fn poll_messages(&mut self, path: &mut P, now: Instant) -> Vec<Self::Outgoing>;
    /// Seals messages into datagrams.
    fn seal_all(&mut self, msgs: Vec<Self::Outgoing>) -> Vec<Vec<u8>>;
    /// [`SyncPlane::open`] then [`SyncPlane::handle`], for a caller on one thread.
    fn on_datagram(&mut self, path: &mut P, bytes: &[u8], now: Instant) {
        if let Some(o) = self.open(bytes) {
            self.handle(path, o, now);
        }
    }
    /// [`SyncPlane::poll_messages`] then [`SyncPlane::seal_all`], for a caller on one thread.
    fn poll_transmit(&mut self, path: &mut P, now: Instant) -> Vec<Vec<u8>> {
        let msgs = self.poll_messages(path, now);
        self.seal_all(msgs)
    }
    /// Sync events since the last call (bulk synchronization sent or received), for the
    /// event log.
    fn poll_events(&mut self) -> Vec<SyncEvent>;
    /// Asks the peer for its whole table (before a planned swap makes this member active);
    /// the request's id, or `None` when this sync plane cannot resync on demand.
    fn request_resync(&mut self, _now: Instant) -> Option<u32> {
        None
    }
    /// Where resync request `id` stands.
    fn resync_state(&self, _id: u32) -> ResyncState {
        ResyncState::Done
    }
    /// Whether every change made here has been acknowledged by the peer (nothing waiting in
    /// the packet path, nothing queued, nothing in flight, no bulk under way):
    /// [`ResyncState::Done`] when so, [`ResyncState::NoPeer`] when no peer is heard, `None`
    /// when this sync plane cannot tell. The active waits for it before it hands over.
    fn drain_state(&self, _path: &P) -> Option<ResyncState> {
        None
    }
    /// Applies one step of a PSK rollover to the state-sync keys ([`crate::synckeys`]); a
    /// sync plane without keys has nothing to do.
    fn key_step(&mut self, _step: &KeyStep) -> Result<(), String> {
        Ok(())
    }
    /// Counters of the state sync for `info --verbose`: frames refused per reason, records
    /// refused per table, the tables' sizes.
    fn counters(&self, _path: &P) -> Vec<(String, u64)> {
        Vec::new()
    }
    /// The cluster's other members changed (a membership change): only they may send.
    fn set_peers(&mut self, _peers: Vec<ha_proto::msg::Serial>) {}
    /// Tells the peer what this member is: its controller's model (the peer's `hactl
    /// info` shows it).
    fn set_about(&mut self, _model: &str) {}
    /// What the peer last said it is: its serial and its controller's model.
    fn peer_about(&self) -> Option<(ha_proto::msg::Serial, String)> {
        None
    }
    /// Whether this member holds its peer's state (`None`: this sync plane keeps none).
    fn peer_table(&self) -> Option<ha_dataplane::sync::PeerTable> {
        None
    }
}

/// The state behind the packet path's lock, holding the packet path `P` a [`SyncPlane`]
/// works on: the fast path's [`crate::packetio::Core`] (its filter), or the kernel path's
/// core itself.
pub trait HoldsPath<P>: Send + 'static {
    /// The packet path.
    fn path_mut(&mut self) -> &mut P;
}

impl<P: Send + 'static> HoldsPath<P> for crate::packetio::Core<P> {
    fn path_mut(&mut self) -> &mut P {
        &mut self.filter
    }
}

/// No state sync (a packet path whose table is not synced, as in the daemon's own tests).
#[derive(Debug, Default)]
pub struct NoSync;

impl<P> SyncPlane<P> for NoSync {
    type Opened = ();
    type Outgoing = ();
    fn open(&mut self, _bytes: &[u8]) -> Option<()> {
        None
    }
    fn handle(&mut self, _path: &mut P, _opened: (), _now: Instant) {}
    fn poll_messages(&mut self, _path: &mut P, _now: Instant) -> Vec<()> {
        Vec::new()
    }
    fn seal_all(&mut self, _msgs: Vec<()>) -> Vec<Vec<u8>> {
        Vec::new()
    }
    fn poll_events(&mut self) -> Vec<SyncEvent> {
        Vec::new()
    }
}

/// Progress of a resync request ([`SyncPlane::request_resync`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncState {
    /// The peer's table is still arriving.
    Pending,
    /// The whole table arrived.
    Done,
    /// No peer is heard: nothing to wait for.
    NoPeer,
}

/// How the wait for a resync before a planned swap ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResyncOutcome {
    /// The peer's whole table arrived after this long.
    Complete(Duration),
    /// Not complete within the bound; the swap goes on (and the outcome is reported).
    TimedOut(Duration),
    /// No peer heard.
    NoPeer,
    /// The sync plane cannot resync on demand (the builtin flow table), or no sync is set up.
    Unsupported,
}

/// Asks the peer for a resync and waits for it, at most the given bound (called by the
/// management server before a planned swap).
pub type ResyncHook = Arc<dyn Fn(Duration) -> ResyncOutcome + Send + Sync>;

/// Waits until the peer has acknowledged every change made here (see
/// [`SyncPlane::drain_state`]), at most the given bound (called by the management server on
/// the active before a planned swap it starts by going passive).
pub type DrainHook = Arc<dyn Fn(Duration) -> ResyncOutcome + Send + Sync>;

/// A state-sync event for the event log (SPEC E3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncEvent {
    /// The whole table went to a (re)started peer.
    BulkSent {
        /// Connections sent.
        records: usize,
        /// The peer (the sync session's), when known.
        peer: Option<String>,
    },
    /// A peer's whole table arrived.
    BulkReceived {
        /// Connections received.
        records: usize,
        /// The peer (the sync session's), when known.
        peer: Option<String>,
    },
    /// Records of the peer refused by a table: at its cap (`cap`), or larger than the table
    /// stores (`cap` is `None`).
    RecordsRefused {
        /// The table's name.
        table: &'static str,
        /// Its cap, when that was the reason.
        cap: Option<usize>,
        /// Records refused since the previous such event.
        count: u64,
    },
}

impl SyncEvent {
    /// The event-log entry.
    pub fn to_event(&self) -> ha_mgmt_api::Event {
        let member = match self {
            SyncEvent::BulkSent { peer, .. } | SyncEvent::BulkReceived { peer, .. } => peer.clone(),
            SyncEvent::RecordsRefused { .. } => None,
        };
        let (kind, detail) = match self {
            SyncEvent::BulkSent { records, .. } => (
                ha_mgmt_api::EventKind::BulkSyncSent,
                format!("{records} connections sent to the peer"),
            ),
            SyncEvent::BulkReceived { records, .. } => (
                ha_mgmt_api::EventKind::BulkSyncReceived,
                format!("{records} connections received from the peer"),
            ),
            SyncEvent::RecordsRefused {
                table,
                cap: Some(cap),
                count,
            } => (
                ha_mgmt_api::EventKind::StateSyncRefused,
                format!("{count} {table} records of the peer refused: table at its cap of {cap}"),
            ),
            SyncEvent::RecordsRefused {
                table,
                cap: None,
                count,
            } => (
                ha_mgmt_api::EventKind::StateSyncRefused,
                format!(
                    "{count} {table} records of the peer refused: larger than the table stores"
                ),
            ),
        };
        ha_mgmt_api::Event {
            time_ms: unix_ms(),
            kind,
            member,
            detail,
            seq: None,
        }
    }
}

/// Moves the state-sync keys through a phase of a PSK rollover (to key id `u8`, PSK
/// `[u8; 32]`), called by the management server once the controller confirmed the phase:
/// the keyring file first, then the sync engine. `Ok` carries a line for the event log.
pub type SyncKeyHook = Arc<dyn Fn(KeyPhase, u8, &[u8; 32]) -> Result<String, String> + Send + Sync>;
