//! Connections to Redis and the retry policy.
//!
//! - One multiplexed connection per store (or one cluster connection) is
//!   shared by every caller, so concurrent requests pipeline by themselves.
//! - [`classify`] is the failure model, in one table: a failure to connect,
//!   or a server that refused the command without running it (a cluster
//!   redirect, `LOADING`, `READONLY`, `BUSY`, ...) means nothing was
//!   applied, and every operation may try again. A broken connection, an
//!   unreadable reply or a timeout after the request was written is
//!   ambiguous: reads try again, writes fail with `OutcomeUnknown` and are
//!   never resent. Any other error is the server's
//!   answer.
//! - A single-node connection is replaced (the next call connects anew)
//!   when it breaks, when it answers `READONLY` or `MASTERDOWN` (the node
//!   became a replica: after a failover the address may lead to the new
//!   primary), and when a request on it times out (the socket may be
//!   half-open and never answer again). A timed-out connection is kept open
//!   in the background until what it carries is answered, so a request that
//!   is only slow still runs once rather than being dropped by the close.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, FromRedisValue, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value};

use crate::retry::with_retries;
use crate::{Error, ErrorKind, Operation};

pub(super) const BACKEND: &str = "redis";

/// The WAITs of a connection, when the store has `wait_replicas`.
type Rounds = Option<Arc<WaitRounds>>;

/// A connection of either kind.
#[derive(Clone)]
pub(super) enum AnyConn {
    /// A generation, the connection, and the WAITs sent on it.
    /// The rounds are `None` without `wait_replicas`: an Arc less to
    /// clone on every request.
    Single(u64, MultiplexedConnection, Rounds),
    Cluster(ClusterConnection),
}

impl ConnectionLike for AnyConn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            AnyConn::Single(_, c, _) => c.req_packed_command(cmd),
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
            AnyConn::Single(_, c, _) => c.req_packed_commands(pipeline, offset, count),
            AnyConn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            AnyConn::Single(_, c, _) => c.get_db(),
            AnyConn::Cluster(c) => c.get_db(),
        }
    }
}

/// Where a single-node connection goes.
pub(super) enum Node {
    /// The address in the URL.
    Fixed(redis::Client),
    /// Wherever the sentinels say the primary is, asked at each connect.
    Sentinel(super::sentinel::Sentinels),
}

pub(super) enum Target {
    Single {
        node: Node,
        current: Mutex<Option<(u64, MultiplexedConnection, Rounds)>>,
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
    /// `?wait_replicas=`: every write is followed by a `WAIT` on the
    /// connection that carried it.
    pub wait: Option<WaitReplicas>,
}

/// `WAIT replicas timeout` after each write.
#[derive(Clone, Copy, Debug)]
pub(super) struct WaitReplicas {
    pub replicas: u32,
    pub timeout: Duration,
}

/// The description of a [`Failure::Lost`] raised because too few replicas
/// acknowledged a write that the primary applied.
const TOO_FEW_REPLICAS: &str = "too few replicas acknowledged the write";

fn is_too_few_replicas(e: &RedisError) -> bool {
    e.kind() == redis::ErrorKind::Client && e.to_string().contains(TOO_FEW_REPLICAS)
}

/// Error codes, outside redis-rs's known kinds, of a command the server
/// refused to run: a script is running too long (`BUSY`), too few replicas
/// (`NOREPLICAS`), writes stopped after a failed snapshot (`MISCONF`).
const REFUSED_CODES: &[&str] = &["BUSY", "NOREPLICAS", "MISCONF"];

/// The failure model of this backend: what an error returned for a
/// request says about the request. (Errors while connecting never reach
/// here: nothing was sent then.)
pub(super) fn classify(e: RedisError) -> Failure {
    use redis::ErrorKind as Kind;
    use ServerErrorKind as Server;
    match e.kind() {
        // The server refused without running the command.
        Kind::Server(
            Server::Moved
            | Server::Ask
            | Server::TryAgain
            | Server::ClusterDown
            | Server::MasterDown
            | Server::BusyLoading
            | Server::ReadOnly
            | Server::NoScript,
        ) => Failure::NotSent(e),
        Kind::Extension if e.code().is_some_and(|c| REFUSED_CODES.contains(&c)) => {
            Failure::NotSent(e)
        }
        // The server ran the command and answered with an error.
        Kind::Server(_) | Kind::Extension => Failure::Reply(e),
        // Raised by the client before anything was written.
        Kind::Client
        | Kind::InvalidClientConfig
        | Kind::AuthenticationFailed
        | Kind::RESP3NotSupported
        | Kind::ClusterConnectionNotFound
        | Kind::MasterNameNotFoundBySentinel
        | Kind::NoValidReplicasFoundBySentinel
        | Kind::EmptySentinelList => Failure::NotSent(e),
        Kind::Io if e.is_connection_refusal() => Failure::NotSent(e),
        // A broken connection (reset, closed, EOF) or a reply that could not
        // be read: the command may have run.
        _ => Failure::Lost(Some(e)),
    }
}

/// True when the connection that gave this failure must not carry more
/// requests: it broke, or it leads to a replica.
fn connection_is_spent(failure: &Failure) -> bool {
    match failure {
        // Also when too few replicas acknowledged: the node may have been
        // cut off or demoted, so the next call asks the sentinels again.
        Failure::Lost(_) => true,
        Failure::NotSent(e) => matches!(
            e.kind(),
            redis::ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown)
        ),
        Failure::Reply(_) => false,
    }
}

/// How long a timed-out connection stays open for what it carries.
const RETIRED_FOR: Duration = Duration::from_secs(30);

impl Connector {
    /// The established connection, if any (the fast path).
    fn current(&self) -> Option<AnyConn> {
        match &self.target {
            Target::Single { current, .. } => current
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .as_ref()
                .map(|(g, c, w)| AnyConn::Single(*g, c.clone(), w.clone())),
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
                node,
                current,
                generation,
                ..
            } => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(None);
                let conn = match node {
                    Node::Fixed(client) => {
                        client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?
                    }
                    Node::Sentinel(sentinels) => {
                        let client = sentinels.primary(self.connect_timeout).await?;
                        let mut conn = client
                            .get_multiplexed_async_connection_with_config(&config)
                            .await?;
                        super::sentinel::require_primary(&mut conn).await?;
                        conn
                    }
                };
                if self.wait.is_some() {
                    // WAIT refused shows here, before anything is sent, not
                    // as every write's unknown outcome.
                    let mut probe = conn.clone();
                    let probed = redis::cmd("WAIT").arg(0).arg(0).query_async::<i64>(&mut probe).await;
                    if let Err(e) = probed {
                        // "WAIT cannot be used with replica instances": a
                        // demoted node, like READONLY.
                        return Err(if e.to_string().contains("replica") {
                            RedisError::from((
                                redis::ErrorKind::Server(ServerErrorKind::ReadOnly),
                                "the node is a replica",
                            ))
                        } else {
                            e
                        });
                    }
                }
                let g = generation.fetch_add(1, Ordering::Relaxed) + 1;
                let rounds = self.wait.map(|_| Arc::new(WaitRounds::default()));
                *current.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some((g, conn.clone(), rounds.clone()));
                Ok(AnyConn::Single(g, conn, rounds))
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

    /// A client for the node to subscribe on (where this store writes);
    /// `None` for a cluster, which has no subscriber.
    pub async fn subscriber_client(&self) -> Option<Result<redis::Client, RedisError>> {
        match &self.target {
            Target::Single { node: Node::Fixed(client), .. } => Some(Ok(client.clone())),
            Target::Single { node: Node::Sentinel(sentinels), .. } => {
                Some(sentinels.primary(self.connect_timeout).await)
            }
            Target::Cluster { .. } => None,
        }
    }

    /// Stop handing out this single-node connection, so the next call
    /// reconnects; true when it was still the current one. Requests already
    /// on it go on. (A cluster connection reconnects its nodes by itself.)
    fn discard(&self, conn: &AnyConn) -> bool {
        if let (Target::Single { current, .. }, AnyConn::Single(g, ..)) = (&self.target, conn) {
            let mut current = current.lock().unwrap_or_else(|e| e.into_inner());
            if current.as_ref().is_some_and(|(cg, ..)| cg == g) {
                *current = None;
                return true;
            }
        }
        false
    }

    /// A request on `conn` timed out: replace the connection, but keep it
    /// open until a PING sent behind what it carries is answered (or
    /// [`RETIRED_FOR`] passes). Closing it at once would make the server
    /// drop requests still queued on it (during `CLIENT PAUSE`, say).
    fn retire(&self, conn: &AnyConn) {
        if !self.discard(conn) {
            return;
        }
        let mut old = conn.clone();
        tokio::spawn(async move {
            let ping = redis::cmd("PING");
            let _ = tokio::time::timeout(RETIRED_FOR, ping.query_async::<Value>(&mut old)).await;
        });
    }

    /// Connect under the connect timeout. Boxed: it is the slow path, and
    /// inline it would grow every call's future.
    fn connect_in_time(&self) -> BoxFuture<'_, Result<AnyConn, RedisError>> {
        Box::pin(async move {
            match tokio::time::timeout(self.connect_timeout, self.connect()).await {
                Ok(result) => result,
                Err(_) => Err(RedisError::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting timed out",
                ))),
            }
        })
    }

    /// Run `request` under the retry policy of `op`.
    pub async fn call<T: 'static, R: Request<T>>(&self, op: Operation, request: R) -> Result<T, Failure> {
        with_retries(op, || async {
            let connected = match self.current() {
                Some(conn) => Ok(conn),
                None => self.connect_in_time().await,
            };
            let mut conn = connected.map_err(Failure::NotSent)?;
            let answered = async {
                let written = request.send(&mut conn).await.map_err(classify);
                if let Some(wait) = self.wait {
                    if may_have_written(op, &written) {
                        Box::pin(wait_for_replicas(&mut conn, wait)).await?;
                    }
                }
                written
            };
            match tokio::time::timeout(self.timeout, answered).await {
                Ok(Ok(value)) => Ok(value),
                Ok(Err(failure)) => {
                    if connection_is_spent(&failure) {
                        self.discard(&conn);
                    }
                    Err(failure)
                }
                Err(_elapsed) => {
                    self.retire(&conn);
                    Err(Failure::Lost(None))
                }
            }
        })
        .await
    }
}

/// What one attempt sends on a connection.
pub(super) trait Request<T: 'static> {
    fn send<'c>(&'c self, conn: &'c mut AnyConn) -> impl Future<Output = RedisResult<T>> + Send + 'c;
}

/// A plain command. On a single node it skips the box that redis-rs's
/// `ConnectionLike` puts around every request.
impl<T: FromRedisValue + 'static> Request<T> for Cmd {
    async fn send(&self, conn: &mut AnyConn) -> RedisResult<T> {
        let value = match conn {
            AnyConn::Single(_, c, _) => c.send_packed_command(self).await?,
            AnyConn::Cluster(c) => c.req_packed_command(self).await?,
        };
        Ok(redis::from_redis_value(value.extract_error()?)?)
    }
}

/// A request built on each attempt, such as a script invocation.
pub(super) struct Built<F>(pub F);

impl<T: 'static, F> Request<T> for Built<F>
where
    F: for<'c> Fn(&'c mut AnyConn) -> RedisFuture<'c, T>,
{
    fn send<'c>(&'c self, conn: &'c mut AnyConn) -> impl Future<Output = RedisResult<T>> + Send + 'c {
        (self.0)(conn)
    }
}

/// Whether `op`, answered with `written`, may have written: a write that
/// succeeded, or a script that failed (it may have written before it
/// failed); a plain command that failed wrote nothing.
fn may_have_written<T>(op: Operation, written: &Result<T, Failure>) -> bool {
    let plain_command = matches!(
        op,
        Operation::Incr | Operation::Set | Operation::SetWithTtl | Operation::Delete | Operation::Purge
    );
    match written {
        Ok(_) => !op.is_resent_after_lost_reply(),
        Err(Failure::Reply(_)) => !op.is_resent_after_lost_reply() && !plain_command,
        Err(_) => false,
    }
}

/// `WAIT` on the connection that carried the write: WAIT waits for the
/// replication offset of its own connection's last write, so on a fresh
/// connection it would return at once. The primary has applied the write
/// by now, so any failure here is "maybe applied".
async fn wait_for_replicas(conn: &mut AnyConn, wait: WaitReplicas) -> Result<(), Failure> {
    let acks = match conn {
        AnyConn::Single(_, _, Some(rounds)) => Arc::clone(rounds).acks(conn, wait).await,
        // Not reached: a single node's connection has rounds when `wait` is set.
        AnyConn::Single(_, _, None) | AnyConn::Cluster(_) => {
            wait_command(wait).query_async(conn).await
        }
    }
    .map_err(|e| Failure::Lost(Some(e)))?;
    if acks >= i64::from(wait.replicas) {
        return Ok(());
    }
    Err(Failure::Lost(Some(RedisError::from((
        redis::ErrorKind::Client,
        TOO_FEW_REPLICAS,
        format!(
            "{acks} of {} replicas acknowledged it within {:?}",
            wait.replicas, wait.timeout
        ),
    )))))
}

fn wait_command(wait: WaitReplicas) -> Cmd {
    let mut cmd = redis::cmd("WAIT");
    cmd.arg(wait.replicas)
        .arg(wait.timeout.as_millis().max(1) as u64);
    cmd
}

/// The WAITs of one connection, shared. A WAIT covers every write the
/// connection carried before it, and blocks the connection while it waits,
/// so one WAIT per write would line every write up behind the one before.
/// Instead a write takes the result of the first WAIT sent after its reply
/// came: one WAIT at a time, each serving every write answered before it.
#[derive(Default)]
pub(super) struct WaitRounds {
    started: AtomicU64,
    one_at_a_time: tokio::sync::Mutex<()>,
    /// The last round that finished, and what its WAIT answered.
    finished: Mutex<Option<(u64, Result<i64, RedisError>)>>,
}

impl WaitRounds {
    async fn acks(self: Arc<Self>, conn: &mut AnyConn, wait: WaitReplicas) -> Result<i64, RedisError> {
        // Rounds started from now on are sent after this write's reply.
        let needed = self.started.load(Ordering::SeqCst) + 1;
        let _turn = self.one_at_a_time.lock().await;
        if let Some(answer) = self.finished_since(needed) {
            return answer;
        }
        let round = self.started.fetch_add(1, Ordering::SeqCst) + 1;
        let answer = wait_command(wait).query_async::<i64>(conn).await;
        *self.finished.lock().unwrap_or_else(|e| e.into_inner()) = Some((round, answer.clone()));
        answer
    }

    fn finished_since(&self, needed: u64) -> Option<Result<i64, RedisError>> {
        match &*self.finished.lock().unwrap_or_else(|e| e.into_inner()) {
            Some((round, answer)) if *round >= needed => Some(answer.clone()),
            _ => None,
        }
    }
}

/// The contract's error for this failure of `op`.
pub(super) fn into_error(failure: Failure, op: Operation, timeout: Duration) -> Error {
    match failure {
        // A plain error answer reaches here only from setting up the
        // connection (AUTH, SELECT): the server refused our settings.
        Failure::NotSent(e)
            if matches!(
                e.kind(),
                redis::ErrorKind::AuthenticationFailed
                    | redis::ErrorKind::InvalidClientConfig
                    | redis::ErrorKind::Server(ServerErrorKind::NoPerm | ServerErrorKind::ResponseError)
            ) =>
        {
            let words = e.detail().unwrap_or("").trim();
            let words = if words.is_empty() { e.to_string() } else { words.to_owned() };
            let message = format!(
                "Redis refused the connection: {words}; check the user, password and DB index in the URL"
            );
            Error::new(ErrorKind::Configuration, BACKEND, op, message)
        }
        Failure::NotSent(e) if e.kind() == redis::ErrorKind::MasterNameNotFoundBySentinel => {
            let name = e.detail().unwrap_or("").to_owned();
            let message = format!(
                "no sentinel knows a primary named {name}; check the name after the / in the URL"
            );
            Error::new(ErrorKind::Configuration, BACKEND, op, message)
        }
        Failure::NotSent(e) => {
            Error::new(ErrorKind::Unavailable, BACKEND, op, "could not reach Redis; nothing was applied")
                .with_source(e)
        }
        Failure::Lost(Some(e)) if is_too_few_replicas(&e) => {
            let acks = e.detail().unwrap_or("").to_owned();
            let message = format!(
                "the primary applied the write, but only {acks} (wait_replicas); it may not survive a failover, and it was not resent"
            );
            Error::new(ErrorKind::OutcomeUnknown, BACKEND, op, message).with_source(e)
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind as Io;

    fn class(f: &Failure) -> &'static str {
        match f {
            Failure::NotSent(_) => "not sent",
            Failure::Lost(_) => "lost",
            Failure::Reply(_) => "reply",
        }
    }

    /// The error redis-rs makes of an error reply on the wire.
    fn from_wire(line: &str) -> RedisError {
        match redis::parse_redis_value(format!("-{line}\r\n").as_bytes()) {
            Ok(Value::ServerError(e)) => e.into(),
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn error_replies() {
        let rows = [
            // Refused without running the command.
            ("MOVED 3999 127.0.0.1:6381", "not sent"),
            ("ASK 3999 127.0.0.1:6381", "not sent"),
            ("TRYAGAIN Multiple keys request during rehashing of slot", "not sent"),
            ("CLUSTERDOWN The cluster is down", "not sent"),
            ("MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.", "not sent"),
            ("LOADING Redis is loading the dataset in memory", "not sent"),
            ("READONLY You can't write against a read only replica.", "not sent"),
            ("NOSCRIPT No matching script. Please use EVAL.", "not sent"),
            ("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSCRIPT.", "not sent"),
            ("NOREPLICAS Not enough good replicas to write.", "not sent"),
            ("MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.", "not sent"),
            // Ran, and answered with an error.
            ("ERR value is not an integer or out of range", "reply"),
            ("WRONGTYPE Operation against a key holding the wrong kind of value", "reply"),
            ("ATOMIC_NOTINT stored nonce is not a decimal integer", "reply"),
            ("CROSSSLOT Keys in request don't hash to the same slot", "reply"),
            ("NOPERM User has no permissions to run the 'incr' command", "reply"),
            ("EXECABORT Transaction discarded because of previous errors.", "reply"),
        ];
        for (line, want) in rows {
            assert_eq!(class(&classify(from_wire(line))), want, "{line}");
        }
    }

    #[test]
    fn connection_errors() {
        let rows = [
            (Io::ConnectionRefused, "not sent"),
            (Io::ConnectionReset, "lost"),
            (Io::BrokenPipe, "lost"),
            (Io::UnexpectedEof, "lost"),
            (Io::TimedOut, "lost"),
            (Io::NotConnected, "lost"),
        ];
        for (kind, want) in rows {
            let e = RedisError::from(std::io::Error::from(kind));
            assert_eq!(class(&classify(e)), want, "{kind:?}");
        }
    }

    #[test]
    fn unreadable_replies_and_client_errors() {
        // A stream redis-rs cannot parse: the command may have run.
        let garbage = redis::parse_redis_value(b"?not resp\r\n").unwrap_err();
        assert_eq!(garbage.kind(), redis::ErrorKind::Parse, "{garbage}");
        assert_eq!(class(&classify(garbage)), "lost");
        // A reply of the wrong type.
        let wrong: RedisError = redis::from_redis_value::<i64>(Value::Nil)
            .unwrap_err()
            .into();
        assert_eq!(class(&classify(wrong)), "lost");
        // Refused by redis-rs itself, before writing.
        let client = RedisError::from((redis::ErrorKind::Client, "refused by the client"));
        assert_eq!(class(&classify(client)), "not sent");
    }

    #[test]
    fn spent_connections() {
        let spent = |f: Failure| connection_is_spent(&f);
        assert!(spent(classify(from_wire(
            "READONLY You can't write against a read only replica."
        ))));
        assert!(spent(classify(from_wire(
            "MASTERDOWN Link with MASTER is down"
        ))));
        assert!(spent(classify(RedisError::from(std::io::Error::from(
            Io::ConnectionReset
        )))));
        assert!(spent(Failure::Lost(None)));
        assert!(!spent(classify(from_wire(
            "LOADING Redis is loading the dataset in memory"
        ))));
        assert!(!spent(classify(from_wire(
            "ERR value is not an integer or out of range"
        ))));
    }
}
