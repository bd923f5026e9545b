//! The wire over socket pairs: every frame goes through the endpoint, bound to the other end's
//! session; refusals are typed.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use ha_proto::keys::{KeySet, Keyring, Psk};

use super::*;
use crate::protocol::NONCE_LEN;

const CLUSTER: u32 = 33;

fn sec(dir: &std::path::Path, serial: &str, encrypt: bool) -> Security {
    Security {
        cluster_id: CLUSTER,
        keyring: Keyring::new(KeySet::derive(&Psk([0x3d; 32]), CLUSTER, 1)),
        me: Serial::new(serial).unwrap(),
        encrypt,
        sessions: SessionCounter::new(dir.join(format!("{serial}-epoch"))),
    }
}

/// One end of a session whose other end is raw: what this end writes is read raw from
/// `out`, and raw bytes written to `inp` are what this end reads.
struct End {
    wire: Wire<UnixStream, UnixStream>,
    out: UnixStream,
    inp: UnixStream,
}

fn end(sec: &Security, side: Side, limits: Limits) -> End {
    let (r, inp) = UnixStream::pair().unwrap();
    let (w, out) = UnixStream::pair().unwrap();
    let wire = match side {
        Side::Receiver => Wire::receiver(r, w, sec, limits).unwrap(),
        Side::Connector => Wire::connector(r, w, sec, None, limits).unwrap(),
    };
    End { wire, out, inp }
}

impl End {
    /// Sends `m` and returns the bytes that went out (length prefix included).
    fn emit(&mut self, m: &SyncMsg) -> Vec<u8> {
        self.wire.send(m).unwrap();
        self.wire.flush().unwrap();
        let mut len = [0u8; 2];
        self.out.read_exact(&mut len).unwrap();
        let mut f = vec![0u8; u16::from_be_bytes(len) as usize];
        self.out.read_exact(&mut f).unwrap();
        [len.to_vec(), f].concat()
    }

    fn take(&mut self, bytes: &[u8]) -> Result<SyncMsg, WireError> {
        self.inp.write_all(bytes).unwrap();
        self.wire.recv()
    }
}

fn hello() -> SyncMsg {
    SyncMsg::Hello {
        nonce: [7; NONCE_LEN],
        revision: None,
    }
}

fn offer() -> SyncMsg {
    SyncMsg::Offer {
        nonce: [7; NONCE_LEN],
        sender_nonce: [8; NONCE_LEN],
        revision: 1,
        entries: 0,
        digest: [0; 32],
    }
}

fn refused(r: Result<SyncMsg, WireError>) -> Reject {
    match r {
        Err(WireError::Refused(r)) => r,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn frames_are_bound_to_the_receivers_session() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (sec(d.path(), "SN-A", false), sec(d.path(), "SN-B", false));
    let mut rx = end(&b, Side::Receiver, Limits::RECEIVER);
    let mut tx = end(&a, Side::Connector, Limits::CONNECTOR);
    let h = rx.emit(&hello());
    assert_eq!(tx.take(&h).unwrap(), hello());
    let o = tx.emit(&offer());
    assert_eq!(rx.take(&o).unwrap(), offer());
    assert_eq!(rx.wire.peer(), Serial::new("SN-A"));
    // Within the session, the same frame again is a replay.
    assert_eq!(refused(rx.take(&o)), Reject::Replay);

    // A later session of the receiver: the recorded frame names the earlier one.
    let mut rx2 = end(&b, Side::Receiver, Limits::RECEIVER);
    assert!(rx2.wire.epoch() > rx.wire.epoch());
    rx2.emit(&hello());
    assert_eq!(refused(rx2.take(&o)), Reject::StaleBinding);
    // A connector that never heard the receiver cannot bind its request.
    let mut blind = end(&a, Side::Connector, Limits::CONNECTOR);
    let unbound = blind.emit(&offer());
    let mut rx3 = end(&b, Side::Receiver, Limits::RECEIVER);
    assert_eq!(refused(rx3.take(&unbound)), Reject::Unbound);
}

#[test]
fn directions_and_reflections_are_refused() {
    let d = tempfile::tempdir().unwrap();
    let (a, b) = (sec(d.path(), "SN-A", false), sec(d.path(), "SN-B", false));
    let mut rx = end(&b, Side::Receiver, Limits::RECEIVER);
    let mut tx = end(&a, Side::Connector, Limits::CONNECTOR);
    let h = rx.emit(&hello());
    tx.take(&h).unwrap();
    // A message only the receiver sends, sent to it.
    let wrong = tx.emit(&hello());
    assert_eq!(refused(rx.take(&wrong)), Reject::WrongDirection);
    // The receiver's own frame reflected back to it.
    let mut rx2 = end(&b, Side::Receiver, Limits::RECEIVER);
    let own = rx2.emit(&hello());
    assert_eq!(refused(rx2.take(&own)), Reject::OwnFrame);
    // Another key: the tag does not verify.
    let mut other = sec(d.path(), "SN-C", false);
    other.keyring = Keyring::new(KeySet::derive(&Psk([0x4e; 32]), CLUSTER, 1));
    let mut rx3 = end(&other, Side::Receiver, Limits::RECEIVER);
    assert_eq!(refused(rx3.take(&h)), Reject::BadTag);
}

#[test]
fn an_encrypting_member_hides_content_and_refuses_frames_in_clear() {
    let d = tempfile::tempdir().unwrap();
    let data = SyncMsg::Data {
        hash: [1; 32],
        offset: 0,
        last: true,
        bytes: b"psk = correct-horse-battery-staple".to_vec(),
    };
    let entries = SyncMsg::Entries(vec![crate::protocol::WireEntry {
        path: "ipsec/secrets.conf".into(),
        sha256: [1; 32],
        size: 34,
        mode: 0o600,
    }]);
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    for encrypt in [false, true] {
        let (a, b) = (
            sec(d.path(), "SN-A", encrypt),
            sec(d.path(), "SN-B", encrypt),
        );
        let mut rx = end(&b, Side::Receiver, Limits::RECEIVER);
        let mut tx = end(&a, Side::Connector, Limits::CONNECTOR);
        tx.take(&rx.emit(&hello())).unwrap();
        let f1 = tx.emit(&entries);
        let f2 = tx.emit(&data);
        let seen = contains(&f1, b"ipsec/secrets.conf") || contains(&f2, b"correct-horse");
        assert_eq!(seen, !encrypt, "encrypt={encrypt}");
        assert_eq!(rx.take(&f1).unwrap(), entries);
        assert_eq!(rx.take(&f2).unwrap(), data);
    }
    // An encrypting receiver refuses a sender that does not encrypt.
    let (a, b) = (sec(d.path(), "SN-A", false), sec(d.path(), "SN-B", true));
    let mut rx = end(&b, Side::Receiver, Limits::RECEIVER);
    let mut tx = end(&a, Side::Connector, Limits::CONNECTOR);
    tx.take(&rx.emit(&hello())).unwrap();
    assert_eq!(refused(rx.take(&tx.emit(&offer()))), Reject::KeyInClear);
}

#[test]
fn a_trickling_peer_is_cut_at_the_handshake_deadline() {
    let d = tempfile::tempdir().unwrap();
    let b = sec(d.path(), "SN-B", false);
    let limits = Limits {
        io: Duration::from_millis(400),
        handshake: Duration::from_millis(600),
        session: Duration::from_secs(5),
    };
    let mut rx = end(&b, Side::Receiver, limits);
    let mut inp = rx.inp.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        // A frame's length, then one byte every 100 ms: every read gets a byte in time.
        let _ = inp.write_all(&[0x05]);
        for _ in 0..30 {
            std::thread::sleep(Duration::from_millis(100));
            if inp.write_all(b"A").is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    match rx.wire.recv() {
        Err(WireError::Deadline(Cut::Handshake)) => {}
        other => panic!("{other:?}"),
    }
    assert!(
        start.elapsed() < Duration::from_millis(1500),
        "{:?}",
        start.elapsed()
    );
    drop(rx);
    t.join().unwrap();
}
