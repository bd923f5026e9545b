//! Board support for QEMU `mps2-an385` (ARM AN385: Cortex-M3 at 25 MHz, CMSDK peripherals,
//! LAN9118 Ethernet). Drivers only; the HA protocol lives in `ha-proto` / `ha-agent` and the
//! wiring in the firmware binary.
//!
//! Memory map used (from QEMU's `hw/arm/mps2.c` and AN385):
//!
//! | address       | device                          | IRQ (RX, TX)   |
//! |---------------|---------------------------------|----------------|
//! | `0x0000_0000` | code (ZBT SSRAM1), 252 KiB used | -              |
//! | `0x0003_F000` | configuration block (4 KiB)     | -              |
//! | `0x2000_0000` | RAM (ZBT SSRAM2), 64 KiB used   | -              |
//! | `0x4000_0000` | CMSDK TIMER0: time alarm        | 8              |
//! | `0x4000_1000` | CMSDK TIMER1: time base         | 9              |
//! | `0x4000_4000` | UART0: defmt log                | 0, 1           |
//! | `0x4000_5000` | UART1: host link                | 2, 3           |
//! | `0x4000_6000` | UART2: backup HA link           | 4, 5           |
//! | `0x4000_7000` | UART3: sensor bridge            | 18, 19         |
//! | `0x4002_8000` | FPGAIO: LEDs (bit 0 = status)   | -              |
//! | `0x4020_0000` | LAN9118 Ethernet                | 13             |
#![no_std]
#![warn(missing_docs)]

// The small memcpy / memmove (flash): the crate only defines symbols, nothing to call.
use ha_board_mem as _;

pub mod config;
pub mod eth;
pub mod executor;
pub mod irq;
pub mod leds;
pub mod logger;
pub mod sensors;
pub mod time;
pub mod uart;
pub mod vectors;

/// System clock of the AN385 image (peripheral clock of the timers and UARTs), Hz.
pub const SYSCLK_HZ: u32 = 25_000_000;

/// The board's devices, handed out once by [`init`].
pub struct Board {
    /// UART1, the host link to the main CPU.
    pub host_uart: uart::Uart,
    /// UART2, the backup HA link.
    pub backup_uart: uart::Uart,
    /// UART3: the sensor bridge from the board simulator.
    pub sensors: sensors::SensorBridge,
    /// The FPGAIO LEDs.
    pub leds: leds::Leds,
}

/// Brings the board up: UART0 for the log, the time driver, the UARTs with receive
/// interrupts, and returns the devices. Returns `None` when called a second time.
pub fn init() -> Option<Board> {
    static TAKEN: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);
    if TAKEN.swap(true, core::sync::atomic::Ordering::AcqRel) {
        return None;
    }
    uart::init_log_uart();
    stack::guard();
    time::init();
    Some(Board {
        host_uart: uart::Uart::init(uart::Port::Uart1),
        backup_uart: uart::Uart::init(uart::Port::Uart2),
        sensors: sensors::SensorBridge::new(uart::Uart::init(uart::Port::Uart3).split().0),
        leds: leds::Leds::new(),
    })
}

/// Stack usage, from the pattern cortex-m-rt paints over the stack at reset, and the guard
/// below it.
pub mod stack {
    use ha_board_drivers::mpu;

    extern "C" {
        static _stack_start: u32;
        static _stack_end: u32;
    }

    /// Bytes at the bottom of the stack that the MPU forbids ([`guard`]).
    pub const GUARD: usize = 32;

    /// The MPU's registers (`0xE000_ED90`).
    struct Mpu;

    impl ha_board_drivers::Regs for Mpu {
        fn read(&mut self, reg: usize) -> u32 {
            // SAFETY: the MPU's registers are in the System Control Space, always mapped;
            // `reg` is one of their offsets. Reads have no side effect.
            unsafe { core::ptr::read_volatile((0xE000_ED90 + reg) as *const u32) }
        }

        fn write(&mut self, reg: usize, value: u32) {
            // SAFETY: as in `read`; only `guard` writes them, once, at boot.
            unsafe { core::ptr::write_volatile((0xE000_ED90 + reg) as *mut u32, value) }
        }
    }

    /// Makes the lowest [`GUARD`] bytes of the stack a region nothing may touch: an overflow
    /// faults there. The stack sits at the bottom of RAM, but on this board what lies below
    /// does not fault: QEMU takes writes there as an unimplemented device's and the guest
    /// went on with its stack in nowhere (found by the driver test's first version, which
    /// overflowed and hung without a word). Logged, and skipped on a core without an MPU.
    pub fn guard() {
        let (_, end) = bounds();
        // The stack's end is 32-byte aligned (memory.x): the one refusal is a core
        // without an MPU.
        if mpu::set_guard(&mut Mpu, end as u32, GUARD as u32).is_ok() {
            cortex_m::asm::dsb();
            cortex_m::asm::isb();
            defmt::info!("stack guard: the lowest 32 bytes of the stack (memory.x) fault");
        } else {
            defmt::warn!("stack guard not set: no MPU");
        }
    }

    // The HardFault handler. A fault with the stack pointer in the guard cannot push a
    // thing, so the handler first moves MSP back to the top of the stack (the faulted code
    // never resumes: the core stops, as after a panic) and only then calls Rust. Assembly
    // because no Rust function can be trusted not to push before its first statement.
    core::arch::global_asm!(
        ".section .text.HardFault, \"ax\"",
        ".global HardFault",
        ".type HardFault, %function",
        ".thumb_func",
        "HardFault:",
        "ldr r0, =_stack_start",
        "msr msp, r0",
        "b {report}",
        report = sym hard_fault_report,
    );

    /// Logs the fault's status (CFSR: `MSTKERR`, bit 4, is a stack overflow into the guard
    /// during an exception's entry, `DACCVIOL`, bit 1, one in thread code; MMFAR: the
    /// address) and stops the core: the peers take over from a member that went silent.
    extern "C" fn hard_fault_report() -> ! {
        // SAFETY: the SCB's fault status registers, always mapped, read only.
        let (cfsr, mmfar) = unsafe {
            (
                core::ptr::read_volatile(0xE000_ED28 as *const u32),
                core::ptr::read_volatile(0xE000_ED34 as *const u32),
            )
        };
        defmt::error!(
            "HardFault: CFSR {=u32:#x} MMFAR {=u32:#x}; the core stops",
            cfsr,
            mmfar
        );
        loop {
            cortex_m::asm::wfi();
        }
    }

    /// Bytes of stack reserved (memory.x).
    pub fn size() -> usize {
        let (start, end) = bounds();
        start - end
    }

    fn bounds() -> (usize, usize) {
        // Linker symbols defined in memory.x; only their addresses are taken (no read).
        (
            core::ptr::addr_of!(_stack_start) as usize,
            core::ptr::addr_of!(_stack_end) as usize,
        )
    }

    /// Deepest stack use so far (bytes): the stack grows down from `_stack_start`; words
    /// never written still hold cortex-m-rt's paint value. The guard is not read (it
    /// faults); a stack that reached it faulted.
    pub fn high_water() -> usize {
        let (start, end) = bounds();
        let mut addr = end + GUARD;
        while addr < start {
            // SAFETY: `addr` is a word-aligned address inside the stack region reserved by
            // memory.x, which is always mapped RAM.
            let w = unsafe { core::ptr::read_volatile(addr as *const u32) };
            if w != cortex_m_rt::STACK_PAINT_VALUE {
                break;
            }
            addr += 4;
        }
        start - addr
    }
}
