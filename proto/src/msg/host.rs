//! Management controller ↔ main CPU messages (channel [`super::Channel::Host`]), over the
//! host-link UART, COBS framed and sealed with the host-link key.

use heapless::{String, Vec};
use serde::{Deserialize, Serialize};

use super::member::AdminCommand;
use super::{Role, Serial, IFACE_NAME_LEN, MAX_IFACES};

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
    /// Controller → main CPU: the role this member must take in a domain.
    RoleDecision {
        /// Domain.
        domain: u8,
        /// New role.
        role: Role,
        /// Increments on every decision so the main CPU can ignore stale ones.
        decision_seq: u32,
    },
    /// Controller → main CPU: probe a peer over the data interfaces before a takeover.
    ProbeRequest {
        /// Peer whose HA links all went silent.
        peer: Serial,
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
