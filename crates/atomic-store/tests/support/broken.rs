//! Stores that each break one promise of the contract, and the lock recipe
//! checks that need only a store. A self-check runs every check against
//! each broken store and asserts that the check named for the promise
//! fails: a check that passes on a store breaking its promise proves
//! nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atomic_store::conformance::Store;
use atomic_store::lock::DistributedLock;
use atomic_store::rules::{check_ttl, check_value};
use atomic_store::{
    AtomicStore, Capabilities, EvalValue, ExtendOutcome, KeyInfo, Lock, LockId, Operation,
    ReleaseOutcome, Result,
};

/// The one promise a [`Broken`] store breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flaw {
    /// None: the control, which every check must pass.
    Nothing,
    /// `incr` and `assign_nonce` are applied twice, as a client that
    /// resends after a lost reply would, and the second result returned.
    ResendsAfterLostReply,
    /// `acquire_lock` always grants, taking the key from its holder.
    GrantsEveryLock,
    /// `release_lock` removes a live lock whatever the id.
    ReleasesAnyId,
    /// TTLs are ignored: nothing expires.
    NeverExpires,
    /// `delete` forgets the key's fencing counter, so tokens start again.
    ForgetsFencingOnDelete,
    /// `set` of a live key reports success and writes nothing.
    DropsOverwrites,
    /// `purge` is a plain delete: the key's last fencing token stays.
    PurgeKeepsFencing,
    /// The lock recipe's queue keys never expire, so the turn passes to a
    /// waiter that died and nobody takes the lock.
    KeepsDeadWaiters,
    /// `compare_and_set` writes whatever the key holds (a rewind or a pop
    /// done with a plain `set`).
    CasIgnoresExpected,
    /// `compare_and_set` is a read, a pause and a write (a pop done as
    /// `get` + `set`): two callers can both win on one value.
    CasNotAtomic,
}

impl Flaw {
    pub const ALL: &'static [Flaw] = &[
        Flaw::Nothing,
        Flaw::ResendsAfterLostReply,
        Flaw::GrantsEveryLock,
        Flaw::ReleasesAnyId,
        Flaw::NeverExpires,
        Flaw::ForgetsFencingOnDelete,
        Flaw::DropsOverwrites,
        Flaw::PurgeKeepsFencing,
        Flaw::KeepsDeadWaiters,
        Flaw::CasIgnoresExpected,
        Flaw::CasNotAtomic,
    ];
}

/// A memory store with one [`Flaw`].
pub struct Broken {
    inner: Store,
    flaw: Flaw,
    /// Fencing counters of [`Flaw::ForgetsFencingOnDelete`], by key.
    tokens: Mutex<HashMap<String, u64>>,
}

impl std::fmt::Debug for Broken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Broken({:?})", self.flaw)
    }
}

/// A fresh memory store that breaks `flaw`.
pub fn broken(flaw: Flaw) -> Store {
    Arc::new(Broken {
        inner: atomic_store::open("memory://").unwrap(),
        flaw,
        tokens: Mutex::default(),
    })
}

impl Broken {
    /// The TTL to really use: a valid one is dropped by `NeverExpires`
    /// (an invalid one still goes through, to be refused as it should).
    fn ttl(&self, op: Operation, ttl: Duration) -> Option<Duration> {
        if self.flaw == Flaw::NeverExpires && check_ttl("broken", op, ttl).is_ok() {
            None
        } else {
            Some(ttl)
        }
    }
}

#[async_trait]
impl AtomicStore for Broken {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn incr(&self, key: &str) -> Result<i64> {
        if self.flaw == Flaw::ResendsAfterLostReply {
            self.inner.incr(key).await?;
        }
        self.inner.incr(key).await
    }

    async fn acquire_lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock>> {
        let ttl = self
            .ttl(Operation::AcquireLock, ttl)
            .unwrap_or(atomic_store::rules::MAX_TTL);
        let mut lock = self.inner.acquire_lock(key, ttl).await?;
        if self.flaw == Flaw::GrantsEveryLock {
            for _ in 0..100 {
                if lock.is_some() {
                    break;
                }
                self.inner.delete(key).await?;
                lock = self.inner.acquire_lock(key, ttl).await?;
            }
        }
        if self.flaw == Flaw::ForgetsFencingOnDelete {
            lock = lock.map(|l| {
                let mut tokens = self.tokens.lock().unwrap();
                let token = tokens.entry(key.to_owned()).or_default();
                *token += 1;
                Lock::new(l.id, *token)
            });
        }
        Ok(lock)
    }

    async fn release_lock(&self, key: &str, id: &LockId) -> Result<ReleaseOutcome> {
        if self.flaw == Flaw::ReleasesAnyId {
            return Ok(if self.inner.delete(key).await? {
                ReleaseOutcome::Released
            } else {
                ReleaseOutcome::NotHeld
            });
        }
        self.inner.release_lock(key, id).await
    }

    async fn extend_lock(&self, key: &str, id: &LockId, ttl: Duration) -> Result<ExtendOutcome> {
        let ttl = self
            .ttl(Operation::ExtendLock, ttl)
            .unwrap_or(atomic_store::rules::MAX_TTL);
        self.inner.extend_lock(key, id, ttl).await
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        self.inner.get(key).await
    }

    async fn set(&self, key: &str, value: &str) -> Result<()> {
        if self.flaw == Flaw::DropsOverwrites
            && check_value("broken", Operation::Set, value).is_ok()
            && matches!(self.inner.get(key).await, Ok(Some(_)))
        {
            return Ok(());
        }
        self.inner.set(key, value).await
    }

    async fn set_with_ttl(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        let never = self.flaw == Flaw::KeepsDeadWaiters && key.contains(":queue:");
        match self.ttl(Operation::SetWithTtl, ttl) {
            Some(ttl) if !never => self.inner.set_with_ttl(key, value, ttl).await,
            _ => self.inner.set(key, value).await,
        }
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        if self.flaw == Flaw::ForgetsFencingOnDelete {
            self.tokens.lock().unwrap().remove(key);
        }
        self.inner.delete(key).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let ttl = ttl.and_then(|t| self.ttl(Operation::CompareAndSet, t));
        match self.flaw {
            Flaw::CasIgnoresExpected => {
                let current = self.inner.get(key).await?;
                self.inner
                    .compare_and_set(key, current.as_deref(), new, ttl)
                    .await
            }
            Flaw::CasNotAtomic => {
                let current = self.inner.get(key).await?;
                if current.as_deref() != expected {
                    return Ok(false);
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                let now = self.inner.get(key).await?;
                self.inner
                    .compare_and_set(key, now.as_deref(), new, ttl)
                    .await
            }
            _ => self.inner.compare_and_set(key, expected, new, ttl).await,
        }
    }

    async fn assign_nonce(&self, key: &str, pending: u64) -> Result<u64> {
        if self.flaw == Flaw::ResendsAfterLostReply {
            self.inner.assign_nonce(key, pending).await?;
        }
        self.inner.assign_nonce(key, pending).await
    }

    async fn eval(&self, script: &str, keys: &[&str], args: &[&str]) -> Result<EvalValue> {
        self.inner.eval(script, keys, args).await
    }

    async fn inspect(&self, key: &str) -> Result<KeyInfo> {
        let info = self.inner.inspect(key).await?;
        if self.flaw == Flaw::ForgetsFencingOnDelete {
            let token = self.tokens.lock().unwrap().get(key).copied();
            return Ok(KeyInfo::new(info.value, info.ttl, token));
        }
        Ok(info)
    }

    async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        self.inner.keys(prefix, limit).await
    }

    async fn notify(&self, key: &str) -> Result<()> {
        self.inner.notify(key).await
    }

    async fn wait_notified(&self, key: &str, timeout: Duration) -> Result<bool> {
        self.inner.wait_notified(key, timeout).await
    }

    async fn purge(&self, key: &str) -> Result<()> {
        self.tokens.lock().unwrap().remove(key);
        if self.flaw == Flaw::PurgeKeepsFencing {
            return self.inner.delete(key).await.map(|_| ());
        }
        self.inner.purge(key).await
    }
}

/// The result of a check that is not part of the conformance suite.
pub type Checked = std::result::Result<(), String>;

fn fresh_key(name: &str) -> String {
    format!("recipe-check:{}:{name}", &LockId::generate().as_str()[..10])
}

/// The lock recipe excludes also a client that bypasses its queue and
/// calls `acquire_lock` directly: 8 recipe tasks and one barging client,
/// never two inside at once. (A store that grants every lock fails this;
/// a check of the queue alone would not notice.)
pub async fn recipe_excludes_a_barging_client(store: &Store) -> Checked {
    let key = fresh_key("barged");
    let lock = DistributedLock::new(Arc::clone(store), key.clone(), Duration::from_secs(10));
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (lock, inside) = (lock.clone(), Arc::clone(&inside));
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                let guard = lock
                    .acquire(Duration::from_secs(20))
                    .await
                    .map_err(|e| format!("recipe acquire: {e}"))?;
                if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                    return Err("two holders at once (a recipe holder)".to_owned());
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                guard.release().await.map_err(|e| format!("release: {e}"))?;
            }
            Ok(())
        }));
    }
    let barging = {
        let (store, key, inside) = (Arc::clone(store), key.clone(), Arc::clone(&inside));
        tokio::spawn(async move {
            let deadline = Instant::now() + Duration::from_secs(2);
            while Instant::now() < deadline {
                if let Some(l) = store
                    .acquire_lock(&key, Duration::from_secs(10))
                    .await
                    .map_err(|e| format!("barging acquire: {e}"))?
                {
                    if inside.fetch_add(1, Ordering::SeqCst) != 0 {
                        return Err("two holders at once (the barging client)".to_owned());
                    }
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    store
                        .release_lock(&key, &l.id)
                        .await
                        .map_err(|e| format!("barging release: {e}"))?;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            Ok(())
        })
    };
    let mut result = barging.await.map_err(|e| e.to_string())?;
    for t in tasks {
        let r = t.await.map_err(|e| e.to_string())?;
        result = result.and(r);
    }
    result
}

/// A waiter that took its ticket and died (its presence key is never
/// refreshed) is skipped: a live waiter behind it gets the lock within a
/// few turn timeouts.
pub async fn recipe_skips_a_crashed_waiter(store: &Store) -> Checked {
    let key = fresh_key("crashed");
    let turn = Duration::from_millis(400);
    let lock = DistributedLock::new(Arc::clone(store), key.clone(), Duration::from_secs(10))
        .turn_timeout(turn);
    // The crashed waiter: a ticket and one presence write, as `acquire`
    // does before its first wait.
    let ticket = store
        .incr(&format!("{key}:queue:next"))
        .await
        .map_err(|e| e.to_string())?;
    store
        .set_with_ttl(&format!("{key}:queue:{ticket}"), "waiting", turn)
        .await
        .map_err(|e| e.to_string())?;
    let wait = turn * 10;
    let guard = lock.acquire(wait).await.map_err(|e| {
        format!("a live waiter behind a crashed one did not get the lock within {wait:?}: {e}")
    })?;
    guard.release().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// A boxed check future.
pub type CheckFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Checked> + Send + 'a>>;

/// A check that is not part of the conformance suite, by name.
pub type NamedCheck = (&'static str, fn(&Store) -> CheckFuture<'_>);

/// Every recipe check, by name.
pub fn recipe_checks() -> Vec<NamedCheck> {
    vec![
        ("recipe_excludes_a_barging_client", |s| {
            Box::pin(recipe_excludes_a_barging_client(s))
        }),
        ("recipe_skips_a_crashed_waiter", |s| {
            Box::pin(recipe_skips_a_crashed_waiter(s))
        }),
        #[cfg(feature = "nonce")]
        ("leases_stay_unique", |s| {
            Box::pin(super::leases::leases_stay_unique(s))
        }),
    ]
}

/// A store that sends a call again when its first attempt ended with an
/// unknown outcome, and reports the second answer: what a backend does
/// when it takes a lost reply for a request that was never sent (issue 12,
/// item 1). Over a real server, through the fault proxy.
#[derive(Debug)]
pub struct Resending {
    inner: Store,
}

pub fn resending(inner: Store) -> Store {
    Arc::new(Resending { inner })
}

/// The second attempt's answer when the first one's outcome is unknown.
macro_rules! resend {
    ($call:expr) => {
        match $call.await {
            Err(e) if e.kind() == atomic_store::ErrorKind::OutcomeUnknown => $call.await,
            other => other,
        }
    };
}

#[async_trait]
impl AtomicStore for Resending {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    async fn incr(&self, key: &str) -> Result<i64> {
        resend!(self.inner.incr(key))
    }

    async fn acquire_lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock>> {
        resend!(self.inner.acquire_lock(key, ttl))
    }

    async fn release_lock(&self, key: &str, id: &LockId) -> Result<ReleaseOutcome> {
        self.inner.release_lock(key, id).await
    }

    async fn extend_lock(&self, key: &str, id: &LockId, ttl: Duration) -> Result<ExtendOutcome> {
        self.inner.extend_lock(key, id, ttl).await
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        self.inner.get(key).await
    }

    async fn set(&self, key: &str, value: &str) -> Result<()> {
        self.inner.set(key, value).await
    }

    async fn set_with_ttl(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        self.inner.set_with_ttl(key, value, ttl).await
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key).await
    }

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        resend!(self.inner.compare_and_set(key, expected, new, ttl))
    }

    async fn assign_nonce(&self, key: &str, pending: u64) -> Result<u64> {
        resend!(self.inner.assign_nonce(key, pending))
    }

    async fn eval(&self, script: &str, keys: &[&str], args: &[&str]) -> Result<EvalValue> {
        resend!(self.inner.eval(script, keys, args))
    }

    async fn inspect(&self, key: &str) -> Result<KeyInfo> {
        self.inner.inspect(key).await
    }

    async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        self.inner.keys(prefix, limit).await
    }

    async fn notify(&self, key: &str) -> Result<()> {
        self.inner.notify(key).await
    }

    async fn wait_notified(&self, key: &str, timeout: Duration) -> Result<bool> {
        self.inner.wait_notified(key, timeout).await
    }

    async fn purge(&self, key: &str) -> Result<()> {
        self.inner.purge(key).await
    }
}
