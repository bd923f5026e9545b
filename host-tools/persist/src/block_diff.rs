//! What changes between two configuration blocks of one member: the lines `hactl reload`
//! and `hactl settings` print, and the changes a running member cannot take (those need
//! another command, which the refusal names).

use ha_proto::config_block::{AggregateRule, ConfigBlock, TimerProfile};
use ha_proto::sensor::SensorKind;

/// Why `new` cannot replace `old` on a running member, with what to do instead; `None`
/// when a reload can apply it.
pub fn needs_other_command(old: &ConfigBlock, new: &ConfigBlock) -> Option<String> {
    if new.serial != old.serial {
        return Some(format!(
            "the block is for {}, this member is {}: provision this member's own block",
            new.serial.as_str(),
            old.serial.as_str()
        ));
    }
    if new.cluster_id != old.cluster_id {
        return Some(format!(
            "the cluster id changed ({} → {}): that is another cluster; restart the member \
             with the new block",
            old.cluster_id, new.cluster_id
        ));
    }
    if new.key_id != old.key_id || new.psk_fingerprint() != old.psk_fingerprint() {
        return Some(
            "the cluster key in the block differs from the running one: keys change with \
             `hactl psk rotate`, on every member at once"
                .into(),
        );
    }
    if new.members != old.members {
        return Some(
            "the member list changed: members join with `hactl cluster join` and leave with \
             `hactl cluster remove`, which also update the peers' data-plane addresses"
                .into(),
        );
    }
    let ids = |b: &ConfigBlock| b.domains.iter().map(|d| d.id).collect::<Vec<_>>();
    if ids(new) != ids(old) {
        return Some(format!(
            "the domain list changed ({:?} → {:?}): restart the member with the new block",
            ids(old),
            ids(new)
        ));
    }
    if new.state_sync_port != old.state_sync_port {
        return Some(format!(
            "the state-sync port changed ({} → {}): restart the daemon",
            old.state_sync_port, new.state_sync_port
        ));
    }
    None
}

/// A timer profile as `hactl provision --timers` spells it.
pub fn timers(t: TimerProfile) -> String {
    match t {
        TimerProfile::Default => "default".into(),
        TimerProfile::Fast => "fast".into(),
        TimerProfile::Custom {
            interval_ms,
            miss_limit,
        } => format!("custom:{interval_ms}:{miss_limit}"),
    }
}

fn kind(k: SensorKind) -> &'static str {
    match k {
        SensorKind::Disk => "disk",
        SensorKind::Raid => "raid",
        SensorKind::Tpm => "tpm",
        SensorKind::Psu => "psu",
        SensorKind::Fan => "fan",
        SensorKind::Module => "module",
    }
}

fn on(b: bool) -> &'static str {
    if b {
        "on"
    } else {
        "off"
    }
}

/// What applying `new` over `old` changes, one line per setting, in the operator's words.
pub fn describe_changes(old: &ConfigBlock, new: &ConfigBlock) -> Vec<String> {
    let mut out = Vec::new();
    if old.timers != new.timers {
        out.push(format!(
            "timers: {} → {}",
            timers(old.timers),
            timers(new.timers)
        ));
    }
    for k in SensorKind::ALL {
        let (a, b) = (old.weights.of(k), new.weights.of(k));
        if a != b {
            out.push(format!("weights: {} {a} → {b}", kind(k)));
        }
    }
    if old.aggregate != new.aggregate {
        let name = |r| match r {
            AggregateRule::AllDown => "all-down",
            AggregateRule::AnyDown => "any-down",
        };
        out.push(format!(
            "aggregate rule: {} → {}",
            name(old.aggregate),
            name(new.aggregate)
        ));
    }
    if old.tpm_included != new.tpm_included {
        out.push(format!(
            "TPM counted: {} → {}",
            on(old.tpm_included),
            on(new.tpm_included)
        ));
    }
    for (a, b) in old.domains.iter().zip(new.domains.iter()) {
        if a.preferred != b.preferred {
            let name = |p: Option<ha_proto::msg::Serial>| {
                p.map_or("none".to_string(), |s| s.as_str().to_string())
            };
            out.push(format!(
                "domain {} preferred member: {} → {}",
                a.id,
                name(a.preferred),
                name(b.preferred)
            ));
        }
    }
    if old.encrypt != new.encrypt {
        out.push(format!(
            "encryption: {} → {}",
            on(old.encrypt),
            on(new.encrypt)
        ));
    }
    if old.backup_link != new.backup_link {
        out.push(format!(
            "backup link: {} → {}",
            on(old.backup_link),
            on(new.backup_link)
        ));
    }
    out
}
