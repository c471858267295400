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
//! Stores with a native queue ([`AtomicStore::lock_queue_enter`]: Redis,
//! PostgreSQL, etcd, ZooKeeper, SQLite and memory) keep the waiters in the
//! store and hand the lock over in the release's own step:
//! - **One-step hand-over.** The release sets the lock key to the first
//!   waiter whose presence is live, with a new fencing token, and wakes
//!   that waiter alone: directly in this process; elsewhere by pub/sub
//!   (Redis), `LISTEN`/`NOTIFY` (PostgreSQL), a watch on its own key (etcd,
//!   ZooKeeper) or at its next poll, which for the head of the queue comes
//!   within milliseconds. A waiter told
//!   directly holds the lock without a request of its own, and while a
//!   guard of this process holds the lock its waiters here do not poll.
//! - **Short first hold.** The lock is handed over with the shorter of the
//!   TTL and `turn_timeout`, and the new holder extends it to the TTL a
//!   third of the way in (a short critical section never pays for it). So
//!   a lock handed to a waiter that has just died comes back within one
//!   turn timeout, and a process that crashes with 64 queued waiters
//!   delays the others by about two turn timeouts in all.
//! - **Presence on the server's clock.** Each waiter renews its place at
//!   least every quarter of `turn_timeout`; a place not renewed is dropped
//!   at the next step, and its waiter, if alive, queues again at the back.
//! - **Leaving passes the lock on.** A waiter that gives up, fails or is
//!   dropped leaves the queue, and if the lock had just been handed to it,
//!   hands it to the next waiter in the same step.
//!
//! Other stores (and any wrapper that does not forward the queue
//! operations) keep the queue in plain keys:
//! - **Fair queue in the store.** A waiter takes a ticket (`incr` of
//!   `{key}:queue:next`) and may try the lock only when `{key}:queue:done`
//!   reaches the ticket before it; the holder advances `done` with
//!   `compare_and_set` when it releases. So 64 tasks contending for one key
//!   take turns, across processes and machines, and none starves.
//! - **Dead tickets are skipped.** While it waits, a waiter keeps a presence
//!   key `{key}:queue:{ticket}` alive (TTL `turn_timeout`). A ticket whose
//!   waiter gave up is skipped at once; a run of tickets whose presence keys
//!   stay missing for a quarter of `turn_timeout` (their waiters crashed) is
//!   skipped in one step by the next waiter, so a crashed process with many
//!   queued waiters costs one grace period, not one per waiter. (A holder's
//!   own ticket is skipped the same way once it holds longer than that.)
//!   The queue only orders waiters: mutual exclusion and
//!   fencing always come from the lock key itself, so a skipped or barging
//!   client can never make two holders.
//! - **Prompt wake-up.** A release wakes the waiter of this process (on the
//!   same store handle) whose turn it is at once (and only that one: no
//!   herd); across processes, waiters poll with decorrelated jitter
//!   whose ceiling grows with their place in the queue (the next in line
//!   polls every few milliseconds, the 60th far less), so waiting never
//!   hammers the server.
//! - **Loss signal.** A watchdog cancels [`LockGuard::lost`] when an
//!   extension reports the lock gone, and in any case a margin *before* the
//!   last successful acquire or extend could expire (counted from when its
//!   request was sent), never after, whatever the store does: an extension
//!   still unanswered by then is given up on.
//!
//! On both paths the lock key holds the lock id like any lock of the
//! store, with a TTL, so other clients (and the TypeScript original) see it
//! as held, and exclusion and fencing come from it alone: a client that
//! takes the key outside the queue costs fairness, never a second holder.
//! The two paths keep separate queues, so processes that share a lock
//! should take the same path (the same store, unwrapped or wrapped alike).
//! The `:queue:` keys next to the lock key are reserved for the queue. `queue:next` and `queue:done` have
//! no TTL on purpose: they are the queue of every process that uses the lock,
//! and a counter that expired while a ticket was out would reorder or stall
//! its waiters. They are two small keys per lock key, like a fencing counter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

pub use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::observe::recipe::{in_span, lock_wait_span, taken, Holding};
use crate::rules::MAX_KEY_BYTES;
use crate::{
    AtomicStore, Error, ErrorKind, HandedTo, Lock, LockId, Operation, QueueEntry, QueueTurn,
    ReleaseOutcome, Result,
};

/// The presence value of a waiter that gave up.
const GONE: &str = "gone";

/// How many tickets past `done` a waiter reads at most to find a run of
/// dead ones to skip in one step.
const LOOK_AHEAD: i64 = 256;

/// How long past its deadline an `acquire` waits for a store call already
/// sent before it gives up on the call.
const DEADLINE_GRACE: Duration = Duration::from_millis(50);

/// How long a waiter that gives up may spend leaving the queue.
const ABANDON_WITHIN: Duration = Duration::from_secs(2);

/// A waiter's wake-up key is the lock key, this, and the first 16
/// characters of the waiter's id. A backend that hands the lock over in one
/// step notifies it there.
pub(crate) const WAKE_SUFFIX: &str = ":queue:w";

/// Longest lock key the recipe takes: room for its `:queue:…` suffixes.
pub const MAX_LOCK_KEY_BYTES: usize = MAX_KEY_BYTES - 32;

mod semaphore;
pub use semaphore::{Permit, Semaphore, MAX_PERMITS, MAX_SEMAPHORE_KEY_BYTES};

/// A named lock over a store, with its options.
#[derive(Clone)]
pub struct DistributedLock {
    store: Arc<dyn AtomicStore>,
    key: String,
    ttl: Duration,
    auto_renew: bool,
    turn_timeout: Duration,
    /// The name its spans and metrics use; `None` for the recipes' own
    /// inner locks, which are not reported apart.
    name: Option<&'static str>,
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

/// Which store a lock lives in, for the in-process wake-up: two handles of
/// one backend (or a store and another with the same lock names) keep
/// separate queues as far as this process knows.
fn store_identity(store: &Arc<dyn AtomicStore>) -> usize {
    Arc::as_ptr(store) as *const () as usize
}

/// The last `done` ticket published in this process, by store and lock
/// key: a release here wakes only the waiter whose turn it is, with no herd.
fn local_turns(store: usize, key: &str) -> tokio::sync::watch::Sender<i64> {
    type Turns = HashMap<(usize, String), tokio::sync::watch::Sender<i64>>;
    static TURNS: OnceLock<Mutex<Turns>> = OnceLock::new();
    let mut map = TURNS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if map.len() > 10_000 {
        map.retain(|_, s| s.receiver_count() > 0);
    }
    map.entry((store, key.to_owned()))
        .or_insert_with(|| tokio::sync::watch::channel(0).0)
        .clone()
}

/// How many guards of this process hold lock `key` of `store` through a
/// native queue. While one does, its release hands the lock straight to
/// the next waiter of this process (`deliver`), so those waiters only
/// renew their places instead of polling the store; a change of the count
/// (the lock went elsewhere, or came here) wakes them to look again.
fn local_holds(store: usize, key: &str) -> tokio::sync::watch::Sender<usize> {
    type Holds = HashMap<(usize, String), tokio::sync::watch::Sender<usize>>;
    static HOLDS: OnceLock<Mutex<Holds>> = OnceLock::new();
    let mut map = HOLDS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if map.len() > 10_000 {
        map.retain(|_, s| s.receiver_count() > 0 || *s.borrow() > 0);
    }
    map.entry((store, key.to_owned()))
        .or_insert_with(|| tokio::sync::watch::channel(0).0)
        .clone()
}

/// One count of [`local_holds`], given back when dropped. A release that
/// hands the lock to a waiter of this process passes it on with the grant,
/// so the count never dips between the two holders (which would wake every
/// waiter here for nothing).
#[derive(Debug)]
struct LocalHold(tokio::sync::watch::Sender<usize>);

/// A guard's [`LocalHold`], shared with its watchdog, which gives it back
/// as soon as the hold is lost: a lock that lapsed while its guard lives on
/// must not keep this process's waiters from polling for it.
type SharedHold = Arc<Mutex<Option<LocalHold>>>;

fn take_hold(here: &SharedHold) -> Option<LocalHold> {
    here.lock().unwrap_or_else(|e| e.into_inner()).take()
}

impl LocalHold {
    fn new(lock: &DistributedLock) -> Self {
        let holds = local_holds(store_identity(&lock.store), &lock.key);
        holds.send_modify(|n| *n += 1);
        LocalHold(holds)
    }
}

impl Drop for LocalHold {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Returns once a turn is published that may be `ticket`'s. Only a
/// publication made after the waiter last looked counts: a value left over
/// from before (say, from before the store restarted) must not wake it, or
/// it would poll the store in a loop with no pause.
async fn turn_published(turns: &mut tokio::sync::watch::Receiver<i64>, ticket: i64) {
    loop {
        if turns.changed().await.is_err() {
            return std::future::pending().await;
        }
        if *turns.borrow_and_update() + 1 >= ticket {
            return;
        }
    }
}

/// A hold handed to a waiter of this process, passed to it directly.
#[derive(Debug)]
struct Grant {
    fencing_token: u64,
    valid_for: Duration,
    /// When the release that handed it over was sent: the hold lasts at
    /// least `valid_for` from then.
    issued: Instant,
    /// The releasing guard's count of this process's holds.
    here: Option<LocalHold>,
}

/// The waiters of this process in native queues, by id (ids are unique
/// across stores and keys).
fn local_grants(
) -> std::sync::MutexGuard<'static, HashMap<LockId, tokio::sync::oneshot::Sender<Grant>>> {
    type Grants = HashMap<LockId, tokio::sync::oneshot::Sender<Grant>>;
    static GRANTS: OnceLock<Mutex<Grants>> = OnceLock::new();
    GRANTS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Tell a waiter of this process that the lock is now its own, if it is
/// one; a waiter elsewhere hears of it from the store, or finds out when it
/// next polls.
fn deliver(next: HandedTo, issued: Instant, here: Option<LocalHold>) {
    if let Some(waiter) = local_grants().remove(&next.waiter) {
        let _ = waiter.send(Grant {
            fencing_token: next.fencing_token,
            valid_for: next.valid_for,
            issued,
            here,
        });
    }
}

/// A waiter's place in a native queue. Dropped before it settles (the
/// acquire failed, or its future was dropped), it leaves the queue, so the
/// lock passes on at once even if it was just handed to this waiter.
struct QueuePlace {
    lock: DistributedLock,
    waiter: LockId,
    settled: bool,
}

impl Drop for QueuePlace {
    fn drop(&mut self) {
        local_grants().remove(&self.waiter);
        if self.settled {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (lock, waiter) = (self.lock.clone(), self.waiter.clone());
            runtime.spawn(async move { lock.leave_within(&waiter).await });
        }
    }
}

/// A waiter's ticket in the plain-key queue (0 before it has one). Dropped
/// before it settles, it is abandoned in the background: marked gone, and
/// the turn passed on if it was this one's.
struct TicketPlace {
    lock: DistributedLock,
    ticket: i64,
    settled: bool,
}

impl Drop for TicketPlace {
    fn drop(&mut self) {
        if self.settled || self.ticket == 0 {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (lock, ticket) = (self.lock.clone(), self.ticket);
            runtime.spawn(async move {
                let _ = tokio::time::timeout(ABANDON_WITHIN, lock.abandon(ticket)).await;
            });
        }
    }
}

/// How a guard's hold is given back.
#[derive(Debug, Clone, Copy)]
enum Route {
    /// Released and handed over in one step by the store.
    Queued,
    /// Released, then the ticket queue's turn passed on (if it had one).
    Ticketed(Option<i64>),
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
            name: Some("lock"),
        }
    }

    /// The name of the lock in spans, warnings and metrics (default
    /// `"lock"`). Give one per kind of lock, never a key: it is a metric
    /// label, and keys can hold ids.
    pub fn name(mut self, name: &'static str) -> Self {
        self.name = Some(name);
        self
    }

    /// Not reported apart: a recipe's own inner lock.
    fn unobserved(mut self) -> Self {
        self.name = None;
        self
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

    /// The lock key.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn backend(&self) -> &'static str {
        self.store.capabilities().backend
    }

    fn queue_key(&self, part: &str) -> String {
        format!("{}:queue:{part}", self.key)
    }

    fn wake_key(&self, waiter: &LockId) -> String {
        let id = waiter.as_str();
        let short = id.get(..16).unwrap_or(id);
        format!("{}{WAKE_SUFFIX}{short}", self.key)
    }

    /// The TTL a lock is handed over with: a waiter that died just before
    /// holds it for no longer than its presence would have lasted.
    fn handover_ttl(&self) -> Duration {
        self.ttl.min(self.turn_timeout)
    }

    /// Release `id`'s hold (`here` its count of this process's holds), or
    /// its place in the native queue, and pass the lock on.
    async fn leave(&self, id: &LockId, here: Option<LocalHold>) -> Result<ReleaseOutcome> {
        let issued = Instant::now();
        let handover = self
            .store
            .lock_queue_release(&self.key, id, self.handover_ttl())
            .await?;
        if let Some(next) = handover.next {
            deliver(next, issued, here);
        }
        Ok(handover.outcome)
    }

    /// [`leave`](Self::leave), given up on after [`ABANDON_WITHIN`]: a
    /// store that is down must not hold up the caller; the place then
    /// lapses instead.
    async fn leave_within(&self, id: &LockId) {
        let _ = tokio::time::timeout(ABANDON_WITHIN, self.leave(id, None)).await;
    }

    fn check(&self) -> Result<()> {
        if self.key.len() > MAX_LOCK_KEY_BYTES {
            return Err(Error::invalid(
                self.backend(),
                Operation::AcquireLock,
                format!("lock keys of the lock recipe are at most {MAX_LOCK_KEY_BYTES} bytes"),
            ));
        }
        crate::rules::check_ttl(self.backend(), Operation::AcquireLock, self.ttl)?;
        if crate::rules::check_ttl(self.backend(), Operation::AcquireLock, self.turn_timeout)
            .is_err()
        {
            return Err(Error::invalid(
                self.backend(),
                Operation::AcquireLock,
                format!(
                    "turn_timeout {:?} is outside 1ms..=365 days; pick one in that range",
                    self.turn_timeout
                ),
            ));
        }
        Ok(())
    }

    /// Take the lock now if it is free and nobody is queued for it.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>> {
        let Some(name) = self.name else {
            return self.try_acquire_now().await;
        };
        let held = in_span(
            lock_wait_span(name),
            Some(name),
            taken,
            self.try_acquire_now(),
        );
        Ok(held.await?.map(|guard| guard.observed(name)))
    }

    async fn try_acquire_now(&self) -> Result<Option<LockGuard>> {
        self.check()?;
        let waiter = LockId::generate();
        let entry = QueueEntry {
            waiter: &waiter,
            ttl: self.ttl,
            presence: None,
        };
        // Dropped before the answer, the lock it may have taken goes back.
        let mut place = QueuePlace {
            lock: self.clone(),
            waiter: waiter.clone(),
            settled: false,
        };
        let sent = Instant::now();
        let entered = self.store.lock_queue_enter(&self.key, entry).await;
        place.settled = true;
        match entered {
            Ok(QueueTurn::Acquired(lock)) => {
                return Ok(Some(self.queued_guard(
                    lock,
                    sent,
                    self.ttl,
                    LocalHold::new(self),
                )))
            }
            Ok(QueueTurn::Waiting { .. }) => return Ok(None),
            Err(e) if e.kind() != ErrorKind::Unsupported => return Err(e),
            Err(_) => {}
        }
        let next: i64 = match self.store.get(&self.queue_key("next")).await? {
            Some(v) => v.parse().unwrap_or(0),
            None => 0,
        };
        let done = self.done().await?;
        if next > done {
            return Ok(None);
        }
        let started = Instant::now();
        Ok(PendingAcquire::start(&self.store, &self.key, self.ttl)
            .answer()
            .await?
            .map(|lock| self.guard(lock, Route::Ticketed(None), started, self.ttl)))
    }

    async fn done(&self) -> Result<i64> {
        Ok(match self.store.get(&self.queue_key("done")).await? {
            Some(v) => v.parse().unwrap_or(0),
            None => 0,
        })
    }

    /// Wait for the lock, in turn, for at most `wait` (`Duration::MAX`
    /// waits without limit). Gives up with an error of kind
    /// [`Timeout`](ErrorKind::Timeout) when `wait` has passed.
    pub async fn acquire(&self, wait: Duration) -> Result<LockGuard> {
        let Some(name) = self.name else {
            return self.acquire_in_turn(wait).await;
        };
        let outcome = |_: &LockGuard| "acquired";
        let held = in_span(
            lock_wait_span(name),
            Some(name),
            outcome,
            self.acquire_in_turn(wait),
        );
        Ok(held.await?.observed(name))
    }

    async fn acquire_in_turn(&self, wait: Duration) -> Result<LockGuard> {
        self.check()?;
        let deadline = Instant::now().checked_add(wait);
        // The waits check the deadline themselves after each answer; this
        // bound is for a store that stops answering.
        let backstop = deadline.and_then(|d| d.checked_add(DEADLINE_GRACE));
        let no_answer = || self.no_answer(wait);
        // A task that releases and acquires again on a store that answers
        // at once (memory) would never let the others queue on a
        // one-thread runtime: give them their turn to get in line first.
        tokio::task::yield_now().await;
        let queued = self.acquire_queued(deadline, wait);
        if let Some(guard) = by_deadline(backstop, no_answer, queued).await? {
            return Ok(guard);
        }
        // Leaves the queue as it drops, unless it took the lock.
        let mut place = TicketPlace {
            lock: self.clone(),
            ticket: 0,
            settled: false,
        };
        let waiting = async {
            place.ticket = self.store.incr(&self.queue_key("next")).await?;
            self.mark_present(place.ticket).await?;
            self.take_turn(&mut place.ticket, deadline, wait).await
        };
        let taken = by_deadline(backstop, no_answer, waiting).await;
        place.settled = taken.is_ok();
        taken
    }

    /// Wait in the store's native queue; `None` if the store has none.
    async fn acquire_queued(
        &self,
        deadline: Option<Instant>,
        wait: Duration,
    ) -> Result<Option<LockGuard>> {
        let left = || time_left(deadline);
        let waiter = LockId::generate();
        let (tell, mut granted) = tokio::sync::oneshot::channel();
        local_grants().insert(waiter.clone(), tell);
        let mut place = QueuePlace {
            lock: self.clone(),
            waiter: waiter.clone(),
            settled: false,
        };
        let mut remote_wake = self.store.capabilities().notifications;
        let wake_key = self.wake_key(&waiter);
        let mut held_here = local_holds(store_identity(&self.store), &self.key).subscribe();
        let mut backoff = Backoff::new(Duration::from_millis(1));
        let entry = QueueEntry {
            waiter: &waiter,
            ttl: self.ttl,
            presence: Some(self.turn_timeout),
        };
        let mut first = true;
        loop {
            let sent = Instant::now();
            let ahead = match self.store.lock_queue_enter(&self.key, entry).await {
                Ok(QueueTurn::Acquired(lock)) => {
                    place.settled = true;
                    let here = LocalHold::new(self);
                    return Ok(Some(self.queued_guard(lock, sent, self.ttl, here)));
                }
                Ok(QueueTurn::Waiting { ahead }) => ahead,
                Err(e) if first && e.kind() == ErrorKind::Unsupported => {
                    place.settled = true;
                    return Ok(None);
                }
                // The place leaves in the background as it drops (and
                // releases a lock handed to it meanwhile), unless a grant
                // came: then the lock is ours, whatever this call said.
                Err(e) => {
                    return match granted.try_recv() {
                        Ok(grant) => Ok(Some(self.granted(&mut place, grant))),
                        Err(_) => Err(e),
                    }
                }
            };
            first = false;
            if left().is_zero() {
                return match granted.try_recv() {
                    Ok(grant) => Ok(Some(self.granted(&mut place, grant))),
                    Err(_) => Err(self.timed_out(wait)),
                };
            }
            // A hand-over wakes its waiter, so with notifications only the
            // head polls (for a lock freed outside the queue); the others
            // call again only to renew their place, well within its life,
            // and to find a hand-over whose wake-up was lost while it lasts.
            // While a guard of this process holds the lock, its release
            // grants the lock here directly, so nobody here needs to poll.
            let renew = self.handover_ttl() / 4;
            let local_holder = *held_here.borrow_and_update() > 0;
            let pause = if (ahead > 0 && remote_wake) || local_holder {
                crate::backoff::random_between(renew / 2, renew)
            } else {
                backoff.next(poll_cap(ahead as i64, remote_wake).min(renew))
            }
            .min(left());
            // A local holder's release grants the lock here directly, so
            // the store's wake-up is needed only once no guard here holds it.
            let listen = remote_wake && !local_holder;
            let remote = woken_within(&self.store, listen.then_some(&wake_key), pause);
            tokio::select! {
                // First: a grant already here must not wait behind a
                // wake-up that came with it.
                biased;
                Ok(grant) = &mut granted => return Ok(Some(self.granted(&mut place, grant))),
                woken = remote => match woken {
                    Some(true) => backoff = Backoff::new(Duration::from_millis(1)),
                    Some(false) => {}
                    // No wake-ups after all: poll (at once, then at the
                    // pace of a store without them).
                    None => remote_wake = false,
                },
                Ok(()) = held_here.changed(), if local_holder => {
                    backoff = Backoff::new(Duration::from_millis(1));
                }
            }
        }
    }

    /// The guard on a lock handed to `place`'s waiter in this process.
    fn granted(&self, place: &mut QueuePlace, grant: Grant) -> LockGuard {
        place.settled = true;
        let lock = Lock::new(place.waiter.clone(), grant.fencing_token);
        let here = grant.here.unwrap_or_else(|| LocalHold::new(self));
        self.queued_guard(lock, grant.issued, grant.valid_for, here)
    }

    /// The backstop's error: a store call was still unanswered a grace
    /// period past the deadline (what it did is undone in the background).
    fn no_answer(&self, wait: Duration) -> Error {
        Error::new(
            ErrorKind::Timeout,
            self.backend(),
            Operation::AcquireLock,
            format!(
                "the lock {:?} was not acquired within {wait:?}: the store did not answer in time",
                self.key
            ),
        )
    }

    fn timed_out(&self, wait: Duration) -> Error {
        Error::new(
            ErrorKind::Timeout,
            self.backend(),
            Operation::AcquireLock,
            format!("the lock {:?} was not acquired within {wait:?}", self.key),
        )
    }

    /// Wait in the queue with `ticket` (queueing again if skipped) until
    /// the lock is ours.
    async fn take_turn(
        &self,
        ticket: &mut i64,
        deadline: Option<Instant>,
        wait: Duration,
    ) -> Result<LockGuard> {
        let left = || time_left(deadline);
        let mut turns = local_turns(store_identity(&self.store), &self.key).subscribe();
        let remote_wake = self.store.capabilities().notifications;
        let mut backoff = Backoff::new(Duration::from_millis(1));
        let mut refreshed = Instant::now();
        let mut dead_run: Option<DeadRun> = None;
        let mut tried = false;
        loop {
            // At least one try, however short the wait.
            if tried && left().is_zero() {
                return Err(self.timed_out(wait));
            }
            tried = true;
            // Turns published from now on wake this waiter; older ones are
            // in the value read next.
            turns.borrow_and_update();
            let done = self.done().await?;
            let place = *ticket - done - 1;
            if place < 0 {
                // Skipped (our presence key lapsed): queue again at the back.
                *ticket = self.store.incr(&self.queue_key("next")).await?;
                self.mark_present(*ticket).await?;
                continue;
            }
            if place == 0 {
                let started = Instant::now();
                let call = PendingAcquire::start(&self.store, &self.key, self.ttl);
                if let Some(lock) = call.answer().await? {
                    let guard = self.guard(lock, Route::Ticketed(Some(*ticket)), started, self.ttl);
                    self.forget_presence(*ticket);
                    return Ok(guard);
                }
            } else if let Some(last_dead) = self
                .dead_tickets_ahead(done, *ticket, &mut dead_run)
                .await?
            {
                // If someone else moved `done` first, look again at once;
                // if the store refused, wait like any poll.
                if self.advance(done, last_dead).await {
                    continue;
                }
            }
            if refreshed.elapsed() >= self.turn_timeout / 3 {
                self.mark_present(*ticket).await?;
                refreshed = Instant::now();
            }
            let pause = backoff.next(poll_cap(place, remote_wake)).min(left());
            let turn_key = self.turn_key(*ticket);
            let remote = woken_or_paused(&self.store, remote_wake.then_some(&turn_key), pause);
            tokio::select! {
                _ = turn_published(&mut turns, *ticket) => backoff = Backoff::new(Duration::from_millis(1)),
                woken = remote => {
                    if woken {
                        backoff = Backoff::new(Duration::from_millis(1));
                    }
                }
            }
        }
    }

    /// The last ticket of a run of dead tickets right after `done` (and
    /// before our own `ticket`) that may be skipped now, if any.
    ///
    /// A ticket is dead when its waiter marked it gone, or when its presence
    /// key stays missing for a grace period: a missing key may belong to a
    /// waiter between taking its ticket and writing the key, which a loaded
    /// machine can stretch well past a few milliseconds. So a run is read
    /// once, and what is still dead of it a grace period later is skipped in
    /// one step: a crashed process with many queued waiters costs one grace
    /// period, not one per waiter.
    async fn dead_tickets_ahead(
        &self,
        done: i64,
        ticket: i64,
        seen: &mut Option<DeadRun>,
    ) -> Result<Option<i64>> {
        let head = done + 1;
        let grace = (self.turn_timeout / 4).max(Duration::from_millis(50));
        match seen.take() {
            Some(run) if run.head == head && run.since.elapsed() >= grace => {
                let (_, dead_until) = self.scan_dead(head, run.last).await?;
                Ok((dead_until >= head).then_some(dead_until))
            }
            Some(run) if run.head == head => {
                *seen = Some(run);
                Ok(None)
            }
            _ => {
                let last = (ticket - 1).min(head + LOOK_AHEAD - 1);
                let (gone_until, dead_until) = self.scan_dead(head, last).await?;
                if gone_until >= head {
                    return Ok(Some(gone_until));
                }
                if dead_until >= head {
                    *seen = Some(DeadRun {
                        head,
                        last: dead_until,
                        since: Instant::now(),
                    });
                }
                Ok(None)
            }
        }
    }

    /// Reads the presence keys of tickets `from..=to` until the first live
    /// one. Returns the last ticket of the leading run marked gone and the
    /// last of the leading run that is gone or missing (`from - 1` when
    /// there is none).
    async fn scan_dead(&self, from: i64, to: i64) -> Result<(i64, i64)> {
        let (mut gone_until, mut dead_until) = (from - 1, from - 1);
        // One ticket at a time at first (the head is usually alive, or the
        // holder's, with a live waiter right behind), then in batches that
        // double, so a long dead run takes few round trips and a short one
        // costs few reads.
        let mut start = from;
        let mut batch = 1;
        while start <= to {
            let end = (start + batch - 1).min(to);
            for (t, presence) in (start..=end).zip(self.presences(start, end).await?) {
                match presence.as_deref() {
                    Some(GONE) => {
                        if gone_until == t - 1 {
                            gone_until = t;
                        }
                        dead_until = t;
                    }
                    None => dead_until = t,
                    Some(_) => return Ok((gone_until, dead_until)),
                }
            }
            start = end + 1;
            batch = if start - from < 2 {
                1
            } else {
                (batch * 2).min(16)
            };
        }
        Ok((gone_until, dead_until))
    }

    /// The presence values of tickets `from..=to`, read concurrently.
    async fn presences(&self, from: i64, to: i64) -> Result<Vec<Option<String>>> {
        if from == to {
            return Ok(vec![
                self.store.get(&self.queue_key(&from.to_string())).await?,
            ]);
        }
        let mut reads = tokio::task::JoinSet::new();
        for t in from..=to {
            let store = Arc::clone(&self.store);
            let key = self.queue_key(&t.to_string());
            reads.spawn(async move { (t, store.get(&key).await) });
        }
        let mut found = vec![None; (to - from + 1) as usize];
        while let Some(read) = reads.join_next().await {
            let (t, value) = read.map_err(|e| {
                Error::new(
                    ErrorKind::Backend,
                    self.backend(),
                    Operation::Get,
                    format!("reading the lock queue failed: {e}"),
                )
            })?;
            found[(t - from) as usize] = value?;
        }
        Ok(found)
    }

    /// Write (or renew) the presence key of `ticket` for one turn timeout.
    async fn mark_present(&self, ticket: i64) -> Result<()> {
        self.store
            .set_with_ttl(
                &self.queue_key(&ticket.to_string()),
                "waiting",
                self.turn_timeout,
            )
            .await
    }

    /// The holder's presence key is no longer needed; removing it must not
    /// delay the holder.
    fn forget_presence(&self, ticket: i64) {
        let store = Arc::clone(&self.store);
        let key = self.queue_key(&ticket.to_string());
        tokio::spawn(async move {
            let _ = store.delete(&key).await;
        });
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
        self.advance(ticket - 1, ticket).await;
    }

    /// Move `done` from `from` to `to` (so every ticket between is done)
    /// unless someone moved it first, and wake the waiters. Returns whether
    /// it moved.
    async fn advance(&self, from: i64, to: i64) -> bool {
        let before = from.to_string();
        let advanced = self
            .store
            .compare_and_set(
                &self.queue_key("done"),
                Some(before.as_str()).filter(|_| from > 0),
                &to.to_string(),
                None,
            )
            .await;
        let moved = matches!(advanced, Ok(true));
        if moved {
            self.wake(to).await;
        }
        moved
    }

    /// Tell the waiters that `done` is now `done`: this process's at once,
    /// and with notifications, the next ticket's waiter in other processes
    /// too (only that one: waking every waiter would have each read the
    /// queue again on every turn).
    async fn wake(&self, done: i64) {
        local_turns(store_identity(&self.store), &self.key).send_replace(done);
        if self.store.capabilities().notifications {
            let _ = self.store.notify(&self.turn_key(done + 1)).await;
        }
    }

    /// The key whose notification tells `ticket`'s waiter its turn came.
    fn turn_key(&self, ticket: i64) -> String {
        self.queue_key(&format!("turn:{ticket}"))
    }

    /// A guard on `lock`, which holds at least until `valid_for` after
    /// `started`.
    fn guard(&self, lock: Lock, route: Route, started: Instant, valid_for: Duration) -> LockGuard {
        let lost = CancellationToken::new();
        let hold = Hold {
            id: lock.id.clone(),
            started,
            valid_for,
        };
        let here = SharedHold::default();
        let watchdog = tokio::spawn(watch(self.clone(), hold, lost.clone(), here.clone()));
        LockGuard {
            lock: self.clone(),
            held: lock,
            route,
            lost,
            watchdog: Some(watchdog),
            released: false,
            warn_on_drop: true,
            holding: None,
            here,
        }
    }

    /// A guard on a hold from the native queue.
    fn queued_guard(
        &self,
        lock: Lock,
        started: Instant,
        valid_for: Duration,
        here: LocalHold,
    ) -> LockGuard {
        let guard = self.guard(lock, Route::Queued, started, valid_for);
        *guard.here.lock().unwrap_or_else(|e| e.into_inner()) = Some(here);
        guard
    }
}

/// The time left before `deadline` (`None`: no deadline, so without end).
fn time_left(deadline: Option<Instant>) -> Duration {
    deadline.map_or(Duration::MAX, |d| {
        d.saturating_duration_since(Instant::now())
    })
}

/// `call`, given up on with `timed_out()` once `deadline` passes (`None`:
/// never). What `call` holds when it is dropped undoes itself.
async fn by_deadline<T>(
    deadline: Option<Instant>,
    timed_out: impl FnOnce() -> Error,
    call: impl std::future::Future<Output = Result<T>>,
) -> Result<T> {
    match deadline {
        None => call.await,
        Some(at) => tokio::time::timeout_at(at.into(), call)
            .await
            .unwrap_or_else(|_| Err(timed_out())),
    }
}

/// An `acquire_lock` that its caller may stop waiting for (a deadline, a
/// dropped future): a lock granted after that is released in the
/// background, so the key is not left held by no one until its TTL.
struct PendingAcquire {
    store: Arc<dyn AtomicStore>,
    key: String,
    call: Option<AcquireCall>,
}

type AcquireCall =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Option<Lock>>> + Send>>;

impl PendingAcquire {
    fn start(store: &Arc<dyn AtomicStore>, key: &str, ttl: Duration) -> Self {
        let (sent_to, sent_key) = (Arc::clone(store), key.to_owned());
        PendingAcquire {
            store: Arc::clone(store),
            key: key.to_owned(),
            call: Some(Box::pin(async move {
                sent_to.acquire_lock(&sent_key, ttl).await
            })),
        }
    }

    async fn answer(mut self) -> Result<Option<Lock>> {
        let answer = self.call.as_mut().expect("answered once").await;
        self.call = None;
        answer
    }
}

impl Drop for PendingAcquire {
    fn drop(&mut self) {
        let Some(call) = self.call.take() else {
            return;
        };
        let (store, key) = (Arc::clone(&self.store), std::mem::take(&mut self.key));
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Ok(Some(lock)) = call.await {
                    let _ = store.release_lock(&key, &lock.id).await;
                }
            });
        }
    }
}

/// Waits `pause`, or less if a notification of `key` comes first: whether
/// one came; `None` at once if the wait failed (a refused subscription, a
/// `LISTEN` that does not deliver).
async fn woken_within(
    store: &Arc<dyn AtomicStore>,
    key: Option<&String>,
    pause: Duration,
) -> Option<bool> {
    let Some(key) = key else {
        tokio::time::sleep(pause).await;
        return Some(false);
    };
    match tokio::time::timeout(pause, store.wait_notified(key, pause)).await {
        Ok(Ok(woken)) => Some(woken),
        Ok(Err(_)) => None,
        Err(_) => Some(false),
    }
}

/// [`woken_within`], but a failed wait still takes the whole pause, so
/// that waiters on a store whose notifications fail never poll in a loop.
async fn woken_or_paused(
    store: &Arc<dyn AtomicStore>,
    key: Option<&String>,
    pause: Duration,
) -> bool {
    let started = Instant::now();
    match woken_within(store, key, pause).await {
        Some(woken) => woken,
        None => {
            tokio::time::sleep(pause.saturating_sub(started.elapsed())).await;
            false
        }
    }
}

/// The longest pause between two polls of a waiter `place` tickets behind
/// the head. The next in line polls every few ms; later places, less often.
/// With notifications, a hand-over wakes the waiters at once and polling is
/// only the fallback, so it can be slower.
fn poll_cap(place: i64, remote_wake: bool) -> Duration {
    let slower = if remote_wake { 4 } else { 1 };
    Duration::from_millis((4 + 4 * place.clamp(0, 50) as u64) * slower)
}

/// A run of dead-looking tickets from `head` to `last`, first seen at
/// `since`.
struct DeadRun {
    head: i64,
    last: i64,
    since: Instant,
}

/// A hold, live at least until `started + valid_for`.
struct Hold {
    id: LockId,
    started: Instant,
    valid_for: Duration,
}

/// Renews the lock (if asked) and cancels `lost` before it can expire.
///
/// The lock is known to be live until the send time of the last successful
/// acquire or extend plus the TTL (the server started the TTL no earlier).
/// `lost` fires a margin before that whatever the store does: an extension
/// still unanswered then is given up on, since a later answer would only
/// count from its send time anyway. A hold handed over with a TTL shorter
/// than the lock's is extended to the full TTL once, early, even without
/// `auto_renew`.
async fn watch(lock: DistributedLock, hold: Hold, lost: CancellationToken, here: SharedHold) {
    let lost = || {
        drop(take_hold(&here));
        lost.cancel();
    };
    let id = hold.id;
    let margin = (lock.ttl / 10)
        .max(Duration::from_millis(5))
        .min(hold.valid_for / 2);
    let renew_every = lock.ttl / 3;
    let mut short_hold = hold.valid_for < lock.ttl;
    let mut give_up_at = hold.started + hold.valid_for - margin;
    let mut next_renew = hold.started
        + if short_hold {
            hold.valid_for / 3
        } else {
            renew_every
        };
    loop {
        let wake = if lock.auto_renew || short_hold {
            next_renew.min(give_up_at)
        } else {
            give_up_at
        };
        tokio::time::sleep_until(wake.into()).await;
        if Instant::now() >= give_up_at {
            lost();
            return;
        }
        let sent = Instant::now();
        let extend = lock.store.extend_lock(&lock.key, &id, lock.ttl);
        match tokio::time::timeout_at(give_up_at.into(), extend).await {
            Ok(Ok(crate::ExtendOutcome::Extended)) => {
                give_up_at = give_up_at.max(sent + lock.ttl - margin);
                next_renew = sent + renew_every;
                short_hold = false;
            }
            // Another holder, no holder, or no answer in time.
            Ok(Ok(_)) | Err(_) => {
                lost();
                return;
            }
            // Try again soon; the give-up time still holds.
            Ok(Err(_)) => next_renew = Instant::now() + Duration::from_millis(20),
        }
    }
}

/// A held lock. Release it with [`LockGuard::release`]; dropping it releases
/// it in the background and logs a warning.
pub struct LockGuard {
    lock: DistributedLock,
    held: Lock,
    route: Route,
    lost: CancellationToken,
    watchdog: Option<tokio::task::JoinHandle<()>>,
    released: bool,
    /// Off for guards the recipes hold for themselves: their drop is a
    /// cancelled call, not a caller's mistake.
    warn_on_drop: bool,
    /// The hold's span and time, recorded as it drops.
    holding: Option<Holding>,
    /// A hold from the native queue: its count of this process's holds.
    here: SharedHold,
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

    /// Its hold is traced, and timed, as `name`'s. (Begun once the wait
    /// is over, so that the hold's span is not the wait's child.)
    pub(super) fn observed(mut self, name: &'static str) -> Self {
        self.holding = Some(Holding::start(name));
        self
    }

    /// Dropping it releases it in the background without a warning.
    fn quiet(mut self) -> Self {
        self.warn_on_drop = false;
        self
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
        let ticket = match self.route {
            Route::Queued => return self.lock.leave(&self.held.id, take_hold(&self.here)).await,
            Route::Ticketed(ticket) => ticket,
        };
        let outcome = self
            .lock
            .store
            .release_lock(&self.lock.key, &self.held.id)
            .await;
        if let Some(ticket) = ticket {
            if !self.lock.advance(ticket - 1, ticket).await {
                // The waiters skipped this ticket while it was held (a hold
                // longer than their grace period): the next one waits for
                // the lock key alone, so wake it all the same.
                let done = self.lock.done().await.unwrap_or(ticket);
                self.lock.wake(done).await;
            }
        }
        outcome
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if self.released {
            return;
        }
        if self.warn_on_drop {
            tracing::warn!(
                target: "atomic_store",
                lock = self.lock.name.unwrap_or("lock"),
                "lock guard dropped without release(); releasing it in the background"
            );
        }
        if let Some(w) = self.watchdog.take() {
            w.abort();
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let mut orphan = LockGuard {
                lock: self.lock.clone(),
                held: self.held.clone(),
                route: self.route,
                lost: self.lost.clone(),
                watchdog: None,
                released: true,
                warn_on_drop: false,
                holding: None,
                here: self.here.clone(),
            };
            runtime.spawn(async move {
                let _ = orphan.finish().await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(feature = "memory")]
    #[tokio::test]
    async fn presences_come_back_in_ticket_order() {
        let store: Arc<dyn AtomicStore> = Arc::new(crate::memory::MemoryStore::new());
        let lock = DistributedLock::new(store.clone(), "presences", Duration::from_secs(10));
        for t in [5, 7, 8, 9] {
            store
                .set(&lock.queue_key(&t.to_string()), &format!("p{t}"))
                .await
                .unwrap();
        }
        let expect = |ts: &[i64]| -> Vec<Option<String>> {
            ts.iter()
                .map(|t| (*t != 6).then(|| format!("p{t}")))
                .collect()
        };
        assert_eq!(
            lock.presences(5, 9).await.unwrap(),
            expect(&[5, 6, 7, 8, 9])
        );
        assert_eq!(lock.presences(6, 7).await.unwrap(), expect(&[6, 7]));
        assert_eq!(lock.presences(7, 7).await.unwrap(), expect(&[7]));
    }

    #[test]
    fn later_places_and_notified_waiters_poll_less_often() {
        let ms = Duration::from_millis;
        assert_eq!(poll_cap(0, false), ms(4));
        assert_eq!(poll_cap(1, false), ms(8));
        assert_eq!(poll_cap(50, false), ms(204));
        assert_eq!(poll_cap(1000, false), ms(204));
        assert_eq!(poll_cap(0, true), ms(16));
        assert_eq!(poll_cap(3, true), ms(64));
        assert_eq!(poll_cap(1000, true), ms(816));
    }
}
