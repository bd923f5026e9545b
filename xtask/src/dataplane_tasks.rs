//! xtask commands owned by the dataplane part (see README).

use crate::util::Result;

/// Extra CI checks of this part, run by `cargo xtask test`.
pub fn ci() -> Result {
    // Dataplane part: the sync engine end to end over loopback UDP with real sockets
    // (release build, 100k connections; fails if any change is not applied or the bulk or
    // lag phase does not complete). Figures are not checked here: see `bench sync`.
    sync_bench::run_bench(&[
        "--connections".into(),
        "100000".into(),
        "--no-conntrackd".into(),
    ])?;
    // Daemon part: the failover scenario in network namespaces.
    daemon_e2e::ci()?;
    // The whole cluster under random faults for two minutes (a fixed seed, so that CI is
    // reproducible; `cargo xtask chaos --minutes M` without --seed explores new schedules).
    daemon_e2e::chaos_ci()?;
    Ok(())
}

mod daemon_e2e;

/// `e2e tcp-survival --connections N [--interval-ms MS] [--controller qemu|host]
/// [--timers PROFILE] [--table dataplane|builtin]`: TCP connections through a two-member
/// cluster in network namespaces survive a planned swap, a PSK rotation and a crash of the
/// active (see `daemon_e2e`). `e2e soak --minutes M [--timers P] [--hogs H] [--loss PCT]`:
/// the false-failover soak with the real daemons (see `daemon_e2e::soak`).
pub fn e2e(args: &[String]) -> Result {
    daemon_e2e::tcp_survival(args)
}

/// `chaos --minutes M [--seed S] [--connections N]`: the e2e cluster under random faults
/// (see `daemon_e2e::chaos`).
pub fn chaos(args: &[String]) -> Result {
    daemon_e2e::chaos(args)
}

/// `bench sync [--connections N] [--conntrackd-connections M] [--no-conntrackd]`: conntrackd
/// between two network namespaces, then our sync engine over loopback UDP (release build);
/// last line `sync: updates_per_s=<n> bulk_1m_ms=<ms> p99_lag_ms=<ms>` (see `sync_bench`).
pub fn bench_sync(args: &[String]) -> Result {
    sync_bench::run_bench(args)
}

mod sync_bench;

/// `bench conntrack [--entries N]`: entries per second into the kernel's conntrack table,
/// one request at a time and batched (see `conntrack_bench`).
pub fn bench_conntrack(args: &[String]) -> Result {
    conntrack_bench::run_bench(args)
}

mod conntrack_bench;

/// `bench kernel-ha --connections N [--interval-ms MS] [--churn-rounds R]`: our kernel data
/// path beside keepalived + conntrackd in the kernel e2e's topology, the same load and crash
/// (see `daemon_e2e::kernel_ha_bench`).
pub fn bench_kernel_ha(args: &[String]) -> Result {
    daemon_e2e::kernel_ha_bench::run(args)
}

/// `bench failover [--runs N] [--connections C] [--interval-ms MS] [--timers PROFILE]`: kill
/// → the survivor's first gratuitous ARP and first forwarded packet, ours beside keepalived
/// in the kernel-ha bench's topology (see `daemon_e2e::kernel_ha_bench::failover`).
pub fn bench_failover(args: &[String]) -> Result {
    daemon_e2e::kernel_ha_bench::failover::run(args)
}
