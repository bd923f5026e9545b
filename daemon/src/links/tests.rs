use super::*;
use netlink_packet_core::NetlinkHeader;
use std::process::Command;

fn link_msg(index: u32, name: &str, flags: LinkFlags, new: bool) -> Vec<u8> {
    let mut l = LinkMessage::default();
    l.header.index = index;
    l.header.flags = flags;
    l.attributes.push(LinkAttribute::IfName(name.into()));
    let inner = if new {
        RouteNetlinkMessage::NewLink(l)
    } else {
        RouteNetlinkMessage::DelLink(l)
    };
    let mut p = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(inner));
    p.finalize();
    let mut b = vec![0; p.buffer_len()];
    p.serialize(&mut b);
    b
}

#[test]
fn parses_new_and_deleted_links_back_to_back() {
    let mut bytes = link_msg(3, "eth1", LinkFlags::Up | LinkFlags::LowerUp, true);
    bytes.extend(link_msg(4, "eth2", LinkFlags::Up, true));
    bytes.extend(link_msg(
        5,
        "eth3",
        LinkFlags::Up | LinkFlags::LowerUp,
        false,
    ));
    let (recs, done) = parse_link_messages(&bytes).expect("parse");
    assert!(!done);
    assert_eq!(recs.len(), 3);
    assert_eq!((recs[0].name.as_str(), recs[0].up), ("eth1", true));
    assert_eq!(
        (recs[1].name.as_str(), recs[1].up),
        ("eth2", false),
        "no carrier is down"
    );
    assert!(recs[2].deleted && !recs[2].up);
}

#[test]
fn garbage_is_an_error_not_a_panic() {
    assert!(parse_link_messages(&[0xff; 7]).is_err());
    let mut b = link_msg(3, "eth1", LinkFlags::Up, true);
    b.truncate(b.len() - 3);
    assert!(parse_link_messages(&b).is_err());
}

#[test]
fn report_carries_weights_and_missing_means_down() {
    let ifaces = vec![
        MonitoredIface {
            name: "in".into(),
            weight: 100,
            aggregate: None,
        },
        MonitoredIface {
            name: "out".into(),
            weight: 20_000,
            aggregate: Some(1),
        },
        MonitoredIface {
            name: "gone".into(),
            weight: 5,
            aggregate: None,
        },
    ];
    let msg = interfaces_msg(&ifaces, |n| match n {
        "in" => Some(true),
        "out" => Some(false),
        _ => None,
    })
    .expect("report");
    let HostMsg::Interfaces(v) = msg else {
        panic!("not an interfaces report")
    };
    assert_eq!(v.len(), 3);
    assert!(v[0].up && !v[1].up && !v[2].up);
    assert_eq!(v[1].weight, 9999, "clamped to the maximum weight");
    assert_eq!(v[1].aggregate, Some(1));
    let long = vec![MonitoredIface {
        name: "x".repeat(17),
        weight: 1,
        aggregate: None,
    }];
    assert!(matches!(
        interfaces_msg(&long, |_| None),
        Err(ReportError::NameTooLong(_))
    ));
}

/// Deletes the veth pair it names when dropped (also when the test fails).
struct Veth(String);

impl Drop for Veth {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["link", "del", &self.0]).status();
    }
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().expect("run ip");
    assert!(st.success(), "ip {args:?} failed");
}

/// Real kernel: a veth pair created for this test goes up, then loses carrier when its
/// peer goes down, then disappears. Needs root (as CI runs).
#[test]
fn kernel_link_changes_are_seen() {
    let a = format!("hdl{}a", std::process::id() % 100_000);
    let b = format!("hdl{}b", std::process::id() % 100_000);
    ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
    let guard = Veth(a.clone());
    let mut mon = LinkMonitor::open().expect("netlink");
    assert_eq!(mon.is_up(&a), Some(false));
    assert_eq!(mon.is_up("lo"), Some(true));

    let wait_for = |mon: &mut LinkMonitor, want: Option<bool>| {
        for _ in 0..50 {
            let _ = mon.poll(Duration::from_millis(100)).expect("poll");
            if mon.is_up(&a) == want {
                return;
            }
        }
        panic!("{a} never became {want:?}");
    };
    ip(&["link", "set", &a, "up"]);
    ip(&["link", "set", &b, "up"]);
    wait_for(&mut mon, Some(true));
    ip(&["link", "set", &b, "down"]);
    wait_for(&mut mon, Some(false));
    ip(&["link", "set", &b, "up"]);
    wait_for(&mut mon, Some(true));
    // Bounce through netlink (the daemon's own call).
    let idx = mon.index_of(&a).expect("index");
    set_link_up(idx, false).expect("down");
    wait_for(&mut mon, Some(false));
    set_link_up(idx, true).expect("up");
    wait_for(&mut mon, Some(true));
    assert!(
        set_link_up(u32::MAX - 1, true).is_err(),
        "no such interface"
    );
    drop(guard);
    wait_for(&mut mon, None);
}

#[test]
fn undecodable_attributes_still_give_index_and_state() {
    let mut b = link_msg(9, "eth9", LinkFlags::Up | LinkFlags::LowerUp, false);
    // Append an attribute whose length (3) is below the attribute header size.
    b.extend([3, 0, 0xAB, 0xCD]);
    let len = b.len() as u32;
    b[0..4].copy_from_slice(&len.to_ne_bytes());
    let (recs, _) = parse_link_messages(&b).expect("fallback");
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].index, 9);
    assert!(recs[0].deleted && recs[0].name.is_empty());
}
