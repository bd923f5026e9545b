//! Interface monitoring through rtnetlink: the link state (administratively up and carrier)
//! of every interface, kept current from the kernel's `RTMGRP_LINK` notifications.
//!
//! [`parse_link_messages`] is the pure part (netlink bytes → link records); [`LinkMonitor`]
//! owns the netlink socket. [`interfaces_msg`] turns the configured interfaces and their
//! weights into the [`HostMsg::Interfaces`] report for the management controller.

use std::collections::BTreeMap;
use std::io;
use std::time::Duration;

use ha_proto::msg::host::{HostMsg, IfaceState};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use ha_hostlink::wait_readable;

/// Multicast group bit of link notifications (`RTMGRP_LINK` in `linux/rtnetlink.h`).
const RTMGRP_LINK: u32 = 1;

/// Receive buffer of the netlink socket: a link dump of a 2U appliance (≤ 64 interfaces of
/// ~1.5 KiB each) arrives in several datagrams of at most 32 KiB (the kernel's dump chunk).
const RECV_BUF: usize = 64 * 1024;

/// One link as the kernel reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkRecord {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Administratively up (`IFF_UP`) and with carrier (`IFF_LOWER_UP`).
    pub up: bool,
    /// The interface was deleted (`RTM_DELLINK`).
    pub deleted: bool,
}

/// Why netlink bytes were not understood.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "netlink: {}", self.0)
    }
}

impl std::error::Error for ParseError {}

/// Link state from a link message's flags: up and carrier.
pub fn link_up(flags: LinkFlags) -> bool {
    flags.contains(LinkFlags::Up) && flags.contains(LinkFlags::LowerUp)
}

fn record(msg: &LinkMessage, deleted: bool) -> Option<LinkRecord> {
    let name = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })?;
    Some(LinkRecord {
        index: msg.header.index,
        name,
        up: !deleted && link_up(msg.header.flags),
        deleted,
    })
}

/// Netlink message types of link notifications (`linux/rtnetlink.h`).
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
/// Bytes of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;

/// Parses one netlink datagram (several messages back to back). Returns the link records and
/// whether the datagram ended a dump (`NLMSG_DONE`).
///
/// A link message whose attributes this build of `netlink-packet-route` cannot decode (newer
/// kernels add attributes) still yields its index and, from its type and `ifi_flags`, its
/// state, with an empty name: [`LinkMonitor`] resolves the name from the index.
pub fn parse_link_messages(mut bytes: &[u8]) -> Result<(Vec<LinkRecord>, bool), ParseError> {
    let mut out = Vec::new();
    let mut done = false;
    while !bytes.is_empty() {
        let field = |at: usize| -> Result<[u8; 4], ParseError> {
            bytes
                .get(at..at + 4)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| ParseError("truncated message".into()))
        };
        let len = u32::from_ne_bytes(field(0)?) as usize;
        if len < NLMSG_HDRLEN || len > bytes.len() {
            return Err(ParseError(format!("bad message length {len}")));
        }
        let [t0, t1, _, _] = field(4)?;
        let kind = u16::from_ne_bytes([t0, t1]);
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len]) {
            Ok(msg) => match msg.payload {
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::NewLink(l)) => {
                    out.extend(record(&l, false));
                }
                NetlinkPayload::InnerMessage(RouteNetlinkMessage::DelLink(l)) => {
                    out.extend(record(&l, true));
                }
                NetlinkPayload::Done(_) => done = true,
                NetlinkPayload::Error(e) => {
                    return Err(ParseError(format!("kernel error {:?}", e.code)));
                }
                _ => {}
            },
            Err(e) if kind == RTM_NEWLINK || kind == RTM_DELLINK => {
                // struct ifinfomsg: family u8, pad u8, type u16, index i32, flags u32, change u32.
                let index = u32::from_ne_bytes(field(NLMSG_HDRLEN + 4)?);
                let flags =
                    LinkFlags::from_bits_retain(u32::from_ne_bytes(field(NLMSG_HDRLEN + 8)?));
                let deleted = kind == RTM_DELLINK;
                if index == 0 {
                    return Err(ParseError(e.to_string()));
                }
                out.push(LinkRecord {
                    index,
                    name: String::new(),
                    up: !deleted && link_up(flags),
                    deleted,
                });
            }
            Err(e) => return Err(ParseError(e.to_string())),
        }
        // Messages are 4-byte aligned.
        let step = len.div_ceil(4) * 4;
        bytes = bytes.get(step..).unwrap_or(&[]);
    }
    Ok((out, done))
}

/// A netlink route socket subscribed to link notifications, with the current state of
/// every link.
#[derive(Debug)]
pub struct LinkMonitor {
    socket: Socket,
    links: BTreeMap<String, LinkRecord>,
    buf: Vec<u8>,
    seq: u32,
}

impl LinkMonitor {
    /// Opens the socket, subscribes to link notifications and loads the current links.
    pub fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, RTMGRP_LINK))?;
        let mut m = Self {
            socket,
            links: BTreeMap::new(),
            buf: vec![0; RECV_BUF],
            seq: 0,
        };
        m.dump()?;
        Ok(m)
    }

    /// Asks the kernel for every link and waits (at most 2 s) for the end of the dump.
    pub fn dump(&mut self) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let mut packet = NetlinkMessage::new(
            NetlinkHeader::default(),
            NetlinkPayload::from(RouteNetlinkMessage::GetLink(LinkMessage::default())),
        );
        packet.header.flags = NLM_F_DUMP | NLM_F_REQUEST;
        packet.header.sequence_number = self.seq;
        packet.finalize();
        let mut req = vec![0; packet.buffer_len()];
        packet.serialize(&mut req);
        self.socket
            .send_to(&req, &SocketAddr::new(0, 0), 0)
            .map(|_| ())?;
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "netlink link dump did not finish",
                ));
            }
            if !wait_readable(&self.socket, deadline - now)? {
                continue;
            }
            let (_, done) = self.read_once()?;
            if done {
                return Ok(());
            }
        }
    }

    fn read_once(&mut self) -> io::Result<(Vec<LinkRecord>, bool)> {
        let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
        let (recs, done) = parse_link_messages(&self.buf[..n])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
        let mut changed = Vec::new();
        for mut r in recs {
            if r.name.is_empty() {
                match self.links.values().find(|l| l.index == r.index) {
                    Some(known) => r.name = known.name.clone(),
                    None => continue,
                }
            }
            let differs = self.links.get(&r.name).is_none_or(|old| old.up != r.up);
            if r.deleted {
                self.links.remove(&r.name);
            } else {
                self.links.insert(r.name.clone(), r.clone());
            }
            if differs || r.deleted {
                changed.push(r);
            }
        }
        Ok((changed, done))
    }

    /// Waits up to `timeout` for notifications; returns the links whose state changed.
    pub fn poll(&mut self, timeout: Duration) -> io::Result<Vec<LinkRecord>> {
        if !wait_readable(&self.socket, timeout)? {
            return Ok(Vec::new());
        }
        let mut all = Vec::new();
        loop {
            let (c, _) = self.read_once()?;
            all.extend(c);
            if !wait_readable(&self.socket, Duration::ZERO)? {
                return Ok(all);
            }
        }
    }

    /// Index of a link, when the kernel has it.
    pub fn index_of(&self, name: &str) -> Option<u32> {
        self.links.get(name).map(|r| r.index)
    }

    /// Current state of a link: `None` when the kernel has no such interface.
    pub fn is_up(&self, name: &str) -> Option<bool> {
        self.links.get(name).map(|r| r.up)
    }

    /// Every known link.
    pub fn links(&self) -> impl Iterator<Item = &LinkRecord> {
        self.links.values()
    }
}

/// Sets interface `index` administratively up or down (`RTM_SETLINK`, like `ip link set`),
/// and waits for the kernel's answer.
pub fn set_link_up(index: u32, up: bool) -> io::Result<()> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    let mut msg = LinkMessage::default();
    msg.header.index = index;
    msg.header.flags = if up {
        LinkFlags::Up
    } else {
        LinkFlags::empty()
    };
    msg.header.change_mask = LinkFlags::Up;
    let mut packet = NetlinkMessage::new(
        NetlinkHeader::default(),
        NetlinkPayload::from(RouteNetlinkMessage::SetLink(msg)),
    );
    packet.header.flags = NLM_F_REQUEST | netlink_packet_core::NLM_F_ACK;
    packet.header.sequence_number = 1;
    packet.finalize();
    let mut req = vec![0; packet.buffer_len()];
    packet.serialize(&mut req);
    socket.send_to(&req, &SocketAddr::new(0, 0), 0)?;
    if !wait_readable(&socket, Duration::from_secs(2))? {
        return Err(io::Error::new(io::ErrorKind::TimedOut, "no netlink answer"));
    }
    let mut buf = vec![0u8; 4096];
    let n = socket.recv(&mut &mut buf[..], 0)?;
    let ack: NetlinkMessage<RouteNetlinkMessage> = NetlinkMessage::deserialize(&buf[..n])
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
    match ack.payload {
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(()),
            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
        },
        _ => Ok(()),
    }
}

/// One monitored interface of the daemon's configuration.
#[derive(Clone, Debug, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub struct MonitoredIface {
    /// Interface name.
    pub name: String,
    /// Weight in the quality factor (0..=9999, default 100).
    #[serde(default = "default_weight")]
    pub weight: u16,
    /// Aggregate (bond) number, if the interface is part of one.
    #[serde(default)]
    pub aggregate: Option<u8>,
}

fn default_weight() -> u16 {
    100
}

/// Why an interface list cannot be reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportError {
    /// More interfaces than [`ha_proto::msg::MAX_IFACES`].
    TooMany(usize),
    /// A name longer than [`ha_proto::msg::IFACE_NAME_LEN`].
    NameTooLong(String),
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportError::TooMany(n) => write!(
                f,
                "{n} monitored interfaces, at most {} fit the host link",
                ha_proto::msg::MAX_IFACES
            ),
            ReportError::NameTooLong(n) => write!(f, "interface name {n:?} too long"),
        }
    }
}

impl std::error::Error for ReportError {}

/// The [`HostMsg::Interfaces`] report: each configured interface with its weight, up when the
/// kernel says so (a missing interface is down).
pub fn interfaces_msg(
    ifaces: &[MonitoredIface],
    is_up: impl Fn(&str) -> Option<bool>,
) -> Result<HostMsg, ReportError> {
    let mut v = heapless::Vec::new();
    for i in ifaces {
        let name = heapless::String::try_from(i.name.as_str())
            .map_err(|_| ReportError::NameTooLong(i.name.clone()))?;
        v.push(IfaceState {
            name,
            up: is_up(&i.name).unwrap_or(false),
            weight: i.weight.min(ha_proto::config_block::MAX_WEIGHT),
            aggregate: i.aggregate,
        })
        .map_err(|_| ReportError::TooMany(ifaces.len()))?;
    }
    Ok(HostMsg::Interfaces(v))
}

#[cfg(test)]
mod tests;
