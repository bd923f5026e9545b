//! The dataplane crate's connection table, stateful filter and sync engine
//! (`ha_dataplane::Dataplane`) behind the daemon's traits.

use std::time::Instant;

use ha_dataplane::{Dataplane, Packet};

use crate::app::{SyncEvent, SyncPlane};
use crate::fastpath::{Filter, PacketInfo, Side};
use crate::runtime::Activate;

/// The dataplane of this member.
#[derive(Debug)]
pub struct Dp(pub Dataplane);

impl Filter for Dp {
    fn check(&mut self, p: &PacketInfo, from: Side, allow_new: bool, now: Instant) -> bool {
        let packet = Packet {
            zone: 0,
            ingress: match from {
                Side::Inside => 0,
                Side::Outside => 1,
            },
            proto: p.proto,
            src: p.src.into(),
            dst: p.dst.into(),
            sport: p.sport,
            dport: p.dport,
            flags: p.tcp_flags,
            len: u32::try_from(p.len).unwrap_or(u32::MAX),
            // The fast path only asks about packets it forwards between its two sides.
            local: false,
        };
        self.0.check(&packet, allow_new, now).forwards()
    }
}

impl Activate for Dp {
    fn set_role(&mut self, active: bool, now: Instant) {
        self.0.set_role(active, now);
    }
}

impl SyncPlane for Dp {
    fn on_datagram(&mut self, bytes: &[u8], now: Instant) {
        self.0.on_datagram(bytes, now);
    }

    fn poll_transmit(&mut self, now: Instant) -> Vec<Vec<u8>> {
        self.0.poll_transmit(now)
    }

    fn poll_events(&mut self) -> Vec<SyncEvent> {
        self.0
            .poll_events()
            .into_iter()
            .filter_map(|e| match e {
                ha_dataplane::SyncEvent::BulkSent { records, .. } => Some(SyncEvent::BulkSent {
                    records: usize::try_from(records).unwrap_or(usize::MAX),
                }),
                ha_dataplane::SyncEvent::BulkReceived { records, .. } => {
                    Some(SyncEvent::BulkReceived {
                        records: usize::try_from(records).unwrap_or(usize::MAX),
                    })
                }
                _ => None,
            })
            .collect()
    }
}
