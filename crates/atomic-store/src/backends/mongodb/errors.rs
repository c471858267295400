//! MongoDB driver errors mapped onto the contract: which were never sent,
//! which lost their reply, which are answers.

use super::*;

pub(super) type MongoFailure = Failure<mongodb::error::Error>;

/// Server codes for "this node cannot take the request now": not a
/// writable primary, recovering, shutting down (the driver's SDAM lists).
pub(super) const NOT_PRIMARY_CODES: [i32; 8] = [10107, 13435, 10058, 11600, 11602, 13436, 189, 91];
/// Server codes for "a node behind this one did not answer in time"
/// (mongos to a shard: host unreachable or not found, network timeout,
/// socket error, majority read not ready, time limit exceeded).
pub(super) const UNREACHED_CODES: [i32; 6] = [6, 7, 89, 9001, 134, 262];
/// Label the server puts on an error when no attempt wrote anything.
pub(super) const NO_WRITES_PERFORMED: &str = "NoWritesPerformed";
pub(super) const RETRYABLE_WRITE_ERROR: &str = "RetryableWriteError";

/// Which driver errors may have been applied. The driver retries a write
/// once by itself and then returns the retry's error, unless the retry
/// wrote nothing and the first attempt may have: so a refusal such as
/// `NotWritablePrimary` can follow a first attempt that was applied, and
/// only a selection failure (no attempt made) or `NoWritesPerformed`
/// proves that nothing was. A write-concern error means the primary
/// applied the write and its replication was not confirmed.
pub(super) fn classify(e: mongodb::error::Error) -> MongoFailure {
    use mongodb::error::{ErrorKind as K, WriteFailure};
    match e.kind.as_ref() {
        // Returned only when no attempt was made: after a failed attempt
        // the driver returns that attempt's error instead.
        K::ServerSelection { .. } | K::DnsResolve { .. } | K::Shutdown => Failure::NotSent(e),
        _ if e.contains_label(NO_WRITES_PERFORMED) => Failure::NotSent(e),
        K::Write(WriteFailure::WriteConcernError(_)) => Failure::Lost(Some(e)),
        K::Command(c)
            if NOT_PRIMARY_CODES.contains(&c.code) || UNREACHED_CODES.contains(&c.code) =>
        {
            Failure::Lost(Some(e))
        }
        K::Command(_) if e.contains_label(RETRYABLE_WRITE_ERROR) => Failure::Lost(Some(e)),
        K::Io(_) | K::ConnectionPoolCleared { .. } | K::InvalidResponse { .. } => {
            Failure::Lost(Some(e))
        }
        _ => Failure::Reply(e),
    }
}

pub(super) fn is_write_concern_error(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind as K, WriteFailure};
    matches!(
        e.kind.as_ref(),
        K::Write(WriteFailure::WriteConcernError(_))
    )
}

/// A driver error that prints as one short line: the driver's `Display`
/// adds the whole topology, labels and empty fields.
#[derive(Debug)]
pub(super) struct MongoError(pub mongodb::error::Error);

impl std::fmt::Display for MongoError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use mongodb::error::{ErrorKind as K, WriteFailure};
        match self.0.kind.as_ref() {
            // "…: No available servers. Topology: { … Error: Kind: I/O
            // error: Connection refused …, labels: … }"
            K::ServerSelection { message, .. } => {
                f.write_str(message.split(" Topology:").next().unwrap_or(message))?;
                if let Some(rest) = message.split("Error: Kind: ").nth(1) {
                    let cause = rest.split(", labels:").next().unwrap_or(rest);
                    write!(f, " (the last server's error: {cause})")?;
                }
                Ok(())
            }
            K::Command(c) => write!(f, "{} ({}): {}", c.code_name, c.code, c.message),
            K::Write(WriteFailure::WriteError(w)) => write!(f, "code {}: {}", w.code, w.message),
            other => write!(f, "{other}"),
        }
    }
}

impl std::error::Error for MongoError {}

pub(super) fn into_error(f: MongoFailure, op: Operation, timeout: Duration) -> Error {
    let f = match f {
        Failure::NotSent(e) => Failure::NotSent(MongoError(e)),
        Failure::Lost(e) => Failure::Lost(e.map(MongoError)),
        Failure::Reply(e) => Failure::Reply(MongoError(e)),
    };
    match f {
        Failure::NotSent(e) => crate::retry::not_sent(BACKEND, "MongoDB", op, e),
        // Applied, so "maybe applied" even for an operation already retried.
        Failure::Lost(Some(e)) if is_write_concern_error(&e.0) => Error::new(
            ErrorKind::OutcomeUnknown,
            BACKEND,
            op,
            "MongoDB applied the write but could not confirm its write concern, so it may yet be rolled back",
        )
        .with_source(e),
        Failure::Lost(source) => crate::retry::lost(BACKEND, "MongoDB", op, timeout, source),
        Failure::Reply(e) => Error::new(
            ErrorKind::Backend,
            BACKEND,
            op,
            "MongoDB answered with an error",
        )
        .with_source(e),
    }
}

pub(super) fn clock_too_slow(op: Operation) -> Error {
    Error::new(
        ErrorKind::Unavailable,
        BACKEND,
        op,
        format!(
            "MongoDB's clock could not be read: {} replies in a row took over {:?}; nothing was applied",
            clock::SAMPLE_TRIES,
            clock::MAX_ROUND_TRIP
        ),
    )
}

pub(super) fn is_duplicate_key(e: &Error) -> bool {
    use mongodb::error::{ErrorKind as K, WriteFailure};
    let Some(source) = std::error::Error::source(e) else {
        return false;
    };
    let Some(MongoError(e)) = source.downcast_ref::<MongoError>() else {
        return false;
    };
    match e.kind.as_ref() {
        K::Write(WriteFailure::WriteError(w)) => w.code == DUPLICATE_KEY,
        K::Command(c) => c.code == DUPLICATE_KEY,
        _ => false,
    }
}
