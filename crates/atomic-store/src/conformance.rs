//! The conformance suite: the contract of [`AtomicStore`] as executable
//! checks that any implementation can run (feature `conformance`).
//!
//! Every check is a plain `pub async fn` taking the store and returning
//! [`CheckResult`]. Each check works under its own random key namespace and
//! deletes the keys it wrote when it ends, pass or fail. [`run_all`] runs every
//! check and returns a [`Report`]; a backend's tests do:
//!
//! ```
//! # async fn demo() {
//! let store = atomic_store::open("memory://").unwrap();
//! atomic_store::conformance::run_all(&store).await.assert_passed();
//! # }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo());
//! ```
//!
//! The concurrency checks spawn Tokio tasks, so run them on a multi-threaded
//! runtime to exercise real parallelism.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::rules::{MAX_KEY_BYTES, MAX_TTL, MAX_VALUE_BYTES};
use crate::{AtomicStore, ErrorKind, ExtendOutcome, LockId, Operation, ReleaseOutcome};

/// How checks hold the store.
pub type Store = Arc<dyn AtomicStore>;

/// Why a check failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure(pub String);

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CheckFailure {}

impl From<crate::Error> for CheckFailure {
    fn from(e: crate::Error) -> Self {
        CheckFailure(format!("unexpected error: {e}"))
    }
}

/// The result of one check.
pub type CheckResult = Result<(), CheckFailure>;

macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(CheckFailure(format!($($msg)+)));
        }
    };
}

macro_rules! ensure_eq {
    ($left:expr, $right:expr, $($msg:tt)+) => {{
        let (left, right) = (&$left, &$right);
        if left != right {
            return Err(CheckFailure(format!(
                "{}: got {:?}, expected {:?}",
                format!($($msg)+),
                left,
                right
            )));
        }
    }};
}

/// Assert that `result` is an error of `kind`.
fn expect_kind<T: fmt::Debug>(
    result: crate::Result<T>,
    kind: ErrorKind,
    what: &str,
) -> CheckResult {
    match result {
        Err(e) if e.kind() == kind => Ok(()),
        Err(e) => Err(CheckFailure(format!(
            "{what}: expected {kind}, got error {e}"
        ))),
        Ok(v) => Err(CheckFailure(format!(
            "{what}: expected {kind}, got Ok({v:?})"
        ))),
    }
}

/// Random keys for one check, deleted when the check ends.
struct Scratch {
    store: Store,
    namespace: String,
    used: Mutex<Vec<String>>,
}

impl Scratch {
    fn new(store: &Store, check: &str) -> Self {
        Scratch {
            store: Arc::clone(store),
            namespace: format!("conformance:{}:{check}", &LockId::generate().as_str()[..12]),
            used: Mutex::new(Vec::new()),
        }
    }

    fn key(&self, name: &str) -> String {
        let key = format!("{}:{name}", self.namespace);
        self.track(&key);
        key
    }

    fn track(&self, key: &str) {
        self.used.lock().unwrap().push(key.to_owned());
    }

    async fn cleanup(&self) {
        let keys = std::mem::take(&mut *self.used.lock().unwrap());
        for key in keys {
            // Best effort: a failure here must not hide the check's result.
            let _ = self.store.delete(&key).await;
        }
    }
}

/// A TTL long enough to observe before it runs out, and the time to wait
/// after it for the key to be certainly gone.
fn ttl_and_wait(store: &Store) -> (Duration, Duration) {
    let resolution = store.capabilities().ttl_resolution;
    let ttl = Duration::from_millis(300).max(resolution * 2);
    (ttl, ttl + resolution + Duration::from_millis(50))
}

/// A rule broken on purpose: what, the error it gave, the words it must say.
type RuleCase<'a> = (&'a str, Option<(ErrorKind, String)>, &'a [&'a str]);

macro_rules! checks {
    ($(
        $(#[doc = $doc:literal])*
        async fn $name:ident($store:ident, $s:ident) $body:block
    )*) => {
        $(
            $(#[doc = $doc])*
            pub async fn $name($store: &Store) -> CheckResult {
                let $s = Scratch::new($store, stringify!($name));
                let result: CheckResult = async { $body }.await;
                $s.cleanup().await;
                result
            }
        )*

        /// Every check of the suite, in order, with its name.
        pub fn checks() -> Vec<Check> {
            vec![$(Check {
                name: stringify!($name),
                run: |store| Box::pin($name(store)),
            }),*]
        }
    };
}

/// A boxed check future.
pub type CheckFuture<'a> = Pin<Box<dyn Future<Output = CheckResult> + Send + 'a>>;

/// One check of the suite.
#[derive(Clone, Copy)]
pub struct Check {
    /// The check's function name.
    pub name: &'static str,
    /// Runs the check.
    pub run: for<'a> fn(&'a Store) -> CheckFuture<'a>,
}

impl fmt::Debug for Check {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

checks! {
    /// The first `incr` of a missing key returns 1, the next 2.
    async fn incr_counts_from_one(store, s) {
        let k = s.key("counter");
        ensure_eq!(store.incr(&k).await?, 1, "first incr");
        ensure_eq!(store.incr(&k).await?, 2, "second incr");
        ensure_eq!(store.get(&k).await?, Some("2".to_string()), "stored counter");
        store.set(&k, "-1").await?;
        ensure_eq!(store.incr(&k).await?, 0, "incr from -1");
        Ok(())
    }

    /// An `incr` future dropped before it is polled changes nothing:
    /// futures do nothing until awaited, and a losing `select!` branch
    /// must not hand out a value.
    async fn incr_applies_only_when_awaited(store, s) {
        let k = s.key("lazy");
        ensure_eq!(store.incr(&k).await?, 1, "first incr");
        drop(store.incr(&k));
        ensure_eq!(store.get(&k).await?, Some("1".to_string()), "counter after a dropped incr");
        ensure_eq!(store.incr(&k).await?, 2, "next incr");
        Ok(())
    }

    /// `incr` on a value that is not a canonical decimal i64 fails with
    /// NotAnInteger and leaves the value unchanged.
    async fn incr_rejects_non_integers(store, s) {
        let k = s.key("not-a-number");
        for bad in ["abc", "1.5", "", "01", "+1", " 1", "1 ", "-0", "0x10", "9223372036854775808"] {
            store.set(&k, bad).await?;
            expect_kind(store.incr(&k).await, ErrorKind::NotAnInteger, &format!("incr on {bad:?}"))?;
            ensure_eq!(store.get(&k).await?, Some(bad.to_string()), "value after failed incr");
        }
        let lock = s.key("lock");
        let held = store.acquire_lock(&lock, Duration::from_secs(30)).await?;
        ensure!(held.is_some(), "lock on a fresh key was not acquired");
        expect_kind(store.incr(&lock).await, ErrorKind::NotAnInteger, "incr on a lock key")?;
        Ok(())
    }

    /// `incr` past i64::MAX fails with Overflow and leaves the value unchanged.
    async fn incr_overflow_changes_nothing(store, s) {
        let k = s.key("max");
        store.set(&k, &i64::MAX.to_string()).await?;
        expect_kind(store.incr(&k).await, ErrorKind::Overflow, "incr at i64::MAX")?;
        ensure_eq!(store.get(&k).await?, Some(i64::MAX.to_string()), "value after overflow");
        store.set(&k, &i64::MIN.to_string()).await?;
        ensure_eq!(store.incr(&k).await?, i64::MIN + 1, "incr at i64::MIN");
        Ok(())
    }

    /// `incr` keeps the key's TTL (it does not re-arm it); once expired, the
    /// key counts from 0 again.
    async fn incr_keeps_ttl(store, s) {
        let resolution = store.capabilities().ttl_resolution;
        // A long TTL, then a pause longer than the resolution: a kept TTL
        // has visibly run down, a re-armed one has not.
        let long = Duration::from_secs(60);
        let kept = s.key("kept-ttl-counter");
        store.set_with_ttl(&kept, "5", long).await?;
        let set_at = Instant::now();
        let pause = resolution + Duration::from_millis(300);
        tokio::time::sleep(pause).await;
        ensure_eq!(store.incr(&kept).await?, 6, "incr of a TTL'd counter");
        // Taken before the inspect, so the bound only errs on the long side.
        let bound = long.saturating_sub(set_at.elapsed()) + resolution;
        let left = store.inspect(&kept).await?.ttl;
        ensure!(left.is_some_and(|t| t <= bound), "TTL after incr is {left:?}; a kept TTL is at most {bound:?} (re-armed instead of kept?)");
        let (ttl, wait) = ttl_and_wait(store);
        let k = s.key("ttl-counter");
        store.set_with_ttl(&k, "5", ttl).await?;
        let after_set = Instant::now();
        ensure_eq!(store.incr(&k).await?, 6, "incr of a short-TTL counter");
        tokio::time::sleep(wait.saturating_sub(after_set.elapsed())).await;
        ensure_eq!(store.get(&k).await?, None, "counter after its TTL");
        ensure_eq!(store.incr(&k).await?, 1, "incr after expiry");
        ensure_eq!(store.inspect(&k).await?.ttl, None, "TTL of a counter recreated by incr");
        Ok(())
    }

    /// `get`, `set` (overwrite), `delete` (idempotent, reports whether a live
    /// key was removed); the empty value round-trips.
    async fn set_get_delete(store, s) {
        let k = s.key("plain");
        ensure_eq!(store.get(&k).await?, None, "missing key");
        store.set(&k, "one").await?;
        ensure_eq!(store.get(&k).await?, Some("one".to_string()), "after set");
        store.set(&k, "two").await?;
        ensure_eq!(store.get(&k).await?, Some("two".to_string()), "after overwrite");
        ensure_eq!(store.delete(&k).await?, true, "delete of a live key");
        ensure_eq!(store.delete(&k).await?, false, "second delete");
        ensure_eq!(store.get(&k).await?, None, "after delete");
        store.set(&k, "").await?;
        ensure_eq!(store.get(&k).await?, Some(String::new()), "empty value");
        let big = "v".repeat(MAX_VALUE_BYTES);
        store.set(&k, &big).await?;
        ensure!(store.get(&k).await?.as_deref() == Some(big.as_str()), "a 256 KiB value did not round-trip");
        Ok(())
    }

    /// A TTL'd value is alive before its TTL and gone after it (plus the
    /// backend's resolution); `delete` and `inspect` of an expired key see
    /// nothing; `set` clears a TTL.
    async fn values_expire(store, s) {
        let (ttl, wait) = ttl_and_wait(store);
        let k = s.key("ttl-value");
        let kept = s.key("ttl-cleared");
        // Outlives the whole check, so "alive before its TTL" is always checked.
        let lasting = s.key("ttl-long");
        store.set_with_ttl(&lasting, "l", Duration::from_secs(60)).await?;
        store.set_with_ttl(&k, "v", ttl).await?;
        let set_done = Instant::now();
        store.set_with_ttl(&kept, "v", ttl).await?;
        store.set(&kept, "w").await?;
        tokio::time::sleep(wait.saturating_sub(set_done.elapsed())).await;
        ensure_eq!(store.get(&k).await?, None, "value after its TTL");
        let info = store.inspect(&k).await?;
        ensure_eq!((info.value, info.ttl), (None, None), "inspect of an expired value");
        ensure_eq!(store.delete(&k).await?, false, "delete of an expired key");
        ensure_eq!(store.get(&kept).await?, Some("w".to_string()), "value whose TTL set() cleared");
        ensure_eq!(store.inspect(&kept).await?.ttl, None, "TTL of a value set() cleared");
        ensure_eq!(store.get(&lasting).await?, Some("l".to_string()), "value before its TTL");
        Ok(())
    }

    /// Every rule violation is InvalidArgument, and nothing is written.
    async fn invalid_arguments_change_nothing(store, s) {
        let k = s.key("guarded");
        store.set(&k, "original").await?;
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        let ttl = Duration::from_secs(10);
        let too_long_ttl = MAX_TTL + Duration::from_secs(1);
        let big = "v".repeat(MAX_VALUE_BYTES + 1);
        let id = LockId::from("x");
        for bad in ["", long_key.as_str(), "nul\0key"] {
            let what = |op: &str| format!("{op} with key of {} bytes", bad.len());
            expect_kind(store.incr(bad).await, ErrorKind::InvalidArgument, &what("incr"))?;
            expect_kind(store.get(bad).await, ErrorKind::InvalidArgument, &what("get"))?;
            expect_kind(store.set(bad, "v").await, ErrorKind::InvalidArgument, &what("set"))?;
            expect_kind(store.set_with_ttl(bad, "v", ttl).await, ErrorKind::InvalidArgument, &what("set_with_ttl"))?;
            expect_kind(store.delete(bad).await, ErrorKind::InvalidArgument, &what("delete"))?;
            expect_kind(store.acquire_lock(bad, ttl).await, ErrorKind::InvalidArgument, &what("acquire_lock"))?;
            expect_kind(store.release_lock(bad, &id).await, ErrorKind::InvalidArgument, &what("release_lock"))?;
            expect_kind(store.extend_lock(bad, &id, ttl).await, ErrorKind::InvalidArgument, &what("extend_lock"))?;
            expect_kind(store.compare_and_set(bad, None, "v", None).await, ErrorKind::InvalidArgument, &what("compare_and_set"))?;
            expect_kind(store.assign_nonce(bad, 0).await, ErrorKind::InvalidArgument, &what("assign_nonce"))?;
        }
        for bad in [big.as_str(), "nul\0value"] {
            let what = |op: &str| format!("{op} with a value of {} bytes", bad.len());
            expect_kind(store.set(&k, bad).await, ErrorKind::InvalidArgument, &what("set"))?;
            expect_kind(store.set_with_ttl(&k, bad, ttl).await, ErrorKind::InvalidArgument, &what("set_with_ttl"))?;
            expect_kind(store.compare_and_set(&k, Some("original"), bad, None).await, ErrorKind::InvalidArgument, &what("compare_and_set"))?;
        }
        // A fresh key and a held lock: a bad TTL must neither take the key
        // nor change the lock.
        let fresh = s.key("fresh");
        let held_key = s.key("held");
        let held = store.acquire_lock(&held_key, Duration::from_secs(60)).await?.ok_or_else(|| CheckFailure("lock on a fresh key was not acquired".into()))?;
        for bad in [Duration::ZERO, Duration::from_micros(999), too_long_ttl] {
            let what = |op: &str| format!("{op} with ttl {bad:?}");
            expect_kind(store.set_with_ttl(&k, "v", bad).await, ErrorKind::InvalidArgument, &what("set_with_ttl"))?;
            expect_kind(store.set_with_ttl(&fresh, "v", bad).await, ErrorKind::InvalidArgument, &what("set_with_ttl on a fresh key"))?;
            expect_kind(store.acquire_lock(&fresh, bad).await, ErrorKind::InvalidArgument, &what("acquire_lock on a fresh key"))?;
            expect_kind(store.extend_lock(&held_key, &held.id, bad).await, ErrorKind::InvalidArgument, &what("extend_lock of a held lock"))?;
            expect_kind(store.compare_and_set(&k, Some("original"), "v", Some(bad)).await, ErrorKind::InvalidArgument, &what("compare_and_set"))?;
            expect_kind(store.compare_and_set(&fresh, None, "v", Some(bad)).await, ErrorKind::InvalidArgument, &what("compare_and_set on a fresh key"))?;
        }
        ensure_eq!(store.get(&fresh).await?, None, "fresh key after rejected calls");
        ensure_eq!(store.get(&held_key).await?, Some(held.id.to_string()), "held lock after rejected extends");
        let left = store.inspect(&held_key).await?.ttl;
        ensure!(left.is_some_and(|t| t > Duration::from_secs(30)), "held lock's TTL after rejected extends: {left:?}");
        for pending in [i64::MAX as u64 + 1, u64::MAX - 1, u64::MAX] {
            expect_kind(store.assign_nonce(&k, pending).await, ErrorKind::InvalidArgument, &format!("assign_nonce with pending {pending}"))?;
            expect_kind(store.assign_nonce(&fresh, pending).await, ErrorKind::InvalidArgument, &format!("assign_nonce with pending {pending} on a fresh key"))?;
        }
        ensure_eq!(store.get(&fresh).await?, None, "fresh key after rejected nonces");
        ensure_eq!(store.get(&k).await?, Some("original".to_string()), "value after rejected calls");
        Ok(())
    }

    /// The operators' and scripting calls check keys too: `inspect`,
    /// `eval`, `notify` and `wait_notified` refuse a bad key, and `keys` a
    /// bad prefix, before anything is sent (`Unsupported` is allowed where
    /// the backend lacks the call).
    async fn invalid_keys_are_refused_everywhere(store, s) {
        let caps = store.capabilities();
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        let ok = s.key("ok");
        let allowed = |supported: bool| if supported { vec![ErrorKind::InvalidArgument] } else { vec![ErrorKind::InvalidArgument, ErrorKind::Unsupported] };
        let expect_one_of = |result: crate::Result<String>, kinds: Vec<ErrorKind>, what: String| -> CheckResult {
            match result {
                Err(e) if kinds.contains(&e.kind()) => Ok(()),
                Err(e) => Err(CheckFailure(format!("{what}: expected one of {kinds:?}, got error {e}"))),
                Ok(v) => Err(CheckFailure(format!("{what}: expected an error, got Ok({v})"))),
            }
        };
        for bad in ["", long_key.as_str(), "nul\0key"] {
            let what = |op: &str| format!("{op} with key of {} bytes", bad.len());
            expect_kind(store.inspect(bad).await, ErrorKind::InvalidArgument, &what("inspect"))?;
            expect_one_of(store.eval("return 1", &[bad], &[]).await.map(|v| format!("{v:?}")), allowed(caps.eval), what("eval"))?;
            expect_one_of(store.eval("return 1", &[ok.as_str(), bad], &[]).await.map(|v| format!("{v:?}")), allowed(caps.eval), what("eval (second key)"))?;
            expect_one_of(store.notify(bad).await.map(|()| String::new()), allowed(caps.notifications), what("notify"))?;
            expect_one_of(store.wait_notified(bad, Duration::from_millis(10)).await.map(|w| w.to_string()), allowed(caps.notifications), what("wait_notified"))?;
        }
        for bad in [long_key.as_str(), "nul\0prefix"] {
            expect_one_of(store.keys(bad, 10).await.map(|k| format!("{k:?}")), allowed(caps.list_keys), format!("keys with a prefix of {} bytes", bad.len()))?;
        }
        Ok(())
    }

    /// An `InvalidArgument` message names the rule that was broken, so the
    /// caller knows what to fix.
    async fn error_messages_name_the_rule(store, s) {
        let k = s.key("rules");
        let long_key = "k".repeat(MAX_KEY_BYTES + 1);
        let big = "v".repeat(MAX_VALUE_BYTES + 1);
        let message = |r: crate::Result<()>| r.err().map(|e| (e.kind(), e.to_string()));
        let cases: Vec<RuleCase> = vec![
            ("empty key", message(store.set("", "v").await), &["empty"]),
            ("long key", message(store.set(&long_key, "v").await), &["1024"]),
            ("NUL in key", message(store.set("a\0b", "v").await), &["NUL"]),
            ("big value", message(store.set(&k, &big).await), &["262144"]),
            ("NUL in value", message(store.set(&k, "a\0b").await), &["NUL"]),
            ("zero TTL", message(store.set_with_ttl(&k, "v", Duration::ZERO).await), &["ttl", "1ms"]),
            ("long TTL", message(store.set_with_ttl(&k, "v", MAX_TTL + Duration::from_secs(1)).await), &["ttl", "365 days"]),
        ];
        for (what, got, words) in cases {
            let Some((kind, text)) = got else {
                return Err(CheckFailure(format!("{what}: accepted")));
            };
            ensure_eq!(kind, ErrorKind::InvalidArgument, "{what}: kind");
            for word in words {
                ensure!(text.contains(word), "{what}: message {text:?} does not say {word:?}");
            }
            ensure!(text.len() < 300 && !text.contains("{ "), "{what}: message {text:?} is not a short sentence");
        }
        Ok(())
    }

    /// Acquire, contend, release by the wrong id, release, release again.
    async fn lock_acquire_release(store, s) {
        let k = s.key("lock");
        let ttl = Duration::from_secs(30);
        let lock = store.acquire_lock(&k, ttl).await?.ok_or_else(|| CheckFailure("lock on a fresh key was not acquired".into()))?;
        ensure!(lock.id.as_str().len() >= 22, "lock id {:?} is too short to hold 128 random bits", lock.id);
        ensure!(store.acquire_lock(&k, ttl).await?.is_none(), "a held lock was acquired again");
        ensure_eq!(store.get(&k).await?, Some(lock.id.to_string()), "get on a held lock key");
        let other = LockId::generate();
        ensure_eq!(store.release_lock(&k, &other).await?, ReleaseOutcome::HeldByOther, "release by another id");
        ensure_eq!(store.get(&k).await?, Some(lock.id.to_string()), "lock after a foreign release");
        ensure_eq!(store.release_lock(&k, &lock.id).await?, ReleaseOutcome::Released, "release by the holder");
        ensure_eq!(store.release_lock(&k, &lock.id).await?, ReleaseOutcome::NotHeld, "second release");
        ensure_eq!(store.get(&k).await?, None, "lock key after release");
        let again = store.acquire_lock(&k, ttl).await?.ok_or_else(|| CheckFailure("released lock could not be taken again".into()))?;
        ensure!(again.fencing_token > lock.fencing_token, "fencing token did not rise: {} then {}", lock.fencing_token, again.fencing_token);
        ensure!(again.id != lock.id, "two acquisitions got the same id");
        Ok(())
    }

    /// A value holds its key against locks; releasing it is HeldByOther.
    async fn locks_and_values_share_keys(store, s) {
        let k = s.key("value-not-lock");
        store.set(&k, "payload").await?;
        ensure!(store.acquire_lock(&k, Duration::from_secs(5)).await?.is_none(), "a lock was taken over a live value");
        ensure_eq!(store.release_lock(&k, &LockId::from("payload-x")).await?, ReleaseOutcome::HeldByOther, "release of a value key");
        ensure_eq!(store.extend_lock(&k, &LockId::from("payload-x"), Duration::from_secs(5)).await?, ExtendOutcome::HeldByOther, "extend of a value key");
        ensure_eq!(store.get(&k).await?, Some("payload".to_string()), "value after lock calls");
        ensure_eq!(store.extend_lock(&s.key("missing"), &LockId::from("x"), Duration::from_secs(5)).await?, ExtendOutcome::NotHeld, "extend of a missing key");
        Ok(())
    }

    /// A lock written by another client (a plain value with a TTL, as
    /// `SET key id PX ttl NX` leaves it) is held, and its id releases it.
    async fn foreign_lock_ids_work(store, s) {
        let k = s.key("foreign");
        let foreign = LockId::from("1732560000000-k3j9x0a1b2c");
        store.set_with_ttl(&k, foreign.as_str(), Duration::from_secs(30)).await?;
        ensure!(store.acquire_lock(&k, Duration::from_secs(5)).await?.is_none(), "a foreign lock was taken over");
        ensure_eq!(store.extend_lock(&k, &foreign, Duration::from_secs(60)).await?, ExtendOutcome::Extended, "extend by the foreign id");
        ensure_eq!(store.release_lock(&k, &foreign).await?, ReleaseOutcome::Released, "release by the foreign id");
        Ok(())
    }

    /// An expired lock can be taken by another owner; the old owner's
    /// release and extend then report HeldByOther and leave the new lock.
    async fn expired_locks_pass_to_a_new_owner(store, s) {
        let (ttl, wait) = ttl_and_wait(store);
        let k = s.key("expiring-lock");
        let old = store.acquire_lock(&k, ttl).await?.ok_or_else(|| CheckFailure("fresh lock not acquired".into()))?;
        let acquired = Instant::now();
        tokio::time::sleep(wait.saturating_sub(acquired.elapsed())).await;
        ensure_eq!(store.get(&k).await?, None, "lock key after its TTL");
        ensure_eq!(store.extend_lock(&k, &old.id, Duration::from_secs(30)).await?, ExtendOutcome::NotHeld, "extend of an expired lock nobody took");
        ensure_eq!(store.get(&k).await?, None, "expired lock key after a refused extend");
        ensure_eq!(store.release_lock(&k, &old.id).await?, ReleaseOutcome::NotHeld, "release of an expired lock");
        let new = store.acquire_lock(&k, Duration::from_secs(30)).await?.ok_or_else(|| CheckFailure("expired lock could not be taken".into()))?;
        ensure!(new.fencing_token > old.fencing_token, "fencing token did not rise across expiry: {} then {}", old.fencing_token, new.fencing_token);
        ensure_eq!(store.release_lock(&k, &old.id).await?, ReleaseOutcome::HeldByOther, "old owner's release");
        ensure_eq!(store.extend_lock(&k, &old.id, Duration::from_secs(30)).await?, ExtendOutcome::HeldByOther, "old owner's extend");
        ensure_eq!(store.get(&k).await?, Some(new.id.to_string()), "new lock after the old owner's calls");
        Ok(())
    }

    /// `extend_lock` keeps a lock alive past its first TTL.
    async fn extend_keeps_a_lock_alive(store, s) {
        let (ttl, wait) = ttl_and_wait(store);
        let k = s.key("extended");
        let lock = store.acquire_lock(&k, ttl).await?.ok_or_else(|| CheckFailure("fresh lock not acquired".into()))?;
        let acquired = Instant::now();
        ensure_eq!(store.extend_lock(&k, &lock.id, Duration::from_secs(60)).await?, ExtendOutcome::Extended, "extend by the holder");
        tokio::time::sleep(wait.saturating_sub(acquired.elapsed())).await;
        ensure_eq!(store.get(&k).await?, Some(lock.id.to_string()), "extended lock after its first TTL");
        ensure!(store.acquire_lock(&k, ttl).await?.is_none(), "an extended lock was taken");
        Ok(())
    }

    /// Fencing tokens rise across release, delete and expiry of a key.
    async fn fencing_tokens_always_rise(store, s) {
        let k = s.key("fenced");
        let mut last = 0u64;
        for round in 0..5 {
            let lock = store.acquire_lock(&k, Duration::from_secs(30)).await?.ok_or_else(|| CheckFailure(format!("round {round}: lock not acquired")))?;
            ensure!(lock.fencing_token > last, "round {round}: token {} after {last}", lock.fencing_token);
            last = lock.fencing_token;
            if round % 2 == 0 {
                ensure_eq!(store.release_lock(&k, &lock.id).await?, ReleaseOutcome::Released, "round {round}: release by the holder");
            } else {
                ensure!(store.delete(&k).await?, "delete of a held lock key returned false");
            }
        }
        Ok(())
    }

    /// `compare_and_set`: absent/expected/wrong expectations, and TTLs.
    async fn compare_and_set_semantics(store, s) {
        let (ttl, wait) = ttl_and_wait(store);
        let k = s.key("cas");
        ensure!(store.compare_and_set(&k, None, "a", None).await?, "cas on a missing key expecting absence");
        ensure!(!store.compare_and_set(&k, None, "b", None).await?, "cas expecting absence on a live key succeeded");
        ensure!(!store.compare_and_set(&k, Some("wrong"), "b", None).await?, "cas with a wrong expectation succeeded");
        ensure_eq!(store.get(&k).await?, Some("a".to_string()), "value after failed cas");
        ensure!(store.compare_and_set(&k, Some("a"), "b", Some(ttl)).await?, "cas with the right expectation failed");
        let set_at = Instant::now();
        ensure_eq!(store.get(&k).await?, Some("b".to_string()), "value after cas");
        tokio::time::sleep(wait.saturating_sub(set_at.elapsed())).await;
        ensure_eq!(store.get(&k).await?, None, "cas value after its TTL");
        ensure!(!store.compare_and_set(&k, Some("b"), "c", None).await?, "cas matched an expired value");
        ensure!(store.compare_and_set(&k, None, "c", None).await?, "cas expecting absence on an expired key");
        let timed = s.key("cas-ttl-cleared");
        store.set_with_ttl(&timed, "x", ttl).await?;
        ensure!(store.compare_and_set(&timed, Some("x"), "y", None).await?, "cas over a TTL'd value");
        let replaced_at = Instant::now();
        ensure_eq!(store.inspect(&timed).await?.ttl, None, "TTL after cas with no TTL");
        tokio::time::sleep(wait.saturating_sub(replaced_at.elapsed())).await;
        ensure_eq!(store.get(&timed).await?, Some("y".to_string()), "cas with no TTL kept the old TTL");
        ensure!(store.compare_and_set(&k, Some("c"), "", None).await?, "cas to the empty value");
        ensure!(store.compare_and_set(&k, Some(""), "d", None).await?, "cas from the empty value");
        Ok(())
    }

    /// 16 tasks racing `compare_and_set` on one expected value: exactly one wins.
    async fn compare_and_set_race_has_one_winner(store, s) {
        let k = s.key("race");
        store.set(&k, "0").await?;
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (store, k) = (Arc::clone(store), k.clone());
            tasks.push(tokio::spawn(async move {
                store.compare_and_set(&k, Some("0"), &format!("task-{i}"), None).await.map(|won| (i, won))
            }));
        }
        let mut winners = Vec::new();
        for t in tasks {
            let (i, won) = t.await.map_err(|e| CheckFailure(format!("task failed: {e}")))??;
            if won {
                winners.push(i);
            }
        }
        ensure_eq!(winners.len(), 1, "number of winners");
        ensure_eq!(store.get(&k).await?, Some(format!("task-{}", winners[0])), "winner's value");
        Ok(())
    }

    /// 16 tasks × 500 `incr` on one key return exactly 1..=8000, each once.
    async fn concurrent_incr_is_exact(store, s) {
        let k = s.key("hot-counter");
        let (tasks, per_task) = (16, 500);
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (store, k) = (Arc::clone(store), k.clone());
            handles.push(tokio::spawn(async move {
                let mut got = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    got.push(store.incr(&k).await?);
                }
                Ok::<_, crate::Error>(got)
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.map_err(|e| CheckFailure(format!("task failed: {e}")))??);
        }
        all.sort_unstable();
        let expected: Vec<i64> = (1..=(tasks * per_task) as i64).collect();
        ensure!(all == expected, "values are not exactly 1..={}: {} values, {} distinct", tasks * per_task, all.len(), all.iter().collect::<HashSet<_>>().len());
        Ok(())
    }

    /// 16 tasks contend for one lock over many rounds: never two holders at
    /// once, and fencing tokens rise in acquisition order.
    async fn concurrent_locks_exclude(store, s) {
        let k = s.key("contended");
        let holders = Arc::new(AtomicUsize::new(0));
        let tokens = Arc::new(Mutex::new(Vec::new()));
        let (tasks, rounds) = (16, 8);
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (store, k, holders, tokens) = (Arc::clone(store), k.clone(), Arc::clone(&holders), Arc::clone(&tokens));
            handles.push(tokio::spawn(async move {
                let mut done = 0;
                let deadline = Instant::now() + Duration::from_secs(60);
                while done < rounds {
                    if Instant::now() > deadline {
                        return Err(CheckFailure("a task did not get the lock within 60 s".into()));
                    }
                    let Some(lock) = store.acquire_lock(&k, Duration::from_secs(30)).await? else {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                        continue;
                    };
                    let before = holders.fetch_add(1, Ordering::SeqCst);
                    tokens.lock().unwrap().push(lock.fencing_token);
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    holders.fetch_sub(1, Ordering::SeqCst);
                    if before != 0 {
                        return Err(CheckFailure(format!("{} holders of one lock at once", before + 1)));
                    }
                    let released = store.release_lock(&k, &lock.id).await?;
                    if released != ReleaseOutcome::Released {
                        return Err(CheckFailure(format!("holder's release returned {released}")));
                    }
                    done += 1;
                }
                Ok(())
            }));
        }
        for h in handles {
            h.await.map_err(|e| CheckFailure(format!("task failed: {e}")))??;
        }
        let tokens = tokens.lock().unwrap();
        ensure_eq!(tokens.len(), tasks * rounds, "acquisitions");
        ensure!(tokens.windows(2).all(|w| w[0] < w[1]), "fencing tokens did not rise in acquisition order: {:?}", &tokens[..]);
        Ok(())
    }

    /// `assign_nonce` follows the original SDK's rule.
    async fn assign_nonce_rule(store, s) {
        let k = s.key("nonce");
        // (stored before, pending, expected)
        let cases: &[(Option<&str>, u64, u64)] = &[
            (None, 0, 0),
            (None, 9, 9),
            (Some("4"), 0, 5),
            (Some("4"), 5, 5),
            (Some("4"), 12, 12),
            (Some("-1"), 0, 0),
            (Some("499"), 0, 500),
            (Some("500"), 0, 0),
            (Some("1000"), 600, 1001),
            (Some("1000"), 400, 400),
        ];
        for &(before, pending, want) in cases {
            match before {
                Some(v) => store.set(&k, v).await?,
                None => {
                    store.delete(&k).await?;
                }
            }
            let got = store.assign_nonce(&k, pending).await?;
            ensure_eq!(got, want, "assign_nonce(stored {before:?}, pending {pending})");
            ensure_eq!(store.get(&k).await?, Some(want.to_string()), "stored nonce");
        }
        // An expired key counts as missing (-1).
        let (ttl, wait) = ttl_and_wait(store);
        store.set_with_ttl(&k, "41", ttl).await?;
        let set_at = Instant::now();
        tokio::time::sleep(wait.saturating_sub(set_at.elapsed())).await;
        ensure_eq!(store.assign_nonce(&k, 0).await?, 0, "assign_nonce on an expired key");
        ensure_eq!(store.inspect(&k).await?.ttl, None, "TTL of a nonce key recreated by assign_nonce");
        // A live key keeps its TTL.
        store.set_with_ttl(&k, "41", Duration::from_secs(60)).await?;
        ensure_eq!(store.assign_nonce(&k, 0).await?, 42, "assign_nonce on a TTL'd key");
        let left = store.inspect(&k).await?.ttl;
        ensure!(left.is_some_and(|t| t <= Duration::from_secs(60) + store.capabilities().ttl_resolution && t > Duration::from_secs(30)), "TTL after assign_nonce: {left:?}");
        store.set(&k, "not-a-nonce").await?;
        expect_kind(store.assign_nonce(&k, 0).await, ErrorKind::NotAnInteger, "assign_nonce on a non-integer")?;
        ensure_eq!(store.get(&k).await?, Some("not-a-nonce".to_string()), "value after failed assign_nonce");
        store.set(&k, &i64::MAX.to_string()).await?;
        expect_kind(store.assign_nonce(&k, 0).await, ErrorKind::Overflow, "assign_nonce at i64::MAX")?;
        Ok(())
    }

    /// 16 concurrent callers of `assign_nonce` never get the same nonce.
    async fn concurrent_nonces_are_unique(store, s) {
        let k = s.key("nonce-race");
        let (tasks, per_task) = (16, 20);
        let mut handles = Vec::new();
        for _ in 0..tasks {
            let (store, k) = (Arc::clone(store), k.clone());
            handles.push(tokio::spawn(async move {
                let mut got = Vec::new();
                for _ in 0..per_task {
                    got.push(store.assign_nonce(&k, 0).await?);
                }
                Ok::<_, crate::Error>(got)
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.map_err(|e| CheckFailure(format!("task failed: {e}")))??);
        }
        all.sort_unstable();
        let expected: Vec<u64> = (0..(tasks * per_task) as u64).collect();
        ensure!(all == expected, "nonces are not exactly 0..{}", tasks * per_task);
        Ok(())
    }

    /// Keys with separators, quotes, spaces, unicode and 1024 bytes
    /// round-trip exactly and stay distinct.
    async fn unusual_keys_round_trip(store, s) {
        let long_tail = "x".repeat(MAX_KEY_BYTES - s.namespace.len() - 1);
        let names = [
            "a:b:c", "a/b/../c", "100%", "it's", "say \"hi\"", "with space", "tab\there",
            "ünïcödé-🔑", "{hash}tag", "*?[glob]", ".", "..", "zookeeper", long_tail.as_str(),
        ];
        for (i, name) in names.iter().enumerate() {
            let k = s.key(name);
            ensure!(k.len() <= MAX_KEY_BYTES, "test key too long");
            store.set(&k, &format!("value-{i}")).await?;
        }
        for (i, name) in names.iter().enumerate() {
            let k = format!("{}:{name}", s.namespace);
            ensure_eq!(store.get(&k).await?, Some(format!("value-{i}")), "key {name:?}");
            store.set(&k, "41").await?;
            ensure_eq!(store.incr(&k).await?, 42, "incr on key {name:?}");
        }
        Ok(())
    }

    /// `inspect` shows the value, the TTL left and the last fencing token.
    async fn inspect_shows_value_ttl_and_fencing(store, s) {
        let (plain, timed, locked) = (s.key("plain"), s.key("timed"), s.key("locked"));
        store.set(&plain, "p").await?;
        store.set_with_ttl(&timed, "t", Duration::from_secs(30)).await?;
        let lock = store.acquire_lock(&locked, Duration::from_secs(30)).await?.ok_or_else(|| CheckFailure("lock not acquired".into()))?;
        let info = store.inspect(&plain).await?;
        ensure_eq!((info.value.as_deref(), info.ttl), (Some("p"), None), "inspect of a plain value");
        let info = store.inspect(&timed).await?;
        ensure_eq!(info.value.as_deref(), Some("t"), "inspect value");
        ensure!(info.ttl.is_some_and(|t| t > Duration::from_secs(20) && t <= Duration::from_secs(30)), "inspect ttl {:?}", info.ttl);
        let info = store.inspect(&locked).await?;
        ensure_eq!(info.value.as_deref(), Some(lock.id.as_str()), "inspect of a lock: holder id");
        ensure_eq!(info.fencing_token, Some(lock.fencing_token), "inspect of a lock: fencing token");
        store.release_lock(&locked, &lock.id).await?;
        let info = store.inspect(&locked).await?;
        ensure_eq!(info.value, None, "inspect after release");
        // Where the backend still knows it (etcd forgets the revision with
        // the key), the last token stays visible.
        ensure!(info.fencing_token.is_none_or(|t| t == lock.fencing_token), "inspect after release: token {:?}", info.fencing_token);
        let info = store.inspect(&s.key("missing")).await?;
        ensure_eq!(info, crate::KeyInfo::default(), "inspect of a missing key");
        Ok(())
    }

    /// `purge` removes a value, a lock and what a delete keeps (the last
    /// fencing token), and purging a missing key is not an error.
    async fn purge_forgets_a_key(store, s) {
        let (plain, locked) = (s.key("plain"), s.key("locked"));
        store.set(&plain, "p").await?;
        let lock = store.acquire_lock(&locked, Duration::from_secs(30)).await?.ok_or_else(|| CheckFailure("lock not acquired".into()))?;
        store.release_lock(&locked, &lock.id).await?;
        store.acquire_lock(&locked, Duration::from_secs(30)).await?.ok_or_else(|| CheckFailure("lock not acquired again".into()))?;
        for key in [&plain, &locked] {
            store.purge(key).await?;
            ensure_eq!(store.inspect(key).await?, crate::KeyInfo::default(), "inspect after purge");
            ensure_eq!(store.get(key).await?, None, "get after purge");
        }
        store.purge(&s.key("missing")).await?;
        let again = store.acquire_lock(&locked, Duration::from_secs(30)).await?;
        ensure!(again.is_some(), "a purged lock key could not be locked again");
        Ok(())
    }

    /// `keys` lists live keys by prefix, or is Unsupported as the
    /// capabilities say.
    async fn keys_lists_live_keys_by_prefix(store, s) {
        let names = ["a", "b", "c:d"];
        for n in names {
            store.set(&s.key(n), "v").await?;
        }
        store.set_with_ttl(&s.key("expired"), "v", Duration::from_millis(1)).await?;
        tokio::time::sleep(Duration::from_millis(20) + store.capabilities().ttl_resolution).await;
        let listed = store.keys(&format!("{}:", s.namespace), 100).await;
        if !store.capabilities().list_keys {
            expect_kind(listed, ErrorKind::Unsupported, "keys without the capability")?;
            return Ok(());
        }
        let mut listed = listed?;
        listed.sort();
        let expected: Vec<String> = names.iter().map(|n| format!("{}:{n}", s.namespace)).collect();
        ensure_eq!(listed, expected, "keys under the namespace");
        ensure_eq!(store.keys(&format!("{}:", s.namespace), 2).await?.len(), 2, "keys with a limit");
        ensure_eq!(store.keys(&format!("{}:", s.namespace), 0).await?, Vec::<String>::new(), "keys with limit 0");
        // Characters that are patterns in glob, LIKE or regex are literal.
        let special = ["*", "?", "[", "%", "_", "\\", "."];
        for c in special {
            store.set(&s.key(&format!("x{c}y")), "v").await?;
            store.set(&s.key(&format!("xZ{c}")), "v").await?;
        }
        for c in special {
            let prefix = format!("{}:x{c}", s.namespace);
            let listed = store.keys(&prefix, 100).await?;
            ensure_eq!(listed, vec![format!("{prefix}y")], "keys with {c:?} in the prefix");
        }
        Ok(())
    }

    /// `notify` wakes a `wait_notified` of the same key, and only of that
    /// key; or both are Unsupported, as the capabilities say.
    async fn notifications_wake_waiters(store, s) {
        let (k, other) = (s.key("signal"), s.key("other"));
        if !store.capabilities().notifications {
            expect_kind(store.notify(&k).await, ErrorKind::Unsupported, "notify without the capability")?;
            expect_kind(store.wait_notified(&k, Duration::from_millis(10)).await, ErrorKind::Unsupported, "wait_notified without the capability")?;
            return Ok(());
        }
        ensure!(!store.wait_notified(&k, Duration::from_millis(50)).await?, "wait_notified returned true without a notify");
        let waiter = {
            let (store, k) = (Arc::clone(store), k.clone());
            tokio::spawn(async move {
                let started = Instant::now();
                store.wait_notified(&k, Duration::from_secs(10)).await.map(|woken| (woken, started.elapsed()))
            })
        };
        let unrelated = {
            let (store, other) = (Arc::clone(store), other.clone());
            tokio::spawn(async move { store.wait_notified(&other, Duration::from_millis(600)).await })
        };
        // Give both waiters time to subscribe, then notify one key, a few times.
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            store.notify(&k).await?;
        }
        let (woken, waited) = waiter.await.map_err(|e| CheckFailure(e.to_string()))??;
        ensure!(woken && waited < Duration::from_secs(5), "the waiter was not woken ({woken}, {waited:?})");
        ensure!(!unrelated.await.map_err(|e| CheckFailure(e.to_string()))??, "a notify woke a waiter of another key");
        Ok(())
    }

    /// `eval` either runs (as `capabilities().eval` says) or is Unsupported,
    /// naming the backend and the operation.
    async fn eval_matches_capabilities(store, s) {
        let caps = store.capabilities();
        let k = s.key("eval");
        if !caps.eval {
            let err = match store.eval("return 1", &[&k], &[]).await {
                Err(e) => e,
                Ok(v) => return Err(CheckFailure(format!("eval without the capability returned {v:?}"))),
            };
            ensure_eq!(err.kind(), ErrorKind::Unsupported, "eval error kind");
            ensure_eq!(err.operation(), Operation::Eval, "eval error operation");
            ensure_eq!(err.backend(), caps.backend, "eval error backend");
            ensure!(err.to_string().contains(caps.backend) && err.to_string().contains("eval"), "message {err} does not name the backend and operation");
        } else if caps.eval_language == Some("lua") {
            let v = store.eval("return redis.call('INCRBY', KEYS[1], ARGV[1])", &[&k], &["5"]).await?;
            ensure_eq!(v, crate::EvalValue::Integer(5), "lua INCRBY result");
            ensure_eq!(store.get(&k).await?, Some("5".to_string()), "key written by the script");
        } else if caps.eval_language == Some("sql") {
            let v = store.eval("SELECT $1::text AS k, $2::text AS a", &[&k], &["5"]).await?;
            let crate::EvalValue::Array(rows) = &v else {
                return Err(CheckFailure(format!("sql eval returned {v:?}, not rows")));
            };
            let [crate::EvalValue::Array(columns)] = rows.as_slice() else {
                return Err(CheckFailure(format!("sql eval returned {v:?}, not one row")));
            };
            let [crate::EvalValue::Text(key), arg] = columns.as_slice() else {
                return Err(CheckFailure(format!("sql eval returned {v:?}, not two text columns")));
            };
            ensure!(key.ends_with(&k), "sql eval got key {key:?}, not the prefixed {k:?}");
            ensure_eq!(arg, &crate::EvalValue::Text("5".into()), "sql eval argument");
            expect_kind(store.eval("SELECT * FROM no_such_table_here", &[&k], &[]).await, ErrorKind::Script, "a failing SQL statement")?;
        } else {
            return Err(CheckFailure(format!("eval in unknown language {:?}", caps.eval_language)));
        }
        Ok(())
    }
}

/// Two stores over the same backend with different prefixes never see each
/// other's keys. Not part of [`checks`], since it needs two stores.
pub async fn prefixes_are_isolated(a: &Store, b: &Store) -> CheckResult {
    let sa = Scratch::new(a, "prefixes_are_isolated");
    let k = sa.key("shared-name");
    let sb = Scratch::new(b, "prefixes_are_isolated");
    sb.track(&k);
    let result = async {
        a.set(&k, "from-a").await?;
        ensure_eq!(b.get(&k).await?, None, "store b sees store a's key");
        if a.capabilities().list_keys {
            let listed = b.keys(&sa.namespace, 100).await?;
            ensure!(
                listed.is_empty(),
                "store b lists store a's keys: {listed:?}"
            );
            let listed = a.keys(&sa.namespace, 100).await?;
            ensure_eq!(listed, vec![k.clone()], "store a lists its own key once");
        }
        ensure!(
            b.acquire_lock(&k, Duration::from_secs(5)).await?.is_some(),
            "store a's value blocked store b's lock"
        );
        ensure_eq!(
            a.get(&k).await?,
            Some("from-a".to_string()),
            "store a's value after b wrote"
        );
        ensure!(a.delete(&k).await?, "store a's delete");
        ensure!(
            b.get(&k).await?.is_some(),
            "store a's delete removed store b's key"
        );
        Ok(())
    }
    .await;
    sa.cleanup().await;
    sb.cleanup().await;
    result
}

/// The outcome of one check.
#[derive(Debug)]
pub struct CheckOutcome {
    /// The check's name.
    pub name: &'static str,
    /// Pass, or why it failed.
    pub result: CheckResult,
    /// How long it took.
    pub elapsed: Duration,
}

/// The outcomes of a run of the suite.
#[derive(Debug, Default)]
pub struct Report {
    /// One entry per check, in order.
    pub outcomes: Vec<CheckOutcome>,
}

impl Report {
    /// The checks that failed.
    pub fn failures(&self) -> impl Iterator<Item = &CheckOutcome> {
        self.outcomes.iter().filter(|o| o.result.is_err())
    }

    /// Panic with every failure, if any.
    pub fn assert_passed(&self) {
        let failures: Vec<String> = self
            .failures()
            .map(|o| format!("{}: {}", o.name, o.result.as_ref().unwrap_err()))
            .collect();
        assert!(
            !self.outcomes.is_empty() && failures.is_empty(),
            "{} of {} conformance checks failed:\n{}",
            failures.len(),
            self.outcomes.len(),
            failures.join("\n")
        );
    }
}

/// Run every check in turn, calling `each` as each one finishes.
pub async fn run_with(store: &Store, mut each: impl FnMut(&CheckOutcome)) -> Report {
    let mut report = Report::default();
    for check in checks() {
        let started = Instant::now();
        // Each check runs in its own task, so a store that panics fails the
        // check instead of ending the run.
        let owned = Arc::clone(store);
        let result = match tokio::spawn(async move { (check.run)(&owned).await }).await {
            Ok(result) => result,
            Err(e) => Err(CheckFailure(format!("the check panicked: {e}"))),
        };
        let outcome = CheckOutcome {
            name: check.name,
            result,
            elapsed: started.elapsed(),
        };
        each(&outcome);
        report.outcomes.push(outcome);
    }
    report
}

/// Run every check in turn.
pub async fn run_all(store: &Store) -> Report {
    run_with(store, |_| {}).await
}
