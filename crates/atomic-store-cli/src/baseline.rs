//! `bench --baseline`: the server's own benchmark tool on the same server,
//! same command and concurrency, in the same run.

use serde::Serialize;

use crate::bench::Workload;
use crate::output::Out;

/// One run of the baseline tool.
#[derive(Debug, Serialize)]
pub struct Baseline {
    /// What was run, e.g. `redis-benchmark INCR -c 64 -P 1`.
    pub name: String,
    pub ops_per_sec: f64,
    /// How many of the tool's commands one of our operations stands for.
    pub commands_per_op: f64,
    /// Our throughput as a fraction of the baseline's.
    pub ratio: f64,
}

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
    let scheme = url.split("://").next().unwrap_or("").to_ascii_lowercase();
    let result = match scheme.as_str() {
        #[cfg(feature = "redis")]
        "redis" | "rediss" => redis_benchmarks(url, workload, concurrency, our_ops, duration).await,
        #[cfg(feature = "postgres")]
        "postgres" | "postgresql" => pgbench(url, workload, concurrency, duration).await,
        #[cfg(feature = "etcd")]
        "etcd" => raw_cas_loop(url, workload, concurrency, duration, RawClient::Etcd).await,
        #[cfg(feature = "zookeeper")]
        "zk" => raw_cas_loop(url, workload, concurrency, duration, RawClient::Zookeeper).await,
        #[cfg(feature = "dynamodb")]
        "dynamodb" => dynamodb_loop(url, workload, concurrency, duration).await,
        #[cfg(feature = "mongodb")]
        "mongodb" | "mongodb+srv" => mongodb_loop(url, workload, concurrency, duration).await,
        _ => Err(format!(
            "none for {scheme}:// (redis-benchmark needs a single Redis node, pgbench PostgreSQL)"
        )),
    };
    match result {
        Ok(b) => b,
        Err(e) => {
            if !out.json {
                println!("baseline: not run: {e}");
            }
            Vec::new()
        }
    }
}

#[cfg(feature = "redis")]
async fn redis_benchmarks(
    url: &str,
    workload: Workload,
    concurrency: u32,
    our_ops: u64,
    duration: std::time::Duration,
) -> Result<Vec<Baseline>, String> {
    let parsed = url::Url::parse(url).map_err(|e| format!("cannot parse the URL: {e}"))?;
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
    let key = format!("bench:baseline:{}", std::process::id());
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
            let output = tokio::process::Command::new("redis-benchmark")
                .args(&args)
                .stdin(std::process::Stdio::null())
                .output()
                .await
                .map_err(|e| format!("cannot run redis-benchmark (install redis-tools): {e}"))?;
            if !output.status.success() {
                return Err(format!(
                    "redis-benchmark failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ));
            }
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
    }
    cleanup(url, &key).await;
    Ok(results)
}

/// The client the store is built on, alone: redis-rs with one multiplexed
/// connection and `concurrency` tasks on one thread (like a bench worker),
/// sending the same commands as redis-benchmark.
#[cfg(feature = "redis")]
async fn redis_rs_loop(
    url: &str,
    commands: &[Vec<String>],
    per_op: f64,
    concurrency: u32,
    duration: std::time::Duration,
) -> Result<Baseline, String> {
    let server = url.split('?').next().unwrap_or(url).to_owned();
    let commands = commands.to_vec();
    let names: Vec<&str> = commands.iter().map(|c| c[0].as_str()).collect();
    let name = format!(
        "redis-rs {} x{concurrency} tasks, 1 connection, 1 thread",
        names.join("+")
    );
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
            let per_request = commands.len() as f64;
            let commands = std::sync::Arc::new(commands);
            let requests = request_loop(concurrency, duration, move |_, round| {
                let (mut conn, commands) = (conn.clone(), std::sync::Arc::clone(&commands));
                async move {
                    for command in commands.iter() {
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
                        if cmd.query_async::<redis::Value>(&mut conn).await.is_err() {
                            return false;
                        }
                    }
                    true
                }
            })
            .await;
            Ok(requests * per_request)
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

/// `pgbench` running the very statements the store sends, unnamed and
/// re-parsed each time (`-M simple`; `query_typed` also sends unnamed statements,
/// parsed on every call).
#[cfg(feature = "postgres")]
async fn pgbench(
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
            statement(Operation::Incr)?.replace(&literal, "'bench:pgbench:' || :client_id"),
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
    let output = tokio::process::Command::new("pgbench")
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
        .arg(&conninfo)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| format!("cannot run pgbench (install postgresql-client): {e}"))?;
    let _ = std::fs::remove_dir_all(&dir);
    let _ = atomic_store::AtomicStore::delete(&store, &key).await;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success() {
        return Err(format!(
            "pgbench failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        ));
    }
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

/// Which bare client the raw loop uses.
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
#[derive(Clone, Copy)]
enum RawClient {
    #[cfg(feature = "etcd")]
    Etcd,
    #[cfg(feature = "zookeeper")]
    Zookeeper,
}

/// The bare client doing the same compare-and-swap increment as the store,
/// `concurrency` tasks for `duration`: the limit the store can approach.
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
async fn raw_cas_loop(
    url: &str,
    workload: Workload,
    concurrency: u32,
    duration: std::time::Duration,
    client: RawClient,
) -> Result<Vec<Baseline>, String> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
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
    let key = format!("bench-raw-{}", std::process::id());
    let done = Arc::new(AtomicU64::new(0));
    let deadline = std::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    let name = match client {
        #[cfg(feature = "etcd")]
        RawClient::Etcd => {
            use etcd_client::{Client, Compare, CompareOp, Txn, TxnOp};
            let endpoints: Vec<String> = hosts.split(',').map(|h| format!("http://{h}")).collect();
            let raw = Client::connect(&endpoints, None)
                .await
                .map_err(|e| e.to_string())?;
            for _ in 0..concurrency {
                let (mut c, done, key) = (raw.clone(), Arc::clone(&done), key.clone());
                tasks.push(tokio::spawn(async move {
                    while std::time::Instant::now() < deadline {
                        let Ok(resp) = c.get(key.as_str(), None).await else {
                            continue;
                        };
                        let (value, compare) = match resp.kvs().first() {
                            Some(kv) => (
                                kv.value_str().unwrap_or("0").parse::<i64>().unwrap_or(0) + 1,
                                Compare::mod_revision(
                                    key.as_str(),
                                    CompareOp::Equal,
                                    kv.mod_revision(),
                                ),
                            ),
                            None => (1, Compare::version(key.as_str(), CompareOp::Equal, 0)),
                        };
                        let txn = Txn::new().when([compare]).and_then([TxnOp::put(
                            key.as_str(),
                            value.to_string(),
                            None,
                        )]);
                        if matches!(c.txn(txn).await, Ok(r) if r.succeeded()) {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            let mut cleanup = raw.clone();
            for t in tasks.drain(..) {
                let _ = t.await;
            }
            let _ = cleanup.delete(key.as_str(), None).await;
            "bare etcd-client get + txn(mod_revision) loop"
        }
        #[cfg(feature = "zookeeper")]
        RawClient::Zookeeper => {
            use zookeeper_client as zk;
            let raw = zk::Client::connect(&hosts)
                .await
                .map_err(|e| e.to_string())?;
            let path = format!("/{key}");
            let open = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
            let _ = raw.create(&path, b"0", &open).await;
            for _ in 0..concurrency {
                let (c, done, path) = (raw.clone(), Arc::clone(&done), path.clone());
                tasks.push(tokio::spawn(async move {
                    while std::time::Instant::now() < deadline {
                        let Ok((data, stat)) = c.get_data(&path).await else {
                            continue;
                        };
                        let value = String::from_utf8_lossy(&data).parse::<i64>().unwrap_or(0) + 1;
                        if c.set_data(&path, value.to_string().as_bytes(), Some(stat.version))
                            .await
                            .is_ok()
                        {
                            done.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }));
            }
            for t in tasks.drain(..) {
                let _ = t.await;
            }
            let _ = raw.delete(&path, None).await;
            "bare zookeeper-client getData + setData(version) loop"
        }
    };
    Ok(vec![Baseline {
        name: format!("{name}, {concurrency} tasks"),
        ops_per_sec: done.load(Ordering::Relaxed) as f64 / duration.as_secs_f64(),
        commands_per_op: 1.0,
        ratio: 0.0,
    }])
}

/// `concurrency` tasks calling `request(task, round)` until `duration` is
/// over; the operations per second that succeeded.
#[cfg(any(feature = "redis", feature = "dynamodb", feature = "mongodb"))]
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

#[cfg(any(feature = "dynamodb", feature = "mongodb"))]
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The bare AWS SDK (the store's client configuration) sending the very
/// requests the store's common path sends: the same expressions, names and
/// values.
#[cfg(feature = "dynamodb")]
async fn dynamodb_loop(
    url: &str,
    workload: Workload,
    concurrency: u32,
    duration: std::time::Duration,
) -> Result<Vec<Baseline>, String> {
    use aws_sdk_dynamodb::types::{AttributeValue, ReturnValue};
    let store = atomic_store::dynamodb::DynamoStore::open(url).map_err(|e| e.to_string())?;
    let client = store.sdk_client().await.map_err(|e| e.to_string())?;
    let table = store.table().to_owned();
    let run = format!("bench-raw-{}-{concurrency}", std::process::id());
    let n = |v: i64| AttributeValue::N(v.to_string());
    let counter = |update: &'static str, condition: &'static str| {
        let (client, table) = (client.clone(), table.clone());
        let key = AttributeValue::S(format!("{run}-counter"));
        move |_: u32, _: u64| {
            let (client, table, key) = (client.clone(), table.clone(), key.clone());
            async move {
                client
                    .update_item()
                    .table_name(table)
                    .key("k", key)
                    .update_expression(update)
                    .condition_expression(condition)
                    .expression_attribute_names("#n", "n")
                    .expression_attribute_names("#k", "k")
                    .expression_attribute_names("#e", "exp")
                    .expression_attribute_values(":zero", n(-1))
                    .expression_attribute_values(":one", n(1))
                    .expression_attribute_values(":max", n(i64::MAX - 1))
                    .expression_attribute_values(":now", n(now_ms()))
                    .return_values(ReturnValue::UpdatedNew)
                    .send()
                    .await
                    .is_ok()
            }
        }
    };
    let (name, ops) = match workload {
        Workload::Incr => (
            "bare aws-sdk-dynamodb UpdateItem loop, the store's incr request",
            request_loop(
                concurrency,
                duration,
                counter(
                    "SET #n = if_not_exists(#n, :zero) + :one",
                    "attribute_not_exists(#k) OR (#n < :max AND (attribute_not_exists(#e) OR #e > :now))",
                ),
            )
            .await,
        ),
        Workload::Nonce => (
            "bare aws-sdk-dynamodb UpdateItem loop, the store's assign_nonce request",
            request_loop(
                concurrency,
                duration,
                counter(
                    "SET #n = if_not_exists(#n, :zero) + :one",
                    "attribute_not_exists(#k) OR (#n BETWEEN :zero AND :max AND (attribute_not_exists(#e) OR #e > :now))",
                ),
            )
            .await,
        ),
        Workload::Lock => {
            let ops = request_loop(concurrency, duration, move |task, _| {
                let (client, table) = (client.clone(), table.clone());
                let key = AttributeValue::S(format!("{run}-lock-{task}"));
                async move {
                    let now = now_ms();
                    let id = AttributeValue::S(format!("{:032x}", now));
                    let taken = client
                        .update_item()
                        .table_name(&table)
                        .key("k", key.clone())
                        .update_expression("SET #v = :id, #e = :exp, #t = :ttl, #f = if_not_exists(#f, :floor) + :one REMOVE #n")
                        .condition_expression("(attribute_not_exists(#v) AND attribute_not_exists(#n)) OR #e <= :takeover")
                        .expression_attribute_names("#v", "v")
                        .expression_attribute_names("#n", "n")
                        .expression_attribute_names("#e", "exp")
                        .expression_attribute_names("#t", "ttl")
                        .expression_attribute_names("#f", "f")
                        .expression_attribute_values(":id", id.clone())
                        .expression_attribute_values(":exp", n(now + 30_000))
                        .expression_attribute_values(":ttl", n(now / 1000 + 92))
                        .expression_attribute_values(":floor", n(now * 1000))
                        .expression_attribute_values(":one", n(1))
                        .expression_attribute_values(":takeover", n(now - 1000))
                        .return_values(ReturnValue::UpdatedNew)
                        .send()
                        .await
                        .is_ok();
                    taken
                        && client
                            .update_item()
                            .table_name(&table)
                            .key("k", key)
                            .update_expression("REMOVE #v, #e SET #t = :ttl")
                            .condition_expression("#v = :id")
                            .expression_attribute_names("#v", "v")
                            .expression_attribute_names("#e", "exp")
                            .expression_attribute_names("#t", "ttl")
                            .expression_attribute_values(":id", id)
                            .expression_attribute_values(":ttl", n(now / 1000 + 62))
                            .return_values(ReturnValue::AllOld)
                            .send()
                            .await
                            .is_ok()
                }
            })
            .await;
            ("bare aws-sdk-dynamodb loop, the store's take + release requests", ops)
        }
        _ => return Err("the raw DynamoDB baseline covers incr, nonce and lock".into()),
    };
    Ok(vec![Baseline {
        name: format!("{name}, {concurrency} tasks"),
        ops_per_sec: ops,
        commands_per_op: 1.0,
        ratio: 0.0,
    }])
}

/// The bare MongoDB driver (the store's client options) sending the very
/// findOneAndUpdate requests the store's common path sends.
#[cfg(feature = "mongodb")]
async fn mongodb_loop(
    url: &str,
    workload: Workload,
    concurrency: u32,
    duration: std::time::Duration,
) -> Result<Vec<Baseline>, String> {
    use mongodb::bson::doc;
    use mongodb::options::ReturnDocument;
    let store = atomic_store::mongodb::MongoStore::open(url).map_err(|e| e.to_string())?;
    let coll = store.driver_collection().await.map_err(|e| e.to_string())?;
    let run = format!("bench-raw-{}-{concurrency}", std::process::id());
    let (name, ops) = match workload {
        Workload::Incr | Workload::Nonce => {
            let key = format!("{run}-counter");
            coll.update_one(doc! {"_id": &key}, doc! {"$set": {"n": 0i64}})
                .upsert(true)
                .await
                .map_err(|e| e.to_string())?;
            let nonce = workload == Workload::Nonce;
            let ops = request_loop(concurrency, duration, move |_, _| {
                let (coll, key) = (coll.clone(), key.clone());
                async move {
                    let now = now_ms();
                    // incr: below i64::MAX; assign_nonce: inside the window.
                    let range = if nonce {
                        doc! {"n": {"$gte": -1i64, "$lte": i64::MAX - 1}}
                    } else {
                        doc! {"n": {"$lt": i64::MAX}}
                    };
                    let filter = doc! {"$and": [
                        {"_id": key},
                        {"v": {"$exists": false}},
                        range,
                        {"$or": [{"exp": {"$exists": false}}, {"exp": {"$gt": now}}]},
                    ]};
                    coll.find_one_and_update(filter, doc! {"$inc": {"n": 1i64}})
                        .return_document(ReturnDocument::After)
                        .await
                        .is_ok_and(|d| d.is_some())
                }
            })
            .await;
            let name = if nonce {
                "bare mongodb driver findOneAndUpdate loop, the store's assign_nonce request"
            } else {
                "bare mongodb driver findOneAndUpdate loop, the store's incr request"
            };
            (name, ops)
        }
        Workload::Lock => {
            let never = mongodb::bson::DateTime::from_millis(253_402_300_799_000);
            let ops = request_loop(concurrency, duration, move |task, round| {
                let coll = coll.clone();
                let key = format!("{run}-lock-{task}");
                async move {
                    if round == 0 {
                        let _ = coll
                            .update_one(doc! {"_id": &key}, doc! {"$max": {"gc": never}})
                            .upsert(true)
                            .await;
                    }
                    let now = now_ms();
                    let id = format!("{now:032x}");
                    let free = doc! {"$and": [
                        {"_id": &key},
                        {"$or": [{"v": {"$exists": false}, "n": {"$exists": false}}, {"exp": {"$lte": now - 100}}]},
                    ]};
                    let take = doc! {
                        "$set": {"v": &id, "exp": now + 30_000},
                        "$unset": {"n": ""},
                        "$inc": {"f": 1i64},
                        "$max": {"gc": never},
                    };
                    let taken = coll
                        .find_one_and_update(free, take)
                        .return_document(ReturnDocument::After)
                        .await
                        .is_ok_and(|d| d.is_some());
                    taken
                        && coll
                            .find_one_and_update(
                                doc! {"_id": &key, "v": &id},
                                doc! {"$unset": {"v": "", "exp": ""}},
                            )
                            .await
                            .is_ok_and(|d| d.is_some())
                }
            })
            .await;
            (
                "bare mongodb driver loop, the store's take + release requests",
                ops,
            )
        }
        _ => return Err("the raw MongoDB baseline covers incr, nonce and lock".into()),
    };
    Ok(vec![Baseline {
        name: format!("{name}, {concurrency} tasks"),
        ops_per_sec: ops,
        commands_per_op: 1.0,
        ratio: 0.0,
    }])
}

#[cfg(feature = "redis")]
/// The requests per second from `redis-benchmark --csv` output.
fn parse_csv_rps(csv: &str) -> Option<f64> {
    csv.lines()
        .rev()
        .find_map(|line| line.split(',').nth(1)?.trim_matches('"').parse().ok())
}

#[cfg(feature = "redis")]
async fn ensure_nonce_script(url: &str, key: &str) -> Result<String, String> {
    let store = atomic_store::open(url).map_err(|e| e.to_string())?;
    // Loads the script on the server (EVALSHA, then load after NOSCRIPT).
    store
        .assign_nonce(key, 0)
        .await
        .map_err(|e| e.to_string())?;
    Ok(atomic_store::redis::assign_nonce_script_sha().to_owned())
}

#[cfg(feature = "redis")]
async fn cleanup(url: &str, key: &str) {
    if let Ok(store) = atomic_store::open(&format!(
        "{url}{}prefix=",
        if url.contains('?') { '&' } else { '?' }
    )) {
        let _ = store.delete(key).await;
    }
}

#[cfg(all(test, feature = "redis"))]
mod tests {
    #[test]
    fn reads_redis_benchmark_csv() {
        let csv = "\"test\",\"rps\",\"avg_latency_ms\"\n\"INCR k\",\"84033.61\",\"0.303\"\n";
        assert_eq!(super::parse_csv_rps(csv), Some(84033.61));
        assert_eq!(super::parse_csv_rps("garbage"), None);
    }
}
