//! The server side of the management API, for whatever process answers it (`ha-daemon` for
//! the HA requests, `confsync` for the configuration requests).
//!
//! A process implements [`Backend`] (one method per [`Request`]; a method it does not override
//! answers [`ErrorCode::Unsupported`]) and hands it to [`serve`] or, per connection, to
//! [`serve_connection`]. The transport rules live here, once: one request per line, lines
//! bounded by [`MAX_LINE_LEN`], a malformed line answered with [`ErrorCode::BadRequest`]
//! (the connection stays open), an over-long or non-UTF-8 line answered and then the
//! connection closed (its remainder cannot be resynchronized).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{decode_line, encode_line, ApiError, ErrorCode, Reply, Request, MAX_LINE_LEN};

/// Where a backend writes streamed replies ([`Reply::Event`], [`Reply::Progress`]) before it
/// returns the final one. An error means the client went away: stop and return it.
pub type Sink<'a> = dyn FnMut(&Reply) -> io::Result<()> + 'a;

/// An error reply.
pub fn error(code: ErrorCode, message: impl Into<String>) -> Reply {
    Reply::Error(ApiError {
        code,
        message: message.into(),
    })
}

fn unsupported(what: &str) -> Reply {
    error(
        ErrorCode::Unsupported,
        format!("{what} is not served on this socket"),
    )
}

/// What answers the management API. Every method has a default answer of
/// [`ErrorCode::Unsupported`], so that a process implements only the requests it owns.
pub trait Backend: Send + Sync {
    /// [`Request::Info`].
    fn info(&self, _verbose: bool) -> Reply {
        unsupported("info")
    }
    /// [`Request::Mode`].
    fn mode(&self) -> Reply {
        unsupported("mode")
    }
    /// [`Request::Forwarding`].
    fn forwarding(&self) -> Reply {
        unsupported("forwarding")
    }
    /// [`Request::Active`].
    fn active(&self) -> Reply {
        unsupported("active")
    }
    /// [`Request::Passive`].
    fn passive(&self) -> Reply {
        unsupported("passive")
    }
    /// [`Request::Reset`].
    fn reset(&self) -> Reply {
        unsupported("reset")
    }
    /// [`Request::Reload`].
    fn reload(&self) -> Reply {
        unsupported("reload")
    }
    /// [`Request::Pause`].
    fn pause(&self, _seconds: u16) -> Reply {
        unsupported("pause")
    }
    /// [`Request::Resume`].
    fn resume(&self) -> Reply {
        unsupported("resume")
    }
    /// [`Request::Events`]: past events to `out`, then (with `follow`) new ones until `out`
    /// fails; returns [`Reply::EndOfEvents`].
    fn events(&self, _follow: bool, _last: Option<u32>, _out: &mut Sink) -> io::Result<Reply> {
        Ok(unsupported("events"))
    }
    /// [`Request::ConfigPublish`].
    fn config_publish(&self, _comment: Option<String>) -> Reply {
        unsupported("config publish")
    }
    /// [`Request::ConfigSync`]: progress to `out`, then [`Reply::SyncDone`].
    fn config_sync(&self, _peer: Option<String>, _out: &mut Sink) -> io::Result<Reply> {
        Ok(unsupported("config sync"))
    }
    /// [`Request::ConfigDiff`].
    fn config_diff(&self, _path: String, _peer: Option<String>) -> Reply {
        unsupported("config diff")
    }
    /// [`Request::ConfigSynctest`].
    fn config_synctest(&self) -> Reply {
        unsupported("config synctest")
    }
    /// [`Request::PskRotate`] (the backend reads the key file itself).
    fn psk_rotate(&self, _psk_file: String, _key_id: u8) -> Reply {
        unsupported("psk rotate")
    }
    /// [`Request::PskRotateStatus`].
    fn psk_rotate_status(&self) -> Reply {
        unsupported("psk rotate status")
    }
    /// [`Request::ClusterCreate`].
    fn cluster_create(&self, _cluster_id: u32, _psk_file: String) -> Reply {
        unsupported("cluster create")
    }
    /// [`Request::ClusterJoin`].
    fn cluster_join(
        &self,
        _peer: String,
        _psk_file: String,
        _ha: Option<crate::HaMember>,
    ) -> Reply {
        unsupported("cluster join")
    }
    /// [`Request::ClusterRemove`].
    fn cluster_remove(&self, _serial: String) -> Reply {
        unsupported("cluster remove")
    }
    /// [`Request::Update`]: progress to `out`, then the final reply.
    fn update(&self, _image: String, _out: &mut Sink) -> io::Result<Reply> {
        Ok(unsupported("update"))
    }
    /// [`Request::MemberAdd`].
    fn member_add(
        &self,
        _serial: String,
        _main_link: String,
        _addresses: crate::MemberAddresses,
    ) -> Reply {
        unsupported("member add")
    }
    /// [`Request::MemberRemove`].
    fn member_remove(&self, _serial: String) -> Reply {
        unsupported("member remove")
    }
    /// [`Request::Force`].
    fn force(&self, _member: String, _forced: crate::Forced) -> Reply {
        unsupported("forcing another member")
    }
    /// [`Request::Restart`].
    fn restart(&self, _binary: String) -> Reply {
        unsupported("restart")
    }
}

/// Hands one request to the backend method that answers it.
pub fn dispatch<B: Backend + ?Sized>(b: &B, req: Request, out: &mut Sink) -> io::Result<Reply> {
    Ok(match req {
        Request::Info { verbose } => b.info(verbose),
        Request::Mode => b.mode(),
        Request::Forwarding => b.forwarding(),
        Request::Active => b.active(),
        Request::Passive => b.passive(),
        Request::Reset => b.reset(),
        Request::Force { member, forced } => b.force(member, forced),
        Request::Reload => b.reload(),
        Request::Pause { seconds } => b.pause(seconds),
        Request::Resume => b.resume(),
        Request::Events { follow, last } => return b.events(follow, last, out),
        Request::ConfigPublish { comment } => b.config_publish(comment),
        Request::ConfigSync { peer } => return b.config_sync(peer, out),
        Request::ConfigDiff { path, peer } => b.config_diff(path, peer),
        Request::ConfigSynctest => b.config_synctest(),
        Request::PskRotate { psk_file, key_id } => b.psk_rotate(psk_file, key_id),
        Request::PskRotateStatus => b.psk_rotate_status(),
        Request::ClusterCreate {
            cluster_id,
            psk_file,
        } => b.cluster_create(cluster_id, psk_file),
        Request::ClusterJoin { peer, psk_file, ha } => b.cluster_join(peer, psk_file, ha),
        Request::ClusterRemove { serial } => b.cluster_remove(serial),
        Request::Update { image } => return b.update(image, out),
        Request::MemberAdd {
            serial,
            main_link,
            addresses,
        } => b.member_add(serial, main_link, addresses),
        Request::MemberRemove { serial } => b.member_remove(serial),
        Request::Restart { binary } => b.restart(binary),
    })
}

/// One line read from a client.
enum Line {
    /// A complete line (newline stripped or end of stream).
    Text(String),
    /// Longer than [`MAX_LINE_LEN`].
    TooLong,
    /// Not UTF-8.
    NotUtf8,
    /// The client closed the connection.
    Closed,
}

fn read_line(r: &mut impl BufRead) -> io::Result<Line> {
    let mut buf = Vec::new();
    let n = r
        .take(MAX_LINE_LEN as u64 + 1)
        .read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Ok(Line::Closed);
    }
    if buf.last() != Some(&b'\n') && n > MAX_LINE_LEN {
        return Ok(Line::TooLong);
    }
    Ok(match String::from_utf8(buf) {
        Ok(s) => Line::Text(s),
        Err(_) => Line::NotUtf8,
    })
}

/// How long a refused connection's remaining input is read and dropped before it is closed.
const DRAIN_FOR: Duration = Duration::from_secs(1);

/// Answers `reply` and ends the session: the write side is shut (the client reads the
/// answer, then end of stream), and what the client still sends is read and dropped for at
/// most [`DRAIN_FOR`] (bounded in bytes too). A Unix socket closed with unread input makes
/// the client's next read fail with "connection reset", which can come before the answer
/// was read (a CI run lost the answer that way).
fn refuse_and_close(
    writer: &mut UnixStream,
    reader: &mut BufReader<UnixStream>,
    reply: &Reply,
) -> io::Result<()> {
    writer.write_all(encode_line(reply).as_bytes())?;
    writer.shutdown(std::net::Shutdown::Write)?;
    let deadline = std::time::Instant::now() + DRAIN_FOR;
    let mut left = 2 * MAX_LINE_LEN;
    let mut buf = [0u8; 64 * 1024];
    while left > 0 {
        let now = std::time::Instant::now();
        if now >= deadline {
            break;
        }
        reader.get_ref().set_read_timeout(Some(deadline - now))?;
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => left = left.saturating_sub(n),
        }
    }
    Ok(())
}

/// Serves one client connection until it closes it (or sends a line that ends the session).
pub fn serve_connection<B: Backend + ?Sized>(b: &B, stream: UnixStream) -> io::Result<()> {
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    loop {
        let line = match read_line(&mut reader)? {
            Line::Closed => return Ok(()),
            Line::TooLong => {
                let r = error(
                    ErrorCode::BadRequest,
                    format!("request line longer than {MAX_LINE_LEN} bytes; closing"),
                );
                return refuse_and_close(&mut writer, &mut reader, &r);
            }
            Line::NotUtf8 => {
                let r = error(ErrorCode::BadRequest, "request line is not UTF-8; closing");
                return refuse_and_close(&mut writer, &mut reader, &r);
            }
            Line::Text(t) => t,
        };
        if line.trim().is_empty() {
            continue;
        }
        let reply = match decode_line::<Request>(&line) {
            Ok(req) => {
                let mut send = |r: &Reply| writer.write_all(encode_line(r).as_bytes());
                dispatch(b, req, &mut send)?
            }
            Err(e) => error(ErrorCode::BadRequest, e.to_string()),
        };
        writer.write_all(encode_line(&reply).as_bytes())?;
    }
}

/// Binds a management socket at `path`: creates its directory, replaces a stale socket file,
/// and restricts it to the owner (mode 0600: the API can force a swap).
pub fn bind(path: &Path) -> io::Result<UnixListener> {
    if let Some(dir) = path.parent() {
        if !dir.as_os_str().is_empty() {
            std::fs::create_dir_all(dir)?;
        }
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let l = UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

/// How often the accept loop looks at its stop flag.
const ACCEPT_POLL: Duration = Duration::from_millis(50);

/// Waits until `listener` has a connection to accept, at most `wait` (so that an accept
/// loop looks at its stop flag that often); true when one is there. A client is accepted
/// the moment it connects: a non-blocking accept retried every N ms made each request wait
/// N/2 ms on average (the daemon's 20 ms loop: up to 20 ms on every `hactl` call).
pub fn wait_for_client(listener: &impl std::os::fd::AsFd, wait: Duration) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let ms = u16::try_from(wait.as_millis()).unwrap_or(u16::MAX);
    let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
    matches!(poll(&mut fds, PollTimeout::from(ms)), Ok(n) if n > 0)
}

/// Serves every client of `listener` on its own thread until `stop` is set.
pub fn serve<B: Backend + 'static>(
    listener: UnixListener,
    backend: Arc<B>,
    stop: Arc<AtomicBool>,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    Ok(std::thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            if !wait_for_client(&listener, ACCEPT_POLL) {
                continue;
            }
            match listener.accept() {
                Ok((s, _)) => {
                    let b = backend.clone();
                    if s.set_nonblocking(false).is_ok() {
                        std::thread::spawn(move || {
                            let _ = serve_connection(&*b, s);
                        });
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => std::thread::sleep(ACCEPT_POLL),
            }
        }
    }))
}
