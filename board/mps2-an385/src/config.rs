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

/// Address of the boot epoch word (BOOTINFO in memory.x), just below the configuration block.
pub const BOOT_EPOCH_ADDR: usize = 0x0003_EFFC;

/// The boot epoch: a number that grows with every boot (a real board keeps a boot counter in
/// flash and increments it; under QEMU the harness loads one, e.g. Unix seconds minus 10^9).
/// `None` when nothing was loaded (the word reads 0 or erased).
pub fn boot_epoch() -> Option<u32> {
    // SAFETY: 0x3EFFC is inside ZBT SSRAM1 and reserved by memory.x (BOOTINFO); it is 4-byte
    // aligned and nothing of ours writes it.
    let v = unsafe { core::ptr::read_volatile(BOOT_EPOCH_ADDR as *const u32) };
    match v {
        0 | u32::MAX => None,
        v => Some(v),
    }
}
