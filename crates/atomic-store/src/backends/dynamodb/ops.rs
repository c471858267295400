//! The contract's operations on DynamoDB items.

use super::*;
use crate::backends::checked::{self, checked_store, IfOwner, Swap, Write};

#[async_trait]
impl checked::Backend for DynamoStore {
    fn capabilities(&self) -> Capabilities {
        let resolution = Duration::from_millis(self.skew_ms as u64).max(Duration::from_millis(50));
        Capabilities::server(BACKEND, ExpiryClock::Client, resolution)
    }

    async fn incr(&self, full: String) -> Result<i64> {
        let op = Operation::Incr;
        let fast = || incr_update(now_ms());
        self.update_number(op, &full, fast, |v| rules::next_counter(BACKEND, v))
            .await
    }

    async fn acquire_lock(&self, full: String, ttl: Duration) -> Result<Option<Lock>> {
        let op = Operation::AcquireLock;
        let id = LockId::generate();
        let u = acquire_update(&id, ttl, now_ms(), self.skew_ms);
        Ok(self
            .update(op, &full, u)
            .await?
            .map(|item| Lock::new(id, number_attr(&item, "f").unwrap_or(0) as u64)))
    }

    async fn if_owner(&self, full: String, id: &LockId, then: IfOwner) -> Result<Option<bool>> {
        let (op, ttl) = (then.op(), then.ttl());
        let now = now_ms();
        let done = match ttl {
            // Our own expired lock is removed, but it was not held.
            None => self
                .update(op, &full, release_update(id, now, self.skew_ms))
                .await?
                .map(|old| State::from_item(&old).live_value(now).map(|_| true)),
            Some(ttl) => {
                let exp = now + rules::ttl_millis(ttl) as i64;
                let u = Update::new("SET #e = :exp, #t = :ttl")
                    .when("#v = :id AND #e > :now")
                    .value(":id", s(id.as_str()))
                    .value(":exp", n(exp))
                    .value(":ttl", n(ttl_attribute(exp, self.skew_ms)))
                    .value(":now", n(now));
                self.update(op, &full, u).await?.map(|_| Some(true))
            }
        };
        match done {
            Some(ours) => Ok(ours),
            None => self.ownership_after_miss(op, &full, id).await,
        }
    }

    async fn get(&self, full: String) -> Result<Option<String>> {
        let op = Operation::Get;
        Ok(self.read(op, &full).await?.live_value(now_ms()))
    }

    async fn write(&self, op: Operation, full: String, write: Write<'_>) -> Result<()> {
        let exp = write.ttl.map(|t| now_ms() + rules::ttl_millis(t) as i64);
        self.update(op, &full, Self::put(s(write.value), exp, self.skew_ms))
            .await
            .map(|_| ())
    }

    async fn delete(&self, full: String) -> Result<bool> {
        let op = Operation::Delete;
        let now = now_ms();
        // The item stays (emptied, with a TTL) so its fencing counter does.
        let u = Update::new("REMOVE #v, #n, #e SET #t = :ttl")
            .when("attribute_exists(#k)")
            .value(":ttl", n(ttl_attribute(now, self.skew_ms)))
            .returning(ReturnValue::AllOld);
        Ok(self
            .update(op, &full, u)
            .await?
            .is_some_and(|old| State::from_item(&old).live_value(now).is_some()))
    }

    async fn purge(&self, full: String) -> Result<()> {
        self.delete_item(Operation::Purge, &full).await
    }

    async fn compare_and_set(&self, full: String, swap: Swap<'_>) -> Result<bool> {
        let op = Operation::CompareAndSet;
        let now = now_ms();
        let exp = swap.new.ttl.map(|t| now + rules::ttl_millis(t) as i64);
        let u = Self::put(s(swap.new.value), exp, self.skew_ms).value(":now", n(now));
        let u = match swap.expected {
            Some(x) => {
                let u = u.value(":x", s(x));
                match rules::parse_counter(x) {
                    Some(xn) => u
                        .when(format!("(#v = :x OR #n = :xn) AND {LIVE}"))
                        .value(":xn", n(xn)),
                    None => u.when(format!("#v = :x AND {LIVE}")),
                }
            }
            None => u.when(format!("{EMPTY} OR #e <= :now")),
        };
        Ok(self.update(op, &full, u).await?.is_some())
    }

    async fn assign_nonce(&self, full: String, pending: u64) -> Result<u64> {
        let op = Operation::AssignNonce;
        let p = rules::check_pending(BACKEND, pending)?;
        let fast = || nonce_update(p, now_ms());
        let value = self
            .update_number(op, &full, fast, |v| {
                rules::next_nonce(BACKEND, v, pending).map(|n| n as i64)
            })
            .await?;
        Ok(value as u64)
    }

    async fn inspect(&self, full: String) -> Result<KeyInfo> {
        let op = Operation::Inspect;
        let state = self.read(op, &full).await?;
        let now = now_ms();
        let (value, token) = (state.live_value(now), state.f.map(|f| f as u64));
        Ok(KeyInfo::at_deadline(value, state.exp, now, token))
    }

    async fn keys(&self, start: String, limit: usize) -> Result<Vec<String>> {
        let op = Operation::Keys;
        let client = self.client(op).await?;
        let now = now_ms();
        let mut found = Vec::new();
        let mut from: Option<HashMap<String, AttributeValue>> = None;
        while found.len() < limit {
            let page = with_retries(op, || async {
                let mut values = HashMap::from([(":now".to_owned(), n(now))]);
                if !start.is_empty() {
                    values.insert(":start".to_owned(), s(&start));
                }
                let filter = if start.is_empty() {
                    format!("(attribute_exists(#v) OR attribute_exists(#n)) AND {LIVE}")
                } else {
                    format!("begins_with(#k, :start) AND (attribute_exists(#v) OR attribute_exists(#n)) AND {LIVE}")
                };
                attempt(|mark| client
                    .scan()
                    .table_name(&self.table)
                    .consistent_read(true)
                    .filter_expression(filter)
                    .projection_expression("#k")
                    .expression_attribute_names("#k", KEY)
                    .expression_attribute_names("#v", "v")
                    .expression_attribute_names("#n", "n")
                    .expression_attribute_names("#e", "exp")
                    .set_expression_attribute_values(Some(values))
                    .set_exclusive_start_key(from.clone())
                    .customize()
                    .interceptor(mark)
                    .send())
                    .await
            })
            .await
            .map_err(|f| into_error(f, op, self.timeout))?;
            for item in page.items() {
                if let Some(AttributeValue::S(k)) = item.get(KEY) {
                    found.push(k.clone());
                }
            }
            match page.last_evaluated_key {
                Some(next) if !next.is_empty() => from = Some(next),
                _ => break,
            }
        }
        Ok(found)
    }
}

checked_store!(DynamoStore, BACKEND);

// The first request of incr, assign_nonce and acquire_lock, and release's
// one request: built here for the store and for the CLI's baseline alike.

/// Add one to a live counter below the top; a missing item starts at one.
fn incr_update(now: i64) -> Update {
    Update::new("SET #n = if_not_exists(#n, :zero) + :one")
        .when(format!(
            "attribute_not_exists(#k) OR (#n < :max AND {LIVE})"
        ))
        .value(":zero", n(0))
        .value(":one", n(1))
        .value(":max", n(i64::MAX))
        .value(":now", n(now))
}

/// A missing item starts at `p` (the pending count); a live stored nonce in
/// [p - 1, p + WINDOW - 1] is incremented (rules::next_nonce).
fn nonce_update(p: i64, now: i64) -> Update {
    Update::new("SET #n = if_not_exists(#n, :before) + :one")
        .when(format!(
            "attribute_not_exists(#k) OR (#n BETWEEN :lo AND :hi AND {LIVE})"
        ))
        .value(":before", n(p - 1))
        .value(":one", n(1))
        .value(":lo", n(p - 1))
        // Below i64::MAX, so adding one stays an i64; a nonce at
        // the top takes the slow path, which reports Overflow.
        .value(
            ":hi",
            n(p.saturating_add(rules::NONCE_WINDOW - 1).min(i64::MAX - 1)),
        )
        .value(":now", n(now))
}

/// Take the lock for `id` when the item is empty or its deadline passed
/// the skew margin ago; the fencing counter rises.
fn acquire_update(id: &LockId, ttl: Duration, now: i64, skew_ms: i64) -> Update {
    let exp = now + rules::ttl_millis(ttl) as i64;
    Update::new(
        "SET #v = :id, #e = :exp, #t = :ttl, #f = if_not_exists(#f, :floor) + :one REMOVE #n",
    )
    .when(format!("{EMPTY} OR #e <= :takeover"))
    .value(":id", s(id.as_str()))
    .value(":exp", n(exp))
    .value(":ttl", n(ttl_attribute(exp, skew_ms)))
    .value(":floor", n(now.saturating_mul(1000)))
    .value(":one", n(1))
    .value(":takeover", n(now - skew_ms))
}

/// Remove the lock if `id` holds it; the old item comes back.
fn release_update(id: &LockId, now: i64, skew_ms: i64) -> Update {
    Update::new("REMOVE #v, #e SET #t = :ttl")
        .when("#v = :id")
        .value(":id", s(id.as_str()))
        .value(":ttl", n(ttl_attribute(now, skew_ms)))
        .returning(ReturnValue::AllOld)
}

impl DynamoStore {
    /// The `UpdateItem` that `incr(key)` sends first. For the CLI's
    /// baseline; not part of the API.
    #[doc(hidden)]
    pub async fn incr_request(&self, key: &str) -> Result<UpdateItemFluentBuilder> {
        let op = Operation::Incr;
        let full = checked::stored(self, op, key)?;
        self.update_request(op, &full, &incr_update(now_ms()))
            .await
    }

    /// The `UpdateItem` that `assign_nonce(key, pending)` sends first. For
    /// the CLI's baseline; not part of the API.
    #[doc(hidden)]
    pub async fn assign_nonce_request(
        &self,
        key: &str,
        pending: u64,
    ) -> Result<UpdateItemFluentBuilder> {
        let op = Operation::AssignNonce;
        let full = checked::stored(self, op, key)?;
        let p = rules::check_pending(BACKEND, pending)?;
        self.update_request(op, &full, &nonce_update(p, now_ms()))
            .await
    }

    /// The `UpdateItem` that `acquire_lock(key, ttl)` sends first, for the
    /// lock id `id`. For the CLI's baseline; not part of the API.
    #[doc(hidden)]
    pub async fn acquire_lock_request(
        &self,
        key: &str,
        id: &LockId,
        ttl: Duration,
    ) -> Result<UpdateItemFluentBuilder> {
        let op = Operation::AcquireLock;
        let full = checked::stored(self, op, key)?;
        rules::check_ttl(BACKEND, op, ttl)?;
        let u = acquire_update(id, ttl, now_ms(), self.skew_ms);
        self.update_request(op, &full, &u).await
    }

    /// The `UpdateItem` that `release_lock(key, id)` sends. For the CLI's
    /// baseline; not part of the API.
    #[doc(hidden)]
    pub async fn release_lock_request(
        &self,
        key: &str,
        id: &LockId,
    ) -> Result<UpdateItemFluentBuilder> {
        let op = Operation::ReleaseLock;
        let full = checked::stored(self, op, key)?;
        let u = release_update(id, now_ms(), self.skew_ms);
        self.update_request(op, &full, &u).await
    }
}
