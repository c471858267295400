//! The MongoDB backend against the MongoDB-wire server `scripts/test`
//! starts (nx-27017; set ATOMIC_STORE_TEST_MONGODB_URL to point the same
//! tests at a real MongoDB), and a server of the test's own for the
//! restart test.
#![cfg(feature = "mongodb")]

mod support;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use atomic_store::conformance::Store;
use atomic_store::mongodb::MongoStore;
use atomic_store::{ErrorKind, LockId};
use mongodb::bson::{doc, Document};
use support::{server_url, with_params, OwnServer, ResettingProxy};

// The boxed run is in another collection.
support::conformance_suite!(
    url: support::url("mongodb"),
    boxed: MongoStore::open(&with_params(&support::url("mongodb"), "collection=second")).unwrap(),
);

async fn raw_collection(name: &str) -> mongodb::Collection<Document> {
    let url = support::url("mongodb");
    let (base, query) = url.split_once('?').unwrap_or((&url, ""));
    let (hosts, db) = base.rsplit_once('/').unwrap();
    let client = mongodb::Client::with_uri_str(format!("{hosts}/?{query}"))
        .await
        .unwrap();
    client.database(db).collection(name)
}

/// An integer field, Int64 or (as some servers store small ones) Int32.
fn int(d: &Document, name: &str) -> i64 {
    match d.get(name) {
        Some(mongodb::bson::Bson::Int64(n)) => *n,
        Some(mongodb::bson::Bson::Int32(n)) => i64::from(*n),
        other => panic!("field {name} is {other:?} in {d}"),
    }
}

/// The documents are what the module docs say, and the TTL index exists.
#[tokio::test]
async fn document_layout_and_ttl_index() {
    let coll = format!("layout_{}", &LockId::generate().as_str()[..8]);
    let store = atomic_store::open(&with_params(
        &support::url("mongodb"),
        &format!("collection={coll}"),
    ))
    .unwrap();
    store.set("plain", "p").await.unwrap();
    store.incr("counter").await.unwrap();
    store.incr("counter").await.unwrap();
    let lock = store
        .acquire_lock("lock", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let raw = raw_collection(&coll).await;
    let plain = raw
        .find_one(doc! {"_id": "atomic:plain"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(plain.get_str("v").unwrap(), "p");
    let counter = raw
        .find_one(doc! {"_id": "atomic:counter"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(int(&counter, "n"), 2);
    let locked = raw
        .find_one(doc! {"_id": "atomic:lock"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(locked.get_str("v").unwrap(), lock.id.as_str());
    assert_eq!(int(&locked, "f") as u64, lock.fencing_token);
    assert!(int(&locked, "exp") > 1_700_000_000_000, "{locked}");
    let mut indexes = raw.list_indexes().await.unwrap();
    let mut ttl_index = false;
    while indexes.advance().await.unwrap() {
        let index = indexes.deserialize_current().unwrap();
        let expiry = index.options.as_ref().and_then(|o| o.expire_after);
        ttl_index |= index.keys == doc! {"gc": 1} && expiry == Some(Duration::ZERO);
    }
    assert!(ttl_index, "no TTL index on gc");
    raw.drop().await.unwrap();
}

/// Many tasks race for fresh keys: the creating insert and its duplicate-key
/// error decide, exactly one lock and one compare-and-set win per key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_creations_of_fresh_keys_have_one_winner() {
    let store = atomic_store::open(&support::url("mongodb")).unwrap();
    let run = LockId::generate();
    for round in 0..10 {
        let key = format!("fresh-{run}-{round}");
        let mut tasks = Vec::new();
        for i in 0..16 {
            let (store, key) = (Arc::clone(&store), key.clone());
            tasks.push(tokio::spawn(async move {
                let lock = store
                    .acquire_lock(&format!("{key}-lock"), Duration::from_secs(30))
                    .await
                    .unwrap();
                let cas = store
                    .compare_and_set(&format!("{key}-cas"), None, &i.to_string(), None)
                    .await
                    .unwrap();
                (lock.is_some(), cas)
            }));
        }
        let (mut locks, mut cases) = (0, 0);
        for t in tasks {
            let (l, c) = t.await.unwrap();
            locks += l as usize;
            cases += c as usize;
        }
        assert_eq!((locks, cases), (1, 1), "round {round}");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_a_typed_error() {
    let port = support::free_port();
    let store = atomic_store::open(&format!(
        "mongodb://127.0.0.1:{port}/db?directConnection=true&serverSelectionTimeoutMS=300"
    ))
    .unwrap();
    let e = store.incr("x").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_temporary());
}

/// Kill the server (SIGKILL) under 8 incr loops and start it again on the
/// same data: typed errors only, no value twice, work resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_the_server_loses_nothing() {
    let bin = server_url("ATOMIC_STORE_TEST_MONGODB_START");
    let mut server = OwnServer::start(move |port, dir| {
        let mut c = Command::new(&bin);
        c.args(["--host", "127.0.0.1", "-p", &port.to_string(), "--data-dir"])
            .arg(dir.join("data"))
            .arg("--log-file")
            .arg(dir.join("nx.log"))
            .arg("--pid-file")
            .arg(dir.join("nx.pid"));
        c
    });
    let url = format!(
        "mongodb://127.0.0.1:{}/fault?directConnection=true&serverSelectionTimeoutMS=500&timeout=2s",
        server.port
    );
    let store: Store = atomic_store::open(&url).unwrap();
    assert_eq!(store.incr("counter").await.unwrap(), 1);
    support::incr_loops_across_a_restart(store, "counter", 8, &mut server, Duration::from_secs(3))
        .await;
}

/// A connection reset with requests in flight (what a dying server does):
/// reads are retried, an `incr` is never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_connection_is_a_lost_reply() {
    let (proxy, url) = ResettingProxy::in_front_of(&support::url("mongodb")).await;
    let store = atomic_store::open(&with_params(&url, "timeout=3s&prefix=reset")).unwrap();
    support::resets_are_lost_replies(&store, &proxy).await;
}

/// A lock is taken over only a margin after its deadline: 250 ms plus the
/// taker's clock error, and the holder's deadline is at most one error
/// (under 125 ms) early, so the takeover cannot come before the acquire
/// began + TTL + 125 ms. (The margin was 100 ms, below the declared
/// resolution.) Holder and taker are separate stores, each with its own
/// estimate of the server's clock.
#[tokio::test]
async fn an_expired_lock_is_taken_over_only_after_the_margin() {
    let holder = atomic_store::open(&support::url("mongodb")).unwrap();
    let taker = atomic_store::open(&support::url("mongodb")).unwrap();
    let key = format!("margin-{}", LockId::generate());
    taker.get(&key).await.unwrap();
    let ttl = Duration::from_millis(500);
    let started = std::time::Instant::now();
    holder.acquire_lock(&key, ttl).await.unwrap().unwrap();
    let give_up = started + ttl + Duration::from_secs(5);
    let taken_after = loop {
        if taker.acquire_lock(&key, ttl).await.unwrap().is_some() {
            break started.elapsed();
        }
        assert!(std::time::Instant::now() < give_up, "never taken over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        taken_after >= ttl + Duration::from_millis(125),
        "taken over {taken_after:?} after the acquire began, with a TTL of {ttl:?}"
    );
}

/// `assign_nonce` with `pending` near the top of the range, step by step
/// against the memory store: the same values, the same typed errors, and
/// the same stored value after each step. (`pending + window` overflowed
/// in the filter: a panic, or a wrapped bound.)
#[tokio::test]
async fn assign_nonce_near_the_top_of_the_range_matches_memory() {
    let mongo = atomic_store::open(&support::url("mongodb")).unwrap();
    let memory = atomic_store::open("memory://").unwrap();
    let top = i64::MAX as u64;
    let runs: [&[u64]; 4] = [
        &[top - 1, top - 1, top - 1, top],
        &[top, top, top - 600],
        &[top - 499, top - 10, top - 499, top - 1],
        &[u64::MAX, top + 1, top - 2, u64::MAX],
    ];
    for (run, pendings) in runs.iter().enumerate() {
        let key = format!("nonce-top-{}-{run}", LockId::generate());
        for (step, &pending) in pendings.iter().enumerate() {
            let got = mongo
                .assign_nonce(&key, pending)
                .await
                .map_err(|e| e.kind());
            let want = memory
                .assign_nonce(&key, pending)
                .await
                .map_err(|e| e.kind());
            assert_eq!(got, want, "run {run} step {step}: pending {pending}");
            assert_eq!(
                mongo.get(&key).await.unwrap(),
                memory.get(&key).await.unwrap(),
                "run {run} step {step}: stored value"
            );
        }
    }
}

/// The TTL index removes a document once its `gc` date passes. A document
/// that ever held a lock keeps `gc` in year 9999 through release and
/// expiry (its fencing counter must outlive the TTL index), and so does a
/// value without TTL; a TTL'd value's `gc` is its deadline plus a minute.
#[tokio::test]
async fn lock_documents_are_never_collected_and_ttl_values_are() {
    const YEAR_9999_MS: i64 = 253_402_300_799_000;
    let coll = format!("gc_{}", &LockId::generate().as_str()[..8]);
    let store = atomic_store::open(&with_params(
        &support::url("mongodb"),
        &format!("collection={coll}"),
    ))
    .unwrap();
    let raw = raw_collection(&coll).await;
    let gc = |id: &'static str| {
        let raw = raw.clone();
        async move {
            let d = raw.find_one(doc! {"_id": id}).await.unwrap().unwrap();
            (d.get_datetime("gc").unwrap().timestamp_millis(), d)
        }
    };

    let released = store
        .acquire_lock("released", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    store.release_lock("released", &released.id).await.unwrap();
    let expired = store
        .acquire_lock("expired", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    store.set("plain", "p").await.unwrap();
    let before = mongodb::bson::DateTime::now().timestamp_millis();
    store
        .set_with_ttl("ttl", "t", Duration::from_secs(10))
        .await
        .unwrap();
    let after = mongodb::bson::DateTime::now().timestamp_millis();
    // After a lock, a TTL'd value must not bring `gc` back down.
    store
        .set_with_ttl("released", "v", Duration::from_millis(200))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(
        200 + store.capabilities().ttl_resolution.as_millis() as u64,
    ))
    .await;

    for id in ["atomic:released", "atomic:expired", "atomic:plain"] {
        let (at, d) = gc(id).await;
        assert_eq!(at, YEAR_9999_MS, "{id}: {d}");
    }
    let (at, d) = gc("atomic:ttl").await;
    let exp = int(&d, "exp");
    assert_eq!(at, exp + 60_000, "{d}");
    // The deadline is on the server's clock; this host's clock is close.
    assert!(
        exp >= before + 10_000 - 2_000 && exp <= after + 10_000 + 2_000,
        "{d}"
    );
    // The counter lives on: the next lock on the expired key gets a higher token.
    let next = store
        .acquire_lock("expired", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(next.fencing_token > expired.fencing_token);
    raw.drop().await.unwrap();
}
