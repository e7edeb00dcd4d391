//! The stored form of an entity document: the serde form of [`Entity`],
//! except that an attribute's (or sub-attribute's) `created_at` and
//! `modified_at` are left out where they equal the entity's own. Most do
//! (a created entity's all do, an update changes a few): the system
//! timestamps were a third of a template entity's document and a quarter
//! of the time to decode it (BENCHMARKS.md, 2026-12-07, night). Reading
//! puts them back, so an attribute stored without one (which stamping
//! never leaves) reads back with the entity's. Documents in the full serde
//! form (older data dirs, dumps) read the same.
//!
//! A document can also be decoded for a query's test only: the attributes
//! the test reads are decoded, the others skipped. A store checks many
//! candidates to find a page (or a count) of matches; skipping an
//! attribute costs a scan of its text, decoding it a tree of strings, maps
//! and parsed timestamps.

use std::fmt;

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use serde::Deserialize;

use super::{Attribute, Entity, Members};
use crate::time::{self, Timestamp};
use crate::BorrowedStr;

/// `entity` in the stored form.
pub fn encode(entity: &Entity) -> serde_json::Result<String> {
    serde_json::to_string(&StoredEntity(entity))
}

/// An attribute instance as history stores it: in the serde form of
/// `Attribute`, without its own `created_at` and `modified_at` (its row
/// holds them), sub-attributes as they are. Written from the attribute
/// itself: a copy without the two members was half of the cost.
pub fn encode_instance(attribute: &Attribute) -> serde_json::Result<String> {
    serde_json::to_string(&StoredAttribute {
        attribute,
        entity: None,
    })
}

/// An entity from its stored form (or the full serde form).
pub fn decode(doc: &str) -> serde_json::Result<Entity> {
    let mut entity: Entity = serde_json::from_str(doc)?;
    fill_system_times(&mut entity);
    Ok(entity)
}

/// Gives every attribute and sub-attribute without a `created_at` or
/// `modified_at` the entity's.
fn fill_system_times(entity: &mut Entity) {
    fn fill(attribute: &mut Attribute, created: Option<Timestamp>, modified: Option<Timestamp>) {
        attribute.created_at = attribute.created_at.or(created);
        attribute.modified_at = attribute.modified_at.or(modified);
        for sub in attribute.sub.values_mut() {
            fill(sub, created, modified);
        }
    }
    let (created, modified) = (entity.created_at, entity.modified_at);
    for instance in entity.attributes.values_mut().flatten() {
        fill(instance, created, modified);
    }
}

/// The member names below are those of the derived serde form of `Entity`
/// and `Attribute` (a test holds them equal).
struct StoredEntity<'a>(&'a Entity);

impl Serialize for StoredEntity<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let entity = self.0;
        let mut out = serializer.serialize_struct("Entity", 7)?;
        out.serialize_field("id", &entity.id)?;
        out.serialize_field("types", &entity.types)?;
        if !entity.scope.is_empty() {
            out.serialize_field("scope", &entity.scope)?;
        }
        out.serialize_field("attributes", &StoredAttributes(entity))?;
        if let Some(at) = &entity.created_at {
            out.serialize_field("created_at", &Stamp(at))?;
        }
        if let Some(at) = &entity.modified_at {
            out.serialize_field("modified_at", &Stamp(at))?;
        }
        if let Some(at) = &entity.expires_at {
            out.serialize_field("expires_at", at)?;
        }
        out.end()
    }
}

struct StoredAttributes<'a>(&'a Entity);

impl Serialize for StoredAttributes<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let entity = self.0;
        serializer.collect_map(
            entity
                .attributes
                .iter()
                .map(|(name, instances)| (name, StoredInstances { instances, entity })),
        )
    }
}

struct StoredInstances<'a> {
    instances: &'a [Attribute],
    entity: &'a Entity,
}

impl Serialize for StoredInstances<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let entity = self.entity;
        serializer.collect_seq(self.instances.iter().map(|attribute| StoredAttribute {
            attribute,
            entity: Some(entity),
        }))
    }
}

struct StoredSub<'a> {
    sub: &'a Members<Attribute>,
    entity: &'a Entity,
}

impl Serialize for StoredSub<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let entity = self.entity;
        serializer.collect_map(self.sub.iter().map(|(name, attribute)| {
            let entity = Some(entity);
            (name, StoredAttribute { attribute, entity })
        }))
    }
}

/// An attribute in the stored form: in an entity (`entity`), its system
/// timestamps left out where they are the entity's; alone (history), its
/// own left out and its sub-attributes' kept.
struct StoredAttribute<'a> {
    attribute: &'a Attribute,
    entity: Option<&'a Entity>,
}

impl Serialize for StoredAttribute<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let (attribute, entity) = (self.attribute, self.entity);
        let mut out = serializer.serialize_struct("Attribute", 10)?;
        out.serialize_field("kind", &attribute.kind)?;
        out.serialize_field("value", &attribute.value)?;
        if let Some(id) = &attribute.dataset_id {
            out.serialize_field("dataset_id", id)?;
        }
        if let Some(at) = &attribute.observed_at {
            out.serialize_field("observed_at", at)?;
        }
        if let Some(unit) = &attribute.unit_code {
            out.serialize_field("unit_code", unit)?;
        }
        if let Some(object_type) = &attribute.object_type {
            out.serialize_field("object_type", object_type)?;
        }
        if let Some(entity) = entity {
            if let Some(at) = attribute
                .created_at
                .as_ref()
                .filter(|at| Some(**at) != entity.created_at)
            {
                out.serialize_field("created_at", &Stamp(at))?;
            }
            if let Some(at) = attribute
                .modified_at
                .as_ref()
                .filter(|at| Some(**at) != entity.modified_at)
            {
                out.serialize_field("modified_at", &Stamp(at))?;
            }
        }
        if let Some(at) = &attribute.expires_at {
            out.serialize_field("expires_at", at)?;
        }
        if !attribute.sub.is_empty() {
            match entity {
                Some(entity) => out.serialize_field(
                    "sub",
                    &StoredSub {
                        sub: &attribute.sub,
                        entity,
                    },
                )?,
                None => out.serialize_field("sub", &attribute.sub)?,
            }
        }
        out.end()
    }
}

/// A timestamp as `time::serde_opt` writes it.
struct Stamp<'a>(&'a Timestamp);

impl Serialize for Stamp<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        time::serde_opt::serialize(&Some(*self.0), serializer)
    }
}

/// A timestamp member read as `time::serde_opt` reads it.
#[derive(Deserialize)]
struct OptionalStamp(#[serde(with = "crate::time::serde_opt")] Option<Timestamp>);

/// `doc` with only the attributes named in `keep`. Whether such an
/// entity matches a query is whether the whole one does, when `keep` holds
/// what [`EntityQuery::attributes_read`](crate::query::EntityQuery::attributes_read)
/// names.
pub fn decode_keeping(doc: &str, keep: &[String]) -> serde_json::Result<Entity> {
    let mut deserializer = serde_json::Deserializer::from_str(doc);
    let mut entity = Keeping(keep).deserialize(&mut deserializer)?;
    deserializer.end()?;
    fill_system_times(&mut entity);
    Ok(entity)
}

struct Keeping<'k>(&'k [String]);

impl<'de> DeserializeSeed<'de> for Keeping<'_> {
    type Value = Entity;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Entity, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Keeping<'_> {
    type Value = Entity;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an entity document")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Entity, A::Error> {
        let (mut id, mut types) = (None, None);
        let mut entity = Entity::new(String::new(), Vec::new());
        // The member names of `Entity`'s derived serde form.
        while let Some(BorrowedStr(key)) = map.next_key()? {
            match &*key {
                "id" => id = Some(map.next_value()?),
                "types" => types = Some(map.next_value()?),
                "scope" => entity.scope = map.next_value()?,
                "expires_at" => entity.expires_at = map.next_value()?,
                // The kept attributes' own may be left out for them.
                "created_at" => entity.created_at = map.next_value::<OptionalStamp>()?.0,
                "modified_at" => entity.modified_at = map.next_value::<OptionalStamp>()?.0,
                "attributes" => entity.attributes = map.next_value_seed(Attributes(Some(self.0)))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        entity.id = id.ok_or_else(|| A::Error::missing_field("id"))?;
        entity.types = types.ok_or_else(|| A::Error::missing_field("types"))?;
        Ok(entity)
    }
}

/// An entity's attributes: those named, or all with `None`.
struct Attributes<'k>(Option<&'k [String]>);

impl<'de> DeserializeSeed<'de> for Attributes<'_> {
    type Value = Members<Vec<Attribute>>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Attributes<'_> {
    type Value = Members<Vec<Attribute>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the attributes of an entity")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        // Room for a whole entity's attributes at once, rather than
        // regrowing (and rehashing) from four; a kept few need none.
        let capacity = match self.0 {
            None => map.size_hint().unwrap_or(16).min(256),
            Some(_) => 0,
        };
        let mut attributes = Members::with_capacity_and_hasher(capacity, Default::default());
        while let Some(BorrowedStr(name)) = map.next_key()? {
            if self.0.is_none_or(|keep| keep.iter().any(|k| *k == *name)) {
                attributes.insert(name.into_owned(), map.next_value_seed(Instances)?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(attributes)
    }
}

/// `Entity::attributes` as stored, each attribute's instances read with
/// [`Instances`].
pub(super) fn attributes<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Members<Vec<Attribute>>, D::Error> {
    Attributes(None).deserialize(deserializer)
}

/// An attribute's instances. Nearly every attribute has one, but a `Vec`
/// grown by pushes starts with room for four: for `Attribute` over 1 KiB,
/// past the allocator's small-block path, so decoding made one slow
/// allocation per attribute of every entity read.
struct Instances;

impl<'de> DeserializeSeed<'de> for Instances {
    type Value = Vec<Attribute>;

    fn deserialize<D: serde::Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for Instances {
    type Value = Vec<Attribute>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the instances of an attribute")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut instances = Vec::with_capacity(seq.size_hint().unwrap_or(1).clamp(1, 64));
        while let Some(instance) = seq.next_element()? {
            instances.push(instance);
        }
        Ok(instances)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use crate::entity::{parse_entity, ParseOptions};
    use crate::{time, ActiveContext, Entity};

    fn stored() -> (Entity, String) {
        let body = json!({
            "id": "urn:ngsi-ld:T:1", "type": "T",
            "one": {"type": "Property", "value": 1},
            "two": [
                {"type": "Property", "value": 2, "datasetId": "urn:d:a"},
                {"type": "Property", "value": 3, "datasetId": "urn:d:b"},
            ],
        });
        let mut entity = parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).expect("valid entity");
        entity.stamp_new(time::now());
        let doc = serde_json::to_string(&entity).expect("entities serialise");
        (entity, doc)
    }

    /// Whole or kept, a stored entity reads back as written, and a
    /// single-instance attribute takes room for one instance only.
    #[test]
    fn attributes_read_back_with_room_for_their_instances_only() {
        let (entity, doc) = stored();
        let whole: Entity = serde_json::from_str(&doc).expect("stored form");
        assert_eq!(whole, entity);
        let names: Vec<String> = entity.attributes.keys().cloned().collect();
        let kept = super::decode_keeping(&doc, &names).expect("stored form");
        for decoded in [&whole, &kept] {
            let one = &decoded.attributes[&ActiveContext::core().expand("one")];
            assert_eq!((one.len(), one.capacity()), (1, 1));
            assert_eq!(decoded.attributes[&ActiveContext::core().expand("two")].len(), 2);
        }
        assert_eq!(kept.attributes, entity.attributes);
    }

    /// An entity whose attributes were stamped at other times than the
    /// entity itself (its last edit) in one of them, and in a sub-attribute.
    fn edited() -> Entity {
        let body = json!({
            "id": "urn:ngsi-ld:T:2", "type": "T",
            "one": {"type": "Property", "value": 1, "observedAt": "2024-05-01T00:00:00Z",
                    "accuracy": {"type": "Property", "value": 0.9}},
            "two": [
                {"type": "Property", "value": 2, "datasetId": "urn:d:a", "unitCode": "CEL"},
                {"type": "Relationship", "object": "urn:ngsi-ld:X:1", "datasetId": "urn:d:b"},
            ],
        });
        let mut entity = parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).expect("valid entity");
        let created = time::parse("2026-01-01T00:00:00.000001Z").expect("timestamp");
        entity.stamp_new(created);
        let edited = time::parse("2026-01-02T00:00:00.000002Z").expect("timestamp");
        let two = entity
            .attributes
            .get_mut(&ActiveContext::core().expand("two"))
            .expect("two");
        two[1].stamp(edited, Some(created));
        let one = &mut entity
            .attributes
            .get_mut(&ActiveContext::core().expand("one"))
            .expect("one")[0];
        one.sub.values_mut().for_each(|sub| sub.stamp(edited, None));
        entity.modified_at = Some(edited);
        entity
    }

    /// The attributes' times that are the entity's are left out of the
    /// stored form, and every decoding puts them back.
    #[test]
    fn the_stored_form_leaves_out_the_entitys_own_times_and_reads_them_back() {
        let entity = edited();
        let doc = super::encode(&entity).expect("stored form");
        let full = serde_json::to_string(&entity).expect("serde form");
        // The entity's two, and those that differ from them: the
        // sub-attribute's creation (at the entity's last edit), the
        // modifications of `one` and `two[0]` (at its creation).
        assert_eq!(doc.matches("\"created_at\"").count(), 2, "{doc}");
        assert_eq!(doc.matches("\"modified_at\"").count(), 3, "{doc}");
        assert_eq!(full.matches("\"created_at\"").count(), 5, "{full}");
        assert!(doc.len() < full.len());
        assert_eq!(super::decode(&doc).expect("stored form"), entity);
        let names: Vec<String> = entity.attributes.keys().cloned().collect();
        let kept = super::decode_keeping(&doc, &names).expect("stored form");
        assert_eq!(kept.attributes, entity.attributes);
        // Documents in the full serde form (older data dirs, dumps) read the same.
        assert_eq!(super::decode(&full).expect("serde form"), entity);
        assert_eq!(
            super::decode_keeping(&full, &names).expect("serde form").attributes,
            entity.attributes
        );
    }

    /// The stored form writes what the derived serde form writes, member
    /// for member, when no attribute shares the entity's times.
    #[test]
    fn the_stored_form_is_the_serde_form_when_no_time_is_the_entitys() {
        let mut entity = edited();
        entity.created_at = time::parse("2025-01-01T00:00:00Z");
        entity.modified_at = time::parse("2025-01-01T00:00:00Z");
        entity.expires_at = Some("2030-01-01T00:00:00Z".to_owned());
        entity.scope = vec!["/a".to_owned()];
        let one = &mut entity
            .attributes
            .get_mut(&ActiveContext::core().expand("one"))
            .expect("one")[0];
        one.expires_at = Some("2030-01-01T00:00:00Z".to_owned());
        let two = &mut entity
            .attributes
            .get_mut(&ActiveContext::core().expand("two"))
            .expect("two")[1];
        two.object_type = Some(json!(["https://example.org/X"]));
        assert_eq!(
            super::encode(&entity).expect("stored form"),
            serde_json::to_string(&entity).expect("serde form")
        );
    }

    #[test]
    fn attributes_that_are_not_lists_of_instances_are_refused() {
        let (_, doc) = stored();
        let broken = doc.replacen("\"attributes\":{", "\"attributes\":{\"x\":{},", 1);
        assert_ne!(broken, doc, "the document has an attributes member");
        assert!(serde_json::from_str::<Entity>(&broken).is_err());
        assert!(super::decode_keeping(&broken, &["x".to_owned()]).is_err());
    }

    /// An instance as history stores it is the serde form of the attribute
    /// without its own system timestamps, sub-attributes' kept: for every
    /// kind of attribute, with and without sub-attributes and timestamps.
    #[test]
    fn an_instance_is_stored_as_its_serde_form_without_its_own_timestamps() {
        let body = json!({
            "id": "urn:ngsi-ld:T:1", "type": "T",
            "p": {"type": "Property", "value": {"a": [1, "x"]}, "unitCode": "CEL", "observedAt": "2024-01-01T00:00:00Z",
                "datasetId": "urn:d:1", "accuracy": {"type": "Property", "value": 0.9}},
            "r": {"type": "Relationship", "object": "urn:x:1", "objectType": "T"},
            "g": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [1.0, 2.0]}},
            "l": {"type": "LanguageProperty", "languageMap": {"it": "ciao"}},
            "j": {"type": "JsonProperty", "json": {"k": null}},
        });
        let mut entity = parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).expect("valid entity");
        entity.stamp_new(time::now());
        let mut seen = 0;
        for attribute in entity.attributes.values().flatten() {
            for timed in [false, true] {
                let mut attribute = attribute.clone();
                if !timed {
                    attribute.created_at = None;
                    attribute.modified_at = None;
                }
                let mut bare = attribute.clone();
                bare.created_at = None;
                bare.modified_at = None;
                let expected = serde_json::to_string(&bare).expect("serde form");
                assert_eq!(super::encode_instance(&attribute).expect("encoded"), expected);
                seen += 1;
            }
        }
        assert_eq!(seen, 10);
        let with_sub = &entity.attributes["https://uri.etsi.org/ngsi-ld/default-context/p"][0];
        assert!(
            with_sub.sub.values().all(|s| s.created_at.is_some()),
            "sub-attributes keep their timestamps"
        );
    }
}
