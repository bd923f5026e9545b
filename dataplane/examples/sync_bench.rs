//! `cargo xtask bench sync` runs this (release): two sync engines, sender and receiver, in two
//! threads, each with its own UDP socket on loopback. Measures
//! - throughput: `UPDATES` table changes on the sender (1M creations, then a state change of
//!   each) until the receiver applied all of them;
//! - bulk: the receiver asks for a full resync of the sender's 1M connections, time until
//!   complete;
//! - lag: changes offered at `LAG_RATE`/s for `LAG_SECS` s, p99 of (applied on the receiver −
//!   made on the sender).
//!
//! Last line: `sync: updates_per_s=<n> bulk_1m_ms=<ms> p99_lag_ms=<ms>` (`bulk_1m_ms` is the
//! bulk of `--connections` connections: 1M unless told otherwise, as the line before says).
//! Options: `--connections N` (default 1,000,000); `--in-memory`: instead, both engines in
//! one thread without sockets (the engines' CPU cost alone).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsFd, AsRawFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ha_dataplane::sync::{Record, ResyncStatus, SyncConfig, SyncEngine};
use ha_dataplane::tables::{proto, ConnEntry, ConnKey, ConnState, Millis, Tables, TcpState};
use ha_proto::keys::{KeySet, Psk};
use ha_proto::msg::Serial;
use nix::sys::socket::{recv, MsgFlags};

const CLUSTER: u32 = 0x0b0b_0001;
/// Offered rate of the lag phase.
const LAG_RATE: u64 = 100_000;
/// Duration of the lag phase.
const LAG_SECS: u64 = 3;
/// Socket buffers: a whole window of frames in flight fits.
const SOCK_BUF: usize = 32 << 20;
/// Changes made between two polls of the sender's engine in the throughput phase: small
/// enough that the entries are still in cache when they are framed (the daemon's packet
/// path reports changes one by one and its sync thread polls every 2 ms).
const BATCH: usize = 1024;
/// Index bits of a connection in its client address.
const INDEX_MASK: u32 = 0x00ff_ffff;

fn key(i: u32) -> ConnKey {
    ConnKey::of(
        0,
        proto::TCP,
        IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | (i & INDEX_MASK))),
        40_000,
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)),
        443,
    )
    .0
}

fn index_of(k: &ConnKey) -> Option<usize> {
    match k.a {
        IpAddr::V4(a) => Some((u32::from(a) & INDEX_MASK) as usize),
        IpAddr::V6(_) => None,
    }
}

fn socket() -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind("127.0.0.1:0")?;
    for opt in [true, false] {
        let r = if opt {
            nix::sys::socket::setsockopt(
                &s.as_fd(),
                nix::sys::socket::sockopt::RcvBufForce,
                &SOCK_BUF,
            )
        } else {
            nix::sys::socket::setsockopt(
                &s.as_fd(),
                nix::sys::socket::sockopt::SndBufForce,
                &SOCK_BUF,
            )
        };
        if r.is_err() {
            // Not root: the ordinary option, capped by net.core.[rw]mem_max.
            let _ = if opt {
                nix::sys::socket::setsockopt(
                    &s.as_fd(),
                    nix::sys::socket::sockopt::RcvBuf,
                    &SOCK_BUF,
                )
            } else {
                nix::sys::socket::setsockopt(
                    &s.as_fd(),
                    nix::sys::socket::sockopt::SndBuf,
                    &SOCK_BUF,
                )
            };
        }
    }
    let got =
        nix::sys::socket::getsockopt(&s.as_fd(), nix::sys::socket::sockopt::RcvBuf).unwrap_or(0);
    if got < SOCK_BUF {
        eprintln!(
            "sync bench: receive buffer {got} B (wanted {SOCK_BUF} B): datagrams may be dropped"
        );
    }
    s.set_read_timeout(Some(Duration::from_micros(500)))?;
    Ok(s)
}

/// User + system CPU seconds of this process (all threads).
fn cpu_secs() -> f64 {
    use nix::sys::resource::{getrusage, UsageWho};
    getrusage(UsageWho::RUSAGE_SELF).map_or(0.0, |u| {
        let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
        t(u.user_time()) + t(u.system_time())
    })
}

fn cfg(me: u8, epoch: u32) -> SyncConfig {
    let keys = KeySet::derive(&Psk([0x5a; 32]), CLUSTER, 1);
    SyncConfig::new(CLUSTER, Serial([me; 16]), epoch, keys)
}

struct Side {
    t: Tables,
    e: SyncEngine,
    sock: UdpSocket,
    peer: SocketAddr,
    buf: Vec<u8>,
}

impl Side {
    /// Receives everything waiting, sends what the engine has, then (when `block`) waits up to
    /// the socket's read timeout for the next datagram; true if anything came.
    fn pump(&mut self, base: Instant, observe: &mut dyn FnMut(&Record), block: bool) -> bool {
        let mut got = false;
        while let Ok(n) = recv(self.sock.as_raw_fd(), &mut self.buf, MsgFlags::MSG_DONTWAIT) {
            got = true;
            let now = base.elapsed().as_millis() as Millis;
            self.e
                .on_datagram_observe(&mut self.t, &self.buf[..n], now, observe);
        }
        let now = base.elapsed().as_millis() as Millis;
        for d in self.e.poll_transmit(&self.t, now) {
            // A full buffer loses the datagram; the engine retransmits.
            let _ = self.sock.send_to(&d, self.peer);
        }
        if block && !got {
            if let Ok(n) = self.sock.recv(&mut self.buf) {
                got = true;
                let now = base.elapsed().as_millis() as Millis;
                self.e
                    .on_datagram_observe(&mut self.t, &self.buf[..n], now, observe);
            }
        }
        got
    }
}

struct Shared {
    stop: AtomicBool,
    applied: AtomicU64,
    sent_ns: Vec<AtomicU64>,
    resync: AtomicU32,
    bulk_ms: AtomicU64,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let n: u32 = args
        .iter()
        .position(|a| a == "--connections")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    if args.iter().any(|a| a == "--in-memory") {
        in_memory(n);
        return;
    }
    if let Err(e) = run(n) {
        eprintln!("sync bench: {e}");
        std::process::exit(1);
    }
}

/// The engines' CPU cost without sockets or threads: sender and receiver in one thread,
/// datagrams handed over in memory; 2n updates (n creations, n state changes).
fn in_memory(n: u32) {
    let mut a = Tables::new();
    let mut b = Tables::new();
    a.activate(0);
    a.reserve_conns(n as usize);
    b.reserve_conns(n as usize);
    let mut ea = SyncEngine::new(cfg(1, 1));
    let mut eb = SyncEngine::new(cfg(2, 1));
    let mut applied = 0u64;
    let mut count = |r: &Record| {
        if matches!(r, Record::Conn { .. }) {
            applied += 1;
        }
    };
    // Meet (hellos, empty bulks), at a fake clock of 1 ms per step.
    let mut now: Millis = 0;
    let exchange = |a: &mut Tables,
                    b: &mut Tables,
                    ea: &mut SyncEngine,
                    eb: &mut SyncEngine,
                    now: Millis,
                    count: &mut dyn FnMut(&Record)| {
        for d in ea.poll_transmit(a, now) {
            eb.on_datagram_observe(b, &d, now, count);
        }
        for d in eb.poll_transmit(b, now) {
            ea.on_datagram(a, &d, now);
        }
    };
    for _ in 0..50 {
        now += 1;
        exchange(&mut a, &mut b, &mut ea, &mut eb, now, &mut count);
    }
    let total = 2 * u64::from(n);
    let t0 = Instant::now();
    let cpu0 = cpu_secs();
    let mut made = 0u64;
    while made < total || ea.backlog() != (0, 0) {
        for _ in 0..BATCH {
            if made >= total {
                break;
            }
            let i = (made % u64::from(n)) as u32;
            let k = key(i);
            if made < u64::from(n) {
                let e = ConnEntry::new(ConnState::Tcp(TcpState::SynSent), true, 1, 0, now);
                a.insert_conn(k, e);
                ea.conn_changed(k, &e, now);
            } else if let Some(e) = a.conn_mut(&k) {
                e.state = ConnState::Tcp(TcpState::Established);
                let e = *e;
                ea.conn_changed(k, &e, now);
            }
            made += 1;
        }
        now = 50 + t0.elapsed().as_millis() as Millis;
        exchange(&mut a, &mut b, &mut ea, &mut eb, now, &mut count);
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    println!(
        "sync: in memory, one thread (sender and receiver engines, no sockets): {total} updates in {secs:.3} s = {} updates/s; CPU {:.2} us per update; receiver holds {} connections",
        (total as f64 / secs) as u64,
        cpu * 1e6 / total as f64,
        b.conn_count()
    );
}

fn run(n: u32) -> Result<(), String> {
    let base = Instant::now();
    let sa = socket().map_err(|e| e.to_string())?;
    let sb = socket().map_err(|e| e.to_string())?;
    let (pa, pb) = (
        sa.local_addr().map_err(|e| e.to_string())?,
        sb.local_addr().map_err(|e| e.to_string())?,
    );
    let lag_n = (LAG_RATE * LAG_SECS) as usize;
    let shared = Arc::new(Shared {
        stop: AtomicBool::new(false),
        applied: AtomicU64::new(0),
        sent_ns: (0..n as usize + lag_n).map(|_| AtomicU64::new(0)).collect(),
        resync: AtomicU32::new(0),
        bulk_ms: AtomicU64::new(0),
    });
    let mut a = Side {
        t: Tables::new(),
        e: SyncEngine::new(cfg(1, 1)),
        sock: sa,
        peer: pb,
        buf: vec![0; 65_536],
    };
    a.t.activate(0);
    a.t.reserve_conns(n as usize + lag_n);
    let mut b = Side {
        t: Tables::new(),
        e: SyncEngine::new(cfg(2, 1)),
        sock: sb,
        peer: pa,
        buf: vec![0; 65_536],
    };
    b.t.reserve_conns(n as usize + lag_n);
    let sh = shared.clone();
    let receiver = std::thread::spawn(move || {
        let mut lags: Vec<u64> = Vec::with_capacity(lag_n);
        let mut resync: Option<(u32, Instant)> = None;
        while !sh.stop.load(Ordering::Relaxed) {
            let mut observe = |r: &Record| {
                if let Record::Conn { key, .. } = r {
                    sh.applied.fetch_add(1, Ordering::Relaxed);
                    // Only the lag phase's connections have a send time.
                    if let Some(t) = index_of(key).and_then(|i| sh.sent_ns.get(i)) {
                        let sent = t.load(Ordering::Relaxed);
                        if sent > 0 {
                            let now = base.elapsed().as_nanos() as u64;
                            lags.push(now.saturating_sub(sent));
                        }
                    }
                }
            };
            b.pump(base, &mut observe, true);
            if sh.resync.load(Ordering::Relaxed) == 1 && resync.is_none() {
                let now = base.elapsed().as_millis() as Millis;
                if let Some(id) = b.e.request_resync(now) {
                    resync = Some((id, Instant::now()));
                    sh.resync.store(2, Ordering::Relaxed);
                }
            }
            if let Some((id, t0)) = resync {
                if b.e.resync_status(id) == ResyncStatus::Done {
                    sh.bulk_ms
                        .store(t0.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
                    resync = None;
                    sh.resync.store(3, Ordering::Relaxed);
                }
            }
        }
        (lags, b.t.conn_count())
    });

    // Meet the peer (initial empty bulk both ways).
    let deadline = Instant::now() + Duration::from_secs(10);
    while !(a.e.peer_up() && !a.e.awaiting_bulk() && a.e.backlog() == (0, 0)) {
        a.pump(base, &mut |_| {}, true);
        if Instant::now() > deadline {
            return Err("peer not found over loopback in 10 s".into());
        }
    }
    std::thread::sleep(Duration::from_millis(300));
    a.pump(base, &mut |_| {}, false);

    // 1. Throughput: n creations then n state changes.
    let total = 2 * n as u64;
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    let mut made: u64 = 0;
    let deadline = t0 + Duration::from_secs(120);
    while shared.applied.load(Ordering::Relaxed) < total {
        if made < total && a.e.backlog().0 < 4 * BATCH {
            let now = base.elapsed().as_millis() as Millis;
            for _ in 0..BATCH {
                if made >= total {
                    break;
                }
                let i = (made % n as u64) as u32;
                let k = key(i);
                if made < n as u64 {
                    let e = ConnEntry::new(ConnState::Tcp(TcpState::SynSent), true, 1, 0, now);
                    a.t.insert_conn(k, e);
                    a.e.conn_changed(k, &e, now);
                } else if let Some(e) = a.t.conn_mut(&k) {
                    e.state = ConnState::Tcp(TcpState::Established);
                    let e = *e;
                    a.e.conn_changed(k, &e, now);
                }
                made += 1;
            }
        }
        // Wait for acknowledgements only when there is nothing to make.
        let window_full = a.e.backlog().1 >= a.e.window();
        a.pump(base, &mut |_| {}, made >= total || window_full);
        if Instant::now() > deadline {
            return Err(format!(
                "throughput phase: {} of {total} applied after 120 s",
                shared.applied.load(Ordering::Relaxed)
            ));
        }
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    let ups = (total as f64 / secs) as u64;
    println!(
        "sync: throughput {total} updates ({n} creations + {n} state changes) in {:.3} s: {ups} updates/s; sender retransmits {}; CPU (both threads, user+sys) {:.3} s = {:.2} us per update",
        secs,
        a.e.stats().retransmits,
        cpu,
        cpu * 1e6 / total as f64
    );

    // 2. Bulk: the receiver asks for a full resync of the sender's n connections.
    shared.resync.store(1, Ordering::Relaxed);
    let deadline = Instant::now() + Duration::from_secs(60);
    while shared.resync.load(Ordering::Relaxed) != 3 {
        a.pump(base, &mut |_| {}, true);
        if Instant::now() > deadline {
            return Err("bulk phase: not complete after 60 s".into());
        }
    }
    let bulk_ms = shared.bulk_ms.load(Ordering::Relaxed).saturating_sub(1);
    println!("sync: bulk of {n} connections (request to complete) in {bulk_ms} ms");

    // 3. Lag at LAG_RATE/s offered.
    let retransmits0 = a.e.stats().retransmits;
    let mut max_gap = Duration::ZERO;
    let mut last = Instant::now();
    let t0 = Instant::now();
    let mut made: u64 = 0;
    let lag_total = lag_n as u64;
    while made < lag_total {
        let due = ((t0.elapsed().as_micros() as u64) * LAG_RATE / 1_000_000).min(lag_total);
        let now = base.elapsed().as_millis() as Millis;
        while made < due {
            let i = n + made as u32;
            let k = key(i);
            let e = ConnEntry::new(ConnState::Tcp(TcpState::Established), true, 1, 0, now);
            a.t.insert_conn(k, e);
            if let Some(slot) = shared.sent_ns.get(i as usize) {
                slot.store(base.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            a.e.conn_changed(k, &e, now);
            made += 1;
        }
        a.pump(base, &mut |_| {}, true);
        max_gap = max_gap.max(last.elapsed());
        last = Instant::now();
    }
    let lag_retransmits = a.e.stats().retransmits - retransmits0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.e.backlog() != (0, 0) && Instant::now() < deadline {
        a.pump(base, &mut |_| {}, true);
    }
    std::thread::sleep(Duration::from_millis(100));
    shared.stop.store(true, Ordering::Relaxed);
    let (mut lags, b_conns) = receiver
        .join()
        .map_err(|_| "receiver thread panicked".to_string())?;
    if lags.len() < lag_n {
        return Err(format!(
            "lag phase: {} of {lag_n} changes applied",
            lags.len()
        ));
    }
    lags.sort_unstable();
    let pct = |p: f64| lags[((lags.len() as f64 * p) as usize).min(lags.len() - 1)] as f64 / 1e6;
    println!(
        "sync: lag at {LAG_RATE} updates/s offered for {LAG_SECS} s: p50 {:.3} ms p99 {:.3} ms max {:.3} ms; receiver holds {b_conns} connections; retransmits {lag_retransmits}; longest sender loop {:.3} ms",
        pct(0.5),
        pct(0.99),
        pct(1.0),
        max_gap.as_secs_f64() * 1e3
    );
    println!(
        "sync: updates_per_s={ups} bulk_1m_ms={bulk_ms} p99_lag_ms={:.3}",
        pct(0.99)
    );
    Ok(())
}
