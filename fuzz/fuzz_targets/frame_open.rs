//! Any bytes given to every acceptance path (the member endpoint and both ends of the host
//! link, `ha_proto::endpoint`) and to both message-set decoders: typed errors, no panic.
//! The keys are the test-vector keys, so frames from `proto/tests/vectors.txt` (seeded into
//! the corpus by `cargo xtask fuzz`) authenticate and the fuzzer reaches the body decoders
//! and the admission rules.
#![no_main]

use ha_proto::endpoint::{Endpoint, Senders};
use ha_proto::hostlink::{End, HostEndpoint};
use ha_proto::keys::{KeySet, Keyring, Psk};
use ha_proto::msg::host::HostMsg;
use ha_proto::msg::member::MemberMsg;
use ha_proto::msg::{Channel, Serial};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut psk = [0u8; 32];
    for (i, b) in psk.iter_mut().enumerate() {
        *b = i as u8;
    }
    let psk = Psk(psk);
    let sender = Serial::new("SN210A0000001").unwrap_or_default();
    let me = Serial::new("SN210A0000002").unwrap_or_default();
    let ring = Keyring::new(KeySet::derive(&psk, 0x2a2a, 1));
    let mut member: Endpoint<2> =
        Endpoint::new(ring, 0x2a2a, me, 9, Channel::Member, Channel::Member, false);
    let members = [sender, me];
    let mut buf = data.to_vec();
    let _ = member.open::<MemberMsg>(&mut buf, Senders::AnyOf(&members));
    let mut buf = data.to_vec();
    let _ = member.open::<MemberMsg>(&mut buf, Senders::AnyOf(&members));
    for end in [End::Controller, End::MainCpu] {
        let mut host = HostEndpoint::new(end, &psk, 0x2a2a, 1, sender, 9, false);
        let mut buf = data.to_vec();
        let _ = host.open(&mut buf);
        let mut buf = data.to_vec();
        let _ = host.open_from_main_cpu(&mut buf, &mut None);
    }
    // The decoders on raw bytes too (bodies the tag would normally protect).
    let _ = postcard::from_bytes::<MemberMsg>(data);
    let _ = postcard::from_bytes::<HostMsg>(data);
    let _ = postcard::from_bytes::<ha_proto::msg::controller_side::FromMainCpu>(data);
});
