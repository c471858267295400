//! The tracing layer and metrics, seen by a real `tracing` subscriber and
//! `metrics-util`'s debugging recorder: every operation's span, its fields
//! and outcome, on memory, SQLite and Redis; nothing secret recorded.
#![cfg(all(feature = "memory", feature = "sqlite"))]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use atomic_store::lock::{DistributedLock, Semaphore};
use atomic_store::{AtomicStore, LockId, QueueEntry};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

/// A span or event as the subscriber saw it.
#[derive(Debug, Clone, Default)]
struct Seen {
    name: String,
    target: String,
    level: String,
    fields: HashMap<String, String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.fields
            .insert(field.name().to_owned(), format!("{value:?}"));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .insert(field.name().to_owned(), value.to_owned());
    }
}

/// Every closed span and every event, in order.
#[derive(Default)]
struct Captured {
    spans: Vec<Seen>,
    events: Vec<Seen>,
}

fn captured() -> &'static Mutex<Captured> {
    static CAPTURED: OnceLock<Mutex<Captured>> = OnceLock::new();
    CAPTURED.get_or_init(Default::default)
}

struct Capture;

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Capture {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let meta = attrs.metadata();
        let mut seen = Seen {
            name: meta.name().to_owned(),
            target: meta.target().to_owned(),
            level: meta.level().to_string(),
            ..Seen::default()
        };
        attrs.record(&mut seen);
        ctx.span(id).unwrap().extensions_mut().insert(seen);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        if let Some(seen) = ctx.span(id).unwrap().extensions_mut().get_mut::<Seen>() {
            values.record(seen);
        }
    }

    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut seen = Seen {
            name: meta.name().to_owned(),
            target: meta.target().to_owned(),
            level: meta.level().to_string(),
            ..Seen::default()
        };
        event.record(&mut seen);
        captured().lock().unwrap().events.push(seen);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        if let Some(seen) = ctx.span(&id).unwrap().extensions_mut().remove::<Seen>() {
            captured().lock().unwrap().spans.push(seen);
        }
    }
}

/// One subscriber for the whole process: tracing caches whether a callsite
/// is enabled process-wide, so per-test thread-local subscribers would miss
/// spans when tests run in parallel. Tests tell their spans apart by
/// `db.namespace` (a prefix of their own).
fn capture() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Capture))
            .unwrap();
    });
}

/// The closed store spans of one namespace, oldest first.
fn spans_in(namespace: &str) -> Vec<Seen> {
    captured()
        .lock()
        .unwrap()
        .spans
        .iter()
        .filter(|s| s.field("db.namespace") == Some(namespace))
        .cloned()
        .collect()
}

fn last_span(namespace: &str, name: &str) -> Seen {
    spans_in(namespace)
        .into_iter()
        .rev()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no closed `{name}` span in {namespace}"))
}

fn spans_named(name: &str, lock: &str) -> Vec<Seen> {
    captured()
        .lock()
        .unwrap()
        .spans
        .iter()
        .filter(|s| s.name == name && s.field("lock") == Some(lock))
        .cloned()
        .collect()
}

fn unique(tag: &str) -> String {
    format!(
        "obs-{tag}-{}",
        LockId::generate().as_str().get(..10).unwrap()
    )
}

/// Call every method of the contract once on `store` (whose prefix is
/// `ns`) and check each one's span: name, level, target, the conventional
/// fields, and its outcome.
async fn every_operation_is_traced(store: &Arc<dyn AtomicStore>, ns: &str, system: &str) {
    let ttl = Duration::from_secs(30);
    let expect = |name: &str, outcome: &str| {
        let span = last_span(ns, name);
        assert_eq!(span.level, "DEBUG", "{span:?}");
        assert_eq!(span.target, "atomic_store", "{span:?}");
        assert_eq!(span.field("db.system.name"), Some(system), "{span:?}");
        assert_eq!(span.field("db.operation.name"), Some(name), "{span:?}");
        assert_eq!(span.field("otel.kind"), Some("client"), "{span:?}");
        assert_eq!(span.field("outcome"), Some(outcome), "{span:?}");
        assert_eq!(
            span.field("atomic_store.key"),
            None,
            "keys are off by default: {span:?}"
        );
        span
    };

    store.incr("n").await.unwrap();
    expect("incr", "ok");
    let lock = store.acquire_lock("l", ttl).await.unwrap().unwrap();
    expect("acquire_lock", "acquired");
    assert!(store.acquire_lock("l", ttl).await.unwrap().is_none());
    expect("acquire_lock", "not_acquired");
    store.extend_lock("l", &lock.id, ttl).await.unwrap();
    expect("extend_lock", "extended");
    store.release_lock("l", &LockId::generate()).await.unwrap();
    expect("release_lock", "held_by_other");
    store.release_lock("l", &lock.id).await.unwrap();
    expect("release_lock", "released");
    store.set("v", "secret-value").await.unwrap();
    expect("set", "ok");
    store.set_with_ttl("w", "secret-value", ttl).await.unwrap();
    expect("set_with_ttl", "ok");
    store.get("v").await.unwrap();
    expect("get", "found");
    store.get("missing").await.unwrap();
    expect("get", "not_found");
    store
        .compare_and_set("v", Some("nope"), "x", None)
        .await
        .unwrap();
    expect("compare_and_set", "not_swapped");
    store
        .compare_and_set("v", Some("secret-value"), "x", None)
        .await
        .unwrap();
    expect("compare_and_set", "swapped");
    store.delete("v").await.unwrap();
    expect("delete", "deleted");
    store.delete("v").await.unwrap();
    expect("delete", "not_found");
    store.assign_nonce("nonce", 7).await.unwrap();
    expect("assign_nonce", "ok");
    store.inspect("w").await.unwrap();
    expect("inspect", "found");
    store.keys("", 10).await.unwrap();
    expect("keys", "ok");
    let outcome = if store.capabilities().eval {
        "ok"
    } else {
        "unsupported"
    };
    let _ = store.eval("return 1", &[], &[]).await;
    let span = expect("eval", outcome);
    if outcome == "unsupported" {
        assert_eq!(span.field("error.type"), Some("unsupported"));
        assert_eq!(
            span.field("otel.status_code"),
            None,
            "not a failure: {span:?}"
        );
    }
    let notified = if store.capabilities().notifications {
        "ok"
    } else {
        "unsupported"
    };
    let _ = store.notify("bell").await;
    expect("notify", notified);
    let waited = if store.capabilities().notifications {
        "timed_out"
    } else {
        "unsupported"
    };
    let _ = store.wait_notified("bell", Duration::from_millis(5)).await;
    expect("wait_notified", waited);
    let waiter = LockId::generate();
    let entry = QueueEntry {
        waiter: &waiter,
        ttl,
        presence: Some(ttl),
    };
    let queued = store.lock_queue_enter("q", entry).await;
    expect(
        "lock_queue_enter",
        if queued.is_ok() {
            "acquired"
        } else {
            "unsupported"
        },
    );
    let released = store.lock_queue_release("q", &waiter, ttl).await;
    expect(
        "lock_queue_release",
        if released.is_ok() {
            "released"
        } else {
            "unsupported"
        },
    );
    store.purge("w").await.unwrap();
    expect("purge", "ok");

    // An error: its kind, and the error status.
    store.set("text", "abc").await.unwrap();
    store.incr("text").await.unwrap_err();
    let span = expect("incr", "error");
    assert_eq!(span.field("error.type"), Some("not_an_integer"));
    assert_eq!(span.field("otel.status_code"), Some("ERROR"));

    // Nothing secret in any field: no value, no lock id.
    for span in spans_in(ns) {
        for value in span.fields.values() {
            assert!(!value.contains("secret-value"), "{span:?}");
            assert!(!value.contains(lock.id.as_str()), "{span:?}");
            assert!(!value.contains(waiter.as_str()), "{span:?}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_on_memory_has_its_span() {
    capture();
    let ns = unique("memory");
    let store = atomic_store::open(&format!("memory://?prefix={ns}")).unwrap();
    every_operation_is_traced(&store, &ns, "memory").await;
    let span = last_span(&ns, "incr");
    assert_eq!(span.field("server.address"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_on_sqlite_has_its_span() {
    capture();
    let dir = tempfile::tempdir().unwrap();
    let ns = unique("sqlite");
    let path = dir.path().join("obs.db");
    let store = atomic_store::open(&format!("sqlite://{}?prefix={ns}", path.display())).unwrap();
    every_operation_is_traced(&store, &ns, "sqlite").await;
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_on_redis_has_its_span_and_no_password() {
    capture();
    let url = support::url("redis");
    let ns = unique("redis");
    let store = atomic_store::open(&support::with_params(&url, &format!("prefix={ns}"))).unwrap();
    every_operation_is_traced(&store, &ns, "redis").await;
    let port = url::Url::parse(&url).unwrap().port().unwrap().to_string();
    let span = last_span(&ns, "incr");
    assert_eq!(span.field("server.address"), Some("127.0.0.1"), "{span:?}");
    assert_eq!(span.field("server.port"), Some(port.as_str()), "{span:?}");

    // A password in the URL stays out of every field (the test server's
    // default user takes any password).
    let with_password = url.replacen("redis://", "redis://default:hunter2secret@", 1);
    let ns = unique("redis-auth");
    let store = atomic_store::open(&support::with_params(
        &with_password,
        &format!("prefix={ns}"),
    ))
    .unwrap();
    let _ = store.incr("n").await;
    let span = last_span(&ns, "incr");
    assert_eq!(span.field("server.address"), Some("127.0.0.1"), "{span:?}");
    assert!(!format!("{span:?}").contains("hunter2secret"), "{span:?}");
}

#[tokio::test]
async fn keys_are_recorded_only_when_asked() {
    capture();
    let ns = unique("keys");
    let layer = atomic_store::observe::TracingLayer::new().record_keys(true);
    let store = atomic_store::open_with(&format!("memory://?prefix={ns}"), Some(&layer)).unwrap();
    store.incr("visible-key").await.unwrap();
    assert_eq!(
        last_span(&ns, "incr").field("atomic_store.key"),
        Some("visible-key")
    );

    let bare = unique("bare");
    let store = atomic_store::open_with(&format!("memory://?prefix={bare}"), None).unwrap();
    store.incr("k").await.unwrap();
    assert!(spans_in(&bare).is_empty(), "open_with(None) has no layer");
}

#[tokio::test]
async fn a_cancelled_operation_is_recorded_as_cancelled() {
    capture();
    let ns = unique("cancel");
    let store = atomic_store::open(&format!("memory://?prefix={ns}")).unwrap();
    let waiting = store.wait_notified("never", Duration::from_secs(60));
    let _ = tokio::time::timeout(Duration::from_millis(20), waiting).await;
    assert_eq!(
        last_span(&ns, "wait_notified").field("outcome"),
        Some("cancelled")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recipes_trace_their_wait_and_hold_and_warn_through_tracing() {
    capture();
    let ns = unique("recipes");
    let store = atomic_store::open(&format!("memory://?prefix={ns}")).unwrap();
    let lock =
        DistributedLock::new(store.clone(), "orders:42", Duration::from_secs(5)).name("obs-orders");
    let guard = lock.acquire(Duration::from_secs(1)).await.unwrap();
    let timed_out = lock.acquire(Duration::from_millis(30)).await.unwrap_err();
    assert!(lock.try_acquire().await.unwrap().is_none());
    guard.release().await.unwrap();
    let dropped = lock.acquire(Duration::from_secs(1)).await.unwrap();
    drop(dropped);

    let waits: Vec<_> = spans_named("lock.wait", "obs-orders")
        .iter()
        .map(|s| s.field("outcome").unwrap().to_owned())
        .collect();
    assert_eq!(waits, ["acquired", "timeout", "not_acquired", "acquired"]);
    let timeout = &spans_named("lock.wait", "obs-orders")[1];
    assert_eq!(timeout.field("error.type"), Some(timed_out.kind().as_str()));
    assert_eq!(spans_named("lock.hold", "obs-orders").len(), 2);

    let warned = captured()
        .lock()
        .unwrap()
        .events
        .iter()
        .find(|e| e.field("lock") == Some("obs-orders"))
        .cloned()
        .expect("a warning for the dropped guard");
    assert_eq!(warned.level, "WARN");
    assert_eq!(warned.target, "atomic_store");
    assert!(
        !format!("{warned:?}").contains("orders:42"),
        "no key: {warned:?}"
    );

    let semaphore =
        Semaphore::new(store.clone(), "pool", 2, Duration::from_secs(5)).name("obs-pool");
    let permit = semaphore.acquire(Duration::from_secs(1)).await.unwrap();
    permit.release().await.unwrap();
    assert_eq!(spans_named("lock.wait", "obs-pool").len(), 1);
    assert_eq!(spans_named("lock.hold", "obs-pool").len(), 1);
}

#[cfg(feature = "metrics")]
mod metrics {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    use metrics_util::CompositeKey;

    fn labels(key: &CompositeKey) -> Vec<(String, String)> {
        let mut labels: Vec<_> = key
            .key()
            .labels()
            .map(|l| (l.key().to_owned(), l.value().to_owned()))
            .collect();
        labels.sort();
        labels
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<_> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    }

    /// The recorder is thread-local: a one-thread runtime keeps every
    /// operation on this thread.
    #[test]
    fn operations_errors_locks_and_nonces_are_measured() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _installed = ::metrics::set_default_local_recorder(&recorder);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let store = atomic_store::open("memory://?prefix=metrics").unwrap();
            store.incr("n").await.unwrap();
            store.incr("n").await.unwrap();
            store.set("t", "x").await.unwrap();
            store.incr("t").await.unwrap_err();
            store.assign_nonce("nonce", 3).await.unwrap();
            let lock =
                DistributedLock::new(store.clone(), "k", Duration::from_secs(5)).name("m-lock");
            lock.acquire(Duration::from_secs(1))
                .await
                .unwrap()
                .release()
                .await
                .unwrap();
            let waiting = store.wait_notified("never", Duration::from_secs(60));
            let _ = tokio::time::timeout(Duration::from_millis(10), waiting).await;
            store.eval("return 1", &[], &[]).await.unwrap_err();
        });
        let mut found: HashMap<(String, Vec<(String, String)>), DebugValue> = HashMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            found.insert((key.key().name().to_owned(), labels(&key)), value);
        }
        let histogram =
            |name: &str, l: &[(&str, &str)]| match found.get(&(name.to_owned(), pairs(l))) {
                Some(DebugValue::Histogram(v)) => v.len(),
                other => panic!("{name} {l:?}: {other:?}; all: {:?}", found.keys()),
            };
        let counter = |name: &str, l: &[(&str, &str)]| match found.get(&(name.to_owned(), pairs(l)))
        {
            Some(DebugValue::Counter(n)) => *n,
            other => panic!("{name} {l:?}: {other:?}; all: {:?}", found.keys()),
        };
        use atomic_store::observe::names::*;
        let op = |o: &'static str, outcome: &'static str| {
            [
                ("backend", "memory"),
                ("operation", o),
                ("outcome", outcome),
            ]
        };
        assert_eq!(histogram(OPERATION_DURATION, &op("incr", "ok")), 2);
        assert_eq!(histogram(OPERATION_DURATION, &op("incr", "error")), 1);
        assert_eq!(
            histogram(OPERATION_DURATION, &op("wait_notified", "cancelled")),
            1
        );
        assert_eq!(
            counter(
                OPERATION_ERRORS,
                &[
                    ("backend", "memory"),
                    ("operation", "incr"),
                    ("error_kind", "not_an_integer")
                ]
            ),
            1
        );
        assert_eq!(counter(NONCE_ASSIGNED, &[("backend", "memory")]), 1);
        assert_eq!(
            histogram(LOCK_WAIT, &[("lock", "m-lock"), ("outcome", "acquired")]),
            1
        );
        assert_eq!(histogram(LOCK_HELD, &[("lock", "m-lock")]), 1);
        assert_eq!(histogram(OPERATION_DURATION, &op("eval", "unsupported")), 1);
        let errors: u64 = found
            .iter()
            .filter(|((name, _), _)| name == OPERATION_ERRORS)
            .map(|(_, v)| match v {
                DebugValue::Counter(n) => *n,
                _ => 0,
            })
            .sum();
        assert_eq!(
            errors,
            1,
            "unsupported answers are not errors: {:?}",
            found.keys()
        );
    }

    #[test]
    fn with_metrics_off_nothing_is_recorded() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let _installed = ::metrics::set_default_local_recorder(&recorder);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let layer = atomic_store::observe::TracingLayer::new().metrics(false);
            let store = atomic_store::open_with("memory://?prefix=quiet", Some(&layer)).unwrap();
            store.incr("n").await.unwrap();
        });
        assert!(snapshotter.snapshot().into_vec().is_empty());
    }
}

#[cfg(feature = "nonce")]
mod nonce {
    use super::*;
    use atomic_store::nonce::{Address, NonceManager, PendingNonceSource, RewindOutcome};

    /// A chain whose counts are fixed.
    #[derive(Debug)]
    struct Fixed(u64);

    #[async_trait::async_trait]
    impl PendingNonceSource for Fixed {
        async fn pending(&self, _: &Address) -> atomic_store::Result<u64> {
            Ok(self.0)
        }
        async fn confirmed(&self, _: &Address) -> atomic_store::Result<u64> {
            Ok(self.0)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_nonce_manager_traces_assign_rewind_and_reset_without_the_address() {
        capture();
        let store = atomic_store::open("memory://?prefix=obs-nonce").unwrap();
        let chain_id = 900_000 + u64::from(LockId::generate().as_str().as_bytes()[0]);
        let nonces = NonceManager::new(store, Arc::new(Fixed(5)), chain_id);
        let address: Address = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
            .parse()
            .unwrap();
        let nonce = nonces.assign(&address).await.unwrap();
        assert_eq!(
            nonces.rewind(&address, nonce).await.unwrap(),
            RewindOutcome::Rewound
        );
        nonces.reset(&address).await.unwrap();

        let chain = chain_id.to_string();
        let mine: Vec<Seen> = captured()
            .lock()
            .unwrap()
            .spans
            .iter()
            .filter(|s| s.name.starts_with("nonce.") && s.field("chain_id") == Some(&chain))
            .cloned()
            .collect();
        let names: Vec<(&str, &str)> = mine
            .iter()
            .map(|s| (s.name.as_str(), s.field("outcome").unwrap()))
            .collect();
        assert_eq!(
            names,
            [
                ("nonce.assign", "assigned"),
                ("nonce.rewind", "rewound"),
                ("nonce.reset", "reset")
            ]
        );
        for span in &mine {
            assert!(
                !format!("{span:?}").to_lowercase().contains("70997970"),
                "{span:?}"
            );
        }
        assert!(!spans_named("lock.wait", "nonce_reset").is_empty());
    }
}
