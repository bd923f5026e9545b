//! The main HA link's Ethernet: embassy-stm32's STM32H7 MAC driver (RMII, DMA descriptor
//! rings) with its generic PHY driver for the board's LAN8742A, as an `embassy-net-driver`.
//!
//! [`Stm32Eth::new`] first checks that the PHY answers on MDIO with the LAN8742A's
//! identifier: embassy's PHY reset waits forever for a PHY that never clears its reset bit
//! (an absent one reads all ones), so a missing or different PHY is reported as a typed error
//! before the driver is built.

use core::cell::RefCell;
use core::task::Context;

use critical_section::Mutex;
use embassy_net_driver::{Capabilities, Driver, HardwareAddress, LinkState};
use embassy_stm32::eth::{
    Ethernet, GenericPhy, PacketQueue, RxToken, Sma, StationManagement, TxToken,
};
use embassy_stm32::peripherals::{ETH, ETH_SMA, PA1, PA2, PA7, PB13, PC1, PC4, PC5, PG11, PG13};
use embassy_stm32::Peri;

use crate::irq::Irqs;

/// Largest Ethernet frame handled (without FCS), as on board/mps2-an385.
pub const MTU: usize = 1514;
/// Frames queued for transmission (DMA descriptors and buffers).
pub const TX_FRAMES: usize = 4;
/// Frames the MAC can receive before the stack reads them.
pub const RX_FRAMES: usize = 4;
/// MDIO address of the LAN8742A on the NUCLEO-144 boards (its PHYAD pins strapped low).
pub const PHY_ADDR: u8 = 0;
/// The LAN8742A's identifier (registers 2 and 3), revision bits (the low 4) masked off.
pub const LAN8742A_ID: u32 = 0x0007_C130;
const PHY_ID_MASK: u32 = 0xFFFF_FFF0;

/// Why the Ethernet did not come up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum EthError {
    /// [`crate::init`] has not run, or the driver was built already.
    NotAvailable,
    /// The PHY at [`PHY_ADDR`] is not a LAN8742A (`0xFFFF_FFFF`: nothing answers on MDIO).
    InvalidPhyId {
        /// [`LAN8742A_ID`].
        expected: u32,
        /// What registers 2 and 3 read.
        actual: u32,
    },
}

/// DMA descriptors and frame buffers (static storage, in AXI SRAM where the DMA reaches).
pub struct EthBuffers {
    queue: PacketQueue<TX_FRAMES, RX_FRAMES>,
}

impl Default for EthBuffers {
    fn default() -> Self {
        Self::new()
    }
}

impl EthBuffers {
    /// Zeroed buffers, for a `static`.
    pub const fn new() -> Self {
        Self {
            queue: PacketQueue::new(),
        }
    }
}

/// The peripherals and pins of the Ethernet, kept by [`crate::init`] until the firmware builds
/// the driver with its MAC address.
pub struct EthParts {
    /// The MAC and its DMA.
    pub eth: Peri<'static, ETH>,
    /// The MDIO station management.
    pub sma: Peri<'static, ETH_SMA>,
    /// RMII REF_CLK (50 MHz from the PHY).
    pub ref_clk: Peri<'static, PA1>,
    /// MDIO.
    pub mdio: Peri<'static, PA2>,
    /// MDC.
    pub mdc: Peri<'static, PC1>,
    /// RMII CRS_DV.
    pub crs: Peri<'static, PA7>,
    /// RMII RXD0.
    pub rx_d0: Peri<'static, PC4>,
    /// RMII RXD1.
    pub rx_d1: Peri<'static, PC5>,
    /// RMII TX_EN.
    pub tx_en: Peri<'static, PG11>,
    /// RMII TXD0.
    pub tx_d0: Peri<'static, PG13>,
    /// RMII TXD1.
    pub tx_d1: Peri<'static, PB13>,
}

static PARTS: Mutex<RefCell<Option<EthParts>>> = Mutex::new(RefCell::new(None));

/// Keeps the Ethernet's peripherals for [`Stm32Eth::new`].
pub(crate) fn keep(parts: EthParts) {
    critical_section::with(|cs| *PARTS.borrow_ref_mut(cs) = Some(parts));
}

type Inner = Ethernet<'static, ETH, GenericPhy<Sma<'static, ETH_SMA>>>;

/// The Ethernet as the network stack's device.
pub struct Stm32Eth {
    inner: Inner,
}

impl Stm32Eth {
    /// Checks the PHY, resets it and the MAC, starts auto-negotiation and the DMA, and returns
    /// the device with the station address `mac`. Link state is polled from the PHY every
    /// 500 ms (embassy's generic PHY driver).
    pub fn new(mac: [u8; 6], bufs: &'static mut EthBuffers) -> Result<Self, EthError> {
        let parts = critical_section::with(|cs| PARTS.borrow_ref_mut(cs).take())
            .ok_or(EthError::NotAvailable)?;
        let mut sma = Sma::new(parts.sma, parts.mdio, parts.mdc);
        let actual =
            (u32::from(sma.smi_read(PHY_ADDR, 2)) << 16) | u32::from(sma.smi_read(PHY_ADDR, 3));
        if actual & PHY_ID_MASK != LAN8742A_ID {
            return Err(EthError::InvalidPhyId {
                expected: LAN8742A_ID,
                actual,
            });
        }
        let inner = Ethernet::new_with_phy(
            &mut bufs.queue,
            parts.eth,
            Irqs,
            parts.ref_clk,
            parts.crs,
            parts.rx_d0,
            parts.rx_d1,
            parts.tx_d0,
            parts.tx_d1,
            parts.tx_en,
            mac,
            GenericPhy::new(sma, PHY_ADDR),
        );
        Ok(Self { inner })
    }
}

// The device is embassy-stm32's; the wrapper only gives it the constructor above.
impl Driver for Stm32Eth {
    type RxToken<'a>
        = RxToken<'a, 'static>
    where
        Self: 'a;
    type TxToken<'a>
        = TxToken<'a, 'static>
    where
        Self: 'a;

    fn receive(&mut self, cx: &mut Context) -> Option<(Self::RxToken<'_>, Self::TxToken<'_>)> {
        self.inner.receive(cx)
    }

    fn transmit(&mut self, cx: &mut Context) -> Option<Self::TxToken<'_>> {
        self.inner.transmit(cx)
    }

    fn link_state(&mut self, cx: &mut Context) -> LinkState {
        self.inner.link_state(cx)
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn hardware_address(&self) -> HardwareAddress {
        self.inner.hardware_address()
    }
}
