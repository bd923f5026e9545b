//! xtask commands owned by the agent part: `sim`, `model` and the agent half of `size`.

use std::process::Command;

use crate::util::{self, Result};

/// Seeds CI runs on every change.
const CI_SEEDS: u64 = 2000;

/// Extra CI checks of this part, run by `cargo xtask test`: the agent builds for the MCU, the
/// simulator passes 2,000 seeds, and the model checker explores its four configurations with
/// no violation (about 1 minute in release on 2 cores) and catches the planted wrong order.
pub fn ci() -> Result {
    util::run(util::cargo().args(["build", "-p", "ha-agent", "--target", "thumbv7m-none-eabi"]))?;
    sim(&["--seeds".to_string(), CI_SEEDS.to_string()])?;
    model(&[])?;
    model(&["--plant-wrong-order".to_string()])
}

/// `cargo xtask sim --seeds N [--seed S] [--members K] [--trace]` and
/// `cargo xtask sim --failover-stats [--runs R]`: builds the simulator in release mode and
/// runs it; its last line is `sim: <N> seeds, <V> violations`.
pub fn sim(args: &[String]) -> Result {
    util::run(util::cargo().args(["build", "--release", "-q", "-p", "ha-sim"]))?;
    let bin = target_dir().join("release").join("ha-sim");
    let status = util::status(Command::new(&bin).args(args))?;
    if status.success() {
        Ok(())
    } else {
        Err("sim: violations found (see the replay commands above)".into())
    }
}

/// `cargo xtask model [--config 2x1,2x2,3x1,3x2] [--plant-wrong-order [NAME]] [...]`: builds
/// the model checker in release mode and explores every behaviour of each configuration;
/// its last line is `model: states=<n> properties=<k> violations=<v>`. Fails on a violation
/// (with `--plant-wrong-order`: fails when the planted bug is *not* found).
pub fn model(args: &[String]) -> Result {
    util::run(util::cargo().args(["build", "--release", "-q", "-p", "ha-model"]))?;
    let bin = target_dir().join("release").join("ha-model");
    let status = util::status(Command::new(&bin).args(args))?;
    if status.success() {
        Ok(())
    } else if args.iter().any(|a| a == "--plant-wrong-order") {
        Err("model: the planted wrong merit order was not detected".into())
    } else {
        Err("model: property violations found (see the traces above)".into())
    }
}

/// `cargo xtask size`: prints the agent's state size for 2 members / 1 domain (goal ≤ 8 KiB)
/// and for the full capacity, measured by a test binary of the agent crate.
pub fn size(_args: &[String]) -> Result {
    let out = util::output(util::cargo().args([
        "test",
        "-q",
        "-p",
        "ha-agent",
        "--lib",
        "size::tests::print_sizes",
        "--",
        "--exact",
        "--nocapture",
    ]))?;
    let mut found = false;
    for line in out.lines().filter(|l| l.starts_with("agent state")) {
        println!("{line}");
        found = true;
    }
    if found {
        Ok(())
    } else {
        Err(format!("size: the agent size test printed nothing:\n{out}"))
    }
}

fn target_dir() -> std::path::PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| util::root().join("target"))
}
