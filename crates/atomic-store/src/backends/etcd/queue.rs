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
    Txn, TxnOp, TxnOpResponse, TxnResponse, WatchFilterType, WatchOptions, WatchStream,
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
struct Watched {
    key: String,
    options: WatchOptions,
    /// A waiter of this handle: its own key.
    own: Option<String>,
    /// The revision of the head's last look. A watch that starts later
    /// reads the keys once, so that a hand-over or a freed lock in between
    /// is not missed. (A watch from a past revision would replay them, but
    /// etcd catches such watches up in a loop that runs every 100 ms.)
    check_after: Option<i64>,
    /// For the queue's head: the lock key, whose deletion frees the lock.
    lock: Option<String>,
}

/// A lock waiter's wake key maps to its own queue key (by the id's first
/// 16 characters), whose deletion is a hand-over or a lapse; any other key
/// to its notify key, whose puts are the notifications.
fn watch_for(state: &QueueState, key: &str) -> Watched {
    let waiter = key
        .rsplit_once(WAKE_SUFFIX)
        .filter(|(_, id)| id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()));
    let Some((full, id)) = waiter else {
        return Watched {
            key: notify_key(key),
            options: WatchOptions::new().with_filters([WatchFilterType::NoDelete]),
            own: None,
            check_after: None,
            lock: None,
        };
    };
    let prefix = format!("{}{id}", queue_start(full));
    let mut options = WatchOptions::new()
        .with_prefix()
        .with_filters([WatchFilterType::NoPut]);
    let mut watched = Watched {
        key: prefix.clone(),
        options: options.clone(),
        own: None,
        check_after: None,
        lock: None,
    };
    if let Some((own, seen, ahead)) = state.find(&prefix) {
        watched.own = Some(own);
        if ahead == 0 {
            watched.check_after = Some(seen);
            watched.lock = Some(full.to_owned());
        } else {
            // Behind others: no hand-over comes within those 100 ms, so
            // start from the last look and skip the read.
            options = options.with_start_revision(seen + 1);
            watched.options = options;
        }
    }
    watched
}

/// One of this store's own waiters.
#[derive(Clone, Copy)]
struct Place {
    /// Its key's create revision: the queue order.
    created: i64,
    /// Its key's lease, and when it was last kept alive.
    lease: i64,
    renewed: Instant,
    presence: Duration,
    /// When it last looked, the revision it saw, and how many were ahead.
    looked: Instant,
    seen: i64,
    ahead: u64,
    /// Its key was seen deleted since its last look: likely a hand-over.
    woken: bool,
}

impl Place {
    fn new(created: i64, lease: i64, presence: Duration, seen: i64, ahead: u64) -> Place {
        let now = Instant::now();
        Place {
            created,
            lease,
            renewed: now,
            presence,
            looked: now,
            seen,
            ahead,
            woken: false,
        }
    }
}

/// What the queue module keeps per store handle.
#[derive(Default)]
pub(super) struct QueueState {
    /// By own key, ordered so that a wake key's id prefix finds its place.
    places: Mutex<BTreeMap<String, Place>>,
    /// A waiter's watch on its own key, kept open between its waits.
    watches: Mutex<HashMap<String, WatchStream>>,
    busy: Mutex<HashMap<String, Instant>>,
    /// Leases of waiters that got the lock, whose keys are gone: the next
    /// waiter to join with the same TTL keeps one alive instead of having
    /// a lease granted (and this one revoked), two Raft writes fewer.
    pool: Mutex<Vec<Pooled>>,
}

#[derive(Clone, Copy)]
struct Pooled {
    lease: i64,
    seconds: i64,
    usable_until: Instant,
}

impl QueueState {
    fn place(&self, own: &str) -> Option<Place> {
        lock(&self.places).get(own).copied()
    }

    /// The own key of the waiter whose key starts with `own_prefix`, the
    /// revision of its last look, and how many were ahead then.
    fn find(&self, own_prefix: &str) -> Option<(String, i64, u64)> {
        let places = lock(&self.places);
        let (key, place) = places.range(own_prefix.to_owned()..).next()?;
        key.starts_with(own_prefix).then(|| (key.clone(), place.seen, place.ahead))
    }

    fn remember(&self, own: &str, place: Place) {
        let mut places = lock(&self.places);
        if places.len() > PRUNE_ABOVE {
            places.retain(|_, p| p.renewed.elapsed() < p.presence * 2);
            lock(&self.watches).retain(|own, _| places.contains_key(own));
        }
        places.insert(own.to_owned(), place);
    }

    /// Forget a waiter: its place (returned, if this call removed it) and
    /// its watch.
    fn forget(&self, own: &str) -> Option<Place> {
        lock(&self.watches).remove(own);
        lock(&self.places).remove(own)
    }

    /// Drop every parked watch: after a fail-over they may sit on a
    /// connection to a member that no longer hears anything.
    pub(super) fn drop_watches(&self) {
        lock(&self.watches).clear();
    }

    /// Pool the lease of `place`, whose key is gone.
    fn recycle(&self, place: &Place) {
        let seconds = super::lease_seconds(place.presence);
        // Kept alive last at `renewed`; unused within a second of its end.
        let life = Duration::from_secs(seconds as u64).saturating_sub(Duration::from_secs(1));
        let usable_until = place.renewed + life;
        let mut pool = lock(&self.pool);
        pool.retain(|p| p.usable_until > Instant::now() && p.lease != place.lease);
        if pool.len() < PRUNE_ABOVE && usable_until > Instant::now() {
            pool.push(Pooled {
                lease: place.lease,
                seconds,
                usable_until,
            });
        }
    }

    /// A pooled lease of `seconds`, if one is still usable.
    fn pooled(&self, seconds: i64) -> Option<i64> {
        let mut pool = lock(&self.pool);
        pool.retain(|p| p.usable_until > Instant::now());
        let i = pool.iter().position(|p| p.seconds == seconds)?;
        Some(pool.swap_remove(i).lease)
    }

    fn mark_woken(&self, own: &str) {
        if let Some(place) = lock(&self.places).get_mut(own) {
            place.woken = true;
        }
    }

    /// Whether the waiter was woken since its last look (and clear it).
    fn take_woken(&self, own: &str) -> bool {
        lock(&self.places)
            .get_mut(own)
            .is_some_and(|p| std::mem::take(&mut p.woken))
    }

    fn take_watch(&self, own: &str) -> Option<WatchStream> {
        lock(&self.watches).remove(own)
    }

    fn keep_watch(&self, own: &str, stream: WatchStream) {
        if lock(&self.places).contains_key(own) {
            lock(&self.watches).insert(own.to_owned(), stream);
        }
    }

    /// Whether the waiter's watch is open and has told nothing since it
    /// opened: its key is still there (not handed the lock, not passed
    /// over) and the lock key was not deleted (the lock was not freed).
    async fn watch_quiet(&self, own: &str) -> bool {
        let Some(mut stream) = self.take_watch(own) else {
            return false;
        };
        // A zero timeout polls the message once.
        match tokio::time::timeout(Duration::ZERO, stream.message()).await {
            Err(_) => {
                self.keep_watch(own, stream);
                true
            }
            Ok(Ok(Some(resp))) if touches(&resp, own) => {
                self.mark_woken(own);
                false
            }
            Ok(_) => false,
        }
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

/// Whether a watch message tells of an event on a key starting with `key`.
fn touches(resp: &etcd_client::WatchResponse, key: &str) -> bool {
    resp.events()
        .iter()
        .any(|e| e.kv().is_some_and(|kv| kv.key().starts_with(key.as_bytes())))
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
    async fn take(
        &self,
        full: &str,
        me: &str,
        ttl: Duration,
        granted: &Mutex<Option<i64>>,
        own_lease: Option<i64>,
        compares: Vec<Compare>,
    ) -> Result<Option<i64>> {
        let op = Operation::AcquireLock;
        let kept = lock(granted).take();
        let lease = match kept {
            Some(lease) => lease,
            None => self.grant(op, ttl).await?,
        };
        let put = PutOptions::new().with_lease(lease).with_prev_key();
        let txn = Txn::new().when(compares).and_then([
            TxnOp::put(full, me, Some(put)),
            TxnOp::delete(waiter_key(full, me), Some(DeleteOptions::new().with_prev_key())),
        ]);
        let Some(resp) = self.txn_on_lease(op, txn, lease).await? else {
            return Ok(None);
        };
        let mut old = replaced_leases(&resp);
        // The waiter's own lease goes to the pool instead.
        old.retain(|&l| l != lease && Some(l) != own_lease);
        self.revoke_later(old);
        Ok(Some(revision(&resp)))
    }

    /// Run a write `txn` that attaches `lease`: the response if its
    /// compare held; else (or on an error that proves nothing was written)
    /// the lease is revoked in the background. After a lost reply it may
    /// be in use, so it is left to expire.
    async fn txn_on_lease(&self, op: Operation, txn: Txn, lease: i64) -> Result<Option<TxnResponse>> {
        match self.txn(op, txn).await {
            Ok(resp) if resp.succeeded() => Ok(Some(resp)),
            Ok(_) => {
                self.revoke_later(vec![lease]);
                Ok(None)
            }
            Err(e) => {
                if e.kind() != ErrorKind::OutcomeUnknown {
                    self.revoke_later(vec![lease]);
                }
                Err(e)
            }
        }
    }

    pub(super) async fn queue_enter(&self, full: &str, entry: QueueEntry<'_>) -> Result<QueueTurn> {
        let op = Operation::AcquireLock;
        let me = entry.waiter.as_str();
        let own = waiter_key(full, me);
        let (start, end) = (queue_start(full), queue_end(full));
        // A lease granted for holding the lock but not used yet.
        let granted: Mutex<Option<i64>> = Mutex::new(None);
        let turn = retry::until_written(BACKEND, op, || async {
            let place = self.queue.place(&own);
            if let (Some(p), Some(presence)) = (place, entry.presence) {
                // Looked lately, and its watch says neither its key nor the
                // lock key was deleted since: not handed the lock, and the
                // lock not freed, so it can only renew. (A full look still
                // comes every half presence, to count those ahead.)
                if p.looked.elapsed() < presence / 2 && self.queue.watch_quiet(&own).await
                {
                    if p.renewed.elapsed() > presence / 3 {
                        if !self.keep_alive(p.lease).await? {
                            self.queue.forget(&own);
                            return Ok(None);
                        }
                        let renewed = Instant::now();
                        self.queue.remember(&own, Place { renewed, ..p });
                    }
                    return Ok(Some(QueueTurn::Waiting { ahead: p.ahead }));
                }
            }
            let created = place.map(|p| p.created);
            let look = if self.queue.take_woken(&own) && lock(&granted).is_none() {
                // Woken by its key's deletion, most likely a hand-over:
                // grant the lease to hold the lock with alongside the look.
                let (look, lease) =
                    tokio::join!(self.look(full, &own, created), self.grant(op, entry.ttl));
                if let Ok(lease) = lease {
                    *lock(&granted) = Some(lease);
                }
                look?
            } else {
                self.look(full, &own, created).await?
            };
            if let Some(held) = &look.lock {
                if held.value() != me.as_bytes() {
                    return self.wait(full, &own, entry, place, look).await;
                }
                // Handed to this waiter: hold it for the full TTL from now.
                let mine = Compare::value(full, CompareOp::Equal, me);
                let own_lease = place.map(|p| p.lease);
                let Some(_) = self.take(full, me, entry.ttl, &granted, own_lease, vec![mine]).await? else {
                    return Ok(None);
                };
                self.settle(&own, None);
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
                    let presence = entry.presence.unwrap_or_default();
                    let place = Place::new(kv.create_revision(), kv.lease(), presence, look.revision, look.ahead);
                    self.queue.remember(&own, place);
                    return Ok(None);
                }
                _ => return self.wait(full, &own, entry, place, look).await,
            };
            let free = Compare::version(full, CompareOp::Equal, 0);
            let head = head.with_range(end.as_str());
            let own_lease = place.map(|p| p.lease);
            let Some(taken) = self.take(full, me, entry.ttl, &granted, own_lease, vec![free, head]).await? else {
                return Ok(None);
            };
            self.settle(&own, None);
            Ok(Some(QueueTurn::Acquired(Lock::new(entry.waiter.clone(), taken as u64))))
        })
        .await;
        if turn.is_err() {
            self.queue.forget(&own);
        }
        let unused = lock(&granted).take();
        self.revoke_later(unused.into_iter().collect());
        turn
    }

    /// A waiter got the lock: its key is gone, its lease to the pool, by
    /// whichever of the releaser and the waiter forgets the place first
    /// (and only if `created` says it is that key's lease).
    fn settle(&self, own: &str, created: Option<i64>) {
        let removed = self.queue.forget(own);
        if let Some(place) = removed.filter(|p| created.is_none_or(|c| c == p.created)) {
            self.queue.recycle(&place);
        }
    }

    /// Keep a waiter's lease alive: false if it is gone.
    async fn keep_alive(&self, lease: i64) -> Result<bool> {
        self.call(read_step(Operation::AcquireLock), |mut c| async move {
            // The client sends one keep-alive and reads its answer, failing
            // with this error when the lease is gone (a release that
            // handed this waiter the lock revoked it).
            match c.lease_keep_alive(lease).await {
                Ok(_) => Ok(true),
                Err(etcd_client::Error::LeaseKeepAliveError(_)) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
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
            let pooled = self.queue.pooled(super::lease_seconds(presence));
            let lease = match pooled {
                Some(lease) if self.keep_alive(lease).await? => lease,
                _ => self.grant(op, presence).await?,
            };
            let absent = Compare::version(own, CompareOp::Equal, 0);
            let put = TxnOp::put(own, "", Some(PutOptions::new().with_lease(lease)));
            let txn = Txn::new().when([absent]).and_then([put]);
            let Some(resp) = self.txn_on_lease(op, txn, lease).await? else {
                return Ok(None);
            };
            let joined = revision(&resp);
            let place = Place::new(joined, lease, presence, joined, look.total);
            drop(self.queue.take_watch(own));
            self.queue.remember(own, place);
            return Ok(Some(QueueTurn::Waiting { ahead: look.total }));
        };
        if place.is_some_and(|p| p.ahead > 0) && look.ahead == 0 {
            // Now the head: its next watch must cover the lock key too.
            drop(self.queue.take_watch(own));
        }
        let mut place = match place {
            Some(p) => Place {
                looked: Instant::now(),
                seen: look.revision,
                ahead: look.ahead,
                ..p
            },
            None => Place::new(kv.create_revision(), kv.lease(), presence, look.revision, look.ahead),
        };
        if place.renewed.elapsed() > presence / 3 || place.lease != kv.lease() {
            place.lease = kv.lease();
            if !self.keep_alive(place.lease).await? {
                // Lapsed as we looked: the key goes, and the next call joins.
                self.queue.forget(own);
                return Ok(Some(QueueTurn::Waiting { ahead: look.ahead }));
            }
            place.renewed = Instant::now();
        }
        self.queue.remember(own, place);
        Ok(Some(QueueTurn::Waiting { ahead: look.ahead }))
    }

    /// Wait up to `timeout` for `full`'s notification, or for a hand-over
    /// to the waiter of this handle whose wake key it is.
    pub(super) async fn wait_woken(&self, full: &str, timeout: Duration) -> Result<bool> {
        let op = Operation::WaitNotified;
        let deadline = tokio::time::Instant::now() + timeout;
        let watched = watch_for(&self.queue, full);
        let own = watched.own.as_deref();
        // A waiter's watch stays open between its waits: nothing is missed
        // in between, and etcd is not asked for a new watch each time.
        let (mut stream, fresh) = match own.and_then(|own| self.queue.take_watch(own)) {
            Some(stream) => (stream, false),
            None => {
                let watch = async {
                    let mut stream = self
                        .call(op, |mut c| {
                            let (key, options) = (watched.key.clone(), watched.options.clone());
                            async move { c.watch(key, Some(options)).await }
                        })
                        .await?;
                    // On the same stream: the lock key's deletion.
                    if let Some(lock) = &watched.lock {
                        let options = WatchOptions::new().with_filters([WatchFilterType::NoPut]);
                        let added = stream.watch(lock.as_str(), Some(options)).await;
                        added.map_err(|e| self.watch_ended(op, Some(e)))?;
                    }
                    Ok::<_, crate::Error>(stream)
                };
                match tokio::time::timeout_at(deadline, watch).await {
                    Ok(stream) => (stream?, true),
                    Err(_) => return Ok(false),
                }
            }
        };
        let woken = |own: Option<&str>| {
            if let Some(own) = own {
                self.queue.mark_woken(own);
            }
            Ok(true)
        };
        let key = watched.key.as_str();
        let watches = if watched.lock.is_some() { 2 } else { 1 };
        let mut created = 0;
        // A new head's watch reads its keys once all its watches began; it
        // is parked only after that, so that a quiet parked watch always
        // means nothing changed since the last look.
        let mut check_pending = fresh && watched.check_after.is_some();
        loop {
            let resp = match tokio::time::timeout_at(deadline, stream.message()).await {
                Err(_) => {
                    if let (Some(own), false) = (own, check_pending) {
                        self.queue.keep_watch(own, stream);
                    }
                    return Ok(false);
                }
                Ok(Ok(Some(resp))) => resp,
                // A broken stream: an error, so that a waiter polls rather
                // than open watches in a loop.
                Ok(Ok(None)) => return Err(self.watch_ended(op, None)),
                Ok(Err(e)) => return Err(self.watch_ended(op, Some(e))),
            };
            // Its own key deleted (most likely handed the lock), or the lock
            // freed, or a cancelled watch: look again.
            if touches(&resp, key) {
                return woken(own);
            }
            if !resp.events().is_empty() || resp.canceled() {
                return Ok(true);
            }
            created += usize::from(resp.created());
            // Both watches began after the waiter's last look: a hand-over
            // or a freed lock in between shows as a key gone.
            let started = resp.header().map_or(0, |h| h.revision());
            let stale = watched.check_after.is_some_and(|seen| started > seen);
            if created == watches && check_pending {
                check_pending = false;
            } else {
                continue;
            }
            if stale {
                let count = GetOptions::new().with_prefix().with_count_only();
                let mut reads = vec![TxnOp::get(watched.key.as_str(), Some(count))];
                if let Some(lock) = &watched.lock {
                    let count = GetOptions::new().with_count_only();
                    reads.push(TxnOp::get(lock.as_str(), Some(count)));
                }
                let check = self.txn(read_step(op), Txn::new().and_then(reads));
                let found = match tokio::time::timeout_at(deadline, check).await {
                    Err(_) => return Ok(false),
                    Ok(found) => found?,
                };
                if gets(&found).iter().any(|g| g.count() == 0) {
                    return woken(own);
                }
            }
        }
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
            // The waiter's lease: pooled by its handle, or left to lapse.
            old.retain(|&l| l != lease && l != next.lease());
            self.revoke_later(old);
            self.settle(&waiter_key(full, waiter), Some(next.create_revision()));
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
