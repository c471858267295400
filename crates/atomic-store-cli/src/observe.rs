//! Logs on stderr (`RUST_LOG`), and metrics over HTTP (`--metrics-listen`),
//! with the bench workers' metrics relayed to the parent's endpoint.

use std::net::SocketAddr;

use tracing_subscriber::EnvFilter;

/// Print spans and events on stderr as `RUST_LOG` asks (default: warnings).
/// A span is printed when it closes, with every field it recorded.
pub fn init_tracing() {
    use std::io::IsTerminal;
    use tracing_subscriber::fmt::format::FmtSpan;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_span_events(FmtSpan::CLOSE)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}

/// Serve Prometheus metrics at `http://ADDR/metrics` from a thread of the
/// exporter's own, for as long as the process runs.
#[cfg(feature = "metrics")]
pub fn serve_metrics(addr: SocketAddr) -> Result<(), String> {
    use atomic_store::observe::names::{self, DURATION_BUCKETS, LOCK_BUCKETS};
    use metrics_exporter_prometheus::{Matcher, PrometheusBuilder};
    let buckets = |builder: PrometheusBuilder, name: &str, values: &[f64]| {
        builder.set_buckets_for_metric(Matcher::Full(name.to_owned()), values)
    };
    let builder = PrometheusBuilder::new().with_http_listener(addr);
    let builder = buckets(builder, names::OPERATION_DURATION, DURATION_BUCKETS)
        .and_then(|b| buckets(b, names::LOCK_WAIT, LOCK_BUCKETS))
        .and_then(|b| buckets(b, names::LOCK_HELD, LOCK_BUCKETS))
        .map_err(|e| e.to_string())?;
    builder
        .install()
        .map_err(|e| format!("cannot serve metrics on {addr}: {e}"))?;
    names::describe();
    Ok(())
}

/// The error of a build without the `metrics` feature.
#[cfg(not(feature = "metrics"))]
pub const NO_METRICS: &str =
    "this build has no metrics: build atomic-store-cli with its `metrics` feature";

#[cfg(not(feature = "metrics"))]
pub fn serve_metrics(_addr: SocketAddr) -> Result<(), String> {
    Err(NO_METRICS.into())
}

#[cfg(feature = "metrics")]
pub use relay::{relay_lines, replay, start_relaying, Relayed};

/// A bench worker's metrics, sent to the parent on its stdout as JSON
/// lines of deltas, and added into the parent's recorder. A histogram goes
/// as (mean, count) per bucket: the bucket counts and the sum stay exact,
/// and the line stays short at any rate.
#[cfg(feature = "metrics")]
mod relay {
    use atomic_store::observe::names;
    use metrics::Label;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};
    use serde::{Deserialize, Serialize};

    /// One metric's change since the last line.
    #[derive(Debug, Serialize, Deserialize)]
    pub struct Relayed {
        name: String,
        labels: Vec<(String, String)>,
        #[serde(default, skip_serializing_if = "is_zero")]
        counter: u64,
        /// (mean, count) of the samples in each bucket that had any.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        samples: Vec<(f64, u64)>,
    }

    fn is_zero(n: &u64) -> bool {
        *n == 0
    }

    /// In a worker: record into a draining recorder from now on.
    pub fn start_relaying() -> Result<Snapshotter, String> {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder
            .install()
            .map_err(|e| format!("cannot record metrics: {e}"))?;
        Ok(snapshotter)
    }

    /// What changed since the last call.
    pub fn relay_lines(snapshotter: &Snapshotter) -> Vec<Relayed> {
        let mut out = Vec::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let name = key.key().name().to_owned();
            let labels = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            let (counter, samples) = match value {
                DebugValue::Counter(0) => continue,
                DebugValue::Counter(n) => (n, Vec::new()),
                DebugValue::Histogram(values) if values.is_empty() => continue,
                DebugValue::Histogram(values) => {
                    let bounds = if name == names::OPERATION_DURATION {
                        names::DURATION_BUCKETS
                    } else {
                        names::LOCK_BUCKETS
                    };
                    let mut sums = vec![(0.0, 0u64); bounds.len() + 1];
                    for v in values {
                        let i = bounds.partition_point(|b| *b < v.0);
                        sums[i].0 += v.0;
                        sums[i].1 += 1;
                    }
                    // The mean, kept inside its bucket against rounding
                    // (`le` bounds are inclusive).
                    let samples = sums
                        .into_iter()
                        .enumerate()
                        .filter(|(_, (_, n))| *n > 0)
                        .map(|(i, (sum, n))| {
                            let mut mean = sum / n as f64;
                            if let Some(upper) = bounds.get(i) {
                                mean = mean.min(*upper);
                            }
                            if let Some(lower) = i.checked_sub(1).map(|j| bounds[j]) {
                                if mean <= lower {
                                    mean = f64::from_bits(lower.to_bits() + 1);
                                }
                            }
                            (mean, n)
                        })
                        .collect();
                    (0, samples)
                }
                DebugValue::Gauge(_) => continue,
            };
            out.push(Relayed {
                name,
                labels,
                counter,
                samples,
            });
        }
        out
    }

    /// In the parent: add a worker's changes to this process's metrics.
    pub fn replay(metrics: Vec<Relayed>) {
        for m in metrics {
            let labels: Vec<Label> = m
                .labels
                .into_iter()
                .map(|(k, v)| Label::new(k, v))
                .collect();
            if m.counter > 0 {
                metrics::counter!(m.name.clone(), labels.clone()).increment(m.counter);
            }
            if !m.samples.is_empty() {
                let histogram = metrics::histogram!(m.name, labels);
                for (mean, count) in m.samples {
                    histogram.record_many(mean, count as usize);
                }
            }
        }
    }
}
