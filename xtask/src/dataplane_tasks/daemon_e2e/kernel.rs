//! `e2e tcp-survival --datapath kernel`: the same topology, but each member forwards in its
//! kernel with a stateful nftables ruleset and strict TCP tracking, and its daemon runs the
//! kernel data path (conntrack events synced, entries installed into the standby's kernel,
//! cluster addresses moved with rtnetlink). The active member dies as a box dies: its
//! controller and daemon killed, its data interfaces down. Every connection must go on
//! through the survivor; then the same crash in a cluster without state sync (the control)
//! must lose them all: a connection the survivor's kernel does not know is dropped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::env::{diagnostics, forwarding, last_events, Env};
use super::{setup, Opts};
use crate::util::{run, Result};

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The site's ruleset on every member: forward only what conntrack knows, new connections
/// only from the inside. The daemon's own guard (`inet ha_guard`) sits beside it.
const SITE_RULESET: &str = r#"
table inet site {
    chain forward {
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "in" oifname "out" ct state new accept
    }
}
"#;

/// The NAT case's addition: connections leave with the outside cluster address as their
/// source (what a site does so that servers reply to whichever member is active).
const SITE_NAT: &str = r#"
table ip site_nat {
    chain postrouting {
        type nat hook postrouting priority 100; policy accept;
        oifname "out" snat to 10.2.0.254
    }
}
"#;

/// Turns member `m` (index `i`) into a kernel router: its own addresses on both sides,
/// forwarding on, strict TCP tracking, the site's ruleset (with `nat`, its SNAT too).
pub(super) fn prepare_member(env: &Env, m: &str, i: usize, nat: bool) -> Result {
    let ns = env.ns(m);
    env.ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("10.1.0.{}/24", 11 + i),
        "dev",
        "in",
    ])?;
    env.ip(&[
        "-n",
        &ns,
        "addr",
        "add",
        &format!("10.2.0.{}/24", 11 + i),
        "dev",
        "out",
    ])?;
    let mut nft = Command::new("ip")
        .args(["netns", "exec", &ns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .map_err(|e| format!("e2e: nft: {e}"))?;
    if let Some(mut stdin) = nft.stdin.take() {
        let rules = if nat {
            format!("{SITE_RULESET}{SITE_NAT}")
        } else {
            SITE_RULESET.to_string()
        };
        std::io::Write::write_all(&mut stdin, rules.as_bytes())
            .map_err(|e| format!("e2e: nft: {e}"))?;
    }
    let st = nft.wait().map_err(|e| format!("e2e: nft: {e}"))?;
    if !st.success() {
        return Err(format!("e2e: nft refused the site ruleset in {ns}"));
    }
    // The ruleset loaded conntrack; its per-namespace settings exist from now on.
    run(Command::new("ip").args([
        "netns",
        "exec",
        &ns,
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_forward=1",
        "net.netfilter.nf_conntrack_tcp_loose=0",
        "net.netfilter.nf_conntrack_tcp_be_liberal=0",
    ]))
}

/// One crash on a fresh cluster: returns (survived, connections, longest gap ms, kill →
/// the survivor's data path active ms).
fn crash_case(
    o: &Opts,
    firmware: Option<&Path>,
    b: &dyn Fn(&str) -> String,
    tag: &str,
    id: u32,
) -> Result<(u64, u64, u64, u64)> {
    let dir = std::env::temp_dir().join(format!("ha-e2e-{id}-{tag}"));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| format!("e2e: {e}"))?;
    let mut env = Env {
        prefix: format!("hak{id}{}", &tag[..1]),
        dir: dir.clone(),
        namespaces: Vec::new(),
        procs: Vec::new(),
    };
    let r = (|| {
        let s = setup::start(&mut env, o, firmware, b, &dir, id)?;
        let mut load = s.load;
        // Let the standby's kernel catch up with the established connections.
        std::thread::sleep(Duration::from_secs(2));
        println!(
            "e2e[{tag}]: tables before the crash:\n{}",
            diagnostics(&s.socks)
        );
        let m = s.members[s.active];
        println!(
            "e2e[{tag}]: member {} dies: controller and daemon killed, data interfaces down",
            s.serials[s.active]
        );
        let killed_at = Instant::now();
        let killed_ms = unix_ms();
        env.kill(&format!("daemon-{m}"));
        env.kill(&format!("controller-{m}"));
        let ns = env.ns(m);
        for dev in ["in", "out"] {
            env.ip(&["-n", &ns, "link", "set", dev, "down"])?;
        }
        // Only what is delivered after the crash counts.
        load.cmd("mark")?;
        let survivor = 1 - s.active;
        // The survivor's data path: active once its guard is open, the addresses moved and
        // announced (the daemon's own record of that moment, to the ms).
        let deadline = killed_at + Duration::from_secs(20);
        let takeover = loop {
            match forwarding(&s.socks[survivor], Duration::from_secs(1)) {
                Some(f) if f.active => break f.since_ms.saturating_sub(killed_ms),
                _ if Instant::now() > deadline => {
                    return Err(format!(
                        "e2e[{tag}]: the survivor never became active\n{}",
                        env.log_tail(&format!("daemon-{}", s.members[survivor]))
                    ))
                }
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        std::thread::sleep(Duration::from_secs(8));
        let (sv, n, gap, _) = load.report()?;
        load.cmd("stop")?;
        println!(
            "e2e[{tag}]: survivor after the crash:\n{}\n--- its events\n{}\n--- its daemon's log\n{}",
            diagnostics(&s.socks[survivor..=survivor]),
            last_events(&s.socks[survivor], 12),
            env.log_tail(&format!("daemon-{}", s.members[survivor]))
        );
        Ok((sv, n, gap, takeover))
    })();
    r.map_err(|e| format!("{e}\n{}", env.post_mortem(firmware)))
}

/// The kernel-path scenario: the synced crash with plain forwarding, the same with SNAT on
/// the outside, then the control without sync.
pub(super) fn run_kernel(o: &Opts, firmware: Option<&Path>, b: &dyn Fn(&str) -> String) -> Result {
    let id = std::process::id() % 100_000;
    let mut lost = Vec::new();
    for (tag, label, nat) in [("plain", "plain", false), ("nat", "snat", true)] {
        let case = Opts {
            sync: true,
            nat,
            ..o.clone()
        };
        let (sv, n, gap, takeover) = crash_case(&case, firmware, b, tag, id)?;
        println!(
            "tcp-survival(kernel, {label}): survived={sv}/{n} gap_ms={gap} kill_to_forwarding_ms={takeover}"
        );
        if sv != n {
            lost.push(format!("{label}: {} of {n}", n - sv));
        }
    }
    let control = Opts {
        sync: false,
        nat: false,
        ..o.clone()
    };
    let (csv, cn, _, _) = crash_case(&control, firmware, b, "control", id)?;
    println!("tcp-survival(kernel, control without sync): survived={csv}/{cn}");
    if !lost.is_empty() {
        return Err(format!(
            "e2e: kernel path: connections did not survive the crash ({})",
            lost.join(", ")
        ));
    }
    if csv != 0 {
        return Err(format!(
            "e2e: kernel path: without state sync {csv} of {cn} connections survived: the \
             survivor's kernel is not strict, the test cannot tell sync from luck"
        ));
    }
    Ok(())
}
