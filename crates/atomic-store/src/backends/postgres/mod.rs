//! `postgres://`: PostgreSQL, on tokio-postgres with a deadpool pool.
//!
//! # URL
//! `postgres://user:pass@host:port/db?…` (or `postgresql://`) with
//! tokio-postgres's parameters (`connect_timeout`, `application_name`,
//! `options`, …) and these of ours:
//! - `prefix` (default `atomic`), `schema` (default `public`), `table`
//!   (default `atomic_store`; the fencing, metadata and lock queue tables
//!   take its name with `_fence`, `_meta` and `_queue`, the queue's
//!   functions `_q_enter`, `_q_release` and `_q_purge`, and the wake-up
//!   channel `_wake`);
//! - `pool_size` (default 16), `timeout` per operation (default 5s);
//! - `sslmode` = `disable`, `prefer` (default), `require`, `verify-ca`,
//!   `verify-full`, and `sslrootcert` = a PEM file of the CA to trust (else
//!   the system's roots). TLS is rustls, and the server certificate is always
//!   verified, so `require` means what libpq calls `verify-full`;
//! - `listen` (default `true`): one session per store outside the pool
//!   `LISTEN`s for wake-ups (`notify` / `wait_notified`, and the lock
//!   recipe's hand-overs). Behind PgBouncer in transaction pooling `LISTEN`
//!   cannot work: set `listen=false` there (without it, a probe finds out
//!   and `wait_notified` fails with `Unavailable`; waiters then poll).
//!
//! # Design
//! - Every operation is one statement (see `sql.rs`): one round trip, atomic
//!   on its own, timed by one read of the server's `clock_timestamp()`. The
//!   lock queue's steps call PL/pgSQL functions that take their locks in a
//!   fixed order (`docs/design.md`, "PostgreSQL's queue").
//! - Statements are sent unnamed (`query_typed`: parse, bind and execute in
//!   one round trip) and no session state is kept, so the store works behind
//!   PgBouncer in transaction pooling mode.
//! - The schema is created on first use, in one implicit transaction holding
//!   a transaction-scoped advisory lock, so instances starting together
//!   create it once; it records its version in the `_meta` table. A setup
//!   that fails leaves nothing half-done on the connection.
//! - A connection whose statement timed out is never reused: the statement
//!   is cancelled on the server and the connection closed, so the next call
//!   does not queue behind it.
//! - A background task purges expired rows in batches of 1000 every 5 s.

mod errors;
mod eval;
mod listen;
mod open;
mod sql;

use errors::*;
use eval::*;

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Row};

use crate::url::StoreUrl;
use crate::retry::{with_retries, Failure};
use crate::rules::{self, prefixed};
use crate::store::ownership_from_code;
use crate::backends::checked::{self, checked_store, IfOwner, Swap, Write};
use crate::backends::purger;
use crate::{
    Capabilities, Error, ErrorKind, EvalValue, ExpiryClock, HandedTo, Handover, KeyInfo, Lock,
    LockId, Operation, QueueEntry, QueueTurn, ReleaseOutcome, Result,
};

const BACKEND: &str = "postgres";
/// The schema version this code creates and reads.
pub const SCHEMA_VERSION: &str = "1";
const OURS: &[&str] = &[
    "schema",
    "table",
    "pool_size",
    "timeout",
    "sslmode",
    "sslrootcert",
    "listen",
];

/// The store behind `postgres://`.
pub struct PostgresStore {
    inner: Arc<Inner>,
    prefix: String,
}

struct Statements {
    incr: String,
    assign_nonce: String,
    acquire_lock: String,
    release_lock: String,
    extend_lock: String,
    get: String,
    set: String,
    delete: String,
    set_if_absent: String,
    set_if_equal: String,
    purge_expired: String,
    purge_queue: String,
    purge: String,
    inspect: String,
    keys: String,
    queue_enter: String,
    queue_release: String,
    notify: String,
}

struct Inner {
    pool: Pool,
    /// The pool's settings and transport, for connections outside it.
    config: tokio_postgres::Config,
    transport: Transport,
    /// `None` with `listen=false`.
    listener: Option<Arc<listen::Listener>>,
    /// The table's wake-up channel.
    channel: String,
    timeout: Duration,
    qualified: String,
    schema_sql: String,
    schema_name: String,
    meta: String,
    sql: Statements,
    ready: tokio::sync::OnceCell<()>,
    redacted_url: String,
}

store_debug!(PostgresStore { url: inner.redacted_url, table: inner.qualified, prefix: prefix, timeout: inner.timeout });

impl PostgresStore {
    /// The SQL statement this store sends for `op` (`$1` is the prefixed
    /// key), for benchmarks that run the same statement with `pgbench`.
    /// Not part of the stable API: the CLI's baseline uses it.
    #[doc(hidden)]
    pub fn statement(&self, op: Operation) -> Option<&str> {
        let sql = &self.inner.sql;
        Some(match op {
            Operation::Incr => &sql.incr,
            Operation::AssignNonce => &sql.assign_nonce,
            Operation::AcquireLock => &sql.acquire_lock,
            Operation::ReleaseLock => &sql.release_lock,
            Operation::Get => &sql.get,
            Operation::Set | Operation::SetWithTtl => &sql.set,
            _ => return None,
        })
    }

    /// The prefixed form of `key`, as stored. Not part of the stable API:
    /// the CLI's baseline uses it.
    #[doc(hidden)]
    pub fn stored_key(&self, key: &str) -> String {
        prefixed(&self.prefix, key)
    }

    /// Run one statement under the retry policy of `op`.
    async fn query(
        &self,
        op: Operation,
        statement: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Vec<Row>> {
        self.inner.ensure_schema(op).await?;
        let inner = &self.inner;
        with_retries(op, || async {
            let client = inner.pool.get().await.map_err(|e| classify(e.into()))?;
            let run = client.query_typed(statement, params);
            match tokio::time::timeout(inner.timeout, run).await {
                Ok(Ok(rows)) => Ok(rows),
                Ok(Err(e)) => Err(classify(e.into())),
                Err(_) => {
                    inner.abandon(client);
                    Err(Failure::Lost(None))
                }
            }
        })
        .await
        .map_err(|f| into_error(f, op, self.inner.timeout))
    }

    async fn one_int(
        &self,
        op: Operation,
        statement: &str,
        params: &[(&(dyn ToSql + Sync), Type)],
    ) -> Result<Option<i64>> {
        let rows = self.query(op, statement, params).await?;
        Ok(match rows.first() {
            Some(row) => Some(row.try_get(0).map_err(|e| unexpected(op, e))?),
            None => None,
        })
    }
}

impl Inner {
    /// Create the schema once per store (and once per database: the advisory
    /// lock serialises instances starting together), then start the purger.
    async fn ensure_schema(self: &Arc<Self>, op: Operation) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                let client = self
                    .pool
                    .get()
                    .await
                    .map_err(|e| into_error(classify(e.into()), op, self.timeout))?;
                let lock_name = format!("atomic-store schema {}", self.qualified);
                // One simple query without BEGIN/COMMIT is one implicit
                // transaction: a statement that fails rolls it all back and
                // leaves the session idle. (An explicit BEGIN would leave it
                // inside an aborted transaction: 25P02 on every later call.)
                let script = format!(
                    "SELECT pg_advisory_xact_lock(hashtextextended('{}', 0));
                     CREATE SCHEMA IF NOT EXISTS {};
                     {}
                     INSERT INTO {} (name, value) VALUES ('schema_version', '{SCHEMA_VERSION}') ON CONFLICT (name) DO NOTHING;",
                    lock_name.replace('\'', "''"),
                    self.schema_name,
                    self.schema_sql,
                    self.meta
                );
                let created = tokio::time::timeout(self.timeout * 2, client.batch_execute(&script)).await;
                match created {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        // Not reused, whatever state the failure left.
                        self.discard(client);
                        return Err(into_error(classify(e.into()), op, self.timeout));
                    }
                    Err(_) => {
                        self.abandon(client);
                        return Err(into_error(Failure::Lost(None), Operation::Open, self.timeout));
                    }
                }
                let version: String = client
                    .query_typed(
                        &format!("SELECT value FROM {} WHERE name = 'schema_version'", self.meta),
                        &[],
                    )
                    .await
                    .map_err(|e| into_error(classify(e.into()), op, self.timeout))?
                    .first()
                    .and_then(|r| r.try_get(0).ok())
                    .unwrap_or_default();
                rules::check_schema_version(BACKEND, op, &self.qualified, &version, SCHEMA_VERSION)?;
                spawn_purger(Arc::downgrade(self));
                if let Some(listener) = &self.listener {
                    listener.start(Arc::downgrade(self));
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

/// How the pool reaches the server, for connections outside it (cancel
/// requests, the notification listener).
enum Transport {
    Plain,
    Tls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Inner {
    /// A session of its own, outside the pool; `on_message` gets the
    /// server's notices and notifications.
    async fn connect_unpooled(
        &self,
        on_message: impl Fn(tokio_postgres::AsyncMessage) + Send + 'static,
    ) -> std::result::Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error> {
        Ok(match &self.transport {
            Transport::Plain => {
                let (client, connection) = self.config.connect(tokio_postgres::NoTls).await?;
                (client, drive(connection, on_message))
            }
            Transport::Tls(tls) => {
                let (client, connection) = self.config.connect(tls.clone()).await?;
                (client, drive(connection, on_message))
            }
        })
    }

    /// `pg_notify` through the pool (which works behind PgBouncer in any
    /// mode), outside the retry policy: for the listener's probe.
    async fn notify_through_pool(&self, channel: &str, payload: &str) -> std::result::Result<(), String> {
        let client = self.pool.get().await.map_err(|e| e.to_string())?;
        let params = [(&channel as &(dyn ToSql + Sync), Type::TEXT), (&payload as _, Type::TEXT)];
        client.query_typed(&self.sql.notify, &params).await.map(drop).map_err(|e| e.to_string())
    }
}

/// Run a session's connection until it closes, passing on its messages.
fn drive<S, T>(
    mut connection: tokio_postgres::Connection<S, T>,
    on_message: impl Fn(tokio_postgres::AsyncMessage) + Send + 'static,
) -> tokio::task::JoinHandle<()>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            on_message(message);
        }
    })
}

impl Inner {
    /// Take `client` out of the pool for good: it closes when dropped.
    fn discard(&self, client: deadpool_postgres::Object) {
        drop(deadpool_postgres::Object::take(client));
    }

    /// A client whose statement timed out: cancel the statement on the
    /// server (it may still be running, or waiting for a lock) and close
    /// the connection. Returned to the pool, it would make the next caller
    /// wait behind that statement.
    fn abandon(&self, client: deadpool_postgres::Object) {
        let token = client.cancel_token();
        self.discard(client);
        let timeout = self.timeout;
        let cancelled = match &self.transport {
            Transport::Plain => {
                tokio::spawn(async move { token.cancel_query(tokio_postgres::NoTls).await })
            }
            Transport::Tls(tls) => {
                let tls = tls.clone();
                tokio::spawn(async move { token.cancel_query(tls).await })
            }
        };
        tokio::spawn(async move {
            match tokio::time::timeout(timeout, cancelled).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => tracing::debug!("cancelling a timed-out statement failed: {e}"),
                _ => tracing::debug!("cancelling a timed-out statement did not finish"),
            }
        });
    }
}

fn spawn_purger(inner: Weak<Inner>) {
    purger::spawn_purger(BACKEND, inner, 2, |inner, step| async move {
        let client = inner.pool.get().await.map_err(|e| e.to_string())?;
        let batch = purger::PURGE_BATCH as i64;
        let params = [(&batch as &(dyn ToSql + Sync), Type::INT8)];
        let statement = match step {
            0 => &inner.sql.purge_expired,
            _ => &inner.sql.purge_queue,
        };
        client.execute_typed(statement, &params).await.map_err(|e| e.to_string())
    });
}

#[async_trait]
impl checked::Backend for PostgresStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            eval: true,
            eval_language: Some("sql"),
            notifications: self.inner.listener.is_some(),
            ..Capabilities::server(BACKEND, ExpiryClock::Server, Duration::from_millis(1))
        }
    }

    async fn incr(&self, k: String) -> Result<i64> {
        let op = Operation::Incr;
        let v = self
            .one_int(op, &self.inner.sql.incr, &[(&k, Type::TEXT)])
            .await?;
        v.ok_or_else(|| Error::new(ErrorKind::Backend, BACKEND, op, "incr returned no row"))
    }

    async fn acquire_lock(&self, k: String, ttl: Duration) -> Result<Option<Lock>> {
        let op = Operation::AcquireLock;
        let ttl = ttl_ms(Some(ttl));
        let id = LockId::generate();
        let id_str = id.as_str().to_owned();
        let token = self
            .one_int(
                op,
                &self.inner.sql.acquire_lock,
                &[(&k, Type::TEXT), (&id_str, Type::TEXT), (&ttl, Type::INT8)],
            )
            .await?;
        Ok(token.map(|t| Lock::new(id, t as u64)))
    }

    async fn if_owner(&self, k: String, id: &LockId, then: IfOwner) -> Result<Option<bool>> {
        let (op, ttl) = (then.op(), then.ttl());
        let id = id.as_str().to_owned();
        let sql = &self.inner.sql;
        let code = match ttl_ms(ttl) {
            None => {
                let params = [(&k as _, Type::TEXT), (&id as _, Type::TEXT)];
                self.one_int(op, &sql.release_lock, &params).await?
            }
            Some(ttl) => {
                let params = [
                    (&k as _, Type::TEXT),
                    (&id as _, Type::TEXT),
                    (&ttl as _, Type::INT8),
                ];
                self.one_int(op, &sql.extend_lock, &params).await?
            }
        };
        Ok(ownership_from_code(code))
    }

    async fn get(&self, k: String) -> Result<Option<String>> {
        let op = Operation::Get;
        let rows = self
            .query(op, &self.inner.sql.get, &[(&k, Type::TEXT)])
            .await?;
        match rows.first() {
            Some(row) => Ok(Some(row.try_get(0).map_err(|e| unexpected(op, e))?)),
            None => Ok(None),
        }
    }

    async fn write(&self, op: Operation, k: String, write: Write<'_>) -> Result<()> {
        let value = write.value.to_owned();
        let ttl = ttl_ms(write.ttl);
        self.query(
            op,
            &self.inner.sql.set,
            &[(&k, Type::TEXT), (&value, Type::TEXT), (&ttl, Type::INT8)],
        )
        .await
        .map(|_| ())
    }

    async fn delete(&self, k: String) -> Result<bool> {
        let op = Operation::Delete;
        let rows = self
            .query(op, &self.inner.sql.delete, &[(&k, Type::TEXT)])
            .await?;
        match rows.first() {
            Some(row) => row.try_get(0).map_err(|e| unexpected(op, e)),
            None => Ok(false),
        }
    }

    async fn compare_and_set(&self, k: String, swap: Swap<'_>) -> Result<bool> {
        let op = Operation::CompareAndSet;
        let ttl = ttl_ms(swap.new.ttl);
        let new = swap.new.value.to_owned();
        let rows = match swap.expected {
            None => {
                self.query(
                    op,
                    &self.inner.sql.set_if_absent,
                    &[(&k, Type::TEXT), (&new, Type::TEXT), (&ttl, Type::INT8)],
                )
                .await?
            }
            Some(expected) => {
                let expected = expected.to_owned();
                self.query(
                    op,
                    &self.inner.sql.set_if_equal,
                    &[
                        (&k, Type::TEXT),
                        (&new, Type::TEXT),
                        (&ttl, Type::INT8),
                        (&expected, Type::TEXT),
                    ],
                )
                .await?
            }
        };
        Ok(!rows.is_empty())
    }

    async fn assign_nonce(&self, k: String, pending: u64) -> Result<u64> {
        let op = Operation::AssignNonce;
        let pending = rules::check_pending(BACKEND, pending)?;
        let v = self
            .one_int(
                op,
                &self.inner.sql.assign_nonce,
                &[(&k, Type::TEXT), (&pending, Type::INT8)],
            )
            .await?;
        v.map(|n| n as u64).ok_or_else(|| {
            Error::new(
                ErrorKind::Backend,
                BACKEND,
                op,
                "assign_nonce returned no row",
            )
        })
    }

    async fn inspect(&self, k: String) -> Result<KeyInfo> {
        let op = Operation::Inspect;
        let rows = self
            .query(op, &self.inner.sql.inspect, &[(&k, Type::TEXT)])
            .await?;
        let row = rows.first().ok_or_else(|| {
            Error::new(ErrorKind::Backend, BACKEND, op, "inspect returned no row")
        })?;
        let value: Option<String> = row.try_get(0).map_err(|e| unexpected(op, e))?;
        let ms: Option<i64> = row.try_get(1).map_err(|e| unexpected(op, e))?;
        let token: Option<i64> = row.try_get(2).map_err(|e| unexpected(op, e))?;
        Ok(KeyInfo::new(
            value,
            ms.map(|m| Duration::from_millis(m.max(0) as u64)),
            token.map(|t| t as u64),
        ))
    }

    async fn keys(&self, full: String, limit: usize) -> Result<Vec<String>> {
        let op = Operation::Keys;
        let limit = limit.min(i64::MAX as usize) as i64;
        let rows = self
            .query(
                op,
                &self.inner.sql.keys,
                &[(&full, Type::TEXT), (&limit, Type::INT8)],
            )
            .await?;
        rows.iter()
            .map(|r| {
                r.try_get::<_, String>(0)
                    .map_err(|e| unexpected(op, e))
            })
            .collect()
    }

    async fn lock_queue_enter(&self, k: String, entry: QueueEntry<'_>) -> Result<QueueTurn> {
        let op = Operation::AcquireLock;
        let waiter = entry.waiter.as_str().to_owned();
        let ttl = ttl_ms(Some(entry.ttl));
        let presence = ttl_ms(entry.presence);
        // Not named once it is known not to hear: no release notifies it.
        let listener = self.inner.listener.as_ref().filter(|l| l.may_hear()).map(|l| l.id());
        let rows = self
            .query(
                op,
                &self.inner.sql.queue_enter,
                &[
                    (&k, Type::TEXT),
                    (&waiter, Type::TEXT),
                    (&ttl, Type::INT8),
                    (&presence, Type::INT8),
                    (&listener, Type::TEXT),
                ],
            )
            .await?;
        let row = rows.first().ok_or_else(|| no_row(op))?;
        let held: i64 = row.try_get(0).map_err(|e| unexpected(op, e))?;
        let n: i64 = row.try_get(1).map_err(|e| unexpected(op, e))?;
        Ok(if held == 1 {
            QueueTurn::Acquired(Lock::new(entry.waiter.clone(), n as u64))
        } else {
            QueueTurn::Waiting { ahead: n as u64 }
        })
    }

    async fn lock_queue_release(
        &self,
        k: String,
        id: &LockId,
        handover_ttl: Duration,
    ) -> Result<Handover> {
        let op = Operation::ReleaseLock;
        let id = id.as_str().to_owned();
        let ttl = ttl_ms(Some(handover_ttl));
        // The waiter handed the lock is woken through LISTEN/NOTIFY, if it
        // listens (it may, even when this instance does not).
        let channel = &self.inner.channel;
        let listener = self.inner.listener.as_ref().filter(|l| l.may_hear()).map(|l| l.id());
        let rows = self
            .query(
                op,
                &self.inner.sql.queue_release,
                &[
                    (&k, Type::TEXT),
                    (&id, Type::TEXT),
                    (&ttl, Type::INT8),
                    (channel, Type::TEXT),
                    (&listener, Type::TEXT),
                ],
            )
            .await?;
        let row = rows.first().ok_or_else(|| no_row(op))?;
        let code: i64 = row.try_get(0).map_err(|e| unexpected(op, e))?;
        let next: Option<String> = row.try_get(1).map_err(|e| unexpected(op, e))?;
        let token: Option<i64> = row.try_get(2).map_err(|e| unexpected(op, e))?;
        Ok(Handover {
            outcome: ReleaseOutcome::from_ownership(ownership_from_code(Some(code))),
            next: next.map(|waiter| HandedTo {
                waiter: LockId::from(waiter),
                fencing_token: token.unwrap_or(0) as u64,
                valid_for: handover_ttl,
            }),
        })
    }

    async fn notify(&self, k: String) -> Result<()> {
        let params = [(&self.inner.channel as &(dyn ToSql + Sync), Type::TEXT), (&k as _, Type::TEXT)];
        self.query(Operation::Notify, &self.inner.sql.notify, &params)
            .await
            .map(drop)
    }

    async fn wait_notified(&self, k: String, timeout: Duration) -> Result<bool> {
        let op = Operation::WaitNotified;
        self.inner.ensure_schema(op).await?;
        let Some(listener) = &self.inner.listener else {
            return Err(self.unsupported(op));
        };
        // Started again if its runtime ended; a fresh one has its probe's time.
        listener.start(Arc::downgrade(&self.inner));
        if !listener.verdict().await {
            let why = "LISTEN does not deliver notifications on this server right now (behind PgBouncer in \
                       transaction pooling, it never does: add listen=false to the URL)";
            return Err(Error::new(ErrorKind::Unavailable, BACKEND, op, why));
        }
        Ok(listener.wait(k, timeout).await)
    }

    async fn purge(&self, k: String) -> Result<()> {
        let op = Operation::Purge;
        self.query(op, &self.inner.sql.purge, &[(&k, Type::TEXT)])
            .await
            .map(|_| ())
    }

    async fn eval(&self, script: &str, keys: Vec<String>, args: &[&str]) -> Result<EvalValue> {
        let op = Operation::Eval;
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        self.inner.ensure_schema(op).await?;
        let inner = &self.inner;
        let rows = with_retries(op, || async {
            let mut client = inner.pool.get().await.map_err(|e| classify(e.into()))?;
            match tokio::time::timeout(inner.timeout, run_eval(&mut client, script, &keys, &args))
                .await
            {
                Ok(result) => result,
                Err(_) => {
                    inner.abandon(client);
                    Err(Failure::Lost(None))
                }
            }
        })
        .await
        .map_err(|f| into_error(f, op, inner.timeout))?;
        Ok(EvalValue::Array(
            rows.iter()
                .map(|row| EvalValue::Array((0..row.len()).map(|i| column_value(row, i)).collect()))
                .collect(),
        ))
    }
}

checked_store!(PostgresStore, BACKEND);

/// A statement that always returns a row returned none.
fn no_row(op: Operation) -> Error {
    Error::new(ErrorKind::Backend, BACKEND, op, "the statement returned no row")
}

/// A checked TTL in whole milliseconds, as the statements take it.
fn ttl_ms(ttl: Option<Duration>) -> Option<i64> {
    ttl.map(|t| rules::ttl_millis(t) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn class(f: &Failure<PgFailure>) -> &'static str {
        match f {
            Failure::NotSent(_) => "not sent",
            Failure::Lost(_) => "lost",
            Failure::Reply(_) => "reply",
        }
    }

    /// The real driver's error for `reply` (raw protocol bytes), sent by a
    /// one-shot server after the startup message; then it closes.
    async fn driver_error(reply: Vec<u8>) -> tokio_postgres::Error {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut len = [0u8; 4];
            socket.read_exact(&mut len).await.unwrap();
            let mut startup = vec![0u8; u32::from_be_bytes(len) as usize - 4];
            socket.read_exact(&mut startup).await.unwrap();
            socket.write_all(&reply).await.unwrap();
        });
        let config = format!("host=127.0.0.1 port={port} user=u dbname=d sslmode=disable");
        match tokio_postgres::connect(&config, tokio_postgres::NoTls).await {
            Ok(_) => panic!("the one-shot server accepted a session"),
            Err(e) => e,
        }
    }

    /// An ErrorResponse message carrying `code`.
    fn error_response(code: &str) -> Vec<u8> {
        let mut body = Vec::new();
        for (field, value) in [
            (b'S', "ERROR"),
            (b'V', "ERROR"),
            (b'C', code),
            (b'M', "from the test's server"),
        ] {
            body.push(field);
            body.extend_from_slice(value.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut message = vec![b'E'];
        message.extend_from_slice(&(body.len() as u32 + 4).to_be_bytes());
        message.extend(body);
        message
    }

    #[tokio::test]
    async fn sqlstates_from_the_server() {
        let rows = [
            // Rolled back, or never started: nothing applied.
            ("40001", "not sent"), // serialization_failure
            ("40P01", "not sent"), // deadlock_detected
            ("55P03", "not sent"), // lock_not_available (lock_timeout)
            ("57014", "not sent"), // query_canceled (statement_timeout, a cancel)
            ("57P01", "not sent"), // admin_shutdown
            ("57P02", "not sent"), // crash_shutdown
            ("57P03", "not sent"), // cannot_connect_now (starting up)
            ("53300", "not sent"), // too_many_connections
            // Ran and failed: the answer is final.
            ("22P02", "reply"), // invalid_text_representation (not an integer)
            ("22003", "reply"), // numeric_value_out_of_range (overflow)
            ("23505", "reply"), // unique_violation
            ("42P01", "reply"), // undefined_table
            ("42703", "reply"), // undefined_column
            ("25P02", "reply"), // in_failed_sql_transaction
            ("XX000", "reply"), // internal_error
        ];
        for (code, want) in rows {
            let e = driver_error(error_response(code)).await;
            assert_eq!(e.code().map(|c| c.code()), Some(code), "{e}");
            assert_eq!(class(&classify(e.into())), want, "{code}");
        }
    }

    #[tokio::test]
    async fn a_connection_that_closes_is_a_lost_reply() {
        let e = driver_error(Vec::new()).await;
        assert!(e.code().is_none(), "{e}");
        assert_eq!(class(&classify(e.into())), "lost");
    }

    #[tokio::test]
    async fn pool_failures_are_not_sent() {
        use deadpool_postgres::{PoolError, TimeoutType};
        // Real values from a real pool: nobody listens on port 1, and a
        // closed pool refuses.
        let store = PostgresStore::open(
            "postgres://u@127.0.0.1:1/d?sslmode=disable&connect_timeout=1&pool_size=1",
        )
        .unwrap();
        let refused = store.inner.pool.get().await.expect_err("nothing listens");
        assert!(matches!(refused, PoolError::Backend(_)), "{refused}");
        store.inner.pool.close();
        let closed = store.inner.pool.get().await.expect_err("closed");
        assert!(matches!(closed, PoolError::Closed), "{closed}");
        for e in [
            refused,
            closed,
            PoolError::Timeout(TimeoutType::Wait),
            PoolError::Timeout(TimeoutType::Create),
            PoolError::Timeout(TimeoutType::Recycle),
        ] {
            let shown = e.to_string();
            assert_eq!(class(&classify(e.into())), "not sent", "{shown}");
        }
    }
}
