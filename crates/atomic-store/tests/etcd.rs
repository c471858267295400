//! The etcd backend against a single member and a 3-member cluster started
//! by `scripts/test`, and a cluster of the test's own for the fault test.
#![cfg(feature = "etcd")]

mod support;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use atomic_store::conformance::Store;
use atomic_store::etcd::EtcdStore;
use atomic_store::{ErrorKind, LockId, ReleaseOutcome};
use support::{OwnEtcdCluster, ResettingProxy};

fn endpoint(url: &str) -> String {
    format!(
        "http://{}",
        url.trim_start_matches("etcd://").split(',').next().unwrap()
    )
}

// The boxed run is on the three-member cluster.
support::conformance_suite!(url: support::url("etcd"), boxed: EtcdStore::open(&support::url("etcd_cluster")).unwrap());

#[tokio::test]
async fn a_dead_endpoint_in_the_list_is_skipped() {
    let dead = support::free_port();
    let url = format!(
        "etcd://127.0.0.1:{dead},{}?connect_timeout=500ms",
        support::url("etcd").trim_start_matches("etcd://")
    );
    let store = atomic_store::open(&url).unwrap();
    let key = format!("failover-{}", LockId::generate());
    assert_eq!(store.incr(&key).await.unwrap(), 1);
    store.delete(&key).await.unwrap();
}

#[tokio::test]
async fn overwritten_and_deleted_keys_leave_no_lease_behind() {
    // Only this test's own keys' leases are looked at: other tests in this
    // binary create leases on the same server at the same time.
    let mut raw = etcd_client::Client::connect([endpoint(&support::url("etcd"))], None)
        .await
        .unwrap();
    let store = atomic_store::open(&support::url("etcd")).unwrap();
    let key = format!("lease-{}", LockId::generate());
    let lock_key = format!("{key}-lock");
    let lease_of = {
        let raw = raw.clone();
        move |k: String| {
            let mut raw = raw.clone();
            async move {
                let resp = raw.get(format!("atomic:{k}"), None).await.unwrap();
                resp.kvs().first().map_or(0, |kv| kv.lease())
            }
        }
    };
    let live = |resp: etcd_client::LeaseLeasesResponse| -> HashSet<i64> {
        resp.leases().iter().map(|l| l.id()).collect()
    };
    store
        .set_with_ttl(&key, "a", Duration::from_secs(3600))
        .await
        .unwrap();
    let first = lease_of(key.clone()).await;
    store
        .set_with_ttl(&key, "b", Duration::from_secs(3600))
        .await
        .unwrap();
    let second = lease_of(key.clone()).await;
    let lock = store
        .acquire_lock(&lock_key, Duration::from_secs(3600))
        .await
        .unwrap()
        .unwrap();
    let taken = lease_of(lock_key.clone()).await;
    store
        .extend_lock(&lock_key, &lock.id, Duration::from_secs(7200))
        .await
        .unwrap();
    let extended = lease_of(lock_key.clone()).await;
    let during = live(raw.leases().await.unwrap());
    assert!(first != 0 && second != 0 && taken != 0 && extended != 0);
    assert!(
        during.contains(&second) && during.contains(&extended) && second != extended,
        "one live lease per live key"
    );
    assert!(
        !during.contains(&first),
        "an overwritten value's lease was left behind"
    );
    assert!(
        taken == extended || !during.contains(&taken),
        "an extended lock's old lease was left behind"
    );
    store.set(&key, "no ttl").await.unwrap();
    assert_eq!(lease_of(key.clone()).await, 0, "set() keeps a lease");
    assert_eq!(
        store.release_lock(&lock_key, &lock.id).await.unwrap(),
        ReleaseOutcome::Released
    );
    let after = live(raw.leases().await.unwrap());
    for (what, lease) in [("overwritten value", second), ("released lock", extended)] {
        assert!(
            !after.contains(&lease),
            "the {what}'s lease was left behind"
        );
    }
    assert!(store.delete(&key).await.unwrap());
}

#[tokio::test]
async fn fencing_tokens_are_etcd_revisions() {
    let store = atomic_store::open(&support::url("etcd")).unwrap();
    let key = format!("revision-{}", LockId::generate());
    let lock = store
        .acquire_lock(&key, Duration::from_secs(30))
        .await
        .unwrap()
        .unwrap();
    let mut raw = etcd_client::Client::connect([endpoint(&support::url("etcd"))], None)
        .await
        .unwrap();
    let resp = raw.get(format!("atomic:{key}"), None).await.unwrap();
    assert_eq!(resp.kvs()[0].create_revision() as u64, lock.fencing_token);
    assert_eq!(
        store.inspect(&key).await.unwrap().fencing_token,
        Some(lock.fencing_token)
    );
    store.release_lock(&key, &lock.id).await.unwrap();
}

/// Kill the leader of a 3-member cluster while 8 tasks run incr and lock
/// loops: typed errors or success, work resumes, no value twice, never two
/// holders of one lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_the_leader_loses_nothing_and_breaks_no_lock() {
    let mut cluster = OwnEtcdCluster::start();
    let url = format!("{}?timeout=2s&connect_timeout=500ms", cluster.url());
    let store: Store = atomic_store::open(&url).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while store.incr("warmup").await.is_err() {
        assert!(
            Instant::now() < deadline,
            "the test cluster did not come up"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let kill_the_leader = async {
        let mut leader = None;
        for (i, port) in cluster.client_ports.iter().enumerate() {
            let mut c = etcd_client::Client::connect([format!("http://127.0.0.1:{port}")], None)
                .await
                .unwrap();
            let status = c.status().await.unwrap();
            if status.header().unwrap().member_id() == status.leader() {
                leader = Some(i);
            }
        }
        cluster.kill(leader.expect("a leader"));
    };
    support::incr_and_lock_loops_across_a_kill(&store, kill_the_leader, Duration::from_secs(5))
        .await;
}

#[tokio::test]
async fn tls_with_the_right_ca_works_and_without_it_fails() {
    let url = support::url("etcds");
    assert!(url.starts_with("etcds://"));
    let store = atomic_store::open(&url).unwrap();
    let key = format!("tls-{}", LockId::generate());
    assert_eq!(store.incr(&key).await.unwrap(), 1);
    let lock = store
        .acquire_lock(&format!("{key}-lock"), Duration::from_secs(10))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        store
            .release_lock(&format!("{key}-lock"), &lock.id)
            .await
            .unwrap(),
        atomic_store::ReleaseOutcome::Released
    );
    assert!(store.delete(&key).await.unwrap());
    // Without the CA, the self-made certificate is not trusted.
    let untrusted = atomic_store::open(&format!(
        "{}?connect_timeout=1s",
        url.split('?').next().unwrap()
    ))
    .unwrap();
    // Reads never end OutcomeUnknown; and a failed handshake sent nothing,
    // so a write is not unknown either.
    let err = untrusted.get(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(err.is_temporary(), "{err}");
    let err = untrusted.incr(&key).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
}

/// A connection reset with requests in flight (what a dying server does):
/// reads are retried, an `incr` is never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_connection_is_a_lost_reply() {
    let (proxy, url) = ResettingProxy::in_front_of(&support::url("etcd")).await;
    let store = atomic_store::open(&format!("{url}?timeout=3s&prefix=reset")).unwrap();
    support::resets_are_lost_replies(&store, &proxy).await;
}

#[tokio::test]
async fn a_member_that_cannot_be_reached_is_unavailable_not_unknown() {
    let url = format!(
        "etcd://127.0.0.1:{}?connect_timeout=500ms",
        support::free_port()
    );
    let store = atomic_store::open(&url).unwrap();
    let e = store.incr("never-sent").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_temporary());
}

/// etcd reads a limit of 0 as "no limit"; the contract (and the memory
/// store) list nothing.
#[tokio::test]
async fn keys_with_a_limit_of_zero_lists_nothing() {
    let run = LockId::generate().as_str()[..8].to_owned();
    let store =
        atomic_store::open(&format!("{}?prefix=limit-{run}", support::url("etcd"))).unwrap();
    let memory = atomic_store::open("memory://").unwrap();
    for s in [&store, &memory] {
        s.set("a", "1").await.unwrap();
        s.set("b", "2").await.unwrap();
        assert_eq!(s.keys("", 10).await.unwrap().len(), 2);
        assert_eq!(s.keys("", 1).await.unwrap().len(), 1);
        assert_eq!(s.keys("", 0).await.unwrap(), Vec::<String>::new());
    }
    store.delete("a").await.unwrap();
    store.delete("b").await.unwrap();
}

/// Which calls the canned member told apart.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rpc {
    Range,
    Txn,
}

/// The message etcd gives when a proposal's outcome is not known (a
/// `Unavailable` status, though the write may have been committed).
const ETCD_TIMED_OUT: &str = "etcdserver: request timed out, possibly due to connection lost";

/// A stand-in etcd member, for the one reply no real member gives on cue:
/// it speaks just enough HTTP/2 and gRPC to answer every Txn with
/// `Unavailable` and [`ETCD_TIMED_OUT`], and every Range with an empty
/// result (or the same error when `ranges_fail`). It records the calls.
async fn canned_member(ranges_fail: bool) -> (u16, Arc<Mutex<Vec<Rpc>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let calls = Arc::new(Mutex::new(Vec::new()));
    let log = Arc::clone(&calls);
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut preface = [0u8; 24];
                if socket.read_exact(&mut preface).await.is_err() {
                    return;
                }
                let _ = socket.write_all(&h2_frame(SETTINGS, 0, 0, &[])).await;
                let mut bodies: HashMap<u32, Vec<u8>> = HashMap::new();
                loop {
                    let mut head = [0u8; 9];
                    if socket.read_exact(&mut head).await.is_err() {
                        return;
                    }
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                    let (kind, flags) = (head[3], head[4]);
                    let stream =
                        u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
                    let mut payload = vec![0u8; len];
                    if socket.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                    let reply = match kind {
                        SETTINGS if flags & ACK == 0 => h2_frame(SETTINGS, ACK, 0, &[]),
                        PING if flags & ACK == 0 => h2_frame(PING, ACK, 0, &payload),
                        DATA => {
                            bodies
                                .entry(stream)
                                .or_default()
                                .extend_from_slice(&payload);
                            if flags & END_STREAM == 0 {
                                continue;
                            }
                            let body = bodies.remove(&stream).unwrap_or_default();
                            // After the 5-byte gRPC prefix: a RangeRequest
                            // starts with its key (field 1), a TxnRequest
                            // with a Compare, whose first tag is not text.
                            let rpc = if body.get(7).is_some_and(|b| b.is_ascii_graphic()) {
                                Rpc::Range
                            } else {
                                Rpc::Txn
                            };
                            log.lock().unwrap().push(rpc);
                            if rpc == Rpc::Range && !ranges_fail {
                                grpc_ok_empty(stream)
                            } else {
                                grpc_error(stream, 14, ETCD_TIMED_OUT)
                            }
                        }
                        _ => continue,
                    };
                    if socket.write_all(&reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, calls)
}

const DATA: u8 = 0;
const HEADERS: u8 = 1;
const SETTINGS: u8 = 4;
const PING: u8 = 6;
const ACK: u8 = 1;
const END_STREAM: u8 = 1;
const END_HEADERS: u8 = 4;

fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut frame = (payload.len() as u32).to_be_bytes()[1..].to_vec();
    frame.extend([kind, flags]);
    frame.extend(stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

/// An HPACK block of literal headers (no Huffman coding, no indexing),
/// after `:status: 200` and the gRPC content type when `response`.
fn hpack(response: bool, headers: &[(&str, &str)]) -> Vec<u8> {
    let text = |block: &mut Vec<u8>, s: &str| {
        assert!(s.len() < 127);
        block.push(s.len() as u8);
        block.extend_from_slice(s.as_bytes());
    };
    let mut block = Vec::new();
    if response {
        // Static table: entry 8 is `:status: 200`; entry 31 names
        // content-type (index 31 in a 4-bit prefix: 0x0f, then 16).
        block.extend([0x88, 0x0f, 0x10]);
        text(&mut block, "application/grpc");
    }
    for (name, value) in headers {
        block.push(0x00);
        text(&mut block, name);
        text(&mut block, value);
    }
    block
}

/// A reply holding one empty message (an empty `RangeResponse`: no keys).
fn grpc_ok_empty(stream: u32) -> Vec<u8> {
    let mut reply = h2_frame(HEADERS, END_HEADERS, stream, &hpack(true, &[]));
    reply.extend(h2_frame(DATA, 0, stream, &[0, 0, 0, 0, 0]));
    reply.extend(h2_frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        stream,
        &hpack(false, &[("grpc-status", "0")]),
    ));
    reply
}

/// A trailers-only reply: a gRPC status and message, no body.
fn grpc_error(stream: u32, code: u32, message: &str) -> Vec<u8> {
    let code = code.to_string();
    let headers = [("grpc-status", code.as_str()), ("grpc-message", message)];
    h2_frame(
        HEADERS,
        END_HEADERS | END_STREAM,
        stream,
        &hpack(true, &headers),
    )
}

fn count(calls: &Mutex<Vec<Rpc>>, rpc: Rpc) -> usize {
    calls.lock().unwrap().iter().filter(|c| **c == rpc).count()
}

/// etcd's own `Unavailable` after a write ("request timed out, possibly due
/// to connection lost") may follow a commit: the write ends OutcomeUnknown
/// and is never resent. Issue 12 item 1: it was taken for "not sent" and
/// resent, so a nonce could be skipped.
#[tokio::test]
async fn etcds_own_unavailable_after_a_write_is_an_unknown_outcome() {
    let (port, calls) = canned_member(false).await;
    let store =
        atomic_store::open(&format!("etcd://127.0.0.1:{port}?prefix=canned&timeout=2s")).unwrap();
    let e = store.incr("counter").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}");
    assert!(!e.is_temporary());
    assert_eq!(count(&calls, Rpc::Txn), 1, "incr was resent: {calls:?}");
    let e = store.assign_nonce("nonce", 7).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}");
    assert_eq!(
        count(&calls, Rpc::Txn),
        2,
        "assign_nonce was resent: {calls:?}"
    );
    let e = store
        .compare_and_set("claim", None, "mine", None)
        .await
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}");
    assert_eq!(
        count(&calls, Rpc::Txn),
        3,
        "compare_and_set was resent: {calls:?}"
    );
    assert_eq!(count(&calls, Rpc::Range), 2, "{calls:?}");
}

/// The same status on a read: retried, then a temporary Unavailable.
#[tokio::test]
async fn etcds_own_unavailable_on_a_read_is_retried() {
    let (port, calls) = canned_member(true).await;
    let store =
        atomic_store::open(&format!("etcd://127.0.0.1:{port}?prefix=canned&timeout=2s")).unwrap();
    let e = store.get("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_temporary());
    assert_eq!(count(&calls, Rpc::Range), 3, "{calls:?}");
}

fn run_id() -> String {
    LockId::generate().as_str()[..10].to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queue_and_plain_callers_keep_one_holder() {
    let store: Store = atomic_store::open(&support::url("etcd")).unwrap();
    // Each refused plain acquire is three Raft writes on etcd (grant, txn,
    // revoke): the 8 barging callers keep the member busy, and about 30
    // sections a second get through (fewer while the other tests run).
    support::queue::storm(store, &format!("storm-{}", run_id()), 30).await;
}

/// Through a watch on the waiter's own queue key.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hand_over_wakes_its_waiter_on_another_handle() {
    let url = support::url("etcd");
    support::queue::hand_over_wakes_its_waiter(
        atomic_store::open(&url).unwrap(),
        atomic_store::open(&url).unwrap(),
        &format!("wake-{}", run_id()),
    )
    .await;
}

/// The native queue's keys: a waiter is a key on a lease of its own; a
/// hand-over's token is its txn's revision, which the marker keeps (also
/// through an extension); no lease outlives the queue; `keys` never lists
/// the queue's keys, even with an empty prefix; `purge` removes them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_queue_keeps_revisions_as_tokens_and_leaves_nothing_behind() {
    use atomic_store::{QueueEntry, QueueTurn};
    use etcd_client::GetOptions;
    let url = support::url("etcd");
    let store = atomic_store::open(&url).unwrap();
    let mut raw = etcd_client::Client::connect([endpoint(&url)], None)
        .await
        .unwrap();
    let key = format!("queue-{}", run_id());
    let full = format!("atomic:{key}");
    let (queue, marker) = (format!("\0q\0{full}\0"), format!("\0h\0{full}"));
    let ttl = Duration::from_secs(30);
    let mut leases = HashSet::new();
    let lookup = raw.clone();
    let raw_get = |k: String, prefix: bool| {
        let mut raw = lookup.clone();
        async move {
            let options = prefix.then(|| GetOptions::new().with_prefix());
            raw.get(k, options).await.unwrap().kvs().to_vec()
        }
    };
    let holder = LockId::generate();
    let entry = |w| QueueEntry {
        waiter: w,
        ttl,
        presence: Some(ttl),
    };
    let Ok(QueueTurn::Acquired(held)) = store.lock_queue_enter(&key, entry(&holder)).await else {
        panic!("a free lock with no queue was not taken");
    };
    let lock = raw_get(full.clone(), false).await;
    assert_eq!(lock[0].create_revision() as u64, held.fencing_token);
    leases.insert(lock[0].lease());
    let (first, second) = (LockId::generate(), LockId::generate());
    for w in [&first, &second] {
        let turn = store.lock_queue_enter(&key, entry(w)).await.unwrap();
        assert!(matches!(turn, QueueTurn::Waiting { .. }), "{turn:?}");
    }
    let waiters = raw_get(queue.clone(), true).await;
    assert_eq!(waiters.len(), 2, "one key per waiter");
    let created = |w: &LockId| {
        let name = format!("{queue}{w}");
        let kv = waiters.iter().find(|kv| kv.key() == name.as_bytes());
        kv.expect("a waiter's key").create_revision()
    };
    assert!(
        created(&first) < created(&second),
        "in the order they joined"
    );
    let own: HashSet<i64> = waiters.iter().map(|kv| kv.lease()).collect();
    assert!(
        own.len() == 2 && !own.contains(&0),
        "a lease of its own each"
    );
    leases.extend(own);

    let bare = atomic_store::open(&format!("{url}?prefix=")).unwrap();
    let listed = bare.keys("", 100_000).await.unwrap();
    assert!(listed.contains(&full), "the lock key is listed");
    assert!(
        listed.iter().all(|k| !k.contains('\0')),
        "queue keys were listed"
    );

    let handover = store
        .lock_queue_release(&key, &held.id, Duration::from_secs(5))
        .await
        .unwrap();
    let next = handover.next.expect("handed over");
    assert_eq!(next.waiter, first);
    let marked = raw_get(marker.clone(), false).await;
    assert_eq!(marked[0].value(), first.as_str().as_bytes());
    assert_eq!(marked[0].mod_revision() as u64, next.fencing_token);
    assert!(next.fencing_token > held.fencing_token);
    let lock = raw_get(full.clone(), false).await;
    assert_eq!(lock[0].value(), first.as_str().as_bytes());
    assert_eq!(
        lock[0].create_revision() as u64,
        held.fencing_token,
        "rewritten in place"
    );
    leases.insert(lock[0].lease());
    store.extend_lock(&key, &first, ttl).await.unwrap();
    leases.insert(raw_get(full.clone(), false).await[0].lease());
    assert_eq!(
        store.inspect(&key).await.unwrap().fencing_token,
        Some(next.fencing_token)
    );
    let last = store
        .lock_queue_release(&key, &first, Duration::from_secs(5))
        .await
        .unwrap()
        .next
        .expect("handed over again");
    assert!(last.fencing_token > next.fencing_token);
    leases.insert(raw_get(full.clone(), false).await[0].lease());
    let freed = store
        .lock_queue_release(&key, &second, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        (freed.outcome, freed.next),
        (ReleaseOutcome::Released, None)
    );
    assert!(raw_get(full.clone(), false).await.is_empty());
    assert!(raw_get(queue.clone(), true).await.is_empty());
    // Revoked in the background, or (a waiter's, its key gone) kept for
    // the next waiter to join: then it holds no key, and lapses unless used.
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let mut left = Vec::new();
        for &lease in &leases {
            let options = etcd_client::LeaseTimeToLiveOptions::new().with_keys();
            let alive = raw.lease_time_to_live(lease, Some(options)).await.unwrap();
            if alive.ttl() > 0 && !alive.keys().is_empty() {
                left.push(lease);
            }
        }
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "leases still holding keys: {left:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Purge takes the queue and the marker too.
    let holder = LockId::generate();
    let Ok(QueueTurn::Acquired(held)) = store.lock_queue_enter(&key, entry(&holder)).await else {
        panic!("not taken");
    };
    store.lock_queue_enter(&key, entry(&first)).await.unwrap();
    let joined = raw_get(queue.clone(), true).await;
    assert!(
        leases.contains(&joined[0].lease()),
        "a waiter that got the lock left its lease for the next to join"
    );
    store.purge(&key).await.unwrap();
    assert!(raw_get(full.clone(), false).await.is_empty());
    assert!(raw_get(queue, true).await.is_empty());
    assert!(raw_get(marker, false).await.is_empty());
    assert_eq!(
        store.release_lock(&key, &held.id).await.unwrap(),
        ReleaseOutcome::NotHeld
    );
}

/// A waiter whose key went (its lease lapsed during a stall) while the
/// lock came free with nobody else queued takes the lock on its next call.
/// Before, its handle still remembered the key's place and compared the
/// empty queue against it: every round failed, a thousand times over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_whose_key_lapsed_takes_a_free_lock() {
    use atomic_store::{QueueEntry, QueueTurn};
    let url = support::url("etcd");
    let store = atomic_store::open(&url).unwrap();
    let mut raw = etcd_client::Client::connect([endpoint(&url)], None)
        .await
        .unwrap();
    let key = format!("lapsed-{}", run_id());
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
    let turn = store.lock_queue_enter(&key, entry).await.unwrap();
    assert!(matches!(turn, QueueTurn::Waiting { ahead: 0 }), "{turn:?}");
    raw.delete(format!("\0q\0atomic:{key}\0{waiter}"), None)
        .await
        .unwrap();
    store.release_lock(&key, &held.id).await.unwrap();
    let turn = tokio::time::timeout(Duration::from_secs(5), store.lock_queue_enter(&key, entry))
        .await
        .expect("no answer within 5 s")
        .unwrap();
    assert!(matches!(turn, QueueTurn::Acquired(_)), "{turn:?}");
    store.release_lock(&key, &waiter).await.unwrap();
}
