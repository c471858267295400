//! The real binary against etcd and ZooKeeper (started by `scripts/test`):
//! 8 processes assigning nonces, the bench baseline, lock-contended bench
//! across processes, and `verify` leaving nothing behind.
#![cfg(all(feature = "etcd", feature = "zookeeper"))]

mod support;

use support::{
    bench_reports_one_raw_baseline, eight_processes_assign_nonces, unique_prefix, url,
    verify_report, with_param,
};

#[test]
fn eight_processes_assign_nonces_through_etcd() {
    eight_processes_assign_nonces(&url("ATOMIC_STORE_TEST_ETCD_CLUSTER_URL"), 25);
}

#[test]
fn eight_processes_assign_nonces_through_zookeeper() {
    eight_processes_assign_nonces(&url("ATOMIC_STORE_TEST_ZK_ENSEMBLE_URL"), 25);
}

#[test]
fn bench_against_the_raw_client_baseline() {
    for var in ["ATOMIC_STORE_TEST_ETCD_URL", "ATOMIC_STORE_TEST_ZK_URL"] {
        bench_reports_one_raw_baseline(&url(var), "incr");
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

/// Issue 12 item 11: `verify` removes everything it created. etcd keeps
/// nothing after a delete; this shows that stays true.
#[test]
fn verify_leaves_no_keys_behind_on_etcd() {
    let url = url("ATOMIC_STORE_TEST_ETCD_URL");
    let prefix = unique_prefix("verify-cleanup");
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

/// ZooKeeper keeps a tombstone node for every key ever written (60 after
/// one `verify`, before the fix).
#[test]
fn verify_leaves_no_nodes_behind_on_zookeeper() {
    let url = url("ATOMIC_STORE_TEST_ZK_URL");
    let prefix = unique_prefix("verify-cleanup");
    verify_report(&with_param(&url, "prefix", &prefix));
    let hosts = url.split_once("://").unwrap().1.to_owned();
    let ours = atomic_store::zookeeper::encode_name(&format!("{prefix}:"));
    let left = block_on(async {
        let client = zookeeper_client::Client::connect(&hosts).await.unwrap();
        let children = client.list_children("/atomic-store").await.unwrap();
        children
            .into_iter()
            .filter(|name| name.starts_with(&ours))
            .collect::<Vec<_>>()
    });
    assert!(
        left.is_empty(),
        "verify left {} nodes: {left:?}",
        left.len()
    );
}

#[test]
fn lock_contended_bench_across_processes_on_etcd_and_zookeeper() {
    support::lock_contended_across_processes(&url("ATOMIC_STORE_TEST_ETCD_URL"));
    support::lock_contended_across_processes(&url("ATOMIC_STORE_TEST_ZK_URL"));
}
