//! `DoApiError`: every failure of a DigitalOcean call, by kind, with DigitalOcean's own message
//! and request id kept. Retry decisions read the kind, never the text.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use thiserror::Error;

/// What went wrong, as far as a caller deciding what to do next cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DoErrorKind {
    /// 404: the resource does not exist (or not yet: listings and reads lag a create).
    NotFound,
    /// 409, or 422 "pending event" / "blocking events": the droplet is busy; retry later.
    Conflict,
    /// Any other 4xx (400, 422 limit or validation, 501): permanent for this request.
    Validation,
    /// 401 or 403, or no token configured for the call's purpose.
    Unauthorized,
    /// 429 after every retry the policy allows.
    RateLimited,
    /// 5xx, timeouts, connection errors, unreadable responses: retry later.
    Transient,
}

impl DoErrorKind {
    /// Whether a later attempt of the same call may succeed.
    pub fn is_retryable(self) -> bool {
        matches!(
            self,
            DoErrorKind::Conflict | DoErrorKind::RateLimited | DoErrorKind::Transient
        )
    }

    fn as_str(self) -> &'static str {
        match self {
            DoErrorKind::NotFound => "not found",
            DoErrorKind::Conflict => "conflict",
            DoErrorKind::Validation => "rejected",
            DoErrorKind::Unauthorized => "unauthorized",
            DoErrorKind::RateLimited => "rate limited",
            DoErrorKind::Transient => "transient failure",
        }
    }
}

/// A failed DigitalOcean call. Display: `droplets_get: not found: 404 The resource you
/// requested could not be found. (request id …, 1 attempt)`. Never contains a token.
#[derive(Debug, Error)]
pub enum DoApiError {
    #[error(transparent)]
    NotFound(Box<Failure>),
    #[error(transparent)]
    Conflict(Box<Failure>),
    #[error(transparent)]
    Validation(Box<Failure>),
    #[error(transparent)]
    Unauthorized(Box<Failure>),
    #[error(transparent)]
    RateLimited(Box<Failure>),
    #[error(transparent)]
    Transient(Box<Failure>),
}

/// The details every kind carries.
#[derive(Debug)]
pub struct Failure {
    /// The operation (DigitalOcean's operationId), e.g. `droplets_create`.
    pub op: &'static str,
    pub kind: DoErrorKind,
    /// HTTP status, when there was a response.
    pub status: Option<u16>,
    /// DigitalOcean's short code (`not_found`, `unprocessable_entity`), when sent.
    pub code: Option<String>,
    /// DigitalOcean's message verbatim, or ours when there was no response.
    pub message: String,
    /// From the body's `request_id`, else the `x-request-id` header.
    pub request_id: Option<String>,
    /// Attempts made, the first included.
    pub attempts: u32,
    /// The server's `retry-after`, when it sent one.
    pub retry_after: Option<Duration>,
    /// The request may have taken effect although it failed (a POST whose answer was lost or
    /// was a 5xx): look the resource up before sending it again.
    pub may_have_applied: bool,
    pub source: Option<reqwest::Error>,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}: ", self.op, self.kind.as_str())?;
        if let Some(s) = self.status {
            write!(f, "{s} ")?;
        }
        f.write_str(&self.message)?;
        let plural = if self.attempts == 1 { "" } else { "s" };
        match &self.request_id {
            Some(id) => write!(f, " (request id {id}, {} attempt{plural})", self.attempts),
            None => write!(f, " ({} attempt{plural})", self.attempts),
        }
    }
}

impl std::error::Error for Failure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

impl DoApiError {
    pub(crate) fn new(failure: Failure) -> Self {
        Self::boxed(Box::new(failure))
    }

    pub(crate) fn boxed(failure: Box<Failure>) -> Self {
        match failure.kind {
            DoErrorKind::NotFound => DoApiError::NotFound(failure),
            DoErrorKind::Conflict => DoApiError::Conflict(failure),
            DoErrorKind::Validation => DoApiError::Validation(failure),
            DoErrorKind::Unauthorized => DoApiError::Unauthorized(failure),
            DoErrorKind::RateLimited => DoApiError::RateLimited(failure),
            DoErrorKind::Transient => DoApiError::Transient(failure),
        }
    }

    /// An error that did not come from a response (no token, a broken listing).
    pub(crate) fn local(op: &'static str, kind: DoErrorKind, message: impl Into<String>) -> Self {
        Self::new(Failure {
            op,
            kind,
            status: None,
            code: None,
            message: message.into(),
            request_id: None,
            attempts: 0,
            retry_after: None,
            may_have_applied: false,
            source: None,
        })
    }

    pub fn failure(&self) -> &Failure {
        match self {
            DoApiError::NotFound(f)
            | DoApiError::Conflict(f)
            | DoApiError::Validation(f)
            | DoApiError::Unauthorized(f)
            | DoApiError::RateLimited(f)
            | DoApiError::Transient(f) => f,
        }
    }

    pub fn kind(&self) -> DoErrorKind {
        self.failure().kind
    }

    pub fn is_retryable(&self) -> bool {
        self.kind().is_retryable()
    }

    pub fn is_not_found(&self) -> bool {
        self.kind() == DoErrorKind::NotFound
    }

    pub fn message(&self) -> &str {
        &self.failure().message
    }

    pub fn request_id(&self) -> Option<&str> {
        self.failure().request_id.as_deref()
    }

    pub fn status(&self) -> Option<u16> {
        self.failure().status
    }

    /// See [`Failure::may_have_applied`].
    pub fn may_have_applied(&self) -> bool {
        self.failure().may_have_applied
    }
}

/// `Result<T>` → `Result<Option<T>>`, with 404 as `None`: for a caller to whom "not there" is a
/// value (a get before adopt, a read after delete).
pub trait NotFoundIsNone<T> {
    fn found(self) -> Result<Option<T>, DoApiError>;
}

impl<T> NotFoundIsNone<T> for Result<T, DoApiError> {
    fn found(self) -> Result<Option<T>, DoApiError> {
        match self {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// DigitalOcean's error body, in either of its two shapes, or the raw text.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct ErrorBody {
    pub code: Option<String>,
    pub message: String,
    pub request_id: Option<String>,
}

#[derive(Deserialize)]
struct StandardError {
    id: String,
    message: String,
    #[serde(default)]
    request_id: Option<String>,
}

#[derive(Deserialize)]
struct RootCauseError {
    error: String,
    #[serde(default)]
    root_causes: Option<Vec<String>>,
}

const MAX_RAW_MESSAGE: usize = 300;

impl ErrorBody {
    /// `{id, message, request_id}`, else tags' `{error, messages, root_causes}`, else the text.
    pub fn parse(body: &[u8]) -> ErrorBody {
        if let Ok(e) = serde_json::from_slice::<StandardError>(body) {
            return ErrorBody {
                code: Some(e.id),
                message: e.message,
                request_id: e.request_id.filter(|r| !r.is_empty()),
            };
        }
        if let Ok(e) = serde_json::from_slice::<RootCauseError>(body) {
            let mut message = e.error;
            if let Some(cause) = e.root_causes.unwrap_or_default().first() {
                message = format!("{message} (root cause: {cause})");
            }
            return ErrorBody {
                code: None,
                message,
                request_id: None,
            };
        }
        let text = String::from_utf8_lossy(body);
        let text = text.trim();
        let message = if text.is_empty() {
            "no error message".to_owned()
        } else {
            text.chars().take(MAX_RAW_MESSAGE).collect()
        };
        ErrorBody {
            code: None,
            message,
            request_id: None,
        }
    }
}

/// The kind of an error response.
pub(crate) fn classify(status: u16, message: &str) -> DoErrorKind {
    match status {
        401 | 403 => DoErrorKind::Unauthorized,
        404 => DoErrorKind::NotFound,
        409 => DoErrorKind::Conflict,
        422 if is_busy(message) => DoErrorKind::Conflict,
        422 if message.to_ascii_lowercase().contains("try again") => DoErrorKind::Transient,
        429 => DoErrorKind::RateLimited,
        501 => DoErrorKind::Validation,
        500..=599 => DoErrorKind::Transient,
        _ => DoErrorKind::Validation,
    }
}

/// "Droplet already has a pending event." and "there are currently blocking events processing
/// for one or more of the droplets": another action is running on the droplet.
fn is_busy(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("pending event") || m.contains("blocking event")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_error_shapes_parse() {
        let e = ErrorBody::parse(
            br#"{"id":"not_found","message":"The resource you requested could not be found.","request_id":"r-1"}"#,
        );
        assert_eq!(e.code.as_deref(), Some("not_found"));
        assert_eq!(e.request_id.as_deref(), Some("r-1"));
        let e = ErrorBody::parse(include_bytes!(
            "../../../tests/fixtures/digitalocean/examples/error.400.tags_create.json"
        ));
        assert!(
            e.message.starts_with("Error validating resource tag"),
            "{e:?}"
        );
        assert!(e.message.contains("root cause"), "{e:?}");
        let e = ErrorBody::parse(b"<html>bad gateway</html>");
        assert_eq!(e.message, "<html>bad gateway</html>");
    }

    #[test]
    fn statuses_map_to_kinds() {
        assert_eq!(
            classify(422, "Droplet already has a pending event."),
            DoErrorKind::Conflict
        );
        assert_eq!(
            classify(
                422,
                "there are currently blocking events processing for one or more of the droplets"
            ),
            DoErrorKind::Conflict
        );
        assert_eq!(
            classify(
                422,
                "creating this/these droplet(s) will exceed your droplet limit"
            ),
            DoErrorKind::Validation
        );
        assert_eq!(classify(404, ""), DoErrorKind::NotFound);
        assert_eq!(classify(403, ""), DoErrorKind::Unauthorized);
        assert_eq!(classify(503, ""), DoErrorKind::Transient);
        assert_eq!(classify(501, ""), DoErrorKind::Validation);
        assert_eq!(classify(400, ""), DoErrorKind::Validation);
    }

    #[test]
    fn display_names_op_kind_message_and_request_id() {
        let e = DoApiError::new(Failure {
            op: "droplets_get",
            kind: DoErrorKind::NotFound,
            status: Some(404),
            code: Some("not_found".into()),
            message: "The resource you requested could not be found.".into(),
            request_id: Some("abc".into()),
            attempts: 1,
            retry_after: None,
            may_have_applied: false,
            source: None,
        });
        assert_eq!(
            e.to_string(),
            "droplets_get: not found: 404 The resource you requested could not be found. \
             (request id abc, 1 attempt)"
        );
        assert!(matches!(Err::<(), _>(e).found(), Ok(None)));
    }
}
