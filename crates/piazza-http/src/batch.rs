//! `/entityOperations`: batch create, upsert, update, delete, merge, and
//! the query-by-POST (clauses 6.14 to 6.18, 6.31).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use piazza_broker::{BatchItem, BatchSuccess, BrokerError, Payload};
use piazza_ngsild::query::{Collation, EntityQuery, GeoQuery, OrderBy, Query, ScopeQuery, Selector, TypeSelector};
use serde_json::{json, Value};

use crate::entities::{payload, View};
use crate::error::{problem_body, ApiError, ApiResult};
use crate::extract::{JsonBody, Meta};
use crate::params::{self, Params};
use crate::AppState;

/// The entities of a batch, each read with its own context. Items whose
/// context is wrong fail alone (they are returned as errors), but a body
/// that is not a non-empty array of objects fails the whole request.
async fn payloads(state: &AppState, meta: &Meta, mut body: JsonBody) -> ApiResult<(Vec<Payload>, Vec<BatchItem>)> {
    let Value::Array(items) = std::mem::take(&mut body.value) else {
        return Err(ApiError::bad_request(
            "a batch operation needs a JSON array of entities",
        ));
    };
    if items.is_empty() {
        return Err(ApiError::bad_request("a batch operation needs at least one entity"));
    }
    if items.iter().any(|i| !i.is_object()) {
        return Err(ApiError::bad_request("every item of a batch must be an entity object"));
    }
    if body.json_ld && meta.link.is_some() {
        return Err(ApiError::bad_request(
            "a JSON-LD context Link header must not be sent with application/ld+json",
        ));
    }
    let mut payloads = Vec::with_capacity(items.len());
    let mut failed = Vec::new();
    for item in items {
        // Kept for the error: the item itself moves into its payload.
        let id = item.get("id").and_then(Value::as_str).unwrap_or_default().to_owned();
        match payload(state, meta, &body, item).await {
            Ok(payload) => payloads.push(payload),
            Err(ApiError(BrokerError::Ngsi(error))) => failed.push(BatchItem {
                entity_id: id,
                result: Err(error),
            }),
            Err(other) => return Err(other),
        }
    }
    Ok((payloads, failed))
}

/// BatchOperationResult (clause 5.2.16).
fn batch_result(items: &[BatchItem]) -> Value {
    let success: Vec<&str> = items
        .iter()
        .filter(|i| i.result.is_ok())
        .map(|i| i.entity_id.as_str())
        .collect();
    let errors: Vec<Value> = items
        .iter()
        .filter_map(|i| {
            i.result
                .as_ref()
                .err()
                .map(|e| json!({"entityId": i.entity_id, "error": problem_body(e)}))
        })
        .collect();
    json!({"success": success, "errors": errors})
}

fn has_errors(items: &[BatchItem]) -> bool {
    items.iter().any(|i| i.result.is_err())
}

fn multi_status(items: &[BatchItem]) -> Response {
    (StatusCode::MULTI_STATUS, axum::Json(batch_result(items))).into_response()
}

fn no_content_or_207(items: &[BatchItem]) -> Response {
    if has_errors(items) {
        multi_status(items)
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

pub async fn create(State(state): State<Arc<AppState>>, meta: Meta, body: JsonBody) -> ApiResult<Response> {
    let (payloads, failed) = payloads(&state, &meta, body).await?;
    let mut items = state.broker.batch_create(&meta.tenant, payloads).await?;
    items.extend(failed);
    if has_errors(&items) {
        return Ok(multi_status(&items));
    }
    let ids: Vec<&str> = items.iter().map(|i| i.entity_id.as_str()).collect();
    Ok((StatusCode::CREATED, axum::Json(json!(ids))).into_response())
}

pub async fn upsert(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    RawQuery(raw): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    let replace = !params.has_option("update");
    let (payloads, failed) = payloads(&state, &meta, body).await?;
    let mut items = state.broker.batch_upsert(&meta.tenant, payloads, replace).await?;
    items.extend(failed);
    if has_errors(&items) {
        return Ok(multi_status(&items));
    }
    let created: Vec<&str> = items
        .iter()
        .filter(|i| matches!(i.result, Ok(BatchSuccess::Created)))
        .map(|i| i.entity_id.as_str())
        .collect();
    if created.is_empty() {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Ok((StatusCode::CREATED, axum::Json(json!(created))).into_response())
    }
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    RawQuery(raw): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    let no_overwrite = params.has_option("noOverwrite");
    let (payloads, failed) = payloads(&state, &meta, body).await?;
    let mut items = state.broker.batch_update(&meta.tenant, payloads, no_overwrite).await?;
    items.extend(failed);
    Ok(no_content_or_207(&items))
}

pub async fn merge(State(state): State<Arc<AppState>>, meta: Meta, body: JsonBody) -> ApiResult<Response> {
    let (payloads, failed) = payloads(&state, &meta, body).await?;
    let mut items = state.broker.batch_merge(&meta.tenant, payloads).await?;
    items.extend(failed);
    Ok(no_content_or_207(&items))
}

pub async fn delete(State(state): State<Arc<AppState>>, meta: Meta, body: JsonBody) -> ApiResult<Response> {
    let Value::Array(ids) = body.value else {
        return Err(ApiError::bad_request("batch delete needs a JSON array of entity ids"));
    };
    if ids.is_empty() {
        return Err(ApiError::bad_request("batch delete needs at least one entity id"));
    }
    let items = state.broker.batch_delete(&meta.tenant, ids).await?;
    Ok(no_content_or_207(&items))
}

/// Query Entities via POST (clause 6.31): the Query data type in the body.
pub async fn query(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    RawQuery(raw): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&[
        "limit",
        "offset",
        "count",
        "options",
        "format",
        "lang",
        "geometryProperty",
        "local",
    ])?;
    let local = body.local_context(&body.value, &meta)?.map(|c| c.to_value());
    let context = state.broker.context(&meta.tenant, local.as_ref()).await?;
    let Value::Object(request) = &body.value else {
        return Err(ApiError::bad_request("the body must be a Query object"));
    };
    if request.get("type").and_then(Value::as_str) != Some("Query") {
        return Err(ApiError::bad_request("the body's type must be \"Query\""));
    }
    if request.contains_key("temporalQ") {
        return Err(ApiError::bad_request("temporalQ only applies to temporal queries"));
    }
    // Body members that mirror query parameters are read as such.
    let mut pairs: Vec<(String, String)> = params.pairs().to_vec();
    for (member, name) in [
        ("geometryProperty", "geometryProperty"),
        ("join", "join"),
        ("lang", "lang"),
    ] {
        if let Some(value) = request.get(member) {
            let text = value
                .as_str()
                .ok_or_else(|| ApiError::bad_request(format!("{member} must be a string")))?;
            pairs.push((name.into(), text.into()));
        }
    }
    if let Some(level) = request.get("joinLevel") {
        let level = level
            .as_i64()
            .ok_or_else(|| ApiError::bad_request("joinLevel must be an integer"))?;
        pairs.push(("joinLevel".into(), level.to_string()));
    }
    for member in ["pick", "omit"] {
        if let Some(value) = request.get(member) {
            let list = string_list(value, member)?;
            if list.is_empty() {
                return Err(ApiError::bad_request(format!("{member} must not be empty")));
            }
            pairs.push((member.into(), list.join(",")));
        }
    }
    let view_params = Params::from_pairs(pairs);
    let mut view = View::new(&state, &meta, &view_params).await?;
    view.context = context.clone();
    if let Some(inline) = local.filter(|_| body.json_ld) {
        view.responder.context = inline;
    }
    let mut query = EntityQuery::default();
    if let Some(entities) = request.get("entities") {
        let Value::Array(selectors) = entities else {
            return Err(ApiError::bad_request("entities must be an array"));
        };
        if selectors.is_empty() {
            return Err(ApiError::bad_request("entities must not be empty"));
        }
        for selector in selectors {
            query.alternatives.push(entity_selector(selector, &context)?);
        }
    }
    if let Some(attrs) = request.get("attrs") {
        let names = string_list(attrs, "attrs")?;
        if names.is_empty() {
            return Err(ApiError::bad_request("attrs must not be empty"));
        }
        query.attrs = params::expand_names(&names, &context)?;
        if request.contains_key("pick") || request.contains_key("omit") {
            return Err(ApiError::bad_request("attrs cannot be combined with pick or omit"));
        }
        view.shape.projection.pick = Some(query.attrs.clone());
        view.shape.projection.keep_core = true;
    }
    if let Some(q) = request.get("q") {
        let text = q.as_str().ok_or_else(|| ApiError::bad_request("q must be a string"))?;
        let parsed = Query::parse(text, &context)?;
        params::check_join_depth(parsed.link_depth(), view.join, "q")?;
        query.q = Some(parsed);
    }
    if let Some(scope) = request.get("scopeQ") {
        let text = scope
            .as_str()
            .ok_or_else(|| ApiError::bad_request("scopeQ must be a string"))?;
        query.scope = Some(ScopeQuery::parse(text)?);
    }
    if let Some(geo) = request.get("geoQ") {
        query.geo = Some(GeoQuery::from_json(geo, &context)?);
    }
    let order = request.get("ordering").map(|o| ordering(o, &context)).transpose()?;
    if query.alternatives.is_empty() && query.attrs.is_empty() && query.q.is_none() && query.geo.is_none() {
        return Err(ApiError::bad_request("a query needs entities, attrs, q or geoQ"));
    }
    let page = params::page(&params, state.broker.limits())?;
    let result = state
        .broker
        .query_ordered(&meta.tenant, query, page, order.as_ref())
        .await?;
    let total = result.total;
    let mut response = view.many(&state, &meta.tenant, result.entities).await?;
    if let Some(total) = total {
        response.headers_mut().insert("NGSILD-Results-Count", total.into());
    }
    Ok(response)
}

/// One `EntitySelector` (clause 5.2.33): `type` is mandatory; `id` (one URI
/// or an array of them) wins over `idPattern`.
pub(crate) fn entity_selector(selector: &Value, context: &piazza_ngsild::ActiveContext) -> ApiResult<Selector> {
    let Value::Object(members) = selector else {
        return Err(ApiError::bad_request("each entities item must be an object"));
    };
    let mut result = Selector::default();
    match members.get("type") {
        Some(Value::String(t)) if t == "*" => {}
        Some(Value::String(t)) => result.types = Some(TypeSelector::parse(t, context)?),
        Some(_) => return Err(ApiError::bad_request("entities type must be a string")),
        None => return Err(ApiError::bad_request("each entities item needs a type")),
    }
    if let Some(id) = members.get("id") {
        let ids: Vec<&Value> = match id {
            Value::Array(items) => items.iter().collect(),
            single => vec![single],
        };
        if ids.is_empty() {
            return Err(ApiError::bad_request("entities id must not be an empty array"));
        }
        for id in ids {
            let id = id.as_str().filter(|s| piazza_ngsild::entity::is_uri(s));
            result.ids.push(
                id.ok_or_else(|| ApiError::bad_request("entities id must be a URI or an array of URIs"))?
                    .to_owned(),
            );
        }
    } else if let Some(pattern) = members.get("idPattern") {
        let pattern = pattern
            .as_str()
            .ok_or_else(|| ApiError::bad_request("idPattern must be a string"))?;
        result.id_pattern = Some(params::compile_pattern(pattern)?);
    }
    Ok(result)
}

/// `ordering` (OrderingParams, clause 5.2.43): `orderBy` (strings),
/// `coordinates` (an array, required by distance ordering), `geometry`
/// (a string) and `collation`.
fn ordering(value: &Value, context: &piazza_ngsild::ActiveContext) -> ApiResult<OrderBy> {
    let Value::Object(members) = value else {
        return Err(ApiError::bad_request("ordering must be an object"));
    };
    let keys = members
        .get("orderBy")
        .map(|v| string_list(v, "orderBy"))
        .transpose()?
        .unwrap_or_default();
    if keys.is_empty() {
        return Err(ApiError::bad_request("ordering needs orderBy"));
    }
    let coordinates = members.get("coordinates");
    if coordinates.is_some_and(|c| !c.is_array()) {
        return Err(ApiError::bad_request("ordering coordinates must be an array"));
    }
    if members.get("geometry").is_some_and(|g| !g.is_string()) {
        return Err(ApiError::bad_request("ordering geometry must be a string"));
    }
    let collation = match members.get("collation") {
        None => Collation::default(),
        Some(Value::String(tag)) => Collation::parse(tag)?,
        Some(_) => return Err(ApiError::bad_request("ordering collation must be a string")),
    };
    Ok(OrderBy::parse(&keys.join(","), coordinates, collation, context)?)
}

pub(crate) fn string_list(value: &Value, name: &str) -> ApiResult<Vec<String>> {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| ApiError::bad_request(format!("{name} must hold strings")))
            })
            .collect(),
        Value::String(s) => Ok(s.split(',').map(str::to_owned).collect()),
        _ => Err(ApiError::bad_request(format!("{name} must be an array of strings"))),
    }
}
