//! The store commands: one function per subcommand.

use std::sync::Arc;

use atomic_store::{conformance, AtomicStore, ExtendOutcome, LockId, ReleaseOutcome};
use serde_json::json;

use crate::output::{Out, EXIT_ERROR, EXIT_NEGATIVE, EXIT_OK};
use crate::{bench, Cli, Command, NonceArgs};

pub async fn run(cli: Cli) -> u8 {
    let out = Out { json: cli.json };
    match cli.command {
        Command::Bench(args) => return bench::run(&cli.url, args, out).await,
        Command::BenchWorker(args) => return bench::worker(&cli.url, args).await,
        _ => {}
    }
    let store = match atomic_store::open(&cli.url) {
        Ok(store) => store,
        Err(e) => return out.error(&e),
    };
    match execute(store, cli.command, out).await {
        Ok(code) => code,
        Err(e) => out.error(&e),
    }
}

async fn execute(
    store: Arc<dyn AtomicStore>,
    command: Command,
    out: Out,
) -> atomic_store::Result<u8> {
    let code = match command {
        Command::Get { key } => match store.get(&key).await? {
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
        },
        Command::Set { key, value, ttl } => {
            match ttl {
                Some(ttl) => store.set_with_ttl(&key, &value, ttl).await?,
                None => store.set(&key, &value).await?,
            }
            out.result("OK", json!({ "ok": true }));
            EXIT_OK
        }
        Command::Incr { key, count } => {
            let mut values = Vec::new();
            for _ in 0..count {
                let v = store.incr(&key).await?;
                if !out.json {
                    println!("{v}");
                }
                values.push(v);
            }
            if out.json {
                let object = if count == 1 {
                    json!({ "value": values[0] })
                } else {
                    json!({ "values": values })
                };
                out.result("", object);
            }
            EXIT_OK
        }
        Command::Del { key } => {
            let deleted = store.delete(&key).await?;
            out.result(
                if deleted { "deleted" } else { "not found" },
                json!({ "deleted": deleted }),
            );
            EXIT_OK
        }
        Command::Cas {
            key,
            expect,
            absent: _,
            new,
            ttl,
        } => {
            let swapped = store
                .compare_and_set(&key, expect.as_deref(), &new, ttl)
                .await?;
            out.result(
                if swapped {
                    "swapped"
                } else {
                    "not swapped: the current value differs"
                },
                json!({ "swapped": swapped }),
            );
            if swapped {
                EXIT_OK
            } else {
                EXIT_NEGATIVE
            }
        }
        Command::Lock { key, ttl } => match store.acquire_lock(&key, ttl).await? {
            Some(lock) => {
                out.result(
                    format!("acquired\nid: {}\nfencing token: {}", lock.id, lock.fencing_token),
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
        },
        Command::Unlock { key, id } => {
            let outcome = store.release_lock(&key, &LockId::from(id)).await?;
            out.result(outcome.as_str(), json!({ "outcome": outcome.as_str() }));
            if outcome == ReleaseOutcome::Released {
                EXIT_OK
            } else {
                EXIT_NEGATIVE
            }
        }
        Command::Extend { key, id, ttl } => {
            let outcome = store.extend_lock(&key, &LockId::from(id), ttl).await?;
            out.result(outcome.as_str(), json!({ "outcome": outcome.as_str() }));
            if outcome == ExtendOutcome::Extended {
                EXIT_OK
            } else {
                EXIT_NEGATIVE
            }
        }
        Command::Nonce(NonceArgs {
            action: Some(action),
            ..
        }) => return crate::nonce_cmd::run(store, action, out).await,
        Command::Nonce(NonceArgs {
            action: None,
            key,
            pending,
            count,
        }) => {
            let (key, pending) = (key.unwrap_or_default(), pending.unwrap_or_default());
            let mut values = Vec::new();
            for _ in 0..count {
                let n = store.assign_nonce(&key, pending).await?;
                if !out.json {
                    println!("{n}");
                }
                values.push(n);
            }
            if out.json {
                let object = if count == 1 {
                    json!({ "nonce": values[0] })
                } else {
                    json!({ "nonces": values })
                };
                out.result("", object);
            }
            EXIT_OK
        }
        Command::Verify => verify(store, out).await,
        Command::Bench(_) | Command::BenchWorker(_) => unreachable!("handled before opening"),
    };
    Ok(code)
}

async fn verify(store: Arc<dyn AtomicStore>, out: Out) -> u8 {
    let backend = store.capabilities().backend;
    if !out.json {
        println!("verifying the {backend} store against the atomic-store contract");
    }
    let report = conformance::run_with(&store, |o| {
        if out.json {
            return;
        }
        let ms = o.elapsed.as_secs_f64() * 1000.0;
        match &o.result {
            Ok(()) => println!("PASS  {:<40} {ms:>9.1} ms", o.name),
            Err(e) => println!("FAIL  {:<40} {ms:>9.1} ms  {e}", o.name),
        }
    })
    .await;
    let failed = report.failures().count();
    let total = report.outcomes.len();
    let checks: Vec<_> = report
        .outcomes
        .iter()
        .map(|o| {
            json!({
                "name": o.name,
                "passed": o.result.is_ok(),
                "ms": o.elapsed.as_secs_f64() * 1000.0,
                "failure": o.result.as_ref().err().map(|e| e.to_string()),
            })
        })
        .collect();
    out.result(
        format!("{} passed, {failed} failed", total - failed),
        json!({ "backend": backend, "passed": total - failed, "failed": failed, "checks": checks }),
    );
    if failed == 0 {
        EXIT_OK
    } else {
        EXIT_ERROR
    }
}
