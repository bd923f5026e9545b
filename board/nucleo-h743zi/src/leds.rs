//! The user LEDs LD1-LD3 (active high) as `embedded-hal` output pins: embassy-stm32's GPIO
//! `Output`, whose `OutputPin` error is `Infallible` like board/mps2-an385's.

use embassy_stm32::gpio::Output;

/// One LED.
pub type Led = Output<'static>;

/// The three user LEDs.
pub struct Leds {
    /// LD1 (green, PB0): the status LED.
    pub status: Led,
    /// LD2 (yellow, PE1): spare.
    pub yellow: Led,
    /// LD3 (red, PB14): spare.
    pub red: Led,
}
