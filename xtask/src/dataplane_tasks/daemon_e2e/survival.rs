//! The tcp-survival phases (see the parent module): every fault a production cluster meets
//! that must not lose a connection.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::env::{
    controller_log, diagnostics, forwarding, last_events, mode, wait_roles, wait_same_table, Env,
    LinkPorts, Load,
};
use super::setup::Setup;
use super::{commands, config_sync_phase, reload, replace, update, Opts};
use crate::util::{run, Result};

/// The tcp-survival scenario on a set-up cluster: the planned swap, the rolling update, the
/// PSK rotation (and a restart after it), the configuration sync, the operator's commands,
/// then the crash of the active and its replacement.
pub(super) fn run_phases(
    env: &mut Env,
    o: &Opts,
    firmware: Option<&Path>,
    b: &dyn Fn(&str) -> String,
    dir: &Path,
    s: Setup,
) -> Result {
    let Setup {
        base,
        serials,
        members,
        socks,
        net,
        active,
        mut load,
    } = s;
    // Planned swap: force the active passive; no connection may be lost. The operator's
    // way: hactl over the management API, on the passive member, naming the active one
    // (its controller relays the forcing over the HA links; the passive's daemon first
    // resynchronizes the active's table, since it is the one taking over).
    load.cmd("mark")?;
    std::thread::sleep(Duration::from_secs(1));
    run(Command::new(b("hactl"))
        .arg("--socket")
        .arg(&socks[1 - active])
        .args(["passive", serials[active]]))?;
    let new_active = wait_roles(&socks, Some(1 - active), Duration::from_secs(15))?;
    std::thread::sleep(Duration::from_secs(4));
    let (sv, n, gap, failed) = load.report()?;
    println!(
        "planned-swap: survived={sv}/{n} gap_ms={gap} (hactl passive {} on {})",
        serials[active],
        serials[1 - active]
    );
    run(Command::new(b("hactl"))
        .arg("--socket")
        .arg(&socks[1 - active])
        .args(["reset", serials[active]]))?;
    // The member that was forced passive may take over again after the reset (the election
    // decides); wait for the roles to settle.
    std::thread::sleep(Duration::from_secs(2));
    let active = wait_roles(&socks, None, Duration::from_secs(15))?;
    if active != new_active {
        std::thread::sleep(Duration::from_secs(3));
    }
    let swap_ok = sv == n && failed == 0;
    let events = crate::util::output(
        Command::new(b("hactl"))
            .arg("--socket")
            .arg(&socks[active])
            .args(["events", "--last", "8"]),
    )?;
    println!(
        "e2e: hactl events --last 8 on {}:\n{}",
        serials[active],
        events.trim_end()
    );

    // Rolling update of the controllers' firmware (`hactl update` over both daemons, the
    // install hook restarting each QEMU controller with the image) under load: no lost
    // connection.
    let active = match (firmware, &net) {
        (Some(elf), Some(net)) => {
            update::update_phase(env, b, elf, dir, net, &serials, &members, &socks, &mut load)?
        }
        _ => {
            println!("e2e: rolling update skipped (host-process controllers have no image)");
            active
        }
    };

    // PSK rotation under load, phase by phase on every member (accept, use, retire): no swap,
    // no lost connection.
    let new_psk = dir.join("psk2");
    run(Command::new(b("hactl"))
        .args(["psk", "generate", "-o"])
        .arg(&new_psk))?;
    load.cmd("mark")?;
    let mut rotate = Command::new(b("hactl"));
    rotate
        .arg("--socket")
        .arg(&socks[0])
        .args(["psk", "rotate", "--psk-file"])
        .arg(&new_psk)
        .args(["--key-id", "2"]);
    for sock in &socks {
        rotate.arg("--member-socket").arg(sock);
    }
    run(&mut rotate)?;
    std::thread::sleep(Duration::from_secs(2));
    let still = wait_roles(&socks, Some(active), Duration::from_secs(2))
        .map_err(|e| format!("e2e: a swap happened during the PSK rotation: {e}"))?;
    let (sv3, n3, gap3, _) = load.report()?;
    println!(
        "psk-rotation: survived={sv3}/{n3} gap_ms={gap3} active={}",
        serials[still]
    );
    if sv3 != n3 {
        return Err(format!(
            "e2e: the PSK rotation lost {} connections",
            n3 - sv3
        ));
    }

    // After the rotation, every process restarts under load and no connection is lost
    // (issue 10, defect 4): the passive's controller (its block holds the new key), its
    // daemon (the state-sync keyring file), then the active's daemon (the role moves to the
    // peer, which must hold the whole table, synced with the new key).
    let still = match (firmware, &net) {
        (Some(elf), Some(net)) => restarts_after_rotation(
            env, b, elf, net, &serials, &members, &socks, still, &mut load,
        )?,
        _ => still,
    };

    // Configuration sync on the running cluster: one `confsync service` per member (role
    // from its daemon), operated with hactl.
    config_sync_phase(env, b, dir, &new_psk, base, &serials, &socks, still)?;

    // The operator's other commands on the running cluster, and a planned swap the other
    // way (`hactl active` on the passive, which first resynchronizes the table).
    let active = commands::commands_phase(b, &serials, &socks, still, &mut load)?;

    // `hactl reload` on the running cluster: a weight changed in place, seen in the quality
    // factor, no swap (QEMU members: their board simulators fail a fan).
    if firmware.is_some() {
        reload::reload_phase(env, b, dir, &serials, &members, &socks, active, &mut load)?;
    }

    // The members form a cluster (membership document) before the crash; after it the dead
    // member is removed and a replacement joins (QEMU controllers only).
    let replacement = match (firmware, &net) {
        (Some(elf), Some(net)) => Some(replace::Cluster {
            b,
            dir,
            net,
            elf,
            serials,
            members,
            socks: &socks,
            psk: &new_psk,
            key_id: 2,
            timers: &o.timers,
        }),
        _ => None,
    };
    if let Some(cl) = &replacement {
        replace::form(cl, active)?;
    }

    // Crash of the active: its controller and daemon are killed.
    load.cmd("mark")?;
    std::thread::sleep(Duration::from_secs(1));
    let m = members[active];
    println!(
        "e2e: killing member {} (controller and daemon)",
        serials[active]
    );
    // Both at once (a dead box), reaped after.
    let dead = env.kill_now(&[&format!("controller-{m}"), &format!("daemon-{m}")]);
    Env::reap(dead);
    let survivor = 1 - active;
    let killed_at = Instant::now();
    let deadline = killed_at + Duration::from_secs(20);
    while mode(&socks[survivor]).as_deref() != Some("active") {
        if Instant::now() > deadline {
            return Err(format!(
                "e2e: the survivor never became active\n--- daemon log\n{}\n--- status\n{}\n--- its last events\n{}\n--- its controller's log\n{}",
                env.log_tail(&format!("daemon-{}", members[survivor])),
                diagnostics(&socks[survivor..=survivor]),
                last_events(&socks[survivor], 20),
                controller_log(firmware, dir, members[survivor], 40)
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "e2e: {} reports active {} ms after the kill",
        serials[survivor],
        killed_at.elapsed().as_millis()
    );
    std::thread::sleep(Duration::from_secs(8));
    let (sv2, n2, gap2, _) = load.report()?;
    load.cmd("stop")?;
    if let Some(cl) = &replacement {
        replace::replace(env, cl, active)?;
    }
    println!("tcp-survival: survived={sv2}/{n2} gap_ms={gap2}");
    if !swap_ok {
        return Err(format!("e2e: the planned swap lost {} connections", n - sv));
    }
    if sv2 != n2 {
        return Err(format!(
            "e2e: {} connections did not survive the crash",
            n2 - sv2
        ));
    }
    Ok(())
}

/// The restarts after the PSK rotation, under load; returns the active member's index.
#[allow(clippy::too_many_arguments)]
fn restarts_after_rotation(
    env: &mut Env,
    b: &dyn Fn(&str) -> String,
    elf: &Path,
    net: &LinkPorts,
    serials: &[&str; 2],
    members: &[&str; 2],
    socks: &[std::path::PathBuf],
    active: usize,
    load: &mut Load,
) -> Result<usize> {
    load.cmd("mark")?;
    let p = 1 - active;
    let wait_mode = |i: usize, want: &str| -> Result {
        let deadline = Instant::now() + Duration::from_secs(20);
        while mode(&socks[i]).as_deref() != Some(want) {
            if Instant::now() > deadline {
                return Err(format!(
                    "e2e: after the restart {} is {:?}, not {want}\n{}",
                    serials[i],
                    mode(&socks[i]),
                    last_events(&socks[i], 12)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(())
    };

    println!(
        "e2e: restarting the controller of {} after the rotation",
        serials[p]
    );
    env.restart_controller(elf, members[p], net, p)?;
    wait_mode(p, "passive")?;
    wait_roles(socks, Some(active), Duration::from_secs(5)).map_err(|e| {
        format!("e2e: the controller restart after the rotation caused a swap: {e}")
    })?;

    println!(
        "e2e: restarting the daemon of {} after the rotation",
        serials[p]
    );
    env.restart_daemon(b, members[p])?;
    wait_mode(p, "passive")?;
    wait_same_table(&socks[p], &socks[active], Duration::from_secs(15))
        .map_err(|e| format!("{e}: the restarted passive daemon did not resync"))?;
    wait_roles(socks, Some(active), Duration::from_secs(5))
        .map_err(|e| format!("e2e: the daemon restart after the rotation caused a swap: {e}"))?;
    // The restarted daemon asked its controller for the ring: the controller's events from
    // before the daemon started are in its log.
    let started = forwarding(&socks[p], Duration::from_secs(5))
        .map(|f| f.started_ms)
        .ok_or("e2e: no forwarding report from the restarted daemon")?;
    let log = crate::util::output(
        Command::new(b("hactl"))
            .arg("--socket")
            .arg(&socks[p])
            .args(["events", "--json"]),
    )?;
    let earlier = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["seq"].is_u64() && v["time_ms"].as_u64().is_some_and(|t| t < started))
        .count();
    if earlier == 0 {
        return Err(format!(
            "e2e: the restarted daemon of {} shows none of its controller's earlier events:\n{log}",
            serials[p]
        ));
    }
    println!(
        "events-replay: the restarted daemon of {} holds {earlier} controller events from before it started",
        serials[p]
    );

    // The active's main CPU restarts: its controller hands the role to the peer.
    println!(
        "e2e: restarting the daemon of the active {} after the rotation",
        serials[active]
    );
    env.restart_daemon(b, members[active])?;
    let now_active = wait_roles(socks, Some(p), Duration::from_secs(20))
        .map_err(|e| format!("e2e: after the active's daemon restarted: {e}"))?;
    wait_same_table(&socks[active], &socks[now_active], Duration::from_secs(15))
        .map_err(|e| format!("{e}: the restarted daemon did not resync"))?;
    std::thread::sleep(Duration::from_secs(2));
    let (sv, n, gap, failed) = load.report()?;
    println!(
        "psk-restarts: {}'s controller and daemon, then {}'s daemon restarted with key id 2: survived={sv}/{n} gap_ms={gap} active={}",
        serials[p], serials[active], serials[now_active]
    );
    if sv != n || failed > 0 {
        return Err(format!(
            "e2e: the restarts after the PSK rotation lost {} connections",
            n - sv
        ));
    }
    Ok(now_active)
}
