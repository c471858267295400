//! The statements, one per operation, each atomic on its own under InnoDB's
//! row locks. `LAST_INSERT_ID(x)` returns `x` in the OK packet, so a write
//! reports its result without a second round trip; it is unsigned, so
//! counters pass through `CAST(… AS SIGNED)` and are read back `as i64`.
//! Every argument of `LAST_INSERT_ID` is a parameter or reads the row:
//! MariaDB folds a constant one when it prepares the statement, so it
//! would not run when its branch does. And its value is always used
//! (`fence + LEAST(LAST_INSERT_ID(x), 0)`, never `LAST_INSERT_ID(x) IS
//! NULL`): MySQL 8 skips evaluating `x IS NULL` when `x` cannot be NULL.
//! `NOW(3)` is the statement's start time on the server's clock, in a UTC
//! session. Every `ON DUPLICATE KEY UPDATE` assigns `expires_at` last, so
//! each condition before it still sees the row's old expiry.

/// `t` stands for the quoted table name until [`render`].
pub(super) fn render(sql: &str, table: &str) -> String {
    sql.replace("{t}", table)
        .replace("{live}", "(expires_at IS NULL OR expires_at > NOW(3))")
        .replace("{dead}", "'1000-01-01 00:00:00'")
        .replace("{exp}", "NOW(3) + INTERVAL ? MICROSECOND")
        // True only for a canonical decimal i64: refuses `01`, `+1`, ` 1`,
        // `1e3`, `''`, text, and anything past the i64 range (clipped).
        .replace("{is_int}", "(CAST(CAST(v AS SIGNED) AS CHAR) = v)")
}

/// The marker `incr` reports for a value that is not an integer: an i64
/// no increment can return.
pub(super) const NOT_AN_INTEGER: i64 = i64::MIN;

pub(super) fn schema(table: &str, meta: &str, index: &str) -> [String; 2] {
    [
        format!(
            "CREATE TABLE IF NOT EXISTS {table} (
               k VARBINARY(1281) NOT NULL,
               v MEDIUMBLOB NULL,
               expires_at DATETIME(3) NULL,
               fence BIGINT UNSIGNED NOT NULL DEFAULT 0,
               PRIMARY KEY (k),
               KEY {index} (expires_at, fence)
             ) ENGINE=InnoDB"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS {meta} (
               name VARCHAR(64) NOT NULL PRIMARY KEY,
               value VARCHAR(255) NOT NULL
             ) ENGINE=InnoDB"
        ),
    ]
}

/// `(k, 1)`: the new value, keeping the TTL; `NOT_AN_INTEGER` leaves the row
/// unchanged; past i64 the server raises 1690 and rolls back.
pub(super) const INCR: &str = "INSERT INTO {t} (k, v, expires_at) VALUES (?, CAST(LAST_INSERT_ID(?) AS SIGNED), NULL)
  ON DUPLICATE KEY UPDATE
    fence = IF({live} AND NOT {is_int},
               fence + LEAST(LAST_INSERT_ID(IF(v IS NULL, 0, -9223372036854775808)), 0), fence),
    v = CASE WHEN NOT {live} THEN CAST(LAST_INSERT_ID(fence - fence + 1) AS SIGNED)
             WHEN {is_int} THEN CAST(LAST_INSERT_ID(CAST(v AS SIGNED) + 1) AS SIGNED)
             ELSE v END,
    expires_at = IF({live}, expires_at, NULL)";

/// `(k, p, p, p, p)`: the original's nonce rule (`rules::next_nonce`);
/// -1 for a live value that is not an integer, row unchanged.
pub(super) const ASSIGN_NONCE: &str = "INSERT INTO {t} (k, v, expires_at) VALUES (?, CAST(LAST_INSERT_ID(?) AS SIGNED), NULL)
  ON DUPLICATE KEY UPDATE
    fence = IF({live} AND NOT {is_int},
               fence + LEAST(LAST_INSERT_ID(CAST(fence AS SIGNED) - CAST(fence AS SIGNED) - 1), 0), fence),
    v = CASE WHEN {live} AND NOT {is_int} THEN v
             ELSE CAST(LAST_INSERT_ID(IF(
                 ? > IF({live}, CAST(v AS SIGNED), -1) + 1 OR IF({live}, CAST(v AS SIGNED), -1) + 1 - ? > 500,
                 ?, IF({live}, CAST(v AS SIGNED), -1) + 1)) AS SIGNED) END,
    expires_at = IF({live}, expires_at, NULL)";

/// `(k, id, ttl_us, 1, id, ttl_us)`: the new fencing token, or 0 when a live
/// value holds the key. The token lives on the row, which is tombstoned,
/// never deleted, while it is above 0.
pub(super) const ACQUIRE_LOCK: &str = "INSERT INTO {t} (k, v, expires_at, fence) VALUES (?, ?, {exp}, LAST_INSERT_ID(?))
  ON DUPLICATE KEY UPDATE
    fence = IF({live}, fence + LEAST(LAST_INSERT_ID(fence - fence), 0), LAST_INSERT_ID(fence + 1)),
    v = IF({live}, v, ?),
    expires_at = IF({live}, expires_at, {exp})";

/// `(k, id)`: one row matched when the id held the lock.
pub(super) const RELEASE_LOCK: &str =
    "UPDATE {t} SET v = NULL, expires_at = {dead} WHERE k = ? AND v = ? AND {live}";

/// `(ttl_us, k, id)`: one row matched when the id held the lock.
pub(super) const EXTEND_LOCK: &str = "UPDATE {t} SET expires_at = {exp} WHERE k = ? AND v = ? AND {live}";

/// `(k)`: a row when something live holds the key.
pub(super) const IS_LIVE: &str = "SELECT 1 FROM {t} WHERE k = ? AND {live}";

/// `(k)`.
pub(super) const GET: &str = "SELECT v FROM {t} WHERE k = ? AND {live}";

/// `(k, v, ttl_us, v, ttl_us)`: a NULL TTL gives a NULL expiry (no TTL).
pub(super) const SET: &str = "INSERT INTO {t} (k, v, expires_at) VALUES (?, ?, {exp})
  ON DUPLICATE KEY UPDATE v = ?, expires_at = {exp}";

/// `(k)`: one row matched when a live key was removed.
pub(super) const DELETE: &str = "UPDATE {t} SET v = NULL, expires_at = {dead} WHERE k = ? AND {live}";

/// `(k, v, ttl_us, 1, v, ttl_us)`: reports 1 when it wrote.
pub(super) const SET_IF_ABSENT: &str = "INSERT INTO {t} (k, v, expires_at, fence) VALUES (?, ?, {exp}, LEAST(LAST_INSERT_ID(?), 0))
  ON DUPLICATE KEY UPDATE
    fence = fence + LEAST(LAST_INSERT_ID(IF({live}, 0, 1)), 0),
    v = IF({live}, v, ?),
    expires_at = IF({live}, expires_at, {exp})";

/// `(v, ttl_us, k, expected)`: one row matched when it wrote.
pub(super) const SET_IF_EQUAL: &str = "UPDATE {t} SET v = ?, expires_at = {exp} WHERE k = ? AND v = ? AND {live}";

/// `(k)`: value, milliseconds left, last fencing token.
pub(super) const INSPECT: &str = "SELECT IF({live}, v, NULL),
    IF({live}, TIMESTAMPDIFF(MICROSECOND, NOW(3), expires_at) DIV 1000, NULL),
    NULLIF(fence, 0)
  FROM {t} WHERE k = ?";

/// `(pattern, limit)`: `!` escapes `!`, `%` and `_` in the pattern.
pub(super) const KEYS: &str = "SELECT k FROM {t} WHERE k LIKE ? ESCAPE '!' AND {live} ORDER BY k LIMIT ?";

/// `(k)`: the row and its fencing counter.
pub(super) const PURGE: &str = "DELETE FROM {t} WHERE k = ?";

/// `(limit)`: expired rows without a fencing counter go; fenced ones
/// become tombstones.
pub(super) const PURGE_EXPIRED: [&str; 2] = [
    "DELETE FROM {t} WHERE expires_at <= NOW(3) AND fence = 0 LIMIT ?",
    "UPDATE {t} SET v = NULL, expires_at = {dead} WHERE expires_at <= NOW(3) AND expires_at > {dead} AND fence > 0 LIMIT ?",
];

/// A LIKE pattern matching keys that start with `prefix`.
pub(super) fn like_prefix(prefix: &str) -> String {
    let mut pattern = String::with_capacity(prefix.len() + 1);
    for c in prefix.chars() {
        if matches!(c, '!' | '%' | '_') {
            pattern.push('!');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_server_clock_reading_per_statement_kind() {
        for sql in [INCR, ASSIGN_NONCE, ACQUIRE_LOCK, RELEASE_LOCK, EXTEND_LOCK, GET, SET, DELETE, SET_IF_ABSENT, SET_IF_EQUAL, INSPECT, KEYS] {
            let rendered = render(sql, "`t`");
            for banned in ["SYSDATE", "UTC_TIMESTAMP", "UNIX_TIMESTAMP", "CURRENT_TIMESTAMP", ") IS NULL"] {
                assert!(!rendered.contains(banned), "{banned} in {rendered}");
            }
            assert!(!rendered.contains('{'), "unrendered placeholder in {rendered}");
        }
        assert_eq!(like_prefix("a_b%c!"), "a!_b!%c!!%");
    }
}
