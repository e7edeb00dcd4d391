//! The value indexes: that `q` is really narrowed by them (a narrowing that
//! silently stops fails here, though the answers would stay right), that
//! every path writing entities keeps them (edits, raw imports, tenant
//! clearing), and that entities stored before migration 5 get their rows.

use std::sync::Arc;

use piazza_ngsild::entity::{parse_entity, ParseOptions};
use piazza_ngsild::query::{EntityQuery, Query, TypeSelector};
use piazza_ngsild::update::UpdateOutcome;
use piazza_ngsild::{time, ActiveContext, Entity};
use piazza_store::{Edit, EditOutcome, Page, RawRecord, Store, Tenant};
use serde_json::json;

use crate::testing::TestDatabase;
use crate::{read, Postgis, PostgresConfig, PostgresStore};

const ENTITIES: usize = 2_000;

fn config() -> PostgresConfig {
    PostgresConfig {
        pool_size: 2,
        postgis: Postgis::Off,
    }
}

/// Entity `i`: `n` = i, `s` one of four texts.
fn hive(i: usize) -> Entity {
    let body = json!({
        "id": format!("urn:hive:{i:05}"), "type": "Hive",
        "n": {"type": "Property", "value": i},
        "s": {"type": "Property", "value": format!("s{}", i % 4)}
    });
    let mut entity = parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).expect("entity");
    entity.stamp_new(time::now());
    entity
}

fn put(entity: Entity) -> Edit {
    Edit::new(entity.id.clone(), move |_| {
        Ok(EditOutcome::put(entity, UpdateOutcome::default()))
    })
}

async fn load(store: &PostgresStore, tenant: &Tenant) {
    for chunk in (0..ENTITIES).collect::<Vec<_>>().chunks(500) {
        for result in store
            .edit(tenant, chunk.iter().map(|i| put(hive(*i))).collect())
            .await
            .expect("edit")
        {
            result.expect("stored");
        }
    }
}

fn q_query(q: &str) -> EntityQuery {
    let core = ActiveContext::core();
    EntityQuery {
        types: Some(TypeSelector::parse("Hive", &core).expect("type")),
        q: Some(Query::parse(q, &core).expect("q")),
        ..Default::default()
    }
}

/// The ids a query returns, all of them.
async fn ids(store: &PostgresStore, tenant: &Tenant, q: &str) -> Vec<String> {
    let page = Page {
        offset: 0,
        limit: ENTITIES,
        count: false,
    };
    let found = store.query(tenant, Arc::new(q_query(q)), page).await.expect("query");
    found.entities.into_iter().map(|e| e.id).collect()
}

/// The candidates SQL leaves a query, and its plan.
async fn candidates(store: &PostgresStore, tenant: &Tenant, q: &str) -> (i64, String) {
    let client = store.client().await.expect("client");
    read::explain_candidates(&client, tenant, &q_query(q), false)
        .await
        .expect("explain")
}

fn expected(q: &str, entities: impl Iterator<Item = Entity>) -> Vec<String> {
    let query = Query::parse(q, &ActiveContext::core()).expect("q");
    entities.filter(|e| query.matches(e)).map(|e| e.id).collect()
}

/// Each query reads as candidates only the entities its bounds let
/// through (here exactly its matches), through the value tables.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn q_queries_read_only_the_candidates_the_value_indexes_leave() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresStore::open(database.url(), &config()).await.expect("open");
    let tenant = Tenant::parse("narrow").expect("tenant");
    load(&store, &tenant).await;
    for (q, table) in [
        ("n>=1990", "attr_numbers"),
        ("n==7,700", "attr_numbers"),
        ("n==100..119;s==\"s1\"", "attr_texts"),
        // Loose bounds (every entity meets `n>=0`) are probed, not driven.
        ("n>=0;s==\"s2\"", "attr_texts"),
        ("s==\"s3\"", "attr_texts"),
    ] {
        let want = expected(q, (0..ENTITIES).map(hive));
        let (count, plan) = candidates(&store, &tenant, q).await;
        assert_eq!(count, want.len() as i64, "{q}: candidates\n{plan}");
        assert!(plan.contains(table), "{q}: plan without {table}\n{plan}");
        assert_eq!(ids(&store, &tenant, q).await, want, "{q}: results");
    }
    // A driving bound's candidates stream in eid order, so a page stops
    // early: no sort of the fetched entities ends the plan.
    let (_, plan) = candidates(&store, &tenant, "n>=1990").await;
    let top = plan.lines().next().unwrap_or_default();
    assert!(
        !top.contains("Sort"),
        "the candidates are sorted after fetching:\n{plan}"
    );
    assert!(plan.contains("Nested Loop"), "{plan}");
    // What no bound can be stated for is read whole, and still right.
    let (count, _) = candidates(&store, &tenant, "n>=1990|s==\"s1\"").await;
    assert_eq!(count, ENTITIES as i64);
}

/// Edits, deletions, raw imports and clearing keep the value rows exact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_path_keeps_the_value_rows() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresStore::open(database.url(), &config()).await.expect("open");
    let tenant = Tenant::parse("paths").expect("tenant");
    load(&store, &tenant).await;
    let mut moved = hive(5);
    moved.attributes.insert(
        ActiveContext::core().expand("n"),
        hive(5_000).attributes[&ActiveContext::core().expand("n")].clone(),
    );
    let deleted = |id: String| {
        Edit::new(id, |_| {
            Ok(EditOutcome {
                state: piazza_store::NewState::Delete,
                report: UpdateOutcome::default(),
            })
        })
    };
    for result in store
        .edit(&tenant, vec![put(moved), deleted(hive(1999).id)])
        .await
        .expect("edit")
    {
        result.expect("applied");
    }
    assert_eq!(ids(&store, &tenant, "n>=1990").await.len(), 10, "1999 gone, 5 moved up");
    assert_eq!(ids(&store, &tenant, "n==5").await, Vec::<String>::new());
    assert_eq!(
        candidates(&store, &tenant, "n==5").await.0,
        0,
        "the old value's row is gone"
    );

    // A raw import into another tenant writes the rows a write would.
    let copy = Tenant::parse("copy").expect("tenant");
    let records = (0..ENTITIES).map(|i| RawRecord::Entity(hive(i))).collect();
    store.import_batch(&copy, records).await.expect("import");
    assert_eq!(candidates(&store, &copy, "n>=1990").await.0, 10);
    assert_eq!(
        ids(&store, &copy, "s==\"s0\";n<8").await,
        ["urn:hive:00000", "urn:hive:00004"]
    );
    // Imported again over itself: replaced, not doubled.
    let records = (0..ENTITIES).map(|i| RawRecord::Entity(hive(i))).collect();
    store.import_batch(&copy, records).await.expect("re-import");
    assert_eq!(candidates(&store, &copy, "n>=1990").await.0, 10);

    store.clear_tenant(&copy).await.expect("clear");
    let client = store.client().await.expect("client");
    let left: i64 = client
        .query_one(
            "SELECT (SELECT COUNT(*) FROM attr_numbers WHERE tenant = 'copy') \
             + (SELECT COUNT(*) FROM attr_texts WHERE tenant = 'copy')",
            &[],
        )
        .await
        .expect("count")
        .get(0);
    assert_eq!(left, 0, "clearing a tenant takes its value rows");
}

/// A database at migration 4 (no value tables) with entities gets the rows
/// of every stored entity when migration 5 is applied.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_stored_before_the_value_indexes_get_their_rows() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let tenant = Tenant::parse("older").expect("tenant");
    {
        let store = PostgresStore::open(database.url(), &config()).await.expect("open");
        load(&store, &tenant).await;
        let client = store.client().await.expect("client");
        client
            .batch_execute(super::UNDO_ROLLUPS)
            .await
            .expect("before migration 8");
        client
            .batch_execute(
                "DROP TABLE attr_numbers; DROP TABLE attr_texts; \
                 DROP INDEX attr_instances_observed; \
                 CREATE INDEX attr_instances_observed ON attr_instances (tenant, entity_id, attr, observed_at); \
                 CREATE INDEX attr_instances_created ON attr_instances (tenant, entity_id, attr, created_at); \
                 CREATE INDEX attr_instances_modified ON attr_instances (tenant, entity_id, attr, modified_at); \
                 ALTER TABLE attr_instances DROP COLUMN num; \
                 DELETE FROM schema_migrations WHERE version >= 5",
            )
            .await
            .expect("take the database back to migration 4");
    }
    let store = PostgresStore::open(database.url(), &config()).await.expect("migrate");
    assert_eq!(store.schema_version().await.expect("version"), crate::migrate::latest());
    let rows: (i64, i64) = {
        let client = store.client().await.expect("client");
        let row = client
            .query_one(
                "SELECT (SELECT COUNT(*) FROM attr_numbers), (SELECT COUNT(*) FROM attr_texts)",
                &[],
            )
            .await
            .expect("count");
        (row.get(0), row.get(1))
    };
    assert_eq!(
        rows,
        (ENTITIES as i64, ENTITIES as i64),
        "one number and one text per entity"
    );
    for q in ["n>=1990", "s==\"s1\";n<40"] {
        let want = expected(q, (0..ENTITIES).map(hive));
        assert_eq!(candidates(&store, &tenant, q).await.0, want.len() as i64, "{q}");
        assert_eq!(ids(&store, &tenant, q).await, want, "{q}");
    }
}
