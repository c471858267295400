//! `mysql://`: MySQL and MariaDB, on mysql_async.
//!
//! # URL
//! `mysql://user:pass@host:port/db?…` with these parameters, and no others
//! (nothing passes through to the driver, whose defaults we depend on):
//! - `prefix` (default `atomic`), `table` (default `atomic_store`; the
//!   metadata table takes its name with `_meta`);
//! - `pool_size` (default 16), `timeout` per operation (default 5s),
//!   `connect_timeout` (default 5s);
//! - `ssl-mode` = `REQUIRED` (the default), `VERIFY_CA`, `VERIFY_IDENTITY`
//!   or `DISABLED`, and `ssl-ca` = a PEM file of the CA to trust (else the
//!   Mozilla roots built into the driver). TLS is rustls; every mode but `DISABLED` verifies
//!   the certificate and the host name, as our PostgreSQL `require` does.
//!
//! # Design
//! - One row per key; every operation is one autocommit statement (see
//!   `sql.rs`), atomic under InnoDB's row lock, timed by the server's
//!   `NOW(3)` in a UTC session.
//! - The fencing counter lives on the key's row. A row that ever held a
//!   lock is tombstoned on delete and expiry, never removed, so tokens keep
//!   rising; `purge` removes it.
//! - `GET_LOCK` is not used: it belongs to a session, which a pool hands
//!   from task to task, and it has no TTL and no token.
//! - A background task purges expired rows in batches of 1000 every 5 s.

mod errors;
mod sql;

use errors::*;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use mysql_async::prelude::Queryable;
use mysql_async::{Conn, Pool, Row, Value};

use crate::backends::checked::{self, checked_store, IfOwner, Swap, Write};
use crate::backends::purger;
use crate::retry::{with_retries, Failure};
use crate::rules::{self, prefixed};
use crate::url::StoreUrl;
use crate::{Capabilities, Error, ErrorKind, ExpiryClock, KeyInfo, Lock, LockId, Operation, Result};

const BACKEND: &str = "mysql";
/// The schema version this code creates and reads.
pub const SCHEMA_VERSION: &str = "1";
const OURS: &[&str] = &[
    "table",
    "pool_size",
    "timeout",
    "connect_timeout",
    "ssl-mode",
    "ssl-ca",
];
const IDLE_CONNECTION_TTL: Duration = Duration::from_secs(60);
/// After a lost reply, connections are pinged before use for this long:
/// a server restart then costs failed pings ("not sent") rather than
/// writes of unknown outcome.
const PING_AFTER_LOSS: Duration = Duration::from_secs(10);

/// The store behind `mysql://`.
pub struct MysqlStore {
    inner: Arc<Inner>,
    prefix: String,
}

struct Statements {
    incr: String,
    assign_nonce: String,
    acquire_lock: String,
    release_lock: String,
    extend_lock: String,
    is_live: String,
    get: String,
    set: String,
    delete: String,
    set_if_absent: String,
    set_if_equal: String,
    inspect: String,
    keys: String,
    purge: String,
    purge_expired: [String; 2],
}

struct Inner {
    pool: Pool,
    timeout: Duration,
    connect_timeout: Duration,
    table: String,
    schema: [String; 2],
    meta: String,
    sql: Statements,
    ready: tokio::sync::OnceCell<()>,
    redacted_url: String,
    started: Instant,
    /// Milliseconds since `started` until which checkouts ping first.
    ping_until_ms: AtomicU64,
}

store_debug!(MysqlStore { url: inner.redacted_url, table: inner.table, prefix: prefix, timeout: inner.timeout });

/// What a statement gave back.
enum Answer {
    /// A write: `LAST_INSERT_ID(x)`'s value and the rows it matched.
    Written { out: Option<u64>, matched: u64 },
    /// A read.
    Rows(Vec<Row>),
}

fn key_value(k: String) -> Value {
    Value::Bytes(k.into_bytes())
}

fn text(v: &str) -> Value {
    Value::Bytes(v.as_bytes().to_vec())
}

/// A checked TTL in microseconds, as `INTERVAL ? MICROSECOND` takes it;
/// NULL for no TTL.
fn ttl_us(ttl: Option<Duration>) -> Value {
    match ttl {
        Some(t) => Value::Int((rules::ttl_millis(t) * 1000) as i64),
        None => Value::NULL,
    }
}

impl MysqlStore {
    /// Open from a URL (see the module docs). Does not connect: the first
    /// operation does, and creates the tables if needed.
    pub fn open(url: &str) -> Result<Self> {
        let parsed = StoreUrl::parse(BACKEND, url, Some(OURS))?;
        let redacted_url = parsed.redacted().to_owned();
        let base = url.split_once('?').map_or(url, |(base, _)| base);
        let opts = mysql_async::Opts::from_url(base).map_err(|e| {
            parsed.error(format!("`{redacted_url}` is not a valid MySQL URL: {e}"))
        })?;
        if opts.db_name().is_none_or(str::is_empty) {
            return Err(parsed.error("the URL names no database: mysql://user:pass@host:3306/DATABASE"));
        }
        let prefix = parsed.prefix()?;
        let table_raw = parsed.param("table").unwrap_or("atomic_store");
        let quoted = |name: &str| -> Result<String> {
            Ok(format!("`{}`", parsed.sql_identifier("table", name)?))
        };
        let table = quoted(table_raw)?;
        let meta = quoted(&format!("{table_raw}_meta"))?;
        let index = quoted(&format!("{table_raw}_expires_at"))?;
        let pool_size = parsed.pool_size(16)?;
        let timeout = parsed.timeout(Duration::from_secs(5))?;
        let connect_timeout = parsed.connect_timeout(Duration::from_secs(5))?;
        let ssl = ssl_opts(&parsed)?;
        // A second under our timeout (whole seconds, at least 1): a row lock
        // the server gives up on is rolled back, a definite "not applied".
        let lock_wait = timeout.as_secs().saturating_sub(1).max(1);
        let constraints = mysql_async::PoolConstraints::new(0, pool_size)
            .ok_or_else(|| parsed.error("pool_size must be a number from 1 to 1024"))?;
        let pool_opts = mysql_async::PoolOpts::new()
            .with_constraints(constraints)
            // A reset on every return would clear the prepared statements.
            .with_reset_connection(false)
            // Keep idle connections for a minute: with the driver's default
            // of 0, every connection above the minimum (0) closes as soon
            // as it is returned, and each operation connects anew.
            .with_inactive_connection_ttl(IDLE_CONNECTION_TTL);
        let builder = mysql_async::OptsBuilder::from_opts(opts)
            .pool_opts(pool_opts)
            .client_found_rows(true)
            // Never swap the URL's host for the server's local socket: a
            // proxy or tunnel on 127.0.0.1 must stay on the path.
            .prefer_socket(false)
            .ssl_opts(ssl)
            .setup(vec![
                // Autocommit whatever the server's default; UTC, so no
                // DATETIME is ambiguous; a fixed sql_mode, so the server's
                // cannot reparse our SQL (and a CAST warns, never fails).
                format!(
                    "SET SESSION autocommit = 1, time_zone = '+00:00', sql_mode = 'NO_ENGINE_SUBSTITUTION', innodb_lock_wait_timeout = {lock_wait}"
                ),
                "SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED".to_owned(),
            ]);
        let r = |s: &str| sql::render(s, &table);
        let statements = Statements {
            incr: r(sql::INCR),
            assign_nonce: r(sql::ASSIGN_NONCE),
            acquire_lock: r(sql::ACQUIRE_LOCK),
            release_lock: r(sql::RELEASE_LOCK),
            extend_lock: r(sql::EXTEND_LOCK),
            is_live: r(sql::IS_LIVE),
            get: r(sql::GET),
            set: r(sql::SET),
            delete: r(sql::DELETE),
            set_if_absent: r(sql::SET_IF_ABSENT),
            set_if_equal: r(sql::SET_IF_EQUAL),
            inspect: r(sql::INSPECT),
            keys: r(sql::KEYS),
            purge: r(sql::PURGE),
            purge_expired: sql::PURGE_EXPIRED.map(r),
        };
        Ok(MysqlStore {
            inner: Arc::new(Inner {
                pool: Pool::new(builder),
                timeout,
                connect_timeout,
                schema: sql::schema(&table, &meta, &index),
                meta,
                table,
                sql: statements,
                ready: tokio::sync::OnceCell::new(),
                redacted_url,
                started: Instant::now(),
                ping_until_ms: AtomicU64::new(0),
            }),
            prefix,
        })
    }

    /// For benchmarks: `incr`'s statement sent once on the bare driver,
    /// on a connection of the store's pool, with no timeout, retry or
    /// error mapping; true when it succeeded. Call it after the store
    /// has created its tables. Not part of the stable API: the CLI's
    /// baseline uses it.
    #[doc(hidden)]
    pub async fn bare_incr(&self, key: &str) -> bool {
        let Ok(mut conn) = self.inner.pool.get_conn().await else {
            return false;
        };
        let params = vec![key_value(self.stored_key(key)), Value::Int(1)];
        conn.exec_drop(&self.inner.sql.incr, params).await.is_ok()
    }

    /// The prefixed form of `key`, as stored. Not part of the stable API.
    #[doc(hidden)]
    pub fn stored_key(&self, key: &str) -> String {
        prefixed(&self.prefix, key)
    }

    /// Run one statement under the retry policy of `op`.
    async fn send(&self, op: Operation, statement: &str, params: Vec<Value>, read: bool) -> Result<Answer> {
        self.inner.ensure_schema(op).await?;
        let inner = &self.inner;
        // A read is resent after a lost reply, also inside a write
        // operation (the owner check after a release matched nothing).
        let policy = if read { Operation::Get } else { op };
        with_retries(policy, || {
            let params = params.clone();
            async move {
                let mut conn = inner.checkout().await?;
                let run = async {
                    if read {
                        conn.exec::<Row, _, _>(statement, params).await.map(Answer::Rows)
                    } else {
                        conn.exec_drop(statement, params).await?;
                        Ok(Answer::Written {
                            out: conn.last_insert_id(),
                            matched: conn.affected_rows(),
                        })
                    }
                };
                let answer = tokio::time::timeout(inner.timeout, run).await;
                match answer {
                    Ok(Ok(answer)) => Ok(answer),
                    Ok(Err(e)) => {
                        let failure = classify(e, false);
                        if matches!(failure, Failure::Lost(_)) {
                            inner.suspect_connections();
                        }
                        Err(failure)
                    }
                    Err(_) => {
                        inner.suspect_connections();
                        // Never back in the pool: its statement may still run.
                        tokio::spawn(async move { drop(conn.disconnect().await) });
                        Err(Failure::Lost(None))
                    }
                }
            }
        })
        .await
        .map_err(|f| into_error(f, policy, inner.timeout).in_operation(op))
    }

    /// A write's `LAST_INSERT_ID(x)`, as the i64 it stands for.
    async fn write_out(&self, op: Operation, statement: &str, params: Vec<Value>) -> Result<i64> {
        match self.send(op, statement, params, false).await? {
            Answer::Written { out, .. } => Ok(out.unwrap_or(0) as i64),
            Answer::Rows(_) => Err(unexpected(op, "rows from a write")),
        }
    }

    /// The rows a write matched.
    async fn write_matched(&self, op: Operation, statement: &str, params: Vec<Value>) -> Result<u64> {
        match self.send(op, statement, params, false).await? {
            Answer::Written { matched, .. } => Ok(matched),
            Answer::Rows(_) => Err(unexpected(op, "rows from a write")),
        }
    }

    async fn rows(&self, op: Operation, statement: &str, params: Vec<Value>) -> Result<Vec<Row>> {
        match self.send(op, statement, params, true).await? {
            Answer::Rows(rows) => Ok(rows),
            Answer::Written { .. } => Err(unexpected(op, "no rows from a read")),
        }
    }

    /// Whether a live value holds `k`, read after a compare-and-write found
    /// no lock of the caller's.
    async fn held_by_other(&self, op: Operation, k: String) -> Result<Option<bool>> {
        let sql = &self.inner.sql.is_live;
        let live = !self.rows(op, sql, vec![key_value(k)]).await?.is_empty();
        Ok(live.then_some(false))
    }
}

/// A column of a row, or `Backend` when it has another type.
fn column<T: mysql_async::prelude::FromValue>(row: &Row, i: usize, op: Operation) -> Result<T> {
    match row.get_opt::<T, usize>(i) {
        Some(Ok(v)) => Ok(v),
        _ => Err(unexpected(op, "a column of another type")),
    }
}

fn text_column(row: &Row, i: usize, op: Operation) -> Result<Option<String>> {
    column::<Option<Vec<u8>>>(row, i, op)?
        .map(|bytes| String::from_utf8(bytes).map_err(|_| unexpected(op, "a value that is not UTF-8")))
        .transpose()
}

fn ssl_opts(url: &StoreUrl) -> Result<Option<mysql_async::SslOpts>> {
    let mode = url.param("ssl-mode").unwrap_or("REQUIRED").to_ascii_uppercase();
    match mode.as_str() {
        "DISABLED" => return Ok(None),
        "REQUIRED" | "VERIFY_CA" | "VERIFY_IDENTITY" => {}
        other => {
            return Err(url.error(format!(
                "ssl-mode `{other}`: use REQUIRED, VERIFY_CA, VERIFY_IDENTITY or DISABLED"
            )))
        }
    }
    // mysql_async builds its TLS config on the process's default provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut ssl = mysql_async::SslOpts::default();
    // Without ssl-ca: the Mozilla roots built into the driver (webpki-roots).
    if let Some(path) = url.param("ssl-ca") {
        let path = std::path::PathBuf::from(path);
        if !path.is_file() {
            return Err(url.error(format!("ssl-ca {} is not a readable file", path.display())));
        }
        ssl = ssl
            .with_root_certs(vec![path.into()])
            .with_disable_built_in_roots(true);
    }
    Ok(Some(ssl))
}

impl Inner {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn suspect_connections(&self) {
        let until = self.now_ms() + PING_AFTER_LOSS.as_millis() as u64;
        self.ping_until_ms.fetch_max(until, Ordering::Relaxed);
    }

    /// A pooled connection, within the connect timeout; pinged first while
    /// connections are suspect. Every failure here is "not sent".
    async fn checkout(&self) -> std::result::Result<Conn, Failure<MyFailure>> {
        let take = async {
            let mut conn = self.pool.get_conn().await?;
            if self.now_ms() < self.ping_until_ms.load(Ordering::Relaxed) {
                conn.ping().await?;
            }
            Ok::<_, mysql_async::Error>(conn)
        };
        match tokio::time::timeout(self.connect_timeout, take).await {
            Ok(Ok(conn)) => Ok(conn),
            Ok(Err(e)) => Err(classify(e, true)),
            Err(_) => Err(Failure::NotSent(MyFailure(mysql_async::Error::Other(
                "no connection within connect_timeout".into(),
            )))),
        }
    }

    /// Create the tables once per store (instances starting together are
    /// safe: `CREATE TABLE IF NOT EXISTS` is atomic), check the schema's
    /// version, then start the purger.
    async fn ensure_schema(self: &Arc<Self>, op: Operation) -> Result<()> {
        self.ready
            .get_or_try_init(|| async {
                // Setting up changes no data of the caller's: its failures
                // are the opening's, never an unknown outcome of `op`.
                let fail = |f| into_error(f, Operation::Open, self.timeout);
                let mut conn = self.checkout().await.map_err(fail)?;
                let version_sql = format!(
                    "INSERT IGNORE INTO {} (name, value) VALUES ('schema_version', '{SCHEMA_VERSION}')",
                    self.meta
                );
                let read_sql = format!("SELECT value FROM {} WHERE name = 'schema_version'", self.meta);
                let setup = async {
                    for statement in self.schema.iter().chain([&version_sql]) {
                        conn.query_drop(statement).await?;
                    }
                    conn.query_first::<String, _>(&read_sql).await
                };
                let version = match tokio::time::timeout(self.timeout * 2, setup).await {
                    Ok(Ok(version)) => version.unwrap_or_default(),
                    Ok(Err(e)) => return Err(fail(classify(e, false))),
                    Err(_) => return Err(fail(Failure::Lost(None))),
                };
                rules::check_schema_version(BACKEND, op, &self.table, &version, SCHEMA_VERSION)?;
                spawn_purger(Arc::downgrade(self));
                Ok(())
            })
            .await
            .map(|_| ())
    }
}

fn spawn_purger(inner: Weak<Inner>) {
    let steps = sql::PURGE_EXPIRED.len();
    purger::spawn_purger(BACKEND, inner, steps, |inner, step| async move {
        let mut conn = inner.checkout().await.map_err(|_| "no connection")?;
        let statement = &inner.sql.purge_expired[step];
        conn.exec_drop(statement, (purger::PURGE_BATCH,))
            .await
            .map_err(|_| "the statement failed")?;
        Ok::<_, &str>(conn.affected_rows())
    });
}

#[async_trait]
impl checked::Backend for MysqlStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::server(BACKEND, ExpiryClock::Server, Duration::from_millis(1))
    }

    async fn incr(&self, k: String) -> Result<i64> {
        let op = Operation::Incr;
        let n = self.write_out(op, &self.inner.sql.incr, vec![key_value(k), Value::Int(1)]).await?;
        if n == sql::NOT_AN_INTEGER {
            return Err(rules::not_an_integer(BACKEND, op));
        }
        Ok(n)
    }

    async fn acquire_lock(&self, k: String, ttl: Duration) -> Result<Option<Lock>> {
        let op = Operation::AcquireLock;
        let id = LockId::generate();
        let (ttl, id_value) = (ttl_us(Some(ttl)), text(id.as_str()));
        let params = vec![key_value(k), id_value.clone(), ttl.clone(), Value::Int(1), id_value, ttl];
        let token = self.write_out(op, &self.inner.sql.acquire_lock, params).await?;
        Ok((token > 0).then(|| Lock::new(id, token as u64)))
    }

    async fn if_owner(&self, k: String, id: &LockId, then: IfOwner) -> Result<Option<bool>> {
        let op = then.op();
        let sql = &self.inner.sql;
        let matched = match then.ttl() {
            None => {
                let params = vec![key_value(k.clone()), text(id.as_str())];
                self.write_matched(op, &sql.release_lock, params).await?
            }
            Some(ttl) => {
                let params = vec![ttl_us(Some(ttl)), key_value(k.clone()), text(id.as_str())];
                self.write_matched(op, &sql.extend_lock, params).await?
            }
        };
        if matched > 0 {
            return Ok(Some(true));
        }
        self.held_by_other(op, k).await
    }

    async fn get(&self, k: String) -> Result<Option<String>> {
        let op = Operation::Get;
        let rows = self.rows(op, &self.inner.sql.get, vec![key_value(k)]).await?;
        match rows.first() {
            Some(row) => text_column(row, 0, op),
            None => Ok(None),
        }
    }

    async fn write(&self, op: Operation, k: String, write: Write<'_>) -> Result<()> {
        let (value, ttl) = (text(write.value), ttl_us(write.ttl));
        let params = vec![key_value(k), value.clone(), ttl.clone(), value, ttl];
        self.write_matched(op, &self.inner.sql.set, params).await.map(|_| ())
    }

    async fn delete(&self, k: String) -> Result<bool> {
        let op = Operation::Delete;
        let matched = self.write_matched(op, &self.inner.sql.delete, vec![key_value(k)]).await?;
        Ok(matched > 0)
    }

    async fn compare_and_set(&self, k: String, swap: Swap<'_>) -> Result<bool> {
        let op = Operation::CompareAndSet;
        let sql = &self.inner.sql;
        let (new, ttl) = (text(swap.new.value), ttl_us(swap.new.ttl));
        match swap.expected {
            None => {
                let params = vec![key_value(k), new.clone(), ttl.clone(), Value::Int(1), new, ttl];
                Ok(self.write_out(op, &sql.set_if_absent, params).await? == 1)
            }
            Some(expected) => {
                let params = vec![new, ttl, key_value(k), text(expected)];
                Ok(self.write_matched(op, &sql.set_if_equal, params).await? > 0)
            }
        }
    }

    async fn assign_nonce(&self, k: String, pending: u64) -> Result<u64> {
        let op = Operation::AssignNonce;
        let p = Value::Int(rules::check_pending(BACKEND, pending)?);
        let params = vec![key_value(k), p.clone(), p.clone(), p.clone(), p];
        let nonce = self.write_out(op, &self.inner.sql.assign_nonce, params).await?;
        u64::try_from(nonce).map_err(|_| rules::not_an_integer(BACKEND, op))
    }

    async fn inspect(&self, k: String) -> Result<KeyInfo> {
        let op = Operation::Inspect;
        let rows = self.rows(op, &self.inner.sql.inspect, vec![key_value(k)]).await?;
        let Some(row) = rows.first() else {
            return Ok(KeyInfo::default());
        };
        let value = text_column(row, 0, op)?;
        let ms: Option<i64> = column(row, 1, op)?;
        let token: Option<u64> = column(row, 2, op)?;
        Ok(KeyInfo::new(
            value,
            ms.map(|m| Duration::from_millis(m.max(0) as u64)),
            token,
        ))
    }

    async fn keys(&self, start: String, limit: usize) -> Result<Vec<String>> {
        let op = Operation::Keys;
        let limit = Value::Int(limit.min(i64::MAX as usize) as i64);
        let pattern = Value::Bytes(sql::like_prefix(&start).into_bytes());
        let rows = self.rows(op, &self.inner.sql.keys, vec![pattern, limit]).await?;
        rows.iter()
            .map(|row| text_column(row, 0, op).map(Option::unwrap_or_default))
            .collect()
    }

    async fn purge(&self, k: String) -> Result<()> {
        let op = Operation::Purge;
        self.write_matched(op, &self.inner.sql.purge, vec![key_value(k)]).await.map(|_| ())
    }
}

checked_store!(MysqlStore, BACKEND);
