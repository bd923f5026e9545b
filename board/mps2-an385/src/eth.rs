//! LAN9118 Ethernet controller (QEMU's model of the AN385's LAN9220) as an
//! `embassy-net-driver` driver: interrupt-driven receive (the RX status FIFO level
//! interrupt wakes the stack), programmed-I/O transmit.
//!
//! The register protocol (bring-up, FIFOs, MAC access, every wait bounded) is
//! `ha_board_drivers::lan9118`, tested on the host against a model of the chip; this module
//! is the board's part: the registers' address, the interrupt line and the embassy glue.

use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState, RxToken, TxToken};
use embassy_sync::waitqueue::AtomicWaker;

use crate::irq::{self, Irq};

pub use ha_board_drivers::lan9118::MTU;
use ha_board_drivers::lan9118::{self, BUF_LEN};
use ha_board_drivers::Regs;

const BASE: usize = 0x4020_0000;

static RX_WAKER: AtomicWaker = AtomicWaker::new();

/// Why the controller could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum EthError {
    /// BYTE_TEST did not read back the fixed pattern: no LAN9118 at the address.
    NotPresent,
    /// The controller did not become ready after a soft reset.
    NotReady,
    /// A MAC register access never completed.
    MacBusy,
}

impl From<lan9118::Error> for EthError {
    fn from(e: lan9118::Error) -> Self {
        match e {
            lan9118::Error::NotPresent => EthError::NotPresent,
            lan9118::Error::NotReady => EthError::NotReady,
            lan9118::Error::MacBusy => EthError::MacBusy,
        }
    }
}

/// The LAN9118's registers, by volatile access at [`BASE`].
struct Mmio;

impl Regs for Mmio {
    fn read(&mut self, reg: usize) -> u32 {
        // SAFETY: BASE is the LAN9118 of this board (always mapped); `reg` is one of its
        // register offsets. FIFO pops (RX data/status) happen only in the driver, which
        // `Lan9118` owns exclusively.
        unsafe { core::ptr::read_volatile((BASE + reg) as *const u32) }
    }

    fn write(&mut self, reg: usize, value: u32) {
        // SAFETY: as in `read`; only the driver and its interrupt handler (INT_EN/INT_STS)
        // write.
        unsafe { core::ptr::write_volatile((BASE + reg) as *mut u32, value) }
    }
}

/// What the driver keeps in a static: nothing. Frames move through the LAN9118's FIFOs by
/// programmed I/O, so each token copies its frame through a buffer on the stack, only while
/// the network stack handles that one frame (no 3 KiB of static buffers; the stack is shared
/// by every task, see docs/firmware.md "Size"). Kept so that the firmware sets both boards
/// up alike.
pub struct EthBuffers {
    _private: (),
}

impl Default for EthBuffers {
    fn default() -> Self {
        Self::new()
    }
}

impl EthBuffers {
    /// The (empty) buffers, usable in a `static` initialiser.
    pub const fn new() -> Self {
        Self { _private: () }
    }
}

/// The LAN9118 driver.
pub struct Lan9118 {
    mac: [u8; 6],
}

impl Lan9118 {
    /// Resets the controller, sets its MAC address and enables transmit, receive and the
    /// receive interrupt.
    pub fn new(mac: [u8; 6], _bufs: &'static mut EthBuffers) -> Result<Self, EthError> {
        lan9118::bring_up(&mut Mmio, mac)?;
        irq::enable(Irq::Ethernet);
        Ok(Self { mac })
    }
}

/// Ethernet interrupt: a frame arrived. Acknowledge and wake the stack.
pub(crate) fn on_irq() {
    lan9118::ack_interrupts(&mut Mmio);
    RX_WAKER.wake();
}

/// A received frame, read out of the FIFO (into a buffer on the stack) when consumed.
pub struct Lan9118Rx;

/// Room for one frame to send (a buffer on the stack, pushed into the FIFO when filled).
pub struct Lan9118Tx;

impl RxToken for Lan9118Rx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        let mut buf = [0u8; BUF_LEN];
        // `receive` only hands out a token when a status is queued; a frame that turns out
        // damaged is dropped and the stack sees an empty buffer (which it ignores).
        match lan9118::pop_frame(&mut Mmio, &mut buf) {
            Some(n) => f(&mut buf[..n]),
            None => f(&mut []),
        }
    }
}

impl TxToken for Lan9118Tx {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = [0u8; BUF_LEN];
        let len = len.min(MTU);
        let r = f(&mut buf[..len]);
        lan9118::push_frame(&mut Mmio, &buf[..len]);
        r
    }
}

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a>
        = Lan9118Rx
    where
        Self: 'a;
    type TxToken<'a>
        = Lan9118Tx
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // Register first, then look: a frame arriving in between still wakes us.
        RX_WAKER.register(cx.waker());
        if lan9118::rx_pending(&mut Mmio) == 0 {
            return None;
        }
        Some((Lan9118Rx, Lan9118Tx))
    }

    fn transmit(&mut self, _cx: &mut Context) -> Option<Self::TxToken<'_>> {
        // Each frame leaves the FIFO as soon as it is written (QEMU), so there is always room.
        Some(Lan9118Tx)
    }

    fn link_state(&mut self, _cx: &mut Context) -> LinkState {
        if lan9118::link_up(&mut Mmio) {
            LinkState::Up
        } else {
            LinkState::Down
        }
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = Capabilities::default();
        caps.max_transmission_unit = MTU;
        caps
    }

    fn hardware_address(&self) -> HardwareAddress {
        HardwareAddress::Ethernet(self.mac)
    }
}
