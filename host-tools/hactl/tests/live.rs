//! hactl's live commands against a scripted daemon on a real unix socket: what each command
//! sends, how it renders each reply, its `--json` output, and its exit codes.
//!
//! The scripted daemon answers like `ha-daemon`'s management server; the daemon's own server
//! is tested in `daemon/src/mgmt/tests.rs`, and both meet in the end-to-end suites.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use common::{all_output, assert_no_key, key_bytes};
use ha_mgmt_api::server::{self, Backend, Sink};
use ha_mgmt_api::*;
use std::sync::atomic::{AtomicBool, Ordering};

/// A daemon stand-in: an in-process [`Backend`] served by `ha_mgmt_api::server::serve` on a
/// temporary unix socket (real socket, real JSON lines). It records every request and answers
/// with `script(request)`: the last reply is the final one, the others are streamed first.
struct FakeDaemon {
    path: PathBuf,
    requests: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    _dir: tempfile::TempDir,
    thread: Option<JoinHandle<()>>,
}

struct Scripted {
    script: fn(&Request) -> Vec<Reply>,
    log: Arc<Mutex<Vec<Request>>>,
}

impl Scripted {
    fn answer(&self, req: Request, out: &mut Sink) -> std::io::Result<Reply> {
        let mut replies = (self.script)(&req);
        self.log.lock().unwrap().push(req);
        let Some(last) = replies.pop() else {
            // Scripted silence: end the connection without an answer.
            return Err(std::io::Error::other("scripted silence"));
        };
        for r in &replies {
            out(r)?;
        }
        Ok(last)
    }

    fn plain(&self, req: Request) -> Reply {
        let mut none = |_: &Reply| Ok(());
        self.answer(req, &mut none).unwrap_or_else(|e| {
            Reply::Error(ApiError {
                code: ErrorCode::Internal,
                message: e.to_string(),
            })
        })
    }
}

impl Backend for Scripted {
    fn info(&self, verbose: bool) -> Reply {
        self.plain(Request::Info { verbose })
    }
    fn mode(&self) -> Reply {
        self.plain(Request::Mode)
    }
    fn forwarding(&self) -> Reply {
        self.plain(Request::Forwarding)
    }
    fn active(&self) -> Reply {
        self.plain(Request::Active)
    }
    fn passive(&self) -> Reply {
        self.plain(Request::Passive)
    }
    fn reset(&self) -> Reply {
        self.plain(Request::Reset)
    }
    fn reload(&self) -> Reply {
        self.plain(Request::Reload)
    }
    fn force(&self, member: String, forced: Forced) -> Reply {
        self.plain(Request::Force { member, forced })
    }
    fn pause(&self, seconds: u16) -> Reply {
        self.plain(Request::Pause { seconds })
    }
    fn resume(&self) -> Reply {
        self.plain(Request::Resume)
    }
    fn events(&self, follow: bool, last: Option<u32>, out: &mut Sink) -> std::io::Result<Reply> {
        self.answer(Request::Events { follow, last }, out)
    }
    fn config_publish(&self, comment: Option<String>) -> Reply {
        self.plain(Request::ConfigPublish { comment })
    }
    fn config_sync(&self, peer: Option<String>, out: &mut Sink) -> std::io::Result<Reply> {
        self.answer(Request::ConfigSync { peer }, out)
    }
    fn config_diff(&self, path: String, peer: Option<String>) -> Reply {
        self.plain(Request::ConfigDiff { path, peer })
    }
    fn config_synctest(&self) -> Reply {
        self.plain(Request::ConfigSynctest)
    }
    fn psk_rotate(&self, psk_file: String, key_id: u8) -> Reply {
        self.plain(Request::PskRotate { psk_file, key_id })
    }
    fn psk_rotate_status(&self) -> Reply {
        self.plain(Request::PskRotateStatus)
    }
    fn cluster_create(&self, cluster_id: u32, psk_file: String) -> Reply {
        self.plain(Request::ClusterCreate {
            cluster_id,
            psk_file,
        })
    }
    fn cluster_join(&self, peer: String, psk_file: String, ha: Option<HaMember>) -> Reply {
        self.plain(Request::ClusterJoin { peer, psk_file, ha })
    }
    fn cluster_remove(&self, serial: String) -> Reply {
        self.plain(Request::ClusterRemove { serial })
    }
    fn update(&self, image: String, out: &mut Sink) -> std::io::Result<Reply> {
        self.answer(Request::Update { image }, out)
    }
    fn member_add(
        &self,
        serial: String,
        main_link: String,
        addresses: ha_mgmt_api::MemberAddresses,
    ) -> Reply {
        self.plain(Request::MemberAdd {
            serial,
            main_link,
            addresses,
        })
    }
    fn member_remove(&self, serial: String) -> Reply {
        self.plain(Request::MemberRemove { serial })
    }
}

impl FakeDaemon {
    fn start(script: fn(&Request) -> Vec<Reply>) -> FakeDaemon {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mgmt.sock");
        let listener = server::bind(&path).unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let backend = Arc::new(Scripted {
            script,
            log: requests.clone(),
        });
        let stop = Arc::new(AtomicBool::new(false));
        let thread = server::serve(listener, backend, stop.clone()).unwrap();
        FakeDaemon {
            path,
            requests,
            stop,
            _dir: dir,
            thread: Some(thread),
        }
    }

    fn hactl(&self, args: &[&str]) -> Output {
        let p = self.path.to_str().unwrap();
        let mut all = vec!["--socket", p, "--config-socket", p];
        all.extend_from_slice(args);
        run(&all)
    }

    fn last(&self) -> Request {
        self.requests
            .lock()
            .unwrap()
            .last()
            .cloned()
            .expect("a request")
    }
}

impl Drop for FakeDaemon {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args(args)
        .env_remove("HA_MGMT_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .expect("run hactl")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn member(serial: &str, mode: Mode, quality: u8) -> MemberInfo {
    let mut counters = BTreeMap::new();
    counters.insert("frames_rejected_bad_tag".to_string(), 3);
    MemberInfo {
        serial: serial.into(),
        model: "SN-Q3".into(),
        firmware: "1.0.0".into(),
        forced: Forced::None,
        mode,
        mode_since: 1_700_000_000,
        quality,
        priority: 50,
        domains: Vec::new(),
        config_sync: ConfigSyncInfo {
            state: SyncState::Synchronized,
            last_sync: Some(1_700_000_100),
            detail: None,
        },
        boot_time: 1_699_999_000,
        links: vec![
            LinkInfo {
                name: "main".into(),
                state: LinkStatus::Up,
                since: 1,
            },
            LinkInfo {
                name: "backup".into(),
                state: LinkStatus::Down,
                since: 2,
            },
        ],
        config_revision: 7,
        counters: Some(counters),
    }
}

fn mode_report(mode: Mode, forced: Forced) -> Reply {
    Reply::Mode(ModeReport {
        serial: "SN-A".into(),
        mode,
        forced,
        since: 5,
        paused: false,
    })
}

fn event(kind: EventKind, detail: &str) -> Reply {
    Reply::Event(Event {
        time_ms: 1000,
        kind,
        member: Some("SN-B".into()),
        detail: detail.into(),
        seq: None,
    })
}

/// Answers like ha-daemon for every request.
fn daemon(req: &Request) -> Vec<Reply> {
    match req {
        Request::Info { .. } => vec![Reply::Info(ClusterInfo {
            fail_soft: false,
            api_version: 1,
            cluster_id: 4242,
            me: "SN-A".into(),
            banner: BannerLevel::Warning,
            banner_text: "backup link down".into(),
            addresses: Default::default(),
            peers: Vec::new(),
            members: vec![
                // Load sharing: active for domain 0, passive for domain 1.
                MemberInfo {
                    domains: vec![
                        ha_mgmt_api::DomainInfo {
                            domain: 0,
                            mode: Mode::Active,
                            priority: 50,
                        },
                        ha_mgmt_api::DomainInfo {
                            domain: 1,
                            mode: Mode::Passive,
                            priority: 0,
                        },
                    ],
                    ..member("SN-A", Mode::Active, 100)
                },
                member("SN-B", Mode::Passive, 63),
            ],
        })],
        Request::Mode => vec![mode_report(Mode::Active, Forced::None)],
        Request::Forwarding => vec![Reply::Forwarding(ha_mgmt_api::ForwardingReport {
            serial: "SN-A".into(),
            active: true,
            domains: vec![0],
            since_ms: 1_000,
            changes: 1,
            started_ms: 500,
            now_ms: 62_000,
            controller_alive: true,
            table_connections: Some(1_000),
            peer_table: Some("held (active: its table is the one the peers copy)".into()),
        })],
        Request::Active => vec![mode_report(Mode::Active, Forced::Active)],
        Request::Passive => vec![mode_report(Mode::Passive, Forced::Passive)],
        Request::Reset => vec![mode_report(Mode::Active, Forced::None)],
        Request::Reload => vec![Reply::Reloaded(ha_mgmt_api::ReloadReport {
            revision: 0x1122_3344_5566_7788,
            previous_revision: 0x99aa_bbcc_ddee_ff00,
            changes: vec!["weights: fan 100 → 700".into()],
            pending_restart: vec!["garp_period_ms".into()],
        })],
        Request::Force { member, forced } => vec![Reply::Mode(ModeReport {
            serial: member.clone(),
            mode: if *forced == Forced::Active {
                Mode::Active
            } else {
                Mode::Passive
            },
            forced: *forced,
            since: 5,
            paused: false,
        })],
        Request::Pause { .. } => vec![Reply::Mode(ModeReport {
            serial: "SN-A".into(),
            mode: Mode::Active,
            forced: Forced::None,
            since: 5,
            paused: true,
        })],
        Request::Resume => vec![mode_report(Mode::Active, Forced::None)],
        Request::Events { .. } => vec![
            event(EventKind::Swap, "peer lost"),
            event(EventKind::LinkDown, "backup"),
            Reply::EndOfEvents,
        ],
        Request::ConfigPublish { .. } => vec![Reply::Published {
            revision: 8,
            files: 120,
        }],
        Request::ConfigSync { .. } => vec![
            Reply::Progress(Progress {
                peer: "SN-B".into(),
                phase: "transfer".into(),
                done_files: 5,
                total_files: 10,
                done_bytes: 500,
                total_bytes: 1000,
            }),
            Reply::SyncDone(SyncReport {
                peer: "SN-B".into(),
                revision: 8,
                files_total: 120,
                files_sent: 10,
                bytes_sent: 1000,
                elapsed_ms: 42,
            }),
        ],
        Request::ConfigDiff { path, .. } => vec![Reply::Diff(DiffReport {
            path: path.clone(),
            peer: "SN-B".into(),
            status: FileStatus::Differs,
            local_sha256: Some("aa".into()),
            peer_sha256: Some("bb".into()),
            diff: Some("-old\n+new\n".into()),
        })],
        Request::ConfigSynctest => vec![Reply::Synctest(SynctestReport {
            revision: 8,
            local_changes: vec![],
            peers: vec![PeerSyncStatus {
                peer: "SN-B".into(),
                state: SyncState::SyncProblem,
                revision: 7,
                unsynchronized: vec!["filter/rules.conf".into()],
                last_sync: Some(1_700_000_200),
                detail: Some("revision 7 of 8".into()),
            }],
        })],
        Request::PskRotate { key_id, .. } => vec![Reply::Rotate(RotateReport {
            phase: "done".into(),
            sealing_key_id: *key_id,
            previous_key_id: None,
            confirmed: vec!["SN-A".into(), "SN-B".into()],
            pending: vec![],
        })],
        Request::PskRotateStatus => vec![Reply::Rotate(RotateReport {
            phase: "idle".into(),
            sealing_key_id: 1,
            previous_key_id: None,
            confirmed: vec![],
            pending: vec![],
        })],
        Request::ClusterJoin { .. } => vec![Reply::Error(ApiError {
            code: ErrorCode::ClusterFull,
            message: "the cluster already has 8 members".into(),
        })],
        Request::ClusterCreate { .. } | Request::ClusterRemove { .. } => vec![Reply::Done {
            message: "done".into(),
        }],
        Request::MemberAdd { .. } | Request::MemberRemove { .. } => vec![Reply::Done {
            message: "SN-A now has 2 members: SN-A, SN-C".into(),
        }],
        Request::Update { .. } => vec![Reply::Error(ApiError {
            code: ErrorCode::Unsupported,
            message: "updates are not run by ha-daemon".into(),
        })],
        Request::Restart { .. } => vec![Reply::Done {
            message: "restarting".into(),
        }],
    }
}

fn json(o: &Output) -> serde_json::Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

#[test]
fn info_renders_the_table_and_json_parses() {
    let d = FakeDaemon::start(daemon);
    let o = d.hactl(&["info"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let t = stdout(&o);
    assert!(t.starts_with("[WARNING] backup link down"), "{t}");
    assert!(
        t.contains("SN-A*") && t.contains("ACTIVE") && t.contains("PASSIVE"),
        "{t}"
    );
    assert!(t.contains("main:up backup:DOWN"), "{t}");
    assert!(
        t.contains("\n    domains: 0 active (prio 50), 1 passive (prio 0)\n"),
        "{t}"
    );
    assert_eq!(t.matches("domains:").count(), 1, "one domain: no line\n{t}");
    assert!(!t.contains("counters:"), "{t}");
    // The sync column and banner come from the configuration-sync service's synctest.
    assert_eq!(
        d.requests.lock().unwrap()[..],
        [Request::Info { verbose: false }, Request::ConfigSynctest]
    );
    assert!(t.contains("configuration of SN-B: sync_problem"), "{t}");
    assert!(t.contains("config sync: revision 7 of 8"), "{t}");

    let o = d.hactl(&["info", "-v"]);
    assert!(stdout(&o).contains("frames_rejected_bad_tag=3"));
    assert!(d
        .requests
        .lock()
        .unwrap()
        .contains(&Request::Info { verbose: true }));

    let o = d.hactl(&["info", "--json"]);
    let v = json(&o);
    assert_eq!(v["type"], "info");
    assert_eq!(v["members"][1]["quality"], 63);
    assert_eq!(v["members"][0]["domains"][1]["mode"], "passive");
    assert_eq!(v["members"][1]["config_sync"]["state"], "sync_problem");
    assert_eq!(v["members"][1]["config_sync"]["last_sync"], 1_700_000_200);
    // The JSON is the API's own reply type.
    let back: Reply = serde_json::from_value(v).unwrap();
    assert!(matches!(back, Reply::Info(_)));
}

#[test]
fn mode_and_forcing_commands() {
    let d = FakeDaemon::start(daemon);
    let o = d.hactl(&["mode"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("SN-A ACTIVE (forced: -)"));
    assert_eq!(json(&d.hactl(&["mode", "--json"]))["mode"], "active");
    let o = d.hactl(&["forwarding"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(d.last(), Request::Forwarding);
    assert!(
        stdout(&o).contains("SN-A forwarding: active for 1 min 01 s (1 role changes")
            && stdout(&o).contains("synced table: 1000 connections"),
        "{}",
        stdout(&o)
    );
    let f = json(&d.hactl(&["forwarding", "--json"]));
    assert_eq!(
        (f["active"].as_bool(), f["since_ms"].as_u64()),
        (Some(true), Some(1_000))
    );
    for (cmd, req, text) in [
        ("active", Request::Active, "forced: active"),
        ("passive", Request::Passive, "forced: passive"),
        ("reset", Request::Reset, "forced: -"),
    ] {
        let o = d.hactl(&[cmd]);
        assert_eq!(o.status.code(), Some(0), "{cmd}");
        assert!(stdout(&o).contains(text), "{cmd}: {}", stdout(&o));
        assert_eq!(d.last(), req);
    }
    // Another member, by serial: the request names it, the answer is its mode.
    for (cmd, forced, text) in [
        ("active", Forced::Active, "SN-B ACTIVE (forced: active)"),
        ("passive", Forced::Passive, "SN-B PASSIVE (forced: passive)"),
        ("reset", Forced::None, "SN-B PASSIVE (forced: -)"),
    ] {
        let o = d.hactl(&[cmd, "SN-B"]);
        assert_eq!(o.status.code(), Some(0), "{cmd}");
        assert!(stdout(&o).contains(text), "{cmd}: {}", stdout(&o));
        assert_eq!(
            d.last(),
            Request::Force {
                member: "SN-B".into(),
                forced
            }
        );
    }
    let o = d.hactl(&["reload"]);
    assert_eq!(o.status.code(), Some(0));
    let text = stdout(&o);
    for line in [
        "reloaded: revision 1122334455667788 (was 99aabbccddeeff00), applied in place without a swap:",
        "  weights: fan 100 → 700",
        "applied when the daemon restarts: garp_period_ms",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    assert_eq!(d.last(), Request::Reload);
    let o = d.hactl(&["reload", "--json"]);
    let v = json(&o);
    assert_eq!(v["type"], "reloaded");
    assert_eq!(v["changes"][0], "weights: fan 100 → 700");
}

/// `pause` alone; `pause -- COMMAND` around a command (decisions resume whatever the command
/// does, its failure is the exit code); bounds refused before anything is sent.
#[test]
fn pause_around_a_command_always_resumes() {
    let d = FakeDaemon::start(daemon);
    let o = d.hactl(&["pause", "--seconds", "20"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(stdout(&o).contains("decisions paused"), "{}", stdout(&o));
    assert_eq!(d.last(), Request::Pause { seconds: 20 });
    let seen = |d: &FakeDaemon| d.requests.lock().unwrap().len();
    let before = seen(&d);
    let o = d.hactl(&["pause", "--seconds", "5", "--", "true"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_eq!(seen(&d), before + 2);
    assert_eq!(d.last(), Request::Resume);
    let o = d.hactl(&["pause", "--", "false"]);
    assert_eq!(o.status.code(), Some(1), "the command's failure: {o:?}");
    assert_eq!(d.last(), Request::Resume, "resumed after a failed command");
    let o = d.hactl(&["pause", "--", "/nonexistent/program"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(d.last(), Request::Resume);
    let before = seen(&d);
    for bad in ["0", "3601", "x"] {
        let o = d.hactl(&["pause", "--seconds", bad]);
        assert_eq!(o.status.code(), Some(2), "--seconds {bad}");
    }
    assert_eq!(seen(&d), before, "nothing sent for a refused command line");
    assert_eq!(d.hactl(&["resume"]).status.code(), Some(0));
    assert_eq!(d.last(), Request::Resume);
}

#[test]
fn events_plain_json_lines_and_follow_flag() {
    let d = FakeDaemon::start(daemon);
    let o = d.hactl(&["events", "--last", "10"]);
    assert_eq!(o.status.code(), Some(0));
    let t = stdout(&o);
    assert_eq!(t.lines().count(), 2, "{t}");
    assert!(t.contains("swap") && t.contains("link_down") && t.contains("SN-B"));
    assert_eq!(
        d.last(),
        Request::Events {
            follow: false,
            last: Some(10)
        }
    );
    let o = d.hactl(&["events", "--json"]);
    // One JSON object per line: two events, then the end marker.
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(lines.len(), 3, "{}", stdout(&o));
    assert_eq!(lines[0]["kind"], "swap");
    d.hactl(&["events", "--follow"]);
    assert_eq!(
        d.last(),
        Request::Events {
            follow: true,
            last: None
        }
    );
}

#[test]
fn config_commands() {
    let d = FakeDaemon::start(daemon);
    let o = d.hactl(&["config", "publish", "--comment", "new rule"]);
    assert!(stdout(&o).contains("published revision 8 (120 files)"));
    assert_eq!(
        d.last(),
        Request::ConfigPublish {
            comment: Some("new rule".into())
        }
    );
    let o = d.hactl(&["sync", "--peer", "SN-B"]);
    assert_eq!(o.status.code(), Some(0));
    let t = stdout(&o);
    assert!(t.contains("SN-B transfer: 5/10 files"), "{t}");
    assert!(t.contains("10 of 120 files sent"), "{t}");
    let o = d.hactl(&["sync", "--json"]);
    let lines: Vec<serde_json::Value> = stdout(&o)
        .split("\n{")
        .enumerate()
        .map(|(i, l)| {
            let l = if i == 0 {
                l.to_string()
            } else {
                format!("{{{l}")
            };
            serde_json::from_str(&l).unwrap()
        })
        .collect();
    assert_eq!(lines.last().unwrap()["type"], "sync_done");
    let o = d.hactl(&["diff", "filter/rules.conf"]);
    assert!(stdout(&o).contains("filter/rules.conf vs SN-B: differs"));
    assert!(stdout(&o).contains("+new"));
    assert_eq!(
        json(&d.hactl(&["diff", "a", "--json"]))["status"],
        "differs"
    );
    // synctest: something unsynchronized → exit 7, listed.
    let o = d.hactl(&["synctest"]);
    assert_eq!(o.status.code(), Some(7));
    assert!(stdout(&o).contains("SN-B: sync_problem (revision 7), 1 unsynchronized"));
    assert!(stdout(&o).contains("filter/rules.conf"));
    let o = d.hactl(&["synctest", "--json"]);
    assert_eq!(o.status.code(), Some(7));
    assert_eq!(
        json(&o)["peers"][0]["unsynchronized"][0],
        "filter/rules.conf"
    );
}

fn new_key(dir: &Path) -> PathBuf {
    let key = dir.join("next.key");
    let o = run(&["psk", "generate", "--out", key.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    key
}

/// One member of a fake two-member cluster for `psk rotate`: it keeps its controller's key
/// state (sealing, accepted) and takes one step per `psk_rotate` exactly as ha-daemon does;
/// after every step the cluster checks that every member's sealing key is accepted by all.
struct KeyMember {
    index: usize,
    cluster: Arc<Mutex<KeyCluster>>,
}

#[derive(Default)]
struct KeyCluster {
    keys: Vec<(u8, Vec<u8>)>,
    broken_after_step: u32,
    files: Vec<String>,
}

impl KeyMember {
    fn report(&self, c: &KeyCluster) -> Reply {
        let (sealing, accepted) = &c.keys[self.index];
        Reply::Rotate(RotateReport {
            phase: "idle".into(),
            sealing_key_id: *sealing,
            previous_key_id: accepted.iter().copied().find(|k| k != sealing),
            confirmed: vec![format!("SN-{}", self.index)],
            pending: vec![],
        })
    }
}

impl Backend for KeyMember {
    fn info(&self, _verbose: bool) -> Reply {
        match daemon(&Request::Info { verbose: false }).pop() {
            Some(r) => r,
            None => Reply::EndOfEvents,
        }
    }
    fn psk_rotate_status(&self) -> Reply {
        self.report(&self.cluster.lock().unwrap())
    }
    fn psk_rotate(&self, psk_file: String, key_id: u8) -> Reply {
        let mut c = self.cluster.lock().unwrap();
        c.files.push(psk_file);
        let (sealing, accepted) = &mut c.keys[self.index];
        if !accepted.contains(&key_id) {
            accepted.retain(|k| k == sealing);
            accepted.push(key_id);
        } else if *sealing != key_id {
            *sealing = key_id;
        } else {
            accepted.retain(|k| *k == key_id);
        }
        let whole = c
            .keys
            .iter()
            .all(|(s, _)| c.keys.iter().all(|(_, acc)| acc.contains(s)));
        if !whole {
            c.broken_after_step += 1;
        }
        self.report(&c)
    }
}

#[test]
fn psk_rotate_runs_the_rollover_on_every_member_and_never_sends_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = new_key(dir.path());
    let cluster = Arc::new(Mutex::new(KeyCluster {
        keys: vec![(1, vec![1]); 2],
        ..Default::default()
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let mut socks = Vec::new();
    let mut threads = Vec::new();
    for index in 0..2 {
        let p = dir.path().join(format!("m{index}.sock"));
        let l = server::bind(&p).unwrap();
        let b = Arc::new(KeyMember {
            index,
            cluster: cluster.clone(),
        });
        threads.push(server::serve(l, b, stop.clone()).unwrap());
        socks.push(p.to_str().unwrap().to_string());
    }
    let rotate = |extra: &[&str]| {
        let mut a = vec![
            "psk",
            "rotate",
            "--psk-file",
            key.to_str().unwrap(),
            "--key-id",
            "2",
        ];
        a.extend_from_slice(extra);
        run(&a)
    };
    // Leaving a member out is refused before anything changes.
    let o = rotate(&["--socket", &socks[0]]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("cluster has 2 members"));
    assert_eq!(cluster.lock().unwrap().keys, vec![(1, vec![1]); 2]);

    // The configuration-sync services' keys roll over too, after the HA links'.
    let config = Arc::new(Mutex::new(KeyCluster {
        keys: vec![(1, vec![1]); 2],
        ..Default::default()
    }));
    let mut csocks = Vec::new();
    for index in 0..2 {
        let p = dir.path().join(format!("c{index}.sock"));
        let b = Arc::new(KeyMember {
            index,
            cluster: config.clone(),
        });
        threads.push(server::serve(server::bind(&p).unwrap(), b, stop.clone()).unwrap());
        csocks.push(p.to_str().unwrap().to_string());
    }
    let o = rotate(&[
        "--member-socket",
        &socks[0],
        "--member-socket",
        &socks[1],
        "--config-member-socket",
        &csocks[0],
    ]);
    assert_eq!(
        o.status.code(),
        Some(3),
        "one configuration socket of two: {o:?}"
    );
    let o = rotate(&[
        "--member-socket",
        &socks[0],
        "--member-socket",
        &socks[1],
        "--config-member-socket",
        &csocks[0],
        "--config-member-socket",
        &csocks[1],
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    {
        let c = config.lock().unwrap();
        assert_eq!(c.keys, vec![(2, vec![2]); 2]);
        assert_eq!(c.broken_after_step, 0);
    }
    let out = stdout(&o);
    assert!(out.contains("only key id 2"), "{out}");
    {
        let c = cluster.lock().unwrap();
        assert_eq!(c.keys, vec![(2, vec![2]); 2]);
        assert_eq!(c.broken_after_step, 0, "a step left a frame unaccepted");
        assert_eq!(c.files.len(), 6);
        for f in &c.files {
            assert_eq!(Path::new(f), std::fs::canonicalize(&key).unwrap());
        }
    }
    assert_no_key("psk rotate", &all_output(&o), &key_bytes(&key));

    // Again to key id 3, with --json: every line parses.
    let o = run(&[
        "psk",
        "rotate",
        "--psk-file",
        key.to_str().unwrap(),
        "--key-id",
        "3",
        "--json",
        "--member-socket",
        &socks[0],
        "--member-socket",
        &socks[1],
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 7);
    assert_eq!(lines[6]["type"], "rotation_done");
    assert_eq!(cluster.lock().unwrap().broken_after_step, 0);
    assert_no_key("psk rotate --json", &all_output(&o), &key_bytes(&key));

    // Status of one member, as JSON.
    let o = run(&["--socket", &socks[1], "psk", "status", "--json"]);
    assert_eq!(json(&o)["sealing_key_id"], 3);

    // A missing key file is refused before any daemon is asked.
    let before = cluster.lock().unwrap().files.len();
    let o = run(&[
        "--socket",
        &socks[0],
        "psk",
        "rotate",
        "--psk-file",
        "/nonexistent",
        "--key-id",
        "4",
    ]);
    assert_eq!(o.status.code(), Some(4));
    assert_eq!(cluster.lock().unwrap().files.len(), before);
    stop.store(true, Ordering::Relaxed);
    for t in threads {
        t.join().unwrap();
    }
}

#[test]
fn cluster_and_update_errors_map_to_exit_codes() {
    let d = FakeDaemon::start(daemon);
    let dir = tempfile::tempdir().unwrap();
    let key = new_key(dir.path());
    let k = key.to_str().unwrap();
    let o = d.hactl(&["cluster", "create", "--cluster-id", "7", "--psk-file", k]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    // A full cluster refuses a newcomer with a clear error: exit 3.
    let o = d.hactl(&[
        "cluster",
        "join",
        "--peer",
        "10.0.0.1:44240",
        "--psk-file",
        k,
    ]);
    assert_eq!(o.status.code(), Some(3));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("the cluster already has 8 members (cluster_full)"),
        "{err}"
    );
    // A malformed peer address never reaches the daemon.
    let o = d.hactl(&["cluster", "join", "--peer", "nowhere", "--psk-file", k]);
    assert_eq!(o.status.code(), Some(3));
    let o = d.hactl(&["cluster", "remove", "--serial", "SN-B"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(
        d.last(),
        Request::ClusterRemove {
            serial: "SN-B".into()
        }
    );
    // With --member-socket the HA member list of that member drops it too.
    let sock = d.path.to_str().unwrap().to_string();
    let o = d.hactl(&[
        "cluster",
        "remove",
        "--serial",
        "SN-B",
        "--member-socket",
        &sock,
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(
        d.last(),
        Request::MemberRemove {
            serial: "SN-B".into()
        }
    );
    // A joiner with --ha-address is added (under its own serial) to every --member-socket
    // once the join is accepted (the e2e shows it on the booted cluster).
    let o = d.hactl(&[
        "cluster",
        "join",
        "--peer",
        "127.0.0.1:7000",
        "--psk-file",
        k,
        "--ha-address",
        "10.0.0.3:44240",
        "--member-socket",
        &sock,
    ]);
    // This fake cluster is full: the join is refused and no member list is touched.
    assert_eq!(o.status.code(), Some(3));
    assert!(
        matches!(d.last(), Request::ClusterJoin { .. }),
        "{:?}",
        d.last()
    );
    let o = d.hactl(&[
        "cluster",
        "join",
        "--peer",
        "127.0.0.1:7000",
        "--psk-file",
        k,
        "--ha-address",
        "nowhere",
        "--member-socket",
        &sock,
    ]);
    assert_eq!(o.status.code(), Some(3));
    // A rolling update needs every member and the site's install program: without them it
    // is a command-line error (2), not a request the daemon would refuse.
    let img = dir.path().join("fw.bin");
    std::fs::write(&img, b"image").unwrap();
    let o = d.hactl(&["update", "--image", img.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("--member") && err.contains("--install"),
        "{err}"
    );
}

#[test]
fn no_daemon_is_exit_5_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("absent.sock");
    let o = run(&["--socket", sock.to_str().unwrap(), "info"]);
    assert_eq!(o.status.code(), Some(5));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("cannot reach") && err.contains("absent.sock") && err.contains("--socket"),
        "{err}"
    );
    // The environment variable is honoured.
    let o = Command::new(env!("CARGO_BIN_EXE_hactl"))
        .arg("mode")
        .env("HA_MGMT_SOCKET", &sock)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(5));
}

#[test]
fn a_daemon_that_speaks_garbage_is_an_error_not_a_panic() {
    fn garbage(_: &Request) -> Vec<Reply> {
        Vec::new()
    }
    // A daemon that closes without answering (a streaming request ends the connection).
    let d = FakeDaemon::start(garbage);
    let o = d.hactl(&["events"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("closed the connection"));
    // A daemon that answers with a line that is not a reply.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("g.sock");
    let l = UnixListener::bind(&path).unwrap();
    let t = std::thread::spawn(move || {
        if let Ok((mut s, _)) = l.accept() {
            let mut r = BufReader::new(s.try_clone().unwrap());
            let mut line = String::new();
            let _ = r.read_line(&mut line);
            let _ = s.write_all(b"{\"type\":\"no_such_reply\"}\n");
        }
    });
    let o = run(&["--socket", path.to_str().unwrap(), "mode"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("cannot read"));
    t.join().unwrap();
}
