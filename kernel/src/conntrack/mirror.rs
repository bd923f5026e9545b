//! What the peer has been told about the local conntrack table, and how to catch up after
//! events were lost (sans-IO).
//!
//! The active member turns each conntrack event into a change for its peer. When the kernel
//! reports an overrun (events dropped because the socket's receive buffer was full), the
//! events cannot be trusted to describe the table any more: the member dumps the table and
//! [`Mirror::reconcile`] returns exactly the changes that bring the peer from what it was told
//! to what the table holds (new and changed entries, and removals of entries that vanished
//! while the events were lost).

use std::collections::HashMap;

use super::{CtEntry, CtEvent, CtEventKind, CtTuple};

/// Identity of an entry in the table: its original tuple and zone.
pub type CtKey = (CtTuple, u16);

/// A change for the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Install or refresh this entry.
    Upsert(CtEntry),
    /// Remove the entry with this identity.
    Remove(CtKey),
}

/// The entries the peer has been told about, by identity.
#[derive(Debug, Default)]
pub struct Mirror {
    told: HashMap<CtKey, CtEntry>,
}

fn key(e: &CtEntry) -> CtKey {
    (e.orig, e.zone)
}

/// True when `a` and `b` differ in more than the remaining timeout, which keeps changing on
/// its own (the peer refreshes timeouts from later updates, not from every event).
fn differs(a: &CtEntry, b: &CtEntry) -> bool {
    CtEntry { timeout_s: 0, ..*a } != CtEntry { timeout_s: 0, ..*b }
}

impl Mirror {
    /// An empty mirror (the peer knows nothing yet).
    pub fn new() -> Mirror {
        Mirror::default()
    }

    /// Number of entries the peer has been told about.
    pub fn len(&self) -> usize {
        self.told.len()
    }

    /// True when the peer has been told about no entry.
    pub fn is_empty(&self) -> bool {
        self.told.is_empty()
    }

    /// The entry the peer was told about under `k`, if any.
    pub fn get(&self, k: &CtKey) -> Option<&CtEntry> {
        self.told.get(k)
    }

    /// Records that the peer knows `e` already (it sent it: a new active starts from the
    /// entries its peer synced to it).
    pub fn assume(&mut self, e: CtEntry) {
        self.told.insert(key(&e), e);
    }

    /// The change an event asks for (`None` when the peer already has it: a destroy of an
    /// entry it never heard of).
    pub fn on_event(&mut self, ev: &CtEvent) -> Option<Change> {
        let k = key(&ev.entry);
        match ev.kind {
            CtEventKind::New | CtEventKind::Update => {
                self.told.insert(k, ev.entry);
                Some(Change::Upsert(ev.entry))
            }
            CtEventKind::Destroy => self.told.remove(&k).map(|_| Change::Remove(k)),
        }
    }

    /// After an overrun: the changes that take the peer from what it was told to `table` (a
    /// dump of the kernel's table taken after the overrun), and the mirror updated to match.
    /// Entries the dump shows unchanged but for their timeout produce nothing.
    pub fn reconcile(&mut self, table: &[CtEntry]) -> Vec<Change> {
        let mut out = Vec::new();
        let mut now: HashMap<CtKey, CtEntry> = HashMap::with_capacity(table.len());
        for e in table {
            now.insert(key(e), *e);
        }
        for (k, e) in &now {
            match self.told.get(k) {
                Some(old) if !differs(old, e) => {}
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

    fn ev(kind: CtEventKind, entry: CtEntry) -> CtEvent {
        CtEvent { kind, entry }
    }

    #[test]
    fn events_become_changes_and_a_destroy_of_the_unknown_is_nothing() {
        let mut m = Mirror::new();
        assert_eq!(
            m.on_event(&ev(CtEventKind::New, e(1, 0))),
            Some(Change::Upsert(e(1, 0)))
        );
        assert_eq!(
            m.on_event(&ev(CtEventKind::Destroy, e(1, 0))),
            Some(Change::Remove((e(1, 0).orig, 0)))
        );
        assert_eq!(m.on_event(&ev(CtEventKind::Destroy, e(2, 0))), None);
        assert!(m.is_empty());
    }

    #[test]
    fn reconcile_sends_exactly_what_the_lost_events_would_have() {
        let mut m = Mirror::new();
        for p in 1..=4 {
            m.on_event(&ev(CtEventKind::New, e(p, 0)));
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
