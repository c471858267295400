//! MySQL and MariaDB errors mapped onto the contract: which were never
//! sent, which lost their reply, which are answers.

use super::*;

/// A failure of one attempt.
#[derive(Debug)]
pub(super) struct MyFailure(pub mysql_async::Error);

impl fmt::Display for MyFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::error::Error for MyFailure {}

/// Server error codes of a statement that was rolled back or never ran:
/// lock wait timeout, deadlock, interrupted, max statement time, shutdown
/// in progress; a server that refused the session (too many connections,
/// idle session closed, Galera not ready); a read-only server.
pub(super) const REFUSED_BEFORE_RUNNING: &[u16] = &[
    1205, 1213, 1317, 1969, 3024, 1053, 1040, 1203, 1226, 4031, 1047, 1290, 1836, 1792,
];

/// Server error codes of settings the server refuses: access denied to a
/// database, bad user or password, unknown database, plugin refusals.
pub(super) const REFUSED_SETTINGS: &[u16] = &[1044, 1045, 1049, 1698, 1251];

/// Out of range: the new value would not fit.
const OUT_OF_RANGE: &[u16] = &[1690, 1264];

fn server_code(e: &mysql_async::Error) -> Option<u16> {
    match e {
        mysql_async::Error::Server(server) => Some(server.code),
        _ => None,
    }
}

/// The failure model of this backend, in one table:
/// - a server error in [`REFUSED_BEFORE_RUNNING`]: nothing was applied;
/// - settings refused ([`REFUSED_SETTINGS`]): a final answer;
/// - any other server error: the statement ran and failed (rolled back);
/// - anything else (I/O, driver, protocol) while taking a connection
///   (`before_sending`): nothing was sent; after that: the reply was lost,
///   it may have committed.
pub(super) fn classify(error: mysql_async::Error, before_sending: bool) -> Failure<MyFailure> {
    let code = server_code(&error);
    let url_error = matches!(error, mysql_async::Error::Url(_)) || no_tls(&error);
    let failure = MyFailure(error);
    match code {
        Some(code) if REFUSED_SETTINGS.contains(&code) => Failure::Reply(failure),
        Some(code) if REFUSED_BEFORE_RUNNING.contains(&code) => Failure::NotSent(failure),
        Some(_) => Failure::Reply(failure),
        None if url_error => Failure::Reply(failure),
        None if before_sending => Failure::NotSent(failure),
        None => Failure::Lost(Some(failure)),
    }
}

/// The server offers no TLS, and the URL requires it.
fn no_tls(e: &mysql_async::Error) -> bool {
    matches!(
        e,
        mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer)
    )
}

pub(super) fn into_error(failure: Failure<MyFailure>, op: Operation, timeout: Duration) -> Error {
    match failure {
        Failure::NotSent(e) => Error::new(
            ErrorKind::Unavailable,
            BACKEND,
            op,
            "could not reach MySQL, or it refused the statement before running it; nothing was applied",
        )
        .with_source(e),
        Failure::Lost(source) => crate::retry::lost(BACKEND, "MySQL", op, timeout, source),
        Failure::Reply(e) => {
            let (kind, message) = match &e.0 {
                mysql_async::Error::Server(s) if REFUSED_SETTINGS.contains(&s.code) => (
                    ErrorKind::Configuration,
                    format!(
                        "MySQL refused the connection: {}; check the user, password and database in the URL",
                        s.message
                    ),
                ),
                e if no_tls(e) => (
                    ErrorKind::Configuration,
                    "the server offers no TLS; enable it on the server, or add ssl-mode=DISABLED to the URL to connect without it".to_owned(),
                ),
                mysql_async::Error::Url(_) => (
                    ErrorKind::Configuration,
                    "the driver refused the URL; check the user, host, port and database".to_owned(),
                ),
                mysql_async::Error::Server(s) if OUT_OF_RANGE.contains(&s.code) => {
                    (ErrorKind::Overflow, "the new value would not fit in an i64".to_owned())
                }
                _ => (ErrorKind::Backend, "MySQL answered with an error".to_owned()),
            };
            Error::new(kind, BACKEND, op, message).with_source(e)
        }
    }
}

pub(super) fn unexpected(op: Operation, what: &str) -> Error {
    Error::new(
        ErrorKind::Backend,
        BACKEND,
        op,
        format!("unexpected result from MySQL: {what}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(code: u16) -> mysql_async::Error {
        mysql_async::Error::Server(mysql_async::ServerError {
            code,
            message: "from the test".into(),
            state: "HY000".into(),
        })
    }

    fn class(f: &Failure<MyFailure>) -> &'static str {
        match f {
            Failure::NotSent(_) => "not sent",
            Failure::Lost(_) => "lost",
            Failure::Reply(_) => "reply",
        }
    }

    #[test]
    fn server_codes_and_driver_errors() {
        for (code, want, kind) in [
            (1205, "not sent", ErrorKind::Unavailable), // lock wait timeout: rolled back
            (1213, "not sent", ErrorKind::Unavailable), // deadlock: rolled back
            (1290, "not sent", ErrorKind::Unavailable), // read-only server
            (1040, "not sent", ErrorKind::Unavailable), // too many connections
            (1045, "reply", ErrorKind::Configuration),  // access denied
            (1049, "reply", ErrorKind::Configuration),  // unknown database
            (1690, "reply", ErrorKind::Overflow),       // BIGINT out of range
            (1146, "reply", ErrorKind::Backend),        // no such table
        ] {
            for before_sending in [false, true] {
                let f = classify(server(code), before_sending);
                assert_eq!(class(&f), want, "{code}");
                let e = into_error(f, Operation::Incr, Duration::from_secs(1));
                assert_eq!(e.kind(), kind, "{code}: {e}");
            }
        }
        let io = || mysql_async::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset).into());
        assert_eq!(class(&classify(io(), true)), "not sent");
        assert_eq!(class(&classify(io(), false)), "lost");
        let e = into_error(classify(io(), false), Operation::Incr, Duration::from_secs(1));
        assert_eq!(e.kind(), ErrorKind::OutcomeUnknown, "{e}");
        let no_tls = mysql_async::Error::Driver(mysql_async::DriverError::NoClientSslFlagFromServer);
        let e = into_error(classify(no_tls, true), Operation::Get, Duration::from_secs(1));
        assert_eq!(e.kind(), ErrorKind::Configuration, "{e}");
    }
}
