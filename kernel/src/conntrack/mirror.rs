//! What the peer has been told about the local conntrack table, and how to catch up after
//! events were lost (sans-IO).
//!
//! The active member turns each conntrack event into a change for its peer. When the kernel
//! reports an overrun (events dropped because the socket's receive buffer was full), the
//! events cannot be trusted to describe the table any more: the member dumps the table and
//! [`Mirror::reconcile`] returns exactly the changes that bring the peer from what it was told
//! to what the table holds (new and changed entries, and removals of entries that vanished
//! while the events were lost).

// hashbrown's default hasher (foldhash, seeded per process): see `crate::path`.
use hashbrown::HashMap;
use std::hash::Hash;

use super::{CtEntry, CtEventKind, CtExpect, CtTuple};

/// Identity of an entry in the table: its original tuple and zone.
pub type CtKey = (CtTuple, u16);

/// What the mirror keeps: kernel entries and expectations.
pub trait Tracked: Copy + PartialEq {
    /// Identity in the kernel's table.
    type Key: Copy + Eq + Hash;
    /// Its identity.
    fn key(&self) -> Self::Key;
    /// The same item with its remaining time zeroed: the time keeps changing on its own
    /// (the peer refreshes it from later updates, not from every event).
    fn timeless(&self) -> Self;
}

impl Tracked for CtEntry {
    type Key = CtKey;
    fn key(&self) -> CtKey {
        (self.orig, self.zone)
    }
    fn timeless(&self) -> Self {
        CtEntry {
            timeout_s: 0,
            ..*self
        }
    }
}

impl Tracked for CtExpect {
    type Key = (CtTuple, u16);
    fn key(&self) -> (CtTuple, u16) {
        (self.tuple, self.zone)
    }
    fn timeless(&self) -> Self {
        CtExpect {
            timeout_s: 0,
            ..*self
        }
    }
}

/// A change for the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change<T: Tracked> {
    /// Install or refresh this item.
    Upsert(T),
    /// Remove the item with this identity.
    Remove(T::Key),
}

/// The items the peer has been told about, by identity.
#[derive(Debug)]
pub struct Mirror<T: Tracked> {
    told: HashMap<T::Key, T>,
}

impl<T: Tracked> Default for Mirror<T> {
    fn default() -> Self {
        Mirror {
            told: HashMap::new(),
        }
    }
}

impl<T: Tracked> Mirror<T> {
    /// An empty mirror (the peer knows nothing yet).
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of items the peer has been told about.
    pub fn len(&self) -> usize {
        self.told.len()
    }

    /// True when the peer has been told about no item.
    pub fn is_empty(&self) -> bool {
        self.told.is_empty()
    }

    /// The item the peer was told about under `k`, if any.
    pub fn get(&self, k: &T::Key) -> Option<&T> {
        self.told.get(k)
    }

    /// Records that the peer knows `e` already (it sent it: a new active starts from the
    /// items its peer synced to it).
    pub fn assume(&mut self, e: T) {
        self.told.insert(e.key(), e);
    }

    /// Forgets, without a change for the peer, every item `keep` refuses (a domain this
    /// member gave up: its new active member tells the peer about it from now on).
    pub fn retain(&mut self, mut keep: impl FnMut(&T) -> bool) {
        self.told.retain(|_, e| keep(e));
    }

    /// The change an event of `kind` about `item` asks for (`None` when the peer already has
    /// it: a destroy of an item it never heard of).
    pub fn on_event(&mut self, kind: CtEventKind, item: &T) -> Option<Change<T>> {
        let k = item.key();
        match kind {
            CtEventKind::New | CtEventKind::Update => {
                self.told.insert(k, *item);
                Some(Change::Upsert(*item))
            }
            CtEventKind::Destroy => self.told.remove(&k).map(|_| Change::Remove(k)),
        }
    }

    /// After an overrun: the changes that take the peer from what it was told to `table` (a
    /// dump of the kernel's table taken after the overrun), and the mirror updated to match.
    /// Items the dump shows unchanged but for their remaining time produce nothing.
    pub fn reconcile(&mut self, table: &[T]) -> Vec<Change<T>> {
        let mut out = Vec::new();
        let mut now: HashMap<T::Key, T> = HashMap::with_capacity(table.len());
        for e in table {
            now.insert(e.key(), *e);
        }
        for (k, e) in &now {
            match self.told.get(k) {
                Some(old) if old.timeless() == e.timeless() => {}
                _ => out.push(Change::Upsert(*e)),
            }
        }
        for k in self.told.keys() {
            if !now.contains_key(k) {
                out.push(Change::Remove(*k));
            }
        }
        self.told = now;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(port: u16, mark: u32) -> CtEntry {
        crate::conntrack::tests::udp_entry(port, mark)
    }

    #[test]
    fn events_become_changes_and_a_destroy_of_the_unknown_is_nothing() {
        let mut m = Mirror::<CtEntry>::new();
        assert_eq!(
            m.on_event(CtEventKind::New, &e(1, 0)),
            Some(Change::Upsert(e(1, 0)))
        );
        assert_eq!(
            m.on_event(CtEventKind::Destroy, &e(1, 0)),
            Some(Change::Remove((e(1, 0).orig, 0)))
        );
        assert_eq!(m.on_event(CtEventKind::Destroy, &e(2, 0)), None);
        assert!(m.is_empty());
    }

    #[test]
    fn reconcile_sends_exactly_what_the_lost_events_would_have() {
        let mut m = Mirror::<CtEntry>::new();
        for p in 1..=4 {
            m.on_event(CtEventKind::New, &e(p, 0));
        }
        // Lost while overrun: 1 changed its mark, 2 vanished, 5 appeared; 3 only aged; 4 same.
        let mut aged = e(3, 0);
        aged.timeout_s = 11;
        let table = [e(1, 9), aged, e(4, 0), e(5, 0)];
        let mut changes = m.reconcile(&table);
        changes.sort_by_key(|c| match c {
            Change::Upsert(x) => (0, x.orig.src_port),
            Change::Remove(k) => (1, k.0.src_port),
        });
        assert_eq!(
            changes,
            vec![
                Change::Upsert(e(1, 9)),
                Change::Upsert(e(5, 0)),
                Change::Remove((e(2, 0).orig, 0)),
            ]
        );
        assert_eq!(m.len(), 4);
        // A second reconcile against the same table has nothing to say.
        assert!(m.reconcile(&table).is_empty());
    }
}
