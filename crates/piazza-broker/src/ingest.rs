//! Services for importers (files today, live bridges later): an upsert that
//! leaves unchanged entities alone, and pre-loading @context documents.
//!
//! Why a separate upsert: an import is re-run whenever its source is
//! refreshed. A plain batch upsert restamps every attribute, so every re-run
//! would write every entity again and add one history instance per
//! attribute. Here an entity whose content is already stored is not
//! written at all, and only what really changed reaches history.

use piazza_ngsild::entity::{parse_entity, ParseOptions};
use piazza_ngsild::update::{self, UpdateOutcome};
use piazza_ngsild::{time, Attribute, Entity, NgsiError};
use piazza_store::{ContextKind, Edit, EditOutcome, NewState, StoredContext, Tenant};
use serde_json::Value;

use crate::{BatchItem, BatchPlan, Broker, BrokerResult, Payload};

/// How an imported entity meets the stored one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportMode {
    /// The imported entity is the whole entity (attributes not given are dropped).
    Replace,
    /// The imported attributes are added or overwritten; the others are kept.
    Update,
}

/// What importing one entity did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImportOutcome {
    Created,
    Updated,
    /// The store already held exactly this content: nothing was written.
    Unchanged,
}

/// The outcome of one entity of [`Broker::import_upsert`], in input order.
pub type ImportItem = BatchItem<ImportOutcome>;

impl Broker {
    /// Creates or changes each entity, as batch upsert does, but writes
    /// nothing (and records no history) for an entity whose content would
    /// not change. Entities are applied in order, each atomically, so
    /// several payloads may target the same entity (successive observations).
    pub async fn import_upsert(
        &self,
        tenant: &Tenant,
        payloads: Vec<Payload>,
        mode: ImportMode,
    ) -> BrokerResult<Vec<ImportItem>> {
        self.check_batch(payloads.len())?;
        let now = time::now();
        let mut plan = BatchPlan::default();
        for payload in payloads {
            let edit = parse_entity(&payload.body, &payload.context, ParseOptions::CREATE).map(|entity| {
                Edit::new(entity.id.clone(), move |existing| {
                    import_edit(existing, entity, mode, now)
                })
            });
            plan.push(&payload.body, edit);
        }
        // Through `commit`, like every write: subscriptions are notified of imports.
        self.run_batch(tenant, plan, |applied| {
            Ok(outcome_of(applied.before.as_ref(), applied.after.as_ref()))
        })
        .await
    }

    /// Keeps `document` (an object with `@context`) as the cached copy of
    /// the remote context at `url`, as if it had been fetched from there.
    /// Imports on air-gapped sites use it to bring the @contexts their files
    /// refer to (Smart Data Models) from local copies.
    pub async fn cache_context(&self, tenant: &Tenant, url: &str, document: Value) -> BrokerResult<()> {
        if !document.get("@context").is_some_and(|c| c.is_object() || c.is_array()) {
            return Err(NgsiError::bad_request(format!("the document for {url} has no @context object")).into());
        }
        let record = StoredContext {
            id: crate::contexts::cached_id(url),
            url: url.to_owned(),
            kind: ContextKind::Cached,
            document,
            created_at: time::now(),
        };
        self.store.put_context(tenant, record).await?;
        self.contexts.invalidate(tenant);
        Ok(())
    }
}

/// The edit of one imported entity. The outcome is told apart afterwards by
/// `before`/`after`: absent before is Created, equal is Unchanged (Keep).
fn import_edit(
    existing: Option<&Entity>,
    mut entity: Entity,
    mode: ImportMode,
    now: time::Timestamp,
) -> Result<EditOutcome, NgsiError> {
    let Some(current) = existing else {
        entity.stamp_new(now);
        return Ok(EditOutcome::put(entity, UpdateOutcome::default()));
    };
    let mut updated = current.clone();
    let report = match mode {
        ImportMode::Replace => {
            update::replace_entity(&mut updated, entity, now);
            UpdateOutcome::default()
        }
        ImportMode::Update => update::append_attributes(&mut updated, entity, false, now),
    };
    if same_content(current, &updated) {
        return Ok(EditOutcome {
            state: NewState::Keep,
            report,
        });
    }
    Ok(EditOutcome::put(updated, report))
}

/// Whether two entities hold the same data, system timestamps aside.
pub fn same_content(a: &Entity, b: &Entity) -> bool {
    a.id == b.id
        && a.types == b.types
        && a.scope == b.scope
        && a.expires_at == b.expires_at
        && a.attributes.len() == b.attributes.len()
        && a.attributes.iter().all(|(name, instances)| {
            b.attributes.get(name).is_some_and(|others| {
                instances.len() == others.len() && instances.iter().all(|i| others.iter().any(|o| same_attribute(i, o)))
            })
        })
}

fn same_attribute(a: &Attribute, b: &Attribute) -> bool {
    a.kind == b.kind
        && a.value == b.value
        && a.dataset_id == b.dataset_id
        && a.observed_at == b.observed_at
        && a.unit_code == b.unit_code
        && a.object_type == b.object_type
        && a.expires_at == b.expires_at
        && a.sub.len() == b.sub.len()
        && a.sub
            .iter()
            .all(|(name, sub)| b.sub.get(name).is_some_and(|other| same_attribute(sub, other)))
}

/// Tells the outcome of an applied import edit.
pub(crate) fn outcome_of(before: Option<&Entity>, after: Option<&Entity>) -> ImportOutcome {
    match (before, after) {
        (None, _) => ImportOutcome::Created,
        (Some(b), Some(a)) if b == a => ImportOutcome::Unchanged,
        _ => ImportOutcome::Updated,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use piazza_ngsild::AttributeKind;
    use serde_json::json;

    fn station(pm10: f64) -> Entity {
        let mut entity = Entity::new("urn:ngsi-ld:S:1", vec!["https://e/S".into()]);
        entity.attributes.insert(
            "https://e/pm10".into(),
            vec![Attribute::new(AttributeKind::Property, json!(pm10))],
        );
        entity
    }

    #[test]
    fn timestamps_do_not_make_content_differ() {
        let a = station(10.0);
        let mut b = station(10.0);
        b.stamp_new(time::now());
        assert!(same_content(&a, &b));
        assert!(!same_content(&a, &station(11.0)));
    }

    #[test]
    fn an_unchanged_entity_is_kept() {
        let mut stored = station(10.0);
        stored.stamp_new(time::now());
        let outcome = import_edit(Some(&stored), station(10.0), ImportMode::Replace, time::now()).expect("edit");
        assert!(matches!(outcome.state, NewState::Keep));
        let outcome = import_edit(Some(&stored), station(12.0), ImportMode::Update, time::now()).expect("edit");
        assert!(matches!(outcome.state, NewState::Put(_)));
    }
}
