//! The rolling-update phase of the tcp-survival e2e: `hactl update` over both daemons with
//! the 1000 connections flowing, from the previous release (the cluster booted on it) to the
//! image built from this tree, and each member's daemon replaced by a new program
//! (`--daemon`: a copy of this tree's `ha-daemon`, replaced in place while the member is
//! passive; it is back once it holds the active's table). The site's install hook is a script
//! that asks this process to restart the member's QEMU controller with the image (the test
//! owns the processes and ends them by pid) and waits until it did. Before the second member
//! is updated the cluster runs two versions: both members' status must say fail-soft; after
//! it, neither may. Afterwards every daemon must be a new program in the same process.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::env::{
    forwarding, mgmt, tree_firmware_version, wait_roles, Env, LinkPorts, Load, RELEASE_VERSION,
};
use crate::util::Result;

/// Longest the whole update may take (two controller restarts, each waited for, and a swap).
const UPDATE_BOUND: Duration = Duration::from_secs(120);
/// Longest the install hook waits for the restart it asked for.
const HOOK_WAIT_DS: u32 = 600;

/// Runs `hactl update --image <elf>` over both members with an install hook that restarts a
/// member's controller; checks that every connection survived and returns the index of the
/// active member afterwards.
#[allow(clippy::too_many_arguments)]
pub(super) fn update_phase(
    env: &mut Env,
    b: &dyn Fn(&str) -> String,
    elf: &Path,
    dir: &Path,
    net: &LinkPorts,
    serials: &[&str; 2],
    members: &[&str; 2],
    socks: &[std::path::PathBuf],
    load: &mut Load,
) -> Result<usize> {
    let hook = dir.join("install-hook");
    // Called as `install-hook SERIAL IMAGE`: leaves a request, waits for the answer.
    let script = format!(
        "#!/bin/sh\n\
         # e2e install hook: the test restarts the member's controller with the image.\n\
         set -eu\n\
         d='{dir}'\n\
         rm -f \"$d/update-$1.done\"\n\
         printf '%s\\n' \"$2\" > \"$d/update-$1.req.tmp\"\n\
         mv \"$d/update-$1.req.tmp\" \"$d/update-$1.req\"\n\
         i=0\n\
         while [ ! -e \"$d/update-$1.done\" ]; do\n\
         \x20 i=$((i + 1)); [ \"$i\" -le {HOOK_WAIT_DS} ] || {{ echo \"install-hook: no restart of $1\" >&2; exit 1; }}\n\
         \x20 sleep 0.1\n\
         done\n",
        dir = dir.display()
    );
    std::fs::write(&hook, script).map_err(|e| format!("e2e: install hook: {e}"))?;
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("e2e: install hook: {e}"))?;

    // The new daemon: a program of its own (the running one's file could be replaced by the
    // site's package manager the same way).
    let next = dir.join("ha-daemon-next");
    std::fs::copy(b("ha-daemon"), &next).map_err(|e| format!("e2e: new daemon: {e}"))?;
    let next = std::fs::canonicalize(&next).map_err(|e| format!("e2e: new daemon: {e}"))?;
    let before: Vec<(u64, Option<u32>)> = socks
        .iter()
        .zip(members)
        .map(|(s, m)| {
            (
                forwarding(s, Duration::from_secs(2)).map_or(0, |f| f.started_ms),
                env.child(&format!("daemon-{m}")).map(|c| c.id()),
            )
        })
        .collect();

    load.cmd("mark")?;
    std::thread::sleep(Duration::from_secs(1));
    let mut cmd = Command::new(b("hactl"));
    cmd.args(["update", "--image"])
        .arg(elf)
        .arg("--daemon")
        .arg(&next);
    for (s, sock) in serials.iter().zip(socks) {
        cmd.arg("--member").arg(format!("{s}={}", sock.display()));
    }
    cmd.arg("--install")
        .arg(&hook)
        .args(["--poll-ms", "200", "--timeout-s", "60", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    eprintln!("$ hactl update --image {} …", elf.display());
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("e2e: cannot start hactl update: {e}"))?;
    let stdout = child.stdout.take().ok_or("e2e: hactl update stdout")?;
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(|l| l.ok())
            .collect::<Vec<String>>()
    });
    let deadline = Instant::now() + UPDATE_BOUND;
    let mut restarted = Vec::new();
    let status = loop {
        if let Some(st) = child
            .try_wait()
            .map_err(|e| format!("e2e: hactl update: {e}"))?
        {
            break st;
        }
        for (i, s) in serials.iter().enumerate() {
            let req = dir.join(format!("update-{s}.req"));
            let Ok(image) = std::fs::read_to_string(&req) else {
                continue;
            };
            let _ = std::fs::remove_file(&req);
            let m = members[i];
            if restarted.len() == 1 {
                // One member runs the new image, this one still the release: mixed.
                fail_soft_shown(socks, true)?;
            }
            println!(
                "e2e: update: restarting the controller of {s} with {}",
                image.trim()
            );
            env.restart_controller(Path::new(image.trim()), m, net, i)?;
            std::fs::write(dir.join(format!("update-{s}.done")), b"")
                .map_err(|e| format!("e2e: {e}"))?;
            restarted.push(s.to_string());
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "e2e: hactl update did not finish in {UPDATE_BOUND:?} (restarted: {restarted:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let lines = reader.join().unwrap_or_default();
    for l in &lines {
        println!("update: {l}");
    }
    if !status.success() {
        return Err(format!("e2e: hactl update failed ({status})"));
    }
    let done = lines
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .any(|v| v["type"] == "update_done");
    if !done || restarted.len() != 2 {
        return Err(format!(
            "e2e: hactl update ended without updating both members (restarted {restarted:?})"
        ));
    }
    let active = wait_roles(socks, None, Duration::from_secs(15))?;
    fail_soft_shown(socks, false)?;
    // Every daemon is the new program, in the process the test started (ended by its pid).
    for ((sock, m), (started, pid)) in socks.iter().zip(members).zip(&before) {
        let now = forwarding(sock, Duration::from_secs(2))
            .ok_or_else(|| format!("e2e: rolling update: {m}'s daemon does not answer"))?;
        let same_pid = env.child(&format!("daemon-{m}")).map(|c| c.id()) == *pid;
        if now.started_ms <= *started || !same_pid {
            return Err(format!(
                "e2e: rolling update: {m}'s daemon was not replaced in place (started {started} \
                 -> {}, same process: {same_pid})",
                now.started_ms
            ));
        }
        println!(
            "rolling-update: {m}'s daemon replaced in process {} (started {} ms later), table {:?}",
            pid.unwrap_or(0),
            now.started_ms - started,
            now.table_connections
        );
    }
    std::thread::sleep(Duration::from_secs(3));
    let (sv, n, gap, _) = load.report()?;
    println!(
        "rolling-update: survived={sv}/{n} gap_ms={gap} active={}",
        serials[active]
    );
    if sv != n {
        return Err(format!(
            "e2e: the rolling update lost {} connections",
            n - sv
        ));
    }
    Ok(active)
}

/// Waits (at most 15 s) until every daemon's status says `mixed`: fail-soft in the JSON and
/// the banner, the members' firmware versions the release's and this tree's; or, not mixed,
/// no fail-soft and every member on this tree's version. Prints what the first one says.
fn fail_soft_shown(socks: &[std::path::PathBuf], mixed: bool) -> Result {
    let new = tree_firmware_version()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut last = String::new();
    loop {
        let mut all = true;
        for sock in socks {
            let Ok(v) = mgmt(sock, r#"{"cmd":"info"}"#) else {
                all = false;
                continue;
            };
            let mut versions: Vec<String> = v["members"]
                .as_array()
                .map(|m| {
                    m.iter()
                        .filter_map(|x| x["firmware"].as_str().map(str::to_string))
                        .collect()
                })
                .unwrap_or_default();
            versions.sort();
            versions.dedup();
            let banner = v["banner_text"].as_str().unwrap_or("").to_string();
            let want: Vec<String> = if mixed {
                let mut w = vec![RELEASE_VERSION.to_string(), new.clone()];
                w.sort();
                w
            } else {
                vec![new.clone()]
            };
            let ok = v["fail_soft"].as_bool() == Some(mixed)
                && banner.contains("fail-soft") == mixed
                && versions == want;
            if !ok {
                all = false;
            }
            last = format!(
                "fail_soft={} versions={versions:?} banner={banner:?}",
                v["fail_soft"]
            );
        }
        if all {
            println!(
                "rolling-update: {} ({last})",
                if mixed {
                    "mixed versions, fail-soft shown"
                } else {
                    "one version again, fail-soft gone"
                }
            );
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "e2e: rolling update: the status does not show {} ({last})",
                if mixed {
                    "fail-soft while the members run different firmware"
                } else {
                    "one firmware version without fail-soft"
                }
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
