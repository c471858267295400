//! The one `impl AtomicStore` that every backend shares. It checks each
//! argument against [`rules`](crate::rules) and prefixes each key before the
//! backend sees it, so a backend is only the table that maps its driver onto
//! the contract, and no backend can skip a check or apply it differently.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

use crate::{
    Capabilities, Error, EvalValue, Handover, KeyInfo, Lock, LockId, Operation, QueueEntry,
    QueueTurn, Result,
};

/// A write as the backend receives it: the value and TTL, both checked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Write<'a> {
    pub value: &'a str,
    pub ttl: Option<Duration>,
}

/// A `compare_and_set` as the backend receives it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Swap<'a> {
    /// Replace only a live value equal to this (`None`: only a missing key).
    pub expected: Option<&'a str>,
    pub new: Write<'a>,
}

/// What [`Backend::if_owner`] does to a lock that its caller holds.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IfOwner {
    Release,
    /// Make it expire this long from now.
    Extend(Duration),
}

impl IfOwner {
    pub fn op(self) -> Operation {
        match self {
            IfOwner::Release => Operation::ReleaseLock,
            IfOwner::Extend(_) => Operation::ExtendLock,
        }
    }

    /// The new TTL of an extend.
    pub fn ttl(self) -> Option<Duration> {
        match self {
            IfOwner::Release => None,
            IfOwner::Extend(ttl) => Some(ttl),
        }
    }
}

/// What a backend implements. Every `key` is the stored key (prefix
/// included) of a key that passed [`rules::check_key`](crate::rules::check_key);
/// every value and TTL passed its check too, and `pending` is at most
/// `i64::MAX`. [`checked_store!`] turns it into an `AtomicStore`.
#[async_trait]
pub(crate) trait Backend: Named + Send + Sync + fmt::Debug + 'static {
    fn capabilities(&self) -> Capabilities;

    async fn incr(&self, key: String) -> Result<i64>;

    /// Whether [`incr_at_once`](Self::incr_at_once) can answer: only then is
    /// it called.
    const INCR_AT_ONCE: bool = false;

    /// `incr` of `key` (checked, without the prefix) answered at once, if
    /// the store can without waiting; `None` takes the path above. The
    /// memory store uses it to spare an existing counter a box and an
    /// allocation.
    fn incr_at_once(&self, key: &str) -> Option<Result<i64>> {
        let _ = key;
        None
    }

    async fn acquire_lock(&self, key: String, ttl: Duration) -> Result<Option<Lock>>;

    /// If `id` holds `key`, release or extend it. `Some(true)`: done;
    /// `Some(false)`: another holds it; `None`: nothing live holds it.
    async fn if_owner(&self, key: String, id: &LockId, then: IfOwner) -> Result<Option<bool>>;

    async fn get(&self, key: String) -> Result<Option<String>>;

    /// `set` (`op` is `Set`, no TTL) and `set_with_ttl`.
    async fn write(&self, op: Operation, key: String, write: Write<'_>) -> Result<()>;

    async fn delete(&self, key: String) -> Result<bool>;

    async fn compare_and_set(&self, key: String, swap: Swap<'_>) -> Result<bool>;

    async fn assign_nonce(&self, key: String, pending: u64) -> Result<u64>;

    async fn inspect(&self, key: String) -> Result<KeyInfo>;

    /// Called only when [`Capabilities::list_keys`] is true. Up to `limit`
    /// (at least 1) live stored keys that start with `start`
    /// (the store's prefix included), prefix and all.
    async fn keys(&self, start: String, limit: usize) -> Result<Vec<String>>;

    async fn purge(&self, key: String) -> Result<()> {
        self.delete(key).await.map(|_| ())
    }

    /// Called only when [`Capabilities::eval`] is true.
    async fn eval(&self, script: &str, keys: Vec<String>, args: &[&str]) -> Result<EvalValue> {
        let _ = (script, keys, args);
        Err(self.unsupported(Operation::Eval))
    }

    /// Called only when [`Capabilities::notifications`] is true (as is
    /// `wait_notified`).
    async fn notify(&self, key: String) -> Result<()> {
        let _ = key;
        Err(self.unsupported(Operation::Notify))
    }

    async fn wait_notified(&self, key: String, timeout: Duration) -> Result<bool> {
        let _ = (key, timeout);
        Err(self.unsupported(Operation::WaitNotified))
    }

    /// The lock queue; unsupported unless the backend has it natively.
    async fn lock_queue_enter(&self, key: String, entry: QueueEntry<'_>) -> Result<QueueTurn> {
        let _ = (key, entry);
        Err(self.unsupported(Operation::AcquireLock))
    }

    async fn lock_queue_release(
        &self,
        key: String,
        id: &LockId,
        handover_ttl: Duration,
    ) -> Result<Handover> {
        let _ = (key, id, handover_ttl);
        Err(self.unsupported(Operation::ReleaseLock))
    }

    /// The error for an operation the capabilities rule out, checked
    /// before the arguments, so it never depends on them.
    fn unsupported(&self, op: Operation) -> Error {
        Error::unsupported(Self::NAME, op)
    }
}

/// A backend's name and key prefix; [`checked_store!`] implements it.
pub(crate) trait Named {
    /// The backend's name, as errors give it.
    const NAME: &'static str;

    /// The key prefix, already checked.
    fn prefix(&self) -> &str;
}

/// The stored key of `key`, or why `key` is refused.
pub(crate) fn stored<B: Backend>(store: &B, op: Operation, key: &str) -> Result<String> {
    crate::rules::stored_key(B::NAME, op, store.prefix(), key)
}

/// `impl AtomicStore for $store` through its [`Backend`] impl, for a store
/// named `$name` whose key prefix is its field `prefix`.
#[allow(unused_macros)] // in a build without backends
macro_rules! checked_store {
    ($store:ty, $name:expr) => {
        impl $crate::backends::checked::Named for $store {
            const NAME: &'static str = $name;

            fn prefix(&self) -> &str {
                &self.prefix
            }
        }

        #[async_trait::async_trait]
        impl $crate::AtomicStore for $store {
            fn capabilities(&self) -> $crate::Capabilities {
                $crate::backends::checked::Backend::capabilities(self)
            }

            // Written out, not `async fn`: it returns the backend's own
            // future, so the hottest call pays one box, not two. Nothing is
            // applied before the future is polled: `incr_at_once` writes,
            // so it runs inside the future.
            fn incr<'a, 'k, 'f>(&'a self, key: &'k str) -> $crate::store::BoxedResult<'f, i64>
            where
                'a: 'f,
                'k: 'f,
                Self: 'f,
            {
                use $crate::backends::checked::{Backend, Named};
                let op = $crate::Operation::Incr;
                if <Self as Backend>::INCR_AT_ONCE {
                    return Box::pin(async move {
                        $crate::rules::check_key($name, op, key)?;
                        if let Some(done) = Backend::incr_at_once(self, key) {
                            return done;
                        }
                        Backend::incr(self, $crate::rules::prefixed(Named::prefix(self), key)).await
                    });
                }
                if let Err(e) = $crate::rules::check_key($name, op, key) {
                    return Box::pin(std::future::ready(Err(e)));
                }
                Backend::incr(self, $crate::rules::prefixed(Named::prefix(self), key))
            }

            async fn acquire_lock(
                &self,
                key: &str,
                ttl: std::time::Duration,
            ) -> $crate::Result<Option<$crate::Lock>> {
                use $crate::backends::checked::{stored, Backend};
                let op = $crate::Operation::AcquireLock;
                let key = stored(self, op, key)?;
                $crate::rules::check_ttl($name, op, ttl)?;
                Backend::acquire_lock(self, key, ttl).await
            }

            async fn release_lock(
                &self,
                key: &str,
                id: &$crate::LockId,
            ) -> $crate::Result<$crate::ReleaseOutcome> {
                use $crate::backends::checked::{stored, Backend};
                let op = $crate::Operation::ReleaseLock;
                let key = stored(self, op, key)?;
                let ours =
                    Backend::if_owner(self, key, id, $crate::backends::checked::IfOwner::Release)
                        .await?;
                Ok($crate::ReleaseOutcome::from_ownership(ours))
            }

            async fn extend_lock(
                &self,
                key: &str,
                id: &$crate::LockId,
                ttl: std::time::Duration,
            ) -> $crate::Result<$crate::ExtendOutcome> {
                use $crate::backends::checked::{stored, Backend};
                let op = $crate::Operation::ExtendLock;
                let key = stored(self, op, key)?;
                $crate::rules::check_ttl($name, op, ttl)?;
                let ours = Backend::if_owner(
                    self,
                    key,
                    id,
                    $crate::backends::checked::IfOwner::Extend(ttl),
                )
                .await?;
                Ok($crate::ExtendOutcome::from_ownership(ours))
            }

            async fn get(&self, key: &str) -> $crate::Result<Option<String>> {
                use $crate::backends::checked::{stored, Backend};
                Backend::get(self, stored(self, $crate::Operation::Get, key)?).await
            }

            async fn set(&self, key: &str, value: &str) -> $crate::Result<()> {
                $crate::backends::checked::write(self, $crate::Operation::Set, key, value, None)
                    .await
            }

            async fn set_with_ttl(
                &self,
                key: &str,
                value: &str,
                ttl: std::time::Duration,
            ) -> $crate::Result<()> {
                let op = $crate::Operation::SetWithTtl;
                $crate::backends::checked::write(self, op, key, value, Some(ttl)).await
            }

            async fn delete(&self, key: &str) -> $crate::Result<bool> {
                use $crate::backends::checked::{stored, Backend};
                Backend::delete(self, stored(self, $crate::Operation::Delete, key)?).await
            }

            async fn compare_and_set(
                &self,
                key: &str,
                expected: Option<&str>,
                new: &str,
                ttl: Option<std::time::Duration>,
            ) -> $crate::Result<bool> {
                $crate::backends::checked::compare_and_set(self, key, expected, new, ttl).await
            }

            async fn assign_nonce(&self, key: &str, pending: u64) -> $crate::Result<u64> {
                use $crate::backends::checked::{stored, Backend};
                let key = stored(self, $crate::Operation::AssignNonce, key)?;
                $crate::rules::check_pending($name, pending)?;
                Backend::assign_nonce(self, key, pending).await
            }

            async fn eval(
                &self,
                script: &str,
                keys: &[&str],
                args: &[&str],
            ) -> $crate::Result<$crate::EvalValue> {
                use $crate::backends::checked::{stored, Backend};
                if !Backend::capabilities(self).eval {
                    return Err(Backend::unsupported(self, $crate::Operation::Eval));
                }
                let keys = keys
                    .iter()
                    .map(|k| stored(self, $crate::Operation::Eval, k))
                    .collect::<$crate::Result<Vec<_>>>()?;
                Backend::eval(self, script, keys, args).await
            }

            async fn inspect(&self, key: &str) -> $crate::Result<$crate::KeyInfo> {
                use $crate::backends::checked::{stored, Backend};
                Backend::inspect(self, stored(self, $crate::Operation::Inspect, key)?).await
            }

            async fn keys(&self, prefix: &str, limit: usize) -> $crate::Result<Vec<String>> {
                $crate::backends::checked::keys(self, prefix, limit).await
            }

            async fn notify(&self, key: &str) -> $crate::Result<()> {
                use $crate::backends::checked::{stored, Backend};
                let op = $crate::Operation::Notify;
                if !Backend::capabilities(self).notifications {
                    return Err(Backend::unsupported(self, op));
                }
                Backend::notify(self, stored(self, op, key)?).await
            }

            async fn wait_notified(
                &self,
                key: &str,
                timeout: std::time::Duration,
            ) -> $crate::Result<bool> {
                use $crate::backends::checked::{stored, Backend};
                let op = $crate::Operation::WaitNotified;
                if !Backend::capabilities(self).notifications {
                    return Err(Backend::unsupported(self, op));
                }
                let key = stored(self, op, key)?;
                Backend::wait_notified(self, key, timeout).await
            }

            async fn lock_queue_enter(
                &self,
                key: &str,
                entry: $crate::QueueEntry<'_>,
            ) -> $crate::Result<$crate::QueueTurn> {
                $crate::backends::checked::lock_queue_enter(self, key, entry).await
            }

            async fn lock_queue_release(
                &self,
                key: &str,
                id: &$crate::LockId,
                handover_ttl: std::time::Duration,
            ) -> $crate::Result<$crate::Handover> {
                use $crate::backends::checked::{stored, Backend};
                let op = $crate::Operation::ReleaseLock;
                let key = stored(self, op, key)?;
                $crate::rules::check_ttl($name, op, handover_ttl)?;
                Backend::lock_queue_release(self, key, id, handover_ttl).await
            }

            async fn purge(&self, key: &str) -> $crate::Result<()> {
                use $crate::backends::checked::{stored, Backend};
                Backend::purge(self, stored(self, $crate::Operation::Purge, key)?).await
            }
        }
    };
}
#[allow(unused_imports)] // in a build without backends
pub(crate) use checked_store;

// The longer bodies, as functions so that the macro stays a table.

pub(crate) async fn write<B: Backend>(
    store: &B,
    op: Operation,
    key: &str,
    value: &str,
    ttl: Option<Duration>,
) -> Result<()> {
    let key = stored(store, op, key)?;
    crate::rules::check_write(B::NAME, op, value, ttl)?;
    store.write(op, key, Write { value, ttl }).await
}

pub(crate) async fn compare_and_set<B: Backend>(
    store: &B,
    key: &str,
    expected: Option<&str>,
    new: &str,
    ttl: Option<Duration>,
) -> Result<bool> {
    let op = Operation::CompareAndSet;
    let key = stored(store, op, key)?;
    crate::rules::check_write(B::NAME, op, new, ttl)?;
    let new = Write { value: new, ttl };
    store.compare_and_set(key, Swap { expected, new }).await
}

pub(crate) async fn keys<B: Backend>(store: &B, prefix: &str, limit: usize) -> Result<Vec<String>> {
    if !store.capabilities().list_keys {
        return Err(store.unsupported(Operation::Keys));
    }
    let start = crate::rules::stored_key_prefix(B::NAME, store.prefix(), prefix)?;
    // Several drivers read a limit of 0 as "no limit".
    if limit == 0 {
        return Ok(Vec::new());
    }
    let mut found = store.keys(start, limit).await?;
    found.truncate(limit);
    let own = store.prefix();
    Ok(found
        .iter()
        .map(|k| crate::rules::unprefixed(own, k).to_owned())
        .collect())
}

pub(crate) async fn lock_queue_enter<B: Backend>(
    store: &B,
    key: &str,
    entry: QueueEntry<'_>,
) -> Result<QueueTurn> {
    let op = Operation::AcquireLock;
    let key = stored(store, op, key)?;
    crate::rules::check_ttl(B::NAME, op, entry.ttl)?;
    if let Some(presence) = entry.presence {
        crate::rules::check_ttl(B::NAME, op, presence)?;
    }
    store.lock_queue_enter(key, entry).await
}
