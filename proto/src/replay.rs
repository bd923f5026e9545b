//! Replay protection: a sliding window per sender, channel and boot epoch.
//!
//! Rules (checked only after a frame authenticated):
//! - a frame of an epoch older than the newest seen from that sender is rejected
//!   ([`Error::StaleEpoch`]);
//! - a frame of a newer epoch (the sender rebooted) is accepted and restarts the window;
//! - within an epoch, a sequence number above the highest seen is accepted and slides the
//!   window; one within the last [`WINDOW`] numbers is accepted once; anything older, or seen
//!   before, is rejected ([`Error::Replay`]).

use heapless::Vec;

use crate::frame::{Error, Header};
use crate::ids::{Channel, Serial};

/// Width of the window, sequence numbers (at least 64 per SPEC A4; 128 tolerates the
/// reordering of a busy state-sync stream).
pub const WINDOW: u64 = 128;

/// Replay state of one sender (one channel).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReplayWindow {
    started: bool,
    epoch: u32,
    highest: u64,
    /// Bit i set: `highest - i` was received.
    seen: u128,
}

impl ReplayWindow {
    /// Checks `(epoch, seq)` without recording it.
    pub fn check(&self, epoch: u32, seq: u64) -> Result<(), Error> {
        if !self.started || epoch > self.epoch {
            return Ok(());
        }
        if epoch < self.epoch {
            return Err(Error::StaleEpoch);
        }
        if seq > self.highest {
            return Ok(());
        }
        let age = self.highest - seq;
        if age >= WINDOW || self.seen & (1u128 << age) != 0 {
            return Err(Error::Replay);
        }
        Ok(())
    }

    /// Checks `(epoch, seq)` and records it when accepted.
    pub fn check_and_record(&mut self, epoch: u32, seq: u64) -> Result<(), Error> {
        self.check(epoch, seq)?;
        if !self.started || epoch > self.epoch {
            *self = ReplayWindow {
                started: true,
                epoch,
                highest: seq,
                seen: 1,
            };
        } else if seq > self.highest {
            let shift = seq - self.highest;
            self.seen = if shift >= WINDOW {
                0
            } else {
                self.seen << shift
            } | 1;
            self.highest = seq;
        } else {
            self.seen |= 1u128 << (self.highest - seq);
        }
        Ok(())
    }

    /// Newest epoch seen, if any frame was accepted.
    pub fn epoch(&self) -> Option<u32> {
        self.started.then_some(self.epoch)
    }
}

/// Replay windows for up to `N` (sender, channel) pairs.
#[derive(Clone, Debug, Default)]
pub struct ReplayTable<const N: usize> {
    entries: Vec<(Serial, u8, ReplayWindow), N>,
}

impl<const N: usize> ReplayTable<N> {
    /// An empty table.
    pub const fn new() -> Self {
        Self {
            entries: Vec::new(),
        }
    }

    /// Checks an authenticated frame's header without recording it (window per sender and
    /// channel); [`ReplayTable::record`] records it once the frame is accepted.
    pub fn check(&self, header: &Header) -> Result<(), Error> {
        match self.find(header.sender, header.channel as u8) {
            Some(w) => w.check(header.epoch, header.seq),
            None if self.entries.is_full() => Err(Error::TableFull),
            None => Ok(()),
        }
    }

    /// Records an accepted frame's header (after [`ReplayTable::check`] passed).
    pub fn record(&mut self, header: &Header) -> Result<(), Error> {
        self.check_header(header)
    }

    fn find(&self, sender: Serial, ch: u8) -> Option<&ReplayWindow> {
        self.entries
            .iter()
            .find(|(s, c, _)| *s == sender && *c == ch)
            .map(|(_, _, w)| w)
    }

    /// Checks and records an authenticated frame's header (window per sender and channel).
    pub fn check_header(&mut self, header: &Header) -> Result<(), Error> {
        self.check_slot(
            header.sender,
            header.channel as u8,
            header.epoch,
            header.seq,
        )
    }

    /// Checks and records `(epoch, seq)` of `sender`, for receivers that accept a single
    /// channel from each sender.
    pub fn check_and_record(&mut self, sender: Serial, epoch: u32, seq: u64) -> Result<(), Error> {
        self.check_slot(sender, 0, epoch, seq)
    }

    fn check_slot(&mut self, sender: Serial, ch: u8, epoch: u32, seq: u64) -> Result<(), Error> {
        if let Some((_, _, w)) = self
            .entries
            .iter_mut()
            .find(|(s, c, _)| *s == sender && *c == ch)
        {
            return w.check_and_record(epoch, seq);
        }
        let mut w = ReplayWindow::default();
        w.check_and_record(epoch, seq)?;
        self.entries
            .push((sender, ch, w))
            .map_err(|_| Error::TableFull)
    }

    /// Forgets a sender (removed from the cluster).
    pub fn forget(&mut self, sender: Serial) {
        self.entries.retain(|(s, _, _)| *s != sender);
    }

    /// The window of a sender on a channel, if it sent anything.
    pub fn window(&self, sender: Serial, channel: Channel) -> Option<&ReplayWindow> {
        self.find(sender, channel as u8)
    }
}
