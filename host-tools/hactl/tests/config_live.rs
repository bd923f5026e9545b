//! hactl's configuration commands against the real configuration-sync service
//! (`ha_confsync::service::Service`) of two members, served in-process on temporary unix
//! sockets, with sync sessions over loopback TCP: publish, sync with progress, synctest and
//! its exit code, diff, the read-only standby, and the sync column of `info`.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ha_confsync::deadline::Limits;
use ha_confsync::keys::SessionCounter;
use ha_confsync::service::{PeerAddr, RoleSource, Service, ServiceConfig};
use ha_confsync::store::{Role, Store};
use ha_confsync::wire::Security;
use ha_mgmt_api::server::{self, Backend};
use ha_mgmt_api::*;
use ha_proto::keys::{KeySet, Keyring, Psk};
use ha_proto::msg::Serial;

struct Member {
    root: PathBuf,
    sock: PathBuf,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Member {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn member(
    dir: &std::path::Path,
    serial: &str,
    role: Role,
    l: TcpListener,
    peer: PeerAddr,
) -> Member {
    let root = dir.join(serial).join("store");
    let svc = Arc::new(Service::new(
        Store::open(&root, Role::Standby).unwrap(),
        ServiceConfig {
            peers: vec![peer],
            ..ServiceConfig::new(security(serial, &root, OLD_KEY), RoleSource::Fixed(role))
        },
    ));
    let sock = dir.join(serial).join("confsync.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let t1 = server::serve(server::bind(&sock).unwrap(), svc.clone(), stop.clone()).unwrap();
    let t2 = svc.serve(l, stop.clone()).unwrap();
    Member {
        root,
        sock,
        stop,
        threads: vec![t1, t2],
    }
}

/// Seed of the cluster key the members start with.
const OLD_KEY: u8 = 9;

/// A key that passes the strength rule (a hash looks random), distinct per seed.
fn strong_key(seed: u8) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest([b'h', b'a', seed]).into()
}

fn security(serial: &str, root: &std::path::Path, seed: u8) -> Security {
    Security {
        cluster_id: 5,
        keyring: Keyring::new(KeySet::derive(&Psk(strong_key(seed)), 5, 1)),
        me: Serial::new(serial).unwrap(),
        encrypt: false,
        sessions: SessionCounter::of_store(root),
    }
}

fn hactl(m: &Member, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hactl"))
        .arg("--config-socket")
        .arg(&m.sock)
        .args(args)
        .env_remove("HA_MGMT_SOCKET")
        .env_remove("HA_CONFIG_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn out(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn config_commands_against_the_real_service() {
    let dir = tempfile::tempdir().unwrap();
    let (la, lb) = (
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let a = member(
        dir.path(),
        "SN-A",
        Role::Active,
        la,
        PeerAddr {
            serial: "SN-B".into(),
            addr: ab.to_string(),
        },
    );
    let b = member(
        dir.path(),
        "SN-B",
        Role::Standby,
        lb,
        PeerAddr {
            serial: "SN-A".into(),
            addr: aa.to_string(),
        },
    );
    let sa = Store::open(&a.root, Role::Active).unwrap();
    for i in 0..300 {
        sa.write(
            &format!("objects/o{i}.conf"),
            format!("object {i}\n").as_bytes(),
        )
        .unwrap();
    }
    // Unpublished local changes: synctest says so, exit 7.
    let o = hactl(&a, &["synctest"]);
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    assert!(out(&o).contains("local unpublished changes"));

    let o = hactl(&a, &["config", "publish", "--comment", "initial"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(
        out(&o).contains("published revision 1 (300 files)"),
        "{}",
        out(&o)
    );
    // The standby is read-only: exit 3.
    let o = hactl(&b, &["config", "publish"]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("read-only"));

    // Sync shows progress, then the summary.
    let o = hactl(&a, &["sync"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let t = out(&o);
    assert!(t.contains("SN-B transfer: 300/300 files"), "{t}");
    let o = hactl(&a, &["config", "synctest", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["peers"][0]["state"], "synchronized");
    assert!(v["peers"][0]["last_sync"].is_u64());

    // One edit: diff shows the lines, synctest lists the file, sync sends one file.
    sa.write("objects/o5.conf", b"object 5\nchanged\n").unwrap();
    assert_eq!(hactl(&a, &["config", "publish"]).status.code(), Some(0));
    let o = hactl(&a, &["diff", "objects/o5.conf"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let t = out(&o);
    assert!(t.contains("differs") && t.contains("+changed"), "{t}");
    let o = hactl(&a, &["config", "diff", "objects/o5.conf", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["status"], "differs");
    let o = hactl(&a, &["synctest"]);
    assert_eq!(o.status.code(), Some(7));
    assert!(out(&o).contains("objects/o5.conf"), "{}", out(&o));
    let o = hactl(&a, &["sync", "--json"]);
    let last: serde_json::Value = serde_json::from_str(out(&o).lines().last().unwrap()).unwrap();
    assert_eq!(last["type"], "sync_done");
    assert_eq!(last["files_sent"], 1);
    assert_eq!(hactl(&a, &["synctest"]).status.code(), Some(0));
    // The standby's copy is the active's.
    let sb = Store::open(&b.root, Role::Standby).unwrap();
    assert_eq!(sb.read("objects/o5.conf").unwrap(), b"object 5\nchanged\n");

    // Each completed sync is in the service's event log, on both members.
    let o = hactl(&a, &["config", "events"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let t = out(&o);
    assert_eq!(t.matches("sync_success").count(), 2, "{t}");
    assert!(t.contains("revision 2 synced to SN-B"), "{t}");
    let o = hactl(&b, &["config", "events", "--last", "1", "--json"]);
    let lines: Vec<serde_json::Value> = out(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines[0]["kind"], "sync_success", "{lines:?}");
    assert_eq!(lines[0]["member"], "SN-A");
    assert_eq!(lines[1]["type"], "end_of_events");
}

/// A daemon that answers only info, for the merge of the sync column.
struct InfoOnly;

impl Backend for InfoOnly {
    fn info(&self, _verbose: bool) -> Reply {
        let m = |serial: &str, mode| MemberInfo {
            serial: serial.into(),
            model: "mps2-an385".into(),
            firmware: "0.1.0".into(),
            forced: Forced::None,
            mode,
            mode_since: 0,
            quality: 100,
            priority: 0,
            domains: Vec::new(),
            config_sync: ConfigSyncInfo {
                state: SyncState::NoCommunication,
                last_sync: None,
                detail: Some("configuration sync is reported by confsync, not ha-daemon".into()),
            },
            boot_time: 0,
            links: vec![],
            config_revision: 0,
            counters: None,
        };
        Reply::Info(ClusterInfo {
            fail_soft: false,
            api_version: API_VERSION,
            cluster_id: 5,
            me: "SN-A".into(),
            banner: BannerLevel::Ok,
            banner_text: "2 members, redundant".into(),
            addresses: Default::default(),
            peers: Vec::new(),
            members: vec![m("SN-A", Mode::Active), m("SN-B", Mode::Passive)],
        })
    }
}

#[test]
fn info_takes_the_sync_column_from_the_service() {
    let dir = tempfile::tempdir().unwrap();
    // SN-B is not listening: no communication, and the banner says so.
    let gone = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = gone.local_addr().unwrap().to_string();
    drop(gone);
    let a = member(
        dir.path(),
        "SN-A",
        Role::Active,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        PeerAddr {
            serial: "SN-B".into(),
            addr,
        },
    );
    let sa = Store::open(&a.root, Role::Active).unwrap();
    sa.write("x.conf", b"x").unwrap();
    sa.publish(None).unwrap();
    let dsock = dir.path().join("mgmt.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let t = server::serve(
        server::bind(&dsock).unwrap(),
        Arc::new(InfoOnly),
        stop.clone(),
    )
    .unwrap();
    let o = hactl(&a, &["--socket", dsock.to_str().unwrap(), "info", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["members"][0]["config_sync"]["state"], "source");
    assert_eq!(v["members"][1]["config_sync"]["state"], "no_communication");
    assert_eq!(v["banner"], "warning");
    let o = hactl(&a, &["--socket", dsock.to_str().unwrap(), "info"]);
    let text = out(&o);
    assert!(text.starts_with("[WARNING]"), "{text}");
    assert!(
        text.contains("configuration of SN-B: no_communication"),
        "{text}"
    );
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn the_sync_channel_keys_roll_over_without_a_failed_sync() {
    use ha_confsync::sync::push;
    use ha_confsync::wire::Wire;
    use hactl::rotation::{rotate, ApiMember, Step};
    use std::os::unix::fs::PermissionsExt;

    let dir = tempfile::tempdir().unwrap();
    let (la, lb) = (
        TcpListener::bind("127.0.0.1:0").unwrap(),
        TcpListener::bind("127.0.0.1:0").unwrap(),
    );
    let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let a = member(
        dir.path(),
        "SN-A",
        Role::Active,
        la,
        PeerAddr {
            serial: "SN-B".into(),
            addr: ab.to_string(),
        },
    );
    let b = member(
        dir.path(),
        "SN-B",
        Role::Standby,
        lb,
        PeerAddr {
            serial: "SN-A".into(),
            addr: aa.to_string(),
        },
    );
    let key = dir.path().join("new.key");
    std::fs::write(&key, ha_confsync::hex(&strong_key(0x3c))).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let sa = Store::open(&a.root, Role::Active).unwrap();
    let call = |req: Request| {
        let mut c = ha_mgmt_api::client::Client::connect(&a.sock, Duration::from_secs(60)).unwrap();
        c.call(&req, |_| {})
    };
    // A publish and a sync after every step of the rollover: none may fail.
    let mut n = 0;
    let mut sync_now = || {
        n += 1;
        sa.write("step.conf", format!("{n}").as_bytes()).unwrap();
        call(Request::ConfigPublish { comment: None }).unwrap();
        match call(Request::ConfigSync { peer: None }) {
            Ok(Reply::SyncDone(_)) => {}
            other => panic!("sync {n} failed: {other:?}"),
        }
    };
    sync_now();
    let mut members = vec![
        ApiMember::new(a.sock.clone(), key.to_str().unwrap().to_string()),
        ApiMember::new(b.sock.clone(), key.to_str().unwrap().to_string()),
    ];
    let steps = rotate(&mut members, 2, |_, _| sync_now()).unwrap();
    assert_eq!(steps, vec![Step::Done, Step::Done]);
    assert_eq!(n, 7);
    let sb = Store::open(&b.root, Role::Standby).unwrap();
    assert_eq!(sb.read("step.conf").unwrap(), b"7");

    // The old key is refused now.
    let old = security("SN-A", &a.root, OLD_KEY);
    let s = std::net::TcpStream::connect(ab).unwrap();
    let mut w = Wire::connector(s.try_clone().unwrap(), s, &old, None, Limits::CONNECTOR).unwrap();
    assert!(push(&sa, &mut w, |_| {}).is_err());
    assert_eq!(sb.read("step.conf").unwrap(), b"7");
}
