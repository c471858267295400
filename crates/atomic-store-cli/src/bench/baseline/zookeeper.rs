//! ZooKeeper: the bare client doing the store's compare-and-swap increment.

use zookeeper_client as zk;

use crate::bench::report::{Baseline, Workload};

pub async fn run(
    url: &str,
    workload: Workload,
    concurrency: u32,
    duration: std::time::Duration,
) -> Result<Vec<Baseline>, String> {
    let (hosts, key) = super::cas_increment(url, workload)?;
    let raw = zk::Client::connect(&hosts)
        .await
        .map_err(|e| e.to_string())?;
    let path = format!("/{key}");
    let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    let _ = raw.create(&path, b"0", &open).await;
    let ops = {
        let (raw, path) = (raw.clone(), path.clone());
        super::request_loop(concurrency, duration, move |_, _| {
            let (c, path) = (raw.clone(), path.clone());
            async move {
                let Ok((data, stat)) = c.get_data(&path).await else {
                    return false;
                };
                let value = String::from_utf8_lossy(&data).parse::<i64>().unwrap_or(0) + 1;
                c.set_data(&path, value.to_string().as_bytes(), Some(stat.version))
                    .await
                    .is_ok()
            }
        })
        .await
    };
    let _ = raw.delete(&path, None).await;
    Ok(super::bare_client(
        "bare zookeeper-client getData + setData(version) loop",
        concurrency,
        ops,
    ))
}
