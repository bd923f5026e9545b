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

/// The receive buffer for encoded frames: any frame `ha_proto` can produce.
pub const SERIAL_RX_CAP: usize = MAX_ENCODED_LEN;

/// A byte stream (UART) carrying `ha_proto::uart` frames.
pub struct SerialFrameLink<S> {
    stream: S,
    decoder: Decoder<SERIAL_RX_CAP>,
    tx: [u8; MAX_ENCODED_LEN],
    rx: [u8; 64],
    rx_len: usize,
    rx_pos: usize,
}

impl<S> SerialFrameLink<S> {
    /// Frames the byte stream `stream`.
    pub fn new(stream: S) -> Self {
        Self {
            stream,
            decoder: Decoder::new(),
            tx: [0; MAX_ENCODED_LEN],
            rx: [0; 64],
            rx_len: 0,
            rx_pos: 0,
        }
    }
}

impl<S: Read + Write> FrameLink for SerialFrameLink<S> {
    type Error = SerialLinkError<S::Error>;

    async fn send(&mut self, frame: &[u8]) -> Result<(), Self::Error> {
        let n = uart::encode_frame(frame, &mut self.tx).map_err(|_| SerialLinkError::TooLong)?;
        self.stream
            .write_all(&self.tx[..n])
            .await
            .map_err(SerialLinkError::Io)
    }

    async fn recv(&mut self, buf: &mut [u8]) -> Result<usize, Self::Error> {
        loop {
            while self.rx_pos < self.rx_len {
                let byte = self.rx[self.rx_pos];
                self.rx_pos += 1;
                match self.decoder.push(byte) {
                    None => {}
                    Some(Err(e)) => return Err(SerialLinkError::Framing(e)),
                    Some(Ok(frame)) => {
                        let out = buf.get_mut(..frame.len()).ok_or(SerialLinkError::TooLong)?;
                        out.copy_from_slice(frame);
                        return Ok(frame.len());
                    }
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
}
