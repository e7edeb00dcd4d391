use std::sync::Arc;

use geo::{Destination, Geodesic};
use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::entity::Attribute;
use crate::error::ErrorKind;

const DUOMO: [f64; 2] = [11.2560, 43.7731];
const SIGNORIA: [f64; 2] = [11.2556, 43.7696];
const PISA_TOWER: [f64; 2] = [10.3966, 43.7230];

fn core() -> Arc<ActiveContext> {
    ActiveContext::core()
}

fn query(georel: &str, geometry: &str, coordinates: Value) -> GeoQuery {
    GeoQuery::parse(georel, geometry, &coordinates, None, &core())
        .unwrap_or_else(|e| panic!("{georel} {geometry} {coordinates}: {e}"))
}

fn rejected(georel: &str, geometry: &str, coordinates: Value) -> NgsiError {
    match GeoQuery::parse(georel, geometry, &coordinates, None, &core()) {
        Ok(q) => panic!("accepted {georel} {geometry} {coordinates}: {q:?}"),
        Err(e) => e,
    }
}

fn geometry(kind: &str, coordinates: Value) -> Value {
    json!({"type": kind, "coordinates": coordinates})
}

/// An entity whose `location` has one instance per value.
fn located(values: &[Value]) -> Entity {
    let mut entity = Entity::new("urn:ngsi-ld:Place:1", vec![core().expand("Place")]);
    let instances = values
        .iter()
        .enumerate()
        .map(|(i, value)| {
            let mut instance = Attribute::new(AttributeKind::GeoProperty, value.clone());
            if i > 0 {
                instance.dataset_id = Some(format!("urn:ngsi-ld:Dataset:{i}"));
            }
            instance
        })
        .collect();
    entity.attributes.insert(core().expand("location"), instances);
    entity
}

fn at(position: [f64; 2]) -> Entity {
    located(&[geometry("Point", json!(position))])
}

/// The square [lon0, lon0+size] x [lat0, lat0+size] as polygon coordinates.
fn square(lon0: f64, lat0: f64, size: f64) -> Value {
    let (lon1, lat1) = (lon0 + size, lat0 + size);
    json!([[[lon0, lat0], [lon1, lat0], [lon1, lat1], [lon0, lat1], [lon0, lat0]]])
}

fn square_entity(lon0: f64, lat0: f64, size: f64) -> Entity {
    located(&[geometry("Polygon", square(lon0, lat0, size))])
}

// ---------------------------------------------------------------- near

#[test]
fn duomo_is_near_piazza_della_signoria() {
    let within_2km = query("near;maxDistance==2000", "Point", json!(SIGNORIA));
    let within_100m = query("near;maxDistance==100", "Point", json!(SIGNORIA));
    assert!(within_2km.matches(&at(DUOMO)));
    assert!(!within_100m.matches(&at(DUOMO)));
    assert!(!within_2km.matches(&at(PISA_TOWER)));
}

#[test]
fn min_distance_is_the_complement() {
    assert!(query("near;minDistance==100", "Point", json!(SIGNORIA)).matches(&at(DUOMO)));
    assert!(!query("near;minDistance==2000", "Point", json!(SIGNORIA)).matches(&at(DUOMO)));
    assert!(query("near;minDistance==2000", "Point", json!(SIGNORIA)).matches(&at(PISA_TOWER)));
}

#[test]
fn near_measures_geodesic_meters() {
    // Duomo to Signoria is about 390 m on the WGS84 ellipsoid.
    assert!(query("near;maxDistance==400", "Point", json!(SIGNORIA)).matches(&at(DUOMO)));
    assert!(!query("near;maxDistance==380", "Point", json!(SIGNORIA)).matches(&at(DUOMO)));
    assert!(query("near;maxDistance==0.001", "Point", json!(SIGNORIA)).matches(&at(SIGNORIA)));
    assert!(query("near;maxDistance==1e3", "Point", json!(SIGNORIA)).matches(&at(DUOMO)));
    assert!(query("near;maxDistance==390.5", "Point", json!(SIGNORIA)).matches(&at(DUOMO)));
}

#[test]
fn near_uses_the_nearest_point_of_lines_and_areas() {
    // A meridian segment 0.001 degrees (about 80 m) east of Signoria, whose
    // ends are more than 1 km away.
    let lon = SIGNORIA[0] + 0.001;
    let line = located(&[geometry(
        "LineString",
        json!([[lon, SIGNORIA[1] - 0.02], [lon, SIGNORIA[1] + 0.02]]),
    )]);
    assert!(query("near;maxDistance==100", "Point", json!(SIGNORIA)).matches(&line));
    assert!(!query("near;maxDistance==50", "Point", json!(SIGNORIA)).matches(&line));
    assert!(!query("near;minDistance==100", "Point", json!(SIGNORIA)).matches(&line));

    let around = square_entity(SIGNORIA[0] - 0.01, SIGNORIA[1] - 0.01, 0.02);
    assert!(query("near;maxDistance==0.001", "Point", json!(SIGNORIA)).matches(&around));
    assert!(!query("near;minDistance==1", "Point", json!(SIGNORIA)).matches(&around));
}

#[test]
fn near_crosses_the_antimeridian() {
    let q = query("near;maxDistance==500", "Point", json!([179.999, 0.0]));
    assert!(q.matches(&at([-179.999, 0.0])));
    assert_eq!(q.bounding_box().map(|b| (b[0], b[2])), Some((-180.0, 180.0)));
}

#[test]
fn near_box_reaching_a_pole_spans_all_longitudes() {
    let q = query("near;maxDistance==200000", "Point", json!([10.0, 89.5]));
    let [west, _, east, north] = q.bounding_box().unwrap();
    assert_eq!((west, east, north), (-180.0, 180.0, 90.0));
    assert!(q.matches(&at([-170.0, 89.6])));
}

#[test]
fn near_box_holds_the_circle() {
    let q = query("near;maxDistance==2000", "Point", json!(SIGNORIA));
    let [west, south, east, north] = q.bounding_box().unwrap();
    for bearing in (0..360).step_by(15) {
        let p = Geodesic::destination(Point::from(SIGNORIA), f64::from(bearing), 2000.0);
        assert!(
            west < p.x() && p.x() < east && south < p.y() && p.y() < north,
            "{bearing}"
        );
    }
    assert!(
        east - west < 0.06 && north - south < 0.04,
        "box is loose: {west} {south} {east} {north}"
    );
    assert_eq!(
        query("near;minDistance==2000", "Point", json!(SIGNORIA)).bounding_box(),
        None
    );
}

// ---------------------------------------------------------------- topology

#[test]
fn within_means_the_entity_is_inside_the_query() {
    let area = square(11.0, 43.0, 1.0);
    let q = query("within", "Polygon", area);
    assert!(q.matches(&at(DUOMO)));
    assert!(!q.matches(&at([12.5, 43.5])));
    assert!(q.matches(&square_entity(11.2, 43.2, 0.1)));
    assert!(!q.matches(&square_entity(10.5, 43.2, 1.0)));
    assert!(q.matches(&located(&[geometry("LineString", json!([DUOMO, SIGNORIA]))])));
}

#[test]
fn a_point_on_the_boundary_intersects_but_is_not_within() {
    let boundary_point = at([11.0, 43.5]);
    assert!(!query("within", "Polygon", square(11.0, 43.0, 1.0)).matches(&boundary_point));
    assert!(query("intersects", "Polygon", square(11.0, 43.0, 1.0)).matches(&boundary_point));
    assert!(!query("disjoint", "Polygon", square(11.0, 43.0, 1.0)).matches(&boundary_point));
}

#[test]
fn contains_means_the_entity_holds_the_query() {
    let tuscany = square_entity(9.7, 42.2, 2.5);
    assert!(query("contains", "Point", json!(DUOMO)).matches(&tuscany));
    assert!(!query("contains", "Point", json!([12.5, 41.9])).matches(&tuscany));
    assert!(query("contains", "Polygon", square(11.0, 43.0, 0.5)).matches(&tuscany));
    assert!(!query("contains", "Polygon", square(11.0, 43.0, 5.0)).matches(&tuscany));
    assert!(!query("contains", "Polygon", square(11.0, 43.0, 0.5)).matches(&at(DUOMO)));
}

#[test]
fn intersects_and_disjoint() {
    let arno = located(&[geometry("LineString", json!([[11.20, 43.765], [11.30, 43.768]]))]);
    let across = query("intersects", "LineString", json!([[11.25, 43.70], [11.25, 43.80]]));
    let beside = query("intersects", "LineString", json!([[11.40, 43.70], [11.40, 43.80]]));
    assert!(across.matches(&arno));
    assert!(!beside.matches(&arno));
    assert!(!query("disjoint", "LineString", json!([[11.25, 43.70], [11.25, 43.80]])).matches(&arno));
    assert!(query("disjoint", "LineString", json!([[11.40, 43.70], [11.40, 43.80]])).matches(&arno));
    assert_eq!(query("disjoint", "Point", json!(DUOMO)).bounding_box(), None);
}

#[test]
fn equals_is_topological() {
    let shifted_start = json!([[[12.0, 43.0], [12.0, 44.0], [11.0, 44.0], [11.0, 43.0], [12.0, 43.0]]]);
    let entity = square_entity(11.0, 43.0, 1.0);
    assert!(query("equals", "Polygon", shifted_start).matches(&entity));
    assert!(!query("equals", "Polygon", square(11.0, 43.0, 0.9)).matches(&entity));
    assert!(query("equals", "Point", json!(DUOMO)).matches(&at(DUOMO)));
    assert!(!query("equals", "Point", json!(DUOMO)).matches(&at(SIGNORIA)));
}

#[test]
fn overlaps_needs_shared_interior_and_no_containment() {
    let entity = square_entity(11.0, 43.0, 1.0);
    assert!(query("overlaps", "Polygon", square(11.5, 43.5, 1.0)).matches(&entity));
    assert!(!query("overlaps", "Polygon", square(11.2, 43.2, 0.2)).matches(&entity));
    assert!(!query("overlaps", "Polygon", square(13.0, 43.0, 1.0)).matches(&entity));
    assert!(!query("overlaps", "Polygon", square(11.5, 43.5, 1.0)).matches(&at([11.7, 43.7])));
}

#[test]
fn every_query_geometry_type() {
    let duomo = at(DUOMO);
    assert!(query("intersects", "MultiPoint", json!([PISA_TOWER, DUOMO])).matches(&duomo));
    assert!(!query("intersects", "MultiPoint", json!([PISA_TOWER, SIGNORIA])).matches(&duomo));
    assert!(query("intersects", "LineString", json!([[11.2560, 43.77], [11.2560, 43.78]])).matches(&duomo));
    let lines = json!([[[10.0, 40.0], [10.0, 41.0]], [[11.2560, 43.77], [11.2560, 43.78]]]);
    assert!(query("intersects", "MultiLineString", lines).matches(&duomo));
    let parts = json!([square(10.0, 40.0, 1.0), square(11.0, 43.0, 1.0)]);
    assert!(query("within", "MultiPolygon", parts).matches(&duomo));
    assert!(!query("within", "MultiPolygon", json!([square(10.0, 40.0, 1.0)])).matches(&duomo));
}

#[test]
fn polygon_holes_are_outside() {
    let with_hole = json!([
        [[11.0, 43.0], [12.0, 43.0], [12.0, 44.0], [11.0, 44.0], [11.0, 43.0]],
        [[11.2, 43.7], [11.3, 43.7], [11.3, 43.8], [11.2, 43.8], [11.2, 43.7]]
    ]);
    let q = query("within", "Polygon", with_hole);
    assert!(!q.matches(&at(DUOMO)));
    assert!(q.matches(&at([11.5, 43.5])));
}

#[test]
fn every_entity_geometry_type() {
    let q = query("intersects", "Polygon", square(11.0, 43.0, 1.0));
    let inside = |kind: &str, coordinates: Value| q.matches(&located(&[geometry(kind, coordinates)]));
    assert!(inside("MultiPoint", json!([PISA_TOWER, DUOMO])));
    assert!(!inside("MultiPoint", json!([PISA_TOWER])));
    assert!(inside("MultiLineString", json!([[PISA_TOWER, DUOMO]])));
    assert!(inside("MultiPolygon", json!([square(11.1, 43.1, 0.1)])));
    assert!(!inside("MultiPolygon", json!([square(13.1, 43.1, 0.1)])));
    assert!(inside("Point", json!([11.5, 43.5, 120.0])));
    let collection = json!({"type": "GeometryCollection", "geometries": [
        geometry("Point", json!(PISA_TOWER)),
        geometry("LineString", json!([DUOMO, SIGNORIA])),
    ]});
    assert!(q.matches(&located(&[collection])));
}

// ---------------------------------------------------------------- entities

#[test]
fn any_instance_may_match() {
    let near_signoria = query("near;maxDistance==1000", "Point", json!(SIGNORIA));
    let pisa = geometry("Point", json!(PISA_TOWER));
    let duomo = geometry("Point", json!(DUOMO));
    assert!(near_signoria.matches(&located(&[pisa.clone(), duomo.clone()])));
    assert!(near_signoria.matches(&located(&[duomo, pisa.clone()])));
    assert!(!near_signoria.matches(&located(&[pisa.clone(), pisa])));
}

#[test]
fn only_geoproperties_of_the_named_attribute_count() {
    let q = query("near;maxDistance==1000", "Point", json!(SIGNORIA));
    let mut entity = at(DUOMO);
    for instance in entity.attributes.values_mut().flatten() {
        instance.kind = AttributeKind::Property;
    }
    assert!(!q.matches(&entity));
    assert!(!q.matches(&Entity::new("urn:ngsi-ld:Place:2", vec![])));
    let broken = located(&[json!({"type": "Point", "coordinates": "nowhere"}), Value::Null]);
    assert!(!q.matches(&broken));
}

#[test]
fn geoproperty_is_expanded_with_the_context() {
    let user = ActiveContext::from_user_context(
        &json!({"area": "https://example.org/vocab#servedArea"}),
        &crate::jsonld::NoRemoteContexts,
    )
    .unwrap();
    let q = GeoQuery::parse("within", "Polygon", &square(11.0, 43.0, 1.0), Some("area"), &user).unwrap();
    assert_eq!(q.geoproperty(), "https://example.org/vocab#servedArea");
    let mut entity = Entity::new("urn:ngsi-ld:Shop:1", vec![]);
    let value = geometry("Point", json!(DUOMO));
    entity.attributes.insert(
        q.geoproperty().to_owned(),
        vec![Attribute::new(AttributeKind::GeoProperty, value)],
    );
    assert!(q.matches(&entity));
    assert!(!query("within", "Polygon", square(11.0, 43.0, 1.0)).matches(&entity));
    assert_eq!(
        query("within", "Point", json!(DUOMO)).geoproperty(),
        core().expand("location")
    );
}

const BOW_TIE: [[f64; 2]; 5] = [[11.0, 43.0], [12.0, 44.0], [12.0, 43.0], [11.0, 44.0], [11.0, 43.0]];

#[test]
fn invalid_entity_areas_are_repaired_then_related() {
    let overlapping_parts = located(&[geometry(
        "MultiPolygon",
        json!([square(11.0, 43.0, 1.0), square(11.5, 43.5, 1.0)]),
    )]);
    // Two triangles meeting at (11.5, 43.5): left and right of it.
    let bow_tie = located(&[geometry("Polygon", json!([BOW_TIE]))]);
    // A "hole" outside its shell, touching it at a vertex: it cuts nothing.
    let hole_outside = located(&[geometry(
        "Polygon",
        json!([
            [[11.0, 43.5], [12.0, 44.0], [11.0, 44.0], [11.0, 43.5]],
            [[11.0, 43.0], [11.0, 43.5], [12.5, 43.0], [11.0, 43.0]]
        ]),
    )]);
    for entity in [&overlapping_parts, &bow_tie, &hole_outside] {
        let around = query("within", "Polygon", square(10.0, 42.0, 4.0));
        assert!(around.matches(entity));
        assert!(query("intersects", "Polygon", square(10.0, 42.0, 4.0)).matches(entity));
        assert!(!query("disjoint", "Polygon", square(10.0, 42.0, 4.0)).matches(entity));
        assert!(query("disjoint", "Point", json!([-70.0, 10.0])).matches(entity));
        assert!(!query("intersects", "Point", json!([-70.0, 10.0])).matches(entity));
    }
    // The union of the overlapping parts.
    assert!(query("contains", "Point", json!([12.2, 44.2])).matches(&overlapping_parts));
    assert!(query("contains", "Point", json!([11.7, 43.7])).matches(&overlapping_parts));
    assert!(!query("contains", "Point", json!([12.2, 43.2])).matches(&overlapping_parts));
    // The even-odd reading of the bow tie.
    assert!(query("contains", "Point", json!([11.2, 43.5])).matches(&bow_tie));
    assert!(query("contains", "Point", json!([11.8, 43.5])).matches(&bow_tie));
    assert!(!query("contains", "Point", json!([11.5, 43.2])).matches(&bow_tie));
    assert!(query("equals", "Polygon", json!([BOW_TIE])).matches(&bow_tie));
    // The shell alone, as ST_MakeValid's "structure" method makes it.
    assert!(query("contains", "Point", json!([11.2, 43.8])).matches(&hole_outside));
    assert!(!query("contains", "Point", json!([11.2, 43.2])).matches(&hole_outside));
    assert!(!query("contains", "Point", json!([11.9, 43.5])).matches(&hole_outside));
    // Distances need no topology.
    assert!(query("near;maxDistance==10", "Point", json!([11.2, 43.2])).matches(&overlapping_parts));
    assert!(query("near;maxDistance==10", "Point", json!([11.2, 43.5])).matches(&bow_tie));
}

#[test]
fn entity_areas_beyond_repair_are_related_as_they_are() {
    // No area at all: a flat "polygon" and a shell filled by its own hole.
    let flat = located(&[geometry(
        "Polygon",
        json!([[[11.0, 43.0], [12.0, 43.0], [13.0, 43.0], [11.0, 43.0]]]),
    )]);
    let ring = square(11.0, 43.0, 1.0)[0].clone();
    let all_hole = located(&[geometry("Polygon", json!([ring, ring]))]);
    for entity in [&flat, &all_hole] {
        assert!(query("within", "Polygon", square(10.0, 42.0, 4.0)).matches(entity));
        assert!(query("disjoint", "Point", json!([-70.0, 10.0])).matches(entity));
        assert!(query("disjoint", "Polygon", square(13.5, 40.0, 1.0)).matches(entity));
        assert!(!query("intersects", "Point", json!([-70.0, 10.0])).matches(entity));
    }
    assert!(query("near;maxDistance==10", "Point", json!([13.0, 43.00005])).matches(&flat));
}

#[test]
fn lenient_query_polygons_are_repaired() {
    let bow_tie = query("within", "Polygon", json!([BOW_TIE]));
    assert!(bow_tie.matches(&at([11.2, 43.5])) && bow_tie.matches(&at([11.8, 43.5])));
    assert!(!bow_tie.matches(&at([11.5, 43.2])) && !bow_tie.matches(&at([11.5, 43.8])));
    assert_eq!(bow_tie.bounding_box(), Some([11.0, 43.0, 12.0, 44.0]));
    let multi = query("within", "MultiPolygon", json!([[BOW_TIE]]));
    assert!(multi.matches(&at([11.2, 43.5])) && !multi.matches(&at([11.5, 43.2])));

    // Holes crossing their shell, outside it or inside one another: what the
    // shell encloses less what the holes do, as ST_MakeValid ("structure").
    let crossing_hole = json!([
        [[11.0, 43.0], [12.0, 43.0], [12.0, 44.0], [11.0, 44.0], [11.0, 43.0]],
        [[11.5, 43.5], [12.5, 43.5], [12.5, 43.6], [11.5, 43.6], [11.5, 43.5]]
    ]);
    let q = query("within", "Polygon", crossing_hole);
    assert!(q.matches(&at([11.2, 43.2])) && !q.matches(&at([11.7, 43.55])) && !q.matches(&at([12.2, 43.55])));
    let hole_outside = json!([
        [[0.0, 0.5], [1.0, 1.0], [0.0, 1.0], [0.0, 0.5]],
        [[0.0, 0.0], [0.0, 0.5], [1.5, 0.0], [0.0, 0.0]]
    ]);
    let q = query("within", "Polygon", hole_outside);
    assert!(q.matches(&at([0.2, 0.8])) && !q.matches(&at([0.2, 0.2])) && !q.matches(&at([0.8, 0.5])));
    let nested_holes = json!([
        [[10.0, 40.0], [14.0, 40.0], [14.0, 44.0], [10.0, 44.0], [10.0, 40.0]],
        [[11.0, 41.0], [13.0, 41.0], [13.0, 43.0], [11.0, 43.0], [11.0, 41.0]],
        [[11.5, 41.5], [12.5, 41.5], [12.5, 42.5], [11.5, 42.5], [11.5, 41.5]]
    ]);
    let q = query("within", "Polygon", nested_holes);
    assert!(q.matches(&at([10.5, 40.5])) && !q.matches(&at([11.2, 41.2])) && !q.matches(&at([12.0, 42.0])));

    // A hole that collapses to a line is dropped; consecutive repeats are.
    let flat_hole = json!([
        square(11.0, 43.0, 1.0)[0],
        [[11.2, 43.2], [11.4, 43.4], [11.4, 43.4], [11.2, 43.2]]
    ]);
    assert!(query("within", "Polygon", flat_hole).matches(&at([11.3, 43.3])));
    let q = query(
        "within",
        "Polygon",
        json!([[
            [11.0, 43.0],
            [11.0, 43.0],
            [12.0, 43.0],
            [12.0, 44.0],
            [12.0, 44.0],
            [11.0, 43.0],
            [11.0, 43.0]
        ]]),
    );
    assert!(q.matches(&at([11.8, 43.5])) && !q.matches(&at([11.2, 43.5])));
}

#[test]
fn multipolygon_parts_may_touch_but_not_overlap() {
    let side_by_side = json!([square(11.0, 43.0, 1.0), square(12.0, 43.0, 1.0)]);
    let q = query("within", "MultiPolygon", side_by_side.clone());
    assert!(q.matches(&at([11.5, 43.5])) && q.matches(&at([12.5, 43.5])));
    assert!(
        query("intersects", "Point", json!([11.5, 43.5])).matches(&located(&[geometry("MultiPolygon", side_by_side)]))
    );
    let corner_to_corner = json!([square(11.0, 43.0, 1.0), square(12.0, 44.0, 1.0)]);
    query("within", "MultiPolygon", corner_to_corner);
    let island_in_lake = json!([
        [
            [[10.0, 42.0], [14.0, 42.0], [14.0, 46.0], [10.0, 46.0], [10.0, 42.0]],
            [[11.0, 43.0], [13.0, 43.0], [13.0, 45.0], [11.0, 45.0], [11.0, 43.0]]
        ],
        square(11.5, 43.5, 1.0)
    ]);
    let q = query("within", "MultiPolygon", island_in_lake);
    assert!(q.matches(&at([12.0, 44.0])) && !q.matches(&at([11.2, 43.2])) && q.matches(&at([10.5, 42.5])));

    // Overlapping parts are merged, as ST_MakeValid does.
    for (overlapping, inside, outside) in [
        (
            json!([square(11.0, 43.0, 1.0), square(11.5, 43.5, 1.0)]),
            [12.2, 44.2],
            [12.2, 43.2],
        ),
        (
            json!([square(11.0, 43.0, 1.0), square(11.0, 43.0, 1.0)]),
            [11.5, 43.5],
            [12.5, 43.5],
        ),
        (
            json!([square(11.0, 43.0, 2.0), square(11.5, 43.5, 0.5)]),
            [11.7, 43.7],
            [13.5, 43.5],
        ),
    ] {
        let q = query("within", "MultiPolygon", overlapping.clone());
        assert!(q.matches(&at(inside)) && !q.matches(&at(outside)), "{overlapping}");
    }
}

// ---------------------------------------------------------------- ETSI conformance

/// How many of `entities` a URL-form geo-query matches.
fn count(entities: &[Entity], georel: &str, kind: &str, coordinates: &str, geoproperty: Option<&str>) -> usize {
    let q = GeoQuery::parse(georel, kind, &json!(coordinates), geoproperty, &core())
        .unwrap_or_else(|e| panic!("{georel} {kind} {coordinates}: {e}"));
    entities.iter().filter(|entity| q.matches(entity)).count()
}

/// The Buildings of ETSI 019_11: building-location-polygon.jsonld, whose
/// ring crosses itself near its first position, and
/// building-location-polygon-second.jsonld, a triangle.
fn etsi_019_11_buildings() -> [Entity; 2] {
    [
        located(&[geometry(
            "Polygon",
            json!([[
                [13.2865906, 52.5648645],
                [13.2879639, 52.5648645],
                [13.2797241, 52.4988679],
                [13.477478, 52.4712703],
                [13.5049438, 52.5373084],
                [13.2865906, 52.5648645]
            ]]),
        )]),
        located(&[geometry(
            "Polygon",
            json!([[
                [13.315773, 52.4757209],
                [13.339119, 52.4443421],
                [13.3892441, 52.4669371],
                [13.315773, 52.4757209]
            ]]),
        )]),
    ]
}

#[test]
fn etsi_019_11_polygon_queries() {
    let buildings = etsi_019_11_buildings();
    let cases = [
        // 019_11_01: the first building's own self-crossing ring.
        ("equals", "[[[13.2865906,52.5648645],[13.2879639,52.5648645],[13.2797241,52.4988679],[13.477478,52.4712703],[13.5049438,52.5373084],[13.2865906,52.5648645]]]", 1),
        ("intersects", "[[[13.3456421,52.4794848],[13.3641815,52.4428773],[13.4177399,52.4730023],[13.3459854,52.479903],[13.3456421,52.4794848]]]", 1),
        // 019_11_03: a repeated first position; only the self-crossing first building holds it.
        ("contains", "[[[13.3844376,52.5356966],[13.3844376,52.5356966],[13.381691,52.5123012],[13.4235764,52.5100027],[13.4331894,52.5273425],[13.3844376,52.5356966]]]", 1),
        ("contains", "[[[13.1369019,52.5198225],[13.1365585,52.5200314],[13.131752,52.4980907],[13.1832504,52.5026887],[13.1369019,52.5198225]]]", 0),
        // 019_11_05: far west of both, the self-crossing one included.
        ("disjoint", "[[[13.1369019,52.5198225],[13.1365585,52.5200314],[13.131752,52.4980907],[13.1832504,52.5026887],[13.1369019,52.5198225]]]", 2),
        // 019_11_06: a query ring crossing itself near its first position.
        ("within", "[[[13.3023834,52.4903066],[13.3027267,52.4905156],[13.2745743,52.465632],[13.3343124,52.4185447],[13.4311295,52.47107],[13.3023834,52.4903066]]]", 1),
        ("overlaps", "[[[13.3456421,52.4794848],[13.3641815,52.4428773],[13.4177399,52.4730023],[13.3459854,52.479903],[13.3456421,52.4794848]]]", 1),
    ];
    for (georel, coordinates, expected) in cases {
        assert_eq!(
            count(&buildings, georel, "Polygon", coordinates, None),
            expected,
            "{georel} {coordinates}"
        );
    }
    assert_eq!(
        count(&buildings, "contains", "Point", "[13.3442688,52.4650045]", None),
        1
    );
    // Which building: the self-crossing one equals itself and holds 019_11_03's
    // polygon, the triangle lies within 019_11_06's.
    let first = &buildings[..1];
    assert_eq!(count(first, "equals", "Polygon", cases[0].1, None), 1);
    assert_eq!(count(first, "contains", "Polygon", cases[2].1, None), 1);
    assert_eq!(count(&buildings[1..], "within", "Polygon", cases[5].1, None), 1);
}

#[test]
fn etsi_019_30_rejected_georels() {
    for georel in [
        "near;maxDistance==0",
        "near;maxDistance==-100",
        "near;maxDistance==5;minDistance==1",
        "near",
        "touches",
        "near;maxDistance==inf",
        "near;maxDistance==1e400",
    ] {
        let error = rejected(georel, "Point", json!("[8,40]"));
        assert_eq!(error.kind, ErrorKind::BadRequestData, "{georel}");
    }
}

#[test]
fn etsi_019_30_probes() {
    let mut hole_probe = at([5.0, 5.0]);
    hole_probe.attributes.insert(
        core().expand("observationSpace"),
        vec![Attribute::new(
            AttributeKind::GeoProperty,
            geometry("Point", json!([8, 40])),
        )],
    );
    let probes = [
        hole_probe,
        at([2.0, 2.0]),
        located(&[geometry("LineString", json!([[0.0, 85.6], [1.0, 85.0]]))]),
        at([10.0, 60.009]),
    ];
    let holed = "[[[0,0],[10,0],[10,10],[0,10],[0,0]],[[4,4],[6,4],[6,6],[4,6],[4,4]]]";
    assert_eq!(count(&probes, "within", "Polygon", holed, None), 1);
    assert_eq!(
        count(
            &probes,
            "near;maxDistance==2000",
            "Point",
            "[8,40]",
            Some("observationSpace")
        ),
        1
    );
    assert_eq!(count(&probes, "near;maxDistance==2000", "Point", "[8,40]", None), 0);
    // 019_30_09/10: ~1 km from the line's end, ~110 km from the lat-61 line.
    assert_eq!(
        count(
            &probes,
            "near;maxDistance==2000",
            "LineString",
            "[[0,60],[10,60]]",
            None
        ),
        1
    );
    assert_eq!(
        count(
            &probes,
            "near;maxDistance==2000",
            "LineString",
            "[[0,61],[10,61]]",
            None
        ),
        0
    );
    assert_eq!(
        count(
            &probes[3..],
            "near;maxDistance==2000",
            "LineString",
            "[[0,60],[10,60]]",
            None
        ),
        1
    );
    assert_eq!(
        count(
            &probes[3..],
            "near;minDistance==100000",
            "LineString",
            "[[0,61],[10,61]]",
            None
        ),
        1
    );
    assert_eq!(
        count(
            &probes[3..],
            "near;minDistance==2000",
            "LineString",
            "[[0,60],[10,60]]",
            None
        ),
        0
    );
    assert_eq!(count(&probes, "near;maxDistance==20000", "Point", "[0,85]", None), 1);
    assert_eq!(count(&probes, "near;maxDistance==5000", "Point", "[0,85]", None), 0);
}

#[test]
fn near_accepts_any_reference() {
    // A meridian segment about 80 m east of Signoria, whose ends are > 1 km away.
    let lon = SIGNORIA[0] + 0.001;
    let meridian = json!([[lon, SIGNORIA[1] - 0.02], [lon, SIGNORIA[1] + 0.02]]);
    assert!(query("near;maxDistance==100", "LineString", meridian.clone()).matches(&at(SIGNORIA)));
    assert!(!query("near;maxDistance==50", "LineString", meridian.clone()).matches(&at(SIGNORIA)));
    assert!(query("near;minDistance==50", "LineString", meridian.clone()).matches(&at(SIGNORIA)));
    assert_eq!(
        query("near;maxDistance==100", "LineString", meridian).bounding_box(),
        None
    );

    // Inside an area reference the distance is 0; outside, to its boundary.
    let around = square(SIGNORIA[0] - 0.01, SIGNORIA[1] - 0.01, 0.02);
    assert!(query("near;maxDistance==1", "Polygon", around.clone()).matches(&at(SIGNORIA)));
    assert!(!query("near;minDistance==1", "Polygon", around.clone()).matches(&at(SIGNORIA)));
    assert!(!query("near;maxDistance==1000", "Polygon", around.clone()).matches(&at(PISA_TOWER)));
    assert!(query("near;maxDistance==70000", "Polygon", around).matches(&at(PISA_TOWER)));

    // Any pair of points: the nearest counts.
    let both = json!([PISA_TOWER, [0.0, 0.0]]);
    assert!(query("near;maxDistance==400", "MultiPoint", json!([PISA_TOWER, SIGNORIA])).matches(&at(DUOMO)));
    assert!(!query("near;maxDistance==400", "MultiPoint", both).matches(&at(DUOMO)));

    // Lines crossing between their positions are 0 apart.
    let across = query(
        "near;maxDistance==1",
        "LineString",
        json!([[11.25, 43.70], [11.25, 43.80]]),
    );
    assert!(across.matches(&located(&[geometry(
        "LineString",
        json!([[11.20, 43.765], [11.30, 43.768]])
    )])));
    // An entity area holding the reference line.
    let line = query("near;maxDistance==1", "LineString", json!([DUOMO, SIGNORIA]));
    assert!(line.matches(&square_entity(11.0, 43.0, 1.0)));
    assert!(!line.matches(&square_entity(12.0, 43.0, 1.0)));
}

// ---------------------------------------------------------------- input forms

#[test]
fn coordinates_may_be_url_text() {
    let text = query("near;maxDistance==2000", "Point", json!("[11.2556, 43.7696]"));
    assert!(text.matches(&at(DUOMO)));
    let polygon = query("within", "Polygon", json!(square(11.0, 43.0, 1.0).to_string()));
    assert!(polygon.matches(&at(DUOMO)));
    assert_eq!(polygon.bounding_box(), Some([11.0, 43.0, 12.0, 44.0]));
}

#[test]
fn geoq_object_form() {
    let value = json!({
        "geometry": "Point",
        "coordinates": SIGNORIA,
        "georel": "near;maxDistance==2000",
        "geoproperty": "location",
    });
    let q = GeoQuery::from_json(&value, &core()).unwrap();
    assert!(q.matches(&at(DUOMO)));
    assert_eq!(q.to_json(&core()), value);
    let back = GeoQuery::from_json(&q.to_json(&core()), &core()).unwrap();
    assert!(back.matches(&at(DUOMO)));

    let text = json!({"geometry": "Polygon", "coordinates": square(11.0, 43.0, 1.0).to_string(), "georel": "within"});
    assert!(GeoQuery::from_json(&text, &core()).unwrap().matches(&at(DUOMO)));
}

#[test]
fn geoq_object_needs_its_members() {
    let complete = json!({"geometry": "Point", "coordinates": DUOMO, "georel": "equals"});
    for missing in ["geometry", "coordinates", "georel"] {
        let mut partial = complete.clone();
        partial.as_object_mut().unwrap().remove(missing);
        let error = GeoQuery::from_json(&partial, &core()).unwrap_err();
        assert_eq!(error.kind, ErrorKind::BadRequestData);
        assert!(error.detail.contains(missing), "{}", error.detail);
    }
    let mut wrong = complete.clone();
    wrong["geoproperty"] = json!(7);
    assert!(GeoQuery::from_json(&wrong, &core()).is_err());
    wrong["geoproperty"] = json!("a b");
    assert!(GeoQuery::from_json(&wrong, &core()).is_err());
    for not_object in [json!(null), json!([complete]), json!("geoQ")] {
        assert!(GeoQuery::from_json(&not_object, &core()).is_err());
    }
    let mut numeric = complete;
    numeric["georel"] = json!(1);
    assert!(GeoQuery::from_json(&numeric, &core()).is_err());
}

#[test]
fn query_is_shareable_between_threads() {
    fn shareable<T: Send + Sync + Clone>() {}
    shareable::<GeoQuery>();
}

// ---------------------------------------------------------------- hostile input

#[test]
fn bad_georels_are_rejected() {
    for georel in [
        "",
        "nearby",
        "near",
        "near;",
        "near;maxDistance",
        "near;maxDistance=",
        "near;maxDistance==",
        "near;maxDistance=2000",
        "near;maxDistance==-1",
        "near;maxDistance==-100",
        "near;maxDistance==0",
        "near;maxDistance==0.0",
        "near;maxDistance==0e5",
        "near;maxDistance==1e-400",
        "near;maxDistance==1e400",
        "near;minDistance==0",
        "near;maxDistance==abc",
        "near;maxDistance==inf",
        "near;maxDistance==NaN",
        "near;maxDistance==+5",
        "near;maxDistance==1e999",
        "near;maxDistance== 5",
        "near;maxDistance==5;minDistance==1",
        "near;radius==5",
        "near,maxDistance==5",
        "Within",
        "within;maxDistance==5",
        " within",
        "crosses",
        "touches",
    ] {
        let error = rejected(georel, "Point", json!(DUOMO));
        assert_eq!(error.kind, ErrorKind::BadRequestData, "{georel}");
    }
}

#[test]
fn near_reference_size_is_bounded() {
    let long: Vec<[f64; 2]> = (0..=MAX_NEAR_REFERENCE_POSITIONS)
        .map(|i| [10.0 + i as f64 * 0.001, 43.0])
        .collect();
    let error = rejected("near;maxDistance==10", "LineString", json!(long));
    assert_eq!(error.kind, ErrorKind::TooComplexQuery);
    query("near;maxDistance==10", "LineString", json!(long[1..]));
    query("intersects", "LineString", json!(long));
}

#[test]
fn bad_geometries_are_rejected() {
    for kind in ["", "point", "POINT", "GeometryCollection", "Circle", "Feature"] {
        rejected("intersects", kind, json!(DUOMO));
    }
}

#[test]
fn bad_coordinates_are_rejected() {
    let unclosed = json!([[[11.0, 43.0], [12.0, 43.0], [12.0, 44.0], [11.0, 44.0]]]);
    // Polygons that enclose no area: nothing to evaluate them against.
    let flat = json!([[[11.0, 43.0], [12.0, 43.0], [13.0, 43.0], [11.0, 43.0]]]);
    let repeated = json!([[[11.0, 43.0], [12.0, 43.0], [12.0, 43.0], [11.0, 43.0]]]);
    let all_hole = json!([
        [[11.0, 43.0], [12.0, 43.0], [12.0, 44.0], [11.0, 44.0], [11.0, 43.0]],
        [[11.0, 43.0], [12.0, 43.0], [12.0, 44.0], [11.0, 44.0], [11.0, 43.0]]
    ]);
    let cases = [
        ("Point", json!([])),
        ("Point", json!([11.0])),
        ("Point", json!([11.0, 43.0, 1.0, 2.0])),
        ("Point", json!(["11", "43"])),
        ("Point", json!([11.0, null])),
        ("Point", json!([[11.0, 43.0]])),
        ("Point", json!({"lon": 11.0, "lat": 43.0})),
        ("Point", json!(11.0)),
        ("Point", json!(null)),
        ("Point", json!([181.0, 43.0])),
        ("Point", json!([11.0, -90.5])),
        ("Point", json!("[11.0, 43.0")),
        ("Point", json!("11.0,43.0")),
        ("Point", json!("\"[11.0, 43.0]\"")),
        ("Point", json!("")),
        ("MultiPoint", json!([])),
        ("MultiPoint", json!(DUOMO)),
        ("LineString", json!([DUOMO])),
        ("LineString", json!([DUOMO, DUOMO])),
        ("LineString", json!(DUOMO)),
        ("MultiLineString", json!([])),
        ("MultiLineString", json!([DUOMO, SIGNORIA])),
        ("Polygon", json!([])),
        ("Polygon", square(11.0, 43.0, 1.0)[0].clone()),
        ("Polygon", json!([[DUOMO, SIGNORIA, DUOMO]])),
        ("Polygon", unclosed),
        ("Polygon", flat.clone()),
        ("Polygon", repeated),
        ("Polygon", all_hole),
        ("MultiPolygon", json!([])),
        ("MultiPolygon", square(11.0, 43.0, 1.0)),
        ("MultiPolygon", json!([flat])),
    ];
    for (kind, coordinates) in cases {
        let error = rejected("intersects", kind, coordinates.clone());
        assert_eq!(error.kind, ErrorKind::BadRequestData, "{kind} {coordinates}");
    }
}

#[test]
fn valid_polygons_with_touching_rings_are_accepted() {
    // A hole touching the shell at one vertex is valid in OGC Simple Features.
    let touching = json!([
        [[11.0, 43.0], [12.0, 43.0], [12.0, 44.0], [11.0, 44.0], [11.0, 43.0]],
        [[11.0, 43.0], [11.5, 43.2], [11.2, 43.5], [11.0, 43.0]]
    ]);
    query("within", "Polygon", touching);
    let triangle = json!([[[11.0, 43.0], [12.0, 43.0], [11.5, 44.0], [11.0, 43.0]]]);
    query("within", "Polygon", triangle);
    let with_repeat = json!([[[11.0, 43.0], [12.0, 43.0], [12.0, 43.0], [11.5, 44.0], [11.0, 43.0]]]);
    query("within", "Polygon", with_repeat);
}

/// A ring of `n` positions around (lon, lat), alternating between two radii.
fn star(lon: f64, lat: f64, n: usize, inner: f64, outer: f64) -> Value {
    let mut ring: Vec<Value> = (0..n)
        .map(|i| {
            let angle = std::f64::consts::TAU * i as f64 / n as f64;
            let radius = if i % 2 == 0 { outer } else { inner };
            json!([lon + radius * angle.cos(), lat + radius * angle.sin()])
        })
        .collect();
    ring.push(ring[0].clone());
    json!([ring])
}

#[test]
fn detailed_boundaries_are_accepted() {
    let started = std::time::Instant::now();
    let circle = star(11.0, 43.5, 100_000, 1.0, 1.0);
    let q = GeoQuery::parse("within", "Polygon", &circle, None, &core()).map_err(|e| e.kind);
    assert!(q.is_ok_and(|q| q.matches(&at(DUOMO))));
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
}

#[test]
fn crafted_quadratic_shapes_are_refused_in_time() {
    let started = std::time::Instant::now();
    let spiky = star(11.0, 43.5, 20_000, 0.0001, 1.0);
    let q = GeoQuery::parse("within", "Polygon", &spiky, None, &core()).map_err(|e| e.kind);
    assert_eq!(q.err(), Some(ErrorKind::TooComplexQuery));
    let entity = located(&[geometry("Polygon", spiky)]);
    assert!(!query("intersects", "Point", json!([11.0, 43.5])).matches(&entity));
    assert!(started.elapsed().as_secs() < 30, "{:?}", started.elapsed());
}

#[test]
fn bad_geoproperty_is_rejected() {
    for name in ["", "loc ation", "a;b", "x==1"] {
        assert!(
            GeoQuery::parse("within", "Point", &json!(DUOMO), Some(name), &core()).is_err(),
            "{name}"
        );
    }
}

#[test]
fn deeply_nested_text_is_rejected() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    rejected("within", "Polygon", json!(deep));
}

// ---------------------------------------------------------------- properties

fn arbitrary_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        (-200.0..200.0f64).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        prop::sample::select(vec!["Point", "Polygon", "near;maxDistance==10", "within", "location"])
            .prop_map(Value::from),
    ];
    leaf.prop_recursive(5, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(
                prop::sample::select(vec!["geometry", "coordinates", "georel", "geoproperty", "type", "x"]),
                inner,
                0..5,
            )
            .prop_map(|m| Value::Object(m.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

fn small_ring() -> impl Strategy<Value = Value> {
    prop::collection::vec((10.0..12.0f64, 43.0..45.0f64), 3..7).prop_map(|points| {
        let mut ring: Vec<Value> = points.iter().map(|(x, y)| json!([x, y])).collect();
        ring.push(ring[0].clone());
        Value::Array(ring)
    })
}

const GEORELS: [&str; 8] = [
    "within",
    "contains",
    "intersects",
    "equals",
    "disjoint",
    "overlaps",
    "near;maxDistance==50000",
    "near;minDistance==50000",
];

/// Rings on a coarse grid, where collinear edges, shared vertices and
/// crossings (what trips `geo`) are common.
fn grid_ring() -> impl Strategy<Value = Value> + Clone {
    prop::collection::vec((0..5u8, 0..5u8), 3..7).prop_map(|points| {
        let mut ring: Vec<Value> = points
            .iter()
            .map(|(x, y)| json!([f64::from(*x) / 2.0, f64::from(*y) / 2.0]))
            .collect();
        ring.push(ring[0].clone());
        Value::Array(ring)
    })
}

fn grid_geometry() -> impl Strategy<Value = Value> {
    let rings = prop::collection::vec(grid_ring(), 1..3);
    prop_oneof![
        rings.clone().prop_map(|rings| geometry("Polygon", Value::Array(rings))),
        prop::collection::vec(rings, 1..3).prop_map(|parts| geometry("MultiPolygon", json!(parts))),
        grid_ring().prop_map(|ring| geometry("LineString", ring)),
        grid_ring().prop_map(|ring| geometry("MultiPoint", ring)),
        prop::collection::vec(grid_ring(), 1..3).prop_map(|rings| json!({
            "type": "GeometryCollection",
            "geometries": rings.into_iter().map(|r| geometry("Polygon", json!([r]))).collect::<Vec<_>>(),
        })),
        (grid_ring(), grid_ring()).prop_map(|(area, line)| json!({
            "type": "GeometryCollection",
            "geometries": [geometry("Polygon", json!([area])), geometry("LineString", line.clone()), geometry("MultiPoint", line)],
        })),
    ]
}

proptest! {
    #[test]
    fn what_evaluable_gives_geo_can_relate(a in grid_geometry(), b in grid_geometry()) {
        let (a, b) = (entity_geometry(&a, 0).unwrap(), entity_geometry(&b, 0).unwrap());
        if let (Ok(a), Ok(b)) = (evaluable(&a), evaluable(&b)) {
            prop_assert!(guarded(|| a.relate(&*b)).is_some(), "{a:?} {b:?}");
        }
    }

    #[test]
    fn parse_never_panics(georel in ".*", kind in ".*", coordinates in ".*", property in ".*") {
        let _ = GeoQuery::parse(&georel, &kind, &json!(coordinates), Some(&property), &core());
        let _ = GeoQuery::parse(&georel, "Point", &json!(coordinates), None, &core());
        let _ = GeoQuery::parse("within", "Polygon", &json!(coordinates), None, &core());
        let _ = GeoQuery::parse("near;maxDistance==5", "Point", &json!(coordinates), None, &core());
    }

    #[test]
    fn near_parse_never_panics(distance in "[0-9eE.+-]{0,12}") {
        let _ = GeoQuery::parse(&format!("near;maxDistance=={distance}"), "Point", &json!(DUOMO), None, &core());
    }

    #[test]
    fn from_json_never_panics(value in arbitrary_json()) {
        let _ = GeoQuery::from_json(&value, &core());
        let _ = GeoQuery::parse("intersects", "MultiPolygon", &value, None, &core());
    }

    #[test]
    fn matching_never_panics(
        entity_shapes in prop::collection::vec(grid_geometry(), 1..3),
        query_ring in grid_ring(),
        georel in prop::sample::select(GEORELS.to_vec()),
        center in (0u8..5, 0u8..5),
    ) {
        let entity = located(&entity_shapes);
        if let Ok(q) = GeoQuery::parse(georel, "Polygon", &json!([query_ring]), None, &core()) {
            let _ = q.matches(&entity);
        }
        let center = json!([f64::from(center.0) / 2.0, f64::from(center.1) / 2.0]);
        if let Ok(q) = GeoQuery::parse(georel, "Point", &center, None, &core()) {
            let _ = q.matches(&entity);
        }
    }

    #[test]
    fn bounding_box_holds_every_topological_match(
        entity_ring in small_ring(),
        query_ring in small_ring(),
        georel in prop::sample::select(GEORELS[..6].to_vec()),
    ) {
        let Ok(q) = GeoQuery::parse(georel, "Polygon", &json!([query_ring]), None, &core()) else {
            return Ok(());
        };
        let (Relation::Topological(predicate), Some([west, south, east, north])) = (q.relation, q.bounding_box()) else {
            return Ok(());
        };
        let target = entity_geometry(&geometry("LineString", entity_ring), 0).unwrap();
        if guarded(|| target.relate(&q.shape)).is_some_and(|matrix| predicate.holds(&matrix)) {
            let extent = target.bounding_rect().unwrap();
            prop_assert!(extent.min().x <= east && extent.max().x >= west);
            prop_assert!(extent.min().y <= north && extent.max().y >= south);
        }
    }

    #[test]
    fn a_match_has_a_value_box_meeting_the_query_box(
        entity_shapes in prop::collection::vec(grid_geometry(), 1..3),
        query_ring in grid_ring(),
        georel in prop::sample::select(GEORELS.to_vec()),
    ) {
        let Ok(q) = GeoQuery::parse(georel, "Polygon", &json!([query_ring]), None, &core()) else {
            return Ok(());
        };
        let (Some([west, south, east, north]), true) = (q.bounding_box(), q.matches(&located(&entity_shapes))) else {
            return Ok(());
        };
        let meets = entity_shapes.iter().filter_map(GeoQuery::value_bounds).any(|[x0, y0, x1, y1]| {
            x0 <= east && x1 >= west && y0 <= north && y1 >= south
        });
        prop_assert!(meets, "storage would pre-filter out a match");
    }

    #[test]
    fn near_box_is_conservative(
        lon in -180.0..180.0f64,
        lat in -89.9..89.9f64,
        distance in 1.0..3_000_000.0f64,
        bearing in 0.0..360.0f64,
    ) {
        let q = query(&format!("near;maxDistance=={distance}"), "Point", json!([lon, lat]));
        let edge = Geodesic::destination(Point::new(lon, lat), bearing, distance * 0.99999);
        prop_assert!(q.matches(&at([edge.x(), edge.y()])));
        let [west, south, east, north] = q.bounding_box().unwrap();
        prop_assert!(west <= edge.x() && edge.x() <= east && south <= edge.y() && edge.y() <= north);
    }
}
