//! `cargo xtask setup`: installs what the other commands need. Idempotent.

use std::process::Command;

use crate::util::{have, is_root, run, Result};

/// Debian packages the QEMU and network-namespace suites need, by the program they provide.
const PACKAGES: &[(&str, &str)] = &[
    ("qemu-system-arm", "qemu-system-arm"),
    ("ip", "iproute2"),
    ("conntrackd", "conntrackd"),
    ("conntrack", "conntrack"),
    // `bench kernel-ha`: the peer it measures ours against (VRRP with conntrackd).
    ("keepalived", "keepalived"),
    ("nft", "nftables"),
];

/// Adds the rustup targets and installs missing Debian packages (when root).
pub fn setup() -> Result {
    run(Command::new("rustup").args(["target", "add", "thumbv7m-none-eabi"]))?;
    // The real board's firmware (board/nucleo-h743zi, Cortex-M7 with FPU).
    run(Command::new("rustup").args(["target", "add", "thumbv7em-none-eabihf"]))?;
    // Decodes the firmware's defmt log (raw frames on UART0) on the host.
    if !have("defmt-print") {
        run(Command::new("cargo").args(["install", "defmt-print", "--locked"]))?;
    }
    let missing: Vec<&str> = PACKAGES
        .iter()
        .filter(|(prog, _)| !have(prog))
        .map(|(_, pkg)| *pkg)
        .collect();
    if missing.is_empty() {
        eprintln!("setup: all packages present");
        return Ok(());
    }
    if !is_root() {
        return Err(format!(
            "setup: missing packages; run:\n  sudo apt-get update && sudo apt-get install -y {}",
            missing.join(" ")
        ));
    }
    run(Command::new("apt-get")
        .arg("update")
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))?;
    eprintln!("setup: installed {}", missing.join(" "));
    Ok(())
}
