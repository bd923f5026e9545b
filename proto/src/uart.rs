//! Byte-stream framing for UART links (backup HA link, host link): each frame is sent as
//! `0x00 || COBS(frame || CRC-32(frame)) || 0x00`.
//!
//! COBS removes every zero byte from the payload, so the zero delimiter resynchronizes a
//! receiver after noise or a partial frame; CRC-32 (ISO-HDLC, big endian on the wire) catches
//! line errors before the frame's cryptographic tag is even computed. The leading delimiter
//! ends whatever a sender cut off before (a frame abandoned halfway by a send timeout), so
//! the next frame is never merged into a cut one and lost with it; receivers skip the empty
//! frame two delimiters in a row make.

use crc::{Crc, NoTable, CRC_32_ISO_HDLC};

use crate::frame::MAX_FRAME_LEN;

/// The CRC used on UART frames. Bit by bit, without the crate's default 1 KiB table: the
/// controller's flash is counted in bytes (the table was a percent of it), and a UART frame
/// of a hundred bytes takes a few microseconds this way, against milliseconds on the line.
pub const CRC32: Crc<u32, NoTable> = Crc::<u32, NoTable>::new(&CRC_32_ISO_HDLC);
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

/// The CRC of `frame` as it follows the frame on the wire (big endian).
pub fn crc_bytes(frame: &[u8]) -> [u8; CRC_LEN] {
    CRC32.checksum(frame).to_be_bytes()
}

/// Every byte value, so that a code byte can be handed out as a slice.
static BYTES: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as u8;
        i += 1;
    }
    t
};

/// The bytes [`encode_frame`] writes for `frame`, piece by piece (delimiters, COBS code
/// bytes, and runs of the frame and of its CRC `crc`, from [`crc_bytes`]), for a sender that
/// has no room for the whole encoding: the concatenated pieces are exactly
/// [`encode_frame`]'s output.
pub fn encoded_pieces<'a>(frame: &'a [u8], crc: &'a [u8; CRC_LEN]) -> EncodedPieces<'a> {
    EncodedPieces {
        frame,
        crc,
        pos: 0,
        state: PieceState::Start,
        queued: [None, None],
    }
}

/// Iterator of [`encoded_pieces`].
#[derive(Clone, Debug)]
pub struct EncodedPieces<'a> {
    frame: &'a [u8],
    crc: &'a [u8; CRC_LEN],
    /// Next byte of `frame || crc` to encode.
    pos: usize,
    state: PieceState,
    /// Parts of the current run still to hand out (a run may span the frame and the CRC).
    queued: [Option<&'a [u8]>; 2],
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PieceState {
    /// The leading delimiter is next.
    Start,
    /// A block (code byte and run) starts at `pos`.
    Block,
    /// The data ended with a zero: one empty block is left.
    EmptyLast,
    /// The closing delimiter is next.
    End,
    Done,
}

impl<'a> EncodedPieces<'a> {
    fn len(&self) -> usize {
        self.frame.len() + CRC_LEN
    }

    fn byte(&self, i: usize) -> u8 {
        match self.frame.get(i) {
            Some(&b) => b,
            None => self.crc[i - self.frame.len()],
        }
    }

    /// `frame || crc` from `a` to `b`, as at most two slices.
    fn span(&self, a: usize, b: usize) -> [Option<&'a [u8]>; 2] {
        let f = self.frame.len();
        let frame: &'a [u8] = self.frame;
        let crc: &'a [u8] = self.crc;
        let first = (a < f).then(|| &frame[a..b.min(f)]);
        let second = (b > f).then(|| &crc[a.max(f) - f..b - f]);
        [first, second]
    }
}

impl<'a> Iterator for EncodedPieces<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        for q in &mut self.queued {
            if let Some(p) = q.take().filter(|p| !p.is_empty()) {
                return Some(p);
            }
        }
        let delimiter = &BYTES[usize::from(DELIMITER)..usize::from(DELIMITER) + 1];
        match self.state {
            PieceState::Start => {
                self.state = PieceState::Block;
                Some(delimiter)
            }
            PieceState::Block => {
                // A run of at most 254 non-zero bytes, ended by a zero, the data's end or
                // its length (code 0xFF, no zero implied), as `cobs::CobsEncoder` writes it.
                let (len, a) = (self.len(), self.pos);
                let mut b = a;
                while b < len && self.byte(b) != 0 && b - a < 254 {
                    b += 1;
                }
                let run = b - a;
                self.queued = self.span(a, b);
                if run == 254 {
                    self.pos = b;
                    if b == len {
                        self.state = PieceState::End;
                    }
                } else if b == len {
                    self.state = PieceState::End;
                } else {
                    // Skip the zero the code byte stands for.
                    self.pos = b + 1;
                    if self.pos == len {
                        self.state = PieceState::EmptyLast;
                    }
                }
                Some(&BYTES[run + 1..run + 2])
            }
            PieceState::EmptyLast => {
                self.state = PieceState::End;
                Some(&BYTES[1..2])
            }
            PieceState::End => {
                self.state = PieceState::Done;
                Some(delimiter)
            }
            PieceState::Done => None,
        }
    }
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
