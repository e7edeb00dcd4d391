//! `/temporal/entities`: the temporal API (clauses 6.18–6.22): retrieve and
//! query histories; create, append, modify and delete instances.

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use piazza_ngsild::query::Projection;
use piazza_ngsild::render::{Format, RenderOptions};
use piazza_ngsild::temporal::{
    render_temporal, AggrMethod, Aggregation, Duration, TemporalEntity, TemporalMode, TemporalParams, TemporalQuery,
    TemporalRender, TimeRel,
};
use piazza_ngsild::ActiveContext;
use serde_json::{Map, Value};

use crate::entities::payload;
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
    async fn new(state: &AppState, meta: &Meta, params: &Params) -> ApiResult<Self> {
        let media = meta.accept(false)?;
        let context = link_context(state, meta).await?;
        let mut query = TemporalQuery::parse(TemporalParams {
            timerel: params.get("timerel"),
            time_at: params.get("timeAt"),
            end_time_at: params.get("endTimeAt"),
            timeproperty: params.get("timeproperty"),
            last_n: params.get("lastN"),
        })?;
        query.instance_limit = state.broker.limits().max_temporal_instances;
        if let Some(attrs) = params.list("attrs")? {
            query.attrs = params::expand_names(&attrs, &context)?;
        }
        let options = params.options();
        let has = |o: &str| options.iter().any(|x| x == o);
        let mut render = params::render_options(params)?;
        let mode = if has("aggregatedValues") || params.get("format") == Some("aggregatedValues") {
            let methods = params
                .get("aggrMethods")
                .ok_or_else(|| ApiError::bad_request("aggregatedValues needs aggrMethods"))?;
            let period = params.get("aggrPeriodDuration").map(Duration::parse).transpose()?;
            TemporalMode::Aggregated(Aggregation {
                methods: AggrMethod::parse_list(methods)?,
                period,
            })
        } else if has("temporalValues") || render.format == Format::KeyValues {
            TemporalMode::Values
        } else {
            TemporalMode::Normalized
        };
        render.format = Format::Normalized;
        let (origin, end) = match query.timerel {
            Some(TimeRel::After(at)) => (Some(at), None),
            Some(TimeRel::Between(start, end)) => (Some(start), Some(end)),
            _ => (None, None),
        };
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
        if let Some(wanted) = &self.dataset_ids {
            for instances in entity.attributes.values_mut() {
                instances.retain(|i| {
                    wanted
                        .iter()
                        .any(|w| i.attribute.dataset_id.as_deref().unwrap_or("@none") == w)
                });
            }
            entity.attributes.retain(|_, instances| !instances.is_empty());
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
    let view = TemporalView::new(&state, &meta, &params).await?;
    let mut entity = state.broker.temporal_entity(&meta.tenant, &id, &view.query).await?;
    let body = view.render(&mut entity);
    let mut response = view.responder.object(StatusCode::OK, body);
    content_range(&mut response, std::slice::from_ref(&entity));
    Ok(response)
}

pub async fn query(State(state): State<Arc<AppState>>, meta: Meta, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    let params = Params::parse(raw.as_deref())?;
    let known: Vec<&str> = TEMPORAL_PARAMS.iter().chain(QUERY_ONLY_PARAMS).copied().collect();
    params.allow_only(&known)?;
    let view = TemporalView::new(&state, &meta, &params).await?;
    let entities = params::entity_query(&params, &view.context)?;
    if entities.types.is_none()
        && entities.ids.is_empty()
        && entities.id_pattern.is_none()
        && entities.attrs.is_empty()
        && entities.q.is_none()
        && entities.geo.is_none()
        && params.get("type") != Some("*")
        && !params.flag("local")?
    {
        return Err(ApiError::bad_request(
            "a temporal query needs at least one of type, id, idPattern, attrs, q or a geo-query",
        ));
    }
    let mut page = params::page(&params, state.broker.limits())?;
    let wants_count = page.count;
    page.count = true;
    let result = state
        .broker
        .temporal_query(&meta.tenant, entities, &view.query, page)
        .await?;
    let mut histories = result.entities;
    let items = histories.iter_mut().map(|e| view.render(e)).collect();
    let mut response = view.responder.list(StatusCode::OK, items);
    if wants_count {
        response
            .headers_mut()
            .insert("NGSILD-Results-Count", result.total.unwrap_or_default().into());
    }
    content_range(&mut response, &histories);
    Ok(response)
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
    let payload = payload(&state, &meta, &body, &body.value).await?;
    let id = body
        .value
        .get("id")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
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
    let payload = payload(&state, &meta, &body, &body.value).await?;
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
    let payload = payload(&state, &meta, &body, &body.value).await?;
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
