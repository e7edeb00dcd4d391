use serde_json::json;

use super::*;
use crate::entity::{parse_entity, ParseOptions};
use crate::query::TypeSelector;

const NAME: &str = "https://uri.etsi.org/ngsi-ld/default-context/name";
const SPEED: &str = "https://uri.etsi.org/ngsi-ld/default-context/speed";

fn entity(body: serde_json::Value) -> Entity {
    let mut entity = parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).expect("valid entity");
    entity.stamp_new(time::now());
    entity
}

fn car(name: &str, speed: f64) -> Entity {
    entity(json!({
        "id": "urn:ngsi-ld:Car:1", "type": "Car",
        "name": {"type": "Property", "value": name},
        "speed": {"type": "Property", "value": speed},
    }))
}

fn watch(triggers: &[Trigger], watched: &[&str]) -> Watch {
    Watch {
        selection: EntityQuery {
            types: Some(TypeSelector::parse("Car", &ActiveContext::core()).expect("type")),
            ..EntityQuery::default()
        },
        watched: watched.iter().map(|w| w.to_string()).collect(),
        triggers: triggers.to_vec(),
        show_changes: true,
    }
}

#[test]
fn creation_fires_attribute_created_by_default() {
    let notice = watch(&Trigger::DEFAULT, &[]).notice(None, Some(&car("a", 1.0)), time::now());
    assert_eq!(notice.map(|n| n.trigger), Some(Trigger::AttributeCreated));
}

#[test]
fn entity_of_another_type_is_not_notified() {
    let mut other = car("a", 1.0);
    other.types = vec!["https://uri.etsi.org/ngsi-ld/default-context/Bus".into()];
    assert!(watch(&Trigger::DEFAULT, &[])
        .notice(None, Some(&other), time::now())
        .is_none());
}

#[test]
fn only_changes_of_watched_attributes_notify() {
    let before = car("a", 1.0);
    let mut after = before.clone();
    after.attributes[SPEED][0].value = json!(2.0);
    let watching_name = watch(&Trigger::DEFAULT, &[NAME]);
    assert!(watching_name.notice(Some(&before), Some(&after), time::now()).is_none());
    let watching_speed = watch(&Trigger::DEFAULT, &[SPEED]);
    let notice = watching_speed.notice(Some(&before), Some(&after), time::now());
    assert_eq!(notice.map(|n| n.trigger), Some(Trigger::AttributeUpdated));
}

#[test]
fn unchanged_entity_is_not_notified() {
    let same = car("a", 1.0);
    assert!(watch(&[Trigger::EntityUpdated], &[])
        .notice(Some(&same), Some(&same), time::now())
        .is_none());
}

#[test]
fn deletion_renders_id_type_and_deleted_at() {
    let now = time::now();
    let notice = watch(&[Trigger::EntityDeleted], &[])
        .notice(Some(&car("a", 1.0)), None, now)
        .expect("entityDeleted fires");
    let options = NoticeOptions::default();
    let rendered = render_notice(&notice, &ActiveContext::core(), &options);
    assert_eq!(
        rendered.keys().collect::<Vec<_>>(),
        ["id", "type", "deletedAt"],
        "{rendered:?}"
    );
    assert_eq!(rendered["deletedAt"], json!(time::format(&now)));
}

#[test]
fn deletion_with_show_changes_lists_previous_values() {
    let notice = watch(&[Trigger::EntityDeleted], &[])
        .notice(Some(&car("a", 1.0)), None, time::now())
        .expect("entityDeleted fires");
    let options = NoticeOptions {
        show_changes: true,
        ..NoticeOptions::default()
    };
    let rendered = render_notice(&notice, &ActiveContext::core(), &options);
    assert_eq!(
        rendered["name"],
        json!({"type": "Property", "value": "urn:ngsi-ld:null", "previousValue": "a"})
    );
}

#[test]
fn removed_attribute_is_sent_as_ngsi_ld_null() {
    let before = car("a", 1.0);
    let mut after = before.clone();
    after.attributes.shift_remove(NAME);
    let notice = watch(&[Trigger::AttributeDeleted], &[NAME])
        .notice(Some(&before), Some(&after), time::now())
        .expect("attributeDeleted fires");
    let normalized = render_notice(&notice, &ActiveContext::core(), &NoticeOptions::default());
    assert_eq!(
        normalized["name"],
        json!({"type": "Property", "value": "urn:ngsi-ld:null"})
    );
    assert_eq!(normalized["speed"]["value"], json!(1.0));
    let key_values = NoticeOptions {
        render: RenderOptions {
            format: Format::KeyValues,
            ..RenderOptions::default()
        },
        ..NoticeOptions::default()
    };
    let rendered = render_notice(&notice, &ActiveContext::core(), &key_values);
    assert_eq!(rendered["name"], json!("urn:ngsi-ld:null"));
}

#[test]
fn show_changes_adds_the_previous_value_of_an_update() {
    let before = car("a", 1.0);
    let mut after = before.clone();
    after.attributes[NAME][0].value = json!("b");
    let notice = watch(&Trigger::DEFAULT, &[])
        .notice(Some(&before), Some(&after), time::now())
        .expect("attributeUpdated fires");
    let options = NoticeOptions {
        show_changes: true,
        ..NoticeOptions::default()
    };
    let rendered = render_notice(&notice, &ActiveContext::core(), &options);
    assert_eq!(
        rendered["name"],
        json!({"type": "Property", "value": "b", "previousValue": "a"})
    );
    assert!(rendered["speed"].get("previousValue").is_none(), "speed did not change");
}

#[test]
fn notification_attributes_restrict_the_rendered_entity() {
    let notice = watch(&Trigger::DEFAULT, &[])
        .notice(None, Some(&car("a", 1.0)), time::now())
        .expect("fires");
    let options = NoticeOptions {
        attributes: vec![SPEED.into()],
        ..NoticeOptions::default()
    };
    let rendered = render_notice(&notice, &ActiveContext::core(), &options);
    assert!(rendered.contains_key("speed"));
    assert!(!rendered.contains_key("name"));
}

#[test]
fn notice_survives_a_round_trip_through_json() {
    let notice = watch(&[Trigger::EntityDeleted], &[])
        .notice(Some(&car("a", 1.0)), None, time::now())
        .expect("fires");
    let text = serde_json::to_string(&notice).expect("serialize");
    let back: Notice = serde_json::from_str(&text).expect("deserialize");
    assert_eq!(back, notice);
}
