//! Scaffolding of the namespace tests: namespaces created and removed by the test, threads
//! that enter one, and the root check that fails in CI instead of skipping.

#![allow(dead_code)]

use std::net::IpAddr;
use std::process::Command;

use ha_kernel::conntrack::{CtEntry, CtTuple, IPS_ASSURED, IPS_SEEN_REPLY};

/// Namespaces removed when dropped (also when the test fails).
pub struct Namespaces(pub Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Runs `ip args`, which must succeed; returns its output.
pub fn ip(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates namespace `<tag><pid>-<name>` (loopback up) for each name; removed when the guard
/// drops.
pub fn namespaces(tag: &str, names: &[&str]) -> (Namespaces, Vec<String>) {
    let p = format!("{tag}{}", std::process::id() % 100_000);
    let all: Vec<String> = names.iter().map(|n| format!("{p}-{n}")).collect();
    let guard = Namespaces(all.clone());
    for n in &all {
        ip(&["netns", "add", n]);
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    (guard, all)
}

/// True when the test can run (root, and `program` when given). Otherwise a failure in CI
/// (`CI=true`) and a message elsewhere.
pub fn can_run(what: &str, program: Option<&str>) -> bool {
    let has = program.is_none_or(|p| Command::new(p).arg("--version").output().is_ok());
    if nix::unistd::geteuid().is_root() && has {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but not root (or {program:?} missing): the {what} test cannot run"
    );
    eprintln!("not root (or {program:?} missing): {what} test not run");
    false
}

/// Runs `f` on a thread that entered namespace `ns` (sockets it opens stay in `ns`).
pub fn in_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/var/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = std::fs::File::open(&path).expect("netns file");
        nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread")
}

/// An answered UDP entry (no TCP window to track) from `src`:`port` to 10.2.0.20:53, with
/// `mark`.
pub fn udp_entry(src: IpAddr, port: u16, mark: u32) -> CtEntry {
    let orig = CtTuple {
        src,
        dst: "10.2.0.20".parse().unwrap(),
        proto: 17,
        src_port: port,
        dst_port: 53,
    };
    CtEntry {
        orig,
        reply: orig.inverse(),
        status: IPS_SEEN_REPLY | IPS_ASSURED,
        timeout_s: 600,
        mark,
        zone: 0,
        tcp: None,
        helper: None,
        seq_adj: None,
    }
}
