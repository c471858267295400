//! `verify` leaves nothing behind.
//!
//! The conformance suite deletes the keys it wrote, but a delete keeps on
//! purpose what the contract needs: fencing counters (Redis, SQL, MongoDB,
//! DynamoDB) and tombstones (ZooKeeper, DynamoDB), so that fencing tokens of
//! a key keep rising. The suite's keys live under random namespaces that no
//! one will lock again, so removing those traces breaks no promise. This
//! module records every key the suite touches and purges each one.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use atomic_store::{
    AtomicStore, Capabilities, EvalValue, ExtendOutcome, KeyInfo, Lock, LockId, ReleaseOutcome,
    Result,
};

/// Where the conformance suite puts every key it writes.
const SUITE_NAMESPACE: &str = "conformance:";

/// A store that remembers every key passed to it.
#[derive(Debug)]
pub struct Recorder {
    inner: Arc<dyn AtomicStore>,
    keys: Mutex<BTreeSet<String>>,
}

impl Recorder {
    pub fn new(inner: Arc<dyn AtomicStore>) -> Self {
        Recorder {
            inner,
            keys: Mutex::default(),
        }
    }

    fn note(&self, key: &str) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned());
    }

    /// The recorded keys of the conformance suite's namespaces (never an
    /// operator's key, whatever the suite did).
    pub fn suite_keys(&self) -> Vec<String> {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|k| k.starts_with(SUITE_NAMESPACE))
            .cloned()
            .collect()
    }
}

#[async_trait]
impl AtomicStore for Recorder {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn incr(&self, key: &str) -> Result<i64> {
        self.note(key);
        self.inner.incr(key).await
    }
    async fn acquire_lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock>> {
        self.note(key);
        self.inner.acquire_lock(key, ttl).await
    }
    async fn release_lock(&self, key: &str, id: &LockId) -> Result<ReleaseOutcome> {
        self.note(key);
        self.inner.release_lock(key, id).await
    }
    async fn extend_lock(&self, key: &str, id: &LockId, ttl: Duration) -> Result<ExtendOutcome> {
        self.note(key);
        self.inner.extend_lock(key, id, ttl).await
    }
    async fn get(&self, key: &str) -> Result<Option<String>> {
        self.note(key);
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, value: &str) -> Result<()> {
        self.note(key);
        self.inner.set(key, value).await
    }
    async fn set_with_ttl(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        self.note(key);
        self.inner.set_with_ttl(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.note(key);
        self.inner.delete(key).await
    }
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        self.note(key);
        self.inner.compare_and_set(key, expected, new, ttl).await
    }
    async fn assign_nonce(&self, key: &str, pending: u64) -> Result<u64> {
        self.note(key);
        self.inner.assign_nonce(key, pending).await
    }
    async fn eval(&self, script: &str, keys: &[&str], args: &[&str]) -> Result<EvalValue> {
        for key in keys {
            self.note(key);
        }
        self.inner.eval(script, keys, args).await
    }
    async fn inspect(&self, key: &str) -> Result<KeyInfo> {
        self.note(key);
        self.inner.inspect(key).await
    }
    async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        self.inner.keys(prefix, limit).await
    }
    async fn notify(&self, key: &str) -> Result<()> {
        self.note(key);
        self.inner.notify(key).await
    }
    async fn wait_notified(&self, key: &str, timeout: Duration) -> Result<bool> {
        self.note(key);
        self.inner.wait_notified(key, timeout).await
    }
    async fn purge(&self, key: &str) -> Result<()> {
        self.note(key);
        self.inner.purge(key).await
    }
}

/// Remove every trace of `keys`: values, locks, fencing counters and
/// tombstones ([`AtomicStore::purge`]).
pub async fn remove_traces(
    store: &Arc<dyn AtomicStore>,
    keys: &[String],
) -> std::result::Result<(), String> {
    for key in keys {
        store
            .purge(key)
            .await
            .map_err(|e| format!("cannot remove {key}: {e}"))?;
    }
    Ok(())
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_recorder_hands_out_only_keys_of_the_suite() {
        let store = Recorder::new(atomic_store::open("memory://").unwrap());
        store.set("conformance:abc:check:k", "v").await.unwrap();
        store.set("operator:k", "v").await.unwrap();
        store.incr("conformance:abc:check:n").await.unwrap();
        assert_eq!(
            store.suite_keys(),
            vec!["conformance:abc:check:k", "conformance:abc:check:n"]
        );
    }
}
