//! `redis://`: the reference backend, compatible with the TypeScript
//! original's layout.
//!
//! # URLs
//! - `redis://[user:pass@]host:port[/db]`, `rediss://…` for TLS;
//! - `redis+cluster://[user:pass@]host1:port1,host2:port2,…` (and
//!   `rediss+cluster://`) for Redis Cluster, with any number of seed nodes.
//!
//! - `redis+sentinel://[user:pass@]sentinel1:port,sentinel2:port,…/PRIMARY_NAME`
//!   for a primary behind Redis Sentinel (sentinels default to port 26379;
//!   `user:pass` is for the data nodes, `?db=N` picks the database).
//!
//! Parameters: `prefix` (default `atomic`), `timeout` (per operation,
//! default 2s), `connect_timeout` (default 2s), `ca_file` (a PEM file of the
//! certificate authority to trust for TLS, instead of the system's roots),
//! `wait_replicas` and `wait_timeout` (single node and Sentinel only).
//!
//! # Sentinel and replication
//! The primary is looked up through the sentinels at every (re)connect; a
//! connection is dropped when it breaks or answers `READONLY` or
//! `MASTERDOWN`, so the store follows a failover without a restart. Calls
//! during the failover fail with `Unavailable` (nothing applied) or
//! `OutcomeUnknown` (a write whose reply was lost).
//!
//! Replication is asynchronous: a write the old primary acknowledged can be
//! lost when a replica is promoted, so an `incr` value can be handed out
//! twice, a lock held twice, and a fencing token issued twice.
//! `?wait_replicas=N` sends `WAIT N` after every write on the write's own
//! connection; a write that fewer than N replicas acknowledged within
//! `wait_timeout` (default the smaller of 500 ms and a quarter of the timeout)
//! fails as `OutcomeUnknown`, since it may or may not survive a failover
//! (`wait_timeout` is under a third of `timeout`).
//! An acknowledged write is then in the memory of N replicas and survives
//! the promotion of any of them.
//!
//! # Layout
//! Every key is `{prefix}:{key}`: with `?prefix=vana-sdk:atomic`, `incr("a")`
//! is `INCR vana-sdk:atomic:a`, exactly what the TypeScript original does. A
//! lock is a plain string holding the lock id with a server-side TTL, so a
//! lock taken with `SET key id PX ttl NX` by any client is seen as held and
//! released by its id. `assign_nonce` runs the original's rule on the same
//! key as one script. Fencing counters live at `{TAG}\0fence\0{prefix}:{key}`,
//! where `TAG` makes the counter hash to the lock key's cluster slot and the
//! NUL byte keeps it apart from every user key (see [`slots`]).

mod conn;
mod scripts;
mod sentinel;
pub mod slots;

use std::time::Duration;

use async_trait::async_trait;
use redis::{RedisFuture, Value};

use self::conn::{into_error, AnyConn, Built, Connector, Request, Node, Target, WaitReplicas, BACKEND};
use self::scripts::scripts;
use crate::url::StoreUrl;
use crate::rules;
use crate::store::ownership_from_code;
use crate::backends::checked::{self, checked_store, IfOwner, Swap, Write};
use crate::{
    Capabilities, Error, EvalValue, ExpiryClock, HandedTo, Handover, KeyInfo, Lock, LockId,
    Operation, QueueEntry, QueueTurn, ReleaseOutcome, Result,
};

const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Lua numbers are doubles: `assign_nonce` on Redis takes pending counts
/// below 10^15, far beyond any real account's nonce.
const MAX_LUA_PENDING: u64 = 999_999_999_999_999;

/// The store behind `redis://`, `rediss://`, `redis+cluster://` and
/// `redis+sentinel://`.
pub struct RedisStore {
    connector: Connector,
    // For notifications on a single node: the subscriber.
    notifier: tokio::sync::Mutex<Option<std::sync::Arc<Notifier>>>,
    prefix: String,
    redacted_url: String,
    cluster: bool,
}

store_debug!(RedisStore { url: redacted_url, prefix: prefix, cluster: cluster, timeout: connector.timeout, wait: connector.wait });

impl RedisStore {
    /// Open from a URL (see the module docs). Does not connect: the first
    /// operation does.
    pub fn open(url: &str) -> Result<Self> {
        let accepted = ["timeout", "connect_timeout", "ca_file", "db", "wait_replicas", "wait_timeout"];
        let parsed = StoreUrl::parse(BACKEND, url, Some(&accepted))?;
        let open_error = |message: &str| parsed.error(message);
        let redacted_url = parsed.redacted().to_owned();
        let (tls, cluster, sentinel) = match parsed.scheme.as_str() {
            "redis" => (false, false, false),
            "rediss" => (true, false, false),
            "redis+cluster" => (false, true, false),
            "rediss+cluster" => (true, true, false),
            "redis+sentinel" => (false, false, true),
            _ => return Err(open_error(&format!("`{redacted_url}` is not a Redis URL"))),
        };
        let prefix = parsed.prefix()?;
        let timeout = parsed.timeout(DEFAULT_TIMEOUT)?;
        let connect_timeout = parsed.connect_timeout(DEFAULT_TIMEOUT)?;
        if parsed.param("db").is_some() && !sentinel {
            return Err(open_error(
                "`db` is for redis+sentinel:// URLs; on redis:// the database goes in the path, e.g. redis://host:6379/2",
            ));
        }
        let wait = wait_replicas(&parsed, timeout)?;
        if wait.is_some() && cluster {
            return Err(open_error(
                "wait_replicas is not supported on Redis Cluster; use a single node or redis+sentinel://",
            ));
        }
        let certs = match parsed.param("ca_file") {
            None => None,
            Some(path) => {
                if !tls {
                    return Err(open_error(
                        "ca_file needs a TLS URL (rediss:// or rediss+cluster://)",
                    ));
                }
                let pem = std::fs::read(path)
                    .map_err(|e| open_error(&format!("cannot read ca_file {path}: {e}")))?;
                Some(redis::TlsCertificates {
                    client_tls: None,
                    root_cert: Some(pem),
                })
            }
        };
        if tls {
            install_crypto_provider();
        }
        let node_scheme = if tls { "rediss" } else { "redis" };
        let bad_url = |e: redis::RedisError| {
            open_error(&format!(
                "`{redacted_url}` is not a valid Redis URL: {}",
                e.category()
            ))
        };
        let location = parsed.location.as_str();
        if location.is_empty() {
            return Err(open_error(
                "the Redis URL has no host, e.g. redis://127.0.0.1:6379",
            ));
        }
        let target = if cluster {
            let (userinfo, hosts) = match location.rsplit_once('@') {
                Some((u, h)) => (format!("{u}@"), h),
                None => (String::new(), location),
            };
            if hosts.contains('/') {
                return Err(open_error(
                    "Redis Cluster has no databases: remove the /db part",
                ));
            }
            let nodes: Vec<String> = hosts
                .split(',')
                .filter(|h| !h.is_empty())
                .map(|h| format!("{node_scheme}://{userinfo}{h}"))
                .collect();
            if nodes.is_empty() {
                return Err(open_error("redis+cluster:// needs at least one host:port"));
            }
            let mut builder = redis::cluster::ClusterClientBuilder::new(nodes)
                .retries(0)
                .connection_timeout(connect_timeout)
                .response_timeout(timeout);
            if let Some(certs) = certs {
                builder = builder.certs(certs);
            }
            Target::Cluster {
                client: builder.build().map_err(bad_url)?,
                current: Default::default(),
                connecting: Default::default(),
            }
        } else if sentinel {
            let Some((authority, name)) = location.split_once('/').filter(|(_, n)| !n.is_empty())
            else {
                return Err(open_error(
                    "redis+sentinel:// needs the primary's name after the hosts, e.g. redis+sentinel://127.0.0.1:26379/mymaster",
                ));
            };
            let (userinfo, hosts) = match authority.rsplit_once('@') {
                Some((u, hosts)) => (format!("{u}@"), hosts),
                None => (String::new(), authority),
            };
            let name = StoreUrl::decode(name);
            let db = match parsed.param("db") {
                None => 0,
                Some(v) => v
                    .parse::<i64>()
                    .ok()
                    .filter(|db| *db >= 0)
                    .ok_or_else(|| open_error("`db` must be a database number, e.g. db=0"))?,
            };
            let sentinels =
                sentinel::Sentinels::new(hosts, &name, &userinfo, db).map_err(|e| open_error(&e))?;
            Target::Single {
                node: Node::Sentinel(sentinels),
                current: Default::default(),
                connecting: Default::default(),
                generation: Default::default(),
            }
        } else {
            let node = format!("{node_scheme}://{location}");
            let client = match certs {
                Some(certs) => redis::Client::build_with_tls(node.as_str(), certs),
                None => redis::Client::open(node.as_str()),
            }
            .map_err(bad_url)?;
            Target::Single {
                node: Node::Fixed(client),
                current: Default::default(),
                connecting: Default::default(),
                generation: Default::default(),
            }
        };
        Ok(RedisStore {
            notifier: tokio::sync::Mutex::new(None),
            connector: Connector {
                target,
                timeout,
                connect_timeout,
                wait,
            },
            prefix,
            redacted_url,
            cluster,
        })
    }

    async fn call<T: 'static, F>(&self, op: Operation, request: F) -> Result<T>
    where
        F: for<'c> Fn(&'c mut AnyConn) -> RedisFuture<'c, T>,
    {
        self.send(op, Built(request)).await
    }

    async fn send<T: 'static, R: Request<T>>(&self, op: Operation, request: R) -> Result<T> {
        self.connector
            .call(op, request)
            .await
            .map_err(|f| into_error(f, op, self.connector.timeout))
    }
}

/// `name key`, sized for both so that adding the key does not reallocate.
fn command(name: &str, key: &str) -> redis::Cmd {
    let mut cmd = redis::Cmd::with_capacity(4, name.len() + key.len());
    cmd.arg(name).arg(key);
    cmd
}

/// `?wait_replicas=N[&wait_timeout=…]`, checked.
fn wait_replicas(parsed: &StoreUrl, timeout: Duration) -> Result<Option<WaitReplicas>> {
    let Some(replicas) = parsed.param("wait_replicas") else {
        if parsed.param("wait_timeout").is_some() {
            return Err(parsed.error("wait_timeout needs wait_replicas"));
        }
        return Ok(None);
    };
    let replicas = replicas
        .parse::<u32>()
        .ok()
        .filter(|n| (1..=64).contains(n))
        .ok_or_else(|| parsed.error("wait_replicas must be a number of replicas from 1 to 64"))?;
    // A write may wait behind a WAIT in flight, then for its own: three
    // waits must fit in the timeout that covers the write and its WAIT.
    let default = (timeout / 4).min(Duration::from_millis(500));
    let wait_timeout = parsed.positive_duration("wait_timeout", default)?;
    if wait_timeout * 3 >= timeout {
        return Err(parsed.error(format!(
            "wait_timeout ({wait_timeout:?}) must be under a third of timeout ({timeout:?}): a write may wait for the WAIT in flight and then for its own"
        )));
    }
    Ok(Some(WaitReplicas {
        replicas,
        timeout: wait_timeout,
    }))
}

const NOTIFY_CHANNEL: &str = "atomic-store:notify:";

/// One pattern subscription per store, dispatching to local waiters.
struct Notifier {
    waiters:
        std::sync::Mutex<std::collections::HashMap<String, std::sync::Arc<tokio::sync::Notify>>>,
    alive: std::sync::atomic::AtomicBool,
}

impl RedisStore {
    /// The running subscriber, started (again) if needed.
    async fn notifier(&self, op: Operation) -> Result<std::sync::Arc<Notifier>> {
        use std::sync::atomic::Ordering;
        use std::sync::Arc;
        let mut slot = self.notifier.lock().await;
        if let Some(n) = slot.as_ref().filter(|n| n.alive.load(Ordering::Relaxed)) {
            return Ok(Arc::clone(n));
        }
        let unavailable = |e: redis::RedisError| {
            Error::new(
                crate::ErrorKind::Unavailable,
                BACKEND,
                op,
                "could not subscribe for notifications",
            )
            .with_source(e)
        };
        let Some(client) = self.connector.subscriber_client().await else {
            return Err(Error::unsupported(BACKEND, op));
        };
        let client = client.map_err(unavailable)?;
        let connect = client.get_async_pubsub();
        let mut pubsub = tokio::time::timeout(self.connector.connect_timeout, connect)
            .await
            .map_err(|_| {
                Error::new(
                    crate::ErrorKind::Unavailable,
                    BACKEND,
                    op,
                    "subscribing timed out",
                )
            })?
            .map_err(unavailable)?;
        pubsub
            .psubscribe(format!("{NOTIFY_CHANNEL}*"))
            .await
            .map_err(unavailable)?;
        let notifier = Arc::new(Notifier {
            waiters: Default::default(),
            alive: std::sync::atomic::AtomicBool::new(true),
        });
        let (_sink, mut stream) = pubsub.split();
        let weak = Arc::downgrade(&notifier);
        tokio::spawn(async move {
            use futures_util::StreamExt;
            while let Some(msg) = stream.next().await {
                let Some(n) = weak.upgrade() else { return };
                let waiters = n.waiters.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(w) = waiters.get(msg.get_channel_name()) {
                    w.notify_waiters();
                }
            }
            if let Some(n) = weak.upgrade() {
                n.alive.store(false, Ordering::Relaxed);
            }
        });
        *slot = Some(Arc::clone(&notifier));
        Ok(notifier)
    }
}

/// The SHA1 of the `assign_nonce` script, as `EVALSHA` takes it (for
/// benchmarks that call the script directly). Not part of the stable API:
/// the CLI's baseline uses it.
#[doc(hidden)]
pub fn assign_nonce_script_sha() -> &'static str {
    scripts().assign_nonce.get_hash()
}

/// rustls needs one process-wide crypto provider when several are linked.
fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

#[async_trait]
impl checked::Backend for RedisStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            eval: true,
            eval_language: Some("lua"),
            // Depends on the server's persistence settings (AOF, RDB).
            durable: false,
            list_keys: !self.cluster,
            notifications: !self.cluster,
            ..Capabilities::server(BACKEND, ExpiryClock::Server, Duration::from_millis(1))
        }
    }

    async fn incr(&self, full: String) -> Result<i64> {
        self.send(Operation::Incr, command("INCR", &full)).await
    }

    async fn acquire_lock(&self, full: String, ttl: Duration) -> Result<Option<Lock>> {
        let op = Operation::AcquireLock;
        let ttl_ms = rules::ttl_millis(ttl);
        let fence = slots::fence_key(&full);
        let id = LockId::generate();
        let id_str = id.as_str();
        let token: Option<u64> = self
            .call(op, |c| {
                let mut inv = scripts().acquire.key(&full);
                inv.key(&fence).arg(id_str).arg(ttl_ms);
                Box::pin(async move { inv.invoke_async(c).await })
            })
            .await?;
        Ok(token.map(|t| Lock::new(id, t)))
    }

    async fn if_owner(&self, full: String, id: &LockId, then: IfOwner) -> Result<Option<bool>> {
        let (op, ttl) = (then.op(), then.ttl());
        let (script, ttl_ms) = match ttl {
            None => (&scripts().release, 0),
            Some(ttl) => (&scripts().extend, rules::ttl_millis(ttl)),
        };
        let id = id.as_str();
        // 1 = done, 0 = not held, 2 = another holds it.
        let code: i64 = self
            .call(op, |c| {
                let mut inv = script.key(&full);
                inv.arg(id).arg(ttl_ms);
                Box::pin(async move { inv.invoke_async(c).await })
            })
            .await?;
        Ok(ownership_from_code(Some(code)))
    }

    async fn get(&self, full: String) -> Result<Option<String>> {
        self.send(Operation::Get, command("GET", &full)).await
    }

    async fn write(&self, op: Operation, full: String, write: Write<'_>) -> Result<()> {
        let mut cmd = command("SET", &full);
        cmd.arg(write.value);
        if let Some(ttl) = write.ttl {
            cmd.arg("PX").arg(rules::ttl_millis(ttl));
        }
        self.send(op, cmd).await
    }

    async fn delete(&self, full: String) -> Result<bool> {
        let removed: i64 = self.send(Operation::Delete, command("DEL", &full)).await?;
        Ok(removed > 0)
    }

    async fn purge(&self, full: String) -> Result<()> {
        // Its companions share the key's slot, so one DEL serves them all.
        let fence = slots::fence_key(&full);
        let queue = slots::queue_keys(&full);
        let mut cmd = command("DEL", &full);
        cmd.arg(&fence).arg(&queue[..]);
        let _: i64 = self.send(Operation::Purge, cmd).await?;
        Ok(())
    }

    async fn compare_and_set(&self, full: String, swap: Swap<'_>) -> Result<bool> {
        let ttl_ms = swap.new.ttl.map_or(0, rules::ttl_millis);
        let replaced: i64 = self
            .call(Operation::CompareAndSet, |c| {
                let mut inv = scripts().compare_and_set.key(&full);
                inv.arg(if swap.expected.is_some() { "1" } else { "0" })
                    .arg(swap.expected.unwrap_or(""))
                    .arg(swap.new.value)
                    .arg(ttl_ms);
                Box::pin(async move { inv.invoke_async(c).await })
            })
            .await?;
        Ok(replaced == 1)
    }

    async fn assign_nonce(&self, full: String, pending: u64) -> Result<u64> {
        let op = Operation::AssignNonce;
        if pending > MAX_LUA_PENDING {
            return Err(Error::invalid(
                BACKEND,
                op,
                format!("pending {pending} is beyond the 15 digits assign_nonce supports on Redis"),
            ));
        }
        self.call(op, |c| {
            let mut inv = scripts().assign_nonce.key(&full);
            inv.arg(pending);
            Box::pin(async move { inv.invoke_async(c).await })
        })
        .await
    }

    async fn inspect(&self, full: String) -> Result<KeyInfo> {
        let op = Operation::Inspect;
        let fence = slots::fence_key(&full);
        let (value, pttl, token): (Option<String>, i64, Option<u64>) = self
            .call(op, |c| {
                let mut inv = scripts().inspect.key(&full);
                inv.key(&fence);
                Box::pin(async move { inv.invoke_async(c).await })
            })
            .await?;
        let ttl = (pttl >= 0).then(|| Duration::from_millis(pttl as u64));
        Ok(KeyInfo::new(value, ttl, token))
    }

    async fn keys(&self, full: String, limit: usize) -> Result<Vec<String>> {
        let op = Operation::Keys;
        let pattern: String = full
            .chars()
            .flat_map(|c| match c {
                '*' | '?' | '[' | ']' | '\\' => vec!['\\', c],
                c => vec![c],
            })
            .chain(std::iter::once('*'))
            .collect();
        let mut found = Vec::new();
        let mut cursor: u64 = 0;
        loop {
            let (next, batch): (u64, Vec<Vec<u8>>) = self
                .call(op, |c| {
                    let mut cmd = redis::cmd("SCAN");
                    cmd.arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000);
                    Box::pin(async move { cmd.query_async(c).await })
                })
                .await?;
            for raw in batch {
                // Skip fencing counters (they hold a NUL) and non-UTF-8 keys.
                if let Ok(k) = String::from_utf8(raw) {
                    if !k.contains('\0') && found.len() < limit {
                        found.push(k);
                    }
                }
            }
            cursor = next;
            if cursor == 0 || found.len() >= limit {
                return Ok(found);
            }
        }
    }

    async fn notify(&self, full: String) -> Result<()> {
        let op = Operation::Notify;
        let channel = format!("{NOTIFY_CHANNEL}{full}");
        let mut cmd = command("PUBLISH", &channel);
        cmd.arg("");
        let _: i64 = self.send(op, cmd).await?;
        Ok(())
    }

    async fn wait_notified(&self, full: String, timeout: Duration) -> Result<bool> {
        let op = Operation::WaitNotified;
        let channel = format!("{NOTIFY_CHANNEL}{full}");
        let notifier = self.notifier(op).await?;
        let notify = {
            let mut waiters = notifier.waiters.lock().unwrap_or_else(|e| e.into_inner());
            waiters.retain(|_, n| std::sync::Arc::strong_count(n) > 1);
            std::sync::Arc::clone(waiters.entry(channel).or_default())
        };
        Ok(tokio::time::timeout(timeout, notify.notified())
            .await
            .is_ok())
    }

    async fn lock_queue_enter(&self, full: String, entry: QueueEntry<'_>) -> Result<QueueTurn> {
        let fence = slots::fence_key(&full);
        let [queue, presence, tickets] = slots::queue_keys(&full);
        let ttl_ms = rules::ttl_millis(entry.ttl);
        let presence_ms = entry.presence.map_or(0, rules::ttl_millis);
        // Long enough that a live waiter always renews them first.
        let keep_ms = 3 * ttl_ms.max(presence_ms);
        let waiter = entry.waiter.as_str();
        let (held, n): (i64, u64) = self
            .call(Operation::AcquireLock, |c| {
                let mut inv = scripts().queue_enter.key(&full);
                inv.key(&fence).key(&queue).key(&presence).key(&tickets);
                inv.arg(waiter).arg(ttl_ms).arg(presence_ms).arg(keep_ms);
                Box::pin(async move { inv.invoke_async(c).await })
            })
            .await?;
        Ok(if held == 1 {
            QueueTurn::Acquired(Lock::new(entry.waiter.clone(), n))
        } else {
            QueueTurn::Waiting { ahead: n }
        })
    }

    async fn lock_queue_release(
        &self,
        full: String,
        id: &LockId,
        handover_ttl: Duration,
    ) -> Result<Handover> {
        let fence = slots::fence_key(&full);
        let [queue, presence, _] = slots::queue_keys(&full);
        // Cluster stores have no subscriber: their waiters poll.
        let channel = if self.cluster {
            String::new()
        } else {
            format!("{NOTIFY_CHANNEL}{full}{}", crate::lock::WAKE_SUFFIX)
        };
        let ttl_ms = rules::ttl_millis(handover_ttl);
        let (code, next, token): (i64, Option<String>, u64) = self
            .call(Operation::ReleaseLock, |c| {
                let mut inv = scripts().queue_release.key(&full);
                inv.key(&fence).key(&queue).key(&presence);
                inv.arg(id.as_str()).arg(ttl_ms).arg(&channel);
                Box::pin(async move { inv.invoke_async(c).await })
            })
            .await?;
        Ok(Handover {
            outcome: ReleaseOutcome::from_ownership(ownership_from_code(Some(code))),
            next: next.map(|waiter| HandedTo {
                waiter: LockId::from(waiter),
                fencing_token: token,
                valid_for: handover_ttl,
            }),
        })
    }

    fn unsupported(&self, op: Operation) -> Error {
        if op == Operation::Keys && self.cluster {
            let why = "listing keys on Redis Cluster needs a SCAN of every node; run `redis-cli --cluster call HOST:PORT SCAN …` instead";
            return Error::new(crate::ErrorKind::Unsupported, BACKEND, op, why);
        }
        Error::unsupported(BACKEND, op)
    }

    async fn eval(&self, script: &str, full: Vec<String>, args: &[&str]) -> Result<EvalValue> {
        let op = Operation::Eval;
        let script = std::sync::Arc::new(redis::Script::new(script));
        let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        let value: Value = self
            .call(op, |c| {
                let (script, full, args) = (script.clone(), full.clone(), args.clone());
                Box::pin(async move {
                    let mut inv = script.prepare_invoke();
                    for k in &full {
                        inv.key(k);
                    }
                    for a in &args {
                        inv.arg(a);
                    }
                    inv.invoke_async(c).await
                })
            })
            .await?;
        Ok(to_eval_value(value))
    }
}

checked_store!(RedisStore, BACKEND);

fn to_eval_value(value: Value) -> EvalValue {
    match value {
        Value::Nil => EvalValue::Nil,
        Value::Int(i) => EvalValue::Integer(i),
        Value::BulkString(bytes) => match String::from_utf8(bytes) {
            Ok(s) => EvalValue::Text(s),
            Err(e) => EvalValue::Bytes(e.into_bytes()),
        },
        Value::SimpleString(s) => EvalValue::Status(s),
        Value::Okay => EvalValue::Status("OK".into()),
        Value::Array(items) | Value::Set(items) => {
            EvalValue::Array(items.into_iter().map(to_eval_value).collect())
        }
        Value::Boolean(b) => EvalValue::Integer(b as i64),
        Value::Double(d) => EvalValue::Text(d.to_string()),
        Value::ServerError(e) => EvalValue::Error(e.to_string()),
        other => EvalValue::Text(format!("{other:?}")),
    }
}
