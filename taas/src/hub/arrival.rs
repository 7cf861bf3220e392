//! Times for readings that carry none: the wall clock, kept strictly
//! increasing across a clock that steps back.
//!
//! Two messages in the same microsecond must not share a store key (one
//! would overwrite the other), so a time is always later than the last one
//! handed out. When the system clock steps back (NTP correcting a clock
//! that ran ahead), pinning every new time to "the last one plus a
//! microsecond" would squeeze the readings of the whole step into a few
//! microseconds. Instead the times slew: they go on at half the clock's
//! pace until the clock catches up, as `adjtime` slews a clock, so that
//! arrival order and the spacing of readings both survive, and the times
//! rejoin the clock after twice the step.

use parking_lot::Mutex;

use crate::Timestamp;

/// A step back larger than this is logged.
const STEP_WORTH_LOGGING_MICROS: u64 = 1_000_000;

#[derive(Debug, Default)]
pub(super) struct ArrivalClock {
    /// (the last time handed out, the wall clock when it was).
    last: Mutex<(u64, u64)>,
}

impl ArrivalClock {
    /// A time for a reading arriving at wall-clock time `now`.
    pub(super) fn stamp(&self, now: Timestamp) -> Timestamp {
        let now = now.0;
        let mut last = self.last.lock();
        let (last_time, last_wall) = *last;
        let time = if now > last_time {
            now
        } else {
            if now + STEP_WORTH_LOGGING_MICROS < last_wall {
                tracing::warn!(
                    back_secs = (last_wall - now) as f64 / 1e6,
                    "the system clock stepped back: reading times slew until it catches up"
                );
            }
            last_time + (now.saturating_sub(last_wall) / 2).max(1)
        };
        *last = (time, now);
        Timestamp(time)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000;

    #[test]
    fn follows_the_clock_and_never_repeats() {
        let clock = ArrivalClock::default();
        assert_eq!(clock.stamp(Timestamp(100 * SEC)), Timestamp(100 * SEC));
        assert_eq!(clock.stamp(Timestamp(100 * SEC)), Timestamp(100 * SEC + 1));
        assert_eq!(clock.stamp(Timestamp(100 * SEC)), Timestamp(100 * SEC + 2));
        assert_eq!(clock.stamp(Timestamp(101 * SEC)), Timestamp(101 * SEC));
    }

    #[test]
    fn a_step_back_slews_at_half_pace_until_the_clock_catches_up() {
        let clock = ArrivalClock::default();
        clock.stamp(Timestamp(1000 * SEC));
        // The clock steps back 60 s, then runs on: a reading each second.
        let mut times = vec![clock.stamp(Timestamp(940 * SEC)).0];
        for s in 1..=130 {
            times.push(clock.stamp(Timestamp((940 + s) * SEC)).0);
        }
        assert!(times.windows(2).all(|w| w[0] < w[1]), "in arrival order");
        // Spaced by half a second while ahead, not squeezed together.
        assert_eq!(times[11] - times[10], SEC / 2);
        // Caught up after twice the step: the clock's own time again.
        assert_eq!(*times.last().unwrap(), 1070 * SEC);
    }
}
