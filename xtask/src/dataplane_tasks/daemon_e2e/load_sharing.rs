//! The kernel e2e's load-sharing case (`--cases load-sharing`), the parts that are its own:
//! SN-A forwards for domain 0 and SN-B for domain 1 at once, each through its own cluster
//! addresses; before the crash both members must hold only their domain's addresses and
//! have installed each other's entries; after SN-A's crash SN-B forwards for both; then
//! SN-A comes back and takes its domain again, and no connection of either domain may be
//! lost on the way back either. The crash itself is the kernel case's (`kernel.rs`).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::env::{diagnostics, wait_domains, Env, LinkPorts, Load};
use super::kernel::{sample, scrape_metrics, wait_installed};
use super::Opts;

/// The cluster as these checks see it (the parts of `setup::Setup` besides its load).
pub(super) struct Cluster<'a> {
    /// Management sockets of the daemons.
    pub(super) socks: &'a [std::path::PathBuf],
    /// Member serials.
    pub(super) serials: [&'static str; 2],
    /// Member names (namespaces, process names).
    pub(super) members: [&'static str; 2],
    /// The test wire between QEMU controllers.
    pub(super) net: Option<&'a LinkPorts>,
}
use crate::util::Result;

/// `hactl --socket SOCK ARGS…`'s output.
fn hactl_on(b: &dyn Fn(&str) -> String, sock: &Path, args: &[&str]) -> Result<String> {
    crate::util::output(
        Command::new(b("hactl"))
            .arg("--socket")
            .arg(sock)
            .args(args),
    )
}

/// The addresses of interface `dev` in namespace `ns`.
fn addresses(ns: &str, dev: &str) -> String {
    crate::util::output(Command::new("ip").args(["-n", ns, "-o", "-4", "addr", "show", "dev", dev]))
        .unwrap_or_default()
}

/// Every member holds exactly the cluster addresses of the domains in `domains[i]`
/// (domain 0: 10.1.0.254 inside, 10.2.0.254 outside; domain 1: 10.3.0.254, 10.2.0.253);
/// the members are `(serial, namespace)`.
fn check_cluster_addresses(members: &[(&str, String)], domains: &[&[u8]], tag: &str) -> Result {
    const OF: [[(&str, &str); 2]; 2] = [
        [("in", "10.1.0.254/"), ("out", "10.2.0.254/")],
        [("in", "10.3.0.254/"), ("out", "10.2.0.253/")],
    ];
    for ((m, ns), want) in members.iter().zip(domains) {
        let (inside, outside) = (addresses(ns, "in"), addresses(ns, "out"));
        for (d, addrs) in OF.iter().enumerate() {
            for (dev, a) in addrs {
                let held = if *dev == "in" { &inside } else { &outside }.contains(a);
                if held != want.contains(&(d as u8)) {
                    return Err(format!(
                        "e2e[{tag}]: member {m} {} cluster address {a} of domain {d} on {dev} \
                         (it forwards for {want:?}):\n{inside}{outside}",
                        if held { "holds" } else { "lacks" }
                    ));
                }
            }
        }
        println!(
            "e2e[{tag}]: member {m} holds the cluster addresses of domain(s) {want:?} and no other"
        );
    }
    Ok(())
}

/// The members as `(serial, namespace)`.
fn members(env: &Env, s: &Cluster) -> Vec<(&'static str, String)> {
    (0..2)
        .map(|i| (s.serials[i], env.ns(s.members[i])))
        .collect()
}

/// Before the crash: each member installed the other's half (domain 0's connections go
/// through SN-A, domain 1's through SN-B), holds only its own domain's addresses, and
/// `hactl info` shows both roles without a conflict.
pub(super) fn before_crash(
    env: &Env,
    b: &dyn Fn(&str) -> String,
    s: &Cluster,
    o: &Opts,
    tag: &str,
) -> Result {
    let t0 = Instant::now();
    let within = Duration::from_secs(10 + o.connections as u64 / 2_000);
    // The load's first share (the larger half) goes through domain 0.
    let n = o.connections as u64;
    let (d0, d1) = (n - n / 2, n / 2);
    let (into_b, into_a) = (
        wait_installed(&s.socks[1], d0, within),
        wait_installed(&s.socks[0], d1, within),
    );
    println!(
        "e2e[{tag}]: synced both ways in {} ms: {} installed {into_b} entries of domain 0 \
         ({d0} connections through {}), {} installed {into_a} of domain 1 ({d1} through {})",
        t0.elapsed().as_millis(),
        s.serials[1],
        s.serials[0],
        s.serials[0],
        s.serials[1]
    );
    if into_b < d0 || into_a < d1 {
        return Err(format!(
            "e2e[{tag}]: the members did not sync each other's domain\n{}",
            diagnostics(s.socks)
        ));
    }
    check_cluster_addresses(&members(env, s), &[&[0], &[1]], tag)?;
    // What the operator sees: no conflict, each member's role in each domain.
    let info = hactl_on(b, &s.socks[0], &["info"])?;
    println!(
        "e2e[{tag}]: hactl info on {}:\n{}",
        s.serials[0],
        info.trim_end()
    );
    let rows = [
        "domains: 0 active (prio 50), 1 passive (prio 0)",
        "domains: 0 passive (prio 0), 1 active (prio 50)",
    ];
    if info.contains("members are active") || rows.iter().any(|r| !info.contains(r)) {
        return Err(format!(
            "e2e[{tag}]: hactl info does not show the load sharing ({rows:?})"
        ));
    }
    // Every member's model, the peer's too (its daemon tells this one over the state sync;
    // within a few seconds of the session's start).
    let deadline = Instant::now() + Duration::from_secs(10);
    let models = loop {
        let json = hactl_on(b, &s.socks[0], &["info", "--json"])?;
        let v: serde_json::Value =
            serde_json::from_str(&json).map_err(|e| format!("e2e[{tag}]: info --json: {e}"))?;
        let models: Vec<String> = v["members"]
            .as_array()
            .map(|ms| {
                ms.iter()
                    .map(|m| m["model"].as_str().unwrap_or("").to_string())
                    .collect()
            })
            .unwrap_or_default();
        let known = models.len() == 2 && models.iter().all(|m| !m.is_empty() && m != "-");
        if known || Instant::now() > deadline {
            break models;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    println!(
        "e2e[{tag}]: models in hactl info on {}: {models:?}",
        s.serials[0]
    );
    if models.len() != 2
        || models.iter().any(|m| m.is_empty() || m == "-")
        || models[0] != models[1]
    {
        return Err(format!(
            "e2e[{tag}]: hactl info does not know every member's model: {models:?}"
        ));
    }
    Ok(())
}

/// After the crash: the survivor holds both domains' addresses and says so (`hactl
/// forwarding`, the metrics).
pub(super) fn after_takeover(
    env: &Env,
    b: &dyn Fn(&str) -> String,
    s: &Cluster,
    survivor: usize,
    tag: &str,
) -> Result {
    let member = [(s.serials[survivor], env.ns(s.members[survivor]))];
    check_cluster_addresses(&member, &[&[0, 1]], tag)?;
    let fwd = hactl_on(b, &s.socks[survivor], &["forwarding"])?;
    println!(
        "e2e[{tag}]: hactl forwarding on the survivor: {}",
        fwd.trim_end()
    );
    if !fwd.contains("active for domains 0, 1") {
        return Err(format!(
            "e2e[{tag}]: hactl forwarding does not name both domains: {fwd}"
        ));
    }
    let scrape = scrape_metrics(&env.ns(s.members[survivor]))?;
    let per = |d| sample(&scrape, "ha_forwarding_domain_active", Some(("domain", d)));
    if per("0") != Some(1.0) || per("1") != Some(1.0) {
        return Err(format!(
            "e2e[{tag}]: the survivor's metrics do not show both domains: {:?} {:?}",
            per("0"),
            per("1")
        ));
    }
    Ok(())
}

/// The way back: SN-A's interfaces up, its controller and daemon started again; it is the
/// preferred member of domain 0, so it takes that domain back from SN-B. Every connection
/// of both domains must go on through it (the returning member installs SN-B's table
/// before it forwards). Prints `tcp-survival(kernel, load sharing, failback): …`.
pub(super) fn failback(
    env: &mut Env,
    b: &dyn Fn(&str) -> String,
    firmware: Option<&Path>,
    s: &Cluster,
    load: &mut Load,
    interval_ms: u64,
    tag: &str,
) -> Result {
    let (Some(elf), Some(net)) = (firmware, s.net) else {
        println!("e2e[{tag}]: failback not run: it restarts QEMU controllers (--controller qemu)");
        return Ok(());
    };
    let a = s.members[0];
    let ns = env.ns(a);
    for dev in ["in", "out"] {
        env.ip(&["-n", &ns, "link", "set", dev, "up"])?;
    }
    load.cmd("mark")?;
    let t0 = Instant::now();
    env.restart_controller(elf, a, net, 0)?;
    env.restart_daemon(b, a)?;
    println!("e2e[{tag}]: {} comes back", s.serials[0]);
    wait_domains(s.socks, &[&[0], &[1]], Duration::from_secs(60)).map_err(|e| {
        format!(
            "e2e[{tag}]: after {} came back: {e}\n{}",
            s.serials[0],
            env.log_tail("daemon-a")
        )
    })?;
    println!(
        "e2e[{tag}]: {} forwards for domain 0 again {} ms after its restart, {} for domain 1",
        s.serials[0],
        t0.elapsed().as_millis(),
        s.serials[1]
    );
    check_table_before_preemption(&env.dir.join("daemon-a.log"), tag)?;
    std::thread::sleep(Duration::from_millis(8_000.max(2 * interval_ms + 2_000)));
    check_cluster_addresses(&members(env, s), &[&[0], &[1]], tag)?;
    let v = load.report_json()?;
    let g = |k: &str| v[k].as_u64().unwrap_or(0);
    println!(
        "tcp-survival(kernel, load sharing, failback): survived={}/{} gap_ms={}",
        g("survived"),
        g("connections"),
        g("gap_ms")
    );
    if g("survived") != g("connections") || g("connections") == 0 {
        return Err(format!(
            "e2e[{tag}]: connections lost when {} came back: {}/{} (first error: {})\n{}\n{}",
            s.serials[0],
            g("survived"),
            g("connections"),
            v["first_error"].as_str().unwrap_or("-"),
            diagnostics(s.socks),
            env.log_tail("daemon-a")
        ));
    }
    Ok(())
}

/// The returning member's controller counted it as lacking SN-B's table (its quality went
/// to 0, an event the controller reports, until the daemon said it held the table) and it
/// took domain 0 back only after its daemon said it held it: in its journal "peers' table
/// held" comes before the takeover of domain 0, and the controller's `quality 100 -> 0`
/// and `quality 0 -> 100` are there (the controller's events may reach the journal later
/// than the daemon's own lines, so only the daemon's lines are ordered).
fn check_table_before_preemption(journal: &Path, tag: &str) -> Result {
    let text = std::fs::read_to_string(journal)
        .map_err(|e| format!("e2e[{tag}]: {}: {e}", journal.display()))?;
    let at = |needle: &str| text.lines().position(|l| l.contains(needle));
    let held = at("peers' table held");
    let takeover = at("of domain 0:");
    let lowered = at("quality 100 -> 0").is_some() && at("quality 0 -> 100").is_some();
    println!(
        "e2e[{tag}]: the returning member's journal: {}",
        text.lines()
            .filter(|l| {
                l.contains("peers' table") || l.contains("of domain 0:") || l.contains("quality")
            })
            .take(5)
            .collect::<Vec<_>>()
            .join(" | ")
    );
    match (held, takeover) {
        (Some(h), Some(t)) if h < t && lowered => Ok(()),
        _ => Err(format!(
            "e2e[{tag}]: the returning member took domain 0 back without its controller first \
             counting it as lacking the peer's table (journal lines: held {held:?}, takeover \
             {takeover:?}; quality lowered to 0 and back: {lowered})"
        )),
    }
}
