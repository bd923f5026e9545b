//! The daemon's queue of messages to its controller (sans-IO): what goes up the host link
//! next, when the link has taken the last frame.
//!
//! Why a queue of our own: the link's upward direction is slow (under QEMU the controller's
//! UART takes one byte per interrupt, 10-15 ms a frame on a loaded machine), and a frame
//! handed to the kernel cannot be taken back. Kept journals of 5 ms heartbeats under load
//! (session 19) showed the takeover's "dead" answer queued behind four "alive" answers to
//! earlier probes, 45 ms in all. So a frame is written only when the previous one has been
//! read ([`Uplink::pop`] is called when the transport's output queue is empty), and until
//! then messages wait here, where
//! - probe answers go first, and only the newest per peer is kept (it carries the newest
//!   evidence; the controller takes an answer to any request of the current silence), but
//!   a message that has waited [`STARVE_AFTER`] goes before them (with 5 ms heartbeats on a
//!   loaded machine the links flap every 50-100 ms and a probe answer is always waiting:
//!   a status request starved for 3 s in the first bench of this queue); a keepalive
//!   never does (any frame that goes up tells the controller the daemon lives);
//! - a keepalive, a status, details or counters request replaces the same one still
//!   waiting (asking twice gets nothing more);
//! - everything else keeps its order (interface reports: a short drop is news too; key
//!   rollover phases, member lists, settings).
//!
//! Messages are sealed when they leave the queue, so sequence numbers stay in order.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ha_proto::msg::host::HostMsg;
use ha_proto::msg::Serial;

/// Messages waiting at most; beyond it the oldest ordinary one is dropped (a controller
/// that reads nothing for that long is lost anyway, and its link is reconnected).
pub const UPLINK_MAX: usize = 256;

/// A message waiting this long goes before the probe answers.
pub const STARVE_AFTER: Duration = Duration::from_millis(50);

/// The queue (see the module).
#[derive(Debug, Default)]
pub struct Uplink {
    answers: VecDeque<HostMsg>,
    /// The other messages and when each was queued.
    rest: VecDeque<(Instant, HostMsg)>,
    /// Messages dropped: superseded (an older answer or keepalive) or over
    /// [`UPLINK_MAX`].
    superseded: u64,
}

/// The peer a probe answer is about.
fn answer_peer(m: &HostMsg) -> Option<Serial> {
    match m {
        HostMsg::ProbeAnswer { peer, .. } | HostMsg::ProbeResult { peer, .. } => Some(*peer),
        _ => None,
    }
}

/// True for messages whose newest copy says everything the older ones said.
fn replaces_older(a: &HostMsg, b: &HostMsg) -> bool {
    matches!(
        (a, b),
        (HostMsg::Ping { .. }, HostMsg::Ping { .. })
            | (HostMsg::StatusRequest, HostMsg::StatusRequest)
            | (HostMsg::DetailsRequest, HostMsg::DetailsRequest)
            | (HostMsg::CountersRequest, HostMsg::CountersRequest)
    )
}

impl Uplink {
    /// Queues `msg` at `now`.
    pub fn push(&mut self, msg: HostMsg, now: Instant) {
        if let Some(peer) = answer_peer(&msg) {
            let before = self.answers.len();
            self.answers.retain(|m| answer_peer(m) != Some(peer));
            self.superseded += (before - self.answers.len()) as u64;
            self.answers.push_back(msg);
            return;
        }
        if let Some((_, old)) = self.rest.iter_mut().find(|(_, m)| replaces_older(m, &msg)) {
            // In the older one's place (and with its age).
            *old = msg;
            self.superseded += 1;
            return;
        }
        if self.rest.len() >= UPLINK_MAX {
            self.rest.pop_front();
            self.superseded += 1;
        }
        self.rest.push_back((now, msg));
    }

    /// The message to write next at `now`: a probe answer first, unless the oldest other
    /// message has waited [`STARVE_AFTER`]; then the rest in order.
    pub fn pop(&mut self, now: Instant) -> Option<HostMsg> {
        // A keepalive never starves: any frame that goes up does its work.
        let starving = self.rest.front().is_some_and(|(t, m)| {
            !matches!(m, HostMsg::Ping { .. }) && now.saturating_duration_since(*t) >= STARVE_AFTER
        });
        if starving || self.answers.is_empty() {
            return self
                .rest
                .pop_front()
                .map(|(_, m)| m)
                .or_else(|| self.answers.pop_front());
        }
        self.answers.pop_front()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.answers.is_empty() && self.rest.is_empty()
    }

    /// Messages dropped because a newer one said the same, or over [`UPLINK_MAX`].
    pub fn superseded(&self) -> u64 {
        self.superseded
    }

    /// Forgets everything (the link was lost; a new one starts afresh).
    pub fn clear(&mut self) {
        self.answers.clear();
        self.rest.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> Serial {
        Serial::new(s).expect("serial")
    }

    fn t0() -> Instant {
        Instant::now()
    }

    fn answer(p: &str, request: u16, alive: bool) -> HostMsg {
        HostMsg::ProbeAnswer {
            peer: peer(p),
            request,
            alive,
        }
    }

    /// The journal's case: "alive" answers to earlier probes wait; the takeover's "dead"
    /// answer replaces them and leaves first.
    #[test]
    fn the_newest_probe_answer_goes_first_and_replaces_older_ones() {
        let mut q = Uplink::default();
        let t = t0();
        q.push(HostMsg::Ping { nonce: 1 }, t);
        q.push(HostMsg::DetailsRequest, t);
        for r in 127..=131 {
            q.push(answer("SN-A", r, true), t);
        }
        q.push(answer("SN-C", 9, true), t);
        q.push(answer("SN-A", 132, false), t);
        assert_eq!(q.pop(t), Some(answer("SN-C", 9, true)));
        assert_eq!(q.pop(t), Some(answer("SN-A", 132, false)));
        assert_eq!(q.pop(t), Some(HostMsg::Ping { nonce: 1 }));
        assert_eq!(q.pop(t), Some(HostMsg::DetailsRequest));
        assert_eq!(q.pop(t), None);
        assert!(q.is_empty());
        assert_eq!(q.superseded(), 5);
    }

    /// A keepalive replaces the waiting one in its place; the other messages (interface
    /// reports, key rollover phases) keep their order.
    #[test]
    fn keepalives_are_replaced_the_rest_keeps_its_order() {
        let mut q = Uplink::default();
        let t = t0();
        q.push(HostMsg::Ping { nonce: 1 }, t);
        q.push(HostMsg::UseKey { key_id: 2 }, t);
        q.push(HostMsg::Ping { nonce: 2 }, t);
        q.push(HostMsg::RetireKey { key_id: 2 }, t);
        q.push(HostMsg::Interfaces(heapless::Vec::new()), t);
        q.push(HostMsg::Interfaces(heapless::Vec::new()), t);
        q.push(HostMsg::StatusRequest, t);
        q.push(HostMsg::StatusRequest, t);
        let order: Vec<HostMsg> = std::iter::from_fn(|| q.pop(t)).collect();
        assert_eq!(
            order,
            [
                HostMsg::Ping { nonce: 2 },
                HostMsg::UseKey { key_id: 2 },
                HostMsg::RetireKey { key_id: 2 },
                HostMsg::Interfaces(heapless::Vec::new()),
                HostMsg::Interfaces(heapless::Vec::new()),
                HostMsg::StatusRequest,
            ]
        );
    }

    #[test]
    fn a_queue_never_grows_past_its_bound() {
        let mut q = Uplink::default();
        let t = t0();
        for seq in 0..(UPLINK_MAX as u32 + 10) {
            q.push(HostMsg::EventsSince { seq }, t);
        }
        assert_eq!(q.pop(t), Some(HostMsg::EventsSince { seq: 10 }));
        assert_eq!(q.superseded(), 10);
    }

    /// The bench's case: the links flap every 50-100 ms and a fresh probe answer waits at
    /// every turn; a status request still goes once it has waited long enough.
    #[test]
    fn answers_do_not_starve_the_rest() {
        let mut q = Uplink::default();
        let t = t0();
        q.push(HostMsg::StatusRequest, t);
        let mut now = t;
        let mut sent_status_at = None;
        for r in 0..20u16 {
            q.push(answer("SN-A", r, true), now);
            let m = q.pop(now).expect("a message");
            if m == HostMsg::StatusRequest {
                sent_status_at = Some(now - t);
                break;
            }
            now += Duration::from_millis(15);
        }
        let waited = sent_status_at.expect("the status request went");
        assert!(waited >= STARVE_AFTER && waited < STARVE_AFTER + Duration::from_millis(15));
        // A keepalive waits behind the answers however long.
        let mut q = Uplink::default();
        q.push(HostMsg::Ping { nonce: 1 }, t);
        let late = t + 10 * STARVE_AFTER;
        q.push(answer("SN-A", 1, true), late);
        assert_eq!(q.pop(late), Some(answer("SN-A", 1, true)));
    }
}
