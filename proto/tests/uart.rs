//! Property tests of the UART framing.

use ha_proto::uart::{
    crc_bytes, encode_frame, encoded_len, encoded_pieces, Decoder, UartError, MAX_ENCODED_LEN,
};
use proptest::prelude::*;

proptest! {
    #[test]
    fn frames_round_trip_through_the_stream(frames in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..600), 1..6)) {
        let mut stream = Vec::new();
        for f in &frames {
            let mut out = vec![0u8; encoded_len(f.len())];
            let n = encode_frame(f, &mut out).unwrap();
            prop_assert_eq!(out[0], 0);
            prop_assert!(!out[1..n - 1].contains(&0));
            stream.extend_from_slice(&out[..n]);
        }
        let mut d: Decoder<MAX_ENCODED_LEN> = Decoder::new();
        let mut got = Vec::new();
        for b in stream {
            if let Some(r) = d.push(b) {
                got.push(r.unwrap().to_vec());
            }
        }
        prop_assert_eq!(got, frames);
    }

    #[test]
    fn a_corrupted_byte_never_yields_a_wrong_frame(f in proptest::collection::vec(any::<u8>(), 1..300), pos in any::<prop::sample::Index>(), x in 1u8..=255) {
        let mut out = vec![0u8; encoded_len(f.len())];
        let n = encode_frame(&f, &mut out).unwrap();
        let p = 1 + pos.index(n - 2);
        out[p] ^= x;
        let mut d: Decoder<MAX_ENCODED_LEN> = Decoder::new();
        for &b in &out[..n] {
            // A corrupted stream may split into pieces (a byte turned into the delimiter); the
            // CRC must reject every piece.
            if let Some(Ok(frame)) = d.push(b) {
                prop_assert!(false, "corruption went unnoticed: {:?}", frame);
            }
        }
    }
}

#[test]
fn decoder_recovers_after_overflow_and_noise() {
    let mut d: Decoder<16> = Decoder::new();
    for _ in 0..40 {
        assert!(d.push(7).is_none());
    }
    assert_eq!(
        d.push(0).map(|r| r.map(<[u8]>::to_vec)),
        Some(Err(UartError::Overflow))
    );
    let mut out = [0u8; 32];
    let n = encode_frame(b"hello", &mut out).unwrap();
    let mut got = None;
    for &b in &out[..n] {
        if let Some(r) = d.push(b) {
            got = Some(r.map(<[u8]>::to_vec));
        }
    }
    assert_eq!(got, Some(Ok(b"hello".to_vec())));
    assert_eq!(
        encode_frame(b"hello", &mut [0u8; 4]),
        Err(UartError::BufferTooSmall)
    );
}

/// Defect (no-active-after-boot finding): a frame cut off halfway by a sender's timeout had
/// no end marker, so the receiver merged it with the next whole frame and lost both. Every
/// frame now starts with a delimiter: the next frame after a cut one arrives intact.
#[test]
fn a_frame_after_a_cut_one_is_received() {
    let mut cut = [0u8; MAX_ENCODED_LEN];
    let n = encode_frame(&[0x42; 300], &mut cut).unwrap();
    let mut whole = [0u8; MAX_ENCODED_LEN];
    let m = encode_frame(b"the role that matters", &mut whole).unwrap();
    let mut d: Decoder<MAX_ENCODED_LEN> = Decoder::new();
    let mut got = Vec::new();
    for &b in cut[..n / 2].iter().chain(&whole[..m]) {
        if let Some(r) = d.push(b) {
            got.push(r.map(|f| f.to_vec()));
        }
    }
    assert_eq!(got.last(), Some(&Ok(b"the role that matters".to_vec())));
}

/// `encoded_pieces` concatenated is `encode_frame`'s output, byte for byte.
fn pieces_match(f: &[u8]) -> Result<(), TestCaseError> {
    let mut out = vec![0u8; encoded_len(f.len())];
    let n = encode_frame(f, &mut out).unwrap();
    let crc = crc_bytes(f);
    let streamed: Vec<u8> = encoded_pieces(f, &crc).flatten().copied().collect();
    prop_assert_eq!(&streamed[..], &out[..n]);
    Ok(())
}

proptest! {
    #[test]
    fn encoded_pieces_are_the_encoding(f in proptest::collection::vec(prop_oneof![Just(0u8), any::<u8>(), 1u8..=255], 0..1472)) {
        pieces_match(&f)?;
    }

    #[test]
    fn encoded_pieces_are_the_encoding_around_full_runs(run in 240usize..520, zeros in proptest::collection::vec(any::<prop::sample::Index>(), 0..3), len in 0usize..1472) {
        // Long runs of non-zero bytes (COBS's 254-byte blocks), a few zeros, any length:
        // runs ending at the frame's end, at the CRC, across the two.
        let mut f: Vec<u8> = (0..len).map(|i| if i % (run + 1) == run { 0 } else { 1 + (i % 200) as u8 }).collect();
        for z in zeros {
            if !f.is_empty() {
                let i = z.index(f.len());
                f[i] = 0;
            }
        }
        pieces_match(&f)?;
    }
}

#[test]
fn encoded_pieces_at_block_edges() {
    // Frames whose frame || CRC ends exactly at, just before and just after a 254-byte
    // block, with and without a zero at the end.
    for len in [
        0, 1, 249, 250, 251, 252, 253, 254, 255, 503, 504, 505, 506, 507, 508, 1472,
    ] {
        for last in [None, Some(0u8), Some(7u8)] {
            let mut f = vec![0x5Au8; len];
            if let (Some(b), Some(x)) = (last, f.last_mut()) {
                *x = b;
            }
            pieces_match(&f).unwrap();
        }
    }
}

/// The CRC is CRC-32/ISO-HDLC whatever way it is computed (the table-free one since session
/// 23): its check value, so that frames stay the bytes earlier releases send and expect.
#[test]
fn the_crc_is_crc32_iso_hdlc() {
    assert_eq!(crc_bytes(b"123456789"), 0xCBF4_3926u32.to_be_bytes());
}
