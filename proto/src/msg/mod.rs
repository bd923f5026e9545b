//! Versioned message sets, one per channel.
//!
//! Each channel has its own enum whose postcard encoding is the body of a frame whose header
//! `kind` names the channel (see [`Channel`]). The version byte of the header covers the whole
//! message set: a change to any enum here that is not append-only bumps
//! [`crate::msg::MESSAGE_SET_VERSION`].

pub mod host;
pub mod member;

use serde::{Deserialize, Serialize};

/// Version of the message sets in this module; sent in every frame header.
pub const MESSAGE_SET_VERSION: u8 = 2;

/// Most members a cluster can hold (SPEC A3).
pub const MAX_MEMBERS: usize = 8;
/// Most independent HA domains (SPEC A3).
pub const MAX_DOMAINS: usize = 16;
/// HA links per member: the main link and the backup link (SPEC A2).
pub const MAX_HA_LINKS: usize = 2;
/// Most monitored (non-HA) interfaces reported by the main CPU; a 2U appliance has at most 32.
pub const MAX_IFACES: usize = 32;
/// Longest interface name, as Linux allows (IFNAMSIZ - 1 = 15), rounded up.
pub const IFACE_NAME_LEN: usize = 16;

/// The channel a frame belongs to; also selects which derived key seals it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Channel {
    /// Member ↔ member control: heartbeats, joins, admin commands ([`member::MemberMsg`]).
    Member = 1,
    /// Host link, management controller → main CPU ([`host::HostMsg`]). The direction is
    /// part of the authenticated header, so a frame reflected back to its sender is refused.
    ToMainCpu = 2,
    /// Main CPU ↔ main CPU connection-state sync (body defined by the dataplane crate).
    StateSync = 3,
    /// Management traffic between members' main CPUs (configuration sync, operator commands).
    Management = 4,
    /// Host link, main CPU → management controller ([`host::HostMsg`]); same key as
    /// [`Channel::ToMainCpu`].
    ToController = 5,
}

impl Channel {
    /// Decodes the header's kind byte.
    pub fn from_u8(v: u8) -> Option<Self> {
        match v {
            1 => Some(Self::Member),
            2 => Some(Self::ToMainCpu),
            3 => Some(Self::StateSync),
            4 => Some(Self::Management),
            5 => Some(Self::ToController),
            _ => None,
        }
    }
}

/// A member's hardware serial number: up to 16 ASCII bytes, zero padded.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Serial(pub [u8; 16]);

impl Serial {
    /// Builds a serial from text; `None` when longer than 16 bytes or not printable ASCII.
    pub fn new(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.is_empty() || b.len() > 16 || !b.iter().all(|c| c.is_ascii_graphic()) {
            return None;
        }
        let mut out = [0u8; 16];
        out[..b.len()].copy_from_slice(b);
        Some(Self(out))
    }

    /// The serial as text (without the zero padding).
    pub fn as_str(&self) -> &str {
        let n = self.0.iter().position(|&c| c == 0).unwrap_or(16);
        core::str::from_utf8(&self.0[..n]).unwrap_or("?")
    }
}

impl core::fmt::Debug for Serial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Serial({})", self.as_str())
    }
}

impl core::fmt::Display for Serial {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

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

/// Administrative forcing of a member's role (SPEC B2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
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
