//! N permits on one key, under the lock recipe's rules.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{
    by_deadline, store_identity, time_left, woken_or_paused, CancellationToken, DistributedLock,
    LockGuard, PendingAcquire, Route, ABANDON_WITHIN, DEADLINE_GRACE,
};
use crate::backoff::Backoff;
use crate::observe::recipe::{in_span, lock_wait_span, taken};
use crate::{AtomicStore, Error, ErrorKind, LockId, Operation, ReleaseOutcome, Result};

/// Most permits a [`Semaphore`] may have.
pub const MAX_PERMITS: u32 = 1024;

/// Longest key a [`Semaphore`] takes: room for `:gate` and its queue.
pub const MAX_SEMAPHORE_KEY_BYTES: usize = super::MAX_LOCK_KEY_BYTES - GATE.len();

const GATE: &str = ":gate";

/// `permits` holders at a time on one key, served in order.
///
/// Each permit is a lock of its own on one of `permits` slot keys
/// (`{key}:permit:0` …), with its own id, fencing token (rising per slot),
/// TTL, auto-renewal and loss signal, so at most `permits` hold at once
/// whatever the waiters do, and a dead holder's permit comes back when its
/// TTL runs out. Waiters queue for a gate, a [`DistributedLock`] on
/// `{key}:gate`: the head of that queue takes the next free slot and passes
/// the gate on, so permits go out in arrival order across processes, within
/// one total deadline.
///
/// ```
/// use std::time::Duration;
/// use atomic_store::lock::Semaphore;
///
/// # async fn demo() -> atomic_store::Result<()> {
/// let store = atomic_store::open("memory://")?;
/// let rpc = Semaphore::new(store, "rpc-slots", 4, Duration::from_secs(10)).auto_renew(true);
/// let permit = rpc.acquire(Duration::from_secs(2)).await?; // or Err(kind Timeout)
/// // ... at most 4 holders here; pass (permit.slot(), permit.fencing_token()) ...
/// permit.release().await?;
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
///
/// A reader–writer lock is not offered: a writer would have to drain all
/// slots in turn, and fairness between readers and writers needs a second
/// queue; it does not fall out of this design cheaply.
#[derive(Clone)]
pub struct Semaphore {
    store: Arc<dyn AtomicStore>,
    key: String,
    permits: u32,
    ttl: Duration,
    auto_renew: bool,
    turn_timeout: Duration,
    name: &'static str,
}

impl std::fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Semaphore")
            .field("key", &self.key)
            .field("permits", &self.permits)
            .field("ttl", &self.ttl)
            .field("auto_renew", &self.auto_renew)
            .finish()
    }
}

/// Releases seen in this process, by store and semaphore key: the gate's
/// holder waits on `freed` and tries the slot in `hint` first.
#[derive(Default)]
struct LocalReleases {
    freed: Notify,
    hint: AtomicUsize,
}

fn local_releases(store: usize, key: &str) -> Arc<LocalReleases> {
    type Releases = HashMap<(usize, String), Arc<LocalReleases>>;
    static RELEASES: OnceLock<Mutex<Releases>> = OnceLock::new();
    let mut map = RELEASES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if map.len() > 10_000 {
        map.retain(|_, r| Arc::strong_count(r) > 1);
    }
    Arc::clone(map.entry((store, key.to_owned())).or_default())
}

impl Semaphore {
    /// `permits` permits on `key`, each kept for `ttl` (unless renewed).
    pub fn new(
        store: Arc<dyn AtomicStore>,
        key: impl Into<String>,
        permits: u32,
        ttl: Duration,
    ) -> Self {
        Semaphore {
            store,
            key: key.into(),
            permits,
            ttl,
            auto_renew: false,
            turn_timeout: Duration::from_secs(2),
            name: "semaphore",
        }
    }

    /// The name of the semaphore in spans, warnings and metrics (default
    /// `"semaphore"`); one per kind, never a key.
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = name;
        self
    }

    /// Extend each permit in the background every `ttl / 3` while it is
    /// held.
    pub fn auto_renew(mut self, on: bool) -> Self {
        self.auto_renew = on;
        self
    }

    /// How long a crashed waiter (or a crashed head of the queue) may delay
    /// the others (default 2 s).
    pub fn turn_timeout(mut self, timeout: Duration) -> Self {
        self.turn_timeout = timeout;
        self
    }

    /// How many may hold at once.
    pub fn permits(&self) -> u32 {
        self.permits
    }

    /// The lock key waiters queue for, one at a time.
    pub fn gate_key(&self) -> String {
        format!("{}{GATE}", self.key)
    }

    /// The lock key of permit `slot`.
    pub fn slot_key(&self, slot: u32) -> String {
        format!("{}:permit:{slot}", self.key)
    }

    /// Where a release is announced to the head of the queue.
    fn freed_key(&self) -> String {
        format!("{}{GATE}:freed", self.key)
    }

    fn backend(&self) -> &'static str {
        self.store.capabilities().backend
    }

    /// The queue waiters pass through, one at a time. Its TTL is the turn
    /// timeout: a head that crashes holds up the rest for no longer.
    fn gate(&self) -> DistributedLock {
        DistributedLock::new(Arc::clone(&self.store), self.gate_key(), self.turn_timeout)
            .auto_renew(true)
            .turn_timeout(self.turn_timeout)
            .unobserved()
    }

    fn slot_lock(&self, slot: u32) -> DistributedLock {
        DistributedLock::new(Arc::clone(&self.store), self.slot_key(slot), self.ttl)
            .auto_renew(self.auto_renew)
            .turn_timeout(self.turn_timeout)
            .unobserved()
    }

    fn local(&self) -> Arc<LocalReleases> {
        local_releases(store_identity(&self.store), &self.key)
    }

    fn check(&self) -> Result<()> {
        let invalid = |message: String| {
            Err(Error::invalid(
                self.backend(),
                Operation::AcquireLock,
                message,
            ))
        };
        if self.key.len() > MAX_SEMAPHORE_KEY_BYTES {
            return invalid(format!(
                "semaphore keys are at most {MAX_SEMAPHORE_KEY_BYTES} bytes"
            ));
        }
        if !(1..=MAX_PERMITS).contains(&self.permits) {
            return invalid(format!(
                "a semaphore has 1..={MAX_PERMITS} permits, not {}",
                self.permits
            ));
        }
        // The TTL and turn timeout are checked as a lock's, with its words.
        DistributedLock::new(Arc::clone(&self.store), self.gate().key, self.ttl)
            .turn_timeout(self.turn_timeout)
            .check()
    }

    /// Take a permit now if one is free and nobody is queued for one. It
    /// never overtakes a waiter, so it also gives `None` while another
    /// caller is passing through the queue's gate.
    pub async fn try_acquire(&self) -> Result<Option<Permit>> {
        let span = lock_wait_span(self.name);
        let held = in_span(span, Some(self.name), taken, self.try_acquire_now());
        Ok(held.await?.map(|permit| permit.observed()))
    }

    async fn try_acquire_now(&self) -> Result<Option<Permit>> {
        self.check()?;
        let Some(gate) = self.gate().try_acquire().await?.map(LockGuard::quiet) else {
            return Ok(None);
        };
        let taken = self.take_free_slot(&self.local()).await;
        pass_on(gate, taken.is_ok()).await;
        taken
    }

    /// Wait for a permit, in turn, for at most `wait` (`Duration::MAX`
    /// waits without limit). Gives up with an error of kind
    /// [`Timeout`](ErrorKind::Timeout) when `wait` has passed.
    pub async fn acquire(&self, wait: Duration) -> Result<Permit> {
        let outcome = |_: &Permit| "acquired";
        let span = lock_wait_span(self.name);
        let held = in_span(span, Some(self.name), outcome, self.acquire_in_turn(wait));
        Ok(held.await?.observed())
    }

    async fn acquire_in_turn(&self, wait: Duration) -> Result<Permit> {
        self.check()?;
        let deadline = Instant::now().checked_add(wait);
        let gate = match self.gate().acquire(wait).await {
            Ok(gate) => gate.quiet(),
            Err(e) if e.kind() == ErrorKind::Timeout => return Err(self.timed_out(wait)),
            Err(e) => return Err(e),
        };
        // The wait checks the deadline after each answer; this bound is for
        // a store that stops answering.
        let backstop = deadline.and_then(|d| d.checked_add(DEADLINE_GRACE));
        let waiting = self.wait_for_a_slot(deadline, wait);
        let taken = by_deadline(backstop, || self.no_answer(wait), waiting).await;
        pass_on(gate, taken.is_ok()).await;
        taken
    }

    /// As the head of the queue, take the first slot that comes free.
    async fn wait_for_a_slot(&self, deadline: Option<Instant>, wait: Duration) -> Result<Permit> {
        let left = || time_left(deadline);
        let local = self.local();
        let freed_key = self.freed_key();
        let remote = self
            .store
            .capabilities()
            .notifications
            .then_some(&freed_key);
        let mut backoff = Backoff::new(Duration::from_millis(1));
        loop {
            if let Some(permit) = self.take_free_slot(&local).await? {
                return Ok(permit);
            }
            if left().is_zero() {
                return Err(self.timed_out(wait));
            }
            // A release in this process says so at once; elsewhere, by a
            // notification where the store has them, else at the next poll.
            let cap = Duration::from_millis(if remote.is_some() { 100 } else { 20 });
            let pause = backoff.next(cap).min(left());
            tokio::select! {
                _ = local.freed.notified() => backoff = Backoff::new(Duration::from_millis(1)),
                woken = woken_or_paused(&self.store, remote, pause) => if woken {
                    backoff = Backoff::new(Duration::from_millis(1));
                },
            }
        }
    }

    /// Try each slot once, the one freed last in this process first.
    async fn take_free_slot(&self, local: &LocalReleases) -> Result<Option<Permit>> {
        let first = local.hint.load(Ordering::Relaxed) as u32 % self.permits;
        for step in 0..self.permits {
            let slot = (first + step) % self.permits;
            let lock = self.slot_lock(slot);
            let sent = Instant::now();
            let call = PendingAcquire::start(&self.store, &lock.key, self.ttl);
            if let Some(held) = call.answer().await? {
                // The slot after it was taken longest ago, so is likely
                // the next to come free.
                local
                    .hint
                    .store(((slot + 1) % self.permits) as usize, Ordering::Relaxed);
                return Ok(Some(Permit {
                    guard: Some(lock.guard(held, Route::Ticketed(None), sent, self.ttl)),
                    semaphore: self.clone(),
                    slot,
                }));
            }
        }
        Ok(None)
    }

    fn no_answer(&self, wait: Duration) -> Error {
        Error::new(
            ErrorKind::Timeout,
            self.backend(),
            Operation::AcquireLock,
            format!(
                "no permit of the semaphore {:?} was taken within {wait:?}: the store did not answer in time",
                self.key
            ),
        )
    }

    fn timed_out(&self, wait: Duration) -> Error {
        Error::new(
            ErrorKind::Timeout,
            self.backend(),
            Operation::AcquireLock,
            format!(
                "no permit of the semaphore {:?} came free within {wait:?}",
                self.key
            ),
        )
    }

    /// Tell the head of the queue that `slot` is free: in this process at
    /// once, elsewhere in the background (a release need not wait for it).
    fn freed(&self, slot: u32) {
        let local = self.local();
        local.hint.store(slot as usize, Ordering::Relaxed);
        local.freed.notify_one();
        if self.store.capabilities().notifications {
            let (store, key) = (Arc::clone(&self.store), self.freed_key());
            tokio::spawn(async move {
                let _ = store.notify(&key).await;
            });
        }
    }
}

/// Release the gate. After a failure, in the background: the caller's
/// error must not wait for a store that may be down. After a success, at
/// once, so that the caller's own next call finds the gate free.
async fn pass_on(gate: LockGuard, now: bool) {
    let release = async move {
        let _ = tokio::time::timeout(ABANDON_WITHIN, gate.release()).await;
    };
    if now {
        release.await;
    } else {
        tokio::spawn(release);
    }
}

/// A held permit of a [`Semaphore`]. Release it with [`Permit::release`];
/// dropping it releases it in the background and logs a warning.
pub struct Permit {
    guard: Option<LockGuard>,
    semaphore: Semaphore,
    slot: u32,
}

impl std::fmt::Debug for Permit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Permit")
            .field("key", &self.semaphore.key)
            .field("slot", &self.slot)
            .field("fencing_token", &self.fencing_token())
            .field("lost", &self.is_lost())
            .finish()
    }
}

impl Permit {
    fn observed(mut self) -> Self {
        self.guard = self.guard.take().map(|g| g.observed(self.semaphore.name));
        self
    }

    fn guard(&self) -> &LockGuard {
        self.guard.as_ref().expect("held until released")
    }

    /// Which of the semaphore's slots this permit holds, `0..permits`.
    pub fn slot(&self) -> u32 {
        self.slot
    }

    /// The holder id.
    pub fn id(&self) -> &LockId {
        self.guard().id()
    }

    /// The fencing token of this acquisition: it rises for each slot, so a
    /// resource checks it together with [`slot`](Self::slot).
    pub fn fencing_token(&self) -> u64 {
        self.guard().fencing_token()
    }

    /// Cancelled when the permit is lost, or about to expire without
    /// renewal.
    pub fn lost(&self) -> CancellationToken {
        self.guard().lost()
    }

    /// Whether [`lost`](Self::lost) has fired.
    pub fn is_lost(&self) -> bool {
        self.guard().is_lost()
    }

    /// Give the permit back and wake the next waiter.
    pub async fn release(mut self) -> Result<ReleaseOutcome> {
        let guard = self.guard.take().expect("held until released");
        let outcome = guard.release().await;
        self.semaphore.freed(self.slot);
        outcome
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let Some(guard) = self.guard.take() else {
            return;
        };
        tracing::warn!(
            target: "atomic_store",
            semaphore = self.semaphore.name,
            slot = self.slot,
            "semaphore permit dropped without release(); releasing it in the background"
        );
        let mut guard = guard.quiet();
        // The hold ends now, not when the background release is done.
        drop(guard.holding.take());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (semaphore, slot) = (self.semaphore.clone(), self.slot);
            runtime.spawn(async move {
                let _ = guard.release().await;
                semaphore.freed(slot);
            });
        }
    }
}
