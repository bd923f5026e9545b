//! Our side of the bench: the kernel e2e's cluster (QEMU controllers, daemons with
//! `datapath = "kernel"`, plain forwarding), set up by the e2e's own code; churn while it
//! runs; then the e2e's crash of the active.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::super::env::{forwarding, Env};
use super::super::kernel::{unix_ms, wait_installed};
use super::super::{setup, Opts};
use super::{
    after_crash, churn, cpu_during, fresh_dir, start_sniffer, table_count, BenchOpts, Outcome,
};
use crate::util::Result;

/// Our cluster's options for the bench (the kernel e2e's: QEMU controllers with `o`'s
/// timers, daemons with `datapath = "kernel"`, plain forwarding, `o`'s load), and a fresh
/// run directory and environment for it, named after `tag`.
pub(super) fn cluster(o: &BenchOpts, id: u32, tag: &str) -> Result<(Opts, Env, PathBuf)> {
    let opts = Opts {
        connections: o.connections,
        interval_ms: o.interval_ms,
        controller: if o.host_controllers { "host" } else { "qemu" }.into(),
        timers: o.timers.clone(),
        table: "dataplane".into(),
        datapath: "kernel".into(),
        sync: true,
        nat: false,
        ftp: false,
        shared: false,
        cases: Vec::new(),
        backup_link: o.backup_link,
        standby_install: o.standby_install.clone(),
    };
    let dir = fresh_dir(id, tag)?;
    let env = Env {
        prefix: format!("hkb{id}{}", &tag[..1]),
        dir: dir.clone(),
        namespaces: Vec::new(),
        procs: Vec::new(),
    };
    Ok((opts, env, dir))
}

/// Sets up, churns, crashes; the outcome.
pub(super) fn run(
    o: &BenchOpts,
    elf: &Path,
    b: &dyn Fn(&str) -> String,
    xtask: &Path,
    id: u32,
) -> Result<Outcome> {
    let (opts, mut env, dir) = cluster(o, id, "ours")?;
    let r = (|| -> Result<Outcome> {
        let firmware = (!o.host_controllers).then_some(elf);
        let s = setup::start(&mut env, &opts, firmware, b, &dir, id)?;
        let mut load = s.load;
        let survivor = 1 - s.active;
        let (active_ns, standby_ns) = (env.ns(s.members[s.active]), env.ns(s.members[survivor]));
        let t = Instant::now();
        let within = Duration::from_secs(10 + o.connections as u64 / 2_000);
        let installed = wait_installed(&s.socks[survivor], o.connections as u64, within);
        println!(
            "kernel-ha[ours]: the standby installed {installed} synced entries ({} connections) in {} ms",
            o.connections,
            t.elapsed().as_millis()
        );
        // The standby's data-path role changes from here to the crash: each false takeover
        // is two (active, then passive again).
        let changes = || forwarding(&s.socks[survivor], Duration::from_secs(2)).map(|f| f.changes);
        // The standby's table is counted through its daemon's /proc entry (no process
        // started per poll).
        let standby_pid = env
            .child(&format!("daemon-{}", s.members[survivor]))
            .map(|c| c.id())
            .ok_or("kernel-ha[ours]: no standby daemon")?;
        let changes_before = changes();
        let mut pids = |names: &[&str]| -> Vec<u32> {
            names
                .iter()
                .filter_map(|n| env.child(n).map(|c| c.id()))
                .collect()
        };
        let groups = [
            ("daemons", pids(&["daemon-a", "daemon-b"])),
            (
                if o.host_controllers {
                    "host-process controllers"
                } else {
                    "QEMU controllers"
                },
                pids(&["controller-a", "controller-b"]),
            ),
            ("sensor simulators", pids(&["boardsim-a", "boardsim-b"])),
        ];
        // Its daemon's synced table, the like-for-like of conntrackd's external cache
        // (answered by the daemon alone, through its management socket; the sync thread
        // refreshes it every 10 ms, which can only make ours look slower).
        let synced_table = || {
            forwarding(&s.socks[survivor], Duration::from_secs(1))
                .and_then(|f| f.table_connections)
                .ok_or_else(|| "the standby's daemon reports no table size".to_string())
        };
        let kernel_table = || table_count(standby_pid);
        let exact = || churn::exact_count(xtask, &standby_ns);
        let (churn, churn_cpu) = cpu_during(&groups, || {
            if o.write_behind() {
                // The standby holds the entries in its synced table while the stream is
                // busy (as conntrackd's in its cache): that is what is timed; its kernel
                // table is the second count.
                churn::run(
                    xtask,
                    "ours",
                    &active_ns,
                    o.churn_rounds,
                    &synced_table,
                    None,
                    Some(&kernel_table),
                    Duration::from_secs(120),
                )
            } else {
                churn::run(
                    xtask,
                    "ours",
                    &active_ns,
                    o.churn_rounds,
                    &kernel_table,
                    Some(&exact),
                    Some(&synced_table),
                    Duration::from_secs(120),
                )
            }
        });
        if let Err(e) = &churn {
            println!("kernel-ha[ours]: churn failed: {e}");
        }
        if o.table_at_crash {
            // A standby that never holds them all is a result, not a reason to stop: the
            // crash goes on with what it holds, and the survivors say what that cost.
            if let Err(e) = churn::keep_for_crash(
                xtask,
                "ours",
                &active_ns,
                &|| table_count(standby_pid),
                Some(&|| churn::exact_count(xtask, &standby_ns)),
                Duration::from_secs(120),
            ) {
                println!("kernel-ha[ours]: the crash goes on without the whole table: {e}");
            }
        }
        std::thread::sleep(Duration::from_secs(2));
        let sniffer = start_sniffer(&mut env, b, s.members[survivor], "ours")?;
        let burst = churn::burst_before_crash(xtask, "ours", &active_ns, o.crash_in_burst)?;
        let m = s.members[s.active];
        let false_takeovers = changes_before
            .zip(changes())
            .map(|(a, b)| b.saturating_sub(a).div_ceil(2));
        let cutter = env.link_cutter(&active_ns)?;
        println!(
            "kernel-ha[ours]: member {} dies: controller and daemon killed, data interfaces down",
            s.serials[s.active]
        );
        let killed_at = Instant::now();
        let killed_ms = unix_ms();
        // Everything at once (a dead box): the controller (its heartbeats) first, as the
        // peer's VRRP process, then the daemon, then the interfaces; reaped after.
        let dead = env.kill_now(&[&format!("controller-{m}"), &format!("daemon-{m}")]);
        cutter.cut(&["in", "out"])?;
        println!(
            "kernel-ha[ours]: signals sent and interfaces down {} µs after the kill",
            killed_at.elapsed().as_micros()
        );
        Env::reap(dead);
        load.cmd("mark")?;
        // The daemon's own record of the moment its data path became active.
        let deadline = killed_at + Duration::from_secs(20);
        let takeover = loop {
            match forwarding(&s.socks[survivor], Duration::from_secs(1)) {
                Some(f) if f.active => break Some(f.since_ms.saturating_sub(killed_ms)),
                _ if Instant::now() > deadline => break None,
                _ => std::thread::sleep(Duration::from_millis(10)),
            }
        };
        let (v, first) = after_crash(
            &mut env,
            &mut load,
            &sniffer,
            "ours",
            o.interval_ms,
            killed_at,
            killed_ms,
        )?;
        churn::burst_after_crash(burst, "ours");
        // The survivor's journal: when its probe of the dead peer ended and when its
        // takeover began (the controller's decision received), ms after the kill.
        let journal =
            std::fs::read_to_string(env.dir.join(format!("daemon-{}.log", s.members[survivor])))
                .unwrap_or_default();
        let took_over = journal_ms(&journal, "takeover at ", killed_ms);
        // The takeover's steps and what the write-behind wrote at it.
        for l in journal
            .lines()
            .filter(|l| l.contains("takeover"))
            .skip(journal.matches("takeover").count().saturating_sub(2))
        {
            println!("kernel-ha[ours]: the survivor's journal: {l}");
        }
        let probe_ended = journal_ms(&journal, "no answer after", killed_ms);
        let g = |k: &str| v[k].as_u64().unwrap_or(0);
        Ok(Outcome {
            survived: g("survived"),
            connections: g("connections"),
            gap_ms: g("gap_ms"),
            first_forwarded_ms: first.forwarded,
            first_garp_ms: first.garp,
            false_takeovers,
            // Each takeover of the survivor's data path is a journal line; the last is the
            // crash's.
            takeovers_before_kill: Some(
                (journal.matches("takeover at ").count() as u64)
                    .saturating_sub(u64::from(took_over.is_some())),
            ),
            milestones: vec![
                ("kill_to_probe_no_answer_ms", probe_ended),
                ("kill_to_takeover_ms", took_over),
                ("kill_to_forwarding_ms", takeover),
            ],
            churn,
            churn_cpu,
            counted: if o.write_behind() {
                SYNCED_TABLE
            } else {
                KERNEL_TABLE
            },
            also_counted: Some(if o.write_behind() {
                KERNEL_TABLE
            } else {
                SYNCED_TABLE
            }),
        })
    })();
    r.map_err(|e| format!("{e}\n{}", env.post_mortem(Some(elf))))
}

/// The standby's kernel table as the churn counts it.
const KERNEL_TABLE: &str = "entries in its kernel's conntrack table (nf_conntrack_count)";
/// The standby's synced table as the churn counts it.
const SYNCED_TABLE: &str = "entries in its daemon's synced table (table_connections)";

/// The first journal line of `text` containing `marker` whose Unix ms (the number after
/// "takeover at ", or in "(at … unix ms)") is at or after `killed_ms`: ms after the kill.
fn journal_ms(text: &str, marker: &str, killed_ms: u64) -> Option<u64> {
    text.lines().filter(|l| l.contains(marker)).find_map(|l| {
        let t: u64 = l
            .split_once("takeover at ")
            .or_else(|| l.split_once("(at "))?
            .1
            .split_whitespace()
            .next()?
            .parse()
            .ok()?;
        t.checked_sub(killed_ms)
    })
}

#[cfg(test)]
mod tests {
    use super::journal_ms;

    #[test]
    fn journal_times_are_read_after_the_kill_only() {
        let j = "<6>ha-daemon: probe of SN-A: no answer after 10 ms (at 900 unix ms)\n\
                 <6>ha-daemon: probe of SN-A: no answer after 10 ms (at 1025 unix ms)\n\
                 <6>ha-daemon: takeover at 1031 (unix ms): installs drained 0.0 ms";
        assert_eq!(journal_ms(j, "no answer after", 1000), Some(25));
        assert_eq!(journal_ms(j, "takeover at ", 1000), Some(31));
        assert_eq!(journal_ms(j, "takeover at ", 2000), None);
    }
}
