//! Helpers shared by the backend tests: URLs of the servers that
//! `scripts/test` starts, and private server processes for fault tests.
#![allow(dead_code)]

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The URL of a test server, from the environment `scripts/test` sets up.
/// A missing URL fails the test: tests never skip silently.
pub fn server_url(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!("{var} is not set: run the tests through scripts/test, which installs and starts the servers")
    })
}

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server process of this test's own, in a temporary directory, so
/// a test can kill and restart it without disturbing the others.
pub struct OwnRedis {
    pub port: u16,
    dir: tempfile::TempDir,
    args: Vec<String>,
    child: Option<Child>,
}

impl OwnRedis {
    pub fn start(args: &[&str]) -> OwnRedis {
        let mut r = OwnRedis {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
        };
        r.restart();
        r
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Start (again) on the same port and directory; waits until it answers.
    pub fn restart(&mut self) {
        let server = server_url("ATOMIC_STORE_TEST_REDIS_SERVER");
        let child = Command::new(server)
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
            .args(["--dir", self.dir.path().to_str().unwrap(), "--save", ""])
            .args(&self.args)
            .stdout(Stdio::null())
            .spawn()
            .expect("start redis-server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = redis::Client::open(self.url()).unwrap();
        loop {
            if let Ok(mut c) = client.get_connection() {
                if redis::cmd("PING").query::<String>(&mut c).is_ok() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, as a crash would.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn raw(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .unwrap()
            .get_connection()
            .unwrap()
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A 3-member etcd cluster of a test's own, on free loopback ports, so the
/// test can kill its leader without disturbing the others.
pub struct OwnEtcdCluster {
    pub client_ports: Vec<u16>,
    dir: tempfile::TempDir,
    children: Vec<Option<Child>>,
}

impl OwnEtcdCluster {
    pub fn start() -> OwnEtcdCluster {
        let bin = server_url("ATOMIC_STORE_TEST_ETCD_BIN");
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16)> = (0..3).map(|_| (free_port(), free_port())).collect();
        let cluster: Vec<String> = ports
            .iter()
            .enumerate()
            .map(|(i, (_, peer))| format!("f{i}=http://127.0.0.1:{peer}"))
            .collect();
        let children = ports
            .iter()
            .enumerate()
            .map(|(i, (client, peer))| {
                let log = std::fs::File::create(dir.path().join(format!("f{i}.log"))).unwrap();
                Some(
                    Command::new(&bin)
                        .args(["--name", &format!("f{i}")])
                        .args([
                            "--data-dir",
                            dir.path().join(format!("f{i}.etcd")).to_str().unwrap(),
                        ])
                        .args([
                            "--listen-client-urls",
                            &format!("http://127.0.0.1:{client}"),
                        ])
                        .args([
                            "--advertise-client-urls",
                            &format!("http://127.0.0.1:{client}"),
                        ])
                        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
                        .args([
                            "--initial-advertise-peer-urls",
                            &format!("http://127.0.0.1:{peer}"),
                        ])
                        .args(["--initial-cluster", &cluster.join(",")])
                        .args([
                            "--initial-cluster-state",
                            "new",
                            "--initial-cluster-token",
                            "fault-test",
                        ])
                        .stdout(Stdio::null())
                        .stderr(log)
                        .spawn()
                        .expect("start etcd"),
                )
            })
            .collect();
        OwnEtcdCluster {
            client_ports: ports.iter().map(|(c, _)| *c).collect(),
            dir,
            children,
        }
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .client_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("etcd://{}", hosts.join(","))
    }

    pub fn kill(&mut self, member: usize) {
        if let Some(mut c) = self.children[member].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for OwnEtcdCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// A 3-server ZooKeeper ensemble of a test's own.
pub struct OwnZkEnsemble {
    pub client_ports: Vec<u16>,
    dir: tempfile::TempDir,
    jar: String,
    children: Vec<Option<Child>>,
}

fn spawn_zk(jar: &str, home: &std::path::Path) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.join("server.log"))
        .unwrap();
    Command::new("java")
        .args([
            "-Xmx256m",
            "-Dzookeeper.extendedTypesEnabled=true",
            "-cp",
            jar,
        ])
        .arg("org.apache.zookeeper.server.quorum.QuorumPeerMain")
        .arg(home.join("zoo.cfg"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start java")
}

impl OwnZkEnsemble {
    pub fn start() -> OwnZkEnsemble {
        let jar = server_url("ATOMIC_STORE_TEST_ZK_JAR");
        let dir = tempfile::tempdir().unwrap();
        let ports: Vec<(u16, u16, u16)> = (0..3)
            .map(|_| (free_port(), free_port(), free_port()))
            .collect();
        let servers: String = ports
            .iter()
            .enumerate()
            .map(|(i, (_, quorum, election))| {
                format!("server.{}=127.0.0.1:{quorum}:{election}\n", i + 1)
            })
            .collect();
        let children = ports
            .iter()
            .enumerate()
            .map(|(i, (client, _, _))| {
                let home = dir.path().join(format!("s{i}"));
                std::fs::create_dir_all(home.join("data")).unwrap();
                std::fs::write(home.join("data/myid"), format!("{}\n", i + 1)).unwrap();
                std::fs::write(
                    home.join("zoo.cfg"),
                    format!(
                        "tickTime=500\ninitLimit=20\nsyncLimit=10\ndataDir={}\nclientPort={client}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\nforceSync=no\n{servers}",
                        home.join("data").display()
                    ),
                )
                .unwrap();
                Some(spawn_zk(&jar, &home))
            })
            .collect();
        OwnZkEnsemble {
            client_ports: ports.iter().map(|(c, _, _)| *c).collect(),
            dir,
            jar,
            children,
        }
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .client_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("zk://{}", hosts.join(","))
    }

    pub fn kill(&mut self, server: usize) {
        if let Some(mut c) = self.children[server].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Start a killed server again, with its data.
    pub fn restart(&mut self, server: usize) {
        if self.children[server].is_none() {
            let home = self.dir.path().join(format!("s{server}"));
            self.children[server] = Some(spawn_zk(&self.jar, &home));
        }
    }
}

impl Drop for OwnZkEnsemble {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// Builds a server's command line from its port and directory.
type ServerCommand = Box<dyn Fn(u16, &std::path::Path) -> Command + Send>;

/// A server process of a test's own (any command line), on its own port and
/// directory, that the test can kill and start again with the same data.
pub struct OwnServer {
    pub port: u16,
    dir: tempfile::TempDir,
    command: ServerCommand,
    child: Option<Child>,
}

impl OwnServer {
    pub fn start(command: impl Fn(u16, &std::path::Path) -> Command + Send + 'static) -> OwnServer {
        let mut s = OwnServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            command: Box::new(command),
            child: None,
        };
        s.restart();
        s
    }

    /// Start it (again), and wait until its port accepts connections.
    pub fn restart(&mut self) {
        if self.child.is_some() {
            return;
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .unwrap();
        let child = (self.command)(self.port, self.dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .stdin(Stdio::null())
            .spawn()
            .expect("start the test's own server");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "own server on {} did not come up; log in {}",
                self.port,
                self.dir.path().display()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL, no goodbye.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for OwnServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Run `tasks` tasks of `incr` on one key (which the caller has set to 1);
/// after 500 ms kill `server` (SIGKILL), after another second start it
/// again on the same data, then go on for `settle`. Checks that every value came
/// once, that every error is a typed network error, that work resumed, and
/// that the stored counter agrees.
pub async fn incr_loops_across_a_restart(
    store: atomic_store::conformance::Store,
    key: &str,
    tasks: usize,
    server: &mut OwnServer,
    settle: Duration,
) {
    use atomic_store::ErrorKind;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let restarted = Arc::new(AtomicBool::new(false));
    let after = Arc::new(AtomicUsize::new(0));
    let mut handles = Vec::new();
    for _ in 0..tasks {
        let (store, stop, restarted, after, key) = (
            Arc::clone(&store),
            Arc::clone(&stop),
            Arc::clone(&restarted),
            Arc::clone(&after),
            key.to_owned(),
        );
        handles.push(tokio::spawn(async move {
            let (mut values, mut errors) = (Vec::new(), Vec::new());
            while !stop.load(Ordering::Relaxed) {
                match store.incr(&key).await {
                    Ok(v) => {
                        values.push(v);
                        if restarted.load(Ordering::Relaxed) {
                            after.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    Err(e) => {
                        errors.push(e.kind());
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                }
            }
            (values, errors)
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    server.restart();
    restarted.store(true, Ordering::Relaxed);
    tokio::time::sleep(settle).await;
    stop.store(true, Ordering::Relaxed);
    let (mut values, mut errors) = (Vec::new(), Vec::new());
    for h in handles {
        let (v, e) = h.await.unwrap();
        values.extend(v);
        errors.extend(e);
    }
    let total = values.len();
    let mut unique = values.clone();
    unique.sort_unstable();
    unique.dedup();
    assert_eq!(unique.len(), total, "a value was returned twice");
    assert!(
        errors.iter().all(|k| matches!(
            k,
            ErrorKind::Unavailable | ErrorKind::OutcomeUnknown | ErrorKind::Timeout
        )),
        "untyped errors: {errors:?}"
    );
    assert!(!errors.is_empty(), "the restart caused no error at all");
    let after_restart = after.load(Ordering::Relaxed);
    assert!(after_restart > 0, "no incr succeeded after the restart");
    // The stored counter is at least every value handed out, and counts no
    // more increments than were asked for (those that succeeded, those with
    // an unknown outcome, and the caller's own before the loops).
    let last: i64 = store.get(key).await.unwrap().unwrap().parse().unwrap();
    let max = values.iter().copied().max().unwrap();
    assert!(last >= max, "counter {last} behind a returned value {max}");
    let unknown = errors
        .iter()
        .filter(|k| **k == ErrorKind::OutcomeUnknown)
        .count() as i64;
    assert!(
        last <= total as i64 + unknown + 1,
        "counter {last} counts more increments than were asked for"
    );
}

/// What a [`ResettingProxy`] holds back until the next reset.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Hold {
    Nothing,
    /// Requests never reach the server.
    Requests,
    /// Requests reach the server; their replies never reach the client.
    Replies,
}

/// A TCP proxy in front of a server that a test can make hold requests or
/// replies back, and reset (every connection is closed with an RST, as when
/// a server process dies with requests in flight).
pub struct ResettingProxy {
    pub port: u16,
    hold: tokio::sync::watch::Sender<Hold>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl ResettingProxy {
    /// Listen on a free port and forward every connection to `upstream`
    /// (`host:port`).
    pub async fn start(upstream: &str) -> ResettingProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (hold, watch) = tokio::sync::watch::channel(Hold::Nothing);
        let connections = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (upstream, list) = (upstream.to_owned(), std::sync::Arc::clone(&connections));
        let accept = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    continue;
                };
                client.set_zero_linger().unwrap();
                server.set_zero_linger().unwrap();
                let task = tokio::spawn(forward(client, server, watch.clone()));
                list.lock().unwrap().push(task.abort_handle());
            }
        });
        ResettingProxy {
            port,
            hold,
            connections,
            accept,
        }
    }

    /// A proxy in front of the first `127.0.0.1:PORT` in `url`, and `url`
    /// with that address replaced by the proxy's.
    pub async fn in_front_of(url: &str) -> (ResettingProxy, String) {
        let at = url.find("127.0.0.1:").expect("a 127.0.0.1 address");
        let end = url[at + 10..]
            .find(|c: char| !c.is_ascii_digit())
            .map_or(url.len(), |n| at + 10 + n);
        let proxy = ResettingProxy::start(&url[at..end]).await;
        let proxied = format!("{}127.0.0.1:{}{}", &url[..at], proxy.port, &url[end..]);
        (proxy, proxied)
    }

    pub fn hold(&self, what: Hold) {
        self.hold.send_replace(what);
    }

    /// Close every open connection with an RST, then pass everything on.
    pub async fn reset(&self) {
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        self.hold.send_replace(Hold::Nothing);
    }
}

impl Drop for ResettingProxy {
    fn drop(&mut self) {
        self.accept.abort();
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }
}

async fn forward(
    mut client: tokio::net::TcpStream,
    mut server: tokio::net::TcpStream,
    hold: tokio::sync::watch::Receiver<Hold>,
) {
    // Borrowed halves: an owned write half would send a FIN when dropped.
    let (client_read, client_write) = client.split();
    let (server_read, server_write) = server.split();
    tokio::select! {
        _ = pass(client_read, server_write, hold.clone(), Hold::Requests) => {}
        _ = pass(server_read, client_write, hold, Hold::Replies) => {}
    }
}

/// Copy `from` to `to`, keeping what was read while `held` is in force.
async fn pass(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    mut hold: tokio::sync::watch::Receiver<Hold>,
    held: Hold,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if hold.wait_for(|h| *h != held).await.is_err() || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

/// Requests cut off by a reset (what a dying server does), through
/// `proxy`: reads are retried on a new connection; an `incr`,
/// `acquire_lock` or `compare_and_set` whose request or reply was lost ends as its result or
/// OutcomeUnknown, never as another error, and is never sent twice (a gap
/// in the values is only ever explained by an unknown outcome, and a lock
/// or key nobody else asked for is never refused).
pub async fn resets_are_lost_replies(
    store: &atomic_store::conformance::Store,
    proxy: &ResettingProxy,
) {
    use atomic_store::ErrorKind;
    use std::sync::Arc;
    // Keys of this run only: the servers keep data between runs.
    let run = atomic_store::LockId::generate().as_str()[..8].to_owned();
    let (read_key, count_key) = (format!("reset-{run}-k"), format!("reset-{run}-n"));
    store.set(&read_key, "v").await.unwrap();
    let mut last = store.incr(&count_key).await.unwrap();
    assert_eq!(last, 1);
    let mut unknown_since_last = 0;
    for round in 0..8 {
        let what = if round % 2 == 0 {
            Hold::Requests
        } else {
            Hold::Replies
        };
        proxy.hold(what);
        let read = tokio::spawn({
            let (store, key) = (Arc::clone(store), read_key.clone());
            async move { store.get(&key).await }
        });
        let count = tokio::spawn({
            let (store, key) = (Arc::clone(store), count_key.clone());
            async move { store.incr(&key).await }
        });
        // A fresh lock key each round: nobody else ever holds it.
        let lock_key = format!("reset-{run}-lock-{round}");
        let take = tokio::spawn({
            let (store, lock_key) = (Arc::clone(store), lock_key.clone());
            async move { store.acquire_lock(&lock_key, Duration::from_secs(60)).await }
        });
        let claim_key = format!("reset-{run}-claim-{round}");
        let claim = tokio::spawn({
            let (store, claim_key) = (Arc::clone(store), claim_key.clone());
            async move { store.compare_and_set(&claim_key, None, "mine", None).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.reset().await;
        let read = read.await.unwrap();
        assert_eq!(
            read.unwrap_or_else(|e| panic!("round {round} ({what:?}): get: {e:?}"))
                .as_deref(),
            Some("v")
        );
        match take.await.unwrap() {
            Ok(Some(lock)) => {
                let released = store.release_lock(&lock_key, &lock.id).await.unwrap();
                assert_eq!(released, atomic_store::ReleaseOutcome::Released);
            }
            Ok(None) => {
                panic!("round {round} ({what:?}): a lock nobody held was refused: sent twice")
            }
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::OutcomeUnknown,
                "round {round} ({what:?}): acquire_lock: {e:?}"
            ),
        }
        match claim.await.unwrap() {
            Ok(true) => assert_eq!(
                store.get(&claim_key).await.unwrap().as_deref(),
                Some("mine")
            ),
            Ok(false) => {
                panic!("round {round} ({what:?}): a key nobody wrote was taken: sent twice")
            }
            Err(e) => assert_eq!(
                e.kind(),
                ErrorKind::OutcomeUnknown,
                "round {round} ({what:?}): compare_and_set: {e:?}"
            ),
        }
        let outcome = count.await.unwrap();
        match outcome {
            Ok(v) => {
                assert!(
                    v > last && v - last - 1 <= unknown_since_last,
                    "round {round} ({what:?}): {v} after {last} with {unknown_since_last} unknown outcomes: sent twice"
                );
                (last, unknown_since_last) = (v, 0);
            }
            Err(e) => {
                assert_eq!(
                    e.kind(),
                    ErrorKind::OutcomeUnknown,
                    "round {round} ({what:?}): {e:?}"
                );
                unknown_since_last += 1;
            }
        }
    }
    let stored: i64 = store
        .get(&count_key)
        .await
        .unwrap()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        stored >= last && stored - last <= unknown_since_last,
        "stored {stored}, last returned {last}, {unknown_since_last} unknown since"
    );
    assert_eq!(store.incr(&count_key).await.unwrap(), stored + 1);
}

/// 8 tasks, half running `incr` on one key and half taking and releasing
/// one lock, while `kill` takes a server away; then `settle` more. Checks
/// that no value came twice, the lock never had two holders, every error
/// is a typed network error, and work went on after the kill.
pub async fn incr_and_lock_loops_across_a_kill(
    store: &atomic_store::conformance::Store,
    kill: impl std::future::Future<Output = ()>,
    settle: Duration,
) {
    use atomic_store::ErrorKind;
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::Arc;
    let stop = Arc::new(AtomicBool::new(false));
    let holders = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for task in 0..8 {
        let (store, stop, holders) = (Arc::clone(store), Arc::clone(&stop), Arc::clone(&holders));
        tasks.push(tokio::spawn(async move {
            let (mut values, mut errors, mut locked) = (Vec::new(), Vec::new(), 0);
            while !stop.load(Ordering::Relaxed) {
                if task % 2 == 0 {
                    match store.incr("counter").await {
                        Ok(v) => values.push(v),
                        Err(e) => errors.push(e),
                    }
                } else {
                    match store.acquire_lock("lock", Duration::from_secs(10)).await {
                        Ok(Some(lock)) => {
                            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                            tokio::time::sleep(Duration::from_millis(2)).await;
                            holders.fetch_sub(1, Ordering::SeqCst);
                            locked += 1;
                            // A lost release reply leaves the lock to its TTL.
                            if let Err(e) = store.release_lock("lock", &lock.id).await {
                                errors.push(e);
                            }
                        }
                        Ok(None) => tokio::time::sleep(Duration::from_millis(5)).await,
                        Err(e) => errors.push(e),
                    }
                }
                if !errors.is_empty() && errors.len() % 20 == 0 {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
            (values, errors, locked)
        }));
    }
    tokio::time::sleep(Duration::from_millis(1000)).await;
    kill.await;
    let at_kill: i64 = loop {
        match store.get("counter").await {
            Ok(v) => break v.and_then(|v| v.parse().ok()).unwrap_or(0),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    };
    tokio::time::sleep(settle).await;
    stop.store(true, Ordering::Relaxed);
    let (mut values, mut errors, mut locked) = (Vec::new(), Vec::new(), 0);
    for t in tasks {
        let (v, e, l) = t.await.unwrap();
        values.extend(v);
        errors.extend(e);
        locked += l;
    }
    let mut distinct = values.clone();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), values.len(), "a value was returned twice");
    for e in &errors {
        assert!(
            matches!(
                e.kind(),
                ErrorKind::Unavailable | ErrorKind::OutcomeUnknown | ErrorKind::Timeout
            ),
            "unexpected error: {e:?}"
        );
    }
    assert!(locked > 0, "no lock was ever taken");
    let after = values.iter().filter(|&&v| v > at_kill).count();
    assert!(
        after > 8,
        "no progress after the kill: {after} values above {at_kill}"
    );
}
