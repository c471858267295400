//! PostgreSQL and pool errors mapped onto the contract: which were never
//! sent, which lost their reply, which are answers.

use super::*;

pub(super) fn unexpected(op: Operation, e: tokio_postgres::Error) -> Error {
    Error::new(
        ErrorKind::Backend,
        BACKEND,
        op,
        "unexpected result from PostgreSQL",
    )
    .with_source(e)
}

/// A failure of one attempt.
#[derive(Debug)]
pub(super) enum PgFailure {
    Pool(deadpool_postgres::PoolError),
    Db(tokio_postgres::Error),
}

impl fmt::Display for PgFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PgFailure::Pool(e) => write!(f, "{e}"),
            PgFailure::Db(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for PgFailure {}

impl From<deadpool_postgres::PoolError> for PgFailure {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        PgFailure::Pool(e)
    }
}

impl From<tokio_postgres::Error> for PgFailure {
    fn from(e: tokio_postgres::Error) -> Self {
        PgFailure::Db(e)
    }
}

/// SQLSTATEs of a statement the server gave up on before it took effect
/// (it was rolled back), or of a server that refused to run it.
pub(super) const REFUSED_BEFORE_RUNNING: &[tokio_postgres::error::SqlState] = &[
    tokio_postgres::error::SqlState::T_R_SERIALIZATION_FAILURE,
    tokio_postgres::error::SqlState::T_R_DEADLOCK_DETECTED,
    tokio_postgres::error::SqlState::LOCK_NOT_AVAILABLE,
    tokio_postgres::error::SqlState::QUERY_CANCELED,
    tokio_postgres::error::SqlState::ADMIN_SHUTDOWN,
    tokio_postgres::error::SqlState::CRASH_SHUTDOWN,
    tokio_postgres::error::SqlState::CANNOT_CONNECT_NOW,
    tokio_postgres::error::SqlState::TOO_MANY_CONNECTIONS,
];

/// The failure model of this backend, in one table (the module docs and
/// `docs/design.md` say why each row is where it is):
/// - the pool failed (waiting for, opening or checking a connection): no
///   statement was sent;
/// - the server answered with a SQLSTATE in [`REFUSED_BEFORE_RUNNING`]:
///   the statement was rolled back or never started;
/// - any other SQLSTATE: the server ran the statement and answered with an
///   error (it was rolled back; the answer is final);
/// - no SQLSTATE: the connection broke or the reply could not be read
///   after the statement was sent; it may have committed.
pub(super) fn classify(e: PgFailure) -> Failure<PgFailure> {
    // An answer, not a failure to reach the server: retrying cannot help.
    if refused_settings(&e).is_some() {
        return Failure::Reply(e);
    }
    let code = match &e {
        PgFailure::Pool(_) => return Failure::NotSent(e),
        PgFailure::Db(db) => db.code(),
    };
    match code {
        Some(code) if REFUSED_BEFORE_RUNNING.contains(code) => Failure::NotSent(e),
        Some(_) => Failure::Reply(e),
        None => Failure::Lost(Some(e)),
    }
}

/// The server's own words when it refused the connection's settings:
/// SQLSTATE class 28 (role, password) or 3D (database).
fn refused_settings(e: &PgFailure) -> Option<&tokio_postgres::error::DbError> {
    let PgFailure::Pool(deadpool_postgres::PoolError::Backend(e)) = e else {
        return None;
    };
    let db = e.as_db_error()?;
    let class = db.code().code().get(..2)?;
    matches!(class, "28" | "3D").then_some(db)
}

pub(super) fn into_error(failure: Failure<PgFailure>, op: Operation, timeout: Duration) -> Error {
    use tokio_postgres::error::SqlState;
    match failure {
        Failure::NotSent(e) => Error::new(
            ErrorKind::Unavailable,
            BACKEND,
            op,
            "could not reach PostgreSQL, or it refused the statement before running it; nothing was applied",
        )
        .with_source(e),
        Failure::Lost(source) => crate::retry::lost(BACKEND, "PostgreSQL", op, timeout, source),
        Failure::Reply(e) if refused_settings(&e).is_some() => {
            let words = refused_settings(&e).map_or("", |db| db.message());
            let message = format!(
                "PostgreSQL refused the connection: {words}; check the user, password and database in the URL"
            );
            Error::new(ErrorKind::Configuration, BACKEND, op, message)
        }
        Failure::Reply(e) => {
            let code = match &e {
                PgFailure::Db(db) => db.code().cloned(),
                PgFailure::Pool(_) => None,
            };
            let (kind, message) = match code {
                Some(c) if c == SqlState::INVALID_TEXT_REPRESENTATION && op != Operation::Eval => {
                    (ErrorKind::NotAnInteger, "the stored value is not a decimal integer in the i64 range")
                }
                Some(c) if c == SqlState::NUMERIC_VALUE_OUT_OF_RANGE && op != Operation::Eval => {
                    (ErrorKind::Overflow, "the new value would not fit in an i64")
                }
                _ if op == Operation::Eval => (ErrorKind::Script, "the SQL statement failed"),
                _ => (ErrorKind::Backend, "PostgreSQL answered with an error"),
            };
            Error::new(kind, BACKEND, op, message).with_source(e)
        }
    }
}
