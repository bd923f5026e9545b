//! Register-level drivers of the boards' peripherals, without the board: what to read and
//! write, in which order, and what to do when the hardware does not answer as it should.
//!
//! A board crate (`board/mps2-an385`) implements [`Regs`] with volatile accesses to the
//! peripheral's memory-mapped registers and wires these functions to its interrupts and to
//! embassy (wakers, the network driver trait); the tests here implement [`Regs`] with models
//! of the peripherals (after their datasheets and QEMU's models) and drive the cases a board
//! cannot produce on demand: a controller that never leaves reset, a MAC bus that stays busy,
//! damaged or oversized frames, a receive ring that fills while bytes keep arriving, a byte
//! that lands between a check and an interrupt clear.
//!
//! - [`lan9118`]: the SMSC LAN9118 Ethernet controller (the AN385's LAN9220 as QEMU models
//!   it): bring-up, frame receive and transmit through its FIFOs;
//! - [`cmsdk_uart`]: the Arm CMSDK APB UART: set-up, the receive interrupt's drain into a
//!   ring with flow control, the transmit register;
//! - [`mpu`]: the ARMv7-M MPU's stack guard region.
#![no_std]
#![deny(unsafe_code)]
#![warn(missing_docs)]

#[cfg(test)]
extern crate std;

pub mod cmsdk_uart;
pub mod lan9118;
pub mod mpu;

/// 32-bit register access of one peripheral, by offset from its base address. A read may
/// have a side effect (popping a FIFO), hence `&mut self`.
pub trait Regs {
    /// Reads the register at `offset`.
    fn read(&mut self, offset: usize) -> u32;
    /// Writes `value` to the register at `offset`.
    fn write(&mut self, offset: usize, value: u32);
}
