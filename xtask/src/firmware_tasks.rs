//! xtask commands owned by the firmware part (see README).

use crate::util::Result;

/// Extra CI checks of this part, run by `cargo xtask test`.
pub fn ci() -> Result {
    Ok(())
}

/// `size` (not built yet).
pub fn size(_args: &[String]) -> Result {
    Err("size: not built yet".into())
}

/// `qemu` (not built yet).
pub fn qemu(_args: &[String]) -> Result {
    Err("qemu: not built yet".into())
}

/// `demo` (not built yet).
pub fn demo(_args: &[String]) -> Result {
    Err("demo: not built yet".into())
}

/// `bench_failover` (not built yet).
pub fn bench_failover(_args: &[String]) -> Result {
    Err("bench_failover: not built yet".into())
}
