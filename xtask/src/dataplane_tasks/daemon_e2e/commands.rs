//! The operator-commands phase of the tcp-survival e2e: hactl's read commands with `--json`
//! on both members of the booted cluster (parsed and checked), `hactl events --follow`
//! streaming a swap as it happens, `hactl active` on the passive (the planned swap that first
//! resynchronizes the connection table) with no connection lost, and `hactl reset`
//! (`hactl reload` has its own phase, `reload.rs`).

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use super::env::{wait_roles, Load};
use crate::util::{output, run, Result};

fn json(text: &str, what: &str) -> Result<serde_json::Value> {
    serde_json::from_str(text.trim()).map_err(|e| format!("e2e: {what}: not JSON ({e}): {text}"))
}

/// Runs the phase with `active` the index of the active member; returns the active member's
/// index afterwards.
pub(super) fn commands_phase(
    b: &dyn Fn(&str) -> String,
    serials: &[&str; 2],
    socks: &[PathBuf],
    active: usize,
    load: &mut Load,
) -> Result<usize> {
    let hactl = |i: usize| {
        let mut c = Command::new(b("hactl"));
        c.arg("--socket").arg(&socks[i]);
        c
    };

    // The table an operator reads first, after the update, the restart and the rotation.
    println!(
        "e2e: hactl info on {}:\n{}",
        serials[active],
        output(hactl(active).arg("info"))?.trim_end()
    );

    // Read commands, both members, JSON parsed. Each member's boot time as it reports
    // itself and as its peer reports it, and its model.
    let mut boot_seen: Vec<(String, String, u64, String)> = Vec::new();
    for (i, serial) in serials.iter().enumerate() {
        let want = if i == active { "active" } else { "passive" };
        let m = json(
            &output(hactl(i).args(["mode", "--json"]))?,
            "hactl mode --json",
        )?;
        if m["mode"] != want || m["serial"] != *serial {
            return Err(format!("e2e: hactl mode on {}: {m} (want {want})", serial));
        }
        let info = json(
            &output(hactl(i).args(["info", "-v", "--json"]))?,
            "hactl info -v --json",
        )?;
        let members = info["members"].as_array().cloned().unwrap_or_default();
        for m in &members {
            boot_seen.push((
                serial.to_string(),
                m["serial"].as_str().unwrap_or_default().to_string(),
                m["boot_time"].as_u64().unwrap_or(0),
                m["model"].as_str().unwrap_or_default().to_string(),
            ));
        }
        let local = members
            .iter()
            .find(|m| m["serial"] == *serial)
            .ok_or_else(|| format!("e2e: hactl info on {}: no local member: {info}", serial))?;
        if members.len() != 2 || local["counters"]["frames_received"].as_u64().unwrap_or(0) == 0 {
            return Err(format!(
                "e2e: hactl info -v on {}: want 2 members and protocol counters: {info}",
                serial
            ));
        }
        // Both HA links up everywhere, also after the controllers' restarts.
        let down: Vec<String> = members
            .iter()
            .flat_map(|m| {
                m["links"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|l| l["state"] != "up")
                    .map(|l| format!("{}:{}={}", m["serial"], l["name"], l["state"]))
                    .collect::<Vec<_>>()
            })
            .collect();
        if !down.is_empty() {
            return Err(format!(
                "e2e: hactl info on {serial}: HA links not up: {down:?}"
            ));
        }
        let ps = json(
            &output(hactl(i).args(["psk", "status", "--json"]))?,
            "hactl psk status",
        )?;
        if ps["sealing_key_id"] != 2 {
            return Err(format!("e2e: hactl psk status on {}: {ps}", serial));
        }
        let events = output(hactl(i).args(["events", "--last", "5", "--json"]))?;
        let n = events
            .lines()
            .map(|l| json(l, "hactl events --json"))
            .collect::<Result<Vec<_>>>()?
            .iter()
            .filter(|v| v["type"] == "event")
            .count();
        if n == 0 {
            return Err(format!("e2e: hactl events on {}: no event", serial));
        }
    }
    // A peer's boot time (from the uptime its heartbeats carry) agrees with its own, to the
    // second or so; a member's own model is its controller's, a peer's what the peer's
    // daemon told this one over the state sync: the same.
    for (by, of, boot, model) in &boot_seen {
        let (own, own_model) = boot_seen
            .iter()
            .find(|(b, o, _, _)| b == of && o == of)
            .map(|(_, _, t, m)| (*t, m.as_str()))
            .unwrap_or((0, ""));
        if *boot == 0 || own == 0 || boot.abs_diff(own) > 3 {
            return Err(format!(
                "e2e: {by} reports {of} booted at {boot}, {of} itself at {own}"
            ));
        }
        if model == "-" || model.is_empty() || model != own_model {
            return Err(format!(
                "e2e: {by} reports {of}'s model as {model:?}, {of} itself as {own_model:?}"
            ));
        }
    }
    println!(
        "commands: mode, info -v (both HA links up, each peer's boot time within 3 s of its \
         own, each peer's model as it reports it itself), psk status, events --json parse on \
         both members"
    );

    // Follow the events of the member about to take over, then force it active: the swap
    // must stream as it happens, and no connection may be lost (the new active first asks the
    // peer for its whole table).
    let taker = 1 - active;
    let mut follow = hactl(taker)
        .args(["events", "--follow", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("e2e: hactl events --follow: {e}"))?;
    let stdout = follow.stdout.take().ok_or("e2e: follow stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(stdout).lines().map_while(|l| l.ok()) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    // The history comes first; keep only what arrives after the command.
    std::thread::sleep(Duration::from_millis(500));
    while rx.try_recv().is_ok() {}
    load.cmd("mark")?;
    std::thread::sleep(Duration::from_secs(1));
    run(hactl(taker).arg("active"))?;
    let now_active = wait_roles(socks, Some(taker), Duration::from_secs(15))?;
    let mut streamed = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(l) => {
                let v = json(&l, "hactl events --follow --json")?;
                streamed.push(v);
                if streamed.iter().any(|v| v["kind"] == "swap") {
                    break;
                }
            }
            Err(_) => continue,
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    if !streamed.iter().any(|v| v["kind"] == "swap") {
        return Err(format!(
            "e2e: hactl events --follow on {} did not stream the swap: {streamed:?}",
            serials[taker]
        ));
    }
    let resync = streamed
        .iter()
        .filter_map(|v| v["detail"].as_str())
        .find(|d| d.contains("resync before the planned swap"))
        .map(str::to_string)
        .unwrap_or_else(|| "(resync event not streamed)".into());
    std::thread::sleep(Duration::from_secs(3));
    let (sv, n, gap, _) = load.report()?;
    println!(
        "forced-active: survived={sv}/{n} gap_ms={gap} active={}; {resync}",
        serials[now_active]
    );
    if sv != n {
        return Err(format!("e2e: hactl active lost {} connections", n - sv));
    }
    run(hactl(taker).arg("reset"))?;
    std::thread::sleep(Duration::from_secs(1));
    wait_roles(socks, None, Duration::from_secs(15))
}
