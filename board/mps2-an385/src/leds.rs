//! FPGAIO user LEDs (`0x4002_8000`, register LED0, bits 0 and 1) as `embedded-hal` output pins.

use core::convert::Infallible;
use embedded_hal::digital::{ErrorType, OutputPin};

/// FPGAIO LED0 register.
const LED0: *mut u32 = 0x4002_8000 as *mut u32;

/// The two FPGAIO LEDs.
pub struct Leds {
    /// LED 0: the status LED.
    pub status: Led,
    /// LED 1: spare.
    pub spare: Led,
}

impl Leds {
    pub(crate) fn new() -> Self {
        Self {
            status: Led { bit: 0 },
            spare: Led { bit: 1 },
        }
    }
}

/// One FPGAIO LED.
pub struct Led {
    bit: u32,
}

impl ErrorType for Led {
    type Error = Infallible;
}

impl Led {
    fn update(&mut self, on: bool) {
        critical_section::with(|_| {
            // SAFETY: LED0 is the FPGAIO LED register of this board (always mapped, read/write);
            // the read-modify-write runs in a critical section so the two LEDs do not race.
            unsafe {
                let v = core::ptr::read_volatile(LED0);
                let v = if on {
                    v | (1 << self.bit)
                } else {
                    v & !(1 << self.bit)
                };
                core::ptr::write_volatile(LED0, v);
            }
        });
    }
}

impl OutputPin for Led {
    fn set_low(&mut self) -> Result<(), Infallible> {
        self.update(false);
        Ok(())
    }

    fn set_high(&mut self) -> Result<(), Infallible> {
        self.update(true);
        Ok(())
    }
}
