//! The crypto halves of the engine's two calls, which need no table: opening a datagram
//! ([`SyncEngine::open`]) and sealing polled messages ([`SyncEngine::seal_all`]), with the
//! types that carry a frame between the halves.

use ha_proto::endpoint::{Reject, Senders};
use ha_proto::frame::{HEADER_LEN, MAX_BODY_LEN, MAX_FRAME_LEN, TAG_LEN};
use ha_proto::msg::Serial;

use super::SyncEngine;
use crate::sync::wire::SyncMsg;

/// A frame the endpoint accepted ([`SyncEngine::open`]), for [`SyncEngine::handle`].
#[derive(Debug)]
pub struct Opened {
    pub(super) sender: Serial,
    pub(super) epoch: u32,
    /// Bound to this member's boot (every message but a Hello must be).
    pub(super) bound: bool,
    pub(super) msg: SyncMsg,
}

/// A message to the peer from [`SyncEngine::poll_messages`], sealed by
/// [`SyncEngine::seal_all`].
#[derive(Debug)]
pub struct Outgoing {
    what: What,
    /// The member it is bound to (its boot last heard); `None`: unbound (a first Hello).
    to: Option<Serial>,
}

/// What an [`Outgoing`] carries: a message of its own, or a data frame of the stream in
/// flight (sealed from where it is kept, not copied).
#[derive(Debug)]
enum What {
    Msg(SyncMsg),
    Data { stream: u32, rseq: u64 },
}

impl Outgoing {
    pub(super) fn new(msg: SyncMsg, to: Option<Serial>) -> Self {
        Self {
            what: What::Msg(msg),
            to,
        }
    }

    pub(super) fn inflight(stream: u32, rseq: u64, to: Serial) -> Self {
        Self {
            what: What::Data { stream, rseq },
            to: Some(to),
        }
    }
}

impl SyncEngine {
    /// Opens a datagram through the endpoint (authentication, decryption, sender and replay
    /// checks, decoding): the crypto half of [`SyncEngine::on_datagram`], which needs no
    /// table, so a daemon runs it outside the lock its packet path takes. A refused frame is
    /// counted per reason and gives `None`.
    pub fn open(&mut self, bytes: &[u8]) -> Option<Opened> {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let Some(buf) = buf.get_mut(..bytes.len()) else {
            self.stats.rejects.count(Reject::Oversize);
            return None;
        };
        buf.copy_from_slice(bytes);
        let senders = match &self.session {
            Some(s) => Senders::Only(s.serial),
            None if !self.peers.is_empty() => Senders::AnyOf(&self.peers),
            None => Senders::AnyOther,
        };
        match self.ep.open::<SyncMsg>(buf, senders) {
            Ok((accepted, msg)) => Some(Opened {
                sender: accepted.header.sender,
                epoch: accepted.header.epoch,
                bound: accepted.bound,
                msg,
            }),
            Err(r) => {
                self.stats.rejects.count(r);
                None
            }
        }
    }

    /// Seals messages of [`SyncEngine::poll_messages`] into datagrams: the crypto half of
    /// [`SyncEngine::poll_transmit`], which needs no table.
    /// A data frame acknowledged (or its stream restarted) after it was polled is no longer
    /// sent.
    pub fn seal_all(&mut self, msgs: Vec<Outgoing>) -> Vec<Vec<u8>> {
        let mut out = Vec::with_capacity(msgs.len());
        for o in msgs {
            let msg = match &o.what {
                What::Msg(m) => m,
                What::Data { stream, rseq } => {
                    let tx = &self.tx;
                    let found = tx.inflight.front().and_then(|f| {
                        let i = usize::try_from(rseq.checked_sub(f.rseq)?).ok()?;
                        tx.inflight.get(i)
                    });
                    match found {
                        Some(f) if tx.stream == *stream && f.rseq == *rseq => &f.msg,
                        _ => continue,
                    }
                }
            };
            let mut frame = vec![0u8; HEADER_LEN + msg.buffer_len().min(MAX_BODY_LEN) + TAG_LEN];
            if let Ok(n) = self.ep.seal(msg, o.to, false, &mut frame) {
                frame.truncate(n);
                out.push(frame);
            }
        }
        out
    }
}
