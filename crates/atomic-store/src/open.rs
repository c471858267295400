//! `open(url)`: pick a backend from the URL's scheme.

use std::sync::Arc;

use crate::backends::{feature_disabled, open_scheme, Scheme};
use crate::observe::TracingLayer;
use crate::url::split_scheme;
use crate::{AtomicStore, Error, Operation, Result};

const OPEN: &str = "atomic-store";

impl Scheme {
    /// The scheme of `url`.
    pub fn of(url: &str) -> Result<Scheme> {
        let (name, _) = split_scheme(OPEN, url)?;
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

/// Open the store a URL names.
///
/// The [backend table](crate#backends) lists the URLs, features and
/// parameters. Every URL takes `?prefix=NAME` (default `atomic`), which
/// namespaces every key as `NAME:key`. Opening does not contact a server:
/// network backends connect on first use, so connection failures show up as
/// errors of the first operation.
///
/// A malformed URL or unknown scheme gives
/// [`InvalidArgument`](crate::ErrorKind::InvalidArgument); a known scheme
/// whose feature is off gives
/// [`FeatureDisabled`](crate::ErrorKind::FeatureDisabled) naming the feature.
///
/// ```
/// # async fn demo() -> atomic_store::Result<()> {
/// let store = atomic_store::open("memory://?prefix=demo")?;
/// assert_eq!(store.incr("visits").await?, 1);
/// # Ok(()) }
/// # tokio::runtime::Runtime::new().unwrap().block_on(demo()).unwrap();
/// ```
///
/// The store is traced by the default [`TracingLayer`]: see
/// [`observe`](crate::observe).
pub fn open(url: &str) -> Result<Arc<dyn AtomicStore>> {
    open_with(url, Some(&TracingLayer::default()))
}

/// [`open`], in the given layer, or bare with `None` (no spans or metrics
/// of the store's operations: for comparing against the layer).
pub fn open_with(url: &str, layer: Option<&TracingLayer>) -> Result<Arc<dyn AtomicStore>> {
    let scheme = Scheme::of(url)?;
    if !scheme.is_available() {
        return Err(feature_disabled(scheme));
    }
    open_scheme(scheme, url, layer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

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
}
