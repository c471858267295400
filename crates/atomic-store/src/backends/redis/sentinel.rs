//! Finding the primary through Redis Sentinel (`redis+sentinel://`).
//!
//! The official client guideline, done here rather than with redis-rs's
//! `Sentinel` (fixed order, no per-sentinel timeout): ask the sentinels in
//! turn, each within a share of the connect timeout; move the one that
//! answered to the front; connect to the address it names; and use that
//! node only if `ROLE` says it is the primary (mid-failover, a sentinel may
//! still name a node that was just demoted). Every failure here happens
//! before a request is sent, so it is "nothing was applied".

use std::sync::Mutex;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{ErrorKind, RedisError, Value};

use crate::url::SENTINEL_PORT;

/// The sentinels of one primary, and how to reach the data nodes.
pub(super) struct Sentinels {
    /// `host:port`, the one that answered last first.
    addresses: Mutex<Vec<String>>,
    primary_name: String,
    /// `user:pass@` or empty: for the data nodes only.
    userinfo: String,
    db: i64,
}

impl Sentinels {
    /// The sentinels at `hosts` (`host[:port],…`); the error says what is
    /// wrong with the URL.
    pub fn new(hosts: &str, primary_name: &str, userinfo: &str, db: i64) -> Result<Sentinels, String> {
        let mut addresses = Vec::new();
        for host in hosts.split(',').filter(|h| !h.is_empty()) {
            let address = match host.rsplit_once(':') {
                Some(_) if host.ends_with(']') => format!("{host}:{SENTINEL_PORT}"),
                Some((_, port)) if port.parse::<u16>().is_ok() => host.to_owned(),
                Some(_) => return Err(format!("`{host}` is not a sentinel host:port")),
                None => format!("{host}:{SENTINEL_PORT}"),
            };
            redis::Client::open(format!("redis://{address}"))
                .map_err(|_| format!("`{host}` is not a sentinel host:port"))?;
            addresses.push(address);
        }
        if addresses.is_empty() {
            return Err("redis+sentinel:// needs at least one sentinel host:port".into());
        }
        // The data nodes' URLs differ only in host and port.
        redis::Client::open(format!("redis://{userinfo}127.0.0.1:6379/{db}"))
            .map_err(|_| "the user or password in the URL is not valid".to_owned())?;
        Ok(Sentinels {
            addresses: Mutex::new(addresses),
            primary_name: primary_name.to_owned(),
            userinfo: userinfo.to_owned(),
            db,
        })
    }

    /// A client for the node the sentinels name as primary, asking each
    /// within its share of `within`.
    pub async fn primary(&self, within: Duration) -> Result<redis::Client, RedisError> {
        let addresses = self
            .addresses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        // One share is left for connecting to the primary itself.
        let each = within / (addresses.len() as u32 + 1);
        let mut unknown_name = 0;
        for address in &addresses {
            match tokio::time::timeout(each, self.ask(address, each)).await {
                Ok(Ok(Some((host, port)))) => {
                    self.answered(address);
                    // Sentinels name IPv6 hosts without brackets.
                    let host = if host.contains(':') { format!("[{host}]") } else { host };
                    let node = format!("redis://{}{host}:{port}/{}", self.userinfo, self.db);
                    return redis::Client::open(node);
                }
                Ok(Ok(None)) => unknown_name += 1,
                Ok(Err(_)) | Err(_) => {}
            }
        }
        let listed = addresses.join(",");
        // Only when every sentinel said so: an outage is not a bad name.
        Err(if unknown_name == addresses.len() {
            RedisError::from((
                ErrorKind::MasterNameNotFoundBySentinel,
                "no sentinel knows the primary",
                format!("`{}` (asked {listed})", self.primary_name),
            ))
        } else {
            RedisError::from((
                ErrorKind::Client,
                "no sentinel answered",
                format!("{listed}, each within {each:?}"),
            ))
        })
    }

    async fn ask(&self, address: &str, within: Duration) -> Result<Option<(String, u16)>, RedisError> {
        let config = redis::AsyncConnectionConfig::new().set_connection_timeout(Some(within));
        let mut conn = redis::Client::open(format!("redis://{address}"))?
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(&self.primary_name)
            .query_async(&mut conn)
            .await
    }

    fn answered(&self, address: &str) {
        let mut addresses = self.addresses.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(at) = addresses.iter().position(|a| a == address) {
            let first = addresses.remove(at);
            addresses.insert(0, first);
        }
    }
}

/// Refuse a node that is not (or no longer) the primary.
pub(super) async fn require_primary(conn: &mut MultiplexedConnection) -> Result<(), RedisError> {
    let role: Value = redis::cmd("ROLE").query_async(conn).await?;
    let name = match &role {
        Value::Array(items) => match items.first() {
            Some(Value::BulkString(b)) => String::from_utf8_lossy(b).into_owned(),
            Some(Value::SimpleString(s)) => s.clone(),
            _ => String::new(),
        },
        _ => String::new(),
    };
    if name == "master" {
        Ok(())
    } else {
        Err(RedisError::from((
            ErrorKind::Client,
            "the node the sentinels named is not the primary (a failover is under way)",
            format!("its role is `{name}`"),
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts_without_a_port_get_sentinels_port() {
        let s = Sentinels::new("a:1,b,,[::1],[::1]:2", "m", "", 0).unwrap();
        let addresses = s.addresses.lock().unwrap().clone();
        assert_eq!(addresses, ["a:1", "b:26379", "[::1]:26379", "[::1]:2"]);
        for bad in [",", "h:", "h:abc", "h:99999"] {
            assert!(Sentinels::new(bad, "m", "", 0).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_sentinel_that_answered_is_asked_first() {
        let s = Sentinels::new("a:1,b:2,c:3", "m", "", 0).unwrap();
        s.answered("c:3");
        assert_eq!(*s.addresses.lock().unwrap(), ["c:3", "a:1", "b:2"]);
    }
}
