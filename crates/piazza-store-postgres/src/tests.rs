//! The conformance suite on a fresh database per case, and what only this
//! backend has: migrations, and several stores (processes) on one database.

use std::sync::Arc;

use piazza_store::Store;

use crate::testing::TestDatabase;
use crate::{Postgis, PostgresConfig, PostgresStore, DEFAULT_POOL_SIZE};

mod geo;
mod values;

/// A store on a new database; the database is dropped with the guard.
async fn fresh() -> Option<(Arc<dyn Store>, TestDatabase)> {
    fresh_with(Postgis::Off).await
}

/// A store on a new database using PostGIS, or `None` (loudly, or a
/// failure when services are required) when the server has no PostGIS.
async fn fresh_postgis() -> Option<(Arc<dyn Store>, TestDatabase)> {
    fresh_with(Postgis::Auto).await
}

async fn fresh_with(postgis: Postgis) -> Option<(Arc<dyn Store>, TestDatabase)> {
    let database = TestDatabase::create().await?;
    let config = PostgresConfig { pool_size: 4, postgis };
    let store = PostgresStore::open(database.url(), &config).await.expect("connect");
    if postgis == Postgis::Auto && !crate::testing::has_postgis(&store) {
        return None;
    }
    Some((Arc::new(store) as Arc<dyn Store>, database))
}

/// The whole suite with geo-queries narrowed by boxes only...
mod without_postgis {
    piazza_store::conformance_suite!(super::fresh);
}

/// ...and again with PostGIS narrowing them.
mod with_postgis {
    piazza_store::conformance_suite!(super::fresh_postgis);
}

#[tokio::test]
async fn migrations_are_applied_once_even_when_processes_start_together() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let starts = (0..4).map(|_| {
        let url = database.url().to_owned();
        tokio::spawn(async move { PostgresStore::connect(&url, 1).await })
    });
    for start in starts {
        let store = start.await.expect("task").expect("connect");
        assert_eq!(store.schema_version().await.expect("version"), crate::migrate::latest());
    }
    let again = PostgresStore::connect(database.url(), DEFAULT_POOL_SIZE)
        .await
        .expect("reconnect");
    assert_eq!(again.schema_version().await.expect("version"), crate::migrate::latest());
}

/// An attribute's history is read in the order of its time index, up to
/// the limit, not read whole and sorted (migration 6): the statement
/// `temporal::instances` sends for an observedAt query, planned on 5,000
/// instances (some without observedAt) with sorting priced out.
#[tokio::test]
async fn an_attributes_history_is_read_in_index_order_without_a_sort() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresStore::connect(database.url(), 1).await.expect("connect");
    let client = store.client().await.expect("client");
    client
        .batch_execute(
            "INSERT INTO attr_instances(tenant, entity_id, attr, instance_id, observed_at, created_at, modified_at, doc) \
             SELECT 't', 'urn:e:' || (i % 5), 'p', 'urn:i:' || i, \
                    CASE WHEN i % 50 = 0 THEN NULL ELSE now() - i * interval '1 second' END, now(), now(), '{}' \
             FROM generate_series(1, 5000) AS i; \
             ANALYZE attr_instances; SET enable_sort = off;",
        )
        .await
        .expect("history");
    for newest_first in [false, true] {
        let statement = crate::temporal::instances_statement(
            "observed_at",
            "tenant = $1 AND entity_id = $2 AND attr = $3",
            newest_first,
            4,
        );
        let order = if newest_first { "newest first" } else { "oldest first" };
        let plan: Vec<String> = client
            .query(&format!("EXPLAIN {statement}"), &[&"t", &"urn:e:1", &"p", &100i64])
            .await
            .expect("explain")
            .iter()
            .map(|row| row.get(0))
            .collect();
        let plan = plan.join("\n");
        assert!(plan.contains("attr_instances_observed"), "{order}: {plan}");
        assert!(!plan.contains("Sort"), "{order}: {plan}");
    }
}

/// Documents come back as the embedded store gives them: `json` keeps what
/// serde wrote, where `jsonb` would reorder members and refuse U+0000.
#[tokio::test]
async fn documents_come_back_exactly_as_written() {
    use piazza_ngsild::entity::{parse_entity, ParseOptions};
    use piazza_ngsild::update::UpdateOutcome;
    use piazza_ngsild::{time, ActiveContext};
    use piazza_store::{Edit, EditOutcome, Tenant};
    use serde_json::json;

    let Some((store, _database)) = fresh().await else {
        return;
    };
    let body = json!({
        "id": "urn:ngsi-ld:Doc:1", "type": "Doc",
        "zeta": {"type": "Property", "value": {"z": 1, "a": [1.50, "nul\u{0}here"]}},
        "alpha": 2
    });
    let mut entity = parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).expect("entity");
    entity.stamp_new(time::now());
    let written = serde_json::to_string(&entity).expect("serialise");
    let tenant = Tenant::default();
    let create = Edit::new(entity.id.clone(), move |_| {
        Ok(EditOutcome::put(entity, UpdateOutcome::default()))
    });
    store.edit(&tenant, vec![create]).await.expect("edit")[0]
        .as_ref()
        .expect("created");
    let stored = store
        .get(&tenant, "urn:ngsi-ld:Doc:1")
        .await
        .expect("get")
        .expect("stored");
    assert_eq!(serde_json::to_string(&stored).expect("serialise"), written);
}

/// Two stores on one database stand for two processes: creates of one id
/// race, and batches lock overlapping ids in opposite orders.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_sharing_a_database_neither_lose_creates_nor_deadlock() {
    use piazza_ngsild::update::UpdateOutcome;
    use piazza_ngsild::ErrorKind;
    use piazza_store::{Edit, EditOutcome, Tenant};

    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let a = Arc::new(PostgresStore::connect(database.url(), 4).await.expect("a"));
    let b = Arc::new(PostgresStore::connect(database.url(), 4).await.expect("b"));
    let tenant = Tenant::default();
    for round in 0..20 {
        let id = format!("urn:race:{round}");
        let (first, second) = tokio::join!(
            a.edit(&tenant, vec![create_only(id.clone())]),
            b.edit(&tenant, vec![create_only(id.clone())])
        );
        let outcomes = [first.expect("a")[0].is_ok(), second.expect("b")[0].is_ok()];
        assert_eq!(
            outcomes.iter().filter(|ok| **ok).count(),
            1,
            "one create wins: {outcomes:?}"
        );
    }
    let ids: Vec<String> = (0..20).map(|i| format!("urn:race:{i}")).collect();
    let touch = |ids: Vec<String>| {
        ids.into_iter()
            .map(|id| {
                Edit::new(id, |e| {
                    Ok(EditOutcome::put(e.cloned().expect("exists"), UpdateOutcome::default()))
                })
            })
            .collect::<Vec<_>>()
    };
    let reversed: Vec<String> = ids.iter().rev().cloned().collect();
    let (forward, backward) = tokio::join!(a.edit(&tenant, touch(ids.clone())), b.edit(&tenant, touch(reversed)));
    assert!(forward.expect("forward").iter().all(Result::is_ok));
    assert!(backward.expect("backward").iter().all(Result::is_ok));
    let again = b
        .edit(&tenant, vec![create_only("urn:race:0".into())])
        .await
        .expect("edit");
    assert_eq!(again[0].as_ref().expect_err("exists").kind, ErrorKind::AlreadyExists);
}

/// Large batches stay within PostgreSQL's shared lock table (per-entity
/// advisory locks did not: "out of shared memory"), and a batch that locks buckets whole still excludes
/// single writes of the same ids: each id is created exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_batches_fit_the_lock_table_and_exclude_single_writes() {
    use piazza_store::Tenant;

    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let store = Arc::new(PostgresStore::connect(database.url(), 8).await.expect("connect"));
    let tenant = Tenant::default();
    // One transaction of 20,000 per-entity advisory locks alone overflows
    // the default lock table; so would sixteen concurrent batches of 1000.
    let edits = (0..20_000).map(|i| create_only(format!("urn:big:{i}"))).collect();
    let results = store.edit(&tenant, edits).await.expect("a batch within the lock table");
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 20_000);

    let ids: Vec<String> = (0..100).map(|i| format!("urn:mixed:{i}")).collect();
    let batch = {
        let (store, tenant) = (store.clone(), tenant.clone());
        let edits = ids.iter().cloned().map(create_only).collect();
        tokio::spawn(async move { store.edit(&tenant, edits).await })
    };
    let singles = ids.iter().cloned().map(|id| {
        let (store, tenant) = (store.clone(), tenant.clone());
        tokio::spawn(async move { store.edit(&tenant, vec![create_only(id)]).await })
    });
    let created_by = |results: Vec<Result<piazza_store::Applied, piazza_ngsild::NgsiError>>| {
        results.iter().filter(|r| r.is_ok()).count()
    };
    let mut created = 0;
    for single in singles {
        created += created_by(single.await.expect("task").expect("edit"));
    }
    created += created_by(batch.await.expect("task").expect("edit"));
    assert_eq!(
        created,
        ids.len(),
        "every id created once, by the batch or by its single write"
    );
}

/// Every connection of the pool runs without JIT compilation (see
/// `without_jit`): with the server's default, a planner that overprices a
/// `q` query compiled it for longer than the query runs.
#[tokio::test]
async fn connections_run_without_jit() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresStore::connect(database.url(), 2).await.expect("connect");
    let (first, second) = (
        store.client().await.expect("client"),
        store.client().await.expect("client"),
    );
    for client in [&first, &second] {
        let jit: String = client.query_one("SHOW jit", &[]).await.expect("show jit").get(0);
        assert_eq!(jit, "off");
    }
}

#[tokio::test]
async fn a_database_migrated_by_a_newer_piazza_is_refused() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresStore::connect(database.url(), 1).await.expect("connect");
    let client = store.client().await.expect("client");
    client
        .batch_execute("INSERT INTO schema_migrations(version, name) VALUES (9999, 'from the future')")
        .await
        .expect("pretend a newer piazza ran");
    drop(client);
    match PostgresStore::connect(database.url(), 1).await {
        Err(crate::Error::SchemaTooNew { found: 9999, .. }) => {}
        Err(other) => panic!("wrong refusal: {other}"),
        Ok(_) => panic!("a newer schema was accepted"),
    }
}

/// Two handles are two processes: one holds a subscription's delivery
/// lease at a time, until it releases it or stops renewing it.
#[tokio::test]
async fn one_process_at_a_time_holds_a_delivery_lease() {
    use std::time::Duration;

    use piazza_store::Tenant;

    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let a = PostgresStore::connect(database.url(), 2).await.expect("connect a");
    let b = PostgresStore::connect(database.url(), 2).await.expect("connect b");
    let (tenant, other) = (Tenant::default(), Tenant::parse("other").expect("tenant"));
    let long = Duration::from_secs(60);
    assert!(a.claim_delivery(&tenant, "urn:s:1", long).await.expect("claim"));
    assert!(
        a.claim_delivery(&tenant, "urn:s:1", long).await.expect("renew"),
        "the holder renews"
    );
    assert!(
        !b.claim_delivery(&tenant, "urn:s:1", long).await.expect("claim"),
        "held by a"
    );
    assert!(
        b.claim_delivery(&tenant, "urn:s:2", long).await.expect("claim"),
        "leases are per subscription"
    );
    assert!(
        b.claim_delivery(&other, "urn:s:1", long).await.expect("claim"),
        "and per tenant"
    );

    b.release_delivery(&tenant, "urn:s:1").await.expect("release");
    assert!(
        !b.claim_delivery(&tenant, "urn:s:1", long).await.expect("claim"),
        "only the holder releases"
    );
    a.release_delivery(&tenant, "urn:s:1").await.expect("release");
    assert!(
        b.claim_delivery(&tenant, "urn:s:1", long).await.expect("claim"),
        "free once released"
    );

    assert!(a
        .claim_delivery(&tenant, "urn:s:3", Duration::from_millis(100))
        .await
        .expect("claim"));
    assert!(!b.claim_delivery(&tenant, "urn:s:3", long).await.expect("claim"));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        b.claim_delivery(&tenant, "urn:s:3", long).await.expect("claim"),
        "taken over once it ran out"
    );
    assert!(
        !a.claim_delivery(&tenant, "urn:s:3", long).await.expect("claim"),
        "the old holder lost it"
    );
}

/// What one handle changes reaches the other's event stream after commit.
#[tokio::test]
async fn changes_are_announced_to_the_other_processes() {
    use std::time::Duration;

    use piazza_store::{ClusterEvent, ResourceKind, Tenant};
    use serde_json::json;

    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let a = PostgresStore::connect(database.url(), 2).await.expect("connect a");
    let b = PostgresStore::connect(database.url(), 2).await.expect("connect b");
    let mut events = b.cluster_events().expect("postgres has events");
    async fn next(events: &mut tokio::sync::broadcast::Receiver<ClusterEvent>) -> ClusterEvent {
        tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("an event in time")
            .expect("event")
    }
    assert_eq!(
        next(&mut events).await,
        ClusterEvent::Resync,
        "listening starts with a resync"
    );
    let tenant = Tenant::parse("t1").expect("tenant");
    let subscription = json!({"id": "urn:s:1", "type": "Subscription"});
    assert!(a
        .put_resource(&tenant, ResourceKind::Subscription, "urn:s:1", subscription, true)
        .await
        .expect("put"));
    assert_eq!(
        next(&mut events).await,
        ClusterEvent::Subscriptions { tenant: tenant.clone() }
    );
    assert!(a
        .delete_resource(&tenant, ResourceKind::Subscription, "urn:s:1")
        .await
        .expect("delete"));
    assert_eq!(
        next(&mut events).await,
        ClusterEvent::Subscriptions { tenant: tenant.clone() }
    );
    let context = piazza_store::StoredContext {
        id: "c1".into(),
        url: "http://example.org/c1".into(),
        kind: piazza_store::ContextKind::Hosted,
        document: json!({"@context": {}}),
        created_at: piazza_ngsild::time::now(),
    };
    a.put_context(&tenant, context).await.expect("put context");
    assert_eq!(
        next(&mut events).await,
        ClusterEvent::Contexts { tenant: tenant.clone() }
    );
    assert!(a.delete_context(&tenant, "c1").await.expect("delete context"));
    assert_eq!(next(&mut events).await, ClusterEvent::Contexts { tenant });
}

/// An edit that creates an empty entity `id` of type T, or fails with
/// AlreadyExists when `id` is taken.
fn create_only(id: String) -> piazza_store::Edit {
    use piazza_ngsild::update::UpdateOutcome;
    use piazza_ngsild::{Entity, NgsiError};
    use piazza_store::{Edit, EditOutcome};

    Edit::new(id.clone(), move |existing| match existing {
        Some(_) => Err(NgsiError::already_exists("exists")),
        None => Ok(EditOutcome::put(
            Entity::new(id, vec!["https://example.org/T".into()]),
            UpdateOutcome::default(),
        )),
    })
}

/// Takes a database back to before migration 8 (the hourly summaries).
const UNDO_ROLLUPS: &str = "DROP TRIGGER attr_rollups_added ON attr_instances; \
     DROP TRIGGER attr_rollups_updated ON attr_instances; DROP TRIGGER attr_rollups_deleted ON attr_instances; \
     DROP FUNCTION attr_rollups_add(); DROP FUNCTION attr_rollups_changed(); \
     DROP FUNCTION attr_rollups_recount(attr_rollup_key[]); DROP TYPE attr_rollup_key; DROP TABLE attr_rollups; \
     DELETE FROM schema_migrations WHERE version = 8;";

/// `n` numeric instances, one a minute, each day the same 1,440 numbers.
fn minute_readings(n: i64) -> Vec<piazza_ngsild::Attribute> {
    use piazza_ngsild::{time, Attribute, AttributeKind};
    let start = time::parse("2024-01-01T00:00:00Z").expect("time");
    (0..n)
        .map(|k| {
            let mut reading = Attribute::new(AttributeKind::Property, serde_json::json!((k % 1440) % 100));
            reading.observed_at = Some(time::format(&(start + chrono::TimeDelta::minutes(k))));
            reading
        })
        .collect()
}

/// A long numeric history is answered from its hourly summaries
/// (`aggregate.rs`); a short one is still folded from its instances.
/// (That both give the same answer, also after instances are edited and
/// deleted, is the conformance suite's `aggregations_agree_with_their_instances`.)
#[tokio::test]
async fn long_numeric_histories_are_answered_from_hourly_summaries() {
    use piazza_ngsild::temporal::{AggrMethod, Aggregation, Duration, TemporalQuery, MIN_SUMMARISED};
    use piazza_store::{TemporalEdit, Tenant};

    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresStore::connect(database.url(), 2).await.expect("connect");
    let tenant = Tenant::default();
    let short = i64::try_from(MIN_SUMMARISED).expect("small") - 1;
    for (id, n) in [("urn:long", 3 * 1440), ("urn:short", short)] {
        let upsert = TemporalEdit::Upsert {
            id: id.into(),
            types: vec!["https://example.org/Sensor".into()],
            scope: Vec::new(),
            attributes: vec![("temperature".into(), minute_readings(n))],
        };
        store
            .temporal_edit(&tenant, upsert)
            .await
            .expect("store")
            .expect("edit");
    }
    let query = TemporalQuery {
        aggregation: Some(Aggregation {
            methods: vec![AggrMethod::Avg, AggrMethod::Max],
            period: Some(Duration::parse("P1D").expect("duration")),
        }),
        ..TemporalQuery::default()
    };
    let long = store
        .temporal_entity(&tenant, "urn:long", &query)
        .await
        .expect("read")
        .expect("found");
    assert!(
        long.attributes.is_empty(),
        "instances were read: {:?}",
        long.attributes.keys()
    );
    let days = &long.summaries["temperature"][0].periods;
    assert_eq!(days.len(), 3);
    for (_, _, day) in days {
        // 0..=99 fourteen times and 0..=39 once: 1,440 readings a day.
        assert_eq!(day.count, 1440);
        assert_eq!(day.max, 99.0);
        assert_eq!(day.sum, 14.0 * 4950.0 + 780.0);
    }
    let short = store
        .temporal_entity(&tenant, "urn:short", &query)
        .await
        .expect("read")
        .expect("found");
    assert!(short.summaries.is_empty());
    assert_eq!(short.attributes["temperature"].len(), 1999);

    // A database from before migration 8 gets its summaries at start-up.
    const HOURS: &str = "SELECT entity_id, count(*), sum(count)::bigint FROM attr_rollups GROUP BY 1 ORDER BY 1";
    let hours = |rows: Vec<tokio_postgres::Row>| -> Vec<(String, i64, i64)> {
        rows.iter().map(|r| (r.get(0), r.get(1), r.get(2))).collect()
    };
    let client = store.client().await.expect("client");
    let before = hours(client.query(HOURS, &[]).await.expect("hours"));
    assert_eq!(before, [("urn:long".into(), 72, 4320), ("urn:short".into(), 34, 1999)]);
    client.batch_execute(UNDO_ROLLUPS).await.expect("before migration 8");
    drop(client);
    let store = PostgresStore::connect(database.url(), 2).await.expect("migrate");
    let client = store.client().await.expect("client");
    assert_eq!(hours(client.query(HOURS, &[]).await.expect("hours")), before);
    let again = store
        .temporal_entity(&tenant, "urn:long", &query)
        .await
        .expect("read")
        .expect("found");
    assert_eq!(again.summaries, long.summaries);
}

/// The generated `num` column (migration 7) holds what an instance
/// contributes to aggregations: a live Property's number, a boolean as 0 or
/// 1, nothing for a string, another kind or a deletion record.
#[tokio::test]
async fn each_instance_contributes_its_number_to_aggregations() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresStore::connect(database.url(), 1).await.expect("connect");
    let client = store.client().await.expect("client");
    let docs = [
        (r#"{"kind":"Property","value":21.5}"#, None, Some(21.5)),
        (r#"{"kind":"Property","value":-3}"#, None, Some(-3.0)),
        (r#"{"kind":"Property","value":true}"#, None, Some(1.0)),
        (r#"{"kind":"Property","value":false}"#, None, Some(0.0)),
        (r#"{"kind":"Property","value":"21.5"}"#, None, None),
        (r#"{"kind":"Relationship","value":"urn:x"}"#, None, None),
        (r#"{"kind":"Property","value":{"a":1}}"#, None, None),
        (r#"{"kind":"Property","value":4}"#, Some("2024-01-01T00:00:00Z"), None),
        // PostgreSQL's JSON operators refuse U+0000: no number, but stored.
        (r#"{"kind":"Property","value":5,"note":"a\u0000b"}"#, None, None),
    ];
    for (k, (doc, deleted, expected)) in docs.iter().enumerate() {
        let row = client
            .query_one(
                "INSERT INTO attr_instances(tenant, entity_id, attr, instance_id, created_at, modified_at, deleted_at, doc) \
                 VALUES ('t', 'urn:e', 'p', $1, now(), now(), $2::text::timestamptz, $3::text::json) RETURNING num",
                &[&format!("urn:i:{k}"), deleted, doc],
            )
            .await
            .expect("insert");
        assert_eq!(row.get::<_, Option<f64>>(0), *expected, "{doc} deleted {deleted:?}");
    }
    // An instance's number follows its edits.
    let row = client
        .query_one(
            "UPDATE attr_instances SET doc = '{\"kind\":\"Property\",\"value\":7}' WHERE instance_id = 'urn:i:4' RETURNING num",
            &[],
        )
        .await
        .expect("update");
    assert_eq!(row.get::<_, Option<f64>>(0), Some(7.0));
}
