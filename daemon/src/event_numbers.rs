//! The controller's event numbers as this daemon has seen them: which events of the
//! controller's ring it holds, where to ask the ring to resume after a (re)connection
//! ([`ha_proto::msg::host::HostMsg::EventsSince`]), what a number is to the log (new, a
//! duplicate of the ring sent again, or after a gap). Numbers start again with each
//! controller boot (its host-link epoch).

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// How long after asking for the ring a jump in the numbers is not called a gap: the ring
/// (at most 32 events, 4 every 10 ms) arrives well within it, possibly after live events.
pub const REPLAY_WINDOW: Duration = Duration::from_secs(2);
/// Numbers kept to recognize duplicates, below the highest seen.
const KEEP: u32 = 1024;

/// What a controller event is to the log ([`EventNumbers::note`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventNews {
    /// New, in order (or filling in earlier numbers).
    Next,
    /// New, after this many events that never arrived.
    After(u32),
    /// Seen already (the ring sent again): dropped.
    Duplicate,
}

/// See the module.
#[derive(Clone, Debug, Default)]
pub struct EventNumbers {
    epoch: Option<u32>,
    max: Option<u32>,
    seen: BTreeSet<u32>,
    /// Where the ring should resume, as known when the host link (re)connected: (boot,
    /// first number not seen).
    resume: Option<(u32, u32)>,
    replay_until: Option<Instant>,
    /// Numbers below this are not looked for again as holes ([`EventNumbers::behind`]).
    holes_from: u32,
}

impl EventNumbers {
    /// The host link (re)connected: remembers where this daemon stands, before anything of
    /// the new connection arrives.
    pub fn connected(&mut self) {
        self.resume = self
            .epoch
            .zip(self.max)
            .map(|(e, m)| (e, m.wrapping_add(1)));
    }

    /// The first number to ask the controller of boot `epoch` for: where this daemon stood
    /// at the connection in that boot, else 0 (the whole ring: what happened before it
    /// listened). Gaps are not reported for [`REPLAY_WINDOW`] from `now`.
    pub fn replay_request(&mut self, epoch: u32, now: Instant) -> u32 {
        self.replay_until = Some(now + REPLAY_WINDOW);
        match self.resume.take() {
            Some((e, from)) if e == epoch => from,
            _ => 0,
        }
    }

    /// The controller of boot `epoch` says its next event will be number `next`: when this
    /// daemon holds fewer of that boot (the last ones lost on the line, or none seen yet), the
    /// first number to ask it for again ([`ha_proto::msg::host::HostMsg::EventsSince`]); gaps
    /// are then not reported for [`REPLAY_WINDOW`].
    ///
    /// Also a hole below the highest number seen: an event lost on the line while the ring
    /// was being replayed (gaps are not reported then, so nothing else asks for it; seen
    /// once in a run where a frame with a link's `link_up` failed its COBS check, and that
    /// link's "since" stayed unknown). Each hole is asked for once: one the ring no longer
    /// holds is not asked for forever.
    pub fn behind(&mut self, epoch: Option<u32>, next: u32, now: Instant) -> Option<u32> {
        epoch?;
        let same = epoch == self.epoch;
        let hole = match self.max {
            Some(m) if same => {
                let low = self.holes_from.max(m.saturating_sub(KEEP));
                let hole = (low..m).find(|n| !self.seen.contains(n));
                self.holes_from = m;
                hole
            }
            _ => None,
        };
        let from = match (hole, self.max) {
            (Some(h), _) => h,
            (None, Some(m)) if same => m.wrapping_add(1),
            _ => 0,
        };
        if hole.is_none() && from >= next {
            return None;
        }
        self.replay_until = Some(now + REPLAY_WINDOW);
        Some(from)
    }

    /// Records event `seq` of the controller boot `epoch` arriving at `now`.
    pub fn note(&mut self, seq: u32, epoch: Option<u32>, now: Instant) -> EventNews {
        if epoch != self.epoch {
            self.epoch = epoch;
            self.max = None;
            self.seen.clear();
            self.holes_from = 0;
        }
        if self.seen.contains(&seq) {
            return EventNews::Duplicate;
        }
        let replaying = self.replay_until.is_some_and(|t| now < t);
        let missing = match self.max {
            Some(m) if seq > m.saturating_add(1) && !replaying => {
                let between = seq - m - 1;
                let held = self.seen.range(m + 1..seq).count() as u32;
                between - held
            }
            _ => 0,
        };
        self.seen.insert(seq);
        let max = self.max.map_or(seq, |m| m.max(seq));
        self.max = Some(max);
        while self
            .seen
            .first()
            .is_some_and(|&s| s < max.saturating_sub(KEEP))
        {
            self.seen.pop_first();
        }
        if missing > 0 {
            EventNews::After(missing)
        } else {
            EventNews::Next
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_jump_is_a_gap_a_number_seen_is_a_duplicate_a_new_boot_starts_again() {
        let t = Instant::now();
        let mut n = EventNumbers::default();
        assert_eq!(n.note(5, Some(7), t), EventNews::Next, "the first one seen");
        assert_eq!(n.note(6, Some(7), t), EventNews::Next);
        assert_eq!(n.note(10, Some(7), t), EventNews::After(3));
        assert_eq!(n.note(6, Some(7), t), EventNews::Duplicate);
        assert_eq!(
            n.note(8, Some(7), t),
            EventNews::Next,
            "a late one fills in"
        );
        // Another boot counts from 0: neither a duplicate nor a gap.
        assert_eq!(n.note(0, Some(8), t), EventNews::Next);
        assert_eq!(n.note(u32::MAX, Some(8), t), EventNews::After(u32::MAX - 1));
    }

    #[test]
    fn after_a_connection_the_ring_resumes_where_this_daemon_stood_then() {
        let t = Instant::now();
        let mut n = EventNumbers::default();
        // A fresh daemon: the whole ring, whatever arrives first.
        n.connected();
        assert_eq!(n.note(5, Some(7), t), EventNews::Next, "a live event first");
        assert_eq!(n.replay_request(7, t), 0);
        for s in 0..5 {
            assert_eq!(n.note(s, Some(7), t), EventNews::Next, "#{s} from the ring");
        }
        assert_eq!(n.note(5, Some(7), t), EventNews::Duplicate);
        assert_eq!(n.note(6, Some(7), t), EventNews::Next);
        // The link drops and comes back: from #7, even if #9 arrives first, no gap then.
        n.connected();
        assert_eq!(n.note(9, Some(7), t), EventNews::Next);
        assert_eq!(n.replay_request(7, t), 7);
        assert_eq!(n.note(7, Some(7), t), EventNews::Next);
        assert_eq!(n.note(8, Some(7), t), EventNews::Next);
        assert_eq!(n.note(9, Some(7), t), EventNews::Duplicate);
        // Past the window, a jump is a gap again.
        let later = t + REPLAY_WINDOW;
        assert_eq!(n.note(12, Some(7), later), EventNews::After(2));
        // Connected to a controller that restarted meanwhile: its whole ring.
        n.connected();
        assert_eq!(n.replay_request(8, t), 0);
    }

    #[test]
    fn events_lost_on_the_line_are_asked_for_again() {
        let t = Instant::now();
        let mut n = EventNumbers::default();
        assert_eq!(
            n.behind(None, 5, t),
            None,
            "the controller's boot not known yet"
        );
        assert_eq!(n.behind(Some(7), 0, t), None, "nothing logged yet");
        assert_eq!(n.behind(Some(7), 3, t), Some(0), "none seen of this boot");
        for s in 0..3 {
            n.note(s, Some(7), t);
        }
        assert_eq!(n.behind(Some(7), 3, t), None, "all held");
        // #3 and #4 were logged, the daemon got neither.
        assert_eq!(n.behind(Some(7), 5, t), Some(3));
        assert_eq!(
            n.note(4, Some(7), t),
            EventNews::Next,
            "no gap while they come again"
        );
        assert_eq!(n.note(3, Some(7), t), EventNews::Next);
    }

    /// A number lost while the ring was replayed (no gap is reported then) is asked for at
    /// the next details, once.
    #[test]
    fn a_hole_left_while_the_ring_was_replayed_is_asked_for_once() {
        let t = Instant::now();
        let mut n = EventNumbers::default();
        n.connected();
        assert_eq!(n.replay_request(7, t), 0);
        for s in [0, 1, 3, 4] {
            assert_ne!(n.note(s, Some(7), t), EventNews::Duplicate);
        }
        assert_eq!(n.behind(Some(7), 5, t), Some(2), "#2 never came");
        assert_eq!(n.behind(Some(7), 5, t), None, "asked once");
        // Gone from the ring too: a later hole is still asked for, the old one not again.
        for s in [5, 7] {
            n.note(s, Some(7), t + REPLAY_WINDOW);
        }
        assert_eq!(n.behind(Some(7), 8, t), Some(6));
        assert_eq!(n.note(6, Some(7), t), EventNews::Next);
        assert_eq!(n.behind(Some(7), 8, t), None);
    }
}
