//! The embassy-time driver on the two CMSDK timers:
//!
//! - TIMER1 counts down from `u32::MAX` at 25 MHz and interrupts on each wrap (every 171 s);
//!   `now()` combines the wrap count with the counter, so time stays exact even when the
//!   core (or QEMU's vCPU thread) is late to take an interrupt;
//! - TIMER0 is the alarm: loaded with the cycles to the next deadline, it interrupts once;
//!   its handler wakes the expired timers (kept by embassy-time-queue-utils) and re-arms.
//!
//! One tick is 1 µs (embassy-time-driver feature `tick-hz-1_000_000`): 25 timer cycles.

use core::cell::{Cell, RefCell};
use core::task::Waker;

use critical_section::{CriticalSection, Mutex};
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

use crate::irq::{self, Irq};

const TIMER0: usize = 0x4000_0000;
const TIMER1: usize = 0x4000_1000;
const CTRL: usize = 0x00;
const VALUE: usize = 0x04;
const RELOAD: usize = 0x08;
const INTSTATUS: usize = 0x0C;
const INTCLEAR: usize = 0x0C;
const CTRL_ENABLE: u32 = 1 << 0;
const CTRL_IRQ_ENABLE: u32 = 1 << 3;

/// Ticks per second (must match embassy-time-driver's `tick-hz-1_000_000` feature).
pub const TICK_HZ: u32 = 1_000_000;
/// Timer cycles per tick.
const CYCLES_PER_TICK: u64 = (crate::SYSCLK_HZ / TICK_HZ) as u64;

struct TimerDriver {
    /// TIMER1 wraps seen by its interrupt handler.
    wraps: Mutex<Cell<u32>>,
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: TimerDriver = TimerDriver {
    wraps: Mutex::new(Cell::new(0)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

fn read(timer: usize, reg: usize) -> u32 {
    // SAFETY: `timer` is one of this board's CMSDK timers (always mapped) and `reg` one of its
    // register offsets; reading has no side effect. Only this module uses the timers.
    unsafe { core::ptr::read_volatile((timer + reg) as *const u32) }
}

fn write(timer: usize, reg: usize, value: u32) {
    // SAFETY: as in `read`; only this module writes the timers.
    unsafe { core::ptr::write_volatile((timer + reg) as *mut u32, value) }
}

impl TimerDriver {
    /// Ticks since boot; the caller holds a critical section, so the wrap handler cannot run
    /// between the reads.
    fn now_cs(&self, cs: CriticalSection<'_>) -> u64 {
        // A wrap whose handler has not run yet counts; the arithmetic and its cases are
        // `ha_hal::timer`'s (tested on the host).
        let wraps = self.wraps.borrow(cs).get();
        let value = read(TIMER1, VALUE);
        let wrap_pending = read(TIMER1, INTSTATUS) & 1 != 0;
        let value_after = if wrap_pending {
            read(TIMER1, VALUE)
        } else {
            value
        };
        ha_hal::timer::ticks(
            ha_hal::timer::CounterRead {
                wraps,
                value,
                wrap_pending,
                value_after,
            },
            CYCLES_PER_TICK,
        )
    }

    /// Arms TIMER0 for tick `at` (`u64::MAX`: no alarm). Returns false when `at` already
    /// passed (nothing armed; the caller processes the queue again).
    fn arm(&self, cs: CriticalSection<'_>, at: u64) -> bool {
        write(TIMER0, CTRL, 0);
        write(TIMER0, INTCLEAR, 1);
        if at == u64::MAX {
            return true;
        }
        // Far deadlines fire early at the counter's limit and re-arm from the handler.
        let Some(cycles) = ha_hal::timer::alarm_cycles(self.now_cs(cs), at, CYCLES_PER_TICK) else {
            return false;
        };
        write(TIMER0, RELOAD, cycles);
        write(TIMER0, VALUE, cycles);
        write(TIMER0, CTRL, CTRL_ENABLE | CTRL_IRQ_ENABLE);
        true
    }

    /// Wakes what expired and arms the next deadline.
    fn service(&self, cs: CriticalSection<'_>) {
        let mut queue = self.queue.borrow_ref_mut(cs);
        loop {
            let next = queue.next_expiration(self.now_cs(cs));
            if self.arm(cs, next) {
                return;
            }
        }
    }
}

impl Driver for TimerDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.now_cs(cs))
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let changed = self.queue.borrow_ref_mut(cs).schedule_wake(at, waker);
            if changed {
                self.service(cs);
            }
        });
    }
}

/// Starts the free-running TIMER1 and enables both timer interrupts.
pub(crate) fn init() {
    write(TIMER1, CTRL, 0);
    write(TIMER1, RELOAD, u32::MAX);
    write(TIMER1, VALUE, u32::MAX);
    write(TIMER1, INTCLEAR, 1);
    write(TIMER1, CTRL, CTRL_ENABLE | CTRL_IRQ_ENABLE);
    write(TIMER0, CTRL, 0);
    write(TIMER0, INTCLEAR, 1);
    irq::enable(Irq::Timer1);
    irq::enable(Irq::Timer0);
}

/// TIMER0 interrupt: an alarm deadline (or a far deadline's intermediate stop) arrived.
pub(crate) fn on_alarm_irq() {
    critical_section::with(|cs| DRIVER.service(cs));
}

/// TIMER1 interrupt: the free-running counter wrapped.
pub(crate) fn on_wrap_irq() {
    critical_section::with(|cs| {
        if read(TIMER1, INTSTATUS) & 1 != 0 {
            write(TIMER1, INTCLEAR, 1);
            let w = DRIVER.wraps.borrow(cs);
            w.set(w.get().wrapping_add(1));
        }
    });
}
