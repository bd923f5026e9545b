//! The peer table: liveness per link and per peer, the probe before a takeover, what each
//! peer's heartbeat announces, and the bound on a peer's pause.
//!
//! - Each accepted frame from a peer marks the link it came on up. A link is down after
//!   `miss_limit` of its heartbeat intervals of silence: the profile's on the main link, at
//!   least [`BACKUP_MIN_INTERVAL_MS`] on the serial backup link, which cannot carry the fast
//!   profiles' heartbeats ([`Timers::link_dead_ms`]). One link down is only an event.
//! - A peer silent on every link for `suspect_ms` (before the dead time ends) is probed: the
//!   main CPU is asked to probe it over the data interfaces ([`Pending::Probe`]), so that
//!   the answer is there when the links go down. A frame heard cancels the suspicion. With
//!   its main link down the wait is longer by the backup link's sparser heartbeats
//!   ([`suspect_after`]). When that probe found it dead and every link has been silent for
//!   the profile's dead time, it is lost without waiting for the backup link's longer one:
//!   the per-link dead time costs a crash's takeover nothing.
//! - A peer whose links are all down is *suspect*: its probe's answer (asked on suspicion, or
//!   now) is awaited `probe_timeout_ms` from the request, then asked for again (a stalled
//!   host link drops frames both ways). "Dead": the peer is lost and leaves the election. No
//!   answer counts as "dead" only after the main CPU's own silence bound
//!   (`main_cpu_timeout_ms`, when watched): a late answer is not a death, and a main CPU
//!   silent that long takes this member out of the election anyway. The soak under two busy
//!   loops found takeovers of a live peer every few seconds with the 5 ms profile, each on
//!   a probe whose answer came after its timeout.
//!   "Alive": the HA links are broken but the peer is not; it stays in the election with its
//!   last known state and is probed again every `reprobe_ms`.
//! - A peer's pause is ignored once it has lasted [`MAX_PAUSE_MS`].
//! - This member's own heartbeats are scheduled here too: one per interval on every link.

use ha_proto::msg::host::PROBE_REQUEST_PEER_BITS;
use ha_proto::msg::member::Heartbeat;
use ha_proto::msg::{Forced, LinkState, Serial, MAX_HA_LINKS};
use heapless::Vec;

use crate::agent::outbox::{Outbox, Pending};
use crate::agent::stamp::Stamp;
use crate::config::{Config, Timers, BACKUP_MIN_INTERVAL_MS, MAX_PAUSE_MS};
use crate::event::EventKind;
use crate::link::LinkId;
use crate::status::{DomainStatus, LinkStatus, PeerState, PeerStatus};

/// A peer whose probe is asked at `now`: asked again every `probe_timeout_ms` without an
/// answer, lost without one after the longer of that and the main CPU's silence bound
/// (0: not watched, the probe timeout alone).
fn suspect(now: u64, t: &Timers, main_cpu_timeout_ms: u32) -> PeerState {
    PeerState::Suspect {
        deadline_ms: now + t.probe_timeout_ms as u64,
        give_up_ms: now + t.probe_timeout_ms.max(main_cpu_timeout_ms) as u64,
    }
}

/// When a peer was last heard, on any link.
fn last_heard<const D: usize>(p: &PeerStatus<D>) -> Option<u64> {
    p.links.iter().filter_map(|l| l.last_rx_ms).max()
}

/// Silence on every link after which peer `p` is probed, ms: `suspect_ms` while its main
/// link is up; once that is down, longer by as much as the backup link's heartbeats are
/// sparser than the profile's, so that a cut main link does not make each gap between two
/// backup heartbeats a probe.
fn suspect_after<const D: usize>(p: &PeerStatus<D>, t: &Timers) -> u64 {
    let main_up = p.links.first().is_some_and(|l| l.state == LinkState::Up);
    let sparser = if main_up {
        0
    } else {
        // The backup link's interval less the profile's.
        BACKUP_MIN_INTERVAL_MS.saturating_sub(t.profile.interval_ms())
    };
    (t.suspect_ms + sparser) as u64
}

/// A probe asked while the peer was still alive (every link silent for `suspect_ms`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct EarlyProbe {
    /// When it was asked (none: no probe under way).
    asked: Stamp,
    /// The main CPU's answer once it came (true: alive).
    answer: Option<bool>,
}

impl EarlyProbe {
    const NONE: EarlyProbe = EarlyProbe {
        asked: Stamp::NONE,
        answer: None,
    };
}

/// Every configured peer (members other than this one), in member-list order.
#[derive(Clone)]
pub(crate) struct Peers<const M: usize, const D: usize> {
    list: Vec<PeerStatus<D>, M>,
    /// Per peer (same order as `list`): since when it announces a pause.
    paused_since: Vec<Stamp, M>,
    /// Per peer (same order as `list`): the probe asked on suspicion while it was still
    /// alive, if any.
    early: Vec<EarlyProbe, M>,
    /// Per peer (same order as `list`): the probe requests asked since it was last heard;
    /// only their answers count ([`Peers::answers_this_silence`]).
    asked: Vec<Asked, M>,
    /// The number the last probe request got (per boot, wrapping).
    last_request: u16,
    /// When this member's next heartbeat is due, per link.
    next_heartbeat_ms: [u64; MAX_HA_LINKS],
}

/// The probe requests asked about one peer since it was last heard, by number: the first
/// and the latest (numbers wrap; at most a few hundred are asked in one silence).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Asked {
    /// The first request asked since the peer was last heard (`None`: none yet).
    first: Option<u16>,
    /// The latest request asked.
    latest: u16,
}

impl Asked {
    /// True when `request` was asked in this silence: an answer to a request asked before
    /// the peer was last heard may have been gathered before a crash that followed ("alive"
    /// then, dead now); an answer to any request of this silence is evidence about it, also
    /// when a later request was asked meanwhile (an answer slower than the re-ask).
    fn in_this_silence(&self, request: u16) -> bool {
        self.first
            .is_some_and(|f| request.wrapping_sub(f) <= self.latest.wrapping_sub(f))
    }
}

/// Asks the main CPU to probe `peer`, at place `pi` of the peer list, under a new request
/// number (`asked`: the peer's requests of this silence); a free function over the fields,
/// so that callers may hold the peer's entry meanwhile. The number's low
/// [`PROBE_REQUEST_PEER_BITS`] bits are `pi` (a [`HostMsg::ProbeVerdict`] names its peer so),
/// the rest counts the requests of this boot.
///
/// [`HostMsg::ProbeVerdict`]: ha_proto::msg::host::HostMsg::ProbeVerdict
fn ask(asked: &mut Asked, last_request: &mut u16, pi: usize, peer: Serial, out: &mut Outbox) {
    *last_request = last_request.wrapping_add(1);
    // pi < MAX_MEMBERS ≤ 1 << PROBE_REQUEST_PEER_BITS (checked in ha_proto).
    let request = (*last_request << PROBE_REQUEST_PEER_BITS) | pi as u16;
    asked.latest = request;
    asked.first.get_or_insert(request);
    out.push(Pending::Probe { peer, request });
}

impl<const M: usize, const D: usize> Peers<M, D> {
    /// The table of `config`'s peers, none heard yet; heartbeats due at `now`.
    pub(crate) fn new(config: &Config<M, D>, now: u64) -> Self {
        let mut p = Peers {
            list: Vec::new(),
            paused_since: Vec::new(),
            early: Vec::new(),
            asked: Vec::new(),
            last_request: 0,
            next_heartbeat_ms: [now; MAX_HA_LINKS],
        };
        // Nothing to forget yet.
        let _ = p.rebuild(config, now);
        p
    }

    /// Makes the table match the configured members, keeping what is known of peers that
    /// stay; returns the peers no longer listed (their replay state is the caller's to
    /// forget).
    #[must_use]
    pub(crate) fn rebuild(&mut self, config: &Config<M, D>, now: u64) -> Vec<Serial, M> {
        let old = core::mem::take(&mut self.list);
        let old_paused = core::mem::take(&mut self.paused_since);
        self.early.clear();
        let old_asked = core::mem::take(&mut self.asked);
        for (i, s) in config.members.iter().enumerate() {
            if *s == config.me {
                continue;
            }
            let kept = old.iter().position(|p| p.serial == *s);
            let mut p = match kept {
                Some(k) => old[k].clone(),
                None => unknown_peer(*s, now),
            };
            p.index = i as u8;
            for (l, ls) in p.links.iter_mut().enumerate() {
                let configured = l < config.links as usize;
                if !configured {
                    ls.state = LinkState::Absent;
                } else if ls.state == LinkState::Absent {
                    ls.state = LinkState::Down;
                    ls.since_ms = now;
                }
            }
            // Capacity M holds every configured member.
            let _ = self.list.push(p);
            let _ = self.paused_since.push(
                kept.and_then(|k| old_paused.get(k).copied())
                    .unwrap_or(Stamp::NONE),
            );
            // A membership change drops probes under way; a silent peer is asked again.
            let _ = self.early.push(EarlyProbe::NONE);
            // A verdict names its peer by place: a peer at another place forgets the
            // requests asked at the old one.
            let place = self.asked.len();
            let _ = self.asked.push(
                kept.filter(|&k| k == place)
                    .and_then(|k| old_asked.get(k).copied())
                    .unwrap_or_default(),
            );
        }
        let mut gone = Vec::new();
        for p in old.iter() {
            if !config.members.contains(&p.serial) {
                // At most M peers were listed.
                let _ = gone.push(p.serial);
            }
        }
        gone
    }

    /// The peers, in member-list order.
    pub(crate) fn as_slice(&self) -> &[PeerStatus<D>] {
        &self.list
    }

    /// Position of a peer in the table.
    pub(crate) fn position(&self, serial: Serial) -> Option<usize> {
        self.list.iter().position(|p| p.serial == serial)
    }

    /// Liveness bookkeeping for an accepted frame of peer `pi` on `link`; returns whether the
    /// frame counts (its content may be applied). A peer declared lost comes back at once
    /// with a new boot (it restarted), but in the same boot only once it has been heard for
    /// `interval_ms` (a second heartbeat): a single late frame, sent before it died, must not
    /// bring a dead active back and make the survivor step down (found by the model checker).
    pub(crate) fn heard(
        &mut self,
        pi: usize,
        link: LinkId,
        epoch: u32,
        now: u64,
        interval_ms: u64,
        out: &mut Outbox,
    ) -> bool {
        let p = &mut self.list[pi];
        let serial = p.serial;
        let restarted = matches!(p.epoch, Some(e) if epoch > e);
        if p.state == PeerState::Lost && !restarted {
            let since = match p.returning_since_ms {
                // Heard again long after: start counting anew.
                Some(t) if now <= t + 4 * interval_ms => t,
                _ => now,
            };
            p.returning_since_ms = Some(since);
            if now < since + interval_ms {
                return false;
            }
        }
        p.returning_since_ms = None;
        p.epoch = Some(epoch);
        // Heard: no longer suspect; an answer to a probe asked before counts for nothing.
        self.early[pi] = EarlyProbe::NONE;
        self.asked[pi].first = None;
        let l = &mut p.links[link.0 as usize];
        l.last_rx_ms = Some(now);
        let link_up = l.state != LinkState::Up;
        if link_up {
            l.state = LinkState::Up;
            l.since_ms = now;
        }
        let found = matches!(p.state, PeerState::Unknown | PeerState::Lost);
        if p.state != PeerState::Alive {
            p.state = PeerState::Alive;
            p.state_since_ms = now;
        }
        if restarted {
            // Its old roles no longer hold; the heartbeat that follows brings the new ones.
            p.roles.clear();
            p.role_for_ms.clear();
            out.event(now, EventKind::PeerRestarted { peer: serial });
        }
        if found {
            out.event(now, EventKind::PeerFound { peer: serial });
        }
        if link_up {
            out.event(now, EventKind::LinkUp { peer: serial, link });
        }
        true
    }

    /// What peer `pi`'s heartbeat announces: forcing, version, quality, revision, pause and
    /// its roles in the domains this member knows.
    pub(crate) fn apply_heartbeat(
        &mut self,
        pi: usize,
        hb: &Heartbeat,
        now: u64,
        config: &Config<M, D>,
        out: &mut Outbox,
    ) {
        let my_fw = config.firmware;
        let my_rev = config.config_revision;
        let p = &mut self.list[pi];
        let serial = p.serial;
        let fw_changed = p.firmware != hb.firmware || p.uptime_ms == 0;
        let rev_changed = p.config_revision != hb.config_revision || p.uptime_ms == 0;
        p.forced = hb.forced;
        p.firmware = hb.firmware;
        p.quality = hb.quality.min(100);
        p.config_revision = hb.config_revision;
        p.paused = hb.paused;
        p.uptime_ms = hb.uptime_ms.max(1);
        p.fail_soft = hb.firmware != my_fw;
        p.roles.clear();
        p.role_for_ms.clear();
        for r in &hb.roles {
            if config.domains.iter().any(|d| d.id == r.domain) {
                let _ = p.roles.push(DomainStatus {
                    domain: r.domain,
                    role: r.role,
                    since_ms: now.saturating_sub(r.for_ms as u64),
                });
                let _ = p.role_for_ms.push(r.for_ms);
            }
        }
        let ps = &mut self.paused_since[pi];
        match (hb.paused, ps.is_none()) {
            (true, true) => *ps = Stamp::at(now),
            (false, false) => *ps = Stamp::NONE,
            _ => {}
        }
        if fw_changed && hb.firmware != my_fw {
            out.event(
                now,
                EventKind::VersionMismatch {
                    peer: serial,
                    theirs: hb.firmware,
                },
            );
        }
        if rev_changed && hb.config_revision != my_rev {
            out.event(
                now,
                EventKind::ConfigMismatch {
                    peer: serial,
                    theirs: hb.config_revision,
                },
            );
        }
    }

    /// The peer a [`HostMsg::ProbeVerdict`]'s `request` names (its low bits: the peer's
    /// place), if there is one at that place.
    ///
    /// [`HostMsg::ProbeVerdict`]: ha_proto::msg::host::HostMsg::ProbeVerdict
    pub(crate) fn peer_of_request(&self, request: u16) -> Option<Serial> {
        let place = usize::from(request & ((1 << PROBE_REQUEST_PEER_BITS) - 1));
        self.list.get(place).map(|p| p.serial)
    }

    /// True when `request` was asked about `peer` since it was last heard (see
    /// [`Asked::in_this_silence`]).
    pub(crate) fn answers_this_silence(&self, peer: Serial, request: u16) -> bool {
        self.position(peer)
            .is_some_and(|pi| self.asked[pi].in_this_silence(request))
    }

    /// The main CPU's answer to a probe of `peer`. Only an answer to a pending probe counts;
    /// a late one after the deadline is stale. Returns true when the peer is now lost.
    pub(crate) fn handle_probe_result(
        &mut self,
        peer: Serial,
        alive: bool,
        now: u64,
        t: &Timers,
        main_cpu_timeout_ms: u32,
        out: &mut Outbox,
    ) -> bool {
        let Some(pi) = self.position(peer) else {
            return false;
        };
        let p = &mut self.list[pi];
        if p.state == PeerState::Alive {
            // The answer to a probe asked on suspicion: kept until the links go down (or
            // dropped when the peer is heard meanwhile).
            let e = &mut self.early[pi];
            if !e.asked.is_none() && e.answer.is_none() {
                e.answer = Some(alive);
            }
            return false;
        }
        if !matches!(p.state, PeerState::Suspect { .. }) {
            return false;
        }
        let early = core::mem::replace(&mut self.early[pi], EarlyProbe::NONE);
        if alive && !early.asked.is_none() {
            // The probe asked before the links went down found it alive, but it may have
            // died since (a crash right after its answer): probe again now rather than wait
            // `reprobe_ms` as unreachable.
            p.state = suspect(now, t, main_cpu_timeout_ms);
            ask(&mut self.asked[pi], &mut self.last_request, pi, peer, out);
            return false;
        }
        p.state_since_ms = now;
        if alive {
            p.state = PeerState::Unreachable {
                next_probe_ms: now + t.reprobe_ms as u64,
            };
            out.event(now, EventKind::PeerUnreachable { peer });
            false
        } else {
            p.state = PeerState::Lost;
            out.event(
                now,
                EventKind::PeerLost {
                    peer,
                    confirmed: true,
                },
            );
            true
        }
    }

    /// Timers: this member's heartbeats, link silence, probe deadlines and re-probes, and
    /// the bound on peers' pauses. Returns true when a peer was declared lost.
    pub(crate) fn handle_timeout(
        &mut self,
        now: u64,
        config: &Config<M, D>,
        out: &mut Outbox,
    ) -> bool {
        let t = config.timers;
        for (l, next) in self.next_heartbeat_ms.iter_mut().enumerate() {
            let link = LinkId(l as u8);
            if l < config.links as usize && now >= *next {
                out.heartbeat_on(link);
                let iv = t.link_interval_ms(link) as u64;
                *next = if *next + iv > now {
                    *next + iv
                } else {
                    now + iv
                };
            }
        }
        let dead = t.profile.dead_ms() as u64;
        let mut lost = false;
        for pi in 0..self.list.len() {
            let p = &mut self.list[pi];
            let serial = p.serial;
            // Found dead by the probe asked on suspicion (only while alive) and silent on
            // every link for the profile's dead time: every link is down now, the backup
            // link's longer dead time is not waited.
            let found_dead = self.early[pi].answer == Some(false)
                && last_heard(p).is_some_and(|r| now >= r + dead);
            for l in 0..config.links as usize {
                let link_dead = if found_dead {
                    dead
                } else {
                    t.link_dead_ms(LinkId(l as u8)) as u64
                };
                let ls = &mut p.links[l];
                if ls.state == LinkState::Up && ls.last_rx_ms.is_some_and(|r| now >= r + link_dead)
                {
                    ls.state = LinkState::Down;
                    ls.since_ms = now;
                    out.event(
                        now,
                        EventKind::LinkDown {
                            peer: serial,
                            link: LinkId(l as u8),
                        },
                    );
                }
            }
            let all_down = p.links.iter().all(|l| l.state != LinkState::Up);
            match p.state {
                PeerState::Alive if all_down => {
                    let early = core::mem::replace(&mut self.early[pi], EarlyProbe::NONE);
                    p.state_since_ms = now;
                    out.event(now, EventKind::AllLinksDown { peer: serial });
                    match (early.asked.get(), early.answer) {
                        (Some(_), Some(false)) => {
                            // The probe asked on suspicion found it dead: lost now.
                            p.state = PeerState::Lost;
                            out.event(
                                now,
                                EventKind::PeerLost {
                                    peer: serial,
                                    confirmed: true,
                                },
                            );
                            lost = true;
                        }
                        (Some(asked), None) if now < asked + t.probe_timeout_ms as u64 => {
                            // Its answer is on the way. The main CPU gets the whole probe
                            // timeout from now, as if asked now: an early request must not
                            // shorten the wait (the model checker found a takeover of a live
                            // peer whose answer came at the early request's deadline). It is
                            // remembered as asked before the links went down (an "alive" may
                            // predate the death: see `handle_probe_result`).
                            p.state = suspect(now, &t, config.main_cpu_timeout_ms);
                            self.early[pi] = early;
                        }
                        // Never asked, asked but unanswered for a whole probe timeout, or
                        // found alive before it fell silent for good (it may have died
                        // since): probe now.
                        (None, _) | (Some(_), None) | (Some(_), Some(true)) => {
                            p.state = suspect(now, &t, config.main_cpu_timeout_ms);
                            ask(&mut self.asked[pi], &mut self.last_request, pi, serial, out);
                        }
                    }
                }
                PeerState::Alive => {
                    let suspect = suspect_after(p, &t);
                    if self.early[pi].asked.is_none()
                        && last_heard(p).is_some_and(|r| now >= r + suspect)
                    {
                        self.early[pi] = EarlyProbe {
                            asked: Stamp::at(now),
                            answer: None,
                        };
                        ask(&mut self.asked[pi], &mut self.last_request, pi, serial, out);
                    }
                }
                PeerState::Suspect {
                    deadline_ms,
                    give_up_ms,
                } if now >= deadline_ms && now < give_up_ms => {
                    // No answer yet: the request or its answer may have been lost, or the
                    // main CPU is slow. Ask again; not a death.
                    p.state = PeerState::Suspect {
                        deadline_ms: (now + t.probe_timeout_ms as u64).min(give_up_ms),
                        give_up_ms,
                    };
                    ask(&mut self.asked[pi], &mut self.last_request, pi, serial, out);
                    out.probe_reasked();
                }
                PeerState::Suspect { deadline_ms, .. } if now >= deadline_ms => {
                    p.state = PeerState::Lost;
                    p.state_since_ms = now;
                    out.event(
                        now,
                        EventKind::PeerLost {
                            peer: serial,
                            confirmed: false,
                        },
                    );
                    lost = true;
                }
                PeerState::Unreachable { next_probe_ms } if now >= next_probe_ms => {
                    p.state = suspect(now, &t, config.main_cpu_timeout_ms);
                    ask(&mut self.asked[pi], &mut self.last_request, pi, serial, out);
                }
                _ => {}
            }
            if let Some(since) = self.paused_since[pi].get() {
                if now >= since + MAX_PAUSE_MS {
                    // Ignored from now on: the pause outlived its bound.
                    self.list[pi].paused = false;
                    self.paused_since[pi] = Stamp::NONE;
                }
            }
        }
        lost
    }

    /// The earliest deadline of the table: the next heartbeats, a link's silence, the start
    /// of a silent peer's probe, the silence that makes a peer found dead lost, a probe's
    /// deadline or re-probe, the end of a peer's pause.
    pub(crate) fn poll_at(&self, t: &Timers, links: u8) -> u64 {
        let dead = t.profile.dead_ms() as u64;
        let mut w = u64::MAX;
        for next in self.next_heartbeat_ms.iter().take(links as usize) {
            w = w.min(*next);
        }
        for p in &self.list {
            for (i, l) in p.links.iter().enumerate() {
                if l.state == LinkState::Up {
                    if let Some(r) = l.last_rx_ms {
                        w = w.min(r + t.link_dead_ms(LinkId(i as u8)) as u64);
                    }
                }
            }
            match p.state {
                PeerState::Suspect { deadline_ms, .. } => w = w.min(deadline_ms),
                PeerState::Unreachable { next_probe_ms } => w = w.min(next_probe_ms),
                _ => {}
            }
        }
        for (p, e) in self.list.iter().zip(self.early.iter()) {
            if p.state != PeerState::Alive {
                continue;
            }
            if e.asked.is_none() {
                if let Some(r) = last_heard(p) {
                    w = w.min(r + suspect_after(p, t));
                }
            } else if e.answer == Some(false) {
                if let Some(r) = last_heard(p) {
                    w = w.min(r + dead);
                }
            }
        }
        for ps in self.paused_since.iter().filter_map(|p| p.get()) {
            w = w.min(ps + MAX_PAUSE_MS);
        }
        w
    }

    /// The next heartbeats, then per peer the start of its pause
    /// ([`crate::Agent::private_timers`]).
    pub(crate) fn private_timers(&self) -> impl Iterator<Item = Option<u64>> + '_ {
        self.next_heartbeat_ms
            .iter()
            .map(|t| Some(*t))
            .chain(self.paused_since.iter().map(|s| s.get()))
    }

    /// True while a live peer announces a pause.
    pub(crate) fn pausing(&self) -> bool {
        self.list
            .iter()
            .any(|p| p.state == PeerState::Alive && p.paused)
    }

    /// Over the peers in the election: does one run another firmware (fail-soft), and do all
    /// run configuration revision `revision`?
    pub(crate) fn flags(&self, revision: u64) -> (bool, bool) {
        let mut live = self.list.iter().filter(|p| p.state.in_election());
        let fail_soft = live.clone().any(|p| p.fail_soft);
        let synced = live.all(|p| p.config_revision == revision);
        (fail_soft, synced)
    }
}

/// A configured peer never heard.
fn unknown_peer<const D: usize>(serial: Serial, now: u64) -> PeerStatus<D> {
    PeerStatus {
        serial,
        index: 0,
        state: PeerState::Unknown,
        state_since_ms: now,
        epoch: None,
        forced: Forced::None,
        firmware: Default::default(),
        quality: 0,
        config_revision: 0,
        paused: false,
        uptime_ms: 0,
        roles: Vec::new(),
        role_for_ms: Vec::new(),
        links: [LinkStatus {
            state: LinkState::Absent,
            since_ms: now,
            last_rx_ms: None,
        }; MAX_HA_LINKS],
        fail_soft: false,
        returning_since_ms: None,
    }
}
