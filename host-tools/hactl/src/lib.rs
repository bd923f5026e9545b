//! hactl, the operator's tool of the HA cluster: PSK generation and strength checks,
//! provisioning of a member's flash configuration block, inspection of an image, status and
//! control through the main-CPU daemon's management API, configuration sync, PSK rotation.
//!
//! The binary (`src/main.rs`) only parses arguments and maps [`Failure`]s to exit codes; the
//! logic is here so that tests can drive it.
#![warn(missing_docs)]

pub mod client;
pub mod exit;
pub mod inspect;
pub mod provision;
pub mod pskfile;
pub mod render;
pub mod rotation;
pub mod settings;
pub mod strength;
pub mod update;

pub use exit::{Code, Failure};
