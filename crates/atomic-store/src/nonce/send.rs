//! Sending through a lease, the one table that turns a node's answer into
//! a nonce's fate, and alloy's `NonceManager` trait.

use std::sync::atomic::Ordering;
use std::time::Duration;

use alloy_json_rpc::RpcError;
use alloy_network::{Network, TransactionBuilder};
use alloy_primitives::TxHash;
use alloy_provider::Provider;
use alloy_transport::{TransportError, TransportErrorKind, TransportResult};
use async_trait::async_trait;

use super::chain::{read_error, shortened};
use super::{Address, NonceManager, BACKEND};
use crate::{Error, ErrorKind, Operation, Result};

/// How long [`NonceManager::send`] waits for the node's answer; after it
/// the transaction may be out, so its nonce is burned.
pub const SEND_TIMEOUT: Duration = Duration::from_secs(30);

/// How many times a send leases again after "nonce too low".
const RESYNCS: usize = 3;

/// What a node's answer to a send means for the nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The node has the transaction: confirm.
    Confirm,
    /// Certainly not broadcast: release the nonce for reuse.
    Release,
    /// The chain already used this nonce: drop it and lease another.
    Resync,
    /// Unknown whether it went out: burn.
    Burn,
}

/// Node messages, matched case-insensitively in this order (geth's and
/// anvil's wording).
const MESSAGES: &[(&str, Fate)] = &[
    ("already known", Fate::Confirm),
    ("already imported", Fate::Confirm),
    ("nonce too low", Fate::Resync),
    ("replacement transaction underpriced", Fate::Resync),
    (
        "insufficient gas price to replace existing transaction",
        Fate::Resync,
    ),
    ("nonce too high", Fate::Release),
    ("insufficient funds", Fate::Release),
    ("intrinsic gas too low", Fate::Release),
    ("transaction underpriced", Fate::Release),
    ("max fee per gas less than block base fee", Fate::Release),
    ("fee cap less than block base fee", Fate::Release),
    ("exceeds block gas limit", Fate::Release),
    ("execution reverted", Fate::Release),
    ("invalid sender", Fate::Release),
    ("no signer", Fate::Release),
];

/// The fate of a nonce whose send failed with `error`: the one table.
///
/// | answer | fate |
/// |---|---|
/// | "already known" / "already imported" | confirm |
/// | "nonce too low", "replacement transaction underpriced", "insufficient gas price to replace existing transaction" | resync |
/// | a refusal before the pool ("insufficient funds", a fee below the base fee, "nonce too high", a bad request −32600…−32602, …) | release |
/// | no connection could be made, HTTP 400/401/403/405/413/415/429, a request alloy refused to build | release |
/// | any other node error, an HTTP 5xx, a broken or unreadable reply, a timeout | burn |
pub fn classify(error: &TransportError) -> Fate {
    match error {
        RpcError::ErrorResp(payload) => {
            let message = payload.message.to_ascii_lowercase();
            // geth's "known transaction: <hash>" (not "unknown transaction type").
            if message.starts_with("known transaction") {
                return Fate::Confirm;
            }
            if let Some((_, fate)) = MESSAGES.iter().find(|(m, _)| message.contains(m)) {
                return *fate;
            }
            match payload.code {
                -32602..=-32600 => Fate::Release,
                _ => Fate::Burn,
            }
        }
        RpcError::Transport(TransportErrorKind::Custom(source)) => {
            match source.downcast_ref::<reqwest::Error>() {
                Some(e) if e.is_connect() => Fate::Release,
                _ => Fate::Burn,
            }
        }
        RpcError::Transport(TransportErrorKind::HttpError(h))
        | RpcError::Transport(TransportErrorKind::HttpErrorWithRetryAfter { error: h, .. }) => {
            // Statuses a server or gateway answers before passing the
            // request on; a 408 or 499 may come after it went through.
            match h.status {
                400 | 401 | 403 | 405 | 413 | 415 | 429 => Fate::Release,
                _ => Fate::Burn,
            }
        }
        RpcError::LocalUsageError(_) | RpcError::SerError(_) | RpcError::UnsupportedFeature(_) => {
            Fate::Release
        }
        _ => Fate::Burn,
    }
}

/// What the node answered, without anything that could hold the URL.
pub(super) fn describe(error: &TransportError) -> String {
    match error {
        RpcError::ErrorResp(p) => format!("error {}: {}", p.code, shortened(&p.message)),
        RpcError::Transport(TransportErrorKind::HttpError(h)) => format!("HTTP {}", h.status),
        RpcError::Transport(TransportErrorKind::Custom(source)) => {
            match source.downcast_ref::<reqwest::Error>() {
                Some(e) if e.is_connect() => "no connection to the node".to_owned(),
                Some(e) if e.is_timeout() => "no answer in time".to_owned(),
                _ => "the connection failed".to_owned(),
            }
        }
        RpcError::Transport(_) => "the transport failed".to_owned(),
        RpcError::LocalUsageError(e) => {
            format!("refused before sending: {}", shortened(&e.to_string()))
        }
        RpcError::NullResp => "an empty reply".to_owned(),
        _ => "a reply that cannot be read".to_owned(),
    }
}

/// A transaction the node took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    /// Its nonce.
    pub nonce: u64,
    /// Its hash; `None` when the node answered "already known".
    pub hash: Option<TxHash>,
}

fn send_error(kind: ErrorKind, message: String) -> Error {
    Error::new(kind, BACKEND, Operation::AssignNonce, message)
}

/// A send that did not end with the node holding the transaction.
#[derive(Debug)]
pub struct SendError {
    /// The nonce leased for it, if one was.
    pub nonce: Option<u64>,
    /// What became of that nonce: [`Fate::Release`] (reused by the next
    /// lease) or [`Fate::Burn`] (kept out of use; the chain may wait on it).
    pub fate: Option<Fate>,
    /// Why: `Backend` for a refusal, `OutcomeUnknown` for a burned nonce,
    /// or the error of the store or of a read from the node.
    pub error: Error,
}

impl SendError {
    fn before_lease(error: Error) -> SendError {
        SendError {
            nonce: None,
            fate: None,
            error,
        }
    }
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for SendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

impl From<SendError> for Error {
    fn from(e: SendError) -> Error {
        e.error
    }
}

impl NonceManager {
    /// Check once per manager that `provider` serves this manager's chain:
    /// nonces are kept per chain id.
    pub(super) async fn check_chain<P: Provider<N>, N: Network>(&self, provider: &P) -> Result<()> {
        if self.chain_checked.load(Ordering::Relaxed) {
            return Ok(());
        }
        let served = provider
            .get_chain_id()
            .await
            .map_err(|e| read_error("eth_chainId", "the provider's node", e))?;
        if served != self.chain_id {
            return Err(send_error(
                ErrorKind::InvalidArgument,
                format!(
                    "the provider serves chain {served}, but this nonce manager keeps chain {}'s nonces; build the manager with chain id {served}",
                    self.chain_id
                ),
            ));
        }
        self.chain_checked.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Lease a nonce for `tx.from`, send `tx` with it through `provider`,
    /// and decide the lease by the node's answer ([`classify`]): accepted →
    /// confirmed; refused before broadcast → released (the error is
    /// `Backend`); "nonce too low" → lease again (3 times at most); no
    /// answer, or one that cannot be read → burned (`OutcomeUnknown`).
    ///
    /// Signing is the provider's: a wallet filler, or the node's own
    /// accounts (`eth_sendTransaction`). A nonce already set on `tx` is
    /// replaced.
    ///
    /// The table trusts that an error is the answer to the one request
    /// sent: use a provider without retry or fallback layers (alloy's
    /// `RetryBackoffLayer`, `FallbackLayer`), which can turn an earlier
    /// attempt that went out into a later "nonce too low" or connection
    /// error.
    pub async fn send<P, N>(
        &self,
        provider: &P,
        mut tx: N::TransactionRequest,
    ) -> std::result::Result<Sent, SendError>
    where
        P: Provider<N>,
        N: Network,
    {
        let from: Address = tx
            .from()
            .ok_or_else(|| {
                send_error(
                ErrorKind::InvalidArgument,
                "the transaction has no `from`: set it, so the nonce is leased for that account"
                    .to_owned(),
            )
            })
            .map_err(SendError::before_lease)?;
        self.check_chain(provider)
            .await
            .map_err(SendError::before_lease)?;
        for _ in 0..RESYNCS {
            let pending = provider
                .get_transaction_count(from)
                .pending()
                .await
                .map_err(|e| read_error("eth_getTransactionCount", "the provider's node", e))
                .map_err(SendError::before_lease)?;
            let lease = self
                .lease_at(&from, pending)
                .await
                .map_err(SendError::before_lease)?;
            let nonce = lease.nonce();
            if let Some(pause) = self.pause_after_lease {
                tokio::time::sleep(pause).await;
            }
            tx.set_nonce(nonce);
            let error = match tokio::time::timeout(
                SEND_TIMEOUT,
                provider.send_transaction(tx.clone()),
            )
            .await
            {
                Ok(Ok(pending_tx)) => {
                    let hash = *pending_tx.tx_hash();
                    lease.confirm();
                    return Ok(Sent {
                        nonce,
                        hash: Some(hash),
                    });
                }
                Ok(Err(e)) => e,
                Err(_) => {
                    lease.burn();
                    return Err(failed(nonce, Fate::Burn, send_error(
                        ErrorKind::OutcomeUnknown,
                        format!("no answer to the send within {SEND_TIMEOUT:?}; the transaction may be out, so nonce {nonce} was burned"),
                    )));
                }
            };
            let said = describe(&error);
            match classify(&error) {
                Fate::Confirm => {
                    lease.confirm();
                    return Ok(Sent { nonce, hash: None });
                }
                Fate::Resync => {
                    lease.hand_off();
                }
                Fate::Release => {
                    let (fate, released) = match lease.release().await {
                        Ok(_) => (Fate::Release, format!("nonce {nonce} was released for reuse")),
                        // Not broadcast, but maybe not reusable either: a
                        // gap for repair, like a burned nonce.
                        Err(e) => (Fate::Burn, format!("releasing nonce {nonce} failed too ({e}), so the chain may wait on it")),
                    };
                    return Err(failed(
                        nonce,
                        fate,
                        send_error(
                            ErrorKind::Backend,
                            format!("the node refused the transaction ({said}); {released}"),
                        ),
                    ));
                }
                Fate::Burn => {
                    lease.burn();
                    return Err(failed(
                        nonce,
                        Fate::Burn,
                        send_error(
                            ErrorKind::OutcomeUnknown,
                            format!("the send failed with {said}; the transaction may be out, so nonce {nonce} was burned"),
                        ),
                    ));
                }
            }
        }
        Err(SendError::before_lease(
            send_error(
                ErrorKind::Unavailable,
                format!("the node answered \"nonce too low\" {RESYNCS} times: something else sends from {from}; try again"),
            )
            .with_temporary(true),
        ))
    }
}

fn failed(nonce: u64, fate: Fate, error: Error) -> SendError {
    SendError {
        nonce: Some(nonce),
        fate: Some(fate),
        error,
    }
}

/// alloy's nonce filler backed by the store, shared across processes:
/// `ProviderBuilder::new().disable_recommended_fillers().with_gas_estimation()
/// .with_nonce_management(manager).fetch_chain_id()`. (With the recommended
/// fillers left on, alloy's cached nonce manager runs as well.)
///
/// The trait only hands out nonces; it cannot hear how the send went, so
/// each nonce counts as used. Use [`NonceManager::send`] to have failed
/// sends give their nonce back.
#[async_trait]
impl alloy_provider::fillers::NonceManager for NonceManager {
    async fn get_next_nonce<P, N>(&self, provider: &P, address: Address) -> TransportResult<u64>
    where
        P: Provider<N>,
        N: Network,
    {
        self.check_chain(provider)
            .await
            .map_err(TransportErrorKind::custom)?;
        let pending = provider.get_transaction_count(address).pending().await?;
        let lease = self
            .lease_at(&address, pending)
            .await
            .map_err(TransportErrorKind::custom)?;
        Ok(lease.hand_off())
    }
}
