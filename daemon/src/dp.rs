//! The dataplane crate's connection table, stateful filter and sync engine
//! (`ha_dataplane::Dataplane`) behind the daemon's traits, in two halves locked apart: the
//! packet path ([`DpPath`]: tables, policy, role) in the fast path's core, the sync engine
//! ([`DpSync`]: the endpoint, the only crypto) with the sync thread.

use std::time::Instant;

use ha_dataplane::sync::{Opened, Outgoing};
use ha_dataplane::tables::{Refused, TableKind};
use ha_dataplane::{Dataplane, Millis, Packet, PacketPath, SyncEngine};

use crate::fastpath::{Filter, Side};
use crate::runtime::Activate;
use crate::synckeys::KeyStep;
use crate::syncplane::{ResyncState, SyncEvent, SyncPlane};

/// Milliseconds of the dataplane's clock at `now`, counted from `base` (the dataplane reads
/// no clock: the daemon hands it `Millis`).
fn ms(base: Instant, now: Instant) -> Millis {
    Millis::try_from(now.saturating_duration_since(base).as_millis()).unwrap_or(Millis::MAX)
}

/// Splits `dp` into its packet path and its sync engine, both counting time from `base`.
pub fn split(dp: Dataplane, base: Instant) -> (DpPath, DpSync) {
    let (path, engine) = dp.into_parts();
    (DpPath { path, base }, DpSync { engine, base })
}

/// The packet path of this member's dataplane (the fast path's filter).
#[derive(Debug)]
pub struct DpPath {
    path: PacketPath,
    base: Instant,
}

impl DpPath {
    /// The packet path (tables, role).
    pub fn path(&self) -> &PacketPath {
        &self.path
    }

    /// The packet path, to change its tables (report each change with
    /// [`PacketPath::changed`]).
    pub fn path_mut(&mut self) -> &mut PacketPath {
        &mut self.path
    }

    /// The dataplane's clock at `now`.
    pub fn millis(&self, now: Instant) -> Millis {
        ms(self.base, now)
    }
}

/// A packet path that holds this member's [`DpPath`]: the fast path's filter itself, or the
/// kernel path's core, which also acts on the records the peer sent
/// ([`DpHolder::records_applied`]).
pub trait DpHolder: Send + 'static {
    /// The dataplane's packet path.
    fn dp(&self) -> &DpPath;
    /// The dataplane's packet path, to change.
    fn dp_mut(&mut self) -> &mut DpPath;
    /// The peer's records of one datagram were applied to the tables at `now`.
    fn records_applied(&mut self, _now: Instant) {}
    /// Counters of the holder, beside the state sync's (`info --verbose`).
    fn extra_counters(&self) -> Vec<(String, u64)> {
        Vec::new()
    }
}

impl DpHolder for DpPath {
    fn dp(&self) -> &DpPath {
        self
    }
    fn dp_mut(&mut self) -> &mut DpPath {
        self
    }
}

/// The sync engine of this member's dataplane.
#[derive(Debug)]
pub struct DpSync {
    engine: SyncEngine,
    base: Instant,
}

impl DpSync {
    /// The engine (counters, keys, peer).
    pub fn engine(&self) -> &SyncEngine {
        &self.engine
    }
}

impl Filter for DpPath {
    fn check(&mut self, p: &Packet, from: Side, allow_new: bool, now: Instant) -> bool {
        let packet = Packet {
            ingress: match from {
                Side::Inside => 0,
                Side::Outside => 1,
            },
            ..*p
        };
        self.path
            .check(&packet, allow_new, ms(self.base, now))
            .forwards()
    }
}

impl Activate for DpPath {
    fn set_role(&mut self, active: bool, now: Instant) {
        self.path.set_role(active, ms(self.base, now));
    }
}

impl<P: DpHolder> SyncPlane<P> for DpSync {
    type Opened = Opened;
    type Outgoing = Outgoing;

    fn open(&mut self, bytes: &[u8]) -> Option<Opened> {
        self.engine.open(bytes)
    }

    fn handle(&mut self, path: &mut P, opened: Opened, now: Instant) {
        path.dp_mut()
            .path
            .handle(&mut self.engine, opened, ms(self.base, now));
        path.records_applied(now);
    }

    fn poll_messages(&mut self, path: &mut P, now: Instant) -> Vec<Outgoing> {
        path.dp_mut()
            .path
            .poll_messages(&mut self.engine, ms(self.base, now))
    }

    fn seal_all(&mut self, msgs: Vec<Outgoing>) -> Vec<Vec<u8>> {
        self.engine.seal_all(msgs)
    }

    fn request_resync(&mut self, now: Instant) -> Option<u32> {
        self.engine.request_resync(ms(self.base, now))
    }

    fn resync_state(&self, id: u32) -> ResyncState {
        match self.engine.resync_status(id) {
            ha_dataplane::ResyncStatus::Pending => ResyncState::Pending,
            ha_dataplane::ResyncStatus::Done => ResyncState::Done,
            ha_dataplane::ResyncStatus::NoPeer => ResyncState::NoPeer,
        }
    }

    fn drain_state(&self, path: &P) -> Option<ResyncState> {
        let e = &self.engine;
        Some(if !e.peer_up() {
            ResyncState::NoPeer
        } else if e.backlog() == (0, 0) && !path.dp().path.has_changes() {
            ResyncState::Done
        } else {
            ResyncState::Pending
        })
    }

    fn poll_events(&mut self) -> Vec<SyncEvent> {
        // A bulk goes to or comes from the session's peer.
        let peer = self.engine.peer().map(|(s, _)| s.as_str().to_string());
        self.engine
            .poll_events()
            .into_iter()
            .filter_map(|e| match e {
                ha_dataplane::SyncEvent::BulkSent { records, .. } => Some(SyncEvent::BulkSent {
                    records: usize::try_from(records).unwrap_or(usize::MAX),
                    peer: peer.clone(),
                }),
                ha_dataplane::SyncEvent::BulkReceived { records, .. } => {
                    Some(SyncEvent::BulkReceived {
                        records: usize::try_from(records).unwrap_or(usize::MAX),
                        peer: peer.clone(),
                    })
                }
                ha_dataplane::SyncEvent::RecordsRefused { reason, count } => {
                    Some(SyncEvent::RecordsRefused {
                        table: reason.table().name(),
                        cap: match reason {
                            Refused::Full { cap, .. } => Some(cap),
                            Refused::Invalid(_) => None,
                        },
                        count,
                    })
                }
                _ => None,
            })
            .collect()
    }

    fn key_step(&mut self, step: &KeyStep) -> Result<(), String> {
        match step {
            KeyStep::Accept { key_id, psk } => self.engine.accept_key(
                ha_proto::keys::KeySet::derive(psk, self.engine.cluster_id(), *key_id),
            ),
            KeyStep::SealWith(id) => self.engine.seal_with_key(*id),
            KeyStep::Retire => {
                self.engine.retire_previous_key();
                Ok(())
            }
        }
        .map_err(|e| e.to_string())
    }

    fn set_peers(&mut self, peers: Vec<ha_proto::msg::Serial>) {
        self.engine.set_peers(peers);
    }

    fn set_about(&mut self, model: &str) {
        self.engine.set_about(model);
    }

    fn peer_about(&self) -> Option<(ha_proto::msg::Serial, String)> {
        self.engine.peer_about().map(|(s, m)| (s, m.to_string()))
    }

    fn peer_table(&self) -> Option<ha_dataplane::sync::PeerTable> {
        Some(self.engine.peer_table())
    }

    fn counters(&self, path: &P) -> Vec<(String, u64)> {
        let st = self.engine.stats();
        let rejects = st
            .rejects
            .nonzero()
            .map(|(r, n)| (format!("rejected_{}", r.name()), u64::from(n)));
        let refused = TableKind::ALL
            .iter()
            .map(|k| (format!("refused_{}", k.name()), st.refused_by(*k)))
            .filter(|(_, n)| *n > 0);
        let mut c: Vec<(String, u64)> = rejects.chain(refused).collect();
        // Table sizes: what a member holds (the e2e reads them to check that a replacement
        // received the survivor's table).
        let tables = path.dp().path.tables();
        c.extend(
            TableKind::ALL
                .iter()
                .map(|k| (format!("table_{}", k.name()), tables.len_of(*k) as u64)),
        );
        c.push(("records_applied".into(), st.records_applied));
        c.push(("malformed_records".into(), st.malformed));
        c.extend(path.extra_counters());
        c
    }
}

/// Both halves of a member's dataplane driven from one thread, as the sync thread and the
/// receive threads drive them (the tests of this module and of the state-sync keys).
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct Member {
    pub path: DpPath,
    pub sync: DpSync,
}

#[cfg(test)]
impl Member {
    pub fn new(dp: Dataplane, base: Instant) -> Self {
        let (path, sync) = split(dp, base);
        Self { path, sync }
    }
    pub fn check(&mut self, p: &Packet, from: Side, allow_new: bool, now: Instant) -> bool {
        self.path.check(p, from, allow_new, now)
    }
    pub fn set_role(&mut self, active: bool, now: Instant) {
        self.path.set_role(active, now);
    }
    pub fn poll_transmit(&mut self, now: Instant) -> Vec<Vec<u8>> {
        self.sync.poll_transmit(&mut self.path, now)
    }
    pub fn on_datagram(&mut self, bytes: &[u8], now: Instant) {
        self.sync.on_datagram(&mut self.path, bytes, now);
    }
    pub fn engine(&self) -> &SyncEngine {
        self.sync.engine()
    }
    pub fn tables(&self) -> &ha_dataplane::Tables {
        self.path.path().tables()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastpath::tcp_flags;

    fn pkt(src: &str, sp: u16, dst: &str, dp: u16, proto: u8, flags: u8) -> Packet {
        Packet {
            zone: 0,
            ingress: 0,
            local: false,
            proto,
            src: src.parse().expect("ip"),
            dst: dst.parse().expect("ip"),
            sport: sp,
            dport: dp,
            flags,
            len: 60,
        }
    }

    /// Members SN-A (active) and SN-B of the sample configuration, each with its dataplane.
    fn pair(t0: Instant) -> (Member, Member) {
        let block = ha_hostlink::test_support::sample_cfg();
        let mut b_block = block.clone();
        b_block.serial = ha_proto::msg::Serial::new("SN-B").expect("serial");
        let mut a = Member::new(Dataplane::from_block(&block, 10), t0);
        let b = Member::new(Dataplane::from_block(&b_block, 20), t0);
        a.set_role(true, t0);
        (a, b)
    }

    /// Exchanges the two members' datagrams for `rounds` rounds of 10 ms from round `from`.
    fn pump(t0: Instant, a: &mut Member, b: &mut Member, from: u64, rounds: u64) {
        for round in from..from + rounds {
            let now = t0 + std::time::Duration::from_millis(10 * round);
            for d in a.poll_transmit(now) {
                b.on_datagram(&d, now);
            }
            for d in b.poll_transmit(now) {
                a.on_datagram(&d, now);
            }
        }
    }

    #[test]
    fn the_dataplane_decides_and_syncs_to_a_peer_that_takes_over() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let syn = pkt("10.1.0.1", 4000, "10.2.0.1", 80, 6, tcp_flags::SYN);
        let mid = pkt("10.1.0.1", 4000, "10.2.0.1", 80, 6, tcp_flags::ACK);
        let back = pkt("10.2.0.1", 80, "10.1.0.1", 4000, 6, tcp_flags::ACK);
        assert!(!a.check(&syn, Side::Outside, false, t0), "new not allowed");
        assert!(!a.check(&mid, Side::Inside, true, t0), "unknown mid-stream");
        assert!(a.check(&syn, Side::Inside, true, t0));
        let synack = pkt(
            "10.2.0.1",
            80,
            "10.1.0.1",
            4000,
            6,
            tcp_flags::SYN | tcp_flags::ACK,
        );
        assert!(a.check(&synack, Side::Outside, false, t0));
        assert!(a.check(&mid, Side::Inside, false, t0));
        let ping = pkt("10.1.0.1", 7, "10.2.0.1", 7, 1, 8);
        let pong = pkt("10.2.0.1", 7, "10.1.0.1", 7, 1, 0);
        assert!(a.check(&ping, Side::Inside, true, t0));
        assert!(a.check(&pong, Side::Outside, false, t0));
        // Sync until quiet, then B takes over and knows the connection.
        for round in 0..50u64 {
            let now = t0 + std::time::Duration::from_millis(10 * round);
            for d in a.poll_transmit(now) {
                b.on_datagram(&d, now);
            }
            for d in b.poll_transmit(now) {
                a.on_datagram(&d, now);
            }
        }
        let later = t0 + std::time::Duration::from_secs(1);
        b.set_role(true, later);
        assert!(
            b.check(&back, Side::Outside, false, later),
            "synced connection"
        );
        assert!(!b.check(
            &pkt("10.2.0.1", 80, "10.1.0.1", 4001, 6, tcp_flags::ACK),
            Side::Outside,
            false,
            later
        ));
    }

    #[test]
    fn a_resync_through_the_sync_plane_completes_once_the_table_arrived() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        let syn = pkt("10.1.0.1", 4000, "10.2.0.1", 80, 6, tcp_flags::SYN);
        assert!(a.check(&syn, Side::Inside, true, t0));
        // The members meet first (a resync needs a peer).
        pump(t0, &mut a, &mut b, 0, 20);
        let asked = t0 + std::time::Duration::from_millis(200);
        let id = SyncPlane::<DpPath>::request_resync(&mut b.sync, asked)
            .expect("the dataplane resyncs on demand");
        assert_eq!(
            SyncPlane::<DpPath>::resync_state(&b.sync, id),
            ResyncState::Pending
        );
        pump(t0, &mut a, &mut b, 20, 50);
        assert_eq!(
            SyncPlane::<DpPath>::resync_state(&b.sync, id),
            ResyncState::Done
        );
    }

    #[test]
    fn drained_only_once_the_peer_acknowledged_every_change() {
        let t0 = Instant::now();
        let (mut a, mut b) = pair(t0);
        assert_eq!(
            a.sync.drain_state(&a.path),
            Some(ResyncState::NoPeer),
            "no peer yet"
        );
        let at = |round: u64| t0 + std::time::Duration::from_millis(10 * round);
        pump(t0, &mut a, &mut b, 0, 20);
        assert_eq!(
            a.sync.drain_state(&a.path),
            Some(ResyncState::Done),
            "met, nothing to send"
        );
        // A new connection on the active: queued until the peer acknowledges it.
        let syn = pkt("10.1.0.1", 4000, "10.2.0.1", 80, 6, tcp_flags::SYN);
        assert!(a.check(&syn, Side::Inside, true, at(20)));
        assert_eq!(a.sync.drain_state(&a.path), Some(ResyncState::Pending));
        // Sent but every datagram to the peer lost: still pending.
        let _ = a.poll_transmit(at(21));
        assert_eq!(
            a.sync.drain_state(&a.path),
            Some(ResyncState::Pending),
            "in flight"
        );
        // Retransmitted and acknowledged.
        pump(t0, &mut a, &mut b, 22, 100);
        assert_eq!(a.sync.drain_state(&a.path), Some(ResyncState::Done));
    }

    #[test]
    fn records_refused_at_a_cap_reach_the_event_log_and_the_counters() {
        let t0 = Instant::now();
        let block = ha_hostlink::test_support::sample_cfg();
        let mut b_block = block.clone();
        b_block.serial = ha_proto::msg::Serial::new("SN-B").expect("serial");
        let mut a = Member::new(Dataplane::from_block(&block, 10), t0);
        let mut cfg = ha_dataplane::SyncConfig::from_block(&b_block, 20);
        cfg.limits = ha_dataplane::tables::Limits::all(1);
        let mut b = Member::new(Dataplane::new(cfg, ha_dataplane::Policy::allow_all()), t0);
        a.set_role(true, t0);
        pump(t0, &mut a, &mut b, 0, 20);
        for port in [4000, 4001, 4002] {
            let syn = pkt("10.1.0.1", port, "10.2.0.1", 80, 6, tcp_flags::SYN);
            assert!(a.check(&syn, Side::Inside, true, t0));
        }
        pump(t0, &mut a, &mut b, 20, 20);
        let events: Vec<SyncEvent> = SyncPlane::<DpPath>::poll_events(&mut b.sync);
        let refused = SyncEvent::RecordsRefused {
            table: "connections",
            cap: Some(1),
            count: 1,
        };
        assert!(events.contains(&refused), "{events:?}");
        let logged = refused.to_event();
        assert_eq!(logged.kind, ha_mgmt_api::EventKind::StateSyncRefused);
        assert!(logged.detail.contains("cap of 1"), "{}", logged.detail);
        let counters = b.sync.counters(&b.path);
        assert!(
            counters.contains(&("refused_connections".to_string(), 2)),
            "{counters:?}"
        );
    }
}
