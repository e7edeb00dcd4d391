//! The temporal API services (clauses 5.6.11–5.6.16, 5.7.3–5.7.4): reading
//! histories and provisioning them directly. Histories of ordinary entity
//! changes are recorded by the store in the change's own transaction.

use std::sync::Arc;

use piazza_ngsild::entity::{is_valid_name, parse_attribute, parse_entity, ParseOptions};
use piazza_ngsild::query::EntityQuery;
use piazza_ngsild::temporal::{TemporalEntity, TemporalQuery};
use piazza_ngsild::{ActiveContext, Attribute, NgsiError};
use piazza_store::{Page, TemporalEdit, TemporalQueryResult, Tenant};
use serde_json::{Map, Value};

use crate::{check_attribute_name, check_id, Broker, BrokerResult, Payload};

/// Entity members of a temporal representation that are not attributes.
const NOT_ATTRIBUTES: &[&str] = &[
    "id",
    "@id",
    "type",
    "@type",
    "@context",
    "scope",
    "createdAt",
    "modifiedAt",
    "deletedAt",
];

/// A temporal representation read from a body: id, types, scope, and the
/// instances of each attribute (expanded names).
struct TemporalBody {
    id: String,
    types: Vec<String>,
    scope: Vec<String>,
    attributes: Vec<(String, Vec<Attribute>)>,
}

fn parse_temporal(body: &Value, context: &ActiveContext, complete: bool) -> Result<TemporalBody, NgsiError> {
    let Value::Object(members) = body else {
        return Err(NgsiError::bad_request("a temporal entity must be a JSON object"));
    };
    // The entity members are checked by the entity parser, without the
    // attributes (whose instances, unlike an entity's, may share a datasetId).
    let mut core: Map<String, Value> = members
        .iter()
        .filter(|(k, _)| matches!(k.as_str(), "id" | "@id" | "type" | "@type" | "scope"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(scope) = core.get_mut("scope") {
        *scope = current_scope(scope)?;
    }
    let options = if complete {
        ParseOptions::CREATE
    } else {
        ParseOptions::FRAGMENT
    };
    let entity = parse_entity(&Value::Object(core), context, options)?;
    let mut attributes = Vec::new();
    for (name, value) in members {
        if NOT_ATTRIBUTES.contains(&name.as_str()) {
            continue;
        }
        if !is_valid_name(name) || matches!(name.as_str(), "instanceId" | "observedAt" | "datasetId" | "unitCode") {
            return Err(NgsiError::bad_request(format!("invalid attribute name '{name}'")));
        }
        let expanded = context.expand(name);
        if expanded.starts_with('@') {
            return Err(NgsiError::bad_request(format!(
                "attribute name '{name}' is a JSON-LD keyword"
            )));
        }
        attributes.push((expanded, parse_instances(name, value, context)?));
    }
    Ok(TemporalBody {
        id: entity.id,
        types: entity.types,
        scope: entity.scope,
        attributes,
    })
}

/// The scope of a temporal representation: plain (a string or an array of
/// them), or its history as Property instances (clause 4.18), of which the
/// latest (by `observedAt`, else the last given) is the current scope.
fn current_scope(scope: &Value) -> Result<Value, NgsiError> {
    let instances: Vec<&Map<String, Value>> = match scope {
        Value::Object(instance) => vec![instance],
        Value::Array(items) if items.iter().all(Value::is_object) && !items.is_empty() => {
            items.iter().filter_map(Value::as_object).collect()
        }
        plain => return Ok(plain.clone()),
    };
    let mut latest: Option<(Option<piazza_ngsild::time::Timestamp>, &Value)> = None;
    for instance in instances {
        if instance.get("type").is_some_and(|t| t != "Property") {
            return Err(NgsiError::bad_request("scope instances must be Properties"));
        }
        let value = instance
            .get("value")
            .ok_or_else(|| NgsiError::bad_request("a scope instance needs a value"))?;
        let at = instance
            .get("observedAt")
            .and_then(Value::as_str)
            .and_then(piazza_ngsild::time::parse);
        if latest.is_none_or(|(t, _)| at >= t) {
            latest = Some((at, value));
        }
    }
    Ok(latest.map_or(Value::Null, |(_, v)| v.clone()))
}

/// The instances of one attribute: one object or an array of them.
fn parse_instances(name: &str, value: &Value, context: &ActiveContext) -> Result<Vec<Attribute>, NgsiError> {
    let items: Vec<&Value> = match value {
        Value::Array(items) if items.is_empty() => {
            return Err(NgsiError::bad_request(format!("attribute '{name}' has no instances")))
        }
        Value::Array(items) => items.iter().collect(),
        other => vec![other],
    };
    let mut instances = Vec::with_capacity(items.len());
    for item in items {
        // An instance may record a deletion: `"value": "urn:ngsi-ld:null"`
        // (clause 5.5.4, temporal exception). A bare null member stays refused.
        let mut parsed = parse_attribute(name, item, context, item.is_object())?;
        instances.append(&mut parsed);
    }
    Ok(instances)
}

impl Broker {
    /// Retrieve Temporal Evolution of an Entity (clause 5.7.3).
    pub async fn temporal_entity(
        &self,
        tenant: &Tenant,
        id: &str,
        query: &TemporalQuery,
    ) -> BrokerResult<TemporalEntity> {
        check_id(id)?;
        self.require_tenant(tenant).await?;
        self.store
            .temporal_entity(tenant, id, query)
            .await?
            .ok_or_else(|| NgsiError::not_found(format!("temporal entity {id} not found")).into())
    }

    /// Query Temporal Evolution of Entities (clause 5.7.4).
    pub async fn temporal_query(
        &self,
        tenant: &Tenant,
        entities: EntityQuery,
        query: &TemporalQuery,
        page: Page,
    ) -> BrokerResult<TemporalQueryResult> {
        self.require_tenant(tenant).await?;
        Ok(self
            .store
            .temporal_query(tenant, Arc::new(entities), query, page)
            .await?)
    }

    /// Create or Update Temporal Representation of an Entity (clause
    /// 5.6.11); returns whether it was created.
    pub async fn upsert_temporal(&self, tenant: &Tenant, payload: Payload) -> BrokerResult<bool> {
        let body = parse_temporal(&payload.body, &payload.context, true)?;
        let edit = TemporalEdit::Upsert {
            id: body.id,
            types: body.types,
            scope: body.scope,
            attributes: body.attributes,
        };
        Ok(self.store.temporal_edit(tenant, edit).await??)
    }

    /// Add Attributes to Temporal Representation of an Entity (clause 5.6.12).
    pub async fn append_temporal(&self, tenant: &Tenant, id: &str, payload: Payload) -> BrokerResult<()> {
        check_id(id)?;
        let body = parse_temporal(&payload.body, &payload.context, false)?;
        if !body.id.is_empty() && body.id != id {
            return Err(NgsiError::bad_request(format!("the body's id {} does not match {id}", body.id)).into());
        }
        self.require_tenant(tenant).await?;
        let edit = TemporalEdit::Append {
            id: id.to_owned(),
            attributes: body.attributes,
        };
        self.store.temporal_edit(tenant, edit).await??;
        Ok(())
    }

    /// Delete Temporal Representation of an Entity (clause 5.6.16).
    pub async fn delete_temporal(&self, tenant: &Tenant, id: &str) -> BrokerResult<()> {
        check_id(id)?;
        self.require_tenant(tenant).await?;
        let edit = TemporalEdit::DeleteEntity { id: id.to_owned() };
        self.store.temporal_edit(tenant, edit).await??;
        Ok(())
    }

    /// Delete Attribute from Temporal Representation of an Entity (clause 5.6.13).
    pub async fn delete_temporal_attribute(
        &self,
        tenant: &Tenant,
        id: &str,
        attr: &str,
        context: &ActiveContext,
        dataset_id: Option<String>,
        delete_all: bool,
    ) -> BrokerResult<()> {
        check_id(id)?;
        check_attribute_name(attr)?;
        self.require_tenant(tenant).await?;
        let edit = TemporalEdit::DeleteAttribute {
            id: id.to_owned(),
            attr: context.expand(attr),
            dataset_id: dataset_id.filter(|d| d != "@none"),
            delete_all,
        };
        self.store.temporal_edit(tenant, edit).await??;
        Ok(())
    }

    /// Modify Attribute instance in Temporal Representation of an Entity (clause 5.6.14).
    pub async fn modify_temporal_instance(
        &self,
        tenant: &Tenant,
        id: &str,
        attr: &str,
        instance_id: &str,
        payload: Payload,
    ) -> BrokerResult<()> {
        check_id(id)?;
        check_attribute_name(attr)?;
        check_instance_id(instance_id)?;
        let name = payload.context.expand(attr);
        // The fragment is the instance itself or `{attr: instance}`.
        let fragment = match payload.body.get(attr) {
            Some(inner) => inner.clone(),
            None => payload.body.clone(),
        };
        let fragment = match fragment {
            Value::Object(mut map) => {
                map.remove("@context");
                map.remove("instanceId");
                Value::Object(map)
            }
            other => other,
        };
        let mut instances = parse_attribute(attr, &fragment, &payload.context, false)?;
        let instance = match (instances.pop(), instances.is_empty()) {
            (Some(instance), true) => instance,
            _ => return Err(NgsiError::bad_request("exactly one attribute instance is expected").into()),
        };
        self.require_tenant(tenant).await?;
        let edit = TemporalEdit::ModifyInstance {
            id: id.to_owned(),
            attr: name,
            instance_id: instance_id.to_owned(),
            instance: Box::new(instance),
        };
        self.store.temporal_edit(tenant, edit).await??;
        Ok(())
    }

    /// Delete Attribute instance from Temporal Representation of an Entity (clause 5.6.15).
    pub async fn delete_temporal_instance(
        &self,
        tenant: &Tenant,
        id: &str,
        attr: &str,
        instance_id: &str,
        context: &ActiveContext,
    ) -> BrokerResult<()> {
        check_id(id)?;
        check_attribute_name(attr)?;
        check_instance_id(instance_id)?;
        self.require_tenant(tenant).await?;
        let edit = TemporalEdit::DeleteInstance {
            id: id.to_owned(),
            attr: context.expand(attr),
            instance_id: instance_id.to_owned(),
        };
        self.store.temporal_edit(tenant, edit).await??;
        Ok(())
    }
}

fn check_instance_id(instance_id: &str) -> Result<(), NgsiError> {
    if piazza_ngsild::entity::is_uri(instance_id) {
        Ok(())
    } else {
        Err(NgsiError::bad_request(format!(
            "instance id '{instance_id}' is not a URI"
        )))
    }
}
