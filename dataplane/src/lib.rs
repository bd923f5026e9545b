//! Main-CPU dataplane: connection table, sans-IO state-sync engine, activation on swap.
//!
//! - [`tables`]: connections (TCP with state, UDP, ICMP, GRE/ESP, SCTP; 5-tuple + zone),
//!   hosts, users, helper expectations, gateways, certificate serials, IKEv2 SAs;
//!   larval entries and constant-time activation.
//! - [`sync`]: the sans-IO sync engine (sealed frames, acknowledgements, retransmission,
//!   bulk synchronization, resync before a planned swap).
//! - [`filter`]: the stateful filter decision.
//! - [`Dataplane`]: the three together, the way a daemon drives them.
//!
//! # For the daemon (`ha-daemon`)
//! The daemon's traits map one to one onto [`Dataplane`]; its adapter is a newtype:
//!
//! ```text
//! struct Dp(ha_dataplane::Dataplane);
//! impl Filter for Dp {            // fastpath::Filter
//!     fn check(&mut self, p: &PacketInfo, from: Side, allow_new: bool, now: Instant) -> bool {
//!         self.0.check(&Packet { zone: 0, ingress: from as u16, proto: p.proto,
//!             src: p.src.into(), dst: p.dst.into(), sport: p.sport, dport: p.dport,
//!             flags: p.tcp_flags, len: p.len as u32, local: false }, allow_new, now).forwards()
//!     }
//! }
//! impl Activate for Dp { fn set_role(&mut self, a: bool, now: Instant) { self.0.set_role(a, now) } }
//! impl SyncPlane for Dp {
//!     fn on_datagram(&mut self, b: &[u8], now: Instant) { self.0.on_datagram(b, now) }
//!     fn poll_transmit(&mut self, now: Instant) -> Vec<Vec<u8>> { self.0.poll_transmit(now) }
//!     fn poll_events(&mut self) -> Vec<SyncEvent> { /* map BulkSent / BulkReceived */ }
//! }
//! // main.rs: app::run(cfg, |block| Dp(Dataplane::from_block(block, epoch, Instant::now())), stop)
//! ```
//! A planned swap: on the member about to become active, [`Dataplane::request_resync`], then
//! wait (bounded, e.g. 2 s) until [`Dataplane::resync_status`] is `Done` before accepting the
//! role.
#![warn(missing_docs)]

pub mod filter;
pub mod sync;
pub mod tables;

use std::time::Instant;

use ha_proto::config_block::ConfigBlock;
use ha_proto::keys::KeySet;

pub use filter::{Packet, Policy, Verdict};
pub use sync::{ResyncStatus, SyncConfig, SyncEngine, SyncEvent};
pub use tables::{Millis, Tables};

use sync::ItemKey;

/// How often idle connections and expectations are swept.
pub const EXPIRE_EVERY_MS: Millis = 1_000;

/// See [`Dataplane::swap_readiness`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwapReadiness {
    /// The resync is complete: swap.
    Ready,
    /// Still receiving.
    Waiting,
    /// Not complete within the bound.
    TimedOut,
    /// No peer is heard (nothing to wait for).
    NoPeer,
}

/// Connection table, filter and sync engine of one member.
#[derive(Debug)]
pub struct Dataplane {
    tables: Tables,
    engine: SyncEngine,
    policy: Policy,
    active: bool,
    base: Instant,
    last_expire: Millis,
    changed: Vec<ItemKey>,
}

impl Dataplane {
    /// A dataplane with `policy`, syncing per `cfg`. `now` is the origin of its clock.
    pub fn new(cfg: SyncConfig, policy: Policy, now: Instant) -> Self {
        Self {
            tables: Tables::new(),
            engine: SyncEngine::new(cfg),
            policy,
            active: false,
            base: now,
            last_expire: 0,
            changed: Vec::new(),
        }
    }

    /// A dataplane for a member provisioned with `block` (state-sync key from its PSK, its
    /// serial and cluster id), boot epoch `epoch`, admitting every new connection (the
    /// caller's `allow_new` still applies).
    pub fn from_block(block: &ConfigBlock, epoch: u32, now: Instant) -> Self {
        let keys = KeySet::derive(&block.psk, block.cluster_id, block.key_id);
        let cfg = SyncConfig::new(block.cluster_id, block.serial, epoch, keys);
        Self::new(cfg, Policy::allow_all(), now)
    }

    fn ms(&self, now: Instant) -> Millis {
        now.saturating_duration_since(self.base).as_millis() as Millis
    }

    /// The filter decision for a packet to forward (see [`filter::decide`]).
    pub fn check(&mut self, p: &Packet, allow_new: bool, now: Instant) -> Verdict {
        let now = self.ms(now);
        self.check_at(p, allow_new, now)
    }

    /// [`Dataplane::check`] with the time in milliseconds of this dataplane's clock.
    pub fn check_at(&mut self, p: &Packet, allow_new: bool, now: Millis) -> Verdict {
        let v = filter::decide(
            &mut self.tables,
            &self.policy,
            p,
            self.active,
            allow_new,
            now,
            &mut self.changed,
        );
        for k in self.changed.drain(..) {
            match k {
                // The entry was just touched: its record is made while it is in cache.
                ItemKey::Conn(ck) => match self.tables.conn_peek(&ck) {
                    Some(e) => self.engine.conn_changed(ck, e, now),
                    None => self.engine.changed(ItemKey::Conn(ck)),
                },
                other => self.engine.changed(other),
            }
        }
        v
    }

    /// Becomes active (larval entries become live in constant time) or passive.
    pub fn set_role(&mut self, active: bool, now: Instant) {
        let now = self.ms(now);
        self.set_role_at(active, now);
    }

    /// [`Dataplane::set_role`] with the time in milliseconds.
    pub fn set_role_at(&mut self, active: bool, now: Millis) {
        if active && !self.active {
            self.tables.activate(now);
        } else if !active && self.active {
            self.tables.deactivate();
        }
        self.active = active;
    }

    /// Whether this member forwards.
    pub fn is_active(&self) -> bool {
        self.active
    }

    /// A state-sync datagram from the peer.
    pub fn on_datagram(&mut self, bytes: &[u8], now: Instant) {
        let now = self.ms(now);
        self.engine.on_datagram(&mut self.tables, bytes, now);
    }

    /// Datagrams to send to the peer now; also sweeps idle entries.
    pub fn poll_transmit(&mut self, now: Instant) -> Vec<Vec<u8>> {
        let now = self.ms(now);
        self.poll_transmit_at(now)
    }

    /// [`Dataplane::poll_transmit`] with the time in milliseconds.
    pub fn poll_transmit_at(&mut self, now: Millis) -> Vec<Vec<u8>> {
        // Only the active expires: a passive's entries (larval, or local ones kept from an
        // earlier active spell) see no packets, and its deletes would remove connections the
        // active still forwards.
        if self.active && now.saturating_sub(self.last_expire) >= EXPIRE_EVERY_MS {
            self.last_expire = now;
            self.expire(now);
        }
        self.engine.poll_transmit(&self.tables, now)
    }

    fn expire(&mut self, now: Millis) {
        for (k, e) in self.tables.expire_conns(now) {
            if e.syncable() {
                self.engine.changed(ItemKey::Conn(k));
            }
        }
        let gone: Vec<_> = self
            .tables
            .expects
            .iter()
            .filter(|(_, x)| x.gen == tables::LOCAL_GEN && x.expires < now)
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            self.tables.expects.remove(&k);
            self.engine.changed(ItemKey::Expect(k));
        }
        let gone: Vec<_> = self
            .tables
            .users
            .iter()
            .filter(|(_, x)| x.gen == tables::LOCAL_GEN && x.expires < now)
            .map(|(k, _)| *k)
            .collect();
        for k in gone {
            self.tables.users.remove(&k);
            self.engine.changed(ItemKey::User(k));
        }
    }

    /// Sync events since the last call.
    pub fn poll_events(&mut self) -> Vec<SyncEvent> {
        self.engine.poll_events()
    }

    /// Asks the peer for a full resync (before a planned swap); see [`SyncEngine::request_resync`].
    pub fn request_resync(&mut self, now: Instant) -> Option<u32> {
        let now = self.ms(now);
        self.engine.request_resync(now)
    }

    /// State of a resync request.
    pub fn resync_status(&self, id: u32) -> ResyncStatus {
        self.engine.resync_status(id)
    }

    /// Whether a planned swap may proceed, given resync request `id` made at `asked_at`:
    /// [`SwapReadiness::Waiting`] until the bulk is complete, [`SwapReadiness::TimedOut`]
    /// once `bound` has passed (the caller then swaps anyway or aborts, and reports it; the
    /// engine keeps retrying and reports [`SyncEvent::BulkStalled`]).
    pub fn swap_readiness(
        &self,
        id: u32,
        asked_at: Instant,
        now: Instant,
        bound: std::time::Duration,
    ) -> SwapReadiness {
        match self.engine.resync_status(id) {
            ResyncStatus::Done => SwapReadiness::Ready,
            ResyncStatus::NoPeer => SwapReadiness::NoPeer,
            ResyncStatus::Pending if now.saturating_duration_since(asked_at) >= bound => {
                SwapReadiness::TimedOut
            }
            ResyncStatus::Pending => SwapReadiness::Waiting,
        }
    }

    /// The tables.
    pub fn tables(&self) -> &Tables {
        &self.tables
    }

    /// The tables, for the control plane (users, expectations, gateways, certificates, IKE
    /// SAs); report each change with [`Dataplane::changed`].
    pub fn tables_mut(&mut self) -> &mut Tables {
        &mut self.tables
    }

    /// An item was changed through [`Dataplane::tables_mut`]: sync it.
    pub fn changed(&mut self, key: ItemKey) {
        self.engine.changed(key);
    }

    /// The sync engine (counters, backlog).
    pub fn engine(&self) -> &SyncEngine {
        &self.engine
    }
}
