//! `bench`: worker OS processes run a workload against one store for a fixed
//! time; the parent merges their figures and verifies what they did.

use std::collections::HashSet;
use std::io::IsTerminal;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atomic_store::lock::DistributedLock;
use atomic_store::{AtomicStore, LockId, ReleaseOutcome};
use clap::{Args, ValueEnum};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::output::{Out, EXIT_ERROR, EXIT_OK};
use crate::{baseline, plot};

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
    fn name(self) -> &'static str {
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

const BENCH_HELP: &str = "\
Workers are OS processes of this same binary; each connects, then runs
--concurrency tasks for --duration. Afterwards the command checks what the
workers did: for incr, that every value from 1 to the total was handed out
exactly once; for nonce, every nonce from 0; for the others, that every
lock was held and released and every read saw its own write; for
lock-contended, that one task held the lock at a time and the store refused
a second holder. It deletes the keys it wrote.

Exit status 0 only when the run is verified: at least one operation
completed, none failed, every worker reported and every check passed.
Otherwise the exit status is 1, `verified` is false in --json, and the
reason is printed (a failed operation's outcome is unknown, so a run with
errors is never verified).

Examples:
  atomic-store bench
  atomic-store --url redis://127.0.0.1:6379 bench --workload nonce --concurrency 64 --processes 1
  atomic-store --json bench --workload get-set --duration 10s";

/// Arguments of `bench`.
#[derive(Debug, Args)]
#[command(after_help = BENCH_HELP)]
pub struct BenchArgs {
    /// What each task does.
    #[arg(long, value_enum, default_value_t = Workload::Incr)]
    workload: Workload,
    /// Worker OS processes [default: 4; 1 for nonce].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=256))]
    processes: Option<u32>,
    /// Concurrent tasks per process.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=4096))]
    concurrency: u32,
    /// How long the workers run (500ms, 3s, 1m).
    #[arg(long, default_value = "3s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Run once per concurrency in this list (e.g. 1,8,64) instead of once.
    #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u32).range(1..=4096))]
    sweep: Option<Vec<u32>>,
    /// Also run the server's own benchmark tool on the same server, same
    /// commands and concurrency (redis-benchmark), and print our ratio to it.
    #[arg(long)]
    baseline: bool,
    /// Draw throughput against concurrency and the latency percentiles as SVG.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<std::path::PathBuf>,
}

/// Arguments of the hidden worker command.
#[derive(Debug, Args)]
pub struct WorkerArgs {
    #[arg(long, value_enum)]
    workload: Workload,
    /// Key namespace of this run.
    #[arg(long)]
    base: String,
    #[arg(long)]
    concurrency: u32,
    #[arg(long, value_parser = crate::parse_duration)]
    duration: Duration,
}

/// The last line a worker prints.
#[derive(Debug, Default, Serialize, Deserialize)]
struct WorkerReport {
    ops: u64,
    errors: u64,
    first_error: Option<String>,
    violations: Vec<String>,
    values: Vec<i64>,
    /// (latency in µs, count)
    latency: Vec<(u64, u64)>,
    /// Critical sections per task (lock-contended).
    acquisitions: Vec<u64>,
    elapsed_s: f64,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(untagged)]
enum WorkerLine {
    Progress { progress: u64 },
    Done(Box<WorkerReport>),
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds")
}

fn shared_key(base: &str, workload: Workload) -> String {
    format!("{base}:{}", workload.name())
}

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

/// One worker process: run the workload, print progress, then the report.
pub async fn worker(url: &str, args: WorkerArgs) -> u8 {
    // Connect (and set up a schema or a server clock) before the clock
    // starts, as redis-benchmark and pgbench do: on a loaded machine that
    // took most of a short run.
    let warm_up = format!("{}:warm-up", args.base);
    let store = match crate::open_store(url) {
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
        tasks.push(tokio::spawn(async move {
            run_task(store, workload, &base, task, deadline, &ops, &chain).await
        }));
    }
    let progress = {
        let ops = Arc::clone(&ops);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(250)).await;
                println!("{}", json!({ "progress": ops.load(Ordering::Relaxed) }));
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
    report.elapsed_s = started.elapsed().as_secs_f64();
    report.ops = ops.load(Ordering::Relaxed);
    report.latency = histogram
        .iter_recorded()
        .map(|v| (v.value_iterated_to(), v.count_at_value()))
        .collect();
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    EXIT_OK
}

/// Report a worker that could not start its tasks.
fn worker_failed(e: &atomic_store::Error) -> u8 {
    let report = WorkerReport {
        errors: 1,
        first_error: Some(e.to_string()),
        ..Default::default()
    };
    println!("{}", serde_json::to_string(&report).unwrap_or_default());
    EXIT_ERROR
}

async fn run_task(
    store: Arc<dyn AtomicStore>,
    workload: Workload,
    base: &str,
    task: u32,
    deadline: Instant,
    ops: &AtomicU64,
    chain: &SimulatedChain,
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
    let contended =
        DistributedLock::new(Arc::clone(&store), shared.clone(), Duration::from_secs(10));
    let inside = format!("{shared}:inside");
    let mut round: u64 = 0;
    while Instant::now() < deadline && st.violations.is_empty() {
        round += 1;
        let t0 = Instant::now();
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
                    let guard = contended.acquire(wait).await?;
                    // A shared counter proves exclusion across processes:
                    // odd on entry, the next even on exit.
                    let entered = store.incr(&inside).await?;
                    // The queue alone would hide a store whose lock admits
                    // a second holder: the lock key itself must refuse one.
                    if let Some(second) =
                        store.acquire_lock(&shared, Duration::from_secs(10)).await?
                    {
                        st.violations.push(format!(
                            "the store granted {shared} to a second caller while it was held"
                        ));
                        let _ = store.release_lock(&shared, &second.id).await;
                    }
                    let left = store.incr(&inside).await?;
                    if entered % 2 != 1 || left != entered + 1 {
                        st.violations.push(format!(
                            "two holders of {shared} at once ({entered}, {left})"
                        ));
                    }
                    let outcome = guard.release().await?;
                    if outcome != ReleaseOutcome::Released {
                        st.violations
                            .push(format!("{shared}: release returned {outcome}"));
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
        match result {
            Ok(()) => {
                st.histogram
                    .saturating_record(t0.elapsed().as_micros().max(1) as u64);
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
    }
    if matches!(workload, Workload::IncrMany | Workload::GetSet) {
        let _ = store.delete(&own).await;
    }
    st
}

struct Progress {
    per_process: Vec<AtomicU64>,
}

impl Progress {
    fn total(&self) -> u64 {
        self.per_process
            .iter()
            .map(|a| a.load(Ordering::Relaxed))
            .sum()
    }
}

/// The figures and verdict of one bench run.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub backend: &'static str,
    pub workload: &'static str,
    pub processes: u32,
    pub concurrency: u32,
    duration_s: f64,
    wall_s: f64,
    ops: u64,
    errors: u64,
    pub ops_per_sec: f64,
    per_process_ops_per_sec: Vec<f64>,
    pub latency_us: Latency,
    #[serde(skip_serializing_if = "Option::is_none")]
    fairness: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    starved: Option<usize>,
    verified: bool,
    verification: String,
    first_error: Option<String>,
    worker_failures: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    baselines: Vec<baseline::Baseline>,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

/// The parent: for each concurrency, spawn workers, show progress, merge,
/// verify, and report.
pub async fn run(url: &str, mut args: BenchArgs, out: Out) -> u8 {
    let sweep = args.sweep.clone().unwrap_or_else(|| vec![args.concurrency]);
    if args.workload == Workload::Nonce && args.processes.is_some_and(|p| p > 1) {
        return out.failure(
            "invalid_argument",
            "the nonce workload runs in one process: its simulated chain lives in that process, and a chain count read in one process while others hand out hundreds of nonces would trip the nonce rule's 500 window, which re-issues nonces by design. Use --concurrency for parallel callers",
        );
    }
    let processes = args
        .processes
        .unwrap_or(if args.workload == Workload::Nonce {
            1
        } else {
            4
        });
    args.processes = Some(processes);
    if args.workload == Workload::Nonce && sweep.iter().any(|&c| c > 200) {
        return out.failure(
            "invalid_argument",
            "the nonce workload takes a concurrency of at most 200: with more callers in flight, a pending count can fall more than the nonce rule's 500 window behind, and the rule itself re-issues nonces",
        );
    }
    let store = match crate::open_store(url) {
        Ok(s) => s,
        Err(e) => return out.error(&e),
    };
    let mut summaries = Vec::new();
    for &concurrency in &sweep {
        let mut summary = match run_once(url, &store, &args, concurrency, out).await {
            Ok(s) => s,
            Err(message) => return out.failure("io", &message),
        };
        if args.baseline {
            summary.baselines = baseline::run(
                url,
                args.workload,
                concurrency,
                summary.ops,
                args.duration,
                out,
            )
            .await;
            for b in &mut summary.baselines {
                b.ratio = summary.ops_per_sec * b.commands_per_op / b.ops_per_sec.max(1e-9);
            }
        }
        if !out.json {
            print_summary(&summary);
        }
        summaries.push(summary);
    }
    if out.json {
        let object = if args.sweep.is_some() {
            json!({ "runs": summaries })
        } else {
            serde_json::to_value(&summaries[0]).unwrap_or_default()
        };
        println!("{object}");
    } else if summaries.len() > 1 {
        println!("\nsweep: {}", args.workload.name());
        println!("{:>6} {:>12} {:>9} {:>9}", "tasks", "ops/s", "p50", "p99");
        for s in &summaries {
            println!(
                "{:>6} {:>12.0} {:>9} {:>9}",
                s.concurrency,
                s.ops_per_sec,
                micros(s.latency_us.p50),
                micros(s.latency_us.p99)
            );
        }
    }
    if let Some(path) = &args.plot {
        if let Err(e) = plot::write_svg(path, &summaries) {
            return out.failure("io", &format!("cannot write {}: {e}", path.display()));
        }
        if !out.json {
            println!("plot written to {}", path.display());
        }
    }
    if summaries.iter().all(|s| s.verified) {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}

async fn run_once(
    url: &str,
    store: &Arc<dyn AtomicStore>,
    args: &BenchArgs,
    concurrency: u32,
    out: Out,
) -> Result<Summary, String> {
    let processes = args.processes.unwrap_or(1);
    let backend = store.capabilities().backend;
    let base = format!("bench:{}", &LockId::generate().as_str()[..12]);
    let exe =
        std::env::current_exe().map_err(|e| format!("cannot find this program's path: {e}"))?;
    if !out.json {
        println!(
            "bench: {} on {backend}, {} processes × {concurrency} tasks for {:?}",
            args.workload.name(),
            processes,
            args.duration
        );
    }
    let progress = Arc::new(Progress {
        per_process: (0..processes).map(|_| AtomicU64::new(0)).collect(),
    });
    let reports: Arc<Mutex<Vec<Option<WorkerReport>>>> =
        Arc::new(Mutex::new((0..processes).map(|_| None).collect()));
    let started = Instant::now();
    let mut children = Vec::new();
    for p in 0..processes as usize {
        let mut child = tokio::process::Command::new(&exe)
            .arg("bench-worker")
            .args(["--workload", args.workload.name()])
            .args(["--base", &base])
            .args(["--concurrency", &concurrency.to_string()])
            .args(["--duration", &format!("{}ms", args.duration.as_millis())])
            // The URL goes through the environment, never argv, so a
            // password in it does not show in the process list.
            .env("ATOMIC_STORE_URL", url)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("cannot start worker process: {e}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (progress, reports) = (Arc::clone(&progress), Arc::clone(&reports));
        children.push(tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match serde_json::from_str::<WorkerLine>(&line) {
                    Ok(WorkerLine::Progress { progress: n }) => {
                        progress.per_process[p].store(n, Ordering::Relaxed)
                    }
                    Ok(WorkerLine::Done(report)) => reports.lock().unwrap()[p] = Some(*report),
                    Err(_) => {}
                }
            }
            child.wait().await
        }));
    }
    let ticker = tokio::spawn(show_progress(Arc::clone(&progress), started));
    let mut worker_failures = Vec::new();
    for (p, child) in children.into_iter().enumerate() {
        match child.await {
            Ok(Ok(status)) if status.success() => {}
            Ok(Ok(status)) => worker_failures.push(format!("worker {p} exited with {status}")),
            Ok(Err(e)) => worker_failures.push(format!("worker {p}: {e}")),
            Err(e) => worker_failures.push(format!("worker {p}: {e}")),
        }
    }
    ticker.abort();
    if std::io::stderr().is_terminal() {
        eprintln!();
    }
    let wall = started.elapsed().as_secs_f64();
    let reports: Vec<Option<WorkerReport>> = std::mem::take(&mut *reports.lock().unwrap());
    let mut histogram = new_histogram();
    let mut all_values = Vec::new();
    let mut per_process = Vec::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut violations = Vec::new();
    let mut acquisitions: Vec<u64> = Vec::new();
    for (p, report) in reports.into_iter().enumerate() {
        let Some(r) = report else {
            worker_failures.push(format!("worker {p} sent no report"));
            continue;
        };
        for (value, count) in &r.latency {
            histogram.saturating_record_n(*value, *count);
        }
        per_process.push(r.ops as f64 / r.elapsed_s.max(1e-9));
        errors += r.errors;
        first_error = first_error.or(r.first_error);
        violations.extend(r.violations);
        all_values.extend(r.values);
        acquisitions.extend(r.acquisitions);
    }
    let (fairness, starved) = if args.workload == Workload::LockContended {
        (
            Some(jain(&acquisitions)),
            Some(acquisitions.iter().filter(|&&n| n == 0).count()),
        )
    } else {
        (None, None)
    };
    // Shared keys go once every worker has finished.
    let shared = shared_key(&base, args.workload);
    for suffix in ["", ":inside", ":queue:next", ":queue:done"] {
        let _ = store.delete(&format!("{shared}{suffix}")).await;
    }
    let ops = histogram.len();
    let verification = verify(args.workload, &mut all_values, ops, errors, &violations);
    let pct = |q: f64| histogram.value_at_quantile(q);
    Ok(Summary {
        backend,
        workload: args.workload.name(),
        processes,
        concurrency,
        duration_s: args.duration.as_secs_f64(),
        wall_s: wall,
        ops,
        errors,
        ops_per_sec: per_process.iter().sum(),
        per_process_ops_per_sec: per_process,
        latency_us: Latency {
            p50: pct(0.50),
            p90: pct(0.90),
            p99: pct(0.99),
            p999: pct(0.999),
            max: histogram.max(),
        },
        fairness,
        starved,
        verified: verification.is_ok() && worker_failures.is_empty(),
        verification: match verification {
            Ok(s) | Err(s) => s,
        },
        first_error,
        worker_failures,
        baselines: Vec::new(),
    })
}

fn print_summary(s: &Summary) {
    println!();
    println!(
        "{:<10} {:>5} {:>5} {:>10} {:>12} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "workload", "procs", "tasks", "ops", "ops/s", "p50", "p90", "p99", "p99.9", "max"
    );
    println!(
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
        println!(
            "fairness (Jain's index over {} tasks): {f:.3}; tasks that never got the lock: {starved}",
            s.processes * s.concurrency
        );
    }
    let per: Vec<String> = s
        .per_process_ops_per_sec
        .iter()
        .map(|v| format!("{v:.0}"))
        .collect();
    println!("per process ops/s: {}", per.join(", "));
    for b in &s.baselines {
        println!(
            "baseline {:<52} {:>12.0} ops/s   ours/baseline = {:.2}",
            b.name, b.ops_per_sec, b.ratio
        );
    }
    if s.errors > 0 {
        println!(
            "errors: {} (first: {})",
            s.errors,
            s.first_error.as_deref().unwrap_or("?")
        );
    }
    for f in &s.worker_failures {
        println!("worker failure: {f}");
    }
    if s.verified {
        println!("verified: {}", s.verification);
    } else {
        println!("VERIFICATION FAILED: {}", s.verification);
    }
}

/// Jain's fairness index: 1 when every task got the same share, 1/n when
/// one task got everything.
fn jain(counts: &[u64]) -> f64 {
    let sum: f64 = counts.iter().map(|&c| c as f64).sum();
    let squares: f64 = counts.iter().map(|&c| (c as f64).powi(2)).sum();
    if squares == 0.0 {
        0.0
    } else {
        sum * sum / (counts.len() as f64 * squares)
    }
}

fn micros(us: u64) -> String {
    if us >= 10_000 {
        format!("{:.1}ms", us as f64 / 1000.0)
    } else {
        format!("{us}µs")
    }
}

/// Check what the workers did. `Ok` says what was proven; `Err` why the
/// run is not verified: a violation, a failed operation (whose outcome is
/// unknown, so the checks cannot be complete), or nothing done at all.
fn verify(
    workload: Workload,
    values: &mut [i64],
    ops: u64,
    errors: u64,
    violations: &[String],
) -> Result<String, String> {
    if let Some(v) = violations.first() {
        return Err(format!("{} violations, first: {v}", violations.len()));
    }
    if ops == 0 {
        return Err(format!(
            "nothing was verified: no operation completed ({errors} failed)"
        ));
    }
    let proven = match workload {
        Workload::Incr | Workload::Nonce => {
            if values.len() as u64 != ops {
                return Err(format!(
                    "the workers reported {} values for {ops} operations",
                    values.len()
                ));
            }
            let first = if workload == Workload::Incr { 1 } else { 0 };
            values.sort_unstable();
            let distinct = values.iter().collect::<HashSet<_>>().len();
            if distinct != values.len() {
                return Err(format!(
                    "{} values handed out more than once",
                    values.len() - distinct
                ));
            }
            let exact = values
                .iter()
                .enumerate()
                .all(|(i, v)| *v == first + i as i64);
            if exact {
                format!(
                    "every value from {first} to {} handed out exactly once ({} values)",
                    first + values.len() as i64 - 1,
                    values.len()
                )
            } else if errors > 0 {
                // An operation with an unknown outcome may have used a value.
                format!("no value handed out twice ({} values)", values.len())
            } else {
                return Err(format!(
                    "values are not exactly {first}..{}: gaps without errors",
                    first + values.len() as i64
                ));
            }
        }
        Workload::IncrMany => format!("every per-task counter counted 1, 2, 3, … ({ops} increments)"),
        Workload::Lock => format!("every uncontended lock acquired and released ({ops} cycles)"),
        Workload::GetSet => format!("every read saw its own write ({ops} set+get pairs)"),
        Workload::LockContended => format!(
            "one holder at a time in all {ops} critical sections, the store refused a second holder, each released by its holder"
        ),
    };
    if errors > 0 {
        return Err(format!(
            "not verified: {errors} operations failed and each stopped its task, so the checks are incomplete; of the {ops} that completed: {proven}"
        ));
    }
    Ok(proven)
}

async fn show_progress(progress: Arc<Progress>, started: Instant) {
    let tty = std::io::stderr().is_terminal();
    let every = if tty {
        Duration::from_millis(250)
    } else {
        Duration::from_secs(1)
    };
    loop {
        tokio::time::sleep(every).await;
        let elapsed = started.elapsed().as_secs_f64();
        let total = progress.total();
        let line = format!(
            "  {elapsed:6.1}s  {total:>10} ops  {:>10.0} ops/s",
            total as f64 / elapsed.max(1e-9)
        );
        if tty {
            eprint!("\r{line}");
        } else {
            eprintln!("{line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(workload: Workload, values: &[i64], ops: u64, errors: u64) -> Result<String, String> {
        verify(workload, &mut values.to_vec(), ops, errors, &[])
    }

    #[test]
    fn every_value_once_is_verified() {
        let proven = check(Workload::Incr, &[3, 1, 2], 3, 0).unwrap();
        assert!(proven.contains("from 1 to 3"), "{proven}");
        let proven = check(Workload::Nonce, &[1, 0, 2], 3, 0).unwrap();
        assert!(proven.contains("from 0 to 2"), "{proven}");
    }

    #[test]
    fn a_value_handed_out_twice_fails() {
        for workload in [Workload::Incr, Workload::Nonce] {
            let e = check(workload, &[1, 2, 2, 3], 4, 0).unwrap_err();
            assert!(e.contains("1 values handed out more than once"), "{e}");
            // Errors excuse gaps, never a duplicate.
            let e = check(workload, &[1, 2, 2, 3], 4, 5).unwrap_err();
            assert!(e.contains("more than once"), "{e}");
        }
    }

    #[test]
    fn a_gap_without_errors_fails() {
        let e = check(Workload::Incr, &[1, 2, 4], 3, 0).unwrap_err();
        assert!(e.contains("gaps without errors"), "{e}");
        let e = check(Workload::Nonce, &[1, 2, 3], 3, 0).unwrap_err();
        assert!(e.contains("gaps without errors"), "{e}");
    }

    #[test]
    fn failed_operations_leave_a_run_unverified() {
        let e = check(Workload::Incr, &[1, 2, 4], 3, 1).unwrap_err();
        assert!(
            e.contains("not verified: 1 operations failed")
                && e.contains("no value handed out twice"),
            "{e}"
        );
        // Even when what completed looks perfect.
        let e = check(Workload::Incr, &[1, 2, 3], 3, 2).unwrap_err();
        assert!(e.contains("not verified: 2 operations failed"), "{e}");
        for workload in [
            Workload::IncrMany,
            Workload::Lock,
            Workload::GetSet,
            Workload::LockContended,
        ] {
            assert!(check(workload, &[], 10, 0).is_ok(), "{workload:?}");
            let e = check(workload, &[], 10, 1).unwrap_err();
            assert!(e.contains("not verified"), "{workload:?}: {e}");
        }
    }

    #[test]
    fn nothing_done_is_not_verified() {
        for workload in [
            Workload::Incr,
            Workload::IncrMany,
            Workload::Lock,
            Workload::Nonce,
            Workload::GetSet,
            Workload::LockContended,
        ] {
            let e = check(workload, &[], 0, 0).unwrap_err();
            assert!(e.contains("nothing was verified"), "{workload:?}: {e}");
            let e = check(workload, &[], 0, 3).unwrap_err();
            assert!(e.contains("(3 failed)"), "{workload:?}: {e}");
        }
    }

    #[test]
    fn values_must_match_the_operations_counted() {
        let e = check(Workload::Incr, &[1, 2], 3, 0).unwrap_err();
        assert!(e.contains("2 values for 3 operations"), "{e}");
    }

    #[test]
    fn a_violation_fails_whatever_the_figures() {
        let overlap = "two holders of bench:x:lock-contended at once (3, 5)".to_string();
        let e = verify(Workload::LockContended, &mut [], 100, 0, &[overlap]).unwrap_err();
        assert!(e.starts_with("1 violations, first: two holders"), "{e}");
    }
}
