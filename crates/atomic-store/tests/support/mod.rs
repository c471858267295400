//! Helpers shared by the backend tests: URLs of the servers that
//! `scripts/test` starts, private server processes for fault tests, a fault
//! proxy, a linearizability checker, the fault harness, and deliberately
//! broken stores that show the checks catch what they claim to.
#![allow(dead_code, unused_imports)]

pub mod broken;
pub mod faults;
pub mod hooked;
#[cfg(feature = "nonce")]
pub mod leases;
pub mod lincheck;
pub mod proxy;
pub mod queue;
pub mod servers;

use std::net::TcpListener;

pub use faults::{
    incr_and_lock_loops_across_a_kill, incr_loops_across_a_restart, resets_are_lost_replies,
};
pub use proxy::{FaultProxy, Faults, Hold, ResettingProxy};
pub use servers::{OwnEtcdCluster, OwnRedis, OwnSentinelGroup, OwnServer, OwnZkEnsemble};

/// The URL of a test server, from the environment `scripts/test` sets up.
/// A missing URL fails the test: tests never skip silently.
pub fn server_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through scripts/test, which installs and starts the servers")
    })
}

/// The URL of the test server `scripts/test` started for `name`: `redis`,
/// `redis_cluster`, `rediss`, `postgres`, `pgbouncer`, `etcd`,
/// `etcd_cluster`, `etcds`, `zk`, `zk_ensemble`, `dynamodb` (dynalite),
/// `moto`, `mongodb`, `anvil`.
pub fn url(name: &str) -> String {
    server_url(&format!(
        "ATOMIC_STORE_TEST_{}_URL",
        name.to_ascii_uppercase()
    ))
}

/// The first `incr` of `key` on a server that was just started: its port
/// opens before it takes sessions, so "unavailable" is waited out (20 s
/// at most); any other answer is returned.
pub async fn first_incr_once_serving(store: &atomic_store::conformance::Store, key: &str) -> i64 {
    let mut first = store.incr(key).await;
    for _ in 0..100 {
        match &first {
            Err(e) if e.kind() == atomic_store::ErrorKind::Unavailable => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
                first = store.incr(key).await;
            }
            _ => break,
        }
    }
    first.unwrap()
}

/// `url` with more query parameters.
pub fn with_params(url: &str, params: &str) -> String {
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}{params}")
}

/// The conformance checks every backend's test file runs: the suite on
/// `url` through `open`, the suite on `boxed` through `Box<dyn AtomicStore>`
/// (another deployment or configuration of the backend), and prefix
/// isolation on `url`.
#[allow(unused_macros)] // files without a backend of their own do not call it
macro_rules! conformance_suite {
    (url: $url:expr, boxed: $boxed:expr $(,)?) => {
        support::conformance_suite!(url: $url, boxed: $boxed, not_in_boxed: []);
    };
    (url: $url:expr, boxed: $boxed:expr, not_in_boxed: [$($skip:literal),* $(,)?] $(,)?) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn conformance() {
            let store = atomic_store::open(&$url).unwrap();
            atomic_store::conformance::run_all(&store)
                .await
                .assert_passed();
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn conformance_through_box_dyn() {
            let boxed: Box<dyn atomic_store::AtomicStore> = Box::new($boxed);
            let store: atomic_store::conformance::Store = std::sync::Arc::new(boxed);
            let skip: &[&str] = &[$($skip),*];
            let all = atomic_store::conformance::checks();
            let checks: Vec<_> = all.iter().filter(|c| !skip.contains(&c.name)).collect();
            // Every name to skip is a real check, so a renamed check is not silently dropped.
            assert_eq!(checks.len() + skip.len(), all.len(), "{skip:?}");
            let mut failures = Vec::new();
            for check in checks {
                if let Err(e) = (check.run)(&store).await {
                    failures.push(format!("{}: {e}", check.name));
                }
            }
            assert!(failures.is_empty(), "{failures:#?}");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn prefixes_are_isolated() {
            let a = atomic_store::open(&crate::support::with_params(&$url, "prefix=iso-a")).unwrap();
            let b = atomic_store::open(&crate::support::with_params(&$url, "prefix=iso-b")).unwrap();
            atomic_store::conformance::prefixes_are_isolated(&a, &b)
                .await
                .unwrap();
        }
    };
}
pub(crate) use conformance_suite;

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}
