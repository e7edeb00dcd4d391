//! Attribute values as data sources send them → NGSI-LD attributes.
//!
//! Files (CSV cells, GeoJSON properties, keyValues examples) and live
//! sources (an MQTT message `{"temperature": 21.5}`) give attribute values
//! either simplified (keyValues) or already as NGSI-LD attributes
//! (normalized or concise). This module turns both into the normalized
//! form, so the broker's own parser does every check. It does no I/O and is
//! the part a live bridge reuses.
//!
//! keyValues is not invertible; the rules (documented in docs/IMPORT.md):
//! - an object that is an NGSI-LD attribute (its `type` is an attribute
//!   type, or it has a value member such as `value`/`object`) is kept;
//! - a GeoJSON geometry becomes a GeoProperty;
//! - a string (or a non-empty array of strings) that is an NGSI-LD URN
//!   (`urn:ngsi-ld:`) becomes a Relationship, as in Smart Data Models;
//! - anything else becomes a Property with that value.

use serde_json::{json, Map, Value};

/// NGSI-LD attribute types (the `type` member of an attribute).
const ATTRIBUTE_TYPES: &[&str] = &[
    "Property",
    "Relationship",
    "GeoProperty",
    "LanguageProperty",
    "VocabProperty",
    "ListProperty",
    "ListRelationship",
    "JsonProperty",
];

/// Members that make an object an attribute in the concise form.
const VALUE_MEMBERS: &[&str] = &[
    "value",
    "object",
    "languageMap",
    "vocab",
    "valueList",
    "objectList",
    "json",
];

/// Entity members that are not attributes.
const ENTITY_MEMBERS: &[&str] = &[
    "id",
    "@id",
    "type",
    "@type",
    "@context",
    "scope",
    "createdAt",
    "modifiedAt",
    "expiresAt",
];

const GEOMETRY_TYPES: &[&str] = &[
    "Point",
    "MultiPoint",
    "LineString",
    "MultiLineString",
    "Polygon",
    "MultiPolygon",
    "GeometryCollection",
];

/// Whether `value` is already an NGSI-LD attribute (normalized or concise).
pub fn is_attribute(value: &Value) -> bool {
    let Value::Object(members) = value else {
        return false;
    };
    let typed = members
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| ATTRIBUTE_TYPES.contains(&t));
    typed || VALUE_MEMBERS.iter().any(|m| members.contains_key(*m))
}

/// Whether `value` is a GeoJSON geometry.
pub fn is_geometry(value: &Value) -> bool {
    value
        .get("type")
        .and_then(Value::as_str)
        .is_some_and(|t| GEOMETRY_TYPES.contains(&t))
        && (value.get("coordinates").is_some() || value.get("geometries").is_some())
}

fn is_ngsi_urn(value: &Value) -> bool {
    match value {
        Value::String(s) => s.starts_with("urn:ngsi-ld:"),
        Value::Array(items) => {
            !items.is_empty()
                && items
                    .iter()
                    .all(|i| i.as_str().is_some_and(|s| s.starts_with("urn:ngsi-ld:")))
        }
        _ => false,
    }
}

/// One attribute value, keyValues or NGSI-LD, as a normalized attribute.
/// `observed_at` (RFC 3339) is added to attributes that have none.
pub fn attribute(value: Value, observed_at: Option<&str>) -> Value {
    match value {
        // Several instances of one attribute (a multi-attribute, each
        // instance with its datasetId): each stays an instance, not the
        // array a Property's value.
        Value::Array(items) if is_instances(&items) => Value::Array(
            items
                .into_iter()
                .map(|instance| observed(instance, observed_at))
                .collect(),
        ),
        value => observed(normalized(value), observed_at),
    }
}

/// One attribute value as an NGSI-LD attribute, kept when it is one.
fn normalized(value: Value) -> Value {
    if is_attribute(&value) {
        value
    } else if is_geometry(&value) {
        json!({ "type": "GeoProperty", "value": value })
    } else if is_ngsi_urn(&value) {
        json!({ "type": "Relationship", "object": value })
    } else {
        json!({ "type": "Property", "value": value })
    }
}

/// Whether an array is the instances of a multi-attribute rather than a value.
fn is_instances(items: &[Value]) -> bool {
    !items.is_empty() && items.iter().all(is_attribute)
}

/// `attribute` with `observedAt` set to `at` unless it has one.
fn observed(mut attribute: Value, at: Option<&str>) -> Value {
    if let (Some(at), Value::Object(members)) = (at, &mut attribute) {
        members
            .entry("observedAt")
            .or_insert_with(|| Value::String(at.to_owned()));
    }
    attribute
}

/// A JSON object of attribute values (a message, a keyValues entity) as a
/// normalized NGSI-LD fragment. Entity members (`id`, `type`, `scope`...)
/// pass through, `@context` is dropped (the caller resolves it); `id` and
/// `entity_type`, when given, are set.
pub fn fragment(
    values: &Map<String, Value>,
    id: Option<&str>,
    entity_type: Option<&str>,
    observed_at: Option<&str>,
) -> Map<String, Value> {
    let mut out = Map::new();
    if let Some(id) = id {
        out.insert("id".into(), Value::String(id.to_owned()));
    }
    if let Some(entity_type) = entity_type {
        out.insert("type".into(), Value::String(entity_type.to_owned()));
    }
    for (name, value) in values {
        if name == "@context" {
            continue;
        }
        if ENTITY_MEMBERS.contains(&name.as_str()) {
            out.entry(name.clone()).or_insert_with(|| value.clone());
            continue;
        }
        out.insert(name.clone(), attribute(value.clone(), observed_at));
    }
    out
}

/// The keyValues view of a normalized or concise entity (what Smart Data
/// Models JSON Schemas describe): each attribute reduced to its value.
pub fn key_values(entity: &Map<String, Value>) -> Map<String, Value> {
    entity
        .iter()
        .filter(|(name, _)| name.as_str() != "@context")
        .map(|(name, value)| {
            let simple = if ENTITY_MEMBERS.contains(&name.as_str()) {
                value.clone()
            } else {
                simplify(value)
            };
            (name.clone(), simple)
        })
        .collect()
}

fn simplify(value: &Value) -> Value {
    match value {
        // Several instances (datasetIds): the first stands for the attribute.
        Value::Array(items) if is_instances(items) => simplify(&items[0]),
        Value::Object(members) if is_attribute(value) => {
            let inner = VALUE_MEMBERS
                .iter()
                .find_map(|m| members.get(*m))
                .cloned()
                .unwrap_or(Value::Null);
            // A typed literal ({"@type": "DateTime", "@value": ...}) is its value.
            match inner {
                Value::Object(literal) if literal.contains_key("@value") => {
                    literal.get("@value").cloned().unwrap_or(Value::Null)
                }
                other => other,
            }
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn key_values_become_normalized_attributes() {
        let message = obj(json!({
            "temperature": 21.5,
            "location": {"type": "Point", "coordinates": [11.1, 43.8]},
            "refDevice": "urn:ngsi-ld:Device:1",
            "address": {"addressLocality": "Prato"},
            "@context": "https://example.org/ctx.jsonld"
        }));
        let out = fragment(
            &message,
            Some("urn:ngsi-ld:X:1"),
            Some("X"),
            Some("2024-01-01T00:00:00Z"),
        );
        assert_eq!(
            out["temperature"],
            json!({"type": "Property", "value": 21.5, "observedAt": "2024-01-01T00:00:00Z"})
        );
        assert_eq!(out["location"]["type"], "GeoProperty");
        assert_eq!(out["refDevice"]["type"], "Relationship");
        assert_eq!(out["address"]["value"], json!({"addressLocality": "Prato"}));
        assert!(!out.contains_key("@context"));
        assert_eq!(out["id"], "urn:ngsi-ld:X:1");
    }

    #[test]
    fn normalized_attributes_are_kept() {
        let message = obj(json!({
            "pm10": {"type": "Property", "value": 31, "observedAt": "2024-03-01T10:00:00Z"},
            "no2": {"value": 12}
        }));
        let out = fragment(&message, None, None, Some("2024-03-02T00:00:00Z"));
        assert_eq!(out["pm10"]["observedAt"], "2024-03-01T10:00:00Z");
        assert_eq!(out["no2"], json!({"value": 12, "observedAt": "2024-03-02T00:00:00Z"}));
    }

    /// An array of instances (each with its datasetId) is a multi-attribute:
    /// the instances are kept, each gets the default observedAt; an array of
    /// plain values stays one Property's value.
    #[test]
    fn instances_of_a_multi_attribute_stay_instances() {
        let message = obj(json!({
            "temperature": [
                {"type": "Property", "value": 34.3, "datasetId": "urn:ngsi-ld:Dataset:inside"},
                {"value": 31.0, "datasetId": "urn:ngsi-ld:Dataset:outside", "observedAt": "2024-03-01T10:00:00Z"}
            ],
            "readings": [1, 2, 3],
            "empty": []
        }));
        let out = fragment(&message, None, None, Some("2024-03-02T00:00:00Z"));
        assert_eq!(
            out["temperature"],
            json!([
                {"type": "Property", "value": 34.3, "datasetId": "urn:ngsi-ld:Dataset:inside",
                 "observedAt": "2024-03-02T00:00:00Z"},
                {"value": 31.0, "datasetId": "urn:ngsi-ld:Dataset:outside", "observedAt": "2024-03-01T10:00:00Z"}
            ])
        );
        assert_eq!(
            out["readings"],
            json!({"type": "Property", "value": [1, 2, 3], "observedAt": "2024-03-02T00:00:00Z"})
        );
        assert_eq!(out["empty"]["value"], json!([]));
        assert_eq!(key_values(&out)["temperature"], 34.3);
    }

    #[test]
    fn key_values_view_of_a_normalized_entity() {
        let entity = obj(json!({
            "id": "urn:ngsi-ld:X:1",
            "type": "X",
            "seen": {"type": "Property", "value": {"@type": "DateTime", "@value": "2024-01-01T00:00:00Z"}},
            "owner": {"type": "Relationship", "object": "urn:ngsi-ld:P:1"},
            "@context": []
        }));
        let simple = key_values(&entity);
        assert_eq!(simple["seen"], "2024-01-01T00:00:00Z");
        assert_eq!(simple["owner"], "urn:ngsi-ld:P:1");
        assert!(!simple.contains_key("@context"));
    }
}
