//! `memory://`: an in-process store, sharded, with expired keys swept in the
//! background. `memory://NAME` shares one store between every `open` of that
//! name in the process; `memory://` alone is private to its handle.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::rules;
use crate::url::StoreUrl;
use crate::backends::checked::{self, checked_store, IfOwner, Swap, Write};
use crate::{
    Capabilities, ExpiryClock, HandedTo, Handover, KeyInfo, Lock, LockId, Operation, QueueEntry,
    QueueTurn, ReleaseOutcome, Result,
};

const BACKEND: &str = "memory";
const SHARDS: usize = 64;
const SWEEP_EVERY: Duration = Duration::from_millis(500);

#[derive(Debug)]
struct Entry {
    value: String,
    expires_at: Option<Instant>,
}

impl Entry {
    fn is_live(&self, now: Instant) -> bool {
        self.expires_at.is_none_or(|at| at > now)
    }
}

type Shard = HashMap<String, Entry>;

/// The waiters of one lock's native queue.
#[derive(Debug, Default)]
struct Queue {
    last_ticket: u64,
    order: BTreeMap<u64, LockId>,
    /// Each waiter's ticket and presence deadline.
    places: HashMap<LockId, (u64, Instant)>,
}

impl Queue {
    fn remove(&mut self, waiter: &LockId) {
        if let Some((ticket, _)) = self.places.remove(waiter) {
            self.order.remove(&ticket);
        }
    }

    fn drop_dead(&mut self, now: Instant) {
        let order = &mut self.order;
        self.places.retain(|_, (ticket, until)| {
            let live = *until > now;
            if !live {
                order.remove(ticket);
            }
            live
        });
    }

    /// Takes the first waiter whose presence is live, dropping dead ones.
    fn pop_live(&mut self, now: Instant) -> Option<LockId> {
        while let Some((_, waiter)) = self.order.pop_first() {
            if let Some((_, until)) = self.places.remove(&waiter) {
                if until > now {
                    return Some(waiter);
                }
            }
        }
        None
    }
}

#[derive(Debug)]
struct Inner {
    shards: Vec<Mutex<Shard>>,
    // One counter for the whole store: strictly increasing for every key.
    fencing: AtomicU64,
    // The last token issued per key, for `inspect`.
    last_tokens: Mutex<HashMap<String, u64>>,
    // Waiters of `wait_notified`, by key.
    notifies: Mutex<HashMap<String, Arc<tokio::sync::Notify>>>,
    // Native lock queues, by lock key. Taken after a shard, never before.
    queues: Mutex<HashMap<String, Queue>>,
}

impl Inner {
    fn new() -> Arc<Self> {
        let inner = Arc::new(Inner {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            fencing: AtomicU64::new(0),
            last_tokens: Mutex::new(HashMap::new()),
            notifies: Mutex::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
        });
        spawn_sweeper(Arc::downgrade(&inner));
        inner
    }

    fn shard(&self, key: &str) -> MutexGuard<'_, Shard> {
        // A multiply-xor hash, eight bytes at a time: it only spreads keys
        // over the shards, and each shard's map hashes with its own random
        // keys, so it need not resist chosen keys, only be cheap.
        const K: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut h = key.len() as u64;
        let mut chunks = key.as_bytes().chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or_default());
            h = (h ^ word).wrapping_mul(K).rotate_left(29);
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        h = (h ^ u64::from_le_bytes(tail)).wrapping_mul(K);
        let shard = &self.shards[((h >> 32) as usize) % SHARDS];
        // A panic while holding a shard cannot leave an entry half-written:
        // every update replaces whole entries.
        shard.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn sweep(&self) {
        let now = Instant::now();
        for shard in &self.shards {
            let mut map = shard.lock().unwrap_or_else(|e| e.into_inner());
            map.retain(|_, e| e.is_live(now));
        }
        let mut queues = self.queues();
        queues.retain(|_, q| {
            q.drop_dead(now);
            !q.order.is_empty()
        });
    }

    fn queues(&self) -> MutexGuard<'_, HashMap<String, Queue>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The next fencing token, for `key`; called under `key`'s shard lock,
    /// so tokens rise in acquisition order.
    fn issue_token(&self, key: &str) -> u64 {
        let token = self.fencing.fetch_add(1, Ordering::SeqCst) + 1;
        self.last_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key.to_owned(), token);
        token
    }

    fn last_token(&self, key: &str) -> Option<u64> {
        self.last_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(key)
            .copied()
    }
}

fn spawn_sweeper(inner: Weak<Inner>) {
    let spawned = std::thread::Builder::new()
        .name("atomic-store-memory-sweeper".into())
        .spawn(move || loop {
            std::thread::sleep(SWEEP_EVERY);
            match inner.upgrade() {
                Some(inner) => inner.sweep(),
                None => return,
            }
        });
    if let Err(e) = spawned {
        // Reads still hide expired keys; only memory reclamation is lost.
        tracing::warn!("memory store: could not start the expiry sweeper: {e}");
    }
}

/// Returns the live entry under `key`, removing it first if it has expired.
fn live<'a>(map: &'a mut Shard, key: &str, now: Instant) -> Option<&'a mut Entry> {
    if map.get(key).is_some_and(|e| !e.is_live(now)) {
        map.remove(key);
    }
    map.get_mut(key)
}

/// Append `n` in decimal, in place: `write!` goes through the formatting
/// machinery, which costs more than the rest of an `incr`.
fn push_decimal(out: &mut String, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    if n < 0 {
        out.push('-');
    }
    out.extend(digits[at..].iter().map(|&d| char::from(d)));
}

fn named_stores() -> &'static Mutex<HashMap<String, Weak<Inner>>> {
    static NAMED: OnceLock<Mutex<HashMap<String, Weak<Inner>>>> = OnceLock::new();
    NAMED.get_or_init(Default::default)
}

/// The in-process store behind `memory://`.
#[derive(Debug, Clone)]
pub struct MemoryStore {
    inner: Arc<Inner>,
    prefix: String,
}

impl MemoryStore {
    /// Open `memory://[NAME][?prefix=…]`: a name shares the store within
    /// the process.
    pub fn open_url(url: &str) -> Result<Self> {
        let url = StoreUrl::parse("memory", url, Some(&[]))?;
        let store = if url.location.is_empty() {
            MemoryStore::new()
        } else {
            MemoryStore::named(&url.location)
        };
        store.with_prefix(&url.prefix()?)
    }

    /// A new, private store with the default prefix.
    pub fn new() -> Self {
        MemoryStore {
            inner: Inner::new(),
            prefix: rules::DEFAULT_PREFIX.to_owned(),
        }
    }

    /// The store shared under `name` in this process (created on first use).
    pub fn named(name: &str) -> Self {
        let mut named = named_stores().lock().unwrap_or_else(|e| e.into_inner());
        named.retain(|_, weak| weak.strong_count() > 0);
        let inner = match named.get(name).and_then(Weak::upgrade) {
            Some(inner) => inner,
            None => {
                let inner = Inner::new();
                named.insert(name.to_owned(), Arc::downgrade(&inner));
                inner
            }
        };
        MemoryStore {
            inner,
            prefix: rules::DEFAULT_PREFIX.to_owned(),
        }
    }

    /// The same store seen under another key prefix.
    pub fn with_prefix(mut self, prefix: &str) -> Result<Self> {
        rules::check_prefix(BACKEND, prefix)?;
        self.prefix = prefix.to_owned();
        Ok(self)
    }

    fn entry(value: &str, ttl: Option<Duration>) -> Entry {
        Entry {
            value: value.to_owned(),
            expires_at: ttl.map(|t| Instant::now() + t),
        }
    }

    /// Read-modify-write on a counter-like value, keeping its TTL.
    fn update_number<T>(
        &self,
        key: String,
        next: impl FnOnce(Option<&str>) -> Result<(T, String)>,
    ) -> Result<T> {
        let now = Instant::now();
        let mut map = self.inner.shard(&key);
        let current = live(&mut map, &key, now);
        let (result, value) = next(current.as_ref().map(|e| e.value.as_str()))?;
        match current {
            Some(entry) => entry.value = value,
            None => {
                map.insert(
                    key,
                    Entry {
                        value,
                        expires_at: None,
                    },
                );
            }
        }
        Ok(result)
    }
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl checked::Backend for MemoryStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            native_ttl: true,
            expiry_clock: ExpiryClock::Local,
            ttl_resolution: Duration::from_millis(1),
            list_keys: true,
            notifications: true,
            ..Capabilities::new(BACKEND)
        }
    }

    const INCR_AT_ONCE: bool = true;

    fn incr_at_once(&self, key: &str) -> Option<Result<i64>> {
        thread_local! {
            // The stored key is composed here, so an existing counter
            // costs no allocation.
            static STORED: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
        }
        STORED.try_with(|stored| {
            let mut full = stored.try_borrow_mut().ok()?;
            full.clear();
            if !self.prefix.is_empty() {
                full.push_str(&self.prefix);
                full.push(':');
            }
            full.push_str(key);
            let mut map = self.inner.shard(&full);
            // A missing or expired counter is created by the general path.
            let entry = map.get_mut(full.as_str())?;
            if entry.expires_at.is_some_and(|at| at <= Instant::now()) {
                return None;
            }
            let next = match rules::next_counter(BACKEND, Some(&entry.value)) {
                Ok(next) => next,
                Err(e) => return Some(Err(e)),
            };
            entry.value.clear();
            push_decimal(&mut entry.value, next);
            Some(Ok(next))
        })
        .ok()
        .flatten()
    }

    async fn incr(&self, key: String) -> Result<i64> {
        self.update_number(key, |stored| {
            let next = rules::next_counter(BACKEND, stored)?;
            Ok((next, next.to_string()))
        })
    }

    async fn acquire_lock(&self, key: String, ttl: Duration) -> Result<Option<Lock>> {
        let id = LockId::generate();
        let entry = Self::entry(id.as_str(), Some(ttl));
        let now = Instant::now();
        let mut map = self.inner.shard(&key);
        if live(&mut map, &key, now).is_some() {
            return Ok(None);
        }
        let token = self.inner.issue_token(&key);
        map.insert(key, entry);
        Ok(Some(Lock::new(id, token)))
    }

    async fn if_owner(&self, key: String, id: &LockId, then: IfOwner) -> Result<Option<bool>> {
        let ttl = then.ttl();
        let now = Instant::now();
        let mut map = self.inner.shard(&key);
        let held_by_id = match live(&mut map, &key, now) {
            None => return Ok(None),
            Some(entry) => entry.value == id.as_str(),
        };
        if held_by_id {
            match ttl {
                None => drop(map.remove(&key)),
                Some(ttl) => {
                    if let Some(entry) = map.get_mut(&key) {
                        entry.expires_at = Some(Instant::now() + ttl);
                    }
                }
            }
        }
        Ok(Some(held_by_id))
    }

    async fn get(&self, key: String) -> Result<Option<String>> {
        let now = Instant::now();
        let mut map = self.inner.shard(&key);
        Ok(live(&mut map, &key, now).map(|e| e.value.clone()))
    }

    async fn write(&self, _op: Operation, key: String, write: Write<'_>) -> Result<()> {
        let entry = Self::entry(write.value, write.ttl);
        self.inner.shard(&key).insert(key, entry);
        Ok(())
    }

    async fn delete(&self, key: String) -> Result<bool> {
        let now = Instant::now();
        let removed = self.inner.shard(&key).remove(&key);
        Ok(removed.is_some_and(|e| e.is_live(now)))
    }

    async fn purge(&self, key: String) -> Result<()> {
        // Under the shard lock, as acquire_lock takes both, so a concurrent
        // acquire sees the key either whole or gone.
        let mut map = self.inner.shard(&key);
        map.remove(&key);
        self.inner
            .last_tokens
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
        self.inner.queues().remove(&key);
        Ok(())
    }

    async fn compare_and_set(&self, key: String, swap: Swap<'_>) -> Result<bool> {
        let entry = Self::entry(swap.new.value, swap.new.ttl);
        let now = Instant::now();
        let mut map = self.inner.shard(&key);
        let current = live(&mut map, &key, now).map(|e| e.value.as_str());
        if current != swap.expected {
            return Ok(false);
        }
        map.insert(key, entry);
        Ok(true)
    }

    async fn assign_nonce(&self, key: String, pending: u64) -> Result<u64> {
        self.update_number(key, |stored| {
            let next = rules::next_nonce(BACKEND, stored, pending)?;
            Ok((next, next.to_string()))
        })
    }

    async fn inspect(&self, key: String) -> Result<KeyInfo> {
        let now = Instant::now();
        let (value, ttl) = {
            let mut map = self.inner.shard(&key);
            match live(&mut map, &key, now) {
                Some(e) => (Some(e.value.clone()), e.expires_at.map(|at| at - now)),
                None => (None, None),
            }
        };
        Ok(KeyInfo::new(value, ttl, self.inner.last_token(&key)))
    }

    async fn keys(&self, start: String, limit: usize) -> Result<Vec<String>> {
        let now = Instant::now();
        let mut found = Vec::new();
        for shard in &self.inner.shards {
            let map = shard.lock().unwrap_or_else(|e| e.into_inner());
            for (k, e) in map.iter() {
                if found.len() >= limit {
                    return Ok(found);
                }
                if e.is_live(now) && k.starts_with(&start) {
                    found.push(k.clone());
                }
            }
        }
        Ok(found)
    }

    async fn lock_queue_enter(&self, key: String, entry: QueueEntry<'_>) -> Result<QueueTurn> {
        let waiter = entry.waiter;
        let now = Instant::now();
        let mut map = self.inner.shard(&key);
        let mut queues = self.inner.queues();
        let queue = queues.entry(key.clone()).or_default();
        // Some(true): handed to this waiter by a release.
        let held = live(&mut map, &key, now).map(|held| {
            let ours = held.value == waiter.as_str();
            if ours {
                held.expires_at = Some(now + entry.ttl);
            }
            ours
        });
        queue.drop_dead(now);
        let first = queue.order.values().next();
        let turn = if held == Some(true) {
            queue.remove(waiter);
            let token = self.inner.last_token(&key).unwrap_or(0);
            QueueTurn::Acquired(Lock::new(waiter.clone(), token))
        } else if held.is_none() && first.is_none_or(|w| w == waiter) {
            queue.remove(waiter);
            map.insert(key.clone(), Self::entry(waiter.as_str(), Some(entry.ttl)));
            let token = self.inner.issue_token(&key);
            QueueTurn::Acquired(Lock::new(waiter.clone(), token))
        } else if let Some(presence) = entry.presence {
            let ticket = match queue.places.get(waiter) {
                Some(&(ticket, _)) => ticket,
                None => {
                    queue.last_ticket += 1;
                    queue.order.insert(queue.last_ticket, waiter.clone());
                    queue.last_ticket
                }
            };
            queue.places.insert(waiter.clone(), (ticket, now + presence));
            let ahead = queue.order.range(..ticket).count() as u64;
            QueueTurn::Waiting { ahead }
        } else {
            QueueTurn::Waiting {
                ahead: queue.order.len() as u64,
            }
        };
        if queue.order.is_empty() {
            queues.remove(&key);
        }
        Ok(turn)
    }

    async fn lock_queue_release(
        &self,
        key: String,
        id: &LockId,
        handover_ttl: Duration,
    ) -> Result<Handover> {
        let now = Instant::now();
        let mut map = self.inner.shard(&key);
        let mut queues = self.inner.queues();
        if let Some(queue) = queues.get_mut(&key) {
            queue.remove(id);
        }
        let outcome = match live(&mut map, &key, now) {
            Some(held) if held.value == id.as_str() => ReleaseOutcome::Released,
            Some(_) => return Ok(Handover {
                outcome: ReleaseOutcome::HeldByOther,
                next: None,
            }),
            None => ReleaseOutcome::NotHeld,
        };
        let next = queues.get_mut(&key).and_then(|q| q.pop_live(now));
        if queues.get(&key).is_some_and(|q| q.order.is_empty()) {
            queues.remove(&key);
        }
        let Some(waiter) = next else {
            map.remove(&key);
            return Ok(Handover {
                outcome,
                next: None,
            });
        };
        map.insert(key.clone(), Self::entry(waiter.as_str(), Some(handover_ttl)));
        let fencing_token = self.inner.issue_token(&key);
        Ok(Handover {
            outcome,
            next: Some(HandedTo {
                waiter,
                fencing_token,
                valid_for: handover_ttl,
            }),
        })
    }

    async fn notify(&self, key: String) -> Result<()> {
        if let Some(n) = self
            .inner
            .notifies
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            n.notify_waiters();
        }
        Ok(())
    }

    async fn wait_notified(&self, key: String, timeout: Duration) -> Result<bool> {
        let notify = {
            let mut map = self
                .inner
                .notifies
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            map.retain(|_, n| Arc::strong_count(n) > 1);
            Arc::clone(map.entry(key).or_default())
        };
        Ok(tokio::time::timeout(timeout, notify.notified())
            .await
            .is_ok())
    }
}

checked_store!(MemoryStore, BACKEND);

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AtomicStore;

    #[tokio::test]
    async fn named_stores_share_state_and_anonymous_ones_do_not() {
        let a = MemoryStore::named("memory-unit-shared");
        let b = MemoryStore::named("memory-unit-shared");
        let c = MemoryStore::new();
        a.set("k", "v").await.unwrap();
        assert_eq!(b.get("k").await.unwrap().as_deref(), Some("v"));
        assert_eq!(c.get("k").await.unwrap(), None);
    }

    #[tokio::test]
    async fn sweeper_removes_expired_entries() {
        let s = MemoryStore::new();
        s.set_with_ttl("gone", "v", Duration::from_millis(5))
            .await
            .unwrap();
        s.set("kept", "v").await.unwrap();
        tokio::time::sleep(SWEEP_EVERY * 3).await;
        let total: usize = s.inner.shards.iter().map(|m| m.lock().unwrap().len()).sum();
        assert_eq!(total, 1);
    }

    /// The in-place path for an existing counter agrees with the general
    /// one: long keys, TTLs, text values, overflow, expiry, no prefix.
    #[tokio::test]
    async fn counters_count_the_same_on_either_path() {
        let s = MemoryStore::new().with_prefix("p").unwrap();
        let long = "k".repeat(1000);
        for key in ["short", long.as_str()] {
            assert_eq!(s.incr(key).await.unwrap(), 1);
            assert_eq!(s.incr(key).await.unwrap(), 2);
            // An existing counter takes the in-place path.
            assert_eq!(checked::Backend::incr_at_once(&s, key).unwrap().unwrap(), 3);
        }
        s.set_with_ttl("ttl", "41", Duration::from_millis(400)).await.unwrap();
        assert_eq!(s.incr("ttl").await.unwrap(), 42);
        assert!(s.inspect("ttl").await.unwrap().ttl.is_some(), "incr keeps the TTL");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(s.incr("ttl").await.unwrap(), 1, "an expired counter starts again");
        s.set("text", "abc").await.unwrap();
        let e = s.incr("text").await.unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::NotAnInteger);
        assert_eq!(s.get("text").await.unwrap().as_deref(), Some("abc"));
        s.set("max", &i64::MAX.to_string()).await.unwrap();
        assert_eq!(s.incr("max").await.unwrap_err().kind(), crate::ErrorKind::Overflow);
        for n in [0, 7, -1, -10, 1234567890, i64::MAX, i64::MIN] {
            let mut out = String::new();
            push_decimal(&mut out, n);
            assert_eq!(out, n.to_string());
        }
        let unprefixed = MemoryStore::new().with_prefix("").unwrap();
        unprefixed.incr("n").await.unwrap();
        assert_eq!(unprefixed.incr("n").await.unwrap(), 2);
    }
}
