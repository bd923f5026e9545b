//! xtask commands owned by the dataplane part (see README).

use crate::util::Result;

/// Extra CI checks of this part, run by `cargo xtask test`.
pub fn ci() -> Result {
    Ok(())
}

/// `e2e` (not built yet).
pub fn e2e(_args: &[String]) -> Result {
    Err("e2e: not built yet".into())
}

/// `bench_sync` (not built yet).
pub fn bench_sync(_args: &[String]) -> Result {
    Err("bench_sync: not built yet".into())
}
