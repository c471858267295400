//! The contract's operations on MongoDB documents.

use super::*;
use crate::backends::checked::{self, checked_store, IfOwner, Swap, Write};

#[async_trait]
impl checked::Backend for MongoStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::server(BACKEND, ExpiryClock::Server, clock::TTL_RESOLUTION)
    }

    async fn incr(&self, full: String) -> Result<i64> {
        let op = Operation::Incr;
        let fast = |now: i64| incr_fast(&full, now);
        self.update_number(op, &full, fast, |v| rules::next_counter(BACKEND, v))
            .await
    }

    async fn acquire_lock(&self, full: String, ttl: Duration) -> Result<Option<Lock>> {
        let op = Operation::AcquireLock;
        let id = LockId::generate();
        let now = self.server_time(op).await?;
        if let Some(s) = self.modify(op, acquire_fast(&full, &id, ttl, now)).await? {
            return Ok(Some(Lock::new(id, s.f.unwrap_or(0) as u64)));
        }
        let taken = self
            .read_decide_write(op, &full, |state, now| {
                let held = state.is_some_and(|s| {
                    s.value().is_some() && s.exp.is_none_or(|e| !now.may_take_over(e))
                });
                Ok(if held {
                    Step::Done(None)
                } else {
                    Step::Write(
                        lock_put(&id, ttl, now),
                        Box::new(|f| Some(f.unwrap_or(0) as u64)),
                    )
                })
            })
            .await?;
        Ok(taken.map(|token| Lock::new(id.clone(), token)))
    }

    /// Compare the lock id and act: remove (release) or re-deadline
    /// (extend). `Some(true)` done, `Some(false)` held by another, `None`
    /// not held.
    async fn if_owner(&self, full: String, id: &LockId, then: IfOwner) -> Result<Option<bool>> {
        let (op, ttl) = (then.op(), then.ttl());
        let now = self.server_now(op).await?;
        let done = match ttl {
            None => self
                .modify(op, release(&full, id))
                .await?
                .map(|old| old.live_value(now).is_some()),
            Some(t) => self
                .modify(
                    op,
                    Modify::after(
                        doc! {"_id": &full, "v": id.as_str(), "exp": {"$gt": now}},
                        doc! {"$set": {"exp": now + ttl_ms(t)}},
                    ),
                )
                .await?
                .map(|_| true),
        };
        match done {
            Some(true) => Ok(Some(true)),
            // Our own expired lock: removed, but it was not held.
            Some(false) => Ok(None),
            None => {
                let state = self.read(op, &full).await?;
                let now = self.server_now(op).await?;
                Ok(state
                    .and_then(|s| s.live_value(now))
                    .filter(|v| v != id.as_str())
                    .map(|_| false))
            }
        }
    }

    async fn get(&self, full: String) -> Result<Option<String>> {
        let op = Operation::Get;
        let state = self.read(op, &full).await?;
        let now = self.server_now(op).await?;
        Ok(state.and_then(|s| s.live_value(now)))
    }

    async fn write(&self, op: Operation, full: String, write: Write<'_>) -> Result<()> {
        let exp = match write.ttl {
            Some(ttl) => Some(self.server_now(op).await? + ttl_ms(ttl)),
            None => None,
        };
        let update = Put::value(write.value, exp).update();
        self.call(op, |c| {
            let (full, update) = (full.clone(), update.clone());
            async move { c.update_one(doc! {"_id": full}, update).upsert(true).await }
        })
        .await
        .map(|_| ())
    }

    async fn purge(&self, full: String) -> Result<()> {
        let op = Operation::Purge;
        self.call(op, |c| {
            let full = full.clone();
            async move { c.delete_one(doc! {"_id": full}).await }
        })
        .await
        .map(|_| ())
    }

    async fn delete(&self, full: String) -> Result<bool> {
        let op = Operation::Delete;
        // Read before the write, so a failure to read it applies nothing.
        let now = self.server_now(op).await?;
        // Documents with a fencing counter stay (emptied) so tokens keep rising.
        let removed = self
            .call(op, |c| {
                let full = full.clone();
                async move {
                    c.find_one_and_delete(doc! {"_id": full, "f": {"$exists": false}})
                        .await
                }
            })
            .await?;
        let old = match removed {
            Some(d) => Some(State::from_doc(op, &d)?),
            None => {
                self.modify(
                    op,
                    Modify::before(
                        doc! {"_id": &full},
                        doc! {"$unset": {"v": "", "n": "", "exp": ""}},
                    ),
                )
                .await?
            }
        };
        Ok(old.and_then(|s| s.live_value(now)).is_some())
    }

    async fn compare_and_set(&self, full: String, swap: Swap<'_>) -> Result<bool> {
        let op = Operation::CompareAndSet;
        let now = self.server_now(op).await?;
        let put = Put::value(swap.new.value, swap.new.ttl.map(|t| now + ttl_ms(t)));
        match swap.expected {
            Some(x) => {
                let mut matches = vec![Bson::Document(doc! {"v": x})];
                if let Some(n) = rules::parse_counter(x) {
                    matches.push(Bson::Document(doc! {"n": n}));
                }
                let filter = all([doc! {"_id": &full}, live_filter(now), doc! {"$or": matches}]);
                Ok(self
                    .modify(op, Modify::after(filter, put.update()))
                    .await?
                    .is_some())
            }
            None => {
                let free = all([doc! {"_id": &full}, free_filter(now)]);
                if self
                    .modify(op, Modify::after(free, put.update()))
                    .await?
                    .is_some()
                {
                    return Ok(true);
                }
                // Missing: create it. A duplicate key means a live value
                // appeared (or was there): the expectation failed.
                self.insert(op, put.insert(&full)).await
            }
        }
    }

    async fn assign_nonce(&self, full: String, pending: u64) -> Result<u64> {
        let op = Operation::AssignNonce;
        let p = rules::check_pending(BACKEND, pending)?;
        let fast = |now: i64| nonce_fast(&full, p, now);
        let n = self
            .update_number(op, &full, fast, |v| {
                rules::next_nonce(BACKEND, v, pending).map(|n| n as i64)
            })
            .await?;
        Ok(n as u64)
    }

    async fn inspect(&self, full: String) -> Result<KeyInfo> {
        let op = Operation::Inspect;
        let Some(state) = self.read(op, &full).await? else {
            return Ok(KeyInfo::default());
        };
        let now = self.server_now(op).await?;
        let (value, token) = (state.live_value(now), state.f.map(|f| f as u64));
        Ok(KeyInfo::at_deadline(value, state.exp, now, token))
    }

    async fn keys(&self, start: String, limit: usize) -> Result<Vec<String>> {
        let op = Operation::Keys;
        let now = self.server_now(op).await?;
        let filter = all([
            doc! {"_id": {"$regex": format!("^{}", regex_escape(&start))}},
            live_filter(now),
            has_value(),
        ]);
        let limit = limit.min(i64::MAX as usize) as i64;
        let ids = self
            .call(op, |c| {
                let filter = filter.clone();
                async move {
                    let mut cursor = c
                        .find(filter)
                        .projection(doc! {"_id": 1})
                        .limit(limit)
                        .await?;
                    let mut ids = Vec::new();
                    while cursor.advance().await? {
                        if let Ok(id) = cursor.current().get_str("_id") {
                            ids.push(id.to_owned());
                        }
                    }
                    Ok(ids)
                }
            })
            .await?;
        Ok(ids
            .into_iter()
            .filter(|id| id.starts_with(&start))
            .collect())
    }
}

checked_store!(MongoStore, BACKEND);

impl MongoStore {
    /// The `findOneAndUpdate` that `incr(key)` sends first. For the CLI's
    /// baseline; not part of the API.
    #[doc(hidden)]
    pub async fn incr_request(&self, key: &str) -> Result<FindOneAndUpdate<'_, Document>> {
        let op = Operation::Incr;
        let full = checked::stored(self, op, key)?;
        let now = self.server_now(op).await?;
        Ok(incr_fast(&full, now).request(self.collection(op).await?))
    }

    /// The `findOneAndUpdate` that `assign_nonce(key, pending)` sends
    /// first. For the CLI's baseline; not part of the API.
    #[doc(hidden)]
    pub async fn assign_nonce_request(
        &self,
        key: &str,
        pending: u64,
    ) -> Result<FindOneAndUpdate<'_, Document>> {
        let op = Operation::AssignNonce;
        let full = checked::stored(self, op, key)?;
        let p = rules::check_pending(BACKEND, pending)?;
        let now = self.server_now(op).await?;
        Ok(nonce_fast(&full, p, now).request(self.collection(op).await?))
    }

    /// The `findOneAndUpdate` that `acquire_lock(key, ttl)` sends first,
    /// for the lock id `id`. For the CLI's baseline; not part of the API.
    #[doc(hidden)]
    pub async fn acquire_lock_request(
        &self,
        key: &str,
        id: &LockId,
        ttl: Duration,
    ) -> Result<FindOneAndUpdate<'_, Document>> {
        let op = Operation::AcquireLock;
        let full = checked::stored(self, op, key)?;
        rules::check_ttl(BACKEND, op, ttl)?;
        let now = self.server_time(op).await?;
        Ok(acquire_fast(&full, id, ttl, now).request(self.collection(op).await?))
    }

    /// The `findOneAndUpdate` that `release_lock(key, id)` sends. For the
    /// CLI's baseline; not part of the API.
    #[doc(hidden)]
    pub async fn release_lock_request(
        &self,
        key: &str,
        id: &LockId,
    ) -> Result<FindOneAndUpdate<'_, Document>> {
        let op = Operation::ReleaseLock;
        let full = checked::stored(self, op, key)?;
        Ok(release(&full, id).request(self.collection(op).await?))
    }
}
