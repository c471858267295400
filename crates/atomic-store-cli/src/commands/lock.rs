//! `lock`, `unlock` (with `--force`) and `extend`.

use std::time::Duration;

use atomic_store::{AtomicStore, ExtendOutcome, LockId, ReleaseOutcome, Result};
use serde_json::json;

use crate::output::{Out, EXIT_NEGATIVE, EXIT_OK, EXIT_USAGE};

pub async fn lock(store: &dyn AtomicStore, key: &str, ttl: Duration, out: Out) -> Result<u8> {
    Ok(match store.acquire_lock(key, ttl).await? {
        Some(lock) => {
            out.result(
                format!(
                    "acquired\nid: {}\nfencing token: {}",
                    lock.id, lock.fencing_token
                ),
                json!({ "acquired": true, "id": lock.id.as_str(), "token": lock.fencing_token }),
            );
            EXIT_OK
        }
        None => {
            out.result(
                "not acquired: the key is held",
                json!({ "acquired": false }),
            );
            EXIT_NEGATIVE
        }
    })
}

pub async fn unlock(store: &dyn AtomicStore, key: &str, id: &str, out: Out) -> Result<u8> {
    let outcome = store.release_lock(key, &LockId::from(id)).await?;
    out.result(outcome.as_str(), json!({ "outcome": outcome.as_str() }));
    Ok(released_code(outcome))
}

pub async fn extend(
    store: &dyn AtomicStore,
    key: &str,
    id: &str,
    ttl: Duration,
    out: Out,
) -> Result<u8> {
    let outcome = store.extend_lock(key, &LockId::from(id), ttl).await?;
    out.result(outcome.as_str(), json!({ "outcome": outcome.as_str() }));
    Ok(if outcome == ExtendOutcome::Extended {
        EXIT_OK
    } else {
        EXIT_NEGATIVE
    })
}

/// Remove a stuck lock whoever holds it: show the holder, confirm, then a
/// compare-and-delete on that holder's id (so a lock taken meanwhile by
/// someone else is left alone).
pub async fn force_unlock(store: &dyn AtomicStore, key: &str, yes: bool, out: Out) -> Result<u8> {
    let info = store.inspect(key).await?;
    let Some(holder) = info.value else {
        out.result(
            "not held: nothing to release",
            json!({ "outcome": "not_held" }),
        );
        return Ok(EXIT_NEGATIVE);
    };
    let ttl = info.ttl.map_or("no TTL".to_string(), |t| {
        format!("{:.1}s left", t.as_secs_f64())
    });
    if !out.json {
        say!("{key} is held by {holder} ({ttl})");
    }
    if let Some(code) = confirm("release it?", yes, out) {
        return Ok(code);
    }
    let outcome = store
        .release_lock(key, &LockId::from(holder.as_str()))
        .await?;
    out.result(
        format!("{} (was held by {holder})", outcome.as_str()),
        json!({ "outcome": outcome.as_str(), "holder": holder }),
    );
    Ok(released_code(outcome))
}

/// Ask `question` before a destructive step, unless `yes`: `None` to go
/// on, or the exit code to end with (2 when stdin is not a terminal to ask
/// on, 3 when the answer is no).
pub fn confirm(question: &str, yes: bool, out: Out) -> Option<u8> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return None;
    }
    if !std::io::stdin().is_terminal() {
        out.failure(
            "confirmation_needed",
            "refusing without confirmation: stdin is not a terminal; pass --yes",
        );
        return Some(EXIT_USAGE);
    }
    // On stderr, so the prompt is seen when stdout goes to a pipe (`| jq`).
    let mut stderr = std::io::stderr();
    let _ = write!(stderr, "{question} [y/N] ").and_then(|()| stderr.flush());
    let mut answer = String::new();
    let _ = std::io::stdin().lock().read_line(&mut answer);
    if matches!(answer.trim(), "y" | "Y" | "yes") {
        return None;
    }
    out.result("left as it is", json!({ "outcome": "cancelled" }));
    Some(EXIT_NEGATIVE)
}

fn released_code(outcome: ReleaseOutcome) -> u8 {
    if outcome == ReleaseOutcome::Released {
        EXIT_OK
    } else {
        EXIT_NEGATIVE
    }
}
