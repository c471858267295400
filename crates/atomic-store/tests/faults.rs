//! The fault harness on every network backend: concurrent `incr`,
//! `assign_nonce`, `compare_and_set` and lock histories recorded while
//! network faults (through a proxy) or a paused server come and go, then
//! checked for linearizability, for counter values given twice or skipped,
//! and for errors other than network errors. Every phase must show that
//! its fault landed, so a bypassed proxy fails the test.

mod support;

use std::time::{Duration, Instant};

use atomic_store::conformance::Store;
use support::broken::resending;
use support::faults::{
    linearizable_under_faults, proxy_phases, resets_are_lost_replies, Expect, Fault, Pause, Phase,
};
use support::servers::{own_dynalite, own_etcd, own_mongodb, own_zookeeper, OwnRedis};
use support::{server_url, with_params, FaultProxy};

/// The per-call timeout the stores get here: short, so that faults longer
/// than it fit in a few seconds.
const TIMEOUT: Duration = Duration::from_secs(1);

/// Each backend's URL parameters for a short timeout (and, where the
/// driver has one, a short connect timeout). MongoDB's driver also checks
/// a server it marked down only every `heartbeatFrequencyMS` (10 s by
/// default), which can outlast a phase's settling time after a long fault.
fn timeouts(url: &str) -> &'static str {
    match url.split("://").next().unwrap() {
        "postgres" => "timeout=1s&connect_timeout=1",
        "mysql" => "timeout=1s&connect_timeout=1s",
        "etcd" => "timeout=1s&connect_timeout=1s",
        "dynamodb" => "timeout=1s&connect_timeout=500ms",
        "mongodb" => {
            "timeout=1s&serverSelectionTimeoutMS=1000&connectTimeoutMS=1000&heartbeatFrequencyMS=500"
        }
        _ => "timeout=1s",
    }
}

/// A store on `url` through a fault proxy.
async fn through_proxy(url: &str) -> (FaultProxy, Store) {
    let (proxy, proxied) = FaultProxy::in_front_of(url).await;
    let url = with_params(&proxied, timeouts(url));
    let store = atomic_store::open(&with_params(&url, "prefix=faults")).unwrap();
    (proxy, store)
}

async fn proxy_faults(var: &str) {
    let (proxy, store) = through_proxy(&server_url(var)).await;
    linearizable_under_faults(&store, Some(&proxy), None, &proxy_phases(TIMEOUT)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_under_network_faults() {
    proxy_faults("ATOMIC_STORE_TEST_REDIS_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_under_network_faults() {
    proxy_faults("ATOMIC_STORE_TEST_POSTGRES_URL").await;
}

#[cfg(feature = "mysql")]
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mysql_under_network_faults() {
    proxy_faults("ATOMIC_STORE_TEST_MYSQL_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_under_network_faults() {
    proxy_faults("ATOMIC_STORE_TEST_ETCD_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zookeeper_under_network_faults() {
    proxy_faults("ATOMIC_STORE_TEST_ZK_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_under_network_faults() {
    proxy_faults("ATOMIC_STORE_TEST_DYNAMODB_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_under_network_faults() {
    proxy_faults("ATOMIC_STORE_TEST_MONGODB_URL").await;
}

/// Phases around one pause of the server.
fn pause_phases(name: &str, expect: &[Expect]) -> Vec<Phase> {
    let mut quiet = Phase::new(
        "no fault",
        Fault::Nothing,
        Duration::from_millis(500),
        &[Expect::Successes],
    );
    quiet.settle = Duration::from_secs(1);
    // Outlasts a read's three tries, like the proxy phases that expect errors.
    let mut paused = Phase::new(
        name,
        Fault::Pause,
        TIMEOUT * 3 + Duration::from_millis(500),
        expect,
    );
    paused.settle = Duration::from_secs(3);
    vec![quiet, paused]
}

/// Open `url` once the server behind it answers.
async fn open_when_ready(url: &str) -> Store {
    let store = atomic_store::open(&with_params(url, timeouts(url))).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = store.incr("ready").await {
        assert!(Instant::now() < deadline, "{url} never became ready: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store
}

/// The harness around a SIGSTOP of the server process `pid` behind `url`.
async fn paused_process(pid: u32, url: &str) {
    let store = open_when_ready(url).await;
    let pause = Pause::Processes(vec![pid]);
    linearizable_under_faults(
        &store,
        None,
        Some(&pause),
        &pause_phases(
            "server stopped (SIGSTOP)",
            &[Expect::NoSuccess, Expect::Errors],
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stopped_by_sigstop() {
    let server = OwnRedis::start(&[]);
    paused_process(server.pid(), &server.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_client_pause() {
    let server = OwnRedis::start(&[]);
    let store = open_when_ready(&server.url()).await;
    let pause = Pause::RedisClients(server.url());
    linearizable_under_faults(
        &store,
        None,
        Some(&pause),
        &pause_phases("CLIENT PAUSE", &[Expect::NoSuccess, Expect::Errors]),
    )
    .await;
}

/// The test's own PostgreSQL sessions stopped (the backend processes that
/// serve them), on the shared server: other sessions go on, so only
/// errors are expected, not a standstill.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_sessions_stopped_by_sigstop() {
    let direct = support::url("postgres");
    let name = format!("faults-{}", &atomic_store::LockId::generate().as_str()[..8]);
    let store = open_when_ready(&with_params(
        &direct,
        &format!("application_name={name}&prefix=faults"),
    ))
    .await;
    let pause = Pause::PostgresBackends {
        control: atomic_store::open(&direct).unwrap(),
        application_name: name,
    };
    linearizable_under_faults(
        &store,
        None,
        Some(&pause),
        &pause_phases("sessions stopped (SIGSTOP)", &[Expect::Errors]),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_stopped_by_sigstop() {
    let server = own_etcd();
    paused_process(server.pid(), &format!("etcd://127.0.0.1:{}", server.port)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zookeeper_stopped_by_sigstop() {
    let server = own_zookeeper();
    paused_process(server.pid(), &format!("zk://127.0.0.1:{}", server.port)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_stopped_by_sigstop() {
    let server = own_dynalite();
    let url = format!(
        "dynamodb://faults?region=us-east-1&endpoint=http://127.0.0.1:{}&create_table=true",
        server.port
    );
    paused_process(server.pid(), &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_stopped_by_sigstop() {
    let server = own_mongodb();
    let url = format!(
        "mongodb://127.0.0.1:{}/faults?directConnection=true",
        server.port
    );
    paused_process(server.pid(), &url).await;
}

/// The checks fail when the fault never reaches the client: a store that
/// bypasses the proxy fails the reset test and the harness.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_bypassed_proxy_fails_the_checks() {
    let direct = support::url("redis");
    let (proxy, _) = FaultProxy::in_front_of(&direct).await;
    let bypassing = atomic_store::open(&with_params(&direct, "timeout=1s&prefix=bypass")).unwrap();

    let resets = tokio::spawn({
        let store = bypassing.clone();
        let (unused, _) = FaultProxy::in_front_of(&direct).await;
        async move { resets_are_lost_replies(&store, &unused).await }
    })
    .await;
    assert!(
        resets.is_err_and(|e| e.is_panic()),
        "the reset test passed without its fault"
    );

    let phases = vec![Phase::new(
        "black hole",
        Fault::Proxy(support::Faults::black_hole()),
        Duration::from_secs(1),
        &[Expect::NoSuccess],
    )];
    let harness = tokio::spawn(async move {
        linearizable_under_faults(&bypassing, Some(&proxy), None, &phases).await;
    })
    .await;
    assert!(
        harness.is_err_and(|e| e.is_panic()),
        "the harness passed without its fault"
    );
}

/// The harness catches a store that resends after a lost reply (issue 12,
/// item 1: a lost reply taken for a request never sent), on a real server
/// through the proxy, under resets alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_that_resends_after_a_lost_reply_is_caught() {
    let (proxy, store) = through_proxy(&support::url("redis")).await;
    let store = resending(store);
    let phases = vec![Phase::new(
        "resets with replies in flight",
        Fault::Resets {
            every: Duration::from_millis(250),
        },
        Duration::from_secs(3),
        // The resends hide the errors the fault causes.
        &[],
    )];
    let caught = tokio::spawn(async move {
        linearizable_under_faults(&store, Some(&proxy), None, &phases).await;
    })
    .await
    .expect_err("the harness passed a store that resends after a lost reply");
    let message = caught
        .try_into_panic()
        .ok()
        .and_then(|p| p.downcast_ref::<String>().cloned())
        .unwrap_or_default();
    assert!(
        message.contains("not linearizable")
            || message.contains("applied twice")
            // The nonce leases' check, when it sees a resent CAS first (a
            // nonce taken twice, or lost).
            || message.starts_with("nonce leases:"),
        "the harness failed, but not on the resends: {message}"
    );
}

/// The lock guard's loss signal on a real server through the proxy, with
/// renewals that never come back (a black hole) or come back later than the
/// TTL (latency): `lost()` fires before another client, talking to the
/// server directly, can take the lock. A fault that does not land keeps the
/// guard renewing, and the other client never gets the lock.
async fn loss_signal_before_takeover(var: &str) {
    use atomic_store::lock::DistributedLock;
    let url = server_url(var);
    let direct = atomic_store::open(&with_params(
        &with_params(&url, timeouts(&url)),
        "prefix=faults",
    ))
    .unwrap();
    let ttl = Duration::from_millis(1500);
    for (name, faults) in [
        ("black hole", support::Faults::black_hole()),
        (
            "replies later than the TTL",
            support::Faults::latency(Duration::ZERO, ttl + Duration::from_secs(1)),
        ),
    ] {
        let (proxy, store) = through_proxy(&url).await;
        let key = format!("loss-signal-{}", atomic_store::LockId::generate());
        let lock = DistributedLock::new(store, key.clone(), ttl).auto_renew(true);
        let guard = lock.acquire(Duration::from_secs(5)).await.unwrap();
        let lost = guard.lost();
        let fired = tokio::spawn(async move {
            lost.cancelled().await;
            Instant::now()
        });
        // Past the first renewal, so the guard relies on renewing.
        tokio::time::sleep(ttl * 2 / 3).await;
        assert!(!guard.is_lost(), "{var}, {name}: lost before any fault");
        let fault_at = Instant::now();
        proxy.set(faults);
        let taken_at = loop {
            if direct.acquire_lock(&key, ttl).await.unwrap().is_some() {
                break Instant::now();
            }
            assert!(
                fault_at.elapsed() < Duration::from_secs(30),
                "{var}, {name}: the lock was never free (did the fault land?)"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        assert!(
            guard.is_lost(),
            "{var}, {name}: another client took the lock {:?} after the fault, before the loss signal",
            taken_at - fault_at
        );
        let fired = fired.await.unwrap();
        println!(
            "{var}, {name}: lost() {:?} after the fault, {:?} before another client took the lock",
            fired - fault_at,
            taken_at - fired
        );
        proxy.set(support::Faults::none());
        drop(guard);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_loss_signal_before_takeover() {
    loss_signal_before_takeover("ATOMIC_STORE_TEST_REDIS_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_loss_signal_before_takeover() {
    loss_signal_before_takeover("ATOMIC_STORE_TEST_POSTGRES_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_loss_signal_before_takeover() {
    loss_signal_before_takeover("ATOMIC_STORE_TEST_ETCD_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zookeeper_loss_signal_before_takeover() {
    loss_signal_before_takeover("ATOMIC_STORE_TEST_ZK_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dynamodb_loss_signal_before_takeover() {
    loss_signal_before_takeover("ATOMIC_STORE_TEST_DYNAMODB_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn mongodb_loss_signal_before_takeover() {
    loss_signal_before_takeover("ATOMIC_STORE_TEST_MONGODB_URL").await;
}

/// The lock recipe and the semaphore through a fault proxy: 8 tasks take
/// turns while latency, black holes, connection resets and lost replies
/// come and go. A task may enter only while fewer than the bound (1, or the
/// permits) of the others inside have no loss signal yet: a hold whose
/// loss the recipe has not yet signalled is still a hold. Every phase's
/// fault must show in the errors, and turns must resume once it ends.
async fn recipes_under_network_faults(var: &str) {
    use atomic_store::lock::{CancellationToken, DistributedLock, Semaphore};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};
    use support::Faults;

    let (proxy, store) = through_proxy(&server_url(var)).await;
    let ttl = Duration::from_millis(1500);
    let ms = Duration::from_millis;
    for permits in [None, Some(2u32)] {
        let bound = permits.unwrap_or(1) as usize;
        let key = format!("recipe-faults-{}", atomic_store::LockId::generate());
        let lock = DistributedLock::new(Arc::clone(&store), key.clone(), ttl)
            .auto_renew(true)
            .turn_timeout(ms(500));
        let sem = Semaphore::new(Arc::clone(&store), key, bound as u32, ttl)
            .auto_renew(true)
            .turn_timeout(ms(500));
        let inside: Arc<Mutex<Vec<(usize, CancellationToken)>>> = Arc::default();
        let (stop, turns, errors) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let mut tasks = Vec::new();
        for task in 0..8 {
            let (lock, sem, inside) = (lock.clone(), sem.clone(), Arc::clone(&inside));
            let (stop, turns, errors) =
                (Arc::clone(&stop), Arc::clone(&turns), Arc::clone(&errors));
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    // Shorter than a fault: a waiter gives up within it.
                    let wait = Duration::from_secs(1);
                    let held = match permits {
                        None => lock.acquire(wait).await.map(|g| (g.lost(), Ok(g))),
                        Some(_) => sem.acquire(wait).await.map(|p| (p.lost(), Err(p))),
                    };
                    let (lost, held) = match held {
                        Ok(held) => held,
                        Err(e) => {
                            assert_ne!(e.kind(), atomic_store::ErrorKind::InvalidArgument, "{e}");
                            if errors.fetch_add(1, Ordering::Relaxed) < 3 {
                                println!("task {task}: {e}");
                            }
                            tokio::time::sleep(ms(10)).await;
                            continue;
                        }
                    };
                    let live: Vec<usize> = {
                        let mut inside = inside.lock().unwrap_or_else(|e| e.into_inner());
                        let live = inside
                            .iter()
                            .filter(|(_, lost)| !lost.is_cancelled())
                            .map(|(t, _)| *t)
                            .collect();
                        inside.push((task, lost.clone()));
                        live
                    };
                    assert!(
                        live.len() < bound,
                        "task {task} entered while {live:?} held with no loss signal (bound {bound})"
                    );
                    tokio::select! {
                        _ = lost.cancelled() => {}
                        _ = tokio::time::sleep(ms(5)) => {}
                    }
                    inside
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .retain(|(t, _)| *t != task);
                    turns.fetch_add(1, Ordering::Relaxed);
                    let released = match held {
                        Ok(guard) => guard.release().await,
                        Err(permit) => permit.release().await,
                    };
                    if released.is_err() {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }));
        }
        let name = if permits.is_some() {
            "semaphore"
        } else {
            "lock"
        };
        let phases = [
            ("no fault", None, ms(1000)),
            (
                "40 ms latency",
                Some(Faults::latency(ms(40), ms(40))),
                ms(1500),
            ),
            ("black hole", Some(Faults::black_hole()), ms(2500)),
            ("replies dropped", Some(Faults::drop_replies()), ms(2500)),
            ("resets", None, ms(2000)),
        ];
        for (phase, faults, length) in phases {
            let (turns_before, errors_before) = (
                turns.load(Ordering::Relaxed),
                errors.load(Ordering::Relaxed),
            );
            let started = Instant::now();
            match faults {
                Some(faults) => proxy.set(faults),
                None if phase == "resets" => {
                    while started.elapsed() < length {
                        tokio::time::sleep(ms(250)).await;
                        proxy.reset_connections();
                    }
                }
                None => {}
            }
            tokio::time::sleep(length.saturating_sub(started.elapsed())).await;
            proxy.reset().await;
            let (turns_in, errors_in) = (
                turns.load(Ordering::Relaxed) - turns_before,
                errors.load(Ordering::Relaxed) - errors_before,
            );
            println!("{var}, {name}, {phase}: {turns_in} turns, {errors_in} errors");
            if phase == "no fault" {
                assert!(turns_in > 0, "{var}, {name}: no turn in phase {phase}");
            } else if phase == "40 ms latency" {
                // Slow turns: a waiter far back may give up before its own.
                assert!(
                    turns_in + errors_in > 0,
                    "{var}, {name}: nothing in phase {phase}"
                );
            } else {
                assert!(errors_in > 0, "{var}, {name}: phase {phase} did not land");
            }
            // Turns resume once the fault is gone.
            let resumed = turns.load(Ordering::Relaxed);
            let deadline = Instant::now() + Duration::from_secs(15);
            while turns.load(Ordering::Relaxed) == resumed {
                assert!(
                    Instant::now() < deadline,
                    "{var}, {name}: no turn within 15 s after phase {phase}"
                );
                tokio::time::sleep(ms(10)).await;
            }
        }
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await
                .unwrap_or_else(|e| std::panic::resume_unwind(e.into_panic()));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_recipes_under_network_faults() {
    recipes_under_network_faults("ATOMIC_STORE_TEST_REDIS_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_recipes_under_network_faults() {
    recipes_under_network_faults("ATOMIC_STORE_TEST_POSTGRES_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn etcd_recipes_under_network_faults() {
    recipes_under_network_faults("ATOMIC_STORE_TEST_ETCD_URL").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn zookeeper_recipes_under_network_faults() {
    recipes_under_network_faults("ATOMIC_STORE_TEST_ZK_URL").await;
}
