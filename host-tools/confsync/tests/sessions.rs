//! Incoming sessions of the service (defects 7 and 2 of "Reliability and security"): served
//! concurrently with deadlines, a slow client holding nothing the others need; every request
//! bound to its session, so a recorded one replayed later changes nothing; received files
//! private while staged, special mode bits only with the flag.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ha_confsync::deadline::Limits;
use ha_confsync::protocol::SyncMsg;
use ha_confsync::service::{ServiceConfig, SessionLimits};
use ha_confsync::store::{Role, STAGING_DIR_MODE};
use ha_confsync::wire::Wire;
use ha_mgmt_api::{EventKind, Reply, Request};

mod common;
use common::process::Relay;
use common::{
    member, member_with, pair_with, security, strong_key, wait_for, write_key_file, Member, KEY,
};

/// Short deadlines so that the tests see them: 1 s per read, 1.5 s to the first frame, 6 s
/// per session.
fn short(cfg: &mut ServiceConfig) {
    cfg.sessions = SessionLimits {
        receiver: Limits {
            io: Duration::from_secs(1),
            handshake: Duration::from_millis(1500),
            session: Duration::from_secs(6),
        },
        ..SessionLimits::default()
    };
}

fn sync(a: &Member) -> Result<Reply, String> {
    a.call(Request::ConfigSync { peer: None })
        .map(|(r, _)| r)
        .map_err(|e| format!("{e:?}"))
}

/// A client that sends the start of a frame, then one byte every 200 ms: every read gets a
/// byte in time, so only a deadline stops it. Returns when the receiver hung up.
fn trickle(addr: &str, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<Duration> {
    let mut s = TcpStream::connect(addr).unwrap();
    std::thread::spawn(move || {
        let start = Instant::now();
        let _ = s.write_all(&[0x05]);
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(200));
            if s.write_all(b"A").is_err() {
                break;
            }
        }
        // The receiver closed: reading sees the end (or a reset).
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut sink = Vec::new();
        let _ = s.read_to_end(&mut sink);
        start.elapsed()
    })
}

#[test]
fn a_trickling_client_blocks_no_sync_and_is_cut_by_its_deadline() {
    let (a, b) = pair_with(short);
    let stop = Arc::new(AtomicBool::new(false));
    let trickler = trickle(&b.addr, stop.clone());
    std::thread::sleep(Duration::from_millis(300));
    a.store(Role::Active).write("x.conf", b"1").unwrap();
    a.call(Request::ConfigPublish { comment: None }).unwrap();
    // A real sync completes while the trickler is connected (the old service served one
    // session at a time and made this wait 30 s, then fail).
    let t = Instant::now();
    let r = sync(&a).unwrap();
    assert!(matches!(r, Reply::SyncDone(_)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert_eq!(b.store(Role::Standby).read("x.conf").unwrap(), b"1");
    // The trickler is cut at the handshake deadline: it never sent an accepted frame.
    let took = trickler.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    assert!(took < Duration::from_secs(4), "cut after {took:?}");
    let cut = b.events_of(EventKind::SessionCut);
    assert!(
        cut.iter()
            .any(|e| e.detail.starts_with("handshake_deadline")),
        "{cut:?}"
    );
    assert!(wait_for(Duration::from_secs(2), || b.svc.sessions_active() == 0));
    // Each completed sync is an event on both ends.
    assert_eq!(a.events_of(EventKind::SyncSuccess).len(), 1);
    assert_eq!(b.events_of(EventKind::SyncSuccess).len(), 1);
}

#[test]
fn a_slow_key_holder_mid_transfer_holds_no_lock_and_is_cut_at_the_session_deadline() {
    let (a, b) = pair_with(short);
    // A key holder offers a revision of one big file and sends it one piece every 400 ms:
    // each read is in time, the session is not.
    let slow = std::thread::spawn({
        let addr = b.addr.clone();
        let dir = tempfile::tempdir().unwrap();
        move || {
            let sec = security("SN-C", dir.path());
            let s = TcpStream::connect(addr).unwrap();
            let mut w =
                Wire::connector(s.try_clone().unwrap(), s, &sec, None, Limits::CONNECTOR).unwrap();
            let SyncMsg::Hello { nonce, .. } = w.recv().unwrap() else {
                panic!("no hello")
            };
            let body = vec![b'z'; 1280 * 100];
            let hash: [u8; 32] = {
                use sha2::Digest;
                sha2::Sha256::digest(&body).into()
            };
            let mut m = ha_confsync::manifest::Manifest::default();
            m.files.insert(
                "big.bin".into(),
                ha_confsync::manifest::Entry {
                    sha256: hash,
                    size: body.len() as u64,
                    mode: 0o644,
                },
            );
            w.send(&SyncMsg::Offer {
                nonce,
                sender_nonce: [1; 16],
                revision: 50,
                entries: 1,
                digest: m.digest(),
            })
            .unwrap();
            w.send(&SyncMsg::Entries(vec![ha_confsync::protocol::WireEntry {
                path: "big.bin".into(),
                sha256: hash,
                size: body.len() as u64,
                mode: 0o644,
            }]))
            .unwrap();
            w.send(&SyncMsg::EntriesEnd).unwrap();
            let start = Instant::now();
            let mut pieces = ha_confsync::protocol::data_messages(hash, &body);
            loop {
                match w.recv() {
                    Ok(SyncMsg::NeedEnd) => break,
                    Ok(_) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            for p in pieces.by_ref() {
                if w.send(&p).and_then(|()| w.flush()).is_err() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(400));
            }
            start.elapsed()
        }
    });
    std::thread::sleep(Duration::from_millis(500));
    // Meanwhile the active member's sync to B completes (B's store lock is free).
    a.store(Role::Active).write("y.conf", b"2").unwrap();
    a.call(Request::ConfigPublish { comment: None }).unwrap();
    let t = Instant::now();
    let r = sync(&a).unwrap();
    assert!(matches!(r, Reply::SyncDone(_)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    // The slow session is cut by the session deadline (6 s), not before.
    let took = slow.join().unwrap();
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(wait_for(Duration::from_secs(3), || b
        .events_of(EventKind::SessionCut)
        .iter()
        .any(|e| e.detail.starts_with("session_deadline"))));
    // Nothing of the slow session was installed or left behind.
    let sb = b.store(Role::Standby);
    assert_eq!(sb.current_number().unwrap(), Some(1));
    assert!(sb.read("big.bin").is_err());
    assert!(wait_for(Duration::from_secs(2), || std::fs::read_dir(
        b.root().join("staging")
    )
    .unwrap()
    .next()
    .is_none()));
}

#[test]
fn sessions_beyond_the_bound_are_refused_and_logged() {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let b = member_with("SN-B", Role::Standby, l, vec![], |c| {
        short(c);
        c.sessions.max_sessions = 2;
    });
    let _s1 = TcpStream::connect(&b.addr).unwrap();
    let _s2 = TcpStream::connect(&b.addr).unwrap();
    assert!(wait_for(Duration::from_secs(2), || b.svc.sessions_active() == 2));
    let mut s3 = TcpStream::connect(&b.addr).unwrap();
    s3.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    // Closed at once, no Hello.
    let mut buf = [0u8; 2];
    assert!(matches!(s3.read(&mut buf), Ok(0) | Err(_)));
    let cut = b.events_of(EventKind::SessionCut);
    assert!(
        cut.iter()
            .any(|e| e.detail.starts_with("too_many_sessions")),
        "{cut:?}"
    );
}

#[test]
fn a_recorded_join_replayed_after_the_removal_changes_nothing() {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("psk");
    write_key_file(&key, &strong_key(KEY));
    let key = key.to_str().unwrap().to_string();
    let a = member(
        "SN-A",
        Role::Active,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        vec![],
    );
    let b = member(
        "SN-B",
        Role::Standby,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        vec![],
    );
    a.store(Role::Active).write("f.conf", b"x").unwrap();
    a.call(Request::ConfigPublish { comment: None }).unwrap();
    a.call(Request::ClusterCreate {
        cluster_id: common::CLUSTER,
        psk_file: key.clone(),
    })
    .unwrap();
    // B joins through a relay that records its frames.
    let relay = Relay::start(&a.addr);
    b.call(Request::ClusterJoin {
        peer: relay.addr.clone(),
        psk_file: key,
        ha: None,
    })
    .unwrap();
    assert_eq!(a.svc.cluster_doc().unwrap().unwrap().members.len(), 2);
    a.call(Request::ClusterRemove {
        serial: "SN-B".into(),
    })
    .unwrap();
    let sa = a.store(Role::Standby);
    let (rev, doc) = (sa.current_number().unwrap(), a.svc.cluster_doc().unwrap());
    assert_eq!(doc.as_ref().unwrap().members.len(), 1);
    let recorded = relay.up.lock().unwrap().clone();
    assert!(!recorded.is_empty());

    // Replayed in a new session (after its Hello, as the newcomer did), and blindly.
    for read_hello in [true, false] {
        let mut s = TcpStream::connect(&a.addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        if read_hello {
            let mut len = [0u8; 2];
            s.read_exact(&mut len).unwrap();
            let mut hello = vec![0u8; u16::from_be_bytes(len) as usize];
            s.read_exact(&mut hello).unwrap();
        }
        s.write_all(&recorded).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    }
    assert!(wait_for(Duration::from_secs(3), || a
        .events_of(EventKind::FrameRefused)
        .len()
        >= 2));
    let refused = a.events_of(EventKind::FrameRefused);
    assert!(
        refused
            .iter()
            .all(|e| e.detail.starts_with("stale_binding")),
        "{refused:?}"
    );
    assert_eq!(
        a.svc
            .refused()
            .get(ha_proto::endpoint::Reject::StaleBinding),
        2
    );
    // No new revision, SN-B still removed.
    assert_eq!(sa.current_number().unwrap(), rev);
    assert_eq!(a.svc.cluster_doc().unwrap(), doc);
}

#[test]
fn special_mode_bits_are_refused_unless_the_receiver_allows_them() {
    for allow in [false, true] {
        let (a, b) = pair_with(|c| c.allow_special_modes = allow);
        let sa = a.store(Role::Active);
        sa.write("bin/helper", b"#!/bin/sh\n").unwrap();
        sa.write("keys/ipsec.key", b"secret").unwrap();
        let draft = a.root().join("draft");
        for (p, m) in [("bin/helper", 0o4755), ("keys/ipsec.key", 0o600)] {
            std::fs::set_permissions(draft.join(p), std::fs::Permissions::from_mode(m)).unwrap();
        }
        a.call(Request::ConfigPublish { comment: None }).unwrap();
        let r = a.call(Request::ConfigSync { peer: None });
        let sb = b.store(Role::Standby);
        let staging = b.root().join("staging");
        let mode = std::fs::metadata(&staging).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, STAGING_DIR_MODE);
        if allow {
            assert!(matches!(r, Ok((Reply::SyncDone(_), _))), "{r:?}");
            let mode = |p: &str| {
                std::fs::metadata(sb.tree(1).join(p))
                    .unwrap()
                    .permissions()
                    .mode()
                    & 0o7777
            };
            assert_eq!(mode("bin/helper"), 0o4755);
            assert_eq!(mode("keys/ipsec.key"), 0o600);
        } else {
            let e = format!("{r:?}");
            assert!(e.contains("setuid"), "{e}");
            assert_eq!(sb.current_number().unwrap(), None);
            assert!(std::fs::read_dir(&staging).unwrap().next().is_none());
        }
    }
}
