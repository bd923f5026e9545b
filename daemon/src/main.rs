//! `ha-daemon`: the main-CPU daemon (see `docs/daemon.md`).
//!
//! ```text
//! ha-daemon --config /etc/ha/daemon.toml
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use ha_daemon::config::{DaemonConfig, Table};
use ha_daemon::dp::Dp;
use ha_daemon::flowtable::FlowTable;
use ha_daemon::hostlink::boot_epoch;

#[derive(Parser)]
#[command(name = "ha-daemon", about = "Main-CPU HA daemon", version)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cfg = match DaemonConfig::load(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ha-daemon: {e}");
            return ExitCode::from(2);
        }
    };
    let stop = Arc::new(AtomicBool::new(false));
    let epoch = boot_epoch();
    let result = match cfg.table {
        Table::Dataplane => ha_daemon::app::run(
            cfg,
            |block| {
                Dp(ha_dataplane::Dataplane::from_block(
                    block,
                    epoch,
                    std::time::Instant::now(),
                ))
            },
            stop,
        ),
        Table::Builtin => ha_daemon::app::run(cfg, |block| FlowTable::new(block, epoch), stop),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ha-daemon: {e}");
            ExitCode::FAILURE
        }
    }
}
