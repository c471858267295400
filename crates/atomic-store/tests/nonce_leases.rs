//! Nonce leases step by step on a memory store and a simulated chain: what
//! a release does to the counter and the free list, and what a lease takes.
//! (Leases under concurrency and faults: `support::leases`, run by the
//! self-check and by the fault harness on every network backend.)
#![cfg(all(feature = "nonce", feature = "memory"))]

mod support;

use atomic_store::nonce::{Released, FREE_LIST_LIMIT};
use atomic_store::ErrorKind;
use support::leases::LeaseRun;

fn run() -> (LeaseRun, atomic_store::conformance::Store) {
    let store = atomic_store::open("memory://").unwrap();
    (LeaseRun::new(&store), store)
}

async fn stored(store: &atomic_store::conformance::Store, key: String) -> Option<String> {
    store.get(&key).await.unwrap()
}

/// The nonces on the free list (its value is `version|n,n,…`).
async fn listed(store: &atomic_store::conformance::Store, key: String) -> Vec<u64> {
    let raw = stored(store, key).await.unwrap_or_default();
    let (_, list) = raw.split_once('|').unwrap_or(("", ""));
    list.split(',')
        .filter(|n| !n.is_empty())
        .map(|n| n.parse().unwrap())
        .collect()
}

#[tokio::test]
async fn the_latest_nonce_rewinds_and_older_ones_are_listed_then_reused_lowest_first() {
    let (r, store) = run();
    let (m, a) = (&r.manager, &r.address);
    let leases = [
        m.lease(a).await.unwrap(),
        m.lease(a).await.unwrap(),
        m.lease(a).await.unwrap(),
        m.lease(a).await.unwrap(),
    ];
    assert_eq!(
        leases.iter().map(|l| l.nonce()).collect::<Vec<_>>(),
        [0, 1, 2, 3]
    );
    let [l0, l1, l2, l3] = leases;
    l0.confirm();
    assert_eq!(l2.release().await.unwrap(), Released::Listed);
    assert_eq!(l1.release().await.unwrap(), Released::Listed);
    assert_eq!(listed(&store, m.released_key(a)).await, [1, 2]);
    // 3 is the latest: the counter goes back to 2, and 1 and 2 fold into it.
    assert_eq!(l3.release().await.unwrap(), Released::Rewound);
    assert_eq!(
        stored(&store, m.last_used_key(a)).await.as_deref(),
        Some("0")
    );
    assert!(listed(&store, m.released_key(a)).await.is_empty());
    let again = m.lease(a).await.unwrap();
    assert_eq!(again.nonce(), 1);
    again.confirm();

    // A listed nonce below the latest is taken before the counter moves.
    let (n2, n3) = (m.lease(a).await.unwrap(), m.lease(a).await.unwrap());
    assert_eq!((n2.nonce(), n3.nonce()), (2, 3));
    assert_eq!(n2.release().await.unwrap(), Released::Listed);
    let reused = m.lease(a).await.unwrap();
    assert_eq!(reused.nonce(), 2);
    reused.confirm();
    n3.confirm();
}

#[tokio::test]
async fn listed_nonces_the_chain_passed_or_above_the_counter_are_dropped() {
    let (r, store) = run();
    let (m, a) = (&r.manager, &r.address);
    store.set(&m.last_used_key(a), "9").await.unwrap();
    // 3 and 4 were used by the chain meanwhile (pending is 5); 12 dates from
    // before a reset and is above the counter.
    store.set(&m.released_key(a), "5|3,4,7,12").await.unwrap();
    let lease = m.lease_at(a, 5).await.unwrap();
    assert_eq!(lease.nonce(), 7);
    assert_eq!(
        stored(&store, m.released_key(a)).await.as_deref(),
        Some("6|")
    );
    lease.confirm();
    let next = m.lease_at(a, 5).await.unwrap();
    assert_eq!(next.nonce(), 10);
    next.confirm();
    // The chain ahead of the counter: the lease starts at the chain's count.
    let jumped = m.lease_at(a, 20).await.unwrap();
    assert_eq!(jumped.nonce(), 20);
    jumped.confirm();
}

#[tokio::test]
async fn a_counter_beyond_the_window_is_refused_not_reset() {
    let (r, store) = run();
    let (m, a) = (&r.manager, &r.address);
    store.set(&m.last_used_key(a), "600").await.unwrap();
    let e = m.lease_at(a, 100).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable);
    assert!(
        e.to_string().contains("501 nonces ahead of the chain"),
        "{e}"
    );
    assert!(e.to_string().contains("doctor --repair"), "{e}");
    // Nothing changed; `assign_nonce` would have started again at 100.
    assert_eq!(
        stored(&store, m.last_used_key(a)).await.as_deref(),
        Some("600")
    );
    let inside = m.lease_at(a, 101).await.unwrap();
    assert_eq!(inside.nonce(), 601);
    inside.confirm();
}

#[tokio::test]
async fn a_full_free_list_burns_and_junk_in_it_is_a_typed_error() {
    let (r, store) = run();
    let (m, a) = (&r.manager, &r.address);
    store.set(&m.last_used_key(a), "10000").await.unwrap();
    let full: Vec<String> = (0..FREE_LIST_LIMIT).map(|n| (n * 2).to_string()).collect();
    store
        .set(&m.released_key(a), &format!("1|{}", full.join(",")))
        .await
        .unwrap();
    let lease = m.lease_at(a, 0).await.unwrap();
    assert_eq!(lease.nonce(), 0);
    let other = m.lease_at(a, 0).await.unwrap();
    assert_eq!(other.nonce(), 2);
    assert_eq!(lease.release().await.unwrap(), Released::Listed);
    // Full again: the next release burns its nonce, and the list is unchanged.
    let odd: Vec<String> = (0..FREE_LIST_LIMIT)
        .map(|n| (n * 2 + 1).to_string())
        .collect();
    let odd = format!("9|{}", odd.join(","));
    store.set(&m.released_key(a), &odd).await.unwrap();
    assert_eq!(other.release().await.unwrap(), Released::Burned);
    assert_eq!(stored(&store, m.released_key(a)).await, Some(odd));

    store.set(&m.released_key(a), "3|1,two").await.unwrap();
    let e = m.lease_at(a, 0).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::NotAnInteger);
    assert!(e.to_string().contains("delete it"), "{e}");
    assert_eq!(
        stored(&store, m.released_key(a)).await.as_deref(),
        Some("3|1,two")
    );
}

/// Found by review: a lease that read the counter before the free list
/// could take a nonce released in between for one left over from before a
/// reset (above the counter it read) and drop it: lost, though its
/// releaser was told `Listed`. Here the list read is slow, and while it
/// waits, nonces 6 and 7 are leased and 6 released.
#[tokio::test]
async fn a_release_between_a_leases_two_reads_is_not_dropped() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    let inner = atomic_store::open("memory://").unwrap();
    let (r, _) = (LeaseRun::new(&inner), ());
    let (m, a) = (r.manager.clone(), r.address);
    inner.set(&m.last_used_key(&a), "5").await.unwrap();
    let armed = Arc::new(AtomicBool::new(true));
    let others = m.clone();
    let slow = support::hooked::on_get(Arc::clone(&inner), m.released_key(&a), {
        let armed = Arc::clone(&armed);
        move || {
            let (others, armed) = (others.clone(), Arc::clone(&armed));
            Box::pin(async move {
                if armed.swap(false, Ordering::SeqCst) {
                    // Slow, as over a network: the caller's other reads go on.
                    tokio::task::yield_now().await;
                    let six = others.lease_at(&a, 0).await.unwrap();
                    let seven = others.lease_at(&a, 0).await.unwrap();
                    assert_eq!((six.nonce(), seven.nonce()), (6, 7));
                    assert_eq!(six.release().await.unwrap(), Released::Listed);
                    seven.confirm();
                }
            })
        }
    });
    let x = atomic_store::nonce::NonceManager::new(slow, r.chain.clone(), 31337);
    let lease = x.lease_at(&a, 0).await.unwrap();
    let taken = lease.nonce();
    lease.confirm();
    assert!(
        taken == 6 || listed(&inner, m.released_key(&a)).await.contains(&6),
        "nonce 6 was released, then neither leased nor listed (the lease took {taken})"
    );
}
