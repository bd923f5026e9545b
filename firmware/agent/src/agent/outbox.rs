//! The outbox: outputs queued between two drains, and the numbered event ring.
//!
//! Outputs are queued small ([`Pending`]): a frame or a report is built and sealed only when
//! the shell drains it, so it describes the state at that moment and a burst of changes
//! costs one frame per link, not one per change.

use ha_proto::msg::host::CountersReport;
use ha_proto::msg::member::AdminCommand;
use ha_proto::msg::{Role, Serial};
use heapless::Deque;

use crate::event::{Event, EventKind, EventRing};
use crate::link::LinkId;
use crate::output::LedPattern;

/// Outputs queued between two drains: a burst is one role change in every domain (an event
/// each, one roles report) plus heartbeats on both links, probes and the LED; 48 covers it
/// for 16 domains. Beyond it outputs are dropped and counted.
pub const OUT_CAP: usize = 48;

/// A queued output, kept small: frames are sealed only when drained.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Pending {
    /// A heartbeat on a link (built when drained).
    Heartbeat(LinkId),
    /// A resynchronization request to the winner of a collision.
    Resync {
        /// Link to send it on.
        link: LinkId,
        /// Domain of the collision.
        domain: u8,
        /// The winner.
        to: Serial,
    },
    /// An operator command relayed to another member.
    AdminFor {
        /// Link to send it on.
        link: LinkId,
        /// The member it is for.
        target: Serial,
        /// The command.
        command: AdminCommand,
    },
    /// Every domain's role, to the main CPU.
    Roles,
    /// A probe request for a silent peer, to the main CPU.
    Probe {
        /// The peer.
        peer: Serial,
        /// The request's number (sent when the main CPU understands numbered probes).
        request: u16,
    },
    /// A keepalive to the main CPU.
    Ping(u32),
    /// The answer to the main CPU's keepalive.
    Pong(u32),
    /// A new LED pattern.
    Led(LedPattern),
    /// An event of the ring ([`Outbox::pop`] hands them out; never queued).
    Event(Event),
    /// The status report, to the main CPU.
    Status,
    /// The key state, to the main CPU.
    KeyState,
    /// The details report (model, uptimes), to the main CPU.
    Details,
    /// The counters report, to the main CPU.
    Counters,
}

/// Events handed to the shell per turn of the agent (one input or timeout): a burst or a
/// replay of the ring goes out a few at a time, so that the shell's host line (one frame
/// each, about 13 ms at 115,200 baud) never holds the agent's other outputs back for long.
pub const EVENTS_PER_TURN: u8 = 4;
/// While events wait for their turn, the agent asks to be woken this soon (ms).
pub const EVENT_PACE_MS: u64 = 10;

/// Pending outputs, the event ring and the event numbering.
#[derive(Clone)]
pub(crate) struct Outbox {
    queue: Deque<Pending, OUT_CAP>,
    events: EventRing,
    /// Sequence number of the next event (gaps tell the main CPU events were lost).
    next_seq: u32,
    /// Sequence number of the next event to hand to the shell for the main CPU: events are
    /// sent from the ring, in order, behind the other outputs; the main CPU moves it back
    /// to have the ring sent again ([`Outbox::replay_from`]).
    to_send: u32,
    /// Events still allowed this turn ([`EVENTS_PER_TURN`]).
    budget: u8,
    /// Outputs dropped because the queue was full.
    dropped: u32,
    /// What happened since boot, counted as the events are made (the ring forgets).
    counts: CountersReport,
}

/// True when sequence number `a` comes after `b` (wrapping).
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Outbox {
            queue: Deque::new(),
            events: EventRing::default(),
            next_seq: 0,
            to_send: 0,
            budget: EVENTS_PER_TURN,
            dropped: 0,
            counts: CountersReport::default(),
        }
    }

    /// The number the next event will get.
    pub(crate) fn next_event(&self) -> u32 {
        self.next_seq
    }

    /// A new turn of the agent: events may go out again.
    pub(crate) fn new_turn(&mut self) {
        self.budget = EVENTS_PER_TURN;
    }

    /// The oldest event of the ring not yet handed to the shell.
    fn next_unsent(&self) -> Option<Event> {
        self.events
            .iter()
            .find(|e| !after(self.to_send, e.seq))
            .copied()
    }

    /// True while events of the ring wait for a turn (the agent then wakes within
    /// [`EVENT_PACE_MS`]).
    pub(crate) fn events_waiting(&self) -> bool {
        self.next_unsent().is_some()
    }

    /// The main CPU asks for the events from `seq` on (a daemon that (re)connected: what
    /// happened before it listened). The ring is sent again from there; from its oldest
    /// event when `seq` is older (the main CPU sees the gap) or from a number this agent
    /// has not reached (it counted another boot's events).
    pub(crate) fn replay_from(&mut self, seq: u32) {
        let oldest = self.events.iter().next().map_or(self.next_seq, |e| e.seq);
        self.to_send = if after(seq, self.next_seq) || after(oldest, seq) {
            oldest
        } else {
            seq
        };
    }

    /// A probe asked again because the main CPU had not answered in time.
    pub(crate) fn probe_reasked(&mut self) {
        self.counts.probes_reasked = self.counts.probes_reasked.wrapping_add(1);
    }

    /// What was counted since boot.
    pub(crate) fn counts(&self) -> CountersReport {
        self.counts
    }

    /// Queues an output at the back; a full queue drops it and counts it.
    pub(crate) fn push(&mut self, p: Pending) {
        if self.queue.push_back(p).is_err() {
            self.dropped = self.dropped.saturating_add(1);
        }
    }

    /// Queues `p` unless an output matching `queued` is already waiting.
    fn push_once(&mut self, p: Pending, queued: impl Fn(&Pending) -> bool) {
        if !self.queue.iter().any(queued) {
            self.push(p);
        }
    }

    /// After role changes: the roles report (and a status report), once per batch of
    /// changes: one report describes every domain, built when drained. The roles report
    /// goes ahead of every other queued output but earlier reports: a takeover must not wait
    /// behind events.
    pub(crate) fn roles_changed(&mut self) {
        if !self.queue.iter().any(|p| matches!(p, Pending::Roles))
            && self.queue.push_front(Pending::Roles).is_err()
        {
            self.dropped = self.dropped.saturating_add(1);
        }
        self.push_once(Pending::Status, |p| matches!(p, Pending::Status));
    }

    /// The periodic re-assertion of the roles (queued unless one is already waiting).
    pub(crate) fn roles_refresh(&mut self) {
        self.push_once(Pending::Roles, |p| matches!(p, Pending::Roles));
    }

    /// A heartbeat on each of the first `links` links now; one queued heartbeat per link is
    /// enough, since its content is built when drained.
    pub(crate) fn heartbeat_now(&mut self, links: u8) {
        for l in 0..links {
            self.heartbeat_on(LinkId(l));
        }
    }

    /// A heartbeat on `link` now (one queued per link, as [`Outbox::heartbeat_now`]).
    pub(crate) fn heartbeat_on(&mut self, link: LinkId) {
        self.push_once(
            Pending::Heartbeat(link),
            |p| matches!(p, Pending::Heartbeat(x) if *x == link),
        );
    }

    /// Records an event at `now`: numbered and kept in the ring, from which it goes to the
    /// shell ([`Outbox::pop`]).
    pub(crate) fn event(&mut self, now: u64, kind: EventKind) {
        let c = &mut self.counts;
        match kind {
            EventKind::RoleChanged {
                to: Role::Active, ..
            } => c.to_active = c.to_active.wrapping_add(1),
            EventKind::RoleChanged {
                from: Role::Active, ..
            } => c.from_active = c.from_active.wrapping_add(1),
            EventKind::PeerLost { .. } => c.peers_lost = c.peers_lost.wrapping_add(1),
            _ => {}
        }
        let to_send = self.to_send;
        let oldest_unsent = self
            .events
            .iter()
            .next()
            .is_some_and(|o| !after(to_send, o.seq));
        if self.events.len() == crate::event::EVENT_CAP && oldest_unsent {
            // The push below drops the oldest event before it went out.
            c.events_unsent = c.events_unsent.wrapping_add(1);
        }
        let e = Event {
            seq: self.next_seq,
            at_ms: now,
            kind,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        self.events.push(e);
    }

    /// The oldest queued output; when none, the next event of the ring while this turn's
    /// budget lasts. An event the ring dropped before it was sent is skipped (the main CPU
    /// sees the gap in the numbers).
    pub(crate) fn pop(&mut self) -> Option<Pending> {
        if let Some(p) = self.queue.pop_front() {
            return Some(p);
        }
        if self.budget == 0 {
            return None;
        }
        let e = self.next_unsent()?;
        self.to_send = e.seq.wrapping_add(1);
        self.budget -= 1;
        Some(Pending::Event(e))
    }

    /// The event ring.
    pub(crate) fn events(&self) -> &EventRing {
        &self.events
    }

    /// Outputs dropped because the queue was full.
    pub(crate) fn dropped(&self) -> u32 {
        self.dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EVENT_CAP;
    use ha_proto::msg::Serial;

    fn lost(o: &mut Outbox, n: usize) {
        for _ in 0..n {
            o.event(
                0,
                EventKind::PeerLost {
                    peer: Serial::new("SN-A").unwrap(),
                    confirmed: false,
                },
            );
        }
    }

    #[test]
    fn events_dropped_before_they_went_out_are_counted_sent_ones_are_not() {
        let mut o = Outbox::new();
        lost(&mut o, EVENT_CAP);
        // Two go out, then three more push the two sent and one unsent out of the ring.
        for _ in 0..2 {
            assert!(matches!(o.pop(), Some(Pending::Event(_))));
        }
        lost(&mut o, 3);
        let c = o.counts();
        assert_eq!(c.events_unsent, 1);
        assert_eq!(c.peers_lost, EVENT_CAP as u32 + 3);
    }
}
