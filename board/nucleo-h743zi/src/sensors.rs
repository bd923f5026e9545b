//! The sensor bridge: the appliance's fan, PSU, disk, TPM and module states arrive from its
//! sensor controller (on a bench: `boardsim` on a USB serial adapter) over USART6, one
//! `ha_proto::uart` frame per [`SensorReport`] (postcard body, no sealing: the wire stays on
//! the board), exactly as on board/mps2-an385's UART3.

use embassy_stm32::usart::{BufferedUart, BufferedUartTx};
use ha_hal::bridge::{SensorReport, MAX_REPORT_LEN};
use ha_hal::link::SerialFrameRx;
use ha_hal::sensors::SensorSource;
use ha_proto::uart::encoded_len;

use crate::uart::{Uart, UartRx};

/// Baud rate of the sensor bridge (reports are a few dozen bytes every 500 ms).
pub const BAUD: u32 = 115_200;
/// Receive ring: two encoded reports.
pub const RX_BUF: usize = 2 * encoded_len(MAX_REPORT_LEN);
/// Transmit ring: unused (nothing is sent to the sensor controller), smallest useful.
pub const TX_BUF: usize = 8;

/// Frame buffer: one encoded report.
const RX_CAP: usize = encoded_len(MAX_REPORT_LEN);

/// Why a report was dropped (the next one may be fine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum SensorBridgeError {
    /// Damaged frame (COBS, CRC or length) or a line error.
    Framing,
    /// The frame is intact but its body is not a report.
    Malformed,
}

/// Sensor readings from the sensor controller on USART6.
pub struct SensorBridge {
    rx: SerialFrameRx<UartRx, RX_CAP>,
    /// Kept so that the USART stays configured (embassy-stm32 turns it off when both halves
    /// are dropped); nothing is sent.
    _tx: BufferedUartTx<'static>,
}

impl SensorBridge {
    /// Reads reports from `uart`.
    pub fn new(uart: BufferedUart<'static>) -> Self {
        let (rx, tx) = Uart::new(uart).split();
        Self {
            rx: SerialFrameRx::new(rx),
            _tx: tx.into_inner(),
        }
    }
}

impl SensorSource for SensorBridge {
    type Error = SensorBridgeError;

    async fn next_report(&mut self) -> Result<SensorReport, SensorBridgeError> {
        let frame = self
            .rx
            .recv()
            .await
            .map_err(|_| SensorBridgeError::Framing)?;
        SensorReport::decode(frame).map_err(|_| SensorBridgeError::Malformed)
    }
}
