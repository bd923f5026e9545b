//! Sync throughput: connection entries created in the active member's kernel (batched
//! ctnetlink requests from a process inside its namespace), timed until the standby holds them
//! all; then removed again, so that a run of several rounds is churn, not a growing table
//! (a namespace's table stops at the kernel's `nf_conntrack_max`, 262,144 here, which a
//! namespace cannot raise).

use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ha_kernel::conntrack::socket::Ctnetlink;
use ha_kernel::conntrack::{CtEntry, CtTuple, TcpInfo, IPS_ASSURED, IPS_SEEN_REPLY};

use crate::util::Result;

/// Entries per round: below the table limit with the load's entries beside them.
pub(super) const ROUND: u32 = 100_000;

/// An established TCP entry numbered `i`: a client address of its own (10.60.0.0/12, not
/// the load's), one server.
fn entry(i: u32) -> CtEntry {
    let orig = CtTuple {
        src: IpAddr::V4(Ipv4Addr::new(
            10,
            60 + (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        )),
        dst: IpAddr::V4(Ipv4Addr::new(10, 2, 0, 20)),
        proto: 6,
        src_port: 40_000 + (i % 20_000) as u16,
        dst_port: 80,
    };
    CtEntry {
        orig,
        reply: orig.inverse(),
        status: IPS_SEEN_REPLY | IPS_ASSURED,
        timeout_s: 3600,
        mark: 0,
        zone: 0,
        tcp: Some(TcpInfo {
            state: 3,
            wscale_orig: 7,
            wscale_reply: 7,
            flags_orig: 0x23,
            flags_reply: 0x23,
        }),
        helper: None,
        seq_adj: None,
    }
}

/// True for an entry of the churn ([`entry`]'s client addresses, 10.60.0.0/14).
fn is_churn(e: &CtEntry) -> bool {
    matches!(e.orig.src, IpAddr::V4(a) if a.octets()[0] == 10 && (60..64).contains(&a.octets()[1]))
}

/// The churn's worker, `xtask bench kernel-ha --churn-worker create|remove|count`, run by
/// [`run`] inside a member's namespace from the release build of xtask (a debug build of
/// the ctnetlink codec creates entries about 3.5 times slower than the kernel takes them):
/// creates or removes (both batched) the round's entries and prints
/// `elapsed_ms=<ms>`; or counts the churn's entries in the table (a dump) and prints
/// `count=<n>`.
pub(super) fn worker(what: &str) -> Result {
    let mut ct = Ctnetlink::open().map_err(|e| format!("ctnetlink: {e}"))?;
    let t = Instant::now();
    match what {
        "create" => {
            let all: Vec<CtEntry> = (0..ROUND).map(entry).collect();
            let refused = ct
                .install_batch(&all)
                .map_err(|e| format!("install_batch: {e}"))?;
            if let Some(first) = refused.first() {
                return Err(format!(
                    "the active's kernel refused {} of {ROUND} entries (first: {first:?})",
                    refused.len()
                ));
            }
        }
        "remove" => {
            let all: Vec<(CtTuple, u16)> = (0..ROUND).map(|i| (entry(i).orig, 0)).collect();
            let refused = ct
                .remove_batch(&all)
                .map_err(|e| format!("remove_batch: {e}"))?;
            if let Some(first) = refused.first() {
                return Err(format!(
                    "the active's kernel refused to remove {} of {ROUND} entries (first: {first:?})",
                    refused.len()
                ));
            }
        }
        "count" => {
            let (all, _) = ct.dump().map_err(|e| format!("dump: {e}"))?;
            println!("count={}", all.iter().filter(|e| is_churn(e)).count());
            return Ok(());
        }
        other => return Err(format!("--churn-worker {other}: create, remove or count")),
    }
    println!("elapsed_ms={}", t.elapsed().as_millis());
    Ok(())
}

/// Starts the worker (`what`) in namespace `ns`.
fn start_worker(xtask: &Path, ns: &str, what: &str) -> Result<Child> {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(xtask)
        .args(["bench", "kernel-ha", "--churn-worker", what])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("churn worker: {e}"))
}

/// A burst of [`ROUND`] creations on the active, started just before the crash
/// (`--crash-in-burst MS`): the crash then meets a standby in the middle of a sync stream.
/// Its worker ends by itself; dropped before that, it is killed by its pid.
pub(super) struct Burst(Option<Child>);

impl Burst {
    /// Starts the creations in namespace `ns`.
    pub(super) fn start(xtask: &Path, ns: &str) -> Result<Self> {
        start_worker(xtask, ns, "create").map(|c| Burst(Some(c)))
    }

    /// Waits for the worker (it goes on in the dead member's namespace): its own time.
    pub(super) fn finish(mut self) -> Result<Duration> {
        match self.0.take() {
            Some(c) => finish_worker(c),
            None => Err("churn worker: already ended".into()),
        }
    }
}

impl Drop for Burst {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// With `in_burst` (ms), starts a [`Burst`] on the active and waits that long before the
/// crash; none: nothing.
pub(super) fn burst_before_crash(
    xtask: &Path,
    tag: &str,
    active_ns: &str,
    in_burst: Option<u64>,
) -> Result<Option<Burst>> {
    let Some(ms) = in_burst else {
        return Ok(None);
    };
    let b = Burst::start(xtask, active_ns)?;
    std::thread::sleep(Duration::from_millis(ms));
    println!("kernel-ha[{tag}]: the crash comes {ms} ms into a burst of {ROUND} creations");
    Ok(Some(b))
}

/// After the crash: waits for the burst's worker and says how long its creations took.
pub(super) fn burst_after_crash(b: Option<Burst>, tag: &str) {
    if let Some(b) = b {
        match b.finish() {
            Ok(d) => println!(
                "kernel-ha[{tag}]: the burst's {ROUND} creations took {} ms on the dead member",
                d.as_millis()
            ),
            Err(e) => println!("kernel-ha[{tag}]: the burst's worker: {e}"),
        }
    }
}

/// Waits for the worker; its own time.
fn finish_worker(c: Child) -> Result<Duration> {
    let out = c
        .wait_with_output()
        .map_err(|e| format!("churn worker: {e}"))?;
    worker_value(&out, "elapsed_ms", "churn worker").map(Duration::from_millis)
}

/// The number a worker printed as `<key>=<n>`, or why there is none (`what` names it).
fn worker_value(out: &std::process::Output, key: &str, what: &str) -> Result<u64> {
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim()
        .strip_prefix(key)
        .and_then(|v| v.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .filter(|_| out.status.success())
        .ok_or_else(|| {
            format!(
                "{what} failed ({}): {text}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )
        })
}

/// The number of the churn's entries in namespace `ns`'s table (a dump by the worker):
/// exact, where `nf_conntrack_count` also counts the load's and the probes' entries.
pub(super) fn exact_count(xtask: &Path, ns: &str) -> Result<u64> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(xtask)
        .args(["bench", "kernel-ha", "--churn-worker", "count"])
        .output()
        .map_err(|e| format!("churn count: {e}"))?;
    worker_value(&out, "count", &format!("churn count in {ns}"))
}

/// Entries other than the churn's that may come and go in a table meanwhile (the load's
/// connections closing, the liveness probes' ICMP entries): a count that reached its goal,
/// or that stopped moving this close to it, is checked with the exact count (a dump, so
/// not at every poll).
const NOISE: u64 = 500;

/// Whether the standby holds a whole round: its cheap count `last` (`before` at the poll
/// before) reached `goal`, confirmed by `exact` where given, which is asked only once the
/// count reached the goal or stopped moving within [`NOISE`] of it (a dump is not cheap).
fn whole_round(
    last: u64,
    before: Option<u64>,
    goal: u64,
    exact: Option<&dyn Fn() -> Result<u64>>,
) -> Result<bool> {
    let settled = last >= goal || (last + NOISE >= goal && before == Some(last));
    Ok(match exact {
        Some(count) if settled => count()? >= u64::from(ROUND),
        Some(_) => false,
        None => last >= goal,
    })
}

/// One more round of [`ROUND`] entries created in `active_ns` and left in the tables, so
/// that the crash meets a loaded firewall's table (a standby that defers its kernel work to
/// the takeover pays for it then); waits (at most `bound`) until the standby holds them,
/// counted as in [`run`]. Prints how long that took.
pub(super) fn keep_for_crash(
    xtask: &Path,
    tag: &str,
    active_ns: &str,
    standby_count: &dyn Fn() -> Result<u64>,
    exact: Option<&dyn Fn() -> Result<u64>>,
    bound: Duration,
) -> Result {
    let base = standby_count()?;
    let t0 = Instant::now();
    let creator = start_worker(xtask, active_ns, "create")?;
    finish_worker(creator)?;
    let mut before = None;
    loop {
        let last = standby_count()?;
        if whole_round(last, before, base + u64::from(ROUND), exact)? {
            break;
        }
        before = Some(last);
        if t0.elapsed() > bound {
            return Err(format!(
                "{tag}: the standby holds {} of the {ROUND} entries kept for the crash after {bound:?}",
                last.saturating_sub(base)
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    println!(
        "kernel-ha[{tag}]: {ROUND} more entries kept in the tables for the crash (on the standby \
         after {} ms)",
        t0.elapsed().as_millis()
    );
    Ok(())
}

/// What the churn measured. A round that did not arrive whole within the bound ends the
/// churn: it counts with what the standby held by then (a lower bound of the system's rate,
/// not no figure), and [`Churn::stopped`] says why.
pub(super) struct Churn {
    /// Entries created on the active, per round.
    pub per_round: u32,
    /// Per round: creation start → the standby holds them all (or the bound).
    pub synced: Vec<Duration>,
    /// Per round: how many of the round's entries the standby held at [`Churn::synced`].
    pub held: Vec<u64>,
    /// Per round: how long the creation itself took on the active.
    pub injected: Vec<Duration>,
    /// Per round: removal start → back at the baseline, or the bound (when fewer than the
    /// round's entries are [`Churn::gone`]).
    pub removal_wait: Vec<Duration>,
    /// Per round: how many of the round's entries the standby had dropped by
    /// [`Churn::removal_wait`].
    pub gone: Vec<u64>,
    /// Per round, when a second count of the standby was given (ours: its daemon's synced
    /// table, the like-for-like of conntrackd's external cache): creation start → that
    /// count grew by the round (none: not within the bound, or no second count).
    pub also_synced: Vec<Option<Duration>>,
    /// Why the churn ended before the rounds asked, if it did.
    pub stopped: Option<String>,
}

/// `n` per second over `t` seconds (0 for no time).
fn rate(n: f64, t: f64) -> u64 {
    if t > 0.0 {
        (n / t) as u64
    } else {
        0
    }
}

impl Churn {
    /// Creations per second over every round (entries the standby came to hold / time from
    /// the creation's start until it held them).
    pub fn per_s(&self) -> u64 {
        let t: f64 = self.synced.iter().map(Duration::as_secs_f64).sum();
        rate(self.held.iter().sum::<u64>() as f64, t)
    }

    /// The first round's creation rate (100k churn).
    pub fn first_per_s(&self) -> u64 {
        match (self.synced.first(), self.held.first()) {
            (Some(d), Some(&n)) => rate(n as f64, d.as_secs_f64()),
            _ => 0,
        }
    }

    /// Removals per second over every round (entries the standby dropped / time from the
    /// removal's start until it was back at its baseline, or the bound).
    pub fn removed_per_s(&self) -> u64 {
        let t: f64 = self.removal_wait.iter().map(Duration::as_secs_f64).sum();
        rate(self.gone.iter().sum::<u64>() as f64, t)
    }

    /// The whole churn's rate: kernel events on the active (a new one per entry created, a
    /// destroy per entry removed) that the standby's table reflected, per second of the
    /// rounds (creation start → all held, plus removal start → all gone). A connection
    /// opens and closes: a sync that takes new entries fast and their ends slowly keeps
    /// the standby's table wrong for as long.
    pub fn churn_per_s(&self) -> u64 {
        let n = self.held.iter().chain(&self.gone).sum::<u64>() as f64;
        let t: f64 = self
            .synced
            .iter()
            .chain(&self.removal_wait)
            .map(Duration::as_secs_f64)
            .sum();
        rate(n, t)
    }

    /// The first round's whole-churn rate (100k churn; see [`Churn::churn_per_s`]).
    pub fn first_churn_per_s(&self) -> u64 {
        let (Some(s), Some(h)) = (self.synced.first(), self.held.first()) else {
            return 0;
        };
        let (w, g) = (
            self.removal_wait.first().copied().unwrap_or_default(),
            self.gone.first().copied().unwrap_or(0),
        );
        rate((h + g) as f64, s.as_secs_f64() + w.as_secs_f64())
    }

    /// Entries per second by the second count ([`Churn::also_synced`]), over the rounds it
    /// completed; none when it completed none.
    pub fn also_per_s(&self) -> Option<u64> {
        let done: Vec<f64> = self
            .also_synced
            .iter()
            .flatten()
            .map(Duration::as_secs_f64)
            .collect();
        let t: f64 = done.iter().sum();
        (t > 0.0).then(|| (f64::from(self.per_round) * done.len() as f64 / t) as u64)
    }

    /// Entries per second the active's kernel took them at (the creation alone).
    pub fn injected_per_s(&self) -> u64 {
        let t: f64 = self.injected.iter().map(Duration::as_secs_f64).sum();
        rate(f64::from(self.per_round) * self.injected.len() as f64, t)
    }
}

/// How long [`settled`] waits at most for a count to stop moving.
const SETTLE_BOUND: Duration = Duration::from_secs(10);

/// `count` once two readings 250 ms apart agree (the daemon refreshes it every 100 ms), or
/// its last reading after [`SETTLE_BOUND`].
fn settled(count: &dyn Fn() -> Result<u64>) -> Result<u64> {
    let t0 = Instant::now();
    let mut last = count()?;
    while t0.elapsed() < SETTLE_BOUND {
        std::thread::sleep(Duration::from_millis(250));
        let n = count()?;
        if n == last {
            break;
        }
        last = n;
    }
    Ok(last)
}

/// `rounds` rounds of [`ROUND`] entries created in namespace `active_ns`, each timed until
/// `standby_count()` (the standby's count of what it holds, cheap) has grown by [`ROUND`],
/// then removed and waited for until the count is back. Where the count includes other
/// entries (`exact` given: the churn's own entries, counted by a dump), a count within
/// [`NOISE`] of the goal and no longer moving (or past it) is confirmed by `exact()`, so that entries of the load or of the
/// probes coming and going neither end a round early nor keep it from ending. `also`, when
/// given, is a second count of the standby timed the same way ([`Churn::also_synced`]).
/// `tag` names the system in the lines printed. A round that never arrives whole within
/// `bound` ends the churn with what was measured ([`Churn::stopped`]); fails only when the
/// standby cannot be counted or the worker fails.
#[allow(clippy::too_many_arguments)]
pub(super) fn run(
    xtask: &Path,
    tag: &str,
    active_ns: &str,
    rounds: u32,
    standby_count: &dyn Fn() -> Result<u64>,
    exact: Option<&dyn Fn() -> Result<u64>>,
    also: Option<&dyn Fn() -> Result<u64>>,
    bound: Duration,
) -> Result<Churn> {
    let mut c = Churn {
        per_round: ROUND,
        synced: Vec::new(),
        held: Vec::new(),
        injected: Vec::new(),
        removal_wait: Vec::new(),
        gone: Vec::new(),
        also_synced: Vec::new(),
        stopped: None,
    };
    for round in 0..rounds {
        let base = standby_count()?;
        // The second count's base once it has settled: when the kernel table is back after
        // a removal, the synced table may still be taking the previous round's destroys
        // (session 20: the goal was 4-9k too high in 4 of 10 rounds, so the count looked
        // stuck at the load's entries plus the round).
        let also_goal = match also {
            Some(count) => Some(settled(count)? + u64::from(ROUND)),
            None => None,
        };
        let mut also_at = None;
        let also_last = std::cell::Cell::new(0u64);
        let also_done = |at: &mut Option<Duration>, t0: Instant| -> Result {
            if let (Some(count), Some(goal), None) = (also, also_goal, *at) {
                let n = count()?;
                also_last.set(n);
                if n >= goal {
                    *at = Some(t0.elapsed());
                }
            }
            Ok(())
        };
        let t0 = Instant::now();
        let creator = start_worker(xtask, active_ns, "create")?;
        let goal = base + u64::from(ROUND);
        let mut before = None;
        let synced = loop {
            also_done(&mut also_at, t0)?;
            let last = standby_count()?;
            if whole_round(last, before, goal, exact)? {
                break t0.elapsed();
            }
            before = Some(last);
            if t0.elapsed() > bound {
                // The round's entries leave the active again, so that the crash that
                // follows meets the tables of a run without churn.
                let injected = finish_worker(creator);
                if let Ok(remover) = start_worker(xtask, active_ns, "remove") {
                    let _ = finish_worker(remover);
                }
                let why = format!(
                    "round {}: the standby held {} of {ROUND} new entries after {bound:?}",
                    round + 1,
                    last.saturating_sub(base)
                );
                println!("kernel-ha[{tag}]: churn stopped: {why}");
                c.synced.push(t0.elapsed());
                c.held.push(last.saturating_sub(base).min(u64::from(ROUND)));
                c.injected.push(injected.unwrap_or(t0.elapsed()));
                c.also_synced.push(None);
                c.stopped = Some(why);
                return Ok(c);
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        // The second count may still be behind (it is refreshed every 100 ms): a few
        // seconds more at most.
        let also_bound = (synced + Duration::from_secs(5)).min(bound);
        while also_goal.is_some() && also_at.is_none() && t0.elapsed() < also_bound {
            also_done(&mut also_at, t0)?;
            std::thread::sleep(Duration::from_millis(10));
        }
        if let (Some(goal), None) = (also_goal, also_at) {
            println!(
                "kernel-ha[{tag}]: churn round {}/{rounds}: the second count holds {} of {goal} \
                 {} s after the first count was complete",
                round + 1,
                also_last.get(),
                also_bound.saturating_sub(synced).as_secs()
            );
        }
        let injected = finish_worker(creator)?;
        // Removal: batched like the creation; timed until the standby is back where it
        // started.
        let t1 = Instant::now();
        let remover = start_worker(xtask, active_ns, "remove")?;
        let mut last;
        let mut before = None;
        let removed = loop {
            last = standby_count()?;
            let settled = last <= base || (last <= base + NOISE && before == Some(last));
            before = Some(last);
            let gone = match exact {
                Some(count) if settled => count()? == 0,
                Some(_) => false,
                None => last <= base,
            };
            if gone {
                break Some(t1.elapsed());
            }
            if t1.elapsed() > bound {
                break None;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        finish_worker(remover)?;
        let removal_wait = removed.unwrap_or_else(|| t1.elapsed());
        let gone = if removed.is_some() {
            u64::from(ROUND)
        } else {
            (base + u64::from(ROUND))
                .saturating_sub(last)
                .min(u64::from(ROUND))
        };
        println!(
            "kernel-ha[{tag}]: churn round {}/{rounds}: {ROUND} entries created on the active in \
             {} ms, all on the standby after {} ms; removed, standby back at its count after {}",
            round + 1,
            injected.as_millis(),
            synced.as_millis(),
            removed.map_or_else(
                || {
                    let left = exact.map_or_else(String::new, |count| {
                        count()
                            .map_or_else(|e| format!("; {e}"), |n| format!("; {n} of the churn's"))
                    });
                    format!("never within {bound:?} (holds {last}, was {base}{left})")
                },
                |d| format!("{} ms", d.as_millis())
            )
        );
        if let Some(at) = also_at {
            println!(
                "kernel-ha[{tag}]: churn round {}/{rounds}: the second count (see the summary) \
                 holds the round after {} ms",
                round + 1,
                at.as_millis()
            );
        }
        c.synced.push(synced);
        c.held.push(u64::from(ROUND));
        c.also_synced.push(also_at);
        c.injected.push(injected);
        c.removal_wait.push(removal_wait);
        c.gone.push(gone);
        if removed.is_none() {
            // The next round's baseline would be wrong: stop here with what was measured.
            println!("kernel-ha[{tag}]: churn stopped after round {}", round + 1);
            c.stopped = Some(format!(
                "round {}: the standby still held {} of the round's entries {bound:?} after their removal",
                round + 1,
                u64::from(ROUND) - gone
            ));
            break;
        }
    }
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    /// A churn of one whole round (created in 1 s on the standby, gone 1 s after the
    /// removal) and one that stopped at the bound with part of the round: the rates count
    /// what the standby reflected over the time it took, the bound included.
    #[test]
    fn rates_count_what_the_standby_reflected_including_a_round_cut_at_the_bound() {
        let whole = Churn {
            per_round: 100,
            synced: vec![ms(1_000)],
            held: vec![100],
            injected: vec![ms(500)],
            removal_wait: vec![ms(1_000)],
            gone: vec![100],
            also_synced: vec![None],
            stopped: None,
        };
        assert_eq!(whole.per_s(), 100);
        assert_eq!(whole.removed_per_s(), 100);
        assert_eq!(whole.churn_per_s(), 100);
        assert_eq!(whole.first_churn_per_s(), 100);
        assert_eq!(whole.injected_per_s(), 200);
        let mut cut = whole;
        cut.synced.push(ms(3_000));
        cut.held.push(50);
        cut.injected.push(ms(500));
        cut.stopped = Some("round 2".into());
        // 150 created over 4 s; 100 removed over 1 s; 250 events over 5 s.
        assert_eq!(cut.per_s(), 37);
        assert_eq!(cut.removed_per_s(), 100);
        assert_eq!(cut.churn_per_s(), 50);
        assert_eq!(cut.first_per_s(), 100);
    }

    /// A removal that did not come back within the bound counts the bound's time and only
    /// the entries the standby dropped.
    #[test]
    fn a_removal_cut_at_the_bound_counts_its_whole_wait() {
        let c = Churn {
            per_round: 100,
            synced: vec![ms(1_000)],
            held: vec![100],
            injected: vec![ms(1_000)],
            removal_wait: vec![ms(4_000)],
            gone: vec![40],
            also_synced: vec![None],
            stopped: Some("round 1".into()),
        };
        assert_eq!(c.removed_per_s(), 10);
        assert_eq!(c.churn_per_s(), 28);
    }
}
