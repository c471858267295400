//! Connections to Redis and the retry policy.
//!
//! - One multiplexed connection per store (or one cluster connection) is
//!   shared by every caller, so concurrent requests pipeline by themselves.
//!   When it breaks, the next call reconnects.
//! - A failure to connect means nothing was sent: every operation may try
//!   again. A cluster redirect (`MOVED`, `ASK`, `TRYAGAIN`, `CLUSTERDOWN`,
//!   `LOADING`, `READONLY`) means the server did not run the command: also
//!   safe to try again.
//! - A broken connection or timeout after the request was written is
//!   ambiguous. Idempotent operations try again; the others fail with
//!   `OutcomeUnknown` and are never resent.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, ServerErrorKind, Value};

use crate::retry::with_retries;
use crate::{Error, ErrorKind, Operation};

pub(super) const BACKEND: &str = "redis";

/// A connection of either kind.
#[derive(Clone)]
pub(super) enum AnyConn {
    Single(u64, MultiplexedConnection),
    Cluster(ClusterConnection),
}

impl ConnectionLike for AnyConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            AnyConn::Single(_, c) => c.req_packed_command(cmd),
            AnyConn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            AnyConn::Single(_, c) => c.req_packed_commands(pipeline, offset, count),
            AnyConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AnyConn::Single(_, c) => c.get_db(),
            AnyConn::Cluster(c) => c.get_db(),
        }
    }
}

pub(super) enum Target {
    Single {
        client: redis::Client,
        current: Mutex<Option<(u64, MultiplexedConnection)>>,
        connecting: tokio::sync::Mutex<()>,
        generation: AtomicU64,
    },
    Cluster {
        client: ClusterClient,
        current: Mutex<Option<ClusterConnection>>,
        connecting: tokio::sync::Mutex<()>,
    },
}

pub(super) type Failure = crate::retry::Failure<RedisError>;

pub(super) struct Connector {
    pub target: Target,
    pub timeout: Duration,
    pub connect_timeout: Duration,
}

fn not_run_by_server(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(
            ServerErrorKind::Moved
                | ServerErrorKind::Ask
                | ServerErrorKind::TryAgain
                | ServerErrorKind::ClusterDown
                | ServerErrorKind::MasterDown
                | ServerErrorKind::BusyLoading
                | ServerErrorKind::ReadOnly
        )
    ) || e.is_connection_refusal()
}

fn is_reply(e: &RedisError) -> bool {
    matches!(
        e.kind(),
        redis::ErrorKind::Server(_) | redis::ErrorKind::Extension
    )
}

impl Connector {
    /// The established connection, if any (the fast path).
    fn current(&self) -> Option<AnyConn> {
        match &self.target {
            Target::Single { current, .. } => current
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|(g, c)| AnyConn::Single(*g, c.clone())),
            Target::Cluster { current, .. } => current
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|c| AnyConn::Cluster(c.clone())),
        }
    }

    /// Connect, one caller at a time; the others then share the result.
    async fn connect(&self) -> Result<AnyConn, RedisError> {
        let _one_at_a_time = match &self.target {
            Target::Single { connecting, .. } | Target::Cluster { connecting, .. } => {
                connecting.lock().await
            }
        };
        if let Some(conn) = self.current() {
            return Ok(conn);
        }
        match &self.target {
            Target::Single {
                client,
                current,
                generation,
                ..
            } => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(None);
                let conn = client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?;
                let g = generation.fetch_add(1, Ordering::Relaxed) + 1;
                *current.lock().unwrap_or_else(|e| e.into_inner()) = Some((g, conn.clone()));
                Ok(AnyConn::Single(g, conn))
            }
            Target::Cluster {
                client, current, ..
            } => {
                let conn = client.get_async_connection().await?;
                *current.lock().unwrap_or_else(|e| e.into_inner()) = Some(conn.clone());
                Ok(AnyConn::Cluster(conn))
            }
        }
    }

    /// Drop a broken single-node connection so the next call reconnects.
    /// (A cluster connection reconnects its nodes by itself.)
    fn discard(&self, conn: &AnyConn) {
        if let (Target::Single { current, .. }, AnyConn::Single(g, _)) = (&self.target, conn) {
            let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
            if current.as_ref().is_some_and(|(cg, _)| cg == g) {
                *current = None;
            }
        }
    }

    /// Run `request` under the retry policy of `op`.
    pub async fn call<T, F>(&self, op: Operation, request: F) -> Result<T, Failure>
    where
        F: for<'c> Fn(&'c mut AnyConn) -> RedisFuture<'c, T>,
    {
        with_retries(op, || async {
            let connected = match self.current() {
                Some(conn) => Ok(conn),
                None => match tokio::time::timeout(self.connect_timeout, self.connect()).await {
                    Ok(result) => result,
                    Err(_) => Err(RedisError::from(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "connecting timed out",
                    ))),
                },
            };
            let mut conn = connected.map_err(Failure::NotSent)?;
            match tokio::time::timeout(self.timeout, request(&mut conn)).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(e)) if not_run_by_server(&e) => Err(Failure::NotSent(e)),
                Ok(Err(e)) if is_reply(&e) => Err(Failure::Reply(e)),
                Ok(Err(e)) => {
                    self.discard(&conn);
                    Err(Failure::Lost(Some(e)))
                }
                Err(_elapsed) => Err(Failure::Lost(None)),
            }
        })
        .await
    }
}

/// The contract's error for this failure of `op`.
pub(super) fn into_error(failure: Failure, op: Operation, timeout: Duration) -> Error {
    match failure {
        Failure::NotSent(e) => {
            let permanent = matches!(
                e.kind(),
                redis::ErrorKind::AuthenticationFailed
                    | redis::ErrorKind::InvalidClientConfig
                    | redis::ErrorKind::Server(ServerErrorKind::NoPerm)
            );
            let message = if permanent {
                "the server refused the connection's credentials or configuration"
            } else {
                "could not reach Redis; nothing was applied"
            };
            Error::new(ErrorKind::Unavailable, BACKEND, op, message)
                .with_source(e)
                .with_temporary(!permanent)
        }
        Failure::Lost(source) => crate::retry::lost(BACKEND, "Redis", op, timeout, source),
        Failure::Reply(e) => reply_error(op, e),
    }
}

fn reply_error(op: Operation, e: RedisError) -> Error {
    let text = e.to_string();
    let code = e.code().unwrap_or("");
    let (kind, message) = if code == "ATOMIC_NOTINT" || text.contains("not an integer") {
        (
            ErrorKind::NotAnInteger,
            "the stored value is not a decimal integer in the i64 range",
        )
    } else if code == "ATOMIC_OVERFLOW" || text.contains("overflow") {
        (
            ErrorKind::Overflow,
            "the new value would not fit (i64, or 15 digits for assign_nonce on Redis)",
        )
    } else if code == "WRONGTYPE" {
        (
            ErrorKind::Backend,
            "the key holds a Redis type other than a string",
        )
    } else if op == Operation::Eval {
        (ErrorKind::Script, "the script failed")
    } else {
        (ErrorKind::Backend, "Redis answered with an error")
    };
    Error::new(kind, BACKEND, op, message).with_source(e)
}
