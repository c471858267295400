//! Nonce leases through alloy against a real node (anvil, started by
//! `scripts/test` with `--no-mining`): every row of the table that turns a
//! node's answer into a nonce's fate, `send` end to end, and alloy's
//! `NonceManager` trait shared by several managers on one Redis.
#![cfg(all(feature = "nonce", feature = "redis", feature = "memory"))]

mod support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_consensus::Transaction as _;
use alloy_network::TransactionBuilder;
use alloy_primitives::U256;
use alloy_provider::{Provider, ProviderBuilder};
use alloy_rpc_types_eth::TransactionRequest;
use atomic_store::nonce::{classify, Address, Fate, JsonRpcSource, NonceManager};
use atomic_store::{ErrorKind, LockId};
use serde_json::json;

const CHAIN_ID: u64 = 31337;

/// One test at a time mines or sends: `evm_mine` cutting a block while
/// another test sends leaves anvil's pool with a gap it never recovers.
async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    static NODE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    NODE.lock().await
}

fn anvil() -> String {
    support::url("anvil")
}

fn node() -> JsonRpcSource {
    JsonRpcSource::new(&anvil()).unwrap()
}

/// A funded account nobody used, that the node signs for.
async fn fresh_account() -> Address {
    let hex: String = LockId::generate()
        .as_str()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    let address: Address = format!("0x{}", &hex[..40]).parse().unwrap();
    let node = node();
    node.call("anvil_setBalance", json!([address, "0x56BC75E2D63100000"]))
        .await
        .unwrap();
    node.call("anvil_impersonateAccount", json!([address]))
        .await
        .unwrap();
    address
}

fn provider() -> impl Provider {
    ProviderBuilder::new()
        .disable_recommended_fillers()
        .connect_http(anvil().parse().unwrap())
}

fn manager(store: &atomic_store::conformance::Store) -> NonceManager {
    NonceManager::new(Arc::clone(store), Arc::new(node()), CHAIN_ID)
}

fn redis_store() -> atomic_store::conformance::Store {
    let id = LockId::generate();
    let prefix = &id.as_str()[..12];
    atomic_store::open(&format!("{}?prefix=alloy-{prefix}", support::url("redis"))).unwrap()
}

fn self_transfer(from: Address) -> TransactionRequest {
    TransactionRequest::default()
        .with_from(from)
        .with_to(from)
        .with_value(U256::from(1))
        .with_gas_limit(21_000)
        .with_max_fee_per_gas(20_000_000_000)
        .with_max_priority_fee_per_gas(1_000_000_000)
}

async fn mine_and_count(address: Address) -> u64 {
    node().call("evm_mine", json!([])).await.unwrap();
    provider()
        .get_transaction_count(address)
        .latest()
        .await
        .unwrap()
}

/// The error the real node gives for `tx` sent as is.
async fn node_error(tx: TransactionRequest) -> alloy_transport::TransportError {
    provider().send_transaction(tx).await.unwrap_err()
}

/// A one-request HTTP server on loopback answering `status` and `body`
/// (never answering, for `None`).
fn canned(reply: Option<(u16, &'static str)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        listener.set_nonblocking(true).unwrap();
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((mut conn, _)) => {
                    conn.set_nonblocking(false).unwrap();
                    let mut buf = [0u8; 8192];
                    let _ = conn.read(&mut buf);
                    match reply {
                        Some((status, body)) => {
                            let _ = write!(
                                conn,
                                "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                                body.len()
                            );
                        }
                        None => held.push(conn),
                    }
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    format!("http://127.0.0.1:{port}")
}

fn provider_at(url: &str) -> impl Provider {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    ProviderBuilder::new()
        .disable_recommended_fillers()
        .connect_reqwest(client, url.parse().unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_of_the_fate_table_on_real_answers() {
    let _node = one_at_a_time().await;
    let from = fresh_account().await;
    // Accepted.
    let hash = provider()
        .send_transaction(self_transfer(from).with_nonce(0))
        .await
        .unwrap();
    assert!(!hash.tx_hash().is_zero());
    // The same transaction again, still in the pool.
    let again = node_error(self_transfer(from).with_nonce(0)).await;
    assert_eq!(classify(&again), Fate::Confirm, "{again}");
    assert_eq!(mine_and_count(from).await, 1);
    // Its nonce again, after it was mined.
    let low = node_error(self_transfer(from).with_nonce(0).with_value(U256::from(2))).await;
    assert_eq!(classify(&low), Fate::Resync, "{low}");
    // Another transaction with a nonce the pool holds, paying no more.
    let _in_pool = provider()
        .send_transaction(self_transfer(from).with_nonce(1))
        .await
        .unwrap();
    let replacing = node_error(self_transfer(from).with_nonce(1).with_value(U256::from(3))).await;
    assert_eq!(classify(&replacing), Fate::Resync, "{replacing}");
    assert_eq!(mine_and_count(from).await, 2);
    // Refused before the pool.
    let poor = node_error(self_transfer(from).with_value(U256::MAX / U256::from(2))).await;
    assert_eq!(classify(&poor), Fate::Release, "{poor}");
    let cheap = node_error(
        self_transfer(from)
            .with_max_fee_per_gas(1)
            .with_max_priority_fee_per_gas(1),
    )
    .await;
    assert_eq!(classify(&cheap), Fate::Release, "{cheap}");
    let tiny_gas = node_error(self_transfer(from).with_gas_limit(1_000)).await;
    assert_eq!(classify(&tiny_gas), Fate::Release, "{tiny_gas}");
    // Nobody listens: nothing was sent.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let refused = provider_at(&closed)
        .send_transaction(self_transfer(from))
        .await
        .unwrap_err();
    assert_eq!(classify(&refused), Fate::Release, "{refused}");
    // No answer in time, a server error, an unknown node error, a reply
    // that is not JSON: the transaction may be out.
    for (reply, what) in [
        (None, "no answer"),
        (Some((500, "oops")), "HTTP 500"),
        (
            Some((
                200,
                r#"{"jsonrpc":"2.0","id":0,"error":{"code":-32000,"message":"txpool is full"}}"#,
            )),
            "an unknown node error",
        ),
        (Some((200, "<html>busy</html>")), "not JSON"),
    ] {
        let e = provider_at(&canned(reply))
            .send_transaction(self_transfer(from))
            .await
            .unwrap_err();
        assert_eq!(classify(&e), Fate::Burn, "{what}: {e}");
    }
    // An HTTP 4xx: the request was refused as it came in.
    let e = provider_at(&canned(Some((401, "unauthorized"))))
        .send_transaction(self_transfer(from))
        .await
        .unwrap_err();
    assert_eq!(classify(&e), Fate::Release, "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_confirms_releases_and_reuses() {
    let _node = one_at_a_time().await;
    let store = atomic_store::open("memory://").unwrap();
    let m = manager(&store);
    let from = fresh_account().await;
    let p = provider();
    let first = m.send(&p, self_transfer(from)).await.unwrap();
    assert_eq!(first.nonce, 0);
    assert!(first.hash.is_some());
    // Refused (fee below the base fee): released, and the next send reuses it.
    let e = m
        .send(
            &p,
            self_transfer(from)
                .with_max_fee_per_gas(1)
                .with_max_priority_fee_per_gas(1),
        )
        .await
        .unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::Backend, "{e}");
    assert_eq!((e.nonce, e.fate), (Some(1), Some(Fate::Release)));
    assert!(e.to_string().contains("nonce 1 was released"), "{e}");
    let second = m.send(&p, self_transfer(from)).await.unwrap();
    assert_eq!(second.nonce, 1);
    assert_eq!(mine_and_count(from).await, 2);
    // No `from`: refused before anything is leased.
    let e = m
        .send(&p, TransactionRequest::default().with_to(from))
        .await
        .unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!((e.nonce, e.fate), (None, None));
    // A provider of another chain.
    let other = NonceManager::new(Arc::clone(&store), Arc::new(node()), 1);
    let e = other.send(&p, self_transfer(from)).await.unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.to_string().contains("serves chain 31337"), "{e}");
    // A node that never answers: the nonce is burned, never reused by a lease.
    let silent = provider_at(&canned(None));
    let pending = m.lease(&from).await.unwrap();
    let next = pending.nonce();
    pending.release().await.unwrap();
    let burned = NonceManager::new(Arc::clone(&store), Arc::new(node()), CHAIN_ID);
    // (The chain id check and the count go to the real node; only the send
    // goes to the silent one.)
    let e = burned
        .send(
            &SendTo {
                reads: provider(),
                sends: silent,
            },
            self_transfer(from),
        )
        .await
        .unwrap_err();
    assert_eq!(e.error.kind(), ErrorKind::OutcomeUnknown, "{e}");
    assert_eq!((e.nonce, e.fate), (Some(next), Some(Fate::Burn)));
    assert!(
        e.to_string().contains(&format!("nonce {next} was burned")),
        "{e}"
    );
    let after = m.lease(&from).await.unwrap();
    assert_eq!(after.nonce(), next + 1, "a burned nonce was leased again");
    after.release().await.unwrap();
}

/// Four managers on one Redis (as four instances would be), each behind its
/// own alloy provider with the manager as its nonce filler: 80 sends, every
/// nonce distinct, and all of them mined.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alloys_nonce_filler_is_shared_through_the_store() {
    let _node = one_at_a_time().await;
    let store = redis_store();
    let from = fresh_account().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let m = manager(&store);
        tasks.push(tokio::spawn(async move {
            let p = ProviderBuilder::new()
                .disable_recommended_fillers()
                .with_nonce_management(m)
                .connect_http(anvil().parse().unwrap());
            let mut nonces = Vec::new();
            for _ in 0..20 {
                let tx = self_transfer(from);
                let sent = p.send_transaction(tx).await.unwrap();
                let tx = p
                    .get_transaction_by_hash(*sent.tx_hash())
                    .await
                    .unwrap()
                    .expect("the node has the transaction");
                nonces.push(tx.nonce());
            }
            nonces
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), 80, "a nonce was used twice: {all:?}");
    assert_eq!(distinct, (0..80).collect(), "nonces are not 0..80");
    assert_eq!(mine_and_count(from).await, 80, "not all transactions mined");
}

/// Four tasks with their own managers on one Redis send 25 each through
/// `send`; one send in five is refused before broadcast. Every refused
/// nonce is reused, so the account's nonces 0..N are all mined, no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn refused_sends_leave_no_gap() {
    let _node = one_at_a_time().await;
    let store = redis_store();
    let from = fresh_account().await;
    let mut tasks = Vec::new();
    for task in 0..4 {
        let m = manager(&store);
        tasks.push(tokio::spawn(async move {
            let p = provider();
            let (mut sent, mut refused) = (Vec::new(), 0);
            for i in 0..25 {
                let tx = if (task + i) % 5 == 0 {
                    self_transfer(from)
                        .with_max_fee_per_gas(1)
                        .with_max_priority_fee_per_gas(1)
                } else {
                    self_transfer(from)
                };
                match m.send(&p, tx).await {
                    Ok(s) => sent.push(s.nonce),
                    Err(e) => {
                        assert_eq!(e.fate, Some(Fate::Release), "{e}");
                        refused += 1;
                    }
                }
            }
            (sent, refused)
        }));
    }
    let (mut sent, mut refused) = (Vec::new(), 0);
    for t in tasks {
        let (s, r) = t.await.unwrap();
        sent.extend(s);
        refused += r;
    }
    assert_eq!(refused, 20);
    let distinct: BTreeSet<u64> = sent.iter().copied().collect();
    assert_eq!(distinct.len(), 80, "a nonce was sent twice: {sent:?}");
    assert_eq!(
        distinct,
        (0..80).collect(),
        "a refused nonce was not reused"
    );
    assert_eq!(mine_and_count(from).await, 80);
}

/// A provider that reads from one node and sends through another.
struct SendTo<R, S> {
    reads: R,
    sends: S,
}

#[async_trait::async_trait]
impl<R: Provider, S: Provider> Provider for SendTo<R, S> {
    fn root(&self) -> &alloy_provider::RootProvider {
        self.reads.root()
    }

    async fn send_transaction_internal(
        &self,
        tx: alloy_provider::SendableTx<alloy_network::Ethereum>,
    ) -> alloy_transport::TransportResult<
        alloy_provider::PendingTransactionBuilder<alloy_network::Ethereum>,
    > {
        self.sends.send_transaction_internal(tx).await
    }
}

/// A mixed fleet on one Redis: TypeScript instances assign with the
/// original's rule (its Lua fast path, sent raw, on its key layout) while
/// Rust instances lease, confirm and release on the same counter. No nonce
/// is handed out twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn leases_share_the_counter_with_the_typescript_original() {
    const ORIGINAL: &str = "local last = tonumber(redis.call('GET', KEYS[1]) or '-1') \
        local pending = tonumber(ARGV[1]) local candidate = last + 1 \
        if pending > candidate or candidate - pending > 500 then candidate = pending end \
        redis.call('SET', KEYS[1], tostring(candidate)) return candidate";
    let store =
        atomic_store::open(&format!("{}?prefix=vana-sdk:atomic", support::url("redis"))).unwrap();
    let m = manager(&store);
    let hex: String = LockId::generate()
        .as_str()
        .bytes()
        .map(|b| format!("{b:02x}"))
        .collect();
    let from: Address = format!("0x{}", &hex[..40]).parse().unwrap();
    let raw_key = format!(
        "vana-sdk:atomic:nonce:{CHAIN_ID}:{}:lastUsed",
        from.to_checksum(None)
    );
    assert_eq!(
        raw_key,
        format!("vana-sdk:atomic:{}", m.last_used_key(&from))
    );
    let mut tasks = Vec::new();
    for t in 0..4 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            let mut kept = Vec::new();
            for i in 0..50 {
                let lease = m.lease_at(&from, 0).await.unwrap();
                if (t + i) % 5 == 0 {
                    lease.release().await.unwrap();
                } else {
                    kept.push(lease.nonce());
                    lease.confirm();
                }
            }
            kept
        }));
    }
    let typescript: Vec<_> = (0..4)
        .map(|_| {
            let raw_key = raw_key.clone();
            std::thread::spawn(move || {
                let mut c = redis::Client::open(support::url("redis"))
                    .unwrap()
                    .get_connection()
                    .unwrap();
                (0..50)
                    .map(|_| {
                        redis::cmd("EVAL")
                            .arg(ORIGINAL)
                            .arg(1)
                            .arg(&raw_key)
                            .arg(0)
                            .query::<u64>(&mut c)
                            .unwrap()
                    })
                    .collect::<Vec<u64>>()
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    for t in typescript {
        all.extend(t.join().unwrap());
    }
    let distinct: BTreeSet<u64> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "a nonce was handed out twice");
    assert_eq!(all.len(), 4 * 40 + 4 * 50);
    let _ = store.delete(&m.last_used_key(&from)).await;
    let _ = store.delete(&m.released_key(&from)).await;
}
