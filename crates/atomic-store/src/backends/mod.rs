//! The backends, listed once. Adding one is a module here, its cargo
//! feature, and one line of [`backends!`] below; `Scheme`, the feature
//! names and [`open`](crate::open)'s dispatch are generated from that line.

use std::sync::Arc;

use crate::observe::{StoreMeta, TracingLayer};
use crate::{AtomicStore, Error, ErrorKind, Operation, Result};

// Unused only in a build without any backend.
#[allow(dead_code)]
pub(crate) mod checked;
#[cfg(any(feature = "postgres", feature = "mysql"))]
pub(crate) mod purger;

/// A store's `Debug`: its type name and the fields listed as
/// `label: path.on.self`. Only what helps a reader, and the URL only in its
/// redacted form, so that a password never reaches a log. (The network
/// stores use it; memory and SQLite derive theirs.)
#[cfg(feature = "_network")]
macro_rules! store_debug {
    ($store:ident { $($label:ident: $($field:ident).+),* $(,)? }) => {
        impl std::fmt::Debug for $store {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(stringify!($store))
                    $(.field(stringify!($label), &self.$($field).+))*
                    .finish()
            }
        }
    };
}

macro_rules! backends {
    ($(
        $(#[$doc:meta])*
        $variant:ident, $module:ident, $feature:literal, [$($scheme:literal),+], $open:path,
        system: $system:literal, port: $port:expr;
    )*) => {
        $(
            #[cfg(feature = $feature)]
            pub mod $module;
        )*

        /// A backend this crate knows, whether or not its feature is compiled in.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        #[non_exhaustive]
        pub enum Scheme {
            $( $(#[$doc])* $variant, )*
        }

        impl Scheme {
            /// Every scheme with the URL prefixes it answers to.
            pub const ALL: &'static [(Scheme, &'static [&'static str])] =
                &[$( (Scheme::$variant, &[$($scheme),+]), )*];

            /// The cargo feature that compiles this backend in.
            pub fn feature(self) -> &'static str {
                match self {
                    $( Scheme::$variant => $feature, )*
                }
            }

            /// OpenTelemetry's `db.system.name` for this backend.
            pub fn db_system_name(self) -> &'static str {
                match self {
                    $( Scheme::$variant => $system, )*
                }
            }

            /// The port a URL without one means, for backends with a server.
            pub fn default_port(self) -> Option<u16> {
                match self {
                    $( Scheme::$variant => $port, )*
                }
            }

            /// Is this backend implemented in this build?
            pub fn is_available(self) -> bool {
                match self {
                    $( Scheme::$variant => cfg!(feature = $feature), )*
                }
            }
        }

        /// Open `url` with the backend of `scheme`, in `layer` if one is given.
        // A build without backends has no arm that reads `url`.
        #[cfg_attr(not(any($(feature = $feature),*)), allow(unused_variables))]
        pub(crate) fn open_scheme(
            scheme: Scheme,
            url: &str,
            layer: Option<&TracingLayer>,
        ) -> Result<Arc<dyn AtomicStore>> {
            match scheme {
                $(
                    #[cfg(feature = $feature)]
                    Scheme::$variant => Ok(in_layer($open(url)?, scheme, url, layer)),
                )*
                #[allow(unreachable_patterns)]
                _ => Err(feature_disabled(scheme)),
            }
        }
    };
}

backends! {
    /// `memory://[NAME]`
    Memory, memory, "memory", ["memory"], memory::MemoryStore::open_url,
        system: "memory", port: None;
    /// `sqlite://PATH`
    Sqlite, sqlite, "sqlite", ["sqlite"], sqlite::SqliteStore::open_url,
        system: "sqlite", port: None;
    /// `redis://`, `rediss://`, `redis+cluster://`, `rediss+cluster://`, `redis+sentinel://`
    Redis, redis, "redis", ["redis", "rediss", "redis+cluster", "rediss+cluster", "redis+sentinel"], redis::RedisStore::open,
        system: "redis", port: Some(6379);
    /// `postgres://`, `postgresql://`
    Postgres, postgres, "postgres", ["postgres", "postgresql"], postgres::PostgresStore::open,
        system: "postgresql", port: Some(5432);
    /// `etcd://`, `etcds://`
    Etcd, etcd, "etcd", ["etcd", "etcds"], etcd::EtcdStore::open,
        system: "etcd", port: Some(2379);
    /// `zk://`
    Zookeeper, zookeeper, "zookeeper", ["zk"], zookeeper::ZookeeperStore::open,
        system: "zookeeper", port: Some(2181);
    /// `dynamodb://`
    Dynamodb, dynamodb, "dynamodb", ["dynamodb"], dynamodb::DynamoStore::open,
        system: "aws.dynamodb", port: Some(443);
    /// `mongodb://`, `mongodb+srv://`
    Mongodb, mongodb, "mongodb", ["mongodb", "mongodb+srv"], mongodb::MongoStore::open,
        system: "mongodb", port: Some(27017);
    /// `mysql://` (MySQL and MariaDB)
    Mysql, mysql, "mysql", ["mysql"], mysql::MysqlStore::open,
        system: "mysql", port: Some(3306);
}

/// A store as `open` returns it: traced by `layer`, or bare.
#[allow(dead_code)] // in a build without backends
fn in_layer<S: AtomicStore>(
    store: S,
    scheme: Scheme,
    url: &str,
    layer: Option<&TracingLayer>,
) -> Arc<dyn AtomicStore> {
    match layer {
        Some(layer) => {
            let meta = StoreMeta::of_url(scheme, store.capabilities().backend, url);
            Arc::new(layer.layer(store, meta))
        }
        None => Arc::new(store),
    }
}

pub(crate) fn feature_disabled(scheme: Scheme) -> Error {
    Error::new(
        ErrorKind::FeatureDisabled,
        "atomic-store",
        Operation::Open,
        format!(
            "the {0} backend is not compiled in: enable the cargo feature `{0}` of atomic-store",
            scheme.feature()
        ),
    )
}
