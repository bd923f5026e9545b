//! The arithmetic of a time driver built on two down-counting hardware timers (as a Cortex-M
//! board's CMSDK or SysTick-style timers count): one free-running, whose wraps an interrupt
//! counts, gives the time; the other, loaded with the cycles to the next deadline, is the
//! alarm. Pure functions, so that the cases a board cannot easily produce on demand (a wrap
//! whose interrupt is late, a deadline beyond one counter period, a deadline already past)
//! are tested on the host; the board crate reads and writes the registers.

/// The free-running counter as read in one critical section: the wraps its interrupt counted,
/// the value read first, whether a wrap is pending (interrupt flag set, handler not run yet),
/// and the value read after seeing that flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CounterRead {
    /// Wraps counted by the interrupt handler.
    pub wraps: u32,
    /// The counter's value, read first.
    pub value: u32,
    /// The wrap interrupt flag, read after `value`.
    pub wrap_pending: bool,
    /// The counter's value read again after the flag (used when the flag is set).
    pub value_after: u32,
}

/// Ticks since the counter started, from a [`CounterRead`] of a counter that counts down from
/// `u32::MAX` and reloads it, `cycles_per_tick` counter cycles per tick. A pending wrap
/// counts (its handler is late, the wrap happened) and then only the value read after the
/// flag is trusted: the first one may be from before or after the wrap.
pub const fn ticks(r: CounterRead, cycles_per_tick: u64) -> u64 {
    let (wraps, value) = if r.wrap_pending {
        (r.wraps.wrapping_add(1), r.value_after)
    } else {
        (r.wraps, r.value)
    };
    let cycles = ((wraps as u64) << 32) | (u32::MAX - value) as u64;
    cycles / cycles_per_tick
}

/// The cycles to load into the one-shot alarm counter for a deadline at tick `at` when it is
/// tick `now`; `None` when the deadline is not in the future (the caller handles it now). A
/// deadline beyond one counter period is capped at `u32::MAX` cycles: the alarm fires early
/// and the handler arms the rest.
pub fn alarm_cycles(now: u64, at: u64, cycles_per_tick: u64) -> Option<u32> {
    if at <= now {
        return None;
    }
    let cycles = (at - now).saturating_mul(cycles_per_tick);
    Some(u32::try_from(cycles).unwrap_or(u32::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 25 MHz counter, 1 µs ticks (the mps2-an385 board's).
    const CPT: u64 = 25;

    fn read(wraps: u32, value: u32, wrap_pending: bool, value_after: u32) -> CounterRead {
        CounterRead {
            wraps,
            value,
            wrap_pending,
            value_after,
        }
    }

    #[test]
    fn time_goes_on_across_a_wrap_whatever_the_handler_did() {
        let before = ticks(read(3, 10, false, 10), CPT);
        // The counter wrapped; the handler has not run: the flag says so, the value read
        // first may be from before the wrap (10) or after (u32::MAX - 5).
        let late_a = ticks(read(3, 10, true, u32::MAX - 5), CPT);
        let late_b = ticks(read(3, u32::MAX - 5, true, u32::MAX - 6), CPT);
        // The handler ran.
        let after = ticks(read(4, u32::MAX - 7, false, u32::MAX - 7), CPT);
        assert!(before < late_a && late_a <= late_b && late_b <= after);
        assert!(late_a - before <= 1, "16 cycles later: within a tick or so");
        // Exact arithmetic: 4 full periods plus 7 cycles.
        assert_eq!(after, ((4u64 << 32) + 7) / CPT);
    }

    #[test]
    fn a_wrap_seen_without_the_flag_is_never_counted_twice() {
        // The handler counted the wrap and cleared the flag: no extra period.
        let t = ticks(read(1, u32::MAX, false, 0), CPT);
        assert_eq!(t, (1u64 << 32) / CPT);
    }

    #[test]
    fn the_time_is_exact_for_the_whole_life_of_the_counter() {
        let t = ticks(read(u32::MAX, 0, false, 0), CPT);
        assert_eq!(t, u64::MAX / CPT);
    }

    #[test]
    fn an_alarm_is_armed_for_its_cycles_now_for_the_past_and_early_for_far_deadlines() {
        assert_eq!(alarm_cycles(1_000, 1_010, CPT), Some(250));
        assert_eq!(alarm_cycles(1_000, 1_000, CPT), None, "due now");
        assert_eq!(alarm_cycles(1_000, 999, CPT), None, "past");
        // 200 s at 25 MHz is more than one period (171.8 s): capped, re-armed later.
        assert_eq!(alarm_cycles(0, 200_000_000, CPT), Some(u32::MAX));
        // "No deadline" (u64::MAX ticks) does not overflow.
        assert_eq!(alarm_cycles(5, u64::MAX, CPT), Some(u32::MAX));
    }
}
