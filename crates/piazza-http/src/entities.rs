//! `/entities`: create, retrieve, query, replace, merge, delete, and the
//! attribute operations (clauses 6.4 to 6.7).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use piazza_broker::Payload;
use piazza_ngsild::query::Projection;
use piazza_ngsild::query::TypeSelector;
use piazza_ngsild::render::{render_entity, render_feature, RenderOptions};
use piazza_ngsild::update::UpdateOutcome;
use piazza_ngsild::{ActiveContext, Entity, NgsiError};
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{link_context, JsonBody, MediaType, Meta};
use crate::params::{self, Params};
use crate::respond::{created, Responder};
use crate::AppState;

pub const ENTITIES_PATH: &str = "/ngsi-ld/v1/entities/";

const QUERY_PARAMS: &[&str] = &[
    "id",
    "idPattern",
    "type",
    "attrs",
    "pick",
    "omit",
    "q",
    "scopeQ",
    "georel",
    "geometry",
    "coordinates",
    "geoproperty",
    "geometryProperty",
    "limit",
    "offset",
    "count",
    "options",
    "format",
    "lang",
    "csf",
    "local",
    "datasetId",
    "containedBy",
    "join",
    "joinLevel",
    "entityMap",
    "collectGeometry",
];
const RETRIEVE_PARAMS: &[&str] = &[
    "attrs",
    "pick",
    "omit",
    "options",
    "format",
    "lang",
    "geometryProperty",
    "type",
    "local",
    "datasetId",
    "join",
    "joinLevel",
    "containedBy",
];

/// Reads a body as an entity payload with its context.
pub async fn payload(state: &AppState, meta: &Meta, body: &JsonBody, item: &Value) -> ApiResult<Payload> {
    let local = body.local_context(item, meta)?.map(|c| c.to_value());
    let context = state.broker.context(&meta.tenant, local.as_ref()).await?;
    Ok(Payload {
        body: item.clone(),
        context,
    })
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    RawQuery(raw): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    Params::parse(raw.as_deref())?.allow_only(&["local"])?;
    if !body.value.is_object() {
        return Err(ApiError::invalid_request("the body must be a JSON object (one entity)"));
    }
    let payload = payload(&state, &meta, &body, &body.value).await?;
    let entity = state.broker.create_entity(&meta.tenant, payload).await?;
    Ok(created(&format!("{ENTITIES_PATH}{}", entity.id)))
}

/// Everything needed to render entities for one request.
pub struct View {
    pub context: Arc<ActiveContext>,
    pub projection: Projection,
    pub options: RenderOptions,
    pub responder: Responder,
    pub geometry_property: String,
}

impl View {
    pub async fn new(state: &AppState, meta: &Meta, params: &Params) -> ApiResult<View> {
        let media = meta.accept(true)?;
        let context = link_context(state, meta).await?;
        let projection = params::projection(params, &context)?;
        let options = params::render_options(params)?;
        let geometry_property = context.expand(params.get("geometryProperty").unwrap_or("location"));
        Ok(View {
            responder: Responder::new(media, meta.link.as_deref()),
            context,
            projection,
            options,
            geometry_property,
        })
    }

    /// Renders an entity; `None` when the projection leaves nothing.
    fn render(&self, mut entity: Entity) -> Option<Map<String, Value>> {
        self.projection.apply(&mut entity);
        let geojson = self.responder.media == MediaType::GeoJson;
        let mut body = if geojson {
            render_feature(&entity, &self.context, &self.options, &self.geometry_property)
        } else {
            render_entity(&entity, &self.context, &self.options)
        };
        if !self.projection.is_identity() {
            let members = if geojson {
                body.get_mut("properties").and_then(Value::as_object_mut)
            } else {
                Some(&mut body)
            };
            if let Some(members) = members {
                members.retain(|key, _| {
                    matches!(key.as_str(), "createdAt" | "modifiedAt")
                        || self.projection.keeps(&self.context.expand(key))
                });
                if members.is_empty() {
                    return None;
                }
            }
        }
        Some(body)
    }

    pub fn one(&self, entity: Entity) -> ApiResult<Response> {
        let id = entity.id.clone();
        let body = self
            .render(entity)
            .ok_or_else(|| NgsiError::not_found(format!("entity {id} has none of the requested members")))?;
        Ok(if self.responder.media == MediaType::GeoJson {
            self.responder.geojson(StatusCode::OK, body)
        } else {
            self.responder.object(StatusCode::OK, body)
        })
    }

    pub fn many(&self, entities: Vec<Entity>) -> Response {
        let items: Vec<Map<String, Value>> = entities.into_iter().filter_map(|e| self.render(e)).collect();
        if self.responder.media == MediaType::GeoJson {
            let mut collection = Map::new();
            collection.insert("type".into(), json!("FeatureCollection"));
            collection.insert(
                "features".into(),
                Value::Array(items.into_iter().map(Value::Object).collect()),
            );
            self.responder.geojson(StatusCode::OK, collection)
        } else {
            self.responder.list(StatusCode::OK, items)
        }
    }
}

/// `?type=` on an entity operation: the entity must be of that type (else 404).
pub async fn type_gate(state: &AppState, meta: &Meta, id: &str, params: &Params) -> ApiResult<()> {
    let Some(types) = params.get("type") else { return Ok(()) };
    let context = link_context(state, meta).await?;
    let selector = TypeSelector::parse(types, &context)?;
    let entity = state.broker.entity(&meta.tenant, id).await?;
    if selector.matches(&entity.types) {
        Ok(())
    } else {
        Err(NgsiError::not_found(format!("entity {id} is not of type {types}")).into())
    }
}

pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(RETRIEVE_PARAMS)?;
    let view = View::new(&state, &meta, &params).await?;
    type_gate(&state, &meta, &id, &params).await?;
    let entity = state.broker.entity(&meta.tenant, &id).await?;
    if let Some(attrs) = params.list("attrs")? {
        let wanted = params::expand_names(&attrs, &view.context)?;
        if !wanted.iter().any(|a| entity.attributes.contains_key(a)) {
            return Err(
                NgsiError::not_found(format!("entity {id} has none of the attributes {}", attrs.join(","))).into(),
            );
        }
    }
    view.one(entity)
}

pub async fn query(State(state): State<Arc<AppState>>, meta: Meta, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(QUERY_PARAMS)?;
    let view = View::new(&state, &meta, &params).await?;
    let query = params::entity_query(&params, &view.context)?;
    let user_attrs = query.attrs.iter().any(|a| !is_system_attribute(a));
    let local = params.flag("local")?;
    if query.types.is_none() && !user_attrs && query.q.is_none() && query.geo.is_none() && !local {
        return Err(ApiError::bad_request(
            "a query needs at least one of type, attrs, q, a geo-query or local=true",
        ));
    }
    let page = params::page(&params, state.broker.limits())?;
    let result = state.broker.query(&meta.tenant, query, page).await?;
    let total = result.total;
    let mut response = view.many(result.entities);
    if let Some(total) = total {
        response.headers_mut().insert("NGSILD-Results-Count", total.into());
    }
    Ok(response)
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&["type", "local"])?;
    type_gate(&state, &meta, &id, &params).await?;
    state.broker.delete_entity(&meta.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn replace(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    body: JsonBody,
) -> ApiResult<Response> {
    let payload = payload(&state, &meta, &body, &body.value).await?;
    state.broker.replace_entity(&meta.tenant, &id, payload).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn merge(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    body: JsonBody,
) -> ApiResult<Response> {
    let payload = payload(&state, &meta, &body, &body.value).await?;
    state.broker.merge_entity(&meta.tenant, &id, payload).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn append_attributes(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&["options", "type", "local"])?;
    let no_overwrite = params.has_option("noOverwrite");
    let payload = payload(&state, &meta, &body, &body.value).await?;
    type_gate(&state, &meta, &id, &params).await?;
    let outcome = state
        .broker
        .append_attributes(&meta.tenant, &id, payload, no_overwrite)
        .await?;
    Ok(update_result(outcome))
}

pub async fn update_attributes(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&["options", "type", "local"])?;
    let payload = payload(&state, &meta, &body, &body.value).await?;
    type_gate(&state, &meta, &id, &params).await?;
    let outcome = state.broker.update_attributes(&meta.tenant, &id, payload).await?;
    Ok(update_result(outcome))
}

/// 204 when everything was updated, else 207 with an UpdateResult (clause 5.2.18).
/// Attribute names are given expanded, as the spec's UpdateResult holds IRIs.
fn update_result(outcome: UpdateOutcome) -> Response {
    if outcome.is_complete() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let body = json!({
        "updated": outcome.updated,
        "notUpdated": outcome.not_updated.iter().map(|n| json!({
            "attributeName": n.name,
            "reason": n.reason,
        })).collect::<Vec<_>>(),
    });
    (StatusCode::MULTI_STATUS, axum::Json(body)).into_response()
}

pub async fn partial_update_attribute(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path((id, attr)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&["type", "local"])?;
    let payload = payload(&state, &meta, &body, &body.value).await?;
    type_gate(&state, &meta, &id, &params).await?;
    state
        .broker
        .partial_update_attribute(&meta.tenant, &id, &attr, payload)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn replace_attribute(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path((id, attr)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    let payload = payload(&state, &meta, &body, &body.value).await?;
    state
        .broker
        .replace_attribute(&meta.tenant, &id, &attr, payload)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete_attribute(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path((id, attr)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&["datasetId", "deleteAll", "type", "local"])?;
    let context = link_context(&state, &meta).await?;
    type_gate(&state, &meta, &id, &params).await?;
    let dataset_id = params.get("datasetId").map(str::to_owned);
    let delete_all = params.flag("deleteAll")?;
    state
        .broker
        .delete_attribute(&meta.tenant, &id, &attr, &context, dataset_id, delete_all)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// System attributes cannot select entities on their own.
fn is_system_attribute(expanded: &str) -> bool {
    ["createdAt", "modifiedAt", "deletedAt", "observedAt"]
        .iter()
        .any(|s| expanded.strip_prefix("https://uri.etsi.org/ngsi-ld/") == Some(s))
}

/// `PUT` or `PATCH /entities` without an id: a request error, not a missing route.
pub async fn missing_id() -> ApiError {
    ApiError::bad_request("the entity id is missing from the path")
}

/// Purge Entities (clause 6.4.3.3): `DELETE /entities` with a query.
pub async fn purge(State(state): State<Arc<AppState>>, meta: Meta, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&[
        "id",
        "idPattern",
        "type",
        "attrs",
        "q",
        "scopeQ",
        "drop",
        "keep",
        "local",
    ])?;
    let context = link_context(&state, &meta).await?;
    let query = params::entity_query(&params, &context)?;
    let drop = params
        .list("drop")?
        .map(|d| params::expand_names(&d, &context))
        .transpose()?
        .unwrap_or_default();
    let keep = params
        .list("keep")?
        .map(|k| params::expand_names(&k, &context))
        .transpose()?
        .unwrap_or_default();
    if !drop.is_empty() && !keep.is_empty() {
        return Err(ApiError::bad_request("drop and keep cannot be used together"));
    }
    let user_attrs = query.attrs.iter().any(|a| !is_system_attribute(a));
    let q_on_user_attrs = query
        .q
        .as_ref()
        .is_some_and(|q| q.attribute_names().iter().any(|a| !is_system_attribute(a)));
    if query.types.is_none() && !user_attrs && !q_on_user_attrs && query.scope.is_none() && !params.flag("local")? {
        return Err(ApiError::bad_request(
            "a purge needs at least one of type, attrs, q, scopeQ or local=true",
        ));
    }
    state.broker.purge(&meta.tenant, query, drop, keep).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
