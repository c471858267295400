//! The ZooKeeper backend against a standalone server and a 3-server
//! ensemble started by `scripts/test`, and an ensemble of the test's own
//! for the fault test.
#![cfg(feature = "zookeeper")]

mod support;

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomic_store::conformance::Store;
use atomic_store::zookeeper::{encode_name, SessionStatus, ZookeeperStore};
use atomic_store::{AtomicStore, ErrorKind, LockId};
use support::{OwnZkEnsemble, ResettingProxy};

// The boxed run is on the three-server ensemble.
support::conformance_suite!(url: support::url("zk"), boxed: ZookeeperStore::open(&support::url("zk_ensemble")).unwrap());

/// Keys map to one znode each, under the chroot, by the documented encoding.
#[tokio::test]
async fn keys_are_znodes_under_the_chroot() {
    let run = LockId::generate().as_str()[..8].to_owned();
    let chroot = format!("/chroot-{run}");
    let raw = zookeeper_client::Client::connect(&support::url("zk").replace("zk://", ""))
        .await
        .unwrap();
    let open =
        zookeeper_client::CreateMode::Persistent.with_acls(zookeeper_client::Acls::anyone_all());
    raw.create(&chroot, &[], &open).await.unwrap();
    let store = atomic_store::open(&format!("{}{chroot}", support::url("zk"))).unwrap();
    for key in ["..", "zookeeper", "a/b", "ünï"] {
        store.set(key, "v").await.unwrap();
        let path = format!(
            "{chroot}/atomic-store/{}",
            encode_name(&format!("atomic:{key}"))
        );
        let (data, _) = raw.get_data(&path).await.unwrap();
        assert!(data.ends_with(b"v"), "{path}");
    }
    let listed: HashSet<String> = store.keys("", 10).await.unwrap().into_iter().collect();
    assert_eq!(
        listed,
        ["..", "zookeeper", "a/b", "ünï"]
            .iter()
            .map(|s| s.to_string())
            .collect()
    );
}

/// A connection reset with requests in flight (what a dying server does).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_connection_is_a_lost_reply() {
    let (proxy, url) = ResettingProxy::in_front_of(&support::url("zk")).await;
    let url = format!("{url}?timeout=3s&session_timeout=10s&prefix=reset");
    support::resets_are_lost_replies(&atomic_store::open(&url).unwrap(), &proxy).await;
}

/// What `srvr` says about one server: its role, and how many client
/// connections it holds (the `srvr` connection itself included). `None`
/// while it is down or not serving (an election).
fn srvr(port: u16) -> Option<(String, usize)> {
    use std::io::{Read, Write};
    let mut conn = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    conn.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    conn.write_all(b"srvr").ok()?;
    let mut reply = String::new();
    conn.read_to_string(&mut reply).ok()?;
    let field = |name: &str| {
        reply
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|v| v.trim().to_owned())
    };
    Some((field("Mode:")?, field("Connections:")?.parse().ok()?))
}

/// The server holding the store's connection: the only one with a client
/// connection besides the `srvr` one. Waits for the ensemble to settle.
async fn connected_server(ports: &[u16], down: Option<usize>) -> usize {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let holding: Vec<usize> = (0..ports.len())
            .filter(|&i| Some(i) != down)
            .filter(|&i| srvr(ports[i]).is_some_and(|(_, connections)| connections >= 2))
            .collect();
        if let [one] = holding[..] {
            return one;
        }
        assert!(
            Instant::now() < give_up,
            "no single server holds the store's connection: {holding:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn leader(ports: &[u16]) -> usize {
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let leaders: Vec<usize> = (0..ports.len())
            .filter(|&i| srvr(ports[i]).is_some_and(|(mode, _)| mode == "leader"))
            .collect();
        if let [one] = leaders[..] {
            return one;
        }
        assert!(Instant::now() < give_up, "no single leader: {leaders:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Victim {
    /// The server the store's session is connected to.
    ClientsServer,
    Leader,
}

/// Kill one server of a 3-server ensemble (`victim`, found with `srvr`)
/// while 8 tasks run incr and lock loops. Besides the loops' own checks:
/// the kill was seen by the client (its connection dropped: it left
/// `Connected`, or it is now on another server), and the session was
/// resumed, not replaced.
async fn kill_under_load(victim: Victim) {
    let mut ensemble = OwnZkEnsemble::start();
    let ports = ensemble.client_ports.clone();
    // A session timeout well above a re-election on a loaded machine: the
    // check is that the session is resumed, not how fast.
    let url = format!("{}?timeout=3s&session_timeout=20s", ensemble.url());
    let zk = Arc::new(ZookeeperStore::open(&url).unwrap());
    let store: Store = zk.clone();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.incr("warmup").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the test ensemble did not come up"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (session, status) = zk.session().unwrap();
    assert_eq!(status, SessionStatus::Connected);
    let on = connected_server(&ports, None).await;
    let target = match victim {
        Victim::ClientsServer => on,
        Victim::Leader => leader(&ports).await,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let left_connected = Arc::new(AtomicBool::new(false));
    let watch = tokio::spawn({
        let (zk, stop, left) = (zk.clone(), stop.clone(), left_connected.clone());
        async move {
            while !stop.load(Ordering::Relaxed) {
                if zk.session().map(|(_, s)| s) != Some(SessionStatus::Connected) {
                    left.store(true, Ordering::Relaxed);
                }
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    });
    support::incr_and_lock_loops_across_a_kill(
        &store,
        async { ensemble.kill(target) },
        Duration::from_secs(6),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    watch.await.unwrap();
    let now_on = connected_server(&ports, Some(target)).await;
    let left_connected = left_connected.load(Ordering::Relaxed);
    assert!(
        left_connected || now_on != on,
        "killing server {target} ({victim:?}) was never seen: the session stayed connected to server {on}"
    );
    assert_eq!(
        zk.session().unwrap(),
        (session, SessionStatus::Connected),
        "the session was replaced instead of resumed on server {now_on}"
    );
    eprintln!("{victim:?}: killed server {target}; the session moved from server {on} to {now_on}; disconnect seen: {left_connected}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_clients_server_loses_nothing_and_breaks_no_lock() {
    kill_under_load(Victim::ClientsServer).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_loses_nothing_and_breaks_no_lock() {
    kill_under_load(Victim::Leader).await;
}

/// Stop the whole ensemble for longer than the session timeout: the
/// session expires (the client gives it up after 7/5 of the timeout
/// without a server), and the store opens a new one by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_session_is_replaced() {
    let mut ensemble = OwnZkEnsemble::start();
    let url = format!("{}?timeout=2s&session_timeout=2s", ensemble.url());
    let store = ZookeeperStore::open(&url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    while store.incr("n").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the test ensemble did not come up"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let (first, status) = store.session().unwrap();
    assert_eq!(status, SessionStatus::Connected);
    for i in 0..3 {
        ensemble.kill(i);
    }
    let err = store.incr("n").await.unwrap_err();
    assert!(
        matches!(
            err.kind(),
            ErrorKind::Unavailable | ErrorKind::OutcomeUnknown
        ),
        "{err}"
    );
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        store.session(),
        Some((first, SessionStatus::Expired)),
        "the session did not expire"
    );
    for i in 0..3 {
        ensemble.restart(i);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let value = loop {
        match store.incr("n").await {
            Ok(v) => break v,
            Err(e) => {
                assert!(Instant::now() < deadline, "the store stayed unusable: {e}");
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }
    };
    assert!(value >= 2, "the counter restarted: {value}");
    let (second, status) = store.session().unwrap();
    assert_eq!(status, SessionStatus::Connected);
    assert_ne!(second, first, "the expired session was not replaced");
}

/// A lock is taken over only a margin after its deadline: 250 ms plus the
/// taker's clock error, and the holder's deadline is at most one error
/// (under 125 ms) early, so the takeover cannot come before the acquire
/// began + TTL + 125 ms. (There was no margin at all.) Holder and taker
/// are separate stores, each with its own estimate of the server's clock.
#[tokio::test]
async fn an_expired_lock_is_taken_over_only_after_the_margin() {
    let holder = atomic_store::open(&support::url("zk")).unwrap();
    let taker = atomic_store::open(&support::url("zk")).unwrap();
    let key = format!("margin-{}", LockId::generate());
    taker.get(&key).await.unwrap();
    let ttl = Duration::from_millis(500);
    let started = Instant::now();
    holder.acquire_lock(&key, ttl).await.unwrap().unwrap();
    let give_up = started + ttl + Duration::from_secs(5);
    let taken_after = loop {
        if taker.acquire_lock(&key, ttl).await.unwrap().is_some() {
            break started.elapsed();
        }
        assert!(Instant::now() < give_up, "never taken over");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(
        taken_after >= ttl + Duration::from_millis(125),
        "taken over {taken_after:?} after the acquire began, with a TTL of {ttl:?}"
    );
}

fn run_id() -> String {
    LockId::generate().as_str()[..10].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_and_plain_callers_keep_one_holder() {
    let store: Store = atomic_store::open(&support::url("zk")).unwrap();
    support::queue::storm(store, &format!("storm-{}", run_id()), 100).await;
}

/// Through a watch on the waiter's own node, which the hand-over deletes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_over_wakes_its_waiter_on_another_handle() {
    let url = support::url("zk");
    support::queue::hand_over_wakes_its_waiter(
        atomic_store::open(&url).unwrap(),
        atomic_store::open(&url).unwrap(),
        &format!("wake-{}", run_id()),
    )
    .await;
}

/// Waiters are ephemeral sequential children of the lock's znode, named
/// after their id and owned by the store's session; the hand-over's token
/// is the zxid of its multi; `purge` removes the queue with the node, and
/// a notify leaves no node behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_nodes_are_named_ephemeral_children() {
    use atomic_store::{QueueEntry, QueueTurn, ReleaseOutcome};
    let url = support::url("zk");
    let store = ZookeeperStore::open(&url).unwrap();
    let raw = zookeeper_client::Client::connect(&url.replace("zk://", ""))
        .await
        .unwrap();
    let key = format!("queue-{}", run_id());
    let path = format!("/atomic-store/{}", encode_name(&format!("atomic:{key}")));
    let ttl = Duration::from_secs(30);
    let entry = |w| QueueEntry {
        waiter: w,
        ttl,
        presence: Some(ttl),
    };
    let holder = LockId::generate();
    let Ok(QueueTurn::Acquired(held)) = store.lock_queue_enter(&key, entry(&holder)).await else {
        panic!("a free lock with no queue was not taken");
    };
    let (first, second) = (LockId::generate(), LockId::generate());
    for w in [&first, &second] {
        let turn = store.lock_queue_enter(&key, entry(w)).await.unwrap();
        assert!(matches!(turn, QueueTurn::Waiting { .. }), "{turn:?}");
    }
    let (session, _) = store.session().unwrap();
    let children = raw.list_children(&path).await.unwrap();
    assert_eq!(children.len(), 2, "{children:?}");
    for (w, ahead) in [(&first, 0), (&second, 1)] {
        let name = children
            .iter()
            .find(|c| c.starts_with(&format!("_c_{w}-w")))
            .expect("named after the waiter");
        let sequence: i64 = name.rsplit_once("-w").unwrap().1.parse().unwrap();
        let before = children
            .iter()
            .filter(|c| c.rsplit_once("-w").unwrap().1.parse::<i64>().unwrap() < sequence)
            .count();
        assert_eq!(before, ahead, "queue order is the sequence");
        let (_, stat) = raw.get_data(&format!("{path}/{name}")).await.unwrap();
        assert_eq!(
            stat.ephemeral_owner, session,
            "owned by the store's session"
        );
    }
    let handover = store
        .lock_queue_release(&key, &held.id, Duration::from_secs(5))
        .await
        .unwrap();
    let next = handover.next.expect("handed over");
    assert_eq!(next.waiter, first);
    let (_, stat) = raw.get_data(&path).await.unwrap();
    assert_eq!(stat.mzxid as u64, next.fencing_token);
    assert!(next.fencing_token > held.fencing_token);
    assert_eq!(
        raw.list_children(&path).await.unwrap().len(),
        1,
        "the new holder's node went with the hand-over"
    );
    store.extend_lock(&key, &first, ttl).await.unwrap();
    assert_eq!(
        store.inspect(&key).await.unwrap().fencing_token,
        Some(next.fencing_token),
        "an extension keeps the token"
    );
    store.purge(&key).await.unwrap();
    assert!(raw.check_stat(&path).await.unwrap().is_none(), "purged");
    assert_eq!(
        store.release_lock(&key, &first).await.unwrap(),
        ReleaseOutcome::NotHeld
    );
    // A notify fires the watch and leaves nothing.
    let listening = {
        let store = ZookeeperStore::open(&url).unwrap();
        let key = key.clone();
        tokio::spawn(async move { store.wait_notified(&key, Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    store.notify(&key).await.unwrap();
    assert!(listening.await.unwrap().unwrap(), "not woken");
    assert!(raw
        .list_children("/atomic-store-notify")
        .await
        .unwrap()
        .iter()
        .all(|c| !c.contains(&encode_name(&key))));
}

/// A waiter passed over (its node deleted) joins again with a new node,
/// and its wake-ups follow the new node. Before, the handle still knew the
/// old node, found it gone, and woke the waiter at once on every wait: a
/// loop of round trips until it got the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_that_joined_again_waits_on_its_new_node() {
    use atomic_store::{QueueEntry, QueueTurn};
    let url = support::url("zk");
    let store = ZookeeperStore::open(&url).unwrap();
    let raw = zookeeper_client::Client::connect(&url.replace("zk://", ""))
        .await
        .unwrap();
    let key = format!("rejoin-{}", run_id());
    let path = format!("/atomic-store/{}", encode_name(&format!("atomic:{key}")));
    let held = store
        .acquire_lock(&key, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let waiter = LockId::generate();
    let entry = QueueEntry {
        waiter: &waiter,
        ttl: Duration::from_secs(30),
        presence: Some(Duration::from_secs(30)),
    };
    let wake = format!("{key}:queue:w{}", &waiter.as_str()[..16]);
    for round in 0..2 {
        let turn = store.lock_queue_enter(&key, entry).await.unwrap();
        assert!(matches!(turn, QueueTurn::Waiting { .. }), "{turn:?}");
        let started = Instant::now();
        let woken = store
            .wait_notified(&wake, Duration::from_millis(300))
            .await
            .unwrap();
        assert!(
            !woken && started.elapsed() >= Duration::from_millis(250),
            "round {round}: woken after {:?} with nothing handed",
            started.elapsed()
        );
        // Passed over, as a releaser does with a lapsed waiter.
        for child in raw.list_children(&path).await.unwrap() {
            raw.delete(&format!("{path}/{child}"), None).await.unwrap();
        }
    }
    store.release_lock(&key, &held.id).await.unwrap();
}
