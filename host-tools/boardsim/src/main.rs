//! `ha-boardsim --socket <member>/sensors.sock`: serves the default board (2 disks, RAID,
//! TPM, 2 PSUs, 2 fans, a module) to one member and reads commands on standard input, one
//! per line: `fail <kind> <index>` or `restore <kind> <index>` (kind: disk, raid, tpm, psu,
//! fan, module). Ends when standard input closes.

use std::io::BufRead;
use std::path::PathBuf;

use ha_boardsim::{default_readings, parse_kind, BoardSim};

fn run() -> Result<(), String> {
    let mut socket = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--socket" => socket = args.next().map(PathBuf::from),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let socket = socket.ok_or("--socket <path> is required")?;
    let sim = BoardSim::start(&socket, default_readings()).map_err(|e| e.to_string())?;
    for line in std::io::stdin().lock().lines() {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let result = match words.as_slice() {
            [verb @ ("fail" | "restore"), kind, index] => {
                match (parse_kind(kind), index.parse::<u8>()) {
                    (Some(k), Ok(i)) => {
                        sim.set(k, i, *verb == "restore").map_err(|e| e.to_string())
                    }
                    _ => Err(format!("bad component {kind} {index}")),
                }
            }
            [] => Ok(()),
            _ => Err("expected: fail|restore <kind> <index>".into()),
        };
        match result {
            Ok(()) => println!("ok"),
            Err(e) => println!("error: {e}"),
        }
    }
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ha-boardsim: {e}");
        std::process::exit(2);
    }
}
