//! `cargo xtask test`: every check CI runs, in order, stopping at the first failure.

use crate::util::{cargo, run, Result};

/// no_std crates that must build for the management controller's target.
pub const NO_STD_CRATES: &[&str] = &["ha-proto", "ha-hal", "ha-agent"];

/// Formatting, lints, all workspace tests, the no_std crates for thumbv7m-none-eabi, then each
/// part's own suites (simulator seeds, QEMU cluster, network namespaces).
pub fn test() -> Result {
    // Works alone on a fresh machine: installs what the suites need first (idempotent).
    crate::setup::setup()?;
    if crate::util::in_ci() {
        eprintln!("test: CI=true: suites that need root, QEMU or namespaces fail, never skip");
    }
    run(cargo().args(["fmt", "--all", "--", "--check"]))?;
    crate::firmware_tasks::lint()?;
    // The tree's shape: no file over 800 lines, no undocumented import cycle.
    crate::layout::layout(&[])?;
    run(cargo().args([
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ]))?;
    run(cargo().args(["test", "--workspace"]))?;
    for krate in NO_STD_CRATES {
        run(cargo().args(["build", "-p", krate, "--target", "thumbv7m-none-eabi"]))?;
    }
    crate::proto_tasks::ci()?;
    crate::agent_tasks::ci()?;
    crate::firmware_tasks::ci()?;
    crate::dataplane_tasks::ci()?;
    crate::host_tools_tasks::ci()?;
    Ok(())
}
