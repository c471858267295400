//! The real `atomic-store` binary against real stores: outputs, exit codes,
//! bad input, and several OS processes on one store.

use serde_json::Value;

mod support;

use support::{code, json, run, run_together, sqlite_url, with_param};

#[test]
fn commands_print_json_and_branchable_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let out = run(&url, &["--json", "incr", "n"]);
    assert_eq!((code(&out), json(&out)["value"].as_i64()), (0, Some(1)));
    // Issue 20: one shape whatever the count (it was "value" for one and
    // "values" for several).
    assert_eq!(json(&out)["values"], serde_json::json!([1]));
    let out = run(&url, &["--json", "incr", "n2", "--count", "3"]);
    assert_eq!(
        json(&out),
        serde_json::json!({"value": 3, "values": [1, 2, 3]})
    );
    let out = run(&url, &["--json", "get", "n"]);
    assert_eq!(json(&out)["value"], "1");
    let out = run(&url, &["--json", "get", "missing"]);
    assert_eq!((code(&out), json(&out)["value"].clone()), (3, Value::Null));

    let out = run(&url, &["--json", "lock", "l", "--ttl", "30s"]);
    let lock = json(&out);
    assert_eq!((code(&out), lock["acquired"].as_bool()), (0, Some(true)));
    let id = lock["id"].as_str().unwrap().to_owned();
    assert_eq!(id.len(), 32);
    assert!(lock["token"].as_u64().unwrap() >= 1);
    let out = run(&url, &["--json", "lock", "l", "--ttl", "30s"]);
    assert_eq!(
        (code(&out), json(&out)["acquired"].as_bool()),
        (3, Some(false))
    );
    let out = run(&url, &["--json", "extend", "l", &id, "--ttl", "1m"]);
    assert_eq!(
        (code(&out), json(&out)["outcome"].as_str()),
        (0, Some("extended"))
    );
    let out = run(&url, &["--json", "unlock", "l", "someone-else"]);
    assert_eq!(
        (code(&out), json(&out)["outcome"].as_str()),
        (3, Some("held_by_other"))
    );
    let out = run(&url, &["--json", "unlock", "l", &id]);
    assert_eq!(
        (code(&out), json(&out)["outcome"].as_str()),
        (0, Some("released"))
    );
    let out = run(&url, &["--json", "unlock", "l", &id]);
    assert_eq!(
        (code(&out), json(&out)["outcome"].as_str()),
        (3, Some("not_held"))
    );

    let out = run(&url, &["--json", "cas", "c", "--absent", "a"]);
    assert_eq!(
        (code(&out), json(&out)["swapped"].as_bool()),
        (0, Some(true))
    );
    let out = run(&url, &["--json", "cas", "c", "--expect", "zzz", "b"]);
    assert_eq!(
        (code(&out), json(&out)["swapped"].as_bool()),
        (3, Some(false))
    );
    let out = run(&url, &["cas", "c", "--expect", "a", "b"]);
    assert_eq!(
        (code(&out), String::from_utf8_lossy(&out.stdout).trim()),
        (0, "swapped")
    );

    let out = run(&url, &["--json", "nonce", "nk", "--pending", "7"]);
    assert_eq!(json(&out), serde_json::json!({"nonce": 7, "nonces": [7]}));
    let out = run(
        &url,
        &["--json", "nonce", "nk", "--pending", "7", "--count", "2"],
    );
    assert_eq!(
        json(&out),
        serde_json::json!({"nonce": 9, "nonces": [8, 9]})
    );
    let out = run(&url, &["--json", "set", "s", "v", "--ttl", "1h"]);
    assert_eq!((code(&out), json(&out)["ok"].as_bool()), (0, Some(true)));
    let out = run(&url, &["--json", "del", "s"]);
    assert_eq!(json(&out)["deleted"].as_bool(), Some(true));
    let out = run(&url, &["get", "n"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
}

#[test]
fn bad_input_gets_typed_errors_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    assert_eq!(code(&run(&url, &["set", "word", "hello"])), 0);

    let out = run(&url, &["--json", "incr", "word"]);
    assert_eq!(code(&out), 1);
    assert_eq!(json(&out)["error"]["kind"], "not_an_integer");
    let out = run(&url, &["incr", "word"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not_an_integer") && stderr.contains("hint:"),
        "{stderr}"
    );

    assert_eq!(code(&run(&url, &["set", "max", &i64::MAX.to_string()])), 0);
    let out = run(&url, &["--json", "incr", "max"]);
    assert_eq!(json(&out)["error"]["kind"], "overflow");

    // A bad argument exits 2, also when the store is what refuses it.
    let out = run(&url, &["--json", "set", "word", "x", "--ttl", "0ms"]);
    assert_eq!(
        (code(&out), json(&out)["error"]["kind"].as_str()),
        (2, Some("invalid_argument"))
    );
    let out = run(&url, &["--json", "set", "", "x"]);
    assert_eq!(json(&out)["error"]["kind"], "invalid_argument");
    let long_key = "k".repeat(1025);
    let out = run(&url, &["--json", "get", &long_key]);
    assert_eq!(json(&out)["error"]["kind"], "invalid_argument");

    for (value_key, expected) in [("word", "hello"), ("max", "9223372036854775807")] {
        let out = run(&url, &["get", value_key]);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), expected);
    }

    let out = run("ftp://host", &["--json", "get", "a"]);
    assert_eq!(
        (code(&out), json(&out)["error"]["kind"].as_str()),
        (2, Some("invalid_argument"))
    );
    let out = run("sqlite://x.db?colour=red", &["get", "a"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown URL parameter `colour`"));
    // Usage errors exit 2.
    assert_eq!(code(&run(&url, &["set", "k", "v", "--ttl", "soon"])), 2);
    assert_eq!(code(&run(&url, &["cas", "k", "new"])), 2);
    assert_eq!(code(&run(&url, &["bench", "--workload", "nope"])), 2);
}

#[test]
fn four_processes_on_one_sqlite_file_draw_each_value_once() {
    let dir = tempfile::tempdir().unwrap();
    // SQLite's write lock is not fair: on a loaded machine one process in
    // a tight loop can hold the others off past the default 5 s. This test
    // checks the values drawn, not the waits.
    let url = with_param(&sqlite_url(&dir), "busy_timeout", "60s");
    let mut values: Vec<i64> = Vec::new();
    for out in run_together(4, &url, &["--json", "incr", "shared", "--count", "500"]) {
        // With --json the error is the JSON on stdout.
        assert_eq!(
            code(&out),
            0,
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json(&out);
        values.extend(
            v["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap()),
        );
    }
    values.sort_unstable();
    assert_eq!(values, (1..=2000).collect::<Vec<i64>>());
}

#[test]
fn bench_verifies_what_its_worker_processes_did() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    for workload in ["incr", "nonce", "lock", "get-set", "incr-many"] {
        let processes = if workload == "nonce" { "1" } else { "2" };
        let out = run(
            &url,
            &[
                "--json",
                "bench",
                "--workload",
                workload,
                "--processes",
                processes,
                "--concurrency",
                "2",
                "--duration",
                "500ms",
            ],
        );
        assert_eq!(
            code(&out),
            0,
            "{workload}: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let report = json(&out);
        assert_eq!(report["verified"], true, "{workload}: {report}");
        assert!(report["ops"].as_u64().unwrap() > 0, "{workload}: {report}");
        assert!(report["ops_per_sec"].as_f64().unwrap() > 0.0);
        assert!(
            report["latency_us"]["p99"].as_u64().unwrap()
                >= report["latency_us"]["p50"].as_u64().unwrap()
        );
        assert_eq!(
            report["per_process_ops_per_sec"].as_array().unwrap().len(),
            processes.parse::<usize>().unwrap()
        );
    }
    // The bench cleans up after itself: only schema rows remain.
    assert_eq!(rusqlite_count(&dir), 0, "bench left keys behind");
}

fn rusqlite_count(dir: &tempfile::TempDir) -> i64 {
    let conn = rusqlite::Connection::open(dir.path().join("cli.db")).unwrap();
    conn.query_row("SELECT count(*) FROM atomic_store_kv", [], |r| r.get(0))
        .unwrap()
}

#[test]
fn verify_passes_on_sqlite_and_prints_one_line_per_check() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&sqlite_url(&dir), &["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(code(&out), 0, "{stdout}");
    assert!(
        stdout.lines().filter(|l| l.starts_with("PASS")).count() >= 20,
        "{stdout}"
    );
    assert!(!stdout.contains("FAIL"), "{stdout}");
    let out = run(&sqlite_url(&dir), &["--json", "verify"]);
    assert_eq!(json(&out)["failed"], 0);
}

#[test]
fn operator_commands_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    support::operator_commands(&sqlite_url(&dir), "ops");
}

#[test]
fn bench_sweep_writes_json_and_a_valid_svg_plot() {
    let dir = tempfile::tempdir().unwrap();
    let plot = dir.path().join("plot.svg");
    let out = run(
        &sqlite_url(&dir),
        &[
            "--json",
            "bench",
            "--workload",
            "get-set",
            "--processes",
            "1",
            "--sweep",
            "1,2,4",
            "--duration",
            "300ms",
            "--plot",
            plot.to_str().unwrap(),
        ],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let report = json(&out);
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(
        runs.iter()
            .map(|r| r["concurrency"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 4]
    );
    assert!(runs.iter().all(|r| r["verified"] == true));
    let svg = std::fs::read_to_string(&plot).unwrap();
    let doc = roxmltree::Document::parse(&svg).expect("the plot is well-formed XML");
    assert_eq!(doc.root_element().tag_name().name(), "svg");
    assert_eq!(
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline"))
            .count(),
        5,
        "one throughput and four latency lines"
    );
}

#[test]
fn permits_contended_bench_across_four_processes_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    support::permits_contended_across_processes(&sqlite_url(&dir));
}

/// `--permits` belongs to the contended workload; elsewhere it is refused
/// before any worker starts.
#[test]
fn permits_without_the_contended_workload_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &sqlite_url(&dir),
        &["--json", "bench", "--workload", "incr", "--permits", "2"],
    );
    assert_eq!(
        (code(&out), json(&out)["error"]["kind"].as_str()),
        (2, Some("invalid_argument")),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("--workload lock-contended"));
    let out = run(
        &sqlite_url(&dir),
        &["bench", "--workload", "lock-contended", "--permits", "0"],
    );
    assert_eq!(code(&out), 2);
}

#[test]
fn lock_contended_bench_across_four_processes_is_fair_and_exclusive() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(
        &sqlite_url(&dir),
        &[
            "--json",
            "bench",
            "--workload",
            "lock-contended",
            "--processes",
            "4",
            "--concurrency",
            "4",
            "--duration",
            "2s",
        ],
    );
    assert_eq!(
        code(&out),
        0,
        "{} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let report = json(&out);
    assert_eq!(report["verified"], true, "{report}");
    assert_eq!(report["starved"], 0, "{report}");
    assert!(report["fairness"].as_f64().unwrap() >= 0.9, "{report}");
}

/// Issue 12 item 11: `verify` removes everything it created, fencing
/// counters included (8 rows of the check namespaces were left before).
#[test]
fn verify_leaves_no_rows_behind_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let out = run(&sqlite_url(&dir), &["--json", "verify"]);
    let report = json(&out);
    assert!(report["checks"].as_array().unwrap().len() >= 20, "{report}");
    assert!(report["cleanup_error"].is_null(), "{report}");
    let conn = rusqlite::Connection::open(dir.path().join("cli.db")).unwrap();
    for table in ["atomic_store_kv", "atomic_store_fence"] {
        let left: Vec<String> = conn
            .prepare(&format!("SELECT key FROM {table}"))
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(|k| k.unwrap())
            .collect();
        assert!(
            left.is_empty(),
            "{table}: {} rows left: {left:?}",
            left.len()
        );
    }
}

/// Issue 20, "never lose a value": `incr --count` and `nonce --count` into
/// a pipe whose reader leaves after two lines (`| head -2`). The command
/// must stop without a panic (exit 1, not 101), and the last value it
/// handed out must be on stdout or stderr: the store holds no value that
/// nobody was shown.
#[test]
fn a_closed_pipe_stops_the_loop_and_loses_no_value() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    for (args, key) in [
        (&["incr", "c", "--count", "1000000"][..], "c"),
        (
            &["nonce", "n", "--pending", "0", "--count", "1000000"][..],
            "n",
        ),
    ] {
        let mut child = support::command(&url)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let first: Vec<String> = (0..2).map(|_| lines.next().unwrap().unwrap()).collect();
        drop(lines);
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(code(&out), 1, "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains("stdout is closed"), "{args:?}: {stderr}");
        let unprinted: i64 = stderr.trim_end().lines().last().unwrap().parse().unwrap();
        let stored = json(&run(&url, &["--json", "get", key]))["value"].clone();
        assert_eq!(
            stored.as_str().map(|v| v.parse::<i64>().unwrap()),
            Some(unprinted),
            "{args:?}: the store went past the value reported as not printed; first lines {first:?}"
        );
    }
}

/// Issue 20, exit codes: 2 for every bad argument, those the library
/// refuses included, and with `--json` usage errors are JSON too, with a
/// hint. Nothing is written by a refused command.
#[test]
fn every_bad_argument_exits_2_and_json_errors_carry_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    let long_key = "k".repeat(2000);
    let refused: &[&[&str]] = &[
        &["lock", "l", "--ttl", "0s"],
        &["lock", "l", "--ttl", "366d"],
        &["set", "s", "v", "--ttl", "0s"],
        &["get", ""],
        &["incr", &long_key],
        &["nonce", "n", "--pending", "9223372036854775808"],
        &["lock", "l"],
        &["no-such-command"],
    ];
    for args in refused {
        let out = run(&url, args);
        assert_eq!(
            code(&out),
            2,
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json_args: Vec<&str> = std::iter::once("--json")
            .chain(args.iter().copied())
            .collect();
        let out = run(&url, &json_args);
        assert_eq!(code(&out), 2, "{json_args:?}");
        let error = &json(&out)["error"];
        assert!(
            error["hint"].as_str().is_some_and(|h| !h.is_empty()),
            "{args:?}: {error}"
        );
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{args:?}: {error}"
        );
    }
    for key in ["l", "s", "n"] {
        assert_eq!(code(&run(&url, &["get", key])), 3, "{key} was written");
    }
    // Not a bad argument: a negative outcome stays 3, an error 1.
    assert_eq!(code(&run(&url, &["get", "missing"])), 3);
    run(&url, &["set", "text", "abc"]);
    assert_eq!(code(&run(&url, &["incr", "text"])), 1);
}

/// Issue 20, memory:// in the CLI: bench refuses it with worker processes
/// (each had a store of its own, and bench reported millions of
/// duplicates), and other commands warn that the store ends with them.
#[test]
fn memory_store_is_refused_by_multi_process_bench_and_warned_about() {
    let out = run("memory://", &["bench", "--duration", "1s"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(code(&out), 2, "{stderr}");
    assert!(stderr.contains("--processes 1"), "{stderr}");
    let out = run(
        "memory://",
        &["bench", "--processes", "1", "--duration", "1s"],
    );
    assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
    let out = run("memory://", &["incr", "x"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("gone when the command ends"), "{stderr}");
}

/// Issue 20, the default store is not silent: with no --url and no
/// $ATOMIC_STORE_URL, a command that needs an existing store says there is
/// none (exit 3) and creates no file; a command that writes says which
/// store it used, on stderr.
#[test]
fn the_default_store_is_never_created_silently() {
    let dir = tempfile::tempdir().unwrap();
    let bare = |args: &[&str]| {
        std::process::Command::new(support::BIN)
            .env_remove("ATOMIC_STORE_URL")
            .current_dir(dir.path())
            .args(args)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    for args in [
        &["get", "k"][..],
        &["inspect", "k"],
        &["keys"],
        &["unlock", "k", "--force", "--yes"],
        &["--json", "del", "k"],
    ] {
        let out = bare(args);
        assert_eq!(code(&out), 3, "{args:?}");
        let said = String::from_utf8_lossy(if args[0] == "--json" {
            &out.stdout
        } else {
            &out.stderr
        });
        assert!(
            said.contains("atomic-store.db does not exist"),
            "{args:?}: {said}"
        );
        assert!(
            std::fs::read_dir(dir.path()).unwrap().next().is_none(),
            "{args:?} created a file"
        );
    }
    let out = bare(&["incr", "k"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "1");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("using sqlite://atomic-store.db"),
        "{stderr}"
    );
    assert!(dir.path().join("atomic-store.db").exists());
    let out = bare(&["get", "k"]);
    assert_eq!(
        (code(&out), String::from_utf8_lossy(&out.stdout).trim()),
        (0, "1")
    );
    assert!(
        out.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Issue 20, leftovers: the lock workloads left their fencing counters
/// and every workload's keys must go after the run, the lock queue's
/// presence keys too (on ZooKeeper even an expired one leaves a tombstone).
#[test]
fn bench_leaves_no_rows_on_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let url = sqlite_url(&dir);
    for workload in ["incr", "incr-many", "lock", "lock-contended", "get-set"] {
        let args = [
            "--json",
            "bench",
            "--workload",
            workload,
            "--processes",
            "2",
        ];
        let out = run(
            &url,
            &[&args[..], &["--concurrency", "2", "--duration", "300ms"]].concat(),
        );
        assert_eq!(
            code(&out),
            0,
            "{workload}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let conn = rusqlite::Connection::open(dir.path().join("cli.db")).unwrap();
        let rows = |sql: &str| -> Vec<String> {
            let mut statement = conn.prepare(sql).unwrap();
            let keys = statement.query_map([], |r| r.get(0)).unwrap();
            keys.map(|k| k.unwrap()).collect()
        };
        let fences = rows("SELECT key FROM atomic_store_fence");
        assert!(
            fences.is_empty(),
            "{workload} left fencing counters: {fences:?}"
        );
        let kept = rows("SELECT key FROM atomic_store_kv");
        assert!(kept.is_empty(), "{workload} left keys: {kept:?}");
    }
}

/// `verify | head -3`: a closed stdout ends the printing, not the run; the
/// cleanup still removes every key the checks wrote, and the exit is 1.
#[test]
fn verify_cleans_up_when_stdout_closes() {
    use std::io::{BufRead, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let mut child = support::command(&sqlite_url(&dir))
        .arg("verify")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    lines.next().unwrap().unwrap();
    drop(lines);
    let out = child.wait_with_output().unwrap();
    assert_eq!(code(&out), 1, "{}", String::from_utf8_lossy(&out.stderr));
    let conn = rusqlite::Connection::open(dir.path().join("cli.db")).unwrap();
    for table in ["atomic_store_kv", "atomic_store_fence"] {
        let left: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap();
        assert_eq!(left, 0, "{table}: rows left behind");
    }
}

/// An argument that is not UTF-8 is a usage error (exit 2), not a panic.
#[test]
fn a_non_utf8_argument_is_a_usage_error() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let bad = std::ffi::OsStr::from_bytes(b"\xff");
    for json in [false, true] {
        let mut command = support::command(&sqlite_url(&dir));
        if json {
            command.arg("--json");
        }
        let out = command.arg("get").arg(bad).output().unwrap();
        assert_eq!(code(&out), 2, "{}", String::from_utf8_lossy(&out.stderr));
    }
}
