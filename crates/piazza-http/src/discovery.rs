//! `/types` and `/attributes`: what the data holds (clauses 6.25, 6.26).

use std::sync::Arc;

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use piazza_ngsild::NgsiError;
use serde_json::{json, Map, Value};

use crate::error::ApiResult;
use crate::extract::{link_context, Meta};
use crate::params::Params;
use crate::precheck::reject_unknown;
use crate::respond::Responder;
use crate::AppState;

fn object(value: Value) -> Map<String, Value> {
    match value {
        Value::Object(map) => map,
        _ => Map::new(),
    }
}

fn kinds(kinds: &[piazza_ngsild::AttributeKind]) -> Vec<&'static str> {
    kinds.iter().map(|k| k.name()).collect()
}

pub async fn types(State(state): State<Arc<AppState>>, meta: Meta, RawQuery(raw): RawQuery) -> ApiResult<Response> {
    reject_unknown(raw.as_deref(), &["details", "local"])?;
    let params = Params::parse(raw.as_deref())?;
    let responder = Responder::new(meta.accept(false)?, meta.link.as_deref());
    let context = link_context(&state, &meta).await?;
    let types = state.broker.types(&meta.tenant).await?;
    if params.flag("details")? {
        let items = types
            .iter()
            .map(|t| {
                object(json!({
                    "id": t.name,
                    "type": "EntityType",
                    "typeName": context.compact(&t.name),
                    "attributeNames": t.attributes.iter().map(|(a, _)| context.compact(a)).collect::<Vec<_>>(),
                }))
            })
            .collect();
        return Ok(responder.list(StatusCode::OK, items));
    }
    let names: Vec<String> = types.iter().map(|t| context.compact(&t.name)).collect();
    Ok(responder.object(
        StatusCode::OK,
        object(json!({
            "id": format!("urn:ngsi-ld:EntityTypeList:{}", uuid_like(&names)),
            "type": "EntityTypeList",
            "typeList": names,
        })),
    ))
}

pub async fn type_info(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    // Type information is always detailed: `details` is not a parameter here.
    reject_unknown(raw.as_deref(), &["local"])?;
    let responder = Responder::new(meta.accept(false)?, meta.link.as_deref());
    let context = link_context(&state, &meta).await?;
    let expanded = context.expand(&name);
    let types = state.broker.types(&meta.tenant).await?;
    let found = types
        .into_iter()
        .find(|t| t.name == expanded)
        .ok_or_else(|| NgsiError::not_found(format!("no entity of type {name}")))?;
    let details: Vec<Value> = found
        .attributes
        .iter()
        .map(|(attr, k)| {
            json!({
                "id": attr,
                "type": "Attribute",
                "attributeName": context.compact(attr),
                "attributeTypes": kinds(k),
            })
        })
        .collect();
    Ok(responder.object(
        StatusCode::OK,
        object(json!({
            "id": found.name,
            "type": "EntityTypeInfo",
            "typeName": context.compact(&found.name),
            "entityCount": found.entity_count,
            "attributeDetails": details,
        })),
    ))
}

pub async fn attributes(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    reject_unknown(raw.as_deref(), &["details", "local"])?;
    let params = Params::parse(raw.as_deref())?;
    let responder = Responder::new(meta.accept(false)?, meta.link.as_deref());
    let context = link_context(&state, &meta).await?;
    let attributes = state.broker.attributes(&meta.tenant).await?;
    if params.flag("details")? {
        let items = attributes
            .iter()
            .map(|a| object(attribute_json(a, &context, false)))
            .collect();
        return Ok(responder.list(StatusCode::OK, items));
    }
    let names: Vec<String> = attributes.iter().map(|a| context.compact(&a.name)).collect();
    Ok(responder.object(
        StatusCode::OK,
        object(json!({
            "id": format!("urn:ngsi-ld:AttributeList:{}", uuid_like(&names)),
            "type": "AttributeList",
            "attributeList": names,
        })),
    ))
}

/// An Attribute (clause 5.2.28). The counts and kinds are only given for
/// one attribute, not in the `details=true` list (clause 5.7.8 vs 5.7.9).
fn attribute_json(a: &piazza_store::AttributeSummary, context: &piazza_ngsild::ActiveContext, counts: bool) -> Value {
    let mut body = json!({
        "id": a.name,
        "type": "Attribute",
        "attributeName": context.compact(&a.name),
        "typeNames": a.types.iter().map(|t| context.compact(t)).collect::<Vec<_>>(),
    });
    if counts {
        body["attributeCount"] = json!(a.entity_count);
        body["attributeTypes"] = json!(kinds(&a.kinds));
    }
    body
}

pub async fn attribute_info(
    State(state): State<Arc<AppState>>,
    meta: Meta,
    Path(name): Path<String>,
    RawQuery(raw): RawQuery,
) -> ApiResult<Response> {
    reject_unknown(raw.as_deref(), &["local"])?;
    let responder = Responder::new(meta.accept(false)?, meta.link.as_deref());
    let context = link_context(&state, &meta).await?;
    let expanded = context.expand(&name);
    let attributes = state.broker.attributes(&meta.tenant).await?;
    let found = attributes
        .iter()
        .find(|a| a.name == expanded)
        .ok_or_else(|| NgsiError::not_found(format!("no attribute {name}")))?;
    Ok(responder.object(StatusCode::OK, object(attribute_json(found, &context, true))))
}

/// A deterministic id for a list resource: the same list, the same id.
fn uuid_like(names: &[String]) -> String {
    let hash = names
        .iter()
        .flat_map(|n| n.bytes().chain([0]))
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("{hash:016x}")
}
