//! Links that carry whole frames: the HA links (member frames) and the host link (host frames).
//!
//! A [`FrameLink`] sends and receives whole frames. A UDP socket is one directly; a serial
//! line becomes one through [`SerialFrameLink`], which frames a byte stream with
//! `ha_proto::uart` (COBS(frame || CRC-32) + 0x00).

use embedded_io_async::{Read, Write};
use ha_proto::uart::{self, Decoder, UartError, MAX_ENCODED_LEN};

/// A link that carries whole frames.
#[allow(async_fn_in_trait)] // used with concrete types in one executor; no Send bound needed
pub trait FrameLink {
    /// Error of the underlying transport or framing.
    type Error: core::fmt::Debug;

    /// Sends one frame.
    async fn send(&mut self, frame: &[u8]) -> Result<(), Self::Error>;

    /// Waits for the next frame, copies it into `buf` and returns its length.
    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error>;
}

/// Why a serial frame link failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SerialLinkError<E> {
    /// The byte stream failed.
    Io(E),
    /// A received frame was damaged (bad COBS, CRC, or too long); the next one may be fine.
    Framing(UartError),
    /// The frame to send, or the one received, does not fit the buffer.
    TooLong,
}

/// A receive buffer that holds any encoded frame `ha_proto` can produce.
pub const SERIAL_RX_CAP: usize = MAX_ENCODED_LEN;

/// Bytes read from the stream at a time.
const READ_CHUNK: usize = 64;

/// The receiving half of a serial frame link: a byte stream in, whole frames out.
///
/// `N` is the decoder's buffer for one encoded frame ([`SERIAL_RX_CAP`] holds any).
pub struct SerialFrameRx<R, const N: usize = SERIAL_RX_CAP> {
    stream: R,
    decoder: Decoder<N>,
    rx: [u8; READ_CHUNK],
    rx_len: usize,
    rx_pos: usize,
}

impl<R: Read, const N: usize> SerialFrameRx<R, N> {
    /// Frames the byte stream `stream`.
    pub fn new(stream: R) -> Self {
        Self {
            stream,
            decoder: Decoder::new(),
            rx: [0; READ_CHUNK],
            rx_len: 0,
            rx_pos: 0,
        }
    }

    /// Waits for the next frame and returns it (valid until the next call; writable, so
    /// that the receiver can open it in place). A damaged frame is returned as
    /// [`SerialLinkError::Framing`]; the next call continues with the next one.
    pub async fn recv(&mut self) -> Result<&mut [u8], SerialLinkError<R::Error>> {
        loop {
            while self.rx_pos < self.rx_len {
                let byte = self.rx[self.rx_pos];
                self.rx_pos += 1;
                match self.decoder.push(byte) {
                    None => {}
                    Some(Err(e)) => return Err(SerialLinkError::Framing(e)),
                    Some(Ok(_)) => return Ok(self.decoder.last_frame_mut()),
                }
            }
            self.rx_len = self
                .stream
                .read(&mut self.rx)
                .await
                .map_err(SerialLinkError::Io)?;
            self.rx_pos = 0;
        }
    }

    /// The frame the last successful [`SerialFrameRx::recv`] returned (empty before the
    /// first). For a caller that checks the frame first and keeps it after: a borrow
    /// returned from one arm of a loop cannot be kept by today's borrow checker.
    pub fn last_frame_mut(&mut self) -> &mut [u8] {
        self.decoder.last_frame_mut()
    }
}

/// The sending half of a serial frame link: whole frames in, a byte stream out.
pub struct SerialFrameTx<W> {
    stream: W,
    tx: [u8; MAX_ENCODED_LEN],
}

impl<W: Write> SerialFrameTx<W> {
    /// Frames the byte stream `stream`.
    pub fn new(stream: W) -> Self {
        Self {
            stream,
            tx: [0; MAX_ENCODED_LEN],
        }
    }

    /// Encodes and writes one frame.
    pub async fn send(&mut self, frame: &[u8]) -> Result<(), SerialLinkError<W::Error>> {
        send_frame(&mut self.stream, frame, &mut self.tx).await
    }
}

/// Encodes `frame` into `scratch` and writes it to `stream`: for callers that share one
/// encoding buffer between several serial lines. `scratch` needs
/// `ha_proto::uart::encoded_len(frame.len())` bytes (`MAX_ENCODED_LEN` fits any frame).
pub async fn send_frame<W: Write>(
    stream: &mut W,
    frame: &[u8],
    scratch: &mut [u8],
) -> Result<(), SerialLinkError<W::Error>> {
    let n = uart::encode_frame(frame, scratch).map_err(|_| SerialLinkError::TooLong)?;
    stream
        .write_all(&scratch[..n])
        .await
        .map_err(SerialLinkError::Io)
}

/// Both halves over one stream (or two), as a [`FrameLink`].
pub struct SerialFrameLink<R, W, const N: usize = SERIAL_RX_CAP> {
    /// The receiving half.
    pub rx: SerialFrameRx<R, N>,
    /// The sending half.
    pub tx: SerialFrameTx<W>,
}

impl<R: Read, W: Write, const N: usize> SerialFrameLink<R, W, N> {
    /// Frames the receive stream `rx` and the send stream `tx`.
    pub fn new(rx: R, tx: W) -> Self {
        Self {
            rx: SerialFrameRx::new(rx),
            tx: SerialFrameTx::new(tx),
        }
    }
}

impl<R, W, const N: usize> FrameLink for SerialFrameLink<R, W, N>
where
    R: Read,
    W: Write<Error = R::Error>,
{
    type Error = SerialLinkError<R::Error>;

    async fn send(&mut self, frame: &[u8]) -> Result<(), Self::Error> {
        self.tx.send(frame).await
    }

    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        let frame = self.rx.recv().await?;
        let out = buf.get_mut(..frame.len()).ok_or(SerialLinkError::TooLong)?;
        out.copy_from_slice(frame);
        Ok(frame.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embassy_futures::block_on;

    #[test]
    fn frames_cross_a_byte_stream_and_damage_is_reported() {
        let mut wire = [0u8; 256];
        let len = {
            let mut out: &mut [u8] = &mut wire;
            let mut tx = SerialFrameTx::new(&mut out);
            block_on(tx.send(b"first frame")).expect("fits");
            block_on(tx.send(b"second")).expect("fits");
            256 - out.len()
        };
        // Corrupt one byte of the first frame: its CRC fails, the second still arrives.
        wire[3] ^= 0x40;
        let mut rx: SerialFrameRx<&[u8], 64> = SerialFrameRx::new(&wire[..len]);
        assert!(matches!(
            block_on(rx.recv()),
            Err(SerialLinkError::Framing(_))
        ));
        assert_eq!(block_on(rx.recv()).expect("second frame"), b"second");
        // End of stream: the reader reports 0 bytes forever; embedded-io's &[u8] never errors,
        // so stop here rather than wait.
    }

    #[test]
    fn oversize_frame_is_refused_on_send() {
        let mut wire = [0u8; 8];
        let mut out: &mut [u8] = &mut wire;
        let mut tx = SerialFrameTx::new(&mut out);
        let big = [1u8; ha_proto::frame::MAX_FRAME_LEN + 1];
        assert_eq!(block_on(tx.send(&big)), Err(SerialLinkError::TooLong));
    }
}
