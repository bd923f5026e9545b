//! `hactl reload` on this member (SPEC E2 "reload HA settings"): the configuration block is
//! read again, checked as the controller's firmware would check it, compared with the block
//! the controller runs, and the HA settings go to the controller (`HostMsg::Settings`),
//! which applies them in place, without a restart or a swap, and confirms with a status
//! carrying the new revision. What a running member cannot take (serial, cluster id, key,
//! state-sync port, the domain list, the member list) is refused with the command that does
//! it, and nothing changes. The daemon's own configuration file is read again too: the
//! monitored interfaces (names, weights, aggregates) apply at once (the host loop reports
//! them to the controller, whose quality factor follows); other changed settings are named
//! as pending until the daemon restarts.

use std::time::{Duration, Instant};

use ha_mgmt_api::{ErrorCode, ReloadReport, Reply};
use ha_persist::block_diff::{describe_changes, needs_other_command};
use ha_persist::read_block;
use ha_proto::config_block::ConfigBlock;
use ha_proto::msg::host::HostMsg;

use super::{err, MgmtServer};
use crate::config::DaemonConfig;
use crate::runtime::{unix_ms, Shared};

/// Times the settings are sent when the controller's confirmation does not come: the host
/// link may lose a frame.
const SEND_ATTEMPTS: u32 = 3;
/// How long one attempt waits for the confirming status.
const ATTEMPT_WAIT: Duration = Duration::from_millis(1_000);

/// The configuration revision the controller last reported for this member.
fn running_revision(s: &Shared) -> Option<u64> {
    s.status
        .as_ref()
        .and_then(|(r, _)| r.members.iter().find(|m| m.local))
        .map(|m| m.config_revision)
}

impl MgmtServer {
    /// Reloads the HA settings from the configuration block and the monitored interfaces
    /// from the daemon's configuration file (see the module). Both files are read and
    /// checked before anything is applied: a broken one changes nothing.
    pub(super) fn reload(&self) -> Reply {
        let daemon = match self.read_daemon_config() {
            Ok(d) => d,
            Err(reply) => return *reply,
        };
        let Some(path) = self.block_path.clone() else {
            return err(
                ErrorCode::Unsupported,
                "this daemon runs without a configuration block: nothing to reload",
            );
        };
        let new = match read_block(&path) {
            Ok(b) => b,
            Err(e) => {
                return err(
                    ErrorCode::Refused,
                    format!("{e}; the running settings stay"),
                )
            }
        };
        if let Err(e) = ha_agent::config::firmware_accepts(&new) {
            return err(
                ErrorCode::Refused,
                format!(
                    "{}: the controller would refuse it ({e}); the running settings stay",
                    path.display()
                ),
            );
        }
        let old = self.applied_block();
        let mut changes = match &old {
            Some(old) => {
                if let Some(why) = needs_other_command(old, &new) {
                    return err(ErrorCode::Refused, format!("{why}; nothing was reloaded"));
                }
                describe_changes(old, &new)
            }
            None => vec!["every HA setting (the running block was not known)".into()],
        };
        let previous = match self.fresh_status() {
            Ok((r, _)) => r
                .members
                .iter()
                .find(|m| m.local)
                .map_or(0, |m| m.config_revision),
            Err(reply) => return *reply,
        };
        if let Err(reply) = self.apply_settings(&new) {
            return *reply;
        }
        self.set_applied_block(new.clone());
        let mut pending_restart = Vec::new();
        if let Some((cfg, applied, later)) = daemon {
            if !applied.is_empty() {
                self.shared().monitor_update = Some(cfg.monitor.clone());
                // The host loop takes it within a tick and reports the interfaces at once.
                let taken = self.wait_for(|s| s.monitor_update.is_none());
                changes.extend(applied);
                if !taken {
                    changes.push(
                        "(the monitored interfaces reach the controller when the host link is \
                         back)"
                            .into(),
                    );
                }
            }
            pending_restart = later.into_iter().map(str::to_string).collect();
            if let Some(running) = &self.daemon_cfg {
                // Only the monitored interfaces took effect: the rest stays pending.
                running.lock().unwrap_or_else(|p| p.into_inner()).monitor = cfg.monitor;
            }
        }
        Reply::Reloaded(ReloadReport {
            revision: new.revision(),
            previous_revision: previous,
            changes,
            pending_restart,
        })
    }

    /// The daemon's configuration file read again, with what reloading it changes now and
    /// what only at the next restart; `None` when the daemon did not start from a file.
    #[allow(clippy::type_complexity)]
    fn read_daemon_config(
        &self,
    ) -> Result<Option<(DaemonConfig, Vec<String>, Vec<&'static str>)>, Box<Reply>> {
        let Some(running) = &self.daemon_cfg else {
            return Ok(None);
        };
        let running = running.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let Some(path) = running.source.clone() else {
            return Ok(None);
        };
        let new = DaemonConfig::load(&path).map_err(|e| {
            Box::new(err(
                ErrorCode::Refused,
                format!("daemon configuration: {e}; nothing was reloaded"),
            ))
        })?;
        let (applied, later) = running.reload_plan(&new);
        Ok(Some((new, applied, later)))
    }

    /// Sends `block`'s HA settings to the controller and waits until its status reports the
    /// block's revision, sending again when no answer comes ([`SEND_ATTEMPTS`]); a
    /// `settings_refused` event from the controller ends the wait with its reason.
    pub(super) fn apply_settings(&self, block: &ConfigBlock) -> Result<(), Box<Reply>> {
        let want = block.revision();
        for _ in 0..SEND_ATTEMPTS {
            let sent = unix_ms();
            self.send(HostMsg::Settings(block.settings()))?;
            let refused = |s: &Shared| {
                s.events
                    .iter()
                    .rev()
                    .take_while(|(_, t)| *t >= sent)
                    .find(|(e, _)| e.name.as_str() == "settings_refused")
                    .map(|(e, _)| e.detail.as_str().to_string())
            };
            let answered = |s: &Shared| running_revision(s) == Some(want) || refused(s).is_some();
            self.wait_until(Instant::now() + ATTEMPT_WAIT, answered);
            let sh = self.shared();
            if let Some(why) = refused(&sh) {
                return Err(Box::new(err(
                    ErrorCode::Refused,
                    format!("the management controller refused the settings: {why}"),
                )));
            }
            if running_revision(&sh) == Some(want) {
                return Ok(());
            }
        }
        Err(Box::new(err(
            ErrorCode::Unreachable,
            format!(
                "the management controller did not confirm revision {want:016x} after \
                 {SEND_ATTEMPTS} attempts (a firmware older than reload does not know the \
                 message: update it first); the settings it runs are unchanged as far as \
                 this daemon knows"
            ),
        )))
    }
}
