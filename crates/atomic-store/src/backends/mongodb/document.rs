//! The document model: a key's document as read, the write that replaces
//! it, and the filters that match live or free documents.

use super::*;

/// A key's document as read.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct State {
    pub(super) v: Option<String>,
    pub(super) n: Option<i64>,
    pub(super) exp: Option<i64>,
    pub(super) f: Option<i64>,
}

impl State {
    pub(super) fn from_doc(op: Operation, d: &Document) -> Result<State> {
        let int = |name: &str| -> Result<Option<i64>> {
            match d.get(name) {
                None | Some(Bson::Null) => Ok(None),
                Some(Bson::Int64(n)) => Ok(Some(*n)),
                Some(Bson::Int32(n)) => Ok(Some(i64::from(*n))),
                Some(other) => Err(Error::new(
                    ErrorKind::Backend,
                    BACKEND,
                    op,
                    format!("field `{name}` holds {other:?}, not an integer: the document was not written by atomic-store"),
                )),
            }
        };
        let v = match d.get("v") {
            None | Some(Bson::Null) => None,
            Some(Bson::String(s)) => Some(s.clone()),
            Some(other) => {
                return Err(Error::new(
                    ErrorKind::Backend,
                    BACKEND,
                    op,
                    format!("field `v` holds {other:?}, not a string: the document was not written by atomic-store"),
                ))
            }
        };
        Ok(State {
            v,
            n: int("n")?,
            exp: int("exp")?,
            f: int("f")?,
        })
    }

    pub(super) fn value(&self) -> Option<String> {
        self.v.clone().or_else(|| self.n.map(|n| n.to_string()))
    }

    pub(super) fn live_value(&self, now: i64) -> Option<String> {
        if self.exp.is_some_and(|e| e <= now) {
            None
        } else {
            self.value()
        }
    }

    /// The filter that matches exactly this state (fencing counter aside).
    pub(super) fn pin(&self, id: &str) -> Document {
        fn field(d: &mut Document, name: &str, value: Option<Bson>) {
            d.insert(
                name,
                value.unwrap_or_else(|| Bson::Document(doc! {"$exists": false})),
            );
        }
        let mut d = doc! {"_id": id};
        field(&mut d, "v", self.v.clone().map(Bson::String));
        field(&mut d, "n", self.n.map(Bson::Int64));
        field(&mut d, "exp", self.exp.map(Bson::Int64));
        field(&mut d, "f", self.f.map(Bson::Int64));
        d
    }
}

/// The visible state a write leaves.
pub(super) struct Put {
    pub(super) v: Option<String>,
    pub(super) n: Option<i64>,
    pub(super) exp: Option<i64>,
    pub(super) bump_fence: bool,
}

impl Put {
    pub(super) fn value(v: &str, exp: Option<i64>) -> Put {
        Put {
            v: Some(v.to_owned()),
            n: None,
            exp,
            bump_fence: false,
        }
    }

    pub(super) fn counter(n: i64, exp: Option<i64>) -> Put {
        Put {
            v: None,
            n: Some(n),
            exp,
            bump_fence: false,
        }
    }

    /// The TTL index's date: only documents that never held a fence or a
    /// value without TTL get a real one, and it only ever moves later.
    pub(super) fn gc(&self) -> DateTime {
        match self.exp {
            Some(e) if !self.bump_fence => DateTime::from_millis(e.saturating_add(GC_GRACE_MS)),
            _ => DateTime::from_millis(NEVER_MS),
        }
    }

    pub(super) fn update(&self) -> Document {
        let mut set = Document::new();
        let mut unset = Document::new();
        for (name, value) in [
            ("v", self.v.clone().map(Bson::String)),
            ("n", self.n.map(Bson::Int64)),
            ("exp", self.exp.map(Bson::Int64)),
        ] {
            match value {
                Some(b) => {
                    set.insert(name, b);
                }
                None => {
                    unset.insert(name, "");
                }
            }
        }
        let mut update = doc! {"$max": {"gc": self.gc()}};
        if !set.is_empty() {
            update.insert("$set", set);
        }
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        if self.bump_fence {
            update.insert("$inc", doc! {"f": 1i64});
        }
        update
    }

    pub(super) fn insert(&self, id: &str) -> Document {
        let mut d = doc! {"_id": id};
        if let Some(v) = &self.v {
            d.insert("v", v.as_str());
        }
        if let Some(n) = self.n {
            d.insert("n", n);
        }
        if let Some(e) = self.exp {
            d.insert("exp", e);
        }
        if self.bump_fence {
            d.insert("f", 1i64);
        }
        d.insert("gc", self.gc());
        d
    }
}

/// One `findOneAndUpdate`: the filter, the change, and whether the document
/// after the change (else before it) comes back.
#[derive(Clone)]
pub(super) struct Modify {
    filter: Document,
    update: Document,
    after: bool,
}

impl Modify {
    pub(super) fn after(filter: Document, update: Document) -> Modify {
        Modify {
            filter,
            update,
            after: true,
        }
    }

    pub(super) fn before(filter: Document, update: Document) -> Modify {
        Modify {
            filter,
            update,
            after: false,
        }
    }

    /// The driver's request, ready to send.
    pub(super) fn request(self, c: &Collection<Document>) -> FindOneAndUpdate<'_, Document> {
        let returned = if self.after {
            ReturnDocument::After
        } else {
            ReturnDocument::Before
        };
        c.find_one_and_update(self.filter, self.update)
            .return_document(returned)
    }
}

// The first request of incr, assign_nonce and acquire_lock, and release's
// one request: built here for the store and for the CLI's baseline alike.

/// One more on a live counter below the top.
pub(super) fn incr_fast(full: &str, now: i64) -> Modify {
    let filter = all([
        doc! {"_id": full},
        doc! {"v": {"$exists": false}},
        doc! {"n": {"$lt": i64::MAX}},
        live_filter(now),
    ]);
    Modify::after(filter, doc! {"$inc": {"n": 1i64}})
}

/// One more on a live stored nonce in [p - 1, p + WINDOW - 1], `p` the
/// pending count; see rules::next_nonce.
pub(super) fn nonce_fast(full: &str, p: i64, now: i64) -> Modify {
    let filter = all([
        doc! {"_id": full},
        doc! {"v": {"$exists": false}},
        // Bounded below i64::MAX: one more than that is Overflow,
        // decided by the rule, not by the server's `$inc`.
        doc! {"n": {"$gte": p - 1, "$lte": p.saturating_add(rules::NONCE_WINDOW - 1).min(i64::MAX - 1)}},
        live_filter(now),
    ]);
    Modify::after(filter, doc! {"$inc": {"n": 1i64}})
}

/// The lock held by `id` until `ttl` from `now`; the fencing counter rises.
pub(super) fn lock_put(id: &LockId, ttl: Duration, now: ServerTime) -> Put {
    Put {
        v: Some(id.to_string()),
        n: None,
        exp: Some(now.ms + ttl_ms(ttl)),
        bump_fence: true,
    }
}

/// Take a free lock. An expired lock waits out the takeover margin (this
/// estimate's error included) before another owner may take it.
pub(super) fn acquire_fast(full: &str, id: &LockId, ttl: Duration, now: ServerTime) -> Modify {
    let free = all([
        doc! {"_id": full},
        free_filter(now.ms - now.takeover_margin_ms()),
    ]);
    Modify::after(free, lock_put(id, ttl, now).update())
}

/// Remove the lock if `id` holds it; the document before comes back.
pub(super) fn release(full: &str, id: &LockId) -> Modify {
    Modify::before(
        doc! {"_id": full, "v": id.as_str()},
        doc! {"$unset": {"v": "", "exp": ""}},
    )
}

/// What a read-decide-write round decided.
pub(super) enum Step<T> {
    /// Nothing to write; the result.
    Done(T),
    /// Write this state; the result once written (given the new fence).
    Write(Put, Box<dyn FnOnce(Option<i64>) -> T + Send>),
}

/// Every condition, under one `$and`. (The MongoDB-wire test server
/// mis-groups a top-level `$or` beside other fields in `findAndModify`;
/// `$and` of parts means the same to every server.)
pub(super) fn all<const N: usize>(parts: [Document; N]) -> Document {
    doc! {"$and": parts.into_iter().map(Bson::Document).collect::<Vec<_>>()}
}

/// No value, or a value whose deadline is at or before `at`.
pub(super) fn free_filter(at: i64) -> Document {
    doc! {"$or": [{"v": {"$exists": false}, "n": {"$exists": false}}, {"exp": {"$lte": at}}]}
}

pub(super) fn live_filter(now: i64) -> Document {
    doc! {"$or": [{"exp": {"$exists": false}}, {"exp": {"$gt": now}}]}
}

pub(super) fn has_value() -> Document {
    doc! {"$or": [{"v": {"$exists": true}}, {"n": {"$exists": true}}]}
}

pub(super) fn regex_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if "\\^$.|?*+()[]{}-/#&~".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

pub(super) fn ttl_ms(ttl: Duration) -> i64 {
    rules::ttl_millis(ttl) as i64
}
