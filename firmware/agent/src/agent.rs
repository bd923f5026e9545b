//! The agent's state machine.
//!
//! Calling order for a shell: feed every input (`on_frame`, `on_host`, `on_hardware`), call
//! `on_tick` when `next_wake_ms` is reached (calling it earlier or more often is harmless), and
//! after each call drain `poll_output` until it returns `None`.
//!
//! Rules implemented here (the ranking itself is in [`crate::election`]):
//! - **Liveness.** Each accepted frame from a peer marks the link it came on up. A link is down
//!   after `interval × miss_limit` ms of silence. A peer whose links are all down is *suspect*:
//!   the agent asks the main CPU to probe it over the data interfaces
//!   ([`HostMsg::ProbeRequest`]) and waits at most `probe_timeout_ms`. "Dead" or no answer: the
//!   peer is lost and leaves the election. "Alive": the HA links are broken but the peer is
//!   not; it stays in the election with its last known state and is probed again every
//!   `reprobe_ms`. One link down is only an event.
//! - **Startup.** A booting member is `Starting` until it has heard every peer or the startup
//!   window ends; then it joins the election (alone, it becomes active).
//! - **Election, per domain.** With no active among the live members, the best candidate
//!   becomes active. A running active stays unless a passive has strictly higher merit
//!   (forcing, quality, priority) *and* is the best candidate: it takes over after holding
//!   that advantage for `hold_down_ms` (at once when the advantage is forcing). The old
//!   active steps down when it hears the new one (make before break: the overlap lasts one
//!   frame delay).
//! - **Collision.** An active that hears another active which outranks it steps down. When
//!   both had been active longer than a link's dead time it is a collision (SPEC B4): the
//!   loser reports it and asks the winner for a resynchronization (on every link); the winner
//!   reports the collision when that request arrives.
//! - **Forcing.** Forced passive steps down at once; forced active outranks everyone.
//! - **Pause.** While this member or any live peer announces a pause, no role changes. A pause
//!   lasts at most [`MAX_PAUSE_MS`]; a peer's pause is ignored after that long too.

use ha_proto::config_block::MemberEntry;
use ha_proto::endpoint::{Endpoint, Reject, Senders};
use ha_proto::frame::MAX_FRAME_LEN;
use ha_proto::hostlink::{End, HostEndpoint, SealError};
use ha_proto::keys::{KeySet, Keyring, KeyringError, Psk};
use ha_proto::msg::host::{
    DomainRoleOf, DomainSummary, HostMsg, LedReport, MemberSummary, StatusReport,
};
use ha_proto::msg::member::{AdminCommand, DomainRole, Heard, Heartbeat, MemberMsg};
use ha_proto::msg::{
    Channel, Forced, LinkState, Role, Serial, MAX_DOMAINS, MAX_HA_LINKS, MAX_MEMBERS,
};
use heapless::{Deque, Vec};

use crate::config::{Config, ConfigError, MAX_PAUSE_MS};
use crate::election::{self, Candidate};
use crate::event::{Event, EventKind, EventRing, Reason};
use crate::output::{LedPattern, Output};
use crate::quality::{self, Hardware, HwReading};
use crate::status::{
    Counters, DomainStatus, LinkStatus, MemberStatus, PeerState, PeerStatus, Status,
};
use crate::LinkId;

/// Outputs queued between two drains: a burst is one role change in every domain (an event
/// each, one roles report) plus heartbeats on both links, probes and the LED; 48 covers it
/// for 16 domains. Beyond it outputs are dropped and counted.
pub const OUT_CAP: usize = 48;

/// How often the controller re-asserts its roles to the main CPU ([`HostMsg::Roles`]), ms.
/// A role is state: sent on every change and again this often, so a main CPU that missed a
/// frame (a stalled line, a restart) converges within this period. While the main CPU has
/// not been heard, a keepalive goes with it so that it learns this boot's epoch.
pub const ROLES_REFRESH_MS: u64 = 250;

/// A queued output, kept small: frames are sealed only when drained.
#[derive(Clone, Copy, Debug)]
enum Pending {
    Heartbeat(LinkId),
    Resync {
        link: LinkId,
        domain: u8,
        to: Serial,
    },
    AdminFor {
        link: LinkId,
        target: Serial,
        command: AdminCommand,
    },
    Roles,
    Probe(Serial),
    Ping(u32),
    Pong(u32),
    Led(LedPattern),
    Event(Event),
    Status,
    KeyState,
}

/// The HA agent of one member, for up to `M` members and `D` domains.
///
/// `Clone` lets the model checker (`ha-model`) branch a state into its successors; firmware
/// never clones an agent.
#[derive(Clone)]
pub struct Agent<const M: usize = MAX_MEMBERS, const D: usize = MAX_DOMAINS> {
    cfg: Config<M, D>,
    /// Member frames: sealing and the one acceptance path.
    member: Endpoint<M>,
    /// The controller's end of the host link.
    host: HostEndpoint,
    status: Status<M, D>,
    events: EventRing,
    out: Deque<Pending, OUT_CAP>,
    hw: Hardware,
    now: u64,
    my_index: u8,
    next_hb_ms: u64,
    startup_until_ms: u64,
    /// Per domain: since when this member has been the better candidate against the active.
    challenge_since: Vec<Option<u64>, D>,
    /// Per domain: when the last resynchronization request was reported.
    last_resync: Vec<Option<u64>, D>,
    /// Per peer (same order as `status.peers`): since when it announces a pause.
    peer_paused_since: Vec<Option<u64>, M>,
    /// Next periodic [`HostMsg::Roles`] (and keepalive while the main CPU is unheard).
    next_roles_ms: u64,
    /// The main CPU's boot last heard on the host link.
    host_peer_epoch: Option<u32>,
    /// Nonce of the next keepalive.
    ping_nonce: u32,
    /// Sequence number of the next event (gaps tell the main CPU events were lost).
    event_seq: u32,
    /// A member list taken from the main CPU whose addresses the shell has not fetched yet.
    new_member_addresses: Option<Vec<MemberEntry, MAX_MEMBERS>>,
    led: LedPattern,
    hint: Reason,
    order: election::MeritOrder,
}

impl<const M: usize, const D: usize> Agent<M, D> {
    /// Starts an agent at time `now_ms` (ms, monotonic) in boot epoch `epoch`: the member's
    /// persistent boot counter, which must increase on every boot (never 0, never the
    /// clock). All domains start in [`Role::Starting`].
    pub fn new(config: Config<M, D>, now_ms: u64, epoch: u32) -> Result<Self, ConfigError> {
        config.validate()?;
        if epoch == 0 {
            return Err(ConfigError::NoBootEpoch);
        }
        let keys = KeySet::derive(&config.psk, config.cluster_id, config.key_id);
        let member = Endpoint::new(
            Keyring::new(keys),
            config.cluster_id,
            config.me,
            epoch,
            Channel::Member,
            Channel::Member,
            config.encrypt,
        );
        let host = HostEndpoint::new(
            End::Controller,
            &config.psk,
            config.cluster_id,
            config.key_id,
            config.me,
            epoch,
            config.encrypt,
        );
        let my_index = config.member_index(&config.me).unwrap_or(0) as u8;
        let mut roles = Vec::new();
        let mut challenge_since = Vec::new();
        for d in &config.domains {
            // Capacity D holds every configured domain.
            let _ = roles.push(DomainStatus {
                domain: d.id,
                role: Role::Starting,
                since_ms: now_ms,
            });
            let _ = challenge_since.push(None);
        }
        let last_resync = challenge_since.clone();
        let me = MemberStatus {
            serial: config.me,
            model: config.model.clone(),
            firmware: config.firmware,
            forced: Forced::None,
            roles,
            quality: 100,
            interface_quality: 100,
            hardware_quality: 100,
            config_revision: config.config_revision,
            config_synced: true,
            boot_ms: now_ms,
            epoch,
            paused_until_ms: None,
            frozen: false,
            fail_soft: false,
            conflict: false,
        };
        let mut agent = Agent {
            member,
            host,
            status: Status {
                me,
                peers: Vec::new(),
                counters: Counters::default(),
            },
            events: EventRing::default(),
            out: Deque::new(),
            hw: Hardware::default(),
            now: now_ms,
            my_index,
            next_hb_ms: now_ms,
            startup_until_ms: now_ms + config.timers.startup_window_ms as u64,
            challenge_since,
            last_resync,
            peer_paused_since: Vec::new(),
            next_roles_ms: now_ms,
            host_peer_epoch: None,
            ping_nonce: 0,
            event_seq: 0,
            new_member_addresses: None,
            led: LedPattern::STARTING,
            hint: Reason::Elected,
            order: election::compare_merit,
            cfg: config,
        };
        agent.rebuild_peers();
        agent.roles_out();
        agent.push(Pending::Led(LedPattern::STARTING));
        agent.on_tick(now_ms);
        Ok(agent)
    }

    /// Makes the peer list match the configured members, keeping what is known of peers
    /// that stay.
    fn rebuild_peers(&mut self) {
        let old = core::mem::take(&mut self.status.peers);
        let old_paused = core::mem::take(&mut self.peer_paused_since);
        for (i, s) in self.cfg.members.iter().enumerate() {
            if *s == self.cfg.me {
                continue;
            }
            let kept = old.iter().position(|p| p.serial == *s);
            let mut p = match kept {
                Some(k) => old[k].clone(),
                None => PeerStatus {
                    serial: *s,
                    index: i as u8,
                    state: PeerState::Unknown,
                    state_since_ms: self.now,
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
                        since_ms: self.now,
                        last_rx_ms: None,
                    }; MAX_HA_LINKS],
                    fail_soft: false,
                },
            };
            p.index = i as u8;
            for (l, ls) in p.links.iter_mut().enumerate() {
                let configured = l < self.cfg.links as usize;
                if !configured {
                    ls.state = LinkState::Absent;
                } else if ls.state == LinkState::Absent {
                    ls.state = LinkState::Down;
                    ls.since_ms = self.now;
                }
            }
            // Capacity M holds every configured member.
            let _ = self.status.peers.push(p);
            let _ = self
                .peer_paused_since
                .push(kept.and_then(|k| old_paused.get(k).copied().flatten()));
        }
        for p in old.iter() {
            if !self.cfg.members.contains(&p.serial) {
                self.member.forget(p.serial);
            }
        }
    }

    // ----- accessors -----

    /// The status snapshot (SPEC E1).
    pub fn status(&self) -> &Status<M, D> {
        &self.status
    }

    /// The event ring (SPEC E3).
    pub fn events(&self) -> &EventRing {
        &self.events
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config<M, D> {
        &self.cfg
    }

    /// This member's role in a domain (`None` for an unknown domain).
    pub fn role(&self, domain: u8) -> Option<Role> {
        self.status.me.role(domain)
    }

    /// The current LED pattern.
    pub fn led(&self) -> LedPattern {
        self.led
    }

    /// The latest time the agent was given.
    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// Latest time by which [`Agent::on_tick`] must be called again (it may be in the past:
    /// then call it now).
    pub fn next_wake_ms(&self) -> u64 {
        let mut w = self.next_hb_ms.min(self.next_roles_ms);
        let dead = self.cfg.timers.profile.dead_ms() as u64;
        for p in &self.status.peers {
            for l in &p.links {
                if l.state == LinkState::Up {
                    if let Some(t) = l.last_rx_ms {
                        w = w.min(t + dead);
                    }
                }
            }
            match p.state {
                PeerState::Suspect { deadline_ms } => w = w.min(deadline_ms),
                PeerState::Unreachable { next_probe_ms } => w = w.min(next_probe_ms),
                _ => {}
            }
        }
        for ps in self.peer_paused_since.iter().flatten() {
            w = w.min(ps + MAX_PAUSE_MS);
        }
        if self
            .status
            .me
            .roles
            .iter()
            .any(|r| r.role == Role::Starting)
        {
            w = w.min(self.startup_until_ms);
        }
        if let Some(u) = self.status.me.paused_until_ms {
            w = w.min(u);
        }
        let hold = self.cfg.timers.hold_down_ms as u64;
        for c in self.challenge_since.iter().flatten() {
            w = w.min(c + hold);
        }
        w
    }

    /// The status as sent to the main CPU ([`HostMsg::Status`]): one summary per member, the
    /// local one first.
    pub fn status_report(&self) -> StatusReport {
        let me = &self.status.me;
        let domains_of = |serial: &Serial, list: &[crate::status::DomainStatus]| {
            let mut v: Vec<DomainSummary, MAX_DOMAINS> = Vec::new();
            for d in list.iter().take(MAX_DOMAINS) {
                let _ = v.push(DomainSummary {
                    domain: d.domain,
                    role: d.role,
                    priority: self.cfg.priority_in(d.domain, serial),
                });
            }
            v
        };
        let since = me
            .roles
            .iter()
            .map(|r| r.since_ms)
            .max()
            .unwrap_or(me.boot_ms);
        let mut members = Vec::new();
        let mut my_links = Vec::new();
        for l in 0..MAX_HA_LINKS {
            let st = if l >= self.cfg.links as usize {
                LinkState::Absent
            } else if self
                .status
                .peers
                .iter()
                .any(|p| p.links[l].state == LinkState::Up)
            {
                LinkState::Up
            } else {
                LinkState::Down
            };
            let _ = my_links.push(st);
        }
        let _ = members.push(MemberSummary {
            serial: me.serial,
            local: true,
            alive: true,
            quality: me.quality,
            forced: me.forced,
            firmware: me.firmware,
            config_revision: me.config_revision,
            paused: me.frozen,
            domains: domains_of(&me.serial, &me.roles),
            links: my_links,
            mode_since_ms: since.saturating_sub(me.boot_ms),
        });
        for p in &self.status.peers {
            let mut links = Vec::new();
            for l in p.links.iter() {
                let _ = links.push(l.state);
            }
            let _ = members.push(MemberSummary {
                serial: p.serial,
                local: false,
                alive: matches!(p.state, PeerState::Alive),
                quality: p.quality,
                forced: p.forced,
                firmware: p.firmware,
                config_revision: p.config_revision,
                paused: p.paused,
                domains: domains_of(&p.serial, &p.roles),
                links,
                mode_since_ms: p.state_since_ms.saturating_sub(me.boot_ms),
            });
        }
        let c = &self.status.counters;
        StatusReport {
            uptime_ms: self.now.saturating_sub(me.boot_ms),
            members,
            led: match self.led() {
                LedPattern::Off => LedReport::Off,
                LedPattern::Steady => LedReport::Steady,
                LedPattern::Blink { on_ms, off_ms } => LedReport::Blink { on_ms, off_ms },
            },
            frames_sent: c.sent,
            frames_received: c.received,
            frames_rejected: c.rejected_total(),
        }
    }

    /// Next output for the shell, or `None` when the queue is empty.
    pub fn poll_output(&mut self) -> Option<Output> {
        loop {
            let p = self.out.pop_front()?;
            let msg = match p {
                Pending::Heartbeat(link) => (link, MemberMsg::Heartbeat(self.heartbeat())),
                Pending::Resync { link, domain, to } => (
                    link,
                    MemberMsg::ResyncRequest {
                        domain,
                        to,
                        to_epoch: self.member.peer_epoch(to).unwrap_or(0),
                    },
                ),
                Pending::AdminFor {
                    link,
                    target,
                    command,
                } => (
                    link,
                    MemberMsg::AdminFor {
                        target,
                        // A member never heard cannot be bound to: 0 names none of its
                        // boots and it refuses the command.
                        target_epoch: self.member.peer_epoch(target).unwrap_or(0),
                        command,
                    },
                ),
                Pending::Roles => return Some(Output::Host(HostMsg::Roles(self.roles_report()))),
                Pending::Probe(peer) => return Some(Output::Host(HostMsg::ProbeRequest { peer })),
                Pending::Ping(nonce) => return Some(Output::Host(HostMsg::Ping { nonce })),
                Pending::Pong(nonce) => return Some(Output::Host(HostMsg::Pong { nonce })),
                Pending::Status => {
                    return Some(Output::Host(HostMsg::Status(self.status_report())))
                }
                Pending::KeyState => {
                    let ring = self.member.keyring();
                    let mut accepted = Vec::new();
                    let _ = accepted.push(ring.sealing().key_id());
                    if let Some(k) = ring.previous_key_id() {
                        let _ = accepted.push(k);
                    }
                    return Some(Output::Host(HostMsg::KeyState {
                        sealing_key_id: ring.sealing().key_id(),
                        accepted,
                    }));
                }
                Pending::Led(l) => return Some(Output::Led(l)),
                Pending::Event(e) => return Some(Output::Event(e)),
            };
            match self.seal(&msg.1) {
                Some(bytes) => {
                    self.status.counters.sent = self.status.counters.sent.wrapping_add(1);
                    return Some(Output::Send { link: msg.0, bytes });
                }
                None => {
                    self.status.counters.seal_errors =
                        self.status.counters.seal_errors.saturating_add(1)
                }
            }
        }
    }

    fn seal(&mut self, msg: &MemberMsg) -> Option<Vec<u8, MAX_FRAME_LEN>> {
        let mut buf: Vec<u8, MAX_FRAME_LEN> = Vec::new();
        buf.resize_default(MAX_FRAME_LEN).ok()?;
        let n = self.member.seal(msg, None, false, &mut buf).ok()?;
        buf.truncate(n);
        Some(buf)
    }

    /// Seals a host-link message (an [`Output::Host`]) for the main CPU into `out`; returns
    /// the frame length. The shell frames it for its UART ([`ha_proto::uart`]).
    pub fn seal_host(&mut self, msg: &HostMsg, out: &mut [u8]) -> Result<usize, SealError> {
        self.host.seal(msg, out)
    }

    /// The member list (with main-link addresses) the agent took from the main CPU since
    /// the last call, if it changed: where the shell sends main-link frames from now on.
    pub fn take_member_addresses(&mut self) -> Option<Vec<MemberEntry, MAX_MEMBERS>> {
        self.new_member_addresses.take()
    }

    /// Every domain's role, by domain id ([`HostMsg::Roles`]).
    fn roles_report(&self) -> Vec<DomainRoleOf, MAX_DOMAINS> {
        let mut v = Vec::new();
        for r in self.status.me.roles.iter().take(MAX_DOMAINS) {
            let _ = v.push(DomainRoleOf {
                domain: r.domain,
                role: r.role,
            });
        }
        v
    }

    fn heartbeat(&self) -> Heartbeat {
        let me = &self.status.me;
        let mut roles = Vec::new();
        for r in &me.roles {
            // D ≤ MAX_DOMAINS is not enforced by the type; extra domains are not announced.
            let _ = roles.push(DomainRole {
                domain: r.domain,
                role: r.role,
                for_ms: self.now.saturating_sub(r.since_ms).min(u32::MAX as u64) as u32,
            });
        }
        let mut links = Vec::new();
        for l in 0..MAX_HA_LINKS {
            let st = if l >= self.cfg.links as usize {
                LinkState::Absent
            } else if self
                .status
                .peers
                .iter()
                .any(|p| p.links[l].state == LinkState::Up)
            {
                LinkState::Up
            } else {
                LinkState::Down
            };
            let _ = links.push(st);
        }
        let mut heard = Vec::new();
        for p in &self.status.peers {
            if let Some(epoch) = self.member.peer_epoch(p.serial) {
                let _ = heard.push(Heard {
                    member: p.serial,
                    epoch,
                });
            }
        }
        Heartbeat {
            quality: me.quality,
            priority: self.cfg.priority(0, &me.serial),
            forced: me.forced,
            firmware: me.firmware,
            config_revision: me.config_revision,
            paused: me.paused_until_ms.is_some(),
            roles,
            links,
            uptime_ms: self.now.saturating_sub(me.boot_ms),
            heard,
        }
    }

    // ----- inputs -----

    fn advance(&mut self, now_ms: u64) {
        // A clock that goes backwards is held at the latest time seen.
        self.now = self.now.max(now_ms);
    }

    /// A frame received on `link`. The agent opens it through its member endpoint
    /// ([`ha_proto::endpoint`]: authentication, sender, replay, freshness against this boot,
    /// decoding); rejects are counted per [`Reject`].
    pub fn on_frame(&mut self, now_ms: u64, link: LinkId, bytes: &mut [u8]) {
        self.advance(now_ms);
        if let Err(r) = self.accept(link, bytes) {
            self.status.counters.rejected.count(r);
        }
        self.evaluate();
    }

    fn accept(&mut self, link: LinkId, bytes: &mut [u8]) -> Result<(), Reject> {
        if link.0 >= self.cfg.links {
            return Err(Reject::UnknownLink);
        }
        let (acc, msg) = self
            .member
            .open::<MemberMsg>(bytes, Senders::AnyOf(&self.cfg.members))?;
        let h = acc.header;
        let pi = self
            .status
            .peers
            .iter()
            .position(|p| p.serial == h.sender)
            .ok_or(Reject::WrongSender)?;
        self.status.counters.received = self.status.counters.received.wrapping_add(1);
        self.heard(pi, link, h.epoch);
        match msg {
            MemberMsg::Heartbeat(hb) => self.on_heartbeat(pi, &hb),
            MemberMsg::ResyncRequest { to, .. } if to != self.cfg.me => {}
            MemberMsg::ResyncRequest { domain, .. } => {
                // The loser of a collision asks once per link: report the first copy only.
                let di = self.cfg.domains.iter().position(|d| d.id == domain);
                let dead = self.cfg.timers.profile.dead_ms() as u64;
                let now = self.now;
                if let (Some(di), Some(Role::Active)) = (di, self.role(domain)) {
                    let fresh = self.last_resync[di].is_none_or(|t| now >= t + dead);
                    if fresh {
                        self.last_resync[di] = Some(now);
                        let by = self.status.peers[pi].serial;
                        self.event(EventKind::Collision {
                            domain,
                            peer: by,
                            won: true,
                        });
                        self.event(EventKind::ResyncRequested { domain, by });
                    }
                }
            }
            // Bound to this boot: the endpoint refused it otherwise.
            MemberMsg::AdminFor {
                target, command, ..
            } => {
                if target == self.cfg.me {
                    self.apply_admin(command);
                }
            }
            // Joining is driven by the host tools (SPEC A1/A6), not by the agent.
            MemberMsg::JoinRequest(_) | MemberMsg::JoinAccept(_) | MemberMsg::JoinReject(_) => {}
        }
        Ok(())
    }

    /// Liveness bookkeeping for any accepted frame of peer `pi` on `link`.
    fn heard(&mut self, pi: usize, link: LinkId, epoch: u32) {
        let now = self.now;
        let p = &mut self.status.peers[pi];
        let serial = p.serial;
        let restarted = matches!(p.epoch, Some(e) if epoch > e);
        p.epoch = Some(epoch);
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
            self.event(EventKind::PeerRestarted { peer: serial });
        }
        if found {
            self.event(EventKind::PeerFound { peer: serial });
        }
        if link_up {
            self.event(EventKind::LinkUp { peer: serial, link });
        }
    }

    fn on_heartbeat(&mut self, pi: usize, hb: &Heartbeat) {
        let now = self.now;
        let my_fw = self.cfg.firmware;
        let my_rev = self.cfg.config_revision;
        let p = &mut self.status.peers[pi];
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
            if self.cfg.domains.iter().any(|d| d.id == r.domain) {
                let _ = p.roles.push(DomainStatus {
                    domain: r.domain,
                    role: r.role,
                    since_ms: now.saturating_sub(r.for_ms as u64),
                });
                let _ = p.role_for_ms.push(r.for_ms);
            }
        }
        let ps = &mut self.peer_paused_since[pi];
        match (hb.paused, *ps) {
            (true, None) => *ps = Some(now),
            (false, Some(_)) => *ps = None,
            _ => {}
        }
        if fw_changed && hb.firmware != my_fw {
            self.event(EventKind::VersionMismatch {
                peer: serial,
                theirs: hb.firmware,
            });
        }
        if rev_changed && hb.config_revision != my_rev {
            self.event(EventKind::ConfigMismatch {
                peer: serial,
                theirs: hb.config_revision,
            });
        }
        self.refresh_flags();
    }

    fn refresh_flags(&mut self) {
        let live = |p: &&PeerStatus<D>| p.state.in_election();
        let me = &mut self.status.me;
        me.fail_soft = self.status.peers.iter().filter(live).any(|p| p.fail_soft);
        me.config_synced = self
            .status
            .peers
            .iter()
            .filter(live)
            .all(|p| p.config_revision == me.config_revision);
    }

    /// A frame from the main CPU (one host-link frame, UART framing removed): opened by the
    /// controller's end of the host link ([`ha_proto::hostlink`]), then handled as
    /// [`Agent::on_host`]. Rejects are counted per [`Reject`] (`host_rejected`).
    pub fn on_host_frame(&mut self, now_ms: u64, bytes: &mut [u8]) {
        self.advance(now_ms);
        match self.host.open(bytes) {
            Ok(msg) => {
                let peer = self.host.peer_epoch();
                if peer != self.host_peer_epoch {
                    // A main CPU (re)started or was heard for the first time: tell it the
                    // roles and the status now rather than at the next refresh.
                    self.host_peer_epoch = peer;
                    self.push(Pending::Roles);
                    self.push(Pending::Status);
                }
                self.on_host(now_ms, msg);
            }
            Err(r) => self.status.counters.host_rejected.count(r),
        }
    }

    /// A message from the main CPU, already authenticated (the simulator and tests drive the
    /// agent with these; a shell with a host link uses [`Agent::on_host_frame`]).
    pub fn on_host(&mut self, now_ms: u64, msg: HostMsg) {
        self.advance(now_ms);
        match msg {
            HostMsg::Interfaces(list) => {
                self.status.me.interface_quality =
                    quality::interface_part(&list, self.cfg.quality.aggregate);
                self.update_quality();
            }
            HostMsg::Admin { target, command } => match target {
                Some(t) if t != self.cfg.me => {
                    if self.cfg.members.contains(&t) {
                        for l in 0..self.cfg.links {
                            self.push(Pending::AdminFor {
                                link: LinkId(l),
                                target: t,
                                command,
                            });
                        }
                    }
                }
                _ => self.apply_admin(command),
            },
            HostMsg::ProbeResult { peer, alive } => self.on_probe(peer, alive),
            HostMsg::Ping { nonce } => self.push(Pending::Pong(nonce)),
            HostMsg::StatusRequest => self.push(Pending::Status),
            HostMsg::InstallKey { key_id, psk } => {
                // Installing the key already sealing is acknowledged, not an error; a refusal
                // (the same key id, a weak key) shows in the KeyState answer (the key id is
                // not listed).
                if self.member.keyring().sealing().key_id() != key_id {
                    let psk = Psk(psk.0);
                    let _ = self.accept_key(&psk, key_id);
                }
                self.push(Pending::KeyState);
            }
            HostMsg::UseKey { key_id } => {
                let _ = self.member.keyring_mut().seal_with(key_id);
                self.push(Pending::KeyState);
            }
            HostMsg::RetireKey { key_id } => {
                // Only the key now sealing may stay; anything else is answered with the
                // unchanged state so the main CPU sees the refusal.
                if self.member.keyring().sealing().key_id() == key_id {
                    self.member.keyring_mut().retire_previous();
                }
                self.push(Pending::KeyState);
            }
            HostMsg::Members(list) => {
                let mut members: Vec<Serial, M> = Vec::new();
                let fits = list.iter().all(|m| members.push(m.serial).is_ok());
                let before = self.cfg.members.clone();
                let taken = fits && self.set_members(now_ms, members).is_ok();
                if !taken {
                    self.event(EventKind::MembersRefused);
                } else if self.cfg.members != before {
                    self.new_member_addresses = Some(list);
                }
                self.push(Pending::Status);
            }
            // Messages the controller sends, not receives.
            HostMsg::Roles(_)
            | HostMsg::ProbeRequest { .. }
            | HostMsg::Pong { .. }
            | HostMsg::Status(_)
            | HostMsg::Event(_)
            | HostMsg::KeyState { .. } => {}
        }
        self.evaluate();
    }

    /// A hardware reading (disk, RAID, TPM, PSU, fan, module).
    pub fn on_hardware(&mut self, now_ms: u64, reading: HwReading) {
        self.on_hardware_report(now_ms, &[reading]);
    }

    /// One report of the sensor source: every reading is recorded, then the quality and the
    /// election are evaluated once, so a report never shows a transient quality that none of
    /// its readings describes (whatever their order).
    pub fn on_hardware_report(&mut self, now_ms: u64, readings: &[HwReading]) {
        self.advance(now_ms);
        for r in readings {
            self.hw.record(*r);
        }
        self.status.me.hardware_quality = self.hw.part(&self.cfg.quality);
        self.update_quality();
        self.evaluate();
    }

    fn update_quality(&mut self) {
        let me = &mut self.status.me;
        let q = quality::combine(me.interface_quality, me.hardware_quality);
        if q != me.quality {
            let from = me.quality;
            me.quality = q;
            self.event(EventKind::QualityChanged { from, to: q });
            self.heartbeat_now();
        }
    }

    fn on_probe(&mut self, peer: Serial, alive: bool) {
        let now = self.now;
        let reprobe = self.cfg.timers.reprobe_ms as u64;
        let Some(p) = self.status.peers.iter_mut().find(|p| p.serial == peer) else {
            return;
        };
        // Only an answer to a pending probe counts; a late one after the deadline is stale.
        if !matches!(p.state, PeerState::Suspect { .. }) {
            return;
        }
        p.state_since_ms = now;
        if alive {
            p.state = PeerState::Unreachable {
                next_probe_ms: now + reprobe,
            };
            self.event(EventKind::PeerUnreachable { peer });
        } else {
            p.state = PeerState::Lost;
            self.event(EventKind::PeerLost {
                peer,
                confirmed: true,
            });
            self.hint = Reason::PeerLost;
            self.refresh_flags();
        }
    }

    fn apply_admin(&mut self, cmd: AdminCommand) {
        let me = &mut self.status.me;
        match cmd {
            AdminCommand::ForceActive | AdminCommand::ForcePassive | AdminCommand::ResetForcing => {
                let f = match cmd {
                    AdminCommand::ForceActive => Forced::Active,
                    AdminCommand::ForcePassive => Forced::Passive,
                    _ => Forced::None,
                };
                if me.forced != f {
                    me.forced = f;
                    self.event(EventKind::ForcingChanged { forced: f });
                    self.heartbeat_now();
                }
            }
            AdminCommand::Pause { seconds } => {
                let until = self.now + (seconds as u64 * 1000).min(MAX_PAUSE_MS);
                me.paused_until_ms = Some(until);
                self.event(EventKind::Paused { until_ms: until });
                self.heartbeat_now();
            }
            AdminCommand::Resume => {
                if me.paused_until_ms.take().is_some() {
                    self.event(EventKind::Resumed);
                    self.heartbeat_now();
                }
            }
            AdminCommand::Reload => self.event(EventKind::ReloadRequested),
        }
    }

    /// Timers: heartbeats, link and probe deadlines, the startup window, pause and hold-down.
    pub fn on_tick(&mut self, now_ms: u64) {
        self.advance(now_ms);
        let now = self.now;
        let t = self.cfg.timers;
        if now >= self.next_roles_ms {
            self.next_roles_ms = now + ROLES_REFRESH_MS;
            if !self.out.iter().any(|p| matches!(p, Pending::Roles)) {
                self.push(Pending::Roles);
            }
            if self.host.peer_epoch().is_none() {
                self.ping_nonce = self.ping_nonce.wrapping_add(1);
                self.push(Pending::Ping(self.ping_nonce));
            }
        }
        if now >= self.next_hb_ms {
            self.heartbeat_now();
            let iv = t.profile.interval_ms() as u64;
            self.next_hb_ms = if self.next_hb_ms + iv > now {
                self.next_hb_ms + iv
            } else {
                now + iv
            };
        }
        let dead = t.profile.dead_ms() as u64;
        for pi in 0..self.status.peers.len() {
            let serial = self.status.peers[pi].serial;
            for l in 0..self.cfg.links as usize {
                let ls = &mut self.status.peers[pi].links[l];
                if ls.state == LinkState::Up && ls.last_rx_ms.is_some_and(|r| now >= r + dead) {
                    ls.state = LinkState::Down;
                    ls.since_ms = now;
                    self.event(EventKind::LinkDown {
                        peer: serial,
                        link: LinkId(l as u8),
                    });
                }
            }
            let p = &mut self.status.peers[pi];
            let all_down = p.links.iter().all(|l| l.state != LinkState::Up);
            match p.state {
                PeerState::Alive if all_down => {
                    p.state = PeerState::Suspect {
                        deadline_ms: now + t.probe_timeout_ms as u64,
                    };
                    p.state_since_ms = now;
                    self.push(Pending::Probe(serial));
                    self.event(EventKind::AllLinksDown { peer: serial });
                }
                PeerState::Suspect { deadline_ms } if now >= deadline_ms => {
                    p.state = PeerState::Lost;
                    p.state_since_ms = now;
                    self.event(EventKind::PeerLost {
                        peer: serial,
                        confirmed: false,
                    });
                    self.hint = Reason::PeerLost;
                    self.refresh_flags();
                }
                PeerState::Unreachable { next_probe_ms } if now >= next_probe_ms => {
                    p.state = PeerState::Suspect {
                        deadline_ms: now + t.probe_timeout_ms as u64,
                    };
                    self.push(Pending::Probe(serial));
                }
                _ => {}
            }
            if let Some(since) = self.peer_paused_since[pi] {
                if now >= since + MAX_PAUSE_MS {
                    // Ignored from now on: the pause outlived its bound.
                    self.status.peers[pi].paused = false;
                    self.peer_paused_since[pi] = None;
                }
            }
        }
        if let Some(u) = self.status.me.paused_until_ms {
            if now >= u {
                self.status.me.paused_until_ms = None;
                self.event(EventKind::Resumed);
                self.heartbeat_now();
            }
        }
        self.evaluate();
    }

    // ----- keys and configuration -----

    /// Phase 1 of a rollover: also accept member frames under `key_id` (derived from `psk`);
    /// sealing does not change until [`HostMsg::UseKey`]. A weak key is refused.
    pub fn accept_key(&mut self, psk: &Psk, key_id: u8) -> Result<(), KeyringError> {
        if psk.check_strength().is_err() {
            return Err(KeyringError::NotAccepted(key_id));
        }
        let next = KeySet::derive(psk, self.cfg.cluster_id, key_id);
        self.member.keyring_mut().accept(next)
    }

    /// Applies a new configuration without restarting (SPEC E2 "reload HA settings"):
    /// timers, weights, links, members, preferred members and the revision change in place.
    /// The serial, the cluster id and the domain list must stay the same
    /// ([`ConfigError::ReloadNeedsRestart`]); keys change through a rollover.
    pub fn reload(&mut self, now_ms: u64, config: Config<M, D>) -> Result<(), ConfigError> {
        config.validate()?;
        let same_domains = config.domains.len() == self.cfg.domains.len()
            && config
                .domains
                .iter()
                .zip(self.cfg.domains.iter())
                .all(|(a, b)| a.id == b.id);
        if config.me != self.cfg.me || config.cluster_id != self.cfg.cluster_id || !same_domains {
            return Err(ConfigError::ReloadNeedsRestart);
        }
        self.advance(now_ms);
        self.member.set_encrypt(config.encrypt);
        self.host.set_encrypt(config.encrypt);
        self.cfg = config;
        self.my_index = self.cfg.member_index(&self.cfg.me).unwrap_or(0) as u8;
        self.status.me.config_revision = self.cfg.config_revision;
        self.status.me.hardware_quality = self.hw.part(&self.cfg.quality);
        self.rebuild_peers();
        self.update_quality();
        self.refresh_flags();
        self.heartbeat_now();
        self.evaluate();
        Ok(())
    }

    /// Replaces the member list (SPEC A6: a failed member removed, a replacement joined):
    /// a reload with the same settings and `members`. A member no longer listed is
    /// forgotten at once; a new one is heard as soon as it speaks. Refused (nothing changes)
    /// when the list lacks this member, repeats one, or fails validation.
    pub fn set_members(&mut self, now_ms: u64, members: Vec<Serial, M>) -> Result<(), ConfigError> {
        if members == self.cfg.members {
            return Ok(());
        }
        let mut cfg = self.cfg.clone();
        cfg.members = members;
        self.reload(now_ms, cfg)?;
        let n = u8::try_from(self.cfg.members.len()).unwrap_or(u8::MAX);
        self.event(EventKind::MembersChanged { members: n });
        Ok(())
    }

    // ----- election -----

    /// Replaces the merit order of the election. Only for mutation testing: the simulator
    /// plants a wrong order and checks that its invariants report it. Firmware never calls it.
    #[doc(hidden)]
    pub fn set_merit_order(&mut self, order: election::MeritOrder) {
        self.order = order;
        self.evaluate();
    }

    /// Every private time-valued field a member-facing decision reads (agent clock, ms;
    /// `None` when unset), in a fixed order: the next heartbeat, the end of the startup
    /// window, then per domain the hold-down start and the last reported resynchronization,
    /// then per peer the start of its pause. Left out: `next_roles_ms`, which only repeats
    /// host-link messages. Only for the model checker, which folds them (relative to now)
    /// into its state fingerprint; a new such timer must be listed here. Firmware never
    /// calls it.
    #[doc(hidden)]
    pub fn private_timers(&self) -> impl Iterator<Item = Option<u64>> + '_ {
        [Some(self.next_hb_ms), Some(self.startup_until_ms)]
            .into_iter()
            .chain(self.challenge_since.iter().copied())
            .chain(self.last_resync.iter().copied())
            .chain(self.peer_paused_since.iter().copied())
    }

    /// True while decisions are frozen by a pause here or on a live peer.
    fn frozen(&self) -> bool {
        self.status.me.paused_until_ms.is_some()
            || self
                .status
                .peers
                .iter()
                .any(|p| p.state == PeerState::Alive && p.paused)
    }

    fn candidate_of(&self, di: usize, p: &PeerStatus<D>) -> Candidate {
        Candidate {
            index: p.index,
            forced: p.forced,
            quality: p.quality,
            priority: self.cfg.priority(di, &p.serial),
        }
    }

    fn my_candidate(&self, di: usize) -> Candidate {
        Candidate {
            index: self.my_index,
            forced: self.status.me.forced,
            quality: self.status.me.quality,
            priority: self.cfg.priority(di, &self.cfg.me),
        }
    }

    fn evaluate(&mut self) {
        let frozen = self.frozen();
        self.status.me.frozen = frozen;
        for di in 0..self.status.me.roles.len() {
            if !frozen {
                self.evaluate_domain(di);
            } else if self.status.me.forced == Forced::Passive
                && self.status.me.roles[di].role == Role::Active
            {
                // An operator's forcing is obeyed even while decisions are paused.
                self.set_role(di, Role::Passive, Reason::Forced);
            }
        }
        self.hint = Reason::Elected;
        self.status.me.conflict = self.status.me.roles.iter().any(|r| {
            r.role == Role::Active
                && self
                    .status
                    .peers
                    .iter()
                    .any(|p| p.state.in_election() && p.role(r.domain) == Some(Role::Active))
        });
    }

    fn evaluate_domain(&mut self, di: usize) {
        let now = self.now;
        let n = self.cfg.members.len() as u8;
        let DomainStatus {
            domain,
            role,
            since_ms,
        } = self.status.me.roles[di];
        let me = self.my_candidate(di);
        if me.forced == Forced::Passive {
            self.challenge_since[di] = None;
            if role != Role::Passive {
                self.set_role(di, Role::Passive, Reason::Forced);
            }
            return;
        }
        if role == Role::Starting {
            let heard_all = self
                .status
                .peers
                .iter()
                .all(|p| p.state != PeerState::Unknown);
            if now < self.startup_until_ms && !heard_all {
                return;
            }
        }
        let dead = self.cfg.timers.profile.dead_ms() as u64;
        // Best active peer (the incumbent) and the best candidate overall.
        let mut incumbent: Option<(Candidate, u32, Serial)> = None;
        let mut best = me;
        for p in self.status.peers.iter().filter(|p| p.state.in_election()) {
            let c = self.candidate_of(di, p);
            let prole = p.role(domain);
            if prole == Some(Role::Active) {
                let for_ms = p
                    .roles
                    .iter()
                    .position(|r| r.domain == domain)
                    .and_then(|i| p.role_for_ms.get(i).copied())
                    .unwrap_or(0);
                if incumbent
                    .is_none_or(|(ic, _, _)| election::outranks_by(self.order, &c, &ic, n, domain))
                {
                    incumbent = Some((c, for_ms, p.serial));
                }
            }
            let eligible = c.forced != Forced::Passive && prole != Some(Role::Disabled);
            if eligible && election::outranks_by(self.order, &c, &best, n, domain) {
                best = c;
            }
        }
        match role {
            Role::Active => {
                self.challenge_since[di] = None;
                let Some((ic, for_ms, peer)) = incumbent else {
                    return;
                };
                let collision = now.saturating_sub(since_ms) >= dead && for_ms as u64 >= dead;
                if election::outranks_by(self.order, &ic, &me, n, domain) {
                    if collision {
                        self.event(EventKind::Collision {
                            domain,
                            peer,
                            won: false,
                        });
                        for l in 0..self.cfg.links {
                            self.push(Pending::Resync {
                                link: LinkId(l),
                                domain,
                                to: peer,
                            });
                        }
                        self.set_role(di, Role::Passive, Reason::Collision);
                    } else {
                        self.set_role(di, Role::Passive, Reason::Handover);
                    }
                }
            }
            Role::Passive | Role::Starting => {
                let i_am_best = best.index == me.index;
                match incumbent {
                    None => {
                        self.challenge_since[di] = None;
                        if i_am_best {
                            let why = if role == Role::Starting {
                                Reason::Startup
                            } else {
                                self.hint
                            };
                            self.set_role(di, Role::Active, why);
                        } else if role == Role::Starting {
                            self.set_role(di, Role::Passive, Reason::Startup);
                        }
                    }
                    Some((ic, _, _)) => {
                        if role == Role::Starting {
                            // The running active stays; challenge from the passive role.
                            self.set_role(di, Role::Passive, Reason::Startup);
                        }
                        let better =
                            i_am_best && (self.order)(&me, &ic) == core::cmp::Ordering::Greater;
                        if !better {
                            self.challenge_since[di] = None;
                        } else if me.forced != ic.forced {
                            self.challenge_since[di] = None;
                            self.set_role(di, Role::Active, Reason::Forced);
                        } else {
                            let since = *self.challenge_since[di].get_or_insert(now);
                            if now >= since + self.cfg.timers.hold_down_ms as u64 {
                                self.challenge_since[di] = None;
                                self.set_role(di, Role::Active, Reason::Better);
                            }
                        }
                    }
                }
            }
            Role::Disabled => {}
        }
    }

    fn set_role(&mut self, di: usize, to: Role, reason: Reason) {
        let r = &mut self.status.me.roles[di];
        let from = r.role;
        if from == to {
            return;
        }
        r.role = to;
        r.since_ms = self.now;
        let domain = r.domain;
        self.event(EventKind::RoleChanged {
            domain,
            from,
            to,
            reason,
        });
        self.roles_out();
        self.heartbeat_now();
        self.update_led();
    }

    /// Queues the roles report (and a status report) once per batch of role changes: one
    /// report describes every domain, built when drained. The report goes ahead of every
    /// other queued output but earlier reports: a takeover must not wait behind events.
    fn roles_out(&mut self) {
        if !self.out.iter().any(|p| matches!(p, Pending::Roles))
            && self.out.push_front(Pending::Roles).is_err()
        {
            self.status.counters.output_dropped =
                self.status.counters.output_dropped.saturating_add(1);
        }
        if !self.out.iter().any(|p| matches!(p, Pending::Status)) {
            self.push(Pending::Status);
        }
    }

    fn update_led(&mut self) {
        let roles = &self.status.me.roles;
        let led = if roles.iter().any(|r| r.role == Role::Active) {
            LedPattern::Steady
        } else if roles.iter().any(|r| r.role == Role::Starting) {
            LedPattern::STARTING
        } else if roles.iter().any(|r| r.role == Role::Passive) {
            LedPattern::PASSIVE
        } else {
            LedPattern::Off
        };
        if led != self.led {
            self.led = led;
            self.push(Pending::Led(led));
        }
    }

    // ----- output plumbing -----

    fn heartbeat_now(&mut self) {
        for l in 0..self.cfg.links {
            let link = LinkId(l);
            // One queued heartbeat per link is enough: its content is built when drained.
            if !self
                .out
                .iter()
                .any(|p| matches!(p, Pending::Heartbeat(x) if *x == link))
            {
                self.push(Pending::Heartbeat(link));
            }
        }
    }

    fn event(&mut self, kind: EventKind) {
        let e = Event {
            seq: self.event_seq,
            at_ms: self.now,
            kind,
        };
        self.event_seq = self.event_seq.wrapping_add(1);
        self.events.push(e);
        self.push(Pending::Event(e));
    }

    fn push(&mut self, p: Pending) {
        if self.out.push_back(p).is_err() {
            self.status.counters.output_dropped =
                self.status.counters.output_dropped.saturating_add(1);
        }
    }
}
