//! What the agent tells others about itself, built from its state when an output is drained:
//! the heartbeat to its peers, and the roles, status and key reports to its main CPU.
//! Pure functions over a read-only [`Snapshot`].

use ha_proto::keys::Keyring;
use ha_proto::msg::host::{
    DetailsReport, DomainRoleOf, DomainSummary, HostMsg, LedReport, MemberSummary, MemberUptime,
    StatusReport,
};
use ha_proto::msg::member::{DomainRole, Heard, Heartbeat};
use ha_proto::msg::{LinkState, Serial, MAX_DOMAINS, MAX_HA_LINKS};
use heapless::Vec;

use crate::config::Config;
use crate::output::LedPattern;
use crate::status::{DomainStatus, PeerState, Status};

/// The state a report is built from.
pub(crate) struct Snapshot<'a, const M: usize, const D: usize> {
    /// The configuration.
    pub config: &'a Config<M, D>,
    /// What the agent shows of itself ([`crate::Agent::status`]): this member, its roles,
    /// its peers, the frame counters.
    pub status: Status<'a, D>,
    /// The LED pattern.
    pub led: LedPattern,
    /// Agent clock, ms.
    pub now: u64,
    /// The number the next event will get.
    pub next_event: u32,
}

impl<const M: usize, const D: usize> Snapshot<'_, M, D> {
    /// Each HA link of this member: absent when not configured, up while a peer is heard on
    /// it, down otherwise.
    fn links(&self) -> Vec<LinkState, MAX_HA_LINKS> {
        let mut v = Vec::new();
        for l in 0..MAX_HA_LINKS {
            let st = if l >= self.config.links as usize {
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
            let _ = v.push(st);
        }
        v
    }

    /// This member's heartbeat; `epoch_of` gives the boot of each peer last heard (the
    /// heartbeat names them, so a recording replayed to a later boot is refused).
    pub(crate) fn heartbeat(&self, epoch_of: impl Fn(Serial) -> Option<u32>) -> Heartbeat {
        let me = self.status.me;
        let mut roles = Vec::new();
        for r in self.status.roles {
            // D ≤ MAX_DOMAINS is not enforced by the type; extra domains are not announced.
            let _ = roles.push(DomainRole {
                domain: r.domain,
                role: r.role,
                for_ms: self.now.saturating_sub(r.since_ms).min(u32::MAX as u64) as u32,
            });
        }
        let mut heard = Vec::new();
        for p in self.status.peers {
            if let Some(epoch) = epoch_of(p.serial) {
                let _ = heard.push(Heard {
                    member: p.serial,
                    epoch,
                });
            }
        }
        Heartbeat {
            quality: me.quality,
            priority: self.config.priority(0, &me.serial),
            forced: me.forced,
            firmware: me.firmware,
            config_revision: me.config_revision,
            paused: me.paused_until_ms.is_some(),
            roles,
            links: self.links(),
            uptime_ms: self.now.saturating_sub(me.boot_ms),
            heard,
        }
    }

    /// Every domain's role, by domain id ([`HostMsg::Roles`]).
    pub(crate) fn roles_report(&self) -> Vec<DomainRoleOf, MAX_DOMAINS> {
        let mut v = Vec::new();
        for r in self.status.roles.iter().take(MAX_DOMAINS) {
            let _ = v.push(DomainRoleOf {
                domain: r.domain,
                role: r.role,
            });
        }
        v
    }

    /// Role and priority per domain id of one member.
    fn domains_of(
        &self,
        serial: &Serial,
        list: &[DomainStatus],
    ) -> Vec<DomainSummary, MAX_DOMAINS> {
        let mut v = Vec::new();
        for d in list.iter().take(MAX_DOMAINS) {
            let _ = v.push(DomainSummary {
                domain: d.domain,
                role: d.role,
                priority: self.config.priority_in(d.domain, serial),
            });
        }
        v
    }

    /// The details as sent to the main CPU ([`ha_proto::msg::host::HostMsg::Details`]): this
    /// controller's model, its uptime and each heard peer's (the uptime its last heartbeat
    /// carried, plus the time since).
    pub(crate) fn details_report(&self) -> DetailsReport {
        let me = self.status.me;
        let mut model = heapless::String::new();
        for c in self.config.model.chars() {
            if model.push(c).is_err() {
                break;
            }
        }
        let mut uptimes = Vec::new();
        let _ = uptimes.push(MemberUptime {
            serial: me.serial,
            uptime_ms: self.now.saturating_sub(me.boot_ms),
        });
        for p in self.status.peers {
            let Some(heard) = p.links.iter().filter_map(|l| l.last_rx_ms).max() else {
                continue;
            };
            let _ = uptimes.push(MemberUptime {
                serial: p.serial,
                uptime_ms: p.uptime_ms + self.now.saturating_sub(heard),
            });
        }
        DetailsReport {
            model,
            uptimes,
            next_event: self.next_event,
        }
    }

    /// The status as sent to the main CPU ([`HostMsg::Status`]): one summary per member, the
    /// local one first.
    pub(crate) fn status_report(&self) -> StatusReport {
        let me = self.status.me;
        let since = self
            .status
            .roles
            .iter()
            .map(|r| r.since_ms)
            .max()
            .unwrap_or(me.boot_ms);
        let mut members = Vec::new();
        let _ = members.push(MemberSummary {
            serial: me.serial,
            local: true,
            alive: true,
            quality: me.quality,
            forced: me.forced,
            firmware: me.firmware,
            config_revision: me.config_revision,
            paused: me.frozen,
            domains: self.domains_of(&me.serial, self.status.roles),
            links: self.links(),
            mode_since_ms: since.saturating_sub(me.boot_ms),
        });
        for p in self.status.peers {
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
                domains: self.domains_of(&p.serial, &p.roles),
                links,
                mode_since_ms: peer_mode_since(p).saturating_sub(me.boot_ms),
            });
        }
        let c = self.status.counters;
        StatusReport {
            uptime_ms: self.now.saturating_sub(me.boot_ms),
            members,
            led: match self.led {
                LedPattern::Off => LedReport::Off,
                LedPattern::Steady => LedReport::Steady,
                LedPattern::Blink { on_ms, off_ms } => LedReport::Blink { on_ms, off_ms },
            },
            frames_sent: c.sent,
            frames_received: c.received,
            frames_rejected: c.rejected_total(),
        }
    }
}

/// The member keys as the main CPU sees them ([`HostMsg::KeyState`]): the key sealing, then
/// the other one accepted during a rollover.
pub(crate) fn key_state(ring: &Keyring) -> HostMsg {
    let mut accepted = Vec::new();
    let _ = accepted.push(ring.sealing().key_id());
    if let Some(k) = ring.previous_key_id() {
        let _ = accepted.push(k);
    }
    HostMsg::KeyState {
        sealing_key_id: ring.sealing().key_id(),
        accepted,
    }
}

/// When a peer's mode last changed (agent clock, ms): its heartbeats say how long it has held
/// each domain's role, so its latest change is its last heard frame minus the shortest of
/// those; a peer that announced no role (or was never heard) counts from its liveness state.
fn peer_mode_since<const D: usize>(p: &crate::status::PeerStatus<D>) -> u64 {
    let heard = p.links.iter().filter_map(|l| l.last_rx_ms).max();
    match (heard, p.role_for_ms.iter().min()) {
        (Some(heard), Some(&held)) => heard.saturating_sub(u64::from(held)),
        _ => p.state_since_ms,
    }
}
