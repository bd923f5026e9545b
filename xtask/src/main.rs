//! The project's commands, run as `cargo xtask <command>`.
//!
//! Each part of the system owns one module here (`proto_tasks`, `agent_tasks`,
//! `firmware_tasks`, `dataplane_tasks`, `hostTools_tasks`); a command's own arguments are parsed
//! by its module, so this file only dispatches.

mod agent_tasks;
mod dataplane_tasks;
mod firmware_tasks;
mod host_tools_tasks;
mod layout;
mod proto_tasks;
mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "Build, test, bench and run the HA system"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// Arguments passed through to the command's own parser.
#[derive(clap::Args)]
struct Rest {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    args: Vec<String>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the other commands need (rustup target, qemu-system-arm). Idempotent.
    Setup,
    /// The test command: fmt, clippy -D warnings, all tests, no_std builds, simulator seeds,
    /// QEMU cluster and network-namespace suites.
    Test,
    /// Run every fuzz target for N seconds: `fuzz --seconds N`.
    Fuzz(Rest),
    /// Benchmarks: `bench proto | sync | failover --runs N`.
    Bench(Rest),
    /// Deterministic cluster simulation: `sim --seeds N [--seed S] [--members K]`.
    Sim(Rest),
    /// Exhaustive model checking of the agent: `model [--config 2x1,...] [--plant-wrong-order]`.
    Model(Rest),
    /// State size of the agent and flash/RAM of the firmware.
    Size(Rest),
    /// Boot K members under QEMU with the test wire: `qemu [--members K]`.
    Qemu(Rest),
    /// Boot a two-member cluster, kill the active, show the takeover.
    Demo(Rest),
    /// End-to-end scenarios in network namespaces: `e2e tcp-survival --connections N`.
    E2e(Rest),
    /// The e2e cluster under random faults: `chaos --minutes M [--seed S]`.
    Chaos(Rest),
    /// The tree's shape: no source file over 800 lines, no undocumented import cycle.
    Layout(Rest),
}

fn main() {
    let cli = Cli::parse();
    // Commands that build the firmware, boot QEMU or use namespaces install what they need
    // first (idempotent), so a fresh machine runs any of them without `setup`.
    let needs_setup = match &cli.cmd {
        Cmd::Qemu(_) | Cmd::E2e(_) | Cmd::Chaos(_) | Cmd::Size(_) => true,
        // Not the kernel-ha bench's churn workers: the bench itself set up, and a worker
        // runs inside a timed round (a `rustup target add` per worker cost the measured
        // system hundreds of ms of CPU each time).
        Cmd::Bench(r) => {
            matches!(
                r.args.first().map(String::as_str),
                Some("failover" | "conntrack" | "kernel-ha")
            ) && !r.args.iter().any(|a| a == "--churn-worker")
        }
        _ => false,
    };
    if needs_setup {
        if let Err(e) = setup::setup() {
            eprintln!("xtask: {e}");
            std::process::exit(1);
        }
    }
    let result = match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Test => test::test(),
        Cmd::Fuzz(r) => proto_tasks::fuzz(&r.args),
        Cmd::Bench(r) => bench(&r.args),
        Cmd::Sim(r) => agent_tasks::sim(&r.args),
        Cmd::Model(r) => agent_tasks::model(&r.args),
        Cmd::Size(r) => agent_tasks::size(&r.args).and_then(|()| firmware_tasks::size(&r.args)),
        Cmd::Qemu(r) => firmware_tasks::qemu(&r.args),
        Cmd::Demo(r) => firmware_tasks::demo(&r.args),
        Cmd::E2e(r) => dataplane_tasks::e2e(&r.args),
        Cmd::Chaos(r) => dataplane_tasks::chaos(&r.args),
        Cmd::Layout(r) => layout::layout(&r.args),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}

fn bench(args: &[String]) -> util::Result {
    match args.first().map(String::as_str) {
        Some("proto") => proto_tasks::bench(&args[1..]),
        Some("sync") => dataplane_tasks::bench_sync(&args[1..]),
        // The firmware-only figure (no daemon; the harness answers probes at once).
        Some("failover") if args.get(1).is_some_and(|a| a == "--harness") => {
            firmware_tasks::bench_failover(&args[2..])
        }
        Some("failover") => dataplane_tasks::bench_failover(&args[1..]),
        Some("conntrack") => dataplane_tasks::bench_conntrack(&args[1..]),
        Some("kernel-ha") => dataplane_tasks::bench_kernel_ha(&args[1..]),
        Some(other) => Err(format!(
            "bench: unknown benchmark {other:?} (proto, sync, failover, conntrack, kernel-ha)"
        )),
        None => Err("bench: which one? proto, sync, failover, conntrack or kernel-ha".into()),
    }
}
