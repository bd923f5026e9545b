//! [`CtEntry`] ⇄ ctnetlink message bytes, without I/O.
//!
//! The attributes `netlink-packet-netfilter` covers (tuples, status, TCP protocol info,
//! timeout, mark) go through its types; the entry's zone (`CTA_ZONE`), which it leaves as an
//! opaque attribute, is written and read here by hand (see [`zone_attr`], golden-bytes test).

use std::net::IpAddr;

use netlink_packet_core::{
    DefaultNla, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NlasIterator, NLM_F_ACK,
    NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::{
    ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple, Protocol,
    Status, TCPFlags, Tuple,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterProtoFamily, NetfilterSubsystem,
};

use super::expect::{self, ExpEvent, SUBSYS_EXP};
use super::{
    CtEntry, CtEvent, CtEventKind, CtTuple, KHelper, KSeqAdj, TcpInfo, IPS_CONFIRMED,
    STATUS_SETTABLE,
};

/// `CTA_ZONE`: the entry's zone, a big-endian u16 (`include/uapi/linux/netfilter/
/// nfnetlink_conntrack.h`). Hand-written: `netlink-packet-netfilter` 0.4 has no variant for it.
pub const CTA_ZONE: u16 = 18;
/// `CTA_NAT_SRC`: the source translation of a new entry (nested). Hand-written, like the
/// NAT attributes below: `netlink-packet-netfilter` 0.4 has no NAT support.
pub const CTA_NAT_SRC: u16 = 6;
/// `CTA_NAT_DST`: the destination translation of a new entry (nested).
pub const CTA_NAT_DST: u16 = 13;
/// `CTA_NAT_V4_MINIP` / `CTA_NAT_V4_MAXIP`: the IPv4 range of a translation (one address here).
const CTA_NAT_V4_MINIP: u16 = 1;
const CTA_NAT_V4_MAXIP: u16 = 2;
/// `CTA_NAT_PROTO`: the port range of a translation (nested).
const CTA_NAT_PROTO: u16 = 3;
/// `CTA_NAT_V6_MINIP` / `CTA_NAT_V6_MAXIP`.
const CTA_NAT_V6_MINIP: u16 = 4;
const CTA_NAT_V6_MAXIP: u16 = 5;
/// `CTA_PROTONAT_PORT_MIN` / `CTA_PROTONAT_PORT_MAX`: big-endian u16 each.
const CTA_PROTONAT_PORT_MIN: u16 = 1;
const CTA_PROTONAT_PORT_MAX: u16 = 2;
/// `CTA_HELP`: the entry's helper (nested). Hand-written: not in `netlink-packet-netfilter`.
pub const CTA_HELP: u16 = 5;
/// `CTA_HELP_NAME`: the helper's name, a NUL-terminated string.
const CTA_HELP_NAME: u16 = 1;
/// `CTA_SEQ_ADJ_ORIG` / `CTA_SEQ_ADJ_REPLY`: the TCP sequence adjustment of each direction
/// (nested). Hand-written: not in `netlink-packet-netfilter`.
pub const CTA_SEQ_ADJ_ORIG: u16 = 15;
/// See [`CTA_SEQ_ADJ_ORIG`].
pub const CTA_SEQ_ADJ_REPLY: u16 = 16;
/// `CTA_SEQADJ_CORRECTION_POS`, `_OFFSET_BEFORE`, `_OFFSET_AFTER`: big-endian u32 each (the
/// offsets are the kernel's `s32`, sent as their bits).
const CTA_SEQADJ_CORRECTION_POS: u16 = 1;
const CTA_SEQADJ_OFFSET_BEFORE: u16 = 2;
const CTA_SEQADJ_OFFSET_AFTER: u16 = 3;
/// `NLA_F_NESTED`: the attribute holds attributes.
const NLA_F_NESTED: u16 = 0x8000;
/// `IPS_SRC_NAT`: the entry's source is translated (the reply goes to `reply.dst`).
pub const IPS_SRC_NAT: u32 = 1 << 4;
/// `IPS_DST_NAT`: the entry's destination is translated (the reply comes from `reply.src`).
pub const IPS_DST_NAT: u32 = 1 << 5;
/// `NLM_F_EXCL` on an event: together with `NLM_F_CREATE` it marks a new entry.
const NLM_F_EXCL: u16 = 0x200;
/// Netlink messages are aligned to 4 bytes.
const NLMSG_ALIGN: usize = 4;
/// Size of `struct nlmsghdr`.
const NLMSG_HDRLEN: usize = 16;

/// Why bytes from the kernel could not be read as a conntrack message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// Not a valid netlink / ctnetlink message.
    Malformed(String),
    /// A conntrack message without the named mandatory part.
    Missing(&'static str),
    /// The kernel answered a request with this errno.
    Kernel(i32),
}

impl std::fmt::Display for CodecError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CodecError::Malformed(s) => write!(f, "malformed ctnetlink message: {s}"),
            CodecError::Missing(what) => write!(f, "conntrack message without {what}"),
            CodecError::Kernel(e) => write!(
                f,
                "the kernel refused the request: {}",
                std::io::Error::from_raw_os_error(-e)
            ),
        }
    }
}

impl std::error::Error for CodecError {}

/// What one message from a ctnetlink socket is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// An event, or one entry of a dump (reported as [`CtEventKind::Update`] unless the kernel
    /// flagged it as new).
    Entry(CtEvent),
    /// An expectation event, or one expectation of a dump.
    Expect(ExpEvent),
    /// The acknowledgement of request `seq` (success).
    Ack {
        /// Sequence number of the request.
        seq: u32,
    },
    /// The kernel refused request `seq` with `errno` (negative, as the kernel reports it).
    Refused {
        /// Sequence number of the request.
        seq: u32,
        /// The negative errno.
        errno: i32,
    },
    /// The end of a dump.
    Done,
    /// Anything else (other subsystems, no-ops): ignored.
    Other,
}

fn family(ip: &IpAddr) -> NetfilterProtoFamily {
    match ip {
        IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
        IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
    }
}

/// The nested attributes of a tuple (`CTA_TUPLE_IP`, `CTA_TUPLE_PROTO`).
pub(crate) fn tuple_attrs(t: &CtTuple) -> Vec<Tuple> {
    vec![
        Tuple::Ip(vec![
            IPTuple::SourceAddress(t.src),
            IPTuple::DestinationAddress(t.dst),
        ]),
        Tuple::Proto(vec![
            ProtoTuple::Protocol(Protocol::from(t.proto)),
            ProtoTuple::SourcePort(t.src_port),
            ProtoTuple::DestinationPort(t.dst_port),
        ]),
    ]
}

/// The `CTA_ZONE` attribute of `zone`: two bytes, big endian.
pub fn zone_attr(zone: u16) -> DefaultNla {
    DefaultNla::new(CTA_ZONE, zone.to_be_bytes().to_vec())
}

fn tcp_flags(flags: u8) -> Option<TCPFlags> {
    // `TCPFlags` has no public constructor; it parses `struct nf_ct_tcp_flags {flags, mask}`.
    // Mask 0xff: install exactly these flags.
    TCPFlags::parse(&[flags, 0xff]).ok()
}

/// One netlink attribute: header (length, type; native endian) and value, padded to 4 bytes.
fn nla(kind: u16, value: &[u8]) -> Vec<u8> {
    let len = 4 + value.len();
    let mut b = Vec::with_capacity(len.div_ceil(NLMSG_ALIGN) * NLMSG_ALIGN);
    b.extend((len as u16).to_ne_bytes());
    b.extend(kind.to_ne_bytes());
    b.extend(value);
    b.resize(len.div_ceil(NLMSG_ALIGN) * NLMSG_ALIGN, 0);
    b
}

/// Protocols whose translation carries a port.
fn has_ports(proto: u8) -> bool {
    matches!(proto, 6 | 17 | 33 | 132 | 136)
}

/// A translation attribute (`CTA_NAT_SRC` or `CTA_NAT_DST`): to exactly `addr` and, for
/// protocols with ports, exactly `port`. The kernel sets the translation up on a new entry
/// (`nf_nat_setup_info`) and derives the reply direction from it.
pub fn nat_attr(kind: u16, addr: IpAddr, proto: u8, port: u16) -> DefaultNla {
    let mut v = match addr {
        IpAddr::V4(a) => [
            nla(CTA_NAT_V4_MINIP, &a.octets()),
            nla(CTA_NAT_V4_MAXIP, &a.octets()),
        ]
        .concat(),
        IpAddr::V6(a) => [
            nla(CTA_NAT_V6_MINIP, &a.octets()),
            nla(CTA_NAT_V6_MAXIP, &a.octets()),
        ]
        .concat(),
    };
    if has_ports(proto) && port != 0 {
        let ports = [
            nla(CTA_PROTONAT_PORT_MIN, &port.to_be_bytes()),
            nla(CTA_PROTONAT_PORT_MAX, &port.to_be_bytes()),
        ]
        .concat();
        v.extend(nla(CTA_NAT_PROTO | NLA_F_NESTED, &ports));
    }
    DefaultNla::new(kind | NLA_F_NESTED, v)
}

/// The translations of `e`, from its status and reply direction: a source translation sends
/// replies to `reply.dst`, a destination translation has them come from `reply.src`.
pub fn nat_attrs(e: &CtEntry) -> Vec<DefaultNla> {
    let mut a = Vec::new();
    if e.status & IPS_DST_NAT != 0 {
        a.push(nat_attr(
            CTA_NAT_DST,
            e.reply.src,
            e.orig.proto,
            e.reply.src_port,
        ));
    }
    if e.status & IPS_SRC_NAT != 0 {
        a.push(nat_attr(
            CTA_NAT_SRC,
            e.reply.dst,
            e.orig.proto,
            e.reply.dst_port,
        ));
    }
    a
}

/// True when `e` is translated (its creation carries NAT attributes).
pub fn is_translated(e: &CtEntry) -> bool {
    e.status & (IPS_SRC_NAT | IPS_DST_NAT) != 0
}

/// True when the creation of `e` carries attributes the kernel may refuse on an entry that
/// exists (translations; a helper the existing entry lacks): on `EOPNOTSUPP` send
/// [`refresh_request`].
pub fn has_creation_attrs(e: &CtEntry) -> bool {
    is_translated(e) || e.helper.is_some()
}

/// The `CTA_HELP` attribute naming `h`.
pub fn help_attr(h: &KHelper) -> DefaultNla {
    let mut name = h.as_bytes().to_vec();
    name.push(0);
    DefaultNla::new(CTA_HELP | NLA_F_NESTED, nla(CTA_HELP_NAME, &name))
}

/// The `CTA_SEQ_ADJ_ORIG` or `CTA_SEQ_ADJ_REPLY` attribute (`kind`) of `a`.
pub fn seq_adj_attr(kind: u16, a: &KSeqAdj) -> DefaultNla {
    let v = [
        nla(CTA_SEQADJ_CORRECTION_POS, &a.correction_pos.to_be_bytes()),
        nla(CTA_SEQADJ_OFFSET_BEFORE, &a.offset_before.to_be_bytes()),
        nla(CTA_SEQADJ_OFFSET_AFTER, &a.offset_after.to_be_bytes()),
    ]
    .concat();
    DefaultNla::new(kind | NLA_F_NESTED, v)
}

/// The direction (0 original, 1 reply) and value of a sequence adjustment attribute; `None`
/// for other attributes. A missing part reads as 0, as the kernel's own parser takes it.
fn seq_adj_of(nla: &DefaultNla) -> Option<(usize, KSeqAdj)> {
    let dir = match nla.kind() & !NLA_F_NESTED {
        CTA_SEQ_ADJ_ORIG => 0,
        CTA_SEQ_ADJ_REPLY => 1,
        _ => return None,
    };
    let mut v = vec![0u8; nla.value_len()];
    nla.emit_value(&mut v);
    let mut a = KSeqAdj::default();
    for b in NlasIterator::new(&v[..]).flatten() {
        let Ok(x) = <[u8; 4]>::try_from(b.value()) else {
            continue;
        };
        match b.kind() {
            CTA_SEQADJ_CORRECTION_POS => a.correction_pos = u32::from_be_bytes(x),
            CTA_SEQADJ_OFFSET_BEFORE => a.offset_before = i32::from_be_bytes(x),
            CTA_SEQADJ_OFFSET_AFTER => a.offset_after = i32::from_be_bytes(x),
            _ => {}
        }
    }
    Some((dir, a))
}

fn helper_of(nla: &DefaultNla) -> Option<KHelper> {
    if nla.kind() & !NLA_F_NESTED != CTA_HELP {
        return None;
    }
    let mut v = vec![0u8; nla.value_len()];
    nla.emit_value(&mut v);
    NlasIterator::new(&v[..]).flatten().find_map(|b| {
        if b.kind() != CTA_HELP_NAME {
            return None;
        }
        let name = b.value().split(|c| *c == 0).next()?;
        KHelper::new(std::str::from_utf8(name).ok()?)
    })
}

/// The attributes of `e` for a `IPCTNL_MSG_CT_NEW` request; `nat`: with its translations (a
/// creation; the kernel refuses them on an entry that exists).
fn entry_attrs(e: &CtEntry, nat: bool) -> Vec<ConntrackAttribute> {
    let mut a = vec![
        ConntrackAttribute::CtaTupleOrig(tuple_attrs(&e.orig)),
        // A translated entry is created with the untranslated reply direction: the kernel's
        // NAT setup derives the translated one, and marks the entry translated only when the
        // two differ (given the translated reply it would see nothing to do, and packets would
        // leave untranslated).
        ConntrackAttribute::CtaTupleReply(tuple_attrs(&if nat && is_translated(e) {
            e.orig.inverse()
        } else {
            e.reply
        })),
        // Only the bits a member may set, and "confirmed", which the kernel gives every entry
        // it creates over ctnetlink and refuses to see changed (EBUSY without it).
        ConntrackAttribute::CtaStatus(Status::from_bits_retain(
            (e.status & STATUS_SETTABLE) | IPS_CONFIRMED,
        )),
        ConntrackAttribute::CtaTimeout(e.timeout_s),
        ConntrackAttribute::CtaMark(e.mark),
    ];
    if let Some(t) = e.tcp {
        let mut info = vec![
            ProtoInfoTCP::State(t.state),
            ProtoInfoTCP::OriginalWindowScale(t.wscale_orig),
            ProtoInfoTCP::ReplyWindowScale(t.wscale_reply),
        ];
        info.extend(tcp_flags(t.flags_orig).map(ProtoInfoTCP::OriginalFlags));
        info.extend(tcp_flags(t.flags_reply).map(ProtoInfoTCP::ReplyFlags));
        a.push(ConntrackAttribute::CtaProtoInfo(vec![ProtoInfo::TCP(info)]));
    }
    if e.zone != 0 {
        a.push(ConntrackAttribute::Other(zone_attr(e.zone)));
    }
    // The kernel takes a sequence adjustment on a new entry and on an existing one alike.
    if let Some([orig, reply]) = &e.seq_adj {
        a.push(ConntrackAttribute::Other(seq_adj_attr(
            CTA_SEQ_ADJ_ORIG,
            orig,
        )));
        a.push(ConntrackAttribute::Other(seq_adj_attr(
            CTA_SEQ_ADJ_REPLY,
            reply,
        )));
    }
    if nat {
        a.extend(nat_attrs(e).into_iter().map(ConntrackAttribute::Other));
        a.extend(
            e.helper
                .as_ref()
                .map(|h| ConntrackAttribute::Other(help_attr(h))),
        );
    }
    a
}

fn serialize(mut msg: NetlinkMessage<NetfilterMessage>) -> Vec<u8> {
    msg.finalize();
    let mut buf = vec![0u8; msg.buffer_len()];
    msg.serialize(&mut buf);
    buf
}

/// The request that creates `e` in the kernel's table, with its translations, or updates it
/// when an entry with the same original tuple exists (`NLM_F_CREATE` without `NLM_F_EXCL`;
/// for a translated entry the kernel then answers `EOPNOTSUPP`: send
/// [`refresh_request`]); acknowledged.
pub fn install_request(e: &CtEntry, seq: u32) -> Vec<u8> {
    new_request(e, seq, true)
}

/// The request that updates an existing entry to `e` (status, timeout, mark, TCP state):
/// [`install_request`] without the translations and the helper, which an existing entry
/// keeps.
pub fn refresh_request(e: &CtEntry, seq: u32) -> Vec<u8> {
    new_request(e, seq, false)
}

fn new_request(e: &CtEntry, seq: u32, nat: bool) -> Vec<u8> {
    let mut h = NetlinkHeader::default();
    h.flags = NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK;
    h.sequence_number = seq;
    serialize(NetlinkMessage::new(
        h,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(family(&e.orig.src), 0, 0),
            ConntrackMessage::New(entry_attrs(e, nat)),
        )),
    ))
}

/// The request that removes the entry of original tuple `orig` in `zone`; acknowledged.
pub fn remove_request(orig: &CtTuple, zone: u16, seq: u32) -> Vec<u8> {
    keyed_request(ConntrackMessage::Delete, orig, zone, seq)
}

/// An acknowledged request of kind `message` about the entry of `orig` in `zone`.
fn keyed_request(
    message: fn(Vec<ConntrackAttribute>) -> ConntrackMessage,
    orig: &CtTuple,
    zone: u16,
    seq: u32,
) -> Vec<u8> {
    let mut h = NetlinkHeader::default();
    h.flags = NLM_F_REQUEST | NLM_F_ACK;
    h.sequence_number = seq;
    let mut a = vec![ConntrackAttribute::CtaTupleOrig(tuple_attrs(orig))];
    if zone != 0 {
        a.push(ConntrackAttribute::Other(zone_attr(zone)));
    }
    serialize(NetlinkMessage::new(
        h,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(family(&orig.src), 0, 0),
            message(a),
        )),
    ))
}

/// The request that reads the entry of original tuple `orig` in `zone` (answered with the
/// entry, as a dump would show it, then the acknowledgement; `ENOENT` when it is gone).
pub fn get_request(orig: &CtTuple, zone: u16, seq: u32) -> Vec<u8> {
    keyed_request(ConntrackMessage::Get, orig, zone, seq)
}

/// The request that dumps every IPv4 and IPv6 entry of the table.
pub fn dump_request(seq: u32) -> Vec<u8> {
    let mut h = NetlinkHeader::default();
    h.flags = NLM_F_REQUEST | NLM_F_DUMP;
    h.sequence_number = seq;
    serialize(NetlinkMessage::new(
        h,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(NetfilterProtoFamily::Unspec, 0, 0),
            ConntrackMessage::Get(vec![]),
        )),
    ))
}

/// Splits what one `recv` returned into its netlink messages. A length that runs past the
/// buffer or is shorter than a header ends the walk with an error (nothing is read past it).
pub fn split(buf: &[u8]) -> impl Iterator<Item = Result<&[u8], CodecError>> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let rest = buf.get(at..)?;
        if rest.is_empty() {
            return None;
        }
        let Some(len) = rest
            .get(..4)
            .map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as usize)
        else {
            at = buf.len();
            return Some(Err(CodecError::Malformed("truncated header".into())));
        };
        if len < NLMSG_HDRLEN || len > rest.len() {
            at = buf.len();
            return Some(Err(CodecError::Malformed(format!(
                "message length {len} with {} bytes left",
                rest.len()
            ))));
        }
        at += len.div_ceil(NLMSG_ALIGN) * NLMSG_ALIGN;
        Some(Ok(&rest[..len]))
    })
}

/// The tuple the nested attributes `parts` describe.
pub(crate) fn tuple_of(parts: &[Tuple]) -> Result<CtTuple, CodecError> {
    let (mut src, mut dst, mut proto) = (None, None, None);
    let (mut src_port, mut dst_port) = (0, 0);
    for p in parts {
        match p {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(ps) => {
                for x in ps {
                    match x {
                        ProtoTuple::Protocol(p) => proto = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(n) => src_port = *n,
                        ProtoTuple::DestinationPort(n) => dst_port = *n,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(CtTuple {
        src: src.ok_or(CodecError::Missing("a source address"))?,
        dst: dst.ok_or(CodecError::Missing("a destination address"))?,
        proto: proto.ok_or(CodecError::Missing("a protocol number"))?,
        src_port,
        dst_port,
    })
}

fn tcp_of(info: &[ProtoInfo]) -> Option<TcpInfo> {
    info.iter().find_map(|i| match i {
        ProtoInfo::TCP(parts) => {
            let mut t = TcpInfo::default();
            for p in parts {
                match p {
                    ProtoInfoTCP::State(s) => t.state = *s,
                    ProtoInfoTCP::OriginalWindowScale(w) => t.wscale_orig = *w,
                    ProtoInfoTCP::ReplyWindowScale(w) => t.wscale_reply = *w,
                    ProtoInfoTCP::OriginalFlags(f) => t.flags_orig = f.flags,
                    ProtoInfoTCP::ReplyFlags(f) => t.flags_reply = f.flags,
                    _ => {}
                }
            }
            Some(t)
        }
        _ => None,
    })
}

fn zone_of(nla: &DefaultNla) -> Option<u16> {
    if nla.kind() != CTA_ZONE || nla.value_len() != 2 {
        return None;
    }
    let mut v = [0u8; 2];
    nla.emit_value(&mut v);
    Some(u16::from_be_bytes(v))
}

fn entry_of(attrs: &[ConntrackAttribute]) -> Result<CtEntry, CodecError> {
    let (mut orig, mut reply, mut tcp, mut helper) = (None, None, None, None);
    let mut seq_adj: Option<[KSeqAdj; 2]> = None;
    let (mut status, mut timeout_s, mut mark, mut zone) = (0, 0, 0, 0);
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = Some(tuple_of(t)?),
            ConntrackAttribute::CtaTupleReply(t) => reply = Some(tuple_of(t)?),
            ConntrackAttribute::CtaProtoInfo(i) => tcp = tcp_of(i),
            ConntrackAttribute::CtaStatus(s) => status = s.bits(),
            ConntrackAttribute::CtaTimeout(t) => timeout_s = *t,
            ConntrackAttribute::CtaMark(m) => mark = *m,
            ConntrackAttribute::Other(nla) => {
                if let Some(z) = zone_of(nla) {
                    zone = z;
                }
                if let Some(h) = helper_of(nla) {
                    helper = Some(h);
                }
                if let Some((dir, a)) = seq_adj_of(nla) {
                    seq_adj.get_or_insert_with(Default::default)[dir] = a;
                }
            }
            _ => {}
        }
    }
    let orig = orig.ok_or(CodecError::Missing("an original tuple"))?;
    Ok(CtEntry {
        orig,
        reply: reply.unwrap_or_else(|| orig.inverse()),
        status,
        timeout_s,
        mark,
        zone,
        tcp,
        helper,
        seq_adj,
    })
}

/// Reads one netlink message (as [`split`] returns them).
pub fn decode(msg: &[u8]) -> Result<Decoded, CodecError> {
    decode_counting(msg, &mut 0)
}

/// [`decode`], adding 1 to `fast` when the allocation-free reader ([`super::fast`]) read
/// the message: the common entry event without allocating, the crate's reader for the rest.
pub fn decode_counting(msg: &[u8], fast: &mut u64) -> Result<Decoded, CodecError> {
    match super::fast::entry_event(msg) {
        Some(ev) => {
            *fast += 1;
            Ok(Decoded::Entry(ev))
        }
        None => decode_with_crate(msg),
    }
}

/// [`decode`] by `netlink-packet-netfilter` alone (with this module's hand-written
/// attributes): the reference the allocation-free reader ([`super::fast`]) is tested
/// against.
pub fn decode_with_crate(msg: &[u8]) -> Result<Decoded, CodecError> {
    let m = NetlinkMessage::<NetfilterMessage>::deserialize(msg)
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    let flags = m.header.flags;
    let seq = m.header.sequence_number;
    match m.payload {
        NetlinkPayload::Done(_) => Ok(Decoded::Done),
        NetlinkPayload::Error(e) => match e.code {
            None => Ok(Decoded::Ack { seq }),
            Some(code) => Ok(Decoded::Refused {
                seq,
                errno: code.get(),
            }),
        },
        NetlinkPayload::InnerMessage(nf) => match nf.inner {
            netlink_packet_netfilter::NetfilterMessageInner::Conntrack(c) => match c {
                ConntrackMessage::New(a) => {
                    let kind = if flags & (NLM_F_CREATE | NLM_F_EXCL) != 0 {
                        CtEventKind::New
                    } else {
                        CtEventKind::Update
                    };
                    Ok(Decoded::Entry(CtEvent {
                        kind,
                        entry: entry_of(&a)?,
                    }))
                }
                ConntrackMessage::Delete(a) => Ok(Decoded::Entry(CtEvent {
                    kind: CtEventKind::Destroy,
                    entry: entry_of(&a)?,
                })),
                _ => Ok(Decoded::Other),
            },
            netlink_packet_netfilter::NetfilterMessageInner::Other {
                subsys: NetfilterSubsystem::Other(SUBSYS_EXP),
                message_type,
                attributes,
            } => Ok(expect::decode(message_type, &attributes)?
                .map(Decoded::Expect)
                .unwrap_or(Decoded::Other)),
            _ => Ok(Decoded::Other),
        },
        _ => Ok(Decoded::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{IPS_ASSURED, IPS_SEEN_REPLY, TCP_ESTABLISHED};
    use netlink_packet_core::Emitable;

    fn entry() -> CtEntry {
        let orig = CtTuple {
            src: "10.1.0.10".parse().unwrap(),
            dst: "10.2.0.20".parse().unwrap(),
            proto: 6,
            src_port: 40000,
            dst_port: 80,
        };
        CtEntry {
            orig,
            reply: orig.inverse(),
            status: IPS_SEEN_REPLY | IPS_ASSURED,
            timeout_s: 300,
            mark: 7,
            zone: 3,
            tcp: Some(TcpInfo {
                state: TCP_ESTABLISHED,
                wscale_orig: 7,
                wscale_reply: 9,
                flags_orig: 0x23,
                flags_reply: 0x22,
            }),
            helper: None,
            seq_adj: None,
        }
    }

    #[test]
    fn a_sequence_adjustment_is_nested_position_and_two_offsets_big_endian() {
        let adj = KSeqAdj {
            correction_pos: 0x0102_0304,
            offset_before: 0,
            offset_after: -2,
        };
        let a = seq_adj_attr(CTA_SEQ_ADJ_REPLY, &adj);
        let mut buf = vec![0u8; a.buffer_len()];
        a.emit(&mut buf);
        let h = |len: u16, kind: u16| [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        let mut want = h(28, 16 | 0x8000);
        want.extend(h(8, 1));
        want.extend([1, 2, 3, 4]);
        want.extend(h(8, 2));
        want.extend([0, 0, 0, 0]);
        want.extend(h(8, 3));
        want.extend([0xff, 0xff, 0xff, 0xfe]);
        assert_eq!(buf, want);
        assert_eq!(seq_adj_of(&a), Some((1, adj)));
        assert_eq!(seq_adj_of(&zone_attr(3)), None);
    }

    #[test]
    fn an_adjusted_entry_is_installed_and_refreshed_with_its_adjustment() {
        let adj = [
            KSeqAdj {
                correction_pos: 1_000,
                offset_before: 0,
                offset_after: 2,
            },
            KSeqAdj::default(),
        ];
        let e = CtEntry {
            seq_adj: Some(adj),
            ..entry()
        };
        let back = |bytes: Vec<u8>| match decode(&bytes).unwrap() {
            Decoded::Entry(ev) => ev.entry,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            back(install_request(&e, 1)),
            CtEntry {
                status: e.status | IPS_CONFIRMED,
                ..e
            }
        );
        // An existing entry takes a new adjustment too (a later rewrite).
        assert_eq!(back(refresh_request(&e, 1)).seq_adj, Some(adj));
        assert_eq!(
            install_request(&e, 1).len(),
            install_request(&entry(), 1).len() + 56
        );
    }

    #[test]
    fn the_zone_attribute_is_type_18_and_two_big_endian_bytes() {
        let a = zone_attr(0x0102);
        let mut buf = vec![0u8; a.buffer_len()];
        a.emit(&mut buf);
        // nlattr: length 6 (native endian u16), type 18, value 01 02, padded to 8 bytes.
        let mut want = Vec::new();
        want.extend(6u16.to_ne_bytes());
        want.extend(18u16.to_ne_bytes());
        want.extend([0x01, 0x02, 0, 0]);
        assert_eq!(buf, want);
        assert_eq!(zone_of(&a), Some(0x0102));
    }

    #[test]
    fn a_source_translation_is_nested_address_range_and_port_range() {
        let a = nat_attr(CTA_NAT_SRC, "10.2.0.254".parse().unwrap(), 6, 0x1234);
        let mut buf = vec![0u8; a.buffer_len()];
        a.emit(&mut buf);
        let h = |len: u16, kind: u16| [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        let mut want = h(40, 6 | 0x8000);
        want.extend(h(8, 1));
        want.extend([10, 2, 0, 254]);
        want.extend(h(8, 2));
        want.extend([10, 2, 0, 254]);
        want.extend(h(20, 3 | 0x8000));
        want.extend(h(6, 1));
        want.extend([0x12, 0x34, 0, 0]);
        want.extend(h(6, 2));
        want.extend([0x12, 0x34, 0, 0]);
        assert_eq!(buf, want);
        // No ports for ICMP.
        let icmp = nat_attr(CTA_NAT_DST, "10.1.0.5".parse().unwrap(), 1, 7);
        assert_eq!(icmp.buffer_len(), 4 + 16);
    }

    #[test]
    fn a_translated_entry_is_created_with_its_translation_and_refreshed_without() {
        let mut e = entry();
        e.reply.dst = "10.2.0.254".parse().unwrap();
        e.reply.dst_port = 1024;
        e.status |= IPS_SRC_NAT;
        let nat = nat_attrs(&e);
        assert_eq!(nat.len(), 1);
        assert_eq!(nat[0].kind(), CTA_NAT_SRC | NLA_F_NESTED);
        assert!(is_translated(&e) && !is_translated(&entry()));
        let created = install_request(&e, 1);
        let refreshed = refresh_request(&e, 1);
        assert_eq!(created.len(), refreshed.len() + 40);
        // Created with the untranslated reply direction; the kernel derives the translated one.
        let back = match decode(split(&created).next().unwrap().unwrap()).unwrap() {
            Decoded::Entry(ev) => ev.entry,
            other => panic!("{other:?}"),
        };
        assert_eq!(back.reply, e.orig.inverse());
        assert_eq!(refresh_request(&entry(), 1), install_request(&entry(), 1));
    }

    #[test]
    fn the_helper_attribute_is_nested_name_with_its_nul() {
        let a = help_attr(&KHelper::new("ftp").unwrap());
        let mut buf = vec![0u8; a.buffer_len()];
        a.emit(&mut buf);
        let h = |len: u16, kind: u16| [len.to_ne_bytes(), kind.to_ne_bytes()].concat();
        let mut want = h(12, 5 | 0x8000);
        want.extend(h(8, 1));
        want.extend(b"ftp\0");
        assert_eq!(buf, want);
        assert_eq!(helper_of(&a), KHelper::new("ftp"));
        // Created with its helper; refreshed without (the kernel cannot add a helper to an
        // entry that exists, and keeps the one it has).
        let e = CtEntry {
            helper: KHelper::new("ftp"),
            ..entry()
        };
        assert!(has_creation_attrs(&e) && !has_creation_attrs(&entry()));
        let back = |bytes: Vec<u8>| match decode(&bytes).unwrap() {
            Decoded::Entry(ev) => ev.entry,
            other => panic!("{other:?}"),
        };
        assert_eq!(back(install_request(&e, 1)).helper, KHelper::new("ftp"));
        assert_eq!(back(refresh_request(&e, 1)).helper, None);
    }

    #[test]
    fn an_install_request_reads_back_as_the_same_entry() {
        let e = entry();
        let bytes = install_request(&e, 42);
        let msgs: Vec<_> = split(&bytes).collect::<Result<_, _>>().unwrap();
        assert_eq!(msgs.len(), 1);
        // Type: subsystem 1 (ctnetlink) << 8 | IPCTNL_MSG_CT_NEW; flags request|ack|create.
        assert_eq!(u16::from_ne_bytes([bytes[4], bytes[5]]), 0x0100);
        assert_eq!(
            u16::from_ne_bytes([bytes[6], bytes[7]]),
            NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE
        );
        // nfgenmsg: AF_INET, version 0, res_id 0.
        assert_eq!(&bytes[16..20], &[2, 0, 0, 0]);
        match decode(msgs[0]).unwrap() {
            Decoded::Entry(ev) => {
                assert_eq!(ev.kind, CtEventKind::New);
                assert_eq!(
                    ev.entry,
                    CtEntry {
                        status: e.status | IPS_CONFIRMED,
                        ..e
                    }
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn broken_bytes_are_errors_not_panics() {
        let good = install_request(&entry(), 1);
        for cut in 0..good.len() {
            let part = &good[..cut];
            for m in split(part).flatten() {
                let _ = decode(m);
            }
        }
        // A length field pointing past the end.
        let mut bad = good.clone();
        bad[0..4].copy_from_slice(&(good.len() as u32 + 8).to_ne_bytes());
        assert!(matches!(
            split(&bad).next(),
            Some(Err(CodecError::Malformed(_)))
        ));
        // Garbage inside the attributes.
        let mut junk = good.clone();
        for b in junk.iter_mut().skip(20) {
            *b = 0xff;
        }
        let _ = decode(&junk);
    }

    #[test]
    fn a_kernel_error_is_reported_with_its_errno() {
        // struct nlmsghdr (type NLMSG_ERROR = 2) + int error + the request's header.
        let mut m = Vec::new();
        m.extend(36u32.to_ne_bytes());
        m.extend(2u16.to_ne_bytes());
        m.extend(0u16.to_ne_bytes());
        m.extend(5u32.to_ne_bytes());
        m.extend(0u32.to_ne_bytes());
        m.extend((-17i32).to_ne_bytes());
        m.extend([0u8; 16]);
        assert_eq!(decode(&m), Ok(Decoded::Refused { seq: 5, errno: -17 }));
    }
}
