//! The retry policy every network backend shares.
//!
//! - [`Failure::NotSent`]: nothing reached the server, or the server refused
//!   to run the request (could not connect, a cluster redirect, a
//!   serialization failure). Every operation may try again.
//! - [`Failure::Reply`]: the server ran the request and answered with an
//!   error. Final.
//! - [`Failure::Lost`]: the request may have reached the server and its
//!   reply was lost. Only reads try again
//!   ([`Operation::is_resent_after_lost_reply`]); every write ends with
//!   `OutcomeUnknown` and is never resent.

use std::future::Future;
use std::time::Duration;

#[cfg(feature = "_cas")]
use crate::backoff::random_between;
use crate::{Error, ErrorKind, Operation};

/// How many times an operation is tried at most.
pub const ATTEMPTS: u32 = 3;

/// Why one attempt failed, with the backend's own error.
#[derive(Debug)]
pub enum Failure<E> {
    /// Nothing was applied.
    NotSent(E),
    /// The server answered with an error.
    Reply(E),
    /// Maybe applied; `None` when the attempt timed out.
    Lost(Option<E>),
}

/// Run `attempt` under the policy of `op`: 25 ms, then 100 ms between tries.
pub async fn with_retries<T, E, F, Fut>(op: Operation, mut attempt: F) -> Result<T, Failure<E>>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, Failure<E>>>,
{
    let mut last = Failure::Lost(None);
    for n in 0..ATTEMPTS {
        if n > 0 {
            tokio::time::sleep(Duration::from_millis(25 << (2 * (n - 1)))).await;
        }
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(f @ Failure::Reply(_)) => return Err(f),
            Err(f @ Failure::Lost(_)) if !op.is_resent_after_lost_reply() => return Err(f),
            Err(f) => last = f,
        }
    }
    Err(last)
}

#[cfg(feature = "_cas")]
/// The label for a read made on the way to `op` (a read-then-compare loop,
/// a lease grant): `op` itself when it is a read, else `get`, so that the
/// read is resent after a lost reply like any other read.
pub fn read_step(op: Operation) -> Operation {
    if op.is_resent_after_lost_reply() {
        op
    } else {
        Operation::Get
    }
}

/// The contract's error for a request whose reply was lost: `OutcomeUnknown`
/// for a write (never resent), a temporary `Unavailable` for a read (already
/// retried).
pub fn lost<E>(
    backend: &'static str,
    server: &str,
    op: Operation,
    timeout: Duration,
    source: Option<E>,
) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    let e = if op.is_resent_after_lost_reply() {
        Error::new(
            ErrorKind::Unavailable,
            backend,
            op,
            format!("no reply from {server} after {ATTEMPTS} attempts (timeout {timeout:?} each)"),
        )
        .with_temporary(true)
    } else {
        Error::new(
            ErrorKind::OutcomeUnknown,
            backend,
            op,
            format!("the connection to {server} failed or timed out ({timeout:?}) after the request was sent; it may or may not have been applied, and it was not resent"),
        )
    };
    match source {
        Some(s) => e.with_source(s),
        None => e,
    }
}

#[cfg(feature = "_cas")]
/// The contract's error for a request that certainly was not applied.
pub fn not_sent<E>(backend: &'static str, server: &str, op: Operation, source: E) -> Error
where
    E: std::error::Error + Send + Sync + 'static,
{
    Error::new(
        ErrorKind::Unavailable,
        backend,
        op,
        format!("could not reach {server}; nothing was applied"),
    )
    .with_source(source)
}

#[cfg(feature = "_cas")]
/// How many read-decide-write rounds an operation tries before it gives up.
pub const CAS_ROUNDS: usize = 1000;

#[cfg(feature = "_cas")]
/// Run read-decide-write `round`s until one returns `Some`: its write
/// landed, or the decision needed no write. `None` means another writer won
/// the race; the next round waits [`race_pause`] first. After
/// [`CAS_ROUNDS`] lost races, a `Timeout` with nothing written.
pub async fn until_written<T, F, Fut>(
    backend: &'static str,
    op: Operation,
    mut round: F,
) -> crate::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = crate::Result<Option<T>>>,
{
    for losses in 0..CAS_ROUNDS {
        if losses > 0 {
            tokio::time::sleep(race_pause(losses)).await;
        }
        if let Some(done) = round().await? {
            return Ok(done);
        }
    }
    Err(Error::new(
        ErrorKind::Timeout,
        backend,
        op,
        format!("the key changed under {CAS_ROUNDS} compare-and-swap attempts in a row; nothing was written"),
    ))
}

#[cfg(feature = "_cas")]
/// The pause after `losses` lost races in a row: random, growing, at most
/// 2 ms, so tasks sharing one connection do not retry in lockstep.
pub fn race_pause(losses: usize) -> Duration {
    let cap = Duration::from_micros((100 * (losses as u64 + 1)).min(2_000));
    random_between(Duration::ZERO, cap)
}

#[cfg(all(test, feature = "_cas"))]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test]
    async fn lost_races_are_retried_with_growing_pauses_then_time_out() {
        let rounds = Cell::new(0);
        let r = until_written("test", Operation::Incr, || async {
            rounds.set(rounds.get() + 1);
            Ok((rounds.get() == 3).then_some(7))
        })
        .await;
        assert_eq!(r.unwrap(), 7);
        assert_eq!(rounds.get(), 3);

        rounds.set(0);
        let r: crate::Result<()> = until_written("test", Operation::Incr, || async {
            rounds.set(rounds.get() + 1);
            Ok(None)
        })
        .await;
        let e = r.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Timeout);
        assert!(e.to_string().contains("nothing was written"), "{e}");
        assert_eq!(rounds.get(), CAS_ROUNDS);

        for losses in [1, 5, 100] {
            let cap = Duration::from_micros((100 * (losses as u64 + 1)).min(2_000));
            for _ in 0..50 {
                assert!(race_pause(losses) < cap);
            }
        }
        // The cap grows with the losses: after 19 in a row it is 2 ms, so
        // 200 draws all under 1 ms would be a one-in-2^200 event.
        let longest = (0..200).map(|_| race_pause(19)).max().unwrap();
        assert!(longest > Duration::from_millis(1), "{longest:?}");
        // After one loss the cap is 200 µs: 200 draws under 100 µs would be
        // a one-in-2^200 event.
        let longest = (0..200).map(|_| race_pause(1)).max().unwrap();
        assert!(longest >= Duration::from_micros(100), "{longest:?}");
    }

    #[tokio::test]
    async fn lost_replies_are_retried_only_for_reads() {
        // A resent release or delete would find its own first attempt's
        // effect and report "nothing there"; a resent incr would apply twice.
        for op in [
            Operation::Incr,
            Operation::Delete,
            Operation::ReleaseLock,
            Operation::ExtendLock,
            Operation::Set,
        ] {
            let tries = Cell::new(0);
            let r: Result<(), _> = with_retries(op, || async {
                tries.set(tries.get() + 1);
                Err(Failure::Lost(Some("reset")))
            })
            .await;
            assert!(matches!(r, Err(Failure::Lost(Some("reset")))), "{op}");
            assert_eq!(tries.get(), 1, "{op} was resent");
            let e = lost(
                "test",
                "server",
                op,
                Duration::from_secs(1),
                Some(std::io::Error::other("reset")),
            );
            assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{op}");
        }

        let tries = Cell::new(0);
        let r: Result<(), _> = with_retries(Operation::Get, || async {
            tries.set(tries.get() + 1);
            Err(Failure::Lost(Some("reset")))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(tries.get(), ATTEMPTS);
        let e = lost::<std::io::Error>(
            "test",
            "server",
            Operation::Get,
            Duration::from_secs(1),
            None,
        );
        assert_eq!(e.kind(), ErrorKind::Unavailable);
        assert!(e.is_temporary());
    }

    /// The first round starts at once; lost races are followed by pauses
    /// (on Tokio's paused clock; pauses are random, so 20 runs).
    #[tokio::test(start_paused = true)]
    async fn only_lost_races_pause() {
        for _ in 0..20 {
            let start = tokio::time::Instant::now();
            let rounds = std::cell::RefCell::new(Vec::new());
            let r = until_written("test", Operation::Incr, || async {
                rounds.borrow_mut().push(start.elapsed());
                Ok((rounds.borrow().len() == 10).then_some(()))
            })
            .await;
            assert!(r.is_ok());
            let rounds = rounds.borrow();
            assert_eq!(rounds[0], Duration::ZERO, "the first round waited");
            assert!(rounds[9] > Duration::ZERO, "no pause after lost races");
            assert!(rounds[9] < Duration::from_millis(18), "{:?}", rounds[9]);
        }
    }

    /// Between tries: 25 ms, then 100 ms (on Tokio's paused clock).
    #[tokio::test(start_paused = true)]
    async fn retries_pause_25_then_100_ms() {
        let sent = std::cell::RefCell::new(Vec::new());
        let start = tokio::time::Instant::now();
        let r: Result<(), _> = with_retries(Operation::Get, || async {
            sent.borrow_mut().push(start.elapsed());
            Err(Failure::NotSent("refused"))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(
            *sent.borrow(),
            [
                Duration::ZERO,
                Duration::from_millis(25),
                Duration::from_millis(125)
            ]
        );
    }

    #[tokio::test]
    async fn unsent_requests_are_retried_for_every_operation_and_replies_never() {
        for &op in Operation::ALL {
            let tries = Cell::new(0);
            let r = with_retries(op, || async {
                tries.set(tries.get() + 1);
                if tries.get() < 3 {
                    Err(Failure::NotSent("refused"))
                } else {
                    Ok(7)
                }
            })
            .await;
            assert!(matches!(r, Ok(7)), "{op}");
            tries.set(0);
            let r: Result<(), _> = with_retries(op, || async {
                tries.set(tries.get() + 1);
                Err(Failure::Reply("WRONGTYPE"))
            })
            .await;
            assert!(matches!(r, Err(Failure::Reply(_))), "{op}");
            assert_eq!(tries.get(), 1, "{op}: an answer was resent");
        }
    }
}
