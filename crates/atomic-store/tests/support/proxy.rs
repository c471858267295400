//! A TCP proxy that puts network faults between a client and its server:
//! latency per direction, a black hole, one-way drops and resets.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// What happens to the bytes of one direction.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub enum Flow {
    #[default]
    Pass,
    /// Kept until the fault ends, then delivered: a TCP stream stalled by a
    /// partition that heals before TCP gives up.
    Hold,
    /// Thrown away. A connection that lost bytes is reset when the fault
    /// ends, since TCP never delivers what follows a lost segment.
    Drop,
}

/// The faults of one direction.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Way {
    pub flow: Flow,
    /// Added to every chunk, in order.
    pub latency: Duration,
}

/// The faults in force, per direction.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub struct Faults {
    /// Client to server.
    pub requests: Way,
    /// Server to client.
    pub replies: Way,
}

impl Faults {
    pub fn none() -> Faults {
        Faults::default()
    }

    pub fn latency(requests: Duration, replies: Duration) -> Faults {
        let mut f = Faults::default();
        f.requests.latency = requests;
        f.replies.latency = replies;
        f
    }

    /// Connections are accepted, and nothing comes back or goes through.
    pub fn black_hole() -> Faults {
        let mut f = Faults::default();
        f.requests.flow = Flow::Hold;
        f.replies.flow = Flow::Hold;
        f
    }

    pub fn drop_requests() -> Faults {
        let mut f = Faults::default();
        f.requests.flow = Flow::Drop;
        f
    }

    pub fn drop_replies() -> Faults {
        let mut f = Faults::default();
        f.replies.flow = Flow::Drop;
        f
    }
}

/// What a [`FaultProxy`] holds back until the next reset (the reset test's
/// shorthand for [`Flow::Hold`] in one direction).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Hold {
    Nothing,
    /// Requests never reach the server.
    Requests,
    /// Requests reach the server; their replies never reach the client.
    Replies,
}

/// A TCP proxy in front of a server that a test can slow down, make hold or
/// drop requests or replies, and reset (every connection is closed with an
/// RST, as when a server process dies with requests in flight). It counts
/// the connections it accepted, so a test can tell that a client came back
/// on a new one.
pub struct FaultProxy {
    pub port: u16,
    faults: watch::Sender<Faults>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    accepted: Arc<AtomicUsize>,
    /// Chunks a hold still lets through before it holds (see
    /// [`FaultProxy::hold_after`]).
    allowance: Arc<AtomicUsize>,
    accept: tokio::task::JoinHandle<()>,
}

/// The name the existing fault tests use.
pub type ResettingProxy = FaultProxy;

impl FaultProxy {
    /// Listen on a free port and forward every connection to `upstream`
    /// (`host:port`).
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (faults, watch) = watch::channel(Faults::default());
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accepted = Arc::new(AtomicUsize::new(0));
        let allowance = Arc::new(AtomicUsize::new(0));
        let (upstream, list, count, allowed) = (
            upstream.to_owned(),
            Arc::clone(&connections),
            Arc::clone(&accepted),
            Arc::clone(&allowance),
        );
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                client.set_zero_linger().unwrap();
                server.set_zero_linger().unwrap();
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let task =
                    tokio::spawn(forward(client, server, watch.clone(), Arc::clone(&allowed)));
                let mut list = list.lock().unwrap();
                list.retain(|t| !t.is_finished());
                list.push(task.abort_handle());
            }
        });
        FaultProxy {
            port,
            faults,
            connections,
            accepted,
            allowance,
            accept,
        }
    }

    /// A proxy in front of the first `127.0.0.1:PORT` in `url`, and `url`
    /// with that address replaced by the proxy's.
    pub async fn in_front_of(url: &str) -> (FaultProxy, String) {
        let at = url.find("127.0.0.1:").expect("a 127.0.0.1 address");
        let end = url[at + 10..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(url.len(), |n| at + 10 + n);
        let proxy = FaultProxy::start(&url[at..end]).await;
        let proxied = format!("{}127.0.0.1:{}{}", &url[..at], proxy.port, &url[end..]);
        (proxy, proxied)
    }

    /// Hold requests or replies (and nothing else) until the next reset.
    pub fn hold(&self, what: Hold) {
        self.hold_after(what, 0);
    }

    /// Like [`hold`](Self::hold), but let the first `chunks` reads of the
    /// held direction through (over all connections): to hold the reply
    /// to a write that follows a read.
    pub fn hold_after(&self, what: Hold, chunks: usize) {
        self.allowance.store(chunks, Ordering::SeqCst);
        self.faults.send_modify(|f| {
            f.requests.flow = if what == Hold::Requests {
                Flow::Hold
            } else {
                Flow::Pass
            };
            f.replies.flow = if what == Hold::Replies {
                Flow::Hold
            } else {
                Flow::Pass
            };
        });
    }

    /// Put `faults` in force (replacing the ones before).
    pub fn set(&self, faults: Faults) {
        self.allowance.store(0, Ordering::SeqCst);
        self.faults.send_replace(faults);
    }

    pub fn faults(&self) -> Faults {
        *self.faults.borrow()
    }

    /// How many connections the proxy has accepted so far.
    pub fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }

    /// Close every open connection with an RST; the faults stay in force.
    pub fn reset_connections(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    /// Close every open connection with an RST, then pass everything on.
    pub async fn reset(&self) {
        self.reset_connections();
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.set(Faults::none());
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.reset_connections();
    }
}

async fn forward(
    mut client: tokio::net::TcpStream,
    mut server: tokio::net::TcpStream,
    faults: watch::Receiver<Faults>,
    allowance: Arc<AtomicUsize>,
) {
    // Borrowed halves: an owned write half would send a FIN when dropped.
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    tokio::select! {
        _ = pass(client_read, server_write, faults.clone(), Arc::clone(&allowance), |f| f.requests) => {}
        _ = pass(server_read, client_write, faults, allowance, |f| f.replies) => {}
    }
    // Returning drops both sockets with zero linger: an RST each way.
}

/// Copy `from` to `to` under the faults of one direction (`way`). Returns
/// when either side closes, or to reset a connection that dropped bytes.
async fn pass(
    mut from: impl AsyncRead + Unpin,
    mut to: impl AsyncWrite + Unpin,
    mut faults: watch::Receiver<Faults>,
    allowance: Arc<AtomicUsize>,
    way: fn(&Faults) -> Way,
) {
    // Chunks wait in a queue until their delivery time, in order, so that
    // latency delays each chunk without stopping the reads.
    let (queue, mut due) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            let allowed = || {
                allowance
                    .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                    .is_ok()
            };
            if way(&faults.borrow_and_update()).flow == Flow::Hold
                && !allowed()
                && faults
                    .wait_for(|f| way(f).flow != Flow::Hold)
                    .await
                    .is_err()
            {
                return;
            }
            let current = way(&faults.borrow_and_update());
            if current.flow == Flow::Drop {
                // Lost: discard everything that follows too, and reset the
                // connection once the fault is over.
                loop {
                    tokio::select! {
                        r = from.read(&mut buf) => {
                            if matches!(r, Ok(0) | Err(_)) {
                                return;
                            }
                        }
                        _ = faults.wait_for(|f| way(f).flow != Flow::Drop) => return,
                    }
                }
            }
            if queue
                .send((Instant::now() + current.latency, buf[..n].to_vec()))
                .is_err()
            {
                return;
            }
        }
    };
    let write = async move {
        while let Some((at, chunk)) = due.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
    };
    // Either half ending ends the direction: a closed reader has nothing
    // more to send, a broken writer can deliver nothing.
    tokio::select! {
        _ = read => {}
        _ = write => {}
    }
}
