//! The sync channel's keys and sealing (defects 4, 5 and 6 of "Reliability and security"):
//! the keys follow the daemon's keyring file through a rotation and across a restart, a weak
//! key is refused at start, and with `--encrypt` no file name or content crosses in clear.

use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ha_confsync::deadline::Limits;
use ha_confsync::service::ServiceConfig;
use ha_confsync::store::{Role, Store};
use ha_confsync::sync::push;
use ha_confsync::wire::Wire;
use ha_mgmt_api::{ErrorCode, Event, EventKind, Reply, Request};
use ha_persist::KeyringFile;
use ha_proto::endpoint::Reject;

mod common;
use common::process::{call, contains, service_cmd, spawn, start_with, Proc, Relay};
use common::{pair_with, security, strong_key, write_key_file, Member, KEY};

/// The cluster key, key id 1, and the key the rotation moves to, key id 2.
const OLD: (u8, u8) = (1, KEY);
const NEW: (u8, u8) = (2, 42);

/// The keyring file as `ha-daemon` writes it at each phase of `hactl psk rotate`.
fn phase(path: &Path, sealing: (u8, u8), accept: Option<(u8, u8)>) {
    KeyringFile {
        sealing: (sealing.0, strong_key(sealing.1)),
        accept: accept.map(|(id, seed)| (id, strong_key(seed))),
    }
    .store(path)
    .unwrap();
}

/// Every phase, member after member, in the order of the rollover: all accept, all seal,
/// all retire. `after` runs after each step.
fn rotate(rings: &[&Path], mut after: impl FnMut()) {
    for r in rings {
        phase(r, OLD, Some(NEW));
        after();
    }
    for r in rings {
        phase(r, NEW, Some(OLD));
        after();
    }
    for r in rings {
        phase(r, NEW, None);
        after();
    }
}

fn publish_and_sync(a: &Member, n: &mut u32) {
    *n += 1;
    a.store(Role::Active)
        .write("step.conf", format!("{n}").as_bytes())
        .unwrap();
    a.call(Request::ConfigPublish { comment: None }).unwrap();
    match a.call(Request::ConfigSync { peer: None }) {
        Ok((Reply::SyncDone(_), _)) => {}
        other => panic!("sync {n} failed: {other:?}"),
    }
}

#[test]
fn after_a_rotation_the_old_key_opens_nothing() {
    let rings = tempfile::tempdir().unwrap();
    let ring = |serial: &str| rings.path().join(format!("{serial}.keyring"));
    let (a, b) = pair_with(|c: &mut ServiceConfig| {
        c.keyring_file = Some(ring(c.security.me.as_str()));
    });
    // No keyring file yet: the provisioned key. Then every phase, a sync after each: none
    // fails.
    let mut n = 0;
    publish_and_sync(&a, &mut n);
    rotate(&[&ring("SN-A"), &ring("SN-B")], || {
        publish_and_sync(&a, &mut n)
    });
    assert_eq!(n, 7);
    let sb = b.store(Role::Standby);
    assert_eq!(sb.read("step.conf").unwrap(), b"7");
    // The service reports where the file stands, and leaves the rotation to the daemon.
    match b.call(Request::PskRotateStatus).unwrap().0 {
        Reply::Rotate(r) => assert_eq!((r.sealing_key_id, r.previous_key_id), (2, None)),
        other => panic!("{other:?}"),
    }
    let next = rings.path().join("next.key");
    write_key_file(&next, &strong_key(43));
    match b.call(Request::PskRotate {
        psk_file: next.display().to_string(),
        key_id: 3,
    }) {
        Err(ha_mgmt_api::client::ClientError::Api(e)) => {
            assert_eq!(e.code, ErrorCode::Refused);
            assert!(e.message.contains("keyring file"), "{}", e.message);
        }
        other => panic!("{other:?}"),
    }

    // A frame sealed with the old key opens nothing any more: not B's answer at a holder of
    // the old key...
    let dir = tempfile::tempdir().unwrap();
    let old = security("SN-A", dir.path());
    let s = TcpStream::connect(&b.addr).unwrap();
    let mut w = Wire::connector(s.try_clone().unwrap(), s, &old, None, Limits::CONNECTOR).unwrap();
    let e = push(&a.store(Role::Active), &mut w, |_| {}).unwrap_err();
    assert!(e.to_string().contains("unknown_key"), "{e}");
    // ...nor the old key's frames at B (the refusal the pusher sent back, then a frame
    // sent blindly).
    let mut s = TcpStream::connect(&b.addr).unwrap();
    let (r, _keep) = std::os::unix::net::UnixStream::pair().unwrap();
    let mut w = Wire::connector(r, s.try_clone().unwrap(), &old, None, Limits::CONNECTOR).unwrap();
    let mut hello = [0u8; 512];
    let _ = std::io::Read::read(&mut s, &mut hello);
    w.send(&ha_confsync::protocol::SyncMsg::Failed {
        reason: "old key".into(),
    })
    .unwrap();
    w.flush().unwrap();
    assert!(common::wait_for(Duration::from_secs(3), || b
        .svc
        .refused()
        .get(Reject::UnknownKey)
        == 2));
    let refused = b.events_of(EventKind::FrameRefused);
    assert!(refused[0].detail.starts_with("unknown_key"), "{refused:?}");
    assert_eq!(sb.read("step.conf").unwrap(), b"7");
    assert_eq!(sb.current_number().unwrap(), Some(7));
}

fn start_member(
    dir: &Path,
    serial: &str,
    role: &str,
    listen: &str,
    key: &Path,
    extra: &[&str],
) -> Proc {
    let mut cmd = service_cmd(dir, serial, role, listen);
    cmd.arg("--psk-file").arg(key).args(extra);
    spawn(cmd, dir.join(format!("{serial}.sock")))
}

fn sync_proc(a: &Proc, n: &mut u32, root: &Path) -> Reply {
    *n += 1;
    Store::open(root, Role::Active)
        .unwrap()
        .write("step.conf", format!("{n}").as_bytes())
        .unwrap();
    call(a, Request::ConfigPublish { comment: None });
    call(a, Request::ConfigSync { peer: None })
}

#[test]
fn a_service_restarted_after_the_rotation_talks_to_its_peer() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let key = d.join("provisioned.key");
    write_key_file(&key, &strong_key(OLD.1));
    let (ring_a, ring_b) = (d.join("A.keyring"), d.join("B.keyring"));
    let ring_arg = |r: &Path| vec!["--keyring".to_string(), r.display().to_string()];
    let b_args = ring_arg(&ring_b);
    let b_args: Vec<&str> = b_args.iter().map(String::as_str).collect();
    let mut b = start_member(d, "SN-B", "standby", "127.0.0.1:0", &key, &b_args);
    let b_addr = b.addr.clone();
    let peer = format!("SN-B={b_addr}");
    let a_args = [ring_arg(&ring_a), vec!["--peer".into(), peer]].concat();
    let a_args: Vec<&str> = a_args.iter().map(String::as_str).collect();
    let a = start_member(d, "SN-A", "active", "127.0.0.1:0", &key, &a_args);
    let root_a = d.join("SN-A");
    let mut n = 0;
    assert!(matches!(sync_proc(&a, &mut n, &root_a), Reply::SyncDone(_)));
    rotate(&[&ring_a, &ring_b], || {
        let r = sync_proc(&a, &mut n, &root_a);
        assert!(matches!(r, Reply::SyncDone(_)), "{r:?}");
    });

    // Restarted the old way (the provisioned key only), B no longer talks to A...
    drop(b);
    b = start_member(d, "SN-B", "standby", &b_addr, &key, &[]);
    let r = sync_proc(&a, &mut n, &root_a);
    assert!(
        matches!(&r, Reply::Error(e) if e.message.contains("unknown_key")),
        "{r:?}"
    );
    // ...restarted with its keyring file, it does.
    drop(b);
    let _b = start_member(d, "SN-B", "standby", &b_addr, &key, &b_args);
    let r = sync_proc(&a, &mut n, &root_a);
    assert!(matches!(r, Reply::SyncDone(_)), "{r:?}");
    let sb = Store::open(&d.join("SN-B"), Role::Standby).unwrap();
    assert_eq!(sb.read("step.conf").unwrap(), n.to_string().as_bytes());
}

/// Runs `confsync service` and expects it to refuse to start; returns its stderr.
fn refused_at_start(mut cmd: Command) -> String {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let end = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the service started with a weak key");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!status.success());
    let mut err = String::new();
    use std::io::Read;
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    err
}

#[test]
fn a_weak_key_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let weak = d.join("weak.key");
    write_key_file(&weak, &[0x5a; 32]);
    let mut cmd = service_cmd(d, "SN-A", "active", "127.0.0.1:0");
    cmd.arg("--psk-file").arg(&weak);
    let err = refused_at_start(cmd);
    assert!(err.contains("weak key"), "{err}");
    assert!(!err.contains("5a5a"), "{err}");

    // A weak key in the keyring file is refused too, even with a good key file.
    let good = d.join("good.key");
    write_key_file(&good, &strong_key(1));
    let ring = d.join("keyring");
    KeyringFile {
        sealing: (2, [0; 32]),
        accept: None,
    }
    .store(&ring)
    .unwrap();
    let mut cmd = service_cmd(d, "SN-A", "active", "127.0.0.1:0");
    cmd.arg("--psk-file").arg(&good).arg("--keyring").arg(&ring);
    let err = refused_at_start(cmd);
    assert!(err.contains("weak key"), "{err}");
}

fn events(p: &Proc) -> Vec<Event> {
    let mut c = ha_mgmt_api::client::Client::connect(&p.sock, Duration::from_secs(10)).unwrap();
    let mut out = Vec::new();
    c.call(
        &Request::Events {
            follow: false,
            last: None,
        },
        |r| {
            if let Reply::Event(e) = r {
                out.push(e.clone())
            }
        },
    )
    .unwrap();
    out
}

#[test]
fn with_encrypt_no_file_name_or_content_crosses_in_clear() {
    const NAME: &[u8] = b"ipsec/secrets.conf";
    const CONTENT: &[u8] = b"psk = correct-horse-battery-staple\n";
    // (A encrypts, B encrypts)
    for (enc_a, enc_b) in [(false, false), (true, true), (false, true)] {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let key = d.join("psk");
        write_key_file(&key, &strong_key(3));
        let flag = |on: bool| if on { vec!["--encrypt"] } else { vec![] };
        let b = start_with(d, "SN-B", "standby", &key, None, &flag(enc_b));
        let relay = Relay::start(&b.addr);
        let peer = format!("SN-B={}", relay.addr);
        let a = start_with(d, "SN-A", "active", &key, Some(&peer), &flag(enc_a));
        let sa = Store::open(&d.join("SN-A"), Role::Active).unwrap();
        sa.write(std::str::from_utf8(NAME).unwrap(), CONTENT)
            .unwrap();
        call(&a, Request::ConfigPublish { comment: None });
        let r = call(&a, Request::ConfigSync { peer: None });
        let seen = contains(&relay.all(), NAME) || contains(&relay.all(), CONTENT);
        match (enc_a, enc_b) {
            (false, false) => {
                assert!(matches!(r, Reply::SyncDone(_)), "{r:?}");
                assert!(seen, "the capture must see the clear text");
            }
            (true, true) => {
                assert!(matches!(r, Reply::SyncDone(_)), "{r:?}");
                assert!(!seen, "file name or content in clear on the wire");
                let sb = Store::open(&d.join("SN-B"), Role::Standby).unwrap();
                assert_eq!(
                    sb.read(std::str::from_utf8(NAME).unwrap()).unwrap(),
                    CONTENT
                );
            }
            _ => {
                // An encrypting member refuses a peer that sends in clear.
                // The refusal is explained to the sender.
                assert!(
                    matches!(&r, Reply::Error(e) if e.message.contains("frame refused: key_in_clear")),
                    "{r:?}"
                );
                let ev = events(&b);
                assert!(
                    ev.iter().any(|e| e.kind == EventKind::FrameRefused
                        && e.detail.starts_with("key_in_clear")),
                    "{ev:?}"
                );
            }
        }
    }
}
