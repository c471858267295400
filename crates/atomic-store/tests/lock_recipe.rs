//! The lock recipe on every backend: mutual exclusion with 32 tasks,
//! fencing, fairness, the deadline, renewal and the loss signal.
//! (Exclusion across OS processes is tested through the CLI's
//! `lock-contended` bench workload.)

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atomic_store::lock::DistributedLock;
use atomic_store::{AtomicStore, ErrorKind, LockId, ReleaseOutcome};

type Store = Arc<dyn AtomicStore>;

fn key(name: &str) -> String {
    format!("lock-recipe:{}:{name}", &LockId::generate().as_str()[..10])
}

async fn exclusion_fencing_and_fairness(store: Store) {
    // A long turn timeout: a waiter starved of CPU on a loaded machine must
    // not lose its place, since this checks the order of live waiters.
    let lock = DistributedLock::new(Arc::clone(&store), key("mutex"), Duration::from_secs(10))
        .turn_timeout(Duration::from_secs(10));
    let inside = Arc::new(AtomicUsize::new(0));
    let order = Arc::new(Mutex::new(Vec::new()));
    let (tasks, rounds) = (32, 4);
    let mut handles = Vec::new();
    for task in 0..tasks {
        let (lock, inside, order) = (lock.clone(), Arc::clone(&inside), Arc::clone(&order));
        handles.push(tokio::spawn(async move {
            for _ in 0..rounds {
                let guard = lock.acquire(Duration::from_secs(60)).await.unwrap();
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                order.lock().unwrap().push((task, guard.fencing_token()));
                tokio::time::sleep(Duration::from_micros(300)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
            }
        }));
    }
    for h in handles {
        h.await.unwrap();
    }
    let order = order.lock().unwrap();
    assert_eq!(order.len(), tasks * rounds);
    assert!(
        order.windows(2).all(|w| w[0].1 < w[1].1),
        "fencing tokens did not rise"
    );
    // Turns are served in order: no task gets a second turn in a round
    // before another gets its first one. Jain's index over per-task
    // acquisitions in the first half of the run:
    let half = &order[..order.len() / 2];
    let mut per_task = vec![0f64; tasks];
    for (task, _) in half {
        per_task[*task] += 1.0;
    }
    let sum: f64 = per_task.iter().sum();
    let squares: f64 = per_task.iter().map(|x| x * x).sum();
    let jain = sum * sum / (tasks as f64 * squares);
    assert!(
        jain >= 0.9,
        "Jain's fairness index {jain:.2} over the first half: {per_task:?}"
    );
}

async fn deadline_is_honoured(store: Store) {
    let k = key("deadline");
    let lock = DistributedLock::new(Arc::clone(&store), k, Duration::from_secs(10));
    let holder = lock.acquire(Duration::from_secs(5)).await.unwrap();
    let started = Instant::now();
    let err = lock.acquire(Duration::from_millis(300)).await.unwrap_err();
    let waited = started.elapsed();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{err}");
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    holder.release().await.unwrap();
    // The abandoned ticket does not block the next waiter.
    let started = Instant::now();
    let next = lock.acquire(Duration::from_secs(5)).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    next.release().await.unwrap();
}

async fn renewal_keeps_the_lock_past_several_ttls(store: Store) {
    let k = key("renewed");
    let ttl = Duration::from_millis(900).max(store.capabilities().ttl_resolution * 3);
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), ttl).auto_renew(true);
    let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
    tokio::time::sleep(ttl * 3).await;
    assert!(!guard.is_lost());
    assert_eq!(
        store.get(&k).await.unwrap().as_deref(),
        Some(guard.id().as_str())
    );
    assert!(store.acquire_lock(&k, ttl).await.unwrap().is_none());
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::Released);
}

async fn loss_signal_fires_before_expiry_and_on_theft(store: Store) {
    // Without renewal: the signal fires before the TTL runs out.
    let ttl = Duration::from_millis(900).max(store.capabilities().ttl_resolution * 3);
    let k = key("expiring");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), ttl);
    let started = Instant::now();
    let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
    guard.lost().cancelled().await;
    assert!(
        started.elapsed() < ttl,
        "signal after the TTL: {:?}",
        started.elapsed()
    );
    assert_eq!(
        store.get(&k).await.unwrap().as_deref(),
        Some(guard.id().as_str()),
        "fired too early to be useful?"
    );
    drop(guard.release().await);

    // With renewal: the lock is stolen after it expired; the next extension
    // sees another holder and the signal fires.
    let k = key("stolen");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), ttl).auto_renew(true);
    let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
    store.delete(&k).await.unwrap(); // as if it had expired
    let thief = store
        .acquire_lock(&k, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    tokio::time::timeout(ttl, guard.lost().cancelled())
        .await
        .expect("loss signal did not fire");
    assert!(thief.fencing_token > guard.fencing_token());
    assert_eq!(guard.release().await.unwrap(), ReleaseOutcome::HeldByOther);
    assert_eq!(
        store.get(&k).await.unwrap().as_deref(),
        Some(thief.id.as_str())
    );
}

async fn dropped_guards_release_in_the_background(store: Store) {
    let k = key("dropped");
    let lock = DistributedLock::new(Arc::clone(&store), k.clone(), Duration::from_secs(30));
    drop(lock.acquire(Duration::from_secs(5)).await.unwrap());
    let started = Instant::now();
    let again = lock.acquire(Duration::from_secs(5)).await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(2));
    again.release().await.unwrap();
}

macro_rules! lock_suite {
    ($module:ident, $open:expr) => {
        mod $module {

            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn exclusion_fencing_and_fairness() {
                super::exclusion_fencing_and_fairness($open).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn deadline_is_honoured() {
                super::deadline_is_honoured($open).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn renewal_keeps_the_lock_past_several_ttls() {
                super::renewal_keeps_the_lock_past_several_ttls($open).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn loss_signal_fires_before_expiry_and_on_theft() {
                super::loss_signal_fires_before_expiry_and_on_theft($open).await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn dropped_guards_release_in_the_background() {
                super::dropped_guards_release_in_the_background($open).await;
            }
        }
    };
}

#[cfg(feature = "memory")]
lock_suite!(memory, atomic_store::open("memory://").unwrap());

#[cfg(feature = "sqlite")]
lock_suite!(sqlite, {
    let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
    atomic_store::open(&format!("sqlite://{}/lock.db", dir.path().display())).unwrap()
});

#[cfg(feature = "redis")]
lock_suite!(
    redis,
    atomic_store::open(&crate::support::server_url("ATOMIC_STORE_TEST_REDIS_URL")).unwrap()
);

#[cfg(feature = "postgres")]
lock_suite!(
    postgres,
    atomic_store::open(&crate::support::server_url(
        "ATOMIC_STORE_TEST_POSTGRES_URL"
    ))
    .unwrap()
);

#[cfg(feature = "etcd")]
lock_suite!(
    etcd,
    atomic_store::open(&crate::support::server_url("ATOMIC_STORE_TEST_ETCD_URL")).unwrap()
);

#[cfg(feature = "zookeeper")]
lock_suite!(
    zookeeper,
    atomic_store::open(&crate::support::server_url("ATOMIC_STORE_TEST_ZK_URL")).unwrap()
);

#[cfg(feature = "dynamodb")]
lock_suite!(
    dynamodb,
    atomic_store::open(&crate::support::server_url(
        "ATOMIC_STORE_TEST_DYNAMODB_URL"
    ))
    .unwrap()
);

#[cfg(feature = "mongodb")]
lock_suite!(
    mongodb,
    atomic_store::open(&crate::support::server_url("ATOMIC_STORE_TEST_MONGODB_URL")).unwrap()
);
