//! A stored entity document (the serde form of [`Entity`]) decoded for a
//! query's test only: the attributes the test reads are decoded, the others
//! skipped. A store checks many candidates to find a page (or a count) of
//! matches; skipping an attribute costs a scan of its text, decoding it a
//! tree of strings, maps and parsed timestamps.

use std::fmt;

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::{Attribute, Entity, Members};
use crate::BorrowedStr;

/// `doc` with only the attributes named in `keep`, and without the entity's
/// own `createdAt`/`modifiedAt`, which no query reads. Whether such an
/// entity matches a query is whether the whole one does, when `keep` holds
/// what [`EntityQuery::attributes_read`](crate::query::EntityQuery::attributes_read)
/// names.
pub fn decode_keeping(doc: &str, keep: &[String]) -> serde_json::Result<Entity> {
    let mut deserializer = serde_json::Deserializer::from_str(doc);
    let entity = Keeping(keep).deserialize(&mut deserializer)?;
    deserializer.end()?;
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

    #[test]
    fn attributes_that_are_not_lists_of_instances_are_refused() {
        let (_, doc) = stored();
        let broken = doc.replacen("\"attributes\":{", "\"attributes\":{\"x\":{},", 1);
        assert_ne!(broken, doc, "the document has an attributes member");
        assert!(serde_json::from_str::<Entity>(&broken).is_err());
        assert!(super::decode_keeping(&broken, &["x".to_owned()]).is_err());
    }
}
