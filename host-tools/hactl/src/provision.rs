//! `hactl provision`: builds a member's [`ConfigBlock`] and writes it as a flash image.
//!
//! The image is [`BLOCK_SIZE`] bytes: the encoded block, then erased flash (0xFF). QEMU loads
//! it at the configuration sector's address and a board is flashed with it as is. It holds
//! the PSK, so it is written with mode 0600.

use std::net::SocketAddrV4;
use std::path::Path;

use ha_proto::config_block::{
    AggregateRule, ConfigBlock, ConfigField, DomainEntry, HwWeights, LinkAddr, MemberEntry,
    TimerProfile, BLOCK_SIZE, DEFAULT_STATE_SYNC_PORT, ERASED,
};
use ha_proto::keys::Psk;
use ha_proto::msg::{Serial, MAX_DOMAINS, MAX_MEMBERS};
use zeroize::Zeroize;

use crate::exit::{Code, Failure, Result};

/// Everything `provision` needs but the key.
#[derive(Clone, Debug)]
pub struct Plan {
    /// This member's serial.
    pub serial: String,
    /// Cluster id.
    pub cluster_id: u32,
    /// Key id of the PSK.
    pub key_id: u8,
    /// Encrypt member frames.
    pub encrypt: bool,
    /// `SERIAL=IP:PORT` of every member, in cluster order.
    pub members: Vec<String>,
    /// Backup link wired.
    pub backup_link: bool,
    /// State-sync UDP port.
    pub state_sync_port: u16,
    /// `default`, `fast` or `custom:INTERVAL_MS:MISS_LIMIT`.
    pub timers: String,
    /// `ID=SERIAL` ("active if equal" member of domain ID) or `ID`; none means domain 0 with
    /// no preference.
    pub domains: Vec<String>,
    /// `all-down` or `any-down`.
    pub aggregate: String,
    /// Count the TPM.
    pub tpm: bool,
    /// `KIND=WEIGHT` overrides (disk, raid, tpm, psu, fan, module).
    pub weights: Vec<String>,
}

impl Default for Plan {
    fn default() -> Self {
        Plan {
            serial: String::new(),
            cluster_id: 1,
            key_id: 1,
            encrypt: false,
            members: Vec::new(),
            backup_link: false,
            state_sync_port: DEFAULT_STATE_SYNC_PORT,
            timers: "default".into(),
            domains: Vec::new(),
            aggregate: "all-down".into(),
            tpm: false,
            weights: Vec::new(),
        }
    }
}

fn refused(msg: String) -> Failure {
    Failure::new(Code::Refused, msg)
}

fn serial(s: &str) -> Result<Serial> {
    Serial::new(s).ok_or_else(|| {
        refused(format!(
            "bad serial {s:?}: 1 to 16 printable ASCII characters expected"
        ))
    })
}

/// Parses `default`, `fast` or `custom:INTERVAL_MS:MISS_LIMIT`.
pub fn parse_timers(s: &str) -> Result<TimerProfile> {
    match s {
        "default" => Ok(TimerProfile::Default),
        "fast" => Ok(TimerProfile::Fast),
        _ => {
            let mut it = s.strip_prefix("custom:").unwrap_or("").split(':');
            match (
                it.next().and_then(|v| v.parse().ok()),
                it.next().and_then(|v| v.parse().ok()),
                it.next(),
            ) {
                (Some(interval_ms), Some(miss_limit), None) => Ok(TimerProfile::Custom {
                    interval_ms,
                    miss_limit,
                }),
                _ => Err(refused(format!(
                    "bad timer profile {s:?}: default, fast or custom:INTERVAL_MS:MISS_LIMIT"
                ))),
            }
        }
    }
}

impl Plan {
    /// The block this plan describes, with `psk`.
    pub fn block(&self, psk: Psk) -> Result<ConfigBlock> {
        let mut members = heapless::Vec::<MemberEntry, MAX_MEMBERS>::new();
        if self.members.is_empty() {
            return Err(refused(
                "at least one --member SERIAL=IP:PORT is needed".into(),
            ));
        }
        for m in &self.members {
            let (s, addr) = m
                .split_once('=')
                .ok_or_else(|| refused(format!("bad --member {m:?}: SERIAL=IP:PORT expected")))?;
            let addr: SocketAddrV4 = addr
                .parse()
                .map_err(|_| refused(format!("bad --member {m:?}: SERIAL=IP:PORT expected")))?;
            members
                .push(MemberEntry {
                    serial: serial(s)?,
                    main_link: LinkAddr {
                        ip: addr.ip().octets(),
                        port: addr.port(),
                    },
                })
                .map_err(|_| refused(format!("at most {MAX_MEMBERS} members")))?;
        }
        let domains = parse_domains(&self.domains)?;
        let aggregate = parse_aggregate(&self.aggregate)?;
        let mut weights = HwWeights::default();
        apply_weights(&mut weights, &self.weights)?;
        let block = ConfigBlock {
            serial: serial(&self.serial)?,
            cluster_id: self.cluster_id,
            key_id: self.key_id,
            encrypt: self.encrypt,
            members,
            backup_link: self.backup_link,
            state_sync_port: self.state_sync_port,
            timers: parse_timers(&self.timers)?,
            domains,
            aggregate,
            tpm_included: self.tpm,
            weights,
            psk,
        };
        check(&block)?;
        Ok(block)
    }
}

/// The block of a machine that enrols through the configuration-sync service at `peer`
/// holding the key in `psk_file` (see `ha_confsync::enrol`): the cluster's settings as that
/// member has them, this machine added as `serial` at `main_link`, sealed under the key id
/// the member's frames named; checked as `hactl provision` checks.
pub fn enroll(peer: &str, psk_file: &Path, serial_s: &str, main_link: &str) -> Result<ConfigBlock> {
    let me = serial(serial_s)?;
    let link: SocketAddrV4 = main_link
        .parse()
        .map_err(|_| refused(format!("--main-link {main_link:?}: IPv4:PORT expected")))?;
    let psk = crate::pskfile::read(psk_file)?;
    let e =
        ha_confsync::enrol::enroll_at(peer, &psk, me).map_err(|m| Failure::new(Code::Failed, m))?;
    let link = LinkAddr {
        ip: link.ip().octets(),
        port: link.port(),
    };
    let block = e
        .profile
        .block_for(me, link, psk, e.key_id)
        .map_err(|err| match err {
            ha_proto::config_block::ConfigBlockError::Invalid(ConfigField::Members) => {
                refused(format!(
                    "cluster {} is full: {} of {MAX_MEMBERS} members; remove one first \
                     (hactl cluster remove --serial S)",
                    e.cluster_id,
                    e.profile.members.len()
                ))
            }
            other => refused(format!("refused: {other}")),
        })?;
    check(&block)?;
    Ok(block)
}

/// `hactl cluster enroll`: the block from [`enroll`], written to `out`, the site's `install`
/// hook run as `PROGRAM SERIAL IMAGE`; returns what to tell the operator.
pub fn enroll_command(
    peer: &str,
    psk_file: &Path,
    serial_s: &str,
    main_link: &str,
    out: &Path,
    force: bool,
    install: Option<&Path>,
) -> Result<String> {
    let block = enroll(peer, psk_file, serial_s, main_link)?;
    write_image(&block, out, force)?;
    let names: Vec<&str> = block.members.iter().map(|m| m.serial.as_str()).collect();
    let mut said = format!(
        "enrolled {} in cluster {} through {peer}: key id {}, {} members ({}), timers {}; \
         configuration image written to {} (mode 600)",
        block.serial,
        block.cluster_id,
        block.key_id,
        names.len(),
        names.join(", "),
        ha_persist::block_diff::timers(block.timers),
        out.display()
    );
    if let Some(prog) = install {
        crate::update::run_install_hook(prog, block.serial.as_str(), out)
            .map_err(|m| Failure::new(Code::Failed, m))?;
        said.push_str(&format!("\ninstalled by {}", prog.display()));
    }
    Ok(said)
}

/// Every check a written block passes: the names, the block's own validation and what the
/// member's firmware checks at boot, with the same reason (a block it would refuse is never
/// written: the member would stay off with one log line).
pub fn check(block: &ConfigBlock) -> Result<()> {
    check_names(block)?;
    block
        .validate()
        .map_err(|e| refused(format!("refused: {e}")))?;
    ha_agent::config::firmware_accepts(block).map_err(|e| {
        refused(format!(
            "refused: the member's firmware would not start: {e}"
        ))
    })
}

/// Parses `--domain` values (`ID` or `ID=SERIAL`); none means domain 0 with no preference.
pub fn parse_domains(given: &[String]) -> Result<heapless::Vec<DomainEntry, MAX_DOMAINS>> {
    let mut domains = heapless::Vec::<DomainEntry, MAX_DOMAINS>::new();
    let specs: Vec<&str> = if given.is_empty() {
        vec!["0"]
    } else {
        given.iter().map(String::as_str).collect()
    };
    for d in specs {
        let (id, pref) = match d.split_once('=') {
            Some((id, s)) => (id, Some(serial(s)?)),
            None => (d, None),
        };
        let id: u8 = id
            .parse()
            .map_err(|_| refused(format!("bad --domain {d:?}: ID or ID=SERIAL expected")))?;
        domains
            .push(DomainEntry {
                id,
                preferred: pref,
            })
            .map_err(|_| refused(format!("at most {MAX_DOMAINS} domains")))?;
    }
    Ok(domains)
}

/// Parses `--aggregate`: `all-down` or `any-down`.
pub fn parse_aggregate(s: &str) -> Result<AggregateRule> {
    match s {
        "all-down" => Ok(AggregateRule::AllDown),
        "any-down" => Ok(AggregateRule::AnyDown),
        a => Err(refused(format!(
            "bad --aggregate {a:?}: all-down or any-down"
        ))),
    }
}

/// Applies `--weight KIND=WEIGHT` values to `weights`.
pub fn apply_weights(weights: &mut HwWeights, specs: &[String]) -> Result<()> {
    for w in specs {
        let (k, v) = w
            .split_once('=')
            .ok_or_else(|| refused(format!("bad --weight {w:?}: KIND=WEIGHT expected")))?;
        let v: u16 = v
            .parse()
            .ok()
            .filter(|v| *v <= ha_proto::config_block::MAX_WEIGHT)
            .ok_or_else(|| {
                refused(format!(
                    "bad --weight {w:?}: weights must be 0–{}",
                    ha_proto::config_block::MAX_WEIGHT
                ))
            })?;
        let slot = match k {
            "disk" => &mut weights.disk,
            "raid" => &mut weights.raid,
            "tpm" => &mut weights.tpm,
            "psu" => &mut weights.psu,
            "fan" => &mut weights.fan,
            "module" => &mut weights.module,
            _ => {
                return Err(refused(format!(
                    "bad --weight kind {k:?}: disk, raid, tpm, psu, fan or module"
                )))
            }
        };
        *slot = v;
    }
    Ok(())
}

/// The member and domain lists name each other consistently, said in the options' terms
/// (the block's own check only names the field).
fn check_names(b: &ConfigBlock) -> Result<()> {
    let listed = |s: &Serial| b.members.iter().any(|m| m.serial == *s);
    for (i, m) in b.members.iter().enumerate() {
        if b.members[..i].iter().any(|o| o.serial == m.serial) {
            return Err(refused(format!("{} is given twice in --member", m.serial)));
        }
    }
    if !listed(&b.serial) {
        return Err(refused(format!(
            "{} (--serial) is not in --member: a member is part of its own cluster",
            b.serial
        )));
    }
    for (i, d) in b.domains.iter().enumerate() {
        if usize::from(d.id) >= MAX_DOMAINS {
            return Err(refused(format!(
                "domain {}: domain ids must be 0–{}",
                d.id,
                MAX_DOMAINS - 1
            )));
        }
        if b.domains[..i].iter().any(|o| o.id == d.id) {
            return Err(refused(format!(
                "domain {} is given twice in --domain",
                d.id
            )));
        }
        if let Some(p) = d.preferred.filter(|p| !listed(p)) {
            return Err(refused(format!(
                "--domain {}={p}: {p} is not in --member",
                d.id
            )));
        }
    }
    Ok(())
}

/// The flash image of `block`: the encoded block padded with erased bytes to [`BLOCK_SIZE`].
pub fn image(block: &ConfigBlock) -> Result<Vec<u8>> {
    let mut img = vec![ERASED; BLOCK_SIZE];
    block
        .encode(&mut img)
        .map_err(|e| refused(format!("cannot encode the configuration block: {e}")))?;
    Ok(img)
}

/// Writes the image of `block` to `out` (mode 0600).
pub fn write_image(block: &ConfigBlock, out: &Path, force: bool) -> Result<()> {
    let mut img = image(block)?;
    let r = crate::pskfile::write_secret(out, &img, force);
    img.zeroize();
    r
}

/// Reads and decodes an image file.
pub fn read_image(path: &Path) -> Result<ConfigBlock> {
    let mut bytes =
        std::fs::read(path).map_err(|e| Failure::file("cannot read image", path, &e))?;
    let r = ConfigBlock::decode(&bytes)
        .map_err(|e| Failure::new(Code::BadImage, format!("{}: {e}", path.display())));
    bytes.zeroize();
    r
}
