//! HA events (SPEC E3): a bounded ring of timestamped, typed events; overflow is counted.

use ha_proto::msg::host::{EventReport, EVENT_DETAIL_LEN};
use ha_proto::msg::{FirmwareVersion, Forced, Role, Serial};
use ha_proto::text::{fmt_words, TextOut, Truncating, Words};
use heapless::{Deque, String};

use crate::link::LinkId;

/// Events kept in the ring: the last few minutes of a busy cluster; older ones are dropped
/// (and counted) once the shell has had them as [`crate::Output::Event`].
pub const EVENT_CAP: usize = 32;

/// Why a role changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The startup window ended or every peer was heard.
    Startup,
    /// This member is the best candidate and no one was active.
    Elected,
    /// The active peer was lost on every link and the probe confirmed it.
    PeerLost,
    /// A better member was better for the whole hold-down.
    Better,
    /// A better member became active (handover).
    Handover,
    /// Two actives: this side lost the collision (SPEC B4).
    Collision,
    /// Administrative forcing.
    Forced,
    /// The main CPU fell silent (out of the election) or was heard again.
    MainCpu,
}

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventKind {
    /// This member's role in a domain changed.
    RoleChanged {
        /// Domain.
        domain: u8,
        /// Previous role.
        from: Role,
        /// New role.
        to: Role,
        /// Why.
        reason: Reason,
    },
    /// A peer was heard for the first time, or again after being lost.
    PeerFound {
        /// The peer.
        peer: Serial,
    },
    /// A peer rebooted (its boot epoch increased).
    PeerRestarted {
        /// The peer.
        peer: Serial,
    },
    /// Every HA link to a peer went silent; a probe over the data interfaces was requested.
    AllLinksDown {
        /// The peer.
        peer: Serial,
    },
    /// The probe says the silent peer is alive: the HA links are broken, the peer is not.
    /// No takeover; repair the HA links.
    PeerUnreachable {
        /// The peer.
        peer: Serial,
    },
    /// A peer was declared lost (probe said dead, or no probe answer in time).
    PeerLost {
        /// The peer.
        peer: Serial,
        /// True when the probe confirmed it; false when it timed out (possible split brain).
        confirmed: bool,
    },
    /// One HA link to a peer went down.
    LinkDown {
        /// The peer.
        peer: Serial,
        /// The link.
        link: LinkId,
    },
    /// One HA link to a peer came (back) up.
    LinkUp {
        /// The peer.
        peer: Serial,
        /// The link.
        link: LinkId,
    },
    /// This member's quality factor changed.
    QualityChanged {
        /// Old value.
        from: u8,
        /// New value.
        to: u8,
    },
    /// Two actives in a domain (SPEC B4).
    Collision {
        /// Domain.
        domain: u8,
        /// The other active.
        peer: Serial,
        /// True when this member stays active.
        won: bool,
    },
    /// A peer asked this member (the active) for a resynchronization.
    ResyncRequested {
        /// Domain.
        domain: u8,
        /// Who asked.
        by: Serial,
    },
    /// HA decisions are paused until this time (SPEC B5).
    Paused {
        /// End of the pause (agent clock, ms).
        until_ms: u64,
    },
    /// HA decisions resumed.
    Resumed,
    /// Administrative forcing of this member changed.
    ForcingChanged {
        /// New forcing.
        forced: Forced,
    },
    /// A peer runs another firmware version: fail-soft mode (SPEC A5).
    VersionMismatch {
        /// The peer.
        peer: Serial,
        /// Its version.
        theirs: FirmwareVersion,
    },
    /// A peer runs another configuration revision.
    ConfigMismatch {
        /// The peer.
        peer: Serial,
        /// Its revision.
        theirs: u64,
    },
    /// The operator asked (on another member, `AdminCommand::Reload`) to reload the HA
    /// settings: the main CPU re-reads its block and sends them ([`HostMsg::Settings`](ha_proto::msg::host::HostMsg::Settings)).
    ReloadRequested,
    /// New HA settings were applied in place, without a swap (`hactl reload`).
    SettingsReloaded {
        /// The revision now running.
        revision: u64,
        /// What changed.
        changed: crate::config::SettingsChanges,
    },
    /// New HA settings were refused; the running ones stay.
    SettingsRefused {
        /// Why.
        reason: crate::config::ConfigError,
    },
    /// The member list changed (a member removed or joined, `HostMsg::Members`).
    MembersChanged {
        /// Members now, this one included.
        members: u8,
    },
    /// A new member list was refused (this member missing, a duplicate, too many); the
    /// list in use did not change.
    MembersRefused,
    /// The sensor source reported nothing for the configured sensor timeout: every hardware
    /// component counts as failed (hardware part 0) until it reports again.
    SensorsSilent {
        /// Its last report (agent clock, ms; the boot time if it never reported).
        last_ms: u64,
    },
    /// The silent sensor source reports again: its readings count from now on.
    SensorsBack,
    /// The main CPU sent nothing for the main-CPU timeout: this member forwards nothing, so
    /// it leaves the election (disabled in every domain) until the main CPU is heard again.
    MainCpuLost {
        /// When it was last heard (agent clock, ms).
        last_ms: u64,
    },
    /// The main CPU is heard again: this member rejoins the election.
    MainCpuBack,
}

/// A timestamped event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// Position in this agent's event sequence (from 0 at boot): a gap seen by the main CPU
    /// means events were lost on the way.
    pub seq: u32,
    /// Agent clock, ms.
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
}

/// The event ring.
#[derive(Clone, Debug, Default)]
pub struct EventRing {
    ring: Deque<Event, EVENT_CAP>,
    overflow: u32,
}

impl EventRing {
    /// Appends an event, dropping (and counting) the oldest when full.
    pub fn push(&mut self, e: Event) {
        if self.ring.is_full() {
            self.ring.pop_front();
            self.overflow = self.overflow.saturating_add(1);
        }
        // Room was made above.
        let _ = self.ring.push_back(e);
    }

    /// Events from oldest to newest.
    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.ring.iter()
    }

    /// Number of events held.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// True when no event is held.
    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// Events dropped because the ring was full.
    pub fn overflow(&self) -> u32 {
        self.overflow
    }
}

impl EventKind {
    /// Short stable machine-readable name (logs, `hactl events --json`).
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::RoleChanged { .. } => "role_changed",
            EventKind::PeerFound { .. } => "peer_found",
            EventKind::PeerRestarted { .. } => "peer_restarted",
            EventKind::AllLinksDown { .. } => "all_links_down",
            EventKind::PeerUnreachable { .. } => "peer_unreachable",
            EventKind::PeerLost { .. } => "peer_lost",
            EventKind::LinkDown { .. } => "link_down",
            EventKind::LinkUp { .. } => "link_up",
            EventKind::QualityChanged { .. } => "quality_changed",
            EventKind::Collision { .. } => "collision",
            EventKind::ResyncRequested { .. } => "resync_requested",
            EventKind::Paused { .. } => "paused",
            EventKind::Resumed => "resumed",
            EventKind::ForcingChanged { .. } => "forcing_changed",
            EventKind::VersionMismatch { .. } => "version_mismatch",
            EventKind::ConfigMismatch { .. } => "config_mismatch",
            EventKind::ReloadRequested => "reload_requested",
            EventKind::SettingsReloaded { .. } => "settings_reloaded",
            EventKind::SettingsRefused { .. } => "settings_refused",
            EventKind::MembersChanged { .. } => "members_changed",
            EventKind::MembersRefused => "members_refused",
            EventKind::SensorsSilent { .. } => "sensors_silent",
            EventKind::SensorsBack => "sensors_back",
            EventKind::MainCpuLost { .. } => "main_cpu_lost",
            EventKind::MainCpuBack => "main_cpu_back",
        }
    }

    /// The peer the event is about, if any.
    pub fn peer(&self) -> Option<Serial> {
        match *self {
            EventKind::PeerFound { peer }
            | EventKind::PeerRestarted { peer }
            | EventKind::AllLinksDown { peer }
            | EventKind::PeerUnreachable { peer }
            | EventKind::PeerLost { peer, .. }
            | EventKind::LinkDown { peer, .. }
            | EventKind::LinkUp { peer, .. }
            | EventKind::Collision { peer, .. }
            | EventKind::VersionMismatch { peer, .. }
            | EventKind::ConfigMismatch { peer, .. } => Some(peer),
            EventKind::ResyncRequested { by, .. } => Some(by),
            _ => None,
        }
    }
}

fn role_word(r: Role) -> &'static str {
    match r {
        Role::Starting => "starting",
        Role::Active => "active",
        Role::Passive => "passive",
        Role::Disabled => "disabled",
    }
}

fn reason_words(r: Reason) -> &'static str {
    match r {
        Reason::Startup => "startup",
        Reason::Elected => "elected",
        Reason::PeerLost => "peer lost",
        Reason::Better => "a better member",
        Reason::Handover => "handover",
        Reason::Collision => "collision",
        Reason::Forced => "forced",
        Reason::MainCpu => "main CPU",
    }
}

fn link_word(l: LinkId) -> &'static str {
    if l == LinkId::BACKUP {
        "backup"
    } else {
        "main"
    }
}

/// Seconds with one decimal of a time in ms (`12.3 s`); durations past 49 days read as
/// 4294967.2 s.
fn secs(out: &mut dyn TextOut, ms: u64) {
    let ms = u32::try_from(ms).unwrap_or(u32::MAX);
    out.dec(ms / 1000);
    out.text(".");
    out.dec((ms % 1000) / 100);
    out.text(" s");
}

/// The event as an operator reads it (the event log's detail): what happened, in words.
impl Words for Event {
    fn words(&self, out: &mut dyn TextOut) {
        let domain = |out: &mut dyn TextOut, d: u8| {
            out.text("domain ");
            out.dec(d.into());
            out.text(": ");
        };
        match self.kind {
            EventKind::RoleChanged {
                domain: d,
                from,
                to,
                reason,
            } => {
                domain(out, d);
                out.text(role_word(from));
                out.text(" -> ");
                out.text(role_word(to));
                out.text(" (");
                out.text(reason_words(reason));
                out.text(")");
            }
            EventKind::PeerFound { peer } => {
                out.text(peer.as_str());
                out.text(" found");
            }
            EventKind::PeerRestarted { peer } => {
                out.text(peer.as_str());
                out.text(" restarted");
            }
            EventKind::AllLinksDown { peer } => {
                out.text("every HA link to ");
                out.text(peer.as_str());
                out.text(" down");
            }
            EventKind::PeerUnreachable { peer } => {
                out.text(peer.as_str());
                out.text(" unreachable: HA links down but the liveness probe found it alive");
            }
            EventKind::PeerLost { peer, confirmed } => {
                out.text(peer.as_str());
                out.text(if confirmed {
                    " lost (the liveness probe found it dead)"
                } else {
                    " lost (no liveness probe answered)"
                });
            }
            EventKind::LinkDown { peer, link } | EventKind::LinkUp { peer, link } => {
                out.text(link_word(link));
                out.text(" link to ");
                out.text(peer.as_str());
                out.text(if matches!(self.kind, EventKind::LinkUp { .. }) {
                    " up"
                } else {
                    " down"
                });
            }
            EventKind::QualityChanged { from, to } => {
                out.text("quality ");
                out.dec(from.into());
                out.text(" -> ");
                out.dec(to.into());
            }
            EventKind::Collision {
                domain: d,
                peer,
                won,
            } => {
                domain(out, d);
                out.text(peer.as_str());
                out.text(" active at once, this member ");
                out.text(if won { "kept" } else { "gave up" });
                out.text(" the role");
            }
            EventKind::ResyncRequested { domain: d, by } => {
                domain(out, d);
                out.text(by.as_str());
                out.text(" asked for a resync");
            }
            EventKind::Paused { until_ms } => {
                out.text("decisions paused for ");
                secs(out, until_ms.saturating_sub(self.at_ms));
            }
            EventKind::Resumed => out.text("decisions resumed"),
            EventKind::ForcingChanged { forced } => out.text(match forced {
                Forced::None => "forcing removed: the election decides",
                Forced::Active => "forced active",
                Forced::Passive => "forced passive",
            }),
            EventKind::VersionMismatch { peer, theirs } => {
                out.text(peer.as_str());
                out.text(" runs firmware ");
                out.dec(theirs.major.into());
                out.text(".");
                out.dec(theirs.minor.into());
                out.text(".");
                out.dec(theirs.patch.into());
            }
            EventKind::ConfigMismatch { peer, theirs } => {
                out.text(peer.as_str());
                out.text(" runs configuration revision ");
                out.hex16(theirs);
            }
            EventKind::ReloadRequested => out.text("reload requested"),
            EventKind::SettingsReloaded { revision, changed } => {
                out.text("settings reloaded, revision ");
                out.hex16(revision);
                out.text(": ");
                changed.words(out);
            }
            EventKind::SettingsRefused { reason } => {
                out.text("settings refused: ");
                reason.words(out);
            }
            EventKind::MembersChanged { members } => {
                out.dec(members.into());
                out.text(" members now");
            }
            EventKind::MembersRefused => out.text("new member list refused"),
            EventKind::SensorsSilent { last_ms } => {
                out.text("sensors silent for ");
                secs(out, self.at_ms.saturating_sub(last_ms));
            }
            EventKind::SensorsBack => out.text("sensors heard again"),
            EventKind::MainCpuLost { last_ms } => {
                out.text("main CPU silent for ");
                secs(out, self.at_ms.saturating_sub(last_ms));
            }
            EventKind::MainCpuBack => out.text("main CPU heard again"),
        }
    }
}

impl core::fmt::Display for Event {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        fmt_words(self, f)
    }
}

impl Event {
    /// The event as sent to the main CPU on the host link.
    pub fn report(&self) -> EventReport {
        let mut detail: String<EVENT_DETAIL_LEN> = String::new();
        self.words(&mut Truncating(&mut detail));
        let mut name = String::new();
        Truncating(&mut name).text(self.kind.name());
        EventReport {
            seq: self.seq,
            at_ms: self.at_ms,
            name,
            peer: self.kind.peer(),
            detail,
        }
    }
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::*;

    #[test]
    fn overflow_is_counted_and_oldest_dropped() {
        let mut r = EventRing::default();
        for t in 0..EVENT_CAP as u64 + 5 {
            r.push(Event {
                seq: t as u32,
                at_ms: t,
                kind: EventKind::Resumed,
            });
        }
        assert_eq!(r.len(), EVENT_CAP);
        assert_eq!(r.overflow(), 5);
        assert_eq!(r.iter().next().unwrap().at_ms, 5);
    }

    #[test]
    fn details_are_words_not_debug_output() {
        let b = Serial::new("SN-B").unwrap();
        let ev = |at_ms, kind| Event {
            seq: 3,
            at_ms,
            kind,
        };
        let d = |e: Event| e.report().detail;
        assert_eq!(
            d(ev(
                0,
                EventKind::RoleChanged {
                    domain: 0,
                    from: Role::Passive,
                    to: Role::Active,
                    reason: Reason::PeerLost
                }
            )),
            "domain 0: passive -> active (peer lost)"
        );
        assert_eq!(
            d(ev(
                0,
                EventKind::LinkDown {
                    peer: b,
                    link: LinkId::BACKUP
                }
            )),
            "backup link to SN-B down"
        );
        assert_eq!(
            d(ev(1_000, EventKind::Paused { until_ms: 31_000 })),
            "decisions paused for 30.0 s"
        );
        assert!(d(ev(
            0,
            EventKind::PeerLost {
                peer: b,
                confirmed: true
            }
        ))
        .starts_with("SN-B lost"));
        assert!(d(ev(0, EventKind::PeerUnreachable { peer: b })).contains("unreachable"));
    }

    #[test]
    fn every_sentence_reads_as_before_it_left_core_fmt() {
        // The texts `write!` produced before the sentences were written without core::fmt
        // (docs/firmware.md "Size"), and `Display` gives the same.
        let b = Serial::new("SN-B").unwrap();
        let ev = |at_ms, kind| Event {
            seq: 3,
            at_ms,
            kind,
        };
        let cases = [
            (
                ev(
                    0,
                    EventKind::LinkUp {
                        peer: b,
                        link: LinkId::MAIN,
                    },
                ),
                "main link to SN-B up",
            ),
            (
                ev(0, EventKind::QualityChanged { from: 100, to: 7 }),
                "quality 100 -> 7",
            ),
            (
                ev(
                    0,
                    EventKind::Collision {
                        domain: 3,
                        peer: b,
                        won: false,
                    },
                ),
                "domain 3: SN-B active at once, this member gave up the role",
            ),
            (
                ev(
                    0,
                    EventKind::VersionMismatch {
                        peer: b,
                        theirs: FirmwareVersion {
                            major: 1,
                            minor: 20,
                            patch: 300,
                        },
                    },
                ),
                "SN-B runs firmware 1.20.300",
            ),
            (
                ev(
                    0,
                    EventKind::ConfigMismatch {
                        peer: b,
                        theirs: 0xbeef,
                    },
                ),
                "SN-B runs configuration revision 000000000000beef",
            ),
            (
                ev(
                    0,
                    EventKind::SettingsReloaded {
                        revision: u64::MAX,
                        changed: crate::config::SettingsChanges(
                            crate::config::SettingsChanges::TIMERS
                                | crate::config::SettingsChanges::MEMBERS,
                        ),
                    },
                ),
                "settings reloaded, revision ffffffffffffffff: timers, members",
            ),
            (
                ev(
                    0,
                    EventKind::SettingsRefused {
                        reason: crate::config::ConfigError::WeakKey(
                            ha_proto::keys::WeakKey::Unbalanced(3),
                        ),
                    },
                ),
                "settings refused: cluster key refused: weak key: 3 of 256 bits set \
                 (random keys have 128 ± 8; 64–192 accepted)",
            ),
            (
                ev(
                    0,
                    EventKind::SettingsRefused {
                        reason: crate::config::ConfigError::BadInterval(3),
                    },
                ),
                "settings refused: heartbeat interval 3 ms outside 5..=10000 ms",
            ),
            (
                ev(0, EventKind::MembersChanged { members: 4 }),
                "4 members now",
            ),
            (
                ev(12_345, EventKind::SensorsSilent { last_ms: 0 }),
                "sensors silent for 12.3 s",
            ),
            (
                ev(u64::MAX, EventKind::MainCpuLost { last_ms: 0 }),
                "main CPU silent for 4294967.2 s",
            ),
        ];
        for (e, want) in cases {
            assert_eq!(std::format!("{e}"), want);
            // The detail on the host link keeps what fits.
            let fits: std::string::String = want
                .chars()
                .scan(0, |len, c| {
                    *len += c.len_utf8();
                    (*len <= EVENT_DETAIL_LEN).then_some(c)
                })
                .collect();
            assert_eq!(e.report().detail.as_str(), fits);
        }
    }
}
