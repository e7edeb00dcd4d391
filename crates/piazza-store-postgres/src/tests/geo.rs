//! PostGIS: that the narrowing is really used (a silently disabled PostGIS
//! path fails here), that shapes are filled in when PostGIS arrives on a
//! database or after a process wrote without it, and that a database
//! where piazza may not create the extension still works.

use std::sync::Arc;

use piazza_ngsild::entity::{parse_entity, ParseOptions};
use piazza_ngsild::query::{EntityQuery, GeoQuery, TypeSelector};
use piazza_ngsild::update::UpdateOutcome;
use piazza_ngsild::{time, ActiveContext, Entity};
use piazza_store::{Edit, EditOutcome, Page, Store, Tenant};
use serde_json::{json, Value};

use crate::testing::{self, TestDatabase};
use crate::{read, Postgis, PostgresConfig, PostgresStore};

fn config(postgis: Postgis) -> PostgresConfig {
    PostgresConfig { pool_size: 2, postgis }
}

/// Entity `i` of a grid of points `side` x `side`, 0.001 degrees apart,
/// from (11.0, 43.5).
fn grid_point(i: usize, side: usize) -> Entity {
    let (lon, lat) = (11.0 + (i % side) as f64 * 0.001, 43.5 + (i / side) as f64 * 0.001);
    let body = json!({
        "id": format!("urn:grid:{i:06}"), "type": "Spot",
        "location": {"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}}
    });
    let mut entity = parse_entity(&body, &ActiveContext::core(), ParseOptions::CREATE).expect("entity");
    entity.stamp_new(time::now());
    entity
}

async fn load_grid(store: &PostgresStore, tenant: &Tenant, side: usize) {
    for chunk in (0..side * side).collect::<Vec<_>>().chunks(1000) {
        let edits = chunk
            .iter()
            .map(|i| {
                let entity = grid_point(*i, side);
                Edit::new(entity.id.clone(), move |_| {
                    Ok(EditOutcome::put(entity, UpdateOutcome::default()))
                })
            })
            .collect();
        for result in store.edit(tenant, edits).await.expect("edit") {
            result.expect("stored");
        }
    }
}

fn geo_query(georel: &str, geometry: &str, coordinates: Value, typed: bool) -> EntityQuery {
    let core = ActiveContext::core();
    EntityQuery {
        types: typed.then(|| TypeSelector::parse("Spot", &core).expect("type")),
        geo: Some(GeoQuery::parse(georel, geometry, &coordinates, None, &core).expect("geo-query")),
        ..Default::default()
    }
}

async fn matches(store: &PostgresStore, tenant: &Tenant, query: &EntityQuery) -> u64 {
    let page = Page {
        offset: 0,
        limit: 0,
        count: true,
    };
    store
        .query(tenant, Arc::new(query.clone()), page)
        .await
        .expect("query")
        .total
        .expect("count")
}

/// With PostGIS, a `near` query reads about the entities of its circle,
/// not those of its box, and the plan goes through the GiST indexes of
/// the shapes; the box path reads the whole box.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgis_narrows_geo_queries_through_its_indexes() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let store = PostgresStore::open(database.url(), &config(Postgis::Auto))
        .await
        .expect("open");
    if !testing::has_postgis(&store) {
        return;
    }
    let tenant = Tenant::default();
    load_grid(&store, &tenant, 100).await;
    let client = store.client().await.expect("client");
    client.batch_execute("ANALYZE").await.expect("analyze");

    for typed in [false, true] {
        let near = geo_query("near;maxDistance==1000", "Point", json!([11.05, 43.55]), typed);
        let found = matches(&store, &tenant, &near).await as i64;
        let (boxed, _) = read::explain_candidates(&client, &tenant, &near, false)
            .await
            .expect("boxes");
        let (shaped, plan) = read::explain_candidates(&client, &tenant, &near, true)
            .await
            .expect("shapes");
        assert!(found > 200, "the circle holds points: {found}");
        assert!(
            boxed as f64 > found as f64 * 1.2,
            "the box holds more than the circle: {boxed} / {found}"
        );
        // The sphere test is padded (1 % and a few meters), no more.
        assert!(
            shaped >= found && shaped as f64 <= found as f64 * 1.05,
            "PostGIS candidates {shaped} for {found} matches"
        );
        assert!(plan.contains("entity_geo_by_sphere"), "plan:\n{plan}");

        let triangle = json!([[[11.02, 43.52], [11.08, 43.52], [11.02, 43.58], [11.02, 43.52]]]);
        let within = geo_query("within", "Polygon", triangle, typed);
        let found = matches(&store, &tenant, &within).await as i64;
        let (boxed, _) = read::explain_candidates(&client, &tenant, &within, false)
            .await
            .expect("boxes");
        let (shaped, plan) = read::explain_candidates(&client, &tenant, &within, true)
            .await
            .expect("shapes");
        assert!(
            found > 1000 && boxed > found * 3 / 2,
            "{found} in the triangle, {boxed} in its box"
        );
        // Points on the triangle's edges are candidates, not `within` it.
        assert!(
            shaped >= found && shaped <= found + 200,
            "{shaped} candidates for {found}"
        );
        assert!(
            plan.contains("entity_geo_by_shape") || plan.contains("entity_geo_by_box"),
            "plan:\n{plan}"
        );
    }
}

/// Shapes of entities written before PostGIS (or by a process with
/// `--postgis off`) are filled in at the next start with PostGIS; until
/// then those entities are candidates of every query, so answers are
/// right all along.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shapes_are_filled_in_when_postgis_arrives() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let tenant = Tenant::parse("fill").expect("tenant");
    let before = PostgresStore::open(database.url(), &config(Postgis::Off))
        .await
        .expect("open without PostGIS");
    assert!(!before.uses_postgis());
    load_grid(&before, &tenant, 30).await;
    let near = geo_query("near;maxDistance==800", "Point", json!([11.01, 43.51]), true);
    let expected = matches(&before, &tenant, &near).await;
    assert!(expected > 50);

    let with = PostgresStore::open(database.url(), &config(Postgis::Auto))
        .await
        .expect("open with PostGIS");
    if !testing::has_postgis(&with) {
        return;
    }
    let client = with.client().await.expect("client");
    let unshaped = |client: deadpool_postgres::Object| async move {
        let row = client
            .query_one(
                "SELECT COUNT(*) FILTER (WHERE NOT shaped), COUNT(*) FILTER (WHERE shape IS NOT NULL) FROM entity_geo",
                &[],
            )
            .await
            .expect("count");
        (row.get::<_, i64>(0), row.get::<_, i64>(1))
    };
    assert_eq!(unshaped(client).await, (0, 900), "every row filled in");
    let layer: i32 = with
        .client()
        .await
        .expect("client")
        .query_one("SELECT version FROM schema_layers WHERE name = 'postgis'", &[])
        .await
        .expect("recorded")
        .get(0);
    assert_eq!(layer, 1);
    assert_eq!(matches(&with, &tenant, &near).await, expected);

    // A process without PostGIS writes on: its rows have no shapes, and
    // the PostGIS process still finds them.
    let mut far = grid_point(0, 30);
    far.attributes.insert(
        ActiveContext::core().expand("location"),
        vec![piazza_ngsild::Attribute::new(
            piazza_ngsild::AttributeKind::GeoProperty,
            json!({"type": "Point", "coordinates": [11.01, 43.51]}),
        )],
    );
    let far_id = far.id.clone();
    before
        .edit(
            &tenant,
            vec![Edit::new(far_id, move |_| {
                Ok(EditOutcome::put(far, UpdateOutcome::default()))
            })],
        )
        .await
        .expect("edit")[0]
        .as_ref()
        .expect("moved");
    let client = with.client().await.expect("client");
    assert_eq!(unshaped(client).await, (1, 899));
    let exact = geo_query("near;maxDistance==1", "Point", json!([11.01, 43.51]), true);
    let found = with
        .query(
            &tenant,
            Arc::new(exact.clone()),
            Page {
                offset: 0,
                limit: 10,
                count: false,
            },
        )
        .await
        .expect("query");
    let ids: Vec<&str> = found.entities.iter().map(|e| e.id.as_str()).collect();
    assert_eq!(ids, ["urn:grid:000000", "urn:grid:000310"]);

    drop(with);
    let again = PostgresStore::open(database.url(), &config(Postgis::Auto))
        .await
        .expect("reopen");
    let client = again.client().await.expect("client");
    assert_eq!(unshaped(client).await, (0, 900), "filled in at the next start");
    assert_eq!(matches(&again, &tenant, &exact).await, 2);
}

/// A role that may not create the extension gets the box path, and works.
#[tokio::test]
async fn without_the_right_to_create_postgis_the_store_falls_back() {
    let Some(database) = TestDatabase::create().await else {
        return;
    };
    let Some(url) = database.url().strip_prefix("postgres://postgres@") else {
        testing::loud("the test server URL is not postgres://postgres@...: SKIPPING the PostGIS fallback test");
        return;
    };
    let role = "piazza_test_plain";
    let admin = PostgresStore::open(database.url(), &config(Postgis::Off))
        .await
        .expect("admin");
    let client = admin.client().await.expect("client");
    // A role of the whole server, made once and kept: it owns nothing.
    let created = client
        .batch_execute(&format!(
            "DO $$ BEGIN CREATE ROLE {role} LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END $$; \
             GRANT ALL ON SCHEMA public TO {role}; GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}; \
             GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}"
        ))
        .await;
    if let Err(error) = created {
        testing::loud(&format!(
            "cannot create a plain role ({error}): SKIPPING the PostGIS fallback test"
        ));
        return;
    }
    drop(client);
    drop(admin);
    let plain = PostgresStore::open(&format!("postgres://{role}@{url}"), &config(Postgis::Auto))
        .await
        .expect("a plain role opens the store");
    assert!(!plain.uses_postgis(), "a plain role cannot create PostGIS");
    let tenant = Tenant::default();
    load_grid(&plain, &tenant, 10).await;
    let near = geo_query("near;maxDistance==200", "Point", json!([11.005, 43.505]), false);
    assert!(matches(&plain, &tenant, &near).await > 0);
}
