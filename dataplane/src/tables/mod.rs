//! The state tables of the dataplane: connections (TCP with state, UDP, ICMP, GRE, ESP, SCTP,
//! keyed by 5-tuple and zone), hosts, authenticated users, helper expectations (FTP/SIP),
//! gateway status, certificate serials and IKEv2 SAs with anti-replay counters.
//!
//! Times are milliseconds of a monotonic clock the caller passes in ([`Millis`]); nothing here
//! reads a clock.
//!
//! # Larval entries and constant-time activation
//! Every synchronized item carries the generation it was installed under (`gen`):
//! [`LOCAL_GEN`] for items this member created itself, else the receive generation current
//! when the peer's record arrived. An item is *live* when `gen == LOCAL_GEN` or
//! `gen <= activated_upto`. [`Tables::activate`] sets `activated_upto` to the current receive
//! generation and opens a new one: every larval item becomes live at once and no entry is
//! read or written (see the `activation_touches_no_entry` test). Timeouts count from
//! `max(last_seen, activated_at)`, computed on lookup, so idle timers restart at takeover
//! without a pass over the table either.
//!
//! # Who changes what
//! The tables own their mutations: the filter and the control plane change this member's own
//! items through the local API below; the state sync installs and removes the peer's items
//! only through [`Tables::install_synced`] and [`Tables::remove_item`], which enforce the caps
//! of [`Limits`] (a peer cannot make this member hold more than it is sized for).

use std::net::IpAddr;

use hashbrown::HashMap;

mod limits;
mod synced;
mod types;

pub use limits::{
    Limits, Refused, TableKind, MAX_CERTS, MAX_CERT_SERIAL_LEN, MAX_CONNS, MAX_EXPECTS,
    MAX_GATEWAYS, MAX_HOSTS, MAX_IKE_SAS, MAX_KERNEL_CONNS, MAX_KERNEL_EXPECTS, MAX_NAME_LEN,
    MAX_USERS, MAX_USER_GROUPS,
};
pub use synced::{ItemKey, SyncedItem};
pub use types::*;

/// Milliseconds of the caller's monotonic clock.
pub type Millis = u64;

/// `gen` of an item this member created (not received from the peer).
pub const LOCAL_GEN: u32 = 0;

/// Every table the dataplane synchronizes.
#[derive(Debug, Default)]
pub struct Tables {
    conns: HashMap<ConnKey, ConnEntry>,
    hosts: HashMap<ZoneAddr, HostEntry>,
    users: HashMap<IpAddr, UserEntry>,
    expects: HashMap<ExpectKey, Expectation>,
    gateways: HashMap<ZoneAddr, GatewayStatus>,
    /// Certificate serials (DER integer bytes).
    certs: HashMap<Vec<u8>, CertEntry>,
    ike: HashMap<IkeKey, IkeSa>,
    /// Kernel conntrack entries (the kernel data path).
    kconns: HashMap<KConnKey, KConn>,
    /// Kernel conntrack expectations (the kernel data path).
    kexps: HashMap<KExpKey, KExp>,
    /// Keys of kernel entries and expectations the peer installed, changed or removed since
    /// the kernel path last took them (`None`: not kept, no kernel path).
    kernel_journal: Option<Vec<ItemKey>>,
    /// Caps of what the peer installs.
    limits: Limits,
    /// Current receive generation (records from the peer are installed under it).
    rx_gen: u32,
    /// Items with `gen <= activated_upto` are live.
    activated_upto: u32,
    /// Role: records install live while active.
    active: bool,
    /// When the last activation happened (idle timers of synced entries restart there).
    activated_at: Millis,
    /// Entry writes and reads through the instrumented accessors (tests check that
    /// activation does none).
    entry_touches: u64,
}

impl Tables {
    /// Empty tables with the default caps ([`Limits::default`]).
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// Empty tables holding at most `limits` items from the peer.
    pub fn with_limits(limits: Limits) -> Self {
        Self {
            rx_gen: 1,
            limits,
            ..Self::default()
        }
    }

    /// The caps.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Number of connections (live and larval).
    pub fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether an item of generation `gen` is live.
    #[inline]
    pub fn is_live(&self, gen: u32) -> bool {
        gen == LOCAL_GEN || gen <= self.activated_upto
    }

    /// The generation received records are installed under now: the activated one while
    /// active (a record arriving after takeover is live at once), else the current larval one.
    pub fn install_gen(&self) -> u32 {
        if self.active {
            self.activated_upto
        } else {
            self.rx_gen
        }
    }

    /// The current larval generation.
    pub fn rx_gen(&self) -> u32 {
        self.rx_gen
    }

    /// Whether [`Tables::activate`] was called last (not [`Tables::deactivate`]).
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// Makes every larval item live, in constant time: no entry is visited.
    pub fn activate(&mut self, now: Millis) {
        self.activated_upto = self.rx_gen;
        self.activated_at = now;
        self.rx_gen = self.rx_gen.saturating_add(1);
        self.active = true;
    }

    /// Back to passive: records received from now on are larval (items already live stay
    /// live; a passive member does not forward).
    pub fn deactivate(&mut self) {
        self.active = false;
    }

    /// Number of entry accesses through the instrumented accessors since creation.
    pub fn entry_touches(&self) -> u64 {
        self.entry_touches
    }

    /// The time a connection's idle timer counts from.
    /// Every entry's idle timer restarts at the last activation: a synced entry's copy saw
    /// no packets here, and a local one kept from an earlier active spell saw none while the
    /// peer forwarded its packets (the peer only sends state changes). A dead connection
    /// lingers one timeout longer after a takeover; a live one is never cut by it.
    fn idle_base(&self, e: &ConnEntry) -> Millis {
        e.last_seen.max(self.activated_at)
    }

    /// Whether a live entry has timed out at `now`.
    pub fn conn_expired(&self, e: &ConnEntry, now: Millis) -> bool {
        now.saturating_sub(self.idle_base(e)) > e.state.timeout()
    }

    /// A connection (live or larval).
    pub fn conn(&mut self, key: &ConnKey) -> Option<&ConnEntry> {
        self.entry_touches += 1;
        self.conns.get(key)
    }

    /// A connection without counting the access (for the sync engine's reads).
    pub fn conn_peek(&self, key: &ConnKey) -> Option<&ConnEntry> {
        self.conns.get(key)
    }

    /// A connection, for update.
    pub fn conn_mut(&mut self, key: &ConnKey) -> Option<&mut ConnEntry> {
        self.entry_touches += 1;
        self.conns.get_mut(key)
    }

    /// Inserts or replaces a connection of this member (its `gen` as given).
    pub fn insert_conn(&mut self, key: ConnKey, e: ConnEntry) {
        self.entry_touches += 1;
        self.conns.insert(key, e);
    }

    /// Removes a connection.
    pub fn remove_conn(&mut self, key: &ConnKey) -> Option<ConnEntry> {
        self.entry_touches += 1;
        self.conns.remove(key)
    }

    /// Keys of every live connection.
    pub fn live_conn_keys(&self) -> Vec<ConnKey> {
        self.conns
            .iter()
            .filter(|(_, e)| self.is_live(e.gen))
            .map(|(k, _)| *k)
            .collect()
    }

    /// Removes every live, local-idle-expired connection; returns the removed ones.
    /// Larval entries never expire here: the active deletes them through sync.
    pub fn expire_conns(&mut self, now: Millis) -> Vec<(ConnKey, ConnEntry)> {
        let activated_upto = self.activated_upto;
        let activated_at = self.activated_at;
        let mut gone = Vec::new();
        self.conns.retain(|k, e| {
            let live = e.gen == LOCAL_GEN || e.gen <= activated_upto;
            let base = e.last_seen.max(activated_at);
            if live && now.saturating_sub(base) > e.state.timeout() {
                gone.push((*k, *e));
                false
            } else {
                true
            }
        });
        gone
    }

    /// Removes this member's own expectations and user authentications that ended before
    /// `now`; returns their keys (the peer must learn of the removals). The peer's items
    /// end when the peer says so.
    pub fn expire_local(&mut self, now: Millis) -> Vec<ItemKey> {
        let mut gone = Vec::new();
        self.expects.retain(|k, x| {
            let keep = x.gen != LOCAL_GEN || x.expires >= now;
            if !keep {
                gone.push(ItemKey::Expect(*k));
            }
            keep
        });
        self.users.retain(|k, x| {
            let keep = x.gen != LOCAL_GEN || x.expires >= now;
            if !keep {
                gone.push(ItemKey::User(*k));
            }
            keep
        });
        gone
    }

    /// Items in every table.
    pub fn total_items(&self) -> usize {
        TableKind::ALL.iter().map(|k| self.len_of(*k)).sum()
    }

    /// Bytes the connection map holds per entry: bucket array (key, value and one control
    /// byte per bucket) divided by the number of entries.
    pub fn conn_bytes_per_entry(&self) -> f64 {
        let per_bucket = std::mem::size_of::<(ConnKey, ConnEntry)>() + 1;
        if self.conns.is_empty() {
            return 0.0;
        }
        (self.conns.capacity() as f64 * per_bucket as f64 / 0.875) / self.conns.len() as f64
    }

    /// Reserves room for `n` more connections.
    pub fn reserve_conns(&mut self, n: usize) {
        self.conns.reserve(n);
    }

    /// Hosts.
    pub fn hosts(&self) -> &HashMap<ZoneAddr, HostEntry> {
        &self.hosts
    }

    /// Learns a host here (or replaces it).
    pub fn insert_host(&mut self, key: ZoneAddr, e: HostEntry) {
        self.hosts.insert(key, e);
    }

    /// Authenticated users by address.
    pub fn users(&self) -> &HashMap<IpAddr, UserEntry> {
        &self.users
    }

    /// Records a user authenticated here (or replaces it).
    pub fn insert_user(&mut self, key: IpAddr, e: UserEntry) {
        self.users.insert(key, e);
    }

    /// Helper expectations.
    pub fn expects(&self) -> &HashMap<ExpectKey, Expectation> {
        &self.expects
    }

    /// Records an expectation made here (or replaces it).
    pub fn insert_expect(&mut self, key: ExpectKey, e: Expectation) {
        self.expects.insert(key, e);
    }

    /// Removes an expectation (used once).
    pub fn remove_expect(&mut self, key: &ExpectKey) -> Option<Expectation> {
        self.expects.remove(key)
    }

    /// Gateways.
    pub fn gateways(&self) -> &HashMap<ZoneAddr, GatewayStatus> {
        &self.gateways
    }

    /// Records a gateway's status seen here.
    pub fn insert_gateway(&mut self, key: ZoneAddr, e: GatewayStatus) {
        self.gateways.insert(key, e);
    }

    /// Kernel conntrack entries (the kernel data path).
    pub fn kernel_conns(&self) -> &HashMap<KConnKey, KConn> {
        &self.kconns
    }

    /// Starts keeping the keys of the kernel entries the peer's records change (the kernel
    /// path on a standby installs them into its kernel as they arrive,
    /// [`Tables::take_kernel_changes`]).
    pub fn keep_kernel_changes(&mut self) {
        self.kernel_journal.get_or_insert_with(Vec::new);
    }

    /// The keys of kernel entries and expectations the peer changed since the last call
    /// ([`ItemKey::KernelConn`], [`ItemKey::KernelExpect`]; each once at most per change;
    /// look the key up to tell an install from a removal).
    pub fn take_kernel_changes(&mut self) -> Vec<ItemKey> {
        self.kernel_journal
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    fn journal_kernel(&mut self, k: ItemKey) {
        if let Some(j) = self.kernel_journal.as_mut() {
            j.push(k);
        }
    }

    /// Records one of this member's kernel conntrack entries (its kernel reported it); the
    /// caller tells the packet path it changed so the peer hears of it.
    pub fn upsert_kernel_conn(&mut self, key: KConnKey, mut e: KConn) {
        e.gen = LOCAL_GEN;
        self.kconns.insert(key, e);
    }

    /// Forgets one of this member's kernel conntrack entries (its kernel destroyed it).
    pub fn remove_kernel_conn(&mut self, key: &KConnKey) -> Option<KConn> {
        self.kconns.remove(key)
    }

    /// Kernel conntrack expectations (the kernel data path).
    pub fn kernel_expects(&self) -> &HashMap<KExpKey, KExp> {
        &self.kexps
    }

    /// Records one of this member's kernel expectations (its kernel reported it); the caller
    /// tells the packet path it changed so the peer hears of it.
    pub fn upsert_kernel_expect(&mut self, key: KExpKey, mut e: KExp) {
        e.gen = LOCAL_GEN;
        self.kexps.insert(key, e);
    }

    /// Forgets one of this member's kernel expectations (used, expired or removed).
    pub fn remove_kernel_expect(&mut self, key: &KExpKey) -> Option<KExp> {
        self.kexps.remove(key)
    }

    /// Certificate serials (DER integer bytes).
    pub fn certs(&self) -> &HashMap<Vec<u8>, CertEntry> {
        &self.certs
    }

    /// Records a certificate serial's status known here.
    pub fn insert_cert(&mut self, serial: Vec<u8>, e: CertEntry) {
        self.certs.insert(serial, e);
    }

    /// An IKE SA as this member must use it: a synced SA that became live has its outbound
    /// counters advanced by the takeover margins (computed here, not stored at activation).
    pub fn ike_sa(&self, key: &IkeKey) -> Option<IkeSa> {
        let sa = self.ike.get(key)?;
        Some(self.ike_effective(sa))
    }

    fn ike_effective(&self, sa: &IkeSa) -> IkeSa {
        let mut sa = *sa;
        if sa.gen != LOCAL_GEN && self.is_live(sa.gen) {
            sa.esp_seq_out = sa.esp_seq_out.saturating_add(IKE_TAKEOVER_MARGIN_ESP);
            sa.msg_id_out = sa.msg_id_out.saturating_add(IKE_TAKEOVER_MARGIN_MSGID);
        }
        sa
    }

    /// Takes the next outbound ESP sequence number of a live SA (the SA becomes local).
    pub fn ike_next_esp_seq(&mut self, key: &IkeKey) -> Option<u64> {
        let cur = self.ike.get(key)?;
        if !self.is_live(cur.gen) {
            return None;
        }
        let mut sa = self.ike_effective(cur);
        let seq = sa.esp_seq_out;
        sa.esp_seq_out = seq.checked_add(1)?;
        sa.gen = LOCAL_GEN;
        self.ike.insert(*key, sa);
        Some(seq)
    }

    /// Inserts or replaces an IKE SA (local).
    pub fn insert_ike(&mut self, key: IkeKey, sa: IkeSa) {
        self.ike.insert(key, sa);
    }

    /// Removes an IKE SA.
    pub fn remove_ike(&mut self, key: &IkeKey) -> Option<IkeSa> {
        self.ike.remove(key)
    }

    /// An IKE SA as stored (counters as last recorded, no margin).
    pub fn ike_raw(&self, key: &IkeKey) -> Option<&IkeSa> {
        self.ike.get(key)
    }

    /// Every IKE SA key.
    pub fn ike_keys(&self) -> Vec<IkeKey> {
        self.ike.keys().copied().collect()
    }
}

#[cfg(test)]
mod tests;
