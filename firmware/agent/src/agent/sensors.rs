//! The sensor source (a board's sensor bridge): its readings, and its silence.
//!
//! A source that stops reporting must not leave the hardware part as it last was (100 if it
//! never reported): after `sensor_timeout_ms` without a report — counted from boot until the
//! first one — every component counts as failed (hardware part 0) and
//! [`EventKind::SensorsSilent`] is reported; the next report ends it
//! ([`EventKind::SensorsBack`]). A timeout of 0 means the member has no sensor source.

use ha_proto::sensor::SensorReading;

use crate::agent::outbox::Outbox;
use crate::agent::stamp::Stamp;
use crate::event::EventKind;
use crate::quality::{Hardware, QualityConfig};

/// The readings of the sensor source and whether it is silent.
#[derive(Clone)]
pub(crate) struct Sensors {
    hw: Hardware,
    /// Its last report (the boot time until the first one); none while it is silent.
    last_report: Stamp,
}

impl Sensors {
    /// No readings yet; the wait for the first report starts at `now`.
    pub(crate) fn new(now: u64) -> Self {
        Sensors {
            hw: Hardware::default(),
            last_report: Stamp::at(now),
        }
    }

    /// One report: every reading is recorded; a silent source is back.
    pub(crate) fn handle_report(&mut self, now: u64, readings: &[SensorReading], out: &mut Outbox) {
        for r in readings {
            self.hw.record(*r);
        }
        if self.last_report.is_none() {
            out.event(now, EventKind::SensorsBack);
        }
        self.last_report = Stamp::at(now);
    }

    /// Declares the source silent once `timeout_ms` (not 0) passed without a report. Returns
    /// true when the hardware part changes because of it.
    pub(crate) fn handle_timeout(&mut self, now: u64, timeout_ms: u32, out: &mut Outbox) -> bool {
        let Some(last_ms) = self.last_report.get() else {
            return false;
        };
        if timeout_ms == 0 || now < last_ms + timeout_ms as u64 {
            return false;
        }
        self.last_report = Stamp::NONE;
        out.event(now, EventKind::SensorsSilent { last_ms });
        true
    }

    /// A new timeout at `now` (a reload): 0 means no source is expected, so none is
    /// silent (the wait starts again should a timeout be set later).
    pub(crate) fn configure(&mut self, now: u64, timeout_ms: u32) {
        if timeout_ms == 0 && self.last_report.is_none() {
            self.last_report = Stamp::at(now);
        }
    }

    /// When the source becomes silent without a report (`u64::MAX`: never).
    pub(crate) fn poll_at(&self, timeout_ms: u32) -> u64 {
        match self.last_report.get() {
            Some(last) if timeout_ms != 0 => last + timeout_ms as u64,
            _ => u64::MAX,
        }
    }

    /// The last report (the boot time until the first one) while its silence is watched
    /// against `timeout_ms` (not 0); `None` otherwise or while silent
    /// ([`crate::Agent::private_timers`]).
    pub(crate) fn private_timer(&self, timeout_ms: u32) -> Option<u64> {
        self.last_report.get().filter(|_| timeout_ms != 0)
    }

    /// The hardware part: 0 while the source is silent.
    pub(crate) fn part(&self, cfg: &QualityConfig) -> u8 {
        if self.silent() {
            0
        } else {
            self.hw.part(cfg)
        }
    }

    /// True while the source is silent.
    pub(crate) fn silent(&self) -> bool {
        self.last_report.is_none()
    }
}
