//! Per-domain decisions (SPEC B2–B5): this member's role in each domain, the hold-down of a
//! challenge, collisions and the resynchronization they ask for, and the LED that shows the
//! roles. The ranking itself is in [`crate::election`].
//!
//! - **Startup.** A booting member is `Starting` until it has heard every peer or the
//!   startup window ends; then it joins the election (alone, it becomes active).
//! - **Election.** With no active among the live members, the best candidate becomes
//!   active. A running active stays unless a passive has strictly higher merit (forcing,
//!   quality, priority) *and* is the best candidate: it takes over after holding that
//!   advantage for `hold_down_ms` (at once when the advantage is forcing). The old active
//!   steps down when it hears the new one (make before break: the overlap lasts one frame
//!   delay).
//! - **Collision.** An active that hears another active which outranks it steps down. When
//!   both had been active longer than a link's dead time it is a collision (SPEC B4): the
//!   loser reports it and asks the winner for a resynchronization (on every link); the
//!   winner reports the collision when that request arrives (once per dead time).
//! - **Forcing.** Forced passive steps down at once, even while decisions are paused; forced
//!   active outranks everyone.
//! - **Pause.** While decisions are frozen, no other role changes.
//!
//! Domains are told apart by id everywhere; a position in the configured list is used only
//! inside this table, whose rows follow the configuration (a reload keeps the list).

use ha_proto::msg::{Forced, Role, Serial};
use heapless::Vec;

use crate::agent::outbox::{Outbox, Pending};
use crate::agent::stamp::Stamp;
use crate::config::Config;
use crate::election::{self, Candidate, MeritOrder};
use crate::event::{EventKind, Reason};
use crate::link::LinkId;
use crate::output::LedPattern;
use crate::status::{DomainStatus, MemberStatus, PeerState, PeerStatus};

/// What a decision reads from the rest of the agent.
pub(crate) struct Inputs<'a, const M: usize, const D: usize> {
    /// The configuration.
    pub config: &'a Config<M, D>,
    /// This member (forcing, quality).
    pub me: &'a MemberStatus,
    /// The peers.
    pub peers: &'a [PeerStatus<D>],
    /// Agent clock, ms.
    pub now: u64,
    /// The main CPU is silent: this member cannot carry traffic and leaves the election.
    pub main_cpu_lost: bool,
}

/// One row per configured domain.
#[derive(Clone)]
pub(crate) struct Domains<const D: usize> {
    roles: Vec<DomainStatus, D>,
    /// While active: since when a passive member has been the better candidate (the
    /// hold-down of a handover runs on the incumbent's side).
    challenge_since: Vec<Stamp, D>,
    /// While passive: the reason this member will take over once the active it outranks has
    /// stepped down (a handover is break-before-make: never two actives).
    awaiting: Vec<Option<Reason>, D>,
    /// When the last resynchronization request was reported.
    last_resync: Vec<Stamp, D>,
    /// End of the startup window.
    startup_until_ms: u64,
    /// The reason of a takeover decided by the next evaluation when no one is active.
    hint: Reason,
    order: MeritOrder,
    led: LedPattern,
}

impl<const D: usize> Domains<D> {
    /// Every configured domain `Starting` at `now`.
    pub(crate) fn new<const M: usize>(config: &Config<M, D>, now: u64) -> Self {
        let mut roles = Vec::new();
        let mut challenge_since = Vec::new();
        let mut awaiting = Vec::new();
        for d in &config.domains {
            // Capacity D holds every configured domain.
            let _ = roles.push(DomainStatus {
                domain: d.id,
                role: Role::Starting,
                since_ms: now,
            });
            let _ = challenge_since.push(Stamp::NONE);
            let _ = awaiting.push(None);
        }
        Domains {
            roles,
            awaiting,
            last_resync: challenge_since.clone(),
            challenge_since,
            startup_until_ms: now + config.timers.startup_window_ms as u64,
            hint: Reason::Elected,
            order: election::compare_merit,
            led: LedPattern::STARTING,
        }
    }

    /// The roles, in configuration order.
    pub(crate) fn roles(&self) -> &[DomainStatus] {
        &self.roles
    }

    /// This member's role in the domain with id `domain`.
    pub(crate) fn role(&self, domain: u8) -> Option<Role> {
        self.roles
            .iter()
            .find(|r| r.domain == domain)
            .map(|r| r.role)
    }

    /// The LED pattern the roles call for.
    pub(crate) fn led(&self) -> LedPattern {
        self.led
    }

    /// Replaces the merit order (mutation testing only).
    pub(crate) fn set_order(&mut self, order: MeritOrder) {
        self.order = order;
    }

    /// A peer was just declared lost: a takeover decided next says so.
    pub(crate) fn note_peer_lost(&mut self) {
        self.hint = Reason::PeerLost;
    }

    /// The earliest deadline: the end of the startup window while a domain is starting, the
    /// end of a challenge's hold-down.
    pub(crate) fn poll_at(&self, hold_down_ms: u32) -> u64 {
        let mut w = u64::MAX;
        if self.roles.iter().any(|r| r.role == Role::Starting) {
            w = w.min(self.startup_until_ms);
        }
        for c in self.challenge_since.iter().filter_map(|c| c.get()) {
            w = w.min(c + hold_down_ms as u64);
        }
        w
    }

    /// The end of the startup window, then per domain the hold-down start, then per domain
    /// the last reported resynchronization ([`crate::Agent::private_timers`]).
    pub(crate) fn private_timers(&self) -> impl Iterator<Item = Option<u64>> + '_ {
        core::iter::once(Some(self.startup_until_ms))
            .chain(self.challenge_since.iter().map(|s| s.get()))
            .chain(self.last_resync.iter().map(|s| s.get()))
    }

    /// True while this member is active in some domain.
    pub(crate) fn active_anywhere(&self) -> bool {
        self.roles.iter().any(|r| r.role == Role::Active)
    }

    /// True while this member and a peer in the election are both active in a domain.
    pub(crate) fn conflict(&self, peers: &[PeerStatus<D>]) -> bool {
        self.roles.iter().any(|r| {
            r.role == Role::Active
                && peers
                    .iter()
                    .any(|p| p.state.in_election() && p.role(r.domain) == Some(Role::Active))
        })
    }

    /// A resynchronization request from `by` (the loser of a collision, which asks once per
    /// link): reported on the first copy only, and only while this member is active.
    pub(crate) fn handle_resync_request(
        &mut self,
        domain: u8,
        by: Serial,
        now: u64,
        dead_ms: u32,
        out: &mut Outbox,
    ) {
        let Some(di) = self.roles.iter().position(|r| r.domain == domain) else {
            return;
        };
        if self.roles[di].role != Role::Active {
            return;
        }
        if self.last_resync[di]
            .get()
            .is_none_or(|t| now >= t + dead_ms as u64)
        {
            self.last_resync[di] = Stamp::at(now);
            out.event(
                now,
                EventKind::Collision {
                    domain,
                    peer: by,
                    won: true,
                },
            );
            out.event(now, EventKind::ResyncRequested { domain, by });
        }
    }

    /// Decides every domain. While `frozen`, only a forced-passive member steps down.
    pub(crate) fn evaluate<const M: usize>(
        &mut self,
        x: &Inputs<'_, M, D>,
        frozen: bool,
        out: &mut Outbox,
    ) {
        for di in 0..self.roles.len() {
            if !frozen || x.main_cpu_lost {
                // A lost main CPU takes the member out even while decisions are paused.
                self.evaluate_domain(di, x, out);
            } else if x.me.forced == Forced::Passive && self.roles[di].role == Role::Active {
                // An operator's forcing is obeyed even while decisions are paused.
                self.set_role(di, Role::Passive, Reason::Forced, x, out);
            }
        }
        self.hint = Reason::Elected;
    }

    fn evaluate_domain<const M: usize>(
        &mut self,
        di: usize,
        x: &Inputs<'_, M, D>,
        out: &mut Outbox,
    ) {
        let cfg = x.config;
        let now = x.now;
        let n = cfg.members.len() as u8;
        let DomainStatus {
            domain,
            role,
            since_ms,
        } = self.roles[di];
        let me = Candidate {
            index: cfg.member_index(&cfg.me).unwrap_or(0) as u8,
            forced: x.me.forced,
            quality: x.me.quality,
            priority: cfg.priority(di, &cfg.me),
        };
        if x.main_cpu_lost {
            // Nothing forwards without the main CPU: out of the election, so that a peer
            // takes over at once (a disabled member is never the incumbent nor the best).
            self.challenge_since[di] = Stamp::NONE;
            self.set_role(di, Role::Disabled, Reason::MainCpu, x, out);
            return;
        }
        if role == Role::Disabled {
            // The main CPU is back: rejoin as passive; the election goes on from there.
            self.set_role(di, Role::Passive, Reason::MainCpu, x, out);
            return;
        }
        if me.forced == Forced::Passive {
            self.challenge_since[di] = Stamp::NONE;
            if role != Role::Passive {
                self.set_role(di, Role::Passive, Reason::Forced, x, out);
            }
            return;
        }
        if role == Role::Starting {
            let heard_all = x.peers.iter().all(|p| p.state != PeerState::Unknown);
            if now < self.startup_until_ms && !heard_all {
                return;
            }
        }
        let dead = cfg.timers.profile.dead_ms() as u64;
        // Best active peer (the incumbent) and the best candidate overall.
        let mut incumbent: Option<(Candidate, u32, Serial)> = None;
        let mut best = me;
        for p in x.peers.iter().filter(|p| p.state.in_election()) {
            let c = Candidate {
                index: p.index,
                forced: p.forced,
                quality: p.quality,
                priority: cfg.priority(di, &p.serial),
            };
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
                self.awaiting[di] = None;
                let Some((ic, for_ms, peer)) = incumbent else {
                    // Break before make: a better passive candidate takes over only once this
                    // member stepped down. A forced one at once; one better by merit after it
                    // has been better for the whole hold-down (the timer runs here).
                    let better = best.index != me.index
                        && (self.order)(&best, &me) == core::cmp::Ordering::Greater;
                    if !better {
                        self.challenge_since[di] = Stamp::NONE;
                    } else if best.forced != me.forced {
                        self.challenge_since[di] = Stamp::NONE;
                        self.set_role(di, Role::Passive, Reason::Handover, x, out);
                    } else {
                        let since = self.challenge_since[di].get().unwrap_or(now);
                        self.challenge_since[di] = Stamp::at(since);
                        if now >= since + cfg.timers.hold_down_ms as u64 {
                            self.challenge_since[di] = Stamp::NONE;
                            self.set_role(di, Role::Passive, Reason::Handover, x, out);
                        }
                    }
                    return;
                };
                self.challenge_since[di] = Stamp::NONE;
                let collision = now.saturating_sub(since_ms) >= dead && for_ms as u64 >= dead;
                if election::outranks_by(self.order, &ic, &me, n, domain) {
                    if collision {
                        out.event(
                            now,
                            EventKind::Collision {
                                domain,
                                peer,
                                won: false,
                            },
                        );
                        for l in 0..cfg.links {
                            out.push(Pending::Resync {
                                link: LinkId(l),
                                domain,
                                to: peer,
                            });
                        }
                        self.set_role(di, Role::Passive, Reason::Collision, x, out);
                    } else {
                        self.set_role(di, Role::Passive, Reason::Handover, x, out);
                    }
                }
            }
            Role::Passive | Role::Starting => {
                let i_am_best = best.index == me.index;
                self.challenge_since[di] = Stamp::NONE;
                match incumbent {
                    None => {
                        let awaited = self.awaiting[di].take();
                        if i_am_best {
                            let why = if role == Role::Starting {
                                Reason::Startup
                            } else {
                                awaited.unwrap_or(self.hint)
                            };
                            self.set_role(di, Role::Active, why, x, out);
                        } else if role == Role::Starting {
                            self.set_role(di, Role::Passive, Reason::Startup, x, out);
                        }
                    }
                    Some((ic, _, _)) => {
                        if role == Role::Starting {
                            // The running active stays; challenge from the passive role.
                            self.set_role(di, Role::Passive, Reason::Startup, x, out);
                        }
                        // Better than the active: it steps down (its hold-down, or at once for
                        // a forcing) and this member takes over when it hears that.
                        let better =
                            i_am_best && (self.order)(&me, &ic) == core::cmp::Ordering::Greater;
                        self.awaiting[di] = better.then_some(if me.forced != ic.forced {
                            Reason::Forced
                        } else {
                            Reason::Better
                        });
                    }
                }
            }
            Role::Disabled => {}
        }
    }

    fn set_role<const M: usize>(
        &mut self,
        di: usize,
        to: Role,
        reason: Reason,
        x: &Inputs<'_, M, D>,
        out: &mut Outbox,
    ) {
        let r = &mut self.roles[di];
        let from = r.role;
        if from == to {
            return;
        }
        r.role = to;
        r.since_ms = x.now;
        let domain = r.domain;
        out.event(
            x.now,
            EventKind::RoleChanged {
                domain,
                from,
                to,
                reason,
            },
        );
        out.roles_changed();
        out.heartbeat_now(x.config.links);
        self.update_led(out);
    }

    fn update_led(&mut self, out: &mut Outbox) {
        let any = |role| self.roles.iter().any(|r| r.role == role);
        let led = if any(Role::Active) {
            LedPattern::Steady
        } else if any(Role::Starting) {
            LedPattern::STARTING
        } else if any(Role::Passive) {
            LedPattern::PASSIVE
        } else {
            LedPattern::Off
        };
        if led != self.led {
            self.led = led;
            out.push(Pending::Led(led));
        }
    }
}
