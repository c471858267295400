//! Nonce leases under concurrency (and faults): workers lease nonces from
//! one account over a simulated chain and end each lease at random, then
//! the history and the store at rest are checked.
#![cfg(feature = "nonce")]

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use atomic_store::conformance::Store;
use atomic_store::nonce::{Address, NonceManager, PendingNonceSource, Released};
use atomic_store::{ErrorKind, LockId, Result};

/// A chain that accepts what it is sent: its pending count is the first
/// nonce it has not accepted.
#[derive(Debug, Default)]
pub struct SimChain {
    accepted: Mutex<BTreeSet<u64>>,
}

impl SimChain {
    fn accept(&self, nonce: u64) -> bool {
        self.accepted.lock().unwrap().insert(nonce)
    }
    fn pending_now(&self) -> u64 {
        let accepted = self.accepted.lock().unwrap();
        (0..).find(|n| !accepted.contains(n)).unwrap()
    }
}

#[async_trait]
impl PendingNonceSource for SimChain {
    async fn pending(&self, _: &Address) -> Result<u64> {
        Ok(self.pending_now())
    }
    async fn confirmed(&self, _: &Address) -> Result<u64> {
        Ok(self.pending_now())
    }
}

/// What the workers saw.
#[derive(Default)]
pub struct LeaseLog {
    /// Nonces burned (repair may fill them).
    burned: Mutex<HashSet<u64>>,
    /// Nonces in a live lease now.
    held: Mutex<HashSet<u64>>,
    /// Nonces confirmed or burned: never to be leased again.
    ended: Mutex<HashSet<u64>>,
    /// Nonces released and not leased since: listed, or above the counter
    /// (else a gap, which only a failed call explains).
    released: Mutex<HashSet<u64>>,
    /// Nonces whose release failed: reusable or a gap, either is right.
    maybe_released: Mutex<HashSet<u64>>,
    /// Leases that failed with an unknown outcome (each may leave a gap).
    unknown_leases: AtomicUsize,
    /// Releases that failed (each may leave one more gap, in the list's tail).
    failed_releases: AtomicUsize,
    pub leases: AtomicUsize,
    pub reused: AtomicUsize,
    /// Times the counter reached the window and the gaps were filled.
    pub repairs: AtomicUsize,
    violations: Mutex<Vec<String>>,
}

impl LeaseLog {
    fn violation(&self, what: String) {
        self.violations.lock().unwrap().push(what);
    }
}

/// One account of a fresh address on a fresh simulated chain.
pub struct LeaseRun {
    pub manager: NonceManager,
    pub address: Address,
    pub chain: Arc<SimChain>,
    pub log: Arc<LeaseLog>,
}

impl LeaseRun {
    pub fn new(store: &Store) -> LeaseRun {
        let chain = Arc::new(SimChain::default());
        let hex: String = LockId::generate()
            .as_str()
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect();
        LeaseRun {
            manager: NonceManager::new(Arc::clone(store), chain.clone(), 31337),
            address: format!("0x{}", &hex[..40]).parse().unwrap(),
            chain,
            log: Arc::default(),
        }
    }

    /// Lease and end leases until `stop`: of every ten, seven confirmed
    /// (the chain accepts), two released, one burned (the chain accepts
    /// every other burned one: a send whose reply was lost).
    pub async fn work(&self, worker: usize, stop: &AtomicBool, pause: Duration) {
        let log = &self.log;
        let mut round = worker;
        while !stop.load(Ordering::SeqCst) {
            round += 1;
            let lease = match self.manager.lease(&self.address).await {
                Ok(lease) => lease,
                Err(e) => {
                    match e.kind() {
                        ErrorKind::OutcomeUnknown => {
                            log.unknown_leases.fetch_add(1, Ordering::SeqCst);
                        }
                        ErrorKind::Unavailable if e.to_string().contains("ahead of the chain") => {
                            // Burned nonces stall the chain; repair fills them
                            // (only them: a confirm may be on its way to the
                            // chain, and filling it would look like a resend).
                            let burned = log.burned.lock().unwrap().clone();
                            for n in burned {
                                self.chain.accept(n);
                            }
                            log.repairs.fetch_add(1, Ordering::SeqCst);
                        }
                        ErrorKind::Unavailable | ErrorKind::Timeout => {}
                        _ => log.violation(format!("lease failed with a non-network error: {e}")),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            };
            let n = lease.nonce();
            log.leases.fetch_add(1, Ordering::SeqCst);
            if log.ended.lock().unwrap().contains(&n) {
                log.violation(format!(
                    "nonce {n} leased again after it was confirmed or burned"
                ));
            }
            let was_released = log.released.lock().unwrap().remove(&n);
            if log.maybe_released.lock().unwrap().remove(&n) || was_released {
                log.reused.fetch_add(1, Ordering::SeqCst);
            }
            if !log.held.lock().unwrap().insert(n) {
                log.violation(format!("nonce {n} leased while another lease held it"));
            }
            tokio::time::sleep(pause).await;
            match round % 10 {
                0 | 5 => {
                    // Out of `held` first: once released, another may lease it.
                    log.held.lock().unwrap().remove(&n);
                    log.released.lock().unwrap().insert(n);
                    match lease.release().await {
                        Ok(Released::Rewound | Released::Listed) => {}
                        Ok(Released::Burned) => {
                            log.violation(format!("nonce {n} burned: the free list is not full"))
                        }
                        Err(e) => {
                            if log.released.lock().unwrap().remove(&n) {
                                log.maybe_released.lock().unwrap().insert(n);
                            }
                            log.failed_releases.fetch_add(1, Ordering::SeqCst);
                            if !matches!(
                                e.kind(),
                                ErrorKind::OutcomeUnknown
                                    | ErrorKind::Unavailable
                                    | ErrorKind::Timeout
                            ) {
                                log.violation(format!(
                                    "release failed with a non-network error: {e}"
                                ));
                            }
                        }
                    }
                }
                3 => {
                    log.ended.lock().unwrap().insert(n);
                    log.burned.lock().unwrap().insert(n);
                    log.held.lock().unwrap().remove(&n);
                    if round % 20 == 3 {
                        self.chain.accept(n);
                    }
                    lease.burn();
                }
                _ => {
                    log.ended.lock().unwrap().insert(n);
                    log.held.lock().unwrap().remove(&n);
                    if !self.chain.accept(n) {
                        log.violation(format!("nonce {n} sent twice"));
                    }
                    lease.confirm();
                }
            }
        }
    }

    /// The history held no violation, and at rest every nonce up to the
    /// counter is confirmed, burned or listed, or explained by a failed
    /// call; every listed nonce is below the counter and not ended.
    pub async fn check(&self, store: &Store) -> std::result::Result<(), String> {
        self.check_now(store)
            .await
            .map_err(|e| format!("nonce leases: {e}"))
    }

    async fn check_now(&self, store: &Store) -> std::result::Result<(), String> {
        let log = &self.log;
        let violations = log.violations.lock().unwrap().clone();
        if !violations.is_empty() {
            return Err(format!("{violations:?}"));
        }
        let last: i64 = match store
            .get(&self.manager.last_used_key(&self.address))
            .await
            .map_err(|e| e.to_string())?
        {
            Some(v) => v.parse().map_err(|_| format!("lastUsed holds {v:?}"))?,
            None => -1,
        };
        let raw = store
            .get(&self.manager.released_key(&self.address))
            .await
            .map_err(|e| e.to_string())?
            .unwrap_or_default();
        // `version|n,n,…`
        let listed: Vec<u64> = raw
            .split_once('|')
            .map_or("", |(_, list)| list)
            .split(',')
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse()
                    .map_err(|_| format!("the free list holds {raw:?}"))
            })
            .collect::<std::result::Result<_, _>>()?;
        let ended = log.ended.lock().unwrap().clone();
        let maybe = log.maybe_released.lock().unwrap().clone();
        for n in &listed {
            if *n as i64 > last {
                return Err(format!("nonce {n} listed above the counter {last}"));
            }
            if ended.contains(n) {
                return Err(format!(
                    "nonce {n} listed though it was confirmed or burned"
                ));
            }
        }
        let gaps: Vec<u64> = (0..=last.max(-1))
            .filter(|&n| n >= 0)
            .map(|n| n as u64)
            .filter(|n| !ended.contains(n) && !listed.contains(n) && !maybe.contains(n))
            .collect();
        let explained =
            log.unknown_leases.load(Ordering::SeqCst) + log.failed_releases.load(Ordering::SeqCst);
        if gaps.len() > explained {
            return Err(format!(
                "nonces {gaps:?} up to the counter {last} were neither confirmed, burned nor listed, and only {explained} failed calls could explain a gap"
            ));
        }
        if log.leases.load(Ordering::SeqCst) == 0 {
            return Err("no lease succeeded".to_owned());
        }
        Ok(())
    }
}

/// 8 tasks lease for a second on `store`, then the check.
pub async fn leases_stay_unique(store: &Store) -> std::result::Result<(), String> {
    let run = Arc::new(LeaseRun::new(store));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for worker in 0..8 {
        let (run, stop) = (Arc::clone(&run), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            run.work(worker, &stop, Duration::from_millis(1)).await
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    run.check(store).await?;
    eprintln!(
        "{}: {} leases, {} reused, {} repairs",
        store.capabilities().backend,
        run.log.leases.load(Ordering::SeqCst),
        run.log.reused.load(Ordering::SeqCst),
        run.log.repairs.load(Ordering::SeqCst)
    );
    if run.log.reused.load(Ordering::SeqCst) == 0 {
        return Err("no released nonce was leased again".to_owned());
    }
    Ok(())
}
