//! The service's event log: completed and failed syncs, joins, refused frames (by reason),
//! sessions cut by a deadline. `hactl config events` reads it on the service's management
//! socket ([`ha_mgmt_api::Request::Events`]), with `--follow` to stream new ones.

use std::collections::VecDeque;
use std::sync::Mutex;

use ha_mgmt_api::{Event, EventKind};

/// Events kept. A member syncing its periodic jobs to 7 peers logs about 170 events an hour;
/// 4096 (the daemon's own log size) keeps a day of them in well under a megabyte.
pub const MAX_EVENTS: usize = 4096;

/// A callback told of every event as it is logged (the service process prints them).
pub type Observer = Box<dyn Fn(&Event) + Send + Sync>;

/// A bounded, numbered log of events; the oldest are dropped first.
#[derive(Default)]
pub struct EventLog {
    inner: Mutex<Ring>,
    observer: Option<Observer>,
}

#[derive(Default)]
struct Ring {
    events: VecDeque<Event>,
    /// Number of the next event (the first one kept is `next - events.len()`).
    next: u64,
}

fn now_ms() -> u64 {
    // Wall-clock time only labels events for the operator; nothing is decided from it.
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl EventLog {
    /// An empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty log that tells `observer` of every event.
    pub fn with_observer(observer: Observer) -> Self {
        Self {
            inner: Mutex::default(),
            observer: Some(observer),
        }
    }

    fn ring(&self) -> std::sync::MutexGuard<'_, Ring> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Logs one event about `member` (if any).
    pub fn push(&self, kind: EventKind, member: Option<&str>, detail: impl Into<String>) {
        let e = Event {
            time_ms: now_ms(),
            kind,
            member: member.map(str::to_string),
            detail: detail.into(),
            seq: None,
        };
        if let Some(o) = &self.observer {
            o(&e);
        }
        let mut r = self.ring();
        if r.events.len() == MAX_EVENTS {
            r.events.pop_front();
        }
        r.events.push_back(e);
        r.next += 1;
    }

    /// The last `n` events (all when `None`), oldest first, and the number of the next one.
    pub fn last(&self, n: Option<usize>) -> (Vec<Event>, u64) {
        let r = self.ring();
        let skip = r.events.len().saturating_sub(n.unwrap_or(usize::MAX));
        (r.events.iter().skip(skip).cloned().collect(), r.next)
    }

    /// The events numbered `from` and later (those still kept), and the number of the next.
    pub fn since(&self, from: u64) -> (Vec<Event>, u64) {
        let r = self.ring();
        let first = r.next - r.events.len() as u64;
        let skip = from.saturating_sub(first) as usize;
        (r.events.iter().skip(skip).cloned().collect(), r.next)
    }

    /// Every event kept, oldest first.
    pub fn all(&self) -> Vec<Event> {
        self.last(None).0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_and_numbered() {
        let log = EventLog::new();
        for i in 0..MAX_EVENTS + 10 {
            log.push(EventKind::SyncSuccess, Some("SN-B"), format!("{i}"));
        }
        let (all, next) = log.last(None);
        assert_eq!(all.len(), MAX_EVENTS);
        assert_eq!(all[0].detail, "10");
        assert_eq!(next, (MAX_EVENTS + 10) as u64);
        let (tail, _) = log.last(Some(2));
        assert_eq!(tail.len(), 2);
        log.push(EventKind::SyncFailure, None, "x");
        let (new, n2) = log.since(next);
        assert_eq!((new.len(), n2), (1, next + 1));
        assert_eq!(new[0].kind, EventKind::SyncFailure);
        assert!(log.since(0).0.len() == MAX_EVENTS);
    }
}
