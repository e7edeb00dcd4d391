//! The conformance suite every backend must pass: the behaviour of the
//! [`Store`] port, written once. Instantiate it in a backend's tests with
//! [`conformance_suite!`](crate::conformance_suite), giving an async factory
//! that returns a fresh, empty store and a guard that keeps it alive.

use std::sync::Arc;

use piazza_ngsild::entity::{parse_entity, ParseOptions};
use piazza_ngsild::query::{EntityQuery, TypeSelector};
use piazza_ngsild::update::UpdateOutcome;
use piazza_ngsild::{time, ActiveContext, Entity, ErrorKind, NgsiError};
use serde_json::json;

use crate::{ContextKind, Edit, EditOutcome, NewState, Page, ResourceKind, Store, StoredContext, Tenant};

/// Generates one `#[tokio::test]` per conformance case.
#[macro_export]
macro_rules! conformance_suite {
    ($factory:expr) => {
        $crate::conformance_suite!(@cases $factory;
            create_then_get, failed_edit_writes_nothing, tenants_are_isolated,
            queries_page_in_creation_order, delete_removes_from_indexes, discovery_reflects_data,
            contexts_round_trip, concurrent_edits_are_serialised, resources_round_trip);
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let (store, _guard) = ($factory)().await;
                $crate::conformance::$case(store).await;
            }
        )*
    };
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
