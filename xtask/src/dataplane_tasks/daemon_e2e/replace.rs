//! The member-replacement phase of the tcp-survival e2e (SPEC A6): the members form a cluster
//! with `hactl cluster create/join` before the crash; after it, the survivor removes the
//! dead member (`hactl cluster remove`: the membership document, and through the survivor's
//! configuration service the HA member list of its controller and block), and a replacement with a new serial, holding
//! only the cluster's current key and the survivor's sync address, enrols (`hactl cluster
//! enroll`: its block from the survivor's settings), boots in the dead member's place and
//! joins (`hactl cluster join --ha-address`: the survivor's service adds it to the
//! survivor's HA member list as it answers) and becomes the passive member.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::confsync_argv;
use super::env::{
    last_events, mgmt, mode, qemu_member, table_size, wait_same_table, wire_control, Env, LinkPorts,
};
use crate::util::{output, run, Result};

/// Serial of the replacement member.
const NEW_SERIAL: &str = "SN-C";
/// Its main HA link.
const NEW_MAIN_LINK: &str = "10.0.0.3:44240";

/// Everything the phase needs of the running test.
pub(super) struct Cluster<'a> {
    pub b: &'a dyn Fn(&str) -> String,
    pub dir: &'a Path,
    pub net: &'a LinkPorts,
    pub elf: &'a Path,
    pub serials: [&'a str; 2],
    pub members: [&'a str; 2],
    pub socks: &'a [PathBuf],
    /// The PSK file and key id the cluster uses now.
    pub psk: &'a Path,
    pub key_id: u8,
    pub timers: &'a str,
}

impl Cluster<'_> {
    fn csock(&self, i: usize) -> PathBuf {
        self.dir.join(format!("confsync-{i}.sock"))
    }

    fn listen(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.net.base + 8 + i as u16)
    }

    fn hactl(&self, sock: &Path, csock: &Path) -> Command {
        let mut c = Command::new((self.b)("hactl"));
        c.arg("--socket")
            .arg(sock)
            .arg("--config-socket")
            .arg(csock);
        c
    }
}

/// Before the crash: the active member creates the cluster's membership document and the
/// passive one joins it (both already in each other's HA member list).
pub(super) fn form(c: &Cluster, active: usize) -> Result {
    let passive = 1 - active;
    run(c
        .hactl(&c.socks[active], &c.csock(active))
        .args(["cluster", "create", "--cluster-id", "4242", "--psk-file"])
        .arg(c.psk))?;
    run(c
        .hactl(&c.socks[passive], &c.csock(passive))
        .args(["cluster", "join", "--peer", &c.listen(active), "--psk-file"])
        .arg(c.psk))?;
    println!(
        "membership: {} created the cluster, {} joined",
        c.serials[active], c.serials[passive]
    );
    Ok(())
}

/// The members `sock`'s daemon lists, each with its mode as that member sees it.
fn members_of(sock: &Path, b: &dyn Fn(&str) -> String) -> Result<Vec<(String, String)>> {
    let text = output(
        Command::new(b("hactl"))
            .arg("--socket")
            .arg(sock)
            .args(["info", "--json"]),
    )?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("e2e: hactl info --json: {e}"))?;
    Ok(v["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
        .iter()
        .filter_map(|m| {
            let serial = m["serial"].as_str()?.to_string();
            Some((serial, m["mode"].as_str().unwrap_or("").to_string()))
        })
        .collect())
}

/// After the crash of member `dead`: remove it, boot the replacement in its place, join it.
pub(super) fn replace(env: &mut Env, c: &Cluster, dead: usize) -> Result {
    let survivor = 1 - dead;
    let b = c.b;
    // The failed member goes: the membership document and, through the survivor's
    // configuration service alone, the survivor's HA member list.
    run(c.hactl(&c.socks[survivor], &c.csock(survivor)).args([
        "cluster",
        "remove",
        "--serial",
        c.serials[dead],
    ]))?;
    let now = members_of(&c.socks[survivor], b)?;
    if now.len() != 1 || now[0].0 != c.serials[survivor] {
        return Err(format!(
            "e2e: after removing {}, {} lists {now:?}",
            c.serials[dead], c.serials[survivor]
        ));
    }

    // The replacement: it holds only the cluster's current key and the survivor's sync
    // address; its block (cluster id, key id, members, timers, domains) comes from the
    // survivor's configuration-sync service over the sealed channel (`cluster enroll`).
    let block = c.dir.join("2.cfg");
    let out = Command::new(b("hactl"))
        .args([
            "cluster",
            "enroll",
            "--peer",
            &c.listen(survivor),
            "--psk-file",
        ])
        .arg(c.psk)
        .args(["--serial", NEW_SERIAL, "--main-link", NEW_MAIN_LINK, "-o"])
        .arg(&block)
        .output()
        .map_err(|e| format!("e2e: hactl cluster enroll: {e}"))?;
    let said = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() {
        return Err(format!(
            "e2e: hactl cluster enroll failed: {said}{}",
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    let expect = format!(
        "enrolled {NEW_SERIAL} in cluster 4242 through {}: key id {}, 2 members ({}, {NEW_SERIAL}), timers {}",
        c.listen(survivor),
        c.key_id,
        c.serials[survivor],
        c.timers
    );
    if !said.starts_with(&expect) {
        return Err(format!(
            "e2e: cluster enroll said {said:?}, expected {expect:?}"
        ));
    }
    println!("replacement: {said}");
    let argv = qemu_member(c.elf, &block, c.dir, "c", c.net, dead)?;
    env.spawn("controller-c", None, &argv, false)?;
    env.spawn(
        "boardsim-c",
        None,
        &[
            (c.b)("ha-boardsim"),
            "--socket".into(),
            c.dir.join("c-sensors.sock").display().to_string(),
        ],
        true,
    )?;
    let m = c.members[dead];
    let toml = std::fs::read_to_string(c.dir.join(format!("{m}.toml")))
        .map_err(|e| format!("e2e: {e}"))?
        .replace(
            &c.dir.join(format!("{dead}.cfg")).display().to_string(),
            &block.display().to_string(),
        )
        .replace(&format!("{m}-host.sock"), "c-host.sock")
        .replace(&format!("{m}-mgmt.sock"), "c-mgmt.sock")
        // A new machine: its own state (boot counter, state-sync keyring), empty.
        .replace(&format!("state-{m}"), "state-c");
    let cfg = c.dir.join("c.toml");
    std::fs::write(&cfg, toml).map_err(|e| format!("e2e: {e}"))?;
    env.spawn(
        "daemon-c",
        Some(m),
        &[b("ha-daemon"), "--config".into(), cfg.display().to_string()],
        false,
    )?;
    let sock_c = c.dir.join("c-mgmt.sock");
    let csock_c = c.dir.join("confsync-c.sock");
    let listen_c = format!("127.0.0.1:{}", c.net.base + 10);
    let argv = confsync_argv(
        b,
        &c.dir.join("confsync-c"),
        &listen_c,
        c.psk,
        c.key_id,
        NEW_SERIAL,
        &format!("{}={}", c.serials[survivor], c.listen(survivor)),
        &sock_c,
        &csock_c,
        &c.dir.join("state-c/keyring"),
        &block,
    );
    env.spawn("confsync-c", None, &argv, false)?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !(csock_c.exists() && mode(&sock_c).is_some()) {
        if Instant::now() > deadline {
            return Err(format!(
                "e2e: the replacement did not come up\n{}",
                env.log_tail("daemon-c")
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    // It joins through the survivor's sync receiver alone (no socket of the survivor): the
    // membership document, and the survivor's HA member list, which the survivor's service
    // changes through its own daemon as it answers.
    run(c
        .hactl(&sock_c, &csock_c)
        .args([
            "cluster",
            "join",
            "--peer",
            &c.listen(survivor),
            "--psk-file",
        ])
        .arg(c.psk)
        .args(["--ha-address", NEW_MAIN_LINK]))?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let listed = members_of(&c.socks[survivor], b)?;
        let ok = mode(&sock_c).as_deref() == Some("passive")
            && mode(&c.socks[survivor]).as_deref() == Some("active")
            && listed.len() == 2
            && listed
                .iter()
                .any(|(s, m)| s == NEW_SERIAL && m == "passive");
        if ok {
            break;
        }
        if Instant::now() > deadline {
            return Err(format!(
                "e2e: the replacement did not join: {} lists {listed:?}, {NEW_SERIAL} is {:?}",
                c.serials[survivor],
                mode(&sock_c)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "replacement: {} removed, {NEW_SERIAL} joined as passive, {} active with 2 members",
        c.serials[dead], c.serials[survivor]
    );
    check_table(c, survivor, &sock_c)
        .map_err(|e| format!("{e}\n--- daemon-c\n{}", env.log_tail("daemon-c")))?;
    check_probe(c, survivor, &sock_c)
}

/// This member's state-sync counters and peer list (diagnostics).
fn sync_counters(sock: &Path) -> String {
    let Ok(v) = mgmt(sock, r#"{"cmd":"info","verbose":true}"#) else {
        return "no answer".into();
    };
    let me = v["me"].as_str().unwrap_or_default().to_string();
    let counters = v["members"]
        .as_array()
        .and_then(|m| m.iter().find(|m| m["serial"].as_str() == Some(&me)))
        .map(|m| m["counters"].clone())
        .unwrap_or_default();
    format!("{me} counters {counters} peers {}", v["peers"])
}

/// The replacement's connection table: the survivor's bulk reached it (same size, not 0).
fn check_table(c: &Cluster, survivor: usize, sock_c: &Path) -> Result {
    wait_same_table(sock_c, &c.socks[survivor], Duration::from_secs(15)).map_err(|e| {
        format!(
            "{e}: the replacement did not receive the survivor's table\nsurvivor: {}\nreplacement: {}",
            sync_counters(&c.socks[survivor]),
            sync_counters(sock_c)
        )
    })?;
    println!(
        "replacement: {NEW_SERIAL} holds the survivor's table ({} connections)",
        table_size(sock_c).unwrap_or(0)
    );
    Ok(())
}

/// The survivor's liveness probe of the replacement: its daemon lists the replacement's
/// data-plane addresses (learnt from the join), and with the HA links cut the probe finds
/// it alive (`PeerUnreachable`), not dead at once (`PeerLost`, the defect): no takeover
/// without a liveness check. The links come back and the roles stay.
fn check_probe(c: &Cluster, survivor: usize, sock_c: &Path) -> Result {
    let info = mgmt(&c.socks[survivor], r#"{"cmd":"info"}"#)?;
    let listed = info["peers"]
        .as_array()
        .and_then(|p| p.iter().find(|p| p["serial"].as_str() == Some(NEW_SERIAL)))
        .cloned()
        .ok_or_else(|| format!("e2e: the survivor's daemon does not know {NEW_SERIAL}: {info}"))?;
    let probe = listed["probe"].as_array().map_or(0, Vec::len);
    if probe == 0 {
        return Err(format!(
            "e2e: no probe addresses for {NEW_SERIAL}: {listed}"
        ));
    }
    let wire = |cmd: &str| wire_control(&c.dir.join("wire.sock"), cmd);
    let cut_ms = now_ms();
    wire(r#"{"cmd":"cut"}"#)?;
    let verdict = (|| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            for line in last_events(&c.socks[survivor], 50).lines() {
                let Ok(e) = serde_json::from_str::<serde_json::Value>(line) else {
                    continue;
                };
                let ev = if e["event"].is_object() {
                    &e["event"]
                } else {
                    &e
                };
                if ev["member"].as_str() != Some(NEW_SERIAL)
                    || ev["time_ms"].as_u64().unwrap_or(0) < cut_ms
                {
                    continue;
                }
                let detail = ev["detail"].as_str().unwrap_or("");
                if detail.contains(" unreachable") {
                    return Ok(());
                }
                if detail.contains(" lost (") {
                    return Err(format!(
                        "e2e: the survivor declared {NEW_SERIAL} lost without a liveness check: {line}"
                    ));
                }
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        Err(format!(
            "e2e: no probe verdict on {NEW_SERIAL} within 10 s\n{}",
            last_events(&c.socks[survivor], 20)
        ))
    })();
    wire(r#"{"cmd":"restore"}"#)?;
    verdict?;
    let deadline = Instant::now() + Duration::from_secs(15);
    while !(mode(&c.socks[survivor]).as_deref() == Some("active")
        && mode(sock_c).as_deref() == Some("passive"))
    {
        if Instant::now() > deadline {
            return Err(format!(
                "e2e: after the HA links came back: {} is {:?}, {NEW_SERIAL} {:?}",
                c.serials[survivor],
                mode(&c.socks[survivor]),
                mode(sock_c)
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "replacement: HA links cut: {} probed {NEW_SERIAL} at {probe} addresses: alive, no takeover; links back, roles kept",
        c.serials[survivor]
    );
    Ok(())
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
