//! The contract's operations on MongoDB documents.

use super::*;

#[async_trait]
impl AtomicStore for MongoStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::server(BACKEND, ExpiryClock::Server, clock::TTL_RESOLUTION)
    }

    async fn incr(&self, key: &str) -> Result<i64> {
        let op = Operation::Incr;
        let full = self.key(op, key)?;
        let fast = |now: i64| incr_fast(&full, now);
        self.update_number(op, &full, fast, |v| rules::next_counter(BACKEND, v))
            .await
    }

    async fn acquire_lock(&self, key: &str, ttl: Duration) -> Result<Option<Lock>> {
        let op = Operation::AcquireLock;
        let full = self.key(op, key)?;
        rules::check_ttl(BACKEND, op, ttl)?;
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

    async fn release_lock(&self, key: &str, id: &LockId) -> Result<ReleaseOutcome> {
        Ok(ReleaseOutcome::from_ownership(
            self.compare_id(Operation::ReleaseLock, key, id, None)
                .await?,
        ))
    }

    async fn extend_lock(&self, key: &str, id: &LockId, ttl: Duration) -> Result<ExtendOutcome> {
        rules::check_ttl(BACKEND, Operation::ExtendLock, ttl)?;
        Ok(ExtendOutcome::from_ownership(
            self.compare_id(Operation::ExtendLock, key, id, Some(ttl))
                .await?,
        ))
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        let op = Operation::Get;
        let full = self.key(op, key)?;
        let state = self.read(op, &full).await?;
        let now = self.server_now(op).await?;
        Ok(state.and_then(|s| s.live_value(now)))
    }

    async fn set(&self, key: &str, value: &str) -> Result<()> {
        let op = Operation::Set;
        let full = self.key(op, key)?;
        rules::check_value(BACKEND, op, value)?;
        let update = Put::value(value, None).update();
        self.call(op, |c| {
            let (full, update) = (full.clone(), update.clone());
            async move { c.update_one(doc! {"_id": full}, update).upsert(true).await }
        })
        .await
        .map(|_| ())
    }

    async fn set_with_ttl(&self, key: &str, value: &str, ttl: Duration) -> Result<()> {
        let op = Operation::SetWithTtl;
        let full = self.key(op, key)?;
        rules::check_write(BACKEND, op, value, Some(ttl))?;
        let now = self.server_now(op).await?;
        let update = Put::value(value, Some(now + ttl_ms(ttl))).update();
        self.call(op, |c| {
            let (full, update) = (full.clone(), update.clone());
            async move { c.update_one(doc! {"_id": full}, update).upsert(true).await }
        })
        .await
        .map(|_| ())
    }

    async fn purge(&self, key: &str) -> Result<()> {
        let op = Operation::Purge;
        let full = self.key(op, key)?;
        self.call(op, |c| {
            let full = full.clone();
            async move { c.delete_one(doc! {"_id": full}).await }
        })
        .await
        .map(|_| ())
    }

    async fn delete(&self, key: &str) -> Result<bool> {
        let op = Operation::Delete;
        let full = self.key(op, key)?;
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

    async fn compare_and_set(
        &self,
        key: &str,
        expected: Option<&str>,
        new: &str,
        ttl: Option<Duration>,
    ) -> Result<bool> {
        let op = Operation::CompareAndSet;
        let full = self.key(op, key)?;
        rules::check_write(BACKEND, op, new, ttl)?;
        let now = self.server_now(op).await?;
        let put = Put::value(new, ttl.map(|t| now + ttl_ms(t)));
        match expected {
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

    async fn assign_nonce(&self, key: &str, pending: u64) -> Result<u64> {
        let op = Operation::AssignNonce;
        let full = self.key(op, key)?;
        let p = rules::check_pending(BACKEND, pending)?;
        let fast = |now: i64| nonce_fast(&full, p, now);
        let n = self
            .update_number(op, &full, fast, |v| {
                rules::next_nonce(BACKEND, v, pending).map(|n| n as i64)
            })
            .await?;
        Ok(n as u64)
    }

    async fn inspect(&self, key: &str) -> Result<KeyInfo> {
        let op = Operation::Inspect;
        let full = self.key(op, key)?;
        let Some(state) = self.read(op, &full).await? else {
            return Ok(KeyInfo::default());
        };
        let now = self.server_now(op).await?;
        let value = state.live_value(now);
        let ttl = match (&value, state.exp) {
            (Some(_), Some(e)) => Some(Duration::from_millis((e - now).max(0) as u64)),
            _ => None,
        };
        Ok(KeyInfo::new(value, ttl, state.f.map(|f| f as u64)))
    }

    async fn keys(&self, prefix: &str, limit: usize) -> Result<Vec<String>> {
        let op = Operation::Keys;
        let start = rules::stored_key_prefix(BACKEND, &self.prefix, prefix)?;
        // MongoDB reads a limit of 0 as "no limit".
        if limit == 0 {
            return Ok(Vec::new());
        }
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
            .map(|id| rules::unprefixed(&self.prefix, &id).to_owned())
            .take(limit as usize)
            .collect())
    }
}

impl MongoStore {
    /// The `findOneAndUpdate` that `incr(key)` sends first. For the CLI's
    /// baseline; not part of the API.
    #[doc(hidden)]
    pub async fn incr_request(&self, key: &str) -> Result<FindOneAndUpdate<'_, Document>> {
        let op = Operation::Incr;
        let full = self.key(op, key)?;
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
        let full = self.key(op, key)?;
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
        let full = self.key(op, key)?;
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
        let full = self.key(op, key)?;
        Ok(release(&full, id).request(self.collection(op).await?))
    }
}
