//! `hactl inspect`: what an image holds, never the key (only its fingerprint).

use ha_proto::config_block::{AggregateRule, ConfigBlock, TimerProfile};
use serde::Serialize;

/// The printable view of a block: every field but the PSK.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct View {
    /// Serial of this member.
    pub serial: String,
    /// Cluster id.
    pub cluster_id: u32,
    /// Key id.
    pub key_id: u8,
    /// Public fingerprint of the PSK (8 bytes of a domain-separated SHA-256, hex).
    pub psk_fingerprint: String,
    /// The configuration revision (16 hex digits): a digest of the settings every member
    /// must share, equal on two images exactly when those agree (what `hactl info` shows).
    pub revision: String,
    /// Encrypted member frames.
    pub encrypt: bool,
    /// Members in cluster order.
    pub members: Vec<MemberView>,
    /// Backup link wired.
    pub backup_link: bool,
    /// State-sync port.
    pub state_sync_port: u16,
    /// Heartbeat interval, ms.
    pub heartbeat_interval_ms: u32,
    /// Missed heartbeats before a link is down.
    pub miss_limit: u8,
    /// Timer profile name.
    pub timer_profile: String,
    /// Domains.
    pub domains: Vec<DomainView>,
    /// Aggregate rule.
    pub aggregate: String,
    /// TPM counted.
    pub tpm_included: bool,
    /// Hardware weights by kind.
    pub weights: std::collections::BTreeMap<String, u16>,
}

/// One member in a [`View`].
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct MemberView {
    /// Serial.
    pub serial: String,
    /// `IP:PORT` of the main HA link.
    pub main_link: String,
    /// This is the image's own member.
    pub me: bool,
}

/// One domain in a [`View`].
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DomainView {
    /// Domain id.
    pub id: u8,
    /// "Active if equal" member.
    pub preferred: Option<String>,
}

/// The view of `b`.
pub fn view(b: &ConfigBlock) -> View {
    let (name, interval, miss) = match b.timers {
        TimerProfile::Default => ("default", 100, 20),
        TimerProfile::Fast => ("fast", 10, 3),
        TimerProfile::Custom {
            interval_ms,
            miss_limit,
        } => ("custom", interval_ms, miss_limit),
    };
    let w = b.weights;
    View {
        serial: b.serial.as_str().into(),
        cluster_id: b.cluster_id,
        key_id: b.key_id,
        psk_fingerprint: b
            .psk_fingerprint()
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect(),
        revision: format!("{:016x}", b.revision()),
        encrypt: b.encrypt,
        members: b
            .members
            .iter()
            .map(|m| MemberView {
                serial: m.serial.as_str().into(),
                main_link: format!(
                    "{}:{}",
                    std::net::Ipv4Addr::from(m.main_link.ip),
                    m.main_link.port
                ),
                me: m.serial == b.serial,
            })
            .collect(),
        backup_link: b.backup_link,
        state_sync_port: b.state_sync_port,
        heartbeat_interval_ms: interval,
        miss_limit: miss,
        timer_profile: name.into(),
        domains: b
            .domains
            .iter()
            .map(|d| DomainView {
                id: d.id,
                preferred: d.preferred.map(|s| s.as_str().into()),
            })
            .collect(),
        aggregate: match b.aggregate {
            AggregateRule::AllDown => "all-down",
            AggregateRule::AnyDown => "any-down",
        }
        .into(),
        tpm_included: b.tpm_included,
        weights: [
            ("disk", w.disk),
            ("raid", w.raid),
            ("tpm", w.tpm),
            ("psu", w.psu),
            ("fan", w.fan),
            ("module", w.module),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect(),
    }
}

/// The human-readable form of a [`View`].
pub fn render(v: &View) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let _ = writeln!(s, "serial            {}", v.serial);
    let _ = writeln!(s, "cluster id        {}", v.cluster_id);
    let _ = writeln!(s, "key id            {}", v.key_id);
    let _ = writeln!(
        s,
        "psk               <not shown>, fingerprint {}",
        v.psk_fingerprint
    );
    let _ = writeln!(
        s,
        "revision          {} (the same on members whose HA settings agree)",
        v.revision
    );
    let _ = writeln!(
        s,
        "encryption        {}",
        if v.encrypt {
            "AEAD (XChaCha20-Poly1305)"
        } else {
            "off (HMAC-SHA256 only)"
        }
    );
    let _ = writeln!(s, "members");
    for m in &v.members {
        let _ = writeln!(
            s,
            "  {:<16}  main link {}{}",
            m.serial,
            m.main_link,
            if m.me { "  (this member)" } else { "" }
        );
    }
    let _ = writeln!(
        s,
        "backup link       {}",
        if v.backup_link { "on" } else { "off" }
    );
    let _ = writeln!(s, "state-sync port   {}", v.state_sync_port);
    let _ = writeln!(
        s,
        "timers            {} ({} ms interval, down after {} missed)",
        v.timer_profile, v.heartbeat_interval_ms, v.miss_limit
    );
    for d in &v.domains {
        let _ = writeln!(
            s,
            "domain {:<3}        active if equal: {}",
            d.id,
            d.preferred.as_deref().unwrap_or("-")
        );
    }
    let _ = writeln!(s, "aggregates        {}", v.aggregate);
    let _ = writeln!(
        s,
        "tpm counted       {}",
        if v.tpm_included { "yes" } else { "no" }
    );
    let w: Vec<String> = v.weights.iter().map(|(k, x)| format!("{k}={x}")).collect();
    let _ = writeln!(s, "weights           {}", w.join(" "));
    s
}
