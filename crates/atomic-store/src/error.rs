//! The one error type of the crate.

use std::fmt;

/// What went wrong, in a form a program can branch on.
///
/// Lock contention ("not acquired", "not held", "held by another owner") is
/// never an error: those are ordinary results of the operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// An argument broke a rule of the contract (empty or oversized key, NUL
    /// byte, zero TTL, malformed URL, ...). Nothing was sent or written.
    InvalidArgument,
    /// `incr` or `assign_nonce` found a value that is not a decimal `i64`.
    /// The value is unchanged.
    NotAnInteger,
    /// The new value would not fit in an `i64`. The value is unchanged.
    Overflow,
    /// The backend does not offer this operation; see
    /// [`Capabilities`](crate::Capabilities).
    Unsupported,
    /// The URL names a backend whose cargo feature is not compiled in.
    FeatureDisabled,
    /// The backend could not be reached, or refused the request before it
    /// took effect. Nothing was applied; retrying may succeed.
    Unavailable,
    /// The server refused this client's settings: a database, role, DB
    /// index or chroot that does not exist, or credentials it does not
    /// accept. Nothing was applied, and retrying will not help: fix the URL
    /// or the server.
    Configuration,
    /// The operation did not finish in time and was not applied (for example a
    /// SQLite write lock that stayed busy, or a lock guard's deadline).
    Timeout,
    /// The request may or may not have been applied: the connection broke or
    /// timed out after the request could have reached the server. Resending
    /// a write could apply it twice or report its own first attempt as
    /// someone else's, so the library never does; the caller decides (for a
    /// nonce: treat the value as maybe used).
    OutcomeUnknown,
    /// A script passed to `eval` failed on the server.
    Script,
    /// The backend answered with something the contract does not allow (for
    /// example a key of the wrong type, or a schema of an unknown version).
    Backend,
}

impl ErrorKind {
    /// A short, stable, snake_case name (used in the CLI's JSON output).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "invalid_argument",
            ErrorKind::NotAnInteger => "not_an_integer",
            ErrorKind::Overflow => "overflow",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::FeatureDisabled => "feature_disabled",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::Timeout => "timeout",
            ErrorKind::OutcomeUnknown => "outcome_unknown",
            ErrorKind::Script => "script",
            ErrorKind::Backend => "backend",
            ErrorKind::Configuration => "configuration",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Defines `Operation` from one list: the enum, [`Operation::ALL`] and
/// [`Operation::as_str`] cannot disagree.
macro_rules! operations {
    ($($(#[$doc:meta])* $variant:ident => $name:literal,)*) => {
        /// The operation an error happened in.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum Operation {
            $($(#[$doc])* $variant,)*
        }

        impl Operation {
            /// Every operation, in the contract's order.
            pub const ALL: &'static [Operation] = &[$(Operation::$variant),*];

            /// The operation's name as written in the contract.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(Operation::$variant => $name,)*
                }
            }
        }
    };
}

operations! {
    /// Opening a store from a URL.
    Open => "open",
    /// [`AtomicStore::incr`](crate::AtomicStore::incr).
    Incr => "incr",
    /// [`AtomicStore::acquire_lock`](crate::AtomicStore::acquire_lock).
    AcquireLock => "acquire_lock",
    /// [`AtomicStore::release_lock`](crate::AtomicStore::release_lock).
    ReleaseLock => "release_lock",
    /// [`AtomicStore::extend_lock`](crate::AtomicStore::extend_lock).
    ExtendLock => "extend_lock",
    /// [`AtomicStore::get`](crate::AtomicStore::get).
    Get => "get",
    /// [`AtomicStore::set`](crate::AtomicStore::set).
    Set => "set",
    /// [`AtomicStore::set_with_ttl`](crate::AtomicStore::set_with_ttl).
    SetWithTtl => "set_with_ttl",
    /// [`AtomicStore::delete`](crate::AtomicStore::delete).
    Delete => "delete",
    /// [`AtomicStore::compare_and_set`](crate::AtomicStore::compare_and_set).
    CompareAndSet => "compare_and_set",
    /// [`AtomicStore::assign_nonce`](crate::AtomicStore::assign_nonce).
    AssignNonce => "assign_nonce",
    /// [`AtomicStore::eval`](crate::AtomicStore::eval).
    Eval => "eval",
    /// [`AtomicStore::inspect`](crate::AtomicStore::inspect).
    Inspect => "inspect",
    /// [`AtomicStore::keys`](crate::AtomicStore::keys).
    Keys => "keys",
    /// [`AtomicStore::notify`](crate::AtomicStore::notify).
    Notify => "notify",
    /// [`AtomicStore::wait_notified`](crate::AtomicStore::wait_notified).
    WaitNotified => "wait_notified",
    /// [`AtomicStore::purge`](crate::AtomicStore::purge).
    Purge => "purge",
}

impl Operation {
    /// True when the operation may be sent again after its reply was lost:
    /// reads, opening, and best-effort notifications. A second copy of
    /// these changes nothing anyone is told.
    ///
    /// Writes are never resent after a lost reply, not even the idempotent
    /// ones: a resent `delete` or `release_lock` would find its own first
    /// attempt's effect and report "nothing there", a resent `extend_lock`
    /// would move a deadline the caller was never told about, and a resent
    /// `set` could overwrite a write that landed in between. They end with
    /// [`ErrorKind::OutcomeUnknown`] instead. Every operation is retried
    /// when the request certainly never reached the server.
    pub fn is_resent_after_lost_reply(self) -> bool {
        matches!(
            self,
            Operation::Open
                | Operation::Get
                | Operation::Inspect
                | Operation::Keys
                | Operation::Notify
                | Operation::WaitNotified
        )
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// The error of every fallible call in this crate.
///
/// It carries a [`kind`](Error::kind), the backend's name, the
/// [`operation`](Error::operation), a message, an optional source, and whether
/// the failure is [temporary](Error::is_temporary).
pub struct Error {
    kind: ErrorKind,
    backend: &'static str,
    operation: Operation,
    message: String,
    temporary: bool,
    source: Option<Source>,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A new error. Kinds `Unavailable` and `Timeout` start as temporary,
    /// every other kind as permanent.
    pub fn new(
        kind: ErrorKind,
        backend: &'static str,
        operation: Operation,
        message: impl Into<String>,
    ) -> Self {
        Error {
            kind,
            backend,
            operation,
            message: message.into(),
            temporary: matches!(kind, ErrorKind::Unavailable | ErrorKind::Timeout),
            source: None,
        }
    }

    /// Attach the underlying error.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Override whether the failure is temporary.
    pub fn with_temporary(mut self, temporary: bool) -> Self {
        self.temporary = temporary;
        self
    }

    /// The same error, reported as happening in `op` (for a backend that
    /// ran one step of `op` under another operation's retry policy).
    #[allow(dead_code)] // in builds without such a backend
    pub(crate) fn in_operation(mut self, op: Operation) -> Self {
        self.operation = op;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The backend's name (`"memory"`, `"sqlite"`, `"redis"`, ...).
    pub fn backend(&self) -> &'static str {
        self.backend
    }

    /// The operation that failed.
    pub fn operation(&self) -> Operation {
        self.operation
    }

    /// The human-readable message, without the source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// True when the operation was **not** applied and the same call may
    /// succeed later. [`ErrorKind::OutcomeUnknown`] is never temporary: the
    /// operation may have been applied, so a blind retry is not safe.
    pub fn is_temporary(&self) -> bool {
        self.temporary
    }

    pub(crate) fn invalid(
        backend: &'static str,
        operation: Operation,
        message: impl Into<String>,
    ) -> Self {
        Error::new(ErrorKind::InvalidArgument, backend, operation, message)
    }

    /// `Unsupported`: this backend cannot do `operation`.
    pub fn unsupported(backend: &'static str, operation: Operation) -> Self {
        Error::new(
            ErrorKind::Unsupported,
            backend,
            operation,
            format!("the {backend} backend does not support {operation}"),
        )
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("backend", &self.backend)
            .field("operation", &self.operation)
            .field("message", &self.message)
            .field("temporary", &self.temporary)
            .field("source", &self.source)
            .finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} failed ({}): {}",
            self.backend, self.operation, self.kind, self.message
        )?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_backend_operation_and_kind() {
        let e = Error::new(ErrorKind::Overflow, "memory", Operation::Incr, "too big");
        assert_eq!(e.to_string(), "memory incr failed (overflow): too big");
        assert!(!e.is_temporary());
        let e = Error::new(ErrorKind::Unavailable, "redis", Operation::Get, "down");
        assert!(e.is_temporary());
        let e = Error::new(ErrorKind::OutcomeUnknown, "redis", Operation::Incr, "lost");
        assert!(!e.is_temporary());
    }

    #[test]
    fn only_reads_are_resent_after_a_lost_reply() {
        assert!(Operation::Get.is_resent_after_lost_reply());
        assert!(Operation::Keys.is_resent_after_lost_reply());
        for op in [
            Operation::Set,
            Operation::SetWithTtl,
            Operation::Delete,
            Operation::ReleaseLock,
            Operation::ExtendLock,
            Operation::Incr,
            Operation::AcquireLock,
            Operation::AssignNonce,
            Operation::Eval,
            Operation::CompareAndSet,
        ] {
            assert!(!op.is_resent_after_lost_reply(), "{op}");
        }
    }
}
