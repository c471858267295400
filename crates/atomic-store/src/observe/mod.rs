//! Tracing and metrics for any store, added in one place.
//!
//! [`open`](crate::open) wraps every store it opens in [`Traced`], which
//! gives each operation a DEBUG span with target `atomic_store`, named after
//! the operation, with OpenTelemetry's database fields:
//!
//! | field | value |
//! |---|---|
//! | `db.system.name` | `redis`, `postgresql`, `sqlite`, `mongodb`, `aws.dynamodb`, `etcd`, `zookeeper`, `memory` |
//! | `db.operation.name` | the operation, as the span's name: `incr`, `acquire_lock`, … |
//! | `db.namespace` | the store's key prefix |
//! | `server.address`, `server.port` | the (first) server of the URL; never its user or password |
//! | `otel.kind` | `client` |
//! | `outcome` | when the span ends: `ok`, `acquired`, `not_acquired`, `released`, `held_by_other`, `error`, `cancelled`, … |
//! | `error.type` | on an error: its [`ErrorKind`] name, such as `outcome_unknown` |
//! | `otel.status_code` | `ERROR` on an error other than `unsupported` |
//! | `atomic_store.key` | the key, only with [`TracingLayer::record_keys`] |
//!
//! Values, lock ids, error messages and URLs are never recorded.
//! `Unsupported` is an answer about the backend, not a failure (the lock
//! recipe asks for a native queue and falls back), so it is reported with
//! `outcome = "unsupported"` and no error status.
//!
//! With no subscriber interested in DEBUG spans and metrics off (or the
//! `metrics` feature not compiled in), an operation costs one relaxed
//! atomic load more than the bare store: the layer hands back the store's
//! own future. With metrics on, each call is timed and boxed.
//!
//! With the cargo feature `metrics`, the layer also records, on the
//! [`metrics`](https://docs.rs/metrics) facade (see [`names`]):
//! `atomic_store_operation_duration_seconds{backend,operation,outcome}` and
//! `atomic_store_operation_errors_total{backend,operation,error_kind}`, and
//! `atomic_store_nonce_assigned_total{backend}` for each nonce handed out by
//! `assign_nonce`. A guard records them, so a cancelled call counts too.
//! The lock recipes record `atomic_store_lock_wait_seconds` and
//! `atomic_store_lock_held_seconds` themselves, whenever the feature is
//! compiled in: once per wait and hold, whatever the store's layer.
//!
//! ```
//! # #[cfg(feature = "memory")] {
//! use atomic_store::memory::MemoryStore;
//! use atomic_store::observe::{StoreMeta, TracingLayer};
//! use atomic_store::AtomicStore;
//!
//! // A store of your own, traced as `open()` traces the built-in ones.
//! let store = TracingLayer::new()
//!     .record_keys(true)
//!     .layer(MemoryStore::new(), StoreMeta::new("memory", "memory", "app"));
//! assert_eq!(store.capabilities().backend, "memory");
//! # }
//! ```

use std::time::Duration;
#[cfg(feature = "metrics")]
use std::time::Instant;

use tracing::field::Empty;
use tracing::{Instrument, Span};

use crate::{
    AtomicStore, Capabilities, ErrorKind, EvalValue, ExtendOutcome, Handover, KeyInfo, Lock,
    LockId, QueueEntry, QueueTurn, ReleaseOutcome, Result,
};

mod meta;
pub(crate) mod recipe;
pub use meta::StoreMeta;

/// The metric names, their buckets, and [`describe`](names::describe).
#[cfg(feature = "metrics")]
pub mod names;

/// Wraps a store in [`Traced`]. `open()` uses the default: keys not
/// recorded, and metrics on when the `metrics` feature is compiled in.
#[derive(Debug, Clone)]
pub struct TracingLayer {
    record_keys: bool,
    #[cfg(feature = "metrics")]
    metrics: bool,
}

impl Default for TracingLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl TracingLayer {
    /// The default layer.
    pub fn new() -> Self {
        TracingLayer {
            record_keys: false,
            #[cfg(feature = "metrics")]
            metrics: true,
        }
    }

    /// Record each operation's key as `atomic_store.key`. Off by default:
    /// keys can hold addresses or user ids.
    pub fn record_keys(mut self, on: bool) -> Self {
        self.record_keys = on;
        self
    }

    /// Record metrics (on by default). Off, a call with no span enabled
    /// costs what it costs without the layer.
    #[cfg(feature = "metrics")]
    pub fn metrics(mut self, on: bool) -> Self {
        self.metrics = on;
        self
    }

    /// `store`, traced.
    pub fn layer<S: AtomicStore>(&self, store: S, meta: StoreMeta) -> Traced<S> {
        #[cfg(feature = "metrics")]
        let metrics = self
            .metrics
            .then(|| Box::new(names::Handles::new(meta.backend)));
        #[cfg(not(feature = "metrics"))]
        let metrics = None;
        Traced {
            inner: store,
            meta,
            record_keys: self.record_keys,
            metrics,
        }
    }
}

/// A store whose every operation is traced (see the [module](self)).
/// Its `Debug` is the inner store's.
pub struct Traced<S> {
    inner: S,
    meta: StoreMeta,
    record_keys: bool,
    /// The metric handles, when metrics are on.
    #[cfg(feature = "metrics")]
    metrics: Option<Box<names::Handles>>,
    #[cfg(not(feature = "metrics"))]
    metrics: Option<Box<()>>,
}

impl<S> Traced<S> {
    /// The store inside.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// What the spans say about the store.
    pub fn meta(&self) -> &StoreMeta {
        &self.meta
    }
}

impl<S: std::fmt::Debug> std::fmt::Debug for Traced<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.inner.fmt(f)
    }
}

/// How an operation ended, recorded when its guard drops.
enum End {
    Pending,
    Ok(&'static str),
    Err(ErrorKind),
}

/// Records an operation's end on its span (and in metrics) when dropped,
/// so a future dropped half-way is recorded as `cancelled`.
struct OpGuard<'h> {
    span: Span,
    #[cfg(feature = "metrics")]
    metrics: Option<Measuring<'h>>,
    #[cfg(not(feature = "metrics"))]
    metrics: std::marker::PhantomData<&'h ()>,
    end: End,
}

/// An operation being timed, and where it is recorded.
#[cfg(feature = "metrics")]
struct Measuring<'h> {
    handles: &'h names::Handles,
    operation: usize,
    started: Instant,
}

impl End {
    /// Record the end on `span`; returns the outcome's name.
    fn record(&self, span: &Span) -> &'static str {
        let outcome = match self {
            End::Pending => "cancelled",
            End::Ok(outcome) => outcome,
            End::Err(ErrorKind::Unsupported) => "unsupported",
            End::Err(ErrorKind::Timeout) => "timeout",
            End::Err(_) => "error",
        };
        span.record("outcome", outcome);
        if let End::Err(kind) = self {
            span.record("error.type", kind.as_str());
            if *kind != ErrorKind::Unsupported {
                span.record("otel.status_code", "ERROR");
            }
        }
        outcome
    }

    fn of<T>(result: &Result<T>, outcome: fn(&T) -> &'static str) -> End {
        match result {
            Ok(value) => End::Ok(outcome(value)),
            Err(e) => End::Err(e.kind()),
        }
    }
}

impl Drop for OpGuard<'_> {
    fn drop(&mut self) {
        let _outcome = self.end.record(&self.span);
        #[cfg(feature = "metrics")]
        if let Some(m) = &self.metrics {
            m.handles
                .operation(m.operation, _outcome, m.started.elapsed());
            if let End::Err(kind) = self.end {
                if kind != ErrorKind::Unsupported {
                    m.handles.error(m.operation, kind);
                }
            }
        }
    }
}

use crate::store::BoxedResult as Boxed;

/// Runs one operation inside its span, with a guard that records its end.
async fn observed<T>(
    mut guard: OpGuard<'_>,
    outcome: fn(&T) -> &'static str,
    call: Boxed<'_, T>,
) -> Result<T> {
    let result = call.instrument(guard.span.clone()).await;
    guard.end = End::of(&result, outcome);
    #[cfg(feature = "metrics")]
    if let Some(m) = &guard.metrics {
        if m.operation == ASSIGN_NONCE && result.is_ok() {
            m.handles.nonce_assigned();
        }
    }
    result
}

#[cfg(feature = "metrics")]
const ASSIGN_NONCE: usize = names::position(names::OPERATIONS, "assign_nonce");

fn ok<T>(_: &T) -> &'static str {
    "ok"
}

fn found(value: &Option<String>) -> &'static str {
    if value.is_some() {
        "found"
    } else {
        "not_found"
    }
}

/// One traced method. With no span enabled and metrics off it returns the
/// inner store's own future, so the layer adds no allocation.
macro_rules! traced {
    ($self:ident, $name:literal, $key:expr, $outcome:expr, $call:expr) => {{
        let span = tracing::debug_span!(
            target: "atomic_store",
            $name,
            db.system.name = $self.meta.system,
            db.operation.name = $name,
            db.namespace = $self.meta.namespace.as_str(),
            server.address = $self.meta.address.as_deref(),
            server.port = $self.meta.port,
            otel.kind = "client",
            atomic_store.key = Empty,
            outcome = Empty,
            "error.type" = Empty,
            otel.status_code = Empty,
        );
        if span.is_disabled() && $self.metrics.is_none() {
            return $call;
        }
        if $self.record_keys {
            span.record("atomic_store.key", $key);
        }
        let guard = OpGuard {
            span,
            #[cfg(feature = "metrics")]
            metrics: $self.metrics.as_deref().map(|handles| Measuring {
                handles,
                // A name missing from the list fails the build.
                operation: const {
                    let i = names::position(names::OPERATIONS, $name);
                    assert!(i < names::OPERATIONS.len());
                    i
                },
                started: Instant::now(),
            }),
            #[cfg(not(feature = "metrics"))]
            metrics: std::marker::PhantomData,
            end: End::Pending,
        };
        Box::pin(observed(guard, $outcome, $call))
    }};
}

// The methods are plain functions with the signatures `#[async_trait]`
// generates, so that the fast path can return the inner future unboxed
// twice. The list must stay in step with the trait: the observability
// tests call every method through a traced store.
impl<S: AtomicStore> AtomicStore for Traced<S> {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn incr<'a, 'k, 'f>(&'a self, key: &'k str) -> Boxed<'f, i64>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        traced!(self, "incr", key, ok, self.inner.incr(key))
    }

    fn acquire_lock<'a, 'k, 'f>(&'a self, key: &'k str, ttl: Duration) -> Boxed<'f, Option<Lock>>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        let call = self.inner.acquire_lock(key, ttl);
        traced!(self, "acquire_lock", key, recipe::taken, call)
    }

    fn release_lock<'a, 'k, 'i, 'f>(
        &'a self,
        key: &'k str,
        id: &'i LockId,
    ) -> Boxed<'f, ReleaseOutcome>
    where
        'a: 'f,
        'k: 'f,
        'i: 'f,
        Self: 'f,
    {
        let outcome = |o: &ReleaseOutcome| o.as_str();
        traced!(
            self,
            "release_lock",
            key,
            outcome,
            self.inner.release_lock(key, id)
        )
    }

    fn extend_lock<'a, 'k, 'i, 'f>(
        &'a self,
        key: &'k str,
        id: &'i LockId,
        ttl: Duration,
    ) -> Boxed<'f, ExtendOutcome>
    where
        'a: 'f,
        'k: 'f,
        'i: 'f,
        Self: 'f,
    {
        let outcome = |o: &ExtendOutcome| o.as_str();
        traced!(
            self,
            "extend_lock",
            key,
            outcome,
            self.inner.extend_lock(key, id, ttl)
        )
    }

    fn get<'a, 'k, 'f>(&'a self, key: &'k str) -> Boxed<'f, Option<String>>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        traced!(self, "get", key, found, self.inner.get(key))
    }

    fn set<'a, 'k, 'v, 'f>(&'a self, key: &'k str, value: &'v str) -> Boxed<'f, ()>
    where
        'a: 'f,
        'k: 'f,
        'v: 'f,
        Self: 'f,
    {
        traced!(self, "set", key, ok, self.inner.set(key, value))
    }

    fn set_with_ttl<'a, 'k, 'v, 'f>(
        &'a self,
        key: &'k str,
        value: &'v str,
        ttl: Duration,
    ) -> Boxed<'f, ()>
    where
        'a: 'f,
        'k: 'f,
        'v: 'f,
        Self: 'f,
    {
        traced!(
            self,
            "set_with_ttl",
            key,
            ok,
            self.inner.set_with_ttl(key, value, ttl)
        )
    }

    fn delete<'a, 'k, 'f>(&'a self, key: &'k str) -> Boxed<'f, bool>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        let outcome = |deleted: &bool| if *deleted { "deleted" } else { "not_found" };
        traced!(self, "delete", key, outcome, self.inner.delete(key))
    }

    fn compare_and_set<'a, 'k, 'e, 'n, 'f>(
        &'a self,
        key: &'k str,
        expected: Option<&'e str>,
        new: &'n str,
        ttl: Option<Duration>,
    ) -> Boxed<'f, bool>
    where
        'a: 'f,
        'k: 'f,
        'e: 'f,
        'n: 'f,
        Self: 'f,
    {
        let outcome = |swapped: &bool| if *swapped { "swapped" } else { "not_swapped" };
        let call = self.inner.compare_and_set(key, expected, new, ttl);
        traced!(self, "compare_and_set", key, outcome, call)
    }

    fn assign_nonce<'a, 'k, 'f>(&'a self, key: &'k str, pending: u64) -> Boxed<'f, u64>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        traced!(
            self,
            "assign_nonce",
            key,
            ok,
            self.inner.assign_nonce(key, pending)
        )
    }

    fn eval<'a, 's, 'k, 'k2, 'v, 'v2, 'f>(
        &'a self,
        script: &'s str,
        keys: &'k [&'k2 str],
        args: &'v [&'v2 str],
    ) -> Boxed<'f, EvalValue>
    where
        'a: 'f,
        's: 'f,
        'k: 'f,
        'k2: 'f,
        'v: 'f,
        'v2: 'f,
        Self: 'f,
    {
        let first_key = keys.first().copied().unwrap_or("");
        traced!(
            self,
            "eval",
            first_key,
            ok,
            self.inner.eval(script, keys, args)
        )
    }

    fn inspect<'a, 'k, 'f>(&'a self, key: &'k str) -> Boxed<'f, KeyInfo>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        let outcome = |info: &KeyInfo| found(&info.value);
        traced!(self, "inspect", key, outcome, self.inner.inspect(key))
    }

    fn keys<'a, 'k, 'f>(&'a self, prefix: &'k str, limit: usize) -> Boxed<'f, Vec<String>>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        traced!(self, "keys", prefix, ok, self.inner.keys(prefix, limit))
    }

    fn notify<'a, 'k, 'f>(&'a self, key: &'k str) -> Boxed<'f, ()>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        traced!(self, "notify", key, ok, self.inner.notify(key))
    }

    fn wait_notified<'a, 'k, 'f>(&'a self, key: &'k str, timeout: Duration) -> Boxed<'f, bool>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        let outcome = |woken: &bool| if *woken { "notified" } else { "timed_out" };
        traced!(
            self,
            "wait_notified",
            key,
            outcome,
            self.inner.wait_notified(key, timeout)
        )
    }

    fn lock_queue_enter<'a, 'k, 'e, 'f>(
        &'a self,
        key: &'k str,
        entry: QueueEntry<'e>,
    ) -> Boxed<'f, QueueTurn>
    where
        'a: 'f,
        'k: 'f,
        'e: 'f,
        Self: 'f,
    {
        let outcome = |turn: &QueueTurn| match turn {
            QueueTurn::Acquired(_) => "acquired",
            QueueTurn::Waiting { .. } => "waiting",
        };
        traced!(
            self,
            "lock_queue_enter",
            key,
            outcome,
            self.inner.lock_queue_enter(key, entry)
        )
    }

    fn lock_queue_release<'a, 'k, 'i, 'f>(
        &'a self,
        key: &'k str,
        id: &'i LockId,
        handover_ttl: Duration,
    ) -> Boxed<'f, Handover>
    where
        'a: 'f,
        'k: 'f,
        'i: 'f,
        Self: 'f,
    {
        let outcome = |h: &Handover| match (h.outcome, &h.next) {
            (ReleaseOutcome::Released, Some(_)) => "handed_over",
            (outcome, _) => outcome.as_str(),
        };
        let call = self.inner.lock_queue_release(key, id, handover_ttl);
        traced!(self, "lock_queue_release", key, outcome, call)
    }

    fn purge<'a, 'k, 'f>(&'a self, key: &'k str) -> Boxed<'f, ()>
    where
        'a: 'f,
        'k: 'f,
        Self: 'f,
    {
        traced!(self, "purge", key, ok, self.inner.purge(key))
    }
}
