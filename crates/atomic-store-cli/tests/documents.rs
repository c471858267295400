//! The real binary against DynamoDB (dynalite) and MongoDB (nx-27017),
//! started by `scripts/test`: 8 processes assigning nonces, and the bench
//! baselines.
#![cfg(all(feature = "dynamodb", feature = "mongodb"))]

mod support;

use support::{bench_reports_one_raw_baseline, eight_processes_assign_nonces, url};

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
