//! The status LED as the harness sees it: the FPGA LED register read over QMP every
//! [`crate::cluster::LED_POLL`], and the pattern those reads show.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::common::{lock, push_bounded, Result, LED_POLL, MAX_LED_CHANGES, SOCKET_TIMEOUT};

/// The LED as observed over a window.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedObserved {
    /// No reading yet.
    Unknown,
    /// Off for the whole window.
    Off,
    /// On for the whole window.
    Steady,
    /// Blinking: the last complete on and off phases, milliseconds.
    Blink {
        /// Last complete on phase.
        on_ms: u64,
        /// Last complete off phase.
        off_ms: u64,
    },
    /// Changed, but not yet a full on and off phase in the window.
    Changing,
}

impl LedObserved {
    pub(crate) fn from_changes(
        changes: &VecDeque<(Instant, bool)>,
        window: Duration,
        now: Instant,
    ) -> Self {
        let Some(&(_, last)) = changes.back() else {
            return LedObserved::Unknown;
        };
        let start = now.checked_sub(window).unwrap_or(now);
        let inside: Vec<&(Instant, bool)> = changes.iter().filter(|c| c.0 >= start).collect();
        if inside.is_empty() {
            return if last {
                LedObserved::Steady
            } else {
                LedObserved::Off
            };
        }
        // Complete phases: between consecutive changes inside the window.
        let (mut on_ms, mut off_ms) = (None, None);
        for w in inside.windows(2) {
            let ms = w[1].0.duration_since(w[0].0).as_millis() as u64;
            if w[0].1 {
                on_ms = Some(ms);
            } else {
                off_ms = Some(ms);
            }
        }
        match (on_ms, off_ms) {
            (Some(on_ms), Some(off_ms)) => LedObserved::Blink { on_ms, off_ms },
            _ => LedObserved::Changing,
        }
    }
}

impl std::fmt::Display for LedObserved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LedObserved::Unknown => f.write_str("?"),
            LedObserved::Off => f.write_str("off"),
            LedObserved::Steady => f.write_str("steady"),
            LedObserved::Blink { on_ms, off_ms } => write!(f, "blink {on_ms}/{off_ms} ms"),
            LedObserved::Changing => f.write_str("changing"),
        }
    }
}

/// A QMP session in command mode.
pub(crate) struct Qmp {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
}

/// Connects to QEMU's QMP socket. The socket file appears at `bind`, a moment before QEMU
/// listens on it, so a refused connection is retried (every 20 ms, up to [`SOCKET_TIMEOUT`]).
pub(crate) fn connect_qmp(path: &Path) -> Result<Qmp> {
    let end = Instant::now() + SOCKET_TIMEOUT;
    let s = loop {
        match UnixStream::connect(path) {
            Ok(s) => break s,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ) && Instant::now() < end =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => return Err(format!("{}: {e}", path.display())),
        }
    };
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let writer = s.try_clone().map_err(|e| e.to_string())?;
    let mut q = Qmp {
        reader: BufReader::new(s),
        writer,
    };
    let mut greeting = String::new();
    q.reader
        .read_line(&mut greeting)
        .map_err(|e| format!("QMP greeting: {e}"))?;
    q.execute(r#"{"execute":"qmp_capabilities"}"#)?;
    Ok(q)
}

impl Qmp {
    /// Sends one command and returns its `return` value (events in between are skipped).
    pub(crate) fn execute(&mut self, cmd: &str) -> Result<serde_json::Value> {
        self.writer
            .write_all(cmd.as_bytes())
            .and_then(|()| self.writer.write_all(b"\n"))
            .map_err(|e| format!("QMP: {e}"))?;
        // At most a few asynchronous events precede the answer.
        for _ in 0..16 {
            let mut line = String::new();
            match self.reader.read_line(&mut line) {
                Ok(0) => return Err("QMP: closed".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("QMP: {e}")),
            }
            let v: serde_json::Value =
                serde_json::from_str(&line).map_err(|e| format!("QMP: {e}"))?;
            if let Some(r) = v.get("return") {
                return Ok(r.clone());
            }
            if let Some(e) = v.get("error") {
                return Err(format!("QMP error: {e}"));
            }
        }
        Err("QMP: no answer".into())
    }

    /// Reads the FPGAIO LED register (bit 0 = status LED).
    pub(crate) fn led_register(&mut self) -> Result<u32> {
        let r = self.execute(
            r#"{"execute":"human-monitor-command","arguments":{"command-line":"xp /1wx 0x40028000"}}"#,
        )?;
        parse_xp(r.as_str().unwrap_or_default())
    }
}

/// Parses the monitor's `xp /1wx` answer, e.g. `0000000040028000: 0x00000001`.
pub fn parse_xp(text: &str) -> Result<u32> {
    let word = text
        .split_once(':')
        .map(|(_, v)| v.trim())
        .and_then(|v| v.strip_prefix("0x"))
        .ok_or_else(|| format!("unexpected xp answer {text:?}"))?;
    u32::from_str_radix(word, 16).map_err(|e| format!("unexpected xp answer {text:?}: {e}"))
}

pub(crate) fn led_loop(mut qmp: Qmp, leds: &Mutex<VecDeque<(Instant, bool)>>, stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        let Ok(v) = qmp.led_register() else {
            return; // QEMU gone.
        };
        let on = v & 1 == 1;
        let now = Instant::now();
        let mut l = lock(leds);
        if l.back().map(|x| x.1) != Some(on) {
            push_bounded(&mut l, (now, on), MAX_LED_CHANGES);
        }
        drop(l);
        std::thread::sleep(LED_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xp_answer_parses() {
        assert_eq!(parse_xp("0000000040028000: 0x00000001\r\n"), Ok(1));
        assert_eq!(parse_xp("0000000040028000: 0x00000002"), Ok(2));
        assert!(parse_xp("Cannot access memory").is_err());
    }

    #[test]
    fn led_patterns_from_changes() {
        let t = Instant::now();
        let at = |ms| t + Duration::from_millis(ms);
        let mut q = VecDeque::new();
        assert_eq!(
            LedObserved::from_changes(&q, Duration::from_secs(4), at(0)),
            LedObserved::Unknown
        );
        q.push_back((at(0), true));
        assert_eq!(
            LedObserved::from_changes(&q, Duration::from_secs(4), at(5000)),
            LedObserved::Steady
        );
        q.push_back((at(5000), false));
        q.push_back((at(7000), true));
        q.push_back((at(8000), false));
        assert_eq!(
            LedObserved::from_changes(&q, Duration::from_secs(4), at(8500)),
            LedObserved::Blink {
                on_ms: 1000,
                off_ms: 2000
            }
        );
    }
}
