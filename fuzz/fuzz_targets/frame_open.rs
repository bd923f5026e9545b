//! Any bytes given to `open` and then to both message-set decoders: typed errors, no panic.
//! The keyring is the test-vector key, so frames from `proto/tests/vectors.txt` (seeded into
//! the corpus by `cargo xtask fuzz`) authenticate and the fuzzer reaches the body decoders.
#![no_main]

use ha_proto::frame::open;
use ha_proto::keys::{KeySet, Keyring, Psk};
use ha_proto::msg::host::HostMsg;
use ha_proto::msg::member::MemberMsg;
use ha_proto::replay::ReplayTable;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut psk = [0u8; 32];
    for (i, b) in psk.iter_mut().enumerate() {
        *b = i as u8;
    }
    let ring = Keyring::new(KeySet::derive(&Psk(psk), 0x2a2a, 1));
    let mut buf = data.to_vec();
    if let Ok(opened) = open(&ring, 0x2a2a, &mut buf) {
        let _ = opened.decode::<MemberMsg>();
        let _ = opened.decode::<HostMsg>();
        let mut t: ReplayTable<2> = ReplayTable::new();
        let _ = t.check_header(&opened.header);
        let _ = t.check_header(&opened.header);
    }
    // The decoders on raw bytes too (bodies the tag would normally protect).
    let _ = postcard::from_bytes::<MemberMsg>(data);
    let _ = postcard::from_bytes::<HostMsg>(data);
});
