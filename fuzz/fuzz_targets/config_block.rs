//! Any bytes as a flash configuration block, raw and wrapped in a valid header and digest so
//! the fuzzer reaches the body decoder and the validation: typed errors, no panic; a block that
//! decodes re-encodes to a block that decodes again.
#![no_main]

use ha_proto::config_block::{ConfigBlock, BLOCK_SIZE, FORMAT_VERSION, MAGIC, MAX_BODY_LEN};
use libfuzzer_sys::fuzz_target;
use sha2::{Digest, Sha256};

fn check(bytes: &[u8]) {
    if let Ok(block) = ConfigBlock::decode(bytes) {
        let mut out = vec![0u8; BLOCK_SIZE];
        if let Ok(n) = block.encode(&mut out) {
            assert!(
                ConfigBlock::decode(&out[..n]).is_ok(),
                "a decoded block must re-encode to a valid block"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if !data.is_empty() && data.len() <= MAX_BODY_LEN {
        let mut block = Vec::with_capacity(8 + data.len() + 32);
        block.extend_from_slice(&MAGIC);
        block.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        block.extend_from_slice(&(data.len() as u16).to_le_bytes());
        block.extend_from_slice(data);
        let digest = Sha256::digest(&block);
        block.extend_from_slice(&digest);
        check(&block);
    }
});
