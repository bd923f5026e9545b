use super::*;
use ha_proto::config_block::{
    AggregateRule, DomainEntry, HwWeights, LinkAddr, MemberEntry, TimerProfile, DEFAULT_HA_PORT,
    DEFAULT_STATE_SYNC_PORT,
};
use ha_proto::frame::Header;
use ha_proto::keys::Psk;
use ha_proto::msg::host::WirePsk;
use ha_proto::msg::Role;

fn serial(s: &str) -> Serial {
    Serial::new(s).expect("test serial")
}

pub(crate) fn sample_cfg() -> ConfigBlock {
    let mut members = heapless::Vec::new();
    for (s, ip) in [("SN-A", [10, 0, 0, 1]), ("SN-B", [10, 0, 0, 2])] {
        members
            .push(MemberEntry {
                serial: serial(s),
                main_link: LinkAddr {
                    ip,
                    port: DEFAULT_HA_PORT,
                },
            })
            .expect("room");
    }
    let mut domains = heapless::Vec::new();
    domains
        .push(DomainEntry {
            id: 0,
            preferred: None,
        })
        .expect("room");
    ConfigBlock {
        serial: serial("SN-A"),
        cluster_id: 0xC0FFEE,
        key_id: 1,
        encrypt: false,
        members,
        backup_link: true,
        state_sync_port: DEFAULT_STATE_SYNC_PORT,
        timers: TimerProfile::Default,
        domains,
        aggregate: AggregateRule::AllDown,
        tpm_included: false,
        weights: HwWeights::default(),
        psk: Psk([0x5A; 32]),
    }
}

/// The controller's side of the link, written with the proto API directly.
struct Controller {
    keys: KeySet,
    seq: Sequencer,
    replay: ReplayTable<2>,
    decoder: Decoder<MAX_ENCODED_LEN>,
}

impl Controller {
    fn new(cfg: &ConfigBlock, epoch: u32) -> Self {
        Self {
            keys: KeySet::derive(&cfg.psk, cfg.cluster_id, cfg.key_id),
            seq: Sequencer::new(cfg.cluster_id, cfg.serial, epoch),
            replay: ReplayTable::new(),
            decoder: Decoder::new(),
        }
    }

    fn header(&mut self) -> Header {
        self.seq.header(Channel::Host, self.keys.key_id())
    }

    fn encode_with(&mut self, hdr: Header, msg: &HostMsg) -> Vec<u8> {
        let mut f = [0u8; MAX_FRAME_LEN];
        let n = frame::seal_msg(&self.keys, &hdr, msg, &mut f).expect("seal");
        let mut out = vec![0u8; uart::encoded_len(n)];
        let m = uart::encode_frame(&f[..n], &mut out).expect("uart");
        out.truncate(m);
        out
    }

    fn encode(&mut self, msg: &HostMsg) -> Vec<u8> {
        let h = self.header();
        self.encode_with(h, msg)
    }

    /// Decodes what the main CPU sent: (header, message).
    fn decode(&mut self, bytes: &[u8]) -> Vec<(Header, HostMsg)> {
        let mut out = Vec::new();
        for &b in bytes {
            if let Some(Ok(f)) = self.decoder.push(b) {
                let mut buf = f.to_vec();
                let ring = Keyring::new(self.keys.clone());
                let o = frame::open(&ring, 0xC0FFEE, &mut buf).expect("open");
                self.replay.check_header(&o.header).expect("fresh");
                out.push((o.header, o.decode().expect("decode")));
            }
        }
        out
    }
}

fn role(seq: u32) -> HostMsg {
    HostMsg::RoleDecision {
        domain: 0,
        role: Role::Active,
        decision_seq: seq,
    }
}

#[test]
fn controller_messages_are_accepted_in_order() {
    let cfg = sample_cfg();
    let mut ctl = Controller::new(&cfg, 7);
    let mut codec = HostCodec::new(&cfg, 1_000);
    let mut bytes = ctl.encode(&role(1));
    bytes.extend(ctl.encode(&HostMsg::Ping { nonce: 9 }));
    // Split at every position to exercise the streaming decoder.
    let (a, b) = bytes.split_at(bytes.len() / 3);
    codec.push(a);
    assert_eq!(codec.next_msg(), None);
    codec.push(b);
    assert_eq!(codec.next_msg(), Some(role(1)));
    assert_eq!(codec.next_msg(), Some(HostMsg::Ping { nonce: 9 }));
    assert_eq!(codec.next_msg(), None);
    assert_eq!(codec.accepted(), 2);
    assert!(codec.rejects().is_empty());
}

#[test]
fn main_cpu_frames_open_at_the_controller() {
    let cfg = sample_cfg();
    let mut ctl = Controller::new(&cfg, 7);
    let mut codec = HostCodec::new(&cfg, 1_000);
    let mut bytes = codec.encode(&HostMsg::StatusRequest).expect("encode");
    bytes.extend(
        codec
            .encode(&HostMsg::ProbeResult {
                peer: serial("SN-B"),
                alive: true,
            })
            .expect("encode"),
    );
    let got = ctl.decode(&bytes);
    assert_eq!(got.len(), 2);
    assert_eq!(got[0].0.sender, cfg.serial);
    assert_eq!(got[0].0.epoch, 1_000);
    assert_eq!(got[0].0.seq + 1, got[1].0.seq);
    assert!(!got[0].0.aead);
    assert_eq!(got[0].1, HostMsg::StatusRequest);
}

#[test]
fn install_key_is_always_aead_and_the_keyring_follows() {
    let cfg = sample_cfg();
    let mut ctl = Controller::new(&cfg, 7);
    let mut codec = HostCodec::new(&cfg, 1_000);
    let install = HostMsg::InstallKey {
        key_id: 2,
        psk: WirePsk([0x11; 32]),
    };
    let bytes = codec.encode(&install).expect("encode");
    let got = ctl.decode(&bytes);
    assert!(got[0].0.aead, "the PSK must never travel HMAC-only");
    assert_eq!(got[0].1, install);
    // The PSK bytes are not visible on the wire.
    assert!(!bytes.windows(8).any(|w| w == [0x11; 8]));
    // The controller now seals with key 2: accepted by the main CPU.
    let mut next = Controller::new(&cfg, 7);
    next.keys = KeySet::derive(&Psk([0x11; 32]), cfg.cluster_id, 2);
    next.seq.next_seq = 100;
    codec.push(&next.encode(&role(5)));
    assert_eq!(codec.next_msg(), Some(role(5)));
    codec
        .encode(&HostMsg::UseKey { key_id: 2 })
        .expect("use key");
    assert_eq!(codec.sealing_key_id(), 2);
    codec
        .encode(&HostMsg::RetireKey { key_id: 2 })
        .expect("retire");
    // Key 1 is retired: the old controller's frames are refused.
    codec.push(&ctl.encode(&role(6)));
    assert_eq!(codec.next_msg(), None);
    assert_eq!(codec.rejects().get("unknown_key"), Some(&1));
}

#[test]
fn bad_frames_are_counted_per_reason_never_returned() {
    let cfg = sample_cfg();
    let mut ctl = Controller::new(&cfg, 7);
    let mut codec = HostCodec::new(&cfg, 1_000);

    // Line error: one flipped byte in the COBS body → CRC (or COBS) failure.
    let mut bad = ctl.encode(&role(1));
    bad[10] ^= 0x01;
    codec.push(&bad);

    // Replay of an accepted frame.
    let good = ctl.encode(&role(2));
    codec.push(&good);
    codec.push(&good);

    // Wrong key: a forged frame from someone without the PSK.
    let mut forger = Controller::new(&cfg, 7);
    forger.keys = KeySet::derive(&Psk([0x77; 32]), cfg.cluster_id, cfg.key_id);
    forger.seq.next_seq = 50;
    codec.push(&forger.encode(&role(3)));

    // A frame the main CPU sent, reflected back.
    let reflected = codec.encode(&HostMsg::StatusRequest).expect("encode");
    codec.push(&reflected);

    // Right key, wrong direction (a controller never sends Interfaces).
    let mut other_epoch = ctl.header();
    other_epoch.seq += 10;
    let wrong_dir = ctl.encode_with(other_epoch, &HostMsg::Interfaces(heapless::Vec::new()));
    codec.push(&wrong_dir);

    // Another member's controller (same cluster and key, other serial).
    let mut stranger = Controller::new(&cfg, 7);
    stranger.seq.sender = serial("SN-B");
    codec.push(&stranger.encode(&role(4)));

    // Garbage that is not even COBS-valid, then a delimiter.
    codec.push(&[0x05, 0x01, 0x00]);

    assert_eq!(codec.next_msg(), Some(role(2)));
    assert_eq!(codec.next_msg(), None);
    let r = codec.rejects();
    let crc = r.get("bad_crc").copied().unwrap_or(0) + r.get("bad_cobs").copied().unwrap_or(0);
    assert!(crc >= 2, "{r:?}");
    assert_eq!(r.get("replay"), Some(&1), "{r:?}");
    assert_eq!(r.get("bad_tag"), Some(&1), "{r:?}");
    assert_eq!(r.get("reflected"), Some(&1), "{r:?}");
    assert_eq!(r.get("wrong_direction"), Some(&1), "{r:?}");
    assert_eq!(r.get("wrong_sender"), Some(&1), "{r:?}");
}

#[test]
fn loopback_socketpair_round_trip_and_timeout() {
    let cfg = sample_cfg();
    let (a, mut b) = UnixStream::pair().expect("socketpair");
    let mut link = HostLink::new(a, HostCodec::new(&cfg, 1_000));
    let mut ctl = Controller::new(&cfg, 7);

    // Nothing arrives: a bounded wait, then None.
    let t0 = Instant::now();
    assert!(link
        .recv_timeout(Duration::from_millis(50))
        .expect("recv")
        .is_none());
    assert!(t0.elapsed() >= Duration::from_millis(45));

    // Controller → main CPU, written in two pieces from another thread.
    let bytes = ctl.encode(&role(1));
    let mut writer = b.try_clone().expect("clone");
    let t = std::thread::spawn(move || {
        writer.write_all(&bytes[..5]).expect("write");
        std::thread::sleep(Duration::from_millis(20));
        writer.write_all(&bytes[5..]).expect("write");
    });
    let got = link.recv_timeout(Duration::from_secs(5)).expect("recv");
    t.join().expect("writer");
    assert_eq!(got, Some(role(1)));

    // Main CPU → controller.
    link.send(&HostMsg::Pong { nonce: 3 }).expect("send");
    let mut buf = [0u8; 512];
    let n = b.read(&mut buf).expect("read");
    let got = ctl.decode(&buf[..n]);
    assert_eq!(got[0].1, HostMsg::Pong { nonce: 3 });

    // The controller goes away: an error, not a hang.
    drop(b);
    let err = link
        .recv_timeout(Duration::from_secs(5))
        .expect_err("closed");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn connect_over_a_unix_socket_path() {
    let dir = std::env::temp_dir().join(format!("ha-daemon-hl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("host.sock");
    let _ = std::fs::remove_file(&path);
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let cfg = sample_cfg();
    let mut link = HostLink::connect_retry(&path, &cfg, Duration::from_secs(2)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let mut ctl = Controller::new(&cfg, 7);
    server
        .write_all(&ctl.encode(&HostMsg::ProbeRequest {
            peer: serial("SN-B"),
        }))
        .expect("write");
    let got = link.recv_timeout(Duration::from_secs(5)).expect("recv");
    assert_eq!(
        got,
        Some(HostMsg::ProbeRequest {
            peer: serial("SN-B")
        })
    );
    drop(link);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn controller_end_accepts_the_other_direction_and_refuses_keys_in_clear() {
    let cfg = sample_cfg();
    let mut cpu = HostCodec::new(&cfg, 1_000);
    let mut ctl = HostCodec::with_end(End::Controller, &cfg, 7);
    ctl.push(&cpu.encode(&HostMsg::StatusRequest).expect("encode"));
    assert_eq!(ctl.next_msg(), Some(HostMsg::StatusRequest));
    let install = HostMsg::InstallKey {
        key_id: 2,
        psk: WirePsk([3; 32]),
    };
    ctl.push(&cpu.encode(&install).expect("encode"));
    assert_eq!(ctl.next_msg(), Some(install.clone()));
    // The same message HMAC-only (a broken or hostile main CPU) is refused.
    let mut clear = Controller::new(&cfg, 1_001);
    ctl.push(&clear.encode(&install));
    assert_eq!(ctl.next_msg(), None);
    assert_eq!(ctl.rejects().get("key_in_clear"), Some(&1));
    // Controller → main CPU.
    cpu.push(&ctl.encode(&role(1)).expect("encode"));
    assert_eq!(cpu.next_msg(), Some(role(1)));
    // A controller never accepts controller messages.
    let mut other = Controller::new(&cfg, 9);
    ctl.push(&other.encode(&role(2)));
    assert_eq!(ctl.rejects().get("wrong_direction"), Some(&1));
}

#[test]
fn both_ends_follow_a_rollover_without_a_rejected_frame() {
    let cfg = sample_cfg();
    let mut cpu = HostCodec::new(&cfg, 1_000);
    let mut ctl = HostCodec::with_end(End::Controller, &cfg, 7);
    let steps = [
        HostMsg::InstallKey {
            key_id: 2,
            psk: WirePsk([3; 32]),
        },
        HostMsg::UseKey { key_id: 2 },
        HostMsg::RetireKey { key_id: 2 },
    ];
    for (i, step) in steps.iter().enumerate() {
        ctl.push(&cpu.encode(step).expect("encode"));
        assert!(ctl.next_msg().is_some());
        cpu.push(
            &ctl.encode(&HostMsg::Pong { nonce: i as u32 })
                .expect("encode"),
        );
        assert_eq!(cpu.next_msg(), Some(HostMsg::Pong { nonce: i as u32 }));
    }
    assert_eq!((cpu.sealing_key_id(), ctl.sealing_key_id()), (2, 2));
    assert!(cpu.rejects().is_empty() && ctl.rejects().is_empty());
}
