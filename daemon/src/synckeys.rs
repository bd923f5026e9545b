//! The main CPU's state-sync keys through PSK rollovers (defect 4 of "Reliability and
//! security"): the keyring file `<state_dir>/keyring` ([`ha_persist::KeyringFile`]) and the
//! steps that move it, and the sync engine's keyring with it, through the phases of
//! `hactl psk rotate`.
//!
//! The management controller keeps its own keys; this member's daemon is told each phase by
//! the management API (`psk_rotate`) once the controller confirmed it, and then
//! 1. computes the keyring file's next content ([`SyncKeys::follow`]), with the primitive
//!    steps that lead there ([`KeyStep`]);
//! 2. writes the file (atomically, 0600);
//! 3. applies the same steps to the sync engine.
//!
//! At start the engine's keyring comes from the file when it exists (a restart after a
//! rotation comes back with the keys the cluster uses), else from the configuration block.
//! A phase that arrives out of order (a retried request after a lost reply) first catches up
//! with the phases before it, from the PSK the request carries.

use std::path::{Path, PathBuf};

use ha_persist::KeyringFile;
use ha_proto::config_block::ConfigBlock;
use ha_proto::keys::{KeySet, Keyring, Psk};

/// Name of the keyring file in the daemon's state directory.
pub const KEYRING_FILE: &str = "keyring";

/// A phase of `hactl psk rotate`, as the controller confirmed it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyPhase {
    /// Phase 1: the new key is accepted too.
    Install,
    /// Phase 2: frames are sealed with the new key.
    Use,
    /// Phase 3: only the new key is accepted.
    Retire,
}

impl KeyPhase {
    /// A short name for the event log.
    pub fn name(self) -> &'static str {
        match self {
            KeyPhase::Install => "accept",
            KeyPhase::Use => "seal with",
            KeyPhase::Retire => "retire all but",
        }
    }
}

/// One change of a keyring, applied the same way to the file and to the engine.
#[derive(Clone, Debug)]
pub enum KeyStep {
    /// Accept the set derived from `psk` under `key_id` besides the sealing one.
    Accept {
        /// Key id.
        key_id: u8,
        /// The new PSK (wiped when the step is dropped; `Debug` never shows it).
        psk: Psk,
    },
    /// Seal with the accepted `key_id`.
    SealWith(u8),
    /// Accept only the sealing key.
    Retire,
}

/// The state-sync keys of this member: where the keyring file lives, and its content.
#[derive(Debug)]
pub struct SyncKeys {
    path: PathBuf,
    cluster_id: u32,
    file: KeyringFile,
    /// Whether the content came from the file (else from the block, not written yet).
    from_file: bool,
}

impl SyncKeys {
    /// The keys of a member provisioned with `block` whose state directory is `state_dir`:
    /// the keyring file when present, else the block's key. A keyring file that cannot be
    /// read, is readable by others, or is malformed is an error (the daemon does not start
    /// with keys it cannot trust).
    pub fn load(state_dir: &Path, block: &ConfigBlock) -> Result<SyncKeys, String> {
        let path = state_dir.join(KEYRING_FILE);
        let loaded = KeyringFile::load(&path).map_err(|e| e.to_string())?;
        let from_file = loaded.is_some();
        let file = loaded.unwrap_or_else(|| KeyringFile {
            sealing: (block.key_id, block.psk.0),
            accept: None,
        });
        Ok(SyncKeys {
            path,
            cluster_id: block.cluster_id,
            file,
            from_file,
        })
    }

    /// Where the keyring file is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the keys came from the keyring file.
    pub fn from_file(&self) -> bool {
        self.from_file
    }

    /// Key ids: sealing, and the other one accepted during a rollover.
    pub fn key_ids(&self) -> (u8, Option<u8>) {
        (self.file.sealing.0, self.file.accept.as_ref().map(|a| a.0))
    }

    /// Whether the keys hold the block's key (same id and PSK), sealing or accepted; a
    /// keyring file without it was written before the block was re-provisioned.
    pub fn holds(&self, block: &ConfigBlock) -> bool {
        let k = (block.key_id, block.psk.0);
        self.file.sealing == k || self.file.accept.as_ref() == Some(&k)
    }

    /// The state-sync keyring these keys make.
    pub fn keyring(&self) -> Keyring {
        let derive = |(id, psk): &(u8, [u8; 32])| KeySet::derive(&Psk(*psk), self.cluster_id, *id);
        let mut ring = Keyring::new(derive(&self.file.sealing));
        if let Some(a) = &self.file.accept {
            // A file with two sets of one id is refused by KeyringFile::load.
            let _ = ring.accept(derive(a));
        }
        ring
    }

    /// Moves the keys through `phase` of a rollover to `key_id` (the new key `psk`): the
    /// file is rewritten when anything changed, and the steps applied are returned, for the
    /// engine to take the same ones. Nothing changes when the file cannot be written.
    pub fn follow(
        &mut self,
        phase: KeyPhase,
        key_id: u8,
        psk: &[u8; 32],
    ) -> Result<Vec<KeyStep>, String> {
        let (next, steps) = plan(&self.file, phase, key_id, psk);
        if !steps.is_empty() || !self.from_file {
            next.store(&self.path)
                .map_err(|e| format!("{}: {e}", self.path.display()))?;
            self.from_file = true;
        }
        self.file = next;
        Ok(steps)
    }
}

/// The keyring file after `phase`, and the steps from `cur` to it.
fn plan(
    cur: &KeyringFile,
    phase: KeyPhase,
    key_id: u8,
    psk: &[u8; 32],
) -> (KeyringFile, Vec<KeyStep>) {
    let mut next = cur.clone();
    let mut steps = Vec::new();
    if next.sealing.0 != key_id {
        if next.accept.as_ref().map(|a| a.0) != Some(key_id) {
            next.accept = Some((key_id, *psk));
            steps.push(KeyStep::Accept {
                key_id,
                psk: Psk(*psk),
            });
        }
        if phase != KeyPhase::Install {
            let new = next.accept.take().unwrap_or((key_id, *psk));
            next.accept = Some(std::mem::replace(&mut next.sealing, new));
            steps.push(KeyStep::SealWith(key_id));
        }
    }
    if phase == KeyPhase::Retire && next.accept.is_some() {
        next.accept = None;
        steps.push(KeyStep::Retire);
    }
    (next, steps)
}

#[cfg(test)]
mod tests;
