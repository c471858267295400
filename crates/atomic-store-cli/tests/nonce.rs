//! The nonce manager end to end against a real EVM node (anvil, started by
//! `scripts/test`), through the real binary, on Redis and on SQLite.
#![cfg(all(feature = "nonce", feature = "redis"))]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Output, Stdio};

use serde_json::{json, Value};

mod support;

use support::{json as json_out, url, BIN};
const CHAIN_ID: &str = "31337";

/// The tests share one anvil node, and one test's `evm_mine` while another
/// test's processes are still sending leaves a gap in that account's pool
/// when the block is cut; anvil 1.7 then keeps the later transactions queued
/// even after the gap fills (a real node promotes them). So the tests that
/// send or mine take turns.
fn one_test_at_a_time_on_the_node() -> std::sync::MutexGuard<'static, ()> {
    static NODE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    NODE.lock().unwrap_or_else(|e| e.into_inner())
}

fn anvil() -> String {
    url("ATOMIC_STORE_TEST_ANVIL_URL")
}

fn redis_url() -> String {
    let base = url("ATOMIC_STORE_TEST_REDIS_URL");
    format!("{base}?prefix=nonce-test-{}", random_hex(8))
}

fn random_hex(bytes: usize) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let mut x = nanos ^ ((std::process::id() as u128) << 64);
    let mut out = String::new();
    for _ in 0..bytes {
        // xorshift: distinct per call, no dependency needed
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push_str(&format!("{:02x}", (x & 0xff) as u8));
    }
    out
}

/// A JSON-RPC call over plain HTTP/1.1, to keep the test's own client
/// independent of the one under test.
fn rpc(method: &str, params: Value) -> Value {
    let url = anvil();
    let host = url.trim_start_matches("http://");
    let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params}).to_string();
    let mut stream = TcpStream::connect(host).unwrap();
    write!(
        stream,
        "POST / HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let json_start = response.find("\r\n\r\n").unwrap() + 4;
    let reply: Value = serde_json::from_str(response[json_start..].trim()).unwrap();
    assert!(reply.get("error").is_none(), "{method}: {reply}");
    reply["result"].clone()
}

fn count(address: &str, block: &str) -> u64 {
    let hex = rpc("eth_getTransactionCount", json!([address, block]));
    u64::from_str_radix(hex.as_str().unwrap().trim_start_matches("0x"), 16).unwrap()
}

/// Mine one block with everything ready in the pool (the test node runs
/// with `--no-mining`, so the pool is a real pending pool).
fn mine() {
    rpc("evm_mine", json!([]));
}

/// A fresh account that anvil funds and signs for.
fn fresh_account() -> String {
    let address = format!("0x{}", random_hex(20));
    rpc("anvil_setBalance", json!([address, "0x56BC75E2D63100000"]));
    rpc("anvil_impersonateAccount", json!([address]));
    address
}

fn nonce_cmd(url: &str, action: &str, address: &str, extra: &[&str]) -> Output {
    Command::new(BIN)
        .env("ATOMIC_STORE_URL", url)
        .args([
            "--json",
            "nonce",
            action,
            "--rpc",
            &anvil(),
            "--chain-id",
            CHAIN_ID,
            "--address",
            address,
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `nonce send` for `address` on the test node through the store at `url`,
/// `count` transactions, JSON lines on a piped stdout.
fn send_cmd(url: &str, address: &str, count: &str) -> Command {
    let mut c = Command::new(BIN);
    c.env("ATOMIC_STORE_URL", url)
        .args([
            "--json",
            "nonce",
            "send",
            "--rpc",
            &anvil(),
            "--chain-id",
            CHAIN_ID,
        ])
        .args(["--address", address, "--count", count])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    c
}

fn eight_processes_send_through(url: &str) {
    let address = fresh_account();
    // Mixed spellings of one address share one counter.
    let spellings = [
        address.clone(),
        address.to_uppercase().replacen("0X", "0x", 1),
    ];
    let children: Vec<_> = (0..8)
        .map(|i| {
            Command::new(BIN)
                .env("ATOMIC_STORE_URL", url)
                .args([
                    "--json",
                    "nonce",
                    "next",
                    "--rpc",
                    &anvil(),
                    "--chain-id",
                    CHAIN_ID,
                ])
                .args([
                    "--address",
                    &spellings[i % 2],
                    "--count",
                    "10",
                    "--send-self-tx",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut nonces = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nonce next failed: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let v = json_out(&out);
        assert_eq!(v["tx_hashes"].as_array().unwrap().len(), 10);
        nonces.extend(
            v["nonces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|n| n.as_u64().unwrap()),
        );
    }
    nonces.sort_unstable();
    // A fresh account starts at 0; no duplicate, no gap.
    assert_eq!(nonces, (0..80).collect::<Vec<u64>>());
    // Every transaction is in the node's pending pool, in one unbroken run of
    // nonces, and the next block mines them all.
    assert_eq!(count(&address, "pending"), 80);
    mine();
    assert_eq!(count(&address, "latest"), 80);
    let doctor = json_out(&nonce_cmd(url, "doctor", &address, &[]));
    assert_eq!(doctor["verdict"], "in_sync", "{doctor}");
}

#[test]
fn eight_processes_share_one_account_through_redis() {
    let _node = one_test_at_a_time_on_the_node();
    eight_processes_send_through(&redis_url());
}

#[test]
fn eight_processes_share_one_account_through_sqlite() {
    let _node = one_test_at_a_time_on_the_node();
    let dir = tempfile::tempdir().unwrap();
    eight_processes_send_through(&format!("sqlite://{}/nonces.db", dir.path().display()));
}

/// `nonce send` from 16 processes on one account: 8 send 20 transactions
/// each, 8 send 5 each that the node refuses (a fee below the base fee),
/// all at once. Every refused nonce is released and reused: after 8 more
/// sends (enough to take any nonce released after the last send), the
/// confirmed nonces are exactly 0..168, all mined, none twice.
fn sixteen_processes_send_with_refusals_through(url: &str) {
    let address = fresh_account();
    let send = |count: &str, refused: bool| {
        let mut c = send_cmd(url, &address, count);
        if refused {
            c.args(["--max-fee-per-gas", "1", "--max-priority-fee-per-gas", "1"]);
        }
        c.spawn().unwrap()
    };
    let lines = |out: Output| -> Vec<Value> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|_| panic!("not JSON: {l}")))
            .collect()
    };
    let mut children: Vec<_> = (0..8).map(|_| (send("20", false), false)).collect();
    children.extend((0..8).map(|_| (send("5", true), true)));
    let (mut confirmed, mut released) = (Vec::new(), 0);
    for (child, refused) in children {
        let out = child.wait_with_output().unwrap();
        let expected = if refused { 3 } else { 0 };
        assert_eq!(
            out.status.code(),
            Some(expected),
            "nonce send: {} {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        for line in lines(out) {
            match line["fate"].as_str() {
                Some("confirmed") => confirmed.push(line["nonce"].as_u64().unwrap()),
                Some("released") => released += 1,
                _ => panic!("unexpected line {line}"),
            }
        }
    }
    assert_eq!(released, 40);
    let last = send("8", false).wait_with_output().unwrap();
    assert!(
        last.status.success(),
        "{}",
        String::from_utf8_lossy(&last.stderr)
    );
    confirmed.extend(lines(last).iter().map(|l| l["nonce"].as_u64().unwrap()));
    confirmed.sort_unstable();
    assert_eq!(
        confirmed,
        (0..168).collect::<Vec<u64>>(),
        "a nonce twice, or one never reused"
    );
    assert_eq!(count(&address, "pending"), 168);
    mine();
    assert_eq!(count(&address, "latest"), 168);
}

#[test]
fn sixteen_processes_send_with_refusals_through_redis() {
    let _node = one_test_at_a_time_on_the_node();
    sixteen_processes_send_with_refusals_through(&redis_url());
}

#[test]
fn sixteen_processes_send_with_refusals_through_sqlite() {
    let _node = one_test_at_a_time_on_the_node();
    let dir = tempfile::tempdir().unwrap();
    sixteen_processes_send_with_refusals_through(&format!(
        "sqlite://{}/nonces.db",
        dir.path().display()
    ));
}

/// Four processes send from one account; two are killed (SIGKILL) while
/// they hold a lease they never sent, so the chain waits on those nonces
/// and the survivors' later transactions queue behind them. `nonce doctor
/// --repair` fills the gaps, and everything mines.
#[test]
fn killed_senders_leave_gaps_that_repair_fills() {
    let _node = one_test_at_a_time_on_the_node();
    let url = redis_url();
    let address = fresh_account();
    let mut children: Vec<_> = (0..4)
        .map(|_| {
            send_cmd(&url, &address, "30")
                .args(["--pause-after-lease", "100ms"])
                .spawn()
                .unwrap()
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(750));
    // Most of a sender's time is the pause after a lease: killed there.
    children[0].kill().unwrap();
    children[1].kill().unwrap();
    let mut confirmed = Vec::new();
    for (i, child) in children.into_iter().enumerate() {
        let out = child.wait_with_output().unwrap();
        if i >= 2 {
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["fate"], "confirmed", "{v}");
            confirmed.push(v["nonce"].as_u64().unwrap());
        }
    }
    let before = json_out(&nonce_cmd(&url, "doctor", &address, &[]));
    assert_eq!(
        before["verdict"], "store_ahead",
        "no gap was left: {before}"
    );
    let last_used = before["last_used"].as_u64().unwrap();
    assert!(before["chain_pending"].as_u64().unwrap() <= last_used);

    let repaired = nonce_cmd(&url, "doctor", &address, &["--repair", "--grace", "200ms"]);
    let report = json_out(&repaired);
    assert!(repaired.status.success(), "{report}");
    let filled: Vec<u64> = report["repair"]["filled"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["nonce"].as_u64().unwrap())
        .collect();
    assert!(!filled.is_empty(), "{report}");
    assert_eq!(report["verdict"], "in_sync", "{report}");
    confirmed.extend(&filled);
    confirmed.sort_unstable();
    let n = confirmed.len();
    confirmed.dedup();
    assert_eq!(confirmed.len(), n, "a nonce was sent twice");
    assert_eq!(count(&address, "pending"), last_used + 1);
    mine();
    assert_eq!(
        count(&address, "latest"),
        last_used + 1,
        "not everything mined"
    );
}

/// With a key in `$ATOMIC_STORE_SIGNER_KEY`, `nonce send` signs here (no
/// unlocked account on the node); a key that is not a key, or belongs to
/// another account, is refused without the key in the message.
#[test]
fn a_local_key_signs_and_never_shows() {
    let _node = one_test_at_a_time_on_the_node();
    let url = redis_url();
    let key = random_hex(32);
    let with_key = |address: &str, key: &str, count: &str| {
        send_cmd(&url, address, count)
            .env("ATOMIC_STORE_SIGNER_KEY", key)
            .output()
            .unwrap()
    };
    // The key's account, read from the refusal for another account.
    let other = format!("0x{}", random_hex(20));
    let refused = with_key(&other, &key, "1");
    assert_eq!(refused.status.code(), Some(2));
    let shown = format!(
        "{}{}",
        String::from_utf8_lossy(&refused.stdout),
        String::from_utf8_lossy(&refused.stderr)
    );
    assert!(!shown.contains(&key), "the key leaked: {shown}");
    let v = json_out(&refused);
    let message = v["error"]["message"].as_str().unwrap();
    let address = message
        .split_whitespace()
        .map(|w| w.trim_end_matches(','))
        .find(|w| w.starts_with("0x") && w.len() == 42 && !w.eq_ignore_ascii_case(&other))
        .unwrap_or_else(|| panic!("no address in {message}"))
        .to_owned();
    rpc("anvil_setBalance", json!([address, "0x56BC75E2D63100000"]));
    let sent = with_key(&address, &format!("0x{key}"), "3");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let nonces: Vec<u64> = String::from_utf8_lossy(&sent.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["nonce"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(nonces, [0, 1, 2]);
    mine();
    assert_eq!(count(&address, "latest"), 3);
    // Not a key at all.
    let junk = "not-a-key-SECRET";
    let refused = with_key(&address, junk, "1");
    assert_eq!(refused.status.code(), Some(2));
    let shown = String::from_utf8_lossy(&refused.stdout).to_string();
    assert!(
        shown.contains("ATOMIC_STORE_SIGNER_KEY is not a private key"),
        "{shown}"
    );
    assert!(!shown.contains(junk), "the key leaked: {shown}");
}

/// alloy's nonce filler backed by the store, in four processes on one
/// account: 80 transactions, every nonce distinct, all mined.
#[test]
fn four_processes_share_one_account_through_alloys_nonce_filler() {
    let _node = one_test_at_a_time_on_the_node();
    let url = redis_url();
    let address = fresh_account();
    let children: Vec<_> = (0..4)
        .map(|_| {
            send_cmd(&url, &address, "20")
                .arg("--through-filler")
                .spawn()
                .unwrap()
        })
        .collect();
    let mut nonces = Vec::new();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            nonces.push(v["nonce"].as_u64().unwrap());
        }
    }
    nonces.sort_unstable();
    assert_eq!(nonces, (0..80).collect::<Vec<u64>>());
    mine();
    assert_eq!(count(&address, "latest"), 80);
}

#[test]
fn transactions_sent_around_the_manager_are_caught_up_with() {
    let _node = one_test_at_a_time_on_the_node();
    let url = redis_url();
    let address = fresh_account();
    let first = json_out(&nonce_cmd(&url, "next", &address, &["--send-self-tx"]));
    assert_eq!(first["nonces"][0], 0);
    // Three transactions the manager never saw.
    for _ in 0..3 {
        rpc(
            "eth_sendTransaction",
            json!([{"from": address, "to": address, "value": "0x0"}]),
        );
    }
    let doctor = json_out(&nonce_cmd(&url, "doctor", &address, &[]));
    assert_eq!(doctor["verdict"], "store_behind", "{doctor}");
    let next = json_out(&nonce_cmd(&url, "next", &address, &["--send-self-tx"]));
    assert_eq!(next["nonces"][0], 4, "{next}");
    mine();
    assert_eq!(count(&address, "latest"), 5);
}

#[test]
fn rewind_and_reset_behave_as_stated() {
    let _node = one_test_at_a_time_on_the_node();
    let url = redis_url();
    let address = fresh_account();
    // Issue 20: the messages said "nonces up to 0 were handed out after 7"
    // on a fresh account, and "up to 201 … after 202" after a rewind.
    let plain = |args: &[&str]| {
        let out = Command::new(BIN)
            .env("ATOMIC_STORE_URL", &url)
            .args(["nonce", "rewind", "--rpc", &anvil(), "--chain-id", CHAIN_ID])
            .args(["--address", &address])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    assert_eq!(
        json_out(&nonce_cmd(&url, "rewind", &address, &["7"]))["outcome"],
        "not_handed_out"
    );
    assert_eq!(
        plain(&["7"]),
        "not rewound: no nonce of this account is handed out, so 7 is not; nothing to give back"
    );
    let n = json_out(&nonce_cmd(&url, "next", &address, &[]))["nonces"][0]
        .as_u64()
        .unwrap();
    assert_eq!(n, 0);
    // Never broadcast: rewinding gives it back.
    let out = nonce_cmd(&url, "rewind", &address, &["0"]);
    assert_eq!(
        (out.status.code(), json_out(&out)["outcome"].clone()),
        (Some(0), json!("rewound"))
    );
    // Rewound already: nothing to give back, and no claim of a gap.
    assert_eq!(
        plain(&["0"]),
        "not rewound: no nonce of this account is handed out, so 0 is not; nothing to give back"
    );
    assert_eq!(
        json_out(&nonce_cmd(&url, "next", &address, &[]))["nonces"][0],
        0
    );
    assert_eq!(
        json_out(&nonce_cmd(&url, "next", &address, &[]))["nonces"][0],
        1
    );
    // 0 is no longer the last one handed out: a gap, not a rewind.
    let out = nonce_cmd(&url, "rewind", &address, &["0"]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(json_out(&out)["outcome"], "gap");
    assert_eq!(
        plain(&["0"]),
        "not rewound: nonces up to 1 were handed out after 0; send a transaction with nonce 0 to fill the gap"
    );
    assert_eq!(
        plain(&["5"]),
        "not rewound: 5 is not handed out (the last one handed out is 1); nothing to give back"
    );
    let doctor = nonce_cmd(&url, "doctor", &address, &[]);
    assert_eq!(doctor.status.code(), Some(3));
    let doctor = json_out(&doctor);
    assert_eq!(doctor["verdict"], "store_ahead", "{doctor}");
    assert!(
        doctor["fix"].as_str().unwrap().contains("nonce 0"),
        "{doctor}"
    );
    // Reset to the chain with the command doctor suggests, pasted in
    // another directory (issue 20: it named no store, so it reset a new
    // ./atomic-store.db there and reported success).
    let fix = doctor["fix"].as_str().unwrap();
    let suggested = fix.split_once("run: ").unwrap().1;
    assert!(suggested.contains(&format!("--url '{url}'")), "{fix}");
    // Issue 20: reset asks first, like unlock --force; not interactive and
    // no --yes, it refuses and changes nothing.
    let refused = nonce_cmd(&url, "reset", &address, &[]);
    assert_eq!(refused.status.code(), Some(2));
    assert_eq!(
        json_out(&nonce_cmd(&url, "doctor", &address, &[]))["verdict"],
        "store_ahead"
    );
    let elsewhere = tempfile::tempdir().unwrap();
    let pasted = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "{} --json {} --yes",
            BIN,
            suggested.trim_start_matches("atomic-store ")
        ))
        .current_dir(elsewhere.path())
        .env_remove("ATOMIC_STORE_URL")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        json_out(&pasted)["last_used"],
        -1,
        "{fix}: {} {}",
        String::from_utf8_lossy(&pasted.stdout),
        String::from_utf8_lossy(&pasted.stderr)
    );
    assert!(
        std::fs::read_dir(elsewhere.path())
            .unwrap()
            .next()
            .is_none(),
        "the suggested command created a file"
    );
    // Nothing was mined, so the next nonce is 0 again.
    let again = json_out(&nonce_cmd(&url, "next", &address, &["--send-self-tx"]));
    assert_eq!(again["nonces"][0], 0);
    mine();
    assert_eq!(count(&address, "latest"), 1);
}

#[test]
fn bad_addresses_are_refused() {
    let out = nonce_cmd(
        &redis_url(),
        "doctor",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD",
        &[],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(json_out(&out)["error"]["message"]
        .as_str()
        .unwrap()
        .contains("checksum"));
    let out = nonce_cmd(&redis_url(), "doctor", "not-an-address", &[]);
    assert_eq!(out.status.code(), Some(2));
}

/// Issue 20: `--chain-id` is checked against the node's `eth_chainId`
/// before anything is sent or stored (a mismatch sent a real transaction
/// and stored its nonce under the other chain's key), and `rewind` uses
/// `--rpc`: a nonce the node already holds is not handed out again.
#[test]
fn another_chains_node_and_a_broadcast_nonce_are_refused() {
    let _node = one_test_at_a_time_on_the_node();
    let url = redis_url();
    let address = fresh_account();
    let out = Command::new(BIN)
        .env("ATOMIC_STORE_URL", &url)
        .args([
            "--json",
            "nonce",
            "next",
            "--send-self-tx",
            "--rpc",
            &anvil(),
        ])
        .args(["--chain-id", "1480", "--address", &address])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let message = json_out(&out)["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("chain 31337"), "{message}");
    assert_eq!(count(&address, "pending"), 0, "a transaction was sent");
    let stored = Command::new(BIN)
        .env("ATOMIC_STORE_URL", &url)
        .args(["--json", "keys", "--prefix", "nonce:1480:"])
        .output()
        .unwrap();
    assert_eq!(json_out(&stored)["count"], 0, "a nonce was stored");

    let sent = json_out(&nonce_cmd(&url, "next", &address, &["--send-self-tx"]));
    assert_eq!(sent["nonces"][0], 0);
    let out = nonce_cmd(&url, "rewind", &address, &["0"]);
    assert_eq!(
        (out.status.code(), json_out(&out)["outcome"].clone()),
        (Some(3), json!("broadcast"))
    );
    let next = json_out(&nonce_cmd(&url, "next", &address, &[]));
    assert_eq!(next["nonces"][0], 1, "nonce 0 was handed out twice");
    mine();
}
