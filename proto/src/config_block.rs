//! The per-member flash configuration block (SPEC A4, ARCHITECTURE "config blob").
//!
//! `hactl provision` writes it into an image file that QEMU loads at a fixed flash address and a
//! real board is flashed with; the firmware decodes it at boot. The layout:
//!
//! ```text
//! offset  size  field
//! 0       4     magic "HACB"
//! 4       2     format version, little endian (FORMAT_VERSION)
//! 6       2     body length N, little endian (1..=MAX_BODY_LEN)
//! 8       N     body: postcard encoding of the fields below, in this order
//! 8+N     32    SHA-256 over bytes 0..8+N
//! ...           unused up to BLOCK_SIZE: erased flash (0xFF)
//! ```
//!
//! Body fields: serial, cluster id, key id, encrypt flag, members (serial + main HA link
//! IPv4/UDP port, in cluster order, this member included), backup link on/off, state-sync
//! port, timer profile, domains ("active if equal" member of each = the priority), aggregate
//! rule, TPM included, hardware weights, PSK (32 bytes).
//!
//! The check order when decoding is: erased flash ([`ConfigBlockError::Missing`]), magic,
//! version, length, digest, body decoding, field validation. A SHA-256 digest (rather than a
//! CRC-32) is used because `sha2` is already linked for HMAC and it detects every bit flip,
//! not only short bursts.
//!
//! The PSK is held as a [`Psk`], whose `Debug` is redacted, and [`ConfigBlock`] implements no
//! serde trait, so the key cannot reach a log or a JSON document by accident.

use heapless::Vec;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroize;

pub use crate::cluster::{LinkAddr, MemberEntry};
use crate::cluster::{MAX_DOMAINS, MAX_MEMBERS};
use crate::ids::Serial;
use crate::keys::{Psk, KEY_LEN};
use crate::sensor::SensorKind;

/// Address of the block in the management controller's flash (QEMU loads the image there with
/// `-device loader,addr=0x3F000`): the last 4 KiB below 256 KiB, above the firmware image.
pub const FLASH_ADDR: u32 = 0x0003_F000;

/// Magic at offset 0.
pub const MAGIC: [u8; 4] = *b"HACB";
/// Layout version this code writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the flash region holding the block: one 4 KiB erase sector, so that rewriting the
/// block never touches the firmware image.
pub const BLOCK_SIZE: usize = 4096;
/// Magic + version + length.
pub const HEADER_LEN: usize = 8;
/// SHA-256 digest length.
pub const DIGEST_LEN: usize = 32;
/// Largest body that fits the block with its header and digest.
pub const MAX_BODY_LEN: usize = BLOCK_SIZE - HEADER_LEN - DIGEST_LEN;
/// Value of erased flash bytes.
pub const ERASED: u8 = 0xFF;
/// Default UDP port of the connection-state sync between main CPUs (SPEC C2).
pub const DEFAULT_STATE_SYNC_PORT: u16 = 44242;
/// Default UDP port of the main HA link (heartbeats between management controllers).
pub const DEFAULT_HA_PORT: u16 = 44240;
/// Largest weight (SPEC B1: 0..=9999).
pub const MAX_WEIGHT: u16 = 9999;
/// Shortest heartbeat interval, ms: below this a Cortex-M3 spends its time sealing.
pub const MIN_INTERVAL_MS: u32 = 5;
/// Longest heartbeat interval, ms.
pub const MAX_INTERVAL_MS: u32 = 10_000;
/// Fewest missed heartbeats before a link is declared down: one loss alone never is.
pub const MIN_MISS_LIMIT: u8 = 2;

/// Heartbeat timer profile: the one definition for the block, the agent and the tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TimerProfile {
    /// 100 ms interval, link down after 20 missed heartbeats (2 s). Documented to tolerate
    /// 200 ms round trip and 20% loss on a link without a false failover.
    Default,
    /// 10 ms interval, link down after 3 missed heartbeats (30 ms). For a dedicated, quiet
    /// link: tolerates 2% loss and a few ms of delay; fits the 40 ms failover goal.
    Fast,
    /// Explicit values.
    Custom {
        /// Heartbeat interval, ms ([`MIN_INTERVAL_MS`]..=[`MAX_INTERVAL_MS`]).
        interval_ms: u32,
        /// Missed heartbeats before a link is down (at least [`MIN_MISS_LIMIT`]).
        miss_limit: u8,
    },
}

/// Why a timer profile is out of bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerError {
    /// The interval is outside [`MIN_INTERVAL_MS`]..=[`MAX_INTERVAL_MS`].
    BadInterval(u32),
    /// The miss limit is below [`MIN_MISS_LIMIT`].
    MissLimitTooLow(u8),
}

impl TimerProfile {
    /// Heartbeat interval, ms.
    pub const fn interval_ms(&self) -> u32 {
        match self {
            TimerProfile::Default => 100,
            TimerProfile::Fast => 10,
            TimerProfile::Custom { interval_ms, .. } => *interval_ms,
        }
    }

    /// Missed heartbeats before a link is declared down.
    pub const fn miss_limit(&self) -> u8 {
        match self {
            TimerProfile::Default => 20,
            TimerProfile::Fast => 3,
            TimerProfile::Custom { miss_limit, .. } => *miss_limit,
        }
    }

    /// Silence on a link after which it is down, ms (interval × miss limit).
    pub const fn dead_ms(&self) -> u32 {
        self.interval_ms().saturating_mul(self.miss_limit() as u32)
    }

    /// Checks the bounds (the block's and the agent's one rule).
    pub fn check(&self) -> Result<(), TimerError> {
        let iv = self.interval_ms();
        if !(MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&iv) {
            return Err(TimerError::BadInterval(iv));
        }
        if self.miss_limit() < MIN_MISS_LIMIT {
            return Err(TimerError::MissLimitTooLow(self.miss_limit()));
        }
        Ok(())
    }
}

/// When an aggregate (bond) counts as down in the quality factor.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AggregateRule {
    /// Down when every member link is down (the default).
    #[default]
    AllDown,
    /// Down when any member link is down.
    AnyDown,
}

/// Weight of each hardware component kind in the quality factor (0..=[`MAX_WEIGHT`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HwWeights {
    /// Per disk.
    pub disk: u16,
    /// RAID array.
    pub raid: u16,
    /// TPM.
    pub tpm: u16,
    /// Per power supply.
    pub psu: u16,
    /// Per fan.
    pub fan: u16,
    /// Per extension module.
    pub module: u16,
}

impl Default for HwWeights {
    fn default() -> Self {
        HwWeights {
            disk: 100,
            raid: 100,
            tpm: 100,
            psu: 100,
            fan: 100,
            module: 100,
        }
    }
}

impl HwWeights {
    /// The weight of one component of `kind`.
    pub const fn of(&self, kind: SensorKind) -> u16 {
        match kind {
            SensorKind::Disk => self.disk,
            SensorKind::Raid => self.raid,
            SensorKind::Tpm => self.tpm,
            SensorKind::Psu => self.psu,
            SensorKind::Fan => self.fan,
            SensorKind::Module => self.module,
        }
    }

    /// Checks every weight against [`MAX_WEIGHT`]; the error is the first one above it
    /// (in [`SensorKind::ALL`] order).
    pub fn check(&self) -> Result<(), u16> {
        match SensorKind::ALL
            .iter()
            .map(|&k| self.of(k))
            .find(|&w| w > MAX_WEIGHT)
        {
            Some(w) => Err(w),
            None => Ok(()),
        }
    }
}

/// One HA domain and its "active if equal" member (the priority of SPEC B2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DomainEntry {
    /// Domain number, below [`MAX_DOMAINS`].
    pub id: u8,
    /// The member preferred on equal quality, if any.
    pub preferred: Option<Serial>,
}

/// A member's flash configuration. `Debug` shows every field but the key.
#[derive(Clone, Debug)]
pub struct ConfigBlock {
    /// This member's serial; must be one of [`ConfigBlock::members`].
    pub serial: Serial,
    /// Cluster id (frame headers, key derivation).
    pub cluster_id: u32,
    /// Key id of the keys derived from [`ConfigBlock::psk`].
    pub key_id: u8,
    /// Encrypt member frames (AEAD) instead of authenticating only.
    pub encrypt: bool,
    /// Every member in cluster order (the order is the election's last tie-break).
    pub members: Vec<MemberEntry, MAX_MEMBERS>,
    /// The backup HA link (serial line) is wired and used.
    pub backup_link: bool,
    /// UDP port of the main CPUs' connection-state sync.
    pub state_sync_port: u16,
    /// Heartbeat timers.
    pub timers: TimerProfile,
    /// HA domains; at least one.
    pub domains: Vec<DomainEntry, MAX_DOMAINS>,
    /// Aggregate rule of the quality factor.
    pub aggregate: AggregateRule,
    /// Count the TPM in the quality factor.
    pub tpm_included: bool,
    /// Hardware weights of the quality factor.
    pub weights: HwWeights,
    /// The cluster pre-shared key (redacted in `Debug`).
    pub psk: Psk,
}

impl PartialEq for ConfigBlock {
    fn eq(&self, o: &Self) -> bool {
        // The key is compared in constant time; the other fields are not secret.
        let psk_eq: bool = self.psk.0.ct_eq(&o.psk.0).into();
        self.serial == o.serial
            && self.cluster_id == o.cluster_id
            && self.key_id == o.key_id
            && self.encrypt == o.encrypt
            && self.members == o.members
            && self.backup_link == o.backup_link
            && self.state_sync_port == o.state_sync_port
            && self.timers == o.timers
            && self.domains == o.domains
            && self.aggregate == o.aggregate
            && self.tpm_included == o.tpm_included
            && self.weights == o.weights
            && psk_eq
    }
}

impl Eq for ConfigBlock {}

/// The field a validation error is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigField {
    /// The body is not a valid encoding (only reachable with a forged digest).
    Body,
    /// `serial` is not printable ASCII, or is not in `members`.
    Serial,
    /// `members` is empty or lists a serial twice.
    Members,
    /// A member address is 0.0.0.0, broadcast, or has port 0, or two members share one.
    Address,
    /// `state_sync_port` is 0.
    StateSyncPort,
    /// The timer profile is out of bounds.
    Timers,
    /// `domains` is empty, lists an id twice, an id is too large, or prefers a non-member.
    Domains,
    /// A weight is above [`MAX_WEIGHT`].
    Weights,
    /// The PSK is all zeros or all 0xFF (never provisioned).
    Psk,
}

impl core::fmt::Display for ConfigField {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            ConfigField::Body => "body encoding",
            ConfigField::Serial => "serial",
            ConfigField::Members => "members",
            ConfigField::Address => "member address",
            ConfigField::StateSyncPort => "state-sync port",
            ConfigField::Timers => "timer profile",
            ConfigField::Domains => "domains",
            ConfigField::Weights => "weights",
            ConfigField::Psk => "psk",
        })
    }
}

/// Why a block could not be decoded or encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ConfigBlockError {
    /// The region is erased flash (starts with 0xFF bytes): never provisioned.
    Missing,
    /// The first four bytes are not [`MAGIC`].
    BadMagic,
    /// A format version this code does not know.
    UnsupportedVersion(u16),
    /// The length field is 0, above [`MAX_BODY_LEN`], or past the end of the input.
    BadLength(u16),
    /// The digest does not match: corrupt or partially written.
    BadChecksum,
    /// A field is out of bounds.
    Invalid(ConfigField),
    /// The output buffer is smaller than the encoded block (`need` bytes).
    BufferTooSmall {
        /// Bytes needed.
        need: usize,
    },
    /// The PSK fails the strength rule ([`crate::keys::check_strength`]).
    WeakKey(crate::keys::WeakKey),
}

impl core::fmt::Display for ConfigBlockError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConfigBlockError::Missing => f.write_str("no configuration block (erased flash)"),
            ConfigBlockError::BadMagic => f.write_str("not a configuration block (bad magic)"),
            ConfigBlockError::UnsupportedVersion(v) => {
                write!(f, "unsupported configuration block format version {v}")
            }
            ConfigBlockError::BadLength(n) => {
                write!(f, "bad configuration block body length {n}")
            }
            ConfigBlockError::BadChecksum => {
                f.write_str("configuration block digest mismatch (corrupt or partly written)")
            }
            ConfigBlockError::Invalid(field) => {
                write!(f, "invalid configuration block field: {field}")
            }
            ConfigBlockError::BufferTooSmall { need } => {
                write!(f, "output buffer too small: {need} bytes needed")
            }
            ConfigBlockError::WeakKey(w) => write!(f, "cluster key refused: {w}"),
        }
    }
}

/// The body as postcard sees it. Private so that the key is never serialized elsewhere;
/// its copy of the key is wiped on drop.
#[derive(Serialize, Deserialize)]
struct Body {
    serial: Serial,
    cluster_id: u32,
    key_id: u8,
    encrypt: bool,
    members: Vec<MemberEntry, MAX_MEMBERS>,
    backup_link: bool,
    state_sync_port: u16,
    timers: TimerProfile,
    domains: Vec<DomainEntry, MAX_DOMAINS>,
    aggregate: AggregateRule,
    tpm_included: bool,
    weights: HwWeights,
    #[serde(with = "crate::bytes")]
    psk: [u8; KEY_LEN],
}

impl Drop for Body {
    fn drop(&mut self) {
        self.psk.zeroize();
    }
}

fn valid_serial(s: &Serial) -> bool {
    // Printable ASCII, then only zero padding, and not empty.
    let n = s.0.iter().position(|&c| c == 0).unwrap_or(s.0.len());
    n > 0 && s.0[..n].iter().all(|c| c.is_ascii_graphic()) && s.0[n..].iter().all(|&c| c == 0)
}

fn valid_addr(a: &LinkAddr) -> bool {
    a.port != 0 && a.ip != [0, 0, 0, 0] && a.ip != [255, 255, 255, 255]
}

impl ConfigBlock {
    /// Checks every field; [`ConfigBlock::encode`] and [`ConfigBlock::decode`] call it.
    pub fn validate(&self) -> Result<(), ConfigBlockError> {
        use ConfigField as F;
        let bad = |f| Err(ConfigBlockError::Invalid(f));
        if !valid_serial(&self.serial) {
            return bad(F::Serial);
        }
        if self.members.is_empty() {
            return bad(F::Members);
        }
        for (i, m) in self.members.iter().enumerate() {
            if !valid_serial(&m.serial) {
                return bad(F::Members);
            }
            if !valid_addr(&m.main_link) {
                return bad(F::Address);
            }
            for o in &self.members[..i] {
                if o.serial == m.serial {
                    return bad(F::Members);
                }
                if o.main_link == m.main_link {
                    return bad(F::Address);
                }
            }
        }
        if !self.members.iter().any(|m| m.serial == self.serial) {
            return bad(F::Serial);
        }
        if self.state_sync_port == 0 {
            return bad(F::StateSyncPort);
        }
        if self.timers.check().is_err() {
            return bad(F::Timers);
        }
        if self.domains.is_empty() {
            return bad(F::Domains);
        }
        for (i, d) in self.domains.iter().enumerate() {
            if usize::from(d.id) >= MAX_DOMAINS || self.domains[..i].iter().any(|o| o.id == d.id) {
                return bad(F::Domains);
            }
            if let Some(p) = d.preferred {
                if !self.members.iter().any(|m| m.serial == p) {
                    return bad(F::Domains);
                }
            }
        }
        if self.weights.check().is_err() {
            return bad(F::Weights);
        }
        if self.psk.0.iter().all(|&b| b == 0) || self.psk.0.iter().all(|&b| b == ERASED) {
            return bad(F::Psk);
        }
        self.psk
            .check_strength()
            .map_err(ConfigBlockError::WeakKey)?;
        Ok(())
    }

    /// Writes the block (header, body, digest) to the start of `out`; returns its length.
    /// The rest of `out` is left untouched (an image writer fills it with [`ERASED`]).
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, ConfigBlockError> {
        self.validate()?;
        let body = Body {
            serial: self.serial,
            cluster_id: self.cluster_id,
            key_id: self.key_id,
            encrypt: self.encrypt,
            members: self.members.clone(),
            backup_link: self.backup_link,
            state_sync_port: self.state_sync_port,
            timers: self.timers,
            domains: self.domains.clone(),
            aggregate: self.aggregate,
            tpm_included: self.tpm_included,
            weights: self.weights,
            psk: self.psk.0,
        };
        // Encode into a block-sized scratch buffer first so that the error for a short `out`
        // can say how much is needed.
        let mut scratch = [0u8; BLOCK_SIZE];
        let body_len = match postcard::to_slice(&body, &mut scratch[HEADER_LEN..][..MAX_BODY_LEN]) {
            Ok(b) => b.len(),
            // Every field is bounded and the largest body is checked by a test to fit
            // MAX_BODY_LEN; report it as a body problem rather than panic.
            Err(_) => return Err(ConfigBlockError::Invalid(ConfigField::Body)),
        };
        let total = HEADER_LEN + body_len + DIGEST_LEN;
        let result = if out.len() < total {
            Err(ConfigBlockError::BufferTooSmall { need: total })
        } else {
            scratch[..4].copy_from_slice(&MAGIC);
            scratch[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
            // body_len ≤ MAX_BODY_LEN < 65536
            scratch[6..8].copy_from_slice(&(body_len as u16).to_le_bytes());
            let digest = Sha256::digest(&scratch[..HEADER_LEN + body_len]);
            scratch[HEADER_LEN + body_len..total].copy_from_slice(&digest);
            out[..total].copy_from_slice(&scratch[..total]);
            Ok(total)
        };
        scratch.zeroize();
        result
    }

    /// Reads a block from the start of `bytes` (a flash region or image file; bytes after the
    /// digest are ignored).
    pub fn decode(bytes: &[u8]) -> Result<ConfigBlock, ConfigBlockError> {
        if bytes.len() < 4 {
            return Err(ConfigBlockError::BadLength(0));
        }
        if bytes[..4] == [ERASED; 4] {
            return Err(ConfigBlockError::Missing);
        }
        if bytes[..4] != MAGIC {
            return Err(ConfigBlockError::BadMagic);
        }
        if bytes.len() < HEADER_LEN {
            return Err(ConfigBlockError::BadLength(0));
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != FORMAT_VERSION {
            return Err(ConfigBlockError::UnsupportedVersion(version));
        }
        let len = u16::from_le_bytes([bytes[6], bytes[7]]);
        let body_len = usize::from(len);
        if body_len == 0
            || body_len > MAX_BODY_LEN
            || bytes.len() < HEADER_LEN + body_len + DIGEST_LEN
        {
            return Err(ConfigBlockError::BadLength(len));
        }
        let signed = &bytes[..HEADER_LEN + body_len];
        let stored = &bytes[HEADER_LEN + body_len..HEADER_LEN + body_len + DIGEST_LEN];
        let digest = Sha256::digest(signed);
        if !bool::from(digest.as_slice().ct_eq(stored)) {
            return Err(ConfigBlockError::BadChecksum);
        }
        let body: Body = match postcard::take_from_bytes::<Body>(&signed[HEADER_LEN..]) {
            Ok((b, [])) => b,
            _ => return Err(ConfigBlockError::Invalid(ConfigField::Body)),
        };
        let block = ConfigBlock {
            serial: body.serial,
            cluster_id: body.cluster_id,
            key_id: body.key_id,
            encrypt: body.encrypt,
            members: body.members.clone(),
            backup_link: body.backup_link,
            state_sync_port: body.state_sync_port,
            timers: body.timers,
            domains: body.domains.clone(),
            aggregate: body.aggregate,
            tpm_included: body.tpm_included,
            weights: body.weights,
            psk: Psk(body.psk),
        };
        block.validate()?;
        Ok(block)
    }

    /// The main HA link address of this member.
    pub fn own_link(&self) -> Option<LinkAddr> {
        self.members
            .iter()
            .find(|m| m.serial == self.serial)
            .map(|m| m.main_link)
    }

    /// The other members, in cluster order.
    pub fn peers(&self) -> impl Iterator<Item = &MemberEntry> {
        let me = self.serial;
        self.members.iter().filter(move |m| m.serial != me)
    }

    /// A public fingerprint of the PSK: the first 8 bytes of
    /// SHA-256("ha/v1/psk-fingerprint" || psk). Two images show the same fingerprint exactly
    /// when they hold the same key; the fingerprint does not reveal the key.
    pub fn psk_fingerprint(&self) -> [u8; 8] {
        psk_fingerprint(&self.psk)
    }
}

/// The HA settings a running member takes without a restart (`hactl reload`, SPEC E2): what
/// the main CPU sends its controller in [`crate::msg::host::HostMsg::Settings`] after the
/// block changed. The member list travels apart, in
/// [`crate::msg::host::HostMsg::Members`] (the controller's network side needs the
/// addresses too); the serial, the cluster id, the key and the state-sync port need a
/// restart or a key rollover, so they are not here.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HaSettings {
    /// The block's revision ([`ConfigBlock::revision`]), reported in heartbeats and status.
    pub revision: u64,
    /// Encrypt member frames (AEAD) instead of authenticating only.
    pub encrypt: bool,
    /// The backup HA link (serial line) is wired and used.
    pub backup_link: bool,
    /// Heartbeat timers.
    pub timers: TimerProfile,
    /// HA domains with their preferred members (the ids must stay those running).
    pub domains: Vec<DomainEntry, MAX_DOMAINS>,
    /// Aggregate rule of the quality factor.
    pub aggregate: AggregateRule,
    /// Count the TPM in the quality factor.
    pub tpm_included: bool,
    /// Hardware weights of the quality factor.
    pub weights: HwWeights,
}

/// The part of a block every member of a cluster must agree on, as the revision digest
/// reads it (the serial, the key id and the key differ or change apart from the settings).
#[derive(Serialize)]
struct ClusterWide<'a> {
    cluster_id: u32,
    encrypt: bool,
    members: &'a [MemberEntry],
    backup_link: bool,
    state_sync_port: u16,
    timers: TimerProfile,
    domains: &'a [DomainEntry],
    aggregate: AggregateRule,
    tpm_included: bool,
    weights: HwWeights,
}

/// A postcard output that feeds SHA-256 instead of a buffer, so the digest of a block's
/// settings needs no buffer as large as the block (written by hand: postcard ships no
/// hashing flavor).
struct DigestFlavor(Sha256);

impl postcard::ser_flavors::Flavor for DigestFlavor {
    type Output = Sha256;
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.update(data);
        Ok(())
    }
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.update([data]);
        Ok(())
    }
    fn finalize(self) -> postcard::Result<Sha256> {
        Ok(self.0)
    }
}

impl ConfigBlock {
    /// The block's configuration revision: the first 8 bytes of a SHA-256 over every setting
    /// the cluster's members must share (cluster id, encryption, members, links, state-sync
    /// port, timers, domains, quality settings), not over the serial or the key. Two members
    /// report the same revision exactly when their settings agree, so a mismatch is seen
    /// without anyone numbering revisions by hand, and a rotated key changes nothing.
    pub fn revision(&self) -> u64 {
        let wide = ClusterWide {
            cluster_id: self.cluster_id,
            encrypt: self.encrypt,
            members: &self.members,
            backup_link: self.backup_link,
            state_sync_port: self.state_sync_port,
            timers: self.timers,
            domains: &self.domains,
            aggregate: self.aggregate,
            tpm_included: self.tpm_included,
            weights: self.weights,
        };
        let mut h = Sha256::new();
        h.update(b"ha/v1/settings-revision");
        // Serializing plain data into a hasher cannot fail.
        let h = postcard::serialize_with_flavor(&wide, DigestFlavor(h)).unwrap_or_default();
        let d = h.finalize();
        let mut out = [0u8; 8];
        out.copy_from_slice(&d[..8]);
        u64::from_le_bytes(out)
    }

    /// The settings a running controller takes from this block without a restart.
    pub fn settings(&self) -> HaSettings {
        HaSettings {
            revision: self.revision(),
            encrypt: self.encrypt,
            backup_link: self.backup_link,
            timers: self.timers,
            domains: self.domains.clone(),
            aggregate: self.aggregate,
            tpm_included: self.tpm_included,
            weights: self.weights,
        }
    }
}

/// What a cluster's members share of their blocks, for a newcomer that holds only the
/// cluster key: everything but the serial and the key. A member's configuration-sync service
/// sends it over the sync channel (sealed with the cluster key, so only a key holder asks and
/// the answer is authenticated); the newcomer makes its own block of it with
/// [`ClusterProfile::block_for`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterProfile {
    /// Cluster id.
    pub cluster_id: u32,
    /// Key id of the key the sending member's block names (its sealing key may be newer
    /// after a rollover: the sync frame's header says which key sealed it).
    pub key_id: u8,
    /// Encrypt member frames (AEAD) instead of authenticating only.
    pub encrypt: bool,
    /// Every member in cluster order.
    pub members: Vec<MemberEntry, MAX_MEMBERS>,
    /// The backup HA link (serial line) is wired and used.
    pub backup_link: bool,
    /// UDP port of the main CPUs' connection-state sync.
    pub state_sync_port: u16,
    /// Heartbeat timers.
    pub timers: TimerProfile,
    /// HA domains.
    pub domains: Vec<DomainEntry, MAX_DOMAINS>,
    /// Aggregate rule of the quality factor.
    pub aggregate: AggregateRule,
    /// Count the TPM in the quality factor.
    pub tpm_included: bool,
    /// Hardware weights of the quality factor.
    pub weights: HwWeights,
}

impl ConfigBlock {
    /// The settings this member shares with its cluster ([`ClusterProfile`]).
    pub fn profile(&self) -> ClusterProfile {
        ClusterProfile {
            cluster_id: self.cluster_id,
            key_id: self.key_id,
            encrypt: self.encrypt,
            members: self.members.clone(),
            backup_link: self.backup_link,
            state_sync_port: self.state_sync_port,
            timers: self.timers,
            domains: self.domains.clone(),
            aggregate: self.aggregate,
            tpm_included: self.tpm_included,
            weights: self.weights,
        }
    }
}

impl ClusterProfile {
    /// The block of member `serial` (its main HA link `main_link`) in this cluster, sealed
    /// with `psk` under `key_id`: the member is added at the end of the member list, or its
    /// address replaced if the list names it already. Not validated: the caller checks the
    /// block as `hactl provision` does (full list, duplicate address…).
    pub fn block_for(
        &self,
        serial: Serial,
        main_link: LinkAddr,
        psk: Psk,
        key_id: u8,
    ) -> Result<ConfigBlock, ConfigBlockError> {
        let mut members = self.members.clone();
        match members.iter_mut().find(|m| m.serial == serial) {
            Some(m) => m.main_link = main_link,
            None => members
                .push(MemberEntry { serial, main_link })
                .map_err(|_| ConfigBlockError::Invalid(ConfigField::Members))?,
        }
        Ok(ConfigBlock {
            serial,
            cluster_id: self.cluster_id,
            key_id,
            encrypt: self.encrypt,
            members,
            backup_link: self.backup_link,
            state_sync_port: self.state_sync_port,
            timers: self.timers,
            domains: self.domains.clone(),
            aggregate: self.aggregate,
            tpm_included: self.tpm_included,
            weights: self.weights,
            psk,
        })
    }
}

/// See [`ConfigBlock::psk_fingerprint`].
pub fn psk_fingerprint(psk: &Psk) -> [u8; 8] {
    let mut h = Sha256::new();
    h.update(b"ha/v1/psk-fingerprint");
    h.update(psk.0);
    let d = h.finalize();
    let mut out = [0u8; 8];
    out.copy_from_slice(&d[..8]);
    out
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;
    use proptest::prelude::*;
    use std::format;

    fn serial(s: &str) -> Serial {
        Serial::new(s).unwrap()
    }

    fn sample() -> ConfigBlock {
        let mut members = Vec::new();
        members
            .push(MemberEntry {
                serial: serial("SN-A"),
                main_link: LinkAddr {
                    ip: [10, 0, 0, 1],
                    port: DEFAULT_HA_PORT,
                },
            })
            .unwrap();
        members
            .push(MemberEntry {
                serial: serial("SN-B"),
                main_link: LinkAddr {
                    ip: [10, 0, 0, 2],
                    port: DEFAULT_HA_PORT,
                },
            })
            .unwrap();
        let mut domains = Vec::new();
        domains
            .push(DomainEntry {
                id: 0,
                preferred: Some(serial("SN-A")),
            })
            .unwrap();
        ConfigBlock {
            serial: serial("SN-A"),
            cluster_id: 0xC0FFEE,
            key_id: 1,
            encrypt: false,
            members,
            backup_link: true,
            state_sync_port: DEFAULT_STATE_SYNC_PORT,
            timers: TimerProfile::Default,
            domains,
            aggregate: AggregateRule::AllDown,
            tpm_included: false,
            weights: HwWeights::default(),
            psk: Psk([
                79, 204, 198, 15, 169, 100, 136, 208, 217, 2, 63, 218, 246, 12, 2, 121, 254, 18,
                215, 194, 192, 99, 229, 9, 42, 57, 169, 187, 79, 249, 188, 221,
            ]),
        }
    }

    #[test]
    fn a_newcomers_block_from_the_profile_shares_the_clusters_revision() {
        let a = sample();
        // SN-B's own block, made from SN-A's profile and SN-B's key: the same cluster-wide
        // settings (same revision), its own serial, the key id the sealing frame named.
        let b = a
            .profile()
            .block_for(serial("SN-B"), a.members[1].main_link, a.psk.clone(), 3)
            .unwrap();
        assert_eq!(
            (b.serial, b.key_id, b.members.len()),
            (serial("SN-B"), 3, 2)
        );
        assert_eq!(b.revision(), a.revision());
        assert!(b.validate().is_ok());
        // A newcomer is added at the end; then every member agrees on the new list.
        let link = LinkAddr {
            ip: [10, 0, 0, 3],
            port: DEFAULT_HA_PORT,
        };
        let c = a
            .profile()
            .block_for(serial("SN-C"), link, a.psk.clone(), 1)
            .unwrap();
        assert_eq!(
            c.members.last().map(|m| (m.serial, m.main_link)),
            Some((serial("SN-C"), link))
        );
        assert_ne!(c.revision(), a.revision());
        // A full cluster has no room: refused, not truncated.
        let full = largest().profile();
        assert_eq!(
            full.block_for(serial("SN-NEW"), link, a.psk.clone(), 1),
            Err(ConfigBlockError::Invalid(ConfigField::Members))
        );
        // The profile carries no key.
        let mut buf = [0u8; 512];
        let bytes = postcard::to_slice(&a.profile(), &mut buf).unwrap();
        assert!(!bytes.windows(8).any(|w| w == &a.psk.0[..8]));
    }

    /// The largest block: every capacity full, every number at its longest varint.
    fn largest() -> ConfigBlock {
        let mut b = sample();
        b.members.clear();
        for i in 0..MAX_MEMBERS {
            let s = format!("SERIAL-XXXXXXX-{i}");
            b.members
                .push(MemberEntry {
                    serial: serial(&s),
                    main_link: LinkAddr {
                        ip: [255, 255, 255, i as u8],
                        port: u16::MAX,
                    },
                })
                .unwrap();
        }
        b.serial = b.members[0].serial;
        b.cluster_id = u32::MAX;
        b.timers = TimerProfile::Custom {
            interval_ms: MAX_INTERVAL_MS,
            miss_limit: u8::MAX,
        };
        b.domains.clear();
        for i in 0..MAX_DOMAINS {
            b.domains
                .push(DomainEntry {
                    id: i as u8,
                    preferred: Some(b.members[i % MAX_MEMBERS].serial),
                })
                .unwrap();
        }
        b.weights = HwWeights {
            disk: MAX_WEIGHT,
            raid: MAX_WEIGHT,
            tpm: MAX_WEIGHT,
            psu: MAX_WEIGHT,
            fan: MAX_WEIGHT,
            module: MAX_WEIGHT,
        };
        b
    }

    #[test]
    fn round_trip_sample_and_largest() {
        for b in [sample(), largest()] {
            let mut buf = [ERASED; BLOCK_SIZE];
            let n = b.encode(&mut buf).unwrap();
            assert!(n <= BLOCK_SIZE);
            assert_eq!(ConfigBlock::decode(&buf).unwrap(), b);
            assert_eq!(ConfigBlock::decode(&buf[..n]).unwrap(), b);
        }
    }

    #[test]
    fn the_revision_follows_the_shared_settings_not_the_serial_or_the_key() {
        let a = sample();
        let rev = a.revision();
        assert_ne!(rev, 0);
        // The peer's block: another serial, the same settings.
        let mut b = sample();
        b.serial = serial("SN-B");
        assert_eq!(b.revision(), rev, "members of one cluster agree");
        // A rotated key changes nothing.
        b.key_id = 2;
        b.psk = Psk([0x5A; KEY_LEN]);
        assert_eq!(b.revision(), rev);
        // Every shared setting does.
        let changes: [fn(&mut ConfigBlock); 9] = [
            |b| b.weights.fan += 1,
            |b| b.timers = TimerProfile::Fast,
            |b| b.domains[0].preferred = None,
            |b| b.aggregate = AggregateRule::AnyDown,
            |b| b.tpm_included = true,
            |b| b.encrypt = true,
            |b| b.backup_link = false,
            |b| b.state_sync_port += 1,
            |b| b.members[1].main_link.port += 1,
        ];
        for (i, change) in changes.iter().enumerate() {
            let mut c = sample();
            change(&mut c);
            assert_ne!(c.revision(), rev, "change {i} kept the revision");
        }
    }

    #[test]
    fn the_largest_settings_fit_one_host_link_frame() {
        let msg = crate::msg::host::HostMsg::Settings(largest().settings());
        let body = postcard::to_vec::<_, { crate::frame::MAX_BODY_LEN }>(&msg).unwrap();
        let back: crate::msg::host::HostMsg = postcard::from_bytes(&body).unwrap();
        assert_eq!(back, msg);
        assert_eq!(largest().settings().revision, largest().revision());
    }

    #[test]
    fn largest_fits_with_room() {
        let mut buf = [0u8; BLOCK_SIZE];
        let n = largest().encode(&mut buf).unwrap();
        // Leaves room for later, append-only fields.
        assert!(n < BLOCK_SIZE / 2, "largest block is {n} bytes");
    }

    #[test]
    fn debug_never_shows_key() {
        let b = sample();
        let text = format!("{b:?} {b:#?}");
        assert!(!text.contains("204"), "{text}");
        assert!(!text.to_lowercase().contains("4fcc"), "{text}");
        assert!(text.contains("redacted"));
    }

    #[test]
    fn typed_errors() {
        let b = sample();
        let mut buf = [ERASED; BLOCK_SIZE];
        assert_eq!(
            ConfigBlock::decode(&buf),
            Err(ConfigBlockError::Missing),
            "erased flash"
        );
        let n = b.encode(&mut buf).unwrap();

        let mut bad = buf;
        bad[0] = b'X';
        assert_eq!(ConfigBlock::decode(&bad), Err(ConfigBlockError::BadMagic));

        let mut bad = buf;
        bad[4] = 9;
        assert_eq!(
            ConfigBlock::decode(&bad),
            Err(ConfigBlockError::UnsupportedVersion(9))
        );

        let mut bad = buf;
        bad[6..8].copy_from_slice(&0u16.to_le_bytes());
        assert_eq!(
            ConfigBlock::decode(&bad),
            Err(ConfigBlockError::BadLength(0))
        );
        bad[6..8].copy_from_slice(&5000u16.to_le_bytes());
        assert_eq!(
            ConfigBlock::decode(&bad),
            Err(ConfigBlockError::BadLength(5000))
        );

        assert!(matches!(
            ConfigBlock::decode(&buf[..n - 1]),
            Err(ConfigBlockError::BadLength(_))
        ));

        let mut bad = buf;
        bad[n - 1] ^= 1;
        assert_eq!(
            ConfigBlock::decode(&bad),
            Err(ConfigBlockError::BadChecksum)
        );

        let mut small = [0u8; 16];
        assert_eq!(
            b.encode(&mut small),
            Err(ConfigBlockError::BufferTooSmall { need: n })
        );
    }

    #[test]
    fn validation_errors() {
        type Mutation = fn(&mut ConfigBlock);
        let cases: [(Mutation, ConfigField); 9] = [
            (
                |b| b.serial = Serial::new("SN-Z").unwrap(),
                ConfigField::Serial,
            ),
            (|b| b.members.clear(), ConfigField::Members),
            (
                |b| {
                    let m = b.members[0];
                    b.members[1].serial = m.serial;
                },
                ConfigField::Members,
            ),
            (|b| b.members[1].main_link.port = 0, ConfigField::Address),
            (
                |b| b.members[1].main_link = b.members[0].main_link,
                ConfigField::Address,
            ),
            (|b| b.state_sync_port = 0, ConfigField::StateSyncPort),
            (
                |b| {
                    b.timers = TimerProfile::Custom {
                        interval_ms: 1,
                        miss_limit: 3,
                    }
                },
                ConfigField::Timers,
            ),
            (|b| b.weights.fan = 10_000, ConfigField::Weights),
            (|b| b.psk = Psk([0; 32]), ConfigField::Psk),
        ];
        for (mutate, field) in cases {
            let mut b = sample();
            mutate(&mut b);
            let mut buf = [0u8; BLOCK_SIZE];
            assert_eq!(b.encode(&mut buf), Err(ConfigBlockError::Invalid(field)));
        }
        // Weak keys (the one strength rule): 00…01, a repeated pattern.
        let mut b = sample();
        let mut one = [0u8; 32];
        one[31] = 1;
        b.psk = Psk(one);
        let mut buf = [0u8; BLOCK_SIZE];
        assert!(matches!(
            b.encode(&mut buf),
            Err(ConfigBlockError::WeakKey(_))
        ));
        b.psk = Psk(core::array::from_fn(|i| [0x12, 0x34, 0x56, 0x78][i % 4]));
        assert!(matches!(b.validate(), Err(ConfigBlockError::WeakKey(_))));
        let mut b = sample();
        b.domains[0].preferred = Some(serial("nobody"));
        assert_eq!(
            b.validate(),
            Err(ConfigBlockError::Invalid(ConfigField::Domains))
        );
    }

    #[test]
    fn timer_profiles_and_their_one_bounds_check() {
        assert_eq!(
            (
                TimerProfile::Default.interval_ms(),
                TimerProfile::Default.miss_limit()
            ),
            (100, 20)
        );
        assert_eq!(TimerProfile::Default.dead_ms(), 2000);
        assert_eq!(TimerProfile::Fast.dead_ms(), 30);
        let custom = |interval_ms, miss_limit| TimerProfile::Custom {
            interval_ms,
            miss_limit,
        };
        assert_eq!(custom(40, 4).dead_ms(), 160);
        assert_eq!(custom(MAX_INTERVAL_MS, u8::MAX).check(), Ok(()));
        assert_eq!(custom(MIN_INTERVAL_MS, MIN_MISS_LIMIT).check(), Ok(()));
        assert_eq!(
            custom(MIN_INTERVAL_MS - 1, 3).check(),
            Err(TimerError::BadInterval(MIN_INTERVAL_MS - 1))
        );
        assert_eq!(
            custom(MAX_INTERVAL_MS + 1, 3).check(),
            Err(TimerError::BadInterval(MAX_INTERVAL_MS + 1))
        );
        assert_eq!(
            custom(50, MIN_MISS_LIMIT - 1).check(),
            Err(TimerError::MissLimitTooLow(MIN_MISS_LIMIT - 1))
        );
    }

    #[test]
    fn each_sensor_kind_has_its_own_weight() {
        let w = HwWeights {
            disk: 1,
            raid: 2,
            tpm: 3,
            psu: 4,
            fan: 5,
            module: 6,
        };
        let got = SensorKind::ALL.map(|k| w.of(k));
        assert_eq!(got, [1, 2, 3, 4, 5, 6]);
        assert_eq!(w.check(), Ok(()));
        let too_much = HwWeights {
            psu: MAX_WEIGHT + 1,
            ..w
        };
        assert_eq!(too_much.check(), Err(MAX_WEIGHT + 1));
        assert_eq!(AggregateRule::default(), AggregateRule::AllDown);
    }

    #[test]
    fn fingerprint_depends_on_key_only() {
        let a = sample();
        let mut b = sample();
        b.cluster_id = 7;
        assert_eq!(a.psk_fingerprint(), b.psk_fingerprint());
        b.psk = Psk(core::array::from_fn(|i| (i as u8).wrapping_mul(97) ^ 0x5c));
        assert_ne!(a.psk_fingerprint(), b.psk_fingerprint());
    }

    fn arb_block() -> impl Strategy<Value = ConfigBlock> {
        (
            1usize..=MAX_MEMBERS,
            any::<u32>(),
            any::<u8>(),
            any::<bool>(),
            any::<bool>(),
            1u16..,
            prop_oneof![
                Just(TimerProfile::Default),
                Just(TimerProfile::Fast),
                (MIN_INTERVAL_MS..=MAX_INTERVAL_MS, MIN_MISS_LIMIT..).prop_map(
                    |(interval_ms, miss_limit)| TimerProfile::Custom {
                        interval_ms,
                        miss_limit
                    }
                ),
            ],
            1usize..=MAX_DOMAINS,
            proptest::array::uniform6(0u16..=MAX_WEIGHT),
            proptest::array::uniform32(any::<u8>()),
            any::<u16>(),
        )
            .prop_filter_map(
                "usable key",
                |(n, cluster_id, key_id, encrypt, backup, port, timers, nd, w, psk, seed)| {
                    let mut b = sample();
                    b.members.clear();
                    for i in 0..n {
                        b.members
                            .push(MemberEntry {
                                serial: serial(&format!("S{seed}-{i}")),
                                main_link: LinkAddr {
                                    ip: [10, 1, (seed >> 8) as u8, i as u8 + 1],
                                    port: port.wrapping_add(i as u16).max(1),
                                },
                            })
                            .ok()?;
                    }
                    b.serial = b.members[usize::from(seed) % n].serial;
                    b.cluster_id = cluster_id;
                    b.key_id = key_id;
                    b.encrypt = encrypt;
                    b.backup_link = backup;
                    b.state_sync_port = port;
                    b.timers = timers;
                    b.domains.clear();
                    for d in 0..nd {
                        let preferred = (d % 2 == 0).then(|| b.members[d % n].serial);
                        b.domains
                            .push(DomainEntry {
                                id: d as u8,
                                preferred,
                            })
                            .ok()?;
                    }
                    b.weights = HwWeights {
                        disk: w[0],
                        raid: w[1],
                        tpm: w[2],
                        psu: w[3],
                        fan: w[4],
                        module: w[5],
                    };
                    b.aggregate = if seed % 2 == 0 {
                        AggregateRule::AllDown
                    } else {
                        AggregateRule::AnyDown
                    };
                    b.psk = Psk(psk);
                    b.validate().ok()?;
                    Some(b)
                },
            )
    }

    proptest! {
        #[test]
        fn prop_round_trip(b in arb_block()) {
            let mut buf = [ERASED; BLOCK_SIZE];
            let n = b.encode(&mut buf).unwrap();
            prop_assert_eq!(ConfigBlock::decode(&buf[..n]).unwrap(), b.clone());
            prop_assert_eq!(ConfigBlock::decode(&buf).unwrap(), b);
        }

        #[test]
        fn prop_any_bit_flip_rejected(b in arb_block(), pos in any::<usize>(), bit in 0u8..8) {
            let mut buf = [ERASED; BLOCK_SIZE];
            let n = b.encode(&mut buf).unwrap();
            let pos = pos % n;
            buf[pos] ^= 1 << bit;
            prop_assert!(ConfigBlock::decode(&buf).is_err(), "flip at byte {} bit {} accepted", pos, bit);
        }

        #[test]
        fn prop_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = ConfigBlock::decode(&bytes);
        }
    }
}
