//! xtask commands owned by the agent part (see README).

use crate::util::Result;

/// Extra CI checks of this part, run by `cargo xtask test`.
pub fn ci() -> Result {
    Ok(())
}

/// `sim` (not built yet).
pub fn sim(_args: &[String]) -> Result {
    Err("sim: not built yet".into())
}

/// `size` (not built yet).
pub fn size(_args: &[String]) -> Result {
    Err("size: not built yet".into())
}
