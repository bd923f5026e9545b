//! A conntrack entry ⇄ the state sync's kernel-connection item (`ha_dataplane`'s
//! [`KConnKey`]/[`KConn`]), so the existing sync engine carries kernel entries: acknowledged,
//! retransmitted, in bulk on join, sealed with the state-sync key. Times become this member's
//! clock ([`Millis`]) on the way in and seconds left on the way out.

use ha_dataplane::tables::{KConn, KConnKey, KExp, KExpKey, KTcp, KTuple, Millis, LOCAL_GEN};

use super::{CtEntry, CtExpect, CtTuple, TcpInfo};

fn ktuple(t: &CtTuple) -> KTuple {
    KTuple {
        src: t.src,
        dst: t.dst,
        proto: t.proto,
        src_port: t.src_port,
        dst_port: t.dst_port,
    }
}

fn cttuple(t: &KTuple) -> CtTuple {
    CtTuple {
        src: t.src,
        dst: t.dst,
        proto: t.proto,
        src_port: t.src_port,
        dst_port: t.dst_port,
    }
}

/// The sync item's key of the entry with original direction `orig` in `zone`.
pub fn key_of(orig: &CtTuple, zone: u16) -> KConnKey {
    KConnKey {
        orig: ktuple(orig),
        zone,
    }
}

/// The original direction and zone a sync item's key names.
pub fn orig_of(k: &KConnKey) -> (CtTuple, u16) {
    (cttuple(&k.orig), k.zone)
}

/// The sync item of `e`, seen at `now` (its timeout becomes an expiry time).
pub fn to_item(e: &CtEntry, now: Millis) -> (KConnKey, KConn) {
    (
        key_of(&e.orig, e.zone),
        KConn {
            reply: ktuple(&e.reply),
            status: e.status,
            mark: e.mark,
            tcp: e.tcp.map(|t| KTcp {
                state: t.state,
                wscale: [t.wscale_orig, t.wscale_reply],
                flags: [t.flags_orig, t.flags_reply],
            }),
            helper: e.helper,
            seq_adj: e.seq_adj,
            expires: now.saturating_add(u64::from(e.timeout_s) * 1000),
            gen: LOCAL_GEN,
        },
    )
}

/// Seconds left until `expires` at `now`, rounded up, at least one (an item about to
/// expire still gets its connection's next packet through).
fn left_s(expires: Millis, now: Millis) -> u32 {
    let s = expires.saturating_sub(now).div_ceil(1000).max(1);
    u32::try_from(s).unwrap_or(u32::MAX)
}

/// The entry to install for a synced item at `now`, with the seconds it has left.
pub fn from_item(k: &KConnKey, v: &KConn, now: Millis) -> CtEntry {
    CtEntry {
        orig: cttuple(&k.orig),
        reply: cttuple(&v.reply),
        status: v.status,
        timeout_s: left_s(v.expires, now),
        mark: v.mark,
        zone: k.zone,
        tcp: v.tcp.map(|t| TcpInfo {
            state: t.state,
            wscale_orig: t.wscale[0],
            wscale_reply: t.wscale[1],
            flags_orig: t.flags[0],
            flags_reply: t.flags[1],
        }),
        helper: v.helper,
        seq_adj: v.seq_adj,
    }
}

/// The sync item's key of an expectation of `tuple` in `zone`.
pub fn exp_key_of(tuple: &CtTuple, zone: u16) -> KExpKey {
    KExpKey {
        tuple: ktuple(tuple),
        zone,
    }
}

/// The expected tuple and zone a sync item's key names.
pub fn exp_tuple_of(k: &KExpKey) -> (CtTuple, u16) {
    (cttuple(&k.tuple), k.zone)
}

/// The sync item of expectation `e`, seen at `now`.
pub fn exp_to_item(e: &CtExpect, now: Millis) -> (KExpKey, KExp) {
    (
        exp_key_of(&e.tuple, e.zone),
        KExp {
            master: ktuple(&e.master),
            mask_src: e.mask_src,
            mask_port: e.mask_port,
            flags: e.flags,
            class: e.class,
            nat: e.nat,
            expires: now.saturating_add(u64::from(e.timeout_s) * 1000),
            gen: LOCAL_GEN,
        },
    )
}

/// The expectation to create for a synced item at `now`, with the seconds it has left.
pub fn exp_from_item(k: &KExpKey, v: &KExp, now: Millis) -> CtExpect {
    CtExpect {
        tuple: cttuple(&k.tuple),
        mask_src: v.mask_src,
        mask_port: v.mask_port,
        master: cttuple(&v.master),
        zone: k.zone,
        timeout_s: left_s(v.expires, now),
        flags: v.flags,
        class: v.class,
        nat: v.nat,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_survives_the_round_trip_with_its_time_left() {
        let orig = CtTuple {
            src: "10.1.0.10".parse().unwrap(),
            dst: "10.2.0.20".parse().unwrap(),
            proto: 6,
            src_port: 40_000,
            dst_port: 80,
        };
        let e = CtEntry {
            orig,
            reply: CtTuple {
                dst: "198.51.100.7".parse().unwrap(),
                ..orig.inverse()
            },
            status: 6,
            timeout_s: 300,
            mark: 9,
            zone: 2,
            tcp: Some(TcpInfo {
                state: 3,
                wscale_orig: 7,
                wscale_reply: 9,
                flags_orig: 0x23,
                flags_reply: 0x21,
            }),
            helper: ha_dataplane::tables::KHelper::new("ftp"),
            seq_adj: Some([
                ha_dataplane::tables::KSeqAdj {
                    correction_pos: 77,
                    offset_before: 0,
                    offset_after: 2,
                },
                ha_dataplane::tables::KSeqAdj::default(),
            ]),
        };
        let (k, v) = to_item(&e, 5_000);
        assert_eq!(from_item(&k, &v, 5_000), e);
        // 100.5 s later on the receiver's clock: 200 s left (rounded up).
        assert_eq!(from_item(&k, &v, 105_500).timeout_s, 200);
        // Past its expiry it still gets one second.
        assert_eq!(from_item(&k, &v, 999_999).timeout_s, 1);
    }

    #[test]
    fn an_expectation_survives_the_round_trip_with_its_time_left() {
        // The FTP expectation of the codec's tests, in zone 4 with a flag set.
        let e = CtExpect {
            zone: 4,
            flags: 1,
            nat: Some(crate::conntrack::expect::tests::ftp_nat()),
            ..crate::conntrack::expect::tests::ftp()
        };
        let (k, v) = exp_to_item(&e, 1_000);
        assert_eq!(exp_from_item(&k, &v, 1_000), e);
        assert_eq!(exp_from_item(&k, &v, 101_000).timeout_s, 200);
        assert_eq!(exp_tuple_of(&k), (e.tuple, 4));
    }
}
