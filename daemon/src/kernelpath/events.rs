//! The active member's conntrack event thread: seeded with the synced table and one dump on
//! each takeover, then every kernel event becomes a record for the peer; an overrun (events
//! lost to a full receive buffer) is followed by a dump and a reconcile, so the peer's copy
//! never stays wrong.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ha_kernel::conntrack::socket::{CtError, Ctnetlink};

use super::{KCore, KStats};

/// Receive buffer of the event socket (forced past `rmem_max`): about 100,000 events, the
/// burst of a table refill after a takeover.
pub const EVENT_RCVBUF: usize = 64 << 20;
/// How long one receive waits before the thread looks at its stop flag.
pub const EVENT_WAIT: Duration = Duration::from_millis(10);
/// Datagrams read per lock of the core (each holds several events).
pub const EVENTS_PER_LOCK: usize = 64;

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
        let handle = std::thread::spawn(move || {
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

/// Dumps the table and reconciles (`seed`: first seeded with the synced table).
fn resync(core: &Mutex<KCore>, stats: &KStats, seed: bool) -> Result<(), CtError> {
    let (dump, bad) = Ctnetlink::open()?.dump()?;
    KStats::add(&stats.dumps, 1);
    KStats::add(&stats.unreadable, bad as u64);
    let mut c = lock(core);
    if c.is_active() {
        c.on_dump(&dump, seed, Instant::now());
    }
    Ok(())
}

fn run(core: &Mutex<KCore>, stats: &KStats, halt: &dyn Fn() -> bool) -> Result<(), CtError> {
    // Subscribed before the dump: nothing falls between the two.
    let mut ev = Ctnetlink::open()?;
    ev.subscribe(EVENT_RCVBUF, false)?;
    resync(core, stats, true)?;
    let mut batch = Vec::new();
    while !halt() {
        batch.clear();
        let mut overrun = false;
        for i in 0..EVENTS_PER_LOCK {
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
            if batch.len() == before {
                break;
            }
        }
        if !batch.is_empty() {
            KStats::add(&stats.events, batch.len() as u64);
            let mut c = lock(core);
            if !c.is_active() {
                return Ok(());
            }
            c.on_kernel(&batch, Instant::now());
        }
        if overrun {
            KStats::add(&stats.overruns, 1);
            resync(core, stats, false)?;
        }
    }
    Ok(())
}
