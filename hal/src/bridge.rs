//! The sensor bridge: what a board simulator (or a real board's sensor MCU) sends the
//! controller over a local serial line.
//!
//! Each message is one `ha_proto::uart` frame (COBS(body || CRC-32) + 0x00, no sealing: the
//! wire never leaves the board) whose body is a postcard-encoded [`SensorReport`]. The sender
//! sends the whole batch every [`REPORT_PERIOD_MS`] and on every change. The reading types
//! are the protocol's ([`ha_proto::sensor`]): the agent takes a report's readings as they are.

use heapless::Vec;
use serde::{Deserialize, Serialize};

pub use ha_proto::sensor::{SensorKind, SensorReading, MAX_READINGS};

/// Period of the full report, ms: the sender sends every reading this often and at once on
/// a change, so a controller that hears nothing for several periods knows the source is
/// silent (the agent's `sensor_timeout_ms` defaults to ten periods).
pub const REPORT_PERIOD_MS: u64 = 500;

/// Largest postcard encoding of a [`SensorReport`]: one length byte plus three bytes per
/// reading (kind tag, index, ok).
pub const MAX_REPORT_LEN: usize = 1 + 3 * MAX_READINGS;

/// A batch of readings, the body of one sensor-bridge frame.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SensorReport {
    /// The readings, at most [`MAX_READINGS`].
    pub readings: Vec<SensorReading, MAX_READINGS>,
}

/// Why a report could not be encoded or decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BridgeError {
    /// The output buffer is too small.
    BufferTooSmall,
    /// The bytes are not a valid report (bad tag, too many readings, truncated).
    Malformed,
}

impl core::fmt::Display for BridgeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BridgeError::BufferTooSmall => f.write_str("output buffer too small"),
            BridgeError::Malformed => f.write_str("malformed sensor report"),
        }
    }
}

impl SensorReport {
    /// Encodes the report with postcard into `out`, returning the bytes written.
    pub fn encode(&self, out: &mut [u8]) -> Result<usize, BridgeError> {
        postcard::to_slice(self, out)
            .map(|used| used.len())
            .map_err(|_| BridgeError::BufferTooSmall)
    }

    /// Decodes a report; trailing bytes are refused.
    pub fn decode(bytes: &[u8]) -> Result<SensorReport, BridgeError> {
        match postcard::take_from_bytes::<SensorReport>(bytes) {
            Ok((report, [])) => Ok(report),
            _ => Err(BridgeError::Malformed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full() -> SensorReport {
        let kinds = SensorKind::ALL;
        let mut r = SensorReport::default();
        for i in 0..MAX_READINGS {
            let reading = SensorReading {
                kind: kinds[i % kinds.len()],
                index: i as u8,
                ok: i % 3 != 0,
            };
            r.readings.push(reading).expect("capacity is MAX_READINGS");
        }
        r
    }

    #[test]
    fn round_trip_full_report_fits_max_len() {
        let r = full();
        let mut buf = [0u8; MAX_REPORT_LEN];
        let n = r.encode(&mut buf).expect("fits");
        assert!(n <= MAX_REPORT_LEN);
        assert_eq!(SensorReport::decode(&buf[..n]), Ok(r));
    }

    #[test]
    fn small_buffer_is_an_error() {
        let mut buf = [0u8; 4];
        assert_eq!(full().encode(&mut buf), Err(BridgeError::BufferTooSmall));
    }

    #[test]
    fn garbage_trailing_and_overlong_are_refused() {
        assert_eq!(
            SensorReport::decode(&[1, 9, 0, 1]),
            Err(BridgeError::Malformed)
        );
        let mut buf = [0u8; MAX_REPORT_LEN];
        let n = full().encode(&mut buf).expect("fits");
        let mut longer = [0u8; MAX_REPORT_LEN + 1];
        longer[..n].copy_from_slice(&buf[..n]);
        assert_eq!(
            SensorReport::decode(&longer[..n + 1]),
            Err(BridgeError::Malformed)
        );
        // A count above MAX_READINGS.
        assert_eq!(SensorReport::decode(&[25]), Err(BridgeError::Malformed));
        assert_eq!(SensorReport::decode(&[]), Err(BridgeError::Malformed));
    }
}
