//! The 4 KiB configuration block, loaded by QEMU (`-device loader,addr=0x3F000`) or written
//! by the provisioning tool on a real board. The board only exposes the bytes; decoding and
//! the integrity check are `ha_proto::config_block`'s.

/// Address of the configuration block (must equal `ha_proto::config_block::FLASH_ADDR`; the
/// firmware checks this at compile time).
pub const CONFIG_BLOCK_ADDR: usize = 0x0003_F000;
/// Size of the configuration block.
pub const CONFIG_BLOCK_LEN: usize = 4096;

/// The raw bytes of the configuration block (all zeros or 0xFF when nothing was loaded).
pub fn config_block() -> &'static [u8] {
    // SAFETY: 0x3F000..0x40000 is inside ZBT SSRAM1 (always mapped on this board); memory.x
    // reserves it (CONFIG region), so no section of ours is placed there and nothing of ours
    // writes it: the bytes are valid and immutable for the program's lifetime.
    unsafe { core::slice::from_raw_parts(CONFIG_BLOCK_ADDR as *const u8, CONFIG_BLOCK_LEN) }
}
