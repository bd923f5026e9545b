//! `ha-qemu-member <firmware.elf>`: boots one member under QEMU and prints its decoded defmt
//! log (the runner of `cd firmware/app && cargo run --release`, see docs/firmware.md). The
//! command line is [`ha_qemu::MemberCmd`]'s, as for every other way a member boots.
//!
//! Wiring, from the environment (the defaults let a lone member boot):
//!
//! | variable | what | default |
//! |---|---|---|
//! | `HA_MEMBER_CFG` | configuration block (4096 bytes, `hactl provision`); its boot counter is kept beside it | none: the member logs "no configuration block" and does not join |
//! | `HA_MEMBER_DIR` | directory of `host.sock` (UART1) and `sensors.sock` (UART3) | `$TMPDIR/ha-member` |
//! | `HA_BACKUP_PORT`, `HA_BACKUP_PEER_PORT` | UART2 (serial backup link) as UDP | 45000, 45001 |
//! | `HA_MAIN_PORT`, `HA_MAIN_PEER_PORT` | the LAN9118 as UDP | 45002, 45003 |

use std::path::PathBuf;
use std::process::{Command, ExitCode, Stdio};

use ha_qemu::{next_boot, MemberCmd, Uart0};

fn port(var: &str, default: u16) -> Result<u16, String> {
    match std::env::var(var) {
        Ok(v) => v.parse().map_err(|_| format!("{var}={v}: not a port")),
        Err(_) => Ok(default),
    }
}

fn run() -> Result<ExitCode, String> {
    let elf = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .ok_or("usage: ha-qemu-member <firmware.elf>")?;
    let dir = std::env::var_os("HA_MEMBER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ha-member"));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    // Without a block the member refuses to start (its log says so); the epoch word is
    // loaded anyway, from a counter in the member directory.
    let block = std::env::var_os("HA_MEMBER_CFG").map(PathBuf::from);
    let counter_at = block.clone().unwrap_or_else(|| dir.join("member.cfg"));
    let epoch = next_boot(&counter_at)?;
    let cmd = MemberCmd {
        elf: elf.clone(),
        block: block.unwrap_or_else(|| PathBuf::from("/dev/null")),
        epoch,
        uart0: Uart0::Stdio,
        host_sock: dir.join("host.sock"),
        backup: Some((
            port("HA_BACKUP_PEER_PORT", 45001)?,
            port("HA_BACKUP_PORT", 45000)?,
        )),
        sensors_sock: dir.join("sensors.sock"),
        nic: (
            port("HA_MAIN_PEER_PORT", 45003)?,
            port("HA_MAIN_PORT", 45002)?,
        ),
        qmp_sock: None,
        debug_log: None,
    };
    let mut qemu = Command::new("qemu-system-arm")
        .args(cmd.args())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("qemu-system-arm (run `cargo xtask setup`): {e}"))?;
    let log = qemu.stdout.take().ok_or("qemu-system-arm: no stdout")?;
    let decoded = Command::new("defmt-print")
        .arg("-e")
        .arg(&elf)
        .stdin(log)
        .status();
    // defmt-print ends when QEMU does (or on Ctrl-C, which QEMU also gets); end QEMU by
    // its own pid whatever happened.
    let _ = qemu.kill();
    let status = qemu.wait().map_err(|e| e.to_string())?;
    decoded.map_err(|e| format!("defmt-print (run `cargo xtask setup`): {e}"))?;
    Ok(if status.success() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("ha-qemu-member: {e}");
            ExitCode::FAILURE
        }
    }
}
