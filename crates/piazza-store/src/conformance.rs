//! The conformance suite every backend must pass: the behaviour of the
//! [`Store`] port, written once. Instantiate it in a backend's tests with
//! [`conformance_suite!`](crate::conformance_suite), giving an async factory
//! that returns a fresh, empty store and a guard that keeps it alive (or,
//! for a backend on a server, `None` to skip when the server is missing).

use std::sync::Arc;

use piazza_ngsild::entity::{parse_entity, ParseOptions};
use piazza_ngsild::query::{EntityQuery, TypeSelector};
use piazza_ngsild::update::UpdateOutcome;
use piazza_ngsild::{time, ActiveContext, Entity, ErrorKind, NgsiError};
use serde_json::json;

use crate::{
    ContextKind, Delivery, Edit, EditOutcome, NewState, OutboxEntry, Page, ResourceKind, Store, StoredContext,
    TemporalEdit, Tenant,
};
use piazza_ngsild::temporal::{TemporalQuery, TimeProperty, TimeRel};

/// Generates one `#[tokio::test]` per conformance case.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::conformance_suite!(@cases $factory;
            create_then_get, failed_edit_writes_nothing, tenants_are_isolated,
            queries_page_in_creation_order, delete_removes_from_indexes, discovery_reflects_data,
            contexts_round_trip, concurrent_edits_are_serialised, resources_round_trip,
            history_records_every_change, temporal_edits_and_time_ranges, geo_queries_follow_every_change,
            edits_of_one_call_see_each_other, outbox_is_written_with_the_change, deliveries_settle_notices_and_count,
            retention_purges_old_history_of_one_tenant, q_queries_return_exactly_what_matches,
            geo_queries_return_exactly_what_matches, aggregations_agree_with_their_instances,
            history_of_one_call_stays_with_each_entity);
        $crate::conformance_suite!(@pairs $factory; raw_export_and_import_round_trip);
    };
    // Cases that need two fresh stores of the backend (a source and a target).
    (@pairs $factory:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some((source, _source_guard)) = $crate::conformance::Provided::provided(($factory)().await) else {
                    return;
                };
                let Some((target, _target_guard)) = $crate::conformance::Provided::provided(($factory)().await) else {
                    return;
                };
                $crate::conformance::$case(source, target).await;
            }
        )*
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some((store, _guard)) = $crate::conformance::Provided::provided(($factory)().await) else {
                    return;
                };
                $crate::conformance::$case(store).await;
            }
        )*
    };
}

/// What a factory returns: a store and a guard that keeps it alive, or
/// `None` when the backend's server is unavailable and the case is skipped
/// (the factory says so; see `piazza_store_postgres::testing`).
pub trait Provided {
    type Guard;
    fn provided(self) -> Option<(Arc<dyn Store>, Self::Guard)>;
}

impl<G> Provided for (Arc<dyn Store>, G) {
    type Guard = G;
    fn provided(self) -> Option<(Arc<dyn Store>, G)> {
        Some(self)
    }
}

impl<G> Provided for Option<(Arc<dyn Store>, G)> {
    type Guard = G;
    fn provided(self) -> Option<(Arc<dyn Store>, G)> {
        self
    }
}

fn entity(id: &str, entity_type: &str, extra: serde_json::Value) -> Entity {
    let mut body = json!({"id": id, "type": entity_type});
    if let (Some(target), Some(source)) = (body.as_object_mut(), extra.as_object()) {
        target.extend(source.clone());
    }
    let mut parsed = parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).expect("valid test entity");
    parsed.stamp_new(time::now());
    parsed
}

fn create(e: Entity) -> Edit {
    Edit::new(e.id.clone(), move |existing| match existing {
        Some(_) => Err(NgsiError::already_exists("exists")),
        None => Ok(EditOutcome::put(e, UpdateOutcome::default())),
    })
}

fn tenant(name: &str) -> Tenant {
    Tenant::parse(name).expect("valid tenant")
}

fn all() -> Page {
    Page {
        offset: 0,
        limit: 1000,
        count: true,
    }
}

pub async fn create_then_get(store: Arc<dyn Store>) {
    let t = tenant("t1");
    assert!(!store.tenant_exists(&t).await.unwrap());
    let results = store
        .edit(&t, vec![create(entity("urn:a:1", "A", json!({"p": 1})))])
        .await
        .unwrap();
    let applied = results.into_iter().next().unwrap().unwrap();
    assert!(applied.before.is_none());
    let stored = store.get(&t, "urn:a:1").await.unwrap().expect("stored");
    assert_eq!(Some(stored), applied.after);
    assert!(store.tenant_exists(&t).await.unwrap());
    let again = store
        .edit(&t, vec![create(entity("urn:a:1", "A", json!({})))])
        .await
        .unwrap();
    assert_eq!(again[0].as_ref().unwrap_err().kind, ErrorKind::AlreadyExists);
}

pub async fn failed_edit_writes_nothing(store: Arc<dyn Store>) {
    let t = tenant("t1");
    let failing = Edit::new("urn:a:2", |_| Err(NgsiError::bad_request("no")));
    let results = store
        .edit(&t, vec![create(entity("urn:a:1", "A", json!({}))), failing])
        .await
        .unwrap();
    assert!(results[0].is_ok());
    assert_eq!(results[1].as_ref().unwrap_err().kind, ErrorKind::BadRequestData);
    assert!(store.get(&t, "urn:a:2").await.unwrap().is_none());
    assert!(store.get(&t, "urn:a:1").await.unwrap().is_some());
}

pub async fn tenants_are_isolated(store: Arc<dyn Store>) {
    let (a, b) = (tenant("a"), tenant("b"));
    store
        .edit(&a, vec![create(entity("urn:x:1", "X", json!({"p": 1})))])
        .await
        .unwrap();
    assert!(store.get(&b, "urn:x:1").await.unwrap().is_none());
    assert!(store.get(&Tenant::default(), "urn:x:1").await.unwrap().is_none());
    let in_b = store.query(&b, Arc::new(EntityQuery::default()), all()).await.unwrap();
    assert_eq!((in_b.entities.len(), in_b.total), (0, Some(0)));
    assert!(store.types(&b).await.unwrap().is_empty());
    assert!(!store.tenant_exists(&b).await.unwrap());
    // The same id may exist in two tenants, independently.
    store
        .edit(&b, vec![create(entity("urn:x:1", "Y", json!({})))])
        .await
        .unwrap();
    assert_eq!(
        store.get(&a, "urn:x:1").await.unwrap().unwrap().types,
        entity("urn:x:1", "X", json!({})).types
    );
    // The value indexes `q` reads are per tenant too: the same attribute
    // name in two tenants never finds the other's values.
    store
        .edit(&b, vec![create(entity("urn:x:2", "Y", json!({"p": 2})))])
        .await
        .unwrap();
    let core = ActiveContext::core();
    for (t, q, expected) in [
        (&a, "p==1", vec!["urn:x:1"]),
        (&b, "p==1", vec![]),
        (&a, "p==2", vec![]),
        (&b, "p>=1", vec!["urn:x:2"]),
    ] {
        let query = Arc::new(EntityQuery {
            q: Some(piazza_ngsild::query::Query::parse(q, &core).unwrap()),
            ..Default::default()
        });
        let found = store.query(t, query, all()).await.unwrap();
        let ids: Vec<&str> = found.entities.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, expected, "{q} in tenant {}", t.name());
        assert_eq!(found.total, Some(expected.len() as u64), "{q} in tenant {}", t.name());
    }
}

pub async fn queries_page_in_creation_order(store: Arc<dyn Store>) {
    let t = tenant("t");
    let edits = (0..25)
        .map(|i| {
            create(entity(
                &format!("urn:e:{i:03}"),
                if i % 2 == 0 { "Even" } else { "Odd" },
                json!({"n": i}),
            ))
        })
        .collect();
    store.edit(&t, edits).await.unwrap();
    let core = ActiveContext::core();
    let even = Arc::new(EntityQuery {
        types: Some(TypeSelector::parse("Even", &core).unwrap()),
        ..Default::default()
    });
    let page = store
        .query(
            &t,
            even.clone(),
            Page {
                offset: 5,
                limit: 3,
                count: true,
            },
        )
        .await
        .unwrap();
    let ids: Vec<_> = page.entities.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["urn:e:010", "urn:e:012", "urn:e:014"]);
    assert_eq!(page.total, Some(13));
    let beyond = store
        .query(
            &t,
            even,
            Page {
                offset: 100,
                limit: 3,
                count: true,
            },
        )
        .await
        .unwrap();
    assert!(beyond.entities.is_empty());
    let pattern = Arc::new(EntityQuery {
        id_pattern: Some(regex::Regex::new("^urn:e:00").unwrap()),
        ..Default::default()
    });
    let page = store
        .query(
            &t,
            pattern,
            Page {
                offset: 8,
                limit: 5,
                count: true,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.entities.len(), 2);
    assert_eq!(page.total, Some(10));
}

pub async fn delete_removes_from_indexes(store: Arc<dyn Store>) {
    let t = tenant("t");
    store
        .edit(&t, vec![create(entity("urn:d:1", "D", json!({"p": 1})))])
        .await
        .unwrap();
    let delete = Edit::new("urn:d:1", |e| match e {
        Some(_) => Ok(EditOutcome {
            state: NewState::Delete,
            report: UpdateOutcome::default(),
        }),
        None => Err(NgsiError::not_found("missing")),
    });
    let results = store.edit(&t, vec![delete]).await.unwrap();
    assert!(results[0].as_ref().unwrap().after.is_none());
    assert!(store.get(&t, "urn:d:1").await.unwrap().is_none());
    assert!(store.types(&t).await.unwrap().is_empty());
    assert!(store.attributes(&t).await.unwrap().is_empty());
}

pub async fn discovery_reflects_data(store: Arc<dyn Store>) {
    let t = tenant("t");
    let core = ActiveContext::core();
    store
        .edit(
            &t,
            vec![
                create(entity(
                    "urn:s:1",
                    "Sensor",
                    json!({"temp": 1, "at": {"type": "Relationship", "object": "urn:r:1"}}),
                )),
                create(entity("urn:s:2", "Sensor", json!({"temp": 2}))),
                create(entity("urn:r:1", "Room", json!({"temp": 3}))),
            ],
        )
        .await
        .unwrap();
    let types = store.types(&t).await.unwrap();
    let sensor = types
        .iter()
        .find(|s| s.name == core.expand("Sensor"))
        .expect("Sensor type");
    assert_eq!(sensor.entity_count, 2);
    assert_eq!(sensor.attributes.len(), 2);
    let attributes = store.attributes(&t).await.unwrap();
    let temp = attributes
        .iter()
        .find(|a| a.name == core.expand("temp"))
        .expect("temp attribute");
    assert_eq!(temp.entity_count, 3);
    assert_eq!(temp.types.len(), 2);
}

pub async fn contexts_round_trip(store: Arc<dyn Store>) {
    let (t, other) = (tenant("t"), tenant("o"));
    let context = StoredContext {
        id: "c1".into(),
        url: "http://example.org/c1".into(),
        kind: ContextKind::Hosted,
        document: json!({"@context": {"a": "http://example.org/a"}}),
        created_at: time::now(),
    };
    store.put_context(&t, context.clone()).await.unwrap();
    let loaded = store.get_context(&t, "c1").await.unwrap().expect("stored context");
    assert_eq!(
        (loaded.id.as_str(), loaded.kind, &loaded.document),
        ("c1", ContextKind::Hosted, &context.document)
    );
    assert!(store.get_context(&other, "c1").await.unwrap().is_none());
    assert_eq!(store.list_contexts(&t).await.unwrap().len(), 1);
    assert!(!store.delete_context(&other, "c1").await.unwrap());
    assert!(store.delete_context(&t, "c1").await.unwrap());
    assert!(store.get_context(&t, "c1").await.unwrap().is_none());
}

pub async fn concurrent_edits_are_serialised(store: Arc<dyn Store>) {
    let t = tenant("t");
    store
        .edit(&t, vec![create(entity("urn:c:1", "C", json!({"n": 0})))])
        .await
        .unwrap();
    let name = ActiveContext::core().expand("n");
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let (store, t, name) = (store.clone(), t.clone(), name.clone());
        tasks.push(tokio::spawn(async move {
            let increment = Edit::new("urn:c:1", move |e| {
                let mut e = e.cloned().ok_or_else(|| NgsiError::not_found("missing"))?;
                let attribute = &mut e.attributes[&name][0];
                attribute.value = json!(attribute.value.as_i64().unwrap_or(0) + 1);
                Ok(EditOutcome::put(e, UpdateOutcome::default()))
            });
            store.edit(&t, vec![increment]).await.unwrap();
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let e = store.get(&t, "urn:c:1").await.unwrap().unwrap();
    assert_eq!(e.attributes[&name][0].value, json!(50), "no lost update");
}

pub async fn resources_round_trip(store: Arc<dyn Store>) {
    let (t, other) = (tenant("t"), tenant("o"));
    let kind = ResourceKind::Subscription;
    assert!(store
        .put_resource(&t, kind, "urn:s:1", json!({"n": 1}), true)
        .await
        .unwrap());
    assert!(
        !store
            .put_resource(&t, kind, "urn:s:1", json!({"n": 2}), true)
            .await
            .unwrap(),
        "ids are unique"
    );
    assert!(store
        .put_resource(&t, kind, "urn:s:1", json!({"n": 3}), false)
        .await
        .unwrap());
    assert!(
        !store
            .put_resource(&t, kind, "urn:s:none", json!({}), false)
            .await
            .unwrap(),
        "replace needs an existing id"
    );
    assert_eq!(
        store.get_resource(&t, kind, "urn:s:1").await.unwrap(),
        Some(json!({"n": 3}))
    );
    assert!(store.get_resource(&other, kind, "urn:s:1").await.unwrap().is_none());
    store
        .put_resource(&t, kind, "urn:s:2", json!({"n": 4}), true)
        .await
        .unwrap();
    assert_eq!(
        store.list_resources(&t, kind).await.unwrap(),
        vec![json!({"n": 3}), json!({"n": 4})]
    );
    assert!(store.list_resources(&other, kind).await.unwrap().is_empty());
    assert!(!store.delete_resource(&other, kind, "urn:s:1").await.unwrap());
    assert!(store.delete_resource(&t, kind, "urn:s:1").await.unwrap());
    assert!(store.get_resource(&t, kind, "urn:s:1").await.unwrap().is_none());
}

fn set_p(id: &str, value: i64) -> Edit {
    append(id, json!({ "p": value }))
}

/// Appends the attributes of a fragment `body` to the stored entity.
fn append(id: &str, body: serde_json::Value) -> Edit {
    Edit::new(id, move |existing| {
        let mut entity = existing.cloned().ok_or_else(|| NgsiError::not_found("missing"))?;
        let fragment = parse_entity(&body, &ActiveContext::core(), ParseOptions::FRAGMENT).expect("valid fragment");
        piazza_ngsild::update::append_attributes(&mut entity, fragment, false, time::now());
        Ok(EditOutcome::put(entity, UpdateOutcome::default()))
    })
}

pub async fn history_records_every_change(store: Arc<dyn Store>) {
    let t = tenant("hist");
    let p = ActiveContext::core().expand("p");
    let q = ActiveContext::core().expand("q");
    store
        .edit(&t, vec![create(entity("urn:h:1", "H", json!({"p": 0, "q": "same"})))])
        .await
        .unwrap();
    for value in 1..=3 {
        store.edit(&t, vec![set_p("urn:h:1", value)]).await.unwrap();
    }
    let all = TemporalQuery {
        timeproperty: TimeProperty::CreatedAt,
        ..TemporalQuery::default()
    };
    let history = store
        .temporal_entity(&t, "urn:h:1", &all)
        .await
        .unwrap()
        .expect("history");
    let values: Vec<_> = history.attributes[&p]
        .iter()
        .map(|i| i.attribute.value.clone())
        .collect();
    assert_eq!(values, vec![json!(0), json!(1), json!(2), json!(3)]);
    // The temporal entity is modified with the entity.
    let current = store.get(&t, "urn:h:1").await.unwrap().expect("entity");
    assert_eq!(history.modified_at, current.modified_at);
    // An attribute that did not change has one instance only.
    assert_eq!(history.attributes[&q].len(), 1);
    let ids: std::collections::HashSet<_> = history.attributes[&p].iter().map(|i| i.instance_id.clone()).collect();
    assert_eq!(ids.len(), 4);
    assert!(ids.iter().all(|i| i.starts_with("urn:ngsi-ld:attribute:instance:")));
    // lastN keeps the most recent.
    let last = TemporalQuery {
        last_n: Some(2),
        ..all.clone()
    };
    let history = store.temporal_entity(&t, "urn:h:1", &last).await.unwrap().unwrap();
    let values: Vec<_> = history.attributes[&p]
        .iter()
        .map(|i| i.attribute.value.clone())
        .collect();
    assert_eq!(values, vec![json!(2), json!(3)]);
    // Other tenants see nothing.
    assert!(store
        .temporal_entity(&tenant("other"), "urn:h:1", &all)
        .await
        .unwrap()
        .is_none());
    // A type added and another dropped: the history keeps every type.
    let core = ActiveContext::core();
    for types in [vec!["H", "H2"], vec!["H2"]] {
        let types: Vec<String> = types.into_iter().map(|t| core.expand(t)).collect();
        let retype = Edit::new("urn:h:1", move |existing| {
            let mut entity = existing.cloned().ok_or_else(|| NgsiError::not_found("missing"))?;
            entity.types = types;
            entity.modified_at = Some(time::now());
            Ok(EditOutcome::put(entity, UpdateOutcome::default()))
        });
        store.edit(&t, vec![retype]).await.unwrap().remove(0).unwrap();
    }
    // Deleting the entity keeps its history and types, with deletion records.
    store
        .edit(
            &t,
            vec![Edit::new("urn:h:1", |_| {
                Ok(EditOutcome {
                    state: NewState::Delete,
                    report: UpdateOutcome::default(),
                })
            })],
        )
        .await
        .unwrap();
    let history = store.temporal_entity(&t, "urn:h:1", &all).await.unwrap().expect("kept");
    assert!(history.deleted_at.is_some());
    assert_eq!(history.types, vec![core.expand("H"), core.expand("H2")]);
    assert!(history.attributes[&p].last().unwrap().deleted_at.is_some());
    let found = store
        .temporal_query(&t, Arc::new(EntityQuery::default()), &all, all_page())
        .await
        .unwrap();
    assert_eq!(found.entities.len(), 1);
}

fn all_page() -> Page {
    all()
}

fn observed(value: i64, at: &str) -> piazza_ngsild::Attribute {
    let mut attribute = piazza_ngsild::Attribute::new(piazza_ngsild::AttributeKind::Property, json!(value));
    attribute.observed_at = Some(at.to_owned());
    attribute
}

pub async fn temporal_edits_and_time_ranges(store: Arc<dyn Store>) {
    let t = tenant("tedit");
    let speed = "https://example.org/speed".to_owned();
    let instances: Vec<_> = (0..10)
        .map(|i| observed(i, &format!("2020-01-01T00:{:02}:00Z", i)))
        .collect();
    let upsert = TemporalEdit::Upsert {
        id: "urn:v:1".into(),
        types: vec!["https://example.org/V".into()],
        scope: Vec::new(),
        attributes: vec![(speed.clone(), instances)],
    };
    assert!(store.temporal_edit(&t, upsert.clone()).await.unwrap().unwrap());
    let ts = |s: &str| time::parse(s).unwrap();
    let between = TemporalQuery {
        timerel: Some(TimeRel::Between(ts("2020-01-01T00:02:00Z"), ts("2020-01-01T00:05:00Z"))),
        ..TemporalQuery::default()
    };
    let history = store.temporal_entity(&t, "urn:v:1", &between).await.unwrap().unwrap();
    let values: Vec<_> = history.attributes[&speed]
        .iter()
        .map(|i| i.attribute.value.clone())
        .collect();
    assert_eq!(values, vec![json!(2), json!(3), json!(4)]);
    // The instance limit cuts the history and says where.
    let limited = TemporalQuery {
        instance_limit: 4,
        ..TemporalQuery::default()
    };
    let history = store.temporal_entity(&t, "urn:v:1", &limited).await.unwrap().unwrap();
    assert_eq!(history.attributes[&speed].len(), 4);
    assert_eq!(history.range.unwrap().end, ts("2020-01-01T00:03:00Z"));
    // Modify then delete one instance.
    let target = history.attributes[&speed][0].instance_id.clone();
    let modify = TemporalEdit::ModifyInstance {
        id: "urn:v:1".into(),
        attr: speed.clone(),
        instance_id: target.clone(),
        instance: Box::new(observed(100, "2020-01-01T00:00:00Z")),
    };
    assert!(!store.temporal_edit(&t, modify).await.unwrap().unwrap());
    let history = store
        .temporal_entity(&t, "urn:v:1", &TemporalQuery::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(history.attributes[&speed][0].attribute.value, json!(100));
    let delete = TemporalEdit::DeleteInstance {
        id: "urn:v:1".into(),
        attr: speed.clone(),
        instance_id: target.clone(),
    };
    store.temporal_edit(&t, delete.clone()).await.unwrap().unwrap();
    let again = store.temporal_edit(&t, delete).await.unwrap();
    assert_eq!(again.unwrap_err().kind, ErrorKind::ResourceNotFound);
    // A second upsert adds instances and reports no creation.
    assert!(!store.temporal_edit(&t, upsert).await.unwrap().unwrap());
    let history = store
        .temporal_entity(&t, "urn:v:1", &TemporalQuery::default())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(history.attributes[&speed].len(), 19);
    // Deleting the whole history.
    let delete_all = TemporalEdit::DeleteEntity { id: "urn:v:1".into() };
    store.temporal_edit(&t, delete_all.clone()).await.unwrap().unwrap();
    assert!(store
        .temporal_entity(&t, "urn:v:1", &TemporalQuery::default())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        store.temporal_edit(&t, delete_all).await.unwrap().unwrap_err().kind,
        ErrorKind::ResourceNotFound
    );
}

pub async fn geo_queries_follow_every_change(store: Arc<dyn Store>) {
    let t = tenant("geo");
    let core = ActiveContext::core();
    let at = |lon: f64, lat: f64| json!({"location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}});
    store
        .edit(
            &t,
            vec![
                create(entity("urn:g:florence", "P", at(11.2558, 43.7696))),
                create(entity("urn:g:pisa", "P", at(10.3966, 43.7230))),
                create(entity("urn:g:nowhere", "P", json!({"n": 1}))),
            ],
        )
        .await
        .unwrap();
    let near_florence = || {
        let geo = piazza_ngsild::query::GeoQuery::parse(
            "near;maxDistance==5000",
            "Point",
            &json!([11.2560, 43.7731]),
            None,
            &core,
        )
        .unwrap();
        Arc::new(EntityQuery {
            geo: Some(geo),
            ..Default::default()
        })
    };
    let ids = |result: crate::QueryResult| result.entities.into_iter().map(|e| e.id).collect::<Vec<_>>();
    assert_eq!(
        ids(store.query(&t, near_florence(), all()).await.unwrap()),
        ["urn:g:florence"]
    );
    // Moving an entity moves it in and out of the results.
    let moved = at(11.2600, 43.7700);
    let move_pisa = Edit::new("urn:g:pisa", move |e| {
        let mut e = e.cloned().ok_or_else(|| NgsiError::not_found("missing"))?;
        let fragment = parse_entity(&moved, &ActiveContext::core(), ParseOptions::FRAGMENT)?;
        piazza_ngsild::update::append_attributes(&mut e, fragment, false, time::now());
        Ok(EditOutcome::put(e, UpdateOutcome::default()))
    });
    store.edit(&t, vec![move_pisa]).await.unwrap();
    let found = store.query(&t, near_florence(), all()).await.unwrap();
    assert_eq!(found.total, Some(2));
    assert_eq!(ids(found), ["urn:g:florence", "urn:g:pisa"]);
    let delete = Edit::new("urn:g:florence", |_| {
        Ok(EditOutcome {
            state: NewState::Delete,
            report: UpdateOutcome::default(),
        })
    });
    store.edit(&t, vec![delete]).await.unwrap();
    assert_eq!(
        ids(store.query(&t, near_florence(), all()).await.unwrap()),
        ["urn:g:pisa"]
    );
}

pub async fn edits_of_one_call_see_each_other(store: Arc<dyn Store>) {
    let t = tenant("same");
    let delete = || {
        Edit::new("urn:s:1", |e| match e {
            Some(_) => Ok(EditOutcome {
                state: NewState::Delete,
                report: UpdateOutcome::default(),
            }),
            None => Err(NgsiError::not_found("missing")),
        })
    };
    let results = store
        .edit(
            &t,
            vec![
                create(entity("urn:s:1", "S", json!({"p": 0}))),
                set_p("urn:s:1", 1),
                create(entity("urn:s:1", "S", json!({}))),
                delete(),
                delete(),
                create(entity("urn:s:1", "Again", json!({"p": 5}))),
                set_p("urn:s:1", 6),
            ],
        )
        .await
        .unwrap();
    let ok: Vec<bool> = results.iter().map(Result::is_ok).collect();
    assert_eq!(ok, [true, true, false, true, false, true, true]);
    let p = ActiveContext::core().expand("p");
    let stored = store.get(&t, "urn:s:1").await.unwrap().expect("recreated");
    assert_eq!(stored.types, vec![ActiveContext::core().expand("Again")]);
    assert_eq!(stored.attributes[&p][0].value, json!(6));
    // The indexes hold the last state only: no row of the deleted entity.
    let core = ActiveContext::core();
    for (types, q, expected) in [("S", None, 0), ("Again", Some("p==6"), 1), ("Again", Some("p==5"), 0)] {
        let query = Arc::new(EntityQuery {
            types: Some(TypeSelector::parse(types, &core).unwrap()),
            q: q.map(|q| piazza_ngsild::query::Query::parse(q, &core).unwrap()),
            ..Default::default()
        });
        let found = store.query(&t, query, all()).await.unwrap();
        assert_eq!(found.entities.len(), expected, "type {types}, q {q:?}");
    }
    let all = TemporalQuery {
        timeproperty: TimeProperty::CreatedAt,
        ..TemporalQuery::default()
    };
    let history = store
        .temporal_entity(&t, "urn:s:1", &all)
        .await
        .unwrap()
        .expect("history");
    // In time order; the entities created were stamped when built, so only
    // the set of values is fixed here.
    let mut values: Vec<String> = history.attributes[&p]
        .iter()
        .map(|i| i.attribute.value.to_string())
        .collect();
    values.sort();
    assert_eq!(values, ["0", "1", "5", "6", "null"]);
    assert_eq!(history.types.len(), 2, "the temporal entity keeps both types");
    assert!(history.deleted_at.is_none(), "recreated");

    // A stored entity deleted and created again in one call: a new row
    // under the same id, and the old row's index rows gone.
    let again = store
        .edit(&t, vec![delete(), create(entity("urn:s:1", "S", json!({"p": 7})))])
        .await
        .unwrap();
    assert!(again.iter().all(Result::is_ok), "{again:?}");
    for (types, q, expected) in [("Again", None, 0), ("S", Some("p==7"), 1), ("S", Some("p==6"), 0)] {
        let query = Arc::new(EntityQuery {
            types: Some(TypeSelector::parse(types, &core).unwrap()),
            q: q.map(|q| piazza_ngsild::query::Query::parse(q, &core).unwrap()),
            ..Default::default()
        });
        let found = store.query(&t, query, self::all()).await.unwrap();
        assert_eq!(
            found.entities.len(),
            expected,
            "after the second call: type {types}, q {q:?}"
        );
    }
}

/// An edit observed for subscription `sub`: the observer sees both states.
fn watched_for(edit: Edit, sub: &'static str) -> Edit {
    Edit {
        observe: Some(Box::new(move |before, after| {
            vec![OutboxEntry {
                subscription_id: sub.into(),
                entity_id: after.or(before).map(|e| e.id.clone()).unwrap_or_default(),
                notice: json!({"before": before.is_some(), "after": after.is_some()}),
            }]
        })),
        ..edit
    }
}

pub async fn outbox_is_written_with_the_change(store: Arc<dyn Store>) {
    let t = tenant("outbox");
    let created = store
        .edit(
            &t,
            vec![watched_for(create(entity("urn:e:1", "T", json!({}))), "urn:s:1")],
        )
        .await
        .unwrap();
    assert!(created[0].is_ok());
    // A refused edit records no notice, like it writes no entity.
    let refused = store
        .edit(
            &t,
            vec![watched_for(create(entity("urn:e:1", "T", json!({}))), "urn:s:1")],
        )
        .await
        .unwrap();
    assert!(refused[0].is_err());
    let deleted = store
        .edit(
            &t,
            vec![watched_for(
                Edit::new("urn:e:1", |_| {
                    Ok(EditOutcome {
                        state: NewState::Delete,
                        report: UpdateOutcome::default(),
                    })
                }),
                "urn:s:1",
            )],
        )
        .await
        .unwrap();
    assert!(deleted[0].is_ok());
    let pending = store.pending_notices(&t, "urn:s:1", 10).await.unwrap();
    let notices: Vec<_> = pending.iter().map(|p| p.notice.clone()).collect();
    assert_eq!(
        notices,
        vec![
            json!({"before": false, "after": true}),
            json!({"before": true, "after": false})
        ]
    );
    assert!(
        pending[0].seq < pending[1].seq,
        "entries come in the order of the changes"
    );
    assert!(pending.iter().all(|p| p.entity_id == "urn:e:1"));
    assert!(store
        .pending_notices(&tenant("elsewhere"), "urn:s:1", 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store.pending_notices(&t, "urn:s:1", 1).await.unwrap().len(),
        1,
        "limit is honoured"
    );
    assert_eq!(
        store.subscriptions_with_notices().await.unwrap(),
        vec![(t.clone(), "urn:s:1".to_string())]
    );
}

pub async fn deliveries_settle_notices_and_count(store: Arc<dyn Store>) {
    let t = tenant("deliveries");
    let kind = ResourceKind::Subscription;
    assert!(store
        .put_resource(&t, kind, "urn:s:1", json!({"id": "urn:s:1"}), true)
        .await
        .unwrap());
    for i in 0..3 {
        let e = entity(&format!("urn:e:{i}"), "T", json!({}));
        assert!(store.edit(&t, vec![watched_for(create(e), "urn:s:1")]).await.unwrap()[0].is_ok());
    }
    let pending = store.pending_notices(&t, "urn:s:1", 10).await.unwrap();
    assert_eq!(pending.len(), 3);
    let failed_at = time::now();
    let failure = Delivery {
        at: failed_at,
        success: false,
        settled: vec![],
    };
    store.record_delivery(&t, "urn:s:1", failure).await.unwrap();
    let success = Delivery {
        at: time::now(),
        success: true,
        settled: vec![pending[0].seq, pending[1].seq],
    };
    store.record_delivery(&t, "urn:s:1", success.clone()).await.unwrap();
    let left = store.pending_notices(&t, "urn:s:1", 10).await.unwrap();
    assert_eq!(left, vec![pending[2].clone()]);
    let stats = store.delivery_stats(&t, "urn:s:1").await.unwrap();
    assert_eq!((stats.times_sent, stats.times_failed), (1, 1));
    assert_eq!(stats.last_failure, Some(failed_at));
    assert_eq!(stats.last_success, Some(success.at));
    assert_eq!(stats.last_notification, Some(success.at));
    assert_eq!(
        store
            .delivery_stats(&tenant("other"), "urn:s:1")
            .await
            .unwrap()
            .times_sent,
        0
    );
    // Deleting the subscription drops its backlog and statistics.
    assert!(store.delete_resource(&t, kind, "urn:s:1").await.unwrap());
    assert!(store.pending_notices(&t, "urn:s:1", 10).await.unwrap().is_empty());
    assert_eq!(store.delivery_stats(&t, "urn:s:1").await.unwrap().times_failed, 0);
    assert!(store.subscriptions_with_notices().await.unwrap().is_empty());
}

pub async fn retention_purges_old_history_of_one_tenant(store: Arc<dyn Store>) {
    let (t, other) = (tenant("retained"), tenant("untouched"));
    for tenant in [&t, &other] {
        let created = store
            .edit(tenant, vec![create(entity("urn:e:r", "T", json!({"p": 0})))])
            .await
            .unwrap();
        assert!(created[0].is_ok());
        for value in 1..=4 {
            assert!(store.edit(tenant, vec![set_p("urn:e:r", value)]).await.unwrap()[0].is_ok());
        }
    }
    let query = TemporalQuery {
        attrs: vec![],
        ..TemporalQuery::default()
    };
    let instances = |e: Option<piazza_ngsild::temporal::TemporalEntity>| {
        e.map(|e| e.attributes.values().map(Vec::len).sum::<usize>())
            .unwrap_or(0)
    };
    let before = instances(store.temporal_entity(&t, "urn:e:r", &query).await.unwrap());
    assert_eq!(before, 5);
    // Nothing is older than a horizon in the past.
    let past = time::now() - chrono::Duration::hours(1);
    assert_eq!(store.purge_history(&t, past, 100).await.unwrap(), 0);
    let future = time::now() + chrono::Duration::seconds(1);
    assert_eq!(
        store.purge_history(&t, future, 2).await.unwrap(),
        2,
        "the limit bounds one batch"
    );
    assert_eq!(store.purge_history(&t, future, 100).await.unwrap(), 3);
    assert_eq!(
        instances(store.temporal_entity(&t, "urn:e:r", &query).await.unwrap()),
        0
    );
    assert_eq!(
        instances(store.temporal_entity(&other, "urn:e:r", &query).await.unwrap()),
        5
    );
    // The entity itself is not history: it stays.
    assert!(store.get(&t, "urn:e:r").await.unwrap().is_some());
}

/// The `q` an entity of [`q_queries_return_exactly_what_matches`] has:
/// numbers (one instance, two, an array), strings, a typed literal.
fn q_entity(i: usize, shift: i64) -> Entity {
    let n = (i % 50) as i64 + shift;
    let s = ["x", "y", "z"][i % 3];
    let mut extra = json!({
        "n": {"type": "Property", "value": n},
        "s": {"type": "Property", "value": s},
    });
    if i.is_multiple_of(7) {
        extra["n"] = json!([
            {"type": "Property", "value": n},
            {"type": "Property", "value": (i % 13) as f64 + 0.5, "datasetId": "urn:ngsi-ld:Dataset:second"},
        ]);
    }
    if i.is_multiple_of(10) {
        extra["n"] = json!({"type": "Property", "value": [n, 100]});
    }
    if i.is_multiple_of(11) {
        extra["s"] = json!({"type": "Property", "value": {"@type": "Text", "@value": "w"}});
    }
    entity(&format!("urn:q:{i:05}"), "V", extra)
}

/// Whatever a backend indexes to answer `q`, the answer is what
/// `Query::matches` says of every entity: through creates, updates that
/// change and drop values, deletes, and in another tenant with the same
/// values; with selective terms (an index can drive) and broad ones.
pub async fn q_queries_return_exactly_what_matches(store: Arc<dyn Store>) {
    let (t, other) = (tenant("tq"), tenant("tq-other"));
    let count = 2_500;
    let mut model: Vec<Option<Entity>> = (0..count).map(|i| Some(q_entity(i, 0))).collect();
    let edits = model.iter().flatten().cloned().map(create).collect();
    store.edit(&t, edits).await.unwrap();
    store
        .edit(&other, (0..200).map(|i| create(q_entity(i, 1000))).collect())
        .await
        .unwrap();
    let mut changes = Vec::new();
    for i in (0..count).step_by(25) {
        let changed = q_entity(i, 1000);
        model[i] = Some(changed.clone());
        changes.push(Edit::new(changed.id.clone(), move |_| {
            Ok(EditOutcome::put(changed, UpdateOutcome::default()))
        }));
    }
    for i in (3..count).step_by(50) {
        model[i] = None;
        changes.push(Edit::new(format!("urn:q:{i:05}"), |_| {
            Ok(EditOutcome {
                state: NewState::Delete,
                report: UpdateOutcome::default(),
            })
        }));
    }
    for result in store.edit(&t, changes).await.unwrap() {
        result.unwrap();
    }
    let core = ActiveContext::core();
    for q in [
        "n>=1000",
        "n==3;s==\"x\"",
        "n>10",
        "s==\"y\"",
        "s==\"w\"",
        "n==3|s==\"x\"",
        "n<0",
        "n==100",
        "n==0.5..1.5",
        "n==1005,1010;s==\"y\",\"z\"",
        "n>=48;n<=49",
    ] {
        let parsed = piazza_ngsild::query::Query::parse(q, &core).unwrap();
        let expected: Vec<&str> = model
            .iter()
            .flatten()
            .filter(|e| parsed.matches(e))
            .map(|e| e.id.as_str())
            .collect();
        let query = Arc::new(EntityQuery {
            types: Some(TypeSelector::parse("V", &core).unwrap()),
            q: Some(parsed.clone()),
            ..Default::default()
        });
        let page = store.query(&t, query.clone(), all()).await.unwrap();
        let ids: Vec<&str> = page.entities.iter().map(|e| e.id.as_str()).collect();
        assert_eq!(page.total, Some(expected.len() as u64), "{q}: count");
        assert_eq!(ids, expected[..expected.len().min(1000)], "{q}: entities");
        let short = Page {
            offset: 0,
            limit: 5,
            count: false,
        };
        let first: Vec<String> = store
            .query(&t, query, short)
            .await
            .unwrap()
            .entities
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(first, expected[..expected.len().min(5)], "{q}: first page");
    }
}

/// Every record of each tenant, read in pages of `limit`.
async fn export_raw(store: &dyn Store, tenants: &[Tenant], limit: usize) -> Vec<(Tenant, Vec<crate::RawRecord>)> {
    let mut dump = Vec::new();
    for t in tenants {
        let mut records = Vec::new();
        for kind in crate::RawKind::ALL {
            let mut after: Option<String> = None;
            loop {
                let page = store.export_page(t, kind, after.as_deref(), limit).await.unwrap();
                assert!(page.records.len() <= limit);
                assert!(page.records.iter().all(|r| r.kind() == kind));
                records.extend(page.records);
                match page.next {
                    Some(next) => after = Some(next),
                    None => break,
                }
            }
        }
        dump.push((t.clone(), records));
    }
    dump
}

fn counted(records: &[crate::RawRecord]) -> crate::RawCounts {
    let mut counts: crate::RawCounts = crate::RawKind::ALL.into_iter().map(|k| (k, 0)).collect();
    for record in records {
        *counts.entry(record.kind()).or_default() += 1;
    }
    counts
}

/// What a client of the broker sees of a tenant: entities (current and by
/// id), `q`, type, attribute and geo queries, discovery, @contexts,
/// subscriptions with their statistics and pending notices, and history.
async fn observable(store: &dyn Store, t: &Tenant, ids: &[&str]) -> Vec<String> {
    let core = ActiveContext::core();
    let mut seen = Vec::new();
    let query = |q: Option<&str>, types: Option<&str>, geo: bool| {
        Arc::new(EntityQuery {
            q: q.map(|q| piazza_ngsild::query::Query::parse(q, &core).unwrap()),
            types: types.map(|t| TypeSelector::parse(t, &core).unwrap()),
            geo: geo.then(|| {
                piazza_ngsild::query::GeoQuery::parse(
                    "near;maxDistance==5000",
                    "Point",
                    &json!([11.2560, 43.7731]),
                    None,
                    &core,
                )
                .unwrap()
            }),
            ..Default::default()
        })
    };
    for (q, types, geo) in [
        (None, None, false),
        (Some("p==5"), None, false),
        (Some("p<3"), None, false),
        (Some("s==\"x\""), None, false),
        (None, Some("T"), false),
        (None, Some("U"), false),
        (None, None, true),
    ] {
        let found = store.query(t, query(q, types, geo), all()).await.unwrap();
        seen.push(format!(
            "query {q:?} {types:?} geo={geo}: {:?} {:?}",
            found.total, found.entities
        ));
    }
    for id in ids {
        seen.push(format!("get {id}: {:?}", store.get(t, id).await.unwrap()));
        let history = TemporalQuery {
            timeproperty: TimeProperty::CreatedAt,
            ..TemporalQuery::default()
        };
        seen.push(format!(
            "history {id}: {:?}",
            store.temporal_entity(t, id, &history).await.unwrap()
        ));
    }
    let temporal = store
        .temporal_query(t, Arc::new(EntityQuery::default()), &TemporalQuery::default(), all())
        .await
        .unwrap();
    seen.push(format!("temporal query: {:?} {:?}", temporal.total, temporal.entities));
    seen.push(format!("types: {:?}", store.types(t).await.unwrap()));
    seen.push(format!("attributes: {:?}", store.attributes(t).await.unwrap()));
    seen.push(format!("contexts: {:?}", store.list_contexts(t).await.unwrap()));
    let subscriptions = store.list_resources(t, ResourceKind::Subscription).await.unwrap();
    seen.push(format!("subscriptions: {subscriptions:?}"));
    for id in ["urn:sub:1"] {
        seen.push(format!("stats {id}: {:?}", store.delivery_stats(t, id).await.unwrap()));
        // Outbox numbers are the store's own; what is owed, and in which order, is what moves.
        let pending: Vec<_> = store
            .pending_notices(t, id, 100)
            .await
            .unwrap()
            .into_iter()
            .map(|p| (p.entity_id, p.notice, p.recorded_at))
            .collect();
        seen.push(format!("pending {id}: {pending:?}"));
    }
    seen.push(format!("exists: {}", store.tenant_exists(t).await.unwrap()));
    seen
}

/// Two views compared line by line, so a failure shows the first difference only.
fn assert_same(found: Vec<String>, wanted: Vec<String>, what: &str) {
    for (found, wanted) in found.iter().zip(&wanted) {
        assert_eq!(found, wanted, "{what}");
    }
    assert_eq!(found.len(), wanted.len(), "{what}");
}

fn delete(id: &str) -> Edit {
    Edit::new(id, |_| {
        Ok(EditOutcome {
            state: NewState::Delete,
            report: UpdateOutcome::default(),
        })
    })
}

/// A tenant's data moved raw to a fresh store of the same backend: the
/// records read back are the records written (timestamps, instance ids,
/// expired entities included), everything a client can ask is answered
/// the same, the index tables are right (q, type, geo and discovery find
/// what they should), a record replaces the one with its id, and
/// `clear_tenant` removes a tenant entirely so that an import can be
/// re-run.
pub async fn raw_export_and_import_round_trip(source: Arc<dyn Store>, target: Arc<dyn Store>) {
    let (a, b) = (tenant("raw-a"), tenant("raw-b"));
    let at = json!({"type": "GeoProperty", "value": {"type": "Point", "coordinates": [11.2558, 43.7696]}});
    let results = source
        .edit(
            &a,
            vec![
                create(entity("urn:r:1", "T", json!({"p": 1, "s": "x", "location": at}))),
                watched_for(create(entity("urn:r:2", "T", json!({"p": 2}))), "urn:sub:1"),
                create(entity("urn:r:3", "U", json!({"p": 3, "s": "gone"}))),
                create(entity(
                    "urn:r:4",
                    "T",
                    json!({"p": 4, "expiresAt": "2001-01-01T00:00:00Z"}),
                )),
                create(entity(
                    "urn:r:5",
                    "U",
                    json!({"p": [{"type": "Property", "value": 7, "datasetId": "urn:d:1"},
                                 {"type": "Property", "value": 8}]}),
                )),
            ],
        )
        .await
        .unwrap();
    assert!(results.iter().all(Result::is_ok));
    source
        .edit(&a, vec![watched_for(set_p("urn:r:2", 5), "urn:sub:1")])
        .await
        .unwrap()[0]
        .as_ref()
        .unwrap();
    source.edit(&a, vec![delete("urn:r:3")]).await.unwrap()[0]
        .as_ref()
        .unwrap();
    let observed = {
        let mut instance = piazza_ngsild::Attribute::new(piazza_ngsild::AttributeKind::Property, json!(9));
        instance.observed_at = Some("2020-05-01T10:00:00Z".into());
        instance
    };
    source
        .temporal_edit(
            &a,
            TemporalEdit::Upsert {
                id: "urn:r:9".into(),
                types: vec![ActiveContext::core().expand("H")],
                scope: Vec::new(),
                attributes: vec![(ActiveContext::core().expand("p"), vec![observed])],
            },
        )
        .await
        .unwrap()
        .unwrap();
    let context = |id: &str| StoredContext {
        id: id.into(),
        url: format!("http://localhost/ngsi-ld/v1/jsonldContexts/{id}"),
        kind: ContextKind::Hosted,
        document: json!({"@context": {"x": "https://example.org/x"}}),
        created_at: time::now(),
    };
    source.put_context(&a, context("ctx-a")).await.unwrap();
    source.put_context(&b, context("ctx-b")).await.unwrap();
    let subscription = json!({"id": "urn:sub:1", "type": "Subscription", "entities": [{"type": "T"}]});
    assert!(source
        .put_resource(&a, ResourceKind::Subscription, "urn:sub:1", subscription, true)
        .await
        .unwrap());
    source
        .record_delivery(
            &a,
            "urn:sub:1",
            Delivery {
                at: time::now(),
                success: true,
                settled: Vec::new(),
            },
        )
        .await
        .unwrap();
    // The same ids in another tenant, with other values.
    source
        .edit(
            &b,
            vec![
                create(entity("urn:r:1", "T", json!({"p": 100, "s": "y"}))),
                create(entity("urn:r:2", "U", json!({"p": 5}))),
            ],
        )
        .await
        .unwrap();

    let tenants = [a.clone(), b.clone()];
    let ids = ["urn:r:1", "urn:r:2", "urn:r:3", "urn:r:4", "urn:r:5", "urn:r:9"];
    // Pages of one record: every record is read through a cursor, ties
    // (two instances of one attribute at one time) included.
    let dump = export_raw(&*source, &tenants, 1).await;
    for (t, records) in &dump {
        assert_eq!(counted(records), source.raw_counts(t).await.unwrap(), "{t}");
    }
    let a_counts = source.raw_counts(&a).await.unwrap();
    assert_eq!(
        a_counts[&crate::RawKind::Entity],
        4,
        "the expired entity is exported, the deleted one is not"
    );
    assert_eq!(a_counts[&crate::RawKind::TemporalEntity], 6);
    assert!(a_counts[&crate::RawKind::Instance] >= 10, "{a_counts:?}");
    assert_eq!(a_counts[&crate::RawKind::Notice], 2);
    for kind in crate::RawKind::ALL {
        assert!(a_counts[&kind] > 0, "the data set has {kind} records");
    }
    let records_of = |t: &Tenant| dump.iter().find(|(d, _)| d == t).unwrap().1.clone();
    let expired = records_of(&a).into_iter().find_map(|r| match r {
        crate::RawRecord::Entity(e) if e.id == "urn:r:4" => Some(e),
        _ => None,
    });
    assert!(expired.is_some(), "transient entities are exported as stored");
    assert!(source.get(&a, "urn:r:4").await.unwrap().is_none());

    // Into a fresh store, in batches that mix kinds.
    for (t, records) in &dump {
        let mut written = 0;
        for batch in records.chunks(3) {
            written += target.import_batch(t, batch.to_vec()).await.unwrap();
        }
        assert_eq!(written, records.len() as u64);
    }
    assert_eq!(
        export_raw(&*target, &tenants, 1000).await,
        dump,
        "raw records come back as written"
    );
    for t in &tenants {
        assert_eq!(target.raw_counts(t).await.unwrap(), source.raw_counts(t).await.unwrap());
        assert_same(
            observable(&*target, t, &ids).await,
            observable(&*source, t, &ids).await,
            &format!("tenant {t} after the import"),
        );
    }
    let five = target
        .query(
            &a,
            Arc::new(EntityQuery {
                q: Some(piazza_ngsild::query::Query::parse("p==5", &ActiveContext::core()).unwrap()),
                ..Default::default()
            }),
            all(),
        )
        .await
        .unwrap();
    assert_eq!(
        five.entities.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["urn:r:2"]
    );
    let updated = target.get(&a, "urn:r:2").await.unwrap().unwrap();
    assert_eq!(
        Some(updated),
        source.get(&a, "urn:r:2").await.unwrap(),
        "timestamps are kept"
    );
    assert!(target.tenants().await.unwrap().contains(&b));

    // An imported entity replaces the stored one, its index rows with it.
    let mut replacement = entity("urn:r:1", "U", json!({"p": 42}));
    replacement.created_at = Some(time::parse("2010-01-01T00:00:00Z").unwrap());
    assert_eq!(
        target
            .import_batch(&a, vec![crate::RawRecord::Entity(replacement.clone())])
            .await
            .unwrap(),
        1
    );
    let ids_of = |result: crate::QueryResult| result.entities.into_iter().map(|e| e.id).collect::<Vec<_>>();
    let q = |text: &str| {
        Arc::new(EntityQuery {
            q: Some(piazza_ngsild::query::Query::parse(text, &ActiveContext::core()).unwrap()),
            ..Default::default()
        })
    };
    assert_eq!(ids_of(target.query(&a, q("p==42"), all()).await.unwrap()), ["urn:r:1"]);
    assert!(ids_of(target.query(&a, q("p==1"), all()).await.unwrap()).is_empty());
    assert!(ids_of(target.query(&a, q("s==\"x\""), all()).await.unwrap()).is_empty());
    let history_before = target.raw_counts(&a).await.unwrap()[&crate::RawKind::Instance];
    assert_eq!(
        history_before,
        a_counts[&crate::RawKind::Instance],
        "a raw write records no history"
    );
    assert_eq!(target.get(&a, "urn:r:1").await.unwrap(), Some(replacement));

    // Clearing a tenant removes all of it, and only it; a re-import is then exact.
    assert!(
        target.tenant_exists(&a).await.unwrap(),
        "asked before the clear (a store may remember it)"
    );
    target.clear_tenant(&a).await.unwrap();
    assert!(target.raw_counts(&a).await.unwrap().values().all(|n| *n == 0));
    assert!(!target.tenant_exists(&a).await.unwrap());
    assert!(target.get(&a, "urn:r:2").await.unwrap().is_none());
    assert!(ids_of(target.query(&a, q("p==5"), all()).await.unwrap()).is_empty());
    assert!(target.types(&a).await.unwrap().is_empty());
    assert!(target.list_contexts(&a).await.unwrap().is_empty());
    assert_same(
        observable(&*target, &b, &ids).await,
        observable(&*source, &b, &ids).await,
        "the tenant not cleared",
    );
    target.import_batch(&a, records_of(&a)).await.unwrap();
    assert_eq!(export_raw(&*target, &tenants, 7).await, dump);
    assert_same(
        observable(&*target, &a, &ids).await,
        observable(&*source, &a, &ids).await,
        "the tenant re-imported",
    );
}

/// A small deterministic generator (SplitMix64): the geo case below is
/// random but the same on every run and backend.
struct Dice(u64);

impl Dice {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn between(&mut self, low: f64, high: f64) -> f64 {
        low + self.unit() * (high - low)
    }
}

/// `x` to 7 decimals (a centimetre): what JSON carries exactly, where
/// serde_json may read a 17-digit number back one ulp off, which would
/// make the stored entity differ from the model.
fn r7(x: f64) -> f64 {
    (x * 1e7).round() / 1e7
}

/// The places geo-queries are hard: an ordinary city, both sides of the
/// antimeridian, near the north pole, and anywhere.
const GEO_REGIONS: [(f64, f64, f64, f64); 5] = [
    (10.9, 43.5, 11.6, 44.0),
    (178.8, -3.0, 180.0, 3.0),
    (-180.0, -3.0, -178.8, 3.0),
    (-180.0, 87.5, 180.0, 90.0),
    (-180.0, -80.0, 180.0, 80.0),
];

fn geo_position(dice: &mut Dice, region: usize) -> [f64; 2] {
    let (west, south, east, north) = GEO_REGIONS[region];
    // Sometimes exactly on the region's edge (the antimeridian, the pole).
    let lon = match dice.below(12) {
        0 => west,
        1 => east,
        _ => dice.between(west, east),
    };
    let lat = if dice.below(12) == 0 {
        north
    } else {
        dice.between(south, north)
    };
    [r7(lon), r7(lat)]
}

/// A rectangle (optionally with a hole) around a position, kept on its
/// side of the antimeridian and under the pole.
fn geo_rectangle(dice: &mut Dice, [lon, lat]: [f64; 2], size: f64, hole: bool) -> serde_json::Value {
    let (w, s) = (r7((lon - size).max(-180.0)), r7((lat - size).max(-90.0)));
    let (e, n) = (
        r7((lon + size * dice.between(0.3, 1.5)).min(180.0)),
        r7((lat + size * dice.between(0.3, 1.5)).min(90.0)),
    );
    let mut rings = vec![json!([[w, s], [e, s], [e, n], [w, n], [w, s]])];
    if hole {
        let (hw, hs, he, hn) = (
            r7(w + (e - w) * 0.3),
            r7(s + (n - s) * 0.3),
            r7(w + (e - w) * 0.6),
            r7(s + (n - s) * 0.6),
        );
        rings.push(json!([[hw, hs], [hw, hn], [he, hn], [he, hs], [hw, hs]]));
    }
    json!(rings)
}

/// A random GeoJSON geometry in a region: mostly points, also lines,
/// polygons (with holes, invalid bow ties), multi-geometries, and now and
/// then a position outside the WGS84 range, which stored data may hold.
fn geo_value(dice: &mut Dice, region: usize) -> serde_json::Value {
    let at = geo_position(dice, region);
    let size = [0.001, 0.01, 0.1, 0.5][dice.below(4)];
    let near = |dice: &mut Dice, [lon, lat]: [f64; 2]| {
        [
            r7((lon + dice.between(-size, size)).clamp(-180.0, 180.0)),
            r7((lat + dice.between(-size, size)).clamp(-90.0, 90.0)),
        ]
    };
    match dice.below(20) {
        0..=8 => json!({"type": "Point", "coordinates": at}),
        9 | 10 => {
            let line: Vec<[f64; 2]> = (0..2 + dice.below(3)).map(|_| near(dice, at)).collect();
            json!({"type": "LineString", "coordinates": line})
        }
        11..=13 => json!({"type": "Polygon", "coordinates": geo_rectangle(dice, at, size, false)}),
        14 => json!({"type": "Polygon", "coordinates": geo_rectangle(dice, at, size, true)}),
        15 => {
            let [lon, lat] = at;
            let (e, n) = (r7((lon + size).min(180.0)), r7((lat + size).min(90.0)));
            // A bow tie: invalid, repaired by the matching into two triangles.
            json!({"type": "Polygon", "coordinates": [[[lon, lat], [e, n], [e, lat], [lon, n], [lon, lat]]]})
        }
        16 => {
            let points: Vec<[f64; 2]> = (0..1 + dice.below(3)).map(|_| near(dice, at)).collect();
            json!({"type": "MultiPoint", "coordinates": points})
        }
        17 => {
            let other = near(dice, at);
            let parts = [
                geo_rectangle(dice, at, size / 4.0, false),
                geo_rectangle(dice, other, size / 4.0, false),
            ];
            json!({"type": "MultiPolygon", "coordinates": parts})
        }
        18 => {
            let lines: Vec<Vec<[f64; 2]>> = (0..2).map(|_| vec![near(dice, at), near(dice, at)]).collect();
            json!({"type": "MultiLineString", "coordinates": lines})
        }
        _ => {
            let [lon, lat] = at;
            let wild = if dice.below(2) == 0 {
                [r7(lon + if lon > 0.0 { 1.5 } else { -1.5 }), lat]
            } else {
                [lon, r7((lat + 1.5).min(91.0))]
            };
            json!({"type": "Point", "coordinates": wild})
        }
    }
}

/// Entity `i` of [`geo_queries_return_exactly_what_matches`]: one to three
/// `location` instances (datasetIds), sometimes an `area` too, sometimes
/// no GeoProperty at all.
fn geo_entity(dice: &mut Dice, i: usize) -> Entity {
    let region = dice.below(GEO_REGIONS.len());
    let mut extra = json!({});
    if dice.below(15) != 0 {
        let instances: Vec<serde_json::Value> = (0..1 + dice.below(3) / 2 + dice.below(2))
            .map(|k| {
                let mut instance = json!({"type": "GeoProperty", "value": geo_value(dice, region)});
                if k > 0 {
                    instance["datasetId"] = json!(format!("urn:ngsi-ld:Dataset:{k}"));
                }
                instance
            })
            .collect();
        extra["location"] = json!(instances);
    }
    if dice.below(5) == 0 {
        extra["area"] = json!({"type": "GeoProperty", "value": geo_value(dice, region)});
    }
    entity(&format!("urn:geo:{i:05}"), "G", extra)
}

/// Geo-queries of every relation around the regions: `near` with max and
/// min distances from meters to thousands of kilometers (from points on
/// the antimeridian and the pole, from lines and polygons), and the
/// topological relations on boxes, triangles, a bow tie, points and lines,
/// some copied from stored values (for `equals`).
fn geo_queries(dice: &mut Dice, stored: &[Entity]) -> Vec<(String, String, serde_json::Value, Option<&'static str>)> {
    let mut queries = Vec::new();
    let location = |e: &Entity| -> Option<serde_json::Value> {
        let instances = e.attributes.get(&ActiveContext::core().expand("location"))?;
        instances.first().map(|i| i.value.clone())
    };
    for region in 0..GEO_REGIONS.len() {
        for distance in ["30", "2000", "60000", "700000", "4000000"] {
            let center = geo_position(dice, region);
            queries.push((
                format!("near;maxDistance=={distance}"),
                "Point".into(),
                json!(center),
                None,
            ));
        }
        let center = geo_position(dice, region);
        queries.push(("near;minDistance==50000".into(), "Point".into(), json!(center), None));
        let (a, b) = (geo_position(dice, region), geo_position(dice, region));
        queries.push((
            "near;maxDistance==20000".into(),
            "LineString".into(),
            json!([a, b]),
            None,
        ));
        let corner = geo_position(dice, region);
        let box_of = geo_rectangle(dice, corner, 0.3, false);
        queries.push(("near;maxDistance==5000".into(), "Polygon".into(), box_of, None));
        for (georel, size) in [
            ("within", 0.4),
            ("intersects", 0.2),
            ("overlaps", 0.3),
            ("disjoint", 0.5),
        ] {
            let (corner, hole) = (geo_position(dice, region), dice.below(3) == 0);
            let polygon = geo_rectangle(dice, corner, size, hole);
            queries.push((georel.into(), "Polygon".into(), polygon, None));
        }
        let [lon, lat] = geo_position(dice, region);
        // Half a degree east and north, or west and south at the edges.
        let (e, n) = (
            r7(if lon + 0.5 <= 180.0 { lon + 0.5 } else { lon - 0.5 }),
            r7(if lat + 0.5 <= 90.0 { lat + 0.5 } else { lat - 0.5 }),
        );
        let triangle = json!([[[lon, lat], [e, lat], [lon, n], [lon, lat]]]);
        queries.push(("intersects".into(), "Polygon".into(), triangle, Some("area")));
        let bow_tie = json!([[[lon, lat], [e, n], [e, lat], [lon, n], [lon, lat]]]);
        queries.push(("within".into(), "Polygon".into(), bow_tie, None));
        queries.push((
            "intersects".into(),
            "LineString".into(),
            json!([[lon, lat], [e, n]]),
            None,
        ));
        queries.push((
            "contains".into(),
            "Point".into(),
            json!(geo_position(dice, region)),
            None,
        ));
    }
    // Stored values as query geometries: equals, and points inside areas.
    for e in stored.iter().step_by(53).take(12) {
        let Some(value) = location(e) else { continue };
        let kind = value["type"].as_str().unwrap_or_default().to_owned();
        if matches!(kind.as_str(), "Point" | "Polygon" | "LineString" | "MultiPoint") {
            let coordinates = value["coordinates"].clone();
            let in_range =
                piazza_ngsild::query::GeoQuery::parse("equals", &kind, &coordinates, None, &ActiveContext::core())
                    .is_ok();
            if in_range {
                queries.push(("equals".into(), kind.clone(), coordinates.clone(), None));
                queries.push(("contains".into(), kind.clone(), coordinates.clone(), None));
                queries.push(("near;maxDistance==1".into(), kind, coordinates, None));
            }
        }
    }
    queries
}

/// Whatever a backend indexes to answer geo-queries (boxes, PostGIS
/// shapes), the answer is what `GeoQuery::matches` says of every entity:
/// random points, lines and areas near the antimeridian and the pole,
/// through creates, moves, deletes.
pub async fn geo_queries_return_exactly_what_matches(store: Arc<dyn Store>) {
    let t = tenant("tgeo");
    let core = ActiveContext::core();
    let mut dice = Dice(0x5EED_0F61_A22A);
    let count = 1_000;
    let mut model: Vec<Option<Entity>> = (0..count).map(|i| Some(geo_entity(&mut dice, i))).collect();
    // Near the pole, `geo` finds a long line nearer to a point than its
    // arc is (23 km for 7 km): whatever the reason, the answer is the model's.
    let line = json!([[109.0794193, 88.4875592], [-129.1101905, 87.7093575]]);
    let point = json!([-125.9120129, 87.5486645]);
    for (id, kind, coordinates) in [
        ("urn:geo:pole-line", "LineString", &line),
        ("urn:geo:pole-point", "Point", &point),
    ] {
        let value = json!({"type": "GeoProperty", "value": {"type": kind, "coordinates": coordinates}});
        model.push(Some(entity(id, "G", json!({ "location": value }))));
    }
    store
        .edit(&t, model.iter().flatten().cloned().map(create).collect())
        .await
        .unwrap();
    // The same kind of data in another tenant, which no answer may show.
    let mut elsewhere = Dice(7);
    store
        .edit(
            &tenant("tgeo-other"),
            (0..300).map(|i| create(geo_entity(&mut elsewhere, i))).collect(),
        )
        .await
        .unwrap();
    let stored: Vec<Entity> = model.iter().flatten().cloned().collect();
    let mut queries = geo_queries(&mut dice, &stored);
    queries.push(("near;maxDistance==20000".into(), "Point".into(), point, None));
    queries.push(("near;maxDistance==20000".into(), "LineString".into(), line, None));
    for round in 0..2 {
        if round > 0 {
            change_geo_entities(&store, &t, &mut dice, &mut model[..count]).await;
        }
        for (georel, geometry, coordinates, geoproperty) in &queries {
            let parsed = piazza_ngsild::query::GeoQuery::parse(georel, geometry, coordinates, *geoproperty, &core)
                .unwrap_or_else(|e| panic!("{georel} {geometry} {coordinates}: {e}"));
            let expected: Vec<&str> = model
                .iter()
                .flatten()
                .filter(|e| parsed.matches(e))
                .map(|e| e.id.as_str())
                .collect();
            let query = Arc::new(EntityQuery {
                types: Some(TypeSelector::parse("G", &core).unwrap()),
                geo: Some(parsed.clone()),
                ..Default::default()
            });
            let what = format!("round {round}: {georel} {geometry} {coordinates} on {geoproperty:?}");
            let page = store.query(&t, query, all()).await.unwrap();
            let ids: Vec<&str> = page.entities.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(page.total, Some(expected.len() as u64), "{what}: count");
            assert_eq!(ids, expected[..expected.len().min(1000)], "{what}: entities");
        }
    }
}

/// Moves a tenth of the entities of [`geo_queries_return_exactly_what_matches`]
/// (new values, maybe a new region), drops the GeoProperties of some,
/// deletes some.
async fn change_geo_entities(store: &Arc<dyn Store>, t: &Tenant, dice: &mut Dice, model: &mut [Option<Entity>]) {
    let count = model.len();
    let mut changes = Vec::new();
    for i in (0..count).step_by(10) {
        let moved = geo_entity(dice, i);
        model[i] = Some(moved.clone());
        changes.push(Edit::new(moved.id.clone(), move |_| {
            Ok(EditOutcome::put(moved, UpdateOutcome::default()))
        }));
    }
    for i in (5..count).step_by(40) {
        let bare = entity(&format!("urn:geo:{i:05}"), "G", json!({"n": 1}));
        model[i] = Some(bare.clone());
        changes.push(Edit::new(bare.id.clone(), move |_| {
            Ok(EditOutcome::put(bare, UpdateOutcome::default()))
        }));
    }
    for i in (7..count).step_by(30) {
        model[i] = None;
        changes.push(Edit::new(format!("urn:geo:{i:05}"), |_| {
            Ok(EditOutcome {
                state: NewState::Delete,
                report: UpdateOutcome::default(),
            })
        }));
    }
    for result in store.edit(t, changes).await.unwrap() {
        result.unwrap();
    }
}

/// A long numeric history of two datasets at irregular instants, with a
/// few booleans among the numbers.
fn aggregation_history(dice: &mut Dice, dataset: Option<&str>, n: usize) -> Vec<piazza_ngsild::Attribute> {
    let mut at = time::parse("2024-03-30T22:17:31.25Z").unwrap();
    (0..n)
        .map(|_| {
            at += chrono::TimeDelta::microseconds(i64::try_from(dice.below(600_000_000)).unwrap() + 1);
            let value = if dice.below(50) == 0 {
                json!(dice.below(2) == 1)
            } else {
                json!(r7(dice.between(-50.0, 50.0)))
            };
            let mut attribute = piazza_ngsild::Attribute::new(piazza_ngsild::AttributeKind::Property, value);
            attribute.observed_at = Some(time::format(&at));
            attribute.dataset_id = dataset.map(str::to_owned);
            attribute
        })
        .collect()
}

/// Random temporal ranges and periods over the history, aligned to hours
/// and days or not.
fn aggregation_queries(dice: &mut Dice) -> Vec<(Option<TimeRel>, Option<&'static str>)> {
    let start = time::parse("2024-03-30T00:00:00Z").unwrap();
    let instant = |dice: &mut Dice| {
        let hours = i64::try_from(dice.below(24 * 12)).unwrap();
        let offset = match dice.below(3) {
            0 => chrono::TimeDelta::zero(),
            1 => chrono::TimeDelta::minutes(i64::try_from(dice.below(60)).unwrap()),
            _ => chrono::TimeDelta::microseconds(i64::try_from(dice.below(3_600_000_000)).unwrap()),
        };
        start + chrono::TimeDelta::hours(hours) + offset
    };
    let periods = [
        None,
        Some("PT1H"),
        Some("PT90M"),
        Some("PT7H"),
        Some("P1D"),
        Some("P1W"),
        Some("PT20M"),
        Some("P1M"),
    ];
    let mut out = Vec::new();
    for _ in 0..40 {
        let (a, b) = (instant(dice), instant(dice));
        let timerel = match dice.below(4) {
            0 => None,
            1 => Some(TimeRel::After(a)),
            2 => Some(TimeRel::Before(a)),
            _ => Some(TimeRel::Between(a.min(b), a.max(b) + chrono::TimeDelta::hours(30))),
        };
        out.push((timerel, periods[dice.below(periods.len())]));
    }
    out
}

/// Whether two renderings agree, numbers up to the rounding of sums taken
/// in another order.
fn agree(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0) + 1e-7
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(x, y)| agree(x, y)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| agree(v, w)))
        }
        _ => a == b,
    }
}

/// Checks every query: the store's answer for an aggregation (which may be
/// summaries) renders as its instances do.
async fn check_aggregations(
    store: &Arc<dyn Store>,
    t: &Tenant,
    id: &str,
    queries: &[(Option<TimeRel>, Option<&'static str>)],
) {
    use piazza_ngsild::render::RenderOptions;
    use piazza_ngsild::temporal::{render_temporal, AggrMethod, Aggregation, Duration, TemporalMode, TemporalRender};
    let core = ActiveContext::core();
    for (timerel, period) in queries {
        let aggregation = Aggregation {
            methods: AggrMethod::ALL.into_iter().filter(|m| m.summarisable()).collect(),
            period: period.map(|p| Duration::parse(p).unwrap()),
        };
        let plain = TemporalQuery {
            timerel: *timerel,
            ..TemporalQuery::default()
        };
        let summarised = TemporalQuery {
            aggregation: Some(aggregation.clone()),
            ..plain.clone()
        };
        let (origin, end) = timerel.map_or((None, None), TimeRel::aggregation_window);
        let options = TemporalRender {
            mode: TemporalMode::Aggregated(aggregation),
            render: RenderOptions::default(),
            timeproperty: TimeProperty::ObservedAt,
            origin,
            end,
        };
        let mut rendered = Vec::new();
        for query in [plain, summarised] {
            let entity = store.temporal_entity(t, id, &query).await.unwrap().unwrap();
            rendered.push(serde_json::Value::Object(render_temporal(&entity, &core, &options)));
        }
        let (expected, got) = (&rendered[0], &rendered[1]);
        assert!(
            agree(expected, got),
            "{id} {timerel:?} {period:?}:\n instances: {expected}\n summaries: {got}"
        );
    }
}

pub async fn aggregations_agree_with_their_instances(store: Arc<dyn Store>) {
    let t = tenant("aggr");
    let temperature = ActiveContext::core().expand("temperature");
    let mut dice = Dice(11);
    for (dataset, n) in [(None, 3_000), (Some("urn:ds:b"), 2_500)] {
        let history = aggregation_history(&mut dice, dataset, n);
        for chunk in history.chunks(500) {
            let upsert = TemporalEdit::Upsert {
                id: "urn:aggr:1".into(),
                types: vec!["https://example.org/H".into()],
                scope: Vec::new(),
                attributes: vec![(temperature.clone(), chunk.to_vec())],
            };
            store.temporal_edit(&t, upsert).await.unwrap().unwrap();
        }
    }
    let queries = aggregation_queries(&mut dice);
    check_aggregations(&store, &t, "urn:aggr:1", &queries).await;

    // Change one instance, delete another, then add a string among the numbers.
    let all = store
        .temporal_entity(&t, "urn:aggr:1", &TemporalQuery::default())
        .await
        .unwrap()
        .unwrap();
    let instances = &all.attributes[&temperature];
    let modify = TemporalEdit::ModifyInstance {
        id: "urn:aggr:1".into(),
        attr: temperature.clone(),
        instance_id: instances[100].instance_id.clone(),
        instance: Box::new(piazza_ngsild::Attribute {
            value: json!(1000.5),
            ..instances[100].attribute.clone()
        }),
    };
    store.temporal_edit(&t, modify).await.unwrap().unwrap();
    let delete = TemporalEdit::DeleteInstance {
        id: "urn:aggr:1".into(),
        attr: temperature.clone(),
        instance_id: instances[2_000].instance_id.clone(),
    };
    store.temporal_edit(&t, delete).await.unwrap().unwrap();
    check_aggregations(&store, &t, "urn:aggr:1", &queries).await;
    let mut text = piazza_ngsild::Attribute::new(piazza_ngsild::AttributeKind::Property, json!("warm"));
    text.observed_at = instances[3_000].attribute.observed_at.clone();
    let append = TemporalEdit::Append {
        id: "urn:aggr:1".into(),
        attributes: vec![(temperature.clone(), vec![text])],
    };
    store.temporal_edit(&t, append).await.unwrap().unwrap();
    check_aggregations(&store, &t, "urn:aggr:1", &queries).await;
}

/// Sets `p` to `value` observed at `at`.
fn observe_p(id: &str, value: f64, at: String) -> Edit {
    append(id, json!({"p": {"type": "Property", "value": value, "observedAt": at}}))
}

/// The edits of one call write their history together (PostgreSQL sends it
/// in one statement): each instance stays with its entity, in order, and
/// the hourly summaries of histories written so agree with their instances.
pub async fn history_of_one_call_stays_with_each_entity(store: Arc<dyn Store>) {
    let t = tenant("batchhist");
    let p = ActiveContext::core().expand("p");
    let ids = ["urn:batch:1", "urn:batch:2", "urn:batch:3"];
    let start = time::parse("2024-05-01T00:00:00Z").unwrap();
    let at = |minutes: i64| time::format(&(start + chrono::TimeDelta::minutes(minutes)));
    let creates = ids
        .iter()
        .zip([1.0, 2.0, 3.0])
        .map(|(id, value)| {
            let p = json!({"type": "Property", "value": value, "observedAt": at(0)});
            create(entity(id, "B", json!({ "p": p })))
        })
        .collect();
    store.edit(&t, creates).await.unwrap();
    // Past the size from which aggregations are read from summaries; the
    // two entities' edits interleave within each call.
    let mut sent: [Vec<f64>; 2] = [vec![1.0], vec![2.0]];
    let mut dice = Dice(5);
    let mut minute = 0;
    for _ in 0..6 {
        let mut edits = Vec::new();
        for _ in 0..350 {
            minute += 1;
            for (k, values) in sent.iter_mut().enumerate() {
                let value = r7(dice.between(-50.0, 50.0));
                values.push(value);
                edits.push(observe_p(ids[k], value, at(minute)));
            }
        }
        let results = store.edit(&t, edits).await.unwrap();
        assert!(results.iter().all(Result::is_ok));
    }
    let delete = Edit::new(ids[2], |_| {
        Ok(EditOutcome {
            state: NewState::Delete,
            report: UpdateOutcome::default(),
        })
    });
    store
        .edit(&t, vec![observe_p(ids[0], 0.5, at(minute + 1)), delete])
        .await
        .unwrap();
    sent[0].push(0.5);

    let all = TemporalQuery {
        timeproperty: TimeProperty::CreatedAt,
        ..TemporalQuery::default()
    };
    for (id, expected) in ids.iter().zip(&sent) {
        let history = store.temporal_entity(&t, id, &all).await.unwrap().expect("history");
        let values: Vec<f64> = history.attributes[&p]
            .iter()
            .map(|i| i.attribute.value.as_f64().unwrap())
            .collect();
        assert_eq!(&values, expected, "{id}");
    }
    let third = store.temporal_entity(&t, ids[2], &all).await.unwrap().expect("kept");
    let values: Vec<_> = third.attributes[&p].iter().map(|i| i.attribute.value.clone()).collect();
    assert_eq!(values, [json!(3.0), json!(null)]);
    assert!(third.deleted_at.is_some());
    let queries = [(None, None), (None, Some("PT1H")), (None, Some("P1D"))];
    for id in &ids[..2] {
        check_aggregations(&store, &t, id, &queries).await;
    }
}
