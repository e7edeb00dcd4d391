//! `/entities`: create, retrieve, query, replace, merge, delete, and the
//! attribute operations (clauses 6.4 to 6.7).

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use piazza_broker::Payload;
use piazza_ngsild::query::{Projection, Query, TypeSelector};
use piazza_ngsild::render::{render_entity, render_feature, EntityView, RenderOptions};
use piazza_ngsild::update::UpdateOutcome;
use piazza_ngsild::{ActiveContext, Entity, NgsiError};
use serde_json::{json, Map, Value};

use crate::error::{ApiError, ApiResult};
use crate::extract::{link_context, JsonBody, MediaType, Meta};
use crate::linked::{Join, JoinKind, Linked, Shape};
use crate::params::{self, Params};
use crate::respond::pagination_links;
use crate::respond::{created, Responder};
use crate::AppState;
use piazza_store::{Page, Tenant};

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
    "orderBy",
    "orderFrom",
    "collation",
    "expandValues",
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

/// Reads `item`, the body or one item of it, as an entity payload with its
/// context. The item is moved into the payload: a copy of the template
/// entity's JSON was 2 % of a create's instructions.
pub async fn payload(state: &AppState, meta: &Meta, body: &JsonBody, item: Value) -> ApiResult<Payload> {
    let local = body.local_context(&item, meta)?.map(|c| c.to_value());
    let context = state.broker.context(&meta.tenant, local.as_ref()).await?;
    Ok(Payload { body: item, context })
}

/// The whole body as an entity payload (see [`payload`]).
pub async fn body_payload(state: &AppState, meta: &Meta, mut body: JsonBody) -> ApiResult<Payload> {
    let item = std::mem::take(&mut body.value);
    payload(state, meta, &body, item).await
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
    let payload = body_payload(&state, &meta, body).await?;
    let entity = state.broker.create_entity(&meta.tenant, payload).await?;
    Ok(created(&format!("{ENTITIES_PATH}{}", entity.id)))
}

/// Everything needed to render entities for one request.
pub struct View {
    pub context: Arc<ActiveContext>,
    /// What to return of each entity and of its linked entities.
    pub shape: Shape,
    pub options: RenderOptions,
    pub responder: Responder,
    pub geometry_property: String,
    pub join: Option<Join>,
    /// `datasetId`: only these attribute instances (`@none`: the default one).
    pub dataset_ids: Option<Vec<String>>,
}

/// Bounds the entities one response embeds with `join=inline` (a linked
/// entity reached through several paths is embedded in each).
const MAX_EMBEDDED: usize = 10_000;

impl View {
    pub async fn new(state: &AppState, meta: &Meta, params: &Params) -> ApiResult<View> {
        let media = meta.accept(true)?;
        let context = link_context(state, meta).await?;
        let geometry_property = params.get("geometryProperty");
        if geometry_property.is_some() && media != MediaType::GeoJson {
            return Err(ApiError::bad_request(
                "geometryProperty only applies to GeoJSON responses",
            ));
        }
        let join = Join::parse(params.get("join"), params.number("joinLevel")?)?;
        let shape = params::shape(params, &context, join)?;
        let options = params::render_options(params)?;
        let dataset_ids = params.list("datasetId")?;
        Ok(View {
            responder: Responder {
                geojson_without_context: meta.prefer_body_json,
                ..Responder::new(media, meta.link.as_deref())
            },
            geometry_property: context.expand(geometry_property.unwrap_or("location")),
            context,
            shape,
            options,
            join,
            dataset_ids,
        })
    }

    /// The entity with only the members and instances to return.
    fn project<'a>(&self, entity: &'a Entity, projection: &Projection) -> Cow<'a, Entity> {
        // Most requests keep everything: no copy of the entity then.
        if projection.is_identity() && self.dataset_ids.is_none() {
            return Cow::Borrowed(entity);
        }
        let mut entity = entity.clone();
        projection.apply(&mut entity);
        if let Some(wanted) = &self.dataset_ids {
            for instances in entity.attributes.values_mut() {
                instances.retain(|i| wanted.iter().any(|w| i.dataset_id.as_deref().unwrap_or("@none") == w));
            }
            entity.attributes.retain(|_, instances| !instances.is_empty());
        }
        Cow::Owned(entity)
    }

    /// Renders a projected entity; `None` when the projection leaves nothing.
    fn render_with(&self, entity: &Entity, projection: &Projection) -> Option<Map<String, Value>> {
        let geojson = self.responder.media == MediaType::GeoJson;
        let mut body = if geojson {
            render_feature(entity, &self.context, &self.options, &self.geometry_property)
        } else {
            render_entity(entity, &self.context, &self.options)
        };
        if !projection.is_identity() {
            let members = if geojson {
                body.get_mut("properties").and_then(Value::as_object_mut)
            } else {
                Some(&mut body)
            };
            if let Some(members) = members {
                members.retain(|key, _| {
                    matches!(key.as_str(), "createdAt" | "modifiedAt") || projection.keeps(&self.context.expand(key))
                });
                if members.is_empty() {
                    return None;
                }
            }
        }
        Some(body)
    }

    /// Renders a projected entity with its linked entities embedded in
    /// their relationships (`join=inline`), `levels` deep.
    fn render_inline(
        &self,
        entity: &Entity,
        shape: &Shape,
        levels: usize,
        linked: &Linked,
        budget: &mut usize,
    ) -> Option<Map<String, Value>> {
        let mut body = self.render_with(entity, &shape.projection)?;
        if levels == 0 {
            return Some(body);
        }
        for name in entity.attributes.keys() {
            let child_shape = shape.link(name);
            let Some(value) = body.get_mut(&self.context.compact(name)) else {
                continue;
            };
            let mut embed = |id: &str| -> Option<Value> {
                if *budget == 0 {
                    return None;
                }
                *budget -= 1;
                let target = self.project(linked.get(id)?, &child_shape.projection);
                self.render_inline(&target, child_shape, levels - 1, linked, budget)
                    .map(Value::Object)
            };
            match value {
                // keyValues: the relationship becomes the linked entity.
                Value::String(id) => {
                    if let Some(rendered) = embed(&id.clone()) {
                        *value = rendered;
                    }
                }
                Value::Object(_) | Value::Array(_) => {
                    let instances: Vec<&mut Map<String, Value>> = match value {
                        Value::Object(map) => vec![map],
                        Value::Array(items) => items.iter_mut().filter_map(Value::as_object_mut).collect(),
                        _ => Vec::new(),
                    };
                    for instance in instances {
                        let Some(id) = instance.get("object").and_then(Value::as_str).map(str::to_owned) else {
                            continue;
                        };
                        if let Some(rendered) = embed(&id) {
                            instance.insert("entity".into(), rendered);
                        }
                    }
                }
                _ => {}
            }
        }
        Some(body)
    }

    /// The join to perform: none for GeoJSON, whose features have no place for linked entities.
    fn effective_join(&self) -> Option<Join> {
        self.join.filter(|_| self.responder.media != MediaType::GeoJson)
    }

    /// Renders `entities` (with their linked entities when joining); for
    /// `join=flat`, also the linked entities reached, after them.
    async fn render_all(
        &self,
        state: &AppState,
        tenant: &Tenant,
        entities: &[Entity],
    ) -> ApiResult<(Vec<Map<String, Value>>, usize)> {
        let Some(join) = self.effective_join() else {
            let items = entities
                .iter()
                .filter_map(|e| self.render_with(&self.project(e, &self.shape.projection), &self.shape.projection))
                .collect();
            return Ok((items, 0));
        };
        let projected: Vec<Entity> = entities
            .iter()
            .map(|e| self.project(e, &self.shape.projection).into_owned())
            .collect();
        let linked = Linked::resolve(state, tenant, &projected, &self.shape, join).await?;
        match join.kind {
            JoinKind::Inline => {
                let mut budget = MAX_EMBEDDED;
                let items = projected
                    .iter()
                    .filter_map(|e| self.render_inline(e, &self.shape, join.level, &linked, &mut budget))
                    .collect();
                Ok((items, 0))
            }
            JoinKind::Flat => {
                let mut items: Vec<Map<String, Value>> = projected
                    .iter()
                    .filter_map(|e| self.render_with(e, &self.shape.projection))
                    .collect();
                let roots = items.len();
                for (id, shape) in &linked.reached {
                    if let Some(target) = linked.get(id) {
                        let target = self.project(target, &shape.projection);
                        items.extend(self.render_with(&target, &shape.projection));
                    }
                }
                let reached = items.len() - roots;
                Ok((items, reached))
            }
        }
    }

    /// Whether entities go straight from the store's form to the body: no
    /// join, no GeoJSON and nothing picked or omitted, i.e. nothing that
    /// needs the rendered members as a map first.
    fn writes_directly(&self) -> bool {
        self.join.is_none() && self.responder.media != MediaType::GeoJson && self.shape.projection.is_identity()
    }

    /// Writes one projected entity's body, with `@context` last in JSON-LD.
    fn write_entity(&self, out: &mut Vec<u8>, entity: &Entity) -> ApiResult<()> {
        let entity = self.project(entity, &self.shape.projection);
        let mut view = EntityView::new(&entity, &self.context, &self.options);
        if let Some(context) = self.responder.body_context() {
            view = view.with_trailer("@context", context);
        }
        serde_json::to_writer(out, &view).map_err(|e| NgsiError::internal(format!("rendering an entity: {e}")).into())
    }

    pub async fn one(&self, state: &AppState, tenant: &Tenant, entity: Entity) -> ApiResult<Response> {
        if self.writes_directly() {
            let mut body = Vec::new();
            self.write_entity(&mut body, &entity)?;
            return Ok(self.responder.send_json(StatusCode::OK, body));
        }
        let id = entity.id.clone();
        let (mut items, linked) = self.render_all(state, tenant, std::slice::from_ref(&entity)).await?;
        if items.is_empty() || (linked > 0 && items.len() == linked) {
            return Err(NgsiError::not_found(format!("entity {id} has none of the requested members")).into());
        }
        Ok(if self.responder.media == MediaType::GeoJson {
            self.responder.geojson(StatusCode::OK, items.remove(0))
        } else if linked > 0 {
            // join=flat: the entity, then the entities it links to.
            self.responder.list(StatusCode::OK, items)
        } else {
            self.responder.object(StatusCode::OK, items.remove(0))
        })
    }

    pub async fn many(&self, state: &AppState, tenant: &Tenant, entities: Vec<Entity>) -> ApiResult<Response> {
        if self.writes_directly() {
            let mut body = vec![b'['];
            for (i, entity) in entities.iter().enumerate() {
                if i > 0 {
                    body.push(b',');
                }
                self.write_entity(&mut body, entity)?;
                if i == 0 {
                    // Room for the rest at the first one's size, rather
                    // than the body copied at each doubling.
                    body.reserve(body.len().saturating_mul(entities.len() - 1));
                }
            }
            body.push(b']');
            return Ok(self.responder.send_json(StatusCode::OK, body));
        }
        let (items, _) = self.render_all(state, tenant, &entities).await?;
        Ok(if self.responder.media == MediaType::GeoJson {
            let mut collection = Map::new();
            collection.insert("type".into(), json!("FeatureCollection"));
            collection.insert(
                "features".into(),
                Value::Array(items.into_iter().map(Value::Object).collect()),
            );
            self.responder.geojson(StatusCode::OK, collection)
        } else {
            self.responder.list(StatusCode::OK, items)
        })
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
    view.one(&state, &meta.tenant, entity).await
}

pub async fn query(State(state): State<Arc<AppState>>, meta: Meta, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(QUERY_PARAMS)?;
    let view = View::new(&state, &meta, &params).await?;
    let query = params::entity_query(&params, &view.context)?;
    let local = params.flag("local")?;
    let any_type = params.get("type") == Some("*");
    if any_type && params.get("local") == Some("false") {
        return Err(ApiError::bad_request(
            "type=* selects local entities only: local cannot be false",
        ));
    }
    let user_attrs = query.attrs.iter().any(|a| !is_system_attribute(a));
    let user_q = query
        .q
        .as_ref()
        .is_some_and(|q| q.attribute_names().iter().any(|a| !is_system_attribute(a)));
    if query.types.is_none() && !any_type && !user_attrs && !user_q && query.geo.is_none() && !local {
        return Err(ApiError::bad_request(
            "a query needs at least one of type, attrs, q (on user attributes), a geo-query or local=true",
        ));
    }
    if let Some(q) = &query.q {
        params::check_join_depth(q.link_depth(), view.join, "q")?;
    }
    if let Some(csf) = params.get("csf") {
        // Context source filters use the q grammar; with no registrations
        // they select nothing here, but must still be valid.
        Query::parse(csf, &view.context)?;
    }
    let order = params::order(&params, &view.context)?;
    let page = params::page(&params, state.broker.limits())?;
    // The next-page link only needs to know whether a match follows the
    // page: one entity more is far cheaper than counting every match, which
    // is done only when the client asks for the count.
    let probe = Page {
        limit: page.limit.saturating_add(1),
        ..page
    };
    let mut result = state
        .broker
        .query_ordered(&meta.tenant, query, probe, order.as_ref())
        .await?;
    let more = result.entities.len() > page.limit;
    result.entities.truncate(page.limit);
    let mut response = view.many(&state, &meta.tenant, result.entities).await?;
    if let Some(total) = result.total.filter(|_| page.count) {
        response.headers_mut().insert("NGSILD-Results-Count", total.into());
    }
    for link in pagination_links(ENTITIES_PATH, &params, page, more, "application/json") {
        response.headers_mut().append(header::LINK, link);
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
    let payload = body_payload(&state, &meta, body).await?;
    state.broker.replace_entity(&meta.tenant, &id, payload).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn merge(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    body: JsonBody,
) -> ApiResult<Response> {
    let payload = body_payload(&state, &meta, body).await?;
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
    let payload = body_payload(&state, &meta, body).await?;
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
    let payload = body_payload(&state, &meta, body).await?;
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
    let payload = body_payload(&state, &meta, body).await?;
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
    let payload = body_payload(&state, &meta, body).await?;
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
    if query.q.as_ref().is_some_and(|q| q.link_depth() > 0) {
        // A purge cannot follow relationships: it would delete what another entity says.
        return Err(ApiError::bad_request("a purge cannot filter through linked entities"));
    }
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
