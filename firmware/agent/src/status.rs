//! The status snapshot (SPEC E1): this member, every peer, and the protocol counters.

use ha_proto::frame::Error as FrameError;
use ha_proto::msg::{FirmwareVersion, Forced, LinkState, Role, Serial, MAX_HA_LINKS};
use heapless::{String, Vec};

/// Why a received frame was rejected; each reason has its own counter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum RejectReason {
    /// Shorter than a header and tag, or than its declared body.
    Truncated,
    /// Longer than a frame may be.
    Oversize,
    /// Not an HA frame.
    BadMagic,
    /// Unknown protocol version.
    UnknownVersion,
    /// Unknown channel.
    UnknownKind,
    /// Undefined flag bits.
    BadFlags,
    /// Bytes after the tag.
    TrailingBytes,
    /// Another cluster's frame.
    WrongCluster,
    /// Sealed with a key id not held.
    UnknownKey,
    /// Authentication failed.
    BadTag,
    /// Replayed (or reordered beyond the window).
    Replay,
    /// From an earlier boot of the sender.
    StaleEpoch,
    /// Replay table full.
    TableFull,
    /// Body is not a member message.
    Decode,
    /// Sender is not a configured member.
    NotMember,
    /// Our own frame came back.
    OwnFrame,
    /// Not a member-channel frame.
    WrongChannel,
    /// Arrived on a link that is not configured.
    UnknownLink,
}

impl RejectReason {
    /// Number of reasons.
    pub const COUNT: usize = 18;
    /// Every reason, in counter order.
    pub const ALL: [RejectReason; Self::COUNT] = [
        RejectReason::Truncated,
        RejectReason::Oversize,
        RejectReason::BadMagic,
        RejectReason::UnknownVersion,
        RejectReason::UnknownKind,
        RejectReason::BadFlags,
        RejectReason::TrailingBytes,
        RejectReason::WrongCluster,
        RejectReason::UnknownKey,
        RejectReason::BadTag,
        RejectReason::Replay,
        RejectReason::StaleEpoch,
        RejectReason::TableFull,
        RejectReason::Decode,
        RejectReason::NotMember,
        RejectReason::OwnFrame,
        RejectReason::WrongChannel,
        RejectReason::UnknownLink,
    ];

    /// Maps a frame error to its reason.
    pub fn from_frame(e: FrameError) -> Self {
        match e {
            FrameError::Truncated => RejectReason::Truncated,
            FrameError::Oversize => RejectReason::Oversize,
            FrameError::BadMagic => RejectReason::BadMagic,
            FrameError::UnknownVersion(_) => RejectReason::UnknownVersion,
            FrameError::UnknownKind(_) => RejectReason::UnknownKind,
            FrameError::BadFlags(_) => RejectReason::BadFlags,
            FrameError::TrailingBytes => RejectReason::TrailingBytes,
            FrameError::WrongCluster(_) => RejectReason::WrongCluster,
            FrameError::UnknownKey(_) => RejectReason::UnknownKey,
            FrameError::BadTag => RejectReason::BadTag,
            FrameError::Replay => RejectReason::Replay,
            FrameError::StaleEpoch => RejectReason::StaleEpoch,
            FrameError::TableFull => RejectReason::TableFull,
            FrameError::Decode | FrameError::Encode | FrameError::BufferTooSmall => {
                RejectReason::Decode
            }
        }
    }

    /// Short stable name, for counters and logs.
    pub fn name(&self) -> &'static str {
        match self {
            RejectReason::Truncated => "truncated",
            RejectReason::Oversize => "oversize",
            RejectReason::BadMagic => "bad_magic",
            RejectReason::UnknownVersion => "unknown_version",
            RejectReason::UnknownKind => "unknown_kind",
            RejectReason::BadFlags => "bad_flags",
            RejectReason::TrailingBytes => "trailing_bytes",
            RejectReason::WrongCluster => "wrong_cluster",
            RejectReason::UnknownKey => "unknown_key",
            RejectReason::BadTag => "bad_tag",
            RejectReason::Replay => "replay",
            RejectReason::StaleEpoch => "stale_epoch",
            RejectReason::TableFull => "table_full",
            RejectReason::Decode => "decode",
            RejectReason::NotMember => "not_member",
            RejectReason::OwnFrame => "own_frame",
            RejectReason::WrongChannel => "wrong_channel",
            RejectReason::UnknownLink => "unknown_link",
        }
    }
}

/// Protocol counters (the verbose status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames sealed and handed to the shell.
    pub sent: u32,
    /// Frames accepted.
    pub received: u32,
    /// Frames rejected, indexed by `RejectReason as usize`.
    pub rejected: [u32; RejectReason::COUNT],
    /// Outputs dropped because the shell did not drain the queue.
    pub output_dropped: u32,
    /// Frames that could not be sealed (never expected; counted, not hidden).
    pub seal_errors: u32,
}

impl Counters {
    /// Rejections for one reason.
    pub fn rejected(&self, r: RejectReason) -> u32 {
        self.rejected[r as usize]
    }

    /// All rejections.
    pub fn rejected_total(&self) -> u32 {
        self.rejected.iter().fold(0u32, |a, b| a.saturating_add(*b))
    }
}

/// One HA link as seen from this member towards one peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkStatus {
    /// Up, down, or absent (not configured).
    pub state: LinkState,
    /// Since when (agent clock, ms).
    pub since_ms: u64,
    /// Last accepted frame on this link, if any.
    pub last_rx_ms: Option<u64>,
}

/// A role in one domain and since when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DomainStatus {
    /// Domain.
    pub domain: u8,
    /// Role.
    pub role: Role,
    /// Since when (agent clock, ms; for a peer, estimated from its heartbeat).
    pub since_ms: u64,
}

/// Liveness of a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerState {
    /// Not heard since this member booted.
    Unknown,
    /// Heard on at least one link.
    Alive,
    /// Silent on every link; waiting for the probe's answer until the deadline.
    Suspect {
        /// When the peer is declared lost without an answer (agent clock, ms).
        deadline_ms: u64,
    },
    /// Silent on every link but the probe says it is alive; probed again at `next_probe_ms`.
    Unreachable {
        /// Next probe (agent clock, ms).
        next_probe_ms: u64,
    },
    /// Declared lost.
    Lost,
}

impl PeerState {
    /// True when the peer takes part in the election (alive, or not yet confirmed lost).
    pub fn in_election(&self) -> bool {
        matches!(
            self,
            PeerState::Alive | PeerState::Suspect { .. } | PeerState::Unreachable { .. }
        )
    }
}

/// What this member knows about one peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerStatus<const D: usize> {
    /// The peer's serial.
    pub serial: Serial,
    /// Its position in the member list.
    pub index: u8,
    /// Liveness.
    pub state: PeerState,
    /// Since when (agent clock, ms).
    pub state_since_ms: u64,
    /// Boot epoch of its last accepted frame.
    pub epoch: Option<u32>,
    /// Its forcing.
    pub forced: Forced,
    /// Its firmware version.
    pub firmware: FirmwareVersion,
    /// Its quality factor.
    pub quality: u8,
    /// Its configuration revision.
    pub config_revision: u64,
    /// True while it announces a pause.
    pub paused: bool,
    /// Its uptime at its last heartbeat, ms.
    pub uptime_ms: u64,
    /// Its roles, per domain.
    pub roles: Vec<DomainStatus, D>,
    /// How long it has held each role at its last heartbeat, ms (same order as `roles`).
    pub role_for_ms: Vec<u32, D>,
    /// The HA links towards it.
    pub links: [LinkStatus; MAX_HA_LINKS],
    /// Runs another firmware version (fail-soft).
    pub fail_soft: bool,
}

impl<const D: usize> PeerStatus<D> {
    /// Its role in a domain, if it announced one.
    pub fn role(&self, domain: u8) -> Option<Role> {
        self.roles
            .iter()
            .find(|r| r.domain == domain)
            .map(|r| r.role)
    }
}

/// This member's own status.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus<const D: usize> {
    /// Serial.
    pub serial: Serial,
    /// Model.
    pub model: String<16>,
    /// Firmware version.
    pub firmware: FirmwareVersion,
    /// Forcing.
    pub forced: Forced,
    /// Roles per domain, with since when.
    pub roles: Vec<DomainStatus, D>,
    /// Quality factor.
    pub quality: u8,
    /// Interface part of the quality.
    pub interface_quality: u8,
    /// Hardware part of the quality.
    pub hardware_quality: u8,
    /// Priority in the first domain.
    pub priority: u8,
    /// Configuration revision.
    pub config_revision: u64,
    /// True when every live peer runs the same configuration revision.
    pub config_synced: bool,
    /// Agent clock at boot, ms.
    pub boot_ms: u64,
    /// Boot epoch.
    pub epoch: u32,
    /// End of the pause this member requested, if any.
    pub paused_until_ms: Option<u64>,
    /// True while HA decisions are frozen (this member or a peer paused).
    pub frozen: bool,
    /// True when a peer runs another firmware version.
    pub fail_soft: bool,
    /// True while two actives share a domain.
    pub conflict: bool,
}

impl<const D: usize> MemberStatus<D> {
    /// This member's role in a domain.
    pub fn role(&self, domain: u8) -> Option<Role> {
        self.roles
            .iter()
            .find(|r| r.domain == domain)
            .map(|r| r.role)
    }
}

/// The whole snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status<const M: usize, const D: usize> {
    /// This member.
    pub me: MemberStatus<D>,
    /// Every other configured member.
    pub peers: Vec<PeerStatus<D>, M>,
    /// Counters.
    pub counters: Counters,
}

impl<const M: usize, const D: usize> Status<M, D> {
    /// A peer by serial.
    pub fn peer(&self, serial: &Serial) -> Option<&PeerStatus<D>> {
        self.peers.iter().find(|p| p.serial == *serial)
    }
}
