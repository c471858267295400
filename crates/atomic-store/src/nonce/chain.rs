//! The chain's transaction counts through alloy: [`JsonRpcSource`] for an
//! RPC URL, [`ProviderChain`] for any alloy provider.

use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use alloy_json_rpc::RpcError;
use alloy_network::{Ethereum, Network};
use alloy_provider::{Provider, ProviderBuilder, RootProvider};
use alloy_transport::{TransportError, TransportErrorKind};
use async_trait::async_trait;

use super::{Address, PendingNonceSource};
use crate::{Error, ErrorKind, Operation, Result};

/// An RPC URL for messages: scheme, host and port only. Providers put API
/// keys in the path (`/v3/KEY`), the query or the user info, so none of
/// them is shown (`/…` says something was cut).
pub fn redact_rpc_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(u) => {
            let port = u.port().map(|p| format!(":{p}")).unwrap_or_default();
            let cut = !matches!(u.path(), "" | "/")
                || u.query().is_some()
                || u.fragment().is_some()
                || !u.username().is_empty()
                || u.password().is_some();
            format!(
                "{}://{}{port}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                if cut { "/…" } else { "" }
            )
        }
        // Unparsable: anything after the scheme may be a secret.
        Err(_) => match url.split_once("://") {
            Some((scheme, _)) if scheme.bytes().all(|b| b.is_ascii_alphanumeric()) => {
                format!("{scheme}://…")
            }
            _ => "(not a URL)".to_owned(),
        },
    }
}

fn rpc_error(kind: ErrorKind, message: impl Into<String>) -> Error {
    Error::new(kind, "json-rpc", Operation::AssignNonce, message)
}

/// The contract's error for a failed read from the node. alloy's own
/// messages are not used: reqwest's hold the URL, and with it any API key.
pub(crate) fn read_error(method: &str, shown_url: &str, e: TransportError) -> Error {
    match e {
        RpcError::Transport(TransportErrorKind::Custom(source)) => {
            match source.downcast::<reqwest::Error>() {
                Ok(e) => {
                    let kind = if e.is_timeout() {
                        ErrorKind::Timeout
                    } else {
                        ErrorKind::Unavailable
                    };
                    rpc_error(kind, format!("{method} to {shown_url} failed"))
                        .with_temporary(true)
                        .with_source(e.without_url())
                }
                Err(_) => rpc_error(
                    ErrorKind::Unavailable,
                    format!("{method} to {shown_url} failed"),
                )
                .with_temporary(true),
            }
        }
        RpcError::Transport(TransportErrorKind::HttpError(h)) => rpc_error(
            ErrorKind::Unavailable,
            format!("{method}: the RPC node answered HTTP {}", h.status),
        )
        .with_temporary(h.status >= 500 || h.status == 429),
        RpcError::Transport(_) => rpc_error(
            ErrorKind::Unavailable,
            format!("{method} to {shown_url} failed"),
        )
        .with_temporary(true),
        RpcError::ErrorResp(payload) => rpc_error(
            ErrorKind::Backend,
            format!(
                "{method}: the RPC node answered error {}: {}",
                payload.code,
                shortened(&payload.message)
            ),
        ),
        RpcError::DeserError { text, .. } => {
            let what = if serde_json::from_str::<serde_json::Value>(&text).is_ok() {
                format!("cannot be read: {}", shortened(&text))
            } else {
                "is not JSON".to_owned()
            };
            rpc_error(
                ErrorKind::Backend,
                format!("{method}: the RPC node's reply {what}"),
            )
        }
        other => rpc_error(
            ErrorKind::Backend,
            format!("{method}: {}", shortened(&other.to_string())),
        ),
    }
}

pub(crate) fn shortened(text: &str) -> Cow<'_, str> {
    if text.len() <= 200 {
        return Cow::Borrowed(text);
    }
    let mut end = 200;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &text[..end]))
}

/// The chain's counts from an RPC URL (HTTP or HTTPS), through an alloy
/// `RootProvider` on a client with a timeout per request.
#[derive(Clone)]
pub struct JsonRpcSource {
    shown_url: String,
    provider: RootProvider<Ethereum>,
}

impl fmt::Debug for JsonRpcSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonRpcSource")
            .field("url", &self.shown_url)
            .finish()
    }
}

impl JsonRpcSource {
    /// A client for `url` with a 5 s timeout per request.
    pub fn new(url: &str) -> Result<Self> {
        Self::with_timeout(url, Duration::from_secs(5))
    }

    /// A client for `url` with the given timeout per request.
    pub fn with_timeout(url: &str, timeout: Duration) -> Result<Self> {
        let shown_url = redact_rpc_url(url);
        let parsed = reqwest::Url::parse(url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                rpc_error(
                    ErrorKind::InvalidArgument,
                    format!("RPC URL {shown_url:?} is not an http:// or https:// URL (characters such as / ? # in a password must be percent-encoded)"),
                )
            })?;
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .build()
            .map_err(|e| {
                rpc_error(ErrorKind::InvalidArgument, "cannot build the HTTP client").with_source(e)
            })?;
        let provider = ProviderBuilder::new()
            .disable_recommended_fillers()
            .connect_reqwest(client, parsed);
        Ok(JsonRpcSource {
            shown_url,
            provider,
        })
    }

    /// The alloy provider underneath.
    pub fn provider(&self) -> &RootProvider<Ethereum> {
        &self.provider
    }

    /// Call `method` with `params`; returns the `result` field.
    pub async fn call(&self, method: &str, params: serde_json::Value) -> Result<serde_json::Value> {
        self.provider
            .raw_request::<_, serde_json::Value>(Cow::Owned(method.to_owned()), params)
            .await
            .map_err(|e| read_error(method, &self.shown_url, e))
    }
}

#[async_trait]
impl PendingNonceSource for JsonRpcSource {
    async fn pending(&self, address: &Address) -> Result<u64> {
        self.provider
            .get_transaction_count(*address)
            .pending()
            .await
            .map_err(|e| read_error("eth_getTransactionCount", &self.shown_url, e))
    }

    async fn confirmed(&self, address: &Address) -> Result<u64> {
        self.provider
            .get_transaction_count(*address)
            .latest()
            .await
            .map_err(|e| read_error("eth_getTransactionCount", &self.shown_url, e))
    }
}

/// Any alloy provider as the chain a [`NonceManager`](super::NonceManager)
/// reads its counts from.
pub struct ProviderChain<P, N = Ethereum> {
    provider: P,
    network: PhantomData<fn() -> N>,
}

impl<P, N> ProviderChain<P, N> {
    /// Read counts through `provider`.
    pub fn new(provider: P) -> Self {
        ProviderChain {
            provider,
            network: PhantomData,
        }
    }
}

impl<P, N> fmt::Debug for ProviderChain<P, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProviderChain")
    }
}

#[async_trait]
impl<P: Provider<N>, N: Network> PendingNonceSource for ProviderChain<P, N> {
    async fn pending(&self, address: &Address) -> Result<u64> {
        self.provider
            .get_transaction_count(*address)
            .pending()
            .await
            .map_err(|e| read_error("eth_getTransactionCount", "the provider's node", e))
    }

    async fn confirmed(&self, address: &Address) -> Result<u64> {
        self.provider
            .get_transaction_count(*address)
            .latest()
            .await
            .map_err(|e| read_error("eth_getTransactionCount", "the provider's node", e))
    }
}

#[cfg(test)]
mod tests {
    use super::redact_rpc_url;

    #[test]
    fn rpc_urls_show_scheme_host_and_port_only() {
        for (url, shown) in [
            ("http://127.0.0.1:8545", "http://127.0.0.1:8545"),
            (
                "https://mainnet.example/v3/KEY",
                "https://mainnet.example/…",
            ),
            ("https://node.example/?apikey=KEY", "https://node.example/…"),
            ("https://user:KEY@node.example", "https://node.example/…"),
            // An unescaped / in the password: not parsable, nothing shown.
            ("https://user:pa/ss@node.example/v3/KEY", "https://…"),
            ("no url at all KEY", "(not a URL)"),
        ] {
            assert_eq!(redact_rpc_url(url), shown, "{url}");
        }
    }
}
