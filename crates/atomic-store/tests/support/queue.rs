//! Checks of a store's native lock queue that several backends share.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atomic_store::conformance::Store;
use atomic_store::lock::DistributedLock;
use atomic_store::{LockId, QueueEntry, QueueTurn};

/// The queue's functions, plain `acquire_lock` / `release_lock` callers
/// and waiters that enter and leave with short presences, all on `key` for
/// five seconds: no error, never two holders, every new holder's fencing
/// token above the last one's, and at least `sections_at_least` sections.
pub async fn storm(store: Store, key: &str, sections_at_least: u64) {
    let key = key.to_owned();
    let inside = Arc::new(AtomicUsize::new(0));
    let last_token = Arc::new(AtomicU64::new(0));
    let sections = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let section = {
        let (inside, last_token, sections) = (inside.clone(), last_token.clone(), sections.clone());
        move |token: u64| {
            let (inside, last_token, sections) =
                (inside.clone(), last_token.clone(), sections.clone());
            async move {
                assert_eq!(
                    inside.fetch_add(1, Ordering::SeqCst),
                    0,
                    "two holders at once"
                );
                let last = last_token.swap(token, Ordering::SeqCst);
                assert!(token > last, "token {token} after {last}");
                tokio::time::sleep(Duration::from_micros(300)).await;
                inside.fetch_sub(1, Ordering::SeqCst);
                sections.fetch_add(1, Ordering::Relaxed);
            }
        }
    };
    let mut tasks = tokio::task::JoinSet::new();
    let lock = DistributedLock::new(store.clone(), key.clone(), Duration::from_secs(5));
    for _ in 0..16 {
        let (lock, stop, section) = (lock.clone(), stop.clone(), section.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let guard = lock.acquire(Duration::from_secs(20)).await.unwrap();
                section(guard.fencing_token()).await;
                guard.release().await.unwrap();
            }
        });
    }
    for _ in 0..8 {
        let (store, key, stop, section) =
            (store.clone(), key.clone(), stop.clone(), section.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match store
                    .acquire_lock(&key, Duration::from_secs(5))
                    .await
                    .unwrap()
                {
                    Some(lock) => {
                        section(lock.fencing_token).await;
                        store.release_lock(&key, &lock.id).await.unwrap();
                    }
                    None => tokio::time::sleep(Duration::from_millis(2)).await,
                }
            }
        });
    }
    for _ in 0..8 {
        let (store, key, stop, section) =
            (store.clone(), key.clone(), stop.clone(), section.clone());
        tasks.spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                let waiter = LockId::generate();
                let entry = QueueEntry {
                    waiter: &waiter,
                    ttl: Duration::from_secs(5),
                    presence: Some(Duration::from_millis(50)),
                };
                for _ in 0..3 {
                    if let QueueTurn::Acquired(lock) =
                        store.lock_queue_enter(&key, entry).await.unwrap()
                    {
                        section(lock.fencing_token).await;
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
                // Leaves the queue, or releases (handing the lock on).
                store
                    .lock_queue_release(&key, &waiter, Duration::from_secs(1))
                    .await
                    .unwrap();
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    stop.store(true, Ordering::Relaxed);
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let sections = sections.load(Ordering::Relaxed);
    println!("{sections} sections in 5 s");
    assert!(
        sections >= sections_at_least,
        "{sections} sections: too few to show anything"
    );
    // Everyone left: the lock is free and nobody waits, so a probe that
    // never queues takes it.
    let probe = LockId::generate();
    let entry = QueueEntry {
        waiter: &probe,
        ttl: Duration::from_secs(5),
        presence: None,
    };
    let turn = store.lock_queue_enter(&key, entry).await.unwrap();
    assert!(
        matches!(turn, QueueTurn::Acquired(_)),
        "left behind: {turn:?}"
    );
    store
        .lock_queue_release(&key, &probe, Duration::from_secs(1))
        .await
        .unwrap();
}

/// The wake-up key of waiter `id` of lock `key`, as the lock recipe waits
/// on it.
pub fn wake_key(key: &str, id: &LockId) -> String {
    format!("{key}:queue:w{}", &id.as_str()[..16])
}

/// A release on handle `one` that hands the lock over wakes the waiter it
/// was handed to on handle `other`, and no other waiter.
pub async fn hand_over_wakes_its_waiter(one: Store, other: Store, key: &str) {
    assert!(other.capabilities().notifications);
    let key = key.to_owned();
    let ttl = Duration::from_secs(30);
    let Ok(QueueTurn::Acquired(held)) = one
        .lock_queue_enter(
            &key,
            QueueEntry {
                waiter: &LockId::generate(),
                ttl,
                presence: None,
            },
        )
        .await
    else {
        panic!("a free lock was not taken");
    };
    let (first, second) = (LockId::generate(), LockId::generate());
    for w in [&first, &second] {
        let entry = QueueEntry {
            waiter: w,
            ttl,
            presence: Some(ttl),
        };
        let turn = other.lock_queue_enter(&key, entry).await.unwrap();
        assert!(matches!(turn, QueueTurn::Waiting { .. }), "{turn:?}");
    }
    // `other` listens once a notification reaches it.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let heard = {
            let other = other.clone();
            tokio::spawn(async move {
                other
                    .wait_notified("warm-up", Duration::from_millis(200))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        one.notify("warm-up").await.unwrap();
        if heard.await.unwrap().unwrap() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never started"
        );
    }
    let wait = |w: &LockId, within: Duration| {
        let (other, k) = (other.clone(), wake_key(&key, w));
        tokio::spawn(async move { other.wait_notified(&k, within).await.unwrap() })
    };
    let (woken_first, woken_second) = (
        wait(&first, Duration::from_secs(5)),
        wait(&second, Duration::from_millis(800)),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    let released = std::time::Instant::now();
    let handover = one.lock_queue_release(&key, &held.id, ttl).await.unwrap();
    assert_eq!(handover.next.map(|n| n.waiter), Some(first.clone()));
    assert!(
        woken_first.await.unwrap(),
        "the waiter handed the lock was not woken"
    );
    assert!(
        released.elapsed() < Duration::from_secs(1),
        "woken after {:?}",
        released.elapsed()
    );
    assert!(
        !woken_second.await.unwrap(),
        "a waiter the lock was not handed to was woken"
    );
}
