//! From the flash configuration block to the agent's configuration.

use ha_agent::config::FromBlockError;
use ha_agent::Config;
use ha_proto::config_block::{self, ConfigBlock, ConfigBlockError};
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
                    crate::errors::BlockErrorText(e)
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
                    crate::errors::WordsText(e)
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

/// The agent configuration the block describes (`ha_agent::Config::from_block`). Not
/// inlined: its stack frame and the agent's construction are not merged.
#[inline(never)]
pub fn agent_config<const M: usize, const D: usize>(
    b: &ConfigBlock,
) -> Result<Config<M, D>, LoadError> {
    Config::from_block(b, crate::board::NAME, firmware_version()).map_err(|e| match e {
        FromBlockError::TooLarge {
            members, domains, ..
        } => LoadError::TooLarge { members, domains },
        FromBlockError::Refused(e) => LoadError::Refused(e),
    })
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
