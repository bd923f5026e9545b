//! The tables' keys and entries: connections (key, per-protocol state, flags, idle
//! timeouts), hosts, users, helper expectations, gateways, certificate serials, IKEv2 SAs.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::{Millis, LOCAL_GEN};

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

/// One direction of a kernel conntrack entry (the kernel data path): addresses, protocol and
/// ports as the kernel keys them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number.
    pub proto: u8,
    /// Source port (0 without ports).
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

/// Identity of a kernel conntrack entry: its original direction and zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KConnKey {
    /// The originator's direction.
    pub orig: KTuple,
    /// Conntrack zone.
    pub zone: u16,
}

/// TCP tracking state of a kernel entry, `[originator, responder]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KTcp {
    /// Kernel TCP conntrack state (3: established).
    pub state: u8,
    /// Window scales.
    pub wscale: [u8; 2],
    /// Tracking flags (`IP_CT_TCP_FLAG_*`).
    pub flags: [u8; 2],
}

/// A kernel conntrack entry as the state sync carries it: what the standby's kernel needs to
/// accept the connection's next packets (its reply direction carries any address
/// translation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KConn {
    /// The reply direction.
    pub reply: KTuple,
    /// Status bits (`IPS_*`) a member may set.
    pub status: u32,
    /// Connection mark.
    pub mark: u32,
    /// TCP tracking state (TCP only).
    pub tcp: Option<KTcp>,
    /// The conntrack helper attached to it (an FTP control connection's "ftp"): the standby
    /// must create the entry with it, or the kernel refuses the expectations it owns.
    pub helper: Option<KHelper>,
    /// TCP sequence adjustment, `[originator, responder]`: a NAT helper that rewrote the
    /// payload (FTP's `PORT` through SNAT) changed its length, and every later segment's
    /// sequence and acknowledgement numbers are shifted by the kernel. Without it on the
    /// standby, the connection's next segments reach the other end misnumbered.
    pub seq_adj: Option<[KSeqAdj; 2]>,
    /// When the kernel would expire it (this member's clock).
    pub expires: Millis,
    /// Generation (see the module documentation); [`LOCAL_GEN`] for this member's own.
    pub gen: u32,
}

/// One direction's TCP sequence adjustment of a kernel entry (`struct nf_ct_seqadj`):
/// segments starting after `correction_pos` are shifted by `offset_after`, earlier ones (a
/// retransmission) by `offset_before`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KSeqAdj {
    /// Sequence number of the last rewrite.
    pub correction_pos: u32,
    /// Offset before that rewrite.
    pub offset_before: i32,
    /// Offset after it.
    pub offset_after: i32,
}

/// The name of a conntrack helper ("ftp", "sip", ...) as the kernel names it: at most 15
/// bytes (`NF_CT_HELPER_NAME_LEN` is 16 with the terminating NUL), NUL-padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KHelper([u8; 16]);

impl KHelper {
    /// The helper called `name`; `None` when it is empty, longer than 15 bytes or holds a NUL.
    pub fn new(name: &str) -> Option<KHelper> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() > 15 || b.contains(&0) {
            return None;
        }
        let mut a = [0u8; 16];
        a[..b.len()].copy_from_slice(b);
        Some(KHelper(a))
    }

    /// The name, without padding (bytes a peer sent may not be a valid name: check with
    /// [`KHelper::is_valid`]).
    pub fn as_bytes(&self) -> &[u8] {
        let n = self.0.iter().position(|b| *b == 0).unwrap_or(16);
        &self.0[..n]
    }

    /// True when it names a helper the kernel could know: 1–15 printable ASCII bytes, then
    /// only padding.
    pub fn is_valid(&self) -> bool {
        let name = self.as_bytes();
        !name.is_empty()
            && name.len() <= 15
            && name.iter().all(|b| b.is_ascii_graphic())
            && self.0[name.len()..].iter().all(|b| *b == 0)
    }
}

/// The translation of an expected connection (`CTA_EXPECT_NAT` and `CTA_EXPECT_FN`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KExpNat {
    /// Direction of the master the expected connection follows (`IP_CT_DIR_*`: 0 original,
    /// 1 reply).
    pub dir: u8,
    /// The address and port the expected connection is translated to.
    pub addr: IpAddr,
    /// Its port (0 without ports).
    pub port: u16,
    /// The kernel's expectation function that sets the translation up ("nat-follow-master").
    pub func: KExpFn,
}

/// The name of a kernel expectation function (`CTA_EXPECT_FN`, "nat-follow-master"): at
/// most 31 bytes, NUL-padded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KExpFn([u8; 32]);

impl KExpFn {
    /// The function called `name`; `None` when it is empty, longer than 31 bytes or holds a
    /// NUL.
    pub fn new(name: &str) -> Option<KExpFn> {
        let b = name.as_bytes();
        if b.is_empty() || b.len() > 31 || b.contains(&0) {
            return None;
        }
        let mut a = [0u8; 32];
        a[..b.len()].copy_from_slice(b);
        Some(KExpFn(a))
    }

    /// The name, without padding (check bytes from a peer with [`KExpFn::is_valid`]).
    pub fn as_bytes(&self) -> &[u8] {
        let n = self.0.iter().position(|b| *b == 0).unwrap_or(32);
        &self.0[..n]
    }

    /// True when it names a function the kernel could know: 1–31 printable ASCII bytes,
    /// then only padding.
    pub fn is_valid(&self) -> bool {
        let name = self.as_bytes();
        !name.is_empty()
            && name.len() <= 31
            && name.iter().all(|b| b.is_ascii_graphic())
            && self.0[name.len()..].iter().all(|b| *b == 0)
    }
}

/// Identity of a kernel conntrack expectation (a helper's announcement of a related
/// connection to come, e.g. an FTP data connection): the tuple it expects and its zone.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KExpKey {
    /// The expected connection's original direction (ports the mask leaves open are 0).
    pub tuple: KTuple,
    /// Conntrack zone (its master's).
    pub zone: u16,
}

/// A kernel conntrack expectation as the state sync carries it: what the standby's kernel
/// needs to admit the expected connection as related after a takeover.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KExp {
    /// The original direction of the connection that announced it (its master, which must
    /// be in the table, with its helper, before the expectation can be created).
    pub master: KTuple,
    /// Which bits of the expected source address must match.
    pub mask_src: IpAddr,
    /// Which bits of the expected source port must match (0: any port).
    pub mask_port: u16,
    /// Expectation flags (`NF_CT_EXPECT_*`).
    pub flags: u32,
    /// Expectation class of the helper's policy.
    pub class: u32,
    /// The translation of the expected connection (a NAT helper's expectation: FTP's
    /// `PORT` through SNAT expects the server at the outside address and maps the data
    /// connection back to the client), with the kernel function that applies it.
    pub nat: Option<KExpNat>,
    /// When the kernel would drop it (this member's clock).
    pub expires: Millis,
    /// Generation (see the module documentation); [`LOCAL_GEN`] for this member's own.
    pub gen: u32,
}
