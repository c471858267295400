//! `etcd://host:port[,host:port…]`: etcd v3 (feature `etcd`).
//!
//! - Parameters: `prefix`, `timeout` (per request, default 5s),
//!   `connect_timeout` (default 2s); `etcds://` for TLS with `ca_file`.
//! - Keys are `{prefix}:{key}` in etcd's keyspace, values plain strings.
//! - `incr`, `compare_and_set` and `assign_nonce` read the key, then write
//!   in one transaction that compares its `mod_revision` (or absence); a
//!   failed compare proves nothing was written, so only that is retried.
//! - TTLs are leases, so the server's clock decides. etcd grants at least
//!   its minimum lease TTL (about 2 s with default election settings) and
//!   revokes expired leases every 500 ms, so the declared resolution is 3 s.
//!   A key overwritten or deleted gets its old lease revoked, so no lease
//!   outlives its key.
//! - A lock is a put that succeeds only when the key is absent (an expired
//!   lease has removed it); its **fencing token is the etcd revision** of
//!   that write, unique and rising across the whole cluster.
//! - Several endpoints: the store talks to one member at a time and moves to
//!   the next when a member cannot be reached.
//! - Failures (one table, `classify`): a client that could not connect
//!   (refused, DNS, TLS handshake) sent nothing, and every operation tries
//!   again. Any other `Unavailable`, and `DeadlineExceeded`, `Cancelled`
//!   (the client's timeout), `Unknown`, `Internal` and `Aborted`, may come
//!   after a commit (etcd's own "request timed out, possibly due to
//!   connection lost" is `Unavailable`): reads try again, writes end
//!   `OutcomeUnknown`. Every other status is the server's answer.
//! - The lock recipe's queue is native (see `queue.rs`): waiters are keys
//!   ordered by create revision, each on its own lease, and a release hands
//!   the lock to the first of them in one txn.

mod queue;

use std::fmt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, KeyValue, PutOptions,
    Txn, TxnOp, TxnOpResponse, TxnResponse,
};

use crate::url::StoreUrl;
use crate::retry::{self, with_retries, Failure};
use crate::rules;
use crate::backends::checked::{self, checked_store, IfOwner, Swap, Write};
use crate::{
    Capabilities, Error, ErrorKind, ExpiryClock, Handover, KeyInfo, Lock, LockId, Operation,
    QueueEntry, QueueTurn, Result,
};

const BACKEND: &str = "etcd";

/// The store behind `etcd://`.
pub struct EtcdStore {
    endpoints: Vec<String>,
    options: ConnectOptions,
    current: Mutex<Option<Client>>,
    connecting: tokio::sync::Mutex<()>,
    next_endpoint: AtomicUsize,
    timeout: Duration,
    prefix: String,
    redacted_url: String,
    queue: queue::QueueState,
    /// The lease notify keys share, and when it was granted.
    notify_lease: Mutex<Option<(i64, std::time::Instant)>>,
}

store_debug!(EtcdStore { url: redacted_url, prefix: prefix, timeout: timeout });

type EtcdFailure = Failure<etcd_client::Error>;

// gRPC status codes.
const CANCELLED: i32 = 1;
const UNKNOWN: i32 = 2;
const DEADLINE_EXCEEDED: i32 = 4;
const ABORTED: i32 = 10;
const INTERNAL: i32 = 13;
const UNAVAILABLE: i32 = 14;

/// Sort an etcd error into the retry policy's classes; the one table of
/// this backend (the module docs say why each row is where it is).
fn classify(e: etcd_client::Error) -> EtcdFailure {
    match &e {
        // Raised while setting up a channel, before any request.
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => {
            Failure::NotSent(e)
        }
        etcd_client::Error::GRpcStatus(status) => match status.code() as i32 {
            UNAVAILABLE if never_connected(status) => Failure::NotSent(e),
            // etcd's own Unavailable ("request timed out, possibly due to
            // connection lost", "leader changed") can follow a commit.
            UNAVAILABLE | DEADLINE_EXCEEDED | CANCELLED | UNKNOWN | INTERNAL | ABORTED => {
                Failure::Lost(Some(e))
            }
            _ => Failure::Reply(e),
        },
        _ => Failure::Reply(e),
    }
}

/// Did the client fail to open a connection (refused, DNS, TLS handshake)?
/// tonic reports that as `Unavailable` with its `ConnectError` in the
/// source chain; a status decoded from a server's reply has no source. The
/// type is private to tonic, so it is recognised by its name.
fn never_connected(status: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = status.source();
    while let Some(e) = next {
        if format!("{e:?}").starts_with("ConnectError(") {
            return true;
        }
        next = e.source();
    }
    false
}

fn into_error(f: EtcdFailure, op: Operation, timeout: Duration) -> Error {
    match f {
        Failure::NotSent(e) => crate::retry::not_sent(BACKEND, "etcd", op, short(e)),
        Failure::Lost(source) => {
            crate::retry::lost(BACKEND, "etcd", op, timeout, source.map(short))
        }
        Failure::Reply(e) => Error::new(
            ErrorKind::Backend,
            BACKEND,
            op,
            "etcd answered with an error",
        )
        .with_source(short(e)),
    }
}

/// An etcd error in one line: the gRPC code and message, then the causes
/// (tonic's own `Display` prints them in their debug form).
#[derive(Debug)]
struct EtcdError(String);

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for EtcdError {}

fn short(e: etcd_client::Error) -> EtcdError {
    use std::error::Error as _;
    let (mut text, mut next) = match &e {
        etcd_client::Error::GRpcStatus(s) => {
            (format!("{:?}: {}", s.code(), s.message()), s.source())
        }
        etcd_client::Error::TransportError(t) => (e.to_string(), t.source()),
        etcd_client::Error::IoError(io) => (e.to_string(), io.source()),
        _ => (e.to_string(), None),
    };
    while let Some(cause) = next {
        let part = cause.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        next = cause.source();
    }
    EtcdError(text)
}

fn lease_seconds(ttl: Duration) -> i64 {
    (rules::ttl_millis(ttl).div_ceil(1000)).max(1) as i64
}

impl EtcdStore {
    /// Open from a URL (see the module docs). Does not connect.
    pub fn open(url: &str) -> Result<Self> {
        let parsed = StoreUrl::parse(BACKEND, url, Some(&["timeout", "connect_timeout", "ca_file"]))?;
        let redacted_url = parsed.redacted().to_owned();
        let tls = match parsed.scheme.as_str() {
            "etcd" => false,
            "etcds" => true,
            _ => return Err(parsed.error(format!("`{redacted_url}` is not an etcd URL"))),
        };
        let prefix = parsed.prefix()?;
        let timeout = parsed.timeout(Duration::from_secs(5))?;
        let connect_timeout = parsed.connect_timeout(Duration::from_secs(2))?;
        let (userinfo, hosts) = match parsed.location.rsplit_once('@') {
            Some((u, h)) => (Some(u.to_owned()), h.to_owned()),
            None => (None, parsed.location.clone()),
        };
        let hosts = hosts.trim_end_matches('/');
        let scheme = if tls { "https" } else { "http" };
        let endpoints: Vec<String> = hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("{scheme}://{h}"))
            .collect();
        if endpoints.is_empty() || hosts.contains('/') {
            return Err(parsed.error(
                "etcd URLs look like etcd://host:port[,host:port…]",
            ));
        }
        let mut options = ConnectOptions::new()
            .with_timeout(timeout)
            .with_connect_timeout(connect_timeout);
        if let Some(userinfo) = userinfo {
            let (user, password) = userinfo.split_once(':').unwrap_or((&userinfo, ""));
            options = options.with_user(user, password);
        }
        if tls {
            let mut tls_options = etcd_client::TlsOptions::new();
            if let Some(path) = parsed.param("ca_file") {
                let pem = std::fs::read(path)
                    .map_err(|e| parsed.error(format!("cannot read ca_file {path}: {e}")))?;
                tls_options = tls_options.ca_certificate(etcd_client::Certificate::from_pem(pem));
            }
            options = options.with_tls(tls_options);
        } else if parsed.param("ca_file").is_some() {
            return Err(parsed.error("ca_file needs a TLS URL (etcds://)"));
        }
        Ok(EtcdStore {
            endpoints,
            options,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            next_endpoint: AtomicUsize::new(0),
            timeout,
            prefix,
            redacted_url,
            queue: Default::default(),
            notify_lease: Mutex::new(None),
        })
    }

    fn cached(&self) -> Option<Client> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// A client connected to one reachable member, trying each in turn.
    async fn client(&self) -> std::result::Result<Client, EtcdFailure> {
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.cached() {
            return Ok(c);
        }
        let mut last = None;
        for _ in 0..self.endpoints.len() {
            let i = self.next_endpoint.fetch_add(1, Ordering::Relaxed) % self.endpoints.len();
            match Client::connect([&self.endpoints[i]], Some(self.options.clone())).await {
                Ok(client) => {
                    *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
                    return Ok(client);
                }
                Err(e) => last = Some(e),
            }
        }
        Err(Failure::NotSent(last.unwrap_or_else(|| {
            etcd_client::Error::InvalidArgs("no etcd endpoint".into())
        })))
    }

    /// Forget the member in use so the next call tries the next one.
    fn fail_over(&self) {
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        self.queue.drop_watches();
    }

    /// Run one request under the retry policy of `op`.
    async fn call<T, F, Fut>(&self, op: Operation, request: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, etcd_client::Error>>,
    {
        with_retries(op, || async {
            let client = self.client().await?;
            match tokio::time::timeout(self.timeout + Duration::from_millis(500), request(client))
                .await
            {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => {
                    let f = classify(e);
                    if !matches!(f, Failure::Reply(_)) {
                        self.fail_over();
                    }
                    Err(f)
                }
                Err(_) => {
                    self.fail_over();
                    Err(Failure::Lost(None))
                }
            }
        })
        .await
        .map_err(|f| into_error(f, op, self.timeout))
    }

    async fn txn(&self, op: Operation, txn: Txn) -> Result<TxnResponse> {
        self.call(op, |mut c| {
            let txn = txn.clone();
            async move { c.txn(txn).await }
        })
        .await
    }

    async fn read(&self, op: Operation, full: &str) -> Result<Option<KeyValue>> {
        let read_op = crate::retry::read_step(op);
        let mut resp = self
            .call(read_op, |mut c| async move { c.get(full, None).await })
            .await?;
        Ok(resp.take_kvs().into_iter().next())
    }

    async fn grant(&self, op: Operation, ttl: Duration) -> Result<i64> {
        let seconds = lease_seconds(ttl);
        // A lease granted twice only leaves a spare that expires on its own.
        let grant_op = crate::retry::read_step(op);
        let resp = self
            .call(grant_op, |mut c| async move {
                c.lease_grant(seconds, None).await
            })
            .await?;
        Ok(resp.id())
    }

    /// Revoke leases whose keys are gone or rewritten (best effort: an
    /// unrevoked lease still expires at its TTL).
    async fn revoke(&self, leases: Vec<i64>) {
        for lease in leases {
            if lease == 0 {
                continue;
            }
            if let Some(mut c) = self.cached() {
                let _ = c.lease_revoke(lease).await;
            }
        }
    }

    /// The lease notify keys are put with, so that they go by themselves:
    /// one per store handle, granted again when half its life is gone.
    async fn notify_lease(&self, op: Operation) -> Result<i64> {
        const LIFE: Duration = Duration::from_secs(60);
        let current = *self.notify_lease.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((lease, granted)) = current {
            if granted.elapsed() < LIFE / 2 {
                return Ok(lease);
            }
        }
        let lease = self.grant(op, LIFE).await?;
        *self.notify_lease.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((lease, std::time::Instant::now()));
        Ok(lease)
    }

    pub(super) fn watch_ended(&self, op: Operation, cause: Option<etcd_client::Error>) -> Error {
        let e = Error::new(ErrorKind::Unavailable, BACKEND, op, "the etcd watch stream ended")
            .with_temporary(true);
        match cause {
            Some(cause) => e.with_source(short(cause)),
            None => e,
        }
    }

    /// [`revoke`](Self::revoke) in the background, off the caller's path.
    fn revoke_later(&self, leases: Vec<i64>) {
        let leases: Vec<i64> = leases.into_iter().filter(|&l| l != 0).collect();
        if leases.is_empty() {
            return;
        }
        if let Some(mut c) = self.cached() {
            tokio::spawn(async move {
                for lease in leases {
                    let _ = c.lease_revoke(lease).await;
                }
            });
        }
    }

    /// Read-modify-write of a counter-like value, compare-and-swapped on the
    /// key's `mod_revision`, keeping its lease (TTL).
    async fn update_number(
        &self,
        op: Operation,
        full: &str,
        next: impl Fn(Option<&str>) -> Result<String>,
    ) -> Result<String> {
        retry::until_written(BACKEND, op, || async {
            let kv = self.read(op, full).await?;
            let current = match &kv {
                Some(kv) => Some(
                    kv.value_str()
                        .map_err(|_| rules::not_an_integer(BACKEND, op))?,
                ),
                None => None,
            };
            let value = next(current)?;
            let (compare, lease) = match &kv {
                Some(kv) => (
                    Compare::mod_revision(full, CompareOp::Equal, kv.mod_revision()),
                    kv.lease(),
                ),
                None => (Compare::version(full, CompareOp::Equal, 0), 0),
            };
            let txn = Txn::new().when([compare]).and_then([TxnOp::put(
                full,
                value.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            )]);
            let resp = self.txn(op, txn).await?;
            Ok(resp.succeeded().then_some(value))
        })
        .await
    }

    /// Put `value` (with a fresh lease for `ttl`) when `compare` holds.
    /// Returns whether it did; revokes whichever lease ends up unused.
    async fn put_if(
        &self,
        op: Operation,
        full: &str,
        compare: Option<Compare>,
        value: &str,
        ttl: Option<Duration>,
    ) -> Result<(bool, i64)> {
        let lease = match ttl {
            Some(t) => self.grant(op, t).await?,
            None => 0,
        };
        let put = TxnOp::put(
            full,
            value,
            Some(PutOptions::new().with_lease(lease).with_prev_key()),
        );
        let txn = Txn::new()
            .when(compare.into_iter().collect::<Vec<_>>())
            .and_then([put]);
        let resp = match self.txn(op, txn).await {
            Ok(r) => r,
            Err(e) => {
                if e.kind() != ErrorKind::OutcomeUnknown {
                    self.revoke(vec![lease]).await;
                }
                return Err(e);
            }
        };
        if !resp.succeeded() {
            self.revoke(vec![lease]).await;
            return Ok((false, 0));
        }
        let previous_lease = resp.op_responses().into_iter().find_map(|r| match r {
            TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.lease()),
            _ => None,
        });
        self.revoke(previous_lease.filter(|&l| l != lease).into_iter().collect())
            .await;
        Ok((true, resp.header().map_or(0, |h| h.revision())))
    }
}

#[async_trait]
impl checked::Backend for EtcdStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            notifications: true,
            // Whole-second leases, revoked every 500 ms (see the module docs).
            ..Capabilities::server(BACKEND, ExpiryClock::Server, Duration::from_secs(3))
        }
    }

    async fn incr(&self, full: String) -> Result<i64> {
        let value = self
            .update_number(Operation::Incr, &full, |v| {
                rules::next_counter(BACKEND, v).map(|n| n.to_string())
            })
            .await?;
        Ok(value.parse().expect("written by next_counter"))
    }

    async fn acquire_lock(&self, full: String, ttl: Duration) -> Result<Option<Lock>> {
        let op = Operation::AcquireLock;
        let id = LockId::generate();
        let absent = Compare::version(full.as_str(), CompareOp::Equal, 0);
        let (taken, revision) = self
            .put_if(op, &full, Some(absent), id.as_str(), Some(ttl))
            .await?;
        Ok(taken.then(|| Lock::new(id, revision as u64)))
    }

    async fn if_owner(&self, full: String, id: &LockId, then: IfOwner) -> Result<Option<bool>> {
        let (op, ttl) = (then.op(), then.ttl());
        let held = Compare::value(full.as_str(), CompareOp::Equal, id.as_str());
        let (success, lease) = match ttl {
            None => (
                TxnOp::delete(full.as_str(), Some(DeleteOptions::new().with_prev_key())),
                0,
            ),
            Some(t) => {
                let lease = self.grant(op, t).await?;
                let put = TxnOp::put(
                    full.as_str(),
                    id.as_str(),
                    Some(PutOptions::new().with_lease(lease).with_prev_key()),
                );
                (put, lease)
            }
        };
        let txn = Txn::new()
            .when([held])
            .and_then([success])
            .or_else([TxnOp::get(full.as_str(), None)]);
        let resp = self.txn(op, txn).await?;
        let responses = resp.op_responses();
        if resp.succeeded() {
            let old: Vec<i64> = responses
                .into_iter()
                .flat_map(|r| match r {
                    TxnOpResponse::Put(p) => {
                        p.prev_key().map(|kv| kv.lease()).into_iter().collect()
                    }
                    TxnOpResponse::Delete(d) => d.prev_kvs().iter().map(|kv| kv.lease()).collect(),
                    _ => Vec::new(),
                })
                .filter(|&l| l != lease)
                .collect();
            self.revoke(old).await;
            return Ok(Some(true));
        }
        self.revoke(vec![lease]).await;
        let present = responses
            .into_iter()
            .any(|r| matches!(r, TxnOpResponse::Get(g) if !g.kvs().is_empty()));
        Ok(present.then_some(false))
    }

    async fn get(&self, full: String) -> Result<Option<String>> {
        Ok(self
            .read(Operation::Get, &full)
            .await?
            .map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
    }

    async fn write(&self, op: Operation, full: String, write: Write<'_>) -> Result<()> {
        self.put_if(op, &full, None, write.value, write.ttl)
            .await
            .map(|_| ())
    }

    async fn delete(&self, full: String) -> Result<bool> {
        let op = Operation::Delete;
        let resp = self
            .call(op, |mut c| {
                let full = full.clone();
                async move {
                    c.delete(full, Some(DeleteOptions::new().with_prev_key()))
                        .await
                }
            })
            .await?;
        let mut leases = Vec::new();
        for kv in resp.prev_kvs() {
            leases.push(kv.lease());
        }
        self.revoke(leases).await;
        Ok(resp.deleted() > 0)
    }

    async fn compare_and_set(&self, full: String, swap: Swap<'_>) -> Result<bool> {
        let compare = match swap.expected {
            Some(v) => Compare::value(full.as_str(), CompareOp::Equal, v),
            None => Compare::version(full.as_str(), CompareOp::Equal, 0),
        };
        let Write { value, ttl } = swap.new;
        let op = Operation::CompareAndSet;
        Ok(self.put_if(op, &full, Some(compare), value, ttl).await?.0)
    }

    async fn assign_nonce(&self, full: String, pending: u64) -> Result<u64> {
        let op = Operation::AssignNonce;
        let value = self
            .update_number(op, &full, |v| {
                rules::next_nonce(BACKEND, v, pending).map(|n| n.to_string())
            })
            .await?;
        Ok(value.parse().expect("written by next_nonce"))
    }

    async fn inspect(&self, full: String) -> Result<KeyInfo> {
        let op = Operation::Inspect;
        let reads = [
            TxnOp::get(full.as_str(), None),
            TxnOp::get(queue::marker_key(&full), None),
        ];
        let resp = self.txn(op, Txn::new().and_then(reads)).await?;
        let mut found = resp.op_responses().into_iter().map(|r| match r {
            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
            _ => None,
        });
        let (Some(kv), marker) = (found.next().flatten(), found.next().flatten()) else {
            // The revision that took a released lock is gone with the key.
            return Ok(KeyInfo::default());
        };
        let ttl = if kv.lease() == 0 {
            None
        } else {
            let lease = kv.lease();
            let resp = self
                .call(op, |mut c| async move {
                    c.lease_time_to_live(lease, None).await
                })
                .await?;
            Some(Duration::from_secs(resp.ttl().max(0) as u64))
        };
        Ok(KeyInfo::new(
            Some(String::from_utf8_lossy(kv.value()).into_owned()),
            ttl,
            Some(queue::token_of(&kv, marker.as_ref())),
        ))
    }

    async fn keys(&self, full: String, limit: usize) -> Result<Vec<String>> {
        let op = Operation::Keys;
        let limit = limit.min(i64::MAX as usize) as i64;
        // The lock queue's own keys start with NUL, where user keys cannot:
        // with an empty prefix, start past them.
        let (start, options) = match full.as_str() {
            "" => ("\u{1}", GetOptions::new().with_from_key()),
            start => (start, GetOptions::new().with_prefix()),
        };
        let options = options.with_keys_only().with_limit(limit);
        let mut resp = self
            .call(op, |mut c| {
                let options = options.clone();
                async move { c.get(start, Some(options)).await }
            })
            .await?;
        Ok(resp
            .take_kvs()
            .into_iter()
            .filter_map(|kv| kv.key_str().ok().map(str::to_owned))
            .collect())
    }

    async fn purge(&self, full: String) -> Result<()> {
        let (start, end, marker) = queue::queue_keys(&full);
        let txn = Txn::new().and_then([
            TxnOp::delete(full.as_str(), Some(DeleteOptions::new().with_prev_key())),
            TxnOp::delete(marker, None),
            TxnOp::delete(queue::notify_key(&full), None),
            TxnOp::delete(start, Some(DeleteOptions::new().with_range(end).with_prev_key())),
        ]);
        let resp = self.txn(Operation::Purge, txn).await?;
        let leases = resp
            .op_responses()
            .into_iter()
            .flat_map(|r| match r {
                TxnOpResponse::Delete(d) => d.prev_kvs().iter().map(|kv| kv.lease()).collect(),
                _ => Vec::new(),
            })
            .collect();
        self.revoke(leases).await;
        Ok(())
    }

    async fn notify(&self, full: String) -> Result<()> {
        let op = Operation::Notify;
        let lease = self.notify_lease(op).await?;
        let put = TxnOp::put(
            queue::notify_key(&full),
            "",
            Some(PutOptions::new().with_lease(lease)),
        );
        self.txn(op, Txn::new().and_then([put])).await.map(drop)
    }

    async fn wait_notified(&self, full: String, timeout: Duration) -> Result<bool> {
        self.wait_woken(&full, timeout).await
    }

    async fn lock_queue_enter(&self, full: String, entry: QueueEntry<'_>) -> Result<QueueTurn> {
        self.queue_enter(&full, entry).await
    }

    async fn lock_queue_release(
        &self,
        full: String,
        id: &LockId,
        handover_ttl: Duration,
    ) -> Result<Handover> {
        self.queue_release(&full, id, handover_ttl).await
    }
}

checked_store!(EtcdStore, BACKEND);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::ErrorKind as Io;

    fn class(f: &EtcdFailure) -> &'static str {
        match f {
            Failure::NotSent(_) => "not sent",
            Failure::Lost(_) => "lost",
            Failure::Reply(_) => "reply",
        }
    }

    fn code(e: &etcd_client::Error) -> i32 {
        match e {
            etcd_client::Error::GRpcStatus(s) => s.code() as i32,
            other => panic!("not a gRPC status: {other}"),
        }
    }

    /// A status as decoded from a server's reply: a code and a message, no
    /// source. tonic's `From<io::Error>` builds exactly that; the io kind
    /// only picks the code.
    fn from_server(kind: Io, message: &str) -> etcd_client::Error {
        etcd_client::Error::GRpcStatus(std::io::Error::new(kind, message).into())
    }

    #[test]
    fn statuses_from_the_server() {
        // (io kind giving the code, etcd's message, gRPC code, class)
        let rows = [
            (
                Io::ConnectionRefused,
                "etcdserver: request timed out, possibly due to connection lost",
                UNAVAILABLE,
                "lost",
            ),
            (
                Io::ConnectionReset,
                "etcdserver: request timed out",
                UNAVAILABLE,
                "lost",
            ),
            (
                Io::NotConnected,
                "etcdserver: leader changed",
                UNAVAILABLE,
                "lost",
            ),
            (
                Io::AddrNotAvailable,
                "etcdserver: no leader",
                UNAVAILABLE,
                "lost",
            ),
            (
                Io::TimedOut,
                "context deadline exceeded",
                DEADLINE_EXCEEDED,
                "lost",
            ),
            (Io::BrokenPipe, "transport is closing", INTERNAL, "lost"),
            (Io::Other, "unexpected", UNKNOWN, "lost"),
            (Io::ConnectionAborted, "aborted", ABORTED, "lost"),
            (
                Io::InvalidInput,
                "etcdserver: key is not provided",
                3,
                "reply",
            ),
            (
                Io::NotFound,
                "etcdserver: requested lease not found",
                5,
                "reply",
            ),
            (
                Io::PermissionDenied,
                "etcdserver: permission denied",
                7,
                "reply",
            ),
            (
                Io::UnexpectedEof,
                "etcdserver: mvcc: required revision is a future revision",
                11,
                "reply",
            ),
        ];
        for (kind, message, want_code, want) in rows {
            let e = from_server(kind, message);
            assert_eq!(code(&e), want_code, "{message}");
            assert_eq!(class(&classify(e)), want, "{message}");
        }
    }

    #[test]
    fn errors_raised_before_a_request() {
        let io = etcd_client::Error::IoError(std::io::Error::from(Io::ConnectionRefused));
        assert_eq!(class(&classify(io)), "not sent");
    }

    #[tokio::test]
    async fn errors_of_setting_up_a_client() {
        // Real values from etcd-client's own checks.
        let no_key = ConnectOptions::new().with_tls(
            etcd_client::TlsOptions::new()
                .identity(etcd_client::Identity::from_pem("no certificate", "no key")),
        );
        let e = Client::connect(["https://127.0.0.1:1"], Some(no_key))
            .await
            .err()
            .expect("a client identity without a key is refused");
        assert!(matches!(e, etcd_client::Error::TransportError(_)), "{e:?}");
        assert_eq!(class(&classify(e)), "not sent");
        let e = Client::connect(Vec::<String>::new(), None)
            .await
            .err()
            .expect("no endpoints");
        assert!(matches!(e, etcd_client::Error::InvalidArgs(_)), "{e:?}");
        assert_eq!(class(&classify(e)), "reply");
    }

    /// One `get` through a real client to `port`, with short timeouts.
    async fn get_through(url: String) -> etcd_client::Error {
        let options = ConnectOptions::new()
            .with_timeout(Duration::from_millis(500))
            .with_connect_timeout(Duration::from_millis(300));
        let options = if url.starts_with("https") {
            options.with_tls(etcd_client::TlsOptions::new())
        } else {
            options
        };
        let mut client = Client::connect([url], Some(options)).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), client.get("k", None))
            .await
            .expect("the client gave up by itself")
            .expect_err("no etcd there")
    }

    /// A listener on 127.0.0.1 that does `each` with every connection.
    async fn listener<F, Fut>(each: F) -> u16
    where
        F: Fn(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = l.local_addr().unwrap().port();
        tokio::spawn(async move {
            while let Ok((socket, _)) = l.accept().await {
                tokio::spawn(each(socket));
            }
        });
        port
    }

    #[tokio::test]
    async fn errors_are_one_short_line() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = get_through(format!("http://127.0.0.1:{port}")).await;
        let e = into_error(classify(e), Operation::Get, Duration::from_secs(1)).to_string();
        assert_eq!(e, "etcd get failed (unavailable): could not reach etcd; nothing was applied: Unavailable: tcp connect error: transport error: Connection refused (os error 111)");
        let e = from_server(Io::ConnectionRefused, ETCD_TIMED_OUT);
        let e = into_error(classify(e), Operation::Incr, Duration::from_secs(1)).to_string();
        assert!(
            e.ends_with(&format!("not resent: Unavailable: {ETCD_TIMED_OUT}")),
            "{e}"
        );
    }

    const ETCD_TIMED_OUT: &str = "etcdserver: request timed out, possibly due to connection lost";

    #[tokio::test]
    async fn a_refused_connection_is_not_sent() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let e = get_through(format!("http://127.0.0.1:{port}")).await;
        assert_eq!(code(&e), UNAVAILABLE, "{e:?}");
        assert_eq!(class(&classify(e)), "not sent");
    }

    #[tokio::test]
    async fn a_failed_tls_handshake_is_not_sent() {
        use tokio::io::AsyncWriteExt;
        let port = listener(|mut s| async move {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
        })
        .await;
        let e = get_through(format!("https://127.0.0.1:{port}")).await;
        assert_eq!(code(&e), UNAVAILABLE, "{e:?}");
        assert_eq!(class(&classify(e)), "not sent");
    }

    #[tokio::test]
    async fn a_silent_server_is_a_lost_reply() {
        let port = listener(|s| async move {
            tokio::time::sleep(Duration::from_secs(30)).await;
            drop(s);
        })
        .await;
        let e = get_through(format!("http://127.0.0.1:{port}")).await;
        assert_eq!(code(&e), CANCELLED, "{e:?}");
        assert_eq!(class(&classify(e)), "lost");
    }

    #[tokio::test]
    async fn a_connection_closed_after_the_request_is_a_lost_reply() {
        use tokio::io::AsyncReadExt;
        let port = listener(|mut s| async move {
            // Read until the request's bytes arrive, then hang up.
            let mut seen = 0;
            let mut buf = [0u8; 4096];
            while seen < 100 {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => seen += n,
                }
            }
        })
        .await;
        let e = get_through(format!("http://127.0.0.1:{port}")).await;
        assert_eq!(class(&classify(e)), "lost");
    }
}
