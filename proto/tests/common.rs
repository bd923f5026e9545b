//! Shared fixtures and proptest strategies for the proto tests.
#![allow(dead_code)]

use ha_proto::frame::{Header, PROTOCOL_VERSION};
use ha_proto::keys::{KeySet, Keyring, Psk};
use ha_proto::msg::host::{
    DomainRoleOf, DomainSummary, EventReport, HostMsg, IfaceState, LedReport, MemberSummary,
    StatusReport, WirePsk, EVENT_DETAIL_LEN,
};
use ha_proto::msg::member::{
    AdminCommand, DomainRole, Heard, Heartbeat, JoinAccept, JoinReject, JoinRequest, MemberMsg,
};
use ha_proto::msg::{
    Channel, FirmwareVersion, Forced, LinkState, Role, Serial, MAX_DOMAINS, MAX_HA_LINKS,
    MAX_IFACES, MAX_MEMBERS,
};
use proptest::collection::vec;
use proptest::prelude::*;

/// The documented test PSK: bytes 0x00, 0x01, …, 0x1f.
pub fn test_psk() -> Psk {
    let mut k = [0u8; 32];
    for (i, b) in k.iter_mut().enumerate() {
        *b = i as u8;
    }
    Psk(k)
}

/// Cluster id of the test vectors.
pub const CLUSTER: u32 = 0x0000_2a2a;

pub fn test_keys() -> KeySet {
    KeySet::derive(&test_psk(), CLUSTER, 1)
}

pub fn test_ring() -> Keyring {
    Keyring::new(test_keys())
}

pub fn header(channel: Channel, aead: bool, seq: u64) -> Header {
    Header {
        version: PROTOCOL_VERSION,
        channel,
        aead,
        key_id: 1,
        cluster_id: CLUSTER,
        sender: Serial::new("SN210A0000001").unwrap(),
        epoch: 7,
        peer_epoch: 0,
        seq,
    }
}

pub fn heartbeat() -> Heartbeat {
    let mut roles = heapless::Vec::new();
    roles
        .push(DomainRole {
            domain: 0,
            role: Role::Active,
            for_ms: 12_000,
        })
        .unwrap();
    let mut links = heapless::Vec::new();
    links.push(LinkState::Up).unwrap();
    links.push(LinkState::Up).unwrap();
    Heartbeat {
        quality: 100,
        priority: 0,
        forced: Forced::None,
        firmware: FirmwareVersion {
            major: 1,
            minor: 0,
            patch: 0,
        },
        config_revision: 42,
        paused: false,
        roles,
        links,
        uptime_ms: 3_600_000,
        heard: heapless::Vec::from_slice(&[Heard {
            member: Serial::new("SN210A0000002").unwrap(),
            epoch: 9,
        }])
        .unwrap(),
    }
}

fn serial() -> impl Strategy<Value = Serial> {
    "[A-Z0-9]{1,16}".prop_map(|s| Serial::new(&s).unwrap())
}

fn role() -> impl Strategy<Value = Role> {
    prop_oneof![
        Just(Role::Starting),
        Just(Role::Active),
        Just(Role::Passive),
        Just(Role::Disabled)
    ]
}

fn domain_role() -> impl Strategy<Value = DomainRoleOf> {
    (0u8..16, role()).prop_map(|(domain, role)| DomainRoleOf { domain, role })
}

fn domain_summary() -> impl Strategy<Value = DomainSummary> {
    (0u8..16, role(), any::<u8>()).prop_map(|(domain, role, priority)| DomainSummary {
        domain,
        role,
        priority,
    })
}

fn forced() -> impl Strategy<Value = Forced> {
    prop_oneof![
        Just(Forced::None),
        Just(Forced::Active),
        Just(Forced::Passive)
    ]
}

fn link() -> impl Strategy<Value = LinkState> {
    prop_oneof![
        Just(LinkState::Absent),
        Just(LinkState::Up),
        Just(LinkState::Down)
    ]
}

fn firmware() -> impl Strategy<Value = FirmwareVersion> {
    (any::<u8>(), any::<u8>(), any::<u16>()).prop_map(|(major, minor, patch)| FirmwareVersion {
        major,
        minor,
        patch,
    })
}

fn admin() -> impl Strategy<Value = AdminCommand> {
    prop_oneof![
        Just(AdminCommand::ForceActive),
        Just(AdminCommand::ForcePassive),
        Just(AdminCommand::ResetForcing),
        any::<u16>().prop_map(|seconds| AdminCommand::Pause { seconds }),
        Just(AdminCommand::Resume),
        Just(AdminCommand::Reload),
    ]
}

pub fn heartbeat_strategy() -> impl Strategy<Value = Heartbeat> {
    (
        (0u8..=100, any::<u8>(), forced(), firmware(), any::<u64>()),
        (
            any::<bool>(),
            vec((0u8..16, role(), any::<u32>()), 0..=MAX_DOMAINS),
            vec(link(), 0..=MAX_HA_LINKS),
            any::<u64>(),
            vec((serial(), any::<u32>()), 0..=MAX_MEMBERS),
        ),
    )
        .prop_map(
            |(
                (quality, priority, forced, firmware, config_revision),
                (paused, r, l, uptime_ms, h),
            )| {
                Heartbeat {
                    quality,
                    priority,
                    forced,
                    firmware,
                    config_revision,
                    paused,
                    roles: r
                        .into_iter()
                        .map(|(domain, role, for_ms)| DomainRole {
                            domain,
                            role,
                            for_ms,
                        })
                        .collect(),
                    links: l.into_iter().collect(),
                    uptime_ms,
                    heard: h
                        .into_iter()
                        .map(|(member, epoch)| Heard { member, epoch })
                        .collect(),
                }
            },
        )
}

pub fn member_msg() -> impl Strategy<Value = MemberMsg> {
    prop_oneof![
        heartbeat_strategy().prop_map(MemberMsg::Heartbeat),
        (firmware(), "[A-Za-z0-9-]{0,16}").prop_map(|(firmware, m)| {
            MemberMsg::JoinRequest(JoinRequest {
                firmware,
                model: heapless::String::try_from(m.as_str()).unwrap(),
            })
        }),
        (
            vec(serial(), 0..=MAX_MEMBERS),
            any::<u64>(),
            any::<u16>(),
            any::<u8>()
        )
            .prop_map(|(m, config_revision, heartbeat_ms, miss_limit)| {
                MemberMsg::JoinAccept(JoinAccept {
                    members: m.into_iter().collect(),
                    config_revision,
                    heartbeat_ms,
                    miss_limit,
                })
            }),
        prop_oneof![
            Just(JoinReject::ClusterFull),
            Just(JoinReject::AlreadyMember),
            Just(JoinReject::IncompatibleFirmware)
        ]
        .prop_map(MemberMsg::JoinReject),
        (serial(), any::<u32>(), admin()).prop_map(|(target, target_epoch, command)| {
            MemberMsg::AdminFor {
                target,
                target_epoch,
                command,
            }
        }),
        (any::<u8>(), serial(), any::<u32>()).prop_map(|(domain, to, to_epoch)| {
            MemberMsg::ResyncRequest {
                domain,
                to,
                to_epoch,
            }
        }),
    ]
}

pub fn host_msg() -> impl Strategy<Value = HostMsg> {
    let iface = (
        "[a-z0-9]{1,15}",
        any::<bool>(),
        0u16..=9999,
        any::<Option<u8>>(),
    )
        .prop_map(|(n, up, weight, aggregate)| IfaceState {
            name: heapless::String::try_from(n.as_str()).unwrap(),
            up,
            weight,
            aggregate,
        });
    prop_oneof![
        vec(iface, 0..=MAX_IFACES).prop_map(|v| HostMsg::Interfaces(v.into_iter().collect())),
        (proptest::option::of(serial()), admin())
            .prop_map(|(target, command)| HostMsg::Admin { target, command }),
        (serial(), any::<bool>()).prop_map(|(peer, alive)| HostMsg::ProbeResult { peer, alive }),
        vec(domain_role(), 0..=MAX_DOMAINS).prop_map(|v| HostMsg::Roles(v.into_iter().collect())),
        (serial(), any::<u16>())
            .prop_map(|(peer, within_ms)| HostMsg::ProbeRequest { peer, within_ms }),
        any::<u32>().prop_map(|nonce| HostMsg::Ping { nonce }),
        any::<u32>().prop_map(|nonce| HostMsg::Pong { nonce }),
        Just(HostMsg::StatusRequest),
        status_report().prop_map(HostMsg::Status),
        (
            any::<u32>(),
            any::<u64>(),
            "[a-z_]{1,24}",
            proptest::option::of(serial()),
            "[ -~]{0,96}"
        )
            .prop_map(|(seq, at_ms, name, peer, detail)| {
                HostMsg::Event(EventReport {
                    seq,
                    at_ms,
                    name: heapless::String::try_from(name.as_str()).unwrap(),
                    peer,
                    detail: heapless::String::try_from(
                        &detail[..detail.len().min(EVENT_DETAIL_LEN)],
                    )
                    .unwrap(),
                })
            }),
        (any::<u8>(), any::<[u8; 32]>()).prop_map(|(key_id, k)| HostMsg::InstallKey {
            key_id,
            psk: WirePsk(k)
        }),
        any::<u8>().prop_map(|key_id| HostMsg::UseKey { key_id }),
        any::<u8>().prop_map(|key_id| HostMsg::RetireKey { key_id }),
        (any::<u8>(), vec(any::<u8>(), 0..=2)).prop_map(|(sealing_key_id, a)| {
            HostMsg::KeyState {
                sealing_key_id,
                accepted: a.into_iter().collect(),
            }
        }),
        vec((serial(), any::<[u8; 4]>(), any::<u16>()), 0..=MAX_MEMBERS).prop_map(|v| {
            HostMsg::Members(
                v.into_iter()
                    .map(|(serial, ip, port)| ha_proto::config_block::MemberEntry {
                        serial,
                        main_link: ha_proto::config_block::LinkAddr { ip, port },
                    })
                    .collect(),
            )
        }),
        (
            any::<u64>(),
            any::<[bool; 4]>(),
            (any::<u32>(), any::<u8>(), 0u8..3),
            vec(
                (any::<u8>(), proptest::option::of(serial())),
                0..=MAX_DOMAINS
            ),
            any::<[u16; 6]>(),
        )
            .prop_map(
                |(revision, flags, (interval_ms, miss_limit, which), domains, w)| {
                    use ha_proto::config_block::*;
                    HostMsg::Settings(HaSettings {
                        revision,
                        encrypt: flags[0],
                        backup_link: flags[1],
                        timers: match which {
                            0 => TimerProfile::Default,
                            1 => TimerProfile::Fast,
                            _ => TimerProfile::Custom {
                                interval_ms,
                                miss_limit,
                            },
                        },
                        domains: domains
                            .into_iter()
                            .map(|(id, preferred)| DomainEntry { id, preferred })
                            .collect(),
                        aggregate: if flags[2] {
                            AggregateRule::AnyDown
                        } else {
                            AggregateRule::AllDown
                        },
                        tpm_included: flags[3],
                        weights: HwWeights {
                            disk: w[0],
                            raid: w[1],
                            tpm: w[2],
                            psu: w[3],
                            fan: w[4],
                            module: w[5],
                        },
                    })
                }
            ),
        Just(HostMsg::DetailsRequest),
        Just(HostMsg::CountersRequest),
        any::<u32>().prop_map(HostMsg::Capabilities),
        (serial(), any::<u16>(), any::<u16>()).prop_map(|(peer, within_ms, request)| {
            HostMsg::ProbeAsk {
                peer,
                within_ms,
                request,
            }
        }),
        (serial(), any::<u16>(), any::<bool>()).prop_map(|(peer, request, alive)| {
            HostMsg::ProbeAnswer {
                peer,
                request,
                alive,
            }
        }),
        (any::<u16>(), any::<bool>())
            .prop_map(|(request, alive)| HostMsg::ProbeVerdict { request, alive }),
        any::<bool>().prop_map(HostMsg::TableHeld),
        (any::<[u32; 5]>()).prop_map(|c| HostMsg::Counters(ha_proto::msg::host::CountersReport {
            to_active: c[0],
            from_active: c[1],
            peers_lost: c[2],
            probes_reasked: c[3],
            events_unsent: c[4],
        })),
        any::<u32>().prop_map(|seq| HostMsg::EventsSince { seq }),
        (
            "[a-z0-9-]{0,16}",
            vec((serial(), any::<u64>()), 0..=MAX_MEMBERS),
            any::<u32>()
        )
            .prop_map(|(model, v, next_event)| {
                HostMsg::Details(ha_proto::msg::host::DetailsReport {
                    next_event,
                    model: heapless::String::try_from(model.as_str()).unwrap(),
                    uptimes: v
                        .into_iter()
                        .map(|(serial, uptime_ms)| ha_proto::msg::host::MemberUptime {
                            serial,
                            uptime_ms,
                        })
                        .collect(),
                })
            }),
    ]
}

pub fn led_report() -> impl Strategy<Value = LedReport> {
    prop_oneof![
        Just(LedReport::Off),
        Just(LedReport::Steady),
        (any::<u16>(), any::<u16>()).prop_map(|(on_ms, off_ms)| LedReport::Blink { on_ms, off_ms }),
    ]
}

pub fn member_summary() -> impl Strategy<Value = MemberSummary> {
    (
        (serial(), any::<bool>(), any::<bool>(), any::<u8>()),
        (forced(), firmware(), any::<u64>(), any::<bool>()),
        (
            vec(domain_summary(), 0..=MAX_DOMAINS),
            vec(link(), 0..=MAX_HA_LINKS),
            any::<u64>(),
        ),
    )
        .prop_map(
            |(
                (serial, local, alive, quality),
                (forced, firmware, config_revision, paused),
                (domains, links, mode_since_ms),
            )| MemberSummary {
                serial,
                local,
                alive,
                quality,
                forced,
                firmware,
                config_revision,
                paused,
                domains: domains.into_iter().collect(),
                links: links.into_iter().collect(),
                mode_since_ms,
            },
        )
}

pub fn status_report() -> impl Strategy<Value = StatusReport> {
    (
        any::<u64>(),
        vec(member_summary(), 0..=MAX_MEMBERS),
        led_report(),
        any::<u32>(),
        any::<u32>(),
        any::<u32>(),
    )
        .prop_map(
            |(uptime_ms, m, led, frames_sent, frames_received, frames_rejected)| StatusReport {
                uptime_ms,
                members: m.into_iter().collect(),
                led,
                frames_sent,
                frames_received,
                frames_rejected,
            },
        )
}
