//! xtask commands owned by the proto part (see README).

use crate::util::Result;

/// Extra CI checks of this part, run by `cargo xtask test`.
pub fn ci() -> Result {
    Ok(())
}

/// `fuzz` (not built yet).
pub fn fuzz(_args: &[String]) -> Result {
    Err("fuzz: not built yet".into())
}

/// `bench` (not built yet).
pub fn bench(_args: &[String]) -> Result {
    Err("bench: not built yet".into())
}
