//! The HA agent: a sans-IO, `no_std` election core with no heap, no clock and no I/O of its own.
//!
//! The caller (an embassy task on the management controller, a host process, or the simulator)
//! feeds inputs with the current time and drains outputs:
//!
//! ```text
//! inputs                                   outputs (poll_output until None)
//!   on_frame(now, link, bytes)  ─┐      ┌─ Output::Send { link, bytes }   sealed member frame
//!   on_host(now, HostMsg)        ├─ Agent ┤  Output::Host(HostMsg)         role decision, probe
//!   on_hardware(now, HwReading)  │      │  Output::Led(LedPattern)
//!   on_tick(now)                ─┘      └─ Output::Event(Event)          also kept in events()
//!   next_wake_ms(): call on_tick no later than this
//! ```
//!
//! - [`config`]: the validated configuration (members, links, timer profile, domains, weights);
//! - [`quality`]: the quality factor (SPEC B1);
//! - [`election`]: the ranking rule shared by election, takeover and collision (SPEC B2–B4);
//! - [`agent`]: the state machine (liveness per link and peer, probe before takeover, hold-down,
//!   pause, forcing, fail-soft, domains);
//! - [`status`] and [`event`]: the status snapshot (SPEC E1) and the event ring (SPEC E3).
//!
//! Capacities are const generics: `Agent<M, D>` holds up to `M` members and `D` domains, so a
//! two-member appliance does not pay for eight.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod agent;
pub mod config;
pub mod election;
pub mod event;
pub mod output;
pub mod quality;
pub mod status;

pub use agent::Agent;
pub use config::{Config, ConfigError, DomainConfig, Profile, Timers};
pub use event::{Event, EventKind, EventRing};
pub use ha_proto::endpoint::Reject;
pub use output::{LedPattern, Output};
pub use quality::{HwKind, HwReading};
pub use status::{PeerState, Status};

pub use ha_proto;

/// Identifies an HA link of this member: 0 is the main link, 1 the backup link.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LinkId(pub u8);

impl LinkId {
    /// The main HA link (Ethernet, UDP).
    pub const MAIN: LinkId = LinkId(0);
    /// The backup HA link (a serial line).
    pub const BACKUP: LinkId = LinkId(1);
}

/// State sizes, printed by `cargo xtask size`.
pub mod size {
    use crate::Agent;

    /// Bytes of agent state for 2 members and 1 domain (the common appliance pair).
    pub const PAIR: usize = core::mem::size_of::<Agent<2, 1>>();
    /// Bytes of agent state at full capacity (8 members, 16 domains).
    pub const FULL: usize = core::mem::size_of::<Agent>();
    /// The goal for [`PAIR`] (8 KiB).
    pub const PAIR_GOAL: usize = 8 * 1024;

    // The build fails if the pair's state outgrows the goal.
    const _: () = assert!(PAIR <= PAIR_GOAL);

    #[cfg(test)]
    mod tests {
        extern crate std;
        use super::*;

        #[test]
        fn print_sizes() {
            std::println!("agent state (2 members, 1 domain): {PAIR} bytes (goal <= {PAIR_GOAL})");
            std::println!("agent state (8 members, 16 domains): {FULL} bytes");
        }
    }
}
