//! Deadlines of a sync session: a bound on every blocking read and write, a bound on the
//! handshake, and a bound on the whole session, so that a peer that trickles bytes (or stops
//! reading) is cut off and its session's thread and slot are freed.
//!
//! [`Bounded`] wraps one direction of a stream: before each read or write it sets the socket's
//! timeout to the smaller of the per-operation bound and the time left before the deadline,
//! and refuses to start an operation after the deadline. A trickle of one byte per second
//! passes every per-read bound but not the deadline.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Longest a receiver waits for one read from a connected peer. An honest peer streams a
/// session without pauses (it reads each content from its own disk between frames); ten
/// seconds is a hundred times the pause of a loaded member and still frees a stalled session
/// quickly.
pub const READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest the connecting side waits for one read: the receiver's answer to `Commit` comes
/// after it built, verified and flushed (`syncfs`) the whole revision, several seconds for
/// 10,000 files on a loaded member.
pub const IO_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a session may take before the other end's first frame is accepted. Only a holder
/// of the cluster key can send one, and an honest peer sends it within milliseconds of the
/// connection: this is how long someone without the key can hold a session slot.
pub const HANDSHAKE_DEADLINE: Duration = Duration::from_secs(10);
/// Longest a whole session may take. A full sync of 10,000 files takes 11 s in a debug build
/// (`tests/service_process.rs`); a revision of `MAX_FILES` (1,000,000) files at that rate
/// takes about 18 minutes, so 30 minutes leaves room while bounding a key holder that
/// trickles.
pub const SESSION_DEADLINE: Duration = Duration::from_secs(30 * 60);

/// The deadlines of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bound of each blocking read or write.
    pub io: Duration,
    /// From the start of the session to the first frame accepted from the other end.
    pub handshake: Duration,
    /// From the start of the session to its end.
    pub session: Duration,
}

impl Limits {
    /// The receiving end's limits ([`READ_TIMEOUT`], [`HANDSHAKE_DEADLINE`],
    /// [`SESSION_DEADLINE`]).
    pub const RECEIVER: Limits = Limits {
        io: READ_TIMEOUT,
        handshake: HANDSHAKE_DEADLINE,
        session: SESSION_DEADLINE,
    };
    /// The connecting end's limits ([`IO_TIMEOUT`], [`HANDSHAKE_DEADLINE`],
    /// [`SESSION_DEADLINE`]).
    pub const CONNECTOR: Limits = Limits {
        io: IO_TIMEOUT,
        handshake: HANDSHAKE_DEADLINE,
        session: SESSION_DEADLINE,
    };
}

/// Which bound ended a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cut {
    /// One read or write took longer than [`Limits::io`].
    Io,
    /// No frame of the other end was accepted within [`Limits::handshake`].
    Handshake,
    /// The session lasted longer than [`Limits::session`].
    Session,
}

impl Cut {
    /// A short, stable name, for events and logs.
    pub fn name(self) -> &'static str {
        match self {
            Cut::Io => "io_timeout",
            Cut::Handshake => "handshake_deadline",
            Cut::Session => "session_deadline",
        }
    }
}

/// A stream whose blocking reads and writes can be bounded in time.
pub trait Timeouts {
    /// Bounds the next blocking reads (`None`: no bound).
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()>;
    /// Bounds the next blocking writes (`None`: no bound).
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()>;
}

impl Timeouts for TcpStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        TcpStream::set_write_timeout(self, t)
    }
}

impl Timeouts for UnixStream {
    fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_read_timeout(self, t)
    }
    fn set_write_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        UnixStream::set_write_timeout(self, t)
    }
}

/// One direction of a stream, every operation bounded by `io` and by the deadline.
#[derive(Debug)]
pub struct Bounded<S> {
    inner: S,
    io: Duration,
    /// No operation starts after this instant.
    pub deadline: Option<Instant>,
}

/// The shortest timeout a socket accepts (zero means "no timeout" to the kernel).
const MIN_TIMEOUT: Duration = Duration::from_millis(1);

impl<S> Bounded<S> {
    /// Wraps `inner`; each operation is bounded by `io`.
    pub fn new(inner: S, io: Duration) -> Self {
        Self {
            inner,
            io,
            deadline: None,
        }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    fn budget(&self) -> io::Result<Duration> {
        let mut t = self.io;
        if let Some(d) = self.deadline {
            let left = d.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(io::ErrorKind::TimedOut, "deadline passed"));
            }
            t = t.min(left);
        }
        Ok(t.max(MIN_TIMEOUT))
    }
}

impl<S: Read + Timeouts> Read for Bounded<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let t = self.budget()?;
        self.inner.set_read_timeout(Some(t))?;
        self.inner.read(buf)
    }
}

impl<S: Write + Timeouts> Write for Bounded<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let t = self.budget()?;
        self.inner.set_write_timeout(Some(t))?;
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// True for the errors a bounded operation ends with when its time is up.
pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trickle_passes_each_read_bound_but_not_the_deadline() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut r = Bounded::new(a, Duration::from_millis(300));
        let start = Instant::now();
        r.deadline = Some(start + Duration::from_millis(500));
        let t = std::thread::spawn(move || {
            for _ in 0..20 {
                std::thread::sleep(Duration::from_millis(100));
                if b.write_all(b"x").is_err() {
                    break;
                }
            }
        });
        let mut got = 0;
        let mut byte = [0u8; 1];
        let err = loop {
            match r.read(&mut byte) {
                Ok(n) => got += n,
                Err(e) => break e,
            }
        };
        assert!(is_timeout(&err), "{err}");
        assert!(got >= 2, "{got} bytes before the deadline");
        let took = start.elapsed();
        assert!(took < Duration::from_millis(900), "{took:?}");
        drop(r);
        t.join().unwrap();
    }

    #[test]
    fn a_silent_peer_is_cut_by_the_per_read_bound() {
        let (a, _b) = UnixStream::pair().unwrap();
        let mut r = Bounded::new(a, Duration::from_millis(100));
        let start = Instant::now();
        let e = r.read(&mut [0u8; 4]).unwrap_err();
        assert!(is_timeout(&e), "{e}");
        assert!(start.elapsed() < Duration::from_secs(2));
    }
}
