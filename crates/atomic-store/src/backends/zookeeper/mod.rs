//! `zk://host:port[,host:port…][/chroot]`: ZooKeeper 3.5+ (feature
//! `zookeeper`).
//!
//! # Layout
//! Each key is one znode, `/atomic-store/{name}` under the chroot, where
//! `name` is `{prefix}:{key}` with every byte outside `[A-Za-z0-9_:-]`
//! written as `%XX`: injective and reversible, so `/`, `.`, `..`,
//! `zookeeper` and any unicode become valid node names (a 1024-byte key is
//! at most 3 KiB of name). The data is a 17-byte header (format byte:
//! value or tombstone, deadline in server milliseconds or 0, fencing token
//! or 0) and the value.
//!
//! # Time and TTLs
//! ZooKeeper reaps TTL nodes lazily (every `znode.container.checkIntervalMs`,
//! and only when they have no children), so expiry is decided when reading:
//! a key is dead once the **server's** clock passes its deadline. The store
//! tracks the server's clock by writing a clock node and reading the `mtime`
//! the leader stamps on it (every 5 s), so any skew between client and
//! server clocks is measured and cancelled. Each write is timed alone, a
//! round trip over 200 ms is not used, and the estimate runs on this
//! machine's monotonic clock, so a wall-clock step here does not move it;
//! its error is half the round trip plus drift. A lock is taken over only
//! 250 ms plus that error after its deadline; the declared resolution
//! (650 ms) covers that margin and the errors on both sides.
//!
//! # Writes
//! Every change is compare-and-swap on the znode's data version: `create`
//! for a missing node, `setData(version)` otherwise, retried only on
//! `BadVersion` / `NodeExists` / `NoNode`, which prove nothing was written.
//! Nodes are never deleted or recreated by the store: a delete, a release
//! or an expiry leaves a tombstone. A recreated node would restart at
//! version 0, and a writer holding an old read of version 0 could then
//! overwrite the new node (ABA). For the same reason the store does not use
//! ZooKeeper's TTL nodes, whose reaper deletes nodes. The cost: one small
//! node per distinct key ever written.
//! The **fencing token is the zxid** of the write that took the lock
//! (`mzxid`), kept in the header when `extend_lock` rewrites the node.
//!
//! # The lock recipe's queue
//! Native (see `queue.rs`): waiters are ephemeral sequential children of
//! the lock's znode, and a release hands the lock over in one multi. It
//! needs multi-read (3.6+); before that the recipe keeps its plain-key
//! queue.
//!
//! # Sessions
//! A lost connection is resumed by the client; an expired session is
//! replaced by a new one on the next call.
//!
//! # Parameters
//! `prefix`; `timeout` per request (default 5s); `connect_timeout` (default
//! 2s), one budget for connecting across a call's attempts, so a server out
//! of reach fails a call within it; `session_timeout` (default 10s).

mod queue;

use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use zookeeper_client as zk;

use crate::clock::{self, ServerClock, ServerTime, Unread};
use crate::url::StoreUrl;
use crate::retry::{self, with_retries, Failure};
use crate::rules;
use crate::backends::checked::{self, checked_store, IfOwner, Swap, Write};
use crate::{
    Capabilities, Error, ErrorKind, ExpiryClock, Handover, KeyInfo, Lock, LockId, Operation,
    QueueEntry, QueueTurn, Result,
};

const BACKEND: &str = "zookeeper";
const DATA_DIR: &str = "/atomic-store";
const CLOCK_NODE: &str = "/atomic-store-clock";
const HEADER: usize = 17;
const VALUE: u8 = 1;
const TOMBSTONE: u8 = 2;

/// Encode a full key as one znode name (see the module docs).
pub fn encode_name(full_key: &str) -> String {
    let mut out = String::with_capacity(full_key.len());
    for b in full_key.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'_' | b':' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode_name`]; `None` for names it did not make.
pub fn decode_name(name: &str) -> Option<String> {
    let bytes = name.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = name.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// A decoded znode.
#[derive(Debug, Clone)]
struct Node {
    present: bool,
    value: String,
    deadline: i64,
    token: u64,
    stat: zk::Stat,
}

impl Node {
    fn fencing_token(&self) -> u64 {
        if self.token != 0 {
            self.token
        } else {
            self.stat.mzxid as u64
        }
    }
}

fn encode_data(value: &str, deadline: i64, token: u64) -> Vec<u8> {
    let mut data = Vec::with_capacity(HEADER + value.len());
    data.push(VALUE);
    data.extend_from_slice(&deadline.to_be_bytes());
    data.extend_from_slice(&token.to_be_bytes());
    data.extend_from_slice(value.as_bytes());
    data
}

fn tombstone() -> Vec<u8> {
    let mut data = encode_data("", 0, 0);
    data[0] = TOMBSTONE;
    data
}

fn decode_data(data: &[u8], stat: zk::Stat) -> Option<Node> {
    if data.len() < HEADER || !matches!(data[0], VALUE | TOMBSTONE) {
        return None;
    }
    Some(Node {
        present: data[0] == VALUE,
        deadline: i64::from_be_bytes(data[1..9].try_into().ok()?),
        token: u64::from_be_bytes(data[9..17].try_into().ok()?),
        value: String::from_utf8(data[HEADER..].to_vec()).ok()?,
        stat,
    })
}

type ZkFailure = Failure<zk::Error>;

/// ZooKeeper's own codes for a lost connection and a timed-out operation.
const CONNECTION_LOSS_CODE: i32 = -4;
const OPERATION_TIMEOUT_CODE: i32 = -7;

/// Which failures may have been applied. The client reports a broken
/// connection (reset, broken pipe, a reply it cannot match) as `Custom` or
/// `UnexpectedError`: the requests in flight on it are lost replies.
fn classify(e: zk::Error) -> ZkFailure {
    match e {
        zk::Error::NoHosts | zk::Error::ClientClosed | zk::Error::Throttled => Failure::NotSent(e),
        zk::Error::ConnectionLoss
        | zk::Error::Timeout
        | zk::Error::SessionExpired
        | zk::Error::SessionMoved
        | zk::Error::Custom(_)
        | zk::Error::UnexpectedError(_) => Failure::Lost(Some(e)),
        zk::Error::UnexpectedErrorCode(CONNECTION_LOSS_CODE | OPERATION_TIMEOUT_CODE) => {
            Failure::Lost(Some(e))
        }
        _ => Failure::Reply(e),
    }
}

fn into_error(f: ZkFailure, op: Operation, timeout: Duration) -> Error {
    match f {
        Failure::NotSent(e) => crate::retry::not_sent(BACKEND, "ZooKeeper", op, e),
        Failure::Lost(source) => crate::retry::lost(BACKEND, "ZooKeeper", op, timeout, source),
        // Only connecting answers `NoNode` (see `client` and `call`).
        Failure::Reply(zk::Error::NoNode) => Error::new(
            ErrorKind::Configuration,
            BACKEND,
            op,
            "ZooKeeper has no node at the URL's chroot path: create it (zkCli.sh create /PATH), or fix the path in the URL",
        ),
        Failure::Reply(e) => Error::new(
            ErrorKind::Backend,
            BACKEND,
            op,
            "ZooKeeper answered with an error",
        )
        .with_source(e),
    }
}

/// What a conditional write found.
enum Written {
    Done(zk::Stat),
    Conflict,
}

/// Where the store's ZooKeeper session stands; see
/// [`ZookeeperStore::session`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionStatus {
    /// Connected to a server.
    Connected,
    /// Between servers: the client is reconnecting, the session lives on.
    Disconnected,
    /// The session expired; the next call opens a new one.
    Expired,
    /// Closed, or its credentials were refused; the next call opens a new
    /// one.
    Closed,
}

/// The store behind `zk://`.
pub struct ZookeeperStore {
    hosts: String,
    session_timeout: Duration,
    timeout: Duration,
    connect_timeout: Duration,
    current: Mutex<Option<zk::Client>>,
    connecting: tokio::sync::Mutex<()>,
    clock: ServerClock,
    prefix: String,
    redacted_url: String,
    queue: queue::QueueState,
}

store_debug!(ZookeeperStore { url: redacted_url, prefix: prefix, timeout: timeout });

impl ZookeeperStore {
    /// Open from a URL (see the module docs). Does not connect.
    pub fn open(url: &str) -> Result<Self> {
        let parsed = StoreUrl::parse(BACKEND, url, Some(&["timeout", "connect_timeout", "session_timeout"]))?;
        let redacted_url = parsed.redacted().to_owned();
        let prefix = parsed.prefix()?;
        let timeout = parsed.timeout(Duration::from_secs(5))?;
        let session_timeout = parsed.positive_duration("session_timeout", Duration::from_secs(10))?;
        let connect_timeout = parsed.connect_timeout(Duration::from_secs(2))?;
        let hosts = parsed.location.clone();
        if hosts.is_empty() || hosts.starts_with('/') {
            return Err(parsed.error(
                "ZooKeeper URLs look like zk://host:port[,host:port…][/chroot]",
            ));
        }
        Ok(ZookeeperStore {
            hosts,
            session_timeout,
            timeout,
            connect_timeout,
            current: Mutex::new(None),
            connecting: tokio::sync::Mutex::new(()),
            clock: ServerClock::default(),
            prefix,
            redacted_url,
            queue: Default::default(),
        })
    }

    /// The id of the session in use and where it stands, for diagnostics
    /// and tests; `None` before the first call.
    pub fn session(&self) -> Option<(i64, SessionStatus)> {
        let client = self.cached()?;
        let status = match client.state() {
            zk::SessionState::SyncConnected | zk::SessionState::ConnectedReadOnly => {
                SessionStatus::Connected
            }
            zk::SessionState::Disconnected => SessionStatus::Disconnected,
            zk::SessionState::Expired => SessionStatus::Expired,
            _ => SessionStatus::Closed,
        };
        Some((client.session_id().0, status))
    }

    fn cached(&self) -> Option<zk::Client> {
        self.current
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The session, connecting first if there is none. Connecting stops at
    /// `deadline`: one budget for all of a call's attempts, so a server out
    /// of reach fails one call within `connect_timeout`.
    async fn client(&self, deadline: Instant) -> std::result::Result<zk::Client, ZkFailure> {
        if let Some(c) = self.cached() {
            if !matches!(
                c.state(),
                zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
            ) {
                return Ok(c);
            }
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.cached() {
            if !matches!(
                c.state(),
                zk::SessionState::Expired | zk::SessionState::Closed | zk::SessionState::AuthFailed
            ) {
                return Ok(c);
            }
        }
        let budget = deadline.saturating_duration_since(Instant::now());
        if budget.is_zero() {
            return Err(Failure::NotSent(zk::Error::ConnectionLoss));
        }
        let connect = zk::Client::connector()
            .with_session_timeout(self.session_timeout)
            .with_connection_timeout(budget)
            .connect(&self.hosts);
        // `NoNode` while connecting or creating our nodes: the URL's chroot
        // does not exist. A final answer, not a server out of reach.
        let client = match tokio::time::timeout(budget, connect).await {
            Ok(Ok(c)) => c,
            Ok(Err(zk::Error::NoNode)) => return Err(Failure::Reply(zk::Error::NoNode)),
            Ok(Err(e)) => return Err(Failure::NotSent(e)),
            Err(_) => return Err(Failure::NotSent(zk::Error::Timeout)),
        };
        let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
        for dir in [DATA_DIR, CLOCK_NODE, queue::NOTIFY_DIR] {
            match client.create(dir, &[], &open).await {
                Ok(_) | Err(zk::Error::NodeExists) => {}
                Err(zk::Error::NoNode) => return Err(Failure::Reply(zk::Error::NoNode)),
                Err(e) => return Err(Failure::NotSent(e)),
            }
        }
        *self.current.lock().unwrap_or_else(|e| e.into_inner()) = Some(client.clone());
        self.clock.reset();
        Ok(client)
    }

    /// Run one request under the retry policy of `op`.
    async fn call<T, F, Fut>(&self, op: Operation, request: F) -> Result<T>
    where
        F: Fn(zk::Client) -> Fut,
        Fut: std::future::Future<Output = std::result::Result<T, zk::Error>>,
    {
        let deadline = Instant::now() + self.connect_timeout;
        with_retries(op, || async {
            let client = self.client(deadline).await?;
            match tokio::time::timeout(self.timeout, request(client)).await {
                Ok(Ok(v)) => Ok(v),
                // Requests handle `NoNode` of data nodes themselves; here it
                // means our clock node or data directory was removed. The
                // next attempt connects afresh, which creates them again.
                Ok(Err(zk::Error::NoNode)) => {
                    *self.current.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    Err(Failure::NotSent(zk::Error::NoNode))
                }
                // An expired or closed session stays until the next call
                // replaces it (see `client`), so `session` can show it.
                Ok(Err(e)) => Err(classify(e)),
                Err(_) => Err(Failure::Lost(None)),
            }
        })
        .await
        .map_err(|f| into_error(f, op, self.timeout))
    }

    /// The server's clock now, and how far off the estimate may be (see
    /// [`ServerClock::read`]): each clock-node write is timed alone, not
    /// the retries or the connecting around it.
    async fn server_now(&self, op: Operation) -> Result<ServerTime> {
        let read_op = crate::retry::read_step(op);
        let sample = || async {
            let (sent, stat, received) = self
                .call(read_op, |c| async move {
                    let sent = Instant::now();
                    let stat = c.set_data(CLOCK_NODE, &[], None).await?;
                    Ok((sent, stat, Instant::now()))
                })
                .await?;
            Ok((sent, stat.mtime, received))
        };
        self.clock.read(sample).await.map_err(|why| match why {
            Unread::Failed(e) => e,
            Unread::TooSlow => Error::new(
                ErrorKind::Unavailable,
                BACKEND,
                op,
                format!(
                    "ZooKeeper's clock could not be read: {} replies in a row took over {:?}; nothing was applied",
                    clock::SAMPLE_TRIES,
                    clock::MAX_ROUND_TRIP
                ),
            ),
        })
    }

    /// The node at `path`, live or not (`None`: missing).
    async fn read(&self, op: Operation, path: &str) -> Result<Option<Node>> {
        let read_op = crate::retry::read_step(op);
        let got = self
            .call(read_op, |c| async move {
                match c.get_data(path).await {
                    Ok(r) => Ok(Some(r)),
                    Err(zk::Error::NoNode) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(match got {
            None => None,
            Some((data, stat)) => Some(decode_data(&data, stat).ok_or_else(|| {
                Error::new(
                    ErrorKind::Backend,
                    BACKEND,
                    op,
                    format!("{path} was not written by atomic-store"),
                )
            })?),
        })
    }

    /// The live node at `path`, the node, and the server time it was
    /// judged at.
    async fn read_live(
        &self,
        op: Operation,
        path: &str,
    ) -> Result<(Option<Node>, Option<Node>, ServerTime)> {
        let node = self.read(op, path).await?;
        let now = self.server_now(op).await?;
        let live = node
            .clone()
            .filter(|n| n.present && (n.deadline == 0 || n.deadline > now.ms));
        Ok((live, node, now))
    }

    /// Write `data` at `path`: create it if `current` is missing, else set
    /// it at `current`'s version.
    async fn replace(
        &self,
        op: Operation,
        path: &str,
        current: Option<&Node>,
        data: Vec<u8>,
    ) -> Result<Written> {
        let version = current.map(|n| n.stat.version);
        self.call(op, |c| {
            let data = data.clone();
            async move {
                let written = match version {
                    None => {
                        let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                        c.create(path, &data, &options).await.map(|(stat, _)| stat)
                    }
                    Some(v) => c.set_data(path, &data, Some(v)).await,
                };
                match written {
                    Ok(stat) => Ok(Written::Done(stat)),
                    Err(zk::Error::NodeExists | zk::Error::BadVersion | zk::Error::NoNode) => {
                        Ok(Written::Conflict)
                    }
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// Leave a tombstone at `current`'s version; false on a conflict.
    async fn bury(&self, op: Operation, path: &str, current: &Node) -> Result<bool> {
        Ok(matches!(
            self.replace(op, path, Some(current), tombstone()).await?,
            Written::Done(_)
        ))
    }

    async fn update_number(
        &self,
        op: Operation,
        full: String,
        next: impl Fn(Option<&str>) -> Result<i64>,
    ) -> Result<i64> {
        let path = node_path(&full);
        retry::until_written(BACKEND, op, || async {
            let (live, node, _) = self.read_live(op, &path).await?;
            let value = next(live.as_ref().map(|n| n.value.as_str()))?;
            let deadline = live.as_ref().map_or(0, |n| n.deadline);
            let data = encode_data(&value.to_string(), deadline, 0);
            if let Written::Done(_) = self.replace(op, &path, node.as_ref(), data).await? {
                return Ok(Some(value));
            }
            Ok(None)
        })
        .await
    }

    /// Write `write` to `path`; when `expected` is given, only if the live
    /// value equals it. Returns whether it wrote.
    async fn put(
        &self,
        op: Operation,
        path: &str,
        expected: Option<Option<&str>>,
        write: Write<'_>,
    ) -> Result<bool> {
        retry::until_written(BACKEND, op, || async {
            let (live, node, now) = self.read_live(op, path).await?;
            if expected.is_some_and(|e| live.as_ref().map(|n| n.value.as_str()) != e) {
                return Ok(Some(false));
            }
            let deadline = write.ttl.map_or(0, |t| now.ms + rules::ttl_millis(t) as i64);
            let data = encode_data(write.value, deadline, 0);
            if let Written::Done(_) = self.replace(op, path, node.as_ref(), data).await? {
                return Ok(Some(true));
            }
            Ok(None)
        })
        .await
    }
}

/// The znode of a stored key.
fn node_path(full: &str) -> String {
    format!("{DATA_DIR}/{}", encode_name(full))
}

#[async_trait]
impl checked::Backend for ZookeeperStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            notifications: true,
            ..Capabilities::server(BACKEND, ExpiryClock::Server, clock::TTL_RESOLUTION)
        }
    }

    async fn incr(&self, full: String) -> Result<i64> {
        self.update_number(Operation::Incr, full, |v| rules::next_counter(BACKEND, v))
            .await
    }

    async fn acquire_lock(&self, full: String, ttl: Duration) -> Result<Option<Lock>> {
        let op = Operation::AcquireLock;
        let path = node_path(&full);
        let id = LockId::generate();
        let token = retry::until_written(BACKEND, op, || async {
            let (_, node, now) = self.read_live(op, &path).await?;
            // An expired lock waits out the takeover margin (this
            // estimate's error included) before another owner may take it.
            let held = node
                .as_ref()
                .is_some_and(|n| n.present && (n.deadline == 0 || !now.may_take_over(n.deadline)));
            if held {
                return Ok(Some(None));
            }
            let deadline = now.ms + rules::ttl_millis(ttl) as i64;
            let data = encode_data(id.as_str(), deadline, 0);
            if let Written::Done(stat) = self.replace(op, &path, node.as_ref(), data).await? {
                return Ok(Some(Some(stat.mzxid as u64)));
            }
            Ok(None)
        })
        .await?;
        Ok(token.map(|t| Lock::new(id, t)))
    }

    async fn if_owner(&self, full: String, id: &LockId, then: IfOwner) -> Result<Option<bool>> {
        let (op, ttl) = (then.op(), then.ttl());
        let path = node_path(&full);
        retry::until_written(BACKEND, op, || async {
            let (live, _, now) = self.read_live(op, &path).await?;
            let Some(node) = live else {
                return Ok(Some(None));
            };
            if node.value != id.as_str() {
                return Ok(Some(Some(false)));
            }
            let done = match ttl {
                None => self.bury(op, &path, &node).await?,
                Some(ttl) => {
                    let deadline = now.ms + rules::ttl_millis(ttl) as i64;
                    let data = encode_data(&node.value, deadline, node.fencing_token());
                    let written = self.replace(op, &path, Some(&node), data).await?;
                    matches!(written, Written::Done(_))
                }
            };
            Ok(done.then_some(Some(true)))
        })
        .await
    }

    async fn get(&self, full: String) -> Result<Option<String>> {
        let path = node_path(&full);
        Ok(self
            .read_live(Operation::Get, &path)
            .await?
            .0
            .map(|n| n.value))
    }

    async fn write(&self, op: Operation, full: String, write: Write<'_>) -> Result<()> {
        self.put(op, &node_path(&full), None, write).await.map(|_| ())
    }

    async fn delete(&self, full: String) -> Result<bool> {
        let op = Operation::Delete;
        let path = node_path(&full);
        retry::until_written(BACKEND, op, || async {
            let (live, node, _) = self.read_live(op, &path).await?;
            let Some(node) = node.filter(|n| n.present) else {
                return Ok(Some(false));
            };
            if self.bury(op, &path, &node).await? {
                return Ok(Some(live.is_some()));
            }
            Ok(None)
        })
        .await
    }

    async fn purge(&self, full: String) -> Result<()> {
        // The znode is value and tombstone at once; removing it ends both.
        self.purge_queue(&full).await
    }

    async fn notify(&self, full: String) -> Result<()> {
        self.notify_watchers(&full).await
    }

    async fn wait_notified(&self, full: String, timeout: Duration) -> Result<bool> {
        self.wait_for(&full, timeout).await
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

    async fn compare_and_set(&self, full: String, swap: Swap<'_>) -> Result<bool> {
        let path = node_path(&full);
        let op = Operation::CompareAndSet;
        self.put(op, &path, Some(swap.expected), swap.new).await
    }

    async fn assign_nonce(&self, full: String, pending: u64) -> Result<u64> {
        let n = self
            .update_number(Operation::AssignNonce, full, |v| {
                rules::next_nonce(BACKEND, v, pending).map(|n| n as i64)
            })
            .await?;
        Ok(n as u64)
    }

    async fn inspect(&self, full: String) -> Result<KeyInfo> {
        let op = Operation::Inspect;
        let path = node_path(&full);
        let (live, _, now) = self.read_live(op, &path).await?;
        Ok(match live {
            None => KeyInfo::default(),
            Some(n) => {
                let deadline = (n.deadline > 0).then_some(n.deadline);
                let token = Some(n.fencing_token());
                KeyInfo::at_deadline(Some(n.value.clone()), deadline, now.ms, token)
            }
        })
    }

    async fn keys(&self, full: String, limit: usize) -> Result<Vec<String>> {
        let op = Operation::Keys;
        let names = self
            .call(op, |c| async move { c.list_children(DATA_DIR).await })
            .await?;
        let now = self.server_now(op).await?.ms;
        let mut found = Vec::new();
        for name in names {
            if found.len() >= limit {
                break;
            }
            let Some(key) = decode_name(&name).filter(|k| k.starts_with(&full)) else {
                continue;
            };
            let path = format!("{DATA_DIR}/{name}");
            if let Some(node) = self.read(op, &path).await? {
                if node.present && (node.deadline == 0 || node.deadline > now) {
                    found.push(key);
                }
            }
        }
        Ok(found)
    }
}

checked_store!(ZookeeperStore, BACKEND);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_injective_reversible_and_valid() {
        let keys = [
            "a",
            "/",
            ".",
            "..",
            "zookeeper",
            "a/b",
            "ünï🔑",
            "100%",
            "x y",
            "a:b-c_d",
            &"k".repeat(1024),
        ];
        let mut seen = std::collections::HashSet::new();
        for k in keys {
            let name = encode_name(k);
            assert!(!name.contains('/') && name != "." && name != "..", "{name}");
            assert_eq!(decode_name(&name).as_deref(), Some(k));
            assert!(seen.insert(name));
        }
        assert_eq!(encode_name("nonce:1:0xAb"), "nonce:1:0xAb");
        assert_eq!(encode_name("."), "%2E");
    }

    #[test]
    fn data_header_round_trips() {
        let stat = zk::Stat {
            czxid: 1,
            mzxid: 1,
            pzxid: 1,
            ctime: 0,
            mtime: 0,
            version: 0,
            cversion: 0,
            aversion: 0,
            ephemeral_owner: 0,
            data_length: 0,
            num_children: 0,
        };
        let n = decode_data(&encode_data("v", 42, 7), stat).unwrap();
        assert_eq!((n.value.as_str(), n.deadline, n.token), ("v", 42, 7));
        assert!(decode_data(b"raw", stat).is_none());
    }
}
