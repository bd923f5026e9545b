//! The blocking client of the daemon's management API: one JSON line per request, one or more
//! JSON lines per reply (streamed events and progress end with a final reply).

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ha_mgmt_api::{decode_line, encode_line, ErrorCode, Reply, Request, MAX_LINE_LEN};

use crate::exit::{Code, Failure, Result};

/// How long a non-streaming request may take before hactl gives up (a sync of 10,000 files or
/// a rolling update streams progress, and every progress line restarts this timer).
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

/// Environment variable naming the management socket (overridden by `--socket`).
pub const SOCKET_ENV: &str = "HA_MGMT_SOCKET";

/// The socket to use: `--socket`, else `$HA_MGMT_SOCKET`, else the daemon's default path.
pub fn socket_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(SOCKET_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(ha_mgmt_api::DEFAULT_SOCKET))
}

/// A connection to the daemon.
pub struct Client {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    path: PathBuf,
}

impl Client {
    /// Connects to the management socket at `path`.
    pub fn connect(path: &Path) -> Result<Client> {
        let s = UnixStream::connect(path).map_err(|e| {
            Failure::new(
                Code::Unreachable,
                format!(
                    "cannot reach the daemon at {} ({e}); is ha-daemon running? (--socket or ${SOCKET_ENV})",
                    path.display()
                ),
            )
        })?;
        let _ = s.set_read_timeout(Some(REPLY_TIMEOUT));
        let writer = s.try_clone().map_err(|e| {
            Failure::new(Code::Unreachable, format!("socket {}: {e}", path.display()))
        })?;
        Ok(Client {
            reader: BufReader::new(s),
            writer,
            path: path.to_path_buf(),
        })
    }

    /// Sends one request.
    pub fn send(&mut self, req: &Request) -> Result<()> {
        self.writer
            .write_all(encode_line(req).as_bytes())
            .map_err(|e| self.lost(e))
    }

    /// Reads the next reply line; `None` when the daemon closed the connection.
    pub fn next_reply(&mut self) -> Result<Option<Reply>> {
        let mut line = String::new();
        // Bounded read: a line longer than MAX_LINE_LEN is an error, not unbounded memory.
        let n = (&mut self.reader)
            .take(MAX_LINE_LEN as u64 + 1)
            .read_line(&mut line)
            .map_err(|e| self.lost(e))?;
        if n == 0 {
            return Ok(None);
        }
        decode_line::<Reply>(&line).map(Some).map_err(|e| {
            Failure::new(
                Code::Failed,
                format!("the daemon sent a reply hactl cannot read: {e}"),
            )
        })
    }

    /// Sends `req` and returns its final reply, handing every streamed line to `on_stream`.
    /// An error reply becomes a [`Failure`].
    pub fn call(&mut self, req: &Request, mut on_stream: impl FnMut(&Reply)) -> Result<Reply> {
        self.send(req)?;
        loop {
            match self.next_reply()? {
                None => {
                    return Err(Failure::new(
                        Code::Failed,
                        "the daemon closed the connection before answering",
                    ))
                }
                Some(Reply::Error(e)) => return Err(api_failure(e.code, &e.message)),
                Some(r) if r.is_final() => return Ok(r),
                Some(r) => on_stream(&r),
            }
        }
    }

    fn lost(&self, e: std::io::Error) -> Failure {
        let what = if matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ) {
            format!(
                "no answer from the daemon at {} within {} s",
                self.path.display(),
                REPLY_TIMEOUT.as_secs()
            )
        } else {
            format!(
                "connection to the daemon at {} lost: {e}",
                self.path.display()
            )
        };
        Failure::new(Code::Unreachable, what)
    }
}

/// Maps an API error to hactl's exit code: refused input is 3, everything else 1.
pub fn api_failure(code: ErrorCode, message: &str) -> Failure {
    let exit = match code {
        ErrorCode::BadRequest | ErrorCode::Refused | ErrorCode::ClusterFull => Code::Refused,
        ErrorCode::Unreachable => Code::Unreachable,
        ErrorCode::NotFound | ErrorCode::Unsupported | ErrorCode::Internal => Code::Failed,
    };
    let class = serde_json::to_value(code)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default();
    Failure::new(exit, format!("daemon: {message} ({class})"))
}
