//! The forwarding plane as the host loop drives it ([`Plane`]), and the userspace fast path's
//! plane ([`Forwarding`]); the kernel's is [`crate::kernelpath::KernelPlane`].

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::fastpath::{Filter, Stats};
use crate::packetio::{Core, Senders};

/// What a role change does to the forwarding plane: the connection table's activation
/// (a generation flip) and the fast path's role, under one lock.
pub trait Activate {
    /// Becomes active (`true`) or passive.
    fn set_role(&mut self, active: bool, now: Instant);
}

/// The forwarding plane as the host loop drives it, whichever data path carries the traffic:
/// the userspace fast path ([`Forwarding`]) or the kernel's
/// ([`crate::kernelpath::KernelPlane`]).
pub trait Plane: Send {
    /// Takes (`true`) or gives up the active role at `now`, announcing the cluster addresses
    /// on a takeover; true when the role changed.
    fn set_active(&mut self, active: bool, now: Instant) -> bool;
    /// Load sharing: takes (`true`) or gives up the active role for `domain`, one of the
    /// other domains this member forwards for besides the main one (`[[forward.shared]]`);
    /// true when the role changed. A plane that forwards for one domain (the userspace fast
    /// path) has no other domain: nothing changes.
    fn set_domain_active(&mut self, domain: u8, active: bool, now: Instant) -> bool {
        let _ = (domain, active, now);
        false
    }
    /// True while this member forwards.
    fn is_active(&self) -> bool;
    /// Announces the cluster addresses again (gratuitous ARP); nothing while passive.
    fn announce(&mut self);
    /// The controller is heard (`true`) or silent: only a member with a live controller
    /// answers its peer's liveness probes.
    fn set_ha_alive(&mut self, alive: bool);
    /// Sends an echo request to `peer` (a member address on a forwarding interface's subnet);
    /// its sequence number, `None` when no forwarding interface reaches the address.
    fn probe(&mut self, peer: Ipv4Addr, now: Instant) -> Option<u16>;
    /// True (once) when the echo reply `seq` from `peer` arrived.
    fn probe_answered(&mut self, peer: Ipv4Addr, seq: u16) -> bool;
    /// The userspace fast path's counters (`None` on the kernel path, whose counters are
    /// among the state-sync counters).
    fn fast_path_stats(&self) -> Option<Stats>;
    /// How much of the peer's state was received but is not in the data path yet: on the
    /// kernel path, the entries its write-behind holds plus the batches queued for its
    /// kernel (as received); 0 elsewhere. Above `TABLE_PENDING_MAX` this member does not
    /// count as holding its peer's table.
    fn installs_pending(&self) -> u64 {
        0
    }
}

/// The userspace fast path as the host loop drives it.
pub struct Forwarding<F> {
    /// Fast path and filter.
    pub core: Arc<Mutex<Core<F>>>,
    /// Where their frames go.
    pub senders: Senders,
}

impl<F> Forwarding<F> {
    fn lock(&self) -> std::sync::MutexGuard<'_, Core<F>> {
        self.core.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl<F: Filter + Activate + Send + 'static> Plane for Forwarding<F> {
    fn set_active(&mut self, active: bool, now: Instant) -> bool {
        let (changed, outs) = {
            let mut c = self.lock();
            let was = c.fp.is_active();
            c.filter.set_role(active, now);
            (active != was, c.fp.set_active(active))
        };
        self.senders.send_all(&outs);
        changed
    }

    fn is_active(&self) -> bool {
        self.lock().fp.is_active()
    }

    fn announce(&mut self) {
        let outs = self.lock().fp.garp();
        self.senders.send_all(&outs);
    }

    fn set_ha_alive(&mut self, alive: bool) {
        self.lock().fp.set_ha_alive(alive);
    }

    fn probe(&mut self, peer: Ipv4Addr, now: Instant) -> Option<u16> {
        let (outs, seq) = self.lock().fp.probe(peer, now)?;
        self.senders.send_all(&outs);
        Some(seq)
    }

    fn probe_answered(&mut self, peer: Ipv4Addr, seq: u16) -> bool {
        self.lock().fp.probe_answered(peer, seq)
    }

    fn fast_path_stats(&self) -> Option<Stats> {
        Some(self.lock().fp.stats().clone())
    }
}
