//! `mongodb://…/DB` and `mongodb+srv://…/DB`: MongoDB (feature `mongodb`).
//!
//! - Parameters: `collection` (default `atomic_store`), `prefix`, `timeout`
//!   (per request, default 5s); every other option goes to the official
//!   driver unchanged (`serverSelectionTimeoutMS` defaults to 2000 here).
//!   The database comes from the path (default `atomic_store`).
//! - One document per key: `_id` is `{prefix}:{key}`; a string value in `v`
//!   or a counter in `n` (Int64); `exp`, the deadline in the server's
//!   milliseconds; `f`, the fencing counter; `gc`, a date for the TTL index.
//! - Every change is one `findOneAndUpdate` whose filter states the
//!   condition (live, expired, held by this id, in the nonce window...), so
//!   the server applies it atomically or not at all. A miss is read back and
//!   decided again, then written with a filter that pins the exact state
//!   read; a missing document is created with `insert_one`, where a
//!   duplicate-key error means another writer got there first (an ordinary
//!   outcome). No upsert ever carries a condition beyond `_id`.
//! - Expiry is decided on the **server's** clock, read with `hello`
//!   (`localTime`) every 5 s: one request is timed alone, a round trip
//!   over 200 ms is not used, and the estimate runs on this machine's
//!   monotonic clock from there, so client skew and wall-clock steps
//!   cancel. Its error is half that round trip plus drift. A lock is taken
//!   over only 250 ms plus that error after its deadline; the declared
//!   resolution (650 ms) covers that margin and the errors on both sides.
//!   (Pipeline updates with `$$NOW` would read the clock inside the write,
//!   but the MongoDB-wire server the tests run against has no pipeline
//!   updates; see docs/design.md.)
//! - The fencing counter lives on the document and rises with every lock
//!   taken; release, delete and expiry keep it. Documents that ever held a
//!   lock or a value without TTL are never removed by the TTL index (their
//!   `gc` is year 9999), so tokens never restart; documents that only held
//!   TTL'd values are removed by it a minute after their deadline. Reads
//!   never rely on that removal.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use mongodb::bson::{doc, Bson, DateTime, Document};
use mongodb::action::FindOneAndUpdate;
use mongodb::options::{ClientOptions, IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, IndexModel};
use tokio::sync::OnceCell;

use crate::clock::{self, ServerClock, ServerTime, Unread};
use crate::url::StoreUrl;
use crate::retry::{self, with_retries, Failure};
use crate::rules;
use crate::{Capabilities, Error, ErrorKind, ExpiryClock, KeyInfo, Lock, LockId, Operation, Result};

const BACKEND: &str = "mongodb";
/// TTL'd documents are left to the TTL index this long after their deadline.
const GC_GRACE_MS: i64 = 60_000;
const DUPLICATE_KEY: i32 = 11000;
/// `gc` of documents the TTL index must never remove: 9999-12-31.
const NEVER_MS: i64 = 253_402_300_799_000;

/// The store behind `mongodb://`.
pub struct MongoStore {
    driver_url: String,
    database: String,
    collection_name: String,
    prefix: String,
    timeout: Duration,
    collection: OnceCell<Collection<Document>>,
    clock: ServerClock,
    redacted_url: String,
}

store_debug!(MongoStore { url: redacted_url, collection: collection_name, prefix: prefix, timeout: timeout });

mod document;
mod errors;
mod ops;

use document::*;
use errors::*;

impl MongoStore {
    /// Open from a URL (see the module docs). Does not connect.
    pub fn open(url: &str) -> Result<Self> {
        const OURS: &[&str] = &["collection", "timeout"];
        let parsed = StoreUrl::parse(BACKEND, url, None)?;
        let redacted_url = parsed.redacted().to_owned();
        let scheme = parsed.scheme.as_str();
        if !matches!(scheme, "mongodb" | "mongodb+srv") {
            return Err(parsed.error(format!("`{redacted_url}` is not a MongoDB URL")));
        }
        let (hosts, path) = parsed
            .location
            .split_once('/')
            .unwrap_or((&parsed.location, ""));
        if hosts.is_empty() || hosts.rsplit('@').next().is_none_or(str::is_empty) {
            return Err(parsed.error(
                "MongoDB URLs look like mongodb://[user:password@]host:port[,host:port…]/DATABASE[?collection=NAME]",
            ));
        }
        let database = if path.is_empty() {
            "atomic_store".to_owned()
        } else {
            StoreUrl::decode(path)
        };
        if database.contains(['/', '\\', '.', ' ', '"', '$', '\0']) {
            return Err(parsed.error(format!(
                "`{database}` is not a valid MongoDB database name"
            )));
        }
        let prefix = parsed.prefix()?;
        let collection_name = parsed.param("collection").unwrap_or("atomic_store").to_owned();
        let timeout = parsed.timeout(Duration::from_secs(5))?;
        let mut driver_params: Vec<(String, String)> = parsed
            .others(OURS)
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let selection_timeout_given = driver_params
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("serverSelectionTimeoutMS"));
        if collection_name.is_empty()
            || collection_name.contains(['$', '\0'])
            || collection_name.starts_with("system.")
        {
            return Err(parsed.error(format!(
                "`{collection_name}` is not a valid collection name"
            )));
        }
        if !selection_timeout_given {
            driver_params.push(("serverSelectionTimeoutMS".into(), "2000".into()));
        }
        let query: String = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(driver_params)
            .finish();
        // The path stays: the driver takes it as the default database and,
        // with credentials and no authSource, as the database to log in to.
        let driver_url = format!("{scheme}://{hosts}/{path}?{query}");
        Ok(MongoStore {
            driver_url,
            database,
            collection_name,
            prefix,
            timeout,
            collection: OnceCell::new(),
            clock: ServerClock::default(),
            redacted_url,
        })
    }

    /// The driver's handle on the store's collection, for requests of your
    /// own, such as a benchmark's raw baseline.
    pub async fn driver_collection(&self) -> Result<Collection<Document>> {
        self.collection(Operation::Open).await.cloned()
    }

    /// The collection, with the driver set up and the TTL index made on
    /// first use.
    async fn collection(&self, op: Operation) -> Result<&Collection<Document>> {
        self.collection
            .get_or_try_init(|| async {
                let options = ClientOptions::parse(&self.driver_url).await.map_err(|e| {
                    Error::invalid(
                        BACKEND,
                        op,
                        "the MongoDB URL's options were refused by the driver",
                    )
                    .with_source(MongoError(e))
                })?;
                let client = Client::with_options(options).map_err(|e| {
                    Error::invalid(BACKEND, op, "the MongoDB driver refused the options")
                        .with_source(MongoError(e))
                })?;
                let collection = client
                    .database(&self.database)
                    .collection::<Document>(&self.collection_name);
                let index = IndexModel::builder()
                    .keys(doc! {"gc": 1})
                    .options(
                        IndexOptions::builder()
                            .expire_after(Duration::ZERO)
                            .name("atomic_store_gc".to_owned())
                            .build(),
                    )
                    .build();
                let made = tokio::time::timeout(self.timeout * 2, collection.create_index(index))
                    .await
                    .map_err(|_| {
                        Error::new(
                            ErrorKind::Unavailable,
                            BACKEND,
                            op,
                            "no reply from MongoDB while creating the TTL index",
                        )
                    })?;
                made.map_err(|e| match classify(e) {
                    Failure::NotSent(e) | Failure::Lost(Some(e)) => {
                        crate::retry::not_sent(BACKEND, "MongoDB", op, MongoError(e))
                    }
                    Failure::Reply(e) => Error::new(
                        ErrorKind::Backend,
                        BACKEND,
                        op,
                        "MongoDB refused to create the TTL index on `gc`",
                    )
                    .with_source(MongoError(e)),
                    Failure::Lost(None) => Error::new(ErrorKind::Unavailable, BACKEND, op, "lost"),
                })?;
                Ok(collection)
            })
            .await
    }

    /// Run one request under the retry policy of `op`.
    async fn call<T, F, Fut>(&self, op: Operation, request: F) -> Result<T>
    where
        F: Fn(Collection<Document>) -> Fut,
        Fut: std::future::Future<Output = mongodb::error::Result<T>>,
    {
        let collection = self.collection(op).await?.clone();
        with_retries(op, || async {
            match tokio::time::timeout(self.timeout, request(collection.clone())).await {
                Ok(Ok(v)) => Ok(v),
                Ok(Err(e)) => Err(classify(e)),
                Err(_) => Err(Failure::Lost(None)),
            }
        })
        .await
        .map_err(|f| into_error(f, op, self.timeout))
    }

    /// The server's clock now, in ms.
    async fn server_now(&self, op: Operation) -> Result<i64> {
        Ok(self.server_time(op).await?.ms)
    }

    /// The server's clock now, and how far off the estimate may be (see
    /// [`ServerClock::read`]): each `hello` is timed alone, not the retries
    /// around it.
    async fn server_time(&self, op: Operation) -> Result<ServerTime> {
        let read_op = crate::retry::read_step(op);
        let sample = || async {
            let (sent, hello, received) = self
                .call(read_op, |c| async move {
                    let sent = Instant::now();
                    let hello = c
                        .client()
                        .database("admin")
                        .run_command(doc! {"hello": 1})
                        .await?;
                    Ok((sent, hello, Instant::now()))
                })
                .await?;
            let server = hello.get_datetime("localTime").map_err(|_| {
                Error::new(
                    ErrorKind::Backend,
                    BACKEND,
                    op,
                    "the server's hello reply has no localTime, so its clock cannot be read",
                )
            })?;
            Ok((sent, server.timestamp_millis(), received))
        };
        self.clock.read(sample).await.map_err(|why| match why {
            Unread::Failed(e) => e,
            Unread::TooSlow => clock_too_slow(op),
        })
    }

    async fn read(&self, op: Operation, id: &str) -> Result<Option<State>> {
        let read_op = crate::retry::read_step(op);
        let found = self
            .call(
                read_op,
                |c| async move { c.find_one(doc! {"_id": id}).await },
            )
            .await?;
        found.map(|d| State::from_doc(op, &d)).transpose()
    }

    /// One `findOneAndUpdate`; the document it returns.
    async fn modify(&self, op: Operation, m: Modify) -> Result<Option<State>> {
        let found = self
            .call(op, |c| {
                let m = m.clone();
                async move { m.request(&c).await }
            })
            .await?;
        found.map(|d| State::from_doc(op, &d)).transpose()
    }

    /// Create the document; `false` when it already exists.
    async fn insert(&self, op: Operation, doc: Document) -> Result<bool> {
        match self
            .call(op, |c| {
                let doc = doc.clone();
                async move { c.insert_one(doc).await }
            })
            .await
        {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Read, decide, and write pinned to the state read: `None` when another
    /// writer changed the document in between (nothing was written).
    async fn read_decide_write_once<T>(
        &self,
        op: Operation,
        id: &str,
        decide: &impl Fn(Option<&State>, ServerTime) -> Result<Step<T>>,
    ) -> Result<Option<T>> {
        let state = self.read(op, id).await?;
        let now = self.server_time(op).await?;
        Ok(match decide(state.as_ref(), now)? {
            Step::Done(result) => Some(result),
            Step::Write(put, finish) => match &state {
                None => self
                    .insert(op, put.insert(id))
                    .await?
                    .then(|| finish(put.bump_fence.then_some(1))),
                Some(old) => self
                    .modify(op, Modify::after(old.pin(id), put.update()))
                    .await?
                    .map(|new| finish(new.f)),
            },
        })
    }

    /// [`Self::read_decide_write_once`] until a write lands or the decision
    /// needs none.
    async fn read_decide_write<T>(
        &self,
        op: Operation,
        id: &str,
        decide: impl Fn(Option<&State>, ServerTime) -> Result<Step<T>>,
    ) -> Result<T> {
        retry::until_written(BACKEND, op, || self.read_decide_write_once(op, id, &decide)).await
    }

    /// Add one to a live counter with the single request `fast(now)`;
    /// when it does not apply (missing, expired, a string, out of
    /// range), decide with `next` from the value read (`None`: missing or
    /// expired), keeping a live TTL. Between rounds the fast path is tried
    /// again, so a writer that lost a race does not starve behind others.
    async fn update_number(
        &self,
        op: Operation,
        id: &str,
        fast: impl Fn(i64) -> Modify,
        next: impl Fn(Option<&str>) -> Result<i64>,
    ) -> Result<i64> {
        let decide = |state: Option<&State>, now: ServerTime| {
            let live = state.and_then(|s| s.live_value(now.ms));
            let exp = if live.is_some() {
                state.and_then(|s| s.exp)
            } else {
                None
            };
            let n = next(live.as_deref())?;
            Ok(Step::Write(Put::counter(n, exp), Box::new(move |_| n)))
        };
        retry::until_written(BACKEND, op, || async {
            let now = self.server_now(op).await?;
            if let Some(State { n: Some(n), .. }) = self
                .modify(op, fast(now))
                .await?
            {
                return Ok(Some(n));
            }
            self.read_decide_write_once(op, id, &decide).await
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::AtomicStore;

    #[test]
    fn urls() {
        let s = MongoStore::open(
            "mongodb://u:secret@h1:1,h2:2/app?collection=c&prefix=p&directConnection=true&timeout=2s",
        )
        .unwrap();
        assert_eq!(s.database, "app");
        assert_eq!(s.collection_name, "c");
        assert_eq!(s.prefix, "p");
        assert_eq!(s.timeout, Duration::from_secs(2));
        assert!(s.driver_url.contains("directConnection=true"));
        assert!(s.driver_url.contains("serverSelectionTimeoutMS=2000"));
        assert!(!s.driver_url.contains("collection"));
        assert!(!format!("{s:?}").contains("secret"));
        let s = MongoStore::open("mongodb+srv://cluster.example.com").unwrap();
        assert_eq!(s.database, "atomic_store");
        for bad in [
            "mongodb://",
            "mongodb:///db",
            "mongodb://h/db?timeout=soon",
            "mongodb://h/db?collection=",
            "mongodb://h/a.b",
            "redis://h",
        ] {
            let e = MongoStore::open(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{bad}: {e}");
        }
    }

    /// The URL's database path reaches the driver: it is the default
    /// database and, with credentials and no `authSource`, the database to
    /// log in to (it was dropped, so the login went to `admin`).
    #[tokio::test]
    async fn the_url_database_is_the_drivers_default_and_auth_source() {
        let options = |url: &str| {
            let driver_url = MongoStore::open(url).unwrap().driver_url;
            async move { ClientOptions::parse(&driver_url).await.unwrap() }
        };
        let o = options("mongodb://u:secret@127.0.0.1:1/app?directConnection=true").await;
        assert_eq!(o.default_database.as_deref(), Some("app"));
        assert_eq!(o.credential.unwrap().source.as_deref(), Some("app"));
        let o = options("mongodb://u:secret@127.0.0.1:1/app?authSource=admin&collection=c").await;
        assert_eq!(o.default_database.as_deref(), Some("app"));
        assert_eq!(o.credential.unwrap().source.as_deref(), Some("admin"));
        let o = options("mongodb://u:secret@127.0.0.1:1").await;
        assert_eq!(o.default_database, None);
        assert_eq!(o.credential.unwrap().source.as_deref(), Some("admin"));
    }

    #[test]
    fn regex_escape_is_literal() {
        assert_eq!(regex_escape("a.b*c:"), "a\\.b\\*c:");
        assert_eq!(regex_escape("ü(x)"), "ü\\(x\\)");
    }

    // ---- The error table, one test per row, from real driver errors. ----

    use mongodb::error::{
        CommandError, ErrorKind as K, WriteConcernError, WriteError, WriteFailure,
    };
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn class(e: mongodb::error::Error) -> &'static str {
        match classify(e) {
            Failure::NotSent(_) => "not sent",
            Failure::Lost(_) => "lost",
            Failure::Reply(_) => "reply",
        }
    }

    /// A server's command error, as the driver decodes it.
    fn command_error(code: i32) -> mongodb::error::Error {
        let c: CommandError = mongodb::bson::from_document(
            doc! {"code": code, "codeName": "Canned", "errmsg": "canned"},
        )
        .unwrap();
        K::Command(c).into()
    }

    #[tokio::test]
    async fn a_failed_server_selection_was_not_sent() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::with_uri_str(format!(
            "mongodb://127.0.0.1:{port}/?directConnection=true&serverSelectionTimeoutMS=200"
        ))
        .await
        .unwrap();
        let e = client
            .database("admin")
            .run_command(doc! {"ping": 1})
            .await
            .unwrap_err();
        assert!(matches!(*e.kind, K::ServerSelection { .. }), "{e}");
        assert_eq!(class(e), "not sent");
    }

    #[test]
    fn a_shut_down_client_sent_nothing() {
        assert_eq!(class(K::Shutdown.into()), "not sent");
    }

    /// "Not primary" and "recovering" refusals may come from the driver's
    /// own retry of a write whose first attempt was applied: lost replies.
    /// (They were "not sent", so `incr` was sent again.)
    #[test]
    fn not_primary_and_recovering_refusals_are_lost_replies() {
        for code in [10107, 13435, 10058, 11600, 11602, 13436, 189, 91] {
            assert_eq!(class(command_error(code)), "lost", "code {code}");
        }
    }

    /// A mongos that could not reach or hear back from a shard in time.
    #[test]
    fn unreached_shards_are_lost_replies() {
        for code in [6, 7, 89, 9001, 134, 262] {
            assert_eq!(class(command_error(code)), "lost", "code {code}");
        }
    }

    #[test]
    fn other_command_errors_are_answers() {
        for code in [2, 11000, 13, 50] {
            assert_eq!(class(command_error(code)), "reply", "code {code}");
        }
    }

    #[test]
    fn a_write_error_is_an_answer() {
        let w: WriteError =
            mongodb::bson::from_document(doc! {"code": DUPLICATE_KEY, "errmsg": "duplicate key"})
                .unwrap();
        assert_eq!(class(K::Write(WriteFailure::WriteError(w)).into()), "reply");
    }

    /// The write was applied and its replication not confirmed: maybe
    /// applied, for every operation (it was `Backend`).
    #[test]
    fn a_write_concern_error_is_a_lost_reply_and_an_unknown_outcome() {
        let wce = || -> mongodb::error::Error {
            let w: WriteConcernError = mongodb::bson::from_document(
                doc! {"code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting for replication timed out"},
            )
            .unwrap();
            K::Write(WriteFailure::WriteConcernError(w)).into()
        };
        assert_eq!(class(wce()), "lost");
        for op in [Operation::Incr, Operation::Set] {
            let e = into_error(classify(wce()), op, Duration::from_secs(1));
            assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{op}: {e}");
        }
    }

    #[test]
    fn broken_connections_and_garbled_replies_are_lost_replies() {
        let reset = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert_eq!(class(reset.into()), "lost");
        let garbled = mongodb::bson::RawDocument::from_bytes(&[5, 0, 0, 0, 1]).unwrap_err();
        let e: mongodb::error::Error = garbled.into();
        assert!(matches!(*e.kind, K::InvalidResponse { .. }), "{e}");
        assert_eq!(class(e), "lost");
    }

    /// Error labels can only come from a server: these rows use a canned
    /// endpoint (below), as the test server cannot refuse as a stepped-down
    /// primary or label its errors.
    #[tokio::test]
    async fn labels_decide_refusals() {
        let answers: [(Document, &str); 3] = [
            (not_primary(&["NoWritesPerformed"]), "not sent"),
            (not_primary(&[]), "lost"),
            (
                doc! {"ok": 0.0, "code": 12345, "codeName": "Canned", "errmsg": "canned", "errorLabels": [RETRYABLE_WRITE_ERROR]},
                "lost",
            ),
        ];
        for (answer, expected) in answers {
            let reply = answer.clone();
            let canned = Canned::start(false, move |_| Some(reply.clone())).await;
            let client = Client::with_uri_str(format!(
                "mongodb://127.0.0.1:{}/?directConnection=true",
                canned.port
            ))
            .await
            .unwrap();
            let e = client
                .database("db")
                .collection::<Document>("c")
                .find_one_and_update(doc! {"_id": 1}, doc! {"$inc": {"n": 1}})
                .await
                .unwrap_err();
            assert_eq!(class(e.clone()), expected, "{answer}: {e}");
        }
    }

    /// The case: the first `findAndModify` is cut off (maybe
    /// applied), the driver retries it by itself and the retry meets a
    /// primary that stepped down. The store must report an unknown outcome
    /// and send nothing more (it took the refusal for "not sent" and sent
    /// the write four more times).
    #[tokio::test]
    async fn a_not_writable_primary_after_the_drivers_retry_is_an_unknown_outcome() {
        let canned = Canned::start(true, |n| {
            (n > 0).then(|| not_primary(&[RETRYABLE_WRITE_ERROR]))
        })
        .await;
        let store = MongoStore::open(&canned.url()).unwrap();
        let e = store.incr("k").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}");
        assert_eq!(canned.writes(), 2, "the store sent the write again: {e}");
    }

    /// A write-concern error on `findAndModify`: applied, so `incr` ends as
    /// an unknown outcome, sent once (it was a `Backend` error).
    #[tokio::test]
    async fn a_write_concern_error_ends_incr_as_an_unknown_outcome() {
        let canned = Canned::start(true, |_| {
            Some(doc! {
                "ok": 1.0,
                "lastErrorObject": {"n": 1, "updatedExisting": true},
                "value": {"_id": "atomic:k", "n": 8i64},
                "writeConcernError": {"code": 64, "codeName": "WriteConcernFailed", "errmsg": "waiting for replication timed out"},
            })
        })
        .await;
        let store = MongoStore::open(&canned.url()).unwrap();
        let e = store.incr("k").await.unwrap_err();
        assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}");
        assert_eq!(canned.writes(), 1, "{e}");
    }

    fn not_primary(labels: &[&str]) -> Document {
        doc! {
            "ok": 0.0,
            "code": 10107,
            "codeName": "NotWritablePrimary",
            "errmsg": "not primary",
            "errorLabels": labels,
        }
    }

    /// A MongoDB-wire endpoint on 127.0.0.1 that answers writes
    /// (`findAndModify`, `update`, `insert`, `delete`) from a script, by
    /// their count from 0 (`None`: close the connection with the request
    /// unanswered), and everything else as a healthy server, standalone or
    /// a replica set's primary (where the driver retries writes).
    struct Canned {
        port: u16,
        writes: Arc<AtomicUsize>,
        accept: tokio::task::JoinHandle<()>,
    }

    type Script = Arc<dyn Fn(usize) -> Option<Document> + Send + Sync>;

    impl Canned {
        async fn start(
            replica_set: bool,
            script: impl Fn(usize) -> Option<Document> + Send + Sync + 'static,
        ) -> Canned {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let port = listener.local_addr().unwrap().port();
            let writes = Arc::new(AtomicUsize::new(0));
            let script: Script = Arc::new(script);
            let counter = Arc::clone(&writes);
            let accept = tokio::spawn(async move {
                while let Ok((conn, _)) = listener.accept().await {
                    let (script, counter) = (Arc::clone(&script), Arc::clone(&counter));
                    tokio::spawn(serve(conn, port, replica_set, script, counter));
                }
            });
            Canned {
                port,
                writes,
                accept,
            }
        }

        fn url(&self) -> String {
            format!(
                "mongodb://127.0.0.1:{}/db?directConnection=true&serverSelectionTimeoutMS=3000&timeout=10s",
                self.port
            )
        }

        fn writes(&self) -> usize {
            self.writes.load(Ordering::SeqCst)
        }
    }

    impl Drop for Canned {
        fn drop(&mut self) {
            self.accept.abort();
        }
    }

    fn hello(port: u16, replica_set: bool) -> Document {
        let mut d = doc! {
            "helloOk": true,
            "ismaster": true,
            "isWritablePrimary": true,
            "maxBsonObjectSize": 16_777_216,
            "maxMessageSizeBytes": 48_000_000,
            "maxWriteBatchSize": 100_000,
            "localTime": DateTime::now(),
            "logicalSessionTimeoutMinutes": 30,
            "connectionId": 1,
            "minWireVersion": 0,
            "maxWireVersion": 21,
            "readOnly": false,
            "ok": 1.0,
        };
        if replica_set {
            let me = format!("127.0.0.1:{port}");
            d.insert("setName", "rs");
            d.insert("setVersion", 1);
            d.insert("secondary", false);
            d.insert("hosts", vec![me.clone()]);
            d.insert("me", me);
            d.insert("electionId", mongodb::bson::oid::ObjectId::new());
        }
        d
    }

    /// One connection: OP_MSG requests in, OP_MSG replies out.
    async fn serve(
        mut conn: tokio::net::TcpStream,
        port: u16,
        replica_set: bool,
        script: Script,
        writes: Arc<AtomicUsize>,
    ) {
        loop {
            let mut header = [0u8; 16];
            if conn.read_exact(&mut header).await.is_err() {
                return;
            }
            let length = i32::from_le_bytes(header[0..4].try_into().unwrap()) as usize;
            let request_id = i32::from_le_bytes(header[4..8].try_into().unwrap());
            let mut body = vec![0u8; length - 16];
            if conn.read_exact(&mut body).await.is_err() {
                return;
            }
            // Flag bits, then section 0: the command document.
            assert_eq!(body[4], 0, "the command comes first");
            let command = Document::from_reader(&body[5..]).unwrap();
            let name = command.keys().next().cloned().unwrap_or_default();
            let reply = match name.as_str() {
                "findAndModify" | "update" | "insert" | "delete" => {
                    match script(writes.fetch_add(1, Ordering::SeqCst)) {
                        Some(reply) => reply,
                        None => return,
                    }
                }
                "hello" | "isMaster" | "ismaster" => hello(port, replica_set),
                "find" => doc! {
                    "cursor": {"firstBatch": [], "id": 0i64, "ns": "db.c"},
                    "ok": 1.0,
                },
                _ => doc! {"ok": 1.0},
            };
            let mut document = Vec::new();
            reply.to_writer(&mut document).unwrap();
            let mut message = Vec::with_capacity(21 + document.len());
            message.extend_from_slice(&((21 + document.len()) as i32).to_le_bytes());
            message.extend_from_slice(&request_id.wrapping_add(1_000_000).to_le_bytes());
            message.extend_from_slice(&request_id.to_le_bytes());
            message.extend_from_slice(&2013i32.to_le_bytes());
            message.extend_from_slice(&0u32.to_le_bytes());
            message.push(0);
            message.extend_from_slice(&document);
            if conn.write_all(&message).await.is_err() {
                return;
            }
        }
    }
}
