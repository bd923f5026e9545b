//! `confsync`: the configuration store and its sync as a standalone tool (the daemon embeds
//! the same library). Used by the crash tests and for manual checks.
//!
//! ```text
//! KEYS = [--psk-file K [--key-id N]] [--keyring FILE] [--encrypt] --cluster-id N --serial S
//! confsync serve   --root DIR --listen ADDR KEYS [--allow-special-modes] [--once]
//! confsync push    --root DIR --to ADDR     KEYS
//! confsync publish --root DIR [--comment TEXT]
//! confsync status  --root DIR
//! confsync service --root DIR --listen ADDR KEYS [--allow-special-modes]
//!                  [--peer SERIAL=ADDR]... [--daemon-socket P | --role active|standby]
//!                  [--mgmt-socket P] [--jobs FILE] [--sync-on-publish]
//! ```
//! `service` is the member's long-running configuration-sync service: it receives revisions
//! on `--listen` (each session on its own thread, with deadlines), answers `hactl config
//! publish|sync|diff|synctest|events` on `--mgmt-socket` (default /run/ha/confsync.sock), and
//! runs the periodic jobs (default: DHCP leases every 5 min, certificates every 60 min).
//! Events go to stdout as `event KIND MEMBER DETAIL` lines; progress (serve, push) as
//! `progress PHASE DONE TOTAL` lines.
//!
//! Keys: `--keyring` names the keyring file `ha-daemon` writes at every phase of `hactl psk
//! rotate` (`<state_dir>/keyring`); once it exists the keys follow it, re-read at every
//! session, and `--psk-file`/`--key-id` (required until then) only give the key the member
//! was provisioned with. A weak key, from either source, is refused at start.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use ha_confsync::deadline::Limits;
use ha_confsync::events::EventLog;
use ha_confsync::jobs::{JobsConfig, Scheduler};
use ha_confsync::keys::{keyring_from_file, read_key_file, Keys, SessionCounter};
use ha_confsync::protocol::SyncMsg;
use ha_confsync::service::{PeerAddr, RoleSource, Service, ServiceConfig};
use ha_confsync::store::{Role, Store};
use ha_confsync::sync::{self, Progress, Received, Receiving};
use ha_confsync::wire::{Security, Wire};
use ha_mgmt_api::server;
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
    /// Key file of the cluster PSK (mode 0600): the key until the keyring file exists.
    /// Required unless --keyring names an existing file.
    #[arg(long)]
    psk_file: Option<PathBuf>,
    /// Key id of the PSK.
    #[arg(long, default_value_t = 1)]
    key_id: u8,
    /// The main CPU's keyring file that ha-daemon writes at every phase of a PSK rotation
    /// (<state_dir>/keyring): once it exists, the keys follow it, re-read at every session.
    #[arg(long)]
    keyring: Option<PathBuf>,
    /// Seal every frame with the AEAD (the configuration is encrypted in transit) and refuse
    /// frames in clear; every member must agree.
    #[arg(long)]
    encrypt: bool,
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
        #[command(flatten)]
        rx: ReceiverArgs,
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
    /// Run the member's configuration-sync service.
    Service(ServiceArgs),
    /// Show the current revision and local changes.
    Status {
        /// Store root.
        #[arg(long)]
        root: PathBuf,
    },
}

/// What a receiver of revisions needs (`serve` and `service`).
#[derive(Args)]
struct ReceiverArgs {
    /// Store root.
    #[arg(long)]
    root: PathBuf,
    /// TCP address the receiver listens on (port 0: any; the address is printed).
    #[arg(long)]
    listen: String,
    #[command(flatten)]
    sec: Sec,
    /// Install received files with setuid, setgid or sticky bits (refused by default).
    #[arg(long)]
    allow_special_modes: bool,
}

#[derive(Args)]
struct ServiceArgs {
    #[command(flatten)]
    rx: ReceiverArgs,
    /// A peer as SERIAL=IP:PORT of its receiver; repeat for each.
    #[arg(long = "peer")]
    peers: Vec<String>,
    /// ha-daemon's management socket, asked for this member's mode (active may publish).
    #[arg(long, conflicts_with = "role")]
    daemon_socket: Option<PathBuf>,
    /// Fixed role instead of asking ha-daemon: active or standby.
    #[arg(long)]
    role: Option<String>,
    /// Management socket this service answers on.
    #[arg(long, default_value = ha_mgmt_api::DEFAULT_CONFIG_SOCKET)]
    mgmt_socket: PathBuf,
    /// Periodic jobs file (JSON); default: DHCP leases every 5 min, certificates every 60 min.
    #[arg(long)]
    jobs: Option<PathBuf>,
    /// Push to every peer right after each publish.
    #[arg(long)]
    sync_on_publish: bool,
    /// Receiver address peers use to reach this member (default: the bound --listen address).
    #[arg(long)]
    advertise: Option<String>,
    /// This member's configuration block (the file its controller boots from): a machine
    /// holding the cluster key that enrols through this member (`hactl cluster enroll`) is
    /// sent its cluster-wide settings. Without it enrolment is refused.
    #[arg(long)]
    block: Option<PathBuf>,
}

fn parse_peer(s: &str) -> Result<PeerAddr, String> {
    let (serial, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("--peer {s:?}: expected SERIAL=IP:PORT"))?;
    if Serial::new(serial).is_none() {
        return Err(format!("--peer {s:?}: bad serial"));
    }
    Ok(PeerAddr {
        serial: serial.to_string(),
        addr: addr.to_string(),
    })
}

fn service(a: ServiceArgs) -> Result<(), String> {
    let ReceiverArgs {
        root,
        listen,
        sec,
        allow_special_modes,
    } = &a.rx;
    let security = security(sec, root)?;
    let peers = a
        .peers
        .iter()
        .map(|p| parse_peer(p))
        .collect::<Result<Vec<_>, _>>()?;
    let role = match (a.daemon_socket, a.role.as_deref()) {
        (Some(p), _) => RoleSource::Daemon(p),
        (None, Some("active")) => RoleSource::Fixed(Role::Active),
        (None, Some("standby")) | (None, None) => RoleSource::Fixed(Role::Standby),
        (None, Some(r)) => return Err(format!("--role {r:?}: expected active or standby")),
    };
    let jobs = match &a.jobs {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            JobsConfig::parse(&text).map_err(|e| e.to_string())?
        }
        None => JobsConfig::default(),
    };
    let l = TcpListener::bind(listen).map_err(|e| format!("bind {listen}: {e}"))?;
    let bound = l.local_addr().map_err(|e| e.to_string())?;
    // Opened once: cleans what a crash left in staging/ before anything else runs.
    let store = Store::open(root, Role::Standby).map_err(|e| e.to_string())?;
    let cfg = ServiceConfig {
        peers,
        keyring_file: sec.keyring.clone(),
        sync_on_publish: a.sync_on_publish,
        listen_addr: Some(a.advertise.clone().unwrap_or_else(|| bound.to_string())),
        allow_special_modes: *allow_special_modes,
        block: a.block.clone(),
        ..ServiceConfig::new(security, role)
    };
    let events = EventLog::with_observer(Box::new(|e| {
        let kind = serde_json::to_value(e.kind)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        let mut o = std::io::stdout().lock();
        let member = e.member.as_deref().unwrap_or("-");
        let _ = writeln!(o, "event {kind} {member} {}", e.detail);
        let _ = o.flush();
    }));
    let svc = Arc::new(Service::with_events(store, cfg, events));
    let listener =
        server::bind(&a.mgmt_socket).map_err(|e| format!("{}: {e}", a.mgmt_socket.display()))?;
    let stop = Arc::new(AtomicBool::new(false));
    server::serve(listener, svc.clone(), stop.clone()).map_err(|e| e.to_string())?;
    svc.serve(l, stop).map_err(|e| e.to_string())?;
    println!("listening {bound} management {}", a.mgmt_socket.display());
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    let mut sched = Scheduler::new(jobs, 0);
    loop {
        let now = start.elapsed().as_secs();
        for job in sched.poll_due(now).into_iter().cloned().collect::<Vec<_>>() {
            let line = match svc.run_job(&job) {
                Ok(Some(rev)) => format!("job {}: published and synced revision {rev}", job.name),
                Ok(None) => format!("job {}: nothing to publish", job.name),
                Err(e) => format!("job {} failed: {e}", job.name),
            };
            let mut o = std::io::stdout().lock();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
        }
        let next = sched.poll_at().unwrap_or(now + 60);
        let wait = next.saturating_sub(start.elapsed().as_secs()).max(1);
        std::thread::sleep(Duration::from_secs(wait));
    }
}

/// The member's security context from the command line: the keyring file's keys when it
/// exists, else the key file's; either is checked for strength here, at start.
fn security(s: &Sec, root: &Path) -> Result<Security, String> {
    let me = Serial::new(&s.serial).ok_or_else(|| format!("bad serial {:?}", s.serial))?;
    let from_file = match &s.keyring {
        Some(p) => keyring_from_file(s.cluster_id, p)?,
        None => None,
    };
    let from_psk = match &s.psk_file {
        Some(p) => {
            let psk = read_key_file(p)?;
            Some(Keyring::new(KeySet::derive(&psk, s.cluster_id, s.key_id)))
        }
        None => None,
    };
    let keyring = from_file.or(from_psk).ok_or_else(|| {
        "no key: give --psk-file, or --keyring naming an existing keyring file".to_string()
    })?;
    Ok(Security {
        cluster_id: s.cluster_id,
        keyring,
        me,
        encrypt: s.encrypt,
        sessions: SessionCounter::of_store(root),
    })
}

/// The keys for a new session of `serve` or `push` (the keyring file followed).
fn session_security(s: &Sec, root: &Path, keys: &Keys) -> Result<Security, String> {
    let mut sec = security(s, root)?;
    sec.keyring = keys.current()?;
    Ok(sec)
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
            rx:
                ReceiverArgs {
                    root,
                    listen,
                    sec: args,
                    allow_special_modes,
                },
            once,
        } => {
            let sec = security(&args, &root)?;
            let keys = Keys::new(sec.cluster_id, sec.keyring.clone(), args.keyring.clone());
            let l = TcpListener::bind(&listen).map_err(|e| format!("bind {listen}: {e}"))?;
            let addr = l.local_addr().map_err(|e| e.to_string())?;
            println!("listening {addr}");
            let _ = std::io::stdout().flush();
            let how = Receiving {
                allow_special_modes,
                store_lock: None,
                block: None,
            };
            let mut refuse =
                |_: &str, _: &str, _: Option<&ha_mgmt_api::HaMember>| SyncMsg::Failed {
                    reason: "this member does not take join requests".into(),
                };
            loop {
                let (s, _) = l.accept().map_err(|e| format!("accept: {e}"))?;
                let store = Store::open(&root, Role::Standby).map_err(|e| e.to_string())?;
                let sec = session_security(&args, &root, &keys)?;
                let r = s.try_clone().map_err(|e| e.to_string())?;
                let mut wire =
                    Wire::receiver(r, s, &sec, Limits::RECEIVER).map_err(|e| e.to_string())?;
                match sync::receive_or_join(&store, &mut wire, &how, print_progress, &mut refuse) {
                    Ok(Received::Revision(rev)) => println!("committed revision {}", rev.revision),
                    Ok(Received::Join { serial, .. }) => println!("join of {serial} refused"),
                    Ok(Received::Enroll { .. }) => println!("enrolment refused"),
                    Err(e) => println!("failed: {e}"),
                }
                let _ = std::io::stdout().flush();
                if once {
                    return Ok(());
                }
            }
        }
        Cmd::Push { root, to, sec } => {
            let sec = security(&sec, &root)?;
            let store = Store::open(&root, Role::Active).map_err(|e| e.to_string())?;
            let s = TcpStream::connect(&to).map_err(|e| format!("connect {to}: {e}"))?;
            let r = s.try_clone().map_err(|e| e.to_string())?;
            let mut wire =
                Wire::connector(r, s, &sec, None, Limits::CONNECTOR).map_err(|e| e.to_string())?;
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
        Cmd::Service(a) => service(a),
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
