//! A cheap monotonic clock for the call path.
//!
//! `std::time::Instant::now()` is a `clock_gettime` call, about 25 ns on a VM; `quanta` reads the
//! TSC where it can, several times cheaper. Times are handed out as `std::time::Instant` (the
//! process's first reading of both clocks plus the TSC's elapsed time), so the public types stay
//! standard. Differences between two readings of this clock are as exact as the TSC calibration;
//! against `Instant::now()` they agree within that calibration's drift.

use std::sync::OnceLock;
use std::time::Instant;

struct Anchor {
    clock: quanta::Clock,
    tsc: quanta::Instant,
    std: Instant,
}

fn anchor() -> &'static Anchor {
    static ANCHOR: OnceLock<Anchor> = OnceLock::new();
    ANCHOR.get_or_init(|| {
        let clock = quanta::Clock::new();
        let tsc = clock.now();
        Anchor {
            clock,
            tsc,
            std: Instant::now(),
        }
    })
}

/// Now, as a standard `Instant`.
pub(crate) fn now() -> Instant {
    let a = anchor();
    a.std + a.clock.now().saturating_duration_since(a.tsc)
}

/// Milliseconds since the process first read this clock.
pub(crate) fn now_ms() -> u64 {
    let a = anchor();
    a.clock.now().saturating_duration_since(a.tsc).as_millis() as u64
}

#[cfg(test)]
mod tests {
    #[test]
    fn agrees_with_std_and_moves_forward() {
        let a = super::now();
        let s = std::time::Instant::now();
        std::thread::sleep(std::time::Duration::from_millis(20));
        let b = super::now();
        assert!(b > a);
        let fast = b - a;
        let std = s.elapsed();
        // Both measured the same sleep; allow scheduling noise, not a different clock rate.
        assert!(fast >= std::time::Duration::from_millis(20), "{fast:?}");
        assert!(
            fast.abs_diff(std) < std::time::Duration::from_millis(15),
            "{fast:?} vs {std:?}"
        );
    }
}
