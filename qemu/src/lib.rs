//! How a member boots under QEMU `mps2-an385`: its command line (machine, NICs, UART
//! chardevs, configuration block and boot counter), written in this one place (the QEMU
//! member contract of docs/qemu.md) and used by the cluster harness (`ha-testkit`), the e2e
//! of xtask and the firmware's `cargo run` runner (bin `ha-qemu-member`).
//!
//! Also the member's boot counter: a real controller keeps it in flash and increments it at
//! every boot; under QEMU the "flash" is the block image on the host, and the counter lives
//! beside it (`<block>.boot`), incremented by [`next_boot`] before every start.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};

/// Where UART0 (the raw defmt log) goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Uart0 {
    /// QEMU's standard output.
    Stdio,
    /// A file.
    File(PathBuf),
}

/// Everything that differs between two members' QEMU command lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemberCmd {
    /// The firmware ELF.
    pub elf: PathBuf,
    /// The configuration block image (4096 bytes), loaded at the block's flash address.
    pub block: PathBuf,
    /// The boot epoch word loaded below the block ([`next_boot`]).
    pub epoch: u32,
    /// UART0: the defmt log.
    pub uart0: Uart0,
    /// UART1: the host link, a listening unix socket the main CPU connects to.
    pub host_sock: PathBuf,
    /// UART2: the serial backup link as UDP `(peer port, own port)` on 127.0.0.1; `None`
    /// leaves it unconnected.
    pub backup: Option<(u16, u16)>,
    /// UART3: the sensor bridge, a listening unix socket the board simulator connects to.
    pub sensors_sock: PathBuf,
    /// The LAN9118 as UDP `(peer port, own port)` on 127.0.0.1 (the test wire's hub).
    pub nic: (u16, u16),
    /// The QMP socket (LED register reads, post-mortem register dumps).
    pub qmp_sock: Option<PathBuf>,
    /// QEMU's own log of guest errors and unimplemented device accesses.
    pub debug_log: Option<PathBuf>,
}

impl MemberCmd {
    /// The arguments after `qemu-system-arm`.
    pub fn args(&self) -> Vec<String> {
        let mut a: Vec<String> = [
            "-M",
            "mps2-an385",
            "-display",
            "none",
            "-monitor",
            "none",
            "-nodefaults",
            "-kernel",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        a.push(self.elf.display().to_string());
        a.push("-device".into());
        a.push(format!(
            "loader,file={},addr=0x{:X},force-raw=on",
            self.block.display(),
            ha_proto::config_block::FLASH_ADDR
        ));
        a.push("-device".into());
        a.push(format!(
            "loader,addr=0x{:X},data={},data-len=4",
            BOOT_EPOCH_ADDR, self.epoch
        ));
        a.push("-serial".into());
        a.push(match &self.uart0 {
            Uart0::Stdio => "stdio".into(),
            Uart0::File(p) => format!("file:{}", p.display()),
        });
        a.push("-chardev".into());
        a.push(format!(
            "socket,id=host,path={},server=on,wait=off",
            self.host_sock.display()
        ));
        a.extend(["-serial".into(), "chardev:host".into()]);
        a.push("-serial".into());
        a.push(match self.backup {
            Some((peer, own)) => format!("udp:127.0.0.1:{peer}@127.0.0.1:{own}"),
            None => "null".into(),
        });
        a.push("-chardev".into());
        a.push(format!(
            "socket,id=sens,path={},server=on,wait=off",
            self.sensors_sock.display()
        ));
        a.extend(["-serial".into(), "chardev:sens".into()]);
        a.push("-nic".into());
        a.push(format!(
            "socket,udp=127.0.0.1:{},localaddr=127.0.0.1:{}",
            self.nic.0, self.nic.1
        ));
        if let Some(q) = &self.qmp_sock {
            a.push("-qmp".into());
            a.push(format!("unix:{},server=on,wait=off", q.display()));
        }
        if let Some(l) = &self.debug_log {
            a.extend(["-d".into(), "guest_errors,unimp".into()]);
            a.extend(["-D".into(), l.display().to_string()]);
        }
        a
    }
}

/// Busy loops (`sh -c 'while :; do :; done'`) beside a cluster, the load of the soaks and
/// boot runs; each ended by its own pid when dropped.
pub struct BusyLoops(Vec<std::process::Child>);

impl BusyLoops {
    /// Starts `n` of them.
    pub fn start(n: usize) -> Result<BusyLoops, String> {
        let mut v = BusyLoops(Vec::new());
        for _ in 0..n {
            v.0.push(
                std::process::Command::new("sh")
                    .args(["-c", "while :; do :; done"])
                    .stdin(std::process::Stdio::null())
                    .spawn()
                    .map_err(|e| format!("busy loop: {e}"))?,
            );
        }
        Ok(v)
    }
}

impl Drop for BusyLoops {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Decodes a member's UART0 bytes (raw defmt frames) with `defmt-print -e <elf>`.
pub fn decode_defmt(elf: &Path, raw: &[u8]) -> Result<String, String> {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("defmt-print")
        .arg("-e")
        .arg(elf)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start defmt-print (run `cargo xtask setup`): {e}"))?;
    // Fed from another thread while this one reads the output: a log bigger than the two
    // pipe buffers would otherwise block both processes forever (a soak's log does).
    let writer = child.stdin.take().map(|mut stdin| {
        let raw = raw.to_vec();
        std::thread::spawn(move || stdin.write_all(&raw))
    });
    let out = child
        .wait_with_output()
        .map_err(|e| format!("defmt-print: {e}"))?;
    if let Some(w) = writer {
        w.join()
            .map_err(|_| "defmt-print: the writer thread panicked".to_string())?
            .map_err(|e| format!("defmt-print: {e}"))?;
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Address of the boot epoch word (the board's BOOTINFO region, just below the block).
pub const BOOT_EPOCH_ADDR: u32 = BLOCK_ADDR - 4;

/// Flash address of the configuration block image.
pub const BLOCK_ADDR: u32 = ha_proto::config_block::FLASH_ADDR;

/// The boot counter file of the member whose block image is `block`.
pub fn boot_counter(block: &Path) -> ha_persist::BootCounter {
    ha_persist::BootCounter::new(block.with_extension("boot"))
}

/// Increments the member's persistent boot counter and returns the new boot epoch.
pub fn next_boot(block: &Path) -> Result<u32, String> {
    let c = boot_counter(block);
    c.next()
        .map_err(|e| format!("boot counter {}: {e}", c.path().display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contract_flags() {
        let d = Path::new("/d");
        let cmd = MemberCmd {
            elf: "fw.elf".into(),
            block: d.join("m.cfg"),
            epoch: 7,
            uart0: Uart0::Stdio,
            host_sock: d.join("host.sock"),
            backup: Some((2000, 2001)),
            sensors_sock: d.join("sensors.sock"),
            nic: (1000, 1001),
            qmp_sock: Some(d.join("qmp.sock")),
            debug_log: None,
        };
        let s = cmd.args().join(" ");
        assert!(s.contains("loader,file=/d/m.cfg,addr=0x3F000,force-raw=on"));
        assert!(s.contains("loader,addr=0x3EFFC,data=7,data-len=4"));
        assert!(s.contains("-serial stdio -chardev socket,id=host,path=/d/host.sock"));
        assert!(s.contains("-serial udp:127.0.0.1:2000@127.0.0.1:2001"));
        assert!(s.contains("-nic socket,udp=127.0.0.1:1000,localaddr=127.0.0.1:1001"));
        assert!(s.contains("-qmp unix:/d/qmp.sock,server=on,wait=off"));
        assert!(!s.contains(" -d "));
    }

    #[test]
    fn boot_counter_grows_beside_the_block() {
        let dir = tempfile::tempdir().expect("tempdir");
        let block = dir.path().join("member.cfg");
        let a = next_boot(&block).expect("boot");
        let b = next_boot(&block).expect("boot");
        assert!(b > a);
        assert!(dir.path().join("member.boot").exists());
    }
}
