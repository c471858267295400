//! The conformance suite on the in-process store.
#![cfg(feature = "memory")]

mod support;

use atomic_store::memory::MemoryStore;

// A named store, so that the two prefixes share one store.
support::conformance_suite!(url: "memory://shared", boxed: MemoryStore::new());

#[tokio::test]
async fn named_urls_share_one_store() {
    let a = atomic_store::open("memory://shared-by-name").unwrap();
    let b = atomic_store::open("memory://shared-by-name").unwrap();
    assert_eq!(a.incr("n").await.unwrap(), 1);
    assert_eq!(b.incr("n").await.unwrap(), 2);
}
