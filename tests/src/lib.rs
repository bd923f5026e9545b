//! End-to-end tests: QEMU clusters and network-namespace TCP survival.
//!
//! The QEMU cluster tests live in `tests/qemu_cluster.rs`; this library holds what they share.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where the release firmware lands under a cargo target directory.
const ELF_IN_TARGET: &str = "thumbv7m-none-eabi/release/ha-firmware";

/// The firmware ELF the QEMU tests boot: `$HA_FIRMWARE_ELF` (set by `cargo xtask test`), else
/// an existing release build (`$CARGO_TARGET_DIR` or the firmware crate's own target), else
/// one built now into `<scratch>/firmware` (pass the integration test's
/// `CARGO_TARGET_TMPDIR`; its own target directory, since the running `cargo test` holds the
/// lock of the workspace's). `None` only when that build fails outside
/// CI; with `CI=true` it is a failure (the suite runs or fails in CI, never skips).
pub fn firmware_elf(scratch: &Path) -> Option<PathBuf> {
    static ELF: OnceLock<Option<PathBuf>> = OnceLock::new();
    ELF.get_or_init(|| find_or_build(scratch)).clone()
}

fn find_or_build(scratch: &Path) -> Option<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let candidates = [
        std::env::var_os("HA_FIRMWARE_ELF").map(PathBuf::from),
        std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join(ELF_IN_TARGET)),
        Some(root.join("firmware/app/target").join(ELF_IN_TARGET)),
    ];
    if let Some(found) = candidates.into_iter().flatten().find(|p| p.is_file()) {
        return Some(found);
    }
    let target = scratch.join("firmware");
    eprintln!(
        "no firmware ELF: building firmware/app --release into {}",
        target.display()
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = Command::new(cargo)
        .args(["build", "--release"])
        .current_dir(root.join("firmware/app"))
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    let elf = target.join(ELF_IN_TARGET);
    if built && elf.is_file() {
        return Some(elf);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true and the firmware did not build: the QEMU suite cannot run"
    );
    eprintln!("the firmware did not build: QEMU test not run");
    None
}
