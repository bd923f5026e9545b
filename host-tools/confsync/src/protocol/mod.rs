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
//!
//! or, from a newcomer instead of an offer (SPEC A1):
//!                                  ◄──   Join{nonce echo, serial, addr}
//!   Joined{cluster id, members}    ──►   or Failed{reason}
//!
//! or, from a machine that holds only the cluster key (read-only):
//!                                  ◄──   Enroll{nonce echo}
//!   Enrolment{cluster profile}     ──►   or Failed{reason}
//! ```
//!
//! The receiver (the end that accepted the connection) speaks first: its `Hello` is the
//! session's challenge, a fresh random nonce. Every request that changes the receiver's state
//! starts by echoing it (`Offer`, `Join`), and everything after it in the session follows from
//! that message in the core's states, so no message recorded in another session changes
//! anything here. Below the cores, [`crate::wire`] also binds every frame to the other end's
//! session epoch.
//!
//! Neither core touches files or sockets: the receiver core answers with
//! [`ReceiverAction`]s (stage these bytes, commit), the sender core with [`SenderAction`]s
//! (send this message, send the content of this hash). Every message fits one `ha_proto`
//! frame body ([`ha_proto::frame::MAX_BODY_LEN`]).

use serde::{Deserialize, Serialize};

use crate::Hash;

mod receiver;
mod sender;
#[cfg(test)]
mod tests;

pub use receiver::{ReceiverAction, ReceiverCore};
pub use sender::{SenderAction, SenderCore};

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
        /// [`crate::manifest::Manifest::digest`] of it.
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
        /// Echo of the receiver's nonce (binds the request to this session).
        nonce: [u8; NONCE_LEN],
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
    /// Connecting side → receiver, instead of an offer: a machine that holds only the
    /// cluster key asks for the HA settings its controller's block needs (`hactl cluster
    /// enroll`). Changes nothing on the receiver.
    Enroll {
        /// Echo of the receiver's nonce.
        nonce: [u8; NONCE_LEN],
    },
    /// Connecting side → receiver: [`SyncMsg::Join`] with the newcomer's HA link and
    /// addresses, which the receiving (active) member adds to its own HA member list.
    JoinHa {
        /// Echo of the receiver's nonce.
        nonce: [u8; NONCE_LEN],
        /// The newcomer's serial.
        serial: String,
        /// Its sync receiver's address (`IP:PORT`).
        addr: String,
        /// Its main HA link and data-plane addresses.
        ha: ha_mgmt_api::HaMember,
    },
    /// Receiver → connecting side: the cluster-wide part of this member's block.
    Enrolment {
        /// Everything but the serial and the key (boxed: it is the largest message).
        profile: Box<ha_proto::config_block::ClusterProfile>,
    },
}

/// Which way a message travels in a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// To the receiver (the end that accepted the connection).
    ToReceiver,
    /// To the connecting end (a sender, a prober, a newcomer).
    ToConnector,
    /// Either way ([`SyncMsg::Failed`]).
    Both,
}

impl SyncMsg {
    /// Which way this message travels.
    pub fn direction(&self) -> Direction {
        match self {
            SyncMsg::Offer { .. }
            | SyncMsg::Entries(_)
            | SyncMsg::EntriesEnd
            | SyncMsg::Data { .. }
            | SyncMsg::Commit
            | SyncMsg::Join { .. }
            | SyncMsg::JoinHa { .. }
            | SyncMsg::Enroll { .. } => Direction::ToReceiver,
            SyncMsg::Hello { .. }
            | SyncMsg::Need(_)
            | SyncMsg::NeedEnd
            | SyncMsg::Committed { .. }
            | SyncMsg::Joined { .. }
            | SyncMsg::Enrolment { .. } => Direction::ToConnector,
            SyncMsg::Failed { .. } => Direction::Both,
        }
    }

    /// True for the messages the receiver sends before it heard the connecting end, which
    /// therefore cannot be bound to that end's session: its `Hello`, and a `Failed` that
    /// refuses the session. Every other frame must be bound.
    pub fn may_be_unbound(&self) -> bool {
        matches!(self, SyncMsg::Hello { .. } | SyncMsg::Failed { .. })
    }
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
