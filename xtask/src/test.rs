//! `cargo xtask test`: every check CI runs, in order, stopping at the first failure.

use crate::util::{cargo, run, Result};

/// no_std crates that must build for the management controller's target.
pub const NO_STD_CRATES: &[&str] = &[
    "ha-proto",
    "ha-hal",
    "ha-agent",
    "ha-board-drivers",
    "ha-board-mem",
];

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
    disk_note("clippy");
    run(cargo().args(["test", "--workspace"]))?;
    disk_note("workspace tests");
    for krate in NO_STD_CRATES {
        run(cargo().args(["build", "-p", krate, "--target", "thumbv7m-none-eabi"]))?;
    }
    crate::proto_tasks::ci()?;
    crate::agent_tasks::ci()?;
    crate::firmware_tasks::ci()?;
    disk_note("firmware suites");
    crate::dataplane_tasks::ci()?;
    disk_note("data path suites");
    crate::host_tools_tasks::ci()?;
    disk_note("host tools suites");
    Ok(())
}

/// Prints the free disk space after a stage, so a CI run that runs out of disk shows which
/// stage grew the target directory (one did: "No space left on device" in the workspace
/// tests). Only a note: a failing `df` is ignored.
fn disk_note(stage: &str) {
    let out = std::process::Command::new("df")
        .args(["-h", "--output=avail", "."])
        .output();
    if let Ok(out) = out {
        let text = String::from_utf8_lossy(&out.stdout);
        if let Some(avail) = text.lines().nth(1) {
            eprintln!("test: {stage} done; disk free {}", avail.trim());
        }
    }
}
