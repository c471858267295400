//! `incr` on the embedded stores next to a raw baseline, in the same run:
//! memory against a bare `Mutex<HashMap>`, SQLite against a raw rusqlite loop
//! with the same pragmas and the same transaction.
//!
//! Run: `cargo bench -p atomic-store --bench incr`

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use atomic_store::memory::MemoryStore;
use atomic_store::sqlite::{SqliteConfig, SqliteStore};
use atomic_store::AtomicStore;
use criterion::{criterion_group, criterion_main, Criterion};
use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

fn memory(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("incr/memory");
    let raw: Mutex<HashMap<String, i64>> = Mutex::new(HashMap::new());
    group.bench_function("baseline Mutex<HashMap>", |b| {
        b.iter(|| {
            let mut map = raw.lock().unwrap();
            let v = map.entry("atomic:counter".to_owned()).or_insert(0);
            *v += 1;
            *v
        })
    });
    let store = MemoryStore::new();
    group.bench_function("MemoryStore", |b| {
        b.to_async(&rt).iter(|| store.incr("counter"))
    });
    group.finish();
}

fn raw_sqlite(path: &std::path::Path, synchronous: &str) -> Connection {
    let conn = Connection::open(path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |_| Ok(()))
        .unwrap();
    conn.pragma_update(None, "synchronous", synchronous)
        .unwrap();
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, expires_at INTEGER) WITHOUT ROWID",
    )
    .unwrap();
    conn
}

fn raw_incr(conn: &mut Connection) -> i64 {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .unwrap();
    let current: Option<(String, Option<i64>)> = tx
        .prepare_cached("SELECT value, expires_at FROM kv WHERE key = ?1 AND (expires_at IS NULL OR expires_at > ?2)")
        .unwrap()
        .query_row(params!["atomic:counter", 0i64], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()
        .unwrap();
    let next = current
        .as_ref()
        .map_or(0, |(v, _)| v.parse::<i64>().unwrap())
        + 1;
    tx.prepare_cached(
        "INSERT INTO kv (key, value, expires_at) VALUES (?1, ?2, ?3)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at",
    )
    .unwrap()
    .execute(params![
        "atomic:counter",
        next.to_string(),
        current.and_then(|(_, e)| e)
    ])
    .unwrap();
    tx.commit().unwrap();
    next
}

fn sqlite(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    for (label, synchronous) in [
        ("synchronous=normal", "NORMAL"),
        ("synchronous=full", "FULL"),
    ] {
        let mut group = c.benchmark_group(format!("incr/sqlite {label}"));
        let mut conn = raw_sqlite(
            &dir.path().join(format!("raw-{synchronous}.db")),
            synchronous,
        );
        group.bench_function("baseline raw rusqlite", |b| b.iter(|| raw_incr(&mut conn)));
        let mut config = SqliteConfig::new(dir.path().join(format!("store-{synchronous}.db")));
        config.synchronous_full = synchronous == "FULL";
        let store = SqliteStore::open(config).unwrap();
        group.bench_function("SqliteStore", |b| {
            b.to_async(&rt).iter(|| store.incr("counter"))
        });
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().measurement_time(Duration::from_secs(3)).warm_up_time(Duration::from_secs(1));
    targets = memory, sqlite
}
criterion_main!(benches);
