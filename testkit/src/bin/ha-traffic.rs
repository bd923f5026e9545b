//! `ha-traffic`: the TCP load of the failover test (see `ha_testkit::traffic`).
//!
//! ```text
//! ha-traffic server --listen 10.2.0.1:5001
//! ha-traffic client --connect 10.2.0.1:5001 --connections 1000 --interval-ms 100
//! ```
//! The client reads `mark`, `report`, `stop` lines on stdin and prints `ready` and JSON
//! reports on stdout.

use std::io::BufRead;
use std::net::{SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use clap::{Parser, Subcommand};
use ha_testkit::traffic::{echo_server, parse_command, Client, Command};

#[derive(Parser)]
#[command(name = "ha-traffic", about = "TCP echo load for the failover test")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo every byte back, on every connection, until killed.
    Server {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Keep N connections busy; commands on stdin, reports on stdout.
    Client {
        /// Server address.
        #[arg(long)]
        connect: SocketAddr,
        /// Number of connections.
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// Each connection sends one message per interval, ms.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Server { listen } => TcpListener::bind(listen).and_then(|l| {
            println!("listening {listen}");
            echo_server(l, Arc::new(AtomicBool::new(false))).map(|_| ())
        }),
        Cmd::Client {
            connect,
            connections,
            interval_ms,
        } => Client::connect(
            connect,
            connections,
            Duration::from_millis(interval_ms.max(1)),
            Duration::from_secs(5),
        )
        .and_then(|mut c| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                for line in std::io::stdin().lock().lines() {
                    let Ok(line) = line else { break };
                    if let Some(cmd) = parse_command(&line) {
                        if tx.send(cmd).is_err() {
                            break;
                        }
                    }
                }
                // Standard input closed: end the run.
                let _ = tx.send(Command::Stop);
            });
            c.run(rx, &mut std::io::stdout().lock()).map(|_| ())
        }),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ha-traffic: {e}");
            ExitCode::FAILURE
        }
    }
}
