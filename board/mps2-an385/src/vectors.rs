//! The device part of AN385's vector table: each interrupt the board uses dispatched to its
//! driver (the interrupt numbers are `irq.rs`'s).

use crate::irq::Irq;

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
