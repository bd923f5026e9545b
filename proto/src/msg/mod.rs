//! Versioned message sets, one per channel.
//!
//! Each channel has its own enum whose postcard encoding is the body of a frame whose header
//! `kind` names the channel (see [`Channel`]). The version byte of the header covers the whole
//! message set: a change to any enum here that is not append-only bumps
//! [`crate::msg::MESSAGE_SET_VERSION`].

pub mod controller_side;
pub mod host;
pub mod member;

use serde::{Deserialize, Serialize};

pub use crate::cluster::{LinkAddr, MemberEntry, MAX_DOMAINS, MAX_MEMBERS};
pub use crate::ids::{Channel, Serial};

/// Version of the message sets in this module; sent in every frame header.
pub const MESSAGE_SET_VERSION: u8 = crate::ids::PROTOCOL_VERSION;

/// HA links per member: the main link and the backup link (SPEC A2).
pub const MAX_HA_LINKS: usize = 2;
/// Most monitored (non-HA) interfaces reported by the main CPU; a 2U appliance has at most 32.
pub const MAX_IFACES: usize = 32;
/// Longest interface name, as Linux allows (IFNAMSIZ - 1 = 15), rounded up.
pub const IFACE_NAME_LEN: usize = 16;

/// Firmware version of a member, compared for fail-soft mode (SPEC A5).
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
pub struct FirmwareVersion {
    /// Major version.
    pub major: u8,
    /// Minor version.
    pub minor: u8,
    /// Patch level.
    pub patch: u16,
}

/// A member's HA mode for one domain, or overall.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Role {
    /// Booted, listening for peers during the startup window; carries no traffic.
    Starting,
    /// Carries the domain's traffic.
    Active,
    /// Standby: ready to take over, read-only for configuration.
    Passive,
    /// Out of the election (missing or corrupt configuration, being replaced).
    Disabled,
}

/// Administrative forcing of a member's role (SPEC B2). The one definition: the management
/// API's JSON uses it too (snake_case names there; postcard encodes the variant index, so the
/// names do not reach the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forced {
    /// No forcing: the election decides.
    #[default]
    None,
    /// Forced active, whatever the quality.
    Active,
    /// Forced passive, whatever the quality.
    Passive,
}

/// State of one HA link as seen by its reporter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LinkState {
    /// Not configured on this member.
    Absent,
    /// Heartbeats arrive within the timer profile.
    Up,
    /// No heartbeat within the miss limit.
    Down,
}
