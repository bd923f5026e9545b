//! State that must survive a restart of a main-CPU program, written atomically: a crash at
//! any instant leaves either the old content or the new one, never a mix or nothing.
//!
//! - [`write_atomic`]: a new file beside the target, written and synced, renamed over it, the
//!   directory synced;
//! - [`BootCounter`]: the persistent boot counter a process sends as its boot epoch (the
//!   main CPU's daemon; under QEMU, the emulated controller's "flash" counter). Never the
//!   clock: a restart in the same second or after a clock step would reuse or lower an
//!   epoch, and peers would take the new process for a replay (and with the AEAD, nonces
//!   would repeat).
#![warn(missing_docs)]

pub mod block_diff;

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// Writes `bytes` to `path` with permissions `mode`, atomically (see the crate docs). The
/// file has its final mode from its creation: it is never readable by others, not even
/// while being written.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a file path", path.display()),
        )
    })?;
    let tmp = path.with_file_name(format!(".{}.new", name.to_string_lossy()));
    let write = || -> io::Result<()> {
        let mut f = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    };
    write().inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A boot counter kept in a file: [`BootCounter::next`] returns a number larger than every
/// one it returned before for the same file, across restarts, crashes and clock steps.
#[derive(Clone, Debug)]
pub struct BootCounter {
    path: PathBuf,
}

impl BootCounter {
    /// The counter stored at `path` (created on first use, with its directory).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// Where the counter lives.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last value handed out, if any (a missing file is `None`; a damaged one an error,
    /// never silently zero: restarting from 1 would reuse epochs).
    pub fn current(&self) -> io::Result<Option<u32>> {
        let mut text = String::new();
        match File::open(&self.path) {
            Ok(mut f) => {
                f.read_to_string(&mut text)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        }
        text.trim().parse::<u32>().map(Some).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{}: boot counter is not a number ({:?}); refusing to guess (a reused boot epoch is a replay)",
                    self.path.display(),
                    text.trim()
                ),
            )
        })
    }

    /// Increments the counter and returns the new value (1 on first use), persisted before
    /// it is returned. Concurrent callers on the same file (two processes starting at once)
    /// get different values: the update runs under an exclusive lock.
    pub fn next(&self) -> io::Result<u32> {
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let lock_path = self.path.with_extension("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o600)
            .open(&lock_path)?;
        let _guard = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusive)
            .map_err(|(_, e)| io::Error::from(e))?;
        let next = match self.current()? {
            None => 1,
            Some(u32::MAX) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{}: boot counter exhausted", self.path.display()),
                ))
            }
            Some(n) => n + 1,
        };
        write_atomic(&self.path, format!("{next}\n").as_bytes(), 0o600)?;
        Ok(next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn counter_grows_across_instances_and_refuses_damage() {
        let dir = tempfile::tempdir().unwrap();
        let c = BootCounter::new(dir.path().join("state/boot-counter"));
        assert_eq!(c.current().unwrap(), None);
        assert_eq!(c.next().unwrap(), 1);
        assert_eq!(c.next().unwrap(), 2);
        // A new process reads the same file.
        assert_eq!(BootCounter::new(c.path()).next().unwrap(), 3);
        let mode = std::fs::metadata(c.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        std::fs::write(c.path(), "garbage").unwrap();
        assert!(c.next().is_err());
        assert_eq!(std::fs::read_to_string(c.path()).unwrap(), "garbage");
    }

    #[test]
    fn concurrent_starts_get_distinct_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("boot-counter");
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let p = path.clone();
                std::thread::spawn(move || {
                    (0..20)
                        .map(|_| BootCounter::new(&p).next().unwrap())
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let mut all: Vec<u32> = handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect();
        all.sort();
        assert_eq!(all, (1..=160).collect::<Vec<_>>());
    }

    #[test]
    fn atomic_write_has_its_mode_from_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("block.cfg");
        write_atomic(&p, b"one", 0o600).unwrap();
        write_atomic(&p, b"two", 0o600).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(write_atomic(Path::new("/"), b"x", 0o600).is_err());
    }
}

/// The main CPU's channel keys (state sync, configuration sync) during and between PSK
/// rollovers, in one file that every main-CPU process follows.
///
/// The management controller keeps its own keys (it is told each rollover phase on the host
/// link). On the main CPU, the daemon writes this file at every phase of `hactl psk rotate`
/// (accept the new key, seal with it, retire the old one) and the daemon's sync engine and
/// the configuration-sync service take their keyrings from it, so that after a rotation the
/// old key opens nothing on any channel and a restarted process comes back with the keys the
/// cluster uses. The file is `0600`, written atomically; its text is
///
/// ```text
/// sealing <key id> <64 hex digits>
/// accept <key id> <64 hex digits>     (only during a rollover)
/// ```
///
/// `Debug` never shows key bytes; they are wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct KeyringFile {
    /// Key id and PSK frames are sealed with.
    pub sealing: (u8, [u8; 32]),
    /// The other key id and PSK accepted during a rollover.
    pub accept: Option<(u8, [u8; 32])>,
}

impl std::fmt::Debug for KeyringFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyringFile")
            .field("sealing_key_id", &self.sealing.0)
            .field("accept_key_id", &self.accept.as_ref().map(|a| a.0))
            .finish_non_exhaustive()
    }
}

impl Drop for KeyringFile {
    fn drop(&mut self) {
        use zeroize::Zeroize;
        self.sealing.1.zeroize();
        if let Some((_, k)) = self.accept.as_mut() {
            k.zeroize();
        }
    }
}

fn hex(k: &[u8; 32]) -> String {
    k.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

impl KeyringFile {
    /// Reads the file at `path`: `Ok(None)` when it does not exist (no rollover ever ran:
    /// the configuration block's key applies). A file readable by group or others, or a
    /// malformed one, is an error naming the problem and never the key.
    pub fn load(path: &Path) -> io::Result<Option<KeyringFile>> {
        use std::os::unix::fs::PermissionsExt;
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mode = std::fs::metadata(path)?.permissions().mode();
        let bad = |why: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: {why}", path.display()),
            )
        };
        if mode & 0o077 != 0 {
            return Err(bad(
                "keyring file is accessible by group or others; chmod 600 it",
            ));
        }
        let mut sealing = None;
        let mut accept = None;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let mut parts = line.split_whitespace();
            let (kind, id, key) = (parts.next(), parts.next(), parts.next());
            let id: u8 = id
                .and_then(|i| i.parse().ok())
                .ok_or_else(|| bad("a line without a valid key id"))?;
            let key = key
                .and_then(unhex)
                .ok_or_else(|| bad("a key that is not 64 hex digits"))?;
            match kind {
                Some("sealing") if sealing.is_none() => sealing = Some((id, key)),
                Some("accept") if accept.is_none() => accept = Some((id, key)),
                _ => return Err(bad("unexpected line (sealing, then at most one accept)")),
            }
        }
        let sealing = sealing.ok_or_else(|| bad("no sealing key"))?;
        if accept
            .as_ref()
            .is_some_and(|a: &(u8, [u8; 32])| a.0 == sealing.0)
        {
            return Err(bad("the accepted key has the sealing key's id"));
        }
        Ok(Some(KeyringFile { sealing, accept }))
    }

    /// Writes the file atomically with mode `0600`.
    pub fn store(&self, path: &Path) -> io::Result<()> {
        let mut text = format!("sealing {} {}\n", self.sealing.0, hex(&self.sealing.1));
        if let Some((id, k)) = &self.accept {
            text.push_str(&format!("accept {id} {}\n", hex(k)));
        }
        write_atomic(path, text.as_bytes(), 0o600)
    }
}

#[cfg(test)]
mod keyring_tests {
    use super::*;

    #[test]
    fn keyring_file_round_trips_and_refuses_bad_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("keyring");
        assert_eq!(KeyringFile::load(&p).unwrap(), None);
        let k = KeyringFile {
            sealing: (2, [7; 32]),
            accept: Some((1, [9; 32])),
        };
        k.store(&p).unwrap();
        assert_eq!(KeyringFile::load(&p).unwrap(), Some(k.clone()));
        assert!(!format!("{k:?}").contains("07"));
        for bad in [
            "accept 1 00\n",
            "sealing x 0707070707070707070707070707070707070707070707070707070707070707\n",
            "sealing 1 0707070707070707070707070707070707070707070707070707070707070707\naccept 1 0707070707070707070707070707070707070707070707070707070707070707\n",
        ] {
            write_atomic(&p, bad.as_bytes(), 0o600).unwrap();
            assert!(KeyringFile::load(&p).is_err(), "{bad}");
        }
        write_atomic(
            &p,
            b"sealing 1 0707070707070707070707070707070707070707070707070707070707070707\n",
            0o644,
        )
        .unwrap();
        assert!(KeyringFile::load(&p).is_err());
    }
}

/// Why a key file was refused. The message names the file and the problem, never the key.
#[derive(Debug)]
pub enum KeyFileError {
    /// The file cannot be read.
    Io(PathBuf, io::Error),
    /// Group or others may access it.
    Permissions(PathBuf),
    /// Not 64 hex digits.
    Format(PathBuf),
    /// The key fails the one strength rule.
    Weak(PathBuf, ha_proto::keys::WeakKey),
}

impl std::fmt::Display for KeyFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyFileError::Io(p, e) => write!(f, "key file {}: {e}", p.display()),
            KeyFileError::Permissions(p) => write!(
                f,
                "key file {} is accessible by group or others; chmod 600 it",
                p.display()
            ),
            KeyFileError::Format(p) => write!(
                f,
                "{} is not a key file (64 hex digits expected; see hactl psk generate)",
                p.display()
            ),
            KeyFileError::Weak(p, w) => write!(f, "key file {}: {w}", p.display()),
        }
    }
}

impl std::error::Error for KeyFileError {}

/// Parses 64 hex digits, optionally surrounded by whitespace, into a key (no strength check).
pub fn parse_key(text: &[u8]) -> Option<ha_proto::keys::Psk> {
    let t = text.trim_ascii();
    if t.len() != 64 {
        return None;
    }
    let mut psk = ha_proto::keys::Psk([0u8; 32]);
    for (i, pair) in t.chunks_exact(2).enumerate() {
        let s = std::str::from_utf8(pair).ok()?;
        psk.0[i] = u8::from_str_radix(s, 16).ok()?;
    }
    Some(psk)
}

/// Reads a cluster key file (64 hex digits, as `hactl psk generate` writes) that only its
/// owner can access, and applies the one strength rule ([`ha_proto::keys::check_strength`]):
/// every program that takes a key from a file goes through here.
pub fn read_key_file(path: &Path) -> Result<ha_proto::keys::Psk, KeyFileError> {
    use std::os::unix::fs::PermissionsExt;
    use zeroize::Zeroize;
    let p = || path.to_path_buf();
    let meta = std::fs::metadata(path).map_err(|e| KeyFileError::Io(p(), e))?;
    if meta.permissions().mode() & 0o077 != 0 {
        return Err(KeyFileError::Permissions(p()));
    }
    let mut text = std::fs::read(path).map_err(|e| KeyFileError::Io(p(), e))?;
    let psk = parse_key(&text);
    text.zeroize();
    let psk = psk.ok_or_else(|| KeyFileError::Format(p()))?;
    psk.check_strength()
        .map_err(|w| KeyFileError::Weak(p(), w))?;
    Ok(psk)
}

#[cfg(test)]
mod key_file_tests {
    use super::*;

    #[test]
    fn key_files_are_checked_for_mode_format_and_strength() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k");
        let good = "4fccc60fa96488d0d9023fdaf60c0279fe12d7c2c063e5092a39a9bb4ff9bcdd\n";
        write_atomic(&p, good.as_bytes(), 0o600).unwrap();
        assert_eq!(read_key_file(&p).unwrap().0[0], 0x4f);
        write_atomic(&p, good.as_bytes(), 0o640).unwrap();
        assert!(matches!(
            read_key_file(&p),
            Err(KeyFileError::Permissions(_))
        ));
        write_atomic(&p, b"abc", 0o600).unwrap();
        assert!(matches!(read_key_file(&p), Err(KeyFileError::Format(_))));
        let weak = format!("{}01\n", "0".repeat(62));
        write_atomic(&p, weak.as_bytes(), 0o600).unwrap();
        let e = read_key_file(&p).unwrap_err();
        assert!(matches!(e, KeyFileError::Weak(..)));
        assert!(!e.to_string().contains("0001"), "{e}");
        let pattern = "0123456789abcdef".repeat(4);
        write_atomic(&p, pattern.as_bytes(), 0o600).unwrap();
        assert!(matches!(read_key_file(&p), Err(KeyFileError::Weak(..))));
    }
}

/// Reads and decodes (integrity digest and every field checked) the configuration block
/// image at `path`: the member's flash block as `hactl provision` writes it.
pub fn read_block(path: &Path) -> Result<ha_proto::config_block::ConfigBlock, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    ha_proto::config_block::ConfigBlock::decode(&bytes)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// Writes `block` as the flash image at `path` (mode 0600, [`write_atomic`]): a crash leaves
/// either the old block or the new one. An invalid block is refused before anything is
/// written.
pub fn write_block(path: &Path, block: &ha_proto::config_block::ConfigBlock) -> Result<(), String> {
    use ha_proto::config_block::{BLOCK_SIZE, ERASED};
    let mut img = zeroize::Zeroizing::new(vec![ERASED; BLOCK_SIZE]);
    block
        .encode(&mut img)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    write_atomic(path, &img, 0o600).map_err(|e| format!("{}: {e}", path.display()))
}
