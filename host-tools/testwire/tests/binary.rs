//! The `ha-testwire` process: ports on stdout, control socket, exit when stdin closes.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ha_testwire::{Client, LinkKind};

/// Kills the child by its own pid if the test fails half-way.
struct Guard(std::process::Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn relays_obeys_its_control_socket_and_ends_with_its_stdin() {
    let members: Vec<UdpSocket> = (0..2)
        .map(|_| {
            let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
            s.set_read_timeout(Some(Duration::from_millis(300)))
                .expect("timeout");
            s
        })
        .collect();
    let addrs: Vec<String> = members
        .iter()
        .map(|s| s.local_addr().expect("addr").to_string())
        .collect();
    let dir = std::env::temp_dir().join(format!("ha-testwire-bin-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let control = dir.join("wire.sock");
    let mut child = Guard(
        Command::new(env!("CARGO_BIN_EXE_ha-testwire"))
            .args(["--main", &addrs.join(","), "--control"])
            .arg(&control)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn"),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("ports line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("json");
    let ports: Vec<u16> = v["main_ports"]
        .as_array()
        .expect("main_ports")
        .iter()
        .filter_map(|p| p.as_u64().map(|p| p as u16))
        .collect();
    assert_eq!(ports.len(), 2);

    let mut buf = [0u8; 64];
    members[0]
        .send_to(b"hello", ("127.0.0.1", ports[0]))
        .expect("send");
    let (n, _) = members[1].recv_from(&mut buf).expect("relayed");
    assert_eq!(&buf[..n], b"hello");

    let mut client = Client::connect(&control).expect("control");
    client
        .cut(Some(LinkKind::Main), Some(0), Some(1))
        .expect("cut");
    members[0]
        .send_to(b"lost", ("127.0.0.1", ports[0]))
        .expect("send");
    assert!(
        members[1].recv_from(&mut buf).is_err(),
        "relayed across a cut"
    );

    // Closing stdin ends the process.
    drop(child.0.stdin.take());
    let end = Instant::now() + Duration::from_secs(5);
    while child.0.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < end, "ha-testwire did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!control.exists(), "control socket left behind");
    let _ = std::fs::remove_dir_all(&dir);
}
