//! The background purge of expired rows, for the SQL backends: every
//! [`PURGE_EVERY`], each statement runs batch after batch of [`PURGE_BATCH`]
//! rows while batches come back full, so a backlog drains in one pass
//! without one long statement holding its locks.

use std::future::Future;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// How often a store purges.
pub(crate) const PURGE_EVERY: Duration = Duration::from_secs(5);
/// Rows per purge statement.
pub(crate) const PURGE_BATCH: u64 = 1000;
/// A pause between full batches, so other statements get the rows' locks.
const BETWEEN_BATCHES: Duration = Duration::from_millis(50);

/// Purge until the store is dropped. `run(store, step)` runs purge
/// statement `step` (of `steps`) once and returns the rows it touched.
pub(crate) fn spawn_purger<S, F, Fut, E>(
    backend: &'static str,
    store: Weak<S>,
    steps: usize,
    run: F,
) where
    S: Send + Sync + 'static,
    F: Fn(Arc<S>, usize) -> Fut + Send + 'static,
    Fut: Future<Output = Result<u64, E>> + Send,
    E: std::fmt::Display,
{
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(PURGE_EVERY).await;
            for step in 0..steps {
                loop {
                    let Some(store) = store.upgrade() else { return };
                    let full = match run(store, step).await {
                        Ok(n) => n >= PURGE_BATCH,
                        Err(e) => {
                            tracing::debug!("{backend} purge of expired rows failed: {e}");
                            false
                        }
                    };
                    if !full {
                        break;
                    }
                    tokio::time::sleep(BETWEEN_BATCHES).await;
                }
            }
        }
    });
}
