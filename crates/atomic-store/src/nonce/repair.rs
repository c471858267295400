//! Gap repair: the chain waits on a nonce nobody will send (a burned lease,
//! a process that died between lease and send, a listed nonce no lease took
//! yet). Fill it with a 0-value self-transfer, until the chain's pending
//! count is past the store's counter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use alloy_network::{Network, TransactionBuilder};
use alloy_primitives::{TxHash, U256};
use alloy_provider::Provider;

use super::chain::read_error;
use super::send::{classify, describe, Fate, SEND_TIMEOUT};
use super::{Address, NonceManager, BACKEND};
use crate::lock::DistributedLock;
use crate::{Error, ErrorKind, Operation, Result};

/// What [`NonceManager::repair`] does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RepairMode {
    /// Look only: report where the chain waits, change nothing.
    Report,
    /// Fill each nonce the chain waits on. A nonce not on the free list may
    /// belong to a live lease about to send, so it is filled only if the
    /// chain still waits on it after `grace`.
    Fill {
        /// How long an unlisted nonce gets to arrive.
        grace: Duration,
    },
}

/// What a repair saw and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepairReport {
    /// The chain's pending count before (the nonce it waited on).
    pub pending_before: u64,
    /// The store's last handed-out nonce.
    pub last_used: Option<i64>,
    /// Nonces filled with a self-transfer, with the transaction's hash.
    pub filled: Vec<(u64, Option<TxHash>)>,
    /// The chain's pending count after.
    pub pending_after: u64,
}

fn repair_error(kind: ErrorKind, message: String) -> Error {
    Error::new(kind, BACKEND, Operation::CompareAndSet, message)
}

impl NonceManager {
    /// Find the nonces the chain waits on for `address` and, with
    /// [`RepairMode::Fill`], fill each with a 0-value self-transfer sent
    /// through `provider` (signed by its wallet, or by the node). Runs
    /// under the account's lock (the one `reset` takes), and drops listed
    /// nonces the chain has passed.
    pub async fn repair<P, N>(
        &self,
        provider: &P,
        address: &Address,
        mode: RepairMode,
    ) -> Result<RepairReport>
    where
        P: Provider<N>,
        N: Network,
    {
        self.check_chain(provider).await?;
        let pending_of = || async {
            provider
                .get_transaction_count(*address)
                .pending()
                .await
                .map_err(|e| read_error("eth_getTransactionCount", "the provider's node", e))
        };
        let pending_before = pending_of().await?;
        let mut report = RepairReport {
            pending_before,
            last_used: self.last_used(address).await?,
            filled: Vec::new(),
            pending_after: pending_before,
        };
        let RepairMode::Fill { grace } = mode else {
            return Ok(report);
        };
        let lock = DistributedLock::new(
            Arc::clone(&self.store),
            self.lock_key(address),
            Duration::from_secs(30),
        )
        .name("nonce_repair")
        .auto_renew(true);
        let guard = lock.acquire(Duration::from_secs(10)).await?;
        let lost = guard.lost();
        // Fill up to the counter as it was at the start: senders running
        // meanwhile move it on, and their nonces are theirs to send.
        let last = report.last_used.unwrap_or(-1);
        let result = async {
            let mut waited_on = None;
            loop {
                if lost.is_cancelled() {
                    return Err(repair_error(
                        ErrorKind::Unavailable,
                        "the account's lock was lost during the repair; run it again".to_owned(),
                    )
                    .with_temporary(true));
                }
                let pending = pending_of().await?;
                report.pending_after = pending;
                if i64::try_from(pending).map_or(true, |p| p > last) {
                    break;
                }
                let listed = self.take_listed(address, pending).await?;
                if !listed && waited_on != Some(pending) && !grace.is_zero() {
                    // A live lease may be about to send it.
                    waited_on = Some(pending);
                    tokio::time::sleep(grace).await;
                    continue;
                }
                let tx = N::TransactionRequest::default()
                    .with_from(*address)
                    .with_to(*address)
                    .with_value(U256::ZERO)
                    .with_nonce(pending);
                let sent = tokio::time::timeout(SEND_TIMEOUT, provider.send_transaction(tx))
                    .await
                    .map_err(|_| {
                        repair_error(
                            ErrorKind::OutcomeUnknown,
                            format!("no answer to the fill of nonce {pending} within {SEND_TIMEOUT:?}; run `doctor` to see whether the chain still waits on it"),
                        )
                    })?;
                match sent {
                    Ok(sent) => report.filled.push((pending, Some(*sent.tx_hash()))),
                    Err(e) => match classify(&e) {
                        // Someone else's transaction took it meanwhile.
                        Fate::Resync | Fate::Confirm => {}
                        fate => {
                            if listed && fate == Fate::Release {
                                // Back on the list; the refusal is the answer.
                                let _ = self.release_nonce(address, pending).await;
                            }
                            return Err(repair_error(
                                if fate == Fate::Release {
                                    ErrorKind::Backend
                                } else {
                                    ErrorKind::OutcomeUnknown
                                },
                                format!(
                                    "filling nonce {pending} failed ({}); the chain still waits on it",
                                    describe(&e)
                                ),
                            ));
                        }
                    },
                }
                // The node moves its pending count past the filled nonce (and
                // past queued transactions behind it).
                let deadline = Instant::now() + Duration::from_secs(5);
                while pending_of().await? <= pending {
                    if Instant::now() > deadline {
                        return Err(repair_error(
                            ErrorKind::Unavailable,
                            format!("the node took a transaction with nonce {pending} but still waits on it after 5 s; run the repair again"),
                        ).with_temporary(true));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            self.drop_passed(address, report.pending_after).await
        }
        .await;
        super::release_after(guard, result).await.map(|()| report)
    }

    async fn last_used(&self, address: &Address) -> Result<Option<i64>> {
        let key = self.last_used_key(address);
        super::lease::parse_last_used(self.store.get(&key).await?.as_deref(), &key)
    }
}
