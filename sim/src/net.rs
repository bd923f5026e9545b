//! Simulated HA links.

use oorandom::Rand64;

/// Behaviour of one direction of one HA link between two members.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LinkParams {
    /// Fixed one-way delay, ms.
    pub delay_ms: u64,
    /// Extra uniform random delay 0..=jitter, ms (reorders frames).
    pub jitter_ms: u64,
    /// Probability a frame is lost.
    pub loss: f64,
    /// Probability a frame is delivered twice.
    pub dup: f64,
    /// Probability a frame is held back by an extra 0..=reorder_ms (reordering).
    pub reorder: f64,
    /// Most extra delay of a reordered frame, ms.
    pub reorder_ms: u64,
    /// Probability one byte of a frame is flipped (the receiver must reject it).
    pub corrupt: f64,
}

impl LinkParams {
    /// Largest one-way delay this link can produce, ms.
    pub fn max_delay(&self) -> u64 {
        self.delay_ms + self.jitter_ms + self.reorder_ms
    }

    /// The delivery times (0, 1 or 2 copies) of a frame sent at `now`, and whether to corrupt.
    pub fn deliveries(&self, rng: &mut Rand64, now: u64) -> ([Option<u64>; 2], bool) {
        let mut out = [None, None];
        if rng.rand_float() < self.loss {
            return (out, false);
        }
        let one = |rng: &mut Rand64| {
            let mut d = self.delay_ms + rng.rand_range(0..self.jitter_ms + 1);
            if rng.rand_float() < self.reorder {
                d += rng.rand_range(0..self.reorder_ms + 1);
            }
            now + d.max(1)
        };
        out[0] = Some(one(rng));
        if rng.rand_float() < self.dup {
            out[1] = Some(one(rng));
        }
        (out, rng.rand_float() < self.corrupt)
    }
}
