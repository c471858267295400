//! The real binary against DynamoDB (dynalite) and MongoDB (nx-27017),
//! started by `scripts/test`: 8 processes assigning nonces, the bench
//! baselines, lock-contended bench across processes, and `verify` leaving
//! nothing behind.
#![cfg(all(feature = "dynamodb", feature = "mongodb"))]

mod support;

use support::{
    bench_reports_one_raw_baseline, eight_processes_assign_nonces, unique_prefix, url,
    verify_report, with_param,
};

#[test]
fn eight_processes_assign_nonces_through_dynamodb() {
    eight_processes_assign_nonces(&url("ATOMIC_STORE_TEST_DYNAMODB_URL"), 25);
}

#[test]
fn eight_processes_assign_nonces_through_mongodb() {
    eight_processes_assign_nonces(&url("ATOMIC_STORE_TEST_MONGODB_URL"), 25);
}

#[test]
fn bench_against_the_raw_driver_baseline() {
    for var in [
        "ATOMIC_STORE_TEST_DYNAMODB_URL",
        "ATOMIC_STORE_TEST_MONGODB_URL",
    ] {
        for workload in ["incr", "lock", "nonce"] {
            bench_reports_one_raw_baseline(&url(var), workload);
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

/// Issue 12 item 11: `verify` removes everything it created. DynamoDB kept
/// an emptied item for every key (60 after one run, before the fix).
#[test]
fn verify_leaves_no_items_behind_on_dynamodb() {
    let url = with_param(
        &url("ATOMIC_STORE_TEST_DYNAMODB_URL"),
        "prefix",
        &unique_prefix("verify-cleanup"),
    );
    let prefix = url.rsplit("prefix=").next().unwrap().to_owned() + ":";
    verify_report(&url);
    let left = block_on(async {
        let store = atomic_store::dynamodb::DynamoStore::open(&url).unwrap();
        let client = store.sdk_client().await.unwrap();
        let mut left = Vec::new();
        let mut start = None;
        loop {
            let page = client
                .scan()
                .table_name(store.table())
                .set_exclusive_start_key(start)
                .send()
                .await
                .unwrap();
            for item in page.items() {
                if let Some(Ok(k)) = item.get("k").map(|k| k.as_s()) {
                    if k.starts_with(&prefix) {
                        left.push(k.clone());
                    }
                }
            }
            start = page.last_evaluated_key().cloned();
            if start.is_none() {
                break left;
            }
        }
    });
    assert!(
        left.is_empty(),
        "verify left {} items: {left:?}",
        left.len()
    );
}

/// MongoDB kept the documents of lock keys, for their fencing counters.
#[test]
fn verify_leaves_no_documents_behind_on_mongodb() {
    let url = with_param(
        &url("ATOMIC_STORE_TEST_MONGODB_URL"),
        "prefix",
        &unique_prefix("verify-cleanup"),
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
fn lock_contended_bench_across_processes_on_dynamodb_and_mongodb() {
    support::lock_contended_across_processes(&url("ATOMIC_STORE_TEST_DYNAMODB_URL"));
    support::lock_contended_across_processes(&url("ATOMIC_STORE_TEST_MONGODB_URL"));
}
