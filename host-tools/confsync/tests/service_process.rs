//! `confsync service` as separate processes (the way a member runs it): two members, the
//! management API on their unix sockets, sessions over loopback TCP; each process is killed by
//! its own pid when the test ends. Prints the time of a full and of an incremental sync of
//! 10,000 files as the service reports it.

use std::time::Duration;

use ha_confsync::store::{Role, Store};
use ha_mgmt_api::{Reply, Request, SyncState};

mod common;
use common::process::{call, start, start_with};
use common::{strong_key, write_key_file};

#[test]
fn two_service_processes_publish_sync_and_compare_10000_files() {
    const N: usize = 10_000;
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("psk");
    write_key_file(&key, &strong_key(0x5a));
    let b = start(dir.path(), "SN-B", "standby", &key, None);
    let a = start(
        dir.path(),
        "SN-A",
        "active",
        &key,
        Some(&format!("SN-B={}", b.addr)),
    );
    let sa = Store::open(&dir.path().join("SN-A"), Role::Active).unwrap();
    let d = sa.draft_dir().unwrap();
    for i in 0..N {
        let p = d.join(format!("d{:02}/f{i:05}.conf", i % 64));
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("object {i}\n").repeat(10)).unwrap();
    }
    assert!(matches!(
        call(&a, Request::ConfigPublish { comment: None }),
        Reply::Published { files, .. } if files == N as u64
    ));
    let Reply::SyncDone(full) = call(&a, Request::ConfigSync { peer: None }) else {
        panic!("no sync report")
    };
    assert_eq!(full.files_sent as usize, N);
    let Reply::Synctest(st) = call(&a, Request::ConfigSynctest) else {
        panic!("no synctest")
    };
    assert_eq!(st.peers[0].state, SyncState::Synchronized, "{st:?}");

    sa.write("d07/f00007.conf", b"changed\n").unwrap();
    call(&a, Request::ConfigPublish { comment: None });
    let Reply::SyncDone(inc) = call(&a, Request::ConfigSync { peer: None }) else {
        panic!("no sync report")
    };
    assert_eq!(inc.files_sent, 1);
    let sb = Store::open(&dir.path().join("SN-B"), Role::Standby).unwrap();
    assert_eq!(sb.read("d07/f00007.conf").unwrap(), b"changed\n");
    println!(
        "confsync service ({} build): full sync of {N} files ({} bytes) {} ms; \
         incremental sync (1 changed file) {} ms",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        full.bytes_sent,
        full.elapsed_ms,
        inc.elapsed_ms
    );
}

#[test]
fn a_periodic_job_in_the_service_process_syncs_its_paths_only() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("psk");
    write_key_file(&key, &strong_key(0x6b));
    // The shortest period the jobs file accepts.
    let jobs = dir.path().join("jobs.json");
    std::fs::write(
        &jobs,
        r#"{"jobs":[{"name":"dhcp-leases","paths":["dhcp/leases"],"every_s":10}]}"#,
    )
    .unwrap();
    let b = start(dir.path(), "SN-B", "standby", &key, None);
    let a = start_with(
        dir.path(),
        "SN-A",
        "active",
        &key,
        Some(&format!("SN-B={}", b.addr)),
        &["--jobs", jobs.to_str().unwrap()],
    );
    let sa = Store::open(&dir.path().join("SN-A"), Role::Active).unwrap();
    sa.write("filter/main.conf", b"v1\n").unwrap();
    call(&a, Request::ConfigPublish { comment: None });
    call(&a, Request::ConfigSync { peer: None });
    // A lease renewed by the DHCP server and an operator's unpublished edit.
    sa.write("dhcp/leases/lan0", b"lease\n").unwrap();
    sa.write("filter/main.conf", b"v2 draft\n").unwrap();
    let sb = Store::open(&dir.path().join("SN-B"), Role::Standby).unwrap();
    let mut seen = false;
    // Bounded: the job runs 10 s after the service started.
    for _ in 0..150 {
        if sb.read("dhcp/leases/lan0").is_ok() {
            seen = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(seen, "the periodic job did not sync the leases");
    assert_eq!(sb.read("filter/main.conf").unwrap(), b"v1\n");
}
