//! Sync sessions over real sockets: incremental transfer, authentication, crash safety.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use ha_confsync::deadline::Limits;
use ha_confsync::keys::SessionCounter;
use ha_confsync::store::{verify, Role, Store};
use ha_confsync::sync::{push, receive, PushReport, SyncFailure};
use ha_confsync::wire::{Security, Wire};
use ha_proto::keys::{KeySet, Keyring, Psk};
use ha_proto::msg::Serial;

mod common;
use common::{strong_key, write_key_file};

const CLUSTER: u32 = 77;

/// `serial`'s security context with the test key `key`; its session counter lives in the
/// store at `root`.
fn sec(serial: &str, key: u8, root: &Path) -> Security {
    Security {
        cluster_id: CLUSTER,
        keyring: Keyring::new(KeySet::derive(&Psk(strong_key(key)), CLUSTER, 1)),
        me: Serial::new(serial).unwrap(),
        encrypt: false,
        sessions: SessionCounter::of_store(root),
    }
}

fn tcp_session(
    tx: &Store,
    rx: &Store,
    rx_key: u8,
) -> (Result<PushReport, SyncFailure>, Result<u64, String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(move || {
            let (c, _) = l.accept().unwrap();
            let sec = sec("SN-B", rx_key, rx.root());
            let mut w = Wire::receiver(c.try_clone().unwrap(), c, &sec, Limits::RECEIVER).unwrap();
            receive(rx, &mut w, |_| {})
                .map(|r| r.revision)
                .map_err(|e| e.to_string())
        });
        let c = TcpStream::connect(addr).unwrap();
        let sec = sec("SN-A", 1, tx.root());
        let mut w =
            Wire::connector(c.try_clone().unwrap(), c, &sec, None, Limits::CONNECTOR).unwrap();
        let r = push(tx, &mut w, |_| {});
        drop(w);
        (r, h.join().unwrap())
    })
}

#[test]
fn incremental_sync_over_tcp() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let tx = Store::open(a.path(), Role::Active).unwrap();
    let rx = Store::open(b.path(), Role::Standby).unwrap();
    for i in 0..200 {
        tx.write(
            &format!("dir{}/f{i}.conf", i % 5),
            format!("setting {i}\n").as_bytes(),
        )
        .unwrap();
    }
    tx.write("keys/ipsec.key", b"secret").unwrap();
    std::fs::set_permissions(
        a.path().join("draft/keys/ipsec.key"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    tx.publish(None).unwrap();
    let (r, got) = tcp_session(&tx, &rx, 1);
    let r = r.unwrap();
    assert_eq!(got.unwrap(), 1);
    assert_eq!(r.files_sent, 201);
    assert_eq!(r.peer_revision_before, None);
    assert_eq!(rx.read("dir3/f3.conf").unwrap(), b"setting 3\n");
    let mode = std::fs::metadata(rx.tree(1).join("keys/ipsec.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);

    // Unpublished edits do not travel.
    tx.write("dir0/f0.conf", b"draft only\n").unwrap();
    tx.write("dir1/f1.conf", b"changed\n").unwrap();
    tx.remove("dir2/f2.conf").unwrap();
    let (r, _) = tcp_session(&tx, &rx, 1);
    assert_eq!(
        r.unwrap().files_sent,
        0,
        "nothing new published, nothing sent"
    );
    assert_eq!(rx.read("dir0/f0.conf").unwrap(), b"setting 0\n");

    tx.publish(Some("two edits, one removal".into())).unwrap();
    let (r, got) = tcp_session(&tx, &rx, 1);
    let r = r.unwrap();
    assert_eq!(got.unwrap(), 2);
    assert_eq!(r.files_sent, 2, "only changed content travels");
    assert_eq!(r.peer_revision_before, Some(1));
    assert_eq!(rx.read("dir1/f1.conf").unwrap(), b"changed\n");
    assert!(rx.read("dir2/f2.conf").is_err());
    assert!(verify(&rx, 2).unwrap().is_empty());
    assert!(
        verify(&rx, 1).unwrap().is_empty(),
        "the previous revision is untouched"
    );
}

#[test]
fn wrong_psk_changes_nothing() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let tx = Store::open(a.path(), Role::Active).unwrap();
    let rx = Store::open(b.path(), Role::Standby).unwrap();
    tx.write("f", b"1").unwrap();
    tx.publish(None).unwrap();
    let (r, got) = tcp_session(&tx, &rx, 9);
    // The sender rejects the receiver's first frame (bad tag) and hangs up.
    let e = r.unwrap_err().to_string();
    assert!(e.contains("rejected: bad_tag"), "{e}");
    assert!(got.is_err());
    assert!(rx.current().unwrap().is_none());
}

#[test]
fn collision_is_refused() {
    // The receiver runs its own revision 1; another source offers a different revision 1.
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let tx = Store::open(a.path(), Role::Active).unwrap();
    let mut rx = Store::open(b.path(), Role::Active).unwrap();
    tx.write("f", b"from A").unwrap();
    tx.publish(None).unwrap();
    rx.write("f", b"from B").unwrap();
    rx.publish(None).unwrap();
    rx.set_role(Role::Standby);
    let (r, got) = tcp_session(&tx, &rx, 1);
    assert!(got.unwrap_err().contains("collision"));
    assert!(r.unwrap_err().to_string().contains("collision"));
    assert_eq!(rx.read("f").unwrap(), b"from B");
}

#[test]
fn unix_socket_transport() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let tx = Store::open(a.path(), Role::Active).unwrap();
    let rx = Store::open(b.path(), Role::Standby).unwrap();
    tx.write("x/y", b"z").unwrap();
    tx.publish(None).unwrap();
    let (s1, s2) = UnixStream::pair().unwrap();
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let sec = sec("SN-B", 1, rx.root());
            let mut w =
                Wire::receiver(s2.try_clone().unwrap(), s2, &sec, Limits::RECEIVER).unwrap();
            receive(&rx, &mut w, |_| {}).unwrap()
        });
        let sec = sec("SN-A", 1, tx.root());
        let mut w =
            Wire::connector(s1.try_clone().unwrap(), s1, &sec, None, Limits::CONNECTOR).unwrap();
        push(&tx, &mut w, |_| {}).unwrap();
        assert_eq!(h.join().unwrap().revision, 1);
    });
    assert_eq!(rx.read("x/y").unwrap(), b"z");
}

// ------------------------------------------------------------------ crash test

/// A receiver process, killed by its own pid when dropped.
struct Receiver {
    child: Child,
    lines: std::io::Lines<BufReader<std::process::ChildStdout>>,
    addr: String,
}

impl Receiver {
    fn start(root: &Path, key: &Path) -> Receiver {
        let mut child = Command::new(env!("CARGO_BIN_EXE_confsync"))
            .args(["serve", "--root"])
            .arg(root)
            .args(["--listen", "127.0.0.1:0", "--psk-file"])
            .arg(key)
            .args(["--cluster-id", &CLUSTER.to_string(), "--serial", "SN-B"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let addr = first.strip_prefix("listening ").unwrap().to_string();
        Receiver { child, lines, addr }
    }

    /// Reads progress lines until `done` contents were staged (bounded by the stream).
    fn wait_for(&mut self, pred: impl Fn(&str) -> bool) -> String {
        for line in self.lines.by_ref() {
            let line = line.unwrap();
            if pred(&line) {
                return line;
            }
        }
        panic!("receiver output ended");
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write_files(tx: &Store, n: usize, version: u32) {
    let d = tx.draft_dir().unwrap();
    for i in 0..n {
        let p = d.join(format!("d{:03}/file{i:05}.conf", i % 100));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("file {i} version {version}\n").repeat(8)).unwrap();
    }
}

fn push_to(tx: &Store, addr: &str) -> Result<PushReport, SyncFailure> {
    let c = TcpStream::connect(addr).unwrap();
    let sec = sec("SN-A", 1, tx.root());
    let mut w = Wire::connector(c.try_clone().unwrap(), c, &sec, None, Limits::CONNECTOR).unwrap();
    push(tx, &mut w, |_| {})
}

#[test]
fn receiver_killed_mid_sync_of_10000_files_keeps_previous_revision() {
    const N: usize = 10_000;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let keydir = tempfile::tempdir().unwrap();
    let key = keydir.path().join("psk");
    write_key_file(&key, &strong_key(1));

    let tx = Store::open(a.path(), Role::Active).unwrap();
    write_files(&tx, N, 1);
    tx.publish(None).unwrap();

    // Revision 1 reaches the receiver completely.
    {
        let mut r = Receiver::start(b.path(), &key);
        let rep = push_to(&tx, &r.addr).unwrap();
        assert_eq!(rep.files_sent as usize, N);
        r.wait_for(|l| l.starts_with("committed revision 1"));
    }

    // Revision 2 changes every file; the receiver is killed in the middle of the transfer.
    write_files(&tx, N, 2);
    tx.publish(None).unwrap();
    {
        let mut r = Receiver::start(b.path(), &key);
        let addr = r.addr.clone();
        let killed_at = std::thread::scope(|s| {
            let pusher = s.spawn(|| push_to(&tx, &addr));
            let line = r.wait_for(|l| {
                l.strip_prefix("progress transfer ")
                    .and_then(|rest| rest.split(' ').next()?.parse::<usize>().ok())
                    .is_some_and(|done| done >= N / 3)
            });
            // SIGKILL to the receiver's own pid.
            r.child.kill().unwrap();
            r.child.wait().unwrap();
            assert!(
                pusher.join().unwrap().is_err(),
                "the push must fail when the receiver dies"
            );
            line
        });
        eprintln!("receiver killed at: {killed_at}");
    }

    // The previous revision is current, complete and intact.
    let rx = Store::open(b.path(), Role::Standby).unwrap();
    assert_eq!(rx.current_number().unwrap(), Some(1));
    let rev = rx.current().unwrap().unwrap();
    assert_eq!(rev.manifest.files.len(), N);
    assert!(verify(&rx, 1).unwrap().is_empty());
    assert_eq!(
        rx.read("d042/file00042.conf").unwrap(),
        "file 42 version 1\n".repeat(8).into_bytes()
    );
    assert_eq!(
        std::fs::read_dir(b.path().join("staging")).unwrap().count(),
        0
    );
    drop(rx);

    // A new sync completes.
    let mut r = Receiver::start(b.path(), &key);
    let rep = push_to(&tx, &r.addr).unwrap();
    assert_eq!(rep.revision, 2);
    assert_eq!(rep.files_sent as usize, N);
    r.wait_for(|l| l.starts_with("committed revision 2"));
    let rx = Store::open(b.path(), Role::Standby).unwrap();
    assert_eq!(rx.current_number().unwrap(), Some(2));
    assert!(verify(&rx, 2).unwrap().is_empty());
    assert_eq!(
        rx.read("d042/file00042.conf").unwrap(),
        "file 42 version 2\n".repeat(8).into_bytes()
    );
}
