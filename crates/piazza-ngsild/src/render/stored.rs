//! Writing an entity straight from its stored document (`entity::encode`'s
//! form, or the full serde form) to a response, without decoding it into
//! an [`Entity`](crate::Entity) first. A page of a query is mostly this:
//! decoding a document builds a tree of strings, maps and moved structs
//! that rendering reads once and dropping frees, about a third of a query
//! page's time; here the document's strings are borrowed and its values
//! copied as they are (BENCHMARKS.md, "Query pages written from the stored
//! documents").
//!
//! Only what the hot path needs is written here: Properties,
//! Relationships and GeoProperties without `objectType`, with their
//! sub-attributes. Any other instance is decoded and written by
//! [`AttributeView`] and [`key_value`], and options this module does not
//! write (`sysAttrs`, `lang`) are refused by [`writes_stored`], so that the
//! output is always `EntityView`'s, byte for byte (the tests hold them
//! equal on every kind, form and context).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

use super::{key_value, AttributeView, Format, RenderOptions, TypesView};
use crate::entity::{Attribute, AttributeKind};
use crate::jsonld::ActiveContext;
use crate::BorrowedStr;

/// Whether [`write_stored`] writes these options: not with system
/// attributes or a language preference.
pub fn writes_stored(options: &RenderOptions) -> bool {
    !options.sys_attrs && options.lang.is_none()
}

/// Writes the stored document `doc` as `EntityView` would write its entity,
/// with `trailer` as the last member. The caller checks [`writes_stored`]
/// first, and that the entity is live (an expired attribute would be
/// written).
pub fn write_stored(
    out: &mut Vec<u8>,
    doc: &str,
    context: &ActiveContext,
    options: &RenderOptions,
    trailer: Option<(&str, &Value)>,
) -> serde_json::Result<()> {
    debug_assert!(writes_stored(options));
    let entity: StoredEntity = serde_json::from_str(doc)?;
    let view = EntityWriter {
        entity: &entity,
        context,
        options,
        trailer,
    };
    serde_json::to_writer(out, &view)
}

/// The members of a stored document a response shows without system
/// attributes; the others (`created_at`, …) are skipped unread.
#[derive(serde::Deserialize)]
struct StoredEntity<'a> {
    #[serde(borrow)]
    id: BorrowedStr<'a>,
    #[serde(borrow)]
    types: Vec<BorrowedStr<'a>>,
    #[serde(default, borrow)]
    scope: Vec<BorrowedStr<'a>>,
    #[serde(default, borrow)]
    attributes: Pairs<'a, Vec<&'a RawValue>>,
}

/// One attribute instance as stored, its value kept as written.
#[derive(serde::Deserialize)]
struct StoredInstance<'a> {
    kind: AttributeKind,
    #[serde(borrow)]
    value: &'a RawValue,
    #[serde(default, borrow)]
    dataset_id: Option<BorrowedStr<'a>>,
    #[serde(default, borrow)]
    observed_at: Option<BorrowedStr<'a>>,
    #[serde(default, borrow)]
    unit_code: Option<BorrowedStr<'a>>,
    #[serde(default, borrow)]
    object_type: Option<&'a RawValue>,
    #[serde(default, borrow)]
    sub: Pairs<'a, &'a RawValue>,
}

impl StoredInstance<'_> {
    /// Written here rather than decoded and written by `AttributeView`.
    fn is_plain(&self) -> bool {
        matches!(
            self.kind,
            AttributeKind::Property | AttributeKind::Relationship | AttributeKind::GeoProperty
        ) && self.object_type.is_none()
    }

    fn value_is_structured(&self) -> bool {
        self.value.get().trim_start().starts_with(['{', '['])
    }
}

/// An instance to write: plain and borrowed, or decoded.
enum Instance<'a> {
    Plain(StoredInstance<'a>),
    Decoded(Box<Attribute>),
}

impl<'a> Instance<'a> {
    fn read(raw: &'a RawValue) -> serde_json::Result<Self> {
        let stored: StoredInstance = serde_json::from_str(raw.get())?;
        if stored.is_plain() {
            Ok(Instance::Plain(stored))
        } else {
            serde_json::from_str(raw.get()).map(|a| Instance::Decoded(Box::new(a)))
        }
    }

    fn dataset_id(&self) -> Option<&str> {
        match self {
            Instance::Plain(stored) => stored.dataset_id.as_ref().map(|d| d.0.as_ref()),
            Instance::Decoded(attribute) => attribute.dataset_id.as_deref(),
        }
    }
}

/// Name → value members in document order, names borrowed.
struct Pairs<'a, V>(Vec<(BorrowedStr<'a>, V)>);

impl<V> Default for Pairs<'_, V> {
    fn default() -> Self {
        Pairs(Vec::new())
    }
}

impl<'de: 'a, 'a, V: Deserialize<'de>> Deserialize<'de> for Pairs<'a, V> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct PairsVisitor<'a, V>(PhantomData<(&'a (), V)>);
        impl<'de: 'a, 'a, V: Deserialize<'de>> Visitor<'de> for PairsVisitor<'a, V> {
            type Value = Pairs<'a, V>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map of members")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut pairs = Vec::with_capacity(map.size_hint().unwrap_or(16).min(64));
                while let Some(entry) = map.next_entry()? {
                    pairs.push(entry);
                }
                Ok(Pairs(pairs))
            }
        }
        deserializer.deserialize_map(PairsVisitor(PhantomData))
    }
}

/// `EntityView` over a stored document.
struct EntityWriter<'a> {
    entity: &'a StoredEntity<'a>,
    context: &'a ActiveContext,
    options: &'a RenderOptions,
    trailer: Option<(&'a str, &'a Value)>,
}

impl Serialize for EntityWriter<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (entity, context, options) = (self.entity, self.context, self.options);
        let mut out = serializer.serialize_map(None)?;
        out.serialize_entry("id", entity.id.0.as_ref())?;
        let types: Vec<&str> = entity.types.iter().map(|t| t.0.as_ref()).collect();
        out.serialize_entry("type", &TypesView { types: &types, context })?;
        match entity.scope.as_slice() {
            [] => {}
            [one] => out.serialize_entry("scope", one.0.as_ref())?,
            several => out.serialize_entry("scope", &several.iter().map(|s| s.0.as_ref()).collect::<Vec<_>>())?,
        }
        for (name, raw) in &entity.attributes.0 {
            if raw.is_empty() {
                continue;
            }
            let instances = raw
                .iter()
                .map(|r| Instance::read(r))
                .collect::<serde_json::Result<Vec<_>>>()
                .map_err(serde::ser::Error::custom)?;
            out.serialize_entry(
                &context.compact_ref(&name.0),
                &InstancesWriter {
                    instances: &instances,
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

/// `InstancesView` over stored instances.
struct InstancesWriter<'a> {
    instances: &'a [Instance<'a>],
    context: &'a ActiveContext,
    options: &'a RenderOptions,
}

impl Serialize for InstancesWriter<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (context, options) = (self.context, self.options);
        let writer = |instance| InstanceWriter {
            instance,
            context,
            options,
        };
        if options.format == Format::KeyValues {
            if let [one] = self.instances {
                if one.dataset_id().is_none() {
                    return writer(one).serialize(serializer);
                }
            }
            let datasets = DatasetWriter(self);
            let mut out = serializer.serialize_map(Some(1))?;
            out.serialize_entry("dataset", &datasets)?;
            return out.end();
        }
        match self.instances {
            [one] => writer(one).serialize(serializer),
            several => serializer.collect_seq(several.iter().map(writer)),
        }
    }
}

/// `DatasetView` over stored instances.
struct DatasetWriter<'a>(&'a InstancesWriter<'a>);

impl Serialize for DatasetWriter<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let InstancesWriter {
            instances,
            context,
            options,
        } = self.0;
        serializer.collect_map(instances.iter().map(|instance| {
            (
                instance.dataset_id().unwrap_or("@none"),
                InstanceWriter {
                    instance,
                    context,
                    options,
                },
            )
        }))
    }
}

/// One instance in the requested form.
struct InstanceWriter<'a> {
    instance: &'a Instance<'a>,
    context: &'a ActiveContext,
    options: &'a RenderOptions,
}

impl Serialize for InstanceWriter<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (context, options) = (self.context, self.options);
        match self.instance {
            Instance::Decoded(attribute) if options.format == Format::KeyValues => {
                key_value(attribute, context, options).serialize(serializer)
            }
            Instance::Decoded(attribute) => AttributeView {
                attribute,
                context,
                options,
            }
            .serialize(serializer),
            // keyValues: a plain kind's value alone.
            Instance::Plain(stored) if options.format == Format::KeyValues => stored.value.serialize(serializer),
            Instance::Plain(stored) => PlainWriter {
                stored,
                context,
                options,
            }
            .serialize(serializer),
        }
    }
}

/// `AttributeView` of a plain instance in the normalized or concise form.
struct PlainWriter<'a> {
    stored: &'a StoredInstance<'a>,
    context: &'a ActiveContext,
    options: &'a RenderOptions,
}

impl Serialize for PlainWriter<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (stored, context, options) = (self.stored, self.context, self.options);
        let concise = options.format == Format::Concise;
        let bare = stored.sub.0.is_empty()
            && stored.dataset_id.is_none()
            && stored.observed_at.is_none()
            && stored.unit_code.is_none();
        if concise && bare {
            match stored.kind {
                AttributeKind::Property if !stored.value_is_structured() => return stored.value.serialize(serializer),
                AttributeKind::GeoProperty => return stored.value.serialize(serializer),
                _ => {}
            }
        }
        let mut out = serializer.serialize_map(None)?;
        if !concise {
            out.serialize_entry("type", stored.kind.name())?;
        }
        out.serialize_entry(stored.kind.value_key(), stored.value)?;
        let members = [
            ("datasetId", &stored.dataset_id),
            ("observedAt", &stored.observed_at),
            ("unitCode", &stored.unit_code),
        ];
        for (member, text) in members {
            if let Some(text) = text {
                out.serialize_entry(member, text.0.as_ref())?;
            }
        }
        for (name, raw) in &stored.sub.0 {
            let sub = Instance::read(raw).map_err(serde::ser::Error::custom)?;
            out.serialize_entry(
                &context.compact_ref(&name.0),
                &InstanceWriter {
                    instance: &sub,
                    context,
                    options,
                },
            )?;
        }
        out.end()
    }
}

#[cfg(test)]
mod tests;
