//! The hot path of [`super::codec::decode`]: a conntrack entry event read straight from the
//! message bytes, without allocating.
//!
//! Hand-written on purpose: `netlink-packet-netfilter` parses every message into a tree of
//! vectors (one per nested attribute: about ten allocations per event), and the active
//! member reads one event per connection opened or closed on the firewall. This reader
//! handles only the common event (`IPCTNL_MSG_CT_NEW` / `_DELETE` carrying tuples, status,
//! timeout, mark, zone and TCP state) and answers `None` for anything else, or anything it
//! does not fully understand (a helper, a sequence adjustment, an expectation, an attribute
//! of an unexpected length, a missing tuple): the caller then decodes with the crate, which
//! stays the reference. Whenever this returns an event, the crate's decoder returns the same
//! one (property-tested in `tests::the_fast_reader_agrees_with_the_crate`; measured in
//! `cargo bench -p ha-kernel --bench events`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::codec::{CTA_HELP, CTA_SEQ_ADJ_ORIG, CTA_SEQ_ADJ_REPLY, CTA_ZONE};
use super::{CtEntry, CtEvent, CtEventKind, CtTuple, TcpInfo};

/// `NFNL_SUBSYS_CTNETLINK` in the high byte of a message type.
const SUBSYS_CT: u16 = 1;
/// `IPCTNL_MSG_CT_NEW` / `IPCTNL_MSG_CT_DELETE`.
const MSG_NEW: u16 = 0;
const MSG_DELETE: u16 = 2;
/// `NLM_F_CREATE | NLM_F_EXCL`: on a `NEW` event, a new entry (otherwise an update).
const NEW_FLAGS: u16 = 0x400 | 0x200;
/// `struct nlmsghdr` and `struct nfgenmsg`.
const HEADERS: usize = 16 + 4;
/// The attribute type without `NLA_F_NESTED` and `NLA_F_NET_BYTEORDER`.
const TYPE_MASK: u16 = 0x3fff;

// Top-level attributes (`enum ctattr_type`).
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_STATUS: u16 = 3;
const CTA_PROTOINFO: u16 = 4;
const CTA_TIMEOUT: u16 = 7;
const CTA_MARK: u16 = 8;
// In a tuple.
const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
// In the protocol information.
const CTA_PROTOINFO_TCP: u16 = 1;
const TCP_STATE: u16 = 1;
const TCP_WSCALE_ORIGINAL: u16 = 2;
const TCP_WSCALE_REPLY: u16 = 3;
const TCP_FLAGS_ORIGINAL: u16 = 4;
const TCP_FLAGS_REPLY: u16 = 5;

/// The attributes in `buf`, each as (type without flags, value); `None` as soon as one is
/// malformed (then the whole message goes to the crate's decoder).
struct Attrs<'a> {
    buf: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = Option<(u16, &'a [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.buf.is_empty() {
            return None;
        }
        let Some(h) = self.buf.get(..4) else {
            self.buf = &[];
            return Some(None);
        };
        let len = u16::from_ne_bytes([h[0], h[1]]) as usize;
        let kind = u16::from_ne_bytes([h[2], h[3]]) & TYPE_MASK;
        let Some(value) = self.buf.get(4..len).filter(|_| len >= 4) else {
            self.buf = &[];
            return Some(None);
        };
        let next = len.div_ceil(4) * 4;
        self.buf = self.buf.get(next..).unwrap_or(&[]);
        Some(Some((kind, value)))
    }
}

fn attrs(buf: &[u8]) -> Attrs<'_> {
    Attrs { buf }
}

fn be16(v: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes(v.try_into().ok()?))
}

fn be32(v: &[u8]) -> Option<u32> {
    Some(u32::from_be_bytes(v.try_into().ok()?))
}

fn ip(v: &[u8]) -> Option<IpAddr> {
    match v.len() {
        4 => Some(IpAddr::V4(Ipv4Addr::from(<[u8; 4]>::try_from(v).ok()?))),
        16 => Some(IpAddr::V6(Ipv6Addr::from(<[u8; 16]>::try_from(v).ok()?))),
        _ => None,
    }
}

/// A tuple's nested attributes; `None` when malformed or incomplete.
fn tuple(buf: &[u8]) -> Option<CtTuple> {
    let (mut src, mut dst, mut proto) = (None, None, None);
    let (mut src_port, mut dst_port) = (0, 0);
    for a in attrs(buf) {
        match a? {
            (CTA_TUPLE_IP, v) => {
                for b in attrs(v) {
                    match b? {
                        (CTA_IP_V4_SRC | CTA_IP_V6_SRC, x) => src = Some(ip(x)?),
                        (CTA_IP_V4_DST | CTA_IP_V6_DST, x) => dst = Some(ip(x)?),
                        _ => {}
                    }
                }
            }
            (CTA_TUPLE_PROTO, v) => {
                for b in attrs(v) {
                    match b? {
                        (CTA_PROTO_NUM, &[p]) => proto = Some(p),
                        (CTA_PROTO_NUM, _) => return None,
                        (CTA_PROTO_SRC_PORT, x) => src_port = be16(x)?,
                        (CTA_PROTO_DST_PORT, x) => dst_port = be16(x)?,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Some(CtTuple {
        src: src?,
        dst: dst?,
        proto: proto?,
        src_port,
        dst_port,
    })
}

/// The TCP part of a `CTA_PROTOINFO` (the first one, as the crate's reader takes it);
/// `Some(None)` when there is none, `None` when malformed.
fn tcp(buf: &[u8]) -> Option<Option<TcpInfo>> {
    let mut found = None;
    for a in attrs(buf) {
        let (kind, v) = a?;
        if kind != CTA_PROTOINFO_TCP {
            continue;
        }
        let mut t = TcpInfo::default();
        // Every TCP part is checked, as the crate's reader parses them all.
        for b in attrs(v) {
            match b? {
                (TCP_STATE, &[s]) => t.state = s,
                (TCP_WSCALE_ORIGINAL, &[w]) => t.wscale_orig = w,
                (TCP_WSCALE_REPLY, &[w]) => t.wscale_reply = w,
                (TCP_FLAGS_ORIGINAL, &[f, _]) => t.flags_orig = f,
                (TCP_FLAGS_REPLY, &[f, _]) => t.flags_reply = f,
                (TCP_STATE..=TCP_FLAGS_REPLY, _) => return None,
                _ => {}
            }
        }
        if found.is_none() {
            found = Some(t);
        }
    }
    Some(found)
}

/// The entry event `msg` (one whole netlink message) carries, or `None`: not such an event,
/// or one for the crate's decoder (see the module's documentation).
pub fn entry_event(msg: &[u8]) -> Option<CtEvent> {
    let len = u32::from_ne_bytes(msg.get(..4)?.try_into().ok()?) as usize;
    if len != msg.len() || len < HEADERS {
        return None;
    }
    let ty = u16::from_ne_bytes([msg[4], msg[5]]);
    let flags = u16::from_ne_bytes([msg[6], msg[7]]);
    if ty >> 8 != SUBSYS_CT {
        return None;
    }
    let kind = match ty & 0xff {
        MSG_NEW if flags & NEW_FLAGS != 0 => CtEventKind::New,
        MSG_NEW => CtEventKind::Update,
        MSG_DELETE => CtEventKind::Destroy,
        _ => return None,
    };
    let (mut orig, mut reply, mut tcp_info) = (None, None, None);
    let (mut status, mut timeout_s, mut mark, mut zone) = (0, 0, 0, 0);
    for a in attrs(&msg[HEADERS..]) {
        match a? {
            (CTA_TUPLE_ORIG, v) => orig = Some(tuple(v)?),
            (CTA_TUPLE_REPLY, v) => reply = Some(tuple(v)?),
            (CTA_STATUS, v) => status = be32(v)?,
            (CTA_PROTOINFO, v) => tcp_info = tcp(v)?,
            (CTA_TIMEOUT, v) => timeout_s = be32(v)?,
            (CTA_MARK, v) => mark = be32(v)?,
            (CTA_ZONE, v) => {
                // The crate keeps the flag bits in the kind of an attribute it does not know
                // (its `DefaultNla`), so a zone with a flag set is no zone to it: such a
                // (damaged) message is left to it. The header is the 4 bytes before `v`.
                let at = v.as_ptr() as usize - msg.as_ptr() as usize;
                let raw = u16::from_ne_bytes([msg[at - 2], msg[at - 1]]);
                if raw != CTA_ZONE {
                    return None;
                }
                if let Some(z) = be16(v) {
                    zone = z;
                }
            }
            // Rare (helper connections): left to the crate's decoder with the hand-written
            // parts of `codec`.
            (CTA_HELP | CTA_SEQ_ADJ_ORIG | CTA_SEQ_ADJ_REPLY, _) => return None,
            _ => {}
        }
    }
    let orig = orig?;
    Some(CtEvent {
        kind,
        entry: CtEntry {
            orig,
            reply: reply.unwrap_or_else(|| orig.inverse()),
            status,
            timeout_s,
            mark,
            zone,
            tcp: tcp_info,
            helper: None,
            seq_adj: None,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::super::codec::{self, Decoded};
    use super::super::{KHelper, KSeqAdj};
    use super::*;
    use proptest::prelude::*;

    fn any_ip(v6: bool) -> impl Strategy<Value = IpAddr> {
        prop_oneof![
            any::<[u8; 4]>().prop_map(|a| IpAddr::V4(a.into())),
            any::<[u8; 16]>().prop_map(|a| IpAddr::V6(a.into())),
        ]
        .prop_filter("family", move |a| a.is_ipv6() == v6)
    }

    fn any_tuple(v6: bool) -> impl Strategy<Value = CtTuple> {
        (
            any_ip(v6),
            any_ip(v6),
            prop_oneof![Just(6u8), Just(17), Just(1), any::<u8>()],
            any::<u16>(),
            any::<u16>(),
        )
            .prop_map(|(src, dst, proto, src_port, dst_port)| CtTuple {
                src,
                dst,
                proto,
                src_port,
                dst_port,
            })
    }

    fn any_entry() -> impl Strategy<Value = CtEntry> {
        let tcp = proptest::option::of(any::<[u8; 5]>().prop_map(|b| TcpInfo {
            state: b[0],
            wscale_orig: b[1],
            wscale_reply: b[2],
            flags_orig: b[3],
            flags_reply: b[4],
        }));
        let extras = (
            proptest::option::weighted(0.1, Just(KHelper::new("ftp").unwrap())),
            proptest::option::weighted(0.1, any::<[u32; 3]>()),
        );
        any::<bool>()
            .prop_flat_map(move |v6| {
                (
                    any_tuple(v6),
                    any_tuple(v6),
                    any::<(u32, u32, u32, u16)>(),
                    tcp.clone(),
                    extras.clone(),
                )
            })
            .prop_map(
                |(orig, reply, (status, timeout_s, mark, zone), tcp, (helper, adj))| CtEntry {
                    orig,
                    reply,
                    status,
                    timeout_s,
                    mark,
                    zone,
                    tcp,
                    helper,
                    seq_adj: adj.map(|a| {
                        let s = KSeqAdj {
                            correction_pos: a[0],
                            offset_before: a[1] as i32,
                            offset_after: a[2] as i32,
                        };
                        [s, s]
                    }),
                },
            )
    }

    /// What the crate's reader makes of `msg`, when it reads an entry.
    fn by_crate(msg: &[u8]) -> Option<CtEvent> {
        match codec::decode_with_crate(msg) {
            Ok(Decoded::Entry(ev)) => Some(ev),
            _ => None,
        }
    }

    /// Every message the daemon itself writes (creation, refresh, removal: the same layout
    /// as the kernel's events and dumps), whole.
    fn messages(e: &CtEntry) -> Vec<Vec<u8>> {
        vec![
            codec::install_request(e, 7),
            codec::refresh_request(e, 8),
            codec::remove_request(&e.orig, e.zone, 9),
        ]
    }

    proptest! {
        #[test]
        fn the_fast_reader_agrees_with_the_crate(e in any_entry()) {
            for msg in messages(&e) {
                let fast = entry_event(&msg);
                let reference = by_crate(&msg);
                prop_assert!(reference.is_some());
                if let Some(f) = fast {
                    prop_assert_eq!(Some(f), reference);
                } else {
                    // Only what it leaves to the crate on purpose.
                    prop_assert!(e.helper.is_some() || e.seq_adj.is_some() || msg[4..6] == [2, 1]);
                }
            }
        }

        #[test]
        fn a_damaged_message_is_read_as_the_crate_reads_it_or_left_to_it(
            e in any_entry(),
            flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..4),
            cut in any::<usize>(),
        ) {
            for mut msg in messages(&e) {
                for (at, bits) in &flips {
                    let i = at % msg.len();
                    msg[i] ^= bits;
                }
                let fast = entry_event(&msg);
                if fast.is_some() {
                    prop_assert_eq!(fast, by_crate(&msg));
                }
                let short = &msg[..cut % msg.len()];
                let fast = entry_event(short);
                if fast.is_some() {
                    prop_assert_eq!(fast, by_crate(short));
                }
            }
        }
    }

    #[test]
    fn a_kernel_event_is_read_without_the_crate() {
        // A new-entry event as the kernel sends it (flags create|excl), built from the
        // creation request's attributes.
        let e = CtEntry {
            orig: CtTuple {
                src: "10.1.0.10".parse().unwrap(),
                dst: "10.2.0.20".parse().unwrap(),
                proto: 6,
                src_port: 40000,
                dst_port: 80,
            },
            reply: CtTuple {
                src: "10.2.0.20".parse().unwrap(),
                dst: "10.1.0.10".parse().unwrap(),
                proto: 6,
                src_port: 80,
                dst_port: 40000,
            },
            status: 0xe,
            timeout_s: 432_000,
            mark: 5,
            zone: 3,
            tcp: Some(TcpInfo {
                state: 3,
                wscale_orig: 7,
                wscale_reply: 7,
                flags_orig: 0x23,
                flags_reply: 0x23,
            }),
            helper: None,
            seq_adj: None,
        };
        let mut msg = codec::refresh_request(&e, 1);
        msg[6..8].copy_from_slice(&(0x400u16 | 0x200).to_ne_bytes());
        let ev = entry_event(&msg).expect("read");
        assert_eq!(ev.kind, CtEventKind::New);
        assert_eq!(ev.entry.orig, e.orig);
        assert_eq!(ev.entry.reply, e.reply);
        assert_eq!(ev.entry.tcp, e.tcp);
        assert_eq!((ev.entry.status, ev.entry.timeout_s), (0xe, 432_000));
        assert_eq!((ev.entry.mark, ev.entry.zone), (5, 3));
        msg[6..8].copy_from_slice(&0u16.to_ne_bytes());
        assert_eq!(entry_event(&msg).unwrap().kind, CtEventKind::Update);
        assert_eq!(Some(entry_event(&msg).unwrap()), by_crate(&msg));
    }

    #[test]
    fn other_messages_are_left_to_the_crate() {
        let orig = CtTuple {
            src: "10.1.0.10".parse().unwrap(),
            dst: "10.2.0.20".parse().unwrap(),
            proto: 6,
            src_port: 40000,
            dst_port: 21,
        };
        let e = CtEntry {
            orig,
            reply: orig.inverse(),
            status: 0xe,
            timeout_s: 300,
            mark: 0,
            zone: 0,
            tcp: None,
            helper: KHelper::new("ftp"),
            seq_adj: None,
        };
        assert!(entry_event(&codec::install_request(&e, 1)).is_none());
        assert!(by_crate(&codec::install_request(&e, 1)).is_some());
        assert!(entry_event(&codec::dump_request(1)).is_none());
        assert!(entry_event(&[]).is_none());
        assert!(entry_event(&[0u8; 19]).is_none());
    }
}
