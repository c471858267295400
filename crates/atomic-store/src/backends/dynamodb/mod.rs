//! `dynamodb://TABLE?region=…`: Amazon DynamoDB (feature `dynamodb`).
//!
//! - Parameters: `region` (else the standard AWS chain's), `endpoint` (a
//!   local server), `create_table=true` (create a missing table, on-demand
//!   billing, and turn on its TTL attribute), `max_clock_skew` (default
//!   1s, at most 10s), `prefix`, `timeout` (per request, default 5s),
//!   `connect_timeout` (default 2s). Credentials come from the standard AWS
//!   chain: environment, shared profile, web identity, ECS/EC2 roles; they
//!   must load within `connect_timeout`.
//! - The table's only key is the string partition key `k`, `{prefix}:{key}`.
//!   An existing table with another key schema is refused, never changed.
//! - Attributes: `v` (string value) or `n` (counter, a number), `exp` (the
//!   deadline, ms on the client's clock), `ttl` (DynamoDB's TTL attribute,
//!   epoch seconds), `f` (the fencing counter).
//! - Every operation is one conditional `UpdateItem` where the API allows:
//!   `incr` and `assign_nonce` add to `n` under a condition that the value
//!   is a live counter in range, `acquire_lock` writes only when the item
//!   is absent or expired, release and extend are conditional on the id,
//!   `compare_and_set` on the expected value. A failed condition is an
//!   ordinary outcome; when it only means "not the common case" (a string
//!   counter, an expired counter, a nonce outside the window) the item is
//!   read and written again under a condition that pins the state read.
//! - **DynamoDB has no server clock**, so expiry is decided with the
//!   client's clock: reads treat a key as gone at its deadline, and a lock
//!   is taken over only `max_clock_skew` after it. Locks stay exclusive as
//!   long as the clocks of all clients are within `max_clock_skew` of each
//!   other. The TTL attribute is set a minute past that, so DynamoDB
//!   deletes dead items eventually; reads never rely on it.
//! - Fencing tokens: `f` rises by one with every lock taken and survives
//!   release, delete and expiry. A new item (or one DynamoDB's TTL removed)
//!   starts from the client's clock in microseconds, so tokens keep rising
//!   across removal too.
//! - Failures (one table, `classify`; the SDK's own retries are off):
//!   - not sent, tried again by every operation: a refused connection,
//!     and throttling, request limits, 503 and transaction conflicts
//!     (DynamoDB refused to run the request);
//!   - never sent, final: a request that could not be built or had no
//!     credentials (the SDK had not handed it to the HTTP client yet).
//!     No credentials is `InvalidArgument`, credentials that did not load
//!     within `connect_timeout` `Unavailable`; both say what to set;
//!   - lost reply, maybe applied (reads try again, writes end
//!     `OutcomeUnknown`): a timeout or a broken connection after sending,
//!     a 500, and an answer the SDK could not read;
//!   - every other error code is DynamoDB's answer. The table check before
//!     the first request is a read, so a lost reply there is `Unavailable`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::config::interceptors::BeforeTransmitInterceptorContextRef;
use aws_sdk_dynamodb::config::retry::RetryConfig;
use aws_sdk_dynamodb::config::timeout::TimeoutConfig;
use aws_sdk_dynamodb::config::{
    BehaviorVersion, ConfigBag, IdentityCache, Intercept, Region, RuntimeComponents,
};
use aws_sdk_dynamodb::error::{BoxError, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::update_item::builders::UpdateItemFluentBuilder;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};
use aws_sdk_dynamodb::Client;
use tokio::sync::OnceCell;

use crate::clock::now_ms;
use crate::url::StoreUrl;
use crate::retry::{self, with_retries, Failure};
use crate::rules;
use crate::{
    Capabilities, Error, ErrorKind, ExpiryClock, KeyInfo,
    Lock, LockId, Operation, Result,
};

const BACKEND: &str = "dynamodb";
const KEY: &str = "k";
/// Dead items keep their TTL attribute this long past their deadline.
const TTL_GRACE_S: i64 = 60;
const MAX_SKEW: Duration = Duration::from_secs(10);
const CONDITION_FAILED: &str = "ConditionalCheckFailedException";

mod errors;
mod item;
mod ops;

pub use errors::DynamoError;
use errors::*;
use item::*;

/// The store behind `dynamodb://`.
pub struct DynamoStore {
    table: String,
    region: Option<String>,
    endpoint: Option<String>,
    create_table: bool,
    skew_ms: i64,
    timeout: Duration,
    connect_timeout: Duration,
    prefix: String,
    client: OnceCell<Client>,
    redacted_url: String,
}

store_debug!(DynamoStore { url: redacted_url, table: table, prefix: prefix, max_clock_skew_ms: skew_ms });

/// DynamoDB's TTL attribute for a deadline: epoch seconds, after the
/// deadline, the skew margin and a grace minute.
fn ttl_attribute(exp_ms: i64, skew_ms: i64) -> i64 {
    (exp_ms + skew_ms).div_euclid(1000) + 1 + TTL_GRACE_S
}

impl DynamoStore {
    /// Open from a URL (see the module docs). Does not connect.
    pub fn open(url: &str) -> Result<Self> {
        let parsed = StoreUrl::parse(
            BACKEND,
            url,
            Some(&[
                "region",
                "endpoint",
                "create_table",
                "max_clock_skew",
                "timeout",
                "connect_timeout",
            ]),
        )?;
        let redacted_url = parsed.redacted().to_owned();
        let table = parsed.location.trim_end_matches('/').to_owned();
        let valid_name = (3..=255).contains(&table.len())
            && table
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c));
        if !valid_name {
            return Err(parsed.error(format!(
                "`{table}` is not a DynamoDB table name (3-255 of A-Z a-z 0-9 _ - .); URLs look like dynamodb://TABLE?region=us-east-1"
            )));
        }
        let prefix = parsed.prefix()?;
        let create_table = parsed.flag("create_table", false)?;
        let skew = parsed
            .duration("max_clock_skew")?
            .unwrap_or(Duration::from_secs(1));
        if skew > MAX_SKEW {
            return Err(parsed.error(format!(
                "max_clock_skew {skew:?} is above the limit of {MAX_SKEW:?}; fix the clocks instead"
            )));
        }
        let timeout = parsed.timeout(Duration::from_secs(5))?;
        let connect_timeout = parsed.connect_timeout(Duration::from_secs(2))?;
        let endpoint = parsed.param("endpoint").map(str::to_owned);
        if let Some(e) = &endpoint {
            let ok = url::Url::parse(e).is_ok_and(|u| matches!(u.scheme(), "http" | "https"));
            if !ok {
                return Err(parsed.error(format!(
                    "endpoint `{e}` is not an http:// or https:// URL"
                )));
            }
        }
        Ok(DynamoStore {
            table,
            region: parsed.param("region").map(str::to_owned),
            endpoint,
            create_table,
            skew_ms: skew.as_millis() as i64,
            timeout,
            connect_timeout,
            prefix,
            client: OnceCell::new(),
            redacted_url,
        })
    }

    /// The SDK client this store uses (configured, table checked), for
    /// requests of your own, such as a benchmark's raw baseline.
    pub async fn sdk_client(&self) -> Result<Client> {
        self.client(Operation::Open).await.cloned()
    }

    /// The table's name.
    pub fn table(&self) -> &str {
        &self.table
    }

    /// The client, set up (and the table checked or created) on first use.
    async fn client(&self, op: Operation) -> Result<&Client> {
        self.client
            .get_or_try_init(|| async {
                let http = aws_smithy_http_client::Builder::new()
                    .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                        aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
                    ))
                    .build_https();
                let mut loader = aws_config::defaults(BehaviorVersion::latest())
                    .http_client(http)
                    // Credentials that do not come in time (a silent
                    // instance metadata service) fail the request unsent.
                    .identity_cache(
                        IdentityCache::lazy()
                            .load_timeout(self.connect_timeout)
                            .build(),
                    )
                    .retry_config(RetryConfig::disabled())
                    .timeout_config(
                        TimeoutConfig::builder()
                            .connect_timeout(self.connect_timeout)
                            .operation_attempt_timeout(self.timeout)
                            .build(),
                    );
                if let Some(r) = &self.region {
                    loader = loader.region(Region::new(r.clone()));
                }
                if let Some(e) = &self.endpoint {
                    loader = loader.endpoint_url(e.clone());
                }
                // Without a region in the URL or the environment, the
                // chain asks the instance metadata service; do not wait long.
                let config = match tokio::time::timeout(self.connect_timeout, loader.load()).await {
                    Ok(config) if config.region().is_some() => config,
                    _ => {
                        return Err(Error::invalid(
                            BACKEND,
                            op,
                            "no AWS region: add ?region=… to the URL or set AWS_REGION",
                        ))
                    }
                };
                let client = Client::new(&config);
                self.check_table(op, &client).await?;
                Ok(client)
            })
            .await
    }

    /// Check the table's key schema, or create the table when asked to.
    async fn check_table(&self, op: Operation, client: &Client) -> Result<()> {
        let described = attempt(|mark| {
            client
                .describe_table()
                .table_name(&self.table)
                .customize()
                .interceptor(mark)
                .send()
        })
        .await;
        let table = match described {
            Ok(out) => out.table,
            Err(Failure::Reply(e))
                if e.code() == Some("ResourceNotFoundException") && self.create_table =>
            {
                self.create(op, client).await?;
                return Ok(());
            }
            Err(f) => return Err(setup_error(f, op, self.timeout)),
        };
        let Some(table) = table else {
            return Err(Error::new(
                ErrorKind::Backend,
                BACKEND,
                op,
                format!("DescribeTable gave no description of `{}`", self.table),
            ));
        };
        let schema: Vec<(String, String)> = table
            .key_schema()
            .iter()
            .map(|k| {
                (
                    k.attribute_name().to_owned(),
                    k.key_type().as_str().to_owned(),
                )
            })
            .collect();
        let key_is_string = table
            .attribute_definitions()
            .iter()
            .any(|a| a.attribute_name() == KEY && a.attribute_type() == &ScalarAttributeType::S);
        if schema != [(KEY.to_owned(), "HASH".to_owned())] || !key_is_string {
            return Err(Error::new(
                ErrorKind::Backend,
                BACKEND,
                op,
                format!(
                    "table `{}` has the key schema {schema:?}; atomic-store needs a table whose only key is the string partition key `{KEY}` (it does not change existing tables)",
                    self.table
                ),
            ));
        }
        Ok(())
    }

    async fn create(&self, op: Operation, client: &Client) -> Result<()> {
        let build = |e: aws_sdk_dynamodb::error::BuildError| {
            Error::new(ErrorKind::Backend, BACKEND, op, "bad table definition").with_source(e)
        };
        let key_attribute = AttributeDefinition::builder()
            .attribute_name(KEY)
            .attribute_type(ScalarAttributeType::S)
            .build()
            .map_err(build)?;
        let key_schema = KeySchemaElement::builder()
            .attribute_name(KEY)
            .key_type(KeyType::Hash)
            .build()
            .map_err(build)?;
        let created = attempt(|mark| {
            client
                .create_table()
                .table_name(&self.table)
                .billing_mode(BillingMode::PayPerRequest)
                .attribute_definitions(key_attribute)
                .key_schema(key_schema)
                .customize()
                .interceptor(mark)
                .send()
        })
        .await;
        match created {
            Ok(_) => {}
            // Another process is creating it.
            Err(Failure::Reply(e)) if e.code() == Some("ResourceInUseException") => {}
            Err(f) => return Err(setup_error(f, op, self.timeout)),
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let out = attempt(|mark| {
                client
                    .describe_table()
                    .table_name(&self.table)
                    .customize()
                    .interceptor(mark)
                    .send()
            })
            .await
            .map_err(|f| setup_error(f, op, self.timeout))?;
            if out.table().and_then(|t| t.table_status()) == Some(&TableStatus::Active) {
                break;
            }
            if tokio::time::Instant::now() > deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    BACKEND,
                    op,
                    format!("table `{}` did not become active in 2 minutes", self.table),
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let ttl = client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("ttl")
                    .enabled(true)
                    .build()
                    .map_err(build)?,
            )
            .send()
            .await;
        if let Err(e) = ttl {
            // Some local servers (dynalite) have no TTL; reads never rely on it.
            tracing::warn!(table = %self.table, error = %short_text(&e), "could not turn on DynamoDB's TTL attribute");
        }
        Ok(())
    }

    /// Run one `UpdateItem` on `full`; `Ok(None)` when its condition failed.
    async fn update(
        &self,
        op: Operation,
        full: &str,
        u: Update,
    ) -> Result<Option<HashMap<String, AttributeValue>>> {
        let request = self.update_request(op, full, &u).await?;
        let result = with_retries(op, || async {
            attempt(|mark| request.clone().customize().interceptor(mark).send()).await
        })
        .await
        .map_err(|f| into_error(f, op, self.timeout));
        match result {
            Ok(out) => Ok(Some(out.attributes.unwrap_or_default())),
            Err(e) if condition_failed(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The `UpdateItem` request `u` on `full`, ready to send: the only
    /// place requests are built, so the CLI's baseline sends the same.
    async fn update_request(
        &self,
        op: Operation,
        full: &str,
        u: &Update,
    ) -> Result<UpdateItemFluentBuilder> {
        let client = self.client(op).await?;
        let exprs = format!("{} {}", u.update, u.condition.as_deref().unwrap_or(""));
        let names: HashMap<String, String> = [
            ("#v", "v"),
            ("#n", "n"),
            ("#e", "exp"),
            ("#t", "ttl"),
            ("#f", "f"),
            ("#k", KEY),
        ]
        .into_iter()
        .filter(|(alias, _)| uses(&exprs, alias))
        .map(|(a, n)| (a.to_owned(), n.to_owned()))
        .collect();
        let values: HashMap<String, AttributeValue> = u
            .values
            .iter()
            .filter(|(name, _)| uses(&exprs, name))
            .map(|(name, v)| ((*name).to_owned(), v.clone()))
            .collect();
        let request = client
            .update_item()
            .table_name(&self.table)
            .key(KEY, s(full))
            .update_expression(&u.update)
            .set_condition_expression(u.condition.clone())
            .set_expression_attribute_names(Some(names))
            .return_values(u.returns.clone());
        Ok(if values.is_empty() {
            request
        } else {
            request.set_expression_attribute_values(Some(values))
        })
    }

    async fn read(&self, op: Operation, full: &str) -> Result<State> {
        let read_op = crate::retry::read_step(op);
        let client = self.client(op).await?;
        let out = with_retries(read_op, || async {
            attempt(|mark| {
                client
                    .get_item()
                    .table_name(&self.table)
                    .key(KEY, s(full))
                    .consistent_read(true)
                    .customize()
                    .interceptor(mark)
                    .send()
            })
            .await
        })
        .await
        .map_err(|f| into_error(f, read_op, self.timeout))?;
        Ok(out.item.as_ref().map(State::from_item).unwrap_or_default())
    }

    /// Delete the item of `full`, fencing counter and all.
    async fn delete_item(&self, op: Operation, full: &str) -> Result<()> {
        let client = self.client(op).await?;
        with_retries(op, || async {
            attempt(|mark| {
                client
                    .delete_item()
                    .table_name(&self.table)
                    .key(KEY, s(full))
                    .customize()
                    .interceptor(mark)
                    .send()
            })
            .await
        })
        .await
        .map_err(|f| into_error(f, op, self.timeout))?;
        Ok(())
    }

    /// `SET`/`REMOVE` clauses writing a value (string or counter) with an
    /// optional deadline.
    fn put(value: AttributeValue, exp: Option<i64>, skew_ms: i64) -> Update {
        let (set, drop) = match &value {
            AttributeValue::N(_) => ("#n = :val", "#v"),
            _ => ("#v = :val", "#n"),
        };
        match exp {
            Some(e) => Update::new(format!("SET {set}, #e = :exp, #t = :ttl REMOVE {drop}"))
                .value(":exp", n(e))
                .value(":ttl", n(ttl_attribute(e, skew_ms))),
            None => Update::new(format!("SET {set} REMOVE {drop}, #e, #t")),
        }
        .value(":val", value)
    }

    /// Add one with the conditional request `fast` (returns the new `n`);
    /// when its condition fails (a string counter, an expired one, a nonce
    /// outside the window), read the item, decide with `next` (`None`:
    /// missing or expired) and write pinned to the state read. The fast
    /// path is tried again between rounds, so a writer that lost a race does
    /// not starve behind the others.
    async fn update_number(
        &self,
        op: Operation,
        full: &str,
        fast: impl Fn() -> Update,
        next: impl Fn(Option<&str>) -> Result<i64>,
    ) -> Result<i64> {
        retry::until_written(BACKEND, op, || async {
            if let Some(item) = self.update(op, full, fast()).await? {
                if let Some(value) = number_attr(&item, "n") {
                    return Ok(Some(value));
                }
            }
            let state = self.read(op, full).await?;
            let now = now_ms();
            let live = state.live_value(now);
            let value = next(live.as_deref())?;
            let exp = if live.is_some() { state.exp } else { None };
            let mut u = Self::put(n(value), exp, self.skew_ms);
            let pin = state.pin(&mut u.values);
            Ok(self.update(op, full, u.when(pin)).await?.map(|_| value))
        })
        .await
    }

    /// After a failed release/extend condition: `Some(false)` held by
    /// another owner, `None` not held at all (the shape
    /// `ReleaseOutcome::from_ownership` takes).
    async fn ownership_after_miss(
        &self,
        op: Operation,
        full: &str,
        id: &LockId,
    ) -> Result<Option<bool>> {
        let state = self.read(op, full).await?;
        Ok(state
            .live_value(now_ms())
            .filter(|v| v != id.as_str())
            .map(|_| false))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let s = DynamoStore::open(
            "dynamodb://my-table?region=eu-west-1&endpoint=http://127.0.0.1:8000&create_table=true&max_clock_skew=500ms",
        )
        .unwrap();
        assert_eq!(s.table, "my-table");
        assert_eq!(s.skew_ms, 500);
        assert!(s.create_table);
        for bad in [
            "dynamodb://",
            "dynamodb://ab",
            "dynamodb://bad/name",
            "dynamodb://table?create_table=yes",
            "dynamodb://table?max_clock_skew=1m",
            "dynamodb://table?endpoint=localhost:8000",
            "dynamodb://table?colour=blue",
        ] {
            let e = DynamoStore::open(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}: {e}");
        }
    }

    #[test]
    fn causes_are_cut_to_their_first_line() {
        assert_eq!(
            first_line("no credentials found in chain. Attempted:\n  Environment: not set"),
            "no credentials found in chain."
        );
        assert_eq!(first_line("timeout"), "timeout");
        assert_eq!(first_line("a list:\n- one"), "a list");
    }

    #[test]
    fn placeholders_match_whole_words() {
        assert!(uses("SET #n = :now", ":now"));
        assert!(!uses("SET #n = :nowhere", ":now"));
        assert!(uses("a #e > :x)", "#e"));
        assert!(!uses("#exp", "#e"));
    }

    #[test]
    fn ttl_attribute_is_past_deadline_and_skew() {
        assert_eq!(ttl_attribute(10_500, 1_000), 11 + 1 + TTL_GRACE_S);
        assert!(ttl_attribute(10_000, 0) * 1000 > 10_000);
    }

    // The classification table, one row per test, each from a real SDK
    // error: a real client sends a real request to a listener on 127.0.0.1
    // that answers the way the row needs.

    fn class(f: &DynamoFailure) -> &'static str {
        match f {
            Failure::NotSent(_) => "not sent",
            Failure::Lost(_) => "lost",
            Failure::Reply(_) => "reply",
        }
    }

    fn error_of(f: &DynamoFailure) -> &DynamoError {
        match f {
            Failure::NotSent(e) | Failure::Reply(e) | Failure::Lost(Some(e)) => e,
            Failure::Lost(None) => panic!("no error"),
        }
    }

    fn test_client(
        port: u16,
        credentials: impl aws_sdk_dynamodb::config::ProvideCredentials + 'static,
    ) -> Client {
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
                aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
            ))
            .build_https();
        let config = aws_sdk_dynamodb::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .credentials_provider(credentials)
            .identity_cache(
                IdentityCache::lazy()
                    .load_timeout(Duration::from_millis(300))
                    .build(),
            )
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_millis(300))
                    .operation_attempt_timeout(Duration::from_millis(500))
                    .build(),
            )
            .http_client(http)
            .build();
        Client::from_conf(config)
    }

    fn good_credentials() -> aws_sdk_dynamodb::config::Credentials {
        aws_sdk_dynamodb::config::Credentials::new("AKIDTEST", "secret", None, None, "test")
    }

    /// One UpdateItem, as the store sends it, through `client`.
    async fn update_through(client: &Client) -> DynamoFailure {
        attempt(|mark| {
            client
                .update_item()
                .table_name("t")
                .key(KEY, s("k"))
                .update_expression("SET #n = :one")
                .expression_attribute_names("#n", "n")
                .expression_attribute_values(":one", n(1))
                .customize()
                .interceptor(mark)
                .send()
        })
        .await
        .expect_err("the request fails")
    }

    /// A listener on 127.0.0.1 that reads each request, then does `answer`
    /// (`None`: hang up without a reply). Counts the requests.
    async fn endpoint(
        answer: Option<(&'static str, &'static str)>,
    ) -> (u16, Arc<std::sync::atomic::AtomicUsize>) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let count = Arc::clone(&seen);
        tokio::spawn(async move {
            while let Ok((mut socket, _)) = listener.accept().await {
                let count = Arc::clone(&count);
                tokio::spawn(async move {
                    let mut buf = Vec::new();
                    let mut chunk = [0u8; 4096];
                    // Headers, then the body (its length is in them).
                    let body_end = loop {
                        match socket.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(got) => buf.extend_from_slice(&chunk[..got]),
                        }
                        let text = String::from_utf8_lossy(&buf).to_ascii_lowercase();
                        if let Some(head) = text.find("\r\n\r\n") {
                            let length: usize = text
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length: "))
                                .map_or(0, |v| v.trim().parse().unwrap());
                            if buf.len() >= head + 4 + length {
                                break head + 4 + length;
                            }
                        }
                    };
                    assert!(body_end <= buf.len());
                    count.fetch_add(1, Ordering::SeqCst);
                    let Some((status, body)) = answer else {
                        let _ = socket.set_zero_linger();
                        return;
                    };
                    let reply = format!(
                        "HTTP/1.1 {status}\r\ncontent-type: application/x-amz-json-1.0\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(reply.as_bytes()).await;
                });
            }
        });
        (port, seen)
    }

    fn service_error(code: &str) -> String {
        format!(
            r#"{{"__type":"com.amazonaws.dynamodb.v20120810#{code}","message":"canned {code}"}}"#
        )
    }

    #[tokio::test]
    async fn answers_from_dynamodb() {
        // (HTTP status, error code, class)
        let rows = [
            ("400 Bad Request", "ThrottlingException", "not sent"),
            (
                "400 Bad Request",
                "ProvisionedThroughputExceededException",
                "not sent",
            ),
            ("400 Bad Request", "RequestLimitExceeded", "not sent"),
            ("400 Bad Request", "LimitExceededException", "not sent"),
            (
                "400 Bad Request",
                "TransactionConflictException",
                "not sent",
            ),
            ("503 Service Unavailable", "ServiceUnavailable", "not sent"),
            (
                "503 Service Unavailable",
                "ServiceUnavailableException",
                "not sent",
            ),
            ("500 Internal Server Error", "InternalServerError", "lost"),
            ("500 Internal Server Error", "InternalFailure", "lost"),
            (
                "400 Bad Request",
                "ConditionalCheckFailedException",
                "reply",
            ),
            ("400 Bad Request", "ValidationException", "reply"),
            ("400 Bad Request", "ResourceNotFoundException", "reply"),
            ("400 Bad Request", "UnrecognizedClientException", "reply"),
        ];
        for (status, code, want) in rows {
            let body: &'static str = Box::leak(service_error(code).into_boxed_str());
            let (port, seen) = endpoint(Some((status, body))).await;
            let f = update_through(&test_client(port, good_credentials())).await;
            assert_eq!(class(&f), want, "{code}");
            assert_eq!(error_of(&f).code(), Some(code));
            assert_eq!(error_of(&f).to_string(), format!("{code}: canned {code}"));
            assert_eq!(seen.load(Ordering::SeqCst), 1, "{code}");
        }
    }

    #[tokio::test]
    async fn refused_credentials_name_what_to_set() {
        let body: &'static str =
            Box::leak(service_error("UnrecognizedClientException").into_boxed_str());
        let (port, _) = endpoint(Some(("400 Bad Request", body))).await;
        let f = update_through(&test_client(port, good_credentials())).await;
        let e = into_error(f, Operation::Incr, Duration::from_secs(1));
        assert_eq!(e.kind(), ErrorKind::Backend);
        assert!(e.message().contains("AWS_ACCESS_KEY_ID"), "{e}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_not_sent() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let f = update_through(&test_client(port, good_credentials())).await;
        assert_eq!(class(&f), "not sent", "{f:?}");
    }

    #[tokio::test]
    async fn a_silent_server_is_a_lost_reply() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((socket, _)) = listener.accept().await {
                held.push(socket);
            }
        });
        let f = update_through(&test_client(port, good_credentials())).await;
        assert_eq!(class(&f), "lost", "{f:?}");
    }

    #[tokio::test]
    async fn a_connection_closed_after_the_request_is_a_lost_reply() {
        let (port, seen) = endpoint(None).await;
        let f = update_through(&test_client(port, good_credentials())).await;
        assert_eq!(class(&f), "lost", "{f:?}");
        assert_eq!(seen.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_reply_that_cannot_be_read_is_a_lost_reply() {
        // A 200 means the write happened; its body is garbage.
        let (port, _) = endpoint(Some(("200 OK", "not json"))).await;
        let f = update_through(&test_client(port, good_credentials())).await;
        assert_eq!(class(&f), "lost", "{f:?}");
    }

    #[tokio::test]
    async fn a_request_that_cannot_be_built_is_final() {
        let (port, seen) = endpoint(Some(("200 OK", "{}"))).await;
        let client = test_client(port, good_credentials());
        // UpdateItem needs a table name.
        let f = attempt(|mark| {
            client
                .update_item()
                .key(KEY, s("k"))
                .customize()
                .interceptor(mark)
                .send()
        })
        .await
        .expect_err("no table name");
        assert_eq!(class(&f), "reply", "{f:?}");
        assert_eq!(error_of(&f).unsent, Some(Unsent::Build));
        let e = into_error(f, Operation::Incr, Duration::from_secs(1));
        assert_eq!(e.kind(), ErrorKind::Backend);
        assert_eq!(seen.load(Ordering::SeqCst), 0);
    }

    /// Credentials that fail to load: nothing is sent, the failure is
    /// final, and the error names what to set in a few lines.
    #[tokio::test]
    async fn missing_credentials_are_final_and_name_what_to_set() {
        use aws_credential_types::credential_fn::provide_credentials_fn;
        use aws_credential_types::provider::error::CredentialsError;
        // (provider, kind, class)
        let not_loaded = provide_credentials_fn(|| async {
            Err(CredentialsError::not_loaded(
                "no providers in chain provided credentials",
            ))
        });
        let misconfigured = provide_credentials_fn(|| async {
            Err(CredentialsError::invalid_configuration(
                "profile `x` has no keys",
            ))
        });
        let failing = provide_credentials_fn(|| async {
            Err(CredentialsError::provider_error("the STS endpoint refused"))
        });
        let silent = provide_credentials_fn(|| async {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Err(CredentialsError::not_loaded("never"))
        });
        let provider_timed_out = provide_credentials_fn(|| async {
            Err(CredentialsError::provider_timed_out(Duration::from_secs(1)))
        });
        let rows: Vec<(
            aws_sdk_dynamodb::config::SharedCredentialsProvider,
            ErrorKind,
        )> = vec![
            (
                aws_sdk_dynamodb::config::SharedCredentialsProvider::new(not_loaded),
                ErrorKind::InvalidArgument,
            ),
            (
                aws_sdk_dynamodb::config::SharedCredentialsProvider::new(misconfigured),
                ErrorKind::InvalidArgument,
            ),
            (
                aws_sdk_dynamodb::config::SharedCredentialsProvider::new(failing),
                ErrorKind::Unavailable,
            ),
            (
                aws_sdk_dynamodb::config::SharedCredentialsProvider::new(silent),
                ErrorKind::Unavailable,
            ),
            (
                aws_sdk_dynamodb::config::SharedCredentialsProvider::new(provider_timed_out),
                ErrorKind::Unavailable,
            ),
        ];
        for (i, (provider, kind)) in rows.into_iter().enumerate() {
            let (port, seen) = endpoint(Some(("200 OK", "{}"))).await;
            let f = update_through(&test_client(port, provider)).await;
            assert_eq!(class(&f), "reply", "row {i}: {f:?}");
            assert_eq!(error_of(&f).unsent, Some(Unsent::Credentials), "row {i}");
            let e = into_error(f, Operation::Incr, Duration::from_secs(1));
            assert_eq!(e.kind(), kind, "row {i}: {e}");
            assert!(e.message().contains("AWS_ACCESS_KEY_ID"), "row {i}: {e}");
            assert!(
                e.to_string().len() < 400 && e.to_string().lines().count() <= 2,
                "row {i}: {e}"
            );
            assert_eq!(
                seen.load(Ordering::SeqCst),
                0,
                "row {i}: a request was sent"
            );
        }
    }
}
