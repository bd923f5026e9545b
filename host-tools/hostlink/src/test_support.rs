//! Fixtures for the tests of this crate and of its users (feature `test-support`).

use ha_proto::config_block::{
    AggregateRule, ConfigBlock, DomainEntry, HwWeights, LinkAddr, MemberEntry, TimerProfile,
    DEFAULT_HA_PORT, DEFAULT_STATE_SYNC_PORT,
};
use ha_proto::keys::Psk;
use ha_proto::msg::Serial;

/// A strong test key (weak keys are refused where keys enter the system).
pub const TEST_KEY: [u8; 32] = [
    79, 204, 198, 15, 169, 100, 136, 208, 217, 2, 63, 218, 246, 12, 2, 121, 254, 18, 215, 194, 192,
    99, 229, 9, 42, 57, 169, 187, 79, 249, 188, 221,
];

fn serial(s: &str) -> Serial {
    Serial::new(s).expect("test serial")
}

/// A two-member block (SN-A, SN-B), this member SN-A, keyed with [`TEST_KEY`].
pub fn sample_cfg() -> ConfigBlock {
    let mut members = heapless::Vec::new();
    for (s, ip) in [("SN-A", [10, 0, 0, 1]), ("SN-B", [10, 0, 0, 2])] {
        members
            .push(MemberEntry {
                serial: serial(s),
                main_link: LinkAddr {
                    ip,
                    port: DEFAULT_HA_PORT,
                },
            })
            .expect("room");
    }
    let mut domains = heapless::Vec::new();
    domains
        .push(DomainEntry {
            id: 0,
            preferred: None,
        })
        .expect("room");
    ConfigBlock {
        serial: serial("SN-A"),
        cluster_id: 0xC0FFEE,
        key_id: 1,
        encrypt: false,
        members,
        backup_link: true,
        state_sync_port: DEFAULT_STATE_SYNC_PORT,
        timers: TimerProfile::Default,
        domains,
        aggregate: AggregateRule::AllDown,
        tpm_included: false,
        weights: HwWeights::default(),
        psk: Psk(TEST_KEY),
    }
}
