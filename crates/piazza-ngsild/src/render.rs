//! Rendering entities for a requester: compaction to its @context and the
//! representations of clause 4.5 (normalized, concise, keyValues/simplified)
//! plus the GeoJSON one (clause 4.5.16).

use serde_json::{json, Map, Value};

use crate::entity::{Attribute, AttributeKind, Entity};
use crate::jsonld::ActiveContext;
use crate::time;

/// The representation a requester asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Format {
    #[default]
    Normalized,
    Concise,
    KeyValues,
}

impl Format {
    /// Reads `options`/`format` values: `keyValues`, `simplified`, `concise`, `normalized`.
    pub fn from_option(option: &str) -> Option<Self> {
        match option {
            "keyValues" | "simplified" => Some(Self::KeyValues),
            "concise" => Some(Self::Concise),
            "normalized" => Some(Self::Normalized),
            _ => None,
        }
    }
}

/// How to render.
#[derive(Clone, Debug, Default)]
pub struct RenderOptions {
    pub format: Format,
    pub sys_attrs: bool,
    /// `lang`: the preferred language(s) for LanguageProperties; `*` for any.
    pub lang: Option<String>,
}

/// Renders one entity as a JSON object (without `@context`).
pub fn render_entity(entity: &Entity, context: &ActiveContext, options: &RenderOptions) -> Map<String, Value> {
    let mut out = Map::new();
    out.insert("id".into(), Value::String(entity.id.clone()));
    out.insert("type".into(), render_types(&entity.types, context));
    if !entity.scope.is_empty() {
        let scope = if entity.scope.len() == 1 {
            Value::String(entity.scope[0].clone())
        } else {
            Value::Array(entity.scope.iter().cloned().map(Value::String).collect())
        };
        out.insert("scope".into(), scope);
    }
    if options.sys_attrs {
        if let Some(created) = &entity.created_at {
            out.insert("createdAt".into(), Value::String(time::format(created)));
        }
        if let Some(modified) = &entity.modified_at {
            out.insert("modifiedAt".into(), Value::String(time::format(modified)));
        }
        if let Some(expires) = &entity.expires_at {
            out.insert("expiresAt".into(), Value::String(expires.clone()));
        }
    }
    for (name, instances) in &entity.attributes {
        if instances.is_empty() {
            continue;
        }
        out.insert(context.compact(name), render_instances(instances, context, options));
    }
    out
}

/// Renders entity types: one string, or an array for several.
pub fn render_types(types: &[String], context: &ActiveContext) -> Value {
    if types.len() == 1 {
        Value::String(context.compact(&types[0]))
    } else {
        Value::Array(types.iter().map(|t| Value::String(context.compact(t))).collect())
    }
}

/// Renders all instances of one attribute.
pub fn render_instances(instances: &[Attribute], context: &ActiveContext, options: &RenderOptions) -> Value {
    if options.format == Format::KeyValues {
        if instances.len() == 1 && instances[0].dataset_id.is_none() {
            return key_value(&instances[0], context, options);
        }
        // Several instances: keyed by datasetId, `@none` for the default one.
        let dataset: Map<String, Value> = instances
            .iter()
            .map(|i| {
                (
                    i.dataset_id.clone().unwrap_or_else(|| "@none".into()),
                    key_value(i, context, options),
                )
            })
            .collect();
        return json!({ "dataset": dataset });
    }
    if instances.len() == 1 {
        render_attribute(&instances[0], context, options)
    } else {
        Value::Array(
            instances
                .iter()
                .map(|i| render_attribute(i, context, options))
                .collect(),
        )
    }
}

/// Renders one attribute instance in the normalized or concise form.
pub fn render_attribute(attribute: &Attribute, context: &ActiveContext, options: &RenderOptions) -> Value {
    if options.format == Format::KeyValues {
        return key_value(attribute, context, options);
    }
    let concise = options.format == Format::Concise;
    let mut out = Map::new();
    let (kind, value_key, value) = localized(attribute, context, options);
    if concise && is_bare(attribute, options) {
        // Concise: an attribute with nothing but its value is the value itself.
        match kind {
            AttributeKind::Property if !value.is_object() && !value.is_array() => return value,
            AttributeKind::GeoProperty => return value,
            _ => {}
        }
    }
    if !concise || matches!(kind, AttributeKind::JsonProperty) {
        out.insert("type".into(), Value::String(kind.name().into()));
    }
    out.insert(value_key.into(), value);
    if let Some(lang) = lang_tag(attribute, options) {
        out.insert("lang".into(), Value::String(lang));
    }
    if let Some(object_type) = &attribute.object_type {
        out.insert("objectType".into(), compact_vocab(object_type, context));
    }
    if let Some(dataset_id) = &attribute.dataset_id {
        out.insert("datasetId".into(), Value::String(dataset_id.clone()));
    }
    if let Some(observed_at) = &attribute.observed_at {
        out.insert("observedAt".into(), Value::String(observed_at.clone()));
    }
    if let Some(unit_code) = &attribute.unit_code {
        out.insert("unitCode".into(), Value::String(unit_code.clone()));
    }
    if options.sys_attrs {
        if let Some(created) = &attribute.created_at {
            out.insert("createdAt".into(), Value::String(time::format(created)));
        }
        if let Some(modified) = &attribute.modified_at {
            out.insert("modifiedAt".into(), Value::String(time::format(modified)));
        }
        if let Some(expires) = &attribute.expires_at {
            out.insert("expiresAt".into(), Value::String(expires.clone()));
        }
    }
    for (name, sub) in &attribute.sub {
        out.insert(context.compact(name), render_attribute(sub, context, options));
    }
    Value::Object(out)
}

fn is_bare(attribute: &Attribute, options: &RenderOptions) -> bool {
    attribute.sub.is_empty()
        && attribute.dataset_id.is_none()
        && attribute.observed_at.is_none()
        && attribute.unit_code.is_none()
        && attribute.object_type.is_none()
        && !options.sys_attrs
}

/// The kind, value member and value of an attribute as the requester sees
/// it: with `lang`, a LanguageProperty becomes a Property in one language.
fn localized(
    attribute: &Attribute,
    context: &ActiveContext,
    options: &RenderOptions,
) -> (AttributeKind, &'static str, Value) {
    match attribute.kind {
        AttributeKind::LanguageProperty if options.lang.is_some() => {
            let (_, text) = pick_language(&attribute.value, options.lang.as_deref().unwrap_or("*"));
            (AttributeKind::Property, "value", text)
        }
        AttributeKind::VocabProperty => (attribute.kind, "vocab", compact_vocab(&attribute.value, context)),
        kind => (kind, kind.value_key(), attribute.value.clone()),
    }
}

fn lang_tag(attribute: &Attribute, options: &RenderOptions) -> Option<String> {
    if attribute.kind != AttributeKind::LanguageProperty {
        return None;
    }
    let wanted = options.lang.as_deref()?;
    pick_language(&attribute.value, wanted).0
}

/// Chooses the string of a language map for a `lang` preference list
/// (e.g. `it,en;q=0.8`, `*`), as HTTP language negotiation would: by
/// quality, case-insensitively, a range matching its subtags (`en` matches
/// `en-US`, `nl-BE` falls back to `nl`); else `@none`, else any entry.
pub fn pick_language(language_map: &Value, wanted: &str) -> (Option<String>, Value) {
    let Some(map) = language_map.as_object() else {
        return (None, Value::Null);
    };
    let mut preferences: Vec<(&str, f32)> = wanted
        .split(',')
        .map(|part| {
            let mut pieces = part.trim().split(';');
            let tag = pieces.next().unwrap_or("").trim();
            let weight = pieces
                .find_map(|p| p.trim().strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()))
                .unwrap_or(1.0);
            (tag, weight)
        })
        .filter(|(tag, weight)| !tag.is_empty() && *weight > 0.0)
        .collect();
    preferences.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
    for (tag, _) in &preferences {
        if *tag == "*" {
            break;
        }
        if let Some((key, text)) = best_language_match(map, tag) {
            return (Some(key.clone()), text.clone());
        }
    }
    if let Some(text) = map.get("@none") {
        return (Some("@none".into()), text.clone());
    }
    match map.iter().next() {
        Some((tag, text)) => (Some(tag.clone()), text.clone()),
        None => (None, Value::Null),
    }
}

fn best_language_match<'a>(map: &'a Map<String, Value>, range: &str) -> Option<(&'a String, &'a Value)> {
    let range = range.to_ascii_lowercase();
    let exact = map.iter().find(|(key, _)| key.to_ascii_lowercase() == range);
    let narrower = || {
        map.iter()
            .find(|(key, _)| key.to_ascii_lowercase().starts_with(&format!("{range}-")))
    };
    let broader = || {
        map.iter()
            .filter(|(key, _)| range.starts_with(&format!("{}-", key.to_ascii_lowercase())))
            .max_by_key(|(key, _)| key.len())
    };
    exact.or_else(narrower).or_else(broader)
}

fn compact_vocab(value: &Value, context: &ActiveContext) -> Value {
    match value {
        Value::String(s) => Value::String(context.compact(s)),
        Value::Array(items) => Value::Array(items.iter().map(|i| compact_vocab(i, context)).collect()),
        other => other.clone(),
    }
}

fn key_value(attribute: &Attribute, context: &ActiveContext, options: &RenderOptions) -> Value {
    match attribute.kind {
        AttributeKind::LanguageProperty if options.lang.is_some() => {
            pick_language(&attribute.value, options.lang.as_deref().unwrap_or("*")).1
        }
        AttributeKind::LanguageProperty => json!({ "languageMap": attribute.value }),
        AttributeKind::VocabProperty => json!({ "vocab": compact_vocab(&attribute.value, context) }),
        AttributeKind::ListRelationship => match &attribute.value {
            Value::Array(items) => Value::Array(
                items
                    .iter()
                    .map(|i| i.get("object").cloned().unwrap_or(Value::Null))
                    .collect(),
            ),
            other => other.clone(),
        },
        AttributeKind::JsonProperty => json!({ "json": attribute.value }),
        _ => attribute.value.clone(),
    }
}

/// Renders an entity as a GeoJSON Feature (clause 4.5.16), using the
/// GeoProperty `geometry_property` (expanded) for `geometry`.
pub fn render_feature(
    entity: &Entity,
    context: &ActiveContext,
    options: &RenderOptions,
    geometry_property: &str,
) -> Map<String, Value> {
    let mut properties = render_entity(entity, context, options);
    let id = properties.remove("id").unwrap_or(Value::Null);
    let geometry = entity
        .attributes
        .get(geometry_property)
        .and_then(|instances| {
            // The default instance, when there are several.
            let geo = || instances.iter().filter(|i| i.kind == AttributeKind::GeoProperty);
            geo().find(|i| i.dataset_id.is_none()).or_else(|| geo().next())
        })
        .map(|a| a.value.clone())
        .unwrap_or(Value::Null);
    let mut feature = Map::new();
    feature.insert("id".into(), id);
    feature.insert("type".into(), Value::String("Feature".into()));
    feature.insert("geometry".into(), geometry);
    feature.insert("properties".into(), Value::Object(properties));
    feature
}
