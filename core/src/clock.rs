//! A cheap monotonic clock for the call path.
//!
//! `std::time::Instant::now()` is a `clock_gettime` call, about 25 ns on a VM, and std's
//! `Instant` arithmetic normalises seconds and nanoseconds on every step. Gannet reads the TSC
//! through `quanta` where it can (a few instructions) and keeps the raw reading: a
//! [`Timestamp`] is converted to a duration or a `std::time::Instant` only when someone asks.
//! Where there is no usable TSC, `quanta` falls back to the OS's monotonic clock.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Anchor {
    clock: quanta::Clock,
    raw: u64,
    std: Instant,
    /// Nanoseconds per 2³² raw ticks: a difference of readings scales with one multiply
    /// (quanta's `delta` also matches on its clock kind and checks its calibration).
    ns_per_2_32_ticks: u64,
}

#[inline]
fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| {
        let clock = quanta::Clock::new();
        let raw = clock.raw();
        let ns_per_2_32_ticks = clock.delta_as_nanos(0, 1 << 32);
        Anchor {
            clock,
            raw,
            std: Instant::now(),
            ns_per_2_32_ticks,
        }
    })
}

/// A reading of Gannet's call clock, as [`CallStats`](crate::context::CallStats) records the
/// start and end of a call.
///
/// Taking one costs a few instructions; differences between two are as exact as the TSC's
/// calibration. [`to_instant`](Timestamp::to_instant) places it on the standard clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(u64);

impl Timestamp {
    /// Now.
    #[must_use]
    #[inline]
    pub fn now() -> Self {
        Self(anchor().clock.raw())
    }

    /// The time from `earlier` to `self`; zero if `earlier` is later.
    #[must_use]
    #[inline]
    pub fn saturating_duration_since(self, earlier: Timestamp) -> Duration {
        let ticks = self.0.saturating_sub(earlier.0);
        let ns = (u128::from(ticks) * u128::from(anchor().ns_per_2_32_ticks)) >> 32;
        Duration::from_nanos(u64::try_from(ns).unwrap_or(u64::MAX))
    }

    /// The time since `self`.
    #[must_use]
    pub fn elapsed(self) -> Duration {
        Self::now().saturating_duration_since(self)
    }

    /// The same moment as a standard `Instant` (agrees with `Instant::now()` within the TSC
    /// calibration's drift).
    #[must_use]
    pub fn to_instant(self) -> Instant {
        let a = anchor();
        a.std + a.clock.delta(a.raw, self.0)
    }
}

/// Milliseconds since the process first read this clock.
pub(crate) fn now_ms() -> u64 {
    let a = anchor();
    a.clock.delta_as_nanos(a.raw, a.clock.raw()) / 1_000_000
}

#[cfg(test)]
mod tests {
    use super::Timestamp;
    use std::time::Duration;

    #[test]
    fn agrees_with_std_and_moves_forward() {
        let a = Timestamp::now();
        let s = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let b = Timestamp::now();
        assert!(b > a);
        let fast = b.saturating_duration_since(a);
        let std = s.elapsed();
        // Both measured the same sleep; allow scheduling noise, not a different clock rate.
        assert!(fast >= Duration::from_millis(20), "{fast:?}");
        assert!(
            fast.abs_diff(std) < Duration::from_millis(15),
            "{fast:?} vs {std:?}"
        );
        assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
        // On the standard clock the two readings are as far apart, and not in the future.
        let (ia, ib) = (a.to_instant(), b.to_instant());
        assert!(ib.duration_since(ia).abs_diff(fast) < Duration::from_micros(10));
        assert!(ib <= std::time::Instant::now() + Duration::from_millis(5));
    }

    #[test]
    fn durations_scale_like_quanta_over_short_and_long_spans() {
        let a = super::anchor();
        for ticks in [1u64, 1_000, 1_000_000, 1_000_000_000, 1_000_000_000_000] {
            let start = Timestamp(a.raw);
            let end = Timestamp(a.raw + ticks);
            let ours = end.saturating_duration_since(start);
            let quanta = a.clock.delta(a.raw, a.raw + ticks);
            assert!(
                ours.abs_diff(quanta) <= Duration::from_micros(1),
                "{ticks} ticks: {ours:?} vs {quanta:?}"
            );
        }
    }

    #[test]
    fn milliseconds_advance() {
        let a = super::now_ms();
        std::thread::sleep(Duration::from_millis(12));
        assert!(super::now_ms() >= a + 10);
    }
}
