//! One worker process of `bench`: runs the workload's tasks against the
//! store until the deadline, prints its progress, then its report.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atomic_store::lock::{DistributedLock, LockGuard, Permit, Semaphore};
use atomic_store::{AtomicStore, ReleaseOutcome};
use hdrhistogram::Histogram;
use serde_json::json;

use super::report::{new_histogram, shared_key, WorkerReport, Workload};
use crate::args::WorkerArgs;
use crate::output::{EXIT_ERROR, EXIT_OK};

/// The pending transaction count of a chain that confirms every nonce this
/// process hands out.
///
/// The nonce rule rewinds to `pending` when the store is more than 500
/// ahead of it, so a count read long before its `assign_nonce` reaches the
/// store (a task preempted in between) would make the rule itself hand
/// nonces out again. The window below keeps every read fresh: a call may
/// start only once every call that started [`NONCE_READ_WINDOW`] or more
/// calls before it has finished, so at most `NONCE_READ_WINDOW +
/// concurrency` assignments can happen between a read and its use.
#[derive(Default)]
struct SimulatedChain {
    confirmed: AtomicU64,
    next_ticket: AtomicU64,
    in_flight: Mutex<std::collections::BTreeSet<u64>>,
    finished: tokio::sync::Notify,
}

const NONCE_READ_WINDOW: u64 = 256;

impl SimulatedChain {
    async fn enter(&self) -> u64 {
        let ticket = self.next_ticket.fetch_add(1, Ordering::SeqCst);
        self.in_flight.lock().unwrap().insert(ticket);
        loop {
            let finished = self.finished.notified();
            let oldest = *self.in_flight.lock().unwrap().first().expect("own ticket");
            if oldest + NONCE_READ_WINDOW > ticket {
                return ticket;
            }
            finished.await;
        }
    }

    fn pending(&self) -> u64 {
        self.confirmed.load(Ordering::SeqCst)
    }

    fn leave(&self, ticket: u64, assigned: Option<u64>) {
        if let Some(n) = assigned {
            self.confirmed.fetch_max(n + 1, Ordering::SeqCst);
        }
        self.in_flight.lock().unwrap().remove(&ticket);
        self.finished.notify_waiters();
    }
}

struct TaskState {
    acquired: u64,
    values: Vec<i64>,
    histogram: Histogram<u64>,
    errors: u64,
    first_error: Option<String>,
    violations: Vec<String>,
}

/// Latencies kept in a small buffer and recorded a batch at a time: 64
/// tasks recording one by one into 64 histograms miss the cache on most
/// records, and that showed as 3% of a Redis `incr` worker's profile.
#[derive(Default)]
struct LatencyBatch(Vec<u64>);

impl LatencyBatch {
    const SIZE: usize = 1024;

    /// Whether it flushed: the time that took is no operation's.
    fn record(&mut self, histogram: &mut Histogram<u64>, latency: Duration) -> bool {
        if self.0.capacity() == 0 {
            self.0.reserve_exact(Self::SIZE);
        }
        self.0.push(latency.as_micros().max(1) as u64);
        let full = self.0.len() == Self::SIZE;
        if full {
            self.flush(histogram);
        }
        full
    }

    fn flush(&mut self, histogram: &mut Histogram<u64>) {
        for micros in self.0.drain(..) {
            histogram.saturating_record(micros);
        }
    }
}

/// One worker process: run the workload, print progress, then the report.
pub async fn run(url: &str, args: WorkerArgs) -> u8 {
    // Connect (and set up a schema or a server clock) before the clock
    // starts, as redis-benchmark and pgbench do: on a loaded machine that
    // took most of a short run.
    let warm_up = format!("{}:warm-up", args.base);
    let relay = if args.relay_metrics {
        crate::store::record_metrics(true);
        match Relay::start() {
            Ok(relay) => Some(relay),
            Err(message) => return worker_failed_with(message),
        }
    } else {
        None
    };
    let opened = if args.no_layer {
        crate::store::open_bare(url)
    } else {
        crate::store::open(url)
    };
    let store = match opened {
        Ok(s) => match s.get(&warm_up).await {
            Ok(_) => s,
            Err(e) => return worker_failed(&e),
        },
        Err(e) => return worker_failed(&e),
    };
    let ops = Arc::new(AtomicU64::new(0));
    let chain = Arc::new(SimulatedChain::default());
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut tasks = Vec::new();
    for task in 0..args.concurrency {
        let (store, ops, chain) = (Arc::clone(&store), Arc::clone(&ops), Arc::clone(&chain));
        let base = args.base.clone();
        let workload = args.workload;
        let permits = args.permits;
        tasks.push(tokio::spawn(async move {
            let contended = Contended::new(&store, &base, workload, permits);
            run_task(
                store, workload, &base, task, deadline, &ops, &chain, contended,
            )
            .await
        }));
    }
    let relay = Arc::new(relay);
    let progress = {
        let (ops, relay) = (Arc::clone(&ops), Arc::clone(&relay));
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                say!("{}", json!({ "progress": ops.load(Ordering::Relaxed) }));
                Relay::send(&relay);
            }
        })
    };
    let mut report = WorkerReport::default();
    let mut histogram = new_histogram();
    for t in tasks {
        match t.await {
            Ok(state) => {
                report.acquisitions.push(state.acquired);
                report.values.extend(state.values);
                histogram.add(&state.histogram).expect("same bounds");
                report.errors += state.errors;
                report.first_error = report.first_error.or(state.first_error);
                report.violations.extend(state.violations);
            }
            Err(e) => report
                .violations
                .push(format!("a worker task panicked: {e}")),
        }
    }
    progress.abort();
    Relay::send(&relay);
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.ops = ops.load(Ordering::Relaxed);
    report.latency = histogram
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    say!("{}", serde_json::to_string(&report).unwrap_or_default());
    EXIT_OK
}

/// A worker's metrics, sent to the parent as it goes.
#[cfg(feature = "metrics")]
struct Relay(metrics_util::debugging::Snapshotter);
#[cfg(not(feature = "metrics"))]
struct Relay;

impl Relay {
    #[cfg(feature = "metrics")]
    fn start() -> Result<Relay, String> {
        crate::observe::start_relaying().map(Relay)
    }

    #[cfg(not(feature = "metrics"))]
    fn start() -> Result<Relay, String> {
        Err(crate::observe::NO_METRICS.into())
    }

    /// Send what changed since the last line.
    fn send(relay: &Option<Relay>) {
        #[cfg(feature = "metrics")]
        if let Some(Relay(snapshotter)) = relay {
            let metrics = crate::observe::relay_lines(snapshotter);
            if !metrics.is_empty() {
                say!("{}", json!({ "metrics": metrics }));
            }
        }
        let _ = relay;
    }
}

/// Report a worker that could not start its tasks.
fn worker_failed(e: &atomic_store::Error) -> u8 {
    worker_failed_with(e.to_string())
}

fn worker_failed_with(first_error: String) -> u8 {
    let report = WorkerReport {
        errors: 1,
        first_error: Some(first_error),
        ..Default::default()
    };
    say!("{}", serde_json::to_string(&report).unwrap_or_default());
    EXIT_ERROR
}

/// What the lock-contended tasks contend for.
enum Contended {
    Lock(DistributedLock),
    Permits(Semaphore),
}

/// A held lock or permit.
enum Held {
    Lock(LockGuard),
    Permit(Permit),
}

impl Contended {
    fn new(
        store: &Arc<dyn AtomicStore>,
        base: &str,
        workload: Workload,
        permits: Option<u32>,
    ) -> Self {
        let (store, key, ttl) = (
            Arc::clone(store),
            shared_key(base, workload),
            Duration::from_secs(10),
        );
        match permits {
            None => Contended::Lock(DistributedLock::new(store, key, ttl)),
            Some(n) => Contended::Permits(Semaphore::new(store, key, n, ttl)),
        }
    }

    /// How many may hold at once.
    fn seats(&self) -> u32 {
        match self {
            Contended::Lock(_) => 1,
            Contended::Permits(s) => s.permits(),
        }
    }

    /// Wait for a turn: the hold, and the lock key the store must now
    /// refuse to anyone else.
    async fn acquire(&self, wait: Duration) -> atomic_store::Result<(Held, String)> {
        Ok(match self {
            Contended::Lock(lock) => (Held::Lock(lock.acquire(wait).await?), lock.key().to_owned()),
            Contended::Permits(sem) => {
                let permit = sem.acquire(wait).await?;
                let key = sem.slot_key(permit.slot());
                (Held::Permit(permit), key)
            }
        })
    }
}

impl Held {
    async fn release(self) -> atomic_store::Result<ReleaseOutcome> {
        match self {
            Held::Lock(guard) => guard.release().await,
            Held::Permit(permit) => permit.release().await,
        }
    }
}

/// Take the first free seat file of `seats`: only as many holders as there
/// are seats can be inside at once.
fn take_seat(base: &str, seats: u32) -> Option<std::path::PathBuf> {
    (0..seats).map(|seat| seat_marker(base, seat)).find(|path| {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .is_ok()
    })
}

#[allow(clippy::too_many_arguments)]
async fn run_task(
    store: Arc<dyn AtomicStore>,
    workload: Workload,
    base: &str,
    task: u32,
    deadline: Instant,
    ops: &AtomicU64,
    chain: &SimulatedChain,
    contended: Contended,
) -> TaskState {
    let mut st = TaskState {
        acquired: 0,
        values: Vec::new(),
        histogram: new_histogram(),
        errors: 0,
        first_error: None,
        violations: Vec::new(),
    };
    let shared = shared_key(base, workload);
    let own = format!("{shared}:{}:{task}", std::process::id());
    let mut round: u64 = 0;
    // One clock read per operation: its end is the next one's start.
    let mut t0 = Instant::now();
    let mut latencies = LatencyBatch::default();
    while t0 < deadline && st.violations.is_empty() {
        round += 1;
        let result: atomic_store::Result<()> = async {
            match workload {
                Workload::Incr => st.values.push(store.incr(&shared).await?),
                Workload::IncrMany => {
                    let v = store.incr(&own).await?;
                    if v != round as i64 {
                        st.violations
                            .push(format!("{own}: incr #{round} returned {v}"));
                    }
                }
                Workload::Lock => match store.acquire_lock(&own, Duration::from_secs(30)).await? {
                    None => st
                        .violations
                        .push(format!("{own}: an uncontended lock was not acquired")),
                    Some(lock) => {
                        let outcome = store.release_lock(&own, &lock.id).await?;
                        if outcome != ReleaseOutcome::Released {
                            st.violations
                                .push(format!("{own}: release returned {outcome}"));
                        }
                    }
                },
                Workload::Nonce => {
                    let ticket = chain.enter().await;
                    let pending = chain.pending();
                    let result = store.assign_nonce(&shared, pending).await;
                    chain.leave(ticket, result.as_ref().ok().copied());
                    st.values.push(result? as i64);
                }
                Workload::LockContended => {
                    let wait = deadline.saturating_duration_since(Instant::now());
                    let (held, held_key) = contended.acquire(wait).await?;
                    // Seat files that only one holder at a time may create
                    // prove the bound across the workers (all on this
                    // machine), at the cost of a system call, not a round
                    // trip.
                    let seats = contended.seats();
                    let seat = take_seat(base, seats);
                    if seat.is_none() {
                        st.violations.push(format!(
                            "more than {seats} holders of {shared} at once (all {seats} seat files in {} exist)",
                            std::env::temp_dir().display()
                        ));
                    }
                    // The queue alone would hide a store whose lock admits
                    // a second holder: the lock key itself must refuse one.
                    let probe = store.acquire_lock(&held_key, Duration::from_secs(10)).await;
                    if let Some(seat) = seat {
                        let _ = std::fs::remove_file(seat);
                    }
                    if let Some(second) = probe? {
                        st.violations.push(format!(
                            "the store granted {held_key} to a second caller while it was held"
                        ));
                        let _ = store.release_lock(&held_key, &second.id).await;
                    }
                    let outcome = held.release().await?;
                    if outcome != ReleaseOutcome::Released {
                        st.violations
                            .push(format!("{held_key}: release returned {outcome}"));
                    }
                    st.acquired += 1;
                }
                Workload::GetSet => {
                    let value = format!("{task}-{round}");
                    store.set(&own, &value).await?;
                    let read = store.get(&own).await?;
                    if read.as_deref() != Some(value.as_str()) {
                        st.violations
                            .push(format!("{own}: wrote {value:?}, read {read:?}"));
                    }
                }
            }
            Ok(())
        }
        .await;
        let mut t1 = Instant::now();
        match result {
            Ok(()) => {
                if latencies.record(&mut st.histogram, t1 - t0) {
                    t1 = Instant::now();
                }
                ops.fetch_add(1, Ordering::Relaxed);
            }
            Err(e)
                if workload == Workload::LockContended
                    && e.kind() == atomic_store::ErrorKind::Timeout
                    && Instant::now() >= deadline =>
            {
                break
            }
            Err(e) => {
                st.errors += 1;
                st.first_error.get_or_insert_with(|| e.to_string());
                // A workload step whose outcome is unknown cannot be
                // verified afterwards: stop this task.
                break;
            }
        }
        t0 = t1;
    }
    latencies.flush(&mut st.histogram);
    // Purged, not deleted: a lock key's fencing counter goes too.
    if matches!(
        workload,
        Workload::IncrMany | Workload::GetSet | Workload::Lock
    ) {
        let _ = store.purge(&own).await;
    }
    st
}

/// The seat file a holder of the contended lock (or of one of its
/// permits) creates while inside, `seat` of as many as may hold at once.
pub(super) fn seat_marker(base: &str, seat: u32) -> std::path::PathBuf {
    std::env::temp_dir().join(format!(
        "atomic-store-{}.inside.{seat}",
        base.replace(':', "-")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bound the bench proves: a holder past the seats finds none.
    #[test]
    fn seats_admit_only_as_many_holders_as_there_are() {
        let base = format!("test:{}", std::process::id());
        let first = take_seat(&base, 2).expect("a free seat");
        let second = take_seat(&base, 2).expect("the second seat");
        assert_ne!(first, second);
        assert_eq!(
            take_seat(&base, 2),
            None,
            "a third holder got a seat of two"
        );
        std::fs::remove_file(&first).unwrap();
        assert_eq!(take_seat(&base, 2).as_ref(), Some(&first));
        for seat in [first, second] {
            std::fs::remove_file(seat).unwrap();
        }
    }
}
