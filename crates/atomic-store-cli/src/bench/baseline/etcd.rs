//! etcd: the bare client doing the store's compare-and-swap increment.

use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};

use crate::bench::report::{Baseline, Workload};

pub async fn run(
    url: &str,
    workload: Workload,
    concurrency: u32,
    duration: std::time::Duration,
) -> Result<Vec<Baseline>, String> {
    let (hosts, key) = super::cas_increment(url, workload)?;
    let endpoints: Vec<String> = hosts.split(',').map(|h| format!("http://{h}")).collect();
    let raw = Client::connect(&endpoints, None)
        .await
        .map_err(|e| e.to_string())?;
    let ops = {
        let (raw, key) = (raw.clone(), key.clone());
        super::request_loop(concurrency, duration, move |_, _| {
            let (mut c, key) = (raw.clone(), key.clone());
            async move {
                let Ok(resp) = c.get(key.as_str(), None).await else {
                    return false;
                };
                let (value, compare) = match resp.kvs().first() {
                    Some(kv) => (
                        kv.value_str().unwrap_or("0").parse::<i64>().unwrap_or(0) + 1,
                        Compare::mod_revision(key.as_str(), CompareOp::Equal, kv.mod_revision()),
                    ),
                    None => (1, Compare::version(key.as_str(), CompareOp::Equal, 0)),
                };
                let txn = Txn::new().when([compare]).and_then([TxnOp::put(
                    key.as_str(),
                    value.to_string(),
                    None,
                )]);
                matches!(c.txn(txn).await, Ok(r) if r.succeeded())
            }
        })
        .await
    };
    let _ = raw.clone().delete(key.as_str(), None).await;
    Ok(super::bare_client(
        "bare etcd-client get + txn(mod_revision) loop",
        concurrency,
        ops,
    ))
}
