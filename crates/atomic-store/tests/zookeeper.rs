//! The ZooKeeper backend against a standalone server and a 3-server
//! ensemble started by `scripts/test`, and an ensemble of the test's own
//! for the fault test.
#![cfg(feature = "zookeeper")]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomic_store::conformance::{self, Store};
use atomic_store::zookeeper::{encode_name, ZookeeperStore};
use atomic_store::{ErrorKind, LockId};
use support::{server_url, OwnZkEnsemble, ResettingProxy};

fn standalone() -> String {
    server_url("ATOMIC_STORE_TEST_ZK_URL")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_standalone() {
    let store = atomic_store::open(&standalone()).unwrap();
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_three_server_ensemble_through_box_dyn() {
    let boxed: Box<dyn atomic_store::AtomicStore> =
        Box::new(ZookeeperStore::open(&server_url("ATOMIC_STORE_TEST_ZK_ENSEMBLE_URL")).unwrap());
    let store: Store = Arc::new(boxed);
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefixes_are_isolated() {
    let a = atomic_store::open(&format!("{}?prefix=iso-a", standalone())).unwrap();
    let b = atomic_store::open(&format!("{}?prefix=iso-b", standalone())).unwrap();
    conformance::prefixes_are_isolated(&a, &b).await.unwrap();
}

/// Keys map to one znode each, under the chroot, by the documented encoding.
#[tokio::test]
async fn keys_are_znodes_under_the_chroot() {
    let run = LockId::generate().as_str()[..8].to_owned();
    let chroot = format!("/chroot-{run}");
    let raw = zookeeper_client::Client::connect(&standalone().replace("zk://", ""))
        .await
        .unwrap();
    let open =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    raw.create(&chroot, &[], &open).await.unwrap();
    let store = atomic_store::open(&format!("{}{chroot}", standalone())).unwrap();
    for key in ["..", "zookeeper", "a/b", "ünï"] {
        store.set(key, "v").await.unwrap();
        let path = format!(
            "{chroot}/atomic-store/{}",
            encode_name(&format!("atomic:{key}"))
        );
        let (data, _) = raw.get_data(&path).await.unwrap();
        assert!(data.ends_with(b"v"), "{path}");
    }
    let listed: HashSet<String> = store.keys("", 10).await.unwrap().into_iter().collect();
    assert_eq!(
        listed,
        ["..", "zookeeper", "a/b", "ünï"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

/// A connection reset with requests in flight (what a dying server does).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_connection_is_a_lost_reply() {
    let (proxy, url) = ResettingProxy::in_front_of(&standalone()).await;
    let url = format!("{url}?timeout=3s&session_timeout=10s&prefix=reset");
    support::resets_are_lost_replies(&atomic_store::open(&url).unwrap(), &proxy).await;
}

/// Kill one server of a 3-server ensemble (the one the client is most
/// likely on, then each in turn is irrelevant: any loss must be survived)
/// while 8 tasks run incr and lock loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_server_loses_nothing_and_breaks_no_lock() {
    let mut ensemble = OwnZkEnsemble::start();
    let url = format!("{}?timeout=3s&session_timeout=6s", ensemble.url());
    let store: Store = atomic_store::open(&url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.incr("warmup").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the test ensemble did not come up"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    support::incr_and_lock_loops_across_a_kill(
        &store,
        async { ensemble.kill(0) },
        Duration::from_secs(6),
    )
    .await;
}

/// Stop the whole ensemble for longer than the session timeout: the session
/// expires, and the store opens a new one by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_session_is_replaced() {
    let mut ensemble = OwnZkEnsemble::start();
    let url = format!("{}?timeout=2s&session_timeout=2s", ensemble.url());
    let store = atomic_store::open(&url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.incr("n").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the test ensemble did not come up"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for i in 0..3 {
        ensemble.kill(i);
    }
    let err = store.incr("n").await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Unavailable | ErrorKind::OutcomeUnknown
        ),
        "{err}"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    for i in 0..3 {
        ensemble.restart(i);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let value = loop {
        match store.incr("n").await {
            Ok(v) => break v,
            Err(e) => {
                assert!(Instant::now() < deadline, "the store stayed unusable: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    assert!(value >= 2, "the counter restarted: {value}");
}

/// A lock is taken over only a margin after its deadline: 250 ms plus the
/// taker's clock error, and the holder's deadline is at most one error
/// (under 125 ms) early, so the takeover cannot come before the acquire
/// began + TTL + 125 ms. (There was no margin at all.) Holder and taker
/// are separate stores, each with its own estimate of the server's clock.
#[tokio::test]
async fn an_expired_lock_is_taken_over_only_after_the_margin() {
    let holder = atomic_store::open(&standalone()).unwrap();
    let taker = atomic_store::open(&standalone()).unwrap();
    let key = format!("margin-{}", LockId::generate());
    taker.get(&key).await.unwrap();
    let ttl = Duration::from_millis(500);
    let started = Instant::now();
    holder.acquire_lock(&key, ttl).await.unwrap().unwrap();
    let give_up = started + ttl + Duration::from_secs(5);
    let taken_after = loop {
        if taker.acquire_lock(&key, ttl).await.unwrap().is_some() {
            break started.elapsed();
        }
        assert!(Instant::now() < give_up, "never taken over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        taken_after >= ttl + Duration::from_millis(125),
        "taken over {taken_after:?} after the acquire began, with a TTL of {ttl:?}"
    );
}
