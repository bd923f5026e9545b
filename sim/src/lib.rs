//! Deterministic cluster simulator: N members each running the real [`ha_agent::Agent`]
//! (real sealed frames) over simulated HA links, each with a simulated main CPU that answers
//! probes and applies its controller's roles over a lossy host link, and a sensor source.
//!
//! One `u64` seed chooses everything: the number of members (unless fixed), the timer
//! profile, up to four domains with sparse ids, link delay/jitter/loss/duplication/
//! reordering/corruption, host-link loss, clock drift, the sensor timeout, and a schedule of
//! faults (crashes and restarts, one-way and two-way link cuts, partitions, loss spikes,
//! interface and hardware faults, silent sensor sources, flapping, admin forcing and
//! pauses). A run has a safety phase (faults on, invariants checked after every event) and a
//! liveness phase (faults healed, the cluster must converge).
//!
//! - [`scenario`]: a seed becomes a scenario; [`net`]: the HA links; [`cpu`]: a main CPU
//!   and its host link;
//! - [`world`]: the simulation loop; [`invariants`]: what must hold;
//! - [`mod@run`]: one seed's run, its outcome, a failure's report.

#![warn(missing_docs)]

pub mod cpu;
pub mod invariants;
pub mod net;
pub mod run;
pub mod scenario;
pub mod world;

pub use run::{run, Options, Outcome};
pub use scenario::{Kind, Scenario};
