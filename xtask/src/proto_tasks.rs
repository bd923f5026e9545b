//! xtask commands owned by the proto part: `fuzz` and `bench proto`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{cargo, have, output, root, run, Result};

/// Fuzz targets in `fuzz/fuzz_targets`, one per decoder.
const FUZZ_TARGETS: &[&str] = &["frame_open", "uart_decoder", "config_block", "sync_wire"];

/// In CI: the fuzz crate still compiles (on stable, without sanitizers), so targets never rot.
pub fn ci() -> Result {
    run(cargo().args(["check", "--manifest-path", "fuzz/Cargo.toml", "--bins"]))
}

/// `cargo xtask fuzz --seconds N [--target NAME]`: runs every fuzz target (or one) for N
/// seconds each with cargo-fuzz on the nightly toolchain, installing both when missing.
pub fn fuzz(args: &[String]) -> Result {
    let mut seconds = 60u64;
    let mut only: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--seconds" => {
                seconds = it
                    .next()
                    .and_then(|v| v.parse().ok())
                    .filter(|&s| s > 0)
                    .ok_or("fuzz: --seconds needs a positive number")?
            }
            "--target" => only = Some(it.next().ok_or("fuzz: --target needs a name")?.clone()),
            other => {
                return Err(format!(
                    "fuzz: unknown argument {other:?} (--seconds N, --target NAME)"
                ))
            }
        }
    }
    if let Some(t) = &only {
        if !FUZZ_TARGETS.contains(&t.as_str()) {
            return Err(format!(
                "fuzz: no target {t:?}; targets: {}",
                FUZZ_TARGETS.join(", ")
            ));
        }
    }
    ensure_fuzz_tools()?;
    seed_corpus()?;
    let mut results = Vec::new();
    for target in FUZZ_TARGETS
        .iter()
        .filter(|t| only.as_deref().is_none_or(|o| o == **t))
    {
        let status = Command::new("rustup")
            .current_dir(root().join("fuzz"))
            .args(["run", "nightly", "cargo", "fuzz", "run", target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .status()
            .map_err(|e| format!("fuzz: cannot start cargo fuzz: {e}"))?;
        results.push((target, status.success()));
    }
    let crashed: Vec<_> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(t, _)| **t)
        .collect();
    println!(
        "fuzz: {} targets, {seconds} s each, {} crashed{}",
        results.len(),
        crashed.len(),
        if crashed.is_empty() {
            String::new()
        } else {
            format!(" ({})", crashed.join(", "))
        }
    );
    if crashed.is_empty() {
        Ok(())
    } else {
        Err("fuzz: crash found; the reproducer is under fuzz/artifacts/".into())
    }
}

fn ensure_fuzz_tools() -> Result {
    let has_nightly = output(Command::new("rustup").args(["toolchain", "list"]))
        .map(|s| s.lines().any(|l| l.starts_with("nightly")))
        .unwrap_or(false);
    if !has_nightly {
        run(Command::new("rustup").args([
            "toolchain",
            "install",
            "nightly",
            "--profile",
            "minimal",
        ]))?;
    }
    if !have("cargo-fuzz") {
        run(Command::new("cargo").args(["install", "cargo-fuzz", "--locked"]))?;
    }
    Ok(())
}

/// Seeds the frame corpus with the test-vector frames, so the fuzzer starts from frames that
/// authenticate and reaches the message decoders at once.
fn seed_corpus() -> Result {
    let vectors = std::fs::read_to_string(root().join("proto/tests/vectors.txt"))
        .map_err(|e| format!("fuzz: cannot read proto/tests/vectors.txt: {e}"))?;
    for (kind, target) in [("frame ", "frame_open"), ("uart ", "uart_decoder")] {
        let dir = root().join("fuzz/corpus").join(target);
        std::fs::create_dir_all(&dir).map_err(|e| format!("fuzz: {}: {e}", dir.display()))?;
        for line in vectors.lines().filter(|l| l.starts_with(kind)) {
            let mut parts = line.split(' ').skip(1);
            let (Some(name), Some(hex)) = (parts.next(), parts.next()) else {
                continue;
            };
            let bytes: Option<Vec<u8>> = (0..hex.len())
                .step_by(2)
                .map(|i| {
                    hex.get(i..i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                })
                .collect();
            if let Some(b) = bytes {
                std::fs::write(dir.join(format!("vector-{name}")), b)
                    .map_err(|e| format!("fuzz: {e}"))?;
            }
        }
    }
    Ok(())
}

/// `cargo xtask bench proto`: the criterion benchmark of seal + open + replay check + decode of
/// a heartbeat, then one summary line from criterion's estimates.
pub fn bench(args: &[String]) -> Result {
    if let Some(a) = args.first() {
        return Err(format!("bench proto: unexpected argument {a:?}"));
    }
    run(cargo().args(["bench", "-p", "ha-proto", "--bench", "seal_open"]))?;
    let dir = target_dir()?.join("criterion/heartbeat_seal_open");
    let hmac = mean_ns(&dir.join("hmac"))?;
    let aead = mean_ns(&dir.join("aead"))?;
    println!(
        "proto: heartbeat seal+open hmac={:.0} ns aead={:.0} ns",
        hmac, aead
    );
    println!(
        "proto: hmac_frames_per_s={:.0} aead_frames_per_s={:.0}",
        1e9 / hmac,
        1e9 / aead
    );
    Ok(())
}

/// The cargo target directory (honours CARGO_TARGET_DIR and config).
pub fn target_dir() -> Result<PathBuf> {
    let meta = output(cargo().args(["metadata", "--format-version", "1", "--no-deps"]))?;
    let v: serde_json::Value =
        serde_json::from_str(&meta).map_err(|e| format!("cargo metadata: {e}"))?;
    v["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .ok_or_else(|| "cargo metadata: no target_directory".into())
}

/// Mean time per iteration, in nanoseconds, of a criterion benchmark's last run.
fn mean_ns(bench_dir: &Path) -> Result<f64> {
    let path = bench_dir.join("new/estimates.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| format!("bench: cannot read {}: {e}", path.display()))?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("bench: {}: {e}", path.display()))?;
    v["mean"]["point_estimate"]
        .as_f64()
        .ok_or_else(|| format!("bench: no mean in {}", path.display()))
}
