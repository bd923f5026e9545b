//! Board support for ST NUCLEO-H743ZI / NUCLEO-H743ZI2 (STM32H743ZI: Cortex-M7, 2 MiB flash,
//! 1 MiB RAM, Ethernet MAC with the board's LAN8742A RMII PHY). Drivers only, all of them
//! embassy-stm32's behind the `ha-hal` traits; the HA protocol lives in `ha-proto` /
//! `ha-agent` and the wiring in the firmware binary (firmware/app, feature `nucleo-h743zi`).
//!
//! The module names and types mirror board/mps2-an385 so the firmware binary uses either
//! board through the same paths.
//!
//! | function        | peripheral            | pins (NUCLEO-144 connector)                        |
//! |-----------------|-----------------------|----------------------------------------------------|
//! | main HA link    | ETH (RMII), LAN8742A  | PA1 REF_CLK, PA2 MDIO, PC1 MDC, PA7 CRS_DV,        |
//! |                 | at PHY address 0      | PC4 RXD0, PC5 RXD1, PG11 TX_EN, PG13 TXD0,         |
//! |                 |                       | PB13 TXD1: all wired to the on-board RJ45 (CN14)   |
//! | host link       | USART3                | PD8 TX, PD9 RX: the ST-LINK virtual COM port (USB) |
//! | backup HA link  | USART2                | PD5 TX (CN9 pin 6, D53), PD6 RX (CN9 pin 4, D52)   |
//! | sensor bridge   | USART6 (RX used)      | PG9 RX (CN10, D0), PG14 TX (CN10, D1)              |
//! | status LED      | GPIO                  | PB0: LD1 (green)                                   |
//! | spare LEDs      | GPIO                  | PE1: LD2 (yellow), PB14: LD3 (red)                 |
//! | time base       | TIM2                  | embassy-stm32's time driver, 1 MHz ticks           |
//! | log             | defmt over RTT        | SWD (the ST-LINK, read by `probe-rs run`)          |
//! | boot counter    | flash bank 2, sect. 5-6 | `0x081A_0000`, see [`bootcount`]                 |
//! | configuration   | flash bank 2, sect. 7 | `0x081E_0000`, see [`config`]                      |
#![no_std]
#![warn(missing_docs)]

pub mod bootcount;
pub mod clocks;
pub mod config;
pub mod eth;
pub mod executor;
pub mod irq;
pub mod leds;
pub mod sensors;
pub mod uart;

use defmt_rtt as _; // the defmt global logger: RTT, read over SWD by `probe-rs run`
use embassy_stm32::gpio::{Level, Output, Speed};
use embassy_stm32::usart::BufferedUart;
use static_cell::ConstStaticCell;

/// The board's name, as the firmware reports it.
pub const NAME: &str = "nucleo-h743zi";

/// The board's devices, handed out once by [`init`].
pub struct Board {
    /// USART3 on the ST-LINK virtual COM port: the host link to the main CPU.
    pub host_uart: uart::Uart,
    /// USART2: the backup HA link.
    pub backup_uart: uart::Uart,
    /// USART6: the sensor bridge from the board's sensor controller.
    pub sensors: sensors::SensorBridge,
    /// LD1-LD3.
    pub leds: leds::Leds,
}

/// Brings the board up: clocks (400 MHz), the time driver, the boot counter (incremented
/// once, see [`config::boot_epoch`]), the UARTs with their interrupt-driven buffers and the
/// LEDs; keeps the Ethernet peripherals for [`eth::Stm32Eth::new`]. Returns `None` when
/// called a second time.
pub fn init() -> Option<Board> {
    static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, core::sync::atomic::Ordering::AcqRel) {
        return None;
    }
    let p = embassy_stm32::init(clocks::config());
    bootcount::init(embassy_stm32::flash::Flash::new_blocking(p.FLASH));
    eth::keep(eth::EthParts {
        eth: p.ETH,
        sma: p.ETH_SMA,
        ref_clk: p.PA1,
        mdio: p.PA2,
        mdc: p.PC1,
        crs: p.PA7,
        rx_d0: p.PC4,
        rx_d1: p.PC5,
        tx_en: p.PG11,
        tx_d0: p.PG13,
        tx_d1: p.PB13,
    });

    static HOST_TX: ConstStaticCell<[u8; uart::TX_BUF]> = ConstStaticCell::new([0; uart::TX_BUF]);
    static HOST_RX: ConstStaticCell<[u8; uart::RX_BUF]> = ConstStaticCell::new([0; uart::RX_BUF]);
    static BACKUP_TX: ConstStaticCell<[u8; uart::TX_BUF]> = ConstStaticCell::new([0; uart::TX_BUF]);
    static BACKUP_RX: ConstStaticCell<[u8; uart::RX_BUF]> = ConstStaticCell::new([0; uart::RX_BUF]);
    static SENSOR_TX: ConstStaticCell<[u8; sensors::TX_BUF]> =
        ConstStaticCell::new([0; sensors::TX_BUF]);
    static SENSOR_RX: ConstStaticCell<[u8; sensors::RX_BUF]> =
        ConstStaticCell::new([0; sensors::RX_BUF]);

    let host = BufferedUart::new(
        p.USART3,
        p.PD9,
        p.PD8,
        HOST_TX.take(),
        HOST_RX.take(),
        irq::Irqs,
        uart::config(uart::LINK_BAUD),
    );
    let backup = BufferedUart::new(
        p.USART2,
        p.PD6,
        p.PD5,
        BACKUP_TX.take(),
        BACKUP_RX.take(),
        irq::Irqs,
        uart::config(uart::LINK_BAUD),
    );
    let sensor = BufferedUart::new(
        p.USART6,
        p.PG9,
        p.PG14,
        SENSOR_TX.take(),
        SENSOR_RX.take(),
        irq::Irqs,
        uart::config(sensors::BAUD),
    );
    // The configurations are constants that the clock tree supports (checked by
    // embassy-stm32 at run time): an error here is a build mistake, reported before anything runs.
    let host = defmt::unwrap!(host, "USART3 (host link) configuration");
    let backup = defmt::unwrap!(backup, "USART2 (backup link) configuration");
    let sensor = defmt::unwrap!(sensor, "USART6 (sensor bridge) configuration");

    Some(Board {
        host_uart: uart::Uart::new(host),
        backup_uart: uart::Uart::new(backup),
        sensors: sensors::SensorBridge::new(sensor),
        leds: leds::Leds {
            status: Output::new(p.PB0, Level::Low, Speed::Low),
            yellow: Output::new(p.PE1, Level::Low, Speed::Low),
            red: Output::new(p.PB14, Level::Low, Speed::Low),
        },
    })
}

/// Stack usage, from the pattern cortex-m-rt paints over the stack at reset.
pub mod stack {
    extern "C" {
        static _stack_start: u32;
        static _stack_end: u32;
    }

    /// Bytes of stack reserved (memory.x).
    pub fn size() -> usize {
        let (start, end) = bounds();
        start - end
    }

    fn bounds() -> (usize, usize) {
        // Linker symbols defined in memory.x; only their addresses are taken (no read).
        (
            core::ptr::addr_of!(_stack_start) as usize,
            core::ptr::addr_of!(_stack_end) as usize,
        )
    }

    /// Deepest stack use so far (bytes): the stack grows down from `_stack_start`; words
    /// never written still hold cortex-m-rt's paint value.
    pub fn high_water() -> usize {
        let (start, end) = bounds();
        let mut addr = end;
        while addr < start {
            // SAFETY: `addr` is a word-aligned address inside the stack region reserved by
            // memory.x (AXI SRAM, always mapped).
            let w = unsafe { core::ptr::read_volatile(addr as *const u32) };
            if w != cortex_m_rt::STACK_PAINT_VALUE {
                break;
            }
            addr += 4;
        }
        start - addr
    }
}
