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

use ha_mgmt_api::{
    ApiError, BannerLevel, ClusterInfo, ConfigSyncInfo, ErrorCode, Event, EventKind, Forced,
    LinkInfo, LinkStatus, MemberInfo, Mode, ModeReport, Reply, Request, RotateReport, SyncState,
    API_VERSION,
};
use ha_proto::config_block::{LinkAddr, MemberEntry};
use ha_proto::msg::host::{HostMsg, MemberSummary, StatusReport, WirePsk};
use ha_proto::msg::member::AdminCommand;
use ha_proto::msg::{LinkState, Role, Serial, MAX_MEMBERS};

use crate::app::{DrainHook, ResyncHook, ResyncOutcome, SyncKeyHook};
use crate::runtime::{unix_ms, Outbox, Shared};
use crate::synckeys::KeyPhase;

/// How long a command waits for the controller's confirmation (status or key state).
pub const CONFIRM_TIMEOUT: Duration = Duration::from_secs(3);
/// Longest wait for the peer's table before a planned swap; the swap then goes on and the
/// timeout is reported in the event log.
pub const RESYNC_BOUND: Duration = Duration::from_secs(2);

/// Maps a controller event name to the API's kind; `None` for names the API has no kind for.
pub fn event_kind(name: &str) -> Option<EventKind> {
    Some(match name {
        "role_changed" => EventKind::Swap,
        "peer_found" | "peer_restarted" => EventKind::PeerFound,
        "peer_lost" | "peer_unreachable" | "all_links_down" => EventKind::PeerLost,
        "link_down" => EventKind::LinkDown,
        "link_up" => EventKind::LinkUp,
        "quality_changed" => EventKind::QualityChanged,
        "collision" | "resync_requested" => EventKind::Collision,
        "paused" => EventKind::Pause,
        "resumed" => EventKind::Resume,
        "forcing_changed" => EventKind::Forced,
        "version_mismatch" => EventKind::VersionConflict,
        "config_mismatch" => EventKind::SyncFailure,
        "key_rotation" => EventKind::KeyRotation,
        "members_changed" | "members_refused" => EventKind::Members,
        _ => return None,
    })
}

fn mode_of(role: Role) -> Mode {
    match role {
        Role::Starting => Mode::Starting,
        Role::Active => Mode::Active,
        Role::Passive => Mode::Passive,
        Role::Disabled => Mode::Disabled,
    }
}

fn forced_of(f: ha_proto::msg::Forced) -> Forced {
    match f {
        ha_proto::msg::Forced::None => Forced::None,
        ha_proto::msg::Forced::Active => Forced::Active,
        ha_proto::msg::Forced::Passive => Forced::Passive,
    }
}

/// A member's overall mode: active when active in any domain, else its first domain's role.
fn member_mode(m: &MemberSummary) -> Mode {
    if !m.alive {
        return Mode::Unknown;
    }
    if m.domains.iter().any(|d| d.role == Role::Active) {
        return Mode::Active;
    }
    m.domains
        .first()
        .map(|d| mode_of(d.role))
        .unwrap_or(Mode::Unknown)
}

/// Builds the status table (SPEC E1) from a status report that arrived at `arrived_ms`.
pub fn cluster_info(
    sh: &Shared,
    report: &StatusReport,
    arrived_ms: u64,
    verbose: bool,
) -> ClusterInfo {
    let members: Vec<MemberInfo> = report
        .members
        .iter()
        .map(|m| {
            let since_ms =
                arrived_ms.saturating_sub(report.uptime_ms.saturating_sub(m.mode_since_ms));
            let counters = (verbose && m.local).then(|| {
                let mut c = std::collections::BTreeMap::new();
                c.insert("frames_sent".to_string(), u64::from(report.frames_sent));
                c.insert(
                    "frames_received".to_string(),
                    u64::from(report.frames_received),
                );
                c.insert(
                    "frames_rejected".to_string(),
                    u64::from(report.frames_rejected),
                );
                c.insert("host_frames_accepted".to_string(), sh.host_accepted);
                for (k, v) in &sh.host_rejects {
                    c.insert(format!("host_rejected_{k}"), *v);
                }
                for (k, v) in &sh.sync_counters {
                    c.insert(format!("sync_{k}"), *v);
                }
                if let Some(fp) = &sh.fast_path {
                    c.insert("fastpath_forwarded".into(), fp.forwarded);
                    c.insert("fastpath_dropped_filter".into(), fp.dropped_filter);
                    c.insert("fastpath_dropped_passive".into(), fp.dropped_passive);
                    c.insert("fastpath_garp_sent".into(), fp.garp_sent);
                }
                c
            });
            MemberInfo {
                serial: m.serial.as_str().to_string(),
                model: "mps2-an385".to_string(),
                firmware: format!(
                    "{}.{}.{}",
                    m.firmware.major, m.firmware.minor, m.firmware.patch
                ),
                forced: forced_of(m.forced),
                mode: member_mode(m),
                mode_since: since_ms / 1000,
                quality: m.quality,
                // The first configured domain's; per-domain priorities are in the report.
                priority: m.domains.first().map(|d| d.priority).unwrap_or(0),
                config_sync: ConfigSyncInfo {
                    state: if m.local {
                        SyncState::Source
                    } else {
                        SyncState::NoCommunication
                    },
                    last_sync: None,
                    detail: Some(
                        "configuration sync is reported by confsync, not ha-daemon".into(),
                    ),
                },
                // The member's HA boot is its controller's (its uptime rides on every
                // status report); peers do not report theirs.
                boot_time: if m.local {
                    arrived_ms.saturating_sub(report.uptime_ms) / 1000
                } else {
                    0
                },
                links: m
                    .links
                    .iter()
                    .enumerate()
                    .map(|(i, l)| LinkInfo {
                        name: if i == 0 { "main" } else { "backup" }.to_string(),
                        state: match l {
                            LinkState::Absent => LinkStatus::NotConfigured,
                            LinkState::Up => LinkStatus::Up,
                            LinkState::Down => LinkStatus::Down,
                        },
                        since: 0,
                    })
                    .collect(),
                config_revision: m.config_revision,
                counters,
            }
        })
        .collect();
    let actives = members.iter().filter(|m| m.mode == Mode::Active).count();
    let alive = report.members.iter().filter(|m| m.alive).count();
    let links_down = members
        .iter()
        .flat_map(|m| &m.links)
        .any(|l| l.state == LinkStatus::Down);
    let (banner, banner_text) = if actives > 1 {
        (
            BannerLevel::Critical,
            format!("{actives} members are active"),
        )
    } else if alive < 2 {
        (
            BannerLevel::Critical,
            "no redundancy: no peer is heard".to_string(),
        )
    } else if actives == 0 {
        (BannerLevel::Warning, "no member is active".to_string())
    } else if links_down {
        (BannerLevel::Warning, "an HA link is down".to_string())
    } else {
        (BannerLevel::Ok, format!("{alive} members, redundant"))
    };
    ClusterInfo {
        api_version: API_VERSION,
        cluster_id: sh.cluster_id,
        me: sh.serial.as_str().to_string(),
        banner,
        banner_text,
        members,
    }
}

fn err(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply::Error(ApiError {
        code,
        message: message.into(),
    })
}

/// Reads a PSK file ([`ha_persist::read_key_file`]: 64 hex digits, mode 0600 or stricter,
/// the one strength rule).
pub fn read_psk_file(path: &Path) -> Result<[u8; 32], String> {
    ha_persist::read_key_file(path)
        .map(|k| k.0)
        .map_err(|e| e.to_string())
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
        self.block_path = path;
        self
    }

    /// The state-sync keys follow every rollover phase the controller confirmed
    /// ([`crate::synckeys`]): without the hook they stay as they started.
    pub fn with_sync_keys(mut self, hook: Option<SyncKeyHook>) -> Self {
        self.sync_keys = hook;
        self
    }

    /// Moves the state-sync keys (keyring file, then engine) through the phase the
    /// controller just confirmed, and says so in the event log. On failure the rotation
    /// stops here with an error: the next phase on the peers would otherwise cut this
    /// member's state sync off (a retry catches up, see [`crate::synckeys`]).
    fn follow_sync_keys(
        &self,
        phase: KeyPhase,
        key_id: u8,
        psk: &[u8; 32],
    ) -> Result<(), Box<Reply>> {
        let Some(hook) = &self.sync_keys else {
            return Ok(());
        };
        let result = hook(phase, key_id, psk);
        let detail = match &result {
            Ok(line) => line.clone(),
            Err(e) => format!(
                "state-sync keys did NOT follow {} key id {key_id}: {e}",
                phase.name()
            ),
        };
        if result.is_err() {
            eprintln!("ha-daemon: {detail}");
        }
        self.shared().push_local_event(ha_mgmt_api::Event {
            time_ms: unix_ms(),
            kind: ha_mgmt_api::EventKind::KeyRotation,
            member: None,
            detail: detail.clone(),
        });
        result
            .map(|_| ())
            .map_err(|_| Box::new(err(ErrorCode::Internal, detail)))
    }

    /// Saves the rolled-over key in the configuration block, and says so in the event log
    /// (or why it could not).
    fn persist_rotated_key(&self, psk: &[u8; 32], key_id: u8) {
        let Some(path) = &self.block_path else { return };
        let detail = match persist_key(path, psk, key_id) {
            Ok(()) => format!(
                "key id {key_id} saved in the configuration block {}",
                path.display()
            ),
            Err(e) => {
                let msg = format!(
                    "key id {key_id} NOT saved in the configuration block ({e}): a restart of \
                     this member would come back with the old key; re-provision it"
                );
                eprintln!("ha-daemon: {msg}");
                msg
            }
        };
        self.shared().push_local_event(ha_mgmt_api::Event {
            time_ms: unix_ms(),
            kind: ha_mgmt_api::EventKind::KeyRotation,
            member: None,
            detail,
        });
    }

    /// Whether the local member is active in some domain now (a fresh status); `None` when
    /// the controller does not answer.
    fn locally_active(&self) -> Option<bool> {
        let (r, _) = self.fresh_status().ok()?;
        Some(
            r.members
                .iter()
                .find(|m| m.local)
                .is_some_and(|m| m.domains.iter().any(|d| d.role == Role::Active)),
        )
    }

    /// Runs a wait before a planned swap — `hook` with [`RESYNC_BOUND`] — when the local
    /// member's role is the one the wait is for (`when_active`), and puts what `describe`
    /// makes of the outcome in the event log as `kind`.
    fn wait_before_swap(
        &self,
        hook: Option<&ResyncHook>,
        when_active: bool,
        kind: ha_mgmt_api::EventKind,
        describe: fn(ResyncOutcome) -> Option<String>,
    ) {
        let Some(hook) = hook else { return };
        if self.locally_active() != Some(when_active) {
            return;
        }
        let Some(detail) = describe(hook(RESYNC_BOUND)) else {
            return;
        };
        self.shared().push_local_event(ha_mgmt_api::Event {
            time_ms: unix_ms(),
            kind,
            member: None,
            detail,
        });
    }

    /// The wait for the peer to acknowledge every change before a planned swap: only when
    /// this member is active now.
    fn drain_before_handover(&self) {
        self.wait_before_swap(
            self.drain.as_ref(),
            true,
            ha_mgmt_api::EventKind::BulkSyncSent,
            |outcome| match outcome {
                ResyncOutcome::Complete(d) => Some(format!(
                    "before the planned swap: the peer acknowledged every change in {} ms",
                    d.as_millis()
                )),
                ResyncOutcome::TimedOut(d) => Some(format!(
                    "before the planned swap: changes still unacknowledged after {} ms, swapping anyway",
                    d.as_millis()
                )),
                ResyncOutcome::NoPeer => Some("before the planned swap: no peer heard".into()),
                ResyncOutcome::Unsupported => None,
            },
        );
    }

    /// The wait for a resync before a planned swap: only when this member is passive now
    /// (an active member already holds the table).
    fn resync_before_takeover(&self) {
        self.wait_before_swap(
            self.resync.as_ref(),
            false,
            ha_mgmt_api::EventKind::BulkSyncReceived,
            |outcome| match outcome {
                ResyncOutcome::Complete(d) => Some(format!(
                    "resync before the planned swap: the peer's table arrived in {} ms",
                    d.as_millis()
                )),
                ResyncOutcome::TimedOut(d) => Some(format!(
                    "resync before the planned swap: not complete after {} ms, swapping anyway",
                    d.as_millis()
                )),
                ResyncOutcome::NoPeer => {
                    Some("resync before the planned swap: no peer heard".into())
                }
                ResyncOutcome::Unsupported => None,
            },
        );
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
        let deadline = Instant::now() + CONFIRM_TIMEOUT;
        while Instant::now() < deadline {
            if cond(&self.shared()) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// Asks the controller for a fresh status and waits for it.
    fn fresh_status(&self) -> Result<(StatusReport, u64), Box<Reply>> {
        let asked = unix_ms();
        self.send(HostMsg::StatusRequest)?;
        if !self.wait_for(|s| s.status.as_ref().is_some_and(|(_, t)| *t >= asked)) {
            return Err(Box::new(err(
                ErrorCode::Unreachable,
                "the management controller did not answer a status request",
            )));
        }
        self.shared()
            .status
            .clone()
            .ok_or_else(|| Box::new(err(ErrorCode::Internal, "status vanished")))
    }

    fn mode_report(&self, report: &StatusReport, arrived: u64) -> Reply {
        let sh = self.shared();
        match report.members.iter().find(|m| m.local) {
            Some(m) => Reply::Mode(ModeReport {
                serial: sh.serial.as_str().to_string(),
                mode: member_mode(m),
                forced: forced_of(m.forced),
                since: arrived.saturating_sub(report.uptime_ms.saturating_sub(m.mode_since_ms))
                    / 1000,
            }),
            None => err(
                ErrorCode::Internal,
                "status report without the local member",
            ),
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
            Request::Active | Request::Passive | Request::Reset => {
                let (command, want) = match req {
                    Request::Active => (AdminCommand::ForceActive, ha_proto::msg::Forced::Active),
                    Request::Passive => {
                        (AdminCommand::ForcePassive, ha_proto::msg::Forced::Passive)
                    }
                    _ => (AdminCommand::ResetForcing, ha_proto::msg::Forced::None),
                };
                match command {
                    AdminCommand::ForceActive => self.resync_before_takeover(),
                    AdminCommand::ForcePassive => self.drain_before_handover(),
                    _ => {}
                }
                if let Err(e) = self.send(HostMsg::Admin {
                    target: None,
                    command,
                }) {
                    return Ok(*e);
                }
                // Poll the status until the controller shows the forcing.
                let deadline = Instant::now() + CONFIRM_TIMEOUT;
                loop {
                    match self.fresh_status() {
                        Ok((r, t)) => {
                            if r.members.iter().any(|m| m.local && m.forced == want) {
                                break self.mode_report(&r, t);
                            }
                        }
                        Err(e) => break *e,
                    }
                    if Instant::now() >= deadline {
                        break err(
                            ErrorCode::Unreachable,
                            "the controller did not confirm the forcing",
                        );
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
            Request::Reload => match self.send(HostMsg::Admin {
                target: None,
                command: AdminCommand::Reload,
            }) {
                Ok(()) => Reply::Done {
                    message: "reload requested from the management controller".into(),
                },
                Err(e) => *e,
            },
            Request::Events { follow, last } => {
                let (past, rx) = {
                    let mut sh = self.shared();
                    // The controller's events and the daemon's own, merged by time.
                    let mut all: Vec<Event> = sh
                        .events
                        .iter()
                        .filter_map(|(e, t)| event_of(e, *t))
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
                                if let Some(e) = event_of(&e, t) {
                                    out(&Reply::Event(e))?;
                                }
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
            Request::MemberAdd { serial, main_link } => self.member_add(&serial, &main_link),
            Request::MemberRemove { serial } => self.member_remove(&serial),
            Request::Update { .. } => {
                err(ErrorCode::Unsupported, "updates are not run by ha-daemon")
            }
        })
    }

    /// Adds `serial` at `main_link` to the member list (see [`MgmtServer::change_members`]).
    fn member_add(&self, serial: &str, main_link: &str) -> Reply {
        let Some(s) = Serial::new(serial) else {
            return err(ErrorCode::BadRequest, format!("{serial:?} is not a serial"));
        };
        let Ok(addr) = main_link.parse::<std::net::SocketAddrV4>() else {
            return err(
                ErrorCode::BadRequest,
                format!("main link {main_link:?}: expected IPv4:PORT"),
            );
        };
        self.change_members(|list| {
            if list.iter().any(|m| m.serial == s) {
                return Err(format!("{serial} is already a member"));
            }
            list.push(MemberEntry {
                serial: s,
                main_link: LinkAddr {
                    ip: addr.ip().octets(),
                    port: addr.port(),
                },
            })
            .map_err(|_| format!("the cluster is full ({MAX_MEMBERS} members)"))
        })
    }

    /// Removes `serial` from the member list (see [`MgmtServer::change_members`]).
    fn member_remove(&self, serial: &str) -> Reply {
        let me = self.shared().serial;
        self.change_members(|list| {
            if me.as_str() == serial {
                return Err("a member cannot remove itself".into());
            }
            let before = list.len();
            list.retain(|m| m.serial.as_str() != serial);
            if list.len() == before {
                return Err(format!("{serial} is not a member"));
            }
            Ok(())
        })
    }

    /// Changes this member's HA member list: the configuration block's list, edited by
    /// `edit`, goes to the controller (`HostMsg::Members`); once its status lists exactly
    /// those members, the block is saved with them (so a restart keeps them). A refused edit
    /// or list changes nothing.
    fn change_members(
        &self,
        edit: impl FnOnce(&mut heapless::Vec<MemberEntry, MAX_MEMBERS>) -> Result<(), String>,
    ) -> Reply {
        let Some(path) = self.block_path.clone() else {
            return err(ErrorCode::Unsupported, "no configuration block to change");
        };
        let mut block = match read_block(&path) {
            Ok(b) => b,
            Err(e) => return err(ErrorCode::Internal, e),
        };
        if let Err(e) = edit(&mut block.members) {
            return err(ErrorCode::Refused, e);
        }
        if let Err(e) = block.validate() {
            return err(
                ErrorCode::Refused,
                format!("the new member list is invalid: {e}"),
            );
        }
        let want: Vec<Serial> = block.members.iter().map(|m| m.serial).collect();
        if let Err(e) = self.send(HostMsg::Members(block.members.clone())) {
            return *e;
        }
        let same = move |s: &Shared| {
            s.status.as_ref().is_some_and(|(r, _)| {
                r.members.len() == want.len() && r.members.iter().all(|m| want.contains(&m.serial))
            })
        };
        if !self.wait_for(same) {
            return err(
                ErrorCode::Unreachable,
                "the management controller did not take the new member list",
            );
        }
        if let Err(e) = write_block(&path, &block) {
            return err(
                ErrorCode::Internal,
                format!(
                    "the controller uses the new member list, but the configuration block \
                     was not saved ({e}): a restart would bring the old list back"
                ),
            );
        }
        let list: Vec<&str> = block.members.iter().map(|m| m.serial.as_str()).collect();
        self.shared().push_local_event(ha_mgmt_api::Event {
            time_ms: unix_ms(),
            kind: ha_mgmt_api::EventKind::Members,
            member: None,
            detail: format!("member list now {}", list.join(", ")),
        });
        Reply::Done {
            message: format!(
                "{} now has {} members: {}",
                self.shared().serial.as_str(),
                list.len(),
                list.join(", ")
            ),
        }
    }

    fn rotate_status(&self) -> Reply {
        let sh = self.shared();
        let me = sh.serial.as_str().to_string();
        match &sh.key_state {
            None => Reply::Rotate(RotateReport {
                phase: "idle".into(),
                sealing_key_id: 0,
                previous_key_id: None,
                confirmed: Vec::new(),
                pending: vec![me],
            }),
            Some((sealing, accepted)) => {
                let other = accepted.iter().copied().find(|k| k != sealing);
                Reply::Rotate(RotateReport {
                    phase: if other.is_some() {
                        "confirming"
                    } else {
                        "idle"
                    }
                    .into(),
                    sealing_key_id: *sealing,
                    previous_key_id: other,
                    confirmed: vec![me],
                    pending: Vec::new(),
                })
            }
        }
    }

    /// One step of this member's PSK rollover, chosen by where its controller stands:
    /// key not accepted yet → phase 1 (InstallKey, AEAD); accepted but not sealing → phase 2
    /// (UseKey); sealing with it while another is accepted → phase 3 (RetireKey). Every step
    /// waits for the controller's KeyState. The operator (or `hactl`) runs each phase on every
    /// member before the next phase anywhere, so no member ever seals with a key a peer does
    /// not accept.
    fn psk_rotate(&self, psk_file: &str, key_id: u8) -> Reply {
        let psk = match read_psk_file(&PathBuf::from(psk_file)) {
            Ok(p) => p,
            Err(e) => return err(ErrorCode::BadRequest, e),
        };
        let state = self.shared().key_state.clone();
        let (msg, phase, confirm, key_phase): (HostMsg, &str, Confirm, KeyPhase) = match state {
            Some((sealing, accepted)) if sealing == key_id && accepted.len() == 1 => {
                return self.rotate_status();
            }
            Some((sealing, _)) if sealing == key_id => (
                HostMsg::RetireKey { key_id },
                "done",
                Box::new(move |s| {
                    s.key_state
                        .as_ref()
                        .is_some_and(|(k, a)| *k == key_id && a.len() == 1)
                }),
                KeyPhase::Retire,
            ),
            Some((_, accepted)) if accepted.contains(&key_id) => (
                HostMsg::UseKey { key_id },
                "retiring",
                Box::new(move |s| s.key_state.as_ref().is_some_and(|(k, _)| *k == key_id)),
                KeyPhase::Use,
            ),
            _ => (
                HostMsg::InstallKey {
                    key_id,
                    psk: WirePsk(psk),
                },
                "confirming",
                Box::new(move |s| {
                    s.key_state
                        .as_ref()
                        .is_some_and(|(_, a)| a.contains(&key_id))
                }),
                KeyPhase::Install,
            ),
        };
        if let Err(e) = self.send(msg) {
            return *e;
        }
        if !self.wait_for(confirm) {
            return err(
                ErrorCode::Unreachable,
                "the management controller did not confirm the key step",
            );
        }
        if let Err(reply) = self.follow_sync_keys(key_phase, key_id, &psk) {
            return *reply;
        }
        if phase == "done" {
            self.persist_rotated_key(&psk, key_id);
        }
        match self.rotate_status() {
            Reply::Rotate(mut r) => {
                r.phase = phase.into();
                Reply::Rotate(r)
            }
            other => other,
        }
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
        Ok(std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((s, _)) => {
                        let me = self.clone();
                        let _ = s.set_nonblocking(false);
                        std::thread::spawn(move || {
                            let _ = me.serve_client(s);
                        });
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        }))
    }
}

/// Rewrites the configuration block at `path` with `psk` under `key_id`, everything else
/// unchanged ([`update_block`]: atomic; a block that does not decode is left alone).
pub fn persist_key(path: &Path, psk: &[u8; 32], key_id: u8) -> Result<(), String> {
    let psk = *psk;
    update_block(path, move |b| {
        b.psk = ha_proto::keys::Psk(psk);
        b.key_id = key_id;
    })
}

/// Rewrites the configuration block at `path` changed by `change`, atomically (see
/// [`write_block`]); a block that does not decode, or an invalid result, leaves it alone.
pub fn update_block(
    path: &Path,
    change: impl FnOnce(&mut ha_proto::config_block::ConfigBlock),
) -> Result<(), String> {
    let mut block = read_block(path)?;
    change(&mut block);
    write_block(path, &block)
}

use ha_persist::read_block;
pub use ha_persist::write_block;

fn event_of(e: &ha_proto::msg::host::EventReport, arrived_ms: u64) -> Option<Event> {
    Some(Event {
        time_ms: arrived_ms,
        kind: event_kind(e.name.as_str())?,
        member: e.peer.map(|p| p.as_str().to_string()),
        detail: format!("#{} {}", e.seq, e.detail.as_str()),
    })
}

#[cfg(test)]
mod tests;
