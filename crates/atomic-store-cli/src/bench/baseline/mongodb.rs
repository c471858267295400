//! MongoDB: the bare driver sending the store's own findOneAndUpdate
//! requests.

use std::sync::Arc;
use std::time::Duration;

use atomic_store::mongodb::MongoStore;
use atomic_store::{AtomicStore, LockId};
use mongodb::bson::{Bson, Document};

use crate::bench::report::{Baseline, Workload};

/// The bench workers' lock TTL.
const LOCK_TTL: Duration = Duration::from_secs(30);

/// The bare MongoDB driver (the store's collection) sending the very
/// findOneAndUpdate requests the store's common path sends, as the store
/// builds them: one send each, without the store's retries, read-backs and
/// error mapping.
pub async fn run(
    url: &str,
    workload: Workload,
    concurrency: u32,
    duration: Duration,
) -> Result<Vec<Baseline>, String> {
    let store = Arc::new(MongoStore::open(url).map_err(|e| e.to_string())?);
    let run = format!("bench-raw-{}-{concurrency}", std::process::id());
    let counter = format!("{run}-counter");
    let lock_key = move |task: u32| format!("{run}-lock-{task}");
    // The common path's requests change existing documents only: the
    // store's own calls create them (and connect) before the clock starts.
    let (name, ops, keys) = match workload {
        Workload::Incr => {
            store.incr(&counter).await.map_err(|e| e.to_string())?;
            let ops = super::request_loop(concurrency, duration, {
                let (store, key) = (Arc::clone(&store), counter.clone());
                move |_, _| {
                    let (store, key) = (Arc::clone(&store), key.clone());
                    async move {
                        match store.incr_request(&key).await {
                            Ok(request) => request.await.is_ok_and(|d| d.is_some()),
                            Err(_) => false,
                        }
                    }
                }
            })
            .await;
            (
                "bare mongodb driver findOneAndUpdate loop, the store's incr request",
                ops,
                vec![counter],
            )
        }
        Workload::Nonce => {
            // The store creates the document; the bare requests take the
            // common path from there.
            let first = store
                .assign_nonce(&counter, 0)
                .await
                .map_err(|e| e.to_string())?;
            let ops = super::nonce_loop(concurrency, duration, first + 1, {
                let (store, key) = (Arc::clone(&store), counter.clone());
                move |pending| {
                    let (store, key) = (Arc::clone(&store), key.clone());
                    async move {
                        let request = store.assign_nonce_request(&key, pending).await.ok()?;
                        counter_value(&request.await.ok()??)
                    }
                }
            })
            .await;
            (
                "bare mongodb driver findOneAndUpdate loop, the store's assign_nonce request",
                ops,
                vec![counter],
            )
        }
        Workload::Lock => {
            let keys: Vec<String> = (0..concurrency).map(&lock_key).collect();
            for key in &keys {
                let lock = store
                    .acquire_lock(key, LOCK_TTL)
                    .await
                    .map_err(|e| e.to_string())?
                    .ok_or_else(|| format!("the baseline's lock key {key} is held"))?;
                store
                    .release_lock(key, &lock.id)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            let ops = super::lock_loop(Arc::clone(&store), duration, &keys, cycle).await;
            (
                "bare mongodb driver loop, the store's take + release requests",
                ops,
                keys,
            )
        }
        _ => return Err("the raw MongoDB baseline covers incr, nonce and lock".into()),
    };
    for key in keys {
        let _ = store.purge(&key).await;
    }
    Ok(super::bare_client(name, concurrency, ops))
}

/// The counter `n` of a returned document. The store writes an Int64, but a
/// server may narrow small numbers to Int32; the store reads both.
fn counter_value(d: &Document) -> Option<u64> {
    match d.get("n")? {
        Bson::Int64(n) => u64::try_from(*n).ok(),
        Bson::Int32(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// One take + release cycle, each request sent once as the store builds it;
/// a request that matched no document did not take or release.
async fn cycle(store: Arc<MongoStore>, key: String, id: LockId) -> bool {
    let took = match store.acquire_lock_request(&key, &id, LOCK_TTL).await {
        Ok(request) => matches!(request.await, Ok(Some(_))),
        Err(_) => false,
    };
    took && match store.release_lock_request(&key, &id).await {
        Ok(request) => matches!(request.await, Ok(Some(_))),
        Err(_) => false,
    }
}
