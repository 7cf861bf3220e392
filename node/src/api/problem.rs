//! Errors as RFC 9457 problem details (`application/problem+json`).
//!
//! Every handler returns `Result<_, ApiError>`; every way a request can go
//! wrong maps to one variant here, so no path answers with a bare 500 or a
//! body of another shape.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use fogbank_taas::{ActuateError, IngestError, ReadError, RemoteError, StoreError};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    UnknownThing(String),
    #[error("{0}")]
    NotFound(String),
    /// No route matches the path at all.
    #[error("{0}")]
    NoRoute(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the request body is larger than the {limit} bytes allowed")]
    TooLarge { limit: usize },
    #[error("content type {found:?} is not accepted here; send {expected}")]
    UnsupportedType {
        found: String,
        expected: &'static str,
    },
    #[error("none of the acceptable media types can be produced; available: {available}")]
    NotAcceptable { available: &'static str },
    #[error("this request needs a bearer token")]
    Unauthenticated,
    #[error("token {token:?} lacks the {scope} scope")]
    Forbidden { token: String, scope: &'static str },
    /// A service its publisher did not sign with a key this gateway trusts.
    #[error("{0}")]
    Untrusted(String),
    #[error("{0}")]
    Conflict(String),
    #[error("method not allowed here; allowed: {allow}")]
    MethodNotAllowed { allow: &'static str },
    #[error("the device did not carry out the command: {0}")]
    CommandFailed(String),
    #[error("storage failed: {0}")]
    Storage(String),
    /// The gateway that owns the thing is down or refused.
    #[error("{0}")]
    OwnerUnreachable(String),
    /// The gateway that owns the thing did not answer in time.
    #[error("{0}")]
    OwnerTimeout(String),
    /// An extended service failed while answering.
    #[error("{0}")]
    ServiceFailed(String),
    /// An extended service is not running or cannot take more work.
    #[error("{0}")]
    ServiceUnavailable(String),
    /// The SD-IoT controller cannot serve a request at all.
    #[error("{0}")]
    Unable(String),
}

#[derive(Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the kind of problem.
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    /// `unable`, on the controller's 422.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<&'static str>,
}

impl ApiError {
    fn kind(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::UnknownThing(_) => ("unknown-thing", "Unknown thing service"),
            ApiError::NotFound(_) => ("not-found", "Not found"),
            ApiError::NoRoute(_) => ("no-route", "No such resource"),
            ApiError::BadRequest(_) => ("bad-request", "Bad request"),
            ApiError::TooLarge { .. } => ("too-large", "Request body too large"),
            ApiError::UnsupportedType { .. } => {
                ("unsupported-media-type", "Unsupported media type")
            }
            ApiError::NotAcceptable { .. } => ("not-acceptable", "Not acceptable"),
            ApiError::Unauthenticated => ("unauthenticated", "Authentication required"),
            ApiError::Forbidden { .. } => ("forbidden", "Forbidden"),
            ApiError::Untrusted(_) => ("untrusted-publisher", "Not signed by a trusted publisher"),
            ApiError::Conflict(_) => ("conflict", "Conflict with the thing's state"),
            ApiError::MethodNotAllowed { .. } => ("method-not-allowed", "Method not allowed"),
            ApiError::CommandFailed(_) => ("command-failed", "Command failed"),
            ApiError::Storage(_) => ("storage", "Storage failure"),
            ApiError::OwnerUnreachable(_) => ("owner-unreachable", "Owning gateway unreachable"),
            ApiError::OwnerTimeout(_) => ("owner-timeout", "Owning gateway did not answer"),
            ApiError::ServiceFailed(_) => ("service-failed", "Extended service failed"),
            ApiError::ServiceUnavailable(_) => {
                ("service-unavailable", "Extended service unavailable")
            }
            ApiError::Unable(_) => ("unable", "The request cannot be served"),
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::UnknownThing(_) | ApiError::NotFound(_) | ApiError::NoRoute(_) => {
                StatusCode::NOT_FOUND
            }
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::NotAcceptable { .. } => StatusCode::NOT_ACCEPTABLE,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } | ApiError::Untrusted(_) => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::CommandFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::Storage(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::OwnerUnreachable(_) => StatusCode::BAD_GATEWAY,
            ApiError::OwnerTimeout(_) => StatusCode::GATEWAY_TIMEOUT,
            ApiError::ServiceFailed(_) => StatusCode::BAD_GATEWAY,
            ApiError::ServiceUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Unable(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let (slug, title) = self.kind();
        let status = self.status_code();
        let body = Problem {
            problem_type: format!("urn:fogbank:problem:{slug}"),
            title,
            status: status.as_u16(),
            detail: self.to_string(),
            outcome: matches!(self, ApiError::Unable(_)).then_some("unable"),
        };
        let mut response = HttpResponse::build(status);
        response.content_type("application/problem+json");
        if let ApiError::MethodNotAllowed { allow } = self {
            response.insert_header((header::ALLOW, HeaderValue::from_static(allow)));
        }
        if matches!(self, ApiError::Unauthenticated) {
            response.insert_header((
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"fogbank\""),
            ));
        }
        response.json(body)
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        tracing::error!(%error, "store error while serving a request");
        ApiError::Storage(error.to_string())
    }
}

impl From<RemoteError> for ApiError {
    fn from(error: RemoteError) -> Self {
        match error {
            RemoteError::Timeout { .. } => ApiError::OwnerTimeout(error.to_string()),
            _ => ApiError::OwnerUnreachable(error.to_string()),
        }
    }
}

impl From<ReadError> for ApiError {
    fn from(error: ReadError) -> Self {
        match error {
            ReadError::UnknownThing(id) => {
                ApiError::UnknownThing(format!("unknown thing service {id}"))
            }
            ReadError::Store(e) => e.into(),
            ReadError::Remote(e) => e.into(),
            ReadError::Interrupted(e) => {
                tracing::error!(error = %e, "a history scan stopped while serving a request");
                ApiError::Storage(e.to_string())
            }
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(error: IngestError) -> Self {
        match error {
            IngestError::UnknownThing(id) => {
                ApiError::UnknownThing(format!("unknown thing service {id}"))
            }
            IngestError::Store(e) => e.into(),
            IngestError::NoOutcome => ApiError::Storage(error.to_string()),
            IngestError::NotOwned { .. } => ApiError::Conflict(error.to_string()),
            other => ApiError::BadRequest(other.to_string()),
        }
    }
}

impl From<ActuateError> for ApiError {
    fn from(error: ActuateError) -> Self {
        match error {
            ActuateError::UnknownThing(id) => {
                ApiError::UnknownThing(format!("unknown thing service {id}"))
            }
            ActuateError::WrongType { .. } => ApiError::BadRequest(error.to_string()),
            ActuateError::Remote(remote) => remote.into(),
            other => ApiError::Conflict(other.to_string()),
        }
    }
}
