//! CMSDK APB UART: transmit that waits for the transmit interrupt when the register is full,
//! interrupt-driven receive into a ring (an embassy-sync `Pipe`), exposed as
//! `embedded-io-async` `Read` / `Write`.
//!
//! Transmit never busy-polls the status register: under QEMU every register access takes
//! the emulator's global lock, and a guest polling in a tight loop can starve QEMU's main
//! loop, which is the very thread that would drain the register (and run the timers and the
//! monitor) — a livelock seen in CI as a member that stopped answering after its peer died.
//! On hardware, waiting on the interrupt also leaves the core asleep while a byte shifts out.

use core::convert::Infallible;
use core::sync::atomic::{AtomicBool, Ordering};

use core::future::poll_fn;
use core::task::Poll;

use embassy_sync::blocking_mutex::raw::CriticalSectionRawMutex;
use embassy_sync::pipe::Pipe;
use embassy_sync::waitqueue::AtomicWaker;
use embedded_io_async::{ErrorType, Read, Write};

use ha_board_drivers::cmsdk_uart::{self, RxDrain, RxRing};
use ha_board_drivers::Regs;

use crate::irq::{self, Irq};

/// 115200 baud (QEMU ignores the rate but requires a divider of at least 16).
const BAUD: u32 = 115_200;

/// Receive ring per UART. Receive is flow-controlled (when the ring is full the interrupt is
/// masked and the byte stays in the UART, so QEMU holds back the rest), so the ring only
/// has to cover the bytes that arrive between two polls of the reading task.
pub const RX_RING: usize = 256;

/// The UARTs with a receive path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Port {
    /// UART1 at `0x4000_5000`.
    Uart1,
    /// UART2 at `0x4000_6000`.
    Uart2,
    /// UART3 at `0x4000_7000`.
    Uart3,
}

const UART0: usize = 0x4000_4000;

static RINGS: [Pipe<CriticalSectionRawMutex, RX_RING>; 3] = [Pipe::new(), Pipe::new(), Pipe::new()];

/// The task waiting for each UART's transmit register to empty.
static TX_WAKERS: [AtomicWaker; 3] = [AtomicWaker::new(), AtomicWaker::new(), AtomicWaker::new()];

impl Port {
    fn base(self) -> usize {
        match self {
            Port::Uart1 => 0x4000_5000,
            Port::Uart2 => 0x4000_6000,
            Port::Uart3 => 0x4000_7000,
        }
    }

    fn index(self) -> usize {
        match self {
            Port::Uart1 => 0,
            Port::Uart2 => 1,
            Port::Uart3 => 2,
        }
    }

    fn irq(self) -> Irq {
        match self {
            Port::Uart1 => Irq::Uart1Rx,
            Port::Uart2 => Irq::Uart2Rx,
            Port::Uart3 => Irq::Uart3Rx,
        }
    }

    fn tx_irq(self) -> Irq {
        match self {
            Port::Uart1 => Irq::Uart1Tx,
            Port::Uart2 => Irq::Uart2Tx,
            Port::Uart3 => Irq::Uart3Tx,
        }
    }
}

/// One UART's registers, by volatile access at its base address.
struct Mmio(usize);

impl Regs for Mmio {
    fn read(&mut self, reg: usize) -> u32 {
        // SAFETY: `self.0` is one of this board's CMSDK UARTs (always mapped) and `reg` one
        // of its register offsets; reads have no side effect except DATA, read only by the
        // RX handler.
        unsafe { core::ptr::read_volatile((self.0 + reg) as *const u32) }
    }

    fn write(&mut self, reg: usize, value: u32) {
        // SAFETY: as in `read`; each UART's registers are written only by its owner (`Uart`,
        // its RX handler for INTCLEAR, or the logger for UART0).
        unsafe { core::ptr::write_volatile((self.0 + reg) as *mut u32, value) }
    }
}

/// Polls of a full transmit register before the log gives up on the rest of a frame. The
/// log is written with interrupts masked, so it must not wait long for a host that stopped
/// reading UART0; QEMU normally empties the register at once.
const LOG_SPIN_LIMIT: u32 = 1000;

/// Set when the log line is stalled: the rest of the current frame is dropped (the decoder
/// resynchronises on the next frame).
static LOG_STALLED: AtomicBool = AtomicBool::new(false);

/// Enables UART0 for transmit only (the defmt log).
pub(crate) fn init_log_uart() {
    cmsdk_uart::init_tx_only(&mut Mmio(UART0), crate::SYSCLK_HZ, BAUD);
}

/// Starts a log frame: try writing again even if the last frame was cut short.
pub(crate) fn log_frame_start() {
    LOG_STALLED.store(false, Ordering::Relaxed);
}

/// Writes bytes to UART0, waiting a bounded time while its transmit register is full.
pub(crate) fn log_write(bytes: &[u8]) {
    for &b in bytes {
        if LOG_STALLED.load(Ordering::Relaxed) {
            return;
        }
        let mut spins = 0;
        while !cmsdk_uart::try_send(&mut Mmio(UART0), b) {
            spins += 1;
            if spins > LOG_SPIN_LIMIT {
                LOG_STALLED.store(true, Ordering::Relaxed);
                return;
            }
        }
    }
}

/// A CMSDK UART with an interrupt-fed receive ring.
pub struct Uart {
    port: Port,
}

impl Uart {
    pub(crate) fn init(port: Port) -> Self {
        // The transmit interrupt is raised each time the register empties; it stays masked
        // in the NVIC except while a writer waits (`UartTx::write`).
        cmsdk_uart::init(&mut Mmio(port.base()), crate::SYSCLK_HZ, BAUD);
        irq::disable(port.tx_irq());
        irq::enable(port.irq());
        Self { port }
    }

    /// Splits into a receiver and a transmitter, for use from different tasks.
    pub fn split(self) -> (UartRx, UartTx) {
        (UartRx { port: self.port }, UartTx { port: self.port })
    }
}

/// The receive half of a [`Uart`].
pub struct UartRx {
    port: Port,
}

/// The transmit half of a [`Uart`].
pub struct UartTx {
    port: Port,
}

impl ErrorType for UartRx {
    type Error = Infallible;
}

impl ErrorType for UartTx {
    type Error = Infallible;
}

impl Read for UartRx {
    async fn read(&mut self, buf: &mut [u8]) -> Result<usize, Infallible> {
        if buf.is_empty() {
            return Ok(0);
        }
        let n = RINGS[self.port.index()].read(buf).await;
        // There is room again: let the receive interrupt move the held-back bytes.
        irq::enable(self.port.irq());
        Ok(n)
    }
}

impl Write for UartTx {
    async fn write(&mut self, buf: &[u8]) -> Result<usize, Infallible> {
        let port = self.port;
        let mut regs = Mmio(port.base());
        for &b in buf {
            while !cmsdk_uart::try_send(&mut regs, b) {
                tx_empty(port).await;
            }
        }
        Ok(buf.len())
    }
}

/// Waits (asleep) until the transmit register of `port` is empty.
async fn tx_empty(port: Port) {
    let mut regs = Mmio(port.base());
    poll_fn(|cx| {
        if cmsdk_uart::tx_ready(&mut regs) {
            return Poll::Ready(());
        }
        TX_WAKERS[port.index()].register(cx.waker());
        // Forget an emptying that happened before (its status is stale), then listen.
        cmsdk_uart::ack_tx(&mut regs);
        irq::enable(port.tx_irq());
        // Emptied between the first check and the clear: nothing will interrupt, so look.
        if cmsdk_uart::tx_ready(&mut regs) {
            irq::disable(port.tx_irq());
            return Poll::Ready(());
        }
        Poll::Pending
    })
    .await
}

/// Transmit interrupt of `port` (the register emptied while a writer waits): mask it again,
/// clear it and wake the writer.
pub(crate) fn on_tx_irq(port: Port) {
    irq::disable(port.tx_irq());
    cmsdk_uart::ack_tx(&mut Mmio(port.base()));
    TX_WAKERS[port.index()].wake();
}

/// Receive interrupt of `port`: move every received byte into its ring. When the ring is
/// full, mask the interrupt and leave the byte (and its interrupt status) in the UART: the
/// reader unmasks it after taking bytes out, and QEMU holds back the rest meanwhile.
pub(crate) fn on_rx_irq(port: Port) {
    let mut ring = Ring(&RINGS[port.index()]);
    if cmsdk_uart::drain_rx(&mut Mmio(port.base()), &mut ring) == RxDrain::RingFull {
        irq::disable(port.irq());
    }
}

/// A UART's receive ring, as the register-level drain fills it.
struct Ring<'a>(&'a Pipe<CriticalSectionRawMutex, RX_RING>);

impl RxRing for Ring<'_> {
    fn has_room(&self) -> bool {
        self.0.free_capacity() != 0
    }

    fn push(&mut self, byte: u8) {
        // Cannot fail: there was free capacity and only the RX handler writes the ring.
        let _ = self.0.try_write(&[byte]);
    }
}
