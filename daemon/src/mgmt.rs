//! The management API server: JSON lines on a unix socket (mode 0600), request and reply
//! types from `ha-mgmt-api`. One thread per client.
//!
//! What it answers from: the controller's last [`HostMsg::Status`] (info, mode), its events
//! ([`HostMsg::Event`]), its key state ([`HostMsg::KeyState`]); what it sends through the
//! host loop's outbox: forcing ([`HostMsg::Admin`]), status requests, and the PSK rollover
//! messages. Requests that belong to other tools (configuration sync, cluster membership,
//! updates) get an `unsupported` error naming the tool.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ha_mgmt_api::{ApiError, ErrorCode, Event, ForwardingReport, Reply, Request};
use ha_proto::config_block::ConfigBlock;
use ha_proto::msg::host::{HostMsg, StatusReport};
use ha_proto::msg::member::AdminCommand;

use crate::runtime::{unix_ms, Outbox, Shared};
use crate::syncplane::{DrainHook, ResyncHook, SyncKeyHook};

/// How long a command waits for the controller's confirmation (status or key state).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);
/// A status request unanswered this long is sent again (until [`CONFIRM_TIMEOUT`]): the
/// host link is allowed to lose a frame (the controller drops frames while the line is
/// stalled, a damaged frame is rejected), and one lost frame must not fail an operator's
/// command.
pub const STATUS_RESEND: Duration = Duration::from_millis(400);
/// Longest wait for the peer's table before a planned swap; the swap then goes on and the
/// timeout is reported in the event log.
pub const RESYNC_BOUND: Duration = Duration::from_secs(2);

fn err(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply::Error(ApiError {
        code,
        message: message.into(),
    })
}

/// A condition on the shared state that confirms a step.
type Confirm = Box<dyn Fn(&Shared) -> bool>;

/// The server's state.
#[derive(Clone)]
pub struct MgmtServer {
    shared: Arc<Mutex<Shared>>,
    outbox: Arc<Mutex<Outbox>>,
    resync: Option<ResyncHook>,
    drain: Option<DrainHook>,
    block_path: Option<PathBuf>,
    /// The block whose settings the controller runs, as far as this daemon knows: read at
    /// start, replaced by every reload, membership change and key rollover it makes.
    applied: Arc<Mutex<Option<ConfigBlock>>>,
    /// The daemon's configuration as it runs (its file is read again by a reload).
    daemon_cfg: Option<Arc<Mutex<crate::config::DaemonConfig>>>,
    sync_keys: Option<SyncKeyHook>,
}

impl MgmtServer {
    /// A server answering from `shared` and sending through `outbox`.
    pub fn new(shared: Arc<Mutex<Shared>>, outbox: Outbox) -> Self {
        Self {
            shared,
            outbox: Arc::new(Mutex::new(outbox)),
            resync: None,
            drain: None,
            block_path: None,
            applied: Arc::new(Mutex::new(None)),
            daemon_cfg: None,
            sync_keys: None,
        }
    }

    /// Before `active` makes this passive member the active one (a planned swap), ask the
    /// peer for its whole connection table and wait for it, at most [`RESYNC_BOUND`]
    /// (SPEC C3). Without a hook the swap does not wait.
    pub fn with_resync(mut self, hook: Option<ResyncHook>) -> Self {
        self.resync = hook;
        self
    }

    /// Before `passive` hands this active member's role to the peer (a planned swap), wait
    /// until the peer has acknowledged every connection change made here, at most
    /// [`RESYNC_BOUND`] (SPEC C3: the peer takes over with the whole table). Without a hook
    /// the swap does not wait.
    pub fn with_drain(mut self, hook: Option<DrainHook>) -> Self {
        self.drain = hook;
        self
    }

    /// Where this member's configuration block lives: a completed PSK rollover writes the
    /// new key into it, so that a restarted controller or daemon comes back with the key the
    /// cluster uses (in QEMU the block file is the controller's flash image).
    pub fn with_block_path(mut self, path: Option<PathBuf>) -> Self {
        let block = path.as_deref().and_then(|p| ha_persist::read_block(p).ok());
        self.set_applied_block_opt(block);
        self.block_path = path;
        self
    }

    /// The daemon's configuration as it runs: `hactl reload` reads its file
    /// ([`crate::config::DaemonConfig::source`]) again and applies the monitored interfaces.
    pub fn with_daemon_config(mut self, cfg: crate::config::DaemonConfig) -> Self {
        self.daemon_cfg = Some(Arc::new(Mutex::new(cfg)));
        self
    }

    fn applied_block(&self) -> Option<ConfigBlock> {
        self.applied
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn set_applied_block(&self, block: ConfigBlock) {
        self.set_applied_block_opt(Some(block));
    }

    fn set_applied_block_opt(&self, block: Option<ConfigBlock>) {
        *self.applied.lock().unwrap_or_else(|p| p.into_inner()) = block;
    }

    /// The state-sync keys follow every rollover phase the controller confirmed
    /// ([`crate::synckeys`]): without the hook they stay as they started.
    pub fn with_sync_keys(mut self, hook: Option<SyncKeyHook>) -> Self {
        self.sync_keys = hook;
        self
    }

    fn shared(&self) -> std::sync::MutexGuard<'_, Shared> {
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, m: HostMsg) -> Result<(), Box<Reply>> {
        self.outbox
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .send(m)
            .map_err(|_| Box::new(err(ErrorCode::Internal, "the host loop has stopped")))
    }

    /// Waits until `cond` holds on the shared state, at most [`CONFIRM_TIMEOUT`].
    fn wait_for(&self, cond: impl Fn(&Shared) -> bool) -> bool {
        self.wait_until(Instant::now() + CONFIRM_TIMEOUT, cond)
    }

    /// Waits until `cond` holds on the shared state, at most until `deadline`.
    fn wait_until(&self, deadline: Instant, cond: impl Fn(&Shared) -> bool) -> bool {
        loop {
            if cond(&self.shared()) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
    }

    /// Asks the controller for a fresh status and waits for it, asking again every
    /// [`STATUS_RESEND`] (counted in `status_resends`) until [`CONFIRM_TIMEOUT`].
    fn fresh_status(&self) -> Result<(StatusReport, u64), Box<Reply>> {
        let asked = unix_ms();
        let deadline = Instant::now() + CONFIRM_TIMEOUT;
        let fresh = |s: &Shared| s.status.as_ref().is_some_and(|(_, t)| *t >= asked);
        loop {
            self.send(HostMsg::StatusRequest)?;
            if self.wait_until((Instant::now() + STATUS_RESEND).min(deadline), fresh) {
                break;
            }
            if Instant::now() >= deadline {
                return Err(Box::new(err(
                    ErrorCode::Unreachable,
                    "the management controller did not answer a status request",
                )));
            }
            self.shared().status_resends += 1;
        }
        self.shared()
            .status
            .clone()
            .ok_or_else(|| Box::new(err(ErrorCode::Internal, "status vanished")))
    }

    fn mode_report(&self, report: &StatusReport, arrived: u64) -> Reply {
        match report.members.iter().find(|m| m.local) {
            Some(m) => Reply::Mode(forcing::report_of(m, report, arrived)),
            None => err(
                ErrorCode::Internal,
                "status report without the local member",
            ),
        }
    }

    /// Sends `command` to the controller and answers with this member's mode once its status
    /// shows the effect (`done` on the local member), or an error naming `what` after
    /// [`CONFIRM_TIMEOUT`].
    fn admin_confirmed(
        &self,
        command: AdminCommand,
        what: &str,
        done: impl Fn(&ha_proto::msg::host::MemberSummary) -> bool,
    ) -> Reply {
        if let Err(e) = self.send(HostMsg::Admin {
            target: None,
            command,
        }) {
            return *e;
        }
        let deadline = Instant::now() + CONFIRM_TIMEOUT;
        loop {
            match self.fresh_status() {
                Ok((r, t)) => {
                    if r.members.iter().any(|m| m.local && done(m)) {
                        return self.mode_report(&r, t);
                    }
                }
                Err(e) => return *e,
            }
            if Instant::now() >= deadline {
                return err(
                    ErrorCode::Unreachable,
                    format!("the controller did not confirm {what}"),
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Answers one request; streamed replies go to `out` before the final one is returned.
    pub fn handle(
        &self,
        req: Request,
        out: &mut dyn FnMut(&Reply) -> io::Result<()>,
    ) -> io::Result<Reply> {
        Ok(match req {
            Request::Info { verbose } => match self.fresh_status() {
                Ok((r, t)) => Reply::Info(cluster_info(&self.shared(), &r, t, verbose)),
                Err(e) => *e,
            },
            Request::Mode => match self.fresh_status() {
                Ok((r, t)) => self.mode_report(&r, t),
                Err(e) => *e,
            },
            Request::Forwarding => {
                let sh = self.shared();
                let f = &sh.forwarding;
                Reply::Forwarding(ForwardingReport {
                    serial: sh.serial.as_str().to_string(),
                    active: f.active,
                    domains: f.domains.clone(),
                    since_ms: f.since_ms,
                    changes: f.changes,
                    started_ms: f.started_ms,
                    now_ms: unix_ms(),
                    controller_alive: f.controller_alive,
                    // One of the two is used: the userspace path's connections or the
                    // kernel path's conntrack entries.
                    table_connections: ["table_connections", "table_kernel_connections"]
                        .iter()
                        .map(|k| sh.sync_counters.get(*k).copied())
                        .sum(),
                    peer_table: sh.table_held.as_ref().map(|(held, why)| {
                        format!("{} ({why})", if *held { "held" } else { "not held" })
                    }),
                })
            }
            Request::Active => self.force_local(ha_proto::msg::Forced::Active),
            Request::Passive => self.force_local(ha_proto::msg::Forced::Passive),
            Request::Reset => self.force_local(ha_proto::msg::Forced::None),
            Request::Force { member, forced } => self.force_member(&member, forced),
            Request::Pause { .. } | Request::Resume => {
                let (command, want) = match req {
                    Request::Pause { seconds } => (AdminCommand::Pause { seconds }, true),
                    _ => (AdminCommand::Resume, false),
                };
                let what = if want { "the pause" } else { "the resume" };
                self.admin_confirmed(command, what, |m| m.paused == want)
            }
            Request::Reload => self.reload(),
            Request::Events { follow, last } => {
                let me = self.shared().serial.as_str().to_string();
                let (past, rx) = {
                    let mut sh = self.shared();
                    // The controller's events and the daemon's own, merged by time.
                    let mut all: Vec<Event> = sh
                        .events
                        .iter()
                        .map(|(e, t)| event_of(e, *t, &me))
                        .chain(sh.local_events.iter().cloned())
                        .collect();
                    all.sort_by_key(|e| e.time_ms);
                    let n = last.map(|n| n as usize).unwrap_or(usize::MAX);
                    let skip = all.len().saturating_sub(n);
                    let past: Vec<Event> = all.into_iter().skip(skip).collect();
                    let rx = follow.then(|| {
                        let (tx, rx) = mpsc::channel();
                        let (ltx, lrx) = mpsc::channel();
                        sh.followers.push(tx);
                        sh.local_followers.push(ltx);
                        (rx, lrx)
                    });
                    (past, rx)
                };
                for e in past {
                    out(&Reply::Event(e))?;
                }
                match rx {
                    None => Reply::EndOfEvents,
                    Some((rx, lrx)) => loop {
                        // The client closing the socket ends the stream (`out` fails).
                        while let Ok(e) = lrx.try_recv() {
                            out(&Reply::Event(e))?;
                        }
                        match rx.recv_timeout(Duration::from_millis(100)) {
                            Ok((e, t)) => {
                                out(&Reply::Event(event_of(&e, t, &me)))?;
                            }
                            Err(mpsc::RecvTimeoutError::Timeout) => {}
                            Err(mpsc::RecvTimeoutError::Disconnected) => break Reply::EndOfEvents,
                        }
                    },
                }
            }
            Request::PskRotate { psk_file, key_id } => self.psk_rotate(&psk_file, key_id),
            Request::PskRotateStatus => self.rotate_status(),
            Request::ConfigPublish { .. }
            | Request::ConfigSync { .. }
            | Request::ConfigDiff { .. }
            | Request::ConfigSynctest => err(
                ErrorCode::Unsupported,
                "configuration sync is served by confsync, not ha-daemon",
            ),
            Request::ClusterCreate { .. }
            | Request::ClusterJoin { .. }
            | Request::ClusterRemove { .. } => err(
                ErrorCode::Unsupported,
                "the membership document is kept by confsync; ha-daemon changes the HA member \
                 list (member_add, member_remove)",
            ),
            Request::MemberAdd {
                serial,
                main_link,
                addresses,
            } => self.member_add(&serial, &main_link, &addresses),
            Request::MemberRemove { serial } => self.member_remove(&serial),
            Request::Update { .. } => {
                err(ErrorCode::Unsupported, "updates are not run by ha-daemon")
            }
            // Answered by `serve_client`, which replaces the process after the reply.
            Request::Restart { .. } => err(
                ErrorCode::Internal,
                "restart is answered by the connection's server",
            ),
        })
    }

    /// Serves one client until it closes the connection.
    pub fn serve_client(&self, stream: UnixStream) -> io::Result<()> {
        let mut writer = stream.try_clone()?;
        let mut reader = BufReader::new(stream);
        let mut line = String::new();
        loop {
            line.clear();
            let n = (&mut reader)
                .take(ha_mgmt_api::MAX_LINE_LEN as u64 + 1)
                .read_line(&mut line)?;
            if n == 0 {
                return Ok(());
            }
            let reply = match ha_mgmt_api::decode_line::<Request>(&line) {
                Ok(Request::Restart { binary }) => {
                    let forwarding = self.shared().forwarding.active;
                    match restart::prepare(&binary, forwarding) {
                        Ok(mut cmd) => {
                            let done = Reply::Done {
                                message: format!(
                                    "{} restarts from {binary} (process {})",
                                    self.shared().serial.as_str(),
                                    std::process::id()
                                ),
                            };
                            writer.write_all(ha_mgmt_api::encode_line(&done).as_bytes())?;
                            writer.flush()?;
                            eprintln!(
                                "<5>ha-daemon: restarting from {binary} (management request)"
                            );
                            // Returns only if the program could not be started.
                            let e = std::os::unix::process::CommandExt::exec(&mut cmd);
                            eprintln!("<3>ha-daemon: restart from {binary} failed: {e}");
                            err(ErrorCode::Internal, format!("exec {binary}: {e}"))
                        }
                        Err(refusal) => Reply::Error(refusal),
                    }
                }
                Ok(req) => {
                    let mut send =
                        |r: &Reply| writer.write_all(ha_mgmt_api::encode_line(r).as_bytes());
                    self.handle(req, &mut send)?
                }
                Err(e) => err(ErrorCode::BadRequest, e.to_string()),
            };
            writer.write_all(ha_mgmt_api::encode_line(&reply).as_bytes())?;
        }
    }

    /// Binds `path` (mode 0600, replacing a stale socket) and serves clients on threads until
    /// `stop` is set.
    pub fn spawn(self, path: &Path, stop: Arc<AtomicBool>) -> io::Result<JoinHandle<()>> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        listener.set_nonblocking(true)?;
        Ok(crate::spawn_named("ha-mgmt", move || {
            while !stop.load(Ordering::Relaxed) {
                if !ha_mgmt_api::server::wait_for_client(&listener, Duration::from_millis(100)) {
                    continue;
                }
                match listener.accept() {
                    Ok((s, _)) => {
                        let me = self.clone();
                        let _ = s.set_nonblocking(false);
                        crate::spawn_named("ha-mgmt-client", move || {
                            let _ = me.serve_client(s);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }))
    }
}

pub use ha_persist::write_block;

mod forcing;
mod membership;
mod reload;
mod render;
mod restart;
mod rotation;
mod swap;

pub use render::{cluster_info, event_kind};
use render::{event_of, member_mode};
pub use rotation::{persist_key, read_psk_file, update_block};

#[cfg(test)]
mod tests;
