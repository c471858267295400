//! A build without a backend's cargo feature refuses that backend's URLs
//! with `feature_disabled` and names the feature to enable. Every feature
//! is on in the main test run, where this file is empty; it runs against
//! the default build (`cargo test -p atomic-store-cli --test features_off`,
//! which `scripts/test` runs in release mode next to the default build it
//! already makes).
#![cfg(not(all(feature = "redis", feature = "nonce")))]

mod support;

use support::{code, json, run};

#[cfg(not(feature = "redis"))]
#[test]
fn a_backend_left_out_of_the_build_is_refused_by_name() {
    let url = "redis://127.0.0.1:1";
    let out = run(url, &["--json", "get", "k"]);
    assert_eq!(code(&out), 1);
    let error = &json(&out)["error"];
    assert_eq!(error["kind"], "feature_disabled", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("cargo feature `redis`"),
        "{error}"
    );
    let out = run(url, &["get", "k"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("hint: rebuild atomic-store-cli with the cargo feature the message names"),
        "{stderr}"
    );
    // bench and verify open the store the same way.
    for args in [
        &["--json", "verify"][..],
        &["--json", "bench", "--duration", "100ms"],
    ] {
        let out = run(url, args);
        assert_eq!(code(&out), 1, "{args:?}");
        assert_eq!(json(&out)["error"]["kind"], "feature_disabled", "{args:?}");
    }
}

#[cfg(not(feature = "nonce"))]
#[test]
fn the_nonce_manager_left_out_of_the_build_is_refused_by_name() {
    let out = run(
        "memory://",
        &[
            "--json",
            "nonce",
            "doctor",
            "--rpc",
            "http://127.0.0.1:1",
            "--chain-id",
            "1",
            "--address",
            "0x70997970c51812dc3a010c7d01b50e0d17dc79c8",
        ],
    );
    assert_eq!(code(&out), 1);
    let error = &json(&out)["error"];
    assert_eq!(error["kind"], "feature_disabled", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("cargo feature `nonce`"),
        "{error}"
    );
}
