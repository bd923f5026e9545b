//! `confsync service` processes, and a TCP relay that records what crosses it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ha_mgmt_api::client::{Client, ClientError};
use ha_mgmt_api::{Reply, Request};

/// A `confsync service` process, killed by its own pid when dropped.
pub struct Proc {
    child: Child,
    /// Its receiver's address.
    pub addr: String,
    /// Its management socket.
    pub sock: PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The command line of `serial`'s service in `dir` (store `dir/SERIAL`, socket
/// `dir/SERIAL.sock`), cluster 12, before its key and extra arguments.
pub fn service_cmd(dir: &Path, serial: &str, role: &str, listen: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_confsync"));
    cmd.arg("service")
        .arg("--root")
        .arg(dir.join(serial))
        .args(["--listen", listen])
        .args(["--cluster-id", "12", "--serial", serial, "--role", role])
        .arg("--mgmt-socket")
        .arg(dir.join(format!("{serial}.sock")));
    cmd
}

/// Starts `cmd` and waits for its `listening` line.
pub fn spawn(mut cmd: Command, sock: PathBuf) -> Proc {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().unwrap().unwrap();
    let addr = first
        .strip_prefix("listening ")
        .and_then(|r| r.split(' ').next())
        .unwrap_or_else(|| panic!("unexpected first line {first:?}"))
        .to_string();
    // Keep draining the output so the process never blocks on a full pipe.
    std::thread::spawn(move || for _ in lines {});
    Proc { child, addr, sock }
}

/// Starts `serial`'s service with the key file `key` and `extra` arguments.
pub fn start_with(
    dir: &Path,
    serial: &str,
    role: &str,
    key: &Path,
    peer: Option<&str>,
    extra: &[&str],
) -> Proc {
    let mut cmd = service_cmd(dir, serial, role, "127.0.0.1:0");
    cmd.arg("--psk-file").arg(key);
    if let Some(p) = peer {
        cmd.args(["--peer", p]);
    }
    cmd.args(extra);
    spawn(cmd, dir.join(format!("{serial}.sock")))
}

/// Starts `serial`'s service with the key file `key`.
pub fn start(dir: &Path, serial: &str, role: &str, key: &Path, peer: Option<&str>) -> Proc {
    start_with(dir, serial, role, key, peer, &[])
}

/// One request to a service process; an error answer is returned as [`Reply::Error`].
pub fn call(p: &Proc, req: Request) -> Reply {
    let mut c = Client::connect(&p.sock, Duration::from_secs(300)).unwrap();
    match c.call(&req, |_| {}) {
        Ok(r) => r,
        Err(ClientError::Api(e)) => Reply::Error(e),
        Err(e) => panic!("{req:?}: {e:?}"),
    }
}

/// A TCP relay to `target` that records both directions of every connection.
pub struct Relay {
    /// Where to connect instead of `target`.
    pub addr: String,
    /// Bytes from the connecting side to `target`.
    pub up: Arc<Mutex<Vec<u8>>>,
    /// Bytes from `target` back.
    pub down: Arc<Mutex<Vec<u8>>>,
}

fn pump(mut from: TcpStream, mut to: TcpStream, log: Arc<Mutex<Vec<u8>>>) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        log.lock().unwrap().extend_from_slice(&buf[..n]);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

impl Relay {
    /// A relay to `target`, serving connections until the test ends.
    pub fn start(target: &str) -> Relay {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let (up, down) = (Arc::default(), Arc::default());
        let (u, d, target) = (Arc::clone(&up), Arc::clone(&down), target.to_string());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(c) = c else { break };
                let Ok(s) = TcpStream::connect(&target) else {
                    continue;
                };
                let (c2, s2) = (c.try_clone().unwrap(), s.try_clone().unwrap());
                let (u, d) = (Arc::clone(&u), Arc::clone(&d));
                std::thread::spawn(move || pump(c, s, u));
                std::thread::spawn(move || pump(s2, c2, d));
            }
        });
        Relay { addr, up, down }
    }

    /// Everything recorded, both ways.
    pub fn all(&self) -> Vec<u8> {
        [
            self.up.lock().unwrap().clone(),
            self.down.lock().unwrap().clone(),
        ]
        .concat()
    }
}

/// True when `needle` occurs in `hay`.
pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}
