//! The real binary against the Redis server `scripts/test` starts.
#![cfg(feature = "redis")]

mod support;

use support::{json, run_env, unique, url, verify_report, with_param};

fn redis_url() -> String {
    url("ATOMIC_STORE_TEST_REDIS_URL")
}

#[test]
fn eight_processes_assign_nonces_through_one_redis_without_duplicates() {
    support::eight_processes_assign_nonces(&redis_url(), 50);
}

#[test]
fn bench_and_verify_on_redis() {
    let url = redis_url();
    let out = run_env(
        &url,
        &[
            "--json",
            "bench",
            "--workload",
            "incr",
            "--processes",
            "2",
            "--concurrency",
            "8",
            "--duration",
            "500ms",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["backend"], "redis");
    assert_eq!(report["verified"], true, "{report}");

    let out = run_env(
        &url,
        &[
            "--json",
            "bench",
            "--workload",
            "nonce",
            "--concurrency",
            "16",
            "--duration",
            "500ms",
            "--baseline",
        ],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["verified"], true, "{report}");
    let baselines = report["baselines"].as_array().expect("baselines");
    // redis-benchmark unpipelined and pipelined, then redis-rs alone and
    // auto-pipelined.
    assert_eq!(baselines.len(), 4, "{report}");
    assert!(baselines[2]["name"]
        .as_str()
        .unwrap()
        .starts_with("redis-rs EVALSHA x16 tasks"));
    assert!(baselines[3]["name"]
        .as_str()
        .unwrap()
        .starts_with("redis-rs auto-pipelined EVALSHA x16 tasks"));
    for b in baselines {
        assert!(b["ops_per_sec"].as_f64().unwrap() > 0.0);
        assert!(b["ratio"].as_f64().unwrap() > 0.0);
    }

    let out = run_env(&url, &["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("verifying the redis store") && !stdout.contains("FAIL"),
        "{stdout}"
    );
}

#[test]
fn an_unreachable_server_fails_within_the_timeout_with_a_clear_message() {
    let started = std::time::Instant::now();
    let out = run_env("redis://127.0.0.1:1?connect_timeout=300ms", &["get", "k"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("unavailable") && stderr.contains("hint: check that the server is running"),
        "{stderr}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

/// `bench --baseline` against a server it cannot reach used to hang:
/// redis-benchmark waits for ever for a refused connection.
#[test]
fn a_bench_that_reached_no_server_skips_its_baselines() {
    let started = std::time::Instant::now();
    let out = run_env(
        "redis://127.0.0.1:1?connect_timeout=300ms",
        &[
            "bench",
            "--workload",
            "incr",
            "--processes",
            "1",
            "--concurrency",
            "2",
            "--duration",
            "300ms",
            "--baseline",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("baselines skipped"), "{stderr}");
    assert!(started.elapsed() < std::time::Duration::from_secs(20));
}

#[test]
fn operator_commands_on_redis() {
    support::operator_commands(&redis_url(), &unique("cli-test:ops"));
}

/// Issue 12 item 11: one `verify` left the fencing counters of its locks
/// behind (DBSIZE 7 on a live Redis). On an otherwise unused, flushed
/// database it must leave it empty.
#[test]
fn verify_leaves_an_empty_database_empty() {
    let url = redis_url();
    assert!(!url.contains('?'), "{url}");
    let url = format!("{}/9", url.trim_end_matches('/'));
    let mut con = redis::Client::open(url.as_str())
        .unwrap()
        .get_connection()
        .unwrap();
    redis::cmd("FLUSHDB").query::<()>(&mut con).unwrap();
    verify_report(&url);
    let left: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    let left: Vec<String> = left
        .iter()
        .map(|k| String::from_utf8_lossy(k).replace('\0', "\\0"))
        .collect();
    assert!(left.is_empty(), "verify left {} keys: {left:?}", left.len());
}

#[test]
fn verify_leaves_nothing_behind_on_a_redis_cluster() {
    let cluster = url("ATOMIC_STORE_TEST_REDIS_CLUSTER_URL");
    let prefix = unique("verify-cleanup");
    verify_report(&with_param(&cluster, "prefix", &prefix));
    let nodes = cluster
        .split_once("://")
        .unwrap()
        .1
        .split('?')
        .next()
        .unwrap();
    let mut left = Vec::new();
    for node in nodes.split(',') {
        let mut con = redis::Client::open(format!("redis://{node}"))
            .unwrap()
            .get_connection()
            .unwrap();
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg(format!("*{prefix}:*"))
            .query(&mut con)
            .unwrap();
        left.extend(
            keys.iter()
                .map(|k| String::from_utf8_lossy(k).replace('\0', "\\0")),
        );
    }
    assert!(left.is_empty(), "verify left {} keys: {left:?}", left.len());
}

#[test]
fn lock_contended_bench_across_processes_on_redis() {
    support::lock_contended_across_processes(&redis_url());
}

#[test]
fn permits_contended_bench_across_processes_on_redis() {
    support::permits_contended_across_processes(&redis_url());
}

/// Failed operations leave a run unverified: before, a bench whose every
/// operation failed (no server) reported `verified: true` ("every value
/// from 1 to 0 handed out exactly once").
#[test]
fn a_bench_whose_operations_failed_is_not_verified() {
    let out = run_env(
        "redis://127.0.0.1:1?connect_timeout=300ms",
        &[
            "--json",
            "bench",
            "--workload",
            "incr",
            "--processes",
            "2",
            "--duration",
            "300ms",
        ],
    );
    let report = json(&out);
    assert_eq!(out.status.code(), Some(1), "{report}");
    assert!(report["errors"].as_u64().unwrap() > 0, "{report}");
    assert_eq!(report["verified"], false, "{report}");
    assert!(
        report["verification"]
            .as_str()
            .unwrap()
            .contains("nothing was verified"),
        "{report}"
    );
}

/// Issue 20, leftovers: `bench --baseline` left `bench:baseline:*` keys
/// (up to 100,000 of them for `incr-many`) with no TTL, and the lock
/// workloads left fencing counters. After each run, nothing of the bench
/// is left under a fresh prefix, nor under the baseline's raw keys.
#[test]
fn bench_and_its_baseline_leave_no_keys_on_redis() {
    // Database 5, which no other test uses: other tests' baselines run at
    // the same time and write bench:baseline:* keys of their own.
    let server = format!("{}/5", redis_url());
    let prefix = unique("bench-leftovers");
    let url = with_param(&server, "prefix", &prefix);
    let raw = with_param(&server, "prefix", "");
    for workload in ["incr-many", "lock", "lock-contended", "permits", "nonce"] {
        let mut args = vec!["--json", "bench", "--workload", workload];
        if workload == "permits" {
            args = vec![
                "--json",
                "bench",
                "--workload",
                "lock-contended",
                "--permits",
                "2",
            ];
        }
        args.extend([
            "--processes",
            "1",
            "--concurrency",
            "4",
            "--duration",
            "300ms",
        ]);
        if workload == "incr-many" || workload == "nonce" {
            args.push("--baseline");
        }
        let out = run_env(&url, &args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{workload}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let args = ["--json", "keys", "--prefix", &prefix, "--limit", "1000"];
        let left = json(&run_env(&raw, &args));
        assert_eq!(left["count"], 0, "{workload} left {left}");
        let left = json(&run_env(
            &raw,
            &["--json", "keys", "--prefix", "bench:baseline:"],
        ));
        assert_eq!(left["count"], 0, "{workload}'s baseline left {left}");
    }
}

#[test]
fn a_db_index_out_of_range_is_a_configuration_error() {
    let url = format!("{}/99", redis_url());
    support::refused_settings_are_a_configuration_error(&url, "DB index is out of range");
}
