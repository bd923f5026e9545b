//! The block → agent mapping (`Config::from_block`, defect 10): every field of the flash
//! configuration block reaches the agent's configuration, checked field by field with
//! values that tell the fields apart, and by behaviour (an agent built from the block
//! weighs its hardware, aggregates and TPM as the block says). A mapping that ignores the
//! TPM, inverts the aggregate rule or swaps two weights fails here.

use ha_agent::config::{
    Config, ConfigError, FromBlockError, Timers, DEFAULT_SENSOR_TIMEOUT_MS, PREFERRED_PRIORITY,
};
use ha_agent::{Agent, SensorKind, SensorReading};
use ha_proto::config_block::{
    AggregateRule, ConfigBlock, DomainEntry, HwWeights, LinkAddr, MemberEntry, TimerProfile,
    DEFAULT_STATE_SYNC_PORT,
};
use ha_proto::keys::Psk;
use ha_proto::msg::host::{HostMsg, IfaceState};
use ha_proto::msg::{FirmwareVersion, Serial};

type C = Config<4, 4>;

fn serial(s: &str) -> Serial {
    Serial::new(s).unwrap()
}

/// A strong key.
const KEY: [u8; 32] = [
    79, 204, 198, 15, 169, 100, 136, 208, 217, 2, 63, 218, 246, 12, 2, 121, 254, 18, 215, 194, 192,
    99, 229, 9, 42, 57, 169, 187, 79, 249, 188, 221,
];

const FW: FirmwareVersion = FirmwareVersion {
    major: 3,
    minor: 1,
    patch: 4,
};

/// A block in which no two fields of the same type hold the same value, and no value is
/// a default: this member is the second of three, key id 7, encryption and the backup
/// link on, a custom timer profile, sparse domain ids, the any-down rule, the TPM included,
/// six different weights.
fn block() -> ConfigBlock {
    let mut members = heapless::Vec::new();
    for (i, s) in ["SN-A", "SN-B", "SN-C"].iter().enumerate() {
        members
            .push(MemberEntry {
                serial: serial(s),
                main_link: LinkAddr {
                    ip: [10, 0, 0, i as u8 + 1],
                    port: 44240,
                },
            })
            .unwrap();
    }
    let mut domains = heapless::Vec::new();
    for (id, preferred) in [(3, Some("SN-C")), (14, None), (1, Some("SN-A"))] {
        domains
            .push(DomainEntry {
                id,
                preferred: preferred.map(serial),
            })
            .unwrap();
    }
    let b = ConfigBlock {
        serial: serial("SN-B"),
        cluster_id: 0x00C0_FFEE,
        key_id: 7,
        encrypt: true,
        members,
        backup_link: true,
        state_sync_port: DEFAULT_STATE_SYNC_PORT,
        timers: TimerProfile::Custom {
            interval_ms: 40,
            miss_limit: 4,
        },
        domains,
        aggregate: AggregateRule::AnyDown,
        tpm_included: true,
        weights: HwWeights {
            disk: 11,
            raid: 22,
            tpm: 33,
            psu: 44,
            fan: 55,
            module: 66,
        },
        psk: Psk(KEY),
    };
    b.validate().unwrap();
    b
}

/// The same block with every boolean and enum at its other value.
fn other_block() -> ConfigBlock {
    let mut b = block();
    b.encrypt = false;
    b.backup_link = false;
    b.timers = TimerProfile::Fast;
    b.aggregate = AggregateRule::AllDown;
    b.tpm_included = false;
    b.validate().unwrap();
    b
}

fn from(b: &ConfigBlock) -> C {
    C::from_block(b, "model-x", FW).unwrap()
}

#[test]
fn every_block_field_reaches_the_configuration() {
    let b = block();
    let c = from(&b);
    assert_eq!(c.me, serial("SN-B"));
    assert_eq!(c.cluster_id, 0x00C0_FFEE);
    assert_eq!(c.key_id, 7);
    assert!(c.encrypt);
    assert_eq!(c.psk.0, KEY);
    // Members in the block's order (the order is the election's last tie-break).
    assert_eq!(
        c.members.as_slice(),
        [serial("SN-A"), serial("SN-B"), serial("SN-C")]
    );
    assert_eq!(c.links, 2, "backup link on: two links");
    let profile = TimerProfile::Custom {
        interval_ms: 40,
        miss_limit: 4,
    };
    assert_eq!(c.timers, Timers::for_profile(profile));
    assert_eq!(c.timers.profile.dead_ms(), 160);
    // Domains by id, in the block's order, each with its preferred member.
    assert_eq!(c.domains.as_slice(), b.domains.as_slice());
    assert_eq!(c.priority_in(3, &serial("SN-C")), PREFERRED_PRIORITY);
    assert_eq!(c.priority_in(3, &serial("SN-A")), 0);
    assert_eq!(c.priority_in(14, &serial("SN-A")), 0);
    assert_eq!(c.priority_in(1, &serial("SN-A")), PREFERRED_PRIORITY);
    assert_eq!(c.quality.aggregate, AggregateRule::AnyDown);
    assert!(c.quality.tpm_included);
    // Six different values: a swap of any two weights changes the struct.
    assert_eq!(
        c.quality.weights,
        HwWeights {
            disk: 11,
            raid: 22,
            tpm: 33,
            psu: 44,
            fan: 55,
            module: 66,
        }
    );
    for k in SensorKind::ALL {
        assert_eq!(c.quality.weights.of(k), b.weights.of(k), "{k:?}");
    }
    // The revision is the block's digest of its shared settings.
    assert_eq!(c.config_revision, b.revision());
    assert_ne!(c.config_revision, 0);
    // The shell's own values, and what the block does not hold.
    assert_eq!(c.model.as_str(), "model-x");
    assert_eq!(c.firmware, FW);
    assert_eq!(c.sensor_timeout_ms, DEFAULT_SENSOR_TIMEOUT_MS);
}

#[test]
fn the_other_value_of_every_switch_reaches_the_configuration() {
    let c = from(&other_block());
    assert!(!c.encrypt);
    assert_eq!(c.links, 1, "backup link off: the main link only");
    assert_eq!(c.timers, Timers::for_profile(TimerProfile::Fast));
    assert_eq!(c.quality.aggregate, AggregateRule::AllDown);
    assert!(!c.quality.tpm_included);
    let mut b = other_block();
    b.timers = TimerProfile::Default;
    assert_eq!(from(&b).timers, Timers::for_profile(TimerProfile::Default));
}

#[test]
fn a_block_the_agent_cannot_hold_or_refuses_is_an_error() {
    let b = block();
    assert_eq!(
        Config::<2, 4>::from_block(&b, "m", FW).unwrap_err(),
        FromBlockError::TooLarge {
            members: 3,
            domains: 3,
            max_members: 2,
            max_domains: 4
        }
    );
    let e = Config::<4, 2>::from_block(&b, "m", FW).unwrap_err();
    assert_eq!(
        e,
        FromBlockError::TooLarge {
            members: 3,
            domains: 3,
            max_members: 4,
            max_domains: 2
        }
    );
    assert_eq!(e.to_string(), "3 domains: this firmware handles at most 2");
    // A block never validated (not one read from flash): the agent's own check refuses it.
    let mut b = block();
    b.serial = serial("SN-Z");
    assert_eq!(
        C::from_block(&b, "m", FW).unwrap_err(),
        FromBlockError::Refused(ConfigError::SelfNotMember)
    );
}

/// An agent built from `b`, its sensor source and interfaces reporting.
fn agent(b: &ConfigBlock) -> Agent<4, 4> {
    Agent::new(from(b), 0, 1).unwrap()
}

fn reading(kind: SensorKind, ok: bool) -> SensorReading {
    SensorReading { kind, index: 0, ok }
}

fn hardware_part(b: &ConfigBlock, readings: &[SensorReading]) -> u8 {
    let mut a = agent(b);
    a.handle_sensor_report(1, readings);
    a.status().me.hardware_quality
}

#[test]
fn an_agent_built_from_the_block_weighs_hardware_as_the_block_says() {
    // Only the failed component's weight against the working one's: disk 11 failed, RAID 22
    // working gives floor(100 × 22 / 33) = 66; swapped weights would give 33.
    let b = block();
    let disk_down = [
        reading(SensorKind::Disk, false),
        reading(SensorKind::Raid, true),
    ];
    assert_eq!(hardware_part(&b, &disk_down), 66);
    // Every kind at its own weight: only the fan (55 of 231) failed → floor(100 × 176 / 231).
    let all: Vec<_> = SensorKind::ALL
        .iter()
        .map(|&k| reading(k, k != SensorKind::Fan))
        .collect();
    assert_eq!(hardware_part(&b, &all), 76);
}

#[test]
fn an_agent_built_from_the_block_counts_the_tpm_only_when_the_block_says() {
    let readings = [
        reading(SensorKind::Tpm, false),
        reading(SensorKind::Psu, true),
    ];
    // Included: TPM 33 failed, PSU 44 working → floor(100 × 44 / 77) = 57.
    assert_eq!(hardware_part(&block(), &readings), 57);
    // Not included: the PSU alone.
    assert_eq!(hardware_part(&other_block(), &readings), 100);
}

#[test]
fn an_agent_built_from_the_block_applies_its_aggregate_rule() {
    let iface = |name: &str, up: bool| {
        let mut n = heapless::String::new();
        n.push_str(name).unwrap();
        IfaceState {
            name: n,
            up,
            weight: 100,
            aggregate: Some(1),
        }
    };
    let bond_half_down =
        || HostMsg::Interfaces([iface("a", true), iface("b", false)].into_iter().collect());
    // Any-down: one member down takes the bond down.
    let mut a = agent(&block());
    a.handle_host(1, bond_half_down());
    assert_eq!(a.status().me.interface_quality, 0);
    // All-down: the bond is up while one member is.
    let mut a = agent(&other_block());
    a.handle_host(1, bond_half_down());
    assert_eq!(a.status().me.interface_quality, 100);
}

#[test]
fn agents_built_from_two_members_blocks_talk_with_the_blocks_keys_and_mode() {
    let a_block = {
        let mut b = block();
        b.serial = serial("SN-A");
        b
    };
    let mut a = agent(&a_block);
    let mut b = agent(&block());
    let mut sent = 0;
    while let Some(o) = a.poll_output() {
        if let ha_agent::Output::Send { link, bytes } = o {
            assert_eq!(bytes[4] & 1, 1, "encrypt on: AEAD frames");
            b.handle_member_frame(1, link, &mut bytes.to_vec());
            sent += 1;
        }
    }
    assert_eq!(sent, 2, "one heartbeat on each of the two links");
    assert_eq!(b.status().counters.rejected_total(), 0);
    assert_eq!(b.status().counters.received, 2);
    let p = b.status().peer(&serial("SN-A")).unwrap();
    assert_eq!(p.index, 0, "member order from the block");
    assert_eq!(p.state, ha_agent::PeerState::Alive);
}
