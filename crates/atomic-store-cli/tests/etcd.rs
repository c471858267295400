//! The real binary against the etcd servers `scripts/test` starts: 8
//! processes assigning nonces, the bench baseline, lock-contended bench
//! across processes, and `verify` leaving nothing behind.
#![cfg(feature = "etcd")]

mod support;

use support::{
    bench_reports_one_raw_baseline, block_on, eight_processes_assign_nonces,
    lock_contended_across_processes, unique, url, verify_report, with_param,
};

#[test]
fn eight_processes_assign_nonces_through_etcd() {
    eight_processes_assign_nonces(&url("ATOMIC_STORE_TEST_ETCD_CLUSTER_URL"), 25);
}

#[test]
fn bench_against_the_raw_client_baseline_on_etcd() {
    bench_reports_one_raw_baseline(&url("ATOMIC_STORE_TEST_ETCD_URL"), "incr");
}

/// Issue 12 item 11: `verify` removes everything it created. etcd keeps
/// nothing after a delete; this shows that stays true.
#[test]
fn verify_leaves_no_keys_behind_on_etcd() {
    let url = url("ATOMIC_STORE_TEST_ETCD_URL");
    let prefix = unique("verify-cleanup");
    verify_report(&with_param(&url, "prefix", &prefix));
    let endpoint = format!("http://{}", url.split_once("://").unwrap().1);
    let left = block_on(async {
        let mut client = etcd_client::Client::connect([endpoint], None)
            .await
            .unwrap();
        let options = etcd_client::GetOptions::new()
            .with_prefix()
            .with_keys_only();
        let found = client
            .get(format!("{prefix}:"), Some(options))
            .await
            .unwrap();
        found
            .kvs()
            .iter()
            .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
            .collect::<Vec<_>>()
    });
    assert!(left.is_empty(), "verify left {} keys: {left:?}", left.len());
}

#[test]
fn lock_contended_bench_across_processes_on_etcd() {
    lock_contended_across_processes(&url("ATOMIC_STORE_TEST_ETCD_URL"));
}

#[test]
fn permits_contended_bench_across_processes_on_etcd() {
    support::permits_contended_across_processes(&url("ATOMIC_STORE_TEST_ETCD_URL"));
}

/// Issue 20: inspect and `unlock --force` on etcd, whose revision counter
/// exists for every key and whose expiry counts whole seconds.
#[test]
fn operator_commands_on_etcd() {
    support::operator_commands(&url("ATOMIC_STORE_TEST_ETCD_URL"), &unique("cli-ops"));
}
