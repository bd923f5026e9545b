//! Any byte stream through the UART framing decoder, with a small buffer so that overflow
//! recovery is exercised: typed errors, no panic.
#![no_main]

use ha_proto::uart::Decoder;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut small: Decoder<64> = Decoder::new();
    let mut big: Decoder<{ ha_proto::uart::MAX_ENCODED_LEN }> = Decoder::new();
    for &b in data {
        let _ = small.push(b);
        let _ = big.push(b);
    }
    let _ = ha_proto::uart::decode_in_place(&mut data.to_vec());
});
