//! Board simulator: what a member's sensor MCU would report, served to its QEMU over the
//! sensor UART (UART3, the `sensors.sock` chardev of the QEMU member contract).
//!
//! The simulator connects to the member's socket (retrying while QEMU starts, reconnecting if
//! it goes away) and sends the whole batch of readings, a postcard
//! [`ha_hal::bridge::SensorReport`] in one `ha_proto::uart` frame (no sealing: a local wire),
//! every 500 ms and at once on every change ([`BoardSim::set`]).

#![warn(missing_docs)]

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use ha_hal::bridge::{SensorKind, SensorReading, SensorReport, MAX_READINGS, MAX_REPORT_LEN};
use ha_proto::uart;

/// Period of the full report (the sensor-bridge contract: every 500 ms and on change).
pub const REPORT_PERIOD: Duration = Duration::from_millis(ha_hal::bridge::REPORT_PERIOD_MS);
/// Pause between connection attempts while the member's QEMU is not listening.
const RETRY: Duration = Duration::from_millis(50);

/// The components of the simulated board: 2 disks in a RAID, a TPM, 2 PSUs, 2 fans and one
/// extension module, all working.
pub fn default_readings() -> Vec<SensorReading> {
    let r = |kind, index| SensorReading {
        kind,
        index,
        ok: true,
    };
    vec![
        r(SensorKind::Disk, 0),
        r(SensorKind::Disk, 1),
        r(SensorKind::Raid, 0),
        r(SensorKind::Tpm, 0),
        r(SensorKind::Psu, 0),
        r(SensorKind::Psu, 1),
        r(SensorKind::Fan, 0),
        r(SensorKind::Fan, 1),
        r(SensorKind::Module, 0),
    ]
}

/// Parses a component kind: `disk`, `raid`, `tpm`, `psu`, `fan` or `module`.
pub fn parse_kind(s: &str) -> Option<SensorKind> {
    Some(match s {
        "disk" => SensorKind::Disk,
        "raid" => SensorKind::Raid,
        "tpm" => SensorKind::Tpm,
        "psu" => SensorKind::Psu,
        "fan" => SensorKind::Fan,
        "module" => SensorKind::Module,
        _ => return None,
    })
}

/// Why a change was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SimError {
    /// The board has no such component.
    NoSuchComponent(SensorKind, u8),
    /// More readings than a report holds.
    TooManyReadings(usize),
}

impl std::fmt::Display for SimError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SimError::NoSuchComponent(k, i) => write!(f, "board has no {k:?} {i}"),
            SimError::TooManyReadings(n) => {
                write!(f, "{n} readings: a report holds at most {MAX_READINGS}")
            }
        }
    }
}

impl std::error::Error for SimError {}

/// Encodes `readings` as one sensor-bridge frame (COBS + CRC + delimiter).
pub fn encode_report(readings: &[SensorReading]) -> Result<Vec<u8>, SimError> {
    let mut report = SensorReport::default();
    for r in readings {
        report
            .readings
            .push(*r)
            .map_err(|_| SimError::TooManyReadings(readings.len()))?;
    }
    let mut body = [0u8; MAX_REPORT_LEN];
    let n = report
        .encode(&mut body)
        .map_err(|_| SimError::TooManyReadings(readings.len()))?;
    let mut out = vec![0u8; uart::encoded_len(n)];
    let len = uart::encode_frame(&body[..n], &mut out)
        .map_err(|_| SimError::TooManyReadings(readings.len()))?;
    out.truncate(len);
    Ok(out)
}

/// A running simulator for one member. Dropping it stops its thread.
pub struct BoardSim {
    readings: Arc<Mutex<Vec<SensorReading>>>,
    changed: Sender<()>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
    socket: PathBuf,
}

impl std::fmt::Debug for BoardSim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BoardSim")
            .field("socket", &self.socket)
            .field("reports_sent", &self.reports_sent())
            .finish()
    }
}

impl BoardSim {
    /// Starts serving `readings` to the chardev socket at `socket`.
    pub fn start(socket: &Path, readings: Vec<SensorReading>) -> Result<BoardSim, SimError> {
        if readings.len() > MAX_READINGS {
            return Err(SimError::TooManyReadings(readings.len()));
        }
        let readings = Arc::new(Mutex::new(readings));
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (tx, rx) = mpsc::channel::<()>();
        let (r, s, c, path) = (
            readings.clone(),
            stop.clone(),
            sent.clone(),
            socket.to_path_buf(),
        );
        let thread = std::thread::spawn(move || {
            let mut conn: Option<UnixStream> = None;
            while !s.load(Ordering::Relaxed) {
                if conn.is_none() {
                    conn = UnixStream::connect(&path).ok();
                    if conn.is_none() {
                        std::thread::sleep(RETRY);
                        continue;
                    }
                }
                let frame = {
                    let now = r.lock().unwrap_or_else(|p| p.into_inner());
                    encode_report(&now)
                };
                if let (Some(stream), Ok(frame)) = (conn.as_mut(), frame) {
                    if stream.write_all(&frame).is_err() {
                        // QEMU went away (killed or restarted): reconnect.
                        conn = None;
                        continue;
                    }
                    c.fetch_add(1, Ordering::Relaxed);
                }
                match rx.recv_timeout(REPORT_PERIOD) {
                    Ok(()) | Err(RecvTimeoutError::Timeout) => {}
                    Err(RecvTimeoutError::Disconnected) => return,
                }
            }
        });
        Ok(BoardSim {
            readings,
            changed: tx,
            stop,
            sent,
            thread: Some(thread),
            socket: socket.to_path_buf(),
        })
    }

    /// Sets component `kind` number `index` working (`ok`) or failed; the new batch is sent
    /// at once.
    pub fn set(&self, kind: SensorKind, index: u8, ok: bool) -> Result<(), SimError> {
        {
            let mut now = self.readings.lock().unwrap_or_else(|p| p.into_inner());
            let r = now
                .iter_mut()
                .find(|r| r.kind == kind && r.index == index)
                .ok_or(SimError::NoSuchComponent(kind, index))?;
            r.ok = ok;
        }
        let _ = self.changed.send(());
        Ok(())
    }

    /// The current readings.
    pub fn readings(&self) -> Vec<SensorReading> {
        self.readings
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Reports written to the member so far.
    pub fn reports_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }
}

impl Drop for BoardSim {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.changed.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
