//! The agent's configuration and its validation.

use ha_proto::config_block::{
    ConfigBlock, DomainEntry, HaSettings, TimerError, TimerProfile, MAX_INTERVAL_MS, MAX_WEIGHT,
    MIN_INTERVAL_MS, MIN_MISS_LIMIT,
};
use ha_proto::keys::Psk;
use ha_proto::msg::{FirmwareVersion, Serial, MAX_DOMAINS, MAX_HA_LINKS};
use ha_proto::text::{fmt_words, TextOut, Words};
use heapless::{String, Vec};

use crate::link::LinkId;
use crate::quality::QualityConfig;

/// Longest hold-down, ms (10 minutes): longer would hide a real failure from the election.
pub const MAX_HOLD_DOWN_MS: u32 = 600_000;
/// Longest pause an operator can ask for, ms (SPEC B5: bounded; 10 minutes).
pub const MAX_PAUSE_MS: u64 = 600_000;
/// How long a member built from a configuration block waits for its sensor source before
/// counting it as failed, ms: ten report periods of the sensor bridge (500 ms each).
pub const DEFAULT_SENSOR_TIMEOUT_MS: u32 = 5_000;
/// Shortest sensor timeout accepted (other than 0), ms: two report periods of the sensor
/// bridge, so that one late report never counts as a silent source.
pub const MIN_SENSOR_TIMEOUT_MS: u32 = 1_000;

/// Shortest time the main CPU's liveness probe listens for the peer's answer, ms (the host
/// link's own bound, which the daemon honours).
pub const MIN_PROBE_MS: u32 = ha_proto::msg::host::MIN_PROBE_WITHIN_MS as u32;

/// The shortest heartbeat interval on the backup link, ms. A heartbeat is 79 bytes on the
/// serial line (77 and the COBS framing), 6.9 ms at 115,200 baud: a 5 ms profile cannot fit
/// on it at all and a 10 ms one fills two thirds of it. With a shorter profile interval the
/// backup link sends at this interval (a third of the line) and is down after `miss_limit`
/// of them: its own dead time ([`Timers::link_dead_ms`]). Held to the main link's 15 or
/// 30 ms, it read down most of the time with the fast profiles, and every flap was two
/// events (issue 14's soak lost 28,362 events to them in 10 minutes).
pub const BACKUP_MIN_INTERVAL_MS: u32 = 20;

/// Timers of the agent; [`Timers::for_profile`] gives consistent defaults.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timers {
    /// Heartbeat profile.
    pub profile: TimerProfile,
    /// After boot, how long to listen for peers before deciding alone, ms.
    pub startup_window_ms: u32,
    /// How long a better passive must stay better before it takes over from a running
    /// active, ms (against flapping). A lost or forced-passive active is replaced at once.
    pub hold_down_ms: u32,
    /// How long to wait for the main CPU's answer to a probe of a silent peer before
    /// declaring it lost, ms, counted from the request (bounds the wait on a silent main
    /// CPU; must exceed [`Timers::probe_ms`]).
    pub probe_timeout_ms: u32,
    /// While every HA link to a peer is down but the probe said it is alive, probe again
    /// this often, ms.
    pub reprobe_ms: u32,
    /// How long the main CPU's probe listens for the peer's answer before it reports "dead",
    /// ms (sent with each request).
    pub probe_ms: u32,
    /// Silence on every HA link to a peer after which it is probed, ms (at most the dead
    /// time): the probe runs while the dead time runs out, so a dead peer is lost when its
    /// links go down rather than a probe later.
    pub suspect_ms: u32,
}

impl Timers {
    /// This member's heartbeat interval on `link`, ms: the profile's on the main link, at
    /// least [`BACKUP_MIN_INTERVAL_MS`] on the backup link.
    pub fn link_interval_ms(&self, link: LinkId) -> u32 {
        let iv = self.profile.interval_ms();
        if link == LinkId::MAIN {
            iv
        } else {
            iv.max(BACKUP_MIN_INTERVAL_MS)
        }
    }

    /// Silence on `link` after which it is down, ms: `miss_limit` of its heartbeats (the
    /// profile's dead time on the main link).
    pub fn link_dead_ms(&self, link: LinkId) -> u32 {
        self.link_interval_ms(link)
            .saturating_mul(self.profile.miss_limit() as u32)
    }

    /// Defaults for a profile: startup window = link dead time + 1 s (fast: + 100 ms),
    /// hold-down 5 s (fast: 500 ms), probe timeout 500 ms (fast: 50 ms), reprobe 2 s
    /// (fast: 100 ms); the probe listens a third of the dead time
    /// ([`MIN_PROBE_MS`]..=150 ms) and starts twice that long before
    /// the dead time ends (the second for the host link's round trip), but not before a
    /// heartbeat and a half of silence. With 5 ms heartbeats and 3 misses (15 ms) the probe
    /// listens 5 ms: at 10 ms it was the takeover's critical path (answered ~2 ms after the
    /// links went down, measured by `cargo xtask bench failover --timers custom:5:3`).
    pub fn for_profile(profile: TimerProfile) -> Self {
        let dead = profile.dead_ms();
        let interval = profile.interval_ms();
        let fast = interval < 50;
        let probe_ms = (dead / 3).clamp(MIN_PROBE_MS, 150);
        Timers {
            profile,
            startup_window_ms: dead + if fast { 100 } else { 1000 },
            hold_down_ms: if fast { 500 } else { 5000 },
            probe_timeout_ms: if fast { 50 } else { 500 }.max(probe_ms * 2),
            reprobe_ms: if fast { 100 } else { 2000 },
            probe_ms,
            suspect_ms: dead
                .saturating_sub(2 * probe_ms)
                .max(interval + interval / 2)
                .min(dead),
        }
    }
}

/// Priority of the "active if equal" member of a domain (the seeds show 50).
pub const PREFERRED_PRIORITY: u8 = 50;

/// Configuration of one agent. Every member of a cluster has the same configuration except
/// [`Config::me`], [`Config::model`] and [`Config::firmware`].
///
/// `M` is the member capacity, `D` the domain capacity.
#[derive(Clone, Debug)]
pub struct Config<const M: usize = { ha_proto::msg::MAX_MEMBERS }, const D: usize = MAX_DOMAINS> {
    /// Cluster id (in every frame header; part of the key derivation).
    pub cluster_id: u32,
    /// Cluster pre-shared key.
    pub psk: Psk,
    /// Key id of the keys derived from `psk`.
    pub key_id: u8,
    /// Encrypt member frames (AEAD) instead of authenticating only (HMAC).
    pub encrypt: bool,
    /// This member's serial.
    pub me: Serial,
    /// This member's model name.
    pub model: String<16>,
    /// This member's firmware version.
    pub firmware: FirmwareVersion,
    /// Every member of the cluster, this one included, in the same order on every member
    /// (the order is the deterministic tie-break).
    pub members: Vec<Serial, M>,
    /// Number of HA links: 1 (main) or 2 (main and backup).
    pub links: u8,
    /// Timers.
    pub timers: Timers,
    /// Domains (SPEC A3: independent groups with one active member each); at least one.
    /// A domain's `preferred` member has priority [`PREFERRED_PRIORITY`], others 0.
    pub domains: Vec<DomainEntry, D>,
    /// Quality factor settings.
    pub quality: QualityConfig,
    /// Revision of the configuration this member runs (reported in heartbeats and status).
    pub config_revision: u64,
    /// How long the sensor source may stay silent before every hardware component counts as
    /// failed (hardware part 0, [`crate::EventKind::SensorsSilent`]), ms; counted from boot
    /// until the first report. 0: this member has no sensor source (the hardware part stays
    /// 100 until a report arrives). Otherwise at least [`MIN_SENSOR_TIMEOUT_MS`].
    pub sensor_timeout_ms: u32,
    /// How long the main CPU may stay silent on the host link (it sends a keepalive every
    /// 100 ms) before this member takes itself out of the election ([`Role::Disabled`](ha_proto::msg::Role::Disabled) in
    /// every domain, [`crate::EventKind::MainCpuLost`]): with its main CPU gone it forwards
    /// nothing, so a peer must take over at once. Watched only once the main CPU was heard.
    /// 0: not watched (tests and tools without a main CPU).
    pub main_cpu_timeout_ms: u32,
}

/// The domains of new HA settings do not fit this agent ([`Config::with_settings`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SettingsTooLarge;

/// Which groups of settings a reload changed ([`Config::changes_to`]), as bits; shown in
/// the `settings_reloaded` event as a list of names.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SettingsChanges(pub u8);

impl SettingsChanges {
    /// The heartbeat timer profile.
    pub const TIMERS: u8 = 1;
    /// A domain's preferred member (the "active if equal" priority).
    pub const PRIORITIES: u8 = 2;
    /// The quality factor's weights, aggregate rule or TPM inclusion.
    pub const QUALITY: u8 = 4;
    /// The backup link on or off.
    pub const LINKS: u8 = 8;
    /// Member frames encrypted or authenticated only.
    pub const ENCRYPTION: u8 = 16;
    /// The member list.
    pub const MEMBERS: u8 = 32;
    const NAMES: [(u8, &'static str); 6] = [
        (Self::TIMERS, "timers"),
        (Self::PRIORITIES, "priorities"),
        (Self::QUALITY, "quality weights"),
        (Self::LINKS, "links"),
        (Self::ENCRYPTION, "encryption"),
        (Self::MEMBERS, "members"),
    ];

    /// True when nothing changed.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl Words for SettingsChanges {
    fn words(&self, out: &mut dyn TextOut) {
        if self.is_empty() {
            return out.text("nothing changed");
        }
        let mut first = true;
        for (bit, name) in Self::NAMES {
            if self.0 & bit != 0 {
                if !first {
                    out.text(", ");
                }
                out.text(name);
                first = false;
            }
        }
    }
}

impl core::fmt::Display for SettingsChanges {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        fmt_words(self, f)
    }
}

/// [`Config::main_cpu_timeout_ms`] of a member configured from its block: four of the main
/// CPU's keepalives (`ha-daemon` sends one every 250 ms when it sends nothing else).
pub const DEFAULT_MAIN_CPU_TIMEOUT_MS: u32 = 1_000;

/// Why a configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConfigError {
    /// `members` is empty.
    NoMembers,
    /// `me` is not in `members`.
    SelfNotMember,
    /// A serial appears twice in `members`.
    DuplicateMember(Serial),
    /// `domains` is empty.
    NoDomains,
    /// A domain id appears twice.
    DuplicateDomain(u8),
    /// A domain id is not below [`MAX_DOMAINS`].
    DomainOutOfRange(u8),
    /// A domain's preferred member is not in `members`.
    PreferredNotMember(u8),
    /// `links` is not 1 or 2.
    BadLinkCount(u8),
    /// The heartbeat interval is outside [`MIN_INTERVAL_MS`]..=[`MAX_INTERVAL_MS`].
    BadInterval(u32),
    /// The miss limit is below [`MIN_MISS_LIMIT`].
    MissLimitTooLow(u8),
    /// The startup window is shorter than a link's dead time: a member would decide alone
    /// before it could hear a peer.
    StartupWindowTooShort,
    /// The hold-down exceeds [`MAX_HOLD_DOWN_MS`].
    HoldDownTooLong(u32),
    /// The probe time, probe timeout or reprobe period is zero.
    ZeroProbeTimer,
    /// The probe timeout does not exceed the probe time: the agent would stop waiting
    /// before the main CPU could answer (or the probe time does not fit the request).
    ProbeTimeoutTooShort,
    /// The probe would start after the links' dead time.
    SuspectAfterDead,
    /// A hardware weight is above [`MAX_WEIGHT`].
    WeightTooLarge(u16),
    /// The sensor timeout is not 0 and below [`MIN_SENSOR_TIMEOUT_MS`].
    SensorTimeoutTooShort(u32),
    /// A reload changed the serial, the cluster id or the domain list: restart instead.
    ReloadNeedsRestart,
    /// The PSK fails the strength rule ([`ha_proto::keys::check_strength`]).
    WeakKey(ha_proto::keys::WeakKey),
    /// Boot epoch 0: the member has no persistent boot counter.
    NoBootEpoch,
}

impl Words for ConfigError {
    fn words(&self, out: &mut dyn TextOut) {
        // Text and numbers in turn: most refusals name a value and its limit.
        let say = |out: &mut dyn TextOut, parts: &[Part]| {
            for p in parts {
                match *p {
                    Part::T(t) => out.text(t),
                    Part::N(n) => out.dec(n),
                }
            }
        };
        use Part::{N, T};
        match *self {
            ConfigError::NoMembers => out.text("the member list is empty"),
            ConfigError::SelfNotMember => {
                out.text("this member's serial is not in the member list")
            }
            ConfigError::DuplicateMember(s) => {
                say(out, &[T("member "), T(s.as_str()), T(" is listed twice")])
            }
            ConfigError::NoDomains => out.text("no domain is configured"),
            ConfigError::DuplicateDomain(d) => {
                say(out, &[T("domain "), N(d.into()), T(" is listed twice")])
            }
            ConfigError::DomainOutOfRange(d) => say(
                out,
                &[
                    T("domain "),
                    N(d.into()),
                    T(" is out of range (0.."),
                    N(MAX_DOMAINS as u32),
                    T(")"),
                ],
            ),
            ConfigError::PreferredNotMember(d) => say(
                out,
                &[
                    T("the preferred member of domain "),
                    N(d.into()),
                    T(" is not a cluster member"),
                ],
            ),
            ConfigError::BadLinkCount(n) => say(
                out,
                &[
                    N(n.into()),
                    T(" HA links configured; 1 or "),
                    N(MAX_HA_LINKS as u32),
                    T(" expected"),
                ],
            ),
            ConfigError::BadInterval(ms) => say(
                out,
                &[
                    T("heartbeat interval "),
                    N(ms),
                    T(" ms outside "),
                    N(MIN_INTERVAL_MS),
                    T("..="),
                    N(MAX_INTERVAL_MS),
                    T(" ms"),
                ],
            ),
            ConfigError::MissLimitTooLow(n) => say(
                out,
                &[
                    T("miss limit "),
                    N(n.into()),
                    T(" below "),
                    N(MIN_MISS_LIMIT.into()),
                ],
            ),
            ConfigError::StartupWindowTooShort => out.text(
                "startup window shorter than the link dead time (interval x miss limit)",
            ),
            ConfigError::HoldDownTooLong(ms) => say(
                out,
                &[
                    T("hold-down "),
                    N(ms),
                    T(" ms above "),
                    N(MAX_HOLD_DOWN_MS),
                    T(" ms"),
                ],
            ),
            ConfigError::ZeroProbeTimer => {
                out.text("probe time, probe timeout and reprobe period must be > 0")
            }
            ConfigError::ProbeTimeoutTooShort => out.text(
                "probe timeout must exceed the probe time (at most 65535 ms), or every probe times out",
            ),
            ConfigError::SuspectAfterDead => {
                out.text("the probe must start before the link dead time ends")
            }
            ConfigError::WeightTooLarge(w) => say(
                out,
                &[T("weight "), N(w.into()), T(" above "), N(MAX_WEIGHT.into())],
            ),
            ConfigError::SensorTimeoutTooShort(ms) => say(
                out,
                &[
                    T("sensor timeout "),
                    N(ms),
                    T(" ms below "),
                    N(MIN_SENSOR_TIMEOUT_MS),
                    T(" ms (0: no sensor source)"),
                ],
            ),
            ConfigError::ReloadNeedsRestart => {
                out.text("serial, cluster id or domains changed: restart the agent")
            }
            ConfigError::WeakKey(w) => {
                out.text("cluster key refused: ");
                w.words(out);
            }
            ConfigError::NoBootEpoch => out.text(
                "boot epoch 0: a persistent boot counter is required (frames of a reused epoch are replays)",
            ),
        }
    }
}

/// A piece of a refusal's sentence: text or a number.
enum Part<'a> {
    T(&'a str),
    N(u32),
}

impl core::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        fmt_words(self, f)
    }
}

impl<const M: usize, const D: usize> Config<M, D> {
    /// A configuration with defaults: one link, the default profile, one domain (0) without
    /// a preferred member, default quality settings, HMAC mode, key id 0, revision 0, no
    /// sensor source (`sensor_timeout_ms` 0).
    pub fn new(cluster_id: u32, psk: Psk, me: Serial, members: Vec<Serial, M>) -> Self {
        let mut domains = Vec::new();
        // D ≥ 1 is checked by validate(); with D = 0 the list stays empty and is refused.
        let _ = domains.push(DomainEntry {
            id: 0,
            preferred: None,
        });
        Config {
            cluster_id,
            psk,
            key_id: 0,
            encrypt: false,
            me,
            model: String::new(),
            firmware: FirmwareVersion::default(),
            members,
            links: 1,
            timers: Timers::for_profile(TimerProfile::Default),
            domains,
            quality: QualityConfig::default(),
            config_revision: 0,
            sensor_timeout_ms: 0,
            main_cpu_timeout_ms: 0,
        }
    }

    /// This configuration with the HA settings of a (new) block applied: encryption, links,
    /// timers, domains, quality settings and the revision; everything else kept. Not
    /// validated (the agent's reload does that). Err when the domains do not fit `D`.
    pub fn with_settings(mut self, s: &HaSettings) -> Result<Self, SettingsTooLarge> {
        self.domains = Vec::from_slice(&s.domains).map_err(|_| SettingsTooLarge)?;
        self.encrypt = s.encrypt;
        self.links = if s.backup_link { 2 } else { 1 };
        self.timers = Timers::for_profile(s.timers);
        self.quality = QualityConfig {
            aggregate: s.aggregate,
            tpm_included: s.tpm_included,
            weights: s.weights,
        };
        self.config_revision = s.revision;
        Ok(self)
    }

    /// What applying `new` in place of this configuration changes, by group.
    pub fn changes_to(&self, new: &Self) -> SettingsChanges {
        let mut c = SettingsChanges::default();
        let mut note = |differs: bool, bit: u8| {
            if differs {
                c.0 |= bit;
            }
        };
        note(self.timers != new.timers, SettingsChanges::TIMERS);
        note(self.domains != new.domains, SettingsChanges::PRIORITIES);
        note(self.quality != new.quality, SettingsChanges::QUALITY);
        note(self.links != new.links, SettingsChanges::LINKS);
        note(self.encrypt != new.encrypt, SettingsChanges::ENCRYPTION);
        note(self.members != new.members, SettingsChanges::MEMBERS);
        c
    }

    /// Checks the configuration; the agent refuses to start with an invalid one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.members.is_empty() {
            return Err(ConfigError::NoMembers);
        }
        self.psk.check_strength().map_err(ConfigError::WeakKey)?;
        for (i, s) in self.members.iter().enumerate() {
            if self.members[..i].contains(s) {
                return Err(ConfigError::DuplicateMember(*s));
            }
        }
        if !self.members.contains(&self.me) {
            return Err(ConfigError::SelfNotMember);
        }
        if self.domains.is_empty() {
            return Err(ConfigError::NoDomains);
        }
        for (i, d) in self.domains.iter().enumerate() {
            if d.id as usize >= MAX_DOMAINS {
                return Err(ConfigError::DomainOutOfRange(d.id));
            }
            if self.domains[..i].iter().any(|o| o.id == d.id) {
                return Err(ConfigError::DuplicateDomain(d.id));
            }
            if let Some(p) = d.preferred {
                if !self.members.contains(&p) {
                    return Err(ConfigError::PreferredNotMember(d.id));
                }
            }
        }
        if self.links == 0 || self.links as usize > MAX_HA_LINKS {
            return Err(ConfigError::BadLinkCount(self.links));
        }
        let t = &self.timers;
        t.profile.check().map_err(|e| match e {
            TimerError::BadInterval(ms) => ConfigError::BadInterval(ms),
            TimerError::MissLimitTooLow(n) => ConfigError::MissLimitTooLow(n),
        })?;
        if t.startup_window_ms < t.profile.dead_ms() {
            return Err(ConfigError::StartupWindowTooShort);
        }
        if t.hold_down_ms > MAX_HOLD_DOWN_MS {
            return Err(ConfigError::HoldDownTooLong(t.hold_down_ms));
        }
        if t.probe_timeout_ms == 0 || t.reprobe_ms == 0 || t.probe_ms == 0 {
            return Err(ConfigError::ZeroProbeTimer);
        }
        if t.probe_timeout_ms <= t.probe_ms || t.probe_ms > u16::MAX as u32 {
            return Err(ConfigError::ProbeTimeoutTooShort);
        }
        if t.suspect_ms > t.profile.dead_ms() {
            return Err(ConfigError::SuspectAfterDead);
        }
        self.quality
            .weights
            .check()
            .map_err(ConfigError::WeightTooLarge)?;
        if self.sensor_timeout_ms != 0 && self.sensor_timeout_ms < MIN_SENSOR_TIMEOUT_MS {
            return Err(ConfigError::SensorTimeoutTooShort(self.sensor_timeout_ms));
        }
        Ok(())
    }

    /// Index of a member in [`Config::members`].
    pub fn member_index(&self, serial: &Serial) -> Option<usize> {
        self.members.iter().position(|s| s == serial)
    }

    /// Priority of a member in the domain with id `domain` (0 for an unknown domain).
    pub fn priority_in(&self, domain: u8, serial: &Serial) -> u8 {
        match self.domains.iter().position(|d| d.id == domain) {
            Some(i) => self.priority(i, serial),
            None => 0,
        }
    }

    /// Priority of a member in the domain at position `domain_index` of [`Config::domains`]:
    /// [`PREFERRED_PRIORITY`] for the domain's preferred member, 0 otherwise.
    pub fn priority(&self, domain_index: usize, serial: &Serial) -> u8 {
        match self.domains.get(domain_index).and_then(|d| d.preferred) {
            Some(p) if p == *serial => PREFERRED_PRIORITY,
            _ => 0,
        }
    }
}

/// Why a configuration block does not make an agent configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FromBlockError {
    /// More members or domains than this agent is built for (`M`, `D`).
    TooLarge {
        /// Members in the block.
        members: usize,
        /// Domains in the block.
        domains: usize,
        /// Members this agent holds at most (`M`).
        max_members: usize,
        /// Domains this agent holds at most (`D`).
        max_domains: usize,
    },
    /// The resulting configuration fails validation.
    Refused(ConfigError),
}

impl Words for FromBlockError {
    fn words(&self, out: &mut dyn TextOut) {
        match *self {
            FromBlockError::TooLarge {
                members,
                domains,
                max_members,
                max_domains,
            } => {
                let (n, what, max) = if members > max_members {
                    (members, " members", max_members)
                } else {
                    (domains, " domains", max_domains)
                };
                out.dec(n as u32);
                out.text(what);
                out.text(": this firmware handles at most ");
                out.dec(max as u32);
            }
            FromBlockError::Refused(e) => e.words(out),
        }
    }
}

impl core::fmt::Display for FromBlockError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        fmt_words(self, f)
    }
}

impl<const M: usize, const D: usize> Config<M, D> {
    /// The configuration a member's flash configuration block describes (the one source of
    /// a member's HA settings, for the firmware and the host-process controller alike);
    /// `model` and `firmware` are the shell's own. The block's types are used as they are
    /// (timer profile, domains, aggregate rule, TPM inclusion, weights). A member built from
    /// a block has its board's sensor source: [`DEFAULT_SENSOR_TIMEOUT_MS`] (a shell without
    /// one sets [`Config::sensor_timeout_ms`] to 0). Validated.
    pub fn from_block(
        b: &ConfigBlock,
        model: &str,
        firmware: FirmwareVersion,
    ) -> Result<Self, FromBlockError> {
        let too_large = FromBlockError::TooLarge {
            members: b.members.len(),
            domains: b.domains.len(),
            max_members: M,
            max_domains: D,
        };
        let mut members = Vec::new();
        for m in &b.members {
            members.push(m.serial).map_err(|_| too_large)?;
        }
        let mut c = Config::new(b.cluster_id, b.psk.clone(), b.serial, members);
        c.key_id = b.key_id;
        c = c.with_settings(&b.settings()).map_err(|_| too_large)?;
        c.sensor_timeout_ms = DEFAULT_SENSOR_TIMEOUT_MS;
        c.main_cpu_timeout_ms = DEFAULT_MAIN_CPU_TIMEOUT_MS;
        let _ = c.model.push_str(model);
        c.firmware = firmware;
        c.validate().map_err(FromBlockError::Refused)?;
        Ok(c)
    }
}

/// Members the shipped firmware's agent holds (the protocol's maximum).
pub const FIRMWARE_MEMBERS: usize = ha_proto::msg::MAX_MEMBERS;
/// HA domains the shipped firmware's agent holds (the protocol allows 16; 4 keeps the agent,
/// and the stack needed to build it, within the controller's RAM budget).
pub const FIRMWARE_DOMAINS: usize = 4;

/// Whether the shipped firmware would start with `block`: the very check it runs at boot
/// ([`Config::from_block`] at [`FIRMWARE_MEMBERS`] × [`FIRMWARE_DOMAINS`]), so that a tool that
/// writes blocks (`hactl provision`) refuses what the member would refuse, with the same
/// reason, instead of a member that stays off.
pub fn firmware_accepts(block: &ConfigBlock) -> Result<(), FromBlockError> {
    Config::<FIRMWARE_MEMBERS, FIRMWARE_DOMAINS>::from_block(block, "", FirmwareVersion::default())
        .map(drop)
}
