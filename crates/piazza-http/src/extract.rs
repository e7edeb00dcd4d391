//! What every NGSI-LD request carries besides its path: the tenant, the
//! user @context (Link header or body), the accepted representation, and a
//! JSON body checked against its media type and size limit.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, Method};
use piazza_ngsild::{ActiveContext, ErrorKind};
use piazza_store::Tenant;
use serde_json::Value;

use crate::error::ApiError;
use crate::AppState;

pub const TENANT_HEADER: &str = "NGSILD-Tenant";
pub const JSONLD_CONTEXT_REL: &str = "http://www.w3.org/ns/json-ld#context";

/// Media types the API answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MediaType {
    Json,
    JsonLd,
    GeoJson,
}

impl MediaType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Json => "application/json",
            Self::JsonLd => "application/ld+json",
            Self::GeoJson => "application/geo+json",
        }
    }
}

/// The request's metadata.
pub struct Meta {
    pub tenant: Tenant,
    /// The URL of the `Link` header's context, if any.
    pub link: Option<String>,
    /// The raw `Accept` header.
    accept: Option<String>,
    /// `Prefer: body=json`: GeoJSON without `@context` in the body (clause 6.3.x).
    pub prefer_body_json: bool,
    /// `Prefer: ngsi-ld=<version>` (clause 6.3.6): the version asked for.
    pub prefer_version: Option<String>,
}

impl Meta {
    /// Chooses the response media type from `Accept` (clause 6.3.4):
    /// JSON, then JSON-LD, then (where `geo_allowed`) GeoJSON.
    pub fn accept(&self, geo_allowed: bool) -> Result<MediaType, ApiError> {
        let offers: &[MediaType] = if geo_allowed { &ALL_MEDIA } else { &ALL_MEDIA[..2] };
        negotiate(self.accept.as_deref(), offers).ok_or_else(|| not_acceptable(self.accept.as_deref().unwrap_or("")))
    }
}

/// Every media type the API can answer with, in the server's order of preference.
pub const ALL_MEDIA: [MediaType; 3] = [MediaType::Json, MediaType::JsonLd, MediaType::GeoJson];

pub fn not_acceptable(accept: &str) -> ApiError {
    ApiError::new(
        ErrorKind::NotAcceptable,
        format!("none of the accepted media types ({accept}) is served here"),
    )
}

/// Proactive negotiation (RFC 9110, 12.5.1): each offer gets the weight of
/// the most specific range that matches it (`type/subtype` over `type/*`
/// over `*/*`); the heaviest offer wins, ties go to the first offer, and a
/// weight of 0 refuses. A missing or blank header accepts anything. A
/// malformed weight counts as 1, as a lenient server should.
pub fn negotiate(accept: Option<&str>, offers: &[MediaType]) -> Option<MediaType> {
    let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
        return offers.first().copied();
    };
    let ranges: Vec<(String, f32)> = accept
        .split(',')
        .filter_map(|range| {
            let mut pieces = range.split(';');
            let media = pieces.next()?.trim().to_ascii_lowercase();
            let quality = pieces
                .filter_map(|p| {
                    let (name, value) = p.split_once('=')?;
                    (name.trim().eq_ignore_ascii_case("q")).then(|| value.trim().parse::<f32>().unwrap_or(1.0))
                })
                .next()
                .unwrap_or(1.0);
            (!media.is_empty()).then_some((media, quality))
        })
        .collect();
    let weight = |offer: MediaType| -> f32 {
        let name = offer.as_str();
        let kind = name.split('/').next().unwrap_or("");
        let mut best: Option<(u8, f32)> = None;
        for (media, quality) in &ranges {
            let specificity = if media == name {
                3
            } else if media.strip_suffix("/*") == Some(kind) {
                2
            } else if media == "*/*" {
                1
            } else {
                continue;
            };
            if best.is_none_or(|(s, _)| specificity > s) {
                best = Some((specificity, *quality));
            }
        }
        best.map_or(0.0, |(_, q)| q)
    };
    let mut chosen: Option<(f32, MediaType)> = None;
    for &offer in offers {
        let q = weight(offer);
        if q > 0.0 && chosen.is_none_or(|(best, _)| q > best) {
            chosen = Some((q, offer));
        }
    }
    chosen.map(|(_, media)| media)
}

impl FromRequestParts<Arc<AppState>> for Meta {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let tenant = match header_text(&parts.headers, TENANT_HEADER)? {
            Some(name) => Tenant::parse(name)?,
            None => Tenant::default(),
        };
        let link = context_link(&parts.headers)?;
        let accept = header_text(&parts.headers, header::ACCEPT.as_str())?.map(str::to_owned);
        let prefer = header_text(&parts.headers, "Prefer")?;
        let prefer_body_json = prefer.is_some_and(|p| p.split([',', ';']).any(|token| token.trim() == "body=json"));
        Ok(Meta {
            tenant,
            link,
            accept,
            prefer_body_json,
            prefer_version: prefer.and_then(preferred_version),
        })
    }
}

/// The `ngsi-ld` preference of a `Prefer` header (RFC 7240): a
/// comma-separated list of `name[=value]` with `;` parameters; names are
/// case-insensitive and values may be quoted.
fn preferred_version(prefer: &str) -> Option<String> {
    prefer.split(',').find_map(|preference| {
        let head = preference.split(';').next()?;
        let (name, value) = head.split_once('=')?;
        let value = value.trim().trim_matches('"');
        (name.trim().eq_ignore_ascii_case("ngsi-ld") && !value.is_empty()).then(|| value.to_owned())
    })
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    // Two values would make the request ambiguous (which tenant?).
    if headers.get_all(name).iter().nth(1).is_some() {
        return Err(ApiError::bad_request(format!("header {name} is given more than once")));
    }
    match headers.get(name) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .map(Some)
            .map_err(|_| ApiError::bad_request(format!("header {name} is not valid text"))),
    }
}

/// The URL of the JSON-LD context `Link` header (clause 6.3.5).
fn context_link(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let mut found = None;
    for value in headers.get_all(header::LINK) {
        let text = value
            .to_str()
            .map_err(|_| ApiError::bad_request("Link header is not valid text"))?;
        for link in text.split(',') {
            let link = link.trim();
            let Some(rest) = link.strip_prefix('<') else {
                return Err(ApiError::bad_request(format!("invalid Link header '{link}'")));
            };
            let Some((url, params)) = rest.split_once('>') else {
                return Err(ApiError::bad_request(format!("invalid Link header '{link}'")));
            };
            let is_context = params.split(';').any(|p| {
                p.trim()
                    .strip_prefix("rel=")
                    .is_some_and(|rel| rel.trim_matches('"') == JSONLD_CONTEXT_REL)
            });
            if is_context {
                if found.is_some() {
                    return Err(ApiError::bad_request("more than one JSON-LD context Link header"));
                }
                if !piazza_ngsild::entity::is_uri(url) {
                    return Err(ApiError::bad_request(format!(
                        "Link header context '{url}' is not a URI"
                    )));
                }
                found = Some(url.to_owned());
            }
        }
    }
    Ok(found)
}

/// A JSON request body, checked against its `Content-Type`.
pub struct JsonBody {
    pub value: Value,
    /// Whether it was sent as `application/ld+json` (its @context is inline).
    pub json_ld: bool,
}

impl FromRequest<Arc<AppState>> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &Arc<AppState>) -> Result<Self, Self::Rejection> {
        let method = request.method().clone();
        let content_type = header_text(request.headers(), header::CONTENT_TYPE.as_str())?
            .map(|c| c.split(';').next().unwrap_or("").trim().to_ascii_lowercase());
        let json_ld = match content_type.as_deref() {
            Some("application/json") => false,
            Some("application/ld+json") => true,
            // A merge patch is how NGSI-LD PATCH bodies work anyway.
            Some("application/merge-patch+json") if method == Method::PATCH => false,
            Some(other) => {
                return Err(ApiError::new(
                    ErrorKind::UnsupportedMediaType,
                    format!("content type {other} is not supported here; use application/json or application/ld+json"),
                ))
            }
            None => {
                return Err(ApiError::new(
                    ErrorKind::UnsupportedMediaType,
                    "a Content-Type header (application/json or application/ld+json) is required",
                ))
            }
        };
        let limit = state.max_body_bytes;
        let bytes = axum::body::to_bytes(request.into_body(), limit).await.map_err(|e| {
            let too_large = std::error::Error::source(&e).is_some_and(|s| s.to_string().contains("length limit"))
                || e.to_string().contains("length limit");
            if too_large {
                ApiError::new(
                    ErrorKind::PayloadTooLarge,
                    format!("request bodies are limited to {limit} bytes"),
                )
            } else {
                ApiError::invalid_request(format!("cannot read the request body: {e}"))
            }
        })?;
        let value = parse_json(&bytes)?;
        Ok(JsonBody { value, json_ld })
    }
}

fn parse_json(bytes: &Bytes) -> Result<Value, ApiError> {
    if bytes.is_empty() {
        return Err(ApiError::invalid_request("the request body is empty"));
    }
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::invalid_request(format!("the request body is not valid JSON: {e}")))
}

impl JsonBody {
    /// The user context a body item is to be read with: its inline
    /// `@context` (ld+json), else the `Link` header's.
    pub fn local_context<'a>(&self, item: &'a Value, meta: &'a Meta) -> Result<Option<LocalContext<'a>>, ApiError> {
        let inline = item.get("@context");
        if self.json_ld {
            if meta.link.is_some() {
                return Err(ApiError::bad_request(
                    "a JSON-LD context Link header must not be sent with application/ld+json",
                ));
            }
            return match inline {
                Some(context) => Ok(Some(LocalContext::Inline(context))),
                None => Err(ApiError::bad_request(
                    "an application/ld+json body must contain an @context",
                )),
            };
        }
        if inline.is_some() {
            return Err(ApiError::bad_request(
                "an application/json body must not contain @context; send it in a Link header",
            ));
        }
        Ok(meta.link.as_deref().map(LocalContext::Link))
    }
}

/// Where a request's user context comes from.
pub enum LocalContext<'a> {
    Inline(&'a Value),
    Link(&'a str),
}

impl LocalContext<'_> {
    pub fn to_value(&self) -> Value {
        match self {
            Self::Inline(v) => (*v).clone(),
            Self::Link(url) => Value::String((*url).to_owned()),
        }
    }
}

/// The active context of a request without a body (Link header or core).
pub async fn link_context(state: &AppState, meta: &Meta) -> Result<Arc<ActiveContext>, ApiError> {
    let local = meta.link.as_ref().map(|url| Value::String(url.clone()));
    Ok(state.broker.context(&meta.tenant, local.as_ref()).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const JSON: MediaType = MediaType::Json;
    const LD: MediaType = MediaType::JsonLd;

    fn pick(accept: &str, geo: bool) -> Option<MediaType> {
        negotiate(Some(accept), if geo { &ALL_MEDIA } else { &ALL_MEDIA[..2] })
    }

    #[test]
    fn negotiation_follows_rfc_9110() {
        assert_eq!(negotiate(None, &ALL_MEDIA), Some(JSON));
        assert_eq!(pick("*/*", true), Some(JSON));
        assert_eq!(pick("application/ld+json, application/json", true), Some(JSON));
        assert_eq!(pick("application/geo+json, application/json", true), Some(JSON));
        assert_eq!(
            pick("application/json;q=0.1, application/ld+json;q=0.9", true),
            Some(LD)
        );
        assert_eq!(pick("application/ld+json", true), Some(LD));
        assert_eq!(pick("application/json;q=0, */*", true), Some(LD));
        assert_eq!(pick("application/json;q=0, application/ld+json", true), Some(LD));
        assert_eq!(pick("*/*;q=0.9, application/ld+json;q=0.8", true), Some(JSON));
        assert_eq!(pick("application/ld+json;q=notanumber", true), Some(LD));
        assert_eq!(pick("application/xml", true), None);
        assert_eq!(pick("application/geo+json", true), Some(MediaType::GeoJson));
        assert_eq!(pick("application/geo+json", false), None);
        assert_eq!(
            pick("application/geo+json;q=0.9, application/ld+json;q=0.1", false),
            Some(LD)
        );
        assert_eq!(pick("application/*", false), Some(JSON));
    }
}
