//! The outbox: outputs queued between two drains, and the numbered event ring.
//!
//! Outputs are queued small ([`Pending`]): a frame or a report is built and sealed only when
//! the shell drains it, so it describes the state at that moment and a burst of changes
//! costs one frame per link, not one per change.

use ha_proto::msg::member::AdminCommand;
use ha_proto::msg::Serial;
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
    Probe(Serial),
    /// A keepalive to the main CPU.
    Ping(u32),
    /// The answer to the main CPU's keepalive.
    Pong(u32),
    /// A new LED pattern.
    Led(LedPattern),
    /// An event (already in the ring).
    Event(Event),
    /// The status report, to the main CPU.
    Status,
    /// The key state, to the main CPU.
    KeyState,
}

/// Pending outputs, the event ring and the event numbering.
#[derive(Clone)]
pub(crate) struct Outbox {
    queue: Deque<Pending, OUT_CAP>,
    events: EventRing,
    /// Sequence number of the next event (gaps tell the main CPU events were lost).
    next_seq: u32,
    /// Outputs dropped because the queue was full.
    dropped: u32,
}

impl Outbox {
    pub(crate) fn new() -> Self {
        Outbox {
            queue: Deque::new(),
            events: EventRing::default(),
            next_seq: 0,
            dropped: 0,
        }
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
            let link = LinkId(l);
            self.push_once(
                Pending::Heartbeat(link),
                |p| matches!(p, Pending::Heartbeat(x) if *x == link),
            );
        }
    }

    /// Records an event at `now`: numbered, kept in the ring, and queued for the shell.
    pub(crate) fn event(&mut self, now: u64, kind: EventKind) {
        let e = Event {
            seq: self.next_seq,
            at_ms: now,
            kind,
        };
        self.next_seq = self.next_seq.wrapping_add(1);
        self.events.push(e);
        self.push(Pending::Event(e));
    }

    /// The oldest queued output.
    pub(crate) fn pop(&mut self) -> Option<Pending> {
        self.queue.pop_front()
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
