//! The lock recipe on every backend: mutual exclusion with 32 tasks and a
//! barging client, fencing, fairness, the deadline, renewal, the loss
//! signal under store faults and theft, skipping crashed waiters,
//! `try_acquire` and prompt wake-up. (Exclusion across OS processes is
//! tested through the CLI's `lock-contended` bench workload.)
//!
//! The queue's keys (`{key}:queue:next`, `:done`, `:{ticket}`) are part of
//! the recipe's documented layout; tests use them to play crashed waiters.

mod support;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atomic_store::lock::{
    DistributedLock, LockGuard, Semaphore, MAX_LOCK_KEY_BYTES, MAX_PERMITS, MAX_SEMAPHORE_KEY_BYTES,
};
use atomic_store::{
    AtomicStore, Capabilities, Error, ErrorKind, EvalValue, ExtendOutcome, Handover, KeyInfo, Lock,
    LockId, Operation, QueueEntry, QueueTurn, ReleaseOutcome, Result,
};
use tokio::task::{JoinHandle, JoinSet};

type Store = Arc<dyn AtomicStore>;

fn key(name: &str) -> String {
    format!("lock-recipe:{}:{name}", &LockId::generate().as_str()[..10])
}

/// What a [`FaultStore`] does to `extend_lock`.
#[derive(Debug, Clone, Copy, PartialEq)]
enum ExtendFault {
    Healthy,
    /// Never answers.
    Hang,
    /// Applies the extension, then answers this late.
    LateAnswer(Duration),
    /// Fails at once with a temporary error; nothing is sent.
    Fail,
    /// Fails like `Fail` this many times, then works.
    FailFirst(usize),
    /// Works this many times, then never answers.
    HangAfter(usize),
}

/// A store that delegates everything to another one and breaks only what a
/// test asks for, counting calls and recording successful lock calls.
#[derive(Debug)]
struct FaultStore {
    inner: Store,
    extend: ExtendFault,
    /// Claims notifications but never delivers one: waiters can only be
    /// woken in-process (or by their own polling).
    deaf: bool,
    /// Every `wait_notified` waits this long whatever it was asked, so a
    /// waiter's polling is slow and a prompt hand-over can only come from a
    /// wake-up.
    slow_polls: Option<Duration>,
    /// Broken on purpose: `acquire_lock` takes the key from any holder.
    grants_every_lock: bool,
    /// Answers `set_with_ttl` with success but writes nothing: a waiter's
    /// presence key never appears (as if it lapsed during a long pause).
    drops_ttl_writes: bool,
    /// Once set, every `get` fails with a temporary error.
    failing_reads: AtomicBool,
    /// Claims notifications, but every `wait_notified` fails at once (a
    /// refused subscription).
    failing_notifications: bool,
    /// Once set, no call is ever answered (a server that stopped).
    silent: AtomicBool,
    /// Forwards the native queue's calls (else the recipe uses plain keys).
    native: bool,
    calls: AtomicUsize,
    /// `wait_notified` calls that a notification answered.
    woken: AtomicUsize,
    extend_calls: AtomicUsize,
    /// `set_with_ttl` calls: a waiter's presence writes.
    ttl_writes: AtomicUsize,
    /// (sent, answered) of every acquire and extend that succeeded.
    successes: Mutex<Vec<(Instant, Instant)>>,
}

impl FaultStore {
    fn over(inner: Store) -> Self {
        FaultStore {
            inner,
            extend: ExtendFault::Healthy,
            deaf: false,
            slow_polls: None,
            grants_every_lock: false,
            drops_ttl_writes: false,
            failing_reads: AtomicBool::new(false),
            failing_notifications: false,
            silent: AtomicBool::new(false),
            native: false,
            calls: AtomicUsize::new(0),
            woken: AtomicUsize::new(0),
            extend_calls: AtomicUsize::new(0),
            ttl_writes: AtomicUsize::new(0),
            successes: Mutex::new(Vec::new()),
        }
    }

    fn extend(self, fault: ExtendFault) -> Self {
        FaultStore {
            extend: fault,
            ..self
        }
    }

    fn deaf(self) -> Self {
        FaultStore { deaf: true, ..self }
    }

    fn failing_notifications(self) -> Self {
        FaultStore {
            failing_notifications: true,
            ..self
        }
    }

    fn slow_polls(self, wait: Duration) -> Self {
        FaultStore {
            slow_polls: Some(wait),
            ..self
        }
    }

    fn native(self) -> Self {
        FaultStore {
            native: true,
            ..self
        }
    }

    fn grants_every_lock(self) -> Self {
        FaultStore {
            grants_every_lock: true,
            ..self
        }
    }

    fn drops_ttl_writes(self) -> Self {
        FaultStore {
            drops_ttl_writes: true,
            ..self
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// Count a call; once `silent` is set, never answer it.
    async fn count(&self) {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.silent.load(Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
    }

    fn succeeded(&self, sent: Instant) {
        self.successes.lock().unwrap().push((sent, Instant::now()));
    }

    fn refused(&self) -> Error {
        Error::new(
            ErrorKind::Unavailable,
            self.inner.capabilities().backend,
            Operation::ExtendLock,
            "injected fault: the extension was refused",
        )
    }
}

#[async_trait]
impl AtomicStore for FaultStore {
    fn capabilities(&self) -> Capabilities {
        let mut caps = self.inner.capabilities();
        caps.notifications |= self.deaf || self.failing_notifications;
        caps
    }
    async fn incr(&self, key: &str) -> Result<i64> {
        self.count().await;
        self.inner.incr(key).await
    }
    async fn acquire_lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock>> {
        self.count().await;
        let sent = Instant::now();
        let mut lock = self.inner.acquire_lock(key, ttl).await?;
        if lock.is_none() && self.grants_every_lock {
            let id = LockId::generate();
            self.inner.set_with_ttl(key, id.as_str(), ttl).await?;
            lock = Some(Lock::new(id, 0));
        }
        if lock.is_some() {
            self.succeeded(sent);
        }
        Ok(lock)
    }
    async fn release_lock(&self, key: &str, id: &LockId) -> Result<ReleaseOutcome> {
        self.count().await;
        self.inner.release_lock(key, id).await
    }
    async fn extend_lock(&self, key: &str, id: &LockId, ttl: Duration) -> Result<ExtendOutcome> {
        self.count().await;
        let attempt = self.extend_calls.fetch_add(1, Ordering::SeqCst);
        let sent = Instant::now();
        let outcome = match self.extend {
            ExtendFault::Hang => std::future::pending().await,
            ExtendFault::HangAfter(n) if attempt >= n => std::future::pending().await,
            ExtendFault::Fail => return Err(self.refused()),
            ExtendFault::FailFirst(n) if attempt < n => return Err(self.refused()),
            ExtendFault::LateAnswer(delay) => {
                let outcome = self.inner.extend_lock(key, id, ttl).await?;
                tokio::time::sleep(delay).await;
                outcome
            }
            ExtendFault::Healthy | ExtendFault::FailFirst(_) | ExtendFault::HangAfter(_) => {
                self.inner.extend_lock(key, id, ttl).await?
            }
        };
        if outcome == ExtendOutcome::Extended {
            self.succeeded(sent);
        }
        Ok(outcome)
    }
    async fn get(&self, key: &str) -> Result<Option<String>> {
        self.count().await;
        if self.failing_reads.load(Ordering::SeqCst) {
            return Err(Error::new(
                ErrorKind::Unavailable,
                self.inner.capabilities().backend,
                Operation::Get,
                "injected fault: the read failed",
            ));
        }
        self.inner.get(key).await
    }
    async fn set(&self, key: &str, value: &str) -> Result<()> {
        self.count().await;
        self.inner.set(key, value).await
    }
    async fn set_with_ttl(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        self.count().await;
        self.ttl_writes.fetch_add(1, Ordering::SeqCst);
        if self.drops_ttl_writes {
            return Ok(());
        }
        self.inner.set_with_ttl(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.count().await;
        self.inner.delete(key).await
    }
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        self.count().await;
        self.inner.compare_and_set(key, expected, new, ttl).await
    }
    async fn assign_nonce(&self, key: &str, pending: u64) -> Result<u64> {
        self.count().await;
        self.inner.assign_nonce(key, pending).await
    }
    async fn eval(&self, script: &str, keys: &[&str], args: &[&str]) -> Result<EvalValue> {
        self.count().await;
        self.inner.eval(script, keys, args).await
    }
    async fn inspect(&self, key: &str) -> Result<KeyInfo> {
        self.count().await;
        self.inner.inspect(key).await
    }
    async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        self.count().await;
        self.inner.keys(prefix, limit).await
    }
    async fn notify(&self, key: &str) -> Result<()> {
        self.count().await;
        if self.deaf {
            return Ok(());
        }
        self.inner.notify(key).await
    }
    async fn wait_notified(&self, key: &str, timeout: Duration) -> Result<bool> {
        self.count().await;
        let timeout = self.slow_polls.unwrap_or(timeout);
        if self.failing_notifications {
            return Err(Error::new(
                ErrorKind::Unavailable,
                self.inner.capabilities().backend,
                Operation::WaitNotified,
                "injected fault: the subscription was refused",
            ));
        }
        if self.deaf {
            tokio::time::sleep(timeout).await;
            return Ok(false);
        }
        let woken = self.inner.wait_notified(key, timeout).await;
        if matches!(woken, Ok(true)) {
            self.woken.fetch_add(1, Ordering::SeqCst);
        }
        woken
    }
    async fn purge(&self, key: &str) -> Result<()> {
        self.inner.purge(key).await
    }
    async fn lock_queue_enter(&self, key: &str, entry: QueueEntry<'_>) -> Result<QueueTurn> {
        if !self.native {
            return Err(Error::unsupported(
                self.inner.capabilities().backend,
                Operation::AcquireLock,
            ));
        }
        self.count().await;
        self.inner.lock_queue_enter(key, entry).await
    }
    async fn lock_queue_release(&self, key: &str, id: &LockId, ttl: Duration) -> Result<Handover> {
        if !self.native {
            return Err(Error::unsupported(
                self.inner.capabilities().backend,
                Operation::ReleaseLock,
            ));
        }
        self.count().await;
        self.inner.lock_queue_release(key, id, ttl).await
    }
}

/// Panics unless the holder had proof that its lock was live at every
/// moment until its loss signal fired at `fired`. A successful acquire or
/// extend proves the lock live until its send time + `ttl` (the server
/// started the TTL no earlier), from the moment its answer arrived.
fn assert_signalled_in_time(store: &FaultStore, ttl: Duration, fired: Instant) {
    let mut successes = store.successes.lock().unwrap().clone();
    successes.sort_by_key(|&(_, answered)| answered);
    let mut proof: Option<Instant> = None;
    for (sent, answered) in successes.into_iter().filter(|&(_, a)| a <= fired) {
        if let Some(until) = proof {
            assert!(
                answered < until,
                "the guard still claimed the lock {:?} after its proof had run out",
                answered - until
            );
        }
        proof = Some(proof.map_or(sent + ttl, |p| p.max(sent + ttl)));
    }
    let until = proof.expect("no successful acquire was recorded");
    assert!(
        fired < until,
        "the loss signal fired {:?} after the lock could have expired",
        fired - until
    );
}

/// Waits (at most `limit`) for the loss signal; returns when it was seen.
async fn lost_within(guard: &LockGuard, limit: Duration) -> Instant {
    tokio::time::timeout(limit, guard.lost().cancelled())
        .await
        .unwrap_or_else(|_| panic!("the loss signal had not fired after {limit:?}"));
    Instant::now()
}

/// Waits (bounded) until the queue of `k` has handed out `ticket` (the
/// holder's ticket is 1). On a store with a native queue: until
/// `ticket - 1` waiters are queued behind a holder.
async fn wait_for_ticket(store: &Store, k: &str, ticket: i64) {
    let next = format!("{k}:queue:next");
    for _ in 0..2000 {
        let taken = match queued_natively(store, k).await {
            Some(waiting) => waiting as i64 + 1,
            None => store
                .get(&next)
                .await
                .unwrap()
                .map_or(0, |v| v.parse::<i64>().unwrap()),
        };
        if taken >= ticket {
            return;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    panic!("ticket {ticket} of {k} was never taken");
}

/// How many live waiters the store's native queue of `k` holds, or `None`
/// when the store has no native queue. Only while `k` is held: on a free
/// lock with no waiters, the probe takes it.
async fn queued_natively(store: &Store, k: &str) -> Option<u64> {
    let probe = QueueEntry {
        waiter: &LockId::generate(),
        ttl: Duration::from_secs(10),
        presence: None,
    };
    match store.lock_queue_enter(k, probe).await {
        Ok(QueueTurn::Waiting { ahead }) => Some(ahead),
        Ok(turn) => panic!("the probe of a held lock took it: {turn:?}"),
        Err(e) if e.kind() == ErrorKind::Unsupported => None,
        Err(e) => panic!("{e}"),
    }
}

/// `store` without its native queue, so that the recipe keeps its queue
/// in plain keys (the path any third-party store takes).
fn ticketed(store: Store) -> Store {
    Arc::new(FaultStore::over(store))
}

/// Plays waiters that took a ticket and crashed before writing their
/// presence key.
async fn take_dead_tickets(store: &Store, k: &str, count: usize) {
    for _ in 0..count {
        store.incr(&format!("{k}:queue:next")).await.unwrap();
    }
}

/// A waiter in the background: the guard and when it was granted.
fn spawn_waiter(
    lock: &DistributedLock,
    wait: Duration,
) -> JoinHandle<(atomic_store::Result<LockGuard>, Instant)> {
    let lock = lock.clone();
    tokio::spawn(async move {
        let guard = lock.acquire(wait).await;
        (guard, Instant::now())
    })
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// The median time of a read on `store`, to scale bounds to its speed.
async fn read_latency(store: &Store) -> Duration {
    let mut samples = Vec::new();
    for _ in 0..15 {
        let started = Instant::now();
        store.get(&key("latency")).await.unwrap();
        samples.push(started.elapsed());
    }
    median(samples)
}

async fn join_first_panic<T: 'static>(tasks: &mut JoinSet<T>) -> Vec<T> {
    let mut results = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(v) => results.push(v),
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        }
    }
    results
}

/// Turns served in order: in `turns` (the tasks that took them, from the
/// first half of a run), no task got a second turn before another got its
/// first one, by Jain's fairness index over the `tasks` tasks.
fn assert_fair_turns(turns: impl Iterator<Item = usize>, tasks: usize) {
    let mut per_task = vec![0f64; tasks];
    for task in turns {
        per_task[task] += 1.0;
    }
    let sum: f64 = per_task.iter().sum();
    let squares: f64 = per_task.iter().map(|x| x * x).sum();
    let jain = sum * sum / (tasks as f64 * squares);
    assert!(
        jain >= 0.9,
        "Jain's fairness index {jain:.2} over the first half: {per_task:?}"
    );
}

async fn exclusion_fencing_and_fairness(store: Store) {
    // A long turn timeout: a waiter starved of CPU on a loaded machine must
    // not lose its place, since this checks the order of live waiters.
    let k = key("mutex");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(10))
        .turn_timeout(Duration::from_secs(10));
    let inside = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let finished = Arc::new(AtomicBool::new(false));
    // A client that ignores the queue and takes the lock key directly:
    // exclusion must come from the store's lock, not from the queue.
    let barger = {
        let (store, k) = (Arc::clone(&store), k.clone());
        let (inside, order, finished) = (
            Arc::clone(&inside),
            Arc::clone(&order),
            Arc::clone(&finished),
        );
        tokio::spawn(async move {
            let mut tries = 0;
            while !finished.load(Ordering::SeqCst) && tries < 20_000 {
                tries += 1;
                // An error (say, an unknown outcome on a loaded server)
                // cannot make two holders; the queue waits it out.
                if let Ok(Some(held)) = store.acquire_lock(&k, Duration::from_secs(5)).await {
                    assert_eq!(
                        inside.fetch_add(1, Ordering::SeqCst),
                        0,
                        "two holders at once: a barging client was granted a held lock"
                    );
                    order.lock().unwrap().push((usize::MAX, held.fencing_token));
                    tokio::time::sleep(Duration::from_micros(300)).await;
                    inside.fetch_sub(1, Ordering::SeqCst);
                    if let Ok(outcome) = store.release_lock(&k, &held.id).await {
                        assert_eq!(
                            outcome,
                            ReleaseOutcome::Released,
                            "the lock key was taken from the barging client"
                        );
                    }
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            tries
        })
    };
    let (tasks, rounds) = (32, 4);
    let mut holders = JoinSet::new();
    for task in 0..tasks {
        let (lock, store, k) = (lock.clone(), Arc::clone(&store), k.clone());
        let (inside, order) = (Arc::clone(&inside), Arc::clone(&order));
        holders.spawn(async move {
            for _ in 0..rounds {
                // Generous: 31 waiters polling a slow server (DynamoDB
                // Local on a loaded machine) can make a round take a minute.
                let guard = lock.acquire(Duration::from_secs(180)).await.unwrap();
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                order.lock().unwrap().push((task, guard.fencing_token()));
                assert_eq!(
                    store.get(&k).await.unwrap().as_deref(),
                    Some(guard.id().as_str()),
                    "the lock key does not hold the guard's id while the guard is held"
                );
                tokio::time::sleep(Duration::from_micros(300)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                assert_eq!(
                    guard.release().await.unwrap(),
                    ReleaseOutcome::Released,
                    "the lock key was taken from its holder"
                );
            }
        });
    }
    join_first_panic(&mut holders).await;
    finished.store(true, Ordering::SeqCst);
    let tries = barger
        .await
        .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
    assert!(tries > 0);
    let order = order.lock().unwrap();
    let queued: Vec<_> = order.iter().filter(|(t, _)| *t < tasks).collect();
    assert_eq!(queued.len(), tasks * rounds);
    assert!(
        order.windows(2).all(|w| w[0].1 < w[1].1),
        "fencing tokens did not rise"
    );
    // Turns are served in order: no task gets a second turn in a round
    // before another gets its first one. Jain's index over per-task
    // acquisitions in the first half of the run:
    let half = &queued[..queued.len() / 2];
    assert_fair_turns(half.iter().map(|(task, _)| *task), tasks);
}

async fn deadline_is_honoured(store: Store) {
    let k = key("deadline");
    let lock = DistributedLock::new(Arc::clone(&store), k, Duration::from_secs(10));
    let holder = lock.acquire(Duration::from_secs(5)).await.unwrap();
    let started = Instant::now();
    let err = lock.acquire(Duration::from_millis(300)).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    holder.release().await.unwrap();
    // The abandoned ticket does not block the next waiter.
    let started = Instant::now();
    let next = lock.acquire(Duration::from_secs(5)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    next.release().await.unwrap();
}

async fn unbounded_wait_is_accepted(store: Store) {
    let k = key("forever");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(10));
    let holder = lock.acquire(Duration::MAX).await.unwrap();
    let waiter = spawn_waiter(&lock, Duration::MAX);
    wait_for_ticket(&store, &k, 2).await;
    holder.release().await.unwrap();
    let (guard, _) = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .expect("the waiter was not served after the release")
        .unwrap();
    assert_eq!(
        guard.unwrap().release().await.unwrap(),
        ReleaseOutcome::Released
    );
}

async fn a_bad_turn_timeout_is_refused_before_anything_is_written(store: Store) {
    let k = key("bad-turn");
    for turn in [Duration::ZERO, Duration::from_secs(366 * 24 * 3600)] {
        let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(10))
            .turn_timeout(turn);
        let err = lock.acquire(Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(err.message().contains("turn_timeout"), "{err}");
        let err = lock.try_acquire().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    assert_eq!(store.get(&format!("{k}:queue:next")).await.unwrap(), None);
    assert_eq!(store.get(&k).await.unwrap(), None);
}

/// The recipe's key limit is exact: its queue keys add at most 32 bytes.
async fn lock_keys_up_to_the_limit_are_accepted(store: Store) {
    let base = key("long");
    let at_limit = format!("{base}{}", "k".repeat(MAX_LOCK_KEY_BYTES - base.len()));
    let lock = DistributedLock::new(
        Arc::clone(&store),
        at_limit.clone(),
        Duration::from_secs(10),
    );
    let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    let over = format!("{at_limit}k");
    let lock = DistributedLock::new(Arc::clone(&store), over.clone(), Duration::from_secs(10));
    let err = lock.acquire(Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    assert!(err.message().contains("at most"), "{err}");
    assert_eq!(
        store.get(&format!("{over}:queue:next")).await.unwrap(),
        None
    );
}

async fn renewal_keeps_the_lock_past_several_ttls(store: Store) {
    let k = key("renewed");
    let ttl = Duration::from_millis(900).max(store.capabilities().ttl_resolution * 3);
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), ttl).auto_renew(true);
    let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(ttl * 3).await;
    assert!(!guard.is_lost());
    assert_eq!(
        store.get(&k).await.unwrap().as_deref(),
        Some(guard.id().as_str())
    );
    assert!(store.acquire_lock(&k, ttl).await.unwrap().is_none());
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
}

async fn loss_signal_fires_before_expiry(store: Store) {
    // Without renewal: the signal fires before the TTL runs out.
    let ttl = Duration::from_millis(900).max(store.capabilities().ttl_resolution * 3);
    let k = key("expiring");
    let recorded = Arc::new(FaultStore::over(Arc::clone(&store)));
    let lock = DistributedLock::new(recorded.clone(), k.clone(), ttl);
    let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
    let fired = lost_within(&guard, ttl * 2).await;
    assert_signalled_in_time(&recorded, ttl, fired);
    assert_eq!(
        store.get(&k).await.unwrap().as_deref(),
        Some(guard.id().as_str()),
        "fired too early to be useful?"
    );
    drop(guard.release().await);
}

async fn theft_is_signalled_by_the_next_renewal(store: Store) {
    // Renewal runs every ttl/3 and the expiry margin fires at 0.9 ttl, so a
    // signal before 0.8 ttl can only have come from a renewal's answer.
    let ttl = Duration::from_secs(6);
    let stolen = async {
        let k = key("stolen");
        let recorded = Arc::new(FaultStore::over(Arc::clone(&store)));
        let lock = DistributedLock::new(recorded.clone(), k.clone(), ttl).auto_renew(true);
        let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
        store.delete(&k).await.unwrap(); // as if it had expired
        let thief = store
            .acquire_lock(&k, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        let fired = lost_within(&guard, ttl).await;
        let acquired = recorded.successes.lock().unwrap()[0].0;
        assert!(
            fired - acquired < ttl * 8 / 10,
            "theft was signalled {:?} after the acquire: by the expiry margin, not the renewal",
            fired - acquired
        );
        assert!(thief.fencing_token > guard.fencing_token());
        assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::HeldByOther);
        assert_eq!(
            store.get(&k).await.unwrap().as_deref(),
            Some(thief.id.as_str())
        );
        store.release_lock(&k, &thief.id).await.unwrap();
    };
    let vanished = async {
        let k = key("vanished");
        let recorded = Arc::new(FaultStore::over(Arc::clone(&store)));
        let lock = DistributedLock::new(recorded.clone(), k.clone(), ttl).auto_renew(true);
        let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
        store.delete(&k).await.unwrap();
        let fired = lost_within(&guard, ttl).await;
        let acquired = recorded.successes.lock().unwrap()[0].0;
        assert!(
            fired - acquired < ttl * 8 / 10,
            "a vanished lock was signalled {:?} after the acquire: by the expiry margin, not the renewal",
            fired - acquired
        );
        assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::NotHeld);
    };
    tokio::join!(stolen, vanished);
}

async fn loss_signal_in_time_when_extend_never_answers(store: Store) {
    let ttl = Duration::from_millis(1500);
    let hanging = Arc::new(FaultStore::over(store).extend(ExtendFault::Hang));
    let lock = DistributedLock::new(hanging.clone(), key("hang"), ttl).auto_renew(true);
    let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
    let fired = lost_within(&guard, ttl * 3).await;
    assert!(
        hanging.extend_calls.load(Ordering::SeqCst) > 0,
        "no renewal was tried"
    );
    assert_signalled_in_time(&hanging, ttl, fired);
    drop(guard.release().await);
}

async fn late_answers_count_from_their_send_time(store: Store) {
    // Answers late but in time: they keep the lock.
    let ttl = Duration::from_millis(1500).max(store.capabilities().ttl_resolution * 3);
    let k = key("late");
    let slow =
        Arc::new(FaultStore::over(Arc::clone(&store)).extend(ExtendFault::LateAnswer(ttl / 4)));
    let lock = DistributedLock::new(slow.clone(), k.clone(), ttl).auto_renew(true);
    let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(ttl * 2).await;
    assert!(
        !guard.is_lost(),
        "answers within the TTL should keep the lock"
    );
    assert_eq!(
        store.get(&k).await.unwrap().as_deref(),
        Some(guard.id().as_str())
    );
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);

    // Answers a whole TTL late: until one arrives the guard has no proof
    // that its lock is live, so the signal must not wait for it.
    let ttl = Duration::from_millis(1500);
    let slow = Arc::new(FaultStore::over(store).extend(ExtendFault::LateAnswer(ttl)));
    let lock = DistributedLock::new(slow.clone(), key("later"), ttl).auto_renew(true);
    let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
    let fired = lost_within(&guard, ttl * 3).await;
    assert_signalled_in_time(&slow, ttl, fired);
    drop(guard.release().await);
}

async fn renewal_failing_with_store_errors(store: Store) {
    // Failing for a while: retried, and the lock is kept.
    let ttl = Duration::from_millis(1500).max(store.capabilities().ttl_resolution * 3);
    let k = key("flaky");
    let flaky = Arc::new(FaultStore::over(Arc::clone(&store)).extend(ExtendFault::FailFirst(3)));
    let lock = DistributedLock::new(flaky.clone(), k.clone(), ttl).auto_renew(true);
    let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(ttl * 2).await;
    assert!(
        flaky.extend_calls.load(Ordering::SeqCst) > 3,
        "the failed extensions were not retried"
    );
    assert!(!guard.is_lost(), "a few failed extensions lost the lock");
    assert_eq!(
        store.get(&k).await.unwrap().as_deref(),
        Some(guard.id().as_str())
    );
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);

    // Failing for good: the signal fires before the lock could expire.
    let ttl = Duration::from_millis(1500);
    let failing = Arc::new(FaultStore::over(store).extend(ExtendFault::Fail));
    let lock = DistributedLock::new(failing.clone(), key("failing"), ttl).auto_renew(true);
    let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
    let fired = lost_within(&guard, ttl * 3).await;
    let tries = failing.extend_calls.load(Ordering::SeqCst);
    // From the first renewal (ttl/3) to the loss signal (ttl - ttl/10),
    // one try every 20 ms: about 43. A loop without the pause makes
    // thousands.
    assert!(
        (2..=80).contains(&tries),
        "{tries} tries to extend in {ttl:?}"
    );
    assert_signalled_in_time(&failing, ttl, fired);
    drop(guard.release().await);
}

async fn loss_signal_in_time_after_renewals_then_silence(store: Store) {
    // The proof of a renewal counts from when it was sent: after two good
    // renewals the store stops answering, and the signal must still come
    // before the last renewal's TTL runs out.
    let ttl = Duration::from_millis(1500).max(store.capabilities().ttl_resolution * 3);
    let silent = Arc::new(FaultStore::over(store).extend(ExtendFault::HangAfter(2)));
    let lock = DistributedLock::new(silent.clone(), key("silent"), ttl).auto_renew(true);
    let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
    let fired = lost_within(&guard, ttl * 4).await;
    let proofs = silent.successes.lock().unwrap().len();
    assert!(proofs >= 2, "{proofs} successes: no renewal got through");
    assert_signalled_in_time(&silent, ttl, fired);
    drop(guard.release().await);
}

async fn a_crashed_waiter_is_skipped(store: Store) {
    let store = ticketed(store);
    let turn = Duration::from_secs(1);
    let k = key("crashed");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(10))
        .turn_timeout(turn);
    let holder = lock.acquire(Duration::from_secs(5)).await.unwrap(); // ticket 1
    take_dead_tickets(&store, &k, 1).await; // ticket 2
    let waiter = spawn_waiter(&lock, turn * 8); // ticket 3
    wait_for_ticket(&store, &k, 3).await;
    let released = Instant::now();
    holder.release().await.unwrap();
    let (guard, at) = waiter.await.unwrap();
    let guard = guard.expect("the waiter behind a crashed one was not served");
    assert!(
        at - released < turn * 2,
        "served {:?} after the release, turn timeout {turn:?}",
        at - released
    );
    guard.release().await.unwrap();
}

async fn a_late_presence_key_is_waited_for(store: Store) {
    let store = ticketed(store);
    // A waiter can take its ticket and write its presence key a moment
    // later. The ones behind must give a missing key the grace period
    // (a quarter of the turn timeout) before they skip the ticket, even
    // when a ticket marked gone follows it (only a leading run of gone
    // tickets is skipped at once).
    // A grace of 2 s: room for the test to write the key on a slow store.
    let turn = Duration::from_secs(8);
    let k = key("late-presence");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(10))
        .turn_timeout(turn);
    take_dead_tickets(&store, &k, 2).await; // ticket 1: no presence key yet
    store
        .set_with_ttl(&format!("{k}:queue:2"), "gone", turn)
        .await
        .unwrap();
    let waiter = spawn_waiter(&lock, Duration::from_secs(30)); // ticket 3
    wait_for_ticket(&store, &k, 3).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let presence = format!("{k}:queue:1");
    store
        .set_with_ttl(&presence, "waiting", turn)
        .await
        .unwrap();
    tokio::time::sleep(turn / 2).await;
    assert!(
        !waiter.is_finished(),
        "a ticket whose presence key came late was skipped within the grace period"
    );
    assert_eq!(store.get(&format!("{k}:queue:done")).await.unwrap(), None);
    // The late waiter leaves; the one behind goes on.
    store.set(&presence, "gone").await.unwrap();
    let (guard, _) = waiter.await.unwrap();
    guard.unwrap().release().await.unwrap();
}

async fn a_live_key_of_a_served_ticket_does_not_stall_the_queue(store: Store) {
    let store = ticketed(store);
    // A waiter can renew its presence key just as the others skip it: its
    // old ticket, now served, keeps a live key. The scan for dead tickets
    // starts after the last served one, so that key stops nothing.
    let turn = Duration::from_secs(2);
    let k = key("served-presence");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(10))
        .turn_timeout(turn);
    let first = lock.acquire(Duration::from_secs(5)).await.unwrap(); // ticket 1
    first.release().await.unwrap();
    // After the holder's own delete of its key, which runs in the background.
    tokio::time::sleep(Duration::from_millis(100)).await;
    store
        .set_with_ttl(&format!("{k}:queue:1"), "waiting", Duration::from_secs(60))
        .await
        .unwrap();
    take_dead_tickets(&store, &k, 1).await; // ticket 2, crashed
    let started = Instant::now();
    let (guard, at) = spawn_waiter(&lock, Duration::from_secs(15)).await.unwrap(); // ticket 3
    let guard = guard.expect("a live key of a served ticket stalled the queue");
    assert!(
        at - started < turn * 2,
        "served after {:?}: the dead ticket was not skipped in time",
        at - started
    );
    guard.release().await.unwrap();
}

async fn a_waiter_that_gives_up_at_its_turn_passes_it_on(store: Store) {
    let store = ticketed(store);
    // A client holds the key directly, so the waiter at the head of the
    // queue times out at its turn. It must move the queue on as it leaves,
    // not leave that to the waiters behind it.
    let k = key("gives-up");
    let barger = store
        .acquire_lock(&k, Duration::from_secs(30))
        .await
        .unwrap()
        .expect("a free key");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(10));
    let err = lock.acquire(Duration::from_millis(300)).await.unwrap_err(); // ticket 1
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    // Passed on in the background, so that the error keeps the deadline.
    let gave_up = Instant::now();
    while store
        .get(&format!("{k}:queue:done"))
        .await
        .unwrap()
        .as_deref()
        != Some("1")
    {
        assert!(
            gave_up.elapsed() < Duration::from_secs(2),
            "the turn was not passed on"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    store.release_lock(&k, &barger.id).await.unwrap();
}

async fn a_live_ticket_inside_a_dead_run_is_never_skipped(store: Store) {
    let store = ticketed(store);
    // Presence keys are read in batches (1, 1, 2, 4, ... tickets). A live
    // waiter must stop the skip wherever it sits in a batch: first (ticket
    // 3 of the batch 3..=4) or second (ticket 4).
    let turn = Duration::from_secs(2);
    let mut cases = JoinSet::new();
    for dead_before in [2usize, 3] {
        let store = Arc::clone(&store);
        cases.spawn(async move {
            let k = key(&format!("live-in-run-{dead_before}"));
            let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(10))
                .turn_timeout(turn);
            take_dead_tickets(&store, &k, dead_before).await;
            // A live waiter (played by its presence key), then a dead one.
            take_dead_tickets(&store, &k, 2).await;
            let live = format!("{k}:queue:{}", dead_before + 1);
            store
                .set_with_ttl(&live, "waiting", Duration::from_secs(60))
                .await
                .unwrap();
            let waiter = spawn_waiter(&lock, Duration::from_secs(30));
            wait_for_ticket(&store, &k, dead_before as i64 + 3).await;
            // The dead run ahead is skipped after the grace (500 ms), up to
            // the live ticket and not past it.
            let done_key = format!("{k}:queue:done");
            let skipped = Some(dead_before.to_string());
            for _ in 0..300 {
                if store.get(&done_key).await.unwrap() == skipped {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            tokio::time::sleep(turn).await;
            assert!(!waiter.is_finished(), "a live waiter was skipped");
            assert_eq!(
                store.get(&done_key).await.unwrap(),
                skipped,
                "the skip did not stop right before the live ticket"
            );
            store.set(&live, "gone").await.unwrap();
            let (guard, _) = waiter.await.unwrap();
            guard.unwrap().release().await.unwrap();
        });
    }
    join_first_panic(&mut cases).await;
}

async fn a_run_of_dead_tickets_is_skipped_at_once(store: Store) {
    let store = ticketed(store);
    // A crashed process had 64 waiters queued and the lock is free. One at
    // a time, each dead ticket would cost a quarter of the turn timeout
    // (32 s here); a run of them must cost about one.
    let turn = Duration::from_secs(2);
    // Skipping reads every dead ticket's presence key twice; on a slow
    // store that alone takes a while.
    let bound = turn * 2 + read_latency(&store).await * 200;
    let k = key("dead-run");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(10))
        .turn_timeout(turn);
    take_dead_tickets(&store, &k, 64).await;
    let started = Instant::now();
    let first = spawn_waiter(&lock, turn * 8); // ticket 65
    wait_for_ticket(&store, &k, 65).await;
    // More dead tickets, then a second live waiter: a skip must stop at
    // the first live ticket, so the first waiter keeps its place.
    take_dead_tickets(&store, &k, 10).await;
    let second = spawn_waiter(&lock, turn * 8); // ticket 76
    wait_for_ticket(&store, &k, 76).await;
    let (guard, at) = first.await.unwrap();
    let guard = guard.expect("the first live waiter was not served");
    eprintln!("64 dead tickets skipped in {:?}", at - started);
    assert!(
        at - started < bound,
        "64 dead tickets took {:?} to skip (bound {bound:?}, turn timeout {turn:?})",
        at - started
    );
    assert!(
        !second.is_finished(),
        "the second waiter overtook the first"
    );
    let released = Instant::now();
    let first_token = guard.fencing_token();
    guard.release().await.unwrap();
    let (guard, at) = second.await.unwrap();
    let guard = guard.expect("the second live waiter was not served");
    assert!(
        at - released < bound,
        "10 dead tickets took {:?} to skip (bound {bound:?})",
        at - released
    );
    assert!(guard.fencing_token() > first_token);
    guard.release().await.unwrap();
}

async fn holds_longer_than_the_grace_keep_the_queue_order(store: Store) {
    // A holder's ticket has no presence key, so waiters skip it after a
    // quarter of the turn timeout while it still holds: the lock key must
    // keep them out, and the queue must keep its order.
    // A turn timeout long enough that a live waiter starved of CPU on a
    // loaded machine keeps its presence key alive.
    let turn = Duration::from_secs(3);
    let hold = turn * 2 / 5;
    let k = key("long-holds");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(10))
        .turn_timeout(turn);
    let holder = lock.acquire(Duration::from_secs(5)).await.unwrap();
    let inside = Arc::new(AtomicUsize::new(1));
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut waiters = JoinSet::new();
    for place in 0..4 {
        let (lock, held_key, store_now) = (lock.clone(), k.clone(), Arc::clone(&store));
        let (inside, order) = (Arc::clone(&inside), Arc::clone(&order));
        waiters.spawn(async move {
            let guard = lock.acquire(Duration::from_secs(30)).await.unwrap();
            assert_eq!(
                inside.fetch_add(1, Ordering::SeqCst),
                0,
                "two holders at once"
            );
            order.lock().unwrap().push(place);
            assert_eq!(
                store_now.get(&held_key).await.unwrap().as_deref(),
                Some(guard.id().as_str())
            );
            tokio::time::sleep(hold).await;
            inside.fetch_sub(1, Ordering::SeqCst);
            assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
        });
        wait_for_ticket(&store, &k, place + 2).await;
    }
    tokio::time::sleep(hold).await;
    inside.fetch_sub(1, Ordering::SeqCst);
    assert_eq!(holder.release().await.unwrap(), ReleaseOutcome::Released);
    join_first_panic(&mut waiters).await;
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3]);
}

async fn waiters_keep_their_place_through_a_hold_longer_than_the_turn_timeout(store: Store) {
    // A waiter's presence key lives one turn timeout; the waiter must renew
    // it while it waits, or the one behind skips it as crashed.
    // Long enough that a waiter starved of CPU on a loaded machine still
    // renews its key in time (it renews every third of the turn timeout).
    let turn = Duration::from_secs(3);
    let k = key("renewed-presence");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(10))
        .turn_timeout(turn);
    let holder = lock.acquire(Duration::from_secs(5)).await.unwrap();
    let first = spawn_waiter(&lock, Duration::from_secs(30));
    wait_for_ticket(&store, &k, 2).await;
    let second = spawn_waiter(&lock, Duration::from_secs(30));
    wait_for_ticket(&store, &k, 3).await;
    tokio::time::sleep(turn * 5 / 2).await;
    assert_eq!(holder.release().await.unwrap(), ReleaseOutcome::Released);
    let granted = Instant::now();
    while !first.is_finished() && !second.is_finished() {
        assert!(
            granted.elapsed() < Duration::from_secs(10),
            "no waiter got the lock"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        !second.is_finished(),
        "the second waiter went first: the first lost its place while waiting"
    );
    let (first, _) = first.await.unwrap();
    assert_eq!(
        first.unwrap().release().await.unwrap(),
        ReleaseOutcome::Released
    );
    let (second, _) = second.await.unwrap();
    second.unwrap().release().await.unwrap();
}

async fn try_acquire_takes_only_a_free_lock_with_no_queue(store: Store) {
    let store = ticketed(store);
    let k = key("try");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(10));
    let guard = lock.try_acquire().await.unwrap().expect("a free lock");
    assert_eq!(
        store.get(&k).await.unwrap().as_deref(),
        Some(guard.id().as_str())
    );
    assert!(
        lock.try_acquire().await.unwrap().is_none(),
        "taken while held"
    );
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);

    // Held with a waiter queued: neither is overtaken.
    let holder = lock.acquire(Duration::from_secs(5)).await.unwrap();
    let waiter = spawn_waiter(&lock, Duration::from_secs(30));
    wait_for_ticket(&store, &k, 2).await;
    assert!(lock.try_acquire().await.unwrap().is_none());
    holder.release().await.unwrap();
    let (served, _) = waiter.await.unwrap();
    let served = served.unwrap();
    assert!(lock.try_acquire().await.unwrap().is_none());
    assert_eq!(served.release().await.unwrap(), ReleaseOutcome::Released);

    // A waiter queued while the lock key is free (between two turns)
    // keeps its turn.
    let queued = store.incr(&format!("{k}:queue:next")).await.unwrap();
    store
        .set_with_ttl(
            &format!("{k}:queue:{queued}"),
            "waiting",
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert!(
        lock.try_acquire().await.unwrap().is_none(),
        "taken ahead of a queued waiter"
    );
    assert_eq!(store.get(&k).await.unwrap(), None);
    // Its turn passes (it was served and left).
    store
        .set(&format!("{k}:queue:done"), &queued.to_string())
        .await
        .unwrap();

    // A client that takes the lock key directly keeps it.
    let barger = store
        .acquire_lock(&k, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert!(lock.try_acquire().await.unwrap().is_none());
    store.release_lock(&k, &barger.id).await.unwrap();
    let again = lock.try_acquire().await.unwrap().expect("free again");
    assert!(again.fencing_token() > barger.fencing_token);
    assert_eq!(again.release().await.unwrap(), ReleaseOutcome::Released);
}

/// How long a poll of the stores in the wake-up tests waits: a hand-over
/// much faster than this came from a wake-up.
const SLOW_POLL: Duration = Duration::from_secs(10);

/// Checks hand-over times (release started → next holder) against polls
/// of [`SLOW_POLL`].
fn assert_prompt(gaps: Vec<Duration>) {
    let slowest = *gaps.iter().max().unwrap();
    eprintln!(
        "hand-overs: median {:?}, slowest {slowest:?}",
        median(gaps.clone())
    );
    assert!(
        slowest < SLOW_POLL / 2,
        "a hand-over took {slowest:?} (median {:?}): it waited for a poll",
        median(gaps.clone())
    );
}

/// Hand-overs between waiters of this process. The store never delivers
/// notifications and every poll waits 10 s, so only the in-process
/// wake-up can hand the lock over promptly.
async fn release_wakes_the_next_waiter_at_once(store: Store) {
    let deaf: Store = Arc::new(FaultStore::over(store).deaf().slow_polls(SLOW_POLL));
    let k = key("wake");
    let lock = DistributedLock::new(Arc::clone(&deaf), k.clone(), Duration::from_secs(60))
        .turn_timeout(Duration::from_secs(120));
    let holder = lock.acquire(Duration::from_secs(5)).await.unwrap();
    let times = Arc::new(Mutex::new(Vec::new()));
    let waiters = 6;
    let mut tasks = JoinSet::new();
    for place in 0..waiters {
        let (lock, times) = (lock.clone(), Arc::clone(&times));
        tasks.spawn(async move {
            let guard = lock.acquire(Duration::from_secs(120)).await.unwrap();
            let (held, released) = (Instant::now(), Instant::now());
            guard.release().await.unwrap();
            times.lock().unwrap().push((place, held, released));
        });
        wait_for_ticket(&deaf, &k, place as i64 + 2).await;
    }
    // Every waiter is inside a poll now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut released = Instant::now();
    holder.release().await.unwrap();
    join_first_panic(&mut tasks).await;
    let mut times = times.lock().unwrap().clone();
    times.sort_by_key(|&(_, held, _)| held);
    let places: Vec<usize> = times.iter().map(|t| t.0).collect();
    assert_eq!(
        places,
        (0..waiters).collect::<Vec<_>>(),
        "served out of order"
    );
    let mut gaps = Vec::new();
    for (_, held, next_release) in times {
        gaps.push(held - released);
        released = next_release;
    }
    assert_prompt(gaps);
}

/// The same through the store's notifications, between two handles of
/// one store (so no in-process wake-up can help): through the plain-key
/// queue's notifications, or with `native` through the wake-up of the
/// store's own queue.
async fn release_notifies_waiters_of_other_handles(one: Store, other: Store, native: bool) {
    assert!(one.capabilities().notifications);
    let wrap = |store| {
        let store = FaultStore::over(store).slow_polls(SLOW_POLL);
        let store = if native { store.native() } else { store };
        Arc::new(store) as Store
    };
    let (one, other) = (wrap(one), wrap(other));
    let k = key("notify");
    let lock_one = DistributedLock::new(Arc::clone(&one), k.clone(), Duration::from_secs(60))
        .turn_timeout(Duration::from_secs(120));
    let lock_other = DistributedLock::new(other, k.clone(), Duration::from_secs(60))
        .turn_timeout(Duration::from_secs(120));
    let mut gaps = Vec::new();
    for round in 0..5 {
        let holder = lock_one.acquire(Duration::from_secs(5)).await.unwrap();
        let waiter = spawn_waiter(&lock_other, Duration::from_secs(120));
        // The native count starts again each round; tickets go on rising.
        let ticket = if native { 2 } else { 2 * round + 2 };
        wait_for_ticket(&one, &k, ticket).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let released = Instant::now();
        holder.release().await.unwrap();
        let (guard, held) = waiter.await.unwrap();
        gaps.push(held - released);
        guard.unwrap().release().await.unwrap();
    }
    assert_prompt(gaps);
}

async fn dropped_guards_release_in_the_background(store: Store) {
    let k = key("dropped");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(30));
    drop(lock.acquire(Duration::from_secs(5)).await.unwrap());
    let started = Instant::now();
    let again = lock.acquire(Duration::from_secs(5)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    again.release().await.unwrap();
}

// The semaphore: `permits` slot locks, reached through a fair gate.

/// 32 tasks, 3 permits: never more than 3 holders (by a count kept here and
/// by the store, which refuses each held slot to a plain `acquire_lock`),
/// more than one at a time, tokens rising per slot, fair turns.
async fn semaphore_admits_at_most_its_permits(store: Store) {
    let k = key("semaphore");
    let permits = 3;
    let sem = Semaphore::new(Arc::clone(&store), k, permits, Duration::from_secs(10))
        .turn_timeout(Duration::from_secs(10));
    // Held long enough against the store's speed for permits to overlap
    // while the gate passes from waiter to waiter.
    let hold = (read_latency(&store).await * 12)
        .clamp(Duration::from_millis(20), Duration::from_millis(300));
    let inside = Arc::new(AtomicUsize::new(0));
    let most = Arc::new(AtomicUsize::new(0));
    let taken = Arc::new(Mutex::new(Vec::new()));
    // Four rounds: the first half is two turns each when served in order.
    let (tasks, rounds) = (32, 4);
    let mut holders = JoinSet::new();
    for task in 0..tasks {
        let (sem, store) = (sem.clone(), Arc::clone(&store));
        let (inside, most, taken) = (Arc::clone(&inside), Arc::clone(&most), Arc::clone(&taken));
        holders.spawn(async move {
            for _ in 0..rounds {
                let permit = sem.acquire(Duration::from_secs(180)).await.unwrap();
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                assert!(
                    now <= permits as usize,
                    "{now} holders of {permits} permits"
                );
                most.fetch_max(now, Ordering::SeqCst);
                assert!(permit.slot() < permits, "{permit:?}");
                let slot_key = sem.slot_key(permit.slot());
                assert!(
                    store
                        .acquire_lock(&slot_key, Duration::from_secs(10))
                        .await
                        .unwrap()
                        .is_none(),
                    "the store granted a held permit's slot {slot_key} to another caller"
                );
                taken.lock().unwrap().push((
                    task,
                    permit.slot(),
                    permit.fencing_token(),
                    permit.id().clone(),
                ));
                tokio::time::sleep(hold).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                assert_eq!(permit.release().await.unwrap(), ReleaseOutcome::Released);
            }
        });
    }
    join_first_panic(&mut holders).await;
    let most = most.load(Ordering::SeqCst);
    assert!(most >= 2, "never more than {most} holder at once");
    let taken = taken.lock().unwrap();
    assert_eq!(taken.len(), tasks * rounds);
    let ids: std::collections::HashSet<_> = taken.iter().map(|t| t.3.clone()).collect();
    assert_eq!(ids.len(), taken.len(), "a permit id was given twice");
    for slot in 0..permits {
        let tokens: Vec<u64> = taken.iter().filter(|t| t.1 == slot).map(|t| t.2).collect();
        assert!(
            tokens.windows(2).all(|w| w[0] < w[1]),
            "slot {slot}'s fencing tokens did not rise: {tokens:?}"
        );
    }
    let half = &taken[..taken.len() / 2];
    assert_fair_turns(half.iter().map(|t| t.0), tasks);
}

/// The deadline covers the whole wait; a holder that crashed gives its
/// permit back when its TTL runs out, and not before.
async fn semaphore_deadline_and_a_crashed_holders_permit(store: Store) {
    let ttl = Duration::from_millis(1500).max(store.capabilities().ttl_resolution * 3);
    let sem = Semaphore::new(Arc::clone(&store), key("crash"), 2, ttl);
    let kept = sem.acquire(Duration::from_secs(5)).await.unwrap();
    // Before the acquire: its TTL starts somewhere inside it, and a slow
    // store (an etcd fsync stall) must not make the permit look early.
    let crashed_at = Instant::now();
    let crashed = sem.acquire(Duration::from_secs(5)).await.unwrap();
    assert_ne!(kept.slot(), crashed.slot());
    let started = Instant::now();
    let err = sem.acquire(Duration::from_millis(300)).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(err.message().contains("no permit"), "{err}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(sem.try_acquire().await.unwrap().is_none());
    // A crash: no release, no renewal.
    let crashed_slot = crashed.slot();
    std::mem::forget(crashed);
    let freed_slot = kept.slot();
    assert_eq!(kept.release().await.unwrap(), ReleaseOutcome::Released);
    let again = sem.acquire(Duration::from_secs(5)).await.unwrap();
    // Unless a stall of the store (an etcd fsync under a loaded machine)
    // outlasted the TTL, and the crashed permit came back meanwhile.
    if crashed_at.elapsed() < ttl - store.capabilities().ttl_resolution {
        assert_eq!(again.slot(), freed_slot);
    }
    let late = sem.acquire(ttl * 4).await.unwrap();
    let came_back = crashed_at.elapsed();
    assert_eq!(late.slot(), crashed_slot);
    assert!(
        came_back >= ttl - store.capabilities().ttl_resolution && came_back < ttl * 4,
        "a crashed holder's permit (TTL {ttl:?}) came back after {came_back:?}"
    );
    again.release().await.unwrap();
    late.release().await.unwrap();
}

/// Permits renew themselves, signal loss, and go back when dropped.
async fn semaphore_permits_renew_signal_loss_and_drop(store: Store) {
    let ttl = Duration::from_millis(900).max(store.capabilities().ttl_resolution * 3);
    let sem = Semaphore::new(Arc::clone(&store), key("renew"), 1, ttl).auto_renew(true);
    let permit = sem.acquire(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(ttl * 3).await;
    assert!(!permit.is_lost(), "a renewed permit was lost");
    let slot_key = sem.slot_key(permit.slot());
    assert_eq!(
        store.get(&slot_key).await.unwrap().as_deref(),
        Some(permit.id().as_str())
    );
    // Taken away: the next renewal finds out.
    store.purge(&slot_key).await.unwrap();
    let thief = store
        .acquire_lock(&slot_key, ttl * 10)
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(ttl * 2, permit.lost().cancelled())
        .await
        .expect("the loss of a permit was not signalled");
    assert_eq!(permit.release().await.unwrap(), ReleaseOutcome::HeldByOther);
    store.release_lock(&slot_key, &thief.id).await.unwrap();
    let sem = Semaphore::new(
        Arc::clone(&store),
        key("dropped"),
        1,
        Duration::from_secs(30),
    );
    drop(sem.acquire(Duration::from_secs(5)).await.unwrap());
    let started = Instant::now();
    let again = sem.acquire(Duration::from_secs(5)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    again.release().await.unwrap();
}

async fn semaphore_bad_input_is_refused_before_anything_is_written(store: Store) {
    let k = key("bad-semaphore");
    let ten = Duration::from_secs(10);
    let long = format!("{k}{}", "k".repeat(MAX_SEMAPHORE_KEY_BYTES + 1 - k.len()));
    for (sem, words) in [
        (
            Semaphore::new(Arc::clone(&store), k.clone(), 0, ten),
            "permits",
        ),
        (
            Semaphore::new(Arc::clone(&store), k.clone(), MAX_PERMITS + 1, ten),
            "permits",
        ),
        (
            Semaphore::new(Arc::clone(&store), k.clone(), 2, Duration::ZERO),
            "ttl",
        ),
        (
            Semaphore::new(Arc::clone(&store), k.clone(), 2, ten).turn_timeout(Duration::ZERO),
            "turn_timeout",
        ),
        (
            Semaphore::new(Arc::clone(&store), long.clone(), 2, ten),
            "at most",
        ),
    ] {
        let err = sem.acquire(Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
        assert!(
            err.message().to_lowercase().contains(words),
            "{sem:?}: {err}"
        );
        let err = sem.try_acquire().await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{err}");
    }
    for base in [&k, &long] {
        assert_eq!(store.get(&format!("{base}:permit:0")).await.unwrap(), None);
        assert_eq!(store.get(&format!("{base}:gate")).await.unwrap(), None);
        assert_eq!(
            store.get(&format!("{base}:gate:queue:next")).await.unwrap(),
            None
        );
    }
}

/// `lock_suite!(name, open)`: the cases every store runs; with `, native`
/// also those of stores with a native queue, in `name::native`.
macro_rules! lock_suite {
    ($module:ident, $open:expr) => {
        lock_suite!(@module $module, $open, {});
    };
    ($module:ident, $open:expr, native) => {
        lock_suite!(@module $module, $open, {
            mod native {
                #[allow(unused_imports)]
                use super::*;

                lock_suite!(@cases $open;
                    the_release_hands_the_lock_to_the_first_waiter,
                    a_crashed_process_with_many_waiters_costs_at_most_two_turns,
                    a_waiter_that_leaves_as_the_lock_reaches_it_passes_it_on,
                    a_dropped_acquire_leaves_the_queue,
                    try_acquire_never_overtakes_the_queue,
                    a_zero_wait_takes_a_free_lock,
                );
            }
        });
    };
    (@module $module:ident, $open:expr, { $($native:tt)* }) => {
        mod $module {
            #[allow(unused_imports)]
            use super::*;

            lock_suite!(@cases $open;
                exclusion_fencing_and_fairness,
                deadline_is_honoured,
                unbounded_wait_is_accepted,
                a_bad_turn_timeout_is_refused_before_anything_is_written,
                lock_keys_up_to_the_limit_are_accepted,
                renewal_keeps_the_lock_past_several_ttls,
                loss_signal_fires_before_expiry,
                theft_is_signalled_by_the_next_renewal,
                loss_signal_in_time_when_extend_never_answers,
                late_answers_count_from_their_send_time,
                renewal_failing_with_store_errors,
                loss_signal_in_time_after_renewals_then_silence,
                a_crashed_waiter_is_skipped,
                a_run_of_dead_tickets_is_skipped_at_once,
                a_waiter_that_gives_up_at_its_turn_passes_it_on,
                a_live_ticket_inside_a_dead_run_is_never_skipped,
                a_late_presence_key_is_waited_for,
                a_live_key_of_a_served_ticket_does_not_stall_the_queue,
                holds_longer_than_the_grace_keep_the_queue_order,
                waiters_keep_their_place_through_a_hold_longer_than_the_turn_timeout,
                try_acquire_takes_only_a_free_lock_with_no_queue,
                release_wakes_the_next_waiter_at_once,
                dropped_guards_release_in_the_background,
                semaphore_admits_at_most_its_permits,
                semaphore_deadline_and_a_crashed_holders_permit,
                semaphore_permits_renew_signal_loss_and_drop,
                semaphore_bad_input_is_refused_before_anything_is_written,
            );

            $($native)*
        }
    };
    (@cases $open:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                super::$case($open).await;
            }
        )*
    };
}

#[cfg(feature = "memory")]
lock_suite!(memory, atomic_store::open("memory://").unwrap(), native);

#[cfg(feature = "sqlite")]
lock_suite!(
    sqlite,
    {
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        atomic_store::open(&format!("sqlite://{}/lock.db", dir.path().display())).unwrap()
    },
    native
);

#[cfg(feature = "redis")]
lock_suite!(
    redis,
    atomic_store::open(&crate::support::url("redis")).unwrap(),
    native
);

#[cfg(feature = "postgres")]
lock_suite!(
    postgres,
    atomic_store::open(&crate::support::server_url(
        "ATOMIC_STORE_TEST_POSTGRES_URL"
    ))
    .unwrap(),
    native
);

#[cfg(feature = "mysql")]
lock_suite!(
    mysql,
    atomic_store::open(&crate::support::url("mysql")).unwrap()
);

#[cfg(feature = "etcd")]
lock_suite!(
    etcd,
    atomic_store::open(&crate::support::url("etcd")).unwrap(),
    native
);

#[cfg(feature = "zookeeper")]
lock_suite!(
    zookeeper,
    atomic_store::open(&crate::support::url("zk")).unwrap(),
    native
);

#[cfg(feature = "dynamodb")]
lock_suite!(
    dynamodb,
    atomic_store::open(&crate::support::server_url(
        "ATOMIC_STORE_TEST_DYNAMODB_URL"
    ))
    .unwrap()
);

#[cfg(feature = "mongodb")]
lock_suite!(
    mongodb,
    atomic_store::open(&crate::support::url("mongodb")).unwrap()
);

// The store's native queue: the lock is handed over in the same step as the
// release.

/// A lock named `name` (TTL 30 s, `turn` as its turn timeout), held.
async fn held(store: &Store, name: &str, turn: Duration) -> (String, DistributedLock, LockGuard) {
    let k = key(name);
    let lock = DistributedLock::new(Arc::clone(store), k.clone(), Duration::from_secs(30))
        .turn_timeout(turn);
    let holder = lock.acquire(Duration::from_secs(5)).await.unwrap();
    (k, lock, holder)
}

/// A waiter that enters the native queue once and is never heard of again,
/// as if its process crashed.
async fn enter_and_crash(store: &Store, k: &str, presence: Duration) -> LockId {
    let waiter = LockId::generate();
    let entry = QueueEntry {
        waiter: &waiter,
        ttl: Duration::from_secs(30),
        presence: Some(presence),
    };
    let turn = store.lock_queue_enter(k, entry).await.unwrap();
    assert!(matches!(turn, QueueTurn::Waiting { .. }), "{turn:?}");
    waiter
}

async fn the_release_hands_the_lock_to_the_first_waiter(store: Store) {
    let (k, lock, holder) = held(&store, "handover", Duration::from_secs(30)).await;
    let first = spawn_waiter(&lock, Duration::from_secs(30));
    wait_for_ticket(&store, &k, 2).await;
    let second = spawn_waiter(&lock, Duration::from_secs(30));
    wait_for_ticket(&store, &k, 3).await;
    let holder_token = holder.fencing_token();
    assert_eq!(holder.release().await.unwrap(), ReleaseOutcome::Released);
    // Handed over by the release itself, before the waiter ran at all.
    let value = store
        .get(&k)
        .await
        .unwrap()
        .expect("the lock was not handed over");
    assert!(
        store
            .acquire_lock(&k, Duration::from_secs(1))
            .await
            .unwrap()
            .is_none(),
        "a plain acquire took a lock just handed over"
    );
    let info = store.inspect(&k).await.unwrap();
    assert!(
        info.ttl.is_some(),
        "a handed-over lock must expire on its own"
    );
    let (first, _) = first.await.unwrap();
    let first = first.unwrap();
    assert_eq!(first.id().as_str(), value, "handed to another waiter");
    assert_eq!(info.fencing_token, Some(first.fencing_token()));
    // A per-key counter rises by one; etcd's revision and ZooKeeper's zxid
    // are global.
    match store.capabilities().backend {
        "etcd" | "zookeeper" => assert!(
            first.fencing_token() > holder_token,
            "the token did not rise"
        ),
        _ => assert_eq!(first.fencing_token(), holder_token + 1),
    }
    assert!(!second.is_finished(), "the second waiter was served too");
    let first_token = first.fencing_token();
    assert_eq!(first.release().await.unwrap(), ReleaseOutcome::Released);
    let (second, _) = second.await.unwrap();
    let second = second.unwrap();
    assert!(
        second.fencing_token() > first_token,
        "fencing tokens did not rise"
    );
    assert_eq!(second.release().await.unwrap(), ReleaseOutcome::Released);
    assert_eq!(
        store.get(&k).await.unwrap(),
        None,
        "an empty queue leaves the lock free"
    );
}

async fn a_crashed_process_with_many_waiters_costs_at_most_two_turns(store: Store) {
    // A presence shorter than the store's TTL resolution lasts that long.
    let turn = Duration::from_secs(1).max(store.capabilities().ttl_resolution);
    let (k, lock, holder) = held(&store, "crashed-many", turn).await;
    for _ in 0..64 {
        enter_and_crash(&store, &k, turn).await;
    }
    let live = spawn_waiter(&lock, Duration::from_secs(30));
    wait_for_ticket(&store, &k, 66).await;
    let released = Instant::now();
    holder.release().await.unwrap();
    let (guard, at) = live.await.unwrap();
    let guard = guard.expect("the waiter behind 64 crashed ones was not served");
    assert!(
        at - released < turn * 2 + Duration::from_millis(500),
        "served {:?} after the release (turn timeout {turn:?})",
        at - released
    );
    guard.release().await.unwrap();
}

async fn a_waiter_that_leaves_as_the_lock_reaches_it_passes_it_on(store: Store) {
    // A long presence: only the leaving waiter's own step can pass the
    // lock on in time.
    let turn = Duration::from_secs(20);
    let (k, lock, holder) = held(&store, "handed-and-left", turn).await;
    let leaving = enter_and_crash(&store, &k, turn).await;
    let live = spawn_waiter(&lock, Duration::from_secs(30));
    wait_for_ticket(&store, &k, 3).await;
    holder.release().await.unwrap();
    assert_eq!(
        store.get(&k).await.unwrap().as_deref(),
        Some(leaving.as_str()),
        "not handed to the first waiter"
    );
    let left = Instant::now();
    let handover = store.lock_queue_release(&k, &leaving, turn).await.unwrap();
    assert_eq!(handover.outcome, ReleaseOutcome::Released);
    let (guard, at) = live.await.unwrap();
    let guard = guard.unwrap();
    assert_eq!(handover.next.map(|n| n.waiter), Some(guard.id().clone()));
    assert!(
        at - left < turn / 4,
        "served {:?} after the leave",
        at - left
    );
    guard.release().await.unwrap();
}

async fn a_dropped_acquire_leaves_the_queue(store: Store) {
    let turn = Duration::from_secs(20);
    let (k, lock, holder) = held(&store, "dropped-acquire", turn).await;
    let cancelled = spawn_waiter(&lock, Duration::from_secs(30));
    wait_for_ticket(&store, &k, 2).await;
    let live = spawn_waiter(&lock, Duration::from_secs(30));
    wait_for_ticket(&store, &k, 3).await;
    cancelled.abort();
    assert!(cancelled.await.unwrap_err().is_cancelled());
    // The dropped waiter leaves in the background.
    for _ in 0..400 {
        if queued_natively(&store, &k).await == Some(1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(queued_natively(&store, &k).await, Some(1), "still queued");
    let released = Instant::now();
    holder.release().await.unwrap();
    let (guard, at) = live.await.unwrap();
    assert!(
        at - released < turn / 4,
        "served {:?} after the release: the lock went to the dropped waiter",
        at - released
    );
    guard.unwrap().release().await.unwrap();
}

/// A wait of zero still tries once. Before, the deadline cut off the
/// store's answer, so a free lock was never taken with a short wait.
async fn a_zero_wait_takes_a_free_lock(store: Store) {
    // An answer later than the deadline's 50 ms grace is cut off by design
    // (an etcd fsync stall while the whole suite runs): a few tries, each
    // with a zero wait. Before the fix, no try ever took the lock.
    macro_rules! within_tries {
        ($acquire:expr) => {{
            let mut tries = 0;
            loop {
                match $acquire.await {
                    Err(e) if e.kind() == ErrorKind::Timeout && tries < 5 => {
                        tries += 1;
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    taken => break taken.unwrap(),
                }
            }
        }};
    }
    let lock = DistributedLock::new(Arc::clone(&store), key("zero"), Duration::from_secs(10));
    let guard = within_tries!(lock.acquire(Duration::ZERO));
    let err = lock.acquire(Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    guard.release().await.unwrap();
    let sem = Semaphore::new(
        Arc::clone(&store),
        key("zero-sem"),
        2,
        Duration::from_secs(10),
    );
    let permits = [
        within_tries!(sem.acquire(Duration::ZERO)),
        within_tries!(sem.acquire(Duration::ZERO)),
    ];
    let err = sem.acquire(Duration::ZERO).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    for permit in permits {
        permit.release().await.unwrap();
    }
}

async fn try_acquire_never_overtakes_the_queue(store: Store) {
    let k = key("try-native");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(10));
    let guard = lock.try_acquire().await.unwrap().expect("a free lock");
    assert!(
        lock.try_acquire().await.unwrap().is_none(),
        "taken while held"
    );
    let waiter = spawn_waiter(&lock, Duration::from_secs(30));
    wait_for_ticket(&store, &k, 2).await;
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
    assert!(
        lock.try_acquire().await.unwrap().is_none(),
        "taken ahead of the waiter it was handed to"
    );
    let (served, _) = waiter.await.unwrap();
    assert_eq!(
        served.unwrap().release().await.unwrap(),
        ReleaseOutcome::Released
    );
    // A client that takes the lock key directly keeps it; nobody is
    // handed a lock the plain client released, but the next try takes it.
    let barger = store
        .acquire_lock(&k, Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert!(lock.try_acquire().await.unwrap().is_none());
    store.release_lock(&k, &barger.id).await.unwrap();
    let again = lock.try_acquire().await.unwrap().expect("free again");
    assert!(again.fencing_token() > barger.fencing_token);
    assert_eq!(again.release().await.unwrap(), ReleaseOutcome::Released);
}

/// [`release_notifies_waiters_of_other_handles`] on both queues, between
/// two handles opened on `url`.
#[allow(dead_code)] // in a build without the stores that use it
async fn notifies_between_handles_of(url: &str) {
    for native in [false, true] {
        release_notifies_waiters_of_other_handles(
            atomic_store::open(url).unwrap(),
            atomic_store::open(url).unwrap(),
            native,
        )
        .await;
    }
}

#[cfg(feature = "redis")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_release_notifies_waiters_of_other_handles() {
    notifies_between_handles_of(&support::url("redis")).await;
}

#[cfg(feature = "zookeeper")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zookeeper_release_notifies_waiters_of_other_handles() {
    notifies_between_handles_of(&support::url("zk")).await;
}

#[cfg(feature = "etcd")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_release_notifies_waiters_of_other_handles() {
    notifies_between_handles_of(&support::url("etcd")).await;
}

/// Checks that need the in-process store: they count calls or break the
/// store on purpose.
#[cfg(feature = "memory")]
mod in_process {
    use super::*;

    /// The deadline holds whatever the store does. Before, a store that
    /// stopped answering held `acquire` up for as long as its calls hung,
    /// and then for up to 2 s more while the waiter left the queue.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn the_deadline_holds_when_the_store_stops_answering() {
        let inner = atomic_store::open("memory://").unwrap();
        let silent = Arc::new(FaultStore::over(Arc::clone(&inner)));
        let store: Store = silent.clone();
        let k = key("silent");
        let _holder = inner
            .acquire_lock(&k, Duration::from_secs(30))
            .await
            .unwrap();
        let lock = DistributedLock::new(Arc::clone(&store), k, Duration::from_secs(10));
        let sem = Semaphore::new(
            Arc::clone(&store),
            key("silent-sem"),
            1,
            Duration::from_secs(10),
        );
        let _permit = sem.acquire(Duration::from_secs(5)).await.unwrap();
        silent.silent.store(true, Ordering::SeqCst);
        let wait = Duration::from_millis(300);
        for what in ["lock", "semaphore"] {
            let started = Instant::now();
            let acquired = tokio::time::timeout(Duration::from_secs(10), async {
                match what {
                    "lock" => lock.acquire(wait).await.map(drop),
                    _ => sem.acquire(wait).await.map(drop),
                }
            })
            .await
            .unwrap_or_else(|_| panic!("{what}: acquire({wait:?}) had not returned after 10 s"));
            let err = acquired.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Timeout, "{what}: {err}");
            assert!(
                started.elapsed() < wait + Duration::from_millis(200),
                "{what}: acquire({wait:?}) returned after {:?}",
                started.elapsed()
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn release_notifies_waiters_of_other_handles() {
        let url = format!("memory://{}", key("shared").replace(':', "-"));
        super::notifies_between_handles_of(&url).await;
    }

    /// Store calls of one waiter queued behind a holder, over half a second.
    async fn calls_while_waiting(
        counted: &Arc<FaultStore>,
        lock: &DistributedLock,
        k: &str,
    ) -> usize {
        let store: Store = counted.clone();
        let holder = lock.acquire(Duration::from_secs(5)).await.unwrap();
        let waiter = spawn_waiter(lock, Duration::from_secs(10));
        wait_for_ticket(&store, k, 2).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = counted.calls();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let calls = counted.calls() - before;
        holder.release().await.unwrap();
        let (guard, _) = waiter.await.unwrap();
        guard.unwrap().release().await.unwrap();
        calls
    }

    /// Every poll of a waiter sleeps at least 1 ms and makes at most three
    /// store calls; a waiter that spins makes thousands.
    const MOST_CALLS_IN_HALF_A_SECOND: usize = 1500;

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn failing_notifications_do_not_make_waiters_spin() {
        let k = key("failing-notifications");
        let counted = Arc::new(
            FaultStore::over(atomic_store::open("memory://").unwrap()).failing_notifications(),
        );
        let lock = DistributedLock::new(counted.clone(), k.clone(), Duration::from_secs(10))
            .turn_timeout(Duration::from_secs(10));
        let calls = calls_while_waiting(&counted, &lock, &k).await;
        eprintln!("a waiter made {calls} store calls in 500 ms");
        assert!(
            calls <= MOST_CALLS_IN_HALF_A_SECOND,
            "a waiter made {calls} store calls in 500 ms"
        );
    }

    /// A release in another process (here: another handle, whose waiters
    /// hear of it only through notifications) wakes the waiter whose turn
    /// it is, not every waiter: each woken waiter reads the queue again.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_release_elsewhere_wakes_only_the_next_ticket() {
        let url = format!("memory://{}", key("turns").replace(':', "-"));
        let k = key("turns");
        // Both on the plain-key queue (the fault store does not forward the
        // native one).
        let one: Store = Arc::new(FaultStore::over(atomic_store::open(&url).unwrap()));
        let other =
            Arc::new(FaultStore::over(atomic_store::open(&url).unwrap()).slow_polls(SLOW_POLL));
        let lock_one = DistributedLock::new(one.clone(), k.clone(), Duration::from_secs(60))
            .turn_timeout(Duration::from_secs(120));
        let lock_other = DistributedLock::new(other.clone(), k.clone(), Duration::from_secs(60))
            .turn_timeout(Duration::from_secs(120));
        let holder = lock_one.acquire(Duration::from_secs(5)).await.unwrap();
        let waiters: Vec<_> = (0..8)
            .map(|_| spawn_waiter(&lock_other, Duration::from_secs(120)))
            .collect();
        wait_for_ticket(&one, &k, 9).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = other.woken.load(Ordering::SeqCst);
        holder.release().await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let woken = other.woken.load(Ordering::SeqCst) - before;
        // (None, if the next waiter was between two waits at that moment.)
        assert!(woken <= 1, "one release woke {woken} waiters");
        drop(waiters);
    }

    /// The same in a native queue: a waiter whose wait for a wake-up fails
    /// polls at the pace of a store without notifications.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn failing_notifications_do_not_make_native_waiters_spin() {
        let k = key("failing-notifications-native");
        let counted = Arc::new(
            FaultStore::over(atomic_store::open("memory://").unwrap())
                .failing_notifications()
                .native(),
        );
        let lock = DistributedLock::new(counted.clone(), k.clone(), Duration::from_secs(10));
        let holder = lock.acquire(Duration::from_secs(5)).await.unwrap();
        let waiter = spawn_waiter(&lock, Duration::from_secs(10));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let before = counted.calls();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let calls = counted.calls() - before;
        holder.release().await.unwrap();
        let (guard, _) = waiter.await.unwrap();
        guard.unwrap().release().await.unwrap();
        assert!(
            calls <= MOST_CALLS_IN_HALF_A_SECOND,
            "a waiter made {calls} store calls in 500 ms"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_turn_published_by_another_store_does_not_make_waiters_spin() {
        let k = key("other-store");
        // Another store with the same lock name, whose queue has moved on.
        let other = DistributedLock::new(
            atomic_store::open("memory://").unwrap(),
            k.clone(),
            Duration::from_secs(10),
        );
        for _ in 0..20 {
            other
                .acquire(Duration::from_secs(5))
                .await
                .unwrap()
                .release()
                .await
                .unwrap();
        }
        let counted = Arc::new(FaultStore::over(atomic_store::open("memory://").unwrap()));
        let lock = DistributedLock::new(counted.clone(), k.clone(), Duration::from_secs(10))
            .turn_timeout(Duration::from_secs(10));
        let calls = calls_while_waiting(&counted, &lock, &k).await;
        eprintln!("a waiter made {calls} store calls in 500 ms");
        assert!(
            calls <= MOST_CALLS_IN_HALF_A_SECOND,
            "a waiter made {calls} store calls in 500 ms"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_turn_published_before_a_restart_does_not_make_waiters_spin() {
        let k = key("restarted");
        let counted = Arc::new(FaultStore::over(atomic_store::open("memory://").unwrap()));
        let lock = DistributedLock::new(counted.clone(), k.clone(), Duration::from_secs(10))
            .turn_timeout(Duration::from_secs(10));
        for _ in 0..20 {
            lock.acquire(Duration::from_secs(5))
                .await
                .unwrap()
                .release()
                .await
                .unwrap();
        }
        // The store loses its queue (restarted without persistence).
        for part in ["next", "done"] {
            counted.delete(&format!("{k}:queue:{part}")).await.unwrap();
        }
        let calls = calls_while_waiting(&counted, &lock, &k).await;
        eprintln!("a waiter made {calls} store calls in 500 ms");
        assert!(
            calls <= MOST_CALLS_IN_HALF_A_SECOND,
            "a waiter made {calls} store calls in 500 ms"
        );
    }

    /// While a guard of this process holds the lock, its release grants
    /// the lock here directly: the waiters of this process only renew
    /// their places (a few calls each a second, not one every few ms),
    /// and each still gets the lock at once when its turn comes.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn waiters_behind_a_holder_of_this_process_do_not_poll() {
        let k = key("held-here");
        let counted = Arc::new(FaultStore::over(atomic_store::open("memory://").unwrap()).native());
        let lock = DistributedLock::new(counted.clone(), k.clone(), Duration::from_secs(10));
        let holder = lock.acquire(Duration::from_secs(5)).await.unwrap();
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let lock = lock.clone();
                tokio::spawn(async move {
                    let guard = lock.acquire(Duration::from_secs(10)).await.unwrap();
                    guard.release().await.unwrap();
                })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = counted.calls();
        tokio::time::sleep(Duration::from_secs(1)).await;
        let calls = counted.calls() - before;
        // The turn timeout is 2 s: a renewal pause of 250-500 ms, each a
        // call to enter and one to wait for a wake-up. (The head of the
        // queue used to poll every 16 ms: over 100 calls.)
        assert!(
            calls <= 8 * 2 * 4,
            "8 waiters made {calls} store calls in 1 s"
        );
        let released = Instant::now();
        holder.release().await.unwrap();
        for waiter in waiters {
            waiter.await.unwrap();
        }
        assert!(
            released.elapsed() < Duration::from_millis(200),
            "8 hand-overs took {:?}",
            released.elapsed()
        );
    }

    /// A waiter renews its presence key every third of the turn timeout, not
    /// on every poll (which would write to the store hundreds of times a
    /// second) and not less often (the key would lapse).
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_waiter_renews_its_presence_every_third_of_the_turn_timeout() {
        let k = key("presence-writes");
        let counted = Arc::new(FaultStore::over(atomic_store::open("memory://").unwrap()));
        let store: Store = counted.clone();
        let turn = Duration::from_millis(600);
        let lock = DistributedLock::new(store.clone(), k.clone(), Duration::from_secs(10))
            .turn_timeout(turn);
        let holder = lock.acquire(Duration::from_secs(5)).await.unwrap();
        let waiter = spawn_waiter(&lock, Duration::from_secs(10));
        wait_for_ticket(&store, &k, 2).await;
        let before = counted.ttl_writes.load(Ordering::SeqCst);
        tokio::time::sleep(turn * 3).await;
        let writes = counted.ttl_writes.load(Ordering::SeqCst) - before;
        holder.release().await.unwrap();
        waiter.await.unwrap().0.unwrap().release().await.unwrap();
        eprintln!("{writes} presence writes in three turn timeouts");
        // Nine renewals are due; a loaded machine may run fewer polls.
        assert!(
            (4..=30).contains(&writes),
            "{writes} presence writes in three turn timeouts (expected about 9)"
        );
    }

    /// A waiter whose store fails while it waits leaves the queue: the one
    /// behind does not wait for its presence key to lapse.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_waiter_whose_store_fails_leaves_the_queue() {
        let k = key("failed-waiter");
        let turn = Duration::from_secs(4);
        // Both on the plain-key queue: the faulty waiter's store has no
        // native one.
        let shared: Store = ticketed(atomic_store::open("memory://").unwrap());
        let failing = Arc::new(FaultStore::over(shared.clone()));
        let lock = |store: Store| {
            DistributedLock::new(store, k.clone(), Duration::from_secs(10)).turn_timeout(turn)
        };
        let (plain, faulty) = (lock(shared.clone()), lock(failing.clone()));
        let holder = plain.acquire(Duration::from_secs(5)).await.unwrap(); // ticket 1
        let doomed = spawn_waiter(&faulty, Duration::from_secs(30)); // ticket 2
        wait_for_ticket(&shared, &k, 2).await;
        let next = spawn_waiter(&plain, Duration::from_secs(30)); // ticket 3
        wait_for_ticket(&shared, &k, 3).await;
        failing.failing_reads.store(true, Ordering::SeqCst);
        let (failed, _) = doomed.await.unwrap();
        assert_eq!(failed.unwrap_err().kind(), ErrorKind::Unavailable);
        let released = Instant::now();
        holder.release().await.unwrap();
        let (guard, at) = next.await.unwrap();
        assert!(
            // A ticket marked gone is skipped at once; a missing key would
            // cost the grace period, a quarter of the turn timeout.
            at - released < turn / 8,
            "the waiter behind a failed one was served {:?} after the release (turn timeout {turn:?})",
            at - released
        );
        guard.unwrap().release().await.unwrap();
    }

    /// On a one-thread runtime, with a store that answers without waiting,
    /// a task that releases and acquires again in a loop must still let
    /// the others take their turns (the bench found one task taking every
    /// turn for 3 s while 63 never got one).
    #[tokio::test(flavor = "current_thread")]
    async fn a_task_looping_on_an_instant_store_does_not_starve_the_others() {
        for store in [
            atomic_store::open("memory://").unwrap(),
            ticketed(atomic_store::open("memory://").unwrap()),
        ] {
            let lock = DistributedLock::new(store, key("one-thread"), Duration::from_secs(10));
            let order = Arc::new(Mutex::new(Vec::new()));
            let mut tasks = JoinSet::new();
            for task in 0..8 {
                let (lock, order) = (lock.clone(), Arc::clone(&order));
                tasks.spawn(async move {
                    for _ in 0..20 {
                        let guard = lock.acquire(Duration::from_secs(10)).await.unwrap();
                        order.lock().unwrap().push(task);
                        guard.release().await.unwrap();
                    }
                });
            }
            join_first_panic(&mut tasks).await;
            let order = order.lock().unwrap();
            let mut first_round: Vec<_> = order[..8].to_vec();
            first_round.sort();
            assert_eq!(
                first_round,
                (0..8).collect::<Vec<_>>(),
                "one task took turns ahead of the others: {:?}",
                &order[..16]
            );
        }
    }

    /// Renewals come every third of the TTL: not at once after acquiring,
    /// and not in a loop.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn renewals_come_every_third_of_the_ttl() {
        let counted = Arc::new(FaultStore::over(atomic_store::open("memory://").unwrap()));
        let ttl = Duration::from_secs(3);
        let lock = DistributedLock::new(counted.clone(), key("renew-pace"), ttl).auto_renew(true);
        let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
        tokio::time::sleep(ttl / 10).await;
        assert_eq!(
            counted.extend_calls.load(Ordering::SeqCst),
            0,
            "renewed before a third of the TTL"
        );
        tokio::time::sleep(ttl * 2).await;
        let renewals = counted.extend_calls.load(Ordering::SeqCst);
        // Six are due in 2.1 TTLs; a loaded machine may run fewer. A loop
        // makes thousands.
        assert!(
            (3..=20).contains(&renewals),
            "{renewals} renewals in 2.1 TTLs"
        );
        guard.release().await.unwrap();
    }

    /// A holder that held past the waiters' grace period finds its ticket
    /// already skipped; its release must still wake the next waiter.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_release_after_a_hold_past_the_grace_wakes_the_next_waiter() {
        let k = key("long-hold-wake");
        let deaf: Store = Arc::new(
            FaultStore::over(atomic_store::open("memory://").unwrap())
                .deaf()
                .slow_polls(SLOW_POLL),
        );
        let lock = DistributedLock::new(Arc::clone(&deaf), k.clone(), Duration::from_secs(30));
        let holder = lock.acquire(Duration::from_secs(5)).await.unwrap(); // ticket 1
        let waiter = spawn_waiter(&lock, Duration::from_secs(60)); // ticket 2
        wait_for_ticket(&deaf, &k, 2).await;
        // Waiters skip a holder's ticket once a hold outlasts their grace;
        // played here directly, since this waiter polls only every 10 s.
        deaf.set(&format!("{k}:queue:done"), "1").await.unwrap();
        // The waiter is inside a slow poll now.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let released = Instant::now();
        holder.release().await.unwrap();
        let (guard, at) = waiter.await.unwrap();
        assert_prompt(vec![at - released]);
        guard.unwrap().release().await.unwrap();
    }

    /// A waiter skips dead tickets ahead of it, never its own, even when its
    /// own presence key is missing too.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_waiter_never_skips_its_own_ticket() {
        let k = key("own-ticket");
        let store: Store =
            Arc::new(FaultStore::over(atomic_store::open("memory://").unwrap()).drops_ttl_writes());
        let lock = DistributedLock::new(store.clone(), k.clone(), Duration::from_secs(10))
            .turn_timeout(Duration::from_millis(400));
        take_dead_tickets(&store, &k, 1).await;
        let guard = lock.acquire(Duration::from_secs(10)).await.unwrap();
        assert_eq!(
            store
                .get(&format!("{k}:queue:next"))
                .await
                .unwrap()
                .as_deref(),
            Some("2"),
            "the waiter skipped its own ticket and queued again"
        );
        guard.release().await.unwrap();
    }

    /// The exclusion check is shown to catch a store whose `acquire_lock`
    /// grants every call.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn exclusion_check_catches_a_store_that_grants_every_lock() {
        let broken: Store = Arc::new(
            FaultStore::over(atomic_store::open("memory://").unwrap()).grants_every_lock(),
        );
        let outcome = tokio::spawn(exclusion_fencing_and_fairness(broken)).await;
        let panic = outcome
            .expect_err("the exclusion check passed on a store that grants every lock")
            .into_panic();
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        assert!(
            message.contains("two holders") || message.contains("lock key"),
            "failed for another reason: {message}"
        );
    }
}
