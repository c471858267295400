//! The item model: attribute values, update expressions, and an item's
//! state read back.

use super::*;

pub(super) fn s(text: &str) -> AttributeValue {
    AttributeValue::S(text.to_owned())
}

pub(super) fn n(number: i64) -> AttributeValue {
    AttributeValue::N(number.to_string())
}

/// Does `expr` use the placeholder `token` (`#v`, `:now`…) as a whole word?
pub(super) fn uses(expr: &str, token: &str) -> bool {
    expr.match_indices(token).any(|(at, _)| {
        !expr[at + token.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

/// One `UpdateItem`: expressions, and the values they may use.
pub(super) struct Update {
    pub(super) update: String,
    pub(super) condition: Option<String>,
    pub(super) values: Vec<(&'static str, AttributeValue)>,
    pub(super) returns: ReturnValue,
}

impl Update {
    pub(super) fn new(update: impl Into<String>) -> Self {
        Update {
            update: update.into(),
            condition: None,
            values: Vec::new(),
            returns: ReturnValue::UpdatedNew,
        }
    }

    pub(super) fn when(mut self, condition: impl Into<String>) -> Self {
        self.condition = Some(condition.into());
        self
    }

    pub(super) fn value(mut self, name: &'static str, value: AttributeValue) -> Self {
        self.values.push((name, value));
        self
    }

    pub(super) fn returning(mut self, returns: ReturnValue) -> Self {
        self.returns = returns;
        self
    }
}

/// An item as read.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct State {
    pub(super) v: Option<String>,
    pub(super) n: Option<String>,
    pub(super) exp: Option<i64>,
    pub(super) f: Option<i64>,
}

impl State {
    pub(super) fn from_item(item: &HashMap<String, AttributeValue>) -> State {
        State {
            v: match item.get("v") {
                Some(AttributeValue::S(text)) => Some(text.clone()),
                _ => None,
            },
            n: match item.get("n") {
                Some(AttributeValue::N(text)) => Some(text.clone()),
                _ => None,
            },
            exp: number_attr(item, "exp"),
            f: number_attr(item, "f"),
        }
    }

    pub(super) fn live_value(&self, now: i64) -> Option<String> {
        if self.exp.is_some_and(|e| e <= now) {
            None
        } else {
            self.v.clone().or_else(|| self.n.clone())
        }
    }

    /// A condition that holds only while the item is still in this state.
    pub(super) fn pin(&self, values: &mut Vec<(&'static str, AttributeValue)>) -> String {
        let mut parts = Vec::new();
        match &self.v {
            Some(v) => {
                parts.push("#v = :old_v");
                values.push((":old_v", s(v)));
            }
            None => parts.push("attribute_not_exists(#v)"),
        }
        match &self.n {
            Some(text) => {
                parts.push("#n = :old_n");
                values.push((":old_n", AttributeValue::N(text.clone())));
            }
            None => parts.push("attribute_not_exists(#n)"),
        }
        match self.exp {
            Some(e) => {
                parts.push("#e = :old_e");
                values.push((":old_e", n(e)));
            }
            None => parts.push("attribute_not_exists(#e)"),
        }
        parts.join(" AND ")
    }
}

pub(super) fn number_attr(item: &HashMap<String, AttributeValue>, name: &str) -> Option<i64> {
    match item.get(name) {
        Some(AttributeValue::N(text)) => text.parse().ok(),
        _ => None,
    }
}

pub(super) const LIVE: &str = "(attribute_not_exists(#e) OR #e > :now)";
pub(super) const EMPTY: &str = "(attribute_not_exists(#v) AND attribute_not_exists(#n))";
