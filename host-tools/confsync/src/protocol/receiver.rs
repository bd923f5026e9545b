//! The receiver's state machine: checks the offer against its session nonce, the manifest
//! against the offer and the service's mode policy, and every content against its hash.

use std::collections::{BTreeSet, HashMap, HashSet};

use sha2::{Digest, Sha256};

use super::{SyncError, SyncMsg, NEED_PER_MSG, NONCE_LEN};
use crate::manifest::{check_mode, check_path, Entry, Manifest, MAX_FILES};
use crate::Hash;

/// What the receiver's shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReceiverAction {
    /// Send this message.
    Send(SyncMsg),
    /// Create a fresh staging area for `revision` with this manifest.
    Begin {
        /// Revision.
        revision: u64,
        /// Its complete, verified manifest.
        manifest: Manifest,
        /// Hashes that will arrive as content (the rest is local).
        needed: BTreeSet<Hash>,
    },
    /// Append `bytes` at `offset` to the staged content `hash`; `last` closes it (the core
    /// verified its hash).
    Write {
        /// Content hash.
        hash: Hash,
        /// Offset.
        offset: u64,
        /// Bytes.
        bytes: Vec<u8>,
        /// Content complete and verified.
        last: bool,
    },
    /// Every content is staged: build the tree, verify it, switch to it atomically, then
    /// call [`ReceiverCore::committed`] (or [`ReceiverCore::commit_failed`]).
    Commit {
        /// Revision.
        revision: u64,
    },
    /// A member asks to join: answer with [`SyncMsg::Joined`] or [`SyncMsg::Failed`].
    Join {
        /// The newcomer's serial.
        serial: String,
        /// Its sync receiver's address.
        addr: String,
        /// Its HA link and addresses, for the receiver's HA member list ([`SyncMsg::JoinHa`]).
        ha: Option<ha_mgmt_api::HaMember>,
    },
    /// A key holder asks for the cluster's HA settings: answer with [`SyncMsg::Enrolment`]
    /// or [`SyncMsg::Failed`].
    Enroll,
}

#[derive(Debug)]
enum RState {
    AwaitOffer,
    Manifest,
    Data,
    Committing,
    Done,
}

/// The receiver's state machine.
#[derive(Debug)]
pub struct ReceiverCore {
    nonce: [u8; NONCE_LEN],
    have: HashSet<Hash>,
    state: RState,
    revision: u64,
    sender_nonce: [u8; NONCE_LEN],
    expected: u64,
    digest: Hash,
    manifest: Manifest,
    needed: BTreeSet<Hash>,
    done: HashSet<Hash>,
    sizes: HashMap<Hash, u64>,
    allow_special_modes: bool,
    /// Content being received: hash, bytes so far, running digest.
    open: Option<(Hash, u64, Sha256)>,
}

impl ReceiverCore {
    /// A receiver running `current` (revision, manifest), with a fresh `nonce`; returns the
    /// Hello to send first.
    pub fn new(nonce: [u8; NONCE_LEN], current: Option<(u64, &Manifest)>) -> (Self, SyncMsg) {
        let have = current
            .map(|(_, m)| m.files.values().map(|e| e.sha256).collect())
            .unwrap_or_default();
        let hello = SyncMsg::Hello {
            nonce,
            revision: current.map(|(r, _)| r),
        };
        (
            ReceiverCore {
                nonce,
                have,
                state: RState::AwaitOffer,
                revision: 0,
                sender_nonce: [0; NONCE_LEN],
                expected: 0,
                digest: [0; 32],
                manifest: Manifest::default(),
                needed: BTreeSet::new(),
                done: HashSet::new(),
                sizes: Default::default(),
                allow_special_modes: false,
                open: None,
            },
            hello,
        )
    }

    /// Accepts files with setuid, setgid or sticky bits (refused by default: a configuration
    /// tree has no business installing privileged programs on every member).
    pub fn allow_special_modes(mut self, allow: bool) -> Self {
        self.allow_special_modes = allow;
        self
    }

    /// A request that ends the session with one answer (a join, an enrolment): bound to this
    /// session's nonce.
    fn last_request(
        &mut self,
        nonce: [u8; NONCE_LEN],
        action: ReceiverAction,
    ) -> Result<Vec<ReceiverAction>, SyncError> {
        if nonce != self.nonce {
            return Err(SyncError::NonceMismatch);
        }
        self.state = RState::Done;
        Ok(vec![action])
    }

    /// Handles one message from the sender.
    pub fn handle(&mut self, msg: SyncMsg) -> Result<Vec<ReceiverAction>, SyncError> {
        match (&self.state, msg) {
            (_, SyncMsg::Failed { reason }) => {
                self.state = RState::Done;
                Err(SyncError::Remote(reason))
            }
            (
                RState::AwaitOffer,
                SyncMsg::Join {
                    nonce,
                    serial,
                    addr,
                },
            ) => self.last_request(
                nonce,
                ReceiverAction::Join {
                    serial,
                    addr,
                    ha: None,
                },
            ),
            (
                RState::AwaitOffer,
                SyncMsg::JoinHa {
                    nonce,
                    serial,
                    addr,
                    ha,
                },
            ) => self.last_request(
                nonce,
                ReceiverAction::Join {
                    serial,
                    addr,
                    ha: Some(ha),
                },
            ),
            (RState::AwaitOffer, SyncMsg::Enroll { nonce }) => {
                self.last_request(nonce, ReceiverAction::Enroll)
            }
            (
                RState::AwaitOffer,
                SyncMsg::Offer {
                    nonce,
                    sender_nonce,
                    revision,
                    entries,
                    digest,
                },
            ) => {
                if nonce != self.nonce {
                    return Err(SyncError::NonceMismatch);
                }
                if entries > MAX_FILES as u64 {
                    return Err(SyncError::BadManifest(format!("{entries} files")));
                }
                self.sender_nonce = sender_nonce;
                self.revision = revision;
                self.expected = entries;
                self.digest = digest;
                self.state = RState::Manifest;
                Ok(Vec::new())
            }
            (RState::Manifest, SyncMsg::Entries(es)) => {
                for e in es {
                    check_path(&e.path).map_err(|b| SyncError::BadManifest(b.to_string()))?;
                    check_mode(&e.path, e.mode, self.allow_special_modes)
                        .map_err(|b| SyncError::BadManifest(b.to_string()))?;
                    if self.manifest.files.len() as u64 >= self.expected {
                        return Err(SyncError::BadManifest("more files than announced".into()));
                    }
                    let entry = Entry {
                        sha256: e.sha256,
                        size: e.size,
                        mode: e.mode,
                    };
                    if self.manifest.files.insert(e.path, entry).is_some() {
                        return Err(SyncError::BadManifest("duplicate path".into()));
                    }
                }
                Ok(Vec::new())
            }
            (RState::Manifest, SyncMsg::EntriesEnd) => {
                if self.manifest.files.len() as u64 != self.expected
                    || self.manifest.digest() != self.digest
                {
                    return Err(SyncError::BadManifest(
                        "count or digest does not match the offer".into(),
                    ));
                }
                // A path that is a prefix directory of another ("a" and "a/b") cannot exist.
                let mut prev: Option<&String> = None;
                for p in self.manifest.files.keys() {
                    if let Some(q) = prev {
                        if p.starts_with(q.as_str()) && p.as_bytes().get(q.len()) == Some(&b'/') {
                            return Err(SyncError::BadManifest(format!(
                                "{q} is a file and a directory"
                            )));
                        }
                    }
                    prev = Some(p);
                }
                for e in self.manifest.files.values() {
                    if let Some(s) = self.sizes.insert(e.sha256, e.size) {
                        if s != e.size {
                            return Err(SyncError::BadManifest("one hash, two sizes".into()));
                        }
                    }
                    if !self.have.contains(&e.sha256) {
                        self.needed.insert(e.sha256);
                    }
                }
                let mut out = vec![ReceiverAction::Begin {
                    revision: self.revision,
                    manifest: self.manifest.clone(),
                    needed: self.needed.clone(),
                }];
                let list: Vec<Hash> = self.needed.iter().copied().collect();
                for chunk in list.chunks(NEED_PER_MSG) {
                    out.push(ReceiverAction::Send(SyncMsg::Need(chunk.to_vec())));
                }
                out.push(ReceiverAction::Send(SyncMsg::NeedEnd));
                self.state = RState::Data;
                Ok(out)
            }
            (
                RState::Data,
                SyncMsg::Data {
                    hash,
                    offset,
                    last,
                    bytes,
                },
            ) => {
                if !self.needed.contains(&hash) || self.done.contains(&hash) {
                    return Err(SyncError::BadData("content not asked for".into()));
                }
                let (h, at, mut digest) = match self.open.take() {
                    Some((h, at, d)) if h == hash => (h, at, d),
                    Some(_) => return Err(SyncError::BadData("interleaved contents".into())),
                    None => (hash, 0, Sha256::new()),
                };
                if offset != at {
                    return Err(SyncError::BadData("out-of-order piece".into()));
                }
                let size = self.sizes.get(&h).copied().unwrap_or(0);
                let end = at + bytes.len() as u64;
                if end > size || (last && end != size) {
                    return Err(SyncError::BadData(
                        "content size differs from the manifest".into(),
                    ));
                }
                digest.update(&bytes);
                if last {
                    let got: Hash = digest.finalize().into();
                    if got != h {
                        return Err(SyncError::BadData("content hash mismatch".into()));
                    }
                    self.done.insert(h);
                } else {
                    self.open = Some((h, end, digest));
                }
                Ok(vec![ReceiverAction::Write {
                    hash: h,
                    offset,
                    bytes,
                    last,
                }])
            }
            (RState::Data, SyncMsg::Commit) => {
                if self.open.is_some() || self.done.len() != self.needed.len() {
                    return Err(SyncError::BadData(
                        "commit before every content arrived".into(),
                    ));
                }
                self.state = RState::Committing;
                Ok(vec![ReceiverAction::Commit {
                    revision: self.revision,
                }])
            }
            _ => Err(SyncError::Unexpected("message for the receiver's state")),
        }
    }

    /// The shell installed the revision: the message to send.
    pub fn committed(&mut self) -> SyncMsg {
        self.state = RState::Done;
        SyncMsg::Committed {
            sender_nonce: self.sender_nonce,
            revision: self.revision,
        }
    }

    /// The shell could not install it: the message to send.
    pub fn commit_failed(&mut self, reason: String) -> SyncMsg {
        self.state = RState::Done;
        SyncMsg::Failed { reason }
    }
}
