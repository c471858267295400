//! The PostgreSQL backend against real servers started by `scripts/test`:
//! PostgreSQL 15 directly and through PgBouncer in transaction pooling mode,
//! and a second server of its own that the fault test restarts.
#![cfg(feature = "postgres")]

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use atomic_store::conformance::{self, Store};
use atomic_store::lock::DistributedLock;
use atomic_store::postgres::PostgresStore;
use atomic_store::{ErrorKind, EvalValue, LockId, QueueEntry, QueueTurn};
use support::{server_url, with_params, OwnServer, ResettingProxy};

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

// The boxed run is in its own schema and table.
support::conformance_suite!(
    url: support::url("postgres"),
    boxed: PostgresStore::open(&with_params(
        &support::url("postgres"),
        &format!("schema=conf_{}&table=kv", run_id())
    ))
    .unwrap(),
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_through_pgbouncer_transaction_pooling() {
    // LISTEN cannot work there; without it, notifications are Unsupported.
    let store =
        atomic_store::open(&with_params(&support::url("pgbouncer"), "listen=false")).unwrap();
    assert!(!store.capabilities().notifications);
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test]
async fn eval_runs_one_statement_with_keys_then_args_under_advisory_locks() {
    let run = run_id();
    let url = with_params(&support::url("postgres"), &format!("prefix=eval-{run}"));
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
    let url = with_params(
        &support::url("postgres"),
        &format!("schema=purge_{}", run_id()),
    );
    let store = atomic_store::open(&url).unwrap();
    let schema = url.split("schema=").nth(1).unwrap().to_owned();
    for i in 0..20 {
        store
            .set_with_ttl(&format!("k{i}"), "v", Duration::from_millis(50))
            .await
            .unwrap();
    }
    store.set("kept", "v").await.unwrap();
    let client = raw(&support::url("postgres")).await;
    let q = format!("SELECT count(*) FROM {schema}.atomic_store");
    let count = || async { client.query_one(&q, &[]).await.unwrap().get::<_, i64>(0) };
    assert_eq!(count().await, 21);
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(count().await, 1, "expired rows were not purged");
}

#[tokio::test]
async fn schema_is_created_once_and_versioned() {
    let schema = format!("ver_{}", run_id());
    let url = with_params(&support::url("postgres"), &format!("schema={schema}"));
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
    let client = raw(&support::url("postgres")).await;
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    // The values, the fencing counters, the metadata and the lock queue.
    assert_eq!(tables, 4);
    let functions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_proc WHERE pronamespace = $1::text::regnamespace",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        functions, 3,
        "the lock queue's enter and release, and purge"
    );
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

/// A database made by a version without the native lock queue (schema
/// version 1 too) gains it from the first newer instance, and a newer
/// instance whose functions were changed by hand puts its own back.
#[tokio::test]
async fn an_older_database_gains_the_lock_queue() {
    let schema = format!("older_{}", run_id());
    let url = with_params(&support::url("postgres"), &format!("schema={schema}"));
    let client = raw(&support::url("postgres")).await;
    atomic_store::open(&url).unwrap().incr("n").await.unwrap();
    client
        .batch_execute(&format!(
            "DROP TABLE {schema}.atomic_store_queue;
             DROP FUNCTION {schema}.atomic_store_q_enter;
             CREATE OR REPLACE FUNCTION {schema}.atomic_store_q_release(p_key text, p_id text, p_handover_ms bigint, p_channel text, p_listener text,
                 OUT o_code bigint, OUT o_next text, OUT o_token bigint)
               LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'the old one'; END $$;"
        ))
        .await
        .unwrap_or_else(|e| panic!("{e:?}"));
    let store = atomic_store::open(&url).unwrap();
    assert_eq!(store.incr("n").await.unwrap(), 2, "the data was kept");
    let lock = DistributedLock::new(store.clone(), "older", Duration::from_secs(5));
    let held = lock.acquire(Duration::from_secs(5)).await.unwrap();
    let waiting = {
        let lock = lock.clone();
        tokio::spawn(async move { lock.acquire(Duration::from_secs(10)).await })
    };
    // The waiter is in the native queue, so the release hands it over.
    let queued = format!("SELECT count(*) FROM {schema}.atomic_store_queue");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while client
        .query_one(&queued, &[])
        .await
        .unwrap()
        .get::<_, i64>(0)
        == 0
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the waiter never queued"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let first = held.fencing_token();
    held.release().await.unwrap();
    let next = waiting.await.unwrap().unwrap();
    assert!(next.fencing_token() > first);
    next.release().await.unwrap();
    client
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// The queue storm of [`support::queue::storm`] on one key: also no
/// deadlock (PostgreSQL would abort one side after `deadlock_timeout`, a
/// second of stall).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_functions_and_plain_callers_never_deadlock() {
    let client = raw(&support::url("postgres")).await;
    let deadlocks = || async {
        let q = "SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()";
        client.query_one(q, &[]).await.unwrap().get::<_, i64>(0)
    };
    let before = deadlocks().await;
    let store: Store = atomic_store::open(&support::url("postgres")).unwrap();
    support::queue::storm(store, &format!("storm-{}", run_id()), 100).await;
    assert_eq!(deadlocks().await, before, "the server broke a deadlock");
}

/// A hand-over on one handle wakes its waiter on another, through
/// LISTEN/NOTIFY.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_over_wakes_its_waiter_on_another_handle() {
    let url = support::url("postgres");
    support::queue::hand_over_wakes_its_waiter(
        atomic_store::open(&url).unwrap(),
        atomic_store::open(&url).unwrap(),
        &format!("wake-{}", run_id()),
    )
    .await;
}

/// A dropped store leaves no session behind: the pool's close with it,
/// and the listening session within about a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dropped_store_closes_its_listening_session() {
    let app = format!("drop-{}", run_id());
    let url = with_params(
        &support::url("postgres"),
        &format!("application_name={app}"),
    );
    let admin = raw(&support::url("postgres")).await;
    let sessions = || async {
        let q = "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1";
        admin.query_one(q, &[&app]).await.unwrap().get::<_, i64>(0)
    };
    let store: Store = atomic_store::open(&url).unwrap();
    // Heard: the listener works (wait_notified would fail otherwise).
    assert!(!store
        .wait_notified("k", Duration::from_millis(10))
        .await
        .unwrap());
    assert!(
        sessions().await >= 2,
        "the pool's session and the listener's"
    );
    drop(store);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while sessions().await > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "sessions left 5 s after the drop"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Behind PgBouncer in transaction pooling, LISTEN is found not to deliver:
/// `wait_notified` then says what to do, and the lock recipe's waiters
/// poll as on a store without notifications. Here the lock reaches the
/// recipe's waiter from elsewhere (raw queue calls, as another process
/// would make them) while it is second in line: waiting for a wake-up that
/// never comes, it would look again only after a quarter of the hand-over
/// TTL (here 1-2 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn behind_transaction_pooling_listen_is_found_not_to_deliver() {
    let store: Store = atomic_store::open(&support::url("pgbouncer")).unwrap();
    assert_eq!(store.get("warm-up").await.unwrap(), None);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let refused = loop {
        match store.wait_notified("k", Duration::from_millis(100)).await {
            Err(e) => break e,
            Ok(_) => assert!(
                std::time::Instant::now() < deadline,
                "LISTEN was not found out"
            ),
        }
    };
    assert_eq!(refused.kind(), ErrorKind::Unavailable, "{refused}");
    assert!(refused.to_string().contains("listen=false"), "{refused}");

    let ttl = Duration::from_secs(30);
    for round in 0..3 {
        let key = format!("pooled-{}-{round}", run_id());
        let (holder, first) = (LockId::generate(), LockId::generate());
        let take = QueueEntry {
            waiter: &holder,
            ttl,
            presence: None,
        };
        assert!(matches!(
            store.lock_queue_enter(&key, take).await.unwrap(),
            QueueTurn::Acquired(_)
        ));
        let queued = QueueEntry {
            waiter: &first,
            ttl,
            presence: Some(ttl),
        };
        store.lock_queue_enter(&key, queued).await.unwrap();
        let lock = DistributedLock::new(store.clone(), key.clone(), ttl)
            .turn_timeout(Duration::from_secs(8));
        let second = tokio::spawn(async move {
            let guard = lock.acquire(Duration::from_secs(20)).await.unwrap();
            let took = std::time::Instant::now();
            guard.release().await.unwrap();
            took
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        let handed = store.lock_queue_release(&key, &holder, ttl).await.unwrap();
        assert_eq!(handed.next.map(|n| n.waiter), Some(first.clone()));
        let released = std::time::Instant::now();
        store.lock_queue_release(&key, &first, ttl).await.unwrap();
        let gap = second.await.unwrap() - released;
        assert!(
            gap < Duration::from_millis(300),
            "the hand-over took {gap:?}"
        );
    }
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

/// `setpriv` as `postgres`: PostgreSQL refuses to run as root, and exec
/// (unlike `runuser`) keeps the server the process a test kills.
fn as_postgres(program: &Path) -> Command {
    let mut c = Command::new("setpriv");
    c.args(["--reuid=postgres", "--regid=postgres", "--init-groups"])
        .arg(program);
    c
}

/// A PostgreSQL server of the test's own (a fresh `initdb` on first start),
/// that the test can kill -9 and start again on the same data.
fn own_postgres() -> OwnServer {
    let ctl = server_url("ATOMIC_STORE_TEST_PG_CTL");
    let bin = Path::new(&ctl).parent().unwrap().to_owned();
    OwnServer::start(move |port, dir| {
        let data = dir.join("data");
        if !data.join("PG_VERSION").exists() {
            let owned = Command::new("chown")
                .arg("postgres:postgres")
                .arg(dir)
                .status()
                .unwrap();
            assert!(owned.success(), "chown of {}", dir.display());
            let created = as_postgres(&bin.join("initdb"))
                .arg("-D")
                .arg(&data)
                .args(["-U", "postgres", "--auth=trust"])
                .stdout(std::process::Stdio::null())
                .status()
                .unwrap();
            assert!(created.success(), "initdb in {}", data.display());
        }
        let mut c = as_postgres(&bin.join("postgres"));
        c.arg("-D")
            .arg(&data)
            .args(["-p", &port.to_string(), "-k"])
            .arg(dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"]);
        c
    })
}

/// Kill -9 and restart a server of the test's own under 8 incr loops (the
/// shared restart check: no value twice, work resumed after the restart,
/// and the stored counter at least every value handed out and no more than
/// the increments asked for).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incr_survives_a_crash_without_duplicates() {
    let mut server = own_postgres();
    let url = format!(
        "postgres://postgres@127.0.0.1:{}/postgres?sslmode=disable&timeout=1s&connect_timeout=1",
        server.port
    );
    let store: Store = atomic_store::open(&url).unwrap();
    // The port opens before the server takes sessions ("starting up").
    assert_eq!(support::first_incr_once_serving(&store, "counter").await, 1);
    support::incr_loops_across_a_restart(store, "counter", 8, &mut server, Duration::from_secs(3))
        .await;
}

/// A clock that moves an hour on every read, in front of `pg_catalog` on
/// the store's `search_path`: every statement must read it at most once,
/// and decide with that one value (a key alive at the first read and
/// expired at a second must not get a mix of both answers).
#[tokio::test]
async fn every_statement_reads_the_clock_once() {
    let run = run_id();
    let (clock, data) = (format!("clock_{run}"), format!("clockdata_{run}"));
    let admin = raw(&support::url("postgres")).await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {clock};
             CREATE SEQUENCE {clock}.reads;
             CREATE FUNCTION {clock}.clock_timestamp() RETURNS timestamptz
             LANGUAGE plpgsql VOLATILE AS $$
             BEGIN
               -- The background purger keeps the real clock.
               IF current_query() LIKE '%ctid%' THEN
                 RETURN pg_catalog.clock_timestamp();
               END IF;
               RETURN '2100-01-01 00:00:00+00'::timestamptz
                      + nextval('{clock}.reads') * interval '1 hour';
             END $$;"
        ))
        .await
        .unwrap();
    let url = with_params(
        &support::url("postgres"),
        &format!("schema={data}&pool_size=1&options=-c%20search_path%3D{clock}%2Cpg_catalog"),
    );
    let store = atomic_store::open(&url).unwrap();
    assert_eq!(store.get("warm-up").await.unwrap(), None);

    // Rows written raw, with expiry in seconds after 2100-01-01 00:00 UTC.
    // The first read of a statement is at 3600 and a second at 7200: a key
    // that expires at 5400 is alive at the first and gone at the second.
    let put = |key: &'static str, value: &'static str, expires: Option<i64>| {
        let (admin, data, clock) = (&admin, &data, &clock);
        async move {
            admin
                .execute(
                    &format!(
                        "INSERT INTO {data}.atomic_store (key, value, expires_at)
                         VALUES ($1, $2, '2100-01-01 00:00:00+00'::timestamptz + $3 * interval '1 second')
                         ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
                    ),
                    &[&format!("atomic:{key}"), &value, &expires.map(|e| e as f64)],
                )
                .await
                .unwrap();
            admin
                .execute(&format!("ALTER SEQUENCE {clock}.reads RESTART"), &[])
                .await
                .unwrap();
        }
    };
    let row = |key: &'static str| {
        let (admin, data) = (&admin, &data);
        async move {
            let r = admin
                .query_opt(
                    &format!(
                        "SELECT value, extract(epoch FROM expires_at - '2100-01-01 00:00:00+00')::bigint
                         FROM {data}.atomic_store WHERE key = $1"
                    ),
                    &[&format!("atomic:{key}")],
                )
                .await
                .unwrap();
            r.map(|r| (r.get::<_, String>(0), r.get::<_, Option<i64>>(1)))
        }
    };
    let reads = || {
        let admin = &admin;
        let q = format!("SELECT CASE WHEN is_called THEN last_value ELSE 0 END FROM {clock}.reads");
        async move { admin.query_one(&q, &[]).await.unwrap().get::<_, i64>(0) }
    };
    let alive = Some(5400);
    let ttl = Duration::from_secs(60);
    // Every difference, so one run shows them all.
    let mut wrong: Vec<String> = Vec::new();
    let mut expect = |what: &str, seen: String, want: String| {
        if seen != want {
            wrong.push(format!("{what}: {seen}, expected {want}"));
        }
    };
    let row_of = |r: Option<(String, Option<i64>)>| format!("{r:?}");

    // incr keeps the TTL of a live counter.
    put("n", "5", alive).await;
    let v = store.incr("n").await.unwrap();
    expect("incr reads", reads().await.to_string(), "1".into());
    expect("incr returns", v.to_string(), "6".into());
    expect(
        "incr row",
        row_of(row("n").await),
        row_of(Some(("6".into(), alive))),
    );

    // assign_nonce: last 100 is alive, so 101, never below pending 50.
    put("nonce", "100", alive).await;
    let v = store.assign_nonce("nonce", 50).await.unwrap();
    expect("assign_nonce reads", reads().await.to_string(), "1".into());
    expect(
        "assign_nonce(pending 50) returns",
        v.to_string(),
        "101".into(),
    );
    expect(
        "assign_nonce row",
        row_of(row("nonce").await),
        row_of(Some(("101".into(), alive))),
    );

    // inspect: a live value has the TTL left at that same moment.
    put("v", "x", alive).await;
    let info = store.inspect("v").await.unwrap();
    expect("inspect reads", reads().await.to_string(), "1".into());
    expect(
        "inspect",
        format!("{:?} {:?}", info.value, info.ttl),
        format!("{:?} {:?}", Some("x"), Some(Duration::from_secs(1800))),
    );

    // release_lock by another id: the lock is held by its owner.
    put("lock", "owner", alive).await;
    let released = store
        .release_lock("lock", &LockId::from("someone-else"))
        .await
        .unwrap();
    expect("release_lock reads", reads().await.to_string(), "1".into());
    expect(
        "release_lock by another id",
        format!("{released:?}"),
        "HeldByOther".into(),
    );

    // extend_lock: the new expiry counts from the same moment.
    put("lock", "owner", alive).await;
    let extended = store
        .extend_lock("lock", &LockId::from("owner"), ttl)
        .await
        .unwrap();
    expect("extend_lock reads", reads().await.to_string(), "1".into());
    expect("extend_lock", format!("{extended:?}"), "Extended".into());
    expect(
        "extend_lock row",
        row_of(row("lock").await),
        row_of(Some(("owner".into(), Some(3660)))),
    );

    // acquire_lock takes an expired lock, with a TTL from the same moment.
    put("old-lock", "gone", Some(1800)).await;
    let lock = store.acquire_lock("old-lock", ttl).await.unwrap();
    expect("acquire_lock reads", reads().await.to_string(), "1".into());
    match lock {
        Some(lock) => expect(
            "acquire_lock row",
            row_of(row("old-lock").await),
            row_of(Some((lock.id.as_str().to_owned(), Some(3660)))),
        ),
        None => expect(
            "acquire_lock of an expired lock",
            "None".into(),
            "a lock".into(),
        ),
    }

    // compare_and_set, both forms.
    put("cas", "a", alive).await;
    let swapped = store
        .compare_and_set("cas", Some("a"), "b", Some(ttl))
        .await
        .unwrap();
    expect(
        "compare_and_set (equal) reads",
        reads().await.to_string(),
        "1".into(),
    );
    expect(
        "compare_and_set (equal)",
        swapped.to_string(),
        "true".into(),
    );
    expect(
        "compare_and_set (equal) row",
        row_of(row("cas").await),
        row_of(Some(("b".into(), Some(3660)))),
    );
    put("cas", "a", Some(1800)).await;
    let swapped = store
        .compare_and_set("cas", None, "c", Some(ttl))
        .await
        .unwrap();
    expect(
        "compare_and_set (absent) reads",
        reads().await.to_string(),
        "1".into(),
    );
    expect(
        "compare_and_set (absent)",
        swapped.to_string(),
        "true".into(),
    );
    expect(
        "compare_and_set (absent) row",
        row_of(row("cas").await),
        row_of(Some(("c".into(), Some(3660)))),
    );

    // The rest read the clock at most once too.
    put("v", "x", alive).await;
    let got = store.get("v").await.unwrap();
    expect("get reads", reads().await.to_string(), "1".into());
    expect("get", format!("{got:?}"), format!("{:?}", Some("x")));
    put("v", "x", alive).await;
    store.set_with_ttl("v", "y", ttl).await.unwrap();
    expect("set_with_ttl reads", reads().await.to_string(), "1".into());
    expect(
        "set_with_ttl row",
        row_of(row("v").await),
        row_of(Some(("y".into(), Some(3660)))),
    );
    put("v", "x", alive).await;
    let listed = store.keys("", 100).await.unwrap().len();
    expect("keys reads", reads().await.to_string(), "1".into());
    // n, nonce, v, lock, old-lock, cas.
    expect("keys", listed.to_string(), "6".into());
    put("v", "x", alive).await;
    let deleted = store.delete("v").await.unwrap();
    expect("delete reads", reads().await.to_string(), "1".into());
    expect("delete", deleted.to_string(), "true".into());

    // The lock queue's functions: one read per decision. The release reads
    // after its locks; an enter that acts (here: takes the lock handed to
    // it) reads once to look and once more after its locks, and decides
    // with the second read alone (the hand-over lasts two hours, so it is
    // still live then).
    let restart = || {
        let (admin, clock) = (&admin, &clock);
        async move {
            let q = format!("ALTER SEQUENCE {clock}.reads RESTART");
            admin.execute(&q, &[]).await.unwrap();
        }
    };
    let waiter = LockId::from("waiter");
    put("queued", "owner", alive).await;
    let entry = QueueEntry {
        waiter: &waiter,
        ttl: Duration::from_secs(120),
        presence: Some(ttl),
    };
    let turn = store.lock_queue_enter("queued", entry).await.unwrap();
    expect(
        "lock_queue_enter reads",
        reads().await.to_string(),
        "1".into(),
    );
    expect(
        "lock_queue_enter",
        format!("{turn:?}"),
        "Waiting { ahead: 0 }".into(),
    );
    restart().await;
    let two_hours = Duration::from_secs(7200);
    let handed = store
        .lock_queue_release("queued", &LockId::from("owner"), two_hours)
        .await
        .unwrap();
    let handed_token = handed.next.as_ref().map(|n| n.fencing_token);
    expect(
        "lock_queue_release reads",
        reads().await.to_string(),
        "1".into(),
    );
    expect(
        "lock_queue_release hands over",
        format!("{:?}", handed.next.map(|n| n.waiter)),
        format!("{:?}", Some(&waiter)),
    );
    expect(
        "lock_queue_release row",
        row_of(row("queued").await),
        row_of(Some(("waiter".into(), Some(10800)))),
    );
    restart().await;
    let turn = store.lock_queue_enter("queued", entry).await.unwrap();
    expect(
        "lock_queue_enter (handed) reads",
        reads().await.to_string(),
        "2".into(),
    );
    // Kept, not taken anew: the hand-over's token.
    expect(
        "lock_queue_enter (handed)",
        format!(
            "{:?}",
            match turn {
                QueueTurn::Acquired(lock) => Some(lock.fencing_token),
                _ => None,
            }
        ),
        format!("{handed_token:?}"),
    );
    expect(
        "lock_queue_enter (handed) row",
        row_of(row("queued").await),
        row_of(Some(("waiter".into(), Some(7320)))),
    );

    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    admin
        .batch_execute(&format!(
            "DROP SCHEMA {clock} CASCADE; DROP SCHEMA {data} CASCADE"
        ))
        .await
        .unwrap();
}

/// A statement that outlasts the store's timeout (here, waiting for a row
/// lock) is cancelled on the server and its connection is not reused: with
/// a pool of one, the next call does not queue behind it, and nothing of
/// the store's is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_timed_out_statement_is_cancelled_and_its_connection_replaced() {
    let run = run_id();
    let app = format!("stuck_{run}");
    let url = with_params(
        &support::url("postgres"),
        &format!("prefix=stuck-{run}&pool_size=1&timeout=500ms&application_name={app}"),
    );
    let store = atomic_store::open(&url).unwrap();
    store.set("k", "1").await.unwrap();
    let mut holder = raw(&support::url("postgres")).await;
    let tx = holder.transaction().await.unwrap();
    let locked = tx
        .execute(
            "SELECT 1 FROM public.atomic_store WHERE key = $1 FOR UPDATE",
            &[&format!("stuck-{run}:k")],
        )
        .await
        .unwrap();
    assert_eq!(locked, 1);

    let err = store.incr("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutcomeUnknown, "{err}");
    let next = tokio::time::timeout(Duration::from_secs(1), store.get("other"))
        .await
        .expect("the next call waited behind the timed-out statement");
    assert_eq!(next.unwrap(), None);

    let admin = raw(&support::url("postgres")).await;
    let mut running = -1;
    for _ in 0..50 {
        running = admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state = 'active'",
                &[&app],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if running == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(running, 0, "the timed-out statement is still running");
    tx.rollback().await.unwrap();
    // It was cancelled, not left to run once the lock was free.
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some("1"));
    assert_eq!(store.incr("k").await.unwrap(), 2);
    store.delete("k").await.unwrap();
}

/// Schema setup that fails part way (a table of the same name, with other
/// columns, was there first) leaves no pooled connection inside an
/// aborted transaction: once the conflict is gone, the same store works.
#[tokio::test]
async fn a_failed_schema_setup_leaves_no_connection_in_an_aborted_transaction() {
    let schema = format!("abort_{}", run_id());
    let admin = raw(&support::url("postgres")).await;
    admin
        .batch_execute(&format!(
            "CREATE SCHEMA {schema}; CREATE TABLE {schema}.atomic_store_meta (unrelated int)"
        ))
        .await
        .unwrap();
    let url = with_params(
        &support::url("postgres"),
        &format!("schema={schema}&pool_size=1"),
    );
    let store = atomic_store::open(&url).unwrap();
    let err = store.incr("n").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Backend, "{err}");
    admin
        .batch_execute(&format!("DROP TABLE {schema}.atomic_store_meta"))
        .await
        .unwrap();
    assert_eq!(store.incr("n").await.unwrap(), 1);
    assert_eq!(store.incr("n").await.unwrap(), 2);
    admin
        .batch_execute(&format!("DROP SCHEMA {schema} CASCADE"))
        .await
        .unwrap();
}

/// A connection reset with requests in flight (what a dying server does):
/// reads are retried, an `incr` is never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_connection_is_a_lost_reply() {
    let (proxy, url) = ResettingProxy::in_front_of(&support::url("postgres")).await;
    let store = atomic_store::open(&with_params(&url, "timeout=3s&prefix=reset")).unwrap();
    support::resets_are_lost_replies(&store, &proxy).await;
}
