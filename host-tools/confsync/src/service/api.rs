//! The management API's requests the service answers ([`Backend`]): publish, sync,
//! synctest, diff, the cluster requests, the sync channel's key rollover and the event log.

use std::io;
use std::time::Duration;

use ha_mgmt_api::server::{error, Backend, Sink};
use ha_mgmt_api::{
    DiffReport, ErrorCode, EventKind, FileStatus, PeerSyncStatus, Reply, RotateReport, SyncState,
    SynctestReport,
};

use super::{classify, code_of, store_reply, Service};
use crate::store::Role;

/// Largest file `diff` renders line by line; bigger or binary files get hashes only.
pub const MAX_DIFF_BYTES: usize = 1 << 20;
/// How often a followed event stream looks for new events.
const FOLLOW_POLL: Duration = Duration::from_millis(100);

fn line_diff(old: &[u8], new: &[u8], path: &str) -> Option<String> {
    if old.len() > MAX_DIFF_BYTES || new.len() > MAX_DIFF_BYTES {
        return None;
    }
    let (Ok(old), Ok(new)) = (std::str::from_utf8(old), std::str::from_utf8(new)) else {
        return None;
    };
    let d = similar::TextDiff::from_lines(old, new);
    Some(
        d.unified_diff()
            .context_radius(3)
            .header(&format!("peer/{path}"), &format!("local/{path}"))
            .to_string(),
    )
}

impl Backend for Service {
    fn config_publish(&self, comment: Option<String>) -> Reply {
        let role = self.role();
        let published = {
            let _store = self.lock_store();
            self.store_as(role).publish(comment)
        };
        match published {
            Ok(r) => {
                if self.cfg.sync_on_publish {
                    // Failures are kept in the per-peer status that info and synctest show.
                    let mut sink = |_: &Reply| Ok(());
                    let _ = self.sync_peers(self.peer_list(), &mut sink);
                }
                Reply::Published {
                    revision: r.revision,
                    files: r.manifest.files.len() as u64,
                }
            }
            Err(e) => store_reply(e),
        }
    }

    fn config_sync(&self, peer: Option<String>, out: &mut Sink) -> io::Result<Reply> {
        if self.role() != Role::Active {
            return Ok(error(
                ErrorCode::Refused,
                "only the active member's published revision syncs; this member is not active",
            ));
        }
        let peers = match self.selected(peer) {
            Ok(p) => p,
            Err(r) => return Ok(*r),
        };
        self.sync_peers(peers, out)
    }

    fn config_synctest(&self) -> Reply {
        let cur = match self.store.current() {
            Ok(c) => c,
            Err(e) => return store_reply(e),
        };
        let local_changes = match self.store.local_changes() {
            Ok(l) => l,
            Err(e) => return store_reply(e),
        };
        let role = self.role();
        let mut peers = Vec::new();
        for p in &self.peer_list() {
            let probe = if cur.is_some() {
                Some(self.probe(p))
            } else {
                None
            };
            let rec = self.records().get(&p.serial).cloned().unwrap_or_default();
            let mut st = PeerSyncStatus {
                peer: p.serial.clone(),
                state: SyncState::Synchronized,
                revision: rec.revision.unwrap_or(0),
                unsynchronized: Vec::new(),
                last_sync: rec.last_sync,
                detail: None,
            };
            match probe {
                None => {
                    // Nothing to compare with: the last session's outcome says the most.
                    let (state, why) = rec.problem.clone().unwrap_or((
                        SyncState::SyncProblem,
                        "nothing published on this member".into(),
                    ));
                    st.state = state;
                    st.detail = Some(why);
                }
                Some(Err(e)) => {
                    st.state = match classify(&e) {
                        // A standby's revision offered to the active one is refused as older:
                        // that member is behind, not in collision.
                        SyncState::Collision if role == Role::Standby => SyncState::SyncProblem,
                        other => other,
                    };
                    st.detail = Some(e.to_string());
                }
                Some(Ok(pr)) => {
                    st.revision = pr.peer_revision.unwrap_or(0);
                    st.unsynchronized = pr.unsynchronized;
                    let ahead = pr.peer_revision.is_some_and(|r| r > pr.revision);
                    if ahead && role == Role::Active {
                        st.state = SyncState::Collision;
                        st.detail = Some(format!(
                            "the peer runs revision {} but this active member published {}",
                            pr.peer_revision.unwrap_or(0),
                            pr.revision
                        ));
                    } else if pr.peer_revision != Some(pr.revision) || !st.unsynchronized.is_empty()
                    {
                        st.state = SyncState::SyncProblem;
                        st.detail = Some(format!(
                            "revision {} here, {} on the peer",
                            pr.revision,
                            pr.peer_revision
                                .map(|r| r.to_string())
                                .unwrap_or_else(|| "none".into())
                        ));
                    }
                }
            }
            peers.push(st);
        }
        Reply::Synctest(SynctestReport {
            revision: cur.map(|c| c.revision).unwrap_or(0),
            local_changes,
            peers,
        })
    }

    fn config_diff(&self, path: String, peer: Option<String>) -> Reply {
        if crate::manifest::check_path(&path).is_err() {
            return error(ErrorCode::BadRequest, format!("unsafe path {path:?}"));
        }
        let peer = match self.selected(peer) {
            Ok(p) => match p.into_iter().next() {
                Some(p) => p,
                None => return error(ErrorCode::NotFound, "this member has no peer"),
            },
            Err(r) => return *r,
        };
        let cur = match self.store.current() {
            Ok(Some(c)) => c,
            Ok(None) => return error(ErrorCode::NotFound, "nothing published on this member"),
            Err(e) => return store_reply(e),
        };
        let Some(entry) = cur.manifest.files.get(&path).cloned() else {
            return error(
                ErrorCode::NotFound,
                format!("{path} is not in revision {}", cur.revision),
            );
        };
        let probe = match self.probe(&peer) {
            Ok(p) => p,
            Err(e) => {
                let st = classify(&e);
                return error(code_of(st), format!("{}: {e}", peer.serial));
            }
        };
        let local_hex = crate::hex(&entry.sha256);
        let mut rep = DiffReport {
            path: path.clone(),
            peer: peer.serial.clone(),
            status: FileStatus::Same,
            local_sha256: Some(local_hex.clone()),
            peer_sha256: None,
            diff: None,
        };
        if !probe.unsynchronized.contains(&path) {
            rep.peer_sha256 = Some(local_hex);
            return Reply::Diff(rep);
        }
        rep.status = FileStatus::Differs;
        // Revisions flow from the active member, so the peer's revision is normally one this
        // member published and still keeps: its copy of the file is the peer's.
        let old = probe
            .peer_revision
            .and_then(|n| self.store.revision(n).ok().map(|r| (n, r)));
        if let Some((n, old_rev)) = old {
            match old_rev.manifest.files.get(&path) {
                None => rep.status = FileStatus::OnlyLocal,
                Some(e) => {
                    rep.peer_sha256 = Some(crate::hex(&e.sha256));
                    let a = std::fs::read(self.store.tree(n).join(&path));
                    let b = std::fs::read(self.store.tree(cur.revision).join(&path));
                    if let (Ok(a), Ok(b)) = (a, b) {
                        rep.diff = line_diff(&a, &b, &path);
                    }
                }
            }
        }
        Reply::Diff(rep)
    }

    fn cluster_create(&self, cluster_id: u32, psk_file: String) -> Reply {
        self.create_cluster(cluster_id, psk_file)
    }

    fn cluster_join(
        &self,
        peer: String,
        psk_file: String,
        ha: Option<ha_mgmt_api::HaMember>,
    ) -> Reply {
        self.join_cluster(peer, psk_file, ha)
    }

    fn cluster_remove(&self, serial: String) -> Reply {
        self.remove_member(serial)
    }

    /// One step of this member's rollover of the sync channel's keys, chosen by where its
    /// keyring stands (accept the new key, then seal with it, then retire the old one), as
    /// `ha-daemon` does for the HA link; `hactl psk rotate --config-member-socket` runs each
    /// step on every member before the next. Refused when the keys follow the daemon's
    /// keyring file (they move with the daemon's own rollover).
    fn psk_rotate(&self, psk_file: String, key_id: u8) -> Reply {
        let psk = match crate::keys::read_key_file(std::path::Path::new(&psk_file)) {
            Ok(p) => p,
            Err(e) => return error(ErrorCode::BadRequest, e),
        };
        match self.keys.rotate_step(&psk, key_id) {
            Ok(phase) => {
                self.events.push(
                    EventKind::KeyRotation,
                    Some(&self.me()),
                    format!("sync channel keys: {phase} (key id {key_id})"),
                );
                self.rotate_report(phase)
            }
            Err(e) => error(ErrorCode::Refused, e),
        }
    }

    fn psk_rotate_status(&self) -> Reply {
        // Following a keyring file: report where the file stands now.
        if let Err(e) = self.keys.current() {
            return error(ErrorCode::Internal, e);
        }
        let rolling = self.keys.snapshot().in_rollover();
        self.rotate_report(if rolling { "confirming" } else { "idle" })
    }

    fn events(&self, follow: bool, last: Option<u32>, out: &mut Sink) -> io::Result<Reply> {
        let (past, mut next) = self.events.last(last.map(|n| n as usize));
        for e in past {
            out(&Reply::Event(e))?;
        }
        if follow {
            // Until the client goes away (`out` fails).
            loop {
                std::thread::sleep(FOLLOW_POLL);
                let (new, n) = self.events.since(next);
                next = n;
                for e in new {
                    out(&Reply::Event(e))?;
                }
            }
        }
        Ok(Reply::EndOfEvents)
    }
}

impl Service {
    fn rotate_report(&self, phase: &str) -> Reply {
        let k = self.keys.snapshot();
        Reply::Rotate(RotateReport {
            phase: phase.into(),
            sealing_key_id: k.sealing().key_id(),
            previous_key_id: k.previous_key_id(),
            confirmed: vec![self.me()],
            pending: Vec::new(),
        })
    }
}
