//! The daemon in a network namespace between a client and a server namespace (created and
//! removed by the test), its controller played by the test over the real host link: interface
//! report up, role decisions down, forwarding only while active, connections kept across a
//! passive spell, stale decisions ignored. Needs root (as CI runs).
//!
//! The connection table here is a small test filter; the dataplane crate's table is exercised
//! by the end-to-end test (`cargo xtask e2e tcp-survival`).

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ha_daemon::app::{self, NoSync};
use ha_daemon::config::DaemonConfig;
use ha_daemon::fastpath::{tcp_flags, Filter, Packet, Side};
use ha_daemon::runtime::Activate;
use ha_hostlink::{End, HostCodec, HostLink};
use ha_proto::config_block::{
    AggregateRule, ConfigBlock, DomainEntry, HwWeights, LinkAddr, MemberEntry, TimerProfile,
};
use ha_proto::keys::Psk;
use ha_proto::msg::host::HostMsg;
use ha_proto::msg::{Role, Serial};

/// The daemon's `forwarding` answer over its management socket.
fn forwarding(dir: &Path) -> ha_mgmt_api::ForwardingReport {
    let mut c =
        ha_mgmt_api::client::Client::connect(&dir.join("mgmt.sock"), Duration::from_secs(5))
            .expect("mgmt socket");
    match c
        .call(&ha_mgmt_api::Request::Forwarding, |_| {})
        .expect("call")
    {
        ha_mgmt_api::Reply::Forwarding(f) => f,
        r => panic!("{r:?}"),
    }
}

/// Waits until the daemon reports `active` with `changes` role changes.
fn wait_forwarding(dir: &Path, active: bool, changes: u64) -> ha_mgmt_api::ForwardingReport {
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        let f = forwarding(dir);
        if f.active == active && f.changes == changes {
            return f;
        }
        assert!(
            Instant::now() < deadline,
            "forwarding stays {f:?}, want active={active} changes={changes}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Flows opened from a side that allows it; both directions pass afterwards.
#[derive(Default)]
struct Flows {
    open: HashSet<(IpAddr, u16, IpAddr, u16)>,
    activations: u32,
}

impl Filter for Flows {
    fn check(&mut self, p: &Packet, _from: Side, allow_new: bool, _now: Instant) -> bool {
        if self.open.contains(&(p.src, p.sport, p.dst, p.dport))
            || self.open.contains(&(p.dst, p.dport, p.src, p.sport))
        {
            return true;
        }
        if allow_new && p.flags & tcp_flags::SYN != 0 {
            self.open.insert((p.src, p.sport, p.dst, p.dport));
            return true;
        }
        false
    }
}

impl Activate for Flows {
    fn set_role(&mut self, active: bool, _now: Instant) {
        if active {
            self.activations += 1;
        }
    }
}

struct Namespaces(Vec<String>);

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.0 {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

fn enter(ns: &str) {
    let f = std::fs::File::open(format!("/var/run/netns/{ns}")).expect("netns file");
    nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
}

fn block() -> ConfigBlock {
    let serial = |s: &str| Serial::new(s).expect("serial");
    let mut members = heapless::Vec::new();
    for (s, ip) in [("SN-A", [127, 0, 0, 1]), ("SN-B", [127, 0, 0, 2])] {
        members
            .push(MemberEntry {
                serial: serial(s),
                main_link: LinkAddr { ip, port: 44240 },
            })
            .expect("room");
    }
    let mut domains = heapless::Vec::new();
    domains
        .push(DomainEntry {
            id: 0,
            preferred: None,
        })
        .expect("room");
    ConfigBlock {
        serial: serial("SN-A"),
        cluster_id: 77,
        key_id: 1,
        encrypt: false,
        members,
        backup_link: false,
        state_sync_port: 44242,
        timers: TimerProfile::Default,
        domains,
        aggregate: AggregateRule::AllDown,
        tpm_included: false,
        weights: HwWeights::default(),
        psk: Psk([
            79, 204, 198, 15, 169, 100, 136, 208, 217, 2, 63, 218, 246, 12, 2, 121, 254, 18, 215,
            194, 192, 99, 229, 9, 42, 57, 169, 187, 79, 249, 188, 221,
        ]),
    }
}

/// Sends one message on `s` and waits up to `wait` for its echo.
fn echo(s: &mut TcpStream, msg: &[u8], wait: Duration) -> bool {
    if s.write_all(msg).is_err() {
        return false;
    }
    s.set_read_timeout(Some(wait)).expect("timeout");
    let mut got = vec![0u8; msg.len()];
    s.read_exact(&mut got).is_ok() && got == msg
}

fn role(r: Role) -> HostMsg {
    HostMsg::Roles(
        [ha_proto::msg::host::DomainRoleOf { domain: 0, role: r }]
            .into_iter()
            .collect(),
    )
}

#[test]
fn forwards_only_while_active_and_keeps_connections() {
    let p = format!("hdt{}", std::process::id() % 100_000);
    let (nc, ns, na) = (format!("{p}-c"), format!("{p}-s"), format!("{p}-a"));
    for n in [&nc, &ns, &na] {
        ip(&["netns", "add", n]);
    }
    let _guard = Namespaces(vec![nc.clone(), ns.clone(), na.clone()]);
    for n in [&nc, &ns, &na] {
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    ip(&[
        "-n", &na, "link", "add", "in", "type", "veth", "peer", "name", "c0", "netns", &nc,
    ]);
    ip(&[
        "-n", &na, "link", "add", "out", "type", "veth", "peer", "name", "s0", "netns", &ns,
    ]);
    for (n, d) in [(&na, "in"), (&na, "out"), (&nc, "c0"), (&ns, "s0")] {
        ip(&["-n", n, "link", "set", d, "up"]);
    }
    ip(&["-n", &nc, "addr", "add", "10.1.0.1/24", "dev", "c0"]);
    ip(&["-n", &ns, "addr", "add", "10.2.0.1/24", "dev", "s0"]);
    ip(&[
        "-n",
        &nc,
        "route",
        "add",
        "10.2.0.0/24",
        "via",
        "10.1.0.254",
    ]);
    ip(&[
        "-n",
        &ns,
        "route",
        "add",
        "10.1.0.0/24",
        "via",
        "10.2.0.254",
    ]);

    let dir = std::env::temp_dir().join(format!("{p}-dir"));
    std::fs::create_dir_all(&dir).expect("dir");
    let b = block();
    let mut img = vec![0u8; 4096];
    let n = b.encode(&mut img).expect("encode block");
    std::fs::write(dir.join("m.cfg"), &img[..n]).expect("write block");
    let host_sock = dir.join("host.sock");
    let listener = UnixListener::bind(&host_sock).expect("host socket");
    let cfg = DaemonConfig::parse(&format!(
        r#"config_block = "{d}/m.cfg"
host_link = "{d}/host.sock"
mgmt_socket = "{d}/mgmt.sock"
state_dir = "{d}/state"
interfaces_period_ms = 500
bounce_on_swap_ms = 300
[[monitor]]
name = "in"
weight = 100
[[monitor]]
name = "out"
weight = 7
[forward.inside]
ifname = "in"
cluster_ip = "10.1.0.254/24"
member_ip = "10.1.0.11"
allow_new = true
[forward.outside]
ifname = "out"
cluster_ip = "10.2.0.254/24"
member_ip = "10.2.0.11"
[[peer]]
serial = "SN-B"
probe = ["10.1.0.1"]
[[peer]]
serial = "SN-C"
probe = ["10.1.0.99"]
"#,
        d = dir.display()
    ))
    .expect("daemon config");

    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let na2 = na.clone();
    let daemon = std::thread::spawn(move || {
        enter(&na2);
        app::run(cfg, 1, |_, _| (Flows::default(), NoSync), st)
    });

    // The controller's end of the host link.
    let (stream, _) = listener.accept().expect("daemon connects");
    let mut ctl = HostLink::new(stream, HostCodec::with_end(End::Controller, &b, 5));
    // As the agent does while the main CPU has not heard this boot: a keepalive, after which
    // the daemon's reports are bound to this boot.
    ctl.send(&HostMsg::Ping { nonce: 1 }).expect("send");
    let deadline = Instant::now() + Duration::from_secs(5);
    let ifaces = loop {
        assert!(Instant::now() < deadline, "no interface report");
        if let Some(HostMsg::Interfaces(v)) =
            ctl.recv_timeout(Duration::from_millis(100)).expect("recv")
        {
            break v;
        }
    };
    assert_eq!(ifaces.len(), 2);
    assert!(ifaces.iter().all(|i| i.up), "{ifaces:?}");
    assert_eq!(ifaces[1].weight, 7);

    // Server in its namespace.
    let ns2 = ns.clone();
    let server = std::thread::spawn(move || {
        enter(&ns2);
        let l = TcpListener::bind("10.2.0.1:7000").expect("bind");
        let (mut s, _) = l.accept().expect("accept");
        let mut buf = [0u8; 64];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if s.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
    });

    // Passive (starting): nothing is forwarded, the connection cannot open.
    let nc2 = nc.clone();
    let probe_passive = std::thread::spawn(move || {
        enter(&nc2);
        let to: SocketAddr = "10.2.0.1:7000".parse().expect("addr");
        TcpStream::connect_timeout(&to, Duration::from_millis(700)).is_err()
    })
    .join()
    .expect("client");
    assert!(
        probe_passive,
        "a member that is not active must not forward"
    );
    let f0 = wait_forwarding(&dir, false, 0);
    assert!(f0.controller_alive, "{f0:?}");
    assert_eq!(f0.since_ms, f0.started_ms, "{f0:?}");

    let before_active = f0.now_ms;
    ctl.send(&role(Role::Active)).expect("send");
    let f1 = wait_forwarding(&dir, true, 1);
    assert!(
        f1.since_ms >= before_active && f1.since_ms <= f1.now_ms,
        "{f1:?}"
    );
    let (tx, rx) = std::sync::mpsc::channel::<(bool, bool, bool)>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let nc3 = nc.clone();
    let client = std::thread::spawn(move || {
        enter(&nc3);
        let to: SocketAddr = "10.2.0.1:7000".parse().expect("addr");
        let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
        let first = echo(&mut s, b"one", Duration::from_secs(3));
        go_rx.recv().expect("go");
        // Now passive: no echo.
        let during = echo(&mut s, b"two", Duration::from_millis(800));
        go_rx.recv().expect("go");
        // Active again: the retransmitted "two" and then "three" come back.
        s.set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        let mut got = [0u8; 3];
        let two = s.read_exact(&mut got).is_ok() && &got == b"two";
        let after = two && echo(&mut s, b"three", Duration::from_secs(5));
        tx.send((first, during, after)).expect("report");
    });
    std::thread::sleep(Duration::from_millis(1500));
    let mut go_sent = false;
    ctl.send(&role(Role::Passive)).expect("send");
    // Leaving the active role bounces the forwarding interfaces (bounce_on_swap_ms): the
    // interface report shows them down, then up again.
    let t0 = Instant::now();
    let (mut saw_down, mut saw_up_again) = (false, false);
    while t0.elapsed() < Duration::from_millis(1400) {
        if let Some(HostMsg::Interfaces(v)) =
            ctl.recv_timeout(Duration::from_millis(20)).expect("recv")
        {
            let in_up = v.iter().any(|i| i.name.as_str() == "in" && i.up);
            saw_down |= !in_up;
            saw_up_again |= saw_down && in_up;
        }
        if t0.elapsed() > Duration::from_millis(200) && !go_sent {
            go_tx.send(()).expect("go");
            go_sent = true;
        }
    }
    assert!(saw_down && saw_up_again, "no bounce seen");
    // Roles are re-asserted periodically: applying the same role again changes nothing.
    assert_eq!(wait_forwarding(&dir, false, 2).started_ms, f0.started_ms);
    ctl.send(&role(Role::Active)).expect("send");
    ctl.send(&role(Role::Active)).expect("send");
    // Applying the same role twice is one change.
    wait_forwarding(&dir, true, 3);
    std::thread::sleep(Duration::from_millis(100));
    assert_eq!(forwarding(&dir).changes, 3);
    go_tx.send(()).expect("go");
    let (first, during, after) = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("client result");
    assert!(first, "echo through the active member");
    assert!(!during, "a passive member forwarded");
    assert!(after, "the connection did not survive the passive spell");
    client.join().expect("client");

    // Probes over the data interfaces: an address that answers ICMP echo (the client's
    // kernel) is alive, one that does not exist is not.
    let serial = |s: &str| Serial::new(s).expect("serial");
    for (peer, want) in [("SN-B", true), ("SN-C", false)] {
        ctl.send(&HostMsg::ProbeRequest {
            peer: serial(peer),
            within_ms: 0,
        })
        .expect("send");
        let deadline = Instant::now() + Duration::from_secs(3);
        let got = loop {
            assert!(Instant::now() < deadline, "no probe result for {peer}");
            if let Some(HostMsg::ProbeResult { peer: p, alive }) =
                ctl.recv_timeout(Duration::from_millis(50)).expect("recv")
            {
                assert_eq!(p, serial(peer));
                break alive;
            }
        };
        assert_eq!(got, want, "probe of {peer}");
    }

    stop.store(true, Ordering::Relaxed);
    drop(ctl);
    let r = daemon.join().expect("daemon thread");
    assert!(r.is_ok(), "{r:?}");
    server.join().expect("server");
    let _ = std::fs::remove_dir_all(Path::new(&dir));
}
