//! LAN9118 Ethernet controller (QEMU's model of the AN385's LAN9220) as an
//! `embassy-net-driver` driver: interrupt-driven receive (the RX status FIFO level
//! interrupt wakes the stack), programmed-I/O transmit.
//!
//! Register semantics follow the SMSC LAN9118 datasheet as QEMU implements them
//! (`hw/net/lan9118.c`): 32-bit accesses; RX data FIFO at 0x00, TX data FIFO at 0x20,
//! RX status FIFO at 0x40, TX status FIFO at 0x48; MAC registers reached through
//! MAC_CSR_CMD/DATA.

use core::task::Context;

use embassy_net_driver::{Capabilities, HardwareAddress, LinkState, RxToken, TxToken};
use embassy_sync::waitqueue::AtomicWaker;

use crate::irq::{self, Irq};

const BASE: usize = 0x4020_0000;

const RX_DATA: usize = 0x00;
const TX_DATA: usize = 0x20;
const RX_STATUS: usize = 0x40;
const TX_STATUS: usize = 0x48;
const ID_REV: usize = 0x50;
const IRQ_CFG: usize = 0x54;
const INT_STS: usize = 0x58;
const INT_EN: usize = 0x5C;
const BYTE_TEST: usize = 0x64;
const RX_CFG: usize = 0x6C;
const TX_CFG: usize = 0x70;
const HW_CFG: usize = 0x74;
const RX_FIFO_INF: usize = 0x7C;
const TX_FIFO_INF: usize = 0x80;
const PMT_CTRL: usize = 0x84;
const MAC_CSR_CMD: usize = 0xA4;
const MAC_CSR_DATA: usize = 0xA8;

/// IRQ_CFG: output enabled, active high, push-pull (QEMU drives the line high on interrupt).
const IRQ_CFG_ENABLE_PUSH_PULL_HIGH: u32 = (1 << 8) | (1 << 4) | 1;
/// INT_STS/INT_EN: RX status FIFO level (at least one received frame).
const INT_RSFL: u32 = 1 << 3;
const HW_CFG_SRST: u32 = 1;
const PMT_READY: u32 = 1;
const BYTE_TEST_VALUE: u32 = 0x8765_4321;
/// TX_CFG: transmitter on, TX status FIFO may overrun (statuses are not needed).
const TX_CFG_ON_ALLOW_OVERRUN: u32 = (1 << 1) | (1 << 2);

const MAC_CR: u32 = 1;
const MAC_ADDRH: u32 = 2;
const MAC_ADDRL: u32 = 3;
const MAC_MII_ACC: u32 = 6;
const MAC_MII_DATA: u32 = 7;
const MAC_CSR_BUSY: u32 = 1 << 31;
const MAC_CSR_READ: u32 = 1 << 30;
/// MAC_CR: transmit and receive enabled; own address and broadcast only.
const MAC_CR_TXEN_RXEN: u32 = (1 << 3) | (1 << 2);
/// PHY basic status register, link bit.
const PHY_BSR: u32 = 1;
const PHY_LINK: u32 = 1 << 2;
const PHY_ADDR: u32 = 1;

/// TX command A: first and last segment of a frame.
const TX_CMD_A_FIRST_LAST: u32 = (1 << 13) | (1 << 12);
/// RX status: error summary.
const RX_STS_ERROR: u32 = 1 << 15;

/// Largest Ethernet frame handled (without FCS), bytes.
pub const MTU: usize = 1514;
/// Frame buffer: the MTU rounded up to whole FIFO words, plus the 4-byte FCS QEMU appends.
const BUF_LEN: usize = 1536;

static RX_WAKER: AtomicWaker = AtomicWaker::new();

/// Why the controller could not be brought up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum EthError {
    /// BYTE_TEST did not read back the fixed pattern: no LAN9118 at the address.
    NotPresent,
    /// The controller did not become ready after a soft reset.
    NotReady,
}

fn read(reg: usize) -> u32 {
    // SAFETY: BASE is the LAN9118 of this board (always mapped); `reg` is one of its register
    // offsets. FIFO pops (RX data/status) happen only in the driver, which `Lan9118` owns
    // exclusively.
    unsafe { core::ptr::read_volatile((BASE + reg) as *const u32) }
}

fn write(reg: usize, value: u32) {
    // SAFETY: as in `read`; only the driver and its interrupt handler (INT_EN/INT_STS) write.
    unsafe { core::ptr::write_volatile((BASE + reg) as *mut u32, value) }
}

fn mac_wait() {
    // QEMU completes MAC CSR accesses at once; real silicon needs a few cycles.
    for _ in 0..10_000 {
        if read(MAC_CSR_CMD) & MAC_CSR_BUSY == 0 {
            return;
        }
    }
}

fn mac_write(reg: u32, value: u32) {
    mac_wait();
    write(MAC_CSR_DATA, value);
    write(MAC_CSR_CMD, MAC_CSR_BUSY | reg);
    mac_wait();
}

fn mac_read(reg: u32) -> u32 {
    mac_wait();
    write(MAC_CSR_CMD, MAC_CSR_BUSY | MAC_CSR_READ | reg);
    mac_wait();
    read(MAC_CSR_DATA)
}

fn phy_read(reg: u32) -> u32 {
    mac_write(MAC_MII_ACC, (PHY_ADDR << 11) | (reg << 6));
    mac_read(MAC_MII_DATA) & 0xFFFF
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
        if read(BYTE_TEST) != BYTE_TEST_VALUE {
            return Err(EthError::NotPresent);
        }
        let _ = read(ID_REV);
        write(HW_CFG, HW_CFG_SRST);
        let mut ready = false;
        for _ in 0..100_000 {
            if read(HW_CFG) & HW_CFG_SRST == 0 && read(PMT_CTRL) & PMT_READY != 0 {
                ready = true;
                break;
            }
        }
        if !ready {
            return Err(EthError::NotReady);
        }
        mac_write(
            MAC_ADDRL,
            u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
        );
        mac_write(MAC_ADDRH, u32::from(mac[4]) | (u32::from(mac[5]) << 8));
        write(RX_CFG, 0);
        write(TX_CFG, TX_CFG_ON_ALLOW_OVERRUN);
        mac_write(MAC_CR, MAC_CR_TXEN_RXEN);
        write(INT_STS, u32::MAX);
        write(INT_EN, INT_RSFL);
        write(IRQ_CFG, IRQ_CFG_ENABLE_PUSH_PULL_HIGH);
        irq::enable(Irq::Ethernet);
        Ok(Self { mac, bufs })
    }

    /// Frames waiting in the RX status FIFO.
    fn rx_pending() -> u32 {
        (read(RX_FIFO_INF) >> 16) & 0xFF
    }
}

/// Ethernet interrupt: a frame arrived. Acknowledge and wake the stack.
pub(crate) fn on_irq() {
    let sts = read(INT_STS);
    write(INT_STS, sts);
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

/// Pops one frame: returns its length without FCS, or `None` when it is damaged or too long
/// (it is drained from the FIFO either way).
fn pop_frame(buf: &mut [u8; BUF_LEN]) -> Option<usize> {
    let status = read(RX_STATUS);
    let len_with_fcs = ((status >> 16) & 0x3FFF) as usize;
    let words = len_with_fcs.div_ceil(4);
    let ok = status & RX_STS_ERROR == 0 && len_with_fcs >= 4 + 14 && words * 4 <= BUF_LEN;
    for i in 0..words {
        let w = read(RX_DATA).to_le_bytes();
        if let Some(dst) = buf.get_mut(i * 4..i * 4 + 4) {
            dst.copy_from_slice(&w);
        }
    }
    ok.then(|| len_with_fcs - 4)
}

impl RxToken for Lan9118Rx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, f: F) -> R {
        // `receive` only hands out a token when a status is queued; a frame that turns out
        // damaged is dropped and the stack sees an empty buffer (which it ignores).
        match pop_frame(self.buf) {
            Some(n) => f(&mut self.buf[..n]),
            None => f(&mut []),
        }
    }
}

impl TxToken for Lan9118Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let len = len.min(MTU);
        let r = f(&mut self.buf[..len]);
        write(TX_DATA, TX_CMD_A_FIRST_LAST | len as u32);
        write(TX_DATA, ((len as u32) << 16) | len as u32);
        for chunk in self.buf[..len].chunks(4) {
            let mut w = [0u8; 4];
            w[..chunk.len()].copy_from_slice(chunk);
            write(TX_DATA, u32::from_le_bytes(w));
        }
        // Drop the status word (QEMU queues one per frame; it is not needed).
        if (read(TX_FIFO_INF) >> 16) & 0xFF != 0 {
            let _ = read(TX_STATUS);
        }
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
        if Self::rx_pending() == 0 {
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
        if phy_read(PHY_BSR) & PHY_LINK != 0 {
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
