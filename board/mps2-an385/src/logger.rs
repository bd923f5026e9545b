//! The defmt global logger: raw defmt frames (rzCOBS encoded) written to UART0, decoded on
//! the host by `defmt-print -e <elf>` (see docs/firmware.md).

use core::cell::RefCell;
use core::sync::atomic::{AtomicBool, Ordering};

use critical_section::{Mutex, RestoreState};

#[defmt::global_logger]
struct UartLogger;

static TAKEN: AtomicBool = AtomicBool::new(false);
static ENCODER: Mutex<RefCell<defmt::Encoder>> = Mutex::new(RefCell::new(defmt::Encoder::new()));
static RESTORE: Mutex<RefCell<Option<RestoreState>>> = Mutex::new(RefCell::new(None));

fn with_encoder(f: impl FnOnce(&mut defmt::Encoder)) {
    // We already hold the critical section taken in `acquire`; a nested one is cheap on a
    // single core and gives us the token to reach the encoder.
    critical_section::with(|cs| f(&mut ENCODER.borrow_ref_mut(cs)));
}

// SAFETY (for the trait): `acquire` enters a critical section and keeps it until `release`,
// so frames never interleave; a nested `acquire` (logging from inside logging) panics.
unsafe impl defmt::Logger for UartLogger {
    fn acquire() {
        // SAFETY: paired with the `release` in `Logger::release`, which defmt guarantees to call
        // after each `acquire`.
        let restore = unsafe { critical_section::acquire() };
        if TAKEN.swap(true, Ordering::Relaxed) {
            panic!("defmt logger taken reentrantly");
        }
        critical_section::with(|cs| *RESTORE.borrow_ref_mut(cs) = Some(restore));
        crate::uart::log_frame_start();
        with_encoder(|e| e.start_frame(crate::uart::log_write));
    }

    unsafe fn flush() {}

    unsafe fn release() {
        with_encoder(|e| e.end_frame(crate::uart::log_write));
        TAKEN.store(false, Ordering::Relaxed);
        let restore = critical_section::with(|cs| RESTORE.borrow_ref_mut(cs).take());
        if let Some(restore) = restore {
            // SAFETY: `restore` came from the `critical_section::acquire` in `acquire`, and
            // this is its matching release.
            unsafe { critical_section::release(restore) }
        }
    }

    unsafe fn write(bytes: &[u8]) {
        with_encoder(|e| e.write(bytes, crate::uart::log_write));
    }
}
