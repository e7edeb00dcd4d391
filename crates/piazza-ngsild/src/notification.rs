//! Notifications (clauses 5.8.6, 5.2.12, 5.3.1), the pure parts: which change
//! of an entity owes a subscription a notification ([`Watch::notice`]), and
//! what the notified entity looks like ([`render_notice`]).
//!
//! A [`Notice`] is decided inside the transaction of the change and kept
//! with it (the outbox), so it carries everything rendering needs later: the
//! entity as it became, what was removed, and the previous values when the
//! subscription asked for `showChanges`.

use indexmap::IndexMap;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::entity::{Attribute, AttributeKind, Entity, Members, NGSI_NULL};
use crate::jsonld::ActiveContext;
use crate::query::EntityQuery;
use crate::render::{render_attribute, render_entity, render_types, Format, RenderOptions};
use crate::time::{self, Timestamp};

/// What kind of change a subscription is told about (`notificationTrigger`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Trigger {
    EntityCreated,
    EntityUpdated,
    EntityDeleted,
    AttributeCreated,
    AttributeUpdated,
    AttributeDeleted,
}

impl Trigger {
    pub const ALL: [Trigger; 6] = [
        Self::EntityCreated,
        Self::EntityUpdated,
        Self::EntityDeleted,
        Self::AttributeCreated,
        Self::AttributeUpdated,
        Self::AttributeDeleted,
    ];

    /// The triggers of a subscription without `notificationTrigger`.
    pub const DEFAULT: [Trigger; 2] = [Self::AttributeCreated, Self::AttributeUpdated];

    pub fn name(self) -> &'static str {
        match self {
            Self::EntityCreated => "entityCreated",
            Self::EntityUpdated => "entityUpdated",
            Self::EntityDeleted => "entityDeleted",
            Self::AttributeCreated => "attributeCreated",
            Self::AttributeUpdated => "attributeUpdated",
            Self::AttributeDeleted => "attributeDeleted",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }
}

/// The part of a subscription that decides whether a change is notified.
#[derive(Clone, Debug)]
pub struct Watch {
    /// `entities`, `q`, `geoQ` and `scopeQ`.
    pub selection: EntityQuery,
    /// `watchedAttributes`, expanded; empty watches every attribute.
    pub watched: Vec<String>,
    pub triggers: Vec<Trigger>,
    /// Whether notices keep the previous values of what changed.
    pub show_changes: bool,
}

/// One change of one attribute instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InstanceChange {
    Created,
    Updated,
    Deleted,
}

/// A notification owed to a subscription for one change of one entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    pub trigger: Trigger,
    /// The entity after the change (before it, for a deletion).
    pub entity: Entity,
    /// When the entity was deleted.
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde_opt")]
    pub deleted_at: Option<Timestamp>,
    /// When the change happened (the `deletedAt` of removed attributes).
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde_opt")]
    pub at: Option<Timestamp>,
    /// Attribute instances the change removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub removed: Vec<Removed>,
    /// The instances as they were before, of what changed (`showChanges`).
    #[serde(default, skip_serializing_if = "IndexMap::is_empty")]
    pub previous: Members<Vec<Attribute>>,
}

/// An attribute instance a change removed, as its Null will be rendered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Removed {
    /// Expanded name.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dataset_id: Option<String>,
    pub kind: AttributeKind,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde_opt")]
    pub created_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none", with = "time::serde_opt")]
    pub modified_at: Option<Timestamp>,
}

impl Watch {
    /// The notice this change owes, if any. `now` is the time of the change.
    pub fn notice(&self, before: Option<&Entity>, after: Option<&Entity>, now: Timestamp) -> Option<Notice> {
        let subject = after.or(before)?;
        if !self.selection.matches(subject) {
            return None;
        }
        let changes: Vec<_> = instance_changes(before, after)
            .into_iter()
            .filter(|(name, _, _)| self.watched.is_empty() || self.watched.iter().any(|w| w == name))
            .collect();
        let has = |wanted: InstanceChange| changes.iter().any(|(_, _, c)| *c == wanted);
        let candidates: &[(Trigger, bool)] = match (before, after) {
            (None, Some(_)) => &[
                (Trigger::EntityCreated, true),
                (Trigger::AttributeCreated, has(InstanceChange::Created)),
            ],
            (Some(_), None) => &[
                (Trigger::EntityDeleted, true),
                (Trigger::AttributeDeleted, has(InstanceChange::Deleted)),
            ],
            _ => &[
                (Trigger::AttributeCreated, has(InstanceChange::Created)),
                (Trigger::AttributeUpdated, has(InstanceChange::Updated)),
                (Trigger::AttributeDeleted, has(InstanceChange::Deleted)),
                (Trigger::EntityUpdated, !changes.is_empty()),
            ],
        };
        let trigger = candidates
            .iter()
            .find(|(trigger, fired)| *fired && self.triggers.contains(trigger))?
            .0;
        Some(self.describe(trigger, before, after, subject, now))
    }

    fn describe(
        &self,
        trigger: Trigger,
        before: Option<&Entity>,
        after: Option<&Entity>,
        subject: &Entity,
        now: Timestamp,
    ) -> Notice {
        let all_changes = instance_changes(before, after);
        let watched = |name: &str| self.watched.is_empty() || self.watched.iter().any(|w| w == name);
        let removed = all_changes
            .iter()
            .filter(|(name, _, c)| *c == InstanceChange::Deleted && watched(name))
            .filter_map(|(name, dataset, _)| {
                let old = before?.instance(name, dataset.as_deref())?;
                Some(Removed {
                    name: name.clone(),
                    dataset_id: dataset.clone(),
                    kind: old.kind,
                    created_at: old.created_at,
                    modified_at: old.modified_at,
                })
            })
            .collect();
        let mut previous: Members<Vec<Attribute>> = Members::default();
        if self.show_changes {
            for (name, dataset, change) in &all_changes {
                if *change == InstanceChange::Created {
                    continue;
                }
                if let Some(old) = before.and_then(|b| b.instance(name, dataset.as_deref())) {
                    previous.entry(name.clone()).or_default().push(old.clone());
                }
            }
        }
        Notice {
            trigger,
            entity: subject.clone(),
            deleted_at: after.is_none().then_some(now),
            at: Some(now),
            removed,
            previous,
        }
    }
}

/// Every attribute instance that differs between the two states. An
/// instance rewritten with the same value still counts as updated: its
/// `modifiedAt` moved, and subscribers are told about every update.
fn instance_changes(before: Option<&Entity>, after: Option<&Entity>) -> Vec<(String, Option<String>, InstanceChange)> {
    let mut changes = Vec::new();
    let old = instances(before);
    let new = instances(after);
    for (name, instance) in &new {
        let dataset = instance.dataset_id.as_deref();
        match old
            .iter()
            .find(|(n, i)| n == name && i.dataset_id.as_deref() == dataset)
        {
            None => changes.push(((*name).clone(), instance.dataset_id.clone(), InstanceChange::Created)),
            Some((_, was)) if was != instance => {
                changes.push(((*name).clone(), instance.dataset_id.clone(), InstanceChange::Updated))
            }
            Some(_) => {}
        }
    }
    for (name, instance) in &old {
        let dataset = instance.dataset_id.as_deref();
        if !new.iter().any(|(n, i)| n == name && i.dataset_id.as_deref() == dataset) {
            changes.push(((*name).clone(), instance.dataset_id.clone(), InstanceChange::Deleted));
        }
    }
    changes
}

fn instances(entity: Option<&Entity>) -> Vec<(&String, &Attribute)> {
    entity
        .into_iter()
        .flat_map(|e| e.attributes.iter())
        .flat_map(|(name, instances)| instances.iter().map(move |i| (name, i)))
        .collect()
}

/// How a subscription wants its notified entities.
#[derive(Clone, Debug, Default)]
pub struct NoticeOptions {
    pub render: RenderOptions,
    /// `notification.attributes`, expanded; empty sends every attribute.
    pub attributes: Vec<String>,
    pub show_changes: bool,
    /// `notification.pick`, compacted member names (`id`, `type` included).
    pub pick: Option<Vec<String>>,
    /// `notification.omit`, compacted member names.
    pub omit: Vec<String>,
    /// The subscription's `datasetId`: only these instances are sent
    /// (`@none` for the default instance); empty sends all.
    pub dataset_ids: Vec<String>,
}

/// The notified entity (one item of a notification's `data`): the entity
/// as it became, removed attributes as NGSI-LD Null, previous values with
/// `showChanges`; a deleted entity is its id, type and `deletedAt`.
pub fn render_notice(notice: &Notice, context: &ActiveContext, options: &NoticeOptions) -> Map<String, Value> {
    let wanted = |name: &str| options.attributes.is_empty() || options.attributes.iter().any(|a| a == name);
    let in_dataset = |dataset_id: Option<&str>| {
        options.dataset_ids.is_empty() || options.dataset_ids.iter().any(|d| d == dataset_id.unwrap_or("@none"))
    };
    let mut entity = notice.entity.clone();
    entity.attributes.retain(|name, _| wanted(name));
    for instances in entity.attributes.values_mut() {
        instances.retain(|i| in_dataset(i.dataset_id.as_deref()));
    }
    entity.attributes.retain(|_, instances| !instances.is_empty());
    let removed: Vec<_> = notice
        .removed
        .iter()
        .filter(|r| wanted(&r.name) && in_dataset(r.dataset_id.as_deref()))
        .collect();
    let mut out = match notice.deleted_at {
        Some(at) => deleted_entity(&entity, at, context, options),
        None => render_entity(&entity, context, &options.render),
    };
    // A deleted entity lists its attributes only when asked for them.
    let list_removed =
        notice.deleted_at.is_none() || options.show_changes || notice.trigger == Trigger::AttributeDeleted;
    for removed in removed.into_iter().filter(|_| list_removed) {
        // An attribute gone entirely is one Null; else the removed instance.
        let gone = notice.deleted_at.is_some() || !notice.entity.attributes.contains_key(&removed.name);
        let dataset_id = if gone { None } else { removed.dataset_id.as_deref() };
        let mut null = null_instance(removed.kind, dataset_id, options.render.format);
        if let (Value::Object(instance), true) = (&mut null, options.render.sys_attrs) {
            let stamps = [
                ("createdAt", removed.created_at),
                ("modifiedAt", removed.modified_at),
                ("deletedAt", notice.at),
            ];
            for (key, stamp) in stamps {
                if let Some(stamp) = stamp {
                    instance.insert(key.into(), Value::String(time::format(&stamp)));
                }
            }
        }
        let key = context.compact(&removed.name);
        if gone && out.contains_key(&key) {
            continue;
        }
        push_instance(&mut out, key, null, dataset_id);
    }
    if options.show_changes && options.render.format != Format::KeyValues {
        for (name, instances) in &notice.previous {
            if wanted(name) {
                for instance in instances {
                    add_previous(&mut out, &context.compact(name), instance, context, &options.render);
                }
            }
        }
    }
    project(&mut out, options);
    out
}

/// Applies `pick` and `omit` to the members of a rendered entity.
fn project(out: &mut Map<String, Value>, options: &NoticeOptions) {
    if let Some(pick) = &options.pick {
        out.retain(|key, _| pick.iter().any(|p| p == key));
    }
    out.retain(|key, _| !options.omit.iter().any(|o| o == key));
}

/// A deleted entity: id, type and `deletedAt` (its attributes are added
/// by the caller when the subscription wants them).
fn deleted_entity(
    entity: &Entity,
    at: Timestamp,
    context: &ActiveContext,
    options: &NoticeOptions,
) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("id".into(), Value::String(entity.id.clone()));
    out.insert("type".into(), render_types(&entity.types, context));
    out.insert("deletedAt".into(), Value::String(time::format(&at)));
    if options.render.sys_attrs {
        if let Some(created) = &entity.created_at {
            out.insert("createdAt".into(), Value::String(time::format(created)));
        }
        if let Some(modified) = &entity.modified_at {
            out.insert("modifiedAt".into(), Value::String(time::format(modified)));
        }
    }
    out
}

/// An attribute instance carrying the NGSI-LD Null, in the requested format.
fn null_instance(kind: AttributeKind, dataset_id: Option<&str>, format: Format) -> Value {
    let null = Value::String(NGSI_NULL.into());
    if format == Format::KeyValues {
        return null;
    }
    let mut out = Map::new();
    out.insert("type".into(), Value::String(kind.name().into()));
    let value = match kind {
        AttributeKind::LanguageProperty => serde_json::json!({ "@none": NGSI_NULL }),
        _ => null,
    };
    out.insert(kind.value_key().into(), value);
    if let Some(dataset_id) = dataset_id {
        out.insert("datasetId".into(), Value::String(dataset_id.into()));
    }
    Value::Object(out)
}

/// Adds one instance to a rendered attribute: next to the others (an
/// array), or into the `dataset` map of the keyValues form.
fn push_instance(out: &mut Map<String, Value>, name: String, instance: Value, dataset_id: Option<&str>) {
    match out.get_mut(&name) {
        None => {
            out.insert(name, instance);
        }
        Some(Value::Array(items)) => items.push(instance),
        Some(Value::Object(map)) if map.contains_key("dataset") && !instance.is_object() => {
            if let Some(Value::Object(dataset)) = map.get_mut("dataset") {
                dataset.insert(dataset_id.unwrap_or("@none").to_owned(), instance);
            }
        }
        Some(existing) if !instance.is_object() => {
            // keyValues: the remaining value becomes a dataset map.
            let mut dataset = Map::new();
            dataset.insert("@none".into(), existing.take());
            dataset.insert(dataset_id.unwrap_or("@none").to_owned(), instance);
            *existing = serde_json::json!({ "dataset": dataset });
        }
        Some(existing) => {
            let first = existing.take();
            *existing = Value::Array(vec![first, instance]);
        }
    }
}

/// Adds `previousValue` (`previousObject`, `previousLanguageMap`, ...) to
/// the rendered instance with the same datasetId.
fn add_previous(
    out: &mut Map<String, Value>,
    name: &str,
    previous: &Attribute,
    context: &ActiveContext,
    options: &RenderOptions,
) {
    let normalized = RenderOptions {
        format: Format::Normalized,
        ..options.clone()
    };
    let rendered = render_attribute(previous, context, &normalized);
    let value_key = previous.kind.value_key();
    let Some(old_value) = rendered.get(value_key).cloned() else {
        return;
    };
    let previous_key = format!("previous{}{}", value_key[..1].to_ascii_uppercase(), &value_key[1..]);
    let same_dataset = |item: &Value| item.get("datasetId").and_then(Value::as_str) == previous.dataset_id.as_deref();
    let target = match out.get_mut(name) {
        Some(Value::Array(items)) => items.iter_mut().find(|i| same_dataset(i)),
        Some(item) if same_dataset(item) => Some(item),
        _ => None,
    };
    if let Some(Value::Object(instance)) = target {
        instance.insert(previous_key, old_value);
    }
}

#[cfg(test)]
mod tests;
