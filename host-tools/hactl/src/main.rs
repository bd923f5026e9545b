//! hactl: PSK provisioning, cluster create/join/replace, status and control, configuration sync.
//!
//! Exit codes: 0 success, 1 operation failed, 2 bad command line, 3 refused input (weak
//! passphrase, invalid value, existing file, refused by the daemon), 4 file error, 5 daemon
//! unreachable, 6 missing, corrupt or invalid configuration image, 7 configuration not
//! synchronized (`synctest`).

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, Parser};
use ha_mgmt_api::{Forced, Reply, Request};
use hactl::client::{self, Client};
use hactl::exit::{Code, Failure, Result};
use hactl::{inspect, provision, pskfile, render, rotation, settings, strength, update};

mod cli;

use cli::{
    Cli, ClusterCmd, Cmd, ConfigCmd, DiffArgs, EventsArgs, LogArgs, PskCmd, ServiceEventsArgs,
    SyncArgs, SynctestArgs,
};

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
        Reply::Forwarding(f) => render::forwarding(f),
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
        Reply::Reloaded(r) => render::reloaded(r),
        Reply::Error(e) => format!("error: {}\n", e.message),
    })
}

/// The forcing request: of this member, or of `member` (by serial).
fn force(member: Option<String>, forced: Forced) -> Request {
    match (member, forced) {
        (Some(member), forced) => Request::Force { member, forced },
        (None, Forced::Active) => Request::Active,
        (None, Forced::Passive) => Request::Passive,
        (None, Forced::None) => Request::Reset,
    }
}

fn absolute(p: &std::path::Path) -> Result<String> {
    std::fs::canonicalize(p)
        .map(|p| p.display().to_string())
        .map_err(|e| Failure::file("cannot read", p, &e))
}

/// The daemon's and the service's sockets for the command: given after its name, else
/// before it (where both may be given for any command that talks to a member, as scripts
/// set them once), else the defaults. An offline command takes none: a socket given to it
/// is a command-line error, the operator expected it to talk to a member.
fn sockets(cli: &Cli) -> Result<(PathBuf, PathBuf)> {
    let usage = |m: &str| Err(Failure::new(Code::Usage, m.to_string()));
    let Some(uses) = cli.cmd.at() else {
        if !cli.at.is_empty() {
            return usage(
                "--socket and --config-socket apply to the commands that talk to a member's \
                 daemon or configuration-sync service; this one works offline",
            );
        }
        return Ok((client::socket_path(None), client::config_socket_path(None)));
    };
    let socket = uses
        .daemon
        .and_then(|d| d.socket.clone())
        .or_else(|| cli.at.socket.clone());
    let config_socket = uses
        .service
        .and_then(|s| s.config_socket.clone())
        .or_else(|| cli.at.config_socket.clone());
    Ok((
        client::socket_path(socket),
        client::config_socket_path(config_socket),
    ))
}

fn run(cli: Cli) -> Result<()> {
    let (socket, config_socket) = sockets(&cli)?;
    let (socket, config_socket) = (&socket, &config_socket);
    match cli.cmd {
        Cmd::Completions { shell } => {
            let mut out = std::io::stdout().lock();
            clap_complete::generate(shell, &mut Cli::command(), "hactl", &mut out);
            Ok(())
        }
        Cmd::Man => clap_mangen::Man::new(Cli::command())
            .render(&mut std::io::stdout().lock())
            .map_err(|e| Failure::new(Code::Failed, format!("writing the manual page: {e}"))),
        Cmd::Info { verbose, json, .. } => {
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
        Cmd::Mode { json, .. } => live(socket, Request::Mode, json, human).map(drop),
        Cmd::Forwarding { json, .. } => live(socket, Request::Forwarding, json, human).map(drop),
        Cmd::Active { member, .. } => {
            live(socket, force(member, Forced::Active), false, human).map(drop)
        }
        Cmd::Passive { member, .. } => {
            live(socket, force(member, Forced::Passive), false, human).map(drop)
        }
        Cmd::Reset { member, .. } => {
            live(socket, force(member, Forced::None), false, human).map(drop)
        }
        Cmd::Reload { json, .. } => live(socket, Request::Reload, json, human).map(drop),
        Cmd::Pause {
            seconds, command, ..
        } => {
            live(socket, Request::Pause { seconds }, false, human)?;
            let Some((program, args)) = command.split_first() else {
                return Ok(());
            };
            // Whatever the command does, decisions resume after it.
            let ran = std::process::Command::new(program).args(args).status();
            let resumed = live(socket, Request::Resume, false, human);
            match ran {
                Ok(st) if st.success() => resumed.map(drop),
                Ok(st) => Err(Failure::new(
                    Code::Failed,
                    format!("{program} failed ({st}); decisions resumed"),
                )),
                Err(e) => Err(Failure::new(
                    Code::Failed,
                    format!("cannot run {program}: {e}; decisions resumed"),
                )),
            }
        }
        Cmd::Resume { .. } => live(socket, Request::Resume, false, human).map(drop),
        Cmd::Events(EventsArgs {
            log: LogArgs { follow, last, json },
            ..
        }) => {
            let lines = render::EventLines::default();
            let with_gaps = |r: &Reply| match r {
                Reply::Event(e) => Some(lines.line(e)),
                _ => human(r),
            };
            live(socket, Request::Events { follow, last }, json, with_gaps).map(drop)
        }
        Cmd::Config(ConfigCmd::Publish { comment, json, .. }) => live(
            config_socket,
            Request::ConfigPublish { comment },
            json,
            human,
        )
        .map(drop),
        Cmd::Config(ConfigCmd::Events(ServiceEventsArgs {
            log: LogArgs { follow, last, json },
            ..
        })) => live(config_socket, Request::Events { follow, last }, json, human).map(drop),
        Cmd::Sync(SyncArgs { peer, json, .. })
        | Cmd::Config(ConfigCmd::Sync(SyncArgs { peer, json, .. })) => {
            live(config_socket, Request::ConfigSync { peer }, json, human).map(drop)
        }
        Cmd::Diff(DiffArgs {
            file, peer, json, ..
        })
        | Cmd::Config(ConfigCmd::Diff(DiffArgs {
            file, peer, json, ..
        })) => live(
            config_socket,
            Request::ConfigDiff { path: file, peer },
            json,
            human,
        )
        .map(drop),
        Cmd::Synctest(SynctestArgs { json, .. })
        | Cmd::Config(ConfigCmd::Synctest(SynctestArgs { json, .. })) => {
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
            ..
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
            ..
        }) => {
            if peer.parse::<std::net::SocketAddr>().is_err() {
                return Err(Failure::new(
                    Code::Refused,
                    format!("--peer {peer:?} is not IP:PORT"),
                ));
            }
            pskfile::read(&psk_file)?;
            let psk_file = absolute(&psk_file)?;
            // This member's serial and data-plane addresses, from its own daemon: the active
            // member adds them to its HA member list as it answers, as every --member-socket.
            let ha = match ha_address {
                Some(link) => Some(client::joining_member(socket, link)?),
                None => None,
            };
            live(
                config_socket,
                Request::ClusterJoin {
                    peer,
                    psk_file,
                    ha: ha.as_ref().map(|(_, h)| h.clone()),
                },
                false,
                human,
            )?;
            if let Some((me, h)) = ha {
                for p in &member_sockets {
                    live(
                        p,
                        Request::MemberAdd {
                            serial: me.clone(),
                            main_link: h.main_link.clone(),
                            addresses: h.addresses.clone(),
                        },
                        false,
                        human,
                    )?;
                }
            }
            Ok(())
        }
        Cmd::Cluster(ClusterCmd::Enroll(a)) => {
            let (peer, link, install) = (&a.peer, &a.main_link, a.install.as_deref());
            let said = provision::enroll_command(
                peer,
                &a.psk_file,
                &a.serial,
                link,
                &a.out,
                a.force,
                install,
            )?;
            println!("{said}");
            Ok(())
        }
        Cmd::Cluster(ClusterCmd::Remove {
            serial,
            member_sockets,
            ..
        }) => {
            live(
                config_socket,
                Request::ClusterRemove {
                    serial: serial.clone(),
                },
                false,
                human,
            )?;
            // The active member's service took it out of its own daemon's list and the
            // others follow the document: a listed daemon that no longer has it is done.
            for p in &member_sockets {
                let req = Request::MemberRemove {
                    serial: serial.clone(),
                };
                match Client::connect(p)?.call_api(&req)? {
                    Ok(reply) => {
                        if let Some(t) = human(&reply) {
                            print!("{t}");
                        }
                    }
                    Err(e) if e.code == ha_mgmt_api::ErrorCode::NotFound => {
                        println!("{serial} is not in {}'s HA member list", p.display())
                    }
                    Err(e) => return Err(client::api_failure(e.code, &e.message)),
                }
            }
            Ok(())
        }
        Cmd::Update {
            image,
            daemon,
            members,
            install,
            expect_version,
            timeout_s,
            poll_ms,
            settle_polls,
            json,
            ..
        } => {
            let image = image.as_deref().map(absolute).transpose()?;
            // The daemon's path is the one every member's main CPU runs (not resolved here:
            // this host may not be one of them), so it must be absolute as given.
            let daemon = daemon
                .map(|d| {
                    if d.is_absolute() {
                        Ok(d.display().to_string())
                    } else {
                        Err(Failure::new(
                            Code::Usage,
                            format!(
                                "--daemon {}: give the absolute path the members run it from",
                                d.display()
                            ),
                        ))
                    }
                })
                .transpose()?;
            let parts = update::Parts {
                image: image.is_some(),
                daemon: daemon.is_some(),
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
                daemon,
                poll,
            };
            let max_polls = (timeout_s.saturating_mul(1000) / poll_ms.max(10)).max(1) as u32;
            let done = update::run(
                &mut cluster,
                parts,
                expect_version.as_deref(),
                max_polls,
                settle_polls,
                |a| {
                    if json {
                        let (step, serial) = match a {
                            update::Action::Install(s) => ("install", s),
                            update::Action::RestartDaemon(s) => ("restart_daemon", s),
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
            ..
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
        Cmd::Psk(PskCmd::Status { json, .. }) => {
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
        Cmd::Settings(a) => {
            let switch = |v: Option<cli::OnOff>| match v {
                None => settings::Switch::Keep,
                Some(v) => settings::Switch::Set(v == cli::OnOff::On),
            };
            let edit = settings::Edit {
                timers: a.timers,
                weights: a.weights,
                aggregate: a.aggregate,
                tpm: switch(a.tpm),
                encrypt: switch(a.encrypt),
                backup_link: switch(a.backup_link),
                domains: a.domains,
            };
            print!("{}", settings::run(&a.file, &edit)?);
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
    install: Option<PathBuf>,
    image: Option<String>,
    daemon: Option<String>,
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
        let (Some(install), Some(image)) = (&self.install, &self.image) else {
            return Err("no --image and --install".into());
        };
        update::run_install_hook(install, serial, std::path::Path::new(image))
    }

    fn restart_daemon(&mut self, serial: &str) -> std::result::Result<(), String> {
        let binary = self.daemon.clone().ok_or("no --daemon")?;
        let p = self.socket(serial)?.clone();
        match self.call(&p, &Request::Restart { binary })? {
            Reply::Done { .. } => Ok(()),
            other => Err(format!("{serial}: {other:?}")),
        }
    }

    fn forwarding_of(
        &mut self,
        serial: &str,
    ) -> std::result::Result<ha_mgmt_api::ForwardingReport, String> {
        let p = self.socket(serial)?.clone();
        match self.call(&p, &Request::Forwarding)? {
            Reply::Forwarding(f) => Ok(f),
            other => Err(format!("{serial}: not a forwarding report: {other:?}")),
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
