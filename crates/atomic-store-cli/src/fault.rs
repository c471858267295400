//! Deliberately broken stores, so the CLI's own tests can show that `bench`
//! and `verify` catch a store that breaks a promise.
//!
//! Compiled in only with the cargo feature `fault-injection` (off by
//! default, for tests). With `ATOMIC_STORE_CLI_TEST_BREAK` set, every store
//! this binary opens, in `bench`'s worker processes too, is wrapped in the
//! fault it names, and a warning says so on stderr.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use atomic_store::{
    AtomicStore, Capabilities, Error, ErrorKind, EvalValue, ExtendOutcome, KeyInfo, Lock, LockId,
    Operation, ReleaseOutcome, Result,
};

/// The environment variable that names the fault.
pub const BREAK_VAR: &str = "ATOMIC_STORE_CLI_TEST_BREAK";

/// One broken promise.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Every 8th `incr` hands out this process's previous value again.
    DupIncr,
    /// Every 8th `assign_nonce` hands out this process's previous nonce again.
    DupNonce,
    /// `acquire_lock` grants every call, also on a key that is held.
    GrantAllLocks,
    /// `acquire_lock` grants nothing, so a contended bench does nothing.
    RefuseAllLocks,
}

impl Fault {
    const NAMES: [(&'static str, Fault); 4] = [
        ("dup-incr", Fault::DupIncr),
        ("dup-nonce", Fault::DupNonce),
        ("grant-all-locks", Fault::GrantAllLocks),
        ("refuse-all-locks", Fault::RefuseAllLocks),
    ];

    fn parse(name: &str) -> Option<Fault> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
    }
}

/// `store`, broken as `ATOMIC_STORE_CLI_TEST_BREAK` says (unchanged when it
/// is unset).
pub fn wrap(store: Arc<dyn AtomicStore>) -> Result<Arc<dyn AtomicStore>> {
    let Ok(name) = std::env::var(BREAK_VAR) else {
        return Ok(store);
    };
    let Some(fault) = Fault::parse(&name) else {
        let known: Vec<&str> = Fault::NAMES.iter().map(|(n, _)| *n).collect();
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            store.capabilities().backend,
            Operation::Open,
            format!(
                "{BREAK_VAR}=`{name}` names no fault; known: {}",
                known.join(", ")
            ),
        ));
    };
    eprintln!("warning: {BREAK_VAR}={name}: this store is deliberately broken (a test build)");
    Ok(Arc::new(Broken::new(store, fault)))
}

/// A store with one fault.
#[derive(Debug)]
pub struct Broken {
    inner: Arc<dyn AtomicStore>,
    fault: Fault,
    calls: AtomicU64,
    last: AtomicI64,
}

impl Broken {
    pub fn new(inner: Arc<dyn AtomicStore>, fault: Fault) -> Self {
        Broken {
            inner,
            fault,
            calls: AtomicU64::new(0),
            last: AtomicI64::new(-1),
        }
    }

    /// True on every 8th call once a value was handed out: repeat it.
    fn repeat_now(&self) -> Option<i64> {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        let last = self.last.load(Ordering::SeqCst);
        (n % 8 == 7 && last >= 0).then_some(last)
    }
}

#[async_trait]
impl AtomicStore for Broken {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn incr(&self, key: &str) -> Result<i64> {
        if self.fault == Fault::DupIncr {
            if let Some(again) = self.repeat_now() {
                return Ok(again);
            }
            let v = self.inner.incr(key).await?;
            self.last.store(v, Ordering::SeqCst);
            return Ok(v);
        }
        self.inner.incr(key).await
    }
    async fn acquire_lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock>> {
        match self.fault {
            Fault::RefuseAllLocks => Ok(None),
            Fault::GrantAllLocks => Ok(Some(
                self.inner
                    .acquire_lock(key, ttl)
                    .await?
                    .unwrap_or_else(|| Lock::new(LockId::generate(), 0)),
            )),
            _ => self.inner.acquire_lock(key, ttl).await,
        }
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
        self.inner.compare_and_set(key, expected, new, ttl).await
    }
    async fn assign_nonce(&self, key: &str, pending: u64) -> Result<u64> {
        if self.fault == Fault::DupNonce {
            if let Some(again) = self.repeat_now() {
                return Ok(again as u64);
            }
            let n = self.inner.assign_nonce(key, pending).await?;
            self.last.store(n as i64, Ordering::SeqCst);
            return Ok(n);
        }
        self.inner.assign_nonce(key, pending).await
    }
    async fn eval(&self, script: &str, keys: &[&str], args: &[&str]) -> Result<EvalValue> {
        self.inner.eval(script, keys, args).await
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
