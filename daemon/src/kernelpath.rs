//! The kernel data path in the daemon (`datapath = "kernel"`): the Linux kernel forwards and
//! tracks the connections (the site's nftables ruleset decides what passes); the daemon keeps
//! the kernel's conntrack table in the state sync, installs the peer's entries into its own
//! kernel while standby, and moves the cluster addresses on a role change.
//!
//! The decisions are `ha_kernel::path::KernelPath`'s (sans-IO); this module is their shell:
//! - [`KCore`], behind the packet path's lock: the dataplane's tables and outbox
//!   ([`DpPath`]) and the [`KernelPath`]. The sync thread drives it like the fast path's
//!   filter ([`DpHolder`]); after each datagram of records it hands the standby's kernel work
//!   to the installer thread.
//! - the active's event thread ([`events`]): on each takeover it seeds the kernel path with
//!   the synced table, subscribes to the kernel's conntrack events, dumps the table once and
//!   sends the difference; then every event becomes a record for the peer; an overrun (lost
//!   events) is followed by a dump and a reconcile. It stops when the member gives up the role.
//! - the standby's installer thread: the peer's entries go into this member's kernel as they
//!   arrive, in batches of many requests per `sendmsg`, so a takeover has nothing left to
//!   install (SPEC C2's "larval" entries, here live entries the guard keeps unused).
//! - [`KernelPlane`], the host loop's [`Plane`]: a role change runs the kernel path's steps
//!   (the nftables guard, the addresses over rtnetlink, gratuitous ARP / unsolicited NA); the
//!   peer's liveness probes are ICMP echo on a raw socket ([`probe`]); while the controller is
//!   silent the guard drops echo requests to this member.

pub mod events;
pub mod probe;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{ForwardConfig, StandbyInstall};
use crate::dp::{DpHolder, DpPath};
use crate::fastpath::Stats;
use crate::runtime::{Activate, Plane};
use crate::syncplane::HoldsPath;
use ha_kernel::address::{announce, Addresses};
use ha_kernel::conntrack::socket::Ctnetlink;
use ha_kernel::conntrack::{CtEntry, CtExpect, CtTuple, Events};
use ha_kernel::guard::{self, Guard};
use ha_kernel::path::{ClusterAddr, KernelPath, KernelWork, Step};
use ha_kernel::select::Selection;
use ha_kernel::write_behind::{Policy, WriteBehind};

/// How long a takeover waits at most for the installer to put the entries already received
/// into the kernel before the guard opens: the batches queued, and what the write-behind
/// holds (at most its `max_pending`, 65,536 entries: about half a second of installs on an
/// idle kernel). Past it the takeover goes on (a kernel that takes no entries must not keep
/// the cluster without an active member).
pub const INSTALL_DRAIN: Duration = Duration::from_secs(2);

/// Counters of the kernel path, shared by its threads (`info --verbose`, prefixed `kernel_`).
#[derive(Debug, Default)]
pub struct KStats {
    /// Conntrack events read on the active.
    pub events: AtomicU64,
    /// Event messages read by the allocation-free reader (the common entry event); the
    /// rest went through `netlink-packet-netfilter` (helpers, expectations).
    pub events_fast: AtomicU64,
    /// Event messages that could not be read.
    pub unreadable: AtomicU64,
    /// Overruns (events lost, a dump followed).
    pub overruns: AtomicU64,
    /// Dumps of the table (one per takeover, one per overrun, one per refresh).
    pub dumps: AtomicU64,
    /// Entries the periodic refresh sent again (their timeout grew without an event).
    pub refreshed: AtomicU64,
    /// Entries installed or refreshed into this member's kernel for the peer.
    pub installed: AtomicU64,
    /// Entries the kernel refused to install.
    pub install_refused: AtomicU64,
    /// Entries removed from this member's kernel for the peer (or found already gone).
    pub removed: AtomicU64,
    /// Helper expectations created or refreshed in this member's kernel for the peer.
    pub expects_installed: AtomicU64,
    /// Expectations the kernel refused for good (their master never came, or has no helper).
    pub expects_refused: AtomicU64,
    /// Expectations removed from this member's kernel for the peer.
    pub expects_removed: AtomicU64,
    /// Batches of kernel work handed to the installer.
    pub batches_queued: AtomicU64,
    /// Batches of kernel work done by the installer.
    pub batches_done: AtomicU64,
    /// Announcements (gratuitous ARP / unsolicited NA) sent.
    pub announcements: AtomicU64,
    /// Failures of a role step (guard, address, announcement).
    pub step_errors: AtomicU64,
    /// Entries read again from the kernel after a change it reported no event for (a NAT
    /// helper's rewrite of its master: the sequence adjustment).
    pub rereads: AtomicU64,
    /// TCP entries re-created in this member's kernel after it stopped forwarding (their
    /// window tracking starts afresh; see [`RECREATE_AFTER`]).
    pub recreated: AtomicU64,
    /// Write-behind: the peer's entries held now (not yet in this member's kernel).
    pub held: AtomicU64,
    /// Write-behind: the peer's records that never reached this member's kernel (an update
    /// that replaced a held one, an entry created and ended while held).
    pub coalesced: AtomicU64,
    /// Write-behind: writes of held entries (chunks, and the takeover's write of all).
    pub writes: AtomicU64,
}

impl KStats {
    fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The counters by name.
    pub fn list(&self) -> Vec<(String, u64)> {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        [
            ("events", g(&self.events)),
            ("events_fast", g(&self.events_fast)),
            ("unreadable", g(&self.unreadable)),
            ("overruns", g(&self.overruns)),
            ("dumps", g(&self.dumps)),
            ("refreshed", g(&self.refreshed)),
            ("installed", g(&self.installed)),
            ("install_refused", g(&self.install_refused)),
            ("removed", g(&self.removed)),
            ("expects_installed", g(&self.expects_installed)),
            ("expects_refused", g(&self.expects_refused)),
            ("expects_removed", g(&self.expects_removed)),
            ("announcements", g(&self.announcements)),
            ("step_errors", g(&self.step_errors)),
            ("rereads", g(&self.rereads)),
            ("recreated", g(&self.recreated)),
            ("held", g(&self.held)),
            ("coalesced", g(&self.coalesced)),
            ("writes", g(&self.writes)),
        ]
        .into_iter()
        .map(|(k, v)| (format!("kernel_{k}"), v))
        .collect()
    }
}

/// The kernel path's state behind the packet path's lock.
pub struct KCore {
    dp: DpPath,
    kp: KernelPath,
    active: bool,
    work: Sender<Job>,
    stats: Arc<KStats>,
}

impl std::fmt::Debug for KCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KCore")
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl KCore {
    /// Active: applies conntrack events (or, with `dump`, a dump after a takeover or an
    /// overrun) to the kernel table and queues the changed entries for the peer.
    pub fn on_kernel(&mut self, events: &Events, now: Instant) {
        let now_ms = self.dp.millis(now);
        let path = self.dp.path_mut();
        let keys = self.kp.on_events(events, path.tables_mut(), now_ms);
        for k in keys {
            path.changed(k);
        }
    }

    /// Active: the entries `events` changed without an event of their own, to read from the
    /// kernel and pass to [`KCore::on_kernel`] (see `KernelPath::to_reread`).
    pub fn to_reread(&self, events: &Events) -> Vec<(CtTuple, u16)> {
        self.kp.to_reread(events)
    }

    /// Active, after a takeover (`seed`) or an overrun: reconciles with a dump of the
    /// entries and expectations.
    pub fn on_dump(&mut self, dump: &[CtEntry], expects: &[CtExpect], seed: bool, now: Instant) {
        let now_ms = self.dp.millis(now);
        let path = self.dp.path_mut();
        if seed {
            self.kp.seed(path.tables(), now_ms);
        }
        let keys = self.kp.on_dump(dump, expects, path.tables_mut(), now_ms);
        for k in keys {
            path.changed(k);
        }
    }

    /// Active, every [`events::REFRESH_EVERY`]: renews the peer's copies of entries the
    /// kernel extended without an event, from a dump taken beside the event stream.
    pub fn on_renew(&mut self, dump: &[CtEntry], now: Instant) -> usize {
        let now_ms = self.dp.millis(now);
        let path = self.dp.path_mut();
        let keys = self.kp.on_renew(dump, path.tables_mut(), now_ms);
        let n = keys.len();
        for k in keys {
            path.changed(k);
        }
        n
    }

    /// Active, about once a second: sends the entries that reached the minimum age.
    pub fn on_tick(&mut self, now: Instant) {
        let now_ms = self.dp.millis(now);
        let path = self.dp.path_mut();
        let keys = self.kp.on_tick(path.tables_mut(), now_ms);
        for k in keys {
            path.changed(k);
        }
    }

    /// True while this member forwards.
    pub fn is_active(&self) -> bool {
        self.active
    }
}

impl DpHolder for KCore {
    fn dp(&self) -> &DpPath {
        &self.dp
    }

    fn dp_mut(&mut self) -> &mut DpPath {
        &mut self.dp
    }

    fn records_applied(&mut self, now: Instant) {
        let now_ms = self.dp.millis(now);
        let w = self.kp.kernel_work(self.dp.path_mut().tables_mut(), now_ms);
        // The active's kernel is the source of its table: what a peer sends it (a standby's
        // bulk) is not installed.
        if self.active || w.is_empty() {
            return;
        }
        KStats::add(&self.stats.batches_queued, 1);
        if self.work.send(Job::Work(w)).is_err() {
            KStats::add(&self.stats.batches_done, 1);
        }
    }

    fn extra_counters(&self) -> Vec<(String, u64)> {
        self.stats.list()
    }
}

impl HoldsPath<KCore> for KCore {
    fn path_mut(&mut self) -> &mut KCore {
        self
    }
}

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
enum Job {
    /// The peer's changes, for this member's kernel.
    Work(KernelWork),
    /// Re-create this kernel's TCP entries at this time ([`RECREATE_AFTER`]).
    Recreate(Instant),
    /// This member forwards again: a re-creation not yet done is dropped.
    Cancel,
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
    fn recreate(&mut self) {
        let t0 = Instant::now();
        let (tcp, exps, all_keys) = match (self.ct.dump(), self.ct.dump_expects()) {
            (Ok((all, _)), Ok((exps, _))) => (
                all.iter()
                    .filter(|e| e.tcp.is_some())
                    .copied()
                    .collect::<Vec<_>>(),
                exps,
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
fn spawn_installer(
    rx: Receiver<Job>,
    stats: Arc<KStats>,
    mode: StandbyInstall,
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
    };
    Ok(crate::spawn_named("ha-ct-install", move || {
        let mut recreate_at: Option<Instant> = None;
        // Ends when the core (the sender) is dropped at the daemon's stop.
        loop {
            let retry = (!inst.waiting.is_empty()).then_some(EXPECT_RETRY_EVERY);
            let due = recreate_at.map(|t| t.saturating_duration_since(Instant::now()));
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
                Ok(Job::Recreate(at)) => {
                    // This member forwarded: its kernel holds entries the installer did
                    // not write (the re-creation's dump tells which).
                    if let Some(wb) = inst.wb.as_mut() {
                        wb.forget_kernel();
                    }
                    recreate_at = Some(at);
                }
                Ok(Job::Cancel) => recreate_at = None,
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
            if recreate_at.is_some_and(|t| Instant::now() >= t) {
                recreate_at = None;
                // Counted as a batch, so that a takeover meanwhile waits for it (at most
                // INSTALL_DRAIN) rather than find entries removed and not yet back.
                KStats::add(&inst.stats.batches_queued, 1);
                inst.recreate();
                KStats::add(&inst.stats.batches_done, 1);
            }
        }
    }))
}

/// The interface index and MAC of `name` in this network namespace.
fn interface(name: &str) -> Result<(u32, [u8; 6]), String> {
    let i = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| format!("no interface {name}"))?;
    Ok((i.index, i.mac.map(|m| m.octets()).unwrap_or([0; 6])))
}

/// Takes this member out of the data path without a running daemon: the guard closed for a
/// standby (no new connections, probes unanswered) and the cluster addresses of `f` removed.
/// For a supervisor after the daemon ended (`ha-daemon --release`, the systemd unit's
/// `ExecStopPost`): a daemon that dies while its box lives would otherwise leave the
/// addresses its peer now holds. Returns what could not be done.
pub fn release(f: &ForwardConfig) -> Result<(), String> {
    let mut failed = Vec::new();
    if let Err(e) = guard::set_guard(Guard {
        standby: true,
        answer_probes: false,
    }) {
        failed.push(format!("guard: {e}"));
    }
    let mut rtnl = Addresses::open().map_err(|e| format!("rtnetlink: {e}"))?;
    for side in [&f.inside, &f.outside] {
        let r = interface(&side.ifname).and_then(|(ifindex, _)| {
            let (ip, len) = side.cluster().map_err(|e| e.to_string())?;
            rtnl.remove(ifindex, IpAddr::V4(ip), len)
                .map_err(|e| format!("{ip}/{len}: {e}"))
        });
        if let Err(e) = r {
            failed.push(format!("{}: {e}", side.ifname));
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join("; "))
    }
}

/// The kernel data path of a forwarding member, set up: the host loop's plane, the core the
/// sync thread drives, and the installer thread.
pub struct KernelParts {
    /// The plane for the host loop.
    pub plane: KernelPlane,
    /// The core behind the packet path's lock (for the sync thread).
    pub core: Arc<Mutex<KCore>>,
    /// The installer thread (ends when the core is dropped).
    pub installer: JoinHandle<std::io::Result<()>>,
}

/// Sets up the kernel data path for the forwarding interfaces of `f` around the dataplane's
/// packet path `dp`: the core, the installer, the plane (guard set for a standby, leftover
/// cluster addresses removed).
pub fn build(
    f: &ForwardConfig,
    select: Selection,
    install: StandbyInstall,
    mut dp: DpPath,
    stop: &Arc<AtomicBool>,
) -> Result<KernelParts, String> {
    let mut addrs = Vec::new();
    let mut probe_from = Vec::new();
    for side in [&f.inside, &f.outside] {
        let (ifindex, mac) = interface(&side.ifname)?;
        let (ip, prefix_len) = side.cluster().map_err(|e| e.to_string())?;
        addrs.push(ClusterAddr {
            ifindex,
            mac,
            addr: IpAddr::V4(ip),
            prefix_len,
        });
        probe_from.push((side.member_ip, prefix_len));
    }
    let stats = Arc::new(KStats::default());
    let (tx, rx) = mpsc::channel();
    dp.path_mut().tables_mut().keep_kernel_changes();
    let core = Arc::new(Mutex::new(KCore {
        dp,
        kp: KernelPath::new(addrs.clone()).with_selection(select),
        active: false,
        work: tx,
        stats: stats.clone(),
    }));
    let installer = spawn_installer(rx, stats.clone(), install)?;
    let mut plane = KernelPlane {
        core: core.clone(),
        addrs,
        rtnl: Addresses::open().map_err(|e| format!("rtnetlink: {e}"))?,
        prober: probe::Prober::open(probe_from).map_err(|e| format!("ICMP socket: {e}"))?,
        guard: Guard {
            standby: true,
            answer_probes: false,
        },
        events: None,
        stats,
        stop: stop.clone(),
    };
    // A starting member is standby with a silent controller until told otherwise: the
    // standby's steps (a leftover address of an earlier run is taken off, entries its kernel
    // tracked in an earlier run get fresh windows).
    let steps = plane.lock().kp.set_role(false);
    for step in steps {
        plane.apply(step);
    }
    // Every entry of this namespace, also those installed here from the peer while nobody
    // listened, must report its changes and removal once this member is active (after the
    // guard: its `ct state` rule has loaded conntrack, whose setting this is).
    let was = ha_kernel::conntrack::events_setting::every_entry_reports_events()
        .map_err(|e| format!("conntrack events for every entry: {e}"))?;
    if was != 1 {
        eprintln!(
            "ha-daemon: net.netfilter.nf_conntrack_events was {was}, set to 1: every entry \
             reports events, also those synced in before this member listened"
        );
    }
    Ok(KernelParts {
        plane,
        core,
        installer,
    })
}

/// The kernel path as the host loop drives it.
pub struct KernelPlane {
    core: Arc<Mutex<KCore>>,
    addrs: Vec<ClusterAddr>,
    rtnl: Addresses,
    prober: probe::Prober,
    guard: Guard,
    events: Option<events::EventThread>,
    stats: Arc<KStats>,
    stop: Arc<AtomicBool>,
}

impl KernelPlane {
    fn lock(&self) -> std::sync::MutexGuard<'_, KCore> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs one step of a role change; a failure is logged and counted (the other steps
    /// still run: an address that cannot move is no reason to keep the guard closed).
    fn apply(&mut self, step: Step) {
        let r = match step {
            Step::Guard { standby } => {
                self.guard.standby = standby;
                guard::set_guard(self.guard)
            }
            Step::AddAddress(a) => self.rtnl.add(a.ifindex, a.addr, a.prefix_len),
            Step::RemoveAddress(a) => self.rtnl.remove(a.ifindex, a.addr, a.prefix_len),
            Step::Announce(a) => {
                KStats::add(&self.stats.announcements, 1);
                announce(a.ifindex, a.mac, a.addr)
            }
            Step::RecreateTcp => {
                let _ = self
                    .lock()
                    .work
                    .send(Job::Recreate(Instant::now() + RECREATE_AFTER));
                Ok(())
            }
        };
        if let Err(e) = r {
            KStats::add(&self.stats.step_errors, 1);
            eprintln!("ha-daemon: kernel path: {step:?}: {e}");
        }
    }

    /// Waits (at most [`INSTALL_DRAIN`]) until the installer has done every batch queued.
    fn wait_installed(&self) {
        let deadline = Instant::now() + INSTALL_DRAIN;
        while self.stats.batches_done.load(Ordering::Relaxed)
            < self.stats.batches_queued.load(Ordering::Relaxed)
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

impl Plane for KernelPlane {
    fn set_active(&mut self, active: bool, now: Instant) -> bool {
        let steps = {
            let mut c = self.lock();
            if c.active == active {
                return false;
            }
            c.active = active;
            c.dp.set_role(active, now);
            c.kp.set_role(active)
        };
        if active {
            {
                let c = self.lock();
                let _ = c.work.send(Job::Cancel);
                // What the write-behind holds goes in before the guard opens.
                KStats::add(&self.stats.batches_queued, 1);
                if c.work.send(Job::WriteAll).is_err() {
                    KStats::add(&self.stats.batches_done, 1);
                }
            }
            // No more work is queued (the core is active). The addresses move at once: the
            // connections already in the kernel resume. What was queued or held goes in
            // before the guard opens: until then a packet of a connection not yet installed
            // is dropped as new (or invalid, with strict tracking) and creates no entry that
            // would shadow the synced one; its retransmission finds the entry.
            let t0 = Instant::now();
            let t0_unix = crate::runtime::unix_ms();
            // The journal shows where a takeover's time goes, step by step.
            let mut timeline = Vec::new();
            for s in steps {
                let what = match &s {
                    Step::Guard { .. } => {
                        self.wait_installed();
                        timeline.push(format!("installs drained {} ms", ms_since(t0)));
                        "guard open"
                    }
                    Step::AddAddress(_) => "address added",
                    Step::RemoveAddress(_) => "address removed",
                    Step::RecreateTcp => "re-creation queued",
                    Step::Announce(_) => "announced",
                };
                self.apply(s);
                timeline.push(format!("{what} {} ms", ms_since(t0)));
            }
            eprintln!(
                "<6>ha-daemon: takeover at {t0_unix} (unix ms): {}",
                timeline.join(", ")
            );
            self.events = Some(events::EventThread::start(
                self.core.clone(),
                self.stats.clone(),
                self.stop.clone(),
            ));
        } else {
            if let Some(t) = self.events.take() {
                t.stop();
            }
            for s in steps {
                self.apply(s);
            }
        }
        true
    }

    fn is_active(&self) -> bool {
        self.lock().active
    }

    fn announce(&mut self) {
        if !self.is_active() {
            return;
        }
        for a in self.addrs.clone() {
            self.apply(Step::Announce(a));
        }
    }

    fn set_ha_alive(&mut self, alive: bool) {
        if self.guard.answer_probes != alive {
            self.guard.answer_probes = alive;
            let standby = self.guard.standby;
            self.apply(Step::Guard { standby });
        }
    }

    fn probe(&mut self, peer: Ipv4Addr, _now: Instant) -> Option<u16> {
        self.prober.send(peer)
    }

    fn probe_answered(&mut self, peer: Ipv4Addr, seq: u16) -> bool {
        self.prober.answered(peer, seq)
    }

    fn fast_path_stats(&self) -> Option<Stats> {
        None
    }
}

impl Drop for KernelPlane {
    fn drop(&mut self) {
        if let Some(t) = self.events.take() {
            t.stop();
        }
    }
}

/// Milliseconds since `t`, with a tenth (for the takeover's timeline in the journal).
fn ms_since(t: Instant) -> String {
    format!("{:.1}", t.elapsed().as_secs_f64() * 1000.0)
}
