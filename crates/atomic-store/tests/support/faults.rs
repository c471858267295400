//! Fault tests shared by the backends: restarts and kills of private
//! servers, connection resets through the proxy, and the fault harness
//! (concurrent histories recorded while faults come and go, checked for
//! linearizability).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atomic_store::conformance::Store;
use atomic_store::{ErrorKind, EvalValue};

use super::lincheck::{self, Recorder};
use super::proxy::{FaultProxy, Faults, Hold};
use super::servers::Paused;

/// Run `tasks` tasks of `incr` on one key (which the caller has set to 1);
/// after 500 ms kill `server` (SIGKILL), after another second start it
/// again on the same data, then go on for `settle`. Checks that every value came
/// once, that every error is a typed network error, that work resumed, and
/// that the stored counter agrees.
pub async fn incr_loops_across_a_restart(
    store: Store,
    key: &str,
    tasks: usize,
    server: &mut super::servers::OwnServer,
    settle: Duration,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let after = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (store, stop, restarted, after, key) = (
            Arc::clone(&store),
            Arc::clone(&stop),
            Arc::clone(&restarted),
            Arc::clone(&after),
            key.to_owned(),
        );
        handles.push(tokio::spawn(async move {
            let (mut values, mut errors) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match store.incr(&key).await {
                    Ok(v) => {
                        values.push(v);
                        if restarted.load(Ordering::Relaxed) {
                            after.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        errors.push(e.kind());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (values, errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart();
    restarted.store(true, Ordering::Relaxed);
    tokio::time::sleep(settle).await;
    stop.store(true, Ordering::Relaxed);
    let (mut values, mut errors) = (Vec::new(), Vec::new());
    for h in handles {
        let (v, e) = h.await.unwrap();
        values.extend(v);
        errors.extend(e);
    }
    let total = values.len();
    let mut unique = values.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), total, "a value was returned twice");
    assert!(
        errors.iter().all(|k| matches!(
            k,
            ErrorKind::Unavailable | ErrorKind::OutcomeUnknown | ErrorKind::Timeout
        )),
        "untyped errors: {errors:?}"
    );
    assert!(!errors.is_empty(), "the restart caused no error at all");
    let after_restart = after.load(Ordering::Relaxed);
    assert!(after_restart > 0, "no incr succeeded after the restart");
    // The stored counter is at least every value handed out, and counts no
    // more increments than were asked for (those that succeeded, those with
    // an unknown outcome, and the caller's own before the loops).
    let last: i64 = store.get(key).await.unwrap().unwrap().parse().unwrap();
    let max = values.iter().copied().max().unwrap();
    assert!(last >= max, "counter {last} behind a returned value {max}");
    let unknown = errors
        .iter()
        .filter(|k| **k == ErrorKind::OutcomeUnknown)
        .count() as i64;
    assert!(
        last <= total as i64 + unknown + 1,
        "counter {last} counts more increments than were asked for"
    );
}

/// A script that adds 1 to the integer under its one key and returns the
/// new value, in the backend's `eval` language; `None` without `eval`.
pub fn eval_incr_script(store: &Store) -> Option<&'static str> {
    let caps = store.capabilities();
    match (caps.eval, caps.eval_language) {
        (true, Some("lua")) => Some("return redis.call('INCR', KEYS[1])"),
        (true, Some("sql")) => Some(
            "INSERT INTO public.atomic_store AS t (key, value) VALUES ($1, '1') \
             ON CONFLICT (key) DO UPDATE SET value = (t.value::bigint + 1)::text \
             RETURNING value::bigint",
        ),
        _ => None,
    }
}

/// The integer an [`eval_incr_script`] returned (a Lua integer, or one row
/// of one column).
pub fn eval_integer(value: &EvalValue) -> i64 {
    match value {
        EvalValue::Integer(n) => *n,
        EvalValue::Array(rows) if rows.len() == 1 => eval_integer(&rows[0]),
        other => panic!("the counting script returned {other:?}"),
    }
}

/// Values of one counter seen across the reset rounds: each value must
/// follow the last one, with a gap only as wide as the calls whose outcome
/// was unknown since.
struct Sequence {
    name: &'static str,
    last: i64,
    unknown_since: i64,
}

impl Sequence {
    fn new(name: &'static str, first: i64) -> Sequence {
        Sequence {
            name,
            last: first,
            unknown_since: 0,
        }
    }

    /// Takes the outcome of one call; true when it was unknown.
    fn take(&mut self, round: usize, what: Hold, outcome: atomic_store::Result<i64>) -> bool {
        match outcome {
            Ok(v) => {
                assert!(
                    v > self.last && v - self.last - 1 <= self.unknown_since,
                    "round {round} ({what:?}): {} gave {v} after {} with {} unknown outcomes: sent twice",
                    self.name,
                    self.last,
                    self.unknown_since
                );
                (self.last, self.unknown_since) = (v, 0);
                false
            }
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    ErrorKind::OutcomeUnknown,
                    "round {round} ({what:?}): {}: {e:?}",
                    self.name
                );
                self.unknown_since += 1;
                true
            }
        }
    }

    /// The value stored at the end agrees with what was seen.
    fn check_stored(&self, stored: i64) {
        assert!(
            stored >= self.last && stored - self.last <= self.unknown_since,
            "{}: stored {stored}, last returned {}, {} unknown since",
            self.name,
            self.last,
            self.unknown_since
        );
    }
}

/// When every call of a round began with a read (retried after the reset)
/// and sent its write only after it: hold the replies from the `n`th on,
/// for n = 1 or 2, so that the reply of the write is the one cut off.
/// Returns 1 once an `incr` ended with an unknown outcome, else 0.
async fn cut_a_write_reply(
    store: &Store,
    proxy: &FaultProxy,
    key: &str,
    counter: &mut Sequence,
    round: usize,
) -> usize {
    // Which reply is the write's varies (a ping, a clock sample may come
    // first): try the first and the second, a few times each.
    for attempt in 0..8 {
        store.get(key).await.unwrap();
        proxy.hold_after(Hold::Replies, 1 + attempt % 2);
        let count = tokio::spawn({
            let (store, key) = (Arc::clone(store), key.to_owned());
            async move { store.incr(&key).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.reset().await;
        if counter.take(round, Hold::Replies, count.await.unwrap()) {
            return 1;
        }
    }
    0
}

/// Requests cut off by a reset (what a dying server does), through
/// `proxy`: reads are retried on a new connection; an `incr`,
/// `assign_nonce`, `eval` (where the backend has it), `acquire_lock` or
/// `compare_and_set` whose request or reply was lost ends as its result or
/// OutcomeUnknown, never as another error, and is never sent twice (a gap
/// in the values is only ever explained by an unknown outcome, and a lock
/// or key nobody else asked for is never refused).
///
/// The fault must land: every call is still waiting when the proxy resets;
/// each round that holds replies sees at least one OutcomeUnknown (where
/// every call starts with a read, which is retried, the round goes on to
/// cut the reply of an `incr`'s write), and each round that holds requests
/// sees the read succeed after the reset on a new connection (a retry of
/// what was never sent).
pub async fn resets_are_lost_replies(store: &Store, proxy: &FaultProxy) {
    // Keys of this run only: the servers keep data between runs.
    let run = atomic_store::LockId::generate().as_str()[..8].to_owned();
    let key = |name: &str| format!("reset-{run}-{name}");
    let (read_key, count_key, nonce_key, eval_key) =
        (key("k"), key("n"), key("nonce"), key("eval"));
    store.set(&read_key, "v").await.unwrap();
    let mut counter = Sequence::new("incr", store.incr(&count_key).await.unwrap());
    assert_eq!(counter.last, 1);
    let mut nonces = Sequence::new(
        "assign_nonce",
        store.assign_nonce(&nonce_key, 0).await.unwrap() as i64,
    );
    assert_eq!(nonces.last, 0);
    let script = eval_incr_script(store);
    let mut evals = match script {
        Some(script) => {
            let first = store.eval(script, &[&eval_key], &[]).await.unwrap();
            Some(Sequence::new("eval", eval_integer(&first)))
        }
        None => None,
    };
    for round in 0..8 {
        let what = if round % 2 == 0 {
            Hold::Requests
        } else {
            Hold::Replies
        };
        // A call on a working connection first: calls queued behind a
        // connection being set up were never sent, which would hide the
        // fault.
        store.get(&read_key).await.unwrap();
        proxy.hold(what);
        let read = tokio::spawn({
            let (store, key) = (Arc::clone(store), read_key.clone());
            async move { store.get(&key).await }
        });
        let count = tokio::spawn({
            let (store, key) = (Arc::clone(store), count_key.clone());
            async move { store.incr(&key).await }
        });
        let nonce = tokio::spawn({
            let (store, key) = (Arc::clone(store), nonce_key.clone());
            async move { store.assign_nonce(&key, 0).await.map(|n| n as i64) }
        });
        let eval = script.map(|script| {
            let (store, key) = (Arc::clone(store), eval_key.clone());
            tokio::spawn(async move {
                store
                    .eval(script, &[&key], &[])
                    .await
                    .map(|v| eval_integer(&v))
            })
        });
        // A fresh lock key each round: nobody else ever holds it.
        let lock_key = key(&format!("lock-{round}"));
        let take = tokio::spawn({
            let (store, lock_key) = (Arc::clone(store), lock_key.clone());
            async move { store.acquire_lock(&lock_key, Duration::from_secs(60)).await }
        });
        let claim_key = key(&format!("claim-{round}"));
        let claim = tokio::spawn({
            let (store, claim_key) = (Arc::clone(store), claim_key.clone());
            async move { store.compare_and_set(&claim_key, None, "mine", None).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let waiting = [
            ("get", read.is_finished()),
            ("incr", count.is_finished()),
            ("assign_nonce", nonce.is_finished()),
            ("acquire_lock", take.is_finished()),
            ("compare_and_set", claim.is_finished()),
            ("eval", eval.as_ref().is_some_and(|e| e.is_finished())),
        ];
        for (name, finished) in waiting {
            assert!(
                !finished,
                "round {round} ({what:?}): {name} returned while the proxy held its {what:?}: is the proxy on the path?"
            );
        }
        let connections_at_reset = proxy.connections();
        proxy.reset().await;
        let read = read.await.unwrap();
        assert_eq!(
            read.unwrap_or_else(|e| panic!("round {round} ({what:?}): get: {e:?}"))
                .as_deref(),
            Some("v")
        );
        let mut unknown = 0;
        match take.await.unwrap() {
            Ok(Some(lock)) => {
                let released = store.release_lock(&lock_key, &lock.id).await.unwrap();
                assert_eq!(released, atomic_store::ReleaseOutcome::Released);
            }
            Ok(None) => {
                panic!("round {round} ({what:?}): a lock nobody held was refused: sent twice")
            }
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    ErrorKind::OutcomeUnknown,
                    "round {round} ({what:?}): acquire_lock: {e:?}"
                );
                unknown += 1;
            }
        }
        match claim.await.unwrap() {
            Ok(true) => assert_eq!(
                store.get(&claim_key).await.unwrap().as_deref(),
                Some("mine")
            ),
            Ok(false) => {
                panic!("round {round} ({what:?}): a key nobody wrote was taken: sent twice")
            }
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    ErrorKind::OutcomeUnknown,
                    "round {round} ({what:?}): compare_and_set: {e:?}"
                );
                unknown += 1;
            }
        }
        unknown += usize::from(counter.take(round, what, count.await.unwrap()));
        unknown += usize::from(nonces.take(round, what, nonce.await.unwrap()));
        if let (Some(eval), Some(evals)) = (eval, evals.as_mut()) {
            unknown += usize::from(evals.take(round, what, eval.await.unwrap()));
        }
        if what == Hold::Replies && unknown == 0 {
            unknown += cut_a_write_reply(store, proxy, &count_key, &mut counter, round).await;
        }
        match what {
            Hold::Replies => assert!(
                unknown > 0,
                "round {round}: replies were held and cut off, yet every call knew its outcome: the fault never landed"
            ),
            _ => assert!(
                proxy.connections() > connections_at_reset,
                "round {round}: the read succeeded after the reset with no new connection: it was never cut off"
            ),
        }
    }
    let stored = |key: String| async move {
        store
            .get(&key)
            .await
            .unwrap()
            .unwrap()
            .parse::<i64>()
            .unwrap()
    };
    let last_count = stored(count_key.clone()).await;
    counter.check_stored(last_count);
    nonces.check_stored(stored(nonce_key.clone()).await);
    if let Some(evals) = &evals {
        evals.check_stored(stored(eval_key.clone()).await);
    }
    assert_eq!(store.incr(&count_key).await.unwrap(), last_count + 1);
}

/// 8 tasks, half running `incr` on one key and half taking and releasing
/// one lock, while `kill` takes a server away; then `settle` more. Checks
/// that no value came twice, the lock never had two holders, every error
/// is a typed network error, and work went on after the kill.
pub async fn incr_and_lock_loops_across_a_kill(
    store: &Store,
    kill: impl std::future::Future<Output = ()>,
    settle: Duration,
) {
    let stop = Arc::new(AtomicBool::new(false));
    let holders = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (store, stop, holders) = (Arc::clone(store), Arc::clone(&stop), Arc::clone(&holders));
        tasks.push(tokio::spawn(async move {
            let (mut values, mut errors, mut locked) = (Vec::new(), Vec::new(), 0);
            while !stop.load(Ordering::Relaxed) {
                if task % 2 == 0 {
                    match store.incr("counter").await {
                        Ok(v) => values.push(v),
                        Err(e) => errors.push(e),
                    }
                } else {
                    match store.acquire_lock("lock", Duration::from_secs(10)).await {
                        Ok(Some(lock)) => {
                            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            holders.fetch_sub(1, Ordering::SeqCst);
                            locked += 1;
                            // A lost release reply leaves the lock to its TTL.
                            if let Err(e) = store.release_lock("lock", &lock.id).await {
                                errors.push(e);
                            }
                        }
                        Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
                        Err(e) => errors.push(e),
                    }
                }
                if !errors.is_empty() && errors.len() % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            (values, errors, locked)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    kill.await;
    let at_kill: i64 = loop {
        match store.get("counter").await {
            Ok(v) => break v.and_then(|v| v.parse().ok()).unwrap_or(0),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    tokio::time::sleep(settle).await;
    stop.store(true, Ordering::Relaxed);
    let (mut values, mut errors, mut locked) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (v, e, l) = t.await.unwrap();
        values.extend(v);
        errors.extend(e);
        locked += l;
    }
    let mut distinct = values.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), values.len(), "a value was returned twice");
    for e in &errors {
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Unavailable | ErrorKind::OutcomeUnknown | ErrorKind::Timeout
            ),
            "unexpected error: {e:?}"
        );
    }
    assert!(locked > 0, "no lock was ever taken");
    let after = values.iter().filter(|&&v| v > at_kill).count();
    assert!(
        after > 8,
        "no progress after the kill: {after} values above {at_kill}"
    );
}
/// A fault the harness puts in force for one phase.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    Nothing,
    /// The proxy's faults, for the whole phase.
    Proxy(Faults),
    /// Replies held for `every`, then every connection reset; again and
    /// again for the whole phase.
    Resets {
        every: Duration,
    },
    /// The server stops answering (see [`Pause`]).
    Pause,
}

/// What shows that a phase's fault landed. A fault that never reaches the
/// client (a bypassed proxy, a pause of the wrong process) fails the test.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Expect {
    /// At least one call failed during the phase or its settling time.
    Errors,
    /// Calls were made while the fault was in force, and none begun in it
    /// (after 100 ms for bytes already on their way) succeeded in it.
    NoSuccess,
    /// Calls succeeded during the fault, and each took at least this long.
    Slower(Duration),
    /// Calls succeeded.
    Successes,
}

/// One phase: a fault for `length`, then `settle` without it. Calls must
/// succeed again in the second half of `settle`.
#[derive(Clone, Debug)]
pub struct Phase {
    pub name: String,
    pub fault: Fault,
    pub length: Duration,
    pub settle: Duration,
    pub expect: Vec<Expect>,
}

impl Phase {
    pub fn new(name: &str, fault: Fault, length: Duration, expect: &[Expect]) -> Phase {
        Phase {
            name: name.to_owned(),
            fault,
            length,
            settle: Duration::from_secs(2),
            expect: expect.to_vec(),
        }
    }
}

/// The proxy faults, each once, for a store whose per-call timeout is
/// `timeout`.
pub fn proxy_phases(timeout: Duration) -> Vec<Phase> {
    use Expect::*;
    let ms = Duration::from_millis;
    // A phase that must make calls fail outlasts a read's three tries (each
    // up to a timeout): reads retried across a shorter fault succeed.
    let outlasts_retries = timeout * 3 + ms(500);
    vec![
        Phase::new("no fault", Fault::Nothing, ms(1000), &[Successes]),
        Phase::new(
            "40 ms latency each way",
            Fault::Proxy(Faults::latency(ms(40), ms(40))),
            ms(1500),
            &[Slower(ms(80))],
        ),
        Phase::new(
            "replies later than the timeout",
            Fault::Proxy(Faults::latency(Duration::ZERO, timeout + ms(300))),
            outlasts_retries,
            &[Errors],
        ),
        Phase::new(
            "black hole shorter than the timeout",
            Fault::Proxy(Faults::black_hole()),
            timeout / 2,
            &[NoSuccess],
        ),
        Phase::new(
            "black hole longer than the timeout",
            Fault::Proxy(Faults::black_hole()),
            outlasts_retries,
            &[NoSuccess, Errors],
        ),
        Phase::new(
            "resets with replies in flight",
            Fault::Resets { every: ms(250) },
            ms(2000),
            &[Errors],
        ),
        Phase::new(
            "requests dropped",
            Fault::Proxy(Faults::drop_requests()),
            outlasts_retries,
            &[NoSuccess, Errors],
        ),
        Phase::new(
            "replies dropped",
            Fault::Proxy(Faults::drop_replies()),
            outlasts_retries,
            &[NoSuccess, Errors],
        ),
    ]
}

/// How to stop a server from answering, for [`Fault::Pause`].
pub enum Pause {
    /// SIGSTOP of these processes (a private server).
    Processes(Vec<u32>),
    /// `CLIENT PAUSE` on the Redis server at this URL (a private server:
    /// it pauses every client), until a little after the phase.
    RedisClients(String),
    /// SIGSTOP of the PostgreSQL backend processes serving connections
    /// with this `application_name` (only the test's own sessions), found
    /// through `control`.
    PostgresBackends {
        control: Store,
        application_name: String,
    },
}

/// Undoes a [`Pause`] when dropped, also when the test panics (a `CLIENT
/// PAUSE` ends by itself).
pub struct Pausing {
    paused: Option<Paused>,
}

impl Pause {
    pub async fn start(&self, length: Duration) -> Pausing {
        match self {
            Pause::Processes(pids) => Pausing {
                paused: Some(Paused::new(pids.clone())),
            },
            Pause::RedisClients(url) => {
                // A little longer than the phase, so that no call gets
                // through before the phase ends (`CLIENT UNPAUSE` would
                // itself wait behind the pause).
                let mut c = redis::Client::open(url.as_str())
                    .unwrap()
                    .get_connection()
                    .unwrap();
                let _: () = redis::cmd("CLIENT")
                    .arg("PAUSE")
                    .arg((length + Duration::from_millis(300)).as_millis() as u64)
                    .query(&mut c)
                    .expect("CLIENT PAUSE");
                Pausing { paused: None }
            }
            Pause::PostgresBackends {
                control,
                application_name,
            } => {
                let rows = control
                    .eval(
                        "SELECT pid::text FROM pg_stat_activity WHERE application_name = $1",
                        &[],
                        &[application_name],
                    )
                    .await
                    .expect("list the test's PostgreSQL backends");
                let EvalValue::Array(rows) = rows else {
                    panic!("pg_stat_activity gave {rows:?}")
                };
                let pids: Vec<u32> = rows
                    .iter()
                    .map(|row| match row {
                        EvalValue::Array(cols) => match &cols[..] {
                            [EvalValue::Text(pid)] => pid.parse().unwrap(),
                            other => panic!("pg_stat_activity row {other:?}"),
                        },
                        other => panic!("pg_stat_activity row {other:?}"),
                    })
                    .collect();
                assert!(
                    !pids.is_empty(),
                    "no PostgreSQL backend has application_name {application_name}"
                );
                Pausing {
                    paused: Some(Paused::new(pids)),
                }
            }
        }
    }
}

/// What the harness saw in one phase.
#[derive(Debug, Default)]
pub struct PhaseReport {
    pub name: String,
    pub calls: usize,
    pub ok: usize,
    pub errors: BTreeMap<&'static str, usize>,
}

impl std::fmt::Display for PhaseReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: {} calls, {} ok, errors {:?}",
            self.name, self.calls, self.ok, self.errors
        )
    }
}

struct Window {
    start: Instant,
    fault_end: Instant,
    end: Instant,
}

/// Keys of one phase; lock keys move on after any lock call whose effect
/// is unknown, so a lock nobody knows the id of cannot stall the rest.
struct Keys {
    run: String,
    phase: AtomicUsize,
    lock_round: AtomicUsize,
    used: Mutex<BTreeSet<String>>,
}

impl Keys {
    fn key(&self, name: &str) -> String {
        let k = format!(
            "faults-{}-{}-{name}",
            self.run,
            self.phase.load(Ordering::SeqCst)
        );
        self.used.lock().unwrap().insert(k.clone());
        k
    }

    fn lock(&self) -> String {
        self.key(&format!("lock-{}", self.lock_round.load(Ordering::SeqCst)))
    }
}

/// Errors a network fault may cause; anything else is a bug.
fn is_network_error(kind: ErrorKind) -> bool {
    matches!(
        kind,
        ErrorKind::Unavailable | ErrorKind::Timeout | ErrorKind::OutcomeUnknown
    )
}

/// Lock TTL of the harness: longer than any key's part of a run, so the
/// model needs no expiry.
const LOCK_TTL: Duration = Duration::from_secs(60);

/// Run concurrent `incr`, `assign_nonce`, `compare_and_set` (after a
/// `get`) and lock acquire/release loops on `store` while `phases` come
/// and go (through `proxy`, or `pause`), then check the recorded history:
/// every error is a network error, each phase's fault was observed (its
/// [`Expect`]s), calls succeed again after each fault, the history is
/// linearizable, no `incr` value came twice or was skipped without an
/// unknown outcome, and the stored counters agree.
pub async fn linearizable_under_faults(
    store: &Store,
    proxy: Option<&FaultProxy>,
    pause: Option<&Pause>,
    phases: &[Phase],
) -> Vec<PhaseReport> {
    let recorder = Arc::new(Recorder::new());
    let keys = Arc::new(Keys {
        run: atomic_store::LockId::generate().as_str()[..8].to_owned(),
        phase: AtomicUsize::new(0),
        lock_round: AtomicUsize::new(0),
        used: Mutex::new(BTreeSet::new()),
    });
    let stop = Arc::new(AtomicBool::new(false));
    let holders: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let mut workers = Vec::new();
    for process in 0..10 {
        let (store, recorder, keys, stop, holders) = (
            Arc::clone(store),
            Arc::clone(&recorder),
            Arc::clone(&keys),
            Arc::clone(&stop),
            Arc::clone(&holders),
        );
        workers.push(tokio::spawn(async move {
            let mut n = 0u64;
            let mut highest_nonce = 0u64;
            while !stop.load(Ordering::SeqCst) {
                n += 1;
                let failed = match process {
                    0..=2 => recorder
                        .incr(&store, process, &keys.key("counter"))
                        .await
                        .is_err(),
                    3 => {
                        // `pending` trails the nonces seen, inside the rule's window.
                        let pending = highest_nonce.saturating_sub(100);
                        match recorder
                            .assign_nonce(&store, process, &keys.key("nonce"), pending)
                            .await
                        {
                            Ok(v) => {
                                highest_nonce = highest_nonce.max(v);
                                false
                            }
                            Err(_) => true,
                        }
                    }
                    4..=5 => {
                        let key = keys.key("register");
                        match recorder.get(&store, process, &key).await {
                            Ok(seen) => recorder
                                .cas(
                                    &store,
                                    process,
                                    &key,
                                    seen.as_deref(),
                                    &format!("p{process}-{n}"),
                                )
                                .await
                                .is_err(),
                            Err(_) => true,
                        }
                    }
                    _ => {
                        let key = keys.lock();
                        match recorder.acquire(&store, process, &key, LOCK_TTL).await {
                            Ok(Some(lock)) => {
                                let others = {
                                    let mut h = holders.lock().unwrap();
                                    let c = h.entry(key.clone()).or_default();
                                    *c += 1;
                                    *c - 1
                                };
                                assert_eq!(others, 0, "two holders of lock {key} at once");
                                tokio::time::sleep(Duration::from_millis(2)).await;
                                *holders.lock().unwrap().get_mut(&key).unwrap() -= 1;
                                let released = recorder.release(&store, process, &key, &lock).await;
                                if released.is_err() {
                                    keys.lock_round.fetch_add(1, Ordering::SeqCst);
                                }
                                released.is_err()
                            }
                            Ok(None) => false,
                            Err(e) => {
                                if e.kind() == ErrorKind::OutcomeUnknown {
                                    keys.lock_round.fetch_add(1, Ordering::SeqCst);
                                }
                                true
                            }
                        }
                    }
                };
                let pause = if failed { 20 } else { 4 };
                tokio::time::sleep(Duration::from_millis(pause)).await;
            }
        }));
    }

    // Nonce leases of one account run through every phase, checked at the end.
    #[cfg(feature = "nonce")]
    let leases = {
        let run = Arc::new(super::leases::LeaseRun::new(store));
        let tasks: Vec<_> = (0..3)
            .map(|worker| {
                let (run, stop) = (Arc::clone(&run), Arc::clone(&stop));
                tokio::spawn(async move { run.work(worker, &stop, Duration::from_millis(4)).await })
            })
            .collect();
        (run, tasks)
    };

    let mut windows = Vec::new();
    for (i, phase) in phases.iter().enumerate() {
        keys.phase.store(i, Ordering::SeqCst);
        keys.lock_round.store(0, Ordering::SeqCst);
        let proxy_of = || proxy.expect("a proxy for a network fault");
        let start;
        // The fault's end is read before it is lifted: a reply that comes
        // after SIGCONT (or after the proxy lets bytes through) but before
        // this task runs again must not count as one that got through.
        let fault_end;
        match phase.fault {
            Fault::Nothing => {
                start = Instant::now();
                tokio::time::sleep(phase.length).await;
                fault_end = Instant::now();
            }
            Fault::Proxy(faults) => {
                proxy_of().set(faults);
                start = Instant::now();
                tokio::time::sleep(phase.length).await;
                fault_end = Instant::now();
                proxy_of().set(Faults::none());
            }
            Fault::Resets { every } => {
                let proxy = proxy_of();
                start = Instant::now();
                while start.elapsed() < phase.length {
                    proxy.hold(Hold::Replies);
                    tokio::time::sleep(every).await;
                    proxy.reset_connections();
                    proxy.set(Faults::none());
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                fault_end = Instant::now();
            }
            Fault::Pause => {
                let pausing = pause.expect("a way to pause").start(phase.length).await;
                start = Instant::now();
                tokio::time::sleep(phase.length).await;
                fault_end = Instant::now();
                drop(pausing);
            }
        }
        tokio::time::sleep(phase.settle).await;
        windows.push(Window {
            start,
            fault_end,
            end: Instant::now(),
        });
    }
    stop.store(true, Ordering::SeqCst);
    for w in workers {
        tokio::time::timeout(Duration::from_secs(60), w)
            .await
            .expect("a call never returned, though every fault was over")
            .unwrap();
    }
    #[cfg(feature = "nonce")]
    {
        let (run, tasks) = leases;
        for t in tasks {
            tokio::time::timeout(Duration::from_secs(60), t)
                .await
                .expect("a lease call never returned, though every fault was over")
                .unwrap();
        }
        read_eventually(store, &run.manager.last_used_key(&run.address)).await;
        if let Err(e) = run.check(store).await {
            panic!("{e}");
        }
        eprintln!(
            "{}: {} nonce leases, {} reused",
            store.capabilities().backend,
            run.log.leases.load(Ordering::SeqCst),
            run.log.reused.load(Ordering::SeqCst)
        );
    }

    let failures = recorder.failures();
    let timings = recorder.timings();
    let history = recorder.history();
    let mut reports = Vec::new();
    for (phase, w) in phases.iter().zip(&windows) {
        let mut report = PhaseReport {
            name: phase.name.clone(),
            ..PhaseReport::default()
        };
        let in_phase = |at: Instant| at >= w.start && at < w.end;
        for t in timings.iter().filter(|t| in_phase(t.started + t.took)) {
            report.calls += 1;
            report.ok += usize::from(t.ok);
        }
        for f in failures.iter().filter(|f| in_phase(f.at)) {
            *report.errors.entry(f.kind.as_str()).or_default() += 1;
        }
        eprintln!("{}: {report}", store.capabilities().backend);
        // Calls succeed again once a fault is over.
        if !matches!(phase.fault, Fault::Nothing) {
            let settled = w.fault_end + phase.settle / 2;
            let late: Vec<_> = timings
                .iter()
                .filter(|t| t.started >= settled && t.started < w.end)
                .collect();
            assert!(
                late.iter().any(|t| t.ok),
                "{}: no call succeeded in the second half of the {:?} after the fault ended ({} calls started then; {:?})",
                phase.name,
                phase.settle,
                late.len(),
                late.iter()
                    .take(5)
                    .map(|t| format!("{:?} took {:?}, ok {}", t.call, t.took, t.ok))
                    .collect::<Vec<_>>()
            );
        }
        for expect in &phase.expect {
            match *expect {
                Expect::Errors => {
                    let during: Vec<String> = timings
                        .iter()
                        .filter(|t| t.started < w.fault_end && t.started + t.took > w.start)
                        .take(12)
                        .map(|t| {
                            format!(
                                "{:?} {}ms..{}ms ok {}",
                                t.call,
                                t.started.saturating_duration_since(w.start).as_millis(),
                                (t.started + t.took)
                                    .saturating_duration_since(w.start)
                                    .as_millis(),
                                t.ok
                            )
                        })
                        .collect();
                    assert!(
                        !report.errors.is_empty(),
                        "{}: no call failed: the fault never landed (is the proxy on the path?); {} connections through the proxy; calls during the fault: {during:?}",
                        phase.name,
                        proxy.map_or(0, FaultProxy::connections),
                    )
                }
                Expect::Successes => assert!(report.ok > 0, "{}: no call succeeded", phase.name),
                Expect::NoSuccess => {
                    // Calls begun a little into the fault (after the bytes
                    // already on their way), that succeeded before it ended.
                    let from = w.start + Duration::from_millis(100);
                    let succeeded: Vec<_> = timings
                        .iter()
                        .filter(|t| t.ok && t.started >= from && t.started + t.took < w.fault_end)
                        .collect();
                    let shown: Vec<String> = succeeded
                        .iter()
                        .take(5)
                        .map(|t| {
                            format!(
                                "{:?} from {:?} to {:?} into the fault",
                                t.call,
                                t.started.saturating_duration_since(w.start),
                                (t.started + t.took).saturating_duration_since(w.start)
                            )
                        })
                        .collect();
                    assert!(
                        succeeded.is_empty(),
                        "{}: {} calls succeeded while nothing could get through (is the proxy on the path?): {shown:?}",
                        phase.name,
                        succeeded.len()
                    );
                    assert!(
                        timings
                            .iter()
                            .any(|t| t.started < w.fault_end && t.started + t.took > from),
                        "{}: no call was in flight during the fault",
                        phase.name
                    );
                }
                Expect::Slower(least) => {
                    let inside: Vec<Duration> = timings
                        .iter()
                        .filter(|t| {
                            t.ok && t.started >= w.start && t.started + t.took <= w.fault_end
                        })
                        .map(|t| t.took)
                        .collect();
                    assert!(!inside.is_empty(), "{}: no call succeeded", phase.name);
                    let fastest = inside.iter().min().unwrap();
                    assert!(
                        *fastest >= least,
                        "{}: a call took {fastest:?}, less than the {least:?} the fault adds: is the proxy on the path?",
                        phase.name
                    );
                }
            }
        }
        reports.push(report);
    }

    let untyped: Vec<String> = failures
        .iter()
        .filter(|f| !is_network_error(f.kind))
        .map(|f| format!("{:?} on {}: {}", f.call, f.key, f.message))
        .collect();
    assert!(
        untyped.is_empty(),
        "errors that are not network errors: {untyped:#?}"
    );

    // The counters: no value twice, no value skipped without an unknown
    // outcome, and the stored value agrees.
    let used: Vec<String> = keys.used.lock().unwrap().iter().cloned().collect();
    for key in used.iter().filter(|k| k.ends_with("-counter")) {
        let (values, unknown) =
            lincheck::check_counter(&history, key).unwrap_or_else(|e| panic!("{key}: {e}"));
        let stored: i64 = read_eventually(store, key)
            .await
            .map_or(0, |v| v.parse().unwrap());
        let max = values.last().copied().unwrap_or(0);
        assert!(
            stored >= max && stored <= (values.len() + unknown) as i64,
            "{key}: stored {stored}, {} values up to {max} returned, {unknown} unknown outcomes",
            values.len()
        );
    }
    // A violation that only resent releases explain is told apart from
    // any other.
    let checked = tokio::task::spawn_blocking(move || {
        lincheck::check(&history).map_err(|strict| {
            match lincheck::check(&lincheck::resent_releases_unknown(&history)) {
                Ok(()) => format!(
                    "release_lock answered NotHeld or HeldByOther after a resend, though its first attempt (whose reply was lost) may have released the lock: the answer of a resent release is not its outcome. {strict}"
                ),
                Err(other) => other,
            }
        })
    })
    .await
    .unwrap();
    if let Err(e) = checked {
        panic!("{e}");
    }
    for key in &used {
        let _ = store.delete(key).await;
    }
    reports
}

/// `get` of `key`, retried while the store recovers from the last fault.
async fn read_eventually(store: &Store, key: &str) -> Option<String> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match store.get(key).await {
            Ok(v) => return v,
            Err(e) if Instant::now() > deadline => panic!("get of {key} after the faults: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}
