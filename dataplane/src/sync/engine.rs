//! The engine: one per member, talking to one peer at a time. It opens every frame through
//! the endpoint, keeps the session with the peer, applies the peer's records to the tables,
//! and frames this member's changes and bulks.

use std::collections::VecDeque;

use ha_proto::endpoint::Endpoint;
use ha_proto::keys::{KeySet, KeyringError};
use ha_proto::msg::{Channel, Serial, MAX_MEMBERS};
use hashbrown::HashSet;

use crate::tables::{ConnEntry, ConnKey, ItemKey, Millis, Refused, TableKind, Tables, LOCAL_GEN};

use super::bulk::{BulkIn, BulkOut, Requests};
use super::records::{change_of, conn_record, item_record, Change};
use super::retransmit::{Delivery, RxStream, TxStream};
use super::wire::{records_room, BulkBegin, Record, Records, SyncMsg};
use super::{PeerTable, ResyncStatus, SyncConfig, SyncEvent, SyncStats, REFUSAL_EVENT_EVERY_MS};

mod halves;

pub use halves::{Opened, Outgoing};

/// Senders tracked by the replay table: the members of a cluster.
const REPLAY_SLOTS: usize = MAX_MEMBERS;

/// The engine's timers and bounds (the configuration less identity and keys, which the
/// endpoint holds).
#[derive(Clone, Copy, Debug)]
struct Tuning {
    min_age_ms: Millis,
    retransmit_ms: Millis,
    window: usize,
    max_pending: usize,
    hello_ms: Millis,
    peer_timeout_ms: Millis,
    bulk_stall_ms: Millis,
}

/// A queued change: a key whose value is read when framed, or a record made at the change.
#[derive(Debug)]
enum Pending {
    Key(ItemKey),
    Ready(Record),
}

/// The peer this member talks state with: it sent a frame bound to this boot.
#[derive(Debug)]
struct Session {
    serial: Serial,
    epoch: u32,
    last_heard: Millis,
}

/// Refusals of one table since its last event.
#[derive(Clone, Copy, Debug, Default)]
struct RefusalLog {
    last_event: Option<Millis>,
    since: u64,
}

/// The engine: one per member, talking to one peer.
pub struct SyncEngine {
    ep: Endpoint<REPLAY_SLOTS>,
    peers: Vec<Serial>,
    tuning: Tuning,
    session: Option<Session>,
    /// A session was up at some time since this engine started.
    had_session: bool,
    /// The sender of the newest frame accepted (possibly unbound): whom hellos are bound to
    /// while no session exists.
    candidate: Option<Serial>,
    /// An unbound hello of a peer we have no session with arrived: answer at the next poll.
    answer_hello: bool,
    // Sender side.
    tx: TxStream,
    pending: VecDeque<Pending>,
    deferred: VecDeque<(Millis, ConnKey)>,
    deferred_set: HashSet<ConnKey>,
    bulk_out: Option<BulkOut>,
    last_bulk_id: Option<u32>,
    /// An encoded record that did not fit the previous frame, and whether it ends its frame
    /// ([`Record::is_newer`]).
    carry: Option<(Vec<u8>, bool)>,
    scratch: Vec<u8>,
    // Receiver side.
    rx: RxStream,
    bulk_in: Option<BulkIn>,
    requests: Requests,
    /// Whether the table was active at the last poll: a takeover sends the peer an
    /// authoritative bulk (see [`SyncEngine::poll_transmit`]).
    was_active: bool,
    // What this member is and what the peer said it is (`SyncMsg::About`).
    about: Option<String>,
    about_due: bool,
    last_about: Option<Millis>,
    peer_about: Option<(Serial, String)>,
    // Both.
    last_hello: Option<Millis>,
    events: Vec<SyncEvent>,
    stats: SyncStats,
    refusals: [RefusalLog; TableKind::COUNT],
}

impl std::fmt::Debug for SyncEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SyncEngine")
            .field("epoch", &self.ep.epoch())
            .field("stream", &self.tx.stream)
            .field("inflight", &self.tx.inflight.len())
            .field("pending", &self.pending.len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SyncEngine {
    /// A new engine; it finds its peer through the frames it receives and its hellos.
    pub fn new(cfg: SyncConfig) -> Self {
        let tuning = Tuning {
            min_age_ms: cfg.min_age_ms,
            retransmit_ms: cfg.retransmit_ms,
            window: cfg.window,
            max_pending: cfg.max_pending,
            hello_ms: cfg.hello_ms,
            peer_timeout_ms: cfg.peer_timeout_ms,
            bulk_stall_ms: cfg.bulk_stall_ms,
        };
        Self {
            ep: Endpoint::new(
                cfg.keyring,
                cfg.cluster_id,
                cfg.me,
                cfg.epoch,
                Channel::StateSync,
                Channel::StateSync,
                cfg.aead,
            ),
            peers: cfg.peers,
            tuning,
            session: None,
            had_session: false,
            candidate: None,
            answer_hello: false,
            tx: TxStream::default(),
            pending: VecDeque::new(),
            deferred: VecDeque::new(),
            deferred_set: HashSet::new(),
            bulk_out: None,
            last_bulk_id: None,
            carry: None,
            scratch: Vec::with_capacity(256),
            rx: RxStream::default(),
            bulk_in: None,
            was_active: false,
            requests: Requests::default(),
            about: None,
            about_due: false,
            last_about: None,
            peer_about: None,
            last_hello: None,
            events: Vec::new(),
            stats: SyncStats::default(),
            refusals: [RefusalLog::default(); TableKind::COUNT],
        }
    }

    /// What this member tells its peer it is: its management controller's model
    /// ([`SyncMsg::About`]); sent at once when it changes. A model that may not travel
    /// (empty, too long, not printable ASCII) is not sent.
    pub fn set_about(&mut self, model: &str) {
        if self.about.as_deref() != Some(model) && super::model_ok(model) {
            self.about = Some(model.to_string());
            self.about_due = true;
        }
    }

    /// What the peer last said it is: its serial and its controller's model.
    pub fn peer_about(&self) -> Option<(Serial, &str)> {
        self.peer_about.as_ref().map(|(s, m)| (*s, m.as_str()))
    }

    /// Counters.
    pub fn stats(&self) -> &SyncStats {
        &self.stats
    }

    /// The cluster id the state-sync keys are derived under.
    pub fn cluster_id(&self) -> u32 {
        self.ep.cluster_id()
    }

    /// This member's boot epoch.
    pub fn epoch(&self) -> u32 {
        self.ep.epoch()
    }

    /// Whether a session with a peer is up (it sent a frame bound to this boot lately).
    pub fn peer_up(&self) -> bool {
        self.session.is_some()
    }

    /// The peer of the session and its boot epoch.
    pub fn peer(&self) -> Option<(Serial, u32)> {
        self.session.as_ref().map(|s| (s.serial, s.epoch))
    }

    /// Changes queued and frames in flight: 0 and 0 means everything sent was acknowledged.
    pub fn backlog(&self) -> (usize, usize) {
        (
            self.pending.len() + self.bulk_out.as_ref().map_or(0, |b| b.remaining()),
            self.tx.inflight.len(),
        )
    }

    /// Data frames in flight at most (the configured window).
    pub fn window(&self) -> usize {
        self.tuning.window
    }

    /// Whether this member holds its peer's state ([`PeerTable`]): the whole table of the
    /// session's peer arrived, it is still arriving, the session was lost, or no peer was
    /// ever heard.
    pub fn peer_table(&self) -> PeerTable {
        match (&self.session, self.had_session) {
            (Some(_), _) if self.requests.outstanding() || self.bulk_in.is_some() => {
                PeerTable::Receiving
            }
            (Some(_), _) => PeerTable::Held,
            (None, true) => PeerTable::Lost,
            (None, false) => PeerTable::NoPeerYet,
        }
    }

    /// Whether a bulk synchronization this member asked for has not completed yet.
    pub fn awaiting_bulk(&self) -> bool {
        self.requests.outstanding()
    }

    /// Current retransmission timeout: srtt + 4 rttvar, at least `retransmit_ms`.
    pub fn rto(&self) -> Millis {
        self.tx.rto(self.tuning.retransmit_ms)
    }

    /// Events since the last call.
    pub fn poll_events(&mut self) -> Vec<SyncEvent> {
        std::mem::take(&mut self.events)
    }

    /// Key ids: the one frames are sealed with, and the other one accepted during a rollover.
    pub fn key_ids(&self) -> (u8, Option<u8>) {
        let ring = self.ep.keyring();
        (ring.sealing().key_id(), ring.previous_key_id())
    }

    /// Rollover phase 1: frames sealed with `next` are accepted too; sealing does not change.
    /// (Replaces any other set accepted besides the sealing one.)
    pub fn accept_key(&mut self, next: KeySet) -> Result<(), KeyringError> {
        self.ep.keyring_mut().accept(next)
    }

    /// Rollover phase 2: seal with the accepted set `key_id` from now on; the set sealing
    /// until now stays accepted. Sealing with the set already in use is a no-op.
    pub fn seal_with_key(&mut self, key_id: u8) -> Result<(), KeyringError> {
        self.ep.keyring_mut().seal_with(key_id)
    }

    /// Rollover phase 3: frames under any key id but the sealing one are refused from now on
    /// (`unknown_key`).
    pub fn retire_previous_key(&mut self) {
        self.ep.keyring_mut().retire_previous();
    }

    /// Seals with the AEAD (`true`) or HMAC from the next frame on.
    pub fn set_encrypt(&mut self, aead: bool) {
        self.ep.set_encrypt(aead);
    }

    /// An item changed (created, updated or removed): its current value (or its removal) is
    /// sent to the peer. Connections pass the sync filters when framed: flags (do not sync,
    /// local, proxied), larval state and minimum age. Nothing is queued while no peer is
    /// heard (its bulk synchronization will carry the state).
    pub fn changed(&mut self, key: ItemKey) {
        if self.session.is_none() {
            return;
        }
        if self.pending.len() >= self.tuning.max_pending {
            self.changes_lost();
            return;
        }
        self.pending.push_back(Pending::Key(key));
    }

    /// Changes were dropped before they reached the engine (more than its queue holds): the
    /// queue is dropped too and the peer gets the whole table instead
    /// ([`SyncEvent::Overflow`]). Nothing to do while no peer is heard.
    pub fn changes_lost(&mut self) {
        if self.session.is_none() {
            return;
        }
        self.pending.clear();
        self.events.push(SyncEvent::Overflow);
        self.start_bulk(0);
    }

    /// A connection created or changed *here* (`entry.gen` is [`LOCAL_GEN`]), with its new
    /// value at hand: the record is made now, so framing needs no table lookup (the entry is
    /// in cache now, maybe not when the frame is built). Anything else (a synced entry, one
    /// younger than the minimum age) takes the [`SyncEngine::changed`] path.
    pub fn conn_changed(&mut self, key: ConnKey, entry: &ConnEntry, now: Millis) {
        if !entry.syncable() || self.session.is_none() {
            return;
        }
        if entry.gen != LOCAL_GEN
            || now.saturating_sub(entry.created) < self.tuning.min_age_ms
            || self.pending.len() >= self.tuning.max_pending
        {
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
        self.session.as_ref()?;
        let id = self.requests.ask(now);
        self.last_hello = None; // send the request with the next poll
        Some(id)
    }

    /// State of resync request `id`.
    pub fn resync_status(&self, id: u32) -> ResyncStatus {
        self.requests.status(id, self.session.is_some())
    }

    /// A datagram from the network. Refused frames are counted per reason and change
    /// nothing.
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
        if let Some(o) = self.open(bytes) {
            self.handle(tables, o, now, observe);
        }
    }

    /// Acts on an opened frame: the table half of [`SyncEngine::on_datagram`] (session,
    /// acknowledgements, records applied to `tables`), no crypto.
    pub fn handle(
        &mut self,
        tables: &mut Tables,
        o: Opened,
        now: Millis,
        observe: &mut dyn FnMut(&Record),
    ) {
        if !o.bound {
            // A Hello (the only message admitted unbound): the endpoint now knows the
            // sender's boot, and our next frames to it are bound to it. Nothing else changes;
            // a peer we have no session with gets our Hello at once, so that it can bind.
            self.candidate = Some(o.sender);
            let known = self
                .session
                .as_ref()
                .is_some_and(|s| s.serial == o.sender && s.epoch == o.epoch);
            self.answer_hello |= !known;
            return;
        }
        self.heard(o.sender, o.epoch, now);
        match o.msg {
            SyncMsg::Hello => {}
            SyncMsg::About { model } => {
                if super::model_ok(&model) {
                    self.peer_about = Some((o.sender, model));
                } else {
                    self.stats.malformed += 1;
                }
            }
            SyncMsg::Resync { id } => match &mut self.bulk_out {
                // A bulk we started ourselves (peer met again, overflow) answers the request:
                // adopt its id rather than start over.
                Some(b) if b.id == 0 => {
                    b.id = id;
                    self.last_bulk_id = Some(id);
                }
                _ if self.last_bulk_id != Some(id) => self.start_bulk(id),
                _ => {}
            },
            SyncMsg::Ack { stream, next, sack } => self.tx.on_ack(stream, next, sack, now),
            SyncMsg::Data {
                stream,
                rseq,
                records,
            } => match self.rx.accept(stream, rseq, records) {
                Delivery::InOrder(frames) => {
                    for r in &frames {
                        self.apply(tables, r, now, observe);
                    }
                    self.requests.progress(now);
                }
                Delivery::Duplicate => self.stats.duplicates += 1,
                Delivery::Held => {}
            },
        }
    }

    /// The cluster's other members changed (a member removed, a replacement joined): from
    /// now on only `peers` may send (any member holding the key but this one, when empty).
    /// A session with a member no longer listed ends; the new member is met by its hellos
    /// and gets a bulk of the table like any peer met again.
    pub fn set_peers(&mut self, peers: Vec<Serial>) {
        let listed = |s: &Serial| peers.is_empty() || peers.contains(s);
        if self.session.as_ref().is_some_and(|s| !listed(&s.serial)) {
            self.lose_peer();
        }
        if self.candidate.as_ref().is_some_and(|c| !listed(c)) {
            self.candidate = None;
        }
        self.peers = peers;
    }

    /// A frame bound to this boot arrived from `serial` in boot `epoch`.
    fn heard(&mut self, serial: Serial, epoch: u32, now: Millis) {
        self.candidate = Some(serial);
        match &mut self.session {
            Some(s) if s.serial == serial && s.epoch == epoch => s.last_heard = now,
            _ => {
                // A new peer, a restarted one, or one back after a loss: new streams both
                // ways and a bulk synchronization of its table.
                self.session = Some(Session {
                    serial,
                    epoch,
                    last_heard: now,
                });
                self.had_session = true;
                self.events.push(SyncEvent::PeerUp { epoch });
                // Our changes queued or in flight are dropped with the old stream: the peer
                // gets our whole table instead (self-initiated bulk; a resync request from
                // it adopts this bulk). Without this, a peer that did not notice the loss
                // (asymmetric timeouts) would miss those changes for good.
                self.start_bulk(0);
                self.rx.reset();
                self.bulk_in = None;
                self.requests.ask(now);
                self.last_hello = None;
                self.about_due = true;
            }
        }
    }

    fn reset_tx(&mut self) {
        self.tx.restart();
        self.pending.clear();
        self.bulk_out = None;
        self.carry = None;
    }

    fn start_bulk(&mut self, id: u32) {
        self.reset_tx();
        self.last_bulk_id = Some(id);
        self.bulk_out = Some(BulkOut::new(id));
    }

    fn lose_peer(&mut self) {
        self.session = None;
        self.reset_tx();
        self.rx.reset();
        self.bulk_in = None;
        self.requests.drop_outstanding();
        self.last_bulk_id = None;
        self.events.push(SyncEvent::PeerLost);
    }

    /// Applies the records of one in-order data frame through the tables' API.
    fn apply(
        &mut self,
        t: &mut Tables,
        records: &Records,
        now: Millis,
        observe: &mut dyn FnMut(&Record),
    ) {
        for rec in records.iter() {
            let Ok(rec) = rec else {
                // An authenticated frame we cannot decode: a version mismatch; count it.
                self.stats.malformed += 1;
                return;
            };
            self.stats.records_applied += 1;
            observe(&rec);
            match change_of(rec, now) {
                Change::Install(item) => match t.install_synced(item) {
                    Ok(()) => {
                        if let Some(b) = &mut self.bulk_in {
                            b.item(&mut self.events);
                        }
                    }
                    Err(why) => {
                        if let Some(b) = &mut self.bulk_in {
                            b.refused += 1;
                        }
                        self.refused(why, now);
                    }
                },
                Change::Remove(k) => {
                    t.remove_item(&k);
                }
                Change::BulkBegin(BulkBegin {
                    id,
                    total,
                    authoritative,
                }) => {
                    self.bulk_in = Some(BulkIn {
                        id,
                        authoritative,
                        gen: t.next_rx_gen(),
                        received: 0,
                        total,
                        refused: 0,
                    });
                }
                Change::BulkEnd { id } => {
                    if let Some(b) = self.bulk_in.take() {
                        // While active our table is authoritative: keep what the peer lacks;
                        // and a passive peer's bulk says nothing about what is stale.
                        let stale_removed = if t.is_active() || !b.authoritative {
                            0
                        } else {
                            t.drop_stale_synced(b.gen)
                        };
                        self.events.push(SyncEvent::BulkReceived {
                            id,
                            records: b.received,
                            stale_removed,
                        });
                        self.requests.completed(id);
                        // Items refused at a cap while stale ones (removed only now) took
                        // the room: ask again, the next bulk fills the room they left.
                        if b.refused > 0 && stale_removed > 0 {
                            self.requests.ask(now);
                            self.last_hello = None;
                        }
                    } else {
                        self.requests.completed(id);
                    }
                }
            }
        }
    }

    /// A record refused by a table: counted, and reported at most every
    /// [`REFUSAL_EVENT_EVERY_MS`] per table.
    fn refused(&mut self, why: Refused, now: Millis) {
        let i = why.table().index();
        self.stats.refused[i] += 1;
        let log = &mut self.refusals[i];
        log.since += 1;
        if log
            .last_event
            .is_none_or(|t| now.saturating_sub(t) >= REFUSAL_EVENT_EVERY_MS)
        {
            self.events.push(SyncEvent::RecordsRefused {
                reason: why,
                count: log.since,
            });
            log.since = 0;
            log.last_event = Some(now);
        }
    }

    /// Runs the timers and returns the datagrams to send to the peer now: acknowledgements,
    /// hellos and resync requests, retransmissions, new data frames (within the window).
    pub fn poll_transmit(&mut self, tables: &Tables, now: Millis) -> Vec<Vec<u8>> {
        let out = self.poll_messages(tables, now);
        self.seal_all(out)
    }

    /// The table half of [`SyncEngine::poll_transmit`]: runs the timers and returns the
    /// messages to send now, not sealed yet ([`SyncEngine::seal_all`] does, outside the
    /// packet path's lock in a daemon).
    pub fn poll_messages(&mut self, tables: &Tables, now: Millis) -> Vec<Outgoing> {
        let mut out = Vec::new();
        // A takeover: this table is authoritative from now on. The peer may hold only what a
        // passive (empty, non-authoritative) bulk gave it — it restarted while this member
        // was passive, found by `cargo xtask chaos` — so it gets the whole table now.
        if tables.is_active() && !self.was_active && self.session.is_some() {
            self.start_bulk(0);
        }
        self.was_active = tables.is_active();
        if self
            .session
            .as_ref()
            .is_some_and(|s| now.saturating_sub(s.last_heard) > self.tuning.peer_timeout_ms)
        {
            self.lose_peer();
        }
        // State frames go only to the session's boot of the peer: when a newer boot of it
        // was heard (unbound), hellos alone until it binds to us and a new session starts.
        let state_to = self
            .session
            .as_ref()
            .filter(|s| self.ep.peer_epoch(s.serial) == Some(s.epoch))
            .map(|s| s.serial);
        if let Some(to) = state_to {
            if let Some(ack) = self.rx.take_ack() {
                out.push(Outgoing::new(ack, Some(to)));
            }
        }
        let hello_due = self.answer_hello
            || self
                .last_hello
                .is_none_or(|t| now.saturating_sub(t) >= self.tuning.hello_ms);
        if hello_due {
            self.answer_hello = false;
            self.last_hello = Some(now);
            let to = self
                .session
                .as_ref()
                .map(|s| s.serial)
                .or(self.candidate)
                .or(match self.peers.as_slice() {
                    [only] => Some(*only),
                    _ => None,
                });
            out.push(Outgoing::new(SyncMsg::Hello, to));
            if state_to.is_some() {
                let stall = self.tuning.bulk_stall_ms;
                if let Some(id) = self.requests.at_hello(now, stall, &mut self.events) {
                    out.push(Outgoing::new(SyncMsg::Resync { id }, state_to));
                }
            }
        }
        let Some(to) = state_to else {
            return out;
        };
        if let Some(model) = &self.about {
            let again = self
                .last_about
                .is_none_or(|t| now.saturating_sub(t) >= super::ABOUT_EVERY_MS);
            if self.about_due || again {
                self.about_due = false;
                self.last_about = Some(now);
                out.push(Outgoing::new(
                    SyncMsg::About {
                        model: model.clone(),
                    },
                    Some(to),
                ));
            }
        }
        // Retransmissions first (oldest first).
        let rto = self.rto();
        for i in self.tx.due(now, rto) {
            self.stats.retransmits += 1;
            let f = &self.tx.inflight[i];
            out.push(Outgoing::inflight(self.tx.stream, f.rseq, to));
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
        if let Some(b) = &mut self.bulk_out {
            b.snapshot(tables);
        }
        // New data frames.
        while self.tx.inflight.len() < self.tuning.window {
            let Some(records) = self.build_records(tables, now) else {
                break;
            };
            self.stats.data_sent += 1;
            let rseq = self.tx.next_rseq;
            self.tx.push(records, now);
            out.push(Outgoing::inflight(self.tx.stream, rseq, to));
        }
        out
    }

    /// The records of the next data frame, or `None` when there is nothing to send: live
    /// changes first, then the bulk.
    fn build_records(&mut self, t: &Tables, now: Millis) -> Option<Records> {
        let room = records_room(self.tx.stream, self.tx.next_rseq);
        let mut body = Vec::with_capacity(room);
        if let Some((c, ends)) = self.carry.take() {
            if c.len() <= room {
                self.stats.records_sent += 1;
                body.extend_from_slice(&c);
                if ends {
                    return Some(Records(body));
                }
            } else {
                self.stats.oversize += 1;
            }
        }
        loop {
            let rec = if let Some(p) = self.pending.pop_front() {
                match p {
                    Pending::Ready(r) => r,
                    Pending::Key(k) => match self.record_for(t, k, now) {
                        Some(r) => r,
                        None => continue,
                    },
                }
            } else if let Some(b) = &mut self.bulk_out {
                let mut done = false;
                let r = b.next_record(t, now, &mut self.events, &mut done);
                if done {
                    self.bulk_out = None;
                }
                match r {
                    Some(r) => r,
                    None => break,
                }
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
            if body.len() + self.scratch.len() > room {
                if body.is_empty() {
                    self.stats.oversize += 1;
                    continue;
                }
                self.carry = Some((self.scratch.clone(), rec.is_newer()));
                break;
            }
            self.stats.records_sent += 1;
            body.extend_from_slice(&self.scratch);
            // A peer of an older release stops reading a frame at a record it does not know:
            // nothing may follow one.
            if rec.is_newer() {
                break;
            }
        }
        (!body.is_empty()).then_some(Records(body))
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
                    if age < self.tuning.min_age_ms {
                        if self.deferred_set.insert(*k) {
                            self.deferred
                                .push_back((e.created + self.tuning.min_age_ms, *k));
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tables::{KConnKey, KSeqAdj, KTuple};
    use ha_proto::keys::{KeySet, Psk};
    use std::net::{IpAddr, Ipv4Addr};

    fn kconn(i: u8, adjusted: bool) -> Record {
        let t = KTuple {
            src: IpAddr::V4(Ipv4Addr::new(10, 1, 0, i)),
            dst: IpAddr::V4(Ipv4Addr::new(10, 2, 0, 1)),
            proto: 6,
            src_port: 40_000,
            dst_port: 21,
        };
        let key = KConnKey { orig: t, zone: 0 };
        let (status, mark, tcp, left, helper) = (6, 0, None, 60_000, None);
        if adjusted {
            Record::KernelConnAdjusted {
                key,
                reply: t,
                status,
                mark,
                tcp,
                left,
                helper,
                seq_adj: [KSeqAdj::default(); 2],
            }
        } else {
            Record::KernelConn {
                key,
                reply: t,
                status,
                mark,
                tcp,
                left,
                helper,
            }
        }
    }

    /// A peer of an older release stops reading a frame at the first record it cannot
    /// decode: a record of a newer variant must be the last of its frame, so such a peer
    /// loses only it.
    #[test]
    fn a_record_of_a_newer_variant_ends_its_frame() {
        let keys = KeySet::derive(&Psk([9; 32]), 1, 1);
        let mut e = SyncEngine::new(SyncConfig::new(1, Serial([1; 16]), 1, keys));
        let t = Tables::new();
        let sent: Vec<Record> = (0..40).map(|i| kconn(i, i % 7 == 3)).collect();
        for r in &sent {
            e.pending.push_back(Pending::Ready(r.clone()));
        }
        let mut got = Vec::new();
        let mut frames = 0;
        while let Some(records) = e.build_records(&t, 0) {
            frames += 1;
            let recs: Vec<Record> = records.iter().map(|r| r.unwrap()).collect();
            let newer = recs.iter().position(Record::is_newer);
            assert!(
                newer.is_none_or(|p| p == recs.len() - 1),
                "a record follows a newer one in frame {frames}: {recs:?}"
            );
            got.extend(recs);
            assert!(frames < 100);
        }
        assert_eq!(got, sent, "every record, in order");
        // 6 adjusted records: at least 6 frames, each ending at one.
        assert!(frames >= 6, "{frames} frames");
    }
}
