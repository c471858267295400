//! Helpers shared by the CLI's integration tests: running the binary,
//! reading its output, test servers' URLs, and checks that several test
//! files run on their own backend.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

pub const BIN: &str = env!("CARGO_BIN_EXE_atomic-store");

/// A test server's URL from the environment `scripts/test` sets up; a
/// missing one fails the test.
pub fn url(var: &str) -> String {
    std::env::var(var)
        .unwrap_or_else(|_| panic!("{var} is not set: run the tests through scripts/test"))
}

pub fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/cli.db", dir.path().display())
}

/// `url` with `name=value` added to its query.
pub fn with_param(url: &str, name: &str, value: &str) -> String {
    let joiner = if url.contains('?') { '&' } else { '?' };
    format!("{url}{joiner}{name}={value}")
}

/// A name no other run uses (letters, digits and `_` after `name`, so it
/// also serves as an SQL schema name).
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}_{}_{nanos}", std::process::id())
}

/// The binary with `--url url` (and no $ATOMIC_STORE_URL), stdin closed.
pub fn command(url: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("ATOMIC_STORE_URL")
        // Tests read stderr; a developer's RUST_LOG must not add to it.
        .env_remove("RUST_LOG")
        .arg("--url")
        .arg(url)
        .stdin(Stdio::null());
    command
}

pub fn run(url: &str, args: &[&str]) -> Output {
    command(url).args(args).output().expect("run atomic-store")
}

/// The binary with the URL in $ATOMIC_STORE_URL, as bench passes it to its
/// workers.
pub fn run_env(url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .env("ATOMIC_STORE_URL", url)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run atomic-store")
}

/// `n` processes of the binary with the same arguments, all at once.
pub fn run_together(n: usize, url: &str, args: &[&str]) -> Vec<Output> {
    let children: Vec<_> = (0..n)
        .map(|_| {
            Command::new(BIN)
                .env("ATOMIC_STORE_URL", url)
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("run atomic-store")
        })
        .collect();
    children
        .into_iter()
        .map(|c| c.wait_with_output().unwrap())
        .collect()
}

/// stdout as one JSON value.
pub fn json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| {
        panic!(
            "not JSON ({e}): {text:?} {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Runtime::new().unwrap().block_on(f)
}

/// 8 `atomic-store nonce` processes draw `per_process` nonces each from
/// one fresh key at once: together exactly 0..8×per_process.
pub fn eight_processes_assign_nonces(url: &str, per_process: u64) {
    let key = unique("nonce-mp");
    let count = per_process.to_string();
    let args = ["--json", "nonce", &key, "--pending", "0", "--count", &count];
    let mut nonces: Vec<u64> = Vec::new();
    for out in run_together(8, url, &args) {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json(&out);
        nonces.extend(
            v["nonces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap()),
        );
    }
    nonces.sort_unstable();
    assert_eq!(nonces, (0..8 * per_process).collect::<Vec<u64>>());
}

/// `bench --baseline` on `workload` runs, verifies, and reports exactly
/// one raw-client baseline with a throughput; returns that baseline.
pub fn bench_reports_one_raw_baseline(url: &str, workload: &str) -> Value {
    let out = run_env(
        url,
        &[
            "--json",
            "bench",
            "--workload",
            workload,
            "--processes",
            "1",
            "--concurrency",
            "4",
            "--duration",
            "1s",
            "--baseline",
        ],
    );
    assert!(
        out.status.success(),
        "{url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["verified"], true, "{report}");
    let baselines = report["baselines"]
        .as_array()
        .expect("a raw-client baseline");
    assert_eq!(baselines.len(), 1, "{report}");
    assert!(
        baselines[0]["ops_per_sec"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    baselines[0].clone()
}

/// `atomic-store --json verify` on `url`: the report, after checking that
/// the suite really ran and that its cleanup reported no error. The suite's
/// verdict is left to the caller.
pub fn verify_report(url: &str) -> Value {
    let report = json(&run_env(url, &["--json", "verify"]));
    let checks = report["checks"].as_array().map_or(0, Vec::len);
    assert!(checks >= 20, "the suite did not run: {report}");
    assert!(
        report["cleanup_error"].is_null(),
        "verify's cleanup failed: {}",
        report["cleanup_error"]
    );
    report
}

/// `bench --workload lock-contended` with 3 worker processes of one task
/// each on one lock for 2 s (see below): verified (one holder at a time across the
/// processes, and the store's lock key refused a second holder), with
/// critical sections in at least two processes, so that exclusion across
/// processes was exercised.
pub fn lock_contended_across_processes(url: &str) {
    contended_across_processes(
        url,
        &["--processes", "3", "--concurrency", "1"],
        "one holder",
    );
}

/// `bench --workload lock-contended --permits 3` with 4 worker processes
/// of 8 tasks each for 2 s (see below): verified (at most 3 holders at once across the
/// processes, and the store refused each held permit to another caller),
/// with permits taken in at least two processes.
pub fn permits_contended_across_processes(url: &str) {
    contended_across_processes(
        url,
        &["--permits", "3", "--processes", "4", "--concurrency", "8"],
        "at most 3 holders",
    );
}

/// A verified `lock-contended` bench with `shape`, whose verdict starts
/// with `proven`, with turns taken in at least two processes. The fair
/// queue serves waiters in arrival order, so one process's tasks may take
/// all the first turns: the run is only judged once it had more turns than
/// a process has tasks (a slow store, such as DynamoDB's test server on a
/// busy machine, gets a longer second run).
fn contended_across_processes(url: &str, shape: &[&str], proven: &str) {
    let mut report = serde_json::Value::Null;
    for duration in ["2s", "8s"] {
        let mut args = vec![
            "--json",
            "bench",
            "--workload",
            "lock-contended",
            "--duration",
            duration,
        ];
        args.extend(shape);
        let out = run_env(url, &args);
        report = json(&out);
        assert!(out.status.success(), "{url}: {report}");
        if report["ops"].as_u64().unwrap() > report["concurrency"].as_u64().unwrap() {
            break;
        }
    }
    assert_eq!(report["verified"], true, "{url}: {report}");
    assert_eq!(report["errors"], 0, "{url}: {report}");
    assert!(
        report["verification"].as_str().unwrap().starts_with(proven),
        "{url}: {report}"
    );
    let holders = report["per_process_ops_per_sec"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p.as_f64().unwrap() > 0.0)
        .count();
    assert!(
        holders >= 2,
        "{url}: only {holders} process had a turn: {report}"
    );
}

/// inspect, keys and unlock --force, on any store URL.
pub fn operator_commands(url: &str, prefix: &str) {
    let k = |name: &str| format!("{prefix}:{name}");
    assert_eq!(code(&run(url, &["set", &k("plain"), "v"])), 0);
    assert_eq!(
        code(&run(url, &["set", &k("timed"), "t", "--ttl", "1h"])),
        0
    );
    let lock = json(&run(url, &["--json", "lock", &k("stuck"), "--ttl", "1h"]));
    let id = lock["id"].as_str().unwrap().to_owned();

    let info = json(&run(url, &["--json", "inspect", &k("timed")]));
    assert_eq!(info["value"], "t");
    let ttl = info["ttl_ms"].as_u64().unwrap();
    assert!(ttl > 3_500_000 && ttl <= 3_600_000, "{info}");
    let info = json(&run(url, &["--json", "inspect", &k("stuck")]));
    assert_eq!(
        (info["value"].as_str(), info["fencing_token"].clone()),
        (Some(id.as_str()), lock["token"].clone())
    );
    let text = run(url, &["inspect", &k("stuck")]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!("held by {id}")) && text.contains("fencing token"),
        "{text}"
    );
    assert_eq!(code(&run(url, &["inspect", &k("missing")])), 3);

    let listed = json(&run(
        url,
        &["--json", "keys", "--prefix", &format!("{prefix}:")],
    ));
    let mut keys: Vec<String> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    keys.sort();
    assert_eq!(keys, vec![k("plain"), k("stuck"), k("timed")]);
    let limited = json(&run(
        url,
        &[
            "--json",
            "keys",
            "--prefix",
            &format!("{prefix}:"),
            "--limit",
            "1",
        ],
    ));
    assert_eq!(limited["count"], 1);
    // Issue 20: a cut list says so (it gave no sign), a whole one does not.
    assert_eq!(limited["truncated"], true, "{limited}");
    assert_eq!(listed["truncated"], false, "{listed}");
    let out = run(
        url,
        &["keys", "--prefix", &format!("{prefix}:"), "--limit", "2"],
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 2);
    assert!(String::from_utf8_lossy(&out.stderr).contains("raise --limit"));

    // Issue 20: inspect reports what is known. A plain value is no lock
    // (it showed "held by v" and a token on etcd, ZooKeeper and SQLite)...
    let info = json(&run(url, &["--json", "inspect", &k("plain")]));
    assert_eq!(
        (&info["kind"], &info["holder"], &info["fencing_token"]),
        (&json!("value"), &Value::Null, &Value::Null),
        "{info}"
    );
    let text = run(url, &["inspect", &k("plain")]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains("none known: a value, or a lock") && !text.contains("held by"),
        "{text}"
    );
    // ...a lock taken the TypeScript SDK's way is one (it showed no lock line)...
    let sdk_id = "1733011200000-k3j5x9q2m1a";
    assert_eq!(
        code(&run(url, &["set", &k("sdk"), sdk_id, "--ttl", "1h"])),
        0
    );
    let info = json(&run(url, &["--json", "inspect", &k("sdk")]));
    assert_eq!(
        (&info["kind"], &info["holder"]),
        (&json!("lock"), &json!(sdk_id)),
        "{info}"
    );
    let text = run(url, &["inspect", &k("sdk")]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.contains(&format!(
            "held by {sdk_id} (an id of the TypeScript SDK's form)"
        )),
        "{text}"
    );
    // ...and a coarse expiry clock says so (etcd showed "0.000s left").
    let resolution = info["ttl_resolution_ms"].as_u64().unwrap();
    assert_eq!(text.contains("to within"), resolution >= 1000, "{text}");

    // Issue 20: --force leaves a key that holds no lock id alone (it
    // deleted counters), unless --any-value says otherwise.
    let out = run(url, &["--json", "unlock", &k("plain"), "--force", "--yes"]);
    assert_eq!(
        (code(&out), json(&out)["outcome"].clone()),
        (3, json!("not_a_lock"))
    );
    assert_eq!(
        json(&run(url, &["--json", "get", &k("plain")]))["value"],
        "v"
    );
    let out = run(
        url,
        &["unlock", &k("plain"), "--force", "--yes", "--any-value"],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stdout));
    assert_eq!(code(&run(url, &["get", &k("plain")])), 3);
    run(url, &["del", &k("sdk")]);

    // Not interactive and no --yes: refuse, exit 2, lock untouched.
    let out = run(url, &["unlock", &k("stuck"), "--force"]);
    assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("held by {id}")));
    assert_eq!(
        json(&run(url, &["--json", "get", &k("stuck")]))["value"],
        id.as_str()
    );
    let out = run(url, &["unlock", &k("stuck"), "--force", "--yes"]);
    assert_eq!(code(&out), 0);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains(&format!("held by {id}")) && stdout.contains("released"),
        "{stdout}"
    );
    assert_eq!(code(&run(url, &["get", &k("stuck")])), 3);
    assert_eq!(
        code(&run(url, &["unlock", &k("stuck"), "--force", "--yes"])),
        3
    );
    for name in ["plain", "timed"] {
        run(url, &["del", &k(name)]);
    }
}

/// Issue 20: a server that refuses the URL's settings (a missing database,
/// role, DB index or chroot) is a permanent `configuration` error in the
/// server's own words, not a temporary `unavailable` one.
pub fn refused_settings_are_a_configuration_error(url: &str, words: &str) {
    let out = run(url, &["--json", "get", "k"]);
    assert_eq!(code(&out), 1, "{url}");
    let error = &json(&out)["error"];
    assert_eq!(error["kind"], "configuration", "{url}: {error}");
    assert_eq!(error["temporary"], false, "{url}: {error}");
    assert!(
        error["message"].as_str().unwrap().contains(words),
        "{url}: {error}"
    );
    assert!(
        !error["hint"].as_str().unwrap().contains("is running"),
        "{error}"
    );
}
