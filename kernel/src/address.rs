//! Cluster addresses on the kernel path: added to an interface when this member takes over,
//! removed when it releases them (rtnetlink), and announced to the LAN (gratuitous ARP for
//! IPv4, an unsolicited neighbour advertisement for IPv6, on a packet socket) so switches and
//! hosts send to this member at once.
//!
//! The frames are pure functions ([`garp_frame`], [`unsolicited_na_frame`], built with
//! smoltcp's wire types); [`Addresses`] and [`announce`] are the I/O.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};

// `netlink-packet-route` 0.21 speaks `netlink-packet-core` 0.7 (the daemon's link watcher uses
// the same pair); the conntrack side of this crate uses 0.9 with `netlink-packet-netfilter`.
use netlink_packet_core7::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressHeader, AddressMessage};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, Icmpv6Packet, Icmpv6Repr, IpProtocol, Ipv6Packet, Ipv6Repr, NdiscNeighborFlags,
    NdiscRepr, RawHardwareAddress,
};

/// A MAC address.
pub type Mac = [u8; 6];

/// `EADDRNOTAVAIL`: removing an address the interface does not have.
const EADDRNOTAVAIL: i32 = 99;

/// Adds and removes addresses over rtnetlink in the calling thread's network namespace.
pub struct Addresses {
    sock: Socket,
    seq: u32,
}

fn message(ifindex: u32, addr: IpAddr, prefix_len: u8) -> AddressMessage {
    let mut m = AddressMessage::default();
    m.header = AddressHeader {
        family: match addr {
            IpAddr::V4(_) => AddressFamily::Inet,
            IpAddr::V6(_) => AddressFamily::Inet6,
        },
        prefix_len,
        index: ifindex,
        ..AddressHeader::default()
    };
    m.attributes.push(AddressAttribute::Local(addr));
    m.attributes.push(AddressAttribute::Address(addr));
    m
}

impl Addresses {
    /// Opens a rtnetlink socket.
    pub fn open() -> io::Result<Addresses> {
        let mut sock = Socket::new(NETLINK_ROUTE)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Addresses { sock, seq: 0 })
    }

    fn request(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut h = NetlinkHeader::default();
        h.flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        h.sequence_number = self.seq;
        let mut m = NetlinkMessage::new(h, NetlinkPayload::from(msg));
        m.finalize();
        let mut buf = vec![0u8; m.buffer_len()];
        m.serialize(&mut buf);
        self.sock.send(&buf, 0)?;
        let mut rx = vec![0u8; 8192];
        // Bounded: the answer is one ack; anything else on this socket is skipped.
        for _ in 0..16 {
            let n = self.sock.recv(&mut &mut rx[..], 0)?;
            let got = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&rx[..n.min(rx.len())])
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            if got.header.sequence_number != self.seq {
                continue;
            }
            if let NetlinkPayload::Error(e) = got.payload {
                return match e.code {
                    None => Ok(()),
                    Some(c) => Err(io::Error::from_raw_os_error(-c.get())),
                };
            }
        }
        Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "no acknowledgement",
        ))
    }

    /// Puts `addr/prefix_len` on interface `ifindex` (replacing it if present: taking over
    /// twice is not an error).
    pub fn add(&mut self, ifindex: u32, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
        let m = RouteNetlinkMessage::NewAddress(message(ifindex, addr, prefix_len));
        self.request(m, NLM_F_CREATE | NLM_F_REPLACE)
    }

    /// Takes `addr/prefix_len` off interface `ifindex`; an address already gone is not an
    /// error (releasing twice, or after an operator removed it).
    pub fn remove(&mut self, ifindex: u32, addr: IpAddr, prefix_len: u8) -> io::Result<()> {
        let m = RouteNetlinkMessage::DelAddress(message(ifindex, addr, prefix_len));
        match self.request(m, 0) {
            Err(e) if e.raw_os_error() == Some(EADDRNOTAVAIL) => Ok(()),
            r => r,
        }
    }
}

/// An Ethernet frame carrying one ARP message (request or reply) from `src_mac` to `dst_mac`.
pub fn arp_frame(
    op: ArpOperation,
    src_mac: Mac,
    dst_mac: Mac,
    sender_ip: Ipv4Addr,
    target_mac: Mac,
    target_ip: Ipv4Addr,
) -> Vec<u8> {
    let arp = ArpRepr::EthernetIpv4 {
        operation: op,
        source_hardware_addr: EthernetAddress(src_mac),
        source_protocol_addr: sender_ip,
        target_hardware_addr: EthernetAddress(target_mac),
        target_protocol_addr: target_ip,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(src_mac),
        dst_addr: EthernetAddress(dst_mac),
        ethertype: EthernetProtocol::Arp,
    };
    let mut buf = vec![0u8; eth.buffer_len() + arp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    arp.emit(&mut ArpPacket::new_unchecked(f.payload_mut()));
    buf
}

/// A gratuitous ARP request for `ip` from `mac` (sender and target address both `ip`,
/// broadcast), as hosts and switches expect after an address moved.
pub fn garp_frame(mac: Mac, ip: Ipv4Addr) -> Vec<u8> {
    arp_frame(
        ArpOperation::Request,
        mac,
        EthernetAddress::BROADCAST.0,
        ip,
        [0; 6],
        ip,
    )
}

/// An unsolicited neighbour advertisement for `ip` from `mac` to all nodes (`ff02::1`), with
/// the override flag and the target link-layer address option (RFC 4861 section 7.2.6).
pub fn unsolicited_na_frame(mac: Mac, ip: Ipv6Addr) -> Vec<u8> {
    let all_nodes = Ipv6Addr::new(0xff02, 0, 0, 0, 0, 0, 0, 1);
    let icmp = Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
        flags: NdiscNeighborFlags::OVERRIDE,
        target_addr: ip,
        lladdr: Some(RawHardwareAddress::from_bytes(&mac)),
    });
    let ip6 = Ipv6Repr {
        src_addr: ip,
        dst_addr: all_nodes,
        next_header: IpProtocol::Icmpv6,
        payload_len: icmp.buffer_len(),
        hop_limit: 255,
    };
    let eth = EthernetRepr {
        src_addr: EthernetAddress(mac),
        dst_addr: EthernetAddress([0x33, 0x33, 0, 0, 0, 1]),
        ethertype: EthernetProtocol::Ipv6,
    };
    let mut buf = vec![0u8; eth.buffer_len() + ip6.buffer_len() + icmp.buffer_len()];
    let mut f = EthernetFrame::new_unchecked(&mut buf[..]);
    eth.emit(&mut f);
    let mut p = Ipv6Packet::new_unchecked(f.payload_mut());
    ip6.emit(&mut p);
    icmp.emit(
        &ip,
        &all_nodes,
        &mut Icmpv6Packet::new_unchecked(p.payload_mut()),
        &ChecksumCapabilities::default(),
    );
    buf
}

/// Sends the announcement of `addr` (owned by interface `ifindex`, whose MAC is `mac`) on that
/// interface: a gratuitous ARP or an unsolicited neighbour advertisement.
pub fn announce(ifindex: u32, mac: Mac, addr: IpAddr) -> io::Result<()> {
    let frame = match addr {
        IpAddr::V4(ip) => garp_frame(mac, ip),
        IpAddr::V6(ip) => unsolicited_na_frame(mac, ip),
    };
    send_raw(ifindex, &frame)
}

/// The process's send-only `AF_PACKET` socket (protocol 0: it receives nothing), opened on
/// first use in the namespace of the process and kept: closing a packet socket waits for an
/// RCU grace period (10-16 ms measured per announcement at a takeover).
fn packet_socket() -> io::Result<std::os::fd::BorrowedFd<'static>> {
    static SOCK: std::sync::OnceLock<OwnedFd> = std::sync::OnceLock::new();
    if let Some(fd) = SOCK.get() {
        return Ok(fd.as_fd());
    }
    // SAFETY: plain socket(2); the descriptor is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // Two threads racing here: the loser's socket is closed, the winner's kept.
    Ok(SOCK.get_or_init(|| fd).as_fd())
}

/// Sends one whole Ethernet frame on interface `ifindex` through the process's packet socket.
fn send_raw(ifindex: u32, frame: &[u8]) -> io::Result<()> {
    let fd = packet_socket()?;
    // SAFETY: sockaddr_ll is plain old data; zero is a valid value for every field.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_ifindex = ifindex as i32;
    sa.sll_halen = 6;
    sa.sll_addr[..6].copy_from_slice(&frame[..6]);
    // SAFETY: `frame` and `sa` outlive the call; the lengths are theirs.
    let n = unsafe {
        libc::sendto(
            fd.as_raw_fd(),
            frame.as_ptr().cast(),
            frame.len(),
            0,
            (&sa as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: Mac = [0x02, 0, 0, 0, 0, 0x0a];

    #[test]
    fn a_gratuitous_arp_has_the_address_as_sender_and_target() {
        let f = garp_frame(MAC, Ipv4Addr::new(10, 9, 0, 100));
        let mut want = vec![0xff; 6];
        want.extend(MAC);
        want.extend([0x08, 0x06]); // ARP
        want.extend([0, 1, 0x08, 0, 6, 4, 0, 1]); // Ethernet/IPv4, request
        want.extend(MAC);
        want.extend([10, 9, 0, 100]);
        want.extend([0; 6]);
        want.extend([10, 9, 0, 100]);
        assert_eq!(f, want);
    }

    #[test]
    fn an_unsolicited_advertisement_overrides_and_checks_out() {
        let ip: Ipv6Addr = "fd00::100".parse().unwrap();
        let f = unsolicited_na_frame(MAC, ip);
        let eth = EthernetFrame::new_checked(&f[..]).unwrap();
        assert_eq!(eth.dst_addr(), EthernetAddress([0x33, 0x33, 0, 0, 0, 1]));
        let p = Ipv6Packet::new_checked(eth.payload()).unwrap();
        assert_eq!(p.hop_limit(), 255);
        let icmp = Icmpv6Packet::new_checked(p.payload()).unwrap();
        let repr = Icmpv6Repr::parse(
            &p.src_addr(),
            &p.dst_addr(),
            &icmp,
            &ChecksumCapabilities::default(),
        )
        .expect("valid checksum");
        assert_eq!(
            repr,
            Icmpv6Repr::Ndisc(NdiscRepr::NeighborAdvert {
                flags: NdiscNeighborFlags::OVERRIDE,
                target_addr: ip,
                lladdr: Some(RawHardwareAddress::from_bytes(&MAC)),
            })
        );
    }
}
