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

/// The driver's frame buffers, kept in a static by the caller (so the driver itself stays
/// small enough to move around).
pub struct EthBuffers {
    rx: [u8; BUF_LEN],
    tx: [u8; BUF_LEN],
}

impl Default for EthBuffers {
    fn default() -> Self {
        Self::new()
    }
}

impl EthBuffers {
    /// Zeroed buffers (usable in a `static` initialiser).
    pub const fn new() -> Self {
        Self {
            rx: [0; BUF_LEN],
            tx: [0; BUF_LEN],
        }
    }
}

/// The LAN9118 driver.
pub struct Lan9118 {
    mac: [u8; 6],
    bufs: &'static mut EthBuffers,
}

impl Lan9118 {
    /// Resets the controller, sets its MAC address and enables transmit, receive and the
    /// receive interrupt.
    pub fn new(mac: [u8; 6], bufs: &'static mut EthBuffers) -> Result<Self, EthError> {
        lan9118::bring_up(&mut Mmio, mac)?;
        irq::enable(Irq::Ethernet);
        Ok(Self { mac, bufs })
    }
}

/// Ethernet interrupt: a frame arrived. Acknowledge and wake the stack.
pub(crate) fn on_irq() {
    lan9118::ack_interrupts(&mut Mmio);
    RX_WAKER.wake();
}

/// A received frame, read out of the FIFO when consumed.
pub struct Lan9118Rx<'a> {
    buf: &'a mut [u8; BUF_LEN],
}

/// Room for one frame to send.
pub struct Lan9118Tx<'a> {
    buf: &'a mut [u8; BUF_LEN],
}

impl RxToken for Lan9118Rx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        // `receive` only hands out a token when a status is queued; a frame that turns out
        // damaged is dropped and the stack sees an empty buffer (which it ignores).
        match lan9118::pop_frame(&mut Mmio, self.buf) {
            Some(n) => f(&mut self.buf[..n]),
            None => f(&mut []),
        }
    }
}

impl TxToken for Lan9118Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MTU);
        let r = f(&mut self.buf[..len]);
        lan9118::push_frame(&mut Mmio, &self.buf[..len]);
        r
    }
}

impl embassy_net_driver::Driver for Lan9118 {
    type RxToken<'a>
        = Lan9118Rx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = Lan9118Tx<'a>
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        // Register first, then look: a frame arriving in between still wakes us.
        RX_WAKER.register(cx.waker());
        if lan9118::rx_pending(&mut Mmio) == 0 {
            return None;
        }
        let EthBuffers { rx, tx } = &mut *self.bufs;
        Some((Lan9118Rx { buf: rx }, Lan9118Tx { buf: tx }))
    }

    fn transmit(&mut self, _cx: &mut Context) -> Option<Self::TxToken<'_>> {
        // Each frame leaves the FIFO as soon as it is written (QEMU), so there is always room.
        Some(Lan9118Tx {
            buf: &mut self.bufs.tx,
        })
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
