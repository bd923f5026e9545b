//! The main HA link: the board's Ethernet (LAN9118 under QEMU) under embassy-net, a static IPv4 address from the
//! configuration block, a UDP socket bound to the HA port for receiving member frames and one
//! for sending them ([`MainTx`]).

use core::cell::RefCell;
use core::task::Poll;

use defmt::{info, warn};
use embassy_executor::Spawner;
use embassy_futures::poll_once;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use embassy_time::{Duration, Instant};
use ha_agent::LinkId;
use ha_board::eth::EthBuffers;
use ha_proto::config_block::ConfigBlock;
use ha_proto::frame::MAX_FRAME_LEN;
use ha_proto::msg::Serial;
use static_cell::{ConstStaticCell, StaticCell};

use crate::board::EthDriver;
use crate::{now_ms, SharedAgent, StartError, INPUT};

/// The main link's receiving socket (bound to the HA port), used by its receive task.
pub type RxSocket = UdpSocket<'static>;
/// Each peer and where it listens on the main link. Replaced in place when the main CPU
/// sends a new member list (`HostMsg::Members`, see [`set_peers`]); borrowed only between
/// two `.await`s.
pub type PeerList = &'static RefCell<Peers>;
/// The peers' main-link addresses.
pub type Peers = heapless::Vec<(Serial, Ipv4Address, u16), { ha_proto::msg::MAX_MEMBERS }>;

/// Replaces `peers` with every member of `members` but `me`.
pub fn set_peers(peers: PeerList, me: Serial, members: &[ha_proto::config_block::MemberEntry]) {
    let mut list = peers.borrow_mut();
    list.clear();
    for m in members.iter().filter(|m| m.serial != me) {
        let a = m.main_link.ip;
        // At most MAX_MEMBERS entries arrive, so this always fits.
        let _ = list.push((
            m.serial,
            Ipv4Address::new(a[0], a[1], a[2], a[3]),
            m.main_link.port,
        ));
    }
}

/// Sockets of the network stack: the main link's receiving socket and two sending ones.
const NET_SOCKETS: usize = 3;
/// UDP buffers of the main link (one per direction): one largest member frame
/// (`MAX_FRAME_LEN`) plus room for a few heartbeats (about 150 bytes each) behind it.
const UDP_BUF: usize = 2048;
/// Datagrams queued per direction.
const UDP_PACKETS: usize = 8;
/// The unused direction of each socket: smallest buffers smoltcp accepts.
const UNUSED_BUF: usize = 1;
/// Sending buffer for peers whose main link is down: a few heartbeats (a larger frame to a
/// peer that is down is dropped).
const PROBE_BUF: usize = 512;
/// Datagrams queued for peers whose main link is down.
const PROBE_PACKETS: usize = 4;
/// Frames still queued this long after they were handed over are stuck behind an address
/// that does not resolve (a healthy queue drains within microseconds of the stack running).
const STUCK_AFTER: Duration = Duration::from_millis(2);

/// Sends member frames to every peer over UDP without ever waiting.
///
/// smoltcp keeps a frame whose next hop does not resolve (a peer that is down, once its ARP
/// entry expired) at the head of its socket's queue and pauses that socket's sending for a
/// second at a time. So frames to peers whose main link is up leave through one socket and
/// frames to the other peers through a second one: a down peer never holds back a live one.
/// A queue still not empty at the next round is flushed (socket closed and bound again).
pub struct MainTx {
    live: TxSocket,
    probe: TxSocket,
}

/// One sending socket.
struct TxSocket {
    socket: UdpSocket<'static>,
    port: u16,
    last_round: Instant,
    dropping: bool,
    name: &'static str,
}

impl TxSocket {
    fn new(socket: UdpSocket<'static>, port: u16, name: &'static str) -> Self {
        Self {
            socket,
            port,
            last_round: Instant::now(),
            dropping: false,
            name,
        }
    }

    /// Drops frames stuck since the last round.
    fn flush_if_stuck(&mut self, now: Instant) {
        let queued = matches!(poll_once(self.socket.flush()), Poll::Pending);
        if queued && now.saturating_duration_since(self.last_round) >= STUCK_AFTER {
            self.socket.close();
            if self.socket.bind(self.port).is_err() {
                warn!("main link: cannot bind the {=str} socket again", self.name);
            }
        }
        self.last_round = now;
    }

    fn send(&mut self, frame: &[u8], to: impl Iterator<Item = (Ipv4Address, u16)>) {
        let mut dropped = false;
        for endpoint in to {
            match poll_once(self.socket.send_to(frame, endpoint)) {
                Poll::Ready(Ok(())) => {}
                Poll::Ready(Err(_)) => dropped = true,
                Poll::Pending => dropped = true,
            }
        }
        if dropped && !self.dropping {
            warn!("main link: dropping frames ({=str} peers)", self.name);
        } else if !dropped && self.dropping {
            info!("main link: sending again ({=str} peers)", self.name);
        }
        self.dropping = dropped;
    }
}

impl MainTx {
    /// Sends `frame` to the peers whose main link is up (`live`) and to the others.
    pub fn send_round(
        &mut self,
        frame: &[u8],
        live: impl Iterator<Item = (Ipv4Address, u16)>,
        others: impl Iterator<Item = (Ipv4Address, u16)>,
    ) {
        let now = Instant::now();
        self.live.flush_if_stuck(now);
        self.probe.flush_if_stuck(now);
        self.live.send(frame, live);
        self.probe.send(frame, others);
    }
}

/// Length of the network prefix shared by `me` and every address in `others`, at most /24
/// (the members sit on one Ethernet segment; the block carries addresses, not a mask).
fn shared_prefix(me: [u8; 4], others: impl Iterator<Item = [u8; 4]>) -> u8 {
    let me = u32::from_be_bytes(me);
    others
        .map(|o| (me ^ u32::from_be_bytes(o)).leading_zeros() as u8)
        .fold(24, u8::min)
}

#[inline(never)]
/// Brings up the board's Ethernet and embassy-net with the member's static address, binds the main
/// link's UDP port and returns the receiving socket, the sender and the peers.
pub fn start_net(
    spawner: Spawner,
    block: &ConfigBlock,
    epoch: u32,
) -> Result<(RxSocket, MainTx, PeerList), StartError> {
    let own = block.own_link().ok_or(StartError::NoAddress)?;
    let ip = own.ip;
    // Locally administered MAC from the IPv4 address: unique on the segment, stable.
    let mac = [0x02, 0x48, ip[0], ip[1], ip[2], ip[3]];
    static ETH_BUFS: ConstStaticCell<EthBuffers> = ConstStaticCell::new(EthBuffers::new());
    let driver = EthDriver::new(mac, ETH_BUFS.take()).map_err(StartError::Eth)?;
    let prefix = shared_prefix(ip, block.peers().map(|p| p.main_link.ip));
    let config = embassy_net::Config::ipv4_static(StaticConfigV4 {
        address: Ipv4Cidr::new(Ipv4Address::new(ip[0], ip[1], ip[2], ip[3]), prefix),
        gateway: None,
        dns_servers: Default::default(),
    });
    static RESOURCES: ConstStaticCell<StackResources<NET_SOCKETS>> =
        ConstStaticCell::new(StackResources::new());
    let seed = (u64::from(epoch) << 32) | u64::from(u32::from_be_bytes(ip));
    let (stack, runner) = embassy_net::new(driver, config, RESOURCES.take(), seed);
    if let Ok(t) = net_task(runner) {
        spawner.spawn(t);
    }

    static RX_META: ConstStaticCell<[PacketMetadata; UDP_PACKETS]> =
        ConstStaticCell::new([PacketMetadata::EMPTY; UDP_PACKETS]);
    static TX_META: ConstStaticCell<[PacketMetadata; UDP_PACKETS]> =
        ConstStaticCell::new([PacketMetadata::EMPTY; UDP_PACKETS]);
    static RX_BUF: ConstStaticCell<[u8; UDP_BUF]> = ConstStaticCell::new([0; UDP_BUF]);
    static TX_BUF: ConstStaticCell<[u8; UDP_BUF]> = ConstStaticCell::new([0; UDP_BUF]);
    static UNUSED_META: ConstStaticCell<[[PacketMetadata; 1]; NET_SOCKETS]> =
        ConstStaticCell::new([[PacketMetadata::EMPTY; 1]; NET_SOCKETS]);
    static UNUSED: ConstStaticCell<[[u8; UNUSED_BUF]; NET_SOCKETS]> =
        ConstStaticCell::new([[0; UNUSED_BUF]; NET_SOCKETS]);
    static PROBE_META: ConstStaticCell<[PacketMetadata; PROBE_PACKETS]> =
        ConstStaticCell::new([PacketMetadata::EMPTY; PROBE_PACKETS]);
    static PROBE: ConstStaticCell<[u8; PROBE_BUF]> = ConstStaticCell::new([0; PROBE_BUF]);
    let [m0, m1, m2] = UNUSED_META.take();
    let [u0, u1, u2] = UNUSED.take();
    let mut rx = UdpSocket::new(stack, RX_META.take(), RX_BUF.take(), m0, u0);
    rx.bind(own.port).map_err(|_| StartError::Bind)?;
    // The sending sockets' own ports sit next to the HA port (nothing is received there).
    let mut live = UdpSocket::new(stack, m1, u1, TX_META.take(), TX_BUF.take());
    let live_port = own.port.wrapping_add(1);
    live.bind(live_port).map_err(|_| StartError::Bind)?;
    let mut probe = UdpSocket::new(stack, m2, u2, PROBE_META.take(), PROBE.take());
    let probe_port = own.port.wrapping_add(2);
    probe.bind(probe_port).map_err(|_| StartError::Bind)?;
    let tx = MainTx {
        live: TxSocket::new(live, live_port, "live"),
        probe: TxSocket::new(probe, probe_port, "down"),
    };

    static PEERS: StaticCell<RefCell<Peers>> = StaticCell::new();
    let peers: PeerList = PEERS.init(RefCell::new(heapless::Vec::new()));
    set_peers(peers, block.serial, &block.members);
    info!(
        "main link: {=u8}.{=u8}.{=u8}.{=u8}/{=u8} port {=u16}, {=usize} peers",
        ip[0],
        ip[1],
        ip[2],
        ip[3],
        prefix,
        own.port,
        peers.borrow().len()
    );
    Ok((rx, tx, peers))
}

/// Runs the network stack.
#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, EthDriver>) -> ! {
    runner.run().await
}

/// The main HA link: member frames in UDP datagrams.
#[embassy_executor::task]
pub async fn main_rx_task(agent: SharedAgent, mut socket: RxSocket) {
    loop {
        socket
            .recv_from_with(|datagram, _from| handle_datagram(agent, datagram))
            .await;
    }
}

/// One datagram of the main link, handed to the agent in a copy on the stack (the agent
/// opens frames in place): the copy lives only while the agent handles it, so the task keeps
/// no frame buffer in its state (RAM, docs/firmware.md "Size").
#[inline(never)]
fn handle_datagram(agent: SharedAgent, datagram: &[u8]) {
    let mut buf = [0u8; MAX_FRAME_LEN];
    match buf.get_mut(..datagram.len()) {
        Some(frame) => {
            frame.copy_from_slice(datagram);
            agent
                .borrow_mut()
                .handle_member_frame(now_ms(), LinkId::MAIN, frame);
            INPUT.signal(());
        }
        None => warn!("main link: datagram larger than a frame dropped"),
    }
}
