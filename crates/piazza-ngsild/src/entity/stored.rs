//! A stored entity document (the serde form of [`Entity`]) decoded for a
//! query's test only: the attributes the test reads are decoded, the others
//! skipped. A store checks many candidates to find a page (or a count) of
//! matches; skipping an attribute costs a scan of its text, decoding it a
//! tree of strings, maps and parsed timestamps.

use std::fmt;

use serde::de::{DeserializeSeed, Error as _, IgnoredAny, MapAccess, Visitor};

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
                "attributes" => entity.attributes = map.next_value_seed(Attributes(self.0))?,
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

struct Attributes<'k>(&'k [String]);

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
        let mut kept = Members::default();
        while let Some(BorrowedStr(name)) = map.next_key()? {
            if self.0.iter().any(|k| *k == *name) {
                kept.insert(name.into_owned(), map.next_value()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(kept)
    }
}
