//! `hactl settings IMAGE [options]`: changes the HA settings in a member's configuration
//! image in place (the serial, the key and the member list stay), checked as `provision`
//! checks a new image, and written atomically; then `hactl reload` applies them on the
//! running member without a restart.

use std::path::Path;

use ha_persist::block_diff::{describe_changes, needs_other_command};
use ha_proto::config_block::ConfigBlock;

use crate::exit::{Code, Failure, Result};
use crate::provision;

/// A switch's new value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Switch {
    /// Leave it as it is.
    Keep,
    /// Set it to this value.
    Set(bool),
}

/// The changes asked for; each `None`, empty list or [`Switch::Keep`] keeps the setting.
#[derive(Clone, Debug)]
pub struct Edit {
    /// `default`, `fast` or `custom:INTERVAL_MS:MISS_LIMIT`.
    pub timers: Option<String>,
    /// `KIND=WEIGHT` values.
    pub weights: Vec<String>,
    /// `all-down` or `any-down`.
    pub aggregate: Option<String>,
    /// Count the TPM.
    pub tpm: Switch,
    /// Encrypt member frames.
    pub encrypt: Switch,
    /// Backup link wired.
    pub backup_link: Switch,
    /// The whole domain list (`ID` or `ID=SERIAL`), when given.
    pub domains: Vec<String>,
}

/// `old` with `edit` applied, checked as a new image is.
pub fn apply(old: &ConfigBlock, edit: &Edit) -> Result<ConfigBlock> {
    let mut new = old.clone();
    if let Some(t) = &edit.timers {
        new.timers = provision::parse_timers(t)?;
    }
    provision::apply_weights(&mut new.weights, &edit.weights)?;
    if let Some(a) = &edit.aggregate {
        new.aggregate = provision::parse_aggregate(a)?;
    }
    let set = |s: Switch, v: &mut bool| {
        if let Switch::Set(b) = s {
            *v = b;
        }
    };
    set(edit.tpm, &mut new.tpm_included);
    set(edit.encrypt, &mut new.encrypt);
    set(edit.backup_link, &mut new.backup_link);
    if !edit.domains.is_empty() {
        new.domains = provision::parse_domains(&edit.domains)?;
    }
    provision::check(&new)?;
    Ok(new)
}

/// Edits the image at `path`; returns what it prints.
pub fn run(path: &Path, edit: &Edit) -> Result<String> {
    let old = provision::read_image(path)?;
    let new = apply(&old, edit)?;
    let changes = describe_changes(&old, &new);
    if changes.is_empty() {
        return Ok(format!("{}: nothing to change\n", path.display()));
    }
    ha_persist::write_block(path, &new).map_err(|e| Failure::new(Code::File, e))?;
    let mut out = format!(
        "{}: revision {:016x} (was {:016x})\n",
        path.display(),
        new.revision(),
        old.revision()
    );
    for c in &changes {
        out.push_str(&format!("  {c}\n"));
    }
    out.push_str(&match needs_other_command(&old, &new) {
        None => "apply it on the running member with `hactl reload`\n".to_string(),
        Some(why) => format!("a running member cannot take this: {why}\n"),
    });
    Ok(out)
}
