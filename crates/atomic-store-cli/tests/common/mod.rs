//! Helpers shared by the CLI's integration tests.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_atomic-store");

pub fn sqlite_url(dir: &tempfile::TempDir) -> String {
    format!("sqlite://{}/cli.db", dir.path().display())
}

pub fn run(url: &str, args: &[&str]) -> Output {
    Command::new(BIN)
        .env_remove("ATOMIC_STORE_URL")
        .arg("--url")
        .arg(url)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run atomic-store")
}

pub fn json(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {text:?}"))
}

pub fn code(out: &Output) -> i32 {
    out.status.code().expect("exit code")
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
