//! A thread-mode embassy executor that sleeps with `WFI`.
//!
//! embassy-executor's own Cortex-M thread executor sleeps with `WFE`, which QEMU executes as
//! a no-op: an idle member would spin at 100 % of a host core. `WFI` halts the vCPU until an
//! interrupt, on real silicon and in QEMU alike.

use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, Ordering};

use embassy_executor::{raw, Spawner};

/// Set when a task was woken (by an interrupt handler or another task).
static WORK: AtomicBool = AtomicBool::new(false);

#[export_name = "__pender"]
fn pender(_context: *mut ()) {
    WORK.store(true, Ordering::Release);
}

/// The executor; run it once from `main`.
pub struct Executor {
    inner: raw::Executor,
    not_send: PhantomData<*mut ()>,
}

impl Default for Executor {
    fn default() -> Self {
        Self::new()
    }
}

impl Executor {
    /// A new executor.
    pub fn new() -> Self {
        Self {
            inner: raw::Executor::new(core::ptr::null_mut()),
            not_send: PhantomData,
        }
    }

    /// Calls `init` with a spawner, then runs the tasks forever, sleeping between wake-ups.
    pub fn run(&'static mut self, init: impl FnOnce(Spawner)) -> ! {
        let _ = self.not_send;
        init(self.inner.spawner());
        loop {
            // SAFETY: `poll` is only called here, from thread mode, never re-entrantly (this
            // loop is the only caller and `run` takes `&'static mut self` so runs once).
            unsafe { self.inner.poll() };
            cortex_m::interrupt::free(|_| {
                // With interrupts masked, a wake-up cannot slip between the check and the WFI;
                // a pending interrupt still ends the WFI, and runs once `free` unmasks.
                if !WORK.swap(false, Ordering::AcqRel) {
                    cortex_m::asm::wfi();
                }
            });
        }
    }
}
