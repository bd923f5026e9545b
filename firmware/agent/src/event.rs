//! HA events (SPEC E3): a bounded ring of timestamped, typed events; overflow is counted.

use ha_proto::msg::{FirmwareVersion, Forced, Role, Serial};
use heapless::Deque;

use crate::LinkId;

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
    /// The operator asked to reload the HA settings: the shell calls `Agent::reload`.
    ReloadRequested,
}

/// A timestamped event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overflow_is_counted_and_oldest_dropped() {
        let mut r = EventRing::default();
        for t in 0..EVENT_CAP as u64 + 5 {
            r.push(Event {
                at_ms: t,
                kind: EventKind::Resumed,
            });
        }
        assert_eq!(r.len(), EVENT_CAP);
        assert_eq!(r.overflow(), 5);
        assert_eq!(r.iter().next().unwrap().at_ms, 5);
    }
}
