//! `cargo xtask qemu driver-test`: the board's drivers under QEMU. Builds the board crate's
//! example `driver_test` (`board/mps2-an385/examples/driver_test.rs`), boots it on
//! `mps2-an385` with the member's QEMU command line (`ha_qemu::MemberCmd`), and plays the far
//! end of its links: UART1 (a unix socket) echoes every byte, the LAN9118 (UDP) gets every
//! frame sent back. Passes when the firmware's log says `driver-test: PASS`; QEMU is ended
//! by its own pid on every path, and the echo threads stop with it.

use std::io::{Read, Write};
use std::net::UdpSocket;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::util::{run, Result};

/// Longest the whole test may take once QEMU runs.
const BOUND: Duration = Duration::from_secs(60);

/// QEMU, ended by its own pid when dropped.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Builds the example and returns its ELF.
fn build() -> Result<PathBuf> {
    run(super::fw_build_cargo(super::FW_BOARD_DIR).args([
        "build",
        "--release",
        "--example",
        "driver_test",
    ]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::util::root().join(super::FW_BOARD_DIR).join("target"));
    Ok(target.join("thumbv7m-none-eabi/release/examples/driver_test"))
}

/// A free UDP port on 127.0.0.1 (bound, then released for QEMU to take).
fn free_port() -> Result<u16> {
    let s = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("driver-test: {e}"))?;
    Ok(s.local_addr()
        .map_err(|e| format!("driver-test: {e}"))?
        .port())
}

/// Runs the test.
pub fn run_test() -> Result {
    let elf = build()?;
    let dir = std::env::temp_dir().join(format!("ha-driver-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let r = run_in(&elf, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn run_in(elf: &Path, dir: &Path) -> Result {
    // An erased configuration block (4 KiB): the test firmware does not read it.
    let block = dir.join("block.cfg");
    std::fs::write(&block, vec![0xffu8; 4096]).map_err(|e| format!("driver-test: {e}"))?;
    let wire = UdpSocket::bind("127.0.0.1:0").map_err(|e| format!("driver-test: {e}"))?;
    let wire_port = wire
        .local_addr()
        .map_err(|e| format!("driver-test: {e}"))?
        .port();
    let cmd = ha_qemu::MemberCmd {
        elf: elf.to_path_buf(),
        block,
        epoch: 1,
        uart0: ha_qemu::Uart0::Stdio,
        host_sock: dir.join("uart1.sock"),
        backup: None,
        sensors_sock: dir.join("uart3.sock"),
        nic: (wire_port, free_port()?),
        qmp_sock: None,
        // QEMU's log of guest errors (writes outside the memory map: how the test's own
        // stack overflow showed) when `HA_DRIVER_TEST_QEMU_LOG=<file>` is set.
        debug_log: std::env::var_os("HA_DRIVER_TEST_QEMU_LOG").map(PathBuf::from),
    };
    eprintln!("$ qemu-system-arm {}", cmd.args().join(" "));
    let mut child = Command::new("qemu-system-arm")
        .args(cmd.args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-arm (run `cargo xtask setup`): {e}"))?;
    let stdout = child.stdout.take().ok_or("driver-test: no stdout pipe")?;
    let qemu = Qemu(child);
    let stop = Arc::new(AtomicBool::new(false));

    // UART0: the raw defmt log.
    let raw = Arc::new(Mutex::new(Vec::new()));
    let log_reader = {
        let raw = raw.clone();
        std::thread::spawn(move || {
            let mut stdout = stdout;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                raw.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&buf[..n]);
            }
        })
    };
    // UART1: every byte back.
    let uart_echo = {
        let (path, stop) = (cmd.host_sock.clone(), stop.clone());
        std::thread::spawn(move || -> u64 {
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut s = loop {
                match UnixStream::connect(&path) {
                    Ok(s) => break s,
                    Err(_) if Instant::now() < deadline && !stop.load(Ordering::Relaxed) => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(_) => return 0,
                }
            };
            // The firmware waits for this before it sends.
            if s.write_all(b"G").is_err() {
                return 0;
            }
            let _ = s.set_read_timeout(Some(Duration::from_millis(100)));
            let mut echoed = 0u64;
            let mut buf = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => {
                        if s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                        echoed += n as u64;
                    }
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => break,
                }
            }
            echoed
        })
    };
    // The LAN9118's wire: every frame back to where it came from.
    let nic_echo = {
        let stop = stop.clone();
        std::thread::spawn(move || -> u64 {
            let _ = wire.set_read_timeout(Some(Duration::from_millis(100)));
            let mut frames = 0u64;
            let mut buf = [0u8; 2048];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((n, from)) = wire.recv_from(&mut buf) {
                    let _ = wire.send_to(&buf[..n], from);
                    frames += 1;
                }
            }
            frames
        })
    };

    let deadline = Instant::now() + BOUND;
    let log = loop {
        std::thread::sleep(Duration::from_millis(500));
        let bytes = raw.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let log = ha_qemu::decode_defmt(elf, &bytes)?;
        let guard_seen = log.contains("HardFault:") || log.contains("stack guard FAIL");
        if (log.contains("driver-test: PASS") && guard_seen) || log.contains("driver-test: FAIL") {
            break log;
        }
        if Instant::now() > deadline {
            break format!("{log}\n(no verdict within {BOUND:?})");
        }
    };
    drop(qemu);
    stop.store(true, Ordering::Relaxed);
    let _ = log_reader.join();
    let echoed = uart_echo.join().unwrap_or(0);
    let frames = nic_echo.join().unwrap_or(0);
    for l in log
        .lines()
        .filter(|l| l.contains("driver-test") || l.contains("HardFault") || l.contains("guard"))
    {
        println!("{l}");
    }
    println!("driver-test: the harness echoed {echoed} UART1 bytes and {frames} frames");
    let guarded = guard_fault(&log);
    match guarded {
        Some(cfsr) => println!(
            "driver-test: the stack overflow faulted (CFSR {cfsr:#x}: a MemManage access \
             violation in the guard): the stack guard holds"
        ),
        None => println!("driver-test: the stack overflow did not fault in the guard"),
    }
    if log.contains("driver-test: PASS") && guarded.is_some() {
        Ok(())
    } else {
        Err(format!(
            "driver-test: the drivers failed under QEMU; the log:\n{log}"
        ))
    }
}

/// The CFSR of the board's HardFault line when it says a MemManage access violation
/// (`DACCVIOL`, bit 1, or `MSTKERR`, bit 4): the stack guard caught the overflow.
fn guard_fault(log: &str) -> Option<u32> {
    let line = log.lines().find(|l| l.contains("HardFault: CFSR"))?;
    let hex = line.split("CFSR ").nth(1)?.split_whitespace().next()?;
    let cfsr = u32::from_str_radix(hex.trim_start_matches("0x"), 16).ok()?;
    (cfsr & 0b1_0010 != 0).then_some(cfsr)
}

#[cfg(test)]
mod tests {
    use super::guard_fault;

    #[test]
    fn only_a_memmanage_violation_counts_as_the_guard() {
        let line = |cfsr: &str| {
            format!("INFO x\nERROR HardFault: CFSR {cfsr} HFSR 0x40000000 MMFAR 0x2000001c; the core stops\n")
        };
        assert_eq!(guard_fault(&line("0x82")), Some(0x82));
        assert_eq!(guard_fault(&line("0x10")), Some(0x10));
        assert_eq!(guard_fault(&line("0x400")), None, "an imprecise bus fault");
        assert_eq!(guard_fault("driver-test: PASS (13 checks)"), None);
    }
}
