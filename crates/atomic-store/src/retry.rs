//! The retry policy every network backend shares.
//!
//! - [`Failure::NotSent`]: nothing reached the server, or the server refused
//!   to run the request (could not connect, a cluster redirect, a
//!   serialization failure). Every operation may try again.
//! - [`Failure::Reply`]: the server ran the request and answered with an
//!   error. Final.
//! - [`Failure::Lost`]: the request may have reached the server and its
//!   reply was lost. Only idempotent operations try again; the others end
//!   with `OutcomeUnknown` and are never resent.

use std::future::Future;
use std::time::Duration;

use crate::Operation;

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
            Err(f @ Failure::Lost(_)) if !op.is_idempotent() => return Err(f),
            Err(f) => last = f,
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[tokio::test]
    async fn lost_replies_are_retried_only_for_idempotent_operations() {
        let tries = Cell::new(0);
        let r: Result<(), _> = with_retries(Operation::Incr, || async {
            tries.set(tries.get() + 1);
            Err(Failure::Lost(Some("reset")))
        })
        .await;
        assert!(matches!(r, Err(Failure::Lost(Some("reset")))));
        assert_eq!(tries.get(), 1);

        tries.set(0);
        let r: Result<(), _> = with_retries(Operation::Get, || async {
            tries.set(tries.get() + 1);
            Err(Failure::Lost(Some("reset")))
        })
        .await;
        assert!(r.is_err());
        assert_eq!(tries.get(), ATTEMPTS);
    }

    #[tokio::test]
    async fn unsent_requests_are_retried_for_every_operation_and_replies_never() {
        let tries = Cell::new(0);
        let r = with_retries(Operation::Incr, || async {
            tries.set(tries.get() + 1);
            if tries.get() < 3 {
                Err(Failure::NotSent("refused"))
            } else {
                Ok(7)
            }
        })
        .await;
        assert!(matches!(r, Ok(7)));
        tries.set(0);
        let r: Result<(), _> = with_retries(Operation::Get, || async {
            tries.set(tries.get() + 1);
            Err(Failure::Reply("WRONGTYPE"))
        })
        .await;
        assert!(matches!(r, Err(Failure::Reply(_))));
        assert_eq!(tries.get(), 1);
    }
}
