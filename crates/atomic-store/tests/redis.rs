//! The Redis backend against real servers started by `scripts/test`: a
//! single node, a 3-master cluster and a TLS server; plus servers of the
//! tests' own for faults.
#![cfg(feature = "redis")]

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use atomic_store::conformance::{self, Store};
use atomic_store::redis::{slots, RedisStore};
use atomic_store::{ErrorKind, EvalValue, LockId, ReleaseOutcome};
use redis::Commands;
use support::{server_url, with_params, OwnRedis, OwnServer, ResettingProxy};

fn raw() -> redis::Connection {
    redis::Client::open(support::url("redis"))
        .unwrap()
        .get_connection()
        .unwrap()
}

support::conformance_suite!(url: support::url("redis"), boxed: RedisStore::open(&support::url("redis")).unwrap());

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_cluster() {
    let store = atomic_store::open(&support::url("redis_cluster")).unwrap();
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn conformance_tls() {
    let url = support::url("rediss");
    assert!(url.starts_with("rediss://"));
    let store = atomic_store::open(&url).unwrap();
    conformance::run_all(&store).await.assert_passed();
}

#[tokio::test]
async fn tls_without_the_right_ca_fails_cleanly() {
    // The server's certificate is self-signed: the system roots do not trust it.
    let url = support::url("rediss");
    let without_ca = url.split('?').next().unwrap().to_owned() + "?connect_timeout=2s";
    let store = atomic_store::open(&without_ca).unwrap();
    let err = store.get("k").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

/// The keys and values a TypeScript instance of the original reads and writes.
#[tokio::test]
async fn layout_matches_the_typescript_original() {
    let run = LockId::generate().as_str()[..8].to_owned();
    let store = atomic_store::open(&with_params(
        &support::url("redis"),
        "prefix=vana-sdk:atomic",
    ))
    .unwrap();
    let mut raw = raw();
    let k = |name: &str| format!("layout-{run}:{name}");
    let full = |name: &str| format!("vana-sdk:atomic:{}", k(name));

    assert_eq!(store.incr(&k("counter")).await.unwrap(), 1);
    assert_eq!(raw.get::<_, String>(full("counter")).unwrap(), "1");
    let _: () = raw.incr(full("counter"), 1).unwrap();
    assert_eq!(store.incr(&k("counter")).await.unwrap(), 3);

    let lock = store
        .acquire_lock(&k("lock"), Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        raw.get::<_, String>(full("lock")).unwrap(),
        lock.id.as_str()
    );
    let pttl: i64 = raw.pttl(full("lock")).unwrap();
    assert!(pttl > 0 && pttl <= 5000, "pttl {pttl}");
    let fence: u64 = raw.get(slots::fence_key(&full("lock"))).unwrap();
    assert_eq!(fence, lock.fencing_token);

    // A lock taken the original's way, by another client.
    let foreign = "1732560000000-abcdefghijk";
    let set: Option<String> = redis::cmd("SET")
        .arg(full("their-lock"))
        .arg(foreign)
        .arg("PX")
        .arg(5000)
        .arg("NX")
        .query(&mut raw)
        .unwrap();
    assert_eq!(set.as_deref(), Some("OK"));
    assert!(store
        .acquire_lock(&k("their-lock"), Duration::from_secs(5))
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store
            .release_lock(&k("their-lock"), &LockId::from(foreign))
            .await
            .unwrap(),
        ReleaseOutcome::Released
    );
    assert!(!raw.exists::<_, bool>(full("their-lock")).unwrap());

    // The nonce key of the original's nonce manager, written raw.
    let nonce_key = format!("nonce:{run}:0xabc:lastUsed");
    let _: () = raw
        .set(format!("vana-sdk:atomic:{nonce_key}"), "41")
        .unwrap();
    assert_eq!(store.assign_nonce(&nonce_key, 0).await.unwrap(), 42);
    assert_eq!(
        raw.get::<_, String>(format!("vana-sdk:atomic:{nonce_key}"))
            .unwrap(),
        "42"
    );
    assert_eq!(store.assign_nonce(&nonce_key, 50).await.unwrap(), 50);

    // set() clears a TTL; set_with_ttl sets one in milliseconds.
    store
        .set_with_ttl(&k("v"), "x", Duration::from_millis(1500))
        .await
        .unwrap();
    let pttl: i64 = raw.pttl(full("v")).unwrap();
    assert!(pttl > 1000 && pttl <= 1500, "pttl {pttl}");
    store.set(&k("v"), "y").await.unwrap();
    assert_eq!(raw.pttl::<_, i64>(full("v")).unwrap(), -1);
    assert_eq!(raw.get::<_, String>(full("v")).unwrap(), "y");

    for name in ["counter", "lock", "v"] {
        let _: () = raw.del(full(name)).unwrap();
    }
    let _: () = raw.del(format!("vana-sdk:atomic:{nonce_key}")).unwrap();
}

#[tokio::test]
async fn scripts_are_reloaded_after_the_server_forgets_them() {
    let store = atomic_store::open(&support::url("redis")).unwrap();
    let key = format!("noscript-{}", LockId::generate());
    let first = store
        .acquire_lock(&key, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    let _: () = redis::cmd("SCRIPT").arg("FLUSH").query(&mut raw()).unwrap();
    assert_eq!(
        store.release_lock(&key, &first.id).await.unwrap(),
        ReleaseOutcome::Released
    );
    let second = store
        .acquire_lock(&key, Duration::from_secs(5))
        .await
        .unwrap()
        .unwrap();
    assert!(second.fencing_token > first.fencing_token);
    store.release_lock(&key, &second.id).await.unwrap();
}

#[tokio::test]
async fn eval_returns_typed_values_with_prefixed_keys() {
    let run = LockId::generate().as_str()[..8].to_owned();
    let store = atomic_store::open(&with_params(
        &support::url("redis"),
        &format!("prefix=eval-{run}"),
    ))
    .unwrap();
    let v = store
        .eval("redis.call('SET', KEYS[1], ARGV[1]); return {KEYS[1], redis.call('GET', KEYS[1]), 7, false, redis.status_reply('FINE')}", &["k"], &["hello"])
        .await
        .unwrap();
    assert_eq!(
        v,
        EvalValue::Array(vec![
            EvalValue::Text(format!("eval-{run}:k")),
            EvalValue::Text("hello".into()),
            EvalValue::Integer(7),
            EvalValue::Nil,
            EvalValue::Status("FINE".into()),
        ])
    );
    assert_eq!(store.get("k").await.unwrap().as_deref(), Some("hello"));
    assert_eq!(
        store.eval("return nil", &[], &[]).await.unwrap(),
        EvalValue::Nil
    );
    let err = store
        .eval("return redis.error_reply('NOPE bad thing')", &[], &[])
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Script, "{err}");
    let err = store.eval("this is not lua", &[], &[]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Script, "{err}");
    store.delete("k").await.unwrap();
}

#[tokio::test]
async fn passwords_never_show_in_debug_or_errors() {
    let store =
        RedisStore::open("redis://user:hunter2secret@127.0.0.1:1/0?connect_timeout=300ms").unwrap();
    let debug = format!("{store:?}");
    assert!(
        !debug.contains("hunter2secret") && debug.contains("***"),
        "{debug}"
    );
    let err = atomic_store::AtomicStore::get(&store, "k")
        .await
        .unwrap_err();
    let shown = format!("{err} {err:?}");
    assert!(!shown.contains("hunter2secret"), "{shown}");
    let err = atomic_store::open("redis://user:hunter2secret@127.0.0.1:1?bogus=1").unwrap_err();
    assert!(!format!("{err} {err:?}").contains("hunter2secret"));
}

#[tokio::test]
async fn an_unreachable_server_is_a_temporary_error_for_every_operation() {
    let port = support::free_port();
    let store = atomic_store::open(&format!(
        "redis://127.0.0.1:{port}?connect_timeout=300ms&timeout=300ms"
    ))
    .unwrap();
    let started = std::time::Instant::now();
    let id = atomic_store::LockId::generate();
    let ttl = Duration::from_secs(1);
    let results: Vec<(&str, Result<(), atomic_store::Error>)> = vec![
        ("incr", store.incr("k").await.map(drop)),
        ("acquire_lock", store.acquire_lock("k", ttl).await.map(drop)),
        ("release_lock", store.release_lock("k", &id).await.map(drop)),
        (
            "extend_lock",
            store.extend_lock("k", &id, ttl).await.map(drop),
        ),
        ("get", store.get("k").await.map(drop)),
        ("set", store.set("k", "v").await.map(drop)),
        (
            "set_with_ttl",
            store.set_with_ttl("k", "v", ttl).await.map(drop),
        ),
        ("delete", store.delete("k").await.map(drop)),
        (
            "compare_and_set",
            store.compare_and_set("k", None, "v", None).await.map(drop),
        ),
        ("assign_nonce", store.assign_nonce("k", 0).await.map(drop)),
        ("eval", store.eval("return 1", &[], &[]).await.map(drop)),
        ("inspect", store.inspect("k").await.map(drop)),
        ("keys", store.keys("", 10).await.map(drop)),
        ("notify", store.notify("k").await.map(drop)),
        (
            "wait_notified",
            store.wait_notified("k", ttl).await.map(drop),
        ),
    ];
    assert_eq!(results.len(), 15, "one line per operation of the contract");
    for (op, result) in results {
        let err = result.expect_err(op);
        // Refused connections prove nothing was sent, even for incr.
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{op}: {err}");
        assert!(err.is_temporary(), "{op}: {err}");
        assert_eq!(err.operation().as_str(), op, "{err}");
    }
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Writes blocked on the server (`CLIENT PAUSE WRITE`, as during a
/// failover) until after the client gives up: `incr`, `assign_nonce` and
/// `eval` each end as OutcomeUnknown, are not resent, and run exactly once
/// when the pause ends (a resent one would show as a skipped value).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_lost_reply_is_outcome_unknown_and_never_resent() {
    let server = OwnRedis::start(&["--appendonly", "no"]);
    let store = atomic_store::open(&format!("{}?timeout=300ms", server.url())).unwrap();
    let script = "return redis.call('INCR', KEYS[1])";
    assert_eq!(store.incr("n").await.unwrap(), 1);
    assert_eq!(store.assign_nonce("nonce", 0).await.unwrap(), 0);
    assert_eq!(
        store.eval(script, &["e"], &[]).await.unwrap(),
        EvalValue::Integer(1)
    );
    let mut raw = server.raw();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(1500)
        .arg("WRITE")
        .query(&mut raw)
        .unwrap();
    let paused_at = std::time::Instant::now();
    let (incr, nonce, eval) = tokio::join!(
        store.incr("n"),
        store.assign_nonce("nonce", 0),
        store.eval(script, &["e"], &[]),
    );
    assert!(
        paused_at.elapsed() < Duration::from_millis(1400),
        "the calls outlasted the pause: the fault may not have landed"
    );
    for (name, err) in [
        ("incr", incr.unwrap_err()),
        ("assign_nonce", nonce.unwrap_err()),
        ("eval", eval.unwrap_err()),
    ] {
        assert_eq!(err.kind(), ErrorKind::OutcomeUnknown, "{name}: {err}");
        assert!(!err.is_temporary(), "{name}");
    }
    tokio::time::sleep(Duration::from_millis(1600).saturating_sub(paused_at.elapsed())).await;
    // Each unknown outcome ran once when the pause ended: the next values
    // are one past it. Twice (a resend) would skip a value.
    assert_eq!(store.get("n").await.unwrap().as_deref(), Some("2"));
    assert_eq!(store.incr("n").await.unwrap(), 3);
    assert_eq!(store.assign_nonce("nonce", 0).await.unwrap(), 2);
    assert_eq!(
        store.eval(script, &["e"], &[]).await.unwrap(),
        EvalValue::Integer(3)
    );
}

/// Kill -9 and restart the server (AOF on) under 8 incr loops (the shared
/// restart check: no value twice, work resumed after the restart, and the
/// counter neither behind a value handed out nor ahead of the increments
/// asked for).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn incr_survives_a_server_crash_without_duplicates() {
    let bin = server_url("ATOMIC_STORE_TEST_REDIS_SERVER");
    let mut server = OwnServer::start(move |port, dir| {
        let mut c = Command::new(&bin);
        c.args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .arg("--dir")
            .arg(dir)
            .args([
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
            ]);
        c
    });
    let store: Store = atomic_store::open(&format!(
        "redis://127.0.0.1:{}?timeout=500ms&connect_timeout=300ms",
        server.port
    ))
    .unwrap();
    assert_eq!(store.incr("crash-counter").await.unwrap(), 1);
    support::incr_loops_across_a_restart(
        store,
        "crash-counter",
        8,
        &mut server,
        Duration::from_secs(2),
    )
    .await;
}

/// A TCP proxy that sends each new connection to the upstream of the
/// moment (as a DNS name or virtual IP moves to the new primary after a
/// failover), and can silence the connections it already has: a half-open
/// socket, where requests go in, nothing comes back, and nothing closes.
struct MovableProxy {
    port: u16,
    upstream: Arc<AtomicU16>,
    /// Connections numbered below this are silenced.
    silenced_below: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl MovableProxy {
    async fn start(upstream: u16) -> MovableProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let upstream = Arc::new(AtomicU16::new(upstream));
        let silenced_below = Arc::new(AtomicUsize::new(0));
        let accepted = Arc::new(AtomicUsize::new(0));
        let connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accept = tokio::spawn({
            let (upstream, silenced_below, accepted, connections) = (
                upstream.clone(),
                silenced_below.clone(),
                accepted.clone(),
                connections.clone(),
            );
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    let number = accepted.fetch_add(1, Ordering::SeqCst);
                    let to = upstream.load(Ordering::SeqCst);
                    let Ok(mut server) = tokio::net::TcpStream::connect(("127.0.0.1", to)).await
                    else {
                        continue;
                    };
                    let silenced = {
                        let below = silenced_below.clone();
                        move || number < below.load(Ordering::SeqCst)
                    };
                    let task = tokio::spawn(async move {
                        let (client_read, client_write) = client.split();
                        let (server_read, server_write) = server.split();
                        tokio::select! {
                            _ = pass(client_read, server_write, silenced.clone()) => {}
                            _ = pass(server_read, client_write, silenced) => {}
                        }
                    });
                    connections.lock().unwrap().push(task.abort_handle());
                }
            }
        });
        MovableProxy {
            port,
            upstream,
            silenced_below,
            accepted,
            accept,
            connections,
        }
    }

    fn url(&self, params: &str) -> String {
        format!("redis://127.0.0.1:{}?{params}", self.port)
    }

    /// New connections go to `port`; open ones stay where they are.
    fn move_to(&self, port: u16) {
        self.upstream.store(port, Ordering::SeqCst);
    }

    /// Every connection open now stops forwarding, for good.
    fn silence_open_connections(&self) {
        self.silenced_below
            .store(self.accepted.load(Ordering::SeqCst), Ordering::SeqCst);
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for MovableProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

/// Copy `from` to `to` until either closes; once `silenced`, keep what is
/// read and never write again, nor close (the caller holds the sockets).
async fn pass(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    silenced: impl Fn() -> bool,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if silenced() {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

fn replica_of(server: &OwnRedis, primary: Option<&OwnRedis>) {
    let mut cmd = redis::cmd("REPLICAOF");
    match primary {
        Some(p) => cmd.arg("127.0.0.1").arg(p.port),
        None => cmd.arg("NO").arg("ONE"),
    };
    let _: () = cmd.query(&mut server.raw()).unwrap();
}

/// Waits (bounded) until `server` has synced with its primary.
fn wait_for_sync(server: &OwnRedis) {
    let mut raw = server.raw();
    for _ in 0..200 {
        let info: String = redis::cmd("INFO")
            .arg("replication")
            .query(&mut raw)
            .unwrap();
        if info.contains("master_link_status:up") {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("the replica on port {} never synced", server.port);
}

/// Waits (bounded) until `key` on `server` holds `value`.
fn wait_for_value(server: &OwnRedis, key: &str, value: &str) {
    let mut raw = server.raw();
    for _ in 0..200 {
        if raw.get::<_, Option<String>>(key).unwrap().as_deref() == Some(value) {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{key} never became {value} on port {}", server.port);
}

/// After a failover the old primary, now a replica, answers writes with
/// READONLY while the address leads new connections to the new primary:
/// the store drops the connection to the old one and goes on, without
/// being reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_a_failover_a_connection_to_the_old_primary_is_replaced() {
    let old = OwnRedis::start(&[]);
    let new = OwnRedis::start(&[]);
    replica_of(&new, Some(&old));
    let proxy = MovableProxy::start(old.port).await;
    let store = atomic_store::open(&proxy.url("timeout=1s&connect_timeout=1s")).unwrap();
    assert_eq!(store.incr("n").await.unwrap(), 1);
    assert_eq!(store.assign_nonce("nonce", 0).await.unwrap(), 0);
    wait_for_value(&new, "atomic:nonce", "0");
    wait_for_value(&new, "atomic:n", "1");

    replica_of(&new, None);
    replica_of(&old, Some(&new));
    proxy.move_to(new.port);
    wait_for_sync(&old);
    let refused: redis::RedisResult<()> = old.raw().set("atomic:n", "9");
    assert_eq!(
        refused.unwrap_err().kind(),
        redis::ErrorKind::Server(redis::ServerErrorKind::ReadOnly),
        "the old primary still takes writes: the failover did not happen"
    );

    assert_eq!(store.incr("n").await.unwrap(), 2);
    assert_eq!(proxy.connections(), 2, "the store did not reconnect");
    assert_eq!(store.assign_nonce("nonce", 0).await.unwrap(), 1);
    let lock = store
        .acquire_lock("lock", Duration::from_secs(5))
        .await
        .unwrap()
        .expect("a lock nobody holds");
    assert_eq!(
        store.release_lock("lock", &lock.id).await.unwrap(),
        ReleaseOutcome::Released
    );
    assert_eq!(new.raw().get::<_, String>("atomic:n").unwrap(), "2");
}

/// A connection that stops answering without closing (a half-open socket):
/// the request on it times out, and the store reconnects instead of
/// sending every later call into the same silence.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_connection_that_stops_answering_is_replaced() {
    let server = OwnRedis::start(&[]);
    let proxy = MovableProxy::start(server.port).await;
    let store = atomic_store::open(&proxy.url("timeout=300ms&connect_timeout=300ms")).unwrap();
    assert_eq!(store.incr("n").await.unwrap(), 1);

    proxy.silence_open_connections();
    let err = store.incr("n").await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::OutcomeUnknown, "{err}");
    // The silenced INCR never reached the server.
    assert_eq!(store.incr("n").await.unwrap(), 2);
    assert_eq!(proxy.connections(), 2, "the store did not reconnect");

    // A read that times out is retried on a new connection in the same call.
    proxy.silence_open_connections();
    assert_eq!(store.get("n").await.unwrap().as_deref(), Some("2"));
    assert_eq!(proxy.connections(), 3);
}

/// A connection reset with requests in flight (what a dying server does):
/// reads are retried, an `incr` is never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_connection_is_a_lost_reply() {
    let (proxy, url) = ResettingProxy::in_front_of(&support::url("redis")).await;
    let store = atomic_store::open(&with_params(&url, "timeout=3s&prefix=reset")).unwrap();
    support::resets_are_lost_replies(&store, &proxy).await;
}

/// A user whose ACL grants no pub/sub channels (Redis 7's default for new
/// users): the lock recipe's hand-over still completes, since its
/// PUBLISH is best effort, and waiters fall back to polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_lock_hand_over_works_for_a_user_without_channels() {
    use atomic_store::lock::DistributedLock;
    let user = format!("nochannels{}", &LockId::generate().as_str()[..8]);
    let _: () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg("reset")
        .arg("on")
        .arg(">secret")
        .arg("~*")
        .arg("resetchannels")
        .arg("+@all")
        .query(&mut raw())
        .unwrap();
    let base = support::url("redis");
    let url = base.replacen("redis://", &format!("redis://{user}:secret@"), 1);
    let store = atomic_store::open(&url).unwrap();
    let key = format!("nochannels:{}", &LockId::generate().as_str()[..8]);
    let lock = DistributedLock::new(store.clone(), key.clone(), Duration::from_secs(30))
        .turn_timeout(Duration::from_secs(2));
    let holder = lock.acquire(Duration::from_secs(5)).await.unwrap();
    // A waiter on another handle, whose subscription the server refuses.
    let other = DistributedLock::new(
        atomic_store::open(&url).unwrap(),
        key.clone(),
        Duration::from_secs(30),
    )
    .turn_timeout(Duration::from_secs(2));
    let waiter = tokio::spawn(async move { other.acquire(Duration::from_secs(20)).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        holder.release().await.unwrap(),
        ReleaseOutcome::Released,
        "the release failed on the refused PUBLISH"
    );
    let guard = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter did not find the hand-over by polling")
        .unwrap()
        .unwrap();
    guard.release().await.unwrap();
    let _: () = redis::cmd("ACL")
        .arg("DELUSER")
        .arg(&user)
        .query(&mut raw())
        .unwrap();
}
