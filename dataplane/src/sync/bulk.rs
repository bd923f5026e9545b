//! Bulk synchronization: the whole table to a peer that asked for it (outgoing), the peer's
//! whole table arriving (incoming), and this member's resync requests.
//!
//! The receiver drives it: on meeting a new peer (or a new boot of it, or after a loss), or
//! when asked ([`super::SyncEngine::request_resync`], e.g. by a new active before a planned
//! swap), it sends `Resync` with a request id (repeated with every hello until answered). The
//! sender restarts its stream and sends `BulkBegin`, the current value of every live item,
//! `BulkEnd`, interleaved with live changes in the same ordered stream (each record carries the
//! item's value at the moment it is framed, so order is preserved). Items of the receiver that
//! the bulk did not refresh are removed at `BulkEnd` (passive only, and only after an
//! authoritative bulk). A bulk that makes no progress for `bulk_stall_ms` is requested again
//! under a new id and reported; progress is reported every [`PROGRESS_EVERY`] records.

use crate::tables::{ConnKey, ItemKey, Millis, Tables};

use super::records::item_record;
use super::wire::{BulkBegin, Record};
use super::{ResyncStatus, SyncEvent};

/// Records between two [`SyncEvent::BulkProgress`] events.
pub const PROGRESS_EVERY: u64 = 100_000;

/// A bulk being sent: the keys of the snapshot (values are read when framed).
#[derive(Debug)]
pub(crate) struct BulkOut {
    /// Request id answered (0: started by this member).
    pub id: u32,
    authoritative: bool,
    conns: Vec<ConnKey>,
    others: Vec<ItemKey>,
    pos: usize,
    began: bool,
    total: u64,
}

impl BulkOut {
    /// A bulk answering request `id`; the snapshot is taken when framing starts.
    pub fn new(id: u32) -> Self {
        Self {
            id,
            authoritative: false,
            conns: Vec::new(),
            others: Vec::new(),
            pos: 0,
            began: false,
            total: 0,
        }
    }

    /// Items not framed yet.
    pub fn remaining(&self) -> usize {
        (self.conns.len() + self.others.len()).saturating_sub(self.pos)
    }

    /// Takes the snapshot of the live keys, again at every poll until `BulkBegin` is framed
    /// (so that changes queued before it are in it). A passive member's table is not
    /// authoritative: it answers with an empty bulk (the requester still learns that it is
    /// complete).
    pub fn snapshot(&mut self, t: &Tables) {
        if self.began {
            return;
        }
        self.authoritative = t.is_active();
        if !t.is_active() {
            self.conns.clear();
            self.others.clear();
            self.total = 0;
            return;
        }
        (self.conns, self.others) = t.live_keys();
        self.total = (self.conns.len() + self.others.len()) as u64;
    }

    /// The next record of the bulk: `BulkBegin`, the items (an item deleted since the
    /// snapshot is skipped: its removal went as a change), then `BulkEnd`, after which the
    /// bulk is over (`None` from then on, and `done` is set).
    pub fn next_record(
        &mut self,
        t: &Tables,
        now: Millis,
        events: &mut Vec<SyncEvent>,
        done: &mut bool,
    ) -> Option<Record> {
        if !self.began {
            self.began = true;
            return Some(Record::BulkBegin(BulkBegin {
                id: self.id,
                total: self.total,
                authoritative: self.authoritative,
            }));
        }
        loop {
            let n_conns = self.conns.len();
            if self.pos >= n_conns + self.others.len() {
                let (id, sent) = (self.id, self.pos as u64);
                events.push(SyncEvent::BulkSent { id, records: sent });
                *done = true;
                return Some(Record::BulkEnd { id, sent });
            }
            let key = if self.pos < n_conns {
                ItemKey::Conn(self.conns[self.pos])
            } else {
                self.others[self.pos - n_conns].clone()
            };
            self.pos += 1;
            if self.pos as u64 % PROGRESS_EVERY == 0 {
                events.push(SyncEvent::BulkProgress {
                    outgoing: true,
                    id: self.id,
                    done: self.pos as u64,
                    total: self.total,
                });
            }
            if let Some(r) = item_record(t, &key, now, true) {
                return Some(r);
            }
        }
    }
}

/// A bulk arriving from the peer.
#[derive(Debug)]
pub(crate) struct BulkIn {
    /// Request id it answers.
    pub id: u32,
    /// The sender's table is the whole truth.
    pub authoritative: bool,
    /// Receive generation its records are installed under.
    pub gen: u32,
    /// Items received so far.
    pub received: u64,
    /// Items announced.
    pub total: u64,
    /// Items of it a table refused (at its cap).
    pub refused: u64,
}

impl BulkIn {
    /// One more item of the bulk arrived.
    pub fn item(&mut self, events: &mut Vec<SyncEvent>) {
        self.received += 1;
        if self.received % PROGRESS_EVERY == 0 {
            events.push(SyncEvent::BulkProgress {
                outgoing: false,
                id: self.id,
                done: self.received,
                total: self.total,
            });
        }
    }
}

#[derive(Debug)]
struct Awaiting {
    id: u32,
    last_progress: Millis,
    attempt: u32,
}

/// This member's resync requests: the one outstanding, and the newest completed.
#[derive(Debug)]
pub(crate) struct Requests {
    awaiting: Option<Awaiting>,
    next_id: u32,
    completed: u32,
}

impl Default for Requests {
    fn default() -> Self {
        Self {
            awaiting: None,
            next_id: 1,
            completed: 0,
        }
    }
}

impl Requests {
    fn new_id(&mut self) -> u32 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        id
    }

    /// Asks for a bulk (replacing any outstanding request); returns its id.
    pub fn ask(&mut self, now: Millis) -> u32 {
        let id = self.new_id();
        self.awaiting = Some(Awaiting {
            id,
            last_progress: now,
            attempt: 0,
        });
        id
    }

    /// Forgets the outstanding request (the peer is lost).
    pub fn drop_outstanding(&mut self) {
        self.awaiting = None;
    }

    /// Whether a request is outstanding.
    pub fn outstanding(&self) -> bool {
        self.awaiting.is_some()
    }

    /// The bulk being received made progress.
    pub fn progress(&mut self, now: Millis) {
        if let Some(a) = &mut self.awaiting {
            a.last_progress = now;
        }
    }

    /// At a hello: the id to (re)send, after renewing it when the bulk stalled for longer
    /// than `stall_ms` (reported as [`SyncEvent::BulkStalled`]).
    pub fn at_hello(
        &mut self,
        now: Millis,
        stall_ms: Millis,
        events: &mut Vec<SyncEvent>,
    ) -> Option<u32> {
        let stalled = self
            .awaiting
            .as_ref()
            .is_some_and(|a| now.saturating_sub(a.last_progress) > stall_ms);
        if stalled {
            let new_id = self.new_id();
            if let Some(a) = &mut self.awaiting {
                a.attempt += 1;
                a.last_progress = now;
                a.id = new_id;
                events.push(SyncEvent::BulkStalled {
                    attempt: a.attempt,
                    new_id,
                });
            }
        }
        self.awaiting.as_ref().map(|a| a.id)
    }

    /// A bulk answering `id` is complete (0: one the peer started itself, which answers
    /// whatever is outstanding).
    pub fn completed(&mut self, id: u32) {
        if let Some(a) = &self.awaiting {
            if a.id == id || id == 0 {
                self.completed = self.completed.max(a.id);
                self.awaiting = None;
            }
        }
    }

    /// State of request `id`.
    pub fn status(&self, id: u32, peer_up: bool) -> ResyncStatus {
        if self.completed >= id {
            ResyncStatus::Done
        } else if !peer_up {
            ResyncStatus::NoPeer
        } else {
            ResyncStatus::Pending
        }
    }
}
