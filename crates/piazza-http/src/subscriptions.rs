//! `/subscriptions` (clauses 6.10, 6.11): subscription management.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use piazza_broker::subscriptions::SubscriptionContext;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, LocalContext, Meta};
use crate::params::Params;
use crate::respond::{created, Responder};
use crate::AppState;

const SUBSCRIPTIONS_PATH: &str = "/ngsi-ld/v1/subscriptions/";

pub async fn create(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    RawQuery(raw): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    Params::parse(raw.as_deref())?.allow_only(&[])?;
    let origin = match body.local_context(&body.value, &meta)? {
        None => SubscriptionContext::Core,
        Some(LocalContext::Link(url)) => SubscriptionContext::Link(url.to_owned()),
        Some(LocalContext::Inline(value)) => SubscriptionContext::Inline(value.clone()),
    };
    let id = state
        .broker
        .create_subscription(&meta.tenant, body.value, origin)
        .await?;
    Ok(created(&format!("{SUBSCRIPTIONS_PATH}{id}")))
}

/// The responder for a subscription: its own @context.
fn responder(meta: &Meta, subscription: &Map<String, Value>) -> ApiResult<Responder> {
    let media = meta.accept(false)?;
    let context = subscription.get("jsonldContext").and_then(Value::as_str);
    Ok(Responder::new(media, context))
}

pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    Params::parse(raw.as_deref())?.allow_only(&[])?;
    meta.accept(false)?;
    let subscription = state.broker.subscription(&meta.tenant, &id).await?;
    let responder = responder(&meta, &subscription)?;
    Ok(responder.object(StatusCode::OK, subscription))
}

pub async fn query(State(state): State<Arc<AppState>>, meta: Meta, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&["limit", "offset", "count"])?;
    let media = meta.accept(false)?;
    let limit = match params.number("limit")? {
        None => state.broker.limits().default_page_size,
        Some(n) if n < 0 => return Err(ApiError::bad_request("limit must not be negative")),
        Some(n) => (n as usize).min(state.broker.limits().max_page_size),
    };
    let offset = match params.number("offset")? {
        Some(n) if n < 0 => return Err(ApiError::bad_request("offset must not be negative")),
        n => n.unwrap_or(0) as usize,
    };
    let all = state.broker.subscriptions(&meta.tenant).await?;
    let total = all.len();
    let page: Vec<_> = all.into_iter().skip(offset).take(limit).collect();
    let mut response = Responder::new(media, None).list(StatusCode::OK, page);
    if params.flag("count")? {
        response.headers_mut().insert("NGSILD-Results-Count", total.into());
    }
    Ok(response)
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    body: JsonBody,
) -> ApiResult<Response> {
    body.local_context(&body.value, &meta)?;
    state.broker.update_subscription(&meta.tenant, &id, body.value).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete(State(state): State<Arc<AppState>>, meta: Meta, Path(id): Path<String>) -> ApiResult<Response> {
    state.broker.delete_subscription(&meta.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
