//! Test tools, kept out of every production crate:
//!
//! - [`traffic`] and bin `ha-traffic`: the TCP load of the failover tests (per-connection
//!   survival and the longest pause in delivered data);
//! - [`ftp`] (`ha-traffic ftp-server|ftp-client`): FTP sessions whose data connections are
//!   opened after a failover, through a synced helper expectation;
//! - bin `ha-agent-host`: the real HA agent (`ha-agent`, the code the firmware runs) in a host
//!   process, for runs without QEMU;
//! - [`cluster`] and bin `ha-cluster`: boots a cluster of QEMU members (their command line is
//!   `ha-qemu`'s), wires their HA links through the test wire, simulates their boards, plays
//!   each member's main CPU on its host link and watches its status LED.
//!
//! The test wire is `host-tools/testwire`, the board simulator `host-tools/boardsim`.
#![warn(missing_docs)]

pub mod cluster;
mod common;
pub mod events;
pub mod ftp;
mod led;
mod member;
pub mod traffic;
pub mod transit;

pub use cluster::*;
