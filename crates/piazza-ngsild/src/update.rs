//! The update semantics of clause 5.6: how a fragment changes an entity.
//!
//! Each function takes the current entity and a parsed fragment and changes
//! the entity in place, stamping system attributes with `now`. None does
//! I/O; the broker runs them inside a storage transaction.

use crate::entity::{Attribute, AttributePatch, Entity};
use crate::error::{NgsiError, Result};
use crate::time::Timestamp;

/// An attribute a request named but did not change, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotUpdated {
    /// Expanded attribute name.
    pub name: String,
    pub reason: String,
}

/// What an update did, attribute by attribute (expanded names).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdateOutcome {
    pub updated: Vec<String>,
    pub not_updated: Vec<NotUpdated>,
}

impl UpdateOutcome {
    pub fn is_complete(&self) -> bool {
        self.not_updated.is_empty()
    }
}

fn add_types(entity: &mut Entity, types: Vec<String>) {
    for t in types {
        if !entity.types.contains(&t) {
            entity.types.push(t);
        }
    }
}

/// Puts one instance in place of the instance with the same datasetId (or
/// adds it), keeping the replaced instance's `createdAt`.
fn upsert_instance(entity: &mut Entity, name: &str, mut instance: Attribute, now: Timestamp) {
    let instances = entity.attributes.entry(name.to_owned()).or_default();
    match instances.iter_mut().find(|i| i.dataset_id == instance.dataset_id) {
        Some(existing) => {
            instance.stamp(now, existing.created_at);
            *existing = instance;
        }
        None => {
            instance.stamp(now, None);
            instances.push(instance);
        }
    }
}

/// Append Entity Attributes (clause 5.6.3): adds attributes, overwriting
/// existing instances unless `no_overwrite`. Scopes are replaced, or added
/// to with `no_overwrite`.
pub fn append_attributes(entity: &mut Entity, fragment: Entity, no_overwrite: bool, now: Timestamp) -> UpdateOutcome {
    let mut outcome = UpdateOutcome::default();
    add_types(entity, fragment.types);
    if fragment.expires_at.is_some() {
        entity.expires_at = fragment.expires_at;
    }
    if !fragment.scope.is_empty() {
        if no_overwrite {
            for scope in fragment.scope {
                if !entity.scope.contains(&scope) {
                    entity.scope.push(scope);
                }
            }
        } else {
            entity.scope = fragment.scope;
        }
    }
    for (name, instances) in fragment.attributes {
        let mut changed = false;
        for instance in instances {
            if no_overwrite && entity.instance(&name, instance.dataset_id.as_deref()).is_some() {
                continue;
            }
            upsert_instance(entity, &name, instance, now);
            changed = true;
        }
        if changed {
            outcome.updated.push(name);
        } else {
            outcome.not_updated.push(NotUpdated {
                name,
                reason: "attribute already exists and noOverwrite was requested".into(),
            });
        }
    }
    entity.modified_at = Some(now);
    outcome
}

/// Update Entity Attributes (clause 5.6.2): each instance given replaces the
/// instance with its datasetId (or is added); an NGSI-LD Null deletes it.
/// Types are added; a scope can only replace an existing scope.
pub fn update_attributes(entity: &mut Entity, fragment: Entity, now: Timestamp) -> UpdateOutcome {
    let mut outcome = UpdateOutcome::default();
    add_types(entity, fragment.types);
    if fragment.expires_at.is_some() {
        entity.expires_at = fragment.expires_at;
    }
    if !fragment.scope.is_empty() {
        if entity.scope.is_empty() {
            outcome.not_updated.push(NotUpdated {
                name: "scope".into(),
                reason: "the entity has no scope to update".into(),
            });
        } else {
            entity.scope = fragment.scope;
            outcome.updated.push("scope".into());
        }
    }
    for (name, instances) in fragment.attributes {
        for instance in instances {
            if instance.is_null() {
                remove_instance(entity, &name, instance.dataset_id.as_deref());
            } else {
                upsert_instance(entity, &name, instance, now);
            }
        }
        outcome.updated.push(name);
    }
    entity.modified_at = Some(now);
    outcome
}

fn remove_instance(entity: &mut Entity, name: &str, dataset_id: Option<&str>) -> bool {
    let Some(instances) = entity.attributes.get_mut(name) else {
        return false;
    };
    let before = instances.len();
    instances.retain(|i| i.dataset_id.as_deref() != dataset_id);
    let removed = instances.len() != before;
    if instances.is_empty() {
        entity.attributes.shift_remove(name);
    }
    removed
}

/// Partial Attribute Update (clause 5.6.4): merges the given members into
/// the existing instance(s) of one attribute; a Null value deletes.
pub fn partial_update_attribute(
    entity: &mut Entity,
    name: &str,
    patches: Vec<AttributePatch>,
    now: Timestamp,
) -> Result<()> {
    let Some(instances) = entity.attributes.get(name) else {
        return Err(NgsiError::not_found(format!(
            "entity {} has no attribute {name}",
            entity.id
        )));
    };
    for patch in &patches {
        let dataset_id = patch.attribute.dataset_id.as_deref();
        let Some(existing) = instances.iter().find(|i| i.dataset_id.as_deref() == dataset_id) else {
            return Err(NgsiError::not_found(format!(
                "attribute {name} has no instance with datasetId {}",
                dataset_id.unwrap_or("(default)")
            )));
        };
        if patch.has_kind && patch.attribute.kind != existing.kind {
            return Err(NgsiError::bad_request(format!(
                "attribute {name} is a {}, not a {}",
                existing.kind.name(),
                patch.attribute.kind.name()
            )));
        }
    }
    for patch in patches {
        let dataset_id = patch.attribute.dataset_id.clone();
        if patch.has_value && patch.attribute.is_null() {
            remove_instance(entity, name, dataset_id.as_deref());
            continue;
        }
        let instances = entity.attributes.get_mut(name).into_iter().flatten();
        if let Some(existing) = instances.into_iter().find(|i| i.dataset_id == dataset_id) {
            let mut attribute = patch.attribute;
            if !patch.has_kind {
                attribute.kind = existing.kind;
            }
            existing.merge_from(attribute, now);
        }
    }
    entity.modified_at = Some(now);
    Ok(())
}

/// Replace Attribute (clause 5.6.19): the attribute must exist.
pub fn replace_attribute(entity: &mut Entity, name: &str, replacement: Vec<Attribute>, now: Timestamp) -> Result<()> {
    if !entity.attributes.contains_key(name) {
        return Err(NgsiError::not_found(format!(
            "entity {} has no attribute {name}",
            entity.id
        )));
    }
    for instance in replacement {
        upsert_instance(entity, name, instance, now);
    }
    entity.modified_at = Some(now);
    Ok(())
}

/// Merge Entity (clause 5.6.17): a JSON merge patch in NGSI-LD terms.
/// Attributes are merged instance by instance; NGSI-LD Nulls delete.
pub fn merge_entity(entity: &mut Entity, fragment: Entity, now: Timestamp) -> UpdateOutcome {
    let mut outcome = UpdateOutcome::default();
    add_types(entity, fragment.types);
    if !fragment.scope.is_empty() {
        entity.scope = fragment.scope;
    }
    if fragment.expires_at.is_some() {
        entity.expires_at = fragment.expires_at;
    }
    for (name, instances) in fragment.attributes {
        for instance in instances {
            let dataset_id = instance.dataset_id.clone();
            if instance.is_null() && instance.sub.is_empty() {
                remove_instance(entity, &name, dataset_id.as_deref());
                continue;
            }
            let existing = entity
                .attributes
                .get_mut(&name)
                .and_then(|all| all.iter_mut().find(|i| i.dataset_id == dataset_id));
            match existing {
                Some(existing) => existing.merge_from(instance, now),
                None => upsert_instance(entity, &name, instance, now),
            }
        }
        outcome.updated.push(name);
    }
    entity.modified_at = Some(now);
    outcome
}

/// Replace Entity (clause 5.6.18): everything but id and `createdAt` is replaced.
pub fn replace_entity(entity: &mut Entity, mut replacement: Entity, now: Timestamp) {
    let created_at = entity.created_at;
    replacement.id = entity.id.clone();
    if replacement.types.is_empty() {
        replacement.types = entity.types.clone();
    }
    replacement.stamp_new(now);
    replacement.created_at = created_at;
    *entity = replacement;
}

/// Delete Entity Attribute (clause 5.6.5): one instance (`dataset_id`, or the
/// default instance), or every instance with `delete_all`.
pub fn delete_attribute(
    entity: &mut Entity,
    name: &str,
    dataset_id: Option<&str>,
    delete_all: bool,
    now: Timestamp,
) -> Result<()> {
    let missing = || NgsiError::not_found(format!("entity {} has no attribute {name}", entity.id));
    if name == "scope" {
        if entity.scope.is_empty() {
            return Err(missing());
        }
        entity.scope.clear();
        entity.modified_at = Some(now);
        return Ok(());
    }
    let Some(instances) = entity.attributes.get_mut(name) else {
        return Err(missing());
    };
    if delete_all {
        entity.attributes.shift_remove(name);
    } else {
        let before = instances.len();
        instances.retain(|i| i.dataset_id.as_deref() != dataset_id);
        if instances.len() == before {
            return Err(missing());
        }
        if instances.is_empty() {
            entity.attributes.shift_remove(name);
        }
    }
    entity.modified_at = Some(now);
    Ok(())
}

#[cfg(test)]
mod tests;
