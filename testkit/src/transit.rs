//! Per-packet transit through the cluster, as the wire sees it: the planned swap's figure
//! in `cargo xtask bench failover`.
//!
//! A load's own pauses mix what the cluster did with what the load's processes did (a
//! sender that was not scheduled sends late, and its pause looks like an outage). Here each
//! TCP segment that carries data is timed from the moment it left one end (seen going out
//! of the client's or the server's interface) to the moment it reached the other (seen
//! coming in there), with the kernel's receive timestamps of two packet sockets. A segment
//! the cluster dropped is timed until its retransmission arrives (same flow and sequence
//! number: the first departure is kept). So the longest transit over a window is the
//! longest a packet was held up between the two LANs, whatever the senders did. An arrival
//! covers every departed segment of its flow within its sequence range: the receiving side
//! may merge segments (GRO) into one it sees, and a merged segment arrived all the same.
//! The two ends are read by two threads, so a segment's arrival may be handed over before
//! its departure: an arrival that matches nothing is kept for [`EARLY_KEEP_NS`] and a
//! departure it covers is matched with it (the kernel's timestamps give the transit).
//!
//! [`Transit`] is the sans-IO matcher (departures and arrivals in, figures out);
//! [`capture`] feeds it from a packet socket in a network namespace.

use std::collections::{BTreeMap, HashMap};

/// Departures older than this without an arrival are given up (and counted as lost).
pub const GIVE_UP_NS: u64 = 5_000_000_000;
/// How long an arrival whose departure was not seen yet is kept for it, ns.
pub const EARLY_KEEP_NS: u64 = 1_000_000_000;

/// Departures kept at most (a flood cannot grow the table without bound); beyond it new
/// departures are not timed (counted).
pub const PENDING_MAX: usize = 200_000;

/// One TCP segment with data: flow and sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// IPv4 source and destination addresses.
    pub addrs: [[u8; 4]; 2],
    /// TCP source and destination ports.
    pub ports: [u16; 2],
    /// Sequence number of its first data byte.
    pub seq: u32,
}

/// One direction of a TCP connection: addresses and ports, source first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
struct Flow {
    addrs: [[u8; 4]; 2],
    ports: [u16; 2],
}

impl Key {
    fn flow(&self) -> Flow {
        Flow {
            addrs: self.addrs,
            ports: self.ports,
        }
    }
}

/// The key of the TCP segment with data in Ethernet frame `f` (IPv4 only), if it is one.
pub fn tcp_data_key(f: &[u8]) -> Option<Key> {
    tcp_data_segment(f).map(|(k, _)| k)
}

/// The key of the TCP segment with data in Ethernet frame `f` and its data length (from
/// the headers: `f` may be cut after them), if it is one.
pub fn tcp_data_segment(f: &[u8]) -> Option<(Key, u32)> {
    let ip = f.get(14..)?;
    if u16::from_be_bytes([*f.get(12)?, *f.get(13)?]) != 0x0800 || ip.len() < 20 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[0] >> 4 != 4 || ip[9] != 6 || ihl < 20 || total < ihl + 20 {
        return None;
    }
    let tcp = ip.get(ihl..)?;
    if tcp.len() < 20 {
        return None;
    }
    let doff = usize::from(tcp[12] >> 4) * 4;
    if doff < 20 || total <= ihl + doff {
        return None; // no data: a pure acknowledgement
    }
    let addr = |at: usize| [ip[at], ip[at + 1], ip[at + 2], ip[at + 3]];
    let key = Key {
        addrs: [addr(12), addr(16)],
        ports: [
            u16::from_be_bytes([tcp[0], tcp[1]]),
            u16::from_be_bytes([tcp[2], tcp[3]]),
        ],
        seq: u32::from_be_bytes([tcp[4], tcp[5], tcp[6], tcp[7]]),
    };
    Some((key, (total - ihl - doff) as u32))
}

/// What a window of [`Transit`] measured.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Window {
    /// Segments that arrived in the window.
    pub packets: u64,
    /// The longest transit among them, µs.
    pub max_us: u64,
    /// Segments that left in the window and were given up without arriving
    /// ([`GIVE_UP_NS`]), or not timed because the table was full.
    pub lost: u64,
}

/// The matcher: each segment's first departure, matched with its first arrival.
#[derive(Debug, Default)]
pub struct Transit {
    /// Per flow, the departed segments not arrived yet: sequence number → first departure.
    pending: HashMap<Flow, BTreeMap<u32, u64>>,
    /// Segments in `pending`.
    pending_len: usize,
    /// Per flow, arrivals that matched no departure yet (the other end's thread is behind):
    /// sequence number → (data length, arrival).
    early: HashMap<Flow, BTreeMap<u32, (u32, u64)>>,
    window: Window,
    /// Start of the window (ns, the capture's clock).
    since_ns: u64,
}

impl Transit {
    /// A segment left one end at `t_ns` (a retransmission keeps the first departure).
    pub fn depart(&mut self, k: Key, t_ns: u64) {
        if let Some(a) = self.take_early(k) {
            self.window.packets += 1;
            self.window.max_us = self.window.max_us.max(a.saturating_sub(t_ns) / 1_000);
            return;
        }
        let known = self
            .pending
            .get(&k.flow())
            .is_some_and(|m| m.contains_key(&k.seq));
        if known {
            return;
        }
        if self.pending_len >= PENDING_MAX {
            self.expire(t_ns);
            if self.pending_len >= PENDING_MAX {
                self.window.lost += 1;
                return;
            }
        }
        self.pending
            .entry(k.flow())
            .or_default()
            .insert(k.seq, t_ns);
        self.pending_len += 1;
    }

    /// A segment of `len` data bytes reached the other end at `t_ns`: it and every departed
    /// segment of its flow that starts within its bytes (merged into it on the way) are
    /// counted in the window, when their departure was seen (a duplicate arrival is not).
    pub fn arrive(&mut self, k: Key, len: u32, t_ns: u64) {
        let Some(m) = self.pending.get_mut(&k.flow()) else {
            self.keep_early(k, len, t_ns);
            return;
        };
        let end = k.seq.wrapping_add(len.max(1));
        // The covered sequence numbers, in one or (across the wrap) two ranges.
        let covered: Vec<u32> = if end > k.seq {
            m.range(k.seq..end).map(|(s, _)| *s).collect()
        } else {
            m.range(k.seq..)
                .chain(m.range(..end))
                .map(|(s, _)| *s)
                .collect()
        };
        if covered.is_empty() {
            self.keep_early(k, len, t_ns);
            return;
        }
        for s in covered {
            if let Some(d) = m.remove(&s) {
                self.pending_len -= 1;
                self.window.packets += 1;
                self.window.max_us = self.window.max_us.max(t_ns.saturating_sub(d) / 1_000);
            }
        }
        if m.is_empty() {
            self.pending.remove(&k.flow());
        }
    }

    /// Keeps an arrival that matched no departure, for the departure that the other end's
    /// thread has not handed over yet (a duplicate arrival is kept too and expires).
    fn keep_early(&mut self, k: Key, len: u32, t_ns: u64) {
        let m = self.early.entry(k.flow()).or_default();
        if m.len() < PENDING_MAX {
            m.entry(k.seq).or_insert((len.max(1), t_ns));
        }
    }

    /// The arrival kept early that covers `k`, if any (taken).
    fn take_early(&mut self, k: Key) -> Option<u64> {
        let m = self.early.get_mut(&k.flow())?;
        let (&seq, &(len, t)) = m.range(..=k.seq).next_back()?;
        if k.seq.wrapping_sub(seq) >= len {
            return None;
        }
        // Kept (until it expires) for the other segments merged into it, whose departures
        // follow.
        let _ = seq;
        Some(t)
    }

    /// Gives up departures older than [`GIVE_UP_NS`] at `now_ns`, counting those of the
    /// window as lost, and arrivals kept early for longer than [`EARLY_KEEP_NS`].
    pub fn expire(&mut self, now_ns: u64) {
        self.early.retain(|_, m| {
            m.retain(|_, (_, t)| now_ns.saturating_sub(*t) < EARLY_KEEP_NS);
            !m.is_empty()
        });
        let since = self.since_ns;
        let mut lost = 0;
        let mut kept = 0;
        self.pending.retain(|_, m| {
            m.retain(|_, d| {
                let keep = now_ns.saturating_sub(*d) < GIVE_UP_NS;
                if !keep && *d >= since {
                    lost += 1;
                }
                keep
            });
            kept += m.len();
            !m.is_empty()
        });
        self.pending_len = kept;
        self.window.lost += lost;
    }

    /// Starts a new window at `now_ns`.
    pub fn mark(&mut self, now_ns: u64) {
        self.window = Window::default();
        self.since_ns = now_ns;
    }

    /// The window so far.
    pub fn window(&self) -> Window {
        self.window
    }

    /// The window at `now_ns`, the segments that left in it and are still on their way
    /// counted with their age so far: a report soon after an outage still sees a segment
    /// whose retransmission has not arrived yet (a short window stays honest).
    pub fn window_at(&self, now_ns: u64) -> Window {
        let mut w = self.window;
        let since = self.since_ns;
        let oldest = self
            .pending
            .values()
            .flat_map(|m| m.values())
            .filter(|d| **d >= since)
            .min();
        if let Some(d) = oldest {
            w.max_us = w.max_us.max(now_ns.saturating_sub(*d) / 1_000);
        }
        w
    }
}

/// The capture side: packet sockets in network namespaces feeding one [`Transit`].
pub mod capture {
    use std::io::{self, IoSliceMut};
    use std::os::fd::AsRawFd;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use nix::sys::socket::{
        recvmsg, setsockopt, socket, sockopt, AddressFamily, ControlMessageOwned, LinkAddr,
        MsgFlags, SockFlag, SockProtocol, SockType,
    };

    use super::{tcp_data_segment, Transit};

    /// `PACKET_HOST`: a packet addressed to this host.
    const PACKET_HOST: u8 = 0;
    /// `PACKET_OUTGOING`: a packet this host sent.
    const PACKET_OUTGOING: u8 = 4;

    /// Watches interface `iface` of network namespace `netns` (a name under
    /// `/var/run/netns`, or `-` for the caller's): segments this host sends there are
    /// departures, segments it receives there arrivals. Runs on its own thread (which
    /// enters the namespace) until the process ends; a failure to set up (no such namespace
    /// or interface, no packet socket) is returned here, a later receive error through the
    /// join handle.
    pub fn watch(
        netns: &str,
        iface: &str,
        transit: Arc<Mutex<Transit>>,
    ) -> io::Result<std::thread::JoinHandle<io::Result<()>>> {
        let (netns, iface) = (netns.to_string(), iface.to_string());
        let (tx, rx) = std::sync::mpsc::channel();
        let h = std::thread::spawn(move || {
            let setup = || -> io::Result<_> {
                if netns != "-" {
                    let f = std::fs::File::open(format!("/var/run/netns/{netns}"))?;
                    nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)?;
                }
                let index = nix::net::if_::if_nametoindex(iface.as_str())?;
                let fd = socket(
                    AddressFamily::Packet,
                    SockType::Raw,
                    SockFlag::empty(),
                    SockProtocol::EthAll,
                )?;
                setsockopt(&fd, sockopt::ReceiveTimestampns, &true)?;
                setsockopt(
                    &fd,
                    sockopt::ReceiveTimeout,
                    &nix::sys::time::TimeVal::new(0, 200_000),
                )?;
                Ok((fd, index))
            };
            let (fd, index) = match setup() {
                Ok(x) => {
                    let _ = tx.send(Ok(()));
                    x
                }
                Err(e) => {
                    let _ = tx.send(Err(io::Error::new(e.kind(), e.to_string())));
                    return Err(e);
                }
            };
            let mut buf = [0u8; 128];
            let mut cmsg = nix::cmsg_space!(nix::sys::time::TimeSpec);
            loop {
                let mut iov = [IoSliceMut::new(&mut buf)];
                let r = recvmsg::<LinkAddr>(
                    fd.as_raw_fd(),
                    &mut iov,
                    Some(&mut cmsg),
                    MsgFlags::empty(),
                );
                let msg = match r {
                    Ok(m) => m,
                    Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => continue,
                    Err(e) => return Err(e.into()),
                };
                let Some(from) = msg.address else { continue };
                let mut t_ns = None;
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::ScmTimestampns(ts) = c {
                            t_ns = Some(ts.tv_sec() as u64 * 1_000_000_000 + ts.tv_nsec() as u64);
                        }
                    }
                }
                let n = msg.bytes;
                if from.ifindex() as u32 != index {
                    continue;
                }
                let (Some(t_ns), Some((k, len))) =
                    (t_ns, tcp_data_segment(&buf[..n.min(buf.len())]))
                else {
                    continue;
                };
                let mut t = transit.lock().unwrap_or_else(|p| p.into_inner());
                match from.pkttype() {
                    PACKET_OUTGOING => t.depart(k, t_ns),
                    PACKET_HOST => t.arrive(k, len, t_ns),
                    _ => {}
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(5)) {
            Ok(Ok(())) => Ok(h),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::other("packet watcher did not start")),
        }
    }

    /// Now on the capture's clock (CLOCK_REALTIME, as the kernel's timestamps), ns.
    pub fn now_ns() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame with an IPv4 TCP segment of `data` bytes.
    fn frame(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, seq: u32, data: usize) -> Vec<u8> {
        let mut f = vec![0u8; 14 + 20 + 20 + data];
        f[12..14].copy_from_slice(&0x0800u16.to_be_bytes());
        let ip = &mut f[14..];
        ip[0] = 0x45;
        ip[2..4].copy_from_slice(&((40 + data) as u16).to_be_bytes());
        ip[9] = 6;
        ip[12..16].copy_from_slice(&src);
        ip[16..20].copy_from_slice(&dst);
        let tcp = &mut ip[20..];
        tcp[0..2].copy_from_slice(&sport.to_be_bytes());
        tcp[2..4].copy_from_slice(&dport.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 5 << 4;
        f
    }

    const C: [u8; 4] = [10, 1, 0, 1];
    const S: [u8; 4] = [10, 2, 0, 1];

    #[test]
    fn only_segments_with_data_have_a_key() {
        let k = tcp_data_key(&frame(C, S, 40000, 5001, 7, 16)).expect("data");
        assert_eq!(k.seq, 7);
        assert_eq!(k.ports, [40000, 5001]);
        assert_eq!(
            tcp_data_key(&frame(C, S, 40000, 5001, 7, 0)),
            None,
            "pure ack"
        );
        let mut udp = frame(C, S, 1, 2, 3, 16);
        udp[14 + 9] = 17;
        assert_eq!(tcp_data_key(&udp), None);
        assert_eq!(
            tcp_data_key(&frame(C, S, 1, 2, 3, 16)[..40]),
            None,
            "truncated"
        );
        let mut arp = frame(C, S, 1, 2, 3, 16);
        arp[12..14].copy_from_slice(&0x0806u16.to_be_bytes());
        assert_eq!(tcp_data_key(&arp), None);
    }

    #[test]
    fn a_dropped_segment_is_timed_until_its_retransmission_arrives() {
        let k = tcp_data_key(&frame(C, S, 40000, 5001, 100, 16)).expect("data");
        let k2 = Key { seq: 116, ..k };
        let mut t = Transit::default();
        t.mark(0);
        // One crosses in 0.2 ms.
        t.depart(k, 1_000_000);
        t.arrive(k, 16, 1_200_000);
        // The next is dropped, retransmitted 200 ms later and arrives then.
        t.depart(k2, 2_000_000);
        t.depart(k2, 202_000_000);
        t.arrive(k2, 16, 202_300_000);
        // A duplicate arrival is not a second packet.
        t.arrive(k2, 16, 203_000_000);
        let w = t.window();
        assert_eq!(w.packets, 2);
        assert_eq!(w.max_us, 200_300);
        t.mark(300_000_000);
        assert_eq!(t.window(), Window::default(), "a new window");
    }

    #[test]
    fn a_segment_still_on_its_way_at_the_report_counts_with_its_age() {
        let k = tcp_data_key(&frame(C, S, 40000, 5001, 100, 16)).expect("data");
        let old = Key { seq: 1, ..k };
        let mut t = Transit::default();
        // Left before the window: not the window's.
        t.depart(old, 0);
        t.mark(10_000_000);
        t.depart(k, 20_000_000);
        assert_eq!(t.window_at(20_100_000).max_us, 100);
        assert_eq!(
            t.window_at(320_000_000).max_us,
            300_000,
            "dropped, not back yet"
        );
        assert_eq!(t.window().max_us, 0, "nothing arrived");
        t.arrive(k, 16, 420_000_000);
        assert_eq!(t.window_at(500_000_000).max_us, 400_000);
    }

    #[test]
    fn segments_merged_on_the_way_arrive_with_the_segment_that_carries_them() {
        let k = |seq: u32| Key {
            seq,
            ..tcp_data_key(&frame(C, S, 40000, 5001, 0, 16)).expect("data")
        };
        let other = Key {
            ports: [40001, 5001],
            ..k(0)
        };
        let mut t = Transit::default();
        t.mark(0);
        // Three segments of 100 bytes, the receiving side sees them as one of 300; another
        // flow's segment at a covered sequence number is not the flow's.
        t.depart(k(1_000), 1_000_000);
        t.depart(k(1_100), 1_100_000);
        t.depart(k(1_200), 1_200_000);
        t.depart(k(1_300), 1_300_000);
        t.depart(other, 1_000_000);
        t.arrive(k(1_000), 300, 2_000_000);
        let w = t.window_at(10_000_000);
        assert_eq!(w.packets, 3);
        // Left: 1_300 (8.7 ms on its way) and the other flow's (9 ms, the longest).
        assert_eq!(w.max_us, 9_000);
        // Across the sequence numbers' wrap.
        t.depart(k(u32::MAX - 50), 3_000_000);
        t.depart(k(49), 3_000_000);
        t.arrive(k(u32::MAX - 50), 200, 4_000_000);
        assert_eq!(t.window().packets, 5);
    }

    #[test]
    fn an_arrival_handed_over_before_its_departure_is_matched() {
        let k = |seq: u32| Key {
            seq,
            ..tcp_data_key(&frame(C, S, 40000, 5001, 0, 16)).expect("data")
        };
        let mut t = Transit::default();
        t.mark(0);
        // The receiving end's thread is ahead: two segments merged into one arrival, then
        // their departures (0.3 ms earlier on the kernel's clock).
        t.arrive(k(500), 32, 1_300_000);
        t.depart(k(500), 1_000_000);
        t.depart(k(516), 1_000_000);
        let w = t.window_at(900_000_000);
        assert_eq!((w.packets, w.max_us), (2, 300), "nothing left on its way");
        // Kept early arrivals expire.
        t.expire(1_300_000 + EARLY_KEEP_NS);
        t.depart(k(500), 2_000_000_000);
        assert_eq!(t.window_at(2_000_000_000).max_us, 300);
        assert_eq!(
            t.window_at(2_100_000_000).max_us,
            100_000,
            "a departure again"
        );
    }

    #[test]
    fn a_segment_that_never_arrives_is_lost_not_timed() {
        let k = tcp_data_key(&frame(S, C, 5001, 40000, 9, 16)).expect("data");
        let mut t = Transit::default();
        t.mark(0);
        t.depart(k, 1_000);
        t.expire(1_000 + GIVE_UP_NS - 1);
        assert_eq!(t.window().lost, 0, "not yet");
        t.expire(1_000 + GIVE_UP_NS);
        assert_eq!(t.window().lost, 1);
        t.arrive(k, 16, 2 * GIVE_UP_NS);
        assert_eq!(t.window().packets, 0, "given up");
    }
}
