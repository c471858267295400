//! A lock guard on any [`AtomicStore`]: waits within one deadline, serves
//! waiters in order, renews itself, and says when the lock is lost.
//!
//! ```
//! use std::time::Duration;
//! use atomic_store::lock::DistributedLock;
//!
//! # async fn demo() -> atomic_store::Result<()> {
//! let store = atomic_store::open("memory://")?;
//! let lock = DistributedLock::new(store, "deploy", Duration::from_secs(5)).auto_renew(true);
//! let guard = lock.acquire(Duration::from_secs(2)).await?; // or Err(kind Timeout)
//! let token = guard.fencing_token(); // send it with every write the lock protects
//! # let _ = token;
//! let lost = guard.lost();           // cancelled before the lock could have expired
//! tokio::select! {
//!     _ = lost.cancelled() => { /* stop: another holder may exist soon */ }
//!     _ = async { /* critical section */ } => {}
//! }
//! guard.release().await?;
//! # Ok(()) }
//! # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
//! ```
//!
//! # How waiting works
//! - **Fair queue in the store.** A waiter takes a ticket (`incr` of
//!   `{key}:queue:next`) and may try the lock only when `{key}:queue:done`
//!   reaches the ticket before it; the holder advances `done` with
//!   `compare_and_set` when it releases. So 64 tasks contending for one key
//!   take turns, across processes and machines, and none starves.
//! - **Dead tickets are skipped.** While it waits, a waiter keeps a presence
//!   key `{key}:queue:{ticket}` alive (TTL `turn_timeout`). A ticket whose
//!   waiter gave up is skipped at once; one whose presence key stays missing
//!   for a quarter of `turn_timeout` (its waiter crashed) is skipped by the
//!   next waiter. The queue only orders waiters: mutual exclusion and
//!   fencing always come from the lock key itself, so a skipped or barging
//!   client can never make two holders.
//! - **Prompt wake-up.** A release wakes the waiter of this process whose
//!   turn it is at once (and only that one: no herd); across processes, waiters poll with decorrelated jitter
//!   whose ceiling grows with their place in the queue (the next in line
//!   polls every few milliseconds, the 60th far less), so waiting never
//!   hammers the server.
//! - **Loss signal.** A watchdog cancels [`LockGuard::lost`] when an
//!   extension reports the lock gone, and in any case a margin *before* the
//!   last successful acquire or extend could expire, never after.
//!
//! The lock key holds the lock id like any lock of the store, so other
//! clients (and the TypeScript original) see it as held; the `:queue:` keys
//! next to it are reserved for the queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use tokio_util::sync::CancellationToken;

use crate::rules::MAX_KEY_BYTES;
use crate::{AtomicStore, Error, ErrorKind, Lock, LockId, Operation, ReleaseOutcome, Result};

/// The presence value of a waiter that gave up.
const GONE: &str = "gone";

/// Longest lock key the recipe takes: room for its `:queue:…` suffixes.
pub const MAX_LOCK_KEY_BYTES: usize = MAX_KEY_BYTES - 32;

/// A named lock over a store, with its options.
#[derive(Clone)]
pub struct DistributedLock {
    store: Arc<dyn AtomicStore>,
    key: String,
    ttl: Duration,
    auto_renew: bool,
    turn_timeout: Duration,
}

impl std::fmt::Debug for DistributedLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DistributedLock")
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("auto_renew", &self.auto_renew)
            .finish()
    }
}

/// The last `done` ticket this process saw published, by lock key: a release
/// here wakes only the waiter whose turn it is, with no herd.
fn local_turns(key: &str) -> tokio::sync::watch::Sender<i64> {
    static TURNS: OnceLock<Mutex<HashMap<String, tokio::sync::watch::Sender<i64>>>> =
        OnceLock::new();
    let mut map = TURNS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if map.len() > 10_000 {
        map.retain(|_, s| s.receiver_count() > 0);
    }
    map.entry(key.to_owned())
        .or_insert_with(|| tokio::sync::watch::channel(0).0)
        .clone()
}

fn publish_turn(key: &str, done: i64) {
    local_turns(key).send_if_modified(|d| {
        let newer = done > *d;
        if newer {
            *d = done;
        }
        newer
    });
}

fn random_between(low: Duration, high: Duration) -> Duration {
    let span = high.saturating_sub(low).as_micros() as u64;
    let r = getrandom::u64().unwrap_or(0);
    low + Duration::from_micros(if span == 0 { 0 } else { r % span })
}

/// Decorrelated jitter: each pause is random between `base` and three times
/// the last one, capped.
struct Backoff {
    base: Duration,
    last: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff {
            base: Duration::from_millis(1),
            last: Duration::from_millis(1),
        }
    }

    fn next(&mut self, cap: Duration) -> Duration {
        self.last = random_between(self.base, self.last * 3).min(cap);
        self.last
    }
}

impl DistributedLock {
    /// A lock on `key` whose holder keeps it for `ttl` (unless renewed).
    pub fn new(store: Arc<dyn AtomicStore>, key: impl Into<String>, ttl: Duration) -> Self {
        DistributedLock {
            store,
            key: key.into(),
            ttl,
            auto_renew: false,
            turn_timeout: Duration::from_secs(2),
        }
    }

    /// Extend the lock in the background every `ttl / 3` while it is held.
    pub fn auto_renew(mut self, on: bool) -> Self {
        self.auto_renew = on;
        self
    }

    /// How long a waiter's place in the queue survives without it (default
    /// 2 s): a crashed waiter delays the queue by at most this long.
    pub fn turn_timeout(mut self, timeout: Duration) -> Self {
        self.turn_timeout = timeout;
        self
    }

    fn backend(&self) -> &'static str {
        self.store.capabilities().backend
    }

    fn queue_key(&self, part: &str) -> String {
        format!("{}:queue:{part}", self.key)
    }

    fn check(&self) -> Result<()> {
        if self.key.len() > MAX_LOCK_KEY_BYTES {
            return Err(Error::invalid(
                self.backend(),
                Operation::AcquireLock,
                format!("lock keys of the lock recipe are at most {MAX_LOCK_KEY_BYTES} bytes"),
            ));
        }
        crate::rules::check_ttl(Operation::AcquireLock, self.ttl)
            .map_err(|e| e.for_backend(self.backend()))
    }

    /// Take the lock now if it is free and nobody is queued for it.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>> {
        self.check()?;
        let next: i64 = match self.store.get(&self.queue_key("next")).await? {
            Some(v) => v.parse().unwrap_or(0),
            None => 0,
        };
        let done = self.done().await?;
        if next > done {
            return Ok(None);
        }
        let started = Instant::now();
        Ok(self
            .store
            .acquire_lock(&self.key, self.ttl)
            .await?
            .map(|lock| self.guard(lock, None, started)))
    }

    async fn done(&self) -> Result<i64> {
        Ok(match self.store.get(&self.queue_key("done")).await? {
            Some(v) => v.parse().unwrap_or(0),
            None => 0,
        })
    }

    /// Wait for the lock, in turn, for at most `wait`. Gives up with an error
    /// of kind [`Timeout`](ErrorKind::Timeout) when `wait` has passed.
    pub async fn acquire(&self, wait: Duration) -> Result<LockGuard> {
        self.check()?;
        let deadline = Instant::now() + wait;
        let mut turns = local_turns(&self.key).subscribe();
        let remote_wake = self.store.capabilities().notifications;
        let done_key = self.queue_key("done");
        let mut ticket = self.enqueue().await?;
        let mut backoff = Backoff::new();
        let mut refreshed = Instant::now();
        // (head ticket, when its presence was first seen missing)
        let mut missing_head: Option<(i64, Instant)> = None;
        loop {
            if Instant::now() >= deadline {
                self.abandon(ticket).await;
                return Err(Error::new(
                    ErrorKind::Timeout,
                    self.backend(),
                    Operation::AcquireLock,
                    format!("the lock {:?} was not acquired within {wait:?}", self.key),
                ));
            }
            let done = self.done().await?;
            let place = ticket - done - 1;
            if place < 0 {
                // Skipped (our presence key lapsed): queue again at the back.
                ticket = self.enqueue().await?;
                continue;
            }
            if place == 0 {
                let started = Instant::now();
                if let Some(lock) = self.store.acquire_lock(&self.key, self.ttl).await? {
                    let _ = self
                        .store
                        .delete(&self.queue_key(&ticket.to_string()))
                        .await;
                    return Ok(self.guard(lock, Some(ticket), started));
                }
            } else {
                // Skip a head whose waiter gave up or is gone. A missing
                // presence key gets a grace period: it may be a waiter
                // between taking its ticket and writing the key, which a
                // loaded machine can stretch well past a few milliseconds.
                let head = done + 1;
                let presence = self.store.get(&self.queue_key(&head.to_string())).await?;
                let grace = (self.turn_timeout / 4).max(Duration::from_millis(50));
                let skip = match (presence.as_deref(), missing_head) {
                    (Some(GONE), _) => true,
                    (None, Some((h, since))) if h == head => since.elapsed() >= grace,
                    (None, _) => {
                        missing_head = Some((head, Instant::now()));
                        false
                    }
                    (Some(_), _) => {
                        missing_head = None;
                        false
                    }
                };
                if skip {
                    self.advance(head).await;
                    missing_head = None;
                    continue;
                }
            }
            if refreshed.elapsed() >= self.turn_timeout / 3 {
                self.store
                    .set_with_ttl(
                        &self.queue_key(&ticket.to_string()),
                        "waiting",
                        self.turn_timeout,
                    )
                    .await?;
                refreshed = Instant::now();
            }
            // The next in line polls every few ms; later places, less often.
            // With notifications, a hand-over wakes the waiters at once and
            // polling is only the fallback, so it can be slower.
            let slower = if remote_wake { 4 } else { 1 };
            let cap = Duration::from_millis((4 + 4 * place.min(50) as u64) * slower);
            let pause = backoff
                .next(cap)
                .min(deadline.saturating_duration_since(Instant::now()));
            let remote = async {
                if remote_wake {
                    matches!(self.store.wait_notified(&done_key, pause).await, Ok(true))
                } else {
                    tokio::time::sleep(pause).await;
                    false
                }
            };
            tokio::select! {
                turn = turns.wait_for(|&d| d > done && d + 1 >= ticket) => {
                    if turn.is_ok() {
                        backoff = Backoff::new();
                    }
                }
                woken = remote => {
                    if woken {
                        backoff = Backoff::new();
                    }
                }
            }
        }
    }

    async fn enqueue(&self) -> Result<i64> {
        let ticket = self.store.incr(&self.queue_key("next")).await?;
        self.store
            .set_with_ttl(
                &self.queue_key(&ticket.to_string()),
                "waiting",
                self.turn_timeout,
            )
            .await?;
        Ok(ticket)
    }

    /// Leave the queue: mark the ticket gone so the waiters behind skip it
    /// at once, and pass the turn on if it was ours.
    async fn abandon(&self, ticket: i64) {
        let _ = self
            .store
            .set_with_ttl(
                &self.queue_key(&ticket.to_string()),
                GONE,
                self.turn_timeout,
            )
            .await;
        self.advance(ticket).await;
    }

    /// Mark `ticket` done if the ticket before it is, and tell this
    /// process's waiters.
    async fn advance(&self, ticket: i64) {
        let before = (ticket - 1).to_string();
        let advanced = self
            .store
            .compare_and_set(
                &self.queue_key("done"),
                Some(before.as_str()).filter(|_| ticket > 1),
                &ticket.to_string(),
                None,
            )
            .await;
        if matches!(advanced, Ok(true)) {
            publish_turn(&self.key, ticket);
            if self.store.capabilities().notifications {
                // Wake waiters in other processes at once (Redis pub/sub).
                let _ = self.store.notify(&self.queue_key("done")).await;
            }
        }
    }

    fn guard(&self, lock: Lock, ticket: Option<i64>, started: Instant) -> LockGuard {
        let lost = CancellationToken::new();
        let watchdog = tokio::spawn(watch(self.clone(), lock.id.clone(), started, lost.clone()));
        LockGuard {
            lock: self.clone(),
            held: lock,
            ticket,
            lost,
            watchdog: Some(watchdog),
            released: false,
        }
    }
}

/// Renews the lock (if asked) and cancels `lost` before it can expire.
async fn watch(lock: DistributedLock, id: LockId, acquired: Instant, lost: CancellationToken) {
    let margin = (lock.ttl / 10)
        .max(Duration::from_millis(5))
        .min(lock.ttl / 2);
    let mut valid_until = acquired + lock.ttl;
    let renew_every = lock.ttl / 3;
    let mut next_renew = acquired + renew_every;
    loop {
        let give_up_at = valid_until - margin;
        let wake = if lock.auto_renew {
            next_renew.min(give_up_at)
        } else {
            give_up_at
        };
        tokio::time::sleep_until(tokio::time::Instant::from_std(wake)).await;
        if Instant::now() >= give_up_at {
            lost.cancel();
            return;
        }
        let started = Instant::now();
        match lock.store.extend_lock(&lock.key, &id, lock.ttl).await {
            Ok(crate::ExtendOutcome::Extended) => {
                valid_until = started + lock.ttl;
                next_renew = started + renew_every;
            }
            Ok(_) => {
                lost.cancel();
                return;
            }
            // Try again soon; the margin still fires in time.
            Err(_) => next_renew = Instant::now() + Duration::from_millis(20),
        }
    }
}

/// A held lock. Release it with [`LockGuard::release`]; dropping it releases
/// it in the background and logs a warning.
pub struct LockGuard {
    lock: DistributedLock,
    held: Lock,
    ticket: Option<i64>,
    lost: CancellationToken,
    watchdog: Option<tokio::task::JoinHandle<()>>,
    released: bool,
}

impl std::fmt::Debug for LockGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("key", &self.lock.key)
            .field("fencing_token", &self.held.fencing_token)
            .field("lost", &self.lost.is_cancelled())
            .finish()
    }
}

impl LockGuard {
    /// The holder id.
    pub fn id(&self) -> &LockId {
        &self.held.id
    }

    /// The fencing token of this acquisition.
    pub fn fencing_token(&self) -> u64 {
        self.held.fencing_token
    }

    /// Cancelled when the lock is lost, or about to expire without renewal.
    pub fn lost(&self) -> CancellationToken {
        self.lost.clone()
    }

    /// Whether [`lost`](Self::lost) has fired.
    pub fn is_lost(&self) -> bool {
        self.lost.is_cancelled()
    }

    /// Release the lock and pass the turn to the next waiter.
    pub async fn release(mut self) -> Result<ReleaseOutcome> {
        self.released = true;
        self.finish().await
    }

    async fn finish(&mut self) -> Result<ReleaseOutcome> {
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        let outcome = self
            .lock
            .store
            .release_lock(&self.lock.key, &self.held.id)
            .await;
        if let Some(ticket) = self.ticket {
            self.lock.advance(ticket).await;
        }
        outcome
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        tracing::warn!(
            key = %self.lock.key,
            "lock guard dropped without release(); releasing it in the background"
        );
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut orphan = LockGuard {
                lock: self.lock.clone(),
                held: self.held.clone(),
                ticket: self.ticket,
                lost: self.lost.clone(),
                watchdog: None,
                released: true,
            };
            runtime.spawn(async move {
                let _ = orphan.finish().await;
            });
        }
    }
}
