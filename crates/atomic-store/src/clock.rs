//! Wall clocks: the local one, and a server's clock tracked from samples.

#[cfg(feature = "_server-clock")]
use std::sync::Mutex;
#[cfg(feature = "_server-clock")]
use std::time::{Duration, Instant};

/// Milliseconds since the Unix epoch on this machine's clock.
#[cfg(any(test, feature = "_wall-clock"))]
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Samples with a longer round trip are not used: the server read its clock
/// somewhere inside the round trip, so half of it is the estimate's error.
#[cfg(feature = "_server-clock")]
pub const MAX_ROUND_TRIP: Duration = Duration::from_millis(200);

/// A sample this old is measured again (a server's clock can be stepped).
#[cfg(feature = "_server-clock")]
pub const REFRESH_AFTER: Duration = Duration::from_secs(5);

/// A sample is used at most this long, while measuring it again fails or
/// is too slow (a loaded server).
#[cfg(feature = "_server-clock")]
pub const MAX_SAMPLE_AGE: Duration = Duration::from_secs(20);

/// Requests sent in a row to get one usable sample before giving up.
#[cfg(feature = "_server-clock")]
pub const SAMPLE_TRIES: usize = 8;

/// Drift allowed between the two clocks, in microseconds per second
/// (1000 ppm: ten times a poor quartz, twice NTP's largest slew).
#[cfg(feature = "_server-clock")]
const DRIFT_US_PER_S: u64 = 1_000;

/// The largest error of an estimate in use: half the largest round trip,
/// drift over a sample's life, and 2 ms for whole-millisecond timestamps.
#[cfg(feature = "_server-clock")]
pub const MAX_ERROR_MS: i64 = (MAX_ROUND_TRIP.as_millis() as i64) / 2
    + (MAX_SAMPLE_AGE.as_secs() * DRIFT_US_PER_S / 1000) as i64
    + 2;

/// A lock is taken over only this long after its deadline, plus the
/// taker's own estimate error. It covers the error of the estimate the
/// holder wrote the deadline with (at most [`MAX_ERROR_MS`]) and leaves
/// room for the clocks' rates over a TTL.
#[cfg(feature = "_server-clock")]
pub const TAKEOVER_BASE_MS: i64 = 250;

/// The TTL resolution a backend on this clock declares. A lock's deadline
/// may be written up to one error late, the takeover waits the base plus
/// one error, and the taker's estimate may lag by one more.
#[cfg(feature = "_server-clock")]
pub const TTL_RESOLUTION: Duration = Duration::from_millis(650);

#[cfg(feature = "_server-clock")]
const _: () = assert!(TAKEOVER_BASE_MS + 3 * MAX_ERROR_MS <= TTL_RESOLUTION.as_millis() as i64);

/// The server's time as estimated here, and how far off it may be.
#[cfg(feature = "_server-clock")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerTime {
    /// Milliseconds since the Unix epoch on the server's clock.
    pub ms: i64,
    /// The true server time is within this many milliseconds of `ms`.
    pub error_ms: i64,
}

#[cfg(feature = "_server-clock")]
impl ServerTime {
    /// How long after a lock's deadline another owner may take it.
    pub fn takeover_margin_ms(&self) -> i64 {
        TAKEOVER_BASE_MS + self.error_ms
    }

    /// True when a lock with this deadline may be taken over now.
    pub fn may_take_over(&self, deadline_ms: i64) -> bool {
        deadline_ms <= self.ms - self.takeover_margin_ms()
    }
}

/// One timed request: the server's timestamp, anchored on this machine's
/// monotonic clock at the middle of the round trip.
#[cfg(feature = "_server-clock")]
#[derive(Debug, Clone, Copy)]
struct Sample {
    server_ms: i64,
    sent: Instant,
    middle: Instant,
    half_round_trip: Duration,
}

#[cfg(feature = "_server-clock")]
impl Sample {
    fn at(&self, at: Instant) -> Option<ServerTime> {
        let age = at.saturating_duration_since(self.sent);
        if age >= MAX_SAMPLE_AGE {
            return None;
        }
        let since_middle_us = if at >= self.middle {
            (at - self.middle).as_micros() as i64
        } else {
            -((self.middle - at).as_micros() as i64)
        };
        let drift_us = age.as_micros() as u64 * DRIFT_US_PER_S / 1_000_000;
        let error_us = self.half_round_trip.as_micros() as u64 + drift_us;
        Some(ServerTime {
            ms: self.server_ms + since_middle_us.div_euclid(1000),
            error_ms: error_us.div_ceil(1000) as i64 + 2,
        })
    }
}

/// A server's clock, estimated from timestamps the server put in replies.
///
/// The estimate is the sample's server time plus the monotonic time since
/// the middle of its round trip, so a step of this machine's wall clock
/// (NTP, an operator) does not move it. Its error is half that round trip
/// plus drift since; samples with a round trip above [`MAX_ROUND_TRIP`] are
/// refused, so the error stays below [`MAX_ERROR_MS`].
#[cfg(feature = "_server-clock")]
#[derive(Debug, Default)]
pub struct ServerClock {
    sample: Mutex<Option<Sample>>,
    /// Held by the one task measuring, so a stale sample does not send
    /// every task to the server at once.
    measuring: tokio::sync::Mutex<()>,
}

/// Why [`ServerClock::read`] has no estimate.
#[cfg(feature = "_server-clock")]
#[derive(Debug)]
pub enum Unread<E> {
    /// A request failed.
    Failed(E),
    /// Every reply in [`SAMPLE_TRIES`] took longer than [`MAX_ROUND_TRIP`].
    TooSlow,
}

#[cfg(feature = "_server-clock")]
impl ServerClock {
    /// The server's time now, or `None` when there is no sample younger
    /// than [`MAX_SAMPLE_AGE`].
    pub fn now(&self) -> Option<ServerTime> {
        self.at(Instant::now())
    }

    /// The server's time at `at` (not before the last sample was taken).
    pub fn at(&self, at: Instant) -> Option<ServerTime> {
        let sample = *self.sample.lock().unwrap_or_else(|e| e.into_inner());
        sample?.at(at)
    }

    /// The estimate now, when its sample is too young to measure again.
    fn fresh(&self) -> Option<ServerTime> {
        let now = Instant::now();
        let sample = (*self.sample.lock().unwrap_or_else(|e| e.into_inner()))?;
        (now.saturating_duration_since(sample.sent) < REFRESH_AFTER)
            .then(|| sample.at(now))
            .flatten()
    }

    /// The server's time now, measuring it first when the sample is due:
    /// `sample` sends one request and returns when it was sent, the
    /// server's clock reading in the reply, and when the reply came. One
    /// task measures at a time; meanwhile the others use the held estimate
    /// if it is still usable, or wait. A measurement that fails or stays
    /// too slow keeps the held estimate while it is usable.
    pub async fn read<E, F, Fut>(&self, mut sample: F) -> Result<ServerTime, Unread<E>>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<(Instant, i64, Instant), E>>,
    {
        if let Some(now) = self.fresh() {
            return Ok(now);
        }
        let _measuring = match self.now() {
            Some(held) => match self.measuring.try_lock() {
                Ok(guard) => guard,
                Err(_) => return Ok(held),
            },
            None => self.measuring.lock().await,
        };
        if let Some(now) = self.fresh() {
            return Ok(now);
        }
        let mut why = Unread::TooSlow;
        for _ in 0..SAMPLE_TRIES {
            match sample().await {
                Ok((sent, server_ms, received)) => {
                    if let Some(now) = self.record(sent, server_ms, received) {
                        return Ok(now);
                    }
                }
                Err(e) => {
                    why = Unread::Failed(e);
                    break;
                }
            }
        }
        self.now().ok_or(why)
    }

    /// Record one request: sent at `sent`, answered at `received`, with the
    /// server's clock reading `server_ms` taken in between. Returns the
    /// estimate at `received`, or `None` when the round trip was too long
    /// to use (the sample is dropped). A sample replaces the one held only
    /// when its estimate is closer.
    pub fn record(&self, sent: Instant, server_ms: i64, received: Instant) -> Option<ServerTime> {
        let round_trip = received.saturating_duration_since(sent);
        if round_trip > MAX_ROUND_TRIP {
            return None;
        }
        let new = Sample {
            server_ms,
            sent,
            middle: sent + round_trip / 2,
            half_round_trip: round_trip / 2,
        };
        let mut held = self.sample.lock().unwrap_or_else(|e| e.into_inner());
        let keep_held = held
            .and_then(|old| old.at(received))
            .zip(new.at(received))
            .is_some_and(|(old, new)| old.error_ms < new.error_ms);
        if !keep_held {
            *held = Some(new);
        }
        held.and_then(|s| s.at(received))
    }

    /// Forget the sample (a new server or session may have another clock).
    #[cfg_attr(not(feature = "zookeeper"), allow(dead_code))]
    pub fn reset(&self) {
        *self.sample.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}

#[cfg(all(test, feature = "_server-clock"))]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    /// A server whose clock reads `base_ms` at the local instant `zero`
    /// and runs at the local monotonic rate.
    struct Server {
        zero: Instant,
        base_ms: i64,
    }

    impl Server {
        fn new() -> Server {
            // Far from this machine's own wall clock: skew must not matter.
            Server {
                zero: Instant::now(),
                base_ms: 1_000_000_000_000,
            }
        }

        fn at(&self, offset: Duration) -> Instant {
            self.zero + offset
        }

        /// The server's reading at `offset` after `zero`.
        fn reads(&self, offset: Duration) -> i64 {
            self.base_ms + offset.as_millis() as i64
        }

        /// A request sent at `sent`, read by the server `served` later, and
        /// answered `rest` after that.
        fn sample(
            &self,
            sent: Duration,
            served: Duration,
            rest: Duration,
        ) -> (Instant, i64, Instant) {
            (
                self.at(sent),
                self.reads(sent + served),
                self.at(sent + served + rest),
            )
        }
    }

    /// Checks the estimate at `offset` against the server's true reading:
    /// never further off than the bound it states, in either direction.
    fn assert_within_bound(clock: &ServerClock, server: &Server, offset: Duration) -> ServerTime {
        let estimate = clock.at(server.at(offset)).expect("a fresh sample");
        let truth = server.reads(offset);
        assert!(
            estimate.ms <= truth + estimate.error_ms,
            "estimate {} runs ahead of server time {truth} + bound {}",
            estimate.ms,
            estimate.error_ms
        );
        assert!(
            estimate.ms >= truth - estimate.error_ms,
            "estimate {} lags server time {truth} by more than {}",
            estimate.ms,
            estimate.error_ms
        );
        estimate
    }

    #[test]
    fn no_sample_no_estimate_and_samples_go_stale() {
        let clock = ServerClock::default();
        assert_eq!(clock.now(), None);
        let server = Server::new();
        let (sent, read, received) = server.sample(Duration::ZERO, MS, MS);
        clock.record(sent, read, received).unwrap();
        assert!(clock.at(server.at(MAX_SAMPLE_AGE - MS)).is_some());
        assert_eq!(clock.at(server.at(MAX_SAMPLE_AGE)), None);
        clock.reset();
        assert_eq!(clock.at(received), None);
    }

    /// The server stamps its reply anywhere in the round trip: at the
    /// start, the middle or the end, the estimate stays within its bound,
    /// and the bound is about half the round trip.
    #[test]
    fn the_estimate_never_runs_ahead_of_server_time_plus_its_bound() {
        let round_trip = Duration::from_millis(80);
        for served in [Duration::ZERO, round_trip / 4, round_trip / 2, round_trip] {
            let server = Server::new();
            let clock = ServerClock::default();
            let (sent, read, received) = server.sample(Duration::ZERO, served, round_trip - served);
            let at_reply = clock.record(sent, read, received).unwrap();
            assert!(
                (40..=45).contains(&at_reply.error_ms),
                "bound {} for an 80 ms round trip",
                at_reply.error_ms
            );
            for later in [0, 1, 500, 4_900, 19_000] {
                assert_within_bound(&clock, &server, round_trip + later * MS);
            }
        }
    }

    /// A slow sample (the old code accepted any: a first request that
    /// waited 2 s for a connection and was stamped at the end put the
    /// estimate 1 s ahead) is refused and leaves the estimate held alone.
    #[test]
    fn a_slow_sample_is_refused() {
        let server = Server::new();
        let clock = ServerClock::default();
        let (sent, read, received) = server.sample(Duration::ZERO, 2_000 * MS, Duration::ZERO);
        assert_eq!(clock.record(sent, read, received), None);
        assert_eq!(clock.at(received), None, "a refused sample was used");

        let (sent, read, received) = server.sample(3_000 * MS, MS, MS);
        let good = clock.record(sent, read, received).unwrap();
        assert!(good.error_ms <= 4, "{good:?}");
        let (sent, read, received) = server.sample(3_010 * MS, Duration::ZERO, 1_500 * MS);
        assert_eq!(clock.record(sent, read, received), None);
        let estimate = assert_within_bound(&clock, &server, 4_600 * MS);
        assert!(estimate.error_ms <= 5, "{estimate:?}");
    }

    /// Of two usable samples the closer one is kept, whichever came last.
    #[test]
    fn a_wider_sample_does_not_replace_a_closer_one() {
        let server = Server::new();
        let clock = ServerClock::default();
        let (sent, read, received) = server.sample(Duration::ZERO, MS, MS);
        clock.record(sent, read, received).unwrap();
        let (sent, read, received) = server.sample(10 * MS, Duration::ZERO, 90 * MS);
        let kept = clock.record(sent, read, received).unwrap();
        assert!(
            kept.error_ms <= 4,
            "the 90 ms sample replaced the 2 ms one: {kept:?}"
        );
        assert_within_bound(&clock, &server, 200 * MS);
        // Once the kept sample has drifted past it, a new one takes over.
        let (sent, read, received) = server.sample(4_900 * MS, 3 * MS, 3 * MS);
        let newer = clock.record(sent, read, received).unwrap();
        assert!(newer.error_ms <= 6, "{newer:?}");
        assert!(
            clock.at(server.at(5_500 * MS)).is_some(),
            "the newer sample was dropped"
        );
    }

    /// The estimate reads only the monotonic clock: whatever this machine's
    /// wall clock says (here it is a whole epoch away from the server's,
    /// and may be stepped at any moment), the estimate at a given instant
    /// is the server's reading plus monotonic time since.
    #[test]
    fn a_step_of_the_local_wall_clock_does_not_move_the_estimate() {
        let server = Server::new();
        let clock = ServerClock::default();
        let (sent, read, received) = server.sample(Duration::ZERO, 5 * MS, 5 * MS);
        clock.record(sent, read, received).unwrap();
        let first = clock.at(server.at(2_000 * MS)).unwrap();
        // Time passes for real (the wall clock may step meanwhile); the
        // estimate for the same instant does not change.
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(clock.at(server.at(2_000 * MS)).unwrap(), first);
        assert_eq!(first.ms, server.reads(2_000 * MS));
        assert!(
            (now_ms() - first.ms).abs() > 1_000_000,
            "the wall clock leaked in"
        );
    }

    /// A lock is free only once its deadline is a full margin behind the
    /// estimate; the margin grows with the estimate's error and never
    /// exceeds what the declared resolution allows.
    #[test]
    fn the_takeover_margin_adds_the_estimates_error() {
        let tight = ServerTime {
            ms: 10_000,
            error_ms: 3,
        };
        assert_eq!(tight.takeover_margin_ms(), TAKEOVER_BASE_MS + 3);
        assert!(!tight.may_take_over(10_000 - TAKEOVER_BASE_MS - 2));
        assert!(tight.may_take_over(10_000 - TAKEOVER_BASE_MS - 3));
        let wide = ServerTime {
            ms: 10_000,
            error_ms: MAX_ERROR_MS,
        };
        assert!(!wide.may_take_over(10_000 - TAKEOVER_BASE_MS - 3));
        assert!(wide.takeover_margin_ms() + 2 * MAX_ERROR_MS <= TTL_RESOLUTION.as_millis() as i64);
        // The largest error an accepted sample can have is MAX_ERROR_MS.
        let server = Server::new();
        let clock = ServerClock::default();
        let (sent, read, received) = server.sample(Duration::ZERO, Duration::ZERO, MAX_ROUND_TRIP);
        clock.record(sent, read, received).unwrap();
        let oldest = clock.at(server.at(MAX_SAMPLE_AGE - MS)).unwrap();
        assert!(oldest.error_ms <= MAX_ERROR_MS, "{oldest:?}");
    }

    /// A sampler answering as a server whose clock is `base_ms` at `zero`,
    /// with round trips of `round_trip`, counting its requests.
    fn sampler(
        zero: Instant,
        base_ms: i64,
        round_trip: Duration,
        calls: &std::sync::atomic::AtomicUsize,
    ) -> impl FnMut() -> std::future::Ready<Result<(Instant, i64, Instant), &'static str>> + '_
    {
        move || {
            calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let received = Instant::now();
            let sent = received - round_trip;
            let server_ms = base_ms + (sent - zero).as_millis() as i64;
            std::future::ready(Ok((sent, server_ms, received)))
        }
    }

    /// Many tasks finding no estimate send one request between them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn one_task_measures_while_the_others_wait() {
        let clock = std::sync::Arc::new(ServerClock::default());
        let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let zero = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (clock, calls) = (clock.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                clock
                    .read(|| {
                        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        async move {
                            let sent = Instant::now();
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            let server_ms = 5_000 + (sent - zero).as_millis() as i64 + 15;
                            Ok::<_, ()>((sent, server_ms, Instant::now()))
                        }
                    })
                    .await
                    .unwrap()
            }));
        }
        for t in tasks {
            let estimate = t.await.unwrap();
            assert!(estimate.error_ms < MAX_ERROR_MS, "{estimate:?}");
        }
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }

    /// With no estimate, slow replies are sent again and then refused as a
    /// whole; a failed request ends the reading at once.
    #[tokio::test]
    async fn without_an_estimate_slow_or_failed_replies_are_errors() {
        let clock = ServerClock::default();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let slow = MAX_ROUND_TRIP + MS;
        let read = clock.read(sampler(Instant::now(), 0, slow, &calls)).await;
        assert!(matches!(read, Err(Unread::TooSlow)), "{read:?}");
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            SAMPLE_TRIES
        );
        let read = clock
            .read(|| async { Err::<(Instant, i64, Instant), _>("reset") })
            .await;
        assert!(matches!(read, Err(Unread::Failed("reset"))), "{read:?}");
    }

    /// A sample due for measuring again is still used while the new
    /// replies are too slow or fail (a loaded server), and replaced by the
    /// first usable one.
    #[tokio::test]
    async fn a_due_estimate_is_kept_while_measuring_it_again_fails() {
        let clock = ServerClock::default();
        let old = Instant::now() - REFRESH_AFTER - MS;
        clock.record(old, 1_000, old + 2 * MS).unwrap();
        let calls = std::sync::atomic::AtomicUsize::new(0);
        let slow = MAX_ROUND_TRIP + MS;
        let held = clock.read(sampler(old, 1_000, slow, &calls)).await.unwrap();
        assert_eq!(
            calls.load(std::sync::atomic::Ordering::SeqCst),
            SAMPLE_TRIES
        );
        assert!(held.error_ms <= 10, "{held:?}");
        let held = clock
            .read(|| async { Err::<(Instant, i64, Instant), _>("reset") })
            .await
            .unwrap();
        assert!(held.error_ms <= 10, "{held:?}");
        calls.store(0, std::sync::atomic::Ordering::SeqCst);
        let fresh = clock
            .read(sampler(old, 1_000, 4 * MS, &calls))
            .await
            .unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
        assert!(fresh.error_ms <= 5, "{fresh:?}");
        // Fresh now: no request.
        clock
            .read(sampler(old, 1_000, 4 * MS, &calls))
            .await
            .unwrap();
        assert_eq!(calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
