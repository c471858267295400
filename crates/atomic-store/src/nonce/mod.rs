//! A distributed nonce manager for EVM accounts (feature `nonce`, built on
//! alloy), in the TypeScript original's key layout so a mixed fleet shares
//! one counter.
//!
//! Lease a nonce, and tell the lease how the send went; or let
//! [`NonceManager::send`] do both through an alloy provider:
//!
//! ```no_run
//! use std::sync::Arc;
//! use alloy_network::TransactionBuilder;
//! use alloy_provider::{Provider, ProviderBuilder};
//! use alloy_rpc_types_eth::TransactionRequest;
//! use atomic_store::nonce::{parse_address, JsonRpcSource, NonceManager};
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let store = atomic_store::open("redis://127.0.0.1:6379?prefix=vana-sdk:atomic")?;
//! let chain = Arc::new(JsonRpcSource::new("http://127.0.0.1:8545")?);
//! let manager = NonceManager::new(store, chain, 1480);
//! let from = parse_address("0x70997970C51812dc3A010C7d01b50e0d17dc79C8")?;
//!
//! // By hand: every lease ends confirmed, released or burned.
//! let lease = manager.lease(&from).await?;
//! // ... sign and broadcast with `lease.nonce()`, then:
//! lease.release().await?; // certainly not broadcast: the nonce is reused
//!
//! // Or through alloy: the node's answer decides the lease.
//! let provider = ProviderBuilder::new()
//!     .disable_recommended_fillers()
//!     .connect_http("http://127.0.0.1:8545".parse()?);
//! let tx = TransactionRequest::default().with_from(from).with_to(from);
//! let sent = manager.send(&provider, tx).await?;
//! println!("nonce {} in {:?}", sent.nonce, sent.hash);
//! # Ok(()) }
//! ```
//!
//! alloy users can also plug the manager in as alloy's nonce filler
//! (`ProviderBuilder::with_nonce_management`); see [`NonceManager`]'s
//! implementation of `alloy_provider::fillers::NonceManager`.
//!
//! # Keys
//! - `nonce:{chainId}:{address}:lastUsed`: the last nonce handed out, a
//!   decimal string (`-1` after a reset of a fresh account);
//! - `nonce:{chainId}:{address}:released`: the free list of released
//!   nonces (new; the TypeScript original never reads it);
//! - `nonce:{chainId}:{address}:lock`: the lock `reset` holds.
//!
//! `{address}` is the EIP-55 checksummed form, which is what viem hands the
//! TypeScript original, so both fleets land on the same key; any spelling of
//! an address (lowercase, checksummed) is accepted and canonicalised.
//!
//! # Unlike the original
//! `assign` always goes through the store's atomic `assign_nonce` (one round
//! trip), so a fresh account's first nonce is 0; the original's lock-based
//! fallback skipped nonce 0 when the key was missing and the pending count 0.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use crate::lock::DistributedLock;
use crate::observe::recipe::in_span;
use crate::{AtomicStore, Error, ErrorKind, Operation, Result};

mod chain;
mod lease;
mod repair;
mod send;
pub use chain::{redact_rpc_url, JsonRpcSource, ProviderChain};
pub use lease::{NonceLease, Released, FREE_LIST_LIMIT};
pub use repair::{RepairMode, RepairReport};
pub use send::{classify, Fate, SendError, Sent, SEND_TIMEOUT};

const BACKEND: &str = "nonce";

/// An EVM address: alloy's, so the manager plugs into alloy code as is.
pub use alloy_primitives::Address;

/// Why a string is not an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddressError(String);

impl fmt::Display for AddressError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for AddressError {}

/// Parse an address strictly: `0x` and 40 hex digits, all lowercase, all
/// uppercase, or mixed case with a valid EIP-55 checksum (a mistyped
/// checksummed address is refused rather than taken for another account).
pub fn parse_address(text: &str) -> std::result::Result<Address, AddressError> {
    let hex = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .ok_or_else(|| AddressError(format!("address {text:?} does not start with 0x")))?;
    if hex.len() != 40 || !hex.bytes().all(|c| c.is_ascii_hexdigit()) {
        return Err(AddressError(format!(
            "address {text:?} is not 0x followed by 40 hex digits"
        )));
    }
    let address: Address = hex.parse().expect("40 checked hex digits");
    let mixed =
        hex.bytes().any(|c| c.is_ascii_lowercase()) && hex.bytes().any(|c| c.is_ascii_uppercase());
    if mixed && address.to_checksum(None)[2..] != *hex {
        return Err(AddressError(format!(
            "address {text:?} has a wrong EIP-55 checksum (expected {})",
            address.to_checksum(None)
        )));
    }
    Ok(address)
}

/// Where the chain's transaction counts come from.
#[async_trait]
pub trait PendingNonceSource: Send + Sync + fmt::Debug {
    /// Transactions of `address` counting the pending pool: the next nonce
    /// the chain would accept after those already sent.
    async fn pending(&self, address: &Address) -> Result<u64>;
    /// Transactions of `address` in the latest block.
    async fn confirmed(&self, address: &Address) -> Result<u64>;
}

/// `result`, after releasing the account's lock: a release that fails only
/// logs (the lock expires by itself), so it never hides what was done.
async fn release_after<T>(guard: crate::lock::LockGuard, result: Result<T>) -> Result<T> {
    if let Err(e) = guard.release().await {
        tracing::warn!(
            target: "atomic_store",
            error_kind = %e.kind(),
            "releasing a nonce account's lock failed; it expires by itself"
        );
    }
    result
}

/// What [`NonceManager::rewind`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RewindOutcome {
    /// The nonce was the last one handed out; the next `assign` returns it again.
    Rewound,
    /// Other nonces were handed out after it: rewinding would hand those
    /// out twice. The nonce is a gap the chain will wait on: send a
    /// transaction with it (e.g. a zero-value self-transfer).
    Gap {
        /// The last nonce handed out now.
        last_used: Option<i64>,
    },
}

/// How the store's nonce state relates to the chain's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The store's next nonce is the chain's pending count.
    InSync,
    /// Nothing stored yet; the first `assign` starts at the chain's count.
    Fresh,
    /// The store handed out nonces the chain has not seen
    /// (`pending..=last_used`): sent but not yet in the node's pool, or
    /// never broadcast. The chain waits on nonce `pending`.
    StoreAhead {
        /// How many nonces the chain has not seen.
        unseen: u64,
    },
    /// Transactions were sent around the manager; the next `assign` jumps
    /// to the chain's pending count, nothing to fix.
    StoreBehind {
        /// How far behind.
        by: u64,
    },
}

/// The store's and the chain's view of one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NonceState {
    /// The account.
    pub address: Address,
    /// The chain id.
    pub chain_id: u64,
    /// The store's last handed-out nonce.
    pub last_used: Option<i64>,
    /// The chain's pending count (next nonce it accepts).
    pub pending: u64,
    /// The chain's confirmed count.
    pub confirmed: u64,
    /// The verdict.
    pub verdict: Verdict,
}

/// The result of a store health probe.
#[derive(Debug, Clone)]
pub struct Health {
    /// Whether write, read and delete of a probe key all worked.
    pub healthy: bool,
    /// Time for the three calls.
    pub latency: Duration,
    /// Why not, when unhealthy.
    pub problem: Option<String>,
}

/// Assigns nonces for one chain across every instance sharing the store.
#[derive(Clone)]
pub struct NonceManager {
    store: Arc<dyn AtomicStore>,
    chain: Arc<dyn PendingNonceSource>,
    chain_id: u64,
    /// Whether a provider passed to `send` or alloy's trait was seen to
    /// serve `chain_id`.
    chain_checked: Arc<AtomicBool>,
    /// A pause in `send` between the lease and the send (tests kill a
    /// process there).
    pause_after_lease: Option<Duration>,
}

impl fmt::Debug for NonceManager {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NonceManager")
            .field("chain", &self.chain)
            .field("chain_id", &self.chain_id)
            .finish()
    }
}

/// A nonce manager's span: the chain, never the address (a key part).
macro_rules! nonce_span {
    ($name:literal, $chain_id:expr) => {
        tracing::debug_span!(
            target: "atomic_store",
            $name,
            chain_id = $chain_id,
            outcome = tracing::field::Empty,
            "error.type" = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    };
}

impl NonceManager {
    /// A manager for `chain_id` over `store`, reading counts from `chain`.
    pub fn new(
        store: Arc<dyn AtomicStore>,
        chain: Arc<dyn PendingNonceSource>,
        chain_id: u64,
    ) -> Self {
        NonceManager {
            store,
            chain,
            chain_id,
            chain_checked: Arc::default(),
            pause_after_lease: None,
        }
    }

    #[doc(hidden)]
    /// Pause `send` between the lease and the send (for tests that kill a
    /// process holding a lease).
    pub fn pause_after_lease(mut self, pause: Duration) -> Self {
        self.pause_after_lease = Some(pause);
        self
    }

    /// The key of the last used nonce (without the store's prefix).
    pub fn last_used_key(&self, address: &Address) -> String {
        format!(
            "nonce:{}:{}:lastUsed",
            self.chain_id,
            address.to_checksum(None)
        )
    }

    /// The key of the account's lock (without the store's prefix).
    pub fn lock_key(&self, address: &Address) -> String {
        format!("nonce:{}:{}:lock", self.chain_id, address.to_checksum(None))
    }

    /// The next nonce for `address`: one chain read, then one atomic store
    /// step (`assign_nonce`). A lost store reply is `OutcomeUnknown`: treat
    /// the nonce as maybe used (the chain's count catches up either way).
    pub async fn assign(&self, address: &Address) -> Result<u64> {
        let span = nonce_span!("nonce.assign", self.chain_id);
        let assign = async {
            let pending = self.chain.pending(address).await?;
            self.store
                .assign_nonce(&self.last_used_key(address), pending)
                .await
        };
        in_span(span, None, |_| "assigned", assign).await
    }

    /// Give back `nonce` if it is still the last one handed out (it was
    /// never broadcast). Otherwise report the gap.
    pub async fn rewind(&self, address: &Address, nonce: u64) -> Result<RewindOutcome> {
        let span = nonce_span!("nonce.rewind", self.chain_id);
        let outcome = |o: &RewindOutcome| match o {
            RewindOutcome::Rewound => "rewound",
            RewindOutcome::Gap { .. } => "gap",
        };
        in_span(span, None, outcome, self.rewind_now(address, nonce)).await
    }

    async fn rewind_now(&self, address: &Address, nonce: u64) -> Result<RewindOutcome> {
        let key = self.last_used_key(address);
        let previous = nonce as i64 - 1;
        if self
            .store
            .compare_and_set(&key, Some(&nonce.to_string()), &previous.to_string(), None)
            .await?
        {
            return Ok(RewindOutcome::Rewound);
        }
        let last_used = self.store.get(&key).await?.and_then(|v| v.parse().ok());
        Ok(RewindOutcome::Gap { last_used })
    }

    /// Set the last used nonce to the chain's confirmed count − 1, under the
    /// account's lock, dropping what the store handed out beyond it. Use it
    /// after pending transactions were dropped by the network.
    ///
    /// The counter is swapped from the value read *before* the chain was
    /// asked, so a nonce handed out while the reset runs (it may be on its
    /// way to the node) is never handed out again: the reset then changes
    /// nothing and fails with a temporary `Unavailable` error; stop the
    /// account's senders and reset again.
    pub async fn reset(&self, address: &Address) -> Result<i64> {
        let span = nonce_span!("nonce.reset", self.chain_id);
        in_span(span, None, |_| "reset", self.reset_now(address)).await
    }

    async fn reset_now(&self, address: &Address) -> Result<i64> {
        let lock = DistributedLock::new(
            Arc::clone(&self.store),
            self.lock_key(address),
            Duration::from_secs(5),
        )
        .name("nonce_reset");
        let guard = lock.acquire(Duration::from_secs(10)).await?;
        let result = async {
            let key = self.last_used_key(address);
            let before = self.store.get(&key).await?;
            let confirmed = self.chain.confirmed(address).await?;
            let last = i64::try_from(confirmed).map_err(|_| {
                Error::new(
                    ErrorKind::Backend,
                    BACKEND,
                    Operation::CompareAndSet,
                    format!("the chain reports {confirmed} confirmed transactions, more than a nonce can hold"),
                )
            })? - 1;
            let swapped = self
                .store
                .compare_and_set(&key, before.as_deref(), &last.to_string(), None)
                .await?;
            if swapped {
                // Listed nonces above the new counter would be handed out
                // by the counter as well.
                self.edit_list(address, |list| {
                    let had = !list.is_empty();
                    list.clear();
                    had
                })
                .await?;
            } else {
                let now = self.store.get(&key).await?;
                return Err(Error::new(
                    ErrorKind::Unavailable,
                    BACKEND,
                    Operation::CompareAndSet,
                    format!(
                        "nonces were handed out for {address} during the reset (lastUsed went from {} to {}); nothing was changed: stop the account's senders, then reset again",
                        before.as_deref().unwrap_or("none"),
                        now.as_deref().unwrap_or("none"),
                    ),
                ));
            }
            Ok(last)
        }
        .await;
        release_after(guard, result).await
    }

    /// The store's and the chain's state, with a verdict.
    pub async fn state(&self, address: &Address) -> Result<NonceState> {
        let last_used: Option<i64> = match self.store.get(&self.last_used_key(address)).await? {
            None => None,
            Some(v) => Some(v.parse().map_err(|_| {
                Error::new(
                    ErrorKind::NotAnInteger,
                    BACKEND,
                    Operation::Get,
                    format!("{} holds {v:?}, not a nonce", self.last_used_key(address)),
                )
            })?),
        };
        let pending = self.chain.pending(address).await?;
        let confirmed = self.chain.confirmed(address).await?;
        let verdict = match last_used {
            None => Verdict::Fresh,
            Some(last) => {
                let next = last + 1;
                let pending_i = pending as i64;
                if next == pending_i {
                    Verdict::InSync
                } else if next > pending_i {
                    Verdict::StoreAhead {
                        unseen: (next - pending_i) as u64,
                    }
                } else {
                    Verdict::StoreBehind {
                        by: (pending_i - next) as u64,
                    }
                }
            }
        };
        Ok(NonceState {
            address: *address,
            chain_id: self.chain_id,
            last_used,
            pending,
            confirmed,
            verdict,
        })
    }

    /// Probe the store: write, read and delete a key with a short TTL, so a
    /// failed probe leaves nothing behind for long.
    pub async fn health(&self) -> Health {
        let key = format!("nonce:health:{}", crate::LockId::generate());
        let started = Instant::now();
        let result: Result<()> = async {
            self.store
                .set_with_ttl(&key, "probe", Duration::from_secs(30))
                .await?;
            if self.store.get(&key).await?.as_deref() != Some("probe") {
                return Err(Error::new(
                    ErrorKind::Backend,
                    BACKEND,
                    Operation::Get,
                    "the probe read back something else",
                ));
            }
            self.store.delete(&key).await?;
            Ok(())
        }
        .await;
        Health {
            healthy: result.is_ok(),
            latency: started.elapsed(),
            problem: result.err().map(|e| e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn eip55_checksums() {
        // Test vectors from EIP-55.
        for good in [
            "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
            "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
            "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
            "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
        ] {
            let a = parse_address(good).unwrap();
            assert_eq!(a.to_checksum(None), good);
            assert_eq!(a.to_string(), good);
            let lower = parse_address(&good.to_lowercase()).unwrap();
            assert_eq!(lower, a);
        }
        assert!(parse_address("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD").is_err());
        assert!(parse_address("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed").is_err());
        assert!(parse_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1bea").is_err());
        assert!(parse_address("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beazz").is_err());
    }
}
