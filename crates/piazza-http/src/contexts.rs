//! `/jsonldContexts`: the @context management API (clause 6.27 onwards).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use piazza_broker::HOSTED_PATH;
use piazza_store::{ContextKind, StoredContext};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, MediaType, Meta};
use crate::precheck::reject_unknown;
use crate::respond::created;
use crate::AppState;

/// The prefix of a context's `localId`.
const LOCAL_ID_PREFIX: &str = "urn:ngsi-ld:jsonldContext:";

/// The absolute URL under which a context is served to this requester.
fn public_url(headers: &HeaderMap, context: &StoredContext) -> String {
    if context.kind == ContextKind::Cached {
        return context.url.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}{HOSTED_PATH}{}", context.id)
}

/// The metadata of a context (clause 5.2.41). Usage counters are optional
/// and not kept.
fn details(headers: &HeaderMap, context: &StoredContext) -> Value {
    json!({
        "URL": public_url(headers, context),
        "localId": format!("{LOCAL_ID_PREFIX}{}", context.id),
        "kind": context.kind.name(),
        "createdAt": piazza_ngsild::time::format(&context.created_at),
    })
}

/// A `true`/`false` query parameter; anything else is BadRequestData (clause 6.27).
fn flag(raw: Option<&str>, name: &str) -> ApiResult<bool> {
    let value = form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned());
    match value.as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::bad_request(format!(
            "{name} must be true or false, not '{other}'"
        ))),
    }
}

fn param(raw: Option<&str>, name: &str) -> Option<String> {
    form_urlencoded::parse(raw.unwrap_or("").as_bytes())
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// JSON with exactly the negotiated media type, no charset.
fn json_response(media: MediaType, body: Value) -> Response {
    let mut response = (StatusCode::OK, axum::Json(body)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(media.as_str()));
    response
}

pub async fn add(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    RawQuery(raw): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    reject_unknown(raw.as_deref(), &[])?;
    if !body.value.is_object() {
        return Err(ApiError::invalid_request(
            "the body must be a JSON object with an @context member",
        ));
    }
    let stored = state.broker.add_context(&meta.tenant, body.value).await?;
    // Relative, as the resource is served by whoever the client reached.
    Ok(created(&format!("{HOSTED_PATH}{}", stored.id)))
}

/// Lists contexts. Tenants need not exist: the core context is everyone's.
pub async fn list(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    reject_unknown(raw.as_deref(), &["details", "kind"])?;
    let media = meta.accept(false)?;
    let kind = match param(raw.as_deref(), "kind") {
        None => None,
        Some(k) => Some(ContextKind::from_name(&k).ok_or_else(|| {
            ApiError::bad_request(format!("kind must be Hosted, Cached or ImplicitlyCreated, not '{k}'"))
        })?),
    };
    let with_details = flag(raw.as_deref(), "details")?;
    let contexts = state.broker.list_contexts(&meta.tenant, kind).await?;
    let body: Vec<Value> = if with_details {
        contexts.iter().map(|c| details(&headers, c)).collect()
    } else {
        contexts
            .iter()
            .map(|c| Value::String(public_url(&headers, c)))
            .collect()
    };
    Ok(json_response(media, Value::Array(body)))
}

/// The id from the path: a local id (bare or as `localId`) or a URL.
fn context_id(id: &str) -> &str {
    id.strip_prefix(LOCAL_ID_PREFIX).unwrap_or(id)
}

pub async fn serve(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    headers: HeaderMap,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    reject_unknown(raw.as_deref(), &["details"])?;
    let media = meta.accept(false)?;
    let with_details = flag(raw.as_deref(), "details")?;
    let context = state.broker.stored_context(&meta.tenant, context_id(&id)).await?;
    let body = if with_details {
        details(&headers, &context)
    } else {
        context.document
    };
    Ok(json_response(media, body))
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    reject_unknown(raw.as_deref(), &["reload"])?;
    let reload = flag(raw.as_deref(), "reload")?;
    state
        .broker
        .delete_context(&meta.tenant, context_id(&id), reload)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_strict() {
        assert_eq!(flag(None, "details").ok(), Some(false));
        assert_eq!(flag(Some("details=true"), "details").ok(), Some(true));
        assert_eq!(flag(Some("details=false&kind=Hosted"), "details").ok(), Some(false));
        assert!(flag(Some("reload=xxx"), "reload").is_err());
    }

    #[test]
    fn ids_may_be_local_ids_or_urls() {
        assert_eq!(context_id("urn:ngsi-ld:jsonldContext:abc"), "abc");
        assert_eq!(context_id("abc"), "abc");
        assert_eq!(context_id("http://a/ctx.jsonld"), "http://a/ctx.jsonld");
    }
}
