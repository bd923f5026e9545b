//! The device interrupt vector table of AN385 and NVIC numbers.

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
    // SAFETY: the handler for every `Irq` is in the vector table below and only touches
    // state guarded by critical sections or atomics, so unmasking cannot break a critical
    // section of ours.
    unsafe { cortex_m::peripheral::NVIC::unmask(irq) }
}

/// Masks `irq` in the NVIC (a pending request stays pending until it is unmasked).
pub fn disable(irq: Irq) {
    cortex_m::peripheral::NVIC::mask(irq);
}

/// Number of device interrupt vectors installed (AN385 uses 0..=31).
const VECTORS: usize = 32;

type Handler = unsafe extern "C" fn();

extern "C" fn unused_irq() {
    // An interrupt nobody enabled: ignore it (return), it cannot fire again unless enabled.
}

extern "C" fn uart1_rx() {
    crate::uart::on_rx_irq(crate::uart::Port::Uart1);
}

extern "C" fn uart2_rx() {
    crate::uart::on_rx_irq(crate::uart::Port::Uart2);
}

extern "C" fn uart3_rx() {
    crate::uart::on_rx_irq(crate::uart::Port::Uart3);
}

extern "C" fn uart1_tx() {
    crate::uart::on_tx_irq(crate::uart::Port::Uart1);
}

extern "C" fn uart2_tx() {
    crate::uart::on_tx_irq(crate::uart::Port::Uart2);
}

extern "C" fn uart3_tx() {
    crate::uart::on_tx_irq(crate::uart::Port::Uart3);
}

extern "C" fn timer0() {
    crate::time::on_alarm_irq();
}

extern "C" fn ethernet() {
    crate::eth::on_irq();
}

extern "C" fn timer1() {
    crate::time::on_wrap_irq();
}

const fn table() -> [Handler; VECTORS] {
    let mut t: [Handler; VECTORS] = [unused_irq; VECTORS];
    t[Irq::Uart1Rx as usize] = uart1_rx;
    t[Irq::Uart2Rx as usize] = uart2_rx;
    t[Irq::Uart3Rx as usize] = uart3_rx;
    t[Irq::Uart1Tx as usize] = uart1_tx;
    t[Irq::Uart2Tx as usize] = uart2_tx;
    t[Irq::Uart3Tx as usize] = uart3_tx;
    t[Irq::Timer0 as usize] = timer0;
    t[Irq::Timer1 as usize] = timer1;
    t[Irq::Ethernet as usize] = ethernet;
    t
}

/// The device part of the vector table, placed by cortex-m-rt's linker script right after
/// the 16 system exception vectors.
#[link_section = ".vector_table.interrupts"]
#[no_mangle]
#[used]
pub static __INTERRUPTS: [Handler; VECTORS] = table();
