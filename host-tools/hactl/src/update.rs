//! Rolling update (`hactl update`, SPEC E5): every passive member first, each waited for
//! until it is back as a healthy passive; then the active member is forced passive so that an
//! updated member takes over; then it is updated, waited for, and its forcing removed. What a
//! member's update is ([`Parts`]): the controller's firmware image (the site's install hook),
//! the main CPU's daemon (replaced in place, [`ha_mgmt_api::Request::Restart`]), or both; a
//! member whose daemon was replaced is back only once its new daemon holds the active
//! member's connection table (the state sync's bulk), so the swap that follows loses none.
//!
//! [`plan`] turns the cluster's status into the list of [`Action`]s (sans-IO, from one
//! [`ClusterInfo`]); [`run`] carries them out over a [`Cluster`] (the members' daemons and the
//! site's install hook in `hactl`, a simulated cluster in tests), polling the status while it
//! waits. A member is never updated while it is active, and nothing starts unless the cluster
//! is redundant (exactly one active member, every other one passive).

use ha_mgmt_api::{ClusterInfo, ForwardingReport, Mode};

/// What each member's update replaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Parts {
    /// The controller's firmware image (the install hook).
    pub image: bool,
    /// The main CPU's daemon.
    pub daemon: bool,
}

impl Parts {
    /// The image only (the update of earlier releases).
    pub const IMAGE: Parts = Parts {
        image: true,
        daemon: false,
    };
}

/// One step of a rolling update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Install the image on this member (it restarts).
    Install(String),
    /// Replace this member's daemon by the new one.
    RestartDaemon(String),
    /// Wait until this member is back: passive, and running the expected firmware if known.
    WaitRejoin(String),
    /// Force this (active) member passive: an updated member takes over.
    ForcePassive(String),
    /// Wait until a member other than this one is active.
    WaitTakeover(String),
    /// Remove the forcing of this member.
    ResetForcing(String),
}

/// Why an update did not start or stopped.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpdateError {
    /// The cluster is not in a state to be updated (no redundancy).
    NotRedundant(String),
    /// A wait ran out of time.
    Timeout(Action),
    /// The cluster or the install hook failed.
    Failed(String),
}

impl std::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateError::NotRedundant(s) => write!(f, "not starting the update: {s}"),
            UpdateError::Timeout(a) => write!(f, "timed out at {a:?}"),
            UpdateError::Failed(s) => f.write_str(s),
        }
    }
}

impl std::error::Error for UpdateError {}

/// The update's steps for the cluster as `info` shows it, each member's update being `parts`.
pub fn plan(info: &ClusterInfo, parts: Parts) -> Result<Vec<Action>, UpdateError> {
    let actives: Vec<&str> = info
        .members
        .iter()
        .filter(|m| m.mode == Mode::Active)
        .map(|m| m.serial.as_str())
        .collect();
    let [active] = actives[..] else {
        return Err(UpdateError::NotRedundant(format!(
            "{} active members (one is needed)",
            actives.len()
        )));
    };
    let passives: Vec<&str> = info
        .members
        .iter()
        .filter(|m| m.mode == Mode::Passive)
        .map(|m| m.serial.as_str())
        .collect();
    if passives.is_empty() {
        return Err(UpdateError::NotRedundant(
            "no passive member to take over".into(),
        ));
    }
    if let Some(m) = info
        .members
        .iter()
        .find(|m| m.mode != Mode::Active && m.mode != Mode::Passive)
    {
        return Err(UpdateError::NotRedundant(format!(
            "{} is {:?}",
            m.serial, m.mode
        )));
    }
    if !parts.image && !parts.daemon {
        return Err(UpdateError::Failed(
            "nothing to update: give an image, a daemon, or both".into(),
        ));
    }
    let update = |m: &str, out: &mut Vec<Action>| {
        if parts.image {
            out.push(Action::Install(m.to_string()));
        }
        if parts.daemon {
            out.push(Action::RestartDaemon(m.to_string()));
        }
        out.push(Action::WaitRejoin(m.to_string()));
    };
    let mut out = Vec::new();
    for p in passives {
        update(p, &mut out);
    }
    out.push(Action::ForcePassive(active.to_string()));
    out.push(Action::WaitTakeover(active.to_string()));
    update(active, &mut out);
    out.push(Action::ResetForcing(active.to_string()));
    Ok(out)
}

/// The boot time `info` gives for `serial`, when known (non-zero).
pub fn boot_time_of(info: &ClusterInfo, serial: &str) -> Option<u64> {
    info.members
        .iter()
        .find(|m| m.serial == serial)
        .map(|m| m.boot_time)
        .filter(|b| *b != 0)
}

/// True when `serial` booted after `before` (boot times are whole seconds derived from an
/// uptime, so a later boot must be more than 1 s later); true when either is unknown.
pub fn rebooted(info: &ClusterInfo, serial: &str, before: Option<u64>) -> bool {
    match (before, boot_time_of(info, serial)) {
        (Some(b), Some(now)) => now > b.saturating_add(1),
        _ => true,
    }
}

/// True when `serial` is back as a passive member, running `version` when one is expected.
pub fn rejoined(info: &ClusterInfo, serial: &str, version: Option<&str>) -> bool {
    info.members.iter().any(|m| {
        m.serial == serial && m.mode == Mode::Passive && version.is_none_or(|v| m.firmware == v)
    })
}

/// True when a member other than `serial` is active and `serial` is not.
pub fn taken_over(info: &ClusterInfo, serial: &str) -> bool {
    let others = info
        .members
        .iter()
        .filter(|m| m.serial != serial && m.mode == Mode::Active)
        .count();
    let me_active = info
        .members
        .iter()
        .any(|m| m.serial == serial && m.mode == Mode::Active);
    others == 1 && !me_active
}

/// True when a daemon that restarted holds the active member's connection table: at least
/// 99 % of the active's count, read in the same poll (both move while traffic flows); false
/// while it reports none yet.
pub fn caught_up(restarted: Option<u64>, active: Option<u64>) -> bool {
    match (restarted, active) {
        (Some(mine), Some(theirs)) => mine.saturating_add(theirs / 100) >= theirs,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// What a rolling update needs from the cluster.
pub trait Cluster {
    /// The status table (from any member's daemon).
    fn info(&mut self) -> Result<ClusterInfo, String>;
    /// The status as `serial`'s own daemon reports it (its boot time included); by default
    /// whatever [`Cluster::info`] answers.
    fn info_of(&mut self, _serial: &str) -> Result<ClusterInfo, String> {
        self.info()
    }
    /// Forces `serial` passive.
    fn force_passive(&mut self, serial: &str) -> Result<(), String>;
    /// Removes the forcing of `serial`.
    fn reset_forcing(&mut self, serial: &str) -> Result<(), String>;
    /// Installs the image on `serial` (returns once the member restarts with it).
    fn install(&mut self, serial: &str) -> Result<(), String>;
    /// Replaces `serial`'s daemon by the new one (returns once the daemon said it does).
    fn restart_daemon(&mut self, _serial: &str) -> Result<(), String> {
        Err("this cluster cannot replace daemons".into())
    }
    /// What `serial`'s daemon reports of its data path (process start, table size).
    fn forwarding_of(&mut self, _serial: &str) -> Result<ForwardingReport, String> {
        Err("no forwarding report".into())
    }
    /// Waits one poll interval.
    fn pause(&mut self);
}

/// Carries out the update; `max_polls` bounds each wait, `on_action` is told of each step
/// as it starts. A member that must rejoin must also have been seen stable (passive) on
/// `settle_polls` consecutive polls.
pub fn run<C: Cluster>(
    cluster: &mut C,
    parts: Parts,
    version: Option<&str>,
    max_polls: u32,
    settle_polls: u32,
    mut on_action: impl FnMut(&Action),
) -> Result<Vec<Action>, UpdateError> {
    let info = cluster.info().map_err(UpdateError::Failed)?;
    let actions = plan(&info, parts)?;
    // Boot time of each member before its install, when its daemon reports one: a member
    // has rejoined only once it booted again (a status from before the restart does not
    // count).
    let mut booted_before: Vec<(String, u64)> = Vec::new();
    // Process start of each member's daemon before it was replaced.
    let mut started_before: Vec<(String, u64)> = Vec::new();
    for a in &actions {
        on_action(a);
        match a {
            Action::Install(s) => {
                if let Some(b) = cluster.info_of(s).ok().and_then(|i| boot_time_of(&i, s)) {
                    booted_before.push((s.clone(), b));
                }
                cluster.install(s).map_err(UpdateError::Failed)?
            }
            Action::RestartDaemon(s) => {
                // Its daemon refuses while it forwards: after a swap its data path may take a
                // moment to follow the controller's role.
                let mut polls = 0;
                let before = loop {
                    let f = cluster.forwarding_of(s).map_err(UpdateError::Failed)?;
                    if !f.active {
                        break f;
                    }
                    if polls >= max_polls {
                        return Err(UpdateError::Timeout(a.clone()));
                    }
                    polls += 1;
                    cluster.pause();
                };
                started_before.push((s.clone(), before.started_ms));
                cluster.restart_daemon(s).map_err(UpdateError::Failed)?
            }
            Action::ForcePassive(s) => cluster.force_passive(s).map_err(UpdateError::Failed)?,
            Action::ResetForcing(s) => cluster.reset_forcing(s).map_err(UpdateError::Failed)?,
            Action::WaitRejoin(s) | Action::WaitTakeover(s) => {
                let mut stable = 0;
                let mut polls = 0;
                while stable < settle_polls.max(1) {
                    if polls >= max_polls {
                        return Err(UpdateError::Timeout(a.clone()));
                    }
                    polls += 1;
                    // A member restarting may leave its daemon briefly unreachable.
                    let ok = match a {
                        Action::WaitRejoin(_) => {
                            let before =
                                booted_before.iter().find(|(m, _)| m == s).map(|(_, b)| *b);
                            let back = cluster.info_of(s).ok().is_some_and(|i| {
                                rejoined(&i, s, version) && rebooted(&i, s, before)
                            });
                            back && (!parts.daemon || daemon_back(cluster, s, &started_before))
                        }
                        _ => cluster.info().ok().is_some_and(|i| taken_over(&i, s)),
                    };
                    stable = if ok { stable + 1 } else { 0 };
                    if stable < settle_polls.max(1) {
                        cluster.pause();
                    }
                }
            }
        }
    }
    Ok(actions)
}

/// True when `serial`'s daemon is a new process (started after `started_before` says) that
/// hears its controller and holds the active member's table ([`caught_up`]).
fn daemon_back<C: Cluster>(
    cluster: &mut C,
    serial: &str,
    started_before: &[(String, u64)],
) -> bool {
    let Ok(mine) = cluster.forwarding_of(serial) else {
        return false;
    };
    let before = started_before
        .iter()
        .find(|(m, _)| m == serial)
        .map(|(_, t)| *t);
    if before.is_some_and(|t| mine.started_ms <= t) || !mine.controller_alive {
        return false;
    }
    let Some(active) = cluster.info().ok().and_then(|i| {
        i.members
            .iter()
            .find(|m| m.mode == Mode::Active)
            .map(|m| m.serial.clone())
    }) else {
        return false;
    };
    let theirs = cluster
        .forwarding_of(&active)
        .ok()
        .and_then(|f| f.table_connections);
    caught_up(mine.table_connections, theirs)
}

/// Runs the site's install hook as `PROGRAM SERIAL IMAGE` (no shell, no input): it returns
/// once the member was given the image (a rolling update's firmware, an enrolled box's
/// configuration block). A non-zero exit is an error that names the hook and the member.
pub fn run_install_hook(
    program: &std::path::Path,
    serial: &str,
    image: &std::path::Path,
) -> Result<(), String> {
    let st = std::process::Command::new(program)
        .arg(serial)
        .arg(image)
        .stdin(std::process::Stdio::null())
        .status()
        .map_err(|e| format!("install hook {}: {e}", program.display()))?;
    if st.success() {
        Ok(())
    } else {
        Err(format!(
            "install hook {} failed for {serial} ({st})",
            program.display()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ha_mgmt_api::{BannerLevel, ConfigSyncInfo, Forced, MemberInfo, SyncState};

    fn info(members: &[(&str, Mode)]) -> ClusterInfo {
        ClusterInfo {
            fail_soft: false,
            api_version: 1,
            cluster_id: 1,
            me: "A".into(),
            banner: BannerLevel::Ok,
            banner_text: String::new(),
            addresses: Default::default(),
            peers: Vec::new(),
            members: members
                .iter()
                .map(|(s, m)| MemberInfo {
                    serial: s.to_string(),
                    model: String::new(),
                    firmware: "1.0.0".into(),
                    forced: Forced::None,
                    mode: *m,
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
                    config_revision: 0,
                    counters: None,
                })
                .collect(),
        }
    }

    #[test]
    fn passives_first_then_swap_then_the_active() {
        let p = plan(
            &info(&[("A", Mode::Active), ("B", Mode::Passive)]),
            Parts::IMAGE,
        )
        .unwrap();
        assert_eq!(
            p,
            vec![
                Action::Install("B".into()),
                Action::WaitRejoin("B".into()),
                Action::ForcePassive("A".into()),
                Action::WaitTakeover("A".into()),
                Action::Install("A".into()),
                Action::WaitRejoin("A".into()),
                Action::ResetForcing("A".into()),
            ]
        );
    }

    #[test]
    fn each_member_gets_the_parts_asked_for() {
        let i = info(&[("A", Mode::Active), ("B", Mode::Passive)]);
        let both = Parts {
            image: true,
            daemon: true,
        };
        assert_eq!(
            plan(&i, both).unwrap(),
            vec![
                Action::Install("B".into()),
                Action::RestartDaemon("B".into()),
                Action::WaitRejoin("B".into()),
                Action::ForcePassive("A".into()),
                Action::WaitTakeover("A".into()),
                Action::Install("A".into()),
                Action::RestartDaemon("A".into()),
                Action::WaitRejoin("A".into()),
                Action::ResetForcing("A".into()),
            ]
        );
        let daemon = Parts {
            image: false,
            daemon: true,
        };
        assert!(!plan(&i, daemon)
            .unwrap()
            .iter()
            .any(|a| matches!(a, Action::Install(_))));
        let none = Parts {
            image: false,
            daemon: false,
        };
        assert!(matches!(plan(&i, none), Err(UpdateError::Failed(_))));
    }

    #[test]
    fn a_restarted_daemon_is_caught_up_at_99_percent_of_the_actives_table() {
        assert!(caught_up(Some(1_000), Some(1_000)));
        assert!(caught_up(Some(990), Some(1_000)));
        assert!(!caught_up(Some(989), Some(1_000)));
        assert!(!caught_up(None, Some(1_000)), "no report yet");
        assert!(caught_up(Some(0), None), "the active reports none");
        assert!(caught_up(Some(0), Some(0)));
    }

    /// A two-member cluster whose daemons restart: a restarted daemon starts with an empty
    /// table that fills over the polls (the peer's bulk).
    struct Sim {
        active: &'static str,
        forced_passive: Option<String>,
        started: [u64; 2],
        table: [Option<u64>; 2],
        restarts: Vec<String>,
        polls: u32,
    }

    impl Sim {
        fn ix(s: &str) -> usize {
            usize::from(s == "B")
        }
    }

    impl Cluster for Sim {
        fn info(&mut self) -> Result<ClusterInfo, String> {
            let b = if self.active == "A" {
                Mode::Passive
            } else {
                Mode::Active
            };
            let a = if b == Mode::Active {
                Mode::Passive
            } else {
                Mode::Active
            };
            Ok(info(&[("A", a), ("B", b)]))
        }
        fn force_passive(&mut self, serial: &str) -> Result<(), String> {
            self.forced_passive = Some(serial.into());
            self.active = if serial == "A" { "B" } else { "A" };
            Ok(())
        }
        fn reset_forcing(&mut self, _serial: &str) -> Result<(), String> {
            self.forced_passive = None;
            Ok(())
        }
        fn install(&mut self, _serial: &str) -> Result<(), String> {
            Err("no image in this test".into())
        }
        fn restart_daemon(&mut self, serial: &str) -> Result<(), String> {
            assert_ne!(
                serial, self.active,
                "a daemon is replaced only while passive"
            );
            let i = Self::ix(serial);
            self.started[i] += 1_000;
            self.table[i] = None;
            self.restarts.push(serial.into());
            Ok(())
        }
        fn forwarding_of(&mut self, serial: &str) -> Result<ForwardingReport, String> {
            let i = Self::ix(serial);
            Ok(ForwardingReport {
                serial: serial.into(),
                active: serial == self.active,
                domains: if serial == self.active {
                    vec![0]
                } else {
                    Vec::new()
                },
                since_ms: 0,
                changes: 0,
                started_ms: self.started[i],
                now_ms: 0,
                controller_alive: true,
                table_connections: self.table[i],
                peer_table: None,
            })
        }
        fn pause(&mut self) {
            self.polls += 1;
            // The bulk: a restarted daemon's table grows by 400 a poll up to the 1,000.
            for t in &mut self.table {
                *t = Some(t.map_or(0, |n| (n + 400).min(1_000)));
            }
        }
    }

    #[test]
    fn a_daemon_update_waits_for_each_new_daemon_to_hold_the_table() {
        let mut sim = Sim {
            active: "A",
            forced_passive: None,
            started: [1, 1],
            table: [Some(1_000), Some(1_000)],
            restarts: Vec::new(),
            polls: 0,
        };
        let parts = Parts {
            image: false,
            daemon: true,
        };
        let done = run(&mut sim, parts, None, 100, 1, |_| {}).expect("update");
        assert_eq!(sim.restarts, vec!["B".to_string(), "A".to_string()]);
        assert_eq!(done.len(), 7);
        // Each wait saw None, 0, 400, 800, then 1,000: four polls per member.
        assert_eq!(sim.polls, 8);
        assert_eq!(sim.table, [Some(1_000), Some(1_000)]);
        assert_eq!(sim.forced_passive, None);
    }

    #[test]
    fn no_redundancy_no_update() {
        for members in [
            vec![("A", Mode::Active)],
            vec![("A", Mode::Active), ("B", Mode::Unknown)],
            vec![("A", Mode::Active), ("B", Mode::Active)],
            vec![("A", Mode::Passive), ("B", Mode::Passive)],
        ] {
            assert!(
                matches!(
                    plan(&info(&members), Parts::IMAGE),
                    Err(UpdateError::NotRedundant(_))
                ),
                "{members:?}"
            );
        }
    }

    #[test]
    fn waits_check_mode_and_version() {
        let i = info(&[("A", Mode::Active), ("B", Mode::Passive)]);
        assert!(rejoined(&i, "B", None));
        assert!(rejoined(&i, "B", Some("1.0.0")));
        assert!(!rejoined(&i, "B", Some("2.0.0")));
        assert!(!rejoined(&i, "A", None));
        assert!(taken_over(&i, "B"));
        assert!(!taken_over(&i, "A"));
    }

    #[test]
    fn a_member_rejoins_only_once_it_booted_again() {
        let mut i = info(&[("A", Mode::Active), ("B", Mode::Passive)]);
        i.members[1].boot_time = 1_000;
        assert!(!rebooted(&i, "B", Some(1_000)), "the same boot");
        assert!(!rebooted(&i, "B", Some(999)), "within the 1 s uncertainty");
        i.members[1].boot_time = 1_030;
        assert!(rebooted(&i, "B", Some(1_000)));
        // Unknown either side: the passive state decides alone.
        assert!(rebooted(&i, "B", None));
        i.members[1].boot_time = 0;
        assert!(rebooted(&i, "B", Some(1_000)));
        assert_eq!(boot_time_of(&i, "B"), None);
    }
}
