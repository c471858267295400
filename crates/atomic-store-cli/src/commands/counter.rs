//! `incr` and `nonce KEY --pending N`: draw values, printing each.

use std::future::Future;

use atomic_store::{AtomicStore, Result};
use serde::Serialize;
use serde_json::json;

use crate::output::{Out, EXIT_OK};

pub async fn incr(store: &dyn AtomicStore, key: &str, count: u64, out: Out) -> Result<u8> {
    draw(count, out, ("value", "values"), || store.incr(key)).await
}

pub async fn assign_nonce(
    store: &dyn AtomicStore,
    key: &str,
    pending: u64,
    count: u64,
    out: Out,
) -> Result<u8> {
    draw(count, out, ("nonce", "nonces"), || {
        store.assign_nonce(key, pending)
    })
    .await
}

/// Call `next` `count` times, printing each value as it comes; with
/// `--json`, one object at the end of one shape whatever the count: the
/// last value under the singular name and all of them under the plural.
async fn draw<T, F, Fut>(count: u64, out: Out, (one, many): (&str, &str), mut next: F) -> Result<u8>
where
    T: Serialize + std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut values = Vec::new();
    for _ in 0..count {
        let v = next().await?;
        if !out.json {
            say!("{v}");
        }
        values.push(v);
    }
    if out.json {
        out.result("", json!({ one: values.last(), many: values }));
    }
    Ok(EXIT_OK)
}
