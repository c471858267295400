//! A linearizability checker and a recorder of concurrent histories.
//!
//! The search is Wing and Gong's (pick a next operation among those that no
//! pending operation finished before), with Lowe's memo of (set of
//! operations already placed, model state), so a state is explored once.
//! Keys are independent objects (linearizability is local), so each key's
//! history is checked on its own.
//!
//! An operation whose outcome is unknown (it ended `OutcomeUnknown`, or an
//! idempotent call failed after retries, which may have applied it) may
//! take effect at any point after its invocation, or never: its completion
//! is infinite and its return value unconstrained. A non-idempotent call
//! that failed `Unavailable` or `Timeout` was, by the contract, not
//! applied, so it is left out of the history: if it was applied after all,
//! the values the others saw will not fit.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use atomic_store::{ErrorKind, Lock, ReleaseOutcome};

/// Completion time of an operation that may still take effect.
pub const NEVER: u64 = u64::MAX;

static CLOCK: AtomicU64 = AtomicU64::new(1);

/// A point in the history: every call takes one before it starts and one
/// after it returns, so "returned before invoked" is exact.
pub fn tick() -> u64 {
    CLOCK.fetch_add(1, Ordering::SeqCst)
}

/// One call on one key.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Call {
    Incr,
    Get,
    Set(String),
    Cas {
        expected: Option<String>,
        new: String,
    },
    AssignNonce(u64),
    Acquire,
    Release(String),
}

/// What a call returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Ret {
    Int(i64),
    Value(Option<String>),
    Done,
    Swapped(bool),
    Nonce(u64),
    /// The lock's id and fencing token, or refused.
    Acquired(Option<(String, u64)>),
    Released(ReleaseOutcome),
}

/// One operation of a history.
#[derive(Clone, Debug)]
pub struct Op {
    pub key: String,
    pub process: usize,
    pub call: Call,
    /// `None`: the outcome is unknown (maybe applied, at any time after
    /// `invoke`).
    pub ret: Option<Ret>,
    pub invoke: u64,
    /// [`NEVER`] when the outcome is unknown.
    pub complete: u64,
    /// How long the call took (zero when not measured).
    pub took: Duration,
    /// For failure messages (how long the call took, its error).
    pub note: String,
}

impl Op {
    pub fn known(
        key: &str,
        process: usize,
        call: Call,
        ret: Ret,
        invoke: u64,
        complete: u64,
    ) -> Op {
        Op {
            key: key.to_owned(),
            process,
            call,
            ret: Some(ret),
            invoke,
            complete,
            took: Duration::ZERO,
            note: String::new(),
        }
    }

    pub fn unknown(key: &str, process: usize, call: Call, invoke: u64) -> Op {
        Op {
            key: key.to_owned(),
            process,
            call,
            ret: None,
            invoke,
            complete: NEVER,
            took: Duration::ZERO,
            note: String::new(),
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let end = if self.complete == NEVER {
            "∞".to_owned()
        } else {
            self.complete.to_string()
        };
        match &self.ret {
            Some(r) => write!(
                f,
                "p{} {:?} -> {:?} [{}, {end}]",
                self.process, self.call, r, self.invoke
            )?,
            None => write!(
                f,
                "p{} {:?} -> unknown [{}, {end}]",
                self.process, self.call, self.invoke
            )?,
        }
        if !self.note.is_empty() {
            write!(f, " ({})", self.note)?;
        }
        Ok(())
    }
}

/// What a key holds in the model.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Held {
    Text(String),
    /// A lock taken by a call whose reply was lost: nobody knows its id.
    AnonymousLock,
}

/// The model of one key: its value (or lock holder) and the last fencing
/// token issued on it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Register {
    value: Option<Held>,
    token: u64,
}

impl Register {
    fn integer(&self) -> Option<i64> {
        match &self.value {
            None => Some(0),
            Some(Held::Text(s)) => s.parse().ok(),
            Some(Held::AnonymousLock) => None,
        }
    }

    /// The state after `call` returned `ret` (`None`: any return), or
    /// `None` when `ret` cannot be what `call` returns here.
    pub fn step(&self, call: &Call, ret: Option<&Ret>) -> Option<Register> {
        let mut next = self.clone();
        let fits = |expected: Ret| ret.is_none_or(|r| *r == expected);
        match call {
            Call::Incr => {
                let Some(n) = self.integer().and_then(|n| n.checked_add(1)) else {
                    // The call fails and changes nothing.
                    return ret.is_none().then_some(next);
                };
                next.value = Some(Held::Text(n.to_string()));
                fits(Ret::Int(n)).then_some(next)
            }
            Call::Get => match (ret, &self.value) {
                (None, _) => Some(next),
                (Some(Ret::Value(None)), None) => Some(next),
                (Some(Ret::Value(Some(got))), Some(Held::Text(s))) if got == s => Some(next),
                (Some(Ret::Value(Some(_))), Some(Held::AnonymousLock)) => Some(next),
                _ => None,
            },
            Call::Set(v) => {
                next.value = Some(Held::Text(v.clone()));
                fits(Ret::Done).then_some(next)
            }
            Call::Cas { expected, new } => {
                let matches = match (expected, &self.value) {
                    (None, None) => true,
                    (Some(e), Some(Held::Text(s))) => e == s,
                    _ => false,
                };
                if matches {
                    next.value = Some(Held::Text(new.clone()));
                }
                fits(Ret::Swapped(matches)).then_some(next)
            }
            Call::AssignNonce(pending) => {
                let last = match &self.value {
                    None => -1,
                    _ => match self.integer() {
                        Some(n) => n,
                        None => return ret.is_none().then_some(next),
                    },
                };
                let pending = *pending as i64;
                let mut candidate = last + 1;
                if pending > candidate || candidate - pending > 500 {
                    candidate = pending;
                }
                next.value = Some(Held::Text(candidate.to_string()));
                fits(Ret::Nonce(candidate as u64)).then_some(next)
            }
            Call::Acquire => {
                let free = self.value.is_none();
                match ret {
                    None => {
                        if free {
                            next.value = Some(Held::AnonymousLock);
                        }
                        Some(next)
                    }
                    Some(Ret::Acquired(None)) => (!free).then_some(next),
                    Some(Ret::Acquired(Some((id, token)))) => {
                        if !free || *token <= self.token {
                            return None;
                        }
                        next.value = Some(Held::Text(id.clone()));
                        next.token = *token;
                        Some(next)
                    }
                    Some(_) => None,
                }
            }
            Call::Release(id) => {
                let outcome = match &self.value {
                    None => ReleaseOutcome::NotHeld,
                    Some(Held::Text(s)) if s == id => ReleaseOutcome::Released,
                    Some(_) => ReleaseOutcome::HeldByOther,
                };
                if outcome == ReleaseOutcome::Released {
                    next.value = None;
                }
                fits(Ret::Released(outcome)).then_some(next)
            }
        }
    }
}

/// States explored per key before the search gives up (and fails: a
/// check that cannot finish proves nothing).
pub const BUDGET: usize = 2_000_000;

/// Check every key of `history`, each from a missing key.
pub fn check(history: &[Op]) -> Result<(), String> {
    let mut by_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op.clone());
    }
    for (key, ops) in by_key {
        check_key(&ops).map_err(|e| format!("key {key:?}: {e}"))?;
    }
    Ok(())
}

/// Check the operations of one key, from a missing key.
pub fn check_key(ops: &[Op]) -> Result<(), String> {
    let mut ops = ops.to_vec();
    ops.sort_by_key(|o| o.invoke);
    let n = ops.len();
    let words = n.div_ceil(64);
    let required = ops.iter().filter(|o| o.complete != NEVER).count();
    let mut seen: HashSet<(Vec<u64>, Register)> = HashSet::new();
    // (placed, state, how many known operations are placed)
    let mut stack = vec![(vec![0u64; words], Register::default(), 0usize)];
    let mut deepest: (usize, Vec<u64>, Register) = (0, vec![0u64; words], Register::default());
    let placed = |set: &[u64], i: usize| set[i / 64] & (1 << (i % 64)) != 0;
    while let Some((set, state, known)) = stack.pop() {
        if known == required {
            return Ok(());
        }
        if !seen.insert((set.clone(), state.clone())) {
            continue;
        }
        if seen.len() > BUDGET {
            return Err(format!(
                "inconclusive: more than {BUDGET} states for {n} operations; use fewer operations per key"
            ));
        }
        if known >= deepest.0 {
            deepest = (known, set.clone(), state.clone());
        }
        // An operation may come next only if it was invoked before every
        // other pending operation returned.
        let (mut first, mut second, mut first_at) = (NEVER, NEVER, usize::MAX);
        for (i, op) in ops.iter().enumerate() {
            if placed(&set, i) {
                continue;
            }
            if op.complete < first {
                (second, first, first_at) = (first, op.complete, i);
            } else if op.complete < second {
                second = op.complete;
            }
        }
        let mut next = Vec::new();
        for (i, op) in ops.iter().enumerate() {
            let bound = if i == first_at { second } else { first };
            if op.invoke >= bound {
                break; // sorted by invocation: none after this fits either
            }
            if placed(&set, i) {
                continue;
            }
            if let Some(after) = state.step(&op.call, op.ret.as_ref()) {
                next.push((i, after));
            }
        }
        // Try known operations first, earliest return first; an unknown
        // outcome only when nothing else fits.
        next.sort_by_key(|(i, _)| std::cmp::Reverse(ops[*i].complete));
        for (i, after) in next {
            let mut set = set.clone();
            set[i / 64] |= 1 << (i % 64);
            let known = known + usize::from(ops[i].complete != NEVER);
            stack.push((set, after, known));
        }
    }
    let (_, set, state) = deepest;
    let pending: Vec<&Op> = ops
        .iter()
        .enumerate()
        .filter(|(i, _)| !placed(&set, *i))
        .map(|(_, o)| o)
        .collect();
    // The pending call that returned first, and every call around it.
    let first = pending
        .iter()
        .min_by_key(|o| o.complete)
        .expect("a pending operation");
    let around: Vec<String> = ops
        .iter()
        .filter(|o| o.complete >= first.invoke.saturating_sub(20) && o.invoke <= first.complete)
        .take(24)
        .map(|o| o.to_string())
        .collect();
    Err(format!(
        "not linearizable: at most {} of {required} completed operations can be ordered; then the key holds {:?}, and nothing fits next. First pending: {first}. Calls around it:\n  {}",
        deepest.0,
        state,
        around.join("\n  ")
    ))
}

/// An error a recorded call ended with.
#[derive(Clone, Debug)]
pub struct Failed {
    pub key: String,
    pub call: Call,
    pub kind: ErrorKind,
    pub message: String,
    pub at: Instant,
}

/// Timing of one recorded call, for "was the fault on the path" checks.
#[derive(Clone, Debug)]
pub struct Timing {
    pub call: Call,
    pub started: Instant,
    pub took: Duration,
    pub ok: bool,
}

/// Records the calls of concurrent tasks as a history.
#[derive(Default)]
pub struct Recorder {
    ops: Mutex<Vec<Op>>,
    failed: Mutex<Vec<Failed>>,
    timings: Mutex<Vec<Timing>>,
}

impl Recorder {
    pub fn new() -> Recorder {
        Recorder::default()
    }

    /// Run `work` as `call` on `key` by `process`, and record it. An error
    /// of a non-idempotent call counts as maybe applied only when it is
    /// `OutcomeUnknown`; one of an idempotent call (retried by the store)
    /// always does.
    pub async fn record<T>(
        &self,
        process: usize,
        key: &str,
        call: Call,
        work: impl Future<Output = atomic_store::Result<T>>,
        ret: impl FnOnce(&T) -> Ret,
    ) -> atomic_store::Result<T> {
        let idempotent = matches!(call, Call::Get | Call::Set(_) | Call::Release(_));
        let started = Instant::now();
        let invoke = tick();
        let result = work.await;
        let complete = tick();
        let took = started.elapsed();
        self.timings.lock().unwrap().push(Timing {
            call: call.clone(),
            started,
            took,
            ok: result.is_ok(),
        });
        match &result {
            Ok(v) => {
                let mut op = Op::known(key, process, call, ret(v), invoke, complete);
                op.note = format!("took {took:?}");
                op.took = took;
                self.ops.lock().unwrap().push(op);
            }
            Err(e) => {
                // A failed read changed nothing: leave it out.
                if call != Call::Get && (e.kind() == ErrorKind::OutcomeUnknown || idempotent) {
                    let mut op = Op::unknown(key, process, call.clone(), invoke);
                    op.note = format!("after {took:?}: {}", e.kind());
                    op.took = took;
                    self.ops.lock().unwrap().push(op);
                }
                self.failed.lock().unwrap().push(Failed {
                    key: key.to_owned(),
                    call,
                    kind: e.kind(),
                    message: e.to_string(),
                    at: Instant::now(),
                });
            }
        }
        result
    }

    pub async fn incr(
        &self,
        store: &atomic_store::conformance::Store,
        process: usize,
        key: &str,
    ) -> atomic_store::Result<i64> {
        self.record(process, key, Call::Incr, store.incr(key), |v| Ret::Int(*v))
            .await
    }

    pub async fn get(
        &self,
        store: &atomic_store::conformance::Store,
        process: usize,
        key: &str,
    ) -> atomic_store::Result<Option<String>> {
        self.record(process, key, Call::Get, store.get(key), |v| {
            Ret::Value(v.clone())
        })
        .await
    }

    pub async fn cas(
        &self,
        store: &atomic_store::conformance::Store,
        process: usize,
        key: &str,
        expected: Option<&str>,
        new: &str,
    ) -> atomic_store::Result<bool> {
        let call = Call::Cas {
            expected: expected.map(str::to_owned),
            new: new.to_owned(),
        };
        self.record(
            process,
            key,
            call,
            store.compare_and_set(key, expected, new, None),
            |v| Ret::Swapped(*v),
        )
        .await
    }

    pub async fn assign_nonce(
        &self,
        store: &atomic_store::conformance::Store,
        process: usize,
        key: &str,
        pending: u64,
    ) -> atomic_store::Result<u64> {
        self.record(
            process,
            key,
            Call::AssignNonce(pending),
            store.assign_nonce(key, pending),
            |v| Ret::Nonce(*v),
        )
        .await
    }

    pub async fn acquire(
        &self,
        store: &atomic_store::conformance::Store,
        process: usize,
        key: &str,
        ttl: Duration,
    ) -> atomic_store::Result<Option<Lock>> {
        self.record(
            process,
            key,
            Call::Acquire,
            store.acquire_lock(key, ttl),
            |v: &Option<Lock>| {
                Ret::Acquired(
                    v.as_ref()
                        .map(|l| (l.id.as_str().to_owned(), l.fencing_token)),
                )
            },
        )
        .await
    }

    pub async fn release(
        &self,
        store: &atomic_store::conformance::Store,
        process: usize,
        key: &str,
        lock: &Lock,
    ) -> atomic_store::Result<ReleaseOutcome> {
        self.record(
            process,
            key,
            Call::Release(lock.id.as_str().to_owned()),
            store.release_lock(key, &lock.id),
            |v| Ret::Released(*v),
        )
        .await
    }

    pub fn history(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    pub fn failures(&self) -> Vec<Failed> {
        self.failed.lock().unwrap().clone()
    }

    pub fn timings(&self) -> Vec<Timing> {
        self.timings.lock().unwrap().clone()
    }
}

/// The `incr` results of `history` on `key` (counted from a missing key):
/// every value once, and no more values skipped than calls with an unknown
/// outcome. Returns (values, unknown outcomes).
pub fn check_counter(history: &[Op], key: &str) -> Result<(Vec<i64>, usize), String> {
    let mut values = Vec::new();
    let mut unknown = 0;
    for op in history
        .iter()
        .filter(|o| o.key == key && o.call == Call::Incr)
    {
        match &op.ret {
            Some(Ret::Int(v)) => values.push(*v),
            Some(other) => return Err(format!("incr returned {other:?}")),
            None => unknown += 1,
        }
    }
    values.sort_unstable();
    if let Some(w) = values.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("incr returned {} twice", w[0]));
    }
    let max = values.last().copied().unwrap_or(0);
    let skipped = max - values.len() as i64;
    if skipped > unknown as i64 {
        return Err(format!(
            "{skipped} values up to {max} were never returned, but only {unknown} incr calls ended with an unknown outcome: a call was applied twice or applied while reported as not applied"
        ));
    }
    Ok((values, unknown))
}

/// `history` with the answer of every release that did not say `Released`
/// made unknown (the release itself still happened, or not, before it
/// returned). A release resent after a lost reply answers for its last
/// attempt: its first may have released the lock, and the resend then
/// finds the lock gone or taken. This view tells that defect apart from
/// any other.
pub fn resent_releases_unknown(history: &[Op]) -> Vec<Op> {
    history
        .iter()
        .cloned()
        .map(|mut op| {
            if matches!(op.call, Call::Release(_))
                && matches!(op.ret, Some(Ret::Released(o)) if o != ReleaseOutcome::Released)
            {
                op.ret = None;
            }
            op
        })
        .collect()
}
