//! `bench --baseline`: the server's own benchmark tool, or the bare client
//! the store is built on, on the same server, same commands and
//! concurrency, in the same run. One module per backend.

#[cfg(feature = "dynamodb")]
mod dynamodb;
#[cfg(feature = "etcd")]
mod etcd;
#[cfg(feature = "mongodb")]
mod mongodb;
#[cfg(feature = "mysql")]
mod mysql;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "zookeeper")]
mod zookeeper;

use super::report::{Baseline, Workload};
use crate::output::Out;

/// Run the baselines for `workload` at `concurrency`, sized like our run.
// Without the network backends' features there is no baseline to run.
#[cfg_attr(not(feature = "redis"), allow(unused_variables))]
pub async fn run(
    url: &str,
    workload: Workload,
    concurrency: u32,
    our_ops: u64,
    duration: std::time::Duration,
    out: Out,
) -> Vec<Baseline> {
    use atomic_store::Scheme;
    let scheme = Scheme::of(url).map_err(|e| e.to_string());
    let result = match scheme {
        #[cfg(feature = "redis")]
        Ok(Scheme::Redis) => redis::run(url, workload, concurrency, our_ops, duration).await,
        #[cfg(feature = "postgres")]
        Ok(Scheme::Postgres) => postgres::run(url, workload, concurrency, duration).await,
        #[cfg(feature = "etcd")]
        Ok(Scheme::Etcd) => etcd::run(url, workload, concurrency, duration).await,
        #[cfg(feature = "zookeeper")]
        Ok(Scheme::Zookeeper) => zookeeper::run(url, workload, concurrency, duration).await,
        #[cfg(feature = "dynamodb")]
        Ok(Scheme::Dynamodb) => dynamodb::run(url, workload, concurrency, duration).await,
        #[cfg(feature = "mongodb")]
        Ok(Scheme::Mongodb) => mongodb::run(url, workload, concurrency, duration).await,
        #[cfg(feature = "mysql")]
        Ok(Scheme::Mysql) => mysql::run(url, workload, concurrency, duration).await,
        Ok(other) => Err(format!(
            "none for the {} backend: its store is in this process",
            other.feature()
        )),
        Err(e) => Err(e),
    };
    match result {
        Ok(b) => b,
        Err(e) => {
            if !out.json {
                say!("baseline: not run: {e}");
            }
            Vec::new()
        }
    }
}

/// The one baseline of a bare-client loop that did `ops_per_sec`, one
/// request per operation.
#[cfg(any(
    feature = "etcd",
    feature = "zookeeper",
    feature = "dynamodb",
    feature = "mongodb",
    feature = "mysql"
))]
fn bare_client(name: &str, concurrency: u32, ops_per_sec: f64) -> Vec<Baseline> {
    vec![Baseline {
        name: format!("{name}, {concurrency} tasks"),
        ops_per_sec,
        commands_per_op: 1.0,
        ratio: 0.0,
    }]
}

/// The hosts of `url` and a key of this run, for a bare client doing the
/// same compare-and-swap increment as the store: the limit the store can
/// approach.
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
fn cas_increment(url: &str, workload: Workload) -> Result<(String, String), String> {
    if !matches!(
        workload,
        Workload::Incr | Workload::IncrMany | Workload::Nonce
    ) {
        return Err(
            "the raw baseline is a compare-and-swap increment loop: use incr or nonce".into(),
        );
    }
    let hosts = url
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .split(['?', '/'])
        .next()
        .unwrap_or("")
        .to_owned();
    Ok((hosts, format!("bench-raw-{}", std::process::id())))
}

/// A `request_loop` of `assign_nonce` requests against a chain that confirms
/// every nonce handed out, as the bench workers simulate, so that the
/// pending count stays inside the window. `send(pending)` sends one request
/// and returns the nonce it assigned.
#[cfg(any(feature = "dynamodb", feature = "mongodb"))]
async fn nonce_loop<F, Fut>(
    concurrency: u32,
    duration: std::time::Duration,
    first_pending: u64,
    send: F,
) -> f64
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Option<u64>> + Send,
{
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let confirmed = Arc::new(AtomicU64::new(first_pending));
    request_loop(concurrency, duration, move |_, _| {
        let (confirmed, send) = (Arc::clone(&confirmed), send.clone());
        async move {
            let assigned = send(confirmed.load(Ordering::SeqCst)).await;
            if let Some(n) = assigned {
                confirmed.fetch_max(n + 1, Ordering::SeqCst);
            }
            assigned.is_some()
        }
    })
    .await
}

/// A `request_loop` in which task `i` takes and releases `keys[i]` with a
/// new lock id each round: `cycle(store, key, id)` sends the two requests
/// and says whether both succeeded.
#[cfg(any(feature = "dynamodb", feature = "mongodb"))]
async fn lock_loop<S, C, Fut>(
    store: std::sync::Arc<S>,
    duration: std::time::Duration,
    keys: &[String],
    cycle: C,
) -> f64
where
    S: Send + Sync + 'static,
    C: Fn(std::sync::Arc<S>, String, atomic_store::LockId) -> Fut + Copy + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let keys: std::sync::Arc<[String]> = keys.into();
    let concurrency = keys.len() as u32;
    request_loop(concurrency, duration, move |task, _| {
        let id = atomic_store::LockId::generate();
        cycle(
            std::sync::Arc::clone(&store),
            keys[task as usize].clone(),
            id,
        )
    })
    .await
}

/// Run a benchmark tool to its end, or kill it after `limit`: a tool may
/// wait for ever on a server that went away.
#[cfg(any(feature = "redis", feature = "postgres"))]
async fn run_tool(
    command: &mut tokio::process::Command,
    tool: &str,
    package: &str,
    limit: std::time::Duration,
) -> Result<std::process::Output, String> {
    let running = command
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(limit, running)
        .await
        .map_err(|_| format!("{tool} did not finish within {limit:?}; is the server still up?"))?
        .map_err(|e| format!("cannot run {tool} (install {package}): {e}"))?;
    if !output.status.success() {
        return Err(format!(
            "{tool} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
    Ok(output)
}

/// Time enough for a tool sized to a run of `duration`.
#[cfg(any(feature = "redis", feature = "postgres"))]
fn tool_limit(duration: std::time::Duration) -> std::time::Duration {
    duration * 10 + std::time::Duration::from_secs(30)
}

/// `concurrency` tasks calling `request(task, round)` until `duration` is
/// over; the operations per second that succeeded.
#[cfg(any(
    feature = "redis",
    feature = "etcd",
    feature = "zookeeper",
    feature = "dynamodb",
    feature = "mongodb",
    feature = "mysql"
))]
async fn request_loop<F, Fut>(concurrency: u32, duration: std::time::Duration, request: F) -> f64
where
    F: Fn(u32, u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let done = Arc::new(AtomicU64::new(0));
    let deadline = std::time::Instant::now() + duration;
    let tasks: Vec<_> = (0..concurrency)
        .map(|task| {
            let (done, request) = (Arc::clone(&done), request.clone());
            tokio::spawn(async move {
                let mut round = 0;
                while std::time::Instant::now() < deadline {
                    if request(task, round).await {
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                    round += 1;
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    done.load(Ordering::Relaxed) as f64 / duration.as_secs_f64()
}
