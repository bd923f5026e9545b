//! The I/O shell of a sync session: drives the protocol cores over a [`Wire`] and the
//! [`Store`].

use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::Mutex;

use ha_mgmt_api::HaMember;
use ha_proto::config_block::ClusterProfile;
use std::path::Path;

use crate::deadline::Timeouts;
use crate::protocol::{
    data_messages, ReceiverAction, ReceiverCore, SenderAction, SenderCore, SyncError, SyncMsg,
    NONCE_LEN,
};
use crate::store::{Revision, Store, StoreError};
use crate::wire::{Wire, WireError};
use crate::Hash;

/// How a probe ends its session ([`SyncMsg::Failed`]'s reason): the receiver discards its
/// staging and does not count the session as a failure.
pub const PROBE_ONLY: &str = "probe only: nothing to install";

/// Progress of a session, reported after every content and at phase changes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Progress {
    /// `manifest`, `transfer` or `commit`.
    pub phase: &'static str,
    /// Contents done.
    pub done_files: u64,
    /// Contents to transfer.
    pub total_files: u64,
    /// Content bytes done.
    pub done_bytes: u64,
    /// Content bytes to transfer.
    pub total_bytes: u64,
}

impl Progress {
    /// A session that starts: the manifest is exchanged, nothing counted yet.
    fn starting() -> Self {
        Self {
            phase: "manifest",
            done_files: 0,
            total_files: 0,
            done_bytes: 0,
            total_bytes: 0,
        }
    }
}

/// Outcome of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PushReport {
    /// Revision now running on the peer.
    pub revision: u64,
    /// Revision the peer ran before.
    pub peer_revision_before: Option<u64>,
    /// Files in the revision.
    pub files_total: u64,
    /// Distinct contents sent.
    pub files_sent: u64,
    /// Content bytes sent.
    pub bytes_sent: u64,
    /// Frames sent.
    pub frames_sent: u64,
}

/// Why a session failed.
#[derive(Debug)]
pub enum SyncFailure {
    /// Transport or authentication.
    Wire(WireError),
    /// Protocol violation or peer failure.
    Protocol(SyncError),
    /// Local store.
    Store(StoreError),
    /// Nothing published yet.
    NothingPublished,
    /// The session's keys could not be loaded (an unreadable or weak keyring file).
    Keys(String),
}

impl std::fmt::Display for SyncFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncFailure::Wire(e) => e.fmt(f),
            SyncFailure::Protocol(e) => e.fmt(f),
            SyncFailure::Store(e) => e.fmt(f),
            SyncFailure::NothingPublished => f.write_str("no published revision to sync"),
            SyncFailure::Keys(e) => write!(f, "keys: {e}"),
        }
    }
}

impl std::error::Error for SyncFailure {}

impl From<WireError> for SyncFailure {
    fn from(e: WireError) -> Self {
        SyncFailure::Wire(e)
    }
}
impl From<SyncError> for SyncFailure {
    fn from(e: SyncError) -> Self {
        SyncFailure::Protocol(e)
    }
}
impl From<StoreError> for SyncFailure {
    fn from(e: StoreError) -> Self {
        SyncFailure::Store(e)
    }
}

/// The next message; a refused frame is answered with [`SyncMsg::Failed`] naming the reason
/// before the session ends, so the other end's operator sees why (a peer that does not hold
/// the key cannot open the answer, and learns nothing from it).
fn recv<R: Read + Timeouts, W: Write + Timeouts>(
    wire: &mut Wire<R, W>,
) -> Result<SyncMsg, SyncFailure> {
    match wire.recv() {
        Ok(m) => Ok(m),
        Err(WireError::Refused(r)) => {
            let _ = wire.send(&SyncMsg::Failed {
                reason: format!("frame refused: {r}"),
            });
            let _ = wire.flush();
            Err(WireError::Refused(r).into())
        }
        Err(e) => Err(e.into()),
    }
}

fn nonce() -> Result<[u8; NONCE_LEN], SyncFailure> {
    let mut n = [0u8; NONCE_LEN];
    getrandom::fill(&mut n)
        .map_err(|e| SyncFailure::Wire(WireError::Io(std::io::Error::other(e.to_string()))))?;
    Ok(n)
}

/// Pushes the current revision of `store` to the receiver at the other end of `wire`.
pub fn push<R: Read + Timeouts, W: Write + Timeouts>(
    store: &Store,
    wire: &mut Wire<R, W>,
    mut progress: impl FnMut(&Progress),
) -> Result<PushReport, SyncFailure> {
    let rev = store.current()?.ok_or(SyncFailure::NothingPublished)?;
    let tree = store.tree(rev.revision);
    let paths: HashMap<Hash, String> = rev
        .manifest
        .by_hash()
        .into_iter()
        .map(|(h, p)| (h, p.to_string()))
        .collect();
    let sizes: HashMap<Hash, u64> = rev
        .manifest
        .files
        .values()
        .map(|e| (e.sha256, e.size))
        .collect();
    let files_total = rev.manifest.files.len() as u64;
    let mut core = SenderCore::new(rev.revision, rev.manifest, nonce()?);
    let mut p = Progress::starting();
    loop {
        let msg = recv(wire)?;
        let actions = match core.handle(msg) {
            Ok(a) => a,
            Err(e) => {
                let _ = wire.send(&SyncMsg::Failed {
                    reason: e.to_string(),
                });
                let _ = wire.flush();
                return Err(e.into());
            }
        };
        for a in actions {
            match a {
                SenderAction::Send(m) => {
                    if matches!(m, SyncMsg::Commit) {
                        p.phase = "commit";
                        progress(&p);
                    }
                    wire.send(&m)?;
                }
                SenderAction::SendContent(h) => {
                    if p.phase == "manifest" {
                        p.phase = "transfer";
                        p.total_files = core.needed().len() as u64;
                        p.total_bytes = core.needed().iter().filter_map(|h| sizes.get(h)).sum();
                        progress(&p);
                    }
                    let path = paths.get(&h).ok_or_else(|| {
                        SyncFailure::Store(StoreError::Corrupt("needed hash has no file".into()))
                    })?;
                    let bytes = std::fs::read(tree.join(path)).map_err(|err| {
                        SyncFailure::Store(StoreError::Io {
                            what: format!("read {path}"),
                            err,
                        })
                    })?;
                    for m in data_messages(h, &bytes) {
                        wire.send(&m)?;
                    }
                    p.done_files += 1;
                    p.done_bytes += bytes.len() as u64;
                    progress(&p);
                }
                SenderAction::Done { revision } => {
                    return Ok(PushReport {
                        revision,
                        peer_revision_before: core.peer_revision,
                        files_total,
                        files_sent: p.done_files,
                        bytes_sent: p.done_bytes,
                        frames_sent: wire.frames_out,
                    });
                }
            }
        }
    }
}

/// Receives one revision from the sender at the other end of `wire` into `store`, with the
/// default [`Receiving`] rules. A join request is refused (see [`receive_or_join`]).
pub fn receive<R: Read + Timeouts, W: Write + Timeouts>(
    store: &Store,
    wire: &mut Wire<R, W>,
    progress: impl FnMut(&Progress),
) -> Result<Revision, SyncFailure> {
    let mut refuse = |_: &str, _: &str, _: Option<&HaMember>| SyncMsg::Failed {
        reason: "this member does not take join requests".into(),
    };
    match receive_or_join(store, wire, &Receiving::default(), progress, &mut refuse)? {
        Received::Revision(r) => Ok(r),
        Received::Join { .. } => Err(SyncFailure::Protocol(SyncError::Unexpected("join request"))),
        Received::Enroll { .. } => Err(SyncFailure::Protocol(SyncError::Unexpected(
            "enrolment request",
        ))),
    }
}

/// What a receiving session ended with.
#[derive(Debug)]
pub enum Received {
    /// A revision was installed and is current.
    Revision(Revision),
    /// A member asked to join and was answered with the message `on_join` chose.
    Join {
        /// The newcomer's serial.
        serial: String,
        /// Its sync address.
        addr: String,
        /// True when the answer was [`SyncMsg::Joined`].
        accepted: bool,
    },
    /// A key holder asked for the cluster's HA settings ([`SyncMsg::Enroll`]).
    Enroll {
        /// Why it was refused (no block to share); none: the settings were sent.
        refused: Option<String>,
    },
}

/// The rules of a receiving session.
#[derive(Clone, Copy, Debug, Default)]
pub struct Receiving<'a> {
    /// Accept files with setuid, setgid or sticky bits (refused by default).
    pub allow_special_modes: bool,
    /// Held while the session changes the store (the commit of a revision, the answer to a
    /// join), never while it waits for the peer: a slow peer holds no lock another session,
    /// a publish or a sync needs.
    pub store_lock: Option<&'a Mutex<()>>,
    /// This member's configuration block, whose cluster profile an enrolling machine is sent
    /// ([`SyncMsg::Enroll`]; read when one asks); none: enrolment is refused.
    pub block: Option<&'a Path>,
}

/// Like [`receive`], but a join request is answered with `on_join(serial, addr, ha)` (called
/// under [`Receiving::store_lock`]).
pub fn receive_or_join<R: Read + Timeouts, W: Write + Timeouts>(
    store: &Store,
    wire: &mut Wire<R, W>,
    how: &Receiving<'_>,
    mut progress: impl FnMut(&Progress),
    on_join: &mut dyn FnMut(&str, &str, Option<&HaMember>) -> SyncMsg,
) -> Result<Received, SyncFailure> {
    let lock = || {
        how.store_lock
            .map(|m| m.lock().unwrap_or_else(|p| p.into_inner()))
    };
    let cur = store.current()?;
    let (core, hello) =
        ReceiverCore::new(nonce()?, cur.as_ref().map(|r| (r.revision, &r.manifest)));
    let mut core = core.allow_special_modes(how.allow_special_modes);
    wire.send(&hello)?;
    let mut staging = None;
    let mut p = Progress::starting();
    let fail = |wire: &mut Wire<R, W>, reason: String| {
        let _ = wire.send(&SyncMsg::Failed { reason });
        let _ = wire.flush();
    };
    loop {
        let msg = recv(wire)?;
        let actions = match core.handle(msg) {
            Ok(a) => a,
            Err(e) => {
                fail(wire, e.to_string());
                return Err(e.into());
            }
        };
        for a in actions {
            match a {
                ReceiverAction::Send(m) => wire.send(&m)?,
                ReceiverAction::Enroll => {
                    let profile =
                        match how.block {
                            Some(path) => ha_persist::read_block(path)
                                .map(|b| b.profile())
                                .map_err(|e| {
                                    format!("this member cannot read its configuration block: {e}")
                                }),
                            None => Err("this member shares no HA settings (its service runs \
                                     without --block)"
                                .to_string()),
                        };
                    let (answer, refused) = match profile {
                        Ok(p) => (
                            SyncMsg::Enrolment {
                                profile: Box::new(p),
                            },
                            None,
                        ),
                        Err(why) => (
                            SyncMsg::Failed {
                                reason: why.clone(),
                            },
                            Some(why),
                        ),
                    };
                    wire.send(&answer)?;
                    wire.flush()?;
                    return Ok(Received::Enroll { refused });
                }
                ReceiverAction::Join { serial, addr, ha } => {
                    let answer = {
                        let _held = lock();
                        on_join(&serial, &addr, ha.as_ref())
                    };
                    let accepted = matches!(answer, SyncMsg::Joined { .. });
                    wire.send(&answer)?;
                    wire.flush()?;
                    return Ok(Received::Join {
                        serial,
                        addr,
                        accepted,
                    });
                }
                ReceiverAction::Begin {
                    revision,
                    manifest,
                    needed,
                } => {
                    p.phase = "transfer";
                    p.total_files = needed.len() as u64;
                    let sizes: HashMap<Hash, u64> = manifest
                        .files
                        .values()
                        .map(|e| (e.sha256, e.size))
                        .collect();
                    p.total_bytes = needed.iter().filter_map(|h| sizes.get(h)).sum();
                    progress(&p);
                    match store.begin_receive(revision, manifest, needed) {
                        Ok(s) => staging = Some(s),
                        Err(e) => {
                            fail(wire, e.to_string());
                            return Err(e.into());
                        }
                    }
                }
                ReceiverAction::Write {
                    hash,
                    offset,
                    bytes,
                    last,
                } => {
                    let s =
                        staging
                            .as_mut()
                            .ok_or(SyncFailure::Protocol(SyncError::Unexpected(
                                "data before manifest",
                            )))?;
                    if let Err(e) = s.write(hash, offset, &bytes, last) {
                        fail(wire, e.to_string());
                        return Err(e.into());
                    }
                    p.done_bytes += bytes.len() as u64;
                    if last {
                        p.done_files += 1;
                        progress(&p);
                    }
                }
                ReceiverAction::Commit { .. } => {
                    p.phase = "commit";
                    progress(&p);
                    let s = staging
                        .take()
                        .ok_or(SyncFailure::Protocol(SyncError::Unexpected(
                            "commit before manifest",
                        )))?;
                    let committed = {
                        let _held = lock();
                        s.commit()
                    };
                    match committed {
                        Ok(rev) => {
                            let m = core.committed();
                            wire.send(&m)?;
                            wire.flush()?;
                            return Ok(Received::Revision(rev));
                        }
                        Err(e) => {
                            let m = core.commit_failed(e.to_string());
                            let _ = wire.send(&m);
                            let _ = wire.flush();
                            return Err(e.into());
                        }
                    }
                }
            }
        }
    }
}

/// What a probe learned about a peer (SPEC D3): its revision and which of this member's
/// published paths it lacks the content of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    /// This member's current revision.
    pub revision: u64,
    /// The revision the peer runs.
    pub peer_revision: Option<u64>,
    /// Paths of this member's revision whose content the peer does not have.
    pub unsynchronized: Vec<String>,
}

/// Compares this member's current revision with the peer's without changing the peer: the
/// offer and manifest go out as in [`push`], the peer answers with the hashes it lacks, and
/// the session is then ended with [`SyncMsg::Failed`] (the receiver discards its staging).
pub fn probe<R: Read + Timeouts, W: Write + Timeouts>(
    store: &Store,
    wire: &mut Wire<R, W>,
) -> Result<Probe, SyncFailure> {
    let rev = store.current()?.ok_or(SyncFailure::NothingPublished)?;
    let revision = rev.revision;
    let manifest = rev.manifest.clone();
    let mut core = SenderCore::new(rev.revision, rev.manifest, nonce()?);
    loop {
        let msg = recv(wire)?;
        let actions = core.handle(msg)?;
        let mut needs_in = false;
        for a in actions {
            match a {
                SenderAction::Send(SyncMsg::Commit) | SenderAction::SendContent(_) => {
                    needs_in = true
                }
                SenderAction::Send(m) => wire.send(&m)?,
                SenderAction::Done { .. } => needs_in = true,
            }
        }
        if needs_in {
            let needed = core.needed();
            let unsynchronized = manifest
                .files
                .iter()
                .filter(|(_, e)| needed.contains(&e.sha256))
                .map(|(p, _)| p.clone())
                .collect();
            let _ = wire.send(&SyncMsg::Failed {
                reason: PROBE_ONLY.into(),
            });
            let _ = wire.flush();
            return Ok(Probe {
                revision,
                peer_revision: core.peer_revision,
                unsynchronized,
            });
        }
    }
}

/// Asks the receiver at the other end of `wire` for the cluster's HA settings (read-only).
pub fn enroll<R: Read + Timeouts, W: Write + Timeouts>(
    wire: &mut Wire<R, W>,
) -> Result<ClusterProfile, SyncFailure> {
    let nonce = match recv(wire)? {
        SyncMsg::Hello { nonce, .. } => nonce,
        _ => return Err(SyncError::Unexpected("first message is not a hello").into()),
    };
    wire.send(&SyncMsg::Enroll { nonce })?;
    match recv(wire)? {
        SyncMsg::Enrolment { profile } => Ok(*profile),
        SyncMsg::Failed { reason } => Err(SyncError::Remote(reason).into()),
        _ => Err(SyncError::Unexpected("answer to an enrolment").into()),
    }
}

/// Asks the receiver at the other end of `wire` to let this member join; returns the cluster
/// id and every member (serial, sync address).
pub fn join<R: Read + Timeouts, W: Write + Timeouts>(
    wire: &mut Wire<R, W>,
    serial: &str,
    addr: &str,
    ha: Option<&HaMember>,
) -> Result<(u32, Vec<(String, String)>), SyncFailure> {
    // The receiver speaks first (its Hello, the session's challenge); the request replaces
    // the offer and echoes the challenge.
    let nonce = match recv(wire)? {
        SyncMsg::Hello { nonce, .. } => nonce,
        _ => return Err(SyncError::Unexpected("first message is not a hello").into()),
    };
    wire.send(&match ha {
        None => SyncMsg::Join {
            nonce,
            serial: serial.to_string(),
            addr: addr.to_string(),
        },
        Some(ha) => SyncMsg::JoinHa {
            nonce,
            serial: serial.to_string(),
            addr: addr.to_string(),
            ha: ha.clone(),
        },
    })?;
    match recv(wire)? {
        SyncMsg::Joined {
            cluster_id,
            members,
        } => Ok((cluster_id, members)),
        SyncMsg::Failed { reason } => Err(SyncError::Remote(reason).into()),
        _ => Err(SyncError::Unexpected("answer to a join").into()),
    }
}
