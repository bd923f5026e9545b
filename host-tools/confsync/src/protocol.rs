//! The configuration sync protocol as two sans-IO state machines.
//!
//! ```text
//! receiver                                sender
//!   Hello{nonce, revision}         ──►
//!                                  ◄──   Offer{nonce echo, sender nonce, revision, n, digest}
//!                                  ◄──   Entries[..] × k, EntriesEnd
//!   (checks count and digest; needed = hashes it lacks)
//!   Need[..] × j, NeedEnd          ──►
//!                                  ◄──   Data{hash, offset, last, bytes} × m   (one file at a time)
//!                                  ◄──   Commit
//!   (verifies every hash, stages, switches atomically)
//!   Committed{sender nonce, rev}   ──►   or Failed{reason}
//! ```
//!
//! Neither core touches files or sockets: the receiver core answers with
//! [`ReceiverAction`]s (stage these bytes, commit), the sender core with [`SenderAction`]s
//! (send this message, send the content of this hash). Every message fits one `ha_proto`
//! frame body ([`ha_proto::frame::MAX_BODY_LEN`]).

use std::collections::{BTreeSet, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::manifest::{check_path, Entry, Manifest, MAX_FILES};
use crate::Hash;

/// Session nonce length, bytes.
pub const NONCE_LEN: usize = 16;
/// Content bytes per [`SyncMsg::Data`]: leaves room for the hash, offset and postcard framing
/// within [`ha_proto::frame::MAX_BODY_LEN`] (1416).
pub const DATA_CHUNK: usize = 1280;
/// Budget of one [`SyncMsg::Entries`] message, bytes of estimated encoding.
pub const ENTRIES_BUDGET: usize = 1300;
/// Hashes per [`SyncMsg::Need`] (40 × 33 bytes < 1416).
pub const NEED_PER_MSG: usize = 40;

/// One manifest entry on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireEntry {
    /// Relative path.
    pub path: String,
    /// Content hash.
    pub sha256: Hash,
    /// Size.
    pub size: u64,
    /// Permission bits.
    pub mode: u32,
}

/// A sync protocol message (postcard-encoded in an `ha_proto` frame body).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMsg {
    /// Receiver → sender, first: its session nonce and current revision.
    Hello {
        /// Receiver's fresh nonce.
        nonce: [u8; NONCE_LEN],
        /// Revision the receiver runs.
        revision: Option<u64>,
    },
    /// Sender → receiver: the revision on offer.
    Offer {
        /// Echo of the receiver's nonce (binds the session).
        nonce: [u8; NONCE_LEN],
        /// Sender's fresh nonce.
        sender_nonce: [u8; NONCE_LEN],
        /// Revision number.
        revision: u64,
        /// Files in it.
        entries: u64,
        /// [`Manifest::digest`] of it.
        digest: Hash,
    },
    /// Sender → receiver: part of the manifest.
    Entries(Vec<WireEntry>),
    /// Sender → receiver: the manifest is complete.
    EntriesEnd,
    /// Receiver → sender: content hashes it lacks.
    Need(Vec<Hash>),
    /// Receiver → sender: no more needs.
    NeedEnd,
    /// Sender → receiver: a piece of one content.
    Data {
        /// Hash of the whole content.
        hash: Hash,
        /// Offset of `bytes`.
        offset: u64,
        /// Last piece of this content.
        last: bool,
        /// The bytes.
        bytes: Vec<u8>,
    },
    /// Sender → receiver: everything needed was sent.
    Commit,
    /// Receiver → sender: the revision is installed and running.
    Committed {
        /// Echo of the sender's nonce.
        sender_nonce: [u8; NONCE_LEN],
        /// Revision now current.
        revision: u64,
    },
    /// Either way: the session failed.
    Failed {
        /// Why.
        reason: String,
    },
    /// Connecting side → receiver, instead of an offer: a member asks to join the cluster
    /// (SPEC A1). Only a holder of the cluster key can send it (every frame is sealed).
    Join {
        /// The newcomer's serial.
        serial: String,
        /// Its sync receiver's address (`IP:PORT`).
        addr: String,
    },
    /// Receiver → connecting side: the newcomer is a member; the cluster's members follow.
    Joined {
        /// Cluster id.
        cluster_id: u32,
        /// Every member (serial, sync address), the newcomer included.
        members: Vec<(String, String)>,
    },
}

/// A protocol violation or failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SyncError {
    /// A message that is not expected in this state.
    Unexpected(&'static str),
    /// The nonce echo does not match: a replayed or foreign session.
    NonceMismatch,
    /// The manifest does not match its announced count or digest.
    BadManifest(String),
    /// Content that was not asked for, out of order, or whose hash does not verify.
    BadData(String),
    /// The peer reported a failure.
    Remote(String),
}

impl std::fmt::Display for SyncError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SyncError::Unexpected(s) => write!(f, "protocol: unexpected {s}"),
            SyncError::NonceMismatch => f.write_str("session nonce mismatch (replay?)"),
            SyncError::BadManifest(s) => write!(f, "bad manifest: {s}"),
            SyncError::BadData(s) => write!(f, "bad content: {s}"),
            SyncError::Remote(s) => write!(f, "peer failed: {s}"),
        }
    }
}

impl std::error::Error for SyncError {}

/// Splits `bytes` (the content of `hash`) into [`SyncMsg::Data`] messages.
pub fn data_messages(hash: Hash, bytes: &[u8]) -> impl Iterator<Item = SyncMsg> + '_ {
    let n = bytes.len().div_ceil(DATA_CHUNK).max(1);
    (0..n).map(move |i| {
        let start = i * DATA_CHUNK;
        let end = (start + DATA_CHUNK).min(bytes.len());
        SyncMsg::Data {
            hash,
            offset: start as u64,
            last: i + 1 == n,
            bytes: bytes[start..end].to_vec(),
        }
    })
}

// ---------------------------------------------------------------- sender

/// What the sender's shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderAction {
    /// Send this message.
    Send(SyncMsg),
    /// Send the content of this hash (as [`data_messages`]).
    SendContent(Hash),
    /// The receiver runs the revision now.
    Done {
        /// Revision.
        revision: u64,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SState {
    AwaitHello,
    AwaitNeeds,
    AwaitCommitted,
    Done,
}

/// The sender's state machine.
#[derive(Debug)]
pub struct SenderCore {
    revision: u64,
    manifest: Manifest,
    nonce: [u8; NONCE_LEN],
    state: SState,
    needed: BTreeSet<Hash>,
    hashes: HashSet<Hash>,
    /// Revision the receiver ran before, from its Hello.
    pub peer_revision: Option<u64>,
}

impl SenderCore {
    /// A sender offering `revision` with `manifest`, with a fresh `nonce`.
    pub fn new(revision: u64, manifest: Manifest, nonce: [u8; NONCE_LEN]) -> Self {
        let hashes = manifest.files.values().map(|e| e.sha256).collect();
        SenderCore {
            revision,
            manifest,
            nonce,
            state: SState::AwaitHello,
            needed: BTreeSet::new(),
            hashes,
            peer_revision: None,
        }
    }

    /// Content hashes the receiver asked for (valid once the needs are in).
    pub fn needed(&self) -> &BTreeSet<Hash> {
        &self.needed
    }

    /// Handles one message from the receiver.
    pub fn handle(&mut self, msg: SyncMsg) -> Result<Vec<SenderAction>, SyncError> {
        match (self.state, msg) {
            (_, SyncMsg::Failed { reason }) => {
                self.state = SState::Done;
                Err(SyncError::Remote(reason))
            }
            (SState::AwaitHello, SyncMsg::Hello { nonce, revision }) => {
                self.peer_revision = revision;
                let mut out = vec![SenderAction::Send(SyncMsg::Offer {
                    nonce,
                    sender_nonce: self.nonce,
                    revision: self.revision,
                    entries: self.manifest.files.len() as u64,
                    digest: self.manifest.digest(),
                })];
                let mut batch = Vec::new();
                let mut used = 0;
                for (p, e) in &self.manifest.files {
                    let cost = p.len() + 60;
                    if used + cost > ENTRIES_BUDGET && !batch.is_empty() {
                        out.push(SenderAction::Send(SyncMsg::Entries(std::mem::take(
                            &mut batch,
                        ))));
                        used = 0;
                    }
                    used += cost;
                    batch.push(WireEntry {
                        path: p.clone(),
                        sha256: e.sha256,
                        size: e.size,
                        mode: e.mode,
                    });
                }
                if !batch.is_empty() {
                    out.push(SenderAction::Send(SyncMsg::Entries(batch)));
                }
                out.push(SenderAction::Send(SyncMsg::EntriesEnd));
                self.state = SState::AwaitNeeds;
                Ok(out)
            }
            (SState::AwaitNeeds, SyncMsg::Need(hs)) => {
                for h in hs {
                    if !self.hashes.contains(&h) {
                        return Err(SyncError::BadData("need of an unknown hash".into()));
                    }
                    self.needed.insert(h);
                }
                Ok(Vec::new())
            }
            (SState::AwaitNeeds, SyncMsg::NeedEnd) => {
                let mut out: Vec<SenderAction> = self
                    .needed
                    .iter()
                    .map(|h| SenderAction::SendContent(*h))
                    .collect();
                out.push(SenderAction::Send(SyncMsg::Commit));
                self.state = SState::AwaitCommitted;
                Ok(out)
            }
            (
                SState::AwaitCommitted,
                SyncMsg::Committed {
                    sender_nonce,
                    revision,
                },
            ) => {
                if sender_nonce != self.nonce {
                    return Err(SyncError::NonceMismatch);
                }
                if revision != self.revision {
                    return Err(SyncError::Unexpected("commit of another revision"));
                }
                self.state = SState::Done;
                Ok(vec![SenderAction::Done { revision }])
            }
            _ => Err(SyncError::Unexpected("message for the sender's state")),
        }
    }
}

// ---------------------------------------------------------------- receiver

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
    },
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
    sizes: std::collections::HashMap<Hash, u64>,
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
                open: None,
            },
            hello,
        )
    }

    /// Handles one message from the sender.
    pub fn handle(&mut self, msg: SyncMsg) -> Result<Vec<ReceiverAction>, SyncError> {
        match (&self.state, msg) {
            (_, SyncMsg::Failed { reason }) => {
                self.state = RState::Done;
                Err(SyncError::Remote(reason))
            }
            (RState::AwaitOffer, SyncMsg::Join { serial, addr }) => {
                self.state = RState::Done;
                Ok(vec![ReceiverAction::Join { serial, addr }])
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
                    if e.mode & !0o7777 != 0 {
                        return Err(SyncError::BadManifest("bad mode".into()));
                    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;

    fn content(i: u32) -> Vec<u8> {
        format!("file {i}\n")
            .repeat(i as usize % 500 + 1)
            .into_bytes()
    }

    fn manifest(files: &[(&str, Vec<u8>)]) -> Manifest {
        let mut m = Manifest::default();
        for (p, c) in files {
            m.files.insert(
                p.to_string(),
                Entry {
                    sha256: Sha256::digest(c).into(),
                    size: c.len() as u64,
                    mode: 0o644,
                },
            );
        }
        m
    }

    /// Runs both cores against each other in memory; returns hashes written by the receiver.
    fn run(
        old: Option<&Manifest>,
        new: &Manifest,
        contents: &std::collections::HashMap<Hash, Vec<u8>>,
        mut tamper: impl FnMut(&mut SyncMsg),
    ) -> Result<Vec<Hash>, SyncError> {
        let (mut rx, hello) = ReceiverCore::new([1; 16], old.map(|m| (1, m)));
        let mut tx = SenderCore::new(2, new.clone(), [2; 16]);
        let mut to_rx: std::collections::VecDeque<SyncMsg> = Default::default();
        let mut to_tx: std::collections::VecDeque<SyncMsg> = vec![hello].into();
        let mut written = Vec::new();
        for _ in 0..1_000_000 {
            if let Some(m) = to_tx.pop_front() {
                for a in tx.handle(m)? {
                    match a {
                        SenderAction::Send(m) => to_rx.push_back(m),
                        SenderAction::SendContent(h) => {
                            to_rx.extend(data_messages(h, &contents[&h]))
                        }
                        SenderAction::Done { .. } => return Ok(written),
                    }
                }
            } else if let Some(mut m) = to_rx.pop_front() {
                tamper(&mut m);
                for a in rx.handle(m)? {
                    match a {
                        ReceiverAction::Send(m) => to_tx.push_back(m),
                        ReceiverAction::Write {
                            hash, last: true, ..
                        } => written.push(hash),
                        ReceiverAction::Commit { .. } => to_tx.push_back(rx.committed()),
                        _ => {}
                    }
                }
            } else {
                return Err(SyncError::Unexpected("stall"));
            }
        }
        Err(SyncError::Unexpected("no end"))
    }

    #[test]
    fn only_changed_content_travels() {
        let files: Vec<(String, Vec<u8>)> = (0..300)
            .map(|i| (format!("d{}/f{i}", i % 7), content(i)))
            .collect();
        let refs: Vec<(&str, Vec<u8>)> =
            files.iter().map(|(p, c)| (p.as_str(), c.clone())).collect();
        let old = manifest(&refs);
        let mut changed = refs.clone();
        changed[3].1 = b"changed".to_vec();
        changed[100].1 = b"changed too".to_vec();
        changed.push(("new/file", b"new".to_vec()));
        let new = manifest(&changed);
        let contents = changed
            .iter()
            .map(|(_, c)| (Sha256::digest(c).into(), c.clone()))
            .collect();
        let written = run(Some(&old), &new, &contents, |_| {}).unwrap();
        assert_eq!(written.len(), 3);
        // From nothing: every distinct content.
        let written = run(None, &new, &contents, |_| {}).unwrap();
        assert_eq!(written.len(), new.by_hash().len());
    }

    #[test]
    fn tampering_is_caught() {
        let files = vec![("a", b"alpha".to_vec()), ("b", b"beta".to_vec())];
        let m = manifest(&files);
        let contents: std::collections::HashMap<Hash, Vec<u8>> = files
            .iter()
            .map(|(_, c)| (Sha256::digest(c).into(), c.clone()))
            .collect();
        type Tamper = Box<dyn FnMut(&mut SyncMsg)>;
        let cases: Vec<Tamper> = vec![
            Box::new(|m| {
                if let SyncMsg::Offer { nonce, .. } = m {
                    nonce[0] ^= 1
                }
            }),
            Box::new(|m| {
                if let SyncMsg::Entries(e) = m {
                    e[0].path = "../evil".into()
                }
            }),
            Box::new(|m| {
                if let SyncMsg::Entries(e) = m {
                    e[0].size += 1
                }
            }),
            Box::new(|m| {
                if let SyncMsg::Data { bytes, .. } = m {
                    bytes[0] ^= 1
                }
            }),
            Box::new(|m| {
                if let SyncMsg::Data { offset, .. } = m {
                    *offset += 1
                }
            }),
            Box::new(|m| {
                if let SyncMsg::Commit = m {
                    *m = SyncMsg::EntriesEnd
                }
            }),
        ];
        for (i, mut t) in cases.into_iter().enumerate() {
            assert!(
                run(None, &m, &contents, &mut t).is_err(),
                "case {i} accepted"
            );
        }
    }

    #[test]
    fn messages_fit_one_frame() {
        let long = "p/".repeat(200) + "x";
        let msgs = vec![
            SyncMsg::Entries(
                (0..ENTRIES_BUDGET / (long.len() + 60) + 1)
                    .map(|_| WireEntry {
                        path: long.clone(),
                        sha256: [0xFF; 32],
                        size: u64::MAX,
                        mode: 0o7777,
                    })
                    .collect(),
            ),
            SyncMsg::Need(vec![[0xFF; 32]; NEED_PER_MSG]),
            SyncMsg::Data {
                hash: [0xFF; 32],
                offset: u64::MAX,
                last: true,
                bytes: vec![0xFF; DATA_CHUNK],
            },
        ];
        for m in msgs {
            let n = postcard::to_allocvec(&m).unwrap().len();
            assert!(n <= ha_proto::frame::MAX_BODY_LEN, "{n}");
        }
    }
}
