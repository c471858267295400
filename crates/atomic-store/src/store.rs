//! The contract: [`AtomicStore`] and the values it exchanges.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;

use crate::{Error, Operation, Result};

/// The identity of one lock holder.
///
/// Ids made by this crate are 128 bits from the operating system's CSPRNG,
/// written as 32 lowercase hex digits, so no other process can guess them.
/// Any string is accepted as an id, so that a lock taken by another client of
/// the same layout (for example the TypeScript original) can be released with
/// the id that client holds.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct LockId(String);

impl LockId {
    /// A fresh, unguessable id.
    ///
    /// # Panics
    /// Panics only if the operating system has no random source at all.
    pub fn generate() -> Self {
        let mut bytes = [0u8; 16];
        getrandom::fill(&mut bytes).expect("the operating system CSPRNG is unavailable");
        let mut hex = String::with_capacity(32);
        for b in bytes {
            hex.push_str(&format!("{b:02x}"));
        }
        LockId(hex)
    }

    /// The id's string form, as stored under the lock key.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Which client made `value`, if it has the form of a lock id: this
    /// crate's (32 lowercase hex digits) or the TypeScript SDK's (Unix
    /// milliseconds, a dash, base-36 characters). For operators' tools
    /// only: any string can be a lock id, and a value can look like one.
    ///
    /// ```
    /// use atomic_store::{LockId, LockIdForm};
    /// assert_eq!(LockId::form_of(LockId::generate().as_str()), Some(LockIdForm::AtomicStore));
    /// assert_eq!(LockId::form_of("1733011200000-k3j5x9q2m1a"), Some(LockIdForm::TypeScriptSdk));
    /// assert_eq!(LockId::form_of("42"), None);
    /// ```
    pub fn form_of(value: &str) -> Option<LockIdForm> {
        let ours = value.len() == 32
            && value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let sdk = value.split_once('-').is_some_and(|(ms, random)| {
            (10..=16).contains(&ms.len())
                && ms.bytes().all(|b| b.is_ascii_digit())
                && (1..=16).contains(&random.len())
                && random
                    .bytes()
                    .all(|b| b.is_ascii_digit() || b.is_ascii_lowercase())
        });
        match (ours, sdk) {
            (true, _) => Some(LockIdForm::AtomicStore),
            (_, true) => Some(LockIdForm::TypeScriptSdk),
            _ => None,
        }
    }
}

/// The forms of lock id that [`LockId::form_of`] recognises.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum LockIdForm {
    /// [`LockId::generate`]'s.
    AtomicStore,
    /// The TypeScript SDK's `acquireLock`.
    TypeScriptSdk,
}

impl From<String> for LockId {
    fn from(s: String) -> Self {
        LockId(s)
    }
}

impl From<&str> for LockId {
    fn from(s: &str) -> Self {
        LockId(s.to_owned())
    }
}

impl fmt::Display for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LockId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LockId({})", self.0)
    }
}

/// A lock that was acquired: its holder id and its fencing token.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Lock {
    /// The holder's id; pass it to release or extend the lock.
    pub id: LockId,
    /// Strictly greater than every token issued before for this key by this
    /// store, also across expiry and deletion. Pass it along with every write
    /// the lock protects, so the resource can refuse a stale holder.
    pub fencing_token: u64,
}

impl Lock {
    /// A lock value, for implementations of [`AtomicStore`].
    pub fn new(id: LockId, fencing_token: u64) -> Self {
        Lock { id, fencing_token }
    }
}

/// What [`AtomicStore::release_lock`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ReleaseOutcome {
    /// The lock was held by this id and is now gone.
    Released,
    /// Nothing live was under the key (the lock expired or was removed).
    NotHeld,
    /// Another id, or a plain value, holds the key; it was left untouched.
    HeldByOther,
}

/// A waiter in a lock's queue, as [`AtomicStore::lock_queue_enter`] takes it.
#[derive(Debug, Clone, Copy)]
pub struct QueueEntry<'a> {
    /// The waiter's id: the lock id it will hold.
    pub waiter: &'a LockId,
    /// The lock's TTL once this waiter holds it.
    pub ttl: Duration,
    /// How long the waiter's place survives without another call;
    /// `None`: take the lock only if it is free and nobody waits, never
    /// join the queue.
    pub presence: Option<Duration>,
}

/// The answer to [`AtomicStore::lock_queue_enter`].
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueTurn {
    /// The waiter holds the lock, for the TTL it asked for.
    Acquired(Lock),
    /// The waiter is in the queue with this many live waiters ahead (or,
    /// for a `presence` of `None`, was not queued).
    Waiting {
        /// Live waiters ahead of this one.
        ahead: u64,
    },
}

/// What [`AtomicStore::lock_queue_release`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handover {
    /// What happened to the caller's own hold.
    pub outcome: ReleaseOutcome,
    /// The waiter that now holds the lock, if it was handed over.
    pub next: Option<HandedTo>,
}

/// A waiter that was handed the lock in the same step as a release.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandedTo {
    /// The waiter's id, now the lock's value.
    pub waiter: LockId,
    /// The fencing token of its hold.
    pub fencing_token: u64,
    /// The TTL the lock was handed over with; short, so that a lock handed
    /// to a waiter that has just died comes back soon.
    pub valid_for: Duration,
}

/// What [`AtomicStore::extend_lock`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExtendOutcome {
    /// The lock is held by this id and now expires `ttl` from now.
    Extended,
    /// Nothing live was under the key.
    NotHeld,
    /// Another id, or a plain value, holds the key; it was left untouched.
    HeldByOther,
}

macro_rules! outcome_names {
    ($ty:ty { $($variant:ident => $name:literal),* $(,)? }) => {
        impl $ty {
            /// A short, stable, snake_case name.
            pub fn as_str(self) -> &'static str {
                match self { $(Self::$variant => $name),* }
            }
        }
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
outcome_names!(ReleaseOutcome { Released => "released", NotHeld => "not_held", HeldByOther => "held_by_other" });
outcome_names!(ExtendOutcome { Extended => "extended", NotHeld => "not_held", HeldByOther => "held_by_other" });

/// A typed result of [`AtomicStore::eval`].
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum EvalValue {
    /// No value (Redis nil, SQL NULL).
    Nil,
    /// An integer.
    Integer(i64),
    /// A text value.
    Text(String),
    /// A value that is not valid UTF-8.
    Bytes(Vec<u8>),
    /// A status reply (Redis `OK`).
    Status(String),
    /// An error nested inside a larger reply. A failing script as a whole is
    /// an [`Error`](crate::Error) of kind [`Script`](crate::ErrorKind::Script).
    Error(String),
    /// A list of values (a Lua table, or rows of columns).
    Array(Vec<EvalValue>),
}

/// What an operator sees of one key ([`AtomicStore::inspect`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct KeyInfo {
    /// The live value (for a held lock: the holder's id).
    pub value: Option<String>,
    /// Time left before the key expires; `None` without a TTL.
    pub ttl: Option<Duration>,
    /// The last fencing token issued for this key, if a lock was ever taken
    /// on it and the backend still knows it (etcd only knows the token of a
    /// lock that is still held).
    pub fencing_token: Option<u64>,
}

impl KeyInfo {
    /// A key info value, for implementations of [`AtomicStore`].
    pub fn new(value: Option<String>, ttl: Option<Duration>, fencing_token: Option<u64>) -> Self {
        KeyInfo {
            value,
            ttl,
            fencing_token,
        }
    }

    /// For stores that keep a deadline in Unix milliseconds (`None`: no
    /// TTL) and read it at `now_ms`: the TTL left, if there is a value.
    #[allow(dead_code)] // in builds with none of those stores
    pub(crate) fn at_deadline(
        value: Option<String>,
        deadline_ms: Option<i64>,
        now_ms: i64,
        fencing_token: Option<u64>,
    ) -> Self {
        let left = |at: i64| Duration::from_millis(at.saturating_sub(now_ms).max(0) as u64);
        let ttl = value.as_ref().and(deadline_ms).map(left);
        Self::new(value, ttl, fencing_token)
    }
}

/// Which clock decides when a key expires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ExpiryClock {
    /// The server's clock: clients' clocks may disagree freely.
    Server,
    /// The clock of the machine the store runs on (embedded stores): shared by
    /// every process on that machine.
    Local,
    /// Each client's own clock: clients must keep their clocks in sync within
    /// the skew the backend documents.
    Client,
}

/// What a backend supports, and how precisely it keeps TTLs.
///
/// Operations a backend lacks return an error of kind
/// [`Unsupported`](crate::ErrorKind::Unsupported) naming the backend and the
/// operation; they never fall back to a silent default.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The backend's name, as used in errors.
    pub backend: &'static str,
    /// `eval` runs scripts.
    pub eval: bool,
    /// The language `eval` takes (`"lua"`, `"sql"`), when `eval` is true.
    pub eval_language: Option<&'static str>,
    /// A TTL'd key is alive before `ttl` and gone by `ttl + ttl_resolution`.
    pub ttl_resolution: Duration,
    /// Expired keys are removed by the backend itself, not only hidden.
    pub native_ttl: bool,
    /// Which clock decides expiry.
    pub expiry_clock: ExpiryClock,
    /// Safe to share between OS processes on one machine.
    pub cross_process: bool,
    /// Safe to share between machines.
    pub cross_host: bool,
    /// Data survives a restart of the process (and of the server).
    pub durable: bool,
    /// `keys` can enumerate live keys.
    pub list_keys: bool,
    /// `notify` / `wait_notified` work (across processes when
    /// `cross_process` is also true).
    pub notifications: bool,
}

impl Capabilities {
    /// Capabilities with every flag off, for `backend`, to fill in.
    pub fn new(backend: &'static str) -> Self {
        Capabilities {
            backend,
            eval: false,
            eval_language: None,
            ttl_resolution: Duration::from_millis(1),
            native_ttl: false,
            expiry_clock: ExpiryClock::Local,
            cross_process: false,
            cross_host: false,
            durable: false,
            list_keys: false,
            notifications: false,
        }
    }

    /// Capabilities of a database server that every process and host can
    /// share: durable, expiring keys itself, listing keys; `eval` and
    /// notifications off.
    pub fn server(
        backend: &'static str,
        expiry_clock: ExpiryClock,
        ttl_resolution: Duration,
    ) -> Self {
        Capabilities {
            native_ttl: true,
            expiry_clock,
            ttl_resolution,
            cross_process: true,
            cross_host: true,
            durable: true,
            list_keys: true,
            ..Capabilities::new(backend)
        }
    }
}

/// Atomic counters, expiring locks and small key/value state, shared by every
/// instance of a service.
///
/// This trait is the contract of the crate; every backend implements all of
/// it, and [`conformance`](crate#conformance) checks it. Applications hold a
/// store as `Arc<dyn AtomicStore>` (see [`open`](crate::open)).
///
/// # Keys, values and TTLs
/// - A key is 1 to 1024 bytes of UTF-8 with no NUL byte. A value is at most
///   256 KiB of UTF-8 with no NUL byte; the empty value is allowed. A TTL is
///   from 1 ms to 365 days. Anything else is an error of kind
///   [`InvalidArgument`](crate::ErrorKind::InvalidArgument) naming the rule,
///   and nothing is written.
/// - Locks and values share one keyspace: a key holds either a value or a
///   lock, whose value is the lock id.
/// - An expired key is invisible to every operation, whether or not the
///   backend has removed it yet. A TTL'd key is alive before `ttl` and gone
///   by `ttl + ttl_resolution` ([`Capabilities::ttl_resolution`]).
/// - Every key is namespaced by the store's prefix (`?prefix=` in the URL).
///
/// # Errors and retries
/// Lock contention and "not held" are ordinary results, never errors.
/// A failure that certainly did not apply the operation is
/// [temporary](crate::Error::is_temporary). When a request may have reached
/// the server but its reply was lost, every write (all but `get`,
/// `inspect`, `keys` and the notifications) fails with
/// [`OutcomeUnknown`](crate::ErrorKind::OutcomeUnknown) and is never resent;
/// reads are resent.
#[async_trait]
pub trait AtomicStore: Send + Sync + fmt::Debug + 'static {
    /// What this backend supports.
    fn capabilities(&self) -> Capabilities;

    /// Atomically add 1 to the integer under `key` and return the new value.
    ///
    /// A missing or expired key counts from 0, so the first call returns 1.
    /// Any TTL the key has is kept. A value that is not a decimal `i64`
    /// (`-?(0|[1-9][0-9]*)`) gives [`NotAnInteger`](crate::ErrorKind::NotAnInteger);
    /// going past `i64::MAX` gives [`Overflow`](crate::ErrorKind::Overflow);
    /// in both cases the value is unchanged.
    async fn incr(&self, key: &str) -> Result<i64>;

    /// Take the lock `key` for `ttl` if nothing live holds the key.
    ///
    /// Returns `None` when a live lock or value holds the key. On success the
    /// key's value is the new lock's id, and the [`Lock`] carries a fencing
    /// token strictly greater than every token issued before for this key.
    async fn acquire_lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock>>;

    /// Atomically delete the lock `key` if `id` holds it.
    async fn release_lock(&self, key: &str, id: &LockId) -> Result<ReleaseOutcome>;

    /// If `id` still holds the lock `key`, make it expire `ttl` from now.
    async fn extend_lock(&self, key: &str, id: &LockId, ttl: Duration) -> Result<ExtendOutcome>;

    /// The value under `key`, or `None` when missing or expired.
    async fn get(&self, key: &str) -> Result<Option<String>>;

    /// Store `value` under `key`, replacing any value and clearing any TTL.
    async fn set(&self, key: &str, value: &str) -> Result<()>;

    /// Store `value` under `key`, replacing any value; it expires after `ttl`.
    async fn set_with_ttl(&self, key: &str, value: &str, ttl: Duration) -> Result<()>;

    /// Remove `key`. Returns true when a live key was removed; removing a
    /// missing key is not an error.
    async fn delete(&self, key: &str) -> Result<bool>;

    /// Atomically replace the value under `key` with `new` only if it equals
    /// `expected` (`None`: only if the key is missing or expired). The new
    /// value gets `ttl`, or no TTL. Returns whether it replaced the value.
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Option<Duration>,
    ) -> Result<bool>;

    /// Assign the next transaction nonce in one atomic step, by the original
    /// SDK's rule (`atomicAssignNonce`):
    ///
    /// 1. `last` = the stored integer, or -1 when the key is missing;
    /// 2. `candidate = last + 1`;
    /// 3. if `pending > candidate` or `candidate - pending > 500`, then
    ///    `candidate = pending`;
    /// 4. store `candidate` (as a decimal string, keeping any TTL) and return it.
    ///
    /// `pending` is the chain's pending transaction count for the address and
    /// must not exceed `i64::MAX`. The stored value follows `incr`'s rules:
    /// not an integer gives `NotAnInteger`, and nothing is changed.
    async fn assign_nonce(&self, key: &str, pending: u64) -> Result<u64>;

    /// Run a backend script atomically. `keys` are prefixed like every other
    /// key; `args` are passed unchanged. Backends without scripting return
    /// [`Unsupported`](crate::ErrorKind::Unsupported);
    /// [`Capabilities::eval`] says which (and the default is unsupported).
    async fn eval(&self, script: &str, keys: &[&str], args: &[&str]) -> Result<EvalValue> {
        let _ = (script, keys, args);
        Err(Error::unsupported(
            self.capabilities().backend,
            Operation::Eval,
        ))
    }

    /// For operators: the live value of `key`, its remaining TTL and the
    /// last fencing token issued for it. Not atomic with other calls.
    async fn inspect(&self, key: &str) -> Result<KeyInfo>;

    /// For operators: up to `limit` live keys that start with `prefix`
    /// (both without the store's own prefix), in no guaranteed order.
    /// Backends that cannot enumerate return
    /// [`Unsupported`](crate::ErrorKind::Unsupported);
    /// [`Capabilities::list_keys`] says which.
    async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>>;

    /// Wake the callers of [`wait_notified`](Self::wait_notified) for
    /// `key`, in every process (Redis pub/sub) or in this one (memory).
    /// Backends without notifications return
    /// [`Unsupported`](crate::ErrorKind::Unsupported);
    /// [`Capabilities::notifications`] says which (and the default is
    /// unsupported).
    async fn notify(&self, key: &str) -> Result<()> {
        let _ = key;
        Err(Error::unsupported(
            self.capabilities().backend,
            Operation::Notify,
        ))
    }

    /// Wait up to `timeout` for a [`notify`](Self::notify) of `key`: `true`
    /// when one came. Best effort: a notification sent before the wait
    /// began is missed, so callers re-check the state they wait on.
    async fn wait_notified(&self, key: &str, timeout: Duration) -> Result<bool> {
        let _ = (key, timeout);
        Err(Error::unsupported(
            self.capabilities().backend,
            Operation::WaitNotified,
        ))
    }

    /// One step of a waiter in the fair queue of lock `key`, for
    /// [`lock::DistributedLock`](crate::lock::DistributedLock): join the
    /// queue (or renew the waiter's presence), and take the lock if it is
    /// free and no live waiter is ahead, or if it was handed to this
    /// waiter. Waiters whose presence lapsed are dropped from the queue.
    ///
    /// The default is [`Unsupported`](crate::ErrorKind::Unsupported), and
    /// the recipe then keeps its queue in plain keys instead.
    async fn lock_queue_enter(&self, key: &str, entry: QueueEntry<'_>) -> Result<QueueTurn> {
        let _ = (key, entry);
        Err(Error::unsupported(
            self.capabilities().backend,
            Operation::AcquireLock,
        ))
    }

    /// Release lock `key` held by `id` (or leave its queue, if `id` is a
    /// waiter), and in the same step hand the lock to the first waiter
    /// whose presence is live, for `handover_ttl`. A free lock is handed
    /// over too; one held by another id is left alone. The default is
    /// [`Unsupported`](crate::ErrorKind::Unsupported).
    async fn lock_queue_release(
        &self,
        key: &str,
        id: &LockId,
        handover_ttl: Duration,
    ) -> Result<Handover> {
        let _ = (key, id, handover_ttl);
        Err(Error::unsupported(
            self.capabilities().backend,
            Operation::ReleaseLock,
        ))
    }

    /// For tests and operators: remove `key` together with what
    /// [`delete`](Self::delete) keeps on purpose, its fencing counter and
    /// any tombstone. The key's fencing tokens may then start again from 1,
    /// which breaks fencing for any holder still using them, so purge only
    /// keys no one will lock again, such as a test's own namespace.
    ///
    /// The default is `delete`, right for stores whose delete leaves
    /// nothing behind.
    async fn purge(&self, key: &str) -> Result<()> {
        self.delete(key).await.map(|_| ())
    }
}

/// The future an `AtomicStore` method returns, as `#[async_trait]` spells it.
pub(crate) type BoxedResult<'a, T> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<T>> + Send + 'a>>;

/// One forwarding method, written with the signature `#[async_trait]`
/// generates so that it returns the inner store's future as it is. An
/// `async fn` here would box it a second time on every call through an
/// `Arc<dyn AtomicStore>` (about 4% of a Redis `incr` worker's time).
macro_rules! forward_method {
    ($name:ident<$($l:lifetime),*>($($arg:ident: $ty:ty),*) -> $out:ty) => {
        fn $name<'a, $($l,)* 'f>(&'a self, $($arg: $ty),*) -> BoxedResult<'f, $out>
        where
            'a: 'f,
            $($l: 'f,)*
            Self: 'f,
        {
            (**self).$name($($arg),*)
        }
    };
}

macro_rules! forward_store {
    ($($ptr:ident),*) => {$(
        impl<T: AtomicStore + ?Sized> AtomicStore for $ptr<T> {
            fn capabilities(&self) -> Capabilities {
                (**self).capabilities()
            }
            forward_method!(incr<'k>(key: &'k str) -> i64);
            forward_method!(acquire_lock<'k>(key: &'k str, ttl: Duration) -> Option<Lock>);
            forward_method!(release_lock<'k, 'i>(key: &'k str, id: &'i LockId) -> ReleaseOutcome);
            forward_method!(extend_lock<'k, 'i>(key: &'k str, id: &'i LockId, ttl: Duration) -> ExtendOutcome);
            forward_method!(get<'k>(key: &'k str) -> Option<String>);
            forward_method!(set<'k, 'v>(key: &'k str, value: &'v str) -> ());
            forward_method!(set_with_ttl<'k, 'v>(key: &'k str, value: &'v str, ttl: Duration) -> ());
            forward_method!(delete<'k>(key: &'k str) -> bool);
            forward_method!(compare_and_set<'k, 'e, 'n>(key: &'k str, expected: Option<&'e str>, new: &'n str, ttl: Option<Duration>) -> bool);
            forward_method!(assign_nonce<'k>(key: &'k str, pending: u64) -> u64);
            forward_method!(eval<'s, 'k, 'k2, 'v, 'v2>(script: &'s str, keys: &'k [&'k2 str], args: &'v [&'v2 str]) -> EvalValue);
            forward_method!(inspect<'k>(key: &'k str) -> KeyInfo);
            forward_method!(keys<'k>(prefix: &'k str, limit: usize) -> Vec<String>);
            forward_method!(notify<'k>(key: &'k str) -> ());
            forward_method!(wait_notified<'k>(key: &'k str, timeout: Duration) -> bool);
            forward_method!(lock_queue_enter<'k, 'e>(key: &'k str, entry: QueueEntry<'e>) -> QueueTurn);
            forward_method!(lock_queue_release<'k, 'i>(key: &'k str, id: &'i LockId, ttl: Duration) -> Handover);
            forward_method!(purge<'k>(key: &'k str) -> ());
        }
    )*};
}
forward_store!(Box, Arc);

impl ReleaseOutcome {
    /// From a compare on the lock id: `Some(true)` ours (released),
    /// `Some(false)` another owner's, `None` no live lock.
    pub fn from_ownership(ours: Option<bool>) -> Self {
        match ours {
            Some(true) => ReleaseOutcome::Released,
            Some(false) => ReleaseOutcome::HeldByOther,
            None => ReleaseOutcome::NotHeld,
        }
    }
}

#[cfg(feature = "_lock-codes")]
/// The lock-id compare result that the Redis scripts and the PostgreSQL
/// statements return: 1 ours, 2 another owner's, 0 or no row no live lock.
pub(crate) fn ownership_from_code(code: Option<i64>) -> Option<bool> {
    match code {
        Some(1) => Some(true),
        Some(2) => Some(false),
        _ => None,
    }
}

impl ExtendOutcome {
    /// From a compare on the lock id: `Some(true)` ours (extended),
    /// `Some(false)` another owner's, `None` no live lock.
    pub fn from_ownership(ours: Option<bool>) -> Self {
        match ours {
            Some(true) => ExtendOutcome::Extended,
            Some(false) => ExtendOutcome::HeldByOther,
            None => ExtendOutcome::NotHeld,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_ids_are_128_random_bits_in_hex() {
        let a = LockId::generate();
        let b = LockId::generate();
        assert_eq!(a.as_str().len(), 32);
        assert!(a.as_str().bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    /// Records which of its methods ran, so a forwarder that fell back to
    /// a trait default instead of forwarding shows.
    #[derive(Debug, Default)]
    struct Recorder(std::sync::Mutex<Vec<&'static str>>);

    impl Recorder {
        fn hit<T>(&self, method: &'static str) -> Result<T> {
            self.0.lock().unwrap().push(method);
            Err(Error::unsupported("recorder", Operation::Get))
        }
    }

    #[async_trait]
    impl AtomicStore for Recorder {
        fn capabilities(&self) -> Capabilities {
            Capabilities::server("recorder", ExpiryClock::Server, Duration::from_millis(1))
        }
        async fn incr(&self, _: &str) -> Result<i64> {
            self.hit("incr")
        }
        async fn acquire_lock(&self, _: &str, _: Duration) -> Result<Option<Lock>> {
            self.hit("acquire_lock")
        }
        async fn release_lock(&self, _: &str, _: &LockId) -> Result<ReleaseOutcome> {
            self.hit("release_lock")
        }
        async fn extend_lock(&self, _: &str, _: &LockId, _: Duration) -> Result<ExtendOutcome> {
            self.hit("extend_lock")
        }
        async fn get(&self, _: &str) -> Result<Option<String>> {
            self.hit("get")
        }
        async fn set(&self, _: &str, _: &str) -> Result<()> {
            self.hit("set")
        }
        async fn set_with_ttl(&self, _: &str, _: &str, _: Duration) -> Result<()> {
            self.hit("set_with_ttl")
        }
        async fn delete(&self, _: &str) -> Result<bool> {
            self.hit("delete")
        }
        async fn compare_and_set(
            &self,
            _: &str,
            _: Option<&str>,
            _: &str,
            _: Option<Duration>,
        ) -> Result<bool> {
            self.hit("compare_and_set")
        }
        async fn assign_nonce(&self, _: &str, _: u64) -> Result<u64> {
            self.hit("assign_nonce")
        }
        async fn eval(&self, _: &str, _: &[&str], _: &[&str]) -> Result<EvalValue> {
            self.hit("eval")
        }
        async fn inspect(&self, _: &str) -> Result<KeyInfo> {
            self.hit("inspect")
        }
        async fn keys(&self, _: &str, _: usize) -> Result<Vec<String>> {
            self.hit("keys")
        }
        async fn notify(&self, _: &str) -> Result<()> {
            self.hit("notify")
        }
        async fn wait_notified(&self, _: &str, _: Duration) -> Result<bool> {
            self.hit("wait_notified")
        }
        async fn lock_queue_enter(&self, _: &str, _: QueueEntry<'_>) -> Result<QueueTurn> {
            self.hit("lock_queue_enter")
        }
        async fn lock_queue_release(&self, _: &str, _: &LockId, _: Duration) -> Result<Handover> {
            self.hit("lock_queue_release")
        }
        async fn purge(&self, _: &str) -> Result<()> {
            self.hit("purge")
        }
    }

    /// Every method of `Arc<dyn AtomicStore>` and `Box<dyn AtomicStore>`
    /// reaches the store inside, none falls back to a trait default.
    #[tokio::test]
    async fn arc_and_box_forward_every_method() {
        async fn call_all(store: &dyn AtomicStore) {
            let (id, t) = (LockId::generate(), Duration::from_secs(1));
            let entry = QueueEntry {
                waiter: &id,
                ttl: t,
                presence: None,
            };
            let _ = store.incr("k").await;
            let _ = store.acquire_lock("k", t).await;
            let _ = store.release_lock("k", &id).await;
            let _ = store.extend_lock("k", &id, t).await;
            let _ = store.get("k").await;
            let _ = store.set("k", "v").await;
            let _ = store.set_with_ttl("k", "v", t).await;
            let _ = store.delete("k").await;
            let _ = store.compare_and_set("k", None, "v", None).await;
            let _ = store.assign_nonce("k", 0).await;
            let _ = store.eval("s", &["k"], &[]).await;
            let _ = store.inspect("k").await;
            let _ = store.keys("k", 1).await;
            let _ = store.notify("k").await;
            let _ = store.wait_notified("k", t).await;
            let _ = store.lock_queue_enter("k", entry).await;
            let _ = store.lock_queue_release("k", &id, t).await;
            let _ = store.purge("k").await;
        }
        let all = [
            "incr",
            "acquire_lock",
            "release_lock",
            "extend_lock",
            "get",
            "set",
            "set_with_ttl",
            "delete",
            "compare_and_set",
            "assign_nonce",
            "eval",
            "inspect",
            "keys",
            "notify",
            "wait_notified",
            "lock_queue_enter",
            "lock_queue_release",
            "purge",
        ];
        let inner = Arc::new(Recorder::default());
        let arc: Arc<dyn AtomicStore> = Arc::clone(&inner) as Arc<dyn AtomicStore>;
        call_all(&arc).await;
        assert_eq!(*inner.0.lock().unwrap(), all, "through Arc");
        inner.0.lock().unwrap().clear();
        let boxed: Box<dyn AtomicStore> = Box::new(Arc::clone(&inner));
        call_all(&boxed).await;
        assert_eq!(*inner.0.lock().unwrap(), all, "through Box of Arc");
    }

    #[test]
    fn store_is_object_safe_send_and_sync() {
        fn assert_send_sync<T: Send + Sync + ?Sized>() {}
        assert_send_sync::<dyn AtomicStore>();
        assert_send_sync::<Arc<dyn AtomicStore>>();
        assert_send_sync::<Box<dyn AtomicStore>>();
    }
}
