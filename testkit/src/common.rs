//! What every part of the harness shares: its error type, its bounds and timing constants,
//! and small helpers.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

/// Period of the LED register reads over QMP.
pub const LED_POLL: Duration = Duration::from_millis(50);

/// Period of the harness's `StatusRequest`s.
pub const STATUS_PERIOD: Duration = Duration::from_millis(500);

/// How long QEMU may take to create its sockets.
pub(crate) const SOCKET_TIMEOUT: Duration = Duration::from_secs(10);

/// Largest UART0 log kept per member, bytes (defmt frames are a few bytes each; a 5-minute
/// soak logs well under this).
pub(crate) const MAX_LOG: usize = 8 << 20;

/// LED transitions kept per member (a blinking LED makes two per 3 s).
pub(crate) const MAX_LED_CHANGES: usize = 1024;

/// Events and decisions kept per member.
pub(crate) const MAX_RECORDS: usize = 4096;

/// Errors of the harness.
pub type Error = String;

/// Result of the harness.
pub type Result<T = ()> = std::result::Result<T, Error>;

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) fn push_bounded<T>(q: &mut VecDeque<T>, v: T, max: usize) {
    if q.len() == max {
        q.pop_front();
    }
    q.push_back(v);
}

pub use ha_qemu::decode_defmt;
