//! Board simulator: serves fan, PSU, disk, TPM and module states to a QEMU member over its sensor UART.

fn main() {}
