//! The daemon's main loop around the host link: interface reports up, role decisions and
//! probe requests down, status and events kept for the management API.
//!
//! Threads: this loop (owns the host link and the netlink monitor), one receive thread per
//! forwarding interface ([`crate::packetio`]), the state-sync thread and the management API
//! server. Other threads reach the controller through the [`Outbox`]; what they read comes
//! from [`Shared`].

use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ha_proto::msg::host::{
    EventReport, HostMsg, StatusReport, CAP_COMPACT_FRAMES, CAP_NUMBERED_PROBES, CAP_TABLE_HELD,
};
use ha_proto::msg::{Role, Serial};

use crate::links::{interfaces_msg, LinkMonitor, MonitoredIface};
use crate::probes::{probe_within, Answer, Echoes, Probes};
use crate::uplink::Uplink;
use ha_hostlink::{HostLink, Unsent};

mod plane;
mod table_held;

pub use table_held::{table_held, TABLE_HELD_EVERY, TABLE_HELD_SINCE, TABLE_PENDING_MAX};

/// Events kept for `events` requests: the controller's own ring holds fewer, so this never
/// loses one the controller still had.
pub const EVENTS_MAX: usize = 4096;
pub use crate::probes::{PROBE_SENDS, PROBE_TIMEOUT, PROBE_WITHIN};
/// Extra gratuitous ARPs after a takeover, counted from it (switches and hosts that missed
/// the first one).
pub const GARP_REPEATS: [Duration; 4] = [
    Duration::from_millis(50),
    Duration::from_millis(150),
    Duration::from_millis(400),
    Duration::from_millis(1000),
];
/// Granularity of the loop: the host-link wait between two housekeeping rounds.
pub const TICK: Duration = Duration::from_millis(10);
/// The controller re-asserts its roles every 250 ms (`ha_agent::agent::ROLES_REFRESH_MS`):
/// silent this long, it is taken for dead (a stopped controller on a serial line closes
/// nothing). This member then stops forwarding and stops answering probes, so the peer
/// takes over.
pub const CONTROLLER_SILENCE: Duration = Duration::from_millis(1_000);
/// How often the daemon tells its controller it is alive (a keepalive), when it sent nothing
/// else meanwhile: the controller takes this member out of the election when its main CPU is
/// silent for its main-CPU timeout (`ha_agent::config::DEFAULT_MAIN_CPU_TIMEOUT_MS`, 1 s: four
/// keepalives, three may be lost). Not faster: a keepalive is 44 bytes on the wire, and an
/// emulated controller takes an interrupt and two thread wake-ups per byte (session 24: at
/// 100 ms the keepalives were 440 of a controller's 811 interrupts a second, and the two QEMU
/// controllers a third of a core in the kernel-ha bench).
pub const KEEPALIVE: Duration = Duration::from_millis(250);

/// What the daemon knows, for the management API.
#[derive(Debug, Default)]
pub struct Shared {
    /// This member's serial.
    pub serial: Serial,
    /// Cluster id.
    pub cluster_id: u32,
    /// Boot time, Unix seconds.
    pub boot_time: u64,
    /// Last status report of the controller, with the Unix time (ms) it arrived.
    pub status: Option<(StatusReport, u64)>,
    /// Events of the controller with their arrival (Unix ms), oldest first.
    pub events: VecDeque<(EventReport, u64)>,
    /// Subscribers of `events --follow` (controller events).
    pub followers: Vec<Sender<(EventReport, u64)>>,
    /// The daemon's own events (state sync), oldest first.
    pub local_events: VecDeque<ha_mgmt_api::Event>,
    /// Subscribers of `events --follow` (the daemon's own events).
    pub local_followers: Vec<Sender<ha_mgmt_api::Event>>,
    /// Last key state of the controller: (sealing key id, accepted key ids).
    pub key_state: Option<(u8, Vec<u8>)>,
    /// Role of the forwarding domain, and since when (Unix seconds).
    pub role: Option<(Role, u64)>,
    /// Host-link frames rejected, per reason.
    pub host_rejects: BTreeMap<String, u64>,
    /// State-sync counters (frames refused per reason, records refused per table), copied
    /// by the sync thread.
    pub sync_counters: BTreeMap<String, u64>,
    /// Fast-path counters, refreshed by the host loop.
    pub fast_path: Option<crate::fastpath::Stats>,
    /// Host-link frames accepted.
    pub host_accepted: u64,
    /// Messages to the controller dropped before they were written: superseded by a newer
    /// one in the upward queue (`Uplink`), or over its bound.
    pub host_superseded: u64,
    /// The keepalives' round trip through the controller: the last and the longest.
    pub host_rtt: Option<crate::host_rtt::HostRtt>,
    /// Status requests sent again because the controller's answer did not come within
    /// [`crate::mgmt::STATUS_RESEND`] (the host link drops frames while stalled).
    pub status_resends: u64,
    /// True while the host link is connected.
    pub host_connected: bool,
    /// The peers' data-plane addresses (probe targets, state-sync peer): edited by
    /// membership changes, read by the probe and the sync thread.
    pub peers: crate::peers::PeerBook,
    /// This member's own data-plane addresses, as a joining member hands them to its peers.
    pub addresses: ha_mgmt_api::MemberAddresses,
    /// The role the forwarding plane applies, as the host loop last set it.
    pub forwarding: ForwardingRole,
    /// The controller's last [`HostMsg::Details`] (model, members' uptimes), with the Unix
    /// time (ms) it arrived; none from a controller that predates it.
    pub details: Option<(ha_proto::msg::host::DetailsReport, u64)>,
    /// What each peer's daemon said its member is (its controller's model, over the state
    /// sync), by serial.
    pub peer_models: BTreeMap<String, String>,
    /// The controller's last [`HostMsg::Counters`], asked with the details (none: it predates it).
    pub counters: Option<ha_proto::msg::host::CountersReport>,
    /// The controller boot (host-link epoch) [`Shared::status`] came from.
    pub status_epoch: Option<u32>,
    /// The controller's event numbers seen (duplicates, gaps, where its ring resumes).
    pub event_numbers: crate::event_numbers::EventNumbers,
    /// A new list of monitored interfaces from `hactl reload`, taken (and reported to the
    /// controller at once) by the host loop.
    pub monitor_update: Option<Vec<crate::links::MonitoredIface>>,
    /// When each HA link towards a peer last changed state (Unix ms), by (peer serial,
    /// link index 0 main / 1 backup), from the controller's link events.
    pub link_since: BTreeMap<(String, usize), u64>,
    /// Whether the state sync holds the peer's table, as the sync thread last saw it (none
    /// without a state sync).
    pub peer_table: Option<ha_dataplane::sync::PeerTable>,
    /// What the host loop last told the controller ([`HostMsg::TableHeld`]): held, and
    /// why (none before it first did, or with a controller that does not take it).
    pub table_held: Option<(bool, String)>,
}

/// The role the forwarding plane applies and its history, kept by the host loop
/// (`hactl forwarding`, the chaos monitor).
#[derive(Debug, Default, Clone)]
pub struct ForwardingRole {
    /// True while the data path forwards and owns cluster addresses (for any domain).
    pub active: bool,
    /// The domains it forwards for, lowest first: the main one alone, or with load sharing
    /// (`[[forward.shared]]`) every domain this member is active for.
    pub domains: Vec<u8>,
    /// When it last changed (Unix ms; the daemon's start until it first does).
    pub since_ms: u64,
    /// Role changes since the daemon started.
    pub changes: u64,
    /// When the daemon started (Unix ms).
    pub started_ms: u64,
    /// False while the controller is silent.
    pub controller_alive: bool,
}

impl ForwardingRole {
    /// The state of a daemon that started at `now_ms`: passive, no change yet.
    pub fn starting(now_ms: u64) -> ForwardingRole {
        ForwardingRole {
            since_ms: now_ms,
            started_ms: now_ms,
            ..ForwardingRole::default()
        }
    }
}

impl Shared {
    /// When (Unix ms) an event of controller boot `epoch` happened, at its uptime `at_ms`:
    /// the last status report of that boot says where its uptime stood when it arrived
    /// (events later than that report count forward from it); `now` when there is no such
    /// report, and never later than `now`.
    pub fn event_time(&self, at_ms: u64, epoch: Option<u32>, now: u64) -> u64 {
        match &self.status {
            Some((r, arrived)) if epoch.is_some() && epoch == self.status_epoch => {
                (arrived + at_ms).saturating_sub(r.uptime_ms).min(now)
            }
            _ => now,
        }
    }

    /// Notes the link changes a controller event reports (`link_up`/`link_down` name one link
    /// in their detail, "main link …" or "backup link …"; `all_links_down` both), at
    /// `when_ms` (Unix ms).
    pub fn note_link_event(&mut self, ev: &EventReport, when_ms: u64) {
        let Some(peer) = ev.peer else { return };
        let links: &[usize] = match ev.name.as_str() {
            "link_up" | "link_down" if ev.detail.starts_with("main link") => &[0],
            "link_up" | "link_down" if ev.detail.starts_with("backup link") => &[1],
            "all_links_down" => &[0, 1],
            _ => &[],
        };
        for l in links {
            self.link_since
                .insert((peer.as_str().to_string(), *l), when_ms);
        }
    }

    /// When link `link` of member `serial` last changed, Unix ms (for the local member, whose
    /// links are its links towards any peer: the latest change towards any peer).
    pub fn link_changed_ms(&self, serial: &str, local: bool, link: usize) -> Option<u64> {
        self.link_since
            .iter()
            .filter(|((s, l), _)| *l == link && (local || s == serial))
            .map(|(_, t)| *t)
            .max()
    }

    /// Records one of the daemon's own events, writes it to the journal and hands it to the
    /// followers.
    pub fn push_local_event(&mut self, e: ha_mgmt_api::Event) {
        if self.local_events.len() >= EVENTS_MAX {
            self.local_events.pop_front();
        }
        eprintln!("{}", crate::journal::local_line(&e));
        self.local_events.push_back(e.clone());
        self.local_followers.retain(|f| f.send(e.clone()).is_ok());
    }
}

/// Messages other threads want sent to the controller.
pub type Outbox = Sender<HostMsg>;

/// Unix seconds now.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Unix milliseconds now.
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

pub use plane::{Activate, Forwarding, Plane};

/// How often the host loop asks the controller for its details (model, uptimes).
pub const DETAILS_EVERY: Duration = Duration::from_secs(10);

/// Static inputs of the host loop.
pub struct HostLoop {
    /// Monitored interfaces and weights.
    pub ifaces: Vec<MonitoredIface>,
    /// Period of the interface report.
    pub interfaces_period: Duration,
    /// Period of gratuitous ARP while active; `None`: on takeover only.
    pub garp_period: Option<Duration>,
    /// Interfaces (indexes) to set down and up again when leaving the active role, and for
    /// how long (SPEC E4 "bounce interfaces on swap").
    pub bounce: Option<(Vec<u32>, Duration)>,
    /// The forwarding plane, when this member forwards.
    pub forwarding: Option<Box<dyn Plane>>,
    /// Domain whose role decides forwarding.
    pub domain: u8,
    /// Load sharing: the other domains the forwarding plane forwards for while active for
    /// them (`[[forward.shared]]`; empty without).
    pub shared_domains: Vec<u8>,
    /// Shared state for the management API.
    pub shared: Arc<Mutex<Shared>>,
    /// Messages from other threads for the controller.
    pub outbox: Receiver<HostMsg>,
    /// Set to stop.
    pub stop: Arc<AtomicBool>,
}

/// Mutable state of the loop that survives reconnections of the host link.
#[derive(Default)]
pub struct LoopState {
    /// The controller's boot the interface report was last sent to.
    reported_to: Option<u32>,
    /// When the controller was last heard (any accepted message).
    heard_at: Option<Instant>,
    /// Whether the controller counts as alive (heard within [`CONTROLLER_SILENCE`]).
    controller_alive: bool,
    /// When the last keepalive was sent.
    last_keepalive: Option<Instant>,
    /// Nonce of the last keepalive.
    keepalive_nonce: u32,
    /// The probes under way and the standby's watches of its peers.
    probes: Probes,
    /// Messages to the controller not written yet (see [`Uplink`]).
    uplink: Uplink,
    /// When the last frame was written to the controller.
    last_written: Option<Instant>,
    /// The host link carries compact frames (both ends take them; journaled on a change).
    compact: bool,
    garp_due: Vec<Instant>,
    last_garp: Option<Instant>,
    last_report: Option<Instant>,
    active: bool,
    /// The controller's events are to be asked for again ([`HostMsg::EventsSince`]) once its
    /// boot is known: set on every (re)connection and every new controller boot.
    ask_events: bool,
    /// When the details ([`HostMsg::DetailsRequest`]) were last asked for; `None`: at once.
    details_asked: Option<Instant>,
    /// What [`HostMsg::TableHeld`] last said and when; `None`: say it at once.
    table_held_sent: Option<(bool, Instant)>,
}

impl HostLoop {
    /// Runs until the stop flag is set (`Ok`) or the host link fails (`Err`: the caller
    /// goes passive and reconnects).
    pub fn run<T: Read + Write + AsFd + Unsent>(
        &mut self,
        link: &mut HostLink<T>,
        monitor: &mut LinkMonitor,
        st: &mut LoopState,
    ) -> io::Result<()> {
        {
            let mut sh = self.lock_shared();
            sh.host_connected = true;
            sh.event_numbers.connected();
        }
        st.ask_events = true;
        st.details_asked = None;
        st.table_held_sent = None;
        // What waited for the old link is moot: the new one starts with a full report.
        st.uplink.clear();
        // A fresh link: report the interfaces and ask for the cluster status at once.
        self.send_interfaces(&mut st.uplink, monitor)?;
        st.last_report = Some(Instant::now());
        st.uplink.push(HostMsg::StatusRequest, Instant::now());
        flush(link, st)?;
        while !self.stop.load(Ordering::Relaxed) {
            while let Ok(m) = self.outbox.try_recv() {
                st.uplink.push(m, Instant::now());
            }
            flush(link, st)?;
            let update = self.lock_shared().monitor_update.take();
            if let Some(ifaces) = update {
                self.ifaces = ifaces;
                self.send_interfaces(&mut st.uplink, monitor)?;
                st.last_report = Some(Instant::now());
            }
            // A probe's answer (or a watch's next round) is due at its time, not at the next
            // tick.
            let wait = st.probes.next_at(!st.active).map_or(TICK, |t| {
                t.saturating_duration_since(Instant::now()).min(TICK)
            });
            // Frames wait for the link to take the last one: look again soon, unless the
            // controller is silent (it may have stopped reading without closing the link:
            // no reason to look a thousand times a second).
            let wait = if st.uplink.is_empty() || !st.controller_alive {
                wait
            } else {
                wait.min(UPLINK_POLL)
            };
            if let Some(msg) = link.recv_timeout(wait)? {
                st.heard_at = Some(Instant::now());
                // Heard (again): this member answers its peer's probes before it does what
                // the message asks. A first message that makes it active runs the takeover's
                // steps (tens of ms of nft and rtnetlink): meanwhile the peer, which may be
                // probing it, must find it alive (seen at startup, session 21: the peer took
                // over a live active whose answering rule came only after its takeover).
                if !st.controller_alive {
                    self.set_controller_alive(true, st);
                }
                self.on_msg(link, msg, st)?;
                if link.codec().sends_compact() != st.compact {
                    st.compact = !st.compact;
                    eprintln!("{}", crate::journal::frames_line(st.compact));
                }
            }
            let now = Instant::now();
            let alive = st
                .heard_at
                .is_some_and(|t| now.duration_since(t) < CONTROLLER_SILENCE);
            if alive != st.controller_alive {
                self.set_controller_alive(alive, st);
            }
            // Any frame tells the controller this daemon lives: a keepalive only fills the
            // silences (the upward direction is the slow one, see `Uplink`). Its send time
            // is the round trip's start, so it moves only when one is sent.
            let silent_for =
                |t: Option<Instant>| t.is_none_or(|t| now.duration_since(t) >= KEEPALIVE);
            if silent_for(st.last_keepalive) && silent_for(st.last_written) {
                st.keepalive_nonce = st.keepalive_nonce.wrapping_add(1);
                st.uplink.push(
                    HostMsg::Ping {
                        nonce: st.keepalive_nonce,
                    },
                    Instant::now(),
                );
                st.last_keepalive = Some(now);
            }
            let changed = !monitor.poll(Duration::ZERO)?.is_empty();
            // A controller heard for the first time or restarted (new boot): it refuses
            // what was bound to its previous boot, so report the interfaces again now.
            let controller = link.codec().peer_epoch();
            let new_boot = controller.is_some() && controller != st.reported_to;
            let due = new_boot
                || st
                    .last_report
                    .is_none_or(|t| now.duration_since(t) >= self.interfaces_period);
            if changed || due {
                self.send_interfaces(&mut st.uplink, monitor)?;
                st.last_report = Some(now);
                st.reported_to = controller;
            }
            // What the controller logged before this daemon listened (or while the link was
            // down): its ring, from the first event not seen.
            if let Some(boot) = controller.filter(|_| st.ask_events || new_boot) {
                let seq = self.lock_shared().event_numbers.replay_request(boot, now);
                st.uplink.push(HostMsg::EventsSince { seq }, Instant::now());
                st.ask_events = false;
            }
            // The model and the members' uptimes (their boot times): at connection, when a
            // peer appears or restarts, and every DETAILS_EVERY.
            let details_due = new_boot
                || st
                    .details_asked
                    .is_none_or(|t| now.duration_since(t) >= DETAILS_EVERY);
            if controller.is_some() && details_due {
                // What this daemon understands beyond the first release's messages: with the
                // details, so a controller that restarted or lost the frame hears it again.
                st.uplink.push(
                    HostMsg::Capabilities(
                        CAP_NUMBERED_PROBES | CAP_COMPACT_FRAMES | CAP_TABLE_HELD,
                    ),
                    Instant::now(),
                );
                st.uplink.push(HostMsg::DetailsRequest, Instant::now());
                st.uplink.push(HostMsg::CountersRequest, Instant::now());
                st.details_asked = Some(now);
            }
            if controller.is_some() {
                self.tell_table_held(st, now, new_boot);
            }
            self.run_probes(st, now);
            flush(link, st)?;
            self.run_garp(st, now);
            let stats = self.forwarding.as_ref().and_then(|f| f.fast_path_stats());
            let mut sh = self.lock_shared();
            sh.fast_path = stats;
            sh.host_accepted = link.codec().accepted();
            sh.host_superseded = st.uplink.superseded();
            for (k, v) in link.codec().rejects() {
                sh.host_rejects.insert((*k).to_string(), *v);
            }
        }
        Ok(())
    }

    fn lock_shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        // A panicked thread cannot leave Shared half-updated in a way that matters (plain
        // snapshots); keep serving.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send_interfaces(&self, uplink: &mut Uplink, monitor: &LinkMonitor) -> io::Result<()> {
        let msg = interfaces_msg(&self.ifaces, |n| monitor.is_up(n))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        uplink.push(msg, Instant::now());
        Ok(())
    }

    fn on_msg<T: Read + Write + AsFd + Unsent>(
        &mut self,
        link: &mut HostLink<T>,
        msg: HostMsg,
        st: &mut LoopState,
    ) -> io::Result<()> {
        match msg {
            HostMsg::Ping { nonce } => st.uplink.push(HostMsg::Pong { nonce }, Instant::now()),
            HostMsg::Pong { nonce } if nonce == st.keepalive_nonce => {
                crate::host_rtt::HostRtt::note(&mut self.lock_shared().host_rtt, st.last_keepalive)
            }
            // The one role path: the controller re-asserts every domain's role on every
            // change and periodically; applying it is idempotent, so the forwarding plane
            // converges to the controller's roles whatever was lost on the line.
            HostMsg::Roles(roles) => {
                let role_of = |d: u8| {
                    roles
                        .iter()
                        .find(|r| r.domain == d)
                        .map_or(Role::Disabled, |r| r.role)
                };
                let role = role_of(self.domain);
                let known = self.lock_shared().role.map(|(r, _)| r);
                if known != Some(role) {
                    self.set_active(role == Role::Active, st);
                    self.lock_shared().role = Some((role, unix_now()));
                }
                // Load sharing: each other domain's role, applied the same way (the plane
                // changes nothing for a role it applies already).
                for d in self.shared_domains.clone() {
                    self.set_domain_active(d, role_of(d) == Role::Active, st);
                }
            }
            HostMsg::ProbeRequest { peer, within_ms } => {
                self.start_probe(peer, None, probe_within(within_ms), st)
            }
            HostMsg::ProbeAsk {
                peer,
                within_ms,
                request,
            } => self.start_probe(peer, Some(request), probe_within(within_ms), st),
            HostMsg::Counters(c) => self.lock_shared().counters = Some(c),
            HostMsg::Details(report) => {
                // Events the controller logged that never arrived (a frame lost on the line):
                // asked for again.
                let epoch = link.codec().peer_epoch();
                let missing = {
                    let mut sh = self.lock_shared();
                    let missing = sh
                        .event_numbers
                        .behind(epoch, report.next_event, Instant::now());
                    sh.details = Some((report, unix_ms()));
                    missing
                };
                if let Some(seq) = missing {
                    st.uplink.push(HostMsg::EventsSince { seq }, Instant::now());
                }
            }
            HostMsg::Status(report) => {
                let mut sh = self.lock_shared();
                sh.status = Some((report, unix_ms()));
                sh.status_epoch = link.codec().peer_epoch();
            }
            HostMsg::Event(ev) => {
                let epoch = link.codec().peer_epoch();
                let mut sh = self.lock_shared();
                let news = sh.event_numbers.note(ev.seq, epoch, Instant::now());
                if matches!(ev.name.as_str(), "peer_found" | "peer_restarted") {
                    // Its boot time changed or is new.
                    st.details_asked = None;
                }
                if news == crate::event_numbers::EventNews::Duplicate {
                    return Ok(());
                }
                if let crate::event_numbers::EventNews::After(lost) = news {
                    sh.push_local_event(ha_mgmt_api::Event {
                        time_ms: unix_ms(),
                        kind: ha_mgmt_api::EventKind::EventsLost,
                        member: None,
                        detail: format!(
                            "{lost} controller event(s) lost before #{} (its ring overflowed or \
                             the host link was down)",
                            ev.seq
                        ),
                        seq: None,
                    });
                }
                if sh.events.len() >= EVENTS_MAX {
                    sh.events.pop_front();
                }
                eprintln!("{}", crate::journal::controller_line(&ev));
                let now = unix_ms();
                let when = sh.event_time(ev.at_ms, epoch, now);
                sh.note_link_event(&ev, when);
                // Logged at the time it happened: an event of the ring sent again arrives
                // late.
                let item = (ev, when);
                sh.events.push_back(item.clone());
                sh.followers.retain(|f| f.send(item.clone()).is_ok());
            }
            HostMsg::KeyState {
                sealing_key_id,
                accepted,
            } => {
                self.lock_shared().key_state = Some((sealing_key_id, accepted.to_vec()));
            }
            // Pong answers our keepalives; the rest never comes from a controller (the codec
            // refuses them by direction).
            _ => {}
        }
        Ok(())
    }

    /// The controller was heard again, or fell silent (or its link closed): a silent
    /// controller means this member cannot take part in the election, so it stops forwarding
    /// (fail safe) and its member addresses stop answering probes (the peer takes over).
    pub fn set_controller_alive(&mut self, alive: bool, st: &mut LoopState) {
        st.controller_alive = alive;
        self.lock_shared().forwarding.controller_alive = alive;
        if !alive {
            st.heard_at = None;
            eprintln!("ha-daemon: controller silent; passive and unprobeable until it is back");
            self.set_active(false, st);
            for d in self.shared_domains.clone() {
                self.set_domain_active(d, false, st);
            }
            self.lock_shared().role = None;
        }
        if let Some(f) = &mut self.forwarding {
            f.set_ha_alive(alive);
        }
    }

    /// Applies the main domain's role to the forwarding plane; taking over sends gratuitous
    /// ARP now and again at [`GARP_REPEATS`].
    pub fn set_active(&mut self, active: bool, st: &mut LoopState) {
        st.active = active;
        self.set_domain_active(self.domain, active, st);
    }

    /// Applies the role of `domain` (the main one or one of [`HostLoop::shared_domains`]) to
    /// the forwarding plane; taking it over announces its addresses now and again at
    /// [`GARP_REPEATS`]. The interfaces are bounced (when configured) only once the member
    /// forwards for no domain at all.
    fn set_domain_active(&mut self, domain: u8, active: bool, st: &mut LoopState) {
        let now = Instant::now();
        let main = domain == self.domain;
        let Some(f) = &mut self.forwarding else {
            return;
        };
        let was = f.is_active();
        let changed = if main {
            f.set_active(active, now)
        } else {
            f.set_domain_active(domain, active, now)
        };
        if !changed {
            return;
        }
        let forwards = f.is_active();
        if active {
            st.garp_due = GARP_REPEATS.iter().map(|d| now + *d).collect();
            st.last_garp = Some(now);
        }
        {
            // Recorded after the plane's lock is released (never both locks at once).
            let mut sh = self.lock_shared();
            sh.forwarding.active = forwards;
            let ds = &mut sh.forwarding.domains;
            ds.retain(|d| *d != domain);
            if active {
                ds.push(domain);
                ds.sort_unstable();
            }
            sh.forwarding.since_ms = unix_ms();
            sh.forwarding.changes += 1;
        }
        if was && !forwards {
            if let Some((ifaces, down_for)) = self.bounce.clone() {
                // Off the host loop's thread: the loop must keep answering the controller.
                crate::spawn_named("ha-bounce", move || {
                    for i in &ifaces {
                        if let Err(e) = crate::links::set_link_up(*i, false) {
                            eprintln!("ha-daemon: bounce: interface {i} down: {e}");
                        }
                    }
                    std::thread::sleep(down_for);
                    for i in &ifaces {
                        if let Err(e) = crate::links::set_link_up(*i, true) {
                            eprintln!("ha-daemon: bounce: interface {i} up: {e}");
                        }
                    }
                });
            }
        }
    }

    fn run_garp(&mut self, st: &mut LoopState, now: Instant) {
        let Some(f) = &mut self.forwarding else {
            return;
        };
        let repeat_due = st.garp_due.first().is_some_and(|t| *t <= now);
        let periodic_due = st.active
            && self
                .garp_period
                .is_some_and(|p| st.last_garp.is_none_or(|t| now.duration_since(t) >= p));
        if repeat_due || periodic_due {
            if repeat_due {
                st.garp_due.remove(0);
            }
            st.last_garp = Some(now);
            f.announce();
        }
    }

    fn start_probe(
        &mut self,
        peer: Serial,
        request: Option<u16>,
        within: Duration,
        st: &mut LoopState,
    ) {
        let targets: Vec<Ipv4Addr> = self.lock_shared().peers.probe_targets(peer);
        let Some(f) = &mut self.forwarding else {
            // Nothing to probe with: the peer is not proven alive, the takeover may go on.
            return send_answer(
                &mut st.uplink,
                Answer {
                    peer,
                    alive: false,
                    after: Duration::ZERO,
                    watched: false,
                    request,
                },
            );
        };
        let standby = !st.active;
        let answer = st.probes.request(
            &mut PlaneEchoes(f.as_mut()),
            peer,
            request,
            targets,
            within,
            standby,
            Instant::now(),
        );
        if let Some(a) = answer {
            send_answer(&mut st.uplink, a);
        }
    }

    fn run_probes(&mut self, st: &mut LoopState, now: Instant) {
        let Some(f) = &mut self.forwarding else {
            st.probes.clear();
            return;
        };
        for a in st.probes.run(&mut PlaneEchoes(f.as_mut()), !st.active, now) {
            send_answer(&mut st.uplink, a);
        }
    }
}

/// The forwarding plane's probe socket, for [`Probes`].
struct PlaneEchoes<'a>(&'a mut dyn Plane);

impl Echoes for PlaneEchoes<'_> {
    fn send(&mut self, ip: Ipv4Addr, now: Instant) -> Option<u16> {
        self.0.probe(ip, now)
    }
    fn answered(&mut self, ip: Ipv4Addr, seq: u16) -> bool {
        self.0.probe_answered(ip, seq)
    }
}

/// Sends a probe's answer to the controller, and shows it in the journal with its time (a
/// takeover's timeline reads from these lines and the controller's events).
fn send_answer(uplink: &mut Uplink, a: Answer) {
    eprintln!(
        "<6>ha-daemon: probe of {}{}: {} after {} ms{} (at {} unix ms)",
        a.peer,
        a.request
            .map_or(String::new(), |n| format!(" (request {n})")),
        if a.alive { "alive" } else { "no answer" },
        a.after.as_millis(),
        if a.watched {
            ", the standby's watch"
        } else {
            ""
        },
        unix_ms()
    );
    uplink.push(
        match a.request {
            Some(request) => HostMsg::ProbeAnswer {
                peer: a.peer,
                request,
                alive: a.alive,
            },
            None => HostMsg::ProbeResult {
                peer: a.peer,
                alive: a.alive,
            },
        },
        Instant::now(),
    );
}

/// How often the loop looks whether the link took the last frame while messages wait.
pub const UPLINK_POLL: Duration = Duration::from_millis(1);

/// Writes the next waiting messages while the controller has read everything written
/// before (one frame in flight: what waits can still be reordered, see [`Uplink`]).
fn flush<T: Read + Write + AsFd + Unsent>(
    link: &mut HostLink<T>,
    st: &mut LoopState,
) -> io::Result<()> {
    while link.unsent() == 0 {
        let Some(m) = st.uplink.pop(Instant::now()) else {
            return Ok(());
        };
        link.send(&m)?;
        st.last_written = Some(Instant::now());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A plane that records what the host loop asks of it, in order.
    struct Recorder(Arc<Mutex<Vec<&'static str>>>);

    impl Plane for Recorder {
        fn set_active(&mut self, active: bool, _now: Instant) -> bool {
            self.0
                .lock()
                .unwrap()
                .push(if active { "active" } else { "passive" });
            true
        }
        fn is_active(&self) -> bool {
            self.0.lock().unwrap().last() == Some(&"active")
        }
        fn announce(&mut self) {}
        fn set_ha_alive(&mut self, alive: bool) {
            self.0.lock().unwrap().push(if alive {
                "answers probes"
            } else {
                "unprobeable"
            });
        }
        fn probe(&mut self, _peer: Ipv4Addr, _now: Instant) -> Option<u16> {
            None
        }
        fn probe_answered(&mut self, _peer: Ipv4Addr, _seq: u16) -> bool {
            false
        }
        fn fast_path_stats(&self) -> Option<crate::fastpath::Stats> {
            None
        }
    }

    /// Session 21's startup race: the controller's first word made the member active, and the
    /// takeover's steps ran before the member answered its peer's probes, so the peer found
    /// it silent and took over. The loop now answers probes first; on the old order this
    /// test sees `active` before `answers probes`.
    #[test]
    fn the_controllers_first_word_makes_the_member_probeable_before_it_takes_over() {
        use ha_hostlink::{End, HostCodec};
        use ha_proto::msg::host::DomainRoleOf;
        use std::os::unix::net::UnixStream;

        let cfg = ha_hostlink::test_support::sample_cfg();
        let (daemon_end, controller_end) = UnixStream::pair().expect("socket pair");
        let calls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (_outbox, outbox_rx) = std::sync::mpsc::channel();
        let mut host = HostLoop {
            ifaces: Vec::new(),
            interfaces_period: Duration::from_secs(1),
            garp_period: None,
            bounce: None,
            forwarding: Some(Box::new(Recorder(calls.clone()))),
            domain: 0,
            shared_domains: Vec::new(),
            shared: Arc::new(Mutex::new(Shared::default())),
            outbox: outbox_rx,
            stop: stop.clone(),
        };
        let daemon_cfg = cfg.clone();
        let daemon = std::thread::spawn(move || {
            let mut link = HostLink::new(daemon_end, HostCodec::new(&daemon_cfg, 1));
            let mut monitor = LinkMonitor::open().expect("rtnetlink monitor");
            let mut st = LoopState::default();
            host.run(&mut link, &mut monitor, &mut st)
        });
        let mut controller = HostLink::new(
            controller_end,
            HostCodec::with_end(End::Controller, &cfg, 5),
        );
        let mut roles = heapless::Vec::new();
        roles
            .push(DomainRoleOf {
                domain: 0,
                role: Role::Active,
            })
            .expect("room");
        // The controller learns the daemon's boot from its first frame (the interface report
        // it sends on connecting); its first word to the daemon is then the role.
        let deadline = Instant::now() + Duration::from_secs(5);
        while controller.codec().peer_epoch().is_none() && Instant::now() < deadline {
            let _ = controller.recv_timeout(Duration::from_millis(10));
        }
        controller.send(&HostMsg::Roles(roles)).expect("send");
        let deadline = Instant::now() + Duration::from_secs(5);
        while !calls.lock().unwrap().contains(&"active") && Instant::now() < deadline {
            // Read what the daemon sends, so that its writes never block.
            let _ = controller.recv_timeout(Duration::from_millis(10));
        }
        stop.store(true, Ordering::Relaxed);
        daemon
            .join()
            .expect("host loop")
            .expect("host loop ended cleanly");
        assert_eq!(
            calls.lock().unwrap()[..2],
            ["answers probes", "active"],
            "what the loop asked of the plane, in order"
        );
    }

    #[test]
    fn an_event_is_timed_by_its_boots_last_status() {
        let mut sh = Shared::default();
        assert_eq!(sh.event_time(500, Some(1), 9_000), 9_000, "no status: now");
        let report = StatusReport {
            uptime_ms: 1_000,
            members: heapless::Vec::new(),
            led: ha_proto::msg::host::LedReport::Off,
            frames_sent: 0,
            frames_received: 0,
            frames_rejected: 0,
        };
        sh.status = Some((report, 5_000));
        sh.status_epoch = Some(1);
        assert_eq!(
            sh.event_time(400, Some(1), 9_000),
            4_400,
            "before the status"
        );
        assert_eq!(sh.event_time(1_300, Some(1), 9_000), 5_300, "after it");
        assert_eq!(
            sh.event_time(9_000, Some(1), 9_000),
            9_000,
            "never in the future"
        );
        assert_eq!(
            sh.event_time(400, Some(2), 9_000),
            9_000,
            "another boot's status"
        );
    }

    #[test]
    fn link_events_give_each_links_last_change() {
        let mut sh = Shared::default();
        let ev = |name: &str, peer: &str, detail: &str| EventReport {
            seq: 0,
            at_ms: 0,
            name: heapless::String::try_from(name).unwrap(),
            peer: Serial::new(peer),
            detail: heapless::String::try_from(detail).unwrap(),
        };
        sh.note_link_event(&ev("link_down", "SN-B", "backup link to SN-B down"), 1_000);
        sh.note_link_event(&ev("link_up", "SN-C", "main link to SN-C up"), 2_000);
        sh.note_link_event(&ev("quality_changed", "SN-B", "quality 1 -> 2"), 9_000);
        assert_eq!(sh.link_changed_ms("SN-B", false, 1), Some(1_000));
        assert_eq!(sh.link_changed_ms("SN-B", false, 0), None);
        assert_eq!(
            sh.link_changed_ms("SN-A", true, 0),
            Some(2_000),
            "local: any peer"
        );
        sh.note_link_event(
            &ev("all_links_down", "SN-B", "every HA link to SN-B down"),
            3_000,
        );
        assert_eq!(sh.link_changed_ms("SN-B", false, 0), Some(3_000));
        assert_eq!(sh.link_changed_ms("SN-B", false, 1), Some(3_000));
    }
}
