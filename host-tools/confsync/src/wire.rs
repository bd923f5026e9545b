//! The authenticated message stream of a sync session.
//!
//! Each [`SyncMsg`] is the body of one `ha_proto` frame on [`Channel::Management`], written to
//! the stream behind a 2-byte big-endian length. Frames are sealed and opened by an
//! [`Endpoint`], the one place where the system accepts a frame (authentication, channel,
//! sender, binding, replay, decoding, admission, in that order; every refusal a typed
//! [`Reject`]); this module only adds the sync messages' admission rule (`Inbound`):
//!
//! - direction: a message the other side never sends is `wrong_direction` (a frame reflected
//!   back to its sender is also `own_frame`);
//! - binding: each end runs the session in an epoch of its own from the member's
//!   [`SessionCounter`], and seals every frame for the other end's session epoch once it heard
//!   it. The receiver speaks first, so its `Hello` (and a `Failed` refusing the session) is the
//!   only frame that may be unbound; every frame to the receiver must be bound to the
//!   receiver's current session (`unbound`), and a frame bound to another session — recorded
//!   earlier and replayed — is `stale_binding`;
//! - encryption: when the member encrypts, a frame in clear is refused as `key_in_clear`
//!   (configuration files carry keys: IPsec secrets, certificates' private keys).
//!
//! The session nonces of [`crate::protocol`] bind the session once more at the protocol level.
//!
//! Every read and write is bounded by the session's [`Limits`]: a peer that stays silent,
//! trickles bytes or stops reading is cut off ([`WireError::Deadline`]).

use std::io::{self, BufReader, BufWriter, Read, Write};
use std::time::Instant;

use ha_proto::endpoint::{Admit, Endpoint, Receiver, Reject, Senders};
use ha_proto::frame::{Header, MAX_FRAME_LEN};
use ha_proto::keys::Keyring;
use ha_proto::msg::{Channel, Serial};
use serde::{Deserialize, Deserializer};

use crate::deadline::{is_timeout, Bounded, Cut, Limits, Timeouts};
use crate::keys::SessionCounter;
use crate::protocol::{Direction, SyncMsg};

/// Senders a session's replay table tracks: a session has exactly one peer (the first sender
/// accepted, or the one expected); any other is refused by the sender rule before the table
/// is consulted.
pub const SESSION_PEERS: usize = 1;

/// Why the stream failed.
#[derive(Debug)]
pub enum WireError {
    /// The transport failed or closed.
    Io(io::Error),
    /// A frame was refused by the endpoint (authentication, binding, replay, admission...).
    Refused(Reject),
    /// The peer was too slow: a read or write, the handshake or the session took too long.
    Deadline(Cut),
    /// A message is too large for a frame.
    Codec,
}

impl std::fmt::Display for WireError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WireError::Io(e) => write!(f, "transport: {e}"),
            WireError::Refused(r) => write!(f, "frame rejected: {r}"),
            WireError::Deadline(c) => write!(f, "session cut: {}", c.name()),
            WireError::Codec => f.write_str("message too large for a frame"),
        }
    }
}

impl std::error::Error for WireError {}

impl From<io::Error> for WireError {
    fn from(e: io::Error) -> Self {
        WireError::Io(e)
    }
}

/// Security context of one member: cluster, keys, identity, sealing mode, session counter.
#[derive(Clone, Debug)]
pub struct Security {
    /// Cluster id.
    pub cluster_id: u32,
    /// Accepted keys; the sealing set seals.
    pub keyring: Keyring,
    /// This member's serial (frame sender).
    pub me: Serial,
    /// Seal with the AEAD (encrypt bodies), and refuse frames in clear.
    pub encrypt: bool,
    /// Where each session's epoch comes from.
    pub sessions: SessionCounter,
}

/// Which end of a session this is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// The end that accepted the connection: it speaks first (`Hello`), and receives
    /// revisions and join requests.
    Receiver,
    /// The end that connected: a sender, a prober, a newcomer.
    Connector,
}

/// A sync message as the receiving side admits it: `TO_RECEIVER` says which side receives,
/// `SEALED` that frames in clear are refused.
struct Inbound<const TO_RECEIVER: bool, const SEALED: bool>(SyncMsg);

impl<'de, const R: bool, const S: bool> Deserialize<'de> for Inbound<R, S> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        SyncMsg::deserialize(d).map(Inbound)
    }
}

impl<const TO_RECEIVER: bool, const SEALED: bool> Admit for Inbound<TO_RECEIVER, SEALED> {
    fn admit(&self, header: &Header, to: &Receiver) -> Result<(), Reject> {
        if SEALED && !header.aead {
            return Err(Reject::KeyInClear);
        }
        let wrong = if TO_RECEIVER {
            Direction::ToConnector
        } else {
            Direction::ToReceiver
        };
        if self.0.direction() == wrong {
            return Err(Reject::WrongDirection);
        }
        if !to.bound && (TO_RECEIVER || !self.0.may_be_unbound()) {
            return Err(Reject::Unbound);
        }
        Ok(())
    }
}

/// A framed, authenticated, deadline-bounded message stream over a reader and a writer.
pub struct Wire<R: Read + Timeouts, W: Write + Timeouts> {
    reader: BufReader<Bounded<R>>,
    writer: BufWriter<Bounded<W>>,
    ep: Endpoint<SESSION_PEERS>,
    side: Side,
    sealed: bool,
    expect: Option<Serial>,
    peer: Option<Serial>,
    limits: Limits,
    started: Instant,
    buf: Vec<u8>,
    /// Frames sent.
    pub frames_out: u64,
    /// Frames received.
    pub frames_in: u64,
}

impl<R: Read + Timeouts, W: Write + Timeouts> Wire<R, W> {
    /// The receiving end of a session on an accepted connection; its session epoch is the
    /// next of `sec.sessions`.
    pub fn receiver(reader: R, writer: W, sec: &Security, limits: Limits) -> io::Result<Self> {
        Self::new(reader, writer, sec, Side::Receiver, None, limits)
    }

    /// The connecting end of a session; `expect` is the serial the other end must have
    /// (`None`: whoever holds the key, for a join through an address).
    pub fn connector(
        reader: R,
        writer: W,
        sec: &Security,
        expect: Option<Serial>,
        limits: Limits,
    ) -> io::Result<Self> {
        Self::new(reader, writer, sec, Side::Connector, expect, limits)
    }

    fn new(
        reader: R,
        writer: W,
        sec: &Security,
        side: Side,
        expect: Option<Serial>,
        limits: Limits,
    ) -> io::Result<Self> {
        let epoch = sec.sessions.next()?;
        let ch = Channel::Management;
        Ok(Wire {
            reader: BufReader::with_capacity(64 * 1024, Bounded::new(reader, limits.io)),
            writer: BufWriter::with_capacity(64 * 1024, Bounded::new(writer, limits.io)),
            ep: Endpoint::new(
                sec.keyring.clone(),
                sec.cluster_id,
                sec.me,
                epoch,
                ch,
                ch,
                sec.encrypt,
            ),
            side,
            sealed: sec.encrypt,
            expect,
            peer: None,
            limits,
            started: Instant::now(),
            buf: vec![0u8; MAX_FRAME_LEN],
            frames_out: 0,
            frames_in: 0,
        })
    }

    /// Serial of the peer, once a frame from it was accepted.
    pub fn peer(&self) -> Option<Serial> {
        self.peer
    }

    /// This end's session epoch.
    pub fn epoch(&self) -> u32 {
        self.ep.epoch()
    }

    /// Which end this is.
    pub fn side(&self) -> Side {
        self.side
    }

    /// The reader's underlying stream (to learn the peer's address).
    pub fn stream(&self) -> &R {
        self.reader.get_ref().get_ref()
    }

    /// Until the other end's first frame is accepted, the handshake deadline applies; then
    /// the session's.
    fn deadline(&self) -> (Instant, Cut) {
        match self.peer {
            None => (self.started + self.limits.handshake, Cut::Handshake),
            Some(_) => (self.started + self.limits.session, Cut::Session),
        }
    }

    fn io_error(&self, e: io::Error) -> WireError {
        if !is_timeout(&e) {
            return WireError::Io(e);
        }
        let (at, which) = self.deadline();
        if Instant::now() >= at {
            WireError::Deadline(which)
        } else {
            WireError::Deadline(Cut::Io)
        }
    }

    /// Queues one message (buffered; [`Wire::flush`] or [`Wire::recv`] sends it), bound to
    /// the peer's session once it was heard.
    pub fn send(&mut self, msg: &SyncMsg) -> Result<(), WireError> {
        let n = self
            .ep
            .seal(msg, self.peer, false, &mut self.buf)
            .map_err(|_| WireError::Codec)?;
        self.writer.get_mut().deadline = Some(self.deadline().0);
        // n ≤ MAX_FRAME_LEN < u16::MAX
        let len = (n as u16).to_be_bytes();
        let r = self
            .writer
            .write_all(&len)
            .and_then(|()| self.writer.write_all(&self.buf[..n]));
        r.map_err(|e| self.io_error(e))?;
        self.frames_out += 1;
        Ok(())
    }

    /// Sends everything queued.
    pub fn flush(&mut self) -> Result<(), WireError> {
        self.writer.get_mut().deadline = Some(self.deadline().0);
        self.writer.flush().map_err(|e| self.io_error(e))
    }

    /// Flushes, then reads the next frame and opens it through the endpoint.
    pub fn recv(&mut self) -> Result<SyncMsg, WireError> {
        self.flush()?;
        self.reader.get_mut().deadline = Some(self.deadline().0);
        let mut len = [0u8; 2];
        if let Err(e) = self.reader.read_exact(&mut len) {
            return Err(self.io_error(e));
        }
        let n = usize::from(u16::from_be_bytes(len));
        if n > MAX_FRAME_LEN {
            return Err(WireError::Refused(Reject::Oversize));
        }
        if let Err(e) = self.reader.read_exact(&mut self.buf[..n]) {
            return Err(self.io_error(e));
        }
        let senders = match self.peer.or(self.expect) {
            Some(p) => Senders::Only(p),
            None => Senders::AnyOther,
        };
        let frame = &mut self.buf[..n];
        let opened = match (self.side, self.sealed) {
            (Side::Receiver, false) => self
                .ep
                .open::<Inbound<true, false>>(frame, senders)
                .map(|(a, m)| (a, m.0)),
            (Side::Receiver, true) => self
                .ep
                .open::<Inbound<true, true>>(frame, senders)
                .map(|(a, m)| (a, m.0)),
            (Side::Connector, false) => self
                .ep
                .open::<Inbound<false, false>>(frame, senders)
                .map(|(a, m)| (a, m.0)),
            (Side::Connector, true) => self
                .ep
                .open::<Inbound<false, true>>(frame, senders)
                .map(|(a, m)| (a, m.0)),
        };
        let (accepted, msg) = opened.map_err(WireError::Refused)?;
        self.peer = Some(accepted.header.sender);
        self.frames_in += 1;
        Ok(msg)
    }
}

#[cfg(test)]
mod tests;
