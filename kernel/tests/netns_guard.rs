//! The standby guard against the real kernel: a client namespace, a member namespace that
//! routes, and a server namespace, joined by veth pairs the test creates and removes. With the
//! guard set for a standby, a new TCP connection through the member is dropped while one
//! established before keeps working; set for an active member, new connections pass; removed,
//! its table is gone and removing it again is not an error. A member whose controller is
//! silent does not answer ICMP echo (the peer's liveness probe must not find it alive), and
//! answers again once told to. Needs root and `nft`: skipped with a message outside CI, a
//! failure in CI.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha_kernel::guard;

mod common;
use common::{can_run, in_ns, ip, namespaces};

/// A TCP connection from namespace `ns` to `to` with source address `src` (700 ms to
/// connect).
fn connect_from(ns: &str, src: std::net::Ipv4Addr, to: SocketAddr) -> Option<TcpStream> {
    use nix::sys::socket::{
        bind, connect, setsockopt, socket, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    use std::os::fd::AsRawFd;
    let SocketAddr::V4(to) = to else {
        return None;
    };
    in_ns(ns, move || {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Stream,
            SockFlag::empty(),
            None,
        )
        .ok()?;
        // A blocking connect gives up after the send timeout.
        let wait = nix::sys::time::TimeVal::new(0, 700_000);
        setsockopt(&fd, sockopt::SendTimeout, &wait).ok()?;
        let from = SockaddrIn::from(std::net::SocketAddrV4::new(src, 0));
        bind(fd.as_raw_fd(), &from).ok()?;
        connect(fd.as_raw_fd(), &SockaddrIn::from(to)).ok()?;
        Some(TcpStream::from(fd))
    })
}

fn connect(ns: &str, to: SocketAddr) -> Option<TcpStream> {
    in_ns(ns, move || {
        TcpStream::connect_timeout(&to, Duration::from_millis(700)).ok()
    })
}

/// One ICMP echo from namespace `ns` to `to` on a raw socket: true when answered within
/// 700 ms.
fn pinged(ns: &str, to: std::net::Ipv4Addr) -> bool {
    use nix::sys::socket::{
        recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol,
        SockType, SockaddrIn,
    };
    use std::os::fd::AsRawFd;
    in_ns(ns, move || {
        let fd = socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::empty(),
            SockProtocol::Icmp,
        )
        .expect("raw ICMP socket");
        setsockopt(
            &fd,
            sockopt::ReceiveTimeout,
            &nix::sys::time::TimeVal::new(0, 100_000),
        )
        .expect("timeout");
        // Echo request: type 8, code 0, checksum, id 0x4841, sequence 1, 8 bytes of data.
        let mut m = vec![8u8, 0, 0, 0, 0x48, 0x41, 0, 1];
        m.extend(b"ha-guard");
        let sum = m
            .chunks(2)
            .map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)])))
            .sum::<u32>();
        let sum = !(((sum & 0xffff) + (sum >> 16)) as u16);
        m[2..4].copy_from_slice(&sum.to_be_bytes());
        let dst = SockaddrIn::from(std::net::SocketAddrV4::new(to, 0));
        sendto(fd.as_raw_fd(), &m, &dst, MsgFlags::empty()).expect("send echo");
        let mut buf = [0u8; 256];
        for _ in 0..7 {
            if let Ok(n) = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                // IPv4 header (20 bytes), then an echo reply (type 0) with our id.
                if n >= 28 && buf[20] == 0 && buf[24..26] == [0x48, 0x41] {
                    return true;
                }
            }
        }
        false
    })
}

fn echoes(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .expect("timeout");
    let mut got = [0u8; 4];
    s.write_all(b"ping").is_ok() && s.read_exact(&mut got).is_ok() && &got == b"ping"
}

#[test]
fn a_standby_drops_new_connections_and_keeps_established_ones() {
    if !can_run("guard namespace", Some("nft")) {
        return;
    }
    let (_ns, names) = namespaces("hakg", &["c", "r", "s"]);
    let (nc, nr, ns) = (names[0].clone(), names[1].clone(), names[2].clone());
    ip(&[
        "-n", &nc, "link", "add", "c0", "type", "veth", "peer", "name", "r0", "netns", &nr,
    ]);
    ip(&[
        "-n", &ns, "link", "add", "s0", "type", "veth", "peer", "name", "r1", "netns", &nr,
    ]);
    for (n, dev, addr) in [
        (&nc, "c0", "10.31.1.2/24"),
        (&nr, "r0", "10.31.1.1/24"),
        (&nr, "r1", "10.31.2.1/24"),
        (&ns, "s0", "10.31.2.2/24"),
    ] {
        ip(&["-n", n, "addr", "add", addr, "dev", dev]);
        ip(&["-n", n, "link", "set", dev, "up"]);
    }
    ip(&["-n", &nc, "route", "add", "default", "via", "10.31.1.1"]);
    ip(&["-n", &ns, "route", "add", "default", "via", "10.31.2.1"]);
    let st = Command::new("ip")
        .args([
            "netns",
            "exec",
            &nr,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ])
        .status()
        .expect("sysctl");
    assert!(st.success());

    // Echo server in the server namespace; stops when the flag drops (bounded waits).
    let stop = Arc::new(AtomicBool::new(false));
    let listener = in_ns(&ns, || TcpListener::bind("10.31.2.2:5000").expect("bind"));
    listener.set_nonblocking(true).expect("nonblocking");
    let flag = stop.clone();
    let server = std::thread::spawn(move || {
        let mut conns = Vec::new();
        while !flag.load(Ordering::Relaxed) {
            if let Ok((s, _)) = listener.accept() {
                let _ = s.set_nonblocking(false);
                conns.push(std::thread::spawn(move || {
                    let mut s = s;
                    let mut b = [0u8; 64];
                    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                    while let Ok(n) = s.read(&mut b) {
                        if n == 0 || s.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                }));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(conns);
    });
    let to: SocketAddr = "10.31.2.2:5000".parse().unwrap();

    in_ns(&nr, || guard::set(false)).expect("guard for an active member");
    let mut before = connect(&nc, to).expect("an active member forwards new connections");
    assert!(echoes(&mut before));

    in_ns(&nr, || guard::set(true)).expect("guard for a standby");
    assert!(
        connect(&nc, to).is_none(),
        "a standby let a new connection through"
    );
    assert!(
        echoes(&mut before),
        "the standby dropped an established connection"
    );

    in_ns(&nr, || guard::set(false)).expect("guard for an active member again");
    let mut after = connect(&nc, to).expect("new connections pass again");
    assert!(echoes(&mut after));

    // The peer's liveness probe: answered by a member whose controller speaks, not by one
    // whose controller is silent (its daemon must not look alive for it).
    let member: std::net::Ipv4Addr = "10.31.1.1".parse().unwrap();
    let probes = |answer_probes| guard::Guard {
        standby: true,
        shared: Vec::new(),
        answer_probes,
    };
    in_ns(&nr, move || guard::set_guard(&probes(true))).expect("guard");
    assert!(
        pinged(&nc, member),
        "a member with a live controller did not answer"
    );
    in_ns(&nr, move || guard::set_guard(&probes(false))).expect("guard");
    assert!(
        !pinged(&nc, member),
        "a member with a silent controller answered the probe"
    );
    in_ns(&nr, move || guard::set_guard(&probes(true))).expect("guard");
    assert!(
        pinged(&nc, member),
        "answers again once its controller speaks"
    );

    // Load sharing: the client's second address (10.31.1.50) is in another domain's
    // network (10.31.1.48/28); the first (10.31.1.2) is the main domain's. Each guard drops
    // the new connections of the domain the member is standby for and passes the other's.
    ip(&["-n", &nc, "addr", "add", "10.31.1.50/24", "dev", "c0"]);
    let (main_host, other_host) = ("10.31.1.2".parse().unwrap(), "10.31.1.50".parse().unwrap());
    let sharing = |standby, other_standby| guard::Guard {
        standby,
        shared: vec![("10.31.1.48/28".parse().unwrap(), other_standby)],
        answer_probes: true,
    };
    in_ns(&nr, move || guard::set_guard(&sharing(false, true))).expect("guard");
    let mut main_conn = connect_from(&nc, main_host, to)
        .expect("active for the main domain: its new connections pass");
    assert!(echoes(&mut main_conn));
    assert!(
        connect_from(&nc, other_host, to).is_none(),
        "standby for the other domain: its new connection passed"
    );
    in_ns(&nr, move || guard::set_guard(&sharing(true, false))).expect("guard");
    let mut other_conn = connect_from(&nc, other_host, to)
        .expect("active for the other domain: its new connections pass");
    assert!(echoes(&mut other_conn));
    assert!(
        connect_from(&nc, main_host, to).is_none(),
        "standby for the main domain: its new connection passed"
    );
    assert!(
        echoes(&mut main_conn),
        "the main domain's established connection was dropped"
    );

    in_ns(&nr, guard::remove).expect("remove");
    let listed = in_ns(&nr, || {
        Command::new("nft")
            .args(["list", "table", "inet", guard::TABLE])
            .output()
            .expect("nft")
            .status
            .success()
    });
    assert!(!listed, "the guard's table is still there");
    in_ns(&nr, guard::remove).expect("removing again is not an error");

    stop.store(true, Ordering::Relaxed);
    drop((before, after, main_conn, other_conn));
    server.join().expect("server");
}
