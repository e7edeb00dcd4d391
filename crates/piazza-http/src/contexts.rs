//! `/jsonldContexts`: the @context management API (clause 6.27 onwards).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use piazza_broker::HOSTED_PATH;
use piazza_ngsild::jsonld::CORE_CONTEXT_URL;
use piazza_ngsild::ErrorKind;
use piazza_store::{ContextKind, StoredContext};
use serde_json::{json, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, Meta};
use crate::params::Params;
use crate::respond::created;
use crate::AppState;

/// The absolute URL under which a context is served to this requester.
fn public_url(headers: &HeaderMap, context: &StoredContext) -> String {
    if context.kind != ContextKind::Hosted {
        return context.url.clone();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    format!("http://{host}{HOSTED_PATH}{}", context.id)
}

pub async fn add(State(state): State<Arc<AppState>>, meta: Meta, body: JsonBody) -> ApiResult<Response> {
    let stored = state.broker.add_context(&meta.tenant, body.value).await?;
    Ok(created(&format!("{HOSTED_PATH}{}", stored.id)))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&["details", "kind"])?;
    meta.accept(false)?;
    let kind = match params.get("kind") {
        None => None,
        Some(k) => Some(ContextKind::from_name(k).ok_or_else(|| ApiError::bad_request(format!("unknown kind '{k}'")))?),
    };
    let contexts = state.broker.list_contexts(&meta.tenant, kind).await?;
    let body: Vec<Value> = if params.flag("details")? {
        contexts
            .iter()
            .map(|c| {
                json!({
                    "URL": public_url(&headers, c),
                    "localId": format!("urn:ngsi-ld:jsonldContext:{}", c.id),
                    "kind": c.kind.name(),
                    "createdAt": piazza_ngsild::time::format(&c.created_at),
                })
            })
            .collect()
    } else {
        contexts
            .iter()
            .map(|c| Value::String(public_url(&headers, c)))
            .collect()
    };
    Ok((StatusCode::OK, axum::Json(Value::Array(body))).into_response())
}

/// The local id from the path: a bare id or its `urn:ngsi-ld:jsonldContext:` form.
fn local_id(id: &str) -> &str {
    id.strip_prefix("urn:ngsi-ld:jsonldContext:").unwrap_or(id)
}

pub async fn serve(State(state): State<Arc<AppState>>, meta: Meta, Path(id): Path<String>) -> ApiResult<Response> {
    let document = if id == CORE_CONTEXT_URL || id == "core" {
        state.broker.core_context_document()
    } else {
        state.broker.stored_context(&meta.tenant, local_id(&id)).await?.document
    };
    let mut response = (StatusCode::OK, axum::Json(document)).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("application/ld+json"));
    Ok(response)
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&["reload"])?;
    if id == CORE_CONTEXT_URL || id == "core" {
        return Err(ApiError::new(
            ErrorKind::BadRequestData,
            "the core @context cannot be deleted",
        ));
    }
    state
        .broker
        .delete_context(&meta.tenant, local_id(&id), params.flag("reload")?)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
