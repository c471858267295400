//! Store URLs: the parts every backend shares (the key prefix and the
//! timeouts), the checks on them, and hiding secrets for messages. A leaf:
//! the backends import it, and it imports none of them.

use std::time::Duration;

use crate::{rules, Error, Operation, Result};

/// Redis Sentinel's well-known port, for sentinel hosts given without one.
pub const SENTINEL_PORT: u16 = 26379;

/// `url` with any password replaced by `***`, for messages and logs; so are
/// the values of query parameters that look like secrets (`password`,
/// `token`, `secret`, `…key…`).
///
/// A password may hold `/`, `?`, `#` or `@` unencoded (people paste them so),
/// so the user part runs to the *last* `@`; a URL with an `@` only in its
/// query may then be masked more than needed, never less.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let rest = match rest.rfind('@') {
        Some(at) => {
            let (userinfo, host_and_tail) = (&rest[..at], &rest[at..]);
            match userinfo.split_once(':') {
                // A `/` before the first `:` means the `@` is in a path.
                Some((user, _)) if !user.contains(['/', '?', '#']) => {
                    format!("{user}:***{host_and_tail}")
                }
                _ => rest.to_owned(),
            }
        }
        None => rest.to_owned(),
    };
    format!("{scheme}://{}", redact_query(&rest))
}

fn redact_query(rest: &str) -> String {
    let Some((head, query)) = rest.split_once('?') else {
        return rest.to_owned();
    };
    let secret = |name: &str| {
        let name = name.to_ascii_lowercase();
        ["pass", "secret", "token", "key"]
            .iter()
            .any(|w| name.contains(w))
    };
    let params: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((name, _)) if secret(name) => format!("{name}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", params.join("&"))
}

/// A store URL split into its parts. Backends read their own parameters
/// from it; the shared ones (`prefix`, `timeout`, `connect_timeout`) are
/// read and checked here, so every backend, yours included, takes them the
/// same way.
///
/// ```
/// use std::time::Duration;
/// use atomic_store::StoreUrl;
///
/// let url = StoreUrl::parse("mine", "mine://host:1/db?prefix=app&timeout=2s", Some(&["timeout"]))?;
/// assert_eq!(url.location, "host:1/db");
/// assert_eq!(url.prefix()?, "app");
/// assert_eq!(url.timeout(Duration::from_secs(5))?, Duration::from_secs(2));
/// assert!(StoreUrl::parse("mine", "mine://host?colour=red", Some(&["timeout"])).is_err());
/// # Ok::<(), atomic_store::Error>(())
/// ```
pub struct StoreUrl {
    backend: &'static str,
    /// The scheme, in lower case.
    pub scheme: String,
    /// Everything between `://` and `?`.
    pub location: String,
    params: Vec<(String, String)>,
    redacted: String,
}

/// Only the redacted URL: the location and parameters may hold passwords.
impl std::fmt::Debug for StoreUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreUrl")
            .field("backend", &self.backend)
            .field("url", &self.redacted)
            .finish()
    }
}

/// `url`'s scheme and the rest, or the error for a string that is no URL.
pub(crate) fn split_scheme<'u>(backend: &'static str, url: &'u str) -> Result<(&'u str, &'u str)> {
    url.split_once("://").ok_or_else(|| {
        // Without `://` a password cannot be told from the rest, so input
        // that may hold one (`user:pw@host`, `?password=`) is not repeated.
        let shown = if url.contains(['@', '?']) {
            "the URL given".to_owned()
        } else {
            format!("`{url}`")
        };
        open_error(
            backend,
            format!(
                "{shown} is not a store URL: expected SCHEME://…, for example sqlite://app.db or redis://127.0.0.1:6379"
            ),
        )
    })
}

impl StoreUrl {
    /// Split `url`; its parameters must be among `accepted` (the shared
    /// `prefix` is always accepted). Pass `None` to pass unknown parameters
    /// through to a driver.
    pub fn parse(backend: &'static str, url: &str, accepted: Option<&[&str]>) -> Result<StoreUrl> {
        let redacted = redact(url);
        let (scheme, rest) = split_scheme(backend, url)?;
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        if let Some(accepted) = accepted {
            for (name, _) in &params {
                if name != "prefix" && !accepted.contains(&name.as_str()) {
                    let mut known = vec!["prefix"];
                    known.extend_from_slice(accepted);
                    return Err(open_error(
                        backend,
                        format!(
                            "unknown URL parameter `{name}` for {backend}; accepted: {}",
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(StoreUrl {
            backend,
            scheme: scheme.to_ascii_lowercase(),
            location: location.to_owned(),
            params,
            redacted,
        })
    }

    /// The URL with its secrets hidden, for messages and `Debug`.
    pub fn redacted(&self) -> &str {
        &self.redacted
    }

    /// The last value given for `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The parameters not in `ours`, in order, for a driver's own URL.
    pub fn others<'a>(&'a self, ours: &'a [&str]) -> impl Iterator<Item = (&'a str, &'a str)> {
        self.params
            .iter()
            .filter(move |(k, _)| k != "prefix" && !ours.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// A duration parameter (`500ms`, `5s`, …).
    pub fn duration(&self, name: &str) -> Result<Option<Duration>> {
        self.param(name)
            .map(|v| {
                parse_duration(v).map_err(|e| self.error(format!("URL parameter `{name}`: {e}")))
            })
            .transpose()
    }

    /// `?prefix=` (default `atomic`), checked.
    pub fn prefix(&self) -> Result<String> {
        let prefix = self.param("prefix").unwrap_or(rules::DEFAULT_PREFIX);
        rules::check_prefix(self.backend, prefix)?;
        Ok(prefix.to_owned())
    }

    /// `?timeout=`: how long one operation may take.
    pub fn timeout(&self, default: Duration) -> Result<Duration> {
        self.positive_duration("timeout", default)
    }

    /// `?connect_timeout=`: how long connecting may take.
    pub fn connect_timeout(&self, default: Duration) -> Result<Duration> {
        self.positive_duration("connect_timeout", default)
    }

    /// A duration parameter that must be longer than zero.
    pub fn positive_duration(&self, name: &str, default: Duration) -> Result<Duration> {
        let value = self.duration(name)?.unwrap_or(default);
        if value.is_zero() {
            return Err(self.error(format!("`{name}` must be longer than zero")));
        }
        Ok(value)
    }

    /// `?pool_size=`: connections in a backend's pool, 1 to 1024.
    pub fn pool_size(&self, default: usize) -> Result<usize> {
        match self.param("pool_size") {
            None => Ok(default),
            Some(v) => v
                .parse()
                .ok()
                .filter(|n| (1..=1024).contains(n))
                .ok_or_else(|| self.error("pool_size must be a number from 1 to 1024")),
        }
    }

    /// A SQL identifier named in the URL (a table, a schema): 1-50 ASCII
    /// letters, digits or `_`, not starting with a digit, so it is safe to
    /// quote in any SQL dialect. `what` names it in the error.
    pub fn sql_identifier<'a>(&self, what: &str, name: &'a str) -> Result<&'a str> {
        let ok = name.len() <= 50
            && name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if ok {
            Ok(name)
        } else {
            Err(self.error(format!(
                "{what} `{name}` must be 1-50 letters, digits or _, not starting with a digit"
            )))
        }
    }

    /// `true`/`false` parameter.
    pub fn flag(&self, name: &str, default: bool) -> Result<bool> {
        match self.param(name) {
            None => Ok(default),
            Some("true") => Ok(true),
            Some("false") => Ok(false),
            Some(other) => Err(self.error(format!(
                "URL parameter `{name}` is `{other}`; use true or false"
            ))),
        }
    }

    /// An invalid-URL error of this backend.
    pub fn error(&self, message: impl Into<String>) -> Error {
        open_error(self.backend, message)
    }

    /// `text` with `%XX` escapes decoded (`+` stays a `+`): paths and names.
    pub fn decode(text: &str) -> String {
        url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    }
}

fn open_error(backend: &'static str, message: impl Into<String>) -> Error {
    Error::invalid(backend, Operation::Open, message)
}

/// Parse a duration written as a whole number and a unit: `500ms`, `5s`,
/// `2m`, `1h`, `1d`.
///
/// ```
/// use std::time::Duration;
/// assert_eq!(atomic_store::parse_duration("500ms").unwrap(), Duration::from_millis(500));
/// assert_eq!(atomic_store::parse_duration("2m").unwrap(), Duration::from_secs(120));
/// assert!(atomic_store::parse_duration("5").is_err());
/// ```
pub fn parse_duration(text: &str) -> std::result::Result<Duration, String> {
    let digits_end = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let bad = || {
        format!(
            "`{text}` is not a duration; write a whole number and a unit: 500ms, 5s, 2m, 1h, 1d"
        )
    };
    let n: u64 = number.parse().map_err(|_| bad())?;
    let millis_per_unit: u64 = match unit {
        "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return Err(bad()),
    };
    n.checked_mul(millis_per_unit)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("`{text}` is too long"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_that_is_no_url_is_not_repeated_when_it_may_hold_a_password() {
        let e = split_scheme("t", "admin:hunter2@db.internal:5432").unwrap_err();
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert!(e.to_string().contains("is not a store URL"), "{e}");
        let e = split_scheme("t", "app.db").unwrap_err();
        assert!(e.to_string().contains("`app.db`"), "{e}");
    }
    use crate::ErrorKind;

    #[test]
    fn shared_options_are_checked_in_one_place() {
        let url = |text| StoreUrl::parse("test", text, Some(&["timeout", "connect_timeout"]));
        let e = url("x://h?colour=red").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(
            e.to_string().contains("unknown URL parameter `colour` for test; accepted: prefix, timeout, connect_timeout"),
            "{e}"
        );
        let u = url("x://h?timeout=0ms&connect_timeout=soon").unwrap();
        let e = u.timeout(Duration::from_secs(1)).unwrap_err();
        assert!(
            e.to_string().contains("`timeout` must be longer than zero"),
            "{e}"
        );
        let e = u.connect_timeout(Duration::from_secs(1)).unwrap_err();
        assert!(
            e.to_string().contains("URL parameter `connect_timeout`"),
            "{e}"
        );
        assert_eq!(
            url("x://h")
                .unwrap()
                .timeout(Duration::from_secs(3))
                .unwrap(),
            Duration::from_secs(3)
        );
        let e = url("x://h?prefix=a%00b").unwrap().prefix().unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert_eq!(
            url("x://h").unwrap().prefix().unwrap(),
            rules::DEFAULT_PREFIX
        );
        // The last value wins; a driver gets the parameters that are not ours.
        let u = StoreUrl::parse(
            "test",
            "X://u:p@h/d?a=1&prefix=p&timeout=1s&a=2&b=x%20y",
            None,
        )
        .unwrap();
        assert_eq!(u.scheme, "x");
        assert_eq!(u.param("a"), Some("2"));
        let others: Vec<_> = u.others(&["timeout"]).collect();
        assert_eq!(others, [("a", "1"), ("a", "2"), ("b", "x y")]);
        assert_eq!(
            u.redacted(),
            "X://u:***@h/d?a=1&prefix=p&timeout=1s&a=2&b=x%20y"
        );
        assert_eq!(StoreUrl::decode("a%2Fb+c"), "a/b+c");
        let secret = StoreUrl::parse("test", "x://u:hunter2@h/d?password=hunter3", None).unwrap();
        let shown = format!("{secret:?}");
        assert!(!shown.contains("hunter"), "{shown}");
        assert!(shown.contains("u:***@h/d"), "{shown}");
        let e = StoreUrl::parse("test", "no scheme", None).unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(!u.flag("missing", false).unwrap());
        assert!(StoreUrl::parse("test", "x://h?f=maybe", None)
            .unwrap()
            .flag("f", false)
            .is_err());
    }

    #[test]
    fn redact_hides_passwords_only() {
        assert_eq!(
            redact("redis://u:secret@h:1/0?x=1"),
            "redis://u:***@h:1/0?x=1"
        );
        assert_eq!(redact("redis://:secret@h"), "redis://:***@h");
        assert_eq!(redact("redis://h:1"), "redis://h:1");
        assert_eq!(redact("redis://user@h"), "redis://user@h");
        // Passwords holding URL delimiters are still hidden whole.
        for (url, shown) in [
            ("redis://u:pa/ss@h:1/0", "redis://u:***@h:1/0"),
            ("redis://u:pa?ss@h:1", "redis://u:***@h:1"),
            ("redis://u:pa#ss@h:1", "redis://u:***@h:1"),
            ("redis://u:p@ss@h:1", "redis://u:***@h:1"),
            (
                "postgres://u:a/b?c#d@h:5432/db?sslmode=disable",
                "postgres://u:***@h:5432/db?sslmode=disable",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
        }
        // An `@` in a path is not a password.
        assert_eq!(redact("sqlite:///tmp/a:b@c.db"), "sqlite:///tmp/a:b@c.db");
        // Secret-looking query parameters.
        assert_eq!(
            redact("mongodb://h/db?tlsCertificateKeyFilePassword=x1&appName=a"),
            "mongodb://h/db?tlsCertificateKeyFilePassword=***&appName=a"
        );
        assert_eq!(
            redact("https://rpc.example/v3?apikey=abc"),
            "https://rpc.example/v3?apikey=***"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("0ms").unwrap(), Duration::ZERO);
        for bad in ["", "5", "ms", "1.5s", "-1s", "5 s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
