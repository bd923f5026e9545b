use super::*;
use crate::test_support::sample_cfg;
use ha_proto::keys::Psk;
use ha_proto::msg::host::{DomainRoleOf, WirePsk};
use ha_proto::msg::{Role, Serial};

const NEXT_KEY: [u8; 32] = [
    148, 211, 98, 190, 85, 185, 119, 216, 168, 244, 196, 124, 61, 26, 207, 254, 228, 120, 234, 147,
    40, 232, 200, 231, 16, 119, 200, 247, 47, 102, 116, 61,
];

fn serial(s: &str) -> Serial {
    Serial::new(s).expect("test serial")
}

/// The controller's end of the link: the same proto codec, told it is the controller.
struct Controller {
    ep: HostEndpoint,
    decoder: Decoder<MAX_ENCODED_LEN>,
}

impl Controller {
    fn new(cfg: &ConfigBlock, epoch: u32) -> Self {
        Self::keyed(cfg, epoch, &cfg.psk, cfg.key_id, cfg.serial)
    }

    fn keyed(cfg: &ConfigBlock, epoch: u32, psk: &Psk, key_id: u8, serial: Serial) -> Self {
        Self {
            ep: HostEndpoint::new(
                End::Controller,
                psk,
                cfg.cluster_id,
                key_id,
                serial,
                epoch,
                false,
            ),
            decoder: Decoder::new(),
        }
    }

    fn encode(&mut self, msg: &HostMsg) -> Vec<u8> {
        let mut f = [0u8; MAX_FRAME_LEN];
        let n = self.ep.seal(msg, &mut f).expect("seal");
        let mut out = vec![0u8; uart::encoded_len(n)];
        let m = uart::encode_frame(&f[..n], &mut out).expect("uart");
        out.truncate(m);
        out
    }

    /// What the main CPU sent, as accepted by the controller's end.
    fn decode(&mut self, bytes: &[u8]) -> Vec<HostMsg> {
        let mut out = Vec::new();
        for &b in bytes {
            if let Some(Ok(f)) = self.decoder.push(b) {
                let mut buf = f.to_vec();
                out.push(self.ep.open(&mut buf).expect("accepted"));
            }
        }
        out
    }
}

fn role(r: Role) -> HostMsg {
    HostMsg::Roles([DomainRoleOf { domain: 0, role: r }].into_iter().collect())
}

/// Both ends hear each other once (the main CPU's status request, the controller's
/// keepalive), after which state-changing messages are bound and accepted.
fn meet(cpu: &mut HostCodec, ctl: &mut Controller) {
    let req = cpu.encode(&HostMsg::StatusRequest).expect("encode");
    assert_eq!(ctl.decode(&req), vec![HostMsg::StatusRequest]);
    cpu.push(&ctl.encode(&HostMsg::Ping { nonce: 0 }));
    assert_eq!(cpu.next_msg(), Some(HostMsg::Ping { nonce: 0 }));
}

#[test]
fn controller_messages_are_accepted_in_order_across_split_reads() {
    let cfg = sample_cfg();
    let mut ctl = Controller::new(&cfg, 7);
    let mut codec = HostCodec::new(&cfg, 1_000);
    meet(&mut codec, &mut ctl);
    let mut bytes = ctl.encode(&role(Role::Active));
    bytes.extend(ctl.encode(&HostMsg::Ping { nonce: 9 }));
    let (a, b) = bytes.split_at(bytes.len() / 3);
    codec.push(a);
    assert_eq!(codec.next_msg(), None);
    codec.push(b);
    assert_eq!(codec.next_msg(), Some(role(Role::Active)));
    assert_eq!(codec.next_msg(), Some(HostMsg::Ping { nonce: 9 }));
    assert_eq!(codec.next_msg(), None);
    assert_eq!(codec.accepted(), 3);
    assert!(codec.rejects().is_empty());
    assert_eq!(codec.peer_epoch(), Some(7));
}

#[test]
fn install_key_is_always_aead_and_both_keyrings_follow() {
    let cfg = sample_cfg();
    let mut ctl = Controller::new(&cfg, 7);
    let mut codec = HostCodec::new(&cfg, 1_000);
    meet(&mut codec, &mut ctl);
    let install = HostMsg::InstallKey {
        key_id: 2,
        psk: WirePsk(NEXT_KEY),
    };
    let bytes = codec.encode(&install).expect("encode");
    // The PSK bytes are not visible on the wire.
    assert!(!bytes.windows(8).any(|w| w == &NEXT_KEY[..8]));
    assert_eq!(ctl.decode(&bytes), vec![install]);
    for step in [
        HostMsg::UseKey { key_id: 2 },
        HostMsg::RetireKey { key_id: 2 },
    ] {
        let b = codec.encode(&step).expect("encode");
        assert_eq!(ctl.decode(&b), vec![step]);
    }
    assert_eq!(codec.sealing_key_id(), 2);
    codec.push(&ctl.encode(&role(Role::Passive)));
    assert_eq!(codec.next_msg(), Some(role(Role::Passive)));
    // A controller still on key 1 is refused.
    let mut old = Controller::new(&cfg, 8);
    codec.push(&old.encode(&HostMsg::Ping { nonce: 1 }));
    assert_eq!(codec.next_msg(), None);
    assert_eq!(codec.rejects().get("unknown_key"), Some(&1));
}

#[test]
fn bad_frames_are_counted_per_reason_never_returned() {
    let cfg = sample_cfg();
    let mut ctl = Controller::new(&cfg, 7);
    let mut codec = HostCodec::new(&cfg, 1_000);
    meet(&mut codec, &mut ctl);

    // Line error: one flipped byte in the COBS body → CRC (or COBS) failure.
    let mut bad = ctl.encode(&role(Role::Active));
    bad[10] ^= 0x01;
    codec.push(&bad);
    // Replay of an accepted frame.
    let good = ctl.encode(&role(Role::Active));
    codec.push(&good);
    codec.push(&good);
    // Wrong key: a forged frame from someone without the PSK.
    let mut forger = Controller::keyed(&cfg, 7, &Psk(NEXT_KEY), cfg.key_id, cfg.serial);
    codec.push(&forger.encode(&HostMsg::Ping { nonce: 1 }));
    // A frame the main CPU sent, reflected back.
    let reflected = codec.encode(&HostMsg::StatusRequest).expect("encode");
    codec.push(&reflected);
    // Another member's controller (same cluster and key, other serial).
    let mut stranger = Controller::keyed(&cfg, 7, &cfg.psk, cfg.key_id, serial("SN-B"));
    codec.push(&stranger.encode(&HostMsg::Ping { nonce: 2 }));
    // Garbage that is not even COBS-valid, then a delimiter.
    codec.push(&[0x05, 0x01, 0x00]);

    assert_eq!(codec.next_msg(), Some(role(Role::Active)));
    assert_eq!(codec.next_msg(), None);
    let r = codec.rejects();
    let crc = r.get("bad_crc").copied().unwrap_or(0) + r.get("bad_cobs").copied().unwrap_or(0);
    assert!(crc >= 2, "{r:?}");
    assert_eq!(r.get("replay"), Some(&1), "{r:?}");
    assert_eq!(r.get("bad_tag"), Some(&1), "{r:?}");
    assert_eq!(r.get("wrong_channel"), Some(&1), "{r:?}");
    assert_eq!(r.get("wrong_sender"), Some(&1), "{r:?}");
}

/// Defect: the daemon's boot epoch was Unix seconds, so a restart in the same second reused
/// it (the controller dropped the new process as a replay) and a clock step lowered it.
/// It is now the persistent boot counter: two starts in a row get two growing epochs, and
/// the controller accepts the second process at once.
#[test]
fn a_restarted_daemon_gets_a_new_boot_and_is_heard_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = sample_cfg();
    let mut ctl = Controller::new(&cfg, 7);
    let first = boot_epoch(dir.path()).expect("counter");
    let mut cpu = HostCodec::new(&cfg, first);
    meet(&mut cpu, &mut ctl);
    // The process restarts within the same second (and the clock could even step back).
    let second = boot_epoch(dir.path()).expect("counter");
    assert!(second > first);
    let mut cpu2 = HostCodec::new(&cfg, second);
    let req = cpu2.encode(&HostMsg::StatusRequest).expect("encode");
    assert_eq!(ctl.decode(&req), vec![HostMsg::StatusRequest]);
    // The controller's frames bound to the old process are refused by the new one; the
    // ones bound to it are accepted.
    let stale = ctl.encode(&HostMsg::Ping { nonce: 5 });
    cpu2.push(&stale);
    assert_eq!(cpu2.next_msg(), Some(HostMsg::Ping { nonce: 5 }));
    cpu2.push(&ctl.encode(&role(Role::Active)));
    assert_eq!(cpu2.next_msg(), Some(role(Role::Active)));
    assert!(cpu2.rejects().is_empty(), "{:?}", cpu2.rejects());
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

    // Main CPU → controller.
    link.send(&HostMsg::StatusRequest).expect("send");
    let mut buf = [0u8; 512];
    let n = b.read(&mut buf).expect("read");
    assert_eq!(ctl.decode(&buf[..n]), vec![HostMsg::StatusRequest]);

    // Controller → main CPU, written in two pieces from another thread.
    let bytes = ctl.encode(&role(Role::Active));
    let mut writer = b.try_clone().expect("clone");
    let t = std::thread::spawn(move || {
        writer.write_all(&bytes[..5]).expect("write");
        std::thread::sleep(Duration::from_millis(20));
        writer.write_all(&bytes[5..]).expect("write");
    });
    let got = link.recv_timeout(Duration::from_secs(5)).expect("recv");
    t.join().expect("writer");
    assert_eq!(got, Some(role(Role::Active)));

    // The controller goes away: an error, not a hang.
    drop(b);
    let err = link
        .recv_timeout(Duration::from_secs(5))
        .expect_err("closed");
    assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
}

#[test]
fn connect_over_a_unix_socket_path() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("host.sock");
    let listener = std::os::unix::net::UnixListener::bind(&path).expect("bind");
    let cfg = sample_cfg();
    let mut link =
        HostLink::connect_retry(&path, &cfg, 3, Duration::from_secs(2)).expect("connect");
    let (mut server, _) = listener.accept().expect("accept");
    let mut ctl = Controller::new(&cfg, 7);
    server
        .write_all(&ctl.encode(&HostMsg::Ping { nonce: 4 }))
        .expect("write");
    let got = link.recv_timeout(Duration::from_secs(5)).expect("recv");
    assert_eq!(got, Some(HostMsg::Ping { nonce: 4 }));
}

#[test]
fn a_wait_shorter_than_a_millisecond_waits_instead_of_returning_at_once() {
    // `poll`'s whole milliseconds made 0.9 ms a wait of 0: the host loop spun until its
    // deadline. The lower bound only: a wait never ends early unless the link is readable.
    let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
    // Readable at once, even with the longest wait there is.
    let (c, mut d) = std::os::unix::net::UnixStream::pair().unwrap();
    std::io::Write::write_all(&mut d, b"x").unwrap();
    assert!(wait_readable(&c, std::time::Duration::MAX).unwrap());
    for us in [900u64, 300, 1_500] {
        let t = std::time::Instant::now();
        assert!(!wait_readable(&a, std::time::Duration::from_micros(us)).unwrap());
        assert!(
            t.elapsed() >= std::time::Duration::from_micros(us * 8 / 10),
            "{us} µs asked, {:?} waited",
            t.elapsed()
        );
    }
}
