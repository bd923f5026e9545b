//! An FTP-shaped load for the kernel data path's failover test: control connections that
//! announce an active-mode data connection (`PORT`), a crash, then the data connections,
//! opened by the server towards the client *after* the failover. A stateful firewall admits
//! such a connection from the outside only as `related` to an expectation its FTP helper
//! made from the `PORT` command: the survivor must have the expectation from the state sync.
//!
//! Only what the kernel's FTP helper reads is FTP here (the `PORT` command in the client's
//! direction, which it reads only at a line start it has seen: after a first line, so the
//! client logs in with `USER` first, as real clients do); the rest is the smallest protocol
//! that checks the transfer: `RETR` → `150`, the data connection, `226` (or `425` when the
//! server could not connect).
//!
//! One extra control connection announces its data port with `XPRT`, which no helper reads:
//! its data connection has no expectation and must be refused by the firewall. It proves the
//! firewall admits nothing from the outside that it was not told to expect.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use crate::traffic::{Command, Report};

/// How long the server tries to open a data connection.
pub const DATA_CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the client waits for one transfer (RETR → data → 226).
pub const TRANSFER_TIMEOUT: Duration = Duration::from_secs(10);
/// Stack of the per-connection threads (they hold a line buffer and a few sockets).
const STACK: usize = 64 * 1024;

/// The `PORT` argument of `addr`: `h1,h2,h3,h4,p1,p2`.
pub fn port_arg(addr: SocketAddr) -> Option<String> {
    let IpAddr::V4(ip) = addr.ip() else {
        return None;
    };
    let [a, b, c, d] = ip.octets();
    let [p1, p2] = addr.port().to_be_bytes();
    Some(format!("{a},{b},{c},{d},{p1},{p2}"))
}

/// The address a `PORT` argument names.
pub fn parse_port_arg(s: &str) -> Option<SocketAddr> {
    let n: Vec<u8> = s
        .trim()
        .split(',')
        .map(|x| x.trim().parse().ok())
        .collect::<Option<_>>()?;
    let [a, b, c, d, p1, p2] = n[..] else {
        return None;
    };
    Some(SocketAddr::new(
        IpAddr::V4(Ipv4Addr::new(a, b, c, d)),
        u16::from_be_bytes([p1, p2]),
    ))
}

/// Serves one control connection until it closes.
fn serve(ctl: TcpStream) -> io::Result<()> {
    let mut w = ctl.try_clone()?;
    let mut r = BufReader::new(ctl);
    w.write_all(b"220 ha-traffic ftp\r\n")?;
    let mut data: Option<SocketAddr> = None;
    let mut line = String::new();
    loop {
        line.clear();
        if r.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let (verb, arg) = line
            .trim_end()
            .split_once(' ')
            .unwrap_or((line.trim_end(), ""));
        match verb {
            "PORT" | "XPRT" => match parse_port_arg(arg) {
                Some(a) => {
                    data = Some(a);
                    w.write_all(b"200 PORT command successful\r\n")?;
                }
                None => w.write_all(b"501 bad PORT argument\r\n")?,
            },
            "RETR" => {
                let Some(to) = data else {
                    w.write_all(b"503 PORT first\r\n")?;
                    continue;
                };
                w.write_all(b"150 opening data connection\r\n")?;
                let sent =
                    TcpStream::connect_timeout(&to, DATA_CONNECT_TIMEOUT).and_then(|mut d| {
                        d.write_all(format!("data of {arg}\n").as_bytes())?;
                        d.shutdown(Shutdown::Write)
                    });
                match sent {
                    Ok(()) => w.write_all(b"226 transfer complete\r\n")?,
                    Err(_) => w.write_all(b"425 cannot open data connection\r\n")?,
                }
            }
            "USER" => w.write_all(b"230 logged in\r\n")?,
            "QUIT" => {
                w.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => w.write_all(b"502 not implemented\r\n")?,
        }
    }
}

/// Accepts control connections until the listener fails; one thread each.
pub fn ftp_server(listener: TcpListener) -> io::Result<()> {
    loop {
        let (s, _) = listener.accept()?;
        thread::Builder::new()
            .stack_size(STACK)
            .spawn(move || serve(s))?;
    }
}

/// One control connection of the client and the listener of its data connection.
struct Session {
    ctl: BufReader<TcpStream>,
    data: TcpListener,
}

fn reply(r: &mut BufReader<TcpStream>) -> io::Result<String> {
    let mut l = String::new();
    if r.read_line(&mut l)? == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "control connection closed",
        ));
    }
    Ok(l.trim_end().to_string())
}

fn expect_code(r: &mut BufReader<TcpStream>, code: &str) -> io::Result<()> {
    let l = reply(r)?;
    if l.starts_with(code) {
        Ok(())
    } else {
        Err(io::Error::other(format!("expected {code}, got {l:?}")))
    }
}

impl Session {
    /// Opens a control connection to `server` and announces a data port on `data_ip` with
    /// `verb` (`PORT`, read by the helper; `XPRT`, read by nobody).
    fn open(server: SocketAddr, data_ip: IpAddr, verb: &str) -> io::Result<Session> {
        let data = TcpListener::bind(SocketAddr::new(data_ip, 0))?;
        let s = TcpStream::connect_timeout(&server, Duration::from_secs(5))?;
        s.set_read_timeout(Some(TRANSFER_TIMEOUT))?;
        let mut w = s.try_clone()?;
        let mut ctl = BufReader::new(s);
        expect_code(&mut ctl, "220")?;
        // The helper reads a command only where it saw the line before end: never the first.
        w.write_all(b"USER anonymous\r\n")?;
        expect_code(&mut ctl, "230")?;
        let arg = port_arg(data.local_addr()?).ok_or_else(|| io::Error::other("IPv6 data"))?;
        w.write_all(format!("{verb} {arg}\r\n").as_bytes())?;
        expect_code(&mut ctl, "200")?;
        Ok(Session { ctl, data })
    }

    /// Asks for file `name` and receives it on the data connection; the time it took.
    fn transfer(&mut self, name: &str) -> io::Result<Duration> {
        let t0 = Instant::now();
        self.ctl
            .get_mut()
            .write_all(format!("RETR {name}\r\n").as_bytes())?;
        expect_code(&mut self.ctl, "150")?;
        self.data.set_nonblocking(true)?;
        // The server's 226 came before the data connection was in our accept queue.
        let mut finished = false;
        let mut conn = loop {
            match self.data.accept() {
                Ok((c, _)) => break c,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if t0.elapsed() > TRANSFER_TIMEOUT {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no data connection",
                        ));
                    }
                    // The server may have given up (425) already. Or it may have finished
                    // (226): its connect returned once our SYN-ACK reached it, and its last
                    // handshake ACK can reach us after the 226 on the control connection
                    // (two flows, two CPUs' backlogs: 1 transfer in ~2,000 on this
                    // machine). Then the data connection is still coming: keep waiting.
                    if !finished && self.reply_waiting()? {
                        let l = reply(&mut self.ctl)?;
                        if !l.starts_with("226") {
                            return Err(io::Error::other(format!("no data connection: {l}")));
                        }
                        finished = true;
                    }
                    thread::sleep(Duration::from_millis(5));
                }
                Err(e) => return Err(e),
            }
        };
        conn.set_nonblocking(false)?;
        conn.set_read_timeout(Some(TRANSFER_TIMEOUT))?;
        let mut got = String::new();
        conn.read_to_string(&mut got)?;
        if got != format!("data of {name}\n") {
            return Err(io::Error::other(format!("wrong data {got:?}")));
        }
        if !finished {
            expect_code(&mut self.ctl, "226")?;
        }
        Ok(t0.elapsed())
    }

    /// A reply is waiting on the control connection (without reading it).
    fn reply_waiting(&mut self) -> io::Result<bool> {
        if !self.ctl.buffer().is_empty() {
            return Ok(true);
        }
        let s = self.ctl.get_ref();
        s.set_nonblocking(true)?;
        let mut b = [0u8; 1];
        let peek = s.peek(&mut b);
        s.set_nonblocking(false)?;
        match peek {
            Ok(n) => Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// The FTP load client: `connections` sessions announced with `PORT`, one with `XPRT`.
pub struct FtpClient {
    sessions: Vec<Session>,
    probe: Session,
}

/// What one round of transfers found: the [`Report`] of the load (a transfer that worked is
/// a surviving connection; `gap_ms` is the longest transfer) and whether the unannounced
/// data connection got through.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FtpReport {
    /// The transfers.
    #[serde(flatten)]
    pub load: Report,
    /// The data connection without an expectation was admitted (must be false).
    pub unexpected_admitted: bool,
}

impl FtpClient {
    /// Opens the sessions (a few at a time would not be faster: each is two round trips).
    pub fn connect(server: SocketAddr, data_ip: IpAddr, connections: usize) -> io::Result<Self> {
        let sessions = (0..connections)
            .map(|_| Session::open(server, data_ip, "PORT"))
            .collect::<io::Result<Vec<_>>>()?;
        let probe = Session::open(server, data_ip, "XPRT")?;
        Ok(FtpClient { sessions, probe })
    }

    /// Runs every transfer at once (one thread per session) and reports.
    pub fn transfers(&mut self) -> FtpReport {
        let probe = &mut self.probe;
        let (results, admitted) = thread::scope(|sc| {
            let handles: Vec<_> = self
                .sessions
                .iter_mut()
                .enumerate()
                .map(|(i, s)| {
                    thread::Builder::new()
                        .stack_size(STACK)
                        .spawn_scoped(sc, move || s.transfer(&format!("file-{i}")))
                })
                .collect();
            let admitted = probe.transfer("unannounced").is_ok();
            let results: Vec<io::Result<Duration>> = handles
                .into_iter()
                .map(|h| match h {
                    Ok(h) => h
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("transfer thread panicked"))),
                    Err(e) => Err(e),
                })
                .collect();
            (results, admitted)
        });
        let mut times: Vec<u64> = results
            .iter()
            .filter_map(|r| r.as_ref().ok().map(|d| d.as_millis() as u64))
            .collect();
        times.sort_unstable();
        let first_error = results
            .iter()
            .find_map(|r| r.as_ref().err().map(|e| e.to_string()));
        FtpReport {
            load: Report {
                connections: self.sessions.len(),
                survived: times.len(),
                failed: self.sessions.len() - times.len(),
                gap_ms: times.last().copied().unwrap_or(0),
                gap_p50_ms: times.get(times.len() / 2).copied().unwrap_or(0),
                messages: times.len() as u64,
                first_error,
            },
            unexpected_admitted: admitted,
        }
    }

    /// Prints `ready`, then for each `report` runs the transfers and prints an [`FtpReport`]
    /// line; `mark` changes nothing (the transfers start at the report); ends at `stop`.
    pub fn run(&mut self, commands: Receiver<Command>, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "ready")?;
        out.flush()?;
        for cmd in commands {
            match cmd {
                Command::Mark => {}
                Command::Report => {
                    writeln!(out, "{}", serde_json::to_string(&self.transfers())?)?;
                    out.flush()?;
                }
                Command::Stop => return Ok(()),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_arguments_round_trip_and_bad_ones_are_refused() {
        let a: SocketAddr = "10.1.0.1:50000".parse().unwrap();
        assert_eq!(port_arg(a).as_deref(), Some("10,1,0,1,195,80"));
        assert_eq!(parse_port_arg("10,1,0,1,195,80"), Some(a));
        for bad in [
            "",
            "10,1,0,1,195",
            "10,1,0,1,195,80,1",
            "10,1,0,1,300,1",
            "a,b,c,d,e,f",
        ] {
            assert_eq!(parse_port_arg(bad), None, "{bad:?}");
        }
        assert_eq!(port_arg("[::1]:21".parse().unwrap()), None);
    }

    /// On loopback (no firewall): every transfer works, including the unannounced one; a
    /// stopped server fails them all.
    #[test]
    fn transfers_work_on_loopback_and_fail_without_a_server() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = l.local_addr().unwrap();
        thread::spawn(move || ftp_server(l));
        let mut c = FtpClient::connect(server, "127.0.0.1".parse().unwrap(), 5).unwrap();
        let r = c.transfers();
        assert_eq!((r.load.survived, r.load.connections), (5, 5), "{r:?}");
        assert!(r.unexpected_admitted, "no firewall here: it gets through");
        // A second round works too (a fresh data connection each time).
        assert_eq!(c.transfers().load.survived, 5);
        // Data listeners closed: the server cannot connect, says 425.
        for s in &mut c.sessions {
            s.data = TcpListener::bind("127.0.0.1:0").unwrap();
        }
        let r = c.transfers();
        assert_eq!(r.load.survived, 0, "{r:?}");
        assert!(r.load.first_error.unwrap().contains("425"));
    }

    /// The server's 226 can reach the client before the data connection is in its accept
    /// queue (the handshake's last ACK and the reply take different paths): the transfer
    /// still counts once the data arrives. A 425 is still a failure.
    #[test]
    fn a_226_before_the_data_connection_is_not_a_failure() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let server = l.local_addr().unwrap();
        thread::spawn(move || {
            for (i, answer) in ["226 transfer complete", "425 cannot open"]
                .iter()
                .enumerate()
            {
                let (ctl, _) = l.accept().unwrap();
                let mut w = ctl.try_clone().unwrap();
                let mut r = BufReader::new(ctl);
                let mut line = String::new();
                w.write_all(b"220 hi\r\n").unwrap();
                r.read_line(&mut line).unwrap(); // USER
                w.write_all(b"230 ok\r\n").unwrap();
                line.clear();
                r.read_line(&mut line).unwrap(); // PORT
                let to = parse_port_arg(line.trim_end().split_once(' ').unwrap().1).unwrap();
                w.write_all(b"200 ok\r\n").unwrap();
                line.clear();
                r.read_line(&mut line).unwrap(); // RETR
                                                 // The reply first, the data connection 100 ms later.
                w.write_all(format!("150 opening\r\n{answer}\r\n").as_bytes())
                    .unwrap();
                if i == 0 {
                    thread::sleep(Duration::from_millis(100));
                    let mut d = TcpStream::connect(to).unwrap();
                    d.write_all(b"data of f\n").unwrap();
                }
            }
        });
        let ip = "127.0.0.1".parse().unwrap();
        let mut late = Session::open(server, ip, "PORT").unwrap();
        assert!(late.transfer("f").is_ok());
        let mut refused = Session::open(server, ip, "PORT").unwrap();
        let e = refused.transfer("f").unwrap_err().to_string();
        assert!(e.contains("425"), "{e}");
    }
}
