//! The simulator against a unix socket standing in for QEMU's UART3 chardev.

use std::io::Read;
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use ha_boardsim::{default_readings, BoardSim};
use ha_hal::bridge::{SensorKind, SensorReport};
use ha_proto::uart::Decoder;

/// Reads frames for at most `limit`, returning the decoded reports and when each came.
fn reports(
    conn: &mut std::os::unix::net::UnixStream,
    limit: Duration,
) -> Vec<(Instant, SensorReport)> {
    conn.set_read_timeout(Some(Duration::from_millis(50)))
        .expect("timeout");
    let mut dec = Decoder::<256>::new();
    let mut out = Vec::new();
    let end = Instant::now() + limit;
    let mut buf = [0u8; 256];
    while Instant::now() < end {
        let n = match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(_) => continue,
        };
        for &b in &buf[..n] {
            if let Some(frame) = dec.push(b) {
                let body = frame.expect("valid frame");
                out.push((Instant::now(), SensorReport::decode(body).expect("report")));
            }
        }
    }
    out
}

#[test]
fn sends_every_500_ms_and_at_once_on_change() {
    let dir = std::env::temp_dir().join(format!("ha-boardsim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let path = dir.join("sensors.sock");
    let _ = std::fs::remove_file(&path);
    // The simulator starts before the socket exists (QEMU not up yet) and retries.
    let sim = BoardSim::start(&path, default_readings()).expect("start");
    std::thread::sleep(Duration::from_millis(120));
    let listener = UnixListener::bind(&path).expect("bind");
    let (mut conn, _) = listener.accept().expect("accept");
    let got = reports(&mut conn, Duration::from_millis(1300));
    assert!(
        (2..=4).contains(&got.len()),
        "{} reports in 1.3 s",
        got.len()
    );
    assert_eq!(got[0].1.readings.len(), default_readings().len());
    assert!(got[0].1.readings.iter().all(|r| r.ok));

    let t0 = Instant::now();
    sim.set(SensorKind::Fan, 1, false).expect("fan 1");
    let got = reports(&mut conn, Duration::from_millis(300));
    let (at, first) = got.first().expect("a report on change");
    assert!(
        at.duration_since(t0) < Duration::from_millis(200),
        "change not sent at once"
    );
    let fan = first
        .readings
        .iter()
        .find(|r| r.kind == SensorKind::Fan && r.index == 1)
        .expect("fan 1 reported");
    assert!(!fan.ok);
    assert!(
        sim.set(SensorKind::Fan, 9, false).is_err(),
        "no fan 9 on this board"
    );
    assert!(sim.reports_sent() >= 3);
    drop(sim);
    let _ = std::fs::remove_dir_all(&dir);
}
