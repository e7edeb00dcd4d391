//! Response bodies in the negotiated media type, with the @context where
//! the spec puts it: in a `Link` header for JSON, in the body for JSON-LD.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use piazza_ngsild::jsonld::CORE_CONTEXT_URL;
use serde_json::{Map, Value};

use crate::extract::{MediaType, JSONLD_CONTEXT_REL};
use crate::params::Params;
use piazza_broker::piazza_store::Page;

/// How to send entity-shaped bodies back to one requester.
pub struct Responder {
    pub media: MediaType,
    /// GeoJSON bodies without `@context` (the context goes in a Link header).
    pub geojson_without_context: bool,
    /// The requester's @context: a URL (Link or core) or an inline value.
    pub context: Value,
}

impl Responder {
    pub fn new(media: MediaType, link: Option<&str>) -> Self {
        Self {
            media,
            geojson_without_context: false,
            context: Value::String(link.unwrap_or(CORE_CONTEXT_URL).to_owned()),
        }
    }

    /// The `@context` each object of a body carries: only in JSON-LD.
    pub fn body_context(&self) -> Option<&Value> {
        (self.media == MediaType::JsonLd).then_some(&self.context)
    }

    /// One object (an entity, a type, ...).
    pub fn object(&self, status: StatusCode, mut body: Map<String, Value>) -> Response {
        if let Some(context) = self.body_context() {
            body.insert("@context".into(), context.clone());
        }
        self.send(status, Value::Object(body))
    }

    /// A list of objects; each carries the @context in JSON-LD.
    pub fn list(&self, status: StatusCode, items: Vec<Map<String, Value>>) -> Response {
        let items = items
            .into_iter()
            .map(|mut item| {
                if let Some(context) = self.body_context() {
                    item.insert("@context".into(), context.clone());
                }
                Value::Object(item)
            })
            .collect();
        self.send(status, Value::Array(items))
    }

    /// A GeoJSON document (Feature or FeatureCollection).
    pub fn geojson(&self, status: StatusCode, mut body: Map<String, Value>) -> Response {
        if !self.geojson_without_context {
            body.insert("@context".into(), self.context.clone());
        }
        self.send(status, Value::Object(body))
    }

    pub fn send(&self, status: StatusCode, body: Value) -> Response {
        self.with_headers((status, axum::Json(body)).into_response())
    }

    /// A body already written as JSON text.
    pub fn send_json(&self, status: StatusCode, body: Vec<u8>) -> Response {
        self.with_headers((status, body).into_response())
    }

    /// The response with this requester's media type and, where the spec
    /// puts it there, the @context `Link` header.
    fn with_headers(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(self.media.as_str()));
        if self.media == MediaType::Json || (self.media == MediaType::GeoJson && self.geojson_without_context) {
            if let Some(link) = self.context.as_str().and_then(link_header) {
                headers.insert(header::LINK, link);
            }
        }
        response
    }
}

/// A `Link` header naming a JSON-LD context.
pub fn link_header(url: &str) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "<{url}>; rel=\"{JSONLD_CONTEXT_REL}\"; type=\"application/ld+json\""
    ))
    .ok()
}

/// 201 Created with a Location.
pub fn created(location: &str) -> Response {
    let mut response = StatusCode::CREATED.into_response();
    if let Ok(value) = HeaderValue::from_str(location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    response
}

/// `Link` headers to the previous and next pages (clause 4.12): the same
/// query with another offset, parameters in alphabetical order; `more` says
/// whether anything follows this page.
pub fn pagination_links(
    base_path: &str,
    params: &Params,
    page: Page,
    more: bool,
    media_type: &str,
) -> Vec<HeaderValue> {
    if page.limit == 0 {
        return Vec::new();
    }
    let link = |offset: usize, rel: &str| {
        let mut pairs: Vec<(String, String)> = params
            .pairs()
            .iter()
            .filter(|(k, _)| k != "offset" && k != "limit")
            .cloned()
            .collect();
        pairs.push(("limit".into(), page.limit.to_string()));
        pairs.push(("offset".into(), offset.to_string()));
        pairs.sort();
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let path = base_path.trim_end_matches('/');
        HeaderValue::from_str(&format!(
            "<{path}?{}>; rel=\"{rel}\"; type=\"{media_type}\"",
            query.join("&")
        ))
        .ok()
    };
    let mut links = Vec::new();
    if page.offset > 0 {
        links.extend(link(page.offset.saturating_sub(page.limit), "prev"));
    }
    if more {
        links.extend(link(page.offset + page.limit, "next"));
    }
    links
}
