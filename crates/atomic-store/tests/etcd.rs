//! The etcd backend against a single member and a 3-member cluster started
//! by `scripts/test`, and a cluster of the test's own for the fault test.
#![cfg(feature = "etcd")]

mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomic_store::conformance::{self, Store};
use atomic_store::etcd::EtcdStore;
use atomic_store::{ErrorKind, LockId, ReleaseOutcome};
use support::{server_url, OwnEtcdCluster, ResettingProxy};

fn single() -> String {
    server_url("ATOMIC_STORE_TEST_ETCD_URL")
}

fn endpoint(url: &str) -> String {
    format!(
        "http://{}",
        url.trim_start_matches("etcd://").split(',').next().unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_single_member() {
    let store = atomic_store::open(&single()).unwrap();
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_three_member_cluster_through_box_dyn() {
    let boxed: Box<dyn atomic_store::AtomicStore> =
        Box::new(EtcdStore::open(&server_url("ATOMIC_STORE_TEST_ETCD_CLUSTER_URL")).unwrap());
    let store: Store = Arc::new(boxed);
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefixes_are_isolated() {
    let a = atomic_store::open(&format!("{}?prefix=iso-a", single())).unwrap();
    let b = atomic_store::open(&format!("{}?prefix=iso-b", single())).unwrap();
    conformance::prefixes_are_isolated(&a, &b).await.unwrap();
}

#[tokio::test]
async fn a_dead_endpoint_in_the_list_is_skipped() {
    let dead = support::free_port();
    let url = format!(
        "etcd://127.0.0.1:{dead},{}?connect_timeout=500ms",
        single().trim_start_matches("etcd://")
    );
    let store = atomic_store::open(&url).unwrap();
    let key = format!("failover-{}", LockId::generate());
    assert_eq!(store.incr(&key).await.unwrap(), 1);
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn overwritten_and_deleted_keys_leave_no_lease_behind() {
    let mut raw = etcd_client::Client::connect([endpoint(&single())], None)
        .await
        .unwrap();
    let store = atomic_store::open(&single()).unwrap();
    let key = format!("lease-{}", LockId::generate());
    let leases = |resp: etcd_client::LeaseLeasesResponse| -> HashSet<i64> {
        resp.leases().iter().map(|l| l.id()).collect()
    };
    let before = leases(raw.leases().await.unwrap());
    store
        .set_with_ttl(&key, "a", Duration::from_secs(3600))
        .await
        .unwrap();
    store
        .set_with_ttl(&key, "b", Duration::from_secs(3600))
        .await
        .unwrap();
    let lock_key = format!("{key}-lock");
    let lock = store
        .acquire_lock(&lock_key, Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    store
        .extend_lock(&lock_key, &lock.id, Duration::from_secs(7200))
        .await
        .unwrap();
    let during = leases(raw.leases().await.unwrap());
    assert_eq!(
        during.difference(&before).count(),
        2,
        "one lease per live key"
    );
    store.set(&key, "no ttl").await.unwrap();
    assert_eq!(
        store.release_lock(&lock_key, &lock.id).await.unwrap(),
        ReleaseOutcome::Released
    );
    let after = leases(raw.leases().await.unwrap());
    assert!(
        after.difference(&before).next().is_none(),
        "leases left behind: {:?}",
        after.difference(&before).collect::<Vec<_>>()
    );
    assert!(store.delete(&key).await.unwrap());
}

#[tokio::test]
async fn fencing_tokens_are_etcd_revisions() {
    let store = atomic_store::open(&single()).unwrap();
    let key = format!("revision-{}", LockId::generate());
    let lock = store
        .acquire_lock(&key, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let mut raw = etcd_client::Client::connect([endpoint(&single())], None)
        .await
        .unwrap();
    let resp = raw.get(format!("atomic:{key}"), None).await.unwrap();
    assert_eq!(resp.kvs()[0].create_revision() as u64, lock.fencing_token);
    assert_eq!(
        store.inspect(&key).await.unwrap().fencing_token,
        Some(lock.fencing_token)
    );
    store.release_lock(&key, &lock.id).await.unwrap();
}

/// Kill the leader of a 3-member cluster while 8 tasks run incr and lock
/// loops: typed errors or success, work resumes, no value twice, never two
/// holders of one lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_loses_nothing_and_breaks_no_lock() {
    let mut cluster = OwnEtcdCluster::start();
    let url = format!("{}?timeout=2s&connect_timeout=500ms", cluster.url());
    let store: Store = atomic_store::open(&url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.incr("warmup").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the test cluster did not come up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kill_the_leader = async {
        let mut leader = None;
        for (i, port) in cluster.client_ports.iter().enumerate() {
            let mut c = etcd_client::Client::connect([format!("http://127.0.0.1:{port}")], None)
                .await
                .unwrap();
            let status = c.status().await.unwrap();
            if status.header().unwrap().member_id() == status.leader() {
                leader = Some(i);
            }
        }
        cluster.kill(leader.expect("a leader"));
    };
    support::incr_and_lock_loops_across_a_kill(&store, kill_the_leader, Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn tls_with_the_right_ca_works_and_without_it_fails() {
    let url = server_url("ATOMIC_STORE_TEST_ETCDS_URL");
    assert!(url.starts_with("etcds://"));
    let store = atomic_store::open(&url).unwrap();
    let key = format!("tls-{}", LockId::generate());
    assert_eq!(store.incr(&key).await.unwrap(), 1);
    let lock = store
        .acquire_lock(&format!("{key}-lock"), Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .release_lock(&format!("{key}-lock"), &lock.id)
            .await
            .unwrap(),
        atomic_store::ReleaseOutcome::Released
    );
    assert!(store.delete(&key).await.unwrap());
    // Without the CA, the self-made certificate is not trusted.
    let untrusted = atomic_store::open(&format!(
        "{}?connect_timeout=1s",
        url.split('?').next().unwrap()
    ))
    .unwrap();
    let err = untrusted.get(&key).await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Unavailable | ErrorKind::OutcomeUnknown
        ),
        "{err}"
    );
}

/// A connection reset with requests in flight (what a dying server does):
/// reads are retried, an `incr` is never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_connection_is_a_lost_reply() {
    let (proxy, url) = ResettingProxy::in_front_of(&single()).await;
    let store = atomic_store::open(&format!("{url}?timeout=3s&prefix=reset")).unwrap();
    support::resets_are_lost_replies(&store, &proxy).await;
}
