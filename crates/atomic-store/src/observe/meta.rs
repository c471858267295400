//! What a span says about the store it came from: OpenTelemetry's
//! `db.system.name`, `db.namespace`, `server.address` and `server.port`.
//! Built once when the store is opened, from its URL, and never holding a
//! password or a query parameter.

use crate::backends::Scheme;
use crate::StoreUrl;

/// The fixed facts about one store that every span of the store carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreMeta {
    pub(crate) system: &'static str,
    pub(crate) backend: &'static str,
    pub(crate) namespace: String,
    pub(crate) address: Option<String>,
    pub(crate) port: Option<u16>,
}

impl StoreMeta {
    /// Facts for a store of your own: `system` is its OpenTelemetry
    /// `db.system.name` (for example `"redis"`), `backend` the name its
    /// errors and metrics use, `namespace` its key prefix.
    pub fn new(system: &'static str, backend: &'static str, namespace: impl Into<String>) -> Self {
        StoreMeta {
            system,
            backend,
            namespace: namespace.into(),
            address: None,
            port: None,
        }
    }

    /// The server the store talks to (`server.address`, `server.port`).
    pub fn with_server(mut self, address: impl Into<String>, port: Option<u16>) -> Self {
        self.address = Some(address.into());
        self.port = port;
        self
    }

    /// The store's `db.system.name`.
    pub fn system(&self) -> &'static str {
        self.system
    }

    /// The key prefix (`db.namespace`).
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// The server's host and port, if the store has a server.
    pub fn server(&self) -> Option<(&str, Option<u16>)> {
        self.address.as_deref().map(|a| (a, self.port))
    }

    /// The facts of a built-in store, read from the URL it was opened with.
    pub(crate) fn of_url(scheme: Scheme, backend: &'static str, url: &str) -> StoreMeta {
        let Ok(parsed) = StoreUrl::parse("atomic-store", url, None) else {
            return StoreMeta::new(scheme.db_system_name(), backend, "");
        };
        // An `@` after the first `?` may end a password that holds a `?`:
        // then no part of the location is safe to show.
        let userinfo_in_query = url.split_once('?').is_some_and(|(_, q)| q.contains('@'))
            && !parsed.location.contains('@');
        let namespace = parsed.prefix().unwrap_or_default();
        let meta = StoreMeta::new(scheme.db_system_name(), backend, namespace);
        match server_of(scheme, &parsed) {
            Some((host, port)) if !userinfo_in_query => meta.with_server(host, port),
            _ => meta,
        }
    }
}

/// The first server a URL names, with the scheme's default port.
fn server_of(scheme: Scheme, url: &StoreUrl) -> Option<(String, Option<u16>)> {
    let default_port = scheme.default_port()?;
    let location = match scheme {
        Scheme::Dynamodb => {
            let Some(endpoint) = url.param("endpoint") else {
                let region = url.param("region")?;
                return Some((format!("dynamodb.{region}.amazonaws.com"), Some(443)));
            };
            let (scheme, rest) = endpoint.split_once("://").unwrap_or(("https", endpoint));
            let port = if scheme == "http" { 80 } else { 443 };
            return host_and_port(rest, Some(port));
        }
        Scheme::Postgres => {
            let host = match url.param("host") {
                Some(host) if host.starts_with('/') => return None, // a Unix socket
                Some(host) => host,
                None => &url.location,
            };
            let (host, port) = host_and_port(host, Some(default_port))?;
            let port = url.param("port").and_then(|p| p.parse().ok()).or(port);
            return Some((host, port));
        }
        _ => &url.location,
    };
    let port = if url.scheme.ends_with("+srv") {
        None
    } else if url.scheme.ends_with("+sentinel") {
        Some(crate::url::SENTINEL_PORT)
    } else {
        Some(default_port)
    };
    host_and_port(location, port)
}

/// `[user[:password]@]host[:port][,more…][/path]` → the first host and its
/// port. The userinfo is dropped first: a password never gets further.
fn host_and_port(location: &str, default_port: Option<u16>) -> Option<(String, Option<u16>)> {
    let after_userinfo = location.rsplit_once('@').map_or(location, |(_, rest)| rest);
    let authority = after_userinfo.split('/').next().unwrap_or("");
    let first = authority.split(',').next().unwrap_or("");
    if first.is_empty() {
        return None;
    }
    let (host, port) = if let Some(v6) = first.strip_prefix('[') {
        let (host, rest) = v6.split_once(']')?;
        (host, rest.strip_prefix(':'))
    } else {
        match first.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (first, None),
        }
    };
    let port = match port {
        Some(p) => Some(p.parse().ok()?),
        None => default_port,
    };
    Some((host.to_owned(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(url: &str) -> Option<(String, Option<u16>)> {
        let scheme = Scheme::of(url).unwrap();
        let meta = StoreMeta::of_url(scheme, "x", url);
        meta.server().map(|(a, p)| (a.to_owned(), p))
    }

    fn at(host: &str, port: u16) -> Option<(String, Option<u16>)> {
        Some((host.to_owned(), Some(port)))
    }

    #[test]
    fn the_server_is_read_from_every_scheme() {
        assert_eq!(server("memory://"), None);
        assert_eq!(server("sqlite:///tmp/a.db"), None);
        assert_eq!(server("redis://127.0.0.1:16379"), at("127.0.0.1", 16379));
        assert_eq!(server("rediss://cache.example"), at("cache.example", 6379));
        assert_eq!(server("redis+cluster://a:7000,b:7001"), at("a", 7000));
        assert_eq!(
            server("redis+sentinel://u:pw@s1,s2/primary"),
            at("s1", 26379)
        );
        assert_eq!(server("postgres://u:pw@db:5433/app"), at("db", 5433));
        assert_eq!(server("postgres:///app?host=/run/pg"), None);
        assert_eq!(
            server("postgres:///app?host=pg.internal"),
            at("pg.internal", 5432)
        );
        assert_eq!(server("postgres:///app?host=pg&port=6432"), at("pg", 6432));
        assert_eq!(server("etcd://e1:2379,e2:2379"), at("e1", 2379));
        assert_eq!(server("zk://z1,z2/chroot"), at("z1", 2181));
        assert_eq!(server("mongodb://[::1]:27018/db"), at("::1", 27018));
        assert_eq!(
            server("mongodb+srv://u:p@cluster.example/db"),
            Some(("cluster.example".to_owned(), None))
        );
        assert_eq!(
            server("dynamodb://t?region=eu-west-1"),
            at("dynamodb.eu-west-1.amazonaws.com", 443)
        );
        assert_eq!(
            server("dynamodb://t?region=x&endpoint=http://127.0.0.1:8000"),
            at("127.0.0.1", 8000)
        );
    }

    #[test]
    fn a_password_is_never_kept() {
        for (url, host) in [
            ("redis://user:p@ss@host:1", "host"),
            ("redis://:p@ss@host", "host"),
            ("postgres://u:p@ss@host/db?password=p@ss", "host"),
            ("mongodb://u:p@ss@h1,h2/db", "h1"),
        ] {
            let meta = StoreMeta::of_url(Scheme::of(url).unwrap(), "x", url);
            assert!(!format!("{meta:?}").contains("p@ss"), "{url}: {meta:?}");
            assert_eq!(meta.server().map(|s| s.0), Some(host), "{url}");
        }
        // A `?` inside the password: the location is `admin:1234`.
        let meta = StoreMeta::of_url(Scheme::Redis, "redis", "redis://admin:1234?x@host");
        assert_eq!(meta.server(), None, "{meta:?}");
    }

    #[test]
    fn the_namespace_is_the_prefix() {
        let meta = StoreMeta::of_url(Scheme::Memory, "memory", "memory://?prefix=app");
        assert_eq!(meta.namespace(), "app");
        assert_eq!(meta.system(), "memory");
        let meta = StoreMeta::of_url(Scheme::Memory, "memory", "memory://");
        assert_eq!(meta.namespace(), crate::rules::DEFAULT_PREFIX);
    }
}
