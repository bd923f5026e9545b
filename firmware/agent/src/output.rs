//! What the agent asks its shell to do.

use ha_proto::frame::MAX_FRAME_LEN;
use ha_proto::msg::host::HostMsg;
use heapless::Vec;

use crate::event::Event;
use crate::link::LinkId;

/// Status LED pattern (SPEC E4).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LedPattern {
    /// Off: disabled.
    Off,
    /// Steady on: active in at least one domain.
    Steady,
    /// Blinking: passive (1 s on, 2 s off) or starting (100 ms on, 100 ms off).
    Blink {
        /// On time, ms.
        on_ms: u16,
        /// Off time, ms.
        off_ms: u16,
    },
}

impl LedPattern {
    /// The passive member's blink.
    pub const PASSIVE: LedPattern = LedPattern::Blink {
        on_ms: 1000,
        off_ms: 2000,
    };
    /// The blink while starting.
    pub const STARTING: LedPattern = LedPattern::Blink {
        on_ms: 100,
        off_ms: 100,
    };
}

/// One action for the shell.
#[allow(clippy::large_enum_variant)] // a frame or a host message by value: no heap to box into
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Send this sealed frame on `link` to every peer on it (UDP to each peer's address on
    /// the main link; the serial line on the backup link).
    Send {
        /// The link.
        link: LinkId,
        /// The sealed frame.
        bytes: Vec<u8, MAX_FRAME_LEN>,
    },
    /// Send this message to the main CPU on the host link (the shell seals it).
    Host(HostMsg),
    /// Set the status LED.
    Led(LedPattern),
    /// An event (also kept in `Agent::events`).
    Event(Event),
}
