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
