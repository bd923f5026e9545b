//! An optional agent-clock time in 8 bytes: `Option<u64>` takes 16 on a Cortex-M (the tag
//! is padded to the u64's alignment), and the agent keeps a few per domain and per peer.

/// A time (agent clock, ms), or none. `u64::MAX` stands for none: the agent clock never
/// reaches it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Stamp(u64);

impl Stamp {
    /// No time.
    pub(crate) const NONE: Stamp = Stamp(u64::MAX);

    /// The time `t` (`u64::MAX` reads back as none).
    pub(crate) const fn at(t: u64) -> Stamp {
        Stamp(t)
    }

    /// The time, if any.
    pub(crate) const fn get(self) -> Option<u64> {
        if self.0 == u64::MAX {
            None
        } else {
            Some(self.0)
        }
    }

    /// True when no time is held.
    pub(crate) const fn is_none(self) -> bool {
        self.0 == u64::MAX
    }
}
