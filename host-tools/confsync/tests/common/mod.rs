//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use sha2::Digest;

pub mod process;

/// A key that passes `ha_proto::keys::check_strength` (a hash looks random), distinct per
/// seed.
pub fn strong_key(seed: u8) -> [u8; 32] {
    let k: [u8; 32] = sha2::Sha256::digest([b't', b'e', b's', b't', seed]).into();
    assert!(ha_proto::keys::check_strength(&k).is_ok());
    k
}

/// Writes `key` as a 0600 key file (64 hex digits) at `path`.
pub fn write_key_file(path: &Path, key: &[u8; 32]) {
    std::fs::write(path, ha_confsync::hex(key)).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use ha_confsync::keys::SessionCounter;
use ha_confsync::service::{PeerAddr, RoleSource, Service, ServiceConfig};
use ha_confsync::store::{Role, Store};
use ha_confsync::wire::Security;
use ha_mgmt_api::client::{Client, ClientError};
use ha_mgmt_api::server;
use ha_mgmt_api::{Event, EventKind, Reply, Request};
use ha_proto::keys::{KeySet, Keyring, Psk};
use ha_proto::msg::Serial;

/// Cluster id of the in-process members.
pub const CLUSTER: u32 = 91;
/// Seed of the cluster key of the in-process members ([`strong_key`]).
pub const KEY: u8 = 7;

/// A member's configuration-sync service, in-process: the management API on a unix socket,
/// the receiver on loopback TCP. Its threads stop when it is dropped.
pub struct Member {
    /// Holds the store and the socket.
    pub dir: tempfile::TempDir,
    /// The service.
    pub svc: Arc<Service>,
    /// Its management socket.
    pub sock: PathBuf,
    /// Its receiver's address.
    pub addr: String,
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

impl Member {
    /// The store's root.
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    /// The member's store, opened with `role`.
    pub fn store(&self, role: Role) -> Store {
        Store::open(&self.root(), role).unwrap()
    }

    /// One request on the management socket; streamed replies are returned too.
    pub fn call(&self, req: Request) -> Result<(Reply, Vec<Reply>), ClientError> {
        let mut c = Client::connect(&self.sock, Duration::from_secs(60))?;
        let mut streamed = Vec::new();
        let r = c.call(&req, |r| streamed.push(r.clone()))?;
        Ok((r, streamed))
    }

    /// The event log, read on the management socket.
    pub fn events(&self) -> Vec<Event> {
        let (end, events) = self
            .call(Request::Events {
                follow: false,
                last: None,
            })
            .unwrap();
        assert_eq!(end, Reply::EndOfEvents);
        events
            .into_iter()
            .filter_map(|r| match r {
                Reply::Event(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    /// The events of one kind.
    pub fn events_of(&self, kind: EventKind) -> Vec<Event> {
        self.events()
            .into_iter()
            .filter(|e| e.kind == kind)
            .collect()
    }
}

/// `serial`'s security context with the cluster key; its session counter in `root`.
pub fn security(serial: &str, root: &Path) -> Security {
    Security {
        cluster_id: CLUSTER,
        keyring: Keyring::new(KeySet::derive(&Psk(strong_key(KEY)), CLUSTER, 1)),
        me: Serial::new(serial).unwrap(),
        encrypt: false,
        sessions: SessionCounter::of_store(root),
    }
}

/// Starts a member whose receiver listens on `listener` and whose peers are `peers`.
pub fn member(serial: &str, role: Role, listener: TcpListener, peers: Vec<PeerAddr>) -> Member {
    member_with(serial, role, listener, peers, |_| {})
}

/// Like [`member`], with the settings changed by `tune` first.
pub fn member_with(
    serial: &str,
    role: Role,
    listener: TcpListener,
    peers: Vec<PeerAddr>,
    tune: impl FnOnce(&mut ServiceConfig),
) -> Member {
    let dir = tempfile::tempdir().unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let root = dir.path().join("store");
    let store = Store::open(&root, Role::Standby).unwrap();
    let mut cfg = ServiceConfig {
        peers,
        listen_addr: Some(addr.clone()),
        ..ServiceConfig::new(security(serial, &root), RoleSource::Fixed(role))
    };
    tune(&mut cfg);
    let svc = Arc::new(Service::new(store, cfg));
    let sock = dir.path().join("confsync.sock");
    let stop = Arc::new(AtomicBool::new(false));
    let mgmt = server::serve(server::bind(&sock).unwrap(), svc.clone(), stop.clone()).unwrap();
    let recv = svc.serve(listener, stop.clone()).unwrap();
    Member {
        dir,
        svc,
        sock,
        addr,
        stop,
        threads: vec![mgmt, recv],
    }
}

/// Two members: SN-A active, SN-B standby, each the other's peer.
pub fn pair() -> (Member, Member) {
    pair_with(|_| {})
}

/// Like [`pair`], both members' settings changed by `tune`.
pub fn pair_with(tune: impl Fn(&mut ServiceConfig)) -> (Member, Member) {
    let la = TcpListener::bind("127.0.0.1:0").unwrap();
    let lb = TcpListener::bind("127.0.0.1:0").unwrap();
    let (aa, ab) = (la.local_addr().unwrap(), lb.local_addr().unwrap());
    let peer = |serial: &str, addr: std::net::SocketAddr| PeerAddr {
        serial: serial.into(),
        addr: addr.to_string(),
    };
    let a = member_with("SN-A", Role::Active, la, vec![peer("SN-B", ab)], &tune);
    let b = member_with("SN-B", Role::Standby, lb, vec![peer("SN-A", aa)], &tune);
    (a, b)
}

/// Waits up to `limit` for `cond`.
pub fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = std::time::Instant::now() + limit;
    while std::time::Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}
