//! The TCP load of the end-to-end failover test (`cargo xtask e2e tcp-survival`): an echo
//! server, and a client that keeps N connections busy and measures, per connection, whether
//! data still flows after a mark (a kill or a swap) and the longest pause in delivered data.
//!
//! Each connection sends an 8-byte big-endian counter every `interval`; the server echoes the
//! bytes; the client checks that the echoed counters come back in order. One thread, `poll`
//! over every socket: a thousand connections cost no thread each.
//!
//! The client is driven by lines on its standard input (`mark`, `report`, `stop`) and answers
//! with JSON lines on its standard output (see [`Report`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

/// Bytes of one message.
pub const MSG_LEN: usize = 8;
/// Poll timeout of the loops: the resolution of the gap measure is the send interval, this
/// only bounds the reaction to commands.
pub const POLL_MS: u16 = 5;

/// Serves echo on `listener` until `stop` is set. Returns the number of connections served.
pub fn echo_server(listener: TcpListener, stop: Arc<AtomicBool>) -> io::Result<u64> {
    listener.set_nonblocking(true)?;
    let mut conns: Vec<(TcpStream, Vec<u8>)> = Vec::new();
    let mut served = 0u64;
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        {
            let mut fds: Vec<PollFd> = Vec::with_capacity(conns.len() + 1);
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            for (c, pending) in &conns {
                let mut f = PollFlags::POLLIN;
                if !pending.is_empty() {
                    f |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.as_fd(), f));
            }
            match poll(&mut fds, PollTimeout::from(POLL_MS)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        loop {
            match listener.accept() {
                Ok((s, _)) => {
                    s.set_nonblocking(true)?;
                    s.set_nodelay(true)?;
                    conns.push((s, Vec::new()));
                    served += 1;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
        conns.retain_mut(|(s, pending)| {
            loop {
                match s.read(&mut buf) {
                    Ok(0) => return false,
                    Ok(n) => pending.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            while !pending.is_empty() {
                match s.write(pending) {
                    Ok(n) => {
                        pending.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return false,
                }
            }
            true
        });
    }
    Ok(served)
}

/// One client connection.
struct Conn {
    s: Option<TcpStream>,
    next_send: u64,
    next_expect: u64,
    rx: Vec<u8>,
    tx: Vec<u8>,
    last_rx: Instant,
    max_gap: Duration,
    rx_after_mark: bool,
    error: Option<String>,
}

/// What the client reports (one JSON line).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Report {
    /// Connections opened.
    pub connections: usize,
    /// Connections without error that delivered data after the last mark.
    pub survived: usize,
    /// Connections that failed (reset, closed, corrupted) since the start.
    pub failed: usize,
    /// Longest pause in delivered data since the last mark, over the surviving connections,
    /// ms.
    pub gap_ms: u64,
    /// Median over the surviving connections of their longest pause since the last mark, ms.
    #[serde(default)]
    pub gap_p50_ms: u64,
    /// Echoed messages since the start.
    pub messages: u64,
    /// Why the first failed connection failed.
    #[serde(default)]
    pub first_error: Option<String>,
}

/// Commands of the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Command {
    /// Start a new measuring phase: gaps and "data after" count from now.
    Mark,
    /// Print a report of the current phase.
    Report,
    /// Print a report and end.
    Stop,
}

/// Parses a command line.
pub fn parse_command(line: &str) -> Option<Command> {
    match line.trim() {
        "mark" => Some(Command::Mark),
        "report" => Some(Command::Report),
        "stop" => Some(Command::Stop),
        _ => None,
    }
}

/// The load client.
pub struct Client {
    conns: Vec<Conn>,
    interval: Duration,
    messages: u64,
}

impl Client {
    /// Opens `n` connections to `server` (each within `connect_timeout`) and sets them
    /// non-blocking.
    pub fn connect(
        server: SocketAddr,
        n: usize,
        interval: Duration,
        connect_timeout: Duration,
    ) -> io::Result<Self> {
        let mut conns = Vec::with_capacity(n);
        let now = Instant::now();
        for _ in 0..n {
            let s = TcpStream::connect_timeout(&server, connect_timeout)?;
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            conns.push(Conn {
                s: Some(s),
                next_send: 0,
                next_expect: 0,
                rx: Vec::new(),
                tx: Vec::new(),
                last_rx: now,
                max_gap: Duration::ZERO,
                rx_after_mark: false,
                error: None,
            });
        }
        Ok(Self {
            conns,
            interval,
            messages: 0,
        })
    }

    /// Starts a measuring phase.
    pub fn mark(&mut self) {
        let now = Instant::now();
        for c in &mut self.conns {
            c.max_gap = Duration::ZERO;
            c.rx_after_mark = false;
            c.last_rx = now;
        }
    }

    /// The current phase's figures. A connection silent for longer than its largest gap so
    /// far counts that silence too (a connection that stopped is not a zero gap).
    pub fn report(&self) -> Report {
        let now = Instant::now();
        let failed: Vec<&Conn> = self.conns.iter().filter(|c| c.error.is_some()).collect();
        let ok = self
            .conns
            .iter()
            .filter(|c| c.error.is_none() && c.rx_after_mark);
        let mut gaps: Vec<Duration> = ok
            .map(|c| c.max_gap.max(now.duration_since(c.last_rx)))
            .collect();
        gaps.sort();
        let survived = gaps.len();
        let gap = gaps.last().copied().unwrap_or(Duration::ZERO);
        let p50 = gaps.get(gaps.len() / 2).copied().unwrap_or(Duration::ZERO);
        Report {
            connections: self.conns.len(),
            survived,
            failed: failed.len(),
            gap_ms: u64::try_from(gap.as_millis()).unwrap_or(u64::MAX),
            gap_p50_ms: u64::try_from(p50.as_millis()).unwrap_or(u64::MAX),
            messages: self.messages,
            first_error: failed.first().and_then(|c| c.error.clone()),
        }
    }

    /// True when every connection has had at least one echo since the last mark.
    pub fn all_flowing(&self) -> bool {
        self.conns
            .iter()
            .all(|c| c.error.is_none() && c.rx_after_mark)
    }

    /// Runs one round: send what is due, read what arrived. Waits at most [`POLL_MS`].
    pub fn step(&mut self, started: Instant) -> io::Result<()> {
        {
            let mut fds: Vec<PollFd> = self
                .conns
                .iter()
                .filter_map(|c| c.s.as_ref())
                .map(|s| PollFd::new(s.as_fd(), PollFlags::POLLIN))
                .collect();
            match poll(&mut fds, PollTimeout::from(POLL_MS)) {
                Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let now = Instant::now();
        // Spread the connections' sends over the interval.
        let n = self.conns.len().max(1) as u32;
        let mut buf = [0u8; 4096];
        for (i, c) in self.conns.iter_mut().enumerate() {
            let Some(s) = c.s.as_mut() else { continue };
            let offset = self.interval * (i as u32) / n;
            let due = started + offset + self.interval * (c.next_send as u32);
            if now >= due && c.next_send < c.next_expect + 64 {
                c.tx.extend_from_slice(&c.next_send.to_be_bytes());
                c.next_send += 1;
            }
            let mut fail: Option<String> = None;
            while !c.tx.is_empty() {
                match s.write(&c.tx) {
                    Ok(k) => {
                        c.tx.drain(..k);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        fail = Some(format!("write: {e}"));
                        break;
                    }
                }
            }
            while fail.is_none() {
                match s.read(&mut buf) {
                    Ok(0) => fail = Some("closed by the peer".into()),
                    Ok(k) => c.rx.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => fail = Some(format!("read: {e}")),
                }
            }
            while fail.is_none() && c.rx.len() >= MSG_LEN {
                let mut m = [0u8; MSG_LEN];
                m.copy_from_slice(&c.rx[..MSG_LEN]);
                c.rx.drain(..MSG_LEN);
                let v = u64::from_be_bytes(m);
                if v != c.next_expect {
                    fail = Some(format!("echo {v}, expected {}", c.next_expect));
                    break;
                }
                c.next_expect += 1;
                c.max_gap = c.max_gap.max(now.duration_since(c.last_rx));
                c.last_rx = now;
                c.rx_after_mark = true;
                self.messages += 1;
            }
            if let Some(e) = fail {
                c.error = Some(e);
                c.s = None;
            }
        }
        Ok(())
    }

    /// Runs until `stop` arrives on `commands`, printing a [`Report`] line for each `report`
    /// and at the end; prints `ready` once every connection has echoed.
    pub fn run(&mut self, commands: Receiver<Command>, out: &mut dyn Write) -> io::Result<Report> {
        let started = Instant::now();
        let mut ready = false;
        loop {
            self.step(started)?;
            if !ready && self.all_flowing() {
                ready = true;
                writeln!(out, "ready")?;
                out.flush()?;
            }
            while let Ok(cmd) = commands.try_recv() {
                match cmd {
                    Command::Mark => self.mark(),
                    Command::Report => {
                        writeln!(out, "{}", serde_json::to_string(&self.report())?)?;
                        out.flush()?;
                    }
                    Command::Stop => {
                        let r = self.report();
                        writeln!(out, "{}", serde_json::to_string(&r)?)?;
                        out.flush()?;
                        return Ok(r);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn loopback_load_flows_and_a_killed_server_fails_every_connection() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let server = std::thread::spawn(move || echo_server(listener, st));
        let mut c = Client::connect(addr, 50, Duration::from_millis(20), Duration::from_secs(2))
            .expect("connect");
        let t0 = Instant::now();
        while !c.all_flowing() {
            assert!(t0.elapsed() < Duration::from_secs(10), "never flowing");
            c.step(t0).expect("step");
        }
        c.mark();
        let t1 = Instant::now();
        while t1.elapsed() < Duration::from_millis(300) {
            c.step(t0).expect("step");
        }
        let r = c.report();
        assert_eq!((r.connections, r.survived, r.failed), (50, 50, 0), "{r:?}");
        assert!(r.gap_ms < 250, "{r:?}");

        // The server goes away: every connection fails, none survives the next phase.
        stop.store(true, Ordering::Relaxed);
        assert_eq!(server.join().expect("server").expect("served"), 50);
        c.mark();
        let t2 = Instant::now();
        while t2.elapsed() < Duration::from_millis(300) {
            c.step(t0).expect("step");
        }
        let r = c.report();
        assert_eq!(r.survived, 0, "{r:?}");
        assert_eq!(r.failed, 50, "{r:?}");
        assert!(r.first_error.is_some());
    }

    #[test]
    fn commands_drive_the_client() {
        assert_eq!(parse_command("mark\n"), Some(Command::Mark));
        assert_eq!(parse_command(" stop "), Some(Command::Stop));
        assert_eq!(parse_command("nonsense"), None);
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let server = std::thread::spawn(move || echo_server(listener, st));
        let mut c = Client::connect(addr, 3, Duration::from_millis(10), Duration::from_secs(2))
            .expect("connect");
        let (tx, rx) = mpsc::channel();
        let feeder = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            tx.send(Command::Mark).expect("send");
            std::thread::sleep(Duration::from_millis(100));
            tx.send(Command::Report).expect("send");
            tx.send(Command::Stop).expect("send");
        });
        let mut out = Vec::new();
        let r = c.run(rx, &mut out).expect("run");
        feeder.join().expect("feeder");
        let text = String::from_utf8(out).expect("utf8");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "ready");
        assert_eq!(lines.len(), 3);
        let last: Report = serde_json::from_str(lines[2]).expect("json");
        assert_eq!(last, r);
        assert_eq!(r.survived, 3);
        stop.store(true, Ordering::Relaxed);
        server.join().expect("server").expect("served");
    }
}
