//! PSK rollover on this member (SPEC A4): one phase per request, confirmed by the
//! controller, followed by the state-sync keys, and the completed key persisted in the
//! configuration block.

use std::path::{Path, PathBuf};

use ha_mgmt_api::*;
use ha_proto::msg::host::{HostMsg, WirePsk};

use super::{err, Confirm, MgmtServer};
use crate::runtime::unix_ms;
use crate::synckeys::KeyPhase;
use ha_persist::{read_block, write_block};

/// Reads a PSK file ([`ha_persist::read_key_file`]: 64 hex digits, mode 0600 or stricter,
/// the one strength rule).
pub fn read_psk_file(path: &Path) -> Result<[u8; 32], String> {
    ha_persist::read_key_file(path)
        .map(|k| k.0)
        .map_err(|e| e.to_string())
}

/// Rewrites the configuration block at `path` with `psk` under `key_id`, everything else
/// unchanged ([`update_block`]: atomic; a block that does not decode is left alone).
pub fn persist_key(path: &Path, psk: &[u8; 32], key_id: u8) -> Result<(), String> {
    let psk = *psk;
    update_block(path, move |b| {
        b.psk = ha_proto::keys::Psk(psk);
        b.key_id = key_id;
    })
}

/// Rewrites the configuration block at `path` changed by `change`, atomically (see
/// [`write_block`]); a block that does not decode, or an invalid result, leaves it alone.
pub fn update_block(
    path: &Path,
    change: impl FnOnce(&mut ha_proto::config_block::ConfigBlock),
) -> Result<(), String> {
    let mut block = read_block(path)?;
    change(&mut block);
    write_block(path, &block)
}

impl MgmtServer {
    /// Moves the state-sync keys (keyring file, then engine) through the phase the
    /// controller just confirmed, and says so in the event log. On failure the rotation
    /// stops here with an error: the next phase on the peers would otherwise cut this
    /// member's state sync off (a retry catches up, see [`crate::synckeys`]).
    pub(super) fn follow_sync_keys(
        &self,
        phase: KeyPhase,
        key_id: u8,
        psk: &[u8; 32],
    ) -> Result<(), Box<Reply>> {
        let Some(hook) = &self.sync_keys else {
            return Ok(());
        };
        let result = hook(phase, key_id, psk);
        let detail = match &result {
            Ok(line) => line.clone(),
            Err(e) => format!(
                "state-sync keys did NOT follow {} key id {key_id}: {e}",
                phase.name()
            ),
        };
        if result.is_err() {
            eprintln!("ha-daemon: {detail}");
        }
        self.shared().push_local_event(ha_mgmt_api::Event {
            time_ms: unix_ms(),
            kind: ha_mgmt_api::EventKind::KeyRotation,
            member: None,
            detail: detail.clone(),
            seq: None,
        });
        result
            .map(|_| ())
            .map_err(|_| Box::new(err(ErrorCode::Internal, detail)))
    }

    /// Saves the rolled-over key in the configuration block, and says so in the event log
    /// (or why it could not).
    pub(super) fn persist_rotated_key(&self, psk: &[u8; 32], key_id: u8) {
        let Some(path) = &self.block_path else { return };
        let detail = match persist_key(path, psk, key_id) {
            Ok(()) => {
                if let Some(mut b) = self.applied_block() {
                    b.psk = ha_proto::keys::Psk(*psk);
                    b.key_id = key_id;
                    self.set_applied_block(b);
                }
                format!(
                    "key id {key_id} saved in the configuration block {}",
                    path.display()
                )
            }
            Err(e) => {
                let msg = format!(
                    "key id {key_id} NOT saved in the configuration block ({e}): a restart of \
                     this member would come back with the old key; re-provision it"
                );
                eprintln!("ha-daemon: {msg}");
                msg
            }
        };
        self.shared().push_local_event(ha_mgmt_api::Event {
            time_ms: unix_ms(),
            kind: ha_mgmt_api::EventKind::KeyRotation,
            member: None,
            detail,
            seq: None,
        });
    }

    pub(super) fn rotate_status(&self) -> Reply {
        let sh = self.shared();
        let me = sh.serial.as_str().to_string();
        match &sh.key_state {
            // Unknown is not "key 0": say so (the controller reports its keys when the host
            // link comes up).
            None => err(
                ErrorCode::Unreachable,
                format!("{me}: the management controller has not reported its keys yet"),
            ),
            Some((sealing, accepted)) => {
                let other = accepted.iter().copied().find(|k| k != sealing);
                Reply::Rotate(RotateReport {
                    phase: if other.is_some() {
                        "confirming"
                    } else {
                        "idle"
                    }
                    .into(),
                    sealing_key_id: *sealing,
                    previous_key_id: other,
                    confirmed: vec![me],
                    pending: Vec::new(),
                })
            }
        }
    }

    /// One step of this member's PSK rollover, chosen by where its controller stands:
    /// key not accepted yet → phase 1 (InstallKey, AEAD); accepted but not sealing → phase 2
    /// (UseKey); sealing with it while another is accepted → phase 3 (RetireKey). Every step
    /// waits for the controller's KeyState. The operator (or `hactl`) runs each phase on every
    /// member before the next phase anywhere, so no member ever seals with a key a peer does
    /// not accept.
    pub(super) fn psk_rotate(&self, psk_file: &str, key_id: u8) -> Reply {
        let psk = match read_psk_file(&PathBuf::from(psk_file)) {
            Ok(p) => p,
            Err(e) => return err(ErrorCode::BadRequest, e),
        };
        let state = self.shared().key_state.clone();
        let (msg, phase, confirm, key_phase): (HostMsg, &str, Confirm, KeyPhase) = match state {
            Some((sealing, accepted)) if sealing == key_id && accepted.len() == 1 => {
                return self.rotate_status();
            }
            Some((sealing, _)) if sealing == key_id => (
                HostMsg::RetireKey { key_id },
                "done",
                Box::new(move |s| {
                    s.key_state
                        .as_ref()
                        .is_some_and(|(k, a)| *k == key_id && a.len() == 1)
                }),
                KeyPhase::Retire,
            ),
            Some((_, accepted)) if accepted.contains(&key_id) => (
                HostMsg::UseKey { key_id },
                "retiring",
                Box::new(move |s| s.key_state.as_ref().is_some_and(|(k, _)| *k == key_id)),
                KeyPhase::Use,
            ),
            _ => (
                HostMsg::InstallKey {
                    key_id,
                    psk: WirePsk(psk),
                },
                "confirming",
                Box::new(move |s| {
                    s.key_state
                        .as_ref()
                        .is_some_and(|(_, a)| a.contains(&key_id))
                }),
                KeyPhase::Install,
            ),
        };
        if let Err(e) = self.send(msg) {
            return *e;
        }
        if !self.wait_for(confirm) {
            return err(
                ErrorCode::Unreachable,
                "the management controller did not confirm the key step",
            );
        }
        if let Err(reply) = self.follow_sync_keys(key_phase, key_id, &psk) {
            return *reply;
        }
        if phase == "done" {
            self.persist_rotated_key(&psk, key_id);
        }
        match self.rotate_status() {
            Reply::Rotate(mut r) => {
                r.phase = phase.into();
                Reply::Rotate(r)
            }
            other => other,
        }
    }
}
