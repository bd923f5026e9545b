//! The board this binary is built for, chosen by one cargo feature (`mps2-an385`, the
//! default, or `nucleo-h743zi`; see Cargo.toml). This file is the only place of the firmware
//! that names boards: both board crates offer the same modules (`init`, `uart`, `leds`,
//! `sensors`, `eth`, `config`, `executor`, `stack`), reached as `ha_board::…` (main.rs
//! renames the chosen crate to that), and what differs is given a common name here.

#[cfg(all(feature = "mps2-an385", feature = "nucleo-h743zi"))]
compile_error!("choose one board: `--no-default-features --features nucleo-h743zi`");
#[cfg(not(any(feature = "mps2-an385", feature = "nucleo-h743zi")))]
compile_error!("choose a board feature: mps2-an385 or nucleo-h743zi");

/// The board's name (logged at boot, reported by the agent).
#[cfg(feature = "mps2-an385")]
pub const NAME: &str = "mps2-an385";
/// The board's Ethernet device, as embassy-net drives it.
#[cfg(feature = "mps2-an385")]
pub use ha_board::eth::Lan9118 as EthDriver;
// QEMU loads the configuration block where the protocol says it is (`ha_qemu`, `hactl`).
#[cfg(feature = "mps2-an385")]
const _: () =
    assert!(ha_board::config::CONFIG_BLOCK_ADDR as u32 == ha_proto::config_block::FLASH_ADDR);

/// The board's name (logged at boot, reported by the agent).
#[cfg(feature = "nucleo-h743zi")]
pub const NAME: &str = ha_board::NAME;
/// The board's Ethernet device, as embassy-net drives it.
#[cfg(feature = "nucleo-h743zi")]
pub use ha_board::eth::Stm32Eth as EthDriver;
