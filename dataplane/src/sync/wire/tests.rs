//! The state-sync wire against golden byte vectors: parse, emit, length, the records inside
//! a data message, malformed input, and the admission rule.

use super::*;
use crate::tables::{KExpFn, TcpState};
use ha_proto::msg::{Channel, Serial};
use std::net::Ipv4Addr;

fn key() -> ConnKey {
    let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
    let b = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    ConnKey::of(3, 6, a, 40_000, b, 443).0
}

fn records() -> Vec<Record> {
    vec![
        Record::Conn {
            key: key(),
            state: ConnState::Tcp(TcpState::Established),
            flags: 1,
            rule: 7,
            age: 1_000,
            idle: 5,
        },
        Record::DelConn(key()),
        Record::Cert(vec![0x01, 0x02], CertStatus::Revoked),
        Record::BulkEnd { id: 9, sent: 300 },
    ]
}

/// `key()` on the wire: zone 3, proto 6, a = V4 10.0.0.1, b = V4 192.0.2.1, a_port 40000
/// (varint c0 b8 02), b_port 443 (bb 03).
const KEY: [u8; 17] = [
    0x03, 0x06, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x00, 0xc0, 0x00, 0x02, 0x01, 0xc0, 0xb8, 0x02, 0xbb,
    0x03,
];

fn golden() -> Vec<(SyncMsg, Vec<u8>)> {
    let mut records_bytes = Vec::new();
    // Conn: variant 0, key, Tcp(Established) = 00 02, flags 1, rule 7, age 1000, idle 5.
    records_bytes.push(0x00);
    records_bytes.extend_from_slice(&KEY);
    records_bytes.extend_from_slice(&[0x00, 0x02, 0x01, 0x07, 0xe8, 0x07, 0x05]);
    // DelConn: variant 1, key.
    records_bytes.push(0x01);
    records_bytes.extend_from_slice(&KEY);
    // Cert: variant 10, 2 bytes 01 02, Revoked (1).
    records_bytes.extend_from_slice(&[0x0a, 0x02, 0x01, 0x02, 0x01]);
    // BulkEnd: variant 15, id 9, sent 300.
    records_bytes.extend_from_slice(&[0x0f, 0x09, 0xac, 0x02]);
    let mut data = vec![0x01, 0x01, 0x00, records_bytes.len() as u8];
    data.extend_from_slice(&records_bytes);
    let mut rs = Records::default();
    for r in records() {
        rs.push(&r).expect("encode");
    }
    vec![
        (SyncMsg::Hello, vec![0x00]),
        (SyncMsg::Resync { id: 300 }, vec![0x03, 0xac, 0x02]),
        (
            SyncMsg::About {
                model: "mps2-an385".into(),
            },
            b"\x04\x0amps2-an385".to_vec(),
        ),
        (
            SyncMsg::Ack {
                stream: 2,
                next: 129,
                sack: 5,
            },
            vec![0x02, 0x02, 0x81, 0x01, 0x05],
        ),
        (
            SyncMsg::Data {
                stream: 1,
                rseq: 0,
                records: rs,
            },
            data,
        ),
    ]
}

#[test]
fn golden_vectors_parse_emit_and_size() {
    for (msg, bytes) in golden() {
        assert_eq!(SyncMsg::parse(&bytes), Ok(msg.clone()), "parse {msg:?}");
        assert_eq!(msg.buffer_len(), bytes.len(), "buffer_len {msg:?}");
        let mut out = vec![0u8; msg.buffer_len()];
        assert_eq!(msg.emit(&mut out), Ok(bytes.len()));
        assert_eq!(out, bytes, "emit {msg:?}");
        if !bytes.is_empty() {
            let mut short = vec![0u8; bytes.len() - 1];
            assert_eq!(msg.emit(&mut short), Err(WireError::BufferTooSmall));
        }
    }
}

#[test]
fn records_of_a_data_message_decode_in_order() {
    let (msg, _) = golden().pop().expect("data");
    let SyncMsg::Data { records: rs, .. } = msg else {
        panic!("data")
    };
    let got: Result<Vec<Record>, _> = rs.iter().collect();
    assert_eq!(got, Ok(records()));
    for r in records() {
        let v = postcard::to_allocvec(&r).expect("encode");
        assert_eq!(r.buffer_len(), v.len());
    }
    // A record cut short ends the iteration with an error after the good ones.
    let cut = Records(rs.0[..rs.0.len() - 1].to_vec());
    let got: Vec<_> = cut.iter().collect();
    assert_eq!(got.len(), 4);
    assert_eq!(got[3], Err(WireError::Malformed));
}

#[test]
fn malformed_bodies_are_errors_never_panics() {
    for (_, bytes) in golden() {
        for n in 0..bytes.len() {
            // Every strict prefix of a golden body is refused.
            assert_eq!(
                SyncMsg::parse(&bytes[..n]),
                Err(WireError::Malformed),
                "{n}"
            );
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert_eq!(SyncMsg::parse(&longer), Err(WireError::Malformed));
    }
    assert_eq!(
        SyncMsg::parse(&[0x04]),
        Err(WireError::Malformed),
        "no variant 4"
    );
    assert_eq!(SyncMsg::parse(&[]), Err(WireError::Malformed));
}

#[test]
fn a_full_data_message_fits_one_frame() {
    for (stream, rseq) in [(0, 0), (1, 127), (u32::MAX, u64::MAX), (70_000, 1 << 40)] {
        let room = records_room(stream, rseq);
        let m = SyncMsg::Data {
            stream,
            rseq,
            records: Records(vec![0; room]),
        };
        assert!(m.buffer_len() <= MAX_BODY_LEN, "{stream} {rseq}");
        assert!(
            m.buffer_len() >= MAX_BODY_LEN - 1,
            "room wasted: {stream} {rseq}"
        );
    }
}

#[test]
fn only_a_hello_is_admitted_unbound() {
    let header = Header {
        version: ha_proto::frame::PROTOCOL_VERSION,
        channel: Channel::StateSync,
        aead: false,
        key_id: 1,
        cluster_id: 1,
        sender: Serial([1; 16]),
        epoch: 1,
        peer_epoch: 0,
        seq: 0,
    };
    let to = |bound| Receiver {
        serial: Serial([2; 16]),
        epoch: 5,
        bound,
    };
    for (msg, _) in golden() {
        assert_eq!(msg.admit(&header, &to(true)), Ok(()));
        let unbound = msg.admit(&header, &to(false));
        match msg {
            SyncMsg::Hello => assert_eq!(unbound, Ok(())),
            _ => assert_eq!(unbound, Err(Reject::Unbound), "{msg:?}"),
        }
    }
}

/// The kernel data path's records (variants 16 and 17, after the bulk ones so that older
/// variants keep their bytes).
#[test]
fn kernel_conntrack_records_against_golden_bytes() {
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    let orig = KTuple {
        src: v4(10, 0, 0, 1),
        dst: v4(192, 0, 2, 1),
        proto: 6,
        src_port: 40_000,
        dst_port: 443,
    };
    let reply = KTuple {
        src: v4(192, 0, 2, 1),
        dst: v4(198, 51, 100, 7),
        proto: 6,
        src_port: 443,
        dst_port: 61_000,
    };
    let key = KConnKey { orig, zone: 3 };
    // orig: V4 10.0.0.1, V4 192.0.2.1, 6, 40000 (c0 b8 02), 443 (bb 03); zone 3.
    let key_bytes = [
        0x00, 0x0a, 0x00, 0x00, 0x01, 0x00, 0xc0, 0x00, 0x02, 0x01, 0x06, 0xc0, 0xb8, 0x02, 0xbb,
        0x03, 0x03,
    ];
    let del = Record::DelKernelConn(key);
    let mut want = vec![0x11];
    want.extend(key_bytes);
    assert_eq!(postcard::to_allocvec(&del).unwrap(), want);

    let upd = Record::KernelConn {
        key,
        reply,
        status: 6,
        mark: 300,
        tcp: Some(KTcp {
            state: 3,
            wscale: [7, 9],
            flags: [0x23, 0x21],
        }),
        left: 1_000,
        helper: KHelper::new("ftp"),
    };
    let mut want = vec![0x10];
    want.extend(key_bytes);
    // reply: V4 192.0.2.1, V4 198.51.100.7 (masqueraded), 6, 443, 61000 (c8 dc 03).
    want.extend([
        0x00, 0xc0, 0x00, 0x02, 0x01, 0x00, 0xc6, 0x33, 0x64, 0x07, 0x06, 0xbb, 0x03, 0xc8, 0xdc,
        0x03,
    ]);
    // status 6, mark 300 (ac 02), Some(tcp: 3, [7, 9], [0x23, 0x21]), left 1000 (e8 07).
    want.extend([
        0x06, 0xac, 0x02, 0x01, 0x03, 0x07, 0x09, 0x23, 0x21, 0xe8, 0x07,
    ]);
    // Some(helper "ftp"): 16 bytes, NUL-padded.
    want.extend([0x01, b'f', b't', b'p']);
    want.extend([0u8; 13]);
    assert_eq!(postcard::to_allocvec(&upd).unwrap(), want);
    assert_eq!(upd.buffer_len(), want.len());
    assert!(del.is_removal() && !upd.is_removal());
    assert_eq!(postcard::from_bytes::<Record>(&want).unwrap(), upd);

    // The same entry with a sequence adjustment (variant 20): the fields of variant 16, then
    // [originator, responder], each correction_pos (varint), offset_before and
    // offset_after (zigzag varints).
    let Record::KernelConn {
        key,
        reply,
        status,
        mark,
        tcp,
        left,
        helper,
    } = upd
    else {
        unreachable!()
    };
    let adjusted = Record::KernelConnAdjusted {
        key,
        reply,
        status,
        mark,
        tcp,
        left,
        helper,
        seq_adj: [
            KSeqAdj {
                correction_pos: 1_000,
                offset_before: 0,
                offset_after: 2,
            },
            KSeqAdj {
                correction_pos: 0,
                offset_before: 0,
                offset_after: -1,
            },
        ],
    };
    let mut want_adj = vec![0x14];
    want_adj.extend(&want[1..]);
    // 1000 (e8 07), 0, +2 (04); 0, 0, -1 (01).
    want_adj.extend([0xe8, 0x07, 0x00, 0x04, 0x00, 0x00, 0x01]);
    assert_eq!(postcard::to_allocvec(&adjusted).unwrap(), want_adj);
    assert_eq!(adjusted.buffer_len(), want_adj.len());
    assert!(!adjusted.is_removal());
    assert_eq!(postcard::from_bytes::<Record>(&want_adj).unwrap(), adjusted);
}

/// An expectation's records (variants 18 and 19).
#[test]
fn kernel_expectation_records_against_golden_bytes() {
    let v4 = |a, b, c, d| IpAddr::V4(Ipv4Addr::new(a, b, c, d));
    // The FTP server 192.0.2.1 (any port) will connect to 10.0.0.1:50000.
    let key = KExpKey {
        tuple: KTuple {
            src: v4(192, 0, 2, 1),
            dst: v4(10, 0, 0, 1),
            proto: 6,
            src_port: 0,
            dst_port: 50_000,
        },
        zone: 0,
    };
    let key_bytes = [
        0x00, 0xc0, 0x00, 0x02, 0x01, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x06, 0x00, 0xd0, 0x86, 0x03,
        0x00,
    ];
    let del = Record::DelKernelExpect(key);
    let mut want = vec![0x13];
    want.extend(key_bytes);
    assert_eq!(postcard::to_allocvec(&del).unwrap(), want);
    let upd = Record::KernelExpect {
        key,
        master: KTuple {
            src: v4(10, 0, 0, 1),
            dst: v4(192, 0, 2, 1),
            proto: 6,
            src_port: 40_000,
            dst_port: 21,
        },
        mask_src: v4(255, 255, 255, 255),
        mask_port: 0,
        flags: 0,
        class: 0,
        left: 300_000,
    };
    let mut want = vec![0x12];
    want.extend(key_bytes);
    // master: V4 10.0.0.1, V4 192.0.2.1, 6, 40000 (c0 b8 02), 21.
    want.extend([
        0x00, 0x0a, 0x00, 0x00, 0x01, 0x00, 0xc0, 0x00, 0x02, 0x01, 0x06, 0xc0, 0xb8, 0x02, 0x15,
    ]);
    // mask V4 255.255.255.255, port 0, flags 0, class 0, left 300000 (e0 a7 12).
    want.extend([
        0x00, 0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0xe0, 0xa7, 0x12,
    ]);
    assert_eq!(postcard::to_allocvec(&upd).unwrap(), want);
    assert_eq!(upd.buffer_len(), want.len());
    assert!(del.is_removal() && !upd.is_removal());
    assert_eq!(postcard::from_bytes::<Record>(&want).unwrap(), upd);

    // Through SNAT (variant 21): the fields of variant 18, then the translation: direction
    // (one byte), V4 10.1.0.1, port 50000, the function's name (32 bytes, NUL-padded).
    let Record::KernelExpect {
        key,
        master,
        mask_src,
        mask_port,
        flags,
        class,
        left,
    } = upd
    else {
        unreachable!()
    };
    let natted = Record::KernelExpectNat {
        key,
        master,
        mask_src,
        mask_port,
        flags,
        class,
        left,
        nat: KExpNat {
            dir: 1,
            addr: v4(10, 1, 0, 1),
            port: 50_000,
            func: KExpFn::new("nat-follow-master").unwrap(),
        },
    };
    let mut want_nat = vec![0x15];
    want_nat.extend(&want[1..]);
    want_nat.extend([0x01, 0x00, 0x0a, 0x01, 0x00, 0x01, 0xd0, 0x86, 0x03]);
    want_nat.extend(b"nat-follow-master");
    want_nat.extend([0u8; 15]);
    assert_eq!(postcard::to_allocvec(&natted).unwrap(), want_nat);
    assert_eq!(natted.buffer_len(), want_nat.len());
    assert_eq!(postcard::from_bytes::<Record>(&want_nat).unwrap(), natted);
}

#[test]
fn an_expectation_function_name_is_one_to_31_printable_bytes() {
    let f = KExpFn::new("nat-follow-master").unwrap();
    assert_eq!(f.as_bytes(), b"nat-follow-master");
    assert!(f.is_valid());
    assert!(KExpFn::new("").is_none());
    assert!(KExpFn::new(&"x".repeat(32)).is_none());
    assert!(KExpFn::new("a\0b").is_none());
    // Bytes from a peer: garbage after the padding, or control characters, are not a name.
    let mut junk = [0u8; 32];
    junk[..3].copy_from_slice(b"sip");
    junk[5] = b'x';
    let junk: KExpFn = postcard::from_bytes(&junk).unwrap();
    assert!(!junk.is_valid());
    let ctl: KExpFn = postcard::from_bytes(&[7; 32]).unwrap();
    assert!(!ctl.is_valid());
}

#[test]
fn a_helper_name_is_one_to_fifteen_printable_bytes() {
    assert_eq!(KHelper::new("ftp").unwrap().as_bytes(), b"ftp");
    assert!(KHelper::new("ftp").unwrap().is_valid());
    assert!(KHelper::new("").is_none());
    assert!(KHelper::new("a-name-too-long!").is_none());
    assert!(KHelper::new("f\0p").is_none());
    // What a peer could send: bytes after the padding, or unprintable ones.
    let junk: KHelper =
        postcard::from_bytes(&[b'f', 0, b'x', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).unwrap();
    assert!(!junk.is_valid());
    let ctl: KHelper = postcard::from_bytes(&[7; 16]).unwrap();
    assert!(!ctl.is_valid());
}
