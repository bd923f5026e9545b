//! Start failures leave nothing behind.

use std::time::{Duration, Instant};

use ha_testkit::{Cluster, ClusterConfig};

#[test]
fn a_missing_elf_is_refused() {
    let cfg = ClusterConfig::new("/nonexistent/ha-firmware".into());
    let err = Cluster::start(&cfg).expect_err("no ELF");
    assert!(err.contains("no firmware ELF"), "{err}");
}

#[test]
fn a_kernel_that_does_not_boot_fails_the_start_and_leaves_nothing() {
    let dir = std::env::temp_dir().join(format!("ha-qemu-start-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let _cleanup = RemoveOnDrop(dir.clone());
    let elf = dir.join("not-an-elf");
    std::fs::write(&elf, b"").expect("write");
    let mut cfg = ClusterConfig::new(elf);
    cfg.members = 3;
    let t = Instant::now();
    let err = Cluster::start(&cfg).expect_err("an empty kernel does not boot");
    assert!(
        t.elapsed() < Duration::from_secs(15),
        "took {:?}",
        t.elapsed()
    );
    // Depending on timing QEMU gives up on the empty kernel (exits, QMP reset) during some
    // member's start, or runs nothing and the first controller never answers: the error names
    // the member either way.
    assert!(err.starts_with("QM-"), "{err}");
    // The cluster directory (named after this process) is gone.
    let prefix = format!("ha-qemu-{}-", std::process::id());
    let left: Vec<_> = std::fs::read_dir(std::env::temp_dir())
        .expect("tmp")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

/// Removes the test's own scratch directory, also when an assertion fails.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn member_counts_outside_2_to_8_are_refused() {
    for n in [0, 1, 9] {
        let mut cfg = ClusterConfig::new("/nonexistent".into());
        cfg.members = n;
        assert!(Cluster::start(&cfg).is_err(), "{n} members accepted");
    }
}
