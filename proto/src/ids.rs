//! The identities every frame carries: the channel it belongs to (which also selects its
//! key) and the sender's serial, and the protocol version. Everything else in the crate
//! builds on these; they depend on nothing.

use serde::{Deserialize, Serialize};

/// Version of the header layout and of the message sets; sent in every frame header.
pub const PROTOCOL_VERSION: u8 = 2;

/// The channel a frame belongs to; also selects which derived key seals it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[repr(u8)]
pub enum Channel {
    /// Member ↔ member control: heartbeats, joins, admin commands ([`crate::msg::member::MemberMsg`]).
    Member = 1,
    /// Host link, management controller → main CPU ([`crate::msg::host::HostMsg`]). The direction is
    /// part of the authenticated header, so a frame reflected back to its sender is refused.
    ToMainCpu = 2,
    /// Main CPU ↔ main CPU connection-state sync (body defined by the dataplane crate).
    StateSync = 3,
    /// Management traffic between members' main CPUs (configuration sync, operator commands).
    Management = 4,
    /// Host link, main CPU → management controller ([`crate::msg::host::HostMsg`]); same key as
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
pub struct Serial(#[serde(with = "crate::bytes")] pub [u8; 16]);

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
