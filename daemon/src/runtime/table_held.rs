//! Whether this member holds its peers' table, told to the controller
//! ([`HostMsg::TableHeld`]): a member that does not has quality 0 while passive, so it takes
//! no domain from a live active before it could carry the active's connections
//! (`ha_agent::quality`).

use std::borrow::Cow;
use std::time::{Duration, Instant};

use ha_proto::msg::host::HostMsg;

use super::{HostLoop, LoopState, Shared};

/// How often the daemon repeats [`HostMsg::TableHeld`] besides on every change: a frame
/// the line lost is made good within this (a controller that missed "held" keeps a
/// returning member from its domains that long).
pub const TABLE_HELD_EVERY: Duration = Duration::from_secs(2);

/// The first controller firmware that takes [`HostMsg::TableHeld`] (an earlier one would
/// refuse the frame as a message it does not know).
pub const TABLE_HELD_SINCE: ha_proto::msg::FirmwareVersion = ha_proto::msg::FirmwareVersion {
    major: 0,
    minor: 2,
    patch: 0,
};

/// Whether this member's controller takes [`HostMsg::TableHeld`]: its firmware, from its
/// last status report, is [`TABLE_HELD_SINCE`] or later.
fn controller_takes_table_held(sh: &Shared) -> bool {
    sh.status.as_ref().is_some_and(|(r, _)| {
        r.members
            .iter()
            .any(|m| m.local && m.firmware >= TABLE_HELD_SINCE)
    })
}

/// The most of the peer's entries that may still wait for this member's kernel (the
/// write-behind's, `Plane::installs_pending`) while it counts as holding the table: a
/// takeover writes them before it opens the guard, about 100,000 a second, so this bounds
/// that write to some 160 ms. A bulk of a large table is written in the quiet after it,
/// before the member says it holds the table; a busy stream's entries, held for at most a
/// few seconds, may keep it from saying so while the stream lasts.
pub const TABLE_PENDING_MAX: u64 = 16_384;

/// Whether this member holds its peers' table, and why (for the journal and `hactl
/// forwarding`): an active member's table is the one its peers copy; without a state sync
/// there is nothing to hold; otherwise the sync must hold the peer's whole table
/// (`peer`) and, on the kernel path, at most [`TABLE_PENDING_MAX`] of its entries may
/// still wait for the kernel (`pending`).
pub fn table_held(
    active: bool,
    peer: Option<ha_dataplane::sync::PeerTable>,
    pending: u64,
) -> (bool, Cow<'static, str>) {
    use ha_dataplane::sync::PeerTable;
    match peer {
        _ if active => (true, "active: its table is the one the peers copy".into()),
        None => (true, "no state sync".into()),
        Some(PeerTable::Held) if pending <= TABLE_PENDING_MAX => {
            (true, "the peer's table is held".into())
        }
        Some(PeerTable::Held) => (
            false,
            format!("{pending} of the peer's entries are not in the data path yet").into(),
        ),
        Some(PeerTable::Receiving) => (false, "receiving the peer's table".into()),
        Some(PeerTable::Lost) => (
            false,
            "the state-sync session with the peer was lost".into(),
        ),
        Some(PeerTable::NoPeerYet) => (false, "no peer heard on the state sync yet".into()),
    }
}

impl HostLoop {
    /// Tells the controller whether this member holds its peers' table
    /// ([`HostMsg::TableHeld`]): on a change, to a new controller boot, and every
    /// [`TABLE_HELD_EVERY`]; only to a controller that takes it ([`TABLE_HELD_SINCE`]). A
    /// change is journaled.
    pub(super) fn tell_table_held(&mut self, st: &mut LoopState, now: Instant, new_boot: bool) {
        let pending = self.forwarding.as_ref().map_or(0, |f| f.installs_pending());
        let mut sh = self.lock_shared();
        if !controller_takes_table_held(&sh) {
            return;
        }
        let (held, why) = table_held(sh.forwarding.active, sh.peer_table, pending);
        let due = match st.table_held_sent {
            Some((h, at)) => h != held || new_boot || now.duration_since(at) >= TABLE_HELD_EVERY,
            None => true,
        };
        let last = sh.table_held.as_ref();
        if last.is_none_or(|(h, w)| *h != held || *w != why) {
            if last.is_none_or(|(h, _)| *h != held) {
                eprintln!("{}", crate::journal::table_held_line(held, &why));
            }
            sh.table_held = Some((held, why.into_owned()));
        }
        drop(sh);
        if due {
            st.uplink.push(HostMsg::TableHeld(held), now);
            st.table_held_sent = Some((held, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::*;
    use ha_proto::msg::host::StatusReport;
    use ha_proto::msg::Serial;
    use std::sync::atomic::AtomicBool;
    use std::sync::{Arc, Mutex};

    /// A status report whose local member runs firmware `v`.
    fn status_of_firmware(v: ha_proto::msg::FirmwareVersion) -> StatusReport {
        let me = ha_proto::msg::host::MemberSummary {
            serial: Serial::new("SN-A").expect("serial"),
            local: true,
            alive: true,
            quality: 100,
            forced: ha_proto::msg::Forced::None,
            firmware: v,
            config_revision: 1,
            paused: false,
            domains: heapless::Vec::new(),
            links: heapless::Vec::new(),
            mode_since_ms: 0,
        };
        StatusReport {
            uptime_ms: 1_000,
            members: heapless::Vec::from_slice(&[me]).expect("members"),
            led: ha_proto::msg::host::LedReport::Off,
            frames_sent: 0,
            frames_received: 0,
            frames_rejected: 0,
        }
    }

    #[test]
    fn the_peers_table_is_held_only_when_whole_and_in_the_data_path() {
        use ha_dataplane::sync::PeerTable;
        let held = |active, peer, pending| table_held(active, peer, pending).0;
        assert!(
            held(true, Some(PeerTable::Receiving), 5),
            "active: its own table"
        );
        assert!(held(false, None, 0), "no state sync: nothing to hold");
        assert!(held(false, Some(PeerTable::Held), 0));
        assert!(
            held(false, Some(PeerTable::Held), TABLE_PENDING_MAX),
            "a short write"
        );
        let many = TABLE_PENDING_MAX + 1;
        assert!(
            !held(false, Some(PeerTable::Held), many),
            "still going into the kernel"
        );
        for not in [PeerTable::Receiving, PeerTable::Lost, PeerTable::NoPeerYet] {
            assert!(!held(false, Some(not), 0), "{not:?}");
        }
        assert_eq!(
            table_held(false, Some(PeerTable::Held), 20_000).1,
            "20000 of the peer's entries are not in the data path yet"
        );
    }

    /// What the host loop tells the controller: nothing to a controller whose firmware
    /// predates `TableHeld` (it would refuse the frame), else the state on every change, to
    /// a new controller boot, and again every `TABLE_HELD_EVERY`.
    #[test]
    fn the_daemon_tells_a_controller_that_takes_it_whether_it_holds_the_peers_table() {
        use ha_dataplane::sync::PeerTable;
        use ha_proto::msg::FirmwareVersion;
        let (_outbox, outbox_rx) = std::sync::mpsc::channel();
        let shared = Arc::new(Mutex::new(Shared::default()));
        let mut host = HostLoop {
            ifaces: Vec::new(),
            interfaces_period: Duration::from_secs(1),
            garp_period: None,
            bounce: None,
            forwarding: None,
            domain: 0,
            shared_domains: Vec::new(),
            shared: shared.clone(),
            outbox: outbox_rx,
            stop: Arc::new(AtomicBool::new(false)),
        };
        let mut st = LoopState::default();
        let t0 = Instant::now();
        let mut told = |st: &mut LoopState, at: Duration, new_boot: bool| {
            host.tell_table_held(st, t0 + at, new_boot);
            let mut out = Vec::new();
            while let Some(m) = st.uplink.pop(t0 + at) {
                out.push(m);
            }
            out
        };
        let set = |fw: FirmwareVersion, peer: Option<PeerTable>| {
            let mut sh = shared.lock().unwrap();
            sh.status = Some((status_of_firmware(fw), 0));
            sh.peer_table = peer;
        };
        let ms = Duration::from_millis;
        // No status yet: the controller's firmware is unknown.
        assert!(told(&mut st, ms(0), false).is_empty());
        let first = FirmwareVersion {
            major: 0,
            minor: 1,
            patch: 0,
        };
        set(first, Some(PeerTable::Receiving));
        assert!(told(&mut st, ms(10), false).is_empty(), "the first release");
        set(TABLE_HELD_SINCE, Some(PeerTable::Receiving));
        assert_eq!(told(&mut st, ms(20), false), [HostMsg::TableHeld(false)]);
        assert_eq!(
            shared.lock().unwrap().table_held,
            Some((false, "receiving the peer's table".to_string()))
        );
        assert!(told(&mut st, ms(30), false).is_empty(), "unchanged");
        set(TABLE_HELD_SINCE, Some(PeerTable::Held));
        assert_eq!(told(&mut st, ms(40), false), [HostMsg::TableHeld(true)]);
        assert_eq!(
            told(&mut st, ms(50), true),
            [HostMsg::TableHeld(true)],
            "a new boot"
        );
        assert!(told(&mut st, ms(60), false).is_empty());
        assert_eq!(
            told(&mut st, ms(50) + TABLE_HELD_EVERY, false),
            [HostMsg::TableHeld(true)],
            "repeated"
        );
    }
}
