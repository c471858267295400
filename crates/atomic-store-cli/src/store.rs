//! How every command opens its store.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use atomic_store::observe::TracingLayer;
use atomic_store::AtomicStore;

/// Whether stores record metrics: only when something collects them, so
/// that a run without `--metrics-listen` pays nothing for them.
static METRICS: AtomicBool = AtomicBool::new(false);

pub fn record_metrics(on: bool) {
    METRICS.store(on, Ordering::Relaxed);
}

pub fn metrics_on() -> bool {
    METRICS.load(Ordering::Relaxed)
}

/// Open the store at `url`, traced; in a test build with
/// `ATOMIC_STORE_CLI_TEST_BREAK` set, a deliberately broken one.
pub fn open(url: &str) -> atomic_store::Result<Arc<dyn AtomicStore>> {
    let layer = TracingLayer::new();
    #[cfg(feature = "metrics")]
    let layer = layer.metrics(metrics_on());
    wrap(atomic_store::open_with(url, Some(&layer))?)
}

/// Open the store at `url` without the tracing layer (a bench baseline).
pub fn open_bare(url: &str) -> atomic_store::Result<Arc<dyn AtomicStore>> {
    wrap(atomic_store::open_with(url, None)?)
}

fn wrap(store: Arc<dyn AtomicStore>) -> atomic_store::Result<Arc<dyn AtomicStore>> {
    #[cfg(feature = "fault-injection")]
    let store = crate::fault::wrap(store)?;
    Ok(store)
}
