//! Rendering entities for a requester: compaction to its @context and the
//! representations of clause 4.5 (normalized, concise, keyValues/simplified)
//! plus the GeoJSON one (clause 4.5.16).

use std::borrow::Cow;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

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
    match to_value(EntityView::new(entity, context, options)) {
        Value::Object(members) => members,
        _ => Map::new(),
    }
}

/// Renders entity types: one string, or an array for several.
pub fn render_types(types: &[String], context: &ActiveContext) -> Value {
    to_value(TypesView { types, context })
}

/// Renders one attribute instance in the normalized or concise form.
pub fn render_attribute(attribute: &Attribute, context: &ActiveContext, options: &RenderOptions) -> Value {
    to_value(AttributeView {
        attribute,
        context,
        options,
    })
}

/// The views below only write strings, numbers and string-keyed maps,
/// which a `Value` always holds.
fn to_value(view: impl Serialize) -> Value {
    serde_json::to_value(view).unwrap_or(Value::Null)
}

/// An entity as its requester sees it, written straight to a serializer
/// without building a tree of maps and copied strings first (a response of
/// many entities is mostly this); [`render_entity`] is the same as a map.
pub struct EntityView<'a> {
    entity: &'a Entity,
    context: &'a ActiveContext,
    options: &'a RenderOptions,
    /// A member written after all others (`@context` in JSON-LD bodies).
    trailer: Option<(&'a str, &'a Value)>,
}

impl<'a> EntityView<'a> {
    pub fn new(entity: &'a Entity, context: &'a ActiveContext, options: &'a RenderOptions) -> Self {
        Self {
            entity,
            context,
            options,
            trailer: None,
        }
    }

    /// The view with one more member, written last.
    pub fn with_trailer(self, name: &'a str, value: &'a Value) -> Self {
        Self {
            trailer: Some((name, value)),
            ..self
        }
    }
}

impl Serialize for EntityView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (entity, context, options) = (self.entity, self.context, self.options);
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry("id", &entity.id)?;
        out.serialize_entry(
            "type",
            &TypesView {
                types: &entity.types,
                context,
            },
        )?;
        match entity.scope.as_slice() {
            [] => {}
            [one] => out.serialize_entry("scope", one)?,
            several => out.serialize_entry("scope", several)?,
        }
        if options.sys_attrs {
            system_members(&mut out, &entity.created_at, &entity.modified_at, &entity.expires_at)?;
        }
        for (name, instances) in &entity.attributes {
            if instances.is_empty() {
                continue;
            }
            out.serialize_entry(
                &context.compact_ref(name),
                &InstancesView {
                    instances,
                    context,
                    options,
                },
            )?;
        }
        if let Some((name, value)) = self.trailer {
            out.serialize_entry(name, value)?;
        }
        out.end()
    }
}

/// `createdAt`, `modifiedAt` and `expiresAt`, those that are set.
fn system_members<M: SerializeMap>(
    out: &mut M,
    created: &Option<time::Timestamp>,
    modified: &Option<time::Timestamp>,
    expires: &Option<String>,
) -> Result<(), M::Error> {
    if let Some(created) = created {
        out.serialize_entry("createdAt", &time::format(created))?;
    }
    if let Some(modified) = modified {
        out.serialize_entry("modifiedAt", &time::format(modified))?;
    }
    if let Some(expires) = expires {
        out.serialize_entry("expiresAt", expires)?;
    }
    Ok(())
}

/// Entity types: one string, or an array for several.
struct TypesView<'a> {
    types: &'a [String],
    context: &'a ActiveContext,
}

impl Serialize for TypesView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self.types {
            [one] => serializer.serialize_str(&self.context.compact_ref(one)),
            several => serializer.collect_seq(several.iter().map(|t| self.context.compact_ref(t))),
        }
    }
}

/// All instances of one attribute.
struct InstancesView<'a> {
    instances: &'a [Attribute],
    context: &'a ActiveContext,
    options: &'a RenderOptions,
}

impl Serialize for InstancesView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (context, options) = (self.context, self.options);
        let view = |attribute| AttributeView {
            attribute,
            context,
            options,
        };
        if options.format == Format::KeyValues {
            if let [one] = self.instances {
                if one.dataset_id.is_none() {
                    return view(one).serialize(serializer);
                }
            }
            // Several instances: keyed by datasetId, `@none` for the default one.
            let mut out = serializer.serialize_map(Some(1))?;
            out.serialize_entry("dataset", &DatasetView(self))?;
            return out.end();
        }
        match self.instances {
            [one] => view(one).serialize(serializer),
            several => serializer.collect_seq(several.iter().map(view)),
        }
    }
}

/// The `dataset` member of a multi-instance attribute in keyValues.
struct DatasetView<'a>(&'a InstancesView<'a>);

impl Serialize for DatasetView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let InstancesView {
            instances,
            context,
            options,
        } = self.0;
        serializer.collect_map(instances.iter().map(|attribute| {
            (
                attribute.dataset_id.as_deref().unwrap_or("@none"),
                AttributeView {
                    attribute,
                    context,
                    options,
                },
            )
        }))
    }
}

/// One attribute instance, in the requested form.
struct AttributeView<'a> {
    attribute: &'a Attribute,
    context: &'a ActiveContext,
    options: &'a RenderOptions,
}

impl Serialize for AttributeView<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (attribute, context, options) = (self.attribute, self.context, self.options);
        if options.format == Format::KeyValues {
            return key_value(attribute, context, options).serialize(serializer);
        }
        let concise = options.format == Format::Concise;
        let (kind, value_key, value) = localized(attribute, context, options);
        if concise && is_bare(attribute, options) {
            // Concise: an attribute with nothing but its value is the value itself.
            match kind {
                AttributeKind::Property if !value.is_object() && !value.is_array() => {
                    return value.serialize(serializer)
                }
                AttributeKind::GeoProperty => return value.serialize(serializer),
                _ => {}
            }
        }
        let mut out = serializer.serialize_map(None)?;
        if !concise || matches!(kind, AttributeKind::JsonProperty) {
            out.serialize_entry("type", kind.name())?;
        }
        out.serialize_entry(value_key, &value)?;
        if let Some(lang) = lang_tag(attribute, options) {
            out.serialize_entry("lang", &lang)?;
        }
        if let Some(object_type) = &attribute.object_type {
            out.serialize_entry("objectType", &compact_vocab(object_type, context))?;
        }
        if let Some(dataset_id) = &attribute.dataset_id {
            out.serialize_entry("datasetId", dataset_id)?;
        }
        if let Some(observed_at) = &attribute.observed_at {
            out.serialize_entry("observedAt", observed_at)?;
        }
        if let Some(unit_code) = &attribute.unit_code {
            out.serialize_entry("unitCode", unit_code)?;
        }
        if options.sys_attrs {
            system_members(
                &mut out,
                &attribute.created_at,
                &attribute.modified_at,
                &attribute.expires_at,
            )?;
        }
        for (name, sub) in &attribute.sub {
            out.serialize_entry(
                &context.compact_ref(name),
                &AttributeView {
                    attribute: sub,
                    context,
                    options,
                },
            )?;
        }
        out.end()
    }
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
fn localized<'a>(
    attribute: &'a Attribute,
    context: &ActiveContext,
    options: &RenderOptions,
) -> (AttributeKind, &'static str, Cow<'a, Value>) {
    match attribute.kind {
        AttributeKind::LanguageProperty if options.lang.is_some() => {
            let (_, text) = pick_language(&attribute.value, options.lang.as_deref().unwrap_or("*"));
            (AttributeKind::Property, "value", Cow::Owned(text))
        }
        AttributeKind::VocabProperty => (
            attribute.kind,
            "vocab",
            Cow::Owned(compact_vocab(&attribute.value, context)),
        ),
        kind => (kind, kind.value_key(), Cow::Borrowed(&attribute.value)),
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

/// An attribute instance in keyValues: its value, or the one-member object
/// naming a kind whose value would be ambiguous alone.
fn key_value<'a>(attribute: &'a Attribute, context: &ActiveContext, options: &RenderOptions) -> KeyValue<'a> {
    match attribute.kind {
        AttributeKind::LanguageProperty if options.lang.is_some() => KeyValue::Value(Cow::Owned(
            pick_language(&attribute.value, options.lang.as_deref().unwrap_or("*")).1,
        )),
        AttributeKind::LanguageProperty => KeyValue::Wrapped("languageMap", Cow::Borrowed(&attribute.value)),
        AttributeKind::VocabProperty => {
            KeyValue::Wrapped("vocab", Cow::Owned(compact_vocab(&attribute.value, context)))
        }
        AttributeKind::ListRelationship => match &attribute.value {
            Value::Array(items) => KeyValue::Objects(items),
            other => KeyValue::Value(Cow::Borrowed(other)),
        },
        AttributeKind::JsonProperty => KeyValue::Wrapped("json", Cow::Borrowed(&attribute.value)),
        _ => KeyValue::Value(Cow::Borrowed(&attribute.value)),
    }
}

enum KeyValue<'a> {
    Value(Cow<'a, Value>),
    /// `{name: value}`.
    Wrapped(&'static str, Cow<'a, Value>),
    /// The `object` of each item of a ListRelationship's `objectList`.
    Objects(&'a [Value]),
}

impl Serialize for KeyValue<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            KeyValue::Value(value) => value.serialize(serializer),
            KeyValue::Wrapped(name, value) => {
                let mut out = serializer.serialize_map(Some(1))?;
                out.serialize_entry(name, value)?;
                out.end()
            }
            KeyValue::Objects(items) => {
                serializer.collect_seq(items.iter().map(|i| i.get("object").unwrap_or(&Value::Null)))
            }
        }
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
