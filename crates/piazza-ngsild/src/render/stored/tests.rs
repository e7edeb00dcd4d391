use std::path::Path;

use serde_json::{json, Value};

use super::{write_stored, writes_stored};
use crate::entity::{encode, parse_entity, Entity, ParseOptions};
use crate::jsonld::{ActiveContext, NoRemoteContexts};
use crate::render::{EntityView, Format, RenderOptions};
use crate::time;

/// Every attribute kind, several instances, sub-attributes (plain and
/// not), `objectType`, structured and scalar values, several types and
/// scopes.
fn every_kind() -> Entity {
    let body = json!({
        "id": "urn:ngsi-ld:Thing:1",
        "type": ["Thing", "Other"],
        "scope": ["/a/b", "/c"],
        "p": {"type": "Property", "value": 21.5, "unitCode": "CEL", "observedAt": "2024-01-01T00:00:00Z",
              "accuracy": {"type": "Property", "value": 0.9},
              "by": {"type": "Relationship", "object": "urn:ngsi-ld:Sensor:1", "objectType": "Sensor"},
              "tags": {"type": "Property", "value": ["x", "y"]}},
        "bare": {"type": "Property", "value": "plain \"text\" with escapes\n"},
        "object": {"type": "Property", "value": {"nested": {"deep": [1, 2.5, false, true]}}},
        "list": {"type": "Property", "value": [1, 2]},
        "r": {"type": "Relationship", "object": "urn:ngsi-ld:Other:1"},
        "typed": {"type": "Relationship", "object": "urn:ngsi-ld:Other:2", "objectType": ["Other", "Thing"]},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [11.25, 43.77]}},
        "area": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [11.0, 43.0]},
                 "observedAt": "2024-01-01T00:00:00Z"},
        "l": {"type": "LanguageProperty", "languageMap": {"it": "ciao", "en": "hello"}},
        "v": {"type": "VocabProperty", "vocab": "Yes"},
        "lp": {"type": "ListProperty", "valueList": [1, 2]},
        "lr": {"type": "ListRelationship", "objectList": [{"object": "urn:a:1"}]},
        "j": {"type": "JsonProperty", "json": {"any": {"thing": 1}}},
        "multi": [
            {"type": "Property", "value": 1},
            {"type": "Property", "value": 2, "datasetId": "urn:d:a", "unitCode": "CEL"},
            {"type": "Relationship", "object": "urn:ngsi-ld:X:1", "datasetId": "urn:d:b"},
            {"type": "LanguageProperty", "languageMap": {"it": "uno"}, "datasetId": "urn:d:c"},
        ],
        "datasets": [
            {"type": "Property", "value": 3, "datasetId": "urn:d:a"},
            {"type": "Property", "value": 4, "datasetId": "urn:d:b"},
        ],
    });
    stamped(parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).expect("valid entity"))
}

/// The Smart Data Models examples of the repository, normalized.
fn smart_data_models() -> Vec<Entity> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/smart-data-models");
    let mut entities = Vec::new();
    for model in std::fs::read_dir(root).expect("testdata") {
        let example = model.expect("entry").path().join("example-normalized.jsonld");
        let Ok(text) = std::fs::read_to_string(&example) else {
            continue;
        };
        let mut body: Value = serde_json::from_str(&text).expect("example JSON");
        body.as_object_mut().expect("an entity").remove("@context");
        let entity = parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).expect("valid example");
        entities.push(stamped(entity));
    }
    assert!(entities.len() >= 5, "the examples were found");
    entities
}

/// `entity` created at one time, one attribute updated at another (so
/// that the stored form keeps some attribute times and leaves out others).
fn stamped(mut entity: Entity) -> Entity {
    entity.stamp_new(time::parse("2026-01-01T00:00:00.000001Z").expect("timestamp"));
    let edited = time::parse("2026-01-02T00:00:00.000002Z").expect("timestamp");
    if let Some(instances) = entity.attributes.values_mut().next() {
        instances[0].stamp(edited, None);
    }
    entity.modified_at = Some(edited);
    entity
}

fn contexts() -> Vec<ActiveContext> {
    let user = json!({
        "ex": "https://uri.etsi.org/ngsi-ld/default-context/",
        "Thing": "https://example.org/Thing",
        "temperature": "https://uri.etsi.org/ngsi-ld/default-context/p",
    });
    let user = ActiveContext::from_user_context(&user, &NoRemoteContexts).expect("context");
    vec![(*ActiveContext::core()).clone(), user]
}

#[test]
fn a_stored_document_is_written_as_its_decoded_entity_is_rendered() {
    let mut entities = smart_data_models();
    entities.push(every_kind());
    let trailer = json!(["https://example.org/context.jsonld"]);
    let mut compared = 0;
    for entity in &entities {
        let documents = [
            encode(entity).expect("stored form"),
            serde_json::to_string(entity).expect("full serde form"),
        ];
        for context in &contexts() {
            for format in [Format::Normalized, Format::Concise, Format::KeyValues] {
                let options = RenderOptions {
                    format,
                    ..Default::default()
                };
                for with_trailer in [false, true] {
                    let mut view = EntityView::new(entity, context, &options);
                    let mut trailing = None;
                    if with_trailer {
                        view = view.with_trailer("@context", &trailer);
                        trailing = Some(("@context", &trailer));
                    }
                    let rendered = serde_json::to_string(&view).expect("rendered");
                    for doc in &documents {
                        let mut written = Vec::new();
                        write_stored(&mut written, doc, context, &options, trailing).expect("written");
                        assert_eq!(
                            String::from_utf8(written).expect("UTF-8"),
                            rendered,
                            "{} in {format:?}",
                            entity.id
                        );
                        compared += 1;
                    }
                }
            }
        }
    }
    assert!(compared >= 6 * 2 * 2 * 3 * 2);
}

#[test]
fn system_attributes_and_languages_are_left_to_the_decoded_entity() {
    assert!(writes_stored(&RenderOptions::default()));
    let sys_attrs = RenderOptions {
        sys_attrs: true,
        ..Default::default()
    };
    let lang = RenderOptions {
        lang: Some("it".into()),
        ..Default::default()
    };
    assert!(!writes_stored(&sys_attrs));
    assert!(!writes_stored(&lang));
}

#[test]
fn a_broken_document_is_an_error() {
    let doc = encode(&every_kind()).expect("stored form");
    let broken = doc.replacen("\"kind\":\"Property\"", "\"kind\":\"Nothing\"", 1);
    assert_ne!(broken, doc);
    for doc in [broken.as_str(), "{", "[]", &doc[..doc.len() / 2]] {
        let mut out = Vec::new();
        let written = write_stored(&mut out, doc, &ActiveContext::core(), &RenderOptions::default(), None);
        assert!(written.is_err(), "{doc}");
    }
}
