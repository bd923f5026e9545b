//! Conntrack helper expectations ([`CtExpect`]) ⇄ ctnetlink messages, without I/O.
//!
//! A helper (FTP's, for one) reads a control connection and announces the related connection
//! to come: an *expectation*, which admits that connection as `related` when it arrives (the
//! FTP data connection of an active-mode transfer, opened by the server towards the client).
//! The standby must hold the expectations of the active, or a transfer announced before a
//! failover fails after it.
//!
//! Hand-written: `netlink-packet-netfilter` 0.4 knows only the conntrack subsystem (1), not
//! the expectation subsystem (`NFNL_SUBSYS_CTNETLINK_EXP`, 2), whose messages it hands over
//! as plain attributes. Values from `include/uapi/linux/netfilter/nfnetlink_conntrack.h`;
//! golden-bytes tests below.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use netlink_packet_core::{
    DefaultNla, Emitable, NetlinkHeader, NetlinkMessage, NetlinkPayload, Nla, NlaBuffer,
    NlasIterator, Parseable, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_netfilter::conntrack::Tuple;
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    NetfilterSubsystem,
};

use super::codec::{tuple_attrs, tuple_of, CodecError};
use super::{CtEventKind, CtTuple};
pub use ha_dataplane::tables::{KExpFn, KExpNat};

/// `NFNL_SUBSYS_CTNETLINK_EXP`: the expectation subsystem.
pub const SUBSYS_EXP: u8 = 2;
/// `IPCTNL_MSG_EXP_NEW`: an expectation created (event) or to create (request).
const MSG_EXP_NEW: u8 = 0;
/// `IPCTNL_MSG_EXP_GET`: dump request.
const MSG_EXP_GET: u8 = 1;
/// `IPCTNL_MSG_EXP_DELETE`: an expectation gone (event) or to remove (request).
const MSG_EXP_DELETE: u8 = 2;
/// `CTA_EXPECT_MASTER`: the original tuple of the connection that announced it (nested).
const CTA_EXPECT_MASTER: u16 = 1;
/// `CTA_EXPECT_TUPLE`: the expected tuple (nested).
const CTA_EXPECT_TUPLE: u16 = 2;
/// `CTA_EXPECT_MASK`: which parts of the tuple must match (nested tuple).
const CTA_EXPECT_MASK: u16 = 3;
/// `CTA_EXPECT_TIMEOUT`: seconds left, big-endian u32.
const CTA_EXPECT_TIMEOUT: u16 = 4;
/// `CTA_EXPECT_ZONE`: big-endian u16.
const CTA_EXPECT_ZONE: u16 = 7;
/// `CTA_EXPECT_FLAGS`: `NF_CT_EXPECT_*`, big-endian u32.
const CTA_EXPECT_FLAGS: u16 = 8;
/// `CTA_EXPECT_CLASS`: big-endian u32.
const CTA_EXPECT_CLASS: u16 = 9;
/// `CTA_EXPECT_NAT`: the translation of the expected connection (nested: direction, tuple).
const CTA_EXPECT_NAT: u16 = 10;
/// `CTA_EXPECT_FN`: the name of the kernel function run when the expected connection
/// arrives (a NUL-terminated string; "nat-follow-master" sets up its translation).
const CTA_EXPECT_FN: u16 = 11;
/// `CTA_EXPECT_NAT_DIR`: big-endian u32, the master's direction the connection follows.
const CTA_EXPECT_NAT_DIR: u16 = 1;
/// `CTA_EXPECT_NAT_TUPLE`: nested tuple whose source address and port are the translation.
const CTA_EXPECT_NAT_TUPLE: u16 = 2;
/// `NLA_F_NESTED`.
const NLA_F_NESTED: u16 = 0x8000;

/// One expectation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtExpect {
    /// The expected connection's original direction (parts the mask leaves open are 0).
    pub tuple: CtTuple,
    /// Which bits of the expected source address must match.
    pub mask_src: IpAddr,
    /// Which bits of the expected source port must match (0: any).
    pub mask_port: u16,
    /// The original direction of the connection that announced it.
    pub master: CtTuple,
    /// Conntrack zone.
    pub zone: u16,
    /// Seconds until the kernel drops it.
    pub timeout_s: u32,
    /// `NF_CT_EXPECT_*` flags.
    pub flags: u32,
    /// Class of the helper's expectation policy.
    pub class: u32,
    /// The expected connection's translation and the kernel function that applies it: a
    /// NAT helper's expectation (FTP's `PORT` through SNAT: the server connects to the
    /// outside address, the connection is mapped back to the client). The kernel reports
    /// both; one without the other is not carried (a translation nobody applies, or a
    /// function of a helper this product does not sync).
    pub nat: Option<KExpNat>,
}

/// An expectation event (or one expectation of a dump, reported as new).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExpEvent {
    /// [`CtEventKind::New`] or [`CtEventKind::Destroy`] (used, expired or removed).
    pub kind: CtEventKind,
    /// The expectation.
    pub exp: CtExpect,
}

fn family(ip: &IpAddr) -> NetfilterProtoFamily {
    match ip {
        IpAddr::V4(_) => NetfilterProtoFamily::IPv4,
        IpAddr::V6(_) => NetfilterProtoFamily::IPv6,
    }
}

/// A nested tuple attribute of kind `kind`.
fn tuple_nla(kind: u16, t: &CtTuple) -> DefaultNla {
    let parts = tuple_attrs(t);
    let mut v = vec![0u8; parts.as_slice().buffer_len()];
    parts.as_slice().emit(&mut v);
    DefaultNla::new(kind | NLA_F_NESTED, v)
}

/// The mask as the kernel reads it: a whole tuple whose source part matters (the kernel keeps
/// only the source address and port of a mask), destination all ones.
fn mask_tuple(e: &CtExpect) -> CtTuple {
    let ones = match e.tuple.dst {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::BROADCAST),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::from([0xff; 16])),
    };
    CtTuple {
        src: e.mask_src,
        dst: ones,
        proto: e.tuple.proto,
        src_port: e.mask_port,
        dst_port: 0xffff,
    }
}

fn u32_nla(kind: u16, v: u32) -> DefaultNla {
    DefaultNla::new(kind, v.to_be_bytes().to_vec())
}

fn message(
    flags: u16,
    seq: u32,
    fam: NetfilterProtoFamily,
    msg_type: u8,
    attrs: Vec<DefaultNla>,
) -> Vec<u8> {
    let mut h = NetlinkHeader::default();
    h.flags = flags;
    h.sequence_number = seq;
    let mut m = NetlinkMessage::new(
        h,
        NetlinkPayload::from(NetfilterMessage::new(
            NetfilterHeader::new(fam, 0, 0),
            NetfilterMessageInner::Other {
                subsys: NetfilterSubsystem::Other(SUBSYS_EXP),
                message_type: msg_type,
                attributes: attrs,
            },
        )),
    );
    m.finalize();
    let mut buf = vec![0u8; m.buffer_len()];
    m.serialize(&mut buf);
    buf
}

/// The request that creates `e` (its master must be in the table with a helper), or sets the
/// time left of the same expectation when it exists; acknowledged.
///
/// The kernel gives a new expectation its helper's own timeout (FTP: 5 minutes) whatever the
/// request says; the timeout applies when the expectation exists (the next update). No
/// helper name is sent: it would attach that helper to the expected connection, which FTP's
/// data connection does not have.
pub fn install_request(e: &CtExpect, seq: u32) -> Vec<u8> {
    let mut a = vec![
        tuple_nla(CTA_EXPECT_MASTER, &e.master),
        tuple_nla(CTA_EXPECT_TUPLE, &e.tuple),
        tuple_nla(CTA_EXPECT_MASK, &mask_tuple(e)),
        u32_nla(CTA_EXPECT_TIMEOUT, e.timeout_s),
        u32_nla(CTA_EXPECT_FLAGS, e.flags),
    ];
    if e.zone != 0 {
        a.push(DefaultNla::new(
            CTA_EXPECT_ZONE,
            e.zone.to_be_bytes().to_vec(),
        ));
    }
    if let Some(n) = &e.nat {
        a.extend(nat_attrs(e, n));
    }
    message(
        NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK,
        seq,
        family(&e.tuple.src),
        MSG_EXP_NEW,
        a,
    )
}

/// The `CTA_EXPECT_NAT` and `CTA_EXPECT_FN` attributes of `n`. The kernel reads the
/// translation from the source part of a whole tuple (destination unspecified, the master's
/// protocol), as it reports it.
fn nat_attrs(e: &CtExpect, n: &KExpNat) -> [DefaultNla; 2] {
    let unspecified = match n.addr {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    };
    let t = CtTuple {
        src: n.addr,
        dst: unspecified,
        proto: e.master.proto,
        src_port: n.port,
        dst_port: 0,
    };
    let dir = DefaultNla::new(CTA_EXPECT_NAT_DIR, u32::from(n.dir).to_be_bytes().to_vec());
    let tuple = tuple_nla(CTA_EXPECT_NAT_TUPLE, &t);
    let mut v = vec![0u8; dir.buffer_len() + tuple.buffer_len()];
    dir.emit(&mut v);
    tuple.emit(&mut v[dir.buffer_len()..]);
    let mut name = n.func.as_bytes().to_vec();
    name.push(0);
    [
        DefaultNla::new(CTA_EXPECT_NAT | NLA_F_NESTED, v),
        DefaultNla::new(CTA_EXPECT_FN, name),
    ]
}

/// The translation of a `CTA_EXPECT_NAT` attribute: its direction and the source part of its
/// tuple.
fn nat_of(nla: &DefaultNla) -> Result<(u8, IpAddr, u16), CodecError> {
    let mut v = vec![0u8; nla.value_len()];
    nla.emit_value(&mut v);
    let (mut dir, mut tuple) = (None, None);
    for b in NlasIterator::new(&v[..]) {
        let b: NlaBuffer<&[u8]> = b.map_err(|e| CodecError::Malformed(e.to_string()))?;
        let d = DefaultNla::parse(&b).map_err(|e| CodecError::Malformed(e.to_string()))?;
        match d.kind() & !NLA_F_NESTED {
            CTA_EXPECT_NAT_DIR => dir = be_u32(&d),
            CTA_EXPECT_NAT_TUPLE => tuple = Some(nested_tuple(&d)?),
            _ => {}
        }
    }
    let dir = dir.ok_or(CodecError::Missing("a translation's direction"))?;
    let t = tuple.ok_or(CodecError::Missing("a translation's tuple"))?;
    let dir = u8::try_from(dir)
        .ok()
        .filter(|d| *d <= 1)
        .ok_or_else(|| CodecError::Malformed(format!("translation direction {dir}")))?;
    Ok((dir, t.src, t.src_port))
}

/// The name in a `CTA_EXPECT_FN` attribute (up to its NUL).
fn func_of(nla: &DefaultNla) -> Option<KExpFn> {
    let mut v = vec![0u8; nla.value_len()];
    nla.emit_value(&mut v);
    let name = v.split(|c| *c == 0).next()?;
    KExpFn::new(std::str::from_utf8(name).ok()?).filter(KExpFn::is_valid)
}

/// The request that removes the expectation of `tuple` in `zone`; acknowledged.
pub fn remove_request(tuple: &CtTuple, zone: u16, seq: u32) -> Vec<u8> {
    let mut a = vec![tuple_nla(CTA_EXPECT_TUPLE, tuple)];
    if zone != 0 {
        a.push(DefaultNla::new(
            CTA_EXPECT_ZONE,
            zone.to_be_bytes().to_vec(),
        ));
    }
    message(
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family(&tuple.src),
        MSG_EXP_DELETE,
        a,
    )
}

/// The request that dumps every IPv4 and IPv6 expectation.
pub fn dump_request(seq: u32) -> Vec<u8> {
    message(
        NLM_F_REQUEST | NLM_F_DUMP,
        seq,
        NetfilterProtoFamily::Unspec,
        MSG_EXP_GET,
        Vec::new(),
    )
}

fn nested_tuple(nla: &DefaultNla) -> Result<CtTuple, CodecError> {
    let mut v = vec![0u8; nla.value_len()];
    nla.emit_value(&mut v);
    let mut parts = Vec::new();
    for b in NlasIterator::new(&v[..]) {
        let b: NlaBuffer<&[u8]> = b.map_err(|e| CodecError::Malformed(e.to_string()))?;
        parts.push(Tuple::parse(&b).map_err(|e| CodecError::Malformed(e.to_string()))?);
    }
    tuple_of(&parts)
}

fn be_u32(nla: &DefaultNla) -> Option<u32> {
    let mut v = [0u8; 4];
    (nla.value_len() == 4).then(|| {
        nla.emit_value(&mut v);
        u32::from_be_bytes(v)
    })
}

/// Reads an expectation message of the expectation subsystem (`msg_type`, its attributes):
/// `None` for message types that carry no expectation.
pub fn decode(msg_type: u8, attrs: &[DefaultNla]) -> Result<Option<ExpEvent>, CodecError> {
    let kind = match msg_type {
        MSG_EXP_NEW => CtEventKind::New,
        MSG_EXP_DELETE => CtEventKind::Destroy,
        _ => return Ok(None),
    };
    let (mut tuple, mut mask, mut master) = (None, None, None);
    let (mut zone, mut timeout_s, mut flags, mut class) = (0, 0, 0, 0);
    let (mut nat, mut func) = (None, None);
    for a in attrs {
        match a.kind() & !NLA_F_NESTED {
            CTA_EXPECT_NAT => nat = Some(nat_of(a)?),
            CTA_EXPECT_FN => func = func_of(a),
            CTA_EXPECT_MASTER => master = Some(nested_tuple(a)?),
            CTA_EXPECT_TUPLE => tuple = Some(nested_tuple(a)?),
            CTA_EXPECT_MASK => mask = Some(nested_tuple(a)?),
            CTA_EXPECT_TIMEOUT => timeout_s = be_u32(a).unwrap_or(0),
            CTA_EXPECT_FLAGS => flags = be_u32(a).unwrap_or(0),
            CTA_EXPECT_CLASS => class = be_u32(a).unwrap_or(0),
            CTA_EXPECT_ZONE if a.value_len() == 2 => {
                let mut v = [0u8; 2];
                a.emit_value(&mut v);
                zone = u16::from_be_bytes(v);
            }
            _ => {}
        }
    }
    let tuple = tuple.ok_or(CodecError::Missing("an expected tuple"))?;
    let mask = mask.ok_or(CodecError::Missing("an expectation mask"))?;
    Ok(Some(ExpEvent {
        kind,
        exp: CtExpect {
            tuple,
            mask_src: mask.src,
            mask_port: mask.src_port,
            master: master.ok_or(CodecError::Missing("a master tuple"))?,
            zone,
            timeout_s,
            flags,
            class,
            nat: nat.zip(func).map(|((dir, addr, port), func)| KExpNat {
                dir,
                addr,
                port,
                func,
            }),
        },
    }))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::conntrack::codec::{self, Decoded};

    /// The FTP server 10.2.0.1 (any source port) may connect to 10.1.0.1:50000, announced by
    /// the control connection 10.1.0.1:40000 → 10.2.0.1:21.
    pub(crate) fn ftp() -> CtExpect {
        CtExpect {
            tuple: CtTuple {
                src: "10.2.0.1".parse().unwrap(),
                dst: "10.1.0.1".parse().unwrap(),
                proto: 6,
                src_port: 0,
                dst_port: 50_000,
            },
            mask_src: "255.255.255.255".parse().unwrap(),
            mask_port: 0,
            master: CtTuple {
                src: "10.1.0.1".parse().unwrap(),
                dst: "10.2.0.1".parse().unwrap(),
                proto: 6,
                src_port: 40_000,
                dst_port: 21,
            },
            zone: 0,
            timeout_s: 300,
            flags: 0,
            class: 0,
            nat: None,
        }
    }

    /// FTP's `PORT` through SNAT: the data connection maps back to the client 10.1.0.1:50000,
    /// following the master's reply direction.
    pub(crate) fn ftp_nat() -> KExpNat {
        KExpNat {
            dir: 1,
            addr: "10.1.0.1".parse().unwrap(),
            port: 50_000,
            func: KExpFn::new("nat-follow-master").unwrap(),
        }
    }

    fn h(len: u16, kind: u16) -> Vec<u8> {
        [len.to_ne_bytes(), kind.to_ne_bytes()].concat()
    }

    /// A tuple attribute as the kernel lays it out: `CTA_TUPLE_IP` {V4 src, V4 dst},
    /// `CTA_TUPLE_PROTO` {num, src port, dst port}.
    fn tuple_bytes(kind: u16, src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut v = h(52, kind | NLA_F_NESTED);
        v.extend(h(20, 1 | NLA_F_NESTED));
        v.extend(h(8, 1));
        v.extend(src);
        v.extend(h(8, 2));
        v.extend(dst);
        v.extend(h(28, 2 | NLA_F_NESTED));
        v.extend(h(5, 1));
        v.extend([6, 0, 0, 0]);
        v.extend(h(6, 2));
        v.extend(sport.to_be_bytes());
        v.extend([0, 0]);
        v.extend(h(6, 3));
        v.extend(dport.to_be_bytes());
        v.extend([0, 0]);
        v
    }

    #[test]
    fn an_install_request_against_golden_bytes() {
        let got = install_request(&ftp(), 7);
        // nlmsghdr: length, type (subsystem 2 << 8 | IPCTNL_MSG_EXP_NEW), flags, seq, pid.
        let mut want = Vec::new();
        want.extend(((16 + 4 + 3 * 52 + 8 + 8) as u32).to_ne_bytes());
        want.extend(0x0200u16.to_ne_bytes());
        want.extend((NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK).to_ne_bytes());
        want.extend(7u32.to_ne_bytes());
        want.extend(0u32.to_ne_bytes());
        // nfgenmsg: AF_INET, version 0, res_id 0.
        want.extend([2, 0, 0, 0]);
        want.extend(tuple_bytes(1, [10, 1, 0, 1], [10, 2, 0, 1], 40_000, 21));
        want.extend(tuple_bytes(2, [10, 2, 0, 1], [10, 1, 0, 1], 0, 50_000));
        want.extend(tuple_bytes(3, [255; 4], [255; 4], 0, 0xffff));
        want.extend(h(8, 4));
        want.extend(300u32.to_be_bytes());
        want.extend(h(8, 8));
        want.extend(0u32.to_be_bytes());
        assert_eq!(got, want);
    }

    #[test]
    fn a_translated_expectation_carries_its_nat_and_function_against_golden_bytes() {
        let e = CtExpect {
            nat: Some(ftp_nat()),
            ..ftp()
        };
        let plain = install_request(&ftp(), 7);
        let got = install_request(&e, 7);
        // The attributes of the plain request, then CTA_EXPECT_NAT {DIR 1, TUPLE {10.1.0.1,
        // 0.0.0.0, tcp, 50000, 0}} and CTA_EXPECT_FN "nat-follow-master\0" (padded).
        let mut nat = h(64, 10 | NLA_F_NESTED);
        nat.extend(h(8, 1));
        nat.extend(1u32.to_be_bytes());
        nat.extend(tuple_bytes(2, [10, 1, 0, 1], [0; 4], 50_000, 0));
        let mut func = h(22, 11);
        func.extend(b"nat-follow-master\0");
        func.extend([0, 0]);
        let mut want = plain.clone();
        want.extend(nat);
        want.extend(func);
        let len = want.len() as u32;
        want[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(got, want);
        match codec::decode(&got).unwrap() {
            Decoded::Expect(ev) => assert_eq!(ev.exp, e),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_translation_without_its_function_or_with_a_bad_direction_is_not_carried() {
        let e = CtExpect {
            nat: Some(ftp_nat()),
            ..ftp()
        };
        let a = nat_attrs(&e, &ftp_nat());
        // Without CTA_EXPECT_FN the kernel would not apply the translation: none is read.
        let mut attrs = vec![
            tuple_nla(CTA_EXPECT_MASTER, &e.master),
            tuple_nla(CTA_EXPECT_TUPLE, &e.tuple),
            tuple_nla(CTA_EXPECT_MASK, &mask_tuple(&e)),
            a[0].clone(),
        ];
        assert_eq!(decode(MSG_EXP_NEW, &attrs).unwrap().unwrap().exp.nat, None);
        // A direction other than 0 or 1 is a malformed message, not a guess.
        let mut b = nat_attrs(&e, &ftp_nat());
        let mut v = vec![0u8; b[0].value_len()];
        b[0].emit_value(&mut v);
        v[4..8].copy_from_slice(&7u32.to_be_bytes());
        b[0] = DefaultNla::new(CTA_EXPECT_NAT | NLA_F_NESTED, v);
        attrs[3] = b[0].clone();
        attrs.push(b[1].clone());
        assert!(decode(MSG_EXP_NEW, &attrs).is_err());
    }

    #[test]
    fn a_request_reads_back_as_the_same_expectation_and_a_delete_as_a_destroy() {
        let mut e = ftp();
        e.zone = 5;
        e.flags = 1;
        let bytes = install_request(&e, 1);
        match codec::decode(&bytes).unwrap() {
            Decoded::Expect(ev) => {
                assert_eq!(ev.kind, CtEventKind::New);
                assert_eq!(ev.exp, e);
            }
            other => panic!("{other:?}"),
        }
        // A delete request carries only the tuple: not an expectation one can read.
        assert!(codec::decode(&remove_request(&e.tuple, 5, 2)).is_err());
        assert_eq!(
            u16::from_ne_bytes([dump_request(3)[4], dump_request(3)[5]]),
            0x0201
        );
    }

    #[test]
    fn broken_expectation_bytes_are_errors_not_panics() {
        let good = install_request(&ftp(), 1);
        for cut in 0..good.len() {
            for m in codec::split(&good[..cut]).flatten() {
                let _ = codec::decode(m);
            }
        }
        let mut junk = good.clone();
        for b in junk.iter_mut().skip(24) {
            *b = 0x41;
        }
        let _ = codec::decode(&junk);
    }
}
