//! The ctnetlink socket of the network namespace it was opened in: the I/O shell around
//! [`super::codec`].
//!
//! Use one socket for events ([`Ctnetlink::subscribe`], [`Ctnetlink::recv_events`]) and another
//! for requests ([`Ctnetlink::install`], [`Ctnetlink::remove`], [`Ctnetlink::dump`]): on a
//! subscribed socket, events would interleave with the answers.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};
use nix::sys::socket::{setsockopt, sockopt};
use nix::sys::time::TimeVal;

use super::codec::{self, CodecError, Decoded};
use super::expect::{self, CtExpect};
use super::{CtEntry, CtTuple, Events};

/// `NFNLGRP_CONNTRACK_NEW`, `_UPDATE`, `_DESTROY`, then `NFNLGRP_CONNTRACK_EXP_NEW` and
/// `_EXP_DESTROY` (an expectation does not change in a way the standby needs).
const GROUPS: [u32; 5] = [1, 2, 3, 4, 6];
/// Receive buffer for one `recv` (the kernel sends at most a page of messages per datagram,
/// more with large pages).
const RECV_BUF: usize = 64 * 1024;
/// Datagrams one [`Ctnetlink::recv_events`] reads at most.
pub const EVENT_SLOTS: usize = 64;
/// Room for one event datagram (an entry event with every attribute is under 1 KiB).
pub const EVENT_SLOT: usize = 8 * 1024;
/// Largest batch of requests sent at once by [`Ctnetlink::install_batch`], bytes.
pub const BATCH_BYTES: usize = 32 * 1024;

/// What went wrong on a ctnetlink socket.
#[derive(Debug)]
pub enum CtError {
    /// The socket failed.
    Io(io::Error),
    /// The kernel dropped events because the receive buffer was full: the caller must dump
    /// the table and reconcile (only without `NETLINK_NO_ENOBUFS`).
    Overrun,
    /// A message could not be read, or the kernel refused a request.
    Codec(CodecError),
}

impl std::fmt::Display for CtError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CtError::Io(e) => write!(f, "ctnetlink: {e}"),
            CtError::Overrun => write!(f, "ctnetlink: events lost (receive buffer overrun)"),
            CtError::Codec(e) => write!(f, "ctnetlink: {e}"),
        }
    }
}

impl std::error::Error for CtError {}

/// Sets or clears `NLM_F_ACK` in the header of the netlink message at the start of `msg`
/// (flags: bytes 6..8, host order).
fn set_ack(msg: &mut [u8], ack: bool) {
    use netlink_packet_core::NLM_F_ACK;
    if let Some(f) = msg.get_mut(6..8) {
        let mut flags = u16::from_ne_bytes([f[0], f[1]]);
        if ack {
            flags |= NLM_F_ACK;
        } else {
            flags &= !NLM_F_ACK;
        }
        f.copy_from_slice(&flags.to_ne_bytes());
    }
}

impl From<io::Error> for CtError {
    fn from(e: io::Error) -> Self {
        if e.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) {
            CtError::Overrun
        } else {
            CtError::Io(e)
        }
    }
}

/// `-EOPNOTSUPP`, as the kernel answers a request that would change an existing entry's
/// translations.
const EOPNOTSUPP: i32 = -95;
/// `ENOENT`: no such entry.
const ENOENT: i32 = 2;

impl From<CodecError> for CtError {
    fn from(e: CodecError) -> Self {
        CtError::Codec(e)
    }
}

/// A ctnetlink socket.
pub struct Ctnetlink {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
    /// The receive timeout set on the socket (set again only when it changes: the event
    /// thread receives with the same few waits many thousand times a second).
    timeout: Option<Duration>,
    /// Messages received and read by the allocation-free reader ([`super::fast`]).
    fast_reads: u64,
    /// [`EVENT_SLOTS`] receive buffers of [`EVENT_SLOT`] bytes for the events (allocated by
    /// the first [`Ctnetlink::recv_events`]).
    slots: Vec<u8>,
}

/// Reads up to [`EVENT_SLOTS`] datagrams into the slots of `buf` with one `recvmmsg`
/// (`flags`: `MSG_WAITFORONE` waits for the first within the socket's timeout, then takes
/// what is queued; `MSG_DONTWAIT` waits for none). Each read datagram, slot by slot from
/// the first, as (length, cut short). Nothing arrived in time: none. Written with libc: neither `netlink-sys` nor
/// the nix version in use offers `recvmmsg` on a raw file descriptor with a plain buffer.
fn recv_many(sock: &Socket, buf: &mut [u8], flags: i32) -> Result<Vec<(usize, bool)>, CtError> {
    use nix::libc;
    use std::os::fd::AsRawFd;
    let slots = (buf.len() / EVENT_SLOT).min(EVENT_SLOTS);
    let base = buf.as_mut_ptr();
    let mut iov: Vec<libc::iovec> = (0..slots)
        .map(|i| libc::iovec {
            // SAFETY: slot `i` lies within `buf` (i < buf.len() / EVENT_SLOT).
            iov_base: unsafe { base.add(i * EVENT_SLOT) }.cast(),
            iov_len: EVENT_SLOT,
        })
        .collect();
    let mut hdrs: Vec<libc::mmsghdr> = iov
        .iter_mut()
        .map(|v| {
            // SAFETY: a zeroed msghdr is valid (no name, no control data).
            let mut h: libc::mmsghdr = unsafe { std::mem::zeroed() };
            h.msg_hdr.msg_iov = v;
            h.msg_hdr.msg_iovlen = 1;
            h
        })
        .collect();
    // SAFETY: `hdrs` holds `slots` headers, each pointing at one iovec of `iov`, each at its
    // own EVENT_SLOT bytes of `buf`; all outlive the call, which writes only into them.
    let n = unsafe {
        libc::recvmmsg(
            sock.as_raw_fd(),
            hdrs.as_mut_ptr(),
            slots as _,
            flags as _,
            std::ptr::null_mut(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted => {
                Ok(Vec::new())
            }
            _ => Err(e.into()),
        };
    }
    Ok(hdrs[..n as usize]
        .iter()
        .map(|h| {
            let len = (h.msg_len as usize).min(EVENT_SLOT);
            (len, h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0)
        })
        .collect())
}

impl Ctnetlink {
    /// Opens a ctnetlink socket in the calling thread's network namespace.
    pub fn open() -> Result<Ctnetlink, CtError> {
        let mut sock = Socket::new(NETLINK_NETFILTER)?;
        sock.bind_auto()?;
        sock.connect(&SocketAddr::new(0, 0))?;
        Ok(Ctnetlink {
            sock,
            seq: 0,
            buf: vec![0u8; RECV_BUF],
            timeout: None,
            fast_reads: 0,
            slots: Vec::new(),
        })
    }

    /// How many of the messages received so far the allocation-free reader read (the rest
    /// went through `netlink-packet-netfilter`).
    pub fn fast_reads(&self) -> u64 {
        self.fast_reads
    }

    /// Subscribes to new, update and destroy events of entries and to new and destroy events
    /// of expectations, with a receive buffer of `rcvbuf` bytes
    /// (forced past `rmem_max` when the process may) and `NETLINK_BROADCAST_ERROR` (a failed
    /// delivery is reported to the kernel, which then keeps and re-sends destroy events).
    /// With `no_enobufs`, also `NETLINK_NO_ENOBUFS`; without it an overrun surfaces as
    /// [`CtError::Overrun`], the signal to dump and reconcile.
    pub fn subscribe(&mut self, rcvbuf: usize, no_enobufs: bool) -> Result<(), CtError> {
        for g in GROUPS {
            self.sock.add_membership(g)?;
        }
        self.sock.set_broadcast_error(true)?;
        self.sock.set_no_enobufs(no_enobufs)?;
        if setsockopt(&self.sock.as_fd(), sockopt::RcvBufForce, &rcvbuf).is_err() {
            setsockopt(&self.sock.as_fd(), sockopt::RcvBuf, &rcvbuf).map_err(io::Error::from)?;
        }
        Ok(())
    }

    fn set_timeout(&mut self, t: Duration) -> Result<(), CtError> {
        if self.timeout == Some(t) {
            return Ok(());
        }
        let tv = TimeVal::new(
            t.as_secs() as _,
            t.subsec_micros().max(if t.is_zero() { 1 } else { 0 }) as _,
        );
        setsockopt(&self.sock.as_fd(), sockopt::ReceiveTimeout, &tv).map_err(io::Error::from)?;
        self.timeout = Some(t);
        Ok(())
    }

    /// Receives one datagram (waiting at most `wait`) and returns its messages decoded;
    /// an empty list when nothing arrived in time.
    fn recv_decoded(
        &mut self,
        wait: Duration,
    ) -> Result<Vec<Result<Decoded, CodecError>>, CtError> {
        // No wait: a non-blocking receive, the socket's timeout left as it is.
        let flags = if wait.is_zero() {
            nix::libc::MSG_DONTWAIT
        } else {
            self.set_timeout(wait)?;
            0
        };
        let n = match self.sock.recv(&mut &mut self.buf[..], flags) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Ok(Vec::new())
            }
            Err(e) => return Err(e.into()),
        };
        let n = n.min(self.buf.len());
        let fast = &mut self.fast_reads;
        Ok(codec::split(&self.buf[..n])
            .map(|m| m.and_then(|m| codec::decode_counting(m, fast)))
            .collect())
    }

    /// Appends the events that arrive within `wait` to `out`: the first datagram waited for,
    /// then up to [`EVENT_SLOTS`] in all that are already queued, in one `recvmmsg` (the
    /// kernel sends each event in a datagram of its own: one system call per event cost the
    /// active's event thread a tenth of its time at 100,000 events a second). Returns how
    /// many messages could not be read (counted, skipped). A datagram cut short (longer than
    /// [`EVENT_SLOT`]) is an event lost: reported as [`CtError::Overrun`], so that the
    /// caller dumps and reconciles.
    pub fn recv_events(&mut self, wait: Duration, out: &mut Events) -> Result<usize, CtError> {
        let flags = if wait.is_zero() {
            nix::libc::MSG_DONTWAIT
        } else {
            self.set_timeout(wait)?;
            // After the first datagram, only what is queued already.
            nix::libc::MSG_WAITFORONE
        };
        if self.slots.is_empty() {
            self.slots = vec![0u8; EVENT_SLOTS * EVENT_SLOT];
        }
        let got = recv_many(&self.sock, &mut self.slots, flags)?;
        let mut bad = 0;
        let fast = &mut self.fast_reads;
        for (slot, &(len, truncated)) in got.iter().enumerate() {
            if truncated {
                return Err(CtError::Overrun);
            }
            let at = slot * EVENT_SLOT;
            for m in codec::split(&self.slots[at..at + len]) {
                match m.and_then(|m| codec::decode_counting(m, fast)) {
                    Ok(Decoded::Entry(ev)) => out.entries.push(ev),
                    Ok(Decoded::Expect(ev)) => out.expects.push(ev),
                    Ok(_) => {}
                    Err(_) => bad += 1,
                }
            }
        }
        Ok(bad)
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    /// Sends `req` (sequence `seq`) and waits up to 1 s for its acknowledgement.
    fn request(&mut self, req: &[u8], seq: u32) -> Result<(), CtError> {
        self.sock.send(req, 0)?;
        for _ in 0..16 {
            let got = self.recv_decoded(Duration::from_secs(1))?;
            if got.is_empty() {
                break;
            }
            for d in got {
                match d? {
                    Decoded::Ack { seq: s } if s == seq => return Ok(()),
                    Decoded::Refused { seq: s, errno } if s == seq => {
                        return Err(CodecError::Kernel(errno).into())
                    }
                    _ => {}
                }
            }
        }
        Err(CtError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "no acknowledgement from the kernel",
        )))
    }

    /// Creates `e` in the table (with its translations), or updates the entry with the same
    /// original tuple (which keeps the translations it was created with).
    pub fn install(&mut self, e: &CtEntry) -> Result<(), CtError> {
        let seq = self.next_seq();
        match self.request(&codec::install_request(e, seq), seq) {
            Err(CtError::Codec(CodecError::Kernel(EOPNOTSUPP))) if codec::has_creation_attrs(e) => {
                let seq = self.next_seq();
                self.request(&codec::refresh_request(e, seq), seq)
            }
            r => r,
        }
    }

    /// Installs (or refreshes) every entry of `entries`, many requests per `send` (up to
    /// [`BATCH_BYTES`] each), then reads their acknowledgements; returns the index and errno of
    /// every entry the kernel refused (the others are in the table). Fewer system calls and
    /// round trips than one [`Ctnetlink::install`] per entry.
    pub fn install_batch(&mut self, entries: &[CtEntry]) -> Result<Vec<(usize, i32)>, CtError> {
        let refused = self.send_batch(entries, codec::install_request)?;
        // A translated entry that exists already refuses its translations (and one created
        // without a helper refuses a helper): refresh those without them.
        let (again, mut refused): (Vec<_>, Vec<_>) = refused.into_iter().partition(|(i, errno)| {
            *errno == EOPNOTSUPP && codec::has_creation_attrs(&entries[*i])
        });
        if !again.is_empty() {
            let retry: Vec<CtEntry> = again.iter().map(|(i, _)| entries[*i]).collect();
            for (j, errno) in self.send_batch(&retry, codec::refresh_request)? {
                refused.push((again[j].0, errno));
            }
            refused.sort_unstable();
        }
        Ok(refused)
    }

    /// Creates (or refreshes) every expectation of `exps`, batched like
    /// [`Ctnetlink::install_batch`]; returns the index and errno of every one the kernel
    /// refused (`-ENOENT`: its master is not in the table yet).
    pub fn install_expects(&mut self, exps: &[CtExpect]) -> Result<Vec<(usize, i32)>, CtError> {
        self.send_batch(exps, expect::install_request)
    }

    /// Removes the expectation of `tuple` in `zone`.
    pub fn remove_expect(&mut self, tuple: &CtTuple, zone: u16) -> Result<(), CtError> {
        let seq = self.next_seq();
        self.request(&expect::remove_request(tuple, zone, seq), seq)
    }

    /// Sends one request per item, made by `request`, batched; the refused ones.
    ///
    /// Only the last request of each `send` asks for an acknowledgement: the kernel answers a
    /// request without `NLM_F_ACK` only when it fails, and it handles the requests of one
    /// `send` in order, so once the last one is acknowledged every refusal before it has
    /// arrived. One acknowledgement per batch instead of one per entry (each is a message the
    /// kernel builds and this process reads).
    fn send_batch<T>(
        &mut self,
        entries: &[T],
        request: fn(&T, u32) -> Vec<u8>,
    ) -> Result<Vec<(usize, i32)>, CtError> {
        let mut refused = Vec::new();
        let mut at = 0;
        while at < entries.len() {
            let first_seq = self.seq.wrapping_add(1);
            let mut buf = Vec::with_capacity(BATCH_BYTES + 512);
            let start = at;
            let mut last_header = 0;
            while at < entries.len() && buf.len() < BATCH_BYTES {
                let seq = self.next_seq();
                last_header = buf.len();
                let mut msg = request(&entries[at], seq);
                set_ack(&mut msg, false);
                buf.extend(msg);
                at += 1;
            }
            set_ack(&mut buf[last_header..], true);
            let last_seq = self.seq;
            self.sock.send(&buf, 0)?;
            let index = |seq: u32| start + seq.wrapping_sub(first_seq) as usize;
            let mut done = false;
            while !done {
                let got = self.recv_decoded(Duration::from_secs(1))?;
                if got.is_empty() {
                    return Err(CtError::Io(io::Error::new(
                        io::ErrorKind::TimedOut,
                        "acknowledgements missing",
                    )));
                }
                for d in got {
                    match d {
                        Ok(Decoded::Ack { seq }) if seq == last_seq => done = true,
                        Ok(Decoded::Refused { seq, errno }) if index(seq) < at => {
                            refused.push((index(seq), errno));
                            done |= seq == last_seq;
                        }
                        _ => {}
                    }
                }
            }
        }
        Ok(refused)
    }

    /// Removes the entry of original tuple `orig` in `zone`.
    pub fn remove(&mut self, orig: &CtTuple, zone: u16) -> Result<(), CtError> {
        let seq = self.next_seq();
        self.request(&codec::remove_request(orig, zone, seq), seq)
    }

    /// Removes the entry of every `(original tuple, zone)` of `keys`, batched like
    /// [`Ctnetlink::install_batch`]; returns the index and errno of every one the kernel
    /// refused, except those already gone (`-ENOENT`: expired or removed meanwhile, as good
    /// as removed). One `send` per [`BATCH_BYTES`] instead of a round trip per entry: a
    /// standby removes what a mass expiry on the active ended at the rate it installs.
    pub fn remove_batch(&mut self, keys: &[(CtTuple, u16)]) -> Result<Vec<(usize, i32)>, CtError> {
        let mut refused = self.send_batch(keys, |(orig, zone), seq| {
            codec::remove_request(orig, *zone, seq)
        })?;
        refused.retain(|&(_, errno)| errno != -ENOENT);
        Ok(refused)
    }

    /// The entry of original tuple `orig` in `zone` as the kernel holds it now; `None` when
    /// it is gone. What an event does not say (a sequence adjustment: the kernel reports no
    /// event when a NAT helper changes it) is read this way.
    pub fn get(&mut self, orig: &CtTuple, zone: u16) -> Result<Option<CtEntry>, CtError> {
        let seq = self.next_seq();
        self.sock.send(&codec::get_request(orig, zone, seq), 0)?;
        let mut found = None;
        for _ in 0..16 {
            let got = self.recv_decoded(Duration::from_secs(1))?;
            if got.is_empty() {
                break;
            }
            for d in got {
                match d {
                    Ok(Decoded::Entry(ev)) if ev.entry.orig == *orig => found = Some(ev.entry),
                    Ok(Decoded::Ack { seq: s }) if s == seq => return Ok(found),
                    Ok(Decoded::Refused { seq: s, errno }) if s == seq => {
                        return if errno == -ENOENT {
                            Ok(None)
                        } else {
                            Err(CodecError::Kernel(errno).into())
                        };
                    }
                    _ => {}
                }
            }
        }
        Err(CtError::Io(io::Error::new(
            io::ErrorKind::TimedOut,
            "no answer from the kernel",
        )))
    }

    /// Every entry of the table (IPv4 and IPv6). Entries the codec cannot read are skipped and
    /// counted in the second value.
    pub fn dump(&mut self) -> Result<(Vec<CtEntry>, usize), CtError> {
        self.dump_with(codec::dump_request, |d| match d {
            Decoded::Entry(ev) => Some(ev.entry),
            _ => None,
        })
    }

    /// Every expectation (IPv4 and IPv6); unreadable ones are counted in the second value.
    pub fn dump_expects(&mut self) -> Result<(Vec<CtExpect>, usize), CtError> {
        self.dump_with(expect::dump_request, |d| match d {
            Decoded::Expect(ev) => Some(ev.exp),
            _ => None,
        })
    }

    /// Sends the dump request `request` makes and collects what `pick` takes of the answer.
    fn dump_with<T>(
        &mut self,
        request: fn(u32) -> Vec<u8>,
        pick: fn(Decoded) -> Option<T>,
    ) -> Result<(Vec<T>, usize), CtError> {
        let seq = self.next_seq();
        self.sock.send(&request(seq), 0)?;
        let (mut out, mut bad) = (Vec::new(), 0);
        // Bounded: a dump of a million entries is a few thousand datagrams.
        for _ in 0..1_000_000 {
            let got = self.recv_decoded(Duration::from_secs(2))?;
            if got.is_empty() {
                return Err(CtError::Io(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "dump did not finish",
                )));
            }
            for d in got {
                match d {
                    Ok(Decoded::Done) => return Ok((out, bad)),
                    Ok(Decoded::Refused { seq: s, errno }) if s == seq => {
                        return Err(CodecError::Kernel(errno).into())
                    }
                    Ok(d) => out.extend(pick(d)),
                    Err(_) => bad += 1,
                }
            }
        }
        Err(CtError::Io(io::Error::other("dump too long")))
    }
}
