//! Sending on the serial lines (backup link, host link) without ever stalling the agent.

use defmt::{info, warn};
use embassy_time::{with_timeout, Duration, Instant};
use embedded_io_async::Write;
use ha_board::uart::UartTx;
use ha_proto::frame::MAX_FRAME_LEN;
use ha_proto::uart;

/// Longest wait for a serial line to take one frame (a frame is about 1.5 KiB at most; QEMU
/// moves it in well under a millisecond unless the other end stopped reading). Short, so a
/// stalled line never delays the heartbeats of the fast profile (10 ms).
const SERIAL_SEND_TIMEOUT: Duration = Duration::from_millis(5);
/// After a timeout, frames for that line are dropped without waiting for this long.
const SERIAL_STALL_BACKOFF: Duration = Duration::from_millis(100);

/// The sending side of a serial link that gives up instead of stalling the agent.
pub struct SerialOut {
    tx: UartTx,
    name: &'static str,
    /// Set while the line is stalled: until when frames are dropped without trying.
    stalled_until: Option<Instant>,
}

impl SerialOut {
    pub fn new(tx: UartTx, name: &'static str) -> Self {
        Self {
            tx,
            name,
            stalled_until: None,
        }
    }

    /// Sends one frame (COBS-encoded as it goes, `ha_proto::uart::encoded_pieces`: no
    /// buffer for the encoding), or drops it when the line does not take it within
    /// [`SERIAL_SEND_TIMEOUT`] (the peer's decoder drops the partial frame at the next
    /// delimiter) or is in its stall back-off.
    pub async fn send(&mut self, frame: &[u8]) {
        if self.stalled_until.is_some_and(|t| Instant::now() < t) {
            return;
        }
        if frame.len() > MAX_FRAME_LEN {
            warn!(
                "{=str} link: frame too long ({=usize} bytes)",
                self.name,
                frame.len()
            );
            return;
        }
        match with_timeout(SERIAL_SEND_TIMEOUT, write_encoded(&mut self.tx, frame)).await {
            Ok(Ok(())) => {
                if self.stalled_until.take().is_some() {
                    info!("{=str} link: sending again", self.name);
                }
            }
            Ok(Err(_)) => warn!("{=str} link: write error", self.name),
            Err(_) => {
                if self.stalled_until.is_none() {
                    warn!(
                        "{=str} link: stalled (the other end does not read), dropping frames",
                        self.name
                    );
                }
                self.stalled_until = Some(Instant::now() + SERIAL_STALL_BACKOFF);
            }
        }
    }
}

/// Writes `frame` UART-framed (`0x00 || COBS(frame || CRC) || 0x00`, the bytes of
/// `ha_proto::uart::encode_frame`), piece by piece.
async fn write_encoded<W: Write>(tx: &mut W, frame: &[u8]) -> Result<(), W::Error> {
    let crc = uart::crc_bytes(frame);
    for piece in uart::encoded_pieces(frame, &crc) {
        tx.write_all(piece).await?;
    }
    Ok(())
}
