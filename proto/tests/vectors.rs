//! Checks `proto/tests/vectors.txt`: the byte-exact test vectors another implementation can use
//! to prove compatibility. Regenerate (only after a deliberate wire change, with a version bump)
//! with `UPDATE_VECTORS=1 cargo test -p ha-proto --test vectors`.

mod common;

use common::*;
use ha_proto::frame::{open, seal_msg, MAX_FRAME_LEN};
use ha_proto::keys::purpose_label;
use ha_proto::msg::host::HostMsg;
use ha_proto::msg::member::{AdminCommand, MemberMsg};
use ha_proto::msg::Channel;
use ha_proto::uart::{encode_frame, MAX_ENCODED_LEN};

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

struct Case {
    name: &'static str,
    channel: Channel,
    aead: bool,
    seq: u64,
    body: Body,
}

// A handful of test values: their size does not matter.
#[allow(clippy::large_enum_variant)]
enum Body {
    Member(Box<MemberMsg>),
    Host(Box<HostMsg>),
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "heartbeat-hmac",
            channel: Channel::Member,
            aead: false,
            seq: 1,
            body: Body::Member(Box::new(MemberMsg::Heartbeat(heartbeat()))),
        },
        Case {
            name: "heartbeat-aead",
            channel: Channel::Member,
            aead: true,
            seq: 2,
            body: Body::Member(Box::new(MemberMsg::Heartbeat(heartbeat()))),
        },
        Case {
            name: "admin-force-passive-hmac",
            channel: Channel::Member,
            aead: false,
            seq: 3,
            body: Body::Member(Box::new(MemberMsg::AdminFor {
                target: ha_proto::msg::Serial::new("SN210A0000002").unwrap(),
                target_epoch: 9,
                command: AdminCommand::ForcePassive,
            })),
        },
        Case {
            name: "host-ping-hmac",
            channel: Channel::ToMainCpu,
            aead: false,
            seq: 4,
            body: Body::Host(Box::new(HostMsg::Ping { nonce: 0xdead_beef })),
        },
    ]
}

fn generate() -> String {
    let keys = test_keys();
    let mut s = String::new();
    s.push_str("# HA protocol test vectors (see docs/protocol.md).\n");
    s.push_str("# psk = 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\n");
    s.push_str(&format!(
        "# cluster_id = {CLUSTER:#010x}, key_id = 1, sender = \"SN210A0000001\", epoch = 7, peer epoch = 0\n"
    ));
    s.push_str("# key <label> <hex>: HKDF-SHA256 output for that purpose\n");
    s.push_str("# frame <name> <hex>: the sealed frame; uart <name> <hex>: its UART encoding\n");
    for ch in [
        Channel::Member,
        Channel::ToMainCpu,
        Channel::StateSync,
        Channel::Management,
    ] {
        s.push_str(&format!(
            "key {} {}\n",
            std::str::from_utf8(purpose_label(ch)).unwrap(),
            hex(keys.key(ch))
        ));
    }
    for c in cases() {
        let mut buf = [0u8; MAX_FRAME_LEN];
        let h = header(c.channel, c.aead, c.seq);
        let n = match &c.body {
            Body::Member(m) => seal_msg(&keys, &h, &**m, &mut buf),
            Body::Host(m) => seal_msg(&keys, &h, &**m, &mut buf),
        }
        .unwrap();
        s.push_str(&format!("frame {} {}\n", c.name, hex(&buf[..n])));
        let mut u = [0u8; MAX_ENCODED_LEN];
        let un = encode_frame(&buf[..n], &mut u).unwrap();
        s.push_str(&format!("uart {} {}\n", c.name, hex(&u[..un])));
    }
    s
}

const PATH: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/vectors.txt");

#[test]
fn vectors_match_this_implementation() {
    let fresh = generate();
    if std::env::var("UPDATE_VECTORS").is_ok() {
        std::fs::write(PATH, &fresh).unwrap();
    }
    let stored = std::fs::read_to_string(PATH).expect("proto/tests/vectors.txt");
    assert_eq!(
        stored, fresh,
        "wire format changed: bump PROTOCOL_VERSION and regenerate"
    );
}

#[test]
fn stored_frames_open_and_decode() {
    let stored = std::fs::read_to_string(PATH).expect("proto/tests/vectors.txt");
    let cases = cases();
    let mut checked = 0;
    for line in stored.lines().filter(|l| l.starts_with("frame ")) {
        let mut parts = line.split(' ');
        let (_, name, h) = (parts.next(), parts.next().unwrap(), parts.next().unwrap());
        let case = cases.iter().find(|c| c.name == name).unwrap();
        let mut frame = unhex(h);
        let opened = open(&test_ring(), CLUSTER, &mut frame).unwrap();
        assert_eq!(opened.header, header(case.channel, case.aead, case.seq));
        match &case.body {
            Body::Member(m) => assert_eq!(&opened.decode::<MemberMsg>().unwrap(), &**m),
            Body::Host(m) => assert_eq!(&opened.decode::<HostMsg>().unwrap(), &**m),
        }
        checked += 1;
    }
    assert_eq!(checked, cases.len());
}
