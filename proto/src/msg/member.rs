//! Member ↔ member control messages (channel [`super::Channel::Member`]), sealed with the
//! control key. Sent over the main HA link (UDP) and the backup link (UART, COBS framed).

use heapless::Vec;
use serde::{Deserialize, Serialize};

use super::{
    FirmwareVersion, Forced, LinkState, Role, Serial, MAX_DOMAINS, MAX_HA_LINKS, MAX_MEMBERS,
};

/// Every message a member sends to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberMsg {
    /// Periodic liveness and election input, on every HA link.
    Heartbeat(Heartbeat),
    /// A new member asks the cluster to admit it (SPEC A1).
    JoinRequest(JoinRequest),
    /// The cluster admits a member and hands it the HA settings.
    JoinAccept(JoinAccept),
    /// The cluster refuses a member, with the reason.
    JoinReject(JoinReject),
    /// The loser of a collision asks the winner for a full resynchronization (SPEC B4).
    ResyncRequest {
        /// Domain to resynchronize.
        domain: u8,
        /// The winner.
        to: Serial,
        /// The winner's boot epoch as the sender heard it: the winner ignores a request bound
        /// to another of its boots (a replay).
        to_epoch: u32,
    },
    /// An operator command for one member, relayed by another (SPEC E2; frames on a link
    /// reach every member on it, only `target` applies it).
    AdminFor {
        /// The member that must apply the command.
        target: Serial,
        /// The target's boot epoch as the relaying member heard it: the target applies the
        /// command only in that boot, so a recorded command replayed after its reboot (e.g.
        /// a forcing) changes nothing.
        target_epoch: u32,
        /// The command.
        command: AdminCommand,
    },
}

/// One entry of [`Heartbeat::heard`]: a peer's boot epoch as the sender last heard it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heard {
    /// The peer.
    pub member: Serial,
    /// Its boot epoch.
    pub epoch: u32,
}

/// Per-domain role carried by a heartbeat.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DomainRole {
    /// Domain number, 0..MAX_DOMAINS.
    pub domain: u8,
    /// The sender's role in it.
    pub role: Role,
    /// How long the sender has held this role, in milliseconds (saturating).
    pub for_ms: u32,
}

/// The heartbeat: the sender's view of itself, used for liveness and the election.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    /// Quality factor 0..=100 (SPEC B1).
    pub quality: u8,
    /// "Active if equal" priority; 0 when none is set (SPEC B2).
    pub priority: u8,
    /// Administrative forcing in effect on the sender.
    pub forced: Forced,
    /// Sender's firmware version (SPEC A5).
    pub firmware: FirmwareVersion,
    /// Revision of the configuration the sender runs (SPEC D1).
    pub config_revision: u64,
    /// True while the sender's HA decisions are paused (SPEC B5).
    pub paused: bool,
    /// Sender's role per domain.
    pub roles: Vec<DomainRole, MAX_DOMAINS>,
    /// Sender's view of its HA links to the receiver, indexed main = 0, backup = 1.
    pub links: Vec<LinkState, MAX_HA_LINKS>,
    /// Milliseconds since the sender booted (saturating).
    pub uptime_ms: u64,
    /// The boot epoch of every peer the sender hears. A receiver refuses a heartbeat that
    /// names another of its boots: it was recorded before the receiver rebooted. (A
    /// heartbeat from a sender that has not heard the receiver yet names none of its boots.)
    pub heard: Vec<Heard, MAX_MEMBERS>,
}

/// A new member asks to join.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinRequest {
    /// The joiner's firmware version.
    pub firmware: FirmwareVersion,
    /// The joiner's model name, e.g. "SN-Q3".
    pub model: heapless::String<16>,
}

/// The cluster's answer to an accepted join: the HA settings the joiner must adopt.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinAccept {
    /// Members of the cluster after the join.
    pub members: Vec<Serial, MAX_MEMBERS>,
    /// Configuration revision the joiner should fetch.
    pub config_revision: u64,
    /// Heartbeat interval in milliseconds.
    pub heartbeat_ms: u16,
    /// Missed heartbeats before a link is declared down.
    pub miss_limit: u8,
}

/// Why a join was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum JoinReject {
    /// The cluster already has [`super::MAX_MEMBERS`] members (SPEC A6).
    ClusterFull,
    /// The serial is already a member.
    AlreadyMember,
    /// The joiner's firmware cannot run even in fail-soft mode.
    IncompatibleFirmware,
}

/// Operator commands (SPEC E2, B5), relayed member to member.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AdminCommand {
    /// Force the target active.
    ForceActive,
    /// Force the target passive.
    ForcePassive,
    /// Remove any forcing.
    ResetForcing,
    /// Freeze HA decisions for this many seconds (bounded by the agent).
    Pause {
        /// Requested duration, seconds.
        seconds: u16,
    },
    /// Resume decisions before the pause ends.
    Resume,
    /// Reload HA settings.
    Reload,
}
