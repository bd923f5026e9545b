//! Hardware sensor readings: what a board's sensor source reports and the agent weighs in
//! the quality factor (SPEC B1). One kind type for the sensor bridge (`ha_hal::bridge`), the
//! configuration block's weights ([`crate::config_block::HwWeights`]) and the agent.

use serde::{Deserialize, Serialize};

/// Most hardware components one member reports and the agent tracks: a 2U box's disks, PSUs,
/// fans, extension modules, RAID and TPM fit with room to spare.
pub const MAX_READINGS: usize = 24;

/// A kind of sensed component.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SensorKind {
    /// A disk.
    Disk,
    /// The RAID array.
    Raid,
    /// The TPM (counted only when the configuration includes it).
    Tpm,
    /// A power supply.
    Psu,
    /// A fan.
    Fan,
    /// An extension module (network card, ...).
    Module,
}

impl SensorKind {
    /// Every kind, in declaration order.
    pub const ALL: [SensorKind; 6] = [
        SensorKind::Disk,
        SensorKind::Raid,
        SensorKind::Tpm,
        SensorKind::Psu,
        SensorKind::Fan,
        SensorKind::Module,
    ];
}

/// One reading: component `kind` number `index` works (`ok`) or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SensorReading {
    /// Kind of component.
    pub kind: SensorKind,
    /// Which one (0-based).
    pub index: u8,
    /// True when it works.
    pub ok: bool,
}
