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

use std::net::IpAddr;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

/// Milliseconds of the caller's monotonic clock.
pub type Millis = u64;

/// `gen` of an item this member created (not received from the peer).
pub const LOCAL_GEN: u32 = 0;

/// IP protocol numbers of the connection kinds tracked.
pub mod proto {
    /// ICMP.
    pub const ICMP: u8 = 1;
    /// TCP.
    pub const TCP: u8 = 6;
    /// UDP.
    pub const UDP: u8 = 17;
    /// GRE.
    pub const GRE: u8 = 47;
    /// ESP.
    pub const ESP: u8 = 50;
    /// ICMPv6.
    pub const ICMPV6: u8 = 58;
    /// SCTP.
    pub const SCTP: u8 = 132;
}

/// Idle timeouts per protocol and state (milliseconds). Chosen like the Linux conntrack
/// defaults, shortened for established TCP (an hour instead of five days: a failover cluster
/// must not carry week-old dead entries).
pub mod timeouts {
    use super::Millis;
    /// TCP handshake in progress.
    pub const TCP_HANDSHAKE: Millis = 60_000;
    /// TCP established.
    pub const TCP_ESTABLISHED: Millis = 3_600_000;
    /// TCP closing (FIN seen).
    pub const TCP_CLOSING: Millis = 120_000;
    /// TCP closed (RST, or FIN both ways and acknowledged).
    pub const TCP_CLOSED: Millis = 10_000;
    /// UDP flow, no reply yet.
    pub const UDP_UNREPLIED: Millis = 30_000;
    /// UDP flow with replies.
    pub const UDP_REPLIED: Millis = 180_000;
    /// ICMP echo and others.
    pub const ICMP: Millis = 30_000;
    /// GRE and ESP.
    pub const TUNNEL: Millis = 180_000;
    /// SCTP association in setup or shutdown.
    pub const SCTP_TRANSIENT: Millis = 30_000;
    /// SCTP association established.
    pub const SCTP_ESTABLISHED: Millis = 3_600_000;
    /// Helper expectation (FTP data, SIP media) not yet used.
    pub const EXPECTATION: Millis = 60_000;
}

/// A connection, direction-free: the two endpoints in a canonical order (`a` ≤ `b`), so both
/// directions of a flow find the same entry with one lookup.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnKey {
    /// Security zone (interface group) of the connection.
    pub zone: u16,
    /// IP protocol number.
    pub proto: u8,
    /// Lower endpoint address.
    pub a: IpAddr,
    /// Higher endpoint address.
    pub b: IpAddr,
    /// Port (TCP/UDP/SCTP) or ICMP echo identifier of `a`; 0 for GRE/ESP.
    pub a_port: u16,
    /// Port of `b`.
    pub b_port: u16,
}

fn addr_bits(a: &IpAddr) -> u128 {
    match a {
        // The IPv4-mapped form, so both families hash alike.
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(*v6),
    }
}

/// Three word writes instead of the derived field-by-field (and byte-by-byte for the
/// addresses) hashing: the key is hashed on every packet and every sync record.
impl std::hash::Hash for ConnKey {
    fn hash<H: std::hash::Hasher>(&self, h: &mut H) {
        h.write_u64(
            u64::from(self.zone) << 48
                | u64::from(self.proto) << 32
                | u64::from(self.a_port) << 16
                | u64::from(self.b_port),
        );
        h.write_u128(addr_bits(&self.a));
        h.write_u128(addr_bits(&self.b));
    }
}

impl ConnKey {
    /// The key of a packet from `src:sport` to `dst:dport`, and whether `src` is endpoint `a`.
    pub fn of(
        zone: u16,
        proto: u8,
        src: IpAddr,
        sport: u16,
        dst: IpAddr,
        dport: u16,
    ) -> (Self, bool) {
        let src_is_a = (src, sport) <= (dst, dport);
        let ((a, a_port), (b, b_port)) = if src_is_a {
            ((src, sport), (dst, dport))
        } else {
            ((dst, dport), (src, sport))
        };
        (
            Self {
                zone,
                proto,
                a,
                b,
                a_port,
                b_port,
            },
            src_is_a,
        )
    }
}

/// TCP connection state (simplified conntrack machine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TcpState {
    /// SYN seen from the originator.
    SynSent,
    /// SYN+ACK seen from the responder.
    SynRecv,
    /// Handshake completed.
    Established,
    /// FIN seen in one direction.
    FinWait,
    /// FIN seen in both directions.
    TimeWait,
    /// RST seen.
    Close,
}

/// SCTP association state (simplified).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SctpState {
    /// INIT seen.
    CookieWait,
    /// COOKIE ECHO seen.
    CookieEchoed,
    /// COOKIE ACK seen.
    Established,
    /// SHUTDOWN seen.
    ShutdownSent,
    /// SHUTDOWN COMPLETE or ABORT seen.
    Closed,
}

/// Per-protocol state of a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ConnState {
    /// TCP.
    Tcp(TcpState),
    /// UDP; `replied` once the responder sent a packet.
    Udp {
        /// A packet was seen from the responder.
        replied: bool,
    },
    /// ICMP / ICMPv6 (echo identifier in the ports).
    Icmp,
    /// GRE.
    Gre,
    /// ESP.
    Esp,
    /// SCTP.
    Sctp(SctpState),
    /// Another IP protocol.
    Other,
}

impl ConnState {
    /// The idle timeout of a connection in this state.
    pub fn timeout(self) -> Millis {
        use timeouts::*;
        match self {
            ConnState::Tcp(TcpState::SynSent | TcpState::SynRecv) => TCP_HANDSHAKE,
            ConnState::Tcp(TcpState::Established) => TCP_ESTABLISHED,
            ConnState::Tcp(TcpState::FinWait | TcpState::TimeWait) => TCP_CLOSING,
            ConnState::Tcp(TcpState::Close) => TCP_CLOSED,
            ConnState::Udp { replied: false } => UDP_UNREPLIED,
            ConnState::Udp { replied: true } => UDP_REPLIED,
            ConnState::Icmp | ConnState::Other => ICMP,
            ConnState::Gre | ConnState::Esp => TUNNEL,
            ConnState::Sctp(SctpState::Established) => SCTP_ESTABLISHED,
            ConnState::Sctp(_) => SCTP_TRANSIENT,
        }
    }
}

/// Bits of [`ConnEntry::flags`].
pub mod conn_flags {
    /// The originator is endpoint `a` of the key.
    pub const ORIG_IS_A: u8 = 0x01;
    /// The rule that admitted it says "do not sync".
    pub const NO_SYNC: u8 = 0x02;
    /// To or from the appliance itself (never synced: the peer has its own sockets).
    pub const LOCAL: u8 = 0x04;
    /// Terminated by a proxy on this member (never synced: the proxy's sockets are not).
    pub const PROXIED: u8 = 0x08;
    /// Admitted through a helper expectation (FTP data, SIP media).
    pub const RELATED: u8 = 0x10;
}

/// A connection's state. 64 bytes; see `memory_per_entry` for the measured cost in the map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConnEntry {
    /// Protocol state.
    pub state: ConnState,
    /// [`conn_flags`] bits.
    pub flags: u8,
    /// Generation it was installed under ([`LOCAL_GEN`] if created here).
    pub gen: u32,
    /// Id of the policy rule that admitted it.
    pub rule: u32,
    /// Creation time.
    pub created: Millis,
    /// Last packet (or, for a synced entry, the peer's last packet as of its record).
    pub last_seen: Millis,
    /// Packets originator→responder and back.
    pub packets: [u32; 2],
    /// Bytes originator→responder and back.
    pub bytes: [u64; 2],
}

impl ConnEntry {
    /// A new local entry.
    pub fn new(state: ConnState, orig_is_a: bool, rule: u32, extra_flags: u8, now: Millis) -> Self {
        Self {
            state,
            flags: extra_flags | if orig_is_a { conn_flags::ORIG_IS_A } else { 0 },
            gen: LOCAL_GEN,
            rule,
            created: now,
            last_seen: now,
            packets: [0; 2],
            bytes: [0; 2],
        }
    }

    /// Whether the flags allow syncing it (not "do not sync", not local, not proxied).
    pub fn syncable(&self) -> bool {
        self.flags & (conn_flags::NO_SYNC | conn_flags::LOCAL | conn_flags::PROXIED) == 0
    }
}

/// A host seen on a zone (address → Ethernet address).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostEntry {
    /// Its Ethernet address.
    pub mac: [u8; 6],
    /// Last time it was seen.
    pub last_seen: Millis,
    /// Generation ([`LOCAL_GEN`] if learnt here).
    pub gen: u32,
}

/// An authenticated user behind an address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserEntry {
    /// User name.
    pub name: String,
    /// Groups the policy matches on.
    pub groups: Vec<String>,
    /// End of the authentication (absolute, caller's clock).
    pub expires: Millis,
    /// Generation.
    pub gen: u32,
}

/// Which protocol helper created an expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Helper {
    /// FTP data connection (PORT/PASV/EPRT/EPSV).
    Ftp,
    /// SIP media (SDP).
    Sip,
}

/// A connection a helper expects: protocol, both addresses and the destination port are
/// known; the source port is free.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ExpectKey {
    /// Zone.
    pub zone: u16,
    /// IP protocol.
    pub proto: u8,
    /// Expected source address.
    pub src: IpAddr,
    /// Expected destination address.
    pub dst: IpAddr,
    /// Expected destination port.
    pub dport: u16,
}

/// An expectation's data.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectation {
    /// Helper.
    pub helper: Helper,
    /// The control connection it belongs to.
    pub master: ConnKey,
    /// Expiry (absolute).
    pub expires: Millis,
    /// Generation.
    pub gen: u32,
}

/// Health of a gateway (next hop) as monitored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayStatus {
    /// Reachable.
    pub up: bool,
    /// Time of the last change.
    pub since: Millis,
    /// Generation.
    pub gen: u32,
}

/// Status of a certificate serial known to the appliance (VPN / TLS inspection).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CertStatus {
    /// Issued and valid.
    Valid,
    /// Revoked.
    Revoked,
}

/// A certificate serial's entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertEntry {
    /// Status.
    pub status: CertStatus,
    /// Generation.
    pub gen: u32,
}

/// An IKEv2 SA (with its child ESP SA's outbound counter), keyed by the SPI pair.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IkeSa {
    /// Peer address.
    pub peer: IpAddr,
    /// Next IKE message id we send.
    pub msg_id_out: u32,
    /// Highest IKE message id received.
    pub msg_id_in: u32,
    /// Next ESP sequence number we send on the child SA.
    pub esp_seq_out: u64,
    /// Highest ESP sequence number received (anti-replay window edge).
    pub esp_seq_in: u64,
    /// Generation.
    pub gen: u32,
}

/// SPI pair of an IKE SA.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IkeKey {
    /// Initiator SPI.
    pub spi_i: u64,
    /// Responder SPI.
    pub spi_r: u64,
}

/// Safe margin added to outbound anti-replay counters of a synced IKE/ESP SA on takeover:
/// the old active may have sent up to this many messages/packets after its last record
/// reached us (records are sent on change at most every few ms; 2^20 packets is well above
/// what one SA carries in that time at line rate), and reusing a counter would make the
/// peer drop them as replays.
pub const IKE_TAKEOVER_MARGIN_ESP: u64 = 1 << 20;
/// Safe margin for IKE message ids (a few per second per SA at most).
pub const IKE_TAKEOVER_MARGIN_MSGID: u32 = 1 << 10;

/// Address of a host or gateway in a zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ZoneAddr {
    /// Zone.
    pub zone: u16,
    /// Address.
    pub addr: IpAddr,
}

/// Every table the dataplane synchronizes.
#[derive(Debug, Default)]
pub struct Tables {
    conns: HashMap<ConnKey, ConnEntry>,
    /// Hosts.
    pub hosts: HashMap<ZoneAddr, HostEntry>,
    /// Authenticated users by address.
    pub users: HashMap<IpAddr, UserEntry>,
    /// Helper expectations.
    pub expects: HashMap<ExpectKey, Expectation>,
    /// Gateways.
    pub gateways: HashMap<ZoneAddr, GatewayStatus>,
    /// Certificate serials (DER integer bytes).
    pub certs: HashMap<Vec<u8>, CertEntry>,
    ike: HashMap<IkeKey, IkeSa>,
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
    /// Empty tables.
    pub fn new() -> Self {
        Self {
            rx_gen: 1,
            ..Self::default()
        }
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

    /// Inserts or replaces a connection.
    pub fn insert_conn(&mut self, key: ConnKey, e: ConnEntry) {
        self.entry_touches += 1;
        self.conns.insert(key, e);
    }

    /// Installs a connection from a sync record, keeping the local packet counters of an
    /// existing entry (one lookup).
    pub fn upsert_conn_synced(&mut self, key: ConnKey, e: ConnEntry) {
        self.entry_touches += 1;
        self.conns
            .entry(key)
            .and_modify(|old| {
                let (packets, bytes) = (old.packets, old.bytes);
                *old = ConnEntry {
                    packets,
                    bytes,
                    ..e
                };
            })
            .or_insert(e);
    }

    /// Removes a connection.
    pub fn remove_conn(&mut self, key: &ConnKey) -> Option<ConnEntry> {
        self.entry_touches += 1;
        self.conns.remove(key)
    }

    /// Keys of every live connection (a bulk synchronization's snapshot).
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

    /// After a complete bulk from the active (called on the passive): removes items of
    /// generations below `gen` (not refreshed by the bulk that opened `gen`): the peer
    /// deleted them while we were not listening. Connections go whatever their origin (a
    /// passive's own connections are leftovers of an earlier active spell, which the active
    /// has since closed); other items of local origin stay.
    pub fn drop_stale_synced(&mut self, gen: u32) -> usize {
        let before = self.total_items();
        self.conns.retain(|_, e| e.gen >= gen);
        self.hosts.retain(|_, e| e.gen == LOCAL_GEN || e.gen >= gen);
        self.users.retain(|_, e| e.gen == LOCAL_GEN || e.gen >= gen);
        self.expects
            .retain(|_, e| e.gen == LOCAL_GEN || e.gen >= gen);
        self.gateways
            .retain(|_, e| e.gen == LOCAL_GEN || e.gen >= gen);
        self.certs.retain(|_, e| e.gen == LOCAL_GEN || e.gen >= gen);
        self.ike.retain(|_, e| e.gen == LOCAL_GEN || e.gen >= gen);
        before - self.total_items()
    }

    /// Items in every table.
    pub fn total_items(&self) -> usize {
        self.conns.len()
            + self.hosts.len()
            + self.users.len()
            + self.expects.len()
            + self.gateways.len()
            + self.certs.len()
            + self.ike.len()
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
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn key(i: u32) -> ConnKey {
        ConnKey::of(
            1,
            proto::TCP,
            IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i)),
            (i % 50_000) as u16 + 1024,
            IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
            443,
        )
        .0
    }

    #[test]
    fn key_is_direction_free() {
        let x = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let y = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let (k1, a1) = ConnKey::of(0, proto::TCP, x, 1000, y, 80);
        let (k2, a2) = ConnKey::of(0, proto::TCP, y, 80, x, 1000);
        assert_eq!(k1, k2);
        assert_ne!(a1, a2);
    }

    #[test]
    fn memory_per_entry() {
        let mut t = Tables::new();
        let n = 200_000;
        for i in 0..n {
            let e = ConnEntry::new(ConnState::Tcp(TcpState::Established), true, 1, 0, 0);
            t.insert_conn(key(i), e);
        }
        assert_eq!(t.conn_count(), n as usize);
        let per = t.conn_bytes_per_entry();
        println!(
            "memory per connection entry: key {} B + entry {} B = {} B slot; {:.1} B per entry in the map at {} entries",
            std::mem::size_of::<ConnKey>(),
            std::mem::size_of::<ConnEntry>(),
            std::mem::size_of::<(ConnKey, ConnEntry)>(),
            per,
            n
        );
        assert!(per >= std::mem::size_of::<(ConnKey, ConnEntry)>() as f64);
        assert!(per < 400.0, "{per} bytes per entry");
    }

    #[test]
    fn activation_touches_no_entry() {
        let mut t = Tables::new();
        let gen = t.install_gen();
        for i in 0..100_000 {
            let mut e = ConnEntry::new(ConnState::Tcp(TcpState::Established), true, 1, 0, 5);
            e.gen = gen;
            t.insert_conn(key(i), e);
        }
        let probe = key(77);
        let e = *t.conn_peek(&probe).expect("installed");
        assert!(!t.is_live(e.gen), "larval before activation");
        let touches = t.entry_touches();
        t.activate(1_000);
        assert_eq!(t.entry_touches(), touches, "activation visited entries");
        let e = *t.conn_peek(&probe).expect("installed");
        assert!(t.is_live(e.gen), "live after activation");
        // Idle timer restarts at activation: not expired just after, expired after the timeout.
        assert!(!t.conn_expired(&e, 1_000 + 10));
        assert!(t.conn_expired(&e, 1_000 + timeouts::TCP_ESTABLISHED + 1));
        // Records received while active are live; after a demotion they are larval again.
        assert!(t.is_live(t.install_gen()));
        t.deactivate();
        assert!(!t.is_live(t.install_gen()));
    }

    #[test]
    fn bulk_end_drops_unrefreshed_connections_of_any_origin() {
        let mut t = Tables::new();
        let st = ConnState::Udp { replied: true };
        t.insert_conn(key(1), ConnEntry::new(st, true, 1, 0, 0)); // leftover, local origin
        let mut old = ConnEntry::new(st, true, 1, 0, 0);
        old.gen = t.install_gen();
        t.insert_conn(key(2), old); // synced before the bulk
        let gen = t.next_rx_gen();
        let mut fresh = ConnEntry::new(st, true, 1, 0, 0);
        fresh.gen = gen;
        t.insert_conn(key(3), fresh); // refreshed by the bulk
        t.users.insert(
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            UserEntry {
                name: "local".into(),
                groups: Vec::new(),
                expires: 10,
                gen: LOCAL_GEN,
            },
        );
        assert_eq!(t.drop_stale_synced(gen), 2);
        assert!(t.conn_peek(&key(3)).is_some());
        assert_eq!(t.users.len(), 1);
    }

    #[test]
    fn larval_entries_never_expire_locally() {
        let mut t = Tables::new();
        let mut e = ConnEntry::new(ConnState::Udp { replied: false }, true, 1, 0, 0);
        e.gen = t.install_gen();
        t.insert_conn(key(1), e);
        assert!(t.expire_conns(10 * timeouts::UDP_REPLIED).is_empty());
        t.activate(10 * timeouts::UDP_REPLIED);
        assert!(t.expire_conns(10 * timeouts::UDP_REPLIED + 1).is_empty());
        assert_eq!(t.expire_conns(11 * timeouts::UDP_REPLIED).len(), 1);
    }

    #[test]
    fn ike_counters_advance_by_margin_on_takeover() {
        let mut t = Tables::new();
        let k = IkeKey { spi_i: 1, spi_r: 2 };
        t.insert_ike(
            k,
            IkeSa {
                peer: IpAddr::V4(Ipv4Addr::LOCALHOST),
                msg_id_out: 7,
                msg_id_in: 3,
                esp_seq_out: 1000,
                esp_seq_in: 900,
                gen: t.install_gen(),
            },
        );
        assert_eq!(t.ike_next_esp_seq(&k), None, "larval SA is not used");
        t.activate(0);
        let sa = t.ike_sa(&k).expect("sa");
        assert_eq!(sa.esp_seq_out, 1000 + IKE_TAKEOVER_MARGIN_ESP);
        assert_eq!(sa.msg_id_out, 7 + IKE_TAKEOVER_MARGIN_MSGID);
        assert_eq!(t.ike_next_esp_seq(&k), Some(1000 + IKE_TAKEOVER_MARGIN_ESP));
        // Now local: the margin is not added twice.
        assert_eq!(t.ike_next_esp_seq(&k), Some(1001 + IKE_TAKEOVER_MARGIN_ESP));
    }
}
