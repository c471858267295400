//! Nonce leases next to the one-step `assign_nonce` (what `assign` and the
//! TypeScript original do), on one account, in the same run: rounds of
//! each alternate, so a noisy machine slows both alike, and the median
//! ratio is the figure. A lease is two reads and a compare-and-set, and
//! its CAS rounds grow with the number of callers on one account.
//!
//! Run: `cargo bench -p atomic-store --features nonce,memory,sqlite,redis --bench lease`
//! (Redis with `ATOMIC_STORE_BENCH_REDIS_URL=redis://127.0.0.1:6379`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use atomic_store::nonce::{Address, NonceManager, PendingNonceSource};
use atomic_store::AtomicStore;

const ROUNDS: usize = 9;
const ROUND: Duration = Duration::from_millis(300);

/// The chain's pending count: one past the highest nonce handed out and
/// confirmed, so the counter stays inside the 500 window.
#[derive(Debug, Default)]
struct Chain(AtomicU64);

#[async_trait]
impl PendingNonceSource for Chain {
    async fn pending(&self, _: &Address) -> atomic_store::Result<u64> {
        Ok(self.0.load(Ordering::SeqCst))
    }
    async fn confirmed(&self, _: &Address) -> atomic_store::Result<u64> {
        Ok(self.0.load(Ordering::SeqCst))
    }
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Way {
    /// `assign_nonce` on the counter.
    Assign,
    /// Lease and confirm.
    Lease,
    /// Lease; one in five released (and so reused), the rest confirmed.
    LeaseReleasing,
}

/// Operations per second of `way` with `tasks` callers for one round.
async fn round(
    manager: &NonceManager,
    store: &Arc<dyn AtomicStore>,
    chain: &Arc<Chain>,
    address: Address,
    way: Way,
    tasks: usize,
) -> f64 {
    let deadline = Instant::now() + ROUND;
    let mut handles = Vec::new();
    for t in 0..tasks {
        let (manager, store, chain) = (manager.clone(), Arc::clone(store), Arc::clone(chain));
        handles.push(tokio::spawn(async move {
            let key = manager.last_used_key(&address);
            let mut ops = 0u64;
            while Instant::now() < deadline {
                let nonce = match way {
                    Way::Assign => store
                        .assign_nonce(&key, chain.0.load(Ordering::SeqCst))
                        .await
                        .unwrap(),
                    Way::Lease | Way::LeaseReleasing => {
                        let lease = manager.lease(&address).await.unwrap();
                        let n = lease.nonce();
                        if way == Way::LeaseReleasing && (ops + t as u64) % 5 == 0 {
                            lease.release().await.unwrap();
                            ops += 1;
                            continue;
                        }
                        lease.confirm();
                        n
                    }
                };
                chain.0.fetch_max(nonce + 1, Ordering::SeqCst);
                ops += 1;
            }
            ops
        }));
    }
    let mut ops = 0;
    for h in handles {
        ops += h.await.unwrap();
    }
    ops as f64 / ROUND.as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

async fn compare(name: &str, store: Arc<dyn AtomicStore>) {
    for tasks in [1, 16] {
        let chain = Arc::new(Chain::default());
        let manager = NonceManager::new(Arc::clone(&store), chain.clone(), 31337);
        let hex: String = atomic_store::LockId::generate()
            .as_str()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        let address: Address = format!("0x{}", &hex[..40]).parse().unwrap();
        let (mut assign, mut lease, mut releasing) = (Vec::new(), Vec::new(), Vec::new());
        let (mut lease_ratio, mut releasing_ratio) = (Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            let a = round(&manager, &store, &chain, address, Way::Assign, tasks).await;
            let l = round(&manager, &store, &chain, address, Way::Lease, tasks).await;
            let r = round(
                &manager,
                &store,
                &chain,
                address,
                Way::LeaseReleasing,
                tasks,
            )
            .await;
            lease_ratio.push(l / a);
            releasing_ratio.push(r / a);
            assign.push(a);
            lease.push(l);
            releasing.push(r);
        }
        println!(
            "{name:<8} {tasks:>2} tasks  assign_nonce {:>9.0}/s  lease+confirm {:>9.0}/s ({:.2}x)  lease, 1 in 5 released {:>9.0}/s ({:.2}x)",
            median(assign),
            median(lease),
            median(lease_ratio),
            median(releasing),
            median(releasing_ratio),
        );
        let _ = store.delete(&manager.last_used_key(&address)).await;
        let _ = store.delete(&manager.released_key(&address)).await;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    println!("one account; median of {ROUNDS} alternating rounds of {ROUND:?}; ratio = lease / assign_nonce in the same rounds");
    rt.block_on(async {
        compare("memory", atomic_store::open("memory://").unwrap()).await;
        let dir = tempfile::tempdir().unwrap();
        let url = format!(
            "sqlite://{}/lease.db?synchronous=normal",
            dir.path().display()
        );
        compare("sqlite", atomic_store::open(&url).unwrap()).await;
        match std::env::var("ATOMIC_STORE_BENCH_REDIS_URL") {
            Ok(url) => compare("redis", atomic_store::open(&url).unwrap()).await,
            Err(_) => println!("redis    (not run: set ATOMIC_STORE_BENCH_REDIS_URL)"),
        }
    });
}
