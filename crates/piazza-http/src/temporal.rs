//! `/temporal/entities`: the temporal API (clauses 6.18–6.22): retrieve and
//! query histories; create, append, modify and delete instances.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use piazza_ngsild::query::{EntityQuery, GeoQuery, Projection, Query, ScopeQuery};
use piazza_ngsild::render::{Format, RenderOptions};
use piazza_ngsild::temporal::{
    render_temporal, AggrMethod, Aggregation, Duration, TemporalEntity, TemporalMode, TemporalParams, TemporalQuery,
    TemporalRender, TimeRel,
};
use piazza_ngsild::{ActiveContext, ErrorKind};
use serde_json::{Map, Value};

use crate::batch;
use crate::entities::body_payload;
use crate::error::{ApiError, ApiResult};
use crate::extract::{link_context, JsonBody, Meta};
use crate::params::{self, Params};
use crate::respond::{created, Responder};
use crate::AppState;

pub const TEMPORAL_PATH: &str = "/ngsi-ld/v1/temporal/entities/";

const TEMPORAL_PARAMS: &[&str] = &[
    "timerel",
    "timeAt",
    "endTimeAt",
    "timeproperty",
    "lastN",
    "aggrMethods",
    "aggrPeriodDuration",
    "attrs",
    "pick",
    "omit",
    "options",
    "format",
    "lang",
    "datasetId",
    "local",
    "type",
];
const QUERY_ONLY_PARAMS: &[&str] = &[
    "id",
    "idPattern",
    "q",
    "scopeQ",
    "georel",
    "geometry",
    "coordinates",
    "geoproperty",
    "csf",
    "limit",
    "offset",
    "count",
    "expandValues",
    "orderBy",
];

/// How one request wants histories: which, and in which representation.
struct TemporalView {
    context: Arc<ActiveContext>,
    responder: Responder,
    query: TemporalQuery,
    render: TemporalRender,
    projection: Projection,
    dataset_ids: Option<Vec<String>>,
}

impl TemporalView {
    async fn new(
        state: &AppState,
        meta: &Meta,
        params: &Params,
        context: Option<Arc<ActiveContext>>,
    ) -> ApiResult<Self> {
        let media = meta.accept(false)?;
        let context = match context {
            Some(context) => context,
            None => link_context(state, meta).await?,
        };
        let mut query = TemporalQuery::parse(TemporalParams {
            timerel: params.get("timerel"),
            time_at: params.get("timeAt"),
            end_time_at: params.get("endTimeAt"),
            timeproperty: params.get("timeproperty"),
            last_n: params.get("lastN"),
        })?;
        query.instance_limit = state.broker.limits().max_temporal_instances;
        query.order_by_id = match params.get("orderBy") {
            None => None,
            Some("id" | "id;asc") => Some(false),
            Some("id;desc") => Some(true),
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "a temporal query can only be ordered by id, not '{other}'"
                )))
            }
        };
        if let Some(attrs) = params.list("attrs")? {
            query.attrs = params::expand_names(&attrs, &context)?;
        }
        let options = params.options();
        let has = |o: &str| options.iter().any(|x| x == o);
        // `format` (clause 6.3.7) also names the temporal representations.
        let format = params.get("format");
        let temporal_format = matches!(format, Some("temporalValues" | "aggregatedValues"));
        let mut render = if temporal_format {
            let pairs = params.pairs().iter().filter(|(k, _)| k != "format").cloned().collect();
            params::render_options(&Params::from_pairs(pairs))?
        } else {
            params::render_options(params)?
        };
        // `format` takes precedence over `options` (clause 6.3.7).
        let aggregated = match format {
            Some(format) => format == "aggregatedValues",
            None => has("aggregatedValues"),
        };
        let values = match format {
            Some(format) => format == "temporalValues" || render.format == Format::KeyValues,
            None => has("temporalValues") || render.format == Format::KeyValues,
        };
        if aggregated {
            // An aggregate covers every instance of its periods, not a page.
            query.instance_limit = state.broker.limits().max_aggregated_instances;
        }
        let mode = if aggregated {
            let methods = params
                .get("aggrMethods")
                .ok_or_else(|| ApiError::bad_request("aggregatedValues needs aggrMethods"))?;
            let period = params.get("aggrPeriodDuration").map(Duration::parse).transpose()?;
            TemporalMode::Aggregated(Aggregation {
                methods: AggrMethod::parse_list(methods)?,
                period,
            })
        } else if values {
            TemporalMode::Values
        } else {
            TemporalMode::Normalized
        };
        render.format = Format::Normalized;
        let (origin, end) = query.timerel.map_or((None, None), TimeRel::aggregation_window);
        if let TemporalMode::Aggregated(aggregation) = &mode {
            query.aggregation = aggregation.summarisable().then(|| aggregation.clone());
        }
        let shape = params::shape(params, &context, None)?;
        Ok(Self {
            responder: Responder::new(media, meta.link.as_deref()),
            render: TemporalRender {
                mode,
                render: RenderOptions { ..render },
                timeproperty: query.timeproperty,
                origin,
                end,
            },
            context,
            query,
            projection: shape.projection,
            dataset_ids: params.list("datasetId")?,
        })
    }

    fn render(&self, entity: &mut TemporalEntity) -> Map<String, Value> {
        entity.attributes.retain(|name, _| self.projection.keeps(name));
        entity.summaries.retain(|name, _| self.projection.keeps(name));
        if let Some(wanted) = &self.dataset_ids {
            for instances in entity.attributes.values_mut() {
                instances.retain(|i| {
                    wanted
                        .iter()
                        .any(|w| i.attribute.dataset_id.as_deref().unwrap_or("@none") == w)
                });
            }
            entity.attributes.retain(|_, instances| !instances.is_empty());
            for groups in entity.summaries.values_mut() {
                groups.retain(|g| wanted.iter().any(|w| g.dataset_id.as_deref().unwrap_or("@none") == w));
            }
            entity.summaries.retain(|_, groups| !groups.is_empty());
        }
        let mut body = render_temporal(entity, &self.context, &self.render);
        if !self.projection.is_identity() {
            body.retain(|key, _| {
                matches!(key.as_str(), "createdAt" | "modifiedAt" | "deletedAt")
                    || self.projection.keeps(&self.context.expand(key))
            });
        }
        body
    }
}

/// One Content-Range for the whole response (clause 6.3.10): the earliest
/// cut of the entities (the latest with `lastN`, read backwards), to which
/// every history is trimmed.
fn common_range(entities: &mut [TemporalEntity], query: &TemporalQuery) {
    let descending = query.last_n.is_some();
    let Some(range) = entities
        .iter()
        .filter_map(|e| e.range)
        .reduce(|a, b| if (b.end < a.end) != descending { b } else { a })
    else {
        return;
    };
    for entity in entities.iter_mut() {
        for instances in entity.attributes.values_mut() {
            instances.retain(|i| {
                query.timeproperty.of(i).or(i.attribute.created_at).is_some_and(|t| {
                    if descending {
                        t >= range.end
                    } else {
                        t <= range.end
                    }
                })
            });
        }
        entity.range = Some(range);
    }
}

fn content_range(response: &mut Response, entities: &[TemporalEntity]) -> bool {
    let Some(range) = entities.iter().find_map(|e| e.range) else {
        return false;
    };
    if let Ok(value) = HeaderValue::from_str(&range.header()) {
        response.headers_mut().insert(header::CONTENT_RANGE, value);
    }
    *response.status_mut() = StatusCode::PARTIAL_CONTENT;
    true
}

pub async fn retrieve(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(TEMPORAL_PARAMS)?;
    let view = TemporalView::new(&state, &meta, &params, None).await?;
    let mut entity = state.broker.temporal_entity(&meta.tenant, &id, &view.query).await?;
    // Nothing of the entity left to show is a ResourceNotFound (clause
    // 5.7.3): none of the attributes asked for, or a projection dropping all.
    if !view.query.attrs.is_empty()
        && !entity.has_attributes()
        && !has_any_attribute(&state, &meta, &id, &view.query).await?
    {
        return Err(ApiError::new(
            ErrorKind::ResourceNotFound,
            format!("entity {id} has none of the attributes asked for"),
        ));
    }
    let body = view.render(&mut entity);
    if !view.projection.is_identity()
        && body
            .keys()
            .all(|k| matches!(k.as_str(), "@context" | "createdAt" | "modifiedAt" | "deletedAt"))
    {
        return Err(ApiError::new(
            ErrorKind::ResourceNotFound,
            format!("nothing of entity {id} matches pick and omit"),
        ));
    }
    let mut response = view.responder.object(StatusCode::OK, body);
    content_range(&mut response, std::slice::from_ref(&entity));
    Ok(response)
}

/// Whether the entity has ever had one of the attributes asked for, at any
/// time.
async fn has_any_attribute(state: &AppState, meta: &Meta, id: &str, query: &TemporalQuery) -> ApiResult<bool> {
    let anytime = TemporalQuery {
        timerel: None,
        last_n: Some(1),
        instance_limit: usize::MAX,
        ..query.clone()
    };
    let entity = state.broker.temporal_entity(&meta.tenant, id, &anytime).await?;
    Ok(entity.has_attributes())
}

pub async fn query(State(state): State<Arc<AppState>>, meta: Meta, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    let known: Vec<&str> = TEMPORAL_PARAMS.iter().chain(QUERY_ONLY_PARAMS).copied().collect();
    params.allow_only(&known)?;
    let view = TemporalView::new(&state, &meta, &params, None).await?;
    let entities = params::entity_query(&params, &view.context)?;
    // The temporal API has no join: q cannot reach linked entities.
    if let Some(q) = &entities.q {
        params::check_join_depth(q.link_depth(), None, "q")?;
    }
    if let Some(csf) = params.get("csf") {
        // Context source filters use the q grammar; with no registrations
        // they select nothing here, but must still be valid.
        Query::parse(csf, &view.context)?;
    }
    if params.get("type") != Some("*") && !params.flag("local")? && is_unbounded(&entities) {
        return Err(ApiError::bad_request(
            "a temporal query needs at least one of type, attrs, q or a geo-query",
        ));
    }
    run_query(&state, &meta, &params, &view, entities).await
}

/// System members (clause 4.8) name no attribute: asking for them alone
/// selects every entity.
const SYSTEM_MEMBERS: &[&str] = &[
    "https://uri.etsi.org/ngsi-ld/createdAt",
    "https://uri.etsi.org/ngsi-ld/modifiedAt",
    "https://uri.etsi.org/ngsi-ld/deletedAt",
    "https://uri.etsi.org/ngsi-ld/observedAt",
];

fn is_unbounded(entities: &EntityQuery) -> bool {
    entities.types.is_none()
        && entities.attrs.iter().all(|a| SYSTEM_MEMBERS.contains(&a.as_str()))
        && entities.q.is_none()
        && entities.geo.is_none()
        && entities.alternatives.is_empty()
}

async fn run_query(
    state: &AppState,
    meta: &Meta,
    params: &Params,
    view: &TemporalView,
    entities: EntityQuery,
) -> ApiResult<Response> {
    // Counting is asked for only when wanted: a count tests every entity
    // of the type, where a page stops after its last one.
    let page = params::page(params, state.broker.limits())?;
    let result = state
        .broker
        .temporal_query(&meta.tenant, entities, &view.query, page)
        .await?;
    let mut histories = result.entities;
    common_range(&mut histories, &view.query);
    let mut items = Vec::with_capacity(histories.len());
    for entity in &mut histories {
        let body = view.render(entity);
        // A datasetId filter matching none of an entity's instances leaves
        // the entity out.
        if view.dataset_ids.is_none() || entity.has_attributes() {
            items.push(body);
        }
    }
    let mut response = view.responder.list(StatusCode::OK, items);
    if page.count {
        response
            .headers_mut()
            .insert("NGSILD-Results-Count", result.total.unwrap_or_default().into());
    }
    content_range(&mut response, &histories);
    Ok(response)
}

/// Query temporal evolution of entities via POST (clause 6.24): the Query
/// data type in the body, with its `temporalQ` (TemporalQuery, clause
/// 5.2.21) and `aggrParams` (clause 5.2.44) read as the matching parameters.
pub async fn query_post(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    RawQuery(raw): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&["limit", "offset", "count", "options", "format", "lang", "local"])?;
    let local = body.local_context(&body.value, &meta)?.map(|c| c.to_value());
    let context = state.broker.context(&meta.tenant, local.as_ref()).await?;
    let Value::Object(request) = &body.value else {
        return Err(ApiError::bad_request("the body must be a Query object"));
    };
    if request.get("type").and_then(Value::as_str) != Some("Query") {
        return Err(ApiError::bad_request("the body's type must be \"Query\""));
    }
    let mut pairs: Vec<(String, String)> = params.pairs().to_vec();
    let mut aggregated = false;
    for (group, members) in [
        (
            "temporalQ",
            &[
                "timerel",
                "timeAt",
                "endTimeAt",
                "timeproperty",
                "lastN",
                "aggrMethods",
                "aggrPeriodDuration",
            ][..],
        ),
        ("aggrParams", &["aggrMethods", "aggrPeriodDuration"][..]),
    ] {
        let Some(value) = request.get(group) else { continue };
        let Value::Object(object) = value else {
            return Err(ApiError::bad_request(format!("{group} must be an object")));
        };
        for &member in members {
            let Some(value) = object.get(member) else { continue };
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) if n.is_u64() || n.is_i64() => n.to_string(),
                Value::Array(items) if member == "aggrMethods" => items
                    .iter()
                    .map(|i| {
                        i.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| ApiError::bad_request("aggrMethods must hold strings"))
                    })
                    .collect::<ApiResult<Vec<_>>>()?
                    .join(","),
                _ => return Err(ApiError::bad_request(format!("{member} has an invalid value"))),
            };
            aggregated |= member == "aggrMethods";
            pairs.push((member.into(), text));
        }
    }
    if aggregated && params.get("format").is_none() {
        pairs.push(("format".into(), "aggregatedValues".into()));
    }
    for member in ["pick", "omit", "attrs", "datasetId"] {
        if let Some(value) = request.get(member) {
            pairs.push((member.into(), batch::string_list(value, member)?.join(",")));
        }
    }
    for member in ["lang"] {
        if let Some(value) = request.get(member) {
            let text = value
                .as_str()
                .ok_or_else(|| ApiError::bad_request(format!("{member} must be a string")))?;
            pairs.push((member.into(), text.into()));
        }
    }
    let view_params = Params::from_pairs(pairs);
    let mut view = TemporalView::new(&state, &meta, &view_params, Some(context.clone())).await?;
    if let Some(inline) = local.filter(|_| body.json_ld) {
        view.responder.context = inline;
    }
    let mut entities = EntityQuery::default();
    if let Some(selectors) = request.get("entities") {
        let Value::Array(selectors) = selectors else {
            return Err(ApiError::bad_request("entities must be an array"));
        };
        if selectors.is_empty() {
            return Err(ApiError::bad_request("entities must not be empty"));
        }
        for selector in selectors {
            entities.alternatives.push(batch::entity_selector(selector, &context)?);
        }
    }
    entities.attrs = view.query.attrs.clone();
    if let Some(q) = request.get("q") {
        let text = q.as_str().ok_or_else(|| ApiError::bad_request("q must be a string"))?;
        let parsed = Query::parse(text, &context)?;
        params::check_join_depth(parsed.link_depth(), None, "q")?;
        entities.q = Some(parsed);
    }
    if let Some(scope) = request.get("scopeQ") {
        let text = scope
            .as_str()
            .ok_or_else(|| ApiError::bad_request("scopeQ must be a string"))?;
        entities.scope = Some(ScopeQuery::parse(text)?);
    }
    if let Some(geo) = request.get("geoQ") {
        entities.geo = Some(GeoQuery::from_json(geo, &context)?);
    }
    if is_unbounded(&entities) && !view_params.flag("local")? {
        return Err(ApiError::bad_request(
            "a temporal query needs entities, attrs, q or geoQ",
        ));
    }
    run_query(&state, &meta, &view_params, &view, entities).await
}

/// `POST /temporal/entities`: 201 when created, 204 when instances were added.
pub async fn upsert(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    RawQuery(raw): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    Params::parse(raw.as_deref())?.allow_only(&["local"])?;
    if !body.value.is_object() {
        return Err(ApiError::bad_request(
            "the body must be a JSON object (one temporal entity)",
        ));
    }
    let id = body
        .value
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let payload = body_payload(&state, &meta, body).await?;
    if state.broker.upsert_temporal(&meta.tenant, payload).await? {
        Ok(created(&format!("{TEMPORAL_PATH}{id}")))
    } else {
        Ok(StatusCode::NO_CONTENT.into_response())
    }
}

pub async fn append(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    Params::parse(raw.as_deref())?.allow_only(&["local"])?;
    if !body.value.is_object() {
        return Err(ApiError::bad_request("the body must be a JSON object"));
    }
    let payload = body_payload(&state, &meta, body).await?;
    state.broker.append_temporal(&meta.tenant, &id, payload).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    Params::parse(raw.as_deref())?.allow_only(&["local"])?;
    state.broker.delete_temporal(&meta.tenant, &id).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete_attribute(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path((id, attr)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    params.allow_only(&["datasetId", "deleteAll", "local"])?;
    let context = link_context(&state, &meta).await?;
    let dataset_id = params.get("datasetId").map(str::to_owned);
    let delete_all = params.flag("deleteAll")?;
    state
        .broker
        .delete_temporal_attribute(&meta.tenant, &id, &attr, &context, dataset_id, delete_all)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn modify_instance(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path((id, attr, instance_id)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
    body: JsonBody,
) -> ApiResult<Response> {
    Params::parse(raw.as_deref())?.allow_only(&["local"])?;
    let payload = body_payload(&state, &meta, body).await?;
    state
        .broker
        .modify_temporal_instance(&meta.tenant, &id, &attr, &instance_id, payload)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

pub async fn delete_instance(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path((id, attr, instance_id)): Path<(String, String, String)>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    Params::parse(raw.as_deref())?.allow_only(&["local"])?;
    let context = link_context(&state, &meta).await?;
    state
        .broker
        .delete_temporal_instance(&meta.tenant, &id, &attr, &instance_id, &context)
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
