//! Byte-stream framing for UART links (backup HA link, host link): each frame is sent as
//! `0x00 || COBS(frame || CRC-32(frame)) || 0x00`.
//!
//! COBS removes every zero byte from the payload, so the zero delimiter resynchronizes a
//! receiver after noise or a partial frame; CRC-32 (ISO-HDLC, big endian on the wire) catches
//! line errors before the frame's cryptographic tag is even computed. The leading delimiter
//! ends whatever a sender cut off before (a frame abandoned halfway by a send timeout), so
//! the next frame is never merged into a cut one and lost with it; receivers skip the empty
//! frame two delimiters in a row make.

use crc::{Crc, CRC_32_ISO_HDLC};

use crate::frame::MAX_FRAME_LEN;

/// The CRC used on UART frames.
pub const CRC32: Crc<u32> = Crc::<u32>::new(&CRC_32_ISO_HDLC);
/// CRC length, bytes.
pub const CRC_LEN: usize = 4;
/// Frame delimiter.
pub const DELIMITER: u8 = 0x00;
/// Largest encoded size of a [`MAX_FRAME_LEN`] frame: COBS adds one byte per 254, plus the
/// CRC and the two delimiters.
pub const MAX_ENCODED_LEN: usize = encoded_len(MAX_FRAME_LEN);

/// Worst-case encoded length of a frame of `frame_len` bytes, delimiters included.
pub const fn encoded_len(frame_len: usize) -> usize {
    let n = frame_len + CRC_LEN;
    n + n / 254 + 1 + 2
}

/// Why a UART frame was not produced or not accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UartError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// A frame longer than the decoder's buffer arrived; it was dropped up to the next delimiter.
    Overflow,
    /// The bytes between two delimiters are not valid COBS.
    BadCobs,
    /// Too short to hold a CRC.
    Truncated,
    /// The CRC does not match: a line error.
    BadCrc,
}

impl core::fmt::Display for UartError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            UartError::BufferTooSmall => "output buffer too small",
            UartError::Overflow => "frame longer than the receive buffer",
            UartError::BadCobs => "invalid COBS encoding",
            UartError::Truncated => "frame too short for its CRC",
            UartError::BadCrc => "CRC mismatch",
        })
    }
}

/// Encodes `frame` for a UART into `out`; returns the number of bytes to send.
pub fn encode_frame(frame: &[u8], out: &mut [u8]) -> Result<usize, UartError> {
    if out.len() < encoded_len(frame.len()) {
        return Err(UartError::BufferTooSmall);
    }
    let crc = CRC32.checksum(frame).to_be_bytes();
    out[0] = DELIMITER;
    let mut enc = cobs::CobsEncoder::new(&mut out[1..]);
    enc.push(frame).map_err(|_| UartError::BufferTooSmall)?;
    enc.push(&crc).map_err(|_| UartError::BufferTooSmall)?;
    let n = enc.finalize() + 1;
    *out.get_mut(n).ok_or(UartError::BufferTooSmall)? = DELIMITER;
    Ok(n + 1)
}

/// Decodes one encoded frame (without its delimiter) in place; returns the frame's length.
pub fn decode_in_place(buf: &mut [u8]) -> Result<usize, UartError> {
    let n = cobs::decode_in_place(buf).map_err(|_| UartError::BadCobs)?;
    if n < CRC_LEN {
        return Err(UartError::Truncated);
    }
    let body = n - CRC_LEN;
    let want = u32::from_be_bytes([buf[body], buf[body + 1], buf[body + 2], buf[body + 3]]);
    if CRC32.checksum(&buf[..body]) != want {
        return Err(UartError::BadCrc);
    }
    Ok(body)
}

/// Streaming receiver: feed it bytes as they arrive, it returns each complete frame.
///
/// `N` is the receive buffer; [`MAX_ENCODED_LEN`] holds any frame.
#[derive(Clone, Debug)]
pub struct Decoder<const N: usize> {
    buf: [u8; N],
    len: usize,
    overflowed: bool,
    frame_len: usize,
}

impl<const N: usize> Default for Decoder<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> Decoder<N> {
    /// An empty decoder.
    pub const fn new() -> Self {
        Self {
            buf: [0; N],
            len: 0,
            overflowed: false,
            frame_len: 0,
        }
    }

    /// Feeds one byte. Returns `Some(Ok(frame))` when a delimiter completes a valid frame,
    /// `Some(Err(_))` when it completes a bad one, `None` otherwise. Empty frames (two
    /// delimiters in a row, used to flush a line) are skipped silently.
    pub fn push(&mut self, byte: u8) -> Option<Result<&[u8], UartError>> {
        if byte != DELIMITER {
            if self.len < N {
                self.buf[self.len] = byte;
                self.len += 1;
            } else {
                self.overflowed = true;
            }
            return None;
        }
        let len = core::mem::take(&mut self.len);
        if core::mem::take(&mut self.overflowed) {
            return Some(Err(UartError::Overflow));
        }
        if len == 0 {
            return None;
        }
        match decode_in_place(&mut self.buf[..len]) {
            Ok(n) => {
                self.frame_len = n;
                Some(Ok(&self.buf[..n]))
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// The last frame returned by [`push`](Decoder::push), for callers that need it after the
    /// borrow ended.
    pub fn last_frame(&self) -> &[u8] {
        &self.buf[..self.frame_len]
    }

    /// The last complete frame, writable: a receiver opens (decrypts) it in place instead
    /// of copying it out first (a frame-sized buffer less per serial link in firmware).
    pub fn last_frame_mut(&mut self) -> &mut [u8] {
        &mut self.buf[..self.frame_len]
    }
}
