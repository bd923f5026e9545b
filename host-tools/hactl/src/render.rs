//! Human-readable rendering of the management API's replies (the `--json` forms print the
//! replies themselves).

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ha_mgmt_api::{
    BannerLevel, ClusterInfo, DiffReport, Event, FileStatus, Forced, ForwardingReport, LinkStatus,
    Mode, ModeReport, Progress, Reply, RotateReport, SyncReport, SyncState, SynctestReport,
};
use serde::Serialize;

/// The snake_case name serde gives a unit enum value (the same words as the JSON output).
pub fn word<T: Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

/// A configuration revision as the status table shows it: its first 8 hex digits (the whole
/// revision is in `--json` and in `hactl reload`'s answer).
pub fn revision_short(r: u64) -> String {
    format!("{:08x}", r >> 32)
}

/// `hactl reload`: the revision now running and what changed.
pub fn reloaded(r: &ha_mgmt_api::ReloadReport) -> String {
    let mut s = String::new();
    if r.changes.is_empty() {
        let _ = writeln!(
            s,
            "reloaded: nothing changed, revision {:016x} runs already",
            r.revision
        );
    } else {
        let _ = writeln!(
            s,
            "reloaded: revision {:016x} (was {:016x}), applied in place without a swap:",
            r.revision, r.previous_revision
        );
        for c in &r.changes {
            let _ = writeln!(s, "  {c}");
        }
    }
    if !r.pending_restart.is_empty() {
        let _ = writeln!(
            s,
            "changed in the daemon's configuration, applied when the daemon restarts: {}",
            r.pending_restart.join(", ")
        );
    }
    s
}

/// `hactl info`: the banner, then one row per member (SPEC E1); `verbose` adds counters.
pub fn info(i: &ClusterInfo, verbose: bool) -> String {
    let mut s = String::new();
    let level = match i.banner {
        BannerLevel::Ok => "OK",
        BannerLevel::Warning => "WARNING",
        BannerLevel::Critical => "CRITICAL",
    };
    let _ = writeln!(s, "[{level}] {}", i.banner_text);
    let _ = writeln!(s, "cluster {} — answered by {}", i.cluster_id, i.me);
    let _ = writeln!(
        s,
        "{:<16} {:<9} {:<7} {:>7} {:>4} {:<9} {:<22} {:>8} {:<16} MODE SINCE",
        "SERIAL", "MODE", "FORCED", "QUALITY", "PRIO", "FIRMWARE", "LINKS", "REVISION", "CONFIG"
    );
    for m in &i.members {
        let links: Vec<String> = m
            .links
            .iter()
            .map(|l| {
                let st = match l.state {
                    LinkStatus::Up => "up",
                    LinkStatus::Down => "DOWN",
                    LinkStatus::NotConfigured => "-",
                };
                format!("{}:{st}", l.name)
            })
            .collect();
        let marker = if m.serial == i.me { "*" } else { " " };
        let _ = writeln!(
            s,
            "{:<16} {:<9} {:<7} {:>7} {:>4} {:<9} {:<22} {:>8} {:<16} {}",
            format!("{}{marker}", m.serial),
            mode_word(m.mode),
            forced_word(m.forced),
            m.quality,
            m.priority,
            m.firmware,
            links.join(" "),
            revision_short(m.config_revision),
            sync_word(m.config_sync.state),
            since_s(m.mode_since)
        );
        if let Some(d) = &m.config_sync.detail {
            let _ = writeln!(s, "    config sync: {d}");
        }
        // Several domains (load sharing): the member's mode and priority in each; MODE and
        // PRIO above are its first domain's.
        if m.domains.len() > 1 {
            let each: Vec<String> = m
                .domains
                .iter()
                .map(|d| format!("{} {} (prio {})", d.domain, word(&d.mode), d.priority))
                .collect();
            let _ = writeln!(s, "    domains: {}", each.join(", "));
        }
        if verbose {
            if let Some(c) = &m.counters {
                let list: Vec<String> = c.iter().map(|(k, v)| format!("{k}={v}")).collect();
                let _ = writeln!(s, "    counters: {}", list.join(" "));
            }
            let _ = writeln!(
                s,
                "    model {} booted {} last sync {}",
                m.model,
                since_s(m.boot_time),
                m.config_sync
                    .last_sync
                    .map(since_s)
                    .unwrap_or_else(|| "never".into())
            );
        }
    }
    s
}

fn mode_word(m: Mode) -> String {
    word(&m).to_uppercase()
}

fn forced_word(f: Forced) -> &'static str {
    match f {
        Forced::None => "-",
        Forced::Active => "active",
        Forced::Passive => "passive",
    }
}

fn sync_word(s: SyncState) -> String {
    word(&s)
}

/// `hactl mode` and the forcing commands.
pub fn mode(m: &ModeReport) -> String {
    format!(
        "{} {} (forced: {}){} since {}\n",
        m.serial,
        mode_word(m.mode),
        forced_word(m.forced),
        if m.paused { ", decisions paused" } else { "" },
        since_s(m.since)
    )
}

/// A moment given in Unix milliseconds as an operator reads it: `2026-11-30 17:31:59.071 UTC`
/// (`-` for 0, which the API uses for "unknown"). Epoch numbers stay in `--json`.
pub fn date_ms(unix_ms: u64) -> String {
    if unix_ms == 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC")
}

/// A moment given in Unix seconds, with how long ago it was:
/// `2026-11-30 17:31:59 UTC (4 min 05 s ago)`; `-` for 0 ("unknown").
pub fn since_s(unix_s: u64) -> String {
    since_s_at(unix_s, SystemTime::now())
}

/// [`since_s`] as seen at `now` (a clock behind the reporter's gives `in ...`).
pub fn since_s_at(unix_s: u64, now: SystemTime) -> String {
    if unix_s == 0 {
        return "-".into();
    }
    let t = UNIX_EPOCH + Duration::from_secs(unix_s);
    let date = humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .replace('Z', " UTC");
    match now.duration_since(t) {
        Ok(d) => format!("{date} ({} ago)", duration_ms(d.as_millis() as u64)),
        Err(e) => format!(
            "{date} (in {})",
            duration_ms(e.duration().as_millis() as u64)
        ),
    }
}

/// A duration as an operator reads it: `850 ms`, `12.3 s`, `4 min 05 s`, `2 h 03 min`,
/// `3 d 04 h`.
pub fn duration_ms(ms: u64) -> String {
    let s = ms / 1000;
    match ms {
        0..=999 => format!("{ms} ms"),
        1_000..=59_999 => format!("{}.{} s", s, (ms % 1000) / 100),
        60_000..=3_599_999 => format!("{} min {:02} s", s / 60, s % 60),
        3_600_000..=86_399_999 => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {:02} h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// `hactl forwarding`: the role the data path applies, and for how long.
pub fn forwarding(f: &ForwardingReport) -> String {
    // Load sharing: the domains it forwards for when more than one.
    let role = match (f.active, f.domains.as_slice()) {
        (false, _) => "passive".to_string(),
        (true, ds) if ds.len() > 1 => format!(
            "active for domains {}",
            ds.iter().map(u8::to_string).collect::<Vec<_>>().join(", ")
        ),
        (true, _) => "active".to_string(),
    };
    let for_ = duration_ms(f.now_ms.saturating_sub(f.since_ms));
    let up = duration_ms(f.now_ms.saturating_sub(f.started_ms));
    let controller = if f.controller_alive {
        "heard"
    } else {
        "silent (the data path stays passive)"
    };
    let table = f
        .table_connections
        .map_or_else(String::new, |n| format!("; synced table: {n} connections"));
    let peers = f
        .peer_table
        .as_ref()
        .map_or_else(String::new, |p| format!("; peers' table: {p}"));
    format!(
        "{} forwarding: {role} for {for_} ({} role changes since the daemon started {up} ago); controller: {controller}{table}{peers}\n",
        f.serial, f.changes
    )
}

/// One line of `hactl events`.
pub fn event(e: &Event) -> String {
    format!(
        "{} {:<16} {:<16} {}\n",
        date_ms(e.time_ms),
        word(&e.kind),
        e.member.as_deref().unwrap_or("-"),
        e.detail
    )
}

/// The lines of `hactl events`, with the controller's events it did not receive shown where
/// their sequence numbers jump (its ring overwrote them before the daemon fetched them, or
/// the host link lost them). A number that goes back is a controller that restarted, not a
/// gap.
#[derive(Debug, Default)]
pub struct EventLines {
    last_seq: std::cell::Cell<Option<u32>>,
}

impl EventLines {
    /// The line(s) of `e`: a gap line first when events are missing before it.
    pub fn line(&self, e: &Event) -> String {
        let mut out = String::new();
        if let Some(seq) = e.seq {
            if let Some(last) = self.last_seq.get() {
                if seq > last.saturating_add(1) {
                    let missed = seq - last - 1;
                    let which = if missed == 1 {
                        format!("#{}", last + 1)
                    } else {
                        format!("#{}–#{}", last + 1, seq - 1)
                    };
                    out.push_str(&format!(
                        "{} {:<16} {:<16} {missed} controller event{} not received ({which})\n",
                        date_ms(e.time_ms),
                        "gap",
                        "-",
                        if missed == 1 { "" } else { "s" }
                    ));
                }
            }
            self.last_seq.set(Some(seq));
        }
        out.push_str(&event(e));
        out
    }
}

/// `hactl psk rotate` / `psk status`.
pub fn rotate(r: &RotateReport) -> String {
    let mut s = format!("rotation {}: sealing key id {}", r.phase, r.sealing_key_id);
    if let Some(p) = r.previous_key_id {
        let _ = write!(s, ", key id {p} still accepted");
    }
    let _ = writeln!(s);
    if !r.confirmed.is_empty() {
        let _ = writeln!(s, "  confirmed: {}", r.confirmed.join(", "));
    }
    if !r.pending.is_empty() {
        let _ = writeln!(s, "  pending:   {}", r.pending.join(", "));
    }
    s
}

/// One progress line of a sync or update.
pub fn progress(p: &Progress) -> String {
    format!(
        "{} {}: {}/{} files, {}/{} bytes\n",
        p.peer, p.phase, p.done_files, p.total_files, p.done_bytes, p.total_bytes
    )
}

/// `hactl sync`.
pub fn sync(r: &SyncReport) -> String {
    format!(
        "{} now runs revision {}: {} of {} files sent ({} bytes) in {}\n",
        r.peer,
        r.revision,
        r.files_sent,
        r.files_total,
        r.bytes_sent,
        duration_ms(r.elapsed_ms)
    )
}

/// `hactl diff`.
pub fn diff(d: &DiffReport) -> String {
    let mut s = format!(
        "{} vs {}: {}\n",
        d.path,
        d.peer,
        match d.status {
            FileStatus::Same => "same",
            FileStatus::Differs => "differs",
            FileStatus::OnlyLocal => "only on this member",
            FileStatus::OnlyPeer => "only on the peer",
        }
    );
    if let Some(t) = &d.diff {
        s.push_str(t);
        if !t.ends_with('\n') {
            s.push('\n');
        }
    }
    s
}

/// `hactl synctest`.
pub fn synctest(r: &SynctestReport) -> String {
    let mut s = format!("published revision {}\n", r.revision);
    if !r.local_changes.is_empty() {
        let _ = writeln!(s, "local unpublished changes:");
        for p in &r.local_changes {
            let _ = writeln!(s, "  {p}");
        }
    }
    for p in &r.peers {
        let _ = writeln!(
            s,
            "{}: {} (revision {}), {} unsynchronized",
            p.peer,
            word(&p.state),
            p.revision,
            p.unsynchronized.len()
        );
        for f in &p.unsynchronized {
            let _ = writeln!(s, "  {f}");
        }
    }
    s
}

/// Fills the per-peer configuration-sync column of `info` (SPEC D4) from the configuration-sync
/// service's synctest answer, and raises the banner when a peer has a sync problem: warning
/// for a sync problem or no communication, critical for a collision (two members published
/// independently). When the service did not answer, the daemon's column stays and says why.
pub fn merge_sync(info: &mut ClusterInfo, sync: Result<Reply, String>) {
    let report = match sync {
        Ok(Reply::Synctest(r)) => r,
        Ok(_) => {
            note_unavailable(
                info,
                "the configuration-sync service answered another reply",
            );
            return;
        }
        Err(e) => {
            note_unavailable(info, &format!("configuration-sync service: {e}"));
            return;
        }
    };
    let me = info.me.clone();
    let mut worst: Option<(BannerLevel, String)> = None;
    for m in &mut info.members {
        if m.serial == me {
            m.config_sync.state = if report.local_changes.is_empty() {
                SyncState::Source
            } else {
                SyncState::LocalChanges
            };
            m.config_sync.detail = (!report.local_changes.is_empty())
                .then(|| format!("{} unpublished local change(s)", report.local_changes.len()));
            continue;
        }
        let Some(p) = report.peers.iter().find(|p| p.peer == m.serial) else {
            continue;
        };
        m.config_sync.state = p.state;
        m.config_sync.last_sync = p.last_sync;
        m.config_sync.detail = p.detail.clone();
        let level = match p.state {
            SyncState::Collision => Some(BannerLevel::Critical),
            SyncState::SyncProblem | SyncState::NoCommunication | SyncState::LocalChanges => {
                Some(BannerLevel::Warning)
            }
            SyncState::Synchronized | SyncState::Source => None,
        };
        if let Some(level) = level {
            let text = format!("configuration of {}: {}", p.peer, word(&p.state));
            if worst.as_ref().is_none_or(|(w, _)| rank(level) > rank(*w)) {
                worst = Some((level, text));
            }
        }
    }
    if let Some((level, text)) = worst {
        if rank(level) > rank(info.banner) {
            info.banner = level;
        }
        info.banner_text = if info.banner_text.is_empty() {
            text
        } else {
            format!("{}; {text}", info.banner_text)
        };
    }
}

fn rank(b: BannerLevel) -> u8 {
    match b {
        BannerLevel::Ok => 0,
        BannerLevel::Warning => 1,
        BannerLevel::Critical => 2,
    }
}

fn note_unavailable(info: &mut ClusterInfo, why: &str) {
    let me = info.me.clone();
    if let Some(m) = info.members.iter_mut().find(|m| m.serial == me) {
        m.config_sync.detail = Some(why.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_in_the_controllers_event_numbers_is_shown_a_restart_is_not() {
        let ev = |seq: Option<u32>| Event {
            time_ms: 1_796_119_910_888,
            kind: ha_mgmt_api::EventKind::LinkDown,
            member: Some("SN-A".into()),
            detail: "main link to SN-A down".into(),
            seq,
        };
        let lines = EventLines::default();
        let first = lines.line(&ev(Some(4)));
        assert_eq!(first.lines().count(), 1, "{first}");
        assert_eq!(lines.line(&ev(Some(5))).lines().count(), 1, "no gap");
        // A local event (no number) between them changes nothing.
        assert_eq!(lines.line(&ev(None)).lines().count(), 1);
        let one = lines.line(&ev(Some(7)));
        assert!(
            one.contains(" 1 controller event not received (#6)\n"),
            "{one}"
        );
        assert!(one
            .lines()
            .nth(1)
            .unwrap()
            .contains("main link to SN-A down"));
        let many = lines.line(&ev(Some(11)));
        assert!(
            many.contains("3 controller events not received (#8–#10)"),
            "{many}"
        );
        // The controller restarted: numbers start again, not a gap.
        assert_eq!(lines.line(&ev(Some(1))).lines().count(), 1);
        assert_eq!(lines.line(&ev(Some(2))).lines().count(), 1);
    }

    #[test]
    fn durations_read_as_an_operator_expects() {
        assert_eq!(duration_ms(0), "0 ms");
        assert_eq!(duration_ms(999), "999 ms");
        assert_eq!(duration_ms(12_345), "12.3 s");
        assert_eq!(duration_ms(245_000), "4 min 05 s");
        assert_eq!(duration_ms(7_380_000), "2 h 03 min");
        assert_eq!(duration_ms(3 * 86_400_000 + 4 * 3_600_000), "3 d 04 h");
        assert_eq!(duration_ms(u64::MAX).split(' ').nth(1), Some("d"));
    }

    #[test]
    fn forwarding_says_role_age_and_controller() {
        let f = ForwardingReport {
            serial: "SN-A".into(),
            active: false,
            domains: Vec::new(),
            since_ms: 10_000,
            changes: 3,
            started_ms: 1_000,
            now_ms: 12_500,
            controller_alive: false,
            table_connections: None,
            peer_table: None,
        };
        assert_eq!(
            forwarding(&f),
            "SN-A forwarding: passive for 2.5 s (3 role changes since the daemon started 11.5 s ago); controller: silent (the data path stays passive)\n"
        );
        let shared = ForwardingReport {
            active: true,
            domains: vec![0, 1],
            controller_alive: true,
            ..f.clone()
        };
        assert!(
            forwarding(&shared).starts_with("SN-A forwarding: active for domains 0, 1 for 2.5 s"),
            "{}",
            forwarding(&shared)
        );
        // What the daemon told its controller of the peers' table.
        let waiting = ForwardingReport {
            table_connections: Some(120),
            peer_table: Some("not held (receiving the peer's table)".into()),
            ..f
        };
        assert!(
            forwarding(&waiting).ends_with(
                "; synced table: 120 connections; peers' table: not held (receiving the peer's table)\n"
            ),
            "{}",
            forwarding(&waiting)
        );
    }

    #[test]
    fn moments_are_dates_and_ages_not_epoch_numbers() {
        // 2026-11-30 17:31:59 UTC.
        let t = 1_796_059_919;
        let now = UNIX_EPOCH + Duration::from_secs(t + 245);
        assert_eq!(
            since_s_at(t, now),
            "2026-11-30 17:31:59 UTC (4 min 05 s ago)"
        );
        let before = UNIX_EPOCH + Duration::from_secs(t - 2);
        assert_eq!(since_s_at(t, before), "2026-11-30 17:31:59 UTC (in 2.0 s)");
        assert_eq!(since_s_at(0, now), "-");
        assert_eq!(date_ms(t * 1000 + 71), "2026-11-30 17:31:59.071 UTC");
        assert_eq!(date_ms(0), "-");
    }
}
