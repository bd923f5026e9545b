//! Liveness probes of peers over the data interfaces, for the controller (sans-IO: the echo
//! requests go through [`Echoes`], the answers are returned to the caller).
//!
//! - A **probe** answers one [`HostMsg::ProbeRequest`](ha_proto::msg::host::HostMsg): echo
//!   requests to each of the peer's member addresses, [`PROBE_SENDS`] rounds over its time;
//!   "alive" at the first reply, "not alive" once its time is over and its last round was
//!   sent long enough ago to be answered.
//! - A **watch** keeps asking while this member is on standby, once the controller has told
//!   it how fast it needs answers (its first request): echo requests to the peer every probe
//!   time / [`PROBE_SENDS`]. When the controller then suspects the peer, the evidence is
//!   already there: a peer that has answered none of at least [`PROBE_SENDS`] requests, the
//!   oldest sent a whole probe time ago, is answered "not alive" at once instead of a probe
//!   time later. That is the same evidence a probe gathers (as many requests, as long to
//!   answer), only gathered before the question: on a crash the standby's controller learns
//!   it a probe time sooner, which is the time the host link's round trip needs.

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use ha_proto::msg::Serial;

/// How long a probe of a peer waits for an echo reply before answering "not alive", when
/// the controller's request names no time ([`PROBE_WITHIN`] bounds the time it names).
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(150);
/// The probe times a controller may ask for, ms: shorter would call a loaded but live peer
/// dead; longer only delays a takeover.
pub const PROBE_WITHIN: std::ops::RangeInclusive<u64> =
    ha_proto::msg::host::MIN_PROBE_WITHIN_MS as u64..=1000;
/// Echo requests are sent this many times over a probe's time (a lost packet is not a dead
/// peer); a watch needs as many unanswered ones.
pub const PROBE_SENDS: u32 = 3;
/// Echo requests of a watch awaited at once per address; older ones are given up (a newer
/// reply proves as much).
pub const WATCH_OUTSTANDING: usize = 8;
/// Shortest time between two echo requests of a watch.
pub const WATCH_MIN_INTERVAL: Duration = Duration::from_millis(1);

/// The probe time a controller's request asks for (0: the default).
pub fn probe_within(within_ms: u16) -> Duration {
    match within_ms {
        0 => PROBE_TIMEOUT,
        ms => {
            let ms = u64::from(ms).clamp(*PROBE_WITHIN.start(), *PROBE_WITHIN.end());
            Duration::from_millis(ms)
        }
    }
}

/// Where echo requests go: the forwarding plane's probe socket.
pub trait Echoes {
    /// Sends an echo request to `ip`; its sequence number, `None` when it could not be sent
    /// (no interface on that subnet, no route: not an answer either).
    fn send(&mut self, ip: Ipv4Addr, now: Instant) -> Option<u16>;
    /// True (once) when the reply to request `seq` from `ip` has arrived; replies still
    /// queued are read first.
    fn answered(&mut self, ip: Ipv4Addr, seq: u16) -> bool;
}

/// A probe's or a watch's answer about a peer, for the controller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Answer {
    /// The peer.
    pub peer: Serial,
    /// True: a member address answered.
    pub alive: bool,
    /// From the request to the answer.
    pub after: Duration,
    /// Answered from the watch's evidence (no probe of its own).
    pub watched: bool,
    /// The number of the request answered (`None`: a request of a controller that does not
    /// number them, [`HostMsg::ProbeRequest`](ha_proto::msg::host::HostMsg)).
    pub request: Option<u16>,
}

struct Probe {
    peer: Serial,
    request: Option<u16>,
    targets: Vec<(Ipv4Addr, Vec<u16>)>,
    started: Instant,
    last_sent: Instant,
    /// How long it listens before answering "not alive".
    within: Duration,
    /// Echo requests sent so far (rounds over all targets).
    sends: u32,
}

impl Probe {
    /// When the next echo requests go out.
    fn resend_at(&self) -> Instant {
        self.last_sent + self.within / PROBE_SENDS
    }

    /// When it has something to do next: send its next round of requests, or (every round
    /// sent) answer "not alive" — its time over and the last round long enough ago to be
    /// answered. A daemon starved of CPU sends its rounds late, and so concludes late rather
    /// than calling a live peer dead.
    fn next_at(&self) -> Instant {
        if self.sends < PROBE_SENDS {
            self.resend_at()
        } else {
            (self.started + self.within).max(self.resend_at())
        }
    }

    /// True when it may answer "not alive" at `now`.
    fn expired(&self, now: Instant) -> bool {
        self.sends >= PROBE_SENDS && now >= self.next_at()
    }

    fn send(&mut self, echoes: &mut dyn Echoes, now: Instant) {
        for (ip, seqs) in &mut self.targets {
            if let Some(seq) = echoes.send(*ip, now) {
                seqs.push(seq);
            }
        }
        self.last_sent = now;
        self.sends += 1;
    }
}

/// One member address of a watched peer.
#[derive(Debug)]
struct Target {
    ip: Ipv4Addr,
    /// Requests sent since the last reply and still awaited (sequence, sent at), oldest
    /// first, at most [`WATCH_OUTSTANDING`].
    outstanding: VecDeque<(u16, Instant)>,
    /// Send times of the requests unanswered since the last reply (sent ones and those that
    /// could not be sent), oldest first: the evidence. Kept to the [`PROBE_SENDS`] oldest
    /// and the newest ones.
    unanswered: VecDeque<Instant>,
    /// When the last reply's request was sent.
    replied: Option<Instant>,
}

impl Target {
    /// True when this address has answered none of at least [`PROBE_SENDS`] requests sent
    /// `spacing` or more before `now`, the oldest of them sent `within` or more before.
    fn silent(&self, now: Instant, within: Duration, spacing: Duration) -> bool {
        let Some(oldest) = self.unanswered.front() else {
            return false;
        };
        let old_enough = self
            .unanswered
            .iter()
            .filter(|t| now.saturating_duration_since(**t) >= spacing)
            .count();
        old_enough >= PROBE_SENDS as usize && now.saturating_duration_since(*oldest) >= within
    }
}

/// The standby's running watch of one peer.
#[derive(Debug)]
struct Watch {
    peer: Serial,
    targets: Vec<Target>,
    /// The probe time of the controller's last request.
    within: Duration,
    last_sent: Option<Instant>,
}

impl Watch {
    fn interval(&self) -> Duration {
        (self.within / PROBE_SENDS).max(WATCH_MIN_INTERVAL)
    }

    /// When the next round is due (`None`: at once).
    fn next_at(&self) -> Option<Instant> {
        self.last_sent.map(|t| t + self.interval())
    }

    /// Reads the replies, then sends the next round when due.
    fn run(&mut self, echoes: &mut dyn Echoes, now: Instant) {
        for t in &mut self.targets {
            // The newest answered request: every request sent before it is moot. Their
            // replies are taken too: one left behind stays in the plane's set of replies,
            // and a set grown full is emptied, which could lose a fresh reply.
            let newest = t
                .outstanding
                .iter()
                .rposition(|(seq, _)| echoes.answered(t.ip, *seq));
            if let Some(i) = newest {
                let at = t.outstanding[i].1;
                for (seq, _) in t.outstanding.drain(..i) {
                    echoes.answered(t.ip, seq);
                }
                t.outstanding.pop_front();
                t.unanswered.retain(|sent| *sent > at);
                t.replied = Some(at);
            }
        }
        if self.next_at().is_some_and(|t| now < t) {
            return;
        }
        for t in &mut self.targets {
            if let Some(seq) = echoes.send(t.ip, now) {
                if t.outstanding.len() == WATCH_OUTSTANDING {
                    t.outstanding.pop_front();
                }
                t.outstanding.push_back((seq, now));
            }
            // Bounded: the oldest few (the evidence's start) and the newest.
            if t.unanswered.len() >= 2 * WATCH_OUTSTANDING {
                t.unanswered.remove(PROBE_SENDS as usize);
            }
            t.unanswered.push_back(now);
        }
        self.last_sent = Some(now);
    }

    /// True when every address of the peer is [`Target::silent`] for `within`.
    fn silent(&self, now: Instant, within: Duration) -> bool {
        !self.targets.is_empty()
            && self
                .targets
                .iter()
                .all(|t| t.silent(now, within, self.interval()))
    }

    /// True when some address answered a request sent at or after `since`.
    fn replied_since(&self, since: Instant) -> bool {
        self.targets
            .iter()
            .any(|t| t.replied.is_some_and(|at| at >= since))
    }
}

/// The probes under way and the standby's watches.
#[derive(Default)]
pub struct Probes {
    probes: Vec<Probe>,
    watches: Vec<Watch>,
}

impl Probes {
    /// The controller asks about `peer` (member addresses `targets`), to be answered within
    /// `within`. Returns the answer when it is known at once: no address to probe (not
    /// proven alive), or the watch's evidence says "not alive". Otherwise a probe starts
    /// (a request for a peer already under probe restarts it) and [`Probes::run`] answers.
    /// On `standby` the request also starts (or retunes) the watch of the peer. `request`
    /// is the controller's number for it, carried by the answer.
    #[allow(clippy::too_many_arguments)]
    pub fn request(
        &mut self,
        echoes: &mut dyn Echoes,
        peer: Serial,
        request: Option<u16>,
        targets: Vec<Ipv4Addr>,
        within: Duration,
        standby: bool,
        now: Instant,
    ) -> Option<Answer> {
        self.probes.retain(|p| p.peer != peer);
        let answer = |alive, watched| Answer {
            peer,
            alive,
            after: Duration::ZERO,
            watched,
            request,
        };
        if targets.is_empty() {
            return Some(answer(false, false));
        }
        // The watch follows the controller's last request: its peer, addresses and time.
        match self.watches.iter_mut().find(|w| w.peer == peer) {
            _ if !standby => {}
            Some(w) => {
                w.within = within;
                let same = w.targets.len() == targets.len()
                    && w.targets.iter().zip(&targets).all(|(t, ip)| t.ip == *ip);
                if !same {
                    w.targets = targets.iter().map(|ip| new_target(*ip)).collect();
                }
            }
            None => self.watches.push(Watch {
                peer,
                targets: targets.iter().map(|ip| new_target(*ip)).collect(),
                within,
                last_sent: None,
            }),
        }
        if let Some(w) = self.watches.iter_mut().find(|w| w.peer == peer) {
            w.run(echoes, now);
            if w.silent(now, within) {
                return Some(answer(false, true));
            }
        }
        let mut p = Probe {
            peer,
            request,
            targets: targets.into_iter().map(|t| (t, Vec::new())).collect(),
            started: now,
            last_sent: now,
            within,
            sends: 0,
        };
        p.send(echoes, now);
        self.probes.push(p);
        None
    }

    /// Runs the watches (while `standby`; otherwise they stop and are forgotten) and the
    /// probes: the answers due at `now`.
    pub fn run(&mut self, echoes: &mut dyn Echoes, standby: bool, now: Instant) -> Vec<Answer> {
        if standby {
            for w in &mut self.watches {
                w.run(echoes, now);
            }
        } else {
            self.watches.clear();
        }
        let mut answers = Vec::new();
        let watches = &self.watches;
        self.probes.retain(|p| {
            let watch = watches.iter().find(|w| w.peer == p.peer);
            let mut answered = p
                .targets
                .iter()
                .any(|(ip, seqs)| seqs.iter().any(|s| echoes.answered(*ip, *s)));
            answered |= watch.is_some_and(|w| w.replied_since(p.started));
            let silent = watch.is_some_and(|w| w.silent(now, p.within));
            let alive = if answered {
                true
            } else if p.expired(now) || silent {
                false
            } else {
                return true;
            };
            answers.push(Answer {
                peer: p.peer,
                alive,
                after: now.saturating_duration_since(p.started),
                watched: !alive && silent && !p.expired(now),
                request: p.request,
            });
            // Its requests' replies that came are taken (see `Watch::run`).
            for (ip, seqs) in &p.targets {
                for s in seqs {
                    echoes.answered(*ip, *s);
                }
            }
            false
        });
        for p in &mut self.probes {
            if p.sends < PROBE_SENDS && now >= p.resend_at() {
                p.send(echoes, now);
            }
        }
        answers
    }

    /// When [`Probes::run`] has something to do next (a round of requests or an answer).
    pub fn next_at(&self, standby: bool) -> Option<Instant> {
        let probes = self.probes.iter().map(Probe::next_at);
        let watches = self
            .watches
            .iter()
            .filter(|_| standby)
            .map(|w| w.next_at().unwrap_or_else(Instant::now));
        probes.chain(watches).min()
    }

    /// Forgets every probe and watch (no forwarding plane to probe with).
    pub fn clear(&mut self) {
        self.probes.clear();
        self.watches.clear();
    }
}

fn new_target(ip: Ipv4Addr) -> Target {
    Target {
        ip,
        outstanding: VecDeque::new(),
        unanswered: VecDeque::new(),
        replied: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashSet};

    /// Echo requests into a fake network: addresses in `alive` answer each request
    /// `delay` after it was sent (the replies are read at the next `answered`).
    struct Net {
        alive: HashSet<Ipv4Addr>,
        delay: Duration,
        seq: u16,
        sent: BTreeMap<(Ipv4Addr, u16), Instant>,
        now: Instant,
        count: usize,
    }

    impl Net {
        fn new(t0: Instant) -> Net {
            Net {
                alive: HashSet::new(),
                delay: Duration::from_micros(300),
                seq: 0,
                sent: BTreeMap::new(),
                now: t0,
                count: 0,
            }
        }
    }

    impl Echoes for Net {
        fn send(&mut self, ip: Ipv4Addr, now: Instant) -> Option<u16> {
            self.seq = self.seq.wrapping_add(1);
            self.sent.insert((ip, self.seq), now);
            self.count += 1;
            Some(self.seq)
        }
        fn answered(&mut self, ip: Ipv4Addr, seq: u16) -> bool {
            let due = self.sent.get(&(ip, seq)).copied();
            match due {
                Some(at) if self.alive.contains(&ip) && at + self.delay <= self.now => {
                    self.sent.remove(&(ip, seq));
                    true
                }
                _ => false,
            }
        }
    }

    const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 12);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn peer() -> Serial {
        Serial::new("SN-B").expect("serial")
    }

    /// Steps the clock by 0.5 ms up to `until`, running the probes, and returns the answers.
    fn run_until(p: &mut Probes, net: &mut Net, standby: bool, until: Instant) -> Vec<Answer> {
        let mut out = Vec::new();
        while net.now < until {
            net.now += Duration::from_micros(500);
            let now = net.now;
            out.extend(p.run(net, standby, now));
        }
        out
    }

    /// A probe answers "not alive" only after its time and its three rounds of requests,
    /// the last one a third of its time ago: a daemon that was not scheduled (its rounds
    /// late) does not call a live peer dead for want of having asked.
    #[test]
    fn a_probe_concludes_only_after_its_rounds_of_requests() {
        let t0 = Instant::now();
        let mut p = Probe {
            peer: peer(),
            request: None,
            targets: Vec::new(),
            started: t0,
            last_sent: t0,
            within: ms(30),
            sends: 1,
        };
        assert!(!p.expired(t0 + ms(100)), "one round sent");
        (p.sends, p.last_sent) = (3, t0 + ms(20));
        assert!(!p.expired(t0 + ms(29)));
        assert!(p.expired(t0 + ms(30)), "on time: its time");
        // Starved: the third round went out at 100 ms.
        p.last_sent = t0 + ms(100);
        assert!(!p.expired(t0 + ms(105)));
        assert!(p.expired(t0 + ms(110)));
        assert_eq!(probe_within(0), PROBE_TIMEOUT);
        assert_eq!(probe_within(1), ms(5), "clamped");
        assert_eq!(probe_within(u16::MAX), ms(1000), "clamped");
    }

    #[test]
    fn a_live_peer_is_answered_alive_by_its_probe() {
        let t0 = Instant::now();
        let mut net = Net::new(t0);
        net.alive.insert(PEER_IP);
        let mut p = Probes::default();
        assert_eq!(
            p.request(&mut net, peer(), None, vec![PEER_IP], ms(5), true, t0),
            None
        );
        let a = run_until(&mut p, &mut net, true, t0 + ms(20));
        assert_eq!(a.len(), 1);
        assert!(a[0].alive);
        assert!(a[0].after < ms(2));
    }

    /// A numbered request is answered with its number; a second request for the same peer
    /// replaces the first, whose answer never comes (the controller takes only the answer
    /// to its latest request, so an "alive" gathered before a crash cannot answer a request
    /// asked after it).
    #[test]
    fn an_answer_carries_its_requests_number_and_a_new_request_replaces_the_old() {
        let t0 = Instant::now();
        let mut net = Net::new(t0);
        net.alive.insert(PEER_IP);
        net.delay = ms(3);
        let mut p = Probes::default();
        assert_eq!(
            p.request(&mut net, peer(), Some(7), vec![PEER_IP], ms(5), false, t0),
            None
        );
        run_until(&mut p, &mut net, false, t0 + ms(1));
        let now = net.now;
        assert_eq!(
            p.request(&mut net, peer(), Some(8), vec![PEER_IP], ms(5), false, now),
            None
        );
        let a = run_until(&mut p, &mut net, false, t0 + ms(20));
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0].request, Some(8));
        assert!(a[0].alive);
        // The watch's immediate answer carries the number too.
        let mut p = Probes::default();
        let a = p.request(&mut net, peer(), Some(9), Vec::new(), ms(5), true, now);
        assert_eq!(a.map(|a| (a.alive, a.request)), Some((false, Some(9))));
    }

    #[test]
    fn a_dead_peer_without_a_watch_is_answered_after_the_probe_time() {
        let t0 = Instant::now();
        let mut net = Net::new(t0);
        let mut p = Probes::default();
        assert_eq!(
            p.request(&mut net, peer(), None, vec![PEER_IP], ms(5), true, t0),
            None
        );
        // Not on standby: no watch runs, the probe alone concludes.
        let a = run_until(&mut p, &mut net, false, t0 + ms(20));
        assert_eq!(a.len(), 1);
        assert!(!a[0].alive);
        assert!(!a[0].watched);
        assert!(a[0].after >= ms(5), "{:?}", a[0].after);
    }

    /// The point of the watch: the peer died while the standby kept asking, so when the
    /// controller's request comes the answer is already known.
    #[test]
    fn a_watched_peer_that_died_is_answered_at_once() {
        let t0 = Instant::now();
        let mut net = Net::new(t0);
        net.alive.insert(PEER_IP);
        let mut p = Probes::default();
        // The first request (alive) starts the watch.
        p.request(&mut net, peer(), None, vec![PEER_IP], ms(5), true, t0);
        let a = run_until(&mut p, &mut net, true, t0 + ms(50));
        assert!(a.iter().all(|a| a.alive));
        let sent_alive = net.count;
        assert!(sent_alive > 20, "the watch keeps asking: {sent_alive}");
        // The peer dies at 50 ms; the controller suspects it 7 ms later.
        net.alive.clear();
        let died = net.now;
        run_until(&mut p, &mut net, true, died + ms(7));
        let now = net.now;
        let a = p.request(&mut net, peer(), None, vec![PEER_IP], ms(5), true, now);
        assert_eq!(
            a,
            Some(Answer {
                peer: peer(),
                alive: false,
                after: Duration::ZERO,
                watched: true,
                request: None,
            })
        );
    }

    /// The evidence is as strong as a probe's: asked 2 ms after the death, the standby has
    /// not seen a whole probe time of silence yet; it answers when it has, not at once and
    /// not a full probe time after the request.
    #[test]
    fn a_watch_answers_when_its_evidence_is_complete() {
        let t0 = Instant::now();
        let mut net = Net::new(t0);
        net.alive.insert(PEER_IP);
        let mut p = Probes::default();
        p.request(&mut net, peer(), None, vec![PEER_IP], ms(6), true, t0);
        run_until(&mut p, &mut net, true, t0 + ms(30));
        net.alive.clear();
        let died = net.now;
        run_until(&mut p, &mut net, true, died + ms(2));
        let asked = net.now;
        assert_eq!(
            p.request(&mut net, peer(), None, vec![PEER_IP], ms(6), true, asked),
            None
        );
        let a = run_until(&mut p, &mut net, true, asked + ms(20));
        assert_eq!(a.len(), 1);
        assert!(!a[0].alive);
        assert!(a[0].watched);
        assert!(a[0].after < ms(6), "sooner than a probe: {:?}", a[0].after);
        // Never sooner than a whole probe time of silence after the last answered request.
        assert!(
            asked + a[0].after >= died + ms(6) - ms(2),
            "{:?}",
            a[0].after
        );
    }

    /// A reply that is late (the peer's kernel slow) but within the probe time keeps the
    /// peer alive; a watch is never more eager than a probe.
    #[test]
    fn a_slow_but_live_peer_is_never_answered_dead() {
        let t0 = Instant::now();
        let mut net = Net::new(t0);
        net.alive.insert(PEER_IP);
        net.delay = ms(4);
        let mut p = Probes::default();
        p.request(&mut net, peer(), None, vec![PEER_IP], ms(5), true, t0);
        for round in 0..20 {
            let until = net.now + ms(3);
            let a = run_until(&mut p, &mut net, true, until);
            assert!(a.iter().all(|a| a.alive), "round {round}: {a:?}");
            let now = net.now;
            if let Some(a) = p.request(&mut net, peer(), None, vec![PEER_IP], ms(5), true, now) {
                assert!(a.alive, "round {round}: {a:?}");
            }
        }
    }

    /// A peer with two member addresses is "not alive" only when both are silent.
    #[test]
    fn one_silent_address_of_two_is_not_a_dead_peer() {
        let t0 = Instant::now();
        let other = Ipv4Addr::new(10, 2, 0, 12);
        let mut net = Net::new(t0);
        net.alive.insert(other);
        let mut p = Probes::default();
        p.request(
            &mut net,
            peer(),
            None,
            vec![PEER_IP, other],
            ms(5),
            true,
            t0,
        );
        let a = run_until(&mut p, &mut net, true, t0 + ms(40));
        assert!(a.iter().all(|a| a.alive));
        let now = net.now;
        assert_eq!(
            p.request(
                &mut net,
                peer(),
                None,
                vec![PEER_IP, other],
                ms(5),
                true,
                now
            ),
            None
        );
        let a = run_until(&mut p, &mut net, true, now + ms(10));
        assert_eq!(a.len(), 1);
        assert!(a[0].alive);
    }

    /// Replies to older requests that came with a newer one are taken too, so none is left
    /// behind in the plane's set of replies.
    #[test]
    fn replies_left_behind_are_taken() {
        let t0 = Instant::now();
        let mut net = Net::new(t0);
        net.alive.insert(PEER_IP);
        // Replies slower than the watch's interval (2 ms): two are due at some looks.
        net.delay = ms(3);
        let mut p = Probes::default();
        p.request(&mut net, peer(), None, vec![PEER_IP], ms(6), true, t0);
        for _ in 0..20 {
            net.now += ms(2);
            let now = net.now;
            p.run(&mut net, true, now);
        }
        net.now += ms(10);
        let now = net.now;
        p.run(&mut net, true, now);
        let waiting = net
            .sent
            .iter()
            .filter(|(_, at)| **at + net.delay <= net.now)
            .count();
        // At most the reply to the probe's second round, in flight when the first round's
        // reply ended it (a probe cannot take a reply that has not come).
        assert!(waiting <= 1, "replies left behind: {waiting}");
    }

    /// The active member does not watch (it has nothing to take over): its watches stop
    /// and no more requests go out.
    #[test]
    fn the_active_member_stops_watching() {
        let t0 = Instant::now();
        let mut net = Net::new(t0);
        let mut p = Probes::default();
        p.request(&mut net, peer(), None, vec![PEER_IP], ms(5), true, t0);
        run_until(&mut p, &mut net, true, t0 + ms(20));
        let before = net.count;
        run_until(&mut p, &mut net, false, t0 + ms(100));
        assert_eq!(net.count, before, "no request while active");
        assert_eq!(p.next_at(false), None);
    }
}
