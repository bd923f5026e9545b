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
//!   evidence; the controller takes an answer to any request of the current silence);
//! - a keepalive replaces the one still waiting;
//! - everything else keeps its order (interface reports: a short drop is news too; key
//!   rollover phases, member lists, settings).
//!
//! Messages are sealed when they leave the queue, so sequence numbers stay in order.

use std::collections::VecDeque;

use ha_proto::msg::host::HostMsg;
use ha_proto::msg::Serial;

/// Messages waiting at most; beyond it the oldest ordinary one is dropped (a controller
/// that reads nothing for that long is lost anyway, and its link is reconnected).
pub const UPLINK_MAX: usize = 256;

/// The queue (see the module).
#[derive(Debug, Default)]
pub struct Uplink {
    answers: VecDeque<HostMsg>,
    rest: VecDeque<HostMsg>,
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
    matches!((a, b), (HostMsg::Ping { .. }, HostMsg::Ping { .. }))
}

impl Uplink {
    /// Queues `msg`.
    pub fn push(&mut self, msg: HostMsg) {
        if let Some(peer) = answer_peer(&msg) {
            let before = self.answers.len();
            self.answers.retain(|m| answer_peer(m) != Some(peer));
            self.superseded += (before - self.answers.len()) as u64;
            self.answers.push_back(msg);
            return;
        }
        if let Some(old) = self.rest.iter_mut().find(|m| replaces_older(m, &msg)) {
            *old = msg;
            self.superseded += 1;
            return;
        }
        if self.rest.len() >= UPLINK_MAX {
            self.rest.pop_front();
            self.superseded += 1;
        }
        self.rest.push_back(msg);
    }

    /// The message to write next: a probe answer first, then the rest in order.
    pub fn pop(&mut self) -> Option<HostMsg> {
        self.answers.pop_front().or_else(|| self.rest.pop_front())
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
        q.push(HostMsg::Ping { nonce: 1 });
        q.push(HostMsg::DetailsRequest);
        for r in 127..=131 {
            q.push(answer("SN-A", r, true));
        }
        q.push(answer("SN-C", 9, true));
        q.push(answer("SN-A", 132, false));
        assert_eq!(q.pop(), Some(answer("SN-C", 9, true)));
        assert_eq!(q.pop(), Some(answer("SN-A", 132, false)));
        assert_eq!(q.pop(), Some(HostMsg::Ping { nonce: 1 }));
        assert_eq!(q.pop(), Some(HostMsg::DetailsRequest));
        assert_eq!(q.pop(), None);
        assert!(q.is_empty());
        assert_eq!(q.superseded(), 5);
    }

    /// A keepalive replaces the waiting one in its place; the other messages (interface
    /// reports, key rollover phases) keep their order.
    #[test]
    fn keepalives_are_replaced_the_rest_keeps_its_order() {
        let mut q = Uplink::default();
        q.push(HostMsg::Ping { nonce: 1 });
        q.push(HostMsg::UseKey { key_id: 2 });
        q.push(HostMsg::Ping { nonce: 2 });
        q.push(HostMsg::RetireKey { key_id: 2 });
        q.push(HostMsg::Interfaces(heapless::Vec::new()));
        q.push(HostMsg::Interfaces(heapless::Vec::new()));
        let order: Vec<HostMsg> = std::iter::from_fn(|| q.pop()).collect();
        assert_eq!(
            order,
            [
                HostMsg::Ping { nonce: 2 },
                HostMsg::UseKey { key_id: 2 },
                HostMsg::RetireKey { key_id: 2 },
                HostMsg::Interfaces(heapless::Vec::new()),
                HostMsg::Interfaces(heapless::Vec::new()),
            ]
        );
    }

    #[test]
    fn a_queue_never_grows_past_its_bound() {
        let mut q = Uplink::default();
        for seq in 0..(UPLINK_MAX as u32 + 10) {
            q.push(HostMsg::EventsSince { seq });
        }
        assert_eq!(q.pop(), Some(HostMsg::EventsSince { seq: 10 }));
        assert_eq!(q.superseded(), 10);
    }
}
