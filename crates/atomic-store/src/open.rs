//! `open(url)`: pick a backend from the URL's scheme.

use std::sync::Arc;
use std::time::Duration;

use crate::{AtomicStore, Error, ErrorKind, Operation, Result};

const OPEN: &str = "atomic-store";

/// A backend this crate knows, whether or not its feature is compiled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Scheme {
    /// `memory://[NAME]`
    Memory,
    /// `sqlite://PATH`
    Sqlite,
    /// `redis://`, `rediss://`, `redis+cluster://`, `rediss+cluster://`
    Redis,
    /// `postgres://`, `postgresql://`
    Postgres,
    /// `etcd://`, `etcds://`
    Etcd,
    /// `zk://`
    Zookeeper,
    /// `dynamodb://`
    Dynamodb,
    /// `mongodb://`, `mongodb+srv://`
    Mongodb,
}

impl Scheme {
    /// Every scheme with the URL prefixes it answers to.
    pub const ALL: &'static [(Scheme, &'static [&'static str])] = &[
        (Scheme::Memory, &["memory"]),
        (Scheme::Sqlite, &["sqlite"]),
        (
            Scheme::Redis,
            &["redis", "rediss", "redis+cluster", "rediss+cluster"],
        ),
        (Scheme::Postgres, &["postgres", "postgresql"]),
        (Scheme::Etcd, &["etcd", "etcds"]),
        (Scheme::Zookeeper, &["zk"]),
        (Scheme::Dynamodb, &["dynamodb"]),
        (Scheme::Mongodb, &["mongodb", "mongodb+srv"]),
    ];

    /// The cargo feature that compiles this backend in.
    pub fn feature(self) -> &'static str {
        match self {
            Scheme::Memory => "memory",
            Scheme::Sqlite => "sqlite",
            Scheme::Redis => "redis",
            Scheme::Postgres => "postgres",
            Scheme::Etcd => "etcd",
            Scheme::Zookeeper => "zookeeper",
            Scheme::Dynamodb => "dynamodb",
            Scheme::Mongodb => "mongodb",
        }
    }

    /// Is this backend implemented in this build?
    pub fn is_available(self) -> bool {
        match self {
            Scheme::Memory => cfg!(feature = "memory"),
            Scheme::Sqlite => cfg!(feature = "sqlite"),
            Scheme::Redis => cfg!(feature = "redis"),
            Scheme::Postgres => cfg!(feature = "postgres"),
            Scheme::Etcd => cfg!(feature = "etcd"),
            Scheme::Zookeeper => cfg!(feature = "zookeeper"),
            Scheme::Dynamodb => cfg!(feature = "dynamodb"),
            Scheme::Mongodb => cfg!(feature = "mongodb"),
        }
    }

    /// The scheme of `url`.
    pub fn of(url: &str) -> Result<Scheme> {
        let (name, _) = url.split_once("://").ok_or_else(|| {
            Error::invalid(
                OPEN,
                Operation::Open,
                format!("`{}` is not a store URL: expected SCHEME://…, for example sqlite://app.db or redis://127.0.0.1:6379", redact(url)),
            )
        })?;
        let lower = name.to_ascii_lowercase();
        Scheme::ALL
            .iter()
            .find(|(_, names)| names.contains(&lower.as_str()))
            .map(|(scheme, _)| *scheme)
            .ok_or_else(|| {
                let known: Vec<&str> = Scheme::ALL
                    .iter()
                    .flat_map(|(_, n)| n.iter().copied())
                    .collect();
                Error::invalid(
                    OPEN,
                    Operation::Open,
                    format!(
                        "unknown URL scheme `{name}`; known schemes: {}",
                        known.join(", ")
                    ),
                )
            })
    }
}

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

/// A store URL split into its parts, with its query parameters checked
/// against the ones the backend accepts.
#[derive(Debug)]
#[cfg_attr(feature = "mongodb", allow(dead_code))]
pub(crate) struct Parsed {
    /// Everything between `://` and `?`.
    pub location: String,
    params: Vec<(String, String)>,
}

#[cfg_attr(feature = "mongodb", allow(dead_code))]
impl Parsed {
    pub fn new(backend: &'static str, url: &str, accepted: &[&str]) -> Result<Parsed> {
        let rest = url.split_once("://").map_or("", |(_, r)| r);
        let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
        let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        for (name, _) in &params {
            if !accepted.contains(&name.as_str()) {
                return Err(Error::invalid(
                    backend,
                    Operation::Open,
                    format!(
                        "unknown URL parameter `{name}` for {backend}; accepted: {}",
                        accepted.join(", ")
                    ),
                ));
            }
        }
        Ok(Parsed {
            location: location.to_owned(),
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn duration(&self, backend: &'static str, name: &str) -> Result<Option<Duration>> {
        self.param(name)
            .map(|v| {
                parse_duration(v).map_err(|e| {
                    Error::invalid(
                        backend,
                        Operation::Open,
                        format!("URL parameter `{name}`: {e}"),
                    )
                })
            })
            .transpose()
    }

    pub fn prefix(&self) -> &str {
        self.param("prefix").unwrap_or(crate::rules::DEFAULT_PREFIX)
    }
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

fn feature_disabled(scheme: Scheme) -> Error {
    Error::new(
        ErrorKind::FeatureDisabled,
        OPEN,
        Operation::Open,
        format!(
            "the {0} backend is not compiled in: enable the cargo feature `{0}` of atomic-store",
            scheme.feature()
        ),
    )
}

/// Open the store a URL names.
///
/// | URL | backend | feature |
/// |---|---|---|
/// | `memory://` or `memory://NAME` | in-process store (a name shares it within the process) | `memory` |
/// | `sqlite://PATH` | embedded, cross-process SQLite file | `sqlite` |
/// | `redis://[user:pass@]host:port[/db]`, `rediss://…` | Redis | `redis` |
/// | `postgres://user:pass@host:port/db` | PostgreSQL | `postgres` |
/// | `etcd://host:port[,host:port…]`, `etcds://…` | etcd v3 | `etcd` |
/// | `zk://host:port[,host:port…][/chroot]` | ZooKeeper | `zookeeper` |
/// | `dynamodb://TABLE?region=…[&endpoint=…]` | Amazon DynamoDB | `dynamodb` |
/// | `mongodb://host:port/DB[?collection=…]`, `mongodb+srv://…` | MongoDB | `mongodb` |
///
/// Every URL takes `?prefix=NAME` (default `atomic`), which namespaces every
/// key as `NAME:key`. Opening does not contact a server: network backends
/// connect on first use, so connection failures show up as errors of the
/// first operation.
///
/// A malformed URL or unknown scheme gives
/// [`InvalidArgument`](ErrorKind::InvalidArgument); a known scheme whose
/// feature is off gives [`FeatureDisabled`](ErrorKind::FeatureDisabled)
/// naming the feature.
///
/// ```
/// # async fn demo() -> atomic_store::Result<()> {
/// let store = atomic_store::open("memory://?prefix=demo")?;
/// assert_eq!(store.incr("visits").await?, 1);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
pub fn open(url: &str) -> Result<Arc<dyn AtomicStore>> {
    let scheme = Scheme::of(url)?;
    if !scheme.is_available() {
        return Err(feature_disabled(scheme));
    }
    match scheme {
        #[cfg(feature = "memory")]
        Scheme::Memory => {
            let parsed = Parsed::new("memory", url, &["prefix"])?;
            let store = if parsed.location.is_empty() {
                crate::memory::MemoryStore::new()
            } else {
                crate::memory::MemoryStore::named(&parsed.location)
            };
            Ok(Arc::new(store.with_prefix(parsed.prefix())?))
        }
        #[cfg(feature = "sqlite")]
        Scheme::Sqlite => {
            let backend = "sqlite";
            let parsed = Parsed::new(backend, url, &["prefix", "busy_timeout", "synchronous"])?;
            let path = percent_decode(&parsed.location);
            if path.is_empty() || path == ":memory:" {
                return Err(Error::invalid(
                    backend,
                    Operation::Open,
                    "sqlite:// needs a file path, for example sqlite://app.db or sqlite:///var/lib/app/store.db (for an in-process store use memory://)",
                ));
            }
            let mut config = crate::sqlite::SqliteConfig::new(path);
            config.prefix = parsed.prefix().to_owned();
            if let Some(t) = parsed.duration(backend, "busy_timeout")? {
                config.busy_timeout = t;
            }
            config.synchronous_full = match parsed.param("synchronous") {
                None | Some("full") => true,
                Some("normal") => false,
                Some(other) => {
                    return Err(Error::invalid(
                        backend,
                        Operation::Open,
                        format!("URL parameter `synchronous` is `{other}`; use full or normal"),
                    ))
                }
            };
            Ok(Arc::new(crate::sqlite::SqliteStore::open(config)?))
        }
        #[cfg(feature = "redis")]
        Scheme::Redis => Ok(Arc::new(crate::redis::RedisStore::open(url)?)),
        #[cfg(feature = "postgres")]
        Scheme::Postgres => Ok(Arc::new(crate::postgres::PostgresStore::open(url)?)),
        #[cfg(feature = "etcd")]
        Scheme::Etcd => Ok(Arc::new(crate::etcd::EtcdStore::open(url)?)),
        #[cfg(feature = "zookeeper")]
        Scheme::Zookeeper => Ok(Arc::new(crate::zookeeper::ZookeeperStore::open(url)?)),
        #[cfg(feature = "dynamodb")]
        Scheme::Dynamodb => Ok(Arc::new(crate::dynamodb::DynamoStore::open(url)?)),
        #[cfg(feature = "mongodb")]
        Scheme::Mongodb => Ok(Arc::new(crate::mongodb::MongoStore::open(url)?)),
        #[allow(unreachable_patterns)]
        _ => Err(feature_disabled(scheme)),
    }
}

#[cfg(feature = "sqlite")]
fn percent_decode(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", text.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_and_errors() {
        assert_eq!(Scheme::of("sqlite://a.db").unwrap(), Scheme::Sqlite);
        assert_eq!(Scheme::of("REDISS://h").unwrap(), Scheme::Redis);
        let e = Scheme::of("ftp://x").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        assert!(e.to_string().contains("unknown URL scheme `ftp`"), "{e}");
        let e = Scheme::of("not a url").unwrap_err();
        assert_eq!(e.kind(), ErrorKind::InvalidArgument);
        if !cfg!(feature = "dynamodb") {
            let e = open("dynamodb://table").unwrap_err();
            assert_eq!(e.kind(), ErrorKind::FeatureDisabled);
            assert!(e.to_string().contains("cargo feature `dynamodb`"), "{e}");
        }
    }

    #[test]
    fn bad_parameters_are_invalid_arguments() {
        for url in [
            "memory://?colour=blue",
            "sqlite://x.db?busy_timeout=soon",
            "sqlite://x.db?synchronous=off",
            "sqlite://",
            "sqlite://:memory:",
        ] {
            let e = open(url).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{url}: {e}");
        }
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
