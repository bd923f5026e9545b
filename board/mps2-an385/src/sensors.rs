//! The sensor bridge: QEMU has no fan, PSU, disk, TPM or module sensors, so a host-side board
//! simulator sends their states over UART3, one `ha_proto::uart` frame per
//! [`SensorReport`] (postcard body, no sealing: the wire stays on the board). A real board
//! implements the same [`SensorSource`] trait with its own sensors.

use ha_hal::bridge::{SensorReport, MAX_REPORT_LEN};
use ha_hal::link::SerialFrameRx;
use ha_hal::sensors::SensorSource;
use ha_proto::uart::encoded_len;

use crate::uart::UartRx;

/// Receive buffer: one encoded report.
const RX_CAP: usize = encoded_len(MAX_REPORT_LEN);

/// Why a report was dropped (the next one may be fine).
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum SensorBridgeError {
    /// Damaged frame (COBS, CRC or length).
    Framing,
    /// The frame is intact but its body is not a report.
    Malformed,
}

/// Sensor readings from the board simulator on a UART.
pub struct SensorBridge {
    rx: SerialFrameRx<UartRx, RX_CAP>,
}

impl SensorBridge {
    /// Reads reports from `uart`.
    pub fn new(uart: UartRx) -> Self {
        Self {
            rx: SerialFrameRx::new(uart),
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
