//! `/entities`: create, retrieve, query, replace, merge, delete, and the
//! attribute operations (clauses 6.4 to 6.7).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use piazza_broker::Payload;
use piazza_ngsild::query::Projection;
use piazza_ngsild::render::{render_entity, render_feature, RenderOptions};
use piazza_ngsild::update::UpdateOutcome;
use piazza_ngsild::{ActiveContext, Entity};
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{link_context, JsonBody, MediaType, Meta};
use crate::params::{self, Params};
use crate::respond::{created, Responder};
use crate::AppState;

pub const ENTITIES_PATH: &str = "/ngsi-ld/v1/entities/";

const QUERY_PARAMS: &[&str] = &[
    "id", "idPattern", "type", "attrs", "pick", "omit", "q", "scopeQ", "georel", "geometry", "coordinates",
    "geoproperty", "geometryProperty", "limit", "offset", "count", "options", "format", "lang", "csf", "local",
    "datasetId", "containedBy", "join", "joinLevel", "entityMap", "collectGeometry",
];
const RETRIEVE_PARAMS: &[&str] = &[
    "attrs", "pick", "omit", "options", "format", "lang", "geometryProperty", "type", "local", "datasetId", "join",
    "joinLevel", "containedBy",
];

/// Reads a body as an entity payload with its context.
pub async fn payload(state: &AppState, meta: &Meta, body: &JsonBody, item: &Value) -> ApiResult<Payload> {
    let local = body.local_context(item, meta)?.map(|c| c.to_value());
    let context = state.broker.context(&meta.tenant, local.as_ref()).await?;
    Ok(Payload { body: item.clone(), context })
}

pub async fn create(State(state): State<Arc<AppState>>, meta: Meta, body: JsonBody) -> ApiResult<Response> {
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

    fn render(&self, mut entity: Entity) -> Map<String, Value> {
        self.projection.apply(&mut entity);
        if self.responder.media == MediaType::GeoJson {
            render_feature(&entity, &self.context, &self.options, &self.geometry_property)
        } else {
            render_entity(&entity, &self.context, &self.options)
        }
    }

    pub fn one(&self, entity: Entity) -> Response {
        let body = self.render(entity);
        if self.responder.media == MediaType::GeoJson {
            self.responder.geojson(StatusCode::OK, body)
        } else {
            self.responder.object(StatusCode::OK, body)
        }
    }

    pub fn many(&self, entities: Vec<Entity>) -> Response {
        let items: Vec<Map<String, Value>> = entities.into_iter().map(|e| self.render(e)).collect();
        if self.responder.media == MediaType::GeoJson {
            let mut collection = Map::new();
            collection.insert("type".into(), json!("FeatureCollection"));
            collection.insert("features".into(), Value::Array(items.into_iter().map(Value::Object).collect()));
            self.responder.geojson(StatusCode::OK, collection)
        } else {
            self.responder.list(StatusCode::OK, items)
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
    params.allow_only(RETRIEVE_PARAMS)?;
    let view = View::new(&state, &meta, &params).await?;
    let entity = state.broker.entity(&meta.tenant, &id).await?;
    if let Some(types) = params.get("type") {
        let selector = piazza_ngsild::query::TypeSelector::parse(types, &view.context)?;
        if !selector.matches(&entity.types) {
            return Err(ApiError::from(piazza_ngsild::NgsiError::not_found(format!(
                "entity {id} is not of type {types}"
            ))));
        }
    }
    Ok(view.one(entity))
}

pub async fn query(State(state): State<Arc<AppState>>, meta: Meta, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(QUERY_PARAMS)?;
    let view = View::new(&state, &meta, &params).await?;
    let query = params::entity_query(&params, &view.context)?;
    if query.ids.is_empty()
        && query.id_pattern.is_none()
        && query.types.is_none()
        && query.attrs.is_empty()
        && query.q.is_none()
        && query.geo.is_none()
        && params.get("local").is_none()
    {
        return Err(ApiError::bad_request(
            "a query needs at least one of id, idPattern, type, attrs, q or a geo-query",
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

pub async fn delete(State(state): State<Arc<AppState>>, meta: Meta, Path(id): Path<String>) -> ApiResult<Response> {
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
    let no_overwrite = params.has_option("noOverwrite");
    let payload = payload(&state, &meta, &body, &body.value).await?;
    let context = payload.context.clone();
    let outcome = state.broker.append_attributes(&meta.tenant, &id, payload, no_overwrite).await?;
    Ok(update_result(outcome, &context))
}

pub async fn update_attributes(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    body: JsonBody,
) -> ApiResult<Response> {
    let payload = payload(&state, &meta, &body, &body.value).await?;
    let context = payload.context.clone();
    let outcome = state.broker.update_attributes(&meta.tenant, &id, payload).await?;
    Ok(update_result(outcome, &context))
}

/// 204 when everything was updated, else 207 with an UpdateResult (clause 5.2.18).
fn update_result(outcome: UpdateOutcome, context: &ActiveContext) -> Response {
    if outcome.is_complete() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let body = json!({
        "updated": outcome.updated.iter().map(|n| context.compact(n)).collect::<Vec<_>>(),
        "notUpdated": outcome.not_updated.iter().map(|n| json!({
            "attributeName": context.compact(&n.name),
            "reason": n.reason,
        })).collect::<Vec<_>>(),
    });
    (StatusCode::MULTI_STATUS, axum::Json(body)).into_response()
}

pub async fn partial_update_attribute(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path((id, attr)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    let payload = payload(&state, &meta, &body, &body.value).await?;
    state.broker.partial_update_attribute(&meta.tenant, &id, &attr, payload).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn replace_attribute(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path((id, attr)): Path<(String, String)>,
    body: JsonBody,
) -> ApiResult<Response> {
    let payload = payload(&state, &meta, &body, &body.value).await?;
    state.broker.replace_attribute(&meta.tenant, &id, &attr, payload).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete_attribute(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path((id, attr)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&["datasetId", "deleteAll"])?;
    let context = link_context(&state, &meta).await?;
    let dataset_id = params.get("datasetId").map(str::to_owned);
    let delete_all = params.flag("deleteAll")?;
    state
        .broker
        .delete_attribute(&meta.tenant, &id, &attr, &context, dataset_id, delete_all)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
