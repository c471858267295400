//! `INCR` from N tasks, each on its own key, on one current-thread runtime through one redis-rs
//! multiplexed connection (its default config), as `atomic-store bench
//! --baseline` runs redis-rs alone, but as a process of its own.
//! Usage: redis-rs URL [TASKS] [SECONDS]
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn main() -> redis::RedisResult<()> {
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
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let client = redis::Client::open(url.as_str())?;
        let conn = client.get_multiplexed_async_connection().await?;
        // A key per task, as the store's `incr-many` workload does.
        let keys: Vec<String> = (0..tasks)
            .map(|t| format!("bench:redis-rs:{}:{t}", std::process::id()))
            .collect();
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let deadline = started + Duration::from_secs(seconds);
        let handles: Vec<_> = (0..tasks)
            .map(|t| {
                let (conn, key, done) = (conn.clone(), keys[t as usize].clone(), Arc::clone(&done));
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let mut conn = conn.clone();
                        let mut cmd = redis::cmd("INCR");
                        cmd.arg(&key);
                        cmd.query_async::<redis::Value>(&mut conn).await.expect("INCR");
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
        let mut conn = conn.clone();
        let mut stored = 0;
        for key in &keys {
            let n: Option<u64> = redis::cmd("GET").arg(key).query_async(&mut conn).await?;
            stored += n.unwrap_or(0);
            let _: i64 = redis::cmd("DEL").arg(key).query_async(&mut conn).await?;
        }
        assert_eq!(stored, ops, "every INCR counted once");
        println!(
            "redis-rs INCR x{tasks} tasks, 1 connection, 1 thread: {ops} ops in {elapsed:.2} s, {:.0} ops/s",
            ops as f64 / elapsed
        );
        Ok(())
    })
}
