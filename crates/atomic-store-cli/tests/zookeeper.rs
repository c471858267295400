//! The real binary against the ZooKeeper servers `scripts/test` starts: 8
//! processes assigning nonces, the bench baseline, lock-contended bench
//! across processes, and `verify` leaving nothing behind.
#![cfg(feature = "zookeeper")]

mod support;

use support::{
    bench_reports_one_raw_baseline, block_on, eight_processes_assign_nonces,
    lock_contended_across_processes, unique, url, verify_report, with_param,
};

#[test]
fn eight_processes_assign_nonces_through_zookeeper() {
    eight_processes_assign_nonces(&url("ATOMIC_STORE_TEST_ZK_ENSEMBLE_URL"), 25);
}

#[test]
fn bench_against_the_raw_client_baseline_on_zookeeper() {
    bench_reports_one_raw_baseline(&url("ATOMIC_STORE_TEST_ZK_URL"), "incr");
}

/// ZooKeeper keeps a tombstone node for every key ever written (60 after
/// one `verify`, before the fix).
#[test]
fn verify_leaves_no_nodes_behind_on_zookeeper() {
    let url = url("ATOMIC_STORE_TEST_ZK_URL");
    let prefix = unique("verify-cleanup");
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
fn lock_contended_bench_across_processes_on_zookeeper() {
    lock_contended_across_processes(&url("ATOMIC_STORE_TEST_ZK_URL"));
}

#[test]
fn permits_contended_bench_across_processes_on_zookeeper() {
    support::permits_contended_across_processes(&url("ATOMIC_STORE_TEST_ZK_URL"));
}

#[test]
fn a_missing_chroot_is_a_configuration_error() {
    let url = format!(
        "{}/{}",
        url("ATOMIC_STORE_TEST_ZK_URL"),
        unique("no-such-chroot")
    );
    support::refused_settings_are_a_configuration_error(&url, "chroot");
}

/// Issue 20: inspect and `unlock --force` on ZooKeeper, whose zxid exists
/// for every node.
#[test]
fn operator_commands_on_zookeeper() {
    support::operator_commands(&url("ATOMIC_STORE_TEST_ZK_URL"), &unique("cli-ops"));
}

/// Issue 20: a ZooKeeper out of reach failed after 30 s (three attempts of
/// 10 s each); connecting now has one budget, `connect_timeout`, per call.
#[test]
fn an_unreachable_zookeeper_fails_within_the_connect_timeout() {
    let started = std::time::Instant::now();
    // The default connect_timeout (2 s), as an operator would type it.
    let out = support::run("zk://127.0.0.1:1", &["--json", "get", "k"]);
    let took = started.elapsed();
    let v = support::json(&out);
    let kind = v["error"]["kind"].as_str();
    assert_eq!((support::code(&out), kind), (1, Some("unavailable")), "{v}");
    // The budget plus process start-up and retry pauses, far below 30 s.
    assert!(took < std::time::Duration::from_secs(5), "took {took:?}");
}
