//! The 4 KiB configuration block in flash (bank 2, sector 7, reserved by memory.x), written
//! by `hactl provision` and flashed with probe-rs (see README). The board only exposes the
//! bytes; decoding and the integrity check are `ha_proto::config_block`'s.

/// Address of the configuration block: the start of the last 128 KiB flash sector, so that
/// rewriting it erases nothing else. (QEMU's board loads it at
/// `ha_proto::config_block::FLASH_ADDR`; this board has no flash there.)
pub const CONFIG_BLOCK_ADDR: usize = 0x081E_0000;
/// Size of the configuration block.
pub const CONFIG_BLOCK_LEN: usize = 4096;

/// The raw bytes of the configuration block (all 0xFF while nothing was flashed there).
pub fn config_block() -> &'static [u8] {
    // SAFETY: 0x081E_0000..+4 KiB is internal flash (always mapped, read-only while nothing
    // programs it); memory.x reserves the sector (CONFIG), so no section of ours is placed
    // there and nothing of ours writes it: the bytes are valid and immutable for the program's
    // lifetime.
    unsafe { core::slice::from_raw_parts(CONFIG_BLOCK_ADDR as *const u8, CONFIG_BLOCK_LEN) }
}

/// The boot epoch: the persistent boot counter, incremented once per boot by
/// [`crate::init`] (see [`crate::bootcount`]). `None` before `init`, or when the counter
/// could not be written (the firmware then refuses to start rather than reuse an epoch).
pub fn boot_epoch() -> Option<u32> {
    crate::bootcount::epoch()
}
