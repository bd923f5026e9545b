//! Every table a peer feeds is capped (defect 8): records beyond a table's cap, or larger
//! than it stores, are refused, counted and reported; updates, removals and the other
//! tables go on.

mod common;

use common::*;
use ha_dataplane::sync::REFUSAL_EVENT_EVERY_MS;
use ha_dataplane::tables::{
    CertEntry, CertStatus, ConnEntry, ExpectKey, Expectation, GatewayStatus, Helper, HostEntry,
    KConn, KConnKey, KExp, KExpKey, KTcp, KTuple, Limits, Refused, TableKind, UserEntry, ZoneAddr,
    LOCAL_GEN, MAX_CERTS, MAX_CERT_SERIAL_LEN, MAX_USER_GROUPS,
};

/// A (active, default caps) and B (passive, every table capped at `cap`), met.
fn capped_pair(cap: usize) -> Net {
    let b = Node {
        t: Tables::with_limits(Limits::all(cap)),
        e: SyncEngine::new(cfg(2, 200)),
        events: Vec::new(),
    };
    let mut net = Net::new(Node::new(1, 100), b, 0.0, 31);
    net.a.t.activate(0);
    net.run(20);
    net
}

fn za(i: u32) -> ZoneAddr {
    ZoneAddr {
        zone: 0,
        addr: addr(i),
    }
}

/// Creates item `i` of `kind` on A (this member's own) and reports the change; `v` varies
/// its value.
fn make(a: &mut Node, kind: TableKind, i: u32, v: u8, now: Millis) {
    let t = &mut a.t;
    let k = match kind {
        TableKind::Conns => {
            let st = if v == 0 {
                ConnState::Udp { replied: false }
            } else {
                ConnState::Udp { replied: true }
            };
            t.insert_conn(key(i), ConnEntry::new(st, true, 1, 0, now));
            ItemKey::Conn(key(i))
        }
        TableKind::Hosts => {
            let e = HostEntry {
                mac: [2, 0, 0, 0, 0, v],
                last_seen: now,
                gen: LOCAL_GEN,
            };
            t.insert_host(za(i), e);
            ItemKey::Host(za(i))
        }
        TableKind::Users => {
            let e = UserEntry {
                name: format!("user{i}.{v}"),
                groups: vec!["staff".into()],
                expires: now + 3_600_000,
                gen: LOCAL_GEN,
            };
            t.insert_user(addr(i), e);
            ItemKey::User(addr(i))
        }
        TableKind::Expects => {
            let k = ExpectKey {
                zone: 0,
                proto: proto::TCP,
                src: server(),
                dst: addr(i),
                dport: 21_000,
            };
            let e = Expectation {
                helper: if v == 0 { Helper::Ftp } else { Helper::Sip },
                master: key(i),
                expires: now + 60_000,
                gen: LOCAL_GEN,
            };
            t.insert_expect(k, e);
            ItemKey::Expect(k)
        }
        TableKind::Gateways => {
            let e = GatewayStatus {
                up: v == 0,
                since: now,
                gen: LOCAL_GEN,
            };
            t.insert_gateway(za(i), e);
            ItemKey::Gateway(za(i))
        }
        TableKind::Certs => {
            let status = if v == 0 {
                CertStatus::Valid
            } else {
                CertStatus::Revoked
            };
            let e = CertEntry {
                status,
                gen: LOCAL_GEN,
            };
            t.insert_cert(i.to_be_bytes().to_vec(), e);
            ItemKey::Cert(i.to_be_bytes().to_vec())
        }
        TableKind::Ike => {
            let k = IkeKey {
                spi_i: u64::from(i),
                spi_r: 7,
            };
            let e = IkeSa {
                peer: server(),
                msg_id_out: u32::from(v),
                msg_id_in: 0,
                esp_seq_out: 1,
                esp_seq_in: 0,
                gen: LOCAL_GEN,
            };
            t.insert_ike(k, e);
            ItemKey::Ike(k)
        }
        TableKind::KernelConns => {
            let orig = KTuple {
                src: addr(i),
                dst: server(),
                proto: proto::TCP,
                src_port: 40_000,
                dst_port: 443,
            };
            let k = KConnKey { orig, zone: 0 };
            let e = KConn {
                reply: KTuple {
                    src: server(),
                    dst: addr(i),
                    proto: proto::TCP,
                    src_port: 443,
                    dst_port: 40_000,
                },
                status: 6,
                mark: u32::from(v),
                tcp: Some(KTcp {
                    state: 3,
                    wscale: [7, 7],
                    flags: [0x23, 0x23],
                }),
                helper: None,
                seq_adj: None,
                expires: now + 3_600_000,
                gen: LOCAL_GEN,
            };
            t.upsert_kernel_conn(k, e);
            ItemKey::KernelConn(k)
        }
        TableKind::KernelExpects => {
            let tuple = KTuple {
                src: server(),
                dst: addr(i),
                proto: proto::TCP,
                src_port: 0,
                dst_port: 50_000,
            };
            let k = KExpKey { tuple, zone: 0 };
            let e = KExp {
                master: KTuple {
                    src: addr(i),
                    dst: server(),
                    proto: proto::TCP,
                    src_port: 40_000,
                    dst_port: 21,
                },
                mask_src: server(),
                mask_port: 0,
                flags: u32::from(v),
                class: 0,
                nat: None,
                expires: now + 300_000,
                gen: LOCAL_GEN,
            };
            t.upsert_kernel_expect(k, e);
            ItemKey::KernelExpect(k)
        }
    };
    a.e.changed(k);
}

fn refusals(n: &Node) -> Vec<(Refused, u64)> {
    n.events
        .iter()
        .filter_map(|e| match e {
            SyncEvent::RecordsRefused { reason, count } => Some((*reason, *count)),
            _ => None,
        })
        .collect()
}

#[test]
fn every_table_refuses_new_items_beyond_its_cap() {
    for kind in TableKind::ALL {
        let mut net = capped_pair(10);
        for i in 0..15 {
            let now = net.now;
            make(&mut net.a, kind, i, 0, now);
        }
        net.settle(2_000);
        assert_eq!(net.a.t.len_of(kind), 15, "{kind}");
        assert_eq!(net.b.t.len_of(kind), 10, "{kind}: capped");
        assert_eq!(net.b.e.stats().refused_by(kind), 5, "{kind}");
        assert_eq!(
            refusals(&net.b),
            [(
                Refused::Full {
                    table: kind,
                    cap: 10
                },
                1
            )],
            "{kind}: one event for the burst"
        );
        for other in TableKind::ALL.into_iter().filter(|k| *k != kind) {
            assert_eq!(net.b.e.stats().refused_by(other), 0);
        }
        // An item held is still updated (not refused).
        let now = net.now;
        make(&mut net.a, kind, 3, 1, now);
        net.settle(2_000);
        assert_eq!(
            net.b.e.stats().refused_by(kind),
            5,
            "{kind}: update applied"
        );
    }
}

#[test]
fn removals_make_room_and_updates_of_held_items_apply() {
    let mut net = capped_pair(10);
    for i in 0..15 {
        let now = net.now;
        make(&mut net.a, TableKind::Certs, i, 0, now);
    }
    net.settle(2_000);
    assert_eq!(net.b.t.len_of(TableKind::Certs), 10);
    // Revoking a held serial reaches B.
    let now = net.now;
    make(&mut net.a, TableKind::Certs, 2, 1, now);
    net.settle(2_000);
    let held = net
        .b
        .t
        .certs()
        .get(&2u32.to_be_bytes().to_vec())
        .map(|e| e.status);
    assert_eq!(held, Some(CertStatus::Revoked));
    // A removes serial 0: B has room for serial 12 (refused before) when it is sent again.
    let k0 = ItemKey::Cert(0u32.to_be_bytes().to_vec());
    net.a.t.remove_item(&k0);
    net.a.e.changed(k0);
    let now = net.now;
    make(&mut net.a, TableKind::Certs, 12, 0, now);
    net.settle(2_000);
    assert_eq!(net.b.t.len_of(TableKind::Certs), 10);
    assert!(net.b.t.certs().contains_key(&12u32.to_be_bytes().to_vec()));
    // A bulk (resync) fills B up to its cap again and refuses the rest.
    let id = net.b.e.request_resync(net.now).expect("peer");
    net.settle(3_000);
    assert_eq!(net.b.e.resync_status(id), ResyncStatus::Done);
    assert_eq!(net.b.t.len_of(TableKind::Certs), 10);
}

#[test]
fn oversized_items_are_refused_whatever_the_room() {
    let mut net = capped_pair(1_000);
    let now = net.now;
    let long = vec![7u8; MAX_CERT_SERIAL_LEN + 1];
    let e = CertEntry {
        status: CertStatus::Revoked,
        gen: LOCAL_GEN,
    };
    net.a.t.insert_cert(long.clone(), e);
    net.a.e.changed(ItemKey::Cert(long));
    // A user with more groups than a user may have (empty names cost one byte each on the
    // wire and 24 bytes each here).
    let u = UserEntry {
        name: "mallory".into(),
        groups: vec![String::new(); MAX_USER_GROUPS + 1],
        expires: now + 1_000,
        gen: LOCAL_GEN,
    };
    net.a.t.insert_user(addr(1), u);
    net.a.e.changed(ItemKey::User(addr(1)));
    make(&mut net.a, TableKind::Users, 2, 0, now);
    net.settle(2_000);
    assert_eq!(net.b.t.len_of(TableKind::Certs), 0);
    assert_eq!(
        net.b.t.len_of(TableKind::Users),
        1,
        "the ordinary user arrived"
    );
    let r = refusals(&net.b);
    assert!(
        r.contains(&(Refused::Invalid(TableKind::Certs), 1)),
        "{r:?}"
    );
    assert!(
        r.contains(&(Refused::Invalid(TableKind::Users), 1)),
        "{r:?}"
    );
}

#[test]
fn refusals_are_reported_at_most_every_ten_seconds_and_counted_always() {
    let mut net = capped_pair(10);
    for i in 0..15 {
        let now = net.now;
        make(&mut net.a, TableKind::Hosts, i, 0, now);
    }
    net.settle(2_000);
    for i in 15..20 {
        let now = net.now;
        make(&mut net.a, TableKind::Hosts, i, 0, now);
    }
    net.settle(2_000);
    assert_eq!(refusals(&net.b).len(), 1, "one event within 10 s");
    assert_eq!(net.b.e.stats().refused_by(TableKind::Hosts), 10);
    net.run(REFUSAL_EVENT_EVERY_MS);
    let now = net.now;
    make(&mut net.a, TableKind::Hosts, 20, 0, now);
    net.settle(2_000);
    let full = Refused::Full {
        table: TableKind::Hosts,
        cap: 10,
    };
    // The second event counts every refusal since the first: 4 + 5 + 1.
    assert_eq!(refusals(&net.b), [(full, 1), (full, 10)]);
}

#[test]
fn a_peer_cannot_make_the_passive_hold_more_certificates_than_its_cap() {
    // The measured case: a peer with the key sent 750,000 certificate records and the passive
    // held them all. With the default caps it holds MAX_CERTS.
    let mut net = pair(0.0, 37);
    net.run(20);
    let n = (MAX_CERTS + 5_000) as u32;
    for i in 0..n {
        let now = net.now;
        make(&mut net.a, TableKind::Certs, i, 1, now);
        if i % 4_096 == 0 {
            net.tick();
        }
    }
    net.settle(60_000);
    assert_eq!(net.b.t.len_of(TableKind::Certs), MAX_CERTS);
    assert_eq!(net.b.e.stats().refused_by(TableKind::Certs), 5_000);
}

#[test]
fn room_left_by_stale_items_is_filled_after_the_bulk() {
    // B holds 10 certificates (its cap). B→A is cut long enough for A to give B up (B, still
    // hearing A, notices nothing); meanwhile A drops 0..5 and adds 10..20. The one bulk A
    // sends at the reunion finds B full of stale items (removed only at its end) and is
    // refused 10..20; B then asks again and the second bulk fills the room.
    let mut net = capped_pair(10);
    for i in 0..10 {
        let now = net.now;
        make(&mut net.a, TableKind::Certs, i, 0, now);
    }
    net.settle(2_000);
    net.cut_ba = true;
    net.run(3_500);
    for i in 0..5u32 {
        net.a
            .t
            .remove_item(&ItemKey::Cert(i.to_be_bytes().to_vec()));
    }
    for i in 10..20 {
        let now = net.now;
        make(&mut net.a, TableKind::Certs, i, 0, now);
    }
    net.cut_ba = false;
    net.settle(5_000);
    net.run(500);
    net.settle(5_000);
    assert_eq!(net.b.t.len_of(TableKind::Certs), 10);
    assert!((0..5u32).all(|i| !net.b.t.certs().contains_key(&i.to_be_bytes().to_vec())));
    let received = net
        .b
        .events
        .iter()
        .filter(|e| matches!(e, SyncEvent::BulkReceived { .. }))
        .count();
    assert!(
        received >= 3,
        "first meeting, reunion, refill: {:?}",
        net.b.events
    );
    assert!(net.b.events.iter().any(|e| matches!(
        e,
        SyncEvent::BulkReceived {
            stale_removed: 5,
            ..
        }
    )));
}
