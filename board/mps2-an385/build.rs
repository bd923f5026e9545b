//! Puts `memory.x` (and an empty `device.x`) where the linker finds it (cortex-m-rt's `link.x` includes it).
use std::{env, fs, path::PathBuf};

fn main() {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(out.join("memory.x"), include_bytes!("memory.x")).expect("write memory.x");
    // cortex-m-rt's `device` feature includes device.x; our vector table names its handlers
    // directly (see src/irq.rs), so there is nothing to PROVIDE.
    fs::write(
        out.join("device.x"),
        "/* handlers are named in src/irq.rs */\n",
    )
    .expect("write device.x");
    println!("cargo:rustc-link-search={}", out.display());
    // The driver test (examples/) is a program of its own: cortex-m-rt's and defmt's
    // linker scripts (the firmware binary gets them from its .cargo/config.toml).
    println!("cargo:rustc-link-arg-examples=-Tlink.x");
    println!("cargo:rustc-link-arg-examples=-Tdefmt.x");
    println!("cargo:rerun-if-changed=memory.x");
    println!("cargo:rerun-if-changed=build.rs");
}
