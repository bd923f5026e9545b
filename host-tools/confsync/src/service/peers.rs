//! Outgoing sessions: pushing the current revision to peers, probing them, the periodic
//! jobs, and the per-peer status they leave.

use std::io;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use ha_mgmt_api::server::{error, Sink};
use ha_mgmt_api::{ErrorCode, EventKind, Progress, Reply, SyncReport};
use ha_proto::msg::Serial;

use super::{classify, code_of, now_s, PeerAddr, Service};
use crate::jobs::Job;
use crate::store::{Role, StoreError};
use crate::sync::{self, Probe, PushReport, SyncFailure};
use crate::wire::{Wire, WireError};

/// How long connecting to a peer may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

impl Service {
    /// Connects to `peer`'s receiver; the other end must be `peer.serial` when it is given.
    pub(super) fn connect(
        &self,
        peer: &PeerAddr,
    ) -> Result<Wire<TcpStream, TcpStream>, SyncFailure> {
        let io = |e| SyncFailure::Wire(WireError::Io(e));
        let addrs: Vec<SocketAddr> = peer.addr.to_socket_addrs().map_err(io)?.collect();
        let sec = self.security().map_err(SyncFailure::Keys)?;
        let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
        for a in addrs {
            match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                Ok(s) => {
                    let _ = s.set_nodelay(true);
                    let r = s.try_clone().map_err(io)?;
                    let expect = Serial::new(&peer.serial);
                    return Wire::connector(r, s, &sec, expect, self.limits().1).map_err(io);
                }
                Err(e) => last = e,
            }
        }
        Err(io(last))
    }

    fn record_problem(&self, serial: &str, e: &SyncFailure) {
        let state = classify(e);
        if let Some(r) = self.records().get_mut(serial) {
            r.problem = Some((state, e.to_string()));
        }
    }

    /// Pushes the current revision to `peer`, streaming progress.
    pub(super) fn push_to(
        &self,
        peer: &PeerAddr,
        out: &mut Sink,
    ) -> Result<Result<PushReport, SyncFailure>, io::Error> {
        let mut wire = match self.connect(peer) {
            Ok(w) => w,
            Err(e) => {
                self.record_problem(&peer.serial, &e);
                self.log_failure(&peer.serial, "sync", &e, false);
                return Ok(Err(e));
            }
        };
        let mut out_err = None;
        let r = sync::push(&self.store, &mut wire, |p| {
            if out_err.is_none() {
                let reply = Reply::Progress(Progress {
                    peer: peer.serial.clone(),
                    phase: p.phase.to_string(),
                    done_files: p.done_files,
                    total_files: p.total_files,
                    done_bytes: p.done_bytes,
                    total_bytes: p.total_bytes,
                });
                // Progress every 100 files keeps the operator's stream readable.
                if p.phase != "transfer" || p.done_files % 100 == 0 || p.done_files == p.total_files
                {
                    if let Err(e) = out(&reply) {
                        out_err = Some(e);
                    }
                }
            }
        });
        if let Some(e) = out_err {
            return Err(e);
        }
        match &r {
            Ok(rep) => {
                if let Some(rec) = self.records().get_mut(&peer.serial) {
                    rec.last_sync = Some(now_s());
                    rec.problem = None;
                    rec.revision = Some(rep.revision);
                }
                self.events.push(
                    EventKind::SyncSuccess,
                    Some(&peer.serial),
                    format!(
                        "revision {} synced to {} ({} of {} files sent, {} bytes)",
                        rep.revision, peer.serial, rep.files_sent, rep.files_total, rep.bytes_sent
                    ),
                );
            }
            Err(e) => {
                self.record_problem(&peer.serial, e);
                self.log_failure(&peer.serial, "sync", e, false);
            }
        }
        Ok(r)
    }

    /// Probes `peer` (what it runs, what it lacks).
    pub(super) fn probe(&self, peer: &PeerAddr) -> Result<Probe, SyncFailure> {
        let r = self
            .connect(peer)
            .and_then(|mut w| sync::probe(&self.store, &mut w));
        match &r {
            Ok(p) => {
                if let Some(rec) = self.records().get_mut(&peer.serial) {
                    rec.revision = p.peer_revision;
                }
            }
            Err(e) => {
                self.record_problem(&peer.serial, e);
                self.log_failure(&peer.serial, "probe", e, true);
            }
        }
        r
    }

    pub(super) fn selected(&self, peer: Option<String>) -> Result<Vec<PeerAddr>, Box<Reply>> {
        match peer {
            None => Ok(self.peer_list()),
            Some(s) => self
                .peer_list()
                .iter()
                .find(|p| p.serial == s)
                .cloned()
                .map(|p| vec![p])
                .ok_or_else(|| Box::new(error(ErrorCode::NotFound, format!("no peer {s}")))),
        }
    }

    /// Pushes to `peers`; the final reply sums the sessions, or names the first failure.
    pub(super) fn sync_peers(&self, peers: Vec<PeerAddr>, out: &mut Sink) -> io::Result<Reply> {
        if peers.is_empty() {
            return Ok(error(ErrorCode::NotFound, "this member has no peer"));
        }
        let started = Instant::now();
        let mut total = SyncReport {
            peer: String::new(),
            revision: 0,
            files_total: 0,
            files_sent: 0,
            bytes_sent: 0,
            elapsed_ms: 0,
        };
        let mut failures = Vec::new();
        let mut names = Vec::new();
        for p in &peers {
            match self.push_to(p, out)? {
                Ok(r) => {
                    names.push(p.serial.clone());
                    total.revision = r.revision;
                    total.files_total = r.files_total;
                    total.files_sent += r.files_sent;
                    total.bytes_sent += r.bytes_sent;
                }
                Err(e) => failures.push((p.serial.clone(), classify(&e), e.to_string())),
            }
        }
        if let Some((serial, state, msg)) = failures.first() {
            let mut text = format!("sync to {serial} failed: {msg}");
            if failures.len() > 1 {
                text.push_str(&format!(" (and {} more peer(s))", failures.len() - 1));
            }
            return Ok(error(code_of(*state), text));
        }
        total.peer = names.join(",");
        total.elapsed_ms = started.elapsed().as_millis() as u64;
        Ok(Reply::SyncDone(total))
    }

    /// Runs one periodic job (SPEC D2): publishes the job's paths if they changed in the
    /// draft, then pushes to every peer. Nothing happens on a member that is not active.
    pub fn run_job(&self, job: &Job) -> Result<Option<u64>, String> {
        if self.role() != Role::Active {
            return Ok(None);
        }
        let published = {
            let _store = self.lock_store();
            match self
                .store_as(Role::Active)
                .publish_only(&job.paths, Some(format!("periodic job {}", job.name)))
            {
                Ok(r) => Some(r.revision),
                Err(StoreError::NothingToPublish) => None,
                Err(e) => return Err(e.to_string()),
            }
        };
        let mut sink = |_: &Reply| Ok(());
        match self.sync_peers(self.peer_list(), &mut sink) {
            Ok(Reply::SyncDone(_)) => Ok(published),
            Ok(Reply::Error(e)) => Err(e.message),
            Ok(_) => Ok(published),
            Err(e) => Err(e.to_string()),
        }
    }
}
