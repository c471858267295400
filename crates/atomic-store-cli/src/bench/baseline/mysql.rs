//! MySQL and MariaDB: the bare driver sending the store's own statement.

use std::sync::Arc;
use std::time::Duration;

use atomic_store::mysql::MysqlStore;
use atomic_store::AtomicStore;

use crate::bench::report::{Baseline, Workload};

/// The bare mysql_async driver, on the store's own pool, sending the very
/// `incr` statement the store sends: one send each, without the store's
/// timeout, retries and error mapping.
pub async fn run(
    url: &str,
    workload: Workload,
    concurrency: u32,
    duration: Duration,
) -> Result<Vec<Baseline>, String> {
    if workload != Workload::Incr {
        return Err("the raw MySQL baseline covers incr".into());
    }
    let store = Arc::new(MysqlStore::open(url).map_err(|e| e.to_string())?);
    let key = format!("bench-raw-{}-{concurrency}", std::process::id());
    // The store creates its tables (and connects) before the clock starts.
    store.incr(&key).await.map_err(|e| e.to_string())?;
    let ops = super::request_loop(concurrency, duration, {
        let (store, key) = (Arc::clone(&store), key.clone());
        move |_, _| {
            let (store, key) = (Arc::clone(&store), key.clone());
            async move { store.bare_incr(&key).await }
        }
    })
    .await;
    let _ = store.purge(&key).await;
    Ok(super::bare_client(
        "bare mysql_async loop, the store's incr statement",
        concurrency,
        ops,
    ))
}
