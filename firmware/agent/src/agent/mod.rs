//! The agent's state machine: a facade over sub-structures that each own their state.
//!
//! | part                  | owns                                                            |
//! |-----------------------|-----------------------------------------------------------------|
//! | `wire`                | the member and host-link endpoints, their keys, frame counters  |
//! | `peers`               | liveness per link and peer, probes, peers' pauses, heartbeats   |
//! | `domains`             | roles per domain, hold-down, collisions and resync, the LED     |
//! | `local`               | this member: forcing, pause, quality parts, flags               |
//! | `sensors`             | the sensor source's readings and its silence                    |
//! | `host`                | the main CPU: roles refresh, keepalive, member addresses        |
//! | `outbox`              | outputs queued between drains, the numbered event ring          |
//!
//! The [`Agent`] routes inputs to them and builds outputs from them (`crate::report`).
//!
//! Calling order for a shell (quinn-style): feed every input (`handle_member_frame`,
//! `handle_host_frame`, `handle_sensor_report`), call [`Agent::handle_timeout`] when
//! [`Agent::poll_at`] is reached (calling it earlier or more often is harmless: it is
//! idempotent), and after each call drain [`Agent::poll_output`] until it returns `None`.

mod domains;
mod host;
mod local;
mod outbox;
mod peers;
mod sensors;
mod stamp;
mod wire;

use ha_proto::config_block::{HaSettings, MemberEntry};
use ha_proto::endpoint::Reject;
use ha_proto::hostlink::SealError;
use ha_proto::keys::{KeyringError, Psk};
use ha_proto::msg::host::{HostMsg, StatusReport, CAP_COMPACT_FRAMES};
use ha_proto::msg::member::MemberMsg;
use ha_proto::msg::{Role, Serial, MAX_DOMAINS, MAX_MEMBERS};
use ha_proto::sensor::SensorReading;
use heapless::Vec;

pub use host::ROLES_REFRESH_MS;
pub use outbox::OUT_CAP;

use crate::config::{Config, ConfigError};
use crate::election::MeritOrder;
use crate::event::{EventKind, EventRing};
use crate::link::LinkId;
use crate::output::{LedPattern, Output};
use crate::quality;
use crate::report::{self, Snapshot};
use crate::status::{ProbeNote, Status};
use domains::{Domains, Inputs};
use host::HostSide;
use local::Local;
use outbox::{Outbox, Pending};
use peers::Peers;
use sensors::Sensors;
use wire::Wire;

/// The HA agent of one member, for up to `M` members and `D` domains.
///
/// `Clone` lets the model checker (`ha-model`) branch a state into its successors; firmware
/// never clones an agent.
#[derive(Clone)]
pub struct Agent<const M: usize = MAX_MEMBERS, const D: usize = MAX_DOMAINS> {
    cfg: Config<M, D>,
    wire: Wire<M>,
    local: Local,
    peers: Peers<M, D>,
    domains: Domains<D>,
    sensors: Sensors,
    host: HostSide,
    out: Outbox,
    /// The latest time the agent was given.
    now: u64,
}

impl<const M: usize, const D: usize> Agent<M, D> {
    /// Starts an agent at time `now_ms` (ms, monotonic) in boot epoch `epoch`: the member's
    /// persistent boot counter, which must increase on every boot (never 0, never the
    /// clock). All domains start in [`Role::Starting`].
    pub fn new(config: Config<M, D>, now_ms: u64, epoch: u32) -> Result<Self, ConfigError> {
        Self::check(&config, epoch)?;
        let mut agent = Agent {
            wire: Wire::new(&config, epoch),
            local: Local::new(&config, now_ms, epoch),
            peers: Peers::new(&config, now_ms),
            domains: Domains::new(&config, now_ms),
            sensors: Sensors::new(now_ms),
            host: HostSide::new(now_ms),
            out: Outbox::new(),
            now: now_ms,
            cfg: config,
        };
        agent.start(now_ms);
        Ok(agent)
    }

    /// Like [`Agent::new`], but builds the agent in `slot` (firmware: a static), so that it
    /// is not built on the stack and then copied: a returned agent passed through the boot
    /// stack two or three times (24 KiB of stack for an 8 KiB agent). On an error `slot` is
    /// left uninitialised. Not inlined: the caller's stack frame (the firmware builds the
    /// configuration in it) and this one are not merged.
    #[inline(never)]
    pub fn init_in(
        slot: &mut core::mem::MaybeUninit<Self>,
        config: Config<M, D>,
        now_ms: u64,
        epoch: u32,
    ) -> Result<&mut Self, ConfigError> {
        Self::check(&config, epoch)?;
        let agent = slot.write(Agent {
            wire: Wire::new(&config, epoch),
            local: Local::new(&config, now_ms, epoch),
            peers: Peers::new(&config, now_ms),
            domains: Domains::new(&config, now_ms),
            sensors: Sensors::new(now_ms),
            host: HostSide::new(now_ms),
            out: Outbox::new(),
            now: now_ms,
            cfg: config,
        });
        agent.start(now_ms);
        Ok(agent)
    }

    /// What [`Agent::new`] refuses: an invalid configuration, or no boot epoch.
    fn check(config: &Config<M, D>, epoch: u32) -> Result<(), ConfigError> {
        config.validate()?;
        if epoch == 0 {
            return Err(ConfigError::NoBootEpoch);
        }
        Ok(())
    }

    /// The first outputs of a new agent: its roles, the starting LED, its first timeout.
    fn start(&mut self, now_ms: u64) {
        self.out.roles_changed();
        self.out.push(Pending::Led(LedPattern::STARTING));
        self.handle_timeout(now_ms);
    }

    // ----- accessors -----

    /// The status snapshot (SPEC E1), borrowed from the agent.
    pub fn status(&self) -> Status<'_, D> {
        Status {
            me: self.local.status(),
            roles: self.domains.roles(),
            peers: self.peers.as_slice(),
            counters: self.wire.counters(),
            output_dropped: self.out.dropped(),
            sensors_silent: self.sensors.silent(),
            main_cpu_lost: self.host.main_cpu_lost(),
        }
    }

    /// The event ring (SPEC E3).
    pub fn events(&self) -> &EventRing {
        self.out.events()
    }

    /// The configuration in use.
    pub fn config(&self) -> &Config<M, D> {
        &self.cfg
    }

    /// This member's role in a domain (`None` for an unknown domain).
    pub fn role(&self, domain: u8) -> Option<Role> {
        self.domains.role(domain)
    }

    /// The current LED pattern.
    pub fn led(&self) -> LedPattern {
        self.domains.led()
    }

    /// The latest time the agent was given.
    pub fn now_ms(&self) -> u64 {
        self.now
    }

    /// The status as sent to the main CPU ([`HostMsg::Status`]): one summary per member, the
    /// local one first.
    #[must_use]
    pub fn status_report(&self) -> StatusReport {
        self.snapshot().status_report()
    }

    /// The details sent to the main CPU ([`HostMsg::Details`]): the model and every heard
    /// member's uptime.
    #[must_use]
    pub fn details_report(&self) -> ha_proto::msg::host::DetailsReport {
        self.snapshot().details_report()
    }

    /// What this agent counted since boot ([`HostMsg::Counters`]): takeovers, peers lost,
    /// probes asked again, events lost before they were sent.
    #[must_use]
    pub fn counters(&self) -> ha_proto::msg::host::CountersReport {
        self.out.counts()
    }

    fn snapshot(&self) -> Snapshot<'_, M, D> {
        Snapshot {
            config: &self.cfg,
            status: self.status(),
            led: self.domains.led(),
            now: self.now,
            next_event: self.out.next_event(),
        }
    }

    // ----- outputs -----

    /// Latest time by which [`Agent::handle_timeout`] must be called again (it may be in the
    /// past: then call it now).
    #[must_use]
    pub fn poll_at(&self) -> u64 {
        let t = &self.cfg.timers;
        self.host
            .poll_at(self.cfg.main_cpu_timeout_ms)
            .min(self.peers.poll_at(t, self.cfg.links))
            .min(self.domains.poll_at(t.hold_down_ms))
            .min(self.local.poll_at())
            .min(self.sensors.poll_at(self.cfg.sensor_timeout_ms))
            .min(if self.out.events_waiting() {
                self.now + outbox::EVENT_PACE_MS
            } else {
                u64::MAX
            })
    }

    /// Next output for the shell, or `None` when the queue is empty. Frames and reports are
    /// built and sealed now, from the current state.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        let mut out = None;
        self.poll_output_into(&mut out);
        out
    }

    /// [`Agent::poll_output`] into `out` (`None` when the queue is empty): the output is
    /// built in place, not moved through stack frames (it holds up to a frame, about
    /// 1.5 KiB: the firmware's stack budget, docs/firmware.md "Size").
    #[inline(never)]
    pub fn poll_output_into(&mut self, out: &mut Option<Output>) {
        *out = None;
        while out.is_none() {
            let Some(pending) = self.out.pop() else {
                return;
            };
            self.output_of(pending, out);
        }
    }

    /// The output for one pending item, into `out`: left `None` when it was a member frame
    /// that could not be sealed (counted by the wire). Not inlined, and each report or
    /// frame is built by a function of its own, so that their stack frames are not stacked.
    #[inline(never)]
    fn output_of(&mut self, pending: Pending, out: &mut Option<Output>) {
        let (link, msg) = match pending {
            Pending::Heartbeat(link) => return self.heartbeat_output(link, out),
            Pending::Resync { link, domain, to } => (
                link,
                MemberMsg::ResyncRequest {
                    domain,
                    to,
                    to_epoch: self.wire.member_epoch(to).unwrap_or(0),
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
                    target_epoch: self.wire.member_epoch(target).unwrap_or(0),
                    command,
                },
            ),
            Pending::Roles => return self.roles_output(out),
            Pending::Probe { peer, request } => {
                // `validate` keeps it within u16.
                let within_ms = self.cfg.timers.probe_ms as u16;
                *out = Some(Output::Host(if self.host.numbered_probes() {
                    HostMsg::ProbeAsk {
                        peer,
                        within_ms,
                        request,
                    }
                } else {
                    HostMsg::ProbeRequest { peer, within_ms }
                }));
                return;
            }
            Pending::Ping(nonce) => {
                *out = Some(Output::Host(HostMsg::Ping { nonce }));
                return;
            }
            Pending::Pong(nonce) => {
                *out = Some(Output::Host(HostMsg::Pong { nonce }));
                return;
            }
            Pending::Status => return self.status_output(out),
            Pending::Details => return self.details_output(out),
            Pending::Counters => return self.counters_output(out),
            Pending::KeyState => return self.key_state_output(out),
            Pending::Led(l) => {
                *out = Some(Output::Led(l));
                return;
            }
            Pending::Event(e) => {
                *out = Some(Output::Event(e));
                return;
            }
        };
        self.member_output(link, &msg, out)
    }

    #[inline(never)]
    fn heartbeat_output(&mut self, link: LinkId, out: &mut Option<Output>) {
        let wire = &self.wire;
        let hb = self.snapshot().heartbeat(|s| wire.member_epoch(s));
        self.member_output(link, &MemberMsg::Heartbeat(hb), out)
    }

    /// `msg` sealed for `link` into `out`; left `None` (counted by the wire) if it cannot be
    /// sealed.
    #[inline(never)]
    fn member_output(&mut self, link: LinkId, msg: &MemberMsg, out: &mut Option<Output>) {
        let slot = out.insert(Output::Send {
            link,
            bytes: Vec::new(),
        });
        let sealed = match slot {
            Output::Send { bytes, .. } => self.wire.seal_member(msg, bytes),
            _ => false,
        };
        if !sealed {
            *out = None;
        }
    }

    #[inline(never)]
    fn roles_output(&self, out: &mut Option<Output>) {
        *out = Some(Output::Host(HostMsg::Roles(self.snapshot().roles_report())));
    }

    #[inline(never)]
    fn status_output(&self, out: &mut Option<Output>) {
        *out = Some(Output::Host(HostMsg::Status(self.status_report())));
    }

    #[inline(never)]
    fn details_output(&self, out: &mut Option<Output>) {
        *out = Some(Output::Host(HostMsg::Details(self.details_report())));
    }

    #[inline(never)]
    fn counters_output(&self, out: &mut Option<Output>) {
        *out = Some(Output::Host(HostMsg::Counters(self.counters())));
    }

    #[inline(never)]
    fn key_state_output(&self, out: &mut Option<Output>) {
        *out = Some(Output::Host(report::key_state(self.wire.keyring())));
    }

    /// The member list (with main-link addresses) the agent took from the main CPU since
    /// the last call, if it changed: where the shell sends main-link frames from now on.
    #[must_use]
    pub fn poll_member_addresses(&mut self) -> Option<Vec<MemberEntry, MAX_MEMBERS>> {
        self.host.take_member_addresses()
    }

    /// The last probe answer the main CPU sent, once (for the shell's log).
    pub fn take_probe_note(&mut self) -> Option<ProbeNote> {
        self.host.take_probe_note()
    }

    /// Seals a host-link message (an [`Output::Host`]) for the main CPU into `out`; returns
    /// the frame length. The shell frames it for its UART ([`ha_proto::uart`]).
    pub fn seal_host(&mut self, msg: &HostMsg, out: &mut [u8]) -> Result<usize, SealError> {
        self.wire.seal_host(msg, out)
    }

    // ----- inputs -----

    fn advance(&mut self, now_ms: u64) {
        // A clock that goes backwards is held at the latest time seen.
        self.now = self.now.max(now_ms);
        self.out.new_turn();
    }

    /// A member frame received on `link`. The agent opens it through its member endpoint
    /// ([`ha_proto::endpoint`]: authentication, sender, replay, freshness against this boot,
    /// decoding); rejects are counted per [`Reject`].
    pub fn handle_member_frame(&mut self, now_ms: u64, link: LinkId, bytes: &mut [u8]) {
        self.advance(now_ms);
        if let Err(r) = self.accept(link, bytes) {
            self.wire.count_rejected(r);
        }
        self.evaluate();
    }

    fn accept(&mut self, link: LinkId, bytes: &mut [u8]) -> Result<(), Reject> {
        if link.0 >= self.cfg.links {
            return Err(Reject::UnknownLink);
        }
        let (h, msg) = self.wire.open_member(bytes, &self.cfg.members)?;
        let pi = self.peers.position(h.sender).ok_or(Reject::WrongSender)?;
        self.wire.count_received();
        let now = self.now;
        let interval = self.cfg.timers.link_interval_ms(link) as u64;
        if !self
            .peers
            .heard(pi, link, h.epoch, now, interval, &mut self.out)
        {
            // A lost peer not yet back: nothing it says counts.
            return Ok(());
        }
        match msg {
            MemberMsg::Heartbeat(hb) => {
                self.peers
                    .apply_heartbeat(pi, &hb, now, &self.cfg, &mut self.out);
                self.refresh_flags();
            }
            MemberMsg::ResyncRequest { to, .. } if to != self.cfg.me => {}
            MemberMsg::ResyncRequest { domain, .. } => {
                let dead = self.cfg.timers.profile.dead_ms();
                self.domains
                    .handle_resync_request(domain, h.sender, now, dead, &mut self.out);
            }
            // Bound to this boot: the endpoint refused it otherwise.
            MemberMsg::AdminFor {
                target, command, ..
            } => {
                if target == self.cfg.me {
                    self.local
                        .apply_admin(command, now, self.cfg.links, &mut self.out);
                }
            }
            // Joining is driven by the host tools (SPEC A1/A6), not by the agent.
            MemberMsg::JoinRequest(_) | MemberMsg::JoinAccept(_) | MemberMsg::JoinReject(_) => {}
        }
        Ok(())
    }

    /// A frame from the main CPU (one host-link frame, UART framing removed): opened by the
    /// controller's end of the host link ([`ha_proto::hostlink`]), then handled as
    /// [`Agent::handle_host`]. Rejects are counted per [`Reject`] (`host_rejected`).
    #[inline(never)]
    pub fn handle_host_frame(&mut self, now_ms: u64, bytes: &mut [u8]) {
        self.advance(now_ms);
        let before = self.wire.host_epoch();
        // Decoded in place: the message (about 1 KiB) is not moved through stack frames.
        let mut msg = None;
        if let (Ok(()), Some(msg)) = (self.wire.open_host(bytes, &mut msg), &msg) {
            let after = self.wire.host_epoch();
            self.host.handle_heard(before, after, &mut self.out);
            if before.is_some() && after != before {
                self.forget_table_report();
                let rejoin = self.cfg.timers.startup_window_ms as u64;
                self.host.handle_main_cpu_restart(
                    self.now,
                    self.cfg.main_cpu_timeout_ms,
                    rejoin,
                    &mut self.out,
                );
            }
            self.handle_host_msg(now_ms, &msg.0);
        }
    }

    /// A message from the main CPU, already authenticated (the simulator and tests drive the
    /// agent with these; a shell with a host link uses [`Agent::handle_host_frame`]).
    pub fn handle_host(&mut self, now_ms: u64, msg: HostMsg) {
        self.handle_host_msg(now_ms, &msg);
    }

    /// [`Agent::handle_host`] on a borrowed message. Not inlined, so that its stack frame
    /// and the decoder's ([`Agent::handle_host_frame`]) are never stacked.
    #[inline(never)]
    fn handle_host_msg(&mut self, now_ms: u64, msg: &HostMsg) {
        self.advance(now_ms);
        let now = self.now;
        let links = self.cfg.links;
        self.main_cpu_heard(now);
        match msg {
            HostMsg::Interfaces(list) => {
                let part = quality::interface_part(list, self.cfg.quality.aggregate);
                self.local
                    .set_interface_part(part, now, links, &mut self.out);
            }
            HostMsg::Admin { target, command } => match *target {
                Some(t) if t != self.cfg.me => {
                    if self.cfg.members.contains(&t) {
                        for l in 0..links {
                            self.out.push(Pending::AdminFor {
                                link: LinkId(l),
                                target: t,
                                command: *command,
                            });
                        }
                    }
                }
                _ => self.local.apply_admin(*command, now, links, &mut self.out),
            },
            HostMsg::ProbeResult { peer, alive } => self.take_probe_answer(*peer, None, *alive),
            HostMsg::ProbeAnswer {
                peer,
                request,
                alive,
            } => self.take_probe_answer(*peer, Some(*request), *alive),
            HostMsg::ProbeVerdict { request, alive } => {
                match self.peers.peer_of_request(*request) {
                    Some(peer) => self.take_probe_answer(peer, Some(*request), *alive),
                    // No peer at that place (the list shrank): about no one asked now.
                    None => self.wire.count_stale_probe_answer(),
                }
            }
            HostMsg::Capabilities(bits) => {
                self.host.set_capabilities(*bits);
                if bits & CAP_COMPACT_FRAMES != 0 {
                    self.wire.host_takes_compact();
                }
                self.main_cpu_reports_table(*bits);
            }
            HostMsg::TableHeld(held) => self.take_table_report(*held),
            HostMsg::Ping { nonce } => self.out.push(Pending::Pong(*nonce)),
            // A main CPU that (re)connects asks for the status: it gets the key state too, so
            // a restarted daemon knows where a PSK rotation stands.
            HostMsg::StatusRequest => {
                self.out.push(Pending::Status);
                self.out.push(Pending::KeyState);
            }
            HostMsg::InstallKey { key_id, psk } => {
                self.wire
                    .install_key(&Psk(psk.0), self.cfg.cluster_id, *key_id);
                self.out.push(Pending::KeyState);
            }
            HostMsg::UseKey { key_id } => {
                self.wire.use_key(*key_id);
                self.out.push(Pending::KeyState);
            }
            HostMsg::RetireKey { key_id } => {
                self.wire.retire_key(*key_id);
                self.out.push(Pending::KeyState);
            }
            HostMsg::Members(list) => self.take_members(now_ms, list),
            HostMsg::EventsSince { seq } => self.out.replay_from(*seq),
            HostMsg::DetailsRequest => self.out.push(Pending::Details),
            HostMsg::CountersRequest => self.out.push(Pending::Counters),
            HostMsg::Settings(settings) => self.take_settings(now_ms, settings),
            // Messages the controller sends, not receives.
            HostMsg::Roles(_)
            | HostMsg::ProbeRequest { .. }
            | HostMsg::Pong { .. }
            | HostMsg::Status(_)
            | HostMsg::Event(_)
            | HostMsg::KeyState { .. }
            | HostMsg::Details(_)
            | HostMsg::Counters(_)
            | HostMsg::ProbeAsk { .. } => {}
        }
        self.evaluate();
    }

    /// A probe answer from the main CPU: request `request` (`None`: an unnumbered answer of
    /// an older main CPU, taken as it comes). A numbered one asked before the peer was last
    /// heard is counted and ignored: it may predate the peer's crash.
    fn take_probe_answer(&mut self, peer: Serial, request: Option<u16>, alive: bool) {
        let taken = request.is_none_or(|r| self.peers.answers_this_silence(peer, r));
        self.host.note_probe_answer(ProbeNote {
            peer,
            request,
            alive,
            taken,
        });
        if !taken {
            self.wire.count_stale_probe_answer();
        } else if self.peers.handle_probe_result(
            peer,
            alive,
            self.now,
            &self.cfg.timers,
            self.cfg.main_cpu_timeout_ms,
            &mut self.out,
        ) {
            self.domains.note_peer_lost();
            self.refresh_flags();
        }
    }

    /// [`HostMsg::Members`]: the new member list, and its addresses for the shell. Not
    /// inlined (nor is [`Agent::take_settings`]): the configurations each builds stay out
    /// of [`Agent::handle_host`]'s stack frame, and the two never share one.
    #[inline(never)]
    fn take_members(&mut self, now_ms: u64, list: &Vec<MemberEntry, MAX_MEMBERS>) {
        let mut members: Vec<Serial, M> = Vec::new();
        let fits = list.iter().all(|m| members.push(m.serial).is_ok());
        let before = self.cfg.members.clone();
        let taken = fits && self.set_members(now_ms, members).is_ok();
        if !taken {
            self.out.event(self.now, EventKind::MembersRefused);
        } else if self.cfg.members != before {
            self.host.set_member_addresses(list.clone());
        }
        self.out.push(Pending::Status);
    }

    /// [`HostMsg::Settings`]: the HA settings reloaded in place, or refused.
    #[inline(never)]
    fn take_settings(&mut self, now_ms: u64, settings: &HaSettings) {
        let result = match self.cfg.clone().with_settings(settings) {
            Ok(new) => {
                let changed = self.cfg.changes_to(&new);
                self.reload(now_ms, new).map(|()| changed)
            }
            // More domains than this agent holds: the domain list changed.
            Err(_) => Err(ConfigError::ReloadNeedsRestart),
        };
        let kind = match result {
            Ok(changed) => EventKind::SettingsReloaded {
                revision: settings.revision,
                changed,
            },
            Err(reason) => EventKind::SettingsRefused { reason },
        };
        self.out.event(self.now, kind);
        self.out.push(Pending::Status);
    }

    /// One report of the sensor source: every reading is recorded, then the quality and the
    /// election are evaluated once, so a report never shows a transient quality that none of
    /// its readings describes (whatever their order). A silent source is back.
    pub fn handle_sensor_report(&mut self, now_ms: u64, readings: &[SensorReading]) {
        self.advance(now_ms);
        let now = self.now;
        self.sensors.handle_report(now, readings, &mut self.out);
        let part = self.sensors.part(&self.cfg.quality);
        self.local
            .set_hardware_part(part, now, self.cfg.links, &mut self.out);
        self.evaluate();
    }

    /// Timers: the roles refresh, heartbeats, link and probe deadlines, the startup window,
    /// pauses, hold-down and the sensor timeout. Idempotent.
    pub fn handle_timeout(&mut self, now_ms: u64) {
        self.advance(now_ms);
        let now = self.now;
        let links = self.cfg.links;
        let unheard = self.wire.host_epoch().is_none();
        self.host.handle_timeout(now, unheard, &mut self.out);
        self.host
            .check_main_cpu(now, self.cfg.main_cpu_timeout_ms, &mut self.out);
        if self.peers.handle_timeout(now, &self.cfg, &mut self.out) {
            self.domains.note_peer_lost();
            self.refresh_flags();
        }
        self.local.handle_timeout(now, links, &mut self.out);
        if self
            .sensors
            .handle_timeout(now, self.cfg.sensor_timeout_ms, &mut self.out)
        {
            let part = self.sensors.part(&self.cfg.quality);
            self.local
                .set_hardware_part(part, now, links, &mut self.out);
        }
        self.evaluate();
    }

    // ----- commands -----

    /// Phase 1 of a rollover: also accept member frames under `key_id` (derived from `psk`);
    /// sealing does not change until [`HostMsg::UseKey`]. A weak key is refused.
    pub fn accept_key(&mut self, psk: &Psk, key_id: u8) -> Result<(), KeyringError> {
        self.wire.accept_key(psk, self.cfg.cluster_id, key_id)
    }

    /// Applies a new configuration without restarting (SPEC E2 "reload HA settings"):
    /// timers, weights, links, members, preferred members, the sensor timeout and the
    /// revision change in place. The serial, the cluster id and the domain list must stay
    /// the same ([`ConfigError::ReloadNeedsRestart`]); keys change through a rollover.
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
        let now = self.now;
        self.wire.set_encrypt(config.encrypt);
        self.cfg = config;
        self.local.set_config_revision(self.cfg.config_revision);
        self.sensors.configure(now, self.cfg.sensor_timeout_ms);
        for gone in self.peers.rebuild(&self.cfg, now) {
            self.wire.forget(gone);
        }
        let part = self.sensors.part(&self.cfg.quality);
        self.local
            .set_hardware_part(part, now, self.cfg.links, &mut self.out);
        self.refresh_flags();
        self.out.heartbeat_now(self.cfg.links);
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
        self.out
            .event(self.now, EventKind::MembersChanged { members: n });
        Ok(())
    }

    /// Replaces the merit order of the election. Only for mutation testing: the simulator
    /// plants a wrong order and checks that its invariants report it. Firmware never calls it.
    #[doc(hidden)]
    pub fn set_merit_order(&mut self, order: MeritOrder) {
        self.domains.set_order(order);
        self.evaluate();
    }

    /// Every private time-valued field a member-facing decision reads (agent clock, ms;
    /// `None` when unset), in a fixed order: the peer table's next heartbeat and, per peer,
    /// the start of its announced pause; the end of the startup window and, per domain, the
    /// hold-down start and the last reported resynchronization; the sensor source's last
    /// report (the boot time until the first one: its age against `sensor_timeout_ms`
    /// decides when the hardware part drops to 0, a quality change the election reads); when
    /// the main CPU was last heard (its age against `main_cpu_timeout_ms` decides when this
    /// member leaves the election). These two are `None` while no decision reads them: the
    /// timeout is 0 (nothing watched), the source is already silent, the main CPU already
    /// lost or never heard. (A reload that sets a timeout would read them again; the model
    /// checker makes none.)
    ///
    /// Not listed because [`Agent::status`] shows them: a peer's probe deadline and re-probe
    /// time ([`PeerState`](crate::status::PeerState)) and the start of a lost peer's return,
    /// its links' last receptions, this member's pause end and role start times. Left out:
    /// the host side's next roles report, which only repeats host-link messages (the
    /// wake-up it adds to [`Agent::poll_at`] changes nothing but the clock:
    /// [`Agent::handle_timeout`] is idempotent).
    ///
    /// Only for the model checker, which folds them (relative to now) into its state
    /// fingerprint; a new such timer must be listed here. Firmware never calls it.
    #[doc(hidden)]
    pub fn private_timers(&self) -> impl Iterator<Item = Option<u64>> + '_ {
        self.peers
            .private_timers()
            .chain(self.domains.private_timers())
            .chain([
                self.sensors.private_timer(self.cfg.sensor_timeout_ms),
                self.host.private_timer(self.cfg.main_cpu_timeout_ms),
                self.host.rejoin_timer(),
            ])
    }

    // ----- derived state -----

    /// The flags this member takes from its peers (fail-soft, configuration in sync).
    fn refresh_flags(&mut self) {
        let (fail_soft, synced) = self.peers.flags(self.local.status().config_revision);
        self.local.set_peer_flags(fail_soft, synced);
    }

    /// Decides every domain, after any input.
    fn evaluate(&mut self) {
        let frozen = self.local.paused() || self.peers.pausing();
        self.local.set_frozen(frozen);
        let x = Inputs {
            config: &self.cfg,
            me: self.local.status(),
            peers: self.peers.as_slice(),
            now: self.now,
            main_cpu_lost: self.host.main_cpu_lost(),
        };
        self.domains.evaluate(&x, frozen, &mut self.out);
        self.note_active_somewhere();
        let conflict = self.domains.conflict(self.peers.as_slice());
        self.local.set_conflict(conflict);
    }
}
