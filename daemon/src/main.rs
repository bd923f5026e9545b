//! `ha-daemon`: the main-CPU daemon (see `docs/daemon.md`).
//!
//! ```text
//! ha-daemon --config /etc/ha/daemon.toml
//! ha-daemon --config /etc/ha/daemon.toml --release   # after it ended: out of the data path
//! ha-daemon --config /etc/ha/daemon.toml --check     # would it run with this configuration?
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use clap::Parser;
use ha_daemon::config::{DaemonConfig, Datapath, Table};
use ha_hostlink::boot_epoch;

#[derive(Parser)]
#[command(name = "ha-daemon", about = "Main-CPU HA daemon", version)]
struct Cli {
    /// Configuration file (TOML).
    #[arg(long, short)]
    config: PathBuf,
    /// Do not run: take this member out of the kernel data path (close the standby guard,
    /// remove the cluster addresses) and exit. For a supervisor after the daemon ended
    /// (systemd's ExecStopPost), so a dead daemon leaves no address its peer now holds.
    #[arg(long)]
    release: bool,
    /// Do not run: read the configuration and the configuration block it names, and exit 0
    /// if this program would run with them (a running daemon asks this of its replacement
    /// before a restart).
    #[arg(long)]
    check: bool,
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
    if cli.check {
        if let Err(e) = cfg.selection() {
            eprintln!("ha-daemon: {}: {e}", cli.config.display());
            return ExitCode::from(2);
        }
        return match ha_daemon::app::load_block(&cfg.config_block) {
            Ok(_) => {
                eprintln!(
                    "ha-daemon {}: {} accepted",
                    env!("CARGO_PKG_VERSION"),
                    cli.config.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ha-daemon: configuration block: {e}");
                ExitCode::from(2)
            }
        };
    }
    if cli.release {
        let Some(f) = cfg
            .forward
            .as_ref()
            .filter(|_| cfg.datapath == Datapath::Kernel)
        else {
            eprintln!("ha-daemon: --release: no kernel data path in this configuration");
            return ExitCode::SUCCESS;
        };
        return match ha_daemon::kernelpath::release(f) {
            Ok(()) => {
                eprintln!("ha-daemon: released: guard closed, cluster addresses removed");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("ha-daemon: --release: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let stop = Arc::new(AtomicBool::new(false));
    // One boot epoch for every link of this process: the persistent boot counter.
    let epoch = match boot_epoch(&cfg.state_dir) {
        Ok(e) => e,
        Err(e) => {
            eprintln!(
                "ha-daemon: boot counter in {}: {e}",
                cfg.state_dir.display()
            );
            return ExitCode::FAILURE;
        }
    };
    // The dataplane crate's table and sync engine carry either path's connections.
    let dataplane = |block: &_, keyring| {
        let sync = ha_dataplane::SyncConfig::from_block(block, epoch).with_keyring(keyring);
        ha_daemon::dp::split(
            ha_dataplane::Dataplane::new(sync, ha_dataplane::Policy::allow_all()),
            std::time::Instant::now(),
        )
    };
    let result = match (cfg.table, cfg.datapath) {
        (Table::Dataplane, Datapath::Kernel) => {
            ha_daemon::app::run_kernel(cfg, epoch, dataplane, stop)
        }
        (Table::Dataplane, Datapath::Userspace) => ha_daemon::app::run(cfg, epoch, dataplane, stop),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ha-daemon: {e}");
            ExitCode::FAILURE
        }
    }
}
