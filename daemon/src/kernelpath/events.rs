//! The active member's conntrack event thread: seeded with the synced table and one dump on
//! each takeover, then every kernel event becomes a record for the peer; an overrun (events
//! lost to a full receive buffer) is followed by a dump and a reconcile, so the peer's copy
//! never stays wrong. With load sharing it runs while the member is active for any domain
//! (the events of the others' domains are left out by `KernelPath`); a domain taken over
//! while it runs is reconciled with a dump at the next tick.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ha_kernel::conntrack::socket::{CtError, Ctnetlink};
use ha_kernel::conntrack::{CtEntry, CtEvent, CtEventKind, CtExpect, CtTuple, Events};

use super::{KCore, KStats};

/// Receive buffer of the event socket (forced past `rmem_max`): about 100,000 events, the
/// burst of a table refill after a takeover.
pub const EVENT_RCVBUF: usize = 64 << 20;
/// How long one receive waits before the thread looks at its stop flag.
pub const EVENT_WAIT: Duration = Duration::from_millis(10);
/// How often the active dumps its table to renew the peer's copies of entries whose timeout
/// the kernel extended without an event (UDP, ICMP: 30 s for an unanswered flow, so a third
/// of it). The dump runs in a thread of its own ([`Refresher`]): a dump of 100,000 entries
/// takes about half a second, during which the event thread would otherwise read no events
/// (a churn round measured 4 s instead of 1.6 s when it met one).
pub const REFRESH_EVERY: Duration = Duration::from_secs(10);
/// How often young entries are looked at (the minimum age's resolution).
pub const TICK: Duration = Duration::from_secs(1);
/// Receives (each up to `ha_kernel::conntrack::socket::EVENT_SLOTS` datagrams) per lock of
/// the core, while fewer than [`EVENTS_PER_LOCK`] events are in hand.
pub const RECEIVES_PER_LOCK: usize = 64;
/// Events read per lock of the core at most (beyond one receive): the sync thread takes the
/// same lock to send them.
pub const EVENTS_PER_LOCK: usize = 1024;

/// A running event thread.
pub struct EventThread {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

impl EventThread {
    /// Starts the thread of a member that just became active.
    pub fn start(
        core: Arc<Mutex<KCore>>,
        stats: Arc<KStats>,
        daemon_stop: Arc<AtomicBool>,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let me = stop.clone();
        let handle = crate::spawn_named("ha-ct-events", move || {
            let halt = || me.load(Ordering::Relaxed) || daemon_stop.load(Ordering::Relaxed);
            if let Err(e) = run(&core, &stats, &halt) {
                eprintln!("ha-daemon: conntrack events: {e}");
            }
        });
        EventThread { stop, handle }
    }

    /// Stops the thread and waits for it (at most one [`EVENT_WAIT`] and the work in hand).
    pub fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.handle.join();
    }
}

fn lock(core: &Mutex<KCore>) -> std::sync::MutexGuard<'_, KCore> {
    core.lock().unwrap_or_else(|p| p.into_inner())
}

/// The kernel's entries and expectations (counted: one dump, the messages not read).
fn dump_tables(stats: &KStats) -> Result<(Vec<CtEntry>, Vec<CtExpect>), CtError> {
    let mut ct = Ctnetlink::open()?;
    let (dump, bad) = ct.dump()?;
    let (expects, bad_exp) = ct.dump_expects()?;
    KStats::add(&stats.dumps, 1);
    KStats::add(&stats.unreadable, (bad + bad_exp) as u64);
    Ok((dump, expects))
}

/// Dumps the entries and expectations and reconciles (`seed`: first seeded with the synced
/// tables).
fn resync(core: &Mutex<KCore>, stats: &KStats, seed: bool) -> Result<(), CtError> {
    let (dump, expects) = dump_tables(stats)?;
    let mut c = lock(core);
    if c.is_active() {
        c.on_dump(&dump, &expects, seed, Instant::now());
    }
    Ok(())
}

/// The refresh dumps' thread: every [`REFRESH_EVERY`] a dump of the entries on a socket of
/// its own, handed to the event thread (which renews from it, see
/// `KernelPath::on_renew`); at most one dump waits.
struct Refresher {
    dumps: mpsc::Receiver<Vec<CtEntry>>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Refresher {
    fn start(stats: Arc<KStats>) -> Self {
        let (tx, dumps) = mpsc::sync_channel(1);
        let stop = Arc::new(AtomicBool::new(false));
        let me = stop.clone();
        let handle = crate::spawn_named("ha-ct-refresh", move || {
            let mut last = Instant::now();
            while !me.load(Ordering::Relaxed) {
                std::thread::sleep(EVENT_WAIT);
                if last.elapsed() < REFRESH_EVERY {
                    continue;
                }
                last = Instant::now();
                let dump = Ctnetlink::open().and_then(|mut ct| ct.dump());
                match dump {
                    Ok((dump, bad)) => {
                        KStats::add(&stats.dumps, 1);
                        KStats::add(&stats.unreadable, bad as u64);
                        if let Err(mpsc::TrySendError::Disconnected(_)) = tx.try_send(dump) {
                            return;
                        }
                    }
                    Err(e) => eprintln!("ha-daemon: conntrack refresh dump: {e}"),
                }
            }
        });
        Refresher {
            dumps,
            stop,
            handle: Some(handle),
        }
    }
}

impl Drop for Refresher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// When an entry changed without an event (see `KernelPath::to_reread`) is read a second
/// time. The first read follows the expectation's event at once, and the helper rewrites
/// the packet (moving the adjustment) just after announcing the expectation, in the same
/// softirq: a daemon woken on another CPU may read the master in between. The second read
/// comes when the rewrite is long done.
pub const REREAD_AGAIN: Duration = Duration::from_millis(20);

/// Reads the entries `keys` names from the kernel and applies them as updates (gone ones are
/// left to their destroy events; one the kernel did not answer for is logged: its change
/// then reaches the peer with the entry's next update or an overrun's reconcile).
fn reread_entries(
    reader: &mut Ctnetlink,
    core: &Mutex<KCore>,
    stats: &KStats,
    keys: &[(CtTuple, u16)],
) {
    if keys.is_empty() {
        return;
    }
    KStats::add(&stats.rereads, keys.len() as u64);
    let mut updates = Events::default();
    for (orig, zone) in keys {
        match reader.get(orig, *zone) {
            Ok(Some(entry)) => updates.entries.push(CtEvent {
                kind: CtEventKind::Update,
                entry,
            }),
            Ok(None) => {}
            Err(e) => eprintln!("ha-daemon: conntrack: reading {orig:?} again: {e}"),
        }
    }
    let mut c = lock(core);
    if c.is_active() && !updates.is_empty() {
        c.on_kernel(&updates, Instant::now());
    }
}

fn run(core: &Mutex<KCore>, stats: &Arc<KStats>, halt: &dyn Fn() -> bool) -> Result<(), CtError> {
    // Subscribed before the dump: nothing falls between the two.
    let mut ev = Ctnetlink::open()?;
    ev.subscribe(EVENT_RCVBUF, false)?;
    // Requests of the event thread (reading an entry whose change had no event of its own).
    let mut reader = Ctnetlink::open()?;
    resync(core, stats, true)?;
    let refresher = Refresher::start(stats.clone());
    let mut batch = Events::default();
    let mut fast_seen = 0;
    let mut last_tick = Instant::now();
    // Masters read once already, to read again at the given time.
    let mut again: Vec<((CtTuple, u16), Instant)> = Vec::new();
    while !halt() {
        batch.clear();
        let mut overrun = false;
        for i in 0..RECEIVES_PER_LOCK {
            let wait = if i == 0 { EVENT_WAIT } else { Duration::ZERO };
            let before = batch.len();
            match ev.recv_events(wait, &mut batch) {
                Ok(bad) => KStats::add(&stats.unreadable, bad as u64),
                Err(CtError::Overrun) => {
                    overrun = true;
                    break;
                }
                Err(e) => return Err(e),
            }
            if batch.len() == before || batch.len() >= EVENTS_PER_LOCK {
                break;
            }
        }
        if !batch.is_empty() {
            KStats::add(&stats.events, batch.len() as u64);
            // This thread's socket counts since the takeover; the counter across takeovers.
            let fast = ev.fast_reads();
            KStats::add(&stats.events_fast, fast - fast_seen);
            fast_seen = fast;
            let mut c = lock(core);
            if !c.is_active() {
                return Ok(());
            }
            c.on_kernel(&batch, Instant::now());
            let reread = c.to_reread(&batch);
            drop(c);
            reread_entries(&mut reader, core, stats, &reread);
            let due = Instant::now() + REREAD_AGAIN;
            again.extend(reread.into_iter().map(|k| (k, due)));
        }
        if again.first().is_some_and(|(_, due)| Instant::now() >= *due) {
            let now = Instant::now();
            let (ready, later): (Vec<_>, Vec<_>) = again.drain(..).partition(|(_, d)| now >= *d);
            again = later;
            let keys: Vec<(CtTuple, u16)> = ready.into_iter().map(|(k, _)| k).collect();
            reread_entries(&mut reader, core, stats, &keys);
        }
        if last_tick.elapsed() >= TICK {
            last_tick = Instant::now();
            let mut c = lock(core);
            if !c.is_active() {
                return Ok(());
            }
            c.on_tick(last_tick);
            // Load sharing: a domain taken over since (its entries seeded then) is
            // reconciled with a dump within a tick.
            if c.take_dump_due() {
                drop(c);
                resync(core, stats, false)?;
            }
        }
        if let Ok(dump) = refresher.dumps.try_recv() {
            let mut c = lock(core);
            if !c.is_active() {
                return Ok(());
            }
            let n = c.on_renew(&dump, Instant::now());
            KStats::add(&stats.refreshed, n as u64);
        }
        if overrun {
            KStats::add(&stats.overruns, 1);
            resync(core, stats, false)?;
        }
    }
    Ok(())
}
