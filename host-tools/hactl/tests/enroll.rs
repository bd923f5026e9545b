//! `hactl cluster enroll` against a member's real configuration-sync service (in-process,
//! loopback TCP): a new box with only the key file and the member's address gets a block the
//! firmware accepts; bad input and a wrong key get clear errors, write nothing, and never
//! show the key.

mod common;

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use common::{all_output, assert_no_key, hactl, key_bytes, provision_with};
use ha_confsync::keys::SessionCounter;
use ha_confsync::service::{RoleSource, Service, ServiceConfig};
use ha_confsync::store::{Role, Store};
use ha_confsync::wire::Security;
use ha_proto::keys::{KeySet, Keyring};
use ha_proto::msg::Serial;

/// SN-A's configuration-sync service, sharing `block`; stops when dropped.
struct MemberA {
    addr: String,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for MemberA {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

fn member_a(dir: &Path, key: &Path, block: &Path) -> MemberA {
    let root = dir.join("store-a");
    let psk = ha_persist::read_key_file(key).unwrap();
    let sec = Security {
        cluster_id: 4242,
        keyring: Keyring::new(KeySet::derive(&psk, 4242, 1)),
        me: Serial::new("SN-A").unwrap(),
        encrypt: false,
        sessions: SessionCounter::of_store(&root),
    };
    let svc = Arc::new(Service::new(
        Store::open(&root, Role::Standby).unwrap(),
        ServiceConfig {
            block: Some(block.to_path_buf()),
            ..ServiceConfig::new(sec, RoleSource::Fixed(Role::Active))
        },
    ));
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let stop = Arc::new(AtomicBool::new(false));
    let t = svc.serve(l, stop.clone()).unwrap();
    MemberA {
        addr,
        stop,
        threads: vec![t],
    }
}

fn key(dir: &Path, name: &str) -> PathBuf {
    let k = dir.join(name);
    assert!(
        hactl(&["psk", "generate", "--out", k.to_str().unwrap()], b"")
            .status
            .success()
    );
    k
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn a_new_box_enrols_with_the_key_alone_and_bad_input_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let k = key(dir.path(), "k");
    let a_img = dir.path().join("a.img");
    let o = provision_with(
        s(&k),
        "SN-A",
        &a_img,
        &[
            "--timers",
            "custom:20:4",
            "--backup-link",
            "--domain",
            "0=SN-A",
        ],
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = member_a(dir.path(), &k, &a_img);
    let c_img = dir.path().join("c.img");
    let hook = dir.path().join("install.sh");
    let got = dir.path().join("installed");
    std::fs::write(
        &hook,
        format!("#!/bin/sh\necho \"$1 $2\" > {}\n", got.display()),
    )
    .unwrap();
    std::fs::set_permissions(&hook, std::fs::Permissions::from_mode(0o755)).unwrap();
    let enroll = |key: &Path, serial: &str, link: &str, peer: &str| {
        hactl(
            &[
                "cluster",
                "enroll",
                "--peer",
                peer,
                "--psk-file",
                s(key),
                "--serial",
                serial,
                "--main-link",
                link,
                "-o",
                s(&c_img),
                "--install",
                s(&hook),
            ],
            b"",
        )
    };
    let kb = key_bytes(&k);

    // Bad input: refused with the reason (exit 3), nothing written, no hook run.
    for (serial, link, peer, says) in [
        (
            "SN C with a very long name",
            "10.0.0.3:44240",
            a.addr.as_str(),
            "bad serial",
        ),
        ("SN-C", "10.0.0.3", a.addr.as_str(), "--main-link"),
        ("SN-C", "10.0.0.2:44240", a.addr.as_str(), "address"),
        ("SN-C", "10.0.0.3:44240", "127.0.0.1:1", "cannot reach"),
    ] {
        let o = enroll(&k, serial, link, peer);
        let err = String::from_utf8_lossy(&o.stderr).to_string();
        assert!(
            !o.status.success() && err.contains(says),
            "{serial} {link} {peer}: {err}"
        );
        assert!(!c_img.exists() && !got.exists(), "{err}");
        assert_no_key("enroll error", &all_output(&o), &kb);
    }
    // Another key: the member's hello fails it; nothing is asked, nothing written.
    let other = key(dir.path(), "other");
    let o = enroll(&other, "SN-C", "10.0.0.3:44240", &a.addr);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(err.contains("does not hold this key"), "{err}");
    assert!(!c_img.exists());
    assert_no_key("wrong key", &all_output(&o), &key_bytes(&other));

    // The key alone: cluster 4242, key id 1, SN-A's members, timers and domain, SN-C added.
    let o = enroll(&k, "SN-C", "10.0.0.3:44240", &a.addr);
    let said = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(
        said.starts_with(&format!(
            "enrolled SN-C in cluster 4242 through {}: key id 1, 3 members (SN-A, SN-B, SN-C), \
             timers custom:20:4",
            a.addr
        )),
        "{said}"
    );
    assert_no_key("enroll", &all_output(&o), &kb);
    assert_eq!(
        std::fs::metadata(&c_img).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::read_to_string(&got).unwrap().trim(),
        format!("SN-C {}", c_img.display())
    );
    let c = ha_persist::read_block(&c_img).unwrap();
    let a_block = ha_persist::read_block(&a_img).unwrap();
    assert_eq!(c.serial.as_str(), "SN-C");
    assert_eq!(c.psk_fingerprint(), a_block.psk_fingerprint());
    assert_eq!(
        (c.timers, c.backup_link, c.domains.clone(), c.cluster_id),
        (
            a_block.timers,
            a_block.backup_link,
            a_block.domains.clone(),
            4242
        )
    );
    // An existing image is not replaced without --force.
    let o = enroll(&k, "SN-C", "10.0.0.3:44240", &a.addr);
    assert!(!o.status.success());
}
