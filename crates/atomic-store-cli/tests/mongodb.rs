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

#[test]
fn permits_contended_bench_across_processes_on_mongodb() {
    support::permits_contended_across_processes(&url("ATOMIC_STORE_TEST_MONGODB_URL"));
}

/// The baseline sends the store's own requests (`*_request`): sent bare,
/// they act on the very documents the store's operations read and write.
#[test]
fn the_baselines_requests_act_like_the_stores_operations_on_mongodb() {
    use atomic_store::{AtomicStore, LockId};
    let url = with_param(
        &url("ATOMIC_STORE_TEST_MONGODB_URL"),
        "prefix",
        &unique("bench-requests"),
    );
    block_on(async {
        let store = atomic_store::mongodb::MongoStore::open(&url).unwrap();
        // The store writes Int64; the test server narrows small ones.
        let number = |d: Option<mongodb::bson::Document>| match d.unwrap().get("n") {
            Some(mongodb::bson::Bson::Int64(n)) => *n,
            Some(mongodb::bson::Bson::Int32(n)) => i64::from(*n),
            other => panic!("no counter: {other:?}"),
        };
        // The common path changes existing documents only.
        assert!(store
            .incr_request("c")
            .await
            .unwrap()
            .await
            .unwrap()
            .is_none());
        assert_eq!(store.incr("c").await.unwrap(), 1);
        assert_eq!(
            number(store.incr_request("c").await.unwrap().await.unwrap()),
            2
        );
        assert_eq!(store.incr("c").await.unwrap(), 3);

        assert_eq!(store.assign_nonce("n", 7).await.unwrap(), 7);
        let request = store.assign_nonce_request("n", 7).await.unwrap();
        assert_eq!(number(request.await.unwrap()), 8);
        assert_eq!(store.assign_nonce("n", 7).await.unwrap(), 9);

        let ttl = std::time::Duration::from_secs(30);
        let first = store.acquire_lock("l", ttl).await.unwrap().unwrap();
        store.release_lock("l", &first.id).await.unwrap();
        let id = LockId::generate();
        let request = store.acquire_lock_request("l", &id, ttl).await.unwrap();
        assert!(request.await.unwrap().is_some());
        assert_eq!(store.get("l").await.unwrap().as_deref(), Some(id.as_str()));
        assert!(store.acquire_lock("l", ttl).await.unwrap().is_none());
        let request = store.release_lock_request("l", &id).await.unwrap();
        assert!(request.await.unwrap().is_some());
        let after = store.acquire_lock("l", ttl).await.unwrap().unwrap();
        assert!(after.fencing_token > first.fencing_token);
    });
}

/// Issue 20: a MongoDB out of reach printed the driver's whole topology,
/// labels and empty fields; now the reason in one short line.
#[test]
fn an_unreachable_mongodb_is_reported_in_one_short_line() {
    let out = support::run("mongodb://127.0.0.1:1/db?timeout=2s", &["get", "k"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(support::code(&out), 1, "{stderr}");
    assert!(stderr.contains("Connection refused"), "{stderr}");
    for dump in ["Topology:", "labels:", "source: None", "server response"] {
        assert!(!stderr.contains(dump), "{stderr}");
    }
}
