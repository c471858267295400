//! The metrics atomic-store records, on the `metrics` facade. Install any
//! recorder (for example `metrics-exporter-prometheus`) to collect them.
//!
//! | name | kind | labels |
//! |---|---|---|
//! | [`OPERATION_DURATION`](crate::observe::names::OPERATION_DURATION) | histogram, seconds | `backend`, `operation`, `outcome` |
//! | [`OPERATION_ERRORS`](crate::observe::names::OPERATION_ERRORS) | counter | `backend`, `operation`, `error_kind` |
//! | [`NONCE_ASSIGNED`](crate::observe::names::NONCE_ASSIGNED) | counter | `backend` |
//! | [`LOCK_WAIT`](crate::observe::names::LOCK_WAIT) | histogram, seconds | `lock` (the recipe's name), `outcome` |
//! | [`LOCK_HELD`](crate::observe::names::LOCK_HELD) | histogram, seconds | `lock` |

use std::time::Duration;

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_histogram, histogram, Counter, Histogram, Unit};

use crate::ErrorKind;

/// How long each store operation took, by outcome.
pub const OPERATION_DURATION: &str = "atomic_store_operation_duration_seconds";
/// Operations that ended in an error, by kind (`unsupported` is not one).
pub const OPERATION_ERRORS: &str = "atomic_store_operation_errors_total";
/// Nonces handed out by `assign_nonce`.
pub const NONCE_ASSIGNED: &str = "atomic_store_nonce_assigned_total";
/// How long the lock recipes waited, by outcome (`acquired`, `timeout`,
/// `not_acquired`, `error`, `cancelled`).
pub const LOCK_WAIT: &str = "atomic_store_lock_wait_seconds";
/// How long the lock recipes held a lock or permit.
pub const LOCK_HELD: &str = "atomic_store_lock_held_seconds";

/// Histogram buckets for [`OPERATION_DURATION`], in seconds: 10 µs to 10 s.
pub const DURATION_BUCKETS: &[f64] = &[
    1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// Histogram buckets for [`LOCK_WAIT`] and [`LOCK_HELD`]: 100 µs to 5 min.
pub const LOCK_BUCKETS: &[f64] = &[
    1e-4, 1e-3, 5e-3, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0,
];

/// Give the installed recorder each metric's unit and help text.
pub fn describe() {
    describe_histogram!(
        OPERATION_DURATION,
        Unit::Seconds,
        "Duration of atomic-store operations."
    );
    describe_counter!(
        OPERATION_ERRORS,
        "atomic-store operations that ended in an error."
    );
    describe_counter!(NONCE_ASSIGNED, "Nonces handed out by assign_nonce.");
    describe_histogram!(
        LOCK_WAIT,
        Unit::Seconds,
        "Time the lock recipes waited for a lock or permit."
    );
    describe_histogram!(
        LOCK_HELD,
        Unit::Seconds,
        "Time a lock or permit of the recipes was held."
    );
}

/// The operations the layer traces, in the order of [`Handles`]' rows.
pub(crate) const OPERATIONS: &[&str] = &[
    "incr",
    "acquire_lock",
    "release_lock",
    "extend_lock",
    "get",
    "set",
    "set_with_ttl",
    "delete",
    "compare_and_set",
    "assign_nonce",
    "eval",
    "inspect",
    "keys",
    "notify",
    "wait_notified",
    "lock_queue_enter",
    "lock_queue_release",
    "purge",
];

/// Every outcome an operation can end with, and its column in [`Handles`].
fn outcome_index(outcome: &str) -> Option<usize> {
    Some(match outcome {
        "ok" => 0,
        "acquired" => 1,
        "not_acquired" => 2,
        "released" => 3,
        "not_held" => 4,
        "held_by_other" => 5,
        "extended" => 6,
        "found" => 7,
        "not_found" => 8,
        "deleted" => 9,
        "swapped" => 10,
        "not_swapped" => 11,
        "notified" => 12,
        "timed_out" => 13,
        "waiting" => 14,
        "handed_over" => 15,
        "cancelled" => 16,
        "unsupported" => 17,
        "timeout" => 18,
        "error" => 19,
        _ => return None,
    })
}
const OUTCOMES: usize = 20;

/// Room for every `ErrorKind` (an enum without data: `kind as usize`).
const ERROR_KINDS: usize = 16;

/// `name`'s place in `list` (at compile time for the operations).
pub(crate) const fn position(list: &[&str], name: &str) -> usize {
    let mut i = 0;
    while i < list.len() {
        let (a, b) = (list[i].as_bytes(), name.as_bytes());
        if a.len() == b.len() {
            let mut j = 0;
            while j < a.len() && a[j] == b[j] {
                j += 1;
            }
            if j == a.len() {
                return i;
            }
        }
        i += 1;
    }
    usize::MAX
}

/// One store's metric handles, registered on first use: the labels are
/// built once per series, not once per call.
pub(crate) struct Handles {
    backend: &'static str,
    durations: Box<[OnceLock<Histogram>]>,
    errors: Box<[OnceLock<Counter>]>,
    nonces: OnceLock<Counter>,
}

impl Handles {
    pub(crate) fn new(backend: &'static str) -> Handles {
        Handles {
            backend,
            durations: slots(OPERATIONS.len() * OUTCOMES),
            errors: slots(OPERATIONS.len() * ERROR_KINDS),
            nonces: OnceLock::new(),
        }
    }

    pub(crate) fn operation(&self, operation: usize, outcome: &'static str, took: Duration) {
        let name = OPERATIONS[operation];
        let register = || histogram!(OPERATION_DURATION, "backend" => self.backend, "operation" => name, "outcome" => outcome);
        let slot = outcome_index(outcome).map(|i| operation * OUTCOMES + i);
        match slot.and_then(|slot| self.durations.get(slot)) {
            Some(handle) => handle.get_or_init(register).record(took.as_secs_f64()),
            None => register().record(took.as_secs_f64()),
        }
    }

    pub(crate) fn error(&self, operation: usize, kind: ErrorKind) {
        let name = OPERATIONS[operation];
        let register = || counter!(OPERATION_ERRORS, "backend" => self.backend, "operation" => name, "error_kind" => kind.as_str());
        let slot = (kind as usize) < ERROR_KINDS;
        match self
            .errors
            .get(operation * ERROR_KINDS + kind as usize)
            .filter(|_| slot)
        {
            Some(handle) => handle.get_or_init(register).increment(1),
            None => register().increment(1),
        }
    }

    pub(crate) fn nonce_assigned(&self) {
        self.nonces
            .get_or_init(|| counter!(NONCE_ASSIGNED, "backend" => self.backend))
            .increment(1);
    }
}

fn slots<T>(n: usize) -> Box<[OnceLock<T>]> {
    (0..n).map(|_| OnceLock::new()).collect()
}

pub(crate) fn record_lock_wait(lock: &'static str, outcome: &'static str, took: Duration) {
    histogram!(LOCK_WAIT, "lock" => lock, "outcome" => outcome).record(took.as_secs_f64());
}

pub(crate) fn record_lock_held(lock: &'static str, took: Duration) {
    histogram!(LOCK_HELD, "lock" => lock).record(took.as_secs_f64());
}
