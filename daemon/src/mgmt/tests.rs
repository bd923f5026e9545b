use super::*;
use crate::syncplane::ResyncOutcome;
use ha_mgmt_api::*;
use ha_proto::msg::host::{EventReport, LedReport};
use ha_proto::msg::host::{HostMsg, MemberSummary, StatusReport};
use ha_proto::msg::{FirmwareVersion, Serial};
use ha_proto::msg::{LinkState, Role};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

fn summary(serial: &str, local: bool, role: Role) -> MemberSummary {
    MemberSummary {
        serial: Serial::new(serial).expect("serial"),
        local,
        alive: true,
        quality: 100,
        forced: ha_proto::msg::Forced::None,
        firmware: FirmwareVersion {
            major: 1,
            minor: 2,
            patch: 3,
        },
        config_revision: 4,
        paused: false,
        domains: heapless::Vec::from_slice(&[ha_proto::msg::host::DomainSummary {
            domain: 0,
            role,
            priority: if local { 50 } else { 0 },
        }])
        .expect("domains"),
        links: heapless::Vec::from_slice(&[LinkState::Up, LinkState::Absent]).expect("links"),
        mode_since_ms: 1_000,
    }
}

fn report(a: Role, b: Role, forced: ha_proto::msg::Forced) -> StatusReport {
    let mut me = summary("SN-A", true, a);
    me.forced = forced;
    StatusReport {
        uptime_ms: 11_000,
        members: heapless::Vec::from_slice(&[me, summary("SN-B", false, b)]).expect("members"),
        led: LedReport::Steady,
        frames_sent: 10,
        frames_received: 9,
        frames_rejected: 1,
    }
}

fn shared() -> Arc<Mutex<Shared>> {
    Arc::new(Mutex::new(Shared {
        serial: Serial::new("SN-A").expect("serial"),
        cluster_id: 7,
        boot_time: 100,
        ..Default::default()
    }))
}

/// Plays the host loop and the controller: answers what the server sends by updating the
/// shared state as the real host loop does when the controller answers.
fn controller(sh: Arc<Mutex<Shared>>, rx: mpsc::Receiver<HostMsg>) -> JoinHandle<Vec<HostMsg>> {
    std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut forced = ha_proto::msg::Forced::None;
        let mut keys: (u8, Vec<u8>) = (1, vec![1]);
        while let Ok(m) = rx.recv_timeout(Duration::from_secs(2)) {
            seen.push(m.clone());
            let mut s = sh.lock().expect("lock");
            match m {
                HostMsg::Admin { command, .. } => {
                    forced = match command {
                        AdminCommand::ForceActive => ha_proto::msg::Forced::Active,
                        AdminCommand::ForcePassive => ha_proto::msg::Forced::Passive,
                        _ => ha_proto::msg::Forced::None,
                    };
                }
                HostMsg::StatusRequest => {
                    s.status = Some((report(Role::Active, Role::Passive, forced), unix_ms()));
                }
                HostMsg::InstallKey { key_id, .. } => {
                    keys.1.push(key_id);
                    s.key_state = Some(keys.clone());
                }
                HostMsg::UseKey { key_id } => {
                    keys.0 = key_id;
                    s.key_state = Some(keys.clone());
                }
                HostMsg::RetireKey { key_id } => {
                    keys.1 = vec![key_id];
                    s.key_state = Some(keys.clone());
                }
                _ => {}
            }
        }
        seen
    })
}

fn ask(srv: &MgmtServer, req: Request) -> (Vec<Reply>, Reply) {
    let mut streamed = Vec::new();
    let fin = srv
        .handle(req, &mut |r| {
            streamed.push(r.clone());
            Ok(())
        })
        .expect("handle");
    (streamed, fin)
}

#[test]
fn info_is_the_status_table() {
    let sh = shared();
    let (tx, rx) = mpsc::channel();
    let ctl = controller(sh.clone(), rx);
    let srv = MgmtServer::new(sh, tx);
    let (_, r) = ask(&srv, Request::Info { verbose: true });
    let Reply::Info(info) = r else {
        panic!("{r:?}")
    };
    assert_eq!(info.me, "SN-A");
    assert_eq!(info.cluster_id, 7);
    assert_eq!(info.banner, BannerLevel::Ok);
    assert_eq!(info.members.len(), 2);
    assert_eq!(info.members[0].mode, Mode::Active);
    assert_eq!(info.members[1].mode, Mode::Passive);
    assert_eq!(info.members[0].firmware, "1.2.3");
    assert_eq!(info.members[0].links[0].state, LinkStatus::Up);
    assert_eq!(info.members[0].links[1].state, LinkStatus::NotConfigured);
    let c = info.members[0].counters.as_ref().expect("verbose counters");
    assert_eq!(c["frames_rejected"], 1);
    assert!(info.members[1].counters.is_none());
    drop(srv);
    ctl.join().expect("controller");
}

/// A status request lost on the host link (the controller dropped it while stalled) is
/// asked again: `info` still answers, and the resend is counted where an operator sees it.
#[test]
fn a_lost_status_request_is_asked_again() {
    let sh = shared();
    let (tx, rx) = mpsc::channel();
    let sh2 = sh.clone();
    let ctl = std::thread::spawn(move || {
        let mut requests = 0;
        while let Ok(m) = rx.recv_timeout(Duration::from_secs(2)) {
            if matches!(m, HostMsg::StatusRequest) {
                requests += 1;
                // The first request is lost.
                if requests > 1 {
                    sh2.lock().expect("lock").status = Some((
                        report(Role::Active, Role::Passive, ha_proto::msg::Forced::None),
                        unix_ms(),
                    ));
                }
            }
        }
        requests
    });
    let srv = MgmtServer::new(sh.clone(), tx);
    let (_, r) = ask(&srv, Request::Info { verbose: true });
    let Reply::Info(info) = r else {
        panic!("{r:?}")
    };
    assert_eq!(info.members[0].mode, Mode::Active);
    let c = info.members[0].counters.as_ref().expect("verbose counters");
    assert_eq!(c["host_status_resends"], 1);
    drop(srv);
    assert_eq!(ctl.join().expect("controller"), 2);
}

/// A controller that never answers: the request is asked a bounded number of times, then
/// the operator gets `unreachable`.
#[test]
fn a_silent_controller_is_unreachable_after_bounded_resends() {
    let sh = shared();
    let (tx, rx) = mpsc::channel();
    let ctl = std::thread::spawn(move || {
        let mut requests = 0;
        while let Ok(m) = rx.recv_timeout(Duration::from_secs(5)) {
            requests += usize::from(matches!(m, HostMsg::StatusRequest));
        }
        requests
    });
    let srv = MgmtServer::new(sh.clone(), tx);
    let (_, r) = ask(&srv, Request::Mode);
    let Reply::Error(e) = r else { panic!("{r:?}") };
    assert_eq!(e.code, ErrorCode::Unreachable);
    drop(srv);
    let asked = ctl.join().expect("controller");
    let rounds = CONFIRM_TIMEOUT
        .as_millis()
        .div_ceil(STATUS_RESEND.as_millis()) as usize;
    assert_eq!(asked, rounds);
    assert_eq!(sh.lock().expect("lock").status_resends, rounds as u64 - 1);
}

#[test]
fn forcing_goes_to_the_controller_and_waits_for_its_confirmation() {
    let sh = shared();
    let (tx, rx) = mpsc::channel();
    let ctl = controller(sh.clone(), rx);
    let srv = MgmtServer::new(sh, tx);
    let (_, r) = ask(&srv, Request::Passive);
    let Reply::Mode(m) = r else { panic!("{r:?}") };
    assert_eq!(m.forced, Forced::Passive);
    let (_, r) = ask(&srv, Request::Reset);
    let Reply::Mode(m) = r else { panic!("{r:?}") };
    assert_eq!(m.forced, Forced::None);
    drop(srv);
    let seen = ctl.join().expect("controller");
    assert!(seen.contains(&HostMsg::Admin {
        target: None,
        command: AdminCommand::ForcePassive
    }));
}

#[test]
fn no_controller_means_unreachable_not_a_hang() {
    let sh = shared();
    let (tx, _rx) = mpsc::channel();
    let srv = MgmtServer::new(sh, tx);
    let t0 = Instant::now();
    let (_, r) = ask(&srv, Request::Mode);
    assert!(matches!(
        r,
        Reply::Error(ApiError {
            code: ErrorCode::Unreachable,
            ..
        })
    ));
    assert!(t0.elapsed() < CONFIRM_TIMEOUT + Duration::from_secs(1));
}

#[test]
fn events_past_and_followed() {
    let sh = shared();
    for (i, name) in ["role_changed", "future_event", "link_down"]
        .iter()
        .enumerate()
    {
        sh.lock().expect("lock").events.push_back((
            EventReport {
                seq: i as u32,
                at_ms: 5,
                name: heapless::String::try_from(*name).expect("name"),
                peer: None,
                detail: heapless::String::try_from("x").expect("detail"),
            },
            1_000 + i as u64,
        ));
    }
    let (tx, _rx) = mpsc::channel();
    let srv = MgmtServer::new(sh.clone(), tx);
    let (ev, fin) = ask(
        &srv,
        Request::Events {
            follow: false,
            last: None,
        },
    );
    assert_eq!(fin, Reply::EndOfEvents);
    assert_eq!(ev.len(), 3, "a name without an API kind is kept, as other");
    let Reply::Event(other) = &ev[1] else {
        panic!()
    };
    assert_eq!(other.kind, EventKind::Other);
    assert!(other.detail.contains("future_event: x"), "{other:?}");
    let Reply::Event(e) = &ev[2] else { panic!() };
    assert_eq!(e.kind, EventKind::LinkDown);
    assert_eq!(
        e.member.as_deref(),
        Some("SN-A"),
        "an event about no peer is about this member"
    );
    let (ev, _) = ask(
        &srv,
        Request::Events {
            follow: false,
            last: Some(1),
        },
    );
    assert_eq!(ev.len(), 1);

    // Follow: a new event is streamed; the client going away ends the stream.
    let srv2 = srv.clone();
    let t = std::thread::spawn(move || {
        let mut n = 0;
        srv2.handle(
            Request::Events {
                follow: true,
                last: Some(0),
            },
            &mut |_| {
                n += 1;
                Err(io::Error::new(io::ErrorKind::BrokenPipe, "client left"))
            },
        )
        .map(|_| n)
    });
    loop {
        if !sh.lock().expect("lock").followers.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let item = sh.lock().expect("lock").events[0].clone();
    sh.lock()
        .expect("lock")
        .followers
        .retain(|f| f.send(item.clone()).is_ok());
    assert!(
        t.join().expect("follower").is_err(),
        "stream ended by the client"
    );
}

fn read_hex_key(hex: &str) -> [u8; 32] {
    std::array::from_fn(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex"))
}

/// A strong key (hex) for the rotation tests.
const NEW_KEY_HEX: &str = "94d362be55b977d8a8f4c47c3d1acffee478ea9328e8c8e71077c8f72f66743d";

#[test]
fn psk_rotation_three_phases_and_key_file_checks() {
    let dir = std::env::temp_dir().join(format!("ha-daemon-mgmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let key = dir.join("new.psk");
    std::fs::write(&key, format!("{}\n", NEW_KEY_HEX)).expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    assert!(read_psk_file(&key).is_err(), "group-readable key refused");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert_eq!(read_psk_file(&key).expect("key")[0], 0x94);
    let weak = dir.join("weak.psk");
    std::fs::write(&weak, format!("{}\n", "ab".repeat(32))).expect("write");
    std::fs::set_permissions(&weak, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(read_psk_file(&weak).unwrap_err().contains("weak key"));
    let short = dir.join("short.psk");
    std::fs::write(&short, "abcd").expect("write");
    std::fs::set_permissions(&short, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    assert!(read_psk_file(&short).is_err());

    let sh = shared();
    let (tx, rx) = mpsc::channel();
    let ctl = controller(sh.clone(), rx);
    let srv = MgmtServer::new(sh, tx);
    let rotate = || Request::PskRotate {
        psk_file: key.display().to_string(),
        key_id: 2,
    };
    let phases: Vec<String> = (0..3)
        .map(|_| match ask(&srv, rotate()).1 {
            Reply::Rotate(r) => r.phase,
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(phases, ["confirming", "retiring", "done"]);
    let Reply::Rotate(r) = ask(&srv, Request::PskRotateStatus).1 else {
        panic!()
    };
    assert_eq!((r.sealing_key_id, r.previous_key_id), (2, None));
    drop(srv);
    let seen = ctl.join().expect("controller");
    assert!(matches!(seen[0], HostMsg::InstallKey { key_id: 2, .. }));
    assert_eq!(seen[1], HostMsg::UseKey { key_id: 2 });
    assert_eq!(seen[2], HostMsg::RetireKey { key_id: 2 });
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn socket_round_trip_and_other_tools_requests() {
    let dir = std::env::temp_dir().join(format!("ha-daemon-sock-{}", std::process::id()));
    let path = dir.join("mgmt.sock");
    let sh = shared();
    let (tx, _rx) = mpsc::channel();
    let stop = Arc::new(AtomicBool::new(false));
    let h = MgmtServer::new(sh, tx)
        .spawn(&path, stop.clone())
        .expect("spawn");
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let mut s = UnixStream::connect(&path).expect("connect");
    s.write_all(b"{\"cmd\":\"config_synctest\"}\nnot json\n")
        .expect("write");
    let mut r = BufReader::new(s.try_clone().expect("clone"));
    let mut line = String::new();
    r.read_line(&mut line).expect("read");
    let rep: Reply = ha_mgmt_api::decode_line(&line).expect("reply");
    assert!(matches!(
        rep,
        Reply::Error(ApiError {
            code: ErrorCode::Unsupported,
            ..
        })
    ));
    line.clear();
    r.read_line(&mut line).expect("read");
    let rep: Reply = ha_mgmt_api::decode_line(&line).expect("reply");
    assert!(matches!(
        rep,
        Reply::Error(ApiError {
            code: ErrorCode::BadRequest,
            ..
        })
    ));
    stop.store(true, Ordering::Relaxed);
    h.join().expect("server");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A controller whose member has `local_role`, recording into `order` when a forcing
/// (to active or to passive) arrives.
fn controller_with_role(
    sh: Arc<Mutex<Shared>>,
    rx: mpsc::Receiver<HostMsg>,
    local_role: Role,
    order: Arc<Mutex<Vec<&'static str>>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let mut forced = ha_proto::msg::Forced::None;
        let peer_role = if local_role == Role::Active {
            Role::Passive
        } else {
            Role::Active
        };
        while let Ok(m) = rx.recv_timeout(Duration::from_secs(2)) {
            let mut s = sh.lock().expect("lock");
            match m {
                HostMsg::Admin {
                    command: AdminCommand::ForceActive,
                    ..
                } => {
                    order.lock().expect("lock").push("force_active");
                    forced = ha_proto::msg::Forced::Active;
                }
                HostMsg::Admin {
                    command: AdminCommand::ForcePassive,
                    ..
                } => {
                    order.lock().expect("lock").push("force_passive");
                    forced = ha_proto::msg::Forced::Passive;
                }
                HostMsg::StatusRequest => {
                    s.status = Some((report(local_role, peer_role, forced), unix_ms()));
                }
                _ => {}
            }
        }
    })
}

/// One planned swap (`req`: `Active` or `Passive`) on a member with `role` whose wait hook
/// (resync for `Active`, drain for `Passive`) returns `outcome`: the hook and the forcing
/// happen in the order `want`, and the event log holds `event` (or nothing).
fn swap_wait_case(
    req: Request,
    role: Role,
    outcome: ResyncOutcome,
    want: &[&str],
    event: Option<&str>,
) {
    let sh = shared();
    let (tx, rx) = mpsc::channel();
    let order = Arc::new(Mutex::new(Vec::new()));
    let ctl = controller_with_role(sh.clone(), rx, role, order.clone());
    let o = order.clone();
    let name = if req == Request::Active {
        "resync"
    } else {
        "drain"
    };
    let hook: ResyncHook = Arc::new(move |bound| {
        assert_eq!(bound, RESYNC_BOUND);
        o.lock().expect("lock").push(name);
        outcome
    });
    let srv = MgmtServer::new(sh.clone(), tx);
    let srv = if req == Request::Active {
        srv.with_resync(Some(hook))
    } else {
        srv.with_drain(Some(hook))
    };
    let (_, r) = ask(&srv, req);
    assert!(matches!(r, Reply::Mode(_)), "{r:?}");
    assert_eq!(order.lock().expect("lock").as_slice(), want, "{role:?}");
    let events: Vec<String> = sh
        .lock()
        .expect("lock")
        .local_events
        .iter()
        .map(|e| e.detail.clone())
        .collect();
    match event {
        Some(text) => assert!(events.iter().any(|d| d.contains(text)), "{events:?}"),
        None => assert!(events.is_empty(), "{events:?}"),
    }
    drop(srv);
    ctl.join().expect("controller");
}

#[test]
fn planned_takeover_waits_for_the_resync_first() {
    for (role, outcome, expect_resync, event) in [
        (
            Role::Passive,
            ResyncOutcome::Complete(Duration::from_millis(12)),
            true,
            Some("arrived in 12 ms"),
        ),
        (
            Role::Passive,
            ResyncOutcome::TimedOut(RESYNC_BOUND),
            true,
            Some("swapping anyway"),
        ),
        // An active member already holds the table: no resync.
        (Role::Active, ResyncOutcome::NoPeer, false, None),
    ] {
        let want: &[&str] = if expect_resync {
            &["resync", "force_active"]
        } else {
            &["force_active"]
        };
        swap_wait_case(Request::Active, role, outcome, want, event);
    }
}

#[test]
fn planned_handover_waits_until_the_peer_acknowledged_every_change() {
    for (role, outcome, expect_drain, event) in [
        (
            Role::Active,
            ResyncOutcome::Complete(Duration::from_millis(3)),
            true,
            Some("acknowledged every change in 3 ms"),
        ),
        (
            Role::Active,
            ResyncOutcome::TimedOut(RESYNC_BOUND),
            true,
            Some("swapping anyway"),
        ),
        (
            Role::Active,
            ResyncOutcome::NoPeer,
            true,
            Some("no peer heard"),
        ),
        // A passive member has nothing the peer lacks: no wait.
        (Role::Passive, ResyncOutcome::NoPeer, false, None),
    ] {
        let want: &[&str] = if expect_drain {
            &["drain", "force_passive"]
        } else {
            &["force_passive"]
        };
        swap_wait_case(Request::Passive, role, outcome, want, event);
    }
}

#[test]
fn a_rolled_over_key_is_saved_in_the_configuration_block_atomically() {
    use ha_proto::config_block::{ConfigBlock, BLOCK_SIZE, ERASED};
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("ha-persist-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("member.cfg");
    let block = ha_hostlink::test_support::sample_cfg();
    let mut img = vec![ERASED; BLOCK_SIZE];
    block.encode(&mut img).expect("encode");
    std::fs::write(&path, &img).expect("write");
    let new_psk = read_hex_key(NEW_KEY_HEX);
    // A weak key is refused and leaves the block alone.
    assert!(persist_key(&path, &[0x5Au8; 32], 7).is_err());
    assert_eq!(std::fs::read(&path).expect("read"), img);
    persist_key(&path, &new_psk, 7).expect("persisted");
    let saved = std::fs::read(&path).expect("read");
    assert_eq!(saved.len(), BLOCK_SIZE);
    let back = ConfigBlock::decode(&saved).expect("still a valid block");
    assert_eq!(back.psk.0, new_psk);
    assert_eq!(back.key_id, 7);
    // Everything else unchanged.
    let mut expect = block.clone();
    expect.psk = ha_proto::keys::Psk(new_psk);
    expect.key_id = 7;
    assert_eq!(back, expect);
    let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .expect("ls")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

    // A block that does not decode is left as it is.
    let broken = dir.join("broken.cfg");
    std::fs::write(&broken, b"not a block").expect("write");
    let e = persist_key(&broken, &new_psk, 8).expect_err("refused");
    assert!(e.contains("broken.cfg"), "{e}");
    assert_eq!(std::fs::read(&broken).expect("read"), b"not a block");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A controller that takes every `HostMsg::Members` list it gets (answering with a status
/// that lists them) and records them.
fn members_controller(
    sh: Arc<Mutex<Shared>>,
    rx: mpsc::Receiver<HostMsg>,
) -> JoinHandle<Vec<Vec<String>>> {
    std::thread::spawn(move || {
        let mut lists = Vec::new();
        let mut current = vec!["SN-A".to_string(), "SN-B".to_string()];
        while let Ok(m) = rx.recv_timeout(Duration::from_secs(2)) {
            if let HostMsg::Members(list) = m {
                current = list.iter().map(|m| m.serial.as_str().to_string()).collect();
                lists.push(current.clone());
            }
            let mut r = report(Role::Active, Role::Passive, ha_proto::msg::Forced::None);
            r.members = current
                .iter()
                .map(|s| summary(s, s == "SN-A", Role::Passive))
                .collect();
            sh.lock().expect("lock").status = Some((r, unix_ms() + 1));
        }
        lists
    })
}

#[test]
fn member_remove_then_add_reach_the_controller_the_block_and_the_probe_list() {
    use ha_proto::config_block::{ConfigBlock, BLOCK_SIZE, ERASED};
    let dir = std::env::temp_dir().join(format!("ha-members-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("member.cfg");
    let mut img = vec![ERASED; BLOCK_SIZE];
    ha_hostlink::test_support::sample_cfg()
        .encode(&mut img)
        .expect("encode");
    std::fs::write(&path, &img).expect("write");
    let serials = |p: &Path| -> Vec<String> {
        let b = ConfigBlock::decode(&std::fs::read(p).expect("read")).expect("block");
        b.members
            .iter()
            .map(|m| m.serial.as_str().to_string())
            .collect()
    };

    let sh = shared();
    // A forwarding daemon (it has probe addresses of its own) that knows SN-B's.
    let state = tempfile::tempdir().expect("state dir");
    let probe_b = std::net::Ipv4Addr::new(10, 1, 0, 12);
    let probe_c = [
        std::net::Ipv4Addr::new(10, 1, 0, 13),
        std::net::Ipv4Addr::new(10, 2, 0, 13),
    ];
    {
        let mut s = sh.lock().expect("lock");
        s.addresses.probe = vec![std::net::Ipv4Addr::new(10, 1, 0, 11)];
        s.peers = crate::peers::PeerBook::load(
            state.path(),
            &[crate::config::PeerConfig {
                serial: "SN-B".into(),
                probe: vec![probe_b],
                sync: None,
            }],
        )
        .expect("peers");
    }
    let targets = |serial: &str| {
        sh.lock()
            .expect("lock")
            .peers
            .probe_targets(Serial::new(serial).expect("serial"))
    };
    let with_addresses = ha_mgmt_api::MemberAddresses {
        probe: probe_c.to_vec(),
        sync: Some(std::net::Ipv4Addr::new(10, 9, 0, 3)),
    };
    let (tx, rx) = mpsc::channel();
    let ctl = members_controller(sh.clone(), rx);
    let srv = MgmtServer::new(sh.clone(), tx).with_block_path(Some(path.clone()));

    // Refusals change nothing and send nothing.
    for (req, code) in [
        (
            Request::MemberRemove {
                serial: "SN-A".into(),
            },
            ErrorCode::Refused,
        ),
        (
            Request::MemberRemove {
                serial: "SN-Q".into(),
            },
            ErrorCode::NotFound,
        ),
        (
            Request::MemberAdd {
                serial: "SN-B".into(),
                main_link: "10.0.0.9:44240".into(),
                addresses: with_addresses.clone(),
            },
            ErrorCode::Refused,
        ),
        (
            Request::MemberAdd {
                serial: "SN-C".into(),
                main_link: "not an address".into(),
                addresses: with_addresses.clone(),
            },
            ErrorCode::BadRequest,
        ),
        // Without probe addresses the liveness check would call it dead at once.
        (
            Request::MemberAdd {
                serial: "SN-C".into(),
                main_link: "10.0.0.3:44240".into(),
                addresses: Default::default(),
            },
            ErrorCode::BadRequest,
        ),
    ] {
        let (_, r) = ask(&srv, req.clone());
        assert!(
            matches!(&r, Reply::Error(e) if e.code == code),
            "{req:?}: {r:?}"
        );
    }
    assert_eq!(serials(&path), ["SN-A", "SN-B"]);

    // The failed member goes, its replacement comes.
    let (_, r) = ask(
        &srv,
        Request::MemberRemove {
            serial: "SN-B".into(),
        },
    );
    assert!(
        matches!(&r, Reply::Done { message } if message.contains("1 members")),
        "{r:?}"
    );
    assert_eq!(serials(&path), ["SN-A"]);
    assert!(
        targets("SN-B").is_empty(),
        "the removed member is not probed"
    );
    let (_, r) = ask(
        &srv,
        Request::MemberAdd {
            serial: "SN-C".into(),
            main_link: "10.0.0.3:44240".into(),
            addresses: with_addresses.clone(),
        },
    );
    assert!(matches!(&r, Reply::Done { .. }), "{r:?}");
    assert_eq!(serials(&path), ["SN-A", "SN-C"]);
    // The replacement is probed at its addresses, and state sync goes to it; a restart
    // of the daemon keeps that (the list is saved in its state directory).
    assert_eq!(targets("SN-C"), probe_c);
    let again = crate::peers::PeerBook::load(state.path(), &[]).expect("saved");
    assert_eq!(
        again.probe_targets(Serial::new("SN-C").expect("serial")),
        probe_c
    );
    assert_eq!(
        again.sync_peer(),
        Some(std::net::Ipv4Addr::new(10, 9, 0, 3))
    );
    let info = match ask(&srv, Request::Info { verbose: false }).1 {
        Reply::Info(i) => i,
        r => panic!("{r:?}"),
    };
    assert_eq!(info.peers.len(), 1);
    assert_eq!(info.peers[0].serial, "SN-C");
    assert_eq!(info.peers[0].addresses, with_addresses);
    let back = ConfigBlock::decode(&std::fs::read(&path).expect("read")).expect("block");
    assert_eq!(back.members[1].main_link.ip, [10, 0, 0, 3]);
    assert_eq!(
        back.psk.0,
        ha_hostlink::test_support::sample_cfg().psk.0,
        "key unchanged"
    );

    // The same add again (a join retried after its answer was lost): success, nothing sent
    // to the controller; with new addresses, only the peer list changes.
    let add_c = |main_link: &str, addresses: &ha_mgmt_api::MemberAddresses| {
        ask(
            &srv,
            Request::MemberAdd {
                serial: "SN-C".into(),
                main_link: main_link.into(),
                addresses: addresses.clone(),
            },
        )
        .1
    };
    let r = add_c("10.0.0.3:44240", &with_addresses);
    assert!(
        matches!(&r, Reply::Done { message } if message.contains("nothing changed")),
        "{r:?}"
    );
    let moved = ha_mgmt_api::MemberAddresses {
        probe: vec![std::net::Ipv4Addr::new(10, 1, 0, 23)],
        ..with_addresses.clone()
    };
    let r = add_c("10.0.0.3:44240", &moved);
    assert!(
        matches!(&r, Reply::Done { message } if message.contains("brought up to date")),
        "{r:?}"
    );
    assert_eq!(targets("SN-C"), moved.probe);
    // Another link for a member is refused, and changes nothing.
    let r = add_c("10.0.0.33:44240", &with_addresses);
    assert!(
        matches!(&r, Reply::Error(e) if e.code == ErrorCode::Refused && e.message.contains("at 10.0.0.3:44240")),
        "{r:?}"
    );
    assert_eq!(targets("SN-C"), moved.probe);
    assert_eq!(serials(&path), ["SN-A", "SN-C"]);

    drop(srv);
    let lists = ctl.join().expect("controller");
    assert_eq!(
        lists,
        vec![vec!["SN-A".to_string()], vec!["SN-A".into(), "SN-C".into()]],
        "a repeated add sends no member list"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn psk_rotation_moves_the_state_sync_keys_with_every_confirmed_phase() {
    use crate::synckeys::{SyncKeys, KEYRING_FILE};
    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("new.psk");
    std::fs::write(&key, format!("{}\n", NEW_KEY_HEX)).expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let block = ha_hostlink::test_support::sample_cfg();
    let keys = SyncKeys::load(dir.path(), &block).expect("keys");
    let hook = crate::app::sync_key_hook::<crate::dp::DpPath, crate::dp::DpSync>(keys, None);
    let sh = shared();
    let (tx, rx) = mpsc::channel();
    let ctl = controller(sh.clone(), rx);
    let srv = MgmtServer::new(sh.clone(), tx).with_sync_keys(Some(hook));
    let rotate = || Request::PskRotate {
        psk_file: key.display().to_string(),
        key_id: 2,
    };
    let file = || {
        ha_persist::KeyringFile::load(&dir.path().join(KEYRING_FILE))
            .expect("read")
            .map(|f| (f.sealing.0, f.accept.map(|a| a.0)))
    };
    assert_eq!(file(), None, "no rollover yet");
    let mut seen = Vec::new();
    for _ in 0..3 {
        let Reply::Rotate(r) = ask(&srv, rotate()).1 else {
            panic!("rotate")
        };
        seen.push((r.phase, file()));
    }
    assert_eq!(
        seen,
        [
            ("confirming".to_string(), Some((1, Some(2)))),
            ("retiring".to_string(), Some((2, Some(1)))),
            ("done".to_string(), Some((2, None))),
        ]
    );
    let lines: Vec<String> = sh
        .lock()
        .expect("lock")
        .local_events
        .iter()
        .filter(|e| e.kind == EventKind::KeyRotation)
        .map(|e| e.detail.clone())
        .collect();
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(lines[2].contains("sealing with key id 2"), "{lines:?}");
    drop(srv);
    ctl.join().expect("controller");
}

#[test]
fn a_phase_the_state_sync_keys_cannot_follow_stops_the_rotation_with_an_error() {
    let dir = tempfile::tempdir().expect("dir");
    let key = dir.path().join("new.psk");
    std::fs::write(&key, format!("{}\n", NEW_KEY_HEX)).expect("write");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let hook: crate::app::SyncKeyHook = Arc::new(|_, _, _| Err("disk full".to_string()));
    let sh = shared();
    let (tx, rx) = mpsc::channel();
    let ctl = controller(sh.clone(), rx);
    let srv = MgmtServer::new(sh.clone(), tx).with_sync_keys(Some(hook));
    let r = ask(
        &srv,
        Request::PskRotate {
            psk_file: key.display().to_string(),
            key_id: 2,
        },
    )
    .1;
    match r {
        Reply::Error(e) => assert!(e.message.contains("disk full"), "{e:?}"),
        other => panic!("{other:?}"),
    }
    drop(srv);
    ctl.join().expect("controller");
}

/// Fail-soft (SPEC A5) in the status table: members heard with different firmware raise a
/// warning naming the versions and set `fail_soft` in the JSON; the same versions do not.
#[test]
fn different_firmware_is_fail_soft_in_the_banner_and_the_json() {
    let sh = shared();
    let same = report(Role::Active, Role::Passive, ha_proto::msg::Forced::None);
    let info = cluster_info(&sh.lock().unwrap(), &same, 1_000, false);
    assert!(!info.fail_soft);
    let mut mixed = same.clone();
    mixed.members[1].firmware.minor = 3;
    let info = cluster_info(&sh.lock().unwrap(), &mixed, 1_000, false);
    assert!(info.fail_soft);
    assert_eq!(info.banner, BannerLevel::Warning);
    assert!(
        info.banner_text.contains("fail-soft") && info.banner_text.contains("1.3.3"),
        "{}",
        info.banner_text
    );
    let json = serde_json::to_value(&info).unwrap();
    assert_eq!(json["fail_soft"], true);
    // A member not heard does not count.
    mixed.members[1].alive = false;
    assert!(!cluster_info(&sh.lock().unwrap(), &mixed, 1_000, false).fail_soft);
}

/// A controller that takes HA settings as the agent does: it answers with a status carrying
/// their revision, or, for settings it refuses (encryption on, standing in for any reason
/// the agent gives), with a `settings_refused` event and the old revision. `silent` never
/// answers settings (a firmware older than reload). Returns the settings it received.
fn settings_controller(
    sh: Arc<Mutex<Shared>>,
    rx: mpsc::Receiver<HostMsg>,
    silent: bool,
) -> JoinHandle<Vec<ha_proto::config_block::HaSettings>> {
    std::thread::spawn(move || {
        let mut got = Vec::new();
        let mut revision = 4;
        while let Ok(m) = rx.recv_timeout(Duration::from_secs(5)) {
            let mut s = sh.lock().expect("lock");
            match m {
                HostMsg::Settings(_) if silent => continue,
                HostMsg::Settings(set) if set.encrypt => {
                    let event = EventReport {
                        seq: 1,
                        at_ms: 5,
                        name: heapless::String::try_from("settings_refused").expect("name"),
                        peer: None,
                        detail: heapless::String::try_from("settings refused: a reason")
                            .expect("detail"),
                    };
                    s.events.push_back((event, unix_ms() + 1));
                    got.push(set);
                }
                HostMsg::Settings(set) => {
                    revision = set.revision;
                    got.push(set);
                }
                _ => {}
            }
            let mut r = report(Role::Active, Role::Passive, ha_proto::msg::Forced::None);
            r.members[0].config_revision = revision;
            s.status = Some((r, unix_ms() + 1));
        }
        got
    })
}

#[test]
fn reload_applies_the_blocks_settings_and_refuses_what_needs_another_command() {
    use ha_proto::config_block::{ConfigBlock, BLOCK_SIZE, ERASED};
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("member.cfg");
    let write = |b: &ConfigBlock| {
        let mut img = vec![ERASED; BLOCK_SIZE];
        b.encode(&mut img).expect("encode");
        std::fs::write(&path, &img).expect("write");
    };
    let running = ha_hostlink::test_support::sample_cfg();
    write(&running);
    let sh = shared();
    let (tx, rx) = mpsc::channel();
    let ctl = settings_controller(sh.clone(), rx, false);
    let srv = MgmtServer::new(sh.clone(), tx).with_block_path(Some(path.clone()));
    let refused = |r: &Reply, what: &str| {
        assert!(
            matches!(r, Reply::Error(e) if e.code == ErrorCode::Refused && e.message.contains(what)),
            "want a refusal saying {what:?}: {r:?}"
        )
    };

    // The block as it runs: sent (the controller learns its revision), nothing changed.
    let (_, r) = ask(&srv, Request::Reload);
    let Reply::Reloaded(rep) = r else {
        panic!("{r:?}")
    };
    assert_eq!(rep.revision, running.revision());
    assert_eq!(rep.previous_revision, 4);
    assert!(rep.changes.is_empty(), "{rep:?}");

    // A heavier PSU and the fast timers: both listed, the controller gets them.
    let mut heavier = running.clone();
    heavier.weights.psu = 300;
    heavier.timers = ha_proto::config_block::TimerProfile::Fast;
    write(&heavier);
    let (_, r) = ask(&srv, Request::Reload);
    let Reply::Reloaded(rep) = r else {
        panic!("{r:?}")
    };
    assert_eq!(rep.revision, heavier.revision());
    assert_eq!(rep.previous_revision, running.revision());
    assert_eq!(
        rep.changes,
        ["timers: default → fast", "weights: psu 100 → 300"]
    );

    // What a running member cannot take is refused and not sent: another key, another
    // member list, another domain list, another serial; a corrupt image.
    let mut other_key = heavier.clone();
    let mut key = other_key.psk.0;
    key.reverse();
    other_key.psk = ha_proto::keys::Psk(key);
    let mut more_members = heavier.clone();
    more_members.members[1].main_link.port += 1;
    let mut more_domains = heavier.clone();
    more_domains
        .domains
        .push(ha_proto::config_block::DomainEntry {
            id: 1,
            preferred: None,
        })
        .expect("room");
    let mut not_mine = heavier.clone();
    not_mine.serial = Serial::new("SN-B").expect("serial");
    for (b, what) in [
        (&other_key, "hactl psk rotate"),
        (&more_members, "hactl cluster join"),
        (&more_domains, "domain list changed"),
        (&not_mine, "this member is SN-A"),
    ] {
        write(b);
        let (_, r) = ask(&srv, Request::Reload);
        refused(&r, what);
    }
    std::fs::write(&path, b"not a block").expect("write");
    let (_, r) = ask(&srv, Request::Reload);
    refused(&r, "the running settings stay");

    // The controller's own refusal reaches the operator, with its reason.
    let mut encrypted = heavier.clone();
    encrypted.encrypt = true;
    write(&encrypted);
    let (_, r) = ask(&srv, Request::Reload);
    refused(&r, "settings refused: a reason");

    drop(srv);
    let got = ctl.join().expect("controller");
    assert_eq!(got.len(), 3, "refused blocks were not sent: {got:?}");
    assert_eq!(got[1], heavier.settings());
    assert!(got[2].encrypt);
}

#[test]
fn reload_says_so_when_the_controller_never_confirms() {
    use ha_proto::config_block::{BLOCK_SIZE, ERASED};
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("member.cfg");
    let mut img = vec![ERASED; BLOCK_SIZE];
    ha_hostlink::test_support::sample_cfg()
        .encode(&mut img)
        .expect("encode");
    std::fs::write(&path, &img).expect("write");
    let sh = shared();
    let (tx, rx) = mpsc::channel();
    let ctl = settings_controller(sh.clone(), rx, true);
    let srv = MgmtServer::new(sh, tx).with_block_path(Some(path));
    let (_, r) = ask(&srv, Request::Reload);
    assert!(
        matches!(&r, Reply::Error(e) if e.code == ErrorCode::Unreachable
            && e.message.contains("did not confirm")),
        "{r:?}"
    );
    drop(srv);
    assert!(ctl.join().expect("controller").is_empty());
}

#[test]
fn reload_applies_the_monitored_interfaces_and_names_what_waits_for_a_restart() {
    use ha_proto::config_block::{BLOCK_SIZE, ERASED};
    let dir = tempfile::tempdir().expect("dir");
    let block = dir.path().join("member.cfg");
    let mut img = vec![ERASED; BLOCK_SIZE];
    ha_hostlink::test_support::sample_cfg()
        .encode(&mut img)
        .expect("encode");
    std::fs::write(&block, &img).expect("write");
    let toml = |eth1_weight: u16, garp: u64, extra: &str| {
        format!(
            "config_block = {block:?}\nhost_link = \"/run/ha/host.sock\"\n\
             garp_period_ms = {garp}\n\
             [[monitor]]\nname = \"eth1\"\nweight = {eth1_weight}\n\
             [[monitor]]\nname = \"eth2\"\n{extra}"
        )
    };
    let file = dir.path().join("daemon.toml");
    std::fs::write(&file, toml(100, 0, "")).expect("write");
    let running = crate::config::DaemonConfig::load(&file).expect("config");
    let sh = shared();
    let (tx, rx) = mpsc::channel();
    let ctl = settings_controller(sh.clone(), rx, false);
    // Plays the host loop's part: takes the new interface list.
    let taker = {
        let sh = sh.clone();
        std::thread::spawn(move || {
            let deadline = std::time::Instant::now() + Duration::from_secs(8);
            while std::time::Instant::now() < deadline {
                if let Some(list) = sh.lock().expect("lock").monitor_update.take() {
                    return Some(list);
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            None
        })
    };
    let srv = MgmtServer::new(sh.clone(), tx)
        .with_block_path(Some(block.clone()))
        .with_daemon_config(running);

    // A broken file refuses the whole reload: nothing is sent, nothing applied.
    std::fs::write(&file, "monitor = 7").expect("write");
    let (_, r) = ask(&srv, Request::Reload);
    assert!(
        matches!(&r, Reply::Error(e) if e.code == ErrorCode::Refused
            && e.message.contains("daemon configuration")),
        "{r:?}"
    );

    // eth1 lighter, eth3 added: applied; the gratuitous ARP period waits for a restart.
    std::fs::write(
        &file,
        toml(40, 500, "[[monitor]]\nname = \"eth3\"\naggregate = 1\n"),
    )
    .expect("write");
    let (_, r) = ask(&srv, Request::Reload);
    let Reply::Reloaded(rep) = r else {
        panic!("{r:?}")
    };
    assert_eq!(
        rep.changes,
        [
            "monitor eth1: weight 100 → 40",
            "monitor eth3: added (weight 100, aggregate 1)"
        ]
    );
    assert_eq!(rep.pending_restart, ["garp_period_ms"]);
    let list = taker
        .join()
        .expect("taker")
        .expect("the host loop got the list");
    let names: Vec<(&str, u16)> = list.iter().map(|m| (m.name.as_str(), m.weight)).collect();
    assert_eq!(names, [("eth1", 40), ("eth2", 100), ("eth3", 100)]);

    // Again: the interfaces run already; the restart is still pending.
    let (_, r) = ask(&srv, Request::Reload);
    let Reply::Reloaded(rep) = r else {
        panic!("{r:?}")
    };
    assert!(rep.changes.is_empty(), "{rep:?}");
    assert_eq!(rep.pending_restart, ["garp_period_ms"]);
    drop(srv);
    assert_eq!(ctl.join().expect("controller").len(), 2);
}

/// A controller that relays forcings for SN-B (`drop_first` relays lost on the HA link
/// first) and reports SN-B's forcing as its heartbeats would; `b_alive` false: SN-B is not
/// heard. Returns every forcing sent for another member.
fn relaying_controller(
    sh: Arc<Mutex<Shared>>,
    rx: mpsc::Receiver<HostMsg>,
    mut b_unheard: u32,
    mut drop_first: u32,
) -> JoinHandle<Vec<(Serial, AdminCommand)>> {
    std::thread::spawn(move || {
        let mut relayed = Vec::new();
        let mut b_forced = ha_proto::msg::Forced::None;
        while let Ok(m) = rx.recv_timeout(Duration::from_secs(2)) {
            if let HostMsg::Admin {
                target: Some(t),
                command,
            } = m
            {
                relayed.push((t, command));
                if drop_first > 0 {
                    drop_first -= 1;
                } else if t.as_str() == "SN-B" {
                    b_forced = match command {
                        AdminCommand::ForceActive => ha_proto::msg::Forced::Active,
                        AdminCommand::ForcePassive => ha_proto::msg::Forced::Passive,
                        _ => ha_proto::msg::Forced::None,
                    };
                }
            }
            let mut r = report(Role::Active, Role::Passive, ha_proto::msg::Forced::None);
            r.members[1].forced = b_forced;
            r.members[1].alive = b_unheard == 0;
            b_unheard = b_unheard.saturating_sub(1);
            sh.lock().expect("lock").status = Some((r, unix_ms()));
        }
        relayed
    })
}

#[test]
fn another_member_is_forced_by_serial_through_the_controller_and_confirmed_by_its_heartbeats() {
    let sh = shared();
    let (tx, rx) = mpsc::channel();
    // The first relay is lost on the link: it is sent again.
    let ctl = relaying_controller(sh.clone(), rx, 0, 1);
    let srv = MgmtServer::new(sh, tx);
    let force = |member: &str, forced| {
        ask(
            &srv,
            Request::Force {
                member: member.into(),
                forced,
            },
        )
        .1
    };
    let r = force("SN-B", ha_proto::msg::Forced::Passive);
    let Reply::Mode(m) = r else { panic!("{r:?}") };
    assert_eq!(
        (m.serial.as_str(), m.forced),
        ("SN-B", ha_proto::msg::Forced::Passive)
    );
    let r = force("SN-B", ha_proto::msg::Forced::None);
    assert!(
        matches!(&r, Reply::Mode(m) if m.forced == ha_proto::msg::Forced::None),
        "{r:?}"
    );
    // Refused before anything is relayed: not a member, not a serial.
    let r = force("SN-Q", ha_proto::msg::Forced::Active);
    assert!(
        matches!(&r, Reply::Error(e) if e.code == ErrorCode::NotFound
            && e.message.contains("members: SN-A, SN-B")),
        "{r:?}"
    );
    let r = force("", ha_proto::msg::Forced::Active);
    assert!(
        matches!(&r, Reply::Error(e) if e.code == ErrorCode::BadRequest),
        "{r:?}"
    );
    drop(srv);
    let relayed = ctl.join().expect("controller");
    let cmds: Vec<AdminCommand> = relayed.iter().map(|(_, c)| *c).collect();
    assert_eq!(
        cmds,
        [
            AdminCommand::ForcePassive,
            AdminCommand::ForcePassive,
            AdminCommand::ResetForcing
        ],
        "the lost relay was sent again, the refused requests never"
    );
}

#[test]
fn a_member_not_heard_cannot_be_forced() {
    let sh = shared();
    let (tx, rx) = mpsc::channel();
    let ctl = relaying_controller(sh.clone(), rx, u32::MAX, 0);
    let srv = MgmtServer::new(sh, tx);
    let (_, r) = ask(
        &srv,
        Request::Force {
            member: "SN-B".into(),
            forced: ha_proto::msg::Forced::Active,
        },
    );
    assert!(
        matches!(&r, Reply::Error(e) if e.code == ErrorCode::Unreachable
            && e.message.contains("not heard")),
        "{r:?}"
    );
    drop(srv);
    assert!(ctl.join().expect("controller").is_empty());
}

/// A member in a short flap of its HA links (heard again within the grace) still gets the
/// operator's forcing: a planned swap is not refused for a few late heartbeats.
#[test]
fn a_member_heard_again_within_the_grace_is_forced() {
    let sh = shared();
    let (tx, rx) = mpsc::channel();
    // Its first three status reports show SN-B unheard.
    let ctl = relaying_controller(sh.clone(), rx, 3, 0);
    let srv = MgmtServer::new(sh, tx);
    let (_, r) = ask(
        &srv,
        Request::Force {
            member: "SN-B".into(),
            forced: ha_proto::msg::Forced::Passive,
        },
    );
    assert!(
        matches!(&r, Reply::Mode(m) if m.forced == ha_proto::msg::Forced::Passive),
        "{r:?}"
    );
    drop(srv);
    assert_eq!(
        ctl.join().expect("controller"),
        [(
            Serial::new("SN-B").expect("serial"),
            AdminCommand::ForcePassive
        )]
    );
}

/// Load sharing in the status table: two members each active for its own domain are a
/// healthy cluster (not "2 members are active"), each row lists its role per domain; two
/// members active for the same domain are the conflict, named with the domain.
#[test]
fn members_active_for_different_domains_are_redundant_and_the_same_domain_is_a_conflict() {
    use ha_proto::msg::host::DomainSummary;
    let sh = shared();
    let shared_load = |b_for_0: Role| {
        let mut r = report(Role::Active, b_for_0, ha_proto::msg::Forced::None);
        let two = |d0: Role, d1: Role| {
            heapless::Vec::from_slice(&[
                DomainSummary {
                    domain: 0,
                    role: d0,
                    priority: 0,
                },
                DomainSummary {
                    domain: 1,
                    role: d1,
                    priority: 0,
                },
            ])
            .expect("domains")
        };
        r.members[0].domains = two(Role::Active, Role::Passive);
        r.members[1].domains = two(b_for_0, Role::Active);
        r
    };
    let info = cluster_info(
        &sh.lock().unwrap(),
        &shared_load(Role::Passive),
        1_000,
        false,
    );
    assert_eq!(info.banner, BannerLevel::Ok, "{}", info.banner_text);
    let roles: Vec<Vec<(u8, ha_mgmt_api::Mode)>> = info
        .members
        .iter()
        .map(|m| m.domains.iter().map(|d| (d.domain, d.mode)).collect())
        .collect();
    use ha_mgmt_api::Mode::{Active, Passive};
    assert_eq!(
        roles,
        [
            vec![(0, Active), (1, Passive)],
            vec![(0, Passive), (1, Active)]
        ]
    );
    let info = cluster_info(
        &sh.lock().unwrap(),
        &shared_load(Role::Active),
        1_000,
        false,
    );
    assert_eq!(info.banner, BannerLevel::Critical);
    assert_eq!(info.banner_text, "2 members are active for domain 0");
    // One domain: the banner reads as before.
    let one = report(Role::Active, Role::Active, ha_proto::msg::Forced::None);
    let info = cluster_info(&sh.lock().unwrap(), &one, 1_000, false);
    assert_eq!(info.banner_text, "2 members are active");
}

/// A peer's model comes from what its daemon said over the state sync; unknown before.
#[test]
fn a_peers_model_is_what_its_daemon_said_and_unknown_before() {
    let sh = shared();
    let r = report(Role::Active, Role::Passive, ha_proto::msg::Forced::None);
    let models = |sh: &Arc<Mutex<Shared>>| -> Vec<String> {
        cluster_info(&sh.lock().unwrap(), &r, 1_000, false)
            .members
            .iter()
            .map(|m| m.model.clone())
            .collect()
    };
    assert_eq!(models(&sh), ["-", "-"]);
    sh.lock()
        .unwrap()
        .peer_models
        .insert("SN-B".into(), "nucleo-h743zi".into());
    assert_eq!(models(&sh), ["-", "nucleo-h743zi"]);
}
