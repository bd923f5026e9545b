//! Where the sync channel's keys come from, and the session counter that makes every
//! session's frames unique.
//!
//! Keys: the main CPU's keyring file ([`ha_persist::KeyringFile`]) that `ha-daemon` writes at
//! every phase of `hactl psk rotate` is the source of truth whenever it exists: [`Keys`]
//! re-reads it at the start of every session, so the service seals, accepts and retires keys
//! in step with the daemon, and a restarted service comes back with the keys the cluster
//! uses. Until the file exists (no rollover ever ran), the key given at start
//! (`--psk-file`/`--key-id`) applies. Without a keyring file the service keeps the
//! in-memory rollover of its own `psk_rotate` requests (lost at a restart).
//!
//! Every key that enters is checked with [`ha_proto::keys::check_strength`]: a weak key is
//! refused with an error that names the problem, never the key.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ha_persist::{BootCounter, KeyringFile};
use ha_proto::keys::{check_strength, KeySet, Keyring, Psk, KEY_LEN};

/// Refuses a weak key; `what` says where it came from.
pub fn check_key(key: &[u8; KEY_LEN], what: &str) -> Result<(), String> {
    check_strength(key).map_err(|w| format!("{what}: {w}; generate one with `hactl psk generate`"))
}

/// Reads a key file (64 hex digits, as `hactl psk generate` writes) that only its owner can
/// access, and refuses a weak key. Errors never contain the key.
pub fn read_key_file(path: &Path) -> Result<Psk, String> {
    ha_persist::read_key_file(path).map_err(|e| e.to_string())
}

/// The keyring a keyring file describes, for `cluster_id`; refuses a weak key in it.
pub fn keyring_from_file(cluster_id: u32, path: &Path) -> Result<Option<Keyring>, String> {
    let Some(f) = KeyringFile::load(path).map_err(|e| format!("keyring file: {e}"))? else {
        return Ok(None);
    };
    let what = format!("keyring file {}", path.display());
    check_key(&f.sealing.1, &what)?;
    let mut ring = Keyring::new(KeySet::derive(&Psk(f.sealing.1), cluster_id, f.sealing.0));
    if let Some((id, k)) = &f.accept {
        check_key(k, &what)?;
        ring.accept(KeySet::derive(&Psk(*k), cluster_id, *id))
            .map_err(|e| format!("{what}: {e}"))?;
    }
    Ok(Some(ring))
}

/// The sync channel's keys of one service.
#[derive(Debug)]
pub struct Keys {
    cluster_id: u32,
    file: Option<PathBuf>,
    ring: Mutex<Keyring>,
}

impl Keys {
    /// Keys that start as `initial` and, when `file` is given, follow that keyring file once
    /// it exists.
    pub fn new(cluster_id: u32, initial: Keyring, file: Option<PathBuf>) -> Keys {
        Keys {
            cluster_id,
            file,
            ring: Mutex::new(initial),
        }
    }

    /// The keyring file followed, if any.
    pub fn file(&self) -> Option<&Path> {
        self.file.as_deref()
    }

    /// The keys for a new session: the keyring file's when it exists (re-read now), else the
    /// current ones. A keyring file that cannot be read or holds a weak key is an error: the
    /// session is refused rather than run with keys the daemon may have retired.
    pub fn current(&self) -> Result<Keyring, String> {
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(path) = &self.file {
            if let Some(from_file) = keyring_from_file(self.cluster_id, path)? {
                *ring = from_file;
            }
        }
        Ok(ring.clone())
    }

    /// The keys as last loaded (no file access), for status reports.
    pub fn snapshot(&self) -> Keyring {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// One step of an in-memory rollover to `psk` under `key_id`, chosen by where the keyring
    /// stands (accept the new key, then seal with it, then retire the old one); returns the
    /// phase reached. Refused when the keys follow a keyring file: `ha-daemon` moves that file,
    /// and this service follows it at every session.
    pub fn rotate_step(&self, psk: &Psk, key_id: u8) -> Result<&'static str, String> {
        if let Some(f) = &self.file {
            return Err(format!(
                "this service follows the keyring file {} that ha-daemon writes at every \
                 phase of the rotation: rotate through the daemons (hactl psk rotate \
                 --member-socket ...)",
                f.display()
            ));
        }
        let mut k = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if k.get(key_id).is_none() {
            k.accept(KeySet::derive(psk, self.cluster_id, key_id))
                .map_err(|e| e.to_string())?;
            Ok("confirming")
        } else if k.sealing().key_id() != key_id {
            k.seal_with(key_id).map_err(|e| e.to_string())?;
            Ok("retiring")
        } else if k.in_rollover() {
            k.retire_previous();
            Ok("done")
        } else {
            Ok("idle")
        }
    }
}

/// The member's session counter: every sync session, in either role, runs in an epoch of its
/// own drawn from it, persisted before use ([`BootCounter`]), so no two sessions of a member
/// ever share one. Frames are bound to the other end's session epoch, so a frame recorded in
/// one session is refused in every other (`stale_binding`), and with the AEAD no nonce is
/// ever reused under a key. Never the clock, and random only for a tool with no state
/// ([`SessionCounter::random`]): a repeated epoch would repeat nonces.
#[derive(Clone, Debug)]
pub struct SessionCounter(Option<BootCounter>);

impl SessionCounter {
    /// The counter kept in `path` (conventionally `<store root>/session-epoch`).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(Some(BootCounter::new(path)))
    }

    /// The counter of the store at `root`.
    pub fn of_store(root: &Path) -> Self {
        Self::new(root.join("session-epoch"))
    }

    /// Random epochs, for a one-shot tool with no state of its own (`hactl cluster enroll`
    /// on a machine not yet provisioned, which seals one frame a session): two enrolments
    /// under the same serial and key share an epoch, and so the nonce of that frame, with a
    /// chance of one in 2^32; what the repeat would expose is the XOR of two `Enroll`
    /// bodies, the echoes of two random session nonces.
    pub fn random() -> Self {
        Self(None)
    }

    /// A new session's epoch (never 0; from a file: never handed out before).
    pub fn next(&self) -> std::io::Result<u32> {
        match &self.0 {
            Some(c) => c.next(),
            None => loop {
                let mut b = [0u8; 4];
                getrandom::fill(&mut b).map_err(|e| std::io::Error::other(e.to_string()))?;
                let n = u32::from_be_bytes(b);
                if n != 0 {
                    return Ok(n);
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn strong(seed: u8) -> [u8; 32] {
        use sha2::Digest;
        sha2::Sha256::digest([b'k', seed]).into()
    }

    fn write_key(p: &Path, k: &[u8; 32]) {
        std::fs::write(p, crate::hex(k)).unwrap();
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600)).unwrap();
    }

    #[test]
    fn weak_keys_are_refused_without_showing_them() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("k");
        write_key(&p, &[0x5a; 32]);
        let e = read_key_file(&p).unwrap_err();
        assert!(e.contains("weak key"), "{e}");
        assert!(!e.contains("5a5a"), "{e}");
        write_key(&p, &strong(1));
        assert_eq!(read_key_file(&p).unwrap().0, strong(1));
        let ring = d.path().join("keyring");
        KeyringFile {
            sealing: (2, strong(2)),
            accept: Some((1, [0; 32])),
        }
        .store(&ring)
        .unwrap();
        let e = keyring_from_file(9, &ring).unwrap_err();
        assert!(e.contains("weak key"), "{e}");
    }

    #[test]
    fn the_keyring_file_wins_once_it_exists() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("keyring");
        let initial = Keyring::new(KeySet::derive(&Psk(strong(1)), 9, 1));
        let keys = Keys::new(9, initial, Some(path.clone()));
        assert_eq!(keys.current().unwrap().sealing().key_id(), 1);
        KeyringFile {
            sealing: (1, strong(1)),
            accept: Some((2, strong(2))),
        }
        .store(&path)
        .unwrap();
        let k = keys.current().unwrap();
        assert_eq!((k.sealing().key_id(), k.previous_key_id()), (1, Some(2)));
        KeyringFile {
            sealing: (2, strong(2)),
            accept: None,
        }
        .store(&path)
        .unwrap();
        let k = keys.current().unwrap();
        assert_eq!((k.sealing().key_id(), k.previous_key_id()), (2, None));
        assert!(keys.rotate_step(&Psk(strong(3)), 3).is_err());
    }

    #[test]
    fn session_epochs_never_repeat() {
        let d = tempfile::tempdir().unwrap();
        let c = SessionCounter::of_store(d.path());
        let a = c.next().unwrap();
        let b = SessionCounter::of_store(d.path()).next().unwrap();
        assert!(a >= 1 && b > a);
    }
}
