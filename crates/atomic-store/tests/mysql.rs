//! The MySQL backend against MariaDB 10.11 started by `scripts/test`
//! (plain and over TLS), and a server of the test's own that it kills and
//! restarts.
#![cfg(feature = "mysql")]

mod support;

use std::process::Command;
use std::time::Duration;

use atomic_store::conformance::{self, Store};
use atomic_store::mysql::MysqlStore;
use atomic_store::{ErrorKind, LockId};
use mysql_async::prelude::Queryable;
use support::{server_url, with_params, OwnServer, ResettingProxy};

fn run_id() -> String {
    LockId::generate().as_str()[..10].to_owned()
}

async fn raw() -> mysql_async::Conn {
    let url = support::url("mysql");
    let base = url.split_once('?').unwrap().0;
    mysql_async::Conn::from_url(base).await.unwrap()
}

// The boxed run is in a table of its own.
support::conformance_suite!(
    url: support::url("mysql"),
    boxed: MysqlStore::open(&with_params(
        &support::url("mysql"),
        &format!("table=conf_{}", run_id())
    ))
    .unwrap(),
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_over_tls() {
    let store = atomic_store::open(&support::url("mysqls")).unwrap();
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test]
async fn tls_refusals_are_typed_and_never_unknown() {
    let tls_user = support::url("mysqls");
    let base = tls_user.split_once('?').unwrap().0;
    // A user the server requires TLS of, without TLS: the server refuses it.
    let store = atomic_store::open(&format!("{base}?ssl-mode=DISABLED")).unwrap();
    let e = store.incr("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Configuration, "{e}");
    assert!(!e.to_string().contains("atomic-test-pw"), "{e}");
    // A CA that did not sign the server's certificate.
    let wrong_ca = tempfile::NamedTempFile::new().unwrap();
    let other = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
        ])
        .arg("-keyout")
        .arg(wrong_ca.path().with_extension("key"))
        .arg("-out")
        .arg(wrong_ca.path())
        .output()
        .unwrap();
    assert!(other.status.success());
    let url = format!(
        "{base}?ssl-mode=VERIFY_IDENTITY&ssl-ca={}&connect_timeout=2s",
        wrong_ca.path().display()
    );
    let e = atomic_store::open(&url)
        .unwrap()
        .incr("k")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    // A server without TLS for a store that requires it is a configuration to fix.
    let plain = support::url("mysql");
    let e = atomic_store::open(&plain.replace("ssl-mode=DISABLED", "ssl-mode=REQUIRED"))
        .unwrap()
        .get("k")
        .await;
    // MariaDB here does offer TLS, so REQUIRED with the built-in roots
    // refuses its self-signed certificate: nothing was sent.
    assert_eq!(e.unwrap_err().kind(), ErrorKind::Unavailable);
}

#[tokio::test]
async fn bad_urls_are_invalid_arguments_and_never_show_the_password() {
    for url in [
        "mysql://u:s3cret@127.0.0.1:13306/atomic?colour=blue",
        "mysql://u:s3cret@127.0.0.1:13306/atomic?ssl-mode=SOMETIMES",
        "mysql://u:s3cret@127.0.0.1:13306/atomic?table=a-b",
        "mysql://u:s3cret@127.0.0.1:13306/atomic?pool_size=0",
        "mysql://u:s3cret@127.0.0.1:13306/",
        "mysql://u:s3cret@127.0.0.1:13306/atomic?ssl-ca=/nonexistent.pem",
    ] {
        let e = atomic_store::open(url).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{url}: {e}");
        assert!(!e.to_string().contains("s3cret"), "{e}");
        assert!(!format!("{e:?}").contains("s3cret"), "{e:?}");
    }
    let store = atomic_store::open("mysql://u:s3cret@127.0.0.1:13306/atomic").unwrap();
    assert!(!format!("{store:?}").contains("s3cret"));
    // Bad credentials: a configuration error, final, password not shown.
    let url = support::url("mysql").replace("atomic-test-pw", "wrong-pw");
    let e = atomic_store::open(&url)
        .unwrap()
        .incr("k")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Configuration, "{e}");
    assert!(!e.to_string().contains("wrong-pw"), "{e}");
}

#[tokio::test]
async fn values_that_are_not_canonical_integers_are_refused_unchanged() {
    let url = with_params(&support::url("mysql"), &format!("prefix=cast-{}", run_id()));
    let store = atomic_store::open(&url).unwrap();
    for (i, value) in [
        "01",
        "+1",
        " 1",
        "1 ",
        "1e3",
        "",
        "abc",
        "-0",
        "9223372036854775808",
        "1.5",
    ]
    .into_iter()
    .enumerate()
    {
        let key = format!("k{i}");
        store.set(&key, value).await.unwrap();
        let e = store.incr(&key).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotAnInteger, "{value:?}: {e}");
        let e = store.assign_nonce(&key, 0).await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::NotAnInteger, "{value:?}: {e}");
        assert_eq!(store.get(&key).await.unwrap().as_deref(), Some(value));
    }
    store.set("neg", "-5").await.unwrap();
    assert_eq!(store.incr("neg").await.unwrap(), -4);
    store.set("max", &i64::MAX.to_string()).await.unwrap();
    assert_eq!(
        store.incr("max").await.unwrap_err().kind(),
        ErrorKind::Overflow
    );
    assert_eq!(store.get("max").await.unwrap(), Some(i64::MAX.to_string()));
}

#[tokio::test]
async fn the_nonce_rule_matches_the_reference() {
    let url = with_params(
        &support::url("mysql"),
        &format!("prefix=nonce-{}", run_id()),
    );
    let store = atomic_store::open(&url).unwrap();
    let reference = atomic_store::open("memory://").unwrap();
    let cases: &[(Option<&str>, u64)] = &[
        (None, 0),
        (None, 7),
        (Some("-1"), 0),
        (Some("4"), 0),
        (Some("4"), 5),
        (Some("4"), 9),
        (Some("600"), 99),
        (Some("600"), 100),
        (Some("600"), 98),
        (Some("-7"), 0),
    ];
    for (i, (stored, pending)) in cases.iter().enumerate() {
        let key = format!("n{i}");
        for s in [&store, &reference] {
            if let Some(v) = stored {
                s.set(&key, v).await.unwrap();
            }
        }
        let ours = store.assign_nonce(&key, *pending).await.unwrap();
        let want = reference.assign_nonce(&key, *pending).await.unwrap();
        assert_eq!(ours, want, "stored {stored:?}, pending {pending}");
        assert_eq!(store.get(&key).await.unwrap(), Some(want.to_string()));
    }
}

#[tokio::test]
async fn fencing_survives_delete_expiry_and_the_purger_but_not_purge() {
    let table = format!("fence_{}", run_id());
    let url = with_params(&support::url("mysql"), &format!("table={table}"));
    let store = atomic_store::open(&url).unwrap();
    let first = store
        .acquire_lock("l", Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = store
        .acquire_lock("l", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(second.fencing_token > first.fencing_token);
    assert!(store.delete("l").await.unwrap());
    let third = store
        .acquire_lock("l", Duration::from_millis(100))
        .await
        .unwrap()
        .unwrap();
    assert!(third.fencing_token > second.fencing_token);
    for i in 0..20 {
        store
            .set_with_ttl(&format!("tmp{i}"), "v", Duration::from_millis(50))
            .await
            .unwrap();
    }
    let mut conn = raw().await;
    let count = format!("SELECT COUNT(*) FROM `{table}`");
    assert_eq!(conn.query_first::<i64, _>(&count).await.unwrap(), Some(21));
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert_eq!(
        conn.query_first::<i64, _>(&count).await.unwrap(),
        Some(1),
        "expired rows were purged, the expired lock kept as a tombstone"
    );
    let fourth = store
        .acquire_lock("l", Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert!(
        fourth.fencing_token > third.fencing_token,
        "the purger kept the counter"
    );
    store.purge("l").await.unwrap();
    assert_eq!(conn.query_first::<i64, _>(&count).await.unwrap(), Some(0));
}

#[tokio::test]
async fn schema_is_created_once_and_versioned() {
    let table = format!("ver_{}", run_id());
    let url = with_params(&support::url("mysql"), &format!("table={table}"));
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = atomic_store::open(&url).unwrap();
        tasks.push(tokio::spawn(async move { s.incr("n").await }));
    }
    let mut values = Vec::new();
    for t in tasks {
        values.push(t.await.unwrap().unwrap());
    }
    values.sort_unstable();
    assert_eq!(values, (1..=8).collect::<Vec<i64>>());
    let mut conn = raw().await;
    let meta = format!("`{table}_meta`");
    let version: Option<String> = conn
        .query_first(format!(
            "SELECT value FROM {meta} WHERE name = 'schema_version'"
        ))
        .await
        .unwrap();
    assert_eq!(version.as_deref(), Some("1"));
    conn.query_drop(format!("UPDATE {meta} SET value = '9'"))
        .await
        .unwrap();
    let e = atomic_store::open(&url)
        .unwrap()
        .get("n")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend, "{e}");
    assert!(e.to_string().contains("schema version 9"), "{e}");
}

#[tokio::test]
async fn a_statement_stuck_on_a_row_lock_gives_up_and_frees_its_connection() {
    let table = format!("stuck_{}", run_id());
    let url = with_params(
        &support::url("mysql"),
        &format!("table={table}&pool_size=1&timeout=1s"),
    );
    let store = atomic_store::open(&url).unwrap();
    assert_eq!(store.incr("k").await.unwrap(), 1);
    let mut blocker = raw().await;
    blocker.query_drop("BEGIN").await.unwrap();
    blocker
        .query_drop(format!("SELECT * FROM `{table}` FOR UPDATE"))
        .await
        .unwrap();
    // Whichever gives up first: the server's lock wait (1 s here, rolled
    // back: nothing applied) or our timeout (the statement may still run).
    let e = store.incr("k").await.unwrap_err();
    let may_have_applied = match e.kind() {
        ErrorKind::OutcomeUnknown => true,
        ErrorKind::Unavailable => false,
        _ => panic!("a stuck statement gave {e}"),
    };
    blocker.query_drop("ROLLBACK").await.unwrap();
    // The one pooled connection was not left queued behind the lock.
    let v = store.incr("k").await.unwrap();
    if may_have_applied {
        assert!(v == 2 || v == 3, "{v}");
    } else {
        assert_eq!(v, 2, "a statement reported as not applied was applied");
    }
}

fn own_mariadb() -> OwnServer {
    OwnServer::start(|port, dir| {
        let data = dir.join("data");
        if !data.join("mysql").exists() {
            let owned = Command::new("chown")
                .arg("mysql:mysql")
                .arg(dir)
                .status()
                .unwrap();
            assert!(owned.success());
            let installed = Command::new("mariadb-install-db")
                .args([
                    "--no-defaults",
                    "--user=mysql",
                    "--skip-test-db",
                    "--auth-root-authentication-method=normal",
                ])
                .arg(format!("--datadir={}", data.display()))
                .output()
                .unwrap();
            assert!(
                installed.status.success(),
                "{}",
                String::from_utf8_lossy(&installed.stderr)
            );
        }
        let mut c = Command::new("mariadbd");
        c.args([
            "--no-defaults",
            "--user=mysql",
            "--bind-address=127.0.0.1",
            "--skip-name-resolve",
        ])
        .arg(format!("--datadir={}", data.display()))
        .arg(format!("--port={port}"))
        .arg(format!("--socket={}", dir.join("mysqld.sock").display()))
        .arg("--innodb-flush-log-at-trx-commit=2");
        c
    })
}

/// Kill -9 and restart a server of the test's own under 8 incr loops.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incr_survives_a_crash_without_duplicates() {
    let mut server = own_mariadb();
    let url = format!(
        "mysql://root@127.0.0.1:{}/mysql?ssl-mode=DISABLED&timeout=1s&connect_timeout=1s",
        server.port
    );
    let store: Store = atomic_store::open(&url).unwrap();
    assert_eq!(support::first_incr_once_serving(&store, "counter").await, 1);
    // This server has no TLS: a URL that requires it is told what to fix.
    let tls = url.replace("ssl-mode=DISABLED", "ssl-mode=REQUIRED");
    let e = atomic_store::open(&tls)
        .unwrap()
        .get("counter")
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Configuration, "{e}");
    assert!(e.to_string().contains("ssl-mode=DISABLED"), "{e}");
    support::incr_loops_across_a_restart(store, "counter", 8, &mut server, Duration::from_secs(3))
        .await;
}

/// A connection reset with requests in flight: reads are retried, an
/// `incr` is never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_connection_is_a_lost_reply() {
    let (proxy, url) =
        ResettingProxy::in_front_of(&server_url("ATOMIC_STORE_TEST_MYSQL_URL")).await;
    let store = atomic_store::open(&with_params(&url, "timeout=3s&prefix=reset")).unwrap();
    support::resets_are_lost_replies(&store, &proxy).await;
}
