//! The HA agent: a sans-IO, `no_std` election core with no heap, no clock and no I/O of its own.
//!
//! The caller (an embassy task on the management controller, a host process, or the simulator)
//! feeds inputs with the current time and drains outputs:
//!
//! ```text
//! inputs (handle_*)                                 outputs (poll_output until None)
//!   handle_member_frame(now, link, bytes) ─┐      ┌─ Output::Send { link, bytes }  sealed member frame
//!   handle_host_frame(now, bytes)          │      │  Output::Host(HostMsg)        roles, status, probe
//!   handle_host(now, HostMsg)              ├ Agent┤  Output::Led(LedPattern)
//!   handle_sensor_report(now, readings)    │      └─ Output::Event(Event)         also kept in events()
//!   handle_timeout(now)                   ─┘
//!   poll_at(): call handle_timeout no later than this
//! ```
//!
//! - [`config`]: the validated configuration (members, links, timers, domains, weights,
//!   sensor timeout), built from the configuration block's own types;
//! - [`quality`]: the quality factor (SPEC B1);
//! - [`election`]: the ranking rule shared by election, takeover and collision (SPEC B2–B4);
//! - [`agent`]: the state machine, a facade over sub-structures that own their state (peer
//!   table, per-domain decisions, this member, sensor source, main CPU, outbox, endpoints);
//! - `report`: heartbeats and the reports to the main CPU, built from that state;
//! - [`status`] and [`event`]: the status snapshot (SPEC E1) and the event ring (SPEC E3);
//! - [`output`] and [`link`]: what the shell is asked to do, and on which link.
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
pub mod link;
pub mod output;
pub mod quality;
pub(crate) mod report;
pub mod status;

pub use agent::Agent;
pub use config::{Config, ConfigError, Timers};
pub use event::{Event, EventKind, EventRing};
pub use ha_proto::config_block::{DomainEntry, TimerProfile};
pub use ha_proto::endpoint::Reject;
pub use ha_proto::sensor::{SensorKind, SensorReading};
pub use link::LinkId;
pub use output::{LedPattern, Output};
pub use status::{PeerState, Status};

pub use ha_proto;

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
