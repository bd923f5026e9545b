//! Helpers shared by the hactl integration tests.
#![allow(dead_code)]

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

/// Runs the hactl binary with `args`, feeding `stdin`.
pub fn hactl(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_hactl"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn hactl");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stdin)
        .expect("write stdin");
    child.wait_with_output().expect("hactl output")
}

/// The key bytes of a key file.
pub fn key_bytes(path: &Path) -> [u8; 32] {
    let text = std::fs::read_to_string(path).expect("key file");
    let t = text.trim();
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).expect("hex");
    }
    k
}

/// Fails when `haystack` holds the key: raw, hex (either case), or any 8-byte run of it.
pub fn assert_no_key(what: &str, haystack: &[u8], key: &[u8; 32]) {
    let hex_lower: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let hex_upper = hex_lower.to_uppercase();
    let text = String::from_utf8_lossy(haystack);
    for w in 0..=(32 - 8) {
        let raw = &key[w..w + 8];
        assert!(
            !haystack.windows(8).any(|x| x == raw),
            "{what}: raw key bytes found"
        );
        let lo = &hex_lower[2 * w..2 * w + 16];
        let up = &hex_upper[2 * w..2 * w + 16];
        assert!(
            !text.contains(lo) && !text.contains(up),
            "{what}: hex key found"
        );
    }
}

/// stdout and stderr of an output, concatenated.
pub fn all_output(o: &Output) -> Vec<u8> {
    let mut v = o.stdout.clone();
    v.extend_from_slice(&o.stderr);
    v
}

/// `hactl provision` of member `serial` of the two-member cluster SN-A, SN-B into `out`, with
/// `extra` options.
pub fn provision_with(
    key: &str,
    serial: &str,
    out: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    let mut args = vec![
        "provision",
        "--psk-file",
        key,
        "--serial",
        serial,
        "--cluster-id",
        "4242",
        "--member",
        "SN-A=10.0.0.1:44240",
        "--member",
        "SN-B=10.0.0.2:44240",
        "--out",
        out.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    hactl(&args, b"")
}
