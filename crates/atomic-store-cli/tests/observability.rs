//! What an operator sees: spans on stderr through RUST_LOG, and a
//! Prometheus endpoint that adds up the bench workers' metrics.

mod support;

use support::{code, command, sqlite_url};

#[test]
fn rust_log_prints_the_operation_span_with_its_fields() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("{}?prefix=ops", sqlite_url(&dir));
    let out = command(&url)
        .env("RUST_LOG", "atomic_store=debug")
        .args(["incr", "visits"])
        .output()
        .unwrap();
    assert_eq!(code(&out), 0);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let line = stderr
        .lines()
        .find(|l| l.contains(" incr{"))
        .unwrap_or_else(|| panic!("no incr span on stderr: {stderr}"));
    for field in [
        "db.system.name=\"sqlite\"",
        "db.operation.name=\"incr\"",
        "db.namespace=\"ops\"",
        "otel.kind=\"client\"",
        "outcome=\"ok\"",
    ] {
        assert!(line.contains(field), "{field} missing: {line}");
    }
    assert!(!stderr.contains("visits"), "keys are not logged: {stderr}");

    // Without RUST_LOG, nothing but the command's own output.
    let out = command(&url).args(["incr", "visits"]).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stderr), "");
}

/// `--metrics-listen`, in builds with the `metrics` feature.
#[cfg(feature = "metrics")]
mod metrics {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::time::{Duration, Instant};

    use super::support::{code, command, json, sqlite_url};

    #[test]
    fn an_address_in_use_is_a_clear_error() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap().to_string();
        let dir = tempfile::tempdir().unwrap();
        let out = command(&sqlite_url(&dir))
            .args(["--json", "--metrics-listen", &addr, "incr", "k"])
            .output()
            .unwrap();
        assert_eq!(code(&out), 1);
        let message = json(&out)["error"]["message"].as_str().unwrap().to_owned();
        assert!(
            message.contains(&format!("cannot serve metrics on {addr}")),
            "{message}"
        );
    }

    /// `GET /metrics`, or `None` while nothing answers.
    fn scrape(addr: &str) -> Option<String> {
        let mut stream = TcpStream::connect(addr).ok()?;
        stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .ok()?;
        let mut body = String::new();
        stream.read_to_string(&mut body).ok()?;
        body.starts_with("HTTP/1.1 200").then_some(body)
    }

    /// The value of the sample line `name{labels…}` whose labels include all
    /// of `with`.
    fn sample(text: &str, name: &str, with: &[&str]) -> Option<f64> {
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| l.rsplit_once(' '))
            .filter(|(series, _)| {
                series.split('{').next() == Some(name) && with.iter().all(|w| series.contains(w))
            })
            .map(|(_, value)| value.parse::<f64>().unwrap())
            .reduce(|a, b| a + b)
    }

    #[test]
    fn bench_serves_the_workers_metrics_added_up() {
        let addr = {
            let free = TcpListener::bind("127.0.0.1:0").unwrap();
            free.local_addr().unwrap().to_string()
        };
        let dir = tempfile::tempdir().unwrap();
        let bench = command(&sqlite_url(&dir))
            .args([
                "--json",
                "--metrics-listen",
                &addr,
                "bench",
                "--processes",
                "2",
            ])
            .args(["--concurrency", "2", "--duration", "4s"])
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut bench = bench;
        let mut last = None;
        let started = Instant::now();
        // Scrape until the run ends (a failed scrape on a busy machine is
        // tried again).
        while bench.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(60) {
            if let Some(text) = scrape(&addr) {
                last = Some(text);
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        let out = bench.wait_with_output().unwrap();
        assert_eq!(code(&out), 0, "{}", String::from_utf8_lossy(&out.stderr));
        let report = json(&out);
        let text = last.expect("/metrics answered during the run");

        let incr = [
            r#"operation="incr""#,
            r#"outcome="ok""#,
            r#"backend="sqlite""#,
        ];
        let count = sample(
            &text,
            "atomic_store_operation_duration_seconds_count",
            &incr,
        )
        .unwrap();
        let inf = [&incr[..], &[r#"le="+Inf""#]].concat();
        let in_buckets = sample(
            &text,
            "atomic_store_operation_duration_seconds_bucket",
            &inf,
        )
        .unwrap();
        let sum = sample(&text, "atomic_store_operation_duration_seconds_sum", &incr).unwrap();
        assert!(count > 0.0, "{text}");
        assert_eq!(count, in_buckets, "{text}");
        assert!(sum > 0.0 && sum / count < 1.0, "mean {} s", sum / count);
        // Only the workers increment: the last scrape saw at most what they
        // reported, and (relayed every 250 ms, scraped every 200 ms) most of
        // it: more than any one worker did, so both were relayed.
        let ops = report["ops"].as_f64().unwrap();
        assert!(count <= ops, "{count} counted, {ops} done");
        let wall = report["duration_s"].as_f64().unwrap();
        let busiest = report["per_process_ops_per_sec"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r.as_f64().unwrap() * wall)
            .fold(0.0, f64::max);
        assert!(
            count > busiest,
            "{count} counted; one worker did {busiest}: were both relayed?"
        );
    }
}
