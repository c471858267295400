//! Random pauses: the OS's CSPRNG, and decorrelated jitter for waiters.

use std::time::Duration;

/// A uniformly random duration in `[low, high)` (`low` when empty), from
/// the OS's CSPRNG.
pub fn random_between(low: Duration, high: Duration) -> Duration {
    let span = high.saturating_sub(low).as_micros() as u64;
    let r = getrandom::u64().unwrap_or(0);
    low + Duration::from_micros(if span == 0 { 0 } else { r % span })
}

/// Decorrelated jitter: each pause is random between `base` and three times
/// the last one, capped. Waiters polling one key spread out instead of
/// arriving together.
pub struct Backoff {
    base: Duration,
    last: Duration,
}

impl Backoff {
    /// Pauses from `base` up.
    pub fn new(base: Duration) -> Self {
        Backoff { base, last: base }
    }

    /// The next pause, at most `cap`.
    pub fn next(&mut self, cap: Duration) -> Duration {
        self.last = random_between(self.base, self.last * 3).min(cap);
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_between_base_and_cap_and_spreads_above_the_base() {
        let mut b = Backoff::new(Duration::from_millis(1));
        let pauses: Vec<Duration> = (0..50).map(|_| b.next(Duration::from_millis(40))).collect();
        for d in &pauses {
            assert!(
                *d >= Duration::from_millis(1) && *d <= Duration::from_millis(40),
                "{d:?}"
            );
        }
        // Decorrelated: the pauses spread above the base instead of staying on it.
        assert!(
            pauses.iter().any(|d| *d > Duration::from_millis(2)),
            "{pauses:?}"
        );
    }
}
