//! ProblemDetails: the only error body the API sends (clause 5.5.2).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use piazza_broker::BrokerError;
use piazza_ngsild::{ErrorKind, NgsiError};
use serde_json::json;

/// An API failure, rendered as ProblemDetails.
#[derive(Debug)]
pub struct ApiError(pub BrokerError);

impl ApiError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self(BrokerError::Ngsi(NgsiError::new(kind, detail)))
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequestData, detail)
    }
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, detail)
    }
}

impl From<BrokerError> for ApiError {
    fn from(error: BrokerError) -> Self {
        Self(error)
    }
}

impl From<NgsiError> for ApiError {
    fn from(error: NgsiError) -> Self {
        Self(BrokerError::Ngsi(error))
    }
}

/// The one status code of each problem type.
pub fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::InvalidRequest | ErrorKind::BadRequestData => StatusCode::BAD_REQUEST,
        ErrorKind::AlreadyExists | ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::OperationNotSupported | ErrorKind::UnprocessableContent => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorKind::ResourceNotFound | ErrorKind::NonexistentTenant => StatusCode::NOT_FOUND,
        ErrorKind::InternalError => StatusCode::INTERNAL_SERVER_ERROR,
        ErrorKind::TooComplexQuery | ErrorKind::TooManyResults => StatusCode::FORBIDDEN,
        // The @context server did not answer in time: the broker acted as a
        // gateway (the ETSI suite and most brokers use 504, not 503).
        ErrorKind::LdContextNotAvailable => StatusCode::GATEWAY_TIMEOUT,
        ErrorKind::NoMultiTenantSupport => StatusCode::NOT_IMPLEMENTED,
        ErrorKind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorKind::NotAcceptable => StatusCode::NOT_ACCEPTABLE,
        ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
    }
}

/// The ProblemDetails body of an NGSI-LD error.
pub fn problem_body(error: &NgsiError) -> serde_json::Value {
    json!({
        "type": error.kind.type_uri(),
        "title": title_of(error.kind),
        "detail": error.detail,
    })
}

fn title_of(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::InvalidRequest => "Invalid request",
        ErrorKind::BadRequestData => "Bad request data",
        ErrorKind::AlreadyExists => "Already exists",
        ErrorKind::OperationNotSupported => "Operation not supported",
        ErrorKind::ResourceNotFound => "Resource not found",
        ErrorKind::InternalError => "Internal error",
        ErrorKind::TooComplexQuery => "Too complex query",
        ErrorKind::TooManyResults => "Too many results",
        ErrorKind::LdContextNotAvailable => "@context not available",
        ErrorKind::NoMultiTenantSupport => "No multi-tenant support",
        ErrorKind::NonexistentTenant => "Nonexistent tenant",
        ErrorKind::Conflict => "Conflict",
        ErrorKind::UnsupportedMediaType => "Unsupported media type",
        ErrorKind::NotAcceptable => "Not acceptable",
        ErrorKind::PayloadTooLarge => "Payload too large",
        ErrorKind::UnprocessableContent => "Unprocessable content",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let error = match self.0 {
            BrokerError::Ngsi(error) => error,
            BrokerError::Store(error) => {
                // Internal causes are logged, never sent to the client.
                tracing::error!(error = %error, "storage failure");
                NgsiError::internal("the broker could not complete the request; see its log")
            }
        };
        let status = status_of(error.kind);
        let mut response = (status, axum::Json(problem_body(&error))).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        response
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
