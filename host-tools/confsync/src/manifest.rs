//! Manifests: what a configuration tree holds, by SHA-256.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::Hash;

/// Longest relative path accepted in a manifest, bytes (Linux PATH_MAX is 4096; configuration
/// trees are shallow, and a bound keeps every manifest message within one frame).
pub const MAX_PATH_LEN: usize = 512;
/// Most files in one revision: bounds the receiver's memory for a manifest.
pub const MAX_FILES: usize = 1_000_000;

/// One file of a tree.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Entry {
    /// SHA-256 of the content.
    #[serde(with = "hex_hash")]
    pub sha256: Hash,
    /// Size, bytes.
    pub size: u64,
    /// Permission bits (e.g. 0o600 for key files).
    pub mode: u32,
}

/// Path (relative, `/`-separated) → entry, sorted.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// The files.
    pub files: BTreeMap<String, Entry>,
}

/// Why a path is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BadPath(pub String);

impl std::fmt::Display for BadPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unsafe or invalid path {:?}", self.0)
    }
}

/// Accepts only relative paths of normal components: no `..`, no `.`, no absolute path, no
/// empty component, no NUL, at most [`MAX_PATH_LEN`] bytes. A receiver applies this to every
/// path a peer sends, so that a manifest can never write outside the staging directory.
pub fn check_path(p: &str) -> Result<(), BadPath> {
    let bad = || Err(BadPath(p.chars().take(80).collect()));
    if p.is_empty() || p.len() > MAX_PATH_LEN || p.contains('\0') || p.contains('\\') {
        return bad();
    }
    if p.split('/').any(|c| c.is_empty() || c == "." || c == "..") {
        return bad();
    }
    if !Path::new(p)
        .components()
        .all(|c| matches!(c, Component::Normal(_)))
    {
        return bad();
    }
    Ok(())
}

/// Permission bits a file of a revision may have: read, write and execute for owner, group
/// and others.
pub const PERMISSION_BITS: u32 = 0o777;
/// The setuid, setgid and sticky bits.
pub const SPECIAL_BITS: u32 = 0o7000;

/// Why a file mode is refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadMode {
    /// Bits outside permissions and special bits (a file type, garbage).
    Invalid {
        /// The path.
        path: String,
        /// The mode.
        mode: u32,
    },
    /// Setuid, setgid or sticky, and the service does not accept them.
    Special {
        /// The path.
        path: String,
        /// The mode.
        mode: u32,
    },
}

impl std::fmt::Display for BadMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadMode::Invalid { path, mode } => write!(f, "{path}: invalid mode {mode:o}"),
            BadMode::Special { path, mode } => write!(
                f,
                "{path}: mode {mode:o} has setuid, setgid or sticky bits, which this member \
                 does not accept (confsync --allow-special-modes)"
            ),
        }
    }
}

/// The mode rule of a received file: permission bits only, plus the setuid, setgid and
/// sticky bits when `allow_special` (a receiver configured to install privileged files).
pub fn check_mode(path: &str, mode: u32, allow_special: bool) -> Result<(), BadMode> {
    let shown = || path.chars().take(80).collect::<String>();
    if mode & !(PERMISSION_BITS | SPECIAL_BITS) != 0 {
        return Err(BadMode::Invalid {
            path: shown(),
            mode,
        });
    }
    if mode & SPECIAL_BITS != 0 && !allow_special {
        return Err(BadMode::Special {
            path: shown(),
            mode,
        });
    }
    Ok(())
}

/// SHA-256 of a file's content, with its size.
pub fn hash_file(path: &Path) -> io::Result<(Hash, u64)> {
    let mut f = fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = [0u8; 64 * 1024];
    let mut size = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((h.finalize().into(), size))
}

impl Manifest {
    /// Scans a tree: every regular file under `root`. Symlinks and special files are
    /// refused (a configuration tree holds files only).
    pub fn scan(root: &Path) -> io::Result<Manifest> {
        let mut m = Manifest::default();
        if root.exists() {
            scan_dir(root, "", &mut m)?;
        }
        Ok(m)
    }

    /// Digest binding the whole manifest: SHA-256 over, for each file in path order,
    /// `len(path) u16 BE || path || sha256 || size u64 BE || mode u32 BE`.
    pub fn digest(&self) -> Hash {
        let mut h = Sha256::new();
        for (p, e) in &self.files {
            h.update((p.len() as u16).to_be_bytes());
            h.update(p.as_bytes());
            h.update(e.sha256);
            h.update(e.size.to_be_bytes());
            h.update(e.mode.to_be_bytes());
        }
        h.finalize().into()
    }

    /// Total size of the content, bytes.
    pub fn total_bytes(&self) -> u64 {
        self.files.values().map(|e| e.size).sum()
    }

    /// Some path of each distinct content hash.
    pub fn by_hash(&self) -> std::collections::HashMap<Hash, &str> {
        let mut m = std::collections::HashMap::new();
        for (p, e) in &self.files {
            m.entry(e.sha256).or_insert(p.as_str());
        }
        m
    }
}

fn scan_dir(dir: &Path, prefix: &str, m: &mut Manifest) -> io::Result<()> {
    for ent in fs::read_dir(dir)? {
        let ent = ent?;
        let name = ent.file_name();
        let name = name
            .to_str()
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidData, "non UTF-8 file name"))?;
        let rel = if prefix.is_empty() {
            name.to_string()
        } else {
            format!("{prefix}/{name}")
        };
        let ft = ent.file_type()?;
        if ft.is_dir() {
            scan_dir(&ent.path(), &rel, m)?;
        } else if ft.is_file() {
            check_path(&rel)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
            let (sha256, size) = hash_file(&ent.path())?;
            let mode = ent.metadata()?.permissions().mode() & 0o7777;
            m.files.insert(rel, Entry { sha256, size, mode });
            if m.files.len() > MAX_FILES {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "too many files"));
            }
        } else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{rel}: not a regular file or directory"),
            ));
        }
    }
    Ok(())
}

mod hex_hash {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(h: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&crate::hex(h))
        } else {
            serde::Serialize::serialize(h, s)
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        if d.is_human_readable() {
            let s = String::deserialize(d)?;
            let b = s.as_bytes();
            if b.len() != 64 {
                return Err(serde::de::Error::custom("64 hex digits expected"));
            }
            let mut out = [0u8; 32];
            for (i, o) in out.iter_mut().enumerate() {
                let pair =
                    std::str::from_utf8(&b[2 * i..2 * i + 2]).map_err(serde::de::Error::custom)?;
                *o = u8::from_str_radix(pair, 16).map_err(serde::de::Error::custom)?;
            }
            Ok(out)
        } else {
            <[u8; 32]>::deserialize(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_paths_refused() {
        for p in [
            "",
            "/etc/passwd",
            "../x",
            "a/../b",
            "a//b",
            "./a",
            "a/.",
            "a\\b",
            "a/",
        ] {
            assert!(check_path(p).is_err(), "{p}");
        }
        for p in ["a", "a/b.conf", "dhcp/leases", ".hidden"] {
            assert!(check_path(p).is_ok(), "{p}");
        }
        assert!(check_path(&"x".repeat(MAX_PATH_LEN + 1)).is_err());
    }

    #[test]
    fn special_mode_bits_need_the_flag() {
        assert!(check_mode("a", 0o640, false).is_ok());
        for m in [0o4755, 0o2755, 0o1777] {
            assert!(matches!(
                check_mode("bin/x", m, false),
                Err(BadMode::Special { .. })
            ));
            assert!(check_mode("bin/x", m, true).is_ok());
        }
        assert!(matches!(
            check_mode("a", 0o100644, true),
            Err(BadMode::Invalid { .. })
        ));
    }

    #[test]
    fn scan_and_digest() {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("sub")).unwrap();
        fs::write(d.path().join("a"), b"one").unwrap();
        fs::write(d.path().join("sub/b"), b"two").unwrap();
        let m = Manifest::scan(d.path()).unwrap();
        assert_eq!(m.files.len(), 2);
        assert_eq!(m.files["sub/b"].size, 3);
        let d1 = m.digest();
        fs::write(d.path().join("sub/b"), b"twO").unwrap();
        assert_ne!(Manifest::scan(d.path()).unwrap().digest(), d1);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(serde_json::from_str::<Manifest>(&json).unwrap(), m);
    }
}
