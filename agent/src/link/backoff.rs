//! Reconnect delays: exponential from 100 ms, doubling up to a cap, with full jitter.

use std::time::Duration;

/// The first delay's ceiling.
pub(crate) const BASE: Duration = Duration::from_millis(100);

/// Exponential backoff with full jitter: the n-th delay is uniform in
/// `[0, min(cap, BASE * 2^n))`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    cap: Duration,
    attempt: u32,
}

impl Backoff {
    pub(crate) fn new(cap: Duration) -> Self {
        Self {
            cap: cap.max(BASE),
            attempt: 0,
        }
    }

    /// The largest delay the next call to `next` can return.
    pub(crate) fn ceiling(&self) -> Duration {
        let factor = 1u32 << self.attempt.min(31);
        BASE.checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The upper bound of every delay.
    pub(crate) fn cap(&self) -> Duration {
        self.cap
    }

    /// The next delay for a uniform sample `unit` in `[0, 1)`; the ceiling then doubles.
    pub(crate) fn next_with(&mut self, unit: f64) -> Duration {
        let delay = self.ceiling().mul_f64(unit.clamp(0.0, 1.0));
        if self.ceiling() < self.cap {
            self.attempt += 1;
        }
        delay
    }

    /// The next delay, jittered with the thread's random generator.
    pub(crate) fn next(&mut self) -> Duration {
        self.next_with(rand::random::<f64>())
    }

    /// Back to the first, shortest delays (after a session that lasted).
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_millis(5000);

    #[test]
    fn ceiling_doubles_from_base_up_to_the_cap() {
        let mut b = Backoff::new(CAP);
        let ceilings: Vec<u128> = (0..10)
            .map(|_| {
                let c = b.ceiling().as_millis();
                b.next_with(0.5);
                c
            })
            .collect();
        assert_eq!(
            ceilings,
            [100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000, 5000]
        );
    }

    #[test]
    fn delays_are_jittered_within_the_ceiling_and_never_exceed_the_cap() {
        let mut b = Backoff::new(CAP);
        assert_eq!(b.next_with(0.0), Duration::ZERO);
        assert_eq!(b.next_with(0.5), Duration::from_millis(100));
        assert_eq!(b.next_with(1.0), Duration::from_millis(400));
        for _ in 0..1000 {
            assert!(b.next() <= CAP);
        }
        assert_eq!(b.next_with(1.0), CAP);
    }

    #[test]
    fn reset_starts_over_and_huge_attempt_counts_do_not_overflow() {
        let mut b = Backoff::new(Duration::from_secs(u64::MAX / 2));
        for _ in 0..100 {
            b.next_with(1.0);
        }
        assert!(b.ceiling() <= b.cap());
        b.reset();
        assert_eq!(b.ceiling(), BASE);
    }

    #[test]
    fn a_cap_below_base_is_raised_to_base() {
        assert_eq!(Backoff::new(Duration::from_millis(1)).cap(), BASE);
    }
}
