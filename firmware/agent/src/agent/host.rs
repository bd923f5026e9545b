//! The main CPU as the controller sees it: when its roles are re-asserted, the keepalive
//! that teaches it this boot, and a member list it sent whose addresses the shell has not
//! fetched yet.
//!
//! A role is state, not an event: the roles go to the main CPU on every change and again
//! every [`ROLES_REFRESH_MS`], so a main CPU that missed a frame (a stalled line, a restart)
//! converges within that period.

use crate::event::EventKind;
use crate::status::ProbeNote;
use ha_proto::config_block::MemberEntry;
use ha_proto::msg::host::{CAP_NUMBERED_PROBES, CAP_TABLE_HELD};
use ha_proto::msg::MAX_MEMBERS;
use heapless::Vec;

use crate::agent::outbox::{Outbox, Pending};

/// How often the controller re-asserts its roles to the main CPU ([`ha_proto::msg::host::HostMsg::Roles`]),
/// ms. While the main CPU has not been heard, a keepalive goes with it so that it learns
/// this boot's epoch.
pub const ROLES_REFRESH_MS: u64 = 250;

/// The host-link bookkeeping of the controller's end.
#[derive(Clone)]
pub(crate) struct HostSide {
    /// Next periodic roles report (and keepalive while the main CPU is unheard).
    next_roles_ms: u64,
    /// Nonce of the last keepalive.
    ping_nonce: u32,
    /// A member list taken from the main CPU whose addresses the shell has not fetched yet.
    new_member_addresses: Option<Vec<MemberEntry, MAX_MEMBERS>>,
    /// When the main CPU was last heard (any accepted message); `None` before the first.
    last_heard_ms: Option<u64>,
    /// The main CPU fell silent for the main-CPU timeout and was not heard since, or
    /// restarted and has not caught up yet.
    lost: bool,
    /// After a main-CPU restart: the member stays out of the election until then.
    rejoin_at_ms: Option<u64>,
    /// What the main CPU said it understands ([`HostMsg::Capabilities`]); none until it
    /// says, and forgotten when it restarts (the new process may be of another release).
    ///
    /// [`HostMsg::Capabilities`]: ha_proto::msg::host::HostMsg::Capabilities
    capabilities: u32,
    /// The last probe answer received, until the shell takes it for its log.
    probe_note: Option<ProbeNote>,
    /// This main CPU process has reported whether it holds the table at least once.
    table_reported: bool,
}

impl HostSide {
    /// Roles due at `now`, the main CPU not heard yet.
    pub(crate) fn new(now: u64) -> Self {
        HostSide {
            next_roles_ms: now,
            ping_nonce: 0,
            new_member_addresses: None,
            last_heard_ms: None,
            lost: false,
            rejoin_at_ms: None,
            capabilities: 0,
            probe_note: None,
            table_reported: false,
        }
    }

    /// A probe answer was received.
    pub(crate) fn note_probe_answer(&mut self, note: ProbeNote) {
        self.probe_note = Some(note);
    }

    /// The last probe answer received, once.
    pub(crate) fn take_probe_note(&mut self) -> Option<ProbeNote> {
        self.probe_note.take()
    }

    /// The main CPU listed what it understands.
    pub(crate) fn set_capabilities(&mut self, bits: u32) {
        self.capabilities = bits;
    }

    /// The main CPU reported whether it holds the table.
    pub(crate) fn note_table_reported(&mut self) {
        self.table_reported = true;
    }

    /// True once this main CPU process reported whether it holds the table.
    pub(crate) fn table_reported(&self) -> bool {
        self.table_reported
    }

    /// True when the main CPU answers numbered probes.
    pub(crate) fn numbered_probes(&self) -> bool {
        self.capabilities & CAP_NUMBERED_PROBES != 0
    }

    /// A frame of the main CPU was accepted; `before` and `after` are its boot as the host
    /// link knew it before and after the frame. A main CPU (re)started or heard for the
    /// first time gets the roles and the status now rather than at the next refresh.
    pub(crate) fn handle_heard(
        &mut self,
        before: Option<u32>,
        after: Option<u32>,
        out: &mut Outbox,
    ) {
        if before != after {
            // Another process, maybe of another release: it says again what it understands.
            self.capabilities = 0;
            self.table_reported = false;
            out.push(Pending::Roles);
            out.push(Pending::Status);
        }
    }

    /// The periodic roles report, with a keepalive while the main CPU is `unheard`.
    pub(crate) fn handle_timeout(&mut self, now: u64, unheard: bool, out: &mut Outbox) {
        if now >= self.next_roles_ms {
            self.next_roles_ms = now + ROLES_REFRESH_MS;
            out.roles_refresh();
            if unheard {
                self.ping_nonce = self.ping_nonce.wrapping_add(1);
                out.push(Pending::Ping(self.ping_nonce));
            }
        }
    }

    /// When the next roles report is due, or the main CPU's silence becomes a loss.
    pub(crate) fn poll_at(&self, timeout_ms: u32) -> u64 {
        match self.last_heard_ms {
            Some(t) if timeout_ms > 0 && !self.lost => {
                self.next_roles_ms.min(t + u64::from(timeout_ms))
            }
            _ => self
                .rejoin_at_ms
                .map_or(self.next_roles_ms, |r| self.next_roles_ms.min(r)),
        }
    }

    /// Any message of the main CPU was accepted at `now`; true when it was lost until now
    /// (the member rejoins the election).
    pub(crate) fn handle_main_cpu_heard(&mut self, now: u64, out: &mut Outbox) -> bool {
        self.last_heard_ms = Some(now);
        if self.rejoin_at_ms.is_some_and(|t| now < t) {
            return false;
        }
        self.rejoin_at_ms = None;
        if self.lost {
            self.lost = false;
            out.event(now, EventKind::MainCpuBack);
            return true;
        }
        false
    }

    /// The main CPU restarted (a new boot on the host link after another one, while its
    /// silence is watched, `timeout_ms` not 0): everything it held (the connection table, the
    /// forwarding state) is gone, and a peer holds the synchronized copy. The member leaves
    /// the election until `rejoin_ms` has passed, so the peer takes over with the connections,
    /// then rejoins as passive (the restarted main CPU gets the table back by a bulk sync).
    pub(crate) fn handle_main_cpu_restart(
        &mut self,
        now: u64,
        timeout_ms: u32,
        rejoin_ms: u64,
        out: &mut Outbox,
    ) {
        if timeout_ms == 0 {
            return;
        }
        self.rejoin_at_ms = Some(now + rejoin_ms);
        if !self.lost {
            self.lost = true;
            out.event(
                now,
                EventKind::MainCpuLost {
                    last_ms: self.last_heard_ms.unwrap_or(now),
                },
            );
        }
    }

    /// Checks the main CPU's silence against `timeout_ms` (0: not watched); true when it
    /// has just been declared lost. Also ends the time out of the election after a main-CPU
    /// restart when the main CPU is heard.
    pub(crate) fn check_main_cpu(&mut self, now: u64, timeout_ms: u32, out: &mut Outbox) -> bool {
        let Some(t) = self.last_heard_ms else {
            return false;
        };
        if let Some(r) = self.rejoin_at_ms {
            if now >= r && now < t + u64::from(timeout_ms) {
                self.handle_main_cpu_heard(t, out);
                return false;
            }
        }
        if timeout_ms == 0 || self.lost || now < t + u64::from(timeout_ms) {
            return false;
        }
        self.lost = true;
        out.event(now, EventKind::MainCpuLost { last_ms: t });
        true
    }

    /// When the main CPU was last heard, while its silence is watched against `timeout_ms`
    /// (not 0, not lost yet); `None` otherwise ([`crate::Agent::private_timers`]).
    pub(crate) fn private_timer(&self, timeout_ms: u32) -> Option<u64> {
        self.last_heard_ms.filter(|_| timeout_ms > 0 && !self.lost)
    }

    /// After a main-CPU restart, when the member rejoins the election
    /// ([`crate::Agent::private_timers`]).
    pub(crate) fn rejoin_timer(&self) -> Option<u64> {
        self.rejoin_at_ms
    }

    /// True while the main CPU counts as lost.
    pub(crate) fn main_cpu_lost(&self) -> bool {
        self.lost
    }

    /// A member list taken from the main CPU: the shell sends main-link frames to these
    /// addresses from now on.
    pub(crate) fn set_member_addresses(&mut self, list: Vec<MemberEntry, MAX_MEMBERS>) {
        self.new_member_addresses = Some(list);
    }

    /// The member list not fetched yet, if any.
    pub(crate) fn take_member_addresses(&mut self) -> Option<Vec<MemberEntry, MAX_MEMBERS>> {
        self.new_member_addresses.take()
    }
}

impl<const M: usize, const D: usize> crate::Agent<M, D> {
    /// Any message of the main CPU was accepted at `now`: the first one of this boot says
    /// that it runs, and it is counted as holding the table until it says otherwise.
    pub(super) fn main_cpu_heard(&mut self, now: u64) {
        let first = self.host.last_heard_ms.is_none();
        self.host.handle_main_cpu_heard(now, &mut self.out);
        if first {
            self.forget_table_report();
        }
    }

    /// After a decision: whether this member is active somewhere (then its table is the
    /// authoritative one, and the main CPU's report never lowers its quality).
    pub(super) fn note_active_somewhere(&mut self) {
        let active = self.domains.active_anywhere();
        let (now, links) = (self.now, self.cfg.links);
        self.local.set_active(active, now, links, &mut self.out);
    }

    /// The main CPU's capabilities `bits`: one that lists [`CAP_TABLE_HELD`] does not hold
    /// the table until its first report (repeated capabilities leave a report as it is).
    pub(super) fn main_cpu_reports_table(&mut self, bits: u32) {
        if bits & CAP_TABLE_HELD != 0 && !self.host.table_reported() {
            let (now, links) = (self.now, self.cfg.links);
            self.local.set_table_held(false, now, links, &mut self.out);
        }
    }

    /// The main CPU's report of whether it holds its peers' table.
    pub(super) fn take_table_report(&mut self, held: bool) {
        self.host.note_table_reported();
        let (now, links) = (self.now, self.cfg.links);
        self.local.set_table_held(held, now, links, &mut self.out);
    }

    /// A main CPU heard for the first time, or another main CPU process: it says whether it
    /// holds the table (an earlier release never does, and must not be held back by the last
    /// process's report, nor a main CPU that runs by its silence before).
    pub(super) fn forget_table_report(&mut self) {
        if self.local.waiting_for_table() {
            let (now, links) = (self.now, self.cfg.links);
            self.local.set_table_held(true, now, links, &mut self.out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A restarted main CPU may be of an older release: what the previous process said it
    /// understands is forgotten until the new one says it again.
    #[test]
    fn a_restarted_main_cpu_is_asked_only_what_it_says_it_understands() {
        let mut h = HostSide::new(0);
        let mut out = Outbox::new();
        assert!(!h.numbered_probes());
        h.handle_heard(None, Some(1), &mut out);
        h.set_capabilities(CAP_NUMBERED_PROBES);
        assert!(h.numbered_probes());
        h.handle_heard(Some(1), Some(1), &mut out);
        assert!(h.numbered_probes(), "the same process");
        h.handle_heard(Some(1), Some(2), &mut out);
        assert!(!h.numbered_probes(), "a new process");
    }
}
