//! From the flash configuration block to the agent's configuration.

use ha_agent::config::DomainConfig;
use ha_agent::quality::{AggregateRule, HwWeights, QualityConfig};
use ha_agent::{Config, Profile, Timers};
use ha_proto::config_block::{self, ConfigBlock, ConfigBlockError, TimerProfile};
use ha_proto::msg::FirmwareVersion;

/// Why the member does not join.
#[derive(Clone, Copy, Debug)]
pub enum LoadError {
    /// Nothing was loaded at the block's address (all bytes zero or erased).
    Missing,
    /// The block is there but fails its checks (magic, version, digest, fields).
    Corrupt(ConfigBlockError),
    /// The block decodes but the agent refuses the resulting configuration.
    Refused(ha_agent::ConfigError),
    /// More members or domains than this firmware is built for.
    TooLarge {
        /// Members in the block.
        members: usize,
        /// Domains in the block.
        domains: usize,
    },
}

impl defmt::Format for LoadError {
    fn format(&self, f: defmt::Formatter) {
        match self {
            LoadError::Missing => defmt::write!(f, "no configuration block (nothing loaded)"),
            LoadError::Corrupt(e) => {
                defmt::write!(
                    f,
                    "corrupt configuration block: {}",
                    defmt::Display2Format(e)
                )
            }
            LoadError::TooLarge { members, domains } => defmt::write!(
                f,
                "configuration too large for this firmware: {=usize} members, {=usize} domains (built for at most {=usize} and {=usize})",
                members,
                domains,
                crate::FW_MEMBERS,
                crate::FW_DOMAINS
            ),
            LoadError::Refused(e) => {
                defmt::write!(
                    f,
                    "configuration refused by the agent: {}",
                    defmt::Display2Format(e)
                )
            }
        }
    }
}

/// Decodes and checks the block in `bytes` (integrity digest included).
pub fn load_block(bytes: &[u8]) -> Result<ConfigBlock, LoadError> {
    if bytes.iter().all(|&b| b == 0) || bytes.iter().all(|&b| b == config_block::ERASED) {
        return Err(LoadError::Missing);
    }
    ConfigBlock::decode(bytes).map_err(LoadError::Corrupt)
}

/// The agent configuration the block describes.
pub fn agent_config<const M: usize, const D: usize>(
    b: &ConfigBlock,
) -> Result<Config<M, D>, LoadError> {
    let too_large = LoadError::TooLarge {
        members: b.members.len(),
        domains: b.domains.len(),
    };
    let mut members = heapless::Vec::new();
    for m in &b.members {
        members.push(m.serial).map_err(|_| too_large)?;
    }
    let mut c: Config<M, D> = Config::new(b.cluster_id, b.psk.clone(), b.serial, members);
    c.key_id = b.key_id;
    c.encrypt = b.encrypt;
    c.links = if b.backup_link { 2 } else { 1 };
    c.timers = Timers::for_profile(match b.timers {
        TimerProfile::Default => Profile::Default,
        TimerProfile::Fast => Profile::Fast,
        TimerProfile::Custom {
            interval_ms,
            miss_limit,
        } => Profile::Custom {
            interval_ms,
            miss_limit,
        },
    });
    c.domains.clear();
    for d in &b.domains {
        c.domains
            .push(DomainConfig {
                id: d.id,
                preferred: d.preferred,
            })
            .map_err(|_| too_large)?;
    }
    let w = b.weights;
    c.quality = QualityConfig {
        aggregate: match b.aggregate {
            config_block::AggregateRule::AllDown => AggregateRule::AllDown,
            config_block::AggregateRule::AnyDown => AggregateRule::AnyDown,
        },
        tpm_included: b.tpm_included,
        weights: HwWeights {
            disk: w.disk,
            raid: w.raid,
            tpm: w.tpm,
            psu: w.psu,
            fan: w.fan,
            module: w.module,
        },
    };
    let _ = c.model.push_str("mps2-an385");
    c.firmware = firmware_version();
    c.validate().map_err(LoadError::Refused)?;
    Ok(c)
}

/// This firmware's version, from the package version.
pub fn firmware_version() -> FirmwareVersion {
    const fn parse(s: &str, field: usize) -> u16 {
        let b = s.as_bytes();
        let (mut i, mut f, mut v) = (0, 0, 0u16);
        while i < b.len() {
            let c = b[i];
            if c == b'.' {
                f += 1;
            } else if f == field && c.is_ascii_digit() {
                v = v * 10 + (c - b'0') as u16;
            } else if f == field {
                break;
            }
            i += 1;
        }
        v
    }
    const V: &str = env!("CARGO_PKG_VERSION");
    FirmwareVersion {
        major: parse(V, 0) as u8,
        minor: parse(V, 1) as u8,
        patch: parse(V, 2),
    }
}
