//! Private server processes a test can kill, restart and pause without
//! disturbing the shared servers.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{free_port, server_url};

/// Send `signal` (`STOP`, `CONT`, ...) to process `pid`.
pub fn signal(pid: u32, signal: &str) {
    let status = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{signal} {pid} failed");
}

/// A stopped process (SIGSTOP) that is continued (SIGCONT) when this is
/// dropped, also when the test panics: a paused server must never outlive
/// its test.
pub struct Paused {
    pids: Vec<u32>,
}

impl Paused {
    pub fn new(pids: Vec<u32>) -> Paused {
        for &pid in &pids {
            signal(pid, "STOP");
        }
        Paused { pids }
    }

    pub fn resume(self) {}
}

impl Drop for Paused {
    fn drop(&mut self) {
        for &pid in &self.pids {
            signal(pid, "CONT");
        }
    }
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

    /// Start again with other arguments (a demoted primary as a replica).
    pub fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self.restart();
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

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running server").id()
    }

    /// SIGSTOP until the returned value is dropped: the process keeps its
    /// sockets but answers nothing.
    pub fn pause(&self) -> Paused {
        Paused::new(vec![self.child.as_ref().expect("a running server").id()])
    }

    /// `CLIENT PAUSE` for `how_long`: the server holds every client's
    /// commands, as during a failover.
    pub fn client_pause(&self, how_long: Duration) {
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(how_long.as_millis() as u64)
            .query(&mut self.raw())
            .expect("CLIENT PAUSE");
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
        members_url("etcd", &self.client_ports)
    }

    pub fn kill(&mut self, member: usize) {
        stop(&mut self.children[member]);
    }

    pub fn dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }
}

impl Drop for OwnEtcdCluster {
    fn drop(&mut self) {
        self.children.iter_mut().for_each(stop);
    }
}

/// The URL of a cluster whose members listen on `ports` of 127.0.0.1.
fn members_url(scheme: &str, ports: &[u16]) -> String {
    let hosts: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!("{scheme}://{}", hosts.join(","))
}

/// Kill a cluster member, if it runs, and reap it.
fn stop(child: &mut Option<Child>) {
    if let Some(mut c) = child.take() {
        let _ = c.kill();
        let _ = c.wait();
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
                        "tickTime=500\nmaxSessionTimeout=60000\ninitLimit=20\nsyncLimit=10\ndataDir={}\nclientPort={client}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\n4lw.commands.whitelist=srvr\nforceSync=no\n{servers}",
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
        members_url("zk", &self.client_ports)
    }

    pub fn kill(&mut self, server: usize) {
        stop(&mut self.children[server]);
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
        self.children.iter_mut().for_each(stop);
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

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("a running server").id()
    }

    /// SIGSTOP until the returned value is dropped.
    pub fn pause(&self) -> Paused {
        Paused::new(vec![self.child.as_ref().expect("a running server").id()])
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

/// A single-member etcd of the test's own.
pub fn own_etcd() -> OwnServer {
    let bin = server_url("ATOMIC_STORE_TEST_ETCD_BIN");
    let peer = free_port();
    OwnServer::start(move |port, dir| {
        let (client, peer) = (
            format!("http://127.0.0.1:{port}"),
            format!("http://127.0.0.1:{peer}"),
        );
        let mut c = Command::new(&bin);
        c.args(["--name", "own", "--data-dir"])
            .arg(dir.join("data"))
            .args(["--listen-client-urls", &client])
            .args(["--advertise-client-urls", &client])
            .args(["--listen-peer-urls", &peer])
            .args(["--initial-advertise-peer-urls", &peer])
            .args(["--initial-cluster", &format!("own={peer}")]);
        c
    })
}

/// A standalone ZooKeeper of the test's own (TTL nodes on, as the store
/// needs).
pub fn own_zookeeper() -> OwnServer {
    let jar = server_url("ATOMIC_STORE_TEST_ZK_JAR");
    OwnServer::start(move |port, dir| {
        std::fs::create_dir_all(dir.join("data")).unwrap();
        std::fs::write(
            dir.join("zoo.cfg"),
            format!(
                "tickTime=500\ndataDir={}\nclientPort={port}\nclientPortAddress=127.0.0.1\nadmin.enableServer=false\nforceSync=no\n",
                dir.join("data").display()
            ),
        )
        .unwrap();
        let mut c = Command::new("java");
        c.args([
            "-Xmx256m",
            "-Dzookeeper.extendedTypesEnabled=true",
            "-Dznode.container.checkIntervalMs=1000",
            "-cp",
            &jar,
        ])
        .arg("org.apache.zookeeper.server.ZooKeeperServerMain")
        .arg(dir.join("zoo.cfg"));
        c
    })
}

/// A dynalite (DynamoDB) of the test's own.
pub fn own_dynalite() -> OwnServer {
    let cli = server_url("ATOMIC_STORE_TEST_DYNALITE_CLI");
    OwnServer::start(move |port, dir| {
        let mut c = Command::new("node");
        c.arg(&cli)
            .args(["--host", "127.0.0.1", "--port", &port.to_string()])
            .args(["--createTableMs", "0", "--path"])
            .arg(dir.join("data"));
        c
    })
}

/// An nx-27017 (MongoDB wire protocol) of the test's own.
pub fn own_mongodb() -> OwnServer {
    let bin = server_url("ATOMIC_STORE_TEST_MONGODB_START");
    OwnServer::start(move |port, dir| {
        let mut c = Command::new(&bin);
        c.args(["--host", "127.0.0.1", "-p", &port.to_string(), "--data-dir"])
            .arg(dir.join("data"))
            .arg("--log-file")
            .arg(dir.join("nx.log"))
            .arg("--pid-file")
            .arg(dir.join("nx.pid"));
        c
    })
}

/// A primary, one replica and three sentinels of a test's own (down after
/// 1 s), so a test can kill the primary and watch a real failover.
pub struct OwnSentinelGroup {
    pub nodes: [OwnRedis; 2],
    sentinels: Vec<Child>,
    sentinel_ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

pub const SENTINEL_PRIMARY_NAME: &str = "atomic";

/// Without it, a replica (re)syncs at once: Redis 7 waits 5 s by default
/// for more replicas to share a diskless sync.
pub const NO_SYNC_DELAY: [&str; 2] = ["--repl-diskless-sync-delay", "0"];

impl OwnSentinelGroup {
    pub fn start() -> OwnSentinelGroup {
        let primary = OwnRedis::start(&NO_SYNC_DELAY);
        let port = primary.port;
        OwnSentinelGroup::around(primary, port)
    }

    /// A group whose replica replicates through a [`FaultProxy`], so a
    /// test can hold back what the primary sends it (replication lag).
    pub async fn start_replicating_through_a_proxy() -> (OwnSentinelGroup, super::FaultProxy) {
        let primary = OwnRedis::start(&NO_SYNC_DELAY);
        let proxy = super::FaultProxy::start(&format!("127.0.0.1:{}", primary.port)).await;
        let port = proxy.port;
        let group = tokio::task::spawn_blocking(move || OwnSentinelGroup::around(primary, port))
            .await
            .unwrap();
        (group, proxy)
    }

    fn around(primary: OwnRedis, replicate_from: u16) -> OwnSentinelGroup {
        let port = primary.port.to_string();
        let from = replicate_from.to_string();
        let replica =
            OwnRedis::start(&[&NO_SYNC_DELAY[..], &["--replicaof", "127.0.0.1", &from]].concat());
        let dir = tempfile::tempdir().unwrap();
        let (mut sentinels, mut sentinel_ports) = (Vec::new(), Vec::new());
        for i in 0..3 {
            let sentinel_port = free_port();
            let conf = dir.path().join(format!("sentinel-{i}.conf"));
            let text = format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {}\n\
                 sentinel monitor {SENTINEL_PRIMARY_NAME} 127.0.0.1 {port} 2\n\
                 sentinel down-after-milliseconds {SENTINEL_PRIMARY_NAME} 1000\n\
                 sentinel failover-timeout {SENTINEL_PRIMARY_NAME} 5000\n",
                dir.path().display()
            );
            std::fs::write(&conf, text).unwrap();
            let child = Command::new(server_url("ATOMIC_STORE_TEST_REDIS_SENTINEL_BIN"))
                .arg(&conf)
                .stdout(Stdio::null())
                .spawn()
                .expect("start redis-sentinel");
            sentinels.push(child);
            sentinel_ports.push(sentinel_port);
        }
        let group = OwnSentinelGroup {
            nodes: [primary, replica],
            sentinels,
            sentinel_ports,
            _dir: dir,
        };
        group.wait_until_ready();
        group
    }

    /// The `redis+sentinel://` URL of this group.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinel_ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!(
            "redis+sentinel://{}/{SENTINEL_PRIMARY_NAME}",
            hosts.join(",")
        )
    }

    /// A connection to sentinel `i`.
    pub fn sentinel(&self, i: usize) -> redis::RedisResult<redis::Connection> {
        redis::Client::open(format!("redis://127.0.0.1:{}", self.sentinel_ports[i]))?
            .get_connection()
    }

    /// The port of the node the first sentinel names as primary.
    pub fn primary_port(&self) -> Option<u16> {
        let mut c = self.sentinel(0).ok()?;
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(SENTINEL_PRIMARY_NAME)
            .query::<Option<(String, u16)>>(&mut c)
            .ok()
            .flatten()
            .map(|(_, port)| port)
    }

    /// Every sentinel sees the others and the replica, and the replica's
    /// link is up: a failover can happen.
    pub fn wait_until_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let replica_up = redis::cmd("INFO")
                .arg("replication")
                .query::<String>(&mut self.nodes[1].raw())
                .is_ok_and(|info| info.contains("master_link_status:up"));
            // Each sees the others, and has found the replica (from the
            // primary's INFO, read every 10 s).
            let quorum = (0..3).all(|i| {
                self.sentinel(i).is_ok_and(|mut c| {
                    let usable = redis::cmd("SENTINEL")
                        .arg("CKQUORUM")
                        .arg(SENTINEL_PRIMARY_NAME)
                        .query::<String>(&mut c)
                        .is_ok_and(|s| s.starts_with("OK 3 usable"));
                    let replicas = redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(SENTINEL_PRIMARY_NAME)
                        .query::<Vec<redis::Value>>(&mut c)
                        .is_ok_and(|r| !r.is_empty());
                    usable && replicas
                })
            });
            if replica_up && quorum {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the sentinel group did not become ready"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for OwnSentinelGroup {
    fn drop(&mut self) {
        for child in &mut self.sentinels {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
