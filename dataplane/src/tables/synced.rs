//! What the state sync does to the tables, as the tables' own API: install a peer's item
//! (under the current receive generation, within the caps), remove an item, open a bulk's
//! generation and drop what it did not refresh, list the live items for a bulk.

use std::net::IpAddr;

use hashbrown::HashMap;

use super::limits::{Refused, TableKind, MAX_CERT_SERIAL_LEN, MAX_NAME_LEN, MAX_USER_GROUPS};
use super::{
    CertEntry, ConnEntry, ConnKey, ExpectKey, Expectation, GatewayStatus, HostEntry, IkeKey, IkeSa,
    KConn, KConnKey, KExp, KExpKey, Tables, UserEntry, ZoneAddr, LOCAL_GEN,
};

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
    /// A kernel conntrack entry.
    KernelConn(KConnKey),
    /// A kernel conntrack expectation.
    KernelExpect(KExpKey),
}

impl ItemKey {
    /// The table the item lives in.
    pub fn table(&self) -> TableKind {
        match self {
            ItemKey::Conn(_) => TableKind::Conns,
            ItemKey::Host(_) => TableKind::Hosts,
            ItemKey::User(_) => TableKind::Users,
            ItemKey::Expect(_) => TableKind::Expects,
            ItemKey::Gateway(_) => TableKind::Gateways,
            ItemKey::Cert(_) => TableKind::Certs,
            ItemKey::Ike(_) => TableKind::Ike,
            ItemKey::KernelConn(_) => TableKind::KernelConns,
            ItemKey::KernelExpect(_) => TableKind::KernelExpects,
        }
    }
}

/// An item received from the peer, with its times already on this member's clock. Its `gen`
/// is set by [`Tables::install_synced`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncedItem {
    /// A connection (local packet counters of an existing entry are kept).
    Conn(ConnKey, ConnEntry),
    /// A host.
    Host(ZoneAddr, HostEntry),
    /// A user.
    User(IpAddr, UserEntry),
    /// An expectation.
    Expect(ExpectKey, Expectation),
    /// A gateway.
    Gateway(ZoneAddr, GatewayStatus),
    /// A certificate serial.
    Cert(Vec<u8>, CertEntry),
    /// An IKE SA.
    Ike(IkeKey, IkeSa),
    /// A kernel conntrack entry.
    KernelConn(KConnKey, KConn),
    /// A kernel conntrack expectation.
    KernelExpect(KExpKey, KExp),
}

impl SyncedItem {
    /// The table the item goes to.
    pub fn table(&self) -> TableKind {
        match self {
            SyncedItem::Conn(..) => TableKind::Conns,
            SyncedItem::Host(..) => TableKind::Hosts,
            SyncedItem::User(..) => TableKind::Users,
            SyncedItem::Expect(..) => TableKind::Expects,
            SyncedItem::Gateway(..) => TableKind::Gateways,
            SyncedItem::Cert(..) => TableKind::Certs,
            SyncedItem::Ike(..) => TableKind::Ike,
            SyncedItem::KernelConn(..) => TableKind::KernelConns,
            SyncedItem::KernelExpect(..) => TableKind::KernelExpects,
        }
    }
}

/// Inserts or replaces `v` under `k` unless the map is at `cap` and `k` is new.
fn upsert_capped<K, V>(
    map: &mut HashMap<K, V>,
    k: K,
    v: V,
    cap: usize,
    table: TableKind,
) -> Result<(), Refused>
where
    K: std::hash::Hash + Eq,
{
    if map.len() >= cap && !map.contains_key(&k) {
        return Err(Refused::Full { table, cap });
    }
    map.insert(k, v);
    Ok(())
}

fn user_fits(u: &UserEntry) -> bool {
    u.name.len() <= MAX_NAME_LEN
        && u.groups.len() <= MAX_USER_GROUPS
        && u.groups.iter().all(|g| g.len() <= MAX_NAME_LEN)
}

impl Tables {
    /// Installs an item from the peer under the current receive generation
    /// ([`Tables::install_gen`]), unless its table is at its cap and the item is new, or the
    /// item is larger than the table stores. A refused item changes nothing.
    pub fn install_synced(&mut self, item: SyncedItem) -> Result<(), Refused> {
        let gen = self.install_gen();
        let kind = item.table();
        let cap = self.limits.cap(kind);
        match item {
            SyncedItem::Conn(k, mut e) => {
                e.gen = gen;
                self.entry_touches += 1;
                // At the cap only: one more lookup to tell an update from a new entry.
                if self.conns.len() >= cap && !self.conns.contains_key(&k) {
                    return Err(Refused::Full { table: kind, cap });
                }
                self.conns
                    .entry(k)
                    .and_modify(|old| {
                        let (packets, bytes) = (old.packets, old.bytes);
                        *old = ConnEntry {
                            packets,
                            bytes,
                            ..e
                        };
                    })
                    .or_insert(e);
                Ok(())
            }
            SyncedItem::Host(k, mut e) => {
                e.gen = gen;
                upsert_capped(&mut self.hosts, k, e, cap, kind)
            }
            SyncedItem::User(k, mut e) => {
                if !user_fits(&e) {
                    return Err(Refused::Invalid(kind));
                }
                e.gen = gen;
                upsert_capped(&mut self.users, k, e, cap, kind)
            }
            SyncedItem::Expect(k, mut e) => {
                e.gen = gen;
                upsert_capped(&mut self.expects, k, e, cap, kind)
            }
            SyncedItem::Gateway(k, mut e) => {
                e.gen = gen;
                upsert_capped(&mut self.gateways, k, e, cap, kind)
            }
            SyncedItem::Cert(k, mut e) => {
                if k.len() > MAX_CERT_SERIAL_LEN {
                    return Err(Refused::Invalid(kind));
                }
                e.gen = gen;
                upsert_capped(&mut self.certs, k, e, cap, kind)
            }
            SyncedItem::Ike(k, mut e) => {
                e.gen = gen;
                upsert_capped(&mut self.ike, k, e, cap, kind)
            }
            SyncedItem::KernelConn(k, mut e) => {
                if e.helper.is_some_and(|h| !h.is_valid()) {
                    return Err(Refused::Invalid(kind));
                }
                e.gen = gen;
                upsert_capped(&mut self.kconns, k, e, cap, kind)?;
                self.journal_kernel(ItemKey::KernelConn(k));
                Ok(())
            }
            SyncedItem::KernelExpect(k, mut e) => {
                if e.nat.is_some_and(|n| !n.func.is_valid() || n.dir > 1) {
                    return Err(Refused::Invalid(kind));
                }
                e.gen = gen;
                upsert_capped(&mut self.kexps, k, e, cap, kind)?;
                self.journal_kernel(ItemKey::KernelExpect(k));
                Ok(())
            }
        }
    }

    /// Removes an item (the peer removed it); true if it was there.
    pub fn remove_item(&mut self, key: &ItemKey) -> bool {
        match key {
            ItemKey::Conn(k) => self.remove_conn(k).is_some(),
            ItemKey::Host(k) => self.hosts.remove(k).is_some(),
            ItemKey::User(k) => self.users.remove(k).is_some(),
            ItemKey::Expect(k) => self.expects.remove(k).is_some(),
            ItemKey::Gateway(k) => self.gateways.remove(k).is_some(),
            ItemKey::Cert(k) => self.certs.remove(k).is_some(),
            ItemKey::Ike(k) => self.ike.remove(k).is_some(),
            ItemKey::KernelConn(k) => {
                let was = self.kconns.remove(k).is_some();
                if was {
                    self.journal_kernel(key.clone());
                }
                was
            }
            ItemKey::KernelExpect(k) => {
                let was = self.kexps.remove(k).is_some();
                if was {
                    self.journal_kernel(key.clone());
                }
                was
            }
        }
    }

    /// Items in one table.
    pub fn len_of(&self, kind: TableKind) -> usize {
        match kind {
            TableKind::Conns => self.conns.len(),
            TableKind::Hosts => self.hosts.len(),
            TableKind::Users => self.users.len(),
            TableKind::Expects => self.expects.len(),
            TableKind::Gateways => self.gateways.len(),
            TableKind::Certs => self.certs.len(),
            TableKind::Ike => self.ike.len(),
            TableKind::KernelConns => self.kconns.len(),
            TableKind::KernelExpects => self.kexps.len(),
        }
    }

    /// Opens a new receive generation (a bulk synchronization starts) and returns the
    /// generation its records are installed under.
    pub fn next_rx_gen(&mut self) -> u32 {
        self.rx_gen = self.rx_gen.saturating_add(1);
        if self.active {
            self.activated_upto = self.rx_gen;
            self.rx_gen = self.rx_gen.saturating_add(1);
        }
        self.install_gen()
    }

    /// After a complete bulk from the active (called on the passive): removes items of
    /// generations below `gen` (not refreshed by the bulk that opened `gen`): the peer
    /// deleted them while we were not listening. Connections go whatever their origin (a
    /// passive's own connections are leftovers of an earlier active spell, which the active
    /// has since closed); other items of local origin stay.
    pub fn drop_stale_synced(&mut self, gen: u32) -> usize {
        let before = self.total_items();
        self.conns.retain(|_, e| e.gen >= gen);
        // Kernel entries like connections: a passive's own are leftovers of an earlier spell.
        let journal = &mut self.kernel_journal;
        self.kconns.retain(|k, e| {
            let keep = e.gen >= gen;
            if let (false, Some(j)) = (keep, journal.as_mut()) {
                j.push(ItemKey::KernelConn(*k));
            }
            keep
        });
        self.kexps.retain(|k, e| {
            let keep = e.gen >= gen;
            if let (false, Some(j)) = (keep, journal.as_mut()) {
                j.push(ItemKey::KernelExpect(*k));
            }
            keep
        });
        let keep = |g: u32| g == LOCAL_GEN || g >= gen;
        self.hosts.retain(|_, e| keep(e.gen));
        self.users.retain(|_, e| keep(e.gen));
        self.expects.retain(|_, e| keep(e.gen));
        self.gateways.retain(|_, e| keep(e.gen));
        self.certs.retain(|_, e| keep(e.gen));
        self.ike.retain(|_, e| keep(e.gen));
        before - self.total_items()
    }

    /// Keys of every live item (a bulk synchronization's snapshot): connections apart (the
    /// bulk carries them first, and they are most of it), then every other table's.
    pub fn live_keys(&self) -> (Vec<ConnKey>, Vec<ItemKey>) {
        let live = |g: u32| self.is_live(g);
        let mut others = Vec::new();
        others.extend(
            self.hosts
                .iter()
                .filter(|(_, e)| live(e.gen))
                .map(|(k, _)| ItemKey::Host(*k)),
        );
        others.extend(
            self.users
                .iter()
                .filter(|(_, e)| live(e.gen))
                .map(|(k, _)| ItemKey::User(*k)),
        );
        others.extend(
            self.expects
                .iter()
                .filter(|(_, e)| live(e.gen))
                .map(|(k, _)| ItemKey::Expect(*k)),
        );
        others.extend(
            self.gateways
                .iter()
                .filter(|(_, e)| live(e.gen))
                .map(|(k, _)| ItemKey::Gateway(*k)),
        );
        others.extend(
            self.certs
                .iter()
                .filter(|(_, e)| live(e.gen))
                .map(|(k, _)| ItemKey::Cert(k.clone())),
        );
        others.extend(
            self.ike
                .iter()
                .filter(|(_, e)| live(e.gen))
                .map(|(k, _)| ItemKey::Ike(*k)),
        );
        others.extend(
            self.kconns
                .iter()
                .filter(|(_, e)| live(e.gen))
                .map(|(k, _)| ItemKey::KernelConn(*k)),
        );
        // After the entries: a standby creates an expectation only once its master is in
        // the table.
        others.extend(
            self.kexps
                .iter()
                .filter(|(_, e)| live(e.gen))
                .map(|(k, _)| ItemKey::KernelExpect(*k)),
        );
        (self.live_conn_keys(), others)
    }
}
