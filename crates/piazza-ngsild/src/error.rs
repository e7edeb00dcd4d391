//! The NGSI-LD error vocabulary (GS CIM 009, clause 5.5.2).
//!
//! Every failure the model can detect is one of the spec's problem types. The
//! HTTP edge maps each [`ErrorKind`] to exactly one status code; nothing here
//! knows about HTTP.

use std::fmt;

/// The problem types of the NGSI-LD API, in the spec's own words.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    InvalidRequest,
    BadRequestData,
    AlreadyExists,
    OperationNotSupported,
    ResourceNotFound,
    InternalError,
    TooComplexQuery,
    TooManyResults,
    LdContextNotAvailable,
    NoMultiTenantSupport,
    NonexistentTenant,
    Conflict,
    UnsupportedMediaType,
    NotAcceptable,
    PayloadTooLarge,
    UnprocessableContent,
}

impl ErrorKind {
    /// The last path segment of the problem type URI.
    pub fn name(self) -> &'static str {
        match self {
            Self::InvalidRequest => "InvalidRequest",
            Self::BadRequestData => "BadRequestData",
            Self::AlreadyExists => "AlreadyExists",
            Self::OperationNotSupported => "OperationNotSupported",
            Self::ResourceNotFound => "ResourceNotFound",
            Self::InternalError => "InternalError",
            Self::TooComplexQuery => "TooComplexQuery",
            Self::TooManyResults => "TooManyResults",
            Self::LdContextNotAvailable => "LdContextNotAvailable",
            Self::NoMultiTenantSupport => "NoMultiTenantSupport",
            Self::NonexistentTenant => "NonexistentTenant",
            Self::Conflict => "Conflict",
            Self::UnsupportedMediaType => "UnsupportedMediaType",
            Self::NotAcceptable => "NotAcceptable",
            Self::PayloadTooLarge => "PayloadTooLarge",
            Self::UnprocessableContent => "UnprocessableContent",
        }
    }

    /// The problem type URI, as sent in ProblemDetails `type`.
    pub fn type_uri(self) -> String {
        format!("https://uri.etsi.org/ngsi-ld/errors/{}", self.name())
    }
}

/// A failure described in NGSI-LD terms: a problem type and a human message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct NgsiError {
    pub kind: ErrorKind,
    pub detail: String,
}

impl NgsiError {
    pub fn new(kind: ErrorKind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
        }
    }
    pub fn bad_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequestData, detail)
    }
    pub fn invalid_request(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InvalidRequest, detail)
    }
    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::ResourceNotFound, detail)
    }
    pub fn already_exists(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::AlreadyExists, detail)
    }
    pub fn internal(detail: impl Into<String>) -> Self {
        Self::new(ErrorKind::InternalError, detail)
    }
}

impl fmt::Display for NgsiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.name(), self.detail)
    }
}

pub type Result<T, E = NgsiError> = std::result::Result<T, E>;
