//! Exit codes of hactl (documented in `docs/host-tools.md` and in `hactl --help`).

use std::fmt;

/// Process exit codes; stable, scripts rely on them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Code {
    /// Success.
    Ok = 0,
    /// The operation ran and failed (the daemon refused, a sync failed, ...).
    Failed = 1,
    /// Bad command line (clap's own code).
    Usage = 2,
    /// Refused input: weak passphrase, invalid value, existing file without `--force`.
    Refused = 3,
    /// A file could not be read or written.
    File = 4,
    /// The daemon's management socket could not be reached.
    Unreachable = 5,
    /// The configuration image is missing, corrupt or invalid.
    BadImage = 6,
    /// `synctest` found unsynchronized files or unpublished local changes.
    NotSynced = 7,
}

/// A failed command: what to print on stderr and which code to exit with.
///
/// Messages are built by hactl itself and never contain key material.
#[derive(Debug)]
pub struct Failure {
    /// Exit code.
    pub code: Code,
    /// One-line explanation.
    pub message: String,
}

impl Failure {
    /// A failure with `code`.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Failure {
            code,
            message: message.into(),
        }
    }

    /// A file error about `path`.
    pub fn file(what: &str, path: &std::path::Path, e: &std::io::Error) -> Self {
        Failure::new(Code::File, format!("{what} {}: {e}", path.display()))
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Result of a hactl command.
pub type Result<T> = std::result::Result<T, Failure>;
