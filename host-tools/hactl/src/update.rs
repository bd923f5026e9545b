//! Rolling update (`hactl update`, SPEC E5): every passive member first, each waited for
//! until it is back as a healthy passive; then the active member is forced passive so that an
//! updated member takes over; then it is updated, waited for, and its forcing removed.
//!
//! [`plan`] turns the cluster's status into the list of [`Action`]s (sans-IO, from one
//! [`ClusterInfo`]); [`run`] carries them out over a [`Cluster`] (the members' daemons and the
//! site's install hook in `hactl`, a simulated cluster in tests), polling the status while it
//! waits. A member is never updated while it is active, and nothing starts unless the cluster
//! is redundant (exactly one active member, every other one passive).

use ha_mgmt_api::{ClusterInfo, Mode};

/// One step of a rolling update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Install the image on this member (it restarts).
    Install(String),
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

/// The update's steps for the cluster as `info` shows it.
pub fn plan(info: &ClusterInfo) -> Result<Vec<Action>, UpdateError> {
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
    let mut out = Vec::new();
    for p in passives {
        out.push(Action::Install(p.to_string()));
        out.push(Action::WaitRejoin(p.to_string()));
    }
    out.push(Action::ForcePassive(active.to_string()));
    out.push(Action::WaitTakeover(active.to_string()));
    out.push(Action::Install(active.to_string()));
    out.push(Action::WaitRejoin(active.to_string()));
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
    /// Waits one poll interval.
    fn pause(&mut self);
}

/// Carries out the update; `max_polls` bounds each wait, `on_action` is told of each step
/// as it starts. A member that must rejoin must also have been seen stable (passive) on
/// `settle_polls` consecutive polls.
pub fn run<C: Cluster>(
    cluster: &mut C,
    version: Option<&str>,
    max_polls: u32,
    settle_polls: u32,
    mut on_action: impl FnMut(&Action),
) -> Result<Vec<Action>, UpdateError> {
    let info = cluster.info().map_err(UpdateError::Failed)?;
    let actions = plan(&info)?;
    // Boot time of each member before its install, when its daemon reports one: a member
    // has rejoined only once it booted again (a status from before the restart does not
    // count).
    let mut booted_before: Vec<(String, u64)> = Vec::new();
    for a in &actions {
        on_action(a);
        match a {
            Action::Install(s) => {
                if let Some(b) = cluster.info_of(s).ok().and_then(|i| boot_time_of(&i, s)) {
                    booted_before.push((s.clone(), b));
                }
                cluster.install(s).map_err(UpdateError::Failed)?
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
                            cluster.info_of(s).ok().is_some_and(|i| {
                                rejoined(&i, s, version) && rebooted(&i, s, before)
                            })
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
        let p = plan(&info(&[("A", Mode::Active), ("B", Mode::Passive)])).unwrap();
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
    fn no_redundancy_no_update() {
        for members in [
            vec![("A", Mode::Active)],
            vec![("A", Mode::Active), ("B", Mode::Unknown)],
            vec![("A", Mode::Active), ("B", Mode::Active)],
            vec![("A", Mode::Passive), ("B", Mode::Passive)],
        ] {
            assert!(
                matches!(plan(&info(&members)), Err(UpdateError::NotRedundant(_))),
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
