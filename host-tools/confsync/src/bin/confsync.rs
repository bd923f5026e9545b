//! `confsync`: the configuration store and its sync as a standalone tool (the daemon embeds
//! the same library). Used by the crash tests and for manual checks.
//!
//! ```text
//! confsync serve   --root DIR --listen ADDR --psk-file K --cluster-id N --serial S [--once]
//! confsync push    --root DIR --to ADDR     --psk-file K --cluster-id N --serial S
//! confsync publish --root DIR [--comment TEXT]
//! confsync status  --root DIR
//! ```
//! Progress goes to stdout as `progress PHASE DONE TOTAL` lines.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ha_confsync::store::{Role, Store};
use ha_confsync::sync::{self, Progress};
use ha_confsync::wire::{read_key_file, Security, Wire};
use ha_proto::keys::{KeySet, Keyring};
use ha_proto::msg::Serial;

#[derive(Parser)]
#[command(
    name = "confsync",
    about = "Revisioned configuration store and its sync"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args)]
struct Sec {
    /// Key file of the cluster PSK (mode 0600).
    #[arg(long)]
    psk_file: PathBuf,
    /// Key id of the PSK.
    #[arg(long, default_value_t = 1)]
    key_id: u8,
    /// Cluster id.
    #[arg(long)]
    cluster_id: u32,
    /// This member's serial.
    #[arg(long)]
    serial: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Receive revisions (standby side).
    Serve {
        /// Store root.
        #[arg(long)]
        root: PathBuf,
        /// TCP address to listen on (port 0: any; the address is printed).
        #[arg(long)]
        listen: String,
        #[command(flatten)]
        sec: Sec,
        /// Exit after one session.
        #[arg(long)]
        once: bool,
    },
    /// Push the current revision to a receiver.
    Push {
        /// Store root.
        #[arg(long)]
        root: PathBuf,
        /// Receiver address.
        #[arg(long)]
        to: String,
        #[command(flatten)]
        sec: Sec,
    },
    /// Publish the draft as a new revision.
    Publish {
        /// Store root.
        #[arg(long)]
        root: PathBuf,
        /// Comment.
        #[arg(long)]
        comment: Option<String>,
    },
    /// Show the current revision and local changes.
    Status {
        /// Store root.
        #[arg(long)]
        root: PathBuf,
    },
}

fn security(s: &Sec) -> Result<Security, String> {
    let psk = read_key_file(&s.psk_file)?;
    let me = Serial::new(&s.serial).ok_or_else(|| format!("bad serial {:?}", s.serial))?;
    Ok(Security {
        cluster_id: s.cluster_id,
        keyring: Keyring::new(KeySet::derive(&psk, s.cluster_id, s.key_id)),
        me,
        encrypt: false,
    })
}

fn print_progress(p: &Progress) {
    if p.phase != "transfer" || p.done_files % 100 == 0 || p.done_files == p.total_files {
        let mut o = std::io::stdout().lock();
        let _ = writeln!(o, "progress {} {} {}", p.phase, p.done_files, p.total_files);
        let _ = o.flush();
    }
}

fn run(cli: Cli) -> Result<(), String> {
    match cli.cmd {
        Cmd::Serve {
            root,
            listen,
            sec,
            once,
        } => {
            let sec = security(&sec)?;
            let l = TcpListener::bind(&listen).map_err(|e| format!("bind {listen}: {e}"))?;
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            println!("listening {addr}");
            let _ = std::io::stdout().flush();
            loop {
                let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
                let store = Store::open(&root, Role::Standby).map_err(|e| e.to_string())?;
                let r = s.try_clone().map_err(|e| e.to_string())?;
                let mut wire = Wire::new(r, s, sec.clone()).map_err(|e| e.to_string())?;
                match sync::receive(&store, &mut wire, print_progress) {
                    Ok(rev) => println!("committed revision {}", rev.revision),
                    Err(e) => println!("failed: {e}"),
                }
                let _ = std::io::stdout().flush();
                if once {
                    return Ok(());
                }
            }
        }
        Cmd::Push { root, to, sec } => {
            let sec = security(&sec)?;
            let store = Store::open(&root, Role::Active).map_err(|e| e.to_string())?;
            let s = TcpStream::connect(&to).map_err(|e| format!("connect {to}: {e}"))?;
            let r = s.try_clone().map_err(|e| e.to_string())?;
            let mut wire = Wire::new(r, s, sec).map_err(|e| e.to_string())?;
            let rep = sync::push(&store, &mut wire, print_progress).map_err(|e| e.to_string())?;
            println!(
                "synced revision {} ({} files, {} contents sent, {} bytes, {} frames)",
                rep.revision, rep.files_total, rep.files_sent, rep.bytes_sent, rep.frames_sent
            );
            Ok(())
        }
        Cmd::Publish { root, comment } => {
            let store = Store::open(&root, Role::Active).map_err(|e| e.to_string())?;
            let r = store.publish(comment).map_err(|e| e.to_string())?;
            println!(
                "published revision {} ({} files)",
                r.revision,
                r.manifest.files.len()
            );
            Ok(())
        }
        Cmd::Status { root } => {
            let store = Store::open(&root, Role::Standby).map_err(|e| e.to_string())?;
            match store.current().map_err(|e| e.to_string())? {
                Some(r) => println!("revision {} ({} files)", r.revision, r.manifest.files.len()),
                None => println!("no revision"),
            }
            for p in store.local_changes().map_err(|e| e.to_string())? {
                println!("local change: {p}");
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("confsync: {e}");
            ExitCode::FAILURE
        }
    }
}
