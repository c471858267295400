//! The rules every backend enforces the same way: key, value and TTL limits,
//! the integer format, and the nonce rule. Backends call these before they
//! send or write anything.

use std::time::Duration;

use crate::{Error, ErrorKind, Operation, Result};

/// Longest key, in bytes (before the prefix).
pub const MAX_KEY_BYTES: usize = 1024;
/// Longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 256 * 1024;
/// Shortest TTL.
pub const MIN_TTL: Duration = Duration::from_millis(1);
/// Longest TTL.
pub const MAX_TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// Longest prefix, in bytes.
pub const MAX_PREFIX_BYTES: usize = 256;
/// `assign_nonce` trusts the stored nonce over the chain while it is at most
/// this far ahead of the chain's pending count.
pub const NONCE_WINDOW: i64 = 500;

/// The default key prefix.
pub const DEFAULT_PREFIX: &str = "atomic";

// Every check takes the caller's backend, so its errors name it.

fn invalid(backend: &'static str, op: Operation, message: String) -> Error {
    Error::invalid(backend, op, message)
}

/// Check a key: 1..=1024 bytes, no NUL.
pub fn check_key(backend: &'static str, op: Operation, key: &str) -> Result<()> {
    if key.is_empty() {
        return Err(invalid(backend, op, "key must not be empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(invalid(
            backend,
            op,
            format!(
                "key is {} bytes, longer than the limit of {MAX_KEY_BYTES} bytes",
                key.len()
            ),
        ));
    }
    if key.contains('\0') {
        return Err(invalid(
            backend,
            op,
            "key must not contain a NUL byte".into(),
        ));
    }
    Ok(())
}

/// The checks of a write (`set`, `set_with_ttl`, `compare_and_set`) after
/// its key: the value, then the TTL if there is one.
pub fn check_write(
    backend: &'static str,
    op: Operation,
    value: &str,
    ttl: Option<Duration>,
) -> Result<()> {
    check_value(backend, op, value)?;
    ttl.map_or(Ok(()), |ttl| check_ttl(backend, op, ttl))
}

/// Check a value: at most 256 KiB, no NUL; empty is allowed.
pub fn check_value(backend: &'static str, op: Operation, value: &str) -> Result<()> {
    if value.len() > MAX_VALUE_BYTES {
        return Err(invalid(
            backend,
            op,
            format!(
                "value is {} bytes, longer than the limit of {MAX_VALUE_BYTES} bytes",
                value.len()
            ),
        ));
    }
    if value.contains('\0') {
        return Err(invalid(
            backend,
            op,
            "value must not contain a NUL byte".into(),
        ));
    }
    Ok(())
}

/// Check a TTL: from 1 ms to 365 days.
pub fn check_ttl(backend: &'static str, op: Operation, ttl: Duration) -> Result<()> {
    if ttl < MIN_TTL {
        return Err(invalid(
            backend,
            op,
            format!("ttl {ttl:?} is shorter than the minimum of 1ms"),
        ));
    }
    if ttl > MAX_TTL {
        return Err(invalid(
            backend,
            op,
            format!("ttl {ttl:?} is longer than the maximum of 365 days"),
        ));
    }
    Ok(())
}

/// The TTL in whole milliseconds, rounded up (after [`check_ttl`]), so a key
/// never lives shorter than asked.
pub fn ttl_millis(ttl: Duration) -> u64 {
    ttl.as_nanos().div_ceil(1_000_000) as u64
}

/// Check a key prefix: at most 256 bytes, no NUL. Empty means "no prefix".
pub fn check_prefix(backend: &'static str, prefix: &str) -> Result<()> {
    if prefix.len() > MAX_PREFIX_BYTES {
        return Err(invalid(
            backend,
            Operation::Open,
            format!(
                "prefix is {} bytes, longer than the limit of {MAX_PREFIX_BYTES} bytes",
                prefix.len()
            ),
        ));
    }
    if prefix.contains('\0') {
        return Err(invalid(
            backend,
            Operation::Open,
            "prefix must not contain a NUL byte".into(),
        ));
    }
    Ok(())
}

/// The stored form of a key: `{prefix}:{key}`, or the key alone when the
/// prefix is empty. This is the TypeScript original's layout.
pub fn prefixed(prefix: &str, key: &str) -> String {
    if prefix.is_empty() {
        key.to_owned()
    } else {
        let mut full = String::with_capacity(prefix.len() + 1 + key.len());
        full.push_str(prefix);
        full.push(':');
        full.push_str(key);
        full
    }
}

/// The user key of a stored key, the inverse of [`prefixed`] (empty when
/// `full` is shorter than the prefix).
pub fn unprefixed<'a>(prefix: &str, full: &'a str) -> &'a str {
    let strip = if prefix.is_empty() {
        0
    } else {
        prefix.len() + 1
    };
    full.get(strip..).unwrap_or_default()
}

/// Check `key` and return its stored form, with errors labelled `backend`.
pub fn stored_key(backend: &'static str, op: Operation, prefix: &str, key: &str) -> Result<String> {
    check_key(backend, op, key)?;
    Ok(prefixed(prefix, key))
}

/// Check a `keys` prefix (empty lists every key; otherwise the rules of a
/// key) and return its stored form, with errors labelled `backend`.
pub fn stored_key_prefix(backend: &'static str, prefix: &str, key_prefix: &str) -> Result<String> {
    if !key_prefix.is_empty() {
        check_key(backend, Operation::Keys, key_prefix)?;
    }
    Ok(prefixed(prefix, key_prefix))
}

/// Parse a stored counter: a decimal `i64` in canonical form,
/// `-?(0|[1-9][0-9]*)`, the form Redis `INCR` accepts.
pub fn parse_counter(value: &str) -> Option<i64> {
    let digits = value.strip_prefix('-').unwrap_or(value);
    let canonical = match digits.as_bytes() {
        [] => false,
        [b'0'] => digits.len() == value.len(),
        [first, rest @ ..] => {
            (b'1'..=b'9').contains(first) && rest.iter().all(|c| c.is_ascii_digit())
        }
    };
    if canonical {
        value.parse().ok()
    } else {
        None
    }
}

/// The error for a stored value that is not a counter.
pub fn not_an_integer(backend: &'static str, op: Operation) -> Error {
    Error::new(
        ErrorKind::NotAnInteger,
        backend,
        op,
        "the stored value is not a decimal integer in the i64 range",
    )
}

/// The error for a counter that would pass `i64::MAX`.
pub fn overflow(backend: &'static str, op: Operation) -> Error {
    Error::new(
        ErrorKind::Overflow,
        backend,
        op,
        "incrementing would pass i64::MAX",
    )
}

/// `incr` on a stored value (`None`: missing or expired).
pub fn next_counter(backend: &'static str, stored: Option<&str>) -> Result<i64> {
    let current = match stored {
        None => 0,
        Some(v) => parse_counter(v).ok_or_else(|| not_an_integer(backend, Operation::Incr))?,
    };
    current
        .checked_add(1)
        .ok_or_else(|| overflow(backend, Operation::Incr))
}

/// Check `assign_nonce`'s `pending` argument.
pub fn check_pending(backend: &'static str, pending: u64) -> Result<i64> {
    i64::try_from(pending).map_err(|_| {
        invalid(
            backend,
            Operation::AssignNonce,
            format!("pending {pending} is larger than i64::MAX"),
        )
    })
}

/// The original SDK's nonce rule on a stored value (`None`: missing).
pub fn next_nonce(backend: &'static str, stored: Option<&str>, pending: u64) -> Result<u64> {
    let pending = check_pending(backend, pending)?;
    let last = match stored {
        None => -1,
        Some(v) => {
            parse_counter(v).ok_or_else(|| not_an_integer(backend, Operation::AssignNonce))?
        }
    };
    let mut candidate = last
        .checked_add(1)
        .ok_or_else(|| overflow(backend, Operation::AssignNonce))?;
    if pending > candidate || candidate - pending > NONCE_WINDOW {
        candidate = pending;
    }
    // candidate >= pending >= 0 here.
    Ok(candidate as u64)
}

/// The schema version a store found (in `place`), checked against the one
/// this code reads: a newer or unknown one is never used.
pub fn check_schema_version(
    backend: &'static str,
    op: Operation,
    place: &str,
    found: &str,
    expected: &str,
) -> Result<()> {
    if found == expected {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Backend,
        backend,
        op,
        format!("{place} has schema version {found}; this atomic-store reads version {expected}"),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_checks_its_value_then_its_ttl() {
        let op = Operation::CompareAndSet;
        assert!(check_write("t", op, "v", None).is_ok());
        assert!(check_write("t", op, "v", Some(MIN_TTL)).is_ok());
        let zero_ttl = check_write("t", op, "v", Some(Duration::ZERO)).unwrap_err();
        assert!(zero_ttl.to_string().contains("ttl"), "{zero_ttl}");
        let both_bad = check_write("t", op, "a\0b", Some(Duration::ZERO)).unwrap_err();
        assert!(both_bad.to_string().contains("NUL"), "{both_bad}");
    }

    #[test]
    fn counters_must_be_canonical_decimal_i64() {
        for ok in [
            "0",
            "1",
            "-1",
            "42",
            "9223372036854775807",
            "-9223372036854775808",
        ] {
            assert_eq!(
                parse_counter(ok).map(|v| v.to_string()),
                Some(ok.to_string())
            );
        }
        for bad in [
            "",
            "-",
            "-0",
            "01",
            "+1",
            " 1",
            "1 ",
            "1.0",
            "abc",
            "0x10",
            "9223372036854775808",
        ] {
            assert_eq!(parse_counter(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn incr_rule() {
        assert_eq!(next_counter("test", None).unwrap(), 1);
        assert_eq!(next_counter("test", Some("-1")).unwrap(), 0);
        assert_eq!(
            next_counter("test", Some("9223372036854775807"))
                .unwrap_err()
                .kind(),
            ErrorKind::Overflow
        );
        assert_eq!(
            next_counter("test", Some("x")).unwrap_err().kind(),
            ErrorKind::NotAnInteger
        );
    }

    #[test]
    fn nonce_rule_matches_the_original() {
        // (stored, pending, expected)
        let cases: &[(Option<&str>, u64, u64)] = &[
            (None, 0, 0),
            (None, 7, 7),
            (Some("4"), 0, 5),
            (Some("4"), 5, 5),
            (Some("4"), 9, 9),
            (Some("500"), 0, 0),
            (Some("499"), 0, 500),
            // The window is measured from pending, whatever their size.
            (Some("600"), 590, 601),
            (Some("1100"), 600, 600),
            (Some("-5"), 0, 0),
        ];
        for &(stored, pending, want) in cases {
            assert_eq!(
                next_nonce("test", stored, pending).unwrap(),
                want,
                "{stored:?} {pending}"
            );
        }
        assert_eq!(
            next_nonce("test", Some("9223372036854775807"), 0)
                .unwrap_err()
                .kind(),
            ErrorKind::Overflow
        );
        assert_eq!(
            next_nonce("test", None, u64::MAX).unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn limits() {
        assert!(check_key("test", Operation::Get, "").is_err());
        assert!(check_key("test", Operation::Get, &"k".repeat(1024)).is_ok());
        assert!(check_key("test", Operation::Get, &"k".repeat(1025)).is_err());
        assert!(check_key("test", Operation::Get, "a\0b").is_err());
        assert!(check_value("test", Operation::Set, "").is_ok());
        assert!(check_value("test", Operation::Set, &"v".repeat(MAX_VALUE_BYTES)).is_ok());
        assert!(check_value("test", Operation::Set, &"v".repeat(MAX_VALUE_BYTES + 1)).is_err());
        assert!(check_ttl("test", Operation::Set, Duration::ZERO).is_err());
        assert!(check_ttl("test", Operation::Set, Duration::from_micros(999)).is_err());
        assert_eq!(ttl_millis(Duration::from_micros(1500)), 2);
        assert!(check_ttl("test", Operation::Set, MAX_TTL).is_ok());
        assert!(check_ttl("test", Operation::Set, MAX_TTL + MIN_TTL).is_err());
        assert_eq!(prefixed("atomic", "a"), "atomic:a");
        assert_eq!(prefixed("", "a"), "a");
        assert_eq!(unprefixed("atomic", &prefixed("atomic", "a:b")), "a:b");
        assert_eq!(unprefixed("", "a"), "a");
    }

    /// The limits are the documented numbers, exact at both edges (a
    /// constant computed wrong would move both edges together).
    #[test]
    fn limits_are_the_documented_numbers() {
        assert_eq!(MAX_VALUE_BYTES, 262_144);
        assert_eq!(MAX_TTL, Duration::from_secs(31_536_000));
        assert!(check_ttl("test", Operation::Set, MIN_TTL).is_ok());
        assert!(check_prefix("test", &"p".repeat(MAX_PREFIX_BYTES)).is_ok());
        let e = check_prefix("test", &"p".repeat(MAX_PREFIX_BYTES + 1)).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(e.backend(), "test");
        assert!(check_prefix("test", "a\0b").is_err());
        assert!(check_prefix("test", "").is_ok());
    }

    #[test]
    fn stored_keys_are_checked_and_prefixed() {
        let op = Operation::Get;
        assert_eq!(stored_key("test", op, "atomic", "k").unwrap(), "atomic:k");
        assert_eq!(stored_key("test", op, "", "k").unwrap(), "k");
        let e = stored_key("test", op, "atomic", "").unwrap_err();
        assert_eq!(
            (e.kind(), e.backend()),
            (ErrorKind::InvalidArgument, "test")
        );
        assert_eq!(stored_key_prefix("test", "atomic", "").unwrap(), "atomic:");
        assert_eq!(
            stored_key_prefix("test", "atomic", "jobs").unwrap(),
            "atomic:jobs"
        );
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(stored_key_prefix("test", "atomic", &long).is_err());
        assert!(stored_key_prefix("test", "atomic", "a\0").is_err());
    }
}
