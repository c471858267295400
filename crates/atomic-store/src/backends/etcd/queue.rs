//! The native lock queue, the way etcd's own `concurrency` mutex orders
//! waiters: each waiter is a key ordered by its create revision, on a lease
//! of its own, so a waiter that dies leaves the queue when its lease lapses.
//! A release hands the lock over in one txn: the lock key is rewritten in
//! place to the first waiter's id, and that waiter's key is deleted.
//!
//! - Keys: the waiter `\0q\0{lock}\0{id}` (empty value), and the marker
//!   `\0h\0{lock}` naming the waiter last handed the lock. The leading NUL
//!   keeps them apart from every user key (keys may not hold NUL).
//! - A hand-over keeps the lock key's create revision, so the new holder's
//!   fencing token is the marker's mod revision (see [`token_of`]).
//! - A key that exists is live: the server's lease clock decides presence.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use etcd_client::{
    Compare, CompareOp, DeleteOptions, GetOptions, KeyValue, PutOptions, SortOrder, SortTarget,
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchFilterType, WatchOptions,
};

use super::{EtcdStore, BACKEND};
use crate::lock::WAKE_SUFFIX;
use crate::retry::{self, read_step};
use crate::{
    ErrorKind, HandedTo, Handover, Lock, LockId, Operation, QueueEntry, QueueTurn, ReleaseOutcome,
    Result,
};

/// How many waiters ahead a look counts one by one; past this, the total
/// stands in (the count only paces polling).
const COUNTED_AHEAD: i64 = 64;

/// How long a key counts as busy after a look saw waiters: a release of a
/// busy key grants the hand-over lease alongside its first read.
const BUSY_FOR: Duration = Duration::from_secs(1);

/// Above this many entries, the local maps drop their stale ones.
const PRUNE_ABOVE: usize = 1024;

fn queue_start(full: &str) -> String {
    format!("\0q\0{full}\0")
}

fn queue_end(full: &str) -> String {
    format!("\0q\0{full}\u{1}")
}

fn waiter_key(full: &str, waiter: &str) -> String {
    format!("\0q\0{full}\0{waiter}")
}

pub(super) fn marker_key(full: &str) -> String {
    format!("\0h\0{full}")
}

/// Every key the queue of lock `full` may use besides the lock key: the
/// waiters' range and the marker.
pub(super) fn queue_keys(full: &str) -> (String, String, String) {
    (queue_start(full), queue_end(full), marker_key(full))
}

/// The fencing token of the hold in `lock`: the marker's mod revision if
/// the marker names the holder and was written after the key was created
/// (a hand-over, which rewrites the key in place), else the revision that
/// created the key (a take). `extend_lock` rewrites the key but touches
/// neither, so the token stays.
pub(super) fn token_of(lock: &KeyValue, marker: Option<&KeyValue>) -> u64 {
    let token = match marker {
        Some(m) if m.value() == lock.value() && m.mod_revision() > lock.create_revision() => {
            m.mod_revision()
        }
        _ => lock.create_revision(),
    };
    token as u64
}

/// The key whose changes wake the waiters of `key` that are not lock
/// waiters (a generic [`notify`](crate::AtomicStore::notify)).
pub(super) fn notify_key(key: &str) -> String {
    format!("\0n\0{key}")
}

/// What [`EtcdStore::wait_notified`] watches for `key`.
pub(super) struct Watched {
    pub key: String,
    pub options: WatchOptions,
    /// For a lock waiter: the revision of its last look. If the watch
    /// starts later, its key is read once, so that a hand-over in between
    /// is not missed. (A watch from a past revision would replay it, but
    /// etcd serves such watches from a loop that runs every 100 ms.)
    pub since: Option<i64>,
}

/// A lock waiter's wake key maps to its own queue key (by the id's first
/// 16 characters), whose deletion is a hand-over or a lapse; any other key
/// to its notify key, whose puts are the notifications.
pub(super) fn watch_for(state: &QueueState, key: &str) -> Watched {
    let waiter = key
        .rsplit_once(WAKE_SUFFIX)
        .filter(|(_, id)| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    match waiter {
        Some((full, id)) => {
            let own = format!("{}{id}", queue_start(full));
            let since = Some(state.seen(&own).unwrap_or(0));
            let options = WatchOptions::new()
                .with_prefix()
                .with_filters([WatchFilterType::NoPut]);
            Watched { key: own, options, since }
        }
        None => Watched {
            key: notify_key(key),
            options: WatchOptions::new().with_filters([WatchFilterType::NoDelete]),
            since: None,
        },
    }
}

/// This store's own waiters: their key's create revision (the queue
/// order), when their lease was last kept alive, and the revision of their
/// last look.
#[derive(Clone, Copy)]
struct Place {
    created: i64,
    renewed: Instant,
    presence: Duration,
    seen: i64,
}

/// What the queue module keeps per store handle.
#[derive(Default)]
pub(super) struct QueueState {
    /// By own key, ordered so that a wake key's id prefix finds its place.
    places: Mutex<BTreeMap<String, Place>>,
    busy: Mutex<HashMap<String, Instant>>,
}

impl QueueState {
    fn place(&self, own: &str) -> Option<Place> {
        lock(&self.places).get(own).copied()
    }

    /// The last look's revision of the waiter whose own key starts with
    /// `own_prefix`.
    fn seen(&self, own_prefix: &str) -> Option<i64> {
        let places = lock(&self.places);
        let (key, place) = places.range(own_prefix.to_owned()..).next()?;
        key.starts_with(own_prefix).then_some(place.seen)
    }

    fn remember(&self, own: &str, place: Place) {
        let mut places = lock(&self.places);
        if places.len() > PRUNE_ABOVE {
            places.retain(|_, p| p.renewed.elapsed() < p.presence * 2);
        }
        places.insert(own.to_owned(), place);
    }

    fn forget(&self, own: &str) {
        lock(&self.places).remove(own);
    }

    fn mark_busy(&self, full: &str) {
        let mut busy = lock(&self.busy);
        if busy.len() > PRUNE_ABOVE {
            busy.retain(|_, seen| seen.elapsed() < BUSY_FOR);
        }
        busy.insert(full.to_owned(), Instant::now());
    }

    fn is_busy(&self, full: &str) -> bool {
        lock(&self.busy)
            .get(full)
            .is_some_and(|seen| seen.elapsed() < BUSY_FOR)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One read-only look at a lock's queue (no Raft entry).
struct Look {
    lock: Option<KeyValue>,
    marker: Option<KeyValue>,
    own: Option<KeyValue>,
    /// Waiters older than `before` (all of them without it).
    ahead: u64,
    /// Every waiter, this one included.
    total: u64,
    revision: i64,
}

fn gets(resp: &TxnResponse) -> Vec<etcd_client::GetResponse> {
    resp.op_responses()
        .into_iter()
        .filter_map(|r| match r {
            TxnOpResponse::Get(g) => Some(g),
            _ => None,
        })
        .collect()
}

fn first(g: Option<&etcd_client::GetResponse>) -> Option<KeyValue> {
    g.and_then(|g| g.kvs().first().cloned())
}

/// The lease a txn's put or delete replaced or removed.
fn replaced_leases(resp: &TxnResponse) -> Vec<i64> {
    resp.op_responses()
        .into_iter()
        .flat_map(|r| match r {
            TxnOpResponse::Put(p) => p.prev_key().map(|kv| kv.lease()).into_iter().collect(),
            TxnOpResponse::Delete(d) => d.prev_kvs().iter().map(|kv| kv.lease()).collect(),
            _ => Vec::new(),
        })
        .collect()
}

fn revision(resp: &TxnResponse) -> i64 {
    resp.header().map_or(0, |h| h.revision())
}

impl EtcdStore {
    async fn look(&self, full: &str, own: &str, before: Option<i64>) -> Result<Look> {
        let (start, end) = (queue_start(full), queue_end(full));
        let total = GetOptions::new().with_range(end.as_str()).with_count_only();
        let mut reads = vec![
            TxnOp::get(full, None),
            TxnOp::get(marker_key(full), None),
            TxnOp::get(own, None),
            TxnOp::get(start.as_str(), Some(total)),
        ];
        if let Some(created) = before {
            // Count filters do not apply to `count`, so list the keys.
            let ahead = GetOptions::new()
                .with_range(end.as_str())
                .with_keys_only()
                .with_max_create_revision(created - 1)
                .with_limit(COUNTED_AHEAD);
            reads.push(TxnOp::get(start.as_str(), Some(ahead)));
        }
        let resp = self
            .txn(read_step(Operation::AcquireLock), Txn::new().and_then(reads))
            .await?;
        let gets = gets(&resp);
        let total = gets.get(3).map_or(0, |g| g.count()).max(0) as u64;
        let ahead = match gets.get(4) {
            Some(g) if g.more() => total.saturating_sub(1),
            Some(g) => g.kvs().len() as u64,
            None => total,
        };
        if total > 0 {
            self.queue.mark_busy(full);
        }
        Ok(Look {
            lock: first(gets.first()),
            marker: first(gets.get(1)),
            own: first(gets.get(2)),
            ahead,
            total,
            revision: revision(&resp),
        })
    }

    /// Put the lock key for `me` with a fresh lease for `ttl` when
    /// `compares` hold, and leave the queue. `Some(revision)` if it did.
    async fn take(&self, full: &str, me: &str, ttl: Duration, compares: Vec<Compare>) -> Result<Option<i64>> {
        let op = Operation::AcquireLock;
        let lease = self.grant(op, ttl).await?;
        let put = PutOptions::new().with_lease(lease).with_prev_key();
        let txn = Txn::new().when(compares).and_then([
            TxnOp::put(full, me, Some(put)),
            TxnOp::delete(waiter_key(full, me), Some(DeleteOptions::new().with_prev_key())),
        ]);
        let resp = match self.txn(op, txn).await {
            Ok(resp) => resp,
            Err(e) => {
                if e.kind() != ErrorKind::OutcomeUnknown {
                    self.revoke_later(vec![lease]);
                }
                return Err(e);
            }
        };
        if !resp.succeeded() {
            self.revoke_later(vec![lease]);
            return Ok(None);
        }
        let mut old = replaced_leases(&resp);
        old.retain(|&l| l != lease);
        self.revoke_later(old);
        Ok(Some(revision(&resp)))
    }

    pub(super) async fn queue_enter(&self, full: &str, entry: QueueEntry<'_>) -> Result<QueueTurn> {
        let op = Operation::AcquireLock;
        let me = entry.waiter.as_str();
        let own = waiter_key(full, me);
        let (start, end) = (queue_start(full), queue_end(full));
        let turn = retry::until_written(BACKEND, op, || async {
            let place = self.queue.place(&own);
            let look = self.look(full, &own, place.map(|p| p.created)).await?;
            if let Some(held) = &look.lock {
                if held.value() != me.as_bytes() {
                    return self.wait(full, &own, entry, place, look).await;
                }
                // Handed to this waiter: hold it for the full TTL from now.
                let mine = Compare::value(full, CompareOp::Equal, me);
                let Some(_) = self.take(full, me, entry.ttl, vec![mine]).await? else {
                    return Ok(None);
                };
                self.queue.forget(&own);
                let token = token_of(held, look.marker.as_ref());
                return Ok(Some(QueueTurn::Acquired(Lock::new(entry.waiter.clone(), token))));
            }
            let head = match (place, &look.own) {
                (Some(p), Some(_)) if look.ahead == 0 => {
                    Compare::create_revision(start.as_str(), CompareOp::Greater, p.created - 1)
                }
                // Its key lapsed (or a hand-over to it did): join again at
                // the back, or take the lock if nobody is queued.
                (Some(_), None) => {
                    self.queue.forget(&own);
                    return Ok(None);
                }
                (None, None) if look.total == 0 => {
                    Compare::version(start.as_str(), CompareOp::Equal, 0)
                }
                // Own key seen but not yet remembered: learn its place.
                (None, Some(kv)) => {
                    self.remember(&own, kv.create_revision(), entry, look.revision);
                    return Ok(None);
                }
                _ => return self.wait(full, &own, entry, place, look).await,
            };
            let free = Compare::version(full, CompareOp::Equal, 0);
            let head = head.with_range(end.as_str());
            let Some(taken) = self.take(full, me, entry.ttl, vec![free, head]).await? else {
                return Ok(None);
            };
            self.queue.forget(&own);
            Ok(Some(QueueTurn::Acquired(Lock::new(entry.waiter.clone(), taken as u64))))
        })
        .await;
        if turn.is_err() {
            self.queue.forget(&own);
        }
        turn
    }

    fn remember(&self, own: &str, created: i64, entry: QueueEntry<'_>, seen: i64) {
        let presence = entry.presence.unwrap_or_default();
        let place = Place {
            created,
            renewed: Instant::now(),
            presence,
            seen,
        };
        self.queue.remember(own, place);
    }

    /// Not this waiter's turn: join, or keep its place alive.
    async fn wait(
        &self,
        full: &str,
        own: &str,
        entry: QueueEntry<'_>,
        place: Option<Place>,
        look: Look,
    ) -> Result<Option<QueueTurn>> {
        let op = Operation::AcquireLock;
        let Some(presence) = entry.presence else {
            return Ok(Some(QueueTurn::Waiting { ahead: look.total }));
        };
        self.queue.mark_busy(full);
        let Some(kv) = look.own else {
            // Not queued, or its place lapsed: join at the back.
            let lease = self.grant(op, presence).await?;
            let absent = Compare::version(own, CompareOp::Equal, 0);
            let put = TxnOp::put(own, "", Some(PutOptions::new().with_lease(lease)));
            let resp = match self.txn(op, Txn::new().when([absent]).and_then([put])).await {
                Ok(resp) => resp,
                Err(e) => {
                    if e.kind() != ErrorKind::OutcomeUnknown {
                        self.revoke_later(vec![lease]);
                    }
                    return Err(e);
                }
            };
            if !resp.succeeded() {
                self.revoke_later(vec![lease]);
                return Ok(None);
            }
            let joined = revision(&resp);
            self.remember(own, joined, entry, joined);
            return Ok(Some(QueueTurn::Waiting { ahead: look.total }));
        };
        let due = place.is_none_or(|p| p.renewed.elapsed() > presence / 3);
        if let (Some(p), false) = (place, due) {
            self.queue.remember(own, Place { seen: look.revision, ..p });
        }
        if due {
            let lease = kv.lease();
            let alive = self
                .call(read_step(op), |mut c| async move {
                    // The client sends one keep-alive and reads its answer,
                    // failing with this error when the lease is gone (a
                    // release that handed this waiter the lock revoked it).
                    match c.lease_keep_alive(lease).await {
                        Ok(_) => Ok(true),
                        Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(false),
                        Err(e) => Err(e),
                    }
                })
                .await?;
            if !alive {
                // Lapsed as we looked: the key goes, and the next call joins.
                self.queue.forget(own);
            } else {
                self.remember(own, kv.create_revision(), entry, look.revision);
            }
        }
        Ok(Some(QueueTurn::Waiting { ahead: look.ahead }))
    }

    pub(super) async fn queue_release(
        &self,
        full: &str,
        id: &LockId,
        handover_ttl: Duration,
    ) -> Result<Handover> {
        let op = Operation::ReleaseLock;
        let me = id.as_str();
        let own = waiter_key(full, me);
        self.queue.forget(&own);
        let (start, end) = (queue_start(full), queue_end(full));
        // A hand-over lease granted but not used yet, kept across rounds.
        let spare: Mutex<Option<i64>> = Mutex::new(None);
        let reads = || {
            let queue = GetOptions::new()
                .with_range(end.as_str())
                .with_keys_only()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(2);
            [
                TxnOp::get(full, None),
                TxnOp::get(start.as_str(), Some(queue)),
                TxnOp::get(own.as_str(), None),
            ]
        };
        let handover = retry::until_written(BACKEND, op, || async {
            let resp = if self.queue.is_busy(full) {
                // Waiters were seen: the lock is likely handed over, so
                // read without a Raft entry and grant its lease meanwhile.
                let want_lease = lock(&spare).is_none();
                let grant = async {
                    match want_lease {
                        true => self.grant(op, handover_ttl).await.map(Some),
                        false => Ok(None),
                    }
                };
                let look = self.txn(read_step(op), Txn::new().and_then(reads()));
                let (resp, granted) = tokio::join!(look, grant);
                if let Some(lease) = granted? {
                    *lock(&spare) = Some(lease);
                }
                resp?
            } else {
                // Likely no waiter: release in one txn that proves it.
                let txn = Txn::new()
                    .when([
                        Compare::value(full, CompareOp::Equal, me),
                        Compare::version(start.as_str(), CompareOp::Equal, 0).with_range(end.as_str()),
                    ])
                    .and_then([
                        TxnOp::delete(full, Some(DeleteOptions::new().with_prev_key())),
                        TxnOp::delete(marker_key(full), None),
                    ])
                    .or_else(reads());
                let resp = self.txn(op, txn).await?;
                if resp.succeeded() {
                    self.revoke_later(replaced_leases(&resp));
                    return Ok(Some(Handover {
                        outcome: ReleaseOutcome::Released,
                        next: None,
                    }));
                }
                resp
            };
            let gets = gets(&resp);
            let held = first(gets.first());
            let waiters: Vec<KeyValue> = gets.get(1).map(|g| g.kvs().to_vec()).unwrap_or_default();
            let own_kv = first(gets.get(2));
            if !waiters.is_empty() {
                self.queue.mark_busy(full);
            }
            let outcome = match &held {
                Some(kv) if kv.value() == me.as_bytes() => ReleaseOutcome::Released,
                Some(_) => ReleaseOutcome::HeldByOther,
                None => ReleaseOutcome::NotHeld,
            };
            let leave = TxnOp::delete(own.as_str(), Some(DeleteOptions::new().with_prev_key()));
            let next = waiters.iter().find(|kv| kv.key() != own.as_bytes());
            let (next, lock_is) = match (outcome, next) {
                (ReleaseOutcome::Released, Some(next)) => {
                    (next, Compare::value(full, CompareOp::Equal, me))
                }
                (ReleaseOutcome::NotHeld, Some(next)) => {
                    (next, Compare::version(full, CompareOp::Equal, 0))
                }
                _ => {
                    // Nobody to hand to (or not ours to hand): leave the
                    // queue, and free an own hold unless a waiter joined
                    // since the read. If the lock changed since (it may
                    // have just been handed to this very waiter), look again.
                    let unchanged = match &held {
                        Some(kv) => Compare::mod_revision(full, CompareOp::Equal, kv.mod_revision()),
                        None => Compare::version(full, CompareOp::Equal, 0),
                    };
                    let mut steps = Vec::new();
                    let mut compares = vec![unchanged];
                    if own_kv.is_some() {
                        steps.push(leave);
                    }
                    if outcome == ReleaseOutcome::Released {
                        steps.push(TxnOp::delete(full, Some(DeleteOptions::new().with_prev_key())));
                        steps.push(TxnOp::delete(marker_key(full), None));
                        let queue = match &own_kv {
                            Some(kv) => Compare::create_revision(
                                start.as_str(),
                                CompareOp::Less,
                                kv.create_revision() + 1,
                            ),
                            None => Compare::version(start.as_str(), CompareOp::Equal, 0),
                        };
                        compares.push(queue.with_range(end.as_str()));
                    }
                    if steps.is_empty() {
                        return Ok(Some(Handover { outcome, next: None }));
                    }
                    let resp = self.txn(op, Txn::new().when(compares).and_then(steps)).await?;
                    if !resp.succeeded() {
                        return Ok(None);
                    }
                    self.revoke_later(replaced_leases(&resp));
                    return Ok(Some(Handover { outcome, next: None }));
                }
            };
            let kept = lock(&spare).take();
            let lease = match kept {
                Some(lease) => lease,
                None => self.grant(op, handover_ttl).await?,
            };
            let Some(waiter) = next
                .key()
                .strip_prefix(start.as_bytes())
                .and_then(|w| std::str::from_utf8(w).ok())
            else {
                return Ok(None);
            };
            let put = PutOptions::new().with_lease(lease).with_prev_key();
            let txn = Txn::new()
                .when([
                    lock_is,
                    Compare::create_revision(next.key(), CompareOp::Equal, next.create_revision()),
                ])
                .and_then([
                    TxnOp::put(full, waiter, Some(put)),
                    TxnOp::put(marker_key(full), waiter, None),
                    TxnOp::delete(next.key(), Some(DeleteOptions::new().with_prev_key())),
                    leave,
                ]);
            let resp = self.txn(op, txn).await?;
            if !resp.succeeded() {
                *lock(&spare) = Some(lease);
                return Ok(None);
            }
            let mut old = replaced_leases(&resp);
            old.retain(|&l| l != lease);
            self.revoke_later(old);
            self.queue.forget(&waiter_key(full, waiter));
            Ok(Some(Handover {
                outcome,
                next: Some(HandedTo {
                    waiter: LockId::from(waiter.to_owned()),
                    fencing_token: revision(&resp) as u64,
                    valid_for: handover_ttl,
                }),
            }))
        })
        .await;
        if let Some(lease) = lock(&spare).take() {
            self.revoke_later(vec![lease]);
        }
        handover
    }
}
