//! PostgreSQL: `pgbench` running the store's own statements.

use crate::bench::report::{Baseline, Workload};

/// `pgbench` running the very statements the store sends, unnamed and
/// re-parsed each time (`-M simple`; `query_typed` also sends unnamed statements,
/// parsed on every call).
pub async fn run(
    url: &str,
    workload: Workload,
    concurrency: u32,
    duration: std::time::Duration,
) -> Result<Vec<Baseline>, String> {
    use atomic_store::Operation;
    let store = atomic_store::postgres::PostgresStore::open(url).map_err(|e| e.to_string())?;
    let key = format!("bench:pgbench:{}", std::process::id());
    let literal = format!("'{}'", store.stored_key(&key).replace('\'', "''"));
    let statement = |op: Operation| -> Result<String, String> {
        let sql = store.statement(op).ok_or("no statement")?;
        Ok(sql.replace("$1", &literal))
    };
    let (script, per_op) = match workload {
        Workload::Incr => (statement(Operation::Incr)?, 1.0),
        Workload::IncrMany => (
            // One key per pgbench client, `key:N`, removed below.
            statement(Operation::Incr)?.replace(
                &literal,
                &format!("'{}:' || :client_id", store.stored_key(&key).replace('\'', "''")),
            ),
            1.0,
        ),
        Workload::Nonce => (
            statement(Operation::AssignNonce)?.replace("$2", "0::bigint"),
            1.0,
        ),
        Workload::GetSet => (
            format!(
                "{};\n{}",
                statement(Operation::Set)?
                    .replace("$2", "'value'")
                    .replace("$3", "NULL::bigint"),
                statement(Operation::Get)?
            ),
            2.0,
        ),
        Workload::Lock | Workload::LockContended => {
            return Err("no single statement matches a lock cycle; compare with the uncontended `lock` workload".into())
        }
    };
    let script = script + ";\n";
    let dir = std::env::temp_dir().join(format!("atomic-store-pgbench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
    let file = dir.join("statement.sql");
    std::fs::write(&file, &script).map_err(|e| e.to_string())?;
    // pgbench takes libpq's URL; drop the parameters that are ours.
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let libpq: Vec<String> = url::form_urlencoded::parse(query.as_bytes())
        .filter(|(k, _)| {
            !["prefix", "schema", "table", "pool_size", "timeout"].contains(&k.as_ref())
        })
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    let conninfo = if libpq.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", libpq.join("&"))
    };
    let seconds = duration.as_secs().max(1);
    let threads =
        concurrency.min(std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
    let mut pgbench = tokio::process::Command::new("pgbench");
    pgbench
        .args(["-n", "-M", "simple", "-f"])
        .arg(&file)
        .args([
            "-c",
            &concurrency.to_string(),
            "-j",
            &threads.to_string(),
            "-T",
            &seconds.to_string(),
        ])
        .arg(&conninfo);
    let limit = super::tool_limit(duration);
    let output = super::run_tool(&mut pgbench, "pgbench", "postgresql-client", limit).await;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = atomic_store::AtomicStore::purge(&store, &key).await;
    for client in 0..concurrency {
        let _ = atomic_store::AtomicStore::purge(&store, &format!("{key}:{client}")).await;
    }
    let output = output?;
    let text = String::from_utf8_lossy(&output.stdout);
    let tps = text
        .lines()
        .find_map(|l| {
            l.strip_prefix("tps = ")?
                .split_whitespace()
                .next()?
                .parse::<f64>()
                .ok()
        })
        .ok_or("cannot read pgbench's output")?;
    // One pgbench transaction runs the whole script: all statements of an op.
    Ok(vec![Baseline {
        name: format!("pgbench -M simple -c {concurrency} (same SQL)"),
        ops_per_sec: tps * per_op,
        commands_per_op: per_op,
        ratio: 0.0,
    }])
}
