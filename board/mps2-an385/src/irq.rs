//! AN385's device interrupt numbers and masking them in the NVIC: what the drivers need.
//! The vector table that dispatches to the drivers is `vectors.rs` (so drivers depend on
//! this module and the table on the drivers, never both ways).

use cortex_m::interrupt::InterruptNumber;

/// Device interrupts the board's drivers use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum Irq {
    /// UART0 receive.
    Uart0Rx = 0,
    /// UART1 receive (host link).
    Uart1Rx = 2,
    /// UART1 transmit (host link).
    Uart1Tx = 3,
    /// UART2 receive (backup link).
    Uart2Rx = 4,
    /// UART2 transmit (backup link).
    Uart2Tx = 5,
    /// CMSDK TIMER0 (time alarm).
    Timer0 = 8,
    /// CMSDK TIMER1 (free-running time base).
    Timer1 = 9,
    /// LAN9118 Ethernet.
    Ethernet = 13,
    /// UART3 receive (sensor bridge).
    Uart3Rx = 18,
    /// UART3 transmit (sensor bridge).
    Uart3Tx = 19,
}

// SAFETY: every variant is a valid AN385 device interrupt number (< 32, see the table below).
unsafe impl InterruptNumber for Irq {
    fn number(self) -> u16 {
        self as u16
    }
}

/// Unmasks `irq` in the NVIC.
pub fn enable(irq: Irq) {
    // SAFETY: the handler for every `Irq` is in the vector table (`vectors.rs`) and only touches
    // state guarded by critical sections or atomics, so unmasking cannot break a critical
    // section of ours.
    unsafe { cortex_m::peripheral::NVIC::unmask(irq) }
}

/// Masks `irq` in the NVIC (a pending request stays pending until it is unmasked).
pub fn disable(irq: Irq) {
    cortex_m::peripheral::NVIC::mask(irq);
}
