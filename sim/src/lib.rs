//! Deterministic cluster simulator: N members each running the real [`ha_agent::Agent`]
//! (real sealed frames) over simulated HA links, with a simulated main CPU answering probes.
//!
//! One `u64` seed chooses everything: the number of members (unless fixed), the timer
//! profile, domains, link delay/jitter/loss/duplication/reordering/corruption, clock drift,
//! and a schedule of faults (crashes and restarts, one-way and two-way link cuts, partitions,
//! loss spikes, interface and hardware faults, flapping, admin forcing and pauses). A run has
//! a safety phase (faults on, invariants checked after every event) and a liveness phase
//! (faults healed, the cluster must converge). See [`world`] for the invariants.

#![warn(missing_docs)]

pub mod net;
pub mod scenario;
pub mod world;

pub use scenario::{Kind, Scenario};
pub use world::{run, Options, Outcome};
