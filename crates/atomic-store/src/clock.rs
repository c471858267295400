//! Wall clocks: the local one, and a server's clock tracked from samples.

#[cfg(any(feature = "zookeeper", feature = "mongodb"))]
use std::sync::atomic::{AtomicI64, Ordering};
#[cfg(any(feature = "zookeeper", feature = "mongodb"))]
use std::sync::Mutex;
#[cfg(any(feature = "zookeeper", feature = "mongodb"))]
use std::time::{Duration, Instant};
use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch on this machine's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// A server's clock, estimated as this machine's clock plus an offset
/// measured from a server timestamp taken between two local readings. The
/// estimate is off by at most half that round trip plus drift since.
#[cfg(any(feature = "zookeeper", feature = "mongodb"))]
#[derive(Debug, Default)]
pub struct ServerClock {
    offset_ms: AtomicI64,
    measured_at: Mutex<Option<Instant>>,
}

#[cfg(any(feature = "zookeeper", feature = "mongodb"))]
impl ServerClock {
    /// The server's time now, or `None` when the last sample is older than
    /// `max_age` (or there is none).
    pub fn now(&self, max_age: Duration) -> Option<i64> {
        let fresh = self
            .measured_at
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some_and(|at| at.elapsed() < max_age);
        fresh.then(|| now_ms() + self.offset_ms.load(Ordering::Relaxed))
    }

    /// Record a sample: local time before the request, the server's
    /// timestamp, local time after the reply.
    pub fn record(&self, before_ms: i64, server_ms: i64, after_ms: i64) -> i64 {
        let offset = server_ms - (before_ms + after_ms) / 2;
        self.offset_ms.store(offset, Ordering::Relaxed);
        *self.measured_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        now_ms() + offset
    }

    /// Forget the sample (a new server or session may have another clock).
    #[cfg_attr(not(feature = "zookeeper"), allow(dead_code))]
    pub fn reset(&self) {
        *self.measured_at.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(all(test, any(feature = "zookeeper", feature = "mongodb")))]
mod tests {
    use super::*;

    #[test]
    fn offset_cancels_skew() {
        let clock = ServerClock::default();
        assert_eq!(clock.now(Duration::from_secs(5)), None);
        // A server 10 s ahead, sampled in a 2 ms round trip.
        let local = now_ms();
        clock.record(local, local + 10_001, local + 2);
        let estimate = clock.now(Duration::from_secs(5)).unwrap();
        assert!((estimate - (now_ms() + 10_000)).abs() < 50, "{estimate}");
        assert_eq!(clock.now(Duration::ZERO), None);
        clock.reset();
        assert_eq!(clock.now(Duration::from_secs(5)), None);
    }
}
