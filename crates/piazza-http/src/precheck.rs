//! What is decided from the request line and headers alone, before routing
//! and before any tenant or resource is looked up (clause 6.3.4): a body
//! without `Content-Length` (411), a body in a media type the API does not
//! read (415), an `Accept` the API cannot satisfy (406), and query
//! parameters an endpoint does not define (400 InvalidRequest).
//!
//! Doing this ahead of the handlers gives every endpoint the same answers,
//! including endpoints this broker does not serve yet: the representation
//! and the parameters of a request are wrong whatever its target is.

use axum::extract::Request;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use piazza_ngsild::ErrorKind;

use crate::error::{ApiError, ApiResult};
use crate::extract::{negotiate, not_acceptable, ALL_MEDIA};

/// Where the NGSI-LD API lives.
pub const API_PREFIX: &str = "/ngsi-ld/v1/";

pub async fn precheck(request: Request, next: Next) -> Response {
    let Some(path) = request.uri().path().strip_prefix(API_PREFIX) else {
        return next.run(request).await;
    };
    let segments: Vec<&str> = path.split('/').collect();
    let method = request.method();
    if has_body(method) && !request.headers().contains_key(header::CONTENT_LENGTH) {
        // Deliberately bare: a 411 asks the client to resend, nothing to explain.
        return StatusCode::LENGTH_REQUIRED.into_response();
    }
    let verdict = content_type(method, request.headers())
        .and_then(|()| acceptable(method, &segments, request.headers()))
        .and_then(|()| match unserved_endpoint_parameters(method, &segments) {
            Some(known) => reject_unknown(request.uri().query(), known),
            None => Ok(()),
        });
    match verdict {
        Ok(()) => next.run(request).await,
        Err(error) => error.into_response(),
    }
}

fn has_body(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH].contains(method)
}

/// Bodies are JSON, JSON-LD or, for PATCH, JSON merge patch (clause 6.3.4).
/// A missing `Content-Type` is left to the body extractor, which knows
/// whether the endpoint reads a body at all.
fn content_type(method: &Method, headers: &HeaderMap) -> ApiResult<()> {
    if !has_body(method) {
        return Ok(());
    }
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return Ok(());
    };
    let media = value
        .to_str()
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let supported = match media.as_str() {
        "application/json" | "application/ld+json" => true,
        "application/merge-patch+json" => method == Method::PATCH,
        _ => false,
    };
    if supported {
        Ok(())
    } else {
        Err(ApiError::new(
            ErrorKind::UnsupportedMediaType,
            format!("content type '{media}' is not supported on {method}; use application/json or application/ld+json"),
        ))
    }
}

/// Requests answered with a representation must accept one the endpoint
/// offers. GeoJSON is only offered where entities are returned.
fn acceptable(method: &Method, segments: &[&str], headers: &HeaderMap) -> ApiResult<()> {
    let answers_with_body = method == Method::GET || segments.last() == Some(&"query");
    if !answers_with_body {
        return Ok(());
    }
    let accept = headers.get(header::ACCEPT).and_then(|a| a.to_str().ok());
    let offers = if offers_geojson(method, segments) {
        &ALL_MEDIA[..]
    } else {
        &ALL_MEDIA[..2]
    };
    match negotiate(accept, offers) {
        Some(_) => Ok(()),
        None => Err(not_acceptable(accept.unwrap_or(""))),
    }
}

pub fn offers_geojson(method: &Method, segments: &[&str]) -> bool {
    matches!(
        (method, segments),
        (&Method::GET, ["entities"] | ["entities", _]) | (&Method::POST, ["entityOperations", "query"])
    )
}

/// Fails with InvalidRequest on a query parameter not in `known`
/// (clause 6.3.x: an unknown parameter makes the request invalid).
pub fn reject_unknown(query: Option<&str>, known: &[&str]) -> ApiResult<()> {
    let query = query.unwrap_or("");
    for (name, _) in form_urlencoded::parse(query.as_bytes()) {
        if !known.contains(&name.as_ref()) {
            return Err(ApiError::invalid_request(format!("unknown query parameter '{name}'")));
        }
    }
    Ok(())
}

const TEMPORAL_QUERY: &[&str] = &[
    "id",
    "idPattern",
    "type",
    "attrs",
    "pick",
    "omit",
    "q",
    "csf",
    "georel",
    "geometry",
    "coordinates",
    "geoproperty",
    "timeproperty",
    "timerel",
    "timeAt",
    "endTimeAt",
    "lastN",
    "limit",
    "offset",
    "count",
    "options",
    "format",
    "lang",
    "scopeQ",
    "datasetId",
    "aggrMethods",
    "aggrPeriodDuration",
    "local",
    "via",
    "containedBy",
    "join",
    "joinLevel",
    "expandValues",
    "orderBy",
];
const REGISTRATION_QUERY: &[&str] = &[
    "id",
    "idPattern",
    "type",
    "attrs",
    "q",
    "csf",
    "georel",
    "geometry",
    "coordinates",
    "geoproperty",
    "timeproperty",
    "timerel",
    "timeAt",
    "endTimeAt",
    "limit",
    "offset",
    "count",
    "options",
    "local",
];
const PAGING: &[&str] = &["limit", "offset", "count"];

/// The query parameters the specification (clause 6) defines for the
/// collection endpoints this broker has no handler for yet. Endpoints with a
/// handler check their own parameters; remove an entry when its handler lands.
fn unserved_endpoint_parameters(method: &Method, segments: &[&str]) -> Option<&'static [&'static str]> {
    match (method, segments) {
        (&Method::GET, ["temporal", "entities"]) => Some(TEMPORAL_QUERY),
        (&Method::GET, ["csourceRegistrations"]) => Some(REGISTRATION_QUERY),
        (&Method::GET, ["csourceSubscriptions"]) => Some(PAGING),
        (&Method::POST, ["temporal", "entities"] | ["csourceRegistrations"] | ["csourceSubscriptions"]) => Some(&[]),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(header::HeaderName, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.insert(name.clone(), HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn bodies_must_be_json_like() {
        let xml = headers(&[(header::CONTENT_TYPE, "application/xml")]);
        assert!(content_type(&Method::POST, &xml).is_err());
        assert!(content_type(&Method::GET, &xml).is_ok(), "GET bodies are ignored");
        let ld = headers(&[(header::CONTENT_TYPE, "application/ld+json; charset=utf-8")]);
        assert!(content_type(&Method::PUT, &ld).is_ok());
        let merge = headers(&[(header::CONTENT_TYPE, "application/merge-patch+json")]);
        assert!(content_type(&Method::PATCH, &merge).is_ok());
        assert!(content_type(&Method::POST, &merge).is_err());
        assert!(
            content_type(&Method::POST, &HeaderMap::new()).is_ok(),
            "left to the extractor"
        );
    }

    #[test]
    fn geojson_is_offered_only_where_entities_are_returned() {
        let geo = headers(&[(header::ACCEPT, "application/geo+json")]);
        assert!(acceptable(&Method::GET, &["entities", "urn:x"], &geo).is_ok());
        assert!(acceptable(&Method::POST, &["entityOperations", "query"], &geo).is_ok());
        assert!(acceptable(&Method::GET, &["subscriptions", "urn:x"], &geo).is_err());
        assert!(acceptable(&Method::GET, &["temporal", "entities"], &geo).is_err());
        let xml = headers(&[(header::ACCEPT, "application/xml")]);
        assert!(acceptable(&Method::GET, &["csourceSubscriptions"], &xml).is_err());
        assert!(
            acceptable(&Method::DELETE, &["entities", "urn:x"], &xml).is_ok(),
            "204 has no representation"
        );
    }

    #[test]
    fn unknown_parameters_are_invalid_requests() {
        assert!(reject_unknown(Some("limit=5&count=true"), PAGING).is_ok());
        let error = reject_unknown(Some("invalidParams=invalidValue"), PAGING).err();
        assert_eq!(error.map(|e| e.0.kind()), Some(ErrorKind::InvalidRequest));
        assert!(reject_unknown(None, &[]).is_ok());
        assert_eq!(
            unserved_endpoint_parameters(&Method::POST, &["csourceRegistrations"]),
            Some(&[][..])
        );
        // Served endpoints check their own parameters.
        assert_eq!(unserved_endpoint_parameters(&Method::POST, &["subscriptions"]), None);
        assert_eq!(unserved_endpoint_parameters(&Method::GET, &["entities"]), None);
    }
}
