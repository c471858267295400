//! What bench's processes tell each other and the user: the workloads, a
//! worker's report, the merged summary, the baselines. Every other module
//! of `bench` builds on this one; it imports none of them.

use clap::ValueEnum;
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// What each worker task does in a loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    /// `incr` on one shared counter (how relayer instances draw nonces).
    Incr,
    /// `incr` on one counter per task.
    IncrMany,
    /// Uncontended `acquire_lock` then `release_lock`, one key per task.
    Lock,
    /// `assign_nonce` on one key, fed by a simulated chain that confirms
    /// every nonce handed out.
    Nonce,
    /// `set` then `get` of one key per task.
    GetSet,
    /// Every task of every process takes turns on one lock through the lock
    /// recipe (the fair queue); reports Jain's fairness index.
    LockContended,
}

impl Workload {
    pub fn name(self) -> &'static str {
        match self {
            Workload::Incr => "incr",
            Workload::IncrMany => "incr-many",
            Workload::Lock => "lock",
            Workload::Nonce => "nonce",
            Workload::GetSet => "get-set",
            Workload::LockContended => "lock-contended",
        }
    }
}

/// The last line a worker prints.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WorkerReport {
    pub ops: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub violations: Vec<String>,
    pub values: Vec<i64>,
    /// (latency in µs, count)
    pub latency: Vec<(u64, u64)>,
    /// Critical sections per task (lock-contended).
    pub acquisitions: Vec<u64>,
    pub elapsed_s: f64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WorkerLine {
    Progress {
        progress: u64,
    },
    #[cfg(feature = "metrics")]
    Metrics {
        metrics: Vec<crate::observe::Relayed>,
    },
    Done(Box<WorkerReport>),
}

pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

pub fn shared_key(base: &str, workload: Workload) -> String {
    format!("{base}:{}", workload.name())
}

/// The figures and verdict of one bench run.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub backend: &'static str,
    pub workload: &'static str,
    pub processes: u32,
    pub concurrency: u32,
    pub duration_s: f64,
    pub wall_s: f64,
    pub ops: u64,
    pub errors: u64,
    pub ops_per_sec: f64,
    pub per_process_ops_per_sec: Vec<f64>,
    pub latency_us: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fairness: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub starved: Option<usize>,
    pub verified: bool,
    pub verification: String,
    pub first_error: Option<String>,
    pub worker_failures: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub baselines: Vec<Baseline>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// One run of the baseline tool.
#[derive(Debug, Serialize)]
pub struct Baseline {
    /// What was run, e.g. `redis-benchmark INCR -c 64 -P 1`.
    pub name: String,
    pub ops_per_sec: f64,
    /// How many of the tool's commands one of our operations stands for.
    pub commands_per_op: f64,
    /// Our throughput as a fraction of the baseline's.
    pub ratio: f64,
}

pub fn print_summary(s: &Summary) {
    say!();
    say!(
        "{:<10} {:>5} {:>5} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "workload",
        "procs",
        "tasks",
        "ops",
        "ops/s",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "max"
    );
    say!(
        "{:<10} {:>5} {:>5} {:>10} {:>12.0} {:>9} {:>9} {:>9} {:>9} {:>9}",
        s.workload,
        s.processes,
        s.concurrency,
        s.ops,
        s.ops_per_sec,
        micros(s.latency_us.p50),
        micros(s.latency_us.p90),
        micros(s.latency_us.p99),
        micros(s.latency_us.p999),
        micros(s.latency_us.max),
    );
    if let (Some(f), Some(starved)) = (s.fairness, s.starved) {
        say!(
            "fairness (Jain's index over {} tasks): {f:.3}; tasks that never got the lock: {starved}",
            s.processes * s.concurrency
        );
    }
    let per: Vec<String> = s
        .per_process_ops_per_sec
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect();
    say!("per process ops/s: {}", per.join(", "));
    for b in &s.baselines {
        say!(
            "baseline {:<52} {:>12.0} ops/s   ours/baseline = {:.2}",
            b.name,
            b.ops_per_sec,
            b.ratio
        );
    }
    if s.errors > 0 {
        say!(
            "errors: {} (first: {})",
            s.errors,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
    for f in &s.worker_failures {
        say!("worker failure: {f}");
    }
    if s.verified {
        say!("verified: {}", s.verification);
    } else {
        say!("VERIFICATION FAILED: {}", s.verification);
    }
}

pub fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{us}µs")
    }
}
