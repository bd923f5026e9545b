//! The sans-IO state-sync engine: no sockets, no clock. The caller hands it received
//! datagrams ([`SyncEngine::on_datagram`]) and the time, tells it which items changed
//! ([`SyncEngine::changed`]), and sends the datagrams [`SyncEngine::poll_transmit`] returns to
//! the peer (over UDP in the daemon and the bench, over an in-memory channel in the tests).
//!
//! # Wire
//! Every datagram is one frame sealed with the cluster's state-sync key
//! (`ha_proto::frame::seal`, [`Channel::StateSync`], at most [`MAX_BODY_LEN`] of body), checked
//! against a replay window on receipt. The body is a postcard [`Head`], followed for
//! [`Head::Data`] by postcard [`Record`]s up to the end of the body.
//!
//! # Reliability
//! Data frames carry their own reliable sequence number (`rseq`) in a *stream*; the frame
//! header's sequence number is new on every (re)transmission so the replay window accepts
//! retransmissions. The receiver applies frames in `rseq` order (later ones wait in a bounded
//! reorder buffer) and answers with a cumulative acknowledgement (`next`) plus a selective
//! bitmap of the 64 frames after it. The sender keeps at most `window` frames in flight and
//! retransmits a frame not acknowledged within the retransmission timeout (RFC 6298 estimate,
//! at least `retransmit_ms`, doubled per resend), until the peer is declared
//! lost (`peer_timeout_ms` without any frame). No update is dropped while the peer lives; when
//! it is lost, the bulk synchronization at its return repairs everything.
//!
//! # Bulk synchronization
//! The receiver drives it: on meeting a new peer (first frame, or a new boot epoch, or after a
//! loss), or when asked ([`SyncEngine::request_resync`], e.g. by a new active before a planned
//! swap), it sends [`Head::Resync`] with a request id (repeated with every hello until
//! answered). The sender then restarts its stream and sends `BulkBegin`, the current value of
//! every live item, `BulkEnd`, interleaved with live changes in the same ordered stream (each
//! record carries the item's value at the moment it is framed, so order is preserved). Items
//! of the receiver that the bulk did not refresh are removed at `BulkEnd` (passive only).
//! A bulk that makes no progress for `bulk_stall_ms` is requested again under a new id and
//! reported ([`SyncEvent::BulkStalled`]); progress is reported every [`PROGRESS_EVERY`]
//! records.

use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;

use ha_proto::frame::{self, HEADER_LEN, MAX_BODY_LEN, MAX_FRAME_LEN, TAG_LEN};
use ha_proto::keys::{KeySet, Keyring};
use ha_proto::msg::{Channel, Serial};
use ha_proto::replay::ReplayTable;
use ha_proto::seq::Sequencer;
use hashbrown::HashSet;
use serde::{Deserialize, Serialize};

use crate::tables::{
    CertEntry, CertStatus, ConnEntry, ConnKey, ConnState, ExpectKey, Expectation, GatewayStatus,
    Helper, HostEntry, IkeKey, IkeSa, Millis, Tables, UserEntry, ZoneAddr,
};

/// Records between two [`SyncEvent::BulkProgress`] events.
pub const PROGRESS_EVERY: u64 = 100_000;
/// Frames the receiver buffers ahead of the next expected one (reorder buffer bound).
pub const RX_WINDOW: u64 = 4096;
/// Senders tracked by the replay table: the members of a cluster.
const REPLAY_SLOTS: usize = ha_proto::msg::MAX_MEMBERS;

/// Tuning of the engine.
#[derive(Clone, Debug)]
pub struct SyncConfig {
    /// Cluster id (frame header).
    pub cluster_id: u32,
    /// This member's serial (frame header sender).
    pub me: Serial,
    /// This boot's epoch (must grow on every start).
    pub epoch: u32,
    /// Keys (the state-sync key seals the frames).
    pub keys: KeySet,
    /// Seal with the AEAD (encrypted bodies) instead of HMAC.
    pub aead: bool,
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
    /// Defaults for a LAN HA link.
    pub fn new(cluster_id: u32, me: Serial, epoch: u32, keys: KeySet) -> Self {
        Self {
            cluster_id,
            me,
            epoch,
            keys,
            aead: false,
            min_age_ms: 0,
            retransmit_ms: 20,
            window: 1024,
            max_pending: 1 << 21,
            hello_ms: 250,
            peer_timeout_ms: 3_000,
            bulk_stall_ms: 1_000,
        }
    }
}

/// An item of any table, by key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ItemKey {
    /// A connection.
    Conn(ConnKey),
    /// A host.
    Host(ZoneAddr),
    /// A user by address.
    User(IpAddr),
    /// A helper expectation.
    Expect(ExpectKey),
    /// A gateway.
    Gateway(ZoneAddr),
    /// A certificate serial.
    Cert(Vec<u8>),
    /// An IKE SA.
    Ike(IkeKey),
}

/// Head of a state-sync frame body.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Head {
    /// Liveness.
    Hello,
    /// Ordered records follow.
    Data {
        /// Sender's stream (restarted for every bulk synchronization).
        stream: u32,
        /// Reliable sequence number in the stream.
        rseq: u64,
    },
    /// Acknowledgement.
    Ack {
        /// Stream acknowledged.
        stream: u32,
        /// Every frame below this was received.
        next: u64,
        /// Bit i: frame `next + 1 + i` was received.
        sack: u64,
    },
    /// Please send a bulk synchronization (idempotent per id).
    Resync {
        /// Request id.
        id: u32,
    },
}

/// One change on the wire. Times are ages relative to the sender's clock at framing time
/// (the members' clocks are not comparable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Connection created or changed.
    Conn {
        /// Key.
        key: ConnKey,
        /// State.
        state: ConnState,
        /// Flags.
        flags: u8,
        /// Rule id.
        rule: u32,
        /// Milliseconds since creation.
        age: u64,
        /// Milliseconds since the last packet.
        idle: u64,
    },
    /// Connection removed.
    DelConn(ConnKey),
    /// Host learnt.
    Host(ZoneAddr, [u8; 6], u64),
    /// Host forgotten.
    DelHost(ZoneAddr),
    /// User authenticated: name, groups, milliseconds left.
    User(IpAddr, String, Vec<String>, u64),
    /// User logged out.
    DelUser(IpAddr),
    /// Expectation: helper, master connection, milliseconds left.
    Expect(ExpectKey, Helper, ConnKey, u64),
    /// Expectation used or expired.
    DelExpect(ExpectKey),
    /// Gateway status and milliseconds since its last change.
    Gateway(ZoneAddr, bool, u64),
    /// Gateway removed.
    DelGateway(ZoneAddr),
    /// Certificate serial status.
    Cert(Vec<u8>, CertStatus),
    /// Certificate serial removed.
    DelCert(Vec<u8>),
    /// IKE SA: peer, message ids out/in, ESP sequence out/in.
    Ike(IkeKey, IpAddr, u32, u32, u64, u64),
    /// IKE SA removed.
    DelIke(IkeKey),
    /// A bulk synchronization starts (`total` live items follow).
    BulkBegin {
        /// Request id it answers (0 when the sender started it itself).
        id: u32,
        /// Items it will carry.
        total: u64,
        /// The sender was active when it took the snapshot: its table is the whole truth,
        /// and what the bulk does not refresh is stale. A passive sender's (empty) bulk
        /// removes nothing.
        authoritative: bool,
    },
    /// The bulk synchronization is complete.
    BulkEnd {
        /// Request id.
        id: u32,
        /// Items sent.
        sent: u64,
    },
}

/// What happened, for the event log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncEvent {
    /// A peer (boot epoch) was heard for the first time or again after a loss.
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
    /// Records applied from the peer.
    pub records_applied: u64,
    /// Frames rejected (authentication, replay, cluster, decode).
    pub rejected: u64,
    /// Duplicate data frames received.
    pub duplicates: u64,
    /// Records too large for a frame (dropped, counted).
    pub oversize: u64,
}

/// A queued change: a key whose value is read when framed, or a record made at the change.
enum Pending {
    Key(ItemKey),
    Ready(Record),
}

struct Inflight {
    rseq: u64,
    body: Vec<u8>,
    sent_at: Millis,
    /// Transmissions so far (1 = sent once); the retransmission timeout doubles with each.
    sends: u32,
    acked: bool,
}

/// Frames retransmitted per [`SyncEngine::poll_transmit`] at most, oldest first: when the
/// peer was merely slow (its thread descheduled), the whole window times out at once; resending
/// it all would double the load exactly when the peer is behind. The acknowledgements that
/// arrive meanwhile cancel the rest.
pub const MAX_RETRANSMITS_PER_POLL: usize = 64;

/// Largest retransmission timeout (after backoff).
pub const MAX_RTO_MS: Millis = 1_000;

struct BulkOut {
    id: u32,
    authoritative: bool,
    conns: Vec<ConnKey>,
    others: Vec<ItemKey>,
    pos: usize,
    began: bool,
    total: u64,
}

struct BulkIn {
    id: u32,
    authoritative: bool,
    gen: u32,
    received: u64,
    total: u64,
}

struct Awaiting {
    id: u32,
    last_progress: Millis,
    attempt: u32,
}

struct Peer {
    epoch: u32,
    last_heard: Millis,
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

/// The engine: one per member, talking to one peer.
pub struct SyncEngine {
    cfg: SyncConfig,
    keyring: Keyring,
    seq: Sequencer,
    replay: ReplayTable<REPLAY_SLOTS>,
    peer: Option<Peer>,
    // Sender side.
    stream: u32,
    next_rseq: u64,
    inflight: VecDeque<Inflight>,
    pending: VecDeque<Pending>,
    deferred: VecDeque<(Millis, ConnKey)>,
    deferred_set: HashSet<ConnKey>,
    bulk_out: Option<BulkOut>,
    last_bulk_id: Option<u32>,
    carry: Option<Vec<u8>>,
    /// Smoothed round-trip time and its variation (RFC 6298), microsecond-free: ms × 8.
    srtt8: Option<u64>,
    rttvar4: u64,
    // Receiver side.
    rx: Option<(u32, u64)>,
    ooo: BTreeMap<u64, Vec<u8>>,
    ack_due: bool,
    bulk_in: Option<BulkIn>,
    awaiting: Option<Awaiting>,
    next_request_id: u32,
    completed_id: u32,
    // Both.
    last_hello: Option<Millis>,
    events: Vec<SyncEvent>,
    stats: SyncStats,
    scratch: Vec<u8>,
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("stream", &self.stream)
            .field("inflight", &self.inflight.len())
            .field("pending", &self.pending.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SyncEngine {
    /// A new engine; it finds its peer through the first frame it receives and hellos.
    pub fn new(cfg: SyncConfig) -> Self {
        let mut seq = Sequencer::new(cfg.cluster_id, cfg.me, cfg.epoch);
        seq.aead = cfg.aead;
        Self {
            keyring: Keyring::new(cfg.keys.clone()),
            seq,
            replay: ReplayTable::new(),
            peer: None,
            stream: 0,
            next_rseq: 0,
            inflight: VecDeque::new(),
            pending: VecDeque::new(),
            deferred: VecDeque::new(),
            deferred_set: HashSet::new(),
            bulk_out: None,
            last_bulk_id: None,
            carry: None,
            srtt8: None,
            rttvar4: 0,
            rx: None,
            ooo: BTreeMap::new(),
            ack_due: false,
            bulk_in: None,
            awaiting: None,
            next_request_id: 1,
            completed_id: 0,
            last_hello: None,
            events: Vec::new(),
            stats: SyncStats::default(),
            scratch: Vec::with_capacity(256),
            cfg,
        }
    }

    /// Counters.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// Whether a peer is currently heard.
    pub fn peer_up(&self) -> bool {
        self.peer.is_some()
    }

    /// Changes queued and frames in flight: 0 and 0 means everything sent was acknowledged.
    pub fn backlog(&self) -> (usize, usize) {
        (
            self.pending.len() + self.bulk_out.as_ref().map_or(0, |b| b.remaining()),
            self.inflight.len(),
        )
    }

    /// Data frames in flight at most (the configured window).
    pub fn window(&self) -> usize {
        self.cfg.window
    }

    /// Whether a bulk synchronization this member asked for has not completed yet.
    pub fn awaiting_bulk(&self) -> bool {
        self.awaiting.is_some()
    }

    /// Events since the last call.
    pub fn poll_events(&mut self) -> Vec<SyncEvent> {
        std::mem::take(&mut self.events)
    }

    /// An item changed (created, updated or removed): its current value (or its removal) is
    /// sent to the peer. Connections pass the sync filters when framed: flags (do not sync,
    /// local, proxied), larval state and minimum age. Nothing is queued while no peer is
    /// heard (its bulk synchronization will carry the state).
    pub fn changed(&mut self, key: ItemKey) {
        if self.peer.is_none() {
            return;
        }
        if self.pending.len() >= self.cfg.max_pending {
            self.pending.clear();
            self.events.push(SyncEvent::Overflow);
            self.start_bulk(0);
            return;
        }
        self.pending.push_back(Pending::Key(key));
    }

    /// A connection created or changed *here* (`entry.gen` is [`crate::tables::LOCAL_GEN`]),
    /// with its new value at hand: the record is made now, so framing needs no table lookup
    /// (the entry is in cache now, maybe not when the frame is built). Anything else (a
    /// synced entry, one younger than the minimum age) takes the [`SyncEngine::changed`]
    /// path.
    pub fn conn_changed(&mut self, key: ConnKey, entry: &ConnEntry, now: Millis) {
        if !entry.syncable() || self.peer.is_none() {
            return;
        }
        if entry.gen != crate::tables::LOCAL_GEN
            || now.saturating_sub(entry.created) < self.cfg.min_age_ms
        {
            self.changed(ItemKey::Conn(key));
            return;
        }
        if self.pending.len() >= self.cfg.max_pending {
            self.changed(ItemKey::Conn(key));
            return;
        }
        self.pending
            .push_back(Pending::Ready(conn_record(&key, entry, now)));
    }

    /// Asks the peer for a bulk synchronization (a new active before a planned swap, or a
    /// member that suspects it missed changes). Returns the request id to poll with
    /// [`SyncEngine::resync_status`]; `None` when no peer is heard.
    pub fn request_resync(&mut self, now: Millis) -> Option<u32> {
        self.peer.as_ref()?;
        let id = self.new_request_id();
        self.awaiting = Some(Awaiting {
            id,
            last_progress: now,
            attempt: 0,
        });
        self.last_hello = None; // send the request with the next poll
        Some(id)
    }

    /// State of resync request `id`.
    pub fn resync_status(&self, id: u32) -> ResyncStatus {
        if self.completed_id >= id {
            ResyncStatus::Done
        } else if self.peer.is_none() {
            ResyncStatus::NoPeer
        } else {
            ResyncStatus::Pending
        }
    }

    fn new_request_id(&mut self) -> u32 {
        let id = self.next_request_id;
        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
        id
    }

    /// A datagram from the network. Bad frames are counted and ignored.
    pub fn on_datagram(&mut self, tables: &mut Tables, bytes: &[u8], now: Millis) {
        self.on_datagram_observe(tables, bytes, now, &mut |_| {});
    }

    /// [`SyncEngine::on_datagram`], calling `observe` with every record applied (the bench
    /// measures lag with it).
    pub fn on_datagram_observe(
        &mut self,
        tables: &mut Tables,
        bytes: &[u8],
        now: Millis,
        observe: &mut dyn FnMut(&Record),
    ) {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let Some(buf) = buf.get_mut(..bytes.len()) else {
            self.stats.rejected += 1;
            return;
        };
        buf.copy_from_slice(bytes);
        let Ok(opened) = frame::open(&self.keyring, self.cfg.cluster_id, buf) else {
            self.stats.rejected += 1;
            return;
        };
        let h = opened.header;
        if h.channel != Channel::StateSync || h.sender == self.cfg.me {
            self.stats.rejected += 1;
            return;
        }
        if self.replay.check_header(&h).is_err() {
            self.stats.rejected += 1;
            return;
        }
        let Ok((head, rest)) = postcard::take_from_bytes::<Head>(opened.body) else {
            self.stats.rejected += 1;
            return;
        };
        self.heard(h.epoch, now);
        match head {
            Head::Hello => {}
            Head::Resync { id } => match &mut self.bulk_out {
                // A bulk we started ourselves (peer met again, overflow) answers the request:
                // adopt its id rather than start over.
                Some(b) if b.id == 0 => {
                    b.id = id;
                    self.last_bulk_id = Some(id);
                }
                _ if self.last_bulk_id != Some(id) => self.start_bulk(id),
                _ => {}
            },
            Head::Ack { stream, next, sack } => self.on_ack(stream, next, sack, now),
            Head::Data { stream, rseq } => {
                self.on_data(tables, stream, rseq, rest, now, observe);
            }
        }
    }

    fn heard(&mut self, epoch: u32, now: Millis) {
        match &mut self.peer {
            Some(p) if p.epoch == epoch => p.last_heard = now,
            _ => {
                // A new peer, a restarted one, or one back after a loss: new streams both
                // ways and a bulk synchronization of its table.
                self.peer = Some(Peer {
                    epoch,
                    last_heard: now,
                });
                self.events.push(SyncEvent::PeerUp { epoch });
                // Our changes queued or in flight are dropped with the old stream: the peer
                // gets our whole table instead (self-initiated bulk; a resync request from
                // it adopts this bulk). Without this, a peer that did not notice the loss
                // (asymmetric timeouts) would miss those changes for good.
                self.start_bulk(0);
                self.rx = None;
                self.ooo.clear();
                self.bulk_in = None;
                let id = self.new_request_id();
                self.awaiting = Some(Awaiting {
                    id,
                    last_progress: now,
                    attempt: 0,
                });
                self.last_hello = None;
            }
        }
    }

    fn reset_tx(&mut self) {
        self.stream = self.stream.wrapping_add(1);
        self.next_rseq = 0;
        self.inflight.clear();
        self.pending.clear();
        self.bulk_out = None;
        self.srtt8 = None;
        self.carry = None;
    }

    fn start_bulk(&mut self, id: u32) {
        self.reset_tx();
        self.last_bulk_id = Some(id);
        // Keys only; values are read when framed.
        self.bulk_out = Some(BulkOut {
            id,
            authoritative: false,
            conns: Vec::new(),
            others: Vec::new(),
            pos: 0,
            began: false,
            total: 0,
        });
    }

    fn on_ack(&mut self, stream: u32, next: u64, sack: u64, now: Millis) {
        if stream != self.stream {
            return;
        }
        let mut sample = None;
        for f in self.inflight.iter_mut() {
            if f.rseq > next.saturating_add(64) {
                break;
            }
            let selected = f.rseq > next && sack & (1 << (f.rseq - next - 1)) != 0;
            if !f.acked && (f.rseq < next || selected) {
                f.acked = true;
                // Karn: only frames sent once give a round-trip sample.
                if f.sends == 1 {
                    sample = Some(now.saturating_sub(f.sent_at));
                }
            }
        }
        if let Some(r) = sample {
            self.rtt_sample(r);
        }
        while self.inflight.front().is_some_and(|f| f.acked) {
            self.inflight.pop_front();
        }
    }

    /// RFC 6298 estimator in integer milliseconds (srtt × 8, rttvar × 4).
    fn rtt_sample(&mut self, r: Millis) {
        match self.srtt8 {
            None => {
                self.srtt8 = Some(r * 8);
                self.rttvar4 = r * 2;
            }
            Some(s8) => {
                let srtt = s8 / 8;
                let dev = srtt.abs_diff(r);
                self.rttvar4 = self.rttvar4 - self.rttvar4 / 4 + dev;
                self.srtt8 = Some(s8 - s8 / 8 + r);
            }
        }
    }

    /// Current retransmission timeout: srtt + 4 rttvar, at least `retransmit_ms`.
    pub fn rto(&self) -> Millis {
        let est = self.srtt8.map_or(0, |s8| s8 / 8 + self.rttvar4);
        est.clamp(self.cfg.retransmit_ms, MAX_RTO_MS)
    }

    fn on_data(
        &mut self,
        tables: &mut Tables,
        stream: u32,
        rseq: u64,
        records: &[u8],
        now: Millis,
        observe: &mut dyn FnMut(&Record),
    ) {
        let next = match self.rx {
            Some((s, next)) if s == stream => next,
            // A newer stream (bulk restart): start over at its frame 0. Streams are compared
            // with wrapping arithmetic.
            Some((s, _)) if stream.wrapping_sub(s) < u32::MAX / 2 => {
                self.ooo.clear();
                self.rx = Some((stream, 0));
                0
            }
            Some(_) => return, // an older stream's late frame
            None => {
                self.rx = Some((stream, 0));
                0
            }
        };
        self.ack_due = true;
        if rseq < next {
            self.stats.duplicates += 1;
            return;
        }
        if rseq > next {
            if rseq - next < RX_WINDOW {
                self.ooo.entry(rseq).or_insert_with(|| records.to_vec());
            }
            return;
        }
        self.apply(tables, records, now, observe);
        let mut next = next.saturating_add(1);
        while let Some(body) = self.ooo.remove(&next) {
            self.apply(tables, &body, now, observe);
            next += 1;
        }
        self.rx = Some((stream, next));
        if let Some(a) = &mut self.awaiting {
            a.last_progress = now;
        }
    }

    fn apply(
        &mut self,
        tables: &mut Tables,
        mut rest: &[u8],
        now: Millis,
        observe: &mut dyn FnMut(&Record),
    ) {
        while !rest.is_empty() {
            let Ok((rec, tail)) = postcard::take_from_bytes::<Record>(rest) else {
                // An authenticated frame we cannot decode: a version mismatch; count it.
                self.stats.rejected += 1;
                return;
            };
            rest = tail;
            self.apply_record(tables, &rec, now);
            observe(&rec);
        }
    }

    fn apply_record(&mut self, t: &mut Tables, rec: &Record, now: Millis) {
        self.stats.records_applied += 1;
        let gen = t.install_gen();
        let back = |ms: u64| now.saturating_sub(ms);
        match rec {
            Record::Conn {
                key,
                state,
                flags,
                rule,
                age,
                idle,
            } => {
                t.upsert_conn_synced(
                    *key,
                    ConnEntry {
                        state: *state,
                        flags: *flags,
                        gen,
                        rule: *rule,
                        created: back(*age),
                        last_seen: back(*idle),
                        packets: [0; 2],
                        bytes: [0; 2],
                    },
                );
                self.bulk_received();
            }
            Record::DelConn(k) => {
                t.remove_conn(k);
            }
            Record::Host(k, mac, idle) => {
                t.hosts.insert(
                    *k,
                    HostEntry {
                        mac: *mac,
                        last_seen: back(*idle),
                        gen,
                    },
                );
                self.bulk_received();
            }
            Record::DelHost(k) => {
                t.hosts.remove(k);
            }
            Record::User(k, name, groups, left) => {
                t.users.insert(
                    *k,
                    UserEntry {
                        name: name.clone(),
                        groups: groups.clone(),
                        expires: now.saturating_add(*left),
                        gen,
                    },
                );
                self.bulk_received();
            }
            Record::DelUser(k) => {
                t.users.remove(k);
            }
            Record::Expect(k, helper, master, left) => {
                t.expects.insert(
                    *k,
                    Expectation {
                        helper: *helper,
                        master: *master,
                        expires: now.saturating_add(*left),
                        gen,
                    },
                );
                self.bulk_received();
            }
            Record::DelExpect(k) => {
                t.expects.remove(k);
            }
            Record::Gateway(k, up, age) => {
                t.gateways.insert(
                    *k,
                    GatewayStatus {
                        up: *up,
                        since: back(*age),
                        gen,
                    },
                );
                self.bulk_received();
            }
            Record::DelGateway(k) => {
                t.gateways.remove(k);
            }
            Record::Cert(k, status) => {
                t.certs.insert(
                    k.clone(),
                    CertEntry {
                        status: *status,
                        gen,
                    },
                );
                self.bulk_received();
            }
            Record::DelCert(k) => {
                t.certs.remove(k);
            }
            Record::Ike(k, peer, mo, mi, so, si) => {
                t.insert_ike(
                    *k,
                    IkeSa {
                        peer: *peer,
                        msg_id_out: *mo,
                        msg_id_in: *mi,
                        esp_seq_out: *so,
                        esp_seq_in: *si,
                        gen,
                    },
                );
                self.bulk_received();
            }
            Record::DelIke(k) => {
                t.remove_ike(k);
            }
            Record::BulkBegin {
                id,
                total,
                authoritative,
            } => {
                self.bulk_in = Some(BulkIn {
                    id: *id,
                    authoritative: *authoritative,
                    gen: t.next_rx_gen(),
                    received: 0,
                    total: *total,
                });
            }
            Record::BulkEnd { id, .. } => {
                if let Some(b) = self.bulk_in.take() {
                    // While active our table is authoritative: keep what the peer lacks; and
                    // a passive peer's bulk says nothing about what is stale.
                    let stale_removed = if t.is_active() || !b.authoritative {
                        0
                    } else {
                        t.drop_stale_synced(b.gen)
                    };
                    self.events.push(SyncEvent::BulkReceived {
                        id: *id,
                        records: b.received,
                        stale_removed,
                    });
                }
                if let Some(a) = &self.awaiting {
                    if a.id == *id || *id == 0 {
                        self.completed_id = self.completed_id.max(a.id);
                        self.awaiting = None;
                    }
                }
            }
        }
    }

    fn bulk_received(&mut self) {
        if let Some(b) = &mut self.bulk_in {
            b.received += 1;
            if b.received % PROGRESS_EVERY == 0 {
                self.events.push(SyncEvent::BulkProgress {
                    outgoing: false,
                    id: b.id,
                    done: b.received,
                    total: b.total,
                });
            }
        }
    }

    /// Runs the timers and returns the datagrams to send to the peer now: acknowledgements,
    /// retransmissions, new data frames (within the window), hellos and resync requests.
    pub fn poll_transmit(&mut self, tables: &Tables, now: Millis) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        if let Some(p) = &self.peer {
            if now.saturating_sub(p.last_heard) > self.cfg.peer_timeout_ms {
                self.peer = None;
                self.reset_tx();
                self.rx = None;
                self.ooo.clear();
                self.bulk_in = None;
                self.awaiting = None;
                self.last_bulk_id = None;
                self.events.push(SyncEvent::PeerLost);
            }
        }
        if self.ack_due {
            self.ack_due = false;
            if let Some((stream, next)) = self.rx {
                let mut sack = 0u64;
                for (&r, _) in self
                    .ooo
                    .range(next.saturating_add(1)..next.saturating_add(65))
                {
                    sack |= 1 << (r - next - 1);
                }
                self.push_msg(&Head::Ack { stream, next, sack }, &mut out);
            }
        }
        let hello_due = self
            .last_hello
            .is_none_or(|t| now.saturating_sub(t) >= self.cfg.hello_ms);
        if hello_due {
            self.last_hello = Some(now);
            self.push_msg(&Head::Hello, &mut out);
            if self.peer.is_some() {
                if let Some(a) = &mut self.awaiting {
                    if now.saturating_sub(a.last_progress) > self.cfg.bulk_stall_ms {
                        a.attempt += 1;
                        a.last_progress = now;
                        let attempt = a.attempt;
                        let new_id = self.next_request_id;
                        self.next_request_id = self.next_request_id.wrapping_add(1).max(1);
                        if let Some(a) = &mut self.awaiting {
                            a.id = new_id;
                        }
                        self.events.push(SyncEvent::BulkStalled { attempt, new_id });
                    }
                }
                if let Some(a) = &self.awaiting {
                    let id = a.id;
                    self.push_msg(&Head::Resync { id }, &mut out);
                }
            }
        }
        if self.peer.is_none() {
            return out;
        }
        // Retransmissions first (oldest first).
        let rto = self.rto();
        let mut resend = Vec::new();
        for f in self.inflight.iter_mut() {
            if resend.len() >= MAX_RETRANSMITS_PER_POLL {
                break;
            }
            let backoff = rto
                .saturating_mul(1 << (f.sends.saturating_sub(1)).min(6))
                .min(MAX_RTO_MS);
            if !f.acked && now.saturating_sub(f.sent_at) >= backoff {
                f.sent_at = now;
                f.sends = f.sends.saturating_add(1);
                resend.push(f.body.clone());
            }
        }
        for body in resend {
            self.stats.retransmits += 1;
            self.push_body(&body, &mut out);
        }
        // Minimum-age deferrals that came due.
        while self.deferred.front().is_some_and(|(due, _)| *due <= now) {
            if let Some((_, k)) = self.deferred.pop_front() {
                self.deferred_set.remove(&k);
                // Gone before it was old enough: the peer never heard of it.
                if tables.conn_peek(&k).is_some() {
                    self.pending.push_back(Pending::Key(ItemKey::Conn(k)));
                }
            }
        }
        if self.bulk_out.as_ref().is_some_and(|b| !b.began) {
            self.snapshot(tables);
        }
        // New data frames.
        while self.inflight.len() < self.cfg.window {
            let Some(body) = self.build_data(tables, now) else {
                break;
            };
            self.stats.data_sent += 1;
            self.push_body(&body, &mut out);
            self.inflight.push_back(Inflight {
                rseq: self.next_rseq - 1,
                body,
                sent_at: now,
                sends: 1,
                acked: false,
            });
        }
        out
    }

    fn snapshot(&mut self, t: &Tables) {
        let Some(b) = &mut self.bulk_out else { return };
        b.authoritative = t.is_active();
        if !t.is_active() {
            // A passive member's table is not authoritative: it answers with an empty bulk
            // (the requester still learns that it is complete).
            b.total = 0;
            return;
        }
        b.conns = t.live_conn_keys();
        b.others.clear();
        let live = |g: u32| t.is_live(g);
        b.others.extend(
            t.hosts
                .iter()
                .filter(|(_, e)| live(e.gen))
                .map(|(k, _)| ItemKey::Host(*k)),
        );
        b.others.extend(
            t.users
                .iter()
                .filter(|(_, e)| live(e.gen))
                .map(|(k, _)| ItemKey::User(*k)),
        );
        b.others.extend(
            t.expects
                .iter()
                .filter(|(_, e)| live(e.gen))
                .map(|(k, _)| ItemKey::Expect(*k)),
        );
        b.others.extend(
            t.gateways
                .iter()
                .filter(|(_, e)| live(e.gen))
                .map(|(k, _)| ItemKey::Gateway(*k)),
        );
        b.others.extend(
            t.certs
                .iter()
                .filter(|(_, e)| live(e.gen))
                .map(|(k, _)| ItemKey::Cert(k.clone())),
        );
        b.others.extend(
            t.ike_keys()
                .into_iter()
                .filter(|k| t.ike_raw(k).is_some_and(|s| live(s.gen)))
                .map(ItemKey::Ike),
        );
        b.total = (b.conns.len() + b.others.len()) as u64;
    }

    /// Builds the next data frame body, or `None` when there is nothing to send.
    fn build_data(&mut self, t: &Tables, now: Millis) -> Option<Vec<u8>> {
        let head = Head::Data {
            stream: self.stream,
            rseq: self.next_rseq,
        };
        let Ok(mut body) = postcard::to_extend(&head, Vec::with_capacity(MAX_BODY_LEN)) else {
            return None;
        };
        let head_len = body.len();
        if let Some(c) = self.carry.take() {
            body.extend_from_slice(&c);
        }
        loop {
            // Live changes first, then the bulk.
            let rec = if let Some(p) = self.pending.pop_front() {
                match p {
                    Pending::Ready(r) => r,
                    Pending::Key(k) => match self.record_for(t, k, now) {
                        Some(r) => r,
                        None => continue,
                    },
                }
            } else if let Some(r) = self.next_bulk_record(t, now) {
                r
            } else {
                break;
            };
            let mut scratch = std::mem::take(&mut self.scratch);
            scratch.clear();
            match postcard::to_extend(&rec, scratch) {
                Ok(v) => self.scratch = v,
                Err(_) => {
                    self.stats.oversize += 1;
                    continue;
                }
            }
            if HEADER_LEN + body.len() + self.scratch.len() + TAG_LEN > MAX_FRAME_LEN {
                if body.len() == head_len {
                    self.stats.oversize += 1;
                    continue;
                }
                self.carry = Some(self.scratch.clone());
                break;
            }
            self.stats.records_sent += 1;
            body.extend_from_slice(&self.scratch);
        }
        if body.len() == head_len {
            return None;
        }
        self.next_rseq += 1;
        Some(body)
    }

    fn next_bulk_record(&mut self, t: &Tables, now: Millis) -> Option<Record> {
        loop {
            let b = self.bulk_out.as_mut()?;
            if !b.began {
                b.began = true;
                return Some(Record::BulkBegin {
                    id: b.id,
                    total: b.total,
                    authoritative: b.authoritative,
                });
            }
            let n_conns = b.conns.len();
            let total = n_conns + b.others.len();
            if b.pos >= total {
                let (id, sent) = (b.id, b.pos as u64);
                self.bulk_out = None;
                self.events.push(SyncEvent::BulkSent { id, records: sent });
                return Some(Record::BulkEnd { id, sent });
            }
            let key = if b.pos < n_conns {
                ItemKey::Conn(b.conns[b.pos])
            } else {
                b.others[b.pos - n_conns].clone()
            };
            b.pos += 1;
            if b.pos as u64 % PROGRESS_EVERY == 0 {
                let ev = SyncEvent::BulkProgress {
                    outgoing: true,
                    id: b.id,
                    done: b.pos as u64,
                    total: b.total,
                };
                self.events.push(ev);
            }
            // An item deleted since the snapshot is skipped (its delete went as a change).
            if let Some(r) = item_record(t, &key, now, true) {
                return Some(r);
            }
        }
    }

    /// The record of a live change, or `None` when it must not be sent (filters, or deferred
    /// by the minimum age).
    fn record_for(&mut self, t: &Tables, key: ItemKey, now: Millis) -> Option<Record> {
        if let ItemKey::Conn(k) = &key {
            match t.conn_peek(k) {
                Some(e) => {
                    if !e.syncable() || !t.is_live(e.gen) {
                        return None;
                    }
                    let age = now.saturating_sub(e.created);
                    if age < self.cfg.min_age_ms {
                        if self.deferred_set.insert(*k) {
                            self.deferred
                                .push_back((e.created + self.cfg.min_age_ms, *k));
                        }
                        return None;
                    }
                    // One lookup per record: built from the entry found.
                    return Some(conn_record(k, e, now));
                }
                // Removed before it was ever old enough to be sent.
                None if self.deferred_set.contains(k) => return None,
                None => {}
            }
        }
        item_record(t, &key, now, false)
    }

    fn push_msg(&mut self, head: &Head, out: &mut Vec<Vec<u8>>) {
        if let Ok(body) = postcard::to_extend(head, Vec::with_capacity(32)) {
            self.push_body(&body, out);
        }
    }

    fn push_body(&mut self, body: &[u8], out: &mut Vec<Vec<u8>>) {
        let hdr = self.seq.header(Channel::StateSync, self.cfg.keys.key_id());
        let mut frame = vec![0u8; HEADER_LEN + body.len() + TAG_LEN];
        if let Ok(n) = frame::seal(&self.cfg.keys, &hdr, body, &mut frame) {
            frame.truncate(n);
            out.push(frame);
        }
    }
}

impl BulkOut {
    fn remaining(&self) -> usize {
        (self.conns.len() + self.others.len()).saturating_sub(self.pos)
    }
}

fn conn_record(k: &ConnKey, e: &ConnEntry, now: Millis) -> Record {
    Record::Conn {
        key: *k,
        state: e.state,
        flags: e.flags,
        rule: e.rule,
        age: now.saturating_sub(e.created),
        idle: now.saturating_sub(e.last_seen),
    }
}

/// The record carrying an item's current value, or its removal when absent (`None` for an
/// absent item in a bulk, or a connection that must not be synced).
fn item_record(t: &Tables, key: &ItemKey, now: Millis, bulk: bool) -> Option<Record> {
    let left = |at: Millis| at.saturating_sub(now);
    let ago = |at: Millis| now.saturating_sub(at);
    let r = match key {
        ItemKey::Conn(k) => match t.conn_peek(k) {
            Some(e) if e.syncable() => conn_record(k, e, now),
            Some(_) => return None,
            None => Record::DelConn(*k),
        },
        ItemKey::Host(k) => match t.hosts.get(k) {
            Some(e) => Record::Host(*k, e.mac, ago(e.last_seen)),
            None => Record::DelHost(*k),
        },
        ItemKey::User(k) => match t.users.get(k) {
            Some(e) => Record::User(*k, e.name.clone(), e.groups.clone(), left(e.expires)),
            None => Record::DelUser(*k),
        },
        ItemKey::Expect(k) => match t.expects.get(k) {
            Some(e) => Record::Expect(*k, e.helper, e.master, left(e.expires)),
            None => Record::DelExpect(*k),
        },
        ItemKey::Gateway(k) => match t.gateways.get(k) {
            Some(e) => Record::Gateway(*k, e.up, ago(e.since)),
            None => Record::DelGateway(*k),
        },
        ItemKey::Cert(k) => match t.certs.get(k) {
            Some(e) => Record::Cert(k.clone(), e.status),
            None => Record::DelCert(k.clone()),
        },
        ItemKey::Ike(k) => match t.ike_sa(k) {
            Some(s) => Record::Ike(
                *k,
                s.peer,
                s.msg_id_out,
                s.msg_id_in,
                s.esp_seq_out,
                s.esp_seq_in,
            ),
            None => Record::DelIke(*k),
        },
    };
    if bulk
        && matches!(
            r,
            Record::DelConn(_)
                | Record::DelHost(_)
                | Record::DelUser(_)
                | Record::DelExpect(_)
                | Record::DelGateway(_)
                | Record::DelCert(_)
                | Record::DelIke(_)
        )
    {
        return None;
    }
    Some(r)
}
