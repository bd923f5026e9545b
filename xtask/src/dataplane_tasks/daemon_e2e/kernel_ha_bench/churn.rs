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
/// creates (batched) or removes (one request each) the round's entries and prints
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
            for i in 0..ROUND {
                ct.remove(&entry(i).orig, 0)
                    .map_err(|e| format!("remove: {e}"))?;
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

/// What the churn measured.
pub(super) struct Churn {
    /// Entries created on the active, per round.
    pub per_round: u32,
    /// Per round: creation start → the standby holds them all.
    pub synced: Vec<Duration>,
    /// Per round: how long the creation itself took on the active.
    pub injected: Vec<Duration>,
    /// Per round: removal start → the standby's count back at its baseline (none: it did not
    /// come back within the bound).
    pub removed: Vec<Option<Duration>>,
    /// Per round, when a second count of the standby was given (ours: its daemon's synced
    /// table, the like-for-like of conntrackd's external cache): creation start → that
    /// count grew by the round (none: not within the bound, or no second count).
    pub also_synced: Vec<Option<Duration>>,
}

impl Churn {
    /// Entries per second over every round (created / time until present on the standby).
    pub fn per_s(&self) -> u64 {
        let t: f64 = self.synced.iter().map(Duration::as_secs_f64).sum();
        if t == 0.0 {
            return 0;
        }
        (f64::from(self.per_round) * self.synced.len() as f64 / t) as u64
    }

    /// The first round's rate (100k churn).
    pub fn first_per_s(&self) -> u64 {
        self.synced
            .first()
            .map_or(0, |d| (f64::from(self.per_round) / d.as_secs_f64()) as u64)
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
        if t == 0.0 {
            return 0;
        }
        (f64::from(self.per_round) * self.injected.len() as f64 / t) as u64
    }
}

/// `rounds` rounds of [`ROUND`] entries created in namespace `active_ns`, each timed until
/// `standby_count()` (the standby's count of what it holds, cheap) has grown by [`ROUND`],
/// then removed and waited for until the count is back. Where the count includes other
/// entries (`exact` given: the churn's own entries, counted by a dump), a count within
/// [`NOISE`] of the goal and no longer moving (or past it) is confirmed by `exact()`, so that entries of the load or of the
/// probes coming and going neither end a round early nor keep it from ending. `also`, when
/// given, is a second count of the standby timed the same way ([`Churn::also_synced`]).
/// `tag` names the system in the lines printed. Fails when a round never arrives whole
/// within `bound`.
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
        injected: Vec::new(),
        removed: Vec::new(),
        also_synced: Vec::new(),
    };
    for round in 0..rounds {
        let base = standby_count()?;
        let also_goal = match also {
            Some(count) => Some(count()? + u64::from(ROUND)),
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
                let _ = finish_worker(creator);
                if let Ok(remover) = start_worker(xtask, active_ns, "remove") {
                    let _ = finish_worker(remover);
                }
                return Err(format!(
                    "{tag}: round {}: the standby holds {} of {ROUND} new entries after {bound:?}",
                    round + 1,
                    last.saturating_sub(base)
                ));
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
        // Removal: one request per entry (no batched removal in the library); timed until the
        // standby is back where it started.
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
        c.also_synced.push(also_at);
        c.injected.push(injected);
        c.removed.push(removed);
        if removed.is_none() {
            // The next round's baseline would be wrong: stop here with what was measured.
            println!("kernel-ha[{tag}]: churn stopped after round {}", round + 1);
            break;
        }
    }
    Ok(c)
}
