//! `lock`, `unlock` (with `--force`) and `extend`.

use std::time::Duration;

use atomic_store::{AtomicStore, ExtendOutcome, LockId, ReleaseOutcome, Result};
use serde_json::json;

use crate::output::{confirm, Out, EXIT_NEGATIVE, EXIT_OK};

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
pub async fn force_unlock(
    store: &dyn AtomicStore,
    key: &str,
    force: Force,
    out: Out,
) -> Result<u8> {
    let info = store.inspect(key).await?;
    let Some(holder) = info.value else {
        out.result(
            "not held: nothing to release",
            json!({ "outcome": "not_held" }),
        );
        return Ok(EXIT_NEGATIVE);
    };
    if LockId::form_of(&holder).is_none() && !force.any_value {
        out.result(
            format!(
                "left alone: {key} holds {holder:?}, which is not a lock id; \
                 pass --any-value to delete it anyway"
            ),
            json!({ "outcome": "not_a_lock", "value": holder }),
        );
        return Ok(EXIT_NEGATIVE);
    }
    let ttl = info.ttl.map_or("no TTL".to_string(), |t| {
        format!("{:.1}s left", t.as_secs_f64())
    });
    if !out.json {
        say!("{key} is held by {holder} ({ttl})");
    }
    if let Some(code) = confirm("release it?", force.yes, out) {
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

/// How far `unlock --force` may go.
#[derive(Debug, Clone, Copy)]
pub struct Force {
    /// Skip the confirmation.
    pub yes: bool,
    /// Delete a key whose value is not a lock id too.
    pub any_value: bool,
}

fn released_code(outcome: ReleaseOutcome) -> u8 {
    if outcome == ReleaseOutcome::Released {
        EXIT_OK
    } else {
        EXIT_NEGATIVE
    }
}
