//! The packet path's half of a member's dataplane: the tables, the filter policy and the
//! role, which every forwarded packet reads and changes; the changes it makes wait in an
//! outbox until the sync engine takes them ([`PacketPath::hand_changes`]).
//!
//! A daemon keeps this half under the lock its receive threads take per packet, and the
//! [`SyncEngine`] (with its endpoint, the only crypto) under another, held by its sync thread
//! and its management requests: sealing and opening frames never hold up a packet. The
//! engine's table work ([`PacketPath::handle`], [`PacketPath::poll_messages`]) is the only
//! place both are held, always engine first.

use crate::filter::{self, Packet, Policy, Verdict};
use crate::sync::{Opened, Outgoing, SyncEngine};
use crate::tables::{ConnEntry, ConnKey, ItemKey, Limits, Millis, Tables};
use crate::EXPIRE_EVERY_MS;

/// A change made by the packet path, waiting for the sync engine.
#[derive(Debug)]
enum Change {
    /// A connection changed, with its value at the change when it still exists, and when.
    Conn(ConnKey, Option<ConnEntry>, Millis),
    /// Any other item.
    Item(ItemKey),
}

/// Tables, policy and role of one member, and the changes not yet handed to its sync
/// engine.
#[derive(Debug)]
pub struct PacketPath {
    tables: Tables,
    policy: Policy,
    active: bool,
    last_expire: Millis,
    /// Scratch list of the items one decision changed.
    changed: Vec<ItemKey>,
    outbox: Vec<Change>,
    /// More changes than the engine would queue came between two hand-overs: they were
    /// dropped, the peer gets a bulk synchronization instead.
    overflowed: bool,
    max_outbox: usize,
}

impl PacketPath {
    /// A packet path with `policy`, its tables capped by `limits`; at most `max_outbox`
    /// changes wait for the engine (its own queue's bound, `SyncConfig::max_pending`).
    pub fn new(policy: Policy, limits: Limits, max_outbox: usize) -> Self {
        Self {
            tables: Tables::with_limits(limits),
            policy,
            active: false,
            last_expire: 0,
            changed: Vec::new(),
            outbox: Vec::new(),
            overflowed: false,
            max_outbox,
        }
    }

    /// The filter decision for a packet to forward (see [`filter::decide`]) at `now`.
    pub fn check(&mut self, p: &Packet, allow_new: bool, now: Millis) -> Verdict {
        let v = filter::decide(
            &mut self.tables,
            &self.policy,
            p,
            self.active,
            allow_new,
            now,
            &mut self.changed,
        );
        for k in std::mem::take(&mut self.changed) {
            let c = match k {
                // The entry was just touched: its value is copied while it is in cache.
                ItemKey::Conn(ck) => Change::Conn(ck, self.tables.conn_peek(&ck).copied(), now),
                other => Change::Item(other),
            };
            self.push(c);
        }
        v
    }

    fn push(&mut self, c: Change) {
        if self.outbox.len() >= self.max_outbox {
            self.outbox.clear();
            self.overflowed = true;
        }
        self.outbox.push(c);
    }

    /// Becomes active (larval entries become live in constant time) or passive.
    pub fn set_role(&mut self, active: bool, now: Millis) {
        if active && !self.active {
            self.tables.activate(now);
        } else if !active && self.active {
            self.tables.deactivate();
        }
        self.active = active;
    }

    /// Whether this member forwards.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// The tables.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The tables, for the control plane; report each change with [`PacketPath::changed`].
    pub fn tables_mut(&mut self) -> &mut Tables {
        &mut self.tables
    }

    /// An item was changed through [`PacketPath::tables_mut`]: sync it.
    pub fn changed(&mut self, key: ItemKey) {
        self.push(Change::Item(key));
    }

    /// Changes wait for the engine.
    pub fn has_changes(&self) -> bool {
        !self.outbox.is_empty() || self.overflowed
    }

    /// Hands the waiting changes to `engine`, oldest first.
    pub fn hand_changes(&mut self, engine: &mut SyncEngine) {
        if std::mem::take(&mut self.overflowed) {
            engine.changes_lost();
        }
        for c in self.outbox.drain(..) {
            match c {
                Change::Conn(ck, Some(e), at) => engine.conn_changed(ck, &e, at),
                Change::Conn(ck, None, _) => engine.changed(ItemKey::Conn(ck)),
                Change::Item(k) => engine.changed(k),
            }
        }
    }

    /// Acts on a frame `engine` opened: the waiting changes first, then the frame's effect
    /// on the tables.
    pub fn handle(&mut self, engine: &mut SyncEngine, o: Opened, now: Millis) {
        self.handle_observe(engine, o, now, &mut |_| {});
    }

    /// [`PacketPath::handle`], calling `observe` with every record applied.
    pub fn handle_observe(
        &mut self,
        engine: &mut SyncEngine,
        o: Opened,
        now: Millis,
        observe: &mut dyn FnMut(&crate::sync::Record),
    ) {
        self.hand_changes(engine);
        engine.handle(&mut self.tables, o, now, observe);
    }

    /// Sweeps idle entries when due (on the active only), hands the changes to `engine`
    /// and returns its messages to send now, to seal with [`SyncEngine::seal_all`].
    pub fn poll_messages(&mut self, engine: &mut SyncEngine, now: Millis) -> Vec<Outgoing> {
        // Only the active expires: a passive's entries (larval, or local ones kept from an
        // earlier active spell) see no packets, and its deletes would remove connections the
        // active still forwards.
        if self.active && now.saturating_sub(self.last_expire) >= EXPIRE_EVERY_MS {
            self.last_expire = now;
            self.expire(now);
        }
        self.hand_changes(engine);
        engine.poll_messages(&self.tables, now)
    }

    fn expire(&mut self, now: Millis) {
        let mut gone: Vec<Change> = self
            .tables
            .expire_conns(now)
            .into_iter()
            .filter(|(_, e)| e.syncable())
            .map(|(k, _)| Change::Conn(k, None, now))
            .collect();
        gone.extend(self.tables.expire_local(now).into_iter().map(Change::Item));
        for c in gone {
            self.push(c);
        }
    }
}
