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
