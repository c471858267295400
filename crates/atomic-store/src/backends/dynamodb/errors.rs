//! DynamoDB's errors mapped onto the contract: which were never sent, which
//! lost their reply, which are answers.

use super::*;

/// An error from DynamoDB or the SDK, with the service's error code.
#[derive(Debug)]
pub struct DynamoError {
    pub(super) code: Option<String>,
    pub(super) text: String,
    pub(super) unsent: Option<Unsent>,
}

/// Why a request never left the SDK.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Unsent {
    /// The request could not be built.
    Build,
    /// No credentials to sign it with (or none in time).
    Credentials,
}

impl fmt::Display for DynamoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl std::error::Error for DynamoError {}

impl DynamoError {
    /// The service's error code, such as `ThrottlingException`.
    pub fn code(&self) -> Option<&str> {
        self.code.as_deref()
    }
}

pub(super) type DynamoFailure = Failure<DynamoError>;

/// Set on an attempt when the SDK hands its request to the HTTP client, so
/// a failure before that point (credentials, signing) is known to have
/// sent nothing.
#[derive(Debug, Clone, Default)]
pub(super) struct SendMark(Arc<AtomicBool>);

impl SendMark {
    pub(super) fn transmitted(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

impl Intercept for SendMark {
    fn name(&self) -> &'static str {
        "atomic-store send mark"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        _cfg: &mut ConfigBag,
    ) -> std::result::Result<(), BoxError> {
        self.0.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Send one request (built by `send` with the mark as an interceptor) and
/// sort its failure.
pub(super) async fn attempt<T, E, R, Fut>(
    send: impl FnOnce(SendMark) -> Fut,
) -> std::result::Result<T, DynamoFailure>
where
    Fut: Future<Output = std::result::Result<T, SdkError<E, R>>>,
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let mark = SendMark::default();
    send(mark.clone())
        .await
        .map_err(|e| classify(e, mark.transmitted()))
}

pub(super) fn refused_connection(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::AddrNotAvailable
            ) {
                return true;
            }
        }
        let text = e.to_string();
        if text.contains("client error (Connect)") || text.contains("dns error") {
            return true;
        }
        next = e.source();
    }
    false
}

/// Sort one attempt's failure into the retry policy's classes; the one
/// table of this backend (the module docs say why each row is where it
/// is). `transmitted`: the request reached the HTTP client.
pub(super) fn classify<E, R>(e: SdkError<E, R>, transmitted: bool) -> DynamoFailure
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    let code = e.code().map(str::to_owned);
    let unsent = match &e {
        SdkError::ConstructionFailure(_) => Some(Unsent::Build),
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) if !transmitted => {
            Some(Unsent::Credentials)
        }
        _ => None,
    };
    let refused = match &e {
        SdkError::DispatchFailure(d) => d.as_connector_error().is_some_and(|c| {
            !c.is_timeout() && refused_connection(c as &(dyn std::error::Error + 'static))
        }),
        _ => false,
    };
    let class = match &e {
        // Final: nothing was sent, and sending again cannot help.
        _ if unsent.is_some() => Class::Reply,
        SdkError::DispatchFailure(_) if refused => Class::NotSent,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) | SdkError::ResponseError(_) => {
            Class::Lost
        }
        SdkError::ServiceError(_) => match code.as_deref() {
            // DynamoDB refused the request before running it.
            Some(
                "ThrottlingException"
                | "ProvisionedThroughputExceededException"
                | "RequestLimitExceeded"
                | "ServiceUnavailable"
                | "ServiceUnavailableException"
                | "LimitExceededException"
                | "TransactionConflictException",
            ) => Class::NotSent,
            // It may have run before it failed.
            Some("InternalServerError" | "InternalFailure") => Class::Lost,
            // An answer the SDK could not read (even a 200: applied).
            None => Class::Lost,
            Some(_) => Class::Reply,
        },
        _ => Class::Lost,
    };
    let err = DynamoError {
        text: short_text(&e),
        code,
        unsent,
    };
    match class {
        Class::NotSent => Failure::NotSent(err),
        Class::Lost => Failure::Lost(Some(err)),
        Class::Reply => Failure::Reply(err),
    }
}

pub(super) enum Class {
    NotSent,
    Lost,
    Reply,
}

/// A one-line account of an SDK error: the service's code and message, or
/// the chain of causes (never the SDK's debug dump). For a request that
/// never left the SDK, the causes start below the SDK's own wrappers.
pub(super) fn short_text<E, R>(e: &SdkError<E, R>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: fmt::Debug + Send + Sync + 'static,
{
    const MAX: usize = 300;
    let mut text = match (e.code(), e.message()) {
        (Some(code), Some(message)) => format!("{code}: {message}"),
        (Some(code), None) => code.to_owned(),
        _ => {
            let start: &(dyn std::error::Error + 'static) = match e {
                SdkError::DispatchFailure(d) => d
                    .as_connector_error()
                    .and_then(std::error::Error::source)
                    .unwrap_or(e),
                _ => e,
            };
            let mut parts: Vec<String> = Vec::new();
            let mut next = Some(start);
            while let Some(cause) = next {
                let part = first_line(&cause.to_string());
                if !part.is_empty() && !parts.iter().any(|p| p.contains(&part)) {
                    parts.push(part);
                }
                next = cause.source();
            }
            parts.join(": ")
        }
    };
    if text.len() > MAX {
        let mut end = MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

/// The first line of `text`, without the words that introduce a list on
/// the next lines ("… in chain. Attempted:").
pub(super) fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default().trim();
    match line.strip_suffix(':') {
        Some(intro) => intro
            .rfind(". ")
            .map_or(intro, |end| &intro[..=end])
            .trim()
            .to_owned(),
        None => line.to_owned(),
    }
}

/// What to set, in every credentials message.
pub(super) const SET_CREDENTIALS: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (any values work for a local endpoint) or AWS_PROFILE";

/// The error for a request that had no credentials to be signed with.
pub(super) fn credentials_error(op: Operation, e: DynamoError) -> Error {
    let text = e.text.to_ascii_lowercase();
    let missing = text.contains("was not enabled") || text.contains("not properly configured");
    let timed_out = text.contains("timed out") || text.contains("timeout");
    let (kind, message) = if missing {
        (
            ErrorKind::InvalidArgument,
            format!("no AWS credentials found: {SET_CREDENTIALS}; nothing was sent"),
        )
    } else if timed_out {
        (
            ErrorKind::Unavailable,
            format!("the AWS credentials did not load within connect_timeout: {SET_CREDENTIALS}; nothing was sent"),
        )
    } else {
        (
            ErrorKind::Unavailable,
            format!("could not load AWS credentials: {SET_CREDENTIALS}; nothing was sent"),
        )
    };
    Error::new(kind, BACKEND, op, message).with_source(e)
}

pub(super) fn into_error(f: DynamoFailure, op: Operation, timeout: Duration) -> Error {
    match f {
        Failure::NotSent(e) => crate::retry::not_sent(BACKEND, "DynamoDB", op, e),
        Failure::Lost(source) => crate::retry::lost(BACKEND, "DynamoDB", op, timeout, source),
        Failure::Reply(e) if e.unsent == Some(Unsent::Credentials) => credentials_error(op, e),
        Failure::Reply(e) => {
            let message = match e.code() {
                Some("ResourceNotFoundException") => {
                    "the table does not exist (open with create_table=true to create it)".to_owned()
                }
                Some(
                    "UnrecognizedClientException"
                    | "InvalidSignatureException"
                    | "MissingAuthenticationToken"
                    | "MissingAuthenticationTokenException"
                    | "ExpiredTokenException",
                ) => format!("DynamoDB refused the AWS credentials: {SET_CREDENTIALS}"),
                Some(_) => "DynamoDB answered with an error".to_owned(),
                None => "the DynamoDB request could not be built".to_owned(),
            };
            Error::new(ErrorKind::Backend, BACKEND, op, message).with_source(e)
        }
    }
}

/// An error of the table check or creation that runs before the caller's
/// first request: a lost reply there is not the caller's operation, which
/// was never sent.
pub(super) fn setup_error(f: DynamoFailure, op: Operation, timeout: Duration) -> Error {
    match f {
        Failure::Lost(source) => {
            let e = Error::new(
                ErrorKind::Unavailable,
                BACKEND,
                op,
                format!("no reply from DynamoDB while checking the table (timeout {timeout:?}); the {op} itself was not sent"),
            );
            match source {
                Some(s) => e.with_source(s),
                None => e,
            }
        }
        f => into_error(f, op, timeout),
    }
}

pub(super) fn condition_failed(e: &Error) -> bool {
    e.kind() == ErrorKind::Backend
        && std::error::Error::source(e)
            .and_then(|s| s.downcast_ref::<DynamoError>())
            .is_some_and(|d| d.code() == Some(CONDITION_FAILED))
}
