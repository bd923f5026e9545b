//! The transit watcher (`ha-traffic transit`) on a real path: two network namespaces joined
//! by a veth pair, a TCP load across, and an outage made by taking one end down. Without
//! the outage, segments cross in well under a millisecond; with it, the longest transit is
//! at least the outage (the dropped segments are timed until their retransmissions arrive)
//! and nothing is counted lost. Needs root (as CI runs).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

const TRAFFIC: &str = env!("CARGO_BIN_EXE_ha-traffic");

/// The namespaces and the processes of the test, removed and ended (by pid) on drop.
struct Net {
    ns: [String; 2],
    procs: Vec<Child>,
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        for n in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

fn ip(args: &[&str]) {
    let s = Command::new("ip").args(args).status().expect("ip");
    assert!(s.success(), "ip {args:?} (this test needs root)");
}

/// Sends `cmd` to the watcher and reads its JSON answer.
fn ask(stdin: &mut ChildStdin, out: &mut BufReader<ChildStdout>, cmd: &str) -> serde_json::Value {
    writeln!(stdin, "{cmd}").expect("watcher stdin");
    let mut line = String::new();
    out.read_line(&mut line).expect("watcher output");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
}

#[test]
fn an_outage_on_the_path_is_the_longest_transit_and_loses_nothing() {
    let pid = std::process::id();
    let mut net = Net {
        ns: [format!("trx{pid}"), format!("try{pid}")],
        procs: Vec::new(),
    };
    let [x, y] = net.ns.clone();
    ip(&["netns", "add", &x]);
    ip(&["netns", "add", &y]);
    ip(&[
        "-n", &x, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", &y,
    ]);
    ip(&["-n", &x, "addr", "add", "10.77.0.1/24", "dev", "v0"]);
    ip(&["-n", &y, "addr", "add", "10.77.0.2/24", "dev", "v1"]);
    for (n, d) in [(&x, "v0"), (&y, "v1"), (&x, "lo"), (&y, "lo")] {
        ip(&["-n", n, "link", "set", d, "up"]);
    }
    let in_ns = |n: &str| {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", n, TRAFFIC]);
        c
    };
    net.procs.push(
        in_ns(&y)
            .args(["server", "--listen", "10.77.0.2:5001"])
            .stdout(Stdio::null())
            .spawn()
            .expect("server"),
    );
    std::thread::sleep(Duration::from_millis(300));
    let mut watcher = Command::new(TRAFFIC)
        .args([
            "transit",
            "--at",
            &format!("{x}:v0"),
            "--at",
            &format!("{y}:v1"),
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("watcher");
    let mut w_in = watcher.stdin.take().expect("stdin");
    let mut w_out = BufReader::new(watcher.stdout.take().expect("stdout"));
    net.procs.push(watcher);
    let mut line = String::new();
    w_out.read_line(&mut line).expect("watcher output");
    assert_eq!(line.trim(), "listening");
    let mut client = in_ns(&x)
        .args([
            "client",
            "--connect",
            "10.77.0.2:5001",
            "--connections",
            "5",
            "--interval-ms",
            "5",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("client");
    let _client_in = client.stdin.take();
    net.procs.push(client);
    std::thread::sleep(Duration::from_secs(1));

    // The control: no outage.
    writeln!(w_in, "mark").expect("mark");
    std::thread::sleep(Duration::from_secs(1));
    let calm = ask(&mut w_in, &mut w_out, "report");
    assert!(calm["packets"].as_u64().unwrap_or(0) > 100, "{calm}");
    assert!(
        calm["max_us"].as_u64().unwrap_or(u64::MAX) < 50_000,
        "{calm}"
    );

    // 300 ms with the far end down: every segment sent then is dropped.
    writeln!(w_in, "mark").expect("mark");
    std::thread::sleep(Duration::from_millis(100));
    let down = Instant::now();
    ip(&["-n", &y, "link", "set", "v1", "down"]);
    std::thread::sleep(Duration::from_millis(300));
    ip(&["-n", &y, "link", "set", "v1", "up"]);
    let outage = down.elapsed();
    // TCP's retransmissions (200 ms, then backing off).
    std::thread::sleep(Duration::from_secs(3));
    let cut = ask(&mut w_in, &mut w_out, "report");
    let max_us = cut["max_us"].as_u64().unwrap_or(0);
    assert!(
        max_us >= outage.as_micros() as u64 * 9 / 10,
        "longest transit {max_us} µs, outage {outage:?}: {cut}"
    );
    assert_eq!(cut["lost"].as_u64(), Some(0), "{cut}");
}
