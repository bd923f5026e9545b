//! Main-CPU daemon of the HA system: the host link to the management controller, interface
//! monitoring, the userspace fast path with stateful filtering, connection-state sync over UDP
//! and the management API. `docs/daemon.md` describes the design.
#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod dp;
pub mod event_numbers;
pub mod fastpath;
pub mod host_rtt;
pub mod journal;
pub mod kernelpath;
pub mod links;
pub mod metrics;
pub mod mgmt;
pub mod packetio;
pub mod peers;
pub mod probes;
pub mod runtime;
pub mod synckeys;
pub mod syncplane;
pub mod uplink;

/// Starts a thread named `name` (at most 15 bytes: what `top -H`, `perf` and
/// `/proc/<pid>/task/*/comm` show), so that each of the daemon's threads can be told apart
/// when it is profiled or seen busy. Like [`std::thread::spawn`], it panics only if the
/// system refuses a new thread.
pub fn spawn_named<F, T>(name: &str, f: F) -> std::thread::JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    std::thread::Builder::new()
        .name(name.to_owned())
        .spawn(f)
        .unwrap_or_else(|e| panic!("starting thread {name}: {e}"))
}
