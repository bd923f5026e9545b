//! The blocking client of the management API (used by `hactl`, and by `confsync` to ask the
//! daemon for the member's mode).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::{decode_line, encode_line, ApiError, Reply, Request, MAX_LINE_LEN};

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// The socket could not be reached, the connection broke, or no answer came in time.
    Unreachable(String),
    /// The server sent something that is not a reply, or closed before the final reply.
    Protocol(String),
    /// The server answered with an error reply.
    Api(ApiError),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable(s) | ClientError::Protocol(s) => f.write_str(s),
            ClientError::Api(e) => f.write_str(&e.message),
        }
    }
}

impl std::error::Error for ClientError {}

/// A connection to a management socket.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    path: PathBuf,
    timeout: Duration,
}

impl Client {
    /// Connects to the socket at `path`; every read waits at most `timeout` (each streamed
    /// line restarts it).
    pub fn connect(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
        let s = UnixStream::connect(path).map_err(|e| {
            ClientError::Unreachable(format!("cannot reach {} ({e})", path.display()))
        })?;
        let _ = s.set_read_timeout(Some(timeout));
        let writer = s
            .try_clone()
            .map_err(|e| ClientError::Unreachable(format!("socket {}: {e}", path.display())))?;
        Ok(Client {
            reader: BufReader::new(s),
            writer,
            path: path.to_path_buf(),
            timeout,
        })
    }

    /// Sends one request.
    pub fn send(&mut self, req: &Request) -> Result<(), ClientError> {
        self.writer
            .write_all(encode_line(req).as_bytes())
            .map_err(|e| self.lost(e))
    }

    /// Reads the next reply line; `None` when the server closed the connection.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ClientError> {
        let mut line = Vec::new();
        // Bounded read: a line longer than MAX_LINE_LEN is an error, not unbounded memory.
        let n = (&mut self.reader)
            .take(MAX_LINE_LEN as u64 + 1)
            .read_until(b'\n', &mut line)
            .map_err(|e| self.lost(e))?;
        if n == 0 {
            return Ok(None);
        }
        let text = String::from_utf8(line)
            .map_err(|_| ClientError::Protocol("a reply line is not UTF-8".into()))?;
        decode_line::<Reply>(&text)
            .map(Some)
            .map_err(|e| ClientError::Protocol(format!("unreadable reply: {e}")))
    }

    /// Sends `req` and returns its final reply, handing every streamed line to `on_stream`.
    /// An error reply becomes [`ClientError::Api`].
    pub fn call(
        &mut self,
        req: &Request,
        mut on_stream: impl FnMut(&Reply),
    ) -> Result<Reply, ClientError> {
        self.send(req)?;
        loop {
            match self.next_reply()? {
                None => {
                    return Err(ClientError::Protocol(format!(
                        "{} closed the connection before answering",
                        self.path.display()
                    )))
                }
                Some(Reply::Error(e)) => return Err(ClientError::Api(e)),
                Some(r) if r.is_final() => return Ok(r),
                Some(r) => on_stream(&r),
            }
        }
    }

    fn lost(&self, e: std::io::Error) -> ClientError {
        ClientError::Unreachable(
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) {
                format!(
                    "no answer from {} within {} s",
                    self.path.display(),
                    self.timeout.as_secs()
                )
            } else {
                format!("connection to {} lost: {e}", self.path.display())
            },
        )
    }
}
