//! The persistent boot counter: the boot epoch every member frame carries must grow with
//! every boot (a reused epoch would make this boot's frames look like replays), so it is kept
//! in flash and incremented once per boot by [`crate::init`].
//!
//! Written by hand: no crate keeps a counter in the STM32H7's flash, whose 32-byte flash
//! words can each be programmed once between two erases of their 128 KiB sector (the
//! programming itself is embassy-stm32's flash driver).
//!
//! Layout: two sectors (memory.x `BOOTCOUNT`), each a log of 32-byte slots; a slot holds the
//! count and its complement (little-endian u32 each), the rest stays erased. The current
//! count is the highest valid slot of either sector; the next one goes into the first free
//! slot after it. When that sector is full, the other one is erased and the count continues
//! there, so a power cut at any point leaves the highest count in flash (a slot cut while
//! being programmed fails its complement check and is skipped). 4,096 boots fit a sector;
//! the sectors see one erase every 4,096 boots (the flash is rated for 10,000 cycles).
//!
//! Not covered: the STM32H7 checks every flash word's ECC on read, and a word whose
//! programming or erase was cut by a power loss may fail it; reading it then raises a bus
//! fault, at every boot, until the sector is erased (with probe-rs). The window is about
//! 100 µs per boot (one slot programmed) and the sector erase every 4,096 boots.

use core::sync::atomic::{AtomicU32, Ordering};

use embassy_stm32::flash::{self, Blocking, Flash, WRITE_SIZE};

/// The two sectors, as offsets from the start of flash (0x0800_0000): memory.x `BOOTCOUNT`,
/// bank 2 sectors 5 and 6.
const SECTORS: [u32; 2] = [0x1A_0000, 0x1C_0000];
/// Size of one sector.
const SECTOR_SIZE: u32 = 128 * 1024;
/// One slot: one flash word.
const SLOT: u32 = WRITE_SIZE as u32;
/// Slots per sector.
const SLOTS: u32 = SECTOR_SIZE / SLOT;

/// This boot's epoch; 0 until [`init`] stored it (0 is never a count).
static EPOCH: AtomicU32 = AtomicU32::new(0);

/// Why the counter could not be advanced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, defmt::Format)]
pub enum BootCountError {
    /// The flash driver failed (read, program or erase).
    Flash(flash::Error),
    /// The count reached `u32::MAX` (four billion boots).
    Exhausted,
}

impl From<flash::Error> for BootCountError {
    fn from(e: flash::Error) -> Self {
        BootCountError::Flash(e)
    }
}

/// This boot's epoch, once [`init`] advanced the counter.
pub fn epoch() -> Option<u32> {
    match EPOCH.load(Ordering::Acquire) {
        0 => None,
        v => Some(v),
    }
}

/// Advances the counter and records this boot's epoch; on failure the epoch stays unset
/// (the firmware then refuses to start) and the error is logged.
pub(crate) fn init(mut flash: Flash<'static, Blocking>) {
    match advance(&mut flash) {
        Ok(v) => EPOCH.store(v, Ordering::Release),
        Err(e) => defmt::error!("boot counter: {}", e),
    }
}

/// What one sector holds.
struct Scan {
    /// Its highest valid count (0 when it has none).
    last: u32,
    /// Its first erased slot ([`SLOTS`] when full).
    free: u32,
}

fn scan(flash: &mut Flash<'static, Blocking>, sector: u32) -> Result<Scan, BootCountError> {
    let mut last = 0;
    for i in 0..SLOTS {
        let mut w = [0u8; 8];
        flash.blocking_read(sector + i * SLOT, &mut w)?;
        if w == [0xFF; 8] {
            return Ok(Scan { last, free: i });
        }
        let count = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let check = u32::from_le_bytes([w[4], w[5], w[6], w[7]]);
        if count == !check {
            last = last.max(count);
        }
    }
    Ok(Scan { last, free: SLOTS })
}

/// Writes the next count and returns it.
fn advance(flash: &mut Flash<'static, Blocking>) -> Result<u32, BootCountError> {
    let scans = [scan(flash, SECTORS[0])?, scan(flash, SECTORS[1])?];
    let cur = usize::from(scans[1].last > scans[0].last);
    let next = scans[cur]
        .last
        .checked_add(1)
        .ok_or(BootCountError::Exhausted)?;
    let (sector, slot) = if scans[cur].free < SLOTS {
        (SECTORS[cur], scans[cur].free)
    } else {
        // Full: continue in the other sector, erased first. The full one keeps the count
        // until a slot of the other holds the next one.
        let other = SECTORS[1 - cur];
        flash.blocking_erase(other, other + SECTOR_SIZE)?;
        (other, 0)
    };
    let mut word = [0xFFu8; WRITE_SIZE];
    word[..4].copy_from_slice(&next.to_le_bytes());
    word[4..8].copy_from_slice(&(!next).to_le_bytes());
    flash.blocking_write(sector + slot * SLOT, &word)?;
    Ok(next)
}
