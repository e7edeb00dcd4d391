//! `/entityOperations`: batch create, upsert, update, delete, merge, and
//! the query-by-POST (clauses 6.14 to 6.18, 6.31).

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use piazza_broker::{BatchItem, BatchSuccess, BrokerError, Payload};
use piazza_ngsild::query::{EntityQuery, GeoQuery, Query, ScopeQuery, TypeSelector};
use serde_json::{json, Value};

use crate::entities::{payload, View};
use crate::error::{problem_body, ApiError, ApiResult};
use crate::extract::{JsonBody, Meta};
use crate::params::{self, Params};
use crate::AppState;

/// The entities of a batch, each read with its own context. Items whose
/// context is wrong fail alone (they are returned as errors), but a body
/// that is not a non-empty array of objects fails the whole request.
async fn payloads(state: &AppState, meta: &Meta, body: &JsonBody) -> ApiResult<(Vec<Payload>, Vec<BatchItem>)> {
    let Value::Array(items) = &body.value else {
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
        match payload(state, meta, body, item).await {
            Ok(payload) => payloads.push(payload),
            Err(ApiError(BrokerError::Ngsi(error))) => failed.push(BatchItem {
                entity_id: item.get("id").and_then(Value::as_str).unwrap_or_default().to_owned(),
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
    let (payloads, failed) = payloads(&state, &meta, &body).await?;
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
    let (payloads, failed) = payloads(&state, &meta, &body).await?;
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
    let (payloads, failed) = payloads(&state, &meta, &body).await?;
    let mut items = state.broker.batch_update(&meta.tenant, payloads, no_overwrite).await?;
    items.extend(failed);
    Ok(no_content_or_207(&items))
}

pub async fn merge(State(state): State<Arc<AppState>>, meta: Meta, body: JsonBody) -> ApiResult<Response> {
    let (payloads, failed) = payloads(&state, &meta, &body).await?;
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
    let mut view = View::new(&state, &meta, &params).await?;
    view.context = context.clone();
    if let Some(inline) = local.filter(|_| body.json_ld) {
        view.responder.context = inline;
    }
    let Value::Object(request) = &body.value else {
        return Err(ApiError::bad_request("the body must be a Query object"));
    };
    if request.get("type").and_then(Value::as_str) != Some("Query") {
        return Err(ApiError::bad_request("the body's type must be \"Query\""));
    }
    let mut query = EntityQuery::default();
    let mut alternatives = Vec::new();
    if let Some(entities) = request.get("entities") {
        let Value::Array(selectors) = entities else {
            return Err(ApiError::bad_request("entities must be an array"));
        };
        for selector in selectors {
            alternatives.push(entity_selector(selector, &context)?);
        }
    }
    if let Some(attrs) = request.get("attrs") {
        let names = string_list(attrs, "attrs")?;
        query.attrs = params::expand_names(&names, &context)?;
        view.projection.pick = Some(query.attrs.clone());
    }
    if let Some(q) = request.get("q") {
        let text = q.as_str().ok_or_else(|| ApiError::bad_request("q must be a string"))?;
        query.q = Some(Query::parse(text, &context)?);
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
    if let Some(lang) = request.get("lang").and_then(Value::as_str) {
        view.options.lang = Some(lang.to_owned());
    }
    if alternatives.is_empty() && query.attrs.is_empty() && query.q.is_none() && query.geo.is_none() {
        return Err(ApiError::bad_request("a query needs entities, attrs, q or geoQ"));
    }
    let page = params::page(&params, state.broker.limits())?;
    let result = if alternatives.len() <= 1 {
        if let Some(selector) = alternatives.pop() {
            query.ids = selector.ids;
            query.id_pattern = selector.id_pattern;
            query.types = selector.types;
        }
        state.broker.query(&meta.tenant, query, page).await?
    } else {
        // Several selectors: any of them, combined with the common filters.
        let combined = AnyOf {
            selectors: alternatives,
            common: query,
        };
        state.broker.query(&meta.tenant, combined.into_query(), page).await?
    };
    let total = result.total;
    let mut response = view.many(result.entities);
    if let Some(total) = total {
        response.headers_mut().insert("NGSILD-Results-Count", total.into());
    }
    Ok(response)
}

fn entity_selector(selector: &Value, context: &piazza_ngsild::ActiveContext) -> ApiResult<EntityQuery> {
    let Value::Object(members) = selector else {
        return Err(ApiError::bad_request("each entities item must be an object"));
    };
    let mut query = EntityQuery::default();
    if let Some(id) = members.get("id") {
        let id = id.as_str().filter(|s| piazza_ngsild::entity::is_uri(s));
        query.ids = vec![id
            .ok_or_else(|| ApiError::bad_request("entities id must be a URI"))?
            .to_owned()];
    }
    if let Some(pattern) = members.get("idPattern") {
        let pattern = pattern
            .as_str()
            .ok_or_else(|| ApiError::bad_request("idPattern must be a string"))?;
        query.id_pattern = Some(params::compile_pattern(pattern)?);
    }
    match members.get("type") {
        Some(Value::String(t)) => query.types = Some(TypeSelector::parse(t, context)?),
        Some(_) => return Err(ApiError::bad_request("entities type must be a string")),
        None => {}
    }
    Ok(query)
}

fn string_list(value: &Value, name: &str) -> ApiResult<Vec<String>> {
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

/// Several entity selectors of one query. Expressed with an id pattern and
/// type union when possible; the general case filters ids in a q-less way.
struct AnyOf {
    selectors: Vec<EntityQuery>,
    common: EntityQuery,
}

impl AnyOf {
    fn into_query(self) -> EntityQuery {
        let mut query = self.common;
        let mut types = Vec::new();
        let mut ids = Vec::new();
        let mut patterns = Vec::new();
        for selector in self.selectors {
            if let Some(t) = selector.types {
                types.push(t);
            }
            ids.extend(selector.ids);
            if let Some(p) = selector.id_pattern {
                patterns.push(format!("(?:{})", p.as_str()));
            }
        }
        if !types.is_empty() {
            query.types = Some(TypeSelector::Or(types));
        }
        query.ids = ids;
        if !patterns.is_empty() {
            query.id_pattern = regex::Regex::new(&patterns.join("|")).ok();
        }
        query
    }
}
