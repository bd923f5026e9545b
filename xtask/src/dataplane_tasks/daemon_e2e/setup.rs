//! Setting up the e2e's cluster: keys and configuration blocks with hactl, network namespaces
//! (client, server, two members), the test wire, controllers and daemons, and the TCP load.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use super::env::{
    diagnostics, qemu_member, start_wire, wait_domains, wait_roles, Env, LinkPorts, Load, LoadPart,
};
use super::Opts;
use crate::util::{run, Result};

/// What [`start`] set up: two members (controller + daemon each) in namespaces, forwarding
/// the load client's connections, one of them active.
pub(super) struct Setup {
    /// First port of this run's range.
    pub base: u16,
    /// Member serials.
    pub serials: [&'static str; 2],
    /// Member names (namespaces, process names).
    pub members: [&'static str; 2],
    /// Management sockets of the daemons.
    pub socks: Vec<PathBuf>,
    /// The test wire between QEMU controllers (none with host-process controllers).
    pub net: Option<LinkPorts>,
    /// Index of the active member.
    pub active: usize,
    /// The load client.
    pub load: Load,
}

/// Keys and blocks (hactl), namespaces and links, the test wire, controllers and daemons,
/// then the load: `o.connections` TCP connections through the active member.
pub(super) fn start(
    env: &mut Env,
    o: &Opts,
    firmware: Option<&Path>,
    b: &dyn Fn(&str) -> String,
    dir: &Path,
    id: u32,
) -> Result<Setup> {
    // Keys and configuration blocks, with the project's own tool.
    let psk = dir.join("psk");
    run(Command::new(b("hactl"))
        .args(["psk", "generate", "-o"])
        .arg(&psk))?;
    // The run's fixed loopback ports (base + 1 … base + 10): below the kernel's ephemeral
    // range (32768–60999 by default), which the ports the kernel hands out (the test wire's,
    // the daemons' own) come from. Inside it, one of them took a QEMU's port in CI once
    // ("can't bind … Address already in use": that member never booted).
    let base = 20_000 + (id % 1_200) as u16 * 10;
    let serials: [&'static str; 2] = ["SN-A", "SN-B"];
    let ports = [base + 1, base + 2];
    for (i, s) in serials.iter().enumerate() {
        let mut c = Command::new(b("hactl"));
        c.args(["provision", "--psk-file"]).arg(&psk).args([
            "--serial",
            s,
            "--cluster-id",
            "4242",
            "--timers",
            &o.timers,
        ]);
        for (j, t) in serials.iter().enumerate() {
            // QEMU members have their own address on the emulated LAN9118; host-process
            // agents share the loopback.
            let addr = match firmware {
                Some(_) => format!("10.0.0.{}:44240", j + 1),
                None => format!("127.0.0.1:{}", ports[j]),
            };
            c.args(["--member", &format!("{t}={addr}")]);
        }
        if firmware.is_some() && o.backup_link {
            c.arg("--backup-link");
        }
        if o.shared {
            // Load sharing: each member the preferred one of a domain.
            c.args(["--domain", "0=SN-A", "--domain", "1=SN-B"]);
        }
        c.arg("-o").arg(dir.join(format!("{i}.cfg")));
        run(&mut c)?;
    }

    // Namespaces and links (with load sharing, a second client, `d`, on domain 1's subnet).
    let names: &[&str] = if o.shared {
        &["c", "d", "s", "a", "b"]
    } else {
        &["c", "s", "a", "b"]
    };
    for n in names {
        env.add_ns(n)?;
    }
    let (c, s) = (env.ns("c"), env.ns("s"));
    for (ns, addr) in [(&c, "10.1.0.1/24"), (&s, "10.2.0.1/24")] {
        env.ip(&["-n", ns, "link", "add", "br0", "type", "bridge"])?;
        env.ip(&["-n", ns, "addr", "add", addr, "dev", "br0"])?;
        env.ip(&["-n", ns, "link", "set", "br0", "up"])?;
    }
    for m in ["a", "b"] {
        let mns = env.ns(m);
        for (dev, other, peer) in [("in", &c, format!("c{m}")), ("out", &s, format!("s{m}"))] {
            env.ip(&[
                "-n", &mns, "link", "add", dev, "type", "veth", "peer", "name", &peer, "netns",
                other,
            ])?;
            env.ip(&["-n", other, "link", "set", &peer, "master", "br0", "up"])?;
            env.ip(&["-n", &mns, "link", "set", dev, "up"])?;
        }
    }
    let (na, nb) = (env.ns("a"), env.ns("b"));
    env.ip(&[
        "-n", &na, "link", "add", "ha", "type", "veth", "peer", "name", "ha", "netns", &nb,
    ])?;
    env.ip(&["-n", &na, "addr", "add", "10.9.0.1/24", "dev", "ha"])?;
    env.ip(&["-n", &nb, "addr", "add", "10.9.0.2/24", "dev", "ha"])?;
    env.ip(&["-n", &na, "link", "set", "ha", "up"])?;
    env.ip(&["-n", &nb, "link", "set", "ha", "up"])?;
    env.ip(&["-n", &c, "route", "add", "10.2.0.0/24", "via", "10.1.0.254"])?;
    env.ip(&["-n", &s, "route", "add", "10.1.0.0/24", "via", "10.2.0.254"])?;
    if o.shared {
        // Domain 1: its clients on 10.3.0.0/24 (the same inside segment) through its own
        // cluster addresses, 10.3.0.254 inside and 10.2.0.253 outside.
        let d = env.ns("d");
        env.ip(&[
            "-n", &d, "link", "add", "eth0", "type", "veth", "peer", "name", "cd", "netns", &c,
        ])?;
        env.ip(&["-n", &c, "link", "set", "cd", "master", "br0", "up"])?;
        env.ip(&["-n", &d, "addr", "add", "10.3.0.1/24", "dev", "eth0"])?;
        env.ip(&["-n", &d, "link", "set", "eth0", "up"])?;
        env.ip(&["-n", &d, "route", "add", "10.2.0.0/24", "via", "10.3.0.254"])?;
        env.ip(&["-n", &s, "route", "add", "10.3.0.0/24", "via", "10.2.0.253"])?;
    }
    if o.datapath == "kernel" {
        for (i, m) in ["a", "b"].iter().enumerate() {
            super::kernel::prepare_member(env, m, i, o.nat)?;
        }
    }

    // The test wire between the QEMU members' HA links.
    let net = match firmware {
        Some(_) => Some(start_wire(env, b, dir, base)?),
        None => None,
    };

    // Controllers and daemons.
    let mut socks = Vec::new();
    let members: [&'static str; 2] = ["a", "b"];
    for (i, m) in members.iter().enumerate() {
        let host_sock = dir.join(format!("{m}-host.sock"));
        let mgmt_sock = dir.join(format!("{m}-mgmt.sock"));
        let block = dir.join(format!("{i}.cfg"));
        let controller_argv: Vec<String> = match (&firmware, &net) {
            (Some(elf), Some(net)) => qemu_member(elf, &block, dir, m, net, i)?,
            _ => vec![
                b("ha-agent-host"),
                "--block".into(),
                block.display().to_string(),
                "--host-sock".into(),
                host_sock.display().to_string(),
                "--bind".into(),
                format!("127.0.0.1:{}", ports[i]),
                "--peer".into(),
                format!("127.0.0.1:{}", ports[1 - i]),
            ],
        };
        env.spawn(&format!("controller-{m}"), None, &controller_argv, false)?;
        if firmware.is_some() {
            // Every real board has its sensors: a member without a sensor source counts its
            // hardware as failed (quality 0) after its sensor timeout. The simulator follows
            // the controller through restarts (it reconnects to the socket).
            env.spawn(
                &format!("boardsim-{m}"),
                None,
                &[
                    b("ha-boardsim"),
                    "--socket".into(),
                    dir.join(format!("{m}-sensors.sock")).display().to_string(),
                ],
                true,
            )?;
        }
        let other = 1 - i;
        let toml = format!(
            r#"config_block = "{block}"
host_link = "{host}"
mgmt_socket = "{mgmt}"
state_dir = "{state}"
interfaces_period_ms = 1000
table = "{table}"
datapath = "{datapath}"
metrics_listen = "127.0.0.1:9469"

[[monitor]]
name = "in"
weight = 100

[[monitor]]
name = "out"
weight = 100

[forward.inside]
ifname = "in"
cluster_ip = "10.1.0.254/24"
member_ip = "10.1.0.{me}"
allow_new = true

[forward.outside]
ifname = "out"
cluster_ip = "10.2.0.254/24"
member_ip = "10.2.0.{me}"
{shared}
{sync}
[[peer]]
serial = "{peer}"
probe = ["10.1.0.{them}", "10.2.0.{them}"]
{peer_sync}
"#,
            // The control run without state sync (kernel path) has no sync section.
            sync = if o.sync {
                format!(
                    "[sync]\nbind = \"10.9.0.{}\"\n{}",
                    1 + i,
                    o.standby_install
                        .as_ref()
                        .map_or_else(String::new, |m| format!("standby_install = \"{m}\"\n"))
                )
            } else {
                String::new()
            },
            peer_sync = if o.sync {
                format!("sync = \"10.9.0.{}\"", 1 + other)
            } else {
                String::new()
            },
            shared = if o.shared {
                "\n[[forward.shared]]\ndomain = 1\ninside_cluster_ip = \"10.3.0.254/24\"\n\
                 outside_cluster_ip = \"10.2.0.253/24\"\n"
            } else {
                ""
            },
            block = dir.join(format!("{i}.cfg")).display(),
            host = host_sock.display(),
            mgmt = mgmt_sock.display(),
            state = dir.join(format!("state-{m}")).display(),
            me = 11 + i,
            them = 11 + other,
            peer = serials[other],
            table = o.table,
            datapath = o.datapath,
        );
        let cfg = dir.join(format!("{m}.toml"));
        std::fs::write(&cfg, toml).map_err(|e| format!("e2e: {e}"))?;
        env.spawn(
            &format!("daemon-{m}"),
            Some(m),
            &[b("ha-daemon"), "--config".into(), cfg.display().to_string()],
            false,
        )?;
        socks.push(mgmt_sock);
    }
    match &firmware {
        Some(elf) => println!(
            "e2e: controllers: QEMU mps2-an385 members running {}",
            elf.display()
        ),
        None => println!(
            "e2e: controllers: ha-agent-host (the ha-agent state machine in a host process), \
             not the QEMU firmware"
        ),
    }
    let settled = if o.shared {
        wait_domains(&socks, &[&[0], &[1]], Duration::from_secs(30)).map(|()| 0)
    } else {
        wait_roles(&socks, None, Duration::from_secs(30))
    };
    let active = settled.map_err(|e| {
        format!(
            "{e}\n--- daemon-a\n{}\n--- daemon-b\n{}",
            env.log_tail("daemon-a"),
            env.log_tail("daemon-b")
        )
    })?;
    if o.shared {
        println!(
            "e2e: load sharing: {} forwards for domain 0, {} for domain 1",
            serials[0], serials[1]
        );
    } else {
        println!("e2e: member {} is active", serials[active]);
    }
    let table = crate::util::output(
        Command::new(b("hactl"))
            .arg("--socket")
            .arg(&socks[active])
            .arg("info"),
    )?;
    println!(
        "e2e: hactl info on {}:\n{}",
        serials[active],
        table.trim_end()
    );

    // Load: echo connections, or FTP sessions (kernel path). One process holds at most
    // `PER_PROCESS` connections (an unprivileged container keeps the open-file limit at
    // 20,000; one client address has ~64,000 ephemeral ports per server port): past that,
    // one server port and one client process each per share.
    run(Command::new("ip").args([
        "netns",
        "exec",
        &c,
        "sysctl",
        "-q",
        "-w",
        "net.ipv4.ip_local_port_range=1024 65000",
    ]))?;
    const PER_PROCESS: usize = 18_000;
    if o.ftp && o.connections > PER_PROCESS / 2 {
        // Two sockets per session, and the site's helper watches port 21 only.
        return Err(format!(
            "e2e: the FTP case holds at most {} sessions",
            PER_PROCESS / 2
        ));
    }
    if o.shared && (o.ftp || o.connections > 2 * PER_PROCESS || o.connections < 2) {
        return Err(format!(
            "e2e: load sharing holds 2 to {} echo connections, half per domain",
            2 * PER_PROCESS
        ));
    }
    // With load sharing: two shares, the first through domain 0 (client `c`), the second
    // through domain 1 (client `d`).
    let shares = if o.shared {
        2
    } else {
        o.connections.div_ceil(PER_PROCESS).max(1)
    };
    let traffic = |args: &[String]| {
        let mut v = vec![b("ha-traffic")];
        v.extend_from_slice(args);
        v
    };
    let mut parts = Vec::new();
    for j in 0..shares {
        let n = o.connections / shares + usize::from(j < o.connections % shares);
        let (server_argv, client_argv): (Vec<String>, Vec<String>) = if o.ftp {
            let addr = "10.2.0.1:21".to_string();
            (
                vec!["ftp-server".into(), "--listen".into(), addr.clone()],
                vec![
                    "ftp-client".into(),
                    "--connect".into(),
                    addr,
                    "--data-ip".into(),
                    "10.1.0.1".into(),
                    "--connections".into(),
                    n.to_string(),
                ],
            )
        } else {
            let addr = format!("10.2.0.1:{}", 5001 + j);
            (
                vec!["server".into(), "--listen".into(), addr.clone()],
                vec![
                    "client".into(),
                    "--connect".into(),
                    addr,
                    "--connections".into(),
                    n.to_string(),
                    "--interval-ms".into(),
                    o.interval_ms.to_string(),
                ],
            )
        };
        let suffix = if j == 0 {
            String::new()
        } else {
            format!("-{j}")
        };
        env.spawn(
            &format!("server{suffix}"),
            Some("s"),
            &traffic(&server_argv),
            false,
        )?;
        std::thread::sleep(Duration::from_millis(300));
        let name = format!("client{suffix}");
        let client_ns = if o.shared && j == 1 { "d" } else { "c" };
        env.spawn(&name, Some(client_ns), &traffic(&client_argv), true)?;
        let ch = env.child(&name).ok_or("e2e: client vanished")?;
        let stdin = ch.stdin.take().ok_or("e2e: client stdin")?;
        let stdout = ch.stdout.take().ok_or("e2e: client stdout")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(stdout).lines() {
                let Ok(l) = l else { break };
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        parts.push(LoadPart { stdin, lines: rx });
    }
    let load = Load { parts };
    // Connecting takes a few ms per hundred connections through the members.
    let ready_within = Duration::from_secs(60 + o.connections as u64 / 500);
    let ready = load.lines(ready_within).map_err(|e| {
        format!(
            "{e} (connections not established)\n{}\n{}",
            env.log_tail("client"),
            diagnostics(&socks)
        )
    })?;
    if let Some(r) = ready.iter().find(|r| r.as_str() != "ready") {
        return Err(format!("e2e: load client said {r:?}"));
    }
    println!(
        "e2e: {} connections established, data flowing",
        o.connections
    );
    Ok(Setup {
        base,
        serials,
        members,
        socks,
        net,
        active,
        load,
    })
}
