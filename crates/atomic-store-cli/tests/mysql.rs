//! The real binary against the MariaDB server `scripts/test` starts.
#![cfg(feature = "mysql")]

mod support;

use support::{bench_reports_one_raw_baseline, run_env, url};

fn mysql_url() -> String {
    url("ATOMIC_STORE_TEST_MYSQL_URL")
}

#[test]
fn eight_processes_assign_nonces_through_one_database_without_duplicates() {
    support::eight_processes_assign_nonces(&mysql_url(), 25);
}

#[test]
fn bench_with_the_bare_driver_baseline_and_verify() {
    let baseline = bench_reports_one_raw_baseline(&mysql_url(), "incr");
    assert!(baseline["name"]
        .as_str()
        .unwrap()
        .starts_with("bare mysql_async"));

    let out = run_env(&mysql_url(), &["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !stdout.contains("FAIL"), "{stdout}");
}
