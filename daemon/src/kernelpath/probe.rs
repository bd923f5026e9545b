//! Liveness probes on the kernel path: ICMP echo requests to the peer's member addresses on a
//! raw socket (the kernel routes them out of the forwarding interface of the address's
//! subnet), and a receive thread that notes the replies. Same identifier and payload as the
//! userspace path's probes (`crate::fastpath::PROBE_IDENT`).

use std::collections::HashSet;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{
    recv, sendto, setsockopt, socket, sockopt, AddressFamily, MsgFlags, SockFlag, SockProtocol,
    SockType, SockaddrIn,
};
use nix::sys::time::TimeVal;
use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{Icmpv4Packet, Icmpv4Repr, Ipv4Packet};

use crate::fastpath::{PROBE_ANSWERS_MAX, PROBE_IDENT};

/// Payload of a probe.
const PAYLOAD: &[u8; 8] = b"ha-probe";

/// Sends probes and remembers their answers.
pub struct Prober {
    sock: Arc<OwnedFd>,
    /// This member's addresses and prefix lengths on its forwarding interfaces: a probe goes
    /// only to an address on one of their subnets.
    subnets: Vec<(Ipv4Addr, u8)>,
    seq: u16,
    answered: Arc<Mutex<HashSet<(Ipv4Addr, u16)>>>,
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, len: u8) -> bool {
    let bits = u32::from(len.min(32));
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    u32::from(a) & mask == u32::from(b) & mask
}

/// The probe reply an IPv4 packet carries, if it is one: its source and sequence number.
pub fn reply_of(packet: &[u8]) -> Option<(Ipv4Addr, u16)> {
    let ip = Ipv4Packet::new_checked(packet).ok()?;
    let icmp = Icmpv4Packet::new_checked(ip.payload()).ok()?;
    match Icmpv4Repr::parse(&icmp, &ChecksumCapabilities::default()).ok()? {
        Icmpv4Repr::EchoReply { ident, seq_no, .. } if ident == PROBE_IDENT => {
            Some((ip.src_addr(), seq_no))
        }
        _ => None,
    }
}

/// Notes the probe reply `packet` carries, if it is one, in `seen` (bounded: a full set is
/// emptied first).
fn note_reply(seen: &mut HashSet<(Ipv4Addr, u16)>, packet: &[u8]) {
    if let Some(r) = reply_of(packet) {
        if seen.len() >= PROBE_ANSWERS_MAX {
            seen.clear();
        }
        seen.insert(r);
    }
}

/// The ICMP message of probe `seq`.
pub fn request(seq: u16) -> Vec<u8> {
    let repr = Icmpv4Repr::EchoRequest {
        ident: PROBE_IDENT,
        seq_no: seq,
        data: PAYLOAD,
    };
    let mut buf = vec![0u8; repr.buffer_len()];
    repr.emit(
        &mut Icmpv4Packet::new_unchecked(&mut buf[..]),
        &ChecksumCapabilities::default(),
    );
    buf
}

impl Prober {
    /// Opens the raw ICMP socket (root) and starts its receive thread, which ends with the
    /// process.
    pub fn open(subnets: Vec<(Ipv4Addr, u8)>) -> io::Result<Prober> {
        let sock = Arc::new(socket(
            AddressFamily::Inet,
            SockType::Raw,
            SockFlag::SOCK_CLOEXEC,
            SockProtocol::Icmp,
        )?);
        setsockopt(
            &sock.as_fd(),
            sockopt::ReceiveTimeout,
            &TimeVal::new(0, 200_000),
        )?;
        let answered = Arc::new(Mutex::new(HashSet::new()));
        let (rx, seen) = (sock.clone(), answered.clone());
        crate::spawn_named("ha-probe-rx", move || {
            let mut buf = [0u8; 1500];
            loop {
                match recv(
                    std::os::fd::AsRawFd::as_raw_fd(&*rx),
                    &mut buf,
                    MsgFlags::empty(),
                ) {
                    Ok(n) => note_reply(
                        &mut seen.lock().unwrap_or_else(|p| p.into_inner()),
                        &buf[..n],
                    ),
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
                    Err(e) => {
                        eprintln!("ha-daemon: probe socket: {e}");
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            }
        });
        Ok(Prober {
            sock,
            subnets,
            seq: 0,
            answered,
        })
    }

    /// Sends an echo request to `peer`; its sequence number, `None` when `peer` is on no
    /// forwarding interface's subnet or the send failed (no route: not alive either).
    pub fn send(&mut self, peer: Ipv4Addr) -> Option<u16> {
        if !self
            .subnets
            .iter()
            .any(|(me, len)| same_subnet(*me, peer, *len))
        {
            return None;
        }
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let to = SockaddrIn::from(std::net::SocketAddrV4::new(peer, 0));
        sendto(
            std::os::fd::AsRawFd::as_raw_fd(&*self.sock),
            &request(seq),
            &to,
            MsgFlags::MSG_DONTWAIT,
        )
        .ok()?;
        Some(seq)
    }

    /// True (once) when the reply of probe `seq` from `peer` arrived. Replies still queued in
    /// the socket are read first, on the caller's thread: a receive thread starved of CPU
    /// must not turn a live peer's reply into "no answer".
    pub fn answered(&mut self, peer: Ipv4Addr, seq: u16) -> bool {
        let mut seen = self.answered.lock().unwrap_or_else(|p| p.into_inner());
        let mut buf = [0u8; 1500];
        // Bounded: a flood of ICMP cannot keep the caller here.
        for _ in 0..64 {
            match recv(
                std::os::fd::AsRawFd::as_raw_fd(&*self.sock),
                &mut buf,
                MsgFlags::MSG_DONTWAIT,
            ) {
                Ok(n) => note_reply(&mut seen, &buf[..n]),
                Err(_) => break,
            }
        }
        seen.remove(&(peer, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reply_to_our_probe_is_recognised_and_nothing_else_is() {
        // An echo reply from 10.1.0.12 to probe 7, as a raw socket hands it (IP header first).
        let icmp = Icmpv4Repr::EchoReply {
            ident: PROBE_IDENT,
            seq_no: 7,
            data: PAYLOAD,
        };
        let ip = smoltcp::wire::Ipv4Repr {
            src_addr: Ipv4Addr::new(10, 1, 0, 12),
            dst_addr: Ipv4Addr::new(10, 1, 0, 11),
            next_header: smoltcp::wire::IpProtocol::Icmp,
            payload_len: icmp.buffer_len(),
            hop_limit: 64,
        };
        let mut buf = vec![0u8; ip.buffer_len() + icmp.buffer_len()];
        let caps = ChecksumCapabilities::default();
        let mut p = Ipv4Packet::new_unchecked(&mut buf[..]);
        ip.emit(&mut p, &caps);
        icmp.emit(&mut Icmpv4Packet::new_unchecked(p.payload_mut()), &caps);
        assert_eq!(reply_of(&buf), Some((Ipv4Addr::new(10, 1, 0, 12), 7)));
        // Someone else's ping, a request, and garbage are not answers.
        let mut other = buf.clone();
        other[20 + 4] ^= 0xff; // identifier
        assert_eq!(reply_of(&other), None);
        assert_eq!(reply_of(&buf[..10]), None);
        assert!(Icmpv4Packet::new_checked(&request(3)[..]).is_ok());
        assert!(same_subnet(
            Ipv4Addr::new(10, 1, 0, 11),
            Ipv4Addr::new(10, 1, 0, 12),
            24
        ));
        assert!(!same_subnet(
            Ipv4Addr::new(10, 1, 0, 11),
            Ipv4Addr::new(10, 2, 0, 12),
            24
        ));
    }
}
