//! A cluster's shape, shared by the configuration block and the message sets: its members
//! (serial and main HA link address) and its limits. Depends on the identities only, so that
//! the block and the messages can both build on it.

use serde::{Deserialize, Serialize};

use crate::ids::Serial;

/// Most members a cluster can hold (SPEC A3).
pub const MAX_MEMBERS: usize = 8;
/// Most independent HA domains (SPEC A3).
pub const MAX_DOMAINS: usize = 16;

/// An IPv4 address and UDP port of a member's main HA link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LinkAddr {
    /// IPv4 address, network order.
    pub ip: [u8; 4],
    /// UDP port.
    pub port: u16,
}

/// One cluster member as every member's block lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MemberEntry {
    /// The member's serial.
    pub serial: Serial,
    /// Its main HA link address.
    pub main_link: LinkAddr,
}
