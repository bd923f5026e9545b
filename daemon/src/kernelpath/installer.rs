//! The standby's installer thread: the peer's entries and expectations into this member's
//! kernel, in order; with the write-behind (`[sync] standby_install`, the default) held while
//! the sync stream is busy and written when it goes quiet or at a takeover
//! (`ha_kernel::write_behind` decides when); and, after this member stopped forwarding, the
//! re-creation of its TCP entries.

use std::sync::atomic::Ordering;
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{ms_since, KStats};
use crate::config::StandbyInstall;
use ha_kernel::conntrack::socket::Ctnetlink;
use ha_kernel::conntrack::{CtEntry, CtExpect, CtTuple};
use ha_kernel::domains::{DomainSet, Domains};
use ha_kernel::path::KernelWork;
use ha_kernel::write_behind::{Policy, WriteBehind};

/// How long after this member stops forwarding (or starts as a standby) the installer
/// re-creates the TCP entries its kernel holds. An entry this kernel tracked while it
/// forwarded keeps the TCP windows it last saw; strict tracking
/// (`nf_conntrack_tcp_be_liberal = 0`) then finds the connection's segments out of window
/// when this member forwards again, and drops them: measured 1.2–3.6 s of stalled
/// connections on a planned swap back (`cargo xtask bench failover --swaps 4`), 17–27 ms
/// with liberal tracking. An entry created over ctnetlink has no window yet and the kernel
/// picks the windows up from the next segments, as it does for every synced entry. Not at
/// once: clients whose ARP caches still name this member go on sending here for a moment.
pub const RECREATE_AFTER: Duration = Duration::from_secs(1);

/// What the installer thread is handed.
pub(super) enum Job {
    /// The peer's changes, for this member's kernel.
    Work(KernelWork),
    /// Re-create this kernel's TCP entries of these domains (the ones this member gave up)
    /// at this time ([`RECREATE_AFTER`]).
    Recreate(Instant, DomainSet),
    /// This member forwards again for these domains: their re-creation, if not yet done, is
    /// dropped.
    Cancel(DomainSet),
    /// A takeover: write every held entry now (counted as a batch, which the takeover
    /// waits for).
    WriteAll,
}

/// How long the installer keeps retrying an expectation whose master is not in the kernel
/// yet (its record came first, or in a later batch than the master's).
pub const EXPECT_RETRY_FOR: Duration = Duration::from_secs(2);
/// How often it retries them.
const EXPECT_RETRY_EVERY: Duration = Duration::from_millis(50);
/// `-ENOENT`: the expectation's master is not in the table.
const ENOENT: i32 = -2;

/// The standby's installer: the peer's entries, then its expectations, into this member's
/// kernel; an expectation that comes before its master waits for it (retried for
/// [`EXPECT_RETRY_FOR`]).
struct Installer {
    ct: Ctnetlink,
    stats: Arc<KStats>,
    /// Expectations refused for a missing master, and since when.
    waiting: Vec<(CtExpect, Instant)>,
    /// The write-behind ([`StandbyInstall::WriteBehind`]); none: entries go in as they come.
    wb: Option<WriteBehind>,
    /// The write-behind's clock starts here.
    t0: Instant,
    /// Which domain an entry belongs to (a re-creation is for the domains given up).
    domains: Domains,
}

impl Installer {
    fn now_ms(&self) -> u64 {
        self.t0.elapsed().as_millis() as u64
    }

    /// Writes held entries: a chunk, or (`all`, a takeover or an expectation's master) all.
    fn write_held(&mut self, all: bool) {
        let Some(wb) = self.wb.as_mut() else {
            return;
        };
        let w = if all { wb.take_all() } else { wb.take_chunk() };
        let held = wb.pending() as u64;
        if !w.is_empty() {
            KStats::add(&self.stats.writes, 1);
            // Removals first: a key ended and started again while held.
            self.entries(&[], &w.remove);
            self.entries(&w.install, &[]);
        }
        self.stats.held.store(held, Ordering::Relaxed);
    }

    /// Writes a chunk of held entries if the write-behind says it is time; true if it did.
    fn write_if_due(&mut self) -> bool {
        let now = self.now_ms();
        match self.wb.as_mut().and_then(|wb| wb.due(now)) {
            Some(_) => {
                self.write_held(false);
                true
            }
            None => false,
        }
    }

    /// How long until the write-behind may be due without a new job.
    fn write_check_in(&self) -> Option<Duration> {
        let now = self.now_ms();
        self.wb
            .as_ref()
            .and_then(|wb| wb.next_check(now))
            .map(Duration::from_millis)
    }

    fn entries(&mut self, install: &[CtEntry], remove: &[(CtTuple, u16)]) {
        match self.ct.install_batch(install) {
            Ok(refused) => {
                KStats::add(
                    &self.stats.installed,
                    (install.len() - refused.len()) as u64,
                );
                if let Some(&(i, errno)) = refused.first() {
                    KStats::add(&self.stats.install_refused, refused.len() as u64);
                    eprintln!(
                        "ha-daemon: kernel refused {} of {} synced entries (first: {:?}, errno {errno})",
                        refused.len(),
                        install.len(),
                        install.get(i).map(|e| e.orig)
                    );
                }
            }
            Err(e) => {
                KStats::add(&self.stats.install_refused, install.len() as u64);
                eprintln!("ha-daemon: installing synced entries: {e}");
            }
        }
        if remove.is_empty() {
            return;
        }
        // Already gone (expired here too) is as good as removed: `remove_batch` does not
        // report those.
        match self.ct.remove_batch(remove) {
            Ok(refused) => {
                KStats::add(&self.stats.removed, (remove.len() - refused.len()) as u64);
                if let Some(&(i, errno)) = refused.first() {
                    eprintln!(
                        "ha-daemon: kernel refused to remove {} of {} entries the peer ended (first: {:?}, errno {errno})",
                        refused.len(),
                        remove.len(),
                        remove.get(i).map(|k| k.0)
                    );
                }
            }
            Err(e) => eprintln!("ha-daemon: removing entries the peer ended: {e}"),
        }
    }

    /// Creates `exps`, each with the time it was first tried; those refused for a missing
    /// master wait for the next try until [`EXPECT_RETRY_FOR`] has passed.
    fn expects(&mut self, exps: Vec<(CtExpect, Instant)>) {
        if exps.is_empty() {
            return;
        }
        let batch: Vec<CtExpect> = exps.iter().map(|(e, _)| *e).collect();
        let refused = match self.ct.install_expects(&batch) {
            Ok(r) => r,
            Err(e) => {
                KStats::add(&self.stats.expects_refused, batch.len() as u64);
                eprintln!("ha-daemon: creating synced expectations: {e}");
                return;
            }
        };
        KStats::add(
            &self.stats.expects_installed,
            (batch.len() - refused.len()) as u64,
        );
        let now = Instant::now();
        for (i, errno) in refused {
            let (e, since) = exps[i];
            if errno == ENOENT && now.duration_since(since) < EXPECT_RETRY_FOR {
                self.waiting.push((e, since));
            } else {
                KStats::add(&self.stats.expects_refused, 1);
                eprintln!(
                    "ha-daemon: kernel refused the synced expectation {:?} (master {:?}): errno {errno}",
                    e.tuple, e.master
                );
            }
        }
    }

    fn work(&mut self, w: KernelWork) {
        let now = self.now_ms();
        match self.wb.as_mut() {
            Some(wb) => {
                let before = wb.coalesced();
                wb.add(&w.install, &w.remove, now);
                KStats::add(&self.stats.coalesced, wb.coalesced() - before);
                self.stats
                    .held
                    .store(wb.pending() as u64, Ordering::Relaxed);
                // An expectation needs its master in the kernel.
                if !w.install_expects.is_empty() {
                    self.write_held(true);
                }
            }
            None => self.entries(&w.install, &w.remove),
        }
        // A removal of an expectation still waiting for its master ends the wait.
        self.waiting
            .retain(|(e, _)| !w.remove_expects.contains(&(e.tuple, e.zone)));
        let now = Instant::now();
        let mut exps = std::mem::take(&mut self.waiting);
        exps.extend(w.install_expects.into_iter().map(|e| (e, now)));
        self.expects(exps);
        for (tuple, zone) in &w.remove_expects {
            if self.ct.remove_expect(tuple, *zone).is_ok() {
                KStats::add(&self.stats.expects_removed, 1);
            }
        }
    }

    fn retry(&mut self) {
        let exps = std::mem::take(&mut self.waiting);
        self.expects(exps);
    }

    /// Re-creates every TCP entry of this kernel as it is now (removed, then installed
    /// again with the same attributes, translations and remaining timeout), and the
    /// expectations, which go with their masters ([`RECREATE_AFTER`] says why).
    fn recreate(&mut self, of: DomainSet) {
        let t0 = Instant::now();
        let d = &self.domains;
        let (tcp, exps, all_keys) = match (self.ct.dump(), self.ct.dump_expects()) {
            (Ok((all, _)), Ok((exps, _))) => (
                all.iter()
                    .filter(|e| e.tcp.is_some() && of.contains(d.of_entry(e)))
                    .copied()
                    .collect::<Vec<_>>(),
                exps.into_iter()
                    .filter(|x| of.contains(d.of_expect(x)))
                    .collect::<Vec<_>>(),
                all.iter().map(|e| (e.orig, e.zone)).collect::<Vec<_>>(),
            ),
            (Err(e), _) | (_, Err(e)) => {
                eprintln!("ha-daemon: re-creating TCP entries: dump: {e}");
                return;
            }
        };
        if let Some(wb) = self.wb.as_mut() {
            wb.seed(all_keys);
        }
        if tcp.is_empty() {
            return;
        }
        let keys: Vec<(CtTuple, u16)> = tcp.iter().map(|e| (e.orig, e.zone)).collect();
        if let Err(e) = self.ct.remove_batch(&keys) {
            eprintln!("ha-daemon: re-creating TCP entries: removal: {e}");
        }
        let refused = match self.ct.install_batch(&tcp) {
            Ok(r) => r.len(),
            Err(e) => {
                eprintln!("ha-daemon: re-creating TCP entries: {e}");
                tcp.len()
            }
        };
        if !exps.is_empty() {
            let now = Instant::now();
            self.expects(exps.into_iter().map(|e| (e, now)).collect());
        }
        KStats::add(&self.stats.recreated, (tcp.len() - refused) as u64);
        eprintln!(
            "<6>ha-daemon: {} TCP entries re-created ({refused} refused) in {} ms: their windows \
             start afresh for the next takeover",
            tcp.len(),
            t0.elapsed().as_millis()
        );
    }
}

/// The installer thread: the peer's entries and expectations into this member's kernel, in
/// order.
pub(super) fn spawn_installer(
    rx: Receiver<Job>,
    stats: Arc<KStats>,
    mode: StandbyInstall,
    domains: Domains,
) -> Result<JoinHandle<std::io::Result<()>>, String> {
    let ct = Ctnetlink::open().map_err(|e| format!("ctnetlink: {e}"))?;
    let mut inst = Installer {
        ct,
        stats,
        waiting: Vec::new(),
        wb: match mode {
            StandbyInstall::AsReceived => None,
            StandbyInstall::WriteBehind => Some(WriteBehind::new(Policy::default())),
        },
        t0: Instant::now(),
        domains,
    };
    Ok(crate::spawn_named("ha-ct-install", move || {
        // When, and for which domains.
        let mut recreate_at: Option<(Instant, DomainSet)> = None;
        // Ends when the core (the sender) is dropped at the daemon's stop.
        loop {
            let retry = (!inst.waiting.is_empty()).then_some(EXPECT_RETRY_EVERY);
            let due = recreate_at.map(|(t, _)| t.saturating_duration_since(Instant::now()));
            let write = inst.write_check_in();
            let job = match retry.into_iter().chain(due).chain(write).min() {
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(wait) => rx.recv_timeout(wait),
            };
            match job {
                Ok(Job::Work(w)) => {
                    inst.work(w);
                    KStats::add(&inst.stats.batches_done, 1);
                }
                Ok(Job::Recreate(at, of)) => {
                    // This member forwarded: its kernel holds entries the installer did
                    // not write (the re-creation's dump tells which).
                    if let Some(wb) = inst.wb.as_mut() {
                        wb.forget_kernel();
                    }
                    let before = recreate_at.map_or(DomainSet::EMPTY, |(_, d)| d);
                    recreate_at = Some((at, before | of));
                }
                Ok(Job::Cancel(of)) => {
                    recreate_at = recreate_at
                        .map(|(t, d)| (t, d.minus(of)))
                        .filter(|(_, d)| !d.is_empty());
                }
                Ok(Job::WriteAll) => {
                    let (t, held) = (Instant::now(), inst.stats.held.load(Ordering::Relaxed));
                    inst.write_held(true);
                    if held > 0 {
                        eprintln!(
                            "<6>ha-daemon: takeover: {held} held entries written in {}",
                            ms_since(t)
                        );
                    }
                    KStats::add(&inst.stats.batches_done, 1);
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if !inst.waiting.is_empty() {
                        inst.retry();
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return Ok(()),
            }
            inst.write_if_due();
            if let Some((_, of)) = recreate_at.filter(|(t, _)| Instant::now() >= *t) {
                recreate_at = None;
                // Counted as a batch, so that a takeover meanwhile waits for it (at most
                // INSTALL_DRAIN) rather than find entries removed and not yet back.
                KStats::add(&inst.stats.batches_queued, 1);
                inst.recreate(of);
                KStats::add(&inst.stats.batches_done, 1);
            }
        }
    }))
}
