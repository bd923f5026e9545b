//! The cluster's membership document ([`CLUSTER_FILE`]) and the requests that change it:
//! create, join (answered on the receiving side of a sync session), remove.

use std::io;
use std::net::SocketAddr;

use ha_mgmt_api::client::{Client, ClientError};
use ha_mgmt_api::server::error;
use ha_mgmt_api::{ErrorCode, EventKind, HaMember, Reply, Request};
use ha_proto::keys::KeySet;
use ha_proto::msg::{Serial, MAX_MEMBERS};

use super::{classify, code_of, store_reply, PeerAddr, RoleSource, Service, CONNECT_TIMEOUT};
use crate::keys::read_key_file;
use crate::protocol::{SyncError, SyncMsg};
use crate::store::{Role, StoreError};
use crate::sync::{self, SyncFailure};

/// Path, in the configuration store, of the cluster's membership document: it is published
/// and synced like any configuration, so every member and every newcomer has it.
pub const CLUSTER_FILE: &str = "ha/cluster.json";

/// The cluster's membership document ([`CLUSTER_FILE`]).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClusterDoc {
    /// Cluster id.
    pub cluster_id: u32,
    /// Every member: serial and sync receiver address.
    pub members: Vec<(String, String)>,
    /// The HA link and data-plane addresses of every member that joined with them
    /// (`hactl cluster join --ha-address`), by serial: each other member's service adds
    /// them to its own daemon's HA member list when it receives the document.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub ha: std::collections::BTreeMap<String, HaMember>,
}

impl Service {
    /// The cluster document of the current revision, if a cluster was created.
    pub fn cluster_doc(&self) -> Result<Option<ClusterDoc>, String> {
        match self.store.read(CLUSTER_FILE) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| format!("{CLUSTER_FILE}: {e}")),
            Err(StoreError::Io { err, .. }) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.to_string()),
        }
    }

    /// Publishes `doc` as the new cluster document (only that file; drafts stay drafts).
    fn publish_doc(&self, doc: &ClusterDoc, comment: String) -> Result<u64, StoreError> {
        let store = self.store_as(Role::Active);
        let text =
            serde_json::to_vec_pretty(doc).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        store.write(CLUSTER_FILE, &text)?;
        store
            .publish_only(&[CLUSTER_FILE.to_string()], Some(comment))
            .map(|r| r.revision)
    }

    /// Every member of `doc` but this one becomes a peer.
    fn follow_doc(&self, doc: &ClusterDoc) {
        let me = self.me();
        self.set_peers(
            doc.members
                .iter()
                .filter(|(s, _)| *s != me)
                .map(|(s, a)| PeerAddr {
                    serial: s.clone(),
                    addr: a.clone(),
                })
                .collect(),
        );
    }

    /// Checks that the key file holds this member's cluster key (without ever showing it).
    fn key_matches(&self, psk_file: &str) -> Result<(), Box<Reply>> {
        let psk = read_key_file(std::path::Path::new(psk_file))
            .map_err(|e| Box::new(error(ErrorCode::BadRequest, e)))?;
        let ring = self
            .keys
            .current()
            .map_err(|e| Box::new(error(ErrorCode::Internal, e)))?;
        let sealing = ring.sealing();
        let derived = KeySet::derive(&psk, self.cfg.security.cluster_id, sealing.key_id());
        let ch = ha_proto::msg::Channel::Management;
        if derived.key(ch) == sealing.key(ch) {
            Ok(())
        } else {
            Err(Box::new(error(
                ErrorCode::Refused,
                "the key file does not hold this member's cluster key",
            )))
        }
    }

    /// Answers a join request (on the receiving session's thread, under the store lock).
    pub(super) fn answer_join(&self, serial: &str, addr: &str, ha: Option<&HaMember>) -> SyncMsg {
        let refuse = |reason: String| SyncMsg::Failed { reason };
        if self.role() != Role::Active {
            return refuse("join through the active member: this one is not active".into());
        }
        if Serial::new(serial).is_none() || addr.parse::<SocketAddr>().is_err() {
            return refuse(format!("bad join request ({serial:?}, {addr:?})"));
        }
        let mut doc = match self.cluster_doc() {
            Ok(Some(d)) => d,
            Ok(None) => return refuse("no cluster was created on this member".into()),
            Err(e) => return refuse(e),
        };
        if let Some(m) = doc.members.iter_mut().find(|(s, _)| s == serial) {
            m.1 = addr.to_string();
        } else if doc.members.len() >= MAX_MEMBERS {
            return refuse(format!(
                "cluster full: {} of {MAX_MEMBERS} members; remove one first \
                 (hactl cluster remove --serial S)",
                doc.members.len()
            ));
        } else {
            doc.members.push((serial.to_string(), addr.to_string()));
        }
        // The newcomer's HA link into this member's HA member list first (its controller
        // and block, through its daemon): refused there, the join is refused as a whole.
        if let Some(ha) = ha {
            if let Err(e) = self.add_to_ha_members(serial, ha) {
                return refuse(e);
            }
            doc.ha.insert(serial.to_string(), ha.clone());
        }
        if let Err(e) = self.publish_doc(&doc, format!("{serial} joins")) {
            if !matches!(e, StoreError::NothingToPublish) {
                return refuse(format!("cannot record the newcomer: {e}"));
            }
        }
        self.follow_doc(&doc);
        SyncMsg::Joined {
            cluster_id: doc.cluster_id,
            members: doc.members,
        }
    }

    /// After a revision came in (this member is not the active one): the cluster document
    /// it holds now names this member's peers, and every member that joined with its HA
    /// link goes into this member's HA member list through its daemon (a member already
    /// there at the same link is no change for the daemon). So a third member needs no
    /// socket of the others: the active member records it, the others follow. What fails
    /// is logged; the next revision tries again.
    pub(super) fn follow_received_doc(&self, before: Option<&ClusterDoc>) {
        let doc = match self.cluster_doc() {
            Ok(Some(d)) => d,
            Ok(None) => return,
            Err(e) => {
                self.events
                    .push(EventKind::Members, None, format!("cluster document: {e}"));
                return;
            }
        };
        self.follow_doc(&doc);
        if !matches!(self.cfg.role, RoleSource::Daemon(_)) {
            return;
        }
        let me = self.me();
        for (serial, ha) in doc.ha.iter().filter(|(s, _)| **s != me) {
            if let Err(e) = self.add_to_ha_members(serial, ha) {
                self.events.push(EventKind::Members, Some(serial), e);
            }
        }
        // Members the document no longer lists leave this member's HA member list too.
        // (Only members of a previous document: configured peers that never were in one
        // are not the document's to remove.)
        let gone = before
            .into_iter()
            .flat_map(|b| &b.members)
            .filter(|(s, _)| *s != me && !doc.members.iter().any(|(now, _)| now == s));
        for (serial, _) in gone {
            if let Err(e) = self.remove_from_ha_members(serial) {
                self.events.push(EventKind::Members, Some(serial), e);
            }
        }
    }

    /// Removes `serial` from this member's HA member list through its daemon
    /// (`MemberRemove`); one the list does not hold is no error.
    fn remove_from_ha_members(&self, serial: &str) -> Result<(), String> {
        let req = Request::MemberRemove {
            serial: serial.to_string(),
        };
        match self.ask_daemon(&req, "remove it from", &format!("removing {serial}"))? {
            Ok(()) => Ok(()),
            Err(e) if e.code == ErrorCode::NotFound => Ok(()),
            Err(e) => Err(format!(
                "the HA member list refused to drop {serial}: {}",
                e.message
            )),
        }
    }

    /// Adds `serial` to this member's HA member list through its daemon (`MemberAdd`).
    fn add_to_ha_members(&self, serial: &str, ha: &HaMember) -> Result<(), String> {
        let req = Request::MemberAdd {
            serial: serial.to_string(),
            main_link: ha.main_link.clone(),
            addresses: ha.addresses.clone(),
        };
        // Also a join tried again (its answer was lost): the daemon answers an add of a
        // member it has at the same link with success.
        self.ask_daemon(
            &req,
            "add the newcomer's HA link to (--daemon-socket)",
            &format!("adding {serial}"),
        )?
        .map_err(|e| format!("the HA member list refused {serial}: {}", e.message))
    }

    /// Sends a member list change `req` to this member's daemon: `Ok(Ok(()))` when done,
    /// `Ok(Err(e))` when the daemon refused it, `Err` when it cannot be asked (`to` and
    /// `doing` complete the message: "no daemon to <to>", "... for <doing>").
    fn ask_daemon(
        &self,
        req: &Request,
        to: &str,
        doing: &str,
    ) -> Result<Result<(), ha_mgmt_api::ApiError>, String> {
        let RoleSource::Daemon(sock) = &self.cfg.role else {
            return Err(format!("this member's service has no daemon to {to}"));
        };
        match Client::connect(sock, CONNECT_TIMEOUT).and_then(|mut c| c.call(req, |_| {})) {
            Ok(Reply::Done { .. }) => Ok(Ok(())),
            Ok(Reply::Error(e)) | Err(ClientError::Api(e)) => Ok(Err(e)),
            Ok(other) => Err(format!("the daemon answered {other:?} to {doing}")),
            Err(e) => Err(format!(
                "cannot reach this member's daemon for {doing}: {e}"
            )),
        }
    }

    /// `cluster create`: this (active) member becomes the cluster's first member.
    pub(super) fn create_cluster(&self, cluster_id: u32, psk_file: String) -> Reply {
        if let Err(r) = self.key_matches(&psk_file) {
            return *r;
        }
        if cluster_id != self.cfg.security.cluster_id {
            return error(
                ErrorCode::Refused,
                format!(
                    "this member was provisioned for cluster {}, not {cluster_id}",
                    self.cfg.security.cluster_id
                ),
            );
        }
        if self.role() != Role::Active {
            return error(
                ErrorCode::Refused,
                "create the cluster on the active member",
            );
        }
        let Some(addr) = self.cfg.listen_addr.clone() else {
            return error(ErrorCode::Refused, "this service has no receiver address");
        };
        let _store = self.lock_store();
        match self.cluster_doc() {
            Ok(Some(d)) => {
                return error(
                    ErrorCode::Refused,
                    format!(
                        "a cluster already exists here (id {}, {} members)",
                        d.cluster_id,
                        d.members.len()
                    ),
                )
            }
            Ok(None) => {}
            Err(e) => return error(ErrorCode::Internal, e),
        }
        let doc = ClusterDoc {
            cluster_id,
            members: vec![(self.me(), addr)],
            ha: Default::default(),
        };
        match self.publish_doc(&doc, "cluster created".into()) {
            Ok(rev) => Reply::Done {
                message: format!(
                    "cluster {cluster_id} created with {} (revision {rev})",
                    self.me()
                ),
            },
            Err(e) => store_reply(e),
        }
    }

    /// `cluster join`: asks the active member at `peer` to let this member join.
    pub(super) fn join_cluster(
        &self,
        peer: String,
        psk_file: String,
        ha: Option<HaMember>,
    ) -> Reply {
        if let Err(r) = self.key_matches(&psk_file) {
            return *r;
        }
        let Some(addr) = self.cfg.listen_addr.clone() else {
            return error(ErrorCode::Refused, "this service has no receiver address");
        };
        let target = PeerAddr {
            serial: String::new(),
            addr: peer.clone(),
        };
        let me = self.me();
        let res = self
            .connect(&target)
            .and_then(|mut w| sync::join(&mut w, &me, &addr, ha.as_ref()));
        if let Err(e) = &res {
            self.log_failure(&peer, "join", e, false);
        }
        match res {
            Ok((cluster_id, members)) => {
                let n = members.len();
                self.events.push(
                    EventKind::Members,
                    Some(&me),
                    format!("{me} joined cluster {cluster_id} through {peer}"),
                );
                self.set_peers(
                    members
                        .into_iter()
                        .filter(|(s, _)| *s != me)
                        .map(|(serial, addr)| PeerAddr { serial, addr })
                        .collect(),
                );
                Reply::Done {
                    message: format!(
                        "{me} joined cluster {cluster_id} ({n} members); its configuration \
                         follows from the active member"
                    ),
                }
            }
            Err(SyncFailure::Protocol(SyncError::Remote(reason))) => {
                let code = if reason.starts_with("cluster full") {
                    ErrorCode::ClusterFull
                } else {
                    ErrorCode::Refused
                };
                error(code, format!("{peer} refused the join: {reason}"))
            }
            Err(e) => {
                let st = classify(&e);
                error(code_of(st), format!("join through {peer}: {e}"))
            }
        }
    }

    /// `cluster remove`: drops a failed member from the document and tells the others.
    pub(super) fn remove_member(&self, serial: String) -> Reply {
        if self.role() != Role::Active {
            return error(ErrorCode::Refused, "remove members on the active member");
        }
        if serial == self.me() {
            return error(ErrorCode::Refused, "a member cannot remove itself");
        }
        let (doc, rev) = {
            let _store = self.lock_store();
            let mut doc = match self.cluster_doc() {
                Ok(Some(d)) => d,
                Ok(None) => return error(ErrorCode::NotFound, "no cluster was created here"),
                Err(e) => return error(ErrorCode::Internal, e),
            };
            let before = doc.members.len();
            doc.members.retain(|(s, _)| *s != serial);
            doc.ha.remove(&serial);
            if doc.members.len() == before {
                return error(ErrorCode::NotFound, format!("{serial} is not a member"));
            }
            // Out of this member's HA member list first (controller and block, through its
            // daemon); refused there, the removal is refused whole. The other members
            // follow the document.
            if matches!(self.cfg.role, RoleSource::Daemon(_)) {
                if let Err(e) = self.remove_from_ha_members(&serial) {
                    return error(ErrorCode::Refused, e);
                }
            }
            match self.publish_doc(&doc, format!("{serial} removed")) {
                Ok(r) => (doc, r),
                Err(e) => return store_reply(e),
            }
        };
        self.follow_doc(&doc);
        self.events.push(
            EventKind::Members,
            Some(&serial),
            format!("{serial} removed from the cluster (revision {rev})"),
        );
        let mut sink = |_: &Reply| Ok(());
        let _ = self.sync_peers(self.peer_list(), &mut sink);
        Reply::Done {
            message: format!(
                "{serial} removed (revision {rev}); {} members remain, a replacement may join",
                doc.members.len()
            ),
        }
    }
}
