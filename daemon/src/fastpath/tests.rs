use super::*;
use smoltcp::wire::{IpAddress, TcpControl, TcpRepr, TcpSeqNumber};

const ME_IN: Mac = [2, 0, 0, 0, 1, 1];
const ME_OUT: Mac = [2, 0, 0, 0, 1, 2];
const CLIENT: Mac = [2, 0, 0, 0, 9, 1];
const SERVER: Mac = [2, 0, 0, 0, 9, 2];
const PEER_IN: Mac = [2, 0, 0, 0, 2, 1];

fn ip(s: &str) -> Ipv4Addr {
    s.parse().expect("address")
}

fn fast_path() -> FastPath {
    FastPath::new(
        SideConfig {
            mac: ME_IN,
            cluster_ip: ip("10.1.0.254"),
            prefix_len: 24,
            member_ip: ip("10.1.0.11"),
            allow_new: true,
        },
        SideConfig {
            mac: ME_OUT,
            cluster_ip: ip("10.2.0.254"),
            prefix_len: 24,
            member_ip: ip("10.2.0.11"),
            allow_new: false,
        },
    )
}

/// Filter of the tests: remembers flows opened from a side that allows it.
#[derive(Default)]
struct Flows(HashSet<(std::net::IpAddr, u16, std::net::IpAddr, u16)>);

impl Filter for Flows {
    fn check(&mut self, p: &Packet, _from: Side, allow_new: bool, _now: Instant) -> bool {
        if self.0.contains(&(p.src, p.sport, p.dst, p.dport))
            || self.0.contains(&(p.dst, p.dport, p.src, p.sport))
        {
            return true;
        }
        if allow_new && p.flags & tcp_flags::SYN != 0 {
            self.0.insert((p.src, p.sport, p.dst, p.dport));
            return true;
        }
        false
    }
}

fn arp(op: ArpOperation, from_mac: Mac, from_ip: &str, to_mac: Mac, to_ip: &str) -> Vec<u8> {
    let dst = if op == ArpOperation::Request {
        BROADCAST
    } else {
        to_mac
    };
    let mut f = arp_frame(op, from_mac, dst, ip(from_ip), to_mac, ip(to_ip));
    // arp_frame uses from_mac as the Ethernet source already.
    f.truncate(42);
    f
}

fn tcp(
    src_mac: Mac,
    dst_mac: Mac,
    src: &str,
    sport: u16,
    dst: &str,
    dport: u16,
    syn: bool,
) -> Vec<u8> {
    let repr = TcpRepr {
        src_port: sport,
        dst_port: dport,
        control: if syn {
            TcpControl::Syn
        } else {
            TcpControl::None
        },
        seq_number: TcpSeqNumber(1000),
        ack_number: if syn { None } else { Some(TcpSeqNumber(1)) },
        window_len: 1000,
        window_scale: None,
        max_seg_size: None,
        sack_permitted: false,
        sack_ranges: [None, None, None],
        timestamp: None,
        payload: b"data",
    };
    let (s, d) = (ip(src), ip(dst));
    let pkt = ip_packet(s, d, IpProtocol::Tcp, repr.buffer_len(), |b| {
        let mut t = TcpPacket::new_unchecked(b);
        repr.emit(&mut t, &IpAddress::Ipv4(s), &IpAddress::Ipv4(d), &caps());
    });
    eth_frame(src_mac, dst_mac, &pkt)
}

fn parse_arp(frame: &[u8]) -> ArpRepr {
    let eth = EthernetFrame::new_checked(frame).expect("eth");
    assert_eq!(eth.ethertype(), EthernetProtocol::Arp);
    ArpRepr::parse(&ArpPacket::new_checked(eth.payload()).expect("arp")).expect("arp repr")
}

#[test]
fn passive_answers_only_its_own_address_and_forwards_nothing() {
    let mut fp = fast_path();
    let mut f = Flows::default();
    let now = Instant::now();
    let out = fp.handle(
        Side::Inside,
        &arp(
            ArpOperation::Request,
            CLIENT,
            "10.1.0.1",
            [0; 6],
            "10.1.0.254",
        ),
        now,
        &mut f,
    );
    assert!(out.is_empty(), "the cluster address belongs to the active");
    let out = fp.handle(
        Side::Inside,
        &arp(
            ArpOperation::Request,
            CLIENT,
            "10.1.0.1",
            [0; 6],
            "10.1.0.11",
        ),
        now,
        &mut f,
    );
    assert_eq!(out.len(), 1);
    let ArpRepr::EthernetIpv4 {
        operation,
        source_hardware_addr,
        source_protocol_addr,
        ..
    } = parse_arp(&out[0].frame)
    else {
        panic!()
    };
    assert_eq!(operation, ArpOperation::Reply);
    assert_eq!(source_hardware_addr.0, ME_IN);
    assert_eq!(source_protocol_addr, ip("10.1.0.11"));
    let syn = tcp(CLIENT, ME_IN, "10.1.0.1", 40000, "10.2.0.1", 80, true);
    assert!(fp.handle(Side::Inside, &syn, now, &mut f).is_empty());
    assert_eq!(fp.stats().dropped_passive, 1);
    assert_eq!(fp.stats().forwarded, 0);
}

#[test]
fn takeover_sends_gratuitous_arp_on_both_sides() {
    let mut fp = fast_path();
    let out = fp.set_active(true);
    assert_eq!(out.len(), 2);
    for (o, (mac, cip)) in out
        .iter()
        .zip([(ME_IN, "10.1.0.254"), (ME_OUT, "10.2.0.254")])
    {
        let eth = EthernetFrame::new_checked(&o.frame[..]).expect("eth");
        assert_eq!(eth.dst_addr().0, BROADCAST);
        let ArpRepr::EthernetIpv4 {
            source_hardware_addr,
            source_protocol_addr,
            target_protocol_addr,
            ..
        } = parse_arp(&o.frame)
        else {
            panic!()
        };
        assert_eq!(source_hardware_addr.0, mac);
        assert_eq!(source_protocol_addr, ip(cip));
        assert_eq!(target_protocol_addr, ip(cip));
    }
    assert!(
        fp.set_active(true).is_empty(),
        "no GARP when already active"
    );
    assert!(fp.set_active(false).is_empty());
    assert!(fp.garp().is_empty(), "the passive never claims the address");
}

#[test]
fn active_forwards_known_and_allowed_flows_after_resolving_the_next_hop() {
    let mut fp = fast_path();
    let mut f = Flows::default();
    let now = Instant::now();
    fp.set_active(true);
    // ARP for the gateway is answered now.
    let out = fp.handle(
        Side::Inside,
        &arp(
            ArpOperation::Request,
            CLIENT,
            "10.1.0.1",
            [0; 6],
            "10.1.0.254",
        ),
        now,
        &mut f,
    );
    assert_eq!(out.len(), 1);

    let mut syn = tcp(CLIENT, ME_IN, "10.1.0.1", 40000, "10.2.0.1", 80, true);
    // A partial (offloaded) TCP checksum, as a veth delivers it: completed on the way.
    syn[14 + 20 + 16] ^= 0x5a;
    let out = fp.handle(Side::Inside, &syn, now, &mut f);
    // The server's MAC is unknown: an ARP request from our own outside address.
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].side, Side::Outside);
    let ArpRepr::EthernetIpv4 {
        source_protocol_addr,
        target_protocol_addr,
        ..
    } = parse_arp(&out[0].frame)
    else {
        panic!()
    };
    assert_eq!(source_protocol_addr, ip("10.2.0.11"));
    assert_eq!(target_protocol_addr, ip("10.2.0.1"));

    // The reply releases the waiting SYN, rewritten.
    let out = fp.handle(
        Side::Outside,
        &arp(ArpOperation::Reply, SERVER, "10.2.0.1", ME_OUT, "10.2.0.11"),
        now,
        &mut f,
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].side, Side::Outside);
    let eth = EthernetFrame::new_checked(&out[0].frame[..]).expect("eth");
    assert_eq!(eth.src_addr().0, ME_OUT);
    assert_eq!(eth.dst_addr().0, SERVER);
    let p = Ipv4Packet::new_checked(eth.payload()).expect("ip");
    assert_eq!(p.hop_limit(), 63);
    assert!(p.verify_checksum());
    let t = TcpPacket::new_checked(p.payload()).expect("tcp");
    assert!(t.verify_checksum(
        &IpAddress::Ipv4(p.src_addr()),
        &IpAddress::Ipv4(p.dst_addr())
    ));

    // The server's answer (not a SYN) passes: the flow is known.
    let back = tcp(SERVER, ME_OUT, "10.2.0.1", 80, "10.1.0.1", 40000, false);
    let out = fp.handle(Side::Outside, &back, now, &mut f);
    assert_eq!(out.len(), 1, "the client's MAC was learned from its ARP");
    assert_eq!(out[0].side, Side::Inside);
    assert_eq!(fp.stats().forwarded, 2);

    // A new connection from the outside is not allowed; mid-stream junk is dropped.
    let syn_out = tcp(SERVER, ME_OUT, "10.2.0.1", 5555, "10.1.0.1", 22, true);
    assert!(fp.handle(Side::Outside, &syn_out, now, &mut f).is_empty());
    let junk = tcp(CLIENT, ME_IN, "10.1.0.1", 40001, "10.2.0.1", 80, false);
    assert!(fp.handle(Side::Inside, &junk, now, &mut f).is_empty());
    assert_eq!(fp.stats().dropped_filter, 2);
}

#[test]
fn no_route_ttl_and_own_frames() {
    let mut fp = fast_path();
    let mut f = Flows::default();
    let now = Instant::now();
    fp.set_active(true);
    let elsewhere = tcp(CLIENT, ME_IN, "10.1.0.1", 1, "192.0.2.1", 80, true);
    assert!(fp.handle(Side::Inside, &elsewhere, now, &mut f).is_empty());
    assert_eq!(fp.stats().dropped_no_route, 1);
    let mut ttl1 = tcp(CLIENT, ME_IN, "10.1.0.1", 2, "10.2.0.1", 80, true);
    {
        let mut p = Ipv4Packet::new_unchecked(&mut ttl1[14..]);
        p.set_hop_limit(1);
        p.fill_checksum();
    }
    assert!(fp.handle(Side::Inside, &ttl1, now, &mut f).is_empty());
    assert_eq!(fp.stats().dropped_ttl, 1);
    // Our own GARP seen again by the socket is ignored.
    let g = fp.garp();
    assert!(fp.handle(Side::Inside, &g[0].frame, now, &mut f).is_empty());
    // Garbage.
    assert!(fp.handle(Side::Inside, &[1, 2, 3], now, &mut f).is_empty());
    let mut bad = tcp(CLIENT, ME_IN, "10.1.0.1", 3, "10.2.0.1", 80, true);
    bad[20] ^= 0xff; // IP header checksum no longer verifies
    assert!(fp.handle(Side::Inside, &bad, now, &mut f).is_empty());
    assert_eq!(fp.stats().malformed, 2);
}

#[test]
fn probe_round_trip_and_echo_answered_while_passive() {
    let mut a = fast_path();
    let mut f = Flows::default();
    let now = Instant::now();
    assert!(a.probe(ip("192.0.2.9"), now).is_none());
    let (out, seq) = a.probe(ip("10.1.0.12"), now).expect("probe");
    assert_eq!(out.len(), 1, "ARP for the peer first");
    let out = a.handle(
        Side::Inside,
        &arp(
            ArpOperation::Reply,
            PEER_IN,
            "10.1.0.12",
            ME_IN,
            "10.1.0.11",
        ),
        now,
        &mut f,
    );
    assert_eq!(out.len(), 1, "then the echo request");
    let echo_req = out[0].frame.clone();

    // The peer (passive) answers the echo to its member address.
    let mut peer = FastPath::new(
        SideConfig {
            mac: PEER_IN,
            cluster_ip: ip("10.1.0.254"),
            prefix_len: 24,
            member_ip: ip("10.1.0.12"),
            allow_new: true,
        },
        fast_path().side(Side::Outside).clone(),
    );
    peer.neigh.insert(ip("10.1.0.11"), (Side::Inside, ME_IN));
    let mut req = echo_req;
    req[0..6].copy_from_slice(&PEER_IN);
    // A peer whose controller is not heard cannot take over: its member address does not
    // answer the probe (the prober may take over).
    assert!(peer.handle(Side::Inside, &req, now, &mut f).is_empty());
    assert_eq!(peer.stats().echo_replies, 0);
    peer.set_ha_alive(true);
    let reply = peer.handle(Side::Inside, &req, now, &mut f);
    assert_eq!(reply.len(), 1);
    assert_eq!(peer.stats().echo_replies, 1);

    assert!(!a.probe_answered(ip("10.1.0.12"), seq));
    let mut rep = reply[0].frame.clone();
    rep[0..6].copy_from_slice(&ME_IN);
    assert!(a.handle(Side::Inside, &rep, now, &mut f).is_empty());
    assert!(a.probe_answered(ip("10.1.0.12"), seq));
    assert!(!a.probe_answered(ip("10.1.0.12"), seq), "taken once");
}

#[test]
fn unresolved_frames_expire_and_the_queue_is_bounded() {
    let mut fp = fast_path();
    let mut f = Flows::default();
    let t0 = Instant::now();
    fp.set_active(true);
    let syn = tcp(CLIENT, ME_IN, "10.1.0.1", 40000, "10.2.0.1", 80, true);
    let out = fp.handle(Side::Inside, &syn, t0, &mut f);
    assert_eq!(out.len(), 1);
    // A second packet within ARP_RETRY does not ask again.
    let out = fp.handle(Side::Inside, &syn, t0 + Duration::from_millis(10), &mut f);
    assert!(out.is_empty());
    fp.expire(t0 + PENDING_TTL + Duration::from_millis(20));
    assert_eq!(fp.stats().dropped_unresolved, 2);
    for i in 0..(PENDING_MAX + 5) {
        let syn = tcp(CLIENT, ME_IN, "10.1.0.1", i as u16, "10.2.0.1", 80, true);
        fp.handle(Side::Inside, &syn, t0, &mut f);
    }
    assert_eq!(fp.pending.len(), PENDING_MAX);
    assert_eq!(fp.stats().dropped_unresolved, 7);
}
