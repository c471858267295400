//! The real binary against the PostgreSQL server `scripts/test` starts.
#![cfg(feature = "postgres")]

use std::process::Command;

mod support;

use support::{bench_reports_one_raw_baseline, json, run_env, run_together, unique, url};

fn pg_url() -> String {
    url("ATOMIC_STORE_TEST_POSTGRES_URL")
}

/// 8 processes open the store at once against a schema that does not exist
/// yet: no error, and one schema with its four tables (values, fencing
/// counters, metadata, lock queue) and the lock queue's three functions.
#[test]
fn eight_processes_starting_together_create_one_schema() {
    let schema = unique("race");
    let url = format!("{}&schema={schema}", pg_url());
    let outputs = run_together(8, &url, &["--json", "incr", "counter"]);
    let mut values: Vec<i64> = outputs
        .iter()
        .map(|o| {
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
            json(o)["value"].as_i64().unwrap()
        })
        .collect();
    values.sort_unstable();
    assert_eq!(values, (1..=8).collect::<Vec<i64>>());
    let base = pg_url();
    let psql_url = base.split('?').next().unwrap();
    let count = |sql: String| {
        let out = Command::new("psql")
            .arg(psql_url)
            .args(["-tAc", &sql])
            .output()
            .expect("psql (postgresql-client) is needed");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    };
    let tables = count(format!(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}'"
    ));
    assert_eq!(tables, "4");
    let functions = count(format!(
        "SELECT count(*) FROM pg_proc WHERE pronamespace = '{schema}'::regnamespace"
    ));
    assert_eq!(functions, "3");
}

#[test]
fn eight_processes_assign_nonces_through_one_database_without_duplicates() {
    support::eight_processes_assign_nonces(&pg_url(), 40);
}

#[test]
fn bench_with_pgbench_baseline_and_verify() {
    let baseline = bench_reports_one_raw_baseline(&pg_url(), "incr");
    assert!(baseline["name"].as_str().unwrap().starts_with("pgbench"));

    let out = run_env(&pg_url(), &["verify"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && !stdout.contains("FAIL"), "{stdout}");
}

fn psql(sql: &str) -> String {
    let base = pg_url();
    let out = Command::new("psql")
        .arg(base.split('?').next().unwrap())
        .args(["-tAc", sql])
        .output()
        .expect("psql (postgresql-client) is needed");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Issue 12 item 11: `verify` removes everything it created, fencing
/// counters included, from a schema of its own.
#[test]
fn verify_leaves_no_rows_behind_on_postgres() {
    let schema = unique("verify_cleanup");
    support::verify_report(&format!("{}&schema={schema}", pg_url()));
    let left = psql(&format!(
        "SELECT string_agg(key, ', ') FROM (SELECT key FROM {schema}.atomic_store \
         UNION ALL SELECT key FROM {schema}.atomic_store_fence) rows"
    ));
    psql(&format!("DROP SCHEMA {schema} CASCADE"));
    assert_eq!(left, "", "verify left rows behind");
}

#[test]
fn lock_contended_bench_across_processes_on_postgres() {
    support::lock_contended_across_processes(&pg_url());
}

#[test]
fn permits_contended_bench_across_processes_on_postgres() {
    support::permits_contended_across_processes(&pg_url());
}

#[test]
fn a_missing_database_or_role_is_a_configuration_error() {
    let base = pg_url();
    let (head, tail) = base.rsplit_once('/').unwrap();
    let (_, query) = tail.split_once('?').unwrap_or((tail, ""));
    let no_db = format!("{head}/no_such_db_{}?{query}", std::process::id());
    support::refused_settings_are_a_configuration_error(&no_db, "does not exist");
    let no_role = base.replacen("://postgres@", "://no_such_role@", 1);
    assert_ne!(no_role, base, "the test URL names no user");
    support::refused_settings_are_a_configuration_error(
        &no_role,
        "role \"no_such_role\" does not exist",
    );
}
