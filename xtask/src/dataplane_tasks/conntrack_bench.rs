//! `cargo xtask bench conntrack [--entries N]`: the rate at which entries go into the
//! kernel's conntrack table over ctnetlink, one request at a time and batched, in a network
//! namespace created for the run and removed after it (needs root). Runs
//! `kernel/examples/install_rate.rs`; its last line is the result.

use std::process::Command;

use crate::util::{cargo, run, Result};

/// Removes the namespace when the run ends, also on failure.
struct Netns(String);

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Builds the example, then runs it inside a fresh namespace.
pub fn run_bench(args: &[String]) -> Result {
    let mut entries = "20000".to_string();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--entries" => entries = it.next().ok_or("--entries needs a value")?.clone(),
            other => return Err(format!("bench conntrack: unknown option {other}")),
        }
    }
    entries
        .parse::<u32>()
        .map_err(|e| format!("--entries {entries}: {e}"))?;
    run(cargo().args([
        "build",
        "--release",
        "-q",
        "-p",
        "ha-kernel",
        "--example",
        "install_rate",
    ]))?;
    let ns = Netns(format!("haxc{}", std::process::id() % 100_000));
    run(Command::new("ip").args(["netns", "add", &ns.0]))?;
    let exe = crate::util::root().join("target/release/examples/install_rate");
    run(Command::new("ip")
        .args(["netns", "exec", &ns.0])
        .arg(exe)
        .args(["--entries", &entries]))
}
