//! `hactl update` (rolling update, SPEC E5) against a simulated two-member cluster: each
//! member's daemon is an in-process Backend on its own unix socket; the install hook is a real
//! program that marks the member installed, after which the member is down for a few polls
//! and comes back passive with the new firmware. The simulation records every operation and
//! flags a member installed while active, or two active members.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use ha_mgmt_api::server::{self, Backend};
use ha_mgmt_api::*;

struct Sim {
    dir: PathBuf,
    /// serial, mode, firmware, forced, polls left down
    members: Vec<(String, Mode, String, Forced, u32)>,
    log: Vec<String>,
    violations: Vec<String>,
}

impl Sim {
    fn tick(&mut self) {
        for i in 0..self.members.len() {
            let serial = self.members[i].0.clone();
            let marker = self.dir.join(format!("installed-{serial}"));
            if marker.exists() {
                let _ = std::fs::remove_file(&marker);
                if self.members[i].1 == Mode::Active {
                    self.violations
                        .push(format!("{serial} installed while active"));
                }
                self.log.push(format!("installed {serial}"));
                self.members[i].1 = Mode::Unknown;
                self.members[i].4 = 2;
            } else if self.members[i].4 > 0 {
                self.members[i].4 -= 1;
                if self.members[i].4 == 0 {
                    self.members[i].1 = Mode::Passive;
                    self.members[i].2 = "2.0.0".into();
                }
            }
        }
        let actives = self.members.iter().filter(|m| m.1 == Mode::Active).count();
        if actives > 1 {
            self.violations.push(format!("{actives} active members"));
        }
    }

    fn info(&self) -> ClusterInfo {
        ClusterInfo {
            fail_soft: false,
            api_version: API_VERSION,
            cluster_id: 3,
            me: self.members[0].0.clone(),
            banner: BannerLevel::Ok,
            banner_text: String::new(),
            addresses: Default::default(),
            peers: Vec::new(),
            members: self
                .members
                .iter()
                .map(|(s, mode, fw, forced, _)| MemberInfo {
                    serial: s.clone(),
                    model: "mps2-an385".into(),
                    firmware: fw.clone(),
                    forced: *forced,
                    mode: *mode,
                    mode_since: 0,
                    quality: 100,
                    priority: 0,
                    domains: Vec::new(),
                    config_sync: ConfigSyncInfo {
                        state: SyncState::Synchronized,
                        last_sync: None,
                        detail: None,
                    },
                    boot_time: 0,
                    links: vec![],
                    config_revision: 1,
                    counters: None,
                })
                .collect(),
        }
    }
}

struct Daemon {
    me: usize,
    sim: Arc<Mutex<Sim>>,
}

impl Daemon {
    fn mode(sim: &Sim, me: usize) -> Reply {
        let m = &sim.members[me];
        Reply::Mode(ModeReport {
            serial: m.0.clone(),
            mode: m.1,
            forced: m.3,
            since: 0,
            paused: false,
        })
    }
}

impl Backend for Daemon {
    fn info(&self, _verbose: bool) -> Reply {
        let mut s = self.sim.lock().unwrap();
        s.tick();
        Reply::Info(s.info())
    }
    fn passive(&self) -> Reply {
        let mut s = self.sim.lock().unwrap();
        let me = self.me;
        let line = format!("passive {}", s.members[me].0);
        s.log.push(line);
        s.members[me].3 = Forced::Passive;
        if s.members[me].1 == Mode::Active {
            s.members[me].1 = Mode::Passive;
            if let Some(o) = s
                .members
                .iter_mut()
                .find(|m| m.1 == Mode::Passive && m.3 == Forced::None)
            {
                o.1 = Mode::Active;
            }
        }
        Daemon::mode(&s, me)
    }
    fn reset(&self) -> Reply {
        let mut s = self.sim.lock().unwrap();
        let me = self.me;
        let line = format!("reset {}", s.members[me].0);
        s.log.push(line);
        s.members[me].3 = Forced::None;
        Daemon::mode(&s, me)
    }
}

struct Cluster {
    dir: tempfile::TempDir,
    sim: Arc<Mutex<Sim>>,
    socks: Vec<String>,
    hook: PathBuf,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn cluster(modes: [Mode; 2]) -> Cluster {
    let dir = tempfile::tempdir().unwrap();
    let sim = Arc::new(Mutex::new(Sim {
        dir: dir.path().to_path_buf(),
        members: vec![
            ("SN-A".into(), modes[0], "1.0.0".into(), Forced::None, 0),
            ("SN-B".into(), modes[1], "1.0.0".into(), Forced::None, 0),
        ],
        log: vec![],
        violations: vec![],
    }));
    let stop = Arc::new(AtomicBool::new(false));
    let mut socks = Vec::new();
    let mut threads = Vec::new();
    for me in 0..2 {
        let p = dir.path().join(format!("m{me}.sock"));
        let b = Arc::new(Daemon {
            me,
            sim: sim.clone(),
        });
        threads.push(server::serve(server::bind(&p).unwrap(), b, stop.clone()).unwrap());
        socks.push(p.to_str().unwrap().to_string());
    }
    // The install hook: marks SERIAL installed with IMAGE (argv, no shell interpolation).
    let hook = dir.path().join("install.sh");
    std::fs::write(
        &hook,
        format!(
            "#!/bin/sh\nset -e\ntest -f \"$2\"\necho \"$2\" > '{}/installed-'\"$1\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    Cluster {
        dir,
        sim,
        socks,
        hook,
        stop,
        threads,
    }
}

fn update(c: &Cluster, extra: &[&str]) -> Output {
    let image = c.dir.path().join("fw-2.0.0.elf");
    std::fs::write(&image, b"\x7fELF image").unwrap();
    let a = format!("SN-A={}", c.socks[0]);
    let b = format!("SN-B={}", c.socks[1]);
    Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args(["update", "--image"])
        .arg(&image)
        .args(["--member", &a, "--member", &b, "--install"])
        .arg(&c.hook)
        .args([
            "--expect-version",
            "2.0.0",
            "--poll-ms",
            "10",
            "--settle-polls",
            "2",
        ])
        .args(["--timeout-s", "10"])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn rolling_update_passive_first_then_swap_then_the_other() {
    let c = cluster([Mode::Active, Mode::Passive]);
    let o = update(&c, &[]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let s = c.sim.lock().unwrap();
    assert_eq!(
        s.log,
        vec![
            "installed SN-B",
            "passive SN-A",
            "installed SN-A",
            "reset SN-A"
        ]
    );
    assert!(s.violations.is_empty(), "{:?}", s.violations);
    assert!(s.members.iter().all(|m| m.2 == "2.0.0"));
    assert_eq!(s.members[1].1, Mode::Active);
    assert_eq!(s.members[0].3, Forced::None);
}

#[test]
fn json_progress_parses() {
    let c = cluster([Mode::Passive, Mode::Active]);
    let o = update(&c, &["--json"]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[0]["step"], "install");
    assert_eq!(lines[0]["member"], "SN-A");
    assert_eq!(lines[7]["type"], "update_done");
    assert!(c.sim.lock().unwrap().violations.is_empty());
}

#[test]
fn no_redundancy_refuses_and_installs_nothing() {
    let c = cluster([Mode::Active, Mode::Unknown]);
    let o = update(&c, &[]);
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("not starting the update"));
    assert!(c.sim.lock().unwrap().log.is_empty());
    assert!(!Path::new(&c.dir.path().join("installed-SN-A")).exists());
    assert!(!Path::new(&c.dir.path().join("installed-SN-B")).exists());
}
