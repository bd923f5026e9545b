//! The ARMv7-M MPU's stack guard: a small region at the bottom of the stack that nothing
//! may read, write or execute, so that a stack overflow faults (MemManage, escalated to
//! HardFault) instead of writing past the stack. Hand-written: `cortex-m` gives the MPU's
//! registers but no region encoding, and this is the one region the firmware needs.
//!
//! The guard is one region with every other address left to the default memory map
//! (`PRIVDEFENA`): the firmware runs privileged, so nothing else changes.

/// Offsets of the MPU's registers from `0xE000_ED90` (ARMv7-M ARM, B3.5).
pub mod reg {
    /// MPU_TYPE: DREGION (bits 15:8) counts the data regions; 0 means no MPU.
    pub const TYPE: usize = 0x00;
    /// MPU_CTRL: ENABLE (bit 0), HFNMIENA (bit 1), PRIVDEFENA (bit 2).
    pub const CTRL: usize = 0x04;
    /// MPU_RBAR: region base address, VALID (bit 4), REGION (bits 3:0).
    pub const RBAR: usize = 0x0C;
    /// MPU_RASR: XN (28), AP (26:24), TEX/S/C/B, SRD, SIZE (5:1), ENABLE (0).
    pub const RASR: usize = 0x10;
}

/// MPU_CTRL: the MPU on, the default memory map for privileged accesses elsewhere.
pub const CTRL_ENABLE_PRIVDEFENA: u32 = 1 | (1 << 2);

/// Why a guard cannot be set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GuardError {
    /// The core has no MPU (MPU_TYPE.DREGION is 0).
    NoMpu,
    /// The size is not a power of two from 32 bytes up.
    BadSize(u32),
    /// The base is not aligned to the size (a region's base must be).
    Unaligned(u32),
}

/// The MPU_RBAR and MPU_RASR values of region `region`: `size` bytes from `base`, no
/// access at any privilege, never executed.
pub fn guard_region(base: u32, size: u32, region: u8) -> Result<(u32, u32), GuardError> {
    if size < 32 || !size.is_power_of_two() {
        return Err(GuardError::BadSize(size));
    }
    if base & (size - 1) != 0 {
        return Err(GuardError::Unaligned(base));
    }
    // SIZE encodes 2^(SIZE+1) bytes.
    let size_field = size.trailing_zeros() - 1;
    let rbar = base | (1 << 4) | u32::from(region & 0xF);
    // XN, AP = 0b000 (no access), TEX/S/C/B = 0 (strongly ordered: never cached), ENABLE.
    let rasr = (1 << 28) | (size_field << 1) | 1;
    Ok((rbar, rasr))
}

/// Sets the guard as region 0 through `regs` (the MPU's registers at `0xE000_ED90`) and
/// turns the MPU on. The caller then issues DSB and ISB.
pub fn set_guard(regs: &mut impl crate::Regs, base: u32, size: u32) -> Result<(), GuardError> {
    if (regs.read(reg::TYPE) >> 8) & 0xFF == 0 {
        return Err(GuardError::NoMpu);
    }
    let (rbar, rasr) = guard_region(base, size, 0)?;
    regs.write(reg::CTRL, 0);
    regs.write(reg::RBAR, rbar);
    regs.write(reg::RASR, rasr);
    regs.write(reg::CTRL, CTRL_ENABLE_PRIVDEFENA);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// The MPU's registers, with a DREGION count and a log of the writes.
    struct Mpu {
        dregion: u32,
        writes: Vec<(usize, u32)>,
    }

    impl crate::Regs for Mpu {
        fn read(&mut self, offset: usize) -> u32 {
            match offset {
                reg::TYPE => self.dregion << 8,
                _ => 0,
            }
        }
        fn write(&mut self, offset: usize, value: u32) {
            self.writes.push((offset, value));
        }
    }

    #[test]
    fn a_32_byte_guard_at_the_bottom_of_ram_is_encoded_as_the_architecture_says() {
        // SIZE 4 (2^5 bytes), XN, AP no access, VALID, region 0.
        assert_eq!(
            guard_region(0x2000_0000, 32, 0),
            Ok((0x2000_0010, 0x1000_0009))
        );
        assert_eq!(
            guard_region(0x2400_0000, 256, 3),
            Ok((0x2400_0013, 0x1000_000F))
        );
    }

    #[test]
    fn sizes_and_bases_the_mpu_cannot_express_are_refused() {
        assert_eq!(guard_region(0, 16, 0), Err(GuardError::BadSize(16)));
        assert_eq!(guard_region(0, 48, 0), Err(GuardError::BadSize(48)));
        assert_eq!(
            guard_region(0x2000_0020, 64, 0),
            Err(GuardError::Unaligned(0x2000_0020))
        );
    }

    #[test]
    fn the_region_is_written_with_the_mpu_off_and_then_turned_on() {
        let mut m = Mpu {
            dregion: 8,
            writes: Vec::new(),
        };
        set_guard(&mut m, 0x2000_0000, 32).unwrap();
        assert_eq!(
            m.writes,
            [
                (reg::CTRL, 0),
                (reg::RBAR, 0x2000_0010),
                (reg::RASR, 0x1000_0009),
                (reg::CTRL, 0b101),
            ]
        );
    }

    #[test]
    fn a_core_without_an_mpu_is_told_and_left_alone() {
        let mut m = Mpu {
            dregion: 0,
            writes: Vec::new(),
        };
        assert_eq!(set_guard(&mut m, 0x2000_0000, 32), Err(GuardError::NoMpu));
        assert!(m.writes.is_empty());
    }
}
