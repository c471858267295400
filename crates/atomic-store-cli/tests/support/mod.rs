//! Helpers shared by the CLI's tests against real servers.
#![allow(dead_code)]

use std::process::{Command, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_atomic-store");

/// A test server's URL from the environment `scripts/test` sets up; a
/// missing one fails the test.
pub fn url(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run the tests through scripts/test"))
}

/// 8 `atomic-store nonce` processes draw `per_process` nonces each from
/// one fresh key at once: together exactly 0..8×per_process.
pub fn eight_processes_assign_nonces(url: &str, per_process: u64) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let key = format!("nonce-mp-{nanos}");
    let count = per_process.to_string();
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(BIN)
                .env("ATOMIC_STORE_URL", url)
                .args(["--json", "nonce", &key, "--pending", "0", "--count", &count])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut nonces: Vec<u64> = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        nonces.extend(
            v["nonces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap()),
        );
    }
    nonces.sort_unstable();
    assert_eq!(nonces, (0..8 * per_process).collect::<Vec<u64>>());
}

/// `bench --baseline` on `workload` runs, verifies, and reports exactly
/// one raw-client baseline with a throughput; returns that baseline.
pub fn bench_reports_one_raw_baseline(url: &str, workload: &str) -> Value {
    let out = Command::new(BIN)
        .env("ATOMIC_STORE_URL", url)
        .args([
            "--json",
            "bench",
            "--workload",
            workload,
            "--processes",
            "1",
            "--concurrency",
            "4",
            "--duration",
            "1s",
            "--baseline",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["verified"], true, "{report}");
    let baselines = report["baselines"]
        .as_array()
        .expect("a raw-client baseline");
    assert_eq!(baselines.len(), 1, "{report}");
    assert!(
        baselines[0]["ops_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    baselines[0].clone()
}

/// `url` with `name=value` added to its query.
pub fn with_param(url: &str, name: &str, value: &str) -> String {
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}{name}={value}")
}

/// A key prefix no other run uses.
pub fn unique_prefix(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}{}x{nanos}", std::process::id())
}

/// `atomic-store --json verify` on `url`: the report, after checking that
/// the suite really ran and that its cleanup reported no error. The suite's
/// verdict is left to the caller.
pub fn verify_report(url: &str) -> Value {
    let out = Command::new(BIN)
        .env("ATOMIC_STORE_URL", url)
        .args(["--json", "verify"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let checks = report["checks"].as_array().map_or(0, Vec::len);
    assert!(checks >= 20, "the suite did not run: {report}");
    assert!(
        report["cleanup_error"].is_null(),
        "verify's cleanup failed: {}",
        report["cleanup_error"]
    );
    report
}

/// `bench --workload lock-contended` with 3 worker processes of one task
/// each on one lock for 2 s: verified (one holder at a time across the
/// processes, and the store's lock key refused a second holder), with
/// critical sections in at least two processes, so that exclusion across
/// processes was exercised.
pub fn lock_contended_across_processes(url: &str) {
    let out = Command::new(BIN)
        .env("ATOMIC_STORE_URL", url)
        .args([
            "--json",
            "bench",
            "--workload",
            "lock-contended",
            "--processes",
            "3",
            "--concurrency",
            "1",
            "--duration",
            "2s",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{url}: not JSON ({e}): {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(out.status.success(), "{url}: {report}");
    assert_eq!(report["verified"], true, "{url}: {report}");
    assert_eq!(report["errors"], 0, "{url}: {report}");
    let holders = report["per_process_ops_per_sec"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.as_f64().unwrap() > 0.0)
        .count();
    assert!(
        holders >= 2,
        "{url}: only {holders} process held the lock: {report}"
    );
}
