//! `bench` and `verify` on deliberately broken stores: each check must
//! catch the promise its store breaks. The binary breaks every store it
//! opens, in bench's worker processes too, when ATOMIC_STORE_CLI_TEST_BREAK
//! names a fault (cargo feature `fault-injection`, see src/fault.rs).
#![cfg(all(feature = "fault-injection", feature = "sqlite", feature = "memory"))]

use std::process::Output;

use serde_json::Value;

mod support;

use support::{code, command, sqlite_url};

fn run_broken(fault: &str, url: &str, args: &[&str]) -> Output {
    command(url)
        .env("ATOMIC_STORE_CLI_TEST_BREAK", fault)
        .args(args)
        .output()
        .expect("run atomic-store")
}

/// The JSON report of a bench run that must fail verification.
fn failed_bench(fault: &str, workload: &str, processes: &str) -> Value {
    failed_bench_with(fault, workload, processes, &[])
}

fn failed_bench_with(fault: &str, workload: &str, processes: &str, extra: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "--json",
        "bench",
        "--workload",
        workload,
        "--processes",
        processes,
        "--concurrency",
        "2",
        "--duration",
        "500ms",
    ];
    args.extend(extra);
    let out = run_broken(fault, &sqlite_url(&dir), &args);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("deliberately broken"),
        "the fault was not applied: {stderr}"
    );
    let report: Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("not JSON ({e}): {stdout} {stderr}"));
    assert_eq!(code(&out), 1, "{fault}: {report}");
    assert_eq!(report["verified"], false, "{fault}: {report}");
    assert!(report["ops"].as_u64().unwrap() > 0, "{fault}: {report}");
    report
}

#[test]
fn bench_fails_when_incr_hands_a_value_out_twice() {
    let report = failed_bench("dup-incr", "incr", "2");
    let why = report["verification"].as_str().unwrap();
    assert!(why.contains("values handed out more than once"), "{report}");
}

#[test]
fn bench_fails_when_assign_nonce_hands_a_nonce_out_twice() {
    let report = failed_bench("dup-nonce", "nonce", "1");
    let why = report["verification"].as_str().unwrap();
    assert!(why.contains("values handed out more than once"), "{report}");
}

#[test]
fn bench_fails_when_the_store_grants_a_held_lock() {
    let report = failed_bench("grant-all-locks", "lock-contended", "2");
    let why = report["verification"].as_str().unwrap();
    assert!(
        why.contains("granted") && why.contains("while it was held"),
        "{report}"
    );
}

/// With every slot lock granted to everyone, four tasks hold "one of two
/// permits" at once: the seat files or the store's refusal catch it.
#[test]
fn bench_fails_when_the_store_grants_a_held_permit() {
    let report = failed_bench_with(
        "grant-all-locks",
        "lock-contended",
        "2",
        &["--permits", "2"],
    );
    let why = report["verification"].as_str().unwrap();
    assert!(
        why.contains("while it was held") || why.contains("more than 2 holders"),
        "{report}"
    );
}

#[test]
fn bench_prints_why_verification_failed() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_broken(
        "dup-incr",
        &sqlite_url(&dir),
        &[
            "bench",
            "--processes",
            "1",
            "--concurrency",
            "2",
            "--duration",
            "300ms",
        ],
    );
    assert_eq!(code(&out), 1);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("VERIFICATION FAILED: ") && stdout.contains("more than once"),
        "{stdout}"
    );
}

#[test]
fn verify_fails_on_a_broken_store() {
    for fault in ["dup-incr", "grant-all-locks"] {
        let out = run_broken(fault, "memory://", &["--json", "verify"]);
        assert_eq!(code(&out), 1, "{fault}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(report["failed"].as_u64().unwrap() > 0, "{fault}: {report}");
    }
}

#[test]
fn an_unknown_fault_is_refused() {
    let out = run_broken("everything", "memory://", &["--json", "get", "k"]);
    assert_eq!(code(&out), 2, "a bad argument, in the environment");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("invalid_argument") && text.contains("dup-incr"),
        "{text}"
    );
}

/// A run where nothing happened proves nothing: before, a contended bench
/// whose lock was never granted reported `verified: true` and exit 0.
#[test]
fn a_bench_that_did_nothing_is_not_verified() {
    let dir = tempfile::tempdir().unwrap();
    let out = run_broken(
        "refuse-all-locks",
        &sqlite_url(&dir),
        &[
            "--json",
            "bench",
            "--workload",
            "lock-contended",
            "--processes",
            "2",
            "--concurrency",
            "2",
            "--duration",
            "300ms",
        ],
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(code(&out), 1, "{report}");
    assert_eq!(
        (report["ops"].as_u64(), report["errors"].as_u64()),
        (Some(0), Some(0)),
        "{report}"
    );
    assert_eq!(report["verified"], false, "{report}");
    assert!(
        report["verification"]
            .as_str()
            .unwrap()
            .contains("nothing was verified"),
        "{report}"
    );
}
