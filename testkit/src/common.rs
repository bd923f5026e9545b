//! What every part of the harness shares: its error type, its bounds and timing constants,
//! and small helpers.

use std::collections::VecDeque;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
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

/// Decodes raw defmt frames with `defmt-print -e <elf>`.
pub fn decode_defmt(elf: &Path, raw: &[u8]) -> Result<String> {
    let mut child = Command::new("defmt-print")
        .arg("-e")
        .arg(elf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start defmt-print (run `cargo xtask setup`): {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(raw)
            .map_err(|e| format!("defmt-print: {e}"))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| format!("defmt-print: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}
