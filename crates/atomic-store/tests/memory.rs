//! The conformance suite on the in-process store.
#![cfg(feature = "memory")]

use std::sync::Arc;

use atomic_store::conformance::{self, Store};
use atomic_store::memory::MemoryStore;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite() {
    let store = atomic_store::open("memory://").unwrap();
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_through_box_dyn() {
    let boxed: Box<dyn atomic_store::AtomicStore> = Box::new(MemoryStore::new());
    let store: Store = Arc::new(boxed);
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefixes_are_isolated() {
    let a = atomic_store::open("memory://iso?prefix=a").unwrap();
    let b = atomic_store::open("memory://iso?prefix=b").unwrap();
    conformance::prefixes_are_isolated(&a, &b).await.unwrap();
}

#[tokio::test]
async fn named_urls_share_one_store() {
    let a = atomic_store::open("memory://shared-by-name").unwrap();
    let b = atomic_store::open("memory://shared-by-name").unwrap();
    assert_eq!(a.incr("n").await.unwrap(), 1);
    assert_eq!(b.incr("n").await.unwrap(), 2);
}
