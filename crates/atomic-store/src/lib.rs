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
//! // A counter shared by every process that opens the same URL.
//! let nonce = store.incr("nonce:0xabc:1480").await?;
//! assert_eq!(nonce, 1);
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
//! | URL | backend | feature (default) |
//! |---|---|---|
//! | `memory://[NAME]` | in-process, sharded | `memory` (yes) |
//! | `sqlite://PATH` | embedded file, safe across processes | `sqlite` (yes) |
//! | `redis://`, `rediss://`, `redis+cluster://` | Redis, compatible with the TypeScript original | `redis` |
//! | `postgres://`, `postgresql://` | PostgreSQL (also behind PgBouncer) | `postgres` |
//! | `etcd://host:port[,host:port…]` | etcd v3 | `etcd` |
//! | `zk://host:port[,host:port…][/chroot]` | ZooKeeper 3.5+ | `zookeeper` |
//! | `dynamodb://TABLE?region=…` | Amazon DynamoDB | `dynamodb` |
//! | `mongodb://…/DB`, `mongodb+srv://…/DB` | MongoDB | `mongodb` |
//!
//! [`open`] picks the backend from the URL; every URL takes `?prefix=NAME`.
//! [`Capabilities`] says what each backend supports and how precise its TTLs
//! are.
//!
//! # Errors
//! Every fallible call returns [`Error`], which has an [`ErrorKind`], the
//! backend, the [`Operation`], a source and whether it is temporary. Lock
//! contention is an ordinary result. [`ErrorKind::OutcomeUnknown`] means the
//! operation may or may not have been applied; the library never resends a
//! write after that (only reads are resent after a lost reply).
//!
//! # Conformance
//! With the `conformance` feature, [`conformance`] holds the contract as
//! executable checks that any implementation, ours or yours, can run.
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
pub use open::open;
pub use store::{
    AtomicStore, Capabilities, EvalValue, ExpiryClock, ExtendOutcome, KeyInfo, Lock, LockId,
    ReleaseOutcome,
};
pub use url::{parse_duration, redact, StoreUrl};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
