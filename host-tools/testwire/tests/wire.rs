//! The test wire on loopback with plain UDP sockets standing in for QEMU members.

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ha_testwire::{Client, Impair, LinkKind, Wire, WireConfig};

struct Members {
    main: Vec<UdpSocket>,
    backup: Vec<UdpSocket>,
}

fn members(n: usize) -> (Members, WireConfig) {
    let bind = || {
        let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        s
    };
    let m = Members {
        main: (0..n).map(|_| bind()).collect(),
        backup: (0..n).map(|_| bind()).collect(),
    };
    let cfg = WireConfig {
        main: m
            .main
            .iter()
            .map(|s| s.local_addr().expect("addr"))
            .collect(),
        backup: m
            .backup
            .iter()
            .map(|s| s.local_addr().expect("addr"))
            .collect(),
    };
    (m, cfg)
}

fn send(wire: &Wire, socks: &[UdpSocket], link: LinkKind, from: usize, what: &[u8]) {
    let port = wire.wire_port(link, from).expect("wire port");
    socks[from]
        .send_to(what, ("127.0.0.1", port))
        .expect("send");
}

/// Receives one datagram, checking it comes from the receiver's own wire port.
fn recv(wire: &Wire, socks: &[UdpSocket], link: LinkKind, to: usize) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    let (len, from) = socks[to].recv_from(&mut buf).ok()?;
    assert_eq!(
        Some(from.port()),
        wire.wire_port(link, to),
        "sent from the wrong port"
    );
    Some(buf[..len].to_vec())
}

#[test]
fn hub_repeats_to_every_other_member() {
    let (m, cfg) = members(3);
    let wire = Wire::start(&cfg).expect("wire");
    send(&wire, &m.main, LinkKind::Main, 0, b"frame");
    assert_eq!(
        recv(&wire, &m.main, LinkKind::Main, 1).as_deref(),
        Some(&b"frame"[..])
    );
    assert_eq!(
        recv(&wire, &m.main, LinkKind::Main, 2).as_deref(),
        Some(&b"frame"[..])
    );
    // Not echoed to the sender, and links are separate hubs.
    assert_eq!(recv(&wire, &m.main, LinkKind::Main, 0), None);
    assert_eq!(recv(&wire, &m.backup, LinkKind::Backup, 1), None);
    send(&wire, &m.backup, LinkKind::Backup, 2, b"\x01");
    assert_eq!(
        recv(&wire, &m.backup, LinkKind::Backup, 0).as_deref(),
        Some(&b"\x01"[..])
    );
}

#[test]
fn cut_is_per_direction_and_per_link_and_restores() {
    let (m, cfg) = members(2);
    let wire = Wire::start(&cfg).expect("wire");
    wire.set(
        Some(LinkKind::Main),
        Some(0),
        Some(1),
        Impair {
            cut: true,
            ..Impair::default()
        },
    )
    .expect("cut");
    send(&wire, &m.main, LinkKind::Main, 0, b"a");
    assert_eq!(recv(&wire, &m.main, LinkKind::Main, 1), None);
    send(&wire, &m.main, LinkKind::Main, 1, b"b");
    assert_eq!(
        recv(&wire, &m.main, LinkKind::Main, 0).as_deref(),
        Some(&b"b"[..])
    );
    send(&wire, &m.backup, LinkKind::Backup, 0, b"c");
    assert_eq!(
        recv(&wire, &m.backup, LinkKind::Backup, 1).as_deref(),
        Some(&b"c"[..])
    );
    let stats = wire.stats();
    let d = stats
        .iter()
        .find(|d| d.link == LinkKind::Main && d.from == 0 && d.to == 1)
        .expect("direction");
    assert_eq!(d.stats.dropped_cut, 1);
    wire.set(None, None, None, Impair::default())
        .expect("restore");
    send(&wire, &m.main, LinkKind::Main, 0, b"d");
    assert_eq!(
        recv(&wire, &m.main, LinkKind::Main, 1).as_deref(),
        Some(&b"d"[..])
    );
}

#[test]
fn loss_drops_about_the_asked_share() {
    let (m, cfg) = members(2);
    let wire = Wire::start(&cfg).expect("wire");
    wire.set(
        Some(LinkKind::Main),
        Some(0),
        Some(1),
        Impair {
            loss_pct: 50.0,
            ..Impair::default()
        },
    )
    .expect("loss");
    const N: usize = 400;
    for i in 0..N {
        send(&wire, &m.main, LinkKind::Main, 0, &(i as u32).to_le_bytes());
        if i % 10 == 9 {
            // Paced so that no socket queue overflows on a loaded machine.
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    let mut got = 0;
    while got < N && recv(&wire, &m.main, LinkKind::Main, 1).is_some() {
        got += 1;
    }
    let stats = wire.stats();
    let d = stats
        .iter()
        .find(|d| d.link == LinkKind::Main && d.from == 0 && d.to == 1)
        .expect("direction");
    assert_eq!(d.stats.forwarded + d.stats.dropped_loss, N as u64);
    assert_eq!(
        got as u64, d.stats.forwarded,
        "forwarded datagrams went missing"
    );
    // Binomial(400, 0.5): 200 ± 40 is beyond four standard deviations.
    assert!(
        (160..=240).contains(&got),
        "{got} of {N} delivered at 50% loss"
    );
}

#[test]
fn delay_and_jitter_keep_order() {
    let (m, cfg) = members(2);
    let wire = Wire::start(&cfg).expect("wire");
    wire.set(
        Some(LinkKind::Backup),
        Some(0),
        Some(1),
        Impair {
            delay_ms: 100,
            jitter_ms: 50,
            ..Impair::default()
        },
    )
    .expect("delay");
    let start = Instant::now();
    for b in 0u8..50 {
        send(&wire, &m.backup, LinkKind::Backup, 0, &[b]);
    }
    // The backup link may gather bytes into chunks: the byte stream must come out whole and
    // in order.
    let mut stream = Vec::new();
    while stream.len() < 50 {
        stream.extend(recv(&wire, &m.backup, LinkKind::Backup, 1).expect("delivered"));
    }
    assert_eq!(stream, (0u8..50).collect::<Vec<_>>(), "reordered or lost");
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(100),
        "delay not applied: {took:?}"
    );
    // The reverse direction is not delayed.
    let start = Instant::now();
    send(&wire, &m.backup, LinkKind::Backup, 1, b"x");
    assert!(recv(&wire, &m.backup, LinkKind::Backup, 0).is_some());
    assert!(start.elapsed() < Duration::from_millis(100));
}

#[test]
fn control_socket_speaks_json_lines() {
    let (m, cfg) = members(2);
    let dir = std::env::temp_dir().join(format!("ha-testwire-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("wire.sock");
    let mut wire = Wire::start(&cfg).expect("wire");
    wire.set_control_path(path.clone());
    let wire = Arc::new(wire);
    wire.serve_control(&path).expect("serve");
    let mut client = Client::connect(&path).expect("connect");
    client
        .cut(Some(LinkKind::Main), Some(1), Some(0))
        .expect("cut");
    send(&wire, &m.main, LinkKind::Main, 1, b"a");
    assert_eq!(recv(&wire, &m.main, LinkKind::Main, 0), None);
    assert!(
        client.cut(None, Some(7), None).is_err(),
        "member 7 accepted"
    );
    let bad = client.set(
        None,
        None,
        None,
        Impair {
            loss_pct: 150.0,
            ..Impair::default()
        },
    );
    assert!(bad.is_err(), "150% loss accepted");
    client.restore(None, None, None).expect("restore");
    send(&wire, &m.main, LinkKind::Main, 1, b"b");
    assert_eq!(
        recv(&wire, &m.main, LinkKind::Main, 0).as_deref(),
        Some(&b"b"[..])
    );
    let stats = client.stats().expect("stats");
    assert_eq!(stats.len(), 4);
    // A malformed line gets an error answer, not a dropped connection.
    {
        use std::io::{BufRead, BufReader, Write};
        let mut raw = std::os::unix::net::UnixStream::connect(&path).expect("raw");
        raw.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        raw.write_all(b"{\"cmd\":\"nope\"}\n").expect("write");
        let mut line = String::new();
        BufReader::new(&raw).read_line(&mut line).expect("answer");
        assert!(line.contains("\"ok\":false"), "{line}");
    }
    drop(client);
    drop(wire);
    let _ = std::fs::remove_dir_all(&dir);
}

/// QEMU's UDP serial sends one datagram per byte; delivered that way, a receiver that is not
/// scheduled for a while overflows its socket buffer (each one-byte datagram costs the kernel
/// about a kilobyte) and loses bytes that a UART's FIFO would have kept. The wire delivers a
/// frame's bytes as one datagram instead: here a receiver that reads nothing while 100 frames
/// of 120 bytes pass (12,000 one-byte datagrams, far more than its 208 KiB default buffer
/// holds one by one) still receives every byte, in a few datagrams. A sender descheduled
/// mid-frame for more than [`ha_testwire::GATHER_PAUSE`] splits that frame in two datagrams
/// (harmless: a UART reads a byte stream), so the test checks the stream and the datagram
/// count, not one datagram per frame (a loaded CI machine split one).
#[test]
fn backup_link_delivers_one_datagram_per_frame() {
    let (m, cfg) = members(2);
    let wire = Wire::start(&cfg).expect("wire");
    let frame = |i: u8| {
        let mut f = vec![0u8];
        f.extend((0..118).map(|k| 1 + (i.wrapping_add(k) % 254)));
        f.push(0);
        f
    };
    for i in 0..100u8 {
        for b in frame(i) {
            send(&wire, &m.backup, LinkKind::Backup, 0, &[b]);
        }
        // About the pace of a QEMU UART, so the wire's own socket is not what overflows.
        std::thread::sleep(Duration::from_millis(1));
    }
    let want: Vec<u8> = (0..100u8).flat_map(frame).collect();
    let mut got = Vec::new();
    let mut datagrams = 0;
    while got.len() < want.len() {
        let d = recv(&wire, &m.backup, LinkKind::Backup, 1).expect("bytes delivered");
        got.extend(d);
        datagrams += 1;
    }
    assert_eq!(got, want, "the byte stream arrives whole and in order");
    assert!(
        datagrams <= 200,
        "{datagrams} datagrams for 100 frames: bytes were not gathered"
    );
    // The main link keeps datagram boundaries (each is an Ethernet frame).
    send(&wire, &m.main, LinkKind::Main, 0, b"a");
    send(&wire, &m.main, LinkKind::Main, 0, b"b");
    assert_eq!(
        recv(&wire, &m.main, LinkKind::Main, 1).as_deref(),
        Some(&b"a"[..])
    );
    assert_eq!(
        recv(&wire, &m.main, LinkKind::Main, 1).as_deref(),
        Some(&b"b"[..])
    );
}
