//! Spans (and metrics) of the recipes: a lock's wait and hold, and the
//! nonce manager's steps. Their names are the recipe's low-cardinality
//! name (`lock`, `semaphore`, or one the caller chose), never a key.

use std::future::Future;
use std::time::Instant;

use tracing::field::Empty;
use tracing::{Instrument, Span};

use super::End;
use crate::Result;

/// `acquired` or `not_acquired`, for anything that may have taken a lock.
pub(crate) fn taken<T>(held: &Option<T>) -> &'static str {
    if held.is_some() {
        "acquired"
    } else {
        "not_acquired"
    }
}

/// The span of a lock recipe's wait for `lock`.
pub(crate) fn lock_wait_span(lock: &'static str) -> Span {
    tracing::debug_span!(target: "atomic_store", "lock.wait", lock, outcome = Empty, "error.type" = Empty, otel.status_code = Empty)
}

/// Runs `call` in `span`, recording its outcome when it ends or is dropped,
/// and for a lock's wait (`waited_for`: the lock's name) the wait metric.
pub(crate) async fn in_span<T>(
    span: Span,
    waited_for: Option<&'static str>,
    outcome: fn(&T) -> &'static str,
    call: impl Future<Output = Result<T>>,
) -> Result<T> {
    let mut step = Step {
        span: span.clone(),
        waited_for,
        started: Instant::now(),
        end: End::Pending,
    };
    let result = call.instrument(span).await;
    step.end = End::of(&result, outcome);
    result
}

struct Step {
    span: Span,
    waited_for: Option<&'static str>,
    started: Instant,
    end: End,
}

impl Drop for Step {
    fn drop(&mut self) {
        let _outcome = self.end.record(&self.span);
        #[cfg(feature = "metrics")]
        if let Some(lock) = self.waited_for {
            super::names::record_lock_wait(lock, _outcome, self.started.elapsed());
        }
        let _ = (self.waited_for, self.started);
    }
}

/// A lock or permit held by a recipe: its `lock.hold` span lasts as long,
/// and its drop records how long it was held.
pub(crate) struct Holding {
    span: Span,
    _lock: &'static str,
    since: Instant,
}

impl Holding {
    pub(crate) fn start(lock: &'static str) -> Holding {
        let span = tracing::debug_span!(target: "atomic_store", "lock.hold", lock);
        Holding {
            span,
            _lock: lock,
            since: Instant::now(),
        }
    }
}

impl Drop for Holding {
    fn drop(&mut self) {
        #[cfg(feature = "metrics")]
        super::names::record_lock_held(self._lock, self.since.elapsed());
        let _ = (&self.span, self.since);
    }
}
