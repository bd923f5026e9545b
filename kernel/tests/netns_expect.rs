//! Helper expectations against the real kernel, in two namespaces the test creates and
//! removes ("active" and "standby"): an FTP control connection with the "ftp" helper and the
//! expectation of its data connection, created in the active's tables, arrive there as events;
//! built from those events alone, both are created in the standby's tables, whose dump then
//! shows the same expectation; its removal is a destroy event. The standby's kernel refuses an
//! expectation whose master is missing (ENOENT) or has no helper (EOPNOTSUPP): reported by
//! index, nothing else refused. Needs root: skipped with a message outside CI, a failure in CI.

use std::time::{Duration, Instant};

mod common;
use common::{can_run, in_ns, namespaces};
use ha_kernel::conntrack::codec::IPS_SRC_NAT;
use ha_kernel::conntrack::expect::{KExpFn, KExpNat};
use ha_kernel::conntrack::socket::Ctnetlink;
use ha_kernel::conntrack::{
    CtEntry, CtEventKind, CtExpect, CtTuple, Events, KHelper, KSeqAdj, TcpInfo, IPS_ASSURED,
    IPS_SEEN_REPLY, TCP_ESTABLISHED,
};

fn open_in(ns: &str) -> Ctnetlink {
    in_ns(ns, || Ctnetlink::open().expect("ctnetlink socket"))
}

/// The control connection 10.1.0.1:`port` → 10.2.0.1:21, established, with the FTP helper.
fn control(port: u16, helper: bool) -> CtEntry {
    let orig = CtTuple {
        src: "10.1.0.1".parse().unwrap(),
        dst: "10.2.0.1".parse().unwrap(),
        proto: 6,
        src_port: port,
        dst_port: 21,
    };
    CtEntry {
        orig,
        reply: orig.inverse(),
        status: IPS_SEEN_REPLY | IPS_ASSURED,
        timeout_s: 3600,
        mark: 0,
        zone: 0,
        tcp: Some(TcpInfo {
            state: TCP_ESTABLISHED,
            wscale_orig: 7,
            wscale_reply: 7,
            flags_orig: 0x23,
            flags_reply: 0x23,
        }),
        helper: if helper { KHelper::new("ftp") } else { None },
        seq_adj: None,
    }
}

/// What an active-mode `PORT 10,1,0,1,...` on `master` announces: the server, from any
/// port, to the client's data port.
fn data_expect(master: &CtEntry, data_port: u16) -> CtExpect {
    CtExpect {
        tuple: CtTuple {
            src: master.orig.dst,
            dst: master.orig.src,
            proto: 6,
            src_port: 0,
            dst_port: data_port,
        },
        mask_src: "255.255.255.255".parse().unwrap(),
        mask_port: 0,
        master: master.orig,
        zone: 0,
        timeout_s: 300,
        flags: 0,
        class: 0,
        nat: None,
    }
}

/// Reads events for at most 3 s, until `done` says it has what it waits for.
fn events_until(sock: &mut Ctnetlink, done: impl Fn(&Events) -> bool) -> Events {
    let end = Instant::now() + Duration::from_secs(3);
    let mut got = Events::default();
    while Instant::now() < end && !done(&got) {
        sock.recv_events(Duration::from_millis(100), &mut got)
            .expect("events");
    }
    got
}

#[test]
fn an_ftp_expectation_travels_with_its_master_and_the_kernel_admits_it() {
    if !can_run("ctnetlink expectation namespace", None) {
        return;
    }
    let (_ns, names) = namespaces("hake", &["a", "b"]);
    let (na, nb) = (&names[0], &names[1]);
    let mut events = open_in(na);
    events.subscribe(1 << 20, false).expect("subscribe");
    let mut active = open_in(na);
    let mut standby = open_in(nb);

    // The active: the control connection with its helper, then what its PORT announced.
    let master = control(40_000, true);
    active.install(&master).expect("master with the ftp helper");
    let exp = data_expect(&master, 50_000);
    assert_eq!(
        active.install_expects(&[exp]).expect("expectation"),
        Vec::new()
    );
    let got = events_until(&mut events, |g| !g.expects.is_empty());
    let seen_master = got
        .entries
        .iter()
        .find(|e| e.kind == CtEventKind::New && e.entry.orig == master.orig)
        .map(|e| e.entry)
        .unwrap_or_else(|| panic!("no event for the master: {got:?}"));
    assert_eq!(
        seen_master.helper,
        KHelper::new("ftp"),
        "helper in the event"
    );
    let seen_exp = got
        .expects
        .iter()
        .find(|e| e.kind == CtEventKind::New)
        .map(|e| e.exp)
        .unwrap_or_else(|| panic!("no expectation event: {got:?}"));
    assert_eq!(seen_exp.tuple, exp.tuple);
    assert_eq!(seen_exp.master, master.orig);
    assert_eq!(seen_exp.mask_src, exp.mask_src);
    assert_eq!(seen_exp.mask_port, 0);

    // The standby: built from the events alone, in order (master, then expectation).
    assert!(standby
        .install_batch(&[seen_master])
        .expect("master")
        .is_empty());
    assert_eq!(
        standby.install_expects(&[seen_exp]).expect("expectation"),
        Vec::new()
    );
    let (dump, bad) = standby.dump_expects().expect("dump expectations");
    assert_eq!(bad, 0);
    assert_eq!(dump.len(), 1, "{dump:?}");
    let d = dump[0];
    assert_eq!(
        (d.tuple, d.master, d.mask_src, d.mask_port),
        (exp.tuple, exp.master, exp.mask_src, 0)
    );
    assert!(
        (290..=300).contains(&d.timeout_s),
        "timeout {}",
        d.timeout_s
    );
    let (entries, _) = standby.dump().expect("dump entries");
    let m = entries
        .iter()
        .find(|e| e.orig == master.orig)
        .expect("master in the standby's table");
    assert_eq!(m.helper, KHelper::new("ftp"));
    // Sent again (a later update): refreshed, not duplicated, not refused.
    assert_eq!(
        standby.install_expects(&[seen_exp]).expect("again"),
        Vec::new()
    );
    assert_eq!(standby.dump_expects().expect("dump").0.len(), 1);
    // An update of the master keeps its helper (sent without it, the kernel keeps it).
    assert!(standby
        .install_batch(&[CtEntry {
            mark: 5,
            ..seen_master
        }])
        .expect("refresh master")
        .is_empty());

    // Refused: a master the standby does not hold (ENOENT), a master without a helper
    // (EOPNOTSUPP); the good one of the same batch is created.
    let bare = control(40_001, false);
    standby.install(&bare).expect("master without helper");
    let orphan = data_expect(&control(40_002, true), 50_002);
    let fine_master = control(40_003, true);
    standby.install(&fine_master).expect("second master");
    let batch = [
        orphan,
        data_expect(&bare, 50_001),
        data_expect(&fine_master, 50_003),
    ];
    assert_eq!(
        standby.install_expects(&batch).expect("batch"),
        vec![(0, -2), (1, -95)]
    );
    assert_eq!(standby.dump_expects().expect("dump").0.len(), 2);

    // Removal on the active is a destroy event; on the standby a request.
    active
        .remove_expect(&exp.tuple, 0)
        .expect("remove on the active");
    let got = events_until(&mut events, |g| {
        g.expects.iter().any(|e| e.kind == CtEventKind::Destroy)
    });
    assert!(
        got.expects
            .iter()
            .any(|e| e.kind == CtEventKind::Destroy && e.exp.tuple == exp.tuple),
        "{got:?}"
    );
    standby.remove_expect(&exp.tuple, 0).expect("remove");
    assert!(standby.remove_expect(&exp.tuple, 0).is_err(), "gone twice");
    assert_eq!(standby.dump_expects().expect("dump").0.len(), 1);
}

/// FTP's `PORT` through SNAT as the active's kernel reports it: the control connection is
/// translated to the outside address, its client → server direction shifted by the longer
/// rewritten `PORT` (a sequence adjustment), and the expectation maps the server's data
/// connection to the outside address back to the client (a translation applied by
/// "nat-follow-master"). The standby's kernel must take all three, as its dumps show.
#[test]
fn a_translated_control_connection_and_its_expectation_install_with_their_nat() {
    if !can_run("ctnetlink expectation namespace", None) {
        return;
    }
    let (_ns, names) = namespaces("hakn", &["b"]);
    let mut standby = open_in(&names[0]);
    let adj = [
        KSeqAdj {
            correction_pos: 1_000_000,
            offset_before: 0,
            offset_after: 2,
        },
        KSeqAdj::default(),
    ];
    let mut master = control(40_010, true);
    master.reply.dst = "10.2.0.254".parse().unwrap();
    master.reply.dst_port = 40_010;
    master.status |= IPS_SRC_NAT;
    master.seq_adj = Some(adj);
    assert!(standby
        .install_batch(&[master])
        .expect("translated master")
        .is_empty());
    let (entries, _) = standby.dump().expect("dump entries");
    let m = entries
        .iter()
        .find(|e| e.orig == master.orig)
        .expect("master in the standby's table");
    assert_eq!(m.reply, master.reply, "translated reply direction");
    assert_eq!(m.seq_adj, Some(adj), "sequence adjustment");
    assert_eq!(m.helper, KHelper::new("ftp"));

    // The server 10.2.0.1 connects to the outside address's port 50010, mapped back to the
    // client 10.1.0.1:50010.
    let exp = CtExpect {
        tuple: CtTuple {
            src: "10.2.0.1".parse().unwrap(),
            dst: "10.2.0.254".parse().unwrap(),
            proto: 6,
            src_port: 0,
            dst_port: 50_010,
        },
        nat: Some(KExpNat {
            dir: 1,
            addr: "10.1.0.1".parse().unwrap(),
            port: 50_010,
            func: KExpFn::new("nat-follow-master").unwrap(),
        }),
        ..data_expect(&master, 50_010)
    };
    assert_eq!(
        standby.install_expects(&[exp]).expect("expectation"),
        Vec::new()
    );
    let (dump, bad) = standby.dump_expects().expect("dump expectations");
    assert_eq!(bad, 0);
    assert_eq!(dump.len(), 1, "{dump:?}");
    assert_eq!(dump[0].tuple, exp.tuple);
    assert_eq!(dump[0].nat, exp.nat, "translation and its function");

    // A later rewrite (a second `PORT`) moves the adjustment on the existing entry.
    let later = [
        KSeqAdj {
            correction_pos: 1_000_100,
            offset_before: 2,
            offset_after: 4,
        },
        KSeqAdj::default(),
    ];
    assert!(standby
        .install_batch(&[CtEntry {
            seq_adj: Some(later),
            ..master
        }])
        .expect("refresh")
        .is_empty());
    let (entries, _) = standby.dump().expect("dump entries");
    let m = entries.iter().find(|e| e.orig == master.orig).unwrap();
    assert_eq!(m.seq_adj, Some(later));
    // What the active reads when a rewrite had no event of its own: the entry by its tuple.
    let got = standby.get(&master.orig, 0).expect("get").expect("present");
    assert_eq!((got.seq_adj, got.reply), (Some(later), master.reply));
    assert_eq!(
        standby.get(&control(40_011, true).orig, 0).expect("get"),
        None
    );
}
