//! The tracing layer's cost on the fastest store, measured A/B: rounds of
//! `incr` on the bare store and on the traced one alternate, so that a
//! noisy machine slows both alike, and the median ratio of the rounds is
//! the figure.
//!
//! Run: `cargo bench -p atomic-store --bench layer` (add `--features
//! metrics` for the layer with metrics on and no recorder installed).

use std::sync::Arc;
use std::time::Instant;

use atomic_store::observe::TracingLayer;
use atomic_store::AtomicStore;

const ROUNDS: usize = 201;
const CALLS: usize = 20_000;

/// Nanoseconds per `incr` over one round.
async fn round(store: &Arc<dyn AtomicStore>) -> f64 {
    let started = Instant::now();
    for _ in 0..CALLS {
        std::hint::black_box(store.incr("counter").await.unwrap());
    }
    started.elapsed().as_nanos() as f64 / CALLS as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// The median of `traced / bare` over the rounds, and the median times.
async fn compare(bare: &Arc<dyn AtomicStore>, traced: &Arc<dyn AtomicStore>) -> (f64, f64, f64) {
    let (mut ratios, mut a, mut b) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let (x, y) = if i % 2 == 0 {
            let x = round(bare).await;
            (x, round(traced).await)
        } else {
            let y = round(traced).await;
            (round(bare).await, y)
        };
        ratios.push(y / x);
        a.push(x);
        b.push(y);
    }
    (median(ratios), median(a), median(b))
}

fn main() {
    // `cargo bench` passes `--bench`; a `cargo test` run passes nothing and
    // only checks that this compiles.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let bare = atomic_store::open_with("memory://", None).unwrap();
        let layer = TracingLayer::new();
        #[cfg(feature = "metrics")]
        let layer = layer.metrics(false);
        let traced = atomic_store::open_with("memory://", Some(&layer)).unwrap();
        for _ in 0..3 {
            round(&bare).await;
            round(&traced).await;
        }
        println!(
            "workload: incr on one key of memory://, 1 task, {ROUNDS} alternating rounds of {CALLS} calls"
        );
        let report = |what: &str, (ratio, bare, traced): (f64, f64, f64)| {
            println!(
                "{what:<44} bare {bare:>6.1} ns  traced {traced:>6.1} ns  median ratio {ratio:.3}"
            );
        };
        report("layer, no subscriber", compare(&bare, &traced).await);
        #[cfg(feature = "metrics")]
        {
            let measured = atomic_store::open("memory://").unwrap();
            report(
                "layer with metrics, no recorder",
                compare(&bare, &measured).await,
            );
        }
        let warn_only = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(std::io::sink)
            .finish();
        let _default = tracing::subscriber::set_default(warn_only);
        report(
            "layer, a subscriber taking warnings only",
            compare(&bare, &traced).await,
        );
    });
}
