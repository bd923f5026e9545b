//! The revisioned configuration store on disk.
//!
//! ```text
//! ROOT/draft/                   editable copy (created from the current revision on first edit)
//! ROOT/revisions/N/tree/        published revision N: immutable files
//! ROOT/revisions/N/meta.json    its number, time, comment and manifest
//! ROOT/current -> revisions/N   the running revision (a symlink)
//! ROOT/staging/                 revisions being built or received (mode 0700); emptied on open
//! ```
//!
//! A new revision (published here or received from a peer) is built entirely inside
//! `staging/`, flushed to disk, renamed into `revisions/`, and only then made current by
//! renaming a new symlink over `current` — one atomic `rename(2)`. A crash or a cut at any
//! point before that rename leaves the previous revision current, complete and usable; the
//! half-built directory is removed on the next [`Store::open`].
//!
//! Files of a revision are never modified in place, so unchanged files are hard-linked from
//! the previous revision instead of copied.

use std::fs::{self, File};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::manifest::{check_path, Manifest};

mod staging;

use staging::private_dir;
pub use staging::{Staging, REVISION_DIR_MODE, STAGING_DIR_MODE};

/// Revisions kept on disk besides the current one.
pub const KEEP_REVISIONS: usize = 4;

/// Role of this member for configuration (SPEC A3: standby members are read-only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// May edit and publish.
    Active,
    /// Read-only: refuses edits and publishing; receives revisions.
    Standby,
}

/// Why a store operation failed.
#[derive(Debug)]
pub enum StoreError {
    /// This member is standby: configuration is read-only here.
    ReadOnly,
    /// The draft equals the current revision.
    NothingToPublish,
    /// A path is unsafe.
    BadPath(String),
    /// Another source published a different revision with this number (or a newer one runs
    /// here): a configuration collision.
    Collision {
        /// Revision offered.
        offered: u64,
        /// Revision running here.
        current: Option<u64>,
    },
    /// On-disk state is not what the store wrote.
    Corrupt(String),
    /// A file operation failed.
    Io {
        /// What was being done.
        what: String,
        /// The error.
        err: io::Error,
    },
}

impl std::fmt::Display for StoreError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoreError::ReadOnly => f.write_str("standby member: configuration is read-only"),
            StoreError::NothingToPublish => f.write_str("the draft has no change to publish"),
            StoreError::BadPath(p) => write!(f, "unsafe path {p:?}"),
            StoreError::Collision { offered, current } => write!(
                f,
                "configuration collision: revision {offered} offered, {current:?} running here"
            ),
            StoreError::Corrupt(s) => write!(f, "store corrupt: {s}"),
            StoreError::Io { what, err } => write!(f, "{what}: {err}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Result of store operations.
pub type Result<T> = std::result::Result<T, StoreError>;

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> StoreError {
    let what = what.into();
    move |err| StoreError::Io { what, err }
}

/// A published revision's metadata.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revision {
    /// Number (increasing).
    pub revision: u64,
    /// Publication time, Unix seconds.
    pub published_at: u64,
    /// Operator's comment.
    pub comment: Option<String>,
    /// Its files.
    pub manifest: Manifest,
}

/// The store.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
    role: Role,
}

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn sync_dir(p: &Path) -> Result<()> {
    File::open(p)
        .and_then(|f| f.sync_all())
        .map_err(io_err(format!("sync {}", p.display())))
}

fn unique_name(prefix: &str) -> String {
    let r = getrandom::u64().unwrap_or(0);
    format!("{prefix}-{}-{r:016x}", std::process::id())
}

impl Store {
    /// Opens (creating if needed) the store at `root`; removes what a crash left in
    /// `staging/`.
    pub fn open(root: &Path, role: Role) -> Result<Store> {
        fs::create_dir_all(root.join("revisions")).map_err(io_err("create revisions"))?;
        let staging = root.join("staging");
        // Nothing staged is reachable by another user, whatever its mode.
        private_dir(&staging, STAGING_DIR_MODE)?;
        for e in fs::read_dir(&staging).map_err(io_err("list staging"))? {
            let e = e.map_err(io_err("list staging"))?;
            fs::remove_dir_all(e.path())
                .or_else(|_| fs::remove_file(e.path()))
                .map_err(io_err("clean staging"))?;
        }
        // A symlink left by a crash between its creation and its rename.
        for e in fs::read_dir(root).map_err(io_err("list root"))? {
            let e = e.map_err(io_err("list root"))?;
            if e.file_name().to_string_lossy().starts_with(".current-") {
                let _ = fs::remove_file(e.path());
            }
        }
        Ok(Store {
            root: root.to_path_buf(),
            role,
        })
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// This member's role.
    pub fn role(&self) -> Role {
        self.role
    }

    /// Changes the role (the daemon follows the agent's decisions).
    pub fn set_role(&mut self, role: Role) {
        self.role = role;
    }

    fn rev_dir(&self, n: u64) -> PathBuf {
        self.root.join("revisions").join(n.to_string())
    }

    /// Directory of revision `n`'s files.
    pub fn tree(&self, n: u64) -> PathBuf {
        self.rev_dir(n).join("tree")
    }

    /// Number of the current revision, if any.
    pub fn current_number(&self) -> Result<Option<u64>> {
        match fs::read_link(self.root.join("current")) {
            Ok(t) => {
                let n = t
                    .file_name()
                    .and_then(|s| s.to_str())
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| StoreError::Corrupt(format!("current -> {}", t.display())))?;
                Ok(Some(n))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io_err("read current")(e)),
        }
    }

    /// Metadata of revision `n`.
    pub fn revision(&self, n: u64) -> Result<Revision> {
        let p = self.rev_dir(n).join("meta.json");
        let text = fs::read(&p).map_err(io_err(format!("read {}", p.display())))?;
        serde_json::from_slice(&text)
            .map_err(|e| StoreError::Corrupt(format!("{}: {e}", p.display())))
    }

    /// The current revision, if any.
    pub fn current(&self) -> Result<Option<Revision>> {
        self.current_number()?.map(|n| self.revision(n)).transpose()
    }

    /// Published revisions on disk, ascending.
    pub fn revisions(&self) -> Result<Vec<u64>> {
        let mut v: Vec<u64> = fs::read_dir(self.root.join("revisions"))
            .map_err(io_err("list revisions"))?
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        v.sort_unstable();
        Ok(v)
    }

    /// Content of `path` in the current revision.
    pub fn read(&self, path: &str) -> Result<Vec<u8>> {
        check_path(path).map_err(|_| StoreError::BadPath(path.into()))?;
        let n = self
            .current_number()?
            .ok_or_else(|| StoreError::Corrupt("no revision yet".into()))?;
        fs::read(self.tree(n).join(path)).map_err(io_err(format!("read {path}")))
    }

    fn draft(&self) -> PathBuf {
        self.root.join("draft")
    }

    /// The draft directory, created from the current revision if absent. Refused on standby.
    pub fn draft_dir(&self) -> Result<PathBuf> {
        if self.role == Role::Standby {
            return Err(StoreError::ReadOnly);
        }
        let d = self.draft();
        if !d.exists() {
            let tmp = self.root.join("staging").join(unique_name("draft"));
            fs::create_dir_all(&tmp).map_err(io_err("create draft"))?;
            if let Some(r) = self.current()? {
                let src = self.tree(r.revision);
                for (p, e) in &r.manifest.files {
                    let dst = tmp.join(p);
                    if let Some(parent) = dst.parent() {
                        fs::create_dir_all(parent).map_err(io_err("create draft"))?;
                    }
                    fs::copy(src.join(p), &dst).map_err(io_err(format!("copy {p} to draft")))?;
                    set_mode(&dst, e.mode)?;
                }
            }
            fs::rename(&tmp, &d).map_err(io_err("install draft"))?;
        }
        Ok(d)
    }

    /// Writes a file of the draft. Refused on standby.
    pub fn write(&self, path: &str, bytes: &[u8]) -> Result<()> {
        check_path(path).map_err(|_| StoreError::BadPath(path.into()))?;
        let d = self.draft_dir()?;
        let p = d.join(path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent).map_err(io_err(format!("create dir of {path}")))?;
        }
        fs::write(&p, bytes).map_err(io_err(format!("write {path}")))
    }

    /// Removes a file of the draft. Refused on standby.
    pub fn remove(&self, path: &str) -> Result<()> {
        check_path(path).map_err(|_| StoreError::BadPath(path.into()))?;
        let d = self.draft_dir()?;
        fs::remove_file(d.join(path)).map_err(io_err(format!("remove {path}")))
    }

    /// Paths edited in the draft and not published (SPEC D3: local unsynchronized changes).
    pub fn local_changes(&self) -> Result<Vec<String>> {
        let d = self.draft();
        if !d.exists() {
            return Ok(Vec::new());
        }
        let draft = Manifest::scan(&d).map_err(io_err("scan draft"))?;
        let cur = self.current()?.map(|r| r.manifest).unwrap_or_default();
        Ok(crate::compare::changed_paths(&cur, &draft))
    }

    /// Freezes the draft into a new revision and makes it current. Refused on standby.
    pub fn publish(&self, comment: Option<String>) -> Result<Revision> {
        self.publish_selected(comment, &|_| true)
    }

    /// Publishes only the draft's changes under `prefixes` (a periodic job's paths, SPEC D2);
    /// every other path keeps the current revision's content, so an operator's unpublished
    /// edits stay in the draft. Refused on standby.
    pub fn publish_only(&self, prefixes: &[String], comment: Option<String>) -> Result<Revision> {
        self.publish_selected(comment, &|p: &str| {
            prefixes.iter().any(|q| {
                p == q || (p.starts_with(q.as_str()) && p.as_bytes().get(q.len()) == Some(&b'/'))
            })
        })
    }

    /// A store handle on the same root with another role (no staging cleanup: for a process
    /// that opened the store once and asks the daemon for its role per request).
    pub fn with_role(&self, role: Role) -> Store {
        Store {
            root: self.root.clone(),
            role,
        }
    }

    fn publish_selected(
        &self,
        comment: Option<String>,
        select: &dyn Fn(&str) -> bool,
    ) -> Result<Revision> {
        if self.role == Role::Standby {
            return Err(StoreError::ReadOnly);
        }
        let draft = self.draft_dir()?;
        let cur = self.current()?;
        let draft_scan = Manifest::scan(&draft).map_err(io_err("scan draft"))?;
        // Selected paths come from the draft, the others stay as published.
        let mut scanned = Manifest::default();
        let mut from_draft = std::collections::BTreeSet::new();
        for (p, e) in &draft_scan.files {
            if select(p) {
                scanned.files.insert(p.clone(), *e);
                from_draft.insert(p.clone());
            }
        }
        if let Some(c) = &cur {
            for (p, e) in &c.manifest.files {
                if !select(p) {
                    scanned.files.insert(p.clone(), *e);
                }
            }
        }
        match &cur {
            Some(c) if c.manifest == scanned => return Err(StoreError::NothingToPublish),
            _ => {}
        }
        let n = self.revisions()?.last().copied().unwrap_or(0) + 1;
        let stage = self.root.join("staging").join(unique_name("publish"));
        let tree = stage.join("tree");
        fs::create_dir_all(&tree).map_err(io_err("create staging"))?;
        for (p, e) in &scanned.files {
            let dst = tree.join(p);
            if let Some(parent) = dst.parent() {
                fs::create_dir_all(parent).map_err(io_err("create staging"))?;
            }
            let same = cur
                .as_ref()
                .and_then(|c| c.manifest.files.get(p))
                .is_some_and(|o| o == e);
            match (&cur, same || !from_draft.contains(p)) {
                (Some(c), true) => fs::hard_link(self.tree(c.revision).join(p), &dst)
                    .map_err(io_err(format!("link {p}")))?,
                _ => {
                    fs::copy(draft.join(p), &dst).map_err(io_err(format!("copy {p}")))?;
                    set_mode(&dst, e.mode)?;
                }
            }
        }
        // The draft may have changed while copying: the revision is what was copied.
        let manifest = Manifest::scan(&tree).map_err(io_err("scan staged revision"))?;
        let rev = Revision {
            revision: n,
            published_at: now_s(),
            comment,
            manifest,
        };
        self.install(&stage, &rev)?;
        Ok(rev)
    }

    /// Writes `meta.json`, flushes, renames `stage` to `revisions/N`, switches `current`.
    fn install(&self, stage: &Path, rev: &Revision) -> Result<()> {
        let meta = serde_json::to_vec(rev).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let mp = stage.join("meta.json");
        let mut f = File::create(&mp).map_err(io_err("write meta.json"))?;
        f.write_all(&meta).map_err(io_err("write meta.json"))?;
        drop(f);
        // One syncfs flushes every staged file and directory of the filesystem: far cheaper
        // than an fsync per file for 10,000 files, and done before the rename that makes
        // the revision visible.
        sync_fs(stage)?;
        let dst = self.rev_dir(rev.revision);
        fs::rename(stage, &dst).map_err(io_err("install revision"))?;
        sync_dir(&self.root.join("revisions"))?;
        self.switch(rev.revision)?;
        self.prune()
    }

    /// Makes revision `n` current: a new symlink renamed over `current` (atomic).
    pub fn switch(&self, n: u64) -> Result<()> {
        let tmp = self.root.join(unique_name(".current"));
        std::os::unix::fs::symlink(Path::new("revisions").join(n.to_string()), &tmp)
            .map_err(io_err("create symlink"))?;
        fs::rename(&tmp, self.root.join("current")).map_err(io_err("switch current"))?;
        sync_dir(&self.root)
    }

    /// Removes revisions older than the newest [`KEEP_REVISIONS`] (never the current one).
    pub fn prune(&self) -> Result<()> {
        let cur = self.current_number()?;
        let revs = self.revisions()?;
        let cut = revs.len().saturating_sub(KEEP_REVISIONS + 1);
        for n in &revs[..cut] {
            if Some(*n) != cur {
                // Move out of revisions/ first so a crash never leaves half a revision there.
                let trash = self.root.join("staging").join(unique_name("trash"));
                fs::rename(self.rev_dir(*n), &trash).map_err(io_err("prune"))?;
                fs::remove_dir_all(&trash).map_err(io_err("prune"))?;
            }
        }
        Ok(())
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
        .map_err(io_err(format!("chmod {}", p.display())))
}

fn sync_fs(dir: &Path) -> Result<()> {
    let f = File::open(dir).map_err(io_err(format!("open {}", dir.display())))?;
    rustix::fs::syncfs(&f).map_err(|e| StoreError::Io {
        what: format!("syncfs {}", dir.display()),
        err: e.into(),
    })
}

/// Verifies every file of revision `n` against its manifest (used by tests and `confsync
/// verify`): returns the paths that differ.
pub fn verify(store: &Store, n: u64) -> Result<Vec<String>> {
    let rev = store.revision(n)?;
    let tree = store.tree(n);
    let mut bad = Vec::new();
    let on_disk = Manifest::scan(&tree).map_err(io_err("scan"))?;
    for (p, e) in &rev.manifest.files {
        match on_disk.files.get(p) {
            Some(d) if d.sha256 == e.sha256 && d.size == e.size => {}
            _ => bad.push(p.clone()),
        }
    }
    for p in on_disk.files.keys() {
        if !rev.manifest.files.contains_key(p) {
            bad.push(p.clone());
        }
    }
    Ok(bad)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_switch_and_standby_refusal() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), Role::Active).unwrap();
        assert!(s.current().unwrap().is_none());
        s.write("fw/rules.conf", b"allow all").unwrap();
        s.write("dhcp/leases", b"none").unwrap();
        assert_eq!(s.local_changes().unwrap().len(), 2);
        let r1 = s.publish(Some("first".into())).unwrap();
        assert_eq!(r1.revision, 1);
        assert!(s.local_changes().unwrap().is_empty());
        assert!(matches!(s.publish(None), Err(StoreError::NothingToPublish)));
        s.write("fw/rules.conf", b"deny all").unwrap();
        assert_eq!(
            s.local_changes().unwrap(),
            vec!["fw/rules.conf".to_string()]
        );
        // Unpublished edits are not in the running revision.
        assert_eq!(s.read("fw/rules.conf").unwrap(), b"allow all");
        let r2 = s.publish(None).unwrap();
        assert_eq!(r2.revision, 2);
        assert_eq!(s.read("fw/rules.conf").unwrap(), b"deny all");
        // Revision 1 is intact.
        assert_eq!(
            fs::read(s.tree(1).join("fw/rules.conf")).unwrap(),
            b"allow all"
        );
        assert!(verify(&s, 1).unwrap().is_empty());
        assert!(verify(&s, 2).unwrap().is_empty());

        let mut s = s;
        s.set_role(Role::Standby);
        assert!(matches!(s.write("x", b"y"), Err(StoreError::ReadOnly)));
        assert!(matches!(
            s.remove("fw/rules.conf"),
            Err(StoreError::ReadOnly)
        ));
        assert!(matches!(s.publish(None), Err(StoreError::ReadOnly)));
        assert!(matches!(s.write("../x", b"y"), Err(StoreError::BadPath(_))));
    }

    #[test]
    fn prune_keeps_current_and_recent() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), Role::Active).unwrap();
        for i in 0..10 {
            s.write("f", format!("{i}").as_bytes()).unwrap();
            s.publish(None).unwrap();
        }
        let revs = s.revisions().unwrap();
        assert_eq!(revs.len(), KEEP_REVISIONS + 1);
        assert_eq!(s.current_number().unwrap(), Some(10));
    }

    #[test]
    fn leftovers_of_a_crash_are_cleaned() {
        let d = tempfile::tempdir().unwrap();
        let s = Store::open(d.path(), Role::Active).unwrap();
        s.write("f", b"1").unwrap();
        s.publish(None).unwrap();
        fs::create_dir_all(d.path().join("staging/receive-1-2/tree/a")).unwrap();
        std::os::unix::fs::symlink("revisions/9", d.path().join(".current-1-2")).unwrap();
        let s = Store::open(d.path(), Role::Standby).unwrap();
        assert_eq!(fs::read_dir(d.path().join("staging")).unwrap().count(), 0);
        assert!(!d.path().join(".current-1-2").exists());
        assert_eq!(s.read("f").unwrap(), b"1");
    }
}
