//! The project's commands, run as `cargo xtask <command>`.

mod setup;
mod test;
mod util;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Build, test, bench and run the HA system")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install what the other commands need (rustup target, qemu-system-arm). Idempotent.
    Setup,
    /// fmt check, clippy -D warnings, all tests, no_std builds for thumbv7m-none-eabi.
    Test,
}

fn main() {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Setup => setup::setup(),
        Cmd::Test => test::test(),
    };
    if let Err(e) = result {
        eprintln!("xtask: {e}");
        std::process::exit(1);
    }
}
