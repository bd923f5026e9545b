//! hactl: PSK provisioning, cluster create/join/replace, status and control, configuration sync.
//!
//! Exit codes: 0 success, 1 operation failed, 2 bad command line, 3 refused input (weak
//! passphrase, invalid value, existing file, refused by the daemon), 4 file error, 5 daemon
//! unreachable, 6 missing, corrupt or invalid configuration image, 7 configuration not
//! synchronized (`synctest`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use ha_mgmt_api::{Reply, Request};
use hactl::client::{self, Client};
use hactl::exit::{Code, Failure, Result};
use hactl::{inspect, provision, pskfile, render, rotation, strength, update};

const EXIT_CODES: &str = "Exit codes: 0 success, 1 operation failed, 2 bad command line, \
3 refused input (weak passphrase, invalid value, existing file, refused by the daemon), \
4 file error, 5 daemon or service unreachable, 6 missing/corrupt/invalid configuration image, \
7 configuration not synchronized (synctest).";

#[derive(Parser)]
#[command(name = "hactl", version, about = "Operate an HA cluster: keys, provisioning, status, control, configuration sync", after_help = EXIT_CODES)]
struct Cli {
    /// The daemon's management socket (default: $HA_MGMT_SOCKET, else /run/ha/mgmt.sock).
    #[arg(long, global = true)]
    socket: Option<PathBuf>,
    /// The configuration-sync service's socket, for config publish/sync/diff/synctest, cluster
    /// create/join/remove and the sync column of info (default: $HA_CONFIG_SOCKET, else /run/ha/confsync.sock).
    #[arg(long, global = true)]
    config_socket: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Cluster pre-shared key: generate, check a passphrase.
    #[command(subcommand)]
    Psk(PskCmd),
    /// Write a member's flash configuration block to an image file (mode 0600).
    Provision(ProvisionArgs),
    /// Show what a configuration image holds (never the key, only its fingerprint).
    Inspect {
        /// The image file.
        file: PathBuf,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The cluster status table (SPEC E1): every member's mode, quality, links, config sync.
    Info {
        /// Add protocol counters.
        #[arg(short, long)]
        verbose: bool,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// This member's mode.
    Mode {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Force this member active, whatever its quality.
    Active,
    /// Force this member passive.
    Passive,
    /// Remove any forcing: the election decides again.
    Reset,
    /// Reload the HA settings.
    Reload,
    /// The event log (SPEC E3).
    Events {
        /// Keep printing new events until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N past events.
        #[arg(long)]
        last: Option<u32>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
    /// Configuration store: publish the draft as a new revision.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Push the latest published configuration revision to the peers (incremental, atomic).
    Sync {
        /// Only this peer (serial).
        #[arg(long)]
        peer: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Compare one configuration file with a peer's copy.
    Diff {
        /// Path relative to the configuration root.
        file: String,
        /// The peer (serial); the first peer when absent.
        #[arg(long)]
        peer: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// List unsynchronized files and local unpublished changes; exits 7 when any.
    Synctest {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Cluster membership.
    #[command(subcommand)]
    Cluster(ClusterCmd),
    /// Rolling update: the passive first, then a swap, then the other member.
    Update {
        /// Firmware image.
        #[arg(long)]
        image: PathBuf,
        /// A member as SERIAL=SOCKET (its daemon's management socket); repeat for each.
        /// With --install, hactl runs the rolling update itself; without, the daemon at
        /// --socket is asked to.
        #[arg(long = "member")]
        members: Vec<String>,
        /// Program that installs the image on one member and returns once it restarted:
        /// run as `PROGRAM SERIAL IMAGE` (no shell).
        #[arg(long)]
        install: Option<PathBuf>,
        /// Firmware version the image reports; a member has rejoined once it shows it.
        #[arg(long)]
        expect_version: Option<String>,
        /// Longest wait for a member to rejoin or take over, seconds.
        #[arg(long, default_value_t = 600)]
        timeout_s: u64,
        /// Interval between status polls while waiting, milliseconds.
        #[arg(long, default_value_t = 1000)]
        poll_ms: u64,
        /// Consecutive polls a member must look healthy before the next step.
        #[arg(long, default_value_t = 3)]
        settle_polls: u32,
        /// Machine-readable progress (one JSON object per line).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Turn the draft into a new revision (active member only; a standby is read-only).
    Publish {
        /// Comment stored with the revision.
        #[arg(long)]
        comment: Option<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// The configuration-sync service's event log: syncs, joins, refused frames (by reason),
    /// sessions cut by a deadline.
    Events {
        /// Keep printing new events until interrupted.
        #[arg(short, long)]
        follow: bool,
        /// Only the last N past events.
        #[arg(long)]
        last: Option<u32>,
        /// One JSON object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Create a cluster on this (active) member: it becomes the cluster's first member.
    Create {
        /// Cluster id.
        #[arg(long)]
        cluster_id: u32,
        /// Key file of the cluster PSK (from `hactl psk generate`).
        #[arg(long)]
        psk_file: PathBuf,
    },
    /// Join the cluster whose active member's configuration-sync service listens at --peer;
    /// this member then receives the cluster's configuration. A full cluster refuses.
    Join {
        /// IP:PORT of the active member's configuration-sync receiver.
        #[arg(long)]
        peer: String,
        /// Key file of the cluster PSK.
        #[arg(long)]
        psk_file: PathBuf,
        /// This member's main HA link (IP:PORT), added to the HA member list of every
        /// --member-socket daemon (their controllers and configuration blocks).
        #[arg(long, requires = "member_sockets")]
        ha_address: Option<String>,
        /// The management socket of a member already in the cluster; repeat for each.
        #[arg(long = "member-socket", requires = "ha_address")]
        member_sockets: Vec<PathBuf>,
    },
    /// Remove a failed member (before joining its replacement).
    Remove {
        /// Its serial.
        #[arg(long)]
        serial: String,
        /// The management socket of a remaining member whose HA member list (controller and
        /// configuration block) drops it; repeat for each.
        #[arg(long = "member-socket")]
        member_sockets: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum PskCmd {
    /// Generate a 256-bit key from the OS CSPRNG into a file with mode 0600.
    Generate {
        /// Where to write the key (64 hex digits).
        #[arg(long, short)]
        out: PathBuf,
        /// Replace an existing file.
        #[arg(long)]
        force: bool,
        /// Also print the key on standard output (it is never printed otherwise).
        #[arg(long)]
        show: bool,
        /// Derive the key from a passphrase read from standard input (or --passphrase-file)
        /// instead; the passphrase must pass `psk check`.
        #[arg(long)]
        from_passphrase: bool,
        /// File holding the passphrase (with --from-passphrase).
        #[arg(long, requires = "from_passphrase")]
        passphrase_file: Option<PathBuf>,
    },
    /// Change the PSK of the running cluster without a swap or a lost heartbeat: the new key
    /// is accepted everywhere, then used, then the old one is retired.
    Rotate {
        /// Key file of the new PSK (from `hactl psk generate`); read by the daemon, never sent
        /// on a command line.
        #[arg(long)]
        psk_file: PathBuf,
        /// Key id of the new key (must differ from the current one).
        #[arg(long)]
        key_id: u8,
        /// The management socket of one member's daemon; repeat for every member of the
        /// cluster (default: --socket alone, for a cluster of one member). Every member must
        /// be listed: each phase is confirmed by all of them before the next starts.
        #[arg(long = "member-socket")]
        member_sockets: Vec<PathBuf>,
        /// The configuration-sync service's socket of one member; repeat for every member to
        /// roll the sync channel's keys over too (after the HA links').
        #[arg(long = "config-member-socket")]
        config_member_sockets: Vec<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Where a running PSK rotation stands.
    Status {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Rate a passphrase (read from standard input or --file, never from the command line);
    /// exits 3 when it is too short or guessable.
    Check {
        /// File holding the passphrase.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Words an attacker would try first (cluster name, site, serials).
        #[arg(long = "context")]
        context: Vec<String>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct ProvisionArgs {
    /// Key file (from `hactl psk generate`).
    #[arg(long)]
    psk_file: PathBuf,
    /// This member's serial.
    #[arg(long)]
    serial: String,
    /// Cluster id.
    #[arg(long)]
    cluster_id: u32,
    /// Key id of the PSK (changes on every rotation).
    #[arg(long, default_value_t = 1)]
    key_id: u8,
    /// A member as SERIAL=IP:PORT of its main HA link; repeat for each, in cluster order,
    /// this member included.
    #[arg(long = "member", required = true)]
    members: Vec<String>,
    /// The backup HA link (serial line) is wired.
    #[arg(long)]
    backup_link: bool,
    /// Encrypt member frames (AEAD) instead of authenticating only.
    #[arg(long)]
    encrypt: bool,
    /// UDP port of the connection-state sync.
    #[arg(long, default_value_t = ha_proto::config_block::DEFAULT_STATE_SYNC_PORT)]
    state_sync_port: u16,
    /// Timer profile: default, fast or custom:INTERVAL_MS:MISS_LIMIT.
    #[arg(long, default_value = "default")]
    timers: String,
    /// A domain as ID or ID=SERIAL (SERIAL is active when qualities are equal); default 0.
    #[arg(long = "domain")]
    domains: Vec<String>,
    /// When an aggregate counts as down: all-down or any-down.
    #[arg(long, default_value = "all-down")]
    aggregate: String,
    /// Count the TPM in the quality factor.
    #[arg(long)]
    tpm: bool,
    /// Hardware weight KIND=WEIGHT (disk, raid, tpm, psu, fan, module; 0..=9999).
    #[arg(long = "weight")]
    weights: Vec<String>,
    /// Output image.
    #[arg(long, short)]
    out: PathBuf,
    /// Replace an existing image.
    #[arg(long)]
    force: bool,
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(v)
        .map_err(|e| Failure::new(Code::Failed, format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Sends one request and prints its final reply: JSON when `json`, else rendered by `human`.
fn live(
    path: &std::path::Path,
    req: Request,
    json: bool,
    human: impl Fn(&Reply) -> Option<String>,
) -> Result<Reply> {
    let mut c = Client::connect(path)?;
    let reply = c.call(&req, |r| {
        // Streamed lines: progress and events.
        if json {
            let _ = print_json_line(r);
        } else if let Some(t) = human(r) {
            print!("{t}");
        }
    })?;
    if json {
        // One compact JSON document per line, streamed lines included.
        print_json_line(&reply)?;
    } else if let Some(t) = human(&reply) {
        print!("{t}");
    }
    Ok(reply)
}

fn print_json_line<T: serde::Serialize>(v: &T) -> Result<()> {
    let text = serde_json::to_string(v)
        .map_err(|e| Failure::new(Code::Failed, format!("cannot encode JSON: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Renders any reply a live command can get.
fn human(r: &Reply) -> Option<String> {
    Some(match r {
        Reply::Info(i) => render::info(i, false),
        Reply::Mode(m) => render::mode(m),
        Reply::Done { message } => format!("{message}\n"),
        Reply::Event(e) => render::event(e),
        Reply::EndOfEvents => return None,
        Reply::Progress(p) => render::progress(p),
        Reply::Published { revision, files } => {
            format!("published revision {revision} ({files} files)\n")
        }
        Reply::SyncDone(s) => render::sync(s),
        Reply::Diff(d) => render::diff(d),
        Reply::Synctest(s) => render::synctest(s),
        Reply::Rotate(r) => render::rotate(r),
        Reply::Error(e) => format!("error: {}\n", e.message),
    })
}

fn absolute(p: &std::path::Path) -> Result<String> {
    std::fs::canonicalize(p)
        .map(|p| p.display().to_string())
        .map_err(|e| Failure::file("cannot read", p, &e))
}

fn run(cli: Cli) -> Result<()> {
    let socket = &client::socket_path(cli.socket);
    let config_socket = &client::config_socket_path(cli.config_socket);
    match cli.cmd {
        Cmd::Info { verbose, json } => {
            let mut c = Client::connect(socket)?;
            let Reply::Info(mut info) = c.call(&Request::Info { verbose }, |_| {})? else {
                return Err(Failure::new(
                    Code::Failed,
                    "the daemon answered info with another reply",
                ));
            };
            // The sync column comes from the configuration-sync service, when it runs.
            let sync = Client::connect(config_socket)
                .and_then(|mut c| c.call(&Request::ConfigSynctest, |_| {}))
                .map_err(|f| f.message);
            render::merge_sync(&mut info, sync);
            if json {
                print_json_line(&Reply::Info(info))
            } else {
                print!("{}", render::info(&info, verbose));
                Ok(())
            }
        }
        Cmd::Mode { json } => live(socket, Request::Mode, json, human).map(drop),
        Cmd::Active => live(socket, Request::Active, false, human).map(drop),
        Cmd::Passive => live(socket, Request::Passive, false, human).map(drop),
        Cmd::Reset => live(socket, Request::Reset, false, human).map(drop),
        Cmd::Reload => live(socket, Request::Reload, false, human).map(drop),
        Cmd::Events { follow, last, json } => {
            live(socket, Request::Events { follow, last }, json, human).map(drop)
        }
        Cmd::Config(ConfigCmd::Publish { comment, json }) => live(
            config_socket,
            Request::ConfigPublish { comment },
            json,
            human,
        )
        .map(drop),
        Cmd::Config(ConfigCmd::Events { follow, last, json }) => {
            live(config_socket, Request::Events { follow, last }, json, human).map(drop)
        }
        Cmd::Sync { peer, json } => {
            live(config_socket, Request::ConfigSync { peer }, json, human).map(drop)
        }
        Cmd::Diff { file, peer, json } => live(
            config_socket,
            Request::ConfigDiff { path: file, peer },
            json,
            human,
        )
        .map(drop),
        Cmd::Synctest { json } => {
            match live(config_socket, Request::ConfigSynctest, json, human)? {
                Reply::Synctest(r)
                    if !r.local_changes.is_empty()
                        || r.peers.iter().any(|p| {
                            !p.unsynchronized.is_empty()
                                || p.state != ha_mgmt_api::SyncState::Synchronized
                        }) =>
                {
                    Err(Failure::new(
                        Code::NotSynced,
                        "the configuration is not synchronized",
                    ))
                }
                _ => Ok(()),
            }
        }
        Cmd::Cluster(ClusterCmd::Create {
            cluster_id,
            psk_file,
        }) => {
            // Checked here so that a bad key file is reported before the daemon is asked.
            pskfile::read(&psk_file)?;
            let psk_file = absolute(&psk_file)?;
            live(
                config_socket,
                Request::ClusterCreate {
                    cluster_id,
                    psk_file,
                },
                false,
                human,
            )
            .map(drop)
        }
        Cmd::Cluster(ClusterCmd::Join {
            peer,
            psk_file,
            ha_address,
            member_sockets,
        }) => {
            if peer.parse::<std::net::SocketAddr>().is_err() {
                return Err(Failure::new(
                    Code::Refused,
                    format!("--peer {peer:?} is not IP:PORT"),
                ));
            }
            if let Some(a) = &ha_address {
                if a.parse::<std::net::SocketAddrV4>().is_err() {
                    return Err(Failure::new(
                        Code::Refused,
                        format!("--ha-address {a:?} is not IPv4:PORT"),
                    ));
                }
            }
            pskfile::read(&psk_file)?;
            let psk_file = absolute(&psk_file)?;
            live(
                config_socket,
                Request::ClusterJoin { peer, psk_file },
                false,
                human,
            )?;
            if let Some(main_link) = ha_address {
                // This member's serial, from its own daemon.
                let mut c = Client::connect(socket)?;
                let Reply::Info(info) = c.call(&Request::Info { verbose: false }, |_| {})? else {
                    return Err(Failure::new(Code::Failed, "the daemon did not answer info"));
                };
                for p in &member_sockets {
                    live(
                        p,
                        Request::MemberAdd {
                            serial: info.me.clone(),
                            main_link: main_link.clone(),
                        },
                        false,
                        human,
                    )?;
                }
            }
            Ok(())
        }
        Cmd::Cluster(ClusterCmd::Remove {
            serial,
            member_sockets,
        }) => {
            live(
                config_socket,
                Request::ClusterRemove {
                    serial: serial.clone(),
                },
                false,
                human,
            )?;
            for p in &member_sockets {
                live(
                    p,
                    Request::MemberRemove {
                        serial: serial.clone(),
                    },
                    false,
                    human,
                )?;
            }
            Ok(())
        }
        Cmd::Update {
            image,
            members,
            install,
            expect_version,
            timeout_s,
            poll_ms,
            settle_polls,
            json,
        } => {
            let image = absolute(&image)?;
            let Some(install) = install else {
                return live(socket, Request::Update { image }, false, human).map(drop);
            };
            let mut sockets = Vec::new();
            for m in &members {
                let (serial, path) = m.split_once('=').ok_or_else(|| {
                    Failure::new(
                        Code::Refused,
                        format!("--member {m:?}: expected SERIAL=SOCKET"),
                    )
                })?;
                sockets.push((serial.to_string(), PathBuf::from(path)));
            }
            if sockets.len() < 2 {
                return Err(Failure::new(
                    Code::Refused,
                    "a rolling update needs every member as --member SERIAL=SOCKET (at least two)",
                ));
            }
            let poll = std::time::Duration::from_millis(poll_ms.max(10));
            let mut cluster = SocketCluster {
                sockets,
                install,
                image,
                poll,
            };
            let max_polls = (timeout_s.saturating_mul(1000) / poll_ms.max(10)).max(1) as u32;
            let done = update::run(
                &mut cluster,
                expect_version.as_deref(),
                max_polls,
                settle_polls,
                |a| {
                    if json {
                        let (step, serial) = match a {
                            update::Action::Install(s) => ("install", s),
                            update::Action::WaitRejoin(s) => ("wait_rejoin", s),
                            update::Action::ForcePassive(s) => ("force_passive", s),
                            update::Action::WaitTakeover(s) => ("wait_takeover", s),
                            update::Action::ResetForcing(s) => ("reset_forcing", s),
                        };
                        println!(
                            "{}",
                            serde_json::json!({"type": "update_step", "step": step, "member": serial})
                        );
                    } else {
                        println!("update: {a:?}");
                    }
                },
            )
            .map_err(|e| {
                let code = match e {
                    update::UpdateError::NotRedundant(_) => Code::Refused,
                    _ => Code::Failed,
                };
                Failure::new(code, e.to_string())
            })?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"type": "update_done", "steps": done.len()})
                );
            } else {
                println!("update done: every member runs the new image");
            }
            Ok(())
        }
        Cmd::Psk(PskCmd::Rotate {
            psk_file,
            key_id,
            member_sockets,
            config_member_sockets,
            json,
        }) => {
            pskfile::read(&psk_file)?;
            let psk_file = absolute(&psk_file)?;
            let sockets = if member_sockets.is_empty() {
                vec![socket.clone()]
            } else {
                member_sockets
            };
            psk_rotate(&sockets, &config_member_sockets, psk_file, key_id, json)
        }
        Cmd::Psk(PskCmd::Status { json }) => {
            live(socket, Request::PskRotateStatus, json, human).map(drop)
        }
        Cmd::Psk(PskCmd::Generate {
            out,
            force,
            show,
            from_passphrase,
            passphrase_file,
        }) => {
            let psk = if from_passphrase {
                let pass = pskfile::read_passphrase(passphrase_file.as_deref())?;
                let v = strength::check(&pass, &[]);
                if !v.accepted {
                    return Err(Failure::new(
                        Code::Refused,
                        format!(
                            "passphrase refused: {}",
                            v.reason.unwrap_or_else(|| "too weak".into())
                        ),
                    ));
                }
                pskfile::from_passphrase(&pass)
            } else {
                pskfile::generate()?
            };
            pskfile::write(&out, &psk, force)?;
            eprintln!(
                "wrote a 256-bit key to {} (mode 600), fingerprint {}",
                out.display(),
                hex(&ha_proto::config_block::psk_fingerprint(&psk))
            );
            if show {
                let text = pskfile::to_hex(&psk);
                let mut o = std::io::stdout().lock();
                let _ = writeln!(o, "{}", &*text);
            }
            Ok(())
        }
        Cmd::Psk(PskCmd::Check {
            file,
            context,
            json,
        }) => {
            let pass = pskfile::read_passphrase(file.as_deref())?;
            let ctx: Vec<&str> = context.iter().map(String::as_str).collect();
            let v = strength::check(&pass, &ctx);
            if json {
                print_json(&v)?;
            } else {
                println!(
                    "score {}/4, about 10^{:.1} guesses, {} characters: {}",
                    v.score,
                    v.guesses_log10,
                    v.length,
                    if v.accepted { "accepted" } else { "refused" }
                );
                for s in &v.suggestions {
                    println!("  suggestion: {s}");
                }
            }
            if v.accepted {
                Ok(())
            } else {
                Err(Failure::new(
                    Code::Refused,
                    format!(
                        "passphrase refused: {}",
                        v.reason.unwrap_or_else(|| "too weak".into())
                    ),
                ))
            }
        }
        Cmd::Provision(a) => {
            let psk = pskfile::read(&a.psk_file)?;
            let plan = provision::Plan {
                serial: a.serial,
                cluster_id: a.cluster_id,
                key_id: a.key_id,
                encrypt: a.encrypt,
                members: a.members,
                backup_link: a.backup_link,
                state_sync_port: a.state_sync_port,
                timers: a.timers,
                domains: a.domains,
                aggregate: a.aggregate,
                tpm: a.tpm,
                weights: a.weights,
            };
            let block = plan.block(psk)?;
            provision::write_image(&block, &a.out, a.force)?;
            eprintln!(
                "wrote the configuration image of {} to {} (mode 600)",
                block.serial,
                a.out.display()
            );
            Ok(())
        }
        Cmd::Inspect { file, json } => {
            let block = provision::read_image(&file)?;
            let v = inspect::view(&block);
            if json {
                print_json(&v)
            } else {
                print!("{}", inspect::render(&v));
                Ok(())
            }
        }
    }
}

/// The members' daemons and the site's install hook, for the rolling update.
struct SocketCluster {
    sockets: Vec<(String, PathBuf)>,
    install: PathBuf,
    image: String,
    poll: std::time::Duration,
}

impl SocketCluster {
    fn socket(&self, serial: &str) -> std::result::Result<&PathBuf, String> {
        self.sockets
            .iter()
            .find(|(s, _)| s == serial)
            .map(|(_, p)| p)
            .ok_or_else(|| format!("no --member socket for {serial}"))
    }

    fn call(&self, path: &std::path::Path, req: &Request) -> std::result::Result<Reply, String> {
        let mut c = Client::connect(path).map_err(|f| f.message)?;
        c.call(req, |_| {}).map_err(|f| f.message)
    }
}

impl update::Cluster for SocketCluster {
    fn info(&mut self) -> std::result::Result<ha_mgmt_api::ClusterInfo, String> {
        let mut last = String::from("no member answered");
        for (_, p) in &self.sockets {
            match self.call(p, &Request::Info { verbose: false }) {
                Ok(Reply::Info(i)) => return Ok(i),
                Ok(_) => last = format!("{}: not an info reply", p.display()),
                Err(e) => last = e,
            }
        }
        Err(last)
    }

    fn info_of(&mut self, serial: &str) -> std::result::Result<ha_mgmt_api::ClusterInfo, String> {
        let p = self.socket(serial)?.clone();
        match self.call(&p, &Request::Info { verbose: false })? {
            Reply::Info(i) => Ok(i),
            _ => Err(format!("{}: not an info reply", p.display())),
        }
    }

    fn force_passive(&mut self, serial: &str) -> std::result::Result<(), String> {
        let p = self.socket(serial)?.clone();
        self.call(&p, &Request::Passive).map(drop)
    }

    fn reset_forcing(&mut self, serial: &str) -> std::result::Result<(), String> {
        let p = self.socket(serial)?.clone();
        self.call(&p, &Request::Reset).map(drop)
    }

    fn install(&mut self, serial: &str) -> std::result::Result<(), String> {
        let st = std::process::Command::new(&self.install)
            .arg(serial)
            .arg(&self.image)
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("install hook {}: {e}", self.install.display()))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!(
                "install hook {} failed for {serial} ({st})",
                self.install.display()
            ))
        }
    }

    fn pause(&mut self) {
        std::thread::sleep(self.poll);
    }
}

/// `hactl psk rotate`: the whole rollover over every member's daemon, in the order of
/// [`rotation::Rollover`] (every member accepts the new key, then every member seals with it,
/// then every member retires the old one).
fn psk_rotate(
    sockets: &[PathBuf],
    config_sockets: &[PathBuf],
    psk_file: String,
    key_id: u8,
    json: bool,
) -> Result<()> {
    // Every member must take part, or the ones left out would lose the others' frames.
    let first = sockets
        .first()
        .ok_or_else(|| Failure::new(Code::Refused, "no member socket"))?;
    let mut c = Client::connect(first)?;
    if let Reply::Info(i) = c.call(&Request::Info { verbose: false }, |_| {})? {
        let n = i.members.len();
        if n != sockets.len() || (!config_sockets.is_empty() && n != config_sockets.len()) {
            return Err(Failure::new(
                Code::Refused,
                format!(
                    "the cluster has {n} members but {} management socket(s) and {} \
                     configuration-sync socket(s) were given; list every member with \
                     --member-socket (and --config-member-socket)",
                    sockets.len(),
                    config_sockets.len()
                ),
            ));
        }
    }
    // The HA links first, then the configuration-sync channel (independent keyrings).
    let mut total = 0;
    for group in [sockets, config_sockets] {
        if group.is_empty() {
            continue;
        }
        total = rollover(group, &psk_file, key_id, json)?;
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"type": "rotation_done", "key_id": key_id, "members": total})
        );
    } else {
        println!("every member ({total}) now seals with and accepts only key id {key_id}");
    }
    Ok(())
}

/// One rollover over `sockets`; returns the number of members.
fn rollover(sockets: &[PathBuf], psk_file: &str, key_id: u8, json: bool) -> Result<usize> {
    let mut members: Vec<rotation::ApiMember> = sockets
        .iter()
        .map(|p| rotation::ApiMember::new(p.clone(), psk_file.to_string()))
        .collect();
    let steps = rotation::rotate(&mut members, key_id, |m, step| {
        let line = serde_json::json!({
            "type": "rotation_step",
            "member": sockets[m].display().to_string(),
            "step": format!("{step:?}").to_lowercase(),
        });
        if json {
            println!("{line}");
        } else {
            println!("{}: {step:?}", sockets[m].display());
        }
    })
    .map_err(|e| {
        let code = match e {
            rotation::RotationError::Member { .. } => Code::Failed,
            _ => Code::Refused,
        };
        Failure::new(code, format!("PSK rotation stopped: {e}"))
    })?;
    Ok(steps.len())
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("hactl: {}", f.message);
            ExitCode::from(f.code as u8)
        }
    }
}
