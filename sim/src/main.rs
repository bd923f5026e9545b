//! `ha-sim`: runs seeds of the deterministic cluster simulation (see `cargo xtask sim`).
//!
//! ```text
//! ha-sim --seeds N [--seed S] [--members K]   run N seeds from S (default 0)
//! ha-sim --seed S [--members K]               run one seed, print its trace
//! ha-sim --failover-stats [--runs R]          fast profile, no loss: crash → takeover times
//! ```
//! The last line is `sim: <N> seeds, <V> violations`; the exit status is 1 when V > 0.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use ha_sim::run::report;
use ha_sim::{run, Kind, Options, Outcome};

struct Args {
    seeds: Option<u64>,
    seed: Option<u64>,
    members: Option<usize>,
    failover: bool,
    runs: u64,
    trace: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        seeds: None,
        seed: None,
        members: None,
        failover: false,
        runs: 1000,
        trace: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        let mut val = |name: &str| -> Result<u64, String> {
            it.next()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match x.as_str() {
            "--seeds" => a.seeds = Some(val("--seeds")?),
            "--seed" => a.seed = Some(val("--seed")?),
            "--members" => {
                let k = val("--members")? as usize;
                if !(2..=ha_sim::scenario::MAX_SIM_MEMBERS).contains(&k) {
                    return Err(format!(
                        "--members must be 2..={}",
                        ha_sim::scenario::MAX_SIM_MEMBERS
                    ));
                }
                a.members = Some(k);
            }
            "--failover-stats" => a.failover = true,
            "--runs" => a.runs = val("--runs")?.max(1),
            "--trace" => a.trace = true,
            "-h" | "--help" => {
                println!("usage: ha-sim --seeds N [--seed S] [--members K] [--trace] | --failover-stats [--runs R]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(a)
}

/// Runs `count` seeds from `first` on every core; outcomes in seed order.
fn run_all(first: u64, count: u64, opts: &Options) -> Vec<Outcome> {
    let next = AtomicU64::new(0);
    let out = Mutex::new(Vec::with_capacity(count as usize));
    let workers = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .min(count as usize)
        .max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= count {
                    break;
                }
                let o = run(first + i, opts);
                if let Ok(mut v) = out.lock() {
                    v.push(o);
                }
            });
        }
    });
    let mut v = out.into_inner().unwrap_or_default();
    v.sort_by_key(|o| o.seed);
    v
}

fn main() {
    // A panicking agent is reported as a violation by the run; keep stderr quiet about it.
    std::panic::set_hook(Box::new(|_| {}));
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ha-sim: {e}");
            std::process::exit(2);
        }
    };
    let start = Instant::now();
    if a.failover {
        let opts = Options {
            members: Some(2),
            kind: Some(Kind::Failover),
            merit_order: None,
        };
        let outs = run_all(a.seed.unwrap_or(0), a.runs, &opts);
        let mut times: Vec<u64> = outs.iter().filter_map(|o| o.failover_ms).collect();
        let violations = outs.iter().filter(|o| o.violation.is_some()).count();
        for o in outs.iter().filter(|o| o.violation.is_some()) {
            print!("{}", report(o, Some(2)));
        }
        times.sort_unstable();
        if times.is_empty() {
            println!("failover: no takeover measured");
        } else {
            let pct = |p: usize| times[(times.len() - 1) * p / 100];
            println!(
                "failover (fast profile: 10 ms x 3, probe; 2 links, 1-2 ms delay, no loss): crash -> new active decision over {} runs: median {} ms, p90 {} ms, max {} ms, min {} ms",
                times.len(),
                pct(50),
                pct(90),
                times[times.len() - 1],
                times[0]
            );
        }
        println!("sim: {} seeds, {} violations", outs.len(), violations);
        std::process::exit(if violations > 0 || times.is_empty() {
            1
        } else {
            0
        });
    }
    let opts = Options {
        members: a.members,
        kind: None,
        merit_order: None,
    };
    let (first, count) = match (a.seed, a.seeds) {
        (Some(s), None) => (s, 1),
        (s, Some(n)) => (s.unwrap_or(0), n),
        (None, None) => (0, 100),
    };
    let outs = run_all(first, count, &opts);
    let mut violations = 0;
    for o in &outs {
        if o.violation.is_some() {
            violations += 1;
            print!("{}", report(o, a.members));
        } else if count == 1 || a.trace {
            println!(
                "seed {} ({:?}, {} members): ok; trace:",
                o.seed, o.kind, o.members
            );
            for l in &o.trace {
                println!("    {l}");
            }
        }
    }
    eprintln!(
        "ha-sim: {} seeds in {:.1} s",
        outs.len(),
        start.elapsed().as_secs_f64()
    );
    println!("sim: {} seeds, {} violations", outs.len(), violations);
    std::process::exit(if violations > 0 { 1 } else { 0 });
}
