//! The TCP load of the end-to-end failover test (`cargo xtask e2e tcp-survival`): an echo
//! server, and a client that keeps N connections busy and measures, per connection, whether
//! data still flows after a mark (a kill or a swap) and the longest pause in delivered data.
//!
//! Each connection sends an 8-byte big-endian counter every `interval`; the server echoes the
//! bytes; the client checks that the echoed counters come back in order. One thread and one
//! `epoll` set each: a thousand connections cost no thread each, and a round costs the
//! sockets that are ready, not every socket (a `poll` over 1000 sockets a few thousand times a
//! second took about a core of the 2-core machine, which the systems under test then lacked).
//!
//! The client is driven by lines on its standard input (`mark`, `report`, `stop`) and answers
//! with JSON lines on its standard output (see [`Report`]).

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::Receiver;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};

/// Bytes of one message.
pub const MSG_LEN: usize = 8;
/// Wait of the loops: the resolution of the send schedule and of the gap measure, and the
/// bound on the reaction to commands.
pub const POLL_MS: u16 = 1;
/// Readiness events taken per wait.
const EVENTS: usize = 1024;
/// The listener's key in the server's epoll set (connections use their slot).
const LISTENER: u64 = u64::MAX;

fn epoll_set() -> io::Result<Epoll> {
    Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(io::Error::from)
}

/// Waits at most [`POLL_MS`] for readiness; the keys of the ready sockets (an interrupted
/// wait is an empty round).
fn ready_keys(ep: &Epoll, events: &mut [EpollEvent], keys: &mut Vec<u64>) -> io::Result<()> {
    keys.clear();
    match ep.wait(events, POLL_MS) {
        Ok(n) => keys.extend(events[..n].iter().map(EpollEvent::data)),
        Err(nix::errno::Errno::EINTR) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(())
}

/// Serves echo on `listener` until `stop` is set. Returns the number of connections served.
pub fn echo_server(listener: TcpListener, stop: Arc<AtomicBool>) -> io::Result<u64> {
    listener.set_nonblocking(true)?;
    let ep = epoll_set()?;
    ep.add(&listener, EpollEvent::new(EpollFlags::EPOLLIN, LISTENER))?;
    // Slot per connection (a closed one is `None`; its fd left the set when it closed), and
    // the slots with echo bytes the socket did not take yet.
    let mut conns: Vec<Option<(TcpStream, Vec<u8>)>> = Vec::new();
    let mut pending: Vec<usize> = Vec::new();
    let mut served = 0u64;
    let mut buf = [0u8; 4096];
    let mut events = vec![EpollEvent::empty(); EVENTS];
    let mut keys = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        ready_keys(&ep, &mut events, &mut keys)?;
        for &k in &keys {
            if k == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((s, _)) => {
                            s.set_nonblocking(true)?;
                            s.set_nodelay(true)?;
                            let slot = conns.len();
                            ep.add(&s, EpollEvent::new(EpollFlags::EPOLLIN, slot as u64))?;
                            conns.push(Some((s, Vec::new())));
                            served += 1;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let slot = k as usize;
            let Some(Some((s, out))) = conns.get_mut(slot) else {
                continue;
            };
            let mut open = true;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => {
                        open = false;
                        break;
                    }
                    Ok(n) => out.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        open = false;
                        break;
                    }
                }
            }
            if open && !out.is_empty() {
                pending.push(slot);
            }
            if !open {
                conns[slot] = None;
            }
        }
        // Echo what was read (and what an earlier round could not write).
        pending.sort_unstable();
        pending.dedup();
        pending.retain(|&slot| {
            let Some((s, out)) = conns[slot].as_mut() else {
                return false;
            };
            while !out.is_empty() {
                match s.write(out) {
                    Ok(n) => {
                        out.drain(..n);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => {
                        conns[slot] = None;
                        return false;
                    }
                }
            }
            false
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

impl Conn {
    /// Records why the connection failed and closes it (which takes it out of the epoll set).
    fn fail(&mut self, why: String) {
        self.error = Some(why);
        self.s = None;
    }
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
    /// Every open connection, keyed by its index.
    ep: Epoll,
    /// Send slots handed out so far: slot `k` is connection `k % n`'s send number `k / n`,
    /// due `interval * (k % n) / n + interval * (k / n)` after the start (the sends of a
    /// round spread over the interval), so a round looks only at the slots now due.
    cursor: u64,
    /// Connections with bytes their socket did not take yet.
    unsent: Vec<usize>,
    events: Vec<EpollEvent>,
    keys: Vec<u64>,
}

/// How long a client tries again a connection its server refused while it starts (the
/// harness starts server and client apart; one started late refused the first connection).
pub const SERVER_START: Duration = Duration::from_secs(5);

impl Client {
    /// Opens `n` connections, the `i`th to `servers[i % servers.len()]` (several server
    /// ports let one client address hold more connections than its ephemeral ports), each
    /// within `connect_timeout`, and sets them non-blocking.
    pub fn connect(
        servers: &[SocketAddr],
        n: usize,
        interval: Duration,
        connect_timeout: Duration,
    ) -> io::Result<Self> {
        if servers.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no server address",
            ));
        }
        let mut conns = Vec::with_capacity(n);
        let now = Instant::now();
        let ep = epoll_set()?;
        // A server still starting refuses: tried again for at most this long.
        let refused_until = now + SERVER_START;
        for i in 0..n {
            let server = servers[i % servers.len()];
            let s = loop {
                match TcpStream::connect_timeout(&server, connect_timeout) {
                    Ok(s) => break s,
                    Err(e)
                        if e.kind() == io::ErrorKind::ConnectionRefused
                            && Instant::now() < refused_until =>
                    {
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => {
                        return Err(io::Error::new(
                            e.kind(),
                            format!("connection {i} of {n} to {server}: {e}"),
                        ))
                    }
                }
            };
            s.set_nonblocking(true)?;
            s.set_nodelay(true)?;
            ep.add(&s, EpollEvent::new(EpollFlags::EPOLLIN, i as u64))?;
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
            ep,
            cursor: 0,
            unsent: Vec::new(),
            events: vec![EpollEvent::empty(); EVENTS],
            keys: Vec::new(),
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
        ready_keys(&self.ep, &mut self.events, &mut self.keys)?;
        let now = Instant::now();
        let n = self.conns.len() as u64;
        if n == 0 {
            return Ok(());
        }
        // The send slots due by now, in order.
        let interval = self.interval.as_nanos();
        let elapsed = now.saturating_duration_since(started).as_nanos();
        loop {
            let (i, round) = (self.cursor % n, self.cursor / n);
            let due = interval * u128::from(i) / u128::from(n) + interval * u128::from(round);
            if due > elapsed {
                break;
            }
            self.cursor += 1;
            let c = &mut self.conns[i as usize];
            // At most 64 messages unanswered: a connection that stalls (a failover) does not
            // pile up more than that; its next slot tries again.
            if c.s.is_some() && c.next_send < c.next_expect + 64 {
                c.tx.extend_from_slice(&c.next_send.to_be_bytes());
                c.next_send += 1;
                self.unsent.push(i as usize);
            }
        }
        self.unsent.sort_unstable();
        self.unsent.dedup();
        let mut unsent = std::mem::take(&mut self.unsent);
        unsent.retain(|&i| {
            let c = &mut self.conns[i];
            let Some(s) = c.s.as_mut() else { return false };
            while !c.tx.is_empty() {
                match s.write(&c.tx) {
                    Ok(k) => {
                        c.tx.drain(..k);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return true,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        c.fail(format!("write: {e}"));
                        return false;
                    }
                }
            }
            false
        });
        self.unsent = unsent;
        let mut buf = [0u8; 4096];
        for k in 0..self.keys.len() {
            let i = self.keys[k] as usize;
            let Some(c) = self.conns.get_mut(i) else {
                continue;
            };
            let Some(s) = c.s.as_mut() else { continue };
            let mut fail: Option<String> = None;
            loop {
                match s.read(&mut buf) {
                    Ok(0) => fail = Some("closed by the peer".into()),
                    Ok(k) => c.rx.extend_from_slice(&buf[..k]),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => fail = Some(format!("read: {e}")),
                }
                if fail.is_some() {
                    break;
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
                c.fail(e);
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
        let mut c = Client::connect(
            &[addr],
            50,
            Duration::from_millis(20),
            Duration::from_secs(2),
        )
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
        let mut c = Client::connect(
            &[addr],
            3,
            Duration::from_millis(10),
            Duration::from_secs(2),
        )
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
