//! Hardware sensors: where the agent's disk, RAID, TPM, PSU, fan and module readings come from.

use crate::bridge::SensorReport;

/// A source of sensor reports: a sensor bridge on a UART (QEMU) or a real board's drivers.
///
/// `next_report` waits for the next batch; the caller forwards each reading to the agent.
#[allow(async_fn_in_trait)] // used with concrete types in one executor; no Send bound needed
pub trait SensorSource {
    /// Error reading the source (line error, malformed report).
    type Error: core::fmt::Debug;

    /// Waits for and returns the next batch of readings.
    async fn next_report(&mut self) -> Result<SensorReport, Self::Error>;
}
