//! The main HA link: the LAN9118 under embassy-net, a static IPv4 address from the
//! configuration block, and one UDP socket for member frames.

use defmt::{info, warn};
use embassy_executor::Spawner;
use embassy_net::udp::{PacketMetadata, UdpSocket};
use embassy_net::{Ipv4Address, Ipv4Cidr, StackResources, StaticConfigV4};
use ha_agent::LinkId;
use ha_board::eth::{EthBuffers, Lan9118};
use ha_proto::config_block::ConfigBlock;
use ha_proto::frame::MAX_FRAME_LEN;
use static_cell::{ConstStaticCell, StaticCell};

use crate::{now_ms, SharedAgent, StartError, INPUT};

/// The main link's UDP socket, shared by its receive task and the agent task.
pub type SharedSocket = &'static UdpSocket<'static>;
/// Where each peer listens on the main link.
pub type PeerList = &'static [(Ipv4Address, u16)];

/// Sockets of the network stack: the main HA link's UDP socket.
const NET_SOCKETS: usize = 1;
/// UDP buffers of the main link: one largest member frame (`MAX_FRAME_LEN`) plus room for
/// a few heartbeats (about 150 bytes each) queued behind it.
const UDP_BUF: usize = 2048;
/// Datagrams queued each way.
const UDP_PACKETS: usize = 8;

/// Length of the network prefix shared by `me` and every address in `others`, at most /24
/// (the members sit on one Ethernet segment; the block carries addresses, not a mask).
fn shared_prefix(me: [u8; 4], others: impl Iterator<Item = [u8; 4]>) -> u8 {
    let me = u32::from_be_bytes(me);
    others
        .map(|o| (me ^ u32::from_be_bytes(o)).leading_zeros() as u8)
        .fold(24, u8::min)
}

#[inline(never)]
/// Brings up the LAN9118 and embassy-net with the member's static address, binds the main
/// link's UDP port and returns the socket and the peers' endpoints.
pub fn start_net(
    spawner: Spawner,
    block: &ConfigBlock,
    epoch: u32,
) -> Result<(SharedSocket, PeerList), StartError> {
    let own = block.own_link().ok_or(StartError::NoAddress)?;
    let ip = own.ip;
    // Locally administered MAC from the IPv4 address: unique on the segment, stable.
    let mac = [0x02, 0x48, ip[0], ip[1], ip[2], ip[3]];
    static ETH_BUFS: ConstStaticCell<EthBuffers> = ConstStaticCell::new(EthBuffers::new());
    let driver = Lan9118::new(mac, ETH_BUFS.take()).map_err(StartError::Eth)?;
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
    let mut socket = UdpSocket::new(
        stack,
        RX_META.take(),
        RX_BUF.take(),
        TX_META.take(),
        TX_BUF.take(),
    );
    socket.bind(own.port).map_err(|_| StartError::Bind)?;
    static SOCKET: StaticCell<UdpSocket<'static>> = StaticCell::new();
    let socket: SharedSocket = SOCKET.init(socket);

    static PEERS: StaticCell<heapless::Vec<(Ipv4Address, u16), { ha_proto::msg::MAX_MEMBERS }>> =
        StaticCell::new();
    let peers = PEERS.init(
        block
            .peers()
            .map(|p| {
                let a = p.main_link.ip;
                (Ipv4Address::new(a[0], a[1], a[2], a[3]), p.main_link.port)
            })
            .collect(),
    );
    info!(
        "main link: {=u8}.{=u8}.{=u8}.{=u8}/{=u8} port {=u16}, {=usize} peers",
        ip[0],
        ip[1],
        ip[2],
        ip[3],
        prefix,
        own.port,
        peers.len()
    );
    Ok((socket, peers))
}

/// Runs the network stack.
#[embassy_executor::task]
async fn net_task(mut runner: embassy_net::Runner<'static, Lan9118>) -> ! {
    runner.run().await
}

/// The main HA link: member frames in UDP datagrams.
#[embassy_executor::task]
pub async fn main_rx_task(agent: SharedAgent, socket: SharedSocket) {
    let mut buf = [0u8; MAX_FRAME_LEN];
    loop {
        match socket.recv_from(&mut buf).await {
            Ok((n, _from)) => {
                if let Some(frame) = buf.get_mut(..n) {
                    agent.borrow_mut().on_frame(now_ms(), LinkId::MAIN, frame);
                    INPUT.signal(());
                }
            }
            Err(_) => warn!("main link: datagram larger than a frame dropped"),
        }
    }
}
