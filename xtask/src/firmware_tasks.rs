//! xtask commands owned by the firmware part (see README).

use crate::util::{run, Result};

mod driver_test;

/// Format and lints of the firmware and board crates (their own workspaces, each for its
/// board's target), run by `cargo xtask test` with the workspace's own, before any long suite.
pub fn lint() -> Result {
    for dir in [FW_APP_DIR, FW_BOARD_DIR, NUCLEO_BOARD_DIR] {
        run(fw_cargo(dir).args(["fmt", "--", "--check"]))?;
        run(fw_build_cargo(dir).args(["clippy", "--release", "--", "-D", "warnings"]))?;
    }
    // The board's driver test under QEMU (an example of the board crate).
    run(fw_build_cargo(FW_BOARD_DIR).args([
        "clippy",
        "--release",
        "--examples",
        "--",
        "-D",
        "warnings",
    ]))?;
    // The firmware binary again, built for the real board.
    run(fw_build_cargo(FW_APP_DIR)
        .args(["clippy", "--release"])
        .args(NUCLEO_ARGS)
        .args(["--", "-D", "warnings"]))
}

/// Extra CI checks of the firmware, run by `cargo xtask test`: the release builds (QEMU
/// mps2-an385 and the NUCLEO-H743ZI board, which CI can only build), and
/// boot checks under QEMU: a member without a configuration block, or with a corrupt one,
/// logs one clear error and does not join; a member with a valid block starts its agent; two
/// members wired by their Ethernet elect one active, and the other takes over when it dies;
/// and the board's drivers under QEMU ([`driver_test`]).
pub fn ci() -> Result {
    let elf = fw_build()?;
    nucleo_build()?;
    fw_boot_checks(&elf)?;
    driver_test::run_test()?;
    harness_ci(&elf)
}

/// Budgets of `cargo xtask size` (issue 4): flash ≤ 128 KiB, RAM ≤ 64 KiB.
const FW_FLASH_BUDGET: u64 = 128 * 1024;
const FW_RAM_BUDGET: u64 = 64 * 1024;

/// `cargo xtask size` (firmware part): builds the release firmware and prints, last,
/// `firmware: flash=<bytes> ram=<bytes>` from the ELF: flash = every loaded section
/// (vector table, code, read-only data, initial values of .data); RAM = .data + .bss +
/// .uninit + the stack reserved in memory.x; before it, the stack's high-water mark in a
/// boot under QEMU. Fails when a budget is exceeded. The
/// NUCLEO-H743ZI's figures come first (see [`nucleo_size`]), mps2-an385's last.
pub fn size(_args: &[String]) -> Result {
    nucleo_size()?;
    let elf = fw_build()?;
    let bytes = std::fs::read(&elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let s = fw_elf::sizes(&bytes).map_err(|e| format!("{}: {e}", elf.display()))?;
    let ram = s.ram_static + s.stack;
    println!(
        "firmware: code+rodata={} data={} bss={} stack={} (budgets: flash <= {} ram <= {})",
        s.flash - s.data,
        s.data,
        s.ram_static - s.data,
        s.stack,
        FW_FLASH_BUDGET,
        FW_RAM_BUDGET
    );
    let (used, reserved) = fw_stack_high_water(&elf)?;
    println!(
        "firmware: stack high-water {used} of {reserved} bytes (painted stack, a lone member \
         under QEMU, 3 s after boot)"
    );
    println!("firmware: flash={} ram={}", s.flash, ram);
    if s.flash > FW_FLASH_BUDGET || ram > FW_RAM_BUDGET {
        return Err("size: the firmware exceeds its flash or RAM budget".into());
    }
    Ok(())
}

const FW_APP_DIR: &str = "firmware/app";
const FW_BOARD_DIR: &str = "board/mps2-an385";

/// `cargo` run inside one of the firmware's own workspaces.
fn fw_cargo(dir: &str) -> std::process::Command {
    let mut c = crate::util::cargo();
    c.current_dir(crate::util::root().join(dir));
    c
}

/// [`fw_cargo`] for a build or a lint: with [`path_remaps`].
fn fw_build_cargo(dir: &str) -> std::process::Command {
    let mut c = fw_cargo(dir);
    c.args(path_remaps());
    c
}

/// `--config` arguments that shorten the source paths compiled into the firmware (each panic
/// site carries its file's path): the cargo registry's and this tree's prefixes are left out,
/// so `/root/.cargo/registry/src/index.crates.io-…/smoltcp-0.13.1/src/wire/ip.rs` becomes
/// `smoltcp-0.13.1/src/wire/ip.rs` (about 2 KB of flash: 57 paths of 4,118 bytes before).
/// For both firmware targets; every firmware build and lint uses them, so none rebuilds the
/// others' dependencies. (Cargo's `trim-paths` profile option does this, not yet stable in
/// the toolchain this tree pins.)
pub(crate) fn path_remaps() -> Vec<String> {
    let mut prefixes = Vec::new();
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".cargo")));
    if let Some(src) = cargo_home.map(|h| h.join("registry/src")) {
        let mut dirs: Vec<_> = std::fs::read_dir(&src)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        prefixes.extend(dirs);
    }
    prefixes.push(crate::util::root());
    let flags: Vec<String> = prefixes
        .iter()
        .map(|p| format!("\"--remap-path-prefix={}/=\"", p.display()))
        .collect();
    [FW_TARGET, NUCLEO_TARGET]
        .iter()
        .flat_map(|t| {
            [
                "--config".to_string(),
                format!("target.{t}.rustflags=[{}]", flags.join(",")),
            ]
        })
        .collect()
}

/// The QEMU board's target.
const FW_TARGET: &str = "thumbv7m-none-eabi";

/// Builds the release firmware and returns the ELF's path.
fn fw_build() -> Result<std::path::PathBuf> {
    run(fw_build_cargo(FW_APP_DIR).args(["build", "--release"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::util::root().join(FW_APP_DIR).join("target"));
    Ok(target.join("thumbv7m-none-eabi/release/ha-firmware"))
}

/// The real board's crate (STM32H743ZI), its target, and the firmware binary's options that
/// build for it (the `nucleo-h743zi` feature picks the board crate).
const NUCLEO_BOARD_DIR: &str = "board/nucleo-h743zi";
const NUCLEO_TARGET: &str = "thumbv7em-none-eabihf";
const NUCLEO_ARGS: [&str; 5] = [
    "--no-default-features",
    "--features",
    "nucleo-h743zi",
    "--target",
    NUCLEO_TARGET,
];
/// The NUCLEO-H743ZI's memory.x regions for the firmware: FLASH (flash bank 1), STACK + RAM
/// (AXI SRAM). The linker refuses an image that overflows them.
const NUCLEO_FLASH: u64 = 1024 * 1024;
const NUCLEO_RAM: u64 = 512 * 1024;

/// Builds the release firmware for the NUCLEO-H743ZI and returns the ELF's path (what
/// `cargo nucleo-h743zi` in firmware/app flashes with probe-rs).
fn nucleo_build() -> Result<std::path::PathBuf> {
    run(fw_build_cargo(FW_APP_DIR)
        .args(["build", "--release"])
        .args(NUCLEO_ARGS))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| crate::util::root().join(FW_APP_DIR).join("target"));
    Ok(target.join(NUCLEO_TARGET).join("release/ha-firmware"))
}

/// `cargo xtask size` for the NUCLEO-H743ZI: the same figures as for mps2-an385, on lines
/// starting `firmware nucleo-h743zi:`, the second `flash=<bytes> ram=<bytes>`.
fn nucleo_size() -> Result {
    let elf = nucleo_build()?;
    let bytes = std::fs::read(&elf).map_err(|e| format!("{}: {e}", elf.display()))?;
    let s = fw_elf::sizes(&bytes).map_err(|e| format!("{}: {e}", elf.display()))?;
    println!(
        "firmware nucleo-h743zi: code+rodata={} data={} bss={} stack={} (memory.x: flash {} ram {})",
        s.flash - s.data,
        s.data,
        s.ram_static - s.data,
        s.stack,
        NUCLEO_FLASH,
        NUCLEO_RAM
    );
    println!(
        "firmware nucleo-h743zi: flash={} ram={}",
        s.flash,
        s.ram_static + s.stack
    );
    Ok(())
}

/// QEMU options loading a configuration block.
fn fw_config_args(config: &std::path::Path) -> Result<Vec<String>> {
    // The block at its flash address and the next value of the member's persistent boot
    // counter below it (a firmware without a boot counter does not start), at the addresses
    // `ha_qemu` owns.
    let epoch = ha_qemu::next_boot(config)?;
    Ok(vec![
        "-device".into(),
        format!(
            "loader,file={},addr=0x{:X},force-raw=on",
            config.display(),
            ha_qemu::BLOCK_ADDR
        ),
        "-device".into(),
        format!(
            "loader,addr=0x{:X},data={epoch},data-len=4",
            ha_qemu::BOOT_EPOCH_ADDR
        ),
    ])
}

/// Boots the firmware under QEMU with `config` loaded (or nothing) for `secs` seconds and
/// returns its decoded defmt log.
fn fw_boot_log(
    elf: &std::path::Path,
    config: Option<&std::path::Path>,
    secs: u64,
) -> Result<String> {
    let mut args = vec!["-nic".to_string(), "none".to_string()];
    if let Some(cfg) = config {
        args.extend(fw_config_args(cfg)?);
    }
    let member = fw_spawn(elf, &args)?;
    std::thread::sleep(std::time::Duration::from_secs(secs));
    member.stop(elf)
}

/// One booting member: QEMU and the thread collecting its UART0 bytes.
struct FwMember {
    child: FwChild,
    reader: std::thread::JoinHandle<Vec<u8>>,
}

impl FwMember {
    /// Kills QEMU (its own pid) and returns the decoded log.
    fn stop(self, elf: &std::path::Path) -> Result<String> {
        drop(self.child);
        let raw = self
            .reader
            .join()
            .map_err(|_| "qemu-system-arm: log reader failed")?;
        fw_decode(elf, &raw)
    }
}

/// Starts `qemu-system-arm -M mps2-an385` with UART0 on a pipe and `extra` options.
fn fw_spawn(elf: &std::path::Path, extra: &[String]) -> Result<FwMember> {
    use std::process::{Command, Stdio};
    let mut qemu = Command::new("qemu-system-arm");
    qemu.args(["-M", "mps2-an385", "-display", "none", "-monitor", "none"])
        .args(["-nodefaults", "-serial", "stdio", "-kernel"])
        .arg(elf)
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    eprintln!(
        "$ qemu-system-arm -M mps2-an385 ... -kernel {} {}",
        elf.display(),
        extra.join(" ")
    );
    let child = qemu
        .spawn()
        .map_err(|e| format!("cannot start qemu-system-arm (run `cargo xtask setup`): {e}"))?;
    // Killed on every path (Drop), by its own pid.
    let mut child = FwChild(child);
    let mut stdout = child
        .0
        .stdout
        .take()
        .ok_or("qemu-system-arm: no stdout pipe")?;
    let reader = std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = std::io::Read::read_to_end(&mut stdout, &mut bytes);
        bytes
    });
    Ok(FwMember { child, reader })
}

/// Decodes raw defmt frames with `defmt-print -e <elf>`.
fn fw_decode(elf: &std::path::Path, raw: &[u8]) -> Result<String> {
    ha_qemu::decode_defmt(elf, raw)
}

/// A child process killed when dropped.
struct FwChild(std::process::Child);

impl Drop for FwChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn fw_expect(what: &str, log: &str, needle: &str) -> Result {
    if log.contains(needle) {
        eprintln!("firmware: {what}: ok");
        Ok(())
    } else {
        Err(format!(
            "firmware: {what}: the log lacks {needle:?}; it was:\n{log}"
        ))
    }
}

fn fw_boot_checks(elf: &std::path::Path) -> Result {
    let dir = std::env::temp_dir().join(format!("ha-fw-ci-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let result = fw_boot_checks_in(elf, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn fw_boot_checks_in(elf: &std::path::Path, dir: &std::path::Path) -> Result {
    let log = fw_boot_log(elf, None, 2)?;
    fw_expect(
        "no configuration block",
        &log,
        "member does not join: no configuration block",
    )?;
    if log.contains("role_changed") {
        return Err(format!("firmware: joined without a configuration:\n{log}"));
    }

    // A block with the right magic but damaged contents.
    let corrupt = dir.join("corrupt.cfg");
    let mut block = vec![0x5Au8; 4096];
    block[..4].copy_from_slice(b"HACB");
    std::fs::write(&corrupt, &block).map_err(|e| format!("{}: {e}", corrupt.display()))?;
    let log = fw_boot_log(elf, Some(&corrupt), 2)?;
    fw_expect(
        "corrupt configuration block",
        &log,
        "member does not join: corrupt configuration block",
    )?;

    // A valid block for a single member: the agent starts and, alone, becomes active.
    let (psk, cfg) = fw_single_block(dir)?;
    let log = fw_boot_log(elf, Some(&cfg), 3)?;
    fw_expect("valid block", &log, "member FW-CI of cluster 0x9")?;
    fw_expect("agent running", &log, "-> active")?;
    fw_expect("stack within its reservation", &log, "stack high-water")?;
    fw_pair_check(elf, dir, &psk)
}

/// A key and the configuration block of a lone member `FW-CI` (cluster 9, fast timers) in
/// `dir`: (key file, block file).
fn fw_single_block(dir: &std::path::Path) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    let psk = dir.join("psk");
    let cfg = dir.join("member.cfg");
    run(crate::util::cargo()
        .args(["run", "-q", "-p", "ha-hactl", "--bin", "hactl", "--"])
        .args(["psk", "generate", "--out"])
        .arg(&psk))?;
    run(crate::util::cargo()
        .args(["run", "-q", "-p", "ha-hactl", "--bin", "hactl", "--"])
        .args(["provision", "--psk-file"])
        .arg(&psk)
        .args(["--serial", "FW-CI", "--cluster-id", "9"])
        .args([
            "--member",
            "FW-CI=10.0.0.1:44240",
            "--timers",
            "fast",
            "--out",
        ])
        .arg(&cfg))?;
    Ok((psk, cfg))
}

/// The stack high-water mark a lone member logs in its first seconds under QEMU (the boot,
/// the agent's first outputs): `(used, reserved)` bytes.
fn fw_stack_high_water(elf: &std::path::Path) -> Result<(u64, u64)> {
    let dir = std::env::temp_dir().join(format!("ha-fw-stack-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let log = fw_single_block(&dir).and_then(|(_, cfg)| fw_boot_log(elf, Some(&cfg), 3));
    let _ = std::fs::remove_dir_all(&dir);
    let log = log?;
    log.lines()
        .filter_map(|l| l.split_once("stack high-water: ").map(|(_, r)| r))
        .filter_map(|r| {
            let mut w = r.split_whitespace();
            let used = w.next()?.parse().ok()?;
            let reserved = w.nth(1)?.parse().ok()?;
            Some((used, reserved))
        })
        .max()
        .ok_or_else(|| format!("size: the member's log has no stack report:\n{log}"))
}

/// A free UDP port on loopback (bound, then released for QEMU).
fn fw_free_port() -> Result<u16> {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free UDP port: {e}"))
}

/// Two members whose LAN9118s are wired to each other (`-nic socket`): they find each other
/// over the main link and elect one active; when the first one's QEMU is killed, the second
/// one is (or becomes) active.
fn fw_pair_check(elf: &std::path::Path, dir: &std::path::Path, psk: &std::path::Path) -> Result {
    let names = ["FW-P1", "FW-P2"];
    let ports = [fw_free_port()?, fw_free_port()?];
    let mut members = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let cfg = dir.join(format!("{name}.cfg"));
        run(crate::util::cargo()
            .args(["run", "-q", "-p", "ha-hactl", "--bin", "hactl", "--"])
            .args(["provision", "--psk-file"])
            .arg(psk)
            .args(["--serial", name, "--cluster-id", "10", "--timers", "fast"])
            .args(["--member", "FW-P1=10.0.0.1:44240"])
            .args(["--member", "FW-P2=10.0.0.2:44240", "--out"])
            .arg(&cfg))?;
        let mut args = fw_config_args(&cfg)?;
        args.push("-nic".into());
        args.push(format!(
            "socket,udp=127.0.0.1:{},localaddr=127.0.0.1:{}",
            ports[1 - i],
            ports[i]
        ));
        members.push(args);
    }
    let first = fw_spawn(elf, &members[0])?;
    let second = fw_spawn(elf, &members[1])?;
    std::thread::sleep(std::time::Duration::from_secs(3));
    let log1 = first.stop(elf)?;
    std::thread::sleep(std::time::Duration::from_secs(2));
    let log2 = second.stop(elf)?;
    fw_expect("pair: first finds the second", &log1, "peer_found")?;
    fw_expect("pair: second finds the first", &log2, "peer_found")?;
    let first_role = |log: &str| {
        log.lines()
            .find(|l| l.contains("role_changed"))
            .map(|l| l.contains("-> active"))
    };
    match (first_role(&log1), first_role(&log2)) {
        (Some(true), Some(false)) => {
            fw_expect("pair: takeover after the active died", &log2, "(peer lost)")
        }
        (Some(false), Some(true)) => Ok(()),
        _ => Err(format!(
            "firmware: pair: not one active and one passive:\n{log1}\n---\n{log2}"
        )),
    }
}

/// Section sizes of the firmware ELF. Hand-written (about 60 lines) rather than a
/// dependency: xtask only needs the section and symbol tables of one 32-bit little-endian
/// ELF, and stays quick to build.
mod fw_elf {
    /// What `size` reports, bytes.
    pub struct Sizes {
        /// Loaded into flash: PROGBITS sections with the ALLOC flag (.data included).
        pub flash: u64,
        /// Initialised data (also counted in `ram_static`).
        pub data: u64,
        /// Writable allocated sections: .data, .bss, .uninit.
        pub ram_static: u64,
        /// `_stack_start - _stack_end` from the symbol table.
        pub stack: u64,
    }

    const SHF_WRITE: u32 = 0x1;
    const SHF_ALLOC: u32 = 0x2;
    const SHT_PROGBITS: u32 = 1;
    const SHT_SYMTAB: u32 = 2;

    fn u16_at(b: &[u8], off: usize) -> Result<u16, String> {
        b.get(off..off + 2)
            .map(|s| u16::from_le_bytes([s[0], s[1]]))
            .ok_or_else(|| "truncated ELF".to_string())
    }

    fn u32_at(b: &[u8], off: usize) -> Result<u32, String> {
        b.get(off..off + 4)
            .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
            .ok_or_else(|| "truncated ELF".to_string())
    }

    /// Parses a 32-bit little-endian ELF.
    pub fn sizes(b: &[u8]) -> Result<Sizes, String> {
        if b.get(..6) != Some(&[0x7F, b'E', b'L', b'F', 1, 1][..]) {
            return Err("not a 32-bit little-endian ELF".into());
        }
        let shoff = u32_at(b, 0x20)? as usize;
        let shentsize = u16_at(b, 0x2E)? as usize;
        let shnum = u16_at(b, 0x30)? as usize;
        let mut s = Sizes {
            flash: 0,
            data: 0,
            ram_static: 0,
            stack: 0,
        };
        let (mut stack_start, mut stack_end) = (None, None);
        for i in 0..shnum {
            let h = shoff + i * shentsize;
            let (kind, flags) = (u32_at(b, h + 4)?, u32_at(b, h + 8)?);
            let size = u64::from(u32_at(b, h + 20)?);
            if flags & SHF_ALLOC != 0 {
                if kind == SHT_PROGBITS {
                    s.flash += size;
                }
                if flags & SHF_WRITE != 0 {
                    s.ram_static += size;
                    if kind == SHT_PROGBITS {
                        s.data += size;
                    }
                }
            }
            if kind == SHT_SYMTAB {
                let (off, len) = (u32_at(b, h + 16)? as usize, size as usize);
                let strtab = shoff + u32_at(b, h + 24)? as usize * shentsize;
                let stroff = u32_at(b, strtab + 16)? as usize;
                for sym in (off..off + len).step_by(16) {
                    let name_off = stroff + u32_at(b, sym)? as usize;
                    let name = b
                        .get(name_off..)
                        .and_then(|t| t.split(|&c| c == 0).next())
                        .unwrap_or_default();
                    match name {
                        b"_stack_start" => stack_start = Some(u32_at(b, sym + 4)?),
                        b"_stack_end" => stack_end = Some(u32_at(b, sym + 4)?),
                        _ => {}
                    }
                }
            }
        }
        if let (Some(start), Some(end)) = (stack_start, stack_end) {
            s.stack = u64::from(start.saturating_sub(end));
        } else {
            return Err("no _stack_start/_stack_end symbols (memory.x)".into());
        }
        Ok(s)
    }
}

/// The harness part of `cargo xtask test`: the test wire, board simulator and launcher
/// tests, then the QEMU end-to-end suite (`tests/`, package ha-e2e) against `elf`, one test at
/// a time (one cluster at a time on a 2-core machine). With `CI=true` the suite runs or fails.
fn harness_ci(elf: &std::path::Path) -> Result {
    run(crate::util::cargo().args([
        "test",
        "-p",
        "ha-testwire",
        "-p",
        "ha-boardsim",
        "-p",
        "ha-qemu",
        "-p",
        "ha-testkit",
    ]))?;
    run(crate::util::cargo().env("HA_FIRMWARE_ELF", elf).args([
        "test",
        "-p",
        "ha-e2e",
        "--",
        "--test-threads=1",
    ]))
}

/// Runs `ha-cluster <cmd> --elf <release firmware> <args>` (package ha-testkit, release).
fn ha_cluster(cmd: &str, args: &[String]) -> Result {
    let elf = fw_build()?;
    run(crate::util::cargo()
        .args([
            "run",
            "-q",
            "--release",
            "-p",
            "ha-testkit",
            "--bin",
            "ha-cluster",
            "--",
        ])
        .arg(cmd)
        .arg("--elf")
        .arg(&elf)
        .args(args))
}

/// `cargo xtask qemu [--members K] [--seconds N] [--timers P] [--no-backup]`: boots K members
/// with the test wire, board simulators and host links, prints the status table every second
/// and fails unless exactly one member is active at the end.
/// `cargo xtask qemu soak [--minutes M] [--profile default|fast] [--hogs H]`: see [`soak`].
/// `cargo xtask qemu boots [--runs N] [--hogs H]`: boots the two-member cluster N times
/// beside H busy loops; last line `boots: runs=N hogs=H no_active=<k> ...`.
/// `cargo xtask qemu checks`: the firmware's part of `cargo xtask test` alone (boot checks
/// without, with a corrupt and with a valid block, the wired pair, the harness suite).
pub fn qemu(args: &[String]) -> Result {
    match args.first().map(String::as_str) {
        Some("checks") => ci(),
        Some("soak") => soak(&args[1..]),
        Some("driver-test") => driver_test::run_test(),
        Some("boots") => ha_cluster("boots", &args[1..]),
        _ => ha_cluster("boot", args),
    }
}

/// `cargo xtask demo`: setup, a two-member cluster under QEMU with a live status table (mode,
/// quality, links, LED), kill -9 of the active's QEMU, the takeover and the measured failover
/// time; every process it started is ended.
pub fn demo(args: &[String]) -> Result {
    crate::setup::setup()?;
    ha_cluster("demo", args)
}

/// `cargo xtask bench failover --harness [--runs N]`: fast profile, SIGKILL of the active's
/// QEMU → `RoleDecision Active` on the survivor's host link (no daemon: the harness answers
/// the liveness probes at once, so this measures less than a user sees; `bench failover`
/// without `--harness` measures on the client LAN); last line
/// `failover: runs=<N> min=<ms> median=<ms> max=<ms>`.
pub fn bench_failover(args: &[String]) -> Result {
    ha_cluster("bench", args)
}

/// `cargo xtask qemu soak [--minutes M] [--profile default|fast] [--hogs H]`: two members with the
/// profile's timers, the main link impaired (default: 20% loss + 100 ms one-way delay; fast:
/// 2% loss) for M minutes; last line `soak: profile=<p> minutes=<m> hogs=<h> swaps=<n> events_lost=<k>`
/// (swaps counted from the roles reports, the controllers' numbered events and their logs).
pub fn soak(args: &[String]) -> Result {
    ha_cluster("soak", args)
}
