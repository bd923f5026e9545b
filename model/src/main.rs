//! `ha-model`: exhaustive model checking of the real agent (see `cargo xtask model`).
//!
//! ```text
//! ha-model [--config 2x1,2x2,3x1,3x2] [--threads N] [--fifo] [--horizon MS]
//!          [--losses N] [--dups N] [--crashes N] [--probe-losses N] [--faults N] [--late N] [--delay MS] [--links 1|2] [--recovery MS] [--connected MS] [--max-flips N]
//!          [--plant-wrong-order [priority-reversed|everyone-better]] [--trace-lines N]
//! ```
//! One line per configuration, a trace per failed property, and last
//! `model: states=<n> properties=<k> violations=<v>` (n: distinct states over all
//! configurations, k: properties checked over all configurations, v: failed ones).
//! Exit status: 1 when v > 0. With `--plant-wrong-order` the meaning flips: the run
//! succeeds (0) when the planted bug is caught (v > 0) and fails (1) when it is not.

use std::time::Instant;

use ha_model::{check, mutants, ModelConfig};

struct Args {
    configs: Vec<String>,
    threads: usize,
    fifo: bool,
    horizon: Option<u64>,
    losses: Option<u8>,
    dups: Option<u8>,
    crashes: Option<u8>,
    probe_losses: Option<u8>,
    total: Option<u8>,
    late: Option<u8>,
    links: Option<u8>,
    recovery: Option<u64>,
    connected: Option<u64>,
    flips: Option<u8>,
    delay: Option<u64>,
    plant: Option<String>,
    trace_lines: usize,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        configs: vec!["2x1".into(), "2x2".into(), "3x1".into(), "3x2".into()],
        threads: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        fifo: false,
        horizon: None,
        losses: None,
        dups: None,
        crashes: None,
        probe_losses: None,
        total: None,
        late: None,
        links: None,
        recovery: None,
        connected: None,
        flips: None,
        delay: None,
        plant: None,
        trace_lines: 60,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let x = argv[i].as_str();
        let next = argv.get(i + 1).cloned();
        let mut num = |name: &str| -> Result<u64, String> {
            i += 1;
            next.as_deref()
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| format!("{name} needs a number"))
        };
        match x {
            "--config" => {
                i += 1;
                let v = next.ok_or("--config needs a list such as 2x1,3x1")?;
                a.configs = v.split(',').map(str::to_string).collect();
            }
            "--threads" => a.threads = num("--threads")?.max(1) as usize,
            "--fifo" => a.fifo = true,
            "--horizon" => a.horizon = Some(num("--horizon")?),
            "--losses" => a.losses = Some(num("--losses")? as u8),
            "--dups" => a.dups = Some(num("--dups")? as u8),
            "--crashes" => a.crashes = Some(num("--crashes")? as u8),
            "--probe-losses" => a.probe_losses = Some(num("--probe-losses")? as u8),
            "--faults" => a.total = Some(num("--faults")? as u8),
            "--late" => a.late = Some(num("--late")? as u8),
            "--links" => a.links = Some(num("--links")? as u8),
            "--recovery" => a.recovery = Some(num("--recovery")?),
            "--connected" => a.connected = Some(num("--connected")?),
            "--max-flips" => a.flips = Some(num("--max-flips")? as u8),
            "--delay" => a.delay = Some(num("--delay")?),
            "--trace-lines" => a.trace_lines = num("--trace-lines")? as usize,
            "--plant-wrong-order" => match next.filter(|v| !v.starts_with("--")) {
                Some(v) => {
                    i += 1;
                    a.plant = Some(v);
                }
                None => a.plant = Some("priority-reversed".into()),
            },
            "-h" | "--help" => {
                println!("usage: ha-model [--config 2x1,2x2,3x1,3x2] [--threads N] [--fifo] [--horizon MS] [--losses N] [--dups N] [--crashes N] [--probe-losses N] [--faults N] [--late N] [--delay MS] [--links 1|2] [--plant-wrong-order [NAME]] [--trace-lines N]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}")),
        }
        i += 1;
    }
    Ok(a)
}

fn config(name: &str, a: &Args) -> Result<ModelConfig, String> {
    let (m, d) = name
        .split_once('x')
        .and_then(|(m, d)| Some((m.parse::<usize>().ok()?, d.parse::<usize>().ok()?)))
        .ok_or_else(|| format!("configuration {name:?}: expected MEMBERSxDOMAINS, e.g. 2x1"))?;
    if !(2..=3).contains(&m) || !(1..=2).contains(&d) {
        return Err(format!(
            "configuration {name:?}: 2 or 3 members, 1 or 2 domains"
        ));
    }
    let ids: &[u8] = if d == 1 { &[1] } else { &[1, 3] };
    let mut c = ModelConfig::new(m, ids);
    c.threads = a.threads;
    c.reorder = !a.fifo;
    c.horizon_ms = a.horizon;
    c.faults.losses = a.losses.unwrap_or(c.faults.losses);
    c.faults.dups = a.dups.unwrap_or(c.faults.dups);
    c.faults.crashes = a.crashes.unwrap_or(c.faults.crashes);
    c.faults.probe_losses = a.probe_losses.unwrap_or(c.faults.probe_losses);
    c.faults.total = a.total.unwrap_or(c.faults.total);
    c.faults.late = a.late.unwrap_or(c.faults.late);
    if let Some(l) = a.links {
        // Each link carries its own heartbeats: the bound on frames in flight grows with it.
        c.max_inflight += c.members * (c.members - 1) * 3 * usize::from(l.saturating_sub(c.links));
        c.links = l;
    }
    c.recovery_override_ms = a.recovery;
    c.connected_override_ms = a.connected;
    c.max_flips = a.flips.unwrap_or(c.max_flips);
    c.max_delay_ms = a.delay.unwrap_or(c.max_delay_ms);
    if let Some(p) = &a.plant {
        let names: Vec<&str> = mutants::ALL.iter().map(|(n, _)| *n).collect();
        c.planted = Some(
            mutants::by_name(p)
                .ok_or_else(|| format!("unknown wrong order {p:?} (one of {names:?})"))?,
        );
    }
    Ok(c)
}

fn main() {
    let a = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("ha-model: {e}");
            std::process::exit(2);
        }
    };
    let mut cfgs = Vec::new();
    for name in &a.configs {
        match config(name, &a) {
            Ok(c) => cfgs.push(c),
            Err(e) => {
                eprintln!("ha-model: {e}");
                std::process::exit(2);
            }
        }
    }
    if let Some(p) = &a.plant {
        println!("model: planted wrong merit order {p:?}: the checker must report violations");
    }
    let start = Instant::now();
    let (mut states, mut props, mut violations) = (0, 0, 0);
    for c in &cfgs {
        let f = &c.faults;
        eprintln!(
            "model {}: {} members, domains {:?}, {} link(s), {}, {} late frames (<= {} ms), losses {}, dups {}, crashes {}, probe losses {}, {} in all{}",
            c.name,
            c.members,
            c.domains,
            c.links,
            if c.reorder { "reordering links" } else { "FIFO links" },
            f.late,
            c.max_delay_ms,
            f.losses,
            f.dups,
            f.crashes,
            f.probe_losses,
            f.total,
            c.horizon_ms.map(|h| format!(", horizon {h} ms")).unwrap_or_default()
        );
        let o = check(c, a.plant.is_some());
        println!("{}", o.line());
        for v in &o.violations {
            println!("  VIOLATION in {}: {}", o.name, v.property);
            let skip = v.trace.len().saturating_sub(a.trace_lines);
            if skip > 0 {
                println!("    ... {skip} earlier steps");
            }
            for l in &v.trace[skip..] {
                println!("    {l}");
            }
        }
        states += o.states;
        props += o.properties;
        violations += o.violations.len();
    }
    eprintln!("ha-model: {:.1} s in all", start.elapsed().as_secs_f64());
    println!("model: states={states} properties={props} violations={violations}");
    let failed = if a.plant.is_some() {
        if violations == 0 {
            println!("model: the planted wrong order was NOT detected");
        }
        violations == 0
    } else {
        violations > 0
    };
    std::process::exit(if failed { 1 } else { 0 });
}
