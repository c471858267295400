//! `bench`: worker OS processes run a workload against one store for a fixed
//! time; the parent merges their figures and verifies what they did.

mod baseline;
mod plot;
pub mod report;
pub mod worker;

use std::collections::HashSet;
use std::io::IsTerminal;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atomic_store::lock::Semaphore;
use atomic_store::{AtomicStore, LockId};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::args::BenchArgs;
use crate::output::{Out, EXIT_ERROR, EXIT_OK};
use report::{
    micros, new_histogram, print_summary, shared_key, Latency, Summary, WorkerLine, WorkerReport,
    Workload,
};

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

/// The parent: for each concurrency, spawn workers, show progress, merge,
/// verify, and report.
pub async fn run(url: &str, mut args: BenchArgs, out: Out) -> u8 {
    let sweep = args.sweep.clone().unwrap_or_else(|| vec![args.concurrency]);
    if args.permits.is_some() && args.workload != Workload::LockContended {
        return out.failure(
            "invalid_argument",
            "--permits goes with --workload lock-contended: it makes the tasks contend for a semaphore of N permits instead of one lock",
        );
    }
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
    if processes > 1
        && matches!(
            atomic_store::Scheme::of(url),
            Ok(atomic_store::Scheme::Memory)
        )
    {
        return out.failure(
            "invalid_argument",
            "memory:// lives inside one process, and bench runs its workers as separate processes, each with a store of its own, so values would repeat across them: pass --processes 1, or use a shared store such as sqlite://bench.db",
        );
    }
    if args.workload == Workload::Nonce && sweep.iter().any(|&c| c > 200) {
        return out.failure(
            "invalid_argument",
            "the nonce workload takes a concurrency of at most 200: with more callers in flight, a pending count can fall more than the nonce rule's 500 window behind, and the rule itself re-issues nonces",
        );
    }
    let store = match crate::store::open(url) {
        Ok(s) => s,
        Err(e) => return out.error(&e),
    };
    let mut summaries = Vec::new();
    for &concurrency in &sweep {
        let mut summary = match run_once(url, &store, &args, concurrency, out).await {
            Ok(s) => s,
            Err(message) => return out.failure("io", &message),
        };
        if args.baseline && summary.ops == 0 {
            // A baseline of a server the run could not use would measure
            // nothing, and redis-benchmark waits forever for a dead one.
            eprintln!("baselines skipped: the run completed no operation");
        } else if args.baseline {
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
        say!("{object}");
    } else if summaries.len() > 1 {
        say!("\nsweep: {}", args.workload.name());
        say!("{:>6} {:>12} {:>9} {:>9}", "tasks", "ops/s", "p50", "p99");
        for s in &summaries {
            say!(
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
            say!("plot written to {}", path.display());
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
        say!(
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
            .args(args.permits.map(|n| format!("--permits={n}")))
            .args(args.no_layer.then_some("--no-layer"))
            .args(crate::store::metrics_on().then_some("--relay-metrics"))
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
                    #[cfg(feature = "metrics")]
                    Ok(WorkerLine::Metrics { metrics }) => crate::observe::replay(metrics),
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
    // Shared keys go once every worker has finished, with the lock queue's
    // presence keys (one per ticket; on ZooKeeper even an expired one
    // leaves a tombstone).
    let shared = shared_key(&base, args.workload);
    let lock_keys = match args.permits {
        None => vec![shared.clone()],
        Some(n) => {
            let sem = Semaphore::new(Arc::clone(store), shared.clone(), n, Duration::from_secs(1));
            std::iter::once(sem.gate_key())
                .chain((0..n).map(|slot| sem.slot_key(slot)))
                .collect()
        }
    };
    for key in &lock_keys {
        purge_lock_keys(store, key).await;
    }
    for seat in 0..args.permits.unwrap_or(1) {
        let _ = std::fs::remove_file(worker::seat_marker(&base, seat));
    }
    let ops = histogram.len();
    let verification = verify(
        args.workload,
        args.permits,
        &mut all_values,
        ops,
        errors,
        &violations,
    );
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

/// Remove a contended lock key with its fencing counter and its queue: the
/// ticket queue's keys (one presence key per ticket; on ZooKeeper even an
/// expired one leaves a tombstone) and, through `purge`, a native queue's.
async fn purge_lock_keys(store: &Arc<dyn AtomicStore>, key: &str) {
    let tickets = match store.get(&format!("{key}:queue:next")).await {
        Ok(Some(n)) => n.parse::<u64>().unwrap_or(0).min(10_000_000),
        _ => 0,
    };
    for ticket in 1..=tickets {
        let _ = store.purge(&format!("{key}:queue:{ticket}")).await;
    }
    for suffix in ["", ":queue:next", ":queue:done"] {
        let _ = store.purge(&format!("{key}{suffix}")).await;
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

/// Check what the workers did. `Ok` says what was proven; `Err` why the
/// run is not verified: a violation, a failed operation (whose outcome is
/// unknown, so the checks cannot be complete), or nothing done at all.
fn verify(
    workload: Workload,
    permits: Option<u32>,
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
        Workload::LockContended => match permits {
            None => format!(
                "one holder at a time in all {ops} critical sections, the store refused a second holder, each released by its holder"
            ),
            Some(n) => format!(
                "at most {n} holders at a time in all {ops} critical sections, the store refused each held permit to a second caller, each released by its holder"
            ),
        },
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
        verify(workload, None, &mut values.to_vec(), ops, errors, &[])
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
        let overlap = "more than 1 holders of bench:x:lock-contended at once".to_string();
        let e = verify(Workload::LockContended, None, &mut [], 100, 0, &[overlap]).unwrap_err();
        assert!(e.starts_with("1 violations, first: more than 1"), "{e}");
        let proven = verify(Workload::LockContended, Some(3), &mut [], 100, 0, &[]).unwrap();
        assert!(proven.starts_with("at most 3 holders"), "{proven}");
    }
}
