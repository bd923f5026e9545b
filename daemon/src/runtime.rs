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

use ha_proto::msg::host::{EventReport, HostMsg, StatusReport};
use ha_proto::msg::{Role, Serial};

use crate::fastpath::{Filter, Stats};
use crate::links::{interfaces_msg, LinkMonitor, MonitoredIface};
use crate::packetio::{Core, Senders};
use ha_hostlink::HostLink;

/// Events kept for `events` requests: the controller's own ring holds fewer, so this never
/// loses one the controller still had.
pub const EVENTS_MAX: usize = 4096;
/// How long a probe of a peer waits for an echo reply before answering "not alive".
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(150);
/// Echo requests are repeated this often during a probe (a lost packet is not a dead peer).
pub const PROBE_RESEND: Duration = Duration::from_millis(50);
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
/// How often the daemon tells its controller it is alive (a keepalive): the controller takes
/// this member out of the election when its main CPU is silent for its main-CPU timeout
/// (`ha_agent::config::DEFAULT_MAIN_CPU_TIMEOUT_MS`, 10 keepalives).
pub const KEEPALIVE: Duration = Duration::from_millis(100);

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
    /// True while the host link is connected.
    pub host_connected: bool,
    /// The peers' data-plane addresses (probe targets, state-sync peer): edited by
    /// membership changes, read by the probe and the sync thread.
    pub peers: crate::peers::PeerBook,
    /// This member's own data-plane addresses, as a joining member hands them to its peers.
    pub addresses: ha_mgmt_api::MemberAddresses,
    /// The role the forwarding plane applies, as the host loop last set it.
    pub forwarding: ForwardingRole,
}

/// The role the forwarding plane applies and its history, kept by the host loop
/// (`hactl forwarding`, the chaos monitor).
#[derive(Debug, Default, Clone)]
pub struct ForwardingRole {
    /// True while the fast path forwards and owns the cluster addresses.
    pub active: bool,
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
    /// Records one of the daemon's own events and hands it to the followers.
    pub fn push_local_event(&mut self, e: ha_mgmt_api::Event) {
        if self.local_events.len() >= EVENTS_MAX {
            self.local_events.pop_front();
        }
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

/// What a role change does to the forwarding plane: the connection table's activation
/// (a generation flip) and the fast path's role, under one lock.
pub trait Activate {
    /// Becomes active (`true`) or passive.
    fn set_role(&mut self, active: bool, now: Instant);
}

/// The forwarding plane as the host loop drives it, whichever data path carries the traffic:
/// the userspace fast path ([`Forwarding`]) or the kernel's
/// ([`crate::kernelpath::KernelPlane`]).
pub trait Plane: Send {
    /// Takes (`true`) or gives up the active role at `now`, announcing the cluster addresses
    /// on a takeover; true when the role changed.
    fn set_active(&mut self, active: bool, now: Instant) -> bool;
    /// True while this member forwards.
    fn is_active(&self) -> bool;
    /// Announces the cluster addresses again (gratuitous ARP); nothing while passive.
    fn announce(&mut self);
    /// The controller is heard (`true`) or silent: only a member with a live controller
    /// answers its peer's liveness probes.
    fn set_ha_alive(&mut self, alive: bool);
    /// Sends an echo request to `peer` (a member address on a forwarding interface's subnet);
    /// its sequence number, `None` when no forwarding interface reaches the address.
    fn probe(&mut self, peer: Ipv4Addr, now: Instant) -> Option<u16>;
    /// True (once) when the echo reply `seq` from `peer` arrived.
    fn probe_answered(&mut self, peer: Ipv4Addr, seq: u16) -> bool;
    /// The userspace fast path's counters (`None` on the kernel path, whose counters are
    /// among the state-sync counters).
    fn fast_path_stats(&self) -> Option<Stats>;
}

/// The userspace fast path as the host loop drives it.
pub struct Forwarding<F> {
    /// Fast path and filter.
    pub core: Arc<Mutex<Core<F>>>,
    /// Where their frames go.
    pub senders: Senders,
}

impl<F> Forwarding<F> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Core<F>> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<F: Filter + Activate + Send + 'static> Plane for Forwarding<F> {
    fn set_active(&mut self, active: bool, now: Instant) -> bool {
        let (changed, outs) = {
            let mut c = self.lock();
            let was = c.fp.is_active();
            c.filter.set_role(active, now);
            (active != was, c.fp.set_active(active))
        };
        self.senders.send_all(&outs);
        changed
    }

    fn is_active(&self) -> bool {
        self.lock().fp.is_active()
    }

    fn announce(&mut self) {
        let outs = self.lock().fp.garp();
        self.senders.send_all(&outs);
    }

    fn set_ha_alive(&mut self, alive: bool) {
        self.lock().fp.set_ha_alive(alive);
    }

    fn probe(&mut self, peer: Ipv4Addr, now: Instant) -> Option<u16> {
        let (outs, seq) = self.lock().fp.probe(peer, now)?;
        self.senders.send_all(&outs);
        Some(seq)
    }

    fn probe_answered(&mut self, peer: Ipv4Addr, seq: u16) -> bool {
        self.lock().fp.probe_answered(peer, seq)
    }

    fn fast_path_stats(&self) -> Option<Stats> {
        Some(self.lock().fp.stats().clone())
    }
}

struct Probe {
    peer: Serial,
    targets: Vec<(Ipv4Addr, Vec<u16>)>,
    started: Instant,
    last_sent: Instant,
}

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
    probes: Vec<Probe>,
    garp_due: Vec<Instant>,
    last_garp: Option<Instant>,
    last_report: Option<Instant>,
    active: bool,
}

impl HostLoop {
    /// Runs until the stop flag is set (`Ok`) or the host link fails (`Err`: the caller
    /// goes passive and reconnects).
    pub fn run<T: Read + Write + AsFd>(
        &mut self,
        link: &mut HostLink<T>,
        monitor: &mut LinkMonitor,
        st: &mut LoopState,
    ) -> io::Result<()> {
        self.lock_shared().host_connected = true;
        // A fresh link: report the interfaces and ask for the cluster status at once.
        self.send_interfaces(link, monitor)?;
        st.last_report = Some(Instant::now());
        link.send(&HostMsg::StatusRequest)?;
        while !self.stop.load(Ordering::Relaxed) {
            while let Ok(m) = self.outbox.try_recv() {
                link.send(&m)?;
            }
            if let Some(msg) = link.recv_timeout(TICK)? {
                st.heard_at = Some(Instant::now());
                self.on_msg(link, msg, st)?;
            }
            let now = Instant::now();
            let alive = st
                .heard_at
                .is_some_and(|t| now.duration_since(t) < CONTROLLER_SILENCE);
            if alive != st.controller_alive {
                self.set_controller_alive(alive, st);
            }
            if st
                .last_keepalive
                .is_none_or(|t| now.duration_since(t) >= KEEPALIVE)
            {
                st.keepalive_nonce = st.keepalive_nonce.wrapping_add(1);
                link.send(&HostMsg::Ping {
                    nonce: st.keepalive_nonce,
                })?;
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
                self.send_interfaces(link, monitor)?;
                st.last_report = Some(now);
                st.reported_to = controller;
            }
            self.run_probes(link, st, now)?;
            self.run_garp(st, now);
            let stats = self.forwarding.as_ref().and_then(|f| f.fast_path_stats());
            let mut sh = self.lock_shared();
            sh.fast_path = stats;
            sh.host_accepted = link.codec().accepted();
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

    fn send_interfaces<T: Read + Write + AsFd>(
        &self,
        link: &mut HostLink<T>,
        monitor: &LinkMonitor,
    ) -> io::Result<()> {
        let msg = interfaces_msg(&self.ifaces, |n| monitor.is_up(n))
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
        link.send(&msg)
    }

    fn on_msg<T: Read + Write + AsFd>(
        &mut self,
        link: &mut HostLink<T>,
        msg: HostMsg,
        st: &mut LoopState,
    ) -> io::Result<()> {
        match msg {
            HostMsg::Ping { nonce } => link.send(&HostMsg::Pong { nonce })?,
            // The one role path: the controller re-asserts every domain's role on every
            // change and periodically; applying it is idempotent, so the forwarding plane
            // converges to the controller's roles whatever was lost on the line.
            HostMsg::Roles(roles) => {
                let fwd_domain = self.domain;
                let role = roles
                    .iter()
                    .find(|r| r.domain == fwd_domain)
                    .map(|r| r.role);
                let role = role.unwrap_or(Role::Disabled);
                let known = self.lock_shared().role.map(|(r, _)| r);
                if known != Some(role) {
                    self.set_active(role == Role::Active, st);
                    self.lock_shared().role = Some((role, unix_now()));
                }
            }
            HostMsg::ProbeRequest { peer } => self.start_probe(link, peer, st)?,
            HostMsg::Status(report) => {
                self.lock_shared().status = Some((report, unix_ms()));
            }
            HostMsg::Event(ev) => {
                let mut sh = self.lock_shared();
                if sh.events.len() >= EVENTS_MAX {
                    sh.events.pop_front();
                }
                let item = (ev, unix_ms());
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
            self.lock_shared().role = None;
        }
        if let Some(f) = &mut self.forwarding {
            f.set_ha_alive(alive);
        }
    }

    /// Applies a role to the forwarding plane; taking over sends gratuitous ARP now and
    /// again at [`GARP_REPEATS`].
    pub fn set_active(&mut self, active: bool, st: &mut LoopState) {
        let now = Instant::now();
        st.active = active;
        let Some(f) = &mut self.forwarding else {
            return;
        };
        let was = f.is_active();
        let left_active = was && !active;
        let changed = f.set_active(active, now);
        if active && !was {
            st.garp_due = GARP_REPEATS.iter().map(|d| now + *d).collect();
            st.last_garp = Some(now);
        }
        if changed {
            // Recorded after the fast path's lock is released (never both locks at once).
            let mut sh = self.lock_shared();
            sh.forwarding.active = active;
            sh.forwarding.since_ms = unix_ms();
            sh.forwarding.changes += 1;
        }
        if left_active {
            if let Some((ifaces, down_for)) = self.bounce.clone() {
                // Off the host loop's thread: the loop must keep answering the controller.
                std::thread::spawn(move || {
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

    fn start_probe<T: Read + Write + AsFd>(
        &mut self,
        link: &mut HostLink<T>,
        peer: Serial,
        st: &mut LoopState,
    ) -> io::Result<()> {
        let targets: Vec<Ipv4Addr> = self.lock_shared().peers.probe_targets(peer);
        if targets.is_empty() || self.forwarding.is_none() {
            // Nothing to probe with: the peer is not proven alive, the takeover may go on.
            return link.send(&HostMsg::ProbeResult { peer, alive: false });
        }
        let now = Instant::now();
        let mut p = Probe {
            peer,
            targets: targets.into_iter().map(|t| (t, Vec::new())).collect(),
            started: now,
            last_sent: now,
        };
        self.send_probe(&mut p);
        st.probes.push(p);
        Ok(())
    }

    fn send_probe(&mut self, p: &mut Probe) {
        let Some(f) = &mut self.forwarding else {
            return;
        };
        let now = Instant::now();
        for (ip, seqs) in &mut p.targets {
            if let Some(seq) = f.probe(*ip, now) {
                seqs.push(seq);
            }
        }
        p.last_sent = now;
    }

    fn run_probes<T: Read + Write + AsFd>(
        &mut self,
        link: &mut HostLink<T>,
        st: &mut LoopState,
        now: Instant,
    ) -> io::Result<()> {
        let Some(f) = &mut self.forwarding else {
            st.probes.clear();
            return Ok(());
        };
        let mut done = Vec::new();
        for (i, p) in st.probes.iter().enumerate() {
            let answered = p
                .targets
                .iter()
                .any(|(ip, seqs)| seqs.iter().any(|s| f.probe_answered(*ip, *s)));
            if answered {
                done.push((i, true));
            } else if now.duration_since(p.started) >= PROBE_TIMEOUT {
                done.push((i, false));
            }
        }
        for (i, alive) in done.iter().rev() {
            let p = st.probes.remove(*i);
            link.send(&HostMsg::ProbeResult {
                peer: p.peer,
                alive: *alive,
            })?;
        }
        let resend: Vec<usize> = st
            .probes
            .iter()
            .enumerate()
            .filter(|(_, p)| now.duration_since(p.last_sent) >= PROBE_RESEND)
            .map(|(i, _)| i)
            .collect();
        for i in resend {
            let mut p = st.probes.remove(i);
            self.send_probe(&mut p);
            st.probes.insert(i, p);
        }
        Ok(())
    }
}
