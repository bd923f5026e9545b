//! The namespace's `net.netfilter.nf_conntrack_events` setting, which decides whether an entry
//! can ever report events.
//!
//! The kernel gives an entry its event extension when the entry is created, and only then:
//! with the default setting (2, "when someone listens") an entry created while nobody in the
//! kernel listened to conntrack events never reports its updates or its removal, even to a
//! listener that subscribes later. A standby on its own machine has no listener (only the
//! active subscribes), so every entry it installs from the state sync would be silent after
//! a takeover: the new active would never tell its returning peer that those connections
//! changed or closed (found with `conntrack -E` in a namespace: an entry installed before the
//! listener gave no destroy event; one installed after it did). Setting 1 ("always") gives
//! every entry the extension; events are still only built when someone listens.

use std::io;

/// Where the setting lives (per network namespace: the calling thread's).
const PATH: &str = "/proc/sys/net/netfilter/nf_conntrack_events";

/// "Always": every new entry gets the event extension.
const ALWAYS: u8 = 1;

/// Makes every entry created from now on in the calling thread's namespace able to report
/// events (`nf_conntrack_events = 1`); returns the value it had. Fails when the setting
/// cannot be read or written (no `nf_conntrack` module, `/proc/sys` read-only, no
/// `CAP_NET_ADMIN`): a kernel data path without it loses the removals of inherited
/// connections after a takeover.
pub fn every_entry_reports_events() -> io::Result<u8> {
    let was = match read() {
        // The setting appears with the conntrack module: a daemon that starts before
        // anything used conntrack on this machine loads it (a ctnetlink request for the
        // table makes the kernel load ctnetlink and conntrack), then reads again.
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            if let Ok(mut ct) = super::socket::Ctnetlink::open() {
                let _ = ct.dump();
            }
            read()?
        }
        r => r?,
    };
    if was != ALWAYS {
        std::fs::write(PATH, format!("{ALWAYS}\n"))
            .map_err(|e| io::Error::new(e.kind(), format!("writing {PATH}: {e}")))?;
    }
    Ok(was)
}

/// The namespace's current setting.
pub fn read() -> io::Result<u8> {
    let text = std::fs::read_to_string(PATH)
        .map_err(|e| io::Error::new(e.kind(), format!("reading {PATH}: {e}")))?;
    text.trim().parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{PATH}: not a number: {text:?}"),
        )
    })
}
