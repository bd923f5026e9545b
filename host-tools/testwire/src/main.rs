//! `ha-testwire`: the test wire as a standalone process.
//!
//! ```text
//! ha-testwire --main 127.0.0.1:P0,127.0.0.1:P1 [--backup 127.0.0.1:B0,127.0.0.1:B1] --control <path>
//! ```
//! Prints one JSON line with the wire ports (`{"main_ports":[..],"backup_ports":[..]}`), then
//! relays until killed or until its standard input closes. Control: JSON lines on the unix
//! socket (see `ha_testwire::Request`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ha_testwire::{LinkKind, Wire, WireConfig};

fn addrs(s: &str) -> Result<Vec<SocketAddr>, String> {
    s.split(',')
        .filter(|a| !a.is_empty())
        .map(|a| a.parse().map_err(|e| format!("bad address {a:?}: {e}")))
        .collect()
}

fn run() -> Result<(), String> {
    let mut cfg = WireConfig::default();
    let mut control = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--main" => cfg.main = addrs(&val()?)?,
            "--backup" => cfg.backup = addrs(&val()?)?,
            "--control" => control = Some(PathBuf::from(val()?)),
            other => return Err(format!("unknown option {other}")),
        }
    }
    let control = control.ok_or("--control <path> is required")?;
    if cfg.main.is_empty() {
        return Err("--main needs at least one member address".into());
    }
    let mut wire = Wire::start(&cfg).map_err(|e| e.to_string())?;
    wire.set_control_path(control.clone());
    let wire = Arc::new(wire);
    wire.serve_control(&control).map_err(|e| e.to_string())?;
    let ports = |l| {
        (0..wire.members())
            .filter_map(|i| wire.wire_port(l, i))
            .collect::<Vec<_>>()
    };
    println!(
        "{}",
        serde_json::json!({
            "main_ports": ports(LinkKind::Main),
            "backup_ports": ports(LinkKind::Backup),
        })
    );
    // Runs until stdin closes (the parent went away) or the process is killed.
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
    Ok(())
}

fn main() {
    if let Err(e) = run() {
        eprintln!("ha-testwire: {e}");
        std::process::exit(2);
    }
}
