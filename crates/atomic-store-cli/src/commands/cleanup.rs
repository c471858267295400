//! `verify` leaves nothing behind.
//!
//! The conformance suite deletes the keys it wrote, but a delete keeps on
//! purpose what the contract needs: fencing counters (Redis, SQL, MongoDB,
//! DynamoDB) and tombstones (ZooKeeper, DynamoDB), so that fencing tokens of
//! a key keep rising. The suite's keys live under random namespaces that no
//! one will lock again, so removing those traces breaks no promise. The
//! store has no operation for it, so this module records every key the
//! suite touches and removes its traces with each backend's own means.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use atomic_store::{
    AtomicStore, Capabilities, EvalValue, ExtendOutcome, KeyInfo, Lock, LockId, ReleaseOutcome,
    Result, Scheme,
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
}

/// The `?prefix=` of a store URL, as the store reads it (the last one wins).
#[cfg_attr(
    not(any(
        feature = "redis",
        feature = "sqlite",
        feature = "zookeeper",
        feature = "dynamodb",
        feature = "mongodb"
    )),
    allow(dead_code)
)]
fn url_prefix(url: &str) -> String {
    url_param(url, "prefix").unwrap_or_else(|| atomic_store::rules::DEFAULT_PREFIX.to_owned())
}

fn url_param(url: &str, name: &str) -> Option<String> {
    let query = url.split_once('?').map_or("", |(_, q)| q);
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| k == name)
        .last()
        .map(|(_, v)| v.into_owned())
}

/// Everything between `://` and `?`: hosts, path or file.
#[cfg_attr(not(any(feature = "sqlite", feature = "zookeeper")), allow(dead_code))]
fn url_location(url: &str) -> &str {
    let rest = url.split_once("://").map_or("", |(_, r)| r);
    rest.split_once('?').map_or(rest, |(l, _)| l)
}

/// Remove every trace of `keys` (keys of the store at `url`, without its
/// prefix): values, locks, fencing counters and tombstones.
pub async fn remove_traces(
    url: &str,
    store: &Arc<dyn AtomicStore>,
    keys: &[String],
) -> std::result::Result<(), String> {
    if keys.is_empty() {
        return Ok(());
    }
    for key in keys {
        store
            .delete(key)
            .await
            .map_err(|e| format!("cannot delete {key}: {e}"))?;
    }
    match Scheme::of(url).map_err(|e| e.to_string())? {
        // Nothing outlives a delete: the in-process store's fencing counter
        // is one for the whole store, and etcd's tokens are its revisions.
        Scheme::Memory | Scheme::Etcd => Ok(()),
        #[cfg(feature = "redis")]
        Scheme::Redis => redis_fences(store, keys, &stored_keys(url, keys)).await,
        #[cfg(feature = "postgres")]
        Scheme::Postgres => postgres_rows(url, store, keys).await,
        #[cfg(feature = "sqlite")]
        Scheme::Sqlite => sqlite_rows(url, stored_keys(url, keys)).await,
        #[cfg(feature = "zookeeper")]
        Scheme::Zookeeper => zookeeper_nodes(url, &stored_keys(url, keys)).await,
        #[cfg(feature = "dynamodb")]
        Scheme::Dynamodb => dynamodb_items(url, &stored_keys(url, keys)).await,
        #[cfg(feature = "mongodb")]
        Scheme::Mongodb => mongodb_documents(url, stored_keys(url, keys)).await,
        #[allow(unreachable_patterns)]
        _ => Err(format!(
            "this build cannot remove the fencing counters of {} keys: it lacks the backend's feature",
            keys.len()
        )),
    }
}

/// `keys` as the store at `url` stores them: with its prefix.
#[cfg_attr(
    not(any(
        feature = "redis",
        feature = "sqlite",
        feature = "zookeeper",
        feature = "dynamodb",
        feature = "mongodb"
    )),
    allow(dead_code)
)]
fn stored_keys(url: &str, keys: &[String]) -> Vec<String> {
    let prefix = url_prefix(url);
    keys.iter()
        .map(|k| atomic_store::rules::prefixed(&prefix, k))
        .collect()
}

/// Redis: the counter is a key of its own, in the lock's slot.
#[cfg(feature = "redis")]
async fn redis_fences(
    store: &Arc<dyn AtomicStore>,
    keys: &[String],
    full: &[String],
) -> std::result::Result<(), String> {
    // KEYS[1] routes the script to the slot the counter shares with its key.
    const DROP_FENCE: &str = "return redis.call('DEL', ARGV[1])";
    for (key, full) in keys.iter().zip(full) {
        let fence = String::from_utf8(atomic_store::redis::slots::fence_key(full))
            .map_err(|e| e.to_string())?;
        store
            .eval(DROP_FENCE, &[key], &[&fence])
            .await
            .map_err(|e| format!("cannot remove the fencing counter of {key}: {e}"))?;
    }
    Ok(())
}

/// PostgreSQL: rows of the value table and its `_fence` table.
#[cfg(feature = "postgres")]
async fn postgres_rows(
    url: &str,
    store: &Arc<dyn AtomicStore>,
    keys: &[String],
) -> std::result::Result<(), String> {
    // The store refused the URL if these were not plain identifiers.
    let schema = url_param(url, "schema").unwrap_or_else(|| "public".into());
    let table = url_param(url, "table").unwrap_or_else(|| "atomic_store".into());
    let sql = format!(
        "WITH gone AS (DELETE FROM \"{schema}\".\"{table}\" WHERE key = $1) \
         DELETE FROM \"{schema}\".\"{table}_fence\" WHERE key = $1"
    );
    for key in keys {
        store
            .eval(&sql, &[key], &[])
            .await
            .map_err(|e| format!("cannot remove the fencing counter of {key}: {e}"))?;
    }
    Ok(())
}

/// SQLite: rows of the value and fence tables, in one transaction.
#[cfg(feature = "sqlite")]
async fn sqlite_rows(url: &str, full: Vec<String>) -> std::result::Result<(), String> {
    // Decoded as the store decodes it (a `+` is a plus, not a space).
    let location = url_location(url).replace('+', "%2B");
    let path = url::form_urlencoded::parse(format!("x={location}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let work = move || -> rusqlite::Result<()> {
        let mut conn = rusqlite::Connection::open_with_flags(
            &path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE,
        )?;
        conn.busy_timeout(Duration::from_secs(5))?;
        let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        for key in &full {
            tx.execute("DELETE FROM atomic_store_kv WHERE key = ?1", [key])?;
            tx.execute("DELETE FROM atomic_store_fence WHERE key = ?1", [key])?;
        }
        tx.commit()
    };
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot remove the fencing counters: {e}"))
}

/// ZooKeeper: the tombstone znode of each key.
#[cfg(feature = "zookeeper")]
async fn zookeeper_nodes(url: &str, full: &[String]) -> std::result::Result<(), String> {
    use zookeeper_client as zk;
    let connect = zk::Client::connector()
        .with_session_timeout(Duration::from_secs(10))
        .with_connection_timeout(Duration::from_secs(5))
        .connect(url_location(url));
    let client = tokio::time::timeout(Duration::from_secs(10), connect)
        .await
        .map_err(|_| "cannot connect to ZooKeeper to remove tombstones: timed out".to_string())?
        .map_err(|e| format!("cannot connect to ZooKeeper to remove tombstones: {e}"))?;
    for key in full {
        let path = format!(
            "/atomic-store/{}",
            atomic_store::zookeeper::encode_name(key)
        );
        match client.delete(&path, None).await {
            Ok(()) | Err(zk::Error::NoNode) => {}
            Err(e) => return Err(format!("cannot remove the tombstone of {key}: {e}")),
        }
    }
    Ok(())
}

/// DynamoDB: the item of each key (kept emptied, with its counter).
#[cfg(feature = "dynamodb")]
async fn dynamodb_items(url: &str, full: &[String]) -> std::result::Result<(), String> {
    use aws_sdk_dynamodb::types::AttributeValue;
    let store = atomic_store::dynamodb::DynamoStore::open(url).map_err(|e| e.to_string())?;
    let client = store.sdk_client().await.map_err(|e| e.to_string())?;
    for key in full {
        client
            .delete_item()
            .table_name(store.table())
            .key("k", AttributeValue::S(key.clone()))
            .send()
            .await
            .map_err(|e| {
                format!(
                    "cannot remove the item of {key}: {}",
                    aws_sdk_dynamodb::error::DisplayErrorContext(&e)
                )
            })?;
    }
    Ok(())
}

/// MongoDB: the document of each key (kept emptied, with its counter).
#[cfg(feature = "mongodb")]
async fn mongodb_documents(url: &str, full: Vec<String>) -> std::result::Result<(), String> {
    use mongodb::bson::doc;
    let store = atomic_store::mongodb::MongoStore::open(url).map_err(|e| e.to_string())?;
    let collection = store.driver_collection().await.map_err(|e| e.to_string())?;
    collection
        .delete_many(doc! {"_id": {"$in": full}})
        .await
        .map(|_| ())
        .map_err(|e| format!("cannot remove the documents of the checks: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_parts_are_read_as_the_store_reads_them() {
        assert_eq!(url_prefix("redis://h:1"), "atomic");
        assert_eq!(url_prefix("redis://h:1?prefix=a&prefix=b%3Ac"), "b:c");
        assert_eq!(url_prefix("sqlite://x.db?prefix="), "");
        assert_eq!(
            url_location("zk://h1:1,h2:2/chroot?prefix=p"),
            "h1:1,h2:2/chroot"
        );
        assert_eq!(url_location("sqlite:///tmp/a.db"), "/tmp/a.db");
    }

    #[cfg(feature = "memory")]
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
