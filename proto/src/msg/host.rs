//! Management controller ↔ main CPU messages (channels [`super::Channel::ToMainCpu`] and
//! [`super::Channel::ToController`]), over the host-link UART, COBS framed and sealed with the
//! host-link key.

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use super::member::AdminCommand;
use super::MemberEntry;
use super::{
    FirmwareVersion, Forced, LinkState, Role, Serial, IFACE_NAME_LEN, MAX_DOMAINS, MAX_HA_LINKS,
    MAX_IFACES, MAX_MEMBERS,
};
use crate::config_block::HaSettings;
use crate::keys::KEY_LEN;

/// Every message on the host link, in both directions.
///
/// The interface list makes this enum about 1 KiB; it is not boxed because `proto` has no heap
/// and a decoded message lives in one stack or static slot.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum HostMsg {
    /// Main CPU → controller: the monitored interfaces, on every change and periodically.
    Interfaces(Vec<IfaceState, MAX_IFACES>),
    /// Main CPU → controller: an operator command for this member or another (by serial).
    Admin {
        /// Member the command is for; `None` means this member.
        target: Option<Serial>,
        /// The command.
        command: AdminCommand,
    },
    /// Main CPU → controller: result of a liveness probe of a peer over the data interfaces.
    ProbeResult {
        /// The probed peer.
        peer: Serial,
        /// True if the peer answered.
        alive: bool,
    },
    /// Controller → main CPU: the role this member must hold in every domain. A role is
    /// state, not an event: the controller sends this on every change and again every
    /// refresh period, and the main CPU applies the whole list each time (idempotent), so it
    /// converges to the controller's roles whatever frames the line lost.
    Roles(Vec<DomainRoleOf, MAX_DOMAINS>),
    /// Controller → main CPU: probe a peer over the data interfaces before a takeover (sent
    /// on suspicion, when every HA link to the peer has been silent for a while, so that the
    /// answer is there when the links' dead time ends).
    ProbeRequest {
        /// Peer whose HA links went silent.
        peer: Serial,
        /// How long the main CPU listens for the peer's answer before it reports "dead", ms
        /// (0: the main CPU's own default).
        within_ms: u16,
    },
    /// Either way: keepalive of the host link itself.
    Ping {
        /// Echoed by the receiver.
        nonce: u32,
    },
    /// Either way: answer to [`HostMsg::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u32,
    },
    /// Main CPU → controller: ask for a [`HostMsg::Status`] now.
    StatusRequest,
    /// Controller → main CPU: the cluster as this controller sees it; sent on request and on
    /// every role change of this member.
    Status(StatusReport),
    /// Controller → main CPU: one event of the agent's ring, in order (SPEC E3).
    Event(EventReport),
    /// Main CPU → controller: accept the cluster PSK `psk` under `key_id` in addition to the
    /// current one; sealing does not change yet (phase 1 of a PSK rollover, SPEC A4, see
    /// [`crate::keys::Keyring`]). Only ever sent
    /// AEAD-sealed with the current host-link key; a controller drops it when it arrives
    /// HMAC-only, since the key would have crossed the wire in clear.
    InstallKey {
        /// Key id of the new key (must differ from the current one).
        key_id: u8,
        /// The new pre-shared key.
        psk: WirePsk,
    },
    /// Main CPU → controller: seal with the accepted key `key_id` from now on; the key used
    /// until now stays accepted (phase 2).
    UseKey {
        /// The key id to seal with.
        key_id: u8,
    },
    /// Main CPU → controller: stop accepting every key but `key_id` (phase 3: the rollover is
    /// over).
    RetireKey {
        /// The key id that stays.
        key_id: u8,
    },
    /// Controller → main CPU: the keys in use, after every [`HostMsg::InstallKey`],
    /// [`HostMsg::UseKey`] and [`HostMsg::RetireKey`].
    KeyState {
        /// Key id frames are sealed with.
        sealing_key_id: u8,
        /// Every key id accepted on receive.
        accepted: Vec<u8, 2>,
    },
    /// Main CPU → controller: the cluster's members from now on (this member included), with
    /// their main-link addresses, after a member was removed or joined (SPEC A6). The
    /// controller applies it in place (a member no longer listed is forgotten, a new one is
    /// heard and sent to) and answers with a [`HostMsg::Status`]; a list without this member
    /// or with a duplicate is ignored (the status shows the unchanged list).
    Members(Vec<MemberEntry, MAX_MEMBERS>),
    /// Main CPU → controller: apply these HA settings now, without a restart (`hactl
    /// reload`). The controller answers with a [`HostMsg::Status`] carrying the new
    /// revision when it took them, or the old one and a `settings_refused` event when not
    /// (e.g. the domain list changed: that needs a restart).
    Settings(HaSettings),
    /// Main CPU → controller: send the events of your ring again from number `seq` on (a
    /// main CPU that (re)connected asks for what happened before it listened; from 0 when it
    /// knows nothing of this controller's boot). The controller answers with the
    /// [`HostMsg::Event`]s still in its ring, in order, a few at a time.
    EventsSince {
        /// The first event number wanted.
        seq: u32,
    },
    /// Main CPU → controller: ask for a [`HostMsg::Details`], what the status report does not
    /// carry. Asked, never pushed: a main CPU that predates it is never sent a message it
    /// cannot decode, and a controller that predates it drops the request (the main CPU then
    /// shows those fields as unknown).
    DetailsRequest,
    /// Controller → main CPU: the answer to [`HostMsg::DetailsRequest`].
    Details(DetailsReport),
    /// Main CPU → controller: ask for a [`HostMsg::Counters`]. Asked, never pushed, like
    /// [`HostMsg::DetailsRequest`] (a controller that predates it drops it).
    CountersRequest,
    /// Controller → main CPU: the answer to [`HostMsg::CountersRequest`].
    Counters(CountersReport),
    /// Main CPU → controller: the later additions to this protocol that the main CPU
    /// understands ([`CAP_NUMBERED_PROBES`], …), a bit each. A controller sends a message
    /// added after the first release only to a main CPU that listed it, so a main CPU of an
    /// older release is never sent what it cannot decode; it forgets the list when the main
    /// CPU restarts. Sent at connection and again with every details request.
    Capabilities(u32),
    /// Controller → main CPU: [`HostMsg::ProbeRequest`] with a number, to a main CPU that
    /// listed [`CAP_NUMBERED_PROBES`]. The answer ([`HostMsg::ProbeAnswer`]) carries the
    /// number back, so the controller takes only answers to requests it asked since it last
    /// heard the peer: an "alive" asked about an earlier silence (gathered before a crash,
    /// arrived after it) is never taken for an answer about this one.
    ProbeAsk {
        /// Peer whose HA links went silent.
        peer: Serial,
        /// As in [`HostMsg::ProbeRequest`].
        within_ms: u16,
        /// The request's number (per controller boot, wrapping).
        request: u16,
    },
    /// Main CPU → controller: the answer to [`HostMsg::ProbeAsk`] number `request`.
    ProbeAnswer {
        /// The probed peer.
        peer: Serial,
        /// The number of the request answered.
        request: u16,
        /// True if the peer answered.
        alive: bool,
    },
    /// Main CPU → controller: [`HostMsg::ProbeAnswer`] without the peer's serial (16 of its
    /// 20 bytes), sent to a controller that answers in compact frames (a release that takes
    /// it; [`CAP_COMPACT_FRAMES`]). The request number names the peer to the controller that
    /// numbered it: its low [`PROBE_REQUEST_PEER_BITS`] bits are the peer's place in the
    /// controller's list of peers.
    ProbeVerdict {
        /// The number of the request answered.
        request: u16,
        /// True if the peer answered.
        alive: bool,
    },
    /// Main CPU → controller: whether this main CPU holds its peers' state (the connection
    /// table) so that it could carry their traffic without losing a connection: false from
    /// its start, and after a sync session with a peer was lost, until the peer's whole
    /// table (its bulk) arrived and, on the kernel path, went into the kernel. A member whose
    /// main CPU says false has quality 0 while it is active in no domain
    /// (`ha_agent::quality`), so it does not take a domain from a live active (a returning
    /// preferred member, a better quality) before it has the table, and still takes over
    /// when the active is lost. Sent on change and every few seconds; a controller that
    /// never heard it counts the main CPU as ready (a daemon that predates it).
    TableHeld(bool),
}

/// The low bits of a probe request's number that say which peer it is about (the peer's
/// place among the controller's peers, fewer than [`crate::cluster::MAX_MEMBERS`]), so that
/// a [`HostMsg::ProbeVerdict`] need not carry the serial.
pub const PROBE_REQUEST_PEER_BITS: u32 = 3;
const _: () = assert!(crate::cluster::MAX_MEMBERS <= 1 << PROBE_REQUEST_PEER_BITS);

/// [`HostMsg::Capabilities`] bit: the main CPU answers [`HostMsg::ProbeAsk`] with
/// [`HostMsg::ProbeAnswer`].
pub const CAP_NUMBERED_PROBES: u32 = 1;
/// [`HostMsg::Capabilities`] bit: the main CPU takes compact frames
/// ([`crate::frame::open_compact`]); a controller that takes them too answers in them
/// ([`crate::hostlink`]).
pub const CAP_COMPACT_FRAMES: u32 = 2;
/// [`HostMsg::Capabilities`] bit: the main CPU says whether it holds its peers' state
/// ([`HostMsg::TableHeld`]); until its first report the controller counts it as not
/// holding it.
pub const CAP_TABLE_HELD: u32 = 4;

/// What a controller has counted since it booted ([`HostMsg::Counters`]): the source of
/// truth for how often it took over, which a main CPU cannot rebuild from the role reports
/// and events when a stalled line lost some of them.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CountersReport {
    /// Role changes of this member to active, in any domain (the election at boot
    /// included).
    pub to_active: u32,
    /// Role changes of this member away from active, in any domain.
    pub from_active: u32,
    /// Peers declared lost (by a "dead" probe answer or by no answer at all).
    pub peers_lost: u32,
    /// Probes asked again because the main CPU had not answered within the probe timeout.
    pub probes_reasked: u32,
    /// Events overwritten in the ring before they were sent to the main CPU.
    pub events_unsent: u32,
}

/// Shortest probe time a controller asks for in [`HostMsg::ProbeRequest`] (`within_ms`)
/// and a main CPU honours, ms: a live peer's kernel answers an echo on the LAN within a
/// millisecond; a main CPU too starved to read it concludes late, never wrongly.
pub const MIN_PROBE_WITHIN_MS: u16 = 5;

/// Longest model name in a [`DetailsReport`].
pub const MODEL_LEN: usize = 16;

/// What a controller reports in [`HostMsg::Details`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetailsReport {
    /// This controller's model (its board).
    pub model: String<MODEL_LEN>,
    /// Every member heard, this one first: how long it has been up as of this report, ms
    /// (a peer's from the uptime its last heartbeat carried).
    pub uptimes: Vec<MemberUptime, MAX_MEMBERS>,
    /// The number the controller's next event will get: a main CPU that holds fewer has
    /// lost some on the line and asks for them ([`HostMsg::EventsSince`]).
    pub next_event: u32,
}

/// One member's uptime in a [`DetailsReport`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberUptime {
    /// The member.
    pub serial: Serial,
    /// Its uptime now, ms.
    pub uptime_ms: u64,
}

/// One domain's role in [`HostMsg::Roles`], named by domain id
/// (domain ids need not be contiguous).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRoleOf {
    /// Domain id, as configured (0..MAX_DOMAINS).
    pub domain: u8,
    /// The role in it.
    pub role: Role,
}

/// One domain of a [`MemberSummary`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainSummary {
    /// Domain id, as configured.
    pub domain: u8,
    /// The member's role in it.
    pub role: Role,
    /// The member's "active if equal" priority in it (SPEC B2).
    pub priority: u8,
}

/// Which end of the host link sends a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Management controller → main CPU.
    ToMainCpu,
    /// Main CPU → management controller.
    ToController,
    /// Either end (keepalives).
    Both,
}

impl AsRef<HostMsg> for HostMsg {
    fn as_ref(&self) -> &HostMsg {
        self
    }
}

impl HostMsg {
    /// The end that sends this message.
    pub fn direction(&self) -> Direction {
        match self {
            HostMsg::Roles(_)
            | HostMsg::ProbeRequest { .. }
            | HostMsg::Status(_)
            | HostMsg::Event(_)
            | HostMsg::KeyState { .. }
            | HostMsg::Details(_)
            | HostMsg::Counters(_)
            | HostMsg::ProbeAsk { .. } => Direction::ToMainCpu,
            HostMsg::Interfaces(_)
            | HostMsg::Admin { .. }
            | HostMsg::ProbeResult { .. }
            | HostMsg::StatusRequest
            | HostMsg::InstallKey { .. }
            | HostMsg::UseKey { .. }
            | HostMsg::RetireKey { .. }
            | HostMsg::Members(_)
            | HostMsg::Settings(_)
            | HostMsg::EventsSince { .. }
            | HostMsg::DetailsRequest
            | HostMsg::CountersRequest
            | HostMsg::Capabilities(_)
            | HostMsg::ProbeAnswer { .. }
            | HostMsg::ProbeVerdict { .. }
            | HostMsg::TableHeld(_) => Direction::ToController,
            HostMsg::Ping { .. } | HostMsg::Pong { .. } => Direction::Both,
        }
    }

    /// True for messages that change nothing at the receiver, so they may arrive unbound
    /// (before the sender heard the receiver's boot): keepalives and the status request a
    /// main CPU sends when it connects. Everything else must be bound to the receiver's
    /// current boot, so a frame recorded before a restart of either end cannot be replayed
    /// after it.
    pub fn may_be_unbound(&self) -> bool {
        matches!(
            self,
            HostMsg::Ping { .. } | HostMsg::Pong { .. } | HostMsg::StatusRequest
        )
    }
}

/// A PSK carried by [`HostMsg::InstallKey`]: `Debug` never shows the bytes, equality is
/// constant time, and the bytes are wiped when dropped.
#[derive(Clone, Serialize, Deserialize)]
pub struct WirePsk(#[serde(with = "crate::bytes")] pub [u8; KEY_LEN]);

impl core::fmt::Debug for WirePsk {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("WirePsk(<redacted>)")
    }
}

impl PartialEq for WirePsk {
    fn eq(&self, o: &Self) -> bool {
        use subtle::ConstantTimeEq;
        self.0.ct_eq(&o.0).into()
    }
}

impl Eq for WirePsk {}

impl Drop for WirePsk {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.0.zeroize();
    }
}

/// Status LED pattern as reported on the host link (SPEC E4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LedReport {
    /// Off.
    Off,
    /// Steady on (active).
    Steady,
    /// Blinking with these on/off times in milliseconds.
    Blink {
        /// On time.
        on_ms: u16,
        /// Off time.
        off_ms: u16,
    },
}

/// One member as the reporting controller sees it (one row of SPEC E1's table).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberSummary {
    /// The member's serial.
    pub serial: Serial,
    /// True for the reporting member itself.
    pub local: bool,
    /// True when the member is heard (always true for the local member).
    pub alive: bool,
    /// Quality factor 0..=100.
    pub quality: u8,
    /// Forcing in effect.
    pub forced: Forced,
    /// Firmware version.
    pub firmware: FirmwareVersion,
    /// Configuration revision the member runs.
    pub config_revision: u64,
    /// HA decisions paused.
    pub paused: bool,
    /// Role and "active if equal" priority in each domain, by domain id (three bytes each,
    /// so that a report of [`MAX_MEMBERS`] members with [`MAX_DOMAINS`] domains fits one
    /// frame).
    pub domains: Vec<DomainSummary, MAX_DOMAINS>,
    /// HA link states towards this member (for the local member: towards any peer).
    pub links: Vec<LinkState, MAX_HA_LINKS>,
    /// Reporter's uptime (ms) when the member's overall mode last changed.
    pub mode_since_ms: u64,
}

/// Controller → main CPU status snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReport {
    /// The reporting controller's uptime, ms.
    pub uptime_ms: u64,
    /// Every known member, the local one included.
    pub members: Vec<MemberSummary, MAX_MEMBERS>,
    /// The local status LED.
    pub led: LedReport,
    /// Member frames sent by the local controller.
    pub frames_sent: u32,
    /// Member frames received and accepted.
    pub frames_received: u32,
    /// Member frames rejected (any reason; the reasons are in the controller's log).
    pub frames_rejected: u32,
}

/// Longest event name carried by [`EventReport`].
pub const EVENT_NAME_LEN: usize = 24;
/// Longest event detail text carried by [`EventReport`].
pub const EVENT_DETAIL_LEN: usize = 96;

/// One agent event, rendered for the main CPU.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventReport {
    /// Position in the controller's event sequence; a gap means events were lost in the ring.
    pub seq: u32,
    /// Controller uptime when it happened, ms.
    pub at_ms: u64,
    /// Short machine-readable name, e.g. "role_changed".
    pub name: String<EVENT_NAME_LEN>,
    /// Peer concerned, if any.
    pub peer: Option<Serial>,
    /// Human-readable detail, truncated to fit.
    pub detail: String<EVENT_DETAIL_LEN>,
}

/// One monitored interface as the main CPU sees it (SPEC B1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceState {
    /// Interface name, e.g. "out", "eth1".
    pub name: String<IFACE_NAME_LEN>,
    /// Carrier and administratively up.
    pub up: bool,
    /// Weight in the quality factor, 0..=9999 (default 100).
    pub weight: u16,
    /// Aggregate (LACP bond) this interface belongs to, if any.
    pub aggregate: Option<u8>,
}
