//! The real binary against etcd and ZooKeeper (started by `scripts/test`):
//! 8 processes assigning nonces, and verify.
#![cfg(all(feature = "etcd", feature = "zookeeper"))]

use std::process::{Command, Stdio};

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_atomic-store");

fn url(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run the tests through scripts/test"))
}

fn eight_processes_assign_nonces(url: &str) {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let key = format!("nonce-mp-{nanos}");
    let children: Vec<_> = (0..8)
        .map(|_| {
            Command::new(BIN)
                .env("ATOMIC_STORE_URL", url)
                .args(["--json", "nonce", &key, "--pending", "0", "--count", "25"])
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
    assert_eq!(nonces, (0..200).collect::<Vec<u64>>());
}

#[test]
fn eight_processes_assign_nonces_through_etcd() {
    eight_processes_assign_nonces(&url("ATOMIC_STORE_TEST_ETCD_CLUSTER_URL"));
}

#[test]
fn eight_processes_assign_nonces_through_zookeeper() {
    eight_processes_assign_nonces(&url("ATOMIC_STORE_TEST_ZK_ENSEMBLE_URL"));
}

#[test]
fn bench_against_the_raw_client_baseline() {
    for var in ["ATOMIC_STORE_TEST_ETCD_URL", "ATOMIC_STORE_TEST_ZK_URL"] {
        let out = Command::new(BIN)
            .env("ATOMIC_STORE_URL", url(var))
            .args([
                "--json",
                "bench",
                "--workload",
                "incr",
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
            "{var}: {}",
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
    }
}
