//! Boots a cluster of management-controller members under QEMU `mps2-an385` (the QEMU member
//! contract, `docs/qemu.md`) and owns every process and thread it starts.
//!
//! A [`Cluster`] is: a configuration block per member (built with `hactl`'s provisioning
//! code), one `qemu-system-arm` per member, the test wire ([`ha_testwire::Wire`]) relaying the
//! main and backup HA links, a board simulator per member ([`ha_boardsim::BoardSim`]) on its
//! sensor UART, the UART0 log captured (decoded with `defmt-print` on demand), the status
//! LED read over QMP (`xp /1wx 0x40028000`) every [`LED_POLL`], and the member's host link
//! ([`ha_hostlink::HostLink`]) played by the harness as the member's main CPU.
//!
//! The harness as main CPU: it records every `RoleDecision`, `Status` and `Event` with the
//! instant it arrived, asks for a `Status` every [`STATUS_PERIOD`], sends `Admin` commands, and
//! answers the controller's `ProbeRequest` (a liveness probe of a peer over the data
//! interfaces) from the cluster's data network model: the peer answers when its QEMU runs and
//! the data path between the two is not cut ([`Cluster::cut_data`]).
//!
//! Every QEMU is killed by its own pid when its [`Member`] is dropped (also on a failed
//! start); loops are bounded by timeouts. One cluster at a time per process
//! ([`Cluster::start`] holds a process-wide lock).

#![warn(missing_docs)]

use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ha_proto::config_block::ConfigBlock;
use ha_proto::msg::Role;
use ha_testwire::{Impair, LinkKind, Wire, WireConfig};

pub use crate::common::{decode_defmt, Error, Result, LED_POLL, STATUS_PERIOD};
use crate::common::{lock, SOCKET_TIMEOUT};
pub use crate::led::LedObserved;
use crate::member::{DataNet, Ports, ProbeFn};
pub use crate::member::{HostView, Member};

pub use ha_hal::bridge::SensorKind as Sensor;
pub use ha_testwire::LinkKind as Link;

/// Main-link UDP port in every member's block.
const HA_PORT: u16 = ha_proto::config_block::DEFAULT_HA_PORT;

static ONE_CLUSTER: Mutex<()> = Mutex::new(());
static CLUSTER_SEQ: AtomicU32 = AtomicU32::new(0);

/// What to boot.
#[derive(Clone, Debug)]
pub struct ClusterConfig {
    /// The firmware ELF (`ha-firmware`, release build).
    pub elf: PathBuf,
    /// Number of members (2..=8).
    pub members: usize,
    /// Timer profile: `default`, `fast` or `custom:INTERVAL_MS:MISS_LIMIT`.
    pub timers: String,
    /// Wire the backup (serial) HA link too.
    pub backup_link: bool,
    /// Cluster id.
    pub cluster_id: u32,
}

impl ClusterConfig {
    /// Two members, fast timers, both links.
    pub fn new(elf: PathBuf) -> Self {
        ClusterConfig {
            elf,
            members: 2,
            timers: "fast".into(),
            backup_link: true,
            cluster_id: 42,
        }
    }
}

/// Serial of member `i`.
pub fn serial_of(i: usize) -> String {
    format!("QM-{}", (b'A' + i as u8) as char)
}

fn free_udp_port() -> Result<SocketAddr> {
    UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map_err(|e| format!("no free UDP port: {e}"))
}

/// A running cluster. Dropping it kills every QEMU and stops every thread.
pub struct Cluster {
    members: Vec<Member>,
    wire: Arc<Wire>,
    data: Arc<DataNet>,
    dir: PathBuf,
    elf: PathBuf,
    started: Instant,
    _one: MutexGuard<'static, ()>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("members", &self.members)
            .field("dir", &self.dir)
            .finish()
    }
}

impl Cluster {
    /// Provisions and boots the cluster. Fails (with everything started so far stopped) when
    /// a QEMU does not start or does not create its sockets within 10 s, or a member's
    /// controller sends no status on its host link within 10 s.
    pub fn start(cfg: &ClusterConfig) -> Result<Cluster> {
        if !(2..=8).contains(&cfg.members) {
            return Err(format!("{} members: 2 to 8 supported", cfg.members));
        }
        if !cfg.elf.is_file() {
            return Err(format!("no firmware ELF at {}", cfg.elf.display()));
        }
        let one = ONE_CLUSTER.lock().unwrap_or_else(|p| p.into_inner());
        // A fresh directory per cluster: its members' boot counters start anew, as new
        // boards' do.
        let dir = std::env::temp_dir().join(format!(
            "ha-qemu-{}-{}",
            std::process::id(),
            CLUSTER_SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let serials: Vec<String> = (0..cfg.members).map(serial_of).collect();
        let blocks = provision(cfg, &serials)?;
        let main: Vec<SocketAddr> = (0..cfg.members)
            .map(|_| free_udp_port())
            .collect::<Result<_>>()?;
        let backup: Vec<SocketAddr> = (0..cfg.members)
            .map(|_| free_udp_port())
            .collect::<Result<_>>()?;
        let wire = Wire::start(&WireConfig {
            main: main.clone(),
            backup: backup.clone(),
        })
        .map_err(|e| e.to_string())?;
        let data = Arc::new(DataNet {
            alive: (0..cfg.members).map(|_| AtomicBool::new(false)).collect(),
            cut: Mutex::new(vec![vec![false; cfg.members]; cfg.members]),
            serials: serials.clone(),
        });
        let mut cluster = Cluster {
            members: Vec::new(),
            wire: Arc::new(wire),
            data: data.clone(),
            dir: dir.clone(),
            elf: cfg.elf.clone(),
            started: Instant::now(),
            _one: one,
        };
        for (i, block) in blocks.into_iter().enumerate() {
            let mdir = dir.join(&serials[i]);
            std::fs::create_dir_all(&mdir).map_err(|e| format!("{}: {e}", mdir.display()))?;
            let wire_main = cluster
                .wire
                .wire_port(LinkKind::Main, i)
                .ok_or("no wire port")?;
            let wire_backup = cluster
                .wire
                .wire_port(LinkKind::Backup, i)
                .ok_or("no wire port")?;
            let ports = Ports {
                wire_main,
                member_main: main[i].port(),
                backup: cfg.backup_link.then_some((wire_backup, backup[i].port())),
            };
            let d = data.clone();
            let probe: ProbeFn = Arc::new(move |from, peer| d.probe(from, peer));
            let m = Member::boot(i, &serials[i], &cfg.elf, &mdir, block, &ports, probe).map_err(
                |e| {
                    if e.starts_with(&serials[i]) {
                        e
                    } else {
                        format!("{}: {e}", serials[i])
                    }
                },
            )?;
            data.alive[i].store(true, Ordering::Relaxed);
            cluster.members.push(m);
        }
        // Every controller answers the harness's status requests once it runs: a member that
        // stays silent does not boot (wrong ELF, refused block), and the start fails.
        let end = Instant::now() + SOCKET_TIMEOUT;
        for m in &cluster.members {
            while m.host().status.is_none() {
                if Instant::now() >= end {
                    return Err(format!(
                        "{}: no status on its host link within {SOCKET_TIMEOUT:?} (does the \
                         firmware boot?)",
                        m.serial
                    ));
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        cluster.started = Instant::now();
        Ok(cluster)
    }

    /// The members.
    pub fn members(&self) -> &[Member] {
        &self.members
    }

    /// Member `i`.
    pub fn member(&self, i: usize) -> &Member {
        &self.members[i]
    }

    /// Member `i`, mutable.
    pub fn member_mut(&mut self, i: usize) -> &mut Member {
        &mut self.members[i]
    }

    /// The firmware ELF.
    pub fn elf(&self) -> &Path {
        &self.elf
    }

    /// When the last member was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// The test wire (cut, loss, delay, counters).
    pub fn wire(&self) -> &Arc<Wire> {
        &self.wire
    }

    /// Serves the wire's control socket at `<dir>/wire.sock` and returns its path.
    pub fn serve_wire_control(&self) -> Result<PathBuf> {
        let path = self.dir.join("wire.sock");
        self.wire.serve_control(&path).map_err(|e| e.to_string())?;
        Ok(path)
    }

    /// Sets `impair` on both directions of `link` between every pair (`None`: both links).
    pub fn impair(&self, link: Option<LinkKind>, impair: Impair) -> Result {
        self.wire
            .set(link, None, None, impair)
            .map_err(|e| e.to_string())
    }

    /// Cuts (`true`) or restores the data path between every pair: the harness's probe
    /// answers follow it.
    pub fn cut_data(&self, cut: bool) {
        let mut c = lock(&self.data.cut);
        for row in c.iter_mut() {
            for v in row.iter_mut() {
                *v = cut;
            }
        }
    }

    /// Kills member `i`'s QEMU with SIGKILL and returns the instant just before the signal.
    pub fn kill(&mut self, i: usize) -> Instant {
        self.data.alive[i].store(false, Ordering::Relaxed);
        let at = Instant::now();
        self.members[i].kill();
        self.members[i].killed_at = Some(at);
        at
    }

    /// Indices of the members whose last domain-0 decision is `Active`, among the running.
    pub fn actives(&mut self) -> Vec<usize> {
        (0..self.members.len())
            .filter(|&i| self.members[i].running() && self.members[i].role() == Some(Role::Active))
            .collect()
    }

    /// Waits up to `timeout` until `pred` holds, checking every 20 ms.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&mut Cluster) -> bool,
    ) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if pred(self) {
                return true;
            }
            if Instant::now() >= end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits up to `timeout` for exactly one active among the running members.
    pub fn wait_one_active(&mut self, timeout: Duration) -> Result<usize> {
        if self.wait_for(timeout, |c| c.actives().len() == 1) {
            Ok(self.actives()[0])
        } else {
            Err(format!(
                "no single active member within {timeout:?}:\n{}",
                self.status_table()
            ))
        }
    }

    /// One line per member: serial, QEMU, role, quality, links as seen from it, forcing, LED.
    pub fn status_table(&mut self) -> String {
        let mut out = format!(
            "{:<6} {:<5} {:<9} {:>7} {:<26} {:<7} {}\n",
            "member", "qemu", "mode", "quality", "links (main/backup)", "forced", "led"
        );
        for i in 0..self.members.len() {
            let running = self.members[i].running();
            let m = &self.members[i];
            let role = m
                .role()
                .map(|r| format!("{r:?}"))
                .unwrap_or_else(|| "-".into());
            let (mut quality, mut links, mut forced) =
                ("-".to_string(), "-".to_string(), "-".to_string());
            if let Some((_, st)) = &m.host().status {
                if let Some(me) = st.members.iter().find(|s| s.local) {
                    quality = me.quality.to_string();
                    forced = format!("{:?}", me.forced);
                }
                let peers: Vec<String> = st
                    .members
                    .iter()
                    .filter(|s| !s.local)
                    .map(|s| {
                        let l: Vec<String> = s.links.iter().map(|l| format!("{l:?}")).collect();
                        format!("{}:{}", s.serial, l.join("/"))
                    })
                    .collect();
                links = peers.join(" ");
            }
            let led = m.led_observed(Duration::from_secs(4)).to_string();
            if !running {
                // What a dead member last said is stale: show nothing.
                (quality, links, forced) = ("-".into(), "-".into(), "-".into());
            }
            out.push_str(&format!(
                "{:<6} {:<5} {:<9} {:>7} {:<26} {:<7} {}\n",
                m.serial,
                if running { "up" } else { "dead" },
                if running { role } else { "-".into() },
                quality,
                links,
                forced,
                if running { led } else { "-".into() },
            ));
        }
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        // Members first (QEMU killed by pid, threads joined), then the wire, then the files.
        self.members.clear();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The configuration blocks of every member (hactl's provisioning code, one PSK).
fn provision(cfg: &ClusterConfig, serials: &[String]) -> Result<Vec<ConfigBlock>> {
    let psk = hactl::pskfile::generate().map_err(|e| e.to_string())?;
    let members: Vec<String> = serials
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{s}=10.0.0.{}:{HA_PORT}", i + 1))
        .collect();
    serials
        .iter()
        .map(|s| {
            let plan = hactl::provision::Plan {
                serial: s.clone(),
                cluster_id: cfg.cluster_id,
                members: members.clone(),
                backup_link: cfg.backup_link,
                timers: cfg.timers.clone(),
                ..hactl::provision::Plan::default()
            };
            plan.block(psk.clone()).map_err(|e| e.to_string())
        })
        .collect()
}

/// Median, min and max of failover times in milliseconds, as the bench prints them.
pub fn summary(ms: &mut [f64]) -> Option<(f64, f64, f64)> {
    if ms.is_empty() {
        return None;
    }
    ms.sort_by(|a, b| a.total_cmp(b));
    let n = ms.len();
    let median = if n % 2 == 1 {
        ms[n / 2]
    } else {
        (ms[n / 2 - 1] + ms[n / 2]) / 2.0
    };
    Some((ms[0], median, ms[n - 1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_of_runs() {
        assert_eq!(summary(&mut []), None);
        assert_eq!(summary(&mut [30.0, 10.0, 20.0]), Some((10.0, 20.0, 30.0)));
        assert_eq!(
            summary(&mut [40.0, 10.0, 20.0, 30.0]),
            Some((10.0, 25.0, 40.0))
        );
    }
}
