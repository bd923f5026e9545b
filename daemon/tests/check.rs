//! `ha-daemon --check`: what a running daemon asks of its replacement before a restart
//! (`hactl update --daemon`): exit 0 only when the configuration and its block would run;
//! otherwise exit 2 with what is wrong, and nothing started.

use std::path::Path;
use std::process::Command;

fn check(config: &Path) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ha-daemon"))
        .arg("--config")
        .arg(config)
        .arg("--check")
        .output()
        .expect("run ha-daemon");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_accepts_a_runnable_configuration_and_refuses_the_rest() {
    let dir = std::env::temp_dir().join(format!("ha-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let block = dir.join("member.cfg");
    ha_daemon::mgmt::write_block(&block, &ha_hostlink::test_support::sample_cfg()).unwrap();
    let write = |name: &str, text: String| {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let good = write(
        "good.toml",
        format!(
            "config_block = \"{}\"\nhost_link = \"{}\"\n",
            block.display(),
            dir.join("host.sock").display()
        ),
    );
    let (code, err) = check(&good);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("accepted"), "{err}");

    // No block where the configuration says.
    let no_block = write(
        "no-block.toml",
        format!(
            "config_block = \"{}\"\nhost_link = \"/tmp/x.sock\"\n",
            dir.join("missing.cfg").display()
        ),
    );
    let (code, err) = check(&no_block);
    assert_eq!(code, 2);
    assert!(err.contains("missing.cfg"), "{err}");

    // A selective-sync rule that does not parse.
    let bad_rule = write(
        "bad-rule.toml",
        format!(
            "config_block = \"{}\"\nhost_link = \"/tmp/x.sock\"\n[sync]\nbind = \"10.9.0.1\"\n\
             [[sync.rule]]\naction = \"maybe\"\n",
            block.display()
        ),
    );
    let (code, err) = check(&bad_rule);
    assert_eq!(code, 2);
    assert!(err.contains("action"), "{err}");

    // Not a configuration at all.
    let (code, _) = check(&write("garbage.toml", "this is = not [toml".into()));
    assert_eq!(code, 2);
    std::fs::remove_dir_all(&dir).unwrap();
}
