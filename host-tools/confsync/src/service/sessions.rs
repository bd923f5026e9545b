//! Incoming sessions: every connection to the receiver is served on its own thread, at most
//! [`SessionLimits::max_sessions`] at once, each bounded by the receiver's deadlines
//! ([`crate::deadline`]). A session holds the store lock only while it changes the store, so
//! a slow or silent peer delays no other session, publish or sync.

use std::io;
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ha_mgmt_api::{EventKind, Reply};
use ha_proto::msg::MAX_MEMBERS;

use super::{now_s, Service, Session};
use crate::deadline::Limits;
use crate::protocol::{SyncError, SyncMsg};
use crate::store::Role;
use crate::sync::{self, Received, Receiving, SyncFailure, PROBE_ONLY};
use crate::wire::Wire;

/// Sessions served at once. At most one session at a time comes from each other member (a
/// push, a probe or a join; each member runs its own one after the other), plus one
/// newcomer's join: `MAX_MEMBERS` covers the largest cluster. A connection beyond that is
/// closed at once and logged.
pub const MAX_SESSIONS: usize = MAX_MEMBERS;
/// How often the receiver looks at its stop flag (a connection is accepted the moment it
/// comes: `ha_mgmt_api::server::wait_for_client`).
const ACCEPT_POLL: Duration = Duration::from_millis(20);

/// How many sessions at once, and the deadlines of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SessionLimits {
    /// Incoming sessions served at once.
    pub max_sessions: usize,
    /// Deadlines of an incoming session.
    pub receiver: Limits,
    /// Deadlines of a session this member opens.
    pub connector: Limits,
}

impl Default for SessionLimits {
    fn default() -> Self {
        SessionLimits {
            max_sessions: MAX_SESSIONS,
            receiver: Limits::RECEIVER,
            connector: Limits::CONNECTOR,
        }
    }
}

/// A session slot, given back when the session's thread ends (even by a panic).
struct Slot(Arc<Service>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Service {
    /// Serves the receiver on `listener` until `stop` is set: each connection on its own
    /// thread. Returns the accepting thread.
    pub fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        stop: Arc<AtomicBool>,
    ) -> io::Result<JoinHandle<()>> {
        listener.set_nonblocking(true)?;
        let svc = self.clone();
        std::thread::Builder::new()
            .name("confsync-accept".into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if !ha_mgmt_api::server::wait_for_client(&listener, ACCEPT_POLL) {
                        continue;
                    }
                    match listener.accept() {
                        Ok((s, _)) => svc.start_session(s),
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                        Err(_) => std::thread::sleep(ACCEPT_POLL),
                    }
                }
            })
    }

    /// Incoming sessions being served now.
    pub fn sessions_active(&self) -> usize {
        self.active.load(Ordering::Acquire)
    }

    fn start_session(self: &Arc<Self>, s: TcpStream) {
        let from = s
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let max = self.cfg.sessions.max_sessions;
        if self.active.fetch_add(1, Ordering::AcqRel) >= max {
            self.active.fetch_sub(1, Ordering::AcqRel);
            self.events.push(
                EventKind::SessionCut,
                None,
                format!("too_many_sessions: {max} sessions running, {from} refused"),
            );
            return;
        }
        let slot = Slot(self.clone());
        let spawned = std::thread::Builder::new()
            .name("confsync-session".into())
            .spawn(move || {
                let svc = slot.0.clone();
                let _slot = slot;
                if s.set_nonblocking(false).is_ok() {
                    let _ = svc.receive_from(s);
                }
            });
        if let Err(e) = spawned {
            // The closure (and its slot) was dropped: the slot is free again.
            self.events.push(
                EventKind::SessionCut,
                None,
                format!("no_thread: session from {from} refused: {e}"),
            );
        }
    }

    /// Serves one incoming session on the calling thread: a revision from the active member
    /// (the standby side), a probe, or a newcomer's join request (the active side; the
    /// newcomer then gets the configuration). Outcomes and failures go to the event log.
    pub fn receive_from(&self, stream: TcpStream) -> Result<Session, String> {
        let from = stream
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let _ = stream.set_nodelay(true);
        // The cluster document before a revision that may change it (what left it).
        let doc_before = self.cluster_doc().ok().flatten();
        let sec = match self.security() {
            Ok(s) => s,
            Err(e) => {
                let f = SyncFailure::Keys(e);
                self.log_failure(&from, "receive", &f, false);
                return Err(f.to_string());
            }
        };
        let r = stream.try_clone().map_err(|e| e.to_string())?;
        let mut wire =
            Wire::receiver(r, stream, &sec, self.limits().0).map_err(|e| e.to_string())?;
        let how = Receiving {
            allow_special_modes: self.cfg.allow_special_modes,
            store_lock: Some(&self.store_lock),
            block: self.cfg.block.as_deref(),
        };
        let mut refusal = None;
        let res = {
            let store = self.store_as(Role::Standby);
            let mut on_join = |serial: &str, addr: &str, ha: Option<&ha_mgmt_api::HaMember>| {
                let answer = self.answer_join(serial, addr, ha);
                if let SyncMsg::Failed { reason } = &answer {
                    refusal = Some(reason.clone());
                }
                answer
            };
            sync::receive_or_join(&store, &mut wire, &how, |_| {}, &mut on_join)
        };
        let peer = wire.peer().map(|s| s.as_str().to_string());
        let who = peer.clone().unwrap_or_else(|| from.clone());
        match res {
            Ok(Received::Revision(rev)) => {
                self.follow_received_doc(doc_before.as_ref());
                if let Some(rec) = self.records().get_mut(&who) {
                    rec.last_sync = Some(now_s());
                    rec.problem = None;
                    rec.revision = Some(rev.revision);
                }
                self.events.push(
                    EventKind::SyncSuccess,
                    Some(&who),
                    format!(
                        "revision {} received from {who} and installed ({} files)",
                        rev.revision,
                        rev.manifest.files.len()
                    ),
                );
                Ok(Session::Committed(rev.revision))
            }
            Ok(Received::Join {
                serial,
                addr,
                accepted: true,
            }) => {
                self.events.push(
                    EventKind::Members,
                    Some(&serial),
                    format!("{serial} joined the cluster (sync address {addr})"),
                );
                // The newcomer receives the cluster's configuration right away, and every
                // other member the new cluster document (and with it the newcomer's HA
                // link, which each adds to its own HA member list).
                // (The answer to the join made the document, newcomer included, this
                // member's peer list.)
                let mut sink = |_: &Reply| Ok(());
                let _ = self.sync_peers(self.peer_list(), &mut sink);
                Ok(Session::Joined(serial))
            }
            Ok(Received::Join { serial, .. }) => {
                let why = refusal.unwrap_or_default();
                self.events.push(
                    EventKind::Members,
                    Some(&serial),
                    format!("join of {serial} refused: {why}"),
                );
                Ok(Session::JoinRefused(serial))
            }
            Ok(Received::Enroll { refused: None }) => {
                self.events.push(
                    EventKind::Members,
                    Some(&who),
                    format!("the cluster's HA settings sent to {who} (enrolment from {from})"),
                );
                Ok(Session::Enrolled(who))
            }
            Ok(Received::Enroll { refused: Some(why) }) => {
                self.events.push(
                    EventKind::Members,
                    Some(&who),
                    format!("enrolment of {who} refused: {why}"),
                );
                Ok(Session::EnrolRefused(why))
            }
            Err(SyncFailure::Protocol(SyncError::Remote(r))) if r == PROBE_ONLY => {
                Ok(Session::Probed)
            }
            Err(e) => {
                self.log_failure(&who, "receive", &e, false);
                Err(e.to_string())
            }
        }
    }
}
