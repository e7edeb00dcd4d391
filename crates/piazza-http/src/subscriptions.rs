//! `/subscriptions` (clauses 6.10, 6.11): subscription management.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use piazza_broker::subscriptions::SubscriptionContext;
use serde_json::{Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{JsonBody, LocalContext, MediaType, Meta};
use crate::params::Params;
use crate::respond::{created, pagination_links, Responder};
use crate::AppState;
use piazza_broker::piazza_store::Page;

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

/// The responder for a subscription: JSON-LD answers carry the @context
/// it was written with, JSON ones a Link to its `jsonldContext`.
fn responder(meta: &Meta, subscription: &mut Map<String, Value>) -> ApiResult<Responder> {
    let media = meta.accept(false)?;
    let written_with = subscription.remove("@context");
    let context = subscription.get("jsonldContext").and_then(Value::as_str);
    let mut responder = Responder::new(media, context);
    if let (MediaType::JsonLd, Some(written_with)) = (media, written_with) {
        responder.context = written_with;
    }
    Ok(responder)
}

/// `createdAt` and `modifiedAt` are shown with `options=sysAttrs` only.
fn hide_system_members(params: &Params, subscription: &mut Map<String, Value>) {
    if !params.options().iter().any(|o| o == "sysAttrs") {
        subscription.remove("createdAt");
        subscription.remove("modifiedAt");
    }
}

/// `Preference-Applied` for a `Prefer: ngsi-ld=<version>`: subscriptions
/// have no version fallbacks (clause 4.3.6.8), so they are served unaltered.
fn apply_version_preference(meta: &Meta, response: &mut Response) {
    if let Some(version) = &meta.prefer_version {
        if let Ok(value) = HeaderValue::from_str(&format!("ngsi-ld={version}")) {
            response.headers_mut().insert("Preference-Applied", value);
        }
    }
}

pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&["options"])?;
    meta.accept(false)?;
    let mut subscription = state.broker.subscription(&meta.tenant, &id).await?;
    hide_system_members(&params, &mut subscription);
    let responder = responder(&meta, &mut subscription)?;
    let mut response = responder.object(StatusCode::OK, subscription);
    apply_version_preference(&meta, &mut response);
    Ok(response)
}

pub async fn query(State(state): State<Arc<AppState>>, meta: Meta, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&["limit", "offset", "count", "options"])?;
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
    let page: Vec<_> = all
        .into_iter()
        .skip(offset)
        .take(limit)
        .map(|mut s| {
            s.remove("@context");
            hide_system_members(&params, &mut s);
            s
        })
        .collect();
    let returned = page.len();
    let mut response = Responder::new(media, None).list(StatusCode::OK, page);
    if params.flag("count")? {
        response.headers_mut().insert("NGSILD-Results-Count", total.into());
    }
    let window = Page {
        offset,
        limit,
        count: false,
    };
    for link in pagination_links(
        SUBSCRIPTIONS_PATH,
        &params,
        window,
        offset.saturating_add(returned) < total,
        media.as_str(),
    ) {
        response.headers_mut().append(header::LINK, link);
    }
    apply_version_preference(&meta, &mut response);
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
