//! Capped exponential backoff with jitter, for reconnecting to the cloud. Pure: the caller supplies
//! the randomness, so the schedule is tested exactly.

use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    attempt: u32,
}

impl Backoff {
    pub fn new(initial: Duration, max: Duration) -> Self {
        Self {
            initial: initial.max(Duration::from_millis(1)),
            max: max.max(initial),
            attempt: 0,
        }
    }

    /// The next delay. `jitter` in `[0, 1)` spreads agents that lost the cloud at the same moment:
    /// the delay is half the capped exponential step plus up to another half at random ("equal
    /// jitter"), so it never collapses to zero.
    pub fn next_delay(&mut self, jitter: f64) -> Duration {
        let step = self
            .initial
            .saturating_mul(2u32.saturating_pow(self.attempt.min(31)))
            .min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = step / 2;
        half + half.mul_f64(jitter.clamp(0.0, 1.0))
    }

    /// After a connection that worked for a while, start again from the initial delay.
    pub fn reset(&mut self) {
        self.attempt = 0;
    }
}

/// A uniform value in `[0, 1)` from the operating system's generator.
pub fn random_jitter() -> f64 {
    let mut bytes = [0u8; 4];
    if getrandom::getrandom(&mut bytes).is_err() {
        return 0.5;
    }
    f64::from(u32::from_le_bytes(bytes)) / (f64::from(u32::MAX) + 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_jitter_stays_within_the_step() {
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let lows: Vec<_> = (0..9).map(|_| backoff.next_delay(0.0)).collect();
        assert_eq!(
            lows.iter().map(Duration::as_millis).collect::<Vec<_>>(),
            vec![250, 500, 1000, 2000, 4000, 8000, 15000, 15000, 15000]
        );
        let mut backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let highs: Vec<_> = (0..9).map(|_| backoff.next_delay(0.999_999)).collect();
        assert!(highs.iter().all(|delay| *delay <= Duration::from_secs(30)));
        assert!(highs[8] > Duration::from_millis(29_900));
    }

    #[test]
    fn reset_starts_over_and_many_attempts_do_not_overflow() {
        let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
        for _ in 0..1000 {
            backoff.next_delay(0.5);
        }
        assert!(backoff.next_delay(0.5) <= Duration::from_secs(5));
        backoff.reset();
        assert_eq!(backoff.next_delay(0.0), Duration::from_millis(50));
    }

    #[test]
    fn random_jitter_is_in_range() {
        for _ in 0..100 {
            let jitter = random_jitter();
            assert!((0.0..1.0).contains(&jitter));
        }
    }
}
