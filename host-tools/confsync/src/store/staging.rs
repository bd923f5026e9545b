//! Receiving a revision: staging, verification and the atomic switch.
//!
//! A received revision is built in its own directory under `staging/`, which is mode `0700`
//! (as `staging/` itself): nothing staged is reachable by another user, whatever its mode.
//! Every file is also created with its final permission bits from the start (a key file is
//! never readable by others, not even while it arrives); setuid, setgid and sticky bits, when
//! the protocol core admitted them, are applied only once the content is complete (a write
//! would clear them) and before the revision becomes visible.

use std::collections::{BTreeSet, HashMap};
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::{io_err, now_s, set_mode, unique_name, Result, Revision, Store, StoreError};
use crate::manifest::{Manifest, PERMISSION_BITS};
use crate::{hex, Hash};

/// Mode of the directories of a revision being received: its owner's only.
pub const STAGING_DIR_MODE: u32 = 0o700;
/// Mode of an installed revision's directory (its files keep their own modes).
pub const REVISION_DIR_MODE: u32 = 0o755;
/// Mode of a staged content that serves paths of different modes: owner-only, each path then
/// gets its own copy created with its own mode.
const SHARED_OBJECT_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) with `mode`, whatever the umask.
pub(super) fn private_dir(dir: &Path, mode: u32) -> Result<()> {
    DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .map_err(io_err(format!("create {}", dir.display())))?;
    set_mode(dir, mode)
}

/// Creates `path` (which must not exist) with `mode`'s permission bits from the start.
fn create_with_mode(path: &Path, mode: u32) -> io::Result<File> {
    let perm = mode & PERMISSION_BITS;
    let f = OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(perm)
        .open(path)?;
    // The umask may have narrowed the mode: widen it to exactly the final bits (never more).
    f.set_permissions(fs::Permissions::from_mode(perm))?;
    Ok(f)
}

/// Copies `src` to a new `dst` created with `mode`.
fn copy_with_mode(src: &Path, dst: &Path, mode: u32) -> io::Result<()> {
    let mut from = File::open(src)?;
    let mut to = create_with_mode(dst, mode)?;
    io::copy(&mut from, &mut to)?;
    if mode & !PERMISSION_BITS != 0 {
        to.set_permissions(fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

impl Store {
    /// Starts receiving revision `revision` with `manifest`; `needed` will arrive as content.
    /// Refused when it collides with the current revision (checked again at commit).
    pub fn begin_receive(
        &self,
        revision: u64,
        manifest: Manifest,
        needed: BTreeSet<Hash>,
    ) -> Result<Staging<'_>> {
        let cur = self.current()?;
        self.check_collision(revision, &manifest, cur.as_ref())?;
        let dir = self.root.join("staging").join(unique_name("receive"));
        for d in [dir.join("objects"), dir.join("tree")] {
            private_dir(&d, STAGING_DIR_MODE)?;
        }
        // The mode each needed content is created with: the mode of its paths when they all
        // share one, else owner-only (each path then gets a copy with its own mode).
        let mut object_mode: HashMap<Hash, u32> = HashMap::new();
        for e in manifest.files.values() {
            if needed.contains(&e.sha256) {
                let m = object_mode.entry(e.sha256).or_insert(e.mode);
                if *m != e.mode {
                    *m = SHARED_OBJECT_MODE;
                }
            }
        }
        Ok(Staging {
            store: self,
            dir,
            revision,
            manifest,
            needed,
            object_mode,
            current: cur,
            open: None,
        })
    }

    /// A revision `revision` with `manifest` may not replace the current one when it is
    /// older, or has the same number and other content (a configuration collision).
    fn check_collision(
        &self,
        revision: u64,
        manifest: &Manifest,
        cur: Option<&Revision>,
    ) -> Result<()> {
        let collision = || StoreError::Collision {
            offered: revision,
            current: cur.map(|c| c.revision),
        };
        if let Some(c) = cur {
            let same = c.manifest.digest() == manifest.digest();
            if revision < c.revision || (revision == c.revision && !same) {
                return Err(collision());
            }
        }
        if self.rev_dir(revision).exists() {
            let old = self.revision(revision)?;
            if old.manifest.digest() != manifest.digest() {
                return Err(collision());
            }
        }
        Ok(())
    }
}

/// A revision being received into `staging/`.
pub struct Staging<'a> {
    store: &'a Store,
    dir: PathBuf,
    revision: u64,
    manifest: Manifest,
    needed: BTreeSet<Hash>,
    object_mode: HashMap<Hash, u32>,
    current: Option<Revision>,
    open: Option<(Hash, File)>,
}

impl Drop for Staging<'_> {
    /// A session that ends without a commit (the sender failed, or only probed) leaves
    /// nothing behind; after a commit the directory was renamed away and this does nothing.
    fn drop(&mut self) {
        self.open = None;
        let _ = fs::remove_dir_all(&self.dir);
    }
}

impl Staging<'_> {
    fn object(&self, h: &Hash) -> PathBuf {
        self.dir.join("objects").join(hex(h))
    }

    /// The directory this revision is staged in (under `staging/`).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends a piece of content `hash` (already checked by the protocol core).
    pub fn write(&mut self, hash: Hash, offset: u64, bytes: &[u8], last: bool) -> Result<()> {
        let Some(mode) = self.object_mode.get(&hash).copied() else {
            return Err(StoreError::Corrupt("content not in the needed set".into()));
        };
        let mut f = match self.open.take() {
            Some((h, f)) if h == hash => f,
            _ => {
                if offset != 0 {
                    return Err(StoreError::Corrupt(
                        "content piece without its start".into(),
                    ));
                }
                create_with_mode(&self.object(&hash), mode)
                    .map_err(io_err("create staged object"))?
            }
        };
        f.write_all(bytes).map_err(io_err("write staged object"))?;
        // Flushed to disk by the syncfs before the revision is installed.
        if last {
            if mode & !PERMISSION_BITS != 0 {
                f.set_permissions(fs::Permissions::from_mode(mode))
                    .map_err(io_err("set the mode of a staged object"))?;
            }
        } else {
            self.open = Some((hash, f));
        }
        Ok(())
    }

    /// Builds the tree from staged and local content, verifies it, and switches to it
    /// atomically. The caller serializes commits (and publishes) of this store; a revision
    /// that became a collision while it was received (another one was installed meanwhile)
    /// is refused here. On error the staging directory is removed and nothing changed.
    pub fn commit(mut self) -> Result<Revision> {
        let r = self.build();
        if r.is_err() {
            let _ = fs::remove_dir_all(&self.dir);
        }
        r
    }

    fn build(&mut self) -> Result<Revision> {
        self.open = None;
        let now = self.store.current()?;
        self.store
            .check_collision(self.revision, &self.manifest, now.as_ref())?;
        let tree = self.dir.join("tree");
        let local: HashMap<Hash, PathBuf> = match &self.current {
            Some(c) => {
                let t = self.store.tree(c.revision);
                c.manifest
                    .files
                    .iter()
                    .map(|(p, e)| (e.sha256, t.join(p)))
                    .collect()
            }
            None => HashMap::new(),
        };
        for (p, e) in &self.manifest.files {
            let dst = tree.join(p);
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).map_err(io_err("create staged dir"))?;
            }
            let src = if self.needed.contains(&e.sha256) {
                self.object(&e.sha256)
            } else {
                local
                    .get(&e.sha256)
                    .cloned()
                    .ok_or_else(|| StoreError::Corrupt(format!("no local content for {p}")))?
            };
            let meta = fs::metadata(&src).map_err(io_err(format!("stat source of {p}")))?;
            if meta.len() != e.size {
                return Err(StoreError::Corrupt(format!("{p}: size differs")));
            }
            if meta.permissions().mode() & 0o7777 == e.mode {
                fs::hard_link(&src, &dst).map_err(io_err(format!("link {p}")))?;
            } else {
                copy_with_mode(&src, &dst, e.mode).map_err(io_err(format!("copy {p}")))?;
            }
        }
        fs::remove_dir_all(self.dir.join("objects")).map_err(io_err("remove objects"))?;
        let rev = Revision {
            revision: self.revision,
            published_at: now_s(),
            comment: None,
            manifest: std::mem::take(&mut self.manifest),
        };
        if self.store.rev_dir(rev.revision).exists() {
            // Same revision, same digest (checked above): only switch.
            fs::remove_dir_all(&self.dir).map_err(io_err("remove staging"))?;
            self.store.switch(rev.revision)?;
        } else {
            // Every file has its final mode: the revision may become readable.
            set_mode(&self.dir, REVISION_DIR_MODE)?;
            set_mode(&tree, REVISION_DIR_MODE)?;
            self.store.install(&self.dir, &rev)?;
        }
        // The draft of a member that received a revision is stale.
        let d = self.store.draft();
        if d.exists() {
            let trash = self.store.root.join("staging").join(unique_name("trash"));
            fs::rename(&d, &trash).map_err(io_err("drop stale draft"))?;
            let _ = fs::remove_dir_all(&trash);
        }
        Ok(rev)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Entry;
    use crate::store::Role;
    use sha2::Digest;

    fn modes_under(dir: &Path) -> Vec<(PathBuf, u32)> {
        let mut out = vec![(
            dir.to_path_buf(),
            fs::metadata(dir).unwrap().permissions().mode() & 0o7777,
        )];
        if dir.is_dir() {
            for e in fs::read_dir(dir).unwrap() {
                out.extend(modes_under(&e.unwrap().path()));
            }
        }
        out
    }

    #[test]
    fn staged_content_is_never_readable_by_others() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), Role::Standby).unwrap();
        let secret = b"ipsec pre-shared secret".to_vec();
        let h: Hash = sha2::Sha256::digest(&secret).into();
        let open = b"public settings".to_vec();
        let h2: Hash = sha2::Sha256::digest(&open).into();
        let mut m = Manifest::default();
        let entry = |sha256, size: usize, mode| Entry {
            sha256,
            size: size as u64,
            mode,
        };
        m.files
            .insert("keys/ipsec.key".into(), entry(h, secret.len(), 0o600));
        m.files
            .insert("keys/copy.key".into(), entry(h, secret.len(), 0o640));
        m.files
            .insert("a.conf".into(), entry(h2, open.len(), 0o644));
        let mut st = s
            .begin_receive(1, m, [h, h2].into_iter().collect())
            .unwrap();
        st.write(h, 0, &secret[..6], false).unwrap();
        // Half-way: the staging directories are owner-only, the secret too.
        for (p, mode) in modes_under(&d.path().join("staging")) {
            if p.is_dir() {
                assert_eq!(mode, STAGING_DIR_MODE, "{}", p.display());
            } else {
                assert_eq!(mode & 0o077, 0, "{} is {mode:o}", p.display());
            }
        }
        st.write(h, 6, &secret[6..], true).unwrap();
        st.write(h2, 0, &open, true).unwrap();
        st.commit().unwrap();
        let mode = |p: &str| {
            fs::metadata(s.tree(1).join(p))
                .unwrap()
                .permissions()
                .mode()
                & 0o7777
        };
        assert_eq!(mode("keys/ipsec.key"), 0o600);
        assert_eq!(mode("keys/copy.key"), 0o640);
        assert_eq!(mode("a.conf"), 0o644);
        assert_eq!(s.read("keys/copy.key").unwrap(), secret);
        // The installed revision is readable again; staging is empty and still private.
        assert_eq!(
            fs::metadata(s.tree(1)).unwrap().permissions().mode() & 0o777,
            REVISION_DIR_MODE
        );
        assert_eq!(
            modes_under(&d.path().join("staging")),
            vec![(d.path().join("staging"), STAGING_DIR_MODE)]
        );
    }

    #[test]
    fn special_bits_admitted_by_the_core_survive_the_writes() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), Role::Standby).unwrap();
        let body = b"#!/bin/sh\nexit 0\n".to_vec();
        let h: Hash = sha2::Sha256::digest(&body).into();
        let mut m = Manifest::default();
        m.files.insert(
            "bin/helper".into(),
            Entry {
                sha256: h,
                size: body.len() as u64,
                mode: 0o4750,
            },
        );
        let mut st = s.begin_receive(1, m, [h].into_iter().collect()).unwrap();
        st.write(h, 0, &body[..4], false).unwrap();
        st.write(h, 4, &body[4..], true).unwrap();
        st.commit().unwrap();
        let mode = fs::metadata(s.tree(1).join("bin/helper"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o4750);
    }
}
