//! The nonce manager against a real node (anvil, started by `scripts/test`):
//! `reset` and `rewind` racing `assign`, verdicts, the health probe, and how
//! JSON-RPC failures are reported.
#![cfg(all(feature = "nonce", feature = "memory", feature = "redis"))]

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atomic_store::nonce::{
    Address, JsonRpcSource, NonceManager, PendingNonceSource, RewindOutcome, Verdict,
};
use atomic_store::{
    AtomicStore, Capabilities, Error, ErrorKind, EvalValue, ExtendOutcome, KeyInfo, Lock, LockId,
    Operation, ReleaseOutcome, Result,
};

fn anvil() -> String {
    std::env::var("ATOMIC_STORE_TEST_ANVIL_URL").unwrap_or_else(|_| {
        panic!("ATOMIC_STORE_TEST_ANVIL_URL is not set: run the tests through scripts/test")
    })
}

/// An account nobody has ever sent from: the node's counts are 0.
fn fresh_account() -> Address {
    let id = LockId::generate();
    let hex: String = id.as_str().bytes().map(|b| format!("{:02x}", b)).collect();
    format!("0x{}", &hex[..40]).parse().unwrap()
}

type Hook =
    Box<dyn FnOnce() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> + Send>;

/// The real node, with a hook that runs (once) after `confirmed` has read
/// the chain and before its answer reaches the caller.
struct HookedChain {
    node: JsonRpcSource,
    after_confirmed: Mutex<Option<Hook>>,
}

impl std::fmt::Debug for HookedChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HookedChain")
    }
}

#[async_trait]
impl PendingNonceSource for HookedChain {
    async fn pending(&self, address: &Address) -> Result<u64> {
        self.node.pending(address).await
    }
    async fn confirmed(&self, address: &Address) -> Result<u64> {
        let count = self.node.confirmed(address).await?;
        let hook = self.after_confirmed.lock().unwrap().take();
        if let Some(hook) = hook {
            hook().await;
        }
        Ok(count)
    }
}

fn node() -> Arc<HookedChain> {
    Arc::new(HookedChain {
        node: JsonRpcSource::new(&anvil()).unwrap(),
        after_confirmed: Mutex::new(None),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn reset_never_drops_a_nonce_handed_out_while_it_runs() {
    let store = atomic_store::open("memory://").unwrap();
    let chain = node();
    let manager = NonceManager::new(Arc::clone(&store), chain.clone(), 31337);
    let account = fresh_account();
    // Nonces 0..=9 were handed out and dropped by the network.
    store
        .set(&manager.last_used_key(&account), "9")
        .await
        .unwrap();
    // While the reset is between its chain read and its write, another
    // instance hands out nonce 10 and sends it.
    let racing = Arc::new(Mutex::new(None));
    let (m, r) = (manager.clone(), Arc::clone(&racing));
    *chain.after_confirmed.lock().unwrap() = Some(Box::new(move || {
        Box::pin(async move {
            *r.lock().unwrap() = Some(m.assign(&account).await.unwrap());
        })
    }));
    let reset = manager.reset(&account).await;
    let in_flight = racing.lock().unwrap().expect("the hook ran");
    assert_eq!(in_flight, 10);
    let e = reset.expect_err("a reset that raced an assign must not succeed");
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_temporary());
    assert!(e.to_string().contains("reset again"), "{e}");
    // Nothing was changed: the next nonce is 11, never 10 again.
    assert_eq!(manager.assign(&account).await.unwrap(), 11);
    // With no race, the reset goes through.
    assert_eq!(manager.reset(&account).await.unwrap(), -1);
    assert_eq!(manager.assign(&account).await.unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rewinds_racing_assigns_never_hand_out_a_kept_nonce_twice() {
    let store = atomic_store::open("memory://").unwrap();
    let manager = NonceManager::new(store, node(), 31337);
    let account = fresh_account();
    let mut tasks = Vec::new();
    for task in 0..8u64 {
        let manager = manager.clone();
        tasks.push(tokio::spawn(async move {
            let (mut kept, mut gaps, mut rewound) = (Vec::new(), Vec::new(), 0);
            for round in 0..40u64 {
                let nonce = manager.assign(&account).await.unwrap();
                // Every third send "fails before broadcast" and is given back.
                if (task + round) % 3 == 0 {
                    match manager.rewind(&account, nonce).await.unwrap() {
                        RewindOutcome::Rewound => rewound += 1,
                        RewindOutcome::Gap { .. } => gaps.push(nonce),
                    }
                } else {
                    kept.push(nonce);
                }
            }
            (kept, gaps, rewound)
        }));
    }
    let (mut kept, mut gaps, mut rewound) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (k, g, r) = t.await.unwrap();
        kept.extend(k);
        gaps.extend(g);
        rewound += r;
    }
    let distinct: HashSet<u64> = kept.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        kept.len(),
        "a kept nonce was handed out twice"
    );
    assert!(
        rewound > 0,
        "no rewind took effect, so the race was never run"
    );
    // Every nonce up to the last one is kept or a reported gap, never lost.
    let state = manager.state(&account).await.unwrap();
    let last = state.last_used.unwrap() as u64;
    let mut all: Vec<u64> = kept.iter().chain(&gaps).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all, (0..=last).collect::<Vec<_>>(), "{rewound} rewound");
}

#[tokio::test]
async fn a_fresh_account_is_fresh_and_in_sync_after_its_first_nonce() {
    let store = atomic_store::open("memory://").unwrap();
    let manager = NonceManager::new(store, node(), 31337);
    let account = fresh_account();
    let state = manager.state(&account).await.unwrap();
    assert_eq!(state.verdict, Verdict::Fresh);
    assert_eq!(
        (state.last_used, state.pending, state.confirmed),
        (None, 0, 0)
    );
    assert_eq!(manager.assign(&account).await.unwrap(), 0);
    // Nonce 0 is handed out but not yet seen by the node.
    let state = manager.state(&account).await.unwrap();
    assert_eq!(state.verdict, Verdict::StoreAhead { unseen: 1 });
    assert_eq!(
        manager.rewind(&account, 0).await.unwrap(),
        RewindOutcome::Rewound
    );
    let state = manager.state(&account).await.unwrap();
    assert_eq!(state.verdict, Verdict::InSync);
}

#[tokio::test]
async fn health_says_what_is_wrong() {
    let good = NonceManager::new(atomic_store::open("memory://").unwrap(), node(), 1);
    let health = good.health().await;
    assert!(health.healthy && health.problem.is_none(), "{health:?}");

    let unreachable = format!("redis://127.0.0.1:{}?timeout=300ms", closed_port());
    let down = NonceManager::new(atomic_store::open(&unreachable).unwrap(), node(), 1);
    let health = down.health().await;
    assert!(!health.healthy);
    let problem = health.problem.unwrap();
    assert!(problem.contains("unavailable"), "{problem}");

    let lying = Flaky::new(
        atomic_store::open("memory://").unwrap(),
        Fault::GetAnswersOther,
    );
    let health = NonceManager::new(lying, node(), 1).health().await;
    assert!(!health.healthy);
    assert!(
        health.problem.unwrap().contains("read back something else"),
        "a probe that reads back another value is unhealthy"
    );
    // The probe leaves nothing behind when it succeeds.
    let store = atomic_store::open("memory://").unwrap();
    NonceManager::new(Arc::clone(&store), node(), 1)
        .health()
        .await;
    assert_eq!(store.keys("", 10).await.unwrap(), Vec::<String>::new());
}

#[tokio::test]
async fn a_lost_store_reply_is_reported_as_unknown_and_not_resent() {
    let store = Flaky::new(atomic_store::open("memory://").unwrap(), Fault::AssignLost);
    let manager = NonceManager::new(store.clone(), node(), 31337);
    let e = manager.assign(&fresh_account()).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}");
    assert!(!e.is_temporary());
    assert_eq!(
        store.assigns.load(Ordering::SeqCst),
        1,
        "assign_nonce was resent"
    );
}

fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A one-connection HTTP server on loopback that answers with `reply`
/// (or never answers, for `None`).
fn canned_http(reply: Option<&'static str>) -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut held = Vec::new();
        listener.set_nonblocking(true).unwrap();
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    let mut buf = [0u8; 4096];
                    let _ = conn.read(&mut buf);
                    if let Some(body) = reply {
                        let _ = write!(
                            conn,
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    } else {
                        held.push(conn);
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    port
}

#[tokio::test]
async fn json_rpc_failures_are_typed_and_never_show_the_api_key() {
    let account = fresh_account();
    let key = "SECRET-API-KEY-4f2a";
    let check = |e: &Error, kind: ErrorKind, temporary: bool| {
        assert_eq!(e.kind(), kind, "{e}");
        assert_eq!(e.is_temporary(), temporary, "{e}");
        for shown in [e.to_string(), format!("{e:?}")] {
            assert!(!shown.contains(key), "the API key leaked: {shown}");
            assert!(shown.len() < 400, "not a short message: {shown}");
        }
    };
    // Nobody listens: nothing was sent.
    let url = format!("http://127.0.0.1:{}/v3/{key}", closed_port());
    let source = JsonRpcSource::new(&url).unwrap();
    assert!(!format!("{source:?}").contains(key));
    check(
        &source.pending(&account).await.unwrap_err(),
        ErrorKind::Unavailable,
        true,
    );
    // The node never answers.
    let url = format!("http://127.0.0.1:{}/v3/{key}", canned_http(None));
    let source = JsonRpcSource::with_timeout(&url, Duration::from_millis(300)).unwrap();
    check(
        &source.pending(&account).await.unwrap_err(),
        ErrorKind::Timeout,
        true,
    );
    // Not JSON.
    let url = format!(
        "http://127.0.0.1:{}/?apikey={key}",
        canned_http(Some("<html>busy</html>"))
    );
    let e = JsonRpcSource::new(&url)
        .unwrap()
        .pending(&account)
        .await
        .unwrap_err();
    check(&e, ErrorKind::Backend, false);
    assert!(e.to_string().contains("not JSON"), "{e}");
    // A count that is not a hex quantity.
    let url = format!(
        "http://127.0.0.1:{}/{key}",
        canned_http(Some(r#"{"jsonrpc":"2.0","id":1,"result":"seven"}"#))
    );
    let e = JsonRpcSource::new(&url)
        .unwrap()
        .pending(&account)
        .await
        .unwrap_err();
    check(&e, ErrorKind::Backend, false);
    assert!(e.to_string().contains("seven"), "{e}");
    // The node's own error, from the real node.
    let e = JsonRpcSource::new(&anvil())
        .unwrap()
        .call("no_such_method", serde_json::json!([]))
        .await
        .unwrap_err();
    check(&e, ErrorKind::Backend, false);
    assert!(e.to_string().contains("no_such_method"), "{e}");
    // A URL that is not HTTP names the rule and hides the key.
    let e = JsonRpcSource::new(&format!("ws://node.example/{key}")).unwrap_err();
    check(&e, ErrorKind::InvalidArgument, false);
}

#[derive(Debug, Clone, Copy)]
enum Fault {
    /// `assign_nonce` applies, then its reply is "lost".
    AssignLost,
    /// `get` answers another value than the one stored.
    GetAnswersOther,
}

/// A real store with one injected fault.
#[derive(Debug, Clone)]
struct Flaky {
    inner: Arc<dyn AtomicStore>,
    fault: Fault,
    assigns: Arc<AtomicUsize>,
}

impl Flaky {
    fn new(inner: Arc<dyn AtomicStore>, fault: Fault) -> Arc<Flaky> {
        Arc::new(Flaky {
            inner,
            fault,
            assigns: Arc::default(),
        })
    }
}

#[async_trait]
impl AtomicStore for Flaky {
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
    async fn incr(&self, key: &str) -> Result<i64> {
        self.inner.incr(key).await
    }
    async fn acquire_lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock>> {
        self.inner.acquire_lock(key, ttl).await
    }
    async fn release_lock(&self, key: &str, id: &LockId) -> Result<ReleaseOutcome> {
        self.inner.release_lock(key, id).await
    }
    async fn extend_lock(&self, key: &str, id: &LockId, ttl: Duration) -> Result<ExtendOutcome> {
        self.inner.extend_lock(key, id, ttl).await
    }
    async fn get(&self, key: &str) -> Result<Option<String>> {
        let value = self.inner.get(key).await?;
        Ok(match self.fault {
            Fault::GetAnswersOther => value.map(|v| format!("{v}-other")),
            Fault::AssignLost => value,
        })
    }
    async fn set(&self, key: &str, value: &str) -> Result<()> {
        self.inner.set(key, value).await
    }
    async fn set_with_ttl(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        self.inner.set_with_ttl(key, value, ttl).await
    }
    async fn delete(&self, key: &str) -> Result<bool> {
        self.inner.delete(key).await
    }
    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        self.inner.compare_and_set(key, expected, new, ttl).await
    }
    async fn assign_nonce(&self, key: &str, pending: u64) -> Result<u64> {
        self.assigns.fetch_add(1, Ordering::SeqCst);
        let nonce = self.inner.assign_nonce(key, pending).await?;
        match self.fault {
            Fault::AssignLost => Err(Error::new(
                ErrorKind::OutcomeUnknown,
                "flaky",
                Operation::AssignNonce,
                "the reply was lost",
            )),
            Fault::GetAnswersOther => Ok(nonce),
        }
    }
    async fn eval(&self, script: &str, keys: &[&str], args: &[&str]) -> Result<EvalValue> {
        self.inner.eval(script, keys, args).await
    }
    async fn inspect(&self, key: &str) -> Result<KeyInfo> {
        self.inner.inspect(key).await
    }
    async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        self.inner.keys(prefix, limit).await
    }
    async fn notify(&self, key: &str) -> Result<()> {
        self.inner.notify(key).await
    }
    async fn wait_notified(&self, key: &str, timeout: Duration) -> Result<bool> {
        self.inner.wait_notified(key, timeout).await
    }
    async fn purge(&self, key: &str) -> Result<()> {
        self.inner.purge(key).await
    }
}
