//! The sender's state machine: offers a revision, sends the content the receiver lacks.

use std::collections::{BTreeSet, HashSet};

use super::{SyncError, SyncMsg, WireEntry, ENTRIES_BUDGET, NONCE_LEN};
use crate::manifest::Manifest;
use crate::Hash;

/// What the sender's shell must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SenderAction {
    /// Send this message.
    Send(SyncMsg),
    /// Send the content of this hash (as [`super::data_messages`]).
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
