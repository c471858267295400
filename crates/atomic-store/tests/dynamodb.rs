//! The DynamoDB backend against dynalite and moto (started by
//! `scripts/test`), and a dynalite of the test's own for the restart test.
#![cfg(feature = "dynamodb")]

mod support;

use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use atomic_store::conformance::Store;
use atomic_store::dynamodb::DynamoStore;
use atomic_store::{ErrorKind, LockId};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType,
    ScalarAttributeType, TimeToLiveStatus,
};
use support::{server_url, OwnServer, ResettingProxy};

/// The same server under another table name (and extra parameters).
fn with_table(url: &str, table: &str, extra: &str) -> String {
    let (_, query) = url.split_once('?').unwrap();
    format!("dynamodb://{table}?{query}{extra}")
}

fn endpoint(url: &str) -> String {
    url.split("endpoint=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .to_owned()
}

fn raw_client(url: &str) -> aws_sdk_dynamodb::Client {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let config = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(endpoint(url))
        .credentials_provider(aws_credential_types::Credentials::for_tests())
        .http_client(http)
        .build();
    aws_sdk_dynamodb::Client::from_conf(config)
}

// The suite on dynalite, and through `Box<dyn>` on moto. moto's UpdateItem
// is not atomic under concurrent requests (16 boto3 clients adding 1 with
// `SET n = n + :one` get a value twice; dynalite and DynamoDB serialize
// writes to an item), so on moto the suite runs without its four
// concurrency checks; dynalite runs them all.
support::conformance_suite!(
    url: support::url("dynamodb"),
    boxed: DynamoStore::open(&support::url("moto")).unwrap(),
    not_in_boxed: [
        "compare_and_set_race_has_one_winner",
        "concurrent_incr_is_exact",
        "concurrent_locks_exclude",
        "concurrent_nonces_are_unique",
    ],
);

#[tokio::test]
async fn created_tables_have_the_ttl_attribute_and_items_carry_it() {
    let table = format!("ttl-{}", &LockId::generate().as_str()[..12]);
    let store = atomic_store::open(&with_table(&support::url("moto"), &table, "")).unwrap();
    store
        .set_with_ttl("timed", "v", Duration::from_secs(100))
        .await
        .unwrap();
    store.set("plain", "p").await.unwrap();
    let raw = raw_client(&support::url("moto"));
    let ttl = raw
        .describe_time_to_live()
        .table_name(&table)
        .send()
        .await
        .unwrap();
    let description = ttl.time_to_live_description().unwrap();
    assert_eq!(description.attribute_name(), Some("ttl"));
    assert_eq!(
        description.time_to_live_status(),
        Some(&TimeToLiveStatus::Enabled)
    );
    let item = |key: &str| {
        let (raw, table) = (raw.clone(), table.clone());
        let key = key.to_owned();
        async move {
            raw.get_item()
                .table_name(table)
                .key("k", AttributeValue::S(format!("atomic:{key}")))
                .consistent_read(true)
                .send()
                .await
                .unwrap()
                .item
                .unwrap()
        }
    };
    let timed = item("timed").await;
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let ttl_attr: i64 = timed["ttl"].as_n().unwrap().parse().unwrap();
    assert!(
        ttl_attr >= now_s + 100,
        "ttl {ttl_attr} before the deadline"
    );
    let exp_ms: i64 = timed["exp"].as_n().unwrap().parse().unwrap();
    assert!(ttl_attr * 1000 > exp_ms);
    let plain = item("plain").await;
    assert!(!plain.contains_key("ttl"), "a value without TTL got one");
    assert_eq!(plain["v"].as_s().unwrap(), "p");
}

#[tokio::test]
async fn a_missing_table_or_a_foreign_key_schema_is_refused() {
    let missing = format!("missing-{}", &LockId::generate().as_str()[..12]);
    let url = with_table(&support::url("dynamodb"), &missing, "").replace("&create_table=true", "");
    let store = atomic_store::open(&url).unwrap();
    let e = store.get("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend, "{e}");
    assert!(e.to_string().contains("create_table=true"), "{e}");

    let foreign = format!("foreign-{}", &LockId::generate().as_str()[..12]);
    let raw = raw_client(&support::url("dynamodb"));
    raw.create_table()
        .table_name(&foreign)
        .billing_mode(BillingMode::PayPerRequest)
        .attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name("id")
                .attribute_type(ScalarAttributeType::S)
                .build()
                .unwrap(),
        )
        .key_schema(
            KeySchemaElement::builder()
                .attribute_name("id")
                .key_type(KeyType::Hash)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .unwrap();
    let store = atomic_store::open(&with_table(&support::url("dynamodb"), &foreign, "")).unwrap();
    let e = store.incr("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Backend, "{e}");
    assert!(e.to_string().contains("key schema"), "{e}");
    let described = raw
        .describe_table()
        .table_name(&foreign)
        .send()
        .await
        .unwrap();
    assert_eq!(
        described.table().unwrap().key_schema()[0].attribute_name(),
        "id",
        "the existing table was changed"
    );
}

/// A lock is gone for readers at its deadline but stays exclusive for
/// `max_clock_skew` more; then a new owner takes it with a higher token.
#[tokio::test]
async fn locks_are_taken_over_only_after_the_skew_margin() {
    let store =
        atomic_store::open(&format!("{}&max_clock_skew=2s", support::url("dynamodb"))).unwrap();
    let key = format!("skew-{}", LockId::generate());
    let first = store
        .acquire_lock(&key, Duration::from_millis(200))
        .await
        .unwrap()
        .unwrap();
    let taken = std::time::Instant::now();
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(store.get(&key).await.unwrap(), None, "expired for readers");
    let early = store
        .acquire_lock(&key, Duration::from_secs(5))
        .await
        .unwrap();
    // Deadline + margin is 2.2 s after the acquisition.
    if taken.elapsed() < Duration::from_millis(2100) {
        assert!(early.is_none(), "taken over inside the skew margin");
    }
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(taken.elapsed())).await;
    let second = store
        .acquire_lock(&key, Duration::from_secs(5))
        .await
        .unwrap()
        .expect("taken over after the margin");
    assert!(second.fencing_token > first.fencing_token);
}

/// Tokens keep rising even when the item is deleted behind the store's
/// back (as DynamoDB's TTL deletion does).
#[tokio::test]
async fn fencing_tokens_rise_across_removal_of_the_item() {
    let store = atomic_store::open(&support::url("dynamodb")).unwrap();
    let key = format!("fence-{}", LockId::generate());
    let raw = raw_client(&support::url("dynamodb"));
    let mut last = 0;
    for _ in 0..3 {
        let lock = store
            .acquire_lock(&key, Duration::from_secs(30))
            .await
            .unwrap()
            .unwrap();
        assert!(
            lock.fencing_token > last,
            "{} after {last}",
            lock.fencing_token
        );
        last = lock.fencing_token;
        raw.delete_item()
            .table_name("atomic-store-test")
            .key("k", AttributeValue::S(format!("atomic:{key}")))
            .send()
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn an_unreachable_endpoint_is_a_typed_error() {
    let port = support::free_port();
    let store = atomic_store::open(&format!(
        "dynamodb://some-table?region=us-east-1&endpoint=http://127.0.0.1:{port}&connect_timeout=300ms"
    ))
    .unwrap();
    let e = store.incr("x").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_temporary());
}

/// Kill dynalite (SIGKILL) under 8 incr loops and start it again on the
/// same data directory: typed errors only, no value twice, work resumes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn restarting_the_server_loses_nothing() {
    let cli = server_url("ATOMIC_STORE_TEST_DYNALITE_CLI");
    let mut server = OwnServer::start(move |port, dir| {
        let mut c = Command::new("node");
        c.arg(&cli)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--createTableMs", "0", "--path"])
            .arg(dir.join("data"));
        c
    });
    let url = format!(
        "dynamodb://fault-table?region=us-east-1&endpoint=http://127.0.0.1:{}&create_table=true&timeout=2s&connect_timeout=300ms",
        server.port
    );
    let store: Store = atomic_store::open(&url).unwrap();
    assert_eq!(store.incr("counter").await.unwrap(), 1);
    support::incr_loops_across_a_restart(store, "counter", 8, &mut server, Duration::from_secs(3))
        .await;
}

/// A stand-in DynamoDB endpoint for the replies no local server can be made
/// to give (throttling, a 500): it answers DescribeTable with a valid table
/// and every other request with `reply`, and counts requests per operation.
async fn canned_endpoint(
    reply: (&'static str, &'static str),
) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    canned_endpoint_with(DESCRIBED, reply).await
}

/// A valid DescribeTable answer for `canned-table`.
const DESCRIBED: (&str, &str) = (
    "200 OK",
    r#"{"Table":{"TableName":"canned-table","TableStatus":"ACTIVE","KeySchema":[{"AttributeName":"k","KeyType":"HASH"}],"AttributeDefinitions":[{"AttributeName":"k","AttributeType":"S"}]}}"#,
);

/// [`canned_endpoint`] with DescribeTable answered by `describe`.
async fn canned_endpoint_with(
    describe: (&'static str, &'static str),
    reply: (&'static str, &'static str),
) -> (u16, Arc<std::sync::Mutex<Vec<String>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    tokio::spawn(async move {
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let log = Arc::clone(&log);
            tokio::spawn(async move {
                let mut buf = Vec::new();
                loop {
                    // One request: headers, then content-length bytes.
                    let head_end = loop {
                        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break i + 4;
                        }
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
                    let header = |name: &str| {
                        head.lines()
                            .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_owned))
                    };
                    let length: usize =
                        header("content-length").map_or(0, |v| v.trim().parse().unwrap());
                    while buf.len() < head_end + length {
                        let mut chunk = [0u8; 4096];
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..head_end + length);
                    let target = header("x-amz-target").unwrap_or_default();
                    let operation = target.rsplit('.').next().unwrap_or("").trim().to_owned();
                    log.lock().unwrap().push(operation.clone());
                    let (status, body) = if operation == "describetable" {
                        describe
                    } else {
                        reply
                    };
                    let response = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\nx-amzn-requestid: canned\r\ncontent-length: {}\r\n\r\n{body}",
                        body.len()
                    );
                    if socket.write_all(response.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, seen)
}

fn count(seen: &std::sync::Mutex<Vec<String>>, operation: &str) -> usize {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|o| *o == operation)
        .count()
}

/// Throttling proves nothing was applied: every operation retries it, and
/// reports a temporary Unavailable when it lasts.
#[tokio::test]
async fn throttling_is_retried_and_temporary() {
    let (port, seen) = canned_endpoint((
        "400 Bad Request",
        r#"{"__type":"com.amazonaws.dynamodb.v20120810#ThrottlingException","message":"slow down"}"#,
    ))
    .await;
    let store = atomic_store::open(&format!(
        "dynamodb://canned-table?region=us-east-1&endpoint=http://127.0.0.1:{port}"
    ))
    .unwrap();
    let e = store.incr("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_temporary());
    assert_eq!(count(&seen, "updateitem"), 3, "{:?}", seen.lock().unwrap());
}

/// A 500 may follow a write that was applied: no write is resent, each
/// reports OutcomeUnknown (a resent `assign_nonce` would skip a nonce, a
/// resent `release_lock` would report its own release as NotHeld); reads
/// are retried.
#[tokio::test]
async fn a_server_error_after_a_write_is_an_unknown_outcome() {
    let (port, seen) = canned_endpoint((
        "500 Internal Server Error",
        r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"oops"}"#,
    ))
    .await;
    let store = atomic_store::open(&format!(
        "dynamodb://canned-table?region=us-east-1&endpoint=http://127.0.0.1:{port}"
    ))
    .unwrap();
    let id = atomic_store::LockId::generate();
    let ttl = Duration::from_secs(5);
    let sent = || seen.lock().unwrap().len();
    let writes: Vec<(&str, _)> = vec![
        ("incr", store.incr("k").await.map(drop)),
        ("assign_nonce", store.assign_nonce("k", 0).await.map(drop)),
        ("acquire_lock", store.acquire_lock("k", ttl).await.map(drop)),
        ("release_lock", store.release_lock("k", &id).await.map(drop)),
        (
            "extend_lock",
            store.extend_lock("k", &id, ttl).await.map(drop),
        ),
        ("set", store.set("k", "v").await.map(drop)),
        (
            "set_with_ttl",
            store.set_with_ttl("k", "v", ttl).await.map(drop),
        ),
        ("delete", store.delete("k").await.map(drop)),
        (
            "compare_and_set",
            store.compare_and_set("k", None, "v", None).await.map(drop),
        ),
    ];
    let log = seen.lock().unwrap().clone();
    let requests: Vec<&String> = log.iter().filter(|o| *o != "describetable").collect();
    assert_eq!(
        requests.len(),
        writes.len(),
        "a write was resent: {requests:?}"
    );
    for (op, result) in writes {
        let e = result.expect_err(op);
        assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{op}: {e}");
        assert!(!e.is_temporary(), "{op}");
    }
    let e = store.eval("x", &[], &[]).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unsupported, "{e}");

    let before = sent();
    let e = store.get("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_temporary());
    assert_eq!(count(&seen, "getitem"), 3, "get was not retried");
    assert_eq!(sent() - before, 3);
}

/// A connection reset with requests in flight (what a dying server does):
/// reads are retried, an `incr` is never sent twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reset_connection_is_a_lost_reply() {
    let (proxy, url) = ResettingProxy::in_front_of(&support::url("dynamodb")).await;
    let store = atomic_store::open(&format!("{url}&timeout=3s&prefix=reset")).unwrap();
    support::resets_are_lost_replies(&store, &proxy).await;
}

/// A 200 whose body cannot be read follows an applied write: `incr` ends
/// OutcomeUnknown and is not resent (it was a final "backend" error).
#[tokio::test]
async fn an_unreadable_answer_after_a_write_is_an_unknown_outcome() {
    let (port, seen) = canned_endpoint(("200 OK", "not json")).await;
    let store = atomic_store::open(&format!(
        "dynamodb://canned-table?region=us-east-1&endpoint=http://127.0.0.1:{port}"
    ))
    .unwrap();
    let e = store.incr("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}");
    assert_eq!(count(&seen, "updateitem"), 1, "incr was resent");
    let e = store.assign_nonce("n", 3).await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}");
    assert_eq!(count(&seen, "updateitem"), 2, "assign_nonce was resent");
}

/// The table check before the first request is a read: when its reply is
/// lost, the caller's `incr` was never sent, so it is not OutcomeUnknown.
#[tokio::test]
async fn a_lost_reply_to_the_table_check_is_not_an_unknown_outcome() {
    let (port, seen) = canned_endpoint_with(
        (
            "500 Internal Server Error",
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#InternalServerError","message":"oops"}"#,
        ),
        ("200 OK", r#"{"Attributes":{"n":{"N":"1"}}}"#),
    )
    .await;
    let store = atomic_store::open(&format!(
        "dynamodb://canned-table?region=us-east-1&endpoint=http://127.0.0.1:{port}"
    ))
    .unwrap();
    let e = store.incr("k").await.unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Unavailable, "{e}");
    assert!(e.is_temporary());
    assert_eq!(count(&seen, "describetable"), 1);
    assert_eq!(count(&seen, "updateitem"), 0, "incr was sent");
}

/// `assign_nonce` with `pending` at and near i64::MAX (and past it) does
/// what the memory store does: the same values, Overflow at the top with
/// the value unchanged, InvalidArgument past i64::MAX with nothing written.
#[tokio::test]
async fn nonces_near_i64_max_match_the_memory_store() {
    let run = LockId::generate().as_str()[..8].to_owned();
    let dynamo =
        atomic_store::open(&format!("{}&prefix=top-{run}", support::url("dynamodb"))).unwrap();
    let memory = atomic_store::open("memory://").unwrap();
    let top = i64::MAX as u64;
    // (key, pending) in order; several calls share a key.
    let calls = [
        ("a", top - 1),
        ("a", top - 1),
        ("a", top - 1),
        ("a", top),
        ("b", top),
        ("b", top),
        ("c", top - 600),
        ("c", top - 3),
        ("d", top + 1),
        ("d", u64::MAX),
    ];
    for (key, pending) in calls {
        let outcome = |r: atomic_store::Result<u64>| match r {
            Ok(v) => Ok(v),
            Err(e) => Err(e.kind()),
        };
        let want = outcome(memory.assign_nonce(key, pending).await);
        let got = outcome(dynamo.assign_nonce(key, pending).await);
        assert_eq!(got, want, "assign_nonce({key}, {pending})");
        assert_eq!(
            dynamo.get(key).await.unwrap(),
            memory.get(key).await.unwrap(),
            "stored {key} after assign_nonce({key}, {pending})"
        );
    }
    assert_eq!(
        memory.assign_nonce("a", top).await.unwrap_err().kind(),
        ErrorKind::Overflow,
        "the sequence reaches the top"
    );
    for key in ["a", "b", "c", "d"] {
        dynamo.delete(key).await.unwrap();
    }
}

/// How the child process of
/// [`missing_credentials_are_a_short_clear_error_and_nothing_is_sent`] finds
/// its task: the store's URL, the expected kind, and the bound.
const NO_CREDENTIALS_CHILD: &str = "ATOMIC_STORE_TEST_NO_CREDENTIALS_CHILD";

/// A new user's first run: a local endpoint and no AWS credentials
/// anywhere. The first call fails at once, nothing is sent, the error is
/// not OutcomeUnknown, and it names what to set in a line or two. Run in a
/// child process with an empty environment (no keys, no profile files):
/// with the instance metadata service turned off, with it pointed at a
/// listener on 127.0.0.1 that never answers, and with a profile whose
/// `credential_process` never answers (Unavailable: it may yet).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_credentials_are_a_short_clear_error_and_nothing_is_sent() {
    if let Ok(task) = std::env::var(NO_CREDENTIALS_CHILD) {
        return without_credentials(&task).await;
    }
    let counted = CountingForwarder::start(&endpoint(&support::url("dynamodb"))).await;
    let url = support::url("dynamodb").replace(
        &endpoint(&support::url("dynamodb")),
        &format!("http://127.0.0.1:{}", counted.port),
    );
    let silent = CountingForwarder::silent().await;
    let home = tempfile::tempdir().unwrap();
    let hanging = tempfile::tempdir().unwrap();
    std::fs::write(
        hanging.path().join("config"),
        "[default]\ncredential_process = /bin/sleep 10\n",
    )
    .unwrap();
    // (home, variable, value, kind)
    let cases = [
        (
            &home,
            "AWS_EC2_METADATA_DISABLED",
            "true".to_owned(),
            "invalid_argument",
        ),
        (
            &home,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT",
            format!("http://127.0.0.1:{}", silent.port),
            "invalid_argument",
        ),
        (
            &hanging,
            "AWS_EC2_METADATA_DISABLED",
            "true".to_owned(),
            "unavailable",
        ),
    ];
    for (home, var, value, kind) in cases {
        let output = tokio::process::Command::new(this_test_binary())
            .args([
                "missing_credentials_are_a_short_clear_error_and_nothing_is_sent",
                "--exact",
                "--nocapture",
            ])
            .env_clear()
            .env(NO_CREDENTIALS_CHILD, format!("{kind} {url}"))
            .env("HOME", home.path())
            .env("AWS_CONFIG_FILE", home.path().join("config"))
            .env(
                "AWS_SHARED_CREDENTIALS_FILE",
                home.path().join("credentials"),
            )
            .env(var, value)
            .output()
            .await
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stdout.contains("credentials check done"),
            "{var}: the child failed:\n{stdout}\n{stderr}"
        );
        let report = stdout.lines().find(|l| l.starts_with(kind));
        println!("{var}: {}", report.unwrap_or_default());
    }
    assert!(
        silent.connections() > 0,
        "the metadata service on 127.0.0.1 was never asked"
    );
    assert_eq!(counted.connections(), 0, "a request reached the endpoint");
    // The forwarder does count: a store with credentials goes through it.
    let store = atomic_store::open(&url).unwrap();
    store.get("k").await.unwrap();
    assert!(counted.connections() > 0);
}

/// This test binary, to run again as a child. On Linux through
/// `/proc/self/exe`, which still works when a rebuild has replaced the
/// file on disk.
fn this_test_binary() -> std::path::PathBuf {
    let proc = std::path::PathBuf::from("/proc/self/exe");
    if proc.exists() {
        proc
    } else {
        std::env::current_exe().unwrap()
    }
}

async fn without_credentials(task: &str) {
    let (kind, url) = task.split_once(' ').unwrap();
    let store = atomic_store::open(url).unwrap();
    let started = Instant::now();
    let e = store.incr("no-credentials").await.unwrap_err();
    let took = started.elapsed();
    let text = e.to_string();
    assert_ne!(e.kind(), ErrorKind::OutcomeUnknown, "{text}");
    assert_eq!(e.kind().as_str(), kind, "{text}");
    for var in ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"] {
        assert!(e.message().contains(var), "{var} not named: {text}");
    }
    assert!(
        text.len() < 400 && text.lines().count() <= 2,
        "{} bytes: {text}",
        text.len()
    );
    // A correctness bound (nothing waits on the metadata service past
    // connect_timeout, 2 s), not a speed test.
    assert!(took < Duration::from_secs(5), "took {took:?}");
    println!("{kind} after {took:?}: {text}");
    println!("credentials check done");
}

/// A TCP forwarder on 127.0.0.1 that counts the connections it accepted.
struct CountingForwarder {
    port: u16,
    accepted: Arc<AtomicUsize>,
}

impl CountingForwarder {
    async fn start(upstream: &str) -> CountingForwarder {
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let upstream = upstream.clone();
                tokio::spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        });
        CountingForwarder { port, accepted }
    }

    /// A listener that counts connections and never answers them.
    async fn silent() -> CountingForwarder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                held.push(socket);
            }
        });
        CountingForwarder { port, accepted }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}
