//! The host link's round trip as the keepalives measure it (a ping sent → its pong back
//! through the controller). Every role change and probe answer crosses the same line, so
//! this is the floor of a takeover's host-link part; the metrics endpoint shows it.

use std::time::Instant;

/// The last and the longest keepalive round trip since the daemon started, µs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostRtt {
    /// The last one.
    pub last_us: u64,
    /// The longest one.
    pub max_us: u64,
}

impl HostRtt {
    /// Records in `rtt` the round trip of the keepalive sent at `sent` and answered now.
    pub fn note(rtt: &mut Option<HostRtt>, sent: Option<Instant>) {
        let us = sent.map_or(0, |t| t.elapsed().as_micros() as u64);
        let max_us = rtt.map_or(us, |r| r.max_us.max(us));
        *rtt = Some(HostRtt {
            last_us: us,
            max_us,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_longest_is_kept_the_last_is_replaced() {
        let mut r = None;
        let now = Instant::now();
        HostRtt::note(&mut r, now.checked_sub(Duration::from_millis(9)));
        HostRtt::note(&mut r, Some(Instant::now()));
        let r = r.unwrap();
        assert!(r.max_us >= 9_000 && r.last_us < 9_000, "{r:?}");
    }
}
