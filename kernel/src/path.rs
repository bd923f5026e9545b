//! The kernel data path's decisions, without I/O: what the daemon does with conntrack events
//! on the active, with the peer's records on the standby, and in which order on a role
//! change. The daemon's threads do the I/O ([`crate::conntrack::socket`], [`crate::address`],
//! [`crate::guard`]) and hand the changed keys to the packet path's outbox.

use std::collections::HashSet;
use std::net::IpAddr;

use ha_dataplane::sync::ItemKey;
use ha_dataplane::tables::{Millis, Tables};

use crate::conntrack::item::{from_item, key_of, orig_of, to_item};
use crate::conntrack::mirror::{Change, Mirror};
use crate::conntrack::{CtEntry, CtEvent, CtTuple};

/// A cluster address this member holds while active.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ClusterAddr {
    /// Interface index.
    pub ifindex: u32,
    /// The interface's MAC (for the announcement).
    pub mac: [u8; 6],
    /// The address.
    pub addr: IpAddr,
    /// Its prefix length.
    pub prefix_len: u8,
}

/// One step of a role change, in the order returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// Set the nftables guard (`standby: true` drops new connections).
    Guard {
        /// Guard for a standby.
        standby: bool,
    },
    /// Put a cluster address on its interface.
    AddAddress(ClusterAddr),
    /// Announce a cluster address (gratuitous ARP / unsolicited NA).
    Announce(ClusterAddr),
    /// Take a cluster address off its interface.
    RemoveAddress(ClusterAddr),
}

/// What the standby does to its kernel for the peer's latest records.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelWork {
    /// Entries to install or refresh.
    pub install: Vec<CtEntry>,
    /// Entries to remove: original direction and zone.
    pub remove: Vec<(CtTuple, u16)>,
}

/// The kernel data path of one member.
#[derive(Debug)]
pub struct KernelPath {
    mirror: Mirror,
    addrs: Vec<ClusterAddr>,
}

impl KernelPath {
    /// A kernel path holding `addrs` while active. Call [`Tables::keep_kernel_changes`] on
    /// the tables it works with.
    pub fn new(addrs: Vec<ClusterAddr>) -> KernelPath {
        KernelPath {
            mirror: Mirror::new(),
            addrs,
        }
    }

    fn apply(&mut self, changes: Vec<Change>, tables: &mut Tables, now: Millis) -> Vec<ItemKey> {
        changes
            .into_iter()
            .map(|c| match c {
                Change::Upsert(e) => {
                    let (k, v) = to_item(&e, now);
                    tables.upsert_kernel_conn(k, v);
                    ItemKey::KernelConn(k)
                }
                Change::Remove((orig, zone)) => {
                    let k = key_of(&orig, zone);
                    tables.remove_kernel_conn(&k);
                    ItemKey::KernelConn(k)
                }
            })
            .collect()
    }

    /// Active: this member's kernel reported `events`; they update its kernel table, and the
    /// returned keys go to the sync engine (`PacketPath::changed`).
    pub fn on_events(
        &mut self,
        events: &[CtEvent],
        tables: &mut Tables,
        now: Millis,
    ) -> Vec<ItemKey> {
        let changes = events
            .iter()
            .filter_map(|ev| self.mirror.on_event(ev))
            .collect();
        self.apply(changes, tables, now)
    }

    /// Active, after events were lost: a dump of the kernel's table; the returned keys are
    /// exactly the difference the lost events would have carried.
    pub fn on_dump(&mut self, dump: &[CtEntry], tables: &mut Tables, now: Millis) -> Vec<ItemKey> {
        let changes = self.mirror.reconcile(dump);
        self.apply(changes, tables, now)
    }

    /// Active, on a takeover, before the first dump: the entries of `tables`' kernel table
    /// came from the peer (they were installed here as they arrived), so the peer knows them;
    /// the dump that follows then sends only what differs, and removals of the entries that
    /// vanished.
    pub fn seed(&mut self, tables: &Tables, now: Millis) {
        self.mirror = Mirror::new();
        for (k, v) in tables.kernel_conns() {
            self.mirror.assume(from_item(k, v, now));
        }
    }

    /// Standby: what the peer's records since the last call ask of this member's kernel
    /// (installed as they arrive, so a takeover has nothing left to install).
    pub fn kernel_work(&mut self, tables: &mut Tables, now: Millis) -> KernelWork {
        let mut w = KernelWork::default();
        let mut keys = tables.take_kernel_changes();
        let mut seen = HashSet::with_capacity(keys.len());
        keys.retain(|k| seen.insert(*k));
        for k in keys {
            match tables.kernel_conns().get(&k) {
                Some(v) => w.install.push(from_item(&k, v, now)),
                None => w.remove.push(orig_of(&k)),
            }
        }
        w
    }

    /// The steps of taking (`active`) or giving up the active role, in order. Taking it: the
    /// guard opens first (the synced entries are already in the kernel), then the addresses
    /// move and are announced. Giving it up: the guard closes first, so nothing new is
    /// admitted while the addresses leave. The active's mirror starts empty on each takeover:
    /// the first dump or events rebuild it.
    pub fn set_role(&mut self, active: bool) -> Vec<Step> {
        let mut steps = vec![Step::Guard { standby: !active }];
        if active {
            self.mirror = Mirror::new();
            steps.extend(self.addrs.iter().map(|a| Step::AddAddress(*a)));
            steps.extend(self.addrs.iter().map(|a| Step::Announce(*a)));
        } else {
            steps.extend(self.addrs.iter().map(|a| Step::RemoveAddress(*a)));
        }
        steps
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::CtEventKind;
    use ha_dataplane::tables::{Limits, SyncedItem};

    fn entry(port: u16) -> CtEntry {
        crate::conntrack::tests::udp_entry(port, 0)
    }

    #[test]
    fn events_on_the_active_become_table_items_and_keys_for_the_sync() {
        let mut p = KernelPath::new(Vec::new());
        let mut t = Tables::new();
        let ev = |kind, port| CtEvent {
            kind,
            entry: entry(port),
        };
        let keys = p.on_events(
            &[ev(CtEventKind::New, 1), ev(CtEventKind::New, 2)],
            &mut t,
            0,
        );
        assert_eq!(keys.len(), 2);
        assert_eq!(t.kernel_conns().len(), 2);
        let keys = p.on_events(&[ev(CtEventKind::Destroy, 1)], &mut t, 10);
        assert_eq!(keys, vec![ItemKey::KernelConn(key_of(&entry(1).orig, 0))]);
        assert_eq!(t.kernel_conns().len(), 1);
        // After an overrun the dump says 2 is gone and 3 appeared.
        let keys = p.on_dump(&[entry(3)], &mut t, 20);
        assert_eq!(keys.len(), 2);
        assert_eq!(t.kernel_conns().len(), 1);
        assert!(t.kernel_conns().contains_key(&key_of(&entry(3).orig, 0)));
    }

    #[test]
    fn a_new_active_seeded_from_its_synced_table_sends_only_the_difference() {
        let mut t = Tables::new();
        for port in [1, 2, 3] {
            let (k, v) = to_item(&entry(port), 0);
            t.install_synced(SyncedItem::KernelConn(k, v)).unwrap();
        }
        let mut p = KernelPath::new(Vec::new());
        p.set_role(true);
        p.seed(&t, 500);
        // The kernel still holds 1 and 2 (timeouts ticked down), 3 expired, 4 is new.
        let mut one = entry(1);
        one.timeout_s -= 1;
        let keys = p.on_dump(&[one, entry(2), entry(4)], &mut t, 1000);
        let mut want = vec![
            ItemKey::KernelConn(key_of(&entry(3).orig, 0)),
            ItemKey::KernelConn(key_of(&entry(4).orig, 0)),
        ];
        let mut got = keys.clone();
        got.sort_by_key(|k| format!("{k:?}"));
        want.sort_by_key(|k| format!("{k:?}"));
        assert_eq!(got, want);
        assert!(!t.kernel_conns().contains_key(&key_of(&entry(3).orig, 0)));
    }

    #[test]
    fn the_standby_gets_each_peer_change_as_kernel_work_once() {
        let mut p = KernelPath::new(Vec::new());
        let mut t = Tables::with_limits(Limits::default());
        t.keep_kernel_changes();
        let (k1, v1) = to_item(&entry(1), 0);
        let (k2, v2) = to_item(&entry(2), 0);
        t.install_synced(SyncedItem::KernelConn(k1, v1)).unwrap();
        t.install_synced(SyncedItem::KernelConn(k2, v2)).unwrap();
        t.install_synced(SyncedItem::KernelConn(k2, v2)).unwrap();
        let w = p.kernel_work(&mut t, 0);
        assert_eq!(w.install.len(), 2, "{w:?}");
        assert!(w.remove.is_empty());
        assert_eq!(p.kernel_work(&mut t, 0), KernelWork::default());
        t.remove_item(&ItemKey::KernelConn(k1));
        let w = p.kernel_work(&mut t, 0);
        assert_eq!(w.remove, vec![(entry(1).orig, 0)]);
        assert!(w.install.is_empty());
    }

    #[test]
    fn a_takeover_opens_the_guard_before_the_addresses_and_a_release_closes_it_first() {
        let a = ClusterAddr {
            ifindex: 3,
            mac: [2, 0, 0, 0, 0, 1],
            addr: "10.1.0.254".parse().unwrap(),
            prefix_len: 24,
        };
        let mut p = KernelPath::new(vec![a]);
        assert_eq!(
            p.set_role(true),
            vec![
                Step::Guard { standby: false },
                Step::AddAddress(a),
                Step::Announce(a)
            ]
        );
        assert_eq!(
            p.set_role(false),
            vec![Step::Guard { standby: true }, Step::RemoveAddress(a)]
        );
    }
}
