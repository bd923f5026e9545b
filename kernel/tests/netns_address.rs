//! Cluster addresses against the real kernel, in two network namespaces joined by a veth pair
//! that the test creates and removes: an IPv4 and an IPv6 address are put on the member's
//! interface (twice: a repeated takeover is not an error), announced, and the peer side of the
//! wire receives exactly the gratuitous ARP and the unsolicited neighbour advertisement; then
//! they are removed (twice: a repeated release is not an error). An unknown interface is an
//! error, not a panic. Needs root: skipped with a message outside CI, a failure in CI.

use std::net::IpAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use ha_kernel::address::{announce, garp_frame, unsolicited_na_frame, Addresses, Mac};

mod common;
use common::{can_run, in_ns, ip, namespaces};

/// A packet socket on interface `name` of the calling thread's namespace, receiving every
/// frame, with a 200 ms receive timeout.
fn capture(name: &str) -> OwnedFd {
    let ifindex = nix::net::if_::if_nametoindex(name).expect("ifindex");
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: socket(2), bind(2) and setsockopt(2) with values that live through the calls.
    unsafe {
        let fd = libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto));
        assert!(fd >= 0, "packet socket");
        let fd = OwnedFd::from_raw_fd(fd);
        let mut sa: libc::sockaddr_ll = std::mem::zeroed();
        sa.sll_family = libc::AF_PACKET as u16;
        sa.sll_protocol = proto;
        sa.sll_ifindex = ifindex as i32;
        let r = libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        );
        assert_eq!(r, 0, "bind packet socket");
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: 200_000,
        };
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            std::mem::size_of::<libc::timeval>() as u32,
        );
        fd
    }
}

/// Frames received on `fd` within `wait`.
fn frames(fd: &OwnedFd, wait: Duration) -> Vec<Vec<u8>> {
    let end = Instant::now() + wait;
    let mut out = Vec::new();
    let mut buf = [0u8; 2048];
    while Instant::now() < end {
        // SAFETY: `buf` outlives the call and its length is passed.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        if n > 0 {
            out.push(buf[..n as usize].to_vec());
        }
    }
    out
}

const MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];

#[test]
fn addresses_move_and_are_announced_on_the_wire() {
    if !can_run("address namespace", None) {
        return;
    }
    let (_ns, names) = namespaces("haka", &["a", "b"]);
    let (na, nb) = (names[0].clone(), names[1].clone());
    ip(&[
        "-n", &na, "link", "add", "x0", "type", "veth", "peer", "name", "y0", "netns", &nb,
    ]);
    ip(&[
        "-n",
        &na,
        "link",
        "set",
        "x0",
        "address",
        "02:00:00:00:00:0a",
    ]);
    ip(&["-n", &na, "link", "set", "x0", "up"]);
    ip(&["-n", &nb, "link", "set", "y0", "up"]);
    let cap = in_ns(&nb, || capture("y0"));

    let v4: IpAddr = "10.9.0.100".parse().unwrap();
    let v6: IpAddr = "fd00::100".parse().unwrap();
    let added = in_ns(&na, move || {
        let ifindex = nix::net::if_::if_nametoindex("x0").expect("ifindex");
        let mut a = Addresses::open().expect("rtnetlink");
        for _ in 0..2 {
            a.add(ifindex, v4, 24).expect("add v4");
            a.add(ifindex, v6, 64).expect("add v6");
        }
        announce(ifindex, MAC, v4).expect("garp");
        announce(ifindex, MAC, v6).expect("unsolicited na");
        ifindex
    });
    let shown = ip(&["-n", &na, "addr", "show", "dev", "x0"]);
    assert!(shown.contains("10.9.0.100/24"), "{shown}");
    assert!(shown.contains("fd00::100/64"), "{shown}");
    assert_eq!(
        shown.matches("10.9.0.100/24").count(),
        1,
        "added once: {shown}"
    );

    let got = frames(&cap, Duration::from_secs(1));
    let IpAddr::V4(v4a) = v4 else { unreachable!() };
    let IpAddr::V6(v6a) = v6 else { unreachable!() };
    assert!(
        got.contains(&garp_frame(MAC, v4a)),
        "no gratuitous ARP among {} frames",
        got.len()
    );
    assert!(
        got.contains(&unsolicited_na_frame(MAC, v6a)),
        "no neighbour advertisement among {} frames",
        got.len()
    );

    in_ns(&na, move || {
        let mut a = Addresses::open().expect("rtnetlink");
        for _ in 0..2 {
            a.remove(added, v4, 24).expect("remove v4");
            a.remove(added, v6, 64).expect("remove v6");
        }
        // An interface that does not exist: an error, nothing changed.
        assert!(a.add(999_999, v4, 24).is_err());
    });
    let shown = ip(&["-n", &na, "addr", "show", "dev", "x0"]);
    assert!(!shown.contains("10.9.0.100"), "{shown}");
    assert!(!shown.contains("fd00::100"), "{shown}");
}
