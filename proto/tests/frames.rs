//! Property tests of the frame layer: round trips, and every kind of damage rejected with its
//! own error.

mod common;

use common::*;
use ha_proto::frame::{
    open, open_compact, peek_header, seal, seal_msg, seal_msg_compact, Error, COMPACT_HEADER_LEN,
    COMPACT_MAGIC, COMPACT_SEQ_LIMIT, HEADER_LEN, MAX_BODY_LEN, MAX_FRAME_LEN, TAG_LEN,
};
use ha_proto::keys::{KeySet, Keyring, Psk};
use ha_proto::msg::host::HostMsg;
use ha_proto::msg::member::MemberMsg;
use ha_proto::msg::Channel;
use ha_proto::replay::ReplayTable;
use proptest::prelude::*;

/// The error a single flipped bit at `byte` must produce (the header field it hits decides).
fn expected_flip_error(byte: usize, frame_len: usize, got: &Error) -> bool {
    match byte {
        0..=1 => *got == Error::BadMagic,
        2 => matches!(got, Error::UnknownVersion(_)),
        // kind: another valid channel authenticates with another key → bad tag
        3 => matches!(got, Error::UnknownKind(_) | Error::BadTag),
        4 => matches!(got, Error::BadFlags(_) | Error::BadTag),
        5 => matches!(got, Error::UnknownKey(_)),
        6..=7 => matches!(
            got,
            Error::Truncated | Error::TrailingBytes | Error::Oversize
        ),
        8..=11 => matches!(got, Error::WrongCluster(_)),
        _ if byte < frame_len => *got == Error::BadTag,
        _ => false,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn member_messages_round_trip(msg in member_msg(), aead in any::<bool>(), seq in any::<u64>()) {
        let keys = test_keys();
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = seal_msg(&keys, &header(Channel::Member, aead, seq), &msg, &mut buf).unwrap();
        let opened = open(&test_ring(), CLUSTER, &mut buf[..n]).unwrap();
        prop_assert_eq!(opened.header, header(Channel::Member, aead, seq));
        prop_assert_eq!(opened.decode::<MemberMsg>().unwrap(), msg);
    }

    #[test]
    fn host_messages_round_trip(msg in host_msg(), aead in any::<bool>()) {
        let keys = test_keys();
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = seal_msg(&keys, &header(Channel::ToMainCpu, aead, 1), &msg, &mut buf).unwrap();
        let opened = open(&test_ring(), CLUSTER, &mut buf[..n]).unwrap();
        prop_assert_eq!(opened.decode::<HostMsg>().unwrap(), msg);
    }

    #[test]
    fn any_single_bit_flip_is_rejected(msg in member_msg(), aead in any::<bool>(), bit in any::<prop::sample::Index>()) {
        let keys = test_keys();
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = seal_msg(&keys, &header(Channel::Member, aead, 9), &msg, &mut buf).unwrap();
        let bit = bit.index(n * 8);
        buf[bit / 8] ^= 1 << (bit % 8);
        let err = open(&test_ring(), CLUSTER, &mut buf[..n]).unwrap_err();
        prop_assert!(expected_flip_error(bit / 8, n, &err), "byte {} gave {:?}", bit / 8, err);
    }

    #[test]
    fn any_truncation_is_rejected(msg in member_msg(), aead in any::<bool>(), cut in any::<prop::sample::Index>()) {
        let keys = test_keys();
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = seal_msg(&keys, &header(Channel::Member, aead, 9), &msg, &mut buf).unwrap();
        let len = cut.index(n);
        prop_assert_eq!(open(&test_ring(), CLUSTER, &mut buf[..len]).unwrap_err(), Error::Truncated);
    }

    #[test]
    fn wrong_key_is_rejected(msg in member_msg(), aead in any::<bool>(), psk in any::<[u8; 32]>()) {
        prop_assume!(psk != test_psk().0);
        let other = KeySet::derive(&Psk(psk), CLUSTER, 1);
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = seal_msg(&other, &header(Channel::Member, aead, 3), &msg, &mut buf).unwrap();
        prop_assert_eq!(open(&test_ring(), CLUSTER, &mut buf[..n]).unwrap_err(), Error::BadTag);
    }

    #[test]
    fn other_cluster_is_rejected(msg in member_msg(), cluster in any::<u32>()) {
        prop_assume!(cluster != CLUSTER);
        let theirs = KeySet::derive(&test_psk(), cluster, 1);
        let mut h = header(Channel::Member, false, 3);
        h.cluster_id = cluster;
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = seal_msg(&theirs, &h, &msg, &mut buf).unwrap();
        prop_assert_eq!(open(&test_ring(), CLUSTER, &mut buf[..n]).unwrap_err(), Error::WrongCluster(cluster));
    }

    #[test]
    fn replays_are_rejected(seqs in proptest::collection::vec(0u64..200, 1..60)) {
        let keys = test_keys();
        let mut table: ReplayTable<4> = ReplayTable::new();
        let mut seen = std::collections::BTreeSet::new();
        let mut highest = None::<u64>;
        for seq in seqs {
            let mut buf = [0u8; MAX_FRAME_LEN];
            let n = seal_msg(&keys, &header(Channel::Member, false, seq), &MemberMsg::Heartbeat(heartbeat()), &mut buf).unwrap();
            let opened = open(&test_ring(), CLUSTER, &mut buf[..n]).unwrap();
            let r = table.check_header(&opened.header);
            let too_old = highest.is_some_and(|h| h >= seq + ha_proto::replay::WINDOW);
            if seen.contains(&seq) || too_old {
                prop_assert_eq!(r, Err(Error::Replay));
            } else {
                prop_assert_eq!(r, Ok(()));
                seen.insert(seq);
                highest = Some(highest.map_or(seq, |h| h.max(seq)));
            }
        }
    }

    #[test]
    fn open_never_panics_on_garbage(mut bytes in proptest::collection::vec(any::<u8>(), 0..1600)) {
        let _ = open(&test_ring(), CLUSTER, &mut bytes);
    }
}

#[test]
fn replay_of_an_identical_frame_is_rejected() {
    let keys = test_keys();
    let mut table: ReplayTable<4> = ReplayTable::new();
    let mut buf = [0u8; MAX_FRAME_LEN];
    let n = seal_msg(
        &keys,
        &header(Channel::Member, false, 5),
        &MemberMsg::Heartbeat(heartbeat()),
        &mut buf,
    )
    .unwrap();
    let copy = buf;
    let h = open(&test_ring(), CLUSTER, &mut buf[..n]).unwrap().header;
    assert_eq!(table.check_header(&h), Ok(()));
    let mut again = copy;
    let h = open(&test_ring(), CLUSTER, &mut again[..n]).unwrap().header;
    assert_eq!(table.check_header(&h), Err(Error::Replay));
}

#[test]
fn rebooted_sender_newer_epoch_accepted_older_refused() {
    let mut table: ReplayTable<4> = ReplayTable::new();
    let mut h = header(Channel::Member, false, 1000);
    assert_eq!(table.check_header(&h), Ok(()));
    h.epoch += 1;
    h.seq = 0;
    assert_eq!(table.check_header(&h), Ok(()), "reboot restarts at seq 0");
    h.epoch -= 1;
    h.seq = 1001;
    assert_eq!(table.check_header(&h), Err(Error::StaleEpoch));
}

#[test]
fn replay_table_full_is_an_error() {
    let mut table: ReplayTable<1> = ReplayTable::new();
    let mut h = header(Channel::Member, false, 1);
    assert_eq!(table.check_header(&h), Ok(()));
    h.sender = ha_proto::msg::Serial::new("OTHER").unwrap();
    assert_eq!(table.check_header(&h), Err(Error::TableFull));
}

#[test]
fn rollover_accepts_both_keys_then_only_the_new_one() {
    let old = KeySet::derive(&test_psk(), CLUSTER, 1);
    let new = KeySet::derive(&Psk([9; 32]), CLUSTER, 2);
    let mut ring = Keyring::new(old.clone());
    assert!(
        ring.install_next(old.clone()).is_err(),
        "same key id refused"
    );
    ring.install_next(new.clone()).unwrap();
    let mut h = header(Channel::Member, false, 1);
    let mut buf = [0u8; MAX_FRAME_LEN];
    for (keys, id) in [(&old, 1), (&new, 2)] {
        h.key_id = id;
        let n = seal(keys, &h, b"x", &mut buf).unwrap();
        assert!(open(&ring, CLUSTER, &mut buf[..n]).is_ok());
    }
    ring.retire_previous();
    h.key_id = 1;
    let n = seal(&old, &h, b"x", &mut buf).unwrap();
    assert_eq!(
        open(&ring, CLUSTER, &mut buf[..n]).unwrap_err(),
        Error::UnknownKey(1)
    );
}

#[test]
fn channel_keys_are_distinct() {
    let h = header(Channel::Member, false, 1);
    let keys = test_keys();
    let mut buf = [0u8; MAX_FRAME_LEN];
    let n = seal(&keys, &h, b"body", &mut buf).unwrap();
    // relabel as state sync: the tag was made with the member key → rejected
    buf[3] = Channel::StateSync as u8;
    assert_eq!(
        open(&test_ring(), CLUSTER, &mut buf[..n]).unwrap_err(),
        Error::BadTag
    );
    assert!(keys.key(Channel::Member) != keys.key(Channel::StateSync));
}

#[test]
fn size_limits_are_typed_errors() {
    let keys = test_keys();
    let h = header(Channel::StateSync, false, 1);
    let mut big = vec![0u8; 2000];
    let body = vec![7u8; MAX_BODY_LEN + 1];
    assert_eq!(seal(&keys, &h, &body, &mut big), Err(Error::Oversize));
    let mut small = [0u8; HEADER_LEN + TAG_LEN];
    assert_eq!(
        seal(&keys, &h, b"ab", &mut small),
        Err(Error::BufferTooSmall)
    );
    let mut huge = vec![0u8; MAX_FRAME_LEN + 1];
    assert_eq!(peek_header(&huge), Err(Error::Oversize));
    assert_eq!(
        open(&test_ring(), CLUSTER, &mut huge).unwrap_err(),
        Error::Oversize
    );
    let n = seal(&keys, &h, &vec![1u8; MAX_BODY_LEN], &mut big).unwrap();
    assert_eq!(n, MAX_FRAME_LEN);
    let mut longer = big[..n + 1].to_vec();
    longer[6] = 0;
    longer[7] = 1; // declared body of 1 byte, frame longer → trailing bytes
    assert_eq!(
        open(
            &test_ring(),
            CLUSTER,
            &mut longer[..HEADER_LEN + TAG_LEN + 5]
        )
        .unwrap_err(),
        Error::TrailingBytes
    );
}

#[test]
fn decode_of_the_wrong_message_set_is_an_error() {
    let keys = test_keys();
    let mut buf = [0u8; MAX_FRAME_LEN];
    let n = seal(
        &keys,
        &header(Channel::Member, false, 1),
        &[0xff; 8],
        &mut buf,
    )
    .unwrap();
    let opened = open(&test_ring(), CLUSTER, &mut buf[..n]).unwrap();
    assert_eq!(opened.decode::<MemberMsg>().unwrap_err(), Error::Decode);
}

/// The largest possible status report (every member, every domain, every varint at its
/// widest) still fits one frame, so a controller can always answer `StatusRequest`.
#[test]
fn largest_status_report_fits_one_frame() {
    use ha_proto::msg::host::{EventReport, LedReport, MemberSummary, StatusReport};
    use ha_proto::msg::{
        FirmwareVersion, Forced, LinkState, Role, Serial, MAX_DOMAINS, MAX_HA_LINKS, MAX_MEMBERS,
    };
    let member = MemberSummary {
        serial: Serial([b'Z'; 16]),
        local: true,
        alive: true,
        quality: 255,
        forced: Forced::Passive,
        firmware: FirmwareVersion {
            major: 255,
            minor: 255,
            patch: u16::MAX,
        },
        config_revision: u64::MAX,
        paused: true,
        domains: (0..MAX_DOMAINS as u8)
            .map(|domain| ha_proto::msg::host::DomainSummary {
                domain: domain + 200,
                role: Role::Disabled,
                priority: 255,
            })
            .collect(),
        links: core::iter::repeat_n(LinkState::Down, MAX_HA_LINKS).collect(),
        mode_since_ms: u64::MAX,
    };
    let report = StatusReport {
        uptime_ms: u64::MAX,
        members: core::iter::repeat_n(member, MAX_MEMBERS).collect(),
        led: LedReport::Blink {
            on_ms: u16::MAX,
            off_ms: u16::MAX,
        },
        frames_sent: u32::MAX,
        frames_received: u32::MAX,
        frames_rejected: u32::MAX,
    };
    let event = EventReport {
        seq: u32::MAX,
        at_ms: u64::MAX,
        name: core::iter::repeat_n('n', 24).collect(),
        peer: Some(Serial([b'Z'; 16])),
        detail: core::iter::repeat_n('d', 96).collect(),
    };
    for msg in [HostMsg::Status(report), HostMsg::Event(event)] {
        for aead in [false, true] {
            let mut buf = [0u8; MAX_FRAME_LEN];
            let n = seal_msg(
                &test_keys(),
                &header(Channel::ToMainCpu, aead, 7),
                &msg,
                &mut buf,
            )
            .expect("fits one frame");
            let opened = open(&test_ring(), CLUSTER, &mut buf[..n]).unwrap();
            assert_eq!(opened.decode::<HostMsg>().unwrap(), msg);
        }
    }
}

/// `InstallKey` never shows the key in `Debug` output (logs, panics, test failures).
#[test]
fn install_key_debug_is_redacted() {
    use ha_proto::msg::host::WirePsk;
    let msg = HostMsg::InstallKey {
        key_id: 2,
        psk: WirePsk([0xAB; 32]),
    };
    let text = format!("{msg:?}");
    assert!(
        !text.to_lowercase().contains("ab, ") && !text.contains("171"),
        "{text}"
    );
    assert!(text.contains("redacted"), "{text}");
}

/// The error a single flipped bit at `byte` of a compact frame must produce.
fn expected_compact_flip_error(byte: usize, frame_len: usize, got: &Error) -> bool {
    match byte {
        0 => *got == Error::BadMagic,
        1 => matches!(got, Error::UnknownVersion(_)),
        2 => matches!(got, Error::UnknownKind(_) | Error::BadTag),
        3 => matches!(got, Error::BadFlags(_) | Error::BadTag),
        4 => matches!(got, Error::UnknownKey(_)),
        _ if byte < frame_len => *got == Error::BadTag,
        _ => false,
    }
}

fn sender() -> ha_proto::msg::Serial {
    header(Channel::ToController, false, 0).sender
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// A compact frame is its full twin with the implied fields left out: the same tag, 25
    /// bytes shorter, and it opens to the same header and message.
    #[test]
    fn compact_frames_are_their_full_twin_without_the_implied_fields(
        msg in host_msg(), aead in any::<bool>(), seq in 0u64..COMPACT_SEQ_LIMIT,
    ) {
        let keys = test_keys();
        let h = header(Channel::ToController, aead, seq);
        let mut full = [0u8; MAX_FRAME_LEN];
        let nf = seal_msg(&keys, &h, &msg, &mut full).unwrap();
        let mut compact = [0u8; MAX_FRAME_LEN];
        let nc = seal_msg_compact(&keys, &h, &msg, &mut compact).unwrap();
        prop_assert_eq!(nc + HEADER_LEN - COMPACT_HEADER_LEN, nf);
        // Layout: magic, then the full header's version..key id, epochs, the sequence's
        // low 48 bits; the body (ciphertext) and the tag are the full frame's.
        prop_assert_eq!(compact[0], COMPACT_MAGIC);
        prop_assert_eq!(&compact[1..5], &full[2..6]);
        prop_assert_eq!(&compact[5..13], &full[28..36]);
        prop_assert_eq!(&compact[13..19], &full[38..44]);
        prop_assert_eq!(&compact[COMPACT_HEADER_LEN..nc], &full[HEADER_LEN..nf]);
        let opened = open_compact(&test_ring(), CLUSTER, sender(), &mut compact[..nc]).unwrap();
        prop_assert_eq!(opened.header, h);
        prop_assert_eq!(opened.decode::<HostMsg>().unwrap(), msg);
    }

    #[test]
    fn any_single_bit_flip_of_a_compact_frame_is_rejected(
        msg in host_msg(), aead in any::<bool>(), bit in any::<prop::sample::Index>(),
    ) {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = seal_msg_compact(&test_keys(), &header(Channel::ToController, aead, 9), &msg, &mut buf).unwrap();
        let bit = bit.index(n * 8);
        buf[bit / 8] ^= 1 << (bit % 8);
        let err = open_compact(&test_ring(), CLUSTER, sender(), &mut buf[..n]).unwrap_err();
        prop_assert!(expected_compact_flip_error(bit / 8, n, &err), "byte {} gave {:?}", bit / 8, err);
    }

    #[test]
    fn any_truncation_of_a_compact_frame_is_rejected(
        msg in host_msg(), cut in any::<prop::sample::Index>(),
    ) {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = seal_msg_compact(&test_keys(), &header(Channel::ToController, false, 9), &msg, &mut buf).unwrap();
        let len = cut.index(n);
        let err = open_compact(&test_ring(), CLUSTER, sender(), &mut buf[..len]).unwrap_err();
        // Down to a header and a tag the cut moves the tag: it no longer verifies.
        let want = if len < COMPACT_HEADER_LEN + TAG_LEN { Error::Truncated } else { Error::BadTag };
        prop_assert_eq!(err, want);
    }

    /// The fields a compact frame leaves out are still authenticated: another cluster or
    /// another sender than the one the receiver supplies fails the tag.
    #[test]
    fn a_compact_frame_opened_as_another_cluster_or_sender_fails_its_tag(
        cluster in any::<u32>(), other in "[A-Z0-9]{1,16}",
    ) {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let n = seal_msg_compact(&test_keys(), &header(Channel::ToController, false, 4), &HostMsg::StatusRequest, &mut buf).unwrap();
        let other = ha_proto::msg::Serial::new(&other).unwrap();
        if other != sender() {
            prop_assert_eq!(
                open_compact(&test_ring(), CLUSTER, other, &mut { buf }[..n]).unwrap_err(),
                Error::BadTag
            );
        }
        if cluster != CLUSTER {
            prop_assert_eq!(
                open_compact(&test_ring(), cluster, sender(), &mut buf[..n]).unwrap_err(),
                Error::BadTag
            );
        }
    }
}

/// A sequence number past 48 bits does not fit the compact form: refused, never truncated
/// (a truncated number would make the frame a replay of an earlier one).
#[test]
fn a_sequence_past_48_bits_is_never_sealed_compact() {
    let mut buf = [0u8; MAX_FRAME_LEN];
    let h = header(Channel::ToController, false, COMPACT_SEQ_LIMIT);
    assert_eq!(
        seal_msg_compact(&test_keys(), &h, &HostMsg::StatusRequest, &mut buf),
        Err(Error::Encode)
    );
    let h = header(Channel::ToController, false, COMPACT_SEQ_LIMIT - 1);
    let n = seal_msg_compact(&test_keys(), &h, &HostMsg::StatusRequest, &mut buf).unwrap();
    let opened = open_compact(&test_ring(), CLUSTER, sender(), &mut buf[..n]).unwrap();
    assert_eq!(opened.header.seq, COMPACT_SEQ_LIMIT - 1);
}

/// What a probe answer costs on the host link's UART (COBS, CRC and delimiters included):
/// 87 bytes as a full frame with the serial, 46 as a compact frame without it. Under QEMU
/// each byte up is a main-loop turn and a guest interrupt (docs/firmware.md "Failover").
#[test]
fn probe_answer_sizes_on_the_uart() {
    let keys = test_keys();
    // A request number of a busy boot: two varint bytes.
    let h = header(Channel::ToController, false, 5_000);
    let long = HostMsg::ProbeAnswer {
        peer: ha_proto::msg::Serial::new("SN210A0000002").unwrap(),
        request: 800,
        alive: false,
    };
    let short = HostMsg::ProbeVerdict {
        request: 800,
        alive: false,
    };
    let on_uart = |frame: &[u8]| {
        let mut out = [0u8; ha_proto::uart::MAX_ENCODED_LEN];
        ha_proto::uart::encode_frame(frame, &mut out).unwrap()
    };
    let mut buf = [0u8; MAX_FRAME_LEN];
    let n = seal_msg(&keys, &h, &long, &mut buf).unwrap();
    let full = on_uart(&buf[..n]);
    let n = seal_msg_compact(&keys, &h, &short, &mut buf).unwrap();
    let compact = on_uart(&buf[..n]);
    println!("probe answer on the UART: full {full} bytes, compact {compact} bytes");
    assert_eq!((full, compact), (87, 46));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The controller's hand-written decoder reads every message a main CPU sends exactly
    /// as the derived one does, and refuses every message the controller sends.
    #[test]
    fn from_main_cpu_decodes_exactly_the_main_cpu_messages(msg in host_msg()) {
        use ha_proto::msg::controller_side::FromMainCpu;
        use ha_proto::msg::host::Direction;
        let mut buf = [0u8; MAX_FRAME_LEN];
        let bytes = postcard::to_slice(&msg, &mut buf).unwrap();
        let got = postcard::from_bytes::<FromMainCpu>(bytes);
        if msg.direction() == Direction::ToMainCpu {
            prop_assert!(got.is_err(), "{:?} decoded", msg);
        } else {
            prop_assert_eq!(got.unwrap().0, msg);
        }
    }

    /// Any bytes: the controller's decoder never panics, and whatever it decodes the
    /// derived decoder decodes the same.
    #[test]
    fn from_main_cpu_agrees_with_the_derived_decoder_on_any_bytes(
        bytes in proptest::collection::vec(any::<u8>(), 0..64),
    ) {
        use ha_proto::msg::controller_side::FromMainCpu;
        if let Ok(FromMainCpu(m)) = postcard::from_bytes::<FromMainCpu>(&bytes) {
            prop_assert_eq!(postcard::from_bytes::<HostMsg>(&bytes).unwrap(), m);
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The controller's hand-written encoder writes every message the controller sends in
    /// exactly the derived encoder's bytes, and refuses every message a main CPU sends.
    #[test]
    fn to_main_cpu_encodes_exactly_the_controller_messages(msg in host_msg()) {
        use ha_proto::msg::controller_side::ToMainCpu;
        use ha_proto::msg::host::Direction;
        let mut derived = [0u8; MAX_FRAME_LEN];
        let derived = postcard::to_slice(&msg, &mut derived).unwrap();
        let mut ours = [0u8; MAX_FRAME_LEN];
        let ours = postcard::to_slice(&ToMainCpu(&msg), &mut ours);
        if msg.direction() == Direction::ToController {
            prop_assert!(ours.is_err(), "{:?} encoded", msg);
        } else {
            prop_assert_eq!(&ours.unwrap()[..], &derived[..]);
        }
    }
}

/// Golden bytes of [`HostMsg::TableHeld`]: postcard's variant number (25, the place after
/// `ProbeVerdict`) and the flag. A controller of an earlier release refuses the body as a
/// message it does not know; the daemon sends it only to a controller that takes it.
#[test]
fn table_held_golden_bytes() {
    use ha_proto::msg::controller_side::FromMainCpu;
    let mut buf = [0u8; 8];
    for (held, bytes) in [(false, [25u8, 0]), (true, [25, 1])] {
        let m = HostMsg::TableHeld(held);
        assert_eq!(postcard::to_slice(&m, &mut buf).unwrap(), &bytes);
        assert_eq!(postcard::from_bytes::<FromMainCpu>(&bytes).unwrap().0, m);
    }
    // Not a flag: refused by both decoders.
    assert!(postcard::from_bytes::<FromMainCpu>(&[25, 2]).is_err());
    assert!(postcard::from_bytes::<HostMsg>(&[25, 2]).is_err());
}
