//! Helpers of the sync tests: two members (tables + engine) over an in-memory channel with
//! seeded loss, and the connections they open.
// Each test file uses its own subset of the helpers (and of the names re-exported for them).
#![allow(dead_code, unused_imports)]

pub use std::collections::VecDeque;
pub use std::net::{IpAddr, Ipv4Addr};

pub use ha_dataplane::filter::{tcp, Packet, Policy, Verdict};
pub use ha_dataplane::sync::{
    ItemKey, PeerTable, Records, ResyncStatus, SyncConfig, SyncEngine, SyncEvent, SyncMsg,
};
pub use ha_dataplane::tables::{
    proto, ConnKey, ConnState, IkeKey, IkeSa, Millis, Tables, TcpState,
};
pub use ha_proto::frame::MAX_FRAME_LEN;
pub use ha_proto::keys::{KeySet, Psk};
pub use ha_proto::msg::Serial;

pub const CLUSTER: u32 = 0x0042_0001;

pub fn cfg(me: u8, epoch: u32) -> SyncConfig {
    let keys = KeySet::derive(&Psk([9; 32]), CLUSTER, 1);
    SyncConfig::new(CLUSTER, Serial([me; 16]), epoch, keys)
}

pub struct Node {
    pub t: Tables,
    pub e: SyncEngine,
    pub events: Vec<SyncEvent>,
}

impl Node {
    pub fn new(me: u8, epoch: u32) -> Self {
        Self::with(cfg(me, epoch))
    }
    pub fn with(c: SyncConfig) -> Self {
        Self {
            t: Tables::new(),
            e: SyncEngine::new(c),
            events: Vec::new(),
        }
    }
}

/// Two nodes and a lossy, in-order-per-tick channel both ways.
pub struct Net {
    pub a: Node,
    pub b: Node,
    pub rng: fastrand::Rng,
    pub loss: f64,
    pub cut_ab: bool,
    pub cut_ba: bool,
    pub now: Millis,
    pub q_ab: VecDeque<Vec<u8>>,
    pub q_ba: VecDeque<Vec<u8>>,
    /// Every datagram A sent, when set (what an attacker on the path records).
    pub tap_ab: Option<Vec<Vec<u8>>>,
}

impl Net {
    pub fn new(a: Node, b: Node, loss: f64, seed: u64) -> Self {
        Self {
            a,
            b,
            rng: fastrand::Rng::with_seed(seed),
            loss,
            cut_ab: false,
            cut_ba: false,
            now: 0,
            q_ab: VecDeque::new(),
            q_ba: VecDeque::new(),
            tap_ab: None,
        }
    }

    /// One millisecond: deliver what was sent last tick (with loss), then poll both.
    pub fn tick(&mut self) {
        self.now += 1;
        let now = self.now;
        for d in std::mem::take(&mut self.q_ab) {
            assert!(d.len() <= MAX_FRAME_LEN);
            if !self.cut_ab && self.rng.f64() >= self.loss {
                self.b.e.on_datagram(&mut self.b.t, &d, now);
            }
        }
        for d in std::mem::take(&mut self.q_ba) {
            if !self.cut_ba && self.rng.f64() >= self.loss {
                self.a.e.on_datagram(&mut self.a.t, &d, now);
            }
        }
        let sent = self.a.e.poll_transmit(&self.a.t, now);
        if let Some(tap) = &mut self.tap_ab {
            tap.extend(sent.iter().cloned());
        }
        self.q_ab.extend(sent);
        self.q_ba.extend(self.b.e.poll_transmit(&self.b.t, now));
        self.a.events.extend(self.a.e.poll_events());
        self.b.events.extend(self.b.e.poll_events());
    }

    pub fn run(&mut self, ms: u64) {
        for _ in 0..ms {
            self.tick();
        }
    }

    /// Runs until A has nothing queued or in flight (bounded).
    pub fn settle(&mut self, max_ms: u64) {
        for _ in 0..max_ms {
            self.tick();
            if self.a.e.backlog() == (0, 0)
                && self.b.e.backlog() == (0, 0)
                && self.q_ab.is_empty()
                && self.q_ba.is_empty()
                && !self.a.e.awaiting_bulk()
                && !self.b.e.awaiting_bulk()
            {
                return;
            }
        }
        panic!("not settled in {max_ms} ms: {:?} {:?}", self.a.e, self.b.e);
    }
}

pub fn addr(i: u32) -> IpAddr {
    IpAddr::V4(Ipv4Addr::from(0x0a00_0000 | i))
}

pub fn server() -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1))
}

pub fn syn(i: u32) -> Packet {
    Packet {
        zone: 0,
        ingress: 0,
        proto: proto::TCP,
        src: addr(i),
        dst: server(),
        sport: 1024 + (i % 60_000) as u16,
        dport: 443,
        flags: tcp::SYN,
        len: 60,
        local: false,
    }
}

pub fn key(i: u32) -> ConnKey {
    let p = syn(i);
    ConnKey::of(p.zone, p.proto, p.src, p.sport, p.dst, p.dport).0
}

/// Opens connection `i` on `n` (active) through the filter and reports the changes.
pub fn open(n: &mut Node, i: u32, now: Millis) {
    let mut ch = Vec::new();
    let v = ha_dataplane::filter::decide(
        &mut n.t,
        &Policy::allow_all(),
        &syn(i),
        true,
        true,
        now,
        &mut ch,
    );
    assert!(matches!(v, Verdict::New { .. }));
    for k in ch {
        // Both ways of reporting a change: by key (value read when framed) and with the
        // value at hand (record made now).
        match (k, i % 2) {
            (ItemKey::Conn(ck), 0) => {
                let e = *n.t.conn_peek(&ck).expect("just created");
                n.e.conn_changed(ck, &e, now);
            }
            (k, _) => n.e.changed(k),
        }
    }
}

/// Passes a packet of connection `i` on `n` with `flags` from the client or the server.
pub fn packet(n: &mut Node, i: u32, from_client: bool, flags: u8, now: Millis) -> Verdict {
    let mut p = syn(i);
    p.flags = flags;
    if !from_client {
        std::mem::swap(&mut p.src, &mut p.dst);
        std::mem::swap(&mut p.sport, &mut p.dport);
    }
    let mut ch = Vec::new();
    let v =
        ha_dataplane::filter::decide(&mut n.t, &Policy::allow_all(), &p, true, true, now, &mut ch);
    for k in ch {
        n.e.changed(k);
    }
    v
}

pub fn assert_same_conns(a: &Tables, b: &Tables, n: u32) {
    let mut present = 0;
    for i in 0..n {
        let k = key(i);
        let (ea, eb) = (a.conn_peek(&k), b.conn_peek(&k));
        assert_eq!(ea.is_some(), eb.is_some(), "connection {i}");
        if let (Some(ea), Some(eb)) = (ea, eb) {
            assert_eq!(ea.state, eb.state, "state of connection {i}");
            present += 1;
        }
    }
    assert_eq!(a.conn_count(), present);
    assert_eq!(b.conn_count(), present);
}

pub fn pair(loss: f64, seed: u64) -> Net {
    let mut net = Net::new(Node::new(1, 100), Node::new(2, 200), loss, seed);
    net.a.t.activate(0);
    net
}
