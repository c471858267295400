//! Wake-ups over `LISTEN`/`NOTIFY`: one connection per store, outside the
//! pool (a pooled session would lose its `LISTEN` to the next borrower),
//! that listens on the table's channel and wakes the local waiters named
//! by each payload.
//!
//! Whether `LISTEN` delivers is proven, not assumed: a probe `NOTIFY` is
//! sent through the pool and must come back on the listening connection.
//! Behind PgBouncer in transaction pooling it does not (the `LISTEN` stays
//! on a server connection this client no longer holds); the listener then
//! says so once, and `wait_notified` fails with `Unavailable`, so the lock
//! recipe polls instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use tokio::sync::Notify;
use tokio_postgres::AsyncMessage;

use super::*;
use crate::backoff::Backoff;

const STARTING: u8 = 0;
const WORKING: u8 = 1;
const BROKEN: u8 = 2;

/// How long the probe may take to come back.
const PROBE_WITHIN: Duration = Duration::from_secs(1);
/// How often a working connection is checked.
const CHECK_EVERY: Duration = Duration::from_secs(30);
/// Waits between attempts after a failure: a lost connection is retried
/// soon, a failed probe rarely (each try leaves a `LISTEN` behind on a
/// PgBouncer server connection until it is reset).
const RECONNECT: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(30));
const REPROBE: (Duration, Duration) = (Duration::from_secs(60), Duration::from_secs(600));

/// The channel of table `table_raw` (its unquoted name).
pub(super) fn channel(table_raw: &str) -> String {
    format!("{table_raw}_wake")
}

pub(super) struct Listener {
    channel: String,
    /// This store instance, as its waiters' places name it: a release by
    /// the same instance needs no notification (the recipe grants the lock
    /// in-process).
    id: String,
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    state: tokio::sync::watch::Sender<u8>,
    /// Whether a task listens: it dies with the runtime that spawned it.
    running: AtomicBool,
}

impl Listener {
    pub(super) fn new(channel: String) -> Self {
        Listener {
            channel,
            id: LockId::generate().as_str()[..16].to_owned(),
            waiters: Mutex::default(),
            state: tokio::sync::watch::channel(STARTING).0,
            running: AtomicBool::new(false),
        }
    }

    pub(super) fn id(&self) -> &str {
        &self.id
    }

    /// Start listening, unless a task of this store already does.
    pub(super) fn start(self: &Arc<Self>, inner: Weak<Inner>) {
        if !self.running.swap(true, Ordering::AcqRel) {
            let task = Running(Arc::clone(self));
            tokio::spawn(async move { listen(inner, &task.0).await });
        }
    }

    /// Whether notifications are heard now: the probe came back and the
    /// session has not failed since.
    pub(super) fn working(&self) -> bool {
        *self.state.borrow() == WORKING
    }

    /// Whether it hears notifications or may soon: not known to fail.
    pub(super) fn may_hear(&self) -> bool {
        *self.state.borrow() != BROKEN
    }

    /// [`working`](Self::working), once a starting listener has had the
    /// time its probe may take.
    pub(super) async fn verdict(&self) -> bool {
        let mut state = self.state.subscribe();
        let settled = state.wait_for(|s| *s != STARTING);
        let _ = tokio::time::timeout(PROBE_WITHIN * 2, settled).await;
        self.working()
    }

    fn set(&self, state: u8) {
        self.state.send_replace(state);
    }

    /// The waiters of `key`'s notifications, created if needed; a future
    /// made from it before a notification arrives receives it.
    fn waiters_of(&self, key: String) -> Arc<Notify> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        waiters.retain(|_, n| Arc::strong_count(n) > 1);
        Arc::clone(waiters.entry(key).or_default())
    }

    /// Wait up to `timeout` for a notification of `key`.
    pub(super) async fn wait(&self, key: String, timeout: Duration) -> bool {
        let notify = self.waiters_of(key);
        tokio::time::timeout(timeout, notify.notified()).await.is_ok()
    }

    fn wake(&self, payload: &str) {
        let waiters = self.waiters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = waiters.get(payload) {
            n.notify_waiters();
        }
    }
}

/// Marks the listener stopped when its task ends, even by the end of its
/// runtime, so that the next use starts another.
struct Running(Arc<Listener>);

impl Drop for Running {
    fn drop(&mut self) {
        self.0.set(BROKEN);
        self.0.running.store(false, Ordering::Release);
    }
}

/// Listen until the store is dropped, reconnecting after failures.
async fn listen(inner: Weak<Inner>, listener: &Arc<Listener>) {
    let mut reconnect = Backoff::new(RECONNECT.0);
    let mut reprobe = Backoff::new(REPROBE.0);
    loop {
        let ended = listen_once(&inner, listener).await;
        if listener.working() {
            // It worked for a while: a new failure starts the waits afresh.
            reconnect = Backoff::new(RECONNECT.0);
            reprobe = Backoff::new(REPROBE.0);
        }
        listener.set(BROKEN);
        let pause = match ended {
            Ended::StoreDropped => return,
            Ended::ConnectionLost => reconnect.next(RECONNECT.1),
            Ended::NotDelivered => reprobe.next(REPROBE.1),
        };
        if !sleep_while_alive(&inner, pause).await {
            return;
        }
    }
}

/// Sleep for `pause`, or until the store is dropped (then `false`).
async fn sleep_while_alive(inner: &Weak<Inner>, pause: Duration) -> bool {
    let until = tokio::time::Instant::now() + pause;
    while tokio::time::Instant::now() < until {
        if inner.strong_count() == 0 {
            return false;
        }
        tokio::time::sleep_until(until.min(tokio::time::Instant::now() + Duration::from_secs(1))).await;
    }
    inner.strong_count() > 0
}

enum Ended {
    StoreDropped,
    ConnectionLost,
    NotDelivered,
}

async fn listen_once(inner: &Weak<Inner>, listener: &Arc<Listener>) -> Ended {
    let Some(store) = inner.upgrade() else {
        return Ended::StoreDropped;
    };
    let timeout = store.timeout;
    let on_message = {
        let listener = Arc::clone(listener);
        move |message: AsyncMessage| {
            if let AsyncMessage::Notification(n) = message {
                if n.channel() == listener.channel {
                    listener.wake(n.payload());
                }
            }
        }
    };
    let connected = tokio::time::timeout(timeout, store.connect_unpooled(on_message)).await;
    drop(store);
    let Ok(Ok((client, dispatch))) = connected else {
        tracing::debug!("postgres: the notification listener could not connect");
        return Ended::ConnectionLost;
    };
    // Aborted however this ends, so the connection closes with it.
    let mut dispatch = AbortOnDrop(dispatch);
    let listen = format!("LISTEN \"{}\"", listener.channel);
    let listened = tokio::time::timeout(timeout, client.batch_execute(&listen)).await;
    if !matches!(listened, Ok(Ok(()))) {
        return Ended::ConnectionLost;
    }
    let probe = format!("probe:{}", LockId::generate());
    let waiters = listener.waiters_of(probe.clone());
    let heard = waiters.notified();
    let Some(store) = inner.upgrade() else {
        return Ended::StoreDropped;
    };
    let sent = tokio::time::timeout(timeout, store.notify_through_pool(&listener.channel, &probe));
    let sent = sent.await;
    drop(store);
    if !matches!(sent, Ok(Ok(()))) {
        return Ended::ConnectionLost;
    }
    if tokio::time::timeout(PROBE_WITHIN, heard).await.is_err() {
        tracing::info!(
            "postgres: LISTEN does not deliver on this server (PgBouncer in transaction pooling?); \
             lock waiters poll instead. Add listen=false to the URL to skip the attempt."
        );
        let _ = tokio::time::timeout(timeout, client.batch_execute("UNLISTEN *")).await;
        return Ended::NotDelivered;
    }
    listener.set(WORKING);
    loop {
        tokio::select! {
            _ = &mut dispatch.0 => {
                tracing::debug!("postgres: the notification listener lost its connection");
                return Ended::ConnectionLost;
            }
            alive = sleep_while_alive(inner, CHECK_EVERY) => if !alive {
                return Ended::StoreDropped;
            }
        }
        let check = tokio::time::timeout(timeout, client.simple_query("SELECT 1")).await;
        if !matches!(check, Ok(Ok(_))) {
            tracing::debug!("postgres: the notification listener's connection stopped answering");
            return Ended::ConnectionLost;
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
