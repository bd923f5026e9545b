//! The authenticated frame: a fixed 44-byte header, a postcard body and a 16-byte tag.
//!
//! ```text
//! offset size field
//!      0    2 magic        0x48 0x41 ("HA")
//!      2    1 version      PROTOCOL_VERSION (2)
//!      3    1 kind         Channel: 1 member, 2 host link controller → main CPU,
//!                          3 state sync, 4 management, 5 host link main CPU → controller
//!      4    1 flags        bit 0: AEAD (body encrypted); other bits must be 0
//!      5    1 key id       which derived key set sealed the frame
//!      6    2 body length  big endian
//!      8    4 cluster id   big endian
//!     12   16 sender       serial, ASCII, zero padded
//!     28    4 boot epoch   big endian; the sender's persistent boot counter
//!     32    4 peer epoch   big endian; the receiver's boot epoch as the sender last heard
//!                          it, 0 when unknown or when the frame is for several receivers
//!     36    8 sequence     big endian; increases on every frame of this sender and epoch
//!     44    n body         postcard encoding of the channel's message (ciphertext with AEAD)
//!   44+n   16 tag
//! ```
//!
//! The peer epoch binds a frame to one boot of its receiver: a receiver refuses a frame bound
//! to another of its boots (see [`crate::endpoint`]), so a frame recorded before a reboot of
//! the receiver cannot be replayed after it, although the receiver's replay window started
//! empty.
//!
//! HMAC mode: tag = first 16 bytes of HMAC-SHA256(channel key, header || body).
//! AEAD mode: XChaCha20-Poly1305 with the channel key, nonce = first 24 bytes of
//! SHA-256("ha-nonce-v1" || sender || epoch || sequence), associated data = the header; the
//! body is encrypted in place and the tag is Poly1305's.
//!
//! [`open`] checks, in this order, and reports the first failure: length bounds, magic,
//! version, kind, flags, body length, cluster id, key id, tag. Replay is checked by the caller
//! after a successful open (see [`crate::replay`]).
//!
//! # The compact form (point-to-point links)
//!
//! On a link with one sender at each end (the host link) the cluster id and the sender's
//! serial are known to the receiver, and the body length is what is left between header and
//! tag, so they need not travel. A compact frame leaves them out and shortens the sequence
//! number to 48 bits (a sender past 2^48 frames in one boot sends the full form):
//!
//! ```text
//! offset size field
//!      0    1 magic        0xC5 (never the first byte of a full frame)
//!      1    1 version      PROTOCOL_VERSION
//!      2    1 kind         as in the full form
//!      3    1 flags        as in the full form
//!      4    1 key id
//!      5    4 boot epoch
//!      9    4 peer epoch
//!     13    6 sequence     big endian, 48 bits
//!     19    n body
//!   19+n   16 tag
//! ```
//!
//! The tag is the one of the full frame the compact one stands for: the HMAC (or the AEAD's
//! associated data) covers the full 44-byte header, rebuilt by the receiver from the fields
//! it knows. A frame for another cluster or from another sender therefore fails its tag, and
//! a compact frame and its full twin are one frame to the replay window. [`seal_msg_compact`]
//! writes one, [`open_compact`] opens one; under QEMU, where the host link's UART costs a
//! main-loop turn per byte, the 25 bytes saved are ~5 ms of a probe answer's crossing.

use chacha20poly1305::aead::{AeadInPlace, KeyInit};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hmac::Mac;
use serde::{de::DeserializeOwned, Serialize};
use sha2::{Digest, Sha256};

use crate::ids::{Channel, Serial};
use crate::keys::{KeySet, Keyring};

/// Frame magic, "HA".
pub const MAGIC: [u8; 2] = *b"HA";
/// Version of the header layout and the message sets.
pub const PROTOCOL_VERSION: u8 = crate::ids::PROTOCOL_VERSION;
/// Header length, bytes.
pub const HEADER_LEN: usize = 44;
/// Authentication tag length, bytes (128 bits).
pub const TAG_LEN: usize = 16;
/// Largest frame: one UDP datagram on a 1500-byte Ethernet MTU (1500 - 20 IPv4 - 8 UDP).
pub const MAX_FRAME_LEN: usize = 1472;
/// Largest body that fits in [`MAX_FRAME_LEN`].
pub const MAX_BODY_LEN: usize = MAX_FRAME_LEN - HEADER_LEN - TAG_LEN;
/// Flags bit: the body is encrypted with the AEAD.
pub const FLAG_AEAD: u8 = 0x01;
/// First byte of a compact frame (see the module documentation).
pub const COMPACT_MAGIC: u8 = 0xC5;
/// Header length of a compact frame, bytes.
pub const COMPACT_HEADER_LEN: usize = 19;
/// Sequence numbers from this one on do not fit a compact header (48 bits).
pub const COMPACT_SEQ_LIMIT: u64 = 1 << 48;
/// Prefix of the hashed AEAD nonce input.
pub const NONCE_LABEL: &[u8] = b"ha-nonce-v1";

/// Sealing mode of a frame (SPEC A4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Mode {
    /// HMAC-SHA256 tag, body in clear (default).
    Hmac,
    /// XChaCha20-Poly1305: body encrypted and authenticated.
    Aead,
}

/// The frame header (every field but the body length, which sealing fills in).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// Protocol version; [`PROTOCOL_VERSION`] when sending.
    pub version: u8,
    /// Channel (message kind); selects the key and the message set of the body.
    pub channel: Channel,
    /// True when the body is encrypted ([`Mode::Aead`]).
    pub aead: bool,
    /// Key id of the set that sealed the frame.
    pub key_id: u8,
    /// Cluster the frame belongs to.
    pub cluster_id: u32,
    /// Sender's serial.
    pub sender: Serial,
    /// Sender's boot epoch.
    pub epoch: u32,
    /// The receiver's boot epoch as the sender knows it; 0 when unknown or for frames
    /// addressed to several receivers.
    pub peer_epoch: u32,
    /// Sender's sequence number in this epoch.
    pub seq: u64,
}

impl Header {
    /// The sealing mode the header asks for.
    pub fn mode(&self) -> Mode {
        if self.aead {
            Mode::Aead
        } else {
            Mode::Hmac
        }
    }

    fn write(&self, body_len: u16, out: &mut [u8; HEADER_LEN]) {
        out[0..2].copy_from_slice(&MAGIC);
        out[2] = self.version;
        out[3] = self.channel as u8;
        out[4] = if self.aead { FLAG_AEAD } else { 0 };
        out[5] = self.key_id;
        out[6..8].copy_from_slice(&body_len.to_be_bytes());
        out[8..12].copy_from_slice(&self.cluster_id.to_be_bytes());
        out[12..28].copy_from_slice(&self.sender.0);
        out[28..32].copy_from_slice(&self.epoch.to_be_bytes());
        out[32..36].copy_from_slice(&self.peer_epoch.to_be_bytes());
        out[36..44].copy_from_slice(&self.seq.to_be_bytes());
    }
}

/// Why a frame was not sealed or not accepted. Every variant is a distinct, counted reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Error {
    /// Shorter than a header and a tag, or shorter than its declared body length.
    Truncated,
    /// Longer than [`MAX_FRAME_LEN`], or a body longer than [`MAX_BODY_LEN`].
    Oversize,
    /// The first two bytes are not [`MAGIC`].
    BadMagic,
    /// A protocol version this build does not speak.
    UnknownVersion(u8),
    /// A kind byte that is not a [`Channel`].
    UnknownKind(u8),
    /// Flag bits this version does not define.
    BadFlags(u8),
    /// Bytes after the declared body and tag.
    TrailingBytes,
    /// The frame is for another cluster.
    WrongCluster(u32),
    /// Sealed with a key id the keyring does not hold.
    UnknownKey(u8),
    /// The tag does not verify: corrupted, forged, or sealed with another key.
    BadTag,
    /// Already received (sequence inside the window and seen, or older than the window).
    Replay,
    /// From an earlier boot epoch of the sender than one already seen.
    StaleEpoch,
    /// The replay table has no room for another sender.
    TableFull,
    /// The body is not a valid message of the channel's set.
    Decode,
    /// The message does not fit in the output buffer or in [`MAX_BODY_LEN`].
    Encode,
    /// The output buffer is too small for the frame.
    BufferTooSmall,
}

impl Error {
    /// A short, stable name of the reason, for counters and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Error::Truncated => "truncated",
            Error::Oversize => "oversize",
            Error::BadMagic => "bad_magic",
            Error::UnknownVersion(_) => "unknown_version",
            Error::UnknownKind(_) => "unknown_kind",
            Error::BadFlags(_) => "bad_flags",
            Error::TrailingBytes => "trailing_bytes",
            Error::WrongCluster(_) => "wrong_cluster",
            Error::UnknownKey(_) => "unknown_key",
            Error::BadTag => "bad_tag",
            Error::Replay => "replay",
            Error::StaleEpoch => "stale_epoch",
            Error::TableFull => "table_full",
            Error::Decode => "decode",
            Error::Encode => "encode",
            Error::BufferTooSmall => "buffer_too_small",
        }
    }
}

impl core::fmt::Display for Error {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Error::Truncated => f.write_str("frame truncated"),
            Error::Oversize => write!(f, "frame longer than {MAX_FRAME_LEN} bytes"),
            Error::BadMagic => f.write_str("not an HA frame (bad magic)"),
            Error::UnknownVersion(v) => write!(f, "unknown protocol version {v}"),
            Error::UnknownKind(k) => write!(f, "unknown message kind {k}"),
            Error::BadFlags(x) => write!(f, "undefined flag bits {x:#04x}"),
            Error::TrailingBytes => f.write_str("bytes after the tag"),
            Error::WrongCluster(c) => write!(f, "frame for another cluster ({c})"),
            Error::UnknownKey(k) => write!(f, "sealed with unknown key id {k}"),
            Error::BadTag => f.write_str("authentication tag does not verify"),
            Error::Replay => f.write_str("replayed frame"),
            Error::StaleEpoch => f.write_str("frame from an earlier boot of the sender"),
            Error::TableFull => f.write_str("replay table full"),
            Error::Decode => f.write_str("body is not a valid message"),
            Error::Encode => f.write_str("message too large for a frame"),
            Error::BufferTooSmall => f.write_str("output buffer too small"),
        }
    }
}

fn nonce(sender: &Serial, epoch: u32, seq: u64) -> XNonce {
    let mut h = Sha256::new();
    h.update(NONCE_LABEL);
    h.update(sender.0);
    h.update(epoch.to_be_bytes());
    h.update(seq.to_be_bytes());
    let d = h.finalize();
    *XNonce::from_slice(&d[..24])
}

fn aead(keys: &KeySet, channel: Channel) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(keys.key(channel).into())
}

/// Seals `body` under `hdr` into `out`; returns the frame length.
///
/// `hdr.aead` selects the mode; `hdr.key_id` should be `keys.key_id()` (it is written as given).
pub fn seal(keys: &KeySet, hdr: &Header, body: &[u8], out: &mut [u8]) -> Result<usize, Error> {
    if body.len() > MAX_BODY_LEN {
        return Err(Error::Oversize);
    }
    let total = HEADER_LEN + body.len() + TAG_LEN;
    let out = out.get_mut(..total).ok_or(Error::BufferTooSmall)?;
    out[HEADER_LEN..HEADER_LEN + body.len()].copy_from_slice(body);
    seal_in_place(keys, hdr, body.len(), out)
}

/// Seals a message: its postcard encoding is the body.
pub fn seal_msg<T: Serialize>(
    keys: &KeySet,
    hdr: &Header,
    msg: &T,
    out: &mut [u8],
) -> Result<usize, Error> {
    let body_len = encode_body(msg, out, HEADER_LEN)?;
    let total = HEADER_LEN + body_len + TAG_LEN;
    let out = out.get_mut(..total).ok_or(Error::BufferTooSmall)?;
    seal_in_place(keys, hdr, body_len, out)
}

/// Encodes `msg` as a body after a header of `header_len` bytes in `out`, leaving room for
/// the tag; returns the body's length.
fn encode_body<T: Serialize>(msg: &T, out: &mut [u8], header_len: usize) -> Result<usize, Error> {
    if out.len() < header_len + TAG_LEN {
        return Err(Error::BufferTooSmall);
    }
    let room = (out.len() - header_len - TAG_LEN).min(MAX_BODY_LEN);
    Ok(
        postcard::to_slice(msg, &mut out[header_len..header_len + room])
            .map_err(|_| Error::Encode)?
            .len(),
    )
}

/// Seals a frame whose body is already at `out[HEADER_LEN..HEADER_LEN + body_len]`; `out` is
/// exactly the frame's length.
fn seal_in_place(
    keys: &KeySet,
    hdr: &Header,
    body_len: usize,
    out: &mut [u8],
) -> Result<usize, Error> {
    let total = out.len();
    let mut head = [0u8; HEADER_LEN];
    // body_len ≤ MAX_BODY_LEN < u16::MAX
    hdr.write(body_len as u16, &mut head);
    out[..HEADER_LEN].copy_from_slice(&head);
    let (front, tag_out) = out.split_at_mut(HEADER_LEN + body_len);
    tag_body(keys, hdr, &head, &mut front[HEADER_LEN..], tag_out)?;
    Ok(total)
}

/// Writes the tag of `head || body` into `tag_out`, encrypting `body` in place first when
/// `hdr` asks for the AEAD. `head` is the full header whether or not it travels.
fn tag_body(
    keys: &KeySet,
    hdr: &Header,
    head: &[u8; HEADER_LEN],
    body: &mut [u8],
    tag_out: &mut [u8],
) -> Result<(), Error> {
    if hdr.aead {
        let tag = aead(keys, hdr.channel)
            .encrypt_in_place_detached(&nonce(&hdr.sender, hdr.epoch, hdr.seq), head, body)
            .map_err(|_| Error::Encode)?;
        tag_out.copy_from_slice(&tag);
    } else {
        let mut mac = keys.mac(hdr.channel);
        mac.update(head);
        mac.update(body);
        let full = mac.finalize().into_bytes();
        tag_out.copy_from_slice(&full[..TAG_LEN]);
    }
    Ok(())
}

/// Checks the tag of `head || body` (decrypting `body` in place under the AEAD).
fn verify_body(
    keys: &KeySet,
    hdr: &Header,
    head: &[u8; HEADER_LEN],
    body: &mut [u8],
    tag: &[u8],
) -> Result<(), Error> {
    if hdr.aead {
        aead(keys, hdr.channel)
            .decrypt_in_place_detached(
                &nonce(&hdr.sender, hdr.epoch, hdr.seq),
                head,
                body,
                tag.into(),
            )
            .map_err(|_| Error::BadTag)
    } else {
        let mut mac = keys.mac(hdr.channel);
        mac.update(head);
        mac.update(body);
        mac.verify_truncated_left(tag).map_err(|_| Error::BadTag)
    }
}

/// True when `hdr` can travel as a compact frame (its sequence number fits 48 bits).
pub fn fits_compact(hdr: &Header) -> bool {
    hdr.seq < COMPACT_SEQ_LIMIT
}

/// Seals a message as a compact frame (module documentation): `hdr`'s cluster id and sender
/// are authenticated but left for the receiver to supply. A sequence number past 48 bits is
/// refused ([`Error::Encode`]); see [`fits_compact`].
pub fn seal_msg_compact<T: Serialize>(
    keys: &KeySet,
    hdr: &Header,
    msg: &T,
    out: &mut [u8],
) -> Result<usize, Error> {
    if !fits_compact(hdr) {
        return Err(Error::Encode);
    }
    let body_len = encode_body(msg, out, COMPACT_HEADER_LEN)?;
    let mut head = [0u8; HEADER_LEN];
    // body_len ≤ MAX_BODY_LEN < u16::MAX
    hdr.write(body_len as u16, &mut head);
    out[0] = COMPACT_MAGIC;
    out[1..5].copy_from_slice(&head[2..6]);
    out[5..13].copy_from_slice(&head[28..36]);
    out[13..19].copy_from_slice(&head[38..44]);
    let (front, rest) = out.split_at_mut(COMPACT_HEADER_LEN + body_len);
    tag_body(
        keys,
        hdr,
        &head,
        &mut front[COMPACT_HEADER_LEN..],
        &mut rest[..TAG_LEN],
    )?;
    Ok(COMPACT_HEADER_LEN + body_len + TAG_LEN)
}

/// Authenticates a compact frame from `sender` of `cluster_id` (the fields the link implies)
/// with a key of `keyring`; decrypts an AEAD body in place. Checks, in this order: length
/// bounds, magic, version, kind, flags, key id, tag. A frame sealed for another cluster or
/// by another sender fails its tag ([`Error::BadTag`]).
pub fn open_compact<'a>(
    keyring: &Keyring,
    cluster_id: u32,
    sender: Serial,
    frame: &'a mut [u8],
) -> Result<Opened<'a>, Error> {
    let (channel, aead) = check_fixed(
        frame,
        COMPACT_HEADER_LEN,
        frame.first() == Some(&COMPACT_MAGIC),
        1,
    )?;
    let be32 = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let mut seq = [0u8; 8];
    seq[2..].copy_from_slice(&frame[13..19]);
    let header = Header {
        version: frame[1],
        channel,
        aead,
        key_id: frame[4],
        cluster_id,
        sender,
        epoch: be32(&frame[5..9]),
        peer_epoch: be32(&frame[9..13]),
        seq: u64::from_be_bytes(seq),
    };
    let keys = keyring
        .get(header.key_id)
        .ok_or(Error::UnknownKey(header.key_id))?;
    let body_end = frame.len() - TAG_LEN;
    let mut head = [0u8; HEADER_LEN];
    // body_end - COMPACT_HEADER_LEN < MAX_FRAME_LEN < u16::MAX
    header.write((body_end - COMPACT_HEADER_LEN) as u16, &mut head);
    let (front, tag) = frame.split_at_mut(body_end);
    verify_body(keys, &header, &head, &mut front[COMPACT_HEADER_LEN..], tag)?;
    Ok(Opened {
        header,
        body: &frame[COMPACT_HEADER_LEN..body_end],
    })
}

/// An authenticated frame: its header and its (decrypted) body.
#[derive(Debug)]
pub struct Opened<'a> {
    /// The verified header.
    pub header: Header,
    /// The body, in clear.
    pub body: &'a [u8],
}

impl Opened<'_> {
    /// Decodes the body as a message of type `T` (the channel's message set).
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, Error> {
        match postcard::take_from_bytes::<T>(self.body) {
            Ok((msg, [])) => Ok(msg),
            _ => Err(Error::Decode),
        }
    }

    /// Like [`Opened::decode`], into `out` (left as it was on an error). Not inlined: the
    /// decoder's temporaries stay in its own stack frame, and the caller holds only `out`
    /// (the firmware's stack budget, docs/firmware.md "Size").
    #[inline(never)]
    pub fn decode_into<T: DeserializeOwned>(&self, out: &mut Option<T>) -> Result<(), Error> {
        match postcard::take_from_bytes::<T>(self.body) {
            Ok((msg, [])) => {
                *out = Some(msg);
                Ok(())
            }
            _ => Err(Error::Decode),
        }
    }
}

/// The checks both forms share, in order: length bounds (a header of `header_len` and a
/// tag), `magic_ok`, then version, kind and flags, which follow each other from byte `at`.
/// Returns the channel and whether the body is encrypted.
fn check_fixed(
    frame: &[u8],
    header_len: usize,
    magic_ok: bool,
    at: usize,
) -> Result<(Channel, bool), Error> {
    if frame.len() > MAX_FRAME_LEN {
        return Err(Error::Oversize);
    }
    if frame.len() < header_len + TAG_LEN {
        return Err(Error::Truncated);
    }
    if !magic_ok {
        return Err(Error::BadMagic);
    }
    let (version, kind, flags) = (frame[at], frame[at + 1], frame[at + 2]);
    if version != PROTOCOL_VERSION {
        return Err(Error::UnknownVersion(version));
    }
    let channel = Channel::from_u8(kind).ok_or(Error::UnknownKind(kind))?;
    if flags & !FLAG_AEAD != 0 {
        return Err(Error::BadFlags(flags));
    }
    Ok((channel, flags & FLAG_AEAD != 0))
}

/// Parses the header fields without authenticating anything (for diagnostics and tools).
///
/// Checks length bounds, magic, version, kind, flags and body length.
pub fn peek_header(frame: &[u8]) -> Result<Header, Error> {
    let (channel, aead) = check_fixed(frame, HEADER_LEN, frame.get(..2) == Some(&MAGIC), 2)?;
    let body_len = u16::from_be_bytes([frame[6], frame[7]]) as usize;
    let want = HEADER_LEN + body_len + TAG_LEN;
    if frame.len() < want {
        return Err(Error::Truncated);
    }
    if frame.len() > want {
        return Err(Error::TrailingBytes);
    }
    let mut sender = [0u8; 16];
    sender.copy_from_slice(&frame[12..28]);
    Ok(Header {
        version: frame[2],
        channel,
        aead,
        key_id: frame[5],
        cluster_id: u32::from_be_bytes([frame[8], frame[9], frame[10], frame[11]]),
        sender: Serial(sender),
        epoch: u32::from_be_bytes([frame[28], frame[29], frame[30], frame[31]]),
        peer_epoch: u32::from_be_bytes([frame[32], frame[33], frame[34], frame[35]]),
        seq: u64::from_be_bytes([
            frame[36], frame[37], frame[38], frame[39], frame[40], frame[41], frame[42], frame[43],
        ]),
    })
}

/// Authenticates a frame of `cluster_id` with a key of `keyring`; decrypts an AEAD body in
/// place. The caller then checks replay ([`crate::replay::ReplayTable`]) and decodes the body.
pub fn open<'a>(
    keyring: &Keyring,
    cluster_id: u32,
    frame: &'a mut [u8],
) -> Result<Opened<'a>, Error> {
    let header = peek_header(frame)?;
    if header.cluster_id != cluster_id {
        return Err(Error::WrongCluster(header.cluster_id));
    }
    let keys = keyring
        .get(header.key_id)
        .ok_or(Error::UnknownKey(header.key_id))?;
    let body_end = frame.len() - TAG_LEN;
    let (front, tag) = frame.split_at_mut(body_end);
    let (head, body) = front.split_at_mut(HEADER_LEN);
    // `peek_header` checked the length: the split is a whole header.
    let head: &[u8; HEADER_LEN] = (&*head).try_into().map_err(|_| Error::Truncated)?;
    verify_body(keys, &header, head, body, tag)?;
    Ok(Opened {
        header,
        body: &frame[HEADER_LEN..body_end],
    })
}
