//! The native lock queue, as Curator's lock recipe orders waiters: each
//! waiter is an ephemeral sequential child of the lock's znode, named
//! `_c_{id}-w{sequence}` (the id in the name finds a node whose create
//! reply was lost). A release hands the lock over in one multi: the lock
//! node is rewritten to the first live waiter's id and that waiter's node
//! is deleted, which is also its wake-up.
//!
//! - Presence: a waiter's node holds a deadline on the server's clock
//!   (the same estimate the lock uses), renewed while it waits; a node past
//!   its deadline is passed over and deleted. Session expiry deletes the
//!   nodes of a process that died outright.
//! - The fencing token of a handed lock is the multi's zxid (`mzxid` of the
//!   lock node), as for a taken one.
//! - The queue's order is the parsed sequence number, never the name.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use zookeeper_client as zk;

use super::{decode_data, encode_data, encode_name, node_path, tombstone, Node, ZookeeperStore};
use super::{Written, BACKEND};
use crate::clock::ServerTime;
use crate::lock::WAKE_SUFFIX;
use crate::retry::{self, read_step};
use crate::{
    rules, Error, ErrorKind, HandedTo, Handover, Lock, LockId, Operation, QueueEntry, QueueTurn,
    ReleaseOutcome, Result,
};

/// Where generic notifications happen: a create and delete of a child.
pub(super) const NOTIFY_DIR: &str = "/atomic-store-notify";

/// The most waiter nodes read in one multi-read.
const READ_BATCH: usize = 256;

/// Above this many entries, the local map drops its stale ones.
const PRUNE_ABOVE: usize = 1024;

/// The name every node of waiter `id` starts with.
fn waiter_prefix(id: &str) -> String {
    format!("_c_{}-w", encode_name(id))
}

/// A waiter's node, from its name.
#[derive(Debug, Clone)]
struct Waiter {
    sequence: i64,
    id: String,
    name: String,
}

impl Waiter {
    fn parse(name: String) -> Option<Waiter> {
        let (id, sequence) = name.strip_prefix("_c_")?.rsplit_once("-w")?;
        Some(Waiter {
            sequence: sequence.parse().ok()?,
            id: super::decode_name(id)?,
            name,
        })
    }
}

/// This handle's waiters by node path: when they were last renewed.
#[derive(Clone, Copy)]
struct Place {
    renewed: Instant,
    presence: Duration,
}

#[derive(Default)]
pub(super) struct QueueState {
    places: Mutex<BTreeMap<String, Place>>,
}

impl QueueState {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Place>> {
        self.places.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn remember(&self, path: &str, presence: Duration) {
        let mut places = self.lock();
        if places.len() > PRUNE_ABOVE {
            places.retain(|_, p| p.renewed.elapsed() < p.presence * 2);
        }
        let renewed = Instant::now();
        places.insert(path.to_owned(), Place { renewed, presence });
    }

    fn renewed(&self, path: &str) -> Option<Instant> {
        self.lock().get(path).map(|p| p.renewed)
    }

    fn forget(&self, path: &str) {
        self.lock().remove(path);
    }

    /// Forget every node of one waiter (`prefix`: its lock's path and
    /// name prefix): a waiter that joined again has a new one.
    fn forget_all(&self, prefix: &str) {
        self.lock().retain(|path, _| !path.starts_with(prefix));
    }

    /// The node of this handle's waiter whose path starts with `prefix`.
    fn find(&self, prefix: &str) -> Option<String> {
        let places = self.lock();
        let (path, _) = places.range(prefix.to_owned()..).next()?;
        path.starts_with(prefix).then(|| path.clone())
    }
}

/// One snapshot of a lock and its queue, and the server time it is judged at.
struct Look {
    lock: Option<Node>,
    /// By sequence.
    waiters: Vec<Waiter>,
    now: ServerTime,
}

/// One step of a multi.
#[derive(Clone)]
enum Step {
    Set(String, Vec<u8>, i32),
    Delete(String, Option<i32>),
}

fn corrupt(op: Operation, path: &str) -> Error {
    Error::new(
        ErrorKind::Backend,
        BACKEND,
        op,
        format!("{path} was not written by atomic-store"),
    )
}

impl ZookeeperStore {
    async fn look(&self, op: Operation, lock_path: &str) -> Result<Look> {
        let results = self
            .call(read_step(op), |c| async move {
                let mut reader = c.new_multi_reader();
                reader.add_get_data(lock_path)?;
                reader.add_get_children(lock_path)?;
                match reader.commit().await {
                    Ok(results) => Ok(Some(results)),
                    // Before 3.6: no multi-read, so no native queue.
                    Err(zk::Error::Unimplemented) => Ok(None),
                    Err(e) => Err(e),
                }
            })
            .await?;
        let Some(results) = results else {
            return Err(Error::unsupported(BACKEND, op));
        };
        let mut lock = None;
        let mut waiters = Vec::new();
        for result in results {
            match result {
                zk::MultiReadResult::Data { data, stat } => {
                    lock = Some(decode_data(&data, stat).ok_or_else(|| corrupt(op, lock_path))?);
                }
                zk::MultiReadResult::Children { children } => {
                    waiters = children.into_iter().filter_map(Waiter::parse).collect();
                }
                zk::MultiReadResult::Error { err: zk::Error::NoNode } => {}
                zk::MultiReadResult::Error { err } => {
                    return Err(super::into_error(super::classify(err), op, self.timeout))
                }
                _ => {}
            }
        }
        waiters.sort_by_key(|w| w.sequence);
        let now = self.server_now(op).await?;
        Ok(Look { lock, waiters, now })
    }

    /// The nodes of `waiters` (`None`: gone since the look), in one read.
    async fn waiter_nodes(
        &self,
        op: Operation,
        lock_path: &str,
        waiters: &[&Waiter],
    ) -> Result<Vec<Option<Node>>> {
        let mut nodes = Vec::with_capacity(waiters.len());
        for batch in waiters.chunks(READ_BATCH) {
            let paths: Vec<String> = batch
                .iter()
                .map(|w| format!("{lock_path}/{}", w.name))
                .collect();
            let results = self
                .call(read_step(op), |c| {
                    let paths = paths.clone();
                    async move {
                        let mut reader = c.new_multi_reader();
                        for path in &paths {
                            reader.add_get_data(path)?;
                        }
                        reader.commit().await
                    }
                })
                .await?;
            for result in results {
                nodes.push(match result {
                    zk::MultiReadResult::Data { data, stat } => decode_data(&data, stat),
                    _ => None,
                });
            }
        }
        Ok(nodes)
    }

    /// Run `steps` as one multi: `None` if one of them found the tree
    /// changed (nothing was written), else the lock node's new stat if a
    /// step set it.
    async fn multi(&self, op: Operation, steps: Vec<Step>) -> Result<Option<Option<zk::Stat>>> {
        self.call(op, |c| {
            let steps = steps.clone();
            async move {
                let mut writer = c.new_multi_writer();
                for step in &steps {
                    match step {
                        Step::Set(path, data, version) => {
                            writer.add_set_data(path, data, Some(*version))?
                        }
                        Step::Delete(path, version) => writer.add_delete(path, *version)?,
                    }
                }
                match writer.commit().await {
                    Ok(results) => Ok(Some(results.into_iter().find_map(|r| match r {
                        zk::MultiWriteResult::SetData { stat } => Some(stat),
                        _ => None,
                    }))),
                    Err(zk::MultiWriteError::OperationFailed {
                        source: zk::Error::BadVersion | zk::Error::NoNode | zk::Error::NodeExists,
                        ..
                    }) => Ok(None),
                    Err(e) => Err(zk::Error::from(e)),
                }
            }
        })
        .await
    }

    /// The first waiter of `others` whose presence is live, and the lapsed
    /// ones before it (path and version), read in growing batches.
    async fn first_live(
        &self,
        op: Operation,
        lock_path: &str,
        others: &[&Waiter],
        now: ServerTime,
    ) -> Result<(Option<Waiter>, Vec<(String, i32)>)> {
        let mut lapsed = Vec::new();
        let mut start = 0;
        let mut batch = 1;
        while start < others.len() {
            let end = (start + batch).min(others.len());
            let nodes = self.waiter_nodes(op, lock_path, &others[start..end]).await?;
            for (waiter, node) in others[start..end].iter().zip(nodes) {
                let Some(node) = node else { continue };
                if node.deadline > now.ms {
                    return Ok((Some((*waiter).clone()), lapsed));
                }
                lapsed.push((format!("{lock_path}/{}", waiter.name), node.stat.version));
            }
            start = end;
            batch = (batch * 2).min(READ_BATCH);
        }
        Ok((None, lapsed))
    }

    pub(super) async fn queue_enter(&self, full: &str, entry: QueueEntry<'_>) -> Result<QueueTurn> {
        let op = Operation::AcquireLock;
        let me = entry.waiter.as_str();
        let lock_path = node_path(full);
        let mine = waiter_prefix(me);
        let ttl_ms = rules::ttl_millis(entry.ttl) as i64;
        retry::until_written(BACKEND, op, || async {
            let look = self.look(op, &lock_path).await?;
            let now = look.now;
            let own = look.waiters.iter().find(|w| w.name.starts_with(&mine));
            let own_path = own.map(|w| format!("{lock_path}/{}", w.name));
            let leave = own_path.iter().map(|p| Step::Delete(p.clone(), None));
            let held = look
                .lock
                .as_ref()
                .filter(|n| n.present && (n.deadline == 0 || !now.may_take_over(n.deadline)));
            // Handed to this waiter; also just past its deadline, while
            // nobody else may take it yet.
            let handed = held.filter(|n| n.value == me);
            if let Some(node) = handed {
                // Handed to this waiter: hold it for the full TTL from now.
                let token = node.fencing_token();
                let data = encode_data(me, now.ms + ttl_ms, token);
                let mut steps = vec![Step::Set(lock_path.clone(), data, node.stat.version)];
                steps.extend(leave);
                if self.multi(op, steps).await?.is_none() {
                    return Ok(None);
                }
                self.settle(&lock_path, &mine);
                return Ok(Some(QueueTurn::Acquired(Lock::new(entry.waiter.clone(), token))));
            }
            let ahead: Vec<&Waiter> = match own {
                Some(o) => look.waiters.iter().take_while(|w| w.sequence < o.sequence).collect(),
                None => look.waiters.iter().collect(),
            };
            let need_nodes = held.is_none() || entry.presence.is_none();
            let nodes = match need_nodes && !ahead.is_empty() {
                true => self.waiter_nodes(op, &lock_path, &ahead).await?,
                false => Vec::new(),
            };
            let live_ahead = nodes.iter().flatten().filter(|n| n.deadline > now.ms).count();
            if held.is_none() && live_ahead == 0 {
                let data = encode_data(me, now.ms + ttl_ms, 0);
                let stat = match &look.lock {
                    // Created alone: a `Create` stat inside a multi may be
                    // invalid (ZOOKEEPER-4026).
                    None => match self.replace(op, &lock_path, None, data).await? {
                        Written::Done(stat) => stat,
                        Written::Conflict => return Ok(None),
                    },
                    Some(node) => {
                        let mut steps = vec![Step::Set(lock_path.clone(), data, node.stat.version)];
                        steps.extend(leave);
                        for (waiter, node) in ahead.iter().zip(&nodes) {
                            if let Some(node) = node {
                                let path = format!("{lock_path}/{}", waiter.name);
                                steps.push(Step::Delete(path, Some(node.stat.version)));
                            }
                        }
                        match self.multi(op, steps).await? {
                            Some(Some(stat)) => stat,
                            _ => return Ok(None),
                        }
                    }
                };
                self.settle(&lock_path, &mine);
                let lock = Lock::new(entry.waiter.clone(), stat.mzxid as u64);
                return Ok(Some(QueueTurn::Acquired(lock)));
            }
            let Some(presence) = entry.presence else {
                return Ok(Some(QueueTurn::Waiting {
                    ahead: live_ahead as u64,
                }));
            };
            let ahead = ahead.len() as u64;
            let presence_ms = rules::ttl_millis(presence) as i64;
            let data = encode_data(me, now.ms + presence_ms, 0);
            let Some(own_path) = own_path else {
                // Join at the back.
                let path = format!("{lock_path}/{mine}");
                self.queue.forget_all(&path);
                let Some(created) = self.create_waiter(op, &path, data).await? else {
                    return Ok(None);
                };
                self.queue.remember(&created, presence);
                return Ok(Some(QueueTurn::Waiting { ahead }));
            };
            // Renewed once a third of its life has passed.
            let due = self
                .queue
                .renewed(&own_path)
                .is_none_or(|at| at.elapsed() > presence / 3);
            if due {
                let renewed = self
                    .call(op, |c| {
                        let (path, data) = (own_path.clone(), data.clone());
                        async move {
                            match c.set_data(&path, &data, None).await {
                                Ok(_) => Ok(true),
                                Err(zk::Error::NoNode) => Ok(false),
                                Err(e) => Err(e),
                            }
                        }
                    })
                    .await?;
                if !renewed {
                    // Passed over as lapsed, or handed the lock: look again.
                    self.queue.forget(&own_path);
                    return Ok(None);
                }
                self.queue.remember(&own_path, presence);
            }
            Ok(Some(QueueTurn::Waiting { ahead }))
        })
        .await
    }

    /// Create a waiter's ephemeral sequential node: its path, or `None`
    /// if the lock node is gone (purged since the look).
    async fn create_waiter(&self, op: Operation, path: &str, data: Vec<u8>) -> Result<Option<String>> {
        self.call(op, |c| {
            let data = data.clone();
            async move {
                let options = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
                match c.create(path, &data, &options).await {
                    Ok((_, sequence)) => Ok(Some(format!("{path}{sequence}"))),
                    Err(zk::Error::NoNode | zk::Error::NodeExists) => Ok(None),
                    Err(e) => Err(e),
                }
            }
        })
        .await
    }

    /// The waiter holds the lock: forget its nodes.
    fn settle(&self, lock_path: &str, mine: &str) {
        self.queue.forget_all(&format!("{lock_path}/{mine}"));
    }

    pub(super) async fn queue_release(
        &self,
        full: &str,
        id: &LockId,
        handover_ttl: Duration,
    ) -> Result<Handover> {
        let op = Operation::ReleaseLock;
        let id = id.as_str();
        let lock_path = node_path(full);
        let mine = waiter_prefix(id);
        let handover_ms = rules::ttl_millis(handover_ttl) as i64;
        retry::until_written(BACKEND, op, || async {
            let look = self.look(op, &lock_path).await?;
            let now = look.now;
            let own = look.waiters.iter().find(|w| w.name.starts_with(&mine));
            let own_path = own.map(|w| format!("{lock_path}/{}", w.name));
            let mut steps: Vec<Step> = own_path.iter().map(|p| Step::Delete(p.clone(), None)).collect();
            let lock = look.lock.as_ref().filter(|n| n.present);
            let outcome = match lock {
                Some(n) if n.value == id && (n.deadline == 0 || n.deadline > now.ms) => {
                    ReleaseOutcome::Released
                }
                Some(n) if n.value != id && (n.deadline == 0 || !now.may_take_over(n.deadline)) => {
                    ReleaseOutcome::HeldByOther
                }
                _ => ReleaseOutcome::NotHeld,
            };
            // Ours (even just expired), or free past the takeover margin;
            // another's lock within the margin is left to its waiters.
            let writable = outcome != ReleaseOutcome::HeldByOther
                && lock.is_none_or(|n| n.value == id || now.may_take_over(n.deadline));
            let (next, lapsed) = match (writable, &look.lock) {
                (true, Some(_)) => {
                    let others: Vec<&Waiter> = look
                        .waiters
                        .iter()
                        .filter(|w| !w.name.starts_with(&mine))
                        .collect();
                    self.first_live(op, &lock_path, &others, now).await?
                }
                _ => (None, Vec::new()),
            };
            steps.extend(lapsed.into_iter().map(|(p, v)| Step::Delete(p, Some(v))));
            let set = match (&look.lock, &next) {
                (Some(node), Some(next)) if writable => {
                    let data = encode_data(&next.id, now.ms + handover_ms, 0);
                    steps.push(Step::Delete(format!("{lock_path}/{}", next.name), None));
                    Some(Step::Set(lock_path.clone(), data, node.stat.version))
                }
                (Some(node), None) if outcome == ReleaseOutcome::Released => {
                    Some(Step::Set(lock_path.clone(), tombstone(), node.stat.version))
                }
                _ => None,
            };
            steps.extend(set);
            if steps.is_empty() {
                return Ok(Some(Handover {
                    outcome,
                    next: None,
                }));
            }
            let Some(stat) = self.multi(op, steps).await? else {
                return Ok(None);
            };
            self.settle(&lock_path, &mine);
            if let Some(next) = &next {
                self.queue.forget(&format!("{lock_path}/{}", next.name));
            }
            let next = match (next, stat) {
                (Some(next), Some(stat)) if writable => Some(HandedTo {
                    waiter: LockId::from(next.id),
                    fencing_token: stat.mzxid as u64,
                    valid_for: handover_ttl,
                }),
                _ => None,
            };
            Ok(Some(Handover { outcome, next }))
        })
        .await
    }

    /// Wait for a hand-over to this handle's waiter (its node deleted) or
    /// a generic notification; see the module docs.
    pub(super) async fn wait_for(&self, full: &str, timeout: Duration) -> Result<bool> {
        let op = Operation::WaitNotified;
        let deadline = tokio::time::Instant::now() + timeout;
        let path = match full.rsplit_once(WAKE_SUFFIX) {
            Some((lock, id)) if id.len() == 16 => {
                let prefix = format!("{}/_c_{}", node_path(lock), encode_name(id));
                match self.queue.find(&prefix) {
                    Some(path) => path,
                    // Not a waiter of this handle: nothing to hear.
                    None => {
                        tokio::time::sleep_until(deadline).await;
                        return Ok(false);
                    }
                }
            }
            _ => notify_path(full),
        };
        let watch = self.call(op, |c| {
            let path = path.clone();
            async move { c.check_and_watch_stat(&path).await }
        });
        let (stat, watcher) = match tokio::time::timeout_at(deadline, watch).await {
            Ok(watched) => watched?,
            Err(_) => return Ok(false),
        };
        // A waiter's node already gone: handed over, or passed over.
        if stat.is_none() && !path.starts_with(NOTIFY_DIR) {
            self.queue.forget(&path);
            return Ok(true);
        }
        Ok(tokio::time::timeout_at(deadline, watcher.changed())
            .await
            .is_ok())
    }

    /// Fire the watches on `full`'s notify node: create and delete it in
    /// one multi, which leaves nothing behind.
    pub(super) async fn notify_watchers(&self, full: &str) -> Result<()> {
        let op = Operation::Notify;
        let path = notify_path(full);
        self.call(op, |c| {
            let path = path.clone();
            async move {
                let options = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
                for _ in 0..2 {
                    let mut writer = c.new_multi_writer();
                    writer.add_create(&path, &[], &options)?;
                    writer.add_delete(&path, None)?;
                    match writer.commit().await {
                        Ok(_) => return Ok(()),
                        // Another notify of the same key at the same moment.
                        Err(zk::MultiWriteError::OperationFailed {
                            source: zk::Error::NodeExists,
                            ..
                        }) => return Ok(()),
                        // The directory was removed: make it again (a bare
                        // `NoNode` would end the session, see `call`).
                        Err(zk::MultiWriteError::OperationFailed {
                            source: zk::Error::NoNode,
                            ..
                        }) => match c.create(NOTIFY_DIR, &[], &options).await {
                            Ok(_) | Err(zk::Error::NodeExists) => {}
                            Err(e) => return Err(e),
                        },
                        Err(e) => return Err(zk::Error::from(e)),
                    }
                }
                Err(zk::Error::RuntimeInconsistent)
            }
        })
        .await
    }

    /// Remove the lock node and its queue: the children first (another
    /// session may add more meanwhile, so a few rounds).
    pub(super) async fn purge_queue(&self, full: &str) -> Result<()> {
        let op = Operation::Purge;
        let path = node_path(full);
        for _ in 0..3 {
            let removed = self
                .call(op, |c| {
                    let path = path.clone();
                    async move {
                        let children = match c.list_children(&path).await {
                            Ok(children) => children,
                            Err(zk::Error::NoNode) => return Ok(true),
                            Err(e) => return Err(e),
                        };
                        for child in children {
                            match c.delete(&format!("{path}/{child}"), None).await {
                                Ok(()) | Err(zk::Error::NoNode) => {}
                                Err(e) => return Err(e),
                            }
                        }
                        match c.delete(&path, None).await {
                            Ok(()) | Err(zk::Error::NoNode) => Ok(true),
                            Err(zk::Error::NotEmpty) => Ok(false),
                            Err(e) => Err(e),
                        }
                    }
                })
                .await?;
            if removed {
                return Ok(());
            }
        }
        Err(Error::new(
            ErrorKind::Timeout,
            BACKEND,
            op,
            "waiters kept joining the lock's queue; try the purge again",
        ))
    }
}

fn notify_path(full: &str) -> String {
    format!("{NOTIFY_DIR}/{}", encode_name(full))
}
