//! The quality factor (SPEC B1): how fit this member is to carry traffic, 0..=100.
//!
//! ```text
//! interfaces  I = floor(100 × Σ(upᵢ × wᵢ) / Σ wᵢ)      over monitored interfaces (HA ports are
//!                                                      not reported by the main CPU); 100 if Σw = 0
//! hardware    H = floor(100 × Σ(okₖ × wₖ) / Σ wₖ)      over reported components: disks, RAID,
//!                                                      TPM (only when included), PSUs, fans,
//!                                                      extension modules; 100 if none
//! quality     Q = floor(I × H / 100)               0 instead while the main CPU says it does not
//!                                                      hold its peers' state yet and this
//!                                                      member is active in no domain
//! ```
//!
//! An interface in an aggregate counts as up while its aggregate is up: by default an
//! aggregate is down only when every member is down ([`AggregateRule::AllDown`]); with
//! [`AggregateRule::AnyDown`] one member down takes the whole aggregate down. Each interface
//! keeps its own weight. Before the main CPU first reports its interfaces, I = 100.
//!
//! The state part ([`with_table`]): a main CPU that lacks its peers' connection table (it
//! just started, or its sync session was lost, and the peer's bulk has not arrived; on the
//! kernel path, not yet in the kernel) would drop every connection it took over. Quality 0
//! keeps such a member from taking a domain from a live active (a preferred member coming
//! back, a better quality), while it still takes over from a lost one: quality only ranks
//! members, it never keeps the best one left from being active. An active member is never
//! lowered by it (its table is the authoritative one). A main CPU that never reports it (an
//! earlier release, or none) leaves the quality as it is.

use ha_proto::config_block::{AggregateRule, HwWeights, MAX_WEIGHT};
use ha_proto::msg::host::IfaceState;
use ha_proto::sensor::{SensorKind, SensorReading, MAX_READINGS};

/// Most aggregates told apart (ids are u8).
const AGGREGATES: usize = 256;

/// Quality factor settings: the configuration block's own types, grouped.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct QualityConfig {
    /// When an aggregate counts as down.
    pub aggregate: AggregateRule,
    /// Count the TPM's state.
    pub tpm_included: bool,
    /// Weight of each hardware kind.
    pub weights: HwWeights,
}

/// Weighted percentage, floored; 100 when the total weight is 0.
fn percent(up: u64, total: u64) -> u8 {
    // up ≤ total, so the quotient is ≤ 100
    (up * 100).checked_div(total).map_or(100, |p| p as u8)
}

/// The interface part I of a list of interfaces (weights above 9999 are clamped).
pub fn interface_part(ifaces: &[IfaceState], rule: AggregateRule) -> u8 {
    // Per aggregate id: [any member up, any member down].
    let mut agg = [[false; 2]; AGGREGATES];
    for i in ifaces {
        if let Some(a) = i.aggregate {
            agg[a as usize][if i.up { 0 } else { 1 }] = true;
        }
    }
    let (mut up, mut total) = (0u64, 0u64);
    for i in ifaces {
        let w = i.weight.min(MAX_WEIGHT) as u64;
        let is_up = match i.aggregate {
            None => i.up,
            Some(a) => {
                let [any_up, any_down] = agg[a as usize];
                match rule {
                    AggregateRule::AllDown => any_up,
                    AggregateRule::AnyDown => !any_down,
                }
            }
        };
        total += w;
        if is_up {
            up += w;
        }
    }
    percent(up, total)
}

/// Hardware readings of this member, by (kind, index).
#[derive(Clone, Debug, Default)]
pub struct Hardware {
    readings: heapless::Vec<SensorReading, MAX_READINGS>,
    /// Readings refused because [`MAX_READINGS`] components are already tracked.
    pub overflow: u32,
}

impl Hardware {
    /// Records a reading; returns false if it was refused for lack of room.
    pub fn record(&mut self, r: SensorReading) -> bool {
        if let Some(slot) = self
            .readings
            .iter_mut()
            .find(|x| x.kind == r.kind && x.index == r.index)
        {
            slot.ok = r.ok;
            return true;
        }
        if self.readings.push(r).is_err() {
            self.overflow = self.overflow.saturating_add(1);
            return false;
        }
        true
    }

    /// The hardware part H.
    pub fn part(&self, cfg: &QualityConfig) -> u8 {
        let (mut up, mut total) = (0u64, 0u64);
        for r in &self.readings {
            if r.kind == SensorKind::Tpm && !cfg.tpm_included {
                continue;
            }
            let w = cfg.weights.of(r.kind) as u64;
            total += w;
            if r.ok {
                up += w;
            }
        }
        percent(up, total)
    }

    /// The recorded readings.
    pub fn readings(&self) -> &[SensorReading] {
        &self.readings
    }
}

/// Q after the state part: `q`, or 0 while the main CPU does not hold its peers' state
/// (`table_held` false) and this member is active in no domain (`active`).
pub fn with_table(q: u8, table_held: bool, active: bool) -> u8 {
    if table_held || active {
        q
    } else {
        0
    }
}

/// Combines the two parts: Q = floor(I × H / 100).
pub fn combine(interfaces: u8, hardware: u8) -> u8 {
    ((interfaces.min(100) as u16 * hardware.min(100) as u16) / 100) as u8
}

#[cfg(test)]
mod tests {
    use super::*;
    use heapless::String;

    fn iface(name: &str, up: bool, weight: u16, aggregate: Option<u8>) -> IfaceState {
        let mut n = String::new();
        n.push_str(name).unwrap();
        IfaceState {
            name: n,
            up,
            weight,
            aggregate,
        }
    }

    #[test]
    fn seeds_example_gives_63() {
        // out 100 up, in 100 down, dmz2 75 up (dmz1 is the HA port: not reported).
        let l = [
            iface("out", true, 100, None),
            iface("in", false, 100, None),
            iface("dmz2", true, 75, None),
        ];
        assert_eq!(interface_part(&l, AggregateRule::AllDown), 63);
        assert_eq!(
            combine(63, Hardware::default().part(&QualityConfig::default())),
            63
        );
    }

    #[test]
    fn no_interfaces_or_zero_weights_is_full_quality() {
        assert_eq!(interface_part(&[], AggregateRule::AllDown), 100);
        assert_eq!(
            interface_part(&[iface("a", false, 0, None)], AggregateRule::AllDown),
            100
        );
    }

    #[test]
    fn aggregate_rules() {
        let l = [
            iface("a1", true, 100, Some(1)),
            iface("a2", false, 100, Some(1)),
            iface("x", true, 200, None),
        ];
        assert_eq!(interface_part(&l, AggregateRule::AllDown), 100);
        assert_eq!(interface_part(&l, AggregateRule::AnyDown), 50);
        let all_down = [
            iface("a1", false, 100, Some(1)),
            iface("a2", false, 100, Some(1)),
            iface("x", true, 200, None),
        ];
        assert_eq!(interface_part(&all_down, AggregateRule::AllDown), 50);
    }

    #[test]
    fn hardware_part_and_tpm_inclusion() {
        let mut hw = Hardware::default();
        let mut cfg = QualityConfig::default();
        for i in 0..2 {
            hw.record(SensorReading {
                kind: SensorKind::Psu,
                index: i,
                ok: i == 0,
            });
        }
        hw.record(SensorReading {
            kind: SensorKind::Tpm,
            index: 0,
            ok: false,
        });
        assert_eq!(hw.part(&cfg), 50);
        cfg.tpm_included = true;
        assert_eq!(hw.part(&cfg), 33);
        // The same component reported again replaces its reading.
        hw.record(SensorReading {
            kind: SensorKind::Psu,
            index: 1,
            ok: true,
        });
        assert_eq!(hw.part(&cfg), 66);
        assert_eq!(combine(63, 66), 41);
    }

    #[test]
    fn hardware_table_overflow_is_counted() {
        let mut hw = Hardware::default();
        for i in 0..MAX_READINGS as u8 + 3 {
            hw.record(SensorReading {
                kind: SensorKind::Fan,
                index: i,
                ok: true,
            });
        }
        assert_eq!(hw.overflow, 3);
        assert_eq!(hw.readings().len(), MAX_READINGS);
    }
}
