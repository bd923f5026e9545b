//! The one place where a frame is accepted: every channel, both ends of every link.
//!
//! An [`Endpoint`] seals what its owner sends and opens what it receives, in one order for
//! everyone:
//!
//! 1. length bounds, magic, version, kind, flags, body length ([`crate::frame::peek_header`]);
//!    a compact frame ([`crate::frame::open_compact`]) only where one sender is expected
//!    ([`Senders::Only`], which supplies the sender and the cluster id it leaves out);
//! 2. cluster id, key id, tag (the frame is authentic, [`crate::frame::open`]);
//! 3. channel: the kind this endpoint receives (the host link's two directions are two kinds,
//!    so a frame reflected to its sender is refused here);
//! 4. sender: the [`Senders`] rule of the call;
//! 5. binding: a frame whose peer epoch names another boot of this endpoint is stale
//!    ([`Reject::StaleBinding`]);
//! 6. replay: the sender's window for this channel ([`crate::replay`]), checked, not yet
//!    recorded;
//! 7. decode: the body is a message of the channel's set;
//! 8. admission: the caller's rule for the message (direction, a message that must be bound
//!    and arrived unbound, a key sent in clear);
//! 9. only then the frame is recorded in the replay window: a refused frame moves nothing.
//!
//! Every refusal is a [`Reject`], one counter each.

use serde::{de::DeserializeOwned, Serialize};

use crate::frame::{self, Error as FrameError, Header, Opened, MAX_FRAME_LEN};
use crate::ids::{Channel, Serial};
use crate::keys::Keyring;
use crate::msg::member::MemberMsg;
use crate::replay::ReplayTable;
use crate::seq::Sequencer;

/// Why a received frame was refused; each reason has its own counter ([`Reject::index`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Reject {
    /// Shorter than a header and tag, or than its declared body.
    Truncated,
    /// Longer than a frame may be.
    Oversize,
    /// Not an HA frame.
    BadMagic,
    /// Unknown protocol version.
    UnknownVersion,
    /// Unknown channel kind.
    UnknownKind,
    /// Undefined flag bits.
    BadFlags,
    /// Bytes after the tag.
    TrailingBytes,
    /// Another cluster's frame.
    WrongCluster,
    /// Sealed with a key id not held.
    UnknownKey,
    /// Authentication failed (forged, corrupted, or another key).
    BadTag,
    /// Replayed (or reordered beyond the window).
    Replay,
    /// From an earlier boot of the sender than one already seen.
    StaleEpoch,
    /// The replay table has no room for another sender.
    TableFull,
    /// The body is not a message of the channel's set.
    Decode,
    /// Not the channel (or direction) this endpoint receives.
    WrongChannel,
    /// The sender is not one this endpoint accepts (not a member, not the expected peer).
    WrongSender,
    /// Our own frame came back.
    OwnFrame,
    /// A message this end sends, never receives.
    WrongDirection,
    /// Key material sent without the AEAD.
    KeyInClear,
    /// Bound to another boot of this receiver: recorded before a reboot, replayed after it.
    StaleBinding,
    /// A message that changes state but is not bound to this receiver's current boot.
    Unbound,
    /// Arrived on a link or interface that is not configured.
    UnknownLink,
}

impl Reject {
    /// Number of reasons (size of a counter array).
    pub const COUNT: usize = 22;
    /// Every reason, in counter order.
    pub const ALL: [Reject; Self::COUNT] = [
        Reject::Truncated,
        Reject::Oversize,
        Reject::BadMagic,
        Reject::UnknownVersion,
        Reject::UnknownKind,
        Reject::BadFlags,
        Reject::TrailingBytes,
        Reject::WrongCluster,
        Reject::UnknownKey,
        Reject::BadTag,
        Reject::Replay,
        Reject::StaleEpoch,
        Reject::TableFull,
        Reject::Decode,
        Reject::WrongChannel,
        Reject::WrongSender,
        Reject::OwnFrame,
        Reject::WrongDirection,
        Reject::KeyInClear,
        Reject::StaleBinding,
        Reject::Unbound,
        Reject::UnknownLink,
    ];

    /// Position of this reason in a counter array.
    pub fn index(self) -> usize {
        self as usize
    }

    /// A short, stable name, for counters, logs and `--json` output.
    pub fn name(self) -> &'static str {
        match self {
            Reject::Truncated => "truncated",
            Reject::Oversize => "oversize",
            Reject::BadMagic => "bad_magic",
            Reject::UnknownVersion => "unknown_version",
            Reject::UnknownKind => "unknown_kind",
            Reject::BadFlags => "bad_flags",
            Reject::TrailingBytes => "trailing_bytes",
            Reject::WrongCluster => "wrong_cluster",
            Reject::UnknownKey => "unknown_key",
            Reject::BadTag => "bad_tag",
            Reject::Replay => "replay",
            Reject::StaleEpoch => "stale_epoch",
            Reject::TableFull => "table_full",
            Reject::Decode => "decode",
            Reject::WrongChannel => "wrong_channel",
            Reject::WrongSender => "wrong_sender",
            Reject::OwnFrame => "own_frame",
            Reject::WrongDirection => "wrong_direction",
            Reject::KeyInClear => "key_in_clear",
            Reject::StaleBinding => "stale_binding",
            Reject::Unbound => "unbound",
            Reject::UnknownLink => "unknown_link",
        }
    }
}

impl From<FrameError> for Reject {
    fn from(e: FrameError) -> Self {
        match e {
            FrameError::Truncated => Reject::Truncated,
            FrameError::Oversize | FrameError::BufferTooSmall | FrameError::Encode => {
                Reject::Oversize
            }
            FrameError::BadMagic => Reject::BadMagic,
            FrameError::UnknownVersion(_) => Reject::UnknownVersion,
            FrameError::UnknownKind(_) => Reject::UnknownKind,
            FrameError::BadFlags(_) => Reject::BadFlags,
            FrameError::TrailingBytes => Reject::TrailingBytes,
            FrameError::WrongCluster(_) => Reject::WrongCluster,
            FrameError::UnknownKey(_) => Reject::UnknownKey,
            FrameError::BadTag => Reject::BadTag,
            FrameError::Replay => Reject::Replay,
            FrameError::StaleEpoch => Reject::StaleEpoch,
            FrameError::TableFull => Reject::TableFull,
            FrameError::Decode => Reject::Decode,
        }
    }
}

impl core::fmt::Display for Reject {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// Counters of refused frames, one per [`Reject`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RejectCounters(pub [u32; Reject::COUNT]);

impl RejectCounters {
    /// Counts one refusal (saturating).
    pub fn count(&mut self, r: Reject) {
        let c = &mut self.0[r.index()];
        *c = c.saturating_add(1);
    }

    /// The count of one reason.
    pub fn get(&self, r: Reject) -> u32 {
        self.0[r.index()]
    }

    /// All refusals.
    pub fn total(&self) -> u32 {
        self.0.iter().fold(0u32, |a, b| a.saturating_add(*b))
    }

    /// `(reason, count)` for every reason counted at least once.
    pub fn nonzero(&self) -> impl Iterator<Item = (Reject, u32)> + '_ {
        Reject::ALL
            .iter()
            .map(|r| (*r, self.get(*r)))
            .filter(|(_, n)| *n > 0)
    }
}

/// Who may send the frames an endpoint opens.
#[derive(Clone, Copy, Debug)]
pub enum Senders<'a> {
    /// Exactly this serial. The host link's two ends both send under the member's own
    /// serial (the direction is the channel kind).
    Only(Serial),
    /// One of these serials, never this endpoint's own (cluster members).
    AnyOf(&'a [Serial]),
    /// Anyone holding the key but this endpoint's own serial (a peer learnt from its frames).
    AnyOther,
}

/// The receiving end, as a message's [`Admit`] rule sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Receiver {
    /// The receiver's serial.
    pub serial: Serial,
    /// The receiver's current boot epoch.
    pub epoch: u32,
    /// The frame's peer epoch is the receiver's current boot (not 0).
    pub bound: bool,
}

/// What a message needs before it is admitted (step 8).
pub trait Admit {
    /// Refuses a message that must not be accepted from this frame by `to` (wrong
    /// direction, a state change not bound to the receiver's current boot, ...).
    fn admit(&self, header: &Header, to: &Receiver) -> Result<(), Reject>;
}

/// A frame accepted by [`Endpoint::open`]: its header and whether it was bound to this
/// endpoint's current boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The verified header.
    pub header: Header,
    /// The peer epoch named this endpoint's current boot (not 0).
    pub bound: bool,
}

/// One end of one channel: seals under this member's serial and boot, opens the peer's
/// frames in the order of the module documentation.
///
/// `N` senders are tracked by the replay table (the peers this end hears on `recv`).
#[derive(Clone, Debug)]
pub struct Endpoint<const N: usize> {
    keyring: Keyring,
    seq: Sequencer,
    send: Channel,
    recv: Channel,
    replay: ReplayTable<N>,
}

impl<const N: usize> Endpoint<N> {
    /// An endpoint for member `me` of `cluster_id` in boot `epoch` (the persistent boot
    /// counter, never 0), sending frames of kind `send` and receiving kind `recv`, sealing
    /// with the AEAD when `encrypt`.
    pub fn new(
        keyring: Keyring,
        cluster_id: u32,
        me: Serial,
        epoch: u32,
        send: Channel,
        recv: Channel,
        encrypt: bool,
    ) -> Self {
        let mut seq = Sequencer::new(cluster_id, me, epoch);
        seq.aead = encrypt;
        Self {
            keyring,
            seq,
            send,
            recv,
            replay: ReplayTable::new(),
        }
    }

    /// This endpoint's boot epoch.
    pub fn epoch(&self) -> u32 {
        self.seq.epoch
    }

    /// This endpoint's serial.
    pub fn me(&self) -> Serial {
        self.seq.sender
    }

    /// The cluster id.
    pub fn cluster_id(&self) -> u32 {
        self.seq.cluster_id
    }

    /// The keys (for a rollover: accept, seal with, retire).
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The keys, to change them (rollover phases).
    pub fn keyring_mut(&mut self) -> &mut Keyring {
        &mut self.keyring
    }

    /// True when frames are sealed with the AEAD.
    pub fn encrypts(&self) -> bool {
        self.seq.aead
    }

    /// Turns the AEAD on or off for the frames sealed from now on (a reload of `encrypt`).
    pub fn set_encrypt(&mut self, encrypt: bool) {
        self.seq.aead = encrypt;
    }

    /// The newest boot epoch heard from `peer` on the receive channel, if any.
    pub fn peer_epoch(&self, peer: Serial) -> Option<u32> {
        self.replay.window(peer, self.recv).and_then(|w| w.epoch())
    }

    /// Forgets a sender (removed from the cluster).
    pub fn forget(&mut self, peer: Serial) {
        self.replay.forget(peer);
    }

    /// Seals `msg` for `to` (bound to the boot of `to` last heard; unbound when `to` is
    /// `None` or was never heard) into `out`; returns the frame length. `force_aead` seals
    /// this one frame with the AEAD whatever the endpoint's setting (key transport).
    pub fn seal<T: Serialize>(
        &mut self,
        msg: &T,
        to: Option<Serial>,
        force_aead: bool,
        out: &mut [u8],
    ) -> Result<usize, FrameError> {
        self.seal_as(msg, to, force_aead, false, out)
    }

    /// Like [`Endpoint::seal`]; `compact` asks for the compact form (for a receiver that
    /// takes it and knows this sender: the host link), which a sequence number past 48 bits
    /// overrides with the full form.
    pub fn seal_as<T: Serialize>(
        &mut self,
        msg: &T,
        to: Option<Serial>,
        force_aead: bool,
        compact: bool,
        out: &mut [u8],
    ) -> Result<usize, FrameError> {
        let peer_epoch = to.and_then(|p| self.peer_epoch(p)).unwrap_or(0);
        let keys = self.keyring.sealing();
        let mut hdr = self.seq.header(self.send, keys.key_id());
        hdr.peer_epoch = peer_epoch;
        hdr.aead |= force_aead;
        if compact && frame::fits_compact(&hdr) {
            frame::seal_msg_compact(keys, &hdr, msg, out)
        } else {
            frame::seal_msg(keys, &hdr, msg, out)
        }
    }

    /// Opens a frame in place (steps 1–6 and 9 of the module documentation) and decodes its
    /// body as `T`, admitted by `T`'s [`Admit`] rule. A refused frame changes nothing.
    pub fn open<T: DeserializeOwned + Admit>(
        &mut self,
        buf: &mut [u8],
        senders: Senders<'_>,
    ) -> Result<(Accepted, T), Reject> {
        let mut msg = None;
        let accepted = self.open_into(buf, senders, &mut msg)?;
        msg.map(|m| (accepted, m)).ok_or(Reject::Decode)
    }

    /// Like [`Endpoint::open`], the message decoded into `out` (`None` on a refusal), so
    /// that it is not moved through the callers' stack frames (a host message is about
    /// 1 KiB: the firmware's stack budget, docs/firmware.md "Size").
    pub fn open_into<T: DeserializeOwned + Admit>(
        &mut self,
        buf: &mut [u8],
        senders: Senders<'_>,
        out: &mut Option<T>,
    ) -> Result<Accepted, Reject> {
        *out = None;
        let r = self.open_slot(buf, senders, out);
        if r.is_err() {
            *out = None;
        }
        r
    }

    fn open_slot<T: DeserializeOwned + Admit>(
        &mut self,
        buf: &mut [u8],
        senders: Senders<'_>,
        out: &mut Option<T>,
    ) -> Result<Accepted, Reject> {
        let epoch = self.seq.epoch;
        let opened = self.authenticate(buf, senders)?;
        let accepted = Accepted {
            header: opened.header,
            bound: opened.header.peer_epoch == epoch,
        };
        opened.decode_into(out).map_err(Reject::from)?;
        let to = Receiver {
            serial: self.seq.sender,
            epoch,
            bound: accepted.bound,
        };
        if let Some(msg) = out.as_ref() {
            msg.admit(&accepted.header, &to)?;
        }
        self.replay.record(&accepted.header).map_err(Reject::from)?;
        Ok(accepted)
    }

    /// Opens a frame whose body the caller decodes itself (a body that is a head followed
    /// by records); the frame is recorded in the replay window at once, so the caller must
    /// not refuse it afterwards for anything but a malformed body.
    pub fn open_raw<'a>(
        &mut self,
        buf: &'a mut [u8],
        senders: Senders<'_>,
    ) -> Result<(Accepted, &'a [u8]), Reject> {
        let epoch = self.seq.epoch;
        let opened = self.authenticate(buf, senders)?;
        let header = opened.header;
        self.replay.record(&header).map_err(Reject::from)?;
        Ok((
            Accepted {
                header,
                bound: header.peer_epoch == epoch,
            },
            opened.body,
        ))
    }

    /// Steps 1–6: everything but decoding and recording.
    fn authenticate<'a>(
        &self,
        buf: &'a mut [u8],
        senders: Senders<'_>,
    ) -> Result<Opened<'a>, Reject> {
        if buf.len() > MAX_FRAME_LEN {
            return Err(Reject::Oversize);
        }
        let me = self.seq.sender;
        let opened = match (buf.first(), senders) {
            // A compact frame leaves the sender out: only a link with one sender takes it.
            (Some(&frame::COMPACT_MAGIC), Senders::Only(s)) => {
                frame::open_compact(&self.keyring, self.seq.cluster_id, s, buf)?
            }
            (Some(&frame::COMPACT_MAGIC), _) => return Err(Reject::BadMagic),
            _ => frame::open(&self.keyring, self.seq.cluster_id, buf)?,
        };
        let h = opened.header;
        if h.channel != self.recv {
            return Err(Reject::WrongChannel);
        }
        match senders {
            Senders::Only(s) if h.sender != s => return Err(Reject::WrongSender),
            Senders::AnyOf(_) | Senders::AnyOther if h.sender == me => {
                return Err(Reject::OwnFrame)
            }
            Senders::AnyOf(list) if !list.contains(&h.sender) => return Err(Reject::WrongSender),
            _ => {}
        }
        if h.peer_epoch != 0 && h.peer_epoch != self.seq.epoch {
            return Err(Reject::StaleBinding);
        }
        self.replay.check(&h).map_err(Reject::from)?;
        Ok(opened)
    }
}

impl Admit for MemberMsg {
    /// Member frames go to every member on a link, so they are never bound in the header;
    /// the messages that change a receiver's state name the receiver's boot in their body
    /// instead, and one naming another boot of the receiver was recorded before it rebooted:
    /// refused ([`Reject::StaleBinding`]). A
    /// heartbeat from a sender that has not heard the receiver yet names none of its boots
    /// and is accepted (that is how two members first meet).
    fn admit(&self, _header: &Header, to: &Receiver) -> Result<(), Reject> {
        let names_other_boot =
            |member: &Serial, epoch: u32| *member == to.serial && epoch != to.epoch;
        let stale = match self {
            MemberMsg::Heartbeat(hb) => hb
                .heard
                .iter()
                .any(|h| names_other_boot(&h.member, h.epoch)),
            MemberMsg::AdminFor {
                target,
                target_epoch,
                ..
            } => names_other_boot(target, *target_epoch),
            MemberMsg::ResyncRequest {
                to: t, to_epoch, ..
            } => names_other_boot(t, *to_epoch),
            MemberMsg::JoinRequest(_) | MemberMsg::JoinAccept(_) | MemberMsg::JoinReject(_) => {
                false
            }
        };
        if stale {
            Err(Reject::StaleBinding)
        } else {
            Ok(())
        }
    }
}
