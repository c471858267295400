//! The Node.js package `atomic-store`: the Rust stores behind the Vana
//! SDK's `IAtomicStore`, method for method (see `bindings/node/README.md`).
//!
//! Every async method checks its JavaScript arguments itself, so bad input
//! rejects with a typed error and is never sent; every rejection is an
//! `Error` with `code`, `backend`, `operation` and `temporary`, built on
//! the JavaScript thread.

use std::future::Future;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use atomic_store::{
    AtomicStore as Store, Error as StoreError, ErrorKind, EvalValue, ExtendOutcome, LockId,
    Operation,
};
use napi::bindgen_prelude::*;
use napi::{sys, Env, JsValue, ValueType};
use napi_derive::napi;

/// `Number.MAX_SAFE_INTEGER`: past it a JavaScript number is not exact.
const MAX_SAFE_INTEGER: i64 = (1 << 53) - 1;
/// The most keys or args `eval` takes.
const MAX_ARRAY: u32 = 1024;

/// A store opened from a URL: `AtomicStore.open(process.env.ATOMIC_STORE_URL)`.
#[napi]
pub struct AtomicStore {
    /// `None` once closed; calls in flight hold their own clone and finish.
    store: RwLock<Option<Arc<dyn Store>>>,
    backend: &'static str,
}

/// A lock with its fencing token (`acquireFencedLock`).
#[napi(object)]
pub struct FencedLock {
    /// The holder's id: pass it to `releaseLock` or `extendLock`.
    pub id: String,
    /// Greater than every token issued before for this key.
    pub fencing_token: BigInt,
}

/// What an operator sees of one key (`inspect`).
#[napi(object)]
pub struct KeyInfo {
    /// The live value (for a held lock: the holder's id); absent when none.
    pub value: Option<String>,
    /// Seconds left before the key expires; absent without a TTL.
    pub ttl_seconds: Option<f64>,
    /// The last fencing token issued for the key; absent when unknown.
    pub fencing_token: Option<BigInt>,
}

/// What the backend supports (`capabilities`).
#[napi(object)]
pub struct Capabilities {
    /// The backend's name, as errors give it.
    pub backend: String,
    /// `eval` runs scripts.
    pub eval: bool,
    /// The language `eval` takes (`"lua"`, `"sql"`).
    pub eval_language: Option<String>,
    /// A TTL'd key is gone by its TTL plus this many seconds.
    pub ttl_resolution_seconds: f64,
    /// Which clock decides expiry: `"server"`, `"local"` or `"client"`.
    pub expiry_clock: String,
    /// Safe to share between processes on one machine.
    pub cross_process: bool,
    /// Safe to share between machines.
    pub cross_host: bool,
    /// Data survives a restart.
    pub durable: bool,
}

/// A rejection as JavaScript sees it: an `Error` with these properties.
struct Rejection {
    /// The error kind in SCREAMING_SNAKE_CASE, or `UNSAFE_INTEGER` / `CLOSED`
    /// for the two failures of the binding itself.
    code: String,
    message: String,
    backend: &'static str,
    operation: &'static str,
    temporary: bool,
    /// For `UNSAFE_INTEGER`: the exact value the counter reached.
    value: Option<i64>,
}

impl From<StoreError> for Rejection {
    fn from(error: StoreError) -> Self {
        Rejection {
            code: error.kind().as_str().to_ascii_uppercase(),
            message: error.to_string(),
            backend: error.backend(),
            operation: error.operation().as_str(),
            temporary: error.is_temporary(),
            value: None,
        }
    }
}

impl Rejection {
    /// The JavaScript `Error`, with the properties a caller branches on.
    fn into_js(self, env: &Env) -> napi::Error {
        match self.build(env) {
            Ok(error) => error,
            Err(failed) => failed,
        }
    }

    fn build(self, env: &Env) -> napi::Result<napi::Error> {
        let mut object = env.create_error(napi::Error::from_reason(self.message))?;
        object.set_named_property("code", self.code)?;
        object.set_named_property("backend", self.backend)?;
        object.set_named_property("operation", self.operation)?;
        object.set_named_property("temporary", self.temporary)?;
        if let Some(value) = self.value {
            object.set_named_property("value", BigInt::from(value))?;
            object.set_named_property("applied", true)?;
        }
        Ok(napi::Error::from(object.to_unknown()))
    }
}

type Settled<T> = std::result::Result<T, Rejection>;

/// The promise of one call: rejected at once when `work` is an error (bad
/// input, nothing sent), else settled by the store, with `to_js` turning
/// the answer into JavaScript on the JavaScript thread.
fn settle<'env, T, V, F>(
    env: &'env Env,
    work: std::result::Result<F, Rejection>,
    to_js: impl FnOnce(T) -> Settled<V> + 'static,
) -> napi::Result<PromiseRaw<'env, V>>
where
    T: Send + 'static,
    V: ToNapiValue,
    F: Future<Output = atomic_store::Result<T>> + Send + 'static,
{
    let answer = async move {
        Ok(match work {
            Ok(future) => future.await.map_err(Rejection::from),
            Err(rejection) => Err(rejection),
        })
    };
    env.spawn_future_with_callback(answer, move |env, answer| {
        answer
            .and_then(to_js)
            .map_err(|rejection| rejection.into_js(env))
    })
}

/// One call's store and operation, for checking its arguments.
struct Call {
    store: Arc<dyn Store>,
    op: Operation,
}

impl Call {
    fn backend(&self) -> &'static str {
        self.store.capabilities().backend
    }

    fn invalid(&self, message: String) -> StoreError {
        StoreError::new(ErrorKind::InvalidArgument, self.backend(), self.op, message)
    }

    fn string(&self, value: &Unknown, name: &str) -> std::result::Result<String, StoreError> {
        match value.get_type() {
            // SAFETY: the value was just seen to be a string.
            Ok(ValueType::String) => unsafe { value.cast::<String>() }
                .map_err(|_| self.invalid(format!("`{name}` could not be read as a string"))),
            _ => Err(self.invalid(format!("`{name}` must be a string"))),
        }
    }

    fn string_or_null(
        &self,
        value: &Unknown,
        name: &str,
    ) -> std::result::Result<Option<String>, StoreError> {
        match value.get_type() {
            Ok(ValueType::Null) => Ok(None),
            _ => self
                .string(value, name)
                .map(Some)
                .map_err(|_| self.invalid(format!("`{name}` must be a string or null"))),
        }
    }

    fn number(&self, value: &Unknown, name: &str) -> std::result::Result<f64, StoreError> {
        match value.get_type() {
            // SAFETY: the value was just seen to be a number.
            Ok(ValueType::Number) => unsafe { value.cast::<f64>() }
                .map_err(|_| self.invalid(format!("`{name}` could not be read as a number"))),
            _ => Err(self.invalid(format!("`{name}` must be a number"))),
        }
    }

    /// Seconds, as the original takes them; fractions allowed. Zero and
    /// anything under 1 ms is refused by the store's own TTL rule.
    fn seconds(&self, value: &Unknown, name: &str) -> std::result::Result<Duration, StoreError> {
        let seconds = self.number(value, name)?;
        Duration::try_from_secs_f64(seconds).map_err(|_| {
            self.invalid(format!(
                "`{name}` must be a finite, positive number of seconds, not {seconds}"
            ))
        })
    }

    /// An array of at most `MAX_ARRAY` strings, read element by element,
    /// stopping at the first that is not a string.
    fn strings(&self, value: &Unknown, name: &str) -> std::result::Result<Vec<String>, StoreError> {
        let not_strings = || self.invalid(format!("`{name}` must be an array of strings"));
        if !value.is_array().unwrap_or(false) {
            return Err(not_strings());
        }
        // SAFETY: the value was just seen to be an array.
        let array = unsafe { value.cast::<Array>() }.map_err(|_| not_strings())?;
        if array.len() > MAX_ARRAY {
            return Err(self.invalid(format!("`{name}` has more than {MAX_ARRAY} entries")));
        }
        (0..array.len())
            .map(|i| match array.get::<Unknown>(i) {
                Ok(Some(item)) => self.string(&item, name).map_err(|_| not_strings()),
                _ => Err(not_strings()),
            })
            .collect()
    }
}

/// A JavaScript number for a counter, or `UNSAFE_INTEGER` past the safe
/// range: the write was applied, and the error's `value` says where the
/// counter is now.
fn safe_number(backend: &'static str, op: Operation, value: i64) -> Settled<f64> {
    if value.unsigned_abs() <= MAX_SAFE_INTEGER as u64 {
        return Ok(value as f64);
    }
    let message = format!(
        "{backend} {op}: the counter is now {value}, past Number.MAX_SAFE_INTEGER, so a number \
         would be wrong; the write WAS applied, so do not call again: error.value has the exact \
         value as a bigint (use incrBig for this counter from now on)"
    );
    Err(Rejection {
        code: "UNSAFE_INTEGER".to_owned(),
        message,
        backend,
        operation: op.as_str(),
        temporary: false,
        value: Some(value),
    })
}

/// An `eval` reply as JavaScript: nil → null, integers → number (bigint
/// past the safe range), text and status → string, bytes → Buffer, a
/// nested error → Error, arrays → arrays.
pub struct EvalReply(EvalValue);

impl ToNapiValue for EvalReply {
    unsafe fn to_napi_value(env: sys::napi_env, reply: Self) -> napi::Result<sys::napi_value> {
        match reply.0 {
            EvalValue::Nil => Null::to_napi_value(env, Null),
            EvalValue::Integer(n) if n.unsigned_abs() <= MAX_SAFE_INTEGER as u64 => {
                f64::to_napi_value(env, n as f64)
            }
            EvalValue::Integer(n) => BigInt::to_napi_value(env, BigInt::from(n)),
            EvalValue::Text(s) | EvalValue::Status(s) => String::to_napi_value(env, s),
            EvalValue::Bytes(b) => Buffer::to_napi_value(env, Buffer::from(b)),
            EvalValue::Error(message) => {
                let env = Env::from_raw(env);
                let error = env.create_error(napi::Error::from_reason(message))?;
                Object::to_napi_value(env.raw(), error)
            }
            EvalValue::Array(items) => {
                Vec::<EvalReply>::to_napi_value(env, items.into_iter().map(EvalReply).collect())
            }
            _ => Null::to_napi_value(env, Null),
        }
    }
}

#[napi]
impl AtomicStore {
    /// Open a store from any URL the Rust `atomic_store::open` takes
    /// (`sqlite://`, `redis://`, `postgres://`, `dynamodb://`,
    /// `mongodb://`, `mysql://`, `etcd://`, `zk://`, `memory://`). Throws an
    /// `Error` with a `code` on a bad URL.
    #[napi(factory, ts_args_type = "url: string | undefined")]
    pub fn open(env: Env, url: Unknown) -> napi::Result<Self> {
        let url = match url.get_type()? {
            // SAFETY: the value was just seen to be a string.
            ValueType::String => unsafe { url.cast::<String>() }?,
            _ => {
                let message =
                    "AtomicStore.open needs a URL string, such as sqlite://atomic-store.db \
                               (is the environment variable set?)";
                let error =
                    StoreError::new(ErrorKind::InvalidArgument, "node", Operation::Open, message);
                return Err(Rejection::from(error).into_js(&env));
            }
        };
        let store = napi::bindgen_prelude::within_runtime_if_available(|| atomic_store::open(&url))
            .map_err(|error| Rejection::from(error).into_js(&env))?;
        Ok(AtomicStore {
            backend: store.capabilities().backend,
            store: RwLock::new(Some(store)),
        })
    }

    /// The store for one call, or `CLOSED` once `close()` was called.
    fn call(&self, op: Operation) -> std::result::Result<Call, Rejection> {
        let store = self.store.read().unwrap_or_else(|e| e.into_inner()).clone();
        match store {
            Some(store) => Ok(Call { store, op }),
            None => Err(Rejection {
                code: "CLOSED".to_owned(),
                message: format!(
                    "{} {op}: this store is closed; open a new one with AtomicStore.open",
                    self.backend
                ),
                backend: self.backend,
                operation: op.as_str(),
                temporary: false,
                value: None,
            }),
        }
    }

    /// Atomically increment the counter under `key` and return the new
    /// value. Rejects with `OVERFLOW` past `Number.MAX_SAFE_INTEGER`
    /// (use `incrBig` there).
    #[napi(ts_args_type = "key: string", ts_return_type = "Promise<number>")]
    pub fn incr<'env>(&self, env: &'env Env, key: Unknown) -> napi::Result<PromiseRaw<'env, f64>> {
        let call = self.call(Operation::Incr);
        let work = call.and_then(|call| {
            let key = call.string(&key, "key")?;
            let backend = call.backend();
            Ok(async move { call.store.incr(&key).await.map(|n| (backend, n)) })
        });
        settle(env, work, |(backend, n)| {
            safe_number(backend, Operation::Incr, n)
        })
    }

    /// `incr`, returning a `bigint`: exact over the whole 64-bit range.
    #[napi(ts_args_type = "key: string", ts_return_type = "Promise<bigint>")]
    pub fn incr_big<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
    ) -> napi::Result<PromiseRaw<'env, BigInt>> {
        let work = self.call(Operation::Incr).and_then(|call| {
            let key = call.string(&key, "key")?;
            Ok(async move { call.store.incr(&key).await })
        });
        settle(env, work, |n| Ok(BigInt::from(n)))
    }

    /// Take the lock under `key` for `ttlSeconds` (fractions allowed):
    /// its id, or `null` while another holder has it.
    #[napi(
        ts_args_type = "key: string, ttlSeconds: number",
        ts_return_type = "Promise<string | null>"
    )]
    pub fn acquire_lock<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
        ttl_seconds: Unknown,
    ) -> napi::Result<PromiseRaw<'env, Option<String>>> {
        let work = self.lock_call(&key, &ttl_seconds);
        settle(env, work, |lock| Ok(lock.map(|l| l.id.as_str().to_owned())))
    }

    /// `acquireLock` with the lock's fencing token: `{ id, fencingToken }`
    /// or `null`.
    #[napi(
        ts_args_type = "key: string, ttlSeconds: number",
        ts_return_type = "Promise<FencedLock | null>"
    )]
    pub fn acquire_fenced_lock<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
        ttl_seconds: Unknown,
    ) -> napi::Result<PromiseRaw<'env, Option<FencedLock>>> {
        let work = self.lock_call(&key, &ttl_seconds);
        settle(env, work, |lock| {
            Ok(lock.map(|l| FencedLock {
                id: l.id.as_str().to_owned(),
                fencing_token: BigInt::from(l.fencing_token),
            }))
        })
    }

    fn lock_call(
        &self,
        key: &Unknown,
        ttl: &Unknown,
    ) -> std::result::Result<
        impl Future<Output = atomic_store::Result<Option<atomic_store::Lock>>> + Send + 'static,
        Rejection,
    > {
        let call = self.call(Operation::AcquireLock)?;
        let key = call.string(key, "key")?;
        let ttl = call.seconds(ttl, "ttlSeconds")?;
        Ok(async move { call.store.acquire_lock(&key, ttl).await })
    }

    /// Release the lock if `lockId` holds it; otherwise leave it alone. As
    /// in the original, the promise does not say which: use
    /// `releaseLockOutcome` for that.
    #[napi(
        ts_args_type = "key: string, lockId: string",
        ts_return_type = "Promise<void>"
    )]
    pub fn release_lock<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
        lock_id: Unknown,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        settle(env, self.release_call(&key, &lock_id), |_| Ok(()))
    }

    /// `releaseLock`, saying what happened: `'released'`, `'not_held'`
    /// (expired or removed) or `'held_by_other'` (left untouched).
    #[napi(
        ts_args_type = "key: string, lockId: string",
        ts_return_type = "Promise<'released' | 'not_held' | 'held_by_other'>"
    )]
    pub fn release_lock_outcome<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
        lock_id: Unknown,
    ) -> napi::Result<PromiseRaw<'env, &'static str>> {
        settle(env, self.release_call(&key, &lock_id), |outcome| {
            Ok(outcome.as_str())
        })
    }

    fn release_call(
        &self,
        key: &Unknown,
        lock_id: &Unknown,
    ) -> std::result::Result<
        impl Future<Output = atomic_store::Result<atomic_store::ReleaseOutcome>> + Send + 'static,
        Rejection,
    > {
        let call = self.call(Operation::ReleaseLock)?;
        let key = call.string(key, "key")?;
        let id = LockId::from(call.string(lock_id, "lockId")?);
        Ok(async move { call.store.release_lock(&key, &id).await })
    }

    /// Push the lock's expiry to `ttlSeconds` from now, if `lockId` holds
    /// it: `'extended'`, `'not_held'` or `'held_by_other'`.
    #[napi(
        ts_args_type = "key: string, lockId: string, ttlSeconds: number",
        ts_return_type = "Promise<'extended' | 'not_held' | 'held_by_other'>"
    )]
    pub fn extend_lock<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
        lock_id: Unknown,
        ttl_seconds: Unknown,
    ) -> napi::Result<PromiseRaw<'env, &'static str>> {
        let work = self.call(Operation::ExtendLock).and_then(|call| {
            let key = call.string(&key, "key")?;
            let id = LockId::from(call.string(&lock_id, "lockId")?);
            let ttl = call.seconds(&ttl_seconds, "ttlSeconds")?;
            Ok(async move { call.store.extend_lock(&key, &id, ttl).await })
        });
        settle(env, work, |outcome: ExtendOutcome| Ok(outcome.as_str()))
    }

    /// The value under `key`, or `null`.
    #[napi(
        ts_args_type = "key: string",
        ts_return_type = "Promise<string | null>"
    )]
    pub fn get<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
    ) -> napi::Result<PromiseRaw<'env, Option<String>>> {
        let work = self.call(Operation::Get).and_then(|call| {
            let key = call.string(&key, "key")?;
            Ok(async move { call.store.get(&key).await })
        });
        settle(env, work, Ok)
    }

    /// Store `value` under `key` with no TTL (clearing any).
    #[napi(
        ts_args_type = "key: string, value: string",
        ts_return_type = "Promise<void>"
    )]
    pub fn set<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
        value: Unknown,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let work = self.call(Operation::Set).and_then(|call| {
            let key = call.string(&key, "key")?;
            let value = call.string(&value, "value")?;
            Ok(async move { call.store.set(&key, &value).await })
        });
        settle(env, work, Ok)
    }

    /// Store `value` under `key` for `ttlSeconds` (fractions allowed).
    #[napi(
        js_name = "setWithTTL",
        ts_args_type = "key: string, value: string, ttlSeconds: number",
        ts_return_type = "Promise<void>"
    )]
    pub fn set_with_ttl<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
        value: Unknown,
        ttl_seconds: Unknown,
    ) -> napi::Result<PromiseRaw<'env, ()>> {
        let work = self.call(Operation::SetWithTtl).and_then(|call| {
            let key = call.string(&key, "key")?;
            let value = call.string(&value, "value")?;
            let ttl = call.seconds(&ttl_seconds, "ttlSeconds")?;
            Ok(async move { call.store.set_with_ttl(&key, &value, ttl).await })
        });
        settle(env, work, Ok)
    }

    /// Remove `key`; removing a missing key is not an error.
    #[napi(ts_args_type = "key: string", ts_return_type = "Promise<void>")]
    pub fn delete<'env>(&self, env: &'env Env, key: Unknown) -> napi::Result<PromiseRaw<'env, ()>> {
        let work = self.call(Operation::Delete).and_then(|call| {
            let key = call.string(&key, "key")?;
            Ok(async move { call.store.delete(&key).await })
        });
        settle(env, work, |_| Ok(()))
    }

    /// Replace the value under `key` with `value` only if it equals
    /// `expected` (`null`: only if the key is missing). `ttlSeconds`, if
    /// given, is the new value's TTL. Resolves to whether it replaced.
    #[napi(
        ts_args_type = "key: string, expected: string | null, value: string, ttlSeconds?: number",
        ts_return_type = "Promise<boolean>"
    )]
    pub fn compare_and_set<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
        expected: Unknown,
        value: Unknown,
        ttl_seconds: Unknown,
    ) -> napi::Result<PromiseRaw<'env, bool>> {
        let work = self.call(Operation::CompareAndSet).and_then(|call| {
            let key = call.string(&key, "key")?;
            let expected = call.string_or_null(&expected, "expected")?;
            let value = call.string(&value, "value")?;
            // Left out (undefined): no TTL; anything else must be seconds.
            let ttl = match ttl_seconds.get_type() {
                Ok(ValueType::Undefined) => None,
                _ => Some(call.seconds(&ttl_seconds, "ttlSeconds")?),
            };
            Ok(async move {
                let store = &call.store;
                store
                    .compare_and_set(&key, expected.as_deref(), &value, ttl)
                    .await
            })
        });
        settle(env, work, Ok)
    }

    /// The original's one-step nonce rule (`RedisAtomicStore`'s
    /// `atomicAssignNonce`): the next nonce after the one stored under
    /// `lastUsedKey`, moved up to `pendingCount` when the chain is ahead,
    /// or back to it when the store is more than 500 ahead.
    #[napi(
        ts_args_type = "lastUsedKey: string, pendingCount: number",
        ts_return_type = "Promise<number>"
    )]
    pub fn atomic_assign_nonce<'env>(
        &self,
        env: &'env Env,
        last_used_key: Unknown,
        pending_count: Unknown,
    ) -> napi::Result<PromiseRaw<'env, f64>> {
        let work = self.call(Operation::AssignNonce).and_then(|call| {
            let key = call.string(&last_used_key, "lastUsedKey")?;
            let pending = call.number(&pending_count, "pendingCount")?;
            if !(pending >= 0.0 && pending.fract() == 0.0 && pending <= MAX_SAFE_INTEGER as f64) {
                return Err(call
                    .invalid(format!(
                        "`pendingCount` must be a whole number from 0 to Number.MAX_SAFE_INTEGER, not {pending}"
                    ))
                    .into());
            }
            let backend = call.backend();
            Ok(async move {
                let nonce = call.store.assign_nonce(&key, pending as u64).await?;
                Ok((backend, nonce))
            })
        });
        settle(env, work, |(backend, nonce)| {
            let nonce = i64::try_from(nonce).unwrap_or(i64::MAX);
            safe_number(backend, Operation::AssignNonce, nonce)
        })
    }

    /// Run a script where the backend has scripting (Redis: Lua). `keys`
    /// are prefixed like every other key; `args` are passed unchanged.
    /// Rejects with `UNSUPPORTED` elsewhere.
    #[napi(
        ts_args_type = "script: string, keys: string[], args: string[]",
        ts_return_type = "Promise<any>"
    )]
    pub fn eval<'env>(
        &self,
        env: &'env Env,
        script: Unknown,
        keys: Unknown,
        args: Unknown,
    ) -> napi::Result<PromiseRaw<'env, EvalReply>> {
        let work = self.call(Operation::Eval).and_then(|call| {
            let script = call.string(&script, "script")?;
            let keys = call.strings(&keys, "keys")?;
            let args = call.strings(&args, "args")?;
            Ok(async move {
                let keys: Vec<&str> = keys.iter().map(String::as_str).collect();
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                call.store.eval(&script, &keys, &args).await
            })
        });
        settle(env, work, |reply| Ok(EvalReply(reply)))
    }

    /// For operators: the live value of `key`, its TTL left and its last
    /// fencing token. Not atomic with other calls.
    #[napi(ts_args_type = "key: string", ts_return_type = "Promise<KeyInfo>")]
    pub fn inspect<'env>(
        &self,
        env: &'env Env,
        key: Unknown,
    ) -> napi::Result<PromiseRaw<'env, KeyInfo>> {
        let work = self.call(Operation::Inspect).and_then(|call| {
            let key = call.string(&key, "key")?;
            Ok(async move { call.store.inspect(&key).await })
        });
        settle(env, work, |info| {
            Ok(KeyInfo {
                value: info.value,
                ttl_seconds: info.ttl.as_ref().map(Duration::as_secs_f64),
                fencing_token: info.fencing_token.map(BigInt::from),
            })
        })
    }

    /// What the backend supports. Throws once the store is closed.
    #[napi]
    pub fn capabilities(&self, env: Env) -> napi::Result<Capabilities> {
        let call = self
            .call(Operation::Open)
            .map_err(|rejection| rejection.into_js(&env))?;
        let caps = call.store.capabilities();
        Ok(Capabilities {
            backend: caps.backend.to_owned(),
            eval: caps.eval,
            eval_language: caps.eval_language.map(str::to_owned),
            ttl_resolution_seconds: caps.ttl_resolution.as_secs_f64(),
            expiry_clock: match caps.expiry_clock {
                atomic_store::ExpiryClock::Server => "server",
                atomic_store::ExpiryClock::Local => "local",
                _ => "client",
            }
            .to_owned(),
            cross_process: caps.cross_process,
            cross_host: caps.cross_host,
            durable: caps.durable,
        })
    }

    /// Let the store go: calls in flight finish, later calls reject. Closing
    /// twice is harmless.
    #[napi]
    pub fn close(&self) {
        let store = self.store.write().unwrap_or_else(|e| e.into_inner()).take();
        // Connections close on the runtime that opened them.
        napi::bindgen_prelude::within_runtime_if_available(move || drop(store));
    }
}
