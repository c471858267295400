//! `sqlite://PATH`: the embedded default. One file, safe across the OS
//! processes of one machine.
//!
//! - WAL journal; every operation is one transaction; writes begin with
//!   `BEGIN IMMEDIATE`, so they take the write lock up front and never fail
//!   on a lock upgrade.
//! - In one process, writes go to one writer thread that owns the write
//!   connection and commits every write waiting for it in one transaction
//!   (group commit: one fsync serves them all). Each write runs in its own
//!   savepoint, so it keeps its own result and error, and its caller is
//!   answered once the transaction holding it has committed. Readers use a
//!   small pool on Tokio's blocking threads. Across processes, SQLite's
//!   busy timeout (`?busy_timeout=5s`) decides how long a writer waits.
//! - No SQLite call runs on an async worker.
//! - Expiry uses the machine's wall clock, shared by its processes.
//! - Expired rows are hidden by every query and purged in batches of at most
//!   [`PURGE_BATCH`] rows, piggybacked on one write in [`PURGE_EVERY`].
//! - Parameters: `prefix`, `busy_timeout` (duration), `synchronous`
//!   (`full`, the default, survives power loss; `normal` survives a crash of
//!   the process only, and is faster).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use rusqlite::{params, Connection, OptionalExtension, Transaction, TransactionBehavior};

use crate::rules;
use crate::clock::now_ms;
use crate::url::StoreUrl;
use crate::backends::checked::{self, checked_store, IfOwner, Swap, Write};
use crate::{
    Capabilities, Error, ErrorKind, ExpiryClock, HandedTo, Handover, KeyInfo, Lock, LockId,
    Operation, QueueEntry, QueueTurn, ReleaseOutcome, Result,
};

const BACKEND: &str = "sqlite";
/// The schema version this code writes and reads.
pub const SCHEMA_VERSION: i64 = 1;
/// Most expired rows one purge removes.
pub const PURGE_BATCH: i64 = 64;
/// One write in this many also purges expired rows.
pub const PURGE_EVERY: u64 = 64;
const MAX_READERS: usize = 4;

/// How the SQLite store is configured.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SqliteConfig {
    /// The database file; created if missing.
    pub path: PathBuf,
    /// Key prefix (default `atomic`).
    pub prefix: String,
    /// How long a write waits for another process's write lock.
    pub busy_timeout: Duration,
    /// `PRAGMA synchronous`: true for `FULL` (default), false for `NORMAL`.
    pub synchronous_full: bool,
}

impl SqliteConfig {
    /// Defaults for the file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        SqliteConfig {
            path: path.into(),
            prefix: rules::DEFAULT_PREFIX.to_owned(),
            busy_timeout: Duration::from_secs(5),
            synchronous_full: true,
        }
    }
}

/// The store behind `sqlite://`.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
    prefix: String,
}

#[derive(Debug)]
struct Inner {
    config: SqliteConfig,
    /// The writer thread's queue; the thread ends when this drops.
    jobs: mpsc::Sender<Box<dyn WriteJob>>,
    readers: Mutex<Vec<Connection>>,
    #[allow(dead_code)] // read by the tests
    stats: Arc<WriteStats>,
}

#[derive(Debug, Default)]
struct WriteStats {
    writes: AtomicU64,
    commits: AtomicU64,
}

fn classify(op: Operation, e: rusqlite::Error) -> Error {
    use rusqlite::ErrorCode;
    let kind = match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => ErrorKind::Timeout,
        Some(ErrorCode::CannotOpen | ErrorCode::PermissionDenied | ErrorCode::ReadOnly) => {
            ErrorKind::Unavailable
        }
        Some(ErrorCode::DiskFull | ErrorCode::SystemIoFailure) => ErrorKind::Unavailable,
        _ => ErrorKind::Backend,
    };
    let message = match kind {
        ErrorKind::Timeout => {
            // SQLite's lock is not fair: a process writing in a tight loop
            // can hold the others off for seconds.
            "another connection held the write lock past busy_timeout, so nothing was written; \
             allow a longer wait with a larger ?busy_timeout= (for example 30s)"
        }
        ErrorKind::Unavailable => "the database file could not be used",
        _ => "SQLite failed",
    };
    let temporary = kind == ErrorKind::Timeout;
    Error::new(kind, BACKEND, op, message)
        .with_source(e)
        .with_temporary(temporary)
}

thread_local! {
    // When the current call's wait for another process's lock ends.
    static BUSY_DEADLINE: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
}

/// Start the busy-wait budget of one call on this (blocking) thread.
fn start_busy_budget(timeout: Duration) {
    BUSY_DEADLINE.with(|d| d.set(Some(Instant::now() + timeout)));
}

/// SQLite's own busy handler sleeps up to 100 ms between tries, which leaves
/// the lock idle; this one polls from 20 µs up to 1 ms until the deadline.
fn busy_handler(attempt: i32) -> bool {
    let deadline = BUSY_DEADLINE.with(|d| d.get());
    if deadline.is_none_or(|d| Instant::now() >= d) {
        return false;
    }
    let pause =
        Duration::from_micros(20 << attempt.clamp(0, 6) as u32).min(Duration::from_millis(1));
    std::thread::sleep(pause);
    true
}

/// Run `step` again while SQLite answers "busy" without waiting, until
/// `deadline`. It does so, without calling the busy handler, to refuse a
/// deadlock: two connections switching a new file to WAL at once, each
/// holding what the other needs. Starting again releases what it held.
fn retry_busy<T>(deadline: Instant, mut step: impl FnMut() -> rusqlite::Result<T>) -> rusqlite::Result<T> {
    loop {
        match step() {
            Err(e)
                if e.sqlite_error_code() == Some(rusqlite::ErrorCode::DatabaseBusy)
                    && Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(1))
            }
            other => return other,
        }
    }
}

fn open_connection(config: &SqliteConfig) -> rusqlite::Result<Connection> {
    start_busy_budget(config.busy_timeout);
    let mut conn = Connection::open(&config.path)?;
    conn.busy_handler(Some(busy_handler))?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))?;
    conn.pragma_update(
        None,
        "synchronous",
        if config.synchronous_full {
            "FULL"
        } else {
            "NORMAL"
        },
    )?;
    Ok(conn)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS atomic_store_meta (
    name  TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS atomic_store_kv (
    key        TEXT PRIMARY KEY,
    value      TEXT NOT NULL,
    expires_at INTEGER
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS atomic_store_kv_expiry
    ON atomic_store_kv (expires_at) WHERE expires_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS atomic_store_fence (
    key   TEXT PRIMARY KEY,
    token INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS atomic_store_lock_queue (
    ticket     INTEGER PRIMARY KEY,
    lock_key   TEXT NOT NULL,
    waiter     TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS atomic_store_lock_queue_waiter
    ON atomic_store_lock_queue (lock_key, waiter);
CREATE INDEX IF NOT EXISTS atomic_store_lock_queue_order
    ON atomic_store_lock_queue (lock_key, ticket);
";

fn ensure_schema(conn: &mut Connection) -> rusqlite::Result<i64> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch(SCHEMA)?;
    tx.execute(
        "INSERT OR IGNORE INTO atomic_store_meta (name, value) VALUES ('schema_version', ?1)",
        params![SCHEMA_VERSION.to_string()],
    )?;
    let version: String = tx.query_row(
        "SELECT value FROM atomic_store_meta WHERE name = 'schema_version'",
        [],
        |r| r.get(0),
    )?;
    tx.commit()?;
    Ok(version.parse().unwrap_or(i64::MAX))
}

/// A live row: its value and expiry.
fn read_live(
    conn: &Connection,
    key: &str,
    now: i64,
) -> rusqlite::Result<Option<(String, Option<i64>)>> {
    conn.prepare_cached(
        "SELECT value, expires_at FROM atomic_store_kv
         WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)",
    )?
    .query_row(params![key, now], |r| Ok((r.get(0)?, r.get(1)?)))
    .optional()
}

fn upsert(
    conn: &Connection,
    key: &str,
    value: &str,
    expires_at: Option<i64>,
) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO atomic_store_kv (key, value, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
    )?
    .execute(params![key, value, expires_at])?;
    Ok(())
}

fn purge_expired(conn: &Connection, now: i64) -> rusqlite::Result<usize> {
    // Waiters that left no trace but a lapsed place (a crashed process).
    conn.prepare_cached(
        "DELETE FROM atomic_store_lock_queue WHERE ticket IN (
             SELECT ticket FROM atomic_store_lock_queue WHERE expires_at <= ?1 LIMIT ?2)",
    )?
    .execute(params![now, PURGE_BATCH])?;
    conn.prepare_cached(
        "DELETE FROM atomic_store_kv WHERE key IN (
             SELECT key FROM atomic_store_kv
             WHERE expires_at IS NOT NULL AND expires_at <= ?1 LIMIT ?2)",
    )?
    .execute(params![now, PURGE_BATCH])
}

/// The next fencing token of `key`.
fn next_token(conn: &Connection, key: &str) -> rusqlite::Result<u64> {
    let token: i64 = conn
        .prepare_cached(
            "INSERT INTO atomic_store_fence (key, token) VALUES (?1, 1)
             ON CONFLICT (key) DO UPDATE SET token = token + 1 RETURNING token",
        )?
        .query_row(params![key], |r| r.get(0))?;
    Ok(token as u64)
}

/// Removes `waiter`'s place in the queue of `key`.
fn leave_queue(conn: &Connection, key: &str, waiter: &str) -> rusqlite::Result<()> {
    conn.prepare_cached("DELETE FROM atomic_store_lock_queue WHERE lock_key = ?1 AND waiter = ?2")?
        .execute(params![key, waiter])?;
    Ok(())
}

/// The first waiter of `key` whose place is live (dead ones are dropped).
fn queue_head(conn: &Connection, key: &str, now: i64) -> rusqlite::Result<Option<String>> {
    conn.prepare_cached(
        "DELETE FROM atomic_store_lock_queue WHERE lock_key = ?1 AND expires_at <= ?2",
    )?
    .execute(params![key, now])?;
    conn.prepare_cached(
        "SELECT waiter FROM atomic_store_lock_queue WHERE lock_key = ?1 ORDER BY ticket LIMIT 1",
    )?
    .query_row(params![key], |r| r.get(0))
    .optional()
}

/// How many live waiters of `key` are queued before `ticket` (all of
/// them when `ticket` is `None`).
fn waiters_ahead(
    conn: &Connection,
    key: &str,
    ticket: Option<i64>,
    now: i64,
) -> rusqlite::Result<u64> {
    let ahead: i64 = conn
        .prepare_cached(
            "SELECT count(*) FROM atomic_store_lock_queue
             WHERE lock_key = ?1 AND ticket < ?2 AND expires_at > ?3",
        )?
        .query_row(params![key, ticket.unwrap_or(i64::MAX), now], |r| r.get(0))?;
    Ok(ahead as u64)
}

/// What a waiter's read-only look at its queue found.
enum Glance {
    /// Nothing for it to do but wait: this many are ahead.
    Waiting(u64),
    /// It may take the lock, holds it already, or must renew its place.
    Act,
}

fn expiry(now: i64, ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| now + rules::ttl_millis(t) as i64)
}

/// What a write transaction decided: an error of the contract (the
/// transaction rolls back) or a value.
type Decided<T> = std::result::Result<T, Error>;

impl SqliteStore {
    /// Open `sqlite://PATH[?busy_timeout=…&synchronous=full|normal]`.
    pub fn open_url(url: &str) -> Result<Self> {
        let url = StoreUrl::parse(BACKEND, url, Some(&["busy_timeout", "synchronous"]))?;
        let path = StoreUrl::decode(&url.location);
        if path.is_empty() || path == ":memory:" {
            return Err(url.error(
                "sqlite:// needs a file path, for example sqlite://app.db or sqlite:///var/lib/app/store.db (for an in-process store use memory://)",
            ));
        }
        let mut config = SqliteConfig::new(path);
        config.prefix = url.prefix()?;
        if let Some(t) = url.duration("busy_timeout")? {
            config.busy_timeout = t;
        }
        config.synchronous_full = match url.param("synchronous") {
            None | Some("full") => true,
            Some("normal") => false,
            Some(other) => {
                return Err(url.error(format!(
                    "URL parameter `synchronous` is `{other}`; use full or normal"
                )))
            }
        };
        SqliteStore::open(config)
    }

    /// Open (and create if needed) the database described by `config`.
    ///
    /// This does blocking file I/O and may wait up to `busy_timeout` for
    /// another process creating the schema; call it at start-up.
    pub fn open(config: SqliteConfig) -> Result<Self> {
        rules::check_prefix(BACKEND, &config.prefix)?;
        let open_err = |e| classify(Operation::Open, e);
        let deadline = Instant::now() + config.busy_timeout;
        let (conn, version) = retry_busy(deadline, || {
            let mut conn = open_connection(&config)?;
            let version = ensure_schema(&mut conn)?;
            Ok((conn, version))
        })
        .map_err(open_err)?;
        let place = config.path.display().to_string();
        let (found, expected) = (version.to_string(), SCHEMA_VERSION.to_string());
        rules::check_schema_version(BACKEND, Operation::Open, &place, &found, &expected)?;
        let (jobs, queue) = mpsc::channel();
        let stats = Arc::new(WriteStats::default());
        let (writer_config, writer_stats) = (config.clone(), Arc::clone(&stats));
        std::thread::Builder::new()
            .name("atomic-store-sqlite-writer".into())
            .spawn(move || write_batches(writer_config, Some(conn), queue, writer_stats))
            .map_err(|e| {
                Error::new(ErrorKind::Unavailable, BACKEND, Operation::Open, "could not start the SQLite writer thread")
                    .with_source(e)
            })?;
        Ok(SqliteStore {
            prefix: config.prefix.clone(),
            inner: Arc::new(Inner {
                config,
                jobs,
                readers: Mutex::new(Vec::new()),
                stats,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.config.path
    }

    /// The same database seen under another key prefix.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self> {
        rules::check_prefix(BACKEND, prefix)?;
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    /// Run `f` in a `BEGIN IMMEDIATE` transaction of the writer thread,
    /// with the other writes waiting then. `f` returning `Err` rolls back
    /// its own writes only. Answered once the transaction has committed.
    async fn transact<T, F>(&self, op: Operation, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>, i64) -> rusqlite::Result<Decided<T>> + Send + 'static,
    {
        let stopped = || Error::new(ErrorKind::Backend, BACKEND, op, "the SQLite writer thread stopped; open the store again");
        let (reply, answer) = tokio::sync::oneshot::channel();
        self.inner
            .jobs
            .send(Box::new(Job { op, f, reply }))
            .map_err(|_| stopped())?;
        // A dropped reply means the thread died with the transaction,
        // which then rolled back: nothing was written.
        answer.await.unwrap_or_else(|_| Err(stopped()))
    }

    /// Run the read-only `f` on a pooled reader connection.
    async fn read<T, F>(&self, op: Operation, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, i64) -> rusqlite::Result<T> + Send + 'static,
    {
        let pooled = self
            .inner
            .readers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop();
        let inner = Arc::clone(&self.inner);
        let joined = tokio::task::spawn_blocking(move || {
            start_busy_budget(inner.config.busy_timeout);
            let conn = match pooled {
                Some(conn) => conn,
                None => open_connection(&inner.config)?,
            };
            let result = f(&conn, now_ms());
            let mut readers = inner.readers.lock().unwrap_or_else(|e| e.into_inner());
            if readers.len() < MAX_READERS {
                readers.push(conn);
            }
            result
        })
        .await;
        joined
            .map_err(|e| {
                Error::new(ErrorKind::Backend, BACKEND, op, "the SQLite worker failed")
                    .with_source(e)
            })?
            .map_err(|e| classify(op, e))
    }

    async fn update_number(
        &self,
        op: Operation,
        key: String,
        next: fn(Option<&str>, u64) -> Result<i64>,
        arg: u64,
    ) -> Result<i64> {
        self.transact(op, move |tx, now| {
            let current = read_live(tx, &key, now)?;
            let value = match next(current.as_ref().map(|(v, _)| v.as_str()), arg) {
                Ok(v) => v,
                Err(e) => return Ok(Err(e)),
            };
            upsert(
                tx,
                &key,
                &value.to_string(),
                current.and_then(|(_, exp)| exp),
            )?;
            Ok(Ok(value))
        })
        .await
    }
}

/// Most writes one transaction of the writer thread carries.
const MAX_BATCH: usize = 256;

/// A write queued for the writer thread.
trait WriteJob: Send {
    /// Run inside the batch's transaction.
    fn run(self: Box<Self>, tx: &Transaction<'_>, now: i64) -> Box<dyn Ran>;
    /// The batch failed before this job ran: nothing of it was written.
    fn fail(self: Box<Self>, e: &rusqlite::Error);
}

/// A job that ran, waiting for its transaction's end to be answered.
trait Ran: Send {
    /// It wrote, and its writes are to be kept.
    fn wrote(&self) -> bool;
    /// Answer the caller, now that the transaction has ended.
    fn answer(self: Box<Self>, ended: &Ended);
}

/// How a batch's transaction ended.
enum Ended {
    /// Committed, or nothing in it wrote.
    Committed,
    /// Rolled back: nothing of it was written.
    RolledBack(rusqlite::Error),
    /// The commit failed part-way (an I/O error): its writes may or may not
    /// be in the database.
    Unknown(rusqlite::Error),
}

type Reply<T> = tokio::sync::oneshot::Sender<Result<T>>;

struct Job<T, F> {
    op: Operation,
    f: F,
    reply: Reply<T>,
}

struct Done<T> {
    op: Operation,
    result: rusqlite::Result<Decided<T>>,
    reply: Reply<T>,
}

impl<T, F> WriteJob for Job<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Transaction<'_>, i64) -> rusqlite::Result<Decided<T>> + Send,
{
    fn run(self: Box<Self>, tx: &Transaction<'_>, now: i64) -> Box<dyn Ran> {
        let Job { op, f, reply } = *self;
        // A panicking write fails alone (and is rolled back); the thread
        // and the store go on.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(tx, now)))
            .unwrap_or_else(|_| {
                Err(rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_INTERNAL),
                    Some("the write panicked".into()),
                ))
            });
        Box::new(Done { op, result, reply })
    }

    fn fail(self: Box<Self>, e: &rusqlite::Error) {
        let _ = self.reply.send(Err(classify(self.op, copy_error(e))));
    }
}

impl<T: Send> Ran for Done<T> {
    fn wrote(&self) -> bool {
        matches!(self.result, Ok(Ok(_)))
    }

    fn answer(self: Box<Self>, ended: &Ended) {
        let op = self.op;
        let answer = match (self.result, ended) {
            (Err(e), _) => Err(classify(op, e)),
            (Ok(Ok(value)), Ended::Committed) => Ok(value),
            (Ok(Err(decided)), Ended::Committed) => Err(decided),
            (Ok(Ok(_)), Ended::Unknown(e)) => Err(Error::new(
                ErrorKind::OutcomeUnknown,
                BACKEND,
                op,
                "the commit failed part-way, so this write may or may not be in the database: read the key before you retry",
            )
            .with_source(copy_error(e))),
            // A decision may rest on writes of the batch that were undone,
            // so it is not given; nothing of this call was written.
            (_, Ended::RolledBack(e) | Ended::Unknown(e)) => Err(classify(op, copy_error(e))),
        };
        // A caller that stopped waiting is not told; its write stands.
        let _ = self.reply.send(answer);
    }
}

/// One batch's error for each of its callers (`rusqlite::Error` is not
/// `Clone`).
fn copy_error(e: &rusqlite::Error) -> rusqlite::Error {
    match e {
        rusqlite::Error::SqliteFailure(code, message) => {
            rusqlite::Error::SqliteFailure(*code, message.clone())
        }
        other => rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ERROR),
            Some(other.to_string()),
        ),
    }
}

/// The writer thread: owns the write connection, and commits every write
/// waiting in the queue in one transaction, so one fsync serves them all.
fn write_batches(
    config: SqliteConfig,
    mut conn: Option<Connection>,
    jobs: mpsc::Receiver<Box<dyn WriteJob>>,
    stats: Arc<WriteStats>,
) {
    let mut spin = false;
    while let Some(first) = next_job(&jobs, spin) {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match jobs.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        // Spin only after a lone write: its caller is likely to send the
        // next one at once. Under load the queue is never empty anyway.
        spin = batch.len() == 1;
        start_busy_budget(config.busy_timeout);
        let mut open = match conn.take() {
            Some(open) => open,
            None => match open_connection(&config) {
                Ok(open) => open,
                Err(e) => {
                    batch.into_iter().for_each(|job| job.fail(&e));
                    continue;
                }
            },
        };
        let n = batch.len() as u64;
        let first_write = stats.writes.fetch_add(n, Ordering::Relaxed);
        // How many multiples of PURGE_EVERY the batch's writes cover.
        let purges = (first_write + n).div_ceil(PURGE_EVERY) - first_write.div_ceil(PURGE_EVERY);
        let sound = run_batch(&mut open, batch, purges, &stats);
        // A connection left inside a transaction, or whose commit failed
        // part-way, is not used again.
        if sound && open.is_autocommit() {
            conn = Some(open);
        }
    }
}

/// The next write: looked for in a short spin first, since a caller that
/// was just answered often sends its next write within microseconds, and
/// waking a parked thread costs more than that.
fn next_job(jobs: &mpsc::Receiver<Box<dyn WriteJob>>, spin: bool) -> Option<Box<dyn WriteJob>> {
    let spin_until = Instant::now() + if spin { WRITER_SPIN } else { Duration::ZERO };
    loop {
        match jobs.try_recv() {
            Ok(job) => return Some(job),
            Err(mpsc::TryRecvError::Disconnected) => return None,
            Err(mpsc::TryRecvError::Empty) if Instant::now() < spin_until => {
                std::hint::spin_loop()
            }
            Err(mpsc::TryRecvError::Empty) => return jobs.recv().ok(),
        }
    }
}

/// How long the writer thread looks for the next write before it sleeps.
const WRITER_SPIN: Duration = Duration::from_micros(50);

/// One `BEGIN IMMEDIATE` transaction for `batch`. With more than one job,
/// each runs inside a savepoint, so a job that fails or decides against
/// writing is rolled back alone. Returns false if the connection is not to
/// be trusted again.
fn run_batch(
    conn: &mut Connection,
    batch: Vec<Box<dyn WriteJob>>,
    purges: u64,
    stats: &WriteStats,
) -> bool {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => {
            batch.into_iter().for_each(|job| job.fail(&e));
            return true;
        }
    };
    let now = now_ms();
    let alone = batch.len() == 1;
    let mut ran: Vec<Box<dyn Ran>> = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    let broke = loop {
        let Some(job) = jobs.next() else { break None };
        if !alone {
            if let Err(e) = tx.execute_batch("SAVEPOINT job") {
                job.fail(&e);
                break Some(e);
            }
        }
        let done = job.run(&tx, now);
        if !alone {
            let end = if done.wrote() {
                "RELEASE job"
            } else {
                "ROLLBACK TO job; RELEASE job"
            };
            if let Err(e) = tx.execute_batch(end) {
                ran.push(done);
                break Some(e);
            }
        }
        ran.push(done);
    };
    let ended = match broke {
        // The transaction rolls back as it drops.
        Some(e) => Ended::RolledBack(e),
        None if !ran.iter().any(|done| done.wrote()) => Ended::Committed,
        None => {
            purge_within(&tx, now, purges);
            match tx.commit() {
                Ok(()) => {
                    stats.commits.fetch_add(1, Ordering::Relaxed);
                    Ended::Committed
                }
                // The lock was not had: SQLite left the transaction open,
                // and it rolls back as the connection is checked.
                Err(e) if matches!(
                    e.sqlite_error_code(),
                    Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
                ) => Ended::RolledBack(e),
                Err(e) => Ended::Unknown(e),
            }
        }
    };
    let sound = !matches!(ended, Ended::Unknown(_));
    if let Ended::RolledBack(e) | Ended::Unknown(e) = &ended {
        jobs.for_each(|job| job.fail(e));
    }
    ran.into_iter().for_each(|done| done.answer(&ended));
    sound
}

/// Purge expired rows, `purges` bounded batches at most, in a savepoint of
/// its own: a purge that fails is undone and does not fail the writes.
fn purge_within(tx: &Transaction<'_>, now: i64, purges: u64) {
    if purges == 0 || tx.execute_batch("SAVEPOINT purge").is_err() {
        return;
    }
    let purged = (|| {
        for _ in 0..purges {
            if purge_expired(tx, now)? < PURGE_BATCH as usize {
                break;
            }
        }
        Ok::<_, rusqlite::Error>(())
    })();
    let end = match purged {
        Ok(()) => "RELEASE purge",
        Err(_) => "ROLLBACK TO purge; RELEASE purge",
    };
    let _ = tx.execute_batch(end);
}

#[async_trait]
impl checked::Backend for SqliteStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_ttl: true,
            expiry_clock: ExpiryClock::Local,
            ttl_resolution: Duration::from_millis(1),
            cross_process: true,
            durable: true,
            list_keys: true,
            ..Capabilities::new(BACKEND)
        }
    }

    async fn incr(&self, key: String) -> Result<i64> {
        let next = |v: Option<&str>, _| rules::next_counter(BACKEND, v);
        self.update_number(Operation::Incr, key, next, 0).await
    }

    async fn acquire_lock(&self, key: String, ttl: Duration) -> Result<Option<Lock>> {
        let id = LockId::generate();
        let value = id.as_str().to_owned();
        let token = self
            .transact(Operation::AcquireLock, move |tx, now| {
                if read_live(tx, &key, now)?.is_some() {
                    return Ok(Ok(None));
                }
                upsert(tx, &key, &value, expiry(now, Some(ttl)))?;
                Ok(Ok(Some(next_token(tx, &key)?)))
            })
            .await?;
        Ok(token.map(|t| Lock::new(id, t)))
    }

    async fn if_owner(&self, key: String, id: &LockId, then: IfOwner) -> Result<Option<bool>> {
        let (op, ttl) = (then.op(), then.ttl());
        let id = id.as_str().to_owned();
        self.transact(op, move |tx, now| {
            let held = match read_live(tx, &key, now)? {
                None => return Ok(Ok(None)),
                Some((value, _)) => value == id,
            };
            if held {
                match ttl {
                    None => tx
                        .prepare_cached("DELETE FROM atomic_store_kv WHERE key = ?1")?
                        .execute(params![key])?,
                    Some(ttl) => tx
                        .prepare_cached(
                            "UPDATE atomic_store_kv SET expires_at = ?2 WHERE key = ?1",
                        )?
                        .execute(params![key, expiry(now, Some(ttl))])?,
                };
            }
            Ok(Ok(Some(held)))
        })
        .await
    }

    async fn get(&self, key: String) -> Result<Option<String>> {
        self.read(Operation::Get, move |conn, now| {
            Ok(read_live(conn, &key, now)?.map(|(v, _)| v))
        })
        .await
    }

    async fn write(&self, op: Operation, key: String, write: Write<'_>) -> Result<()> {
        let (value, ttl) = (write.value.to_owned(), write.ttl);
        self.transact(op, move |tx, now| {
            upsert(tx, &key, &value, expiry(now, ttl))?;
            Ok(Ok(()))
        })
        .await
    }

    async fn delete(&self, key: String) -> Result<bool> {
        self.transact(Operation::Delete, move |tx, now| {
            let removed: Option<Option<i64>> = tx
                .prepare_cached("DELETE FROM atomic_store_kv WHERE key = ?1 RETURNING expires_at")?
                .query_row(params![key], |r| r.get(0))
                .optional()?;
            Ok(Ok(
                matches!(removed, Some(exp) if exp.is_none_or(|at| at > now)),
            ))
        })
        .await
    }

    async fn lock_queue_enter(&self, key: String, entry: QueueEntry<'_>) -> Result<QueueTurn> {
        let op = Operation::AcquireLock;
        let waiter = entry.waiter.as_str().to_owned();
        let ttl = entry.ttl;
        let presence_ms = entry.presence.map(|p| rules::ttl_millis(p) as i64);
        // A look first, on a reader: most calls of a waiter only learn that
        // it still waits, and need no write (nor its fsync).
        if let Some(presence_ms) = presence_ms {
            let (k, w) = (key.clone(), waiter.clone());
            let glance = self
                .read(op, move |conn, now| {
                    if read_live(conn, &k, now)?.is_none() {
                        return Ok(Glance::Act);
                    }
                    let mine: Option<(i64, i64)> = conn
                        .prepare_cached(
                            "SELECT ticket, expires_at FROM atomic_store_lock_queue
                             WHERE lock_key = ?1 AND waiter = ?2",
                        )?
                        .query_row(params![k, w], |r| Ok((r.get(0)?, r.get(1)?)))
                        .optional()?;
                    // Renewed once a third of its life has passed.
                    match mine {
                        Some((ticket, until)) if until - now > presence_ms * 2 / 3 => {
                            Ok(Glance::Waiting(waiters_ahead(conn, &k, Some(ticket), now)?))
                        }
                        _ => Ok(Glance::Act),
                    }
                })
                .await?;
            if let Glance::Waiting(ahead) = glance {
                return Ok(QueueTurn::Waiting { ahead });
            }
        }
        let turn = self
            .transact(op, move |tx, now| {
                let held = read_live(tx, &key, now)?;
                if held.as_ref().is_some_and(|(v, _)| *v == waiter) {
                    // Handed to this waiter by a release.
                    tx.prepare_cached("UPDATE atomic_store_kv SET expires_at = ?2 WHERE key = ?1")?
                        .execute(params![key, expiry(now, Some(ttl))])?;
                    leave_queue(tx, &key, &waiter)?;
                    let token: Option<i64> = tx
                        .prepare_cached("SELECT token FROM atomic_store_fence WHERE key = ?1")?
                        .query_row(params![key], |r| r.get(0))
                        .optional()?;
                    return Ok(Ok((true, token.unwrap_or(0) as u64)));
                }
                let head = queue_head(tx, &key, now)?;
                if held.is_none() && head.as_ref().is_none_or(|h| *h == waiter) {
                    leave_queue(tx, &key, &waiter)?;
                    upsert(tx, &key, &waiter, expiry(now, Some(ttl)))?;
                    return Ok(Ok((true, next_token(tx, &key)?)));
                }
                let Some(presence_ms) = presence_ms else {
                    return Ok(Ok((false, waiters_ahead(tx, &key, None, now)?)));
                };
                let ticket: i64 = tx
                    .prepare_cached(
                        "INSERT INTO atomic_store_lock_queue (lock_key, waiter, expires_at)
                         VALUES (?1, ?2, ?3)
                         ON CONFLICT (lock_key, waiter) DO UPDATE SET expires_at = excluded.expires_at
                         RETURNING ticket",
                    )?
                    .query_row(params![key, waiter, now + presence_ms], |r| r.get(0))?;
                Ok(Ok((false, waiters_ahead(tx, &key, Some(ticket), now)?)))
            })
            .await?;
        Ok(match turn {
            (true, token) => QueueTurn::Acquired(Lock::new(entry.waiter.clone(), token)),
            (false, ahead) => QueueTurn::Waiting { ahead },
        })
    }

    async fn lock_queue_release(
        &self,
        key: String,
        id: &LockId,
        handover_ttl: Duration,
    ) -> Result<Handover> {
        let id = id.as_str().to_owned();
        let (outcome, next) = self
            .transact(Operation::ReleaseLock, move |tx, now| {
                leave_queue(tx, &key, &id)?;
                let outcome = match read_live(tx, &key, now)? {
                    Some((value, _)) if value == id => ReleaseOutcome::Released,
                    Some(_) => return Ok(Ok((ReleaseOutcome::HeldByOther, None))),
                    None => ReleaseOutcome::NotHeld,
                };
                let Some(next) = queue_head(tx, &key, now)? else {
                    tx.prepare_cached("DELETE FROM atomic_store_kv WHERE key = ?1")?
                        .execute(params![key])?;
                    return Ok(Ok((outcome, None)));
                };
                leave_queue(tx, &key, &next)?;
                upsert(tx, &key, &next, expiry(now, Some(handover_ttl)))?;
                let token = next_token(tx, &key)?;
                Ok(Ok((outcome, Some((next, token)))))
            })
            .await?;
        Ok(Handover {
            outcome,
            next: next.map(|(waiter, fencing_token)| HandedTo {
                waiter: LockId::from(waiter),
                fencing_token,
                valid_for: handover_ttl,
            }),
        })
    }

    async fn purge(&self, key: String) -> Result<()> {
        self.transact(Operation::Purge, move |tx, _| {
            tx.execute("DELETE FROM atomic_store_kv WHERE key = ?1", params![key])?;
            tx.execute(
                "DELETE FROM atomic_store_lock_queue WHERE lock_key = ?1",
                params![key],
            )?;
            tx.execute("DELETE FROM atomic_store_fence WHERE key = ?1", params![key])?;
            Ok(Ok(()))
        })
        .await
    }

    async fn compare_and_set(&self, key: String, swap: Swap<'_>) -> Result<bool> {
        let expected = swap.expected.map(str::to_owned);
        let (new, ttl) = (swap.new.value.to_owned(), swap.new.ttl);
        self.transact(Operation::CompareAndSet, move |tx, now| {
            let current = read_live(tx, &key, now)?;
            if current.as_ref().map(|(v, _)| v) != expected.as_ref() {
                return Ok(Ok(false));
            }
            upsert(tx, &key, &new, expiry(now, ttl))?;
            Ok(Ok(true))
        })
        .await
    }

    async fn assign_nonce(&self, key: String, pending: u64) -> Result<u64> {
        let next = |v: Option<&str>, pending| rules::next_nonce(BACKEND, v, pending).map(|n| n as i64);
        let nonce = self
            .update_number(Operation::AssignNonce, key, next, pending)
            .await?;
        Ok(nonce as u64)
    }

    async fn inspect(&self, key: String) -> Result<KeyInfo> {
        self.read(Operation::Inspect, move |conn, now| {
            let row = read_live(conn, &key, now)?;
            let token: Option<i64> = conn
                .prepare_cached("SELECT token FROM atomic_store_fence WHERE key = ?1")?
                .query_row(params![key], |r| r.get(0))
                .optional()?;
            let (value, deadline) = row.unzip();
            let token = token.map(|t| t as u64);
            Ok(KeyInfo::at_deadline(value, deadline.flatten(), now, token))
        })
        .await
    }

    async fn keys(&self, start: String, limit: usize) -> Result<Vec<String>> {
        // Every UTF-8 string that starts with `start` sorts below this bound.
        let upper = format!("{start}\u{10FFFF}");
        self.read(Operation::Keys, move |conn, now| {
            let mut stmt = conn.prepare_cached(
                "SELECT key FROM atomic_store_kv
                 WHERE key >= ?1 AND key < ?2 AND (expires_at IS NULL OR expires_at > ?3)
                 ORDER BY key LIMIT ?4",
            )?;
            let rows = stmt.query_map(params![start, upper, now, limit as i64], |r| {
                r.get::<_, String>(0)
            })?;
            rows.collect()
        })
        .await
    }
}

checked_store!(SqliteStore, BACKEND);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AtomicStore;

    /// Many connections opening a new file at once: the first ones race to
    /// switch it to WAL, and SQLite answers one of them "busy" at once,
    /// without its busy handler (a deadlock it refuses to wait on). Seen in
    /// CI as a CLI process failing to open with a 60 s busy_timeout.
    #[test]
    fn connections_opening_a_new_file_together_all_succeed() {
        for round in 0..40 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("race.db");
            let barrier = Arc::new(std::sync::Barrier::new(8));
            let openers: Vec<_> = (0..8)
                .map(|_| {
                    let (path, barrier) = (path.clone(), Arc::clone(&barrier));
                    std::thread::spawn(move || {
                        barrier.wait();
                        SqliteStore::open(SqliteConfig::new(&path)).map(|_| ())
                    })
                })
                .collect();
            for opener in openers {
                let opened = opener.join().unwrap();
                assert!(opened.is_ok(), "round {round}: {:?}", opened.err());
            }
        }
    }

    #[tokio::test]
    async fn expired_rows_are_purged_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
        let raw = Connection::open(&path).unwrap();
        for i in 0..(PURGE_BATCH * 2) {
            raw.execute(
                "INSERT INTO atomic_store_kv VALUES (?1, 'v', 1)",
                params![format!("expired{i}")],
            )
            .unwrap();
        }
        let count = || {
            raw.query_row("SELECT count(*) FROM atomic_store_kv", [], |r| {
                r.get::<_, i64>(0)
            })
            .unwrap()
        };
        assert_eq!(count(), PURGE_BATCH * 2);
        // PURGE_EVERY consecutive writes include exactly one purge.
        for _ in 0..PURGE_EVERY {
            store.set("other", "v").await.unwrap();
        }
        assert_eq!(
            count(),
            PURGE_BATCH + 1,
            "one bounded batch removed, `other` added"
        );
    }

    /// While another connection holds the write lock, 64 writers queue
    /// up; they then go out in a few transactions, each with its own answer:
    /// every value once, and the `incr`s on a text value fail alone.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_share_a_transaction_and_keep_their_own_results() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("g.db");
        let store = SqliteStore::open(SqliteConfig::new(&path)).unwrap();
        store.set("text", "abc").await.unwrap();
        let commits_before = store.inner.stats.commits.load(Ordering::Relaxed);
        let mut blocker = Connection::open(&path).unwrap();
        let held = blocker
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .unwrap();
        // A write that writes, then decides against it: undone alone.
        let undone = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .transact(Operation::Set, |tx, _| {
                        upsert(tx, "atomic:undone", "1", None)?;
                        Ok(Err::<(), _>(Error::invalid(BACKEND, Operation::Set, "no")))
                    })
                    .await
            })
        };
        let mut tasks = Vec::new();
        for i in 0..72 {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                let key = if i % 9 == 8 { "text" } else { "n" };
                store.incr(key).await
            }));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        held.commit().unwrap();
        let (mut values, mut refused) = (Vec::new(), 0);
        for task in tasks {
            match task.await.unwrap() {
                Ok(v) => values.push(v),
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::NotAnInteger, "{e}");
                    refused += 1;
                }
            }
        }
        values.sort();
        assert_eq!(values, (1..=64).collect::<Vec<_>>());
        let refusal = undone.await.unwrap().unwrap_err();
        assert_eq!(refusal.kind(), ErrorKind::InvalidArgument);
        assert_eq!(store.get("undone").await.unwrap(), None, "its write was undone");
        assert_eq!(refused, 8);
        assert_eq!(store.get("text").await.unwrap().as_deref(), Some("abc"));
        let commits = store.inner.stats.commits.load(Ordering::Relaxed) - commits_before;
        assert!(commits <= 8, "{commits} transactions for 64 queued writes");
    }

    #[tokio::test]
    async fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.db");
        drop(SqliteStore::open(SqliteConfig::new(&path)).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.execute(
            "UPDATE atomic_store_meta SET value = '99' WHERE name = 'schema_version'",
            [],
        )
        .unwrap();
        let err = SqliteStore::open(SqliteConfig::new(&path)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Backend);
        assert!(err.to_string().contains("schema version 99"), "{err}");
    }
}
