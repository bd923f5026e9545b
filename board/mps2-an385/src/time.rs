//! The embassy-time driver: CMSDK TIMER0 interrupts at 1 kHz and counts milliseconds.
//!
//! A 1 ms tick is enough for the agent (its shortest interval is 5 ms) and keeps the driver
//! trivially race-free: `now()` is a counter read in a critical section, and each tick
//! wakes the timers that expired (embassy-time-queue-utils keeps them).

use core::cell::{Cell, RefCell};
use core::task::Waker;

use critical_section::Mutex;
use embassy_time_driver::Driver;
use embassy_time_queue_utils::Queue;

use crate::irq::{self, Irq};

/// TIMER0 registers.
const TIMER0: usize = 0x4000_0000;
const CTRL: usize = 0x00;
const RELOAD: usize = 0x08;
const INTCLEAR: usize = 0x0C;
const CTRL_ENABLE: u32 = 1 << 0;
const CTRL_IRQ_ENABLE: u32 = 1 << 3;

/// Ticks per second (must match embassy-time-driver's `tick-hz-1_000` feature).
pub const TICK_HZ: u32 = 1_000;

struct TimerDriver {
    ticks: Mutex<Cell<u64>>,
    alarm: Mutex<Cell<u64>>,
    queue: Mutex<RefCell<Queue>>,
}

embassy_time_driver::time_driver_impl!(static DRIVER: TimerDriver = TimerDriver {
    ticks: Mutex::new(Cell::new(0)),
    alarm: Mutex::new(Cell::new(u64::MAX)),
    queue: Mutex::new(RefCell::new(Queue::new())),
});

impl Driver for TimerDriver {
    fn now(&self) -> u64 {
        critical_section::with(|cs| self.ticks.borrow(cs).get())
    }

    fn schedule_wake(&self, at: u64, waker: &Waker) {
        critical_section::with(|cs| {
            let mut queue = self.queue.borrow_ref_mut(cs);
            if queue.schedule_wake(at, waker) {
                let now = self.ticks.borrow(cs).get();
                self.alarm.borrow(cs).set(queue.next_expiration(now));
            }
        });
    }
}

fn write(reg: usize, value: u32) {
    // SAFETY: TIMER0 is the CMSDK timer of this board at 0x4000_0000; `reg` is one of its
    // documented register offsets and only this module touches it.
    unsafe { core::ptr::write_volatile((TIMER0 + reg) as *mut u32, value) }
}

/// Starts TIMER0 at [`TICK_HZ`].
pub(crate) fn init() {
    write(CTRL, 0);
    write(RELOAD, crate::SYSCLK_HZ / TICK_HZ - 1);
    write(INTCLEAR, 1);
    write(CTRL, CTRL_ENABLE | CTRL_IRQ_ENABLE);
    irq::enable(Irq::Timer0);
}

/// TIMER0 interrupt: one more millisecond; wake the timers that are due.
pub(crate) fn on_irq() {
    write(INTCLEAR, 1);
    critical_section::with(|cs| {
        let ticks = DRIVER.ticks.borrow(cs);
        let now = ticks.get() + 1;
        ticks.set(now);
        let alarm = DRIVER.alarm.borrow(cs);
        if now >= alarm.get() {
            let next = DRIVER.queue.borrow_ref_mut(cs).next_expiration(now);
            alarm.set(next);
        }
    });
}
