//! The kernel's connection tracking entries as the daemon sees them, and their ctnetlink
//! encoding.
//!
//! - [`CtEntry`]: one entry (both tuples, status, timeout, mark, zone, TCP tracking state), the
//!   value a sync record will carry;
//! - [`codec`]: entry ⇄ ctnetlink message bytes (pure, tested with golden bytes);
//! - [`fast`]: the common entry event read without allocating (the events' hot path);
//! - [`socket`]: the ctnetlink socket of one network namespace (events, dump, create);
//! - [`mirror`]: what the peer has been told, and the catch-up after lost events (sans-IO);
//! - [`expect`]: helper expectations ([`CtExpect`]) ⇄ their ctnetlink messages;
//! - [`item`]: entry and expectation ⇄ the state sync's kernel items;
//! - [`events_setting`]: the namespace setting that lets every entry report events.
//!
//! Not carried: labels (`CTA_LABELS`), the master of a related entry (`CTA_TUPLE_MASTER`:
//! an established FTP data connection is synced as a connection of its own).

pub mod codec;
pub mod events_setting;
pub mod expect;
pub mod fast;
pub mod item;
pub mod mirror;
pub mod socket;

use std::net::IpAddr;

pub use expect::{CtExpect, ExpEvent};
pub use ha_dataplane::tables::{KHelper, KSeqAdj};

/// One direction of a connection as conntrack keys it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtTuple {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number (6 TCP, 17 UDP, ...).
    pub proto: u8,
    /// Source port (0 for protocols without ports).
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
}

impl CtTuple {
    /// The tuple of the other direction when no address is translated.
    pub fn inverse(&self) -> CtTuple {
        CtTuple {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            src_port: self.dst_port,
            dst_port: self.src_port,
        }
    }
}

/// TCP tracking state of an entry: what strict tracking (`nf_conntrack_tcp_loose = 0`) needs
/// to accept the connection's next segments on another member.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TcpInfo {
    /// Kernel TCP conntrack state (`TCP_CONNTRACK_*`: 3 is ESTABLISHED).
    pub state: u8,
    /// Window scale seen from the originator.
    pub wscale_orig: u8,
    /// Window scale seen from the responder.
    pub wscale_reply: u8,
    /// Tracking flags of the originator's direction (`IP_CT_TCP_FLAG_*`).
    pub flags_orig: u8,
    /// Tracking flags of the reply direction.
    pub flags_reply: u8,
}

/// `TCP_CONNTRACK_ESTABLISHED`.
pub const TCP_ESTABLISHED: u8 = 3;

/// Status bits (`IPS_*`) a member may set on an entry it installs; the rest (confirmed,
/// dying, template, NAT done, offload...) belong to the kernel.
pub const STATUS_SETTABLE: u32 = IPS_SEEN_REPLY | IPS_ASSURED;
/// `IPS_CONFIRMED`: the entry is in the table (set by the kernel on every entry created over
/// ctnetlink; a request must carry it).
pub const IPS_CONFIRMED: u32 = 1 << 3;
/// `IPS_SEEN_REPLY`: traffic was seen both ways.
pub const IPS_SEEN_REPLY: u32 = 1 << 1;
/// `IPS_ASSURED`: the entry is not dropped early when the table fills.
pub const IPS_ASSURED: u32 = 1 << 2;

/// One connection tracking entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtEntry {
    /// The originator's direction.
    pub orig: CtTuple,
    /// The reply direction (differs from `orig.inverse()` when addresses are translated).
    pub reply: CtTuple,
    /// Status bits (`IPS_*`).
    pub status: u32,
    /// Seconds until the entry expires.
    pub timeout_s: u32,
    /// Connection mark.
    pub mark: u32,
    /// Conntrack zone (0: the default zone).
    pub zone: u16,
    /// TCP tracking state (TCP entries only).
    pub tcp: Option<TcpInfo>,
    /// The conntrack helper attached to it (e.g. "ftp" on an FTP control connection).
    pub helper: Option<KHelper>,
    /// TCP sequence adjustment `[originator, responder]` (`CTA_SEQ_ADJ_ORIG`/`_REPLY`): set
    /// when a NAT helper changed the length of the payload it rewrote (FTP's `PORT` through
    /// SNAT). The kernel reports it only in the event of the change, so an update without it
    /// keeps what was known.
    pub seq_adj: Option<[KSeqAdj; 2]>,
}

impl CtEntry {
    /// This update event's entry completed with what `known` (the same entry as last told)
    /// has and the event left out: the kernel reports the TCP state, the helper and the
    /// sequence adjustment only in the events that change them.
    pub fn completed_by(&self, known: &CtEntry) -> CtEntry {
        CtEntry {
            tcp: self.tcp.or(known.tcp),
            helper: self.helper.or(known.helper),
            seq_adj: self.seq_adj.or(known.seq_adj),
            ..*self
        }
    }
}

/// What a conntrack event reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CtEventKind {
    /// A new entry (confirmed by the kernel, or created over ctnetlink).
    New,
    /// An entry changed (state, status, mark, timeout refresh...).
    Update,
    /// An entry was removed.
    Destroy,
}

/// One message about an entry: an event, or one entry of a dump (reported as [`CtEventKind::New`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtEvent {
    /// What happened.
    pub kind: CtEventKind,
    /// The entry as the kernel reported it.
    pub entry: CtEntry,
}

/// What one read of an event socket brought, in the kernel's order within each kind.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Events {
    /// Entry events.
    pub entries: Vec<CtEvent>,
    /// Expectation events.
    pub expects: Vec<ExpEvent>,
}

impl Events {
    /// No event of either kind.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty() && self.expects.is_empty()
    }

    /// Events of both kinds.
    pub fn len(&self) -> usize {
        self.entries.len() + self.expects.len()
    }

    /// Forgets every event (keeps the memory).
    pub fn clear(&mut self) {
        self.entries.clear();
        self.expects.clear();
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A UDP entry from 10.1.0.1:`port` to 10.2.0.1:53 with `mark` (unit tests' sample).
    pub(crate) fn udp_entry(port: u16, mark: u32) -> CtEntry {
        let orig = CtTuple {
            src: "10.1.0.1".parse().unwrap(),
            dst: "10.2.0.1".parse().unwrap(),
            proto: 17,
            src_port: port,
            dst_port: 53,
        };
        CtEntry {
            orig,
            reply: orig.inverse(),
            status: IPS_SEEN_REPLY | IPS_ASSURED,
            timeout_s: 30,
            mark,
            zone: 0,
            tcp: None,
            helper: None,
            seq_adj: None,
        }
    }
}
