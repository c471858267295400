//! The real binary against MongoDB (nx-27017), started by `scripts/test`: 8
//! processes assigning nonces, the bench baseline, lock-contended bench
//! across processes, and `verify` leaving nothing behind.
#![cfg(feature = "mongodb")]

mod support;

use support::{
    bench_reports_one_raw_baseline, block_on, eight_processes_assign_nonces,
    lock_contended_across_processes, unique, url, verify_report, with_param,
};

#[test]
fn eight_processes_assign_nonces_through_mongodb() {
    eight_processes_assign_nonces(&url("ATOMIC_STORE_TEST_MONGODB_URL"), 25);
}

#[test]
fn bench_against_the_raw_driver_baseline_on_mongodb() {
    for workload in ["incr", "lock", "nonce"] {
        bench_reports_one_raw_baseline(&url("ATOMIC_STORE_TEST_MONGODB_URL"), workload);
    }
}

/// MongoDB kept the documents of lock keys, for their fencing counters.
#[test]
fn verify_leaves_no_documents_behind_on_mongodb() {
    let url = with_param(
        &url("ATOMIC_STORE_TEST_MONGODB_URL"),
        "prefix",
        &unique("verify-cleanup"),
    );
    let prefix = url.rsplit("prefix=").next().unwrap().to_owned() + ":";
    verify_report(&url);
    let left = block_on(async {
        let store = atomic_store::mongodb::MongoStore::open(&url).unwrap();
        let collection = store.driver_collection().await.unwrap();
        let filter = mongodb::bson::doc! {"_id": {"$regex": format!("^{prefix}")}};
        collection.count_documents(filter).await.unwrap()
    });
    assert_eq!(left, 0, "verify left documents behind");
}

#[test]
fn lock_contended_bench_across_processes_on_mongodb() {
    lock_contended_across_processes(&url("ATOMIC_STORE_TEST_MONGODB_URL"));
}
