//! The spatial index (`geo_keys`, `geo_boxes`): per entity and GeoProperty
//! name, the box around all its instances, in an SQLite R*Tree. A geo-query
//! with a bounded region reads the entities whose box meets it there instead
//! of testing every entity of the type; the exact test stays in Rust
//! ([`GeoQuery::matches`]), so the index only ever narrows.
//!
//! The R*Tree stores 32-bit floats, rounded outwards: a stored box never
//! shrinks, so no match is lost.

use std::collections::BTreeMap;

use piazza_ngsild::query::GeoQuery;
use piazza_ngsild::{AttributeKind, Entity};
use piazza_store::StoreResult;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::sql;

/// `PRAGMA user_version` from which the spatial index is complete.
const GEO_VERSION: i64 = 4;

/// `[min_lon, min_lat, max_lon, max_lat]`.
type GeoBox = [f64; 4];

/// The box of each GeoProperty of `entity` around all its instances, by
/// expanded name; instances that are no geometry have none.
fn boxes(entity: &Entity) -> BTreeMap<&str, GeoBox> {
    let mut boxes = BTreeMap::new();
    for (name, instances) in &entity.attributes {
        let merged = instances
            .iter()
            .filter(|instance| instance.kind == AttributeKind::GeoProperty)
            .filter_map(|instance| GeoQuery::value_bounds(&instance.value))
            .reduce(|a, b| [a[0].min(b[0]), a[1].min(b[1]), a[2].max(b[2]), a[3].max(b[3])]);
        if let Some(merged) = merged {
            boxes.insert(name.as_str(), merged);
        }
    }
    boxes
}

/// Brings the boxes of row `eid` from `before`'s to `after`'s, writing only
/// what changed: most updates move no geometry and write nothing here.
/// `before` is `None` when the row has no boxes (a new entity, or one
/// [`clear`]ed).
pub(crate) fn reindex(
    transaction: &Transaction<'_>,
    eid: i64,
    before: Option<&Entity>,
    after: Option<&Entity>,
) -> rusqlite::Result<()> {
    let old = before.map(boxes).unwrap_or_default();
    let new = after.map(boxes).unwrap_or_default();
    for name in old.keys().filter(|name| !new.contains_key(*name)) {
        let gid: Option<i64> = transaction
            .prepare_cached("DELETE FROM geo_keys WHERE eid = ?1 AND name = ?2 RETURNING gid")?
            .query_row(params![eid, name], |r| r.get(0))
            .optional()?;
        if let Some(gid) = gid {
            transaction
                .prepare_cached("DELETE FROM geo_boxes WHERE gid = ?1")?
                .execute([gid])?;
        }
    }
    for (name, bounds) in new.iter().filter(|(name, bounds)| old.get(*name) != Some(*bounds)) {
        let gid: i64 = if before.is_none() {
            // The row has no keys (new, or cleared): a plain insert, without
            // the upsert's probe and RETURNING.
            transaction
                .prepare_cached("INSERT INTO geo_keys(eid, name) VALUES (?1, ?2)")?
                .execute(params![eid, name])?;
            transaction.last_insert_rowid()
        } else {
            transaction
                .prepare_cached(
                    "INSERT INTO geo_keys(eid, name) VALUES (?1, ?2) \
                     ON CONFLICT (eid, name) DO UPDATE SET name = excluded.name RETURNING gid",
                )?
                .query_row(params![eid, name], |r| r.get(0))?
        };
        transaction
            .prepare_cached(
                "INSERT OR REPLACE INTO geo_boxes(gid, min_lon, max_lon, min_lat, max_lat) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(params![gid, bounds[0], bounds[2], bounds[1], bounds[3]])?;
    }
    Ok(())
}

/// Drops every box of row `eid`.
pub(crate) fn clear(transaction: &Transaction<'_>, eid: i64) -> rusqlite::Result<()> {
    transaction
        .prepare_cached("DELETE FROM geo_boxes WHERE gid IN (SELECT gid FROM geo_keys WHERE eid = ?1)")?
        .execute([eid])?;
    transaction
        .prepare_cached("DELETE FROM geo_keys WHERE eid = ?1")?
        .execute([eid])?;
    Ok(())
}

/// The eids (ascending, distinct) whose box of `query`'s GeoProperty meets
/// its region, if fewer than `limit`; `None` when the region is unbounded
/// (`disjoint`, `near;minDistance`, …) or holds too many entities to be
/// worth listing. Other tenants' entities may be listed: the caller's join
/// keeps the tenant's.
pub(crate) fn eids_meeting(connection: &Connection, query: &GeoQuery, limit: i64) -> StoreResult<Option<Vec<i64>>> {
    let Some([min_lon, min_lat, max_lon, max_lat]) = query.bounding_box() else {
        return Ok(None);
    };
    let mut statement = connection
        .prepare_cached(
            "SELECT k.eid FROM geo_boxes g JOIN geo_keys k ON k.gid = g.gid \
             WHERE g.max_lon >= ?1 AND g.min_lon <= ?2 AND g.max_lat >= ?3 AND g.min_lat <= ?4 \
             AND k.name = ?5 LIMIT ?6",
        )
        .map_err(sql)?;
    let eids: Vec<i64> = statement
        .query_map(
            params![min_lon, max_lon, min_lat, max_lat, query.geoproperty(), limit],
            |r| r.get(0),
        )
        .and_then(|rows| rows.collect())
        .map_err(sql)?;
    Ok(crate::values::driving_list(eids, limit))
}

/// Fills the spatial index of a data dir written before it existed.
pub(crate) fn backfill(connection: &mut Connection) -> StoreResult<()> {
    if crate::filled_to(connection)? >= GEO_VERSION {
        return Ok(());
    }
    // Whatever is there goes: `reindex` writes each entity's keys afresh.
    connection
        .execute_batch("DELETE FROM geo_boxes; DELETE FROM geo_keys;")
        .map_err(crate::sql)?;
    crate::backfill_entities(
        connection,
        GEO_VERSION,
        "spatial index",
        |transaction, eid, _, entity| reindex(transaction, eid, None, Some(entity)),
    )
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use piazza_ngsild::entity::{parse_entity, ParseOptions};
    use piazza_ngsild::query::{EntityQuery, GeoQuery, TypeSelector};
    use piazza_ngsild::update::UpdateOutcome;
    use piazza_ngsild::ActiveContext;
    use piazza_store::{Edit, EditOutcome, NewState, Page, Store, Tenant};
    use serde_json::{json, Value};

    use crate::tests::replace_with;
    use crate::EmbeddedStore;

    /// `(short name, min_lon, max_lon, min_lat, max_lat)` of every box.
    fn box_rows(store: &EmbeddedStore) -> Vec<(String, f64, f64, f64, f64)> {
        let connection = rusqlite::Connection::open(store.path()).expect("open");
        let mut statement = connection
            .prepare(
                "SELECT k.name, g.min_lon, g.max_lon, g.min_lat, g.max_lat \
                 FROM geo_keys k JOIN geo_boxes g ON g.gid = k.gid ORDER BY k.name",
            )
            .expect("prepare");
        let rows = statement
            .query_map([], |r| {
                let name: String = r.get(0)?;
                let short = name.rsplit('/').next().unwrap_or_default().to_owned();
                Ok((short, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .expect("query")
            .collect::<Result<Vec<_>, _>>()
            .expect("rows");
        let keys: i64 = connection
            .query_row("SELECT count(*) FROM geo_keys", [], |r| r.get(0))
            .expect("count");
        assert_eq!(
            keys as usize,
            rows.len(),
            "a key without its box or the other way round"
        );
        rows
    }

    fn near(x: f64, y: f64) -> bool {
        // The R*Tree keeps 32-bit floats, rounded outwards.
        (x - y).abs() < 1e-4
    }

    #[tokio::test]
    async fn boxes_follow_each_edit() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open store");
        let tenant = Tenant::default();
        let point =
            |lon: f64, lat: f64| json!({"type": "GeoProperty", "value": {"type": "Point", "coordinates": [lon, lat]}});
        let first = json!({"id": "urn:g:1", "type": "T", "location": point(11.25, 43.77),
            "area": [point(11.0, 43.0), {"type": "GeoProperty", "datasetId": "urn:d:1",
                "value": {"type": "Point", "coordinates": [12.0, 44.0]}}],
            "label": {"type": "Property", "value": {"type": "Point", "coordinates": [1, 1]}}});
        store.edit(&tenant, vec![replace_with(first)]).await.expect("create");
        let rows = box_rows(&store);
        assert_eq!(rows.len(), 2, "one box per GeoProperty, none for a Property: {rows:?}");
        let (area, location) = (&rows[0], &rows[1]);
        assert_eq!(area.0, "area");
        assert!(
            near(area.1, 11.0) && near(area.2, 12.0) && near(area.3, 43.0) && near(area.4, 44.0),
            "{area:?}"
        );
        assert!(
            near(location.1, 11.25) && near(location.2, 11.25) && near(location.3, 43.77),
            "{location:?}"
        );

        // The location moves and the area goes.
        let moved = json!({"id": "urn:g:1", "type": "T", "location": point(10.0, 42.0)});
        store.edit(&tenant, vec![replace_with(moved)]).await.expect("update");
        let rows = box_rows(&store);
        assert_eq!(rows.len(), 1, "{rows:?}");
        assert!(
            rows[0].0 == "location" && near(rows[0].1, 10.0) && near(rows[0].3, 42.0),
            "{rows:?}"
        );

        let delete = Edit::new(String::from("urn:g:1"), |_| {
            Ok(EditOutcome {
                state: NewState::Delete,
                report: UpdateOutcome::default(),
            })
        });
        store.edit(&tenant, vec![delete]).await.expect("delete");
        assert!(box_rows(&store).is_empty());
    }

    /// A small deterministic generator, so a failure can be replayed.
    struct Lcg(u64);

    impl Lcg {
        fn unit(&mut self) -> f64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 11) as f64 / (1u64 << 53) as f64
        }
    }

    /// Entity bodies around Florence: points, small squares, a line, some
    /// with no location (some with a geometry in a plain Property instead).
    fn place(i: usize, rng: &mut Lcg) -> Value {
        let (lon, lat) = (11.15 + rng.unit() * 0.2, 43.72 + rng.unit() * 0.1);
        let geometry = match i % 7 {
            0 => {
                json!({"type": "Polygon", "coordinates": [[[lon, lat], [lon + 0.004, lat], [lon + 0.004, lat + 0.003], [lon, lat + 0.003], [lon, lat]]]})
            }
            1 => json!({"type": "LineString", "coordinates": [[lon, lat], [lon + 0.01, lat - 0.008]]}),
            _ => json!({"type": "Point", "coordinates": [lon, lat]}),
        };
        let mut body = json!({"id": format!("urn:place:{i:04}"), "type": "Place"});
        match i % 11 {
            0 => {}
            1 => body["shape"] = json!({"type": "Property", "value": geometry}),
            _ => body["location"] = json!({"type": "GeoProperty", "value": geometry}),
        }
        body
    }

    /// Whatever narrows a geo-query through the index finds what testing
    /// every entity of the type finds, in the same order, with the same
    /// count, and another tenant's entities at the same places never show.
    #[tokio::test]
    async fn indexed_geo_queries_find_what_a_full_scan_finds() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open store");
        let (tenant, other) = (
            Tenant::parse("geo").expect("tenant"),
            Tenant::parse("elsewhere").expect("tenant"),
        );
        let mut rng = Lcg(7);
        let bodies: Vec<Value> = (0..400).map(|i| place(i, &mut rng)).collect();
        store
            .edit(&tenant, bodies.iter().cloned().map(replace_with).collect())
            .await
            .expect("create");
        store
            .edit(&other, bodies.iter().cloned().map(replace_with).collect())
            .await
            .expect("create elsewhere");
        let context = ActiveContext::core();
        let entities: Vec<_> = bodies
            .iter()
            .map(|b| parse_entity(b, &context, ParseOptions::CREATE).expect("entity"))
            .collect();

        let square = |lon: f64, lat: f64, d: f64| {
            json!([[
                [lon, lat],
                [lon + d, lat],
                [lon + d, lat + d],
                [lon, lat + d],
                [lon, lat]
            ]])
        };
        let mut queries = Vec::new();
        for _ in 0..12 {
            let (lon, lat) = (11.15 + rng.unit() * 0.2, 43.72 + rng.unit() * 0.1);
            for distance in [300, 1500, 6000] {
                let georel = format!("near;maxDistance=={distance}");
                queries.push((georel, "Point", json!([lon, lat])));
            }
            queries.push(("near;minDistance==4000".into(), "Point", json!([lon, lat])));
            for relation in ["within", "intersects", "contains", "overlaps", "disjoint"] {
                queries.push((relation.into(), "Polygon", square(lon, lat, 0.02)));
            }
        }
        let page = Page {
            offset: 0,
            limit: 1000,
            count: true,
        };
        let connection = rusqlite::Connection::open(store.path()).expect("open");
        let mut narrowed = 0;
        for (georel, geometry, coordinates) in queries {
            let geo = GeoQuery::parse(&georel, geometry, &coordinates, None, &context).expect("geo-query");
            let expected: Vec<&str> = entities
                .iter()
                .filter(|e| geo.matches(e))
                .map(|e| e.id.as_str())
                .collect();
            if super::eids_meeting(&connection, &geo, crate::values::DRIVE_LIMIT)
                .expect("index")
                .is_some()
            {
                narrowed += 1;
            }
            let query = EntityQuery {
                types: Some(TypeSelector::Type(context.expand("Place"))),
                geo: Some(geo),
                ..Default::default()
            };
            let found = store.query(&tenant, Arc::new(query), page).await.expect("query");
            let ids: Vec<&str> = found.entities.iter().map(|e| e.id.as_str()).collect();
            assert_eq!(ids, expected, "{georel} {geometry} {coordinates}");
            assert_eq!(found.total, Some(expected.len() as u64), "{georel} {coordinates}");
        }
        assert!(narrowed >= 12 * 7, "the index narrowed only {narrowed} queries");
    }

    /// A data dir from before the spatial index gets it at open.
    #[tokio::test]
    async fn a_data_dir_from_before_the_spatial_index_is_backfilled_at_open() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = EmbeddedStore::open(dir.path()).expect("open store");
        let tenant = Tenant::default();
        let mut rng = Lcg(3);
        let bodies: Vec<Value> = (0..50).map(|i| place(i, &mut rng)).collect();
        store
            .edit(&tenant, bodies.into_iter().map(replace_with).collect())
            .await
            .expect("create");
        let sorted = |mut rows: Vec<(String, f64, f64, f64, f64)>| {
            rows.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            rows
        };
        let indexed = sorted(box_rows(&store));
        drop(store);

        // Aged, with stale keys left behind: the backfill starts afresh.
        let old = rusqlite::Connection::open(dir.path().join("piazza.sqlite")).expect("sqlite");
        old.execute_batch("DELETE FROM geo_boxes; PRAGMA user_version = 3;")
            .expect("age the data dir");
        drop(old);
        let store = EmbeddedStore::open(dir.path()).expect("reopen");
        let rebuilt = sorted(box_rows(&store));
        assert!(!rebuilt.is_empty());
        assert_eq!(rebuilt, indexed);
    }
}
