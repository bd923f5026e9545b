//! The state-sync message set: the body of one [`Channel::StateSync`] frame.
//!
//! A frame is sealed and opened by `ha_proto::endpoint::Endpoint` (header, key, binding to the
//! receiver's boot, replay window); its body is one postcard-encoded [`SyncMsg`]:
//!
//! ```text
//! variant  message   fields (postcard: varints, then bytes)
//!       0  Hello     -
//!       1  Data      stream u32, rseq u64, records (varint length + bytes)
//!       2  Ack       stream u32, next u64, sack u64
//!       3  Resync    id u32
//!       4  About     model (varint length + UTF-8 bytes)
//! ```
//!
//! The records of a `Data` message are postcard [`Record`]s one after the other, up to the end
//! of `records`; they are decoded one by one when applied ([`Records::iter`]), so the reorder
//! buffer keeps them as bytes (at most [`MAX_BODY_LEN`] per frame).
//!
//! In the manner of smoltcp's `Repr`: [`SyncMsg::parse`] never panics on any input,
//! [`SyncMsg::emit`] never panics and fills exactly [`SyncMsg::buffer_len`] bytes when given
//! that much room; the golden byte vectors of the tests pin the layout, and
//! `fuzz/fuzz_targets/sync_wire.rs` throws arbitrary bytes at both decoders.
//!
//! [`Channel::StateSync`]: ha_proto::msg::Channel::StateSync

use std::net::IpAddr;

use ha_proto::endpoint::{Admit, Receiver, Reject};
use ha_proto::frame::{Header, MAX_BODY_LEN};
use serde::{Deserialize, Serialize};

use crate::tables::{
    CertStatus, ConnKey, ConnState, ExpectKey, Helper, IkeKey, KConnKey, KExpKey, KExpNat, KHelper,
    KSeqAdj, KTcp, KTuple, ZoneAddr,
};

/// One state-sync message (the body of one frame).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMsg {
    /// Liveness, and "this is my boot epoch". The only message that may travel unbound (before
    /// the sender heard the receiver's boot); unbound, it changes nothing on the receiver but
    /// what it knows of the sender's boot.
    Hello,
    /// Ordered records of a reliable stream.
    Data {
        /// Sender's stream (restarted for every bulk synchronization and every new peer).
        stream: u32,
        /// Reliable sequence number in the stream.
        rseq: u64,
        /// The records, encoded.
        records: Records,
    },
    /// Acknowledgement of a stream.
    Ack {
        /// Stream acknowledged.
        stream: u32,
        /// Every frame below this was received.
        next: u64,
        /// Bit i: frame `next + 1 + i` was received.
        sack: u64,
    },
    /// Please send a bulk synchronization (idempotent per id).
    Resync {
        /// Request id.
        id: u32,
    },
    /// What the sender is, for the operator's status table (`hactl info`'s MODEL of a
    /// peer): its management controller's model, as that controller reports it to its main
    /// CPU. Sent at the start of a session, when it changes and every
    /// [`crate::sync::ABOUT_EVERY_MS`]; bound like the state messages. A daemon older than
    /// this message refuses it as malformed (counted) and is otherwise unaffected: it comes
    /// in a frame of its own, never among records.
    About {
        /// The controller's model: 1 to [`MAX_MODEL_LEN`] printable ASCII characters.
        model: String,
    },
}

/// The longest model an [`SyncMsg::About`] may carry.
pub const MAX_MODEL_LEN: usize = 32;

/// Whether `model` may travel in an [`SyncMsg::About`] (and be shown to an operator).
pub fn model_ok(model: &str) -> bool {
    (1..=MAX_MODEL_LEN).contains(&model.len()) && model.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// Why a body or a record was not decoded or not encoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WireError {
    /// Not a message (or record) of this set, or bytes left after it.
    Malformed,
    /// The output buffer is too small.
    BufferTooSmall,
}

impl core::fmt::Display for WireError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            WireError::Malformed => "not a state-sync message",
            WireError::BufferTooSmall => "buffer too small",
        })
    }
}

impl SyncMsg {
    /// Decodes a whole frame body; bytes left after the message are an error.
    pub fn parse(body: &[u8]) -> Result<SyncMsg, WireError> {
        match postcard::take_from_bytes::<SyncMsg>(body) {
            Ok((m, [])) => Ok(m),
            _ => Err(WireError::Malformed),
        }
    }

    /// Bytes [`SyncMsg::emit`] writes.
    pub fn buffer_len(&self) -> usize {
        // Serializing into the size flavor counts bytes and cannot fail for these types.
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }

    /// Encodes into `out`; returns the length written.
    pub fn emit(&self, out: &mut [u8]) -> Result<usize, WireError> {
        postcard::to_slice(self, out)
            .map(|b| b.len())
            .map_err(|_| WireError::BufferTooSmall)
    }

    /// Whether the message changes the receiver's state (everything but [`SyncMsg::Hello`]),
    /// and so must be bound to the receiver's current boot.
    pub fn changes_state(&self) -> bool {
        !matches!(self, SyncMsg::Hello)
    }
}

/// Step 8 of the endpoint's order: a message that changes state must be bound to this
/// receiver's current boot (header `peer_epoch`); only a Hello may be unbound. A frame
/// recorded before this member (or its peer) restarted can therefore change nothing here.
impl Admit for SyncMsg {
    fn admit(&self, _header: &Header, to: &Receiver) -> Result<(), Reject> {
        if self.changes_state() && !to.bound {
            return Err(Reject::Unbound);
        }
        Ok(())
    }
}

/// Largest `records` of a data message with this stream and sequence number: the body's
/// room less the message's head (variant, stream, rseq, length of the records).
pub fn records_room(stream: u32, rseq: u64) -> usize {
    let head = 1 + varint_len(u64::from(stream)) + varint_len(rseq);
    // Records never exceed MAX_BODY_LEN < 16,384: their length is a varint of 2 bytes at most.
    MAX_BODY_LEN.saturating_sub(head + 2)
}

/// Length of a postcard varint of `v`.
fn varint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Encoded records of a data message, postcard [`Record`]s back to back.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Records(pub Vec<u8>);

impl Records {
    /// The records, decoded one by one; a malformed record ends the iteration with an error.
    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter { rest: &self.0 }
    }

    /// Appends one record's encoding.
    pub fn push(&mut self, r: &Record) -> Result<(), WireError> {
        postcard::to_extend(r, std::mem::take(&mut self.0))
            .map(|v| self.0 = v)
            .map_err(|_| WireError::Malformed)
    }

    /// Encoded length, bytes.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True when there are no records.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Iterator over [`Records`].
#[derive(Debug)]
pub struct RecordIter<'a> {
    rest: &'a [u8],
}

impl Iterator for RecordIter<'_> {
    type Item = Result<Record, WireError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() {
            return None;
        }
        match postcard::take_from_bytes::<Record>(self.rest) {
            Ok((r, tail)) => {
                self.rest = tail;
                Some(Ok(r))
            }
            Err(_) => {
                self.rest = &[];
                Some(Err(WireError::Malformed))
            }
        }
    }
}

impl Serialize for Records {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Records {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Records;
            fn expecting(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str("encoded records")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Records, E> {
                Ok(Records(v.to_vec()))
            }
            fn visit_byte_buf<E: serde::de::Error>(self, v: Vec<u8>) -> Result<Records, E> {
                Ok(Records(v))
            }
        }
        d.deserialize_byte_buf(V)
    }
}

/// One change on the wire. Times are ages relative to the sender's clock at framing time
/// (the members' clocks are not comparable).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Record {
    /// Connection created or changed.
    Conn {
        /// Key.
        key: ConnKey,
        /// State.
        state: ConnState,
        /// Flags.
        flags: u8,
        /// Rule id.
        rule: u32,
        /// Milliseconds since creation.
        age: u64,
        /// Milliseconds since the last packet.
        idle: u64,
    },
    /// Connection removed.
    DelConn(ConnKey),
    /// Host learnt.
    Host(ZoneAddr, [u8; 6], u64),
    /// Host forgotten.
    DelHost(ZoneAddr),
    /// User authenticated: name, groups, milliseconds left.
    User(IpAddr, String, Vec<String>, u64),
    /// User logged out.
    DelUser(IpAddr),
    /// Expectation: helper, master connection, milliseconds left.
    Expect(ExpectKey, Helper, ConnKey, u64),
    /// Expectation used or expired.
    DelExpect(ExpectKey),
    /// Gateway status and milliseconds since its last change.
    Gateway(ZoneAddr, bool, u64),
    /// Gateway removed.
    DelGateway(ZoneAddr),
    /// Certificate serial status.
    Cert(Vec<u8>, CertStatus),
    /// Certificate serial removed.
    DelCert(Vec<u8>),
    /// IKE SA: peer, message ids out/in, ESP sequence out/in.
    Ike(IkeKey, IpAddr, u32, u32, u64, u64),
    /// IKE SA removed.
    DelIke(IkeKey),
    /// A bulk synchronization starts (`total` live items follow). Encoded as the struct's
    /// fields in order, the same bytes as a variant with those fields.
    BulkBegin(BulkBegin),
    /// The bulk synchronization is complete.
    BulkEnd {
        /// Request id.
        id: u32,
        /// Items sent.
        sent: u64,
    },
    /// Kernel conntrack entry created or changed (the kernel data path). After the bulk
    /// variants so that older variants keep their encoding.
    KernelConn {
        /// Identity (original direction and zone).
        key: KConnKey,
        /// Reply direction.
        reply: KTuple,
        /// Status bits.
        status: u32,
        /// Mark.
        mark: u32,
        /// TCP tracking state.
        tcp: Option<KTcp>,
        /// Milliseconds until the kernel would expire it.
        left: u64,
        /// Its conntrack helper.
        helper: Option<KHelper>,
    },
    /// Kernel conntrack entry removed.
    DelKernelConn(KConnKey),
    /// Kernel conntrack expectation created or changed.
    KernelExpect {
        /// Identity (expected tuple and zone).
        key: KExpKey,
        /// Original direction of its master entry.
        master: KTuple,
        /// Source address mask.
        mask_src: IpAddr,
        /// Source port mask.
        mask_port: u16,
        /// Flags (`NF_CT_EXPECT_*`).
        flags: u32,
        /// Class of the helper's policy.
        class: u32,
        /// Milliseconds until the kernel would drop it.
        left: u64,
    },
    /// Kernel conntrack expectation removed (used, expired or deleted).
    DelKernelExpect(KExpKey),
    /// [`Record::KernelConn`] of an entry with a TCP sequence adjustment, sent for those
    /// entries only. A peer of an older release cannot decode it and stops reading the frame
    /// there ([`Records::iter`]), so it ends its frame ([`Record::is_newer`]): such a peer
    /// loses only this record.
    KernelConnAdjusted {
        /// Identity (original direction and zone).
        key: KConnKey,
        /// Reply direction.
        reply: KTuple,
        /// Status bits.
        status: u32,
        /// Mark.
        mark: u32,
        /// TCP tracking state.
        tcp: Option<KTcp>,
        /// Milliseconds until the kernel would expire it.
        left: u64,
        /// Its conntrack helper.
        helper: Option<KHelper>,
        /// Sequence adjustment, `[originator, responder]`.
        seq_adj: [KSeqAdj; 2],
    },
    /// [`Record::KernelExpect`] of an expectation with a translation (sent for those only).
    KernelExpectNat {
        /// Identity (expected tuple and zone).
        key: KExpKey,
        /// Original direction of its master entry.
        master: KTuple,
        /// Source address mask.
        mask_src: IpAddr,
        /// Source port mask.
        mask_port: u16,
        /// Flags (`NF_CT_EXPECT_*`).
        flags: u32,
        /// Class of the helper's policy.
        class: u32,
        /// Milliseconds until the kernel would drop it.
        left: u64,
        /// The translation of the expected connection.
        nat: KExpNat,
    },
}

/// The head of a bulk synchronization ([`Record::BulkBegin`]), also what the receiver's
/// engine acts on ([`super::records::Change::BulkBegin`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BulkBegin {
    /// Request id it answers (0 when the sender started it itself).
    pub id: u32,
    /// Items it will carry.
    pub total: u64,
    /// The sender was active when it took the snapshot: its table is the whole truth, and
    /// what the bulk does not refresh is stale. A passive sender's (empty) bulk removes
    /// nothing.
    pub authoritative: bool,
}

impl Record {
    /// Bytes of the record's encoding.
    pub fn buffer_len(&self) -> usize {
        postcard::experimental::serialized_size(self).unwrap_or(usize::MAX)
    }

    /// Whether a peer of an older release may not know this variant (one added after the
    /// kernel records). A peer's walk of a frame ends at the first record it cannot decode,
    /// so such a record ends its frame: an older peer then loses only it, not the records
    /// that would have followed.
    pub fn is_newer(&self) -> bool {
        matches!(
            self,
            Record::KernelConnAdjusted { .. } | Record::KernelExpectNat { .. }
        )
    }

    /// Whether it removes an item.
    pub fn is_removal(&self) -> bool {
        matches!(
            self,
            Record::DelConn(_)
                | Record::DelHost(_)
                | Record::DelUser(_)
                | Record::DelExpect(_)
                | Record::DelGateway(_)
                | Record::DelCert(_)
                | Record::DelIke(_)
                | Record::DelKernelConn(_)
                | Record::DelKernelExpect(_)
        )
    }
}

#[cfg(test)]
mod tests;
