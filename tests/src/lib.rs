//! End-to-end tests: QEMU clusters and network-namespace TCP survival.
//!
//! The QEMU cluster tests live in `tests/qemu_cluster.rs`; this library holds what they share.

#![warn(missing_docs)]

use std::path::PathBuf;

/// The firmware ELF the QEMU tests boot: `$HA_FIRMWARE_ELF` (set by `cargo xtask test`), else
/// the firmware crate's default release output. `None` when there is none; with `CI=true`
/// that is a failure (the suite runs or fails in CI, never skips).
pub fn firmware_elf() -> Option<PathBuf> {
    let candidates = [
        std::env::var_os("HA_FIRMWARE_ELF").map(PathBuf::from),
        Some(
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../firmware/app/target/thumbv7m-none-eabi/release/ha-firmware"),
        ),
    ];
    let found = candidates.into_iter().flatten().find(|p| p.is_file());
    if found.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true and no firmware ELF: set HA_FIRMWARE_ELF (cargo xtask test does)"
        );
        eprintln!(
            "no firmware ELF (set HA_FIRMWARE_ELF or build firmware/app --release): \
             QEMU test not run"
        );
    }
    found
}
