//! `nonce next | doctor | rewind | reset`: an account's nonces against a
//! node, through the library's nonce manager (feature `nonce`).

use std::sync::Arc;

use atomic_store::AtomicStore;

use crate::args::NonceAction;
use crate::output::Out;

#[cfg(feature = "nonce")]
pub async fn run(
    store: Arc<dyn AtomicStore>,
    url: &str,
    action: NonceAction,
    out: Out,
) -> atomic_store::Result<u8> {
    use atomic_store::nonce::{
        parse_address, Address, JsonRpcSource, NonceManager, PendingNonceSource, RewindOutcome,
        Verdict,
    };
    use serde_json::json;

    use crate::output::{EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK};

    let chain_args = match &action {
        NonceAction::Next { chain, .. }
        | NonceAction::Send { chain, .. }
        | NonceAction::Doctor { chain, .. }
        | NonceAction::Rewind { chain, .. }
        | NonceAction::Reset { chain, .. } => chain,
    };
    let address: Address = match parse_address(&chain_args.address) {
        Ok(a) => a,
        Err(e) => return Ok(out.failure("invalid_argument", &e.to_string())),
    };
    let rpc = Arc::new(JsonRpcSource::new(&chain_args.rpc)?);
    // Nonces are kept per chain: a node of another chain would send real
    // transactions and store their nonces under the wrong chain's key.
    let served = rpc.call("eth_chainId", json!([])).await?;
    let served = served
        .as_str()
        .and_then(|hex| u64::from_str_radix(hex.trim_start_matches("0x"), 16).ok());
    match served {
        Some(id) if id == chain_args.chain_id => {}
        Some(id) => {
            return Ok(out.failure(
                "invalid_argument",
                &format!(
                    "--chain-id {} does not match the node at --rpc, which serves chain {id}: pass that chain's id, or point --rpc at a node of chain {}",
                    chain_args.chain_id, chain_args.chain_id
                ),
            ))
        }
        None => {
            return Ok(out.failure(
                "backend",
                "the node at --rpc answered eth_chainId with no chain id that can be read; check that --rpc points at an Ethereum JSON-RPC endpoint",
            ))
        }
    }
    let manager = NonceManager::new(store, rpc.clone(), chain_args.chain_id);
    match action {
        NonceAction::Next {
            count,
            send_self_tx,
            ..
        } => {
            let mut nonces = Vec::new();
            let mut hashes = Vec::new();
            for _ in 0..count {
                let nonce = manager.assign(&address).await?;
                if send_self_tx {
                    let tx = json!([{
                        "from": address.to_checksum(None),
                        "to": address.to_checksum(None),
                        "value": "0x0",
                        "nonce": format!("{nonce:#x}"),
                    }]);
                    match rpc.call("eth_sendTransaction", tx).await {
                        Ok(hash) => hashes.push(hash.as_str().unwrap_or_default().to_owned()),
                        Err(e) => {
                            // Refused by the node: it will never be mined.
                            let _ = manager.rewind(&address, nonce).await;
                            return Err(e);
                        }
                    }
                }
                if !out.json {
                    match hashes.last() {
                        Some(h) if send_self_tx => say!("{nonce} {h}"),
                        _ => say!("{nonce}"),
                    }
                }
                nonces.push(nonce);
            }
            out.result("", json!({ "nonces": nonces, "tx_hashes": hashes }));
            Ok(EXIT_OK)
        }
        NonceAction::Send {
            ref to,
            value,
            count,
            max_fee_per_gas,
            max_priority_fee_per_gas,
            pause_after_lease,
            through_filler,
            ..
        } => {
            let manager = match pause_after_lease {
                Some(pause) => manager.pause_after_lease(pause),
                None => manager,
            };
            use alloy_network::TransactionBuilder;
            use atomic_store::nonce::Fate;

            let to = match to.as_deref().map(parse_address).transpose() {
                Ok(to) => to.unwrap_or(address),
                Err(e) => return Ok(out.failure("invalid_argument", &format!("--to: {e}"))),
            };
            let mut tx = alloy_rpc_types_eth::TransactionRequest::default()
                .with_from(address)
                .with_to(to)
                .with_value(alloy_primitives::U256::from(value));
            if let Some(fee) = max_fee_per_gas {
                tx.set_max_fee_per_gas(fee);
            }
            if let Some(fee) = max_priority_fee_per_gas {
                tx.set_max_priority_fee_per_gas(fee);
            }
            let sender = match sender(&chain_args.rpc, &rpc, address) {
                Ok(s) => s,
                Err(message) => return Ok(out.failure("invalid_argument", &message)),
            };
            if through_filler {
                return send_through_filler(&manager, sender, &rpc, tx, count, out).await;
            }
            let (mut released, mut burned) = (false, false);
            for _ in 0..count {
                match manager.send(&sender, tx.clone()).await {
                    Ok(sent) => {
                        let hash = sent.hash.map(|h| h.to_string());
                        if out.json {
                            say!(
                                "{}",
                                json!({"nonce": sent.nonce, "hash": hash, "fate": "confirmed"})
                            );
                        } else {
                            say!(
                                "{} {} confirmed",
                                sent.nonce,
                                hash.as_deref().unwrap_or("(already known)")
                            );
                        }
                    }
                    Err(e) if e.nonce.is_none() => return Err(e.error),
                    Err(e) => {
                        let fate = match e.fate {
                            Some(Fate::Release) => {
                                released = true;
                                "released"
                            }
                            _ => {
                                burned = true;
                                "burned"
                            }
                        };
                        if out.json {
                            say!(
                                "{}",
                                json!({"nonce": e.nonce, "hash": null, "fate": fate,
                                "error": {"kind": e.error.kind().as_str(), "message": e.error.to_string()}})
                            );
                        } else {
                            say!("{} - {fate}: {}", e.nonce.unwrap_or_default(), e.error);
                        }
                    }
                }
            }
            Ok(if burned {
                EXIT_ERROR
            } else if released {
                EXIT_NEGATIVE
            } else {
                EXIT_OK
            })
        }
        NonceAction::Doctor { repair, grace, .. } => {
            let repaired = if repair {
                use atomic_store::nonce::RepairMode;
                let sender = match sender(&chain_args.rpc, &rpc, address) {
                    Ok(s) => s,
                    Err(message) => return Ok(out.failure("invalid_argument", &message)),
                };
                let report = manager
                    .repair(&sender, &address, RepairMode::Fill { grace })
                    .await?;
                let filled: Vec<_> = report
                    .filled
                    .iter()
                    .map(|(n, h)| json!({"nonce": n, "hash": h.map(|h| h.to_string())}))
                    .collect();
                if !out.json {
                    match report.filled.len() {
                        0 => say!("repair           nothing to fill: the chain waits on no nonce the store handed out"),
                        n => say!(
                            "repair           filled {n} nonce(s) with self-transfers: {:?}; the chain's pending count went from {} to {}",
                            report.filled.iter().map(|(n, _)| n).collect::<Vec<_>>(),
                            report.pending_before,
                            report.pending_after
                        ),
                    }
                }
                Some(
                    json!({"filled": filled, "pending_before": report.pending_before, "pending_after": report.pending_after}),
                )
            } else {
                None
            };
            let health = manager.health().await;
            let state = manager.state(&address).await?;
            let key = manager.last_used_key(&address);
            let in_pool = state.pending.saturating_sub(state.confirmed);
            let (verdict, explanation, fix, code) = match state.verdict {
                Verdict::InSync => (
                    "in_sync",
                    format!("the store's next nonce {} is the chain's pending count", state.pending),
                    None,
                    EXIT_OK,
                ),
                Verdict::Fresh => (
                    "fresh",
                    format!("nothing stored yet under {key}; the first assignment hands out {}, the chain's pending count", state.pending),
                    None,
                    EXIT_OK,
                ),
                Verdict::StoreBehind { by } => (
                    "store_behind",
                    format!("the chain is {by} ahead of the store: transactions were sent around the manager; the next assignment jumps to {} by itself", state.pending),
                    None,
                    EXIT_OK,
                ),
                Verdict::StoreAhead { unseen } => (
                    "store_ahead",
                    format!(
                        "the store handed out {unseen} nonce(s), {}..={}, that the chain has not seen. If they are still being sent, wait. If they were never broadcast (an instance crashed between assigning and sending), the chain waits on nonce {} and every later transaction is stuck",
                        state.pending,
                        state.last_used.unwrap_or_default(),
                        state.pending
                    ),
                    Some(format!(
                        "fill nonce {} (and any later gap) with a zero-value self-transfer: {} ; or, once no instance is sending, run: {}",
                        state.pending,
                        suggest(&format!(
                            "atomic-store --url {} nonce doctor --repair --rpc {} --chain-id {} --address {}",
                            quoted(url),
                            quoted(&atomic_store::nonce::redact_rpc_url(&chain_args.rpc)),
                            state.chain_id,
                            address
                        )),
                        suggest(&format!(
                            "atomic-store --url {} nonce reset --rpc {} --chain-id {} --address {}",
                            quoted(url),
                            quoted(&atomic_store::nonce::redact_rpc_url(&chain_args.rpc)),
                            state.chain_id,
                            address
                        )),
                    )),
                    EXIT_NEGATIVE,
                ),
            };
            if out.json {
                say!(
                    "{}",
                    json!({
                        "address": address.to_checksum(None), "chain_id": state.chain_id, "key": key,
                        "last_used": state.last_used, "chain_pending": state.pending,
                        "chain_confirmed": state.confirmed, "in_pool": in_pool,
                        "verdict": verdict, "explanation": explanation, "fix": fix,
                        "store_healthy": health.healthy, "store_latency_ms": health.latency.as_secs_f64() * 1000.0,
                        "repair": repaired,
                    })
                );
            } else {
                say!("account          {address} on chain {}", state.chain_id);
                say!("store key        {key}");
                say!(
                    "store last used  {}",
                    state
                        .last_used
                        .map_or("(none)".to_string(), |v| v.to_string())
                );
                say!(
                    "chain pending    {} (next nonce the chain accepts)",
                    state.pending
                );
                say!(
                    "chain confirmed  {} ({in_pool} in the pool)",
                    state.confirmed
                );
                say!(
                    "store health     {} ({:.1} ms)",
                    if health.healthy { "ok" } else { "FAILING" },
                    health.latency.as_secs_f64() * 1000.0
                );
                say!("verdict          {verdict}: {explanation}");
                if let Some(fix) = fix {
                    say!("fix              {fix}");
                }
            }
            Ok(code)
        }
        NonceAction::Rewind { nonce, .. } if rpc.pending(&address).await? > nonce => {
            // The node already holds a transaction with this nonce (in its
            // pool or mined): handing it out again would send it twice.
            out.result(
                format!("not rewound: the node already knows a transaction with nonce {nonce} from {address}, so it was broadcast; rewind only a nonce that was never sent"),
                json!({"outcome": "broadcast"}),
            );
            Ok(EXIT_NEGATIVE)
        }
        NonceAction::Rewind { nonce, .. } => match manager.rewind(&address, nonce).await? {
            RewindOutcome::Rewound => {
                out.result(
                    format!("rewound: {nonce} will be handed out again"),
                    json!({"outcome": "rewound"}),
                );
                Ok(EXIT_OK)
            }
            RewindOutcome::Gap { last_used } => {
                let (outcome, text) = match last_used {
                    Some(last) if last > nonce as i64 => ("gap", format!(
                        "not rewound: nonces up to {last} were handed out after {nonce}; send a transaction with nonce {nonce} to fill the gap"
                    )),
                    Some(last) if last >= 0 => ("not_handed_out", format!(
                        "not rewound: {nonce} is not handed out (the last one handed out is {last}); nothing to give back"
                    )),
                    _ => ("not_handed_out", format!(
                        "not rewound: no nonce of this account is handed out, so {nonce} is not; nothing to give back"
                    )),
                };
                out.result(text, json!({"outcome": outcome, "last_used": last_used}));
                Ok(EXIT_NEGATIVE)
            }
        },
        NonceAction::Reset { yes, .. } => {
            let question = format!(
                "reset the last used nonce of {address} to the chain's confirmed count − 1?"
            );
            if let Some(code) = crate::output::confirm(&question, yes, out) {
                return Ok(code);
            }
            let last = manager.reset(&address).await?;
            out.result(
                format!("reset: last used nonce is now {last}"),
                json!({"last_used": last}),
            );
            Ok(EXIT_OK)
        }
    }
}

/// Where transactions go out: signed here with the key in
/// `$ATOMIC_STORE_SIGNER_KEY` (gas and fees estimated, chain id read from the
/// node), or, without it, signed by the node (`eth_sendTransaction`).
#[cfg(feature = "nonce")]
fn sender(
    rpc_url: &str,
    rpc: &atomic_store::nonce::JsonRpcSource,
    address: atomic_store::nonce::Address,
) -> Result<alloy_provider::DynProvider, String> {
    use alloy_provider::{Provider, ProviderBuilder};
    let Ok(key) = std::env::var(SIGNER_KEY) else {
        return Ok(rpc.provider().clone().erased());
    };
    let signer: alloy_signer_local::PrivateKeySigner = key.trim().parse().map_err(|_| {
        format!("{SIGNER_KEY} is not a private key: set it to 64 hex digits (with or without 0x), or unset it to have the node sign")
    })?;
    if signer.address() != address {
        return Err(format!(
            "the key in {SIGNER_KEY} belongs to {}, not to --address {address}",
            signer.address()
        ));
    }
    let url = rpc_url
        .parse()
        .map_err(|_| "--rpc is not a URL".to_owned())?;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .build()
        .map_err(|_| "cannot build the HTTP client".to_owned())?;
    Ok(ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_gas_estimation()
        .fetch_chain_id()
        .wallet(signer)
        .connect_reqwest(client, url)
        .erased())
}

/// `count` sends through alloy's nonce filler backed by `manager`: a nonce
/// given to the filler counts as used, whatever the send does.
#[cfg(feature = "nonce")]
async fn send_through_filler(
    manager: &atomic_store::nonce::NonceManager,
    sender: alloy_provider::DynProvider,
    rpc: &atomic_store::nonce::JsonRpcSource,
    tx: alloy_rpc_types_eth::TransactionRequest,
    count: u64,
    out: Out,
) -> atomic_store::Result<u8> {
    use alloy_provider::{Provider, ProviderBuilder};
    use serde_json::json;

    let filled = ProviderBuilder::new()
        .disable_recommended_fillers()
        .with_nonce_management(manager.clone())
        .connect_provider(sender);
    let mut failed = false;
    for _ in 0..count {
        match filled.send_transaction(tx.clone()).await {
            Ok(pending) => {
                let hash = pending.tx_hash().to_string();
                let found = rpc.call("eth_getTransactionByHash", json!([hash])).await?;
                let nonce = found["nonce"]
                    .as_str()
                    .and_then(|h| u64::from_str_radix(h.trim_start_matches("0x"), 16).ok());
                if out.json {
                    say!(
                        "{}",
                        json!({"nonce": nonce, "hash": hash, "fate": "confirmed"})
                    );
                } else {
                    say!(
                        "{} {hash} confirmed",
                        nonce.map_or("?".to_owned(), |n| n.to_string())
                    );
                }
            }
            Err(_) => {
                failed = true;
                let message = "the send through alloy's nonce filler failed; its nonce counts as used (run nonce doctor)";
                if out.json {
                    say!(
                        "{}",
                        json!({"nonce": null, "hash": null, "fate": "unknown", "error": {"kind": "outcome_unknown", "message": message}})
                    );
                } else {
                    say!("- {message}");
                }
            }
        }
    }
    Ok(if failed {
        crate::output::EXIT_ERROR
    } else {
        crate::output::EXIT_OK
    })
}

/// The environment variable that holds a signing key for `nonce send` and
/// `nonce doctor --repair`.
#[cfg(feature = "nonce")]
const SIGNER_KEY: &str = "ATOMIC_STORE_SIGNER_KEY";

/// `word` as a shell word, its secrets masked.
#[cfg(feature = "nonce")]
fn quoted(word: &str) -> String {
    format!("'{}'", atomic_store::redact(word).replace('\'', "'\\''"))
}

/// A command to paste, with a word on the secrets it lacks: a store
/// password shows as `***`, and an RPC URL's path (where providers put API
/// keys) as `/…`.
#[cfg(feature = "nonce")]
fn suggest(command: &str) -> String {
    let mut missing = Vec::new();
    if command.contains("***") {
        missing.push("the password where it shows ***");
    }
    if command.contains("/…") {
        missing.push("your full --rpc URL where it shows /…");
    }
    if missing.is_empty() {
        command.to_owned()
    } else {
        format!("{command} (put back {})", missing.join(", and "))
    }
}

#[cfg(not(feature = "nonce"))]
pub async fn run(
    _store: Arc<dyn AtomicStore>,
    _url: &str,
    _action: NonceAction,
    out: Out,
) -> atomic_store::Result<u8> {
    Ok(out.failure(
        "feature_disabled",
        "the nonce manager is not compiled in: rebuild atomic-store-cli with the cargo feature `nonce`",
    ))
}

#[cfg(all(test, feature = "nonce"))]
mod tests {
    use super::*;

    #[test]
    fn a_suggested_command_shows_no_secret_and_says_what_to_put_back() {
        let rpc = atomic_store::nonce::redact_rpc_url("https://mainnet.example/v3/SECRETKEY");
        let command = suggest(&format!(
            "atomic-store --url {} nonce reset --rpc {}",
            quoted("redis://user:pa'ss@host:6379/0"),
            quoted(&rpc)
        ));
        assert!(
            !command.contains("SECRETKEY") && !command.contains("pa'ss"),
            "{command}"
        );
        assert!(
            command.ends_with("(put back the password where it shows ***, and your full --rpc URL where it shows /…)"),
            "{command}"
        );
        assert_eq!(
            suggest("atomic-store --url 'sqlite://a.db'"),
            "atomic-store --url 'sqlite://a.db'"
        );
    }
}
