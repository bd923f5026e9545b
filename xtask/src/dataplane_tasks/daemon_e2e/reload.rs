//! The reload phase of the tcp-survival e2e (`hactl reload`, on the booted cluster, under
//! load). The passive member's fan fails (its board simulator), so its quality factor shows
//! the fan's share of the hardware weights; its image gets a heavier fan weight (`hactl
//! settings`) and `hactl reload` applies it: the answer lists the change, the quality factor
//! moves to what the new weight gives, the banner shows that the members' settings differ,
//! nobody swaps, no connection is lost. The same edit on the active brings the revisions
//! together again; the fan is restored, and both images go back to the provisioned weight.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::env::{forwarding, wait_roles, Env, Load};
use crate::util::{output, Result};

/// The fan weight the reload sets (the image starts with every weight at 100).
const FAN_WEIGHT: u64 = 700;
/// Longest wait for a quality factor to reach its expected value.
const QUALITY_BOUND: Duration = Duration::from_secs(10);

/// The hardware part with one of the two fans failed: the board simulator's components
/// (2 disks, a RAID, 2 PSUs, 2 fans, a module, each weighing 100; the TPM is not counted)
/// with the fans weighing `fan` each. The interfaces are all up, so this is the quality.
fn quality_with_a_failed_fan(fan: u64) -> u64 {
    let others = 6 * 100;
    (others + fan) * 100 / (others + 2 * fan)
}

fn info(hactl: &dyn Fn(usize) -> Command, i: usize) -> Result<serde_json::Value> {
    let text = output(hactl(i).args(["info", "--json"]))?;
    serde_json::from_str(text.trim()).map_err(|e| format!("e2e: hactl info --json: {e}: {text}"))
}

fn quality_of(info: &serde_json::Value, serial: &str) -> Option<u64> {
    info["members"]
        .as_array()?
        .iter()
        .find(|m| m["serial"] == serial)?["quality"]
        .as_u64()
}

fn wait_quality(
    hactl: &dyn Fn(usize) -> Command,
    i: usize,
    serial: &str,
    want: u64,
) -> Result<serde_json::Value> {
    let deadline = Instant::now() + QUALITY_BOUND;
    loop {
        let v = info(hactl, i)?;
        if quality_of(&v, serial) == Some(want) {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "e2e: reload: {serial}'s quality never reached {want}: {v}"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn board(env: &mut Env, member: &str, line: &str) -> Result {
    let sim = env
        .child(&format!("boardsim-{member}"))
        .ok_or_else(|| format!("e2e: no board simulator for {member}"))?;
    let stdin = sim.stdin.as_mut().ok_or("e2e: board simulator stdin")?;
    writeln!(stdin, "{line}").map_err(|e| format!("e2e: board simulator: {e}"))
}

fn role_changes(socks: &[PathBuf]) -> Vec<Option<u64>> {
    socks
        .iter()
        .map(|s| forwarding(s, Duration::from_secs(5)).map(|f| f.changes))
        .collect()
}

/// Edits member `i`'s image (`hactl settings`: the fan weight `from` → `to`) and reloads
/// it (`hactl reload --json`); returns the reload's answer.
fn edit_and_reload(
    b: &dyn Fn(&str) -> String,
    hactl: &dyn Fn(usize) -> Command,
    image: &Path,
    i: usize,
    (from, to): (u64, u64),
) -> Result<serde_json::Value> {
    let edited = output(
        Command::new(b("hactl"))
            .arg("settings")
            .arg(image)
            .args(["--weight", &format!("fan={to}")]),
    )?;
    let change = format!("weights: fan {from} → {to}");
    if !edited.contains(&change) {
        return Err(format!(
            "e2e: hactl settings did not say {change:?}: {edited}"
        ));
    }
    let text = output(hactl(i).args(["reload", "--json"]))?;
    let v: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("e2e: hactl reload --json: {e}: {text}"))?;
    let listed = v["changes"]
        .as_array()
        .is_some_and(|c| c.iter().any(|c| c == change.as_str()));
    if v["type"] != "reloaded" || !listed || v["revision"] == v["previous_revision"] {
        return Err(format!(
            "e2e: hactl reload: want {change:?} and a new revision: {v}"
        ));
    }
    Ok(v)
}

/// Runs the phase with `active` the active member's index (see the module).
#[allow(clippy::too_many_arguments)]
pub(super) fn reload_phase(
    env: &mut Env,
    b: &dyn Fn(&str) -> String,
    dir: &Path,
    serials: &[&str; 2],
    members: &[&str; 2],
    socks: &[PathBuf],
    active: usize,
    load: &mut Load,
) -> Result {
    let hactl = |i: usize| {
        let mut c = Command::new(b("hactl"));
        c.arg("--socket").arg(&socks[i]);
        c
    };
    let passive = 1 - active;
    let image = |i: usize| dir.join(format!("{i}.cfg"));
    load.cmd("mark")?;
    let changes_before = role_changes(socks);

    // The passive's fan fails: its quality is the fan's share at weight 100.
    board(env, members[passive], "fail fan 0")?;
    let before = quality_with_a_failed_fan(100);
    wait_quality(&hactl, passive, serials[passive], before)?;

    // A heavier fan: reload on the passive, its quality follows at once.
    let rep = edit_and_reload(b, &hactl, &image(passive), passive, (100, FAN_WEIGHT))?;
    let after = quality_with_a_failed_fan(FAN_WEIGHT);
    // Seen by the active too: the passive's heartbeats carry it.
    let seen = wait_quality(&hactl, active, serials[passive], after)?;
    let banner = seen["banner_text"].as_str().unwrap_or_default().to_string();
    if !banner.contains("HA settings differ") {
        return Err(format!(
            "e2e: reload: the banner does not show the members' different settings: {banner}"
        ));
    }
    // Its event log says so (within the controller details' period: an event frame lost on
    // the host line is asked for again when the next details show it missing).
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let events = output(hactl(passive).args(["events", "--last", "30"]))?;
        if events.contains("settings reloaded") {
            break;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "e2e: reload: no settings_reloaded event on {}: {events}",
                serials[passive]
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }

    // The same edit on the active: one revision again, its quality (nothing failed) stays.
    edit_and_reload(b, &hactl, &image(active), active, (100, FAN_WEIGHT))?;
    let v = wait_quality(&hactl, passive, serials[active], 100)?;
    let deadline = Instant::now() + QUALITY_BOUND;
    let mut banner = v["banner_text"].as_str().unwrap_or_default().to_string();
    while banner.contains("differ") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        banner = info(&hactl, passive)?["banner_text"]
            .as_str()
            .unwrap_or_default()
            .to_string();
    }
    if banner.contains("differ") {
        return Err(format!(
            "e2e: reload: the revisions still differ after both reloads: {banner}"
        ));
    }
    board(env, members[passive], "restore fan 0")?;
    wait_quality(&hactl, passive, serials[passive], 100)?;
    // Both back to the settings the cluster was provisioned with (a replacement member is
    // provisioned with them later).
    for i in [passive, active] {
        edit_and_reload(b, &hactl, &image(i), i, (FAN_WEIGHT, 100))?;
    }

    // No swap, no lost connection.
    wait_roles(socks, Some(active), Duration::from_secs(2))
        .map_err(|e| format!("e2e: reload: the roles moved: {e}"))?;
    let changes_after = role_changes(socks);
    if changes_after != changes_before || changes_after.iter().any(Option::is_none) {
        return Err(format!(
            "e2e: reload: the data paths changed role ({changes_before:?} → {changes_after:?})"
        ));
    }
    let (sv, n, gap, _) = load.report()?;
    println!(
        "reload: quality {before} → {after} on {} (fan weight 100 → {FAN_WEIGHT}, no swap), \
         revision {:x} → {:x}, survived={sv}/{n} gap_ms={gap}",
        serials[passive],
        rep["previous_revision"].as_u64().unwrap_or(0),
        rep["revision"].as_u64().unwrap_or(0),
    );
    if sv != n {
        return Err(format!("e2e: the reload lost {} connections", n - sv));
    }
    Ok(())
}
