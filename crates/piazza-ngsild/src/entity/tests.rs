use serde_json::json;

use super::*;
use crate::error::ErrorKind;
use crate::render::{render_entity, Format, RenderOptions};

/// `entity` rendered in the keyValues form with the core context.
fn render_key_values(entity: &Entity) -> serde_json::Map<String, serde_json::Value> {
    let options = RenderOptions {
        format: Format::KeyValues,
        ..Default::default()
    };
    render_entity(entity, &core(), &options)
}

fn core() -> std::sync::Arc<ActiveContext> {
    ActiveContext::core()
}

#[test]
fn parses_every_attribute_kind_in_normalized_form() {
    let body = json!({
        "id": "urn:ngsi-ld:Thing:1",
        "type": "Thing",
        "p": {"type": "Property", "value": 21.5, "unitCode": "CEL", "observedAt": "2024-01-01T00:00:00Z"},
        "r": {"type": "Relationship", "object": "urn:ngsi-ld:Other:1"},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [11.25, 43.77]}},
        "l": {"type": "LanguageProperty", "languageMap": {"it": "ciao", "en": "hello"}},
        "v": {"type": "VocabProperty", "vocab": "Yes"},
        "lp": {"type": "ListProperty", "valueList": [1, 2]},
        "lr": {"type": "ListRelationship", "objectList": [{"object": "urn:a:1"}]},
        "j": {"type": "JsonProperty", "json": {"any": {"thing": 1}}},
    });
    let entity = parse_entity(&body, &core(), ParseOptions::CREATE).unwrap();
    let kinds: Vec<_> = entity.attributes.values().map(|i| i[0].kind).collect();
    assert_eq!(kinds, AttributeKind::ALL.to_vec());
    assert_eq!(entity.types, vec![core().expand("Thing")]);
    let vocab = &entity.attributes[&core().expand("v")][0].value;
    assert_eq!(vocab, &json!(core().expand("Yes")));
    assert_eq!(
        entity.attributes[&core().expand("lr")][0].value,
        json!([{"object": "urn:a:1"}])
    );
}

#[test]
fn concise_values_are_inferred() {
    let body = json!({
        "id": "urn:x:1", "type": "T",
        "plain": 3,
        "compound": {"a": 1},
        "rel": {"object": "urn:y:1"},
        "location": {"type": "Point", "coordinates": [1.0, 2.0]},
        "withMeta": {"value": 1, "unitCode": "C"},
    });
    let entity = parse_entity(&body, &core(), ParseOptions::CREATE).unwrap();
    let kind = |n: &str| entity.attributes[&core().expand(n)][0].kind;
    assert_eq!(kind("plain"), AttributeKind::Property);
    assert_eq!(kind("compound"), AttributeKind::Property);
    assert_eq!(kind("rel"), AttributeKind::Relationship);
    assert_eq!(kind("location"), AttributeKind::GeoProperty);
    assert_eq!(
        entity.attributes[&core().expand("withMeta")][0].unit_code.as_deref(),
        Some("C")
    );
}

#[test]
fn multi_instance_attributes_and_sub_attributes() {
    let body = json!({
        "id": "urn:x:1", "type": "T",
        "speed": [
            {"type": "Property", "value": 1, "accuracy": {"type": "Property", "value": 0.1}},
            {"type": "Property", "value": 2, "datasetId": "urn:ds:gps"},
        ],
    });
    let entity = parse_entity(&body, &core(), ParseOptions::CREATE).unwrap();
    let speed = &entity.attributes[&core().expand("speed")];
    assert_eq!(speed.len(), 2);
    assert!(speed[0].sub.contains_key(&core().expand("accuracy")));
    assert_eq!(speed[1].dataset_id.as_deref(), Some("urn:ds:gps"));
    let duplicate = json!({"id": "urn:x:1", "type": "T", "s": [{"value": 1}, {"value": 2}]});
    assert!(parse_entity(&duplicate, &core(), ParseOptions::CREATE).is_err());
}

#[test]
fn rejects_bad_input_with_bad_request_data() {
    let cases = [
        json!([]),
        json!({"type": "T"}),
        json!({"id": "not a uri", "type": "T"}),
        json!({"id": "urn:x:1"}),
        json!({"id": "urn:x:1", "type": 3}),
        json!({"id": "urn:x:1", "type": "T", "p": null}),
        json!({"id": "urn:x:1", "type": "T", "p": {"type": "Property"}}),
        json!({"id": "urn:x:1", "type": "T", "r": {"type": "Relationship", "object": "no uri"}}),
        json!({"id": "urn:x:1", "type": "T", "g": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": ["a"]}}}),
        json!({"id": "urn:x:1", "type": "T", "bad(name)": 1}),
        json!({"id": "urn:x:1", "type": "T", "p": {"type": "Property", "value": 1, "observedAt": "yesterday"}}),
        json!({"id": "urn:x:1", "type": "T", "p": {"type": "Unknown", "value": 1}}),
    ];
    for case in cases {
        let error = parse_entity(&case, &core(), ParseOptions::CREATE).unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequestData, "{case}");
    }
}

#[test]
fn render_round_trips_normalized_and_simplifies() {
    let body = json!({
        "id": "urn:x:1", "type": "T",
        "p": {"type": "Property", "value": 1},
        "r": {"type": "Relationship", "object": "urn:y:1"},
        "l": {"type": "LanguageProperty", "languageMap": {"it": "ciao", "en": "hello"}},
    });
    let entity = parse_entity(&body, &core(), ParseOptions::CREATE).unwrap();
    let normalized = render_entity(&entity, &core(), &RenderOptions::default());
    assert_eq!(serde_json::Value::Object(normalized), body);
    let key_values = render_key_values(&entity);
    assert_eq!(key_values["p"], json!(1));
    assert_eq!(key_values["r"], json!("urn:y:1"));
    let concise = render_entity(
        &entity,
        &core(),
        &RenderOptions {
            format: Format::Concise,
            ..Default::default()
        },
    );
    assert_eq!(concise["r"], json!({"object": "urn:y:1"}));
    let italian = render_entity(
        &entity,
        &core(),
        &RenderOptions {
            lang: Some("it".into()),
            ..Default::default()
        },
    );
    assert_eq!(italian["l"], json!({"type": "Property", "value": "ciao", "lang": "it"}));
}

#[test]
fn expired_entities_and_instances_are_not_live() {
    let body = json!({
        "id": "urn:x:1", "type": "T", "expiresAt": "2100-01-01T00:00:00Z",
        "speed": [{"value": 1}, {"value": 2, "datasetId": "urn:d:1", "expiresAt": "2020-01-01T00:00:00Z"}],
        "gone": {"value": 3, "expiresAt": "2020-01-01T00:00:00Z"},
    });
    let entity = parse_entity(&body, &core(), ParseOptions::CREATE).unwrap();
    let live = entity.clone().live(crate::time::now()).expect("entity not expired");
    assert_eq!(live.attributes[&core().expand("speed")].len(), 1);
    assert!(!live.attributes.contains_key(&core().expand("gone")));
    let after_2100 = crate::time::parse("2100-01-02T00:00:00Z").unwrap();
    assert!(entity.live(after_2100).is_none());
    let malformed = json!({"id": "urn:x:1", "type": "T", "expiresAt": "2026-13-45T00:00:00Z"});
    assert!(parse_entity(&malformed, &core(), ParseOptions::CREATE).is_err());
}

/// The direct writer of a response body and the map other callers build
/// must agree member for member, in the same order, in every form.
#[test]
fn an_entity_view_writes_what_render_entity_builds_with_the_trailer_last() {
    use crate::render::EntityView;

    let body = json!({
        "id": "urn:x:1", "type": ["T", "U"], "scope": ["/a", "/b"],
        "speed": [{"type": "Property", "value": 1, "datasetId": "urn:d:1"}, {"type": "Property", "value": 2}],
        "p": {"type": "Property", "value": 5, "unitCode": "CEL", "observedAt": "2024-01-01T00:00:00Z",
              "q": {"type": "Property", "value": "x"}},
        "r": {"type": "Relationship", "object": "urn:y:1", "objectType": "T"},
        "v": {"type": "VocabProperty", "vocab": "Yes"},
        "lr": {"type": "ListRelationship", "objectList": [{"object": "urn:a:1"}]},
        "j": {"type": "JsonProperty", "json": {"any": 1}},
        "l": {"type": "LanguageProperty", "languageMap": {"it": "ciao", "en": "hello"}},
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [11.25, 43.77]}},
    });
    let mut entity = parse_entity(&body, &core(), ParseOptions::CREATE).unwrap();
    let stamp = crate::time::parse("2024-02-03T04:05:06.123456Z");
    entity.created_at = stamp;
    entity.modified_at = stamp;
    entity.attributes[0][0].created_at = stamp;
    let context = json!("https://example.org/context.jsonld");
    let core_context = core();
    for format in [Format::Normalized, Format::Concise, Format::KeyValues] {
        for sys_attrs in [false, true] {
            for lang in [None, Some("en".to_owned())] {
                let options = RenderOptions {
                    format,
                    sys_attrs,
                    lang,
                };
                let view = EntityView::new(&entity, &core_context, &options).with_trailer("@context", &context);
                let written = serde_json::to_string(&view).unwrap();
                let mut built = render_entity(&entity, &core_context, &options);
                built.insert("@context".into(), context.clone());
                assert_eq!(written, serde_json::to_string(&built).unwrap(), "{options:?}");
            }
        }
    }
    let key_values = render_key_values(&entity);
    assert_eq!(key_values["speed"], json!({"dataset": {"urn:d:1": 1, "@none": 2}}));
    assert_eq!(key_values["lr"], json!(["urn:a:1"]));
    assert_eq!(key_values["j"], json!({"json": {"any": 1}}));
    assert_eq!(key_values["v"], json!({"vocab": "Yes"}));
    assert_eq!(key_values["type"], json!(["T", "U"]));
    assert_eq!(key_values["scope"], json!(["/a", "/b"]));
}

/// ASCII text is judged byte by byte, other text character by character:
/// both must agree on every ASCII character (a non-ASCII letter that is
/// allowed sends the same character down the slow path).
#[test]
fn uri_characters_are_judged_alike_byte_by_byte_and_by_character() {
    for byte in 0u8..128 {
        let c = char::from(byte);
        let fast = has_forbidden_char(&format!("urn:x:{c}"));
        let slow = has_forbidden_char(&format!("urn:x:é{c}"));
        assert_eq!(fast, slow, "character {byte:#04x}");
    }
    assert!(has_forbidden_char("urn:x:a b") && has_forbidden_char("urn:x:\u{7f}") && has_forbidden_char("urn:x:`"));
    assert!(!has_forbidden_char("urn:ngsi-ld:Building:001~!$&'()*+,;=:@/?#[]%-._"));
    assert!(has_forbidden_char("urn:x:a\u{200B}b") && has_forbidden_char("urn:x:\u{A0}"));
}
