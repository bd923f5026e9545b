//! Any bytes given to the state-sync decoders (`ha_dataplane::sync::wire`: the message of a
//! frame body and the records of a data message) and to a sync engine, both as a whole
//! datagram and as the body of a frame sealed by its peer and bound to its boot (so the
//! fuzzer reaches the admission rule, the reliable stream and the tables' API): typed
//! errors, no panic, and every message that parses emits within its `buffer_len` and parses
//! back to itself.
#![no_main]

use ha_dataplane::sync::{Records, SyncConfig, SyncEngine, SyncMsg};
use ha_dataplane::tables::{Limits, Tables};
use ha_proto::frame::{self, Header, MAX_FRAME_LEN, PROTOCOL_VERSION};
use ha_proto::keys::{KeySet, Psk};
use ha_proto::msg::{Channel, Serial};
use libfuzzer_sys::fuzz_target;

const CLUSTER: u32 = 0x2a2a;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = SyncMsg::parse(data) {
        let mut out = vec![0u8; m.buffer_len()];
        let n = m.emit(&mut out).expect("emit fits buffer_len");
        assert_eq!(n, out.len());
        assert_eq!(SyncMsg::parse(&out).as_ref(), Ok(&m));
        if let SyncMsg::Data { records, .. } = &m {
            records.iter().for_each(drop);
        }
    }
    Records(data.to_vec()).iter().for_each(drop);

    let keys = KeySet::derive(&Psk([7; 32]), CLUSTER, 1);
    let cfg = SyncConfig::new(CLUSTER, Serial([2; 16]), 200, keys.clone());
    // Small caps, so that refusals are reached too.
    let mut tables = Tables::with_limits(Limits::all(64));
    let mut engine = SyncEngine::new(cfg);
    engine.on_datagram(&mut tables, data, 1);
    let header = Header {
        version: PROTOCOL_VERSION,
        channel: Channel::StateSync,
        aead: false,
        key_id: 1,
        cluster_id: CLUSTER,
        sender: Serial([1; 16]),
        epoch: 100,
        peer_epoch: 200,
        seq: 1,
    };
    let mut frame_buf = vec![0u8; MAX_FRAME_LEN];
    if let Ok(n) = frame::seal(&keys, &header, data, &mut frame_buf) {
        engine.on_datagram(&mut tables, &frame_buf[..n], 2);
        let _ = engine.poll_transmit(&tables, 3);
        let _ = engine.poll_events();
    }
});
