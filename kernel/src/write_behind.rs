//! The standby's write-behind (sans-IO): the peer's entries held in memory while the sync
//! stream is busy and written into this member's kernel when it goes quiet, when the oldest
//! has waited [`Policy::max_hold_ms`], when [`Policy::max_pending`] are held, or at once on a
//! takeover ([`WriteBehind::take_all`]).
//!
//! Why: a standby that installs every entry as it arrives spends kernel time on entries that
//! live for a moment (a connection opened and closed within the burst costs a create and a
//! delete), and on one kernel shared by both members (the bench, a test rig) its ctnetlink
//! requests take turns with the active's under nfnetlink's mutex. Held entries are coalesced:
//! an update replaces the held entry, and an entry created and ended while held never reaches
//! the kernel. What it costs: a takeover during a burst first writes what is held (at most
//! [`Policy::max_pending`] entries), before the guard opens, so no fresh entry can shadow a
//! synced one. Below [`Policy::busy_per_s`] records a second every entry goes in as it comes,
//! as without the write-behind.
//!
//! Whether a held entry ever reached the kernel decides whether its end must be written: the
//! keys written (and not removed since) are kept; until a dump of the kernel has been seen
//! ([`WriteBehind::seed`]) every key counts as possibly present and every end is written.

use hashbrown::{HashMap, HashSet};

use crate::conntrack::{CtEntry, CtTuple};

/// An entry's key in the kernel's table: its original direction and zone.
pub type Key = (CtTuple, u16);

/// When held entries are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    /// The stream counts as busy from this many records a second (over the last
    /// [`WINDOW_MS`] window or the one before); below it, entries are written as they come.
    pub busy_per_s: u32,
    /// Once seen busy, the stream stays busy for this long after its last busy window
    /// (unless it goes quiet), ms. A burst that stutters (the active's sync thread waits for
    /// a core) shows calm windows in the middle: written then, the standby's ctnetlink
    /// requests slowed the active's creations, which made the stream calmer still (session
    /// 24: 164 calm writes during two rounds of churn, each creation 40 % slower).
    pub busy_hold_ms: u64,
    /// Written once no record came for this long, ms.
    pub quiet_ms: u64,
    /// Written once the oldest held record has waited this long, ms: bounds how stale the
    /// kernel's copy gets in a long burst (nothing reads it before a takeover, whose write
    /// [`Policy::max_pending`] bounds).
    pub max_hold_ms: u64,
    /// Written (a chunk at a time) while more than this many are held: bounds the write a
    /// takeover during a burst has to wait for.
    pub max_pending: usize,
    /// Entries per write ([`WriteBehind::take_chunk`]): new records are taken in between, so a
    /// resumed burst finds the writer holding again.
    pub chunk: usize,
}

impl Default for Policy {
    /// 10,000 records/s is busy, for 500 ms after the last busy window; written after 100 ms
    /// of quiet (a busy stream's gaps reach 20 ms on a loaded 2-core machine), 5 s of holding
    /// or past 131,072 held (measured: 75,494 held entries written in 339 ms at a takeover,
    /// so about 0.6 s), 4,096 a write.
    fn default() -> Self {
        Policy {
            busy_per_s: 10_000,
            busy_hold_ms: 500,
            quiet_ms: 100,
            max_hold_ms: 5_000,
            max_pending: 131_072,
            chunk: 4_096,
        }
    }
}

/// The window over which the stream's rate is counted, ms.
pub const WINDOW_MS: u64 = 50;

/// Why held entries are written now (for counters and the journal).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Due {
    /// The stream is below [`Policy::busy_per_s`].
    Calm,
    /// No record for [`Policy::quiet_ms`].
    Quiet,
    /// The oldest held record waited [`Policy::max_hold_ms`].
    Held,
    /// More than [`Policy::max_pending`] are held.
    Full,
}

/// One write for the kernel: removals first (a key removed and installed again while held
/// must end before it starts anew), then installs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Write {
    /// Keys to remove.
    pub remove: Vec<Key>,
    /// Entries to install or refresh.
    pub install: Vec<CtEntry>,
}

impl Write {
    /// Nothing to write.
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.install.is_empty()
    }

    /// Entries in it.
    pub fn len(&self) -> usize {
        self.remove.len() + self.install.len()
    }
}

/// The held entries and what the kernel holds of them.
#[derive(Debug)]
pub struct WriteBehind {
    policy: Policy,
    /// Held installs, and whether the key is known to be absent from the kernel (then an end
    /// while held writes nothing).
    install: HashMap<Key, (CtEntry, bool)>,
    /// Held removals (keys that may be in the kernel).
    remove: HashSet<Key>,
    /// Keys written and not removed since (meaningful only once `known`).
    in_kernel: HashSet<Key>,
    /// A dump of the kernel was seen since it last held entries this writer did not write.
    known: bool,
    /// When the oldest held record came, ms.
    oldest_ms: Option<u64>,
    /// When the last record came, ms.
    last_ms: Option<u64>,
    /// Start of the current rate window, ms, its count, and the previous window's count.
    window: (u64, u64, u64),
    /// When a window last showed the stream busy, ms.
    busy_seen_ms: Option<u64>,
    /// Records that never reached the kernel (coalesced or cancelled while held).
    coalesced: u64,
}

impl WriteBehind {
    /// Nothing held; every key possibly in the kernel until [`WriteBehind::seed`].
    pub fn new(policy: Policy) -> Self {
        WriteBehind {
            policy,
            install: HashMap::new(),
            remove: HashSet::new(),
            in_kernel: HashSet::new(),
            known: false,
            oldest_ms: None,
            last_ms: None,
            window: (0, 0, 0),
            busy_seen_ms: None,
            coalesced: 0,
        }
    }

    /// The policy it follows.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// The kernel's table as a dump showed it: from now on an end of a key neither in it nor
    /// written since is not written.
    pub fn seed(&mut self, keys: impl IntoIterator<Item = Key>) {
        self.in_kernel.clear();
        self.in_kernel.extend(keys);
        self.known = true;
    }

    /// The kernel now holds entries this writer did not write (the member forwarded): every
    /// key counts as possibly present until the next [`WriteBehind::seed`].
    pub fn forget_kernel(&mut self) {
        self.known = false;
        self.in_kernel.clear();
        for (_, fresh) in self.install.values_mut() {
            *fresh = false;
        }
    }

    /// Entries held now.
    pub fn pending(&self) -> usize {
        self.install.len() + self.remove.len()
    }

    /// Records that never reached the kernel so far.
    pub fn coalesced(&self) -> u64 {
        self.coalesced
    }

    fn possibly_in_kernel(&self, k: &Key) -> bool {
        !self.known || self.in_kernel.contains(k)
    }

    /// Takes the peer's changes: entries to install or refresh and keys to remove, at `now_ms`.
    pub fn add(&mut self, install: &[CtEntry], remove: &[Key], now_ms: u64) {
        let n = (install.len() + remove.len()) as u64;
        if n == 0 {
            return;
        }
        self.count(n, now_ms);
        self.last_ms = Some(now_ms);
        if self.pending() == 0 {
            self.oldest_ms = Some(now_ms);
        }
        for e in install {
            let k = (e.orig, e.zone);
            let fresh = match self.install.get(&k) {
                Some(&(_, fresh)) => {
                    self.coalesced += 1;
                    fresh
                }
                None => !self.remove.contains(&k) && !self.possibly_in_kernel(&k),
            };
            self.install.insert(k, (*e, fresh));
        }
        for k in remove {
            match self.install.remove(k) {
                // Never in the kernel: neither its start nor its end is written.
                Some((_, true)) => self.coalesced += 2,
                Some((_, false)) => {
                    self.coalesced += 1;
                    self.remove.insert(*k);
                }
                None if self.possibly_in_kernel(k) => {
                    self.remove.insert(*k);
                }
                None => self.coalesced += 1,
            }
        }
        if self.pending() == 0 {
            self.oldest_ms = None;
        }
    }

    fn count(&mut self, n: u64, now_ms: u64) {
        self.roll(now_ms);
        self.window.1 += n;
        if self.window.1 >= self.per_window() {
            self.busy_seen_ms = Some(now_ms);
        }
    }

    /// [`Policy::busy_per_s`] per [`WINDOW_MS`] window (at least 1).
    fn per_window(&self) -> u64 {
        (u64::from(self.policy.busy_per_s) * WINDOW_MS / 1000).max(1)
    }

    fn roll(&mut self, now_ms: u64) {
        let (start, cur, _) = self.window;
        let since = now_ms.saturating_sub(start);
        if since >= 2 * WINDOW_MS {
            self.window = (now_ms, 0, 0);
        } else if since >= WINDOW_MS {
            self.window = (start + WINDOW_MS, 0, cur);
        }
    }

    /// True while the stream is at or above [`Policy::busy_per_s`], or was within the last
    /// [`Policy::busy_hold_ms`].
    pub fn busy(&mut self, now_ms: u64) -> bool {
        self.roll(now_ms);
        self.window.1.max(self.window.2) >= self.per_window()
            || self
                .busy_seen_ms
                .is_some_and(|t| now_ms.saturating_sub(t) < self.policy.busy_hold_ms)
    }

    /// Whether held entries are to be written now, and why.
    pub fn due(&mut self, now_ms: u64) -> Option<Due> {
        if self.pending() == 0 {
            return None;
        }
        if self.pending() > self.policy.max_pending {
            return Some(Due::Full);
        }
        if self
            .oldest_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= self.policy.max_hold_ms)
        {
            return Some(Due::Held);
        }
        if self
            .last_ms
            .is_some_and(|t| now_ms.saturating_sub(t) >= self.policy.quiet_ms)
        {
            return Some(Due::Quiet);
        }
        if !self.busy(now_ms) {
            return Some(Due::Calm);
        }
        None
    }

    /// How long until [`WriteBehind::due`] may say yes without a new record, ms (none:
    /// nothing held).
    pub fn next_check(&self, now_ms: u64) -> Option<u64> {
        if self.pending() == 0 {
            return None;
        }
        let left = |since: Option<u64>, after: u64| {
            since.map(|t| t.saturating_add(after).saturating_sub(now_ms))
        };
        [
            left(self.oldest_ms, self.policy.max_hold_ms),
            left(self.last_ms, self.policy.quiet_ms),
            left(self.busy_seen_ms, self.policy.busy_hold_ms),
            // The rate windows roll over.
            Some(
                self.window
                    .0
                    .saturating_add(WINDOW_MS)
                    .saturating_sub(now_ms)
                    .max(1),
            ),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Up to [`Policy::chunk`] held entries to write now, removals first; the writer assumes
    /// they reach the kernel (one refused stays "possibly present", which costs at most a
    /// needless removal later).
    pub fn take_chunk(&mut self) -> Write {
        self.take(self.policy.chunk.max(1))
    }

    /// Everything held (a takeover: nothing may stay behind).
    pub fn take_all(&mut self) -> Write {
        self.take(usize::MAX)
    }

    fn take(&mut self, max: usize) -> Write {
        let mut w = Write::default();
        // Removals first: a held install of the same key must not be written before them.
        let keys: Vec<Key> = self.remove.iter().take(max).copied().collect();
        for k in keys {
            self.remove.remove(&k);
            self.in_kernel.remove(&k);
            w.remove.push(k);
        }
        let room = max - w.remove.len();
        if room > 0 && !self.install.is_empty() {
            let keys: Vec<Key> = self
                .install
                .keys()
                .filter(|k| !self.remove.contains(*k))
                .take(room)
                .copied()
                .collect();
            for k in keys {
                if let Some((e, _)) = self.install.remove(&k) {
                    if self.known {
                        self.in_kernel.insert(k);
                    }
                    w.install.push(e);
                }
            }
        }
        if self.pending() == 0 {
            self.oldest_ms = None;
        }
        w
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn entry(i: u32) -> CtEntry {
        let a = |x: u32| IpAddr::V4(Ipv4Addr::from(0x0a01_0000 + x));
        let orig = CtTuple {
            src: a(i),
            dst: a(1_000_000),
            proto: 6,
            src_port: 40_000,
            dst_port: 80,
        };
        CtEntry {
            orig,
            reply: orig.inverse(),
            status: 0,
            timeout_s: 300,
            mark: 0,
            zone: 0,
            tcp: None,
            helper: None,
            seq_adj: None,
        }
    }

    fn key(i: u32) -> Key {
        (entry(i).orig, 0)
    }

    fn seeded(policy: Policy) -> WriteBehind {
        let mut w = WriteBehind::new(policy);
        w.seed([]);
        w
    }

    /// A burst: `n` records within one window.
    fn burst(w: &mut WriteBehind, from: u32, n: u32, at: u64) {
        let es: Vec<CtEntry> = (from..from + n).map(entry).collect();
        w.add(&es, &[], at);
    }

    #[test]
    fn a_calm_stream_is_written_as_it_comes() {
        let mut w = seeded(Policy::default());
        w.add(&[entry(1)], &[], 1_000);
        assert_eq!(w.due(1_000), Some(Due::Calm));
        let out = w.take_chunk();
        assert_eq!(out.install, vec![entry(1)]);
        assert_eq!(w.pending(), 0);
        assert_eq!(w.due(1_000), None);
        assert_eq!(w.next_check(1_000), None);
    }

    #[test]
    fn a_busy_stream_is_held_until_it_goes_quiet() {
        let p = Policy::default();
        let mut w = seeded(p);
        burst(&mut w, 0, 1_000, 1_000);
        assert!(w.busy(1_000));
        assert_eq!(w.due(1_005), None);
        burst(&mut w, 1_000, 1_000, 1_010);
        assert_eq!(w.next_check(1_010), Some(40), "the rate window rolls first");
        assert_eq!(w.due(1_109), None);
        assert_eq!(w.next_check(1_109), Some(1));
        assert_eq!(w.due(1_110), Some(Due::Quiet));
        let out = w.take_chunk();
        assert_eq!(out.install.len(), 2_000);
    }

    #[test]
    fn a_stuttering_burst_stays_held_until_it_is_calm_for_the_hold() {
        let p = Policy::default();
        let mut w = seeded(p);
        burst(&mut w, 0, 1_000, 0);
        // Then 100 records every 60 ms (1,667 a second, calm windows), never 100 ms apart.
        let mut t = 0;
        let mut i = 1_000;
        while t + 60 < p.busy_hold_ms {
            t += 60;
            burst(&mut w, i, 100, t);
            i += 100;
            assert_eq!(w.due(t), None, "written in a stutter at {t} ms");
        }
        assert_eq!(w.next_check(t), Some(p.busy_hold_ms - t));
        assert_eq!(w.due(p.busy_hold_ms - 1), None);
        assert_eq!(w.due(p.busy_hold_ms), Some(Due::Calm));
        // A gap of the quiet time in a busy stream writes at once.
        let mut w = seeded(p);
        burst(&mut w, 0, 1_000, 0);
        assert_eq!(w.due(p.quiet_ms - 1), None);
        assert_eq!(w.due(p.quiet_ms), Some(Due::Quiet));
    }

    #[test]
    fn a_long_burst_is_written_after_the_hold_and_when_full() {
        let p = Policy {
            max_pending: 5_000,
            chunk: 1_000,
            ..Policy::default()
        };
        let mut w = seeded(p);
        // 1,000 records every 10 ms: busy, never quiet, full before the hold.
        let mut t = 0;
        let mut i = 0;
        while w.due(t).is_none() {
            burst(&mut w, i, 1_000, t);
            i += 1_000;
            t += 10;
        }
        assert_eq!(w.due(t), Some(Due::Full));
        assert_eq!(w.take_chunk().len(), 1_000);
        assert_eq!(w.pending(), 5_000);
        assert_eq!(w.due(t), None, "back at the bound: held again");
        // A slower long burst (20,000 records/s) reaches the hold instead.
        // Its first two steps come before a window's worth shows it busy: written as calm.
        let mut w = seeded(Policy::default());
        let (mut t, mut calm) = (0, 0);
        let why = loop {
            match w.due(t) {
                None => {}
                Some(Due::Calm) => {
                    calm += 1;
                    w.take_chunk();
                }
                Some(d) => break d,
            }
            burst(&mut w, (t / 10) as u32 * 200, 200, t);
            t += 10;
        };
        assert_eq!((why, calm), (Due::Held, 2));
        assert_eq!(t, 20 + 5_000);
    }

    #[test]
    fn an_entry_created_and_ended_while_held_never_reaches_the_kernel() {
        let mut w = seeded(Policy::default());
        burst(&mut w, 0, 1_000, 0);
        w.add(&[entry(5)], &[], 1); // an update: replaces the held one
        w.add(&[], &[key(5), key(6)], 2);
        let out = w.take_all();
        assert_eq!(out.install.len(), 998);
        assert!(out.remove.is_empty());
        assert_eq!(w.coalesced(), 1 + 2 + 2);
    }

    #[test]
    fn an_end_of_a_written_entry_is_written() {
        let mut w = seeded(Policy::default());
        w.add(&[entry(1)], &[], 0);
        assert_eq!(w.take_all().install, vec![entry(1)]);
        // An update held, then the end: the end is written, the update is not.
        w.add(&[entry(1)], &[], 10);
        w.add(&[], &[key(1)], 11);
        let out = w.take_all();
        assert_eq!(out.remove, vec![key(1)]);
        assert!(out.install.is_empty());
        // Ended, then the same tuple starts again: removal first, then the new entry.
        w.add(&[entry(2)], &[], 20);
        w.take_all();
        w.add(&[], &[key(2)], 30);
        w.add(&[entry(2)], &[], 31);
        let out = w.take_all();
        assert_eq!(out.remove, vec![key(2)]);
        assert_eq!(out.install, vec![entry(2)]);
        // A chunk never writes an install before its own key's removal.
        w.add(&[], &[key(2)], 40);
        w.add(&[entry(2)], &[], 41);
        let p = Policy {
            chunk: 1,
            ..Policy::default()
        };
        w.policy = p;
        assert_eq!(w.take_chunk().remove, vec![key(2)]);
        assert_eq!(w.take_chunk().install, vec![entry(2)]);
    }

    #[test]
    fn until_a_dump_is_seen_every_end_is_written() {
        let mut w = WriteBehind::new(Policy::default());
        w.add(&[], &[key(1)], 0);
        w.add(&[entry(2)], &[], 0);
        w.add(&[], &[key(2)], 0);
        let out = w.take_all();
        let mut rm = out.remove.clone();
        rm.sort_by_key(|k| k.0.src);
        assert_eq!(rm, vec![key(1), key(2)]);
        // Seeded with what the kernel holds: an end of a key it lacks is dropped.
        w.seed([key(3)]);
        w.add(&[], &[key(4), key(3)], 1);
        assert_eq!(w.take_all().remove, vec![key(3)]);
        // After this member forwarded, its kernel holds entries nobody wrote.
        w.forget_kernel();
        w.add(&[entry(9)], &[], 2);
        w.add(&[], &[key(9)], 2);
        assert_eq!(w.take_all().remove, vec![key(9)]);
    }

    #[test]
    fn time_going_backwards_or_standing_still_does_not_panic() {
        let mut w = seeded(Policy::default());
        burst(&mut w, 0, 1_000, 5_000);
        assert_eq!(w.due(0), None);
        assert!(w.next_check(0).is_some());
        assert_eq!(w.due(u64::MAX), Some(Due::Held));
    }
}
