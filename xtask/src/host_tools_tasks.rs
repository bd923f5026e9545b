//! xtask commands owned by the host_tools part (see README).

use crate::util::Result;

/// Extra CI checks of this part, run by `cargo xtask test`.
pub fn ci() -> Result {
    Ok(())
}
