//! The configuration-sync service of two members over real sockets: the management API on a
//! unix socket (driven with the API's client, as hactl does), sessions over loopback TCP.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ha_confsync::jobs::JobsConfig;
use ha_confsync::service::{PeerAddr, RoleSource, Service, ServiceConfig};
use ha_confsync::store::{Role, Store};
use ha_mgmt_api::client::{Client, ClientError};
use ha_mgmt_api::server;
use ha_mgmt_api::*;

mod common;
use common::{member, pair, security, strong_key, write_key_file, Member, CLUSTER, KEY};

fn api_err(r: Result<(Reply, Vec<Reply>), ClientError>) -> ApiError {
    match r {
        Err(ClientError::Api(e)) => e,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn synctest(m: &Member) -> SynctestReport {
    match m.call(Request::ConfigSynctest).unwrap().0 {
        Reply::Synctest(s) => s,
        other => panic!("{other:?}"),
    }
}

#[test]
fn publish_sync_synctest_and_diff_through_the_api() {
    let (a, b) = pair();
    let sa = a.store(Role::Active);
    for i in 0..50 {
        sa.write(
            &format!("filter/r{i}.conf"),
            format!("rule {i}\n").as_bytes(),
        )
        .unwrap();
    }
    // Unpublished edits are local changes, not synced.
    let st = synctest(&a);
    assert_eq!(st.local_changes.len(), 50);

    // The standby refuses to publish and to sync: read-only.
    let e = api_err(b.call(Request::ConfigPublish { comment: None }));
    assert_eq!(e.code, ErrorCode::Refused);
    assert!(e.message.contains("read-only"), "{}", e.message);
    let e = api_err(b.call(Request::ConfigSync { peer: None }));
    assert_eq!(e.code, ErrorCode::Refused);

    let (r, _) = a
        .call(Request::ConfigPublish {
            comment: Some("first".into()),
        })
        .unwrap();
    assert_eq!(
        r,
        Reply::Published {
            revision: 1,
            files: 50
        }
    );
    // Nothing to publish twice.
    assert_eq!(
        api_err(a.call(Request::ConfigPublish { comment: None })).code,
        ErrorCode::Refused
    );

    // Before the first sync, the peer lacks everything.
    let st = synctest(&a);
    assert!(st.local_changes.is_empty());
    assert_eq!(st.revision, 1);
    assert_eq!(st.peers[0].state, SyncState::SyncProblem);
    assert_eq!(st.peers[0].unsynchronized.len(), 50);

    let (r, streamed) = a.call(Request::ConfigSync { peer: None }).unwrap();
    let Reply::SyncDone(rep) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        (rep.peer.as_str(), rep.revision, rep.files_sent),
        ("SN-B", 1, 50)
    );
    assert!(streamed
        .iter()
        .any(|p| matches!(p, Reply::Progress(p) if p.phase == "transfer" && p.done_files == 50)));
    assert_eq!(
        b.store(Role::Standby).read("filter/r7.conf").unwrap(),
        b"rule 7\n"
    );

    let st = synctest(&a);
    assert_eq!(st.peers[0].state, SyncState::Synchronized, "{st:?}");
    assert_eq!(st.peers[0].revision, 1);
    assert!(st.peers[0].last_sync.is_some());

    // An edit, published: the peer is behind on that one file, and diff shows it.
    sa.write("filter/r7.conf", b"rule 7\nrule 7b\n").unwrap();
    a.call(Request::ConfigPublish { comment: None }).unwrap();
    let st = synctest(&a);
    assert_eq!(st.peers[0].state, SyncState::SyncProblem);
    assert_eq!(
        st.peers[0].unsynchronized,
        vec!["filter/r7.conf".to_string()]
    );
    let (r, _) = a
        .call(Request::ConfigDiff {
            path: "filter/r7.conf".into(),
            peer: None,
        })
        .unwrap();
    let Reply::Diff(d) = r else { panic!("{r:?}") };
    assert_eq!(d.status, FileStatus::Differs);
    let text = d.diff.expect("a line diff");
    assert!(text.contains("+rule 7b"), "{text}");
    assert_ne!(d.local_sha256, d.peer_sha256);
    // Incremental: only the changed content travels.
    let (r, _) = a
        .call(Request::ConfigSync {
            peer: Some("SN-B".into()),
        })
        .unwrap();
    assert!(matches!(
        r,
        Reply::SyncDone(SyncReport {
            files_sent: 1,
            revision: 2,
            ..
        })
    ));
    let (r, _) = a
        .call(Request::ConfigDiff {
            path: "filter/r7.conf".into(),
            peer: None,
        })
        .unwrap();
    assert!(matches!(
        r,
        Reply::Diff(DiffReport {
            status: FileStatus::Same,
            ..
        })
    ));
    // The standby's own view: in sync with the active.
    let st = synctest(&b);
    assert_eq!(st.revision, 2);
    assert_eq!(st.peers[0].state, SyncState::Synchronized, "{st:?}");

    // Bad requests are typed errors.
    assert_eq!(
        api_err(a.call(Request::ConfigDiff {
            path: "../etc/passwd".into(),
            peer: None
        }))
        .code,
        ErrorCode::BadRequest
    );
    assert_eq!(
        api_err(a.call(Request::ConfigSync {
            peer: Some("SN-Z".into())
        }))
        .code,
        ErrorCode::NotFound
    );
}

#[test]
fn an_unreachable_peer_is_no_communication() {
    // A port that nobody listens on: bind, learn it, close.
    let gone = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = gone.local_addr().unwrap().to_string();
    drop(gone);
    let a = member(
        "SN-A",
        Role::Active,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        vec![PeerAddr {
            serial: "SN-B".into(),
            addr,
        }],
    );
    a.store(Role::Active).write("x.conf", b"x").unwrap();
    a.call(Request::ConfigPublish { comment: None }).unwrap();
    let st = synctest(&a);
    assert_eq!(st.peers[0].state, SyncState::NoCommunication);
    let e = api_err(a.call(Request::ConfigSync { peer: None }));
    assert_eq!(e.code, ErrorCode::Unreachable);
    assert!(e.message.contains("SN-B"), "{}", e.message);
}

#[test]
fn a_peer_with_its_own_newer_revision_is_a_collision() {
    let (a, b) = pair();
    // Both publish independently; B's number is higher.
    let sb = b.store(Role::Active);
    for i in 0..3 {
        sb.write("own.conf", format!("{i}").as_bytes()).unwrap();
        sb.publish(None).unwrap();
    }
    a.store(Role::Active).write("x.conf", b"x").unwrap();
    a.call(Request::ConfigPublish { comment: None }).unwrap();
    let st = synctest(&a);
    assert_eq!(st.peers[0].state, SyncState::Collision, "{st:?}");
    let e = api_err(a.call(Request::ConfigSync { peer: None }));
    assert_eq!(e.code, ErrorCode::Refused, "{}", e.message);
    assert!(e.message.contains("collision"), "{}", e.message);
    // The peer's own revision is untouched.
    assert_eq!(b.store(Role::Standby).read("own.conf").unwrap(), b"2");
}

#[test]
fn a_periodic_job_publishes_only_its_paths_and_syncs_them() {
    let (a, b) = pair();
    let sa = a.store(Role::Active);
    sa.write("dhcp/leases/lan0", b"lease 1\n").unwrap();
    sa.write("filter/main.conf", b"v1\n").unwrap();
    sa.publish(None).unwrap();
    // The DHCP server renews a lease; the operator has an unpublished edit.
    sa.write("dhcp/leases/lan0", b"lease 1\nlease 2\n").unwrap();
    sa.write("filter/main.conf", b"v2 (draft)\n").unwrap();
    let jobs = JobsConfig::default();
    let dhcp = jobs.jobs.iter().find(|j| j.name == "dhcp-leases").unwrap();
    assert_eq!(dhcp.every_s, 300);
    assert_eq!(
        jobs.jobs
            .iter()
            .find(|j| j.name == "certificates")
            .unwrap()
            .every_s,
        3600
    );
    assert_eq!(a.svc.run_job(dhcp).unwrap(), Some(2));
    let rb = b.store(Role::Standby);
    assert_eq!(rb.read("dhcp/leases/lan0").unwrap(), b"lease 1\nlease 2\n");
    // The operator's edit was neither published nor synced.
    assert_eq!(rb.read("filter/main.conf").unwrap(), b"v1\n");
    assert_eq!(sa.read("filter/main.conf").unwrap(), b"v1\n");
    assert_eq!(
        synctest(&a).local_changes,
        vec!["filter/main.conf".to_string()]
    );
    // Nothing new: the job publishes nothing (and the peer stays in sync).
    assert_eq!(a.svc.run_job(dhcp).unwrap(), None);
    // On the standby a job does nothing.
    assert_eq!(b.svc.run_job(dhcp).unwrap(), None);
}

fn key_file(dir: &std::path::Path, seed: u8) -> String {
    let p = dir.join(format!("key-{seed}"));
    write_key_file(&p, &strong_key(seed));
    p.to_str().unwrap().to_string()
}

fn done(r: Result<(Reply, Vec<Reply>), ClientError>) -> String {
    match r {
        Ok((Reply::Done { message }, _)) => message,
        other => panic!("{other:?}"),
    }
}

#[test]
fn cluster_create_join_full_and_remove() {
    let keys = tempfile::tempdir().unwrap();
    let good = key_file(keys.path(), KEY);
    let wrong = key_file(keys.path(), KEY + 1);
    let la = TcpListener::bind("127.0.0.1:0").unwrap();
    let a_addr = la.local_addr().unwrap().to_string();
    let a = member("SN-A", Role::Active, la, vec![]);
    let b = member(
        "SN-B",
        Role::Standby,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        vec![],
    );
    a.store(Role::Active)
        .write("filter/main.conf", b"rules\n")
        .unwrap();
    a.call(Request::ConfigPublish { comment: None }).unwrap();

    // The key file must hold the cluster key; the cluster id must be the provisioned one.
    let e = api_err(a.call(Request::ClusterCreate {
        cluster_id: CLUSTER,
        psk_file: wrong.clone(),
    }));
    assert_eq!(e.code, ErrorCode::Refused);
    assert!(
        !e.message.contains(&ha_confsync::hex(&strong_key(KEY + 1))),
        "{}",
        e.message
    );
    let e = api_err(a.call(Request::ClusterCreate {
        cluster_id: CLUSTER + 1,
        psk_file: good.clone(),
    }));
    assert!(
        e.message.contains("provisioned for cluster"),
        "{}",
        e.message
    );
    let m = done(a.call(Request::ClusterCreate {
        cluster_id: CLUSTER,
        psk_file: good.clone(),
    }));
    assert!(m.contains("created"), "{m}");
    let e = api_err(a.call(Request::ClusterCreate {
        cluster_id: CLUSTER,
        psk_file: good.clone(),
    }));
    assert!(e.message.contains("already exists"), "{}", e.message);
    // The cluster document is published, the operator's configuration untouched.
    assert_eq!(a.svc.cluster_doc().unwrap().unwrap().members.len(), 1);

    // B joins through A: both know each other, and B receives the configuration.
    let m = done(b.call(Request::ClusterJoin {
        peer: a_addr.clone(),
        psk_file: good.clone(),
        ha: None,
    }));
    assert!(m.contains("joined cluster"), "{m}");
    assert_eq!(a.svc.peer_list()[0].serial, "SN-B");
    assert_eq!(b.svc.peer_list()[0].serial, "SN-A");
    let sb = b.store(Role::Standby);
    let mut got = None;
    for _ in 0..250 {
        if let Ok(bytes) = sb.read("filter/main.conf") {
            got = Some(bytes);
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(got.as_deref(), Some(&b"rules\n"[..]));
    assert_eq!(b.svc.cluster_doc().unwrap().unwrap().members.len(), 2);
    // A join through a member that is not active is refused.
    let c = member(
        "SN-C",
        Role::Standby,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        vec![],
    );
    let b_addr = {
        let d = a.svc.cluster_doc().unwrap().unwrap();
        d.members[1].1.clone()
    };
    let e = api_err(c.call(Request::ClusterJoin {
        peer: b_addr,
        psk_file: good.clone(),
        ha: None,
    }));
    assert!(e.message.contains("not active"), "{}", e.message);

    // A full cluster refuses a newcomer with a clear error.
    let mut doc = a.svc.cluster_doc().unwrap().unwrap();
    for i in doc.members.len()..ha_proto::msg::MAX_MEMBERS {
        doc.members
            .push((format!("SN-X{i}"), format!("127.0.0.1:{}", 40000 + i)));
    }
    let sa = a.store(Role::Active);
    sa.write(
        ha_confsync::service::CLUSTER_FILE,
        &serde_json::to_vec(&doc).unwrap(),
    )
    .unwrap();
    sa.publish_only(&[ha_confsync::service::CLUSTER_FILE.to_string()], None)
        .unwrap();
    let e = api_err(c.call(Request::ClusterJoin {
        peer: a_addr.clone(),
        psk_file: good.clone(),
        ha: None,
    }));
    assert_eq!(e.code, ErrorCode::ClusterFull, "{}", e.message);
    assert!(e.message.contains("cluster full: 8 of 8"), "{}", e.message);

    // Remove a failed member; then the replacement fits.
    assert_eq!(
        api_err(a.call(Request::ClusterRemove {
            serial: "SN-A".into()
        }))
        .code,
        ErrorCode::Refused
    );
    assert_eq!(
        api_err(a.call(Request::ClusterRemove {
            serial: "SN-Q".into()
        }))
        .code,
        ErrorCode::NotFound
    );
    let m = done(a.call(Request::ClusterRemove {
        serial: "SN-X7".into(),
    }));
    assert!(m.contains("7 members remain"), "{m}");
    let m = done(c.call(Request::ClusterJoin {
        peer: a_addr,
        psk_file: good,
        ha: None,
    }));
    assert!(m.contains("8 members"), "{m}");
}

/// ha-daemon stand-in: answers `mode` with whatever `mode` holds.
struct ModeDaemon {
    mode: std::sync::Mutex<Mode>,
}

impl server::Backend for ModeDaemon {
    fn mode(&self) -> Reply {
        Reply::Mode(ModeReport {
            serial: "SN-A".into(),
            mode: *self.mode.lock().unwrap(),
            forced: Forced::None,
            since: 0,
            paused: false,
        })
    }
}

#[test]
fn the_role_comes_from_the_daemon_and_no_answer_means_read_only() {
    let dir = tempfile::tempdir().unwrap();
    let dsock = dir.path().join("mgmt.sock");
    let daemon = Arc::new(ModeDaemon {
        mode: std::sync::Mutex::new(Mode::Active),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let t = server::serve(server::bind(&dsock).unwrap(), daemon.clone(), stop.clone()).unwrap();
    let store = Store::open(&dir.path().join("store"), Role::Standby).unwrap();
    let sec = security("SN-A", &dir.path().join("store"));
    let svc = Service::new(
        store,
        ServiceConfig::new(sec, RoleSource::Daemon(dsock.clone())),
    );
    let draft = Store::open(&dir.path().join("store"), Role::Active).unwrap();
    draft.write("a.conf", b"1").unwrap();
    use ha_mgmt_api::server::Backend;
    // Active per the daemon: publishing works.
    assert_eq!(svc.role(), Role::Active);
    assert!(matches!(
        svc.config_publish(None),
        Reply::Published { revision: 1, .. }
    ));
    // Passive per the daemon: read-only.
    *daemon.mode.lock().unwrap() = Mode::Passive;
    draft.write("a.conf", b"2").unwrap();
    match svc.config_publish(None) {
        Reply::Error(e) => assert_eq!(e.code, ErrorCode::Refused),
        other => panic!("{other:?}"),
    }
    // No daemon: read-only too.
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
    std::fs::remove_file(&dsock).unwrap();
    assert_eq!(svc.role(), Role::Standby);
    match svc.config_publish(None) {
        Reply::Error(e) => assert!(e.message.contains("read-only"), "{}", e.message),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_silent_connection_to_the_receiver_blocks_nothing() {
    let la = TcpListener::bind("127.0.0.1:0").unwrap();
    let a_addr = la.local_addr().unwrap();
    let a = member("SN-A", Role::Active, la, vec![]);
    // Someone connects to the receiver and never speaks (cut at the handshake deadline).
    let _silent = std::net::TcpStream::connect(a_addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    a.store(Role::Active).write("x.conf", b"x").unwrap();
    // The client gives up after 10 s: the publish must not wait for the silent session.
    let mut c = Client::connect(&a.sock, Duration::from_secs(10)).unwrap();
    let r = c.call(&Request::ConfigPublish { comment: None }, |_| {});
    assert!(
        matches!(r, Ok(Reply::Published { revision: 1, .. })),
        "{r:?}"
    );
}

#[test]
fn a_standby_that_is_behind_reports_a_sync_problem_not_a_collision() {
    let (a, b) = pair();
    a.store(Role::Active).write("x.conf", b"1").unwrap();
    a.call(Request::ConfigPublish { comment: None }).unwrap();
    a.call(Request::ConfigSync { peer: None }).unwrap();
    a.store(Role::Active).write("x.conf", b"2").unwrap();
    a.call(Request::ConfigPublish { comment: None }).unwrap();
    // B runs revision 1, A published 2 and has not synced it yet.
    let st = synctest(&b);
    assert_eq!(st.revision, 1);
    assert_eq!(st.peers[0].state, SyncState::SyncProblem, "{st:?}");
    // A's own view: B is behind.
    let st = synctest(&a);
    assert_eq!(st.peers[0].state, SyncState::SyncProblem, "{st:?}");
    assert_eq!(st.peers[0].unsynchronized, vec!["x.conf".to_string()]);
}

/// ha-daemon stand-in for a join with the newcomer's HA link: active, and records (or
/// refuses) `member_add`.
#[derive(Default)]
struct MembersDaemon {
    added: std::sync::Mutex<Vec<(String, String, MemberAddresses)>>,
    refuse: AtomicBool,
    /// Passive instead of active.
    passive: AtomicBool,
    /// Serials removed (`member_remove`).
    removed: std::sync::Mutex<Vec<String>>,
}

impl server::Backend for MembersDaemon {
    fn mode(&self) -> Reply {
        Reply::Mode(ModeReport {
            serial: "SN-A".into(),
            mode: if self.passive.load(Ordering::Relaxed) {
                Mode::Passive
            } else {
                Mode::Active
            },
            forced: Forced::None,
            since: 0,
            paused: false,
        })
    }
    fn member_add(&self, serial: String, main_link: String, addresses: MemberAddresses) -> Reply {
        if self.refuse.load(Ordering::Relaxed) {
            return server::error(ErrorCode::Refused, "the cluster is full (8 members)");
        }
        self.added
            .lock()
            .unwrap()
            .push((serial, main_link, addresses));
        Reply::Done {
            message: "added".into(),
        }
    }
    fn member_remove(&self, serial: String) -> Reply {
        self.removed.lock().unwrap().push(serial);
        Reply::Done {
            message: "removed".into(),
        }
    }
}

/// A [`MembersDaemon`] served on `dir/name` (passive or active), and its stop flag and thread.
type Served = (
    std::path::PathBuf,
    Arc<MembersDaemon>,
    Arc<AtomicBool>,
    std::thread::JoinHandle<()>,
);

fn serve_members_daemon(dir: &std::path::Path, name: &str, passive: bool) -> Served {
    let sock = dir.join(name);
    let d = Arc::new(MembersDaemon::default());
    d.passive.store(passive, Ordering::Relaxed);
    let stop = Arc::new(AtomicBool::new(false));
    let t = server::serve(server::bind(&sock).unwrap(), d.clone(), stop.clone()).unwrap();
    (sock, d, stop, t)
}

/// An active member "SN-A" whose role comes from the daemon at `sock`, with a published
/// revision and a cluster created; and its sync receiver's address.
fn active_with_cluster(sock: &std::path::Path, psk_file: &str) -> (Member, String) {
    let la = TcpListener::bind("127.0.0.1:0").unwrap();
    let a_addr = la.local_addr().unwrap().to_string();
    let a = common::member_with("SN-A", Role::Active, la, vec![], |c| {
        c.role = RoleSource::Daemon(sock.to_path_buf());
    });
    a.store(Role::Active)
        .write("filter/main.conf", b"rules\n")
        .unwrap();
    a.call(Request::ConfigPublish { comment: None }).unwrap();
    done(a.call(Request::ClusterCreate {
        cluster_id: CLUSTER,
        psk_file: psk_file.to_string(),
    }));
    (a, a_addr)
}

#[test]
fn a_join_with_its_ha_link_enters_the_active_members_ha_list_or_is_refused_whole() {
    let dir = tempfile::tempdir().unwrap();
    let good = key_file(dir.path(), KEY);
    let (dsock, daemon, stop, t) = serve_members_daemon(dir.path(), "mgmt.sock", false);
    let (a, a_addr) = active_with_cluster(&dsock, &good);
    let ha = HaMember {
        main_link: "10.0.0.2:44240".into(),
        addresses: MemberAddresses {
            probe: vec!["10.1.0.12".parse().unwrap()],
            sync: Some("10.9.0.2".parse().unwrap()),
        },
    };
    let b = member(
        "SN-B",
        Role::Standby,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        vec![],
    );
    let m = done(b.call(Request::ClusterJoin {
        peer: a_addr.clone(),
        psk_file: good.clone(),
        ha: Some(ha.clone()),
    }));
    assert!(m.contains("joined cluster"), "{m}");
    assert_eq!(
        *daemon.added.lock().unwrap(),
        vec![(
            "SN-B".to_string(),
            ha.main_link.clone(),
            ha.addresses.clone()
        )]
    );
    // The daemon refuses the next one: so is the join, and the membership stays as it was.
    daemon.refuse.store(true, Ordering::Relaxed);
    let c = member(
        "SN-C",
        Role::Standby,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        vec![],
    );
    let e = api_err(c.call(Request::ClusterJoin {
        peer: a_addr,
        psk_file: good,
        ha: Some(HaMember {
            main_link: "10.0.0.3:44240".into(),
            ..ha
        }),
    }));
    assert!(
        e.message.contains("the HA member list refused SN-C"),
        "{}",
        e.message
    );
    assert_eq!(a.svc.cluster_doc().unwrap().unwrap().members.len(), 2);
    assert_eq!(daemon.added.lock().unwrap().len(), 1);
    stop.store(true, Ordering::Relaxed);
    t.join().unwrap();
}

#[test]
fn a_third_member_enters_and_leaves_every_members_ha_list_through_the_cluster_document() {
    let dir = tempfile::tempdir().unwrap();
    let good = key_file(dir.path(), KEY);
    let (sock_a, daemon_a, stop_a, ta) = serve_members_daemon(dir.path(), "a.sock", false);
    let (sock_b, daemon_b, stop_b, tb) = serve_members_daemon(dir.path(), "b.sock", true);
    let (a, a_addr) = active_with_cluster(&sock_a, &good);
    let ha = |last: u8| HaMember {
        main_link: format!("10.0.0.{last}:44240"),
        addresses: MemberAddresses {
            probe: vec![format!("10.1.0.{last}").parse().unwrap()],
            sync: Some(format!("10.9.0.{last}").parse().unwrap()),
        },
    };
    let b = common::member_with(
        "SN-B",
        Role::Standby,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        vec![],
        |c| c.role = RoleSource::Daemon(sock_b.clone()),
    );
    done(b.call(Request::ClusterJoin {
        peer: a_addr.clone(),
        psk_file: good.clone(),
        ha: Some(ha(2)),
    }));
    // C joins through A with only A's address: A's daemon adds it as it answers, B's when
    // B receives the new cluster document; nobody points at B's daemon.
    let c = member(
        "SN-C",
        Role::Standby,
        TcpListener::bind("127.0.0.1:0").unwrap(),
        vec![],
    );
    done(c.call(Request::ClusterJoin {
        peer: a_addr,
        psk_file: good,
        ha: Some(ha(3)),
    }));
    let added = |d: &MembersDaemon| -> Vec<String> {
        d.added
            .lock()
            .unwrap()
            .iter()
            .map(|a| a.0.clone())
            .collect()
    };
    assert_eq!(added(&daemon_a), ["SN-B", "SN-C"]);
    let mut b_added = Vec::new();
    for _ in 0..250 {
        b_added = added(&daemon_b);
        if !b_added.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b_added, ["SN-C"], "B adds the newcomer, never itself");
    assert_eq!(
        daemon_b.added.lock().unwrap()[0],
        ("SN-C".to_string(), ha(3).main_link, ha(3).addresses)
    );
    // B's configuration peers follow the document too: after a takeover it would push to
    // both others.
    let mut peers: Vec<String> = b.svc.peer_list().into_iter().map(|p| p.serial).collect();
    peers.sort();
    assert_eq!(peers, ["SN-A", "SN-C"]);

    // C goes: out of A's HA member list as A's service removes it, out of B's when B
    // receives the document without it.
    done(a.call(Request::ClusterRemove {
        serial: "SN-C".into(),
    }));
    assert_eq!(*daemon_a.removed.lock().unwrap(), ["SN-C"]);
    let mut b_removed = Vec::new();
    for _ in 0..250 {
        b_removed = daemon_b.removed.lock().unwrap().clone();
        if !b_removed.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(b_removed, ["SN-C"]);
    let peers: Vec<String> = b.svc.peer_list().into_iter().map(|p| p.serial).collect();
    assert_eq!(peers, ["SN-A"]);
    for (stop, t) in [(stop_a, ta), (stop_b, tb)] {
        stop.store(true, Ordering::Relaxed);
        t.join().unwrap();
    }
}
