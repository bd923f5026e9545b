//! How fast entries go into the kernel's conntrack table over ctnetlink, one acknowledged
//! request at a time and in batches of many requests per send: the figures behind the
//! standby's choice of installing synced entries as they arrive (issue 12). Run it inside a
//! network namespace of its own (`cargo xtask bench conntrack` does); it fills that
//! namespace's table. Last line:
//! `conntrack-install: entries=<n> one_by_one_per_s=<r> batched_per_s=<r> dump_ms=<ms>`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

use ha_kernel::conntrack::socket::Ctnetlink;
use ha_kernel::conntrack::{CtEntry, CtTuple, TcpInfo, IPS_ASSURED, IPS_SEEN_REPLY};

/// An established TCP entry numbered `i` (distinct client address and port per `i`).
fn entry(i: u32, base: u8) -> CtEntry {
    let orig = CtTuple {
        src: IpAddr::V4(Ipv4Addr::new(
            base,
            (i >> 16) as u8,
            (i >> 8) as u8,
            i as u8,
        )),
        dst: IpAddr::V4(Ipv4Addr::new(10, 2, 0, 20)),
        proto: 6,
        src_port: 40_000 + (i % 20_000) as u16,
        dst_port: 80,
    };
    CtEntry {
        orig,
        reply: orig.inverse(),
        status: IPS_SEEN_REPLY | IPS_ASSURED,
        timeout_s: 3600,
        mark: 0,
        zone: 0,
        tcp: Some(TcpInfo {
            state: 3,
            wscale_orig: 7,
            wscale_reply: 7,
            flags_orig: 0x23,
            flags_reply: 0x23,
        }),
        helper: None,
        seq_adj: None,
    }
}

fn main() {
    let n: u32 = std::env::args()
        .skip_while(|a| a != "--entries")
        .nth(1)
        .map(|v| v.parse().expect("--entries N"))
        .unwrap_or(20_000);
    let mut ct = match Ctnetlink::open() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("conntrack-install: {e}");
            std::process::exit(2);
        }
    };
    let t = Instant::now();
    for i in 0..n {
        ct.install(&entry(i, 11)).expect("install");
    }
    let one = f64::from(n) / t.elapsed().as_secs_f64();
    let batch: Vec<CtEntry> = (0..n).map(|i| entry(i, 12)).collect();
    let t = Instant::now();
    let refused = ct.install_batch(&batch).expect("batch");
    let batched = f64::from(n) / t.elapsed().as_secs_f64();
    assert!(refused.is_empty(), "refused: {refused:?}");
    let t = Instant::now();
    let (dump, _) = ct.dump().expect("dump");
    let dump_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(dump.len(), 2 * n as usize, "entries in the table");
    println!(
        "conntrack-install: entries={n} one_by_one_per_s={one:.0} batched_per_s={batched:.0} dump_ms={dump_ms:.0}"
    );
}
