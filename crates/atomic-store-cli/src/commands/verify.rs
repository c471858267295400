//! `verify`: the conformance suite against the store, then a cleanup.

use std::sync::Arc;

use atomic_store::{conformance, AtomicStore};
use serde_json::json;

use crate::output::{try_line, Out, EXIT_ERROR, EXIT_OK};

/// Run the conformance suite, then remove every trace of its keys.
pub async fn run(store: Arc<dyn AtomicStore>, out: Out) -> u8 {
    let backend = store.capabilities().backend;
    if !out.json {
        say!("verifying the {backend} store against the atomic-store contract");
    }
    let recorder = Arc::new(super::cleanup::Recorder::new(Arc::clone(&store)));
    let recorded: Arc<dyn AtomicStore> = recorder.clone();
    // A closed stdout must not stop the suite before its cleanup: the
    // lines stop, the checks and the cleanup go on, and the exit is 1.
    let closed = std::sync::atomic::AtomicBool::new(false);
    let report = conformance::run_with(&recorded, |o| {
        if out.json || closed.load(std::sync::atomic::Ordering::Relaxed) {
            return;
        }
        let ms = o.elapsed.as_secs_f64() * 1000.0;
        let printed = match &o.result {
            Ok(()) => try_line(format_args!("PASS  {:<40} {ms:>9.1} ms", o.name)),
            Err(e) => try_line(format_args!("FAIL  {:<40} {ms:>9.1} ms  {e}", o.name)),
        };
        if printed.is_err() {
            closed.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    })
    .await;
    let failed = report.failures().count();
    let total = report.outcomes.len();
    let checks: Vec<_> = report
        .outcomes
        .iter()
        .map(|o| {
            json!({
                "name": o.name,
                "passed": o.result.is_ok(),
                "ms": o.elapsed.as_secs_f64() * 1000.0,
                "failure": o.result.as_ref().err().map(|e| e.to_string()),
            })
        })
        .collect();
    let cleanup = super::cleanup::remove_traces(&store, &recorder.suite_keys()).await;
    let cleanup_error = cleanup.as_ref().err();
    let mut summary = format!("{} passed, {failed} failed", total - failed);
    if let Some(e) = cleanup_error {
        summary.push_str(&format!(
            "\ncleanup failed, keys under conformance: were left behind: {e}"
        ));
    }
    out.result(
        summary,
        json!({ "backend": backend, "passed": total - failed, "failed": failed, "checks": checks, "cleanup_error": cleanup_error }),
    );
    if failed == 0 && cleanup.is_ok() {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}

#[cfg(all(test, feature = "memory"))]
mod tests {
    use std::time::Duration;

    use async_trait::async_trait;
    use atomic_store::memory::MemoryStore;
    use atomic_store::{
        Capabilities, EvalValue, ExtendOutcome, KeyInfo, Lock, LockId, ReleaseOutcome, Result,
    };

    use super::*;

    /// A deliberately broken store: `incr` is a read then a write (lost
    /// updates under concurrency) and a release always claims success.
    #[derive(Debug)]
    struct Broken(MemoryStore);

    #[async_trait]
    impl AtomicStore for Broken {
        fn capabilities(&self) -> Capabilities {
            self.0.capabilities()
        }
        async fn incr(&self, key: &str) -> Result<i64> {
            let v: i64 = self.0.get(key).await?.map_or(0, |v| v.parse().unwrap_or(0));
            tokio::task::yield_now().await;
            self.0.set(key, &(v + 1).to_string()).await?;
            Ok(v + 1)
        }
        async fn acquire_lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock>> {
            self.0.acquire_lock(key, ttl).await
        }
        async fn release_lock(&self, key: &str, id: &LockId) -> Result<ReleaseOutcome> {
            self.0.release_lock(key, id).await?;
            Ok(ReleaseOutcome::Released)
        }
        async fn extend_lock(
            &self,
            key: &str,
            id: &LockId,
            ttl: Duration,
        ) -> Result<ExtendOutcome> {
            self.0.extend_lock(key, id, ttl).await
        }
        async fn get(&self, key: &str) -> Result<Option<String>> {
            self.0.get(key).await
        }
        async fn set(&self, key: &str, value: &str) -> Result<()> {
            self.0.set(key, value).await
        }
        async fn set_with_ttl(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
            self.0.set_with_ttl(key, value, ttl).await
        }
        async fn delete(&self, key: &str) -> Result<bool> {
            self.0.delete(key).await
        }
        async fn compare_and_set(
            &self,
            key: &str,
            expected: Option<&str>,
            new: &str,
            ttl: Option<Duration>,
        ) -> Result<bool> {
            self.0.compare_and_set(key, expected, new, ttl).await
        }
        async fn assign_nonce(&self, key: &str, pending: u64) -> Result<u64> {
            self.0.assign_nonce(key, pending).await
        }
        async fn eval(&self, script: &str, keys: &[&str], args: &[&str]) -> Result<EvalValue> {
            self.0.eval(script, keys, args).await
        }
        async fn inspect(&self, key: &str) -> Result<KeyInfo> {
            self.0.inspect(key).await
        }
        async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
            self.0.keys(prefix, limit).await
        }
        async fn notify(&self, key: &str) -> Result<()> {
            self.0.notify(key).await
        }
        async fn wait_notified(&self, key: &str, timeout: Duration) -> Result<bool> {
            self.0.wait_notified(key, timeout).await
        }
        async fn purge(&self, key: &str) -> Result<()> {
            self.0.purge(key).await
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn verify_fails_on_a_store_that_breaks_the_contract() {
        let broken: Arc<dyn AtomicStore> = Arc::new(Broken(MemoryStore::new()));
        assert_eq!(run(broken, Out { json: false }).await, EXIT_ERROR);
        let sound: Arc<dyn AtomicStore> = Arc::new(MemoryStore::new());
        assert_eq!(run(sound, Out { json: true }).await, EXIT_OK);
    }
}
