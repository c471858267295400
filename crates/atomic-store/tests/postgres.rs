//! The PostgreSQL backend against real servers started by `scripts/test`:
//! PostgreSQL 15 directly and through PgBouncer in transaction pooling mode,
//! and a second server of its own that the fault test restarts.
#![cfg(feature = "postgres")]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atomic_store::conformance::{self, Store};
use atomic_store::postgres::PostgresStore;
use atomic_store::{ErrorKind, EvalValue, LockId};
use support::{server_url, ResettingProxy};

fn direct() -> String {
    server_url("ATOMIC_STORE_TEST_POSTGRES_URL")
}

fn with_params(url: &str, params: &str) -> String {
    format!("{url}&{params}")
}

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, conn) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    client
}

fn run_id() -> String {
    LockId::generate().as_str()[..10].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_direct() {
    let store = atomic_store::open(&direct()).unwrap();
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_direct_through_box_dyn_in_its_own_schema() {
    let url = with_params(&direct(), &format!("schema=conf_{}&table=kv", run_id()));
    let boxed: Box<dyn atomic_store::AtomicStore> = Box::new(PostgresStore::open(&url).unwrap());
    let store: Store = Arc::new(boxed);
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_through_pgbouncer_transaction_pooling() {
    let store = atomic_store::open(&server_url("ATOMIC_STORE_TEST_PGBOUNCER_URL")).unwrap();
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn prefixes_are_isolated() {
    let a = atomic_store::open(&with_params(&direct(), "prefix=iso-a")).unwrap();
    let b = atomic_store::open(&with_params(&direct(), "prefix=iso-b")).unwrap();
    conformance::prefixes_are_isolated(&a, &b).await.unwrap();
}

#[tokio::test]
async fn eval_runs_one_statement_with_keys_then_args_under_advisory_locks() {
    let run = run_id();
    let url = with_params(&direct(), &format!("prefix=eval-{run}"));
    let store = atomic_store::open(&url).unwrap();
    store.set("a", "1").await.unwrap();
    // $1 is the prefixed key, $2 the first argument.
    let v = store
        .eval(
            "UPDATE public.atomic_store SET value = $2 WHERE key = $1 RETURNING key, value, 7::int4, NULL::text, true",
            &["a"],
            &["changed"],
        )
        .await
        .unwrap();
    assert_eq!(
        v,
        EvalValue::Array(vec![EvalValue::Array(vec![
            EvalValue::Text(format!("eval-{run}:a")),
            EvalValue::Text("changed".into()),
            EvalValue::Integer(7),
            EvalValue::Nil,
            EvalValue::Integer(1),
        ])])
    );
    assert_eq!(store.get("a").await.unwrap().as_deref(), Some("changed"));
    let err = store
        .eval("SELEKT nonsense", &["a"], &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Script, "{err}");
    assert_eq!(store.get("a").await.unwrap().as_deref(), Some("changed"));
    store.delete("a").await.unwrap();
}

#[tokio::test]
async fn expired_rows_are_purged_in_the_background() {
    let url = with_params(&direct(), &format!("schema=purge_{}", run_id()));
    let store = atomic_store::open(&url).unwrap();
    let schema = url.split("schema=").nth(1).unwrap().to_owned();
    for i in 0..20 {
        store
            .set_with_ttl(&format!("k{i}"), "v", Duration::from_millis(50))
            .await
            .unwrap();
    }
    store.set("kept", "v").await.unwrap();
    let client = raw(&direct()).await;
    let q = format!("SELECT count(*) FROM {schema}.atomic_store");
    let count = || async { client.query_one(&q, &[]).await.unwrap().get::<_, i64>(0) };
    assert_eq!(count().await, 21);
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(count().await, 1, "expired rows were not purged");
}

#[tokio::test]
async fn schema_is_created_once_and_versioned() {
    let schema = format!("ver_{}", run_id());
    let url = with_params(&direct(), &format!("schema={schema}"));
    let stores: Vec<_> = (0..8).map(|_| atomic_store::open(&url).unwrap()).collect();
    let mut tasks = Vec::new();
    for s in stores {
        tasks.push(tokio::spawn(async move { s.incr("n").await }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await.unwrap().unwrap());
    }
    values.sort_unstable();
    assert_eq!(values, (1..=8).collect::<Vec<i64>>());
    let client = raw(&direct()).await;
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 3);
    let version: String = client
        .query_one(
            &format!("SELECT value FROM {schema}.atomic_store_meta WHERE name = 'schema_version'"),
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, "1");
    client
        .execute(
            &format!("UPDATE {schema}.atomic_store_meta SET value = '9'"),
            &[],
        )
        .await
        .unwrap();
    let err = atomic_store::open(&url)
        .unwrap()
        .get("n")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend);
    assert!(err.to_string().contains("schema version 9"), "{err}");
}

#[tokio::test]
async fn bad_urls_and_passwords() {
    for url in [
        "postgres://u@h/db?sslmode=sometimes",
        "postgres://u@h/db?schema=bad-name",
        "postgres://u@h/db?pool_size=0",
        "postgres://u@h/db?nonsense_param=1",
        "postgres://u@h/db?timeout=soon",
    ] {
        let err = atomic_store::open(url).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument, "{url}: {err}");
    }
    let store = PostgresStore::open(
        "postgres://u:hunter2secret@127.0.0.1:1/db?sslmode=disable&connect_timeout=1",
    )
    .unwrap();
    assert!(!format!("{store:?}").contains("hunter2secret"));
    let err = atomic_store::AtomicStore::incr(&store, "k")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary());
    assert!(!format!("{err} {err:?}").contains("hunter2secret"));
}

/// `pg_ctl restart -m fast` under 8 incr loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incr_survives_a_restart_without_duplicates() {
    let url = with_params(
        &server_url("ATOMIC_STORE_TEST_PG_FAULT_URL"),
        "timeout=1s&connect_timeout=1",
    );
    let store: Store = atomic_store::open(&url).unwrap();
    let key = format!("restart-{}", run_id());
    store.incr(&key).await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (store, stop, key) = (Arc::clone(&store), Arc::clone(&stop), key.clone());
        tasks.push(tokio::spawn(async move {
            let (mut values, mut errors) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match store.incr(&key).await {
                    Ok(v) => values.push(v),
                    Err(e) => {
                        errors.push(e.kind());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (values, errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;
    let before: i64 = store.get(&key).await.unwrap().unwrap().parse().unwrap();
    let restarted = tokio::process::Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(server_url("ATOMIC_STORE_TEST_PG_CTL"))
        .args([
            "-D",
            &server_url("ATOMIC_STORE_TEST_PG_FAULT_DATA"),
            "-m",
            "fast",
            "-w",
            "restart",
        ])
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .unwrap();
    assert!(restarted.success());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    let (mut values, mut errors) = (Vec::new(), Vec::new());
    for t in tasks {
        let (v, e) = t.await.unwrap();
        values.extend(v);
        errors.extend(e);
    }
    let distinct: HashSet<i64> = values.iter().copied().collect();
    assert_eq!(distinct.len(), values.len(), "a value was returned twice");
    assert!(!errors.is_empty(), "the restart produced no errors");
    for kind in &errors {
        assert!(
            matches!(kind, ErrorKind::Unavailable | ErrorKind::OutcomeUnknown),
            "unexpected {kind}"
        );
    }
    assert!(
        values.iter().filter(|&&v| v > before).count() > 8,
        "work did not resume after the restart"
    );
}

/// A connection reset with requests in flight (what a dying server does):
/// reads are retried, an `incr` is never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_connection_is_a_lost_reply() {
    let (proxy, url) = ResettingProxy::in_front_of(&direct()).await;
    let store = atomic_store::open(&with_params(&url, "timeout=3s&prefix=reset")).unwrap();
    support::resets_are_lost_replies(&store, &proxy).await;
}
