//! The kernel data path's decisions, without I/O: what the daemon does with conntrack events
//! on the active, with the peer's records on the standby, and in which order on a role
//! change. The daemon's threads do the I/O ([`crate::conntrack::socket`], [`crate::address`],
//! [`crate::guard`]) and hand the changed keys to the packet path's outbox.

// hashbrown's default hasher (foldhash, seeded per process): the keys are connection tuples
// an outsider chooses, and `std`'s SipHash was the event thread's largest cost in a profile.
use hashbrown::{HashMap, HashSet};
use std::net::IpAddr;

use ha_dataplane::sync::ItemKey;
use ha_dataplane::tables::{Millis, Tables};

use crate::conntrack::item::{
    exp_from_item, exp_key_of, exp_to_item, exp_tuple_of, from_item, key_of, orig_of, to_item,
};
use crate::conntrack::mirror::{Change, CtKey, Mirror, Tracked};
use crate::conntrack::{CtEntry, CtEventKind, CtExpect, CtTuple, Events};
use crate::domains::{DomainSet, Domains};
use crate::select::{Selection, Verdict};

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
    /// Set the nftables guard: new connections of the domains this member is standby for
    /// are dropped (all of them for a member standby for every domain).
    Guard {
        /// The domains this member is standby for.
        standby: DomainSet,
    },
    /// Put a cluster address on its interface.
    AddAddress(ClusterAddr),
    /// Announce a cluster address (gratuitous ARP / unsolicited NA).
    Announce(ClusterAddr),
    /// Take a cluster address off its interface.
    RemoveAddress(ClusterAddr),
    /// Re-create this member's TCP entries (once traffic has moved away): it forwarded them
    /// and its kernel keeps the TCP windows it last saw, which strict tracking would find
    /// stale when it forwards again; an entry created over ctnetlink has no window yet and
    /// the kernel picks it up from the next segments. Only the entries of `domains` (the
    /// ones this member gave up; it goes on forwarding for the others).
    RecreateTcp {
        /// The domains whose entries are re-created.
        domains: DomainSet,
    },
}

/// What the standby does to its kernel for the peer's latest records, in this order:
/// entries first (an expectation needs its master in the table), then expectations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelWork {
    /// Entries to install or refresh.
    pub install: Vec<CtEntry>,
    /// Entries to remove: original direction and zone.
    pub remove: Vec<(CtTuple, u16)>,
    /// Expectations to create or refresh.
    pub install_expects: Vec<CtExpect>,
    /// Expectations to remove: expected tuple and zone.
    pub remove_expects: Vec<(CtTuple, u16)>,
}

impl KernelWork {
    /// Nothing to do.
    pub fn is_empty(&self) -> bool {
        self.install.is_empty()
            && self.remove.is_empty()
            && self.install_expects.is_empty()
            && self.remove_expects.is_empty()
    }
}

/// The kernel data path of one member.
#[derive(Debug)]
pub struct KernelPath {
    mirror: Mirror<CtEntry>,
    exp_mirror: Mirror<CtExpect>,
    /// The cluster addresses with the domain each belongs to.
    addrs: Vec<(u8, ClusterAddr)>,
    /// Which domain a connection belongs to.
    domains: Domains,
    /// The domains this member is active for.
    active: DomainSet,
    select: Selection,
    /// Entries younger than the minimum age: when first seen, and their latest state.
    young: HashMap<CtKey, (Millis, CtEntry)>,
}

impl KernelPath {
    /// A kernel path of one domain (0), holding `addrs` while active. Call
    /// [`Tables::keep_kernel_changes`] on the tables it works with.
    pub fn new(addrs: Vec<ClusterAddr>) -> KernelPath {
        KernelPath::shared(
            Domains::single(0),
            addrs.into_iter().map(|a| (0, a)).collect(),
        )
    }

    /// A kernel path sharing the load of several domains (SPEC A3): `domains` tells which
    /// domain a connection belongs to, `addrs` the cluster addresses of each domain (held
    /// while active for it). A member syncs the connections of the domains it is active for
    /// and installs those of the others.
    pub fn shared(domains: Domains, addrs: Vec<(u8, ClusterAddr)>) -> KernelPath {
        KernelPath {
            mirror: Mirror::new(),
            exp_mirror: Mirror::new(),
            addrs,
            domains,
            active: DomainSet::EMPTY,
            select: Selection::default(),
            young: HashMap::new(),
        }
    }

    /// Which domain a connection belongs to.
    pub fn domains(&self) -> &Domains {
        &self.domains
    }

    /// The domains this member is active for.
    pub fn active_domains(&self) -> DomainSet {
        self.active
    }

    /// Whether entry `e` belongs to a domain this member is active for (it syncs it) rather
    /// than one it is standby for (it installs the peer's copy).
    pub fn is_ours(&self, e: &CtEntry) -> bool {
        self.active.contains(self.domains.of_entry(e))
    }

    /// Load sharing: whether entry `e`, in this active member's kernel, is the peer's (of a
    /// domain this member is standby for, installed here for the peer): not sent back.
    /// Never with one domain (the shell reads events only while active for it).
    fn theirs(&self, e: &CtEntry) -> bool {
        !self.domains.nets().is_empty() && !self.is_ours(e)
    }

    /// Syncs only what `select` selects (by default: everything).
    pub fn with_selection(mut self, select: Selection) -> KernelPath {
        self.select = select;
        self
    }

    /// Entries held back until they are old enough.
    pub fn young_len(&self) -> usize {
        self.young.len()
    }

    /// The held-back entry of `k`, if any (without hashing when none is held back: the
    /// usual case, every event passes here).
    fn young_get(&self, k: &CtKey) -> Option<&(Millis, CtEntry)> {
        if self.young.is_empty() {
            return None;
        }
        self.young.get(k)
    }

    /// Forgets the held-back entry of `k`, if any.
    fn young_forget(&mut self, k: &CtKey) {
        if !self.young.is_empty() {
            self.young.remove(k);
        }
    }

    /// The verdict on `e` seen at `now`: its age counts from when this member first saw it;
    /// an entry the peer knows already is old.
    fn verdict(&self, e: &CtEntry, now: Millis) -> Verdict {
        let k = e.key();
        let age = if self.mirror.get(&k).is_some() {
            u64::MAX
        } else {
            self.young_get(&k)
                .map_or(0, |(first, _)| now.saturating_sub(*first))
        };
        self.select.verdict(e, age)
    }

    /// What an event of `kind` about `e` changes for the peer, after the selection.
    fn select_event(
        &mut self,
        kind: CtEventKind,
        e: &CtEntry,
        now: Millis,
    ) -> Option<Change<CtEntry>> {
        let k = e.key();
        if kind == CtEventKind::Destroy {
            self.young_forget(&k);
            return self.mirror.on_event(kind, e);
        }
        // An update reports only what changed of the TCP state, helper and sequence
        // adjustment: the rest is what was known.
        let known = (kind == CtEventKind::Update)
            .then(|| {
                self.mirror
                    .get(&k)
                    .or_else(|| self.young_get(&k).map(|(_, p)| p))
            })
            .flatten();
        let e = &match known {
            Some(known) => e.completed_by(known),
            None => *e,
        };
        match self.verdict(e, now) {
            Verdict::Sync => {
                self.young_forget(&k);
                self.mirror.on_event(kind, e)
            }
            // A skipped entry the peer was told about (a rule or address changed) goes.
            Verdict::Skip => {
                self.young_forget(&k);
                self.mirror.on_event(CtEventKind::Destroy, e)
            }
            Verdict::Young => {
                let first = self.young.get(&k).map_or(now, |(f, _)| *f);
                self.young.insert(k, (first, *e));
                None
            }
        }
    }

    /// An expectation is synced only with its master: the standby cannot create it without.
    fn master_told(&self, x: &CtExpect) -> bool {
        self.mirror.get(&(x.master, x.zone)).is_some()
    }

    /// One entry's change made in `tables`; its key for the sync engine.
    fn apply_entry(c: Change<CtEntry>, tables: &mut Tables, now: Millis) -> ItemKey {
        match c {
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
        }
    }

    /// One expectation's change made in `tables`; its key for the sync engine.
    fn apply_expect(c: Change<CtExpect>, tables: &mut Tables, now: Millis) -> ItemKey {
        match c {
            Change::Upsert(e) => {
                let (k, v) = exp_to_item(&e, now);
                tables.upsert_kernel_expect(k, v);
                ItemKey::KernelExpect(k)
            }
            Change::Remove((tuple, zone)) => {
                let k = exp_key_of(&tuple, zone);
                tables.remove_kernel_expect(&k);
                ItemKey::KernelExpect(k)
            }
        }
    }

    fn apply(
        changes: Vec<Change<CtEntry>>,
        exp_changes: Vec<Change<CtExpect>>,
        tables: &mut Tables,
        now: Millis,
    ) -> Vec<ItemKey> {
        let mut keys: Vec<ItemKey> = changes
            .into_iter()
            .map(|c| Self::apply_entry(c, tables, now))
            .collect();
        keys.extend(
            exp_changes
                .into_iter()
                .map(|c| Self::apply_expect(c, tables, now)),
        );
        keys
    }

    /// Active: this member's kernel reported `events`; they update its kernel tables, and
    /// the returned keys go to the sync engine (`PacketPath::changed`): entries before
    /// expectations, so the peer hears of a master before what it announced.
    /// Entries the selection ([`KernelPath::with_selection`]) skips are not sent (and removed
    /// from the peer if it had them); young ones wait for [`KernelPath::on_tick`].
    /// Each event is applied as it is read (no list of changes in between: one copy of
    /// each entry less, at 100,000 events a second).
    pub fn on_events(&mut self, events: &Events, tables: &mut Tables, now: Millis) -> Vec<ItemKey> {
        let mut keys = Vec::with_capacity(events.entries.len() + events.expects.len());
        for ev in &events.entries {
            if self.theirs(&ev.entry) {
                continue;
            }
            if let Some(c) = self.select_event(ev.kind, &ev.entry, now) {
                keys.push(Self::apply_entry(c, tables, now));
            }
        }
        for ev in &events.expects {
            let kind = if ev.kind != CtEventKind::Destroy && !self.master_told(&ev.exp) {
                CtEventKind::Destroy
            } else {
                ev.kind
            };
            if let Some(c) = self.exp_mirror.on_event(kind, &ev.exp) {
                keys.push(Self::apply_expect(c, tables, now));
            }
        }
        keys
    }

    /// Active: the entries these events changed without saying so, which the caller must read
    /// from the kernel (`Ctnetlink::get`) and pass back to [`KernelPath::on_events`] as
    /// updates: the masters of new translated expectations. A NAT helper that rewrites a
    /// command (FTP's `PORT` through SNAT) moves its master's sequence adjustment in the same
    /// packet that creates the expectation, and the kernel reports no event for an
    /// adjustment. Only masters the peer was told about (the others are not synced).
    pub fn to_reread(&self, events: &Events) -> Vec<CtKey> {
        let mut seen = HashSet::new();
        events
            .expects
            .iter()
            .filter(|ev| ev.kind == CtEventKind::New && ev.exp.nat.is_some())
            .map(|ev| (ev.exp.master, ev.exp.zone))
            .filter(|k| self.mirror.get(k).is_some() && seen.insert(*k))
            .collect()
    }

    /// Active, periodically (about once a second): the entries that reached the minimum age
    /// since they were held back are sent now.
    pub fn on_tick(&mut self, tables: &mut Tables, now: Millis) -> Vec<ItemKey> {
        if self.young.is_empty() {
            return Vec::new();
        }
        let min = self.select.min_age_ms;
        let grown: Vec<CtKey> = self
            .young
            .iter()
            .filter(|(_, (first, _))| now.saturating_sub(*first) >= min)
            .map(|(k, _)| *k)
            .collect();
        let mut changes = Vec::new();
        for k in grown {
            if let Some((_, e)) = self.young.remove(&k) {
                changes.extend(self.mirror.on_event(CtEventKind::New, &e));
            }
        }
        Self::apply(changes, Vec::new(), tables, now)
    }

    /// Active, after events were lost: a dump of the kernel's entries and expectations; the
    /// returned keys are exactly the difference the lost events would have carried.
    pub fn on_dump(
        &mut self,
        dump: &[CtEntry],
        expects: &[CtExpect],
        tables: &mut Tables,
        now: Millis,
    ) -> Vec<ItemKey> {
        let mut selected = Vec::with_capacity(dump.len());
        let mut young = HashMap::new();
        for e in dump.iter().filter(|e| !self.theirs(e)) {
            match self.verdict(e, now) {
                Verdict::Sync => selected.push(*e),
                Verdict::Skip => {}
                Verdict::Young => {
                    let first = self.young.get(&e.key()).map_or(now, |(f, _)| *f);
                    young.insert(e.key(), (first, *e));
                }
            }
        }
        // Young entries that vanished from the table are forgotten.
        self.young = young;
        let changes = self.mirror.reconcile(&selected);
        let expects: Vec<CtExpect> = expects
            .iter()
            .filter(|x| self.master_told(x))
            .copied()
            .collect();
        let exp_changes = self.exp_mirror.reconcile(&expects);
        Self::apply(changes, exp_changes, tables, now)
    }

    /// Active, periodically (see `REFRESH_EVERY` in the daemon): a snapshot of the kernel's
    /// entries, taken while events kept flowing (so it may be older than what the events
    /// told since): the peer's copy of an entry is renewed when it has less than half of the
    /// time the kernel now gives it (the kernel extends a UDP or ICMP entry's timeout with
    /// each packet and reports no event for it). Only entries the peer was told exactly as
    /// the snapshot shows them (but for the timeout) are renewed: one the events removed or
    /// changed since the snapshot is left to the events, so a stale snapshot never brings
    /// back a closed connection or an older state. Nothing is removed here (an overrun's
    /// reconcile does that, see [`KernelPath::on_dump`]).
    pub fn on_renew(&mut self, dump: &[CtEntry], tables: &mut Tables, now: Millis) -> Vec<ItemKey> {
        let mut keys = Vec::new();
        for e in dump {
            let Some(told) = self.mirror.get(&e.key()) else {
                continue;
            };
            let same = CtEntry {
                timeout_s: 0,
                ..*told
            } == CtEntry { timeout_s: 0, ..*e };
            if !same {
                continue;
            }
            let k = key_of(&e.orig, e.zone);
            let Some(v) = tables.kernel_conns().get(&k) else {
                continue;
            };
            if v.expires.saturating_sub(now) >= u64::from(e.timeout_s) * 1000 / 2 {
                continue;
            }
            let (k, v) = to_item(e, now);
            tables.upsert_kernel_conn(k, v);
            self.mirror.assume(*e);
            keys.push(ItemKey::KernelConn(k));
        }
        keys
    }

    /// Active, on a takeover of `only` (domains), before the dump that follows: the entries
    /// of those domains in `tables`' kernel table came from the peer (they were installed
    /// here as they arrived), so the peer knows them; the dump then sends only what differs,
    /// and removals of the entries that vanished. What the mirror held of those domains is
    /// replaced; the other domains' entries stay as they are.
    pub fn seed(&mut self, tables: &Tables, now: Millis, only: DomainSet) {
        let d = &self.domains;
        self.mirror.retain(|e| !only.contains(d.of_entry(e)));
        self.exp_mirror.retain(|x| !only.contains(d.of_expect(x)));
        for (k, v) in tables.kernel_conns() {
            let e = from_item(k, v, now);
            if only.contains(d.of_entry(&e)) {
                self.mirror.assume(e);
            }
        }
        for (k, v) in tables.kernel_expects() {
            let x = exp_from_item(k, v, now);
            if only.contains(d.of_expect(&x)) {
                self.exp_mirror.assume(x);
            }
        }
    }

    /// Standby: what the peer's records since the last call ask of this member's kernel
    /// (installed as they arrive, so a takeover has nothing left to install). Only for the
    /// domains this member is standby for: the kernel of a domain's active member is the
    /// source of that domain's table (what a peer sends it, a bulk, is not installed).
    pub fn kernel_work(&mut self, tables: &mut Tables, now: Millis) -> KernelWork {
        let mut w = KernelWork::default();
        let mut keys = tables.take_kernel_changes();
        if self.active == self.domains.all() {
            return w;
        }
        let mut seen = HashSet::with_capacity(keys.len());
        keys.retain(|k| seen.insert(k.clone()));
        let d = &self.domains;
        let theirs = |t: &CtTuple, r: &CtTuple| !self.active.contains(d.of_tuples(t, r));
        for k in keys {
            match k {
                ItemKey::KernelConn(k) => match tables.kernel_conns().get(&k) {
                    Some(v) => {
                        let e = from_item(&k, v, now);
                        if theirs(&e.orig, &e.reply) {
                            w.install.push(e);
                        }
                    }
                    None => {
                        let (orig, zone) = orig_of(&k);
                        if theirs(&orig, &orig.inverse()) {
                            w.remove.push((orig, zone));
                        }
                    }
                },
                ItemKey::KernelExpect(k) => match tables.kernel_expects().get(&k) {
                    Some(v) => {
                        let x = exp_from_item(&k, v, now);
                        if !self.active.contains(d.of_expect(&x)) {
                            w.install_expects.push(x);
                        }
                    }
                    None => w.remove_expects.push(exp_tuple_of(&k)),
                },
                _ => {}
            }
        }
        w
    }

    /// The steps of taking (`active`) or giving up the active role for every domain, in
    /// order (see [`KernelPath::set_domains`]). Unlike it, this returns every step even when
    /// nothing changes: a starting member runs the standby's steps to take leftover addresses
    /// of an earlier run off its interfaces.
    pub fn set_role(&mut self, active: bool) -> Vec<Step> {
        let all = self.domains.all();
        if active {
            self.active = DomainSet::EMPTY;
            self.set_domains(all)
        } else {
            self.active = all;
            self.set_domains(DomainSet::EMPTY)
        }
    }

    /// The steps that make this member active for exactly the domains `target`, in order.
    /// Taking a domain: its addresses move and are announced first, then the guard opens
    /// for it (the shell writes the standby's held entries into the kernel just before).
    /// The synced connections in the kernel pass the guard (it drops only new connections),
    /// so they resume the moment the neighbours learn the addresses; the guard's nft
    /// transaction takes tens of ms (a process), and only new connections wait for it, as
    /// they waited through the detection (measured: opening the guard first delayed the
    /// first forwarded packet by 26 ms). Giving one up: the guard closes for it first, so
    /// nothing new is admitted while its addresses leave, then its entries are re-created
    /// ([`Step::RecreateTcp`]). The mirror forgets a domain given up (what the peer is told
    /// of it is the peer's business from now on) and starts empty on a takeover by a member
    /// that was active for none: the first dump or events rebuild it; a domain taken while
    /// active for others is seeded by the shell ([`KernelPath::seed`]).
    pub fn set_domains(&mut self, target: DomainSet) -> Vec<Step> {
        let target = target & self.domains.all();
        let lost = self.active.minus(target);
        let gained = target.minus(self.active);
        let standby = self.domains.all().minus(target);
        let (lost_addrs, gained_addrs) = (self.addresses_of(lost), self.addresses_of(gained));
        let mut steps = Vec::new();
        if !lost.is_empty() {
            steps.push(Step::Guard { standby });
            steps.extend(lost_addrs.into_iter().map(Step::RemoveAddress));
            steps.push(Step::RecreateTcp { domains: lost });
            let d = &self.domains;
            self.mirror.retain(|e| !lost.contains(d.of_entry(e)));
            self.exp_mirror.retain(|x| !lost.contains(d.of_expect(x)));
            self.young.retain(|_, (_, e)| !lost.contains(d.of_entry(e)));
        }
        if !gained.is_empty() {
            if self.active.minus(lost).is_empty() {
                self.mirror = Mirror::new();
                self.exp_mirror = Mirror::new();
                self.young.clear();
            }
            steps.extend(gained_addrs.iter().map(|a| Step::AddAddress(*a)));
            steps.extend(gained_addrs.iter().map(|a| Step::Announce(*a)));
            steps.push(Step::Guard { standby });
        }
        self.active = target;
        steps
    }

    /// The cluster addresses of the domains this member is active for.
    pub fn active_addresses(&self) -> Vec<ClusterAddr> {
        self.addresses_of(self.active)
    }

    /// The cluster addresses of the domains `set`.
    fn addresses_of(&self, set: DomainSet) -> Vec<ClusterAddr> {
        self.addrs
            .iter()
            .filter(|(d, _)| set.contains(*d))
            .map(|(_, a)| *a)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::expect::{KExpFn, KExpNat};
    use crate::conntrack::{CtEvent, CtEventKind, ExpEvent, KHelper, KSeqAdj, TcpInfo};
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
        let evs = |entries: Vec<CtEvent>| Events {
            entries,
            expects: Vec::new(),
        };
        let keys = p.on_events(
            &evs(vec![ev(CtEventKind::New, 1), ev(CtEventKind::New, 2)]),
            &mut t,
            0,
        );
        assert_eq!(keys.len(), 2);
        assert_eq!(t.kernel_conns().len(), 2);
        let keys = p.on_events(&evs(vec![ev(CtEventKind::Destroy, 1)]), &mut t, 10);
        assert_eq!(keys, vec![ItemKey::KernelConn(key_of(&entry(1).orig, 0))]);
        assert_eq!(t.kernel_conns().len(), 1);
        // After an overrun the dump says 2 is gone and 3 appeared.
        let keys = p.on_dump(&[entry(3)], &[], &mut t, 20);
        assert_eq!(keys.len(), 2);
        assert_eq!(t.kernel_conns().len(), 1);
        assert!(t.kernel_conns().contains_key(&key_of(&entry(3).orig, 0)));
    }

    #[test]
    fn an_update_that_reports_only_what_changed_keeps_the_rest() {
        // FTP's `PORT` rewritten through SNAT: the kernel's update event carries the new
        // sequence adjustment but not the TCP state, which did not change.
        let mut p = KernelPath::new(Vec::new());
        let mut t = Tables::new();
        let tcp = TcpInfo {
            state: crate::conntrack::TCP_ESTABLISHED,
            wscale_orig: 7,
            wscale_reply: 7,
            flags_orig: 0x23,
            flags_reply: 0x23,
        };
        let mut e = entry(21);
        e.orig.proto = 6;
        e.reply.proto = 6;
        e.tcp = Some(tcp);
        e.helper = KHelper::new("ftp");
        let evs = |kind, entry| Events {
            entries: vec![CtEvent { kind, entry }],
            expects: Vec::new(),
        };
        p.on_events(&evs(CtEventKind::New, e), &mut t, 0);
        let adj = [
            KSeqAdj {
                correction_pos: 500,
                offset_before: 0,
                offset_after: 2,
            },
            KSeqAdj::default(),
        ];
        let update = CtEntry {
            tcp: None,
            seq_adj: Some(adj),
            ..e
        };
        p.on_events(&evs(CtEventKind::Update, update), &mut t, 10);
        let synced = t.kernel_conns()[&key_of(&e.orig, 0)];
        assert_eq!(synced.tcp.map(|x| x.state), Some(tcp.state));
        assert_eq!(synced.seq_adj, Some(adj));
        // A later update without the adjustment (a state change) keeps it too.
        let closing = CtEntry {
            tcp: Some(TcpInfo { state: 4, ..tcp }),
            ..e
        };
        p.on_events(&evs(CtEventKind::Update, closing), &mut t, 20);
        let synced = t.kernel_conns()[&key_of(&e.orig, 0)];
        assert_eq!(synced.tcp.map(|x| x.state), Some(4));
        assert_eq!(synced.seq_adj, Some(adj));
    }

    #[test]
    fn the_masters_of_new_translated_expectations_are_read_again() {
        let mut p = KernelPath::new(Vec::new());
        let mut t = Tables::new();
        let told = |port| CtEvent {
            kind: CtEventKind::New,
            entry: entry(port),
        };
        p.on_events(
            &Events {
                entries: vec![told(1), told(2)],
                expects: Vec::new(),
            },
            &mut t,
            0,
        );
        let nat = KExpNat {
            dir: 1,
            addr: "10.1.0.1".parse().unwrap(),
            port: 50_000,
            func: KExpFn::new("nat-follow-master").unwrap(),
        };
        let exp = |port, nat, kind| ExpEvent {
            kind,
            exp: CtExpect {
                nat,
                ..ftp_expect(port)
            },
        };
        let events = Events {
            entries: Vec::new(),
            expects: vec![
                // Translated, twice for the same master: read once.
                exp(1, Some(nat), CtEventKind::New),
                exp(1, Some(nat), CtEventKind::New),
                // Not translated: no rewrite, nothing to read.
                exp(2, None, CtEventKind::New),
                // A master the peer was not told about, and a destroy: nothing either.
                exp(3, Some(nat), CtEventKind::New),
                exp(2, Some(nat), CtEventKind::Destroy),
            ],
        };
        assert_eq!(p.to_reread(&events), vec![(entry(1).orig, 0)]);
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
        p.seed(&t, 500, DomainSet::one(0));
        // The kernel still holds 1 and 2 (timeouts ticked down), 3 expired, 4 is new.
        let mut one = entry(1);
        one.timeout_s -= 1;
        let keys = p.on_dump(&[one, entry(2), entry(4)], &[], &mut t, 1000);
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

    fn ftp_expect(port: u16) -> CtExpect {
        let master = entry(port).orig;
        CtExpect {
            tuple: CtTuple {
                src: master.dst,
                dst: master.src,
                proto: 6,
                src_port: 0,
                dst_port: 50_000 + port,
            },
            mask_src: "255.255.255.255".parse().unwrap(),
            mask_port: 0,
            master,
            zone: 0,
            timeout_s: 300,
            flags: 0,
            nat: None,
            class: 0,
        }
    }

    #[test]
    fn an_expectation_follows_its_master_to_the_standby_and_goes_when_used() {
        // Active: the master's event and the expectation's arrive in one read.
        let mut active = KernelPath::new(Vec::new());
        let mut ta = Tables::new();
        let mut master = entry(1);
        master.helper = crate::conntrack::KHelper::new("ftp");
        let evs = Events {
            entries: vec![CtEvent {
                kind: CtEventKind::New,
                entry: master,
            }],
            expects: vec![ExpEvent {
                kind: CtEventKind::New,
                exp: ftp_expect(1),
            }],
        };
        let keys = active.on_events(&evs, &mut ta, 0);
        let ek = exp_key_of(&ftp_expect(1).tuple, 0);
        assert_eq!(
            keys,
            vec![
                ItemKey::KernelConn(key_of(&master.orig, 0)),
                ItemKey::KernelExpect(ek)
            ]
        );
        // Standby: the records install the master (with its helper) before the expectation.
        let mut standby = KernelPath::new(Vec::new());
        let mut tb = Tables::new();
        tb.keep_kernel_changes();
        let (k, v) = exp_to_item(&ftp_expect(1), 0);
        let (mk, mv) = to_item(&master, 0);
        tb.install_synced(SyncedItem::KernelExpect(k, v)).unwrap();
        tb.install_synced(SyncedItem::KernelConn(mk, mv)).unwrap();
        let w = standby.kernel_work(&mut tb, 1_000);
        assert_eq!(
            w.install,
            vec![CtEntry {
                timeout_s: 29,
                ..master
            }]
        );
        assert_eq!(
            w.install_expects,
            vec![CtExpect {
                timeout_s: 299,
                ..ftp_expect(1)
            }]
        );
        // The data connection arrived on the active: the expectation is destroyed there, and
        // removed on the standby.
        let used = Events {
            entries: Vec::new(),
            expects: vec![ExpEvent {
                kind: CtEventKind::Destroy,
                exp: ftp_expect(1),
            }],
        };
        assert_eq!(
            active.on_events(&used, &mut ta, 10),
            vec![ItemKey::KernelExpect(ek)]
        );
        assert!(ta.kernel_expects().is_empty());
        tb.remove_item(&ItemKey::KernelExpect(ek));
        let w = standby.kernel_work(&mut tb, 2_000);
        assert_eq!(w.remove_expects, vec![(ftp_expect(1).tuple, 0)]);
        assert!(w.install.is_empty() && w.install_expects.is_empty());
        // A new active seeded from its synced tables sends nothing for what it was given.
        let mut t = Tables::new();
        let (mk, mv) = to_item(&master, 0);
        t.install_synced(SyncedItem::KernelConn(mk, mv)).unwrap();
        t.install_synced(SyncedItem::KernelExpect(k, v)).unwrap();
        let mut p = KernelPath::new(Vec::new());
        p.set_role(true);
        p.seed(&t, 0, DomainSet::one(0));
        assert!(p.on_dump(&[master], &[ftp_expect(1)], &mut t, 0).is_empty());
    }

    #[test]
    fn the_selection_skips_own_and_ruled_out_entries_and_holds_young_ones_until_their_age() {
        use crate::select::{Action, Rule};
        let sel = Selection {
            own: vec!["10.9.0.1".parse().unwrap()],
            rules: vec![Rule {
                action: Action::Skip,
                proto: Some(17),
                src: None,
                dst: None,
                dst_port: Some((5353, 5353)),
            }],
            min_age_ms: 3_000,
        };
        let mut p = KernelPath::new(Vec::new()).with_selection(sel);
        let mut t = Tables::new();
        let ev = |kind, entry| CtEvent { kind, entry };
        let evs = |entries| Events {
            entries,
            expects: Vec::new(),
        };
        let mut own = entry(1);
        own.orig.dst = "10.9.0.1".parse().unwrap();
        own.reply = own.orig.inverse();
        let mut mdns = entry(2);
        mdns.orig.dst_port = 5353;
        let (young, short) = (entry(3), entry(4));
        let keys = p.on_events(
            &evs(vec![
                ev(CtEventKind::New, own),
                ev(CtEventKind::New, mdns),
                ev(CtEventKind::New, young),
                ev(CtEventKind::New, short),
            ]),
            &mut t,
            1_000,
        );
        assert!(keys.is_empty(), "nothing goes at once: {keys:?}");
        assert_eq!(p.young_len(), 2);
        // The short one ends before it is old enough: the peer never hears of it.
        assert!(p
            .on_events(&evs(vec![ev(CtEventKind::Destroy, short)]), &mut t, 2_000)
            .is_empty());
        // An update does not restart the age.
        assert!(p
            .on_events(&evs(vec![ev(CtEventKind::Update, young)]), &mut t, 3_500)
            .is_empty());
        assert!(p.on_tick(&mut t, 3_999).is_empty());
        assert_eq!(
            p.on_tick(&mut t, 4_000),
            vec![ItemKey::KernelConn(key_of(&young.orig, 0))]
        );
        assert_eq!(t.kernel_conns().len(), 1);
        // Once told, later events go at once.
        assert_eq!(
            p.on_events(&evs(vec![ev(CtEventKind::Update, young)]), &mut t, 4_100)
                .len(),
            1
        );
        // An expectation of a master the peer does not have is not sent.
        let mut held = entry(5);
        held.orig.proto = 6;
        let e = ExpEvent {
            kind: CtEventKind::New,
            exp: ftp_expect(5),
        };
        let got = p.on_events(
            &Events {
                entries: vec![ev(CtEventKind::New, held)],
                expects: vec![e],
            },
            &mut t,
            5_000,
        );
        assert!(got.is_empty(), "{got:?}");
        // A dump after an overrun keeps the same choices.
        let keys = p.on_dump(&[own, mdns, young, held], &[ftp_expect(5)], &mut t, 6_000);
        assert!(keys.is_empty(), "{keys:?}");
        assert_eq!(p.young_len(), 1, "the held master is still young");
    }

    #[test]
    fn a_refresh_renews_the_peers_copy_of_an_entry_the_kernel_extended_without_an_event() {
        let mut p = KernelPath::new(Vec::new());
        let mut t = Tables::new();
        // A UDP entry (30 s) and a TCP one (5 days), told at 0.
        let udp = entry(1);
        let mut tcp = entry(2);
        tcp.orig.proto = 6;
        tcp.timeout_s = 432_000;
        let evs = Events {
            entries: vec![
                CtEvent {
                    kind: CtEventKind::New,
                    entry: udp,
                },
                CtEvent {
                    kind: CtEventKind::New,
                    entry: tcp,
                },
            ],
            expects: Vec::new(),
        };
        assert_eq!(p.on_events(&evs, &mut t, 0).len(), 2);
        // 10 s later both were refreshed by traffic: the peer's UDP copy has 20 s of 30 left.
        assert!(p.on_renew(&[udp, tcp], &mut t, 10_000).is_empty());
        // 20 s later: 10 s of 30 left, below half: refreshed; the TCP one is not.
        let k = key_of(&udp.orig, 0);
        assert_eq!(
            p.on_renew(&[udp, tcp], &mut t, 20_000),
            vec![ItemKey::KernelConn(k)]
        );
        assert_eq!(t.kernel_conns()[&k].expires, 50_000);
        // And not again right after.
        assert!(p.on_renew(&[udp, tcp], &mut t, 21_000).is_empty());
    }

    #[test]
    fn a_renewal_from_an_older_snapshot_never_revives_or_rewinds_an_entry() {
        let mut p = KernelPath::new(Vec::new());
        let mut t = Tables::new();
        let udp = entry(1);
        let mut tcp = entry(2);
        tcp.orig.proto = 6;
        tcp.timeout_s = 120;
        tcp.status = 0x8;
        let new = |entry| CtEvent {
            kind: CtEventKind::New,
            entry,
        };
        let evs = Events {
            entries: vec![new(udp), new(tcp)],
            expects: Vec::new(),
        };
        assert_eq!(p.on_events(&evs, &mut t, 0).len(), 2);
        // The snapshot is taken at 20 s (both below half of their time on the peer)...
        let snapshot = [udp, tcp];
        // ...then the UDP flow ends and the TCP entry changes state, both told by events.
        let mut later = tcp;
        later.status = 0xe;
        let evs = Events {
            entries: vec![
                CtEvent {
                    kind: CtEventKind::Destroy,
                    entry: udp,
                },
                new(later),
            ],
            expects: Vec::new(),
        };
        p.on_events(&evs, &mut t, 20_000);
        // The older snapshot renews neither: the closed flow stays closed, the new state stays.
        assert!(p.on_renew(&snapshot, &mut t, 100_000).is_empty());
        assert!(!t.kernel_conns().contains_key(&key_of(&udp.orig, 0)));
        // A snapshot that matches what was told renews it.
        let k = key_of(&later.orig, 0);
        assert_eq!(
            p.on_renew(&[later], &mut t, 100_000),
            vec![ItemKey::KernelConn(k)]
        );
        assert_eq!(t.kernel_conns()[&k].expires, 220_000);
    }

    #[test]
    fn a_takeover_moves_the_addresses_before_the_guard_opens_and_a_release_closes_it_first_then_renews_its_entries(
    ) {
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
                Step::AddAddress(a),
                Step::Announce(a),
                Step::Guard {
                    standby: DomainSet::EMPTY
                },
            ]
        );
        // Then its own TCP entries are re-created (their windows would be stale when it
        // forwards again).
        let zero = DomainSet::one(0);
        assert_eq!(
            p.set_role(false),
            vec![
                Step::Guard { standby: zero },
                Step::RemoveAddress(a),
                Step::RecreateTcp { domains: zero }
            ]
        );
    }

    /// Load sharing: members A (active for domain 0) and B (active for domain 1) each send
    /// only their own domain's entries, install only the other's, never send back what they
    /// installed, and a member taking the other's domain over moves only that domain's
    /// addresses and keeps its own.
    #[test]
    fn two_members_active_for_different_domains_sync_both_ways_without_echo() {
        let addr = |ifindex, ip: &str| ClusterAddr {
            ifindex,
            mac: [2, 0, 0, 0, 0, ifindex as u8],
            addr: ip.parse().unwrap(),
            prefix_len: 24,
        };
        let (a0, a1) = (addr(3, "10.1.0.254"), addr(3, "10.3.0.254"));
        let domains = Domains::new(0, vec![(1, "10.3.0.0/24".parse().unwrap())]);
        let path = || KernelPath::shared(domains.clone(), vec![(0, a0), (1, a1)]);
        let (mut a, mut b) = (path(), path());
        let d0 = entry(1000);
        let d1 = CtEntry {
            orig: CtTuple {
                src: "10.3.0.1".parse().unwrap(),
                ..d0.orig
            },
            reply: CtTuple {
                dst: "10.3.0.1".parse().unwrap(),
                ..d0.reply
            },
            ..d0
        };
        assert_eq!(
            a.set_domains(DomainSet::one(0)),
            vec![
                Step::AddAddress(a0),
                Step::Announce(a0),
                Step::Guard {
                    standby: DomainSet::one(1)
                }
            ]
        );
        b.set_domains(DomainSet::one(1));
        let (mut ta, mut tb) = (Tables::new(), Tables::new());
        ta.keep_kernel_changes();
        tb.keep_kernel_changes();
        let new = |e: CtEntry| Events {
            entries: vec![CtEvent {
                kind: CtEventKind::New,
                entry: e,
            }],
            expects: Vec::new(),
        };
        // A's kernel reports its own connection and the one it installed for B.
        let keys = a.on_events(&new(d0), &mut ta, 0);
        assert_eq!(keys, vec![ItemKey::KernelConn(key_of(&d0.orig, 0))]);
        assert!(a.on_events(&new(d1), &mut ta, 0).is_empty(), "sent back");
        assert!(b.on_events(&new(d0), &mut tb, 0).is_empty(), "sent back");
        assert_eq!(b.on_events(&new(d1), &mut tb, 0).len(), 1);
        // Records arrive: each installs the other's; its own domain's (a bulk's echo) not.
        for (t, e) in [(&mut ta, [d1, d0]), (&mut tb, [d0, d1])] {
            for e in e {
                let (k, v) = to_item(&e, 0);
                t.install_synced(SyncedItem::KernelConn(k, v)).unwrap();
            }
        }
        assert_eq!(a.kernel_work(&mut ta, 0).install, vec![d1]);
        assert_eq!(b.kernel_work(&mut tb, 0).install, vec![d0]);
        // A dies: B takes domain 0 too, without touching domain 1's address.
        let steps = b.set_domains(DomainSet::one(0) | DomainSet::one(1));
        assert_eq!(
            steps,
            vec![
                Step::AddAddress(a0),
                Step::Announce(a0),
                Step::Guard {
                    standby: DomainSet::EMPTY
                }
            ]
        );
        // Seeded with what A had sent it: A's connection is known to the peer, and B's
        // own domain 1 entry is still in its mirror.
        b.seed(&tb, 0, DomainSet::one(0));
        let destroy = |e: CtEntry| Events {
            entries: vec![CtEvent {
                kind: CtEventKind::Destroy,
                entry: e,
            }],
            expects: Vec::new(),
        };
        assert_eq!(b.on_events(&destroy(d0), &mut tb, 0).len(), 1);
        assert_eq!(b.on_events(&destroy(d1), &mut tb, 0).len(), 1);
        // A member giving a domain up closes the guard for it, takes its address off,
        // re-creates its entries alone, and tells the peer nothing of them any more.
        assert_eq!(a.on_events(&new(d0), &mut ta, 0).len(), 1);
        assert_eq!(
            a.set_domains(DomainSet::EMPTY | DomainSet::one(1)),
            vec![
                Step::Guard {
                    standby: DomainSet::one(0)
                },
                Step::RemoveAddress(a0),
                Step::RecreateTcp {
                    domains: DomainSet::one(0)
                },
                Step::AddAddress(a1),
                Step::Announce(a1),
                Step::Guard {
                    standby: DomainSet::one(0)
                }
            ]
        );
        assert!(a.on_events(&destroy(d0), &mut ta, 0).is_empty());
        assert_eq!(a.active_addresses(), vec![a1]);
    }
}
