//! The store commands: one function per subcommand.

use std::sync::Arc;

use atomic_store::{conformance, AtomicStore, ExtendOutcome, LockId, ReleaseOutcome};
use serde_json::json;

use crate::output::{Out, EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK, EXIT_USAGE};
use crate::{bench, Cli, Command, NonceArgs};

pub async fn run(cli: Cli) -> u8 {
    let out = Out { json: cli.json };
    match cli.command {
        Command::Bench(args) => return bench::run(&cli.url, args, out).await,
        Command::BenchWorker(args) => return bench::worker(&cli.url, args).await,
        _ => {}
    }
    let store = match crate::open_store(&cli.url) {
        Ok(store) => store,
        Err(e) => return out.error(&e),
    };
    if let Command::Verify = cli.command {
        return verify(&cli.url, store, out).await;
    }
    match execute(store, cli.command, out).await {
        Ok(code) => code,
        Err(e) => out.error(&e),
    }
}

async fn execute(
    store: Arc<dyn AtomicStore>,
    command: Command,
    out: Out,
) -> atomic_store::Result<u8> {
    let code = match command {
        Command::Get { key } => match store.get(&key).await? {
            Some(value) => {
                out.result(&value, json!({ "value": value }));
                EXIT_OK
            }
            None => {
                out.result("", json!({ "value": null }));
                if !out.json {
                    eprintln!("(not found)");
                }
                EXIT_NEGATIVE
            }
        },
        Command::Set { key, value, ttl } => {
            match ttl {
                Some(ttl) => store.set_with_ttl(&key, &value, ttl).await?,
                None => store.set(&key, &value).await?,
            }
            out.result("OK", json!({ "ok": true }));
            EXIT_OK
        }
        Command::Incr { key, count } => {
            let mut values = Vec::new();
            for _ in 0..count {
                let v = store.incr(&key).await?;
                if !out.json {
                    println!("{v}");
                }
                values.push(v);
            }
            if out.json {
                let object = if count == 1 {
                    json!({ "value": values[0] })
                } else {
                    json!({ "values": values })
                };
                out.result("", object);
            }
            EXIT_OK
        }
        Command::Del { key } => {
            let deleted = store.delete(&key).await?;
            out.result(
                if deleted { "deleted" } else { "not found" },
                json!({ "deleted": deleted }),
            );
            EXIT_OK
        }
        Command::Cas {
            key,
            expect,
            absent: _,
            new,
            ttl,
        } => {
            let swapped = store
                .compare_and_set(&key, expect.as_deref(), &new, ttl)
                .await?;
            out.result(
                if swapped {
                    "swapped"
                } else {
                    "not swapped: the current value differs"
                },
                json!({ "swapped": swapped }),
            );
            if swapped {
                EXIT_OK
            } else {
                EXIT_NEGATIVE
            }
        }
        Command::Lock { key, ttl } => match store.acquire_lock(&key, ttl).await? {
            Some(lock) => {
                out.result(
                    format!("acquired\nid: {}\nfencing token: {}", lock.id, lock.fencing_token),
                    json!({ "acquired": true, "id": lock.id.as_str(), "token": lock.fencing_token }),
                );
                EXIT_OK
            }
            None => {
                out.result(
                    "not acquired: the key is held",
                    json!({ "acquired": false }),
                );
                EXIT_NEGATIVE
            }
        },
        Command::Unlock {
            key,
            force: true,
            yes,
            ..
        } => force_unlock(store, &key, yes, out).await?,
        Command::Unlock { key, id, .. } => {
            let outcome = store
                .release_lock(&key, &LockId::from(id.unwrap_or_default()))
                .await?;
            out.result(outcome.as_str(), json!({ "outcome": outcome.as_str() }));
            if outcome == ReleaseOutcome::Released {
                EXIT_OK
            } else {
                EXIT_NEGATIVE
            }
        }
        Command::Extend { key, id, ttl } => {
            let outcome = store.extend_lock(&key, &LockId::from(id), ttl).await?;
            out.result(outcome.as_str(), json!({ "outcome": outcome.as_str() }));
            if outcome == ExtendOutcome::Extended {
                EXIT_OK
            } else {
                EXIT_NEGATIVE
            }
        }
        Command::Nonce(NonceArgs {
            action: Some(action),
            ..
        }) => return crate::nonce_cmd::run(store, action, out).await,
        Command::Nonce(NonceArgs {
            action: None,
            key,
            pending,
            count,
        }) => {
            let (key, pending) = (key.unwrap_or_default(), pending.unwrap_or_default());
            let mut values = Vec::new();
            for _ in 0..count {
                let n = store.assign_nonce(&key, pending).await?;
                if !out.json {
                    println!("{n}");
                }
                values.push(n);
            }
            if out.json {
                let object = if count == 1 {
                    json!({ "nonce": values[0] })
                } else {
                    json!({ "nonces": values })
                };
                out.result("", object);
            }
            EXIT_OK
        }
        Command::Verify => unreachable!("handled before execute"),
        Command::Inspect { key } => {
            let info = store.inspect(&key).await?;
            let ttl_ms = info.ttl.map(|t| t.as_millis() as u64);
            let mut lines = vec![format!(
                "value          {}",
                info.value
                    .as_deref()
                    .map_or("(none)".to_string(), |v| format!("{v:?}"))
            )];
            lines.push(format!(
                "ttl            {}",
                match (&info.value, info.ttl) {
                    (None, _) => "-".to_string(),
                    (Some(_), None) => "none (never expires)".to_string(),
                    (Some(_), Some(t)) => format!("{:.3}s left", t.as_secs_f64()),
                }
            ));
            if let Some(token) = info.fencing_token {
                lines.push(format!(
                    "lock           {}",
                    match &info.value {
                        Some(holder) => format!("held by {holder}"),
                        None => "free".to_string(),
                    }
                ));
                lines.push(format!(
                    "fencing token  {token} (the last one issued for this key)"
                ));
            }
            out.result(
                lines.join("\n"),
                json!({ "key": key, "value": info.value, "ttl_ms": ttl_ms, "fencing_token": info.fencing_token }),
            );
            if info.value.is_some() {
                EXIT_OK
            } else {
                EXIT_NEGATIVE
            }
        }
        Command::Keys { prefix, limit } => {
            let keys = store.keys(&prefix, limit as usize).await?;
            out.result(
                keys.join("\n"),
                json!({ "keys": keys, "count": keys.len() }),
            );
            EXIT_OK
        }
        Command::Bench(_) | Command::BenchWorker(_) => unreachable!("handled before opening"),
    };
    Ok(code)
}

/// Remove a stuck lock whoever holds it: show the holder, confirm, then a
/// compare-and-delete on that holder's id (so a lock taken meanwhile by
/// someone else is left alone).
async fn force_unlock(
    store: Arc<dyn AtomicStore>,
    key: &str,
    yes: bool,
    out: Out,
) -> atomic_store::Result<u8> {
    use std::io::{BufRead, IsTerminal, Write};
    let info = store.inspect(key).await?;
    let Some(holder) = info.value else {
        out.result(
            "not held: nothing to release",
            json!({ "outcome": "not_held" }),
        );
        return Ok(EXIT_NEGATIVE);
    };
    let ttl = info.ttl.map_or("no TTL".to_string(), |t| {
        format!("{:.1}s left", t.as_secs_f64())
    });
    if !out.json {
        println!("{key} is held by {holder} ({ttl})");
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            out.failure(
                "confirmation_needed",
                "refusing to force-release without confirmation: stdin is not a terminal; pass --yes",
            );
            return Ok(EXIT_USAGE);
        }
        print!("release it? [y/N] ");
        let _ = std::io::stdout().flush();
        let mut answer = String::new();
        let _ = std::io::stdin().lock().read_line(&mut answer);
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            out.result("left as it is", json!({ "outcome": "cancelled" }));
            return Ok(EXIT_NEGATIVE);
        }
    }
    let outcome = store
        .release_lock(key, &LockId::from(holder.as_str()))
        .await?;
    out.result(
        format!("{} (was held by {holder})", outcome.as_str()),
        json!({ "outcome": outcome.as_str(), "holder": holder }),
    );
    Ok(if outcome == ReleaseOutcome::Released {
        EXIT_OK
    } else {
        EXIT_NEGATIVE
    })
}

/// Run the conformance suite, then remove every trace of its keys.
async fn verify(url: &str, store: Arc<dyn AtomicStore>, out: Out) -> u8 {
    let backend = store.capabilities().backend;
    if !out.json {
        println!("verifying the {backend} store against the atomic-store contract");
    }
    let recorder = Arc::new(crate::cleanup::Recorder::new(Arc::clone(&store)));
    let recorded: Arc<dyn AtomicStore> = recorder.clone();
    let report = conformance::run_with(&recorded, |o| {
        if out.json {
            return;
        }
        let ms = o.elapsed.as_secs_f64() * 1000.0;
        match &o.result {
            Ok(()) => println!("PASS  {:<40} {ms:>9.1} ms", o.name),
            Err(e) => println!("FAIL  {:<40} {ms:>9.1} ms  {e}", o.name),
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
    let cleanup = crate::cleanup::remove_traces(url, &store, &recorder.suite_keys()).await;
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
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn verify_fails_on_a_store_that_breaks_the_contract() {
        let broken: Arc<dyn AtomicStore> = Arc::new(Broken(MemoryStore::new()));
        assert_eq!(
            verify("memory://", broken, Out { json: false }).await,
            EXIT_ERROR
        );
        let sound: Arc<dyn AtomicStore> = Arc::new(MemoryStore::new());
        assert_eq!(
            verify("memory://", sound, Out { json: true }).await,
            EXIT_OK
        );
    }
}
