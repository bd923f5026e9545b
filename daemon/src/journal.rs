//! Events where operators look: every controller event and every event of the daemon itself
//! is also written to standard error as one line with a syslog priority prefix (`<4>` …),
//! which journald reads as the entry's priority when the daemon runs under systemd
//! (`SyslogLevelPrefix=`, on by default; see `dist/systemd/ha-daemon.service`) and which
//! stays readable in a plain log file.

use ha_proto::msg::host::EventReport;

/// syslog priorities used here.
const WARNING: u8 = 4;
const NOTICE: u8 = 5;
const INFO: u8 = 6;

/// The priority of a controller event by its name: losing a peer or a link is a warning,
/// a role change or a key rotation a notice, the rest information.
pub fn priority(name: &str) -> u8 {
    match name {
        "peer_lost" | "peer_unreachable" | "all_links_down" | "link_down" | "collision"
        | "version_mismatch" | "config_mismatch" | "members_refused" | "settings_refused" => {
            WARNING
        }
        "role_changed" | "forcing_changed" | "key_rotation" | "paused" | "resumed"
        | "peer_found" | "peer_restarted" | "members_changed" | "settings_reloaded" => NOTICE,
        _ => INFO,
    }
}

/// The journal line when the host link changes frame form (compact: both ends take the
/// compact form, docs/protocol.md).
pub fn frames_line(compact: bool) -> String {
    let form = if compact { "compact" } else { "full" };
    format!("ha-daemon: host link: {form} frames from now on")
}

/// The journal line of a change of what the daemon tells its controller about the peers'
/// table ([`ha_proto::msg::host::HostMsg::TableHeld`]).
pub fn table_held_line(held: bool, why: &str) -> String {
    if held {
        format!("<6>ha-daemon: peers' table held ({why}): ready to take traffic from a live peer")
    } else {
        format!(
            "<5>ha-daemon: peers' table not held ({why}): quality 0 while passive, no preemption"
        )
    }
}

/// The journal line of a controller event.
pub fn controller_line(ev: &EventReport) -> String {
    let peer = ev.peer.as_ref().map_or("-", |p| p.as_str());
    format!(
        "<{}>ha-daemon: event {} seq={} peer={} {}",
        priority(&ev.name),
        ev.name,
        ev.seq,
        peer,
        ev.detail.replace('\n', " ")
    )
}

/// The journal line of one of the daemon's own events.
pub fn local_line(e: &ha_mgmt_api::Event) -> String {
    let kind = serde_json::to_value(e.kind)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| format!("{:?}", e.kind));
    format!(
        "<{}>ha-daemon: event {kind} member={} {}",
        priority(&kind),
        e.member.as_deref().unwrap_or("-"),
        e.detail.replace('\n', " ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_a_priority_journald_reads_and_stay_one_line() {
        let mut ev = EventReport {
            seq: 7,
            at_ms: 1,
            name: heapless::String::try_from("peer_lost").unwrap(),
            peer: ha_proto::msg::Serial::new("SN-A"),
            detail: heapless::String::try_from("all links\ndown").unwrap(),
        };
        assert_eq!(
            controller_line(&ev),
            "<4>ha-daemon: event peer_lost seq=7 peer=SN-A all links down"
        );
        ev.name = heapless::String::try_from("role_changed").unwrap();
        assert!(controller_line(&ev).starts_with("<5>"));
        ev.name = heapless::String::try_from("quality_changed").unwrap();
        assert!(controller_line(&ev).starts_with("<6>"));
        let local = ha_mgmt_api::Event {
            time_ms: 0,
            kind: ha_mgmt_api::EventKind::KeyRotation,
            member: None,
            detail: "saved".into(),
            seq: None,
        };
        assert_eq!(
            local_line(&local),
            "<5>ha-daemon: event key_rotation member=- saved"
        );
    }
}
