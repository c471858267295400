//! `get`, `set`, `del`, `cas`, `inspect` and `keys`.

use std::time::Duration;

use atomic_store::{AtomicStore, LockId, LockIdForm, Result};
use serde_json::json;

use crate::output::{Out, EXIT_NEGATIVE, EXIT_OK};

pub async fn get(store: &dyn AtomicStore, key: &str, out: Out) -> Result<u8> {
    Ok(match store.get(key).await? {
        Some(value) => {
            out.result(&value, json!({ "value": value }));
            EXIT_OK
        }
        None => {
            out.result("", json!({ "value": null }));
            if !out.json {
                eprintln!("(not found)");
            }
            EXIT_NEGATIVE
        }
    })
}

pub async fn set(
    store: &dyn AtomicStore,
    key: &str,
    value: &str,
    ttl: Option<Duration>,
    out: Out,
) -> Result<u8> {
    match ttl {
        Some(ttl) => store.set_with_ttl(key, value, ttl).await?,
        None => store.set(key, value).await?,
    }
    out.result("OK", json!({ "ok": true }));
    Ok(EXIT_OK)
}

pub async fn del(store: &dyn AtomicStore, key: &str, out: Out) -> Result<u8> {
    let deleted = store.delete(key).await?;
    out.result(
        if deleted { "deleted" } else { "not found" },
        json!({ "deleted": deleted }),
    );
    Ok(EXIT_OK)
}

/// `expect` is `None` for `--absent`.
pub async fn cas(
    store: &dyn AtomicStore,
    key: &str,
    expect: Option<&str>,
    new: &str,
    ttl: Option<Duration>,
    out: Out,
) -> Result<u8> {
    let swapped = store.compare_and_set(key, expect, new, ttl).await?;
    out.result(
        if swapped {
            "swapped"
        } else {
            "not swapped: the current value differs"
        },
        json!({ "swapped": swapped }),
    );
    Ok(if swapped { EXIT_OK } else { EXIT_NEGATIVE })
}

/// Report what the store knows: value and TTL always; the holder only when
/// the value has the form of a lock id; the fencing token only then, or
/// when a released lock left its counter behind.
pub async fn inspect(store: &dyn AtomicStore, key: &str, out: Out) -> Result<u8> {
    let info = store.inspect(key).await?;
    let resolution = store.capabilities().ttl_resolution;
    let ttl_ms = info.ttl.map(|t| t.as_millis() as u64);
    let form = info.value.as_deref().and_then(LockId::form_of);
    let kind = match (&info.value, form) {
        (None, _) => "none",
        (Some(_), Some(_)) => "lock",
        (Some(_), None) => "value",
    };
    let holder = form.and(info.value.as_deref());
    // A value that is not a lock id may still carry a counter (etcd's
    // revision, ZooKeeper's zxid): that is no fencing history.
    let token = info.fencing_token.filter(|_| kind != "value");
    let mut lines = vec![format!(
        "value          {}",
        info.value
            .as_deref()
            .map_or("(none)".to_string(), |v| format!("{v:?}"))
    )];
    lines.push(format!(
        "ttl            {}",
        match (&info.value, info.ttl) {
            (None, _) => "-".to_string(),
            (Some(_), None) => "none (never expires)".to_string(),
            (Some(_), Some(t)) if resolution >= Duration::from_secs(1) => format!(
                "{:.3}s left (this backend counts expiry to within {})",
                t.as_secs_f64(),
                format_args!("{resolution:?}")
            ),
            (Some(_), Some(t)) => format!("{:.3}s left", t.as_secs_f64()),
        }
    ));
    lines.push(format!(
        "lock           {}",
        match (holder, form) {
            (Some(id), Some(LockIdForm::TypeScriptSdk)) => {
                format!("held by {id} (an id of the TypeScript SDK's form)")
            }
            (Some(id), _) => format!("held by {id}"),
            (None, _) if info.value.is_some() => {
                "none known: a value, or a lock taken by a client with another id form".to_string()
            }
            (None, _) => "free".to_string(),
        }
    ));
    if let Some(token) = token {
        lines.push(format!(
            "fencing token  {token} (the last one issued for this key)"
        ));
    }
    out.result(
        lines.join("\n"),
        json!({
            "key": key,
            "kind": kind,
            "value": info.value,
            "ttl_ms": ttl_ms,
            "ttl_resolution_ms": resolution.as_millis() as u64,
            "holder": holder,
            "fencing_token": token,
        }),
    );
    Ok(if info.value.is_some() {
        EXIT_OK
    } else {
        EXIT_NEGATIVE
    })
}

pub async fn keys(store: &dyn AtomicStore, prefix: &str, limit: u64, out: Out) -> Result<u8> {
    // One more than asked for tells whether the list was cut.
    let mut keys = store.keys(prefix, limit as usize + 1).await?;
    let truncated = keys.len() as u64 > limit;
    keys.truncate(limit as usize);
    if truncated && !out.json {
        // On stderr, so a script reading the keys gets keys only.
        eprintln!("note: the first {limit} keys only: there are more; raise --limit");
    }
    out.result(
        keys.join("\n"),
        json!({ "keys": keys, "count": keys.len(), "truncated": truncated }),
    );
    Ok(EXIT_OK)
}
