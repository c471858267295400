//! Atomic counters, fenced expiring locks and small key/value state, shared by
//! every instance of a service.
//!
//! Services that run as many instances at once (serverless relayers,
//! autoscaled API replicas, job workers) need a few primitives they can trust
//! across instances: an atomic counter (above all for blockchain nonces), a
//! lock that expires on its own and that only its owner can release, and small
//! key/value state with expiry. This crate gives them one contract, the
//! [`AtomicStore`] trait, over the systems they already run.
//!
//! ```
//! use std::time::Duration;
//! use atomic_store::{open, ReleaseOutcome};
//!
//! # async fn demo() -> atomic_store::Result<()> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let url = format!("sqlite://{}", dir.path().join("app.db").display());
//! // let url = "sqlite://app.db";
//! let store = open(&url)?;
//!
//! // A counter shared by every process that opens the same URL. (For
//! // transaction nonces, use `assign_nonce` or `nonce::NonceManager`.)
//! let job_id = store.incr("jobs:next-id").await?;
//! assert_eq!(job_id, 1);
//!
//! // A lock that expires by itself, with a fencing token.
//! if let Some(lock) = store.acquire_lock("jobs:lock", Duration::from_secs(5)).await? {
//!     // ... critical section; pass lock.fencing_token with every write ...
//!     assert_eq!(store.release_lock("jobs:lock", &lock.id).await?, ReleaseOutcome::Released);
//! }
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! # Backends
//! This is the one table of backends; the README and [`open`] link here.
//!
//! | URL | backend | feature | TTL resolution | expiry clock | `eval` | `keys` / `notify` |
//! |---|---|---|---|---|---|---|
//! | `memory://[NAME]` | in-process, sharded; a name shares one store within the process | `memory` (default) | 1 ms | local | no | yes / yes |
//! | `sqlite://PATH` | embedded file, safe across the processes of one machine | `sqlite` (default) | 1 ms | local | no | yes / no |
//! | `redis://[user:pass@]host:port[/db]`, `rediss://…` | Redis, layout-compatible with the TypeScript original | `redis` | 1 ms | server | Lua | yes / yes |
//! | `redis+cluster://host:port[,host:port…]`, `rediss+cluster://…` | Redis Cluster | `redis` | 1 ms | server | Lua | no / no |
//! | `redis+sentinel://[user:pass@]host:port[,host:port…]/PRIMARY[?db=N]` | Redis behind Sentinel; follows a failover; `?wait_replicas=N` for writes that survive one | `redis` | 1 ms | server | Lua | yes / yes |
//! | `postgres://user:pass@host:port/db`, `postgresql://…` | PostgreSQL, also behind PgBouncer in transaction mode (there with `listen=false`) | `postgres` | 1 ms | server | SQL | yes / yes |
//! | `etcd://host:port[,host:port…]`, `etcds://…` | etcd v3 | `etcd` | 3 s (whole-second leases) | server | no | yes / yes |
//! | `zk://host:port[,host:port…][/chroot]` | ZooKeeper 3.5+ (3.6+ for the lock recipe's native queue) | `zookeeper` | 650 ms (estimated server clock) | server | no | yes / yes |
//! | `dynamodb://TABLE?region=…[&endpoint=…]` | Amazon DynamoDB, standard AWS credential chain | `dynamodb` | `max_clock_skew`, at least 50 ms | client, with a skew margin | no | yes / no |
//! | `mongodb://host:port/DB[?collection=…]`, `mongodb+srv://…` | MongoDB; driver options pass through | `mongodb` | 650 ms (estimated server clock) | server | no | yes / no |
//! | `mysql://user:pass@host:port/db[?table=…&ssl-mode=…]` | MariaDB (tested on 10.11) and MySQL 8 (by design; no MySQL server is installable here to test); TLS required unless `ssl-mode=DISABLED` | `mysql` | 1 ms | server | no | yes / no |
//!
//! Every backend is safe across machines except `memory` (one process) and
//! `sqlite` (one machine), and durable except `memory` and Redis (as durable
//! as its persistence settings). [`AtomicStore::capabilities`] reports all
//! of this at run time.
//!
//! Every URL takes `?prefix=NAME` (default `atomic`): keys are stored as
//! `NAME:key`. The network backends take `?timeout=` (per operation) and
//! most take `?connect_timeout=`; each backend's module lists its other
//! parameters ([`redis`], [`postgres`], [`etcd`], [`zookeeper`],
//! [`dynamodb`], [`mongodb`], [`mysql`], [`sqlite`]). An unknown parameter is an
//! error that lists the accepted ones. A scheme whose feature is not
//! compiled in fails with [`ErrorKind::FeatureDisabled`], naming the
//! feature.
//!
//! # The contract
//! | operation | meaning |
//! |---|---|
//! | `incr(key) -> i64` | add 1 atomically, return the new value; a missing or expired key counts from 0; keeps the key's TTL; `NotAnInteger` / `Overflow` leave the value unchanged |
//! | `acquire_lock(key, ttl) -> Option<Lock>` | set-if-absent with expiry; the [`Lock`] has a 128-bit CSPRNG id and a fencing token that rises for the key forever, across expiry and deletion |
//! | `release_lock(key, &id) -> ReleaseOutcome` | atomic compare-and-delete: `Released`, `NotHeld` or `HeldByOther` (left alone) |
//! | `extend_lock(key, &id, ttl) -> ExtendOutcome` | new TTL from now if still held by `id` |
//! | `get` / `set` / `set_with_ttl` / `delete` | plain state; `set` clears a TTL; `delete` says whether a live key was removed |
//! | `compare_and_set(key, expected, new, ttl) -> bool` | replace only if the value equals `expected` (`None`: only if absent) |
//! | `assign_nonce(key, pending) -> u64` | the original's `atomicAssignNonce` rule as one atomic step |
//! | `eval(script, keys, args)` | backend scripting (Lua on Redis, one SQL statement on PostgreSQL); `Unsupported` elsewhere |
//! | `inspect(key)`, `keys(prefix, limit)` | for operators: value, TTL left, last fencing token; live keys by prefix |
//! | `notify(key)`, `wait_notified(key, timeout)` | a wake-up hint for waiters (the lock recipe uses it); never required for correctness |
//! | `purge(key)` | for tests and operators: remove a key with its fencing counter and tombstone, so its tokens may start again; only for keys no one will lock again |
//!
//! Keys are 1 to 1024 bytes without NUL, values at most 256 KiB without NUL,
//! TTLs from 1 ms to 365 days ([`rules`]); anything else is
//! [`ErrorKind::InvalidArgument`] and nothing is written. The full contract
//! is the documentation of [`AtomicStore`].
//!
//! # Errors
//! Every fallible call returns [`Error`], which has an [`ErrorKind`], the
//! backend, the [`Operation`], a source and whether it is temporary. Lock
//! contention is an ordinary result. [`ErrorKind::OutcomeUnknown`] means the
//! operation may or may not have been applied; the library never resends a
//! write after that (only reads are resent after a lost reply).
//!
//! # Recipes
//! - [`lock::DistributedLock`]: a lock guard over any store. One total
//!   deadline for waiting, a fair queue kept in the store, prompt wake-up,
//!   optional auto-renewal, and a loss signal ([`lock::LockGuard::lost`])
//!   that fires *before* the lock could have expired.
//! - [`lock::Semaphore`]: N permits on one key under the same rules: one
//!   fair queue and deadline, and each permit a lock of its own, with its
//!   id, fencing token, renewal and loss signal.
//! - `nonce::NonceManager` (feature `nonce`, on alloy): nonces per
//!   (chain id, address) in the TypeScript original's key layout. Leases
//!   that end confirmed, released (reused) or burned, over the plain
//!   contract; `send` through any alloy provider, with one table from the
//!   node's answer to the nonce's fate; `repair` of the nonces the chain
//!   waits on; alloy's `NonceManager` trait (a nonce filler shared across
//!   processes); `rewind`, `reset`, `state` with a gap verdict, and a store
//!   health probe.
//!
//! # Cargo features
//! | feature | what it adds |
//! |---|---|
//! | `memory`, `sqlite` (default) | the embedded backends |
//! | `redis`, `postgres`, `mysql`, `etcd`, `zookeeper`, `dynamodb`, `mongodb` | one network backend each (`etcd` needs `protoc` to build) |
//! | `nonce` (alias `alloy`) | [`nonce`]: the nonce manager, on alloy 2 (alloy needs rustc 1.94.1 or later) |
//! | `metrics` | metrics on the `metrics` facade ([`observe`]) |
//! | `conformance` | [`conformance`]: the contract as checks any implementation can run |
//!
//! Features whose names start with `_` are internal (shared code that the
//! backends switch on); do not name them yourself.
//!
//! # Observability
//! [`open`] wraps each store in [`observe::TracingLayer`]: one DEBUG span
//! per operation (target `atomic_store`) with OpenTelemetry's database
//! fields, its outcome and error kind, and never a value, lock id or
//! password. The recipes add `lock.wait`, `lock.hold` and `nonce.*` spans;
//! [`lock::DistributedLock::name`] names a lock for them. With the feature
//! `metrics`, the layer records durations, errors, lock waits and holds,
//! and nonces handed out ([`observe`] lists them). [`open_with`] opens a
//! store in a layer of your settings, or bare.
//!
//! # Conformance
//! With the `conformance` feature, [`conformance`] holds the contract as
//! executable checks that any implementation, ours or yours, can run.
//!
//! # Your own backend
//! Implement [`AtomicStore`]; read your URL with [`StoreUrl`] so that
//! `prefix` and the timeouts mean what they mean here; check arguments with
//! [`rules`] (`stored_key`, `check_write`, ...) so that bad input fails as
//! it does everywhere else; start from [`Capabilities::server`] for a shared
//! database; report errors with [`Error`]'s kinds (a lost reply to a write
//! is `OutcomeUnknown`); and run the [`conformance`] suite against it.
//!
//! # Runtime
//! The stores need a Tokio runtime: SQLite runs its calls on Tokio's blocking
//! threads, and network backends use Tokio's I/O.
#![forbid(unsafe_code)]
#![warn(missing_docs)]
mod backends;
mod backoff;
#[cfg(any(feature = "_wall-clock", feature = "_server-clock"))]
mod clock;
mod error;
pub mod lock;
pub mod observe;
mod open;
#[cfg(feature = "_network")]
mod retry;
pub mod rules;
mod store;
mod url;

#[cfg(feature = "conformance")]
pub mod conformance;
#[cfg(feature = "nonce")]
pub mod nonce;

pub use backends::*;
pub use error::{Error, ErrorKind, Operation, Result};
pub use open::{open, open_with};
pub use store::{
    AtomicStore, Capabilities, EvalValue, ExpiryClock, ExtendOutcome, KeyInfo, Lock, LockId,
    LockIdForm, ReleaseOutcome,
};
pub use store::{HandedTo, Handover, QueueEntry, QueueTurn};
pub use url::{parse_duration, redact, StoreUrl};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
