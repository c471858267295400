//! Redis: `redis-benchmark` (unpipelined and pipelined) sending the
//! store's commands, and redis-rs alone, the client the store is built on.

use crate::bench::report::{Baseline, Workload};

pub async fn run(
    url: &str,
    workload: Workload,
    concurrency: u32,
    our_ops: u64,
    duration: std::time::Duration,
) -> Result<Vec<Baseline>, String> {
    // Random, not the PID: a PID is a prefix of others (123 of 1234) and
    // repeats across hosts, and cleanup removes `key:*`.
    let run = atomic_store::LockId::generate();
    let key = format!("bench:baseline:{}", &run.as_str()[..16]);
    let result = measure(url, &key, workload, concurrency, our_ops, duration).await;
    // Also after a failure: redis-benchmark may have written keys already.
    cleanup(url, &key).await;
    result
}

async fn measure(
    url: &str,
    key: &str,
    workload: Workload,
    concurrency: u32,
    our_ops: u64,
    duration: std::time::Duration,
) -> Result<Vec<Baseline>, String> {
    let key = key.to_owned();
    let primary;
    let url = if url.starts_with("redis+sentinel://") {
        primary = primary_behind_sentinel(url)?;
        primary.as_str()
    } else {
        url
    };
    let parsed = url::Url::parse(url).map_err(|e| format!("cannot parse the URL: {e}"))?;
    if parsed.scheme().ends_with("+cluster") {
        return Err("none for Redis Cluster: redis-benchmark needs a single Redis node".into());
    }
    let mut conn_args: Vec<String> = vec![
        "-h".into(),
        parsed.host_str().unwrap_or("127.0.0.1").to_owned(),
        "-p".into(),
        parsed.port().unwrap_or(6379).to_string(),
    ];
    if let Some(password) = parsed.password() {
        conn_args.extend(["-a".into(), password.to_owned()]);
    }
    if let Some(db) = parsed
        .path()
        .trim_start_matches('/')
        .split('/')
        .next()
        .filter(|d| !d.is_empty())
    {
        conn_args.extend(["--dbnum".into(), db.to_owned()]);
    }
    if parsed.scheme() == "rediss" {
        conn_args.push("--tls".into());
        if let Some((_, ca)) = parsed.query_pairs().find(|(k, _)| k == "ca_file") {
            conn_args.extend(["--cacert".into(), ca.into_owned()]);
        }
    }
    let (commands, per_op): (Vec<Vec<String>>, f64) = match workload {
        Workload::Incr => (vec![vec!["INCR".into(), key.clone()]], 1.0),
        Workload::IncrMany => (
            vec![vec!["INCR".into(), format!("{key}:__rand_int__")]],
            1.0,
        ),
        Workload::Nonce => {
            let sha = ensure_nonce_script(url, &key).await?;
            (
                vec![vec![
                    "EVALSHA".into(),
                    sha,
                    "1".into(),
                    key.clone(),
                    "0".into(),
                ]],
                1.0,
            )
        }
        Workload::GetSet => (
            vec![
                vec!["SET".into(), key.clone(), "value".into()],
                vec!["GET".into(), key.clone()],
            ],
            2.0,
        ),
        Workload::Lock | Workload::LockContended => {
            return Err("no single redis-benchmark command matches a lock cycle; compare with the uncontended `lock` workload".into())
        }
    };
    let requests = our_ops.clamp(20_000, 2_000_000);
    let mut results = Vec::new();
    for command in &commands {
        for (label, clients, pipeline) in [
            ("unpipelined", concurrency, 1),
            ("pipelined", 1, concurrency),
        ] {
            let mut args = conn_args.clone();
            args.extend([
                "-c".into(),
                clients.to_string(),
                "-P".into(),
                pipeline.to_string(),
                "-n".into(),
                requests.to_string(),
                "-r".into(),
                "100000".into(),
                "--csv".into(),
            ]);
            args.extend(command.iter().cloned());
            let output = super::run_tool(
                tokio::process::Command::new("redis-benchmark").args(&args),
                "redis-benchmark",
                "redis-tools",
                super::tool_limit(duration),
            )
            .await?;
            let ops_per_sec = parse_csv_rps(&String::from_utf8_lossy(&output.stdout))
                .ok_or("cannot read redis-benchmark's output")?;
            results.push(Baseline {
                name: format!(
                    "redis-benchmark {} -c {clients} -P {pipeline} ({label})",
                    command[0]
                ),
                ops_per_sec,
                commands_per_op: per_op,
                ratio: 0.0,
            });
        }
    }
    if parsed.scheme() == "redis" {
        results.push(redis_rs_loop(url, &commands, per_op, concurrency, duration).await?);
        results.push(redis_rs_batched(url, &commands, per_op, concurrency, duration).await?);
    }
    Ok(results)
}

/// `redis://[user:pass@]PRIMARY/db` for a `redis+sentinel://` URL: the
/// baselines talk to the primary the sentinels name (the store's WAIT, if
/// any, is not part of them).
fn primary_behind_sentinel(url: &str) -> Result<String, String> {
    let rest = &url["redis+sentinel://".len()..];
    let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (userinfo, location) = match location.rsplit_once('@') {
        Some((u, l)) => (format!("{u}@"), l),
        None => (String::new(), location),
    };
    let (hosts, name) = location
        .split_once('/')
        .ok_or("the Sentinel URL has no primary name")?;
    let db = url::form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k == "db")
        .map_or("0".into(), |(_, v)| v.into_owned());
    for host in hosts.split(',').filter(|h| !h.is_empty()) {
        let host = if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:26379")
        };
        let asked = redis::Client::open(format!("redis://{host}")).and_then(|c| {
            let mut conn = c.get_connection_with_timeout(std::time::Duration::from_secs(2))?;
            redis::cmd("SENTINEL")
                .arg("GET-MASTER-ADDR-BY-NAME")
                .arg(name)
                .query::<Option<(String, u16)>>(&mut conn)
        });
        if let Ok(Some((ip, port))) = asked {
            return Ok(format!("redis://{userinfo}{ip}:{port}/{db}"));
        }
    }
    Err(format!("no sentinel named the primary `{name}`"))
}

/// The client the store is built on, alone: redis-rs with one multiplexed
/// connection and `concurrency` tasks on one thread (like a bench worker),
/// sending the same commands as redis-benchmark.
async fn redis_rs_loop(
    url: &str,
    commands: &[Vec<String>],
    per_op: f64,
    concurrency: u32,
    duration: std::time::Duration,
) -> Result<Baseline, String> {
    let commands = commands.to_vec();
    let name = format!(
        "redis-rs {} x{concurrency} tasks, 1 connection, 1 thread",
        command_names(&commands)
    );
    on_one_thread(name, per_op, url, move |conn| async move {
        let per_request = commands.len() as f64;
        let commands = std::sync::Arc::new(commands);
        let requests = super::request_loop(concurrency, duration, move |_, round| {
            let (mut conn, commands) = (conn.clone(), std::sync::Arc::clone(&commands));
            async move {
                for command in commands.iter() {
                    let cmd = build(command, round);
                    if cmd.query_async::<redis::Value>(&mut conn).await.is_err() {
                        return false;
                    }
                }
                true
            }
        })
        .await;
        requests * per_request
    })
    .await
}

fn build(command: &[String], round: u64) -> redis::Cmd {
    let mut cmd = redis::cmd(&command[0]);
    for arg in &command[1..] {
        if arg.contains("__rand_int__") {
            // As redis-benchmark -r 100000 does.
            let n = format!("{:012}", round % 100_000);
            cmd.arg(arg.replace("__rand_int__", &n));
        } else {
            cmd.arg(arg);
        }
    }
    cmd
}

fn command_names(commands: &[Vec<String>]) -> String {
    let names: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
    names.join("+")
}

/// Run `requests` on a current-thread runtime of its own, like a bench
/// worker, with one multiplexed connection (redis-rs's default config).
async fn on_one_thread<F, Fut>(
    name: String,
    per_op: f64,
    url: &str,
    requests: F,
) -> Result<Baseline, String>
where
    F: FnOnce(redis::aio::MultiplexedConnection) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = f64>,
{
    let server = url.split('?').next().unwrap_or(url).to_owned();
    let run = move || -> Result<f64, String> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())?;
        rt.block_on(async {
            let client = redis::Client::open(server.as_str()).map_err(|e| e.to_string())?;
            let conn = client
                .get_multiplexed_async_connection()
                .await
                .map_err(|e| format!("redis-rs cannot connect: {e}"))?;
            Ok(requests(conn).await)
        })
    };
    let ops_per_sec = tokio::task::spawn_blocking(run)
        .await
        .map_err(|e| e.to_string())??;
    Ok(Baseline {
        name,
        ops_per_sec,
        commands_per_op: per_op,
        ratio: 0.0,
    })
}

/// The requests per second from `redis-benchmark --csv` output.
fn parse_csv_rps(csv: &str) -> Option<f64> {
    csv.lines()
        .rev()
        .find_map(|line| line.split(',').nth(1)?.trim_matches('"').parse().ok())
}

/// `url` with no key prefix: redis-benchmark sends keys as they are.
fn unprefixed(url: &str) -> String {
    format!("{url}{}prefix=", if url.contains('?') { '&' } else { '?' })
}

async fn ensure_nonce_script(url: &str, key: &str) -> Result<String, String> {
    let store = atomic_store::open(&unprefixed(url)).map_err(|e| e.to_string())?;
    // Loads the script on the server (EVALSHA, then load after NOSCRIPT).
    store
        .assign_nonce(key, 0)
        .await
        .map_err(|e| e.to_string())?;
    Ok(atomic_store::redis::assign_nonce_script_sha().to_owned())
}

/// Remove `key` and every `key:…` the random-key workloads wrote (up to
/// 100,000 of them): one short SCAN step per script call, so the server
/// is never held for the whole keyspace.
async fn cleanup(url: &str, key: &str) {
    const DROP_STEP: &str = "local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', 1000)
        for _, k in ipairs(r[2]) do redis.call('DEL', k) end
        return r[1]";
    let Ok(store) = atomic_store::open(&unprefixed(url)) else {
        return;
    };
    let _ = store.delete(key).await;
    let pattern = format!("{key}:*");
    let mut cursor = "0".to_owned();
    // Bounded: a keyspace of 100 million keys at 1,000 per step.
    for _ in 0..100_000 {
        let next = match store.eval(DROP_STEP, &[], &[&cursor, &pattern]).await {
            Ok(atomic_store::EvalValue::Text(c) | atomic_store::EvalValue::Status(c)) => c,
            Ok(atomic_store::EvalValue::Bytes(b)) => String::from_utf8_lossy(&b).into_owned(),
            _ => return,
        };
        if next == "0" {
            return;
        }
        cursor = next;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_redis_benchmark_csv() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"INCR k\",\"84033.61\",\"0.303\"\n";
        assert_eq!(super::parse_csv_rps(csv), Some(84033.61));
        assert_eq!(super::parse_csv_rps("garbage"), None);
    }
}

/// Requests queued by the tasks of one thread, for one flusher.
#[derive(Default)]
struct Batch {
    queue: std::sync::Mutex<Vec<(redis::Cmd, tokio::sync::oneshot::Sender<bool>)>>,
    queued: tokio::sync::Notify,
}

/// Auto-pipelining, as ioredis' `enableAutoPipelining` does it, over
/// redis-rs: the tasks queue their commands, and one flusher sends all that
/// are queued as one pipeline (several may be in flight),
/// then answers each task. It shows what batching in the store would gain:
/// one timer, one channel message and one packed buffer per batch.
async fn redis_rs_batched(
    url: &str,
    commands: &[Vec<String>],
    per_op: f64,
    concurrency: u32,
    duration: std::time::Duration,
) -> Result<Baseline, String> {
    use std::sync::Arc;
    let commands = commands.to_vec();
    let name = format!(
        "redis-rs auto-pipelined {} x{concurrency} tasks, 1 connection, 1 thread",
        command_names(&commands)
    );
    on_one_thread(name, per_op, url, move |conn| async move {
        let batch = Arc::new(Batch::default());
        let flusher = tokio::spawn(flush(Arc::clone(&batch), conn));
        let per_request = commands.len() as f64;
        let commands = Arc::new(commands);
        let requests = super::request_loop(concurrency, duration, move |_, round| {
            let (batch, commands) = (Arc::clone(&batch), Arc::clone(&commands));
            async move {
                for command in commands.iter() {
                    let cmd = build(command, round);
                    let (answer, answered) = tokio::sync::oneshot::channel();
                    let first = {
                        let mut queue = batch.queue.lock().unwrap();
                        queue.push((cmd, answer));
                        queue.len() == 1
                    };
                    if first {
                        batch.queued.notify_one();
                    }
                    if answered.await != Ok(true) {
                        return false;
                    }
                }
                true
            }
        })
        .await;
        flusher.abort();
        requests * per_request
    })
    .await
}

/// The flusher of [`redis_rs_batched`].
async fn flush(batch: std::sync::Arc<Batch>, conn: redis::aio::MultiplexedConnection) {
    loop {
        batch.queued.notified().await;
        // Let every task that is ready queue its request first.
        tokio::task::yield_now().await;
        let queued = std::mem::take(&mut *batch.queue.lock().unwrap());
        if queued.is_empty() {
            continue;
        }
        let mut conn = conn.clone();
        tokio::spawn(async move {
            let mut pipe = redis::pipe();
            for (cmd, _) in &queued {
                pipe.add_command(cmd.clone());
            }
            // One timer per batch: the connection's response timeout.
            let sent = pipe.query_async::<Vec<redis::Value>>(&mut conn).await;
            let ok = matches!(sent, Ok(ref replies) if replies.len() == queued.len());
            for (_, answer) in queued {
                let _ = answer.send(ok);
            }
        });
    }
}
