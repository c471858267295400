//! The real binary against etcd and ZooKeeper (started by `scripts/test`):
//! 8 processes assigning nonces, and the bench baseline.
#![cfg(all(feature = "etcd", feature = "zookeeper"))]

mod support;

use support::{bench_reports_one_raw_baseline, eight_processes_assign_nonces, url};

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
