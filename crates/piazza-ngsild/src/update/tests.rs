use serde_json::json;

use super::*;
use crate::entity::{parse_entity, ParseOptions};
use crate::jsonld::ActiveContext;
use crate::time;

fn entity(body: serde_json::Value) -> Entity {
    let mut e = parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).unwrap();
    e.stamp_new(time::now());
    e
}

fn fragment(body: serde_json::Value, options: ParseOptions) -> Entity {
    parse_entity(&body, &ActiveContext::core(), options).unwrap()
}

fn name(n: &str) -> String {
    ActiveContext::core().expand(n)
}

#[test]
fn append_respects_no_overwrite() {
    let mut e = entity(json!({"id": "urn:x:1", "type": "T", "a": 1}));
    let outcome = append_attributes(
        &mut e,
        fragment(json!({"a": 2, "b": 3}), ParseOptions::FRAGMENT),
        true,
        time::now(),
    );
    assert_eq!(outcome.updated, vec![name("b")]);
    assert_eq!(outcome.not_updated.len(), 1);
    assert_eq!(e.instance(&name("a"), None).unwrap().value, json!(1));
}

#[test]
fn update_replaces_instances_keeps_created_at_and_deletes_with_null() {
    let mut e = entity(json!({"id": "urn:x:1", "type": "T", "a": {"value": 1, "unitCode": "C"}, "b": 1}));
    let created = e.instance(&name("a"), None).unwrap().created_at;
    let patch = fragment(
        json!({"a": 2, "zz": 3, "b": "urn:ngsi-ld:null", "scope": "/x"}),
        ParseOptions::MERGE,
    );
    let outcome = update_attributes(&mut e, patch, time::now());
    assert_eq!(outcome.updated, vec![name("a"), name("zz"), name("b")]);
    assert_eq!(outcome.not_updated[0].name, "scope", "no scope to update");
    let a = e.instance(&name("a"), None).unwrap();
    assert_eq!(
        (a.value.clone(), a.unit_code.clone(), a.created_at),
        (json!(2), None, created)
    );
    assert!(e.attributes.contains_key(&name("zz")));
    assert!(!e.attributes.contains_key(&name("b")));
}

#[test]
fn merge_deletes_with_null_and_merges_sub_attributes() {
    let mut e = entity(json!({"id": "urn:x:1", "type": "T",
        "a": {"type": "Property", "value": 1, "s1": {"type": "Property", "value": "x"}},
        "b": 2}));
    let patch = fragment(
        json!({"a": {"type": "Property", "value": 5, "s2": {"type": "Property", "value": "y"}}, "b": "urn:ngsi-ld:null"}),
        ParseOptions::MERGE,
    );
    merge_entity(&mut e, patch, time::now());
    let a = e.instance(&name("a"), None).unwrap();
    assert_eq!(a.value, json!(5));
    assert_eq!(a.sub.len(), 2);
    assert!(!e.attributes.contains_key(&name("b")));
}

#[test]
fn delete_attribute_by_dataset_id_or_all() {
    let mut e = entity(json!({"id": "urn:x:1", "type": "T",
        "a": [{"type": "Property", "value": 1}, {"type": "Property", "value": 2, "datasetId": "urn:d:1"}]}));
    delete_attribute(&mut e, &name("a"), Some("urn:d:1"), false, time::now()).unwrap();
    assert_eq!(e.attributes[&name("a")].len(), 1);
    assert!(delete_attribute(&mut e, &name("a"), Some("urn:d:1"), false, time::now()).is_err());
    delete_attribute(&mut e, &name("a"), None, true, time::now()).unwrap();
    assert!(e.attributes.is_empty());
}

#[test]
fn partial_update_needs_an_existing_instance_of_the_same_kind() {
    let mut e = entity(json!({"id": "urn:x:1", "type": "T", "a": {"type": "Property", "value": 1, "unitCode": "C"}}));
    let core = ActiveContext::core();
    let patch = crate::entity::parse_attribute_patch("a", &json!({"value": 9}), &core).unwrap();
    partial_update_attribute(&mut e, &name("a"), patch.clone(), time::now()).unwrap();
    let a = e.instance(&name("a"), None).unwrap();
    assert_eq!((a.value.clone(), a.unit_code.as_deref()), (json!(9), Some("C")));
    assert!(partial_update_attribute(&mut e, &name("nope"), patch, time::now()).is_err());
    let relationship = json!({"type": "Relationship", "object": "urn:a:b"});
    let wrong_kind = crate::entity::parse_attribute_patch("a", &relationship, &core).unwrap();
    let error = partial_update_attribute(&mut e, &name("a"), wrong_kind, time::now()).unwrap_err();
    assert_eq!(error.kind, crate::ErrorKind::BadRequestData);
    let delete = crate::entity::parse_attribute_patch("a", &json!({"value": "urn:ngsi-ld:null"}), &core).unwrap();
    partial_update_attribute(&mut e, &name("a"), delete, time::now()).unwrap();
    assert!(e.attributes.is_empty());
}
