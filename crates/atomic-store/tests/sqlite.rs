//! The conformance suite on SQLite, in one process.
#![cfg(feature = "sqlite")]

use std::sync::Arc;

use atomic_store::conformance::{self, Store};
use atomic_store::sqlite::{SqliteConfig, SqliteStore};

fn url(dir: &tempfile::TempDir, extra: &str) -> String {
    format!("sqlite://{}/store.db{extra}", dir.path().display())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let store = atomic_store::open(&url(&dir, "")).unwrap();
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_suite_through_box_dyn_with_synchronous_normal() {
    let dir = tempfile::tempdir().unwrap();
    let boxed: Box<dyn atomic_store::AtomicStore> =
        Box::new(SqliteStore::open(SqliteConfig::new(dir.path().join("b.db"))).unwrap());
    let store: Store = Arc::new(boxed);
    conformance::run_all(&store).await.assert_passed();
    let store = atomic_store::open(&url(&dir, "?synchronous=normal")).unwrap();
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefixes_are_isolated() {
    let dir = tempfile::tempdir().unwrap();
    let a = atomic_store::open(&url(&dir, "?prefix=a")).unwrap();
    let b = atomic_store::open(&url(&dir, "?prefix=b")).unwrap();
    conformance::prefixes_are_isolated(&a, &b).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_file_share_state_and_fencing() {
    let dir = tempfile::tempdir().unwrap();
    let a = atomic_store::open(&url(&dir, "")).unwrap();
    let b = atomic_store::open(&url(&dir, "")).unwrap();
    assert_eq!(a.incr("n").await.unwrap(), 1);
    assert_eq!(b.incr("n").await.unwrap(), 2);
    let ttl = std::time::Duration::from_secs(5);
    let first = a.acquire_lock("l", ttl).await.unwrap().unwrap();
    assert!(b.acquire_lock("l", ttl).await.unwrap().is_none());
    b.delete("l").await.unwrap();
    let second = b.acquire_lock("l", ttl).await.unwrap().unwrap();
    assert!(second.fencing_token > first.fencing_token);
}

#[tokio::test]
async fn data_survives_reopening() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = atomic_store::open(&url(&dir, "")).unwrap();
        s.set("persisted", "yes").await.unwrap();
    }
    let s = atomic_store::open(&url(&dir, "")).unwrap();
    assert_eq!(s.get("persisted").await.unwrap().as_deref(), Some("yes"));
}

#[tokio::test]
async fn a_missing_directory_is_a_typed_error() {
    let err = atomic_store::open("sqlite:///nonexistent-dir/sub/x.db").unwrap_err();
    assert_eq!(err.kind(), atomic_store::ErrorKind::Unavailable, "{err}");
    assert_eq!(err.backend(), "sqlite");
}
