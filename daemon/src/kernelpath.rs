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
//! - the standby's installer thread ([`installer`]): the peer's entries go into this member's
//!   kernel in batches of many requests per `sendmsg` (SPEC C2's "larval" entries, here live
//!   entries the guard keeps unused): as they arrive while the sync stream is calm, held
//!   while it is busy and written when it goes quiet (the write-behind, the default; entries
//!   created and ended within a burst never cost the kernel anything); a takeover writes
//!   what is held before its guard opens.
//! - [`KernelPlane`], the host loop's [`Plane`]: a role change runs the kernel path's steps
//!   (the nftables guard, the addresses over rtnetlink, gratuitous ARP / unsolicited NA); the
//!   peer's liveness probes are ICMP echo on a raw socket ([`probe`]); while the controller is
//!   silent the guard drops echo requests to this member.

pub mod events;
mod installer;
pub mod probe;

use installer::{spawn_installer, Job};
pub use installer::{EXPECT_RETRY_FOR, RECREATE_AFTER};

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::{ForwardConfig, StandbyInstall};
use crate::dp::{DpHolder, DpPath};
use crate::fastpath::Stats;
use crate::runtime::{Activate, Plane};
use crate::syncplane::HoldsPath;
use ha_kernel::address::{announce, Addresses};
use ha_kernel::conntrack::{CtEntry, CtExpect, CtTuple, Events};
use ha_kernel::domains::{DomainSet, Domains};
use ha_kernel::guard::{self, Guard};
use ha_kernel::path::{ClusterAddr, KernelPath, Step};
use ha_kernel::select::Selection;

/// How long a takeover waits at most for the installer to put the entries already received
/// into the kernel before the guard opens: the batches queued, and what the write-behind
/// holds (at most its `max_pending`, 131,072 entries: about 0.6 s of installs on an idle
/// kernel). Past it the takeover goes on (a kernel that takes no entries must not keep
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
    /// Load sharing: a domain was taken over while the event thread ran for others; its
    /// entries were seeded, a dump is to reconcile them.
    dump_due: bool,
    work: Sender<Job>,
    stats: Arc<KStats>,
}

impl std::fmt::Debug for KCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KCore")
            .field("active", &self.kp.active_domains())
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
            let only = self.kp.active_domains();
            self.kp.seed(path.tables(), now_ms, only);
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

    /// True while this member forwards (for any domain).
    pub fn is_active(&self) -> bool {
        !self.kp.active_domains().is_empty()
    }

    /// Load sharing: whether a domain taken over while the event thread ran asks for a dump
    /// and reconcile (once: the flag is cleared).
    pub fn take_dump_due(&mut self) -> bool {
        std::mem::take(&mut self.dump_due)
    }

    /// Makes this member active for exactly the domains `target`; the steps to run. A
    /// domain taken while the member forwards for others is seeded with the peer's entries
    /// of it at once (the event thread dumps and reconciles it next: see
    /// [`KCore::take_dump_due`]).
    fn set_domains(&mut self, target: DomainSet, now: Instant) -> Vec<Step> {
        let was = self.kp.active_domains();
        // The table's role follows "forwards for any domain".
        if target.is_empty() != was.is_empty() {
            self.dp.set_role(!target.is_empty(), now);
        }
        let steps = self.kp.set_domains(target);
        let gained = target.minus(was);
        if !gained.is_empty() && !was.is_empty() {
            let now_ms = self.dp.millis(now);
            self.kp.seed(self.dp.path_mut().tables(), now_ms, gained);
            self.dump_due = true;
        }
        steps
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
        // Only the entries of the domains this member is standby for: the active's kernel
        // is the source of its domains' table (what a peer sends it, a bulk, is not
        // installed).
        let w = self.kp.kernel_work(self.dp.path_mut().tables_mut(), now_ms);
        if w.is_empty() {
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

/// The interface index and MAC of `name` in this network namespace.
fn interface(name: &str) -> Result<(u32, [u8; 6]), String> {
    let i = pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| format!("no interface {name}"))?;
    Ok((i.index, i.mac.map(|m| m.octets()).unwrap_or([0; 6])))
}

/// Which domain a connection belongs to, from `[forward]` (the main domain) and its
/// `[[forward.shared]]` domains (the prefix of each inside cluster address).
pub fn domains_of(f: &ForwardConfig) -> Result<Domains, String> {
    let nets = f
        .shared
        .iter()
        .map(|d| Ok((d.domain, ha_kernel::select::IpNet::V4(d.network()?))))
        .collect::<Result<Vec<_>, crate::config::ConfigError>>()
        .map_err(|e| e.to_string())?;
    Ok(Domains::new(f.domain, nets))
}

/// Every cluster address of `f` (the main domain's and each shared domain's) with its
/// domain and the forwarding interface it goes on (inside, outside).
fn cluster_addresses(f: &ForwardConfig) -> Result<Vec<(u8, &str, IpAddr, u8)>, String> {
    let mut out = Vec::new();
    for side in [&f.inside, &f.outside] {
        let (ip, len) = side.cluster().map_err(|e| e.to_string())?;
        out.push((f.domain, side.ifname.as_str(), IpAddr::V4(ip), len));
    }
    for d in &f.shared {
        let [inside, outside] = d.clusters().map_err(|e| e.to_string())?;
        for (side, (ip, len)) in [(&f.inside, inside), (&f.outside, outside)] {
            out.push((d.domain, side.ifname.as_str(), IpAddr::V4(ip), len));
        }
    }
    Ok(out)
}

/// The guard of a member standby for the domains `standby` of `domains`.
fn guard_for(domains: &Domains, standby: DomainSet, answer_probes: bool) -> Guard {
    Guard {
        standby: standby.contains(domains.main()),
        shared: domains
            .nets()
            .iter()
            .map(|(d, n)| (*n, standby.contains(*d)))
            .collect(),
        answer_probes,
    }
}

/// Takes this member out of the data path without a running daemon: the guard closed for a
/// standby (no new connections, probes unanswered) and the cluster addresses of `f` (every
/// domain's) removed. For a supervisor after the daemon ended (`ha-daemon --release`, the
/// systemd unit's `ExecStopPost`): a daemon that dies while its box lives would otherwise
/// leave the addresses its peer now holds. Returns what could not be done.
pub fn release(f: &ForwardConfig) -> Result<(), String> {
    let mut failed = Vec::new();
    let domains = domains_of(f)?;
    if let Err(e) = guard::set_guard(&guard_for(&domains, domains.all(), false)) {
        failed.push(format!("guard: {e}"));
    }
    let mut rtnl = Addresses::open().map_err(|e| format!("rtnetlink: {e}"))?;
    for (_, ifname, ip, len) in cluster_addresses(f)? {
        let r = interface(ifname).and_then(|(ifindex, _)| {
            rtnl.remove(ifindex, ip, len)
                .map_err(|e| format!("{ip}/{len}: {e}"))
        });
        if let Err(e) = r {
            failed.push(format!("{ifname}: {e}"));
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
    for (domain, ifname, addr, prefix_len) in cluster_addresses(f)? {
        let (ifindex, mac) = interface(ifname)?;
        addrs.push((
            domain,
            ClusterAddr {
                ifindex,
                mac,
                addr,
                prefix_len,
            },
        ));
    }
    let mut probe_from = Vec::new();
    for side in [&f.inside, &f.outside] {
        let (_, prefix_len) = side.cluster().map_err(|e| e.to_string())?;
        probe_from.push((side.member_ip, prefix_len));
    }
    let domains = domains_of(f)?;
    let stats = Arc::new(KStats::default());
    let (tx, rx) = mpsc::channel();
    dp.path_mut().tables_mut().keep_kernel_changes();
    let core = Arc::new(Mutex::new(KCore {
        dp,
        kp: KernelPath::shared(domains.clone(), addrs).with_selection(select),
        dump_due: false,
        work: tx,
        stats: stats.clone(),
    }));
    let installer = spawn_installer(rx, stats.clone(), install, domains.clone())?;
    let mut plane = KernelPlane {
        core: core.clone(),
        rtnl: Addresses::open().map_err(|e| format!("rtnetlink: {e}"))?,
        prober: probe::Prober::open(probe_from).map_err(|e| format!("ICMP socket: {e}"))?,
        guard: guard_for(&domains, domains.all(), false),
        domains,
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
    rtnl: Addresses,
    prober: probe::Prober,
    guard: Guard,
    /// Which domain a connection (a guard's network) belongs to.
    domains: Domains,
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
                self.guard = guard_for(&self.domains, standby, self.guard.answer_probes);
                guard::set_guard(&self.guard)
            }
            Step::AddAddress(a) => self.rtnl.add(a.ifindex, a.addr, a.prefix_len),
            Step::RemoveAddress(a) => self.rtnl.remove(a.ifindex, a.addr, a.prefix_len),
            Step::Announce(a) => {
                KStats::add(&self.stats.announcements, 1);
                announce(a.ifindex, a.mac, a.addr)
            }
            Step::RecreateTcp { domains } => {
                let _ = self
                    .lock()
                    .work
                    .send(Job::Recreate(Instant::now() + RECREATE_AFTER, domains));
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

    /// Takes (`active`) or gives up the active role for `domain`; true when it changed.
    fn set_domain(&mut self, domain: u8, active: bool, now: Instant) -> bool {
        let (steps, was, target) = {
            let mut c = self.lock();
            let was = c.kp.active_domains();
            let one = DomainSet::one(domain) & self.domains.all();
            let target = if active { was | one } else { was.minus(one) };
            if target == was {
                return false;
            }
            (c.set_domains(target, now), was, target)
        };
        let gained = target.minus(was);
        if gained.is_empty() {
            // Given up: the event thread stops first when nothing is left to forward.
            if target.is_empty() {
                if let Some(t) = self.events.take() {
                    t.stop();
                }
            }
            for s in steps {
                self.apply(s);
            }
            return true;
        }
        {
            let c = self.lock();
            let _ = c.work.send(Job::Cancel(gained));
            // What the write-behind holds goes in before the guard opens.
            KStats::add(&self.stats.batches_queued, 1);
            if c.work.send(Job::WriteAll).is_err() {
                KStats::add(&self.stats.batches_done, 1);
            }
        }
        // No more work is queued for the domain (this member is active for it). The
        // addresses move at once: the connections already in the kernel resume. What was
        // queued or held goes in before the guard opens: until then a packet of a
        // connection not yet installed is dropped as new (or invalid, with strict tracking)
        // and creates no entry that would shadow the synced one; its retransmission finds
        // the entry.
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
                Step::RecreateTcp { .. } => "re-creation queued",
                Step::Announce(_) => "announced",
            };
            self.apply(s);
            timeline.push(format!("{what} {} ms", ms_since(t0)));
        }
        eprintln!(
            "<6>ha-daemon: takeover at {t0_unix} (unix ms) of domain {domain}: {}",
            timeline.join(", ")
        );
        if was.is_empty() {
            self.events = Some(events::EventThread::start(
                self.core.clone(),
                self.stats.clone(),
                self.stop.clone(),
            ));
        }
        true
    }
}

impl Plane for KernelPlane {
    fn set_active(&mut self, active: bool, now: Instant) -> bool {
        let main = self.domains.main();
        self.set_domain(main, active, now)
    }

    fn set_domain_active(&mut self, domain: u8, active: bool, now: Instant) -> bool {
        self.set_domain(domain, active, now)
    }

    fn is_active(&self) -> bool {
        self.lock().is_active()
    }

    fn announce(&mut self) {
        let addrs = self.lock().kp.active_addresses();
        for a in addrs {
            self.apply(Step::Announce(a));
        }
    }

    fn set_ha_alive(&mut self, alive: bool) {
        if self.guard.answer_probes != alive {
            self.guard.answer_probes = alive;
            if let Err(e) = guard::set_guard(&self.guard) {
                KStats::add(&self.stats.step_errors, 1);
                eprintln!("ha-daemon: kernel path: guard (probes answered: {alive}): {e}");
            }
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

    fn installs_pending(&self) -> u64 {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let batches = g(&self.stats.batches_queued).saturating_sub(g(&self.stats.batches_done));
        g(&self.stats.held) + batches
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
