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
