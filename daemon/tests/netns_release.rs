//! `ha-daemon --release` in a network namespace the test creates and removes: a member whose
//! daemon died while it held the cluster addresses is taken out of the data path by its
//! supervisor: the addresses go, the standby guard is set (new connections dropped), and a
//! second release (or one with nothing to release) succeeds too. Needs root (as CI runs).

use std::process::Command;

/// The namespace, removed when dropped (also when the test fails).
struct Ns(String);

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn release(ns: &str, cfg: &std::path::Path) -> std::process::Output {
    Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(env!("CARGO_BIN_EXE_ha-daemon"))
        .arg("--config")
        .arg(cfg)
        .arg("--release")
        .output()
        .expect("run ha-daemon")
}

#[test]
fn a_released_member_holds_no_cluster_address_and_admits_no_new_connection() {
    let ns = Ns(format!("hadr{}", std::process::id() % 100_000));
    ip(&["netns", "add", &ns.0]);
    for (dev, peer, addr) in [
        ("in", "in-p", "10.1.0.254/24"),
        ("out", "out-p", "10.2.0.254/24"),
    ] {
        ip(&[
            "-n", &ns.0, "link", "add", dev, "type", "veth", "peer", "name", peer,
        ]);
        ip(&["-n", &ns.0, "link", "set", dev, "up"]);
        ip(&["-n", &ns.0, "addr", "add", addr, "dev", dev]);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("daemon.toml");
    let toml = r#"
config_block = "/nonexistent/member.cfg"
host_link = "/nonexistent/host.sock"
[forward.inside]
ifname = "in"
cluster_ip = "10.1.0.254/24"
member_ip = "10.1.0.11"
[forward.outside]
ifname = "out"
cluster_ip = "10.2.0.254/24"
member_ip = "10.2.0.11"
"#;
    std::fs::write(&cfg, toml).expect("config");

    let out = release(&ns.0, &cfg);
    assert!(out.status.success(), "{out:?}");
    let addrs = ip(&["-n", &ns.0, "addr", "show"]);
    assert!(
        !addrs.contains("10.1.0.254") && !addrs.contains("10.2.0.254"),
        "cluster addresses left:\n{addrs}"
    );
    let guard = Command::new("ip")
        .args([
            "netns", "exec", &ns.0, "nft", "list", "table", "inet", "ha_guard",
        ])
        .output()
        .expect("nft");
    let rules = String::from_utf8_lossy(&guard.stdout);
    assert!(
        guard.status.success() && rules.contains("ct state new"),
        "no standby guard: {guard:?}"
    );

    // Again: nothing left to remove is no failure.
    let again = release(&ns.0, &cfg);
    assert!(again.status.success(), "{again:?}");

    // A userspace-path configuration has nothing to release.
    let user = dir.path().join("user.toml");
    std::fs::write(&user, format!("datapath = \"userspace\"\n{toml}")).expect("config");
    let out = release(&ns.0, &user);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no kernel data path"));

    // A broken configuration: a clear error, exit code 2, nothing touched.
    std::fs::write(&cfg, "forward = 3").expect("config");
    let bad = release(&ns.0, &cfg);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
}
