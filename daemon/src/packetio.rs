//! The fast path's I/O shell: one AF_PACKET socket per forwarding interface (through
//! `pnet_datalink`), one receive thread per interface, and a shared [`Core`] (the
//! [`FastPath`] and its [`Filter`]) behind one mutex.
//!
//! A production build would not copy every packet through a packet socket: see
//! `docs/daemon.md` (AF_XDP or DPDK for the fast path, or the kernel's own forwarding with
//! conntrack/nftables offload, with this daemon only programming the tables).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pnet_datalink::{Channel, DataLinkReceiver, DataLinkSender, NetworkInterface};

use crate::fastpath::{FastPath, Filter, Mac, Out, Side};

/// How long a receive thread blocks before it looks at the stop flag and expires waiting
/// frames.
pub const RX_POLL: Duration = Duration::from_millis(20);
/// Packet socket buffers: one frame of a 1500-byte MTU link with room for VLAN tags and
/// jumbo frames up to 9 KiB.
pub const FRAME_BUF: usize = 9216;
/// Kernel receive and send buffers of each packet socket. After a takeover every connection
/// retransmits at about the same moment: thousands of frames in a burst, which the default
/// buffer (~200 KiB, a few hundred frames) would drop, sending those connections into a
/// longer TCP back-off.
pub const SOCKET_BUF: usize = 8 << 20;

/// An AF_PACKET socket for every protocol with [`SOCKET_BUF`] buffers (forced past the
/// sysctl limits, as root; the plain request otherwise).
fn packet_socket() -> io::Result<std::os::fd::OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
    let fd = socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::EthAll,
    )?;
    force_buffers(&fd, SOCKET_BUF)?;
    Ok(fd)
}

/// Gives a socket `bytes` of kernel buffer each way: forced past the sysctl limits (as root,
/// `SO_RCVBUFFORCE`/`SO_SNDBUFFORCE`), the plain request otherwise, which the kernel caps at
/// `net.core.rmem_max`/`wmem_max`. Used by the packet sockets and the state-sync socket.
pub(crate) fn force_buffers(fd: &impl std::os::fd::AsFd, bytes: usize) -> io::Result<()> {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(fd, sockopt::RcvBufForce, &bytes).is_err() {
        setsockopt(fd, sockopt::RcvBuf, &bytes)?;
    }
    if setsockopt(fd, sockopt::SndBufForce, &bytes).is_err() {
        setsockopt(fd, sockopt::SndBuf, &bytes)?;
    }
    Ok(())
}

/// The fast path and its filter, locked together: a packet's verdict and its forwarding
/// happen under one lock, so that a role change never sees half of a packet.
#[derive(Debug)]
pub struct Core<F> {
    /// The router.
    pub fp: FastPath,
    /// The connection table.
    pub filter: F,
}

/// The sending half of an interface.
pub struct PortTx {
    name: String,
    tx: Mutex<Box<dyn DataLinkSender>>,
    send_errors: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for PortTx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PortTx").field("name", &self.name).finish()
    }
}

impl PortTx {
    /// Sends one frame; errors are counted (a full socket buffer drops the frame, as a
    /// switch would).
    pub fn send(&self, frame: &[u8]) {
        let ok = match self.tx.lock() {
            Ok(mut tx) => matches!(tx.send_to(frame, None), Some(Ok(()))),
            Err(_) => false,
        };
        if !ok {
            self.send_errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frames that could not be sent.
    pub fn send_errors(&self) -> u64 {
        self.send_errors.load(Ordering::Relaxed)
    }
}

/// An opened interface: its MAC, the sending half and the receiving half.
pub struct Port {
    /// Interface name.
    pub name: String,
    /// Its Ethernet address.
    pub mac: Mac,
    /// Sending half.
    pub tx: Arc<PortTx>,
    /// Receiving half.
    pub rx: Box<dyn DataLinkReceiver>,
}

impl std::fmt::Debug for Port {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Port")
            .field("name", &self.name)
            .field("mac", &self.mac)
            .finish_non_exhaustive()
    }
}

fn find_iface(name: &str) -> io::Result<NetworkInterface> {
    pnet_datalink::interfaces()
        .into_iter()
        .find(|i| i.name == name)
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("no interface {name}")))
}

/// Opens an AF_PACKET socket on interface `name` (promiscuous, all protocols).
pub fn open_port(name: &str) -> io::Result<Port> {
    let iface = find_iface(name)?;
    let mac = iface
        .mac
        .map(|m| [m.0, m.1, m.2, m.3, m.4, m.5])
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{name} has no MAC")))?;
    use std::os::fd::IntoRawFd;
    let cfg = pnet_datalink::Config {
        read_timeout: Some(RX_POLL),
        read_buffer_size: FRAME_BUF,
        write_buffer_size: FRAME_BUF,
        promiscuous: true,
        // pnet binds it to the interface and owns it from here on.
        socket_fd: Some(packet_socket()?.into_raw_fd()),
        ..Default::default()
    };
    match pnet_datalink::channel(&iface, cfg)? {
        Channel::Ethernet(tx, rx) => Ok(Port {
            name: name.to_string(),
            mac,
            tx: Arc::new(PortTx {
                name: name.to_string(),
                tx: Mutex::new(tx),
                send_errors: Default::default(),
            }),
            rx,
        }),
        _ => Err(io::Error::other(format!("{name}: not an Ethernet channel"))),
    }
}

/// The two sending halves, indexed by side.
#[derive(Clone, Debug)]
pub struct Senders {
    /// Inside interface.
    pub inside: Arc<PortTx>,
    /// Outside interface.
    pub outside: Arc<PortTx>,
}

impl Senders {
    /// Sends every frame on its side.
    pub fn send_all(&self, outs: &[Out]) {
        for o in outs {
            match o.side {
                Side::Inside => self.inside.send(&o.frame),
                Side::Outside => self.outside.send(&o.frame),
            }
        }
    }
}

/// Starts the receive thread of `side`: every frame goes through the core, the results are
/// sent. Ends when `stop` is set.
pub fn spawn_rx<F: Filter + Send + 'static>(
    side: Side,
    mut rx: Box<dyn DataLinkReceiver>,
    core: Arc<Mutex<Core<F>>>,
    senders: Senders,
    stop: Arc<AtomicBool>,
) -> JoinHandle<io::Result<()>> {
    std::thread::Builder::new()
        .name(format!("ha-rx-{side:?}"))
        .spawn(move || {
            let mut last_expire = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                let outs = match rx.next() {
                    Ok(frame) => {
                        let now = Instant::now();
                        let mut c = core
                            .lock()
                            .map_err(|_| io::Error::other("fast path lock poisoned"))?;
                        let Core { fp, filter } = &mut *c;
                        fp.handle(side, frame, now, filter)
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::TimedOut
                                | io::ErrorKind::WouldBlock
                                | io::ErrorKind::Interrupted
                        ) =>
                    {
                        Vec::new()
                    }
                    // A link going down (an operator, or a bounce on swap) fails reads with
                    // ENETDOWN until it is up again; the socket stays bound.
                    Err(_) => {
                        std::thread::sleep(RX_POLL);
                        Vec::new()
                    }
                };
                senders.send_all(&outs);
                let now = Instant::now();
                if now.duration_since(last_expire) >= RX_POLL {
                    last_expire = now;
                    if let Ok(mut c) = core.lock() {
                        c.fp.expire(now);
                    }
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| std::thread::spawn(move || Err(e)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    struct Veth(String);

    impl Drop for Veth {
        fn drop(&mut self) {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }

    fn ip(args: &[&str]) {
        let st = Command::new("ip").args(args).status().expect("run ip");
        assert!(st.success(), "ip {args:?} failed");
    }

    /// A frame sent on one end of a veth pair (created for the test) is received on the
    /// other; our own transmission is also seen on the sending socket (which the fast path
    /// ignores by source MAC). Needs root (as CI runs).
    #[test]
    fn frames_cross_a_veth_pair() {
        let a = format!("hdp{}a", std::process::id() % 100_000);
        let b = format!("hdp{}b", std::process::id() % 100_000);
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        let _guard = Veth(a.clone());
        ip(&["link", "set", &a, "up"]);
        ip(&["link", "set", &b, "up"]);
        let pa = open_port(&a).expect("open a");
        let mut pb = open_port(&b).expect("open b");
        assert!(open_port("no-such-if0").is_err());
        let mut frame = vec![0u8; 60];
        frame[0..6].copy_from_slice(&pb.mac);
        frame[6..12].copy_from_slice(&pa.mac);
        frame[12..14].copy_from_slice(&[0x88, 0xb5]); // local experimental ethertype
        frame[14..20].copy_from_slice(b"hello!");
        pa.tx.send(&frame);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            assert!(Instant::now() < deadline, "frame never arrived");
            match pb.rx.next() {
                Ok(f) if f.len() >= 20 && &f[14..20] == b"hello!" => {
                    assert_eq!(&f[6..12], &pa.mac);
                    break;
                }
                _ => {}
            }
        }
        assert_eq!(pa.tx.send_errors(), 0);
    }
}
