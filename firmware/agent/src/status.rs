//! The status snapshot (SPEC E1): this member, its roles, every peer, and the protocol
//! counters. [`Status`] is a view that borrows each part from the agent's sub-structure that
//! owns it; building it copies nothing.

use ha_proto::endpoint::{Reject, RejectCounters};
use ha_proto::msg::{FirmwareVersion, Forced, LinkState, Role, Serial, MAX_HA_LINKS};
use heapless::{String, Vec};

/// Protocol counters (the verbose status).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Frames sealed and handed to the shell.
    pub sent: u32,
    /// Frames accepted.
    pub received: u32,
    /// Member frames rejected, per reason ([`Reject`]).
    pub rejected: RejectCounters,
    /// Host-link frames rejected, per reason.
    pub host_rejected: RejectCounters,
    /// Frames that could not be sealed (never expected; counted, not hidden).
    pub seal_errors: u32,
    /// Probe answers ignored because their request was asked before the peer was last
    /// heard ([`ha_proto::msg::host::HostMsg::ProbeAnswer`]).
    pub stale_probe_answers: u32,
}

impl Counters {
    /// Member-frame rejections for one reason.
    pub fn rejected(&self, r: Reject) -> u32 {
        self.rejected.get(r)
    }

    /// All member-frame rejections.
    pub fn rejected_total(&self) -> u32 {
        self.rejected.total()
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
    /// Silent on every link; waiting for the probe's answer. An unanswered probe is asked
    /// again at `deadline_ms` (its request or answer may have been lost on a stalled host
    /// link); only at `give_up_ms` does no answer count as "dead".
    Suspect {
        /// When an unanswered probe is asked again (agent clock, ms).
        deadline_ms: u64,
        /// When the peer is declared lost without an answer (agent clock, ms).
        give_up_ms: u64,
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
    /// A peer declared lost and heard again in the same boot: since when. It counts as
    /// alive only once heard for a heartbeat interval, so a frame it sent before dying (late
    /// on the wire) does not bring a dead active back.
    pub returning_since_ms: Option<u64>,
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

/// This member's own status (its roles are in [`Status::roles`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberStatus {
    /// Serial.
    pub serial: Serial,
    /// Model.
    pub model: String<16>,
    /// Firmware version.
    pub firmware: FirmwareVersion,
    /// Forcing.
    pub forced: Forced,
    /// Quality factor.
    pub quality: u8,
    /// Interface part of the quality.
    pub interface_quality: u8,
    /// Hardware part of the quality.
    pub hardware_quality: u8,
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

/// The whole snapshot, borrowed from the agent ([`crate::Agent::status`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Status<'a, const D: usize> {
    /// This member.
    pub me: &'a MemberStatus,
    /// This member's role in each configured domain, in configuration order.
    pub roles: &'a [DomainStatus],
    /// Every other configured member, in member-list order.
    pub peers: &'a [PeerStatus<D>],
    /// Frame counters.
    pub counters: &'a Counters,
    /// Outputs dropped because the shell did not drain the queue.
    pub output_dropped: u32,
    /// True while the sensor source is silent (its components count as failed).
    pub sensors_silent: bool,
    /// True while the main CPU counts as lost (silent for `main_cpu_timeout_ms` after it was
    /// heard): this member is out of the election until it is heard again.
    pub main_cpu_lost: bool,
}

impl<'a, const D: usize> Status<'a, D> {
    /// A peer by serial.
    pub fn peer(&self, serial: &Serial) -> Option<&'a PeerStatus<D>> {
        self.peers.iter().find(|p| p.serial == *serial)
    }

    /// This member's role in a domain.
    pub fn role(&self, domain: u8) -> Option<Role> {
        self.roles
            .iter()
            .find(|r| r.domain == domain)
            .map(|r| r.role)
    }
}

/// A probe answer the agent received from the main CPU, for the shell's log
/// ([`crate::Agent::take_probe_note`]): a takeover's timeline reads from these.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeNote {
    /// The probed peer.
    pub peer: ha_proto::msg::Serial,
    /// The request it answers (`None`: an unnumbered answer of an older main CPU).
    pub request: Option<u16>,
    /// The answer.
    pub alive: bool,
    /// False when it was ignored: its request was asked before the peer was last heard.
    pub taken: bool,
}
