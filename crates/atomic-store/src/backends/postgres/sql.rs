//! The SQL of the PostgreSQL backend. Every operation is one statement, so
//! one round trip.
//!
//! Every statement reads the server's clock once, in the `clock` CTE, and
//! uses that one value everywhere (expiry checks and new expiry times):
//! `clock_timestamp()` read twice in one statement could see a key alive
//! and then expired, and mix both answers in one write. The CTE holds a
//! volatile function, so PostgreSQL evaluates it once, on first use (after
//! any row lock the statement waited for). `now()` would be the start of
//! the transaction, stale inside a long one.
//!
//! `{t}` is the quoted, schema-qualified value table and `{f}` the fencing
//! table. A row is live when it has not expired.

/// Fill `{t}` and `{f}` into a statement.
pub fn render(sql: &str, table: &str, fence: &str) -> String {
    sql.replace("{t}", table).replace("{f}", fence)
}

/// The one clock read of a statement; `{NOW}` refers to it.
const CLOCK: &str = "clock AS (SELECT clock_timestamp() AS ts)";
const NOW: &str = "(SELECT ts FROM clock)";
const LIVE: &str = "(t.expires_at IS NULL OR t.expires_at > (SELECT ts FROM clock))";

/// `body` with the `clock` CTE in front; `ctes` are the statement's own.
fn with_clock(ctes: &str, body: &str) -> String {
    if ctes.is_empty() {
        format!("WITH {CLOCK}\n{body}")
    } else {
        format!("WITH {CLOCK},\n{ctes}\n{body}")
    }
}

/// The canonical integer format (`0|-?[1-9][0-9]*`), checked before a cast so `' 1'` or `'01'`
/// are refused as on every backend. A value that is not one is replaced by
/// `'x'`, whose cast raises `invalid_text_representation` (22P02) and aborts
/// the statement: the row is left unchanged.
fn checked_counter(expr: &str) -> String {
    format!(
        "(CASE WHEN {expr} ~ '^(0|-?[1-9][0-9]*)$' AND length({expr}) <= 20 \
         AND {expr}::numeric BETWEEN -9223372036854775808 AND 9223372036854775807 \
         THEN {expr} ELSE 'x' END)::bigint"
    )
}

pub fn schema(table: &str, fence: &str, meta: &str, expiry_index: &str) -> String {
    format!(
        "CREATE TABLE IF NOT EXISTS {table} (
             key        text PRIMARY KEY,
             value      text NOT NULL,
             expires_at timestamptz
         );
         CREATE INDEX IF NOT EXISTS {expiry_index} ON {table} (expires_at) WHERE expires_at IS NOT NULL;
         CREATE TABLE IF NOT EXISTS {fence} (
             key   text PRIMARY KEY,
             token bigint NOT NULL
         );
         CREATE TABLE IF NOT EXISTS {meta} (
             name  text PRIMARY KEY,
             value text NOT NULL
         );"
    )
}

/// `incr`: +1 on a live integer (keeping its TTL), 1 on a missing or expired
/// key. Overflow of `+ 1` raises 22003.
pub fn incr() -> String {
    with_clock(
        "",
        &format!(
            "INSERT INTO {{t}} AS t (key, value) VALUES ($1, '1')
             ON CONFLICT (key) DO UPDATE SET
               value = (CASE WHEN {LIVE} THEN {n} + 1 ELSE 1 END)::text,
               expires_at = CASE WHEN {LIVE} THEN t.expires_at END
             RETURNING value::bigint",
            n = checked_counter("t.value")
        ),
    )
}

/// `assign_nonce` with `$2` = pending: the original SDK's rule.
pub fn assign_nonce() -> String {
    let last = format!(
        "(CASE WHEN {LIVE} THEN {} ELSE -1 END)",
        checked_counter("t.value")
    );
    with_clock(
        "",
        &format!(
            "INSERT INTO {{t}} AS t (key, value) VALUES ($1, $2::text)
             ON CONFLICT (key) DO UPDATE SET
               value = (CASE WHEN $2 > {last} + 1 OR {last} + 1 - $2 > 500 THEN $2 ELSE {last} + 1 END)::text,
               expires_at = CASE WHEN {LIVE} THEN t.expires_at END
             RETURNING value::bigint"
        ),
    )
}

/// `acquire_lock` with `$2` = id, `$3` = ttl in ms: take a missing or expired
/// key and bump its fencing counter in the same statement. No row: held.
pub fn acquire_lock() -> String {
    with_clock(
        &format!(
            "taken AS (
               INSERT INTO {{t}} AS t (key, value, expires_at)
               VALUES ($1, $2, {NOW} + $3::float8 * interval '1 millisecond')
               ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
               WHERE NOT {LIVE}
               RETURNING key
             )"
        ),
        "INSERT INTO {f} AS f (key, token) SELECT key, 1 FROM taken
         ON CONFLICT (key) DO UPDATE SET token = f.token + 1
         RETURNING token",
    )
}

/// `release_lock` with `$2` = id: 1 released, 0 not held, 2 held by another.
pub fn release_lock() -> String {
    with_clock(
        &format!(
            "gone AS (DELETE FROM {{t}} AS t WHERE key = $1 AND value = $2 AND {LIVE} RETURNING 1)"
        ),
        &format!(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM gone) THEN 1
                         WHEN EXISTS (SELECT 1 FROM {{t}} AS t WHERE key = $1 AND {LIVE}) THEN 2
                         ELSE 0 END::bigint"
        ),
    )
}

/// `extend_lock` with `$2` = id, `$3` = ttl in ms: 1 extended, 0, 2 as above.
pub fn extend_lock() -> String {
    with_clock(
        &format!(
            "kept AS (
               UPDATE {{t}} AS t SET expires_at = {NOW} + $3::float8 * interval '1 millisecond'
               WHERE key = $1 AND value = $2 AND {LIVE} RETURNING 1
             )"
        ),
        &format!(
            "SELECT CASE WHEN EXISTS (SELECT 1 FROM kept) THEN 1
                         WHEN EXISTS (SELECT 1 FROM {{t}} AS t WHERE key = $1 AND {LIVE}) THEN 2
                         ELSE 0 END::bigint"
        ),
    )
}

pub fn get() -> String {
    with_clock(
        "",
        &format!("SELECT value FROM {{t}} AS t WHERE key = $1 AND {LIVE}"),
    )
}

/// `set` / `set_with_ttl` with `$3` = ttl in ms or NULL.
pub fn set() -> String {
    with_clock(
        "",
        &format!(
            "INSERT INTO {{t}} (key, value, expires_at)
             VALUES ($1, $2, {NOW} + $3::float8 * interval '1 millisecond')
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at"
        ),
    )
}

/// `delete`: whether a live row was removed.
pub fn delete() -> String {
    with_clock(
        "",
        &format!("DELETE FROM {{t}} AS t WHERE key = $1 RETURNING {LIVE}"),
    )
}

/// `compare_and_set` expecting absence: `$3` = ttl in ms or NULL.
pub fn set_if_absent() -> String {
    with_clock(
        "",
        &format!(
            "INSERT INTO {{t}} AS t (key, value, expires_at)
             VALUES ($1, $2, {NOW} + $3::float8 * interval '1 millisecond')
             ON CONFLICT (key) DO UPDATE SET value = excluded.value, expires_at = excluded.expires_at
             WHERE NOT {LIVE}
             RETURNING 1"
        ),
    )
}

/// `compare_and_set` expecting `$4`.
pub fn set_if_equal() -> String {
    with_clock(
        "",
        &format!(
            "UPDATE {{t}} AS t SET value = $2, expires_at = {NOW} + $3::float8 * interval '1 millisecond'
             WHERE key = $1 AND value = $4 AND {LIVE}
             RETURNING 1"
        ),
    )
}

/// One bounded batch of expired rows; `SKIP LOCKED` keeps concurrent
/// purgers (one per instance) out of each other's way.
pub fn purge_expired() -> String {
    with_clock(
        "",
        &format!(
            "DELETE FROM {{t}} WHERE ctid IN (
               SELECT ctid FROM {{t}}
               WHERE expires_at IS NOT NULL AND expires_at <= {NOW}
               LIMIT $1 FOR UPDATE SKIP LOCKED)"
        ),
    )
}

/// `purge`: the key's row and its fencing counter. No clock: expired or
/// not, both go.
pub fn purge() -> String {
    "WITH gone AS (DELETE FROM {t} WHERE key = $1) DELETE FROM {f} WHERE key = $1".to_owned()
}

/// `inspect`: value, milliseconds left, last fencing token.
pub fn inspect() -> String {
    with_clock(
        "",
        &format!(
            "SELECT (SELECT value FROM {{t}} AS t WHERE key = $1 AND {LIVE}),
                    (SELECT (extract(epoch FROM (t.expires_at - {NOW})) * 1000)::bigint
                       FROM {{t}} AS t WHERE key = $1 AND {LIVE}),
                    (SELECT token FROM {{f}} WHERE key = $1)"
        ),
    )
}

/// `keys`: live keys starting with `$1`, at most `$2`.
pub fn keys() -> String {
    with_clock(
        "",
        &format!(
            "SELECT key FROM {{t}} AS t WHERE starts_with(key, $1) AND {LIVE} ORDER BY key LIMIT $2"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every statement, rendered as the store sends it.
    fn statements() -> Vec<(&'static str, String)> {
        vec![
            ("incr", incr()),
            ("assign_nonce", assign_nonce()),
            ("acquire_lock", acquire_lock()),
            ("release_lock", release_lock()),
            ("extend_lock", extend_lock()),
            ("get", get()),
            ("set", set()),
            ("delete", delete()),
            ("set_if_absent", set_if_absent()),
            ("set_if_equal", set_if_equal()),
            ("purge_expired", purge_expired()),
            ("inspect", inspect()),
            ("keys", keys()),
        ]
    }

    #[test]
    fn every_statement_names_the_clock_once() {
        // The server-side proof (a clock that moves on every read) is in
        // tests/postgres.rs; this catches a second read at compile-test time.
        for (name, sql) in statements() {
            let sql = render(&sql, "s.t", "s.f");
            assert_eq!(sql.matches("clock_timestamp()").count(), 1, "{name}: {sql}");
            for other in [
                "now()",
                "statement_timestamp()",
                "transaction_timestamp()",
                "current_timestamp",
                "localtimestamp",
            ] {
                assert!(!sql.to_lowercase().contains(other), "{name} reads {other}");
            }
        }
    }
}
