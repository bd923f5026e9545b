//! What the management API shows: the controller's status report as the status table
//! (SPEC E1) and its events as event-log entries (SPEC E3).

use ha_mgmt_api::*;
use ha_proto::msg::host::{MemberSummary, StatusReport};
use ha_proto::msg::{LinkState, Role};

use crate::runtime::Shared;

/// Maps a controller event name to the API's kind; `None` for names the API has no kind for
/// (shown as [`EventKind::Other`], never dropped: a dropped event would read as a gap in the
/// controller's numbers).
pub fn event_kind(name: &str) -> Option<EventKind> {
    Some(match name {
        "role_changed" => EventKind::Swap,
        "peer_found" | "peer_restarted" => EventKind::PeerFound,
        "peer_lost" | "peer_unreachable" | "all_links_down" => EventKind::PeerLost,
        "link_down" => EventKind::LinkDown,
        "link_up" => EventKind::LinkUp,
        // A silent sensor source counts every component failed: the quality changes.
        "quality_changed" | "sensors_silent" | "sensors_back" => EventKind::QualityChanged,
        "collision" | "resync_requested" => EventKind::Collision,
        "paused" => EventKind::Pause,
        "resumed" => EventKind::Resume,
        "forcing_changed" => EventKind::Forced,
        "version_mismatch" => EventKind::VersionConflict,
        "config_mismatch" => EventKind::SyncFailure,
        "key_rotation" => EventKind::KeyRotation,
        "members_changed" | "members_refused" => EventKind::Members,
        "settings_reloaded" | "settings_refused" | "reload_requested" => EventKind::Reload,
        "main_cpu_lost" | "main_cpu_back" => EventKind::MainCpu,
        _ => return None,
    })
}

pub(crate) fn mode_of(role: Role) -> Mode {
    match role {
        Role::Starting => Mode::Starting,
        Role::Active => Mode::Active,
        Role::Passive => Mode::Passive,
        Role::Disabled => Mode::Disabled,
    }
}

/// A member's overall mode: active when active in any domain, else its first domain's role.
pub(crate) fn member_mode(m: &MemberSummary) -> Mode {
    if !m.alive {
        return Mode::Unknown;
    }
    if m.domains.iter().any(|d| d.role == Role::Active) {
        return Mode::Active;
    }
    m.domains
        .first()
        .map(|d| mode_of(d.role))
        .unwrap_or(Mode::Unknown)
}

/// Builds the status table (SPEC E1) from a status report that arrived at `arrived_ms`.
pub fn cluster_info(
    sh: &Shared,
    report: &StatusReport,
    arrived_ms: u64,
    verbose: bool,
) -> ClusterInfo {
    let members: Vec<MemberInfo> = report
        .members
        .iter()
        .map(|m| {
            let since_ms =
                arrived_ms.saturating_sub(report.uptime_ms.saturating_sub(m.mode_since_ms));
            let counters = (verbose && m.local).then(|| {
                let mut c = std::collections::BTreeMap::new();
                c.insert("frames_sent".to_string(), u64::from(report.frames_sent));
                c.insert(
                    "frames_received".to_string(),
                    u64::from(report.frames_received),
                );
                c.insert(
                    "frames_rejected".to_string(),
                    u64::from(report.frames_rejected),
                );
                c.insert("host_frames_accepted".to_string(), sh.host_accepted);
                c.insert("host_messages_superseded".to_string(), sh.host_superseded);
                c.insert("host_status_resends".to_string(), sh.status_resends);
                for (k, v) in &sh.host_rejects {
                    c.insert(format!("host_rejected_{k}"), *v);
                }
                for (k, v) in &sh.sync_counters {
                    c.insert(format!("sync_{k}"), *v);
                }
                if let Some(fp) = &sh.fast_path {
                    c.insert("fastpath_forwarded".into(), fp.forwarded);
                    c.insert("fastpath_dropped_filter".into(), fp.dropped_filter);
                    c.insert("fastpath_dropped_passive".into(), fp.dropped_passive);
                    c.insert("fastpath_garp_sent".into(), fp.garp_sent);
                }
                c
            });
            MemberInfo {
                serial: m.serial.as_str().to_string(),
                // Its controller's model: this member's from its own controller, a peer's
                // as its daemon told this one over the state sync ("-" before it has).
                model: if m.local {
                    sh.details
                        .as_ref()
                        .map(|(d, _)| d.model.as_str().to_string())
                } else {
                    sh.peer_models.get(m.serial.as_str()).cloned()
                }
                .unwrap_or_else(|| "-".to_string()),
                firmware: format!(
                    "{}.{}.{}",
                    m.firmware.major, m.firmware.minor, m.firmware.patch
                ),
                forced: m.forced,
                mode: member_mode(m),
                mode_since: since_ms / 1000,
                quality: m.quality,
                // The first configured domain's in the column; every domain's below.
                priority: m.domains.first().map(|d| d.priority).unwrap_or(0),
                domains: m
                    .domains
                    .iter()
                    .map(|d| ha_mgmt_api::DomainInfo {
                        domain: d.domain,
                        mode: if m.alive {
                            mode_of(d.role)
                        } else {
                            Mode::Unknown
                        },
                        priority: d.priority,
                    })
                    .collect(),
                config_sync: ConfigSyncInfo {
                    state: if m.local {
                        SyncState::Source
                    } else {
                        SyncState::NoCommunication
                    },
                    last_sync: None,
                    detail: Some(
                        "configuration sync is reported by confsync, not ha-daemon".into(),
                    ),
                },
                // The member's HA boot is its controller's: its own uptime rides on every
                // status report; a peer's comes from the uptime its heartbeats carry, in the
                // controller's details (0, shown "-", before they arrive).
                boot_time: if m.local {
                    arrived_ms.saturating_sub(report.uptime_ms) / 1000
                } else {
                    sh.details
                        .as_ref()
                        .and_then(|(d, at)| {
                            d.uptimes
                                .iter()
                                .find(|u| u.serial == m.serial)
                                .map(|u| at.saturating_sub(u.uptime_ms) / 1000)
                        })
                        .unwrap_or(0)
                },
                links: m
                    .links
                    .iter()
                    .enumerate()
                    .map(|(i, l)| LinkInfo {
                        name: if i == 0 { "main" } else { "backup" }.to_string(),
                        state: match l {
                            LinkState::Absent => LinkStatus::NotConfigured,
                            LinkState::Up => LinkStatus::Up,
                            LinkState::Down => LinkStatus::Down,
                        },
                        // From the controller's link events; 0 (shown "-") when no change
                        // was seen since the daemon started.
                        since: sh
                            .link_changed_ms(m.serial.as_str(), m.local, i)
                            .map_or(0, |t| t / 1000),
                    })
                    .collect(),
                config_revision: m.config_revision,
                counters,
            }
        })
        .collect();
    // Per domain (load sharing makes several members active at once, each for its own
    // domains): how many live members are active for it. A conflict is two for one domain.
    let mut per_domain: std::collections::BTreeMap<u8, usize> = Default::default();
    for m in report.members.iter().filter(|m| m.alive) {
        for d in &m.domains {
            *per_domain.entry(d.domain).or_default() += usize::from(d.role == Role::Active);
        }
    }
    let one_domain = per_domain.len() <= 1;
    let for_domain = |d: u8| {
        if one_domain {
            String::new()
        } else {
            format!(" for domain {d}")
        }
    };
    let conflict = per_domain.iter().find(|(_, n)| **n > 1);
    let unserved = per_domain.iter().find(|(_, n)| **n == 0);
    let alive = report.members.iter().filter(|m| m.alive).count();
    let links_down = members
        .iter()
        .flat_map(|m| &m.links)
        .any(|l| l.state == LinkStatus::Down);
    // Fail-soft (SPEC A5): the members heard run different firmware.
    let mut versions: Vec<&str> = members
        .iter()
        .zip(&report.members)
        .filter(|(_, m)| m.alive)
        .map(|(i, _)| i.firmware.as_str())
        .collect();
    versions.sort_unstable();
    versions.dedup();
    let fail_soft = versions.len() > 1;
    // The revision is a digest of the settings every member must share: two values mean
    // two configurations.
    let mut revisions: Vec<u64> = report
        .members
        .iter()
        .filter(|m| m.alive)
        .map(|m| m.config_revision)
        .collect();
    revisions.sort_unstable();
    revisions.dedup();
    let (banner, banner_text) = if let Some((d, n)) = conflict {
        (
            BannerLevel::Critical,
            format!("{n} members are active{}", for_domain(*d)),
        )
    } else if alive < 2 {
        (
            BannerLevel::Critical,
            "no redundancy: no peer is heard".to_string(),
        )
    } else if let Some((d, _)) = unserved {
        (
            BannerLevel::Warning,
            format!("no member is active{}", for_domain(*d)),
        )
    } else if fail_soft {
        (
            BannerLevel::Warning,
            format!(
                "fail-soft: members run different firmware ({}); upgrade the older one",
                versions.join(", ")
            ),
        )
    } else if revisions.len() > 1 {
        let list: Vec<String> = revisions.iter().map(|r| format!("{r:016x}")).collect();
        (
            BannerLevel::Warning,
            format!(
                "HA settings differ between members (revisions {}): provision the same \
                 settings on each and run `hactl reload` there",
                list.join(", ")
            ),
        )
    } else if links_down {
        (BannerLevel::Warning, "an HA link is down".to_string())
    } else {
        (BannerLevel::Ok, format!("{alive} members, redundant"))
    };
    ClusterInfo {
        api_version: API_VERSION,
        cluster_id: sh.cluster_id,
        me: sh.serial.as_str().to_string(),
        banner,
        banner_text,
        members,
        addresses: sh.addresses.clone(),
        peers: sh.peers.report(),
        fail_soft,
    }
}

pub(crate) fn event_of(e: &ha_proto::msg::host::EventReport, arrived_ms: u64, me: &str) -> Event {
    let kind = event_kind(e.name.as_str());
    let prefix = if kind.is_none() {
        format!("{}: ", e.name.as_str())
    } else {
        String::new()
    };
    Event {
        time_ms: arrived_ms,
        kind: kind.unwrap_or(EventKind::Other),
        // The peer it is about, else this member (its role, quality, forcing…).
        member: Some(
            e.peer
                .map_or_else(|| me.to_string(), |p| p.as_str().to_string()),
        ),
        detail: format!("#{} {prefix}{}", e.seq, e.detail.as_str()),
        seq: Some(e.seq),
    }
}
