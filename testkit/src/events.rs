//! The controller's event sequence as the harness received it: which numbers arrived, which
//! are missing and must be asked for again, and which are gone for good, so that a count
//! taken from the events (a soak's takeovers) can say whether it is complete.
//!
//! The controller numbers its events from 0 at boot and keeps the last
//! [`ha_agent::event::EVENT_CAP`] in a ring; a frame lost on a stalled host link leaves a hole
//! that [`HostMsg::EventsSince`](ha_proto::msg::host::HostMsg::EventsSince) fills while the
//! event is still in the ring. An event more than a ring's length behind the newest known one
//! has been overwritten: it is counted as lost, never silently skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use ha_proto::msg::host::EventReport;

/// How many events the controller's ring holds.
const RING: u32 = ha_agent::event::EVENT_CAP as u32;

/// How long the events the controller says it has made may stay unseen, with nothing newer
/// arriving, before they are asked for again: events in transit must not be asked for (a
/// replay resends the ring and would crowd out the new ones).
pub const TAIL_WAIT: Duration = Duration::from_secs(1);

/// What the harness knows of one controller boot's event numbers.
#[derive(Debug, Default, Clone)]
pub struct EventLedger {
    /// Every number below this one arrived or was given up as lost.
    complete_below: u32,
    /// Numbers at or above `complete_below` that arrived.
    ahead: BTreeSet<u32>,
    /// One past the newest number received.
    received_end: u32,
    /// One past the newest number known to exist (from an event or the controller's
    /// `next_event`).
    known_end: u32,
    /// Since when `received_end` has not moved while `known_end` was beyond it.
    tail_since: Option<Instant>,
    /// Numbers given up: a hole more than a ring's length behind the newest known event,
    /// overwritten before a replay could fetch it. One that arrives after all is taken back.
    lost: BTreeSet<u32>,
    /// Every role change to active, by event number: (controller ms, detail).
    to_active: BTreeMap<u32, (u64, String)>,
}

impl EventLedger {
    /// Takes in one received event (a duplicate from a replay is ignored).
    pub fn record(&mut self, ev: &EventReport) {
        self.known_end = self.known_end.max(ev.seq.saturating_add(1));
        if ev.seq >= self.received_end {
            self.received_end = ev.seq.saturating_add(1);
            self.tail_since = None;
        }
        let new = if ev.seq < self.complete_below {
            self.lost.remove(&ev.seq)
        } else {
            self.ahead.insert(ev.seq)
        };
        if new && ev.name.as_str() == "role_changed" && ev.detail.contains("-> active") {
            self.to_active
                .insert(ev.seq, (ev.at_ms, ev.detail.as_str().to_string()));
        }
        self.settle();
    }

    /// The controller said its next event gets number `next`: every number below exists.
    pub fn known_up_to(&mut self, next: u32, now: Instant) {
        self.known_end = self.known_end.max(next);
        if self.known_end > self.received_end && self.tail_since.is_none() {
            self.tail_since = Some(now);
        }
        self.settle();
    }

    /// The first missing number to ask a replay from: a hole below a number that arrived
    /// (the line lost it), or the tail when nothing new has arrived for [`TAIL_WAIT`] while
    /// the controller says there is more. `None` when nothing is missing.
    pub fn first_missing(&self, now: Instant) -> Option<u32> {
        if self.complete_below < self.received_end {
            return Some(self.complete_below);
        }
        let stuck = self.tail_since.is_some_and(|t| now >= t + TAIL_WAIT);
        (self.received_end < self.known_end && stuck).then_some(self.received_end)
    }

    /// Events given up as lost so far.
    pub fn lost(&self) -> u32 {
        self.lost.len() as u32
    }

    /// Events the controller made that have not arrived, lost or not (yet).
    pub fn missing(&self) -> u32 {
        self.lost() + (self.known_end - self.complete_below) - self.ahead.len() as u32
    }

    /// One past the newest event number known to exist.
    pub fn known_end(&self) -> u32 {
        self.known_end
    }

    /// Role changes to active with an event number at or above `from`: (number, controller
    /// ms, detail).
    pub fn to_active_since(&self, from: u32) -> Vec<(u32, u64, String)> {
        self.to_active
            .range(from..)
            .map(|(s, (at, d))| (*s, *at, d.clone()))
            .collect()
    }

    /// Advances past what arrived, and gives up holes the ring has overwritten.
    fn settle(&mut self) {
        loop {
            if self.ahead.remove(&self.complete_below) {
                self.complete_below += 1;
            } else if self.complete_below < self.received_end
                && self.complete_below.saturating_add(RING) < self.known_end
            {
                // A hole: the ring holds the `RING` newest events, this one is gone.
                self.lost.insert(self.complete_below);
                self.complete_below += 1;
            } else {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(seq: u32, name: &str, detail: &str) -> EventReport {
        EventReport {
            seq,
            at_ms: u64::from(seq) * 10,
            name: name.try_into().unwrap(),
            peer: None,
            detail: detail.try_into().unwrap(),
        }
    }

    fn link(seq: u32) -> EventReport {
        ev(seq, "link_down", "main link to QM-A down")
    }

    #[test]
    fn in_order_events_leave_nothing_missing() {
        let mut l = EventLedger::default();
        for s in 0..100 {
            l.record(&link(s));
        }
        l.known_up_to(100, Instant::now());
        assert_eq!((l.first_missing(Instant::now()), l.lost()), (None, 0));
    }

    #[test]
    fn a_hole_is_asked_for_and_a_replay_fills_it() {
        let mut l = EventLedger::default();
        l.record(&link(0));
        l.record(&link(2));
        assert_eq!(l.first_missing(Instant::now()), Some(1));
        // The replay resends from 1 on: 1 is new, 2 a duplicate.
        l.record(&ev(
            1,
            "role_changed",
            "domain 0: passive -> active (peer lost)",
        ));
        l.record(&link(2));
        assert_eq!((l.first_missing(Instant::now()), l.lost()), (None, 0));
        assert_eq!(l.to_active_since(0).len(), 1);
    }

    #[test]
    fn a_tail_in_transit_is_not_asked_for_a_stuck_one_is() {
        let mut l = EventLedger::default();
        let t0 = Instant::now();
        l.record(&link(0));
        // The details say 3 is next: 1 and 2 may still be on the way.
        l.known_up_to(3, t0);
        assert_eq!(l.first_missing(t0), None, "in transit: not asked for");
        assert_eq!(l.missing(), 2);
        // Nothing arrives for a while: asked for.
        assert_eq!(l.first_missing(t0 + TAIL_WAIT), Some(1));
        assert_eq!(l.lost(), 0, "still in the ring: not lost");
        // They arrive.
        l.record(&link(1));
        l.record(&link(2));
        assert_eq!(l.first_missing(t0 + TAIL_WAIT), None);
        assert_eq!(l.missing(), 0);
    }

    #[test]
    fn events_far_behind_the_details_are_not_lost_while_in_transit() {
        let mut l = EventLedger::default();
        l.record(&link(0));
        // The controller made many more than a ring while they were on the line.
        l.known_up_to(RING * 3, Instant::now());
        assert_eq!(l.lost(), 0, "nothing newer arrived: no hole");
        for s in 1..RING * 3 {
            l.record(&link(s));
        }
        assert_eq!((l.lost(), l.missing()), (0, 0));
    }

    #[test]
    fn what_the_ring_overwrote_is_counted_lost_not_skipped() {
        let mut l = EventLedger::default();
        l.record(&link(0));
        l.record(&link(RING + 10));
        // 1..=10 are more than a ring behind the newest: gone; 11..RING+10 can be replayed.
        assert_eq!(l.lost(), 10);
        assert_eq!(l.first_missing(Instant::now()), Some(11));
        for s in 11..RING + 10 {
            l.record(&link(s));
        }
        assert_eq!((l.first_missing(Instant::now()), l.lost()), (None, 10));
        // One given up arrives after all (it was late, not lost): taken back.
        l.record(&ev(
            5,
            "role_changed",
            "domain 0: passive -> active (peer lost)",
        ));
        assert_eq!((l.lost(), l.missing()), (9, 9));
        assert_eq!(l.to_active_since(0).len(), 1);
    }

    #[test]
    fn takeovers_are_counted_once_and_by_number() {
        let mut l = EventLedger::default();
        let up = ev(0, "role_changed", "domain 0: starting -> active (startup)");
        let take = ev(5, "role_changed", "domain 0: passive -> active (peer lost)");
        let down = ev(6, "role_changed", "domain 0: active -> passive (collision)");
        for e in [&up, &take, &take, &down] {
            l.record(e);
        }
        assert_eq!(l.to_active_since(0).len(), 2);
        let since1 = l.to_active_since(1);
        assert_eq!(since1.len(), 1);
        assert_eq!(since1[0].0, 5);
    }
}
