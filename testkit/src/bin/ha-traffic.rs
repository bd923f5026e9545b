//! `ha-traffic`: the TCP load of the failover test (see `ha_testkit::traffic`).
//!
//! ```text
//! ha-traffic server --listen 10.2.0.1:5001
//! ha-traffic client --connect 10.2.0.1:5001 --connections 1000 --interval-ms 100
//! ha-traffic ftp-server --listen 10.2.0.1:21
//! ha-traffic ftp-client --connect 10.2.0.1:21 --data-ip 10.1.0.1 --connections 1000
//! ha-traffic first-forwarded --iface in --iface out --wait-s 60
//! ha-traffic transit --at NETNS:br0 --at NETNS:br0
//! ```
//! The client reads `mark`, `report`, `stop` lines on stdin and prints `ready` and JSON
//! reports on stdout.

use std::io::BufRead;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc};
use std::time::Duration;

use clap::{Parser, Subcommand};
use ha_testkit::ftp::{ftp_server, FtpClient};
use ha_testkit::traffic::{echo_server, parse_command, Client, Command};

#[derive(Parser)]
#[command(name = "ha-traffic", about = "TCP echo load for the failover test")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Echo every byte back, on every connection, until killed.
    Server {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// Listen on this many consecutive ports from the address's.
        #[arg(long, default_value_t = 1)]
        ports: u16,
    },
    /// Keep N connections busy; commands on stdin, reports on stdout.
    Client {
        /// Server address.
        #[arg(long)]
        connect: SocketAddr,
        /// Spread the connections over this many consecutive server ports.
        #[arg(long, default_value_t = 1)]
        ports: u16,
        /// Number of connections.
        #[arg(long, default_value_t = 100)]
        connections: usize,
        /// Each connection sends one message per interval, ms.
        #[arg(long, default_value_t = 100)]
        interval_ms: u64,
    },
    /// Serve FTP-shaped sessions (PORT, RETR over an active-mode data connection).
    FtpServer {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Open N FTP sessions announcing their data ports; each `report` on stdin runs one
    /// transfer per session and prints a JSON report.
    FtpClient {
        /// Server address.
        #[arg(long)]
        connect: SocketAddr,
        /// This client's address for the data connections.
        #[arg(long)]
        data_ip: IpAddr,
        /// Number of sessions.
        #[arg(long, default_value_t = 100)]
        connections: usize,
    },
    /// Print the wall-clock time (unix ms) of the first TCP packet this network namespace
    /// sends out of one of the interfaces (a forwarded packet, on a router that has no TCP
    /// connection of its own there), then exit; prints `listening` once ready, and before
    /// the forwarded packet the time of the first gratuitous ARP sent out of one of them
    /// (`first_garp_unix_ms`), if one comes first.
    FirstForwarded {
        /// Interfaces to watch.
        #[arg(long = "iface", required = true)]
        ifaces: Vec<String>,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 60)]
        wait_s: u64,
    },
    /// Time each TCP segment with data from the interface it left by to the interface it
    /// arrived on (see `ha_testkit::transit`); prints `listening` once every watcher runs,
    /// then reads `mark` (a new window), `report` (the window as JSON: `packets`, `max_us`
    /// (a segment of the window still on its way counted with its age so far), `lost`) and
    /// `stop` on stdin.
    Transit {
        /// Where to watch, `NETNS:IFACE` (NETNS a name under /var/run/netns, `-` for this
        /// process's namespace); the two ends of the path, e.g. the client's and the
        /// server's interface.
        #[arg(long = "at", required = true)]
        at: Vec<String>,
    },
}

/// See [`Cmd::Transit`].
fn transit(at: &[String]) -> std::io::Result<()> {
    use ha_testkit::transit::{capture, Transit};
    let t = Arc::new(std::sync::Mutex::new(Transit::default()));
    for a in at {
        let (ns, iface) = a.split_once(':').ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("--at {a}: expected NETNS:IFACE"),
            )
        })?;
        // The watcher threads end with the process.
        drop(capture::watch(ns, iface, t.clone())?);
    }
    println!("listening");
    for line in std::io::stdin().lock().lines() {
        let line = line?;
        let now = capture::now_ns();
        let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
        match line.trim() {
            "mark" => t.mark(now),
            "report" => {
                t.expire(now);
                let w = t.window_at(now);
                println!(
                    "{{\"packets\":{},\"max_us\":{},\"lost\":{}}}",
                    w.packets, w.max_us, w.lost
                );
            }
            "stop" => break,
            _ => {}
        }
    }
    Ok(())
}

/// The consecutive `n` addresses from `a`'s port.
fn port_range(a: SocketAddr, n: u16) -> Vec<SocketAddr> {
    (0..n.max(1))
        .map(|i| SocketAddr::new(a.ip(), a.port().wrapping_add(i)))
        .collect()
}

/// Raises the open-file limit to `want` (the hard limit too when the process may: root),
/// so one process can hold 100,000 connections.
fn raise_nofile(want: u64) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE) else {
        return;
    };
    if soft >= want {
        return;
    }
    if setrlimit(Resource::RLIMIT_NOFILE, want, want.max(hard)).is_err() {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// True for a gratuitous ARP (request or reply whose sender and target IPv4 addresses are
/// the same: an address announcing where it now lives) in Ethernet frame `f` of EtherType
/// `proto`.
fn is_gratuitous_arp(proto: u16, f: &[u8]) -> bool {
    // Ethernet header 14 bytes; ARP for IPv4 over Ethernet: sender IP at 14 + 14, target IP
    // at 14 + 24.
    proto == 0x0806 && f.len() >= 42 && f[16..18] == [0x08, 0x00] && f[28..32] == f[38..42]
}

/// See [`Cmd::FirstForwarded`].
fn first_forwarded(ifaces: &[String], wait: Duration) -> std::io::Result<()> {
    use nix::sys::socket::{
        recvfrom, setsockopt, socket, sockopt, AddressFamily, LinkAddr, SockFlag, SockProtocol,
        SockType,
    };
    use std::os::fd::AsRawFd;
    /// `PACKET_OUTGOING`: a packet this host sent.
    const PACKET_OUTGOING: u8 = 4;
    let watch: Vec<u32> = ifaces
        .iter()
        .map(|i| nix::net::if_::if_nametoindex(i.as_str()).map_err(std::io::Error::from))
        .collect::<std::io::Result<_>>()?;
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::EthAll,
    )?;
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(0, 100_000),
    )?;
    println!("listening");
    let end = std::time::Instant::now() + wait;
    let mut buf = [0u8; 128];
    let mut garp_seen = false;
    while std::time::Instant::now() < end {
        let (n, from) = match recvfrom::<LinkAddr>(fd.as_raw_fd(), &mut buf) {
            Ok(x) => x,
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        };
        let Some(from) = from else { continue };
        // `sll_protocol` is in network order; Ethernet header (14 bytes), then the IPv4
        // protocol field at offset 9 of the IP header.
        let ours = from.pkttype() == PACKET_OUTGOING && watch.contains(&(from.ifindex() as u32));
        if ours && !garp_seen && is_gratuitous_arp(u16::from_be(from.protocol()), &buf[..n]) {
            garp_seen = true;
            println!(
                "{{\"first_garp_unix_ms\":{},\"ifindex\":{}}}",
                unix_ms(),
                from.ifindex()
            );
        }
        let tcp_v4 = u16::from_be(from.protocol()) == 0x0800 && n > 23 && buf[23] == 6;
        if ours && tcp_v4 {
            println!(
                "{{\"first_forwarded_unix_ms\":{},\"ifindex\":{}}}",
                unix_ms(),
                from.ifindex()
            );
            return Ok(());
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no forwarded TCP packet",
    ))
}

/// Forwards the commands read on stdin to `tx` (a `stop` when stdin closes).
fn read_commands(tx: mpsc::Sender<Command>) {
    for line in std::io::stdin().lock().lines() {
        let Ok(line) = line else { break };
        if let Some(cmd) = parse_command(&line) {
            if tx.send(cmd).is_err() {
                return;
            }
        }
    }
    // Standard input closed: end the run.
    let _ = tx.send(Command::Stop);
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Server { listen, ports } => {
            raise_nofile(200_000);
            port_range(listen, ports)
                .into_iter()
                .map(TcpListener::bind)
                .collect::<std::io::Result<Vec<_>>>()
                .and_then(|ls| {
                    println!("listening {listen} (+{} ports)", ls.len() - 1);
                    let handles: Vec<_> = ls
                        .into_iter()
                        .map(|l| {
                            std::thread::spawn(move || {
                                echo_server(l, Arc::new(AtomicBool::new(false))).map(|_| ())
                            })
                        })
                        .collect();
                    for h in handles {
                        h.join().unwrap_or_else(|_| {
                            Err(std::io::Error::other("echo thread panicked"))
                        })?;
                    }
                    Ok(())
                })
        }
        Cmd::Client {
            connect,
            ports,
            connections,
            interval_ms,
        } => Client::connect(
            &{
                raise_nofile(connections as u64 + 1_000);
                port_range(connect, ports)
            },
            connections,
            Duration::from_millis(interval_ms.max(1)),
            Duration::from_secs(5),
        )
        .and_then(|mut c| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || read_commands(tx));
            c.run(rx, &mut std::io::stdout().lock()).map(|_| ())
        }),
        Cmd::FtpServer { listen } => TcpListener::bind(listen).and_then(|l| {
            println!("listening {listen}");
            ftp_server(l)
        }),
        Cmd::FtpClient {
            connect,
            data_ip,
            connections,
        } => FtpClient::connect(connect, data_ip, {
            raise_nofile(2 * connections as u64 + 1_000);
            connections
        })
        .and_then(|mut c| {
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || read_commands(tx));
            c.run(rx, &mut std::io::stdout().lock())
        }),
        Cmd::FirstForwarded { ifaces, wait_s } => {
            first_forwarded(&ifaces, Duration::from_secs(wait_s))
        }
        Cmd::Transit { at } => transit(&at),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ha-traffic: {e}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_gratuitous_arp;

    /// An ARP frame (Ethernet + ARP for IPv4) with sender `spa` and target `tpa`.
    fn arp(spa: [u8; 4], tpa: [u8; 4]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend([2, 0, 0, 0, 0, 1, 0x08, 0x06]);
        f.extend([0, 1, 0x08, 0x00, 6, 4, 0, 1]);
        f.extend([2, 0, 0, 0, 0, 1]);
        f.extend(spa);
        f.extend([0; 6]);
        f.extend(tpa);
        f
    }

    #[test]
    fn only_an_announcement_of_ones_own_address_is_a_gratuitous_arp() {
        assert!(is_gratuitous_arp(
            0x0806,
            &arp([10, 1, 0, 1], [10, 1, 0, 1])
        ));
        // A question about another host is not an announcement.
        assert!(!is_gratuitous_arp(
            0x0806,
            &arp([10, 1, 0, 1], [10, 1, 0, 10])
        ));
        // Not ARP, or cut short.
        assert!(!is_gratuitous_arp(
            0x0800,
            &arp([10, 1, 0, 1], [10, 1, 0, 1])
        ));
        assert!(!is_gratuitous_arp(
            0x0806,
            &arp([10, 1, 0, 1], [10, 1, 0, 1])[..41]
        ));
    }
}
