//! The server and client over a real unix socket: dispatch, streaming, malformed input,
//! over-long lines, and the default `unsupported` answers.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha_mgmt_api::client::{Client, ClientError};
use ha_mgmt_api::server::{self, Backend, Sink};
use ha_mgmt_api::*;

/// Answers mode and a streamed sync; everything else is left to the defaults.
struct Small;

impl Backend for Small {
    fn mode(&self) -> Reply {
        Reply::Mode(ModeReport {
            serial: "SN-A".into(),
            mode: Mode::Active,
            forced: Forced::None,
            since: 3,
            paused: false,
        })
    }
    fn config_sync(&self, peer: Option<String>, out: &mut Sink) -> std::io::Result<Reply> {
        let peer = peer.unwrap_or_else(|| "SN-B".into());
        for done in 1..=3 {
            out(&Reply::Progress(Progress {
                peer: peer.clone(),
                phase: "transfer".into(),
                done_files: done,
                total_files: 3,
                done_bytes: done * 10,
                total_bytes: 30,
            }))?;
        }
        Ok(Reply::SyncDone(SyncReport {
            peer,
            revision: 2,
            files_total: 3,
            files_sent: 3,
            bytes_sent: 30,
            elapsed_ms: 1,
        }))
    }
}

struct Served {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Served {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn start() -> Served {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("run/mgmt.sock");
    let l = server::bind(&path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let thread = server::serve(l, Arc::new(Small), stop.clone()).unwrap();
    Served {
        _dir: dir,
        path,
        stop,
        thread: Some(thread),
    }
}

const T: Duration = Duration::from_secs(10);

#[test]
fn socket_is_owner_only_and_requests_dispatch() {
    let s = start();
    let mode = std::fs::metadata(&s.path).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "socket mode {mode:o}");
    let mut c = Client::connect(&s.path, T).unwrap();
    let r = c.call(&Request::Mode, |_| panic!("no stream")).unwrap();
    assert!(matches!(
        r,
        Reply::Mode(ModeReport {
            mode: Mode::Active,
            ..
        })
    ));
    // Streamed progress arrives before the final reply, on the same connection.
    let mut seen = Vec::new();
    let r = c
        .call(&Request::ConfigSync { peer: None }, |p| {
            seen.push(p.clone())
        })
        .unwrap();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|p| !p.is_final()));
    assert!(matches!(r, Reply::SyncDone(SyncReport { revision: 2, .. })));
}

#[test]
fn requests_a_backend_does_not_serve_are_unsupported() {
    let s = start();
    let mut c = Client::connect(&s.path, T).unwrap();
    for req in [
        Request::Info { verbose: false },
        Request::Reload,
        Request::Events {
            follow: true,
            last: None,
        },
        Request::ClusterRemove { serial: "X".into() },
        Request::Update { image: "/x".into() },
    ] {
        match c.call(&req, |_| {}) {
            Err(ClientError::Api(e)) => {
                assert_eq!(e.code, ErrorCode::Unsupported, "{req:?}");
                assert!(e.message.contains("not served"), "{}", e.message);
            }
            other => panic!("{req:?}: {other:?}"),
        }
    }
}

fn raw(s: &Served) -> (UnixStream, BufReader<UnixStream>) {
    let w = UnixStream::connect(&s.path).unwrap();
    w.set_read_timeout(Some(T)).unwrap();
    let r = BufReader::new(w.try_clone().unwrap());
    (w, r)
}

fn read_reply(r: &mut BufReader<UnixStream>) -> Option<Reply> {
    let mut line = String::new();
    if r.read_line(&mut line).unwrap() == 0 {
        return None;
    }
    Some(decode_line(&line).unwrap())
}

#[test]
fn malformed_lines_get_a_clear_error_and_the_connection_survives() {
    let s = start();
    let (mut w, mut r) = raw(&s);
    for bad in [
        "not json\n",
        "{\"cmd\":\"no_such_command\"}\n",
        "{\"cmd\":\"psk_rotate\",\"key_id\":300}\n",
        "[1,2,3]\n",
    ] {
        w.write_all(bad.as_bytes()).unwrap();
        match read_reply(&mut r) {
            Some(Reply::Error(e)) => {
                assert_eq!(e.code, ErrorCode::BadRequest, "{bad}");
                assert!(e.message.starts_with("bad JSON line"), "{}", e.message);
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    // Blank lines are skipped; a good request still works on the same connection.
    w.write_all(b"\n{\"cmd\":\"mode\"}\n").unwrap();
    assert!(matches!(read_reply(&mut r), Some(Reply::Mode(_))));
}

#[test]
fn an_over_long_line_is_refused_and_the_connection_closed() {
    let s = start();
    let (mut w, mut r) = raw(&s);
    // MAX_LINE_LEN + 1 bytes without a newline: the server stops reading there.
    let chunk = vec![b'x'; 1 << 20];
    let mut sent = 0;
    while sent <= MAX_LINE_LEN {
        if w.write_all(&chunk).is_err() {
            break;
        }
        sent += chunk.len();
    }
    match read_reply(&mut r) {
        Some(Reply::Error(e)) => {
            assert_eq!(e.code, ErrorCode::BadRequest);
            assert!(e.message.contains("longer than"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }
    assert!(read_reply(&mut r).is_none(), "connection closed");
}

#[test]
fn non_utf8_is_refused() {
    let s = start();
    let (mut w, mut r) = raw(&s);
    w.write_all(b"{\"cmd\":\"mode\xff\"}\n").unwrap();
    match read_reply(&mut r) {
        Some(Reply::Error(e)) => assert!(e.message.contains("UTF-8"), "{}", e.message),
        other => panic!("{other:?}"),
    }
}

#[test]
fn client_reports_an_absent_socket_as_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    match Client::connect(&dir.path().join("none.sock"), T) {
        Err(ClientError::Unreachable(m)) => assert!(m.contains("none.sock")),
        Err(e) => panic!("{e:?}"),
        Ok(_) => panic!("connected to nothing"),
    }
}

mod arbitrary_input {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Any text decodes to a request or a typed error, never a panic.
        #[test]
        fn decode_never_panics(text in ".{0,300}") {
            let _ = decode_line::<Request>(&text);
            let _ = decode_line::<Reply>(&text);
        }

        /// Any bytes on a connection get exactly one reply line that parses, and the server
        /// thread survives (checked by a good request afterwards on a new connection).
        #[test]
        fn any_line_gets_a_parseable_answer(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let (mut client, server_end) = UnixStream::pair().unwrap();
            let t = std::thread::spawn(move || server::serve_connection(&Small, server_end));
            let mut line: Vec<u8> = bytes.into_iter().filter(|b| *b != b'\n').collect();
            let blank = line.iter().all(|b| b.is_ascii_whitespace());
            line.push(b'\n');
            client.write_all(&line).unwrap();
            if blank {
                // Blank lines are skipped: ask something to get an answer.
                client.write_all(b"{\"cmd\":\"mode\"}\n").unwrap();
            }
            client.set_read_timeout(Some(T)).unwrap();
            let mut r = BufReader::new(client.try_clone().unwrap());
            let mut answer = String::new();
            r.read_line(&mut answer).unwrap();
            prop_assert!(decode_line::<Reply>(&answer).is_ok(), "{answer}");
            drop(r);
            drop(client);
            prop_assert!(t.join().is_ok());
        }
    }
}
