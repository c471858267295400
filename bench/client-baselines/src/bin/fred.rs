//! `INCR` from N tasks, each on its own key, on one current-thread runtime through one fred
//! client, the way a bench worker of atomic-store runs: fred pipelines on
//! its own. Usage: fred URL [TASKS] [SECONDS] [TIMEOUT_MS]
//! (TIMEOUT_MS 0, the default, sets no timeout per command).
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fred::prelude::*;

fn main() -> Result<(), Error> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
    let tasks: u32 = args
        .next()
        .map_or(64, |a| a.parse().expect("TASKS is a number"));
    let seconds: u64 = args
        .next()
        .map_or(3, |a| a.parse().expect("SECONDS is a number"));
    let timeout_ms: u64 = args
        .next()
        .map_or(0, |a| a.parse().expect("TIMEOUT_MS is a number"));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = Builder::from_config(Config::from_url(&url)?)
            .with_performance_config(|p| {
                p.default_command_timeout = Duration::from_millis(timeout_ms)
            })
            .build()?;
        client.init().await?;
        // A key per task, as the store's `incr-many` workload does.
        let keys: Vec<String> = (0..tasks)
            .map(|t| format!("bench:fred:{}:{t}", std::process::id()))
            .collect();
        let done = Arc::new(AtomicU64::new(0));
        let deadline = Instant::now() + Duration::from_secs(seconds);
        let started = Instant::now();
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (client, key, done) = (client.clone(), keys[t as usize].clone(), Arc::clone(&done));
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let _: i64 = client.incr(&key).await.expect("INCR");
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.await.expect("task");
        }
        let elapsed = started.elapsed().as_secs_f64();
        let ops = done.load(Ordering::Relaxed);
        let mut stored = 0;
        for key in &keys {
            stored += client.get::<Option<u64>, _>(key).await?.unwrap_or(0);
            let _: i64 = client.del(key).await?;
        }
        assert_eq!(stored, ops, "every INCR counted once");
        println!(
            "fred INCR x{tasks} tasks, 1 client, 1 thread, timeout {timeout_ms} ms: {ops} ops in {elapsed:.2} s, {:.0} ops/s",
            ops as f64 / elapsed
        );
        Ok(())
    })
}
