//! Helpers shared by the backend tests: URLs of the servers that
//! `scripts/test` starts, private server processes for fault tests, a fault
//! proxy, a linearizability checker, the fault harness, and deliberately
//! broken stores that show the checks catch what they claim to.
#![allow(dead_code, unused_imports)]

pub mod broken;
pub mod faults;
pub mod lincheck;
pub mod proxy;
pub mod servers;

use std::net::TcpListener;

pub use faults::{
    incr_and_lock_loops_across_a_kill, incr_loops_across_a_restart, resets_are_lost_replies,
};
pub use proxy::{FaultProxy, Faults, Hold, ResettingProxy};
pub use servers::{OwnEtcdCluster, OwnRedis, OwnServer, OwnZkEnsemble};

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
