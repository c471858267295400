//! DynamoDB: the bare AWS SDK sending the store's own requests.

use std::sync::Arc;
use std::time::Duration;

use atomic_store::dynamodb::DynamoStore;
use atomic_store::{AtomicStore, LockId};
use aws_sdk_dynamodb::types::AttributeValue;

use crate::bench::report::{Baseline, Workload};

/// The bench workers' lock TTL.
const LOCK_TTL: Duration = Duration::from_secs(30);

/// The bare AWS SDK (the store's client) sending the very `UpdateItem`
/// requests the store's common path sends, as the store builds them: one
/// send each, without the store's retries, read-backs and error mapping.
pub async fn run(
    url: &str,
    workload: Workload,
    concurrency: u32,
    duration: Duration,
) -> Result<Vec<Baseline>, String> {
    let store = Arc::new(DynamoStore::open(url).map_err(|e| e.to_string())?);
    // Connect and check the table before the clock starts. Missing items
    // need no setup: every request below creates its item.
    store.sdk_client().await.map_err(|e| e.to_string())?;
    let run = format!("bench-raw-{}-{concurrency}", std::process::id());
    let counter = format!("{run}-counter");
    let lock_key = move |task: u32| format!("{run}-lock-{task}");
    let (name, ops, keys) = match workload {
        Workload::Incr => {
            let ops = super::request_loop(concurrency, duration, {
                let (store, key) = (Arc::clone(&store), counter.clone());
                move |_, _| {
                    let (store, key) = (Arc::clone(&store), key.clone());
                    async move {
                        match store.incr_request(&key).await {
                            Ok(request) => request.send().await.is_ok(),
                            Err(_) => false,
                        }
                    }
                }
            })
            .await;
            (
                "bare aws-sdk-dynamodb UpdateItem loop, the store's incr request",
                ops,
                vec![counter],
            )
        }
        Workload::Nonce => {
            let ops = super::nonce_loop(concurrency, duration, 0, {
                let (store, key) = (Arc::clone(&store), counter.clone());
                move |pending| {
                    let (store, key) = (Arc::clone(&store), key.clone());
                    async move {
                        let request = store.assign_nonce_request(&key, pending).await.ok()?;
                        match request.send().await.ok()?.attributes?.get("n") {
                            Some(AttributeValue::N(n)) => n.parse::<u64>().ok(),
                            _ => None,
                        }
                    }
                }
            })
            .await;
            (
                "bare aws-sdk-dynamodb UpdateItem loop, the store's assign_nonce request",
                ops,
                vec![counter],
            )
        }
        Workload::Lock => {
            let keys: Vec<String> = (0..concurrency).map(&lock_key).collect();
            let ops = super::lock_loop(Arc::clone(&store), duration, &keys, cycle).await;
            (
                "bare aws-sdk-dynamodb loop, the store's take + release requests",
                ops,
                keys,
            )
        }
        _ => return Err("the raw DynamoDB baseline covers incr, nonce and lock".into()),
    };
    for key in keys {
        let _ = store.purge(&key).await;
    }
    Ok(super::bare_client(name, concurrency, ops))
}

/// One take + release cycle, each request sent once as the store builds it.
async fn cycle(store: Arc<DynamoStore>, key: String, id: LockId) -> bool {
    let Ok(take) = store.acquire_lock_request(&key, &id, LOCK_TTL).await else {
        return false;
    };
    let Ok(release) = store.release_lock_request(&key, &id).await else {
        return false;
    };
    take.send().await.is_ok() && release.send().await.is_ok()
}
