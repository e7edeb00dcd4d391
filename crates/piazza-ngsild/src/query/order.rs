//! Ordering of query results (clause 4.23): `orderBy`, `orderFrom` and
//! `collation`.
//!
//! ```text
//! orderBy := key ( ',' key )*
//! key     := path ( ';asc' | ';desc' | ';dist-asc' | ';dist-desc' )?
//! path    := 'id' | 'type' | 'createdAt' | 'modifiedAt'
//!          | name ( '.' name )* ( '[' member ( '.' member )* ']' )*
//! ```
//! A path names an attribute, then sub-attributes, or a trailing metadata
//! member (`name.createdAt`); `[...]` follows members of a compound value.
//! Values of different datatypes rank numbers < strings < booleans < other
//! JSON, and an absent value always comes last, whatever the direction.
//! Ties keep the storage order (creation order), as the sort is stable.

use std::cmp::Ordering;

use serde_json::Value;

use crate::entity::{is_valid_name, Attribute, AttributeKind, Entity};
use crate::error::{NgsiError, Result};
use crate::jsonld::ActiveContext;
use crate::time;

/// More keys than any sensible request uses; hostile lists fail fast.
pub const MAX_ORDER_KEYS: usize = 16;

/// A parsed ordering.
#[derive(Clone, Debug)]
pub struct OrderBy {
    keys: Vec<OrderKey>,
    collation: Collation,
}

#[derive(Clone, Debug)]
struct OrderKey {
    target: Target,
    descending: bool,
}

#[derive(Clone, Debug)]
enum Target {
    Id,
    Type,
    CreatedAt,
    ModifiedAt,
    Attribute {
        /// Expanded attribute name, then expanded sub-attribute names.
        names: Vec<String>,
        /// Members of a compound value, as written.
        members: Vec<String>,
        metadata: Option<Metadata>,
    },
    /// Distance from a reference point (longitude, latitude) to the
    /// GeoProperty with this expanded name.
    Distance {
        name: String,
        from: (f64, f64),
    },
}

#[derive(Clone, Copy, Debug)]
enum Metadata {
    Created,
    Modified,
    Observed,
}

/// How strings compare.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Collation {
    /// Unicode code points (no `collation` given).
    #[default]
    Codepoint,
    /// A language collation: letters rank with their base letter, case and
    /// accents only break ties. Without a collation library this is the same
    /// for every language; it is what `und` and most Latin-script languages
    /// (`de`, `fr`, `en`...) agree on.
    Language,
}

impl Collation {
    /// Reads a BCP 47 tag (`und`, `de`, `de-u-co-phonebk`); anything else is 400.
    pub fn parse(tag: &str) -> Result<Collation> {
        let valid = !tag.is_empty()
            && tag.len() <= 64
            && tag.split('-').enumerate().all(|(i, part)| {
                (1..=8).contains(&part.len())
                    && part.chars().all(|c| c.is_ascii_alphanumeric())
                    && (i > 0 || part.chars().all(|c| c.is_ascii_alphabetic()))
            });
        if valid {
            Ok(Collation::Language)
        } else {
            Err(NgsiError::bad_request(format!(
                "invalid collation '{tag}': a BCP 47 language tag is expected"
            )))
        }
    }

    fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Self::Codepoint => a.cmp(b),
            Self::Language => {
                let primary = |s: &str| {
                    s.chars()
                        .map(|c| base_letter(c).to_ascii_lowercase())
                        .collect::<String>()
                };
                let secondary = |s: &str| s.to_lowercase();
                primary(a)
                    .cmp(&primary(b))
                    .then_with(|| secondary(a).cmp(&secondary(b)))
                    .then_with(|| b.cmp(a))
            }
        }
    }
}

/// The unaccented base letter of a Latin-1 or Latin Extended-A letter.
fn base_letter(c: char) -> char {
    const TABLE: [(&str, char); 15] = [
        ("ÀÁÂÃÄÅàáâãäåĀāĂăĄą", 'a'),
        ("ÇçĆćĈĉĊċČč", 'c'),
        ("ĎďĐđ", 'd'),
        ("ÈÉÊËèéêëĒēĔĕĖėĘęĚě", 'e'),
        ("ĜĝĞğĠġĢģ", 'g'),
        ("ÌÍÎÏìíîïĨĩĪīĬĭĮįİı", 'i'),
        ("ĹĺĻļĽľĿŀŁł", 'l'),
        ("ÑñŃńŅņŇň", 'n'),
        ("ÒÓÔÕÖØòóôõöøŌōŎŏŐő", 'o'),
        ("ŔŕŖŗŘř", 'r'),
        ("ŚśŜŝŞşŠš", 's'),
        ("ŢţŤťŦŧ", 't'),
        ("ÙÚÛÜùúûüŨũŪūŬŭŮůŰűŲų", 'u'),
        ("ÝýÿŶŷŸ", 'y'),
        ("ŹźŻżŽž", 'z'),
    ];
    if c.is_ascii() {
        return c;
    }
    for (letters, base) in TABLE {
        if letters.contains(c) {
            return base;
        }
    }
    c
}

impl OrderBy {
    /// Parses `orderBy`; `order_from` is the `orderFrom` JSON array of
    /// coordinates, required by distance keys.
    pub fn parse(
        text: &str,
        order_from: Option<&Value>,
        collation: Collation,
        context: &ActiveContext,
    ) -> Result<OrderBy> {
        let parts: Vec<&str> = text.split(',').map(str::trim).collect();
        if parts.len() > MAX_ORDER_KEYS {
            return Err(NgsiError::bad_request(format!(
                "orderBy takes at most {MAX_ORDER_KEYS} keys"
            )));
        }
        let keys = parts
            .into_iter()
            .map(|part| parse_key(part, order_from, context))
            .collect::<Result<Vec<_>>>()?;
        Ok(OrderBy { keys, collation })
    }

    /// Sorts entities in place (stable).
    pub fn sort(&self, entities: &mut [Entity]) {
        let mut keyed: Vec<(Vec<Option<SortValue>>, usize)> = entities
            .iter()
            .enumerate()
            .map(|(i, e)| (self.keys.iter().map(|k| k.target.value(e)).collect(), i))
            .collect();
        keyed.sort_by(|(a, _), (b, _)| self.compare(a, b));
        let order: Vec<usize> = keyed.into_iter().map(|(_, i)| i).collect();
        let mut sorted: Vec<Entity> = order.iter().map(|&i| entities[i].clone()).collect();
        entities.swap_with_slice(&mut sorted);
    }

    fn compare(&self, a: &[Option<SortValue>], b: &[Option<SortValue>]) -> Ordering {
        for ((key, x), y) in self.keys.iter().zip(a).zip(b) {
            let ordering = match (x, y) {
                (None, None) => Ordering::Equal,
                (None, Some(_)) => Ordering::Greater,
                (Some(_), None) => Ordering::Less,
                (Some(x), Some(y)) => {
                    let o = x.compare(y, self.collation);
                    if key.descending {
                        o.reverse()
                    } else {
                        o
                    }
                }
            };
            if ordering != Ordering::Equal {
                return ordering;
            }
        }
        Ordering::Equal
    }
}

fn parse_key(part: &str, order_from: Option<&Value>, context: &ActiveContext) -> Result<OrderKey> {
    let bad = || NgsiError::bad_request(format!("invalid orderBy key '{part}'"));
    let (path, direction) = match part.split_once(';') {
        Some((path, direction)) => (path.trim(), direction.trim()),
        None => (part, "asc"),
    };
    if path.is_empty() {
        return Err(bad());
    }
    let (descending, distance) = match direction {
        "asc" => (false, false),
        "desc" => (true, false),
        "dist-asc" => (false, true),
        "dist-desc" => (true, true),
        _ => return Err(bad()),
    };
    if distance {
        if !is_valid_name(path) {
            return Err(bad());
        }
        let from = reference_point(order_from)?;
        return Ok(OrderKey {
            target: Target::Distance {
                name: context.expand(path),
                from,
            },
            descending,
        });
    }
    let target = match path {
        "id" => Target::Id,
        "type" => Target::Type,
        "createdAt" => Target::CreatedAt,
        "modifiedAt" => Target::ModifiedAt,
        _ => attribute_target(path, context).ok_or_else(bad)?,
    };
    Ok(OrderKey { target, descending })
}

fn attribute_target(path: &str, context: &ActiveContext) -> Option<Target> {
    let (dotted, members_text) = match path.find('[') {
        Some(i) => (&path[..i], &path[i..]),
        None => (path, ""),
    };
    let mut names: Vec<&str> = dotted.split('.').collect();
    if names.iter().any(|n| !is_valid_name(n)) {
        return None;
    }
    let metadata = match names.last().copied() {
        Some("createdAt") if names.len() > 1 => Some(Metadata::Created),
        Some("modifiedAt") if names.len() > 1 => Some(Metadata::Modified),
        Some("observedAt") if names.len() > 1 => Some(Metadata::Observed),
        _ => None,
    };
    if metadata.is_some() {
        names.pop();
    }
    let mut members = Vec::new();
    let mut rest = members_text;
    while let Some(inner) = rest.strip_prefix('[') {
        let end = inner.find(']')?;
        for key in inner[..end].split('.') {
            if key.is_empty() {
                return None;
            }
            members.push(key.to_owned());
        }
        rest = &inner[end + 1..];
    }
    if !rest.is_empty() || (metadata.is_some() && !members.is_empty()) {
        return None;
    }
    Some(Target::Attribute {
        names: names.iter().map(|n| context.expand(n)).collect(),
        members,
        metadata,
    })
}

/// `orderFrom`: `[lon, lat]` (a Point), or any coordinates whose first
/// position is used.
fn reference_point(order_from: Option<&Value>) -> Result<(f64, f64)> {
    let missing = || NgsiError::bad_request("ordering by distance needs orderFrom coordinates ([longitude, latitude])");
    let value = order_from.ok_or_else(missing)?;
    first_position(value, 0).ok_or_else(missing)
}

/// The first position of GeoJSON coordinates (bounded descent).
fn first_position(value: &Value, depth: usize) -> Option<(f64, f64)> {
    let items = value.as_array()?;
    match (items.first()?, items.get(1)) {
        (Value::Number(x), Some(Value::Number(y))) => Some((x.as_f64()?, y.as_f64()?)),
        (inner @ Value::Array(_), _) if depth < 4 => first_position(inner, depth + 1),
        _ => None,
    }
}

/// Great-circle distance in metres.
fn haversine((lon1, lat1): (f64, f64), (lon2, lat2): (f64, f64)) -> f64 {
    const EARTH_RADIUS: f64 = 6_371_008.8;
    let (phi1, phi2) = (lat1.to_radians(), lat2.to_radians());
    let dphi = (lat2 - lat1).to_radians();
    let dlambda = (lon2 - lon1).to_radians();
    let a = (dphi / 2.0).sin().powi(2) + phi1.cos() * phi2.cos() * (dlambda / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS * a.sqrt().asin()
}

/// A value as ordering sees it.
#[derive(Clone, Debug)]
enum SortValue {
    Number(f64),
    Text(String),
    Boolean(bool),
    Other(String),
}

impl SortValue {
    fn rank(&self) -> u8 {
        match self {
            Self::Number(_) => 0,
            Self::Text(_) => 1,
            Self::Boolean(_) => 2,
            Self::Other(_) => 3,
        }
    }

    fn compare(&self, other: &SortValue, collation: Collation) -> Ordering {
        match (self, other) {
            (Self::Number(a), Self::Number(b)) => a.total_cmp(b),
            (Self::Text(a), Self::Text(b)) => collation.compare(a, b),
            (Self::Boolean(a), Self::Boolean(b)) => a.cmp(b),
            (Self::Other(a), Self::Other(b)) => a.cmp(b),
            _ => self.rank().cmp(&other.rank()),
        }
    }

    fn from_json(value: &Value) -> Option<SortValue> {
        match value {
            Value::Null => None,
            Value::Number(n) => n.as_f64().map(Self::Number),
            Value::String(s) => Some(Self::Text(s.clone())),
            Value::Bool(b) => Some(Self::Boolean(*b)),
            Value::Object(map) if map.contains_key("@value") => map.get("@value").and_then(Self::from_json),
            // Arrays order by their first element.
            Value::Array(items) => items.first().and_then(Self::from_json),
            other => Some(Self::Other(other.to_string())),
        }
    }
}

impl Target {
    fn value(&self, entity: &Entity) -> Option<SortValue> {
        match self {
            Self::Id => Some(SortValue::Text(entity.id.clone())),
            Self::Type => entity.types.first().map(|t| SortValue::Text(t.clone())),
            Self::CreatedAt => entity.created_at.map(|t| SortValue::Text(time::format(&t))),
            Self::ModifiedAt => entity.modified_at.map(|t| SortValue::Text(time::format(&t))),
            Self::Attribute {
                names,
                members,
                metadata,
            } => {
                let instance = instance_at(entity, names)?;
                match metadata {
                    Some(Metadata::Created) => instance.created_at.map(|t| SortValue::Text(time::format(&t))),
                    Some(Metadata::Modified) => instance.modified_at.map(|t| SortValue::Text(time::format(&t))),
                    Some(Metadata::Observed) => instance.observed_at.clone().map(SortValue::Text),
                    None => attribute_value(instance, members),
                }
            }
            Self::Distance { name, from } => {
                let instance = default_instance(entity.attributes.get(name)?)?;
                if instance.kind != AttributeKind::GeoProperty {
                    return None;
                }
                let point = first_position(instance.value.get("coordinates")?, 0)?;
                Some(SortValue::Number(haversine(*from, point)))
            }
        }
    }
}

/// The instance without datasetId if there is one, else the first.
fn default_instance(instances: &[Attribute]) -> Option<&Attribute> {
    instances
        .iter()
        .find(|i| i.dataset_id.is_none())
        .or_else(|| instances.first())
}

fn instance_at<'a>(entity: &'a Entity, names: &[String]) -> Option<&'a Attribute> {
    let (first, subs) = names.split_first()?;
    let mut instance = default_instance(entity.attributes.get(first)?)?;
    for name in subs {
        instance = instance.sub.get(name)?;
    }
    Some(instance)
}

fn attribute_value(instance: &Attribute, members: &[String]) -> Option<SortValue> {
    let mut value = &instance.value;
    if instance.kind == AttributeKind::LanguageProperty && members.is_empty() {
        // A language map orders by its first string.
        return value.as_object()?.values().next().and_then(SortValue::from_json);
    }
    for member in members {
        value = value.get(member)?;
    }
    SortValue::from_json(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entity(id: &str, attributes: Value) -> Entity {
        let context = ActiveContext::core();
        let mut body = attributes;
        body["id"] = json!(id);
        body["type"] = json!("Thing");
        crate::entity::parse_entity(&body, &context, crate::entity::ParseOptions::CREATE).unwrap()
    }

    fn ids(order: &str, entities: &[Entity], from: Option<Value>, collation: Collation) -> Vec<String> {
        let order = OrderBy::parse(order, from.as_ref(), collation, &ActiveContext::core()).unwrap();
        let mut sorted = entities.to_vec();
        order.sort(&mut sorted);
        sorted.into_iter().map(|e| e.id).collect()
    }

    fn prop(value: Value) -> Value {
        json!({"type": "Property", "value": value})
    }

    #[test]
    fn attribute_sub_attribute_and_direction() {
        let entities = vec![
            entity(
                "urn:b",
                json!({"name": {"type": "Property", "value": "B", "rank": prop(json!(1))}}),
            ),
            entity(
                "urn:a",
                json!({"name": {"type": "Property", "value": "A", "rank": prop(json!(3))}}),
            ),
            entity(
                "urn:c",
                json!({"name": {"type": "Property", "value": "C", "rank": prop(json!(2))}}),
            ),
        ];
        let none = Collation::Codepoint;
        assert_eq!(ids("name", &entities, None, none), ["urn:a", "urn:b", "urn:c"]);
        assert_eq!(ids("name;desc", &entities, None, none), ["urn:c", "urn:b", "urn:a"]);
        assert_eq!(ids("id", &entities, None, none), ["urn:a", "urn:b", "urn:c"]);
        assert_eq!(
            ids("name.rank;desc", &entities, None, none),
            ["urn:a", "urn:c", "urn:b"]
        );
        assert_eq!(
            ids("type,name.rank", &entities, None, none),
            ["urn:b", "urn:c", "urn:a"]
        );
    }

    #[test]
    fn mixed_types_and_absent_values() {
        let entities = vec![
            entity("urn:absent", json!({})),
            entity("urn:text", json!({"probe": prop(json!("abc"))})),
            entity("urn:number", json!({"probe": prop(json!(5))})),
        ];
        let expected = ["urn:number", "urn:text", "urn:absent"];
        assert_eq!(ids("probe", &entities, None, Collation::Codepoint), expected);
        // Absent stays last when descending.
        assert_eq!(
            ids("probe;desc", &entities, None, Collation::Codepoint),
            ["urn:text", "urn:number", "urn:absent"]
        );
    }

    #[test]
    fn compound_members_and_distance() {
        let at =
            |lon: f64, lat: f64| json!({"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}});
        let entities = vec![
            entity(
                "urn:far",
                json!({"location": at(10.0, 45.0), "address": prop(json!({"city": "Zurich"}))}),
            ),
            entity(
                "urn:near",
                json!({"location": at(8.01, 40.01), "address": prop(json!({"city": "Amsterdam"}))}),
            ),
            entity(
                "urn:mid",
                json!({"location": at(9.0, 41.0), "address": prop(json!({"city": "Berlin"}))}),
            ),
        ];
        let c = Collation::Codepoint;
        assert_eq!(
            ids("address[city];desc", &entities, None, c),
            ["urn:far", "urn:mid", "urn:near"]
        );
        let from = Some(json!([8, 40]));
        assert_eq!(
            ids("location;dist-asc", &entities, from.clone(), c),
            ["urn:near", "urn:mid", "urn:far"]
        );
        assert_eq!(
            ids("location;dist-desc", &entities, from, c),
            ["urn:far", "urn:mid", "urn:near"]
        );
    }

    #[test]
    fn collation_ranks_accents_with_their_base_letter() {
        let entities = vec![
            entity("urn:1", json!({"name": prop(json!("á"))})),
            entity("urn:2", json!({"name": prop(json!("b"))})),
            entity("urn:3", json!({"name": prop(json!("A"))})),
        ];
        assert_eq!(
            ids("name", &entities, None, Collation::Codepoint),
            ["urn:3", "urn:2", "urn:1"]
        );
        let und = Collation::parse("und").unwrap();
        assert_eq!(ids("name", &entities, None, und), ["urn:3", "urn:1", "urn:2"]);
        assert!(Collation::parse("de-u-co-phonebk").is_ok());
    }

    #[test]
    fn rejects_bad_input() {
        let core = ActiveContext::core();
        for bad in [
            "",
            "name;sideways",
            "a..b",
            "name[city",
            "name[]",
            "location;dist-asc",
            ";asc",
        ] {
            assert!(OrderBy::parse(bad, None, Collation::Codepoint, &core).is_err(), "{bad}");
        }
        let many = vec!["name"; MAX_ORDER_KEYS + 1].join(",");
        assert!(OrderBy::parse(&many, None, Collation::Codepoint, &core).is_err());
        for bad in ["!!nope", "not a bcp47 tag!!", "", "toolongtag"] {
            assert!(Collation::parse(bad).is_err(), "{bad}");
        }
    }
}
