//! The real binary against DynamoDB (dynalite), started by `scripts/test`: 8
//! processes assigning nonces, the bench baseline, lock-contended bench
//! across processes, and `verify` leaving nothing behind.
#![cfg(feature = "dynamodb")]

mod support;

use support::{
    bench_reports_one_raw_baseline, block_on, eight_processes_assign_nonces,
    lock_contended_across_processes, unique, url, verify_report, with_param,
};

#[test]
fn eight_processes_assign_nonces_through_dynamodb() {
    eight_processes_assign_nonces(&url("ATOMIC_STORE_TEST_DYNAMODB_URL"), 25);
}

#[test]
fn bench_against_the_raw_driver_baseline_on_dynamodb() {
    for workload in ["incr", "lock", "nonce"] {
        bench_reports_one_raw_baseline(&url("ATOMIC_STORE_TEST_DYNAMODB_URL"), workload);
    }
}

/// Issue 12 item 11: `verify` removes everything it created. DynamoDB kept
/// an emptied item for every key (60 after one run, before the fix).
#[test]
fn verify_leaves_no_items_behind_on_dynamodb() {
    let url = with_param(
        &url("ATOMIC_STORE_TEST_DYNAMODB_URL"),
        "prefix",
        &unique("verify-cleanup"),
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

#[test]
fn lock_contended_bench_across_processes_on_dynamodb() {
    lock_contended_across_processes(&url("ATOMIC_STORE_TEST_DYNAMODB_URL"));
}

#[test]
fn permits_contended_bench_across_processes_on_dynamodb() {
    support::permits_contended_across_processes(&url("ATOMIC_STORE_TEST_DYNAMODB_URL"));
}

/// The baseline sends the store's own requests (`*_request`): sent bare,
/// they act on the very items the store's operations read and write.
#[test]
fn the_baselines_requests_act_like_the_stores_operations_on_dynamodb() {
    use atomic_store::{AtomicStore, LockId};
    use aws_sdk_dynamodb::types::AttributeValue;
    let url = with_param(
        &url("ATOMIC_STORE_TEST_DYNAMODB_URL"),
        "prefix",
        &unique("bench-requests"),
    );
    block_on(async {
        let store = atomic_store::dynamodb::DynamoStore::open(&url).unwrap();
        let number = |out: aws_sdk_dynamodb::operation::update_item::UpdateItemOutput| match out
            .attributes
            .unwrap()
            .get("n")
        {
            Some(AttributeValue::N(n)) => n.parse::<i64>().unwrap(),
            other => panic!("no counter in {other:?}"),
        };
        // A missing counter starts at one.
        for want in [1, 2] {
            let out = store.incr_request("c").await.unwrap().send().await.unwrap();
            assert_eq!(number(out), want);
        }
        assert_eq!(store.incr("c").await.unwrap(), 3);

        let out = store
            .assign_nonce_request("n", 7)
            .await
            .unwrap()
            .send()
            .await
            .unwrap();
        assert_eq!(number(out), 7);
        assert_eq!(store.assign_nonce("n", 7).await.unwrap(), 8);

        let ttl = std::time::Duration::from_secs(30);
        let id = LockId::generate();
        let request = store.acquire_lock_request("l", &id, ttl).await.unwrap();
        request.send().await.unwrap();
        assert_eq!(store.get("l").await.unwrap().as_deref(), Some(id.as_str()));
        assert!(store.acquire_lock("l", ttl).await.unwrap().is_none());
        let request = store.release_lock_request("l", &id).await.unwrap();
        request.send().await.unwrap();
        assert!(store.acquire_lock("l", ttl).await.unwrap().is_some());
    });
}
