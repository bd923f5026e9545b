//! hactl commands that need no daemon: key generation and checks, provisioning, inspection.

mod common;

use std::os::unix::fs::PermissionsExt;

use common::{all_output, assert_no_key, hactl, key_bytes, provision_with};

const STRONG: &str = "tumble orbit quiver lantern 47 marsh\n";

/// A temporary directory holding a key `k` made by `hactl psk generate`.
fn generated_key() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    assert!(
        hactl(&["psk", "generate", "--out", key.to_str().unwrap()], b"")
            .status
            .success()
    );
    (dir, key)
}

fn provision(dir: &std::path::Path, key: &str, serial: &str, out: &str) -> std::process::Output {
    provision_with(
        key,
        serial,
        &dir.join(out),
        &["--backup-link", "--domain", "0=SN-A", "--weight", "fan=50"],
    )
}

#[test]
fn generate_writes_owner_only_key_and_never_prints_it() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("cluster.key");
    let o = hactl(&["psk", "generate", "--out", key.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let k = key_bytes(&key);
    assert_no_key("psk generate", &all_output(&o), &k);
    // A second generate refuses to overwrite, without printing the key.
    let o2 = hactl(&["psk", "generate", "--out", key.to_str().unwrap()], b"");
    assert_eq!(o2.status.code(), Some(3));
    assert_no_key("psk generate again", &all_output(&o2), &k);
    // --show prints it, on explicit request only.
    let key2 = dir.path().join("k2");
    let o3 = hactl(
        &["psk", "generate", "--show", "--out", key2.to_str().unwrap()],
        b"",
    );
    assert_eq!(o3.status.code(), Some(0));
    let hex: String = key_bytes(&key2)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(String::from_utf8_lossy(&o3.stdout).trim(), hex);
}

#[test]
fn check_refuses_weak_and_short_passphrases() {
    for weak in ["password\n", "Summer2024!\n", "letmein12345\n", "Xq9!z\n"] {
        let o = hactl(&["psk", "check", "--json"], weak.as_bytes());
        assert_eq!(o.status.code(), Some(3), "{weak}: {o:?}");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["accepted"], false);
        assert!(v["score"].as_u64().unwrap() <= 4);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("refused"), "{err}");
        // The passphrase itself is not echoed.
        assert!(
            !err.contains(weak.trim()) && !String::from_utf8_lossy(&o.stdout).contains(weak.trim())
        );
    }
    let o = hactl(&["psk", "check"], STRONG.as_bytes());
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("score 4/4"));
}

#[test]
fn check_reads_a_file_and_uses_context() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("pass");
    std::fs::write(&f, "acme-paris-cluster-01\n").unwrap();
    let o = hactl(
        &[
            "psk",
            "check",
            "--file",
            f.to_str().unwrap(),
            "--context",
            "acme",
            "--context",
            "paris",
            "--json",
        ],
        b"",
    );
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(v["guesses_log10"].as_f64().is_some());
}

#[test]
fn weak_passphrase_never_becomes_a_key() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("k");
    let o = hactl(
        &[
            "psk",
            "generate",
            "--from-passphrase",
            "--out",
            key.to_str().unwrap(),
        ],
        b"password123\n",
    );
    assert_eq!(o.status.code(), Some(3));
    assert!(!key.exists());
    let o = hactl(
        &[
            "psk",
            "generate",
            "--from-passphrase",
            "--out",
            key.to_str().unwrap(),
        ],
        STRONG.as_bytes(),
    );
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(key.exists());
}

#[test]
fn provision_then_inspect_without_the_key() {
    let (dir, key) = generated_key();
    let k = key_bytes(&key);
    let o = provision(dir.path(), key.to_str().unwrap(), "SN-A", "a.img");
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert_no_key("provision", &all_output(&o), &k);
    let img = dir.path().join("a.img");
    let bytes = std::fs::read(&img).unwrap();
    assert_eq!(bytes.len(), ha_proto::config_block::BLOCK_SIZE);
    assert_eq!(
        std::fs::metadata(&img).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let block = ha_proto::config_block::ConfigBlock::decode(&bytes).unwrap();
    assert_eq!(block.psk.0, k);
    assert_eq!(block.cluster_id, 4242);

    for args in [
        vec!["inspect", img.to_str().unwrap()],
        vec!["inspect", "--json", img.to_str().unwrap()],
    ] {
        let o = hactl(&args, b"");
        assert_eq!(o.status.code(), Some(0), "{o:?}");
        assert_no_key("inspect", &all_output(&o), &k);
    }
    let o = hactl(&["inspect", "--json", img.to_str().unwrap()], b"");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["serial"], "SN-A");
    assert_eq!(v["cluster_id"], 4242);
    assert_eq!(v["members"].as_array().unwrap().len(), 2);
    assert_eq!(v["members"][0]["me"], true);
    assert_eq!(v["weights"]["fan"], 50);
    assert_eq!(v["domains"][0]["preferred"], "SN-A");
    assert!(v.get("psk").is_none());
    assert_eq!(v["psk_fingerprint"].as_str().unwrap().len(), 16);

    // Both members' images carry the same fingerprint.
    assert!(
        provision(dir.path(), key.to_str().unwrap(), "SN-B", "b.img")
            .status
            .success()
    );
    let o2 = hactl(
        &[
            "inspect",
            "--json",
            dir.path().join("b.img").to_str().unwrap(),
        ],
        b"",
    );
    let v2: serde_json::Value = serde_json::from_slice(&o2.stdout).unwrap();
    assert_eq!(v["psk_fingerprint"], v2["psk_fingerprint"]);
    assert_eq!(v2["members"][1]["me"], true);
}

#[test]
fn bad_inputs_get_clear_errors_and_codes() {
    let (dir, key) = generated_key();
    let k = key_bytes(&key);
    // Serial not among the members.
    let o = provision(dir.path(), key.to_str().unwrap(), "SN-Z", "z.img");
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("serial"));
    assert_no_key("provision error", &all_output(&o), &k);
    // A key file others can read is refused.
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let o = provision(dir.path(), key.to_str().unwrap(), "SN-A", "a.img");
    assert_eq!(o.status.code(), Some(3));
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // Corrupt, erased and absent images.
    assert!(
        provision(dir.path(), key.to_str().unwrap(), "SN-A", "a.img")
            .status
            .success()
    );
    let img = dir.path().join("a.img");
    let mut bytes = std::fs::read(&img).unwrap();
    bytes[20] ^= 0x04;
    std::fs::write(&img, &bytes).unwrap();
    let o = hactl(&["inspect", img.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&o.stderr).contains("digest"));
    assert_no_key("inspect corrupt", &all_output(&o), &k);
    std::fs::write(&img, vec![0xFF; 4096]).unwrap();
    let o = hactl(&["inspect", img.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(6));
    assert!(String::from_utf8_lossy(&o.stderr).contains("erased"));
    let o = hactl(&["inspect", dir.path().join("nope").to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(4));
}

/// `hactl provision` refuses every block the member's firmware would refuse at boot (the
/// same check, `ha_agent::config::firmware_accepts`), and says what is wrong and the limit;
/// nothing is written.
#[test]
fn provision_refuses_what_the_firmware_would_refuse() {
    let (dir, key) = generated_key();
    let out = dir.path().join("x.img");
    let run = |extra: &[&str]| provision_with(key.to_str().unwrap(), "SN-A", &out, extra);
    for (extra, want) in [
        (
            &[
                "--domain", "0", "--domain", "1", "--domain", "2", "--domain", "3", "--domain", "4",
            ][..],
            "5 domains: this firmware handles at most 4",
        ),
        (
            &["--domain", "1=SN-C"][..],
            "--domain 1=SN-C: SN-C is not in --member",
        ),
        (
            &["--domain", "16"][..],
            "domain 16: domain ids must be 0–15",
        ),
        (
            &["--domain", "2", "--domain", "2"][..],
            "domain 2 is given twice",
        ),
        (&["--weight", "fan=10000"][..], "weights must be 0–9999"),
        (
            &["--member", "SN-A=10.0.0.3:44240"][..],
            "SN-A is given twice in --member",
        ),
    ] {
        let o = run(extra);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{extra:?}: {err}");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?}: an image was written");
    }
    // Four sparse domains, the firmware's limit: accepted.
    let o = run(&[
        "--domain", "1", "--domain", "3", "--domain", "7", "--domain", "15",
    ]);
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    assert!(out.exists());
}

/// Completions and the manual page come from the command definitions: every command is in
/// them, and an unknown shell is a command-line error (exit 2) naming the shells there are.
#[test]
fn completions_and_the_manual_page_cover_every_command() {
    let bash = hactl(&["completions", "bash"], b"");
    assert!(bash.status.success(), "{bash:?}");
    let bash = String::from_utf8_lossy(&bash.stdout);
    let man = hactl(&["man"], b"");
    assert!(man.status.success(), "{man:?}");
    let man = String::from_utf8_lossy(&man.stdout);
    assert!(
        man.starts_with(".ie") || man.contains(".TH hactl 1"),
        "{man}"
    );
    for cmd in [
        "provision",
        "info",
        "forwarding",
        "events",
        "synctest",
        "update",
    ] {
        assert!(bash.contains(cmd), "bash completion without {cmd}");
        assert!(man.contains(cmd), "manual page without {cmd}");
    }
    for shell in ["zsh", "fish"] {
        assert!(
            hactl(&["completions", shell], b"").status.success(),
            "{shell}"
        );
    }
    let bad = hactl(&["completions", "tcsh"], b"");
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bash"));
    // The help an operator reads names no internal specification item.
    let help = hactl(&["--help"], b"");
    assert!(!String::from_utf8_lossy(&help.stdout).contains("SPEC"));
}

/// `hactl settings` changes the HA settings of an image in place and says what changed; the
/// serial, the key and the members stay; a refused value writes nothing; the same settings
/// on both members give the same revision.
#[test]
fn settings_edit_an_image_in_place_and_refused_values_change_nothing() {
    use ha_proto::config_block::{ConfigBlock, TimerProfile};
    let (dir, key) = generated_key();
    let a = dir.path().join("a.img");
    let b = dir.path().join("b.img");
    for (serial, out) in [("SN-A", &a), ("SN-B", &b)] {
        assert!(provision_with(key.to_str().unwrap(), serial, out, &[])
            .status
            .success());
    }
    let read = |p: &std::path::Path| ConfigBlock::decode(&std::fs::read(p).unwrap()).unwrap();
    let before = read(&a);
    assert_eq!(
        before.revision(),
        read(&b).revision(),
        "one cluster, one revision"
    );

    // One edit, made on each member's image in turn.
    let edit = |img: &std::path::Path| {
        hactl(
            &[
                "settings",
                img.to_str().unwrap(),
                "--weight",
                "fan=700",
                "--timers",
                "fast",
                "--domain",
                "0=SN-B",
                "--tpm",
                "on",
            ],
            b"",
        )
    };
    let o = edit(&a);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    for line in [
        "timers: default → fast",
        "weights: fan 100 → 700",
        "TPM counted: off → on",
        "domain 0 preferred member: none → SN-B",
        "hactl reload",
    ] {
        assert!(text.contains(line), "{line:?} in {text}");
    }
    let after = read(&a);
    assert_eq!(after.timers, TimerProfile::Fast);
    assert_eq!(after.weights.fan, 700);
    assert!(after.tpm_included);
    assert_eq!(
        (after.serial, after.key_id, &after.members),
        (before.serial, before.key_id, &before.members)
    );
    assert_eq!(after.psk_fingerprint(), before.psk_fingerprint());
    assert_ne!(after.revision(), before.revision());
    assert_eq!(
        read(&b).revision(),
        before.revision(),
        "the other image is untouched"
    );

    // Refused values: nothing written, the reason and the limit said.
    let image = std::fs::read(&a).unwrap();
    for (args, want) in [
        (&["--weight", "fan=10000"][..], "weights must be 0–9999"),
        (&["--timers", "slow"][..], "bad timer profile"),
        (&["--domain", "0=SN-C"][..], "SN-C is not in --member"),
        (&["--aggregate", "some"][..], "all-down or any-down"),
    ] {
        let mut all = vec!["settings", a.to_str().unwrap()];
        all.extend_from_slice(args);
        let o = hactl(&all, b"");
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(std::fs::read(&a).unwrap(), image, "{args:?} wrote");
    }
    // The same edit on the peer's image: the revisions agree again, as inspect shows.
    assert!(edit(&b).status.success());
    assert_eq!(read(&b).revision(), read(&a).revision());
    let shown = |p: &std::path::Path| {
        let o = hactl(&["inspect", p.to_str().unwrap(), "--json"], b"");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        v["revision"].as_str().unwrap().to_string()
    };
    assert_eq!(shown(&a), format!("{:016x}", read(&a).revision()));
    assert_eq!(shown(&a), shown(&b));
    // Nothing to change is said, and exits 0.
    let o = hactl(&["settings", a.to_str().unwrap(), "--tpm", "on"], b"");
    assert!(String::from_utf8_lossy(&o.stdout).contains("nothing to change"));
}

/// Offline commands have no socket options: their help does not offer them and a socket
/// given anyway is a command-line error (exit 2) that writes nothing; the commands that talk
/// to a daemon offer them after their name too.
#[test]
fn offline_commands_take_no_socket_options() {
    for cmd in [
        &["provision", "--help"][..],
        &["settings", "--help"],
        &["inspect", "--help"],
        &["psk", "generate", "--help"],
        &["psk", "check", "--help"],
    ] {
        let o = hactl(cmd, b"");
        let help = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success(), "{cmd:?}");
        assert!(
            !help.contains("--socket"),
            "{cmd:?} offers --socket:\n{help}"
        );
    }
    // Each online command offers the socket of what it talks to, and only that one.
    for (cmd, daemon, service) in [
        (&["info", "--help"][..], true, true),
        (&["passive", "--help"], true, false),
        (&["events", "--help"], true, false),
        (&["psk", "rotate", "--help"], true, false),
        (&["config", "sync", "--help"], false, true),
        (&["config", "events", "--help"], false, true),
        (&["cluster", "join", "--help"], true, true),
        // Every member's daemon, each named by --member SERIAL=SOCKET.
        (&["update", "--help"], false, false),
    ] {
        let help = String::from_utf8_lossy(&hactl(cmd, b"").stdout).to_string();
        assert_eq!(help.contains(" --socket "), daemon, "{cmd:?}:\n{help}");
        assert_eq!(
            help.contains(" --config-socket "),
            service,
            "{cmd:?}:\n{help}"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (_k, key) = generated_key();
    let out = dir.path().join("img");
    let o = hactl(
        &[
            "--socket",
            "/run/ha/mgmt.sock",
            "provision",
            "--psk-file",
            key.to_str().unwrap(),
            "--serial",
            "SN-A",
            "--cluster-id",
            "1",
            "--member",
            "SN-A=10.0.0.1:44240",
            "--out",
            out.to_str().unwrap(),
        ],
        b"",
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&all_output(&o)).contains("works offline"));
    assert!(!out.exists(), "nothing written");
    let o = hactl(&["inspect", "--socket", "/x", out.to_str().unwrap()], b"");
    assert_eq!(o.status.code(), Some(2));
}
